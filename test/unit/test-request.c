/* Unit tests (test process) of plugin/ipc/request.c: an operator's request to the running link
 * process and its reply, through files beside the spool folder; this test program's own thread. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "request.h"

static char dir[] = "/tmp/fb-test-request-XXXXXX";
static char spool[256], file[300];

static void setup(void)
{
	strcpy(dir, "/tmp/fb-test-request-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(spool, sizeof(spool), "%s/spool/", dir); /* a trailing slash names the same folder */
}

static void teardown(void)
{
	char cmd[600];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* The number of entries of DIR (the test's folder). */
static int entries(void)
{
	char cmd[600];
	FILE *p;
	int n = -1;

	snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", dir);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(fscanf(p, "%d", &n), 1);
	pclose(p);
	return n;
}

static struct fb_request request(enum fb_request_op op)
{
	struct fb_request rq = { .op = op, .pid = 4242 };

	ck_assert_int_eq(fb_request_nonce(&rq), 0);
	ck_assert_uint_eq(strlen(rq.nonce), 32);
	ck_assert_uint_eq(strspn(rq.nonce, "0123456789abcdef"), 32);
	return rq;
}

START_TEST(post_claim_reply_take)
{
	struct fb_request rq = request(FB_REQUEST_REQUEUE_DEAD), other = request(FB_REQUEST_PURGE_DEAD), got;
	struct fb_reply rp = { .ok = true, .done = 3, .left = 0 }, back;

	ck_assert_str_ne(rq.nonce, other.nonce);
	ck_assert_int_eq(fb_request_claim(spool, &got), 0); /* nothing pending */
	ck_assert_int_eq(fb_request_post(spool, &rq), 0);
	snprintf(file, sizeof(file), "%s/spool-request", dir);
	ck_assert_int_eq(access(file, F_OK), 0);
	ck_assert_int_eq(entries(), 1); /* no temporary file left */
	/* One pending: a second is refused, the first stays. */
	ck_assert_int_eq(fb_request_post(spool, &other), -EEXIST);
	ck_assert_int_eq(entries(), 1);
	ck_assert_int_eq(fb_reply_take(spool, rq.nonce, &back), -ENOENT);

	ck_assert_int_eq(fb_request_claim(spool, &got), 1);
	ck_assert_int_eq(got.op, FB_REQUEST_REQUEUE_DEAD);
	ck_assert_str_eq(got.nonce, rq.nonce);
	ck_assert_int_eq(got.pid, 4242);
	ck_assert_int_eq(access(file, F_OK), -1);
	/* Claimed: the command can no longer take it back. */
	ck_assert_int_eq(fb_request_withdraw(spool, rq.nonce), -EINPROGRESS);

	snprintf(rp.error, sizeof(rp.error), "line one\nline two");
	ck_assert_int_eq(fb_reply_post(spool, &got, &rp), 0);
	ck_assert_int_eq(entries(), 1); /* the reply only: the claim ended */
	ck_assert_int_eq(fb_reply_take(spool, other.nonce, &back), -ENOENT);
	ck_assert_int_eq(fb_reply_take(spool, rq.nonce, &back), 0);
	ck_assert(back.ok);
	ck_assert_uint_eq(back.done, 3);
	ck_assert_uint_eq(back.left, 0);
	ck_assert_str_eq(back.error, "line one"); /* one line */
	ck_assert(!back.done_unknown);
	ck_assert_int_eq(entries(), 0);
	ck_assert_int_eq(fb_reply_take(spool, rq.nonce, &back), -ENOENT);

	/* A count that is not known goes as such, not as 0. */
	ck_assert_int_eq(fb_request_post(spool, &other), 0);
	ck_assert_int_eq(fb_request_claim(spool, &got), 1);
	rp = (struct fb_reply){ .ok = false, .done_unknown = true, .left = 7 };
	ck_assert_int_eq(fb_reply_post(spool, &got, &rp), 0);
	ck_assert_int_eq(fb_reply_take(spool, other.nonce, &back), 0);
	ck_assert(!back.ok);
	ck_assert(back.done_unknown);
	ck_assert_uint_eq(back.done, 0);
	ck_assert_uint_eq(back.left, 7);
}
END_TEST

START_TEST(withdraw_before_the_claim)
{
	struct fb_request rq = request(FB_REQUEST_PURGE_DEAD), other = request(FB_REQUEST_REQUEUE_DEAD), got;

	ck_assert_int_eq(fb_request_post(spool, &rq), 0);
	ck_assert_int_eq(fb_request_withdraw(spool, rq.nonce), 0);
	ck_assert_int_eq(entries(), 0);
	ck_assert_int_eq(fb_request_claim(spool, &got), 0);
	/* Another command's request is never taken back by mistake. */
	ck_assert_int_eq(fb_request_post(spool, &other), 0);
	ck_assert_int_eq(fb_request_withdraw(spool, rq.nonce), -EINPROGRESS);
	ck_assert_int_eq(entries(), 1);
	ck_assert_int_eq(fb_request_claim(spool, &got), 1);
	ck_assert_str_eq(got.nonce, other.nonce);
	ck_assert_int_eq(got.op, FB_REQUEST_REQUEUE_DEAD);
}
END_TEST

START_TEST(abandoned_and_unreadable_requests)
{
	struct fb_request rq = request(FB_REQUEST_PURGE_DEAD), got;

	ck_assert_int_eq(fb_request_abandoned(spool, &got), 0);
	ck_assert_int_eq(fb_request_post(spool, &rq), 0);
	ck_assert_int_eq(fb_request_claim(spool, &got), 1);
	/* The link process ends here; the next one finds the claim and answers it. */
	memset(&got, 0, sizeof(got));
	ck_assert_int_eq(fb_request_abandoned(spool, &got), 1);
	ck_assert_str_eq(got.nonce, rq.nonce);
	ck_assert_int_eq(got.op, FB_REQUEST_PURGE_DEAD);
	ck_assert_int_eq(entries(), 0);
	ck_assert_int_eq(fb_request_abandoned(spool, &got), 0);

	/* Not a request: removed, -EPROTO. */
	snprintf(file, sizeof(file), "%s/spool-request", dir);
	{
		FILE *f = fopen(file, "w");

		ck_assert_ptr_nonnull(f);
		fputs("flowmq-bridge-request 1\nop format-disk\nnonce 0123456789abcdef0123456789abcdef\n", f);
		fclose(f);
	}
	ck_assert_int_eq(fb_request_claim(spool, &got), -EPROTO);
	ck_assert_int_eq(entries(), 0);
	ck_assert_str_eq(fb_request_op_name(FB_REQUEST_REQUEUE_DEAD), "requeue-dead");
	ck_assert_str_eq(fb_request_op_name(FB_REQUEST_PURGE_DEAD), "purge-dead");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("request");
	TCase *tc = tcase_create("request");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, post_claim_reply_take);
	tcase_add_test(tc, withdraw_before_the_claim);
	tcase_add_test(tc, abandoned_and_unreadable_requests);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
