/* Fault test (test process): a matched message the broker thread cannot stage, for an error other
 * than a full spool, is refused and counted, never lost in silence. The error is real: the edge
 * broker's descriptor limit (RLIMIT_NOFILE) is lowered while it runs (prlimit(2)) to its lowest
 * free descriptor, so the file of its own that a large message needs (one above a quarter of a
 * staging file) cannot be opened (EMFILE). The MQTT v5 publisher gets 0x87, the message counts in
 * edge_to_cloud/dropped/error and rules/0/dropped and is logged once; a small message meanwhile
 * (staged inline, no descriptor needed) goes through; with the limit back the large one goes
 * through too. The cloud gets exactly the accepted messages, in order, byte for byte. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common.h"

/* Above a quarter of a staging file of the default spool.max_size (4 MiB). */
#define BIG ((1u << 20) + 1)

/* The lowest descriptor number that process PID has free: with RLIMIT_NOFILE there, its next
 * open() fails. */
static int lowest_free_fd(pid_t pid)
{
	static bool used[4096];
	char dir[64];
	struct dirent *e;
	DIR *d;

	memset(used, 0, sizeof(used));
	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	while((e = readdir(d)) != NULL){
		char *end;
		long n = strtol(e->d_name, &end, 10);

		if(e->d_name[0] != '\0' && *end == '\0' && n >= 0 && n < 4096){
			used[n] = true;
		}
	}
	closedir(d);
	for(int i = 0; i < 4096; i++){
		if(!used[i]){
			return i;
		}
	}
	ck_abort_msg("no free descriptor below 4096");
	return -1;
}

START_TEST(test_message_that_cannot_be_staged_is_refused_and_counted)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sys, *sub;
	struct fbh_pub *pub;
	struct rlimit old, low;
	const struct fbh_msg *m;
	char *big = malloc(BIG);

	ck_assert_ptr_nonnull(big);
	for(size_t i = 0; i < BIG; i++){
		big[i] = (char)('a' + i % 26);
	}
	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	start_edge(&edge, cloud.port, FBH_YAML_STANDARD, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait(sys, "state", "connected", 10000));
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "edge/#", 1);
	ck_assert_ptr_nonnull(sub);
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);

	/* No descriptor left: the large message is refused, the small one is not. */
	ck_assert_int_eq(prlimit(edge.pid, RLIMIT_NOFILE, NULL, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)lowest_free_fd(edge.pid);
	ck_assert_int_eq(prlimit(edge.pid, RLIMIT_NOFILE, &low, NULL), 0);
	ck_assert_int_eq(fbh_pub_send(pub, "local/telemetry/big", big, BIG, 1, false, NULL), 0);
	ck_assert_int_eq(fbh_pub_send(pub, "local/telemetry/small", "s0", 2, 1, false, NULL), 1);
	ck_assert(fbh_pub_wait_all(pub, 30000));
	ck_assert_int_eq(fbh_pub_reason(pub, 0), FBH_RC_NOT_AUTHORIZED);
	ck_assert_int_lt(fbh_pub_reason(pub, 1), 0x80);
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/error", 1, 10000));
	ck_assert(sys_wait_u64(sys, "rules/0/dropped", 1, 10000));
	ck_assert(fbh_wait_log(&edge, "cannot spool a message on local/telemetry/big: Too many open files; "
			"refused and counted in edge_to_cloud/dropped/error", 5000));

	/* The limit back: the same message goes through. */
	ck_assert_int_eq(prlimit(edge.pid, RLIMIT_NOFILE, &old, NULL), 0);
	ck_assert_int_eq(fbh_pub_send(pub, "local/telemetry/big", big, BIG, 1, false, NULL), 2);
	ck_assert(fbh_pub_wait_all(pub, 30000));
	ck_assert_int_lt(fbh_pub_reason(pub, 2), 0x80);
	ck_assert(fbh_wait_log(&edge, "matched messages are spooled again", 5000));

	ck_assert(wait_exactly(sub, 2, 30000, 1000));
	m = fbh_sub_msg(sub, 0);
	ck_assert_str_eq(m->topic, "edge/site-A/telemetry/small");
	ck_assert_int_eq(m->payloadlen, 2);
	ck_assert_int_eq(memcmp(m->payload, "s0", 2), 0);
	m = fbh_sub_msg(sub, 1);
	ck_assert_str_eq(m->topic, "edge/site-A/telemetry/big");
	ck_assert_int_eq(m->payloadlen, (int)BIG);
	ck_assert_int_eq(memcmp(m->payload, big, BIG), 0);
	/* Three publishes: two forwarded, one refused and counted. */
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 2, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/error", 1, 5000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/full", 0, 5000));
	ck_assert(sys_wait_u64(sys, "rules/0/forwarded", 2, 5000));
	fbh_pub_close(pub);
	fbh_sub_stop(sub);
	fbh_sub_stop(sys);
	free(big);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("errors");
	TCase *tc = fbh_tcase("errors");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_message_that_cannot_be_staged_is_refused_and_counted);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
