/* flowmq-bridge: the link process gives way to the broker thread.
 *
 * Sending a backlog to the cloud takes CPU on the edge (and, where the cloud shares the machine,
 * there too). When the broker thread has plenty to do and the CPUs do not (it waits for one, or
 * the machine is hardly ever idle), local clients come first: the link sends no more records per
 * period than arrived in the previous one plus a floor, so the backlog still shrinks, and it raises
 * that budget step by step once CPU is to spare. The broker thread's CPU time and run-queue wait
 * come from /proc/<pid>/schedstat, the machine's idle time from /proc/stat. Worker thread only.
 */
#ifndef FB_YIELD_H
#define FB_YIELD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define FB_YIELD_PERIOD_MS 100
/* Records per period the link may always send while it gives way: 500 msg/s. */
#define FB_YIELD_FLOOR 50
/* A budget this large is no limit: giving way ends. */
#define FB_YIELD_CAP (40 * FB_YIELD_FLOOR)

struct fb_yield {
	int fd;                /* /proc/<broker>/schedstat, -1: giving way is off */
	int cpu_fd;            /* /proc/stat, -1: not readable (the broker thread's wait decides) */
	bool active;           /* the budget applies */
	uint64_t budget;       /* records that may be sent in the current period */
	uint64_t sent;         /* ... and were sent */
	uint64_t start_ms;     /* when the current period started (monotonic) */
	uint64_t run_ns;       /* the broker thread's CPU time at that moment */
	uint64_t wait_ns;      /* ... and its time spent waiting for a CPU */
	uint64_t cpu_total;    /* the machine's CPU time at that moment, clock ticks */
	uint64_t cpu_idle;     /* ... and its idle part */
	uint64_t in;           /* records that arrived since then */
};

/* Opens the broker thread's statistics; PID 0 (or no schedstat in this kernel) turns giving way
 * off. Returns true when it is on. */
bool fb_yield_init(struct fb_yield *y, pid_t pid, uint64_t now_ms);
void fb_yield_cleanup(struct fb_yield *y);

/* The decision at the end of a period of PERIOD_NS in which the broker thread ran RUN_NS and
 * waited WAIT_NS for a CPU, the machine spent CPU_IDLE of CPU_TOTAL ticks idle (0 of 0: unknown),
 * and IN records arrived. When the broker thread was busy (running or waiting for a CPU) for at
 * least half the period and either waited for a twentieth of it or the machine was idle less than
 * a quarter of its CPU time, the budget becomes FB_YIELD_FLOOR + 1.25 IN. Otherwise an active
 * budget grows by FB_YIELD_FLOOR, and giving way ends at FB_YIELD_CAP. */
void fb_yield_decide(struct fb_yield *y, uint64_t period_ns, uint64_t run_ns, uint64_t wait_ns,
		uint64_t cpu_total, uint64_t cpu_idle, uint64_t in);

/* Ends the period once FB_YIELD_PERIOD_MS have passed: reads the statistics and decides. */
void fb_yield_tick(struct fb_yield *y, uint64_t now_ms);

/* How many records may be sent now (UINT64_MAX: no limit). */
static inline uint64_t fb_yield_allowed(const struct fb_yield *y)
{
	return !y->active ? UINT64_MAX : y->sent < y->budget ? y->budget - y->sent : 0;
}

/* Lingering under load. Records that come faster than the worker takes them would each cost a
 * wake-up of the link process and an eventfd write in the broker thread; while connected also a
 * write(2) and a TCP segment to the cloud of their own, while the cloud is unreachable a wake-up
 * only to take a record or two into the queue. Connected or not, when the eventfd wakes the worker
 * less than FB_LINGER_GAP_US after the worker last took everything (NOW_US - READY_US, monotonic
 * µs), it waits FB_LINGER_US before taking the records, with the "notified" flag still set so that
 * the broker thread does not write the eventfd again meanwhile: what was staged in that time is
 * taken (and, connected, goes out) in one turn. It does not linger when a settle is due
 * (session.c). At a steady rate below about 2,000 records per second nothing lingers. Returns the
 * microseconds to wait (0: none). */
#define FB_LINGER_GAP_US 500
#define FB_LINGER_US 500
static inline unsigned fb_linger_us(uint64_t now_us, uint64_t ready_us)
{
	return ready_us != 0 && now_us >= ready_us && now_us - ready_us < FB_LINGER_GAP_US ? FB_LINGER_US : 0;
}

/* When the current period ends (monotonic ms); UINT64_MAX while giving way is off. */
static inline uint64_t fb_yield_next_ms(const struct fb_yield *y)
{
	return y->fd < 0 ? UINT64_MAX : y->start_ms + FB_YIELD_PERIOD_MS;
}

#endif
