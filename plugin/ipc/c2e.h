/* flowmq-bridge: the cloud-to-edge ring in the shared region (both processes).
 *
 * Every mosquitto_broker_* call must run in the broker thread, so the link process's worker
 * writes each cloud message, once it is durable in spool "in", into this ring (fb_c2e_put()) and
 * wakes the broker (waker.h); the broker's tick reads the records (fb_c2e_next()/fb_c2e_consume()),
 * injects them, and one tick later publishes the newest seq it injected as RELEASED, after which
 * the link process deletes them from spool "in". A crash of either side in between injects a
 * message again rather than lose it.
 *
 * Layout: records of u64 seq, u32 length, u32 flags, the record, padding to 8 bytes, written at
 * TAIL and read at HEAD (byte counts, never wrapped; the position is the count modulo the size).
 * A record that does not fit at the end of the ring starts again at its beginning; one larger than
 * half the ring is written to a file of its own in the spool folder (STEM followed by its seq)
 * and the ring carries only its seq (flag FB_C2E_FILE).
 *
 * The same ring type carries the dead letters that `spool requeue-dead` sends again through a
 * running bridge (shared.h: requeue): the link process puts them in, the broker thread stages
 * them like captures and consumes them; HEAD tells the link process which are staged. There the
 * link process also writes again the file of a record the broker thread stands still on because
 * the file is gone, or withdraws the entry (fb_c2e_head_file(), fb_c2e_write_file(),
 * fb_c2e_withdraw(); control.c).
 */
#ifndef FB_C2E_H
#define FB_C2E_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FB_C2E_RING (8u << 20)
/* The names of the files of records too large for the ring: STEM + seq, in the spool folder. */
#define FB_C2E_STEM "flowmq-c2e-"
#define FB_REQUEUE_STEM "flowmq-requeue-"

struct fb_c2e {
	atomic_uint_fast64_t head;     /* broker thread */
	atomic_uint_fast64_t tail;     /* link process */
	atomic_uint_fast64_t pushed;   /* link process: newest "in" seq in the ring */
	/* The cloud-to-edge ring: the broker thread's newest "in" seq injected and taken by the broker.
	 * The requeue ring: the link process's position up to which the dead letters staged are
	 * deleted from spool "dead" (an entry's end; the broker thread sets it to the head when it
	 * drops the ring's entries unstaged). */
	atomic_uint_fast64_t released;
	uint8_t ring[FB_C2E_RING];
};

/* Writes record SEQ of spool "in" (REC, LEN bytes) into R; a large one goes to a file in DIR (the
 * spool folder). Returns 0, -ENOBUFS when it has no room now, or the negative errno of writing
 * that file (a full disk: -ENOSPC). Link process, its worker. */
int fb_c2e_put(struct fb_c2e *r, const char *dir, const char *stem, uint64_t seq, const void *rec, size_t len);

/* Like fb_c2e_put(), but the room starts at KEPT (at or behind the head) rather than at the head:
 * the entries from KEPT on stay as they are, read or not. The requeue ring's writer keeps those
 * whose dead letters it has not deleted yet (control.c: R->released). */
int fb_c2e_put_kept(struct fb_c2e *r, uint64_t kept, const char *dir, const char *stem, uint64_t seq,
		const void *rec, size_t len);

/* Writes record SEQ (REC, LEN bytes) to its file of its own (STEM + seq in DIR), replacing one
 * there: aside first (".new"), then renamed into place, so that a reader sees the whole old file
 * or the whole new one, never a part. fb_c2e_put() uses it, and the link process writes again
 * the file of a requeued dead letter that went missing (control.c). Returns 0 or a negative errno
 * (nothing is left at ".new"). Link process. */
int fb_c2e_write_file(const char *dir, const char *stem, uint64_t seq, const void *rec, size_t len);

/* Withdraws the entry whose record travels in the file of SEQ (STEM + seq in DIR): the file is
 * left empty, so fb_c2e_next() returns an empty record for it, which no record of a file of its
 * own is, and the reader passes over it (bridge.c's requeue ring). For an entry whose record is
 * gone for good (control.c: a dead letter no longer in spool "dead"), which would otherwise hold
 * up everything behind it. Returns 0 or a negative errno. Link process. */
int fb_c2e_withdraw(const char *dir, const char *stem, uint64_t seq);

/* When the record at R's head (the oldest the reader has not consumed) travels in a file of its
 * own, returns 1 with its seq in *SEQ and the file's path in PATH (CAP bytes); 0 when R is empty
 * or that record is in the ring. The writer's look at what the reader is at. Link process. */
int fb_c2e_head_file(struct fb_c2e *r, const char *dir, const char *stem, uint64_t *seq, char *path, size_t cap);

/* Calls FN(UD, seq, end) for each entry of R from position FROM (where an entry starts, at or
 * behind the head, kept by fb_c2e_put_kept()) to the tail, oldest first; END is where the entry
 * ends (the reader has consumed it once the head is there). Stops when FN returns non-zero. The
 * writer's look at its entries (a link process that started takes over what an earlier one put
 * in: control.c). Link process. */
typedef int (*fb_c2e_walk_fn)(void *ud, uint64_t seq, uint64_t end);
void fb_c2e_walk(struct fb_c2e *r, uint64_t from, fb_c2e_walk_fn fn, void *ud);

/* True while R holds records the broker has not read. Either process. */
static inline int fb_c2e_waiting(struct fb_c2e *r)
{
	return atomic_load_explicit(&r->tail, memory_order_acquire)
		!= atomic_load_explicit(&r->head, memory_order_acquire);
}

/* The reading side's own state (broker thread). */
struct fb_c2e_reader {
	uint64_t head;    /* where the next record starts */
	uint64_t next;    /* ... after the one fb_c2e_next() returned */
	uint8_t *file;    /* a record read from a file of its own */
	size_t file_cap;
	bool unlink;      /* ... whose file (PATH) goes once the record is consumed */
	int err;          /* 0, or why that file could not be read (a negative errno) */
	char path[4096];
};

/* Returns 1 with the next record of R in *SEQ, *REC and *LEN, or 0 when R is empty. REC stays
 * valid until fb_c2e_consume(). *REC is NULL when the record's file cannot be read: RD->err says
 * why and RD->path names the file. Called again without fb_c2e_consume(), it returns the same
 * record (and tries its file again): a caller that does not consume leaves the record and those
 * behind it where they are, its file kept. A withdrawn entry (fb_c2e_withdraw()) reads as an
 * empty record. Broker thread. */
int fb_c2e_next(struct fb_c2e *r, struct fb_c2e_reader *rd, const char *dir, const char *stem,
		uint64_t *seq, const uint8_t **rec, size_t *len);

/* Gives the room of the record fb_c2e_next() returned back to the writer. Broker thread. */
void fb_c2e_consume(struct fb_c2e *r, struct fb_c2e_reader *rd);

/* Drops every record R holds, unread: the files of large ones are removed, and the room goes back
 * to the writer. Returns how many it dropped. Broker thread, while no link process runs (one that
 * starts on a fresh channel pushes again all that spool "in" holds: see fb_inject_restart()). */
size_t fb_c2e_drop(struct fb_c2e *r, struct fb_c2e_reader *rd, const char *dir, const char *stem);

/* Frees what RD holds. */
void fb_c2e_reader_cleanup(struct fb_c2e_reader *rd);

#endif
