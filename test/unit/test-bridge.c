/* Unit tests (test process) of plugin/broker/bridge.c that need no broker: fb_bridge_start() with hooks of the test's
 * own (the build tree's flowmq-link is started as in the broker; its cloud endpoint refuses
 * connections). */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <malloc.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "bridge.h"
#include "record.h"
#include "shared.h"
#include "spool.h"
#include "../sanitizer/asan.h"

static char dir[64];
static unsigned reloads_logged;

/* Counts lines without allocating, so that the heap measures only the bridge. */
static void count_log(void *ud, int level, const char *line)
{
	(void)ud; (void)level;
	if(strstr(line, "reloaded ") != NULL){
		reloads_logged++;
	}
}

static const struct fb_logger lg = { count_log, NULL };

static int drop_publish(void *ud, const char *topic, int payloadlen, void *payload, int qos, bool retain,
		mosquitto_property *props)
{
	(void)ud; (void)topic; (void)payloadlen; (void)qos; (void)retain;
	free(payload);
	mosquitto_property_free_all(&props);
	return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/fb-test-bridge-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
	nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* Writes a configuration with RULES edge_to_cloud rules (each with a header) to DIR/cfg.yaml. */
static const char *write_config(unsigned rules)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/cfg.yaml", dir);
	ck_assert_ptr_nonnull(f = fopen(path, "w"));
	/* Port 1 on loopback: nothing listens, the link process just retries. */
	fprintf(f, "site_id: site-A\ncloud:\n  endpoints: [mqtts://127.0.0.1:1]\n  reconnect: { min: 1s, max: 60s }\n"
			"spool:\n  path: %s/spool\n  max_size: 8MiB\nstatus_interval: 1d\nedge_to_cloud:\n", dir);
	for(unsigned i = 0; i < rules; i++){
		fprintf(f, "  - local: local/r%u/+/x/#\n    cloud: edge/${site_id}/r%u/+/#\n"
				"    headers: { edge-site-id: '${site_id}', rule: r%u }\n", i, i, i);
	}
	ck_assert_int_eq(fclose(f), 0);
	return path;
}

/* ---- a reload that changes the cloud settings ----------------------------------------------- */

static char logbuf[1 << 16];
static size_t loglen;

/* Keeps every line (as long as there is room) for log_has(). */
static void keep_log(void *ud, int level, const char *line)
{
	size_t n = strlen(line);

	(void)ud; (void)level;
	if(loglen + n + 2 <= sizeof(logbuf)){
		memcpy(logbuf + loglen, line, n);
		loglen += n;
		logbuf[loglen++] = '\n';
		logbuf[loglen] = '\0';
	}
}

static const struct fb_logger keep_lg = { keep_log, NULL };

static bool log_has(const char *s)
{
	return strstr(logbuf, s) != NULL;
}

static unsigned log_count(const char *s)
{
	unsigned n = 0;

	for(const char *p = strstr(logbuf, s); p; p = strstr(p + 1, s)){
		n++;
	}
	return n;
}

/* The descriptors this process has open. */
static unsigned open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	unsigned n = 0;

	ck_assert_ptr_nonnull(d);
	while(readdir(d)){
		n++;
	}
	closedir(d);
	return n; /* with ".", ".." and the directory's own: the same offset every time */
}

/* Writes a configuration whose only endpoint is loopback port PORT (nothing listens there), with
 * the lines SPOOL added to its spool section, and the edge_to_cloud rules RULES (NULL: one rule,
 * local/# to edge/site-A/#). */
static const char *write_rules_config(int port, const char *spool, const char *rules)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/cfg.yaml", dir);
	ck_assert_ptr_nonnull(f = fopen(path, "w"));
	fprintf(f, "site_id: site-A\ncloud:\n  endpoints: [mqtts://127.0.0.1:%d]\n  reconnect: { min: 100ms, max: 1s }\n"
			"spool:\n  path: %s/spool\n  max_size: 8MiB\n%sstatus_interval: 1d\nedge_to_cloud:\n%s", port, dir,
			spool, rules ? rules : "  - local: local/#\n    cloud: edge/${site_id}/#\n");
	ck_assert_int_eq(fclose(f), 0);
	return path;
}

