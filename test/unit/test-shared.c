/* Unit tests (test process) of plugin/ipc/shared.c and plugin/ipc/c2e.c: the region both programs
 * share (its header and version check, a second mapping sees the first's writes) and the
 * cloud-to-edge ring in it (order, exact bytes, wrap, a full ring, a record in a file of its own). */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "c2e.h"
#include "shared.h"

static char dir[64];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/fb-test-shared-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
	nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

START_TEST(test_attach_of_the_same_version_shares_the_region)
{
	struct fb_shared *a, *b;
	int fd;

	ck_assert_int_eq(fb_shared_create(&a, &fd), 0);
	ck_assert_uint_eq(a->hdr.magic, FB_IPC_MAGIC);
	ck_assert_uint_eq(a->hdr.version, FB_IPC_VERSION);
	ck_assert_uint_eq(a->hdr.size, sizeof(struct fb_shared));
	ck_assert_int_eq(fb_shared_attach(fd, FB_IPC_VERSION, &b), 0);
	ck_assert_ptr_ne(a, b);
	ck_assert_uint_eq(a->hdr.link_version, FB_IPC_VERSION);
	fb_count(&b->ctr.forwarded, 3);
	atomic_store(&a->beat, 42);
	ck_assert_uint_eq(atomic_load(&a->ctr.forwarded), 3);
	ck_assert_uint_eq(atomic_load(&b->beat), 42);
	fb_shared_unmap(b);
	fb_shared_unmap(a);
	fb_shared_unmap(NULL);
	close(fd);
}
END_TEST

START_TEST(test_attach_of_another_version_is_refused_and_leaves_its_version)
{
	struct fb_shared *a, *b = (struct fb_shared *)1;
	int fd;

	ck_assert_int_eq(fb_shared_create(&a, &fd), 0);
	ck_assert_int_eq(fb_shared_attach(fd, FB_IPC_VERSION + 998, &b), -EPROTO);
	ck_assert_ptr_null(b);
	ck_assert_uint_eq(a->hdr.link_version, FB_IPC_VERSION + 998);
	ck_assert_uint_eq(a->hdr.version, FB_IPC_VERSION);
	/* Not a region at all: refused the same way. */
	a->hdr.magic = 0;
	ck_assert_int_eq(fb_shared_attach(fd, FB_IPC_VERSION, &b), -EPROTO);
	fb_shared_unmap(a);
	close(fd);
}
END_TEST

static struct fb_c2e *ring(void)
{
	struct fb_c2e *r = calloc(1, sizeof(*r));

	ck_assert_ptr_nonnull(r);
	return r;
}

static void fill(uint8_t *buf, uint64_t seq, size_t len)
{
	for(size_t i = 0; i < len; i++){
		buf[i] = (uint8_t)(seq * 31 + i);
	}
}

/* Reads the next record and checks it is SEQ with LEN bytes from fill(). */
static void next_ok(struct fb_c2e *r, struct fb_c2e_reader *rd, uint64_t seq, size_t len)
{
	static uint8_t expect[FB_C2E_RING];
	const uint8_t *rec;
	uint64_t got;
	size_t n;

	ck_assert_int_eq(fb_c2e_next(r, rd, dir, FB_C2E_STEM, &got, &rec, &n), 1);
	ck_assert_uint_eq(got, seq);
	ck_assert_uint_eq(n, len);
	ck_assert_ptr_nonnull(rec);
	fill(expect, seq, len);
	ck_assert_mem_eq(rec, expect, len);
	fb_c2e_consume(r, rd);
}

START_TEST(test_ring_records_come_out_in_order_across_the_wrap)
{
	struct fb_c2e *r = ring();
	struct fb_c2e_reader rd = { 0 };
	static uint8_t buf[100000];
	uint64_t seq = 0, read = 0;
	const uint8_t *rec;
	size_t n;

	/* 100,000-byte records: 83 fit, the 84th needs the room the reader gives back; 400 of them
	 * wrap the ring several times. */
	while(read < 400){
		while(seq < 400){
			fill(buf, seq + 1, sizeof(buf));
			if(fb_c2e_put(r, dir, FB_C2E_STEM, seq + 1, buf, sizeof(buf)) == -ENOBUFS){
				break;
			}
			seq++;
			ck_assert_uint_eq(atomic_load(&r->pushed), seq);
		}
		ck_assert_uint_gt(seq, read); /* a drained ring always takes one */
		while(read < seq){
			next_ok(r, &rd, read + 1, sizeof(buf));
			read++;
		}
	}
	ck_assert_int_eq(fb_c2e_next(r, &rd, dir, FB_C2E_STEM, &seq, &rec, &n), 0);
	ck_assert_int_eq(fb_c2e_waiting(r), 0);
	fb_c2e_reader_cleanup(&rd);
	free(r);
}
END_TEST

