/* Fault test (test process): a matched message the broker thread cannot stage, for an error other
 * than a full spool, is refused and counted, never lost in silence. The error is real: the edge
 * broker's descriptor limit (RLIMIT_NOFILE) is lowered while it runs (prlimit(2)) to its lowest
 * free descriptor, so the file of its own that a large message needs (one above a quarter of a
 * staging file) cannot be opened (EMFILE). The MQTT v5 publisher gets 0x87, the message counts in
 * edge_to_cloud/dropped/error and rules/0/dropped and is logged once; a small message meanwhile
 * (staged inline, no descriptor needed) goes through; with the limit back the large one goes
 * through too. The cloud gets exactly the accepted messages, in order, byte for byte.
 *
 * The other way, a cloud command too large for the cloud-to-edge ring (its own file in the spool
 * folder) that the broker thread cannot open for the same reason waits, with the command behind it,
 * instead of being dropped, and both reach the local subscriber once the limit is back. So do they
 * when the link process cannot write that file (a folder where it writes it). */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "c2e.h" /* FB_C2E_RING, FB_C2E_STEM */
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

/* The large command BIG (BIG_LEN bytes) on local/commands/firmware, then "a" on
 * local/commands/after, reach LOCAL once each, in that order, byte for byte. */
static void check_large_then_small(struct fbh_sub *local, const uint8_t *big, size_t big_len)
{
	const struct fbh_msg *m;

	ck_assert(wait_exactly(local, 2, 30000, 1000));
	m = fbh_sub_msg(local, 0);
	ck_assert_str_eq(m->topic, "local/commands/firmware");
	ck_assert_int_eq(m->payloadlen, (int)big_len);
	ck_assert(memcmp(m->payload, big, big_len) == 0);
	m = fbh_sub_msg(local, 1);
	ck_assert_str_eq(m->topic, "local/commands/after");
	ck_assert_int_eq(m->payloadlen, 1);
	ck_assert(memcmp(m->payload, "a", 1) == 0);
}

/* A cloud command larger than half the cloud-to-edge ring travels to the broker thread in a file
 * of its own. With the edge broker out of descriptors it cannot open that file (EMFILE): the
 * command and the small one behind it wait (nothing reaches the local subscriber for a second,
 * cloud_to_edge/dropped stays 0, the file stays, one ERR line); with the limit back the local
 * subscriber gets the large one and then the small one, byte for byte, once each. */
