/* flowmq-bridge: the durable spool on RocksDB (see spool.h); the link process (the CLI only reads it: fb_spool_inspect()). The only file that includes rocksdb/c.h.
 *
 * Layout: one database, column families "default" (RocksDB requires it, unused), "out", "in",
 * "dead" and "meta". Keys are 8-byte big-endian sequence numbers, so RocksDB's bytewise order is
 * insertion order. Sequences continue after the last key found on open (starting at 1): a queue
 * that was empty when the spool was opened starts again at 1.
 *
 * Deletes. A queue is consumed from its head, so a delete does not write a tombstone per record:
 * each queue has a floor in "meta" (key "floor/<queue>", an 8-byte big-endian seq) below which
 * every record counts as deleted, and a batch of deletes that advances the oldest live record
 * writes the new floor once. Only a record deleted while an older one is still live (out of order:
 * a dead letter, a PUBACK overtaking another) gets a tombstone of its own. The records below the
 * floor are removed with one range tombstone every FLOOR_RANGE_STEP records, so compactions drop
 * them. Point tombstones in a queue that also takes appends would make RocksDB's memtable search
 * its skiplist from the top for every insert (the appends go to the end, the deletes to the
 * front); with the floor, the "out" memtable sees appends only and inserts at its end.
 *
 * Accounting. Every change to a queue happens under s->lock and reaches RocksDB before the lock is
 * released, so the set of live keys in the database and the in-memory state below never disagree.
 * Each queue keeps a bitmap of its live sequence numbers (from the oldest live one to the newest, one
 * bit each: 1M records cost 128 KiB). A delete of a record that is not live (dropped by
 * drop_oldest, moved to dead, or deleted twice) is therefore recognised without touching the disk
 * and changes nothing, and first_seq is exact even when acknowledgements arrive out of order.
 *
 * Staging. Records of "out" are copied by the broker thread into the staging channel (chan.h)
 * instead of being put one by one: a record is in the page cache when the copy returns, as a WAL
 * write would have it. fb_spool_ingest() takes them into the queue's accounting (they are live
 * from then on, RocksDB does not hold them yet). Settling puts the taken records that are still
 * live into RocksDB in one write batch together with the settled mark ("stage/settled" in "meta":
 * the newest seq settled); it happens when the writer needs a staging file back (the worker waits
 * until the writer is a quarter into its other file, or until nothing taken is live), before every
 * read or move of "out", for a delete out of order (in the same batch), and on close. A record
 * acknowledged before it was settled never reaches RocksDB at all. Invariant: every staged record
 * above the settled mark has a higher seq than every key of "out" in RocksDB. On open, staged
 * records above the floor, the last key found and the settled mark are put into RocksDB (unless
 * the channel's writer runs already: then they are taken like new ones). Everything happens under
 * the one lock.
 *
 * Durability. Every write goes through the WAL without fsync. With FB_SYNC_ALWAYS an append to
 * "in" or "dead" fsyncs the WAL after releasing the lock, the channel's writer fdatasyncs the
 * staging file after each record, and every settle fsyncs the WAL before the staging file may
 * forget what it settled. fb_spool_sync() (FB_SYNC_INTERVAL) syncs the staging files and the
 * WAL. Deletes and moves to dead are never fsynced: losing one to a power cut means a message is
 * sent again, which at-least-once allows.
 *
 * Damage. Nothing is lost without being counted (opts.corrupt) and logged once with the count
 * and the place. Staging records are checked one by one (stage.h) and the gaps their damage
 * leaves are counted from the first seq expected (the settled mark + 1). The WAL is replayed
 * tolerating only a torn tail; damage before it fails the open, which is then retried skipping
 * the damaged write batches (RocksDB's kSkipAnyCorruptedRecords) after a copy of the WAL is kept
 * at PATH.corrupt-<time>; the staging files give back what they still hold of those batches, and
 * the seqs still missing in "out" between the floor and the settled mark are counted (a record
 * deleted out of order, behind an older live one, counts too: the only case that overcounts).
 * A spool RocksDB cannot open or read (a damaged table file, a missing CURRENT, a MANIFEST
 * without "out") is renamed to PATH.salvaging-<time> before RocksDB changes anything and never
 * written again (once salvaged it is renamed to PATH.corrupt-<time>, the name it is kept under; a
 * folder still named so when a link process starts is salvaged then); a fresh spool starts, and
 * salvage() queues again, in order, what a copy of the old one gives: opened read-only as it is, with CURRENT pointed at the newest MANIFEST, or after
 * RocksDB's repair (again without the oldest WAL files while a WAL file that a table file repeats
 * fails it; the WAL files replayed into an empty database when no table file holds "out"); past
 * unreadable blocks by seeking beyond them; then its staging files. The seqs missing between its
 * floor and its last record are counted. Without room for a copy, the copy is a folder of hard
 * links (CURRENT copied) that is only opened read only, never repaired: the spool kept stays
 * byte-identical, and a database that needs the repair is reported, not salvaged.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <rocksdb/c.h>

#include "spool.h"
#include "bytes.h"
#include "chan.h"
#include "record.h"
#include "stage.h"

/* Memtables smaller than this are not written out on close (fb_spool_close()). */
#define CLOSE_FLUSH_MIN (8u << 20)

/* Meta key of the newest seq settled from the staging channel (8 bytes big endian). */
#define SETTLED_KEY "stage/settled"
/* The seq the next dead letter takes, written with each: "dead" never numbers a dead letter again
 * with the seq of one deleted above an older live one (the requeue ring of a running channel
 * names dead letters by seq: control.c). */
#define DEAD_NEXT_KEY "next/dead"

/* Bytes copy_tree() reads and writes at a time. */
#define COPY_BUF (1u << 16)

/* Meta key of a salvage under way: the folder it reads (see salvage()). */
#define SALVAGE_KEY "salvage/from"
/* ... and the in_injected it leaves out of "in" (a seq), for a salvage that starts again. */
#define SALVAGE_IN_KEY "salvage/in-injected"
/* ... and the next seq of "out", "in" and "dead" (3 seqs) when it started, and as far as it has
 * queued: a salvage that starts again knows exactly what it queued before (salvage_resume()). */
#define SALVAGE_FROM_KEY "salvage/from-seqs"
#define SALVAGE_NEXT_KEY "salvage/next-seqs"
/* ... and the ranges of the tries before this one that did not end (6 seqs each: from, next). */
#define SALVAGE_TRIES_KEY "salvage/tries"
/* ... and the name (not the path) of the folder the last salvage that ended read (salvage_end()). */
#define SALVAGE_DONE_KEY "salvage/done"
/* A spool is moved aside to PATH.salvaging-<time>[.N] until its salvage has ended, then renamed to
 * PATH.corrupt-<time>[.N] (salvage_orphans()). */
#define SALVAGING_TAG "salvaging"

#define KEY_LEN 8

/* Records below a queue's floor are removed with a range tombstone once the floor has moved this
 * far past the last one: few range tombstones (each iterator works through the memtable's), and
 * at most this many deleted records (some 1.5 MiB of 100-byte messages) wait for theirs. */
#define FLOOR_RANGE_STEP 8192

/* RocksDB's InfoLogLevel: its LOG file only gets warnings and errors. */
#define ROCKSDB_LOG_WARN 2

/* The marker file that makes a folder a spool (see fb_spool_open()): its first line names the
 * format, the second its version. A folder without it is used only when it is empty or holds
 * exactly the files of a spool made before the marker existed. */
#define MARKER_FILE "FLOWMQ-SPOOL"
#define MARKER_MAGIC "flowmq-bridge spool"
#define MARKER_VERSION 1

/* Space kept free for a restart on a full disk (fb_spool_layout()): deleted when the spool cannot
 * be opened for lack of space, made again when space returns. */
#define RESERVE_FILE "flowmq-reserve"

/* After a failed write, how often the spool looks for space again, and how much it wants free
 * (besides its reserve) before it writes again. */
#define RETRY_MS 1000
#define LOW_FREE(s) ((1u << 20) + (s)->lay.write_buffer)
#define RESUME_FREE(s) (LOW_FREE(s) + (1u << 20))

/* Deletes out of order (a tombstone each) that the spool keeps in memory while it has failed, per
 * queue (8 bytes each); beyond them a delete fails as a write does (the record is sent again). */
#define DEFERRED_TOMB_MAX 65536

/* max_size when it is 0 (unbounded), for the sizes derived from it. */
#define LAYOUT_DEFAULT (1ull << 30)

static const char *const cf_names[] = { "default", "out", "in", "dead", "meta" };
enum { CF_DEFAULT, CF_OUT, CF_IN, CF_DEAD, CF_META, CF_REQUIRED };

/* ---- a set of sequence numbers: one bit per seq from the oldest member on ---- */

struct seqset {
	uint64_t *w;   /* bit i of w[k] stands for seq base + 64 * k + i */
	size_t off;    /* words before w[off] are all zero (dropped lazily) */
	size_t n;      /* words in use */
	size_t cap;    /* words allocated */
	uint64_t base; /* multiple of 64 */
};

static void seqset_reset(struct seqset *ss)
{
	ss->off = 0;
	ss->n = 0;
	ss->base = 0;
}

/* Makes room for SEQ, which is larger than every member. Returns 0 or -ENOMEM. */
static int seqset_reserve(struct seqset *ss, uint64_t seq)
{
	uint64_t need;
	size_t cap;
	uint64_t *w;

	if(ss->n == 0){
		need = 1;
	}else{
		need = (seq - ss->base) / 64 + 1;
	}
	if(need <= ss->cap){
		return 0;
	}
	if(ss->off > 0){
		/* Drop the leading zero words first; amortised, as they are only ever dropped once. */
		memmove(ss->w, ss->w + ss->off, (ss->n - ss->off) * sizeof(*ss->w));
		ss->n -= ss->off;
		ss->base += 64 * (uint64_t)ss->off;
		need -= ss->off;
		ss->off = 0;
		if(need <= ss->cap){
			return 0;
		}
	}
	if(need > SIZE_MAX / sizeof(*w) / 2){
		return -ENOMEM;
	}
	cap = ss->cap ? ss->cap : 16;
	while(cap < need){
		cap *= 2;
	}
	w = realloc(ss->w, cap * sizeof(*w));
	if(w == NULL){
		return -ENOMEM;
	}
	ss->w = w;
	ss->cap = cap;
	return 0;
}

/* Adds SEQ (larger than every member); seqset_reserve(SEQ) must have succeeded. */
static void seqset_add(struct seqset *ss, uint64_t seq)
{
	size_t k;

	if(ss->n == 0){
		ss->base = seq & ~(uint64_t)63;
		ss->off = 0;
	}
	k = (size_t)((seq - ss->base) / 64);
	while(ss->n <= k){
		ss->w[ss->n++] = 0;
	}
	ss->w[k] |= (uint64_t)1 << ((seq - ss->base) % 64);
}

static bool seqset_has(const struct seqset *ss, uint64_t seq)
{
	uint64_t k;

	if(ss->n == 0 || seq < ss->base){
		return false;
	}
	k = (seq - ss->base) / 64;
	if(k < ss->off || k >= ss->n){
		return false;
	}
	return (ss->w[k] >> ((seq - ss->base) % 64)) & 1;
}

static void seqset_del(struct seqset *ss, uint64_t seq)
{
	uint64_t k = (seq - ss->base) / 64;

	ss->w[k] &= ~((uint64_t)1 << ((seq - ss->base) % 64));
}

/* Sets SEQ again after seqset_del() (the words it lives in are still there). */
static void seqset_restore(struct seqset *ss, uint64_t seq)
{
	uint64_t k = (seq - ss->base) / 64;

	ss->w[k] |= (uint64_t)1 << ((seq - ss->base) % 64);
}

/* The smallest member >= FROM, or 0; with DROP, also drops the zero words below it. */
static uint64_t seqset_find(struct seqset *ss, uint64_t from, bool drop)
{
	uint64_t k, bit, word;

	if(ss->n == 0){
		return 0;
	}
	if(from < ss->base + 64 * (uint64_t)ss->off){
		from = ss->base + 64 * (uint64_t)ss->off;
	}
	k = (from - ss->base) / 64;
	bit = (from - ss->base) % 64;
	for(; k < ss->n; k++, bit = 0){
		word = ss->w[k] >> bit;
		if(word){
			if(drop){
				ss->off = (size_t)k;
			}
			return ss->base + 64 * k + bit + (uint64_t)__builtin_ctzll(word);
		}
	}
	return 0;
}

static uint64_t seqset_next(struct seqset *ss, uint64_t from)
{
	return seqset_find(ss, from, true);
}

/* ---- lanes: "out" seen per priority (see spool.h) ---- */

/* Which records of "out" belong to which lane queue (spool.h), in memory only: the lane rides in
 * each record (record.h), so it is found again by the scan on open and when staged records are
 * taken. One seqset per queue over the one sequence of "out"; NONEMPTY keeps the queues that hold
 * records, so nothing walks the empty ones. With the spool's lock held. */
struct spool_lanes {
	struct seqset live[FB_LANE_QUEUES];
	uint64_t count[FB_LANE_QUEUES];
	uint64_t first[FB_LANE_QUEUES]; /* oldest live seq of the lane, 0 when empty */
	uint64_t last[FB_LANE_QUEUES];  /* newest seq added to the lane since it was last empty */
	uint32_t nonempty;        /* bit Q: queue Q holds records */
};

static void lanes_reset(struct spool_lanes *ln)
{
	for(unsigned l = 0; l < FB_LANE_QUEUES; l++){
		seqset_reset(&ln->live[l]);
		ln->count[l] = 0;
		ln->first[l] = 0;
		ln->last[l] = 0;
	}
	ln->nonempty = 0;
}

static void lanes_free(struct spool_lanes *ln)
{
	for(unsigned l = 0; l < FB_LANE_QUEUES; l++){
		free(ln->live[l].w);
		ln->live[l].w = NULL;
		ln->live[l].cap = 0;
	}
	lanes_reset(ln);
}

/* Adds SEQ (newer than every record of "out") to the lane that record VAL names. Returns 0 or
 * -ENOMEM. */
static int lanes_add(struct spool_lanes *ln, uint64_t seq, const void *val, size_t len)
{
	unsigned l = fb_record_lane(val, len) + (fb_record_live_first(val, len) ? FB_LANES : 0);

	if(seqset_reserve(&ln->live[l], seq) != 0){
		return -ENOMEM;
	}
	seqset_add(&ln->live[l], seq);
	if(ln->count[l]++ == 0){
		ln->first[l] = seq;
	}
	ln->last[l] = seq;
	ln->nonempty |= 1u << l;
	return 0;
}

/* The lane holding SEQ, or -1. */
static int lanes_find(const struct spool_lanes *ln, uint64_t seq)
{
	for(uint32_t m = ln->nonempty; m; m &= m - 1){
		unsigned l = (unsigned)__builtin_ctz(m);
		if(seqset_has(&ln->live[l], seq)){
			return (int)l;
		}
	}
	return -1;
}

static void lanes_forget(struct spool_lanes *ln, uint64_t seq)
{
	int l = lanes_find(ln, seq);

	if(l < 0){
		return;
	}
	seqset_del(&ln->live[l], seq);
	if(--ln->count[l] == 0){
		seqset_reset(&ln->live[l]);
		ln->first[l] = 0;
		ln->last[l] = 0;
		ln->nonempty &= ~(1u << l);
	}else if(seq == ln->first[l]){
		/* Drops the words below the new first one: a lane that never empties stays small. */
		ln->first[l] = seqset_next(&ln->live[l], seq + 1);
	}
}

/* ---- the spool ---- */

struct spool_queue {
	rocksdb_column_family_handle_t *cf;
	uint64_t next_seq; /* seq of the next append */
	uint64_t count;    /* live records */
	uint64_t bytes;    /* their keys + values */
	uint64_t first;    /* oldest live seq, 0 when empty */
	uint64_t floor;    /* every record below it is deleted (persisted in "meta") */
	uint64_t ranged;   /* the range tombstone written last ends here */
	uint64_t unranged; /* bytes deleted below the floor since then */
	struct seqset live;
	struct spool_lanes *lanes; /* "out": its records by lane; NULL for the other queues */
};

struct fb_spool {
	char *path;
	struct fb_logger lg;
	uint64_t max_size;       /* bytes of live "out" records: the budget's part left for them */
	enum fb_on_full on_full;
	enum fb_sync sync;
	struct fb_spool_layout lay;

	/* After a failed write nothing is written (RocksDB aborts on a WAL sync after a failed WAL
	 * append) until space_returned() has reopened the database: 0, -ENOSPC or -EIO. Read
	 * without the lock by fb_spool_stats(); changed with the lock held. */
	atomic_int failed;
	uint64_t retry_ms;           /* no new attempt before this (monotonic ms) */
	uint64_t failed_ms;          /* when the episode began */
	/* Readers hold it shared while they use s->db without s->lock (fb_spool_read(),
	 * spool_fsync()); space_returned() holds it exclusively to reopen the database. */
	pthread_rwlock_t dblock;

	rocksdb_t *db;
	rocksdb_options_t *dbopts;
	rocksdb_block_based_table_options_t *table;
	rocksdb_cache_t *cache;
	rocksdb_writeoptions_t *wo;
	rocksdb_column_family_handle_t **cfh; /* CF_REQUIRED first, then any unknown ones found */
	size_t ncf;

	pthread_mutex_t lock;
	struct spool_queue q[3]; /* by enum fb_queue */
	struct spool_lanes lanes;    /* of q[FB_Q_OUT] */
	struct fb_chan_shared *sh;   /* the staging channel's shared state */
	bool own_sh;                 /* allocated here (appends from this process) */
	bool chan_running;           /* its writer runs already (a link process restarted) */
	uint64_t in_injected;        /* fb_spool_opts.in_injected */
	uint64_t in_next;            /* fb_spool_opts.in_next */
	uint64_t salvage_next[3];    /* SALVAGE_NEXT_KEY while a salvage is under way, else 0s */
	struct fb_chan_reader *chan;
	struct fb_chan_writer *w;    /* fb_spool_append() to "out"; NULL in the link process */
	uint64_t settled;            /* newest seq settled from the channel ("stage/settled") */
	size_t staged;               /* records taken and not settled (read without the lock) */
	rocksdb_writebatch_t *wb; /* reused under the lock */
	uint8_t *mark;            /* fb_spool_delete_many(): which items were live */
	size_t markcap;
	atomic_uint_fast64_t *corrupt; /* opts.corrupt */
	bool wal_skipped;         /* opened skipping damaged WAL records: count the gaps of "out" */
	char *kept;               /* where a copy of the spool as it was before that is kept */
	/* Deletes acknowledged while the spool has failed (see deferred_delete()): each queue's
	 * floor is behind its first live record, and these records above it still need their
	 * tombstone. With the lock held. */
	bool deferred[3];
	uint64_t *tomb[3];
	size_t ntomb[3], tombcap[3];
	/* The iterator that reads of "out" by lane go on with (lane_iter()): a read that continues
	 * where the last one stopped takes the next records without a new iterator or a seek. It sees
	 * the database as it was when it was made, every record below ITHI included; the lane's live
	 * set says which of them are still wanted. One reader uses it at a time (ITLOCK; another
	 * makes its own). It goes when a read has passed its last record, when it is older than
	 * LANE_ITER_MS (it keeps the files and the memtable of its time from being freed; the worker
	 * checks within a second, fb_spool_lane_iter_expire()), and before the database closes. */
	pthread_mutex_t itlock;
	rocksdb_iterator_t *it;
	rocksdb_readoptions_t *itro;
	uint8_t itupper[KEY_LEN];
	uint64_t ithi;
	uint64_t itborn_ms;
	atomic_bool itlive; /* IT is set: read without a lock by fb_spool_lane_iter_expire() */
};

static const char *const floor_keys[] = { "floor/out", "floor/in", "floor/dead" };

static int settle(struct fb_spool *s);
static int classify_error(const char *err);
static int spool_fsync(struct fb_spool *s);
/* What the earlier tries of a salvage that starts again (salvage_resume()) queued, each a range of
 * seqs of every queue, [from, next); at most TRIES_MAX are tracked (beyond, what a try queued
 * stays: repeats). */
#define TRIES_MAX 32
struct salvage_redo {
	size_t n;
	uint64_t from[TRIES_MAX][3], next[TRIES_MAX][3];
};

static int salvage(struct fb_spool *s, const char *aside, uint64_t injected, const struct salvage_redo *redo);

static void key_encode(uint8_t key[KEY_LEN], uint64_t seq)
{
	fb_put_be64(key, seq);
}

static uint64_t key_decode(const char *key)
{
	return fb_get_be64((const uint8_t *)key);
}

/* N seqs at P (N * KEY_LEN bytes), as the salvage's marks hold them. */
static void seqs_encode(uint8_t *p, const uint64_t *seqs, size_t n)
{
	for(size_t k = 0; k < n; k++){
		key_encode(p + k * KEY_LEN, seqs[k]);
	}
}

static void seqs_decode(const char *p, uint64_t *seqs, size_t n)
{
	for(size_t k = 0; k < n; k++){
		seqs[k] = key_decode(p + k * KEY_LEN);
	}
}

static const char *queue_name(enum fb_queue q)
{
	switch(q){
		case FB_Q_OUT: return "out";
		case FB_Q_IN: return "in";
		default: return "dead";
	}
}

/* Forgets the live record SEQ of Q, which has been deleted from the database. */
static void queue_forget(struct spool_queue *q, uint64_t seq, uint64_t bytes)
{
	if(q->lanes){
		lanes_forget(q->lanes, seq);
	}
	seqset_del(&q->live, seq);
	q->count--;
	q->bytes = q->bytes > bytes ? q->bytes - bytes : 0;
	if(q->count == 0){
		/* Also resets a byte count that a caller's wrong LEN may have skewed. */
		q->bytes = 0;
		q->first = 0;
		seqset_reset(&q->live);
	}else if(seq == q->first){
		q->first = seqset_next(&q->live, seq + 1);
	}
}

/* Adds SEQ to Q after it was written; seqset_reserve(SEQ) must have succeeded. */
static void queue_remember(struct spool_queue *q, uint64_t seq, uint64_t bytes)
{
	seqset_add(&q->live, seq);
	if(q->count++ == 0){
		q->first = seq;
	}
	q->bytes += bytes;
}

/* Adds to S->wb the seq after the dead letter that takes "dead"'s next_seq (DEAD_NEXT_KEY): in
 * the batch of every put into "dead". */
static void dead_next_stage(struct fb_spool *s)
{
	uint8_t next[KEY_LEN];

	key_encode(next, s->q[FB_Q_DEAD].next_seq + 1);
	rocksdb_writebatch_put_cf(s->wb, s->cfh[CF_META], DEAD_NEXT_KEY, strlen(DEAD_NEXT_KEY),
			(const char *)next, sizeof(next));
}

/* Records below the floor wait for their range tombstone until FLOOR_RANGE_STEP of them, or a
 * memtable's worth of bytes (large records on a small budget), are there. */
static bool range_due(const struct fb_spool *s, const struct spool_queue *q, uint64_t nf)
{
	return nf - q->ranged >= FLOOR_RANGE_STEP || q->unranged >= s->lay.write_buffer;
}

/* Adds to S->wb what moves the floor of queue QI to NF (> its floor): the new floor, and a range
 * tombstone for the records below it once they are FLOOR_RANGE_STEP past the last one. Called
 * with the lock held; floor_commit() after the batch is written. */
static void floor_stage(struct fb_spool *s, enum fb_queue qi, uint64_t nf)
{
	struct spool_queue *q = &s->q[qi];
	uint8_t from[KEY_LEN], to[KEY_LEN];

	key_encode(to, nf);
	rocksdb_writebatch_put_cf(s->wb, s->cfh[CF_META], floor_keys[qi], strlen(floor_keys[qi]),
			(const char *)to, sizeof(to));
	if(range_due(s, q, nf)){
		key_encode(from, q->ranged);
		rocksdb_writebatch_delete_range_cf(s->wb, q->cf, (const char *)from, sizeof(from),
				(const char *)to, sizeof(to));
	}
}

