/* flowmq-bridge: the in-memory tail of spool "out".
 *
 * Every record the broker thread appends to spool "out" is also queued here, with its sequence
 * number, as long as the queue holds less than its byte budget. A worker that keeps up with the
 * edge takes records from here instead of reading them back from RocksDB; whenever the next record
 * it needs is not at the head (after a reconnect, or after the budget was exceeded) it reads the
 * spool, which stays the only source of truth. The tail is a cache: losing it loses nothing.
 */
#ifndef FB_TAIL_H
#define FB_TAIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct fb_tail_rec {
	struct fb_tail_rec *next;
	uint64_t seq;
	size_t len;
	uint8_t val[]; /* the record as stored in the spool */
};

struct fb_tail {
	pthread_mutex_t lock;
	struct fb_tail_rec *head, **tail;
	size_t bytes, budget;
	uint64_t last_seq; /* newest record offered to fb_tail_push(), queued or not */
};

/* LAST_SEQ: the newest seq already in spool "out" when the tail starts. */
void fb_tail_init(struct fb_tail *t, size_t budget, uint64_t last_seq);
void fb_tail_cleanup(struct fb_tail *t);

/* Queues a copy of record SEQ; skipped (returns -ENOBUFS) when the budget is used up or memory
 * is short. Broker thread. */
int fb_tail_push(struct fb_tail *t, uint64_t seq, const void *val, size_t len);

/* Drops every record with seq <= UPTO, then takes the head if its seq is UPTO + 1 (caller frees
 * it with free()); NULL otherwise: the caller reads the spool. Worker thread. */
struct fb_tail_rec *fb_tail_take_next(struct fb_tail *t, uint64_t upto);

/* The newest seq offered so far: a worker whose cursor has reached it has nothing left to read
 * in the spool until the next fb_tail_push(). Worker thread. */
uint64_t fb_tail_last(struct fb_tail *t);

#endif
