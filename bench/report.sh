# Sourced by scripts/bench once every scenario has run: turns $raw (scenario, system, repetition,
# metric, value; one line per measurement) into $out (BENCHMARKS.md) and the charts and raw data
# in $results.

# stat SCENARIO SYSTEM METRIC: "median min max" over the repetitions (nothing if never measured).
stat() {
	awk -F'\t' -v s="$1" -v y="$2" -v k="$3" '$1 == s && $2 == y && $4 == k && $5 != "" { print $5 }' "$raw" \
		| sort -g | awk '{ v[NR] = $1 } END { if(NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[1], v[NR] }'
}
# ratio SCENARIO METRIC SYSTEM_A SYSTEM_B: A/B within each repetition, then "median min max".
ratio() {
	awk -F'\t' -v s="$1" -v k="$2" -v a="$3" -v b="$4" '$1 == s && $4 == k && $5 != "" {
			if($2 == a) A[$3] = $5; if($2 == b) B[$3] = $5 }
		END { for(r in A) if((r in B) && B[r] > 0) print A[r] / B[r] }' "$raw" \
		| sort -g | awk '{ v[NR] = $1 } END { if(NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2), v[1], v[NR] }'
}
# Formatting of "median min max" as "median (min–max)" with $2 decimals.
fmt3() { [ -n "$1" ] && awk -v d="$2" '{ printf "%.*f (%.*f–%.*f)", d, $1, d, $2, d, $3 }' <<<"$1" || echo "–"; }
fstat() { fmt3 "$(stat "$1" "$2" "$3")" "${4:-0}"; }
fratio() { fmt3 "$(ratio "$@")" 3; }
med() { cut -d' ' -f1 <<<"$1"; }
# verdict "median min max" OP TARGET: whether the median meets the target.
verdict() {
	[ -z "$1" ] && { echo "not run"; return; }
	awk -v m="$(med "$1")" -v op="$2" -v t="$3" 'BEGIN { ok = op == ">=" ? m >= t : m <= t; print ok ? "**met**" : "**missed**" }'
}
systems() { awk -F'\t' -v s="$1" '$1 == s && !seen[$2]++ { print $2 }' "$raw"; }
metrics() { awk -F'\t' -v s="$1" '$1 == s && !seen[$4]++ { print $4 }' "$raw"; }
has() { grep -q "^$1	" "$raw"; }

# A table of every metric of a scenario: one row per metric, one column per system.
detail_table() {
	local s=$1 y k line
	mapfile -t sys < <(systems "$s")
	line="| metric |"; for y in "${sys[@]}"; do line+=" $y |"; done; echo "$line"
	line="|---|"; for y in "${sys[@]}"; do line+="---|"; done; echo "$line"
	while read -r k; do
		line="| $k |"
		for y in "${sys[@]}"; do
			case $k in *_vs_*|*_segs_per_msg) line+=" $(fstat "$s" "$y" "$k" 3) |" ;;
				*_ms|*_s|rss*|pss*|spool*|delivered_pct) line+=" $(fstat "$s" "$y" "$k" 2) |" ;;
				*) line+=" $(fstat "$s" "$y" "$k" 0) |" ;; esac
		done
		echo "$line"
	done < <(metrics "$s")
}

cp "$raw" "$results/raw.tsv"

# ------------------------------------------------------------------ charts
r_s1=$(ratio s1 rate plugin native)
r_s3u=$(ratio s3 rate plugin-unmatched vanilla)
r_s3m=$(ratio s3 rate plugin-matched vanilla)
r_s3s=$(ratio s3 rate plugin-spooled vanilla)
r_s2=$(ratio s2 drain_rate plugin native)
r_s8=$(ratio s8 drain_rate plugin native)
r_s11=$(ratio s11 drain_rate plugin native)
r_s8l=$(stat s8 plugin local_drain_vs_idle)
{
	if [ -n "$r_s1" ]; then echo "\"1. online QoS 1\\nthroughput\\nvs native\" $r_s1 1.0"; fi
	if [ -n "$r_s2" ]; then echo "\"2. backlog\\ndrain rate\\nvs native\" $r_s2 NaN"; fi
	if [ -n "$r_s3u" ]; then echo "\"3. local,\\nunmatched\\nvs vanilla\" $r_s3u 0.97"; fi
	if [ -n "$r_s3s" ]; then echo "\"3. local, matched,\\nspooled\\nvs vanilla\" $r_s3s 0.85"; fi
	if [ -n "$r_s3m" ]; then echo "\"3. local, matched,\\nforwarded\\nvs vanilla\" $r_s3m 0.85"; fi
	if [ -n "$r_s11" ]; then echo "\"11. backlog drain,\\na cloud that\\nkeeps up\" $r_s11 1.2"; fi
	if [ -n "$r_s8" ]; then echo "\"8. drain rate\\nwhile publishing\\nvs native\" $r_s8 NaN"; fi
	if [ -n "$r_s8l" ]; then echo "\"8. local while\\ndraining vs\\nwaiting\" $r_s8l 0.9"; fi
} >"$work/ratios.dat"
lat_row() { # lat_row LABEL SCENARIO METRIC
	local p n
	p=$(stat "$2" plugin "$3") n=$(stat "$2" native "$3")
	if [ -n "$p" ] && [ -n "$n" ]; then echo "\"$1\" $p $n"; fi
}
{
	lat_row "4. edge→cloud p50" s4 p50_ms
	lat_row "4. edge→cloud p99" s4 p99_ms
	lat_row "5. cloud→edge p50" s5 p50_ms
	lat_row "5. cloud→edge p99" s5 p99_ms
} >"$work/latency.dat"
charts=()
if [ -s "$work/ratios.dat" ]; then
	gnuplot <<EOF
