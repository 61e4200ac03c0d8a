#!/usr/bin/env bash
# Runs the runtime benchmarks (issue 2) and regenerates BENCHMARKS.md with
# every figure, the command that made it, the date and the machine; the LwM2M
# section (scripts/bench-lwm2m.sh) is carried over unchanged. Release builds
# only. Runs from any cwd.
#
#   scripts/bench.sh            full run (1000-instance memory run included)
#   QUICK=1 scripts/bench.sh    fewer iterations, 200 instances
#
# Inputs it builds when missing: the example guests (scripts/build-guests.sh);
# a 1.5-2 MiB code-heavy component (a throwaway crate generated under
# target/bench-guest: syn + regex + serde_json). With INSTALL_WASMTIME=1 it
# also cargo-installs wasmtime-cli 48.0.8 (compile-only features, ~15+ min on
# 2 cores) into target/wasmtime-cli-root; WASMTIME=/path/to/wasmtime uses
# another one. Without a CLI the install figures are compared with a bare
# Engine::precompile_component in the bench itself.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out_md="$root/BENCHMARKS.md"
work="$root/target/bench-out"
# Fresh each run: the ratios grep every part's markers.
rm -rf "$work"
mkdir -p "$work"
export WASMDM_BENCH_DIR="$root/target/bench-tmp"
rm -rf "$WASMDM_BENCH_DIR"

quick="${QUICK:-0}"
if [[ "$quick" == 1 ]]; then
    n_install_small=10 n_install_big=3 n_act=100 n_mem=200 n_atomic=500
else
    n_install_small=30 n_install_big=11 n_act=300 n_mem=1000 n_atomic=2000
fi

log() { printf '== %s\n' "$*" >&2; }

# ---- inputs ----------------------------------------------------------------------
if [[ ! -f guest-examples/out/hello.wasm || ! -f guest-examples/out/counter.wasm ]]; then
    log "building example guests"
    scripts/build-guests.sh
fi
hello_wasm="$root/guest-examples/out/hello.wasm"

big_dir="$root/target/bench-guest"
big_wasm="$big_dir/target/wasm32-wasip2/release/big.wasm"
if [[ ! -f "$big_wasm" ]]; then
    log "building the 1.5-2 MiB benchmark component"
    mkdir -p "$big_dir/src"
    cat > "$big_dir/Cargo.toml" <<'EOF'
[package]
name = "big"
version = "1.0.0"
edition = "2024"
publish = false

[workspace]

[dependencies]
syn = { version = "2", features = ["full", "parsing", "printing", "extra-traits", "visit"] }
regex = "1"
serde_json = "1"

[profile.release]
opt-level = 3
strip = true
codegen-units = 1
panic = "abort"
EOF
    cat > "$big_dir/src/main.rs" <<'EOF'
//! A code-heavy wasi:cli/command used only to benchmark install (precompile)
//! of a 1.5-2 MiB component: syn (full, Debug impls), regex and serde_json.
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let src = args.first().cloned().unwrap_or_else(|| "fn f() {}".into());
    match syn::parse_file(&src) {
        Ok(f) => println!("{f:#?}"),
        Err(e) => println!("parse error: {e}"),
    }
    if let Some(p) = args.get(1) {
        match regex::Regex::new(p) {
            Ok(re) => println!("{}", re.is_match(&src)),
            Err(e) => println!("regex error: {e}"),
        }
    }
    let v: serde_json::Value = serde_json::from_str(args.get(2).map(String::as_str).unwrap_or("null")).unwrap_or_default();
    println!("{v}");
}
EOF
    (cd "$big_dir" && cargo build --release --target wasm32-wasip2 --quiet)
fi

wasmtime_bin="${WASMTIME:-$root/target/wasmtime-cli-root/bin/wasmtime}"
if [[ ! -x "$wasmtime_bin" && "${INSTALL_WASMTIME:-0}" == 1 ]]; then
    log "installing wasmtime-cli 48.0.8 (compile-only features; slow)"
    CARGO_TARGET_DIR="$root/target/wasmtime-cli" cargo install wasmtime-cli --version 48.0.8 --locked \
        --no-default-features \
        --features compile,cranelift,component-model,parallel-compilation,pooling-allocator,demangle,addr2line \
        --root "$root/target/wasmtime-cli-root" || true
fi

# `wasmtime compile` runs inside the install loop (host/benches/runtime.rs).
if [[ -x "$wasmtime_bin" ]]; then export WASMDM_BENCH_WASMTIME="$wasmtime_bin"; fi

log "building benches (release)"
cargo bench -p wasmdm --bench runtime --no-run --quiet

bench() { cargo bench -q -p wasmdm --bench runtime -- "$@"; }

# ---- runs --------------------------------------------------------------------------
run_part() { # name, command...
    local name="$1"; shift
    local shown="$*"
    case "$1" in
        bench) shown="cargo bench -q -p wasmdm --bench runtime -- ${*:2}" ;;
        *) shown="scripts/bench.sh function $*" ;;
    esac
    log "$name: $shown"
    { printf '\nCommand: `%s`\n' "$shown"; "$@"; } > "$work/$name.md"
}

run_part install-hello bench install hello "$hello_wasm" "$n_install_small"
run_part install-big bench install big "$big_wasm" "$n_install_big"

run_part activation bench activation "$n_act"
run_part atomic bench atomic "$n_atomic"
run_part memory bench memory "$n_mem"

