/* flowmq-bridge: the staging channel, from the broker thread to the spool in the link process.
 *
 * The broker thread (the writer) copies every captured record into one of two staging files
 * (stage.h) in the spool folder; the spool (the reader, in the link process) takes the records
 * from there, settles the ones still unacknowledged into RocksDB in batches and empties the file.
 * Both map the same files MAP_SHARED, so a record is in the page cache, and survives kill -9 of
 * either process, as soon as the writer's copy ends. The state of the two files is kept in struct
 * fb_chan_shared, in memory both processes share:
 *
 *   FREE     empty; the writer may switch to it
 *   WRITING  the writer appends to it (exactly one file is WRITING)
 *   SEALED   the writer has switched away from it; the reader empties it once every record in it
 *            is settled or acknowledged, and marks it FREE
 *
 * The writer switches when its file is full, or early (past half of it) when the other one is
 * FREE. When both are in use it returns -EBUSY and the caller waits for the reader.
 *
 * A record larger than a quarter of a staging file goes into a file of its own (flowmq-big-<seq>),
 * written before a small pointer record is staged in its place; the reader reads it back and
 * removes it once the record is settled or gone.
 *
 * Writer and reader publish their positions with a sequence lock each (one writer per lock), so
 * the other side always reads a consistent snapshot. The writer's limit check (max_size) uses the
 * bytes the reader holds live plus those appended since the reader's last take.
 */
#ifndef FB_CHAN_H
#define FB_CHAN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "stage.h"

enum fb_chan_state {
	FB_CHAN_FREE = 0,
	FB_CHAN_WRITING = 1,
	FB_CHAN_SEALED = 2,
};

/* A sequence lock over values in shared memory: one writer, odd while it writes; a reader copies
 * the values between fb_seq_read_begin() and fb_seq_read_again() and copies again while the
 * latter says so. A writer killed inside an update leaves the lock odd: its successor calls
 * fb_seq_writer_reset() before it writes. */
