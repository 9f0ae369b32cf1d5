/* Fault tests, run by the test process: the link process stopped with SIGSTOP while matched
 * traffic flows. The broker thread must never wait for it: a client on an unmatched topic keeps
 * its PUBACKs fast throughout; the hung link process is detected and replaced (or, with a long
 * link_timeout, the staging channel fills and spool.on_full applies at once); afterwards every
 * message the edge acknowledged reaches the cloud, or is counted under dropped/full. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <mqtt_protocol.h>

#include "common.h"

#define CLOUD_TOPIC "edge/site-A/telemetry/#"
#define LOAD_TOPIC "local/telemetry/load"
#define LOAD_RATE 500        /* messages per second */
#define LOAD_SIZE 1024       /* bytes per payload */
#define LOAD_MAX 60000
#define PROBE_TOPIC "other/probe"
#define PROBE_PERIOD_MS 20
#define PROBE_MAX 10000
#define STOP_S 30            /* how long the link process is stopped */
#define P99_LIMIT_MS 50.0
#define CONTROL_MARGIN_MS 25.0

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- a client of its own, publishing at a fixed rate ------------------------------------------ */

/* One publisher with its own libmosquitto network thread (mosquitto_loop_start): its PUBACKs are
 * taken the moment they arrive, whatever the test's main thread does. Messages are numbered by
 * their mid (a fresh client assigns 1, 2, 3, ...; fewer than 65535 here). */
struct pacer {
	const char *topic;
	unsigned period_us;
	size_t size;
	int port;
	pthread_t thread;
	atomic_bool stop;
	atomic_long sent;                /* publishes handed to libmosquitto */
	atomic_long acked;               /* PUBACKs received */
	_Atomic uint64_t sent_ns[LOAD_MAX];
	_Atomic int reason[LOAD_MAX];    /* -1 until acknowledged */
	_Atomic uint64_t acked_ns[LOAD_MAX];
	struct mosquitto *mosq;
};

static void pacer_on_publish(struct mosquitto *m, void *ud, int mid, int rc, const mosquitto_property *p)
{
	struct pacer *pc = ud;
	uint64_t t = now_ns();
	(void)m; (void)p;

	if(mid >= 1 && mid <= LOAD_MAX){
		atomic_store(&pc->acked_ns[mid - 1], t);
		atomic_store(&pc->reason[mid - 1], rc);
		atomic_fetch_add(&pc->acked, 1);
	}
}

