/* Priority lanes (README.md "Priority lanes"): a priority-0 rule's messages overtake the backlog of
 * the default lane, lower lanes keep cloud.lane_min_share of the sends. Real brokers, as in
 * test-forward.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common.h"

/* The standard configuration with a second rule in lane 0 (the first stays in the default lane 4). */
#define LANES_YAML FBH_YAML_BASE \
	"edge_to_cloud:\n" \
	"  - local: local/telemetry/#\n" \
	"    cloud: edge/${site_id}/telemetry/#\n" \
	"  - local: local/alarm/#\n" \
	"    cloud: edge/${site_id}/alarm/#\n" \
	"    priority: 0\n"

#define CLOUD_ALL "edge/site-A/#"

/* Publishes PREFIX0 .. PREFIX<N-1> at QoS 1 on TOPIC to the edge, in batches that each wait for
 * their acknowledgements (packet ids repeat after 65535). Returns the number acknowledged. */
static size_t publish_many(struct fbh_broker *edge, const char *topic, const char *prefix, size_t n)
{
	struct fbh_pub *pub = fbh_pub_connect(edge->port, NULL);
	size_t acked;

	ck_assert_ptr_nonnull(pub);
	for(size_t i = 0; i < n; i++){
		char payload[32];
		int len = snprintf(payload, sizeof(payload), "%s%zu", prefix, i);

		ck_assert_int_ge(fbh_pub_send(pub, topic, payload, len, 1, false, NULL), 0);
		if(i % 20000 == 19999){
			ck_assert(fbh_pub_wait_all(pub, 120000));
		}
	}
	ck_assert(fbh_pub_wait_all(pub, 120000));
	acked = fbh_pub_acked(pub);
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);
	return acked;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A cloud that keeps sessions across a restart, where SO has a persistent session on CLOUD_ALL,
 * stopped again. */
static void cloud_down_with_session(struct fbh_broker *cloud, struct fbh_cloud_opts *co,
		const struct fbh_client_opts *so)
{
	struct fbh_sub *sub;

	co->extra = cloud_persistent_extra(cloud);
	start_cloud(cloud, co);
	sub = fbh_sub_start(cloud->port2, so, CLOUD_ALL, 1);
	ck_assert_ptr_nonnull(sub);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(cloud), 0);
}

/* Which lane message M came in: 'b' for the backlog (telemetry), 'a' for alarms; *IDX its index. */
static char classify(const struct fbh_msg *m, long *idx)
{
	if(strncmp(m->topic, "edge/site-A/alarm/", 18) == 0){
		*idx = payload_index(m, "a");
		return 'a';
	}
	ck_assert_msg(strncmp(m->topic, "edge/site-A/telemetry/", 22) == 0, "unexpected topic %s", m->topic);
	*idx = payload_index(m, "b");
	return 'b';
}

/* The issue's test: N messages of the default lane spooled during an outage; the cloud returns and,
 * during the drain, 100 priority-0 messages are published: every one of them arrives before the
 * backlog's last message; each lane complete, in order, exactly once. */
