#!/usr/bin/env bash
# ARM figures for BENCHMARKS.md (issue 15): the stripped release binary per
# architecture, and under emulation only ratios (absolute times under qemu-user
# say nothing about a device):
#
#   scripts/bench-arm.sh [sizes] [cpu] [install]     # default: all three
#
# sizes    stripped size of the release `wasmdm` (strip --strip-unneeded, as
#          scripts/package.sh does for the .deb) for amd64, arm64, armhf
# cpu      a CPU-bound guest (generated under target/bench-arm-cpu, it times
#          itself) run by `wasmdm run` as Cranelift code and as Pulley bytecode
#          (WASMDM_CODE_TARGET=pulley), natively on x86_64 and under
#          qemu-aarch64, and as pulley32 under qemu-arm
# install  the compile of the example packages (hello, counter) as install
#          does it: `wasmdm run PKG.wdm`, from Cranelift's first function to
#          the guest's first line (log timestamps), natively and emulated.
#          Not `wasmdm install` itself: a CLI runtime opens its engines with
#          default pools (4 GiB per memory), which costs qemu-user 7.2 ~10 GiB
#          of RSS and ~25 s per process for aarch64, and the CLI has no
#          setting to shrink them
#
# Binaries: amd64 is target/release/wasmdm (`cargo build --release -p
# wasmdm`); arm64/armhf are $CARGO_TARGET_DIR/<triple>/release/wasmdm
# (`scripts/cross.sh build`, CARGO_TARGET_DIR defaults to ./target-cross).
# Each is brought up to date first at nice 15 (NO_BUILD=1 uses them as they
# are). ROUNDS (default 5) runs per figure, medians reported; CPU_SCALE
# (default 10: ~40 ms of Cranelift code on a 2020s x86_64 core) scales the
# guest's work. RECORD=1 writes the section between the arm-bench markers of
# BENCHMARKS.md (appended after the footprint section when missing); REUSE=1
# only re-renders the last run's samples (target/bench-arm/results.txt).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target-cross}"
ROUNDS="${ROUNDS:-5}"
CPU_SCALE="${CPU_SCALE:-10}"
WORK="$ROOT/target/bench-arm"
ARCHES=(amd64 arm64 armhf)

die() { echo "bench-arm.sh: $*" >&2; exit 1; }
note() { echo "bench-arm.sh: $*" >&2; }
# shellcheck source=scripts/arch.sh
. "$ROOT/scripts/arch.sh"

bin_of() {
  case "$1" in
    amd64) echo "$ROOT/target/release/wasmdm" ;;
    *) echo "$CARGO_TARGET_DIR/$(triple_of "$1")/release/wasmdm" ;;
  esac
}

build_bins() {
  [ "${NO_BUILD:-0}" = 1 ] && return 0
  note "release build for amd64 (native target dir)"
  (unset CARGO_TARGET_DIR; nice -n 15 cargo build -q --locked --release -p wasmdm)
  note "release builds for arm64 armhf ($CARGO_TARGET_DIR)"
  scripts/cross.sh build arm64 armhf
}

now_ns() { date +%s%N; }

# Median of the numbers on stdin.
median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) exit 1; print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# Results, one per line: KEY VALUE (raw samples; the report takes medians).
RESULTS="$WORK/results.txt"
record() { echo "$1 $2" >>"$RESULTS"; }

cmd_sizes() {
  local arch bin s
  for arch in "${ARCHES[@]}"; do
    bin="$(bin_of "$arch")"
    [ -x "$bin" ] || die "no $arch binary at $bin"
    "$(strip_of "$arch")" --strip-unneeded -o "$WORK/wasmdm-$arch.stripped" "$bin"
    s="$(stat -c %s "$WORK/wasmdm-$arch.stripped")"
    record "size_$arch" "$s"
    # What wasmtime's `pulley` feature links in (all of the interpreter's own
    # symbols; nm reads all three ELF machines).
    record "pulleysyms_$arch" "$(nm -S -C "$bin" 2>/dev/null | awk '/pulley_interpreter::interp/ && NF >= 4 {print $2}' |
      python3 -c 'import sys; print(sum(int(l, 16) for l in sys.stdin))')"
    note "$arch: $s bytes stripped"
  done
}

