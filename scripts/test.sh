#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs them:
# the wasm32-wasip2 target, the guest components, the independent test peers
# (npm lwm2m-node-lib, PyPI aiocoap, Debian libcoap3-bin) and the workspace tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null 2>&1; then
  rustup target add wasm32-wasip2 >/dev/null
fi

# Independent peers for the integration tests.
(cd tests/peers && npm ci --no-audit --no-fund --loglevel=error)
if ! python3 -c 'import aiocoap' 2>/dev/null; then
  python3 -m pip install --quiet 'aiocoap==0.4.17'
fi
if ! command -v coap-client-notls >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libcoap3-bin >/dev/null
  else
    echo "note: libcoap3-bin not installed; tests that use coap-client are skipped" >&2
  fi
fi

scripts/build-guests.sh
cargo test --workspace --locked "$@"
