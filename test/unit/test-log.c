/* Unit tests of plugin/common/log.c (fb_log) and plugin/ipc/logq.c (the link process's log queue, fb_logq), including a
 * writer in another process as in the plugin. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "logq.h"

#define CAP_MAX 4096

static struct {
	int level[CAP_MAX];
	char *text[CAP_MAX];
	size_t count;
} cap;

static void capture(void *ud, int level, const char *line)
{
	(void)ud;
	if(cap.count < CAP_MAX){
		cap.level[cap.count] = level;
		cap.text[cap.count++] = strdup(line);
	}
}

static const struct fb_logger lg = { capture, NULL };

static void cap_clear(void)
{
	for(size_t i = 0; i < cap.count; i++){
		free(cap.text[i]);
	}
	cap.count = 0;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

START_TEST(test_log_formats_one_line)
{
	fb_log(&lg, MOSQ_LOG_NOTICE, "a %d %s", 1, "b");
	fb_log(NULL, MOSQ_LOG_ERR, "dropped");
	ck_assert_uint_eq(cap.count, 1);
	ck_assert_int_eq(cap.level[0], MOSQ_LOG_NOTICE);
	ck_assert_str_eq(cap.text[0], "a 1 b");
	cap_clear();
}
END_TEST

/* Lines come out in order with their levels; many rounds of different lengths wrap the ring. */
START_TEST(test_logq_keeps_order_and_levels_across_wraps)
{
	struct fb_logq *q;
	char line[FB_LOGQ_LINE_MAX + 100];
	unsigned next = 0, seen = 0;

	ck_assert_int_eq(fb_logq_new(&q), 0);
	ck_assert_uint_eq(fb_logq_drain(q, &lg, now_ms()), 0);
	for(int round = 0; round < 200; round++){
		unsigned n = 1 + (unsigned)round % 37;

		for(unsigned i = 0; i < n; i++, next++){
			size_t len = (next * 131u) % 900;
			int w = snprintf(line, sizeof(line), "line %u ", next);
			memset(line + w, 'a' + (int)(next % 26), len);
			line[w + len] = '\0';
			fb_logq_push(q, next % 2 ? MOSQ_LOG_WARNING : MOSQ_LOG_INFO, line);
		}
		ck_assert_uint_eq(fb_logq_drain(q, &lg, now_ms()), n);
		ck_assert_uint_eq(cap.count, n);
		for(unsigned i = 0; i < n; i++, seen++){
			size_t len = (seen * 131u) % 900;
			int w = snprintf(line, sizeof(line), "line %u ", seen);
			memset(line + w, 'a' + (int)(seen % 26), len);
			line[w + len] = '\0';
			ck_assert_str_eq(cap.text[i], line);
			ck_assert_int_eq(cap.level[i], seen % 2 ? MOSQ_LOG_WARNING : MOSQ_LOG_INFO);
		}
		cap_clear();
	}
	ck_assert_uint_eq(seen, next);
	fb_logq_free(q);
}
END_TEST

/* A full queue never blocks the writer: the lines that do not fit are dropped, counted, and the
 * next drain says how many, once. Long lines are cut at FB_LOGQ_LINE_MAX bytes. */
START_TEST(test_logq_full_drops_and_counts)
{
	struct fb_logq *q;
	char line[2000];
	size_t kept;

	memset(line, 'x', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\0';
	ck_assert_int_eq(fb_logq_new(&q), 0);
	/* Each entry takes 16 + 1023 + 1 = 1040 bytes: 63 fit into 64 KiB. */
	for(int i = 0; i < 100; i++){
		fb_logq_push(q, MOSQ_LOG_ERR, line);
	}
	kept = fb_logq_drain(q, &lg, now_ms());
	ck_assert_uint_eq(kept, 63);
	ck_assert_uint_eq(cap.count, 64);
	ck_assert_uint_eq(strlen(cap.text[0]), FB_LOGQ_LINE_MAX);
	ck_assert_int_eq(cap.level[63], MOSQ_LOG_WARNING);
	ck_assert_str_eq(cap.text[63], "37 log lines of the link process were lost (its log queue was full)");
	cap_clear();
	/* Room again; the loss is not reported twice. */
	fb_logq_push(q, MOSQ_LOG_ERR, "after");
	ck_assert_uint_eq(fb_logq_drain(q, &lg, now_ms()), 1);
	ck_assert_uint_eq(cap.count, 1);
	ck_assert_str_eq(cap.text[0], "after");
	cap_clear();
	fb_logq_free(q);
}
END_TEST

/* A line drained long after it was written says when it was written. */
START_TEST(test_logq_late_line_says_how_late)
{
	struct fb_logq *q;

	ck_assert_int_eq(fb_logq_new(&q), 0);
	fb_logq_push(q, MOSQ_LOG_NOTICE, "on time");
	ck_assert_uint_eq(fb_logq_drain(q, &lg, now_ms() + FB_LOGQ_LATE_MS - 1000), 1);
	fb_logq_push(q, MOSQ_LOG_NOTICE, "late");
	ck_assert_uint_eq(fb_logq_drain(q, &lg, now_ms() + 7500), 1);
	ck_assert_uint_eq(cap.count, 2);
	ck_assert_str_eq(cap.text[0], "on time");
	ck_assert_str_eq(cap.text[1], "late (logged by the link process 7 s earlier)");
	cap_clear();
	fb_logq_free(q);
}
END_TEST

/* The plugin's case: a forked process writes, the parent
 * reads. */
START_TEST(test_logq_crosses_fork)
{
	struct fb_logq *q;
	int status;
	pid_t pid;

	ck_assert_int_eq(fb_logq_new(&q), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if(pid == 0){
		char line[64];
		for(int i = 0; i < 50; i++){
			snprintf(line, sizeof(line), "child %d", i);
			fb_logq_push(q, MOSQ_LOG_INFO, line);
		}
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	ck_assert_uint_eq(fb_logq_drain(q, &lg, now_ms()), 50);
	ck_assert_str_eq(cap.text[0], "child 0");
	ck_assert_str_eq(cap.text[49], "child 49");
	cap_clear();
	fb_logq_free(q);
	fb_logq_free(NULL);
	fb_logq_push(NULL, MOSQ_LOG_INFO, "nowhere");
	ck_assert_uint_eq(fb_logq_drain(NULL, &lg, 0), 0);
}
END_TEST

static Suite *log_suite(void)
{
	Suite *s = suite_create("log");
	TCase *tc = tcase_create("logq");

	tcase_add_test(tc, test_log_formats_one_line);
	tcase_add_test(tc, test_logq_keeps_order_and_levels_across_wraps);
	tcase_add_test(tc, test_logq_full_drops_and_counts);
	tcase_add_test(tc, test_logq_late_line_says_how_late);
	tcase_add_test(tc, test_logq_crosses_fork);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(log_suite());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
