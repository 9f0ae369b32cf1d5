/* Unit tests (test process) of plugin/broker/inject.c: cloud messages taken from the cloud-to-edge
 * ring into the local broker, at most FB_INJECT_BUDGET per tick, in order, each once; a record
 * that cannot be read for lack of descriptors waits (in order, never dropped), a malformed one is
 * dropped and counted. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mosquitto.h>

#include "c2e.h"
#include "inject.h"
#include "record.h"

#define N_MSGS 1000
_Static_assert(N_MSGS > 3 * FB_INJECT_BUDGET, "the backlog must take several ticks");

/* What the stub host received: the payload index of each publish, in order. */
static long got[N_MSGS + 1];
static size_t n_got;

static int stub_publish(void *ud, const char *topic, int payloadlen, void *payload, int qos, bool retain,
		mosquitto_property *props)
{
	char text[16];
	(void)ud; (void)retain;

	ck_assert_str_eq(topic, "cmd/site-A/x");
	ck_assert_int_eq(qos, 1);
	ck_assert_int_lt(payloadlen, (int)sizeof(text));
	memcpy(text, payload, (size_t)payloadlen);
	text[payloadlen] = '\0';
	ck_assert_uint_lt(n_got, N_MSGS + 1);
	got[n_got++] = strtol(text + 1, NULL, 10);
	free(payload);
	mosquitto_property_free_all(&props);
	return 0;
}

/* Puts record SEQ of spool "in" on TOPIC with LEN bytes of PAYLOAD into RING. */
static void put_msg(struct fb_c2e *ring, const char *dir, uint64_t seq, const char *topic,
		const uint8_t *payload, size_t len)
{
	struct fb_record r = {
		.qos = 1,
		.lane = FB_LANE_DEFAULT,
		.enqueue_ms = fb_wall_ms(),
		.topic = topic,
		.topic_len = (uint16_t)strlen(topic),
		.payload = payload,
		.payload_len = (uint32_t)len,
	};
	uint8_t *buf = malloc(fb_record_size(&r));

	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(fb_c2e_put(ring, dir, FB_C2E_STEM, seq, buf, fb_record_encode(&r, buf)), 0);
	free(buf);
}

/* Puts record SEQ (payload "c<SEQ - 1>") of spool "in" into RING. */
static void put(struct fb_c2e *ring, const char *dir, uint64_t seq)
{
	char payload[16];
	int n = snprintf(payload, sizeof(payload), "c%llu", (unsigned long long)(seq - 1));

	put_msg(ring, dir, seq, "cmd/site-A/x", (const uint8_t *)payload, (size_t)n);
}

/* A backlog of N_MSGS in the ring: each tick takes FB_INJECT_BUDGET (the last one the rest), the
 * ring keeps the others for the next tick, and every message reaches the broker once, in order. */
START_TEST(test_a_backlog_is_injected_a_budget_per_tick_in_order)
{
	struct fb_c2e *ring = calloc(1, sizeof(*ring));
	struct fb_counters *ctr = calloc(1, sizeof(*ctr));
	const struct fb_logger lg = { NULL, NULL };
	const struct fb_host host = { .publish = stub_publish };
	char dir[] = "/tmp/fb-test-inject-XXXXXX";
	struct fb_inject in;
	unsigned ticks = 0, took, want;

	ck_assert_ptr_nonnull(ring);
	ck_assert_ptr_nonnull(ctr);
	ck_assert_ptr_nonnull(mkdtemp(dir));
	in = (struct fb_inject){ .ring = ring, .dir = dir, .host = &host, .ctr = ctr, .lg = &lg };
	for(uint64_t seq = 1; seq <= N_MSGS; seq++){
		put(ring, dir, seq);
	}
	n_got = 0;
	do{
		want = N_MSGS - ticks * FB_INJECT_BUDGET;
		want = want > FB_INJECT_BUDGET ? FB_INJECT_BUDGET : want;
		took = fb_inject_run(&in);
		ck_assert_uint_eq(took, want);
		ck_assert_uint_eq(n_got, ticks * FB_INJECT_BUDGET + took);
		ck_assert_uint_eq(in.injected, n_got);
		ck_assert_int_eq(fb_c2e_waiting(ring) != 0, n_got < N_MSGS);
		ticks++;
	}while(n_got < N_MSGS);
	ck_assert_uint_eq(ticks, (N_MSGS + FB_INJECT_BUDGET - 1) / FB_INJECT_BUDGET);
	ck_assert_uint_eq(fb_inject_run(&in), 0);
	for(size_t i = 0; i < N_MSGS; i++){
		ck_assert_int_eq(got[i], (long)i);
	}
	ck_assert_uint_eq(atomic_load(&ctr->injected), N_MSGS);
	ck_assert_uint_eq(atomic_load(&ctr->c2e_dropped), 0);
	fb_inject_cleanup(&in);
	ck_assert_int_eq(rmdir(dir), 0);
	free(ctr);
	free(ring);
}
END_TEST

