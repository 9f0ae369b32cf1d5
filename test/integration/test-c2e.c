/* Test process: cloud to edge: persistent cloud subscriptions, durable receipt, injection, loop
 * prevention. */
#include <glob.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mqtt_protocol.h>

#include "common.h"
#include "../sanitizer/asan.h"

START_TEST(test_command_reaches_local_subscriber_with_properties)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *local, *sys;
	struct fbh_pub *pub;
	mosquitto_property *props = NULL;
	const struct fbh_msg *m;
	char *ct = NULL;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	start_edge(&edge, cloud.port, FBH_YAML_STANDARD, NULL);
	local = fbh_sub_start(edge.port, NULL, "local/commands/#", 1);
	ck_assert_ptr_nonnull(local);
	sys = sys_watch(&edge);
	ck_assert(sys_wait(sys, "state", "connected", 10000));

	mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "issued-by", "ops");
	mosquitto_property_add_string(&props, MQTT_PROP_CONTENT_TYPE, "application/json");
	pub = fbh_pub_connect(cloud.port2, &cloud_tester);
	ck_assert_ptr_nonnull(pub);
	ck_assert_int_ge(fbh_pub_send(pub, "cloud/commands/site-A/line1/stop", "{\"stop\":true}", 13, 1, false, props), 0);
	ck_assert(fbh_pub_wait_all(pub, 10000));
	fbh_pub_close(pub);
	mosquitto_property_free_all(&props);

	ck_assert(wait_exactly(local, 1, 10000, 300));
	m = fbh_sub_msg(local, 0);
	ck_assert_str_eq(m->topic, "local/commands/line1/stop");
	ck_assert_int_eq(m->payloadlen, 13);
	ck_assert_mem_eq(m->payload, "{\"stop\":true}", 13);
	ck_assert_int_eq(m->qos, 1);
	ck_assert_uint_eq(m->user_prop_count, 1);
	ck_assert_str_eq(fbh_msg_user_prop(m, "issued-by"), "ops");
	ck_assert_ptr_nonnull(mosquitto_property_read_string(m->props, MQTT_PROP_CONTENT_TYPE, &ct, false));
	ck_assert_str_eq(ct, "application/json");
	free(ct);
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/injected", 1, 5000));
	fbh_sub_stop(sys);
	fbh_sub_stop(local);
}
END_TEST

START_TEST(test_500_commands_sent_while_edge_down_arrive_in_order)
{
	const size_t n = 500;
	struct fbh_broker cloud, edge;
	struct fbh_client_opts lo = { .client_id = "local-device", .persistent = true, .session_expiry = 3600 };
	struct fbh_sub *local;
	char *extra;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	/* The edge keeps its local sessions across its restart, so the device's session catches
	 * what is injected before it reconnects. */
	extra = fbh_strdupf("persistence true\npersistence_location %s/\nautosave_interval 0\nmax_queued_messages 0\n", edge.dir);
	start_edge(&edge, cloud.port, FBH_YAML_STANDARD, extra);
	ck_assert(fbh_wait_log(&edge, "connected to", 10000));
	local = fbh_sub_start(edge.port, &lo, "local/commands/#", 1);
	ck_assert_ptr_nonnull(local);
	fbh_sub_stop(local);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);

	/* The cloud queues them in the bridge's persistent session. */
	ck_assert_int_eq(fbh_publish(cloud.port2, &cloud_tester, "cloud/commands/site-A/set", "c", n, 1, NULL, 30000), (long)n);

	start_edge(&edge, cloud.port, FBH_YAML_STANDARD, extra);
	local = fbh_sub_start(edge.port, &lo, "local/commands/#", 1);
	ck_assert_ptr_nonnull(local);
	ck_assert(wait_exactly(local, n, 30000, 500));
	for(size_t i = 0; i < n; i++){
		const struct fbh_msg *m = fbh_sub_msg(local, i);
		ck_assert_str_eq(m->topic, "local/commands/set");
		ck_assert_int_eq(payload_index(m, "c"), (long)i);
	}
	fbh_sub_stop(local);
	free(extra);
}
END_TEST

