/* flowmq-bridge: the operator's requests to a running link process (ipc/request.h): requeue-dead
 * and purge-dead on the spool it holds. flowmq-link's main thread; fb_control_requeued() also in
 * the flowmq-bridge command (the same change on a stopped spool).
 *
 * purge-dead deletes the dead letters the spool held when the request came, in batches.
 * requeue-dead cannot append to "out" itself (the broker thread is the only writer of the staging
 * channel, whose seqs it numbers): it puts each dead letter, as fb_control_requeued() makes it,
 * into the requeue ring of the shared region (shared.h); the broker thread stages it like a
 * capture, in order, and moves the ring's head past it; once the head is past, this syncs the
 * staging files and the WAL and deletes the dead letter. At most REQUEUE_WINDOW dead letters are
 * in the ring at a time. The ring (in the shared region) outlives a link process that ends: the
 * entries whose dead letters it had not deleted yet stay untouched (fb_c2e_put_kept(), from the
 * ring's RELEASED), and the next link process deletes those the broker staged meanwhile and the
 * rest once staged, so that a later requeue-dead does not send them again. A crash of the machine
 * in between may send a dead letter twice, never loses one.
 *
 * A dead letter larger than half the ring travels in a file of its own in the spool folder. When
 * that file is gone (deleted, lost to a disk error) the broker thread cannot stage it and the ring
 * stands still behind it; once its head has stood still on it for a second, fb_control_turn()
 * writes the file again from "dead" (or, when "dead" no longer holds it, withdraws the entry), so
 * that it is staged in its place, once, and the request ends.
 *
 * The reply goes when the request is done, or after 10 s without progress (the staging channel
 * has no room: spool.max_size reached with on_full reject or drop_new, or the link process is
 * behind): it then says how many wait, and the rest is queued as room comes.
 */
#ifndef FB_CONTROL_H
#define FB_CONTROL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "c2e.h"
#include "log.h"
#include "spool.h"

struct fb_control;

struct fb_control_deps {
	const char *spool_path;
	struct fb_spool *spool;
	struct fb_c2e *ring;                  /* the requeue ring in the shared region */
	uint64_t max_size;                    /* spool.max_size (0: unbounded) */
	atomic_uint_fast64_t *max_live;       /* the staging channel's bound for records (chan.h) */
	void (*wake)(void *ud);               /* wakes the broker thread */
	void *wake_ud;
	const struct fb_logger *lg;
};

/* Starts answering requests; answers one that a previous link process claimed and left (as
 * interrupted). Returns 0 or -ENOMEM. Caller closes with fb_control_close(). */
int fb_control_open(const struct fb_control_deps *deps, struct fb_control **out);

/* Claims a pending request or goes on with the one in progress, and writes again the file of a
 * dead letter the requeue ring stands still on (also one an earlier link process put there).
 * Returns true while a request is in progress (call again soon), false when idle. */
bool fb_control_turn(struct fb_control *c);

/* Answers a request in progress as interrupted (after one last look at what the broker staged)
 * and frees C. Accepts NULL. */
void fb_control_close(struct fb_control *c);

/* The record dead letter VAL (LEN bytes) becomes when queued again: without its reason property,
 * captured now (spool.ttl counts from the requeue; an absolute expiry stays); an unreadable one as
 * it is. Returns it (caller frees) with *OUT_LEN, or NULL when out of memory. Any thread. */
uint8_t *fb_control_requeued(const uint8_t *val, size_t len, size_t *out_len);

#endif
