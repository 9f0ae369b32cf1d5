/* Unit tests (test process) of plugin/broker/reduce.c: min_interval, on_change, deadband, heartbeat and aggregate,
 * driven with given clocks, so that every expectation is exact: which messages are sent, which
 * are held and sent later (and when), the summaries' JSON, the counters, and the LRU bound. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "record.h" /* fb_mono_ms() */
#include "reduce.h"

/* ---- helpers --------------------------------------------------------------------------------- */

#define SENT_MAX 4096

/* What the sink received, in order. */
static struct {
	char *what[SENT_MAX];    /* "R:<record bytes>" or "W<rule>:<cloud topic>:<json>" */
	uint64_t at[SENT_MAX];   /* the test clock when it arrived */
	size_t count;
} sent;
static uint64_t clock_now;
static struct fb_counters ctr;
static struct fb_config *cfg;
static struct fb_reduce *red;
static char cfg_path[64];

static void quiet(void *ud, int level, const char *line)
{
	fprintf(stderr, "config: %s\n", line);
}

static const struct fb_logger lg = { quiet, NULL };

static void sent_add(char *s)
{
	ck_assert_uint_lt(sent.count, SENT_MAX);
	sent.at[sent.count] = clock_now;
	sent.what[sent.count++] = s;
}

/* While false, the sinks have no room for what the tick sends (they return -EAGAIN when asked to
 * wait) and count what they are made to take anyway. */
static bool room = true;
static unsigned no_room_taken, no_room_asked;

/* What a sink returns while there is no room: -EAGAIN when it may WAIT; else it takes (drops) it. */
static int no_room(bool wait)
{
	if(wait){
		no_room_asked++;
		return -EAGAIN;
	}
	no_room_taken++;
	return -ENOSPC;
}

static int sink_record(void *ud, int rule, const uint8_t *rec, size_t len, bool wait)
{
	char *s;

	if(!room){
		return no_room(wait);
	}
	s = malloc(len + 3);

	memcpy(s, "R:", 2);
	memcpy(s + 2, rec, len);
	s[len + 2] = '\0';
	sent_add(s);
	return 0;
}

static int sink_window(void *ud, int rule, const char *topic, const char *json, size_t len, bool wait)
{
	char *s;

	if(!room){
		return no_room(wait);
	}
	ck_assert_uint_eq(strlen(json), len);
	ck_assert_int_ge(asprintf(&s, "W%d:%s:%s", rule, topic, json), 0);
	sent_add(s);
	return 0;
}

static void sent_clear(void)
{
	for(size_t i = 0; i < sent.count; i++){
		free(sent.what[i]);
	}
	sent.count = 0;
}

/* Loads a configuration with the given edge_to_cloud rules (YAML list items) and makes the state. */
static void start(const char *spool_extra, const char *rules)
{
	FILE *f;
	const struct fb_reduce_sink sink = { sink_record, sink_window, NULL };

	snprintf(cfg_path, sizeof(cfg_path), "/tmp/fb-test-reduce-XXXXXX");
	ck_assert_int_ge(mkstemp(cfg_path), 0);
	ck_assert_ptr_nonnull(f = fopen(cfg_path, "w"));
	fprintf(f, "site_id: s\ncloud:\n  endpoints: [mqtts://c]\nspool:\n  path: /tmp/x\n%sedge_to_cloud:\n%s",
			spool_extra, rules);
	fclose(f);
	ck_assert_int_eq(fb_config_load(cfg_path, &lg, &cfg), 0);
	memset(&ctr, 0, sizeof(ctr));
	ck_assert_int_eq(fb_reduce_new(cfg, &sink, &ctr, &red), 0);
	ck_assert_ptr_nonnull(red);
}

static void teardown(void)
{
	fb_reduce_free(red);
	red = NULL;
	fb_config_free(cfg);
	cfg = NULL;
	unlink(cfg_path);
	sent_clear();
	room = true;
	no_room_taken = no_room_asked = 0;
}

/* Offers PAYLOAD on TOPIC of rule RULE at clock_now (both clocks), as the capture does when the
 * channel takes what is to be sent (STAGED) or turns it away (not STAGED: a message to send now is
 * neither staged nor held, fb_reduce_sent() is not called); a held message's record is its
 * payload. Returns the verdict. */
static int offer_staged(int rule, const char *topic, const char *payload, bool staged)
{
	char cloud[256];
	int v;

	snprintf(cloud, sizeof(cloud), "c/%s", topic);
	v = fb_reduce_offer(red, rule, topic, cloud, payload, (uint32_t)strlen(payload), clock_now, clock_now);
	ck_assert_int_ge(v, 0);
	if(v == FB_REDUCE_HOLD && staged){
		ck_assert_int_eq(fb_reduce_hold(red, (const uint8_t *)payload, strlen(payload)), 0);
	}else if(v == FB_REDUCE_SEND && staged){
		fb_reduce_sent(red);
	}
	return v;
}

static int offer_rule(int rule, const char *topic, const char *payload)
{
	return offer_staged(rule, topic, payload, true);
}

static int offer(const char *topic, const char *payload)
{
	return offer_rule(0, topic, payload);
}

static void tick(void)
{
	fb_reduce_tick_at(red, clock_now, clock_now);
}

#define C(name) ((uint64_t)atomic_load(&ctr.name))

/* ---- fb_reduce_value -------------------------------------------------------------------------- */

