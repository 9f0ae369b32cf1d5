/* flowmq-bridge: requeue-dead and purge-dead on the running link process's spool (see control.h);
 * flowmq-link's main thread. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control.h"
#include "record.h"
#include "request.h"
#include "session.h" /* FB_DEAD_REASON_PROPERTY */

/* Dead letters in the requeue ring at a time, and read or deleted per batch. */
#define REQUEUE_WINDOW 256
#define BATCH 256
/* Purged per turn (a turn is 20 ms apart while a request is in progress). */
#define PURGE_PER_TURN 4096
/* Without progress this long, the reply goes (the rest goes on). */
#define STUCK_MS 10000
/* With the requeue ring's head still this long, the file of the record there is looked at (the
 * broker thread tries one it cannot read again every second). */
#define REPAIR_MS 1000

struct put {
	uint64_t seq;   /* the dead letter's */
	size_t len;     /* its value's, for the spool's accounting */
	uint64_t end;   /* the ring's tail after it: staged once the head is there */
	bool own;       /* put for the request in progress (counted in its DONE) */
	bool seen;      /* of no request, passed over by the request in progress (counted too) */
};

struct fb_control {
	struct fb_control_deps d;
	bool active;
	bool replied;
	struct fb_request rq;
	uint64_t bound;        /* dead letters the spool held when the request came: the ones it is for */
	uint64_t found;        /* of those, read so far */
	uint64_t cursor;       /* the newest dead seq read */
	uint64_t done;         /* requeued (staged and deleted) or purged */
	uint64_t kept;         /* too large for the staging channel: left dead letters */
	uint64_t skipped;      /* in the ring already, of no request (adopt(), finish()), not deleted yet */
	bool unread;           /* adopt() could not read "dead": the ring keeps all from RELEASED on */
	bool done_unknown;     /* DONE is not known (a request an earlier link process claimed) */
	uint64_t progress_ms;  /* when something last moved */
	struct put puts[REQUEUE_WINDOW];
	size_t first, n;       /* the puts not yet deleted, a ring over PUTS */
	struct fb_spool_del dels[BATCH];
	size_t ndels;
	int err;               /* of the last visit */
	uint64_t ring_head;    /* the requeue ring's head when last looked at (requeue_repair()) */
	uint64_t ring_ms;      /* ... since when it has stood there */
	uint64_t repair_seq;   /* the dead letter whose file could not be written again (logged) */
	int repair_err;        /* ... why; 0: none */
};

uint8_t *fb_control_requeued(const uint8_t *val, size_t len, size_t *out_len)
{
	struct fb_record r;
	uint8_t *props = NULL, *buf;

	if(fb_record_decode(val, len, &r) != 0){
		buf = malloc(len ? len : 1);
		if(buf){
			memcpy(buf, val, len);
			*out_len = len;
		}
		return buf;
	}
	if(r.props_len){
		props = malloc(r.props_len);
		if(props == NULL){
			return NULL;
		}
		memcpy(props, r.props, r.props_len);
		r.props_len = fb_props_remove_user(props, r.props_len, FB_DEAD_REASON_PROPERTY);
		r.props = props;
	}
	r.enqueue_ms = fb_wall_ms();
	*out_len = fb_record_size(&r);
	buf = malloc(*out_len);
	if(buf){
		fb_record_encode(&r, buf);
	}
	free(props);
	return buf;
}

/* The dead letters of the request not done yet. */
static uint64_t left(const struct fb_control *c)
{
	uint64_t off = c->done + c->kept + c->skipped;

	return c->bound > off ? c->bound - off : 0;
}

static void reply(struct fb_control *c, bool ok, const char *error)
{
	struct fb_reply rp = { .ok = ok, .done = c->done, .done_unknown = c->done_unknown };
	int rc;

	rp.left = left(c);
	snprintf(rp.error, sizeof(rp.error), "%s", error ? error : "");
	rc = fb_reply_post(c->d.spool_path, &c->rq, &rp);
	if(rc < 0){
		fb_log(c->d.lg, MOSQ_LOG_WARNING, "spool %s: cannot answer the %s request of pid %ld: %s",
				c->d.spool_path, fb_request_op_name(c->rq.op), (long)c->rq.pid, strerror(-rc));
	}
	c->replied = true;
}

