#!/usr/bin/env bash
# The plugin exports exactly Mosquitto's three entry points and nothing else (plugin.map, hidden
# visibility): every other symbol stays inside the module.
# Usage: test-symbols.sh PATH/flowmq_bridge.so
set -euo pipefail

indent() { sed 's/^/  /'; }

so=${1:?usage: test-symbols.sh PLUGIN.so}

if ! command -v nm >/dev/null 2>&1; then
	echo "SKIP: nm is missing (apt-get install binutils)"
	exit 77
fi
if [[ ! -f $so ]]; then
	echo "FAIL: $so does not exist"
	exit 1
fi

# Every defined dynamic symbol, whatever its type (T, D, B, R, W, V, A, i, ...). nm -D prints
# "ADDRESS TYPE NAME"; absolute symbols may have no address column, so take the last field.
# Versioned names print as NAME@@VERSION: keep the name, so a version node is still reported below.
all=$(nm -D --defined-only "$so")
actual=$(awk 'NF >= 2 { print $NF }' <<<"$all" | sed 's/@.*//' | LC_ALL=C sort -u)
expected=$(printf '%s\n' mosquitto_plugin_cleanup mosquitto_plugin_init mosquitto_plugin_version | LC_ALL=C sort)

echo "defined dynamic symbols of $so:"
indent <<<"$all"

if [[ $actual != "$expected" ]]; then
	echo "FAIL: expected exactly:"
	indent <<<"$expected"
	echo "unexpected:"
	comm -13 <(echo "$expected") <(echo "$actual") | indent
	echo "missing:"
	comm -23 <(echo "$expected") <(echo "$actual") | indent
	exit 1
fi

# The three must be functions (type T) in .text.
for sym in $expected; do
	if ! awk -v s="$sym" '$NF == s && $(NF - 1) == "T" { found = 1 } END { exit !found }' <<<"$all"; then
		echo "FAIL: $sym is not a defined function (type T)"
		exit 1
	fi
done
echo "PASS: exactly the three plugin entry points are exported"