static const char *write_spool_config(int port, const char *spool)
{
	return write_rules_config(port, spool, NULL);
}

static const char *write_cloud_config(int port)
{
	return write_spool_config(port, "");
}

/* Runs the broker's tick until the log holds S (true) or 60 s pass. */
static bool tick_until_log(struct fb_bridge *b, const char *s)
{
	for(int i = 0; i < 6000 && !log_has(s); i++){
		fb_bridge_tick(b, fb_mono_ms() / 1000);
		usleep(10000);
	}
	return log_has(s);
}

/* Two reloads in a row that change the endpoint: neither waits for the link process (the first
 * one's replacement is still pending at the second, which only swaps the pending configuration);
 * the tick then starts one link process with the newest settings: the middle endpoint is never
 * tried, the old process's orderly end is no error and no restart, and the configuration's memfd
 * of the old one is closed (as many descriptors as before). */
START_TEST(test_reload_cloud_replaces_link_process_in_the_tick)
{
	struct fb_host host = { .publish = drop_publish, .link_program = FB_LINK_PROGRAM_BUILD };
	struct fb_bridge *b = NULL;
	struct fb_counter_values v;
	unsigned fds;

	loglen = 0;
	logbuf[0] = '\0';
	ck_assert_int_eq(fb_bridge_start(write_cloud_config(1), &keep_lg, &host, &b), 0);
	ck_assert_msg(tick_until_log(b, "cannot connect to mqtts://127.0.0.1:1:"), "log:\n%s", logbuf);
	fds = open_fds();

	write_cloud_config(2);
	ck_assert_int_eq(fb_bridge_reload(b), 0);
	write_cloud_config(3);
	ck_assert_int_eq(fb_bridge_reload(b), 0);
	ck_assert_uint_eq(log_count("cloud settings changed; restarting the link process with them"), 2);
	ck_assert_uint_eq(open_fds(), fds + 1); /* the pending configuration, one */

	ck_assert_msg(tick_until_log(b, "cannot connect to mqtts://127.0.0.1:3:"), "log:\n%s", logbuf);
	ck_assert_msg(!log_has("127.0.0.1:2"), "log:\n%s", logbuf);
	ck_assert_msg(!log_has("the link process (pid") && !log_has("did not stop") && !log_has("restarting the link process;"),
			"log:\n%s", logbuf);
	fb_counters_load(fb_bridge_counters(b), &v);
	ck_assert_uint_eq(v.link_restarts, 0);
	ck_assert_uint_eq(open_fds(), fds);
	fb_bridge_stop(b);
}
END_TEST

/* The broker stops while a replacement is pending: the old link process is stopped, no new one
 * is started, and the pending configuration's memfd is closed like the rest. */
START_TEST(test_stop_with_pending_replacement_closes_everything)
{
	struct fb_host host = { .publish = drop_publish, .link_program = FB_LINK_PROGRAM_BUILD };
	struct fb_bridge *b = NULL;
	unsigned fds = open_fds();

	loglen = 0;
	logbuf[0] = '\0';
	ck_assert_int_eq(fb_bridge_start(write_cloud_config(1), &keep_lg, &host, &b), 0);
	write_cloud_config(2);
	ck_assert_int_eq(fb_bridge_reload(b), 0);
	ck_assert_uint_eq(log_count("cloud settings changed; restarting the link process with them"), 1);
	fb_bridge_stop(b);
	ck_assert_msg(!log_has("127.0.0.1:2") && !log_has("the link process (pid"), "log:\n%s", logbuf);
	ck_assert_uint_eq(open_fds(), fds);
}
END_TEST

/* Every SIGHUP reload loads a new configuration; only the first one (the link process's) and the
 * newest stay in memory: the heap in use after 12 reloads is that after 2, give or take far less
 * than one configuration. Before, each reload kept ~1.2 MB (3,000 rules) until stop. */
