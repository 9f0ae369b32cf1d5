/* Unit tests (test process) of plugin/link/alias.c: aliases 1..max handed out in order, reused for a known topic,
 * the least recently used one given to a new topic when all are taken (full topic sent again),
 * dropped mappings, a reset per connection, and none at all with a maximum of 0. */
#include <check.h>
#include <stdio.h>
#include <string.h>

#include "alias.h"

static struct fb_alias a;

static void teardown(void)
{
	fb_alias_cleanup(&a);
}

/* Expects fb_alias_get(TOPIC) to give ALIAS, with the full topic when FULL. */
static void expect(const char *topic, unsigned alias, bool full)
{
	bool f = !full;
	unsigned got = fb_alias_get(&a, topic, strlen(topic), &f);

	ck_assert_msg(got == alias && f == full, "%s: alias %u full %d, expected %u %d", topic, got, f, alias, full);
}

START_TEST(test_none_with_maximum_0)
{
	ck_assert_int_eq(fb_alias_reset(&a, 0), 0);
	expect("a", 0, true);
	expect("a", 0, true);
}
END_TEST

START_TEST(test_assign_reuse_and_lru_replacement)
{
	ck_assert_int_eq(fb_alias_reset(&a, 3), 0);
	expect("t/1", 1, true);
	expect("t/1", 1, false);
	expect("t/2", 2, true);
	expect("t/3", 3, true);
	expect("t/1", 1, false);  /* t/2 is now the least recently used */
	expect("t/4", 2, true);   /* takes t/2's alias */
	expect("t/2", 3, true);   /* takes t/3's */
	expect("t/4", 2, false);
	expect("t/3", 1, true);   /* takes t/1's */
	expect("t/2", 3, false);
	expect("t/3", 1, false);
	expect("t/3", 1, false);  /* already the most recent: the order stays */
	/* a prefix or a longer topic is another topic */
	expect("t/", 2, true);
	expect("t/33", 3, true);
	expect("t/3", 1, false);
}
END_TEST

START_TEST(test_drop_and_reset)
{
	ck_assert_int_eq(fb_alias_reset(&a, 2), 0);
	expect("x", 1, true);
	expect("y", 2, true);
	fb_alias_drop(&a, "x", 1);
	fb_alias_drop(&a, "never", 5);
	expect("y", 2, false);
	expect("z", 1, true);      /* the dropped alias is free again */
	expect("x", 2, true);      /* y was least recently used */
	ck_assert_int_eq(fb_alias_reset(&a, 2), 0); /* a new connection */
	expect("x", 1, true);
	expect("z", 2, true);
	expect("x", 1, false);
}
END_TEST

/* 10 aliases, 50 topics used in turn 20 times each: a miss only at each topic's first use. */
/* fb_alias_find() reports the mapping without making one or changing the order of use. */
START_TEST(test_find_changes_nothing)
{
	ck_assert_int_eq(fb_alias_reset(&a, 2), 0);
	ck_assert_uint_eq(fb_alias_find(&a, "x", 1), 0);
	expect("x", 1, true);     /* the find above made no mapping */
	expect("y", 2, true);
	ck_assert_uint_eq(fb_alias_find(&a, "x", 1), 1);  /* x is the least recently used ... */
	ck_assert_uint_eq(fb_alias_find(&a, "y", 1), 2);
	ck_assert_uint_eq(fb_alias_find(&a, "z", 1), 0);
	expect("z", 1, true);     /* ... and stays so: z takes its alias */
	ck_assert_uint_eq(fb_alias_find(&a, "x", 1), 0);
	ck_assert_uint_eq(fb_alias_find(&a, "z", 1), 1);
	ck_assert_int_eq(fb_alias_reset(&a, 0), 0);
	ck_assert_uint_eq(fb_alias_find(&a, "z", 1), 0);
}
END_TEST

START_TEST(test_many_topics)
{
	unsigned full = 0;

	ck_assert_int_eq(fb_alias_reset(&a, 10), 0);
	for(unsigned t = 0; t < 50; t++){
		for(unsigned n = 0; n < 20; n++){
			char topic[32];
			bool f;
			snprintf(topic, sizeof(topic), "edge/site-A/m-%u", t);
			unsigned got = fb_alias_get(&a, topic, strlen(topic), &f);
			ck_assert_uint_ge(got, 1);
			ck_assert_uint_le(got, 10);
			full += f;
		}
	}
	ck_assert_uint_eq(full, 50);
	ck_assert_uint_eq(a.used, 10);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("alias");
	TCase *tc = tcase_create("alias");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, test_none_with_maximum_0);
	tcase_add_test(tc, test_assign_reuse_and_lru_replacement);
	tcase_add_test(tc, test_drop_and_reset);
	tcase_add_test(tc, test_find_changes_nothing);
	tcase_add_test(tc, test_many_topics);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
