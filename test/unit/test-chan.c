/* Unit tests (test process) of plugin/ipc/chan.c: the staging channel from the broker thread to the
 * link process. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "chan.h"

static char dir[256];
static struct fb_chan_shared *sh;

static void setup(void)
{
	snprintf(dir, sizeof(dir), "%s/test-chan-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(sh, MAP_FAILED);
}

static void teardown(void)
{
	char cmd[512];

	munmap(sh, sizeof(*sh));
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

static void value_of(uint8_t *buf, uint64_t seq, size_t len)
{
	for(size_t i = 0; i < len; i++){
		buf[i] = (uint8_t)(seq * 131 + i * 7);
	}
}

/* Checks every record visited: the next seq in order, the length LEN_OF(seq), exact bytes. */
struct order {
	uint64_t next;
	size_t (*len_of)(uint64_t seq);
	uint64_t n;
};

static int order_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct order *o = ud;
	static uint8_t expect[6 << 20];

	ck_assert_uint_eq(seq, o->next);
	ck_assert_uint_eq(len, o->len_of(seq));
	value_of(expect, seq, len);
	ck_assert_msg(memcmp(expect, val, len) == 0, "record %llu: bytes differ", (unsigned long long)seq);
	o->next++;
	o->n++;
	return 0;
}

/* SEEN[0]: records, SEEN[1]: the last seq, SEEN[2]: seqs not above the one before. */
static int count_seen(void *ud, uint64_t seq, const void *val, size_t len)
{
	uint64_t *seen = ud;
	uint8_t expect[300];

	ck_assert_uint_eq(len, 300);
	value_of(expect, seq, len);
	ck_assert_msg(memcmp(expect, val, len) == 0, "record %llu: bytes differ", (unsigned long long)seq);
	if(seq <= seen[1]){
		seen[2]++;
	}
	seen[0]++;
	seen[1] = seq;
	return 0;
}

static size_t len_300(uint64_t seq)
{
	(void)seq;
	return 300;
}

static size_t len_varied(uint64_t seq)
{
	return (size_t)(seq * 37 % 900);
}

static struct fb_chan_reader *fresh_reader(uint64_t next_seq)
{
	struct fb_chan_reader *r;

	ck_assert_int_eq(fb_chan_reader_open(dir, sh, true, &r), 0);
	ck_assert_int_eq(fb_chan_reset(r, next_seq), 0);
	fb_chan_ready(r);
	return r;
}

static struct fb_chan_writer *writer(uint64_t max_size, enum fb_on_full on_full)
{
	struct fb_chan_limits lim = { .max_size = max_size, .on_full = on_full };
	struct fb_chan_writer *w;

	ck_assert_int_eq(fb_chan_writer_open(dir, sh, &lim, &w), 0);
	return w;
}

static int append(struct fb_chan_writer *w, uint64_t expect_seq, size_t len)
{
	static uint8_t buf[6 << 20];
	uint64_t seq = 0;
	int rc;

	value_of(buf, expect_seq, len);
	rc = fb_chan_append(w, buf, len, &seq);
	if(rc == 0){
		ck_assert_uint_eq(seq, expect_seq);
	}
	return rc;
}

/* 40,000 records of varied sizes go through both files several times, the reader taking and
 * settling every 1,000: all of them come out once, in order, with their exact bytes. */
START_TEST(records_come_out_in_order_across_file_switches)
{
	struct fb_chan_reader *r = fresh_reader(1);
	struct fb_chan_writer *w = writer(0, FB_ON_FULL_DROP_OLDEST);
	struct order o = { .next = 1, .len_of = len_varied };

	for(uint64_t seq = 1; seq <= 40000; seq++){
		ck_assert_int_eq(append(w, seq, len_varied(seq)), 0);
		if(seq % 1000 == 0){
			ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
			ck_assert_uint_eq(o.next, seq + 1);
			ck_assert_uint_eq(fb_chan_unsettled(r), 1000);
			ck_assert_uint_eq(fb_chan_first_unsettled(r), seq - 999);
			fb_chan_settled(r);
			ck_assert_uint_eq(fb_chan_unsettled(r), 0);
		}
	}
	ck_assert_uint_eq(o.n, 40000);
	fb_chan_writer_close(w);
	fb_chan_reader_close(r);
}
END_TEST

