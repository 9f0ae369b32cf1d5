/* flowmq-bridge: the link process's log lines on their way to the broker thread (both processes).
 *
 * The link process never calls the broker API: every line it logs goes into a ring in the shared
 * region (shared.h), and the broker thread hands them to mosquitto_log_printf() at its next tick,
 * with their levels, so that `log_dest topic` and the broker's other log destinations see them
 * (and Mosquitto stamps them with the right time). Lines longer than FB_LOGQ_LINE_MAX bytes are
 * cut; when the ring is full, lines are dropped and counted, and the next drain says how many.
 * A writer killed in the middle of an entry never published it: the reader never waits for it.
 */
#ifndef FB_LOGQ_H
#define FB_LOGQ_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

#define FB_LOGQ_LINE_MAX 1023
#define FB_LOGQ_RING (64u << 10)

/* The part in the shared region. head and tail count bytes and never wrap. */
struct fb_logq_ring {
	atomic_uint_fast64_t head;    /* reader (broker thread) */
	atomic_uint_fast64_t tail;    /* writer (link process) */
	atomic_uint_fast64_t dropped; /* writer: lines lost to a full queue, ever */
	uint8_t ring[FB_LOGQ_RING];
};

/* One process's handle on a ring. */
struct fb_logq {
	struct fb_logq_ring *sh;
	pthread_mutex_t lock;     /* the writing process's threads take turns */
	uint64_t dropped_seen;    /* reader: dropped lines already reported */
	void *own;                /* fb_logq_new()'s mapping, else NULL */
};

/* Attaches Q to RING (in memory the caller keeps mapped). Either process. */
void fb_logq_init(struct fb_logq *q, struct fb_logq_ring *ring);

/* Releases what fb_logq_init() set up (not the ring). */
void fb_logq_cleanup(struct fb_logq *q);

/* Creates a queue with a ring of its own (anonymous MAP_SHARED memory, shared with children
 * forked later). Returns 0 or a negative errno; the caller frees it with fb_logq_free(). */
int fb_logq_new(struct fb_logq **out);

/* Accepts NULL. Once no other process writes to it. */
void fb_logq_free(struct fb_logq *q);

/* Queues LINE at LEVEL with the current time; never blocks on the reader (a full queue drops the
 * line). Q may be NULL (the line is dropped). Any thread of the writing process; one writing
 * process at a time. */
void fb_logq_push(struct fb_logq *q, int level, const char *line);

/* A logger whose lines go into Q (UD = Q). */
void fb_logq_log(void *ud, int level, const char *line);

/* Hands every queued line to TO, oldest first. A line written FB_LOGQ_LATE_MS or more before
 * NOW_MS (wall clock, ms since the epoch) gets " (logged by the link process N s earlier)"
 * appended, so that a late line still tells when it happened. Returns the number of lines handed
 * over. The broker thread (the only reader). */
#define FB_LOGQ_LATE_MS 2000
size_t fb_logq_drain(struct fb_logq *q, const struct fb_logger *to, uint64_t now_ms);

#endif
