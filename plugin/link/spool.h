/* flowmq-bridge: the durable spool (RocksDB), in the link process. Only spool.c includes rocksdb/c.h.
 *
 * One RocksDB database at spool.path with the column families "out" (edge to cloud), "in" (cloud
 * to edge), "dead" (dead letters) and "meta". Keys are 8-byte big-endian sequence numbers, so
 * iteration order is insertion order. Values are opaque here (see record.h).
 *
 * Appends go through the WAL without fsync (unless sync is FB_SYNC_ALWAYS); fb_spool_sync()
 * fsyncs the WAL and is called every sync_interval_ms by the worker with FB_SYNC_INTERVAL.
 * Records of FB_Q_OUT come through the staging channel (chan.h), whose writer is the broker
 * thread (or, without opts.chan, fb_spool_append() in this process): in the page cache when the
 * append returns, as a WAL write would be; taken into the queue by fb_spool_ingest(), and in
 * RocksDB after the next fb_spool_settle().
 * max_size bounds the spool folder (fb_spool_layout()): the staging files and a reserve for
 * restarts on a full disk take a fixed part of it, RocksDB's memtables, WAL and compactions are
 * sized from it, and the rest bounds the bytes of live "out" records (key + value) with on_full.
 * The folder is marked as a spool (a file FLOWMQ-SPOOL); a folder that is not one is refused.
 *
 * A full disk (or any failed write) is a state, not an error of each call: nothing more is
 * written to RocksDB, the staged records stay in the staging files (settling stops; when they are
 * full, the broker applies on_full), appends fail with -ENOSPC (-EIO), and every second (at a
 * use, fb_spool_stats() included) the spool looks for space and reopens the database once there
 * is. Reads go on meanwhile (from RocksDB and the staging files), and deletes are kept in memory
 * and written when space returns (see deferred_delete() in spool.c). One line is logged when it
 * begins and one when it ends; fb_spool_stats() reports disk_full meanwhile.
 *
 * Thread safety: every function may be called from any thread; an internal mutex protects the
 * sequence counters and the size accounting. It is held across a WAL fsync only before a staging
 * file is emptied (and for every settle with sync "always"): the broker thread never takes it.
 */
#ifndef FB_SPOOL_H
#define FB_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "chan.h"
#include "config.h"
#include "log.h"
#include "record.h"
#include "status.h"

/* The session's packet id file in the spool folder (session.c): a fresh spool made in place of a
 * damaged one that is moved aside gets a copy of it. */
#define FB_SPOOL_IDS_FILE "flowmq-link-ids"

struct fb_spool;

enum fb_queue {
	FB_Q_OUT = 0,
	FB_Q_IN = 1,
	FB_Q_DEAD = 2,
};

struct fb_spool_opts {
	const char *path;
	uint64_t max_size;       /* bytes of FB_Q_OUT; 0: unbounded */
	enum fb_on_full on_full;
	enum fb_sync sync;
	const struct fb_logger *lg;
	/* The staging channel (chan.h) whose reader this spool is, in memory shared with its writer;
	 * NULL: the spool has its own and fb_spool_append() to FB_Q_OUT writes to it. */
	struct fb_chan_shared *chan;
	bool chan_running;       /* CHAN's writer runs already: its records are taken, not reset */
	/* Records lost to damage found on open (sequence gaps in the staging files, in "out" after
	 * RocksDB skipped damaged WAL records, in what was salvaged from a spool moved aside) are
	 * added here (edge_to_cloud/dropped/corrupt); may be NULL. */
	atomic_uint_fast64_t *corrupt;
	/* Records of FB_Q_IN up to this seq have been injected into the local broker (its released
	 * mark, ipc/c2e.h, before any deletion caught up) and are not handed over again: a salvage
	 * leaves them out, and without a salvage the open deletes them. Only with !chan_running. */
	uint64_t in_injected;
	/* The lowest seq the next record of FB_Q_IN may take (0: any): on a running channel the
	 * broker's ring marks (pushed, released) count in the numbering "in" had, which an empty queue
	 * must not start again below. */
	uint64_t in_next;
};