/* Without a reader emptying them, both files fill up: -EBUSY, and nothing is lost. Once the
 * reader has settled the sealed one, appends go on. */
START_TEST(both_files_full_is_ebusy_until_the_reader_settles)
{
	struct fb_chan_reader *r = fresh_reader(1);
	struct fb_chan_writer *w = writer(0, FB_ON_FULL_DROP_OLDEST);
	struct order o = { .next = 1, .len_of = len_300 };
	uint64_t seq = 1, unsettled_before;

	while(append(w, seq, 300) == 0){
		seq++;
	}
	ck_assert_int_eq(append(w, seq, 300), -EBUSY);
	ck_assert(!fb_chan_write_failed(w));
	/* 320 bytes a record (16 of header, the value padded to 8): half a file before the switch,
	 * then all of the second one. */
	ck_assert_uint_eq(seq - 1, (2u << 20) / 320 + 1 + (4u << 20) / 320);
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert_uint_eq(o.n, seq - 1);
	/* Still busy: taken, but not settled. */
	ck_assert_int_eq(append(w, seq, 300), -EBUSY);
	unsettled_before = fb_chan_unsettled(r);
	ck_assert_uint_eq(unsettled_before, seq - 1);
	fb_chan_settled(r);
	ck_assert_int_eq(append(w, seq, 300), 0);
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert_uint_eq(o.next, seq + 1);
	fb_chan_writer_close(w);
	fb_chan_reader_close(r);
}
END_TEST

/* The sealed file is due once the writer is a quarter into the other one: 1 MiB of 320-byte
 * records (3,277), half a file before the writer would switch back. */
START_TEST(a_sealed_file_is_due_a_quarter_into_the_other)
{
	struct fb_chan_reader *r = fresh_reader(1);
	struct fb_chan_writer *w = writer(0, FB_ON_FULL_DROP_OLDEST);
	struct order o = { .next = 1, .len_of = len_300 };
	uint64_t seq = 1, in_first = (2u << 20) / 320 + 1, quarter = (1u << 20) / 320 + 1;

	for(; seq <= in_first; seq++){
		ck_assert_int_eq(append(w, seq, 300), 0);
	}
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert(!fb_chan_sealed(r));
	ck_assert(!fb_chan_settle_due(r));
	for(; seq < in_first + quarter; seq++){
		ck_assert_int_eq(append(w, seq, 300), 0);
		ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
		ck_assert(fb_chan_sealed(r));
		ck_assert(!fb_chan_settle_due(r));
	}
	ck_assert_int_eq(append(w, seq, 300), 0);
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert(fb_chan_settle_due(r));
	fb_chan_settled(r);
	ck_assert(!fb_chan_sealed(r));
	ck_assert(!fb_chan_settle_due(r));
	ck_assert_uint_eq(o.n, in_first + quarter);
	fb_chan_writer_close(w);
	fb_chan_reader_close(r);
}
END_TEST