START_TEST(test_value_extraction)
{
	static const struct {
		const char *payload;
		const char *field;
		int rc;
		double v;
	} cases[] = {
		{ "21.5", NULL, 0, 21.5 },
		{ " 7 \n", NULL, 0, 7 },
		{ "-0.25", NULL, 0, -0.25 },
		{ "1e3", NULL, 0, 1000 },
		{ "", NULL, -EINVAL, 0 },
		{ "21.5abc", NULL, -EINVAL, 0 },
		{ "1e999", NULL, -EINVAL, 0 },
		{ "true", NULL, -EINVAL, 0 },
		{ "\"21\"", NULL, -EINVAL, 0 },
		{ "[1]", NULL, -EINVAL, 0 },
		{ "{\"temperature\": 20.5, \"ts\": 1}", "temperature", 0, 20.5 },
		{ "{\"temperature\": 20.5}", NULL, -EINVAL, 0 },
		{ "{\"a\": {\"b\": {\"c\": -3}}}", "a.b.c", 0, -3 },
		{ "{\"a\": {\"b\": {\"c\": -3}}}", "a.b", -EINVAL, 0 },
		{ "{\"a\": {\"b\": 2}}", "a.b.c", -EINVAL, 0 },
		{ "{\"a\": 1}", "b", -EINVAL, 0 },
		{ "{\"a\": \"1\"}", "a", -EINVAL, 0 },
		{ "{\"a\": null}", "a", -EINVAL, 0 },
		{ "{\"a\": 1", "a", -EINVAL, 0 },
		{ "7", "a", -EINVAL, 0 },
	};

	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		double v = -12345;
		int rc = fb_reduce_value(cases[i].payload, (uint32_t)strlen(cases[i].payload), cases[i].field, &v);

		ck_assert_msg(rc == cases[i].rc, "case %zu '%s': rc %d", i, cases[i].payload, rc);
		if(rc == 0){
			ck_assert_msg(v == cases[i].v, "case %zu: %g", i, v);
		}
	}
	/* The length bounds the parse: what follows is not read. */
	double v;
	ck_assert_int_eq(fb_reduce_value("12345", 2, NULL, &v), 0);
	ck_assert(v == 12);
}
END_TEST

/* ---- min_interval ----------------------------------------------------------------------------- */

/* 1,000 messages on one topic over 2.5 s with min_interval 1s, the tick every 10 ms: the first is
 * sent at once, then the newest of each interval once it has ended (by the tick, at most one wheel
 * slot, 16 ms, and one tick late; or at once by a message that comes after the end and before the
 * tick, which then replaces it), each interval counting from the last send: 4 in all, the last one
 * the last published; the other 996 are counted as suppressed. */
START_TEST(test_min_interval_thins_and_keeps_the_last)
{
	char p[32];
	unsigned k, fwd_n = 0, fwd_idx[16];
	uint64_t at[1000], fwd_at[16];
	size_t seen = 0;

	start("", "  - local: t/#\n    cloud: c/#\n    min_interval: 1s\n");
	for(unsigned i = 0; i < 1000; i++){
		clock_now = at[i] = 100000 + i * 5 / 2; /* 2.5 ms apart */
		if(i % 4 == 0){
			tick();
		}
		for(; seen < sent.count; seen++){ /* held ones the tick sent */
			ck_assert_uint_lt(fwd_n, 16);
			ck_assert_int_eq(sscanf(sent.what[seen], "R:m%u", &fwd_idx[fwd_n]), 1);
			fwd_at[fwd_n++] = sent.at[seen];
		}
		snprintf(p, sizeof(p), "m%u", i);
		if(offer("t/a", p) == FB_REDUCE_SEND){
			ck_assert_uint_lt(fwd_n, 16);
			fwd_idx[fwd_n] = i;
			fwd_at[fwd_n++] = clock_now;
		}
	}
	for(clock_now = 102500; clock_now <= 104000; clock_now += 10){
		tick();
	}
	for(; seen < sent.count; seen++){
		ck_assert_int_eq(sscanf(sent.what[seen], "R:m%u", &fwd_idx[fwd_n]), 1);
		fwd_at[fwd_n++] = sent.at[seen];
	}
	ck_assert_uint_eq(fwd_n, 4);
	ck_assert_uint_eq(fwd_idx[0], 0);
	ck_assert_uint_eq(fwd_at[0], 100000);
	for(unsigned j = 1; j < fwd_n; j++){
		/* at the end of its interval, at most 16 + 10 ms late */
		ck_assert_uint_ge(fwd_at[j], fwd_at[j - 1] + 1000);
		ck_assert_uint_le(fwd_at[j], fwd_at[j - 1] + 1000 + 16 + 10);
		/* the newest message offered by then */
		k = fwd_idx[j];
		ck_assert(at[k] <= fwd_at[j]);
		ck_assert(k == 999 || at[k + 1] >= fwd_at[j]);
	}
	ck_assert_uint_eq(fwd_idx[3], 999);
	ck_assert_uint_eq(C(suppressed), 996);
	ck_assert_uint_eq(fb_reduce_tracked(red, FB_REDUCE_THROTTLE), 1);
}
END_TEST

/* 50 topics throttled independently: each sends its first message at once and its newest at the
 * end of its own interval. */
START_TEST(test_min_interval_per_topic)
{
	char t[32], p[32];
	unsigned send = 0;

	start("", "  - local: t/#\n    cloud: c/#\n    min_interval: 1s\n");
	for(unsigned r = 0; r < 10; r++){
		for(unsigned i = 0; i < 50; i++){
			clock_now = 5000 + i * 10 + r * 50;
			snprintf(t, sizeof(t), "t/%u", i);
			snprintf(p, sizeof(p), "%u-%u", i, r);
			send += offer(t, p) == FB_REDUCE_SEND;
		}
	}
	ck_assert_uint_eq(send, 50);
	ck_assert_uint_eq(sent.count, 0);
	for(clock_now = 5500; clock_now <= 8000; clock_now += 10){
		tick();
	}
	ck_assert_uint_eq(sent.count, 50);
	for(unsigned i = 0; i < 50; i++){
		snprintf(p, sizeof(p), "R:%u-9", i); /* in order of their intervals' ends */
		ck_assert_str_eq(sent.what[i], p);
		ck_assert_uint_ge(sent.at[i], 6000 + i * 10);
	}
	ck_assert_uint_eq(C(suppressed), 50 * 8);
	ck_assert_uint_eq(fb_reduce_tracked(red, FB_REDUCE_THROTTLE), 50);
}
END_TEST