START_TEST(test_reload_keeps_only_first_and_newest_configuration)
{
	struct fb_host host = { .publish = drop_publish, .link_program = FB_LINK_PROGRAM_BUILD };
	const char *cfg = write_config(1000);
	struct fb_bridge *b = NULL;
	size_t before, one, after2, after12;

	ck_assert_int_eq(fb_bridge_start(cfg, &lg, &host, &b), 0);
	before = mallinfo2().uordblks;
	ck_assert_int_eq(fb_bridge_reload(b), 0);
	one = mallinfo2().uordblks - before; /* one more configuration */
	ck_assert_int_eq(fb_bridge_reload(b), 0);
	after2 = mallinfo2().uordblks;
	for(int i = 0; i < 10; i++){
		ck_assert_int_eq(fb_bridge_reload(b), 0);
	}
	after12 = mallinfo2().uordblks;
	ck_assert_uint_eq(reloads_logged, 12);
#if FB_ASAN
	/* ASan's allocator keeps its own books: mallinfo2() does not see its heap. The leak check at
	 * exit still catches configurations that are never freed. */
	fputs("SKIP the heap figures of test_reload_keeps_only_first_and_newest_configuration: ASan "
			"build (mallinfo2() does not see ASan's heap)\n", stderr);
	(void)one;
	(void)after2;
	(void)after12;
	fb_bridge_stop(b);
	return;
#endif
	ck_assert_msg(one > 100000, "a configuration of 1000 rules takes only %zu bytes?", one);
	ck_assert_msg(after12 < after2 + one / 4, "10 reloads grew the heap by %zd bytes (one configuration: %zu)",
			(ssize_t)(after12 - after2), one);
	fb_bridge_stop(b);
}
END_TEST

/* ---- cloud messages in the ring when the link process starts again ------------------------- */

/* Spool "in" had IN_SHIFT records injected and deleted: the backlog starts at seq IN_SHIFT + 1. */
#define IN_SHIFT 2000
/* Each record takes 128 bytes of the ring (a 16-byte head and 112 bytes of record), so exactly
 * RING_FITS fit, with no room left. */
#define RING_ENTRY 128
#define RING_FITS (FB_C2E_RING / RING_ENTRY)
#define IN_SPOOL_SIZE "64MiB"
#define IN_SPOOL_BYTES (64u << 20)

static long *seen;     /* the index in each cloud message the broker's publish hook got, in order */
static size_t n_seen, seen_cap;

static int keep_index(void *ud, const char *topic, int payloadlen, void *payload, int qos, bool retain,
		mosquitto_property *props)
{
	(void)ud; (void)qos; (void)retain;
	if(strcmp(topic, "cmd/x") == 0){
		ck_assert_int_gt(payloadlen, 1);
		ck_assert_int_eq(((char *)payload)[0], 'c');
		if(n_seen == seen_cap){
			seen_cap = seen_cap ? 2 * seen_cap : 65536;
			ck_assert_ptr_nonnull(seen = realloc(seen, seen_cap * sizeof(*seen)));
		}
		seen[n_seen] = 0;
		for(int k = 1; k < payloadlen && ((char *)payload)[k] != ';'; k++){ /* not NUL-terminated */
			seen[n_seen] = seen[n_seen] * 10 + (((char *)payload)[k] - '0');
		}
		n_seen++;
	}
	free(payload);
	mosquitto_property_free_all(&props);
	return 0;
}

/* Encodes cloud message I (payload "c<I>;" padded with 'x', so that the record is 112 bytes) for
 * spool "in" into BUF. Returns its length. */
static size_t in_record(size_t i, uint8_t *buf)
{
	char payload[128];
	struct fb_record r = {
		.qos = 1,
		.lane = FB_LANE_DEFAULT,
		.topic = "cmd/x",
		.topic_len = 5,
		.payload = (const uint8_t *)payload,
	};
	int n = snprintf(payload, sizeof(payload), "c%zu;", i);

	r.payload_len = (uint32_t)n;
	ck_assert_uint_le(fb_record_size(&r), RING_ENTRY - 16);
	memset(payload + n, 'x', sizeof(payload) - (size_t)n);
	r.payload_len += (uint32_t)(RING_ENTRY - 16 - fb_record_size(&r));
	ck_assert_uint_eq(fb_record_size(&r), RING_ENTRY - 16);
	return fb_record_encode(&r, buf);
}

/* Spool "in" at DIR/spool as the link process of a broker left it: IN_SHIFT records injected and
 * deleted, then N cloud messages (0 .. N - 1) waiting. */
