#!/usr/bin/env bash
# Issue 13 benchmarks: install with Winch (Cranelift later, in the background)
# vs install with Cranelift only, for `hello`, `big` and two large components
# made by third-party toolchains; CPU-bound guest speed after the background
# compile; activation latency while it runs. Rewrites the section between
# <!-- fast-install:begin --> and <!-- fast-install:end --> of BENCHMARKS.md
# (scripts/bench.sh carries it over). Release builds. Runs from any cwd.
#
#   scripts/bench-fast-install.sh          full run
#   QUICK=1 scripts/bench-fast-install.sh  fewer iterations
#
# Inputs it builds when missing (nothing large is committed), under target/:
# the example guests; `big` (scripts/bench.sh's 1.8 MiB Rust component);
# bench-cpu (a CPU-bound Rust guest); a componentize-py app (PyPI
# componentize-py in a venv) and a ComponentizeJS app (npm
# @bytecodealliance/componentize-js), both against the WASI 0.2 WIT that
# wasmtime-wasi ships. A toolchain that cannot be installed is skipped with a note.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out_md="$root/BENCHMARKS.md"
work="$root/target/bench-out-fast"
rm -rf "$work"
mkdir -p "$work"
export WASMDM_BENCH_DIR="$root/target/bench-tmp"
mkdir -p "$WASMDM_BENCH_DIR"
tp="$root/target/bench-thirdparty"
mkdir -p "$tp"

if [[ "${QUICK:-0}" == 1 ]]; then
    n_small=5 n_big=3 n_large=2 n_cpu=3 n_lat=100
else
    n_small=15 n_big=7 n_large=3 n_cpu=7 n_lat=300
fi

log() { printf '== %s\n' "$*" >&2; }

# ---- inputs -------------------------------------------------------------------------
if [[ ! -f guest-examples/out/hello.wasm ]]; then
    log "building example guests"
    scripts/build-guests.sh
fi
hello_wasm="$root/guest-examples/out/hello.wasm"

big_wasm="$root/target/bench-guest/target/wasm32-wasip2/release/big.wasm"
if [[ ! -f "$big_wasm" ]]; then
    log "building big (the block of scripts/bench.sh that makes it)"
    # shellcheck disable=SC1090
    source <(sed -n '/^big_dir=/,/^fi$/p' scripts/bench.sh)
fi

cpu_dir="$root/target/bench-cpu"
cpu_wasm="$cpu_dir/target/wasm32-wasip2/release/cpu.wasm"
if [[ ! -f "$cpu_wasm" ]]; then
    log "building the CPU-bound guest"
    mkdir -p "$cpu_dir/src"
    cat > "$cpu_dir/Cargo.toml" <<'EOF'
[package]
name = "cpu"
version = "1.0.0"
edition = "2024"
publish = false

[workspace]

[profile.release]
opt-level = 3
codegen-units = 1
EOF
    cat > "$cpu_dir/src/main.rs" <<'EOF'
//! CPU-bound work for the issue 13 benchmark (no host calls while computing):
//! an integer hash over a table, a sort and a float loop; ~0.5 s with
//! Cranelift code here.
fn main() {
    let mut table: Vec<u64> = (0..1_000_000u64).collect();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for round in 0..40u64 {
        for v in table.iter_mut() {
            h = (h ^ (*v).wrapping_add(round)).wrapping_mul(0x100_0000_01b3);
            *v = h >> 7;
        }
    }
    table.sort_unstable();
    let mut x = 0.5f64;
    for i in 0..20_000_000u64 {
        x = (x * 3.7 * (1.0 - x)) + (i as f64) * 1e-12;
        if x > 1.0 {
            x -= 1.0;
        }
    }
    println!("done {} {}", table[table.len() / 2], std::hint::black_box(x));
}
EOF
    (cd "$cpu_dir" && cargo build --release --target wasm32-wasip2 --quiet)
fi

# WASI 0.2 WIT as wasmtime-wasi ships it (the same version the host offers).
wit_dir="$(cargo metadata --format-version 1 2>/dev/null | python3 -c '
import json, os, sys
d = json.load(sys.stdin)
print([os.path.dirname(p["manifest_path"]) for p in d["packages"] if p["name"] == "wasmtime-wasi"][0])
')/src/p2/wit"

py_wasm="$tp/pyapp/app.wasm"
if [[ ! -f "$py_wasm" ]]; then
    log "building a componentize-py app (PyPI componentize-py)"
    if [[ ! -x "$tp/py/bin/componentize-py" ]]; then
        python3 -m venv "$tp/py" && "$tp/py/bin/pip" install -q componentize-py || true
    fi
    if [[ -x "$tp/py/bin/componentize-py" ]]; then
        mkdir -p "$tp/pyapp"
        cat > "$tp/pyapp/app.py" <<'EOF'
import json, re
from wit_world import exports

class Run(exports.Run):
    def run(self) -> None:
        print("hello from componentize-py", json.dumps({"ok": bool(re.match("a+", "aaa"))}))
EOF
        (cd "$tp/pyapp" && "$tp/py/bin/componentize-py" -d "$wit_dir" -w wasi:cli/command@0.2.12 \
            componentize app -o app.wasm) || true
    fi
fi

