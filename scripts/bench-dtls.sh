#!/usr/bin/env bash
# DTLS benchmarks, figures into the "DTLS" section of BENCHMARKS.md:
#   handshake  DTLS 1.2 handshake latency, PSK and ECDHE-ECDSA (CCM_8): wasmdm's
#              DtlsClient/DtlsServer in memory and over UDP loopback, next to
#              libcoap's coap-client-openssl / coap-server-openssl
#              (host/proto/benches/dtls.rs `handshake`)
#   transfer   1 and 10 MiB over DTLS-PSK with 1024-byte blocks: Block1 push and
#              CoAP pulls between `wasmdm device` and `wasmdm server --coaps` /
#              coap-server-openssl, next to libcoap's client <-> server
#              (tests/bench/lwm2m_bench.py transfer-dtls)
#   register   1000 simulated devices registering over DTLS-PSK with one
#              `wasmdm server`, then the same over plain CoAP for the difference
#              (host/proto/benches/dtls.rs `register`)
# Usage: scripts/bench-dtls.sh [all|handshake|transfer|register|report] [--quick]
# Needs: target/release/wasmdm (cargo build --release -p wasmdm --bins),
# guest-examples/out/pkg (scripts/build-guests.sh), libcoap3-bin (the
# *-openssl tools), a C compiler (tests/bench/force_ciphers.c), python3.
# Writes target/bench-dtls/* and the DTLS section of BENCHMARKS.md (only the
# parts run are replaced). Wall-clock figures: note the load printed with them.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
quick="${2:-}"
bin="${WASMDM_BIN:-target/release/wasmdm}"
out=target/bench-dtls
mkdir -p "$out/libcoap"
n=200 devices=1000 reps=5 rounds=3
if [ "$quick" = "--quick" ]; then n=30 devices=100 reps=2 rounds=1; fi
for tool in coap-client-openssl coap-server-openssl cc python3 curl; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install libcoap3-bin gcc curl)" >&2; exit 1; }
done

run() { echo "+ $*" >&2; "$@"; }
# Each part's output file starts with the command that made it.
cmdline() { printf 'Command: `%s`\n\n' "$*"; }

cc -shared -fPIC -O2 -o "$out/libcoap/force_ciphers.so" tests/bench/force_ciphers.c -ldl

handshake() {
  run cargo bench -q -p wasmdm-proto --bench dtls --no-run
  local cmd=(cargo bench -q -p wasmdm-proto --bench dtls -- handshake "$n" --libcoap "$PWD/$out/libcoap")
  { cmdline "${cmd[*]}"; run "${cmd[@]}"; } > "$out/handshake.md.tmp"
  mv "$out/handshake.md.tmp" "$out/handshake.md"
  cat "$out/handshake.md"
}

transfer() {
  [ -x "$bin" ] || { echo "missing $bin: cargo build --release -p wasmdm --bins" >&2; exit 1; }
  local q=()
  [ "$quick" = "--quick" ] && q=(--quick)
  export BENCH_INVOCATION="scripts/bench-dtls.sh transfer${quick:+ $quick} (python3 tests/bench/lwm2m_bench.py transfer-dtls --wasmdm $bin --reps $reps${q[*]:+ ${q[*]}})"
  run python3 tests/bench/lwm2m_bench.py transfer-dtls --wasmdm "$bin" --reps "$reps" \
    ${q[@]+"${q[@]}"} --out "$out/transfer.json"
}

free_port() { # kind (udp|tcp)
  python3 -c "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=='udp' else socket.SOCK_STREAM); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])" "$1"
}

# One `wasmdm server` (fresh data dir), the simulated devices against it, then stop it.
register_round() { # mode (dtls|plain|dtls-1ip), round
  local mode="$1" round="$2" dir coap coaps http pid flags=() target
  dir="$(mktemp -d "${TMPDIR:-/tmp}/wasmdm-bench-dtls-XXXXXX")"
  coap="$(free_port udp)" coaps="$(free_port udp)" http="$(free_port tcp)"
  [ "$mode" = plain ] && flags=(--allow-nosec)
  NO_COLOR=1 "$bin" server --coap "127.0.0.1:$coap" --coaps "127.0.0.1:$coaps" \
    --http "127.0.0.1:$http" --data-dir "$dir/data" ${flags[@]+"${flags[@]}"} \
    > "$out/server-$mode-$round.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    [ -s "$dir/data/admin-token" ] && curl -sf -o /dev/null \
      -H "Authorization: Bearer $(cat "$dir/data/admin-token")" "http://127.0.0.1:$http/api/devices" && break
    sleep 0.1
  done
  if [ "$mode" = plain ]; then target="127.0.0.1:$coap"; else target="127.0.0.1:$coaps"; fi
  local cmd=(cargo bench -q -p wasmdm-proto --bench dtls -- register --server "$target"
    --api "127.0.0.1:$http" --token-file "$dir/data/admin-token" --server-pid "$pid"
    --devices "$devices" --window 50)
  [ "$mode" = plain ] && cmd+=(--plain)
  [ "$mode" = dtls-1ip ] && cmd+=(--same-ip)
  local status=0
  { cmdline "${cmd[*]}"; run "${cmd[@]}"; } > "$out/register-$mode-$round.md" || status=$?
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
  cat "$out/register-$mode-$round.md"
  return "$status"
}

register() {
  [ -x "$bin" ] || { echo "missing $bin: cargo build --release -p wasmdm --bins" >&2; exit 1; }
  run cargo bench -q -p wasmdm-proto --bench dtls --no-run
  rm -f "$out"/register-*.md
  # Interleaved: DTLS, plain, DTLS, plain, ... each on a fresh server.
  for r in $(seq "$rounds"); do
    register_round dtls "$r"
    register_round plain "$r"
  done
  # All devices behind one address (a NAT, a gateway): the server's cap of 8
  # half-open handshakes per source IP applies.
  register_round dtls-1ip 1
}

case "$what" in
  handshake) handshake ;;
  transfer) transfer ;;
  register) register ;;
  report) ;;
  all) handshake; transfer; register ;;
  *) echo "usage: $0 [all|handshake|transfer|register|report] [--quick]" >&2; exit 2 ;;
esac
run python3 tests/bench/dtls_report.py "$out" BENCHMARKS.md