/* How spool.max_size (MAX_SIZE, 0: unbounded) is shared out; see README.md "Spool". */
struct fb_spool_layout {
	uint64_t stage_file;   /* each of the two staging files */
	uint64_t reserve;      /* the reserve file kept for restarts on a full disk */
	uint64_t live;         /* bytes of live "out" records (key + value); 0: unbounded */
	uint64_t write_buffer; /* one RocksDB memtable; the WAL holds at most two of them */
	uint64_t overhead;     /* what the folder may hold beyond MAX_SIZE (RocksDB's own files) */
};
void fb_spool_layout(uint64_t max_size, struct fb_spool_layout *lay);

/* struct fb_spool_stats: in ipc/status.h (the broker publishes it). */

/* Opens or creates the spool. The folder must be empty (or new), or hold the marker file of a
 * spool of a format version this code reads, or exactly the files of a spool made before the
 * marker existed (it is then marked): anything else is refused with -ENOTEMPTY (-EPROTO for a
 * newer format), the reason logged with the path, and nothing in the folder touched.
 * Damage loses only what it hit, and every record lost is counted in opts.corrupt and logged once
 * with the place: a damaged staging record is skipped; damaged WAL records are skipped (a copy of
 * the WAL as it was is kept at PATH.corrupt-<unix time>); a database that cannot be opened
 * (corruption, missing CURRENT, a damaged MANIFEST, unreadable files) is renamed to
 * PATH.salvaging-<unix time> and never modified, a fresh one is created, and every record that can
 * be read from a copy of the old one (repaired with RocksDB's repair where needed; without room
 * for a copy, read in place through hard links, read only and unrepaired) is queued again
 * in order; then it is renamed to PATH.corrupt-<unix time>. On a fresh channel, a folder still
 * named PATH.salvaging-... (a process that ended before it salvaged it) is salvaged too: the
 * broker never fails to start because of its spool. Returns 0 or a negative errno (only when even a fresh
 * spool cannot be created, -EBUSY when another process holds it, or -ENOSPC/-EACCES/-EMFILE/-ENOMEM
 * when the environment, not the spool, is at fault: an intact spool is never moved aside for
 * those; -ENOSPC only when even the reserve does not make room to open it). Sequences restart at 1 in a queue that is empty at open. Caller closes with
 * fb_spool_close(). */
int fb_spool_open(const struct fb_spool_opts *opts, struct fb_spool **out);

/* The process holding the RocksDB lock of spool folder PATH (RocksDB takes it with fcntl(F_SETLK)
 * and holds it while the database is open: a running link process): its pid, -1 when its pid is
 * unknown, 0 when nobody holds it (or PATH has no lock file). Cheap: one open() and one
 * fcntl(F_GETLK). Must not be called in a process that has this spool open: closing the
 * descriptor would drop that process's own lock. */
pid_t fb_spool_holder(const char *path);

/* What the spool at PATH holds, read from outside (the CLI) without changing anything in its
 * folder: no file or folder is created, written, renamed or removed, whatever state it is in, and
 * it works while a link process runs on it. The figures are what fb_spool_open() would find:
 * the records of "out" in RocksDB (read-only, WAL included) and those staged after them in the
 * staging files (read as copies), the records of "in" and "dead"; disk_full is 0. *HOLDER is the
 * pid of the process that has the spool open (its RocksDB lock: a running link process), -1 when
 * it is held by a process of unknown pid, 0 when the spool is not in use; while it is, the
 * figures are a snapshot (records acknowledged but not yet settled count as queued).
 * Returns 0, or a negative errno after one line logged through LG (may be NULL) naming the path
 * and the problem: -ENOENT (no such folder, or an empty one), -ENOTDIR, -ENOTEMPTY (not a spool:
 * no marker and not a spool of an earlier version), -EPROTO (a newer format), -EIO (damaged:
 * what RocksDB or the precheck found; fb_spool_open() would move it aside), or another errno of
 * the environment. Must not be called in a process that has this spool open (the look at the
 * lock would drop that process's lock). Any thread. */
int fb_spool_inspect(const char *path, const struct fb_logger *lg, struct fb_spool_stats *st,
		pid_t *holder);