static void fill_in(size_t n)
{
	char path[128];
	struct fb_spool_opts o = { .path = path, .max_size = IN_SPOOL_BYTES, .on_full = FB_ON_FULL_DROP_OLDEST,
		.sync = FB_SYNC_INTERVAL, .lg = &lg };
	struct fb_spool_del *dels = calloc(IN_SHIFT, sizeof(*dels));
	struct fb_spool *s = NULL;
	uint8_t rec[RING_ENTRY];
	uint64_t seq;

	ck_assert_ptr_nonnull(dels);
	snprintf(path, sizeof(path), "%s/spool", dir);
	ck_assert_int_eq(fb_spool_open(&o, &s), 0);
	for(size_t i = 0; i < IN_SHIFT; i++){
		size_t len = in_record(i, rec);

		ck_assert_int_eq(fb_spool_append(s, FB_Q_IN, rec, len, &seq, NULL), 0);
		dels[i] = (struct fb_spool_del){ seq, len };
	}
	ck_assert_uint_eq(seq, IN_SHIFT);
	ck_assert_int_eq(fb_spool_delete_many(s, FB_Q_IN, dels, IN_SHIFT), 0);
	for(size_t i = 0; i < n; i++){
		size_t len = in_record(i, rec);

		ck_assert_int_eq(fb_spool_append(s, FB_Q_IN, rec, len, &seq, NULL), 0);
	}
	ck_assert_uint_eq(seq, IN_SHIFT + n);
	fb_spool_close(s);
	free(dels);
}

/* B's shared region: the counters live in it (struct fb_shared), and so do the rings. */
static struct fb_shared *shared_of(struct fb_bridge *b)
{
	return (struct fb_shared *)(void *)((char *)fb_bridge_counters(b) - offsetof(struct fb_shared, ctr));
}

/* The link process this process started (the tick starts them from this thread). */
static pid_t link_child(void)
{
	char path[64], text[64];
	long pid = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/children", (int)getpid());
	ck_assert_ptr_nonnull(f = fopen(path, "r"));
	if(fgets(text, sizeof(text), f) == NULL || sscanf(text, "%ld", &pid) != 1){
		pid = 0;
	}
	fclose(f);
	return (pid_t)pid;
}

/* N cloud messages wait in spool "in"; the broker thread takes none of them (no tick) until the
 * link process has filled the ring (RING_FITS of them). Then the link process is killed, with
 * DAMAGE its spool's CURRENT deleted first, and the tick runs until the next link process is up
 * (with DAMAGE: the second one, which salvages the spool on a fresh channel; without, every
 * 200 ms, taking a budget of the ring each time, so that the ring still holds most of what it
 * did), then as fast as it can. Every message reaches the broker once, in order. */
