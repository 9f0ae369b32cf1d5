/* Fault suite: forwarding never stops while the link says "connected".
 *
 * The scenario of issue 13 point 0: 3,000 QoS 1 messages on three matched topics, published as
 * fast as one client with a window of 50 can, while busy loops keep both CPUs loaded. Each run
 * starts a fresh cloud and edge and asserts that every message arrives, exactly once and in order
 * per topic, within the deadline, with no reconnect and no stall detected (a stall guard that had
 * to step in would hide the bug it guards against). Runs: FB_STALL_RUNS (default 20). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define N_MSGS 3000
#define N_TOPICS 3
#define DELIVERY_MS 60000

static const char *local_topics[N_TOPICS] = { "local/telemetry/a", "local/telemetry/b/c", "local/telemetry" };
static const char *cloud_topics[N_TOPICS] = { "edge/site-A/telemetry/a", "edge/site-A/telemetry/b/c",
	"edge/site-A/telemetry" };

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Busy loops at normal priority, PER_CPU on every CPU. Returns how many were started. */
static int start_burners(pid_t *pids, int max, int per_cpu)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	int n = 0;

	for(long i = 0; i < cpus * per_cpu && n < max; i++){
		pid_t p = fork();
		if(p == 0){
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			for(volatile unsigned long spin = 0; ; spin++){
			}
		}
		ck_assert_int_gt(p, 0);
		pids[n++] = p;
	}
	return n;
}

static void stop_burners(const pid_t *pids, int n)
{
	for(int i = 0; i < n; i++){
		kill(pids[i], SIGKILL);
		waitpid(pids[i], NULL, 0);
	}
}

static int env_int(const char *name, int def)
{
	const char *v = getenv(name);

	return v && *v ? atoi(v) : def;
}

/* Index of cloud topic T, or -1. */
static int topic_index(const char *t)
{
	for(int i = 0; i < N_TOPICS; i++){
		if(!strcmp(t, cloud_topics[i])){
			return i;
		}
	}
	return -1;
}

/* One run; returns its duration from the first publish to the last arrival, ms. */
static int64_t one_run(int run, int per_cpu)
{
	struct fbh_broker cloud, edge;
	struct fbh_client_opts po = { .max_inflight = 50 };
	struct fbh_sub *sub, *sys;
	struct fbh_pub *pub;
	pid_t burners[64];
	int nburn;
	char name[32];
	long next[N_TOPICS] = { 0 };
	int64_t t0, t1;
	size_t got;

	snprintf(name, sizeof(name), "cloud%d", run);
	fbh_broker_init(&cloud, name);
	snprintf(name, sizeof(name), "edge%d", run);
	fbh_broker_init(&edge, name);
	start_cloud(&cloud, NULL);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "edge/site-A/telemetry/#", 1);
	ck_assert_ptr_nonnull(sub);
	start_edge(&edge, cloud.port, FBH_YAML_STANDARD, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	if(!env_int("FB_STALL_EARLY", 0)){
		ck_assert(sys_wait(sys, "state", "connected", 20000));
	}

	nburn = start_burners(burners, 64, per_cpu);
	pub = fbh_pub_connect(edge.port, &po);
	ck_assert_ptr_nonnull(pub);
	t0 = now_ms();
	for(size_t i = 0; i < N_MSGS; i++){
		char payload[32];
		int len = snprintf(payload, sizeof(payload), "m%zu", i);
		ck_assert_int_ge(fbh_pub_send(pub, local_topics[i % N_TOPICS], payload, len, 1, false, NULL), 0);
	}
	ck_assert(fbh_pub_wait_all(pub, DELIVERY_MS));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);

	got = fbh_sub_wait_count(sub, N_MSGS, (int)(t0 + DELIVERY_MS - now_ms()));
	t1 = now_ms();
	stop_burners(burners, nburn);
	if(got < N_MSGS){
		static const char *keys[] = { "state", "spool/messages", "reconnects", "edge_to_cloud/forwarded", "stalls" };
		for(size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++){
			fprintf(stderr, "run %d: %s = %s\n", run, keys[k], sys_value(sys, keys[k]) ? sys_value(sys, keys[k]) : "(none)");
		}
		fbh_broker_dump_log(&edge);
	}
	ck_assert_msg(got >= N_MSGS, "run %d: %zu of %d messages arrived within %d ms", run, got, N_MSGS, DELIVERY_MS);
	usleep(300000);
	ck_assert_uint_eq(fbh_sub_count(sub), N_MSGS);

	/* Exactly once and in order, per topic (and so overall: one lane). */
	for(size_t i = 0; i < N_MSGS; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		int t = topic_index(m->topic);
		long k = payload_index(m, "m");
		ck_assert_msg(t >= 0, "run %d: unexpected topic %s", run, m->topic);
		ck_assert_msg(k == next[t] * N_TOPICS + t, "run %d: message %zu on %s is '%s', expected m%ld",
				run, i, m->topic, (const char *)m->payload, next[t] * N_TOPICS + t);
		ck_assert_int_eq(m->qos, 1);
		next[t]++;
	}
	for(int t = 0; t < N_TOPICS; t++){
		ck_assert_int_eq(next[t], N_MSGS / N_TOPICS);
	}
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", N_MSGS, 10000));
	/* No connection was replaced: the link never believed it lost one, nor had to unjam one. */
	ck_assert(sys_wait_u64(sys, "reconnects", 0, 5000));
	ck_assert(sys_wait_u64(sys, "stalls", 0, 5000));
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	return t1 - t0;
}

START_TEST(test_forwarding_under_cpu_load_never_stalls)
{
	int runs = env_int("FB_STALL_RUNS", 20), per_cpu = env_int("FB_STALL_BURNERS_PER_CPU", 1);
	int64_t total = 0, worst = 0;

	for(int r = 0; r < runs; r++){
		int64_t ms = one_run(r, per_cpu);
		fprintf(stderr, "run %d: %d messages in %lld ms\n", r, N_MSGS, (long long)ms);
		total += ms;
		if(ms > worst){
			worst = ms;
		}
	}
	fprintf(stderr, "%d runs: every message delivered; mean %lld ms, worst %lld ms\n", runs,
			(long long)(total / runs), (long long)worst);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("stall");
	TCase *tc = fbh_tcase("stall");

	tcase_set_timeout(tc, 900);
	tcase_add_test(tc, test_forwarding_under_cpu_load_never_stalls);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