START_TEST(test_large_command_that_cannot_be_opened_waits_and_arrives_in_order)
{
	const size_t big_len = FB_C2E_RING / 2 + 1;
	struct fbh_broker cloud, edge;
	struct fbh_sub *sys, *local;
	struct fbh_pub *pub;
	struct rlimit old, low;
	uint8_t *big = malloc(big_len);

	ck_assert_ptr_nonnull(big);
	for(size_t i = 0; i < big_len; i++){
		big[i] = (uint8_t)(i * 7 + i / 4096);
	}
	start_commands(&cloud, &edge, &local, &sys);
	pub = fbh_pub_connect(cloud.port2, &cloud_tester);
	ck_assert_ptr_nonnull(pub);

	/* No descriptor left in the edge broker: the large command's file cannot be opened. */
	ck_assert_int_eq(prlimit(edge.pid, RLIMIT_NOFILE, NULL, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)lowest_free_fd(edge.pid);
	ck_assert_int_eq(prlimit(edge.pid, RLIMIT_NOFILE, &low, NULL), 0);
	ck_assert_int_eq(fbh_pub_send(pub, "cloud/commands/site-A/firmware", big, (int)big_len, 1, false, NULL), 0);
	ck_assert_int_eq(fbh_pub_send(pub, "cloud/commands/site-A/after", "a", 1, 1, false, NULL), 1);
	ck_assert(fbh_pub_wait_all(pub, 30000));
	/* The broker thread has met the large command (either way it logs a line naming it), and a
	 * second later still nothing has reached the local subscriber, nothing is dropped. */
	ck_assert(fbh_wait_log(&edge, "spool \"in\" record ", 30000));
	usleep(1000 * 1000);
	ck_assert_uint_eq(fbh_sub_count(local), 0);
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/dropped", 0, 5000));
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/injected", 0, 5000));
	ck_assert_uint_eq(spool_files(&edge, FB_C2E_STEM), 1);
	ck_assert(fbh_broker_log_line_has(&edge, "cannot be read from ", ": Too many open files; it and the "
			"cloud messages behind it wait and are tried again every 100 ms"));

	/* The limit back: both arrive, the large one first. */
	ck_assert_int_eq(prlimit(edge.pid, RLIMIT_NOFILE, &old, NULL), 0);
	check_large_then_small(local, big, big_len);
	ck_assert(fbh_wait_log(&edge, "cloud messages are injected again", 5000));
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/injected", 2, 10000));
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/dropped", 0, 5000));
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/pending", 0, 10000));
	ck_assert_uint_eq(spool_files(&edge, FB_C2E_STEM), 0);
	ck_assert_uint_eq(log_count(&edge, "cannot be read from "), 1);
	fbh_pub_close(pub);
	fbh_sub_stop(local);
	fbh_sub_stop(sys);
	free(big);
}
END_TEST

/* A cloud command larger than half the cloud-to-edge ring reaches the broker thread in a file of
 * its own, which the link process writes (aside, then renamed) once the command is in spool "in".
 * When that write fails (here EISDIR: a folder where it writes; a full disk is the common case),
 * the command and the one behind it wait in spool "in": one ERR line names the file's folder and
 * the reason, nothing reaches the local subscriber for 2.5 s, nothing is dropped. Once the write
 * can succeed, the two arrive in order, byte for byte, once each, with one NOTICE line. */
START_TEST(test_large_command_whose_file_cannot_be_written_waits_and_arrives_in_order)
{
	const size_t big_len = FB_C2E_RING / 2 + 1;
	struct fbh_broker cloud, edge;
	struct fbh_sub *sys, *local;
	struct fbh_pub *pub;
	uint8_t *big = malloc(big_len);
	char *blocker;

	ck_assert_ptr_nonnull(big);
	for(size_t i = 0; i < big_len; i++){
		big[i] = (uint8_t)(i * 7 + i / 4096);
	}
	start_commands(&cloud, &edge, &local, &sys);
	/* The first cloud message of a new spool is record 1 of spool "in". */
	blocker = fbh_strdupf("%s/spool/%s1.new", edge.dir, FB_C2E_STEM);
	ck_assert_int_eq(mkdir(blocker, 0700), 0);
	pub = fbh_pub_connect(cloud.port2, &cloud_tester);
	ck_assert_ptr_nonnull(pub);
	ck_assert_int_eq(fbh_pub_send(pub, "cloud/commands/site-A/firmware", big, (int)big_len, 1, false, NULL), 0);
	ck_assert_int_eq(fbh_pub_send(pub, "cloud/commands/site-A/after", "a", 1, 1, false, NULL), 1);
	ck_assert(fbh_pub_wait_all(pub, 30000));
	ck_assert(fbh_wait_log(&edge, "cloud message 1 (", 30000));
	ck_assert(fbh_broker_log_line_has(&edge, " bytes) cannot be handed to the broker: writing its file in ",
			"/spool failed: Is a directory; it and the cloud messages behind it wait in spool \"in\" and "
			"are tried again every second"));
	usleep(2500 * 1000);
	ck_assert_uint_eq(fbh_sub_count(local), 0);
	ck_assert_uint_eq(log_count(&edge, "cannot be handed to the broker"), 1);
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/dropped", 0, 5000));
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/injected", 0, 5000));
	ck_assert_uint_eq(spool_files(&edge, FB_C2E_STEM), 1); /* the folder */

	/* The write can succeed again: both arrive, the large one first. */
	ck_assert_int_eq(rmdir(blocker), 0);
	check_large_then_small(local, big, big_len);
	ck_assert(fbh_wait_log(&edge, "cloud message 1 handed to the broker: the cloud messages waiting in spool \"in\" go on", 5000));
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/injected", 2, 10000));
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/pending", 0, 10000));
	ck_assert(sys_wait_u64(sys, "cloud_to_edge/dropped", 0, 5000));
	ck_assert_uint_eq(spool_files(&edge, FB_C2E_STEM), 0);
	ck_assert_uint_eq(log_count(&edge, "cannot be handed to the broker"), 1);
	fbh_pub_close(pub);
	fbh_sub_stop(local);
	fbh_sub_stop(sys);
	free(blocker);
	free(big);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("errors");
	TCase *tc = fbh_tcase("errors");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_message_that_cannot_be_staged_is_refused_and_counted);
	tcase_add_test(tc, test_large_command_that_cannot_be_opened_waits_and_arrives_in_order);
	tcase_add_test(tc, test_large_command_whose_file_cannot_be_written_waits_and_arrives_in_order);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