static void floor_commit(struct fb_spool *s, struct spool_queue *q, uint64_t nf)
{
	uint8_t from[KEY_LEN], to[KEY_LEN];
	char *err = NULL;

	if(range_due(s, q, nf)){
		q->ranged = nf;
		q->unranged = 0;
		/* SST files that hold nothing but records below the floor go at once, without waiting
		 * for a compaction to drop what the range tombstone covers (RocksDB leaves level 0
		 * files to compactions, which start at two of them). */
		key_encode(from, 0);
		key_encode(to, nf - 1);
		rocksdb_delete_file_in_range_cf(s->db, q->cf, (const char *)from, sizeof(from),
				(const char *)to, sizeof(to), &err);
		if(err){
			rocksdb_free(err); /* a compaction does it later */
		}
	}
	q->floor = nf;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A write or a WAL sync failed with RocksDB's message ERR: the spool stops writing until
 * space_returned() has reopened the database. The episode is logged once, here. With the lock
 * held, or from spool_fsync() without it. */
static int spool_fail(struct fb_spool *s, const char *what, const char *err)
{
	int why = strstr(err, "No space left on device") ? -ENOSPC : -EIO;
	int none = 0;

	if(atomic_compare_exchange_strong(&s->failed, &none, why)){
		s->failed_ms = mono_ms();
		s->retry_ms = s->failed_ms + RETRY_MS;
		if(why == -ENOSPC){
			fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: disk full (%s: %s); "
					"the spool stops writing until space returns: new messages stay in the "
					"staging files, and spool.on_full applies once those are full", s->path,
					what, err);
		}else{
			fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: %s failed (%s); the spool "
					"stops writing and reopens itself every %d s: new messages stay in the "
					"staging files, and spool.on_full applies once those are full", s->path,
					what, err, RETRY_MS / 1000);
		}
	}
	return atomic_load(&s->failed);
}

/* Bytes free for this process in the file system of PATH (0 when unknown). */
static uint64_t free_space(const char *path)
{
	struct statvfs sv;

	if(statvfs(path, &sv) != 0){
		return 0;
	}
	return (uint64_t)sv.f_bavail * (uint64_t)sv.f_frsize;
}

static int reserve_make(struct fb_spool *s);
static int db_open(struct fb_spool *s, char **why);
static void db_close(struct fb_spool *s);

static int deferred_flush(struct fb_spool *s);

/* 0 when the database may be written; while the spool has failed, -ENOSPC or -EIO, except that
 * once a second it looks for space (its reserve, and RESUME_FREE besides), makes the reserve again
 * and reopens the database: RocksDB 7.8.3's C API has no rocksdb_resume(), and a reopened
 * database starts on a fresh WAL. A failed write batch has not reached the database (RocksDB
 * applies a batch after its WAL append), so the queues' state holds as it is. With the lock held. */
static int space_returned(struct fb_spool *s)
{
	int failed = atomic_load(&s->failed), rc;
	char *why = NULL;
	uint64_t now;

	if(failed == 0){
		return 0;
	}
	now = mono_ms();
	if(now < s->retry_ms){
		return failed;
	}
	s->retry_ms = now + RETRY_MS;
	if(reserve_make(s) != 0 || free_space(s->path) < RESUME_FREE(s)){
		return failed;
	}
	/* Not while a read uses the database: its visitor may be waiting for s->lock (a delete of an
	 * expired record), which this thread holds. The next attempt comes a second later. */
	if(pthread_rwlock_trywrlock(&s->dblock) != 0){
		return failed;
	}
	db_close(s);
	rc = db_open(s, &why);
	pthread_rwlock_unlock(&s->dblock);
	free(why);
	if(rc){
		return failed; /* tried again in a second; s->db is NULL meanwhile */
	}
	atomic_store(&s->failed, 0);
	fb_log(&s->lg, MOSQ_LOG_NOTICE, "spool %s: %s over after %llu s; the spool "
			"writes again", s->path, failed == -ENOSPC ? "disk full" : "write failure",
			(unsigned long long)((now - s->failed_ms) / 1000u));
	return deferred_flush(s);
}

/* Writes S->wb (and clears it). Returns 0, or -ENOSPC/-EIO when the spool has failed (this write
 * may have begun the episode: see spool_fail()). */
static int batch_write(struct fb_spool *s, const char *what, enum fb_queue qi)
{
	char *err = NULL, *ctx = NULL;
	size_t need = 0;
	int rc = space_returned(s);

	if(rc){
		rocksdb_writebatch_clear(s->wb);
		return rc;
	}
	/* A WAL append that fails for lack of space leaves RocksDB's WAL writer broken: its own
	 * recovery from that error, or a sync, aborts the process (7.8.3). So the disk counts as
	 * full a little early: when the batch and a memtable's flush would not fit. */
	rocksdb_writebatch_data(s->wb, &need);
	if(free_space(s->path) < need + LOW_FREE(s)){
		rocksdb_writebatch_clear(s->wb);
		if(asprintf(&ctx, "%s \"%s\"", what, queue_name(qi)) < 0){
			ctx = NULL;
		}
		rc = spool_fail(s, ctx ? ctx : what, "No space left on device (less free than the batch and a memtable)");
		free(ctx);
		return rc;
	}
	rocksdb_write(s->db, s->wo, s->wb, &err);
	rocksdb_writebatch_clear(s->wb);
	if(err){
		if(asprintf(&ctx, "%s \"%s\"", what, queue_name(qi)) < 0){
			ctx = NULL;
		}
		rc = spool_fail(s, ctx ? ctx : what, err);
		free(ctx);
		rocksdb_free(err);
		return rc;
	}
	return 0;
}

void fb_spool_layout(uint64_t max_size, struct fb_spool_layout *lay)
{
	uint64_t m = max_size ? max_size : LAYOUT_DEFAULT, fixed;

	/* Staging files of 1/16 of the budget (128 KiB to 4 MiB, whole pages). */
	lay->stage_file = m / 16;
	if(lay->stage_file < (128u << 10)){
		lay->stage_file = 128u << 10;
	}
	if(lay->stage_file > (4u << 20)){
		lay->stage_file = 4u << 20;
	}
	lay->stage_file &= ~(uint64_t)4095;
	/* The reserve: what an open on a full disk writes at most (the staged records taken into
	 * RocksDB, a fresh WAL, MANIFEST, OPTIONS and LOG). */
	lay->reserve = 2 * lay->stage_file + (512u << 10);
	/* Memtables of 1/32 of the budget (256 KiB to 2 MiB): RocksDB's files beyond the records
	 * grow with them (the overhead below). */
	lay->write_buffer = m / 32;
	if(lay->write_buffer < (256u << 10)){
		lay->write_buffer = 256u << 10;
	}
	if(lay->write_buffer > (2u << 20)){
		lay->write_buffer = 2u << 20;
	}
	/* The staging files, the reserve and eight memtables (what RocksDB's files hold beyond the
	 * records while flushes and compactions catch up: the WAL, level 0, files that straddle the
	 * floor) come out of the budget, but leave at least half of it to the records. */
	fixed = 2 * lay->stage_file + lay->reserve + 8 * lay->write_buffer;
	lay->live = max_size == 0 ? 0 : m - fixed >= m / 2 && m > fixed ? m - fixed : m / 2;
	/* RocksDB's own: the WAL (two memtables), the memtables flushed and not compacted yet
	 * (compaction starts at four), a compaction's output written before its inputs go (a
	 * memtable's worth and the files it rewrites: about as much again), LOG, MANIFEST and
	 * OPTIONS (1.6 MiB at most). With a budget below 2 * fixed the records' half pushes the
	 * fixed part over as well. */
	lay->overhead = 6 * lay->write_buffer + (2u << 20);
	if(m / 2 < fixed){
		lay->overhead += fixed - m / 2;
	}
}

static rocksdb_options_t *make_options(struct fb_spool *s)
{
	rocksdb_options_t *o = rocksdb_options_create(), *tuned;
	uint64_t wb = s->lay.write_buffer;
	char *err = NULL;

	rocksdb_options_set_create_if_missing(o, 1);
	rocksdb_options_set_create_missing_column_families(o, 1);

	/* Its own LOG file: warnings only, at most two files of 256 KiB, no periodic stats dumps. */
	rocksdb_options_set_info_log_level(o, ROCKSDB_LOG_WARN);
	rocksdb_options_set_keep_log_file_num(o, 2);
	rocksdb_options_set_max_log_file_size(o, 256 << 10);
	rocksdb_options_set_stats_dump_period_sec(o, 0);

	/* A write-heavy FIFO on a small edge box: memtables sized from max_size (fb_spool_layout(),
	 * at most 64 MiB over all column families), two background threads, a bounded number of open
	 * files. SST files of a memtable's size, so that a compaction rewrites little at a time. */
	rocksdb_options_set_write_buffer_size(o, (size_t)wb);
	rocksdb_options_set_max_write_buffer_number(o, 2);
	rocksdb_options_set_db_write_buffer_size(o, (size_t)(4 * wb));
	rocksdb_options_set_target_file_size_base(o, wb);
	rocksdb_options_set_max_bytes_for_level_base(o, 4 * wb);
	rocksdb_options_set_level0_file_num_compaction_trigger(o, 2);
	rocksdb_options_set_max_background_jobs(o, 2);
	rocksdb_options_set_max_open_files(o, 256);
	rocksdb_options_set_bytes_per_sync(o, 1 << 20);

	/* A column family that is written rarely ("dead", "in") pins the WAL files that hold its
	 * unflushed writes; this bound (two memtables) makes RocksDB flush it instead of keeping WAL
	 * files around. */
	rocksdb_options_set_max_total_wal_size(o, 2 * wb);
	/* The MANIFEST is preallocated 4 MiB by default, and grows to 1 GiB before it is rewritten. */
	rocksdb_options_set_manifest_preallocation_size(o, 64 << 10);
	rocksdb_options_set_max_manifest_file_size(o, 1 << 20);

	/* A torn WAL tail after a power cut is cut off; damage before the tail fails the open, which
	 * db_open() then retries skipping only the damaged records (point-in-time recovery, the
	 * default, would drop everything after them without a word). Damaged files fail the open. */
	rocksdb_options_set_wal_recovery_mode(o, rocksdb_tolerate_corrupted_tail_records_recovery);
	rocksdb_options_set_paranoid_checks(o, 1);

	rocksdb_options_set_compaction_style(o, rocksdb_level_compaction);
	rocksdb_options_set_level_compaction_dynamic_level_bytes(o, 1);
	rocksdb_options_set_compression(o, rocksdb_lz4_compression); /* Debian builds it with lz4 */

	/* A queue deletes everything it wrote: compact files that are mostly tombstones early, so that
	 * they do not pile up in front of the live records. */
	rocksdb_options_add_compact_on_deletion_collector_factory(o, 10000, 5000);

	s->table = rocksdb_block_based_options_create();
	s->cache = rocksdb_cache_create_lru(8 << 20);
	rocksdb_block_based_options_set_block_cache(s->table, s->cache);
	rocksdb_block_based_options_set_block_size(s->table, 16 << 10);
	rocksdb_options_set_block_based_table_factory(o, s->table);

	/* Two options the C API of 7.8.3 does not have: no WAL preallocation (1.1 memtables per WAL
	 * file, on disk as soon as the file is made), and no flush while an open replays the WAL
	 * (it would need free space that a full disk does not have; the memtables are flushed later
	 * as usual). */
	tuned = rocksdb_options_create();
	rocksdb_get_options_from_string(o, "allow_fallocate=false;avoid_flush_during_recovery=true",
			tuned, &err);
	if(err){
		fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: RocksDB options not taken (%s)",
				s->path, err);
		rocksdb_free(err);
		rocksdb_options_destroy(tuned);
		return o;
	}
	rocksdb_options_destroy(o);
	return tuned;
}

static int marker_write(const char *path);

/* mkdir -p: the parents with 0755, the spool itself with 0700 (it holds message payloads), with
 * its marker file when it is made here. */
static int mkdir_p(const char *path)
{
	char *p, *c;
	struct stat st;
	int rc = 0;

	p = strdup(path);
	if(p == NULL){
		return -ENOMEM;
	}
	for(c = p + 1; *c; c++){
		if(*c != '/'){
			continue;
		}
		*c = '\0';
		if(mkdir(p, 0755) != 0 && errno != EEXIST){
			rc = -errno;
			break;
		}
		*c = '/';
	}
	if(rc == 0 && mkdir(p, 0700) == 0){
		rc = marker_write(p); /* a folder made here is a spool from the start */
	}else if(rc == 0 && errno != EEXIST){
		rc = -errno;
	}
	if(rc == 0 && (stat(p, &st) != 0 || !S_ISDIR(st.st_mode))){
		rc = -ENOTDIR;
	}
	free(p);
	return rc;
}

/* Sets *D (caller frees) to PATH.TAG-<T>, or PATH.TAG-<T>.N for N > 0. Returns 0 or -ENOMEM. */
static int aside_name(char **d, const char *path, const char *tag, long long t, int n)
{
	return (n == 0 ? asprintf(d, "%s.%s-%lld", path, tag, t) : asprintf(d, "%s.%s-%lld.%d", path, tag, t, n))
			< 0 ? -ENOMEM : 0;
}

/* Copies the session's packet id file from the folder moved aside, ASIDE, into the fresh spool: its
 * packet ids go on, and the ids the cloud's session may hold are released (session.c). Without it
 * the next connection numbers from 1. */
static void ids_carry(struct fb_spool *s, const char *aside)
{
	char *from = NULL, *to = NULL;
	uint8_t *buf = NULL;
	size_t cap = 0, len = 0;
	int rc = -ENOMEM;

	if(asprintf(&from, "%s/%s", aside, FB_SPOOL_IDS_FILE) < 0){
		from = NULL;
	}else if(asprintf(&to, "%s/%s", s->path, FB_SPOOL_IDS_FILE) < 0){
		to = NULL;
	}
	if(from && to){
		rc = fb_file_read(from, &buf, &cap, &len);
		if(rc == 0){
			rc = fb_file_write(to, buf, len, s->sync == FB_SYNC_ALWAYS);
		}
	}
	if(rc && rc != -ENOENT){
		fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: cannot copy %s from the spool moved aside: %s; packet ids "
				"start at 1 again", s->path, FB_SPOOL_IDS_FILE, strerror(-rc));
	}
	free(buf);
	free(from);
	free(to);
}

/* Renames FROM to PATH.TAG-<NOW>[.N], a name not taken yet. Returns 0 and *dest (caller frees) or
 * -errno. */
static int move_aside(const char *from, const char *path, const char *tag, long long now, char **dest)
{
	struct stat st;
	char *d;
	int n, err;

	for(n = 0; n < 1000; n++){
		if(aside_name(&d, path, tag, now, n) != 0){
			return -ENOMEM;
		}
		if(renameat2(AT_FDCWD, from, AT_FDCWD, d, RENAME_NOREPLACE) == 0){
			*dest = d;
			return 0;
		}
		err = errno;
		if(err == EINVAL || err == ENOSYS){
			/* A file system without RENAME_NOREPLACE: check, then rename. */
			if(lstat(d, &st) == 0){
				err = EEXIST;
			}else if(rename(from, d) == 0){
				*dest = d;
				return 0;
			}else{
				err = errno;
			}
		}
		free(d);
		if(err != EEXIST && err != ENOTEMPTY){
			return -err;
		}
	}
	return -EEXIST;
}

/* ---- damage: copies kept for the operator, losses counted ---- */

/* Which files of a spool folder a copy takes (NULL: all but LOCK). */
typedef bool (*copy_filter_fn)(const char *name);

/* Copies file FROM to the new file TO (synced) through BUF (COPY_BUF bytes). Returns 0 or a
 * negative errno. */
static int copy_data(const char *from, const char *to, char *buf)
{
	int rc = 0, in, out = -1;
	ssize_t n;

	in = open(from, O_RDONLY | O_CLOEXEC);
	out = in < 0 ? -1 : open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if(in < 0 || out < 0){
		rc = -errno;
	}
	while(rc == 0 && (n = read(in, buf, COPY_BUF)) != 0){
		if(n < 0){
			rc = errno == EINTR ? 0 : -errno;
			continue;
		}
		for(ssize_t w = 0, k; rc == 0 && w < n; w += k){
			k = write(out, buf + w, (size_t)(n - w));
			if(k < 0){
				rc = errno == EINTR ? (k = 0) : -errno;
			}
		}
	}
	if(rc == 0 && fsync(out) != 0){
		rc = -errno;
	}
	if(in >= 0){
		close(in);
	}
	if(out >= 0){
		close(out);
	}
	return rc;
}

/* Copies the regular files of folder SRC (flat, as a spool is) that FILTER takes into the new
 * folder DST, which must not exist. Returns 0 or a negative errno (then DST may hold part of the
 * copy). */
static int copy_tree(const char *src, const char *dst, copy_filter_fn filter)
{
	DIR *d;
	struct dirent *e;
	struct stat st;
	char *from = NULL, *to = NULL, *buf;
	int rc = 0;

	if(mkdir(dst, 0700) != 0){
		return -errno;
	}
	d = opendir(src);
	buf = malloc(COPY_BUF);
	if(d == NULL || buf == NULL){
		rc = d == NULL ? -errno : -ENOMEM;
		if(d){
			closedir(d);
		}
		free(buf);
		return rc;
	}
	while(rc == 0 && (e = readdir(d)) != NULL){
		if(strcmp(e->d_name, "LOCK") == 0 || (filter && !filter(e->d_name))){
			continue; /* a lock file another open would see as held: never copied */
		}
		if(asprintf(&from, "%s/%s", src, e->d_name) < 0 || asprintf(&to, "%s/%s", dst, e->d_name) < 0){
			from = to = NULL;
			rc = -ENOMEM;
			break;
		}
		if(lstat(from, &st) == 0 && S_ISREG(st.st_mode)){
			rc = copy_data(from, to, buf);
		}
		free(from);
		free(to);
		from = to = NULL;
	}
	closedir(d);
	free(buf);
	return rc;
}

static int copy_file(const char *from, const char *to);

/* Makes the new folder DST a view of the regular files of folder SRC that FILTER takes, as hard
 * links (no data is written: for a salvage when the disk has no room for a copy). CURRENT, which a
 * salvage may have to write, is copied instead (a few bytes), so that nothing written in DST can
 * reach a file of SRC. Returns 0 or a negative errno (then DST may hold part of it). */
static int link_tree(const char *src, const char *dst, copy_filter_fn filter)
{
	DIR *d;
	struct dirent *e;
	struct stat st;
	char *from = NULL, *to = NULL;
	int rc = 0;

	if(mkdir(dst, 0700) != 0){
		return -errno;
	}
	d = opendir(src);
	if(d == NULL){
		return -errno;
	}
	while(rc == 0 && (e = readdir(d)) != NULL){
		if(strcmp(e->d_name, "LOCK") == 0 || (filter && !filter(e->d_name))){
			continue;
		}
		if(asprintf(&from, "%s/%s", src, e->d_name) < 0 || asprintf(&to, "%s/%s", dst, e->d_name) < 0){
			from = to = NULL;
			rc = -ENOMEM;
			break;
		}
		if(lstat(from, &st) == 0 && S_ISREG(st.st_mode)){
			if(strcmp(e->d_name, "CURRENT") == 0){
				rc = copy_file(from, to);
			}else if(link(from, to) != 0){
				rc = -errno;
			}
		}
		free(from);
		free(to);
		from = to = NULL;
	}
	closedir(d);
	return rc;
}

/* Copies file FROM to the new file TO. Returns 0 or a negative errno. */
static int copy_file(const char *from, const char *to)
{
	char *buf = malloc(COPY_BUF);
	int rc;

	if(buf == NULL){
		return -ENOMEM;
	}
	rc = copy_data(from, to, buf);
	free(buf);
	return rc;
}

/* Removes folder PATH and everything in it (RocksDB's repair adds a folder "lost"). */
static void rm_tree(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;
	struct stat st;
	char *p;

	if(d == NULL){
		return;
	}
	while((e = readdir(d)) != NULL){
		if(strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0
				|| asprintf(&p, "%s/%s", path, e->d_name) < 0){
			continue;
		}
		if(lstat(p, &st) == 0 && S_ISDIR(st.st_mode)){
			rm_tree(p);
		}else{
			unlink(p);
		}
		free(p);
	}
	closedir(d);
	rmdir(path);
}

/* Copies PATH (the files FILTER takes) to PATH.corrupt-<unix time>[.N] for the operator. Returns 0 and *dest (caller frees)
 * or a negative errno. */
static int keep_copy(const char *path, copy_filter_fn filter, char **dest)
{
	long long now = (long long)time(NULL);
	char *d;
	int rc = -EEXIST;

	for(int n = 0; n < 1000 && rc == -EEXIST; n++){
		if(aside_name(&d, path, "corrupt", now, n) != 0){
			return -ENOMEM;
		}
		rc = copy_tree(path, d, filter);
		if(rc == 0){
			*dest = d;
			return 0;
		}
		if(rc != -EEXIST){
			rm_tree(d);
		}
		free(d);
	}
	return rc;
}

/* The files a damaged WAL is kept with: the WAL files and the small ones that describe them (not
 * the table files, which the open does not change, nor the staging files). */
static bool wal_files(const char *name)
{
	size_t len = strlen(name);

	return (len > 4 && strcmp(name + len - 4, ".log") == 0) || strcmp(name, "CURRENT") == 0
			|| strncmp(name, "MANIFEST-", 9) == 0 || strncmp(name, "OPTIONS-", 8) == 0;
}

static bool staging_files(const char *name)
{
	return strncmp(name, FB_CHAN_FILE ".", strlen(FB_CHAN_FILE ".")) == 0;
}

/* Counts N records lost to damage (seqs FIRST..LAST) and logs it once, naming WHERE. */
static void loss_report(struct fb_spool *s, uint64_t n, uint64_t first, uint64_t last, const char *where)
{
	if(n == 0){
		return;
	}
	if(s->corrupt){
		atomic_fetch_add_explicit(s->corrupt, n, memory_order_relaxed);
	}
	fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: %llu records (seq %llu..%llu) lost to damage in %s; "
			"counted in edge_to_cloud/dropped/corrupt", s->path, (unsigned long long)n,
			(unsigned long long)first, (unsigned long long)last, where);
}

/* Sequence gaps in a queue read in order: a record SEQ arrives after EXPECT. */
struct gaps {
	uint64_t expect; /* the next seq expected; 0: take the first one as it comes */
	uint64_t lost, first, last;
};

static void gaps_see(struct gaps *g, uint64_t seq)
{
	if(g->expect && seq > g->expect){
		if(g->lost == 0){
			g->first = g->expect;
		}
		g->lost += seq - g->expect;
		g->last = seq - 1;
	}
	if(seq >= g->expect){
		g->expect = seq + 1;
	}
}

/* Classifies the spool folder before RocksDB opens it, so that a damaged one is moved aside
 * untouched instead of being "repaired" by the open: RocksDB's files without CURRENT would make
 * it create a new database among them; a MANIFEST cut short opens as an older, smaller version of
 * the database (and its newer table files are then deleted as obsolete). Returns 0 or -EIO with
 * *why (caller frees). */
static int db_precheck(struct fb_spool *s, char **why)
{
	DIR *d = opendir(s->path);
	struct dirent *e;
	bool current = false, files = false, out = false;
	char **cfs, *err = NULL;
	size_t ncf = 0, len;

	if(d == NULL){
		return 0; /* the open reports it */
	}
	while((e = readdir(d)) != NULL){
		len = strlen(e->d_name);
		if(strcmp(e->d_name, "CURRENT") == 0){
			current = true;
		}else if(strncmp(e->d_name, "MANIFEST-", 9) == 0
				|| (len > 4 && (strcmp(e->d_name + len - 4, ".sst") == 0
					|| strcmp(e->d_name + len - 4, ".log") == 0))){
			files = true;
		}
	}
	closedir(d);
	if(!current){
		if(files){
			*why = strdup("its CURRENT file is missing");
			return *why ? -EIO : -ENOMEM;
		}
		return 0;
	}
	cfs = rocksdb_list_column_families(s->dbopts, s->path, &ncf, &err);
	if(err){
		int rc = classify_error(err);
		*why = strdup(err);
		rocksdb_free(err);
		if(cfs){
			rocksdb_list_column_families_destroy(cfs, ncf);
		}
		return *why ? rc : -ENOMEM;
	}
	for(size_t i = 0; i < ncf; i++){
		out = out || strcmp(cfs[i], cf_names[CF_OUT]) == 0;
	}
	if(cfs){
		rocksdb_list_column_families_destroy(cfs, ncf);
	}
	if(!out){
		*why = strdup("its MANIFEST does not list the column family \"out\" (damaged or cut short)");
		return *why ? -EIO : -ENOMEM;
	}
	return 0;
}

/* Maps an error of RocksDB's open or of the first scan to what fb_spool_open() does about it:
 * -EBUSY: the LOCK file is held. RocksDB reports it like this (env/fs_posix.cc): by this process,
 *   "IO error: lock hold by current process, ...: PATH/LOCK: No locks available", by another one,
 *   "IO error: While lock file: PATH/LOCK: Resource temporarily unavailable".
 * -ENOSPC, -EACCES, -EMFILE, -ENOMEM: a problem of the machine, not of the spool; moving the spool
 *   aside would hide intact messages (a full disk would not even let a fresh one start).
 * -EIO: anything else (corruption, missing or unreadable files): the spool is moved aside. */
