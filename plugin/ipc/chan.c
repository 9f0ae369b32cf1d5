/* flowmq-bridge: the staging channel (see chan.h). Writer: the broker thread; reader: the link process. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "bytes.h"
#include "chan.h"

#define CHAN_FILE FB_CHAN_FILE
#define BIG_FILE "flowmq-big-"

/* A record staged in place of a large one: the magic, then the large record's length (u64, little
 * endian). */
#define PTR_LEN 16
static const uint8_t ptr_magic[8] = { 0, 'F', 'B', 'B', 'I', 'G', 0, 0 };

/* Each staging file has the size the reader published (the spool sizes them from max_size), by
 * default FB_CHAN_FILE_SIZE: some 16,000 records of 100-byte messages. */
static int open_files(const char *dir, const struct fb_chan_shared *sh, struct fb_stage *st[2])
{
	uint64_t size = atomic_load_explicit(&sh->file_size, memory_order_acquire);
	char path[4096];
	int rc;

	if(size == 0){
		size = FB_CHAN_FILE_SIZE;
	}

	for(int i = 0; i < 2; i++){
		if(snprintf(path, sizeof(path), "%s/%s.%d", dir, CHAN_FILE, i) >= (int)sizeof(path)){
			return -ENAMETOOLONG;
		}
		rc = fb_stage_open(path, (size_t)size, &st[i]);
		if(rc){
			return rc;
		}
	}
	return 0;
}

static int big_path(char *buf, size_t cap, const char *dir, uint64_t seq)
{
	return snprintf(buf, cap, "%s/%s%" PRIu64, dir, BIG_FILE, seq) < (int)cap ? 0 : -ENAMETOOLONG;
}

static bool is_ptr(const void *val, size_t len)
{
	return len == PTR_LEN && memcmp(val, ptr_magic, sizeof(ptr_magic)) == 0;
}

static uint64_t ptr_len(const uint8_t *val)
{
	return fb_get_le64(val + 8);
}

/* ---- writer ---------------------------------------------------------------------------------- */

struct fb_chan_writer {
	struct fb_chan_shared *sh;
	char *dir;
	struct fb_stage *st[2];
	uint64_t next_seq;
	struct fb_chan_limits lim;
	bool write_failed;       /* fb_chan_write_failed() */
};

int fb_chan_writer_open(const char *dir, struct fb_chan_shared *sh, const struct fb_chan_limits *lim,
		struct fb_chan_writer **out)
{
	struct fb_chan_writer *w;
	int rc;

	*out = NULL;
	if(!atomic_load_explicit(&sh->ready, memory_order_acquire)){
		return -EAGAIN;
	}
	w = calloc(1, sizeof(*w));
	if(w == NULL || (w->dir = strdup(dir)) == NULL){
		free(w);
		return -ENOMEM;
	}
	w->sh = sh;
	w->lim = *lim;
	w->next_seq = atomic_load_explicit(&sh->next_seq, memory_order_relaxed);
	rc = open_files(dir, sh, w->st);
	if(rc){
		fb_chan_writer_close(w);
		return rc;
	}
	/* The reader emptied the files, or a writer before this one left them: follow what it
	 * published (a new writer only ever starts on files a reader has just reset). */
	for(int i = 0; i < 2; i++){
		rc = fb_stage_follow(w->st[i], atomic_load(&sh->count[i]), NULL, NULL);
		if(rc){
			fb_chan_writer_close(w);
			return rc;
		}
	}
	*out = w;
	return 0;
}

void fb_chan_writer_close(struct fb_chan_writer *w)
{
	if(w == NULL){
		return;
	}
	fb_stage_close(w->st[0]);
	fb_stage_close(w->st[1]);
	free(w->dir);
	free(w);
}

int fb_chan_lock(const char *dir, bool exclusive)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc;

	if(fd < 0){
		return -errno;
	}
	if(flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) != 0){
		rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
		close(fd);
		return rc;
	}
	return fd;
}