START_TEST(test_sigkill_after_delivery_every_command_is_injected)
{
	const size_t n = 3000;
	struct fbh_broker cloud, edge;
	struct fbh_sub *before, *after;
	struct fbh_pub *pub;
	char *seen = calloc(n, 1);
	size_t distinct = 0;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	start_edge(&edge, cloud.port, FBH_YAML_STANDARD, NULL);
	ck_assert(fbh_wait_log(&edge, "connected to", 10000));
	/* QoS 0 and no acknowledgements to read: whatever the edge broker wrote to this subscriber
	 * before it was killed still reaches it (a broker's in-memory queue for a slower QoS 1
	 * subscriber would die with it, which is Mosquitto's local delivery, not the bridge). */
	before = fbh_sub_start(edge.port, NULL, "local/commands/#", 0);
	ck_assert_ptr_nonnull(before);

	/* Retained commands on distinct topics: after the restart the edge's retained store shows
	 * every command injected since then, whenever the subscriber connects. */
	pub = fbh_pub_connect(cloud.port2, &cloud_tester);
	ck_assert_ptr_nonnull(pub);
	/* Commands stream in; the edge is killed while it is taking them, then the rest are sent
	 * while it is down. */
	for(size_t i = 0; i < n; i++){
		char topic[64], payload[16];
		int len = snprintf(payload, sizeof(payload), "r%zu", i);
		snprintf(topic, sizeof(topic), "cloud/commands/site-A/c%zu", i);
		ck_assert_int_ge(fbh_pub_send(pub, topic, payload, len, 1, true, NULL), 0);
		if(edge.pid > 0 && i % 50 == 49){
			usleep(5000);
			/* From the middle of the stream on, give a slow edge (a sanitizer build, a loaded
			 * machine) time to deliver its first 300, so that the kill still comes mid-stream. */
			if(i >= n / 2){
				fbh_sub_wait_count(before, 300, 30000);
			}
			if(fbh_sub_count(before) >= 300){
				fbh_broker_kill(&edge);
			}
		}
	}
	ck_assert_int_eq(edge.pid > 0, 0); /* the kill did happen in the middle of the stream */
	ck_assert(fbh_pub_wait_all(pub, 30000));
	fbh_pub_close(pub);

	start_edge(&edge, cloud.port, FBH_YAML_STANDARD, NULL);
	after = fbh_sub_start(edge.port, NULL, "local/commands/#", 1);
	ck_assert_ptr_nonnull(after);
	for(int tries = 0; tries < 300 && distinct < n; tries++){
		struct fbh_sub *subs[2] = { before, after };
		distinct = 0;
		memset(seen, 0, n);
		for(int s = 0; s < 2; s++){
			for(size_t i = 0; i < fbh_sub_count(subs[s]); i++){
				const struct fbh_msg *m = fbh_sub_msg(subs[s], i);
				long k = payload_index(m, "r");
				ck_assert(k >= 0 && (size_t)k < n);
				char want[64];
				snprintf(want, sizeof(want), "local/commands/c%ld", k);
				ck_assert_str_eq(m->topic, want);
				if(!seen[k]){
					seen[k] = 1;
					distinct++;
				}
			}
		}
		usleep(100000);
	}
	fprintf(stderr, "c2e sigkill: %zu before the kill, %zu after, %zu distinct of %zu\n",
			fbh_sub_count(before), fbh_sub_count(after), distinct, n);
	ck_assert_uint_eq(distinct, n);
	fbh_sub_stop(before);
	fbh_sub_stop(after);
	free(seen);
}
END_TEST

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