/* ---- records that cannot be read ----------------------------------------------------------- */

/* A record too large for the ring (it travels in a file of its own): FB_C2E_RING / 2 + 1 bytes. */
#define BIG_LEN (FB_C2E_RING / 2 + 1)

/* What the keeping stub host received, in order, and the lines logged. */
struct kept {
	char *topic;
	uint8_t *payload;
	int len;
};
static struct kept kept[16];
static size_t n_kept;
static char lines[16][1024];
static int levels[16];
static size_t n_lines;

static int keep_publish(void *ud, const char *topic, int payloadlen, void *payload, int qos, bool retain,
		mosquitto_property *props)
{
	(void)ud; (void)qos; (void)retain;

	ck_assert_uint_lt(n_kept, sizeof(kept) / sizeof(kept[0]));
	kept[n_kept].topic = strdup(topic);
	kept[n_kept].payload = payload; /* ours now, as the broker's would be */
	kept[n_kept].len = payloadlen;
	n_kept++;
	mosquitto_property_free_all(&props);
	return 0;
}

static void keep_line(void *ud, int level, const char *line)
{
	(void)ud;
	ck_assert_uint_lt(n_lines, sizeof(lines) / sizeof(lines[0]));
	snprintf(lines[n_lines], sizeof(lines[0]), "%s", line);
	levels[n_lines++] = level;
}

static void kept_free(void)
{
	for(size_t i = 0; i < n_kept; i++){
		free(kept[i].topic);
		free(kept[i].payload);
	}
	n_kept = 0;
	n_lines = 0;
}

static void kept_is(size_t i, const char *topic, const uint8_t *payload, size_t len)
{
	ck_assert_uint_lt(i, n_kept);
	ck_assert_str_eq(kept[i].topic, topic);
	ck_assert_int_eq(kept[i].len, (int)len);
	ck_assert_mem_eq(kept[i].payload, payload, len);
}

/* A test's ring, counters, spool folder and injecting side, with the keeping stub host. */
struct fix {
	struct fb_c2e *ring;
	struct fb_counters *ctr;
	struct fb_logger lg;
	struct fb_host host;
	char dir[32];
	struct fb_inject in;
};