/* Seals file A and makes the other one (FREE) the one being written. */
static unsigned writer_switch(struct fb_chan_writer *w, unsigned a)
{
	struct fb_chan_shared *sh = w->sh;
	unsigned o = 1 - a;

	fb_stage_clear(w->st[o]); /* the reader emptied it; this mapping forgets it too */
	fb_seq_write_begin(&sh->wgen);
	atomic_store_explicit(&sh->count[o], 0, memory_order_relaxed);
	atomic_store_explicit(&sh->state[a], FB_CHAN_SEALED, memory_order_relaxed);
	atomic_store_explicit(&sh->state[o], FB_CHAN_WRITING, memory_order_relaxed);
	atomic_store_explicit(&sh->active, o, memory_order_relaxed);
	fb_seq_write_end(&sh->wgen);
	return o;
}

static int write_big(struct fb_chan_writer *w, uint64_t seq, const void *val, size_t len)
{
	char path[4096];
	int rc = big_path(path, sizeof(path), w->dir, seq);

	return rc ? rc : fb_file_write(path, val, len, w->lim.sync);
}

bool fb_chan_write_failed(const struct fb_chan_writer *w)
{
	return w->write_failed;
}

int fb_chan_append(struct fb_chan_writer *w, const void *val, size_t len, uint64_t *seq)
{
	struct fb_chan_shared *sh = w->sh;
	uint64_t need = FB_CHAN_KEY_LEN + (uint64_t)len;
	uint8_t ptr[PTR_LEN];
	unsigned a = atomic_load_explicit(&sh->active, memory_order_relaxed);
	size_t room;
	bool big;
	int rc;

	w->write_failed = false;
	if(w->lim.max_size){
		uint64_t seen, live, max = w->lim.max_size;
		uint64_t budget = atomic_load_explicit(&sh->max_live, memory_order_relaxed);
		unsigned g, tries = 0;

		if(budget && budget < max){
			max = budget; /* the part of max_size left for records (the spool's layout) */
		}
		if(need > max){
			return -E2BIG;
		}
		/* A reader killed or stopped inside its update leaves the lock odd (a new reader evens
		 * it): after FB_CHAN_WRITER_SPINS tries the values are taken as they are, an estimate
		 * either way. Few tries, because every matched capture pays them while it lasts. */
		do{
			g = fb_seq_read_begin(&sh->rgen);
			seen = atomic_load_explicit(&sh->seen, memory_order_relaxed);
			live = atomic_load_explicit(&sh->live, memory_order_relaxed);
		}while(fb_seq_read_again(&sh->rgen, g) && ++tries < FB_CHAN_WRITER_SPINS);
		if(live + (atomic_load_explicit(&sh->appended, memory_order_relaxed) - seen) + need > max
				&& w->lim.on_full != FB_ON_FULL_DROP_OLDEST){
			return -ENOSPC;
		}
	}
	/* Past half of the file, switch while the other one is free: the reader then empties this
	 * one long before the writer could need it again. A record above a quarter of a file goes
	 * into a file of its own: the reader gives a sealed file back only once the writer is a
	 * quarter into the other one (fb_chan_settle_due()), and the three quarters left must take
	 * any record meanwhile. */
	big = len > fb_stage_size(w->st[a]) / 4;
	room = big ? PTR_LEN : len;
	room = 16 + ((room + 7) & ~(size_t)7);
	if(fb_stage_used(w->st[a]) + room > fb_stage_size(w->st[a])
			|| fb_stage_used(w->st[a]) >= fb_stage_size(w->st[a]) / 2){
		if(atomic_load_explicit(&sh->state[1 - a], memory_order_acquire) == FB_CHAN_FREE){
			a = writer_switch(w, a);
		}else if(fb_stage_used(w->st[a]) + room > fb_stage_size(w->st[a])){
			return -EBUSY;
		}
	}
	if(big){
		rc = write_big(w, w->next_seq, val, len);
		if(rc){
			w->write_failed = true; /* a full disk (-ENOSPC) is not a full channel */
			return rc;
		}
		memcpy(ptr, ptr_magic, sizeof(ptr_magic));
		fb_put_le64(ptr + 8, (uint64_t)len);
		val = ptr;
		len = PTR_LEN;
	}
	rc = fb_stage_append(w->st[a], w->next_seq, val, len);
	if(rc){
		return rc;
	}
	fb_seq_write_begin(&sh->wgen);
	atomic_store_explicit(&sh->count[a], fb_stage_count(w->st[a]), memory_order_relaxed);
	atomic_store_explicit(&sh->appended, atomic_load_explicit(&sh->appended, memory_order_relaxed) + need,
			memory_order_relaxed);
	fb_seq_write_end(&sh->wgen);
	if(w->lim.sync){
		rc = fb_stage_sync(w->st[a]);
		if(rc){
			/* Published but not known to be on disk: the capture refuses the message, which the
			 * publisher may send again; the copy staged here is forwarded too. *SEQ tells the
			 * callers that must not stage it again (requeue-dead, a held message). */
			*seq = w->next_seq++;
			w->write_failed = true;
			return rc;
		}
	}
	*seq = w->next_seq++;
	return 0;
}

