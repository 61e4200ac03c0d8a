#!/usr/bin/env bash
# The main job, on embedded defaults with no configuration: `wasmdm demo` — a
# wasmdm server and three wasmdm devices on loopback; the example counter
# guest installed and activated on the group, then upgraded to version 2 by a
# group campaign, and the per-device report printed.
# Extra arguments go to `wasmdm demo` (e.g. --devices 5).
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v rustup >/dev/null 2>&1; then
  rustup target add wasm32-wasip2 >/dev/null
fi
scripts/build-guests.sh >/dev/null
exec cargo run --quiet -p wasmdm -- demo "$@"
