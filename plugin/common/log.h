/* flowmq-bridge: logging shared by every module.
 *
 * Modules never print: they call fb_log() with a MOSQ_LOG_* level. The plugin routes the lines to
 * mosquitto_log_printf(), the CLI to stderr, and tests capture them to assert the exact text.
 *
 * The link process must not call mosquitto_log_printf() itself: it is a fork of the broker, and
 * Mosquitto 2.0.11 stamps each line with the broker's cached clock (db.now_real_s), which only the
 * broker's main loop advances, so every line would carry the time of the fork. Its lines travel to
 * the broker thread through a fb_logq in shared memory instead, and the broker logs them at its
 * next tick with the right time.
 */
#ifndef FB_LOG_H
#define FB_LOG_H

#include <stddef.h>
#include <stdint.h>

#include <mosquitto.h> /* MOSQ_LOG_* levels */

typedef void (*fb_log_fn)(void *ud, int level, const char *line);

struct fb_logger {
	fb_log_fn fn; /* NULL: drop every line */
	void *ud;
};

/* Formats one line and hands it to lg->fn. lg may be NULL. Any thread. */
void fb_log(const struct fb_logger *lg, int level, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* A queue of log lines from the link process to the broker thread, in memory shared across
 * fork(). Lines longer than FB_LOGQ_LINE_MAX bytes are cut; when the queue is full, lines are
 * dropped and counted, and the next drain says how many. */
#define FB_LOGQ_LINE_MAX 1023

struct fb_logq;

/* Creates a queue (anonymous MAP_SHARED memory, so create it before forking). Returns 0 or a
 * negative errno. The caller frees it with fb_logq_free(). Broker thread. */
int fb_logq_new(struct fb_logq **out);

/* Accepts NULL. Broker thread, once no other process writes to it. */
void fb_logq_free(struct fb_logq *q);

/* Queues LINE at LEVEL with the current time; never blocks on the reader (a full queue drops the
 * line). Q may be NULL (the line is dropped). Any thread of the writing process (the writers of
 * one process take turns on a mutex of that process); one writing process at a time. */
void fb_logq_push(struct fb_logq *q, int level, const char *line);

/* Hands every queued line to TO, oldest first. A line written FB_LOGQ_LATE_MS or more before
 * NOW_MS (wall clock, ms since the epoch) gets " (logged by the link process N s earlier)"
 * appended, so that a late line still tells when it happened. Returns the number of lines handed
 * over. Broker thread (the only reader). */
#define FB_LOGQ_LATE_MS 2000
size_t fb_logq_drain(struct fb_logq *q, const struct fb_logger *to, uint64_t now_ms);

#endif