/* ---- reader ---------------------------------------------------------------------------------- */

struct fb_chan_reader {
	struct fb_chan_shared *sh;
	char *dir;
	struct fb_stage *st[2];
	unsigned cur;            /* the file being taken from */
	size_t settled_off[2];   /* byte offset up to which each file's records are settled */
	size_t unsettled;
	uint64_t first_unsettled;
	size_t bigs;             /* large records among the unsettled */
	size_t bigs_unsynced;    /* large records taken since the last fb_chan_sync() */
	size_t bigsync_off[2];   /* byte offset up to which each file's large records' own files are synced */
	uint64_t seen;
	uint8_t *big;            /* a large record read back */
	size_t big_cap;
	/* the caller's visitor, while a walk resolves pointer records */
	fb_stage_visit_fn fn;
	void *ud;
	int err;
};

int fb_chan_reader_open(const char *dir, struct fb_chan_shared *sh, bool fresh, struct fb_chan_reader **out)
{
	struct fb_chan_reader *r;
	int rc;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if(r == NULL || (r->dir = strdup(dir)) == NULL){
		free(r);
		return -ENOMEM;
	}
	r->sh = sh;
	fb_seq_writer_reset(&sh->rgen); /* its previous reader may have died inside an update */
	rc = open_files(dir, sh, r->st);
	if(rc){
		fb_chan_reader_close(r);
		return rc;
	}
	if(!fresh){
		/* Follow the running writer from the oldest file in use: the sealed one if any. */
		unsigned a = atomic_load_explicit(&sh->active, memory_order_acquire);
		r->cur = atomic_load_explicit(&sh->state[1 - a], memory_order_acquire) == FB_CHAN_SEALED ? 1 - a : a;
		if(r->cur != a && fb_stage_cleared(r->st[r->cur])){
			/* The previous reader was killed inside fb_chan_settled(), after it emptied the
			 * sealed file and before it marked it FREE: everything in it is settled, and
			 * following its published count would fail for ever. Finish what it began. */
			atomic_store_explicit(&sh->state[r->cur], FB_CHAN_FREE, memory_order_release);
			r->cur = a;
		}
	}
	*out = r;
	return 0;
}

int fb_chan_reader_open_copy(const char *dir, struct fb_chan_reader **out)
{
	struct fb_chan_reader *r;
	char path[4096];
	int rc = 0;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if(r == NULL || (r->dir = strdup(dir)) == NULL){
		free(r);
		return -ENOMEM;
	}
	for(unsigned i = 0; rc == 0 && i < 2; i++){
		rc = fb_chan_file_name(dir, i, path, sizeof(path));
		if(rc == 0){
			rc = fb_stage_open_copy(path, &r->st[i]);
		}
	}
	if(rc){
		fb_chan_reader_close(r);
		return rc;
	}
	*out = r;
	return 0;
}

void fb_chan_reader_close(struct fb_chan_reader *r)
{
	if(r == NULL){
		return;
	}
	fb_stage_close(r->st[0]);
	fb_stage_close(r->st[1]);
	free(r->big);
	free(r->dir);
	free(r);
}