/* A message after a quiet interval goes at once; held ones are sent by fb_reduce_flush(). */
START_TEST(test_min_interval_quiet_and_flush)
{
	start("", "  - local: t/#\n    cloud: c/#\n    min_interval: 1s\n");
	clock_now = 1000;
	ck_assert_int_eq(offer("t/a", "1"), FB_REDUCE_SEND);
	clock_now = 3000;
	ck_assert_int_eq(offer("t/a", "2"), FB_REDUCE_SEND);
	clock_now = 3999;
	ck_assert_int_eq(offer("t/a", "3"), FB_REDUCE_HOLD);
	clock_now = 4000; /* the held one's interval ended, no tick yet: the new one replaces it */
	ck_assert_int_eq(offer("t/a", "4"), FB_REDUCE_SEND);
	ck_assert_int_eq(offer("t/b", "b1"), FB_REDUCE_SEND);
	ck_assert_int_eq(offer("t/b", "b2"), FB_REDUCE_HOLD);
	ck_assert_int_eq(offer("t/a", "5"), FB_REDUCE_HOLD);
	tick();
	ck_assert_uint_eq(sent.count, 0);
	fb_reduce_flush(red);
	ck_assert_uint_eq(sent.count, 2);
	ck_assert_str_eq(sent.what[0], "R:b2");
	ck_assert_str_eq(sent.what[1], "R:5");
	ck_assert_uint_eq(C(suppressed), 1);
	for(clock_now = 4000; clock_now < 9000; clock_now += 10){
		tick();
	}
	ck_assert_uint_eq(sent.count, 2);
}
END_TEST

/* ---- on_change, deadband, heartbeat ----------------------------------------------------------- */

struct step {
	uint64_t at;
	const char *payload;
	int verdict;  /* | REFUSED: the channel turns the message away (neither staged nor held) */
};

#define REFUSED 0x100

static void run_steps(const struct step *s, size_t n)
{
	for(size_t i = 0; i < n; i++){
		clock_now = s[i].at;
		int v = offer_staged(0, "t/a", s[i].payload, !(s[i].verdict & REFUSED));
		ck_assert_msg(v == (s[i].verdict & ~REFUSED), "step %zu ('%s' at %llu): verdict %d, expected %d", i,
				s[i].payload, (unsigned long long)s[i].at, v, s[i].verdict & ~REFUSED);
	}
}

#define SEND FB_REDUCE_SEND
#define TAKEN FB_REDUCE_TAKEN

START_TEST(test_on_change_payloads)
{
	static const struct step steps[] = {
		{ 1, "a", SEND }, { 2, "a", TAKEN }, { 3, "b", SEND }, { 4, "b", TAKEN }, { 5, "a", SEND },
		{ 6, "", SEND }, { 7, "", TAKEN }, { 8, "a ", SEND }, { 9, "a", SEND },
	};

	start("", "  - local: t/#\n    cloud: c/#\n    on_change: true\n");
	run_steps(steps, sizeof(steps) / sizeof(steps[0]));
	ck_assert_uint_eq(C(suppressed), 3);
	ck_assert_uint_eq(C(dropped_unparsable), 0);
}
END_TEST

/* Deadband 0.5 on plain numbers: compared with the last value sent; exactly 0.5 away is within. */
START_TEST(test_deadband_plain_numbers)
{
	static const struct step steps[] = {
		{ 1, "20", SEND },     /* first */
		{ 2, "20.25", TAKEN }, /* 0.25 */
		{ 3, "20.5", TAKEN },  /* exactly 0.5: within */
		{ 4, "19.5", TAKEN },  /* exactly -0.5: within */
		{ 5, "20.75", SEND },  /* 0.75 */
		{ 6, "20.5", TAKEN },  /* 0.25 from 20.75 */
		{ 7, "20.25", TAKEN }, /* exactly 0.5 */
		{ 8, "20.125", SEND }, /* 0.625 */
		{ 9, "warm", TAKEN },  /* unparsable */
		{ 10, "20.125", TAKEN },
		{ 11, "-20", SEND },
	};

	start("", "  - local: t/#\n    cloud: c/#\n    deadband: 0.5\n");
	run_steps(steps, sizeof(steps) / sizeof(steps[0]));
	ck_assert_uint_eq(C(suppressed), 6);
	ck_assert_uint_eq(C(dropped_unparsable), 1);
}
END_TEST

START_TEST(test_deadband_json_field)
{
	static const struct step steps[] = {
		{ 1, "{\"s\": {\"t\": 1.0}, \"ts\": 1}", SEND },
		{ 2, "{\"s\": {\"t\": 1.0}, \"ts\": 2}", TAKEN }, /* same value, other payload */
		{ 3, "{\"s\": {\"t\": 1.25}, \"ts\": 3}", TAKEN }, /* exactly the deadband */
		{ 4, "{\"s\": {\"t\": 1.26}, \"ts\": 4}", SEND },
		{ 5, "{\"s\": {}, \"ts\": 5}", TAKEN },          /* no field: unparsable */
		{ 6, "{\"s\": {\"t\": \"2\"}}", TAKEN },          /* a string: unparsable */
		{ 7, "{\"s\": {\"t\": 0.5}}", SEND },
	};

	start("", "  - local: t/#\n    cloud: c/#\n    deadband: 0.25\n    field: s.t\n");
	run_steps(steps, sizeof(steps) / sizeof(steps[0]));
	ck_assert_uint_eq(C(suppressed), 2);
	ck_assert_uint_eq(C(dropped_unparsable), 2);
}
END_TEST

/* on_change with a field compares the numbers, not the payloads. */
START_TEST(test_on_change_json_field)
{
	static const struct step steps[] = {
		{ 1, "{\"v\": 3, \"ts\": 1}", SEND },
		{ 2, "{\"v\": 3, \"ts\": 2}", TAKEN },
		{ 3, "{\"v\": 3.0, \"ts\": 3}", TAKEN },
		{ 4, "{\"v\": 3.000001}", SEND },
	};

	start("", "  - local: t/#\n    cloud: c/#\n    on_change: true\n    field: v\n");
	run_steps(steps, sizeof(steps) / sizeof(steps[0]));
	ck_assert_uint_eq(C(suppressed), 2);
}
END_TEST

/* heartbeat 1s: an unchanged value is still sent once 1 s has passed since the last one sent
 * (exactly at 1 s included); a change restarts the count. */