static int classify_error(const char *err)
{
	if(strstr(err, "lock hold by current process") || strstr(err, "While lock file")){
		return -EBUSY;
	}
	if(strstr(err, "No space left on device")){
		return -ENOSPC;
	}
	if(strstr(err, "Permission denied") || strstr(err, "Operation not permitted")){
		return -EACCES;
	}
	if(strstr(err, "Too many open files")){
		return -EMFILE;
	}
	if(strstr(err, "Cannot allocate memory")){
		return -ENOMEM;
	}
	return -EIO;
}

/* A new iterator over column family CF that ends below seq BOUND (UPPER holds the bound and must
 * outlive the iterator; destroy it, then *RO). */
static rocksdb_iterator_t *bounded_iter(struct fb_spool *s, rocksdb_column_family_handle_t *cf,
		uint64_t bound, rocksdb_readoptions_t **ro, uint8_t upper[KEY_LEN])
{
	key_encode(upper, bound);
	*ro = rocksdb_readoptions_create();
	rocksdb_readoptions_set_iterate_upper_bound(*ro, (const char *)upper, KEY_LEN);
	return rocksdb_create_iterator_cf(s->db, *ro, cf);
}

/* With ITLOCK held, or with s->dblock held exclusively. */
static void lane_iter_drop(struct fb_spool *s)
{
	if(s->it){
		rocksdb_iter_destroy(s->it);
		s->it = NULL;
	}
	if(s->itro){
		rocksdb_readoptions_destroy(s->itro);
		s->itro = NULL;
	}
	atomic_store_explicit(&s->itlive, false, memory_order_relaxed);
}

static void db_close(struct fb_spool *s)
{
	size_t i;

	lane_iter_drop(s); /* an iterator goes before its database */
	/* Column family handles go before the database. */
	for(i = 0; i < s->ncf; i++){
		if(s->cfh[i]){
			rocksdb_column_family_handle_destroy(s->cfh[i]);
		}
	}
	free(s->cfh);
	s->cfh = NULL;
	s->ncf = 0;
	if(s->db){
		rocksdb_close(s->db);
		s->db = NULL;
	}
}

/* Opens the database with the required column families plus any others it holds (a newer
 * version may have added some: RocksDB refuses to open a database without all of them).
 * Returns 0, or an error of classify_error() with *why set to RocksDB's message (caller frees). */
static int db_open_once(struct fb_spool *s, char **why)
{
	char *err = NULL;
	char **existing;
	size_t nexisting = 0, n, i, j;
	const char **names = NULL;
	const rocksdb_options_t **cfopts = NULL;
	int rc = 0;

	/* Fails for a new database (no CURRENT file yet) and for a broken one; in both cases the
	 * open below tells what is wrong, so this error is not reported. (Even then it returns an
	 * empty array to free.) */
	existing = rocksdb_list_column_families(s->dbopts, s->path, &nexisting, &err);
	if(err){
		rocksdb_free(err);
		err = NULL;
		if(existing){
			rocksdb_list_column_families_destroy(existing, nexisting);
		}
		existing = NULL;
		nexisting = 0;
	}

	names = calloc(CF_REQUIRED + nexisting, sizeof(*names));
	cfopts = calloc(CF_REQUIRED + nexisting, sizeof(*cfopts));
	s->cfh = calloc(CF_REQUIRED + nexisting, sizeof(*s->cfh));
	if(names == NULL || cfopts == NULL || s->cfh == NULL){
		rc = -ENOMEM;
		goto out;
	}
	for(n = 0; n < CF_REQUIRED; n++){
		names[n] = cf_names[n];
	}
	for(i = 0; i < nexisting; i++){
		for(j = 0; j < CF_REQUIRED && strcmp(existing[i], cf_names[j]) != 0; j++){
		}
		if(j == CF_REQUIRED){
			names[n++] = existing[i];
		}
	}
	for(i = 0; i < n; i++){
		cfopts[i] = s->dbopts;
	}

	s->db = rocksdb_open_column_families(s->dbopts, s->path, (int)n, names, cfopts, s->cfh, &err);
	if(err){
		s->db = NULL;
		rc = classify_error(err);
		*why = strdup(err);
		rocksdb_free(err);
		if(*why == NULL){
			rc = -ENOMEM;
		}
		goto out;
	}
	s->ncf = n;
	s->q[FB_Q_OUT].cf = s->cfh[CF_OUT];
	s->q[FB_Q_IN].cf = s->cfh[CF_IN];
	s->q[FB_Q_DEAD].cf = s->cfh[CF_DEAD];

out:
	if(rc){
		free(s->cfh);
		s->cfh = NULL;
	}
	if(existing){
		rocksdb_list_column_families_destroy(existing, nexisting);
	}
	free(names);
	free(cfopts);
	return rc;
}

/* db_open_once() after db_precheck(); damaged WAL records (the open fails with "Corruption") are
 * skipped on a second try, after a copy of the spool as it was is kept for the operator; the gaps
 * they leave in "out" are counted by scan_queue(). Returns like db_open_once(). */
static int db_open(struct fb_spool *s, char **why)
{
	const char *how;
	char *first = NULL;
	int rc;

	s->wal_skipped = false;
	rocksdb_options_set_wal_recovery_mode(s->dbopts, rocksdb_tolerate_corrupted_tail_records_recovery);
	rc = db_precheck(s, why);
	if(rc){
		return rc;
	}
	rc = db_open_once(s, why);
	if(rc != -EIO || *why == NULL || strstr(*why, "Corruption") == NULL || s->chan_running){
		return rc;
	}
	first = *why;
	*why = NULL;
	free(s->kept);
	s->kept = NULL;
	rc = keep_copy(s->path, wal_files, &s->kept);
	if(rc){
		/* Skipping the damaged records still loses less than moving the spool aside. */
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: cannot keep a copy of the damaged WAL: %s",
				s->path, strerror(-rc));
		s->kept = strdup("(no copy)");
	}
	rocksdb_options_set_wal_recovery_mode(s->dbopts, rocksdb_skip_any_corrupted_records_recovery);
	rc = db_open_once(s, why);
	how = "skipping the damaged WAL records";
	if(rc == -EIO && *why && strstr(*why, "Corruption")){
		/* RocksDB 7.8 skips a damaged record but fails on a damaged batch that passed the record
		 * checks ("Write batch content corrupted"): then the WAL is taken up to the damage, and
		 * the staging files give back what they still hold of the rest. */
		free(*why);
		*why = NULL;
		rocksdb_options_set_wal_recovery_mode(s->dbopts, rocksdb_point_in_time_recovery);
		rc = db_open_once(s, why);
		how = "with the WAL up to its first damaged record";
	}
	rocksdb_options_set_wal_recovery_mode(s->dbopts, rocksdb_tolerate_corrupted_tail_records_recovery);
	if(rc){
		/* Not (only) the WAL: the whole spool is moved aside as it is; the copy is not needed. */
		if(s->kept && s->kept[0] == '/'){
			rm_tree(s->kept);
		}
		free(s->kept);
		s->kept = NULL;
		free(*why);
		*why = first;
		return rc;
	}
	fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: damaged (%s); opened %s, the WAL as it was is kept at %s",
			s->path, first, how, s->kept ? s->kept : "(no copy)");
	free(first);
	s->wal_skipped = true;
	return 0;
}

/* Reads meta KEY into *VAL (rocksdb_free(); NULL when there is none) and *VLEN. Returns 0 or an
 * error of classify_error() with *why. */
static int meta_get(struct fb_spool *s, const char *key, char **val, size_t *vlen, char **why)
{
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	char *err = NULL;

	*vlen = 0;
	*val = rocksdb_get_cf(s->db, ro, s->cfh[CF_META], key, strlen(key), vlen, &err);
	rocksdb_readoptions_destroy(ro);
	if(err){
		int rc = classify_error(err);

		*why = strdup(err);
		rocksdb_free(err);
		return *why ? rc : -ENOMEM;
	}
	return 0;
}

/* Reads the seq that meta KEY holds into *SEQ (0 when there is none, or, with *MALFORMED set, when
 * the value is not a seq; MALFORMED may be NULL). Returns 0 or like meta_get(). */
static int meta_seq(struct fb_spool *s, const char *key, uint64_t *seq, bool *malformed, char **why)
{
	char *val;
	size_t vlen;
	int rc = meta_get(s, key, &val, &vlen, why);

	if(rc){
		return rc;
	}
	*seq = val && vlen == KEY_LEN ? key_decode(val) : 0;
	if(malformed){
		*malformed = val && vlen != KEY_LEN;
	}
	rocksdb_free(val);
	return 0;
}

/* Reads meta KEY, 3 seqs (one per queue), into SEQS. Returns 1 (read), 0 (not there: SEQS are 0)
 * or -1 (unreadable or malformed). */
static int meta_seqs(struct fb_spool *s, const char *key, uint64_t seqs[3])
{
	char *val, *why = NULL;
	size_t vlen;
	int rc;

	memset(seqs, 0, 3 * sizeof(seqs[0]));
	if(meta_get(s, key, &val, &vlen, &why) != 0){
		free(why);
		return -1;
	}
	rc = val == NULL ? 0 : vlen == 3 * KEY_LEN ? 1 : -1;
	if(rc == 1){
		seqs_decode(val, seqs, 3);
	}
	rocksdb_free(val);
	return rc;
}

/* Reads the string that meta KEY holds into *OUT (caller frees; NULL when there is none). Returns
 * 0, -ENOMEM, or like meta_get(). */
static int meta_str(struct fb_spool *s, const char *key, char **out, char **why)
{
	char *val;
	size_t vlen;
	int rc = meta_get(s, key, &val, &vlen, why);

	*out = NULL;
	if(rc || val == NULL){
		return rc;
	}
	*out = malloc(vlen + 1); /* VAL holds no NUL: copied, not read as a string */
	if(*out){
		memcpy(*out, val, vlen);
		(*out)[vlen] = '\0';
	}
	rocksdb_free(val);
	return *out ? 0 : -ENOMEM;
}

/* Reads the floor of queue QI from "meta" into q->floor (0 when there is none). Returns 0 or an
 * error of classify_error() with *why. */
static int read_floor(struct fb_spool *s, enum fb_queue qi, char **why)
{
	bool malformed;
	int rc = meta_seq(s, floor_keys[qi], &s->q[qi].floor, &malformed, why);

	if(rc == 0 && malformed){
		fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: ignoring a malformed floor "
				"of \"%s\"", s->path, queue_name(qi));
	}
	return rc;
}

/* Writes S->wb while the spool loads. Returns 0 or an error of classify_error() with *why. */
static int load_write(struct fb_spool *s, char **why)
{
	char *err = NULL;
	int rc;

	rocksdb_write(s->db, s->wo, s->wb, &err);
	rocksdb_writebatch_clear(s->wb);
	if(err == NULL){
		return 0;
	}
	rc = classify_error(err);
	*why = strdup(err);
	rocksdb_free(err);
	return *why ? rc : -ENOMEM;
}

/* Recovery of staged records: those above the floor, the last key found and the settled mark go
 * into S->wb. */
struct recover_ctx {
	struct fb_spool *s;
	struct spool_queue *q;
	uint64_t from; /* lowest seq to take */
	uint64_t n;
	int rc;
	char **why;
};

static int recover_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct recover_ctx *c = ud;
	uint8_t key[KEY_LEN];

	if(seq < c->from){
		return 0; /* in RocksDB already (settled), or below the floor */
	}
	if(seqset_reserve(&c->q->live, seq) != 0
			|| (c->q->lanes && lanes_add(c->q->lanes, seq, val, len) != 0)){
		c->rc = -ENOMEM;
		return 1;
	}
	key_encode(key, seq);
	rocksdb_writebatch_put_cf(c->s->wb, c->q->cf, (const char *)key, sizeof(key), val, len);
	queue_remember(c->q, seq, KEY_LEN + (uint64_t)len);
	c->from = seq + 1;
	c->n++;
	return 0;
}

/* Reads the settled mark into s->settled. Returns 0 or an error of classify_error() with *why. */
static int read_settled(struct fb_spool *s, char **why)
{
	return meta_seq(s, SETTLED_KEY, &s->settled, NULL, why);
}

/* Adds the settled mark SEQ to S->wb. */
static void settled_stage(struct fb_spool *s, uint64_t seq)
{
	uint8_t v[KEY_LEN];

	key_encode(v, seq);
	rocksdb_writebatch_put_cf(s->wb, s->cfh[CF_META], SETTLED_KEY, strlen(SETTLED_KEY), (const char *)v, sizeof(v));
}

/* Counts and logs what recovering the staging files of folder DIR found lost (KEPT: where a copy
 * of them is, may be NULL). */
static void chan_loss_report(struct fb_spool *s, const char *dir, const struct fb_chan_loss *loss,
		const char *kept)
{
	char where[8192], name[4096];
	size_t n = 0;

	if(loss->lost == 0){
		return;
	}
	n += (size_t)snprintf(where + n, sizeof(where) - n, "staging file");
	for(unsigned i = 0; i < 2; i++){
		if(!((loss->damaged ? loss->damaged : loss->files) & (1u << i))
				|| fb_chan_file_name(dir, i, name, sizeof(name)) != 0){
			continue;
		}
		if(loss->damaged & (1u << i)){
			n += (size_t)snprintf(where + n, sizeof(where) - n, " %s (damaged bytes from offset %zu)",
					name, loss->damaged_off[i]);
		}else{
			n += (size_t)snprintf(where + n, sizeof(where) - n, " %s", name);
		}
		if(n >= sizeof(where)){
			break;
		}
	}
	if(loss->big_lost && n < sizeof(where)){
		n += (size_t)snprintf(where + n, sizeof(where) - n, " (%llu of them large records whose "
				"own file is missing)", (unsigned long long)loss->big_lost);
	}
	if(kept && n < sizeof(where)){
		snprintf(where + n, sizeof(where) - n, "; the staging files as they were are kept at %s", kept);
	}
	loss_report(s, loss->lost, loss->first_seq, loss->last_seq, where);
}

static int refill_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct recover_ctx *c = ud;
	uint8_t key[KEY_LEN];

	key_encode(key, seq);
	rocksdb_writebatch_put_cf(c->s->wb, c->q->cf, (const char *)key, sizeof(key), val, len);
	c->n++;
	if(rocksdb_writebatch_count(c->s->wb) >= 1000){
		c->rc = load_write(c->s, c->why);
	}
	return c->rc ? 1 : 0;
}

/* After damaged WAL records were skipped, before "out" is scanned: the staging files may still
 * hold records that were settled in them (a file is emptied only once the writer has moved on),
 * so every one from the floor on goes into RocksDB again. One that is there already is written
 * over with the same bytes; one that was deleted out of order comes back (sent again, which
 * at-least-once allows). Returns 0 or an error of classify_error() with *why. */
static int wal_refill(struct fb_spool *s, struct spool_queue *q, char **why)
{
	struct recover_ctx c = { .s = s, .q = q, .why = why };
	int rc;

	rc = fb_chan_reader_open(s->path, s->sh, true, &s->chan);
	if(rc){
		*why = strdup(strerror(-rc));
		return *why ? rc : -ENOMEM;
	}
	rc = fb_chan_recover(s->chan, q->floor ? q->floor : 1, refill_visit, &c, NULL);
	if(c.rc){
		rocksdb_writebatch_clear(s->wb);
		return c.rc;
	}
	if(rc < 0){
		rocksdb_writebatch_clear(s->wb);
		*why = strdup(strerror(-rc));
		return *why ? rc : -ENOMEM;
	}
	rc = rocksdb_writebatch_count(s->wb) ? load_write(s, why) : 0;
	if(rc == 0 && c.n){
		fb_log(&s->lg, MOSQ_LOG_NOTICE, "spool %s: %llu records the staging files still hold "
				"written into \"out\" again (over any copy the WAL kept of them)", s->path,
				(unsigned long long)c.n);
	}
	return rc;
}

/* Opens the staging channel. A fresh one (no writer yet): the records staged before the last stop
 * go into "out" here, and the files are emptied when the queue is loaded (chan_reset()). Returns
 * 0 or an error of classify_error() with *why. */
static int chan_open(struct fb_spool *s, struct spool_queue *q, char **why)
{
	struct recover_ctx c = { .s = s, .q = q };
	struct fb_chan_loss loss;
	int rc;

	rc = read_settled(s, why);
	if(rc){
		return rc;
	}
	if(s->chan == NULL){
		rc = fb_chan_reader_open(s->path, s->sh, !s->chan_running, &s->chan);
	}
	if(rc){
		*why = strdup(strerror(-rc));
		return *why ? rc : -ENOMEM;
	}
	if(s->chan_running){
		return 0; /* its records are taken like new ones (fb_spool_ingest()) */
	}
	c.from = q->next_seq > q->floor ? q->next_seq : q->floor;
	if(c.from < s->settled + 1){
		c.from = s->settled + 1;
	}
	rc = fb_chan_recover(s->chan, c.from, recover_visit, &c, &loss);
	if(c.rc || rc < 0){
		rocksdb_writebatch_clear(s->wb);
		*why = strdup(strerror(c.rc ? -c.rc : -rc));
		return *why ? (c.rc ? c.rc : rc) : -ENOMEM;
	}
	if(c.n){
		settled_stage(s, c.from - 1);
		rc = load_write(s, why);
		if(rc){
			return rc;
		}
		s->settled = c.from - 1;
		q->next_seq = c.from;
		fb_log(&s->lg, MOSQ_LOG_NOTICE, "spool %s: %llu staged records taken "
				"into \"out\"", s->path, (unsigned long long)c.n);
	}
	if(loss.lost){
		char *kept = NULL;

		/* They are emptied next: the operator gets them as they were. */
		rc = keep_copy(s->path, staging_files, &kept);
		if(rc){
			fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: cannot keep a copy of the damaged staging "
					"files: %s", s->path, strerror(-rc));
		}
		chan_loss_report(s, s->path, &loss, kept);
		free(kept);
	}
	return 0;
}

/* A fresh channel starts empty, its writer at the queue's next seq. */
static int chan_reset(struct fb_spool *s, char **why)
{
	int rc = fb_chan_reset(s->chan, s->q[FB_Q_OUT].next_seq);

	if(rc){
		*why = strdup(strerror(-rc));
		return *why ? rc : -ENOMEM;
	}
	fb_chan_account(s->chan, 0, s->q[FB_Q_OUT].bytes);
	return 0;
}

/* Reads all of Q once, from its floor on: count, bytes, live set, next seq. A queue found empty
 * starts again at 1: the records below its floor are removed with a range tombstone in the same
 * write as the floor itself. Returns 0, -ENOMEM, or an error of classify_error() with *why. */
static int scan_queue(struct fb_spool *s, enum fb_queue qi, char **why)
{
	struct spool_queue *q = &s->q[qi];
	rocksdb_readoptions_t *ro;
	rocksdb_iterator_t *it;
	uint8_t from[KEY_LEN], to[KEY_LEN];
	const char *key, *val;
	size_t klen, vlen, bad = 0;
	uint64_t seq, last = 0;
	char *err = NULL;
	struct gaps g = { 0 };
	bool count_gaps = qi == FB_Q_OUT && s->wal_skipped;
	int rc;

	rc = read_floor(s, qi, why);
	if(rc){
		return rc;
	}
	g.expect = q->floor ? q->floor : 1;
	if(count_gaps){
		rc = wal_refill(s, q, why);
		if(rc){
			return rc;
		}
	}
	key_encode(from, q->floor);
	ro = rocksdb_readoptions_create();
	rocksdb_readoptions_set_fill_cache(ro, 0); /* a one-off scan: keep the cache for the head */
	it = rocksdb_create_iterator_cf(s->db, ro, q->cf);
	for(rocksdb_iter_seek(it, (const char *)from, sizeof(from)); rocksdb_iter_valid(it);
			rocksdb_iter_next(it)){
		key = rocksdb_iter_key(it, &klen);
		val = rocksdb_iter_value(it, &vlen);
		seq = klen == KEY_LEN ? key_decode(key) : 0;
		if(seq == 0){
			bad++;
			continue;
		}
		if(seqset_reserve(&q->live, seq) != 0 || (q->lanes && lanes_add(q->lanes, seq, val, vlen) != 0)){
			rc = -ENOMEM;
			break;
		}
		queue_remember(q, seq, klen + vlen);
		gaps_see(&g, seq);
		last = seq;
	}
	rocksdb_iter_get_error(it, &err);
	if(err){
		rc = classify_error(err);
		*why = strdup(err);
		rocksdb_free(err);
		if(*why == NULL){
			rc = -ENOMEM;
		}
	}
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);

	q->next_seq = last + 1;
	if(rc == 0 && count_gaps){
		/* Damaged WAL records were skipped: what is missing between the floor and the newest seq
		 * settled is lost. (Records deleted out of order, behind an older live one, count too.) */
		rc = read_settled(s, why);
		if(rc == 0 && s->settled >= g.expect){
			gaps_see(&g, s->settled + 1);
			g.expect = s->settled + 1;
		}
		if(rc == 0){
			char where[4096];

			snprintf(where, sizeof(where), "the WAL (the WAL as it was is kept at %s)",
					s->kept ? s->kept : "(no copy)");
			loss_report(s, g.lost, g.first, g.last, where);
		}
	}
	if(rc == 0 && bad){
		fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: ignoring %zu records with a "
				"malformed key in \"%s\"", s->path, bad, queue_name(qi));
	}
	if(rc == 0 && qi == FB_Q_OUT){
		rc = chan_open(s, q, why);
	}
	/* A queue found empty starts again at 1, unless the channel runs: a running writer stages into
	 * "out" already, the broker's ring marks number "in" (in_next), and the requeue ring may still
	 * hold entries of "dead" that an earlier link process put there, by seq (control.c): "dead"
	 * goes on above its floor. */
	if(rc == 0 && qi != FB_Q_OUT && q->count == 0 && s->chan_running && q->next_seq < q->floor){
		q->next_seq = q->floor;
	}
	if(rc == 0 && q->count == 0 && (q->floor > 0 || (qi == FB_Q_OUT && s->settled))
			&& !s->chan_running){
		key_encode(from, 0);
		key_encode(to, q->floor);
		if(q->floor > 0){
			rocksdb_writebatch_delete_range_cf(s->wb, q->cf, (const char *)from, sizeof(from),
					(const char *)to, sizeof(to));
		}
		rocksdb_writebatch_delete_cf(s->wb, s->cfh[CF_META], floor_keys[qi],
				strlen(floor_keys[qi]));
		if(qi == FB_Q_OUT){
			rocksdb_writebatch_delete_cf(s->wb, s->cfh[CF_META], SETTLED_KEY, strlen(SETTLED_KEY));
		}else if(qi == FB_Q_DEAD){
			rocksdb_writebatch_delete_cf(s->wb, s->cfh[CF_META], DEAD_NEXT_KEY, strlen(DEAD_NEXT_KEY));
		}
		rc = load_write(s, why);
		if(rc){
			return rc;
		}
		q->floor = 0;
		q->next_seq = 1;
		if(qi == FB_Q_OUT){
			s->settled = 0;
		}
	}
	if(rc == 0 && qi == FB_Q_IN && q->next_seq < s->in_next){
		q->next_seq = s->in_next;
	}
	if(rc == 0 && qi == FB_Q_DEAD && (q->count > 0 || s->chan_running)){
		uint64_t next = 0;

		/* Above the last live one is not enough: a dead letter deleted above an older live one
		 * (requeued while a larger one stays) keeps its seq. */
		rc = meta_seq(s, DEAD_NEXT_KEY, &next, NULL, why);
		if(rc == 0 && next > q->next_seq){
			q->next_seq = next;
		}
	}
	/* While a salvage is under way, no record takes a seq it may have queued: starting again, it
	 * deletes those (salvage_resume()), and a queue found empty would start again at 1 below them
	 * (an open on a full disk goes on without the salvage; a running writer has its seqs). */
	if(rc == 0 && q->next_seq < s->salvage_next[qi] && !(qi == FB_Q_OUT && s->chan_running)){
		q->next_seq = s->salvage_next[qi];
	}
	if(rc == 0 && qi == FB_Q_OUT && !s->chan_running){
		rc = chan_reset(s, why);
	}
	q->ranged = 0;
	return rc;
}

static void queues_reset(struct fb_spool *s)
{
	int i;

	for(i = 0; i < 3; i++){
		free(s->q[i].live.w);
		memset(&s->q[i], 0, sizeof(s->q[i]));
	}
	lanes_free(&s->lanes);
	s->q[FB_Q_OUT].lanes = &s->lanes;
}

/* Opens the database and loads the queues. Returns 0 or a negative errno with
 * *why (caller frees); -EIO means the spool itself cannot be read (see classify_error()). */
static int spool_load(struct fb_spool *s, char **why)
{
	int rc, i;

	rc = db_open(s, why);
	if(rc == 0 && meta_seqs(s, SALVAGE_NEXT_KEY, s->salvage_next) < 0){
		memset(s->salvage_next, 0, sizeof(s->salvage_next));
	}
	for(i = 0; rc == 0 && i < 3; i++){
		rc = scan_queue(s, (enum fb_queue)i, why);
	}
	if(rc){
		fb_chan_reader_close(s->chan);
		s->chan = NULL;
	}
	if(rc && s->db){
		db_close(s);
		queues_reset(s);
	}
	return rc;
}

