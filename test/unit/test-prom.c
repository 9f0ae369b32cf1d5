/* plugin/link/prom.c: the text fb_prom_render() makes of a shared region with known values, and
 * fb_prom_start() on a taken port. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <check.h>
#include <mosquitto.h>

#include "prom.h"

#define COUNT_ONE(name, topic, desc) + 1
#define N_COUNTERS (0 FB_COUNTERS(COUNT_ONE))

static struct fb_shared *sh;
static int shfd = -1;

static void setup(void)
{
	ck_assert_int_eq(fb_shared_create(&sh, &shfd), 0);
}

static void teardown(void)
{
	fb_shared_unmap(sh);
	close(shfd);
}

static void fill(void)
{
	fb_count(&sh->ctr.forwarded, 7);
	fb_count(&sh->ctr.dropped_filtered, 2);
	fb_count(&sh->ctr.reconnects, 1);
	fb_seq_write_begin(&sh->sgen);
	sh->status.link.state = FB_LINK_CONNECTED;
	sh->status.link.last_connect_ts = 1795976400;
	sh->status.spool.messages = 11;
	sh->status.spool.bytes = 2048;
	sh->status.spool.dead = 3;
	sh->status.spool.in = 4;
	sh->status.oldest_age_s = 9;
	sh->status.lane_messages[2] = 11;
	sh->status.lane_oldest_age_s[2] = 9;
	fb_seq_write_end(&sh->sgen);
	fb_rulectr_inc(&sh->rules.rule[0].forwarded);
	fb_rulectr_inc(&sh->rules.rule[0].forwarded);
	fb_rulectr_inc(&sh->rules.rule[1].dropped);
}

static size_t count_of(const char *text, const char *needle)
{
	size_t n = 0;

	for(const char *p = text; (p = strstr(p, needle)) != NULL; p++){
		n++;
	}
	return n;
}

START_TEST(test_values_and_families)
{
	char *t;
	size_t len, samples = 0, types = 0;

	fill();
	ck_assert_int_eq(fb_prom_render(sh, 2, 42, &t, &len), 0);
	ck_assert_uint_eq(strlen(t), len);
	ck_assert_uint_eq(t[len - 1], '\n');
	ck_assert_ptr_nonnull(strstr(t,
		"# HELP flowmq_bridge_connected 1 while the cloud session is connected, else 0\n"
		"# TYPE flowmq_bridge_connected gauge\n"
		"flowmq_bridge_connected 1\n"
		"# HELP flowmq_bridge_last_connect_timestamp_seconds Unix time of the last connection the cloud accepted (0: none yet)\n"
		"# TYPE flowmq_bridge_last_connect_timestamp_seconds gauge\n"
		"flowmq_bridge_last_connect_timestamp_seconds 1795976400\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nflowmq_bridge_link_uptime_seconds 42\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nflowmq_bridge_spool_messages 11\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nflowmq_bridge_spool_bytes 2048\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nflowmq_bridge_spool_oldest_age_seconds 9\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nflowmq_bridge_spool_dead 3\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nflowmq_bridge_spool_disk_full 0\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nflowmq_bridge_cloud_to_edge_pending 4\n"));
	ck_assert_ptr_nonnull(strstr(t,
		"# HELP flowmq_bridge_edge_to_cloud_forwarded_total records the cloud acknowledged (or QoS 0 records sent)\n"
		"# TYPE flowmq_bridge_edge_to_cloud_forwarded_total counter\n"
		"flowmq_bridge_edge_to_cloud_forwarded_total 7\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nflowmq_bridge_edge_to_cloud_dropped_filtered_total 2\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nflowmq_bridge_reconnects_total 1\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nflowmq_bridge_edge_to_cloud_dropped_full_total 0\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nflowmq_bridge_spool_lane_messages{lane=\"2\"} 11\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nflowmq_bridge_spool_lane_messages{lane=\"3\"} 0\n"));
	ck_assert_ptr_nonnull(strstr(t, "\nflowmq_bridge_spool_lane_oldest_age_seconds{lane=\"2\"} 9\n"));
	ck_assert_ptr_nonnull(strstr(t,
		"# TYPE flowmq_bridge_rule_forwarded_total counter\n"
		"flowmq_bridge_rule_forwarded_total{rule=\"0\"} 2\n"
		"flowmq_bridge_rule_forwarded_total{rule=\"1\"} 0\n"
		"# HELP flowmq_bridge_rule_dropped_total "));
	ck_assert_ptr_nonnull(strstr(t,
		"# TYPE flowmq_bridge_rule_dropped_total counter\n"
		"flowmq_bridge_rule_dropped_total{rule=\"0\"} 0\n"
		"flowmq_bridge_rule_dropped_total{rule=\"1\"} 1\n"));
	ck_assert_ptr_null(strstr(t, "rule=\"2\""));

	/* Every sample's family is typed just before its samples, once; counters end in _total. */
	for(const char *l = t; *l; l = strchr(l, '\n') + 1){
		char fam[128];
		size_t n = strcspn(l, " {\n");

		if(strncmp(l, "# TYPE ", 7) == 0){
			types++;
			n = strcspn(l + 7, " ");
			ck_assert_uint_lt(n, sizeof(fam));
			memcpy(fam, l + 7, n);
			fam[n] = '\0';
			ck_assert_uint_eq(count_of(t, fam) >= 2, 1);
			if(strstr(l, " counter\n") == l + 7 + n){
				ck_assert_str_eq(fam + n - 6, "_total");
			}else{
				ck_assert_ptr_eq(strstr(l, " gauge\n"), l + 7 + n);
			}
			continue;
		}
		if(l[0] == '#'){
			continue;
		}
		samples++;
		ck_assert_uint_lt(n, sizeof(fam));
		memcpy(fam, l, n);
		fam[n] = '\0';
		{
			char type[160];
			snprintf(type, sizeof(type), "# TYPE %s ", fam);
			ck_assert_uint_eq(count_of(t, type), 1);
			ck_assert((const char *)strstr(t, type) < l);
		}
	}
	/* 9 gauges, the counters of counters.h, 2 x 10 lanes, 2 x 2 rules. */
	ck_assert_uint_eq(samples, 9 + N_COUNTERS + 20 + 4);
	ck_assert_uint_eq(types, 9 + N_COUNTERS + 2 + 2);
	free(t);
}
END_TEST

