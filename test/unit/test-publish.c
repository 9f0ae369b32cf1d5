/* Unit tests of plugin/broker/publish.c: every status value goes out retained under
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
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