/* Reads large record SEQ of LEN bytes back into r->big. */
static int read_big(struct fb_chan_reader *r, uint64_t seq, uint64_t len)
{
	char path[4096];
	size_t got = 0;
	int rc = big_path(path, sizeof(path), r->dir, seq);

	if(rc == 0){
		rc = fb_file_read(path, &r->big, &r->big_cap, &got);
	}
	return rc ? rc : got == len ? 0 : -EIO;
}

/* Calls the caller's visitor with the record itself for a pointer record. */
static int resolve_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct fb_chan_reader *r = ud;
	int rc;

	if(is_ptr(val, len)){
		uint64_t blen = ptr_len(val);
		rc = read_big(r, seq, blen);
		if(rc == -ENOENT){
			/* Removed once its record was settled (fb_chan_settled()): RocksDB holds it, and
			 * a staging file read from its start (a restart) still points to it. */
			return 0;
		}
		if(rc){
			r->err = rc;
			return 1;
		}
		return r->fn(r->ud, seq, r->big, (size_t)blen);
	}
	return r->fn(r->ud, seq, val, len);
}

static int walk_resolved(struct fb_chan_reader *r, int (*walk)(struct fb_stage *, size_t, fb_stage_visit_fn, void *),
		struct fb_stage *st, size_t arg, fb_stage_visit_fn fn, void *ud)
{
	int rc;

	r->fn = fn;
	r->ud = ud;
	r->err = 0;
	rc = walk(st, arg, resolve_visit, r);
	return r->err ? r->err : rc;
}

static int first_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	(void)val; (void)len;
	*(uint64_t *)ud = seq;
	return 1;
}

/* Recovery: the records in order across both files, with the sequence gaps counted. */
struct recover_ctx {
	struct fb_chan_reader *r;
	struct fb_chan_loss *loss;
	unsigned file;
	uint64_t expect;
	fb_stage_visit_fn fn;
	void *ud;
};

static void loss_add(struct fb_chan_loss *loss, uint64_t first, uint64_t n, unsigned file)
{
	if(loss->lost == 0){
		loss->first_seq = first;
	}
	loss->last_seq = first + n - 1;
	loss->lost += n;
	loss->files |= 1u << file;
}

static int recover_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct recover_ctx *c = ud;
	struct fb_chan_reader *r = c->r;
	int rc;

	if(seq < c->expect){
		return 0; /* settled already: an older record the other file holds */
	}
	if(seq > c->expect){
		loss_add(c->loss, c->expect, seq - c->expect, c->file);
	}
	c->expect = seq + 1;
	if(is_ptr(val, len)){
		uint64_t blen = ptr_len(val);

		rc = read_big(r, seq, blen);
		if(rc == -ENOENT || rc == -EIO){
			/* Its own file is gone or short: the record is lost, the rest is not. */
			c->loss->big_lost++;
			loss_add(c->loss, seq, 1, c->file);
			return 0;
		}
		if(rc){
			r->err = rc;
			return 1;
		}
		return c->fn(c->ud, seq, r->big, (size_t)blen);
	}
	return c->fn(c->ud, seq, val, len);
}

int fb_chan_recover(struct fb_chan_reader *r, uint64_t from, fb_stage_visit_fn fn, void *ud,
		struct fb_chan_loss *loss)
{
	struct fb_chan_loss none;
	struct recover_ctx c = { .r = r, .expect = from, .fn = fn, .ud = ud };
	struct fb_stage_damage dmg;
	uint64_t first[2] = { 0, 0 };
	int order[2] = { 0, 1 }, rc;

	c.loss = loss ? loss : &none;
	memset(c.loss, 0, sizeof(*c.loss));
	if(c.expect == 0){
		c.expect = 1;
	}
	fb_stage_recover(r->st[0], c.expect, first_visit, &first[0], NULL);
	fb_stage_recover(r->st[1], c.expect, first_visit, &first[1], NULL);
	if(first[1] && (first[0] == 0 || first[1] < first[0])){
		order[0] = 1;
		order[1] = 0;
	}
	for(int i = 0; i < 2; i++){
		c.file = (unsigned)order[i];
		r->err = 0;
		rc = fb_stage_recover(r->st[order[i]], c.expect, recover_visit, &c, &dmg);
		if(r->err){
			return r->err;
		}
		if(rc){
			return rc;
		}
		if(dmg.regions){
			c.loss->damaged |= 1u << order[i];
			c.loss->damaged_off[order[i]] = dmg.first_off;
		}
	}
	return 0;
}

