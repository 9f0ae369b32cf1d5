/* Unit tests of plugin/link/rate.c: the token bucket behind cloud.max_rate and
 * cloud.max_bandwidth, on a simulated clock. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#include "rate.h"

/* Sends messages of SIZE bytes as the worker would, from T0 to T1 ms: at each wake-up (every STEP
 * ms, or a random 1 to 7 ms when STEP is 0, and at T1) as many as fb_rate_cap() allows, stopping
 * when fb_rate_take() says the caps are spent. Returns the messages sent. */
static uint64_t drive(struct fb_rate *r, uint64_t t0, uint64_t t1, unsigned step, size_t size)
{
	unsigned seed = 7;
	uint64_t sent = 0, t = t0;

	for(;;){
		uint64_t n = fb_rate_cap(r, UINT64_MAX, t);
		for(uint64_t i = 0; i < n; i++){
			sent++;
			if(fb_rate_take(r, size)){
				break;
			}
		}
		if(t == t1){
			return sent;
		}
		t += step ? step : 1 + (unsigned)rand_r(&seed) % 7;
		if(t > t1){
			t = t1;
		}
	}
}

START_TEST(test_rate_off_when_no_cap)
{
	struct fb_rate r;

	fb_rate_init(&r, 0, 0, 5);
	ck_assert(!r.on);
	fb_rate_init(&r, 1, 0, 5);
	ck_assert(r.on);
	fb_rate_init(&r, 0, 1024, 5);
	ck_assert(r.on);
}
END_TEST

START_TEST(test_rate_burst_then_the_rate)
{
	struct fb_rate r;

	fb_rate_init(&r, 1000, 0, 0);
	/* a full bucket: FB_RATE_BURST_MS of the rate */
	ck_assert_uint_eq(fb_rate_cap(&r, UINT64_MAX, 0), 250);
	ck_assert_uint_eq(fb_rate_cap(&r, 30, 0), 30);
	for(int i = 0; i < 249; i++){
		ck_assert(!fb_rate_take(&r, 10));
	}
	ck_assert(fb_rate_take(&r, 10));
	ck_assert(fb_rate_spent(&r));
	ck_assert_uint_eq(fb_rate_cap(&r, UINT64_MAX, 0), 0);
	/* the worker looks again when FB_RATE_QUANTUM_MS worth are there */
	ck_assert_uint_eq(fb_rate_next_ms(&r), 10);
	ck_assert_uint_eq(fb_rate_cap(&r, UINT64_MAX, 1), 1);
	ck_assert_uint_eq(fb_rate_cap(&r, UINT64_MAX, 10), 10);
	/* a clock that goes back changes nothing */
	ck_assert_uint_eq(fb_rate_cap(&r, UINT64_MAX, 3), 10);
	/* idle for long: the bucket holds the burst, no more */
	ck_assert_uint_eq(fb_rate_cap(&r, UINT64_MAX, 100000), 250);
}
END_TEST

START_TEST(test_rate_1000_per_second_over_10_s)
{
	struct fb_rate r;

	/* from a full bucket: the burst plus exactly the rate, whatever the wake-ups */
	fb_rate_init(&r, 1000, 0, 1000);
	ck_assert_uint_eq(drive(&r, 1000, 11000, 0, 100), 250 + 10000);
	fb_rate_init(&r, 1000, 0, 1000);
	ck_assert_uint_eq(drive(&r, 1000, 11000, 1, 100), 250 + 10000);
	/* slow wake-ups (the bucket holds them): every 50 ms */
	fb_rate_init(&r, 1000, 0, 1000);
	ck_assert_uint_eq(drive(&r, 1000, 11000, 50, 100), 250 + 10000);
	/* 7 per second (a bucket of two messages): every token counts */
	fb_rate_init(&r, 7, 0, 0);
	ck_assert_uint_eq(drive(&r, 0, 10000, 0, 100), 2 + 70);
}
END_TEST