START_TEST(test_heartbeat_boundaries)
{
	static const struct step steps[] = {
		{ 10000, "x", SEND }, { 10500, "x", TAKEN }, { 10999, "x", TAKEN }, { 11000, "x", SEND },
		{ 11500, "x", TAKEN }, { 11600, "y", SEND }, { 12599, "y", TAKEN }, { 12600, "y", SEND },
		{ 12601, "y", TAKEN },
	};

	start("", "  - local: t/#\n    cloud: c/#\n    on_change: true\n    heartbeat: 1s\n");
	run_steps(steps, sizeof(steps) / sizeof(steps[0]));
	ck_assert_uint_eq(C(suppressed), 5);
}
END_TEST

/* deadband + min_interval: what passes the deadband is throttled; the held one is sent at the
 * end of the interval. */
START_TEST(test_deadband_then_min_interval)
{
	static const struct step steps[] = {
		{ 1000, "1", SEND }, { 1100, "2", FB_REDUCE_HOLD }, { 1200, "2.1", TAKEN }, { 1300, "3", FB_REDUCE_HOLD },
	};

	start("", "  - local: t/#\n    cloud: c/#\n    deadband: 0.5\n    min_interval: 1s\n");
	run_steps(steps, sizeof(steps) / sizeof(steps[0]));
	for(clock_now = 1300; clock_now < 2200; clock_now += 10){
		tick();
	}
	ck_assert_uint_eq(sent.count, 1);
	ck_assert_str_eq(sent.what[0], "R:3");
	ck_assert_uint_eq(C(suppressed), 2); /* 2.1 within the deadband, 2 replaced by 3 */
}
END_TEST

/* ---- a message the channel turns away -------------------------------------------------------- */

/* on_change: b is turned away (the publisher sees 0x87, or drop_new drops it): its retry is
 * compared with a, the last one sent, and sent; only the repeat after that is suppressed. */
START_TEST(test_on_change_refused_is_not_the_last)
{
	static const struct step steps[] = {
		{ 1, "a", SEND }, { 2, "b", SEND | REFUSED }, { 3, "b", SEND }, { 4, "b", TAKEN }, { 5, "a", SEND },
	};

	start("", "  - local: t/#\n    cloud: c/#\n    on_change: true\n");
	run_steps(steps, sizeof(steps) / sizeof(steps[0]));
	ck_assert_uint_eq(C(suppressed), 1);
	ck_assert_uint_eq(C(dropped_unparsable), 0);
}
END_TEST

/* deadband 0.5: after 21 is turned away, 20.75 is 0.75 from 20, the last one sent (0.25 from 21). */
START_TEST(test_deadband_refused_is_not_the_last)
{
	static const struct step steps[] = {
		{ 1, "20", SEND }, { 2, "21", SEND | REFUSED }, { 3, "20.75", SEND }, { 4, "21", TAKEN },
		{ 5, "21", TAKEN },
	};

	start("", "  - local: t/#\n    cloud: c/#\n    deadband: 0.5\n");
	run_steps(steps, sizeof(steps) / sizeof(steps[0]));
	ck_assert_uint_eq(C(suppressed), 2);
}
END_TEST

/* heartbeat 1s: the heartbeat turned away at 11000 is still due at 11001; the one sent then
 * starts the next second. */
START_TEST(test_heartbeat_refused_is_still_due)
{
	static const struct step steps[] = {
		{ 10000, "x", SEND }, { 11000, "x", SEND | REFUSED }, { 11001, "x", SEND }, { 11002, "x", TAKEN },
		{ 12000, "x", TAKEN }, { 12001, "x", SEND },
	};

	start("", "  - local: t/#\n    cloud: c/#\n    on_change: true\n    heartbeat: 1s\n");
	run_steps(steps, sizeof(steps) / sizeof(steps[0]));
	ck_assert_uint_eq(C(suppressed), 2);
}
END_TEST

/* min_interval 1s: a message turned away does not start an interval: the next one goes at once
 * (not held for a second after one that never went). */
START_TEST(test_min_interval_refused_starts_no_interval)
{
	static const struct step steps[] = {
		{ 1000, "a", SEND | REFUSED }, { 1001, "a", SEND }, { 1500, "b", FB_REDUCE_HOLD },
		{ 2001, "c", SEND | REFUSED }, { 2002, "c", SEND },
	};

	start("", "  - local: t/#\n    cloud: c/#\n    min_interval: 1s\n");
	run_steps(steps, sizeof(steps) / sizeof(steps[0]));
	/* b was held and replaced by c, staged before the tick came */
	ck_assert_uint_eq(C(suppressed), 1);
	for(clock_now = 2002; clock_now < 3100; clock_now += 10){
		tick();
	}
	ck_assert_uint_eq(sent.count, 0);
}
END_TEST

/* min_interval 1s with on_change: b is held; c, at the end of b's interval before the tick, would
 * replace it but is turned away: b stays held and goes with the tick, nothing is suppressed, and
 * c's retry is held for the interval after b. */
START_TEST(test_refused_keeps_the_held_one)
{
	static const struct step steps[] = {
		{ 1000, "a", SEND }, { 1100, "b", FB_REDUCE_HOLD }, { 2000, "c", SEND | REFUSED },
	};

	start("", "  - local: t/#\n    cloud: c/#\n    on_change: true\n    min_interval: 1s\n");
	run_steps(steps, sizeof(steps) / sizeof(steps[0]));
	ck_assert_uint_eq(C(suppressed), 0);
	clock_now = 2020;
	tick();
	ck_assert_uint_eq(sent.count, 1);
	ck_assert_str_eq(sent.what[0], "R:b");
	clock_now = 2030;
	ck_assert_int_eq(offer("t/a", "c"), FB_REDUCE_HOLD);
	for(clock_now = 2030; clock_now < 3100; clock_now += 10){
		tick();
	}
	ck_assert_uint_eq(sent.count, 2);
	ck_assert_str_eq(sent.what[1], "R:c");
	ck_assert_uint_ge(sent.at[1], 3020);
	ck_assert_uint_eq(C(suppressed), 0);
}
END_TEST

/* ---- aggregate -------------------------------------------------------------------------------- */

