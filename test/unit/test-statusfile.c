/* Unit tests of plugin/ipc/statusfile.c: the status file the link process writes and
 * `flowmq-bridge health` reads; this test program's own thread. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "statusfile.h"

static char dir[] = "/tmp/fb-test-statusfile-XXXXXX";
static char path[256];

static void setup(void)
{
	strcpy(dir, "/tmp/fb-test-statusfile-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/spool-status", dir);
}

static void teardown(void)
{
	unlink(path);
	rmdir(dir);
}

static struct fb_statusfile sample(const char *state, uint64_t updated, uint64_t since)
{
	struct fb_statusfile s;

	memset(&s, 0, sizeof(s));
	s.updated_ms = updated;
	s.interval_ms = 10000;
	s.pid = 4242;
	snprintf(s.state, sizeof(s.state), "%s", state);
	s.since_ms = since;
	snprintf(s.endpoint, sizeof(s.endpoint), "mqtts://cloud.example:8883");
	return s;
}

START_TEST(path_is_beside_the_spool_folder)
{
	char *p = fb_statusfile_path("/var/lib/mosquitto/flowmq-bridge/");

	ck_assert_str_eq(p, "/var/lib/mosquitto/flowmq-bridge-status");
	free(p);
	p = fb_statusfile_path("/s");
	ck_assert_str_eq(p, "/s-status");
	free(p);
}
END_TEST

START_TEST(written_file_reads_back_exactly_and_replaces_the_old_one)
{
	struct fb_statusfile w = sample("disconnected", 1764434000123u, 1764433000000u), r;
	char buf[1024];
	FILE *f;
	size_t n;

	snprintf(w.last_error, sizeof(w.last_error), "connection refused\nsecond line");
	ck_assert_int_eq(fb_statusfile_write(path, &w), 0);
	ck_assert_int_eq(fb_statusfile_read(path, &r), 0);
	ck_assert_uint_eq(r.updated_ms, 1764434000123u);
	ck_assert_uint_eq(r.interval_ms, 10000);
	ck_assert_int_eq(r.pid, 4242);
	ck_assert_str_eq(r.state, "disconnected");
	ck_assert_uint_eq(r.since_ms, 1764433000000u);
	ck_assert_str_eq(r.endpoint, "mqtts://cloud.example:8883");
	ck_assert_str_eq(r.last_error, "connection refused second line");
	f = fopen(path, "r");
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	ck_assert_str_eq(buf, "flowmq-bridge-status 1\nupdated_ms 1764434000123\ninterval_ms 10000\npid 4242\n"
			"state disconnected\nsince_ms 1764433000000\nendpoint mqtts://cloud.example:8883\n"
			"last_error connection refused second line\n");
	w = sample("connected", 1764434010000u, 1764434009000u);
	ck_assert_int_eq(fb_statusfile_write(path, &w), 0);
	ck_assert_int_eq(fb_statusfile_read(path, &r), 0);
	ck_assert_str_eq(r.state, "connected");
	ck_assert_str_eq(r.last_error, "");
}
END_TEST

START_TEST(other_files_are_refused)
{
	struct fb_statusfile r;
	FILE *f = fopen(path, "w");

	fputs("site_id: site-A\n", f);
	fclose(f);
	ck_assert_int_eq(fb_statusfile_read(path, &r), -EPROTO);
	f = fopen(path, "w");
	fputs("flowmq-bridge-status 1\nupdated_ms 5\n", f); /* incomplete */
	fclose(f);
	ck_assert_int_eq(fb_statusfile_read(path, &r), -EPROTO);
	unlink(path);
	ck_assert_int_eq(fb_statusfile_read(path, &r), -ENOENT);
}
END_TEST

#define MIN 60000u

START_TEST(health_follows_state_threshold_and_refresh)
{
	static const struct {
		const char *state;
		uint64_t updated, since, now, max;
		bool healthy;
		const char *why;
	} cases[] = {
		{ "connected", 1000000, 400000, 1005000, 5 * MIN, true,
		  "healthy: connected to mqtts://cloud.example:8883 for 10m5s" },
		{ "disconnected", 1000000, 990000, 1002000, 5 * MIN, true,
		  "healthy: disconnected for 12s (less than 5m0s): refused" },
		{ "disconnected", 1000000, 600000, 1005000, 5 * MIN, false,
		  "unhealthy: disconnected for 6m45s (at least 5m0s): refused" },
		{ "disconnected", 1000000, 700000, 1000000, 5 * MIN, false,
		  "unhealthy: disconnected for 5m0s (at least 5m0s): refused" },
		/* Not refreshed for more than two intervals + 10 s: the link process is gone. */
		{ "connected", 1000000, 100000, 1031000, 5 * MIN, true,
		  "healthy: status not refreshed for 31s (the link process is not running or hangs), last state connected" },
		{ "connected", 1000000, 100000, 1300000, 5 * MIN, false,
		  "unhealthy: status not refreshed for 5m0s (the link process is not running or hangs), last state connected" },
		{ "connected", 1000000, 100000, 1029000, 5 * MIN, true,
		  "healthy: connected to mqtts://cloud.example:8883 for 15m29s" },
	};
	char why[1024];

	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		struct fb_statusfile s = sample(cases[i].state, cases[i].updated, cases[i].since);
		bool ok;

		snprintf(s.last_error, sizeof(s.last_error), "%s", strcmp(cases[i].state, "connected") ? "refused" : "");
		ok = fb_statusfile_healthy(&s, cases[i].now, cases[i].max, why, sizeof(why));
		ck_assert_msg(ok == cases[i].healthy, "case %zu: %s", i, why);
		ck_assert_str_eq(why, cases[i].why);
	}
	{
		struct fb_statusfile s = sample("connecting", 1000000, 990000);

		ck_assert(fb_statusfile_healthy(&s, 1000000, 30000, why, sizeof(why)));
		ck_assert_str_eq(why, "healthy: connecting for 10s (less than 30s)");
		ck_assert(!fb_statusfile_healthy(&s, 1000000, 10000, why, sizeof(why)));
		ck_assert_str_eq(why, "unhealthy: connecting for 10s (at least 10s)");
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("statusfile");
	TCase *tc = tcase_create("basic");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, path_is_beside_the_spool_folder);
	tcase_add_test(tc, written_file_reads_back_exactly_and_replaces_the_old_one);
	tcase_add_test(tc, other_files_are_refused);
	tcase_add_test(tc, health_follows_state_threshold_and_refresh);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
