/* flowmq-bridge: microbenchmark of the broker-thread capture path (fb_bridge_capture(), what the
 * MOSQ_EVT_MESSAGE callback runs for every local publish).
 *
 *   capture CONFIG.yaml N
 *
 * CONFIG points the cloud at a port where nothing listens, so every matched message stays in the
 * spool. Times N captures of a 100-byte payload on a matched topic and N on an unmatched topic,
 * one clock_gettime() pair around each call, and prints the medians and 99th percentiles in
 * nanoseconds as key=value. With FB_CAPTURE_JSON set, the payloads are 60-byte telemetry JSON
 * ({"temperature": <0.00 to 1.80, in turn>, "ts": <i>}) for rules with deadband or aggregate.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge.h"

static int no_publish(void *ud, const char *topic, int len, void *payload, int qos, bool retain,
		mosquitto_property *props)
{
	(void)ud; (void)topic; (void)len; (void)payload; (void)qos; (void)retain; (void)props;
	return -1;
}

static void log_stderr(void *ud, int level, const char *line)
{
	(void)ud;
	if(level == MOSQ_LOG_ERR){
		fprintf(stderr, "%s\n", line);
	}
}

static int cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return x < y ? -1 : x > y;
}

static long ns_between(const struct timespec *a, const struct timespec *b)
{
	return (b->tv_sec - a->tv_sec) * 1000000000L + (b->tv_nsec - a->tv_nsec);
}

static int run(struct fb_bridge *b, const char *topic, size_t n, long *ns)
{
	char payload[100];
	struct timespec t0, t1;
	const bool json = getenv("FB_CAPTURE_JSON") != NULL;
	uint32_t len = json ? 60 : sizeof(payload);

	memset(payload, 'x', sizeof(payload));
	for(size_t i = 0; i < n; i++){
		if(json){
			int l = snprintf(payload, sizeof(payload), "{\"temperature\": %.2f, \"ts\": %zu", (double)(i % 7) * 0.3, i);
			memset(payload + l, ' ', 59 - (size_t)l);
			payload[59] = '}';
		}else{
			snprintf(payload, sizeof(payload), "%zu", i);
		}
		clock_gettime(CLOCK_MONOTONIC, &t0);
		int rc = fb_bridge_capture(b, topic, payload, len, NULL, 1, false);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if(rc < 0){
			fprintf(stderr, "capture failed: %d\n", rc);
			return -1;
		}
		ns[i] = ns_between(&t0, &t1);
	}
	qsort(ns, n, sizeof(*ns), cmp_long);
	return 0;
}

int main(int argc, char **argv)
{
	struct fb_logger lg = { log_stderr, NULL };
	struct fb_host host = { .publish = no_publish, .link_program = getenv("FB_LINK_PROGRAM") ?
		getenv("FB_LINK_PROGRAM") : FB_LINK_PROGRAM_BUILD };
	struct fb_bridge *b;
	size_t n;
	long *matched, *unmatched;

	if(argc != 3 || (n = strtoul(argv[2], NULL, 10)) == 0){
		fprintf(stderr, "usage: capture CONFIG.yaml N\n");
		return 2;
	}
	matched = calloc(n, sizeof(long));
	unmatched = calloc(n, sizeof(long));
	if(matched == NULL || unmatched == NULL || fb_bridge_start(argv[1], &lg, &host, &b) < 0){
		return 1;
	}
	if(run(b, "local/telemetry/line1/temp", n, matched) < 0 || run(b, "plant/line1/temp", n, unmatched) < 0){
		fb_bridge_stop(b);
		return 1;
	}
	printf("capture_matched_p50_ns=%ld capture_matched_p99_ns=%ld capture_unmatched_p50_ns=%ld capture_unmatched_p99_ns=%ld\n",
			matched[n / 2], matched[n * 99 / 100], unmatched[n / 2], unmatched[n * 99 / 100]);
	fb_bridge_stop(b);
	free(matched);
	free(unmatched);
	return 0;
}