static void fix_init(struct fix *f)
{
	f->ring = calloc(1, sizeof(*f->ring));
	f->ctr = calloc(1, sizeof(*f->ctr));
	ck_assert_ptr_nonnull(f->ring);
	ck_assert_ptr_nonnull(f->ctr);
	f->lg = (struct fb_logger){ keep_line, NULL };
	f->host = (struct fb_host){ .publish = keep_publish };
	snprintf(f->dir, sizeof(f->dir), "/tmp/fb-test-inject-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(f->dir));
	f->in = (struct fb_inject){ .ring = f->ring, .dir = f->dir, .host = &f->host, .ctr = f->ctr, .lg = &f->lg };
}

/* Frees what F and the keeping stub hold; the spool folder must be empty by then. */
static void fix_free(struct fix *f)
{
	kept_free();
	fb_inject_cleanup(&f->in);
	ck_assert_int_eq(rmdir(f->dir), 0);
	free(f->ctr);
	free(f->ring);
}

/* The large record's file cannot be opened (EMFILE: the process's descriptor limit lowered to its
 * lowest free descriptor, for real): it is neither dropped nor released, its file stays, the small
 * record behind it waits too, one ERR says so; tries within FB_INJECT_RETRY_MS open nothing. With
 * the limit back, both go through once, in order, byte for byte, and a NOTICE says so. */
START_TEST(test_a_file_that_cannot_be_opened_for_lack_of_descriptors_waits_in_order)
{
	struct fix f;
	struct fb_inject *in = &f.in;
	uint8_t *big = malloc(BIG_LEN);
	char path[256], want[512];
	struct rlimit old, low;
	uint64_t deadline;
	int fd;

	fix_init(&f);
	ck_assert_ptr_nonnull(big);
	for(size_t i = 0; i < BIG_LEN; i++){
		big[i] = (uint8_t)(i * 7 + i / 4096);
	}
	put_msg(f.ring, f.dir, 1, "cmd/a", (const uint8_t *)"a", 1);
	put_msg(f.ring, f.dir, 2, "cmd/big", big, BIG_LEN);
	put_msg(f.ring, f.dir, 3, "cmd/b", (const uint8_t *)"b", 1);
	snprintf(path, sizeof(path), "%s/" FB_C2E_STEM "2", f.dir);
	ck_assert_int_eq(access(path, F_OK), 0);

	/* No descriptor left: the next open() fails with EMFILE. */
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)fd;
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);

	ck_assert_uint_eq(fb_inject_run(in), 1);
	ck_assert_uint_eq(n_kept, 1);
	kept_is(0, "cmd/a", (const uint8_t *)"a", 1);
	ck_assert_uint_eq(in->injected, 1);
	fb_inject_release(in);
	ck_assert_uint_eq(atomic_load(&f.ring->released), 1);
	ck_assert_int_ne(fb_c2e_waiting(f.ring), 0);
	ck_assert_int_eq(access(path, F_OK), 0);
	ck_assert_uint_eq(n_lines, 1);
	ck_assert_int_eq(levels[0], MOSQ_LOG_ERR);
	snprintf(want, sizeof(want), "spool \"in\" record 2 cannot be read from %s now: Too many open files; "
			"it and the cloud messages behind it wait and are tried again every %u ms", path, FB_INJECT_RETRY_MS);
	ck_assert_str_eq(lines[0], want);

	/* Within FB_INJECT_RETRY_MS: not tried (nothing logged either). After it, tried again: it
	 * still fails, and says so no second time. */
	ck_assert_uint_eq(fb_inject_run(in), 0);
	while(fb_mono_ms() < in->retry_ms){
		fb_sleep_ms(10);
	}
	ck_assert_uint_eq(fb_inject_run(in), 0);
	ck_assert_uint_eq(n_kept, 1);
	ck_assert_uint_eq(n_lines, 1);
	ck_assert_uint_eq(in->injected, 1);
	ck_assert_int_eq(access(path, F_OK), 0);
	ck_assert_uint_eq(atomic_load(&f.ctr->c2e_dropped), 0);
	ck_assert_uint_eq(atomic_load(&f.ctr->injected), 1);

	/* The limit back: not tried before its time (it would go through now) ... */
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &old), 0);
	in->retry_ms = fb_mono_ms() + 60000;
	ck_assert_uint_eq(fb_inject_run(in), 0);
	ck_assert_uint_eq(n_kept, 1);
	ck_assert_int_eq(access(path, F_OK), 0);
	/* ... then both go through at the next try, once, in order. */
	in->retry_ms = 0;
	deadline = fb_mono_ms() + 10000;
	while(n_kept == 1 && fb_mono_ms() < deadline){
		if(fb_inject_run(in) == 0){
			fb_sleep_ms(10);
		}
	}
	ck_assert_uint_eq(n_kept, 3);
	kept_is(1, "cmd/big", big, BIG_LEN);
	kept_is(2, "cmd/b", (const uint8_t *)"b", 1);
	ck_assert_uint_eq(in->injected, 3);
	fb_inject_release(in);
	ck_assert_uint_eq(atomic_load(&f.ring->released), 3);
	ck_assert_int_eq(fb_c2e_waiting(f.ring), 0);
	ck_assert_int_eq(access(path, F_OK), -1);
	ck_assert_uint_eq(fb_inject_run(in), 0);
	ck_assert_uint_eq(n_kept, 3);
	ck_assert_uint_eq(atomic_load(&f.ctr->c2e_dropped), 0);
	ck_assert_uint_eq(atomic_load(&f.ctr->injected), 3);
	ck_assert_uint_eq(n_lines, 2);
	ck_assert_int_eq(levels[1], MOSQ_LOG_NOTICE);
	ck_assert_msg(strncmp(lines[1], "spool \"in\" record 2 no longer waits (after ", 43) == 0, "%s", lines[1]);
	ck_assert_ptr_nonnull(strstr(lines[1], " ms); cloud messages are injected again"));

	fix_free(&f);
	free(big);
}
END_TEST