/* ---- the marker file and the reserve ---- */

static const char marker_text[] = MARKER_MAGIC "\nformat 1\n";

/* Whether NAME is a file that a spool folder of an older version (without the marker) holds:
 * RocksDB's (CURRENT, IDENTITY, LOCK, LOG, LOG.old.*, MANIFEST-*, OPTIONS-*, <number>.log,
 * <number>.sst, <number>.dbtmp) and ours (flowmq-stage.*, flowmq-big-*, flowmq-c2e-*). */
static bool legacy_name(const char *n)
{
	static const char *const exact[] = { "CURRENT", "IDENTITY", "LOCK", "LOG" };
	static const char *const prefix[] = { "LOG.old.", "MANIFEST-", "OPTIONS-", "flowmq-stage.",
		"flowmq-big-", "flowmq-c2e-" };
	static const char *const suffix[] = { ".log", ".sst", ".dbtmp" };
	size_t i, d;

	for(i = 0; i < sizeof(exact) / sizeof(exact[0]); i++){
		if(strcmp(n, exact[i]) == 0){
			return true;
		}
	}
	for(i = 0; i < sizeof(prefix) / sizeof(prefix[0]); i++){
		if(strncmp(n, prefix[i], strlen(prefix[i])) == 0){
			return true;
		}
	}
	d = strspn(n, "0123456789");
	for(i = 0; d > 0 && i < sizeof(suffix) / sizeof(suffix[0]); i++){
		if(strcmp(n + d, suffix[i]) == 0){
			return true;
		}
	}
	return false;
}

/* Writes the marker into the folder (a new file, synced with its folder). Returns 0 or -errno. */
static int marker_write(const char *path)
{
	char *file;
	int fd, dfd, rc = 0;
	size_t len = strlen(marker_text);

	if(asprintf(&file, "%s/" MARKER_FILE, path) < 0){
		return -ENOMEM;
	}
	fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if(fd < 0 || write(fd, marker_text, len) != (ssize_t)len || fsync(fd) != 0){
		rc = errno ? -errno : -EIO;
	}
	if(fd >= 0){
		close(fd);
	}
	if(rc){
		unlink(file);
	}else if((dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0){
		fsync(dfd);
		close(dfd);
	}
	free(file);
	return rc;
}

/* Reads the marker: 1 when it is ours (and readable by this version), 0 when there is none,
 * -EPROTO for a newer format, -ENOTEMPTY for a file of that name that is no marker of ours, or
 * another negative errno. A marker torn by a crash while it was written (a prefix of ours) is
 * ours, and written again with FIX. */
static int marker_read(struct fb_spool *s, bool fix)
{
	char *file, buf[256];
	unsigned long ver = 0;
	ssize_t n;
	int fd, rc;

	if(asprintf(&file, "%s/" MARKER_FILE, s->path) < 0){
		return -ENOMEM;
	}
	fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	free(file);
	if(fd < 0){
		return errno == ENOENT ? 0 : -errno;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	rc = n < 0 ? -errno : 0;
	close(fd);
	if(n < 0){
		return rc;
	}
	buf[n] = '\0';
	if((size_t)n < strlen(marker_text) && strncmp(buf, marker_text, (size_t)n) == 0){
		rc = fix ? marker_write(s->path) : 0;
		return rc ? rc : 1;
	}
	if(strncmp(buf, MARKER_MAGIC "\nformat ", strlen(MARKER_MAGIC "\nformat ")) != 0){
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool.path %s: its file " MARKER_FILE " is "
				"not a flowmq-bridge spool marker; refusing to use the folder", s->path);
		return -ENOTEMPTY;
	}
	ver = strtoul(buf + strlen(MARKER_MAGIC "\nformat "), NULL, 10);
	if(ver == 0 || ver > MARKER_VERSION){
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool.path %s: the spool has format %lu, "
				"this version reads format %d only; refusing to use it", s->path, ver,
				MARKER_VERSION);
		return -EPROTO;
	}
	return 1;
}

/* What a folder without the marker holds: *ANY entry at all, *CURRENT among them, and in
 * STRANGER (256 bytes, "" when none) the first entry that is no file of a spool of an older
 * version (a regular file that legacy_name() accepts). Returns 0 or a negative errno (logged). */
static int folder_scan(struct fb_spool *s, char *stranger, bool *any, bool *current)
{
	DIR *d;
	struct dirent *e;
	struct stat st;
	int rc;

	stranger[0] = '\0';
	*any = *current = false;
	d = opendir(s->path);
	if(d == NULL){
		rc = -errno;
		fb_log(&s->lg, MOSQ_LOG_ERR, "cannot read spool folder %s: %s", s->path,
				strerror(-rc));
		return rc;
	}
	while((e = readdir(d)) != NULL){
		if(strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0){
			continue;
		}
		*any = true;
		if(fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)
				|| !legacy_name(e->d_name)){
			if(stranger[0] == '\0'){
				snprintf(stranger, 256, "%s", e->d_name);
			}
		}else if(strcmp(e->d_name, "CURRENT") == 0){
			*current = true;
		}
	}
	closedir(d);
	return 0;
}

/* Makes sure the folder is a spool of ours before anything is written into it: one with the
 * marker, a new or empty folder (marked here), or a spool of an older version, recognised by its
 * file set (exactly the files legacy_name() accepts, all regular files, CURRENT among them:
 * marked here, "adopted"). Anything else is refused, naming the path and a file that does not
 * belong, and left as it is. Returns 0 or a negative errno (logged). */
static int marker_check(struct fb_spool *s)
{
	char stranger[256];
	bool any, current;
	int rc = marker_read(s, true);

	if(rc != 0){
		return rc < 0 ? rc : 0;
	}
	rc = folder_scan(s, stranger, &any, &current);
	if(rc){
		return rc;
	}
	if(any && (stranger[0] || !current)){
		if(stranger[0]){
			fb_log(&s->lg, MOSQ_LOG_ERR, "spool.path %s is not empty and is not "
					"a flowmq-bridge spool (no " MARKER_FILE " file; \"%s\" is no spool file): "
					"refusing to use it; give spool.path a new or empty folder", s->path, stranger);
		}else{
			fb_log(&s->lg, MOSQ_LOG_ERR, "spool.path %s is not empty and is not "
					"a flowmq-bridge spool (no " MARKER_FILE " file, no RocksDB CURRENT file): "
					"refusing to use it; give spool.path a new or empty folder", s->path);
		}
		return -ENOTEMPTY;
	}
	rc = marker_write(s->path);
	if(rc){
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: cannot write " MARKER_FILE ": %s",
				s->path, strerror(-rc));
		return rc;
	}
	if(any){
		fb_log(&s->lg, MOSQ_LOG_NOTICE, "spool %s: a spool of an earlier version, "
				"marked as ours (" MARKER_FILE ")", s->path);
	}
	return 0;
}

/* ---- salvage: what can be read from a spool moved aside is queued again ---- */

struct salvage {
	struct fb_spool *s;
	rocksdb_t *db;
	rocksdb_column_family_handle_t **cfh;
	char **names;
	size_t ncf;
	int qcf[3];          /* index in cfh of each queue's column family, -1: none */
	int meta;
	uint64_t put[3];     /* records queued again, by queue */
	uint64_t unreadable; /* unreadable stretches skipped */
	struct gaps g;
	enum fb_queue qi;
	int rc;
	char *why;
};

/* Adds to the write batch: meta KEY = the next seq of each queue (SALVAGE_FROM_KEY, SALVAGE_NEXT_KEY). */
static void salvage_seqs_put(struct fb_spool *s, const char *key)
{
	uint8_t v[3 * KEY_LEN];
	uint64_t next[3] = { s->q[0].next_seq, s->q[1].next_seq, s->q[2].next_seq };

	seqs_encode(v, next, 3);
	rocksdb_writebatch_put_cf(s->wb, s->cfh[CF_META], key, strlen(key), (const char *)v, sizeof(v));
}

/* Writes what the salvage has queued, with how far it has come (SALVAGE_NEXT_KEY) in the same
 * write. Returns 0 or like load_write(). */
static int salvage_write(struct salvage *v)
{
	salvage_seqs_put(v->s, SALVAGE_NEXT_KEY);
	return load_write(v->s, &v->why);
}

/* Appends a salvaged record to queue QI of the spool (written in batches of some 1,000). */
static int salvage_put(struct salvage *v, enum fb_queue qi, const void *val, size_t len)
{
	struct fb_spool *s = v->s;
	struct spool_queue *q = &s->q[qi];
	uint8_t key[KEY_LEN];

	if(seqset_reserve(&q->live, q->next_seq) != 0
			|| (q->lanes && lanes_add(q->lanes, q->next_seq, val, len) != 0)){
		return -ENOMEM;
	}
	key_encode(key, q->next_seq);
	rocksdb_writebatch_put_cf(s->wb, q->cf, (const char *)key, sizeof(key), val, len);
	if(qi == FB_Q_DEAD){
		dead_next_stage(s);
	}
	queue_remember(q, q->next_seq++, KEY_LEN + (uint64_t)len);
	v->put[qi]++;
	if(rocksdb_writebatch_count(s->wb) >= 1000){
		return salvage_write(v);
	}
	return 0;
}

/* Makes the reserve file (s->lay.reserve bytes of allocated blocks) unless it is there. Returns 0
 * or a negative errno (nothing is left behind then). */
static int reserve_make(struct fb_spool *s)
{
	char *file;
	struct stat st;
	int fd, rc = 0;

	if(asprintf(&file, "%s/" RESERVE_FILE, s->path) < 0){
		return -ENOMEM;
	}
	fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if(fd < 0){
		rc = -errno;
	}else if(fstat(fd, &st) == 0 && (uint64_t)st.st_blocks * 512u >= s->lay.reserve){
		rc = 0;
	}else{
		rc = -posix_fallocate(fd, 0, (off_t)s->lay.reserve);
	}
	if(fd >= 0){
		close(fd);
	}
	if(rc && fd >= 0){
		unlink(file);
	}
	free(file);
	return rc;
}

/* Deletes the reserve file. Returns true when there was one. */
static bool reserve_drop(struct fb_spool *s)
{
	char *file;
	bool gone;

	if(asprintf(&file, "%s/" RESERVE_FILE, s->path) < 0){
		return false;
	}
	gone = unlink(file) == 0;
	free(file);
	return gone;
}

static int salvage_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct salvage *v = ud;

	if(v->qi == FB_Q_OUT){
		gaps_see(&v->g, seq);
	}
	v->rc = salvage_put(v, v->qi, val, len);
	return v->rc ? 1 : 0;
}

/* Seeks a new iterator of CF to FROM: 1 when that works (a record or the end), 0 when it meets
 * unreadable data; *IT is the iterator either way (caller destroys). */
static int salvage_seek(struct salvage *v, rocksdb_column_family_handle_t *cf, rocksdb_readoptions_t *ro,
		uint64_t from, rocksdb_iterator_t **it)
{
	uint8_t key[KEY_LEN];
	char *err = NULL;

	*it = rocksdb_create_iterator_cf(v->db, ro, cf);
	key_encode(key, from);
	rocksdb_iter_seek(*it, (const char *)key, sizeof(key));
	if(rocksdb_iter_valid(*it)){
		return 1;
	}
	rocksdb_iter_get_error(*it, &err);
	if(err){
		rocksdb_free(err);
		return 0;
	}
	return 1;
}

/* Visits every readable record of CF from seq FROM on, in order. Past unreadable data (a damaged
 * block of a table file) it looks for the first seq from which a seek works again: doubling the
 * step, then halving the interval. */
static int salvage_cf(struct salvage *v, rocksdb_column_family_handle_t *cf, uint64_t from)
{
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	rocksdb_iterator_t *it = NULL;
	const char *key, *val;
	size_t klen, vlen;
	uint64_t pos = from, lo, hi, step;
	char *err = NULL;
	int rc = 0;

	rocksdb_readoptions_set_fill_cache(ro, 0);
	for(;;){
		if(!salvage_seek(v, cf, ro, pos, &it)){
			goto skip;
		}
		for(; rocksdb_iter_valid(it); rocksdb_iter_next(it)){
			key = rocksdb_iter_key(it, &klen);
			val = rocksdb_iter_value(it, &vlen);
			if(klen != KEY_LEN || key_decode(key) < pos){
				continue;
			}
			pos = key_decode(key) + 1;
			if(salvage_visit(v, pos - 1, val, vlen)){
				rc = v->rc;
				goto out;
			}
		}
		rocksdb_iter_get_error(it, &err);
		if(err == NULL){
			break; /* the end */
		}
		rocksdb_free(err);
		err = NULL;
skip:
		rocksdb_iter_destroy(it);
		it = NULL;
		v->unreadable++;
		/* seek(pos) fails: find the smallest seq above it from which a seek works. */
		for(step = 1, lo = pos; ; step *= 2){
			hi = pos + step;
			if(hi < pos || step > ((uint64_t)1 << 62)){
				goto out; /* nothing readable after it */
			}
			if(salvage_seek(v, cf, ro, hi, &it)){
				rocksdb_iter_destroy(it);
				it = NULL;
				break;
			}
			rocksdb_iter_destroy(it);
			it = NULL;
			lo = hi;
		}
		while(hi - lo > 1){
			uint64_t mid = lo + (hi - lo) / 2;
			int ok = salvage_seek(v, cf, ro, mid, &it);

			rocksdb_iter_destroy(it);
			it = NULL;
			if(ok){
				hi = mid;
			}else{
				lo = mid;
			}
		}
		pos = hi;
	}
out:
	if(it){
		rocksdb_iter_destroy(it);
	}
	rocksdb_readoptions_destroy(ro);
	return rc;
}

/* Reads meta KEY of the salvaged database as a seq: 1 found, 0 not. */
static int salvage_meta(struct salvage *v, const char *key, uint64_t *seq)
{
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	char *err = NULL, *val;
	size_t vlen = 0;
	int found = 0;

	*seq = 0;
	if(v->meta < 0){
		rocksdb_readoptions_destroy(ro);
		return 0;
	}
	val = rocksdb_get_cf(v->db, ro, v->cfh[v->meta], key, strlen(key), &vlen, &err);
	rocksdb_readoptions_destroy(ro);
	if(err){
		rocksdb_free(err);
	}else if(val && vlen == KEY_LEN){
		*seq = key_decode(val);
		found = 1;
	}
	rocksdb_free(val);
	return found;
}

/* Opens the database at DIR read only, skipping damaged WAL records; with NEED_OUT, a database
 * without "out" fails. Returns 0 or -EIO (*err set). */
static int salvage_open(struct salvage *v, rocksdb_options_t *o, const char *dir, bool need_out, char **err)
{
	const rocksdb_options_t **cfo;

	v->names = rocksdb_list_column_families(o, dir, &v->ncf, err);
	if(*err){
		return -EIO;
	}
	cfo = calloc(v->ncf, sizeof(*cfo));
	v->cfh = calloc(v->ncf, sizeof(*v->cfh));
	if(cfo == NULL || v->cfh == NULL){
		free(cfo);
		return -ENOMEM;
	}
	for(size_t i = 0; i < v->ncf; i++){
		cfo[i] = o;
	}
	v->db = rocksdb_open_for_read_only_column_families(o, dir, (int)v->ncf, (const char *const *)v->names,
			cfo, v->cfh, 0, err);
	free(cfo);
	if(*err){
		v->db = NULL;
		return -EIO;
	}
	for(int q = 0; q < 3; q++){
		v->qcf[q] = -1;
	}
	v->meta = -1;
	for(size_t i = 0; i < v->ncf; i++){
		for(int j = CF_OUT; j < CF_REQUIRED; j++){
			if(strcmp(v->names[i], cf_names[j]) == 0){
				if(j == CF_META){
					v->meta = (int)i;
				}else{
					v->qcf[j - CF_OUT] = (int)i;
				}
			}
		}
	}
	if(v->qcf[FB_Q_OUT] < 0 && need_out){
		/* A MANIFEST cut short opens as a database without it: repair finds it in the tables. */
		*err = strdup("no column family \"out\"");
		return -EIO;
	}
	return 0;
}

static void salvage_close(struct salvage *v)
{
	for(size_t i = 0; v->cfh && i < v->ncf; i++){
		if(v->cfh[i]){
			rocksdb_column_family_handle_destroy(v->cfh[i]);
		}
	}
	free(v->cfh);
	v->cfh = NULL;
	if(v->db){
		rocksdb_close(v->db);
		v->db = NULL;
	}
	if(v->names){
		rocksdb_list_column_families_destroy(v->names, v->ncf);
		v->names = NULL;
	}
	v->ncf = 0;
}


/* A salvage cut short (SALVAGE_KEY still set): runs it again. What each earlier try queued (its
 * SALVAGE_FROM_KEY to SALVAGE_NEXT_KEY, written with its records; those of tries before it in
 * SALVAGE_TRIES_KEY) is deleted at the end when this try queued as much into every queue
 * (salvage()); whatever the spool held besides stays, also records captured between the tries
 * when the channel went ready in between (an open on a full disk skips this). Marks that cannot
 * be read, or of an earlier version (without seqs), delete nothing: what was queued comes again.
 * Only with a fresh channel, right after spool_load(). Returns 0 or like spool_load(). */
static int salvage_resume(struct fb_spool *s, char **why)
{
	struct salvage_redo *redo = calloc(1, sizeof(*redo));
	uint64_t injected, from[3], next[3];
	char *aside, *val, *err = NULL;
	size_t vlen;
	int rc;

	if(redo == NULL){
		return -ENOMEM;
	}
	rc = meta_str(s, SALVAGE_KEY, &aside, why);
	if(rc || aside == NULL){
		free(redo);
		return rc;
	}
	/* What the broker had injected of its "in", as the first try had it. */
	if(meta_seq(s, SALVAGE_IN_KEY, &injected, NULL, why) != 0){
		free(*why); /* unread: then what the broker had injected comes again, at least once */
		*why = NULL;
		injected = 0;
	}
	fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: the salvage of %s was cut short; it starts again",
			s->path, aside);
	if(meta_get(s, SALVAGE_TRIES_KEY, &val, &vlen, &err) == 0 && val && vlen % (6 * KEY_LEN) == 0){
		for(size_t k = 0; k < vlen / (6 * KEY_LEN) && redo->n < TRIES_MAX; k++, redo->n++){
			seqs_decode(val + k * 6 * KEY_LEN, redo->from[redo->n], 3);
			seqs_decode(val + (k * 6 + 3) * KEY_LEN, redo->next[redo->n], 3);
		}
	}
	rocksdb_free(val);
	free(err);
	rc = meta_seqs(s, SALVAGE_FROM_KEY, from);
	if(rc == 1 && meta_seqs(s, SALVAGE_NEXT_KEY, next) == 1){
		if(redo->n < TRIES_MAX && (next[0] > from[0] || next[1] > from[1] || next[2] > from[2])){
			memcpy(redo->from[redo->n], from, sizeof(from));
			memcpy(redo->next[redo->n], next, sizeof(next));
			redo->n++;
		}
	}else{
		fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: %s; what the try of the salvage of %s that was cut "
				"short queued stays and is queued again", s->path, rc == 0 ? "it was started by an earlier "
				"version" : "its marks cannot be read", aside);
	}
	rc = salvage(s, aside, injected, redo);
	if(rc){
		*why = strdup("queuing the salvaged records failed (logged above)");
	}
	free(aside);
	free(redo);
	return rc;
}

struct range_count {
	uint64_t next, n;
};

static int range_count_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct range_count *c = ud;

	(void)val;
	(void)len;
	if(seq >= c->next){
		return 1;
	}
	c->n++;
	return 0;
}

/* How many records queue QI holds from FROM up to NEXT; UINT64_MAX when they cannot be read. */
static uint64_t range_count(struct fb_spool *s, enum fb_queue qi, uint64_t from, uint64_t next)
{
	struct range_count c = { next, 0 };

	if(next > from && fb_spool_read(s, qi, from ? from - 1 : 0, SIZE_MAX, range_count_visit, &c) < 0){
		return UINT64_MAX;
	}
	return c.n;
}

/* Deletes the records of the tries of REDO that GONE marks and loads the queues again. Returns 0
 * (nothing deleted when the write failed: then both stay) or, when the load failed after the
 * delete, like spool_load() (the database is closed then). */
static int salvage_redo_delete(struct fb_spool *s, const struct salvage_redo *redo, const bool *gone, char **why)
{
	uint8_t lo[KEY_LEN], hi[KEY_LEN];
	int rc;

	for(size_t i = 0; i < redo->n; i++){
		for(int q = 0; gone[i] && q < 3; q++){
			if(redo->next[i][q] > redo->from[i][q]){
				key_encode(lo, redo->from[i][q]);
				key_encode(hi, redo->next[i][q]);
				rocksdb_writebatch_delete_range_cf(s->wb, s->q[q].cf, (const char *)lo, sizeof(lo),
						(const char *)hi, sizeof(hi));
			}
		}
	}
	rc = load_write(s, why);
	if(rc){
		fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: what earlier tries of a salvage queued cannot be "
				"deleted (%s): it comes twice", s->path, *why ? *why : strerror(-rc));
		return 0;
	}
	fb_chan_reader_close(s->chan);
	s->chan = NULL;
	db_close(s);
	queues_reset(s);
	return spool_load(s, why);
}

/* Points CURRENT in folder DIR (a copy) at its newest MANIFEST when CURRENT is missing or does
 * not name an existing one. Returns true when it wrote it. */
static bool point_current(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	unsigned long long n, best = 0;
	char *path, *cur, name[64], line[128];
	FILE *f;
	bool ok = false;

	if(d == NULL){
		return false;
	}
	while((e = readdir(d)) != NULL){
		if(sscanf(e->d_name, "MANIFEST-%llu", &n) == 1 && n > best){
			best = n;
		}
	}
	closedir(d);
	if(best == 0 || asprintf(&cur, "%s/CURRENT", dir) < 0){
		return false;
	}
	snprintf(name, sizeof(name), "MANIFEST-%06llu", best);
	f = fopen(cur, "r");
	if(f){
		if(fgets(line, sizeof(line), f)){
			line[strcspn(line, "\n")] = '\0';
			if(asprintf(&path, "%s/%s", dir, line) >= 0){
				ok = strncmp(line, "MANIFEST-", 9) == 0 && access(path, F_OK) == 0;
				free(path);
			}
		}
		fclose(f);
	}
	if(!ok){
		unlink(cur); /* a new file: never written through a link to a file of the kept spool */
		f = fopen(cur, "w");
		ok = f && fprintf(f, "%s\n", name) > 0;
		if(f && fclose(f) != 0){
			ok = false;
		}
	}else{
		ok = false; /* it was fine: nothing to try */
	}
	free(cur);
	return ok;
}

/* What a copy to salvage from takes: all but the reserve file (not part of the database). */
static bool salvage_files(const char *name)
{
	return strcmp(name, RESERVE_FILE) != 0;
}

static int u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The numbers of the WAL files ("<digits>.log") in folder DIR, oldest first, into *NUMS (caller
 * frees). Returns how many (0 on any failure). */
static size_t wal_numbers(const char *dir, uint64_t **nums)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	uint64_t *v = NULL, *nv;
	size_t n = 0, len;

	*nums = NULL;
	if(d == NULL){
		return 0;
	}
	while((e = readdir(d)) != NULL){
		len = strlen(e->d_name);
		if(len < 5 || strcmp(e->d_name + len - 4, ".log") != 0
				|| strspn(e->d_name, "0123456789") != len - 4){
			continue;
		}
		nv = realloc(v, (n + 1) * sizeof(*v));
		if(nv == NULL){
			free(v);
			closedir(d);
			return 0;
		}
		v = nv;
		v[n++] = strtoull(e->d_name, NULL, 10);
	}
	closedir(d);
	if(n){
		qsort(v, n, sizeof(*v), u64_cmp);
	}
	*nums = v;
	return n;
}

/* Makes COPY a fresh copy of the spool moved aside to ASIDE without the SKIP oldest WAL files
 * (NUMS: all of them, oldest first) and runs RocksDB's repair on it. Returns 0 when the repair
 * succeeded, -EIO with *err (RocksDB's message, caller frees with rocksdb_free()) when it did
 * not, or another negative errno when the copy could not be made. */
static int repair_copy(rocksdb_options_t *o, const char *aside, const char *copy, const uint64_t *nums,
		size_t skip, char **err)
{
	char *wal;
	int rc;

	rm_tree(copy);
	rc = copy_tree(aside, copy, salvage_files);
	if(rc){
		return rc;
	}
	for(size_t i = 0; i < skip; i++){
		if(asprintf(&wal, "%s/%06llu.log", copy, (unsigned long long)nums[i]) < 0){
			return -ENOMEM;
		}
		unlink(wal);
		free(wal);
	}
	rocksdb_repair_db(o, copy, err);
	return *err ? -EIO : 0;
}