START_TEST(test_bandwidth_100KiB_per_second_over_10_s)
{
	struct fb_rate r;
	uint64_t sent, bytes, want = 102400 * 10 + 25600;

	fb_rate_init(&r, 0, 102400, 0);
	sent = drive(&r, 0, 10000, 0, 2000);
	bytes = sent * 2000;
	/* the burst (FB_RATE_BURST_MS) plus the rate; the last message may overdraw by its size */
	ck_assert_msg(bytes >= want - 2000 && bytes <= want + 2000, "%llu bytes, expected %llu +- 2000",
			(unsigned long long)bytes, (unsigned long long)want);
}
END_TEST

/* A message larger than the bucket goes out whole; the next waits until the debt is paid. */
START_TEST(test_bandwidth_large_message_passes_then_waits)
{
	struct fb_rate r;
	uint64_t t;

	fb_rate_init(&r, 0, 1024, 0);
	ck_assert_uint_eq(fb_rate_cap(&r, UINT64_MAX, 0), UINT64_MAX);
	ck_assert(fb_rate_take(&r, 100000));
	ck_assert_uint_eq(fb_rate_cap(&r, UINT64_MAX, 0), 0);
	/* 100,000 - 256 bytes of debt at 1,024 bytes/s: about 97.4 s, plus a quantum */
	t = fb_rate_next_ms(&r);
	ck_assert_uint_ge(t, 97407);
	ck_assert_uint_le(t, 97407 + 20);
	for(uint64_t now = 0; now < 97407; now += 150){
		ck_assert_uint_eq(fb_rate_cap(&r, UINT64_MAX, now), 0);
	}
	ck_assert_uint_eq(fb_rate_cap(&r, UINT64_MAX, t), UINT64_MAX);
}
END_TEST

/* A debt is paid by the time that passes, whether the worker looks meanwhile or not: after an
 * hour without a look, the next message goes at once (it waited the rest of the debt's 97 s
 * before, half a second per look). */
START_TEST(test_bandwidth_debt_paid_while_idle)
{
	struct fb_rate r;

	fb_rate_init(&r, 0, 1024, 0);
	ck_assert(fb_rate_take(&r, 100000));
	ck_assert_uint_eq(fb_rate_cap(&r, UINT64_MAX, 1000), 0);
	ck_assert_uint_eq(fb_rate_cap(&r, UINT64_MAX, 3600000), UINT64_MAX);
	/* Paid, and no more than the bucket's burst (250 ms of the rate) saved up. */
	ck_assert(!fb_rate_take(&r, 255));
	ck_assert(fb_rate_take(&r, 1));
	/* Without an idle hour the debt still takes its time: one look 50 s after the message. */
	fb_rate_init(&r, 0, 1024, 0);
	ck_assert(fb_rate_take(&r, 100000));
	ck_assert_uint_eq(fb_rate_cap(&r, UINT64_MAX, 50000), 0);
	ck_assert_uint_eq(fb_rate_cap(&r, UINT64_MAX, 97407), UINT64_MAX);
}
END_TEST

/* Both caps: whichever is spent first holds the messages. */
START_TEST(test_both_caps_the_lower_wins)
{
	struct fb_rate r;

	/* 100 msg/s but 10 KiB/s of 1 KiB messages: 10 per second */
	uint64_t n;

	fb_rate_init(&r, 100, 10240, 0);
	n = drive(&r, 0, 10000, 0, 1024);
	ck_assert_msg(n >= 102 && n <= 104, "%llu sent", (unsigned long long)n); /* 2.5 KiB of burst, one overdraw */
	/* 10 msg/s and 1 MiB/s of small messages: 10 per second */
	fb_rate_init(&r, 10, 1 << 20, 0);
	ck_assert_uint_eq(drive(&r, 0, 10000, 0, 10), 2 + 100); /* 2.5 to start with */
}
END_TEST

int main(void)
{
	Suite *s = suite_create("rate");
	TCase *tc = tcase_create("rate");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_rate_off_when_no_cap);
	tcase_add_test(tc, test_rate_burst_then_the_rate);
	tcase_add_test(tc, test_rate_1000_per_second_over_10_s);
	tcase_add_test(tc, test_bandwidth_100KiB_per_second_over_10_s);
	tcase_add_test(tc, test_bandwidth_large_message_passes_then_waits);
	tcase_add_test(tc, test_bandwidth_debt_paid_while_idle);
	tcase_add_test(tc, test_both_caps_the_lower_wins);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
