#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers that meet hostile input (fuzz/fuzz_targets/): the
# CoAP message layer, TLV, SenML JSON/CBOR, link format, Execute arguments, the manifest and
# the package archive reader.
#
# Builds the libFuzzer targets with the instrumentation cargo-fuzz uses (SanitizerCoverage
# through -Cpasses=sancov-module, all stable rustc flags), so it needs neither nightly nor
# cargo-fuzz: only the stable toolchain and a C++ compiler for libFuzzer (libfuzzer-sys builds
# it). No AddressSanitizer: it needs nightly's -Zsanitizer, and the code under test has no
# `unsafe`. Then runs each target for SECONDS, new inputs going to fuzz/work/<target>/ (the
# committed seeds in fuzz/corpus/<target>/ are only read) and any crash to
# fuzz/artifacts/<target>/.
#
# Usage: scripts/fuzz.sh [seconds-per-target (default 60)] [target...]
# Exits non-zero when a target found a crash, a leak, a timeout or an out-of-memory input.
# With RECORD=1, the figures replace the fuzzing section of BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

secs="${1:-60}"
shift || true
all=(coap_msg tlv senml_json senml_cbor link_format execargs manifest archive)
targets=("${@:-${all[@]}}")

triple="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target}"
# --target keeps these flags off build scripts and proc macros, as cargo-fuzz does.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cllvm-args=-sanitizer-coverage-stack-depth"
cargo build --release --locked --target "$triple" --bins

mkdir -p logs
failed=()
rows=()
printf '%-12s %12s %8s %8s %8s  %s\n' target executions exec/s cov ft result
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "artifacts/$t"
    rc=0
    "$CARGO_TARGET_DIR/$triple/release/$t" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="artifacts/$t/" "work/$t" "corpus/$t" >"logs/$t.log" 2>&1 || rc=$?
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "logs/$t.log" | tail -1)"
    speed="$(sed -n 's/^stat::average_exec_per_sec: *//p' "logs/$t.log" | tail -1)"
    last="$(grep -E '^#[0-9]+' "logs/$t.log" | tail -1)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
    result=ok
    if [ "$rc" -ne 0 ]; then
        result="FAILED (rc $rc, see fuzz/logs/$t.log and fuzz/artifacts/$t/)"
        failed+=("$t")
    fi
    printf '%-12s %12s %8s %8s %8s  %s\n' "$t" "${runs:-?}" "${speed:-?}" "${cov:-?}" "${ft:-?}" "$result"
    crashes="$(find "artifacts/$t" -type f | wc -l)"
    seeds="$(find "corpus/$t" -type f | wc -l)"
    kept="$(find "work/$t" -type f | wc -l)"
    rows+=("| \`$t\` | ${runs:-?} | ${speed:-?} | ${cov:-?} | ${ft:-?} | $seeds + $kept | $crashes |")
done

if [ "${RECORD:-0}" = 1 ]; then
    section="$(mktemp)"
    {
        echo '<!-- fuzz:begin -->'
        echo '## Fuzzing (hardening issue)'
        echo
        echo "Made by \`RECORD=1 scripts/fuzz.sh $secs\` on $(date -u '+%Y-%m-%d %H:%M UTC'): $secs s per target, one"
        echo "process each, on $(nproc) cores shared with other work; rustc $(rustc --version | cut -d' ' -f2),"
        echo "libFuzzer from libfuzzer-sys $(sed -n '/^name = "libfuzzer-sys"/{n;s/version = "\(.*\)"/\1/p}' Cargo.lock),"
        echo 'SanitizerCoverage (inline 8-bit counters, pc table, compare tracing, stack depth),'
        echo 'release profile with debug assertions and overflow checks, no ASan. `cov` is the'
        echo 'number of covered code edges, `ft` libFuzzer'"'"'s features (edges with hit-count'
        echo 'buckets, compares), both at the end of the run; corpus is committed seeds + inputs'
        echo 'kept in `fuzz/work/` by this and earlier runs; crashes counts files in'
        echo '`fuzz/artifacts/<target>/`. Inputs that failed in earlier runs are fixed and kept'
        echo 'as `fuzz/corpus/<target>/regress-*` (see `git log -- fuzz/corpus`).'
        echo
        echo '| target | executions | exec/s | cov | ft | corpus | crashes |'
        echo '|---|---|---|---|---|---|---|'
        printf '%s\n' "${rows[@]}"
        echo
        echo '<!-- fuzz:end -->'
    } > "$section"
    md=../BENCHMARKS.md
    if grep -q '^<!-- fuzz:begin -->$' "$md"; then
        awk -v f="$section" '
            /^<!-- fuzz:begin -->$/ { while ((getline l < f) > 0) print l; skip = 1; next }
            /^<!-- fuzz:end -->$/ { skip = 0; next }
            !skip { print }' "$md" > "$md.tmp"
        mv "$md.tmp" "$md"
    else
        { echo; cat "$section"; } >> "$md"
    fi
    rm -f "$section"
    echo "recorded in BENCHMARKS.md"
fi
if [ "${#failed[@]}" -ne 0 ]; then
    echo "crashes in: ${failed[*]}" >&2
    exit 1
fi
