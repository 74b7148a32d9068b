#!/usr/bin/env bash
# Runs every cargo fuzz target of fuzz/ for a bounded time and reports, per
# target, the executions and the findings (files libFuzzer left in
# fuzz/artifacts/TARGET/). Usage: bench/fuzz/run.sh [SECONDS per target, 60]
# [TARGET...]. Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); the
# stable toolchain is used, with RUSTC_BOOTSTRAP=1 for the sanitizer flags.
set -euo pipefail
cd "$(dirname "$0")/../../fuzz"
secs="${1:-60}"
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(key duration config store_file)
export RUSTC_BOOTSTRAP=1
target_dir="${CARGO_TARGET_DIR:-../target}/fuzz"
seed_dir="$(mktemp -d)"
trap 'rm -rf "$seed_dir"' EXIT
echo "| target | seconds | executions | exec/s | corpus | findings |"
echo "|---|---:|---:|---:|---:|---:|"
for t in "${targets[@]}"; do
    features=()
    case "$t" in config | store_file) features=(--features stores) ;; esac
    corpus="corpus/$t"
    mkdir -p "$corpus"
    locksmith="${CARGO_TARGET_DIR:-../target}/release/locksmith"
    if [ "$t" = store_file ] && [ -z "$(ls -A "$corpus")" ] && [ -x "$locksmith" ]; then
        # A real store (locks, history) as the seed; sweep checkpoints it
        # into the one file.
        home="$seed_dir/home"
        mkdir -p "$home"
        LOCKSMITH_HOME="$home" "$locksmith" acquire seed/a seed/b --ttl 1h >/dev/null
        LOCKSMITH_HOME="$home" "$locksmith" acquire seed/c >/dev/null
        LOCKSMITH_HOME="$home" "$locksmith" release seed/c >/dev/null
        LOCKSMITH_HOME="$home" "$locksmith" sweep --once >/dev/null
        cp "$home/locksmith.db" "$corpus/seed.db"
    fi
    log="$seed_dir/$t.log"
    cargo fuzz run -O "${features[@]}" --target-dir "$target_dir" "$t" "$corpus" -- \
        -max_total_time="$secs" -print_final_stats=1 -timeout=10 >"$log" 2>&1 || true
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    found=$(find "artifacts/$t" -type f 2>/dev/null | wc -l)
    entries=$(find "$corpus" -type f | wc -l)
    echo "| $t | $secs | ${runs:-?} | $(( ${runs:-0} / secs )) | $entries | $found |"
    if [ "$found" -gt 0 ]; then
        grep -E "panicked|ERROR|SUMMARY" "$log" | head -5 | sed 's/^/    /'
    fi
done