static void ring_full_at_restart(size_t n, bool damage)
{
	struct fb_host host = { .publish = keep_index, .link_program = FB_LINK_PROGRAM_BUILD };
	struct fb_bridge *b = NULL;
	struct fb_shared *sh;
	struct fb_counter_values v;
	char path[128];
	FILE *f;
	pid_t first;
	const char *up = damage ? "salvaged from" : "restarting the link process";
	int i;

	loglen = 0;
	logbuf[0] = '\0';
	n_seen = 0;
	fill_in(n);
	snprintf(path, sizeof(path), "%s/cfg.yaml", dir);
	ck_assert_ptr_nonnull(f = fopen(path, "w"));
	fprintf(f, "site_id: site-A\ncloud:\n  endpoints: [mqtts://127.0.0.1:1]\n  reconnect: { min: 1s, max: 60s }\n"
			"spool:\n  path: %s/spool\n  max_size: " IN_SPOOL_SIZE "\nstatus_interval: 1d\nedge_to_cloud:\n"
			"  - local: local/#\n    cloud: edge/${site_id}/#\n", dir);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(fb_bridge_start(path, &keep_lg, &host, &b), 0);
	sh = shared_of(b);
	for(i = 0; i < 60000 && atomic_load(&sh->c2e.pushed) != IN_SHIFT + RING_FITS; i++){
		usleep(1000);
	}
	ck_assert_uint_eq(atomic_load(&sh->c2e.pushed), IN_SHIFT + RING_FITS);
	ck_assert_uint_eq(atomic_load(&sh->c2e.tail), FB_C2E_RING);
	ck_assert_uint_eq(atomic_load(&sh->c2e.head), 0);
	ck_assert_uint_eq(n_seen, 0);

	if(damage){
		snprintf(path, sizeof(path), "%s/spool/CURRENT", dir);
		ck_assert_int_eq(unlink(path), 0);
	}
	first = link_child();
	ck_assert_int_gt(first, 0);
	ck_assert_int_eq(kill(first, SIGKILL), 0);
	/* Until the link process that is to push the rest has its spool open, and a second more. */
	for(i = 0; i < 1200 && !(log_has(up) && link_child() != first && atomic_load(&sh->child_state) == 1); i++){
		fb_bridge_tick(b, fb_mono_ms() / 1000);
		usleep(damage ? 10000 : 200000);
	}
	ck_assert_msg(log_has(up) && atomic_load(&sh->child_state) == 1, "log:\n%s", logbuf);
	if(damage){
		/* The ring was emptied by injection before the link process started on the fresh
		 * channel, and the salvage left those out of spool "in". */
		ck_assert_uint_eq(n_seen, RING_FITS);
		snprintf(path, sizeof(path), "records queued again into \"out\", %zu into \"in\"", n - RING_FITS);
		ck_assert_msg(log_has(path), "log:\n%s", logbuf);
	}
	for(i = 0; i < 10; i++){
		fb_bridge_tick(b, fb_mono_ms() / 1000);
		usleep(damage ? 10000 : 200000);
	}
	if(!damage){
		ck_assert_uint_lt(n_seen, RING_FITS / 2); /* the ring still held more than half of it */
	}
	for(i = 0; i < 600000 && n_seen < n; i++){
		fb_bridge_tick(b, fb_mono_ms() / 1000);
		usleep(100);
	}
	/* a second more: nothing comes twice */
	for(i = 0; i < 1000; i++){
		fb_bridge_tick(b, fb_mono_ms() / 1000);
		usleep(1000);
	}
	ck_assert_msg(n_seen == n, "%zu of %zu cloud messages injected; log:\n%s", n_seen, n, logbuf);
	for(size_t k = 0; k < n; k++){
		ck_assert_msg(seen[k] == (long)k, "message %zu is c%ld", k, seen[k]);
	}
	fb_counters_load(fb_bridge_counters(b), &v);
	ck_assert_uint_eq(v.injected, n);
	ck_assert_uint_eq(v.c2e_dropped, 0);
	/* nothing was left in the rings to drop */
	ck_assert_msg(!log_has("waiting for the broker are left to the next link process"), "log:\n%s", logbuf);
	fb_bridge_stop(b);
	free(seen);
	seen = NULL;
	seen_cap = 0;
}

/* A link process started again (the channel still running): it pushes into the ring only what
 * comes after what the ring holds. Before, it pushed spool "in" again from its start, and every
 * message the ring still held reached the broker twice (117,128 injected for 70,536). */
START_TEST(test_a_restarted_link_process_does_not_push_the_ring_again)
{
	ring_full_at_restart(RING_FITS + 5000, false);
}
END_TEST

/* A damaged spool, salvaged on a fresh channel into a fresh spool numbered from 1: the broker
 * injects what the ring held (of the old numbering) before that link process starts, and the
 * salvage leaves out what the broker had injected. Before, the broker went on injecting the old entries, the salvaged copies of those came
 * again (108,216 and 136,072 injected for 70,536 in two runs), and it released the old entries'
 * seqs, which could delete salvaged records of the new numbering that it had not injected. */
START_TEST(test_a_salvage_with_the_ring_full_loses_and_repeats_nothing)
{
	ring_full_at_restart(RING_FITS + 5000, true);
}
END_TEST

/* ---- the requeue ring ----------------------------------------------------------------------- */

struct topics {
	char topic[3][32];
	size_t n;
};

static int keep_topic(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct topics *t = ud;
	struct fb_record r;

	(void)seq;
	ck_assert_int_eq(fb_record_decode(val, len, &r), 0);
	if(t->n < 3){
		snprintf(t->topic[t->n], sizeof(t->topic[0]), "%.*s", (int)r.topic_len, r.topic);
	}
	t->n++;
	return 0;
}