/* Flushes and closes. Accepts NULL. No other thread may use the spool then. */
void fb_spool_close(struct fb_spool *s);

/* Appends one record to Q. Returns 0 and *seq on success.
 * For FB_Q_OUT when the record does not fit into max_size:
 *   drop_oldest: deletes the oldest records (in the same write batch) until it fits, adds their
 *                count to *dropped, returns 0;
 *   drop_new, reject: writes nothing and returns -ENOSPC.
 * A record larger than max_size on its own returns -E2BIG. Any thread. */
int fb_spool_append(struct fb_spool *s, enum fb_queue q, const void *val, size_t len,
		uint64_t *seq, uint64_t *dropped);

/* Calls FN for each record of Q with seq > AFTER, in order, stopping after MAX records or when FN
 * returns non-zero. VAL is valid only during the call. Returns the number of records visited
 * (including the one for which FN returned non-zero) or a negative errno. Any thread. */
typedef int (*fb_spool_visit_fn)(void *ud, uint64_t seq, const void *val, size_t len);
int fb_spool_read(struct fb_spool *s, enum fb_queue q, uint64_t after, size_t max,
		fb_spool_visit_fn fn, void *ud);

/* Deletes record SEQ of Q; LEN is its value length (for the accounting). Deleting a record that
 * drop_oldest already removed is a no-op. While the spool has failed (a full disk) the delete is
 * kept in memory and written when space returns (lost to a crash before that: the record is then
 * sent again). Returns 0 or a negative errno. Any thread. */
int fb_spool_delete(struct fb_spool *s, enum fb_queue q, uint64_t seq, size_t len);

/* Deletes several records of Q in one write batch (one WAL write); like fb_spool_delete() for
 * each. Returns 0 or a negative errno (then nothing was deleted). Any thread. */
struct fb_spool_del {
	uint64_t seq;
	size_t len;
};
int fb_spool_delete_many(struct fb_spool *s, enum fb_queue q, const struct fb_spool_del *items, size_t n);

/* As fb_spool_delete_many(); *REMOVED is how many of ITEMS were live and are deleted now (0 when
 * it fails): the others were gone already (drop_oldest, a move to dead letters). */
int fb_spool_delete_counted(struct fb_spool *s, enum fb_queue q, const struct fb_spool_del *items,
		size_t n, size_t *removed);

/* Deletes every record of Q with AFTER < seq <= UPTO, in batches. Returns 0 or a negative errno
 * (then some may be left). Any thread. */
int fb_spool_delete_through(struct fb_spool *s, enum fb_queue q, uint64_t after, uint64_t upto);

/* True while record SEQ of Q exists (not deleted, dropped or moved). Any thread. */
bool fb_spool_live(struct fb_spool *s, enum fb_queue q, uint64_t seq);

/* Turns RocksDB's per-thread performance counting off for the calling thread. */
void fb_spool_thread_init(void);

/* Moves record SEQ (OUT_LEN bytes in FB_Q_OUT) to FB_Q_DEAD as VAL, LEN (the record, or the
 * record with its reason added) in one write batch: never in both, never in neither. Returns 1
 * when moved, 0 when SEQ is no longer live (drop_oldest took it, or an earlier move), or a
 * negative errno (nothing changed). */
int fb_spool_move_dead(struct fb_spool *s, uint64_t seq, size_t out_len, const void *val, size_t len);

/* Takes the records the channel's writer staged since the last call into FB_Q_OUT, calling FN
 * (may be NULL) for each with its value, then, with drop_oldest, drops the oldest records while
 * the queue is over max_size (adding their count to *DROPPED). Returns 0 or a negative errno. */
int fb_spool_ingest(struct fb_spool *s, fb_spool_visit_fn fn, void *ud, uint64_t *dropped);

/* Moves the records staged by appends to FB_Q_OUT into RocksDB (one write batch; see spool.c).
 * Everything that needs them there settles by itself; the worker calls this to keep the staging
 * file short while nothing else does. Returns 0 or a negative errno. Any thread. */
int fb_spool_settle(struct fb_spool *s);

