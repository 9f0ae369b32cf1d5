/* Unit tests of plugin/link/yield.c: the link process gives way to a starved broker thread. */
#include <check.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "record.h"
#include "yield.h"

#define MS 1000000u
#define PERIOD (FB_YIELD_PERIOD_MS * MS)

static struct fb_yield fresh(void)
{
	struct fb_yield y;

	fb_yield_init(&y, 0, 0);
	return y;
}

START_TEST(a_starved_broker_thread_limits_the_next_period)
{
	struct fb_yield y = fresh();

	ck_assert(!y.active);
	ck_assert_uint_eq(fb_yield_allowed(&y), UINT64_MAX);
	/* Busy for 80 of 100 ms and 20 ms waiting for a CPU; 400 records arrived. */
	fb_yield_decide(&y, PERIOD, 80 * MS, 20 * MS, 0, 0, 400);
	ck_assert(y.active);
	ck_assert_uint_eq(y.budget, FB_YIELD_FLOOR + 500);
	ck_assert_uint_eq(fb_yield_allowed(&y), FB_YIELD_FLOOR + 500);
	y.sent = FB_YIELD_FLOOR + 499;
	ck_assert_uint_eq(fb_yield_allowed(&y), 1);
	y.sent++;
	ck_assert_uint_eq(fb_yield_allowed(&y), 0);
	/* Still starved, nothing arrived: the floor, and the count starts again. */
	fb_yield_decide(&y, PERIOD, 90 * MS, 10 * MS, 0, 0, 0);
	ck_assert_uint_eq(y.sent, 0);
	ck_assert_uint_eq(fb_yield_allowed(&y), FB_YIELD_FLOOR);
}
END_TEST

START_TEST(both_thresholds_must_be_reached)
{
	struct fb_yield y = fresh();

	fb_yield_decide(&y, PERIOD, 30 * MS, 20 * MS - 1, 0, 0, 0);    /* not busy enough */
	ck_assert(!y.active);
	fb_yield_decide(&y, PERIOD, 10 * MS, 40 * MS, 0, 0, 0);        /* waiting counts as busy */
	ck_assert(y.active);
	y = fresh();
	fb_yield_decide(&y, PERIOD, 100 * MS, 5 * MS - 1, 0, 0, 0);    /* barely waited */
	ck_assert(!y.active);
	fb_yield_decide(&y, PERIOD, 45 * MS, 5 * MS, 0, 0, 0);         /* exactly both */
	ck_assert(y.active);
	ck_assert_uint_eq(y.budget, FB_YIELD_FLOOR);
	/* The thresholds scale with the period's length. */
	y = fresh();
	fb_yield_decide(&y, 3 * PERIOD, 100 * MS, 30 * MS, 0, 0, 0);   /* busy 130 of 300 ms */
	ck_assert(!y.active);
	fb_yield_decide(&y, 3 * PERIOD, 150 * MS, 15 * MS - 1, 0, 0, 0);
	ck_assert(!y.active);
	fb_yield_decide(&y, 3 * PERIOD, 150 * MS, 15 * MS, 0, 0, 0);
	ck_assert(y.active);
}
END_TEST

START_TEST(a_machine_without_idle_cpu_counts_as_waiting)
{
	struct fb_yield y = fresh();

	/* The broker thread did not wait, but the machine was idle 4 ticks of 17 (< a quarter). */
	fb_yield_decide(&y, PERIOD, 90 * MS, 0, 17, 4, 40);
	ck_assert(y.active);
	ck_assert_uint_eq(y.budget, FB_YIELD_FLOOR + 50);
	/* Idle a quarter of the time: CPU to spare, the budget grows. */
	fb_yield_decide(&y, PERIOD, 90 * MS, 0, 20, 5, 40);
	ck_assert(y.active);
	ck_assert_uint_eq(y.budget, 2 * FB_YIELD_FLOOR + 50);
	/* A machine without idle time but an idle broker thread: no reason to give way. */
	y = fresh();
	fb_yield_decide(&y, PERIOD, 49 * MS, 0, 20, 0, 40);
	ck_assert(!y.active);
}
END_TEST

START_TEST(the_budget_grows_step_by_step_until_giving_way_ends)
{
	struct fb_yield y = fresh();
	int steps = 0;

	fb_yield_decide(&y, PERIOD, 100 * MS, 50 * MS, 0, 0, 0);
	ck_assert_uint_eq(y.budget, FB_YIELD_FLOOR);
	while(y.active){
		uint64_t before = y.budget;

		fb_yield_decide(&y, PERIOD, 10 * MS, 0, 0, 0, 1000);   /* the broker thread has its CPU */
		steps++;
		if(y.active){
			ck_assert_uint_eq(y.budget, before + FB_YIELD_FLOOR);
		}
		ck_assert_int_le(steps, 100);
	}
	ck_assert_int_eq(steps, FB_YIELD_CAP / FB_YIELD_FLOOR - 1);
	ck_assert_uint_eq(fb_yield_allowed(&y), UINT64_MAX);
	/* Starved again halfway: back to the floor plus what arrived. */
	fb_yield_decide(&y, PERIOD, 100 * MS, 50 * MS, 0, 0, 8);
	fb_yield_decide(&y, PERIOD, 10 * MS, 0, 0, 0, 0);
	fb_yield_decide(&y, PERIOD, 100 * MS, 50 * MS, 0, 0, 8);
	ck_assert_uint_eq(y.budget, FB_YIELD_FLOOR + 10);
}
END_TEST

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