/* Puts dead letter SEQ (topic TOPIC, PAYLOAD_LEN bytes of payload) into the requeue ring as the
 * link process does (control.c). */
static void requeue_put(struct fb_shared *sh, uint64_t seq, const char *topic, size_t payload_len)
{
	char path[128];
	uint8_t *payload = calloc(1, payload_len), *buf;
	struct fb_record r = { .qos = 1, .lane = FB_LANE_DEFAULT, .topic = topic, .topic_len = (uint16_t)strlen(topic),
		.payload = payload, .payload_len = (uint32_t)payload_len };
	size_t len;

	ck_assert_ptr_nonnull(payload);
	ck_assert_ptr_nonnull(buf = malloc(fb_record_size(&r)));
	len = fb_record_encode(&r, buf);
	snprintf(path, sizeof(path), "%s/spool", dir);
	ck_assert_int_eq(fb_c2e_put(&sh->requeue, path, FB_REQUEUE_STEM, seq, buf, len), 0);
	free(buf);
	free(payload);
}

/* Starts the bridge of configuration CFG (the broker's publishes dropped) and returns once its
 * link process runs and the staging channel is open; *SH: its shared region. */
static struct fb_bridge *start_running(const char *cfg, struct fb_shared **sh)
{
	static const struct fb_host host = { .publish = drop_publish, .link_program = FB_LINK_PROGRAM_BUILD };
	struct fb_bridge *b = NULL;
	int i;

	loglen = 0;
	logbuf[0] = '\0';
	ck_assert_int_eq(fb_bridge_start(cfg, &keep_lg, &host, &b), 0);
	*sh = shared_of(b);
	for(i = 0; i < 6000 && atomic_load(&(*sh)->child_state) != 1; i++){
		fb_bridge_tick(b, fb_mono_ms() / 1000);
		usleep(10000);
	}
	ck_assert_int_eq(atomic_load(&(*sh)->child_state), 1);
	fb_bridge_tick(b, fb_mono_ms() / 1000); /* the staging channel open */
	return b;
}

/* The topics of what was staged (in "out" of the spool at DIR/spool, whether the link process had
 * settled it there or not; the first three in T), once the bridge has stopped. */
static size_t staged_topics(struct topics *t)
{
	struct fb_spool_opts o = { .max_size = 64u << 20, .on_full = FB_ON_FULL_DROP_OLDEST, .sync = FB_SYNC_INTERVAL,
		.lg = &lg };
	struct fb_spool *s = NULL;
	char spool[128];

	snprintf(spool, sizeof(spool), "%s/spool", dir);
	o.path = spool;
	ck_assert_int_eq(fb_spool_open(&o, &s), 0);
	t->n = 0;
	ck_assert_int_ge(fb_spool_read(s, FB_Q_OUT, 0, 10, keep_topic, t), 0);
	fb_spool_close(s);
	return t->n;
}

/* An entry of the requeue ring that the link process withdrew (its dead letter was purged, and
 * its file of its own is left empty: control.c) is passed over: the dead letters before and behind
 * it are staged, in order, and it is not; its file goes. */
START_TEST(test_a_withdrawn_requeue_entry_is_passed_over)
{
	struct fb_shared *sh;
	struct fb_bridge *b = start_running(write_config(1), &sh);
	struct topics t = { 0 };
	char spool[128], file[160];
	struct stat st;
	int i;

	snprintf(spool, sizeof(spool), "%s/spool", dir);
	snprintf(file, sizeof(file), "%s/" FB_REQUEUE_STEM "8", spool);
	requeue_put(sh, 7, "local/r0/a/x/before", 10);
	requeue_put(sh, 8, "local/r0/a/x/withdrawn", FB_C2E_RING / 2 + 1); /* in a file of its own */
	ck_assert_int_eq(stat(file, &st), 0);
	ck_assert_int_gt(st.st_size, FB_C2E_RING / 2);
	requeue_put(sh, 9, "local/r0/a/x/behind", 10);
	ck_assert_int_eq(fb_c2e_withdraw(spool, FB_REQUEUE_STEM, 8), 0);
	for(i = 0; i < 300 && fb_c2e_waiting(&sh->requeue); i++){
		fb_bridge_tick(b, fb_mono_ms() / 1000);
		usleep(10000);
	}
	ck_assert_msg(!fb_c2e_waiting(&sh->requeue), "log:\n%s", logbuf);
	ck_assert_int_eq(stat(file, &st), -1);
	ck_assert_int_eq(errno, ENOENT);
	fb_bridge_stop(b);

	ck_assert_uint_eq(staged_topics(&t), 2);
	ck_assert_str_eq(t.topic[0], "local/r0/a/x/before");
	ck_assert_str_eq(t.topic[1], "local/r0/a/x/behind");
	ck_assert_msg(!log_has("cannot be read"), "log:\n%s", logbuf);
}
END_TEST

