#!/usr/bin/env bash
# Installs what eastwall needs at run time and in its tests on Debian, as root:
# nftables (capture), iptables (its iptables-nft queues the protocols the node does not
# proxy: some kernels lack nftables' own queue), iproute2 (namespaces, policy routing), util-linux (unshare/nsenter for
# the lab's workload containers), curl (demo and tests), procps, dnsmasq and dig (the DNS
# server and client of the demo and the DNS tests), and OpenLDAP (slapd, ldap-utils) for the
# directory tests; etcd (etcd-server, etcd-client) and protoc with the well-known types
# (protobuf-compiler, libprotobuf-dev) for the central store; Chromium and ChromeDriver for the
# console's browser tests; promtool (prometheus) for the metrics and alert rules; Hyperscan
# (libhyperscan-dev, pkg-config) for the IDS.
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
  echo "setup-debian.sh: run as root (it installs Debian packages)" >&2
  exit 1
fi
need=()
command -v nft >/dev/null || need+=(nftables)
command -v iptables-nft >/dev/null || [ -x /usr/sbin/iptables-nft ] || need+=(iptables)
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null && command -v nsenter >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
command -v ps >/dev/null || need+=(procps)
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
command -v dig >/dev/null || need+=(bind9-dnsutils)
# The central store: etcd for the tests (they start their own members); the etcd client
# crate compiles etcd's protobufs at build time (protoc and the well-known types).
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
# Hyperscan, the IDS's multi-pattern matcher (linked: the library at run time, its headers
# and pkg-config to build).
[ -f /usr/include/hs/hs.h ] || need+=(libhyperscan-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
# Prometheus's linter checks the node's metrics and the alert rules in the tests (promtool,
# from Debian's prometheus package).
command -v promtool >/dev/null || need+=(prometheus)
# The package's logrotate file is checked with logrotate itself.
command -v logrotate >/dev/null || [ -x /usr/sbin/logrotate ] || need+=(logrotate)
# The console's tests drive a real headless Chromium through ChromeDriver (WebDriver).
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# OpenLDAP for the directory tests: the package only, without a system database (the tests
# start their own slapd in a temp dir), as ../shared/recipes/ldap/ says.
if ! command -v slapd >/dev/null && [ ! -x /usr/sbin/slapd ]; then
  echo "installing: slapd ldap-utils"
  echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slapd ldap-utils >/dev/null
fi