/* RocksDB's repair of a copy (COPY) of the spool moved aside to ASIDE, with options O. A WAL file
 * that still holds records a table file has too (a column family flushed while another one kept
 * the file alive; with small memtables the normal case) makes the repair fail: the table it makes
 * of the file has the seqs of that table file ("force_consistency_checks ... L0 file #N with seqno
 * A B vs. file #M with seqno A B"), and the copy then holds no record of "out" at all. So the
 * repair runs again without the oldest WAL file, then the two oldest, and so on until it
 * succeeds: what a file left out held beyond the table files comes back from the staging files,
 * or is counted as lost. */
static void salvage_repair(struct fb_spool *s, rocksdb_options_t *o, const char *aside, const char *copy)
{
	uint64_t *nums = NULL;
	size_t n = wal_numbers(aside, &nums), skip;
	char *err = NULL, *first = NULL;
	int rc = 0;

	for(skip = 0; skip <= n; skip++){
		rc = repair_copy(o, aside, copy, nums, skip, &err);
		if(rc != -EIO){
			break;
		}
		if(first == NULL){
			first = strdup(err);
		}
		rocksdb_free(err);
		err = NULL;
	}
	if(rc == 0 && skip > 0){
		char files[64];

		if(skip == 1){
			snprintf(files, sizeof(files), "%06llu.log", (unsigned long long)nums[0]);
		}else{
			snprintf(files, sizeof(files), "%06llu.log to %06llu.log", (unsigned long long)nums[0],
					(unsigned long long)nums[skip - 1]);
		}
		fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: RocksDB's repair of a copy of %s failed (%s); "
				"repaired without its %zu oldest WAL file%s (%s): what only %s held is taken from "
				"the staging files or counted as lost", s->path, aside, first ? first : "?", skip,
				skip > 1 ? "s" : "", files, skip > 1 ? "they" : "it");
	}else if(rc == -EIO){
		fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: RocksDB's repair of a copy of %s: %s "
				"(also without its WAL files)", s->path, aside, first ? first : "?");
	}else if(rc){
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: cannot copy %s to repair it: %s", s->path,
				aside, strerror(-rc));
	}
	free(first);
	free(nums);
}

/* Makes folder DIR a database with the column families of a spool (created in the order of
 * cf_names, as every spool creates them, so that they get the same ids) and no record, and copies
 * the WAL files of the spool moved aside to ASIDE into it, numbered after its own: an open then
 * replays them. RocksDB's repair cannot do that for a column family without a table file (it
 * learns the column families from the tables and drops WAL records of any other). Returns 0 or a
 * negative errno (*err set to RocksDB's message when it failed, caller frees with
 * rocksdb_free()). */
static int salvage_replay(const char *aside, const char *dir, char **err)
{
	rocksdb_options_t *o = rocksdb_options_create();
	const rocksdb_options_t *cfo[CF_REQUIRED];
	rocksdb_column_family_handle_t *cfh[CF_REQUIRED];
	uint64_t *nums = NULL;
	size_t n;
	char *from, *to;
	rocksdb_t *db;
	int rc = 0;

	rm_tree(dir);
	if(mkdir(dir, 0700) != 0){
		rocksdb_options_destroy(o);
		return -errno;
	}
	rocksdb_options_set_create_if_missing(o, 1);
	rocksdb_options_set_create_missing_column_families(o, 1);
	rocksdb_options_set_info_log_level(o, ROCKSDB_LOG_WARN);
	for(int i = 0; i < CF_REQUIRED; i++){
		cfo[i] = o;
	}
	db = rocksdb_open_column_families(o, dir, CF_REQUIRED, cf_names, cfo, cfh, err);
	rocksdb_options_destroy(o);
	if(*err){
		return -EIO;
	}
	for(int i = 0; i < CF_REQUIRED; i++){
		rocksdb_column_family_handle_destroy(cfh[i]);
	}
	rocksdb_close(db);
	n = wal_numbers(aside, &nums);
	for(size_t i = 0; rc == 0 && i < n; i++){
		/* Above any number of the new database's files, in their order. */
		if(asprintf(&from, "%s/%06llu.log", aside, (unsigned long long)nums[i]) < 0){
			rc = -ENOMEM;
			break;
		}
		if(asprintf(&to, "%s/%06llu.log", dir, 1000000ull + (unsigned long long)nums[i]) < 0){
			free(from);
			rc = -ENOMEM;
			break;
		}
		rc = copy_file(from, to);
		free(from);
		free(to);
	}
	free(nums);
	return rc;
}

/* A folder moved aside whose salvage has not ended: the name's <time> and N (0 without ".N"). */
struct orphan {
	unsigned long long t, n;
	char *path;
};

static int orphan_cmp(const void *a, const void *b)
{
	const struct orphan *x = a, *y = b;

	if(x->t != y->t){
		return x->t < y->t ? -1 : 1;
	}
	return x->n < y->n ? -1 : x->n > y->n;
}

/* Reads "<time>" or "<time>.<N>" (digits only) at P into *T and *N. */
static bool orphan_suffix(const char *p, unsigned long long *t, unsigned long long *n)
{
	char *end;

	*n = 0;
	if(*p < '0' || *p > '9'){
		return false;
	}
	*t = strtoull(p, &end, 10);
	if(*end == '.' && end[1] >= '0' && end[1] <= '9'){
		*n = strtoull(end + 1, &end, 10);
	}
	return *end == '\0';
}

/* The last part of PATH (what a folder moved aside is named after). */
static const char *base_name(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}

/* Deletes the marks of a salvage under way (with what else the write batch holds). */
static void salvage_unmark(struct fb_spool *s)
{
	static const char *const keys[] = { SALVAGE_KEY, SALVAGE_IN_KEY, SALVAGE_FROM_KEY, SALVAGE_NEXT_KEY,
		SALVAGE_TRIES_KEY };

	for(size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++){
		rocksdb_writebatch_delete_cf(s->wb, s->cfh[CF_META], keys[i], strlen(keys[i]));
	}
}

/* Ends the salvage of ASIDE: its marks go and SALVAGE_DONE_KEY names it, in one synced write, so
 * that no open salvages it again. Returns 0 or like load_write(). */
static int salvage_end(struct fb_spool *s, const char *aside, char **why)
{
	const char *name = base_name(aside);
	int rc;

	salvage_unmark(s);
	rocksdb_writebatch_put_cf(s->wb, s->cfh[CF_META], SALVAGE_DONE_KEY, strlen(SALVAGE_DONE_KEY), name,
			strlen(name));
	rc = load_write(s, why);
	if(rc == 0){
		spool_fsync(s);
		memset(s->salvage_next, 0, sizeof(s->salvage_next));
	}
	return rc;
}

/* Where ASIDE, a folder <base>.salvaging-<time>[.N] beside the spool, has its tag: *TIME and *N
 * set (N 0 without ".N"). NULL when it is not named so (a salvage an earlier version started reads
 * from <base>.corrupt-...). */
static const char *salvaging_tag(const struct fb_spool *s, const char *aside, unsigned long long *time,
		unsigned long long *n)
{
	const char *name = base_name(aside), *base = base_name(s->path);
	size_t blen = strlen(base), tlen = strlen("." SALVAGING_TAG "-");

	if(strncmp(name, base, blen) != 0 || strncmp(name + blen, "." SALVAGING_TAG "-", tlen) != 0
			|| !orphan_suffix(name + blen + tlen, time, n)){
		return NULL;
	}
	return name + blen;
}

/* The salvage of ASIDE is over (salvage_end()): a folder <base>.salvaging-<time>[.N] takes the
 * name <base>.corrupt-<time>[.N] it is kept under. A rename that fails leaves the name, logged:
 * SALVAGE_DONE_KEY tells the next open that it was salvaged. */
static void salvage_keep(struct fb_spool *s, const char *aside)
{
	const char *tag;
	unsigned long long t, n;
	char *prefix, *kept;
	int rc;

	tag = salvaging_tag(s, aside, &t, &n);
	if(tag == NULL){
		return;
	}
	prefix = strndup(aside, (size_t)(tag - aside));
	if(prefix == NULL){
		return;
	}
	rc = move_aside(aside, prefix, "corrupt", (long long)t, &kept);
	if(rc){
		fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: %s was salvaged and cannot be renamed to %s.corrupt-%llu: "
				"%s; it is kept under its name", s->path, aside, prefix, t, strerror(-rc));
	}else{
		char *why = NULL;

		fb_log(&s->lg, MOSQ_LOG_NOTICE, "spool %s: the spool moved aside to %s is kept as %s", s->path,
				aside, kept);
		free(kept);
		/* Its name is free again, and a later move aside may take it. (Not written: at worst
		 * such a folder is taken for this one, renamed and not salvaged, logged.) */
		rocksdb_writebatch_delete_cf(s->wb, s->cfh[CF_META], SALVAGE_DONE_KEY, strlen(SALVAGE_DONE_KEY));
		if(load_write(s, &why) != 0){
			free(why);
		}
	}
	free(prefix);
}

/* The end of a salvage that started again (REDO: its earlier tries; BEFORE: how many records each
 * had queued into each queue): an earlier try's records go when this try queued as many into every
 * queue (PUT), else they stay, logged: what both read comes twice. A restart in between leaves
 * them: repeats, never a loss. Returns 0 or like salvage_redo_delete(). */
static int salvage_redo_end(struct fb_spool *s, const char *aside, const struct salvage_redo *redo,
		uint64_t (*before)[3], const uint64_t put[3])
{
	static const char *const names[] = { "out", "in", "dead" };
	bool gone[TRIES_MAX], any = false;
	char *why = NULL;
	int rc;

	for(size_t i = 0; i < redo->n; i++){
		gone[i] = true;
		for(int q = 0; q < 3 && gone[i]; q++){
			if(put[q] < before[i][q]){
				gone[i] = false;
				fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: the salvage of %s started again and queued fewer "
						"records into \"%s\" than an earlier try (%llu against %llu): what both queued "
						"stays, so that what both read comes twice", s->path, aside, names[q],
						(unsigned long long)put[q], (unsigned long long)before[i][q]);
			}
		}
		any = any || gone[i];
	}
	if(!any){
		return 0;
	}
	rc = salvage_redo_delete(s, redo, gone, &why);
	if(rc){
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: the spool cannot be loaded again after the salvage of %s: %s",
				s->path, aside, why ? why : strerror(-rc));
	}
	free(why);
	return rc;
}

/* The spool S (its channel fresh: nothing is staged meanwhile; just created, unless an earlier
 * salvage could not run) takes every record that can be read from the spool moved aside to ASIDE,
 * which is not touched: a copy of it is read (repaired with RocksDB's repair when it cannot be
 * opened as it is) and removed afterwards. "out" (then the records its staging files held), "in"
 * (but the seqs up to INJECTED, which the local broker has injected) and "dead" are queued again
 * in order, after what S holds; the seqs missing in "out" are counted as lost. Returns 0, also
 * when nothing could be read (logged) or when it cannot start now (logged; it is salvaged by a
 * later open), or a negative errno when queuing what was read failed: the marks stay, the open
 * fails and the next link process starts the salvage again (salvage_resume()). */
static int salvage(struct fb_spool *s, const char *aside, uint64_t injected, const struct salvage_redo *redo)
{
	struct salvage v = { .s = s };
	uint64_t (*before)[3] = NULL;
	struct fb_chan_shared *sh = NULL;
	struct fb_chan_reader *r = NULL;
	struct fb_chan_loss loss;
	rocksdb_options_t *o;
	char *copy = NULL, *err = NULL, where[8192];
	uint8_t inj[KEY_LEN];
	uint64_t floor = 0, settled = 0, from;
	bool have_floor = false, have_settled = false, repaired = false, linked = false;
	int rc;

	if(asprintf(&copy, "%s.salvage", aside) < 0){
		return -ENOMEM;
	}
	if(redo && redo->n){
		/* What the earlier tries queued is still there, below this spool's next seqs: it goes at
		 * the end if this try queues as much (a weaker read, say without room for a copy to
		 * repair, may give less: then both stay). */
		uint8_t *t = malloc(redo->n * 6 * KEY_LEN);

		before = calloc(redo->n, sizeof(*before));
		if(t == NULL || before == NULL){
			free(t);
			free(before);
			free(copy);
			return -ENOMEM;
		}
		for(size_t i = 0; i < redo->n; i++){
			for(int q = 0; q < 3; q++){
				before[i][q] = range_count(s, (enum fb_queue)q, redo->from[i][q], redo->next[i][q]);
			}
			seqs_encode(t + i * 6 * KEY_LEN, redo->from[i], 3);
			seqs_encode(t + (i * 6 + 3) * KEY_LEN, redo->next[i], 3);
		}
		rocksdb_writebatch_put_cf(s->wb, s->cfh[CF_META], SALVAGE_TRIES_KEY, strlen(SALVAGE_TRIES_KEY),
				(const char *)t, redo->n * 6 * KEY_LEN);
		free(t);
	}else{
		rocksdb_writebatch_delete_cf(s->wb, s->cfh[CF_META], SALVAGE_TRIES_KEY, strlen(SALVAGE_TRIES_KEY));
	}
	/* Until the last record is queued, a restart starts again (salvage_resume(): what was queued
	 * goes at the end, when the next try queued as much). Marked before the copy, which can take
	 * long: a link process that ended before the mark leaves the folder's name to the next one
	 * (salvage_orphans()). */
	rocksdb_writebatch_put_cf(s->wb, s->cfh[CF_META], SALVAGE_KEY, strlen(SALVAGE_KEY), aside, strlen(aside));
	key_encode(inj, injected);
	rocksdb_writebatch_put_cf(s->wb, s->cfh[CF_META], SALVAGE_IN_KEY, strlen(SALVAGE_IN_KEY), (const char *)inj,
			sizeof(inj));
	salvage_seqs_put(s, SALVAGE_FROM_KEY);
	salvage_seqs_put(s, SALVAGE_NEXT_KEY);
	if(load_write(s, &v.why) != 0 || spool_fsync(s) != 0){
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: cannot start to salvage %s: %s; it keeps its name, and "
				"the next link process on a fresh channel (a start of the broker) salvages it", s->path,
				aside, v.why ? v.why : "WAL sync failed");
		rocksdb_writebatch_clear(s->wb);
		goto out;
	}
	rm_tree(copy); /* left by a salvage that was cut short */
	rc = copy_tree(aside, copy, salvage_files);
	if(rc){
		/* No room for a copy (a full disk, where damage is most likely): read it through hard
		 * links instead. Read-only opens never write to a file they did not make, so the kept
		 * spool stays byte-identical; RocksDB's repair and the WAL replay, which write, are left
		 * out, and what only they would have given back is counted as lost like any other gap. */
		int crc = rc;

		rm_tree(copy);
		rc = link_tree(aside, copy, salvage_files);
		if(rc == 0){
			linked = true;
			fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: cannot copy %s to salvage its records (%s); "
					"reading it in place instead (read only, without RocksDB's repair)", s->path,
					aside, strerror(-crc));
		}
	}
	if(rc == -ENOSPC || rc == -EDQUOT){
		/* Not even room for the links. The marks stay: the next link process on a fresh channel
		 * starts the salvage again (salvage_resume()), into this spool after what it holds by then. */
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: cannot copy %s to salvage its records: %s; it keeps its "
				"name, and the next link process on a fresh channel (a start of the broker) salvages it",
				s->path, aside, strerror(-rc));
		goto out;
	}
	if(rc){
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: cannot copy %s to salvage its records: %s; what its "
				"database held is neither queued again nor counted, and it stays there", s->path, aside,
				strerror(-rc));
		v.rc = salvage_end(s, aside, &v.why);
		if(v.rc == 0){
			salvage_keep(s, aside);
		}
		goto out;
	}
	o = rocksdb_options_create();
	rocksdb_options_set_wal_recovery_mode(o, rocksdb_skip_any_corrupted_records_recovery);
	rocksdb_options_set_paranoid_checks(o, 0);
	rocksdb_options_set_info_log_level(o, ROCKSDB_LOG_WARN);
	rc = salvage_open(&v, o, copy, true, &err);
	if(rc && point_current(copy)){
		/* CURRENT missing or garbage: the newest MANIFEST, with the WAL, is worth a try first. */
		rocksdb_free(err);
		err = NULL;
		salvage_close(&v);
		rc = salvage_open(&v, o, copy, true, &err);
	}
	if(rc && !linked){
		rocksdb_free(err);
		err = NULL;
		salvage_close(&v);
		salvage_repair(s, o, aside, copy);
		repaired = true;
		rc = salvage_open(&v, o, copy, false, &err);
		if(rc == 0 && v.qcf[FB_Q_OUT] < 0){
			/* No table file of "out": its records are all in the WAL, which the repair dropped.
			 * The marks of "meta" the tables hold count until the replay has newer ones. */
			have_floor = salvage_meta(&v, floor_keys[FB_Q_OUT], &floor);
			have_settled = salvage_meta(&v, SETTLED_KEY, &settled);
			salvage_close(&v);
			rc = salvage_replay(aside, copy, &err);
			if(rc == 0){
				rc = salvage_open(&v, o, copy, true, &err);
			}
			if(rc == 0){
				fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: no table file of %s holds records of "
						"\"out\": its WAL files are replayed into an empty database instead",
						s->path, aside);
			}
		}
	}
	if(rc){
		fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: no record can be read from the database in %s: %s%s",
				s->path, aside, err ? err : strerror(-rc), linked ? " (without room for a copy it "
				"cannot be repaired: what its database held is neither queued again nor counted; "
				"it stays there, untouched)" : "");
		rocksdb_free(err);
		salvage_close(&v);
	}else{
		uint64_t m;

		if(salvage_meta(&v, floor_keys[FB_Q_OUT], &m) && (!have_floor || m > floor)){
			floor = m;
			have_floor = true;
		}
		if(salvage_meta(&v, SETTLED_KEY, &m) && (!have_settled || m > settled)){
			settled = m;
			have_settled = true;
		}
		/* The first seq expected: the floor; without one, 1 if the queue was never consumed. */
		v.g.expect = have_floor ? floor : have_settled ? 1 : 0;
		for(int q = 0; q < 3 && v.rc == 0; q++){
			v.qi = (enum fb_queue)q;
			if(v.qcf[q] >= 0){
				uint64_t qfloor = floor;

				if(q != FB_Q_OUT){
					salvage_meta(&v, floor_keys[q], &qfloor);
				}
				if(q == FB_Q_IN && injected >= qfloor){
					/* the local broker has these (their deletion had not caught up) */
					qfloor = injected + 1;
				}
				salvage_cf(&v, v.cfh[v.qcf[q]], qfloor);
			}
		}
		salvage_close(&v);
	}
	rocksdb_options_destroy(o);
	if(v.rc == 0){
		/* Up to the newest seq settled, then the staging files go on: they hold what was not
		 * settled yet (salvage_visit() counts their gaps too). */
		v.qi = FB_Q_OUT;
		if(settled + 1 > v.g.expect && v.g.expect){
			gaps_see(&v.g, settled + 1);
			v.g.expect = settled + 1;
		}
		from = v.g.expect > settled + 1 ? v.g.expect : settled + 1;
		if(from < floor){
			from = floor;
		}
		sh = calloc(1, sizeof(*sh));
		if(sh && fb_chan_reader_open(copy, sh, true, &r) == 0){
			fb_chan_recover(r, from, salvage_visit, &v, &loss);
		}
		fb_chan_reader_close(r);
		free(sh);
	}
	if(v.rc == 0 && rocksdb_writebatch_count(s->wb) > 0){
		v.rc = salvage_write(&v);
	}
	rocksdb_writebatch_clear(s->wb);
	if(v.rc){
		/* SALVAGE_KEY stays: the next open starts again. */
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: queuing the records salvaged from %s failed: %s",
				s->path, aside, v.why ? v.why : strerror(-v.rc));
	}
	fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: salvaged from %s%s: %llu records queued again "
			"into \"out\", %llu into \"in\", %llu into \"dead\"%s", s->path, aside,
			repaired ? " (a repaired copy)" : "", (unsigned long long)v.put[FB_Q_OUT],
			(unsigned long long)v.put[FB_Q_IN], (unsigned long long)v.put[FB_Q_DEAD],
			v.unreadable ? "; unreadable stretches skipped" : "");
	rm_tree(copy); /* before the end: a restart after it would find it nowhere else */
	if(v.rc == 0){
		/* Done: from here on a restart keeps what was queued, and the loss is counted once. */
		v.rc = salvage_end(s, aside, &v.why);
		if(v.rc == 0){
			snprintf(where, sizeof(where), "the spool moved aside to %s", aside);
			loss_report(s, v.g.lost, v.g.first, v.g.last, where);
		}
		if(v.rc == 0 && before){
			v.rc = salvage_redo_end(s, aside, redo, before, v.put);
		}
		if(v.rc == 0){
			fb_log(&s->lg, MOSQ_LOG_INFO, "spool %s: the salvage of %s is complete", s->path, aside);
			salvage_keep(s, aside);
		}
	}
	/* The fresh channel's writer starts after what was queued again. */
	rc = s->chan ? fb_chan_reset(s->chan, s->q[FB_Q_OUT].next_seq) : -EBADF;
	if(rc == 0){
		fb_chan_account(s->chan, 0, s->q[FB_Q_OUT].bytes);
	}else{
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: cannot reset the staging files: %s", s->path,
				strerror(-rc));
	}
out:
	free(v.why);
	free(before);
	rm_tree(copy);
	free(copy);
	return v.rc;
}

/* Salvages, oldest first, the folders <base>.salvaging-<time>[.N] beside the spool: MOVED, the one
 * this open has just moved aside (or NULL), and those a link process moved aside and then ended
 * before its salvage wrote SALVAGE_KEY (salvage_resume() takes those that had it). Without this,
 * their records would be kept there and never queued again, nor counted. MOVED leaves out what
 * the broker had injected of its "in" (in_injected); of the others that is not known any more (it
 * refers to the spool of its time): theirs comes again, at least once. A folder that
 * SALVAGE_DONE_KEY names was salvaged and only takes its kept name; one without the spool's marker
 * file is not ours and is left alone. Only on a fresh channel. Returns 0 or like salvage_resume(). */
static int salvage_orphans(struct fb_spool *s, const char *moved, char **why)
{
	const char *slash = strrchr(s->path, '/');
	struct orphan *o = NULL, *no;
	size_t n = 0, cap = 0;
	char *dir, *done = NULL, *under_way = NULL, *marker, *path;
	struct dirent *e;
	struct stat st;
	DIR *d;
	int rc = 0;

	dir = slash == NULL ? strdup(".") : slash == s->path ? strdup("/")
			: strndup(s->path, (size_t)(slash - s->path));
	if(dir == NULL){
		return -ENOMEM;
	}
	d = opendir(dir);
	free(dir);
	if(d == NULL){
		return 0; /* rename() needed it: it is there, or nothing was moved aside */
	}
	while(rc == 0 && (e = readdir(d)) != NULL){
		unsigned long long t, k;
		const char *tag;

		if(asprintf(&path, "%.*s%s", (int)(slash ? slash + 1 - s->path : 0), s->path, e->d_name) < 0){
			rc = -ENOMEM;
			break;
		}
		tag = salvaging_tag(s, path, &t, &k);
		if(tag == NULL || stat(path, &st) != 0 || !S_ISDIR(st.st_mode)){
			free(path);
			continue;
		}
		if(n == cap){
			cap = cap ? 2 * cap : 4;
			no = realloc(o, cap * sizeof(*o));
			if(no == NULL){
				free(path);
				rc = -ENOMEM;
				break;
			}
			o = no;
		}
		o[n++] = (struct orphan){ t, k, path };
	}
	closedir(d);
	if(rc == 0 && n){
		rc = meta_str(s, SALVAGE_DONE_KEY, &done, why);
		if(rc == 0){
			rc = meta_str(s, SALVAGE_KEY, &under_way, why);
		}
		qsort(o, n, sizeof(*o), orphan_cmp);
	}
	for(size_t i = 0; i < n && rc == 0; i++){
		bool mine = moved && strcmp(base_name(o[i].path), base_name(moved)) == 0;

		if(under_way && strcmp(base_name(o[i].path), base_name(under_way)) == 0){
			continue; /* salvage_resume() has it, and it waits for a later open */
		}
		if(!mine && done && strcmp(base_name(o[i].path), done) == 0){
			salvage_keep(s, o[i].path); /* ended between the last write and the rename */
			continue;
		}
		if(atomic_load(&s->failed)){
			/* opened on a full disk: nothing can be queued now */
			fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: %s waits to be salvaged: the spool cannot write now; "
					"the next link process on a fresh channel (a start of the broker) salvages it", s->path,
					o[i].path);
			continue;
		}
		if(asprintf(&marker, "%s/" MARKER_FILE, o[i].path) < 0){
			rc = -ENOMEM;
			break;
		}
		if(access(marker, F_OK) != 0){
			fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: %s has no file " MARKER_FILE ": it is not a "
					"spool moved aside, and it is left alone", s->path, o[i].path);
		}else{
			if(!mine){
				fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: %s was moved aside and its salvage did not "
						"start (the link process ended first); it is salvaged now", s->path, o[i].path);
			}
			rc = salvage(s, o[i].path, mine ? s->in_injected : 0, NULL);
			if(rc){
				*why = strdup("queuing the salvaged records failed (logged above)");
			}
		}
		free(marker);
	}
	for(size_t i = 0; i < n; i++){
		free(o[i].path);
	}
	free(o);
	free(done);
	free(under_way);
	return rc;
}