cpu_guest() {
  local dir="$ROOT/target/bench-arm-cpu"
  local wasm="$dir/target/wasm32-wasip2/release/armcpu.wasm"
  if [ ! -f "$wasm" ]; then
    mkdir -p "$dir/src"
    cat >"$dir/Cargo.toml" <<'EOF'
[package]
name = "armcpu"
version = "1.0.0"
edition = "2024"
publish = false

[workspace]

[profile.release]
opt-level = 3
codegen-units = 1
EOF
    cat >"$dir/src/main.rs" <<'EOF'
//! CPU-bound guest for scripts/bench-arm.sh: integer hashing over a table, a
//! sort and a float loop, no host calls while computing. The argument scales
//! the work; the guest times itself (WASI monotonic clock), so compile time
//! and process start are not in the figure.
fn main() {
    let scale: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let start = std::time::Instant::now();
    let mut table: Vec<u64> = (0..100_000u64).collect();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for round in 0..4 * scale {
        for v in table.iter_mut() {
            h = (h ^ (*v).wrapping_add(round)).wrapping_mul(0x100_0000_01b3);
            *v = h >> 7;
        }
    }
    table.sort_unstable();
    let mut x = 0.5f64;
    for i in 0..200_000 * scale {
        x = (x * 3.7 * (1.0 - x)) + (i as f64) * 1e-12;
        if x > 1.0 {
            x -= 1.0;
        }
    }
    let us = start.elapsed().as_micros();
    println!("elapsed_us {us} check {} {}", table[table.len() / 2], std::hint::black_box(x));
}
EOF
    (cd "$dir" && nice -n 10 cargo build -q --release --target wasm32-wasip2) >&2
  fi
  echo "$wasm"
}

# One run of the CPU guest: ARCH, code target (native|pulley); records the
# guest's own time in microseconds.
cpu_once() {
  local arch="$1" target="$2" wasm="$3" out us
  # shellcheck disable=SC2046
  out="$(WASMDM_CODE_TARGET="$target" $(qemu_of "$arch") "$(bin_of "$arch")" run "$wasm" -- "$CPU_SCALE" 2>/dev/null)" ||
    die "$arch $target: wasmdm run failed"
  us="$(sed -n 's/.*elapsed_us \([0-9]*\).*/\1/p' <<<"$out" | head -1)"
  [ -n "$us" ] || die "$arch $target: no elapsed_us in: $out"
  record "cpu_${arch}_${target}" "$us"
  note "cpu $arch $target: $us us"
}

cmd_cpu() {
  local wasm r
  wasm="$(cpu_guest)"
  # Interleaved, so load from other work on the machine hits all alike.
  for r in $(seq "$ROUNDS"); do
    cpu_once amd64 native "$wasm"
    cpu_once amd64 pulley "$wasm"
    cpu_once arm64 native "$wasm"
    cpu_once arm64 pulley "$wasm"
    cpu_once armhf native "$wasm" # armv7's native target is Pulley (pulley32)
  done
}

# One `wasmdm run PKG.wdm` of ARCH with code target TARGET: records the time
# from Cranelift's first function (its debug log) to the guest's first
# stdout line (the log's timestamps): compile, cache write, instantiate,
# start. The process is ended once the line is there (counter runs on).
first_line_once() {
  local arch="$1" target="$2" pkg="$3" err="$WORK/run.err" pid us
  rm -f "$err"
  : >"$err" # before the process starts: the poll below must not see an old run
  # shellcheck disable=SC2046
  RUST_LOG='wasmdm=info,wasmtime_internal_cranelift::compiler=debug' WASMDM_CODE_TARGET="$target" \
    $(qemu_of "$arch") "$(bin_of "$arch")" run "$WORK/$pkg.wdm" >/dev/null 2>"$err" &
  pid=$!
  for _ in $(seq 1800); do
    grep -q 'source=Stdout' "$err" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  us="$(python3 - "$err" <<'PY'
import datetime, sys
def ts(line):
    return datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
first = out = None
for line in open(sys.argv[1], errors="replace"):
    if first is None and "wasmtime_internal_cranelift::compiler" in line:
        first = ts(line)
    if out is None and "source=Stdout" in line:
        out = ts(line)
if first and out:
    print(int((out - first).total_seconds() * 1e6))
PY
)"
  [ -n "$us" ] || die "$arch $target $pkg: no compile or output line in: $(tail -5 "$err")"
  record "first_${arch}_${target}_$pkg" "$us"
  note "compile -> first line $arch $target $pkg: $us us"
}

