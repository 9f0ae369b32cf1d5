/* Test process: what the cloud announces and answers, and how the link follows it: a Server Keep
 * Alive shorter than cloud.keepalive, PUBACK 0x10 (no matching subscribers), Retain Available 0
 * (retained messages, and the status Will). Real brokers: the cloud stand-in is a mosquitto with
 * a TLS 1.3 listener; the edge is a mosquitto with the plugin. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mqtt_protocol.h>

#include "common.h"

#define CLOUD_TOPIC "edge/site-A/telemetry/#"

/* A cloud whose CONNACK carries a Server Keep Alive of 10 s (its max_keepalive, below the 60 s the
 * edge asks for): the link's own clocks follow it (MQTT 5: the client must). Frozen right after an
 * exchange, the cloud is given up after 1.5 x 10 s of silence, long before 1.5 x 60 s, and before
 * libmosquitto's unanswered PINGREQ (2 x 10 s). */
START_TEST(test_frozen_cloud_is_detected_within_its_server_keep_alive)
{
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { .extra = "max_keepalive 10\n" };
	const char *ka5 = "  keepalive: 5s\n";
	const char *at = strstr(FBH_YAML_STANDARD, ka5);
	struct fbh_sub *sub;
	char *yaml;

	ck_assert_ptr_nonnull(at);
	yaml = fbh_strdupf("%.*s  keepalive: 60s\n%s", (int)(at - FBH_YAML_STANDARD), FBH_YAML_STANDARD,
			at + strlen(ka5));
	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, CLOUD_TOPIC, 1);
	ck_assert_ptr_nonnull(sub);
	start_edge(&edge, cloud.port, yaml, NULL);
	ck_assert(fbh_wait_log(&edge, "connected to", 10000));
	ck_assert(fbh_broker_log_line_has(&edge, "the cloud's Server Keep Alive is 10 s", "cloud.keepalive (60 s)"));

	/* The last packet from the cloud: the PUBACK of k0, about when the subscriber has it. */
	ck_assert_int_eq(fbh_publish(edge.port, NULL, "local/telemetry/k", "k", 1, 1, NULL, 10000), 1);
	ck_assert(wait_exactly(sub, 1, 10000, 0));
	/* The subscriber would be given up too (max_keepalive applies to it as well): a new one
	 * follows the freeze. */
	fbh_sub_stop(sub);
	fbh_broker_log_mark(&edge);
	ck_assert_int_eq(fbh_broker_signal(&cloud, SIGSTOP), 0);
	/* 1.5 x 10 s after that packet, with 4 s for a loaded machine: before libmosquitto's 20 s. */
	ck_assert_msg(fbh_wait_log(&edge, "nothing received for 15000 ms (1.5 x keepalive): connection is dead", 19000),
			"the frozen cloud was not given up after 1.5 x its Server Keep Alive");
	ck_assert(!fbh_broker_log_contains(&edge, "no answer to PINGREQ"));
	ck_assert_int_eq(fbh_broker_signal(&cloud, SIGCONT), 0);

	/* The next connection gets the same Server Keep Alive: logged once for the value. */
	ck_assert(fbh_wait_log(&edge, "connected to", 15000));
	sub = fbh_sub_start(cloud.port2, &cloud_tester, CLOUD_TOPIC, 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert_int_eq(fbh_publish(edge.port, NULL, "local/telemetry/k", "h", 1, 1, NULL, 10000), 1);
	ck_assert(wait_exactly(sub, 1, 10000, 500));
	ck_assert_str_eq(fbh_sub_msg(sub, 0)->payload, "h0");
	ck_assert_int_eq(log_count(&edge, "Server Keep Alive"), 1);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	free(yaml);
}
END_TEST

/* Messages nobody subscribes to at the cloud: Mosquitto answers a QoS 1 PUBLISH with PUBACK 0x10
 * (No matching subscribers) and a QoS 2 one with PUBREC 0x10, then PUBCOMP 0x00. Both are
 * successes: every message is counted forwarded and deleted, none goes to dead letters. */
START_TEST(test_no_matching_subscribers_at_the_cloud_counts_as_forwarded)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sys;
	struct fbh_pub *pub;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	start_edge(&edge, cloud.port, FBH_YAML_BASE
			"edge_to_cloud:\n"
			"  - local: local/q1/#\n"
			"    cloud: edge/${site_id}/q1/#\n"
			"    qos: 1\n"
			"  - local: local/q2/#\n"
			"    cloud: edge/${site_id}/q2/#\n"
			"    qos: 2\n", NULL);
	sys = sys_watch(&edge);
	ck_assert(sys_wait(sys, "state", "connected", 10000));
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	ck_assert_int_eq(fbh_pub_send_n(pub, "local/q1/a", "q1-", 3, 1, NULL), 0);
	ck_assert_int_eq(fbh_pub_send_n(pub, "local/q2/a", "q2-", 3, 1, NULL), 0);
	ck_assert(fbh_pub_wait_all(pub, 10000));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 6, 10000));
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 5000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/rejected", 0, 1000));
	ck_assert(sys_wait_u64(sys, "spool/dead", 0, 1000));
	ck_assert_uint_eq(log_count(&edge, "moved to dead letters"), 0);
	fbh_sub_stop(sys);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
}
END_TEST

#define NO_RETAIN_LOG "the cloud does not support retained messages: sent without retain"