/* ---- inspection: what a spool holds, read from outside without changing anything ---- */

/* The process holding the RocksDB LOCK (spool.h: fb_spool_holder()). F_GETLK only asks. */
static pid_t lock_holder(const char *path)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	char *file;
	int fd;

	if(asprintf(&file, "%s/LOCK", path) < 0){
		return 0;
	}
	fd = open(file, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	free(file);
	if(fd < 0){
		return 0;
	}
	if(fcntl(fd, F_GETLK, &fl) != 0){
		fl.l_type = F_UNLCK;
	}
	close(fd);
	if(fl.l_type == F_UNLCK){
		return 0;
	}
	return fl.l_pid > 0 ? fl.l_pid : -1;
}

pid_t fb_spool_holder(const char *path)
{
	return lock_holder(path);
}

/* Options for a read-only look: nothing is created, only a torn WAL tail is tolerated, and every
 * table file is opened at once (max_open_files -1), so that a compaction of a running link
 * process that deletes one afterwards does not take it away in the middle of the scan. */
static rocksdb_options_t *inspect_options(void)
{
	rocksdb_options_t *o = rocksdb_options_create();

	rocksdb_options_set_create_if_missing(o, 0);
	rocksdb_options_set_info_log_level(o, ROCKSDB_LOG_WARN);
	rocksdb_options_set_wal_recovery_mode(o, rocksdb_tolerate_corrupted_tail_records_recovery);
	rocksdb_options_set_paranoid_checks(o, 1);
	rocksdb_options_set_max_open_files(o, -1);
	return o;
}

/* What the database of a spool holds, as fb_spool_open() would load it. */
struct inspect_db {
	struct spool_queue q[3]; /* count, bytes, first, floor, next_seq (the last key + 1) */
	uint64_t settled;        /* the settled mark of "out" */
	char *salvage;           /* a salvage cut short: the folder it read (caller frees) */
};

/* Reads meta KEY of V's database into *VAL (caller frees; NULL when absent). Returns 0 or an
 * error of classify_error() with *why. */
static int inspect_meta(struct salvage *v, const char *key, char **val, size_t *vlen, char **why)
{
	rocksdb_readoptions_t *ro;
	char *err = NULL;
	int rc;

	*val = NULL;
	*vlen = 0;
	if(v->meta < 0){
		return 0;
	}
	ro = rocksdb_readoptions_create();
	*val = rocksdb_get_cf(v->db, ro, v->cfh[v->meta], key, strlen(key), vlen, &err);
	rocksdb_readoptions_destroy(ro);
	if(err){
		rc = classify_error(err);
		*why = strdup(err);
		rocksdb_free(err);
		*val = NULL;
		return *why ? rc : -ENOMEM;
	}
	return 0;
}

/* Counts queue QI of V's database from its floor on, as scan_queue() does. */
static int inspect_queue(struct fb_spool *s, struct salvage *v, enum fb_queue qi, struct spool_queue *q,
		char **why)
{
	rocksdb_readoptions_t *ro;
	rocksdb_iterator_t *it;
	uint8_t from[KEY_LEN];
	const char *key;
	char *err = NULL, *val;
	size_t klen, vlen, bad = 0;
	uint64_t seq, last = 0;
	int rc;

	rc = inspect_meta(v, floor_keys[qi], &val, &vlen, why);
	if(rc){
		return rc;
	}
	q->floor = val && vlen == KEY_LEN ? key_decode(val) : 0;
	rocksdb_free(val);
	q->next_seq = 1;
	if(v->qcf[qi] < 0){
		return 0; /* not there yet: empty */
	}
	key_encode(from, q->floor);
	ro = rocksdb_readoptions_create();
	rocksdb_readoptions_set_fill_cache(ro, 0);
	it = rocksdb_create_iterator_cf(v->db, ro, v->cfh[v->qcf[qi]]);
	for(rocksdb_iter_seek(it, (const char *)from, sizeof(from)); rocksdb_iter_valid(it);
			rocksdb_iter_next(it)){
		key = rocksdb_iter_key(it, &klen);
		rocksdb_iter_value(it, &vlen);
		seq = klen == KEY_LEN ? key_decode(key) : 0;
		if(seq == 0){
			bad++;
			continue;
		}
		if(q->count++ == 0){
			q->first = seq;
		}
		q->bytes += klen + vlen;
		last = seq;
	}
	rocksdb_iter_get_error(it, &err);
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
	if(err){
		rc = classify_error(err);
		*why = strdup(err);
		rocksdb_free(err);
		return *why ? rc : -ENOMEM;
	}
	q->next_seq = last + 1;
	if(bad){
		fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: ignoring %zu records with a "
				"malformed key in \"%s\"", s->path, bad, queue_name(qi));
	}
	return 0;
}

/* Reads the database of S read-only (rocksdb_open_for_read_only_column_families(): no lock, no
 * file created or written; the WAL is read into memory, so what a running link process has
 * written so far is seen). A folder without any RocksDB file holds an empty database. Returns 0
 * or an error of classify_error() with *why (-EIO: damaged). */
static int inspect_db(struct fb_spool *s, struct inspect_db *db, char **why)
{
	struct salvage v = { .s = s };
	struct stat st;
	char *file, *err = NULL, *val;
	size_t vlen;
	int rc;

	rc = db_precheck(s, why); /* a missing CURRENT or "out" is damage, as for the open */
	if(rc){
		return rc;
	}
	if(asprintf(&file, "%s/CURRENT", s->path) < 0){
		return -ENOMEM;
	}
	rc = stat(file, &st);
	free(file);
	if(rc != 0){
		return 0; /* no database yet (db_precheck() found none of its files): empty */
	}
	rc = salvage_open(&v, s->dbopts, s->path, true, &err);
	if(rc && err){
		rc = classify_error(err);
		*why = strdup(err);
		free(err);
		if(*why == NULL){
			rc = -ENOMEM;
		}
	}
	if(rc){
		salvage_close(&v);
		return rc;
	}
	for(int i = 0; rc == 0 && i < 3; i++){
		rc = inspect_queue(s, &v, (enum fb_queue)i, &db->q[i], why);
	}
	if(rc == 0){
		rc = inspect_meta(&v, SETTLED_KEY, &val, &vlen, why);
		db->settled = rc == 0 && val && vlen == KEY_LEN ? key_decode(val) : 0;
		rocksdb_free(val);
	}
	if(rc == 0){
		rc = inspect_meta(&v, SALVAGE_KEY, &val, &vlen, why);
		if(rc == 0 && val){
			db->salvage = strndup(val, vlen);
		}
		rocksdb_free(val);
	}
	salvage_close(&v);
	return rc;
}

/* The staged records that fb_spool_open() would take into "out": from seq FROM on. */
struct inspect_stage {
	bool live;        /* the writer may run: the copies of the two files are from two moments */
	uint64_t expect;  /* the next seq */
	uint64_t n, bytes, first, last;
};

static int inspect_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct inspect_stage *c = ud;

	(void)val;
	if(c->live && seq != c->expect){
		/* Records in between were staged after the copy of the file that would hold them was
		 * made, this one before the copy of the other file: the later moment is left out. */
		return 1;
	}
	c->expect = seq + 1;
	if(c->n++ == 0){
		c->first = seq;
	}
	c->bytes += KEY_LEN + (uint64_t)len;
	c->last = seq;
	return 0;
}

/* One look at the spool of S (LIVE: its lock is held). The staging files are copied first, then
 * the database is read: a record settled in between is in the database with its settled mark
 * and is therefore not taken from the copies again, and nothing older is missed (a staging file
 * is emptied only after its records are settled). Returns 0 or a negative errno with *why (may
 * stay NULL). */
static int inspect_once(struct fb_spool *s, bool live, struct fb_spool_stats *st, char **why)
{
	struct fb_chan_reader *r = NULL;
	struct inspect_db db;
	struct inspect_stage c = { .live = live };
	struct fb_chan_loss loss;
	struct spool_queue *out = &db.q[FB_Q_OUT];
	uint64_t from;
	int rc;

	memset(&db, 0, sizeof(db));
	rc = fb_chan_reader_open_copy(s->path, &r);
	if(rc){
		if(asprintf(why, "cannot read the staging files: %s", strerror(-rc)) < 0){
			*why = NULL;
		}
		return rc;
	}
	rc = inspect_db(s, &db, why);
	if(rc){
		fb_chan_reader_close(r);
		free(db.salvage);
		return rc;
	}
	/* As chan_open(): what is above the last key, the floor and the settled mark. */
	from = out->next_seq > out->floor ? out->next_seq : out->floor;
	if(from < db.settled + 1){
		from = db.settled + 1;
	}
	c.expect = from;
	rc = fb_chan_recover(r, from, inspect_visit, &c, &loss);
	fb_chan_reader_close(r);
	if(rc < 0){
		if(asprintf(why, "cannot read the staging files: %s", strerror(-rc)) < 0){
			*why = NULL;
		}
		free(db.salvage);
		return rc;
	}
	if(!live && loss.lost){
		fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: %llu staged records (seq %llu..%llu) are "
				"damaged or missing in the staging files; the link process counts them in "
				"edge_to_cloud/dropped/corrupt when it opens the spool", s->path,
				(unsigned long long)loss.lost, (unsigned long long)loss.first_seq,
				(unsigned long long)loss.last_seq);
	}
	if(db.salvage){
		fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: the salvage of %s was cut short; the link "
				"process starts it again when it opens the spool, so these figures will change",
				s->path, db.salvage);
		free(db.salvage);
	}
	st->messages = out->count + c.n;
	st->bytes = out->bytes + c.bytes;
	st->first_seq = out->count ? out->first : c.first;
	st->last_seq = c.n ? c.last : out->next_seq - 1;
	st->in = db.q[FB_Q_IN].count;
	st->dead = db.q[FB_Q_DEAD].count;
	return 0;
}

int fb_spool_inspect(const char *path, const struct fb_logger *lg, struct fb_spool_stats *st,
		pid_t *holder)
{
	struct fb_spool s;
	struct stat sb;
	char stranger[256], *why = NULL;
	bool any, current;
	size_t len;
	int rc;

	memset(st, 0, sizeof(*st));
	*holder = 0;
	if(path == NULL || path[0] == '\0'){
		return -EINVAL;
	}
	memset(&s, 0, sizeof(s));
	if(lg){
		s.lg = *lg;
	}
	s.path = strdup(path);
	if(s.path == NULL){
		return -ENOMEM;
	}
	len = strlen(s.path);
	while(len > 1 && s.path[len - 1] == '/'){
		s.path[--len] = '\0';
	}
	if(stat(s.path, &sb) != 0){
		rc = -errno;
		if(rc == -ENOENT){
			fb_log(&s.lg, MOSQ_LOG_ERR, "spool %s: no such folder", s.path);
		}else{
			fb_log(&s.lg, MOSQ_LOG_ERR, "spool %s: %s", s.path, strerror(-rc));
		}
		goto out;
	}
	if(!S_ISDIR(sb.st_mode)){
		fb_log(&s.lg, MOSQ_LOG_ERR, "spool %s: not a folder", s.path);
		rc = -ENOTDIR;
		goto out;
	}
	rc = marker_read(&s, false);
	if(rc < 0 && rc != -ENOTEMPTY && rc != -EPROTO){
		fb_log(&s.lg, MOSQ_LOG_ERR, "spool %s: cannot read " MARKER_FILE ": %s", s.path,
				strerror(-rc));
	}
	if(rc == 0){
		rc = folder_scan(&s, stranger, &any, &current);
		if(rc == 0 && !any){
			fb_log(&s.lg, MOSQ_LOG_ERR, "spool %s: the folder is empty, no spool there yet", s.path);
			rc = -ENOENT;
		}else if(rc == 0 && (stranger[0] || !current)){
			if(stranger[0]){
				fb_log(&s.lg, MOSQ_LOG_ERR, "%s is not a flowmq-bridge spool (no " MARKER_FILE
						" file; \"%s\" is no spool file): nothing read", s.path, stranger);
			}else{
				fb_log(&s.lg, MOSQ_LOG_ERR, "%s is not a flowmq-bridge spool (no " MARKER_FILE
						" file, no RocksDB CURRENT file): nothing read", s.path);
			}
			rc = -ENOTEMPTY;
		}
	}
	if(rc < 0){
		goto out;
	}
	s.dbopts = inspect_options();
	*holder = lock_holder(s.path);
	for(int tries = 1; ; tries++){
		rc = inspect_once(&s, *holder != 0, st, &why);
		/* A running link process can remove a WAL or table file between the moment RocksDB
		 * lists it and the moment it opens it: look again. */
		if(rc != -EIO || *holder == 0 || tries == 5){
			break;
		}
		free(why);
		why = NULL;
		memset(st, 0, sizeof(*st));
		usleep(200 * 1000);
		*holder = lock_holder(s.path);
	}
	if(rc == -EIO && *holder == 0){
		fb_log(&s.lg, MOSQ_LOG_ERR, "spool %s is damaged (%s): nothing read; the link process "
				"recovers what it can when it opens the spool", s.path, why ? why : "unreadable");
	}else if(rc){
		fb_log(&s.lg, MOSQ_LOG_ERR, "cannot read spool %s: %s", s.path, why ? why : strerror(-rc));
	}
	free(why);
out:
	if(s.dbopts){
		rocksdb_options_destroy(s.dbopts);
	}
	free(s.path);
	return rc;
}

/* fb_spool_delete_through()'s batch: read, then deleted in one write. */
#define THROUGH_BATCH 256

struct through {
	uint64_t upto;
	struct fb_spool_del dels[THROUGH_BATCH];
	size_t n;
};

static int through_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct through *v = ud;
	(void)val;

	if(seq > v->upto){
		return 1;
	}
	v->dels[v->n++] = (struct fb_spool_del){ seq, len };
	return 0;
}

int fb_spool_delete_through(struct fb_spool *s, enum fb_queue q, uint64_t after, uint64_t upto)
{
	struct through v = { .upto = upto };
	int n, rc = 0;

	do{
		v.n = 0;
		n = fb_spool_read(s, q, after, THROUGH_BATCH, through_visit, &v);
		if(n < 0){
			rc = n;
		}else if(v.n){
			rc = fb_spool_delete_many(s, q, v.dels, v.n);
			after = v.dels[v.n - 1].seq;
		}
	}while(rc == 0 && v.n == THROUGH_BATCH);
	return rc;
}

int fb_spool_open(const struct fb_spool_opts *opts, struct fb_spool **out)
{
	struct fb_spool *s;
	char *why = NULL, *aside = NULL;
	size_t len;
	int rc;

	*out = NULL;
	if(opts == NULL || opts->path == NULL || opts->path[0] == '\0'){
		return -EINVAL;
	}
	s = calloc(1, sizeof(*s));
	if(s == NULL){
		return -ENOMEM;
	}
	s->q[FB_Q_OUT].lanes = &s->lanes;
	s->path = strdup(opts->path);
	if(s->path == NULL){
		free(s);
		return -ENOMEM;
	}
	/* "/x/" would be moved aside to "/x/.corrupt-..." */
	len = strlen(s->path);
	while(len > 1 && s->path[len - 1] == '/'){
		s->path[--len] = '\0';
	}
	if(opts->lg){
		s->lg = *opts->lg;
	}
	fb_spool_layout(opts->max_size, &s->lay);
	s->max_size = s->lay.live;
	s->corrupt = opts->corrupt;
	s->in_injected = opts->in_injected;
	s->in_next = opts->in_next;
	s->on_full = opts->on_full;
	s->sync = opts->sync;
	pthread_mutex_init(&s->lock, NULL);
	pthread_rwlock_init(&s->dblock, NULL);
	pthread_mutex_init(&s->itlock, NULL);
	s->sh = opts->chan;
	s->chan_running = opts->chan && opts->chan_running;
	if(s->sh == NULL){
		s->sh = calloc(1, sizeof(*s->sh));
		s->own_sh = true;
		if(s->sh == NULL){
			fb_spool_close(s);
			return -ENOMEM;
		}
	}
	/* The staging files' size and the records' part of max_size, for reader and writer. A running
	 * writer keeps the files it has. */
	if(!s->chan_running){
		atomic_store(&s->sh->file_size, s->lay.stage_file);
	}
	atomic_store(&s->sh->max_live, s->lay.live);

	s->dbopts = make_options(s);
	s->wo = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(s->wo, 0); /* FB_SYNC_ALWAYS: fsync after the write, unlocked */
	s->wb = rocksdb_writebatch_create();

	/* RocksDB creates the last level of the path only. */
	rc = mkdir_p(s->path);
	if(rc){
		fb_log(&s->lg, MOSQ_LOG_ERR, "cannot create spool folder %s: %s", s->path,
				strerror(-rc));
		fb_spool_close(s);
		return rc;
	}
	rc = marker_check(s);
	if(rc){
		fb_spool_close(s);
		return rc;
	}

	rc = spool_load(s, &why);
	if(rc == -ENOSPC && reserve_drop(s)){
		/* A full disk: the reserve makes room to open; nothing more is written until space
		 * returns. */
		free(why);
		why = NULL;
		rc = spool_load(s, &why);
		if(rc == 0){
			spool_fail(s, "opening", "No space left on device (the reserve was used to open)");
		}
	}else if(rc == 0 && reserve_make(s) == -ENOSPC){
		spool_fail(s, "making the reserve", "No space left on device");
	}
	if(rc == 0 && !s->chan_running && s->in_injected){
		/* A fresh channel: the records of "in" the broker had injected, whose deletion had not
		 * caught up, go now rather than be handed over again. Failing that (the disk), they are
		 * injected again: at least once. First: a salvage below may number "in" from 1 again. */
		fb_spool_delete_through(s, FB_Q_IN, 0, s->in_injected);
	}
	if(rc == 0 && !s->chan_running && atomic_load(&s->failed) == 0){
		rc = salvage_resume(s, &why);
	}
	if(rc == -EBUSY){
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s is in use by another broker or "
				"plugin instance (%s)", s->path, why);
	}else if(rc == -EIO && s->chan_running){
		/* The broker's writer has this folder's staging files open: moved aside now, the folder
		 * would take them along, the writer would go on appending there and this process would
		 * read fresh, empty ones (and salvage nothing: a fresh channel cannot start under a
		 * running writer). Hand the channel back instead: the broker closes its writer and the
		 * next link process starts on a fresh channel, moves the folder aside and salvages it,
		 * the records staged meanwhile included. */
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s is unreadable (%s); the next link process moves it "
				"aside and salvages it", s->path, why);
		atomic_store_explicit(&s->sh->ready, 0, memory_order_release);
	}else if(rc == -EIO){
		rc = move_aside(s->path, s->path, SALVAGING_TAG, (long long)time(NULL), &aside);
		if(rc){
			fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s is unreadable (%s) and cannot "
					"be moved aside: %s", s->path, why, strerror(-rc));
		}else{
			fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s is unreadable (%s); moved "
					"aside to %s, starting a fresh spool", s->path, why, aside);
			free(why);
			why = NULL;
			rc = mkdir_p(s->path);
			if(rc == 0){
				rc = spool_load(s, &why);
			}
			if(rc == 0){
				ids_carry(s, aside);
			}
			if(rc){
				fb_log(&s->lg, MOSQ_LOG_ERR, "cannot create a fresh spool at "
						"%s: %s", s->path, why ? why : strerror(-rc));
			}
			/* salvaged below, with any older folder moved aside and not salvaged yet */
		}
	}else if(rc){
		fb_log(&s->lg, MOSQ_LOG_ERR, "cannot open spool %s: %s", s->path,
				why ? why : strerror(-rc));
	}
	if(rc == 0 && !s->chan_running){
		free(why);
		why = NULL;
		rc = salvage_orphans(s, aside, &why);
		if(rc){
			fb_log(&s->lg, MOSQ_LOG_ERR, "cannot open spool %s: %s; the next link process salvages "
					"again", s->path, why ? why : strerror(-rc));
		}
	}
	free(why);
	free(aside);
	if(rc == 0 && !s->chan_running){
		/* Only now, after any salvage: a writer opened while a salvage still queued records would
		 * start at the seq the fresh queue began with, and the salvage's last reset of the files
		 * would then leave it writing the seqs of salvaged records over them. */
		fb_chan_ready(s->chan);
	}
	if(rc == 0 && s->own_sh){
		struct fb_chan_limits lim = { .max_size = s->max_size, .on_full = s->on_full,
			.sync = s->sync == FB_SYNC_ALWAYS };
		rc = fb_chan_writer_open(s->path, s->sh, &lim, &s->w);
		if(rc){
			fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: cannot open the staging files: %s",
					s->path, strerror(-rc));
		}
	}
	if(rc){
		fb_spool_close(s);
		return rc;
	}
	*out = s;
	return 0;
}

void fb_spool_close(struct fb_spool *s)
{
	rocksdb_flushoptions_t *fo;
	char *err = NULL;
	size_t i;

	if(s == NULL){
		return;
	}
	if(s->db && atomic_load(&s->failed) == 0){
		settle(s);
	}
	if(s->db && atomic_load(&s->failed) == 0){
		rocksdb_flush_wal(s->db, 1, &err);
		if(err){
			fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: WAL sync on close failed: %s",
					s->path, err);
			rocksdb_free(err);
			err = NULL;
		}
		/* Writing large memtables out makes the next open fast: otherwise it replays the WAL (up
		 * to max_total_wal_size) into memtables, some 150k records a second. Small ones cost less
		 * to replay than to write out as tables. */
		fo = rocksdb_flushoptions_create();
		rocksdb_flushoptions_set_wait(fo, 1);
		uint64_t mem = 0, v;
		for(i = 0; i < s->ncf; i++){
			if(rocksdb_property_int_cf(s->db, s->cfh[i], "rocksdb.cur-size-all-mem-tables", &v) != 0){
				v = UINT64_MAX / 8;
			}
			mem += v;
		}
		for(i = 0; mem >= CLOSE_FLUSH_MIN && i < s->ncf; i++){
			rocksdb_flush_cf(s->db, fo, s->cfh[i], &err);
			if(err){
				fb_log(&s->lg, MOSQ_LOG_WARNING, "spool %s: flush on close "
						"failed (the next start replays the WAL): %s", s->path, err);
				rocksdb_free(err);
				err = NULL;
				break;
			}
		}
		rocksdb_flushoptions_destroy(fo);
	}
	db_close(s);
	queues_reset(s);
	rocksdb_writeoptions_destroy(s->wo);
	if(s->wb){
		rocksdb_writebatch_destroy(s->wb);
	}
	free(s->mark);
	for(int qi = 0; qi < 3; qi++){
		free(s->tomb[qi]);
	}
	if(s->dbopts){
		rocksdb_options_destroy(s->dbopts);
	}
	if(s->table){
		rocksdb_block_based_options_destroy(s->table);
	}
	if(s->cache){
		rocksdb_cache_destroy(s->cache);
	}
	fb_chan_writer_close(s->w);
	fb_chan_reader_close(s->chan);
	if(s->own_sh){
		free(s->sh);
	}
	pthread_mutex_destroy(&s->lock);
	pthread_rwlock_destroy(&s->dblock);
	pthread_mutex_destroy(&s->itlock);
	free(s->kept);
	free(s->path);
	free(s);
}

static bool queue_valid(enum fb_queue q)
{
	return q == FB_Q_OUT || q == FB_Q_IN || q == FB_Q_DEAD;
}

/* drop_oldest: finds the oldest records of Q that free NEED bytes (they are all live from q->first
 * to *LAST). Called with the lock held. Returns 0 (with *freed, *ndrop, *last) or -EIO. */