/* fdatasync() of this process (the broker side of these tests) fails with EIO while FAIL_SYNC is
 * set: a card whose writeback fails. The link process is another program: its own syncs work. */
static atomic_bool fail_sync;

int fdatasync(int fd)
{
	if(atomic_load(&fail_sync)){
		errno = EIO;
		return -1;
	}
	return (int)syscall(SYS_fdatasync, fd);
}

/* With spool.sync always and the staging file's sync failing, a requeued dead letter is staged
 * once: the staged copy goes to the cloud, and it is not staged again. Before, the broker thread
 * took the failed sync for "not staged": the entry stayed in the ring, staged again every second. */
START_TEST(test_a_requeued_dead_letter_whose_sync_fails_is_staged_once)
{
	struct fb_bridge *b;
	struct fb_shared *sh;
	struct topics t = { 0 };
	uint64_t t0;

	b = start_running(write_spool_config(1, "  sync: always\n"), &sh);

	atomic_store(&fail_sync, true);
	requeue_put(sh, 7, "local/one", 10);
	for(t0 = fb_mono_ms(); fb_mono_ms() - t0 < 3500;){
		fb_bridge_tick(b, fb_mono_ms() / 1000);
		usleep(10000);
	}
	atomic_store(&fail_sync, false);
	ck_assert_msg(!fb_c2e_waiting(&sh->requeue), "log:\n%s", logbuf);
	fb_bridge_stop(b);

	ck_assert_msg(staged_topics(&t) == 1, "%zu copies", t.n);
	ck_assert_str_eq(t.topic[0], "local/one");
	ck_assert_msg(log_count("requeue-dead: dead letter 7 is staged, but the staging file cannot be synced: "
			"Input/output error") == 1, "log:\n%s", logbuf);
}
END_TEST

/* With spool.sync always and the staging file's sync failing, a captured message is refused (the
 * publisher may send it again) and its staged copy goes to the cloud: counted as forwarded by its
 * rule, never as dropped. Before, it was counted in dropped/error as well as sent. */
START_TEST(test_a_capture_whose_sync_fails_is_refused_and_counted_forwarded_only)
{
	struct fb_bridge *b;
	struct fb_shared *sh;
	struct topics t = { 0 };

	b = start_running(write_spool_config(1, "  sync: always\n"), &sh);

	atomic_store(&fail_sync, true);
	ck_assert_int_eq(fb_bridge_capture(b, "local/one", "1", 1, NULL, 1, false), FB_BRIDGE_UNSYNCED);
	atomic_store(&fail_sync, false);
	ck_assert_int_eq(fb_bridge_capture(b, "local/two", "2", 1, NULL, 1, false), FB_BRIDGE_MATCHED);
	ck_assert_uint_eq(atomic_load(&sh->ctr.dropped_error), 0);
	ck_assert_uint_eq(atomic_load(&sh->ctr.dropped_full), 0);
	ck_assert_uint_eq(fb_rulectr_get(&sh->rules.rule[0].forwarded), 2);
	ck_assert_msg(log_count("cannot sync the staging file for a message on local/one: Input/output error; "
			"refused, as spool.sync is always, and sent to the cloud as staged") == 1, "log:\n%s", logbuf);
	ck_assert_msg(log_count("matched messages are spooled again") == 1, "log:\n%s", logbuf);
	fb_bridge_stop(b);

	ck_assert_msg(staged_topics(&t) == 2, "%zu copies", t.n);
	ck_assert_str_eq(t.topic[0], "edge/site-A/one");
	ck_assert_str_eq(t.topic[1], "edge/site-A/two");
}
END_TEST