/* A malformed record (unknown version) and a large record whose file is gone (ENOENT) do not pass
 * with time: each is dropped, counted in c2e_dropped and logged, and the records around them go
 * through in order. */
START_TEST(test_a_malformed_record_or_a_missing_file_is_dropped_and_counted)
{
	static const uint8_t bad[] = { 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 'x' };
	struct fix f;
	struct fb_inject *in = &f.in;
	uint8_t *big = calloc(1, BIG_LEN);
	char path[256], want[512];

	fix_init(&f);
	ck_assert_ptr_nonnull(big);
	put_msg(f.ring, f.dir, 1, "cmd/a", (const uint8_t *)"a", 1);
	ck_assert_int_eq(fb_c2e_put(f.ring, f.dir, FB_C2E_STEM, 2, bad, sizeof(bad)), 0);
	put_msg(f.ring, f.dir, 3, "cmd/b", (const uint8_t *)"b", 1);
	put_msg(f.ring, f.dir, 4, "cmd/big", big, BIG_LEN);
	put_msg(f.ring, f.dir, 5, "cmd/c", (const uint8_t *)"c", 1);
	snprintf(path, sizeof(path), "%s/" FB_C2E_STEM "4", f.dir);
	ck_assert_int_eq(unlink(path), 0);

	ck_assert_uint_eq(fb_inject_run(in), 5);
	ck_assert_uint_eq(n_kept, 3);
	kept_is(0, "cmd/a", (const uint8_t *)"a", 1);
	kept_is(1, "cmd/b", (const uint8_t *)"b", 1);
	kept_is(2, "cmd/c", (const uint8_t *)"c", 1);
	ck_assert_uint_eq(atomic_load(&f.ctr->c2e_dropped), 2);
	ck_assert_uint_eq(atomic_load(&f.ctr->injected), 3);
	ck_assert_uint_eq(in->injected, 5);
	ck_assert_int_eq(fb_c2e_waiting(f.ring), 0);
	ck_assert(!in->waiting);
	ck_assert_uint_eq(n_lines, 2);
	ck_assert_int_eq(levels[0], MOSQ_LOG_ERR);
	ck_assert_str_eq(lines[0], "spool \"in\" record 2 is unreadable (malformed); dropped");
	ck_assert_int_eq(levels[1], MOSQ_LOG_ERR);
	snprintf(want, sizeof(want), "spool \"in\" record 4 is unreadable (%s: No such file or directory); dropped", path);
	ck_assert_str_eq(lines[1], want);

	fix_free(&f);
	free(big);
}
END_TEST

/* Puts record SEQ on cmd/fill whose entry in RING takes exactly SIZE bytes (a multiple of 8: the
 * entry's 16-byte head and the encoded record). */
static void put_entry_of(struct fb_c2e *ring, const char *dir, uint64_t seq, size_t size, uint8_t *fill)
{
	struct fb_record r = { .qos = 1, .lane = FB_LANE_DEFAULT, .topic = "cmd/fill", .topic_len = 8, .payload = fill };
	size_t base = fb_record_size(&r);
	uint8_t *buf;

	ck_assert_uint_eq(size % 8, 0);
	ck_assert_uint_ge(size, 16 + base);
	r.payload_len = (uint32_t)(size - 16 - base);
	buf = malloc(size);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(fb_record_encode(&r, buf), size - 16);
	ck_assert_int_eq(fb_c2e_put(ring, dir, FB_C2E_STEM, seq, buf, size - 16), 0);
	free(buf);
}

/* Messages larger than half the ring (each in a file of its own): a tick takes them until they
 * come to FB_INJECT_BYTES (the first always), the next tick goes on, in order, each once. Before,
 * only the count bounded a tick: 256 such messages could be read and copied in one. */