static int collect_oldest(struct fb_spool *s, struct spool_queue *q, uint64_t need,
		uint64_t *freed, uint64_t *ndrop, uint64_t *last)
{
	rocksdb_readoptions_t *ro;
	rocksdb_iterator_t *it;
	uint8_t from[KEY_LEN], upper[KEY_LEN];
	const char *key;
	size_t klen, vlen;
	char *err = NULL;
	int rc = 0;

	/* Seek straight to the oldest live record: what was deleted before it is never visited. */
	key_encode(from, q->first);
	it = bounded_iter(s, q->cf, q->next_seq, &ro, upper);
	for(rocksdb_iter_seek(it, (const char *)from, sizeof(from));
			rocksdb_iter_valid(it) && *freed < need; rocksdb_iter_next(it)){
		key = rocksdb_iter_key(it, &klen);
		rocksdb_iter_value(it, &vlen);
		if(klen != KEY_LEN){
			continue;
		}
		*freed += klen + vlen;
		(*ndrop)++;
		*last = key_decode(key);
	}
	rocksdb_iter_get_error(it, &err);
	if(err){
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: reading the oldest records to "
				"drop failed: %s", s->path, err);
		rocksdb_free(err);
		rc = -EIO;
	}
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
	return rc;
}

/* Never after a failed write: RocksDB 7.8.3 aborts the process on a WAL sync that follows a
 * failed WAL append (an assertion in WritableFileWriter). With the lock held or not. */
static int spool_fsync(struct fb_spool *s)
{
	char *err = NULL;
	int rc;

	pthread_rwlock_rdlock(&s->dblock);
	rc = atomic_load(&s->failed);
	if(rc == 0 && s->db == NULL){
		rc = -EIO;
	}
	if(rc == 0){
		rocksdb_flush_wal(s->db, 1, &err);
		if(err){
			rc = spool_fail(s, "WAL sync", err);
			rocksdb_free(err);
		}
	}
	pthread_rwlock_unlock(&s->dblock);
	return rc;
}

/* Adds staged record SEQ to S->wb unless it is no longer live (acknowledged, or moved to dead
 * letters, before it was settled: it never reaches RocksDB) or in RocksDB already. */
static int settle_put(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct fb_spool *s = ud;
	uint8_t key[KEY_LEN];

	if(seq > s->settled && seqset_has(&s->q[FB_Q_OUT].live, seq)){
		key_encode(key, seq);
		rocksdb_writebatch_put_cf(s->wb, s->q[FB_Q_OUT].cf, (const char *)key, sizeof(key), val, len);
	}
	return 0;
}

/* Adds the staged records still live, and the settled mark, to S->wb. With the lock held. */
static int settle_stage(struct fb_spool *s)
{
	int rc = fb_chan_each_unsettled(s->chan, settle_put, s);

	if(rc < 0){
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: cannot read the staging files: %s",
				s->path, strerror(-rc));
		rocksdb_writebatch_clear(s->wb);
		return -EIO;
	}
	settled_stage(s, s->q[FB_Q_OUT].next_seq - 1);
	return 0;
}

/* The batch with the staged records is written. A staging file about to be emptied (and written
 * over) must not be the only copy on disk of what it held: unless sync is "never", the WAL is
 * fsynced first (with "always", every time). With the lock held. */
static int stage_settled(struct fb_spool *s)
{
	if(s->sync == FB_SYNC_ALWAYS || (s->sync != FB_SYNC_NEVER && fb_chan_sealed(s->chan))){
		int rc = spool_fsync(s);
		if(rc){
			return rc;
		}
	}
	s->settled = s->q[FB_Q_OUT].next_seq - 1;
	fb_chan_settled(s->chan);
	__atomic_store_n(&s->staged, 0, __ATOMIC_RELAXED);
	return 0;
}

/* Moves the staged records into RocksDB. With the lock held. Returns 0, -EIO, or -ENOSPC while
 * the disk is full (the records stay staged). */
static int settle_locked(struct fb_spool *s)
{
	int rc = space_returned(s);

	if(rc){
		return rc;
	}
	if(s->chan == NULL){
		return 0;
	}
	if(fb_chan_unsettled(s->chan) == 0){
		/* Empties a sealed file all taken and settled (by earlier batches, not fsynced yet). */
		if(s->sync != FB_SYNC_NEVER && fb_chan_sealed(s->chan) && (rc = spool_fsync(s)) != 0){
			return rc;
		}
		fb_chan_settled(s->chan);
		return 0;
	}
	rc = settle_stage(s);
	if(rc == 0){
		rc = batch_write(s, "moving staged records into", FB_Q_OUT);
	}
	return rc ? rc : stage_settled(s);
}

static int settle(struct fb_spool *s)
{
	int rc;

	if(s->chan == NULL){
		return 0;
	}
	pthread_mutex_lock(&s->lock);
	rc = settle_locked(s);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int fb_spool_settle(struct fb_spool *s)
{
	if(s == NULL){
		return -EINVAL;
	}
	return settle(s);
}

size_t fb_spool_staged(struct fb_spool *s)
{
	return s ? __atomic_load_n(&s->staged, __ATOMIC_RELAXED) : 0;
}

bool fb_spool_settle_wanted(struct fb_spool *s)
{
	bool wanted;

	pthread_mutex_lock(&s->lock);
	/* At once when no record taken from the staging files is live any more (nothing to write);
	 * else once the writer is a quarter into its other file, so that the records acknowledged
	 * meanwhile never reach RocksDB. */
	wanted = s->chan && fb_chan_sealed(s->chan)
		&& (fb_chan_settle_due(s->chan) || seqset_find(&s->q[FB_Q_OUT].live, s->settled + 1, false) == 0);
	pthread_mutex_unlock(&s->lock);
	return wanted;
}

/* fb_spool_oldest(): the visitor for the record being looked for among the staged ones. */
struct find_ctx {
	uint64_t seq;
	fb_spool_visit_fn fn;
	void *ud;
	int found;
};

static int find_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct find_ctx *c = ud;

	if(seq != c->seq){
		return 0;
	}
	c->found = 1;
	c->fn(c->ud, seq, val, len);
	return 1;
}

int fb_spool_oldest(struct fb_spool *s, fb_spool_visit_fn fn, void *ud)
{
	struct find_ctx c = { .fn = fn, .ud = ud };
	uint64_t first;

	if(s == NULL || fn == NULL){
		return -EINVAL;
	}
	pthread_mutex_lock(&s->lock);
	first = s->q[FB_Q_OUT].first;
	if(first > s->settled && s->chan){
		/* Staged: read it there rather than settle for it. */
		c.seq = first;
		fb_chan_each_unsettled(s->chan, find_visit, &c);
		pthread_mutex_unlock(&s->lock);
		return c.found;
	}
	pthread_mutex_unlock(&s->lock);
	return first ? fb_spool_read(s, FB_Q_OUT, first - 1, 1, fn, ud) : 0;
}

/* Tells the channel's writer how many bytes "out" holds now (its max_size check). With the lock
 * held. */
static void account(struct fb_spool *s)
{
	if(s->chan){
		fb_chan_account(s->chan, fb_chan_seen(s->chan), s->q[FB_Q_OUT].bytes);
	}
}

/* drop_oldest: deletes the oldest records of "out" until the queue fits into max_size again.
 * With the lock held. Returns 0 (adds the count to *dropped) or a negative errno. */
static int trim(struct fb_spool *s, uint64_t *dropped)
{
	struct spool_queue *q = &s->q[FB_Q_OUT];
	uint64_t freed = 0, ndrop = 0, last = 0, nf, n;
	int rc;

	if(s->max_size == 0 || q->bytes <= s->max_size || s->on_full != FB_ON_FULL_DROP_OLDEST){
		return 0;
	}
	rc = settle_locked(s); /* the oldest are read from RocksDB */
	if(rc == 0){
		rc = collect_oldest(s, q, q->bytes - s->max_size, &freed, &ndrop, &last);
	}
	if(rc || ndrop == 0){
		return rc;
	}
	/* The records up to LAST go below the floor. */
	q->unranged += freed;
	nf = seqset_find(&q->live, last + 1, false);
	if(nf == 0){
		nf = q->next_seq;
	}
	floor_stage(s, FB_Q_OUT, nf);
	rc = batch_write(s, "dropping the oldest records of", FB_Q_OUT);
	if(rc){
		return rc;
	}
	/* The batch deleted every live record from q->first to LAST: exactly NDROP of them. */
	floor_commit(s, q, nf);
	for(n = seqset_next(&q->live, q->first); n != 0 && n <= last; n = seqset_next(&q->live, n + 1)){
		lanes_forget(&s->lanes, n);
		seqset_del(&q->live, n);
	}
	q->count -= ndrop;
	q->bytes = q->bytes > freed ? q->bytes - freed : 0;
	q->first = seqset_next(&q->live, last + 1);
	if(q->count == 0){
		q->bytes = 0;
		seqset_reset(&q->live);
		lanes_reset(&s->lanes);
	}
	if(dropped){
		*dropped += ndrop;
	}
	return 0;
}

/* Takes what the channel's writer staged since the last time into "out". */
struct ingest_ctx {
	struct fb_spool *s;
	fb_spool_visit_fn fn;
	void *ud;
	int rc;
};

static int ingest_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct ingest_ctx *c = ud;
	struct fb_spool *s = c->s;
	struct spool_queue *q = &s->q[FB_Q_OUT];
	/* The next seq the writer staged that is neither settled nor acknowledged: below the floor,
	 * the cloud acknowledged records that were never settled ("out" holds no key of them, so a
	 * restarted link process finds next_seq below them). */
	uint64_t expect = q->next_seq > q->floor ? q->next_seq : q->floor;

	if(seq < q->next_seq || seq <= s->settled || seq < q->floor){
		return 0; /* known already: a restarted link process takes the files from their start */
	}
	if(seq > expect && expect > s->settled){
		/* The writer numbers what it stages without a gap: the take skipped the records in
		 * between, large ones whose own file is missing (fb_chan_take() passes over them, as a
		 * restarted take must for the settled ones). Lost to damage, and counted. */
		loss_report(s, seq - expect, expect, seq - 1,
				"the staging files (large records whose own file is missing)");
	}
	if(seqset_reserve(&q->live, seq) != 0 || lanes_add(&s->lanes, seq, val, len) != 0){
		c->rc = -ENOMEM;
		return 1;
	}
	queue_remember(q, seq, KEY_LEN + (uint64_t)len);
	q->next_seq = seq + 1;
	if(c->fn){
		c->fn(c->ud, seq, val, len);
	}
	return 0;
}

/* With the lock held. */
static int ingest_locked(struct fb_spool *s, fb_spool_visit_fn fn, void *ud, uint64_t *dropped)
{
	struct ingest_ctx c = { .s = s, .fn = fn, .ud = ud };
	int rc;

	rc = fb_chan_take(s->chan, ingest_visit, &c);
	__atomic_store_n(&s->staged, fb_chan_unsettled(s->chan), __ATOMIC_RELAXED);
	if(c.rc || rc < 0){
		rc = c.rc ? c.rc : rc;
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: cannot take staged records: %s",
				s->path, strerror(-rc));
		return rc;
	}
	rc = trim(s, dropped);
	account(s);
	return rc;
}

int fb_spool_ingest(struct fb_spool *s, fb_spool_visit_fn fn, void *ud, uint64_t *dropped)
{
	int rc;

	if(s == NULL || s->chan == NULL){
		return -EINVAL;
	}
	pthread_mutex_lock(&s->lock);
	rc = ingest_locked(s, fn, ud, dropped);
	pthread_mutex_unlock(&s->lock);
	return rc;
}

/* An append to "in" or "dead", straight to RocksDB, with the lock held. */
static int direct_append(struct fb_spool *s, enum fb_queue qi, const void *val, size_t len, uint64_t *seq)
{
	struct spool_queue *q = &s->q[qi];
	uint8_t key[KEY_LEN];
	int rc;

	/* While the spool has failed, a reopen that failed too left no database: its column family
	 * handles are gone, so nothing may go into a batch (batch_write() would refuse it anyway). */
	rc = space_returned(s);
	if(rc){
		return rc;
	}
	rc = seqset_reserve(&q->live, q->next_seq);
	if(rc){
		return rc;
	}
	key_encode(key, q->next_seq);
	rocksdb_writebatch_put_cf(s->wb, q->cf, (const char *)key, sizeof(key), val, len);
	if(qi == FB_Q_DEAD){
		dead_next_stage(s);
	}
	rc = batch_write(s, "append to", qi);
	if(rc){
		return rc;
	}
	queue_remember(q, q->next_seq, KEY_LEN + (uint64_t)len);
	*seq = q->next_seq++;
	return 0;
}

/* An append to "out" through this process's own channel writer. With the lock held. */
static int out_append(struct fb_spool *s, const void *val, size_t len, uint64_t *seq, uint64_t *dropped)
{
	int rc = fb_chan_append(s->w, val, len, seq);

	if(rc == -EBUSY){
		/* Both staging files in use: settle, which empties the older one, and again. */
		rc = settle_locked(s);
		if(rc == 0){
			rc = fb_chan_append(s->w, val, len, seq);
		}
	}
	return rc ? rc : ingest_locked(s, NULL, NULL, dropped);
}

int fb_spool_append(struct fb_spool *s, enum fb_queue qi, const void *val, size_t len,
		uint64_t *seq, uint64_t *dropped)
{
	int rc;

	if(s == NULL || !queue_valid(qi) || (val == NULL && len > 0) || (qi == FB_Q_OUT && s->w == NULL)){
		return -EINVAL;
	}
	pthread_mutex_lock(&s->lock);
	rc = qi == FB_Q_OUT ? out_append(s, val, len, seq, dropped) : direct_append(s, qi, val, len, seq);
	pthread_mutex_unlock(&s->lock);
	if(rc == 0 && qi != FB_Q_OUT && s->sync == FB_SYNC_ALWAYS){
		/* On failure the record stays in the spool, but is not known to be on disk: the caller
		 * refuses it. ("out" is synced in the staging file by its writer.) */
		rc = spool_fsync(s);
	}
	return rc;
}

/* Staged records copied out under the lock (read_degraded()), to be visited without it. */
struct staged_copy {
	struct fb_spool *s;
	uint64_t after;
	size_t max, n, slots;
	uint64_t *seq;
	size_t *off, *len;
	uint8_t *buf;
	size_t used, cap;
	int rc;
};

static int staged_copy_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct staged_copy *c = ud;
	uint8_t *b;

	if(seq <= c->after || seq <= c->s->settled || !seqset_has(&c->s->q[FB_Q_OUT].live, seq)){
		return 0;
	}
	if(c->n == c->slots){
		size_t slots = c->slots ? 2 * c->slots : 256;
		uint64_t *ns = realloc(c->seq, slots * sizeof(*ns));
		size_t *no = ns ? realloc(c->off, slots * sizeof(*no)) : NULL;
		size_t *nl = no ? realloc(c->len, slots * sizeof(*nl)) : NULL;

		if(ns){
			c->seq = ns;
		}
		if(no){
			c->off = no;
		}
		if(nl == NULL){
			c->rc = -ENOMEM;
			return 1;
		}
		c->len = nl;
		c->slots = slots;
	}
	if(c->used + len > c->cap){
		size_t cap = c->cap ? c->cap : 1u << 16;
		while(cap < c->used + len){
			cap *= 2;
		}
		b = realloc(c->buf, cap);
		if(b == NULL){
			c->rc = -ENOMEM;
			return 1;
		}
		c->buf = b;
		c->cap = cap;
	}
	memcpy(c->buf + c->used, val, len);
	c->seq[c->n] = seq;
	c->off[c->n] = c->used;
	c->len[c->n] = len;
	c->used += len;
	return ++c->n >= c->max;
}

/* fb_spool_read() while the spool has failed (called with s->dblock held for reading, which it
 * releases): the records of RocksDB that are still live (the lock is taken for each check, never
 * while FN runs: it may delete), then, for "out", the staged records above the settled mark,
 * copied under the lock (at most MAX, the staging files' size at most) and visited after it. */
static int read_degraded(struct fb_spool *s, enum fb_queue qi, uint64_t after, uint64_t first,
		uint64_t next, size_t max, fb_spool_visit_fn fn, void *ud)
{
	struct spool_queue *q = &s->q[qi];
	struct staged_copy c = { .s = s, .after = after };
	rocksdb_readoptions_t *ro;
	rocksdb_iterator_t *it;
	uint8_t from[KEY_LEN], upper[KEY_LEN];
	const char *key, *val;
	size_t klen, vlen;
	uint64_t seq, top, last = after;
	char *err = NULL;
	bool live, stop = false;
	int n = 0;

	pthread_mutex_lock(&s->lock);
	top = qi == FB_Q_OUT && s->settled + 1 < next ? s->settled + 1 : next;
	pthread_mutex_unlock(&s->lock);
	key_encode(from, after + 1 > first ? after + 1 : first);
	it = bounded_iter(s, q->cf, top, &ro, upper);
	for(rocksdb_iter_seek(it, (const char *)from, sizeof(from));
			rocksdb_iter_valid(it) && (size_t)n < max; rocksdb_iter_next(it)){
		key = rocksdb_iter_key(it, &klen);
		if(klen != KEY_LEN){
			continue;
		}
		seq = key_decode(key);
		pthread_mutex_lock(&s->lock);
		live = seqset_has(&q->live, seq);
		pthread_mutex_unlock(&s->lock);
		if(!live){
			continue;
		}
		val = rocksdb_iter_value(it, &vlen);
		n++;
		last = seq;
		if(fn(ud, seq, val, vlen) != 0){
			stop = true;
			break;
		}
	}
	rocksdb_iter_get_error(it, &err);
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
	pthread_rwlock_unlock(&s->dblock);
	if(err){
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: reading \"%s\" failed: %s",
				s->path, queue_name(qi), err);
		rocksdb_free(err);
		return -EIO;
	}
	if(stop || (size_t)n >= max || qi != FB_Q_OUT){
		return n;
	}
	c.after = last;
	c.max = max - (size_t)n;
	pthread_mutex_lock(&s->lock);
	if(s->chan){
		fb_chan_each_unsettled(s->chan, staged_copy_visit, &c);
	}
	pthread_mutex_unlock(&s->lock);
	for(size_t i = 0; c.rc == 0 && i < c.n; i++){
		n++;
		if(fn(ud, c.seq[i], c.buf + c.off[i], c.len[i]) != 0){
			break;
		}
	}
	free(c.seq);
	free(c.off);
	free(c.len);
	free(c.buf);
	return c.rc ? c.rc : n;
}

int fb_spool_read(struct fb_spool *s, enum fb_queue qi, uint64_t after, size_t max,
		fb_spool_visit_fn fn, void *ud)
{
	struct spool_queue *q;
	rocksdb_readoptions_t *ro;
	rocksdb_iterator_t *it;
	uint8_t from[KEY_LEN], upper[KEY_LEN];
	const char *key, *val;
	size_t klen, vlen;
	uint64_t next, first;
	char *err = NULL;
	bool degraded = false;
	int n = 0, rc;

	if(s == NULL || !queue_valid(qi) || fn == NULL){
		return -EINVAL;
	}
	q = &s->q[qi];
	pthread_mutex_lock(&s->lock);
	next = q->next_seq;
	first = q->first;
	/* Every record below NEXT is in RocksDB after this. */
	rc = qi == FB_Q_OUT ? settle_locked(s) : 0;
	if(rc == 0){
		rc = space_returned(s);
	}
	if(rc && s->db){
		/* The spool has failed (a full disk) but its database is open: a read does not write,
		 * so it goes on, from RocksDB up to the settled mark and from the staging files above
		 * it, skipping what was deleted in memory meanwhile (deferred_delete()). */
		degraded = true;
		rc = 0;
	}
	if(rc == 0){
		pthread_rwlock_rdlock(&s->dblock); /* the database stays open until the read ends */
	}
	pthread_mutex_unlock(&s->lock);
	if(rc){
		return rc;
	}
	if(max == 0 || first == 0 || after >= next - 1){
		pthread_rwlock_unlock(&s->dblock);
		return 0;
	}
	if(max > INT32_MAX){
		max = INT32_MAX; /* the count is returned as an int */
	}
	if(degraded){
		return read_degraded(s, qi, after, first, next, max, fn, ud);
	}

	/* Seek to the first live record after AFTER instead of to the first key: the tombstones of
	 * the records deleted before it are never visited. The upper bound ends the scan at the newest
	 * record (records appended during the read are left for the next one) without looking at
	 * tombstones behind it. */
	key_encode(from, after + 1 > first ? after + 1 : first);
	it = bounded_iter(s, q->cf, next, &ro, upper);
	for(rocksdb_iter_seek(it, (const char *)from, sizeof(from));
			rocksdb_iter_valid(it) && (size_t)n < max; rocksdb_iter_next(it)){
		key = rocksdb_iter_key(it, &klen);
		if(klen != KEY_LEN){
			continue;
		}
		val = rocksdb_iter_value(it, &vlen);
		n++;
		if(fn(ud, key_decode(key), val, vlen) != 0){
			break;
		}
	}
	rocksdb_iter_get_error(it, &err);
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
	pthread_rwlock_unlock(&s->dblock);
	if(err){
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: reading \"%s\" failed: %s",
				s->path, queue_name(qi), err);
		rocksdb_free(err);
		return -EIO;
	}
	return n;
}

/* Deletes while the spool has failed (a full disk). Acknowledgements must not be lost to a full
 * disk (their records would be sent again once it has room), and a delete cannot be written then.
 * Of the two ways to keep them -- the reserve file given up for the delete batches, or the deletes
 * kept in memory until space returns -- the spool keeps them in memory: the reserve exists for a
 * restart on a full disk, and after a failed WAL append RocksDB takes no write until it is
 * reopened anyway. The records leave the live set at once (reads, fb_spool_live() and the stats
 * no longer see them); the database keeps them until deferred_flush(), run by space_returned()
 * right after the reopen, writes in one batch each queue's floor (up to its oldest live record)
 * and a tombstone for each record deleted above it that RocksDB holds. The memory this takes is
 * bounded: the floors cost nothing, a tombstone 8 bytes, at most DEFERRED_TOMB_MAX per queue; a
 * staged record deleted out of order needs none (settling skips records no longer live). A crash
 * before the flush loses the deletes: those records are sent again, as at-least-once allows.
 * With the lock held. Returns 0, or FAILED (nothing changed) when the tombstones would not fit. */
static int deferred_delete(struct fb_spool *s, enum fb_queue qi, const struct fb_spool_del *items,
		size_t n, int failed, size_t *removed)
{
	struct spool_queue *q = &s->q[qi];
	uint64_t nf, *t;
	size_t live = 0, need = 0, i, cap;

	for(i = 0; i < n; i++){
		s->mark[i] = seqset_has(&q->live, items[i].seq);
		if(s->mark[i]){
			seqset_del(&q->live, items[i].seq);
			live++;
		}
	}
	if(live == 0){
		return 0;
	}
	nf = seqset_find(&q->live, q->first, false);
	if(nf == 0){
		nf = q->next_seq;
	}
	for(i = 0; i < n; i++){
		if(s->mark[i] && items[i].seq >= nf && (qi != FB_Q_OUT || items[i].seq <= s->settled)){
			need++;
		}
	}
	if(s->ntomb[qi] + need > DEFERRED_TOMB_MAX){
		for(i = 0; i < n; i++){
			if(s->mark[i]){
				seqset_restore(&q->live, items[i].seq);
			}
		}
		return failed;
	}
	if(s->ntomb[qi] + need > s->tombcap[qi]){
		cap = s->tombcap[qi] ? s->tombcap[qi] : 256;
		while(cap < s->ntomb[qi] + need){
			cap *= 2;
		}
		t = realloc(s->tomb[qi], cap * sizeof(*t));
		if(t == NULL){
			for(i = 0; i < n; i++){
				if(s->mark[i]){
					seqset_restore(&q->live, items[i].seq);
				}
			}
			return -ENOMEM;
		}
		s->tomb[qi] = t;
		s->tombcap[qi] = cap;
	}
	for(i = 0; i < n; i++){
		if(!s->mark[i]){
			continue;
		}
		if(items[i].seq >= nf){
			if(qi != FB_Q_OUT || items[i].seq <= s->settled){
				s->tomb[qi][s->ntomb[qi]++] = items[i].seq;
			}
		}else{
			q->unranged += KEY_LEN + (uint64_t)items[i].len;
		}
		seqset_restore(&q->live, items[i].seq); /* queue_forget() takes it out again */
		queue_forget(q, items[i].seq, KEY_LEN + (uint64_t)items[i].len);
	}
	s->deferred[qi] = true;
	if(qi == FB_Q_OUT){
		account(s);
	}
	*removed = live;
	return 0;
}

/* Writes the deletes deferred_delete() kept (one batch for every queue). With the lock held,
 * right after space_returned() reopened the database; S->wb is empty then (every writer calls
 * space_returned() before it fills the batch, and batch_write()'s own call finds the spool
 * writing already). Returns 0 or like batch_write(). */
