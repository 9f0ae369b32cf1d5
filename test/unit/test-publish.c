/* Unit tests (test process) of plugin/broker/publish.c: every status value goes out retained under
 * $SYS/broker/flowmq-bridge/, in this order, with these values; every counter of ipc/counters.h is
 * published under its topic (a new counter adds one line to FB_COUNTERS and one to EXPECTED). */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "publish.h"

struct seen {
	char topic[128];
	char value[300];
	int qos;
	bool retain;
};

static struct seen seen[64];
static size_t n_seen;

static int capture(void *ud, const char *topic, int payloadlen, void *payload, int qos, bool retain,
		mosquitto_property *props)
{
	(void)ud;
	ck_assert_uint_lt(n_seen, 64);
	ck_assert_ptr_null(props);
	snprintf(seen[n_seen].topic, sizeof(seen[n_seen].topic), "%s", topic);
	snprintf(seen[n_seen].value, sizeof(seen[n_seen].value), "%.*s", payloadlen, payload ? (char *)payload : "");
	seen[n_seen].qos = qos;
	seen[n_seen].retain = retain;
	n_seen++;
	free(payload); /* the host owns it on success */
	return 0;
}

START_TEST(test_every_value_is_published_in_order)
{
	static const char *const expected[][2] = {
		{ "state", "connecting" },
		{ "endpoint", "mqtts://cloud.example:8883" },
		{ "spool/messages", "11" },
		{ "spool/bytes", "12" },
		{ "spool/oldest_age_s", "13" },
		{ "edge_to_cloud/forwarded", "1" },
		{ "edge_to_cloud/dropped/full", "2" },
		{ "edge_to_cloud/dropped/expired", "3" },
		{ "edge_to_cloud/dropped/rejected", "4" },
		{ "edge_to_cloud/dropped/filtered", "5" },
		{ "edge_to_cloud/dropped/corrupt", "6" },
		{ "edge_to_cloud/wills", "7" },
		{ "stalls", "8" },
		{ "link_restarts", "9" },
		{ "cloud_to_edge/injected", "10" },
		{ "cloud_to_edge/dropped", "11" },
		{ "reconnects", "12" },
		{ "edge_to_cloud/dropped/unparsable", "13" },
		{ "edge_to_cloud/suppressed", "14" },
		{ "edge_to_cloud/aggregated", "15" },
		{ "edge_to_cloud/windows", "16" },
		{ "edge_to_cloud/evicted", "17" },
		{ "edge_to_cloud/dropped/error", "18" },
		{ "spool/dead", "14" },
		{ "spool/disk_full", "1" },
		{ "last_error", "" },
	};
	struct fb_host host = { .publish = capture };
	struct fb_counters c;
	struct fb_status st;
	uint64_t v = 1;

	memset(&c, 0, sizeof(c));
	memset(&st, 0, sizeof(st));
#define SET(name, topic, desc) atomic_store(&c.name, v++);
	FB_COUNTERS(SET)
#undef SET
	atomic_store(&c.disk_full, 1);
	st.link.state = FB_LINK_CONNECTED; /* the caller's STATE wins */
	snprintf(st.link.endpoint, sizeof(st.link.endpoint), "mqtts://cloud.example:8883");
	st.spool.messages = 11;
	st.spool.bytes = 12;
	st.oldest_age_s = 13;
	st.spool.dead = 14;
	for(unsigned l = 0; l < FB_STATUS_LANES; l++){
		st.lane_messages[l] = 100 + l;
		st.lane_oldest_age_s[l] = l == 3 ? 0 : 200 + l;
	}
	n_seen = 0;
	fb_publish_status(&host, &st, FB_LINK_CONNECTING, &c);
	ck_assert_uint_eq(n_seen, sizeof(expected) / sizeof(expected[0]) + 2 * FB_STATUS_LANES);
	for(unsigned l = 0; l < FB_STATUS_LANES; l++){
		/* After the rest: each lane's depth and oldest age. */
		size_t i = sizeof(expected) / sizeof(expected[0]) + 2 * l;
		char topic[128], value[24];

		snprintf(topic, sizeof(topic), "$SYS/broker/flowmq-bridge/spool/lane/%u/messages", l);
		snprintf(value, sizeof(value), "%u", 100 + l);
		ck_assert_str_eq(seen[i].topic, topic);
		ck_assert_str_eq(seen[i].value, value);
		snprintf(topic, sizeof(topic), "$SYS/broker/flowmq-bridge/spool/lane/%u/oldest_age_s", l);
		snprintf(value, sizeof(value), "%u", l == 3 ? 0 : 200 + l);
		ck_assert_str_eq(seen[i + 1].topic, topic);
		ck_assert_str_eq(seen[i + 1].value, value);
		ck_assert(seen[i].retain && seen[i + 1].retain);
	}
	for(size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++){
		char topic[128];

		snprintf(topic, sizeof(topic), "$SYS/broker/flowmq-bridge/%s", expected[i][0]);
		ck_assert_str_eq(seen[i].topic, topic);
		ck_assert_str_eq(seen[i].value, expected[i][1]);
		ck_assert_int_eq(seen[i].qos, 0);
		ck_assert(seen[i].retain);
	}
}
END_TEST

