/* flowmq-bridge: a staging file in front of the spool's "out" queue (two of them make the staging
 * channel, chan.h).
 *
 * A capture on the broker thread must be on its way to disk before the broker acknowledges the
 * message, and must survive kill -9. A RocksDB put does that with one WAL write(2) per message and
 * some 12,000 instructions. The staging area does the same with a memcpy: it is a file mapped
 * MAP_SHARED, so what is copied into it is in the kernel's page cache at once and outlives the
 * process. The spool moves staged records into RocksDB in batches in the link process (one WAL
 * write for many records) and before anything reads, deletes or syncs the queue, so RocksDB stays
 * the single source of truth for everything but the newest few records.
 *
 * Layout: records one after the other from the start of the file:
 *   u32 length, u32 CRC-32C (of seq, length and value), u64 seq, value, zero padding to 8 bytes,
 * all little endian, with consecutive seqs. Recovery checks every record on its own (length,
 * CRC) and walks all of the file: past a damaged record it looks for the next valid one at each
 * 8-byte boundary, so damage loses only the records it hit. fb_stage_clear() zeroes the first
 * record only; the old records behind it are told apart by their seqs, which are never above
 * those of a newer fill (recovery takes only seqs above the previous record's and at least the
 * caller's lower bound, the first seq not yet settled).
 *
 * Power loss: the page cache reaches the disk when the kernel writes it back or the spool syncs;
 * a torn record fails its CRC and is skipped.
 *
 * Thread safety: none; each process has its own mapping (the writer's, the reader's) and its
 * user serialises the calls on it (see chan.c, spool.c).
 */
#ifndef FB_STAGE_H
#define FB_STAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fb_stage;

/* Maps (creating it if needed) the staging file PATH of SIZE bytes (a multiple of 8, at least
 * 4096). An existing file of another size is recovered as it is and resized by fb_stage_reset().
 * Returns 0 or a negative errno. Caller closes with fb_stage_close(). */
int fb_stage_open(const char *path, size_t size, struct fb_stage **out);

/* Reads the staging file PATH as it is now into memory, for fb_stage_recover() (and
 * fb_stage_close()) only: nothing is created or written, and a writer that goes on appending or
 * empties the file meanwhile does not change the copy. A missing file reads as an empty one.
 * Returns 0 or a negative errno. Caller closes with fb_stage_close(). Any thread. */
int fb_stage_open_copy(const char *path, struct fb_stage **out);

/* Unmaps and closes. Accepts NULL. Records still staged stay in the file for the next open. */
void fb_stage_close(struct fb_stage *st);

/* The largest value fb_stage_append() can ever take. */
size_t fb_stage_max_value(const struct fb_stage *st);

/* What fb_stage_recover() skipped between two records it took: damage. */
struct fb_stage_damage {
	size_t regions;    /* runs of bytes that are no valid record, each followed by one */
	size_t first_off;  /* byte offset where the first of them starts */
	size_t bytes;      /* their bytes */
};

/* Calls FN for every valid record found in the file whose seq is at least LO and above the
 * previous one's, in order, skipping damaged and older records; stops when FN returns non-zero
 * and returns that, else 0. Fills DMG (may be NULL). For recovery after open. */
typedef int (*fb_stage_visit_fn)(void *ud, uint64_t seq, const void *val, size_t len);
int fb_stage_recover(struct fb_stage *st, uint64_t lo, fb_stage_visit_fn fn, void *ud,
		struct fb_stage_damage *dmg);

/* Empties the file (all of it, and gives it its configured size). Returns 0 or a negative errno. */
int fb_stage_reset(struct fb_stage *st);

/* Copies one record in. Returns 0, -ENOSPC when the file is full (settle, clear, try again), or
 * -E2BIG when LEN exceeds fb_stage_max_value(). */
int fb_stage_append(struct fb_stage *st, uint64_t seq, const void *val, size_t len);

/* Records appended since the last clear. */
size_t fb_stage_count(const struct fb_stage *st);

/* The records are in RocksDB (or gone): empties the file. */
void fb_stage_clear(struct fb_stage *st);

/* True when the file's first record header is zeroed, as fb_stage_clear() leaves it (through any
 * mapping of the file). */
bool fb_stage_cleared(const struct fb_stage *st);

/* For a second mapping of a file another process appends to: takes the records after those this
 * one knows, until it knows COUNT (the writer's fb_stage_count(), published after the copy),
 * calling FN (may be NULL) for each new one. Returns 0, FN's non-zero value, or -EIO when the
 * file does not hold COUNT records. */
int fb_stage_follow(struct fb_stage *st, size_t count, fb_stage_visit_fn fn, void *ud);

/* Writes the file's dirty pages to the disk (fdatasync). Returns 0 or a negative errno. */
int fb_stage_sync(struct fb_stage *st);

/* Bytes of the records this mapping knows (appended or followed), and the file's size. */
size_t fb_stage_used(const struct fb_stage *st);
size_t fb_stage_size(const struct fb_stage *st);

/* Calls FN for each record this mapping knows (appended or followed since the last clear) from
 * byte offset OFF on (0, or a record boundary at or below fb_stage_used()), in order; returns like
 * fb_stage_recover(). */
int fb_stage_each_from(struct fb_stage *st, size_t off, fb_stage_visit_fn fn, void *ud);

/* A record above a quarter of a staging file (chan.h) or too large for the cloud-to-edge ring
 * travels in a file of its own. fb_file_write() writes LEN bytes of BUF to PATH (replacing a file
 * there), fdatasyncs it with SYNC, and leaves nothing at PATH when it fails. fb_file_read() reads all of PATH into *BUF
 * (of *CAP bytes, grown with realloc() as needed) and sets *LEN. Both return 0 or a negative
 * errno. */
int fb_file_write(const char *path, const void *buf, size_t len, bool sync);
int fb_file_read(const char *path, uint8_t **buf, size_t *cap, size_t *len);

/* CRC-32C (Castagnoli) of BUF, continuing from CRC (0 to start). Exposed for the tests. */
uint32_t fb_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
