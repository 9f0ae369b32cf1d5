#!/usr/bin/env bash
# The broker process never loads RocksDB, OpenSSL or libmosquitto through the plugin (the broker
# binary exports the few libmosquitto functions the plugin calls); flowmq-link links all three. Both directions are checked, so that the test would see a
# build that stopped linking RocksDB anywhere.
# Usage: test-ldd.sh PATH/flowmq_bridge.so PATH/flowmq-link
set -euo pipefail

so=${1:?usage: test-ldd.sh PLUGIN.so FLOWMQ-LINK}
link=${2:?usage: test-ldd.sh PLUGIN.so FLOWMQ-LINK}

if ! command -v ldd >/dev/null 2>&1 || ! command -v readelf >/dev/null 2>&1; then
	echo "SKIP: ldd or readelf is missing"
	exit 77
fi
for f in "$so" "$link"; do
	[[ -f $f ]] || { echo "FAIL: $f does not exist"; exit 1; }
done

# The libraries FILE loads, as ldd lists them; for a program of another architecture (the arm64
# cross build, run under qemu), which ldd cannot read: the NEEDED entries of FILE and, recursively,
# of each library they name, found in the multiarch folders of FILE's architecture.
loaded_libs() {
	if ldd "$1" 2>/dev/null; then
		return 0
	fi
	local triplet todo seen="" lib dir
	case $(readelf -h "$1" | sed -n 's/^ *Machine: *//p') in
		AArch64) triplet=aarch64-linux-gnu ;;
		*X86-64*) triplet=x86_64-linux-gnu ;;
		ARM) triplet=arm-linux-gnueabihf ;;
		*) echo "cannot list the libraries of $1" >&2; return 1 ;;
	esac
	todo=$(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
	while [[ -n $todo ]]; do
		lib=${todo%%$'\n'*}
		[[ $todo == *$'\n'* ]] && todo=${todo#*$'\n'} || todo=""
		[[ " $seen " == *" $lib "* ]] && continue
		seen="$seen $lib"
		echo "$lib"
		for dir in ${LD_LIBRARY_PATH:+${LD_LIBRARY_PATH//:/ }} /usr/lib/$triplet /lib/$triplet; do
			if [[ -f $dir/$lib ]]; then
				todo=$(printf '%s\n%s' "$todo" "$(readelf -d "$dir/$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')")
				todo=${todo#$'\n'}
				break
			fi
		done
	done
}

fail=0
plugin_libs=$(loaded_libs "$so")
echo "libraries of $so:"
sed 's/^/  /' <<<"$plugin_libs"
for lib in librocksdb libssl libcrypto libmosquitto libmicrohttpd; do
	if grep -q "$lib" <<<"$plugin_libs"; then
		echo "FAIL: the plugin loads $lib into the broker process"
		fail=1
	fi
done
link_needed=$(readelf -d "$link" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
echo "NEEDED by $link: $(tr '\n' ' ' <<<"$link_needed")"
for lib in librocksdb libssl libmosquitto libmicrohttpd; do
	if ! grep -q "^$lib" <<<"$link_needed"; then
		echo "FAIL: flowmq-link does not link $lib"
		fail=1
	fi
done
# libmosquitto's calls of SSL_write() and socketpair() reach the link's own (plugin/link/tls.c:
# gathering a turn's packets into one TLS record; client.c: no wake-up socket pair) only if the
# program exports them: defined, global, default-visibility dynamic symbols. A build that hid them
# would still work, a record and a system call per packet, and only the benchmark would show it.
for sym in SSL_write socketpair; do
	if ! readelf --dyn-syms -W "$link" | awk -v s="$sym" '$8 == s && $7 != "UND" && $5 == "GLOBAL" && $6 == "DEFAULT" { found = 1 } END { exit !found }'; then
		echo "FAIL: flowmq-link does not export its $sym: libmosquitto would call the library's"
		fail=1
	fi
done
[[ $fail == 0 ]] && echo "PASS: RocksDB, OpenSSL, libmosquitto and libmicrohttpd are linked into flowmq-link only, and flowmq-link exports its SSL_write and socketpair"
exit $fail
