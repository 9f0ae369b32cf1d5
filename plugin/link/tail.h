/* flowmq-bridge: the in-memory tail of spool "out".
 *
 * Every record the worker takes from the staging channel into spool "out" (fb_spool_ingest()) is
 * also queued here, with its sequence number, as long as the queue holds less than its byte
 * budget. A worker that keeps up with the
 * edge takes records from here instead of reading them back from RocksDB; whenever the next record
 * it needs is not at the head (after a reconnect, or after the budget was exceeded) it reads the
 * spool, which stays the only source of truth. The tail is a cache: losing it loses nothing.
 *
 * Thread safety: none; only the worker thread uses it.
 */
#ifndef FB_TAIL_H
#define FB_TAIL_H

#include <stddef.h>
#include <stdint.h>

/* A record in the ring, as fb_tail_take_next() shows it. */
struct fb_tail_rec {
	uint64_t seq;
	uint32_t len;  /* UINT32_MAX: not a record, the ring goes on at its start */
	uint32_t pad;
	uint8_t val[]; /* the record as stored in the spool */
};

/* The records live in one ring of BUDGET bytes (allocated at the first push): no allocation per
 * record. The worker takes one record at a time and releases it when done. */
struct fb_tail {
	uint8_t *ring;
	size_t budget;
	size_t head;       /* offset of the oldest record */
	size_t tail;       /* offset of the next push */
	size_t used;       /* bytes from head to tail, a skipped end of the ring included */
	size_t taken;      /* bytes of the record taken and not released yet */
	uint64_t last_seq; /* newest record offered to fb_tail_push(), queued or not */
};

/* LAST_SEQ: the newest seq already in spool "out" when the tail starts. */
void fb_tail_init(struct fb_tail *t, size_t budget, uint64_t last_seq);
void fb_tail_cleanup(struct fb_tail *t);

/* Queues a copy of record SEQ; skipped (returns -ENOBUFS) when the ring has no room for it or
 * memory is short. */
int fb_tail_push(struct fb_tail *t, uint64_t seq, const void *val, size_t len);

/* Drops every record with seq <= UPTO, then takes the oldest if its seq is UPTO + 1; NULL
 * otherwise (the caller reads the spool). A taken record stays valid until fb_tail_release(),
 * which must come before the next take. */
struct fb_tail_rec *fb_tail_take_next(struct fb_tail *t, uint64_t upto);

/* The oldest record queued, without taking it (valid until the next call on T); NULL when there
 * is none or one is taken. For a worker that sends by lane, which drops it with fb_tail_drop()
 * once it is sent or known to be sent. */
struct fb_tail_rec *fb_tail_peek(struct fb_tail *t);

/* Drops the oldest record (nothing when a record is taken). */
void fb_tail_drop(struct fb_tail *t);

/* Frees the room of the record taken last. */
void fb_tail_release(struct fb_tail *t);

/* The newest seq offered so far: a worker whose cursor has reached it has nothing left to read
 * in the spool until the next fb_tail_push(). */
uint64_t fb_tail_last(struct fb_tail *t);

#endif
