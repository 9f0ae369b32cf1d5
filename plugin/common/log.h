/* flowmq-bridge: logging shared by every module (both programs and the CLI, any thread).
 *
 * Modules never print: they call fb_log() with a MOSQ_LOG_* level. The plugin routes the lines to
 * mosquitto_log_printf(), the CLI to stderr, and tests capture them to assert the exact text. The
 * link process never calls the broker API: its logger queues the lines in the shared region
 * (ipc/logq.h) and the broker thread logs them.
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

#endif