START_TEST(test_aggregate_two_windows)
{
	start("", "  - local: t/#\n    cloud: c/#\n    aggregate: { window: 1s }\n");
	clock_now = 10500;
	ck_assert_int_eq(offer("t/a", "1"), TAKEN);
	clock_now = 10600;
	ck_assert_int_eq(offer("t/a", "3"), TAKEN);
	clock_now = 10999;
	ck_assert_int_eq(offer("t/a", "2"), TAKEN);
	tick();
	ck_assert_uint_eq(sent.count, 0);
	clock_now = 11000; /* the window [10000, 11000) closes */
	tick();
	ck_assert_uint_eq(sent.count, 1);
	ck_assert_str_eq(sent.what[0],
			"W0:c/t/a:{\"count\":3,\"min\":1,\"max\":3,\"avg\":2,\"sum\":6,\"last\":2,\"first_ts\":10500,\"last_ts\":10999}");
	ck_assert_uint_eq(fb_reduce_tracked(red, FB_REDUCE_AGGREGATE), 0);
	ck_assert_int_eq(offer("t/a", "4"), TAKEN);
	clock_now = 11100;
	ck_assert_int_eq(offer("t/a", "warm"), TAKEN);
	clock_now = 11200;
	ck_assert_int_eq(offer("t/a", "5.5"), TAKEN);
	clock_now = 11999;
	tick();
	ck_assert_uint_eq(sent.count, 1);
	clock_now = 12050;
	tick();
	ck_assert_uint_eq(sent.count, 2);
	ck_assert_str_eq(sent.what[1],
			"W0:c/t/a:{\"count\":2,\"min\":4,\"max\":5.5,\"avg\":4.75,\"sum\":9.5,\"last\":5.5,\"first_ts\":11000,\"last_ts\":11200}");
	ck_assert_uint_eq(C(aggregated), 5);
	ck_assert_uint_eq(C(windows), 2);
	ck_assert_uint_eq(C(dropped_unparsable), 1);
	ck_assert_uint_eq(C(suppressed), 0);
}
END_TEST

/* A message that arrives after its window's end, before the tick, closes it first; emit chooses
 * the values (in the fixed order count, min, max, avg, sum, last); field names the number. */
START_TEST(test_aggregate_emit_field_and_late_tick)
{
	start("", "  - local: t/#\n    cloud: c/#\n    aggregate: { window: 1m, field: d.v, emit: [max, count] }\n");
	clock_now = 1732900000000ull + 5;
	ck_assert_int_eq(offer("t/a", "{\"d\": {\"v\": -1.5}}"), TAKEN);
	ck_assert_int_eq(offer("t/b", "{\"d\": {\"v\": 7}}"), TAKEN);
	clock_now = 1732900020000ull; /* the next minute: 1732900020000 is a multiple of 60000 */
	ck_assert_int_eq(offer("t/a", "{\"d\": {\"v\": 2}}"), TAKEN);
	ck_assert_uint_eq(sent.count, 1);
	ck_assert_str_eq(sent.what[0],
			"W0:c/t/a:{\"count\":1,\"max\":-1.5,\"first_ts\":1732900000005,\"last_ts\":1732900000005}");
	tick(); /* t/b's window has closed too */
	ck_assert_uint_eq(sent.count, 2);
	ck_assert_str_eq(sent.what[1], "W0:c/t/b:{\"count\":1,\"max\":7,\"first_ts\":1732900000005,\"last_ts\":1732900000005}");
	fb_reduce_flush(red); /* the open one, at a stop */
	ck_assert_uint_eq(sent.count, 3);
	ck_assert_str_eq(sent.what[2], "W0:c/t/a:{\"count\":1,\"max\":2,\"first_ts\":1732900020000,\"last_ts\":1732900020000}");
	ck_assert_uint_eq(C(windows), 3);
}
END_TEST

/* ---- the LRU bound ---------------------------------------------------------------------------- */

/* max_tracked_topics 100 and 1,000 topics, each with one message sent and one held: 100 stay
 * tracked, 900 are evicted and each evicted held message is sent at its eviction; the flush sends
 * the rest: every held message exactly once. */
START_TEST(test_lru_bound_throttle)
{
	char t[32], p[32];
	unsigned seen[1000] = { 0 };

	start("  max_tracked_topics: 100\n", "  - local: t/#\n    cloud: c/#\n    min_interval: 1h\n");
	clock_now = 7000;
	for(unsigned i = 0; i < 1000; i++){
		snprintf(t, sizeof(t), "t/%u", i);
		snprintf(p, sizeof(p), "%u-first", i);
		ck_assert_int_eq(offer(t, p), SEND);
		snprintf(p, sizeof(p), "%u-held", i);
		ck_assert_int_eq(offer(t, p), FB_REDUCE_HOLD);
		ck_assert_uint_le(fb_reduce_tracked(red, FB_REDUCE_THROTTLE), 100);
	}
	ck_assert_uint_eq(fb_reduce_tracked(red, FB_REDUCE_THROTTLE), 100);
	ck_assert_uint_eq(C(reduce_evicted), 900);
	ck_assert_uint_eq(sent.count, 900);
	fb_reduce_flush(red);
	ck_assert_uint_eq(sent.count, 1000);
	for(size_t k = 0; k < sent.count; k++){
		unsigned i;
		ck_assert_int_eq(sscanf(sent.what[k], "R:%u-held", &i), 1);
		ck_assert_uint_lt(i, 1000);
		seen[i]++;
		if(k < 900){
			ck_assert_uint_eq(i, k); /* least recently used first */
		}
	}
	for(unsigned i = 0; i < 1000; i++){
		ck_assert_uint_eq(seen[i], 1);
	}
	ck_assert_uint_eq(C(suppressed), 0);
}
END_TEST

START_TEST(test_lru_bound_aggregate)
{
	char t[32], want[128];

	start("  max_tracked_topics: 100\n", "  - local: t/#\n    cloud: c/#\n    aggregate: { window: 1h, emit: [count, sum] }\n");
	clock_now = 3600000;
	for(unsigned i = 0; i < 1000; i++){
		snprintf(t, sizeof(t), "t/%u", i);
		ck_assert_int_eq(offer(t, "2"), TAKEN);
		ck_assert_int_eq(offer(t, "3"), TAKEN);
	}
	ck_assert_uint_eq(fb_reduce_tracked(red, FB_REDUCE_AGGREGATE), 100);
	ck_assert_uint_eq(C(reduce_evicted), 900);
	ck_assert_uint_eq(sent.count, 900);
	clock_now = 7200000;
	tick();
	ck_assert_uint_eq(sent.count, 1000);
	for(unsigned i = 0; i < 1000; i++){
		snprintf(want, sizeof(want), "W0:c/t/%u:{\"count\":2,\"sum\":5,\"first_ts\":3600000,\"last_ts\":3600000}", i);
		ck_assert_str_eq(sent.what[i], want);
	}
	ck_assert_uint_eq(C(aggregated), 2000);
	ck_assert_uint_eq(C(windows), 1000);
	ck_assert_uint_eq(fb_reduce_tracked(red, FB_REDUCE_AGGREGATE), 0);
}
END_TEST