/* max_size: the reader's live bytes plus what was appended since its last take. */
START_TEST(max_size_counts_live_and_untaken_bytes)
{
	struct fb_chan_reader *r = fresh_reader(1);
	struct fb_chan_writer *w = writer(10000, FB_ON_FULL_REJECT);

	for(uint64_t seq = 1; seq <= 100; seq++){
		ck_assert_int_eq(append(w, seq, 92), 0); /* 100 bytes with the key */
	}
	ck_assert_int_eq(append(w, 101, 92), -ENOSPC);
	ck_assert(!fb_chan_write_failed(w)); /* the channel's refusal, not a file's */
	ck_assert_int_eq(append(w, 101, 1), -ENOSPC);
	ck_assert_int_eq(append(w, 101, 9993), -E2BIG);
	ck_assert(!fb_chan_write_failed(w));
	fb_chan_writer_close(w);
	fb_chan_reader_close(r);

	/* drop_oldest accepts: the reader drops. */
	r = fresh_reader(1);
	w = writer(1000, FB_ON_FULL_DROP_OLDEST);
	for(uint64_t seq = 1; seq <= 50; seq++){
		ck_assert_int_eq(append(w, seq, 92), 0);
	}
	ck_assert_int_eq(append(w, 51, 993), -E2BIG);
	fb_chan_writer_close(w);
	fb_chan_reader_close(r);
}
END_TEST

static int count_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	(void)seq; (void)val; (void)len;
	(*(uint64_t *)ud)++;
	return 0;
}

START_TEST(live_bytes_published_by_the_reader_make_room)
{
	struct fb_chan_reader *r = fresh_reader(1);
	struct fb_chan_writer *w = writer(10000, FB_ON_FULL_DROP_NEW);
	uint64_t n = 0;

	for(uint64_t seq = 1; seq <= 100; seq++){
		ck_assert_int_eq(append(w, seq, 92), 0);
	}
	ck_assert_int_eq(fb_chan_take(r, count_visit, &n), 0);
	ck_assert_uint_eq(n, 100);
	fb_chan_account(r, fb_chan_seen(r), 10000);
	ck_assert_int_eq(append(w, 101, 92), -ENOSPC);
	fb_chan_account(r, fb_chan_seen(r), 9900); /* one acknowledged */
	ck_assert_int_eq(append(w, 101, 92), 0);
	ck_assert_int_eq(append(w, 102, 92), -ENOSPC);
	fb_chan_writer_close(w);
	fb_chan_reader_close(r);
}
END_TEST

/* A reader killed between the two halves of its accounting update leaves the sequence lock odd:
 * the writer's limit check must not spin forever on it, and the next reader evens it. */
START_TEST(a_reader_killed_inside_an_update_does_not_stall_the_writer)
{
	struct fb_chan_reader *r = fresh_reader(1);
	struct fb_chan_writer *w = writer(10000, FB_ON_FULL_REJECT);

	fb_chan_account(r, 0, 0);
	atomic_fetch_add(&sh->rgen, 1); /* killed after the first increment */
	ck_assert_int_eq(append(w, 1, 92), 0);
	fb_chan_reader_close(r);
	ck_assert_int_eq(fb_chan_reader_open(dir, sh, false, &r), 0);
	ck_assert_uint_eq(atomic_load(&sh->rgen) % 2, 0);
	fb_chan_account(r, 0, 9900);
	ck_assert_int_eq(append(w, 2, 1), -ENOSPC); /* the new reader's values count again */
	fb_chan_writer_close(w);
	fb_chan_reader_close(r);
}
END_TEST

static size_t big_files(void)
{
	char pattern[512];
	glob_t g;
	size_t n;

	snprintf(pattern, sizeof(pattern), "%s/flowmq-big-*", dir);
	if(glob(pattern, 0, NULL, &g) != 0){
		return 0;
	}
	n = g.gl_pathc;
	globfree(&g);
	return n;
}

static size_t len_big_every_third(uint64_t seq)
{
	return seq % 3 == 0 ? (5u << 20) + (size_t)seq : 200;
}

/* A record larger than a staging file travels in a file of its own, comes out with its exact
 * bytes in order, and its file is removed once it is settled. */