/* The end of a request: the log line, and the reply unless it went already. */
static void finish(struct fb_control *c, int rc)
{
	char why[256] = "";

	if(rc < 0){
		snprintf(why, sizeof(why), "%s stopped after %" PRIu64 " dead letters: %s",
				fb_request_op_name(c->rq.op), c->done, strerror(-rc));
		fb_log(c->d.lg, MOSQ_LOG_ERR, "spool %s: %s", c->d.spool_path, why);
	}else if(c->kept){
		snprintf(why, sizeof(why), "%" PRIu64 " dead letter%s larger than the staging channel takes "
				"(spool.max_size) stay%s", c->kept, c->kept == 1 ? "" : "s", c->kept == 1 ? "s" : "");
	}
	if(rc == 0){
		fb_log(c->d.lg, MOSQ_LOG_NOTICE, "spool %s: %s by pid %ld: %" PRIu64 " dead letter%s %s%s%s",
				c->d.spool_path, fb_request_op_name(c->rq.op), (long)c->rq.pid, c->done, c->done == 1 ? "" : "s",
				c->rq.op == FB_REQUEST_REQUEUE_DEAD ? "queued again for the cloud" : "removed",
				why[0] ? "; " : "", why);
	}
	if(!c->replied){
		reply(c, rc == 0 && c->kept == 0, why[0] ? why : NULL);
	}
	/* Dead letters still in the ring (the request stopped on an error) are deleted once staged,
	 * without a request, and a later request leaves them out. */
	for(size_t k = 0; k < c->n; k++){
		c->puts[(c->first + k) % REQUEUE_WINDOW].own = false;
		c->puts[(c->first + k) % REQUEUE_WINDOW].seen = false;
	}
	c->skipped = 0;
	c->active = false;
}

/* ---- purge-dead -------------------------------------------------------------------------------- */

static int purge_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct fb_control *c = ud;

	(void)val;
	c->dels[c->ndels++] = (struct fb_spool_del){ seq, len };
	c->cursor = seq;
	c->found++;
	return 0;
}

static void purge_turn(struct fb_control *c)
{
	int rc = 0;

	for(size_t turn = 0; turn < PURGE_PER_TURN / BATCH && c->found < c->bound; turn++){
		uint64_t want = c->bound - c->found;

		c->ndels = 0;
		rc = fb_spool_read(c->d.spool, FB_Q_DEAD, c->cursor, want < BATCH ? (size_t)want : BATCH, purge_visit, c);
		if(rc <= 0){
			c->bound = c->found; /* fewer than there were (none can be added below the cursor) */
			break;
		}
		rc = fb_spool_delete_many(c->d.spool, FB_Q_DEAD, c->dels, c->ndels);
		if(rc < 0){
			break;
		}
		c->done += c->ndels;
		c->progress_ms = fb_mono_ms();
	}
	if(rc < 0 || c->found >= c->bound){
		finish(c, rc < 0 ? rc : 0);
	}
}

/* ---- requeue-dead ------------------------------------------------------------------------------ */

/* Deletes the dead letters the broker has staged (the ring's head is past them), after the staging
 * files and the WAL are on disk. */
static int requeue_release(struct fb_control *c)
{
	uint64_t head = atomic_load_explicit(&c->d.ring->head, memory_order_acquire);
	uint64_t end = 0;
	size_t k = 0, own = 0;
	int rc;

	while(k < c->n && c->puts[(c->first + k) % REQUEUE_WINDOW].end <= head){
		const struct put *p = &c->puts[(c->first + k) % REQUEUE_WINDOW];

		c->dels[k] = (struct fb_spool_del){ p->seq, p->len };
		own += p->own || p->seen;
		c->skipped -= p->seen;
		end = p->end;
		k++;
	}
	if(k == 0){
		if(c->n == 0 && !c->unread && atomic_load_explicit(&c->d.ring->released, memory_order_relaxed) < head){
			/* Nothing of ours left in the ring (entries passed over, their dead letters gone):
			 * nothing to keep. */
			atomic_store_explicit(&c->d.ring->released, head, memory_order_relaxed);
		}
		return 0;
	}
	rc = fb_spool_sync(c->d.spool);
	if(rc == 0){
		rc = fb_spool_delete_many(c->d.spool, FB_Q_DEAD, c->dels, k);
	}
	if(rc < 0){
		return rc;
	}
	/* What the ring keeps for the next link process (adopt()) starts after them: at the head when
	 * nothing of ours is left in it. */
	atomic_store_explicit(&c->d.ring->released, k == c->n && !c->unread ? head : end, memory_order_relaxed);
	c->first = (c->first + k) % REQUEUE_WINDOW;
	c->n -= k;
	c->done += own;
	c->progress_ms = fb_mono_ms();
	return 0;
}

