/* Unit tests (test process) of plugin/broker/inject.c: cloud messages taken from the cloud-to-edge
 * ring into the local broker, at most FB_INJECT_BUDGET per tick, in order, each once. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Puts record SEQ (payload "c<SEQ - 1>") of spool "in" into RING. */
static void put(struct fb_c2e *ring, const char *dir, uint64_t seq)
{
	char payload[16];
	uint8_t buf[256];
	struct fb_record r = {
		.qos = 1,
		.lane = FB_LANE_DEFAULT,
		.enqueue_ms = fb_wall_ms(),
		.topic = "cmd/site-A/x",
		.topic_len = (uint16_t)strlen("cmd/site-A/x"),
		.payload = payload,
	};

	r.payload_len = (uint32_t)snprintf(payload, sizeof(payload), "c%llu", (unsigned long long)(seq - 1));
	ck_assert_uint_le(fb_record_size(&r), sizeof(buf));
	ck_assert_int_eq(fb_c2e_put(ring, dir, FB_C2E_STEM, seq, buf, fb_record_encode(&r, buf)), 0);
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

int main(void)
{
	Suite *s = suite_create("inject");
	TCase *tc = tcase_create("budget");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_a_backlog_is_injected_a_budget_per_tick_in_order);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
