#!/usr/bin/env bash
# test/fuzz/run.sh -- build the libFuzzer targets of test/fuzz and run each
# on its seed corpus and beyond.
#
#   bash test/fuzz/run.sh                     every target, a short fixed run each
#   bash test/fuzz/run.sh identity lookup     only these targets
#   CB_FUZZ_SECONDS=300 bash test/fuzz/run.sh  each target for 5 minutes
#   CB_FUZZ_MERGE=1 bash test/fuzz/run.sh     merge what the runs found that adds
#                                             coverage into test/fuzz/corpus/
#   CB_KEEP=1                                 keep the scratch directory
#
# Targets (test/fuzz/fuzz_<target>.c says what each checks): identity,
# allocation, lookup (the pure cores in extension/), pgbouncer (the PgBouncer
# controller's parsers), pool (the C pool's parsers).
#
# Each target is built with clang -fsanitize=fuzzer,address,undefined and
# -fno-sanitize-recover=all into a scratch directory, and runs on a scratch
# copy of its corpus (test/fuzz/corpus/<target>), with its dictionary
# (test/fuzz/<target>.dict) if it has one, so the tree is not written to
# unless CB_FUZZ_MERGE=1.  The targets run one after another.  Any crash,
# leak, sanitizer report or broken invariant fails the run: the input that
# caused it is kept, and its path and the command that replays it are
# printed.  Needs no root: Debian's clang, libclang-rt-14-dev (the
# sanitizer and libFuzzer runtimes) and libpq-dev; libpq's include and
# library directories come from pg_config ($PG_CONFIG).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
all_targets="identity allocation lookup pgbouncer pool"
cc=${CB_FUZZ_CC:-clang}
pg_config=${PG_CONFIG:-pg_config}

# A short run each by default (the whole script well under a minute on two
# cores): runs per target, about five seconds of each.
declare -A default_runs=([identity]=100000 [allocation]=25000 [lookup]=60000
    [pgbouncer]=15000 [pool]=15000)

targets=${*:-$all_targets}
for t in $targets; do
    [[ " $all_targets " == *" $t "* ]] || { echo "unknown target '$t' (targets: $all_targets)" >&2; exit 2; }
done

if ! command -v "$cc" >/dev/null; then
    echo "no $cc: install Debian's clang, libclang-rt-14-dev and libfuzzer-14-dev" >&2
    exit 2
fi
pg_include=$("$pg_config" --includedir) || exit 2
pg_libdir=$("$pg_config" --libdir) || exit 2

work=${CB_FUZZ_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/connbudget-fuzz.XXXXXX")}
mkdir -p "$work/bin" "$work/corpus" "$work/crashes" "$work/logs"
failed=""
passed=0

cleanup() {
    if [ -n "$failed" ] || [ -n "${CB_KEEP:-}" ]; then
        echo "== kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# build TARGET: the target and the sources it tests.
build() {
    local t=$1 sources=() libs=()
    case $t in
        identity | allocation | lookup) sources=("$src/extension/$t.c") ;;
        pgbouncer | pool) libs=(-L"$pg_libdir" -Wl,-rpath,"$pg_libdir" -lpq -pthread) ;;
    esac
    "$cc" -g -O1 -Wall -Wextra -Werror -fsanitize=fuzzer,address,undefined \
        -fno-sanitize-recover=all -I"$pg_include" -o "$work/bin/fuzz_$t" \
        "$here/fuzz_$t.c" "${sources[@]}" "${libs[@]}" >"$work/logs/build_$t.log" 2>&1
}

# Build every target, two at a time.
echo "== building:$(printf ' %s' $targets) (in $work/bin)"
n=0
for t in $targets; do
    { build "$t"; echo $? >"$work/logs/build_$t.status"; } &
    n=$((n + 1))
    if [ $((n % 2)) -eq 0 ]; then wait; fi
done
wait
declare -A built=()
for t in $targets; do
    if [ "$(cat "$work/logs/build_$t.status")" = 0 ]; then
        built[$t]=1
    else
        cat "$work/logs/build_$t.log"
        echo "not ok: fuzz_$t does not build"
        failed="$failed $t"
    fi
done

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

for t in $targets; do
    [ -n "${built[$t]:-}" ] || continue
    corpus="$work/corpus/$t"
    mkdir -p "$corpus" "$work/crashes/$t"
    if [ -d "$here/corpus/$t" ]; then
        cp -r "$here/corpus/$t/." "$corpus/"
    fi
    flags=(-artifact_prefix="$work/crashes/$t/" -timeout=25 -rss_limit_mb=2048
        -print_final_stats=1)
    [ -f "$here/$t.dict" ] && flags+=(-dict="$here/$t.dict")
    if [ -n "${CB_FUZZ_SECONDS:-}" ]; then
        flags+=(-max_total_time="$CB_FUZZ_SECONDS")
        echo "== fuzz_$t: $CB_FUZZ_SECONDS s"
    else
        flags+=(-runs="${default_runs[$t]}")
        echo "== fuzz_$t: ${default_runs[$t]} runs"
    fi
    log="$work/logs/fuzz_$t.log"
    "$work/bin/fuzz_$t" "${flags[@]}" "$corpus" >"$log" 2>&1
    status=$?
    crash=$(find "$work/crashes/$t" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
        -o -name 'oom-*' \) | head -n 1)
    if [ $status -eq 0 ] && [ -z "$crash" ]; then
        summary=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        echo "ok: fuzz_$t: ${execs:-?} executions, ${summary:-(no summary)}"
        passed=$((passed + 1))
        if [ -n "${CB_FUZZ_MERGE:-}" ]; then
            mkdir -p "$here/corpus/$t"
            "$work/bin/fuzz_$t" -merge=1 "$here/corpus/$t" "$corpus" >"$work/logs/merge_$t.log" 2>&1 &&
                echo "   merged into test/fuzz/corpus/$t ($(find "$here/corpus/$t" -type f | wc -l) inputs)" ||
                { echo "not ok: merging fuzz_$t's corpus failed (see $work/logs/merge_$t.log)"; failed="$failed $t"; }
        fi
    else
        # what broke, then where the input is
        grep -E 'invariant broken|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|SUMMARY' \
            "$log" | head -n 5
        echo "not ok: fuzz_$t failed (exit $status); log: $log"
        if [ -n "$crash" ]; then
            echo "   the input: $crash"
            echo "   replay:    $work/bin/fuzz_$t $crash"
        fi
        failed="$failed $t"
    fi
done

nfailed=$(wc -w <<<"$failed")
echo "fuzz: $passed passed, $nfailed failed"
[ -z "$failed" ]
