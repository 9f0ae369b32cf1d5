/* The numeric $SYS values exporters read: connected, cloud_to_edge/pending, uptime_s,
 * last_connect_ts, spool/dead and rules/<index>/{forwarded,dropped}, asserted exactly after known
 * traffic through an edge with the plugin to the cloud stand-in, across a cloud outage and a
 * reload. The test process is a $SYS subscriber of the edge. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define METRICS_RULES \
	"edge_to_cloud:\n" \
	"  - local: local/telemetry/#\n" \
	"    cloud: edge/${site_id}/telemetry/#\n" \
	"  - local: local/debug/#\n" \
	"    drop: true\n" \
	"  - local: local/secret/#\n" \
	"    cloud: forbidden/${site_id}/#\n"

static uint64_t value_u64(struct fbh_sub *sys, const char *key)
{
	const char *v = sys_value(sys, key);
	char *end;
	unsigned long long n;

	ck_assert_msg(v != NULL, "no %s published", key);
	n = strtoull(v, &end, 10);
	ck_assert_msg(*v && *end == '\0', "%s is not a number: '%s'", key, v);
	return n;
}

static void send_n(int port, const char *topic, int n)
{
	struct fbh_pub *pub = fbh_pub_connect(port, NULL);

	ck_assert_ptr_nonnull(pub);
	for(int i = 0; i < n; i++){
		ck_assert_int_ge(fbh_pub_send(pub, topic, "x", 1, 1, false, NULL), 0);
	}
	ck_assert(fbh_pub_wait_all(pub, 10000));
	fbh_pub_close(pub);
}

START_TEST(exact_values_after_known_traffic)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub, *sys;
	time_t t0 = time(NULL), t1, t2;
	uint64_t ts, up;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "#", 1);
	ck_assert_ptr_nonnull(sub);
	start_edge(&edge, cloud.port, FBH_YAML_BASE METRICS_RULES, NULL);
	sys = sys_watch(&edge);
	ck_assert(sys_wait(sys, "state", "connected", 10000));
	ck_assert(sys_wait_u64(sys, "connected", 1, 5000));

	send_n(edge.port, "local/telemetry/a", 3);
	send_n(edge.port, "local/debug/b", 2);
	send_n(edge.port, "other/d", 4);         /* no rule */
	ck_assert(wait_exactly(sub, 3, 10000, 500));

	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 3, 5000));
	ck_assert(sys_wait_u64(sys, "rules/0/forwarded", 3, 5000));
	ck_assert(sys_wait_u64(sys, "rules/0/dropped", 0, 5000));
	ck_assert(sys_wait_u64(sys, "rules/1/forwarded", 0, 5000));
	ck_assert(sys_wait_u64(sys, "rules/1/dropped", 2, 5000));
	ck_assert(sys_wait_u64(sys, "rules/2/forwarded", 0, 5000));
	ck_assert(sys_wait_u64(sys, "rules/2/dropped", 0, 5000));
	ck_assert_ptr_null(sys_value(sys, "rules/3/forwarded"));
	ck_assert_ptr_null(sys_value(sys, "rules/3/dropped"));
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/pending", 0, 5000));
	ck_assert(sys_wait_u64(sys, "spool/dead", 0, 5000));
	/* The old topics are still there, and agree with connected. */
	ck_assert(sys_wait(sys, "state", "connected", 10000));
	ck_assert(sys_wait_u64(sys, "connected", 1, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/filtered", 2, 5000));

	t1 = time(NULL);
	ts = value_u64(sys, "last_connect_ts");
	ck_assert_uint_ge(ts, (uint64_t)t0);
	ck_assert_uint_le(ts, (uint64_t)t1);
	up = value_u64(sys, "uptime_s");
	ck_assert_uint_le(up, (uint64_t)(t1 - t0 + 1));

	/* The cloud goes away: connected 0, last_connect_ts stays. */
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	ck_assert(sys_wait_u64(sys, "connected", 0, 15000));
	ck_assert_uint_eq(value_u64(sys, "last_connect_ts"), ts);
	sleep(1);
	/* ... and comes back: a newer last_connect_ts. */
	t2 = time(NULL);
	start_cloud(&cloud, NULL);
	ck_assert(sys_wait_u64(sys, "connected", 1, 15000));
	ck_assert(sys_wait(sys, "state", "connected", 5000));
	{
		uint64_t again = 0;

		for(int i = 0; i < 100 && (again = value_u64(sys, "last_connect_ts")) == ts; i++){
			usleep(50 * 1000);
		}
		ck_assert_uint_ge(again, (uint64_t)t2);
		ck_assert_uint_le(again, (uint64_t)time(NULL));
	}
	/* uptime_s counts on. */
	{
		uint64_t later = 0;

		for(int i = 0; i < 100 && (later = value_u64(sys, "uptime_s")) <= up; i++){
			usleep(50 * 1000);
		}
		ck_assert_uint_gt(later, up);
	}

	/* A message the cloud's ACL refuses: taken by rule 2, then a dead letter. */
	send_n(edge.port, "local/secret/c", 1);
	ck_assert(sys_wait_u64(sys, "spool/dead", 1, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/rejected", 1, 5000));
	ck_assert(sys_wait_u64(sys, "rules/2/forwarded", 1, 5000));
	ck_assert(sys_wait_u64(sys, "rules/2/dropped", 0, 5000));
	ck_assert(sys_wait_u64(sys, "rules/0/forwarded", 3, 5000));
	ck_assert(sys_wait_u64(sys, "rules/1/dropped", 2, 5000));
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
}
END_TEST

START_TEST(a_reload_starts_rule_counts_again_and_clears_removed_rules)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sys, *late;
	char *yaml;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	start_edge(&edge, cloud.port, FBH_YAML_BASE METRICS_RULES, NULL);
	sys = sys_watch(&edge);
	ck_assert(sys_wait_u64(sys, "connected", 1, 10000));
	send_n(edge.port, "local/telemetry/a", 2);
	send_n(edge.port, "local/debug/b", 1);
	ck_assert(sys_wait_u64(sys, "rules/0/forwarded", 2, 5000));
	ck_assert(sys_wait_u64(sys, "rules/1/dropped", 1, 5000));
	ck_assert(sys_wait_u64(sys, "rules/2/forwarded", 0, 5000));

	/* One rule left: rule 0 is now local/debug/# -> a cloud topic. */
	yaml = fbh_edge_yaml(&edge, cloud.port, FBH_YAML_BASE
			"edge_to_cloud:\n"
			"  - local: local/debug/#\n"
			"    cloud: edge/${site_id}/debug/#\n");
	free(yaml);
	fbh_broker_log_mark(&edge);
	ck_assert_int_eq(fbh_broker_signal(&edge, SIGHUP), 0);
	ck_assert(fbh_wait_log(&edge, "1 edge_to_cloud rules now apply", 10000));
	ck_assert(sys_wait(sys, "rules/1/forwarded", "", 5000));
	ck_assert(sys_wait(sys, "rules/1/dropped", "", 5000));
	ck_assert(sys_wait(sys, "rules/2/forwarded", "", 5000));
	ck_assert(sys_wait(sys, "rules/2/dropped", "", 5000));
	ck_assert(sys_wait_u64(sys, "rules/0/forwarded", 0, 5000));
	send_n(edge.port, "local/debug/b", 4);
	ck_assert(sys_wait_u64(sys, "rules/0/forwarded", 4, 5000));
	ck_assert(sys_wait_u64(sys, "rules/0/dropped", 0, 5000));
	/* A new subscriber finds only rule 0's values retained. */
	late = sys_watch(&edge);
	ck_assert(sys_wait_u64(late, "rules/0/forwarded", 4, 5000));
	ck_assert_ptr_null(sys_value(late, "rules/1/forwarded"));
	ck_assert_ptr_null(sys_value(late, "rules/1/dropped"));
	ck_assert_ptr_null(sys_value(late, "rules/2/forwarded"));
	ck_assert_ptr_null(sys_value(late, "rules/2/dropped"));
	fbh_sub_stop(late);
	fbh_sub_stop(sys);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("metrics");
	TCase *tc = fbh_tcase("metrics");

	tcase_add_test(tc, exact_values_after_known_traffic);
	tcase_add_test(tc, a_reload_starts_rule_counts_again_and_clears_removed_rules);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
