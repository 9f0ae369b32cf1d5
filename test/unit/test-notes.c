/* Unit tests of plugin/broker/notes.c: the loopback subscriber's memory of captured messages. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "notes.h"

static struct fb_notes *make(uint32_t cap, uint64_t ttl)
{
	struct fb_notes *n = NULL;

	ck_assert_int_eq(fb_notes_new(cap, ttl, &n), 0);
	ck_assert_ptr_nonnull(n);
	return n;
}

START_TEST(test_capacity_must_be_a_power_of_two)
{
	struct fb_notes *n = (void *)1;

	ck_assert_int_eq(fb_notes_new(0, 10, &n), -EINVAL);
	ck_assert_ptr_null(n);
	ck_assert_int_eq(fb_notes_new(1, 10, &n), -EINVAL);
	ck_assert_int_eq(fb_notes_new(12, 10, &n), -EINVAL);
	fb_notes_free(NULL);
}
END_TEST

START_TEST(test_a_note_is_taken_once_by_topic_and_payload)
{
	struct fb_notes *n = make(16, 1000);

	fb_notes_add(n, "a/b", "x", 1, 0);
	ck_assert_uint_eq(fb_notes_pending(n), 1);
	ck_assert(!fb_notes_take(n, "a/c", "x", 1, 1));   /* other topic */
	ck_assert(!fb_notes_take(n, "a/b", "y", 1, 1));   /* other payload */
	ck_assert(!fb_notes_take(n, "a/b", "xx", 2, 1));  /* other length */
	ck_assert(!fb_notes_take(n, "a/b", "", 0, 1));
	ck_assert(fb_notes_take(n, "a/b", "x", 1, 1));
	ck_assert(!fb_notes_take(n, "a/b", "x", 1, 1));   /* only once */
	ck_assert_uint_eq(fb_notes_pending(n), 0);
	fb_notes_free(n);
}
END_TEST

START_TEST(test_the_same_message_noted_twice_is_taken_twice)
{
	struct fb_notes *n = make(16, 1000);

	fb_notes_add(n, "t", "same", 4, 0);
	fb_notes_add(n, "t", "same", 4, 0);
	fb_notes_add(n, "t", NULL, 0, 0);
	ck_assert_uint_eq(fb_notes_pending(n), 3);
	ck_assert(fb_notes_take(n, "t", "same", 4, 0));
	ck_assert(fb_notes_take(n, "t", "same", 4, 0));
	ck_assert(!fb_notes_take(n, "t", "same", 4, 0));
	ck_assert(fb_notes_take(n, "t", "", 0, 0));
	fb_notes_free(n);
}
END_TEST

START_TEST(test_notes_expire_after_their_time_to_live)
{
	struct fb_notes *n = make(16, 100);

	fb_notes_add(n, "t", "1", 1, 1000);
	fb_notes_add(n, "t", "2", 1, 1050);
	ck_assert(fb_notes_take(n, "t", "1", 1, 1100));   /* 100 ms old: still there */
	ck_assert(!fb_notes_take(n, "t", "2", 1, 1151));  /* 101 ms old: gone */
	ck_assert_uint_eq(fb_notes_pending(n), 0);
	fb_notes_free(n);
}
END_TEST

START_TEST(test_a_full_ring_pushes_out_the_oldest_note)
{
	struct fb_notes *n = make(4, 100000);
	char p[16];

	for(int i = 0; i < 6; i++){
		snprintf(p, sizeof(p), "m%d", i);
		fb_notes_add(n, "t", p, (uint32_t)strlen(p), 0);
	}
	ck_assert_uint_eq(fb_notes_pending(n), 4);
	ck_assert(!fb_notes_take(n, "t", "m0", 2, 0));
	ck_assert(!fb_notes_take(n, "t", "m1", 2, 0));
	for(int i = 2; i < 6; i++){
		snprintf(p, sizeof(p), "m%d", i);
		ck_assert_msg(fb_notes_take(n, "t", p, 2, 0), "m%d", i);
	}
	fb_notes_free(n);
}
END_TEST