static int requeue_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct fb_control *c = ud;
	uint64_t max = c->d.max_size, live = atomic_load_explicit(c->d.max_live, memory_order_relaxed);
	size_t rlen;
	uint8_t *rec;
	int rc;

	if(live && (max == 0 || live < max)){
		max = live;
	}
	for(size_t k = 0; k < c->n; k++){
		struct put *p = &c->puts[(c->first + k) % REQUEUE_WINDOW];

		if(p->seq == seq && !p->own && !p->seen){
			p->seen = true;
			/* in the ring already (an earlier link process put it there): deleted once staged */
			c->skipped++;
			c->cursor = seq;
			c->found++;
			return 0;
		}
	}
	rec = fb_control_requeued(val, len, &rlen);
	if(rec == NULL){
		c->err = -ENOMEM;
		return 1;
	}
	if(max && FB_CHAN_KEY_LEN + (uint64_t)rlen > max){
		/* The broker could never stage it (fb_chan_append(): -E2BIG): it stays a dead letter. */
		c->kept++;
	}else{
		rc = fb_c2e_put_kept(c->d.ring, atomic_load_explicit(&c->d.ring->released, memory_order_relaxed),
				c->d.spool_path, FB_REQUEUE_STEM, seq, rec, rlen);
		if(rc < 0){
			free(rec);
			return 1; /* no room in the ring now: this one again at the next turn */
		}
		c->puts[(c->first + c->n) % REQUEUE_WINDOW] = (struct put){ seq, len,
			atomic_load_explicit(&c->d.ring->tail, memory_order_relaxed), true, false };
		c->n++;
	}
	free(rec);
	c->cursor = seq;
	c->found++;
	return 0;
}

struct lookup {
	uint64_t seq;
	bool found;
	uint8_t *rec;   /* the dead letter as requeued, NULL for memory */
	size_t len;
};

static int lookup_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct lookup *l = ud;

	if(seq == l->seq){
		l->found = true;
		l->rec = fb_control_requeued(val, len, &l->len);
	}
	return 1;
}

/* The broker thread stages the record at the requeue ring's head only once it can read it. One
 * that travels in a file of its own (larger than half the ring) whose file is gone (deleted by
 * someone, lost to a disk error) would hold the ring up for good: the dead letters behind it would
 * wait, the request would never end and no other could start. This process still has the dead
 * letter in spool "dead" (requeue_release() deletes one only once the head is past it), so when
 * the head has stood still for REPAIR_MS on such a record, it writes the file again, and the
 * broker thread's next try stages the dead letter, in its place and once. The ring keeps its
 * entries across a restart of the link process, so this runs at every turn, with a request or
 * without: an entry an earlier link process put there is written again the same way (its request
 * was answered as interrupted; adopt() deletes its dead letter once staged). When such a dead
 * letter was purged since, there is nothing left to stage: its entry is withdrawn. */
static void requeue_repair(struct fb_control *c)
{
	uint64_t head = atomic_load_explicit(&c->d.ring->head, memory_order_acquire), now = fb_mono_ms(), seq;
	struct lookup l = { 0 };
	char path[4096];
	struct stat st;
	int rc;

	if(head != c->ring_head || head == atomic_load_explicit(&c->d.ring->tail, memory_order_acquire)){
		c->ring_head = head;
		c->ring_ms = now;
		return;
	}
	if(now - c->ring_ms < REPAIR_MS){
		return;
	}
	c->ring_ms = now; /* the next look after REPAIR_MS again */
	if(!fb_c2e_head_file(c->d.ring, c->d.spool_path, FB_REQUEUE_STEM, &seq, path, sizeof(path))
			|| stat(path, &st) == 0 || errno != ENOENT){
		return; /* the broker thread has it, or waits for room in the staging channel */
	}
	l.seq = seq;
	rc = fb_spool_read(c->d.spool, FB_Q_DEAD, seq - 1, 1, lookup_visit, &l);
	if(rc >= 0 && l.found){
		rc = l.rec ? fb_c2e_write_file(c->d.spool_path, FB_REQUEUE_STEM, seq, l.rec, l.len) : -ENOMEM;
	}else if(rc >= 0){
		rc = fb_c2e_withdraw(c->d.spool_path, FB_REQUEUE_STEM, seq);
	}
	free(l.rec);
	if(rc < 0){
		if(c->repair_seq != seq){
			fb_log(c->d.lg, MOSQ_LOG_ERR, "requeue-dead: the file %s of dead letter %" PRIu64 " is gone and "
					"cannot be written again from spool \"dead\": %s; tried again every second, the dead "
					"letters behind it wait", path, seq, strerror(-rc));
		}
		c->repair_seq = seq;
		c->repair_err = rc;
		return;
	}
	c->repair_seq = 0;
	c->repair_err = 0;
	if(atomic_load_explicit(&c->d.ring->head, memory_order_acquire) != head && unlink(path) == 0){
		/* The broker thread was past it after all (it removes the file of the record it consumed
		 * just before it moves the head): the file just written was nobody's. */
		return;
	}
	if(l.found){
		fb_log(c->d.lg, MOSQ_LOG_WARNING, "requeue-dead: the file %s of dead letter %" PRIu64 " was gone; "
				"written again from spool \"dead\", so that it and the dead letters behind it are queued",
				path, seq);
	}else{
		fb_log(c->d.lg, MOSQ_LOG_WARNING, "requeue-dead: the file %s of dead letter %" PRIu64 " was gone, and "
				"spool \"dead\" no longer holds it (purged since it was put into the requeue ring); its "
				"entry there is withdrawn, the dead letters behind it go on",
				path, seq);
	}
	c->d.wake(c->d.wake_ud);
}