/* Rules without these options keep no state. */
START_TEST(test_no_state_without_options)
{
	const struct fb_reduce_sink sink = { sink_record, sink_window, NULL };
	struct fb_reduce *none = (struct fb_reduce *)&none;

	start("", "  - local: t/#\n    cloud: c/#\n    min_interval: 1s\n  - local: u/#\n    cloud: d/#\n");
	ck_assert(!fb_reduce_active(&cfg->e2c[1].reduce));
	fb_config_free(cfg);
	unlink(cfg_path);
	snprintf(cfg_path, sizeof(cfg_path), "/tmp/fb-test-reduce-XXXXXX");
	FILE *f;
	ck_assert_int_ge(mkstemp(cfg_path), 0);
	ck_assert_ptr_nonnull(f = fopen(cfg_path, "w"));
	fprintf(f, "site_id: s\ncloud:\n  endpoints: [mqtts://c]\nspool:\n  path: /tmp/x\nedge_to_cloud:\n"
			"  - local: u/#\n    cloud: d/#\n");
	fclose(f);
	ck_assert_int_eq(fb_config_load(cfg_path, &lg, &cfg), 0);
	ck_assert_int_eq(fb_reduce_new(cfg, &sink, &ctr, &none), 0);
	ck_assert_ptr_null(none);
	fb_reduce_free(NULL);
}
END_TEST

/* ---- the per-tick budget ---------------------------------------------------------------------- */

static bool tick_more(void)
{
	return fb_reduce_tick_at(red, clock_now, clock_now);
}

/* The windows of many topics end together (at the same multiple of the window): a tick sends at
 * most FB_REDUCE_BUDGET summaries and says more are due; the next ticks go on where it stopped,
 * each window once, in the order they opened. */
START_TEST(test_aggregate_windows_over_the_budget)
{
	const unsigned n = 3 * FB_REDUCE_BUDGET + 100;
	char t[32], want[128];

	start("", "  - local: t/#\n    cloud: c/#\n    aggregate: { window: 1s, emit: [count] }\n");
	clock_now = 10000;
	for(unsigned i = 0; i < n; i++){
		snprintf(t, sizeof(t), "t/%u", i);
		ck_assert_int_eq(offer(t, "1"), TAKEN);
	}
	clock_now = 10999;
	ck_assert(!tick_more());
	ck_assert_uint_eq(sent.count, 0);
	clock_now = 11000;
	for(unsigned k = 1; k <= 3; k++){
		ck_assert(tick_more());
		ck_assert_uint_eq(sent.count, k * FB_REDUCE_BUDGET);
	}
	ck_assert(!tick_more());
	ck_assert_uint_eq(sent.count, n);
	for(unsigned i = 0; i < n; i++){
		snprintf(want, sizeof(want), "W0:c/t/%u:{\"count\":1,\"first_ts\":10000,\"last_ts\":10000}", i);
		ck_assert_str_eq(sent.what[i], want);
	}
	ck_assert_uint_eq(C(windows), n);
	ck_assert_uint_eq(fb_reduce_tracked(red, FB_REDUCE_AGGREGATE), 0);
	ck_assert(!tick_more());
	ck_assert_uint_eq(sent.count, n);
}
END_TEST

/* Offers "<prefix><i>" on t/<i> for I below N with rule 0 and asserts the verdict. */
static void offer_each(unsigned n, const char *prefix, int verdict)
{
	char t[32], p[32];

	for(unsigned i = 0; i < n; i++){
		snprintf(t, sizeof(t), "t/%u", i);
		snprintf(p, sizeof(p), "%s%u", prefix, i);
		ck_assert_int_eq(offer(t, p), verdict);
	}
}

/* Asserts that sent.what[FROM..FROM+N) are "R:<prefix><i>" for every I below N, each once. */
static void assert_each_once(size_t from, unsigned n, const char *prefix)
{
	static bool seen[4096];
	size_t plen = strlen(prefix);

	ck_assert_uint_le(n, 4096);
	memset(seen, 0, sizeof(seen));
	for(size_t k = from; k < from + n; k++){
		unsigned i;

		ck_assert_int_eq(strncmp(sent.what[k], "R:", 2), 0);
		ck_assert_int_eq(strncmp(sent.what[k] + 2, prefix, plen), 0);
		ck_assert_int_eq(sscanf(sent.what[k] + 2 + plen, "%u", &i), 1);
		ck_assert_uint_lt(i, n);
		ck_assert(!seen[i]);
		seen[i] = true;
	}
}

/* Held messages of many topics due together: at most FB_REDUCE_BUDGET per tick, on the wheel's
 * slot by slot path and on its path for a tick more than a turn late alike; none lost or sent
 * twice. Held messages come before windows; the windows get what the budget leaves. */
