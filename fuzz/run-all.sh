#!/usr/bin/env bash
# Runs every cargo-fuzz target for the given number of seconds each (default 120) and prints
# one summary line per target: executions, time, and whether it found a crash.
#
#   fuzz/run-all.sh          # 2 minutes per target
#   fuzz/run-all.sh 600      # the long form: 10 minutes per target
#   FUZZ_TARGETS="cookies return_to" fuzz/run-all.sh 60
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Corpora grow in
# fuzz/corpus/<target> (seeded from fuzz/seeds/<target> when present); crashing inputs land in
# fuzz/artifacts/<target>/ — reproduce one with `cargo +nightly fuzz run <target> <file>`, then
# keep it as a regression unit test beside the code it broke. Logs: fuzz/logs/<target>.log.
set -euo pipefail

seconds="${1:-120}"
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/.."

mkdir -p "$here/logs"
targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
echo "building the fuzz targets (log: fuzz/logs/build.log)..."
if ! cargo +nightly fuzz build >"$here/logs/build.log" 2>&1; then
    tail -20 "$here/logs/build.log"
    exit 2
fi
failed=0
for target in $targets; do
    corpus="$here/corpus/$target"
    mkdir -p "$corpus"
    seeds=()
    [ -d "$here/seeds/$target" ] && seeds=("$here/seeds/$target")
    log="$here/logs/$target.log"
    if cargo +nightly fuzz run "$target" "$corpus" ${seeds[@]+"${seeds[@]}"} -- \
        -max_total_time="$seconds" -print_final_stats=1 \
        >"$log" 2>&1; then
        status="ok"
    else
        status="CRASH (see $log and fuzz/artifacts/$target/)"
        failed=1
    fi
    runs="$(awk '/stat::number_of_executed_units:/ { n += $2; found = 1 } END { if (found) print n }' "$log")"
    cov="$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+' || true)"
    printf '%-16s %8ss  %12s execs  cov %6s  %s\n' "$target" "$seconds" "${runs:-?}" "${cov:-?}" "$status"
done
exit "$failed"
