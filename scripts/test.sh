#!/usr/bin/env bash
# Sets up everything the tests need on a fresh machine, then runs them:
# the wasm32-wasip2 target, the guest components, the independent test peers
# (npm lwm2m-node-lib, PyPI aiocoap, Debian libcoap3-bin), headless Chromium and
# chromedriver (Debian chromium, chromium-driver) for the console, the workspace tests and
# a short fuzzing run per parser.
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
# Headless Chromium and its WebDriver for the web console's browser test.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "note: chromium / chromium-driver not installed; the console browser test is skipped" >&2
  fi
fi

scripts/build-guests.sh
cargo test --workspace --locked "$@"

# A short coverage-guided fuzzing run of every parser that meets hostile input
# (the seeds alone already ran in the tests above); a crash fails the run.
# FUZZ_SMOKE_SECONDS=0 skips it.
if [ "${FUZZ_SMOKE_SECONDS:-10}" != 0 ]; then
  scripts/fuzz.sh "${FUZZ_SMOKE_SECONDS:-10}"
fi

# --- Issue 15: the Debian package and ARM builds (README "Packages", "ARM builds") ---
# The amd64 .deb is made from the debug binary the tests above built, then
# checked: contents, control data, units (systemd-analyze verify), and both
# units' ExecStart lines run as an unprivileged user until the device
# registers with the server. On CI (CI=true, root, a machine of its own) it is
# also installed with dpkg, given an app, upgraded, removed, reinstalled and
# purged (scripts/package.sh install-test). The emulated ARM tests run when
# WASMDM_CROSS_TESTS names architectures ("arm64", "arm64 armhf"), and on CI
# the armhf subset by default (README "ARM builds": what runs, and times).
if [ "${WASMDM_PACKAGE_TEST:-1}" != 0 ]; then
  deb_dir="$(mktemp -d)"
  deb="$(scripts/package.sh deb amd64 "${CARGO_TARGET_DIR:-target}/debug/wasmdm" "$deb_dir")"
  scripts/package.sh check "$deb"
  if [ "${CI:-}" = true ] && [ "$(id -u)" = 0 ]; then
    scripts/package.sh install-test "$deb"
  else
    echo "note: dpkg install/upgrade/purge test runs on CI only (scripts/package.sh install-test)" >&2
  fi
  rm -rf "$deb_dir"
fi
# On CI the 32-bit ARM subset runs by default (Pulley, the one code path the
# native tests cannot reach; about 8 minutes cold); WASMDM_CROSS_TESTS=""
# skips it, "arm64 armhf" adds the 64-bit one.
if [ "${CI:-}" = true ] && [ "$(id -u)" = 0 ]; then
  cross_default=armhf
else
  cross_default=
fi
cross_tests="${WASMDM_CROSS_TESTS-$cross_default}"
if [ -n "$cross_tests" ]; then
  scripts/cross.sh setup
  # shellcheck disable=SC2086
  scripts/cross.sh test $cross_tests
fi
# --- end issue 15 ---