START_TEST(the_tick_reads_the_threads_cpu_time_once_a_period)
{
	struct fb_yield y;
	uint64_t t0 = fb_mono_ms(), run0, cpu0, cpu;
	volatile uint64_t spin = 0;

	if(!fb_yield_init(&y, getpid(), t0)){
		ck_assert_msg(access("/proc/self/schedstat", R_OK) != 0, "schedstat is readable but init failed");
		return; /* a kernel without schedstat: giving way stays off */
	}
	ck_assert_uint_eq(fb_yield_next_ms(&y), t0 + FB_YIELD_PERIOD_MS);
	run0 = y.run_ns;
	cpu0 = thread_cpu_ns();
	while(thread_cpu_ns() - cpu0 < 150 * MS){
		spin++;
	}
	cpu = thread_cpu_ns() - cpu0;
	y.in = 7;
	fb_yield_tick(&y, t0 + FB_YIELD_PERIOD_MS - 1);     /* the period has not ended */
	ck_assert_uint_eq(y.run_ns, run0);
	ck_assert_uint_eq(y.in, 7);
	fb_yield_tick(&y, fb_mono_ms());
	ck_assert_uint_ge(y.run_ns - run0, cpu - cpu / 100);
	ck_assert_uint_le(y.run_ns - run0, cpu + 100 * MS);
	ck_assert_uint_eq(y.in, 0);
	ck_assert_int_ge(y.fd, 0);
	ck_assert_int_ge(y.cpu_fd, 0);
	ck_assert_uint_gt(y.cpu_total, 0);
	ck_assert_uint_ge(y.cpu_total, y.cpu_idle);
	fb_yield_cleanup(&y);
	ck_assert_int_eq(y.fd, -1);
	ck_assert_uint_eq(fb_yield_next_ms(&y), UINT64_MAX);
}
END_TEST

START_TEST(no_broker_pid_or_no_such_process_turns_it_off)
{
	struct fb_yield y;

	ck_assert(!fb_yield_init(&y, 0, 5));
	ck_assert_int_eq(y.fd, -1);
	fb_yield_tick(&y, 1000000);
	ck_assert(!y.active);
	ck_assert_uint_eq(fb_yield_allowed(&y), UINT64_MAX);
	ck_assert(!fb_yield_init(&y, 0x3fffffff, 5));
	ck_assert_int_eq(y.fd, -1);
	ck_assert_int_eq(y.cpu_fd, -1); /* closed again: nothing stays open */
	ck_assert_uint_eq(fb_yield_next_ms(&y), UINT64_MAX);
}
END_TEST

START_TEST(lingering_only_when_records_come_fast)
{
	/* The eventfd woke the worker 100 µs after it last took everything: wait; 499: wait; 500 and
	 * more: do not. */
	ck_assert_uint_eq(fb_linger_us(1000100, 1000000), FB_LINGER_US);
	ck_assert_uint_eq(fb_linger_us(1000499, 1000000), FB_LINGER_US);
	ck_assert_uint_eq(fb_linger_us(1000500, 1000000), 0);
	ck_assert_uint_eq(fb_linger_us(1900000, 1000000), 0);
	/* Never took anything yet, or a clock that went back: do not. */
	ck_assert_uint_eq(fb_linger_us(100, 0), 0);
	ck_assert_uint_eq(fb_linger_us(999999, 1000000), 0);
	/* The bound on what lingering adds to a record's way to the cloud. */
	ck_assert_uint_le(FB_LINGER_US, 1000);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("yield");
	TCase *tc = tcase_create("basic");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, a_starved_broker_thread_limits_the_next_period);
	tcase_add_test(tc, both_thresholds_must_be_reached);
	tcase_add_test(tc, a_machine_without_idle_cpu_counts_as_waiting);
	tcase_add_test(tc, the_budget_grows_step_by_step_until_giving_way_ends);
	tcase_add_test(tc, the_tick_reads_the_threads_cpu_time_once_a_period);
	tcase_add_test(tc, no_broker_pid_or_no_such_process_turns_it_off);
	tcase_add_test(tc, lingering_only_when_records_come_fast);
	suite_add_tcase(s, tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