js_wasm="$tp/jsapp/app.wasm"
if [[ ! -f "$js_wasm" ]]; then
    log "building a ComponentizeJS app (npm @bytecodealliance/componentize-js)"
    if [[ ! -x "$tp/js/node_modules/.bin/componentize-js" ]]; then
        mkdir -p "$tp/js"
        (cd "$tp/js" && npm init -y >/dev/null && npm install --no-audit --no-fund \
            @bytecodealliance/componentize-js) || true
    fi
    if [[ -x "$tp/js/node_modules/.bin/componentize-js" ]]; then
        mkdir -p "$tp/jsapp/wit/deps"
        cp "$wit_dir"/deps/*.wit "$tp/jsapp/wit/deps/"
        printf 'package local:app;\n\nworld app {\n  export wasi:cli/run@0.2.12;\n}\n' > "$tp/jsapp/wit/app.wit"
        cat > "$tp/jsapp/app.js" <<'EOF'
export const run = {
  run() {
    console.log("hello from ComponentizeJS " + JSON.stringify({ ok: /a+/.test("aaa") }));
  },
};
EOF
        # Without `-d http fetch-event` it imports wasi:http, which this host
        # does not offer (install says so, with this fix).
        (cd "$tp/jsapp" && "$tp/js/node_modules/.bin/componentize-js" app.js --wit wit -n app \
            -d http fetch-event -o app.wasm) || true
    fi
fi

log "building benches (release)"
# Built once and run directly: a change to the tree while the parts run
# (another build) must not rebuild in the middle of the measurements.
exe="$(cargo bench -p wasmdm --bench fast_install --no-run --message-format=json 2>/dev/null \
    | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "fast_install":
        print(m["executable"])
' | tail -1)"
[[ -x "$exe" ]] || { echo "fast_install bench did not build" >&2; exit 1; }
bench() { "$exe" "$@" --bench; }
run_part() { # name, args...
    local name="$1"; shift
    log "$name: cargo bench -q -p wasmdm --bench fast_install -- $*"
    { printf '\nCommand: `cargo bench -q -p wasmdm --bench fast_install -- %s`\n' "$*"; bench "$@"; } \
        > "$work/$name.md" || echo "(this part failed: see the script's output)" >> "$work/$name.md"
}

run_part install-hello install hello "$hello_wasm" "$n_small"
run_part install-big install big "$big_wasm" "$n_big"
if [[ -f "$py_wasm" ]]; then run_part install-python install python "$py_wasm" "$n_large"; fi
if [[ -f "$js_wasm" ]]; then run_part install-js install js "$js_wasm" "$n_large"; fi
run_part cpu cpu "$cpu_wasm" "$n_cpu"
busy="$big_wasm"
if [[ -f "$py_wasm" ]]; then busy="$py_wasm"; fi
run_part latency latency "$hello_wasm" "$busy" "$n_lat"

# ---- BENCHMARKS.md ------------------------------------------------------------------
section="$work/section.md"
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
{
    echo "<!-- fast-install:begin -->"
    echo "## Fast install of large components (issue 13)"
    echo
    echo "Made by \`scripts/bench-fast-install.sh\`$( [[ "${QUICK:-0}" == 1 ]] && echo ' (QUICK=1)') on $(date -u '+%Y-%m-%d %H:%M UTC'),"
    echo "$(nproc) cores ($cpu), shared with other work while measuring; release build, wasmtime 48.0.8."
    echo
    echo "Install = \`Runtime::install\` of a delivered, verified package into a fresh data directory"
    echo "(cold cache); \"first line\" = the same start until the guest's first stdout line arrives"
    echo "after \`activate\`. Both compilers run alternately in one loop, so the ratios come from the"
    echo "same run. \`auto\` installs Winch code, then compiles Cranelift code on one thread at idle"
    echo "priority; peak RSS is the process's VmHWM during the install (reset before it) minus its RSS"
    echo "before (the max is the first, cold install; later ones reuse heap the allocator kept, so"
    echo "their medians understate it). Activation latency: activate() until the instance runs (its"
    echo "Running event), idle and while the optimiser compiles. Components: \`hello\` and \`big\` (scripts/bench.sh); \`python\`: a componentize-py"
    echo "app (PyPI componentize-py, \`-w wasi:cli/command@0.2.12\`); \`js\`: a ComponentizeJS app"
    echo "(npm @bytecodealliance/componentize-js, \`-d http fetch-event\`). Targets: install -> first"
    echo "line ≤ 0.35x of Cranelift for the large ones; optimised CPU-bound code within 1.05x of a"
    echo "Cranelift-only install; the background compile adds ≤ 5 ms to activation p99."
    for p in install-hello install-big install-python install-js cpu latency; do
        if [[ -f "$work/$p.md" ]]; then grep -v '^FAST_RATIO ' "$work/$p.md"; echo; fi
    done
    if [[ ! -f "$work/install-python.md" ]]; then echo "(componentize-py app not built: PyPI unreachable?)"; fi
    if [[ ! -f "$work/install-js.md" ]]; then echo "(ComponentizeJS app not built: npm unreachable?)"; fi
    echo "<!-- fast-install:end -->"
} > "$section"

if [[ -f "$out_md" ]] && grep -q '^<!-- fast-install:begin -->$' "$out_md"; then
    python3 - "$out_md" "$section" <<'EOF'
import sys
md, sec = open(sys.argv[1]).read(), open(sys.argv[2]).read()
a = md.index("<!-- fast-install:begin -->")
b = md.index("<!-- fast-install:end -->") + len("<!-- fast-install:end -->\n")
open(sys.argv[1], "w").write(md[:a] + sec + md[b:])
EOF
else
    { echo; cat "$section"; } >> "$out_md"
fi
log "wrote the fast-install section of $out_md"