START_TEST(large_records_travel_in_their_own_files)
{
	struct fb_chan_reader *r = fresh_reader(1);
	struct fb_chan_writer *w = writer(0, FB_ON_FULL_DROP_OLDEST);
	struct order o = { .next = 1, .len_of = len_big_every_third };
	struct order u = { .next = 1, .len_of = len_big_every_third };

	for(uint64_t seq = 1; seq <= 6; seq++){
		ck_assert_int_eq(append(w, seq, len_big_every_third(seq)), 0);
	}
	ck_assert_uint_eq(big_files(), 2);
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert_uint_eq(o.n, 6);
	ck_assert_int_eq(fb_chan_each_unsettled(r, order_visit, &u), 0);
	ck_assert_uint_eq(u.n, 6);
	ck_assert_uint_eq(big_files(), 2);
	fb_chan_settled(r);
	ck_assert_uint_eq(big_files(), 0);
	fb_chan_writer_close(w);
	fb_chan_reader_close(r);
}
END_TEST

/* Every fdatasync() and fsync() of the channel's code, by the path of the file (the test links
 * with --wrap for both, test/unit/meson.build). */
#define SYNCS_MAX 64
static char synced[SYNCS_MAX][512];
static size_t n_synced;

int __real_fdatasync(int fd);
int __real_fsync(int fd);

static void note_sync(int fd)
{
	char link[64];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ck_assert_uint_lt(n_synced, SYNCS_MAX);
	n = readlink(link, synced[n_synced], sizeof(synced[0]) - 1);
	ck_assert_int_gt(n, 0);
	synced[n_synced++][n] = '\0';
}

int __wrap_fdatasync(int fd)
{
	note_sync(fd);
	return __real_fdatasync(fd);
}

int __wrap_fsync(int fd)
{
	note_sync(fd);
	return __real_fsync(fd);
}

/* How often the file NAME in the test's folder ("" for the folder itself) was synced. */
static size_t syncs_of(const char *name)
{
	char real[PATH_MAX], path[PATH_MAX + 64];
	size_t n = 0;

	ck_assert_ptr_nonnull(realpath(dir, real));
	snprintf(path, sizeof(path), "%s%s%s", real, *name ? "/" : "", name);
	for(size_t i = 0; i < n_synced; i++){
		n += strcmp(synced[i], path) == 0;
	}
	return n;
}

/* With spool.sync at an interval the broker thread does not sync a large record's own file (only
 * the staging files are synced, and they hold a pointer to it): fb_chan_sync() does, once, for
 * each large record taken since its last call, and then the folder that names the new files. */
START_TEST(sync_covers_the_own_files_of_large_records_taken_since_the_last_sync)
{
	struct fb_chan_reader *r = fresh_reader(1);
	struct fb_chan_writer *w = writer(0, FB_ON_FULL_DROP_OLDEST);
	struct order o = { .next = 1, .len_of = len_big_every_third };
	char stage0[64], stage1[64];

	snprintf(stage0, sizeof(stage0), "%s.0", FB_CHAN_FILE);
	snprintf(stage1, sizeof(stage1), "%s.1", FB_CHAN_FILE);
	for(uint64_t seq = 1; seq <= 6; seq++){
		ck_assert_int_eq(append(w, seq, len_big_every_third(seq)), 0);
	}
	ck_assert_uint_eq(n_synced, 0); /* the writer syncs nothing without lim.sync */
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert_int_eq(fb_chan_sync(r), 0);
	ck_assert_uint_eq(syncs_of("flowmq-big-3"), 1);
	ck_assert_uint_eq(syncs_of("flowmq-big-6"), 1);
	ck_assert_uint_eq(syncs_of(""), 1);
	ck_assert_uint_eq(syncs_of(stage0), 1);
	ck_assert_uint_eq(syncs_of(stage1), 1);
	ck_assert_uint_eq(n_synced, 5);

	/* Nothing large taken since: the staging files only. */
	n_synced = 0;
	ck_assert_int_eq(fb_chan_sync(r), 0);
	ck_assert_uint_eq(n_synced, 2);
	ck_assert_uint_eq(syncs_of(stage0) + syncs_of(stage1), 2);

	/* One more large record: its file alone, not the earlier ones again. */
	n_synced = 0;
	for(uint64_t seq = 7; seq <= 9; seq++){
		ck_assert_int_eq(append(w, seq, len_big_every_third(seq)), 0);
	}
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert_uint_eq(o.n, 9);
	ck_assert_int_eq(fb_chan_sync(r), 0);
	ck_assert_uint_eq(syncs_of("flowmq-big-9"), 1);
	ck_assert_uint_eq(syncs_of("flowmq-big-3") + syncs_of("flowmq-big-6"), 0);
	ck_assert_uint_eq(syncs_of(""), 1);
	ck_assert_uint_eq(n_synced, 4);

	fb_chan_writer_close(w);
	fb_chan_reader_close(r);
}
END_TEST