static void *pacer_main(void *arg)
{
	struct pacer *pc = arg;
	char *payload = malloc(pc->size);
	struct timespec next;

	if(payload == NULL){
		return NULL;
	}
	memset(payload, 'x', pc->size);
	clock_gettime(CLOCK_MONOTONIC, &next);
	while(!atomic_load(&pc->stop) && atomic_load(&pc->sent) < LOAD_MAX){
		long i = atomic_load(&pc->sent);
		int mid, n = snprintf(payload, pc->size, "k%08ld", i);

		payload[n] = '-';
		atomic_store(&pc->sent_ns[i], now_ns());
		if(mosquitto_publish_v5(pc->mosq, &mid, pc->topic, (int)pc->size, payload, 1, false, NULL)
				!= MOSQ_ERR_SUCCESS){
			break;
		}
		if(mid != i + 1){
			break; /* the test then finds the acknowledgements short */
		}
		atomic_store(&pc->sent, i + 1);
		next.tv_nsec += (long)pc->period_us * 1000;
		while(next.tv_nsec >= 1000000000L){
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		while(clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR){
		}
	}
	free(payload);
	return NULL;
}

static struct pacer *pacer_start(int port, const struct fbh_client_opts *opts, const char *id, const char *topic,
		unsigned period_us, size_t size)
{
	struct pacer *pc = calloc(1, sizeof(*pc));

	ck_assert_ptr_nonnull(pc);
	pc->topic = topic;
	pc->period_us = period_us;
	pc->size = size;
	pc->port = port;
	for(size_t i = 0; i < LOAD_MAX; i++){
		atomic_store(&pc->reason[i], -1);
	}
	pc->mosq = mosquitto_new(id, true, pc);
	ck_assert_ptr_nonnull(pc->mosq);
	mosquitto_int_option(pc->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_int_option(pc->mosq, MOSQ_OPT_TCP_NODELAY, 1);
	mosquitto_publish_v5_callback_set(pc->mosq, pacer_on_publish);
	if(opts && opts->username){
		ck_assert_int_eq(mosquitto_username_pw_set(pc->mosq, opts->username, opts->password), MOSQ_ERR_SUCCESS);
	}
	ck_assert_int_eq(mosquitto_connect(pc->mosq, "127.0.0.1", port, 60), MOSQ_ERR_SUCCESS);
	ck_assert_int_eq(mosquitto_loop_start(pc->mosq), MOSQ_ERR_SUCCESS);
	ck_assert_int_eq(pthread_create(&pc->thread, NULL, pacer_main, pc), 0);
	return pc;
}

/* Stops publishing and waits (up to TIMEOUT_MS) for every PUBACK. Returns true when all came. */
static bool pacer_stop(struct pacer *pc, int timeout_ms)
{
	uint64_t until = now_ns() + (uint64_t)timeout_ms * 1000000u;

	atomic_store(&pc->stop, true);
	pthread_join(pc->thread, NULL);
	while(atomic_load(&pc->acked) < atomic_load(&pc->sent) && now_ns() < until){
		usleep(10000);
	}
	return atomic_load(&pc->acked) == atomic_load(&pc->sent);
}

static void pacer_free(struct pacer *pc)
{
	mosquitto_disconnect(pc->mosq);
	mosquitto_loop_stop(pc->mosq, false);
	mosquitto_destroy(pc->mosq);
	free(pc);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* PUBACK latency of the probe publishes sent from FROM_NS to before TO_NS, in ms (one never
 * acknowledged counts as infinite): its 99th percentile and maximum. */
static void probe_latency(struct pacer *pc, uint64_t from_ns, uint64_t to_ns, double *p99, double *max)
{
	long sent = atomic_load(&pc->sent), n = 0;
	double *v = calloc((size_t)sent + 1, sizeof(*v));

	ck_assert_ptr_nonnull(v);
	for(long i = 0; i < sent; i++){
		uint64_t a = atomic_load(&pc->acked_ns[i]), t = atomic_load(&pc->sent_ns[i]);
		if(t >= from_ns && t < to_ns){
			v[n++] = a ? (double)(a - t) / 1e6 : 1e12;
		}
	}
	ck_assert_int_gt(n, 0);
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	*p99 = v[(99 * n + 99) / 100 - 1]; /* the smallest value that 99 % of them do not exceed */
	*max = v[n - 1];
	free(v);
}

/* Prints the N slowest probe publishes with their send time relative to T0 (diagnostics). */
static void probe_worst(struct pacer *pc, uint64_t t0, int n)
{
	long sent = atomic_load(&pc->sent);
	char *used = calloc((size_t)sent + 1, 1);

	ck_assert_ptr_nonnull(used);
	for(int k = 0; k < n; k++){
		long worst = -1;
		double wv = -1;
		for(long i = 0; i < sent; i++){
			uint64_t a = atomic_load(&pc->acked_ns[i]);
			double v = a ? (double)(a - atomic_load(&pc->sent_ns[i])) / 1e6 : 1e12;
			if(!used[i] && v > wv){
				wv = v;
				worst = i;
			}
		}
		if(worst < 0){
			break;
		}
		used[worst] = 1;
		fprintf(stderr, "  probe %ld: %.1f ms, sent at %+.2f s from SIGSTOP\n", worst, wv,
				((double)atomic_load(&pc->sent_ns[worst]) - (double)t0) / 1e9);
	}
	free(used);
}

/* Writes every publish of PC (send time relative to T0 in s, latency in ms) to fbh_tmpdir()/NAME,
 * for a look afterwards (FB_KEEP_TMP). */
static void pacer_dump(struct pacer *pc, uint64_t t0, const char *name)
{
	char *path = fbh_strdupf("%s/%s", fbh_tmpdir(), name);
	FILE *f = fopen(path, "w");

	if(f){
		for(long i = 0; i < atomic_load(&pc->sent); i++){
			uint64_t t = atomic_load(&pc->sent_ns[i]), a = atomic_load(&pc->acked_ns[i]);
			fprintf(f, "%ld %.3f %.1f\n", i, ((double)t - (double)t0) / 1e9, a ? (double)(a - t) / 1e6 : -1.0);
		}
		fclose(f);
	}
	free(path);
}

/* ---- the link process ------------------------------------------------------------------------- */

/* ---- accounting --------------------------------------------------------------------------------- */

/* Waits until the cloud has received every message the loader had acknowledged with success,
 * except exactly DROPPED of them (counted under dropped/full), and asserts that it received
 * nothing else: no message the edge refused, none it never acknowledged. Returns the number of
 * distinct messages delivered. */
static const char *sys_or(struct fbh_sub *sys, const char *key)
{
	const char *v = sys_value(sys, key);

	return v ? v : "(none)";
}

/* The first message acknowledged with success that SEEN does not hold, or -1. */
static long first_missing(struct pacer *ld, const char *seen)
{
	for(long i = 0; i < atomic_load(&ld->sent); i++){
		if(atomic_load(&ld->reason[i]) >= 0 && atomic_load(&ld->reason[i]) < 0x80 && !seen[i]){
			return i;
		}
	}
	return -1;
}

static long assert_delivered(struct fbh_sub *sub, struct fbh_sub *sys, struct pacer *ld, long ok, long dropped,
		long *dups)
{
	long sent = atomic_load(&ld->sent), distinct = 0;
	char *seen = calloc((size_t)sent + 1, 1);

	ck_assert_ptr_nonnull(seen);
	for(int tries = 0; tries < 1200; tries++){
		size_t cnt = fbh_sub_count(sub);

		memset(seen, 0, (size_t)sent + 1);
		distinct = 0;
		*dups = 0;
		for(size_t i = 0; i < cnt; i++){
			const struct fbh_msg *m = fbh_sub_msg(sub, i);
			long k = -1;

			ck_assert_int_eq(m->payloadlen, LOAD_SIZE);
			ck_assert_int_eq(sscanf(m->payload, "k%8ld-", &k), 1);
			ck_assert_int_ge(k, 0);
			ck_assert_int_lt(k, sent);
			ck_assert_msg(atomic_load(&ld->reason[k]) >= 0 && atomic_load(&ld->reason[k]) < 0x80,
					"k%ld reached the cloud, but the edge answered it with reason %d", k,
					atomic_load(&ld->reason[k]));
			if(seen[k]){
				(*dups)++;
			}else{
				seen[k] = 1;
				distinct++;
			}
		}
		if(distinct + dropped >= ok){
			break;
		}
		usleep(100000);
	}
	if(distinct + dropped < ok){
		fprintf(stderr, "missing at the cloud: first k%ld; status: state %s, spool/messages %s, forwarded %s, "
				"reconnects %s, stalls %s\n", first_missing(ld, seen), sys_or(sys, "state"),
				sys_or(sys, "spool/messages"), sys_or(sys, "edge_to_cloud/forwarded"), sys_or(sys, "reconnects"),
				sys_or(sys, "stalls"));
	}
	usleep(1000000); /* nothing more may come */
	ck_assert_uint_eq(fbh_sub_count(sub), (size_t)(distinct + *dups));
	ck_assert_msg(distinct + dropped == ok, "%ld delivered + %ld dropped/full != %ld acknowledged", distinct,
			dropped, ok);
	free(seen);
	return distinct;
}

static long status_u64(struct fbh_sub *sys, const char *key)
{
	const char *v = sys_value(sys, key);

	ck_assert_msg(v != NULL, "no status value %s", key);
	return strtol(v, NULL, 10);
}

/* The scenario. YAML: the edge's plugin configuration. EXPECT_REPLACED: the link process is to be
 * killed as hung and replaced while stopped (else it is continued after STOP_S and must survive). */
static void sigstop_scenario(const char *yaml, bool expect_replaced, bool reject)
{
	struct fbh_broker cloud, edge, ctl;
	struct fbh_sub *sub, *sys;
	struct pacer *load, *probe, *control;
	char *conf;
	pid_t first, second = 0;
	uint64_t stopped_ns;
	double p99, max, base_p99, base_max, ctl_p99, ctl_max;
	long ok = 0, refused = 0, dropped, delivered, dups;
	bool stalled_seen = false;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	fbh_broker_init(&ctl, "control");
	start_cloud(&cloud, NULL);
	conf = fbh_strdupf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nset_tcp_nodelay true\n",
			ctl.port);
	ck_assert_int_eq(fbh_broker_start(&ctl, conf), 0);
	free(conf);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, CLOUD_TOPIC, 1);
	ck_assert_ptr_nonnull(sub);
	/* TCP_NODELAY on the brokers' side (and on the clients'): else a PUBACK written while the
	 * previous one is not yet acknowledged by TCP waits for the client's delayed ACK, which rides
	 * on its next publish (Nagle): the probe would measure its own period, 20 ms, not the broker. */
	start_edge(&edge, cloud.port, yaml, "set_tcp_nodelay true\n");
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	/* The link process logs the connection at once, $SYS up to 1.5 s later. */
	ck_assert(fbh_wait_log(&edge, "connected to", 20000));
	first = link_pid(edge.pid);
	ck_assert_int_gt(first, 0);
	/* The machine may be shared with other test runs and builds (a load of 10 on 2 cores): the
	 * edge broker, its link process (and the ones it forks later) and this process's client
	 * threads (created below) run at nice -10, so that unrelated processes do not count against
	 * the bridge. Broker and link process have the same priority: the competition between them,
	 * which is what the bound is about, is measured as it is. Without the privilege to do so the
	 * test runs as it is. A control broker too: a control probe measures it at the same time. */
	if(setpriority(PRIO_PROCESS, (id_t)edge.pid, -10) == 0){
		ck_assert_int_eq(setpriority(PRIO_PROCESS, (id_t)first, -10), 0);
		ck_assert_int_eq(setpriority(PRIO_PROCESS, (id_t)ctl.pid, -10), 0);
		ck_assert_int_eq(setpriority(PRIO_PROCESS, 0, -10), 0);
	}else{
		fprintf(stderr, "cannot raise the priority of the edge broker (%s): measuring as it is\n", strerror(errno));
	}

	load = pacer_start(edge.port, NULL, "loader", LOAD_TOPIC, 1000000 / LOAD_RATE, LOAD_SIZE);
	probe = pacer_start(edge.port, NULL, "probe", PROBE_TOPIC, PROBE_PERIOD_MS * 1000, 16);
	/* The same probe against a broker of its own, which nothing else uses: what the machine and
	 * this process cost at the same time. */
	control = pacer_start(ctl.port, NULL, "control", PROBE_TOPIC, PROBE_PERIOD_MS * 1000, 16);
	sleep(3);
	ck_assert_int_gt(atomic_load(&load->acked), 0);

	fbh_broker_log_mark(&edge);
	ck_assert_int_eq(kill(first, SIGSTOP), 0);
	stopped_ns = now_ns();
	while(now_ns() - stopped_ns < (uint64_t)STOP_S * 1000000000u){
		const char *st = sys_value(sys, "state");
		stalled_seen |= st && strcmp(st, "stalled") == 0;
		if(second == 0){
			pid_t p = link_pid(edge.pid);
			second = p != first ? p : 0;
		}
		usleep(20000);
	}
	if(second == 0){
		/* Still the stopped one (it must be our edge's child, checked by link_pid()). */
		ck_assert_int_eq(link_pid(edge.pid), first);
		ck_assert_int_eq(kill(first, SIGCONT), 0);
	}
	sleep(5); /* traffic goes on after the link process is back */
	ck_assert(pacer_stop(probe, 30000));
	ck_assert(pacer_stop(control, 30000));
	ck_assert(pacer_stop(load, 60000));

	pacer_dump(probe, stopped_ns, "probe.txt");
	pacer_dump(control, stopped_ns, "control.txt");
	probe_latency(probe, 0, UINT64_MAX, &p99, &max);
	probe_latency(probe, 0, stopped_ns, &base_p99, &base_max);
	for(long i = 0; i < atomic_load(&load->sent); i++){
		int rc = atomic_load(&load->reason[i]);
		ck_assert_int_ge(rc, 0);
		if(rc < 0x80){
			ok++;
		}else{
			ck_assert_int_eq(rc, FBH_RC_NOT_AUTHORIZED);
			refused++;
		}
	}
	for(long i = 0; i < atomic_load(&probe->sent); i++){
		ck_assert_int_lt(atomic_load(&probe->reason[i]), 0x80);
	}

	if(expect_replaced){
		ck_assert_msg(second > 0, "the stopped link process %d was not replaced", (int)first);
		ck_assert_msg(stalled_seen, "state 'stalled' was not published while the link process was stopped");
		ck_assert(fbh_broker_log_contains(&edge, "killing it and starting a new one"));
		ck_assert(sys_wait_u64(sys, "link_restarts", 1, 10000));
	}else{
		ck_assert_int_eq(second, 0);
		ck_assert_int_eq(link_pid(edge.pid), first);
		ck_assert(sys_wait_u64(sys, "link_restarts", 0, 10000));
	}
	ck_assert(sys_wait(sys, "state", "connected", 30000));

	/* The status lags by up to status_interval: wait until dropped/full stops moving. */
	sleep(2);
	dropped = status_u64(sys, "edge_to_cloud/dropped/full");
	if(reject){
		/* Refused with 0x87, counted under dropped/full; every acknowledged one arrives. */
		ck_assert_int_eq(dropped, refused);
		delivered = assert_delivered(sub, sys, load, ok, 0, &dups);
	}else{
		/* Acknowledged all the same; each one not staged counted under dropped/full. */
		ck_assert_int_eq(refused, 0);
		delivered = assert_delivered(sub, sys, load, ok, dropped, &dups);
	}
	fprintf(stderr, "sigstop (%s, %s): probe %ld publishes, PUBACK p99 %.1f ms, max %.1f ms; load %ld sent, "
			"%ld acknowledged, %ld refused with 0x87, %ld dropped/full, %ld delivered (+%ld repeats); "
			"link process %d -> %d\n", expect_replaced ? "replaced" : "continued", reject ? "reject" : "drop_oldest",
			atomic_load(&probe->sent), p99, max, atomic_load(&load->sent), ok, refused, dropped, delivered, dups,
			(int)first, (int)second);
	fprintf(stderr, "  probe before the SIGSTOP (same load, link process well): p99 %.1f ms, max %.1f ms\n",
			base_p99, base_max);
	probe_worst(probe, stopped_ns, 8);
	probe_latency(control, 0, UINT64_MAX, &ctl_p99, &ctl_max);
	fprintf(stderr, "  control probe to a broker of its own: p99 %.1f ms, max %.1f ms\n", ctl_p99, ctl_max);
	probe_worst(control, stopped_ns, 3);
	/* The bound of the issue. Only when the machine itself misses it (the control probe, which
	 * the bridge does not touch, has a p99 over it as well: other processes hold the CPUs) is the
	 * edge held to the control's p99 plus a margin instead, and says so. */
	if(p99 >= P99_LIMIT_MS && ctl_p99 >= P99_LIMIT_MS - CONTROL_MARGIN_MS){
		fprintf(stderr, "  the machine is too busy for the absolute bound (control p99 %.1f ms): the edge's "
				"p99 must stay within %.0f ms of it\n", ctl_p99, CONTROL_MARGIN_MS);
		ck_assert_msg(p99 < ctl_p99 + CONTROL_MARGIN_MS, "probe PUBACK p99 %.1f ms (max %.1f ms), control "
				"p99 %.1f ms", p99, max, ctl_p99);
	}else{
		ck_assert_msg(p99 < P99_LIMIT_MS, "probe PUBACK p99 %.1f ms (max %.1f ms), control p99 %.1f ms",
				p99, max, ctl_p99);
	}

	pacer_free(control);
	pacer_free(probe);
	pacer_free(load);
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	fbh_broker_stop(&ctl);
}

/* The default link_timeout (10 s): the stopped link process is killed and replaced well within
 * the 30 s; $SYS says "stalled" meanwhile. */
START_TEST(test_stopped_link_process_is_replaced_and_local_traffic_stays_fast)
{
	sigstop_scenario(FBH_YAML_STANDARD, true, false);
}
END_TEST

/* FBH_YAML_STANDARD with spool.on_full: reject and a link_timeout longer than the stop. */
#define YAML_REJECT_LONG_TIMEOUT \
	"site_id: " FBH_SITE_ID "\n" \
	"cloud:\n" \
	"  endpoints:\n" \
	"    - mqtts://localhost:@CLOUD_PORT@\n" \
	"  client_id: edge-${site_id}\n" \
	"  keepalive: 5s\n" \
	"  connect_timeout: 5s\n" \
	"  reconnect:\n" \
	"    min: 100ms\n" \
	"    max: 1s\n" \
	"  auth:\n" \
	"    username: edge-${site_id}\n" \
	"    password_file: @PASSWORD_FILE@\n" \
	"  tls:\n" \
	"    ca_file: @CA_FILE@\n" \
	"    cert_file: @CERT_FILE@\n" \
	"    key_file: @KEY_FILE@\n" \
	"spool:\n" \
	"  path: @SPOOL_PATH@\n" \
	"  on_full: reject\n" \
	"status_interval: 1s\n" \
	"link_timeout: 60s\n" \
	FBH_YAML_RULES

/* A link_timeout longer than the stop: the staging channel fills up (8 MiB take ~16 s at this
 * rate) and spool.on_full: reject refuses with 0x87 at once, without a wait; after SIGCONT the same
 * link process drains everything. */
START_TEST(test_full_staging_channel_refuses_at_once_while_link_process_is_stopped)
{
	sigstop_scenario(YAML_REJECT_LONG_TIMEOUT, false, true);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sigstop");
	TCase *tc = fbh_tcase("replaced");

	/* Both assert the probe's p99: alone (tag "alone", see meson.build). */
	tcase_set_timeout(tc, 400);
	tcase_set_tags(tc, FBH_TAG_ALONE);
	tcase_add_test(tc, test_stopped_link_process_is_replaced_and_local_traffic_stays_fast);
	suite_add_tcase(s, tc);
	tc = fbh_tcase("full");
	tcase_set_timeout(tc, 400);
	tcase_set_tags(tc, FBH_TAG_ALONE);
	tcase_add_test(tc, test_full_staging_channel_refuses_at_once_while_link_process_is_stopped);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