START_TEST(test_no_rules_and_too_many_rules)
{
	char *t;
	size_t len;

	ck_assert_int_eq(fb_prom_render(sh, 0, 0, &t, &len), 0);
	ck_assert_ptr_null(strstr(t, "rule_"));
	ck_assert_ptr_nonnull(strstr(t, "\nflowmq_bridge_connected 0\n"));
	free(t);
	ck_assert_int_eq(fb_prom_render(sh, FB_RULECTR_SLOTS + 5, 0, &t, &len), 0);
	ck_assert_uint_eq(count_of(t, "\nflowmq_bridge_rule_forwarded_total{"), FB_RULECTR_SLOTS);
	ck_assert_uint_eq(count_of(t, "\nflowmq_bridge_rule_dropped_total{"), FB_RULECTR_SLOTS);
	ck_assert_ptr_nonnull(strstr(t, "\nflowmq_bridge_rule_dropped_total{rule=\"1023\"} 0\n"));
	ck_assert_ptr_null(strstr(t, "rule=\"1024\""));
	free(t);
}
END_TEST

static char logged[512];
static int log_lines;

static void capture(void *ud, int level, const char *line)
{
	(void)ud;
	if(level == MOSQ_LOG_ERR){
		snprintf(logged, sizeof(logged), "%s", line);
		log_lines++;
	}
}

START_TEST(test_taken_port_is_an_error_logged_once)
{
	static const struct fb_logger lg = { capture, NULL };
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t sl = sizeof(a);
	struct fb_prom *p = (struct fb_prom *)&p;
	struct fb_prom_opts o;
	char listen_at[32], want[160];
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(fd, 1), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &sl), 0);
	snprintf(listen_at, sizeof(listen_at), "127.0.0.1:%u", ntohs(a.sin_port));
	o = (struct fb_prom_opts){ .listen = listen_at, .host = "127.0.0.1", .port = ntohs(a.sin_port),
		.sh = sh, .nrules = 1, .lg = &lg };
	ck_assert_int_eq(fb_prom_start(&o, &p), -EADDRINUSE);
	ck_assert_ptr_null(p);
	ck_assert_int_eq(log_lines, 1);
	snprintf(want, sizeof(want), "metrics.listen %s: cannot listen: Address already in use; the bridge runs on "
			"without the metrics endpoint", listen_at);
	ck_assert_str_eq(logged, want);
	fb_prom_stop(NULL);
	close(fd);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("prom");
	TCase *tc = tcase_create("prom");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_values_and_families);
	tcase_add_test(tc, test_no_rules_and_too_many_rules);
	tcase_add_test(tc, test_taken_port_is_an_error_logged_once);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