int fb_chan_file_name(const char *dir, unsigned i, char *buf, size_t cap)
{
	return snprintf(buf, cap, "%s/%s.%u", dir, CHAN_FILE, i) < (int)cap ? 0 : -ENAMETOOLONG;
}

static void remove_bigs(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[4096];

	if(d == NULL){
		return;
	}
	while((e = readdir(d)) != NULL){
		if(strncmp(e->d_name, BIG_FILE, strlen(BIG_FILE)) == 0
				&& snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) < (int)sizeof(path)){
			unlink(path);
		}
	}
	closedir(d);
}

int fb_chan_reset(struct fb_chan_reader *r, uint64_t next_seq)
{
	struct fb_chan_shared *sh = r->sh;
	int rc;

	for(int i = 0; i < 2; i++){
		rc = fb_stage_reset(r->st[i]);
		if(rc){
			return rc;
		}
		r->settled_off[i] = 0;
		r->bigsync_off[i] = 0;
	}
	remove_bigs(r->dir);
	r->cur = 0;
	r->unsettled = 0;
	r->first_unsettled = 0;
	r->bigs = 0;
	r->bigs_unsynced = 0;
	r->seen = 0;
	atomic_store(&sh->active, 0);
	atomic_store(&sh->state[0], FB_CHAN_WRITING);
	atomic_store(&sh->state[1], FB_CHAN_FREE);
	atomic_store(&sh->count[0], 0);
	atomic_store(&sh->count[1], 0);
	atomic_store(&sh->appended, 0);
	atomic_store(&sh->seen, 0);
	atomic_store(&sh->next_seq, next_seq);
	return 0;
}

void fb_chan_ready(struct fb_chan_reader *r)
{
	atomic_store_explicit(&r->sh->ready, 1, memory_order_release);
}

static int take_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct fb_chan_reader *r = ud;

	if(r->unsettled++ == 0){
		r->first_unsettled = seq;
	}
	if(is_ptr(val, len)){
		r->bigs++;
		r->bigs_unsynced++;
	}
	return resolve_visit(r, seq, val, len);
}

int fb_chan_take(struct fb_chan_reader *r, fb_stage_visit_fn fn, void *ud)
{
	struct fb_chan_shared *sh = r->sh;
	uint64_t count[2], appended;
	unsigned state[2], g;
	int rc;

	do{
		g = fb_seq_read_begin(&sh->wgen);
		for(int i = 0; i < 2; i++){
			count[i] = atomic_load_explicit(&sh->count[i], memory_order_relaxed);
			state[i] = atomic_load_explicit(&sh->state[i], memory_order_relaxed);
		}
		appended = atomic_load_explicit(&sh->appended, memory_order_relaxed);
	}while(fb_seq_read_again(&sh->wgen, g));

	r->fn = fn;
	r->ud = ud;
	for(;;){
		unsigned f = r->cur;

		r->err = 0;
		rc = fb_stage_follow(r->st[f], count[f], take_visit, r);
		if(r->err){
			return r->err;
		}
		if(rc){
			return rc;
		}
		if(state[f] == FB_CHAN_SEALED && state[1 - f] == FB_CHAN_WRITING){
			r->cur = 1 - f; /* everything of the sealed file is taken: on to the newer one */
			continue;
		}
		break;
	}
	r->seen = appended;
	return 0;
}

uint64_t fb_chan_seen(const struct fb_chan_reader *r)
{
	return r->seen;
}

int fb_chan_each_unsettled(struct fb_chan_reader *r, fb_stage_visit_fn fn, void *ud)
{
	unsigned older = 1 - r->cur;
	int rc;

	if(r->unsettled == 0){
		return 0;
	}
	if(r->settled_off[older] < fb_stage_used(r->st[older])){
		rc = walk_resolved(r, fb_stage_each_from, r->st[older], r->settled_off[older], fn, ud);
		if(rc){
			return rc;
		}
	}
	return walk_resolved(r, fb_stage_each_from, r->st[r->cur], r->settled_off[r->cur], fn, ud);
}