set terminal pngcairo size 1100,520 font "sans,10"
set output "$results/ratios.png"
set title "flowmq-bridge plugin relative to the reference (median of $reps repetitions, bars: min–max)"
set style fill solid 0.5 border -1
set boxwidth 0.55
set bmargin 5
set xrange [-0.5:$(($(wc -l <"$work/ratios.dat") - 1)).5]
set yrange [0:$(awk '{ m = $(NF - 1) > m ? $(NF - 1) : m; if($NF != "NaN" && $NF > m) m = $NF } END { print m * 1.15 }' "$work/ratios.dat")]
set grid ytics
set key top center horizontal
set ylabel "plugin / reference (higher is better)"
plot "$work/ratios.dat" using 0:2:xtic(1) with boxes lc rgb "#4a7ebb" title "ratio", \
	"" using 0:2:3:4 with yerrorbars lc rgb "black" pt 0 title "min–max", \
	"" using 0:5 with points pt 9 ps 2 lc rgb "#c0392b" title "target", \
	1 with lines dt 2 lc rgb "gray" notitle
EOF
	charts+=("bench/results/ratios.png")
fi
if [ -s "$work/latency.dat" ]; then
	gnuplot <<EOF
set terminal pngcairo size 960,480 font "sans,10"
set output "$results/latency.png"
set title "Latency, ms (median of $reps repetitions, bars: min–max)"
set style data histograms
set style histogram errorbars gap 1 lw 1
set style fill solid 0.5 border -1
set bmargin 3
set yrange [0:*]
set grid ytics
set ylabel "ms (lower is better)"
plot "$work/latency.dat" using 2:3:4:xtic(1) lc rgb "#4a7ebb" title "plugin", \
	"" using 5:6:7 lc rgb "#e67e22" title "native bridge"
EOF
	charts+=("bench/results/latency.png")
fi

# s9: bytes on the wire per published telemetry message, per system (log scale: the aggregate is
# far below the rest).
if has s9; then
	for y in native plain aliases deadband aggregate; do
		v=$(stat s9 "$y" bytes_per_published_msg)
		[ -n "$v" ] && echo "\"$y\" $v"
	done >"$work/telemetry.dat"
	gnuplot <<EOF
set terminal pngcairo size 900,480 font "sans,10"
set output "$results/telemetry.png"
set title "9. Telemetry, 200 topics x 10 msg/s: bytes the edge sends per published message\n(at the cloud side of the TCP connection, TLS included; median of $reps, bars: min–max)"
set style fill solid 0.5 border -1
set boxwidth 0.55
set logscale y
set yrange [0.1:*]
set grid ytics
set ylabel "bytes per published message (log scale, lower is better)"
set xrange [-0.5:$(($(wc -l <"$work/telemetry.dat") - 1)).5]
plot "$work/telemetry.dat" using 0:2:xtic(1) with boxes lc rgb "#4a7ebb" notitle, \
	"" using 0:2:3:4 with yerrorbars lc rgb "black" pt 0 notitle, \
	"" using 0:2:(sprintf("%.1f", \$2)) with labels offset 0,1 notitle
EOF
	charts+=("bench/results/telemetry.png")
fi

# ------------------------------------------------------------------ the report
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
mosq_version=$( (mosquitto -h 2>/dev/null || true) | sed -n 's/^mosquitto version \([^ ]*\).*/\1/p' | head -1)
# pkg NAME: the version of the machine's own architecture (the arm64 build installs :arm64 copies).
pkg() { dpkg-query -W -f='${Version}' "$1:$(dpkg --print-architecture)" 2>/dev/null || echo "?"; }
row() { # row SCENARIO METRIC PLUGIN REFERENCE RATIO TARGET VERDICT
	local a line="|"
	for a; do line+=" $a |"; done
	echo "$line"
}

