#!/usr/bin/env bash
# Runs one libFuzzer target for a while (test/fuzz/meson.build, suite 'fuzz'; scripts/test --fuzz).
# Usage: run-fuzz.sh TARGET SEED_DIR DICT|'' ARTIFACT_DIR
# The seeds (in the repository) are read, never written: new inputs go to a working corpus,
# ARTIFACT_DIR/../corpus/NAME, kept between runs. FB_FUZZ_SECONDS (default 60) is the run time.
# Exit 0 when the target ran that long without a finding; else 1, with the reproducer's path in a
# line "fuzz: NAME: FINDING: reproducer PATH" (a crash, a sanitizer report, a leak, an input that
# ran over 10 s or over 2 GiB). Re-run one input: TARGET PATH.
set -euo pipefail

target=${1:?usage: run-fuzz.sh TARGET SEED_DIR DICT ARTIFACT_DIR}
seeds=${2:?}
dict=${3:-}
artifacts=${4:?}
secs=${FB_FUZZ_SECONDS:-60}
target=$(readlink -f "$target")
seeds=$(readlink -f "$seeds")
[ -z "$dict" ] || dict=$(readlink -f "$dict")
mkdir -p "$artifacts"
artifacts=$(readlink -f "$artifacts")
name=$(basename "$target")
work=$(dirname "$artifacts")/corpus/${name#fuzz-}

mkdir -p "$artifacts" "$work"
args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -error_exitcode=1 -timeout_exitcode=1
	-artifact_prefix="$artifacts/$name-" -print_final_stats=1)
if [ -n "$dict" ]; then
	args+=(-dict="$dict")
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

stamp=$(mktemp)
log=$(mktemp)
trap 'rm -f "$stamp" "$log"' EXIT
echo "fuzz: $name for ${secs}s: seeds $seeds ($(find "$seeds" -type f | wc -l) files), corpus $work"
rc=0
# A guard in case the target stops answering altogether (libFuzzer's -timeout covers one input).
timeout -k 10 $((secs + 120)) "$target" "${args[@]}" "$work" "$seeds" >"$log" 2>&1 || rc=$?
# libFuzzer's own report: the final statistics, and any finding in full.
grep -E '^(stat::|#[0-9]+[[:space:]]+DONE|INFO: seed corpus)' "$log" || true
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
echo "fuzz: $name: ${execs:-?} executions, corpus $(find "$work" -type f | wc -l) files"
if [ "$rc" -eq 0 ]; then
	echo "fuzz: $name: no finding"
	exit 0
fi
tail -n 80 "$log"
found=0
while IFS= read -r -d '' f; do
	kind=$(basename "$f")
	kind=${kind#"$name-"}
	echo "fuzz: $name: ${kind%%-*}: reproducer $f"
	found=1
done < <(find "$artifacts" -maxdepth 1 -type f -name "$name-*" -newer "$stamp" -print0)
if [ "$found" -eq 0 ]; then
	echo "fuzz: $name: FAILED (exit $rc) without a reproducer; see the output above"
fi
exit 1