static void priority_overtakes_backlog(size_t n, size_t n_alarm)
{
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { 0 };
	struct fbh_client_opts so = persistent_sub("cloud-sub-lanes");
	struct fbh_sub *sub, *sys;
	size_t total = n + n_alarm, got_at_alarm, last_b_pos = 0, last_a_pos = 0;
	long next_a = 0, next_b = 0, idx;
	uint64_t t0, t_pub, t_done;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	cloud_down_with_session(&cloud, &co, &so);
	start_edge(&edge, cloud.port, LANES_YAML, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	t0 = now_ms();
	ck_assert_uint_eq(publish_many(&edge, "local/telemetry/t", "b", n), n);
	ck_assert(sys_wait_u64(sys, "spool/messages", n, 60000));
	fprintf(stderr, "lanes: %zu messages spooled in %llu ms\n", n, (unsigned long long)(now_ms() - t0));

	start_cloud(&cloud, &co);
	t0 = now_ms();
	sub = fbh_sub_start(cloud.port2, &so, CLOUD_ALL, 1);
	ck_assert_ptr_nonnull(sub);
	/* The drain is under way: then the alarms. */
	ck_assert(fbh_sub_wait_count(sub, n / 20, 120000) >= n / 20);
	t_pub = now_ms();
	ck_assert_int_eq(fbh_publish(edge.port, NULL, "local/alarm/fire", "a", n_alarm, 1, NULL, 60000), (long)n_alarm);
	got_at_alarm = fbh_sub_count(sub);
	ck_assert_msg(got_at_alarm < n, "the backlog drained before the alarms were published (%zu)", got_at_alarm);
	ck_assert_msg(wait_exactly(sub, total, 600000, 1000), "%zu of %zu arrived", fbh_sub_count(sub), total);
	t_done = now_ms();
	fprintf(stderr, "lanes: drain of %zu took %llu ms; alarms published after %llu ms\n", n,
			(unsigned long long)(t_done - t0), (unsigned long long)(t_pub - t0));

	for(size_t i = 0; i < total; i++){
		char k = classify(fbh_sub_msg(sub, i), &idx);
		if(k == 'a'){
			ck_assert_msg(idx == next_a, "alarm %ld at %zu, expected a%ld", idx, i, next_a);
			next_a++;
			last_a_pos = i;
		}else{
			ck_assert_msg(idx == next_b, "backlog message %ld at %zu, expected b%ld", idx, i, next_b);
			next_b++;
			last_b_pos = i;
		}
	}
	ck_assert_int_eq(next_a, (long)n_alarm);
	ck_assert_int_eq(next_b, (long)n);
	ck_assert_msg(last_a_pos < last_b_pos, "last alarm at %zu, last backlog message at %zu", last_a_pos, last_b_pos);
	fprintf(stderr, "lanes: last alarm arrived at position %zu of %zu (%zu received when published)\n",
			last_a_pos, total, got_at_alarm);
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", total, 10000));
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	free((char *)co.extra);
}

/* FB_LANES_BACKLOG: the backlog's size (the sanitizer build's test setup makes it 50,000). */
START_TEST(test_100_priority0_overtake_a_200000_backlog)
{
	const char *v = getenv("FB_LANES_BACKLOG");
	size_t n = v && *v ? strtoul(v, NULL, 10) : 200000;

	ck_assert_uint_ge(n, 2000);
	if(n != 200000){
		fprintf(stderr, "lanes: backlog of %zu messages (FB_LANES_BACKLOG)\n", n);
	}
	priority_overtakes_backlog(n, 100);
}
END_TEST

/* Starvation: NB messages of the default lane and NA of lane 0 are spooled; when the cloud
 * returns, lane 0 drains at the link's full speed all along, and the default lane still gets
 * lane_min_share of the sends while lane 0 holds messages: of the messages up to lane 0's last,
 * the default lane's share is SHARE within a tolerance of 0.5 points. */
static void starvation(double share, size_t na, size_t nb)
{
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { 0 };
	struct fbh_client_opts so = persistent_sub("cloud-sub-share");
	struct fbh_sub *sub, *sys;
	size_t total = na + nb, last_a_pos = 0, b_before = 0;
	long next_a = 0, next_b = 0, idx;
	double got;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	cloud_down_with_session(&cloud, &co, &so);
	start_edge(&edge, cloud.port, LANES_YAML, NULL);
	sys = sys_watch(&edge);
	ck_assert_int_eq(fbh_publish(edge.port, NULL, "local/telemetry/t", "b", nb, 1, NULL, 120000), (long)nb);
	ck_assert_int_eq(fbh_publish(edge.port, NULL, "local/alarm/x", "a", na, 1, NULL, 120000), (long)na);
	ck_assert(sys_wait_u64(sys, "spool/messages", total, 30000));
	ck_assert(sys_wait_u64(sys, "spool/lane/0/messages", na, 30000));
	ck_assert(sys_wait_u64(sys, "spool/lane/4/messages", nb, 30000));

	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, CLOUD_ALL, 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert_msg(wait_exactly(sub, total, 300000, 1000), "%zu of %zu arrived", fbh_sub_count(sub), total);
	for(size_t i = 0; i < total; i++){
		char k = classify(fbh_sub_msg(sub, i), &idx);
		if(k == 'a'){
			ck_assert_msg(idx == next_a, "a%ld at %zu, expected a%ld", idx, i, next_a);
			next_a++;
			last_a_pos = i;
			b_before = (size_t)next_b;
		}else{
			ck_assert_msg(idx == next_b, "b%ld at %zu, expected b%ld", idx, i, next_b);
			next_b++;
		}
	}
	ck_assert_int_eq(next_a, (long)na);
	ck_assert_int_eq(next_b, (long)nb);
	got = (double)b_before / (double)(last_a_pos + 1);
	fprintf(stderr, "lanes: lower lane share while lane 0 drained: %zu of %zu = %.2f %% (configured %.2f %%)\n",
			b_before, last_a_pos + 1, 100.0 * got, 100.0 * share);
	ck_assert_msg(b_before < nb, "the lower lane drained before lane 0: no contention measured");
	ck_assert_msg(got >= share - 0.005 && got <= share + 0.005, "lower lane share %.4f, expected %.4f", got, share);
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	free((char *)co.extra);
}

START_TEST(test_lower_lane_keeps_default_5_percent_under_a_full_speed_priority0_stream)
{
	starvation(0.05, 20000, 4000);
}
END_TEST

/* live_first: the telemetry rule's backlog of N messages "b<i>" drains when the cloud returns;
 * N_LIVE messages "l<i>" of the same rule published during the drain go ahead of the rest of the
 * backlog, which is back-filled behind them: both in order, all of them exactly once. */
#define LIVE_FIRST_YAML FBH_YAML_BASE \
	"edge_to_cloud:\n" \
	"  - local: local/telemetry/#\n" \
	"    cloud: edge/${site_id}/telemetry/#\n" \
	"    live_first: true\n" \
	"    headers:\n" \
	"      captured-ms: ${captured_at_ms}\n"

/* A received message by its capture time (the captured-ms header), for the order of publishing. */
struct by_capture {
	uint64_t ms;
	size_t arrival;
	char kind;
	long idx;
};

static int by_capture_cmp(const void *a, const void *b)
{
	const struct by_capture *x = a, *y = b;

	if(x->ms != y->ms){
		return x->ms < y->ms ? -1 : 1;
	}
	return x->arrival < y->arrival ? -1 : x->arrival > y->arrival;
}

START_TEST(test_live_first_sends_new_messages_ahead_of_the_rules_backlog)
{
	const size_t n = 50000, n_live = 200, total = n + n_live;
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { 0 };
	struct fbh_client_opts so = persistent_sub("cloud-sub-live");
	struct fbh_sub *sub, *sys;
	size_t got_at_live, last_l = 0, last_b = 0, first_l = total, b_after_first_l = 0;
	long next_l = 0, next_b = 0;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	cloud_down_with_session(&cloud, &co, &so);
	start_edge(&edge, cloud.port, LIVE_FIRST_YAML, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert_uint_eq(publish_many(&edge, "local/telemetry/t", "b", n), n);
	ck_assert(sys_wait_u64(sys, "spool/messages", n, 30000));

	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, CLOUD_ALL, 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert(fbh_sub_wait_count(sub, 2000, 120000) >= 2000);
	ck_assert_uint_eq(publish_many(&edge, "local/telemetry/t", "l", n_live), n_live);
	got_at_live = fbh_sub_count(sub);
	ck_assert_msg(got_at_live < n, "the backlog drained before the live messages were published");
	ck_assert_msg(wait_exactly(sub, total, 300000, 1000), "%zu of %zu arrived", fbh_sub_count(sub), total);
	for(size_t i = 0; i < total; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		long idx;

		ck_assert_str_eq(m->topic, "edge/site-A/telemetry/t");
		if(((const char *)m->payload)[0] == 'l'){
			idx = payload_index(m, "l");
			ck_assert_msg(idx == next_l, "live message %ld at %zu, expected l%ld", idx, i, next_l);
			next_l++;
			last_l = i;
			if(first_l == total){
				first_l = i;
			}
		}else{
			idx = payload_index(m, "b");
			ck_assert_msg(idx == next_b, "backlog message %ld at %zu, expected b%ld", idx, i, next_b);
			next_b++;
			last_b = i;
			b_after_first_l += first_l < i;
		}
	}
	ck_assert_int_eq(next_l, (long)n_live);
	ck_assert_int_eq(next_b, (long)n);
	/* The capture time restores the order of publishing exactly: sorted by captured-ms (arrival
	 * order within one millisecond), the cloud's messages are b0 .. b<N-1>, then l0 .. l<N_LIVE-1>. */
	{
		struct by_capture *v = calloc(total, sizeof(*v));

		ck_assert_ptr_nonnull(v);
		for(size_t i = 0; i < total; i++){
			const struct fbh_msg *m = fbh_sub_msg(sub, i);
			const char *ms = fbh_msg_user_prop(m, "captured-ms");
			char *end;

			ck_assert_msg(ms != NULL, "message %zu has no captured-ms", i);
			v[i].ms = strtoull(ms, &end, 10);
			ck_assert_msg(*end == '\0' && v[i].ms > 1700000000000ull, "captured-ms '%s'", ms);
			v[i].arrival = i;
			v[i].kind = ((const char *)m->payload)[0];
			v[i].idx = payload_index(m, v[i].kind == 'l' ? "l" : "b");
		}
		qsort(v, total, sizeof(*v), by_capture_cmp);
		for(size_t i = 0; i < total; i++){
			char want_kind = i < n ? 'b' : 'l';
			long want_idx = i < n ? (long)i : (long)(i - n);

			ck_assert_msg(v[i].kind == want_kind && v[i].idx == want_idx,
					"by capture time, position %zu holds %c%ld, expected %c%ld", i, v[i].kind, v[i].idx,
					want_kind, want_idx);
		}
		free(v);
	}
	fprintf(stderr, "lanes: live_first: live messages at %zu .. %zu of %zu (%zu received when published), "
			"%zu of the backlog after them\n", first_l, last_l, total, got_at_live, b_after_first_l);
	/* Ahead of the backlog: the last live message before the backlog's last, and most of the
	 * backlog still to come after the first (it was published with less than 1/4 drained). */
	ck_assert_uint_lt(last_l, last_b);
	ck_assert_uint_gt(b_after_first_l, n / 2);
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", total, 10000));
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	free((char *)co.extra);
}
END_TEST

/* Upgrade: test/fixtures/spool-v1.tar.gz is a spool written by the version before lanes
 * (make-spool-v1.sh: 8,000 messages "u0".."u7999", part settled into RocksDB, part staged, left by
 * SIGKILL; staging files of another size than this configuration's). This version opens it, puts
 * every record in the default lane, and delivers all of them in order, exactly once. */
START_TEST(test_spool_of_the_version_before_lanes_is_delivered_after_the_upgrade)
{
	const size_t n = 8000;
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { 0 };
	struct fbh_client_opts so = persistent_sub("cloud-sub-upgrade");
	struct fbh_sub *sub, *sys;
	char *fixture = fbh_strdupf("%s/test/fixtures/spool-v1.tar.gz", fbh_source_root());
	const char *tar[] = { "tar", "-C", NULL, "-xzf", fixture, NULL };

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	tar[2] = edge.dir;
	ck_assert_int_eq(fbh_run_cmd(tar, NULL), 0);
	cloud_down_with_session(&cloud, &co, &so);
	start_edge(&edge, cloud.port, LANES_YAML, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	/* Everything found, all of it in the default lane. */
	ck_assert(sys_wait_u64(sys, "spool/messages", n, 30000));
	ck_assert(sys_wait_u64(sys, "spool/lane/4/messages", n, 10000));
	ck_assert(sys_wait_u64(sys, "spool/lane/0/messages", 0, 10000));
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, CLOUD_ALL, 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert_msg(wait_exactly(sub, n, 120000, 1000), "%zu of %zu arrived", fbh_sub_count(sub), n);
	for(size_t i = 0; i < n; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		ck_assert_str_eq(m->topic, "edge/site-A/telemetry/t");
		ck_assert_msg(payload_index(m, "u") == (long)i, "message %zu is '%s'", i, (const char *)m->payload);
	}
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "spool/lane/4/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", n, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/corrupt", 0, 10000));
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	free(fixture);
	free((char *)co.extra);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("lanes");
	TCase *tc = fbh_tcase("lanes");

	tcase_set_timeout(tc, 900);
	tcase_add_test(tc, test_spool_of_the_version_before_lanes_is_delivered_after_the_upgrade);
	tcase_add_test(tc, test_live_first_sends_new_messages_ahead_of_the_rules_backlog);
	tcase_add_test(tc, test_lower_lane_keeps_default_5_percent_under_a_full_speed_priority0_stream);
	tcase_add_test(tc, test_100_priority0_overtake_a_200000_backlog);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