START_TEST(test_large_messages_are_injected_a_byte_budget_per_tick)
{
	struct fix f;
	uint8_t *big = malloc(BIG_LEN);
	unsigned want[] = { 2, 2, 1, 0 };

	_Static_assert(2 * BIG_LEN >= FB_INJECT_BYTES && BIG_LEN < FB_INJECT_BYTES, "two per tick");
	ck_assert_ptr_nonnull(big);
	fix_init(&f);
	for(uint64_t seq = 1; seq <= 5; seq++){
		memset(big, (int)('a' + seq), BIG_LEN);
		put_msg(f.ring, f.dir, seq, "cmd/big", big, BIG_LEN);
	}
	for(size_t t = 0; t < 4; t++){
		ck_assert_uint_eq(fb_inject_run(&f.in), want[t]);
	}
	ck_assert_uint_eq(n_kept, 5);
	for(size_t i = 0; i < 5; i++){
		memset(big, (int)('a' + i + 1), BIG_LEN);
		kept_is(i, "cmd/big", big, BIG_LEN);
	}
	ck_assert_uint_eq(f.in.injected, 5);
	fix_free(&f);
	free(big);
}
END_TEST

/* A link process started afresh pushes again what spool "in" still holds, also what the ring holds
 * and the broker has not taken yet. Pushing the large record again into a ring with no room fails
 * and leaves its file, which the entry already in the ring reads; with room, the file is replaced
 * by a whole one in one step (written aside, renamed). Either way the broker injects the large
 * record whole, byte for byte (the second copy finds the file gone once the first is taken, and is
 * counted as unreadable, as before). */
START_TEST(test_pushing_a_large_record_again_keeps_its_file)
{
	struct fix f;
	uint8_t *big = malloc(BIG_LEN), *fill = calloc(1, FB_C2E_RING / 4);
	char path[256];
	struct stat sb;
	uint64_t seq = 2, room;

	ck_assert_ptr_nonnull(big);
	ck_assert_ptr_nonnull(fill);
	fix_init(&f);
	for(size_t i = 0; i < BIG_LEN; i++){
		big[i] = (uint8_t)(i * 13 + i / 65536);
	}
	put_msg(f.ring, f.dir, 1, "cmd/big", big, BIG_LEN);
	snprintf(path, sizeof(path), "%s/" FB_C2E_STEM "1", f.dir);
	/* the ring filled to the last byte */
	while((room = FB_C2E_RING - (atomic_load(&f.ring->tail) - atomic_load(&f.ring->head))) > 0){
		put_entry_of(f.ring, f.dir, seq++, room > FB_C2E_RING / 4 ? FB_C2E_RING / 8 : room, fill);
	}
	/* the large record again (a link process started afresh): no room, its file untouched */
	ck_assert_int_eq(stat(path, &sb), 0);
	{
		struct fb_record r = { .qos = 1, .lane = FB_LANE_DEFAULT, .topic = "cmd/big", .topic_len = 7,
			.payload = big, .payload_len = BIG_LEN };
		uint8_t *buf = malloc(fb_record_size(&r));

		ck_assert_ptr_nonnull(buf);
		ck_assert_int_eq(fb_c2e_put(f.ring, f.dir, FB_C2E_STEM, 1, buf, fb_record_encode(&r, buf)), -ENOBUFS);
		free(buf);
	}
	ck_assert_int_eq(access(path, F_OK), 0);
	/* the broker takes the large one, whole, and the fill (in two ticks: FB_INJECT_BYTES) */
	ck_assert_uint_eq(fb_inject_run(&f.in) + fb_inject_run(&f.in), seq - 1);
	ck_assert_uint_eq(n_kept, seq - 1);
	kept_is(0, "cmd/big", big, BIG_LEN);
	ck_assert_uint_eq(f.in.injected, seq - 1);
	ck_assert_uint_eq(atomic_load(&f.ctr->c2e_dropped), 0);
	ck_assert_int_eq(access(path, F_OK), -1);

	/* with room: pushed twice; the second write replaces the file whole */
	put_msg(f.ring, f.dir, seq, "cmd/big", big, BIG_LEN);
	put_msg(f.ring, f.dir, seq, "cmd/big", big, BIG_LEN);
	snprintf(path, sizeof(path), "%s/" FB_C2E_STEM "%llu.new", f.dir, (unsigned long long)seq);
	ck_assert_int_eq(access(path, F_OK), -1);
	kept_free();
	ck_assert_uint_eq(fb_inject_run(&f.in), 2);
	ck_assert_uint_eq(n_kept, 1);
	kept_is(0, "cmd/big", big, BIG_LEN);
	ck_assert_uint_eq(atomic_load(&f.ctr->c2e_dropped), 1);
	fix_free(&f);
	free(fill);
	free(big);
}
END_TEST

