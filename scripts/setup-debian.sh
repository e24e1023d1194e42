#!/usr/bin/env bash
# Installs what eastwall needs at run time and in its tests on Debian, as root:
# nftables (capture), iproute2 (namespaces, policy routing), util-linux (unshare/nsenter for
# the lab's workload containers), curl (demo and tests), procps.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "setup-debian.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi
need=()
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null && command -v nsenter >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
command -v ps >/dev/null || need+=(procps)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
