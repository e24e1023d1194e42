#!/usr/bin/env bash
# The side-by-side benchmark (issue 7, docs/BENCHMARKS.md), as root: installs iperf3, wrk,
# nginx and haproxy (and perf, when the kernel has a matching package), builds the release
# binaries, runs `bench` (direct / haproxy-mtls / eastwall L4 over QUIC and over HTTP/2, in one
# namespace topology),
# prints the table and writes it to <target>/bench-results/table-<date>.md (or $BENCH_OUT).
#
# Arguments are passed to the bench binary, e.g. `scripts/bench.sh --secs 10 --rounds 5`,
# `--paths direct,eastwall`, `--idle 2000`, `--only-many --workers 1,2` (paced runs over 16 and 64
# connections, nodes with 1 and 2 runtime threads), `--before /path/to/old/eastwall` (each
# eastwall row again with another build, same run). BENCH_PERF=1 also records `perf` profiles
# of the two nodes (bulk, keep-alive, new connections, paced over 16 connections) into
# <target>/bench-results/perf-<date>/ and prints their summaries.
# The release build goes to $CARGO_TARGET_DIR (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "bench.sh: run as root (network namespaces, nftables, apt-get)" >&2
  exit 1
fi
scripts/setup-debian.sh
need=()
command -v iperf3 >/dev/null || need+=(iperf3)
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || need+=(nginx-light)
command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages' post-install scripts may start their daemons where an init system runs;
  # the benchmark starts its own instances inside its namespaces.
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "${BENCH_PERF:-0}" = 1 ] && ! perf --version >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends linux-perf >/dev/null || true
fi

target="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p eastwall-node -p eastwall-integration
stamp=$(date -u +%Y%m%dT%H%M%SZ)
results="$target/bench-results"
mkdir -p "$results"
out="${BENCH_OUT:-$results/table-$stamp.md}"
extra=()
perfdir="$results/perf-$stamp"
if [ "${BENCH_PERF:-0}" = 1 ]; then
  extra+=(--perf "$perfdir")
fi
# 10,000 idle connections cost two descriptors per connection in an HAProxy and one in the
# bench process; where the hard limit cannot be raised, the bench opens as many as fit.
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

{
  echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(free -g | awk '/Mem:/{print $2}') GiB RAM, kernel $(uname -r)"
  echo "versions: $(iperf3 --version | head -1); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $(nginx -v 2>&1); $(haproxy -v | head -1 | cut -d' ' -f1-3)"
  echo "load before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "command: scripts/bench.sh $*"
  echo
} | tee "$out.head"
"$target/release/bench" --out "$out.table" "${extra[@]}" "$@"
cat "$out.head" "$out.table" > "$out"
rm -f "$out.head" "$out.table"
echo "table written to $out"

if [ "${BENCH_PERF:-0}" = 1 ] && [ -d "$perfdir" ]; then
  for pathdir in "$perfdir"/*/; do
    for what in bulk keepalive newconn paced; do
      data="$pathdir$what.data"
      [ -f "$data" ] || continue
      perf report -i "$data" --no-children --sort dso --stdio -g none \
        >"$pathdir$what-dso.txt" 2>/dev/null || true
      perf report -i "$data" --no-children --sort dso,sym --stdio -g none \
        >"$pathdir$what-sym.txt" 2>/dev/null || true
      echo "== perf: where the nodes' CPU goes ($(basename "$pathdir"), $what), by shared object, then by symbol"
      grep -v -e '^#' -e '^$' "$pathdir$what-dso.txt" | sed -n 1,6p || true
      grep -v -e '^#' -e '^$' "$pathdir$what-sym.txt" | sed -n 1,30p || true
    done
  done
  echo "perf data and reports in $perfdir"
fi