static void requeue_turn(struct fb_control *c)
{
	int rc = requeue_release(c);

	while(rc == 0 && c->found < c->bound && c->n < REQUEUE_WINDOW){
		uint64_t want = c->bound - c->found, before = c->found;

		if(want > REQUEUE_WINDOW - c->n){
			want = REQUEUE_WINDOW - c->n;
		}
		c->err = 0;
		rc = fb_spool_read(c->d.spool, FB_Q_DEAD, c->cursor, (size_t)want, requeue_visit, c);
		if(rc >= 0 && c->err){
			rc = c->err;
		}
		if(rc == 0){
			c->bound = c->found; /* fewer than there were */
		}
		if(rc <= 0 || c->found == before){
			break; /* done reading, or the ring is full */
		}
		rc = 0;
	}
	if(c->n){
		c->d.wake(c->d.wake_ud); /* the broker thread stages them at its next tick */
	}
	if(rc < 0){
		finish(c, rc);
	}else if(c->found >= c->bound && c->n == 0){
		finish(c, 0);
	}else if(!c->replied && fb_mono_ms() - c->progress_ms >= STUCK_MS){
		char why[256];

		if(c->repair_err){
			snprintf(why, sizeof(why), "%" PRIu64 " dead letters wait: the file of dead letter %" PRIu64
					" is gone from the spool folder and cannot be written again (%s); they are queued "
					"once it can", left(c), c->repair_seq, strerror(-c->repair_err));
		}else{
			snprintf(why, sizeof(why), "%" PRIu64 " dead letters wait for room in the staging channel "
					"(spool.max_size reached, or the link process is behind); they are queued as room comes",
					left(c));
		}
		fb_log(c->d.lg, MOSQ_LOG_WARNING, "spool %s: requeue-dead by pid %ld: %" PRIu64 " queued, %s",
				c->d.spool_path, (long)c->rq.pid, c->done, why);
		reply(c, false, why);
	}
}

/* ---- requests ---------------------------------------------------------------------------------- */

struct adopt {
	struct fb_control *c;
	uint64_t seq;
	size_t len;     /* of the dead letter SEQ */
	bool found;     /* ... still in spool "dead" */
	uint64_t beyond; /* entries not taken over: beyond the window */
};

static int adopt_len(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct adopt *a = ud;

	(void)val;
	a->found = seq == a->seq;
	a->len = len;
	return 1;
}

static int adopt_visit(void *ud, uint64_t seq, uint64_t end)
{
	struct adopt *a = ud;
	struct fb_control *c = a->c;
	int rc;

	if(c->n == REQUEUE_WINDOW){
		a->beyond++;
		return 0;
	}
	a->seq = seq;
	a->found = false;
	rc = fb_spool_read(c->d.spool, FB_Q_DEAD, seq - 1, 1, adopt_len, a);
	if(rc < 0){
		/* Not known whether it is still a dead letter: the ring keeps this one and those behind
		 * it for the next link process (a later requeue-dead may send them again). */
		c->unread = true;
		return 1;
	}
	if(rc == 1 && a->found){
		c->puts[(c->first + c->n) % REQUEUE_WINDOW] = (struct put){ seq, a->len, end, false, false };
		c->n++;
	}
	return 0;
}

/* The dead letters an earlier link process put into the requeue ring and did not delete from
 * spool "dead" (it ended first; the ring is in the shared region and keeps its entries from
 * RELEASED on: fb_c2e_put_kept()): those the broker thread staged meanwhile are deleted now, the
 * others once they are staged, as that process would have, so that a later requeue-dead does not
 * send them again (it leaves out those still in the ring). One purged since (no longer in "dead")
 * has nothing to delete. */