START_TEST(test_full_ring_refuses_until_the_reader_consumes)
{
	struct fb_c2e *r = ring();
	struct fb_c2e_reader rd = { 0 };
	static uint8_t buf[1 << 20];
	unsigned put = 0;

	fill(buf, 1, sizeof(buf));
	/* 1 MiB + 16 bytes each: 7 fit into 8 MiB. */
	while(fb_c2e_put(r, dir, FB_C2E_STEM, put + 1, buf, sizeof(buf)) == 0){
		fill(buf, put + 2, sizeof(buf));
		put++;
	}
	ck_assert_uint_eq(put, 7);
	ck_assert_int_eq(fb_c2e_waiting(r), 1);
	next_ok(r, &rd, 1, sizeof(buf));
	fill(buf, 8, sizeof(buf));
	ck_assert_int_eq(fb_c2e_put(r, dir, FB_C2E_STEM, 8, buf, sizeof(buf)), 0);
	for(uint64_t s = 2; s <= 8; s++){
		next_ok(r, &rd, s, sizeof(buf));
	}
	fb_c2e_reader_cleanup(&rd);
	free(r);
}
END_TEST

struct walked {
	uint64_t seq[16], end[16];
	size_t n;
};

static int walk_one(void *ud, uint64_t seq, uint64_t end)
{
	struct walked *w = ud;

	ck_assert_uint_lt(w->n, 16);
	w->seq[w->n] = seq;
	w->end[w->n++] = end;
	return 0;
}

/* The requeue ring's writer keeps the entries from a position behind the head
 * (fb_c2e_put_kept()): the room the reader gave back past it is not written, so a walk from
 * there (a link process taking over what an earlier one put in) reads every entry as it was put,
 * consumed ones included, and where each ends. */
START_TEST(test_entries_kept_behind_the_head_stay_and_are_walked)
{
	struct fb_c2e *r = ring();
	struct fb_c2e_reader rd = { 0 };
	static uint8_t buf[1 << 20];
	struct walked w = { 0 };
	unsigned put = 0;

	fill(buf, 1, sizeof(buf));
	while(fb_c2e_put_kept(r, 0, dir, FB_REQUEUE_STEM, put + 1, buf, sizeof(buf)) == 0){
		put++;
		fill(buf, put + 1, sizeof(buf));
	}
	ck_assert_uint_eq(put, 7);
	next_ok(r, &rd, 1, sizeof(buf));
	next_ok(r, &rd, 2, sizeof(buf));
	/* Room from the head, none from 0: the plain put takes it, the kept one does not. */
	ck_assert_int_eq(fb_c2e_put_kept(r, 0, dir, FB_REQUEUE_STEM, 8, buf, sizeof(buf)), -ENOBUFS);
	fb_c2e_walk(r, 0, walk_one, &w);
	ck_assert_uint_eq(w.n, 7);
	for(size_t i = 0; i < 7; i++){
		ck_assert_uint_eq(w.seq[i], i + 1);
		ck_assert_uint_eq(w.end[i], (i + 1) * (16 + sizeof(buf)));
	}
	ck_assert_uint_eq(w.end[1], atomic_load(&r->head));
	/* Kept from the end of the second: the room of the first two is free again. */
	ck_assert_int_eq(fb_c2e_put_kept(r, w.end[1], dir, FB_REQUEUE_STEM, 8, buf, sizeof(buf)), 0);
	w.n = 0;
	fb_c2e_walk(r, w.end[1], walk_one, &w);
	ck_assert_uint_eq(w.n, 6);
	ck_assert_uint_eq(w.seq[0], 3);
	ck_assert_uint_eq(w.seq[5], 8);
	for(uint64_t s = 3; s <= 8; s++){
		next_ok(r, &rd, s, sizeof(buf));
	}
	fb_c2e_reader_cleanup(&rd);
	free(r);
}
END_TEST