# ---- BENCHMARKS.md -----------------------------------------------------------------
ratio1() { # stat (P50 or MIN), label, reference (CLI, CLI_EPOCH, BARE or SHAPED)
    local i c
    i=$(grep -h "^INSTALL_$1_MS $2 " "$work"/install-*.md | awk '{print $3}')
    c=$(grep -h "^$3_$1_MS $2 " "$work"/*.md | awk '{print $3}' || true)
    if [[ -n "$i" && -n "$c" ]]; then
        awk -v i="$i" -v c="$c" 'BEGIN { printf "%.2f", i / c }'
    else
        printf 'n/a'
    fi
}
ratio() { # label, reference: "p50 ratio (min ratio)"
    printf '%s (%s)' "$(ratio1 P50 "$1" "$2")" "$(ratio1 MIN "$1" "$2")"
}
strip_markers() { grep -v -E '^(INSTALL|CLI|CLI_EPOCH|BARE|SHAPED)_(P50|MIN)_MS ' "$@"; }
# Every other section is made by its own script (scripts/bench-lwm2m.sh, fuzz.sh,
# bench-fast-install.sh, tests/bench/*.py, ...) between `<!-- NAME:begin -->` and
# `<!-- NAME:end -->` markers: each is carried over as it is, in its order.
carried="$work/carried-sections.md"
: > "$carried"
if [[ -f "$out_md" ]]; then
    awk '
        name == "" && match($0, /^<!-- [a-z0-9-]+:begin -->$/) {
            name = substr($0, 6, length($0) - 15)
        }
        name != "" { print }
        name != "" && $0 == "<!-- " name ":end -->" { name = ""; print "" }
    ' "$out_md" > "$carried"
fi

cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
mem="$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
{
    echo "# wasmdm benchmarks"
    echo
    echo "Generated by \`scripts/bench.sh\`$( [[ "$quick" == 1 ]] && echo ' (QUICK=1)') on $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo "Machine: $(nproc) cores ($cpu), $mem RAM, $(uname -sr), shared with other work while measuring."
    echo "Build: release profile (\`cargo bench\` uses it), rustc $(rustc --version | cut -d' ' -f2), wasmtime 48.0.8."
    echo "Scratch data directories live under target/bench-tmp (same disk as the repository)."
    echo
    echo "## Issue 2: runtime"
    echo
    echo "### Install vs \`wasmtime compile\`"
    echo
    echo "Install = \`Runtime::install\` (pinned to Cranelift, \`compiler = \"cranelift\"\`; Winch installs are"
    echo "in the issue 13 section) of a delivered, verified package into a fresh data"
    echo "directory (cold precompile cache): hard links to the delivered files, validation,"
    echo "precompile, atomic write of the .cwasm, load, world check, durable package record."
    echo "The big component is \`target/bench-guest\` (generated by this script: syn full +"
    echo "regex + serde_json, opt-level 3, stripped)."
    echo
    echo "| component | install / \`wasmtime compile\` | install / \`wasmtime compile -W epoch-interruption=y\` | install / bare precompile, default Config | install / bare precompile, runtime's Config | target |"
    echo "|---|---|---|---|---|---|"
    echo "| hello | $(ratio hello CLI) | $(ratio hello CLI_EPOCH) | $(ratio hello BARE) | $(ratio hello SHAPED) | ≤ 1.1 |"
    echo "| big (1.5-2 MiB) | $(ratio big CLI) | $(ratio big CLI_EPOCH) | $(ratio big BARE) | $(ratio big SHAPED) | ≤ 1.1 |"
    echo
    echo "\`wasmtime compile\` is the wasmtime-cli crate of the same version (48.0.8), run as a"
    echo "process on the same file (process start, read, compile, write of the .cwasm), in the"
    echo "same loop as the install and the bare precompiles, so load hits all of them alike. The"
    echo "runtime compiles with wasmtime's defaults (4 GiB memory reservation, 32 MiB guard,"
    echo "so no explicit bounds checks) plus epoch interruption, which its CPU bound and"
    echo "forced stop need; the second column is the CLI with that same setting. The last"
    echo "two columns compare with a bare in-process \`Engine::precompile_component\`"
    echo "(no process start, no file I/O) under the default and the runtime's Config."
    echo "The epoch checks (a load and compare at every function entry and loop header)"
    echo "are what separates the first column from the second: the bare precompile rows"
    echo "below show their compile cost. Turning off native unwind info or the address"
    echo "map was measured too and gained nothing measurable, so the runtime keeps them."
    echo "Each cell: ratio of the p50s (ratio of the minimums, the steadier figure when the"
    echo "machine is shared)."
    for p in install-hello install-big; do strip_markers "$work/$p.md"; echo; done
    echo "### Activation and deactivation"
    echo
    echo "Targets: in-memory part p50 < 200 µs; whole activate call incl. durable write p50 < 2 ms;"
    echo "deactivation of a cooperative guest < 10 ms. Timestamps come from a tracing layer"
    echo "that sees the component log lines (\"started\" from the supervisor, then the guest's"
    echo "first stdout line) as they are recorded."
    cat "$work/activation.md"
    echo
    echo "### Atomic durable write"
    cat "$work/atomic.md"
    echo
    echo "### Memory"
    echo
    echo "Target: added RSS per active idle \`counter\` < 256 KiB; 1000 counters at once."
    cat "$work/memory.md"
    echo
    # The sections other scripts made, kept as they are.
    cat "$carried"
} > "$out_md.tmp"
mv "$out_md.tmp" "$out_md"
log "wrote $out_md"