static int deferred_flush(struct fb_spool *s)
{
	uint8_t key[KEY_LEN];
	uint64_t nf[3] = { 0, 0, 0 }, deletes = 0;
	bool any = false;
	int rc;

	for(int qi = 0; qi < 3; qi++){
		struct spool_queue *q = &s->q[qi];

		if(!s->deferred[qi]){
			continue;
		}
		any = true;
		nf[qi] = q->first ? q->first : q->next_seq;
		for(size_t i = 0; i < s->ntomb[qi]; i++){
			if(s->tomb[qi][i] >= nf[qi] && !seqset_has(&q->live, s->tomb[qi][i])){
				key_encode(key, s->tomb[qi][i]);
				rocksdb_writebatch_delete_cf(s->wb, q->cf, (const char *)key, sizeof(key));
				deletes++;
			}
		}
		if(nf[qi] > q->floor){
			floor_stage(s, (enum fb_queue)qi, nf[qi]);
		}
	}
	if(!any){
		return 0;
	}
	rc = batch_write(s, "writing the deletes kept while the disk was full to", FB_Q_OUT);
	if(rc){
		return rc; /* kept: tried again when space returns again */
	}
	for(int qi = 0; qi < 3; qi++){
		if(s->deferred[qi] && nf[qi] > s->q[qi].floor){
			floor_commit(s, &s->q[qi], nf[qi]);
		}
		s->deferred[qi] = false;
		s->ntomb[qi] = 0;
	}
	(void)deletes;
	return 0;
}

int fb_spool_delete(struct fb_spool *s, enum fb_queue qi, uint64_t seq, size_t len)
{
	struct fb_spool_del d = { .seq = seq, .len = len };

	return fb_spool_delete_many(s, qi, &d, 1);
}

/* The records of ITEMS that are live leave the live set (their mark set) before anything is
 * written, so that the oldest record left is known: the batch writes the floor up to it, and a
 * tombstone only for deleted records above it. If the write fails, they are put back. */
int fb_spool_delete_many(struct fb_spool *s, enum fb_queue qi, const struct fb_spool_del *items, size_t n)
{
	size_t removed;

	return fb_spool_delete_counted(s, qi, items, n, &removed);
}

int fb_spool_delete_counted(struct fb_spool *s, enum fb_queue qi, const struct fb_spool_del *items,
		size_t n, size_t *removed)
{
	struct spool_queue *q;
	uint8_t key[KEY_LEN], *mark;
	uint64_t nf, staged_from;
	size_t live = 0, i;
	bool settle_now;
	int rc = 0;

	*removed = 0;
	if(s == NULL || !queue_valid(qi) || (items == NULL && n > 0)){
		return -EINVAL;
	}
	q = &s->q[qi];

	pthread_mutex_lock(&s->lock);
	/* As in direct_append(): no batch while the spool has failed (maybe without a database):
	 * the deletes are kept in memory instead. */
	rc = space_returned(s);
	if(n > s->markcap){
		mark = realloc(s->mark, n);
		if(mark == NULL){
			rc = -ENOMEM;
			goto unlock;
		}
		s->mark = mark;
		s->markcap = n;
	}
	if(rc){
		rc = deferred_delete(s, qi, items, n, rc, removed);
		goto unlock;
	}
	for(i = 0; i < n; i++){
		s->mark[i] = seqset_has(&q->live, items[i].seq);
		if(s->mark[i]){
			seqset_del(&q->live, items[i].seq);
			live++;
		}
	}
	if(live == 0){
		goto unlock;
	}
	nf = seqset_find(&q->live, q->first, false);
	if(nf == 0){
		nf = q->next_seq;
	}
	/* Staged records below the new floor are gone with it, and the live ones may stay staged.
	 * Only a staged record deleted above the floor (out of order) would come back from the staging
	 * file after a crash: then the live ones are settled in this batch and the file cleared. A
	 * record in RocksDB deleted above the floor gets a tombstone. */
	staged_from = 0;
	if(qi == FB_Q_OUT && s->chan && fb_chan_unsettled(s->chan)){
		staged_from = fb_chan_first_unsettled(s->chan);
		if(staged_from <= s->settled){
			staged_from = s->settled + 1; /* those are in RocksDB: a tombstone each */
		}
	}
	settle_now = false;
	for(i = 0; i < n; i++){
		if(!s->mark[i] || items[i].seq < nf){
			continue;
		}
		if(staged_from && items[i].seq >= staged_from){
			settle_now = true;
		}else{
			key_encode(key, items[i].seq);
			rocksdb_writebatch_delete_cf(s->wb, q->cf, (const char *)key, sizeof(key));
		}
	}
	rc = settle_now ? settle_stage(s) : 0;
	if(rc == 0){
		for(i = 0; i < n; i++){
			if(s->mark[i] && items[i].seq < nf){
				q->unranged += KEY_LEN + (uint64_t)items[i].len;
			}
		}
		if(nf > q->floor){
			floor_stage(s, qi, nf);
		}
		rc = batch_write(s, "delete from", qi);
	}
	if(rc){
		for(i = 0; i < n; i++){
			if(s->mark[i]){
				seqset_restore(&q->live, items[i].seq);
			}
		}
		goto unlock;
	}
	if(settle_now){
		stage_settled(s); /* a failed fsync (sync "always") leaves them staged as well */
	}
	if(nf > q->floor){
		floor_commit(s, q, nf);
	}
	for(i = 0; i < n; i++){
		if(s->mark[i]){
			queue_forget(q, items[i].seq, KEY_LEN + (uint64_t)items[i].len);
		}
	}
	if(qi == FB_Q_OUT){
		account(s);
	}
	*removed = live;
unlock:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

bool fb_spool_live(struct fb_spool *s, enum fb_queue qi, uint64_t seq)
{
	bool live;

	if(s == NULL || !queue_valid(qi)){
		return false;
	}
	pthread_mutex_lock(&s->lock);
	live = seqset_has(&s->q[qi].live, seq);
	pthread_mutex_unlock(&s->lock);
	return live;
}

void fb_spool_thread_init(void)
{
	/* RocksDB counts per-operation statistics in thread-local storage unless told not to. */
	rocksdb_set_perf_level(rocksdb_disable);
}

int fb_spool_move_dead(struct fb_spool *s, uint64_t seq, size_t out_len, const void *val, size_t len)
{
	struct spool_queue *out, *dead;
	uint8_t okey[KEY_LEN], dkey[KEY_LEN];
	int rc = 0;

	if(s == NULL || (val == NULL && len > 0)){
		return -EINVAL;
	}
	out = &s->q[FB_Q_OUT];
	dead = &s->q[FB_Q_DEAD];
	key_encode(okey, seq);
	rc = settle(s);
	if(rc){
		return rc;
	}

	pthread_mutex_lock(&s->lock);
	rc = space_returned(s); /* the lock was let go after settle(): fail again meanwhile? */
	if(rc){
		goto unlock;
	}
	if(!seqset_has(&out->live, seq)){
		/* drop_oldest got there first (and counted it): nothing to move. */
		goto unlock;
	}
	rc = seqset_reserve(&dead->live, dead->next_seq);
	if(rc){
		goto unlock;
	}
	key_encode(dkey, dead->next_seq);
	rocksdb_writebatch_put_cf(s->wb, dead->cf, (const char *)dkey, sizeof(dkey), val, len);
	dead_next_stage(s);
	rocksdb_writebatch_delete_cf(s->wb, out->cf, (const char *)okey, sizeof(okey));
	rc = batch_write(s, "moving a record to dead letters from", FB_Q_OUT);
	if(rc){
		goto unlock;
	}
	queue_forget(out, seq, KEY_LEN + (uint64_t)out_len);
	queue_remember(dead, dead->next_seq++, KEY_LEN + (uint64_t)len);
	account(s);
	rc = 1;
unlock:
	pthread_mutex_unlock(&s->lock);
	return rc;
}

int fb_spool_sync(struct fb_spool *s)
{
	int rc = 0;

	if(s == NULL){
		return -EINVAL;
	}
	/* Staged records are synced where they are: settling them would put them into RocksDB
	 * just before most are acknowledged. */
	pthread_mutex_lock(&s->lock);
	if(s->chan){
		rc = fb_chan_sync(s->chan);
	}
	pthread_mutex_unlock(&s->lock);
	if(rc){
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: syncing the staging files failed: %s",
				s->path, strerror(-rc));
		return rc;
	}
	return spool_fsync(s);
}

void fb_spool_stats(struct fb_spool *s, struct fb_spool_stats *st)
{
	memset(st, 0, sizeof(*st));
	if(s == NULL){
		return;
	}
	pthread_mutex_lock(&s->lock);
	/* A failed spool looks for space when it is used; one that nothing else uses (the queue
	 * drained on a full disk, deletes kept in memory) does it here, as the link process asks for
	 * its stats every second. */
	if(atomic_load(&s->failed)){
		space_returned(s);
	}
	st->messages = s->q[FB_Q_OUT].count;
	st->bytes = s->q[FB_Q_OUT].bytes;
	st->first_seq = s->q[FB_Q_OUT].first;
	st->last_seq = s->q[FB_Q_OUT].next_seq - 1;
	st->dead = s->q[FB_Q_DEAD].count;
	st->in = s->q[FB_Q_IN].count;
	st->disk_full = atomic_load(&s->failed) == -ENOSPC;
	pthread_mutex_unlock(&s->lock);
}

/* ---- lanes ---- */

uint32_t fb_spool_lanes_next(struct fb_spool *s, const uint64_t after[FB_LANE_QUEUES], uint64_t next[FB_LANE_QUEUES],
		uint32_t *nonempty)
{
	struct spool_lanes *ln;
	uint32_t m = 0;

	if(s == NULL){
		return 0;
	}
	ln = &s->lanes;
	pthread_mutex_lock(&s->lock);
	if(nonempty){
		*nonempty = ln->nonempty;
	}
	for(uint32_t b = ln->nonempty; b; b &= b - 1){
		unsigned l = (unsigned)__builtin_ctz(b);
		uint64_t x;

		if(ln->last[l] <= after[l]){
			continue;
		}
		x = seqset_find(&ln->live[l], after[l] + 1 > ln->first[l] ? after[l] + 1 : ln->first[l], false);
		if(x){
			next[l] = x;
			m |= 1u << l;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return m;
}

void fb_spool_lane_stats(struct fb_spool *s, uint64_t count[FB_LANES], uint64_t first[FB_LANES])
{
	memset(count, 0, FB_LANES * sizeof(*count));
	memset(first, 0, FB_LANES * sizeof(*first));
	if(s == NULL){
		return;
	}
	pthread_mutex_lock(&s->lock);
	for(unsigned l = 0; l < FB_LANES; l++){
		uint64_t a = s->lanes.first[l], b = s->lanes.first[l + FB_LANES];

		count[l] = s->lanes.count[l] + s->lanes.count[l + FB_LANES];
		first[l] = a && b ? (a < b ? a : b) : a ? a : b;
	}
	pthread_mutex_unlock(&s->lock);
}

/* fb_spool_read_lane(): a visitor that takes only record SEQ. */
struct exact_ctx {
	uint64_t seq;
	fb_spool_visit_fn fn;
	void *ud;
	int found, ret;
};

static int exact_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct exact_ctx *c = ud;

	if(seq == c->seq){
		c->found = 1;
		c->ret = c->fn(c->ud, seq, val, len);
	}
	return 1;
}

/* Records of a lane read in one go (the caller reads again for more). */
#define LANE_READ_MAX 256
/* Within this many seqs the next record of the lane is reached by stepping, beyond by a seek. */
#define LANE_STEP_MAX 16
/* How long the iterator of the lane reads is kept at most (struct fb_spool). */
#define LANE_ITER_MS 250

/* The iterator for a read of "out" up to record LAST, with s->dblock held for reading; HI: every
 * record below it is in RocksDB. The kept one when it sees LAST and is young enough, else a new
 * one, kept for the next read (*KEPT true, ITLOCK held until lane_iter_put()); when another reader
 * uses the kept one, a new one of its own (*KEPT false: lane_iter_put() destroys it and *RO, and
 * UPPER must outlive it). */
static rocksdb_iterator_t *lane_iter(struct fb_spool *s, uint64_t last, uint64_t hi, bool *kept,
		rocksdb_readoptions_t **ro, uint8_t upper[KEY_LEN])
{
	uint64_t now = mono_ms();

	if(pthread_mutex_trylock(&s->itlock) != 0){
		*kept = false;
		return bounded_iter(s, s->q[FB_Q_OUT].cf, last + 1, ro, upper);
	}
	*kept = true;
	if(s->it && (last >= s->ithi || now - s->itborn_ms >= LANE_ITER_MS)){
		lane_iter_drop(s);
	}
	if(s->it == NULL){
		s->it = bounded_iter(s, s->q[FB_Q_OUT].cf, hi, &s->itro, s->itupper);
		s->ithi = hi;
		s->itborn_ms = now;
		atomic_store_explicit(&s->itlive, true, memory_order_relaxed);
	}
	return s->it;
}

/* Ends the use of lane_iter()'s iterator IT: a kept one stays unless it failed (FAILED) or is
 * past its last record; another is destroyed. */
static void lane_iter_put(struct fb_spool *s, rocksdb_iterator_t *it, bool kept, bool failed,
		rocksdb_readoptions_t *ro)
{
	if(!kept){
		rocksdb_iter_destroy(it);
		rocksdb_readoptions_destroy(ro);
		return;
	}
	if(failed || !rocksdb_iter_valid(it)){
		lane_iter_drop(s);
	}
	pthread_mutex_unlock(&s->itlock);
}

void fb_spool_lane_iter_expire(struct fb_spool *s)
{
	if(s == NULL || !atomic_load_explicit(&s->itlive, memory_order_relaxed)
			|| pthread_rwlock_tryrdlock(&s->dblock) != 0){
		return;
	}
	if(pthread_mutex_trylock(&s->itlock) == 0){
		if(s->it && mono_ms() - s->itborn_ms >= LANE_ITER_MS){
			lane_iter_drop(s);
		}
		pthread_mutex_unlock(&s->itlock);
	}
	pthread_rwlock_unlock(&s->dblock);
}

int fb_spool_read_lane(struct fb_spool *s, unsigned lane, uint64_t after, uint64_t before, size_t max,
		fb_spool_visit_fn fn, void *ud)
{
	struct spool_lanes *ln;
	uint64_t want[LANE_READ_MAX], seq, hi;
	rocksdb_readoptions_t *ro = NULL;
	rocksdb_iterator_t *it;
	uint8_t from[KEY_LEN], upper[KEY_LEN];
	const char *key, *val;
	size_t klen, vlen, n = 0, i = 0;
	char *err = NULL;
	bool degraded = false, kept, only;
	int rc, visited = 0;

	if(s == NULL || lane >= FB_LANE_QUEUES || fn == NULL){
		return -EINVAL;
	}
	if(max > LANE_READ_MAX){
		max = LANE_READ_MAX;
	}
	ln = &s->lanes;
	pthread_mutex_lock(&s->lock);
	hi = s->q[FB_Q_OUT].next_seq;
	only = ln->nonempty == 1u << lane && before == 0; /* "out" is this lane */
	if(ln->last[lane] > after){
		seq = after + 1 > ln->first[lane] ? after + 1 : ln->first[lane];
		for(seq = seqset_find(&ln->live[lane], seq, false); seq && n < max && (before == 0 || seq < before);
				seq = seqset_find(&ln->live[lane], seq + 1, false)){
			want[n++] = seq;
		}
	}
	if(n == 0){
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	rc = settle_locked(s); /* every record wanted is in RocksDB after this */
	if(rc == 0){
		rc = space_returned(s);
	}
	if(rc && s->db){
		degraded = true; /* as in fb_spool_read() */
		rc = 0;
	}
	if(rc == 0 && !degraded){
		pthread_rwlock_rdlock(&s->dblock);
	}
	pthread_mutex_unlock(&s->lock);
	if(rc){
		return rc;
	}
	if(degraded && only){
		/* A full disk: fb_spool_read() finds staged records too, and "out" is this lane. */
		return fb_spool_read(s, FB_Q_OUT, after, max, fn, ud);
	}
	if(degraded){
		/* One record at a time through fb_spool_read(). */
		for(i = 0; i < n; i++){
			struct exact_ctx c = { .seq = want[i], .fn = fn, .ud = ud };

			rc = fb_spool_read(s, FB_Q_OUT, want[i] - 1, 1, exact_visit, &c);
			if(rc < 0){
				return rc;
			}
			visited += c.found;
			if(c.found && c.ret){
				break;
			}
		}
		return visited;
	}

	it = lane_iter(s, want[n - 1], hi, &kept, &ro, upper);
	/* A read that goes on from the last one finds the iterator on its first record, or a few
	 * before it; else (a new iterator, or a read from further back, as after a reconnect) seek. */
	seq = 0;
	if(rocksdb_iter_valid(it)){
		key = rocksdb_iter_key(it, &klen);
		seq = klen == KEY_LEN ? key_decode(key) : 0;
	}
	if(seq == 0 || seq > want[0] || want[0] - seq > LANE_STEP_MAX){
		key_encode(from, want[0]);
		rocksdb_iter_seek(it, (const char *)from, sizeof(from));
	}
	while(i < n && rocksdb_iter_valid(it)){
		key = rocksdb_iter_key(it, &klen);
		if(klen != KEY_LEN){
			rocksdb_iter_next(it);
			continue;
		}
		seq = key_decode(key);
		if(seq < want[i]){
			if(want[i] - seq > LANE_STEP_MAX){
				key_encode(from, want[i]);
				rocksdb_iter_seek(it, (const char *)from, sizeof(from));
			}else{
				rocksdb_iter_next(it);
			}
			continue;
		}
		if(seq > want[i]){
			i++; /* deleted meanwhile */
			continue;
		}
		val = rocksdb_iter_value(it, &vlen);
		visited++;
		i++;
		if(fn(ud, seq, val, vlen) != 0){
			break;
		}
		rocksdb_iter_next(it);
	}
	rocksdb_iter_get_error(it, &err);
	lane_iter_put(s, it, kept, err != NULL, ro);
	pthread_rwlock_unlock(&s->dblock);
	if(err){
		fb_log(&s->lg, MOSQ_LOG_ERR, "spool %s: reading \"out\" failed: %s", s->path, err);
		rocksdb_free(err);
		return -EIO;
	}
	return visited;
}

int fb_spool_lane_oldest(struct fb_spool *s, unsigned lane, fb_spool_visit_fn fn, void *ud)
{
	struct exact_ctx c = { .fn = fn, .ud = ud };
	struct find_ctx f = { .fn = fn, .ud = ud };
	uint64_t first;
	int rc;

	if(s == NULL || lane >= FB_LANES || fn == NULL){
		return -EINVAL;
	}
	pthread_mutex_lock(&s->lock);
	first = s->lanes.first[lane];
	if(s->lanes.first[lane + FB_LANES] && (first == 0 || s->lanes.first[lane + FB_LANES] < first)){
		first = s->lanes.first[lane + FB_LANES];
	}
	if(first && first > s->settled && s->chan){
		/* Staged: read it there rather than settle for it. */
		f.seq = first;
		fb_chan_each_unsettled(s->chan, find_visit, &f);
		pthread_mutex_unlock(&s->lock);
		return f.found;
	}
	pthread_mutex_unlock(&s->lock);
	if(first == 0){
		return 0;
	}
	c.seq = first;
	rc = fb_spool_read(s, FB_Q_OUT, first - 1, 1, exact_visit, &c);
	return rc < 0 ? rc : c.found;
}

/* ---- reading the records of a spool from outside (the CLI: spool peek, spool dead) ---- */

/* Forwards the staged records of a live copy in order, as inspect_visit() counts them. */
struct records_stage {
	bool live;
	uint64_t expect;
	fb_spool_visit_fn fn;
	void *ud;
	int rc;
};

static int records_stage_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct records_stage *c = ud;

	if(c->live && seq != c->expect){
		return 1; /* as inspect_visit(): the later moment is left out */
	}
	c->expect = seq + 1;
	c->rc = c->fn(c->ud, seq, val, len);
	return c->rc ? 1 : 0;
}

/* One pass of fb_spool_inspect_records() over queue QI of S. Returns 0, 1 (FN stopped it) or a
 * negative errno with *why (may stay NULL). */
static int records_once(struct fb_spool *s, enum fb_queue qi, bool live, fb_spool_visit_fn fn, void *ud,
		char **why)
{
	struct salvage v = { .s = s };
	struct fb_chan_reader *r = NULL;
	struct records_stage c = { .live = live, .fn = fn, .ud = ud };
	struct fb_chan_loss loss;
	rocksdb_readoptions_t *ro;
	rocksdb_iterator_t *it;
	struct stat sb;
	uint8_t from[KEY_LEN];
	const char *key, *val;
	char *file, *err = NULL, *mval;
	size_t klen, vlen, mlen;
	uint64_t seq, floor = 0, settled = 0, next = 1;
	int rc = 0, stop = 0;

	if(qi == FB_Q_OUT){
		rc = fb_chan_reader_open_copy(s->path, &r); /* first, as inspect_once() */
		if(rc){
			return rc;
		}
	}
	if(asprintf(&file, "%s/CURRENT", s->path) < 0){
		fb_chan_reader_close(r);
		return -ENOMEM;
	}
	rc = stat(file, &sb);
	free(file);
	if(rc == 0){
		rc = salvage_open(&v, s->dbopts, s->path, true, &err);
		if(rc && err){
			rc = classify_error(err);
			*why = strdup(err);
			free(err);
		}
		if(rc == 0){
			rc = inspect_meta(&v, floor_keys[qi], &mval, &mlen, why);
			floor = rc == 0 && mval && mlen == KEY_LEN ? key_decode(mval) : 0;
			rocksdb_free(mval);
		}
		if(rc == 0 && qi == FB_Q_OUT){
			rc = inspect_meta(&v, SETTLED_KEY, &mval, &mlen, why);
			settled = rc == 0 && mval && mlen == KEY_LEN ? key_decode(mval) : 0;
			rocksdb_free(mval);
		}
		if(rc == 0 && v.qcf[qi] >= 0){
			key_encode(from, floor);
			ro = rocksdb_readoptions_create();
			rocksdb_readoptions_set_fill_cache(ro, 0);
			it = rocksdb_create_iterator_cf(v.db, ro, v.cfh[v.qcf[qi]]);
			for(rocksdb_iter_seek(it, (const char *)from, sizeof(from)); !stop && rocksdb_iter_valid(it);
					rocksdb_iter_next(it)){
				key = rocksdb_iter_key(it, &klen);
				val = rocksdb_iter_value(it, &vlen);
				seq = klen == KEY_LEN ? key_decode(key) : 0;
				if(seq == 0){
					continue; /* a malformed key: fb_spool_inspect() has said so */
				}
				next = seq + 1;
				stop = fn(ud, seq, val, vlen);
			}
			rocksdb_iter_get_error(it, &err);
			rocksdb_iter_destroy(it);
			rocksdb_readoptions_destroy(ro);
			if(err){
				rc = classify_error(err);
				*why = strdup(err);
				rocksdb_free(err);
			}
		}
		salvage_close(&v);
	}
	if(rc == 0 && !stop && qi == FB_Q_OUT){
		if(next < floor){
			next = floor;
		}
		if(next < settled + 1){
			next = settled + 1;
		}
		c.expect = next;
		rc = fb_chan_recover(r, next, records_stage_visit, &c, &loss);
		if(rc >= 0){
			stop = c.rc;
			rc = 0;
		}
	}
	fb_chan_reader_close(r);
	return rc < 0 ? rc : stop ? 1 : 0;
}

int fb_spool_inspect_records(const char *path, const struct fb_logger *lg, enum fb_queue qi,
		fb_spool_visit_fn fn, void *ud, pid_t *holder)
{
	struct fb_spool_stats st;
	struct fb_spool s;
	char *why = NULL;
	size_t len;
	int rc;

	if(qi != FB_Q_OUT && qi != FB_Q_DEAD){
		return -EINVAL;
	}
	rc = fb_spool_inspect(path, lg, &st, holder); /* every check, and its message */
	if(rc < 0){
		return rc;
	}
	memset(&s, 0, sizeof(s));
	if(lg){
		s.lg = *lg;
	}
	s.path = strdup(path);
	if(s.path == NULL){
		return -ENOMEM;
	}
	len = strlen(s.path);
	while(len > 1 && s.path[len - 1] == '/'){
		s.path[--len] = '\0';
	}
	s.dbopts = inspect_options();
	for(int tries = 1; ; tries++){
		rc = records_once(&s, qi, *holder != 0, fn, ud, &why);
		if(rc != -EIO || *holder == 0 || tries == 5){
			break;
		}
		free(why);
		why = NULL;
		usleep(200 * 1000);
		*holder = lock_holder(s.path);
		rc = fn(ud, 0, NULL, 0); /* start again */
		if(rc){
			break;
		}
	}
	if(rc < 0){
		fb_log(&s.lg, MOSQ_LOG_ERR, "cannot read spool %s: %s", s.path, why ? why : strerror(-rc));
	}
	free(why);
	rocksdb_options_destroy(s.dbopts);
	free(s.path);
	return rc < 0 ? rc : 0;
}
