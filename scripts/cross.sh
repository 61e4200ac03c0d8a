#!/usr/bin/env bash
# ARM builds, tests under emulation and Debian packages (issue 15).
#
#   scripts/cross.sh setup              # Debian cross toolchains, qemu-user, dpkg-dev; rustup targets
#   scripts/cross.sh build [ARCH...]    # stripped binaries (profile dist: release + fat LTO)
#   scripts/cross.sh deb [ARCH...]      # build + scripts/package.sh deb + check -> $CARGO_TARGET_DIR/deb/
#   scripts/cross.sh test [ARCH...]     # the emulated test subset (README "ARM builds"), under qemu-user
#   scripts/cross.sh all                # setup, test arm64 armhf, deb amd64 arm64 armhf
#
# Binary sizes and the ratios under emulation for BENCHMARKS.md:
# scripts/bench-arm.sh (it builds through `cross.sh build`).
#
# ARCH: amd64 | arm64 | armhf (default arm64 armhf; `deb` also takes amd64).
# Cross builds use their own target dir (default ./target-cross; CARGO_TARGET_DIR
# overrides) so they never hold the native target dir's lock. They are run at
# nice 15. CROSS_TESTS_arm64 / CROSS_TESTS_armhf replace the test set: items
# `binary[:test,test...]`, e.g. "runtime_sandbox device_push:coap_pull_from_aiocoap_fileserver".
# QEMU_RSS_LIMIT_MB (default 6144) caps an emulated test's memory.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-cross}"

die() { echo "cross.sh: $*" >&2; exit 1; }
note() { echo "cross.sh: $*" >&2; }
# shellcheck source=scripts/arch.sh
. "$ROOT/scripts/arch.sh"

# What runs under emulation (README "ARM builds"): test binary[:test,test...]
# (no list: all of its tests). The runtime lifecycle (install -> activate ->
# deactivate -> uninstall, upgrade keeping /data), all sandbox tests
# (denials, memory cap, epochs, restarts), and a push and a pull from a local
# server (device_push: lwm2m-node-lib, aiocoap; the device is the emulated
# `wasmdm` binary). Not the lifecycle tests that reopen runtimes: under
# Debian 12's qemu-user (7.2) every engine's pool reservation (terabytes of
# address space) costs the emulator gigabytes of RSS.
default_tests() {
  echo "runtime_lifecycle:deliver_install_activate_deactivate_uninstall,upgrade_restarts_active_component_and_keeps_data,hello_output_is_captured_in_logs runtime_sandbox device_push"
}

cmd_setup() {
  local need=()
  command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
  command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
  command -v qemu-aarch64 >/dev/null && command -v qemu-arm >/dev/null || need+=(qemu-user)
  command -v dpkg-deb >/dev/null || need+=(dpkg-dev)
  if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null ||
      die "need Debian packages ${need[*]} (run as root on Debian, or install them)"
    note "installing ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if command -v rustup >/dev/null; then
    rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf >/dev/null 2>&1
  fi
}

cargo_cross() {
  nice -n 15 cargo "$@"
}

# The shipped binary for ARCH (Cargo profile `dist`: release with fat LTO,
# which keeps the idle device's footprint down); prints its path.
# CROSS_PROFILE=release builds faster for a quick try.
build_one() {
  local arch="$1" triple profile="${CROSS_PROFILE:-dist}"
  triple="$(triple_of "$arch")"
  cargo_cross build --locked --profile "$profile" -p wasmdm --target "$triple" >&2
  echo "$CARGO_TARGET_DIR/$triple/$profile/wasmdm"
}

cmd_build() {
  local arch bin strip
  for arch in "$@"; do
    bin="$(build_one "$arch")"
    strip="$(strip_of "$arch")"
    "$strip" --strip-unneeded -o "$bin.stripped" "$bin"
    note "$arch: $bin ($(stat -c %s "$bin.stripped") bytes stripped: $bin.stripped)"
  done
}

cmd_deb() {
  local arch bin deb
  for arch in "$@"; do
    bin="$(build_one "$arch")"
    deb="$(scripts/package.sh deb "$arch" "$bin" "$CARGO_TARGET_DIR/deb")"
    scripts/package.sh check "$deb"
  done
}

# The tests spawn `wasmdm` (env!("CARGO_BIN_EXE_wasmdm")); a foreign binary
# cannot be exec'd without binfmt_misc, so that path becomes a script that
# runs the real binary under qemu. Undone before every build so cargo only
# ever sees its own output.
unwrap_bin() {
  local bin="$1"
  if [ -f "$bin.qemu-real" ]; then
    if [ "$bin" -ef "$bin.qemu-real" ]; then
      rm -f "$bin.qemu-real" # cargo already put its own back
    else
      mv -f "$bin.qemu-real" "$bin"
    fi
  fi
}