/* A large record whose own file cannot be written (a folder in its place: EISDIR) fails with the
 * write's errno, and fb_chan_write_failed() says so (the channel's own refusals do not, see
 * max_size_counts_live_and_untaken_bytes: the broker tells a full disk from a full channel by it);
 * nothing is staged and its seq is not used up: once the file can be written, the same record
 * goes through with it. */
START_TEST(a_large_record_whose_file_cannot_be_written_is_a_write_failure)
{
	struct fb_chan_reader *r = fresh_reader(1);
	struct fb_chan_writer *w = writer(0, FB_ON_FULL_DROP_OLDEST);
	struct order o = { .next = 1, .len_of = len_big_every_third };
	char path[512];

	snprintf(path, sizeof(path), "%s/flowmq-big-3", dir);
	ck_assert_int_eq(mkdir(path, 0700), 0);
	ck_assert_int_eq(append(w, 1, len_big_every_third(1)), 0);
	ck_assert_int_eq(append(w, 2, len_big_every_third(2)), 0);
	ck_assert_int_eq(append(w, 3, len_big_every_third(3)), -EISDIR);
	ck_assert(fb_chan_write_failed(w));
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert_uint_eq(o.n, 2);
	ck_assert_int_eq(rmdir(path), 0);
	ck_assert_int_eq(append(w, 3, len_big_every_third(3)), 0);
	ck_assert(!fb_chan_write_failed(w));
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert_uint_eq(o.n, 3);
	fb_chan_writer_close(w);
	fb_chan_reader_close(r);
}
END_TEST

static uint64_t quarter_test_first; /* the first seq after the 300-byte records */

static size_t len_quarter_test(uint64_t seq)
{
	if(seq < quarter_test_first){
		return 300;
	}
	if(seq == quarter_test_first){
		return (4u << 20) - 1000;
	}
	return seq == quarter_test_first + 1 ? (1u << 20) + 1 : 1u << 20;
}

/* While a sealed file waits for the writer to be a quarter into the other one, that one must take
 * any record: one of almost a whole file goes into a file of its own, as does anything above a
 * quarter of a file (a quarter stays in the staging file); nothing is refused, and all come out
 * in order with their exact bytes. */
START_TEST(a_record_above_a_quarter_of_a_file_travels_alone_while_the_sealed_one_waits)
{
	struct fb_chan_reader *r = fresh_reader(1);
	struct fb_chan_writer *w = writer(0, FB_ON_FULL_DROP_OLDEST);
	struct order o = { .next = 1, .len_of = len_quarter_test };
	uint64_t seq;

	quarter_test_first = (2u << 20) / 320 + 1 + 10 + 1;
	for(seq = 1; seq < quarter_test_first; seq++){
		ck_assert_int_eq(append(w, seq, 300), 0);
	}
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert(fb_chan_sealed(r));
	ck_assert(!fb_chan_settle_due(r));
	for(; seq < quarter_test_first + 3; seq++){
		ck_assert_int_eq(append(w, seq, len_quarter_test(seq)), 0);
	}
	ck_assert_uint_eq(big_files(), 2);
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert_uint_eq(o.n, quarter_test_first + 2);
	ck_assert(fb_chan_settle_due(r)); /* the last record took the writer past a quarter */
	fb_chan_settled(r);
	ck_assert_uint_eq(big_files(), 0);
	fb_chan_writer_close(w);
	fb_chan_reader_close(r);
}
END_TEST