cmd_install() {
  local r pkg
  for pkg in hello counter; do
    "$(bin_of amd64)" pack "guest-examples/out/pkg/$pkg" -o "$WORK/$pkg.wdm" >/dev/null 2>&1
  done
  for r in $(seq "$ROUNDS"); do
    for pkg in hello counter; do
      first_line_once amd64 native "$pkg"
      first_line_once arm64 native "$pkg"
      first_line_once arm64 pulley "$pkg"
      first_line_once armhf native "$pkg"
    done
  done
}

# The BENCHMARKS.md section from $RESULTS.
report() {
  python3 - "$RESULTS" "$ROUNDS" "$CPU_SCALE" "$*" <<'EOF'
import statistics, sys, collections
path, rounds, scale, parts = sys.argv[1:5]
v = collections.defaultdict(list)
for line in open(path):
    k, x = line.split(None, 1)
    try:
        x = float(x)
    except ValueError:
        continue  # the command line, read by the shell
    v[k].append(x)
med = {k: statistics.median(xs) for k, xs in v.items()}
out = []
p = out.append
names = {"amd64": "x86_64", "arm64": "aarch64", "armhf": "armv7"}
if "size_amd64" in med:
    p("**Stripped release binary per architecture** (`strip --strip-unneeded`, as the .deb ships it):")
    p("")
    p("| architecture | Debian arch | stripped `wasmdm` | of it, Pulley's interpreter (`pulley_interpreter::interp` symbols) |")
    p("|---|---|---|---|")
    for a in ("amd64", "arm64", "armhf"):
        s = med.get(f"size_{a}")
        if s is not None:
            p(f"| {names[a]} | {a} | {int(s)} bytes ({s / 2**20:.1f} MiB) | {med.get(f'pulleysyms_{a}', 0) / 1024:.0f} KiB |")
    p("")
    p("x86_64 is the native `target/release` build, the others `--target` cross builds, all of the release profile "
      "(`debug = \"line-tables-only\"`, stripped). All three link wasmtime's Pulley interpreter: armv7 runs on it, "
      "the 64-bit builds carry it for `WASMDM_CODE_TARGET=pulley` (README \"ARM builds\"), at about the cost in the last column (a lower bound: "
      "what the compiler inlined into wasmtime's own functions is not counted).")
    p("")
if "cpu_arm64_native" in med:
    p(f"**CPU-bound guest, Pulley vs Cranelift** (`target/bench-arm-cpu`, scale {scale}: the guest's own time, "
      f"WASI monotonic clock, excluding compile and start; median of {rounds} interleaved runs of `wasmdm run`):")
    p("")
    p("| where | Cranelift (native code) | Pulley | Pulley / Cranelift |")
    p("|---|---|---|---|")
    a, b = med["cpu_amd64_native"], med["cpu_amd64_pulley"]
    p(f"| x86_64, native | {a/1000:.1f} ms | {b/1000:.1f} ms (pulley64) | **{b/a:.1f}** |")
    a, b = med["cpu_arm64_native"], med["cpu_arm64_pulley"]
    p(f"| aarch64 under `qemu-aarch64` | {a/1000:.1f} ms | {b/1000:.1f} ms (pulley64) | **{b/a:.1f}** |")
    c = med["cpu_armhf_native"]
    p(f"| armv7 under `qemu-arm` | (no Cranelift backend) | {c/1000:.1f} ms (pulley32) | |")
    p("")
    p(f"armv7 Pulley (`qemu-arm`) / aarch64 Pulley (`qemu-aarch64`): **{c/b:.2f}**; "
      f"armv7 Pulley / aarch64 Cranelift, both emulated: **{c/med['cpu_arm64_native']:.1f}**.")
    p("")
    def spread(num, den):
        r = [n / d for n, d in zip(v[num], v[den])]
        return f"{min(r):.1f}-{max(r):.1f}"
    p("Ratios of the medians; run by run (interleaved rounds) Pulley / Cranelift was "
      f"{spread('cpu_amd64_pulley', 'cpu_amd64_native')} natively and "
      f"{spread('cpu_arm64_pulley', 'cpu_arm64_native')} under qemu-aarch64, and armv7 / aarch64 Pulley "
      f"{spread('cpu_armhf_native', 'cpu_arm64_pulley')}: a regression shows as a ratio well outside these ranges. "
      "They compare code under the same emulator (Pulley with Cranelift, pulley32 with pulley64), not how fast a "
      "board is.")
    p("")
if "first_amd64_native_hello" in med:
    p(f"**Compiling the example packages** (`wasmdm run PKG.wdm`: from Cranelift's first function to the guest's "
      f"first stdout line, by the log's own timestamps: compile, cache write, instantiate, start; median of {rounds} "
      "rounds). Cranelift on every architecture (what `install` does with `compiler = \"cranelift\"`, and on armv7 "
      "always), to native code or to Pulley bytecode:")
    p("")
    p("| package | x86_64 native | aarch64 native / x86_64 | aarch64 pulley64 / x86_64 | armv7 pulley32 / x86_64 | armv7 / aarch64 native |")
    p("|---|---|---|---|---|---|")
    for pkg in ("hello", "counter"):
        x = med[f"first_amd64_native_{pkg}"]
        a = med[f"first_arm64_native_{pkg}"]
        b = med[f"first_arm64_pulley_{pkg}"]
        c = med[f"first_armhf_native_{pkg}"]
        p(f"| {pkg} | {x/1000:.1f} ms | **{a/x:.1f}** | **{b/x:.1f}** | **{c/x:.1f}** | **{c/a:.2f}** |")
    p("")
    p("The compiles run with Cranelift's per-function debug log on (it marks the start), which adds to all of them "
      "alike. Not `wasmdm install` itself: a CLI runtime opens its engines with the default "
      "pools (4 GiB per memory), which costs qemu-user 7.2 ~10 GiB of RSS and ~25 s per aarch64 process; the CLI "
      "has no setting to shrink them (the arm64 package's device config does: `memory-reservation`).")
    p("")
print("\n".join(out))
EOF
}