wrap_bin() {
  local bin="$1" qemu="$2"
  [ -f "$bin" ] || return 0
  mv -f "$bin" "$bin.qemu-real"
  printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$qemu" "$bin.qemu-real" >"$bin"
  chmod 0755 "$bin"
  touch -r "$bin.qemu-real" "$bin"
}

# Kills emulated process $1 if its RSS passes $QEMU_RSS_LIMIT_MB (default
# 6144): a shared build machine must not meet the OOM killer.
watch_rss() {
  local pid="$1" limit="${QEMU_RSS_LIMIT_MB:-6144}" rss
  while kill -0 "$pid" 2>/dev/null; do
    rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)"
    if [ "${rss:-0}" -gt $((limit * 1024)) ]; then
      note "killing emulated test $pid: RSS ${rss} KiB over ${limit} MiB"
      kill -KILL "$pid" 2>/dev/null || true
      return
    fi
    sleep 1
  done
}

cmd_test() {
  local arch triple spec bin qemu start exes exe item name filters
  for arch in "$@"; do
    [ "$arch" != amd64 ] || die "amd64 tests run natively (scripts/test.sh)"
    triple="$(triple_of "$arch")"
    qemu="$(qemu_of "$arch")"
    spec="$(printenv "CROSS_TESTS_$arch" || default_tests "$arch")"
    bin="$CARGO_TARGET_DIR/$triple/debug/wasmdm"
    [ -d guest-examples/out ] || scripts/build-guests.sh
    local test_args=()
    for item in $spec; do test_args+=(--test "${item%%:*}"); done
    unwrap_bin "$bin"
    start=$SECONDS
    # --no-default-features: the emulated subset needs no cross-compiling
    # backends (`cross-precompile`: every other architecture's Cranelift),
    # which would only lengthen the build.
    exes="$(cargo_cross test --locked -p wasmdm --no-default-features --target "$triple" "${test_args[@]}" --no-run \
      --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])')"
    note "$arch: test build took $((SECONDS - start)) s"
    [ -n "$exes" ] || die "$arch: no test binaries built"
    # Run directly, not through `cargo test`: cargo would put the real
    # binary back at the wrapped path before running anything.
    wrap_bin "$bin" "$qemu"
    start=$SECONDS
    local status=0 pid
    local passed=0 failed=() t
    for item in $spec; do
      name="${item%%:*}"
      exe="$(awk -v n="$name" '$1 == n {print $2}' <<<"$exes")"
      if [ "$item" != "$name" ]; then
        filters=("${item#*:}")
        IFS=, read -r -a filters <<<"${item#*:}"
      else
        # shellcheck disable=SC2086
        mapfile -t filters < <($qemu "$exe" --list --format terse | sed -n 's/: test$//p')
      fi
      # One emulator process per test, one test at a time, from the
      # package's directory like `cargo test`: Debian 12's qemu-user never
      # gives back what an engine's pool reservation cost it, so the
      # emulator's memory only stays bounded per test.
      for t in "${filters[@]}"; do
        # shellcheck disable=SC2086
        (cd host && exec $qemu "$exe" --exact "$t" --test-threads=1 -q) >"$CARGO_TARGET_DIR/cross-test.log" 2>&1 &
        pid=$!
        watch_rss "$pid" &
        if wait "$pid"; then
          passed=$((passed + 1))
          echo "test $name::$t ... ok"
        else
          failed+=("$name::$t")
          echo "test $name::$t ... FAILED"
          cat "$CARGO_TARGET_DIR/cross-test.log"
          status=1
        fi
      done
    done
    echo "$arch: ${passed} passed, ${#failed[@]} failed"
    unwrap_bin "$bin"
    note "$arch: tests under $(echo "$qemu" | cut -d' ' -f1) took $((SECONDS - start)) s"
    [ "$status" = 0 ] || die "$arch: tests failed"
  done
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
[ $# -gt 0 ] || set -- arm64 armhf
case "$cmd" in
  setup) cmd_setup ;;
  build) cmd_setup; cmd_build "$@" ;;
  deb) cmd_setup; cmd_deb "$@" ;;
  test) cmd_setup; cmd_test "$@" ;;
  all)
    cmd_setup
    cmd_test arm64 armhf
    cmd_deb amd64 arm64 armhf
    ;;
  *) die "usage: cross.sh setup | build [ARCH...] | deb [ARCH...] | test [ARCH...] | all" ;;
esac