/* The numeric values exporters read; per-rule values only when they changed, and those of rules a
 * reload removed are cleared. */
static void expect(const char *const (*want)[2], size_t n)
{
	ck_assert_uint_eq(n_seen, n);
	for(size_t i = 0; i < n; i++){
		char topic[128];

		snprintf(topic, sizeof(topic), FB_PUBLISH_PREFIX "%s", want[i][0]);
		ck_assert_str_eq(seen[i].topic, topic);
		ck_assert_str_eq(seen[i].value, want[i][1]);
		ck_assert(seen[i].retain);
		ck_assert_int_eq(seen[i].qos, 0);
	}
	n_seen = 0;
}

START_TEST(test_metrics_for_exporters)
{
	static const char *const first[][2] = {
		{ "connected", "1" },
		{ "cloud_to_edge/pending", "3" },
		{ "uptime_s", "42" },
		{ "last_connect_ts", "1700000000" },
		{ "rules/0/forwarded", "5" },
		{ "rules/0/dropped", "0" },
		{ "rules/1/forwarded", "0" },
		{ "rules/1/dropped", "2" },
	};
	static const char *const second[][2] = {
		{ "connected", "0" },
		{ "cloud_to_edge/pending", "3" },
		{ "uptime_s", "43" },
		{ "last_connect_ts", "1700000000" },
		{ "rules/1/dropped", "3" },
	};
	static const char *const after_reload[][2] = {
		{ "connected", "0" },
		{ "cloud_to_edge/pending", "0" },
		{ "uptime_s", "44" },
		{ "last_connect_ts", "1700000000" },
		{ "rules/1/forwarded", "" },
		{ "rules/1/dropped", "" },
		{ "rules/0/forwarded", "0" },
		{ "rules/0/dropped", "0" },
	};
	struct fb_host host = { .publish = capture };
	struct fb_publish_memo memo = { 0 };
	struct fb_rulectr *r = calloc(1, sizeof(*r));
	struct fb_status st;

	ck_assert_ptr_nonnull(r);
	memset(&st, 0, sizeof(st));
	st.spool.in = 3;
	st.link.last_connect_ts = 1700000000;
	for(int i = 0; i < 5; i++){
		fb_rulectr_inc(&r->rule[0].forwarded);
	}
	fb_rulectr_inc(&r->rule[1].dropped);
	fb_rulectr_inc(&r->rule[1].dropped);
	n_seen = 0;
	ck_assert_int_eq(fb_publish_metrics(&host, &st, FB_LINK_CONNECTED, 42, r, 2, &memo), 0);
	expect(first, sizeof(first) / sizeof(first[0]));
	fb_rulectr_inc(&r->rule[1].dropped);
	ck_assert_int_eq(fb_publish_metrics(&host, &st, FB_LINK_DISCONNECTED, 43, r, 2, &memo), 0);
	expect(second, sizeof(second) / sizeof(second[0]));
	/* A reload leaves one rule: counts start again, rule 1's topics are cleared. */
	fb_rulectr_reset(r);
	fb_publish_memo_reset(&memo);
	st.spool.in = 0;
	ck_assert_int_eq(fb_publish_metrics(&host, &st, FB_LINK_STALLED, 44, r, 1, &memo), 0);
	expect(after_reload, sizeof(after_reload) / sizeof(after_reload[0]));
	fb_publish_memo_free(&memo);
	free(r);
}
END_TEST

START_TEST(test_state_names)
{
	ck_assert_str_eq(fb_status_state_name(FB_LINK_DISCONNECTED), "disconnected");
	ck_assert_str_eq(fb_status_state_name(FB_LINK_CONNECTING), "connecting");
	ck_assert_str_eq(fb_status_state_name(FB_LINK_CONNECTED), "connected");
	ck_assert_str_eq(fb_status_state_name(FB_LINK_STALLED), "stalled");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("publish");
	TCase *tc = tcase_create("status");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_every_value_is_published_in_order);
	tcase_add_test(tc, test_state_names);
	tcase_add_test(tc, test_metrics_for_exporters);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