static void adopt(struct fb_control *c)
{
	struct adopt a = { .c = c };
	size_t n;
	int rc;

	fb_c2e_walk(c->d.ring, atomic_load_explicit(&c->d.ring->released, memory_order_relaxed), adopt_visit, &a);
	n = c->n;
	rc = requeue_release(c);
	if(rc < 0){
		fb_log(c->d.lg, MOSQ_LOG_WARNING, "spool %s: the dead letters the broker staged from the requeue "
				"ring cannot be deleted from spool \"dead\" now: %s; tried again", c->d.spool_path, strerror(-rc));
	}
	if(n || a.beyond){
		fb_log(c->d.lg, MOSQ_LOG_NOTICE, "spool %s: %zu dead letters that the previous link process put into "
				"the requeue ring are taken over: %zu staged since are deleted from spool \"dead\", the rest "
				"once staged%s", c->d.spool_path, n, n - c->n, a.beyond ? "; more than the window holds: the "
				"rest stay in \"dead\" too (a later requeue-dead sends them again)" : "");
	}
}

int fb_control_open(const struct fb_control_deps *deps, struct fb_control **out)
{
	struct fb_control *c = calloc(1, sizeof(*c));

	if(c == NULL){
		return -ENOMEM;
	}
	c->d = *deps;
	c->ring_head = atomic_load_explicit(&c->d.ring->head, memory_order_acquire);
	c->ring_ms = fb_mono_ms();
	adopt(c);
	if(fb_request_abandoned(c->d.spool_path, &c->rq) == 1){
		struct fb_spool_stats st;

		/* What the previous one did is not known here; what is left is (after adopt(): those
		 * in the ring already are on their way). */
		fb_spool_stats(c->d.spool, &st);
		c->bound = st.dead;
		c->skipped = c->rq.op == FB_REQUEST_REQUEUE_DEAD ? c->n : 0; /* a purge takes them too */
		c->done_unknown = true;
		fb_log(c->d.lg, MOSQ_LOG_WARNING, "spool %s: the %s request of pid %ld was interrupted by the end "
				"of the previous link process (%" PRIu64 " dead letters left)", c->d.spool_path,
				fb_request_op_name(c->rq.op), (long)c->rq.pid, left(c));
		reply(c, false, "interrupted: the link process ended during the request; what was done stays "
				"done, run it again for the rest");
		c->done_unknown = false;
		c->bound = c->skipped = 0;
	}
	*out = c;
	return 0;
}

bool fb_control_turn(struct fb_control *c)
{
	struct fb_spool_stats st;
	int rc;

	if(c == NULL){
		return false;
	}
	requeue_repair(c);
	if(!c->active){
		if(c->n){
			(void)requeue_release(c); /* those of no request (adopt(), finish()) */
		}
		rc = fb_request_claim(c->d.spool_path, &c->rq);
		if(rc <= 0){
			if(rc < 0 && rc != -ENOENT){
				fb_log(c->d.lg, MOSQ_LOG_WARNING, "spool %s: an unreadable request was removed: %s",
						c->d.spool_path, strerror(-rc));
			}
			return false;
		}
		fb_spool_stats(c->d.spool, &st);
		c->active = true;
		c->replied = false;
		/* A requeue-dead passes over the dead letters in the ring already (of no request:
		 * requeue_visit()); a purge-dead removes them too. */
		c->bound = st.dead;
		c->cursor = 0;
		c->found = c->done = c->kept = c->skipped = 0;
		c->progress_ms = fb_mono_ms();
		fb_log(c->d.lg, MOSQ_LOG_NOTICE, "spool %s: %s requested by pid %ld (%" PRIu64 " dead letters)",
				c->d.spool_path, fb_request_op_name(c->rq.op), (long)c->rq.pid, c->bound);
	}
	if(c->rq.op == FB_REQUEST_PURGE_DEAD){
		purge_turn(c);
	}else{
		requeue_turn(c);
	}
	return c->active;
}

void fb_control_close(struct fb_control *c)
{
	if(c == NULL){
		return;
	}
	if(c->n){
		(void)requeue_release(c);
	}
	if(c->active){
		fb_log(c->d.lg, MOSQ_LOG_WARNING, "spool %s: the %s request of pid %ld is interrupted by the stop "
				"of the link process after %" PRIu64 " dead letters", c->d.spool_path,
				fb_request_op_name(c->rq.op), (long)c->rq.pid, c->done);
		if(!c->replied){
			reply(c, false, "interrupted: the link process stopped during the request; what was done "
					"stays done, run it again for the rest");
		}
	}
	free(c);
}