/* True when settling now would give the channel's writer a staging file back (it has moved on to
 * the other one) and it is time to: nothing taken is live any more, or the writer is a quarter
 * into the other file (fb_chan_settle_due()). Any thread. */
bool fb_spool_settle_wanted(struct fb_spool *s);

/* Calls FN with the oldest live record of FB_Q_OUT, from RocksDB or, when it is still staged,
 * from the staging file (without settling). Returns 1, 0 when the queue is empty, or a negative
 * errno. Any thread. */
int fb_spool_oldest(struct fb_spool *s, fb_spool_visit_fn fn, void *ud);

/* Records staged and not settled yet (a hint: read without the lock). Any thread. */
size_t fb_spool_staged(struct fb_spool *s);

/* Syncs the staging files (where the staged records are), then fsyncs the WAL. Returns 0 or a
 * negative errno. Any thread. */
int fb_spool_sync(struct fb_spool *s);

void fb_spool_stats(struct fb_spool *s, struct fb_spool_stats *st);

/* Lanes (README.md "Priority lanes"). Each record of FB_Q_OUT belongs to the lane its record
 * names (fb_record_lane(); FB_LANE_DEFAULT for records of earlier versions), and within it to one
 * of two lane queues: queue LANE, or queue FB_LANES + LANE for the records of live_first rules
 * (fb_record_live_first()). "out" keeps one sequence and one key space; the spool keeps in memory
 * which seqs each queue holds, found again on open. A queue is in the order of its seqs. */
#define FB_LANE_QUEUES (2 * FB_LANES)

/* For each queue Q that holds a live record with seq > AFTER[Q]: bit Q of the result, and the
 * oldest such seq in NEXT[Q] (NEXT of other queues untouched); *NONEMPTY (may be NULL): bit Q for
 * each queue that holds records at all. No disk access. Any thread. */
uint32_t fb_spool_lanes_next(struct fb_spool *s, const uint64_t after[FB_LANE_QUEUES],
		uint64_t next[FB_LANE_QUEUES], uint32_t *nonempty);

/* Like fb_spool_read() on FB_Q_OUT, visiting only the records of lane queue QUEUE with
 * AFTER < seq < BEFORE (BEFORE 0: no bound), in order, at most MAX (and at most 256) of them.
 * Returns the number visited or a negative errno. Any thread. A read that goes on where the last
 * one stopped (a drain) takes its records with the iterator the last one kept. */
int fb_spool_read_lane(struct fb_spool *s, unsigned queue, uint64_t after, uint64_t before, size_t max,
		fb_spool_visit_fn fn, void *ud);

/* Lets go of the iterator that fb_spool_read_lane() keeps between reads once it is old enough
 * (it holds on to files and memory of its time). Cheap when there is none; never waits. Call it
 * every second or more often, from the thread that reads. */
void fb_spool_lane_iter_expire(struct fb_spool *s);

/* Like fb_spool_oldest() for LANE (both of its queues). Returns 1, 0 when the lane is empty, or a
 * negative errno. */
int fb_spool_lane_oldest(struct fb_spool *s, unsigned lane, fb_spool_visit_fn fn, void *ud);

/* Live records (COUNT) and oldest live seq (FIRST, 0 when empty) of every lane (both of its
 * queues). Any thread. */
void fb_spool_lane_stats(struct fb_spool *s, uint64_t count[FB_LANES], uint64_t first[FB_LANES]);

/* Like fb_spool_inspect() (the same checks, messages, *HOLDER and guarantees: nothing in the
 * folder changes, it works while a link process runs), visiting the records of Q (FB_Q_OUT: those
 * in RocksDB, then those still staged, as fb_spool_open() would queue them; FB_Q_DEAD) in seq
 * order, stopping when FN returns non-zero. While the spool is in use a look may have to start
 * again (a file removed by the running process): FN is then called with SEQ 0 and VAL NULL, and
 * the visits begin anew. Returns 0 or a negative errno after one line logged through LG. Any
 * thread; never in a process that has this spool open. */
int fb_spool_inspect_records(const char *path, const struct fb_logger *lg, enum fb_queue q,
		fb_spool_visit_fn fn, void *ud, pid_t *holder);

#endif
