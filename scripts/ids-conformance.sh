#!/usr/bin/env bash
# IDS conformance and throughput against Suricata 7 (not part of CI: it needs Suricata and
# the Emerging Threats Open snapshot).
#
#   scripts/ids-conformance.sh           same pcaps, same rules (ET Open + the corpus's
#                                        local.rules) through Suricata and through eastwall's
#                                        engine; alerted sids compared per flow
#   scripts/ids-conformance.sh bench     Suricata's scan throughput on the benchmark traffic (web and bulk
#                                        shapes with ET Open's web rules, the mixed shape with all of
#                                        ET Open), beside eastwall's (criterion), with Hyperscan
#                                        and with Aho-Corasick DFAs for the bulk buffers
#
# EASTWALL_ET_OPEN (default /work/shared/ids/et-open) locates ET Open; Suricata is installed
# with the shared recipe when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ET=${EASTWALL_ET_OPEN:-/work/shared/ids/et-open}
SHARED=${EASTWALL_SHARED:-$( [ -d ../shared ] && cd ../shared && pwd || echo /work/shared )}
CORPUS=ids/testdata/conformance
OUT=${OUT:-target/ids-conformance}
[ -d "$ET" ] || { echo "ET Open snapshot not found at $ET (set EASTWALL_ET_OPEN)" >&2; exit 1; }
command -v suricata >/dev/null || bash "$SHARED/recipes/suricata.sh" install
suricata -V
mkdir -p "$OUT"
# The node's east-west variables: both ends are internal.
VARS=(--set vars.address-groups.HOME_NET=any --set vars.address-groups.EXTERNAL_NET=any)

suricata_run() { # pcap rules logdir
  rm -rf "$3" && mkdir -p "$3"
  suricata -r "$1" -S "$2" -l "$3" -k none --runmode single -c /etc/suricata/suricata.yaml \
    "${VARS[@]}" --set outputs.1.eve-log.types.0=alert >/dev/null 2>"$3/stderr" || {
      cat "$3/stderr" >&2; return 1; }
}

if [ "${1:-}" = bench ]; then
  cargo build -q -p eastwall-integration --bin ids-corpus
  WEB="$OUT/web.rules"
  cat "$ET"/emerging-web_server.rules "$ET"/emerging-web_specific_apps.rules \
      "$ET"/emerging-web_client.rules > "$WEB"
  ALL="$OUT/et-open.rules"
  cat "$ET"/*.rules > "$ALL"
  cpu() { # pcap rules: user+sys seconds of a Suricata run, alerts logged to fast.log only
    rm -rf "$OUT/suri-bench" && mkdir -p "$OUT/suri-bench"
    /usr/bin/time -f '%U %S' -o "$OUT/time" suricata -r "$1" -S "$2" -l "$OUT/suri-bench" \
      -k none --runmode single -c /etc/suricata/suricata.yaml "${VARS[@]}" \
      --set outputs.1.eve-log.enabled=no --set outputs.7.stats.enabled=no >/dev/null 2>&1
    awk '{print $1 + $2}' "$OUT/time"
  }
  # Each shape's traffic many times over (web: 60 × 26 MB; bulk: 8 × 98 MB; mixed: 40 × 36
  # MB): Suricata's scanning must stand well above its start-up time. eastwall's criterion
  # benchmark scans each shape's traffic once per iteration. Web and bulk traffic is scanned
  # with ET Open's web rules, the mixed shape (TLS, DNS, mail, a database protocol beside
  # HTTP) with all of ET Open.
  for shape in web bulk mixed; do
    repeat=${REPEAT:-60} rules=$WEB
    [ "$shape" = bulk ] && repeat=${BULK_REPEAT:-8}
    [ "$shape" = mixed ] && repeat=${MIXED_REPEAT:-40} rules=$ALL
    payload=$(target/debug/ids-corpus bench "$OUT/bench.pcap" "$OUT/empty.pcap" "$repeat" "$shape")
    # Start-up and rule loading, measured on an empty pcap, are subtracted: the least of
    # three full runs less the least of three empty ones (each minimum the run least
    # disturbed by the machine; the least of the differences would favour a run whose
    # start-up happened to be measured slow, with all of ET Open a start-up of 12 s or more).
    min() { awk -v t="$1" -v b="$2" 'BEGIN{ if (b == "" || t < b) print t; else print b }'; }
    best_full="" best_empty=""
    for i in 1 2 3; do
      empty=$(cpu "$OUT/empty.pcap" "$rules"); full=$(cpu "$OUT/bench.pcap" "$rules")
      echo "suricata $shape run $i: ${full}s total, ${empty}s start-up"
      best_full=$(min "$full" "$best_full"); best_empty=$(min "$empty" "$best_empty")
    done
    best=$(awk -v a="$best_full" -v b="$best_empty" 'BEGIN{print a - b}')
    awk -v s="$shape" -v p="$payload" -v t="$best" 'BEGIN{printf "suricata %s: %d payload bytes in %.3f s CPU = %.3f Gbit/s per core\n", s, p, t, p*8/t/1e9}'
    echo "suricata alerts on the $shape traffic: $(wc -l < "$OUT/suri-bench/fast.log")"
    rm -f "$OUT/bench.pcap"
  done
  # eastwall's engine as built (Hyperscan for the bulk buffers), after the same engine with
  # Aho-Corasick DFAs there (criterion compares the two: the second run's change).
  for features in --no-default-features ""; do
    echo "eastwall ${features:-default features}:"
    EASTWALL_ET_OPEN="$ET" cargo bench -p eastwall-ids --bench scan $features -- --noplot \
      $([ -n "$features" ] && echo --save-baseline aho-corasick || echo --baseline aho-corasick) 2>&1 |
      grep -E 'engine:|traffic|scan/|thrpt|time:' || true
  done
  exit 0
fi

cargo build -q -p eastwall-integration --bin ids-conformance
RULES="$OUT/all.rules"
cat "$ET"/*.rules "$CORPUS/local.rules" > "$RULES"
: > "$OUT/eve.json"
for pcap in "$CORPUS"/*.pcap; do
  name=$(basename "$pcap" .pcap)
  suricata_run "$pcap" "$RULES" "$OUT/suri-$name"
  cat "$OUT/suri-$name/eve.json" >> "$OUT/eve.json"
done
target/debug/ids-conformance compare "$OUT/eve.json" "$RULES" -- "$CORPUS"/*.pcap
