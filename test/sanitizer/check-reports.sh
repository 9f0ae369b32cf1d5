#!/usr/bin/env bash
# Runs after every other test of a sanitizer build (meson.build: 'sanitizer-reports'): every
# process of the run (test programs, the CLI, brokers with the plugin, link processes) writes an
# ASan/UBSan/LSan finding to a file in DIR instead of stderr. Prints each report and fails when
# there is one; the reports are then moved to DIR/seen/ so that the next run starts clean but they
# stay for a look.
# Usage: check-reports.sh DIR
set -euo pipefail

dir=${1:?usage: check-reports.sh DIR}
mkdir -p "$dir/seen"
shopt -s nullglob
reports=("$dir"/asan.* "$dir"/ubsan.*)
if [ ${#reports[@]} -eq 0 ]; then
	echo "no sanitizer report in $dir"
	exit 0
fi
for f in "${reports[@]}"; do
	echo "==== $f"
	cat "$f"
	mv -f "$f" "$dir/seen/"
done
echo "FAIL: ${#reports[@]} sanitizer report(s); kept in $dir/seen/"
exit 1
