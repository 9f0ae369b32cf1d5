/* Unit tests (test process) of plugin/link/control.c: requeue-dead through the requeue ring on a
 * real spool, with this test standing in for the broker thread (it reads the ring with
 * fb_c2e_next() and consumes what requeue_run() would stage); this test program's own thread. */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "c2e.h"
#include "chan.h"
#include "control.h"
#include "record.h" /* fb_mono_ms() */
#include "request.h"
#include "spool.h"

#define BIG (FB_C2E_RING / 2 + 1) /* travels in a file of its own */

static char tmpdir[256], spool_path[512];
static char logtext[16384];
static struct fb_spool *sp;
static struct fb_c2e *ring;
static struct fb_c2e_reader rd;
static atomic_uint_fast64_t max_live;

static void capture(void *ud, int level, const char *line)
{
	size_t len = strlen(logtext);

	(void)ud;
	snprintf(logtext + len, sizeof(logtext) - len, "%d %s\n", level, line);
}

static const struct fb_logger lg = { capture, NULL };

static void no_wake(void *ud)
{
	(void)ud;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static void setup(void)
{
	struct fb_spool_opts o = { .on_full = FB_ON_FULL_DROP_OLDEST, .sync = FB_SYNC_INTERVAL, .lg = &lg };

	snprintf(tmpdir, sizeof(tmpdir), "%s/test-control-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(spool_path, sizeof(spool_path), "%s/spool", tmpdir);
	o.path = spool_path;
	ck_assert_int_eq(fb_spool_open(&o, &sp), 0);
	ring = calloc(1, sizeof(*ring));
	ck_assert_ptr_nonnull(ring);
	memset(&rd, 0, sizeof(rd));
	logtext[0] = '\0';
}

static void teardown(void)
{
	fb_c2e_reader_cleanup(&rd);
	free(ring);
	fb_spool_close(sp);
	nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static struct fb_control *control_open(void)
{
	struct fb_control_deps d = {
		.spool_path = spool_path,
		.spool = sp,
		.ring = ring,
		.max_live = &max_live,
		.wake = no_wake,
		.lg = &lg,
	};
	struct fb_control *c = NULL;

	ck_assert_int_eq(fb_control_open(&d, &c), 0);
	return c;
}

/* Dead letter I of LEN bytes (not a record of record.h: requeued as it is). */
static uint8_t *value(unsigned i, size_t len)
{
	uint8_t *v = malloc(len);

	ck_assert_ptr_nonnull(v);
	for(size_t k = 0; k < len; k++){
		v[k] = k == 0 ? 0xff : (uint8_t)(i * 31 + k + k / 4096);
	}
	return v;
}

static uint64_t add_dead(unsigned i, size_t len)
{
	uint8_t *v = value(i, len);
	uint64_t seq;

	ck_assert_int_eq(fb_spool_append(sp, FB_Q_DEAD, v, len, &seq, NULL), 0);
	free(v);
	return seq;
}

static void post(enum fb_request_op op, struct fb_request *rq)
{
	rq->op = op;
	rq->pid = getpid();
	ck_assert_int_eq(fb_request_nonce(rq), 0);
	ck_assert_int_eq(fb_request_post(spool_path, rq), 0);
}

/* Reads the record at the ring's head as the broker thread does and checks that it is dead letter
 * SEQ, written as I with LEN bytes; consumes it. */
static void take(uint64_t seq, unsigned i, size_t len)
{
	const uint8_t *rec;
	uint8_t *want = value(i, len);
	uint64_t got;
	size_t n;

	ck_assert_int_eq(fb_c2e_next(ring, &rd, spool_path, FB_REQUEUE_STEM, &got, &rec, &n), 1);
	ck_assert_uint_eq(got, seq);
	ck_assert_ptr_nonnull(rec);
	ck_assert_uint_eq(n, len);
	ck_assert(memcmp(rec, want, len) == 0);
	fb_c2e_consume(ring, &rd);
	free(want);
}

/* The record at the ring's head is dead letter SEQ, whose file cannot be read: left in place. */
static void unreadable(uint64_t seq, int err)
{
	const uint8_t *rec;
	uint64_t got;
	size_t n;

	ck_assert_int_eq(fb_c2e_next(ring, &rd, spool_path, FB_REQUEUE_STEM, &got, &rec, &n), 1);
	ck_assert_uint_eq(got, seq);
	ck_assert_ptr_null(rec);
	ck_assert_int_eq(rd.err, err);
}

/* Turns C every 20 ms, as flowmq-link's main loop does while a request is in progress, until PATH
 * exists (the test fails after 5 s); returns how many ms that took. */
static uint64_t turn_until_file(struct fb_control *c, const char *path)
{
	uint64_t t0 = fb_mono_ms();

	while(access(path, F_OK) != 0){
		ck_assert_msg(fb_mono_ms() - t0 < 5000, "no file %s after 5 s", path);
		fb_control_turn(c);
		usleep(20000);
	}
	return fb_mono_ms() - t0;
}

/* Turns C until it has no request in progress (the test fails after 5 s). */
static void turn_until_idle(struct fb_control *c)
{
	uint64_t t0 = fb_mono_ms();

	while(fb_control_turn(c)){
		ck_assert_msg(fb_mono_ms() - t0 < 5000, "the request is still in progress after 5 s");
		usleep(20000);
	}
}

static unsigned log_count(const char *needle)
{
	unsigned n = 0;

	for(const char *p = logtext; (p = strstr(p, needle)) != NULL; p += strlen(needle)){
		n++;
	}
	return n;
}

static char *file_of(uint64_t seq)
{
	static char path[600];

	snprintf(path, sizeof(path), "%s/" FB_REQUEUE_STEM "%llu", spool_path, (unsigned long long)seq);
	return path;
}

/* The large dead letter's file is deleted before the broker thread reads it: once the ring's head
 * has stood still on it for a second (not before), the link process writes it again from spool
 * "dead", and the three dead letters are staged once each, in order, byte for byte; the request
 * ends and is answered as done (3, none left); the repair is logged once. */
START_TEST(test_a_deleted_file_is_written_again_and_each_dead_letter_queued_once_in_order)
{
	struct fb_control *c = control_open();
	struct fb_request rq;
	struct fb_reply rp;
	struct fb_spool_stats st;
	char *line;

	ck_assert_uint_eq(add_dead(1, 20), 1);
	ck_assert_uint_eq(add_dead(2, BIG), 2);
	ck_assert_uint_eq(add_dead(3, 20), 3);
	post(FB_REQUEST_REQUEUE_DEAD, &rq);
	ck_assert(fb_control_turn(c)); /* claimed, all three in the ring */
	ck_assert_int_eq(access(file_of(2), F_OK), 0);

	take(1, 1, 20);
	ck_assert_int_eq(unlink(file_of(2)), 0);
	unreadable(2, -ENOENT);
	ck_assert_uint_ge(turn_until_file(c, file_of(2)), 1000);
	take(2, 2, BIG);
	ck_assert_int_eq(access(file_of(2), F_OK), -1);
	take(3, 3, 20);
	ck_assert_int_eq(fb_c2e_next(ring, &rd, spool_path, FB_REQUEUE_STEM, &(uint64_t){ 0 },
			&(const uint8_t *){ NULL }, &(size_t){ 0 }), 0);

	turn_until_idle(c);
	ck_assert_int_eq(fb_reply_take(spool_path, rq.nonce, &rp), 0);
	ck_assert(rp.ok);
	ck_assert_uint_eq(rp.done, 3);
	ck_assert_uint_eq(rp.left, 0);
	fb_spool_stats(sp, &st);
	ck_assert_uint_eq(st.dead, 0);
	line = NULL;
	ck_assert_int_gt(asprintf(&line, "%d requeue-dead: the file %s of dead letter 2 was gone; written again from "
			"spool \"dead\", so that it and the dead letters behind it are queued\n", MOSQ_LOG_WARNING,
			file_of(2)), 0);
	ck_assert_uint_eq(log_count(line), 1);
	free(line);
	ck_assert_uint_eq(log_count("was gone"), 1);
	ck_assert_uint_eq(log_count(": 3 dead letters queued again for the cloud\n"), 1);
	fb_control_close(c);
}
END_TEST

/* A purge-dead request through C, answered ok with N dead letters purged. */
static void purge_all(struct fb_control *c, uint64_t n)
{
	struct fb_request purge;
	struct fb_reply rp;

	post(FB_REQUEST_PURGE_DEAD, &purge);
	turn_until_idle(c);
	ck_assert_int_eq(fb_reply_take(spool_path, purge.nonce, &rp), 0);
	ck_assert(rp.ok);
	ck_assert_uint_eq(rp.done, n);
}

/* A link process ends with dead letters in the requeue ring that the broker thread stages after
 * its end (two) or later (two more). The next link process deletes the first two from spool
 * "dead" when it starts and the others once staged; a requeue-dead then leaves out those still in
 * the ring: every dead letter is staged once, in order. Before, those staged after the end stayed
 * dead letters, and the next requeue-dead sent all four again. */
START_TEST(test_dead_letters_a_link_process_left_in_the_ring_are_staged_once)
{
	struct fb_control *c = control_open();
	struct fb_request rq;
	struct fb_reply rp;
	struct fb_spool_stats st;

	for(unsigned i = 1; i <= 4; i++){
		ck_assert_uint_eq(add_dead(i, 20), i);
	}
	post(FB_REQUEST_REQUEUE_DEAD, &rq);
	ck_assert(fb_control_turn(c)); /* all four in the ring */
	fb_control_close(c);           /* none staged yet: none deleted */
	ck_assert_int_eq(fb_reply_take(spool_path, rq.nonce, &rp), 0);
	ck_assert(!rp.ok);
	ck_assert_uint_eq(rp.done, 0);
	take(1, 1, 20);
	take(2, 2, 20);

	c = control_open();
	ck_assert_msg(log_count("4 dead letters that the previous link process put into the requeue ring are "
			"taken over: 2 staged since are deleted from spool \"dead\", the rest once staged\n") == 1, "%s",
			logtext);
	fb_spool_stats(sp, &st);
	ck_assert_uint_eq(st.dead, 2);

	ck_assert_uint_eq(add_dead(5, 20), 5);
	post(FB_REQUEST_REQUEUE_DEAD, &rq);
	ck_assert(fb_control_turn(c)); /* claimed: only 5 goes into the ring */
	take(3, 3, 20);
	take(4, 4, 20);
	take(5, 5, 20);
	ck_assert_int_eq(fb_c2e_next(ring, &rd, spool_path, FB_REQUEUE_STEM, &(uint64_t){ 0 },
			&(const uint8_t *){ NULL }, &(size_t){ 0 }), 0);
	turn_until_idle(c);
	ck_assert_int_eq(fb_reply_take(spool_path, rq.nonce, &rp), 0);
	ck_assert(rp.ok);
	ck_assert_uint_eq(rp.done, 3); /* 5, and 3 and 4 which it passed over, deleted once staged */
	ck_assert_uint_eq(rp.left, 0);
	fb_spool_stats(sp, &st);
	ck_assert_uint_eq(st.dead, 0);
	fb_control_close(c);
}
END_TEST

/* A link process that ends during a request (killed: it neither answers nor counts) leaves the
 * claim behind; the next one answers it as interrupted, with what spool "dead" holds now as left
 * and what was done as not known. Before, the answer said "0 done, 0 left". */
START_TEST(test_a_request_of_a_link_process_that_ended_is_answered_with_what_is_left)
{
	struct fb_control *c;
	struct fb_request rq, claimed;
	struct fb_reply rp;

	for(unsigned i = 1; i <= 3; i++){
		ck_assert_uint_eq(add_dead(i, 20), i);
	}
	post(FB_REQUEST_PURGE_DEAD, &rq);
	ck_assert_int_eq(fb_request_claim(spool_path, &claimed), 1); /* the link process that ends */
	ck_assert_str_eq(claimed.nonce, rq.nonce);
	ck_assert_int_eq(fb_reply_take(spool_path, rq.nonce, &rp), -ENOENT);

	c = control_open();
	ck_assert_int_eq(fb_reply_take(spool_path, rq.nonce, &rp), 0);
	ck_assert(!rp.ok);
	ck_assert(rp.done_unknown);
	ck_assert_uint_eq(rp.left, 3);
	ck_assert_msg(strncmp(rp.error, "interrupted: ", 13) == 0, "%s", rp.error);
	ck_assert_msg(strstr(logtext, "was interrupted by the end of the previous link process (3 dead letters "
			"left)") != NULL, "%s", logtext);
	/* Nothing else was done: the next request finds all three. */
	ck_assert(!fb_control_turn(c));
	fb_control_close(c);
	ck_assert_int_eq(fb_reply_take(spool_path, rq.nonce, &rp), -ENOENT);
}
END_TEST

/* A link process ends while the ring's head stands on a dead letter whose file is gone; the ring
 * keeps the entry. The next link process purges the dead letters: the entry has nothing left to
 * stage, and it is withdrawn (its file left empty, which the broker thread passes over) instead
 * of holding the ring up for good. */
START_TEST(test_an_entry_whose_dead_letter_was_purged_after_a_restart_is_withdrawn)
{
	struct fb_control *c = control_open();
	struct fb_request rq;
	struct fb_reply rp;
	struct stat sb;
	const uint8_t *rec;
	uint64_t seq;
	size_t n;

	ck_assert_uint_eq(add_dead(1, BIG), 1);
	ck_assert_uint_eq(add_dead(2, 20), 2);
	post(FB_REQUEST_REQUEUE_DEAD, &rq);
	ck_assert(fb_control_turn(c));
	ck_assert_int_eq(unlink(file_of(1)), 0);
	unreadable(1, -ENOENT);
	fb_control_close(c); /* answered as interrupted */
	ck_assert_int_eq(fb_reply_take(spool_path, rq.nonce, &rp), 0);
	ck_assert(!rp.ok);

	c = control_open();
	purge_all(c, 2);
	ck_assert_uint_ge(turn_until_file(c, file_of(1)), 1000);
	ck_assert_int_eq(stat(file_of(1), &sb), 0);
	ck_assert_int_eq(sb.st_size, 0);
	ck_assert_uint_eq(log_count("of dead letter 1 was gone, and spool \"dead\" no longer holds it (purged"), 1);

	/* The broker thread: an empty record, consumed unstaged; the ring goes on behind it. */
	ck_assert_int_eq(fb_c2e_next(ring, &rd, spool_path, FB_REQUEUE_STEM, &seq, &rec, &n), 1);
	ck_assert_uint_eq(seq, 1);
	ck_assert_ptr_nonnull(rec);
	ck_assert_uint_eq(n, 0);
	fb_c2e_consume(ring, &rd);
	ck_assert_int_eq(access(file_of(1), F_OK), -1);
	take(2, 2, 20);
	for(int i = 0; i < 5; i++){
		fb_control_turn(c);
	}
	ck_assert_uint_eq(log_count("was gone"), 1);
	fb_control_close(c);
}
END_TEST

/* As above, and a link process that starts on the running channel after the purge numbers new
 * dead letters above the purged ones: the entry the requeue ring still holds for seq 1 is
 * withdrawn, not filled with a dead letter nobody requeued. Before: "dead", found empty, started
 * again at 1, and the new dead letter (20 bytes) was written into the entry of the purged one. */
START_TEST(test_dead_letters_after_a_purge_on_a_running_channel_take_new_seqs)
{
	struct fb_spool_opts o = { .path = spool_path, .on_full = FB_ON_FULL_DROP_OLDEST,
		.sync = FB_SYNC_INTERVAL, .lg = &lg };
	struct fb_chan_shared *sh = calloc(1, sizeof(*sh));
	struct fb_control *c;
	struct fb_request rq;
	struct fb_reply rp;
	struct stat sb;

	ck_assert_ptr_nonnull(sh);
	/* The test stands in for the broker: the channel is its (a fresh open sets it up). */
	fb_spool_close(sp);
	o.chan = sh;
	ck_assert_int_eq(fb_spool_open(&o, &sp), 0);

	ck_assert_uint_eq(add_dead(1, BIG), 1);
	ck_assert_uint_eq(add_dead(2, 20), 2);
	c = control_open();
	post(FB_REQUEST_REQUEUE_DEAD, &rq);
	ck_assert(fb_control_turn(c));
	ck_assert_int_eq(unlink(file_of(1)), 0);
	fb_control_close(c);
	ck_assert_int_eq(fb_reply_take(spool_path, rq.nonce, &rp), 0);
	c = control_open();
	purge_all(c, 2);
	fb_control_close(c); /* before its first look at the ring (a second) */

	/* The next link process, on the running channel. */
	fb_spool_close(sp);
	o.chan_running = true;
	ck_assert_int_eq(fb_spool_open(&o, &sp), 0);
	ck_assert_uint_eq(add_dead(3, 20), 3);
	c = control_open();
	ck_assert_uint_ge(turn_until_file(c, file_of(1)), 1000);
	ck_assert_int_eq(stat(file_of(1), &sb), 0);
	ck_assert_int_eq(sb.st_size, 0); /* withdrawn */
	ck_assert_uint_eq(log_count("of dead letter 1 was gone, and spool \"dead\" no longer holds it (purged"), 1);
	fb_control_close(c);
	fb_spool_close(sp);
	sp = NULL;
	free(sh);
}
END_TEST

/* The file cannot be written again (its ".new" is a folder here): logged once, the answer after
 * 10 s without progress says why; once it can be written, the rest is queued. */
START_TEST(test_a_file_that_cannot_be_written_again_is_logged_once_and_answered)
{
	struct fb_control *c = control_open();
	struct fb_request rq;
	struct fb_reply rp;
	char aside[700];
	uint64_t t0;

	ck_assert_uint_eq(add_dead(1, 20), 1);
	ck_assert_uint_eq(add_dead(2, BIG), 2);
	post(FB_REQUEST_REQUEUE_DEAD, &rq);
	ck_assert(fb_control_turn(c));
	take(1, 1, 20);
	ck_assert_int_eq(unlink(file_of(2)), 0);
	snprintf(aside, sizeof(aside), "%s.new", file_of(2));
	ck_assert_int_eq(mkdir(aside, 0700), 0);
	unreadable(2, -ENOENT);

	t0 = fb_mono_ms();
	while(fb_reply_take(spool_path, rq.nonce, &rp) == -ENOENT){
		ck_assert_msg(fb_mono_ms() - t0 < 20000, "no answer after 20 s");
		fb_control_turn(c);
		usleep(20000);
	}
	ck_assert(!rp.ok);
	ck_assert_uint_eq(rp.done, 1);
	ck_assert_uint_eq(rp.left, 1);
	ck_assert_str_eq(rp.error, "1 dead letters wait: the file of dead letter 2 is gone from the spool folder "
			"and cannot be written again (Is a directory); they are queued once it can");
	ck_assert_uint_eq(log_count("cannot be written again from spool \"dead\": Is a directory; tried again every "
			"second"), 1);
	ck_assert_int_eq(access(file_of(2), F_OK), -1);

	ck_assert_int_eq(rmdir(aside), 0);
	turn_until_file(c, file_of(2));
	take(2, 2, BIG);
	turn_until_idle(c);
	ck_assert_uint_eq(log_count(": 2 dead letters queued again for the cloud\n"), 1);
	ck_assert_uint_eq(log_count("cannot be written again from spool"), 1);
	fb_control_close(c);
}
END_TEST

/* A dead letter too large to requeue stays (1); 2..5 are staged and deleted, and the link process
 * ends before it marks them done in the ring (RELEASED stays behind them). The next link process
 * passes over those entries, and new dead letters take new seqs (6..9), so the one after that
 * deletes nothing it finds behind the head: 5 dead letters stay. Before, "dead" numbered the new
 * ones 2..5 again (above its last live one), and they were deleted as if staged: 1 of 5 left. */
START_TEST(test_dead_letters_never_take_the_seqs_of_requeued_ones)
{
	struct fb_spool_opts o = { .path = spool_path, .on_full = FB_ON_FULL_DROP_OLDEST,
		.sync = FB_SYNC_INTERVAL, .lg = &lg };
	struct fb_control *a, *b, *c;
	struct fb_request rq;
	struct fb_spool_stats st;
	struct fb_spool_del dels[4];
	uint64_t released;

	atomic_store(&max_live, 600);
	ck_assert_uint_eq(add_dead(1, 1000), 1); /* too large for the channel: kept */
	for(unsigned i = 2; i <= 5; i++){
		ck_assert_uint_eq(add_dead(i, 20), i);
	}
	a = control_open();
	post(FB_REQUEST_REQUEUE_DEAD, &rq);
	ck_assert(fb_control_turn(a)); /* 1 kept, 2..5 in the ring */
	for(unsigned i = 2; i <= 5; i++){
		take(i, i, 20); /* staged by the broker */
	}
	/* A's requeue_release(): the deletes, then (killed) no store of RELEASED */
	for(unsigned i = 0; i < 4; i++){
		dels[i] = (struct fb_spool_del){ i + 2, 20 };
	}
	ck_assert_int_eq(fb_spool_delete_many(sp, FB_Q_DEAD, dels, 4), 0);
	released = atomic_load(&ring->released);
	fb_control_close(a);
	atomic_store(&ring->released, released);
	ck_assert_int_eq(fb_reply_take(spool_path, rq.nonce, &(struct fb_reply){ 0 }), 0);

	fb_spool_close(sp);
	ck_assert_int_eq(fb_spool_open(&o, &sp), 0);
	b = control_open();
	for(unsigned i = 6; i <= 9; i++){
		ck_assert_uint_eq(add_dead(i, 20), i);
	}
	fb_control_close(b);

	fb_spool_close(sp);
	ck_assert_int_eq(fb_spool_open(&o, &sp), 0);
	c = control_open();
	fb_spool_stats(sp, &st);
	ck_assert_msg(st.dead == 5, "dead letters never staged were deleted: %llu left of 5\n%s",
			(unsigned long long)st.dead, logtext);
	fb_control_close(c);
	atomic_store(&max_live, 0);
}
END_TEST

/* Two 3 MiB dead letters in the ring (no room to stage them), taken over by a restarted link
 * process, purged, and the link process restarted again before the broker staged them: the next
 * one finds them gone and passes over them, and the ring keeps nothing for them, so a third 3 MiB
 * dead letter is put into the ring. Before, RELEASED stayed behind them for good and took their
 * room: the third was never put, and requeue-dead waited until the broker restarted. */
START_TEST(test_entries_passed_over_keep_no_room_in_the_ring)
{
	const size_t L = 3u << 20;
	struct fb_control *c;
	struct fb_request rq;
	uint64_t tail0;

	ck_assert_uint_eq(add_dead(1, L), 1);
	ck_assert_uint_eq(add_dead(2, L), 2);
	c = control_open();
	post(FB_REQUEST_REQUEUE_DEAD, &rq);
	ck_assert(fb_control_turn(c)); /* both in the ring, the channel has no room */
	fb_control_close(c);           /* a restart (reload of cloud settings) */
	c = control_open();            /* adopts 1 and 2 */
	purge_all(c, 2);
	fb_control_close(c);           /* another restart before the broker staged them */
	take(1, 1, L);
	take(2, 2, L);                 /* room again: staged */
	c = control_open();            /* 1, 2 gone from "dead": skipped, RELEASED stays at 0 */
	ck_assert_uint_eq(add_dead(3, L), 3);
	post(FB_REQUEST_REQUEUE_DEAD, &rq);
	tail0 = atomic_load(&ring->tail);
	for(int i = 0; i < 50; i++){
		fb_control_turn(c);
	}
	ck_assert_msg(atomic_load(&ring->tail) != tail0, "dead letter 3 never put: released %llu head %llu tail %llu",
			(unsigned long long)atomic_load(&ring->released), (unsigned long long)atomic_load(&ring->head),
			(unsigned long long)atomic_load(&ring->tail));
	fb_control_close(c);
}
END_TEST

/* Dead letters 2 and 3 in the ring, taken over by a restarted link process; 1 is too large to
 * requeue. A requeue-dead then passes over 2 and 3 (deleted once staged, and counted done) and
 * counts 1 as kept: the answer says so and leaves nothing else. Before, the request started after 3: 1
 * was neither read nor counted, and the answer said ok, none left. */
START_TEST(test_a_request_passes_over_what_the_ring_holds_and_counts_the_rest)
{
	struct fb_control *c;
	struct fb_request rq;
	struct fb_reply rp;
	struct fb_spool_stats st;

	atomic_store(&max_live, 600);
	ck_assert_uint_eq(add_dead(1, 1000), 1);
	ck_assert_uint_eq(add_dead(2, 20), 2);
	ck_assert_uint_eq(add_dead(3, 20), 3);
	c = control_open();
	post(FB_REQUEST_REQUEUE_DEAD, &rq);
	ck_assert(fb_control_turn(c));
	fb_control_close(c);
	ck_assert_int_eq(fb_reply_take(spool_path, rq.nonce, &rp), 0);
	c = control_open();
	post(FB_REQUEST_REQUEUE_DEAD, &rq);
	ck_assert(fb_control_turn(c));
	take(2, 2, 20);
	take(3, 3, 20);
	turn_until_idle(c);
	ck_assert_int_eq(fb_reply_take(spool_path, rq.nonce, &rp), 0);
	fb_spool_stats(sp, &st);
	ck_assert_msg(!rp.ok && rp.done == 2 && rp.left == 0, "answer ok=%d done=%llu left=%llu error='%s'",
			rp.ok, (unsigned long long)rp.done, (unsigned long long)rp.left, rp.error);
	ck_assert_str_eq(rp.error, "1 dead letter larger than the staging channel takes (spool.max_size) stays");
	ck_assert_uint_eq(st.dead, 1);
	fb_control_close(c);
	atomic_store(&max_live, 0);
}
END_TEST

/* Moves a new record I of LEN bytes from "out" to "dead" (fb_spool_move_dead(): an unreadable
 * record or properties, or the fallback when the append to "dead" fails). Returns its seq in "dead"
 * when "dead" has no gaps. */
static uint64_t add_moved_dead(unsigned i, size_t len)
{
	uint8_t *v = value(i, len);
	uint64_t oseq;
	struct fb_spool_stats before, after;

	fb_spool_stats(sp, &before);
	ck_assert_int_eq(fb_spool_append(sp, FB_Q_OUT, v, len, &oseq, NULL), 0);
	ck_assert_int_eq(fb_spool_move_dead(sp, oseq, len, v, len), 1);
	fb_spool_stats(sp, &after);
	ck_assert_uint_eq(after.dead, before.dead + 1);
	free(v);
	return before.dead + 1;
}

/* Dead letters moved from "out" (2, 3) and deleted above an older one that stays (1): after a
 * restart, the next dead letter does not take 2 or 3 again. Before, fb_spool_move_dead() did not
 * keep the next/dead mark: it took 2. */
START_TEST(test_moved_dead_letters_keep_their_seqs_for_good)
{
	struct fb_spool_opts o = { .path = spool_path, .on_full = FB_ON_FULL_DROP_OLDEST,
		.sync = FB_SYNC_INTERVAL, .lg = &lg };
	struct fb_spool_del dels[2] = { { 2, 20 }, { 3, 20 } };
	uint64_t seq;

	ck_assert_uint_eq(add_dead(1, 20), 1);
	ck_assert_uint_eq(add_moved_dead(2, 20), 2);
	ck_assert_uint_eq(add_moved_dead(3, 20), 3);
	ck_assert_int_eq(fb_spool_delete_many(sp, FB_Q_DEAD, dels, 2), 0);
	fb_spool_close(sp);
	ck_assert_int_eq(fb_spool_open(&o, &sp), 0);
	seq = add_dead(9, 20);
	ck_assert_msg(seq >= 4, "dead letter numbered %llu: the seq of one deleted before (2 or 3)",
			(unsigned long long)seq);
}
END_TEST

/* 1 kept (too large), 2..5 (moved from "out") requeued, staged and deleted, and link process A
 * killed before it marked them done in the ring. Four new dead letters come before link process
 * B takes the ring over (main.c now opens the control first; a worker of an earlier version did
 * not): they take new seqs, and B deletes none of them: 5 dead letters stay. Before, they took
 * 2..5 and were deleted as staged: 1 of 5 left, 4 never sent anywhere. */
START_TEST(test_new_dead_letters_are_not_taken_for_staged_ones)
{
	struct fb_spool_opts o = { .path = spool_path, .on_full = FB_ON_FULL_DROP_OLDEST,
		.sync = FB_SYNC_INTERVAL, .lg = &lg };
	struct fb_control *a, *b;
	struct fb_request rq;
	struct fb_spool_stats st;
	struct fb_spool_del dels[4];
	uint64_t released, seqs[4];

	atomic_store(&max_live, 600);
	ck_assert_uint_eq(add_dead(1, 1000), 1); /* kept */
	for(unsigned i = 2; i <= 5; i++){
		ck_assert_uint_eq(add_moved_dead(i, 20), i);
	}
	a = control_open();
	post(FB_REQUEST_REQUEUE_DEAD, &rq);
	ck_assert(fb_control_turn(a));
	for(unsigned i = 2; i <= 5; i++){
		take(i, i, 20);
	}
	for(unsigned i = 0; i < 4; i++){
		dels[i] = (struct fb_spool_del){ i + 2, 20 };
	}
	ck_assert_int_eq(fb_spool_delete_many(sp, FB_Q_DEAD, dels, 4), 0);
	released = atomic_load(&ring->released);
	fb_control_close(a);
	atomic_store(&ring->released, released); /* killed before the store */
	(void)fb_reply_take(spool_path, rq.nonce, &(struct fb_reply){ 0 });

	fb_spool_close(sp);
	ck_assert_int_eq(fb_spool_open(&o, &sp), 0);
	for(unsigned i = 0; i < 4; i++){
		seqs[i] = add_dead(6 + i, 20); /* B's worker, before fb_control_open() */
	}
	b = control_open();
	fb_spool_stats(sp, &st);
	ck_assert_msg(st.dead == 5, "new dead letters (seqs %llu..%llu) deleted as staged: %llu left of 5\n%s",
			(unsigned long long)seqs[0], (unsigned long long)seqs[3], (unsigned long long)st.dead, logtext);
	fb_control_close(b);
	atomic_store(&max_live, 0);
}
END_TEST

/* A purge-dead interrupted by the end of its link process, with three dead letters in the requeue
 * ring from an earlier requeue-dead: the next link process answers "3 left" (a purge-dead removes
 * those too). Before: "0 left". */
START_TEST(test_an_interrupted_purge_counts_the_dead_letters_in_the_ring_as_left)
{
	struct fb_control *a, *b;
	struct fb_request rq, purge, claimed;
	struct fb_reply rp;

	for(unsigned i = 1; i <= 3; i++){
		ck_assert_uint_eq(add_dead(i, 20), i);
	}
	a = control_open();
	post(FB_REQUEST_REQUEUE_DEAD, &rq);
	ck_assert(fb_control_turn(a)); /* 1..3 in the ring, not staged */
	fb_control_close(a);
	ck_assert_int_eq(fb_reply_take(spool_path, rq.nonce, &rp), 0);
	post(FB_REQUEST_PURGE_DEAD, &purge);
	ck_assert_int_eq(fb_request_claim(spool_path, &claimed), 1); /* the link process that ends */
	b = control_open();
	ck_assert_int_eq(fb_reply_take(spool_path, purge.nonce, &rp), 0);
	ck_assert(!rp.ok);
	ck_assert_msg(rp.left == 3, "interrupted purge-dead answered with %llu left of 3 (none purged)",
			(unsigned long long)rp.left);
	fb_control_close(b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("control");
	TCase *tc = tcase_create("requeue");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_a_deleted_file_is_written_again_and_each_dead_letter_queued_once_in_order);
	tcase_add_test(tc, test_an_entry_whose_dead_letter_was_purged_after_a_restart_is_withdrawn);
	tcase_add_test(tc, test_a_request_of_a_link_process_that_ended_is_answered_with_what_is_left);
	tcase_add_test(tc, test_dead_letters_a_link_process_left_in_the_ring_are_staged_once);
	tcase_add_test(tc, test_dead_letters_never_take_the_seqs_of_requeued_ones);
	tcase_add_test(tc, test_entries_passed_over_keep_no_room_in_the_ring);
	tcase_add_test(tc, test_a_request_passes_over_what_the_ring_holds_and_counts_the_rest);
	tcase_add_test(tc, test_dead_letters_after_a_purge_on_a_running_channel_take_new_seqs);
	tcase_add_test(tc, test_a_file_that_cannot_be_written_again_is_logged_once_and_answered);
	tcase_add_test(tc, test_moved_dead_letters_keep_their_seqs_for_good);
	tcase_add_test(tc, test_new_dead_letters_are_not_taken_for_staged_ones);
	tcase_add_test(tc, test_an_interrupted_purge_counts_the_dead_letters_in_the_ring_as_left);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