START_TEST(test_injection_latency_on_idle_broker)
{
	const size_t n = 200;
	struct fbh_broker cloud, edge;
	struct fbh_sub *local;
	struct fbh_pub *pub;
	double lat[200];

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	start_edge(&edge, cloud.port, FBH_YAML_STANDARD, NULL);
	ck_assert(fbh_wait_log(&edge, "connected to", 10000));
	local = fbh_sub_start(edge.port, NULL, "local/commands/#", 1);
	pub = fbh_pub_connect(cloud.port2, &cloud_tester);
	ck_assert_ptr_nonnull(local);
	ck_assert_ptr_nonnull(pub);
	usleep(300000);
	for(size_t i = 0; i < n; i++){
		char payload[16];
		int len = snprintf(payload, sizeof(payload), "l%zu", i);
		double t0 = now_s();
		ck_assert_int_ge(fbh_pub_send(pub, "cloud/commands/site-A/ping", payload, len, 1, false, NULL), 0);
		ck_assert_uint_ge(fbh_sub_wait_count(local, i + 1, 5000), i + 1);
		lat[i] = (now_s() - t0) * 1000.0;
		ck_assert_int_eq(payload_index(fbh_sub_msg(local, i), "l"), (long)i);
		usleep(20000 + (useconds_t)(i * 7919 % 30000)); /* idle between commands, varied phase */
	}
	qsort(lat, n, sizeof(lat[0]), cmp_double);
	fprintf(stderr, "cloud-to-edge latency on an idle broker over %zu commands: p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
			n, lat[n / 2], lat[n * 99 / 100], lat[n - 1]);
	ck_assert_msg(lat[n * 99 / 100] < 50.0, "p99 %.2f ms", lat[n * 99 / 100]);
	fbh_pub_close(pub);
	fbh_sub_stop(local);
}
END_TEST

/* A command larger than half the hand-over ring (8 MiB) travels through a file of its own: it
 * arrives with its exact bytes, in order with the small one after it, and the file is gone. */
START_TEST(test_command_larger_than_the_ring_arrives_whole)
{
	const size_t big_len = 6u << 20;
	struct fbh_broker cloud, edge;
	struct fbh_sub *local, *sys;
	struct fbh_pub *pub;
	uint8_t *big = malloc(big_len);
	char *pattern;
	glob_t g;

	ck_assert_ptr_nonnull(big);
	for(size_t i = 0; i < big_len; i++){
		big[i] = (uint8_t)(i * 7 + i / 4096);
	}
	start_commands(&cloud, &edge, &local, &sys);

	pub = fbh_pub_connect(cloud.port2, &cloud_tester);
	ck_assert_ptr_nonnull(pub);
	ck_assert_int_ge(fbh_pub_send(pub, "cloud/commands/site-A/firmware", big, (int)big_len, 1, false, NULL), 0);
	ck_assert_int_ge(fbh_pub_send(pub, "cloud/commands/site-A/after", "a", 1, 1, false, NULL), 0);
	ck_assert(fbh_pub_wait_all(pub, 30000));
	fbh_pub_close(pub);

	ck_assert(wait_exactly(local, 2, 30000, 300));
	ck_assert_str_eq(fbh_sub_msg(local, 0)->topic, "local/commands/firmware");
	ck_assert_int_eq(fbh_sub_msg(local, 0)->payloadlen, (int)big_len);
	ck_assert(memcmp(fbh_sub_msg(local, 0)->payload, big, big_len) == 0);
	ck_assert_str_eq(fbh_sub_msg(local, 1)->topic, "local/commands/after");
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/injected", 2, 5000));
	pattern = fbh_strdupf("%s/spool/flowmq-c2e-*", edge.dir);
	ck_assert_int_eq(glob(pattern, 0, NULL, &g), GLOB_NOMATCH);
	free(pattern);
	free(big);
	fbh_sub_stop(sys);
	fbh_sub_stop(local);
}
END_TEST

