/* flowmq-bridge: the status file, a small text file next to the spool folder that the link process
 * rewrites every status_interval and `flowmq-bridge health` reads (either process, any thread).
 *
 * It lets a health check (Docker's HEALTHCHECK, a monitoring agent) tell whether the bridge is
 * connected without a connection to the broker. The file is SPOOL-status (spool.path plus
 * "-status"): beside the spool folder, not in it, so the spool's own files stay exactly the
 * spool's. It is replaced whole (a new file renamed over the old one): a reader sees one version.
 *
 *   flowmq-bridge-status 1
 *   updated_ms 1764434000123      wall clock of this version
 *   interval_ms 10000             status_interval: the next version is due by then
 *   pid 4242                      the link process
 *   state connected               connected | connecting | disconnected
 *   since_ms 1764433000000        since when connected (state connected) or not connected (also
 *                                 across restarts of the link process)
 *   endpoint mqtts://cloud.example:8883
 *   last_error connection refused
 */
#ifndef FB_STATUSFILE_H
#define FB_STATUSFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FB_STATUSFILE_MAGIC "flowmq-bridge-status 1"

struct fb_statusfile {
	uint64_t updated_ms;
	uint64_t interval_ms;
	pid_t pid;
	char state[16];
	uint64_t since_ms;
	char endpoint[256];
	char last_error[256];
};

/* The status file of the spool at SPOOL_PATH (caller frees), or NULL when out of memory. */
char *fb_statusfile_path(const char *spool_path);

/* Replaces the file PATH with ST (PATH.tmp, then rename). Returns 0 or a negative errno. Link
 * process, main thread. */
int fb_statusfile_write(const char *path, const struct fb_statusfile *st);

/* Reads PATH into *ST. Returns 0, a negative errno when it cannot be read, or -EPROTO when it is not
 * a status file of this format. Any process. */
int fb_statusfile_read(const char *path, struct fb_statusfile *st);

/* Whether the bridge is healthy at NOW_MS given ST: connected, or not connected for less than
 * MAX_DOWN_MS. A file not refreshed for two intervals and 10 s means a link process that is not
 * running (or hangs): the bridge counts as not connected since the last refresh. Writes one line
 * saying why into WHY (SIZE bytes). Returns true when healthy. Any thread. */
bool fb_statusfile_healthy(const struct fb_statusfile *st, uint64_t now_ms, uint64_t max_down_ms,
		char *why, size_t size);

#endif