START_TEST(test_record_larger_than_half_the_ring_travels_in_a_file)
{
	struct fb_c2e *r = ring();
	struct fb_c2e_reader rd = { 0 };
	size_t len = FB_C2E_RING / 2 + 1;
	uint8_t *buf = malloc(len);
	char path[128];

	ck_assert_ptr_nonnull(buf);
	fill(buf, 5, len);
	ck_assert_int_eq(fb_c2e_put(r, dir, FB_C2E_STEM, 5, buf, len), 0);
	snprintf(path, sizeof(path), "%s/flowmq-c2e-5", dir);
	ck_assert_int_eq(access(path, F_OK), 0);
	/* The ring carries only its head: 16 bytes. */
	ck_assert_uint_eq(atomic_load(&r->tail), 16);
	{
		/* Read without being consumed (a requeued dead letter the channel has no room for):
		 * the same record again, its file kept. */
		const uint8_t *rec;
		uint64_t got;
		size_t n;

		ck_assert_int_eq(fb_c2e_next(r, &rd, dir, FB_C2E_STEM, &got, &rec, &n), 1);
		ck_assert_uint_eq(got, 5);
		ck_assert_uint_eq(n, len);
		ck_assert_int_eq(access(path, F_OK), 0);
	}
	next_ok(r, &rd, 5, len);
	ck_assert_int_ne(access(path, F_OK), 0); /* consumed and removed */
	/* The requeue ring's files have names of their own. */
	ck_assert_int_eq(fb_c2e_put(r, dir, FB_REQUEUE_STEM, 5, buf, len), 0);
	snprintf(path, sizeof(path), "%s/flowmq-requeue-5", dir);
	ck_assert_int_eq(access(path, F_OK), 0);
	ck_assert_int_eq(fb_c2e_next(r, &rd, dir, FB_REQUEUE_STEM, &(uint64_t){ 0 }, &(const uint8_t *){ NULL },
			&(size_t){ 0 }), 1);
	fb_c2e_consume(r, &rd);
	ck_assert_int_ne(access(path, F_OK), 0);
	fb_c2e_reader_cleanup(&rd);
	free(buf);
	free(r);
}
END_TEST

/* The writer's side of a record in a file of its own that the reader is at (control.c writes
 * again a requeued dead letter's file that went missing): fb_c2e_head_file() names it, past the
 * ring's end too; fb_c2e_write_file() puts it back whole (nothing left aside), and the entry
 * reads it; fb_c2e_withdraw() leaves it empty, and the entry reads as an empty record. */