START_TEST(test_held_messages_over_the_budget)
{
	const unsigned n = FB_REDUCE_BUDGET + 44;

	start("", "  - local: t/#\n    cloud: c/#\n    min_interval: 1s\n"
			"  - local: a/#\n    cloud: c/#\n    aggregate: { window: 1s, emit: [count] }\n");
	clock_now = 100000;
	ck_assert(!tick_more());
	offer_each(n, "a", SEND);
	ck_assert_uint_eq(sent.count, 0); /* SEND: the caller stages them */
	clock_now = 100100;
	offer_each(n, "b", FB_REDUCE_HOLD); /* due at 101000 */
	clock_now = 101020;
	ck_assert(tick_more());
	ck_assert_uint_eq(sent.count, FB_REDUCE_BUDGET);
	ck_assert(!tick_more());
	ck_assert_uint_eq(sent.count, n);
	assert_each_once(0, n, "b");

	/* more than a turn of the wheel (16 s) late */
	clock_now = 101100;
	offer_each(n, "c", FB_REDUCE_HOLD); /* due at 102020 */
	clock_now = 140000;
	ck_assert(tick_more());
	ck_assert_uint_eq(sent.count, n + FB_REDUCE_BUDGET);
	ck_assert(!tick_more());
	ck_assert_uint_eq(sent.count, 2 * n);
	assert_each_once(n, n, "c");

	/* 200 held messages and 200 windows due at once: 256, then the other 144 windows */
	clock_now = 150000;
	offer_each(200, "d", SEND);
	clock_now = 150100;
	offer_each(200, "e", FB_REDUCE_HOLD); /* due at 151000 */
	for(unsigned i = 0; i < 200; i++){
		char t[32];

		snprintf(t, sizeof(t), "a/%u", i);
		ck_assert_int_eq(offer_rule(1, t, "2"), TAKEN); /* the window [150000, 151000) */
	}
	clock_now = 151020;
	ck_assert(tick_more());
	ck_assert_uint_eq(sent.count, 2 * n + FB_REDUCE_BUDGET);
	assert_each_once(2 * n, 200, "e");
	for(size_t k = 2 * n + 200; k < sent.count; k++){
		ck_assert_int_eq(strncmp(sent.what[k], "W1:c/a/", 7), 0);
	}
	ck_assert(!tick_more());
	ck_assert_uint_eq(sent.count, 2 * n + 400);
	ck_assert_uint_eq(C(windows), 200);
	ck_assert_uint_eq(fb_reduce_tracked(red, FB_REDUCE_AGGREGATE), 0);
}
END_TEST

/* No room in the channel (the sink says -EAGAIN when asked to wait): the tick keeps what is due,
 * sends, counts and loses nothing, and tries again; once there is room every held message and
 * window goes, once. A capture on a topic whose closed window waits is not taken (-EAGAIN: the
 * caller turns it away, as any capture while the channel is busy), and the window stays; a flush
 * (a stop) does not wait. */
START_TEST(test_no_room_keeps_what_is_due)
{
	char t[32];

	start("", "  - local: t/#\n    cloud: c/#\n    min_interval: 1s\n"
			"  - local: a/#\n    cloud: c/#\n    aggregate: { window: 1s, emit: [count] }\n");
	clock_now = 100000;
	ck_assert(!tick_more());
	offer_each(10, "a", SEND);
	clock_now = 100100;
	offer_each(10, "b", FB_REDUCE_HOLD); /* due at 101000 */
	for(unsigned i = 0; i < 11; i++){
		snprintf(t, sizeof(t), "a/%u", i);
		ck_assert_int_eq(offer_rule(1, t, "2"), TAKEN); /* the window [100000, 101000) */
	}
	room = false;
	clock_now = 101020;
	ck_assert(tick_more());
	ck_assert(tick_more());
	ck_assert_uint_eq(sent.count, 0);
	ck_assert_uint_eq(no_room_taken, 0);
	ck_assert_uint_eq(C(windows), 0);
	ck_assert_uint_eq(fb_reduce_tracked(red, FB_REDUCE_AGGREGATE), 11);
	/* a capture on a/10: its closed window stays, the capture is not taken */
	ck_assert_int_eq(fb_reduce_offer(red, 1, "a/10", "c/a/10", "3", 1, clock_now, clock_now), -EAGAIN);
	ck_assert_uint_eq(no_room_taken, 0);
	ck_assert_uint_eq(C(aggregated), 11);
	room = true;
	clock_now = 101030;
	ck_assert(!tick_more());
	ck_assert_uint_eq(sent.count, 21);
	assert_each_once(0, 10, "b");
	for(unsigned i = 0; i < 11; i++){
		char want[96];

		snprintf(want, sizeof(want), "W1:c/a/%u:{\"count\":1,\"first_ts\":100100,\"last_ts\":100100}", i);
		ck_assert_str_eq(sent.what[10 + i], want);
	}
	ck_assert_uint_eq(C(windows), 11);
	ck_assert_uint_eq(fb_reduce_tracked(red, FB_REDUCE_AGGREGATE), 0);
	/* with room, a capture on a topic whose window closed sends it first, at once */
	ck_assert_int_eq(offer_rule(1, "a/20", "4"), TAKEN); /* the window [101000, 102000) */
	clock_now = 101500;
	offer_each(10, "c", FB_REDUCE_HOLD); /* due at 102030 */
	clock_now = 102010;
	ck_assert_int_eq(offer_rule(1, "a/20", "5"), TAKEN);
	ck_assert_uint_eq(sent.count, 22);
	ck_assert_str_eq(sent.what[21], "W1:c/a/20:{\"count\":1,\"first_ts\":101030,\"last_ts\":101030}");
	room = false;
	fb_reduce_flush(red);
	ck_assert_uint_eq(no_room_taken, 11); /* 10 held, a/20's window */
	ck_assert_uint_eq(sent.count, 22);
	ck_assert(!tick_more());
}
END_TEST

/* No room for a held message that is due, for a second, with fb_reduce_tick() (the real clocks)
 * called every millisecond as the broker's timer would: it asks the sink again after 1, 2, 4 ...
 * 64 ms, not at every call, and fb_reduce_pause_ms() tells the broker how long to sleep; once
 * there is room the message goes, once. Before, it asked every millisecond (about 900 times). */
START_TEST(test_no_room_is_asked_again_less_and_less_often)
{
	uint64_t t0;

	start("", "  - local: t/#\n    cloud: c/#\n    min_interval: 100ms\n");
	clock_now = fb_mono_ms();
	ck_assert_int_eq(offer("t/a", "m1"), FB_REDUCE_SEND);
	ck_assert_int_eq(offer("t/a", "m2"), FB_REDUCE_HOLD); /* due in 100 ms */
	room = false;
	usleep(150 * 1000);
	for(t0 = fb_mono_ms(); fb_mono_ms() - t0 < 1000;){
		ck_assert(fb_reduce_tick(red));
		usleep(1000);
	}
	ck_assert_msg(no_room_asked >= 8 && no_room_asked <= 30, "asked %u times in 1 s", no_room_asked);
	ck_assert_uint_eq(fb_reduce_pause_ms(red), 64);
	ck_assert_uint_eq(sent.count, 0);
	room = true;
	for(t0 = fb_mono_ms(); fb_reduce_tick(red) && fb_mono_ms() - t0 < 1000;){
		usleep(1000);
	}
	ck_assert(!fb_reduce_tick(red));
	ck_assert_uint_eq(sent.count, 1);
	ck_assert_str_eq(sent.what[0], "R:m2");
	ck_assert_uint_eq(no_room_taken, 0);
}
END_TEST

