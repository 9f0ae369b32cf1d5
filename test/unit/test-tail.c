/* Unit tests of plugin/link/tail.c: the in-memory ring of the newest spool records. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tail.h"

static void value_of(uint8_t *buf, uint64_t seq, size_t len)
{
	for(size_t i = 0; i < len; i++){
		buf[i] = (uint8_t)(seq * 7 + i);
	}
}

static int push(struct fb_tail *t, uint64_t seq, size_t len)
{
	uint8_t buf[512];

	value_of(buf, seq, len);
	return fb_tail_push(t, seq, buf, len);
}

/* Takes UPTO + 1 and checks its bytes; releases it. */
static void take_ok(struct fb_tail *t, uint64_t upto, size_t len)
{
	uint8_t expect[512];
	struct fb_tail_rec *r = fb_tail_take_next(t, upto);

	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(r->seq, upto + 1);
	ck_assert_uint_eq(r->len, len);
	value_of(expect, r->seq, len);
	ck_assert_mem_eq(r->val, expect, len);
	fb_tail_release(t);
}

START_TEST(records_come_out_in_order_with_exact_bytes)
{
	struct fb_tail t;

	fb_tail_init(&t, 4096, 10);
	ck_assert_uint_eq(fb_tail_last(&t), 10);
	ck_assert_ptr_null(fb_tail_take_next(&t, 10));
	ck_assert_int_eq(push(&t, 11, 100), 0);
	ck_assert_int_eq(push(&t, 12, 0), 0);
	ck_assert_int_eq(push(&t, 13, 37), 0);
	ck_assert_uint_eq(fb_tail_last(&t), 13);
	take_ok(&t, 10, 100);
	take_ok(&t, 11, 0);
	take_ok(&t, 12, 37);
	ck_assert_ptr_null(fb_tail_take_next(&t, 13));
	ck_assert_uint_eq(t.used, 0);
	fb_tail_cleanup(&t);
}
END_TEST

START_TEST(older_records_are_dropped_and_a_gap_gives_null)
{
	struct fb_tail t;

	fb_tail_init(&t, 4096, 0);
	for(uint64_t s = 1; s <= 5; s++){
		ck_assert_int_eq(push(&t, s, 20), 0);
	}
	/* The worker sent 1..3 from the spool already: they are dropped, 4 comes out. */
	take_ok(&t, 3, 20);
	/* It wants 7 next (5 went by another way): 5 is dropped, nothing to take. */
	ck_assert_ptr_null(fb_tail_take_next(&t, 6));
	ck_assert_uint_eq(t.used, 0);
	fb_tail_cleanup(&t);
}
END_TEST

START_TEST(a_full_ring_refuses_and_keeps_what_it_holds)
{
	struct fb_tail t;
	uint64_t s = 0;

	fb_tail_init(&t, 1024, 0);
	/* 100-byte records take 16 + 100 -> 120 bytes: eight fit into 1,024. */
	while(push(&t, s + 1, 100) == 0){
		s++;
	}
	ck_assert_uint_eq(s, 8);
	ck_assert_int_eq(push(&t, 9, 100), -ENOBUFS);
	ck_assert_uint_eq(fb_tail_last(&t), 9); /* offered, not queued */
	for(uint64_t i = 0; i < 8; i++){
		take_ok(&t, i, 100);
	}
	/* Too large for the ring at all. */
	ck_assert_int_eq(push(&t, 10, 500), -ENOBUFS);
	ck_assert_int_eq(push(&t, 10, 400), 0);
	take_ok(&t, 9, 400);
	fb_tail_cleanup(&t);
}
END_TEST

START_TEST(a_taken_record_is_not_overwritten_before_release)
{
	struct fb_tail t;
	struct fb_tail_rec *r;
	uint8_t expect[512];
	uint64_t s = 1;

	fb_tail_init(&t, 1024, 0);
	ck_assert_int_eq(push(&t, 1, 200), 0);
	r = fb_tail_take_next(&t, 0);
	ck_assert_ptr_nonnull(r);
	/* Fill every byte the ring has left, wrapping around. */
	while(push(&t, s + 1, 8) == 0){
		s++;
	}
	value_of(expect, 1, 200);
	ck_assert_uint_eq(r->seq, 1);
	ck_assert_mem_eq(r->val, expect, 200);
	ck_assert_ptr_null(fb_tail_take_next(&t, 1)); /* one at a time */
	fb_tail_release(&t);
	for(uint64_t i = 1; i < s; i++){
		take_ok(&t, i, 8);
	}
	ck_assert_uint_eq(t.used, 0);
	fb_tail_cleanup(&t);
}
END_TEST

/* Pushes and takes interleaved at random over a small ring, with sizes that end the ring with
 * and without room for a wrap mark: every record queued comes out once, in order, intact. */
START_TEST(random_pushes_and_takes_wrap_around_correctly)
{
	static size_t lens[200001];
	struct fb_tail t;
	uint64_t next_push = 1, next_take = 1;
	unsigned seed = 12345;
	int refused = 0;

	fb_tail_init(&t, 600, 0);
	while(next_push <= 200000){
		int n = rand_r(&seed) % 4;

		for(int i = 0; i < n && next_push <= 200000; i++, next_push++){
			lens[next_push] = (size_t)(rand_r(&seed) % 140);
			if(push(&t, next_push, lens[next_push]) == 0){
				continue;
			}
			/* Refused: the worker takes what is queued, then reads this one from the spool. */
			refused++;
			for(; next_take < next_push; next_take++){
				take_ok(&t, next_take - 1, lens[next_take]);
			}
			ck_assert_ptr_null(fb_tail_take_next(&t, next_push - 1));
			next_take = next_push + 1;
		}
		n = rand_r(&seed) % 4;
		for(int i = 0; i < n && next_take < next_push; i++, next_take++){
			take_ok(&t, next_take - 1, lens[next_take]);
		}
	}
	for(; next_take < next_push; next_take++){
		take_ok(&t, next_take - 1, lens[next_take]);
	}
	ck_assert_int_gt(refused, 0);
	ck_assert_int_lt(refused, 20000);
	ck_assert_uint_eq(t.used, 0);
	fb_tail_cleanup(&t);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tail");
	TCase *tc = tcase_create("basic");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, records_come_out_in_order_with_exact_bytes);
	tcase_add_test(tc, older_records_are_dropped_and_a_gap_gives_null);
	tcase_add_test(tc, a_full_ring_refuses_and_keeps_what_it_holds);
	tcase_add_test(tc, a_taken_record_is_not_overwritten_before_release);
	tcase_add_test(tc, random_pushes_and_takes_wrap_around_correctly);
	suite_add_tcase(s, tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
