#!/usr/bin/env bash
# LwM2M benchmarks (issue 3 Speed, issue 4 Scale) against the release binary.
# Usage: scripts/bench-lwm2m.sh [transfer|activate|reads|scale|all] [--quick] [SCALE FLAGS...]
# SCALE FLAGS go to tests/bench/lwm2m_scale.py after the defaults (1000
# devices, 60 s keep-alive, campaigns pull-http,push,pull-coap with quota 50),
# e.g. `scale --keepalive 30 --campaign-devices 200 --campaigns push`.
# Needs: target/release/wasmdm (cargo build --release -p wasmdm --bins),
# guest-examples/out/pkg (scripts/build-guests.sh), python3 with aiocoap,
# libcoap3-bin (coap-client-notls, coap-server-notls), curl.
# Writes target/bench-lwm2m/*.json and the lwm2m section of BENCHMARKS.md.
# Wall-clock figures: run on an otherwise idle machine for numbers to compare.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
[ $# -gt 0 ] && shift
quick=""
if [ "${1:-}" = "--quick" ]; then quick="--quick"; shift; fi
scale_flags=("$@")
export BENCH_INVOCATION="scripts/bench-lwm2m.sh $what${quick:+ $quick}${*:+ $*}"
bin="${WASMDM_BIN:-target/release/wasmdm}"
out=target/bench-lwm2m
mkdir -p "$out"
for tool in coap-client-notls coap-server-notls curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install libcoap3-bin curl)" >&2; exit 1; }
done
python3 -c 'import aiocoap' 2>/dev/null || { echo "missing aiocoap (pip install aiocoap==0.4.17)" >&2; exit 1; }
[ -x "$bin" ] || { echo "missing $bin: cargo build --release -p wasmdm --bins" >&2; exit 1; }
[ -d guest-examples/out/pkg/counter ] || { echo "missing guest packages: scripts/build-guests.sh" >&2; exit 1; }

reps=5 rates="500 1000" seconds=10 devices=1000 keepalive=60 quota=50
campaigns=pull-http,push,pull-coap
if [ "$quick" = "--quick" ]; then reps=2 rates="1000" seconds=3 devices=100 keepalive=10 quota=10; fi
scale() {
  run python3 tests/bench/lwm2m_scale.py --wasmdm "$bin" --devices "$devices" \
    --keepalive "$keepalive" --campaigns "$campaigns" --quota "$quota" \
    --out "$out/scale.json" ${scale_flags[@]+"${scale_flags[@]}"}
}

run() { echo "+ $*" >&2; "$@"; }
case "$what" in
  transfer|activate|reads)
    run python3 tests/bench/lwm2m_bench.py "$what" --wasmdm "$bin" --reps "$reps" \
      --rates $rates --seconds "$seconds" --out "$out/$what.json" ;;
  scale)
    scale ;;
  all)
    for w in transfer activate reads; do
      run python3 tests/bench/lwm2m_bench.py "$w" --wasmdm "$bin" --reps "$reps" \
        --rates $rates --seconds "$seconds" --out "$out/$w.json"
    done
    scale ;;
  *) echo "usage: $0 [transfer|activate|reads|scale|all] [--quick] [SCALE FLAGS...]" >&2; exit 2 ;;
esac
run python3 tests/bench/lwm2m_report.py "$out" BENCHMARKS.md