/* Damage in a staging file loses only the records it hit; recovery counts them by seq gap, in
 * seq order across both files, from the first seq expected on. */
START_TEST(recovery_skips_damage_and_counts_the_gap)
{
	struct fb_chan_reader *r = fresh_reader(1);
	struct fb_chan_writer *w = writer(0, FB_ON_FULL_DROP_OLDEST);
	struct fb_chan_loss loss;
	uint64_t seq = 1, seen[3] = { 0, 0, 0 };
	uint8_t junk[64];
	char path[512];
	int fd;

	while(atomic_load(&sh->active) == 0){
		ck_assert_int_eq(append(w, seq++, 300), 0);
	}
	for(int i = 0; i < 50; i++){
		ck_assert_int_eq(append(w, seq++, 300), 0); /* into file 1 */
	}
	fb_chan_writer_close(w);
	fb_chan_reader_close(r);

	/* 64 bytes from byte 20 of record 101 (each takes 16 + 304 bytes): only that record. */
	memset(junk, 0xA5, sizeof(junk));
	ck_assert_int_eq(fb_chan_file_name(dir, 0, path, sizeof(path)), 0);
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, junk, sizeof(junk), 100 * 320 + 20), (ssize_t)sizeof(junk));
	close(fd);
	/* And the first record of file 1 (the length field of its header). */
	ck_assert_int_eq(fb_chan_file_name(dir, 1, path, sizeof(path)), 0);
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, junk, 4, 0), 4);
	close(fd);

	memset(sh, 0, sizeof(*sh));
	ck_assert_int_eq(fb_chan_reader_open(dir, sh, true, &r), 0);
	ck_assert_int_eq(fb_chan_recover(r, 1, count_seen, seen, &loss), 0);
	/* Every record but 101 and the first of file 1, in order. */
	ck_assert_uint_eq(seen[0], seq - 1 - 2);
	ck_assert_uint_eq(seen[1], seq - 1);
	ck_assert_uint_eq(seen[2], 0);
	ck_assert_uint_eq(loss.lost, 2);
	ck_assert_uint_eq(loss.first_seq, 101);
	ck_assert_uint_eq(loss.last_seq, seq - 1 - 50);
	ck_assert_uint_eq(loss.files, 3);
	ck_assert_uint_eq(loss.damaged, 1); /* file 1's damage comes before any record of it */
	ck_assert_uint_eq(loss.damaged_off[0], 100 * 320);

	/* From a higher first seq: the records before it are not visited, nor counted. */
	memset(seen, 0, sizeof(seen));
	ck_assert_int_eq(fb_chan_recover(r, 200, count_seen, seen, &loss), 0);
	ck_assert_uint_eq(seen[0], seq - 200 - 1);
	ck_assert_uint_eq(loss.lost, 1);
	ck_assert_uint_eq(loss.files, 2);
	fb_chan_reader_close(r);
}
END_TEST

/* After a stop, a fresh reader recovers what the files hold, the older file first, even when the
 * writer came back to file 0 for the newest records; reset empties both. */
