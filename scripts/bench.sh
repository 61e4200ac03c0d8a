#!/usr/bin/env bash
# Runs the wasmdm benchmarks (issue 2 runtime figures; issue 3 Block1 push when
# libcoap, node and the release binary are at hand) and regenerates
# BENCHMARKS.md with every figure, the command that made it, the date and the
# machine. Release builds only. Runs from any cwd.
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
mkdir -p "$work"
export WASMDM_BENCH_DIR="$root/target/bench-tmp"
rm -rf "$WASMDM_BENCH_DIR"

quick="${QUICK:-0}"
if [[ "$quick" == 1 ]]; then
    n_install_small=10 n_install_big=3 n_act=100 n_mem=200 n_atomic=500 n_cli=5 n_cli_big=3
else
    n_install_small=20 n_install_big=5 n_act=300 n_mem=1000 n_atomic=2000 n_cli=20 n_cli_big=5
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

log "building benches (release)"
cargo bench -p wasmdm --bench runtime --no-run --quiet
cargo build --release -p wasmdm --bin wasmdm --quiet

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

# `wasmtime compile` of the same files: process start, read, compile, write.
cli_compile() { # label, wasm, n
    local label="$1" wasm="$2" n="$3"
    if [[ ! -x "$wasmtime_bin" ]]; then
        echo "wasmtime-cli not available: no CLI figure for $label"
        return
    fi
    python3 - "$wasmtime_bin" "$wasm" "$n" "$label" "$work" <<'EOF'
import subprocess, sys, time, statistics
exe, wasm, n, label, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
ver = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()
ts = []
for _ in range(n):
    t = time.perf_counter()
    subprocess.run([exe, "compile", wasm, "-o", f"{work}/{label}.cwasm"], check=True)
    ts.append(time.perf_counter() - t)
ts.sort()
p50 = ts[(len(ts) + 1) // 2 - 1]
print(f"\n`{ver}` — `wasmtime compile {label}.wasm -o {label}.cwasm`: n={n}, "
      f"p50 **{p50*1e3:.1f} ms**, min {ts[0]*1e3:.1f} ms, max {ts[-1]*1e3:.1f} ms")
print(f"CLI_P50_MS {label} {p50*1e3:.3f}")
EOF
}
run_part cli-hello cli_compile hello "$hello_wasm" "$n_cli"
run_part cli-big cli_compile big "$big_wasm" "$n_cli_big"

run_part activation bench activation "$n_act"
run_part atomic bench atomic "$n_atomic"
run_part memory bench memory "$n_mem"

# ---- Block1 push (issue 3) ---------------------------------------------------------
# A fresh `wasmdm device` (release binary) registered with lwm2m-node-lib
# (tests/peers/lwm2m-server.js) per transfer; libcoap's coap-client-notls PUTs
# the file to /9/0/2 in 1024-byte blocks (content-format 42). The baseline is
# the same client PUTting the same file to libcoap's coap-server-notls.
free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
block1() {
    local n="$1" blk="$work/block1" mib
    mkdir -p "$blk"
    echo
    echo "| transfer (1024-byte blocks, loopback) | wasmdm device | libcoap server | ratio |"
    echo "|---|---|---|---|"
    for mib in 1 10; do
        local file="$blk/body-$mib.bin"
        head -c $((mib << 20)) /dev/urandom > "$file"
        local dev_ts=() lib_ts=() i
        for ((i = 0; i < n; i++)); do
            local sport dport data t0 srv_pid dev_pid lport lib_pid line reg=0
            sport=$(free_port); dport=$(free_port)
            data="$blk/dev-$mib-$i"; rm -rf "$data"
            coproc SRV { exec node tests/peers/lwm2m-server.js "$sport" 2>/dev/null; }
            srv_pid=$SRV_PID
            target/release/wasmdm device --server "coap://127.0.0.1:$sport" --endpoint "bench$i" \
                --bind "127.0.0.1:$dport" --data-dir "$data" > "$blk/device.log" 2>&1 &
            dev_pid=$!
            while IFS= read -r -t 30 line <&"${SRV[0]}"; do
                if [[ "$line" == *'"registration"'* ]]; then reg=1; break; fi
            done
            if [[ $reg != 1 ]]; then
                echo "device did not register (see $blk/device.log)" >&2
                kill "$dev_pid" "$srv_pid" 2>/dev/null || true
                return 1
            fi
            t0=$(date +%s%N)
            coap-client-notls -m put -b 1024 -t 42 -B 120 -f "$file" \
                "coap://127.0.0.1:$dport/9/0/2" > "$blk/put.out" 2>&1 || true
            dev_ts+=("$(ms_since "$t0")")
            kill "$dev_pid" "$srv_pid" 2>/dev/null || true
            wait "$dev_pid" 2>/dev/null || true
            wait "$srv_pid" 2>/dev/null || true
            # libcoap client -> libcoap server, same file
            lport=$(free_port)
            coap-server-notls -A 127.0.0.1 -p "$lport" -d 10 > /dev/null 2>&1 &
            lib_pid=$!
            sleep 0.3
            t0=$(date +%s%N)
            coap-client-notls -m put -b 1024 -t 42 -B 120 -f "$file" \
                "coap://127.0.0.1:$lport/bench" > /dev/null 2>&1 || true
            lib_ts+=("$(ms_since "$t0")")
            kill "$lib_pid" 2>/dev/null || true
            wait "$lib_pid" 2>/dev/null || true
        done
        python3 -c '
import sys
mib = int(sys.argv[1])
d = sorted(int(x) for x in sys.argv[2].split())
l = sorted(int(x) for x in sys.argv[3].split())
med = lambda v: v[(len(v) + 1) // 2 - 1]
dm, lm = med(d), med(l)
thr = lambda ms: f"{mib / (ms / 1000):.1f} MiB/s" if ms else "n/a"
print(f"| PUT {mib} MiB, p50 of {len(d)} (min-max) | {dm} ms ({d[0]}-{d[-1]}), {thr(dm)} "
      f"| {lm} ms ({l[0]}-{l[-1]}), {thr(lm)} | {dm / max(lm, 1):.2f} |")
' "$mib" "${dev_ts[*]}" "${lib_ts[*]}"
    done
    echo
    echo "The body is random bytes, so after the last block the device verifies it and"
    echo "reports Unsupported package type; its last Update Result log line was:"
    echo "\`$(sed 's/\x1b\[[0-9;]*m//g' "$blk/device.log" | grep 'update result' | tail -1 | cut -c1-160)\`"
}
block1_md=""
if command -v coap-client-notls > /dev/null && command -v node > /dev/null \
    && [[ -d tests/peers/node_modules ]]; then
    run_part block1 block1 "${N_BLOCK1:-3}"
    block1_md="$work/block1.md"
fi

# ---- BENCHMARKS.md -----------------------------------------------------------------
ratio() { # label, marker of the reference (CLI_P50_MS or BARE_P50_MS)
    local i c
    i=$(grep -h "^INSTALL_P50_MS $1 " "$work"/install-*.md | awk '{print $3}')
    c=$(grep -h "^$2 $1 " "$work"/*.md | awk '{print $3}' || true)
    if [[ -n "$i" && -n "$c" ]]; then
        awk -v i="$i" -v c="$c" 'BEGIN { printf "%.2f", i / c }'
    else
        printf 'n/a'
    fi
}
strip_markers() { grep -v -e '^INSTALL_P50_MS' -e '^CLI_P50_MS' -e '^BARE_P50_MS' -e '^SHAPED_P50_MS' "$@"; }

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
    echo "Install = \`Runtime::install\` of a delivered, verified package into a fresh data"
    echo "directory (cold precompile cache): copy + fsync of the package files, validation,"
    echo "precompile, atomic write of the .cwasm, load, world check, durable package record."
    echo "The big component is \`target/bench-guest\` (generated by this script: syn full +"
    echo "regex + serde_json, opt-level 3, stripped)."
    echo
    echo "| component | install / \`wasmtime compile\` CLI | install / bare precompile, default Config | install / bare precompile, runtime's Config | target |"
    echo "|---|---|---|---|---|"
    echo "| hello | $(ratio hello CLI_P50_MS) | $(ratio hello BARE_P50_MS) | $(ratio hello SHAPED_P50_MS) | ≤ 1.1 |"
    echo "| big (1.5-2 MiB) | $(ratio big CLI_P50_MS) | $(ratio big BARE_P50_MS) | $(ratio big SHAPED_P50_MS) | ≤ 1.1 |"
    echo
    echo "The third column compares with a bare precompile under the runtime's own code-shaping"
    echo "settings (host/src/runtime/engine.rs: epoch interruption, 256 MiB memory reservation"
    echo "with a 64 KiB guard, so Cranelift emits explicit bounds checks): most of the gap to"
    echo "the default Config is that codegen, the rest is the install's I/O (copy + fsync,"
    echo "atomic .cwasm write, load, record). A \`wasmtime compile\` CLI figure needs"
    echo "INSTALL_WASMTIME=1 or WASMTIME=/path (not built in this run: too slow to build"
    echo "next to other work on 2 cores); \`wasmtime compile\` uses the default Config, so"
    echo "the second column is its in-process equivalent without process start and file I/O."
    for p in install-hello cli-hello install-big cli-big; do strip_markers "$work/$p.md"; echo; done
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
    if [[ -n "$block1_md" ]]; then
        echo "## Issue 3: Block1 push"
        cat "$block1_md"
    else
        echo "## Issue 3: Block1 push"
        echo
        echo "Not measured by this script yet (see the report in the commit history)."
    fi
} > "$out_md"
log "wrote $out_md"