START_TEST(test_the_writer_finds_the_file_at_the_head_and_writes_it_again_or_withdraws_it)
{
	struct fb_c2e *r = ring();
	struct fb_c2e_reader rd = { 0 };
	static uint8_t small[2796184]; /* three fill the ring but for 8 bytes */
	size_t len = FB_C2E_RING / 2 + 1;
	uint8_t *buf = malloc(len);
	char path[128], aside[160], want[128];
	const uint8_t *rec;
	uint64_t seq;
	size_t n;

	ck_assert_ptr_nonnull(buf);
	for(uint64_t s = 1; s <= 3; s++){
		fill(small, s, sizeof(small));
		ck_assert_int_eq(fb_c2e_put(r, dir, FB_REQUEUE_STEM, s, small, sizeof(small)), 0);
	}
	ck_assert_uint_eq(atomic_load(&r->tail), FB_C2E_RING - 8);
	ck_assert_int_eq(fb_c2e_head_file(r, dir, FB_REQUEUE_STEM, &seq, path, sizeof(path)), 0); /* in the ring */
	for(uint64_t s = 1; s <= 3; s++){
		ck_assert_int_eq(fb_c2e_next(r, &rd, dir, FB_REQUEUE_STEM, &seq, &rec, &n), 1);
		ck_assert_uint_eq(seq, s);
		fb_c2e_consume(r, &rd);
	}
	ck_assert_uint_eq(atomic_load(&r->head), FB_C2E_RING - 8);
	fill(buf, 4, len);
	ck_assert_int_eq(fb_c2e_put(r, dir, FB_REQUEUE_STEM, 4, buf, len), 0); /* at the ring's start */
	fill(buf, 5, len);
	ck_assert_int_eq(fb_c2e_put(r, dir, FB_REQUEUE_STEM, 5, buf, len), 0);
	ck_assert_uint_eq(atomic_load(&r->tail), FB_C2E_RING + 32);

	/* Its file gone: the reader cannot read it, the writer names it. */
	snprintf(want, sizeof(want), "%s/flowmq-requeue-4", dir);
	ck_assert_int_eq(unlink(want), 0);
	ck_assert_int_eq(fb_c2e_next(r, &rd, dir, FB_REQUEUE_STEM, &seq, &rec, &n), 1);
	ck_assert_ptr_null(rec);
	ck_assert_int_eq(rd.err, -ENOENT);
	seq = 0;
	ck_assert_int_eq(fb_c2e_head_file(r, dir, FB_REQUEUE_STEM, &seq, path, sizeof(path)), 1);
	ck_assert_uint_eq(seq, 4);
	ck_assert_str_eq(path, want);

	/* Written again: whole, nothing aside; the same entry reads it. */
	fill(buf, 4, len);
	ck_assert_int_eq(fb_c2e_write_file(dir, FB_REQUEUE_STEM, 4, buf, len), 0);
	snprintf(aside, sizeof(aside), "%s.new", want);
	ck_assert_int_eq(access(aside, F_OK), -1);
	ck_assert_int_eq(fb_c2e_next(r, &rd, dir, FB_REQUEUE_STEM, &seq, &rec, &n), 1);
	ck_assert_uint_eq(seq, 4);
	ck_assert_uint_eq(n, len);
	ck_assert_mem_eq(rec, buf, len);
	fb_c2e_consume(r, &rd);
	ck_assert_int_eq(access(want, F_OK), -1);

	/* Withdrawn: an empty record, whose file goes once consumed. */
	snprintf(want, sizeof(want), "%s/flowmq-requeue-5", dir);
	ck_assert_int_eq(fb_c2e_head_file(r, dir, FB_REQUEUE_STEM, &seq, path, sizeof(path)), 1);
	ck_assert_uint_eq(seq, 5);
	ck_assert_int_eq(fb_c2e_withdraw(dir, FB_REQUEUE_STEM, 5), 0);
	ck_assert_int_eq(fb_c2e_next(r, &rd, dir, FB_REQUEUE_STEM, &seq, &rec, &n), 1);
	ck_assert_uint_eq(seq, 5);
	ck_assert_ptr_nonnull(rec);
	ck_assert_uint_eq(n, 0);
	fb_c2e_consume(r, &rd);
	ck_assert_int_eq(access(want, F_OK), -1);
	ck_assert_int_eq(fb_c2e_head_file(r, dir, FB_REQUEUE_STEM, &seq, path, sizeof(path)), 0); /* empty */

	/* A write that fails leaves nothing aside. */
	ck_assert_int_eq(mkdir(want, 0700), 0);
	ck_assert_int_eq(fb_c2e_write_file(dir, FB_REQUEUE_STEM, 5, buf, len), -EISDIR);
	snprintf(aside, sizeof(aside), "%s.new", want);
	ck_assert_int_eq(access(aside, F_OK), -1);
	fb_c2e_reader_cleanup(&rd);
	free(buf);
	free(r);
}
END_TEST

static Suite *shared_suite(void)
{
	Suite *s = suite_create("shared");
	TCase *tc = tcase_create("region");
	TCase *tr = tcase_create("c2e");

	tcase_add_test(tc, test_attach_of_the_same_version_shares_the_region);
	tcase_add_test(tc, test_attach_of_another_version_is_refused_and_leaves_its_version);
	suite_add_tcase(s, tc);
	tcase_add_checked_fixture(tr, setup, teardown);
	tcase_add_test(tr, test_ring_records_come_out_in_order_across_the_wrap);
	tcase_add_test(tr, test_full_ring_refuses_until_the_reader_consumes);
	tcase_add_test(tr, test_entries_kept_behind_the_head_stay_and_are_walked);
	tcase_add_test(tr, test_record_larger_than_half_the_ring_travels_in_a_file);
	tcase_add_test(tr, test_the_writer_finds_the_file_at_the_head_and_writes_it_again_or_withdraws_it);
	suite_add_tcase(s, tr);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(shared_suite());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