write_section() {
  local section="$1" md="$ROOT/BENCHMARKS.md"
  python3 - "$md" "$section" <<'EOF'
import sys
md, section = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
text = open(md).read()
begin, end = "<!-- arm-bench:begin -->", "<!-- arm-bench:end -->"
block = f"{begin}\n{section}\n{end}"
if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + block + rest.split(end, 1)[1]
else:
    anchor = "<!-- footprint:end -->"
    if anchor in text:
        text = text.replace(anchor, anchor + "\n\n" + block, 1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
open(md, "w").write(text)
EOF
}

main() {
  local parts=("$@") part
  [ ${#parts[@]} -gt 0 ] || parts=(sizes cpu install)
  for part in "${parts[@]}"; do
    case "$part" in sizes | cpu | install) ;; *) die "usage: bench-arm.sh [sizes] [cpu] [install]" ;; esac
  done
  command -v qemu-aarch64 >/dev/null && command -v qemu-arm >/dev/null ||
    die "needs qemu-user and the cross toolchains: scripts/cross.sh setup"
  [ -d guest-examples/out/pkg ] || scripts/build-guests.sh
  mkdir -p "$WORK"
  if [ "${REUSE:-0}" != 1 ]; then
    local start=$SECONDS
    : >"$RESULTS"
    build_bins
    local arch
    for arch in "${ARCHES[@]}"; do
      [ -x "$(bin_of "$arch")" ] || die "no $arch binary at $(bin_of "$arch")"
    done
    for part in "${parts[@]}"; do "cmd_$part"; done
    record took $((SECONDS - start))
    local envs="" e
    for e in CARGO_TARGET_DIR NO_BUILD ROUNDS CPU_SCALE; do
      [ -n "${!e:-}" ] && envs+="$e=${!e} "
    done
    record command "${envs}scripts/bench-arm.sh ${parts[*]}"
    record when "$(date -u +%s)"
  fi
  local body="$WORK/section.md" when
  when="$(date -u -d "@$(awk '$1 == "when" {print $2}' "$RESULTS")" '+%Y-%m-%d %H:%M UTC')"
  {
    echo "### ARM builds: binary sizes and ratios under emulation (issue 15)"
    echo
    echo "Made by \`$(sed -n 's/^command //p' "$RESULTS")\` on $when, $(nproc) cores"
    echo "($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(qemu-aarch64 --version | head -1 | sed 's/ *Copyright.*//'),"
    echo "release builds of $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- host Cargo.toml Cargo.lock || echo ' plus uncommitted changes'),"
    echo "wasmtime $(sed -n '/^name = "wasmtime"$/{n;s/version = "\(.*\)"/\1/p;q}' Cargo.lock) as on main (no \`all-arch\`)."
    echo "Shared machine: read ratios, not absolute times. Took $(awk '$1 == "took" {print $2}' "$RESULTS") s."
    echo
    report "${parts[*]}"
  } >"$body"
  cat "$body"
  if [ "${RECORD:-0}" = 1 ]; then
    write_section "$body"
    note "written to BENCHMARKS.md"
  fi
}

main "$@"
