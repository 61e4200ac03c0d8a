#!/usr/bin/env bash
# Footprint figures for BENCHMARKS.md (issue 15): the stripped size of each
# `wasmdm` binary given, and the RSS of an idle device registered with a local
# `wasmdm server` (plain CoAP on loopback), measured after it has settled:
# with nothing installed (default engine config, and the arm64 package's
# memory-reservation of 256 MiB), then with FOOTPRINT_PACKAGES (default 1000)
# inactive packages installed under each `code-loading`. Then the runtime
# bench's RSS per installed, inactive package and activation latency under
# each `code-loading` (`cargo bench -p wasmdm --bench runtime`).
#
#   scripts/bench-footprint.sh BINARY [BINARY...]   # the first must run here (x86_64)
#
# FOOTPRINT_PARTS (default "binary idle packages runtime") picks the parts.
# Release binaries: `cargo build --release -p wasmdm` and `scripts/cross.sh build`.
set -euo pipefail
parts="${FOOTPRINT_PARTS:-binary idle packages runtime}"
npkg="${FOOTPRINT_PACKAGES:-1000}"
part() { [[ " $parts " == *" $1 "* ]]; }
root="$(cd "$(dirname "$0")/.." && pwd)"
[ $# -ge 1 ] || { echo "usage: bench-footprint.sh BINARY [BINARY...]" >&2; exit 1; }

part binary && echo "| binary | architecture | stripped size |"
part binary && echo "|---|---|---|"
for bin in "$@"; do
  part binary || break
  machine="$(readelf -h "$bin" | sed -n 's/^ *Machine: *//p')"
  case "$machine" in
    *AArch64*) strip=aarch64-linux-gnu-strip ;;
    ARM) strip=arm-linux-gnueabihf-strip ;;
    *) strip=strip ;;
  esac
  tmp="$(mktemp)"
  "$strip" --strip-unneeded -o "$tmp" "$bin"
  size="$(stat -c %s "$tmp")"
  rm -f "$tmp"
  printf '| `%s` | %s | %s bytes (%s MiB) |\n' "$bin" "$machine" "$size" \
    "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')"
done

free_udp() {
  python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

bin="$1"
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port="$(free_udp)"
"$bin" server --data-dir "$work/srv" --coap "127.0.0.1:$port" --no-coaps --no-bootstrap \
  --http 127.0.0.1:0 --allow-nosec >"$work/srv.log" 2>&1 &
sleep 1

measure() {
  local label="$1" conf="$2" data="${3:-$work/dev-$1}" pid i
  "$bin" device --config "$conf" --endpoint "fp-$RANDOM" --server "coap://127.0.0.1:$port" \
    --data-dir "$data" >"$work/dev-$label.log" 2>&1 &
  pid=$!
  for ((i = 0; i < 100; i++)); do
    grep -q registered "$work/dev-$label.log" && break
    sleep 0.1
  done
  grep -q registered "$work/dev-$label.log" || { cat "$work/dev-$label.log" >&2; exit 1; }
  sleep "${settle:-10}"
  local rss anon file pss vsz
  rss="$(awk '/^Rss:/ {print $2}' "/proc/$pid/smaps_rollup")"
  pss="$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")"
  anon="$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status")"
  file="$(awk '/^RssFile:/ {print $2}' "/proc/$pid/status")"
  vsz="$(awk '/^VmSize:/ {print $2}' "/proc/$pid/status")"
  printf '| %s | %s KiB | %s KiB | %s KiB | %s KiB | %s GiB |\n' "$label" "$rss" "$anon" "$file" "$pss" \
    "$((vsz / 1048576))"
  echo "$rss" >"$work/rss-$label"
  kill -TERM "$pid"
  wait "$pid" || true
}

if part idle; then

echo
echo "Idle device, nothing installed, registered (10 s after registration):"
echo
echo "| engine config | RSS | anon | file-backed | PSS | address space |"
echo "|---|---|---|---|---|---|"
printf '' >"$work/default.toml"
measure "default (4 GiB reservation, 100 slots)" "$work/default.toml"
printf 'memory-reservation = 268435456\n' >"$work/arm64.toml"
measure "arm64 package (256 MiB reservation, 100 slots)" "$work/arm64.toml"
fi

# $npkg copies of the example counter package (each its own name), installed
# with `wasmdm install` (all share one component, so one artifact), none
# active; then a device on that data directory under each code-loading.
if part packages; then
  data="$work/many"
  tmpl="$root/guest-examples/out/pkg/counter"
  [ -f "$tmpl/counter.wasm" ] || { echo "run scripts/build-guests.sh first" >&2; exit 1; }
  t0=$(date +%s)
  for ((i = 0; i < npkg; i++)); do
    d="$work/pkg"
    rm -rf "$d" && cp -r "$tmpl" "$d"
    sed -i "s/^name = \"counter\"/name = \"counter-$i\"/" "$d/manifest.toml"
    "$bin" pack "$d" -o "$work/p.wdm" >/dev/null
    "$bin" install --data-dir "$data" "$work/p.wdm" >/dev/null
  done
  echo
  echo "Idle device with $npkg inactive packages installed (\`wasmdm install\` of $npkg copies of the"
  echo "counter package, $(($(date +%s) - t0)) s), registered, 20 s after registration (the background"
  echo "Cranelift compile of the shared component done):"
  echo
  echo "| code-loading | RSS | anon | file-backed | PSS | address space |"
  echo "|---|---|---|---|---|---|"
  for mode in on-demand resident; do
    printf 'max-packages = %s\ncode-loading = "%s"\n' "$npkg" "$mode" >"$work/$mode.toml"
    settle=20 measure "$mode" "$work/$mode.toml" "$data"
  done
  if [ -f "$work/rss-default (4 GiB reservation, 100 slots)" ]; then
    base="$(cat "$work/rss-default (4 GiB reservation, 100 slots)")"
    echo
    for mode in on-demand resident; do
      awk -v a="$base" -v b="$(cat "$work/rss-$mode")" -v n="$npkg" -v m="$mode" \
        'BEGIN { printf "- %s: %.1f KiB RSS per installed, inactive package over the idle device\n", m, (b - a) / n }'
    done
  fi
fi

# The runtime alone (no LwM2M): RSS per installed, inactive package in a
# fresh process, and activation latency, under each code-loading.
if part runtime; then
  for mode in on-demand resident; do
    echo
    echo "### code-loading = \"$mode\""
    (cd "$root" && WASMDM_BENCH_CODE_LOADING=$mode cargo bench -q -p wasmdm --bench runtime -- memory "$npkg")
    (cd "$root" && WASMDM_BENCH_CODE_LOADING=$mode cargo bench -q -p wasmdm --bench runtime -- activation 300)
  done
fi
