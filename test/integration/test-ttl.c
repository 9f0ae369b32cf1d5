/* Per-rule ttl: messages of an edge_to_cloud rule older than its ttl when they would be sent are
 * dropped and counted (edge_to_cloud/dropped/expired); a rule's ttl replaces spool.ttl for its
 * messages, both ways. Real brokers: the cloud stand-in is a TLS mosquitto, the edge a mosquitto
 * with the plugin. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mqtt_protocol.h>

#include "common.h"

/* The standard connection (FBH_YAML_BASE) with spool lines SPOOL_EXTRA and the rules: local/ttl/#
 * with TTL_RULE's ttl line (may be empty), local/keep/# with KEEP_RULE's. */
static char *yaml_with(const char *spool_extra, const char *ttl_rule, const char *keep_rule)
{
	return fbh_strdupf(
		"site_id: " FBH_SITE_ID "\n"
		"cloud:\n"
		"  endpoints:\n"
		"    - mqtts://localhost:@CLOUD_PORT@\n"
		"  keepalive: 5s\n"
		"  connect_timeout: 5s\n"
		"  reconnect:\n"
		"    min: 100ms\n"
		"    max: 500ms\n"
		"  auth:\n"
		"    username: edge-${site_id}\n"
		"    password_file: @PASSWORD_FILE@\n"
		"  tls:\n"
		"    ca_file: @CA_FILE@\n"
		"    cert_file: @CERT_FILE@\n"
		"    key_file: @KEY_FILE@\n"
		"spool:\n"
		"  path: @SPOOL_PATH@\n"
		"%s"
		"status_interval: 1s\n"
		"edge_to_cloud:\n"
		"  - local: local/ttl/#\n"
		"    cloud: edge/${site_id}/ttl/#\n"
		"%s"
		"  - local: local/keep/#\n"
		"    cloud: edge/${site_id}/keep/#\n"
		"%s",
		spool_extra, ttl_rule, keep_rule);
}

static double mono_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Counts the messages of S whose topic starts with PREFIX and checks that their payloads are
 * "<payload_prefix>0", "1", ... in order. */
static size_t count_in_order(struct fbh_sub *s, const char *prefix, const char *payload_prefix)
{
	size_t n = 0;

	for(size_t i = 0; i < fbh_sub_count(s); i++){
		const struct fbh_msg *m = fbh_sub_msg(s, i);
		if(strncmp(m->topic, prefix, strlen(prefix)) != 0){
			continue;
		}
		ck_assert_msg(payload_index(m, payload_prefix) == (long)n, "message %zu on %s is '%s', expected %s%zu",
				n, m->topic, (const char *)m->payload, payload_prefix, n);
		n++;
	}
	return n;
}

/* The cloud goes down (a persistent subscriber on edge/site-A/# registered first), the edge
 * (configured with YAML) takes N messages on local/ttl/x and N on local/keep/x, interleaved, and
 * the cloud stays down OUTAGE_S seconds counted from the first publish. Then it comes back.
 * Asserts that exactly TTL_ARRIVE of the local/ttl messages and KEEP_ARRIVE of the local/keep ones
 * arrive, each in order, and that the rest counts as expired; the spool ends empty. */
static void outage(const char *yaml, size_t n, double outage_s, size_t ttl_arrive, size_t keep_arrive)
{
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { 0 };
	struct fbh_client_opts so = persistent_sub("cloud-sub-ttl");
	struct fbh_sub *sub, *sys;
	struct fbh_pub *pub;
	double t0;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	co.extra = cloud_persistent_extra(&cloud);
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, "edge/site-A/#", 1);
	ck_assert_ptr_nonnull(sub);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);

	start_edge(&edge, cloud.port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	t0 = mono_s();
	for(size_t i = 0; i < n; i++){
		char payload[32];
		int len = snprintf(payload, sizeof(payload), "t%zu", i);
		ck_assert_int_ge(fbh_pub_send(pub, "local/ttl/x", payload, len, 1, false, NULL), 0);
		len = snprintf(payload, sizeof(payload), "k%zu", i);
		ck_assert_int_ge(fbh_pub_send(pub, "local/keep/x", payload, len, 1, false, NULL), 0);
	}
	ck_assert(fbh_pub_wait_all(pub, 60000));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);
	ck_assert(sys_wait_u64(sys, "spool/messages", 2 * n, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/expired", 0, 5000));
	ck_assert_msg(mono_s() - t0 < outage_s - 1, "publishing took %.1f s of the %.0f s outage", mono_s() - t0, outage_s);
	while(mono_s() - t0 < outage_s){
		usleep(50000);
	}

	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, "edge/site-A/#", 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert(wait_exactly(sub, ttl_arrive + keep_arrive, 60000, 1000));
	ck_assert_uint_eq(count_in_order(sub, "edge/site-A/ttl/", "t"), ttl_arrive);
	ck_assert_uint_eq(count_in_order(sub, "edge/site-A/keep/", "k"), keep_arrive);
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", ttl_arrive + keep_arrive, 5000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/expired", 2 * n - ttl_arrive - keep_arrive, 5000));

	/* Live messages of the ttl rule still go through, and the ttl stays on the edge: the cloud
	 * sees no Message Expiry Interval. */
	fbh_sub_clear(sub);
	ck_assert_int_eq(fbh_publish(edge.port, NULL, "local/ttl/live", "live", 10, 1, NULL, 10000), 10);
	ck_assert(wait_exactly(sub, 10, 10000, 300));
	for(size_t i = 0; i < 10; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		uint32_t expiry = 0;
		ck_assert_str_eq(m->topic, "edge/site-A/ttl/live");
		ck_assert_int_eq(payload_index(m, "live"), (long)i);
		ck_assert_ptr_null(mosquitto_property_read_int32(m->props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &expiry, false));
	}
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	free((char *)co.extra);
}

/* The issue's case: a rule with ttl: 2s and one without, no spool.ttl, a 5 s outage. */
START_TEST(test_ttl_2s_rule_expires_in_a_5s_outage_and_the_rule_without_ttl_arrives_whole)
{
	char *yaml = yaml_with("", "    ttl: 2s\n", "");

	outage(yaml, 500, 5.0, 0, 500);
	free(yaml);
}
END_TEST

/* A rule's ttl replaces spool.ttl both ways: with spool.ttl 2s, a rule with ttl: 1h keeps its
 * messages through a 5 s outage, and the rule without one loses them to spool.ttl. */
START_TEST(test_rule_ttl_overrides_spool_ttl)
{
	char *yaml = yaml_with("  ttl: 2s\n", "    ttl: 1h\n", "");

	outage(yaml, 500, 5.0, 500, 0);
	free(yaml);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ttl");
	TCase *tc = fbh_tcase("ttl");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_ttl_2s_rule_expires_in_a_5s_outage_and_the_rule_without_ttl_arrives_whole);
	tcase_add_test(tc, test_rule_ttl_overrides_spool_ttl);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
