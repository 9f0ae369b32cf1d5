/* Header values with the capture time: ${captured_at} (RFC 3339 UTC with milliseconds) and
 * ${captured_at_ms} in a rule's headers reach the cloud as the moment the edge captured the
 * message: after its publisher sent it, before the publisher got its PUBACK, also when the message
 * waited in the spool through an outage. Real brokers (the cloud stand-in over TLS, the edge with
 * the plugin). */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mqtt_protocol.h>

#include "common.h"

#define YAML_CAPTURED FBH_YAML_BASE \
	"edge_to_cloud:\n" \
	"  - local: local/telemetry/#\n" \
	"    cloud: edge/${site_id}/telemetry/#\n" \
	"    headers:\n" \
	"      edge-site-id: ${site_id}\n" \
	"      captured-at: ${captured_at}\n" \
	"      captured-ms: ${captured_at_ms}\n" \
	"      note: ${site_id}@${captured_at_ms}/${captured_at}\n"

static uint64_t wall_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_REALTIME, &t);
	return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

/* What the edge sent for message M: the capture time in ms, after checking every header against
 * it (captured-at is the same instant as RFC 3339, formatted here with gmtime_r). */
static uint64_t captured_ms_of(const struct fbh_msg *m)
{
	const char *ms = fbh_msg_user_prop(m, "captured-ms");
	const char *at = fbh_msg_user_prop(m, "captured-at");
	const char *note = fbh_msg_user_prop(m, "note");
	char want[128], *end;
	struct tm tm;
	uint64_t v;
	time_t t;

	ck_assert_ptr_nonnull(ms);
	ck_assert_ptr_nonnull(at);
	ck_assert_ptr_nonnull(note);
	v = strtoull(ms, &end, 10);
	ck_assert_msg(*ms && !*end, "captured-ms '%s' is not a number", ms);
	t = (time_t)(v / 1000);
	ck_assert_ptr_nonnull(gmtime_r(&t, &tm));
	snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
			tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(v % 1000));
	ck_assert_str_eq(at, want);
	snprintf(want, sizeof(want), "site-A@%s/%s", ms, at);
	ck_assert_str_eq(note, want);
	ck_assert_str_eq(fbh_msg_user_prop(m, "edge-site-id"), "site-A");
	/* The publisher's own property of that name is replaced, not repeated: the rule's headers
	 * and the origin marker, in order. */
	ck_assert_uint_eq(m->user_prop_count, 5);
	ck_assert_str_eq(m->user_props[0].name, "edge-site-id");
	ck_assert_str_eq(m->user_props[1].name, "captured-at");
	ck_assert_str_eq(m->user_props[2].name, "captured-ms");
	ck_assert_str_eq(m->user_props[3].name, "note");
	ck_assert_str_eq(m->user_props[4].name, "flowmq-bridge-origin");
	return v;
}

/* Publishes N messages "<PREFIX>i" on local/telemetry/x one at a time, each with a user property
 * captured-at that the rule's header replaces; BEFORE[i] and AFTER[i] get the wall clock before
 * the publish and after its PUBACK. */
static void publish_timed(struct fbh_broker *edge, const char *prefix, size_t n, uint64_t *before, uint64_t *after)
{
	mosquitto_property *props = NULL;
	struct fbh_pub *pub = fbh_pub_connect(edge->port, NULL);

	ck_assert_ptr_nonnull(pub);
	mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "captured-at", "spoofed");
	for(size_t i = 0; i < n; i++){
		char payload[32];
		int len = snprintf(payload, sizeof(payload), "%s%zu", prefix, i);

		before[i] = wall_ms();
		ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/x", payload, len, 1, false, props), 0);
		ck_assert(fbh_pub_wait_all(pub, 10000));
		after[i] = wall_ms();
		/* spread the messages over more than one millisecond each */
		usleep(3000);
	}
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	mosquitto_property_free_all(&props);
	fbh_pub_close(pub);
}

START_TEST(test_captured_at_is_the_capture_time_of_live_messages)
{
	const size_t n = 200;
	uint64_t before[200], after[200], prev = 0;
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "edge/site-A/#", 1);
	ck_assert_ptr_nonnull(sub);
	start_edge(&edge, cloud.port, YAML_CAPTURED, NULL);

	publish_timed(&edge, "m", n, before, after);
	ck_assert(wait_exactly(sub, n, 30000, 500));
	for(size_t i = 0; i < n; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		uint64_t ms = captured_ms_of(m);

		ck_assert_int_eq(payload_index(m, "m"), (long)i);
		ck_assert_msg(before[i] <= ms && ms <= after[i], "message %zu captured at %llu, published in [%llu, %llu]",
				i, (unsigned long long)ms, (unsigned long long)before[i], (unsigned long long)after[i]);
		ck_assert_uint_gt(ms, prev); /* 3 ms apart at least: strictly increasing */
		prev = ms;
	}
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
}
END_TEST

/* Spooled through an outage, a message carries the time it was captured, not the time it was
 * sent: every capture time lies before the cloud came back. */
START_TEST(test_captured_at_survives_the_spool)
{
	const size_t n = 100;
	uint64_t before[100], after[100], back;
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { 0 };
	struct fbh_client_opts so = persistent_sub("cloud-sub-captured");
	struct fbh_sub *sub, *sys;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	co.extra = cloud_persistent_extra(&cloud);
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, "edge/site-A/#", 1);
	ck_assert_ptr_nonnull(sub);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);

	start_edge(&edge, cloud.port, YAML_CAPTURED, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	publish_timed(&edge, "o", n, before, after);
	ck_assert(sys_wait_u64(sys, "spool/messages", n, 10000));
	usleep(1500000);
	back = wall_ms();
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, "edge/site-A/#", 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert(wait_exactly(sub, n, 60000, 500));
	for(size_t i = 0; i < n; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		uint64_t ms = captured_ms_of(m);

		ck_assert_int_eq(payload_index(m, "o"), (long)i);
		ck_assert_msg(before[i] <= ms && ms <= after[i], "message %zu captured at %llu, published in [%llu, %llu]",
				i, (unsigned long long)ms, (unsigned long long)before[i], (unsigned long long)after[i]);
		ck_assert_uint_le(ms + 1500, back);
	}
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	free((char *)co.extra);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("captured");
	TCase *tc = fbh_tcase("captured");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_captured_at_is_the_capture_time_of_live_messages);
	tcase_add_test(tc, test_captured_at_survives_the_spool);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
