/* Fault tests, run by the test process: SIGKILL of the link process and of the edge broker while a
 * backlog of three priority lanes drains (README.md "Priority lanes"). Every message the edge
 * acknowledged reaches the cloud, the first arrivals of each lane are in order, and what arrives
 * twice is at most what was in flight at each kill (cloud.max_inflight). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common.h"

#define CLOUD_ALL "edge/site-A/#"
#define MAX_INFLIGHT 64

#define LANES_YAML FBH_YAML_BASE \
	"edge_to_cloud:\n" \
	"  - local: local/telemetry/#\n" \
	"    cloud: edge/${site_id}/telemetry/#\n" \
	"  - local: local/alarm/#\n" \
	"    cloud: edge/${site_id}/alarm/#\n" \
	"    priority: 0\n" \
	"  - local: local/bulk/#\n" \
	"    cloud: edge/${site_id}/bulk/#\n" \
	"    priority: 9\n"

/* The lanes of the test: rule topic, payload prefix, messages. */
static const struct {
	const char *local, *cloud, *prefix;
	size_t n;
} lanes[] = {
	{ "local/alarm/x", "edge/site-A/alarm/x", "a", 6000 },
	{ "local/telemetry/t", "edge/site-A/telemetry/t", "b", 20000 },
	{ "local/bulk/z", "edge/site-A/bulk/z", "c", 6000 },
};
#define NLANES (sizeof(lanes) / sizeof(lanes[0]))

/* Publishes PREFIX0 .. PREFIX<N-1> at QoS 1, waiting for the acknowledgements in batches (packet
 * ids repeat after 65535). */
static void publish_acked(int port, const char *topic, const char *prefix, size_t n)
{
	struct fbh_pub *pub = fbh_pub_connect(port, NULL);

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
	ck_assert_uint_eq(fbh_pub_acked(pub), n);
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);
}

/* Waits until SUB has received at least N messages. */
static void wait_count(struct fbh_sub *sub, size_t n)
{
	ck_assert_msg(fbh_sub_wait_count(sub, n, 120000) >= n, "%zu of %zu arrived", fbh_sub_count(sub), n);
}

START_TEST(test_sigkill_of_link_and_edge_during_a_three_lane_drain)
{
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { 0 };
	struct fbh_client_opts so = persistent_sub("cloud-sub-lanekill");
	struct fbh_sub *sub;
	size_t total = 0, seen_total, repeats = 0, next[NLANES] = { 0 }, at_kill1, at_kill2;
	pid_t link1, link2;

	for(size_t l = 0; l < NLANES; l++){
		total += lanes[l].n;
	}
	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	co.extra = cloud_persistent_extra(&cloud);
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, CLOUD_ALL, 1);
	ck_assert_ptr_nonnull(sub);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);

	/* The backlog of three lanes, all of it acknowledged by the edge. */
	start_edge(&edge, cloud.port, LANES_YAML, NULL);
	for(size_t l = 0; l < NLANES; l++){
		publish_acked(edge.port, lanes[l].local, lanes[l].prefix, lanes[l].n);
	}

	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, CLOUD_ALL, 1);
	ck_assert_ptr_nonnull(sub);
	/* Lane 0 drains first (with lane_min_share of the sends for the others): kill the link
	 * process in its drain, the edge broker in the default lane's. */
	wait_count(sub, 3000);
	link1 = link_pid_wait(edge.pid);
	ck_assert_int_eq(kill(link1, SIGKILL), 0);
	at_kill1 = fbh_sub_count(sub);
	ck_assert(fbh_wait_log(&edge, "restarting the link process", 10000));
	link2 = link_pid_wait(edge.pid);
	ck_assert_int_ne(link2, link1);
	wait_count(sub, 12000);
	fbh_broker_kill(&edge);
	at_kill2 = fbh_sub_count(sub);
	start_edge(&edge, cloud.port, LANES_YAML, NULL);

	/* Everything arrives: each lane's messages, first arrivals in order, repeats counted. */
	for(int i = 0; i < 600; i++){
		size_t n = fbh_sub_count(sub);
		seen_total = 0;
		memset(next, 0, sizeof(next));
		repeats = 0;
		for(size_t k = 0; k < n; k++){
			const struct fbh_msg *m = fbh_sub_msg(sub, k);
			size_t l;
			long idx;

			for(l = 0; l < NLANES && strcmp(m->topic, lanes[l].cloud) != 0; l++){
			}
			ck_assert_msg(l < NLANES, "unexpected topic %s", m->topic);
			idx = payload_index(m, lanes[l].prefix);
			ck_assert_msg(idx >= 0 && (size_t)idx < lanes[l].n, "unexpected payload %s", (const char *)m->payload);
			if((size_t)idx == next[l]){
				next[l]++; /* the first arrival of the lane's next message */
				seen_total++;
			}else{
				/* Anything else is a repeat of one that arrived already: never a gap. */
				ck_assert_msg((size_t)idx < next[l], "%s%ld arrived before %s%zu (lane order broken)",
						lanes[l].prefix, idx, lanes[l].prefix, next[l]);
				repeats++;
			}
		}
		if(seen_total == total){
			break;
		}
		usleep(100000);
	}
	for(size_t l = 0; l < NLANES; l++){
		ck_assert_msg(next[l] == lanes[l].n, "lane of %s: %zu of %zu arrived", lanes[l].prefix, next[l], lanes[l].n);
	}
	fprintf(stderr, "lanes kill: %zu messages in 3 lanes, %zu received, %zu repeated "
			"(link killed after %zu, edge after %zu)\n", total, fbh_sub_count(sub), repeats, at_kill1, at_kill2);
	/* At most the window of each of the two connections that broke. */
	ck_assert_uint_le(repeats, 2 * MAX_INFLIGHT);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	free((char *)co.extra);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fault-lanes");
	TCase *tc = fbh_tcase("lanes");

	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_sigkill_of_link_and_edge_during_a_three_lane_drain);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