START_TEST(test_unmapped_oversize_and_echo_are_dropped_and_counted)
{
	struct fbh_broker cloud, edge;
	struct fbh_client_opts stale = {
		.client_id = "edge-site-A", .username = FBH_EDGE_USER, .password = FBH_EDGE_PASSWORD,
		.persistent = true, .session_expiry = 3600,
	};
	struct fbh_sub *old, *local, *sys;
	struct fbh_pub *pub;
	mosquitto_property *echo = NULL;
	char big[2048];

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	/* The bridge's persistent session holds a subscription no rule maps any more. */
	old = fbh_sub_start(cloud.port2, &stale, "edge/site-A/unmapped/#", 1);
	ck_assert_ptr_nonnull(old);
	fbh_sub_stop(old);

	start_edge(&edge, cloud.port, FBH_YAML_BASE FBH_YAML_E2C_RULES
			"cloud_to_edge:\n"
			"  - cloud: cloud/commands/${site_id}/#\n"
			"    local: local/commands/#\n"
			"    max_payload: 1KiB\n", NULL);
	local = fbh_sub_start(edge.port, NULL, "#", 1);
	sys = sys_watch(&edge);
	ck_assert(sys_wait(sys, "state", "connected", 10000));

	memset(big, 'B', sizeof(big));
	mosquitto_property_add_string_pair(&echo, MQTT_PROP_USER_PROPERTY, "flowmq-bridge-origin", "site-A");
	pub = fbh_pub_connect(cloud.port2, &cloud_tester);
	ck_assert_int_ge(fbh_pub_send(pub, "edge/site-A/unmapped/x", "u", 1, 1, false, NULL), 0);
	ck_assert_int_ge(fbh_pub_send(pub, "cloud/commands/site-A/big", big, sizeof(big), 1, false, NULL), 0);
	ck_assert_int_ge(fbh_pub_send(pub, "cloud/commands/site-A/echo", "e", 1, 1, false, echo), 0);
	ck_assert_int_ge(fbh_pub_send(pub, "cloud/commands/site-A/ok", "k", 1, 1, false, NULL), 0);
	ck_assert(fbh_pub_wait_all(pub, 10000));
	fbh_pub_close(pub);
	mosquitto_property_free_all(&echo);

	ck_assert(sys_wait_u64(sys, "cloud_to_edge/injected", 1, 10000));
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/dropped", 3, 10000));
	{
		size_t cmds = 0;
		for(size_t i = 0; i < fbh_sub_count(local); i++){
			const struct fbh_msg *m = fbh_sub_msg(local, i);
			if(strncmp(m->topic, "$SYS", 4)){
				ck_assert_str_eq(m->topic, "local/commands/ok");
				ck_assert_str_eq(m->payload, "k");
				cmds++;
			}
		}
		ck_assert_uint_eq(cmds, 1);
	}
	ck_assert(fbh_broker_log_contains(&edge, "no cloud_to_edge rule matches"));
	ck_assert(fbh_broker_log_contains(&edge, "payload larger than max_payload"));
	ck_assert(fbh_broker_log_contains(&edge, "origin marker"));
	fbh_sub_stop(sys);
	fbh_sub_stop(local);
}
END_TEST

START_TEST(test_retained_cloud_message_stays_retained_locally)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sys, *late;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	start_edge(&edge, cloud.port, FBH_YAML_STANDARD, NULL);
	sys = sys_watch(&edge);
	ck_assert(sys_wait(sys, "state", "connected", 10000));
	{
		struct fbh_pub *pub = fbh_pub_connect(cloud.port2, &cloud_tester);
		ck_assert_int_ge(fbh_pub_send(pub, "cloud/commands/site-A/config", "v2", 2, 1, true, NULL), 0);
		ck_assert(fbh_pub_wait_all(pub, 10000));
		fbh_pub_close(pub);
	}
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/injected", 1, 10000));
	/* A device that subscribes later gets it as a retained message. */
	late = fbh_sub_start(edge.port, NULL, "local/commands/config", 1);
	ck_assert(wait_exactly(late, 1, 5000, 200));
	ck_assert_str_eq(fbh_sub_msg(late, 0)->payload, "v2");
	ck_assert(fbh_sub_msg(late, 0)->retain);
	fbh_sub_stop(late);
	fbh_sub_stop(sys);
}
END_TEST