static int drop_publish(void *ud, const char *topic, int payloadlen, void *payload, int qos, bool retain,
		mosquitto_property *props)
{
	(void)ud; (void)topic; (void)payloadlen; (void)qos; (void)retain;
	free(payload);
	mosquitto_property_free_all(&props);
	return 0;
}

/* A link process about to start on a fresh channel: what the ring holds goes, unread (a large
 * record's file too, whatever wraps), the reading side starts again at seq 0, and the released mark
 * stays for the salvage. Then records from seq 1 on are injected as usual. */
START_TEST(test_a_restart_on_a_fresh_channel_drops_what_the_ring_holds)
{
	struct fix f;
	uint8_t *big = malloc(BIG_LEN), *fill = calloc(1, FB_C2E_RING / 4);
	char path[256];
	uint64_t seq = 1;

	ck_assert_ptr_nonnull(big);
	ck_assert_ptr_nonnull(fill);
	memset(big, 'b', BIG_LEN);
	fix_init(&f);
	/* 3 x 256 of 16 KiB taken and released, so the ring's positions wrap below */
	f.host.publish = drop_publish;
	for(int round = 0; round < 3; round++){
		for(int i = 0; i < FB_INJECT_BUDGET; i++){
			put_entry_of(f.ring, f.dir, seq++, FB_C2E_RING / 512, fill);
		}
		ck_assert_uint_eq(fb_inject_run(&f.in), FB_INJECT_BUDGET);
		fb_inject_release(&f.in);
	}
	ck_assert_uint_eq(atomic_load(&f.ring->released), 768);
	f.host.publish = keep_publish;
	/* then a small one, a large one and 300 small ones wait */
	put(f.ring, f.dir, seq++);
	put_msg(f.ring, f.dir, seq++, "cmd/big", big, BIG_LEN);
	snprintf(path, sizeof(path), "%s/" FB_C2E_STEM "770", f.dir);
	ck_assert_int_eq(access(path, F_OK), 0);
	for(int i = 0; i < 300; i++){
		put_entry_of(f.ring, f.dir, seq++, FB_C2E_RING / 512, fill);
	}
	kept_free();
	ck_assert_uint_eq(fb_inject_restart(&f.in), 302);
	ck_assert_int_eq(access(path, F_OK), -1);
	ck_assert_uint_eq(atomic_load(&f.ring->head), atomic_load(&f.ring->tail));
	ck_assert_uint_eq(f.in.rd.head, atomic_load(&f.ring->tail));
	ck_assert_uint_eq(f.in.injected, 0);
	ck_assert_uint_eq(f.in.released, 0);
	ck_assert_uint_eq(atomic_load(&f.ring->released), 768);
	ck_assert_uint_eq(fb_inject_run(&f.in), 0);
	ck_assert_uint_eq(n_kept, 0);
	/* the next link process: released 0, and spool "in" numbered from 1 */
	atomic_store(&f.ring->released, 0);
	put(f.ring, f.dir, 1);
	put(f.ring, f.dir, 2);
	ck_assert_uint_eq(fb_inject_run(&f.in), 2);
	ck_assert_uint_eq(n_kept, 2);
	ck_assert_uint_eq(f.in.injected, 2);
	fb_inject_release(&f.in);
	ck_assert_uint_eq(atomic_load(&f.ring->released), 2);
	ck_assert_uint_eq(atomic_load(&f.ctr->c2e_dropped), 0);
	fix_free(&f);
	free(fill);
	free(big);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("inject");
	TCase *tc = tcase_create("budget");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_a_backlog_is_injected_a_budget_per_tick_in_order);
	suite_add_tcase(s, tc);
	tc = tcase_create("unreadable");
	tcase_add_test(tc, test_a_file_that_cannot_be_opened_for_lack_of_descriptors_waits_in_order);
	tcase_add_test(tc, test_a_malformed_record_or_a_missing_file_is_dropped_and_counted);
	tcase_add_test(tc, test_pushing_a_large_record_again_keeps_its_file);
	tcase_add_test(tc, test_large_messages_are_injected_a_byte_budget_per_tick);
	suite_add_tcase(s, tc);
	tc = tcase_create("restart");
	tcase_add_test(tc, test_a_restart_on_a_fresh_channel_drops_what_the_ring_holds);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