START_TEST(recovery_visits_the_older_file_first_then_reset_empties)
{
	struct fb_chan_reader *r = fresh_reader(1);
	struct fb_chan_writer *w = writer(0, FB_ON_FULL_DROP_OLDEST);
	struct order o = { .next = 1, .len_of = len_300 };
	uint64_t seq = 1, n = 0, first_kept;
	struct fb_chan_loss loss;

	/* File 0 to past half, then file 1: file 0 is sealed. */
	while(atomic_load(&sh->active) == 0){
		ck_assert_int_eq(append(w, seq++, 300), 0);
	}
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	fb_chan_settled(r); /* file 0 is FREE again */
	first_kept = seq - 1; /* the first record of file 1 */
	while(atomic_load(&sh->active) == 1){
		ck_assert_int_eq(append(w, seq++, 300), 0);
	}
	/* Now file 0 holds the newest records, file 1 the older ones. */
	ck_assert_int_eq(append(w, seq++, 300), 0);
	fb_chan_writer_close(w);
	fb_chan_reader_close(r);

	memset(sh, 0, sizeof(*sh));
	ck_assert_int_eq(fb_chan_reader_open(dir, sh, true, &r), 0);
	o = (struct order){ .next = first_kept, .len_of = len_300 };
	ck_assert_int_eq(fb_chan_recover(r, first_kept, order_visit, &o, &loss), 0);
	ck_assert_uint_eq(o.next, seq);
	ck_assert_uint_eq(loss.lost, 0);
	ck_assert_int_eq(fb_chan_reset(r, seq), 0);
	fb_chan_reader_close(r);

	ck_assert_int_eq(fb_chan_reader_open(dir, sh, true, &r), 0);
	ck_assert_int_eq(fb_chan_recover(r, 1, count_visit, &n, NULL), 0);
	ck_assert_uint_eq(n, 0);
	fb_chan_reader_close(r);
}
END_TEST

/* A reader opened for a running writer (the link process restarted) takes everything from the
 * oldest file in use, the sealed one. */
START_TEST(a_new_reader_follows_a_running_writer_from_the_sealed_file)
{
	struct fb_chan_reader *r = fresh_reader(1);
	struct fb_chan_writer *w = writer(0, FB_ON_FULL_DROP_OLDEST);
	struct order o = { .next = 1, .len_of = len_300 };
	uint64_t seq = 1;

	while(atomic_load(&sh->active) == 0){
		ck_assert_int_eq(append(w, seq++, 300), 0);
	}
	for(int i = 0; i < 10; i++){
		ck_assert_int_eq(append(w, seq++, 300), 0);
	}
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0); /* taken, never settled: it dies */
	fb_chan_reader_close(r);

	ck_assert_int_eq(fb_chan_reader_open(dir, sh, false, &r), 0);
	o = (struct order){ .next = 1, .len_of = len_300 };
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert_uint_eq(o.next, seq);
	fb_chan_settled(r);
	ck_assert_int_eq(append(w, seq, 300), 0);
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert_uint_eq(o.next, seq + 1);
	fb_chan_writer_close(w);
	fb_chan_reader_close(r);
}
END_TEST

/* A reader killed inside fb_chan_settled(), after it emptied the sealed file (its first record's
 * header zeroed) and before it marked the file FREE: the next reader must not stop at the emptied
 * file (every take failing with -EIO, for ever), but take the newer file and give the emptied one
 * back to the writer. */
START_TEST(a_reader_killed_between_emptying_and_freeing_a_file_does_not_jam_the_next)
{
	struct fb_chan_reader *r = fresh_reader(1);
	struct fb_chan_writer *w = writer(0, FB_ON_FULL_DROP_OLDEST);
	struct order o = { .next = 1, .len_of = len_300 };
	uint8_t zero[16] = { 0 };
	char path[512];
	uint64_t seq = 1, first1;
	int fd;

	while(atomic_load(&sh->active) == 0){
		ck_assert_int_eq(append(w, seq++, 300), 0);
	}
	first1 = seq - 1; /* the append that switched went into file 1 */
	for(int i = 0; i < 10; i++){
		ck_assert_int_eq(append(w, seq++, 300), 0);
	}
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert_uint_eq(o.next, seq);
	fb_chan_reader_close(r);
	/* What fb_chan_settled() does to the sealed file before it marks it FREE. */
	ck_assert_int_eq(fb_chan_file_name(dir, 0, path, sizeof(path)), 0);
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, zero, sizeof(zero), 0), (ssize_t)sizeof(zero));
	close(fd);
	ck_assert_uint_eq(atomic_load(&sh->state[0]), FB_CHAN_SEALED);

	ck_assert_int_eq(fb_chan_reader_open(dir, sh, false, &r), 0);
	o = (struct order){ .next = first1, .len_of = len_300 };
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert_uint_eq(o.next, seq);
	ck_assert_uint_eq(atomic_load(&sh->state[0]), FB_CHAN_FREE);
	fb_chan_settled(r);
	/* The writer can switch back to file 0 and the reader follows. */
	while(atomic_load(&sh->active) == 1){
		ck_assert_int_eq(append(w, seq++, 300), 0);
	}
	ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
	ck_assert_uint_eq(o.next, seq);
	fb_chan_writer_close(w);
	fb_chan_reader_close(r);
}
END_TEST

