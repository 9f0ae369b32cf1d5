/* flowmq-bridge: the running bridge, one per loaded plugin instance (broker process, broker
 * thread).
 *
 * The broker process keeps only what its callbacks need: the configuration and compiled routes,
 * the writing end of the staging channel (ipc/chan.h) and the reading end of the cloud-to-edge
 * ring (inject.h); it never starts a thread, so the broker stays a single-threaded process (glibc
 * then skips its locking in malloc and in every system call wrapper, some 340 instructions per
 * message). fb_bridge_start() starts the link process (the flowmq-link program, link/), which opens the spool (RocksDB and
 * its threads), runs the worker that owns the cloud connection, and fills the status snapshot.
 * They share one region (ipc/shared.h: the contract) and an eventfd. The link process dies with
 * the broker (PR_SET_PDEATHSIG), ignores the broker's signals, stops when fb_bridge_stop() asks,
 * and is supervised by the tick: restarted when it ends, killed and restarted when it hangs; what
 * it had not sent is in the staging files or the spool.
 *
 * plugin.c only translates between Mosquitto's callbacks and these functions; the tests and the
 * capture microbenchmark drive them directly.
 */
#ifndef FB_BRIDGE_H
#define FB_BRIDGE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <mosquitto.h>

#include "config.h"
#include "counters.h"
#include "log.h"

struct fb_bridge;

/* Hooks into the host broker, so that the bridge can run inside Mosquitto (plugin.c) or in a test
 * without one. */
struct fb_host {
	/* Publishes into the local broker; takes ownership of payload (malloc'd) and props on success,
	 * like mosquitto_broker_publish(). Returns 0 or a negative errno. Broker thread. */
	int (*publish)(void *ud, const char *topic, int payloadlen, void *payload, int qos, bool retain,
			mosquitto_property *props);
	void *ud;
	/* The signal the link process sends to this process to wake the broker thread (ipc/waker.h);
	 * 0: none. */
	int wake_signo;
	/* The flowmq-link program to start (must outlive the bridge). */
	const char *link_program;
};

/* Loads CONFIG_FILE and starts the link process, which opens the spool and connects to the cloud.
 * Init is a straight line; any failure unwinds through fb_bridge_stop(). Returns 0 or a negative
 * errno (the reason has been logged). Broker thread. */
int fb_bridge_start(const char *config_file, const struct fb_logger *lg, const struct fb_host *host,
		struct fb_bridge **out);

/* Stops the worker, closes the connection and the spool. Accepts NULL. Broker thread. */
void fb_bridge_stop(struct fb_bridge *b);

/* fb_bridge_capture() found a rule for the topic (the message was spooled, or dropped by the rule
 * or by on_full). */
#define FB_BRIDGE_MATCHED 1

/* fb_bridge_capture(): the message is staged, but the staging file's sync failed (spool.sync:
 * always): it goes to the cloud, and the publisher must be refused all the same (< 0). */
#define FB_BRIDGE_UNSYNCED (-4096)

/* The MOSQ_EVT_MESSAGE hot path: route TOPIC and spool it. Returns 0 (no rule matched),
 * FB_BRIDGE_MATCHED (spooled, or dropped by a rule or by on_full: drop_new), FB_BRIDGE_UNSYNCED,
 * or a negative errno when it is not spooled: -ENOSPC when the spool refuses it with on_full:
 * reject, or an error (the publisher must see 0x87 for any of the three). Broker thread. */
int fb_bridge_capture(struct fb_bridge *b, const char *topic, const void *payload, uint32_t payloadlen,
		const mosquitto_property *props, int qos, bool retain);

/* MOSQ_EVT_TICK: injects cloud messages handed over by the worker, looks after the link process
 * and publishes status when NOW_S (seconds of a monotonic clock, never the wall clock, which can
 * be set back) has reached the next time for it. Broker thread. */
void fb_bridge_tick(struct fb_bridge *b, uint64_t now_s);

/* MOSQ_EVT_RELOAD: re-reads the configuration and swaps the routes. Returns 0 or a negative errno
 * (the old routes stay). Broker thread. */
int fb_bridge_reload(struct fb_bridge *b);

/* The configuration the captures use now (it changes at a reload; valid until the next
 * fb_bridge_reload() or fb_bridge_stop()). Broker thread. */
const struct fb_config *fb_bridge_config(const struct fb_bridge *b);

/* The counters in shared memory, valid until fb_bridge_stop(). Any thread of the broker process. */
struct fb_counters *fb_bridge_counters(struct fb_bridge *b);

#endif