/* A cloud that announces Retain Available 0 (retain_available false; Mosquitto ends the connection
 * of a client that publishes a retained message anyway) gets retained messages without retain:
 * every message arrives, in order, on one connection, and the link says so once per connection. */
START_TEST(test_retained_messages_go_without_retain_to_a_cloud_without_retain)
{
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { .extra = "retain_available false\n" };
	struct fbh_sub *sub, *sys;
	struct fbh_pub *pub;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "edge/site-A/telemetry/#", 1);
	ck_assert_ptr_nonnull(sub);
	start_edge(&edge, cloud.port, FBH_YAML_BASE
			"edge_to_cloud:\n"
			"  - local: local/telemetry/#\n"
			"    cloud: edge/${site_id}/telemetry/#\n", NULL);
	sys = sys_watch(&edge);
	ck_assert(sys_wait(sys, "state", "connected", 10000));
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/a", "r0", 2, 1, true, NULL), 0);
	ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/a", "n1", 2, 1, false, NULL), 0);
	ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/b", "r2", 2, 1, true, NULL), 0);
	ck_assert(fbh_pub_wait_all(pub, 10000));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	ck_assert(wait_exactly(sub, 3, 10000, 500));
	ck_assert_str_eq(fbh_sub_msg(sub, 0)->payload, "r0");
	ck_assert_str_eq(fbh_sub_msg(sub, 1)->payload, "n1");
	ck_assert_str_eq(fbh_sub_msg(sub, 2)->payload, "r2");
	ck_assert_str_eq(fbh_sub_msg(sub, 2)->topic, "edge/site-A/telemetry/b");
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 3, 5000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/rejected", 0, 1000));
	ck_assert(sys_wait_u64(sys, "reconnects", 0, 1000));
	ck_assert_uint_eq(log_count(&edge, NO_RETAIN_LOG), 1);
	ck_assert_uint_eq(log_count(&edge, NO_RETAIN_LOG " (edge/site-A/telemetry/a first;"), 1);
	fbh_sub_stop(sub);

	/* A new connection says it again, once. */
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	ck_assert(sys_wait(sys, "state", "connecting", 20000) || sys_wait(sys, "state", "disconnected", 1));
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "edge/site-A/telemetry/#", 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert(sys_wait_u64(sys, "reconnects", 1, 20000));
	ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/c", "r3", 2, 1, true, NULL), 0);
	ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/c", "r4", 2, 1, true, NULL), 0);
	ck_assert(fbh_pub_wait_all(pub, 10000));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);
	ck_assert(wait_exactly(sub, 2, 10000, 500));
	ck_assert_str_eq(fbh_sub_msg(sub, 0)->payload, "r3");
	ck_assert_str_eq(fbh_sub_msg(sub, 1)->payload, "r4");
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 5, 5000));
	ck_assert(sys_wait_u64(sys, "reconnects", 1, 1000));
	ck_assert_uint_eq(log_count(&edge, NO_RETAIN_LOG), 2);
	ck_assert_uint_eq(log_count(&edge, NO_RETAIN_LOG " (edge/site-A/telemetry/c first;"), 1);
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
}
END_TEST

/* A cloud without retained messages refuses the CONNECT of the status Will, which is retained
 * (0x9A): the next attempt sends it without retain and connects; "online" and, at the edge's
 * orderly stop, the Will "offline" arrive. */
START_TEST(test_the_status_will_goes_without_retain_to_a_cloud_without_retain)
{
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { .extra = "retain_available false\n" };
	struct fbh_sub *sub, *sys;
	const char *refused = "the cloud refused the connection: Retain not supported; the status Will "
			"(cloud.status_topic) goes without retain from the next attempt on";

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "flowmq/edge/site-A/status", 1);
	ck_assert_ptr_nonnull(sub);
	{
		/* FBH_YAML_BASE with cloud.status_topic */
		const char *base = FBH_YAML_BASE, *at = strstr(base, "  client_id:");
		char *yaml = fbh_strdupf("%.*s  status_topic: flowmq/edge/${site_id}/status\n%sedge_to_cloud:\n"
				"  - local: local/telemetry/#\n    cloud: edge/${site_id}/telemetry/#\n", (int)(at - base), base, at);

		start_edge(&edge, cloud.port, yaml, NULL);
		free(yaml);
	}
	sys = sys_watch(&edge);
	ck_assert(sys_wait(sys, "state", "connected", 20000));
	ck_assert_uint_eq(log_count(&edge, refused), 1);
	ck_assert(wait_exactly(sub, 1, 10000, 300));
	ck_assert_str_eq(fbh_sub_msg(sub, 0)->payload, "online");
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	ck_assert(wait_exactly(sub, 2, 10000, 300));
	ck_assert_str_eq(fbh_sub_msg(sub, 1)->payload, "offline");
	ck_assert_uint_eq(log_count(&edge, refused), 1);
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cloudprops");
	TCase *tc = fbh_tcase("cloudprops");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_frozen_cloud_is_detected_within_its_server_keep_alive);
	tcase_add_test(tc, test_no_matching_subscribers_at_the_cloud_counts_as_forwarded);
	tcase_add_test(tc, test_retained_messages_go_without_retain_to_a_cloud_without_retain);
	tcase_add_test(tc, test_the_status_will_goes_without_retain_to_a_cloud_without_retain);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