/* The writer in another process, appending as fast as it can while this one takes and settles:
 * 200,000 records, each once, in order, with exact bytes. */
START_TEST(a_writer_process_and_a_reader_process_agree)
{
	struct fb_chan_reader *r = fresh_reader(1);
	struct order o = { .next = 1, .len_of = len_varied };
	const uint64_t total = 200000;
	pid_t pid;
	int status;

	pid = fork();
	ck_assert_int_ge(pid, 0);
	if(pid == 0){
		struct fb_chan_limits lim = { 0 };
		struct fb_chan_writer *w;
		int rc;

		if(fb_chan_writer_open(dir, sh, &lim, &w) != 0){
			_exit(2);
		}
		for(uint64_t seq = 1; seq <= total; seq++){
			static uint8_t buf[1024];
			uint64_t got;

			value_of(buf, seq, len_varied(seq));
			while((rc = fb_chan_append(w, buf, len_varied(seq), &got)) == -EBUSY){
				usleep(50);
			}
			if(rc != 0 || got != seq){
				_exit(3);
			}
		}
		fb_chan_writer_close(w);
		_exit(0);
	}
	while(o.next <= total){
		ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
		if(fb_chan_unsettled(r) >= 5000 || o.next > total){
			fb_chan_settled(r);
		}
		if(waitpid(pid, &status, WNOHANG) == pid){
			ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
			pid = 0;
			ck_assert_int_eq(fb_chan_take(r, order_visit, &o), 0);
			break;
		}
	}
	ck_assert_uint_eq(o.n, total);
	if(pid > 0){
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	fb_chan_reader_close(r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("chan");
	TCase *tc = tcase_create("basic");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, records_come_out_in_order_across_file_switches);
	tcase_add_test(tc, both_files_full_is_ebusy_until_the_reader_settles);
	tcase_add_test(tc, a_sealed_file_is_due_a_quarter_into_the_other);
	tcase_add_test(tc, max_size_counts_live_and_untaken_bytes);
	tcase_add_test(tc, live_bytes_published_by_the_reader_make_room);
	tcase_add_test(tc, a_reader_killed_inside_an_update_does_not_stall_the_writer);
	tcase_add_test(tc, large_records_travel_in_their_own_files);
	tcase_add_test(tc, a_large_record_whose_file_cannot_be_written_is_a_write_failure);
	tcase_add_test(tc, sync_covers_the_own_files_of_large_records_taken_since_the_last_sync);
	tcase_add_test(tc, a_record_above_a_quarter_of_a_file_travels_alone_while_the_sealed_one_waits);
	tcase_add_test(tc, recovery_visits_the_older_file_first_then_reset_empties);
	tcase_add_test(tc, recovery_skips_damage_and_counts_the_gap);
	tcase_add_test(tc, a_new_reader_follows_a_running_writer_from_the_sealed_file);
	tcase_add_test(tc, a_reader_killed_between_emptying_and_freeing_a_file_does_not_jam_the_next);
	tcase_add_test(tc, a_writer_process_and_a_reader_process_agree);
	suite_add_tcase(s, tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