/* A reload retires the state (fb_reduce_retire()): its ticks send every held message and open
 * window as if due, held messages first, a budget per tick, waiting while there is no room, then
 * say nothing is left. Before, a reload sent them all at once, without waiting. A message on a
 * topic the retired state holds sends that topic's held message or window first, at once
 * (fb_reduce_send_topic()). */
START_TEST(test_retire_sends_everything_a_budget_per_tick)
{
	const unsigned n = 300;
	char t[32], want[96];
	size_t k;

	start("", "  - local: t/#\n    cloud: c/#\n    min_interval: 1s\n"
			"  - local: a/#\n    cloud: c/#\n    aggregate: { window: 10s, emit: [count] }\n");
	clock_now = 100000;
	ck_assert(!tick_more());
	offer_each(n, "a", SEND);
	clock_now = 100100;
	offer_each(n, "b", FB_REDUCE_HOLD); /* due at 101000 */
	for(unsigned i = 0; i < n; i++){
		snprintf(t, sizeof(t), "a/%u", i);
		ck_assert_int_eq(offer_rule(1, t, "2"), TAKEN); /* the window [100000, 110000) */
	}
	clock_now = 100200;
	ck_assert(!tick_more());
	ck_assert_uint_eq(sent.count, 0);

	/* a message under the new rules on t/5 and on a/7: what the old state holds there goes first */
	fb_reduce_send_topic(red, "t/5");
	fb_reduce_send_topic(red, "a/7");
	fb_reduce_send_topic(red, "x/none");
	ck_assert_uint_eq(sent.count, 2);
	ck_assert_str_eq(sent.what[0], "R:b5");
	ck_assert_str_eq(sent.what[1], "W1:c/a/7:{\"count\":1,\"first_ts\":100100,\"last_ts\":100100}");
	ck_assert_uint_eq(fb_reduce_tracked(red, FB_REDUCE_AGGREGATE), n - 1);

	fb_reduce_retire(red);
	room = false;
	ck_assert(tick_more());
	ck_assert(tick_more());
	/* no room: what t/6 holds stays, for the caller to turn the new message away */
	ck_assert_int_eq(fb_reduce_send_topic(red, "t/6"), -EAGAIN);
	ck_assert_uint_eq(sent.count, 2);
	ck_assert_uint_eq(no_room_taken, 0);
	room = true;
	ck_assert(tick_more());
	ck_assert_uint_eq(sent.count, 2 + FB_REDUCE_BUDGET);
	ck_assert(tick_more());
	ck_assert_uint_eq(sent.count, 2 + 2 * FB_REDUCE_BUDGET);
	ck_assert(!tick_more());
	ck_assert_uint_eq(sent.count, 2 * n);
	/* the held ones (all but b5), each once, then the windows (all but a/7) in the order they opened */
	for(k = 2; k < 2 + n - 1; k++){
		ck_assert_int_eq(strncmp(sent.what[k], "R:b", 3), 0);
		ck_assert_str_ne(sent.what[k], "R:b5");
		for(size_t j = 2; j < k; j++){
			ck_assert_str_ne(sent.what[j], sent.what[k]);
		}
	}
	for(unsigned i = 0; i < n; i++){
		if(i == 7){
			continue;
		}
		snprintf(want, sizeof(want), "W1:c/a/%u:{\"count\":1,\"first_ts\":100100,\"last_ts\":100100}", i);
		ck_assert_str_eq(sent.what[k++], want);
	}
	ck_assert_uint_eq(C(windows), n);
	ck_assert_uint_eq(fb_reduce_tracked(red, FB_REDUCE_AGGREGATE), 0);
	ck_assert_uint_eq(no_room_taken, 0);
	ck_assert(!tick_more());
	ck_assert_uint_eq(sent.count, 2 * n);
}
END_TEST

static Suite *reduce_suite(void)
{
	Suite *s = suite_create("reduce");
	TCase *tc = tcase_create("reduce");

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, test_value_extraction);
	tcase_add_test(tc, test_min_interval_thins_and_keeps_the_last);
	tcase_add_test(tc, test_min_interval_per_topic);
	tcase_add_test(tc, test_min_interval_quiet_and_flush);
	tcase_add_test(tc, test_on_change_payloads);
	tcase_add_test(tc, test_deadband_plain_numbers);
	tcase_add_test(tc, test_deadband_json_field);
	tcase_add_test(tc, test_on_change_json_field);
	tcase_add_test(tc, test_heartbeat_boundaries);
	tcase_add_test(tc, test_deadband_then_min_interval);
	tcase_add_test(tc, test_on_change_refused_is_not_the_last);
	tcase_add_test(tc, test_deadband_refused_is_not_the_last);
	tcase_add_test(tc, test_heartbeat_refused_is_still_due);
	tcase_add_test(tc, test_min_interval_refused_starts_no_interval);
	tcase_add_test(tc, test_refused_keeps_the_held_one);
	tcase_add_test(tc, test_aggregate_two_windows);
	tcase_add_test(tc, test_aggregate_emit_field_and_late_tick);
	tcase_add_test(tc, test_lru_bound_throttle);
	tcase_add_test(tc, test_lru_bound_aggregate);
	tcase_add_test(tc, test_no_state_without_options);
	tcase_add_test(tc, test_aggregate_windows_over_the_budget);
	tcase_add_test(tc, test_held_messages_over_the_budget);
	tcase_add_test(tc, test_no_room_keeps_what_is_due);
	tcase_add_test(tc, test_no_room_is_asked_again_less_and_less_often);
	tcase_add_test(tc, test_retire_sends_everything_a_budget_per_tick);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(reduce_suite());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
