/* flowmq-bridge fault tests: an LD_PRELOAD library for the edge broker (and the link process it
 * forks) that sets the wall clock back.
 *
 * While the file named by FB_CLOCKBACK_FILE exists, time(), gettimeofday() and clock_gettime() of
 * CLOCK_REALTIME and CLOCK_REALTIME_COARSE answer FB_CLOCKBACK_S seconds earlier than the real
 * clock: what a gateway sees when NTP steps a clock that ran ahead back, or a VM snapshot is
 * restored. Monotonic clocks are left alone, and so is every process but the broker (the link
 * process it forks would find the test's fresh TLS certificates not yet valid).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

/* Seconds to take off now: 0 while the file is absent. */
static time_t back(void)
{
	const char *file = getenv("FB_CLOCKBACK_FILE"), *s = getenv("FB_CLOCKBACK_S");

	return file && s && strcmp(program_invocation_short_name, "mosquitto") == 0 && access(file, F_OK) == 0
		? (time_t)atol(s) : 0;
}

static int real_clock_gettime(clockid_t id, struct timespec *ts)
{
	static clock_gettime_fn fn;

	if(fn == NULL){
		fn = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
	}
	return fn(id, ts);
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
	int rc = real_clock_gettime(id, ts);

	if(rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE)){
		ts->tv_sec -= back();
	}
	return rc;
}

time_t time(time_t *t)
{
	struct timespec ts;
	time_t now;

	real_clock_gettime(CLOCK_REALTIME, &ts);
	now = ts.tv_sec - back();
	if(t){
		*t = now;
	}
	return now;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
	struct timespec ts;

	(void)tz;
	real_clock_gettime(CLOCK_REALTIME, &ts);
	tv->tv_sec = ts.tv_sec - back();
	tv->tv_usec = ts.tv_nsec / 1000;
	return 0;
}