static inline void fb_seq_write_begin(atomic_uint *g)
{
	atomic_fetch_add_explicit(g, 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
}

static inline void fb_seq_write_end(atomic_uint *g)
{
	atomic_fetch_add_explicit(g, 1, memory_order_release);
}

static inline unsigned fb_seq_read_begin(atomic_uint *g)
{
	return atomic_load_explicit(g, memory_order_acquire);
}

static inline bool fb_seq_read_again(atomic_uint *g, unsigned start)
{
	atomic_thread_fence(memory_order_acquire);
	return (start & 1) || start != atomic_load_explicit(g, memory_order_relaxed);
}

static inline void fb_seq_writer_reset(atomic_uint *g)
{
	if(atomic_load(g) & 1){
		atomic_fetch_add(g, 1);
	}
}

/* How often a side re-reads the other side's sequence lock before it takes what it read. */
#define FB_CHAN_SPINS 100000
/* ... and the broker thread, before each capture's limit check: a reader stopped (SIGSTOP) inside
 * its update must not cost every capture a long spin. An update is a few stores. */
#define FB_CHAN_WRITER_SPINS 1000

/* Bytes a record counts in the spool's accounting beyond its value (the RocksDB key). */
#define FB_CHAN_KEY_LEN 8

/* In memory shared by writer and reader (MAP_SHARED), zeroed before either opens. */
struct fb_chan_shared {
	/* Writer side: under wgen. */
	atomic_uint wgen;
	atomic_uint active;
	atomic_uint state[2];
	atomic_uint_fast64_t count[2];  /* records published in each file */
	atomic_uint_fast64_t appended;  /* key + value bytes of every record appended, ever */
	/* Reader side: under rgen. */
	atomic_uint rgen;
	atomic_uint_fast64_t seen;      /* the writer's "appended" as of the reader's last take */
	atomic_uint_fast64_t live;      /* key + value bytes of the live records the reader holds */
	/* Set by the reader once the files are ready; the writer starts at next_seq. */
	atomic_uint ready;
	atomic_uint_fast64_t next_seq;
	/* Set by the reader before it opens the files (the spool sizes them from spool.max_size):
	 * the size of each staging file (0: FB_CHAN_FILE_SIZE) and the bytes of live records the
	 * writer's limit check allows (0: the writer's lim.max_size). */
	atomic_uint_fast64_t file_size;
	atomic_uint_fast64_t max_live;
};

/* Size of each staging file when fb_chan_shared.file_size is 0. */
#define FB_CHAN_FILE_SIZE (4u << 20)

/* ---- writer ---------------------------------------------------------------------------------- */

struct fb_chan_writer;

struct fb_chan_limits {
	uint64_t max_size;       /* 0: unbounded */
	enum fb_on_full on_full;
	bool sync;               /* fdatasync every append (spool.sync: always) */
};

/* Maps the staging files of spool folder DIR for appending. SH must be ready (a reader has
 * opened the channel). Returns 0 or a negative errno. */
int fb_chan_writer_open(const char *dir, struct fb_chan_shared *sh, const struct fb_chan_limits *lim,
		struct fb_chan_writer **out);

/* Accepts NULL. */
void fb_chan_writer_close(struct fb_chan_writer *w);

/* The lock of spool folder DIR (flock(2) on the folder), taken without waiting. The broker thread
 * holds it shared from the first time a link process has made the channel ready until the broker
 * stops, or until a link process hands the channel back to start it afresh (the folder may then be
 * moved aside and made anew); a process that opens the spool without a link process (the CLI, on
 * what looks like a stopped broker's spool) holds it exclusively while the spool is open, because
 * it may empty the staging files, and a broker that has them mapped would lose what it staged or
 * fault on the emptied pages. Returns the descriptor that holds the lock (closing it releases the
 * lock), -EBUSY when a process holds it the other way, or another negative errno. */
int fb_chan_lock(const char *dir, bool exclusive);

/* Appends one record. Returns 0 with *SEQ; -ENOSPC when it does not fit into max_size with
 * drop_new or reject (with drop_oldest it is accepted and the reader drops the oldest); -E2BIG
 * when it is larger than max_size on its own; -EBUSY when both files are in use (the reader must
 * empty one: try again); another negative errno when a file cannot be written (a large record's
 * own file, or the sync of spool.sync: always), which may be one of those three as well: -ENOSPC
 * for a full disk above all. fb_chan_write_failed() tells them apart. *SEQ is set only for a
 * record that was staged: with 0, and with the error of the sync, after which the record is
 * staged all the same (it goes to the cloud; it is not known to be on disk). */
int fb_chan_append(struct fb_chan_writer *w, const void *val, size_t len, uint64_t *seq);

/* After fb_chan_append() failed: true when a file could not be written (what it returned is the
 * write's errno), false when the channel itself refused the record (max_size, both files in use). */
bool fb_chan_write_failed(const struct fb_chan_writer *w);

/* ---- reader ---------------------------------------------------------------------------------- */

struct fb_chan_reader;

/* Maps (creating them if needed) the staging files of spool folder DIR. With FRESH the writer has
 * not started: SH is initialised by fb_chan_reset(); else (a new reader for a running writer) the
 * reader follows SH from the oldest file in use. Returns 0 or a negative errno. */
int fb_chan_reader_open(const char *dir, struct fb_chan_shared *sh, bool fresh, struct fb_chan_reader **out);

/* For a look from outside (the CLI): copies what the staging files of spool folder DIR hold now
 * into memory (fb_stage_open_copy(); a missing file holds nothing), with no shared state, for
 * fb_chan_recover() only. Nothing in DIR is created or written. Returns 0 or a negative errno. */
int fb_chan_reader_open_copy(const char *dir, struct fb_chan_reader **out);

/* Accepts NULL. The files keep their records for the next open. */
void fb_chan_reader_close(struct fb_chan_reader *r);

/* What fb_chan_recover() found lost: seqs missing between FROM and the records found, or between
 * two of them, and large records whose own file is gone. */
struct fb_chan_loss {
	uint64_t lost;          /* records */
	uint64_t first_seq;     /* the first and the last of them */
	uint64_t last_seq;
	uint64_t big_lost;      /* of them: large records whose own file is missing or short */
	unsigned files;         /* bit i: a gap shows in staging file i */
	unsigned damaged;       /* bit i: staging file i holds damaged bytes between valid records */
	size_t damaged_off[2];  /* where the first damage of each starts */
};

/* FRESH (or a copy) only: visits every valid record left in the files with a seq of at least FROM (the first
 * seq not settled yet, so the first one expected), in seq order across both files (a record too
 * large for them is read back from its own file). Damaged records are skipped and the records
 * after them still visited; every seq missing from FROM on up to the last record found is counted
 * in LOSS (may be NULL). Returns 0, FN's non-zero value or a negative errno. */
int fb_chan_recover(struct fb_chan_reader *r, uint64_t from, fb_stage_visit_fn fn, void *ud,
		struct fb_chan_loss *loss);

/* The staging files of a spool folder are FB_CHAN_FILE.0 and FB_CHAN_FILE.1. */
#define FB_CHAN_FILE "flowmq-stage"

/* The path of staging file I (0 or 1) of spool folder DIR into BUF. Returns 0 or -ENAMETOOLONG. */
int fb_chan_file_name(const char *dir, unsigned i, char *buf, size_t cap);

/* FRESH only, after fb_chan_recover(): empties both files and removes the large-record files;
 * the writer starts at NEXT_SEQ. The files are not ready for a writer yet (fb_chan_ready()): the
 * reader may still have to queue records below NEXT_SEQ (a salvage) and reset them again.
 * Returns 0 or a negative errno. */
int fb_chan_reset(struct fb_chan_reader *r, uint64_t next_seq);

/* After the last fb_chan_reset(): a writer may open the files (fb_chan_writer_open()). */
void fb_chan_ready(struct fb_chan_reader *r);

/* Visits the records published since the last take, in order. Returns 0, FN's non-zero value or
 * a negative errno. */
int fb_chan_take(struct fb_chan_reader *r, fb_stage_visit_fn fn, void *ud);

/* The writer's "appended" as of the last take (for fb_chan_account()). */
uint64_t fb_chan_seen(const struct fb_chan_reader *r);

/* Visits the records taken and not yet marked settled, in order. */
int fb_chan_each_unsettled(struct fb_chan_reader *r, fb_stage_visit_fn fn, void *ud);

/* Records taken and not yet marked settled. */
size_t fb_chan_unsettled(const struct fb_chan_reader *r);

/* Seq of the oldest of them, 0 when there is none. */
uint64_t fb_chan_first_unsettled(const struct fb_chan_reader *r);

/* True when the writer has sealed a file and every record of it is taken: once they are settled,
 * fb_chan_settled() gives the file back to the writer. */
bool fb_chan_sealed(const struct fb_chan_reader *r);

/* True when the writer, sealed, is a quarter into its other file: the sealed one should be given
 * back now, a quarter of a file before the writer looks for it (past half of its file) and three
 * quarters before it needs it (its file full). Until then its records may still be acknowledged
 * and never settled. */
bool fb_chan_settle_due(const struct fb_chan_reader *r);

/* Writes both files' dirty pages to the disk, and the own files of the large records taken since the
 * last call (with the folder that names them). Returns 0 or a negative errno; the large records'
 * files are tried again at the next call after a failure. */
int fb_chan_sync(struct fb_chan_reader *r);

/* Every record taken is in RocksDB or gone: empties a sealed file that holds nothing else, marks it
 * FREE, and removes the large-record files of the records settled. */
void fb_chan_settled(struct fb_chan_reader *r);

/* Publishes the reader's accounting for the writer's limit check: SEEN from fb_chan_seen(), LIVE
 * the bytes of the live records now. */
void fb_chan_account(struct fb_chan_reader *r, uint64_t seen, uint64_t live);

#endif