{
	cat <<EOF
# Benchmarks: flowmq-bridge vs Mosquitto's built-in bridge

Generated by \`scripts/bench$( [ "$mode" = quick ] && echo " --quick")\` on $started ($mode run: $reps repetitions
of every scenario, $elapsed s of measurement after installing and building). Commit $commit$( [ "$dirty" -gt 0 ] && echo " with $dirty uncommitted changes in the work tree").
Every number is the **median over the repetitions, with the spread (min–max) in brackets**. Ratios are
computed within each repetition (the systems run one after the other inside a repetition, so both
see the same machine state) and then summarised the same way. On a shared 2-core machine absolute
numbers move from run to run; the ratios are the result.

## Summary

| scenario | metric | plugin | reference | ratio plugin/reference | target | |
|---|---|---|---|---|---|---|
EOF
	if has s1; then
		row "1. online, QoS 1, 100 B, edge → cloud" "msg/s at the cloud subscriber" "$(fstat s1 plugin rate)" \
			"native: $(fstat s1 native rate)" "$(fratio s1 rate plugin native)" "≥ 1.3" "$(verdict "$r_s1" ">=" 1.3)"
	fi
	if has s2; then
		row "2. outage backlog, $n_backlog msgs" "delivered %" "$(fstat s2 plugin delivered_pct 1)" \
			"native defaults: $(fstat s2 native-default delivered_pct 1); max_queued_messages 0: $(fstat s2 native delivered_pct 1)" \
			"" "plugin 100 %" "$(verdict "$(stat s2 plugin delivered_pct)" ">=" 100)"
		row "" "drain rate, msg/s (first to last message)" "$(fstat s2 plugin drain_rate)" \
			"native, max_queued_messages 0: $(fstat s2 native drain_rate)" "$(fratio s2 drain_rate plugin native)" "≥ 1.2" \
			"$(verdict "$(ratio s2 drain_rate plugin native)" ">=" 1.2)"
		row "" "cloud back → last message, s" "$(fstat s2 plugin up_to_last_s 2)" \
			"native, max_queued_messages 0: $(fstat s2 native up_to_last_s 2)" "$(fratio s2 up_to_last_s plugin native)" "≤ 0.85" \
			"$(verdict "$(ratio s2 up_to_last_s plugin native)" "<=" 0.85)"
		row "" "memory growth of the edge during the outage (PSS, all its processes), MiB" "$(fstat s2 plugin pss_growth 1)" \
			"native defaults: $(fstat s2 native-default pss_growth 1); max_queued_messages 0: $(fstat s2 native pss_growth 1)" \
			"" "≤ 64" "$(verdict "$(stat s2 plugin pss_growth)" "<=" 64)"
		row "" "peak RSS of the edge broker, MiB (processes added up)" "$(fstat s2 plugin rss 1)" \
			"native defaults: $(fstat s2 native-default rss 1); max_queued_messages 0: $(fstat s2 native rss 1)" \
			"$(fratio s2 rss plugin native)" "" ""
		row "6. spool cost" "bytes on disk per spooled 100-byte message" "$(fstat s2 plugin spool_bytes_per_msg 1)" \
			"" "" "" ""
	fi
	if has s11; then
		row "11. outage backlog, $n_backlog msgs, into a cloud that keeps up" "drain rate, msg/s (first to last message)" \
			"$(fstat s11 plugin drain_rate)" "native, max_queued_messages 0: $(fstat s11 native drain_rate)" \
			"$(fratio s11 drain_rate plugin native)" "≥ 1.2" "$(verdict "$r_s11" ">=" 1.2)"
		row "" "cloud back → last message, s" "$(fstat s11 plugin up_to_last_s 2)" \
			"native: $(fstat s11 native up_to_last_s 2)" "$(fratio s11 up_to_last_s plugin native)" "≤ 0.85" \
			"$(verdict "$(ratio s11 up_to_last_s plugin native)" "<=" 0.85)"
		row "" "delivered %, duplicates, out of order" "$(fstat s11 plugin delivered_pct 1), $(fstat s11 plugin dups), $(fstat s11 plugin reorder)" \
			"native: $(fstat s11 native delivered_pct 1), $(fstat s11 native dups), $(fstat s11 native reorder)" "" "100 %, 0, 0" \
			"$(verdict "$(stat s11 plugin delivered_pct)" ">=" 100)"
	fi
	if has s6; then
		row "6. capture path (broker thread)" "ns per matched 100-byte message, p50" "$(fstat s6 plugin capture_matched_p50_ns)" \
			"" "" "" ""
		row "" "ns per matched message, p99" "$(fstat s6 plugin capture_matched_p99_ns)" "" "" "" ""
		row "" "ns per unmatched message, p50" "$(fstat s6 plugin capture_unmatched_p50_ns)" "" "" "" ""
	fi
	if has s3; then
		row "3. local pub/sub, unmatched topics, QoS 1" "msg/s" "$(fstat s3 plugin-unmatched rate)" \
			"vanilla: $(fstat s3 vanilla rate)" "$(fratio s3 rate plugin-unmatched vanilla)" "≥ 0.97" "$(verdict "$r_s3u" ">=" 0.97)"
		if [ -n "$r_s3s" ]; then
			row "3. local pub/sub, matched and spooled (cloud unreachable)" "msg/s" "$(fstat s3 plugin-spooled rate)" \
				"vanilla: $(fstat s3 vanilla rate)" "$(fratio s3 rate plugin-spooled vanilla)" "≥ 0.85" "$(verdict "$r_s3s" ">=" 0.85)"
		fi
		row "3. local pub/sub, matched, spooled and forwarded (cloud on the same machine)" "msg/s" "$(fstat s3 plugin-matched rate)" \
			"vanilla: $(fstat s3 vanilla rate)" "$(fratio s3 rate plugin-matched vanilla)" "≥ 0.85" "$(verdict "$r_s3m" ">=" 0.85)"
		if [ -n "$(stat s3 native-matched rate)" ]; then
			row "" "msg/s, the same traffic forwarded by the native bridge" "$(fstat s3 plugin-matched rate)" \
				"native: $(fstat s3 native-matched rate)" "$(fratio s3 rate plugin-matched native-matched)" "" ""
		fi
	fi
	if has s4; then
		row "4. edge → cloud at 1,000 msg/s" "p50 ms" "$(fstat s4 plugin p50_ms 3)" "native: $(fstat s4 native p50_ms 3)" \
			"$(fratio s4 p50_ms plugin native)" "" ""
		row "" "p99 ms" "$(fstat s4 plugin p99_ms 3)" "native: $(fstat s4 native p99_ms 3)" \
			"$(fratio s4 p99_ms plugin native)" "" ""
	fi
	if has s5; then
		row "5. cloud → edge, idle edge, 20 msg/s" "p50 ms" "$(fstat s5 plugin p50_ms 3)" "native: $(fstat s5 native p50_ms 3)" \
			"$(fratio s5 p50_ms plugin native)" "" ""
		row "" "p99 ms" "$(fstat s5 plugin p99_ms 3)" "native: $(fstat s5 native p99_ms 3)" \
			"$(fratio s5 p99_ms plugin native)" "≤ 5 ms" "$(verdict "$(stat s5 plugin p99_ms)" "<=" 5)"
	fi
	if has s8; then
		row "8. $n_drain-message backlog" "local pub/sub msg/s while it drains (unmatched topic)" "$(fstat s8 plugin local_drain_rate)" \
			"same edge, backlog waiting (cloud down): $(fstat s8 plugin local_waiting_rate); native $(fstat s8 native local_drain_vs_idle 2)" \
			"$(fstat s8 plugin local_drain_vs_idle 2)" \
			"≥ 0.9" "$(verdict "$(stat s8 plugin local_drain_vs_idle)" ">=" 0.9)"
		row "" "local pub/sub msg/s, cloud up, no backlog" "$(fstat s8 plugin local_idle_rate) before, $(fstat s8 plugin local_idle_after_rate) after" \
			"" "" "" ""
		row "" "rest of the backlog: drain rate, msg/s, while 1,000 msg/s keep coming" "$(fstat s8 plugin drain_rate)" \
			"native: $(fstat s8 native drain_rate)" "$(fratio s8 drain_rate plugin native)" "" ""
		row "" "live messages p99 ms during that drain" "$(fstat s8 plugin live_p99_ms 1)" \
			"native: $(fstat s8 native live_p99_ms 1)" "$(fratio s8 live_p99_ms plugin native)" "" ""
	fi
	if has s10; then
		row "10. priority-0 alarms at 10 msg/s while a $n_drain-message backlog drains" "alarm latency p99 ms" \
			"$(fstat s10 plugin alarm_p99_ms 1)" "native: $(fstat s10 native alarm_p99_ms 1); single lane: $(fstat s10 plugin-1lane alarm_p99_ms 1)" \
			"$(fratio s10 alarm_p99_ms plugin native)" "plugin ≤ 50 ms" "$(verdict "$(stat s10 plugin alarm_p99_ms)" "<=" 50)"
		row "" "alarm latency p50 ms" "$(fstat s10 plugin alarm_p50_ms 1)" \
			"native: $(fstat s10 native alarm_p50_ms 1); single lane: $(fstat s10 plugin-1lane alarm_p50_ms 1)" \
			"$(fratio s10 alarm_p50_ms plugin native)" "" ""
		row "" "backlog drain rate, msg/s, with the alarms' lane" "$(fstat s10 plugin drain_rate)" \
			"single lane: $(fstat s10 plugin-1lane drain_rate); native: $(fstat s10 native drain_rate)" \
			"$(fratio s10 drain_rate plugin plugin-1lane)" "≥ 0.95" \
			"$(verdict "$(ratio s10 drain_rate plugin plugin-1lane)" ">=" 0.95)"
	fi
	if has s9; then
		row "9. telemetry, 200 topics, 60-byte JSON, 10 msg/s each" "bytes on the wire per published message, topic aliases" \
			"$(fstat s9 aliases bytes_per_published_msg 1)" "plugin without aliases: $(fstat s9 plain bytes_per_published_msg 1)" \
			"$(fratio s9 bytes_per_published_msg aliases plain)" "≤ 0.70" \
			"$(verdict "$(ratio s9 bytes_per_published_msg aliases plain)" "<=" 0.70)"
		row "" "messages forwarded, deadband 0.2 + heartbeat 30s, % of published" "$(fstat s9 deadband forwarded_pct 2)" \
			"plain: $(fstat s9 plain forwarded_pct 2)" "" "≤ 20 %" "$(verdict "$(stat s9 deadband forwarded_pct)" "<=" 20)"
		row "" "bytes on the wire per published message, aggregate window 10s" "$(fstat s9 aggregate bytes_per_published_msg 2)" \
			"native: $(fstat s9 native bytes_per_published_msg 1)" "$(fratio s9 bytes_per_published_msg aggregate native)" \
			"≤ 0.02 (50x fewer)" "$(verdict "$(ratio s9 bytes_per_published_msg aggregate native)" "<=" 0.02)"
	fi
	if has s7; then
		row "7. callgrind, all edge processes" "instructions per forwarded message" "$(fstat s7 plugin-forward "instructions per message")" \
			"native: $(fstat s7 native-forward "instructions per message")" \
			"$(fratio s7 "instructions per message" plugin-forward native-forward)" "≤ 1.0" \
			"$(verdict "$(ratio s7 "instructions per message" plugin-forward native-forward)" "<=" 1.0)"
		row "" "instructions per unmatched local message" "$(fstat s7 plugin-unmatched "instructions per message")" \
			"vanilla: $(fstat s7 vanilla-unmatched "instructions per message")" \
			"$(fratio s7 "instructions per message" plugin-unmatched vanilla-unmatched)" "≤ 1.02" \
			"$(verdict "$(ratio s7 "instructions per message" plugin-unmatched vanilla-unmatched)" "<=" 1.02)"
		row "" "… against the native bridge's broker (its own subscription for the bridged topics)" \
			"$(fstat s7 plugin-unmatched "instructions per message")" \
			"native: $(fstat s7 native-unmatched "instructions per message")" \
			"$(fratio s7 "instructions per message" plugin-unmatched native-unmatched)" "" ""
	fi
	echo
	if has s7; then
		pf=$(med "$(stat s7 plugin-forward "instructions per message")")
		nf=$(med "$(stat s7 native-forward "instructions per message")")
		# The heaviest functions by their median over the repetitions (a function below callgrind's
		# list in some repetition has fewer values; its median is of those it has).
		top=$(awk -F'\t' '$1 == "s7" && $2 == "plugin-forward" && $4 ~ /^… inclusive in / && $4 !~ /worker|on_message|on_publish/ && !seen[$4]++ { print $4 }' "$raw" \
			| while read -r k; do printf '%s\t%s\n' "$(med "$(stat s7 plugin-forward "$k")")" "${k#… inclusive in }"; done \
			| sort -t$'\t' -k1,1nr | head -6 | awk -F'\t' '{ printf "%s%s %s", sep, $2, $1; sep = ", " }')
		cat <<EOF
Where the time goes (scenario 7, callgrind): the edge (broker and link process) executes $pf instructions per forwarded
message with the plugin against $nf with the native bridge; RocksDB alone accounts for
$(med "$(stat s7 plugin-forward "… in librocksdb")") of them and libc (malloc/free, formatting) for
$(med "$(stat s7 plugin-forward "… in libc")"). Inclusive cost per message of the plugin's heaviest
functions: $top. An unmatched local message costs $(med "$(stat s7 plugin-unmatched "instructions per message")")
instructions with the plugin loaded against $(med "$(stat s7 vanilla-unmatched "instructions per message")") in vanilla Mosquitto
and $(med "$(stat s7 native-unmatched "instructions per message")") in Mosquitto with its bridge.

EOF
	fi
	for c in "${charts[@]}"; do echo "![${c##*/}]($c)"; echo; done

	if has s0; then
		cat <<EOF
## The load generator is not the bottleneck

\`bench/loadgen\` (C, libmosquitto 2.0.11, one thread and one hand-driven poll loop per connection)
against vanilla Mosquitto, next to \`mosquitto_pub --repeat N\` / \`mosquitto_sub -C N\` doing the same
job. Rate = messages / wall time from the publisher's start to the subscriber's last message
($n_s0q1 messages at QoS 1, $n_s0q0 at QoS 0, 100 bytes). CPU = the load generator's own CPU time
over its run time (100 % = one core): well below one core, so it waits for the broker.

| tool | QoS 1 msg/s | QoS 0 msg/s |
|---|---|---|
| mosquitto_pub + mosquitto_sub | $(fstat s0 "mosquitto_pub+sub q1" rate) | $(fstat s0 "mosquitto_pub+sub q0" rate) |
| loadgen pub + loadgen sub | $(fstat s0 "loadgen q1" rate) | $(fstat s0 "loadgen q0" rate) |
| loadgen / mosquitto tools | $(fratio s0 rate "loadgen q1" "mosquitto_pub+sub q1") | $(fratio s0 rate "loadgen q0" "mosquitto_pub+sub q0") |
| loadgen pub CPU % | $(fstat s0 "loadgen q1" pub_cpu) | $(fstat s0 "loadgen q0" pub_cpu) |
| loadgen sub CPU % | $(fstat s0 "loadgen q1" sub_cpu) | $(fstat s0 "loadgen q0" sub_cpu) |

In the bridged runs the load generator reaches far less than it does against vanilla Mosquitto, and
its CPU share stays low (scenario 1: publisher $(fstat s1 plugin pub_cpu) % / $(fstat s1 native pub_cpu) %,
cloud subscriber $(fstat s1 plugin sub_cpu) % / $(fstat s1 native sub_cpu) % of a core, plugin / native).

EOF
	fi

	cat <<EOF
## Scenarios in detail

Systems: **plugin** = edge Mosquitto with flowmq_bridge.so; **native** = edge Mosquitto with a
\`connection\` bridge doing the same job (MQTT v5, TLS 1.3, same certificates, credentials, client id,
topic mapping, QoS 1, \`cleansession false\`) and \`max_queued_messages 0\`; **native-default** = the
same with Mosquitto's default \`max_queued_messages\` (1000); **vanilla** = edge Mosquitto without a
bridge. Every edge except native-default has \`max_queued_messages 0\`, so that a slow local or bridge
consumer is never cut short by the queue limit. A fresh edge broker (and an empty spool) is started for
every run and checked with a probe message that must reach the cloud; the cloud stand-in is the same
throughout (restarted only by the outage scenarios). Payloads are 100 bytes, topics spread over 10
subtopics; the load generator keeps up to 100 QoS 1 messages in flight.

EOF
	for s in s1 s2 s11 s3 s4 s5 s7 s8 s9 s10; do
		has $s || continue
		case $s in
			s1) echo "### 1. Online throughput (QoS 1, $n_tp messages, edge publisher → cloud subscriber)" ;;
			s2) echo "### 2 and 6. Outage backlog ($n_backlog messages published while the cloud is down)"
				echo
				echo "The cloud application holds a persistent session on the cloud stand-in (which has persistence"
				echo "on and max_queued_messages 0), so whatever the edge delivers after the cloud restart is counted."
				echo "drain_s / drain_rate: first to last message at the cloud; up_to_last_s: cloud restart to last"
				echo "message (includes the reconnect delay: plugin backoff 200 ms–2 s, native restart_timeout 1 2)."
				echo "pss_idle: the edge's proportional set size (all its processes) before the outage; pss_peak: the largest sampled every 0.2 s while the outage's messages are published; pss_growth: their difference (target: at most 64 MiB)."
				echo "rss_offline: peak RSS after the publish, rss: after the drain. spool_bytes_per_msg: growth of the"
				echo "spool folder (du -sb: WAL and SST files) during the publish, per message. drain_segs_per_msg: TCP"
				echo "segments carrying data that the cloud received on the bridge's connection (ss -ti), per message;"
				echo "every segment is one more pass through the cloud's TCP stack. drain_edge_io_calls_per_msg,"
				echo "drain_cloud_io_calls_per_msg: read(2)- and write(2)-family system calls (sockets included,"
				echo "/proc/PID/io syscr + syscw) of the edge's processes during the drain and of the cloud, per"
				echo "message." ;;
			s11) echo "### 11. Outage backlog drained into a cloud that keeps up ($n_backlog messages)"
				echo
				echo "The outage of s2, but the cloud that comes back is bench/cloudsink instead of the Mosquitto stand-in:"
				echo "TLS 1.3 and MQTT v5 on the same port with the same certificates, a PUBACK for every QoS 1 PUBLISH"
				echo "(those of one read in one write), no storage, no delivery, one thread per connection. It counts"
				echo "order and duplicates like the cloud application of s2. The stand-in of s2 spends about 40 µs"
				echo "per message and is the bottleneck of both bridges; here the edge is. over_rm: PUBLISH packets"
				echo "that arrived while the sender already had the announced Receive Maximum unacknowledged"
				echo "(FB_BENCH_SINK_RM, default none: 65535); max_batch: the most QoS 1 PUBLISH packets in one read."
				echo "drain_cloud_cpu_us_per_msg: the sink's CPU per message." ;;
			s3) echo "### 3. Local pub/sub throughput on the edge (QoS 1, $n_local messages)"
				echo
				echo "vanilla and plugin-unmatched publish to plant/telemetry/press/…, which no rule matches; plugin-matched"
				echo "publishes to local/telemetry/local/… (the same length and depth, so the packets have the same size),"
				echo "which the plugin spools and forwards to the connected cloud, while a local"
				echo "subscriber receives it; plugin-spooled is the same with the cloud stopped, so the plugin matches and"
				echo "spools every message and the cloud takes no CPU on this machine. All compare with vanilla"
				echo "Mosquitto; native-matched is the same matched traffic through Mosquitto's own bridge to the same"
				echo "cloud (what forwarding costs the edge at all)." ;;
			s4) echo "### 4. Edge → cloud latency at 1,000 msg/s ($n_lat messages, QoS 1)" ;;
			s5) echo "### 5. Cloud → edge latency, idle edge ($n_c2e messages at 20 msg/s, QoS 1)" ;;
			s7) echo "### 7. Instructions per message (callgrind, $n_cg QoS 1 messages, every repetition)"
				echo
				cat <<'TXT'
The edge broker runs under `valgrind --tool=callgrind`; its counters are zeroed after the start-up
(`callgrind_control -z`) and dumped after the last message and its PUBACK from the cloud
(`callgrind_control -d`). The plugin's link process (forked by the broker, so also under callgrind)
cannot be zeroed or dumped while it runs: it is counted from its exit dump, as the difference
between this run and a second run of the same edge for as long without the messages (start-up,
the probe message, idling and the stop cancel out). The count covers every thread of both
processes for the messages alone, divided by their number. *-forward: published to local/telemetry/cg
and forwarded to the cloud; *-unmatched: published to plant/cg, which nothing matches and nobody
subscribes to (the plugin's loopback and Mosquitto's bridge subscribe to the forwarded topics,
which makes Mosquitto search its subscription tree for every message; vanilla Mosquitto has no
subscription at all). "… in X": instructions spent in shared object X itself; "… inclusive in f()": in the
plugin's function f and everything it calls. Time in the kernel (system calls) is not counted.
TXT
				;;
			s9) echo "### 9. Telemetry: send less ($s9_secs s per system)"
				cat <<'TXT'

200 topics local/telemetry/line-<1..4>/machine-<1..50>/spindle/temperature, 60-byte JSON payloads
{"temperature": ..., "ts": ...} (a random walk of +-0.1 per message per topic), 10 msg/s per topic,
QoS 1, topics in turn. native: Mosquitto's bridge; plain: the plugin with cloud.topic_aliases: false;
aliases: with topic aliases (the cloud stand-in announces Topic Alias Maximum 256; with Mosquitto's
default of 10, 200 topics in turn would gain nothing); deadband: deadband 0.2, field temperature,
heartbeat 30s; aggregate: aggregate { window: 10s, field: temperature } (both with aliases). The
rule has no headers; the plugin's messages still carry the origin user property
(flowmq-bridge-origin: site-A, 31 bytes), the native bridge's none. bytes_per_published_msg: bytes the cloud received on the edge's TCP
connection (ss -ti bytes_received, TLS included) from before the first to after the last message,
over the messages published; forwarded: messages (or windows) the cloud application received.
TXT
				;;
			s10) echo "### 10. Priority lanes: alarms during a drain ($n_drain-message backlog)"
				cat <<'TXT'

A backlog of telemetry messages (local/telemetry/backlog/…) builds up while the cloud is down;
once the cloud is back and the backlog's first message has reached the cloud, alarms
(local/telemetry/alarm/…) come at 10 msg/s until the backlog has drained. plugin: the alarms' rule has `priority: 0`; plugin-1lane: the same rule in the default
lane, i.e. one FIFO for everything, as before lanes (the reference for the lanes' cost to the
drain); native: Mosquitto's bridge (one queue). alarm_p50_ms / alarm_p99_ms: the alarms' latency
from publish to the cloud subscriber; drain_rate: the backlog's first to last arrival;
up_to_last_s: from the cloud's start to the backlog's last message.
TXT
				;;
			s8) echo "### 8. Drain while publishing ($n_drain-message backlog, $s8_pairs pair$([ "$s8_pairs" = 1 ] || echo s) of local windows)"
				cat <<'TXT'

With the backlog in place, each pair measures local pub/sub on an unmatched topic twice: with the
cloud down, so the backlog waits (local_waiting_rate), then with the cloud back and the backlog
draining, from 1 s after its first message reached the cloud again (local_drain_rate); the cloud
then stops for the next pair. local_drain_vs_idle: the draining windows' rates summed over the
waiting windows' rates. drain_pairs: the pairs counted, those in which the backlog was still
draining when the window ended (a backlog that has all arrived ends the pairs). After the pairs the
cloud stays up and the rest of the backlog (rest_msgs) drains while new matched messages come at
1,000 msg/s: drain_rate from its first to its last arrival, up_to_last_s from the cloud's start, and
the live messages' latency. local_idle_rate / local_idle_after_rate: cloud up and no backlog, before
the outage and after the drain.
TXT
				;;
		esac
		echo
		detail_table $s
		echo
	done
	cat <<EOF
Latencies are from the publisher's send time (CLOCK_REALTIME, embedded in the payload) to the
subscriber's receive callback, both on this machine. rate = (received − 1) / (last − first arrival).
dups / reorder: duplicates and order violations per publisher connection, seen by the subscriber.

## Machine

| | |
|---|---|
| CPU | $cpu, $(nproc) cores online |
| memory | $mem |
| OS | $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r) |
| Mosquitto / libmosquitto | ${mosq_version:-?} / $(pkg libmosquitto1) |
| RocksDB / OpenSSL | $(pkg librocksdb7.8) / $(pkg libssl3) |
| plugin build | meson $build_type (build-bench, -Dtests=false), $(cc --version | head -1) |
| date | $started |

The machine is shared with other work: load from outside the benchmark adds noise, which the spread
shows.

## How it was run

\`\`\`
scripts/bench$( [ "$mode" = quick ] && echo " --quick")
\`\`\`

It installs the Debian packages it needs (scripts/lib.sh plus gnuplot-nox), builds the plugin and
\`bench/loadgen\` into build-bench (\`meson setup build-bench -Dtests=false && meson compile -C build-bench\`),
makes a CA, a server and an edge client certificate with openssl, and starts every broker on 127.0.0.1
at ports picked free at run time (\$CLOUD_TLS_PORT, \$CLOUD_APP_PORT, \$EDGE_PORT below; \$WORK is its
temporary folder). Raw measurements: [bench/results/raw.tsv](bench/results/raw.tsv).

Cloud stand-in (\`mosquitto -c cloud.conf\`):

\`\`\`
$(sed -e "s#$work#\$WORK#g" -e "s/\\b$cloud_tls\\b/\$CLOUD_TLS_PORT/g" -e "s/\\b$cloud_app\\b/\$CLOUD_APP_PORT/g" "$work/cloud.conf")
\`\`\`

Edge with the plugin: \`mosquitto -c edge.conf\` with \`plugin $build/plugin/flowmq_bridge.so\` and
\`plugin_opt_config_file \$WORK/flowmq-bridge.yaml\`:

\`\`\`yaml
$(sed -e "s#$work#\$WORK#g" -e "s/\\b$cloud_tls\\b/\$CLOUD_TLS_PORT/g" "$work/flowmq-bridge.yaml")
\`\`\`

Edge with the native bridge: the same edge.conf with, instead of the plugin lines:

\`\`\`
$(sed -e "s#$work#\$WORK#g" -e "s/\\b$cloud_tls\\b/\$CLOUD_TLS_PORT/g" -e "s/^remote_password .*/remote_password (the edge's secret)/" "$work/native-bridge.conf")
\`\`\`

Common edge.conf lines: \`per_listener_settings false\`, \`allow_anonymous true\`, \`persistence false\`,
\`listener \$EDGE_PORT 127.0.0.1\`, \`max_queued_messages 0\` (not for native-default).

Load generator command lines (each run; client ids, ready files and ports replaced by names):

\`\`\`
$(awk '!seen[$0]++' "$work/commands.txt" | sed "s/-P $app_secret/-P \$APP_SECRET/")
\`\`\`
EOF
	if has s0; then cat <<EOF

Load generator check with Mosquitto's own tools:

\`\`\`
mosquitto_sub -V 5 -p \$EDGE_PORT -q Q -t 'tool/#' -C N -W 60 >/dev/null &
mosquitto_pub -V 5 -p \$EDGE_PORT -q Q -t tool/x --repeat N -m <100 bytes>
\`\`\`
EOF
	fi
} >"$(case $out in /*) echo "$out" ;; *) echo "$root/$out" ;; esac)"
echo "wrote $out and ${charts[*]}"