/* A note that was taken and then leaves the ring must not take an untaken note of the same hash
 * with it: the ring holds "x" (taken) then "x" (untaken); pushing out the first keeps the second. */
START_TEST(test_a_taken_note_leaving_keeps_a_newer_untaken_one)
{
	struct fb_notes *n = make(2, 100000);

	fb_notes_add(n, "t", "x", 1, 0);
	ck_assert(fb_notes_take(n, "t", "x", 1, 0));
	fb_notes_add(n, "t", "x", 1, 0);
	fb_notes_add(n, "t", "y", 1, 0);   /* pushes out the first (taken) "x" */
	ck_assert_uint_eq(fb_notes_pending(n), 2);
	ck_assert(fb_notes_take(n, "t", "x", 1, 0));
	ck_assert(fb_notes_take(n, "t", "y", 1, 0));
	fb_notes_add(n, "t", "z", 1, 0);   /* pushes out the second "x" (taken) */
	fb_notes_add(n, "t", "w", 1, 0);   /* pushes out "y" (taken) */
	ck_assert_uint_eq(fb_notes_pending(n), 2);
	fb_notes_free(n);
}
END_TEST

START_TEST(test_large_payloads_differing_at_the_ends_are_told_apart)
{
	struct fb_notes *n = make(16, 1000);
	size_t len = 1 << 20;
	char *a = malloc(len), *b = malloc(len);

	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	memset(a, 'a', len);
	memcpy(b, a, len);
	b[len - 1] = 'b';
	fb_notes_add(n, "t", a, (uint32_t)len, 0);
	ck_assert(!fb_notes_take(n, "t", b, (uint32_t)len, 0));
	b[len - 1] = 'a';
	b[0] = 'b';
	ck_assert(!fb_notes_take(n, "t", b, (uint32_t)len, 0));
	ck_assert(fb_notes_take(n, "t", a, (uint32_t)len, 0));
	free(a);
	free(b);
	fb_notes_free(n);
}
END_TEST

/* Many distinct hashes added, taken and pushed out: the table stays consistent (every pending
 * note can still be found after the removals shifted entries around). */
START_TEST(test_table_stays_consistent_through_churn)
{
	struct fb_notes *n = make(256, 100000);
	char p[32];

	for(int i = 0; i < 5000; i++){
		snprintf(p, sizeof(p), "p%d", i);
		fb_notes_add(n, "churn", p, (uint32_t)strlen(p), 0);
		if(i % 3 == 0){
			ck_assert(fb_notes_take(n, "churn", p, (uint32_t)strlen(p), 0));
		}
	}
	/* The last 256 notes are in the ring; those with i % 3 != 0 are pending. */
	for(int i = 5000 - 256; i < 5000; i++){
		snprintf(p, sizeof(p), "p%d", i);
		ck_assert_msg(fb_notes_take(n, "churn", p, (uint32_t)strlen(p), 0) == (i % 3 != 0), "p%d", i);
	}
	ck_assert_uint_eq(fb_notes_pending(n), 0);
	fb_notes_clear(n);
	ck_assert(!fb_notes_take(n, "churn", "p4999", 5, 0));
	fb_notes_free(n);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("notes");
	TCase *tc = tcase_create("notes");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_capacity_must_be_a_power_of_two);
	tcase_add_test(tc, test_a_note_is_taken_once_by_topic_and_payload);
	tcase_add_test(tc, test_the_same_message_noted_twice_is_taken_twice);
	tcase_add_test(tc, test_notes_expire_after_their_time_to_live);
	tcase_add_test(tc, test_a_full_ring_pushes_out_the_oldest_note);
	tcase_add_test(tc, test_a_taken_note_leaving_keeps_a_newer_untaken_one);
	tcase_add_test(tc, test_large_payloads_differing_at_the_ends_are_told_apart);
	tcase_add_test(tc, test_table_stays_consistent_through_churn);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
