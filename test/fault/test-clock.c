/* Fault test (test process): the edge broker's wall clock set back by an hour (clockback.c
 * preloaded: NTP stepping back a clock that ran ahead, a VM snapshot restored) while the bridge
 * runs. The broker's tick looks after the link process on a monotonic clock: a link process
 * killed after the step is restarted within seconds, the status goes on, and what is published
 * meanwhile reaches the cloud once. Before, the tick used the wall clock, and nothing restarted
 * the link process (nor published the status) until the clock had caught up an hour later.
 */
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include "common.h"

START_TEST(test_a_wall_clock_set_back_does_not_stop_the_looking_after_the_link_process)
{
	const char *shim = getenv("FB_CLOCKBACK_PATH"), *asan = getenv("FB_BROKER_PRELOAD");
	struct fbh_broker cloud, edge;
	struct fbh_sub *sys, *sub;
	char *flag = fbh_strdupf("%s/clock-back", fbh_tmpdir()), *pre;
	pid_t first, next;

	/* After the sanitizer's runtime, when a sanitizer build preloads one. */
	ck_assert_ptr_nonnull(shim);
	pre = asan && asan[0] ? fbh_strdupf("%s:%s", asan, shim) : fbh_strdupf("%s", shim);
	ck_assert_int_eq(setenv("FB_BROKER_PRELOAD", pre, 1), 0);
	ck_assert_int_eq(setenv("FB_CLOCKBACK_FILE", flag, 1), 0);
	ck_assert_int_eq(setenv("FB_CLOCKBACK_S", "3600", 1), 0);
	start_cloud_and_edge(&cloud, &edge, FBH_YAML_STANDARD, &sub, &sys);
	ck_assert(sys_wait(sys, "state", "connected", 10000));
	first = link_pid_wait(edge.pid);

	fbh_write_file(flag, "", 0644); /* the edge's wall clock is an hour back from now on */
	usleep(1500 * 1000);            /* ticks have seen it */
	fbh_broker_log_mark(&edge);
	ck_assert_int_eq(kill(first, SIGKILL), 0);
	ck_assert_msg(fbh_wait_log(&edge, "restarting the link process", 15000), "no restart");
	next = link_pid_wait(edge.pid);
	ck_assert_int_ne(next, first);
	ck_assert(sys_wait(sys, "state", "connected", 20000));
	ck_assert_int_eq(fbh_publish(edge.port, NULL, "local/telemetry/after", "a", 1, 1, NULL, 10000), 1);
	ck_assert(wait_exactly(sub, 1, 20000, 1000));
	ck_assert_str_eq(fbh_sub_msg(sub, 0)->topic, "edge/site-A/telemetry/after");
	/* The one message PUBACKed: delivered, nothing counted away. */
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 1, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/full", 0, 5000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/error", 0, 5000));
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 5000));
	ck_assert_uint_eq(log_count(&edge, "restarting the link process"), 1);
	fbh_sub_stop(sub);
	fbh_sub_stop(sys);
	free(flag);
	free(pre);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("clock");
	TCase *tc = fbh_tcase("clock");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_a_wall_clock_set_back_does_not_stop_the_looking_after_the_link_process);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
