/* flowmq-bridge: the cloud session, a worker thread of the link process that owns one libmosquitto
 * client.
 *
 * The worker runs its own poll loop over the client's socket and an eventfd (new spool data,
 * shutdown). It reads spool "out" in order, keeps up to max_inflight messages in flight, deletes a
 * record on PUBACK/PUBCOMP, and after any reconnect resends from the oldest record still in the
 * spool. Nothing jams the queue: a record goes to dead letters (with its reason) on a reason code
 * >= 0x80, when it is larger than the cloud's Maximum Packet Size (0x95, never sent), or when the
 * connection broke cloud.poison_after times (default 3) in a row while it was in flight at the head,
 * without any acknowledgement. Such a connection also counts as a failed attempt for the
 * reconnect back-off. Records pending on a live connection without any acknowledgement for two
 * keepalive periods mean a fresh connection (counted in stalls). Cloud messages on the
 * cloud_to_edge subscriptions are written to spool "in" before they are acknowledged and handed to
 * the broker thread (ipc/c2e.h).
 */
#ifndef FB_SESSION_H
#define FB_SESSION_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "counters.h"
#include "log.h"
#include "route.h"
#include "spool.h"
#include "status.h"
#include "tail.h"

struct fb_session;

/* The user property a dead letter carries: "0x95 <why>", the MQTT reason code (>= 0x80) and the
 * reason in words. Added to the record's properties when it moves to spool "dead". */
#define FB_DEAD_REASON_PROPERTY "flowmq-dead-reason"


struct fb_session_deps {
	const struct fb_config *cfg;
	const struct fb_routes *routes; /* cloud_to_edge lookups */
	struct fb_spool *spool;         /* its staging channel's writer is the broker thread */
	struct fb_counters *ctr;
	struct fb_tail *tail;           /* recent spool "out" records, to skip reading them back */
	/* Wakes the broker thread (cloud messages to inject); called from the worker thread. */
	void (*wake)(void *ud);
	void *wake_ud;
	const struct fb_logger *lg;
	/* Wake-ups from the channel's writer: an eventfd and the flag that says a write to it is
	 * pending (fb_waker_notify()). */
	int efd;
	atomic_bool *notified;
	/* Cloud to edge: C2E_PUSH hands record SEQ of spool "in" to the broker (0), or leaves it for
	 * later (-ENOBUFS); C2E_PENDING hands over what waits, deletes what the broker has injected,
	 * and returns how many messages the broker has not taken yet. Worker thread. */
	int (*c2e_push)(void *ud, uint64_t seq, const void *rec, size_t len);
	size_t (*c2e_pending)(void *ud);
	void *c2e_ud;
	/* The broker thread (a single-threaded broker's pid) that a backlog gives way to while it
	 * waits for a CPU (yield.h); 0: none. */
	pid_t broker_pid;
};

/* Starts the worker. D and everything it points to must outlive the link. Returns 0 or -errno.
 * Link process, its main thread. */
int fb_session_start(const struct fb_session_deps *d, struct fb_session **out);

/* Stops the worker (orderly MQTT disconnect, nothing in the spool is lost) and frees the link.
 * Accepts NULL. Link process, its main thread. */
void fb_session_stop(struct fb_session *l);

/* Copies the current state. Any thread. */
void fb_session_status(struct fb_session *l, struct fb_link_status *st);

#endif
