#!/usr/bin/env bash
# Footprint figures for BENCHMARKS.md (issue 15): the stripped size of each
# `wasmdm` binary given, and the RSS of an idle device with nothing installed,
# registered with a local `wasmdm server` (plain CoAP on loopback), measured
# after it has settled, with the default engine config and with the arm64
# package's memory-reservation (256 MiB).
#
#   scripts/bench-footprint.sh BINARY [BINARY...]   # the first must run here (x86_64)
#
# Release binaries: `cargo build --release -p wasmdm` and `scripts/cross.sh build`.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: bench-footprint.sh BINARY [BINARY...]" >&2; exit 1; }

echo "| binary | architecture | stripped size |"
echo "|---|---|---|"
for bin in "$@"; do
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
  local label="$1" conf="$2" pid i
  "$bin" device --config "$conf" --endpoint "fp-$RANDOM" --server "coap://127.0.0.1:$port" \
    --data-dir "$work/dev-$label" >"$work/dev-$label.log" 2>&1 &
  pid=$!
  for ((i = 0; i < 100; i++)); do
    grep -q registered "$work/dev-$label.log" && break
    sleep 0.1
  done
  grep -q registered "$work/dev-$label.log" || { cat "$work/dev-$label.log" >&2; exit 1; }
  sleep 10
  local rss anon file pss vsz
  rss="$(awk '/^Rss:/ {print $2}' "/proc/$pid/smaps_rollup")"
  pss="$(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")"
  anon="$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status")"
  file="$(awk '/^RssFile:/ {print $2}' "/proc/$pid/status")"
  vsz="$(awk '/^VmSize:/ {print $2}' "/proc/$pid/status")"
  printf '| %s | %s KiB | %s KiB | %s KiB | %s KiB | %s GiB |\n' "$label" "$rss" "$anon" "$file" "$pss" \
    "$((vsz / 1048576))"
  kill -TERM "$pid"
  wait "$pid" || true
}

echo
echo "Idle device, nothing installed, registered (10 s after registration):"
echo
echo "| engine config | RSS | anon | file-backed | PSS | address space |"
echo "|---|---|---|---|---|---|"
printf '' >"$work/default.toml"
measure "default (4 GiB reservation, 100 slots)" "$work/default.toml"
printf 'memory-reservation = 268435456\n' >"$work/arm64.toml"
measure "arm64 package (256 MiB reservation, 100 slots)" "$work/arm64.toml"
