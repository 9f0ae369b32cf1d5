/* flowmq-bridge: injection of cloud messages into the local broker (broker process, broker thread).
 *
 * The link process hands cloud messages, once durable in spool "in", over through the
 * cloud-to-edge ring (ipc/c2e.h). Every tick, fb_inject_run() builds an fb_inmsg from each record
 * (up to a budget) and publishes it with the host's publish hook (mosquitto_broker_publish()).
 * That call only queues a message; the broker takes it into its own structures at the start of
 * its next loop iteration, before the next tick. So a message is released (fb_inject_release():
 * the link process may delete it from spool "in") one tick after it was injected: a crash in
 * between injects it again rather than lose it.
 */
#ifndef FB_INJECT_H
#define FB_INJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mosquitto.h>

#include "bridge.h"
#include "c2e.h"
#include "counters.h"
#include "log.h"

struct fb_inmsg {
	uint64_t seq;        /* record in spool "in" */
	size_t reclen;       /* its value length, for the spool accounting */
	char *topic;         /* local topic (rewritten) */
	void *payload;       /* malloc'd, may be NULL when payloadlen is 0 */
	int payloadlen;
	int qos;
	bool retain;
	mosquitto_property *props;
	uint64_t expiry_ms;  /* wall clock, 0: never */
};

/* Builds a message from a spool "in" record (record.h) into *OUT, copying what it needs. Returns
 * 0, -EINVAL when the record is malformed (a bad length, flag or property), or -ENOMEM when memory
 * is short (a try later may succeed); *OUT is NULL then. The caller frees *OUT with
 * fb_inmsg_free(). Any thread. */
int fb_inmsg_from_record(uint64_t seq, const void *val, size_t len, struct fb_inmsg **out);

/* Frees a message and everything it still owns. Accepts NULL. */
void fb_inmsg_free(struct fb_inmsg *m);

/* The injecting side's state. */
struct fb_inject {
	struct fb_c2e *ring;
	struct fb_c2e_reader rd;
	const char *dir;          /* the spool folder (records too large for the ring) */
	const struct fb_host *host;
	struct fb_counters *ctr;
	const struct fb_logger *lg;
	uint64_t injected;        /* newest "in" seq injected at the last tick */
	uint64_t released;        /* ... and the newest published as released */
	bool waiting;             /* the record at the ring's head failed for a passing reason: */
	uint64_t wait_seq;        /* ... its seq, */
	uint64_t wait_since_ms;   /* ... since when (fb_mono_ms()), */
	uint64_t retry_ms;        /* ... and no try again before this */
};

/* At most this many messages are injected per tick, and no more once they come to
 * FB_INJECT_BYTES (the first is always taken, however large): each is read (a large one from its
 * file), copied into the message and copied again by the broker, on the broker thread. While more
 * wait in the ring, the link process wakes the broker again every FB_WAKER_REWAKE_MS (waker.h),
 * and a busy broker ticks every loop turn anyway. */
#define FB_INJECT_BUDGET 256
#define FB_INJECT_BYTES (8u << 20)

/* A record that cannot be read or built now for lack of descriptors or memory (see
 * fb_inject_run()) is tried again at most this often. */
#define FB_INJECT_RETRY_MS 100

/* Injects the messages in the ring, in order, at most FB_INJECT_BUDGET and FB_INJECT_BYTES. Returns how many records
 * it took (injected, expired, or malformed or unreadable and counted in c2e_dropped). A record
 * whose file cannot be read, or which cannot be built, for a reason that passes (EMFILE, ENFILE,
 * ENOMEM, EINTR, EAGAIN) is not taken: it stays at the ring's head with every record behind it,
 * is not released, and is tried again at the first call FB_INJECT_RETRY_MS later (logged once at
 * ERR when it starts to wait, at NOTICE when it is taken). Broker thread. */
unsigned fb_inject_run(struct fb_inject *in);

/* Publishes what the last fb_inject_run() injected as released. Broker thread. */
void fb_inject_release(struct fb_inject *in);

/* A link process is about to start on a fresh channel (none runs): it may salvage spool "in" into
 * a fresh spool, numbered from 1 again, and pushes again every record "in" holds. So the records
 * still in the ring are dropped (their files removed; "in" still holds them: the bridge injects
 * what the ring holds first, so these are only a record that waits for descriptors or memory and
 * those behind it), and this side starts again at seq 0. The ring's RELEASED stays for that link
 * process, which leaves what was released out of a salvage (link/spool.h: in_injected) and sets
 * the marks to 0 before it opens the spool. Call it once the last fb_inject_run() is released.
 * Returns how many records it dropped. Broker thread. */
size_t fb_inject_restart(struct fb_inject *in);

/* Frees what IN holds (not the ring). */
void fb_inject_cleanup(struct fb_inject *in);

#endif