size_t fb_chan_unsettled(const struct fb_chan_reader *r)
{
	return r->unsettled;
}

uint64_t fb_chan_first_unsettled(const struct fb_chan_reader *r)
{
	return r->unsettled ? r->first_unsettled : 0;
}

static int unlink_big_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct fb_chan_reader *r = ud;
	char path[4096];

	if(is_ptr(val, len) && big_path(path, sizeof(path), r->dir, seq) == 0){
		unlink(path);
	}
	return 0;
}

bool fb_chan_sealed(const struct fb_chan_reader *r)
{
	return atomic_load_explicit(&r->sh->state[1 - r->cur], memory_order_acquire) == FB_CHAN_SEALED;
}

bool fb_chan_settle_due(const struct fb_chan_reader *r)
{
	return fb_chan_sealed(r) && fb_stage_used(r->st[r->cur]) >= fb_stage_size(r->st[r->cur]) / 4;
}

static int sync_big_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct fb_chan_reader *r = ud;
	char path[4096];
	int fd, rc;

	if(!is_ptr(val, len) || big_path(path, sizeof(path), r->dir, seq) != 0){
		return 0;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if(fd < 0){
		return errno == ENOENT ? 0 : -errno; /* gone: reading it back counts the loss */
	}
	rc = fdatasync(fd) == 0 ? 0 : -errno;
	close(fd);
	return rc;
}

/* The own files of the large records taken since the last sync (the writer syncs them itself only
 * with spool.sync: always), then the folder that names them. */
static int sync_bigs(struct fb_chan_reader *r)
{
	int fd, rc;

	if(r->bigs_unsynced == 0){
		return 0;
	}
	for(int i = 0; i < 2; i++){
		size_t from = r->bigsync_off[i] > r->settled_off[i] ? r->bigsync_off[i] : r->settled_off[i];

		rc = fb_stage_each_from(r->st[i], from, sync_big_visit, r);
		if(rc){
			return rc;
		}
		r->bigsync_off[i] = fb_stage_used(r->st[i]);
	}
	fd = open(r->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if(fd < 0){
		return -errno;
	}
	rc = fsync(fd) == 0 ? 0 : -errno;
	close(fd);
	if(rc == 0){
		r->bigs_unsynced = 0;
	}
	return rc;
}

int fb_chan_sync(struct fb_chan_reader *r)
{
	int rc = sync_bigs(r);

	if(rc == 0){
		rc = fb_stage_sync(r->st[0]);
	}
	return rc ? rc : fb_stage_sync(r->st[1]);
}

void fb_chan_settled(struct fb_chan_reader *r)
{
	struct fb_chan_shared *sh = r->sh;
	unsigned older = 1 - r->cur;

	if(r->bigs){
		for(int i = 0; i < 2; i++){
			fb_stage_each_from(r->st[i], r->settled_off[i], unlink_big_visit, r);
		}
		r->bigs = 0;
	}
	r->settled_off[0] = fb_stage_used(r->st[0]);
	r->settled_off[1] = fb_stage_used(r->st[1]);
	r->bigs_unsynced = 0; /* in RocksDB now, which fb_spool_sync() syncs */
	r->unsettled = 0;
	r->first_unsettled = 0;
	if(atomic_load_explicit(&sh->state[older], memory_order_acquire) == FB_CHAN_SEALED){
		/* Everything in it was taken (take() moved on) and is settled now: empty it. */
		fb_stage_clear(r->st[older]);
		r->settled_off[older] = 0;
		r->bigsync_off[older] = 0;
		atomic_store_explicit(&sh->state[older], FB_CHAN_FREE, memory_order_release);
	}
}

void fb_chan_account(struct fb_chan_reader *r, uint64_t seen, uint64_t live)
{
	struct fb_chan_shared *sh = r->sh;

	fb_seq_write_begin(&sh->rgen);
	atomic_store_explicit(&sh->seen, seen, memory_order_relaxed);
	atomic_store_explicit(&sh->live, live, memory_order_relaxed);
	fb_seq_write_end(&sh->rgen);
}