/* A message a rule holds (min_interval) and a window summary (aggregate) count in their rule's
 * forwarded once staged, as a message staged at its capture does. Before, neither counted. */
START_TEST(test_held_messages_and_window_summaries_count_in_their_rule)
{
	struct fb_shared *sh;
	struct fb_bridge *b = start_running(write_rules_config(1, "", "  - local: local/held/#\n"
			"    cloud: edge/${site_id}/held/#\n    min_interval: 300ms\n"
			"  - local: local/win/#\n    cloud: edge/${site_id}/win/#\n    aggregate:\n      window: 200ms\n"), &sh);
	struct topics t = { 0 };
	uint64_t t0;

	/* The first goes at once, the second is held and replaced by the third. */
	ck_assert_int_eq(fb_bridge_capture(b, "local/held/a", "1", 1, NULL, 1, false), FB_BRIDGE_MATCHED);
	ck_assert_int_eq(fb_bridge_capture(b, "local/held/a", "2", 1, NULL, 1, false), FB_BRIDGE_MATCHED);
	ck_assert_int_eq(fb_bridge_capture(b, "local/held/a", "3", 1, NULL, 1, false), FB_BRIDGE_MATCHED);
	/* Three values folded into one window. */
	ck_assert_int_eq(fb_bridge_capture(b, "local/win/a", "1", 1, NULL, 1, false), FB_BRIDGE_MATCHED);
	ck_assert_int_eq(fb_bridge_capture(b, "local/win/a", "2", 1, NULL, 1, false), FB_BRIDGE_MATCHED);
	ck_assert_int_eq(fb_bridge_capture(b, "local/win/a", "3", 1, NULL, 1, false), FB_BRIDGE_MATCHED);
	ck_assert_uint_eq(fb_rulectr_get(&sh->rules.rule[0].forwarded), 1);
	ck_assert_uint_eq(fb_rulectr_get(&sh->rules.rule[1].forwarded), 0);
	for(t0 = fb_mono_ms(); fb_mono_ms() - t0 < 1500;){
		fb_bridge_tick(b, fb_mono_ms() / 1000);
		usleep(10000);
	}
	ck_assert_uint_eq(fb_rulectr_get(&sh->rules.rule[0].forwarded), 2);
	ck_assert_uint_eq(fb_rulectr_get(&sh->rules.rule[1].forwarded), 1);
	ck_assert_uint_eq(fb_rulectr_get(&sh->rules.rule[0].dropped), 0);
	ck_assert_uint_eq(fb_rulectr_get(&sh->rules.rule[1].dropped), 0);
	ck_assert_uint_eq(atomic_load(&sh->ctr.suppressed), 1);
	ck_assert_uint_eq(atomic_load(&sh->ctr.aggregated), 3);
	ck_assert_uint_eq(atomic_load(&sh->ctr.windows), 1);
	fb_bridge_stop(b);

	ck_assert_msg(staged_topics(&t) == 3, "%zu staged", t.n);
	ck_assert_str_eq(t.topic[0], "edge/site-A/held/a");
}
END_TEST

static Suite *bridge_suite(void)
{
	Suite *s = suite_create("bridge");
	TCase *tc = tcase_create("reload");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_reload_keeps_only_first_and_newest_configuration);
	tcase_add_test(tc, test_reload_cloud_replaces_link_process_in_the_tick);
	tcase_add_test(tc, test_stop_with_pending_replacement_closes_everything);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	tc = tcase_create("c2e");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_a_restarted_link_process_does_not_push_the_ring_again);
	tcase_add_test(tc, test_a_salvage_with_the_ring_full_loses_and_repeats_nothing);
	tcase_set_timeout(tc, 300);
	suite_add_tcase(s, tc);
	tc = tcase_create("requeue");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_a_withdrawn_requeue_entry_is_passed_over);
	tcase_add_test(tc, test_a_requeued_dead_letter_whose_sync_fails_is_staged_once);
	tcase_add_test(tc, test_a_capture_whose_sync_fails_is_refused_and_counted_forwarded_only);
	tcase_add_test(tc, test_held_messages_and_window_summaries_count_in_their_rule);
	tcase_set_timeout(tc, 120);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(bridge_suite());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