/* Sends commands "c<FROM>" .. "c<TO - 1>" from the cloud, all acknowledged there. */
static void send_commands(struct fbh_broker *cloud, size_t from, size_t to)
{
	struct fbh_pub *pub = fbh_pub_connect(cloud->port2, &cloud_tester);

	ck_assert_ptr_nonnull(pub);
	for(size_t i = from; i < to; i++){
		char payload[16];
		int len = snprintf(payload, sizeof(payload), "c%zu", i);

		ck_assert_int_ge(fbh_pub_send(pub, "cloud/commands/site-A/x", payload, len, 1, false, NULL), 0);
	}
	ck_assert(fbh_pub_wait_all(pub, 10000));
	fbh_pub_close(pub);
}

/* The link process killed while spool "in" is empty (every command injected and deleted): the
 * next one goes on numbering "in" above what the broker's ring has seen, so the commands sent
 * after the restart are injected, in order, each once. Before the fix, a spool "in" found empty
 * numbered from 1 again, below the ring's marks: they were taken as pushed and released already,
 * and deleted without being injected (3 of 3 lost, no count, no log line). */
START_TEST(test_commands_after_a_restart_with_nothing_waiting_arrive)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *local, *sys;

	start_commands(&cloud, &edge, &local, &sys);
	send_commands(&cloud, 0, 5);
	ck_assert(wait_exactly(local, 5, 10000, 300));
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/pending", 0, 10000));
	fbh_broker_log_mark(&edge);
	ck_assert_int_eq(kill(link_pid_wait(edge.pid), SIGKILL), 0);
	ck_assert(fbh_wait_log(&edge, "restarting the link process", 30000));
	ck_assert(fbh_wait_log(&edge, "connected to", 30000));
	send_commands(&cloud, 5, 8);
	ck_assert_msg(wait_exactly(local, 8, 10000, 1000), "%zu of 8 arrived", fbh_sub_count(local));
	for(size_t i = 0; i < 8; i++){
		const struct fbh_msg *m = fbh_sub_msg(local, i);

		ck_assert_str_eq(m->topic, "local/commands/x");
		ck_assert_int_eq(payload_index(m, "c"), (long)i);
	}
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/injected", 8, 5000));
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/dropped", 0, 5000));
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/pending", 0, 10000));
	fbh_sub_stop(sys);
	fbh_sub_stop(local);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("c2e");
	TCase *tc = fbh_tcase("cloud_to_edge");

	tcase_set_timeout(tc, 180);
	tcase_add_test(tc, test_command_reaches_local_subscriber_with_properties);
	tcase_add_test(tc, test_command_larger_than_the_ring_arrives_whole);
	tcase_add_test(tc, test_500_commands_sent_while_edge_down_arrive_in_order);
	tcase_add_test(tc, test_sigkill_after_delivery_every_command_is_injected);
	tcase_add_test(tc, test_commands_after_a_restart_with_nothing_waiting_arrive);
#if FB_ASAN
	/* A latency bound measured with ASan's allocator and the broker's slow unwinder (see
	 * meson.build) tells nothing about the shipped plugin. */
	printf("SKIP: test_injection_latency_on_idle_broker: a latency bound is meaningless in a "
			"sanitizer build\n");
	(void)test_injection_latency_on_idle_broker;
#endif
	tcase_add_test(tc, test_unmapped_oversize_and_echo_are_dropped_and_counted);
	tcase_add_test(tc, test_retained_cloud_message_stays_retained_locally);
	suite_add_tcase(s, tc);
#if !FB_ASAN
	/* The latency bound: run alone (tag "alone", see meson.build), the other cases beside other
	 * tests. */
	tc = fbh_tcase("latency");
	tcase_set_timeout(tc, 180);
	tcase_set_tags(tc, FBH_TAG_ALONE);
	tcase_add_test(tc, test_injection_latency_on_idle_broker);
	suite_add_tcase(s, tc);
#endif
	return fbh_run(s);
}
