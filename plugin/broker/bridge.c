/* flowmq-bridge, broker process, broker thread: the running bridge (see bridge.h): start and stop,
 * capture, tick, reload; the link process is looked after by supervise.c. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mqtt_protocol.h>

#include "bridge.h"
#include "bytes.h"
#include "chan.h"
#include "inject.h"
#include "logq.h"
#include "publish.h"
#include "record.h"
#include "reduce.h"
#include "route.h"
#include "shared.h"
#include "supervise.h"
#include "waker.h"

/* One loaded configuration with its compiled routes. A reload makes a new generation and frees
 * the one it replaces, except the first: the link process keeps using that one (cloud settings
 * and cloud_to_edge rules change only with a restart). So at most two are alive. */
struct generation {
	struct fb_config *cfg;
	struct fb_routes *routes;
	uint8_t **extra;        /* per edge_to_cloud rule: its headers, then the origin, encoded */
	uint32_t *extra_len;
	/* per edge_to_cloud rule: 0, or its headers use the capture time (route.h) and are encoded at
	 * each capture, in at most this many bytes */
	uint32_t *timed;
	bool first_byte_only;     /* fb_route_first_bytes() of the edge_to_cloud rules */
	uint64_t first_bytes[4];
	struct generation *older;
	struct fb_bridge *owner;  /* set when its rules keep reduce state (its sink's context) */
};

/* How often the broker re-reads a snapshot that the link process is updating (an update is a copy
 * of a few hundred bytes) before it publishes the previous one: a link process stopped inside
 * its update costs the broker thread this little. */
#define STATUS_SPINS 1000
/* How long fb_bridge_start() waits for the first link process to open the spool (its failure in
 * that time fails the start); after it, the broker runs on and the tick opens the staging channel
 * once the link process has it ready, while captures follow spool.on_full. */
#define START_WAIT_MS 5000
/* How often writer_ready() tries again to lock the spool folder or open the staging files after
 * a failure (meanwhile matched messages follow spool.on_full). */
#define WRITER_RETRY_MS 100

/* A reduce state a reload retired, with the rules it holds its messages for (reduce_retire()). */
struct retired {
	struct fb_reduce *red;
	struct generation *gen;
	struct retired *next;
};
/* Reloads faster than the ticks send what the old rules held: beyond this many retired states,
 * the oldest sends the rest at once. */
#define RETIRED_MAX 4

struct fb_bridge {
	char *config_file;
	struct fb_logger lg;      /* bridge_log(): the link process's queued lines first */
	struct fb_logger out;     /* the caller's logger */
	struct fb_host host;
	struct generation *gen;   /* newest; broker thread only */
	struct generation *first; /* the one the link process uses */
	/* After a reload restarted the link process with changed cloud settings: the generation it
	 * was started with (its cloud settings), kept until the next such restart; NULL: first. */
	struct generation *link_gen;
	struct fb_shared *sh;     /* the region shared with the link process (shared.h) */
	int shfd;                 /* ... its memfd */
	int cfgfd;                /* a memfd with the bytes of the configuration loaded first, until
	                             b->sv takes it (then -1; b->sv.cfgfd is the link process's) */
	struct fb_logq logq;      /* reader of the link process's log lines */
	int efd;                  /* wakes the link process's worker */
	pid_t broker;             /* this process */
	struct fb_supervise sv;   /* the link process */
	struct fb_chan_writer *w;
	int wlock;                /* the spool folder's lock, held shared (hold_folder()) */
	struct fb_counters *ctr;  /* &sh->ctr */
	uint8_t *buf;             /* capture buffers, broker thread: the record */
	size_t buf_size;
	uint8_t *pbuf;            /* its properties */
	size_t pbuf_size;
	uint8_t *tbuf;            /* a rule's headers with the capture time (timed_suffix()) */
	size_t tbuf_size;
	struct fb_inject inj;     /* the cloud-to-edge ring's reader */
	struct fb_c2e_reader rq;  /* the requeue ring's reader (dead letters to stage again) */
	bool rq_logged;           /* a requeue that waits for room has been logged */
	bool rq_sync_logged;      /* a requeued dead letter staged without its sync has been logged */
	bool rq_read_logged;      /* ... one whose file cannot be read */
	/* Seconds of the tick's monotonic clock (fb_bridge_tick()). */
	uint64_t rq_retry;        /* ... and is tried again from then on */
	uint64_t next_status;
	uint64_t next_check;      /* when to look after the link process next */
	bool full_logged;         /* the current full episode has been logged */
	bool writer_logged;       /* a failure to open the staging channel has been logged */
	bool lock_logged;         /* a failure to lock the spool folder has been logged */
	uint64_t writer_retry_ms; /* writer_ready() tries no lock or open before this (fb_mono_ms()) */
	bool error_logged;        /* a message refused for an error has been logged (dropped_error) */
	bool unsynced_logged;     /* a message staged whose sync failed has been logged */
	int write_err;            /* the errno of a file stage() could not write, for the log (-EIO) */
	uint64_t full_refused;    /* captures turned away in the current episode */
	struct fb_status last;    /* the last status snapshot read whole */
	struct fb_reduce *red;    /* per-topic state of the rules that send less (reduce.h); NULL: none */
	struct retired *retired;  /* reduce states reloads retired, still sending, oldest first */
	unsigned retired_n;
	struct fb_waker_timer soon; /* brings the broker thread back to the tick when work is left */
	bool draining;            /* a link process on a fresh channel waits for the ring to empty */
	uint64_t started_ms;      /* fb_mono_ms() at the start: uptime_s */
	struct fb_publish_memo memo; /* per-rule values last published */
};

static void generation_free(struct generation *g)
{
	while(g){
		struct generation *older = g->older;

		if(g->extra){
			for(size_t i = 0; i < g->cfg->e2c_count; i++){
				free(g->extra[i]);
			}
		}
		free(g->extra);
		free(g->extra_len);
		free(g->timed);
		fb_routes_free(g->routes);
		fb_config_free(g->cfg);
		free(g);
		g = older;
	}
}

/* 0 when no header of RULE uses the capture time; otherwise the most bytes timed_suffix() writes
 * for it: each header and the origin as a user property (identifier, two lengths), a value
 * growing at most threefold (a variable of 14 or 17 bytes becomes at most FB_RFC3339_MAX). */
static uint32_t timed_bound(const struct fb_config *cfg, const struct fb_e2c_rule *rule)
{
	uint64_t n = 5 + strlen(FB_ORIGIN_PROPERTY) + strlen(cfg->site_id);
	bool timed = false;

	for(size_t h = 0; h < rule->header_count; h++){
		timed |= fb_route_check_header(rule->headers[h].value, NULL) > 0;
		n += 5 + strlen(rule->headers[h].name) + 3 * strlen(rule->headers[h].value);
	}
	return timed ? (uint32_t)(n < UINT32_MAX ? n : UINT32_MAX) : 0;
}

static int generation_load(const char *file, const struct fb_logger *lg, struct generation **out)
{
	struct generation *g = calloc(1, sizeof(*g));
	int rc;

	*out = NULL;
	if(g == NULL){
		return -ENOMEM;
	}
	rc = fb_config_load(file, lg, &g->cfg);
	if(rc < 0){
		goto fail;
	}
	rc = fb_routes_build(g->cfg, &g->routes);
	if(rc < 0){
		fb_log(lg, MOSQ_LOG_ERR, "%s: cannot compile the routes: %s", file, strerror(-rc));
		goto fail;
	}
	g->first_byte_only = fb_route_first_bytes(g->routes, FB_ROUTE_E2C, g->first_bytes);
	rc = -ENOMEM;
	g->extra = calloc(g->cfg->e2c_count + 1, sizeof(*g->extra));
	g->extra_len = calloc(g->cfg->e2c_count + 1, sizeof(*g->extra_len));
	g->timed = calloc(g->cfg->e2c_count + 1, sizeof(*g->timed));
	if(g->extra == NULL || g->extra_len == NULL || g->timed == NULL){
		goto fail;
	}
	/* Encoded once here, appended to every captured message's properties. */
	for(size_t i = 0; i < g->cfg->e2c_count; i++){
		const struct fb_e2c_rule *rule = &g->cfg->e2c[i];
		const char **x = calloc(2 * (rule->header_count + 1), sizeof(*x));

		if(x == NULL){
			rc = -ENOMEM;
			goto fail;
		}
		for(size_t h = 0; h < rule->header_count; h++){
			x[2 * h] = rule->headers[h].name;
			x[2 * h + 1] = rule->headers[h].value;
		}
		x[2 * rule->header_count] = FB_ORIGIN_PROPERTY;
		x[2 * rule->header_count + 1] = g->cfg->site_id;
		rc = fb_props_encode(NULL, x, rule->header_count + 1, &g->extra[i], &g->extra_len[i]);
		free(x);
		if(rc < 0){
			fb_log(lg, MOSQ_LOG_ERR, "%s: edge_to_cloud[%zu]: cannot encode its headers: %s", file,
					i, strerror(-rc));
			goto fail;
		}
		g->timed[i] = timed_bound(g->cfg, rule);
	}
	*out = g;
	return 0;

fail:
	generation_free(g);
	return rc;
}

/* ---- logging and the link process's start ---------------------------------------------------- */

/* Logs what the link process queued (ipc/logq.h). */
static void drain_log(struct fb_bridge *b)
{
	if(b->sh){
		fb_logq_drain(&b->logq, &b->out, fb_wall_ms());
	}
}

/* The bridge's own logger: what the link process queued before a line goes first. */
static void bridge_log(void *ud, int level, const char *line)
{
	struct fb_bridge *b = ud;

	drain_log(b);
	if(b->out.fn){
		b->out.fn(b->out.ud, level, line);
	}
}

/* Copies the configuration file the broker loaded first into a memfd, for the link process:
 * cloud settings and cloud_to_edge rules change only with a restart, so every link process the
 * broker starts reads these bytes, whatever the file holds by then. Returns the descriptor or a
 * negative errno. */
static int config_memfd(const char *path)
{
	char buf[65536];
	ssize_t n;
	int in, fd, rc = 0;

	in = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if(in < 0){
		return -errno;
	}
	fd = memfd_create("flowmq-bridge-config", MFD_CLOEXEC);
	if(fd < 0){
		rc = -errno;
		close(in);
		return rc;
	}
	while((n = read(in, buf, sizeof(buf))) > 0){
		for(ssize_t done = 0; done < n; ){
			ssize_t w = write(fd, buf + done, (size_t)(n - done));
			if(w < 0){
				rc = -errno;
				break;
			}
			done += w;
		}
		if(rc < 0){
			break;
		}
	}
	if(n < 0){
		rc = -errno;
	}
	close(in);
	if(rc < 0){
		close(fd);
		return rc;
	}
	return fd;
}

/* Holds the spool folder's lock shared (chan.h: fb_chan_lock()) from the first time a link process
 * has made the staging channel ready until the broker stops (or the channel starts afresh:
 * fresh_channel()), so that the CLI never takes the spool for a stopped broker's while this one
 * has the channel, with or without a link process.
 * Returns true while it is held. Broker thread; never waits. */
static bool hold_folder(struct fb_bridge *b)
{
	const char *path = b->first->cfg->spool.path;
	int rc;

	if(b->wlock >= 0){
		return true;
	}
	rc = fb_chan_lock(path, false);
	if(rc >= 0){
		b->wlock = rc;
		if(b->lock_logged){
			fb_log(&b->lg, MOSQ_LOG_NOTICE, "the spool folder %s is ours again", path);
			b->lock_logged = false;
		}
		return true;
	}
	if(!b->lock_logged){
		if(rc == -EBUSY){
			fb_log(&b->lg, MOSQ_LOG_ERR, "another process holds the spool folder %s (flowmq-bridge spool "
					"requeue-dead or purge-dead, while no link process ran?); matched messages follow "
					"spool.on_full until it lets go", path);
		}else{
			fb_log(&b->lg, MOSQ_LOG_ERR, "cannot lock the spool folder %s: %s; matched messages follow "
					"spool.on_full until it can", path, strerror(-rc));
		}
		b->lock_logged = true;
	}
	return false;
}

/* Opens the writing end of the staging channel once a link process has made it ready. Returns
 * true when it is open. Broker thread; bounded (maps two files). */
static bool writer_ready(struct fb_bridge *b)
{
	const struct fb_config *cfg = b->first->cfg;
	struct fb_chan_limits lim;
	uint64_t now;
	int rc;

	if(b->w){
		return true;
	}
	if(!atomic_load_explicit(&b->sh->chan.ready, memory_order_acquire)){
		return false;
	}
	/* A lock or an open that failed is tried again at most every WRITER_RETRY_MS, not at every
	 * matched message (a few system calls each, on the broker thread). */
	now = fb_mono_ms();
	if(now < b->writer_retry_ms){
		return false;
	}
	b->writer_retry_ms = now + WRITER_RETRY_MS;
	if(!hold_folder(b)){
		return false;
	}
	lim = (struct fb_chan_limits){
		.max_size = cfg->spool.max_size,
		.on_full = cfg->spool.on_full,
		.sync = cfg->spool.sync == FB_SYNC_ALWAYS,
	};
	rc = fb_chan_writer_open(cfg->spool.path, &b->sh->chan, &lim, &b->w);
	if(rc < 0){
		if(!b->writer_logged){
			fb_log(&b->lg, MOSQ_LOG_ERR, "cannot open the staging files in %s: %s; matched messages "
					"follow spool.on_full until they open", cfg->spool.path, strerror(-rc));
			b->writer_logged = true;
		}
		return false;
	}
	if(b->writer_logged || b->full_logged){
		fb_log(&b->lg, MOSQ_LOG_NOTICE, "the staging files in %s are open; matched messages are spooled "
				"again (%" PRIu64 " turned away per spool.on_full meanwhile)", cfg->spool.path, b->full_refused);
	}
	b->writer_logged = b->full_logged = false;
	b->full_refused = 0;
	b->writer_retry_ms = 0;
	return true;
}

/* fb_supervise.fresh: the last link process handed the channel back (its spool has to be moved
 * aside and salvaged, which only a fresh channel allows): the next one recovers the staging files
 * as this writer leaves them, so it writes no more; the tick opens them again once they are
 * ready. */
static void fresh_channel(void *ud)
{
	struct fb_bridge *b = ud;
	size_t n;

	if(b->w){
		fb_chan_writer_close(b->w);
		b->w = NULL;
		b->writer_logged = true;
		fb_log(&b->lg, MOSQ_LOG_WARNING, "the staging files are started afresh; until they are "
				"ready, matched messages follow spool.on_full");
	}
	/* The spool folder may be moved aside and made anew: the lock is taken again, on the folder
	 * then at the path, once the channel is ready (meanwhile the link process holds the spool). */
	if(b->wlock >= 0){
		close(b->wlock);
		b->wlock = -1;
	}
	b->writer_retry_ms = 0; /* the new channel is tried at once */
	/* The next link process pushes again what spool "in" holds, maybe renumbered by a salvage:
	 * what the rings still hold goes (a cloud command injected twice, or a seq of the old
	 * numbering released, which would delete a salvaged record not yet injected). fresh_wait()
	 * had the cloud-to-edge ring emptied by injection first; only a record at its head that waits
	 * for descriptors or memory, and those behind it, are left, and spool "in" has them. Dead
	 * letters of an operator's requeue-dead stay in spool "dead". */
	n = fb_inject_restart(&b->inj);
	n += fb_c2e_drop(&b->sh->requeue, &b->rq, b->first->cfg->spool.path, FB_REQUEUE_STEM);
	/* Not staged, so not to be deleted from "dead" by the next link process (control.c), whose
	 * spool may be numbered anew. */
	atomic_store_explicit(&b->sh->requeue.released, b->rq.head, memory_order_relaxed);
	if(n){
		fb_log(&b->lg, MOSQ_LOG_NOTICE, "%zu cloud messages and dead letters waiting for the broker are "
				"left to the next link process, which takes them from the spool again", n);
	}
}

/* fb_supervise.fresh_wait: before a link process starts on a fresh channel, the tick injects and
 * releases what the cloud-to-edge ring holds: a salvage leaves those out of spool "in", where
 * damage may have made them unreadable, and the ring's copy is good. Not when the record at its
 * head waits for descriptors or memory (fresh_channel() drops them then). Meanwhile the tick comes
 * back every millisecond. */
static bool fresh_wait(void *ud)
{
	struct fb_bridge *b = ud;

	b->draining = b->inj.injected != b->inj.released
			|| (atomic_load_explicit(&b->sh->c2e.tail, memory_order_acquire) != b->inj.rd.head
				&& !b->inj.waiting);
	return b->draining;
}

static void notify(struct fb_bridge *b)
{
	fb_waker_notify(b->efd, &b->sh->notified);
}

/* ---- sending less (reduce.h) ------------------------------------------------------------------ */

static int stage(struct fb_bridge *b, size_t len, uint64_t *seq, bool wait);

/* Stages the record in b->buf (LEN bytes) for a message the capture already accepted: when the
 * channel cannot take it, it is dropped and counted (nobody is left to refuse), unless WAIT and
 * the channel is only busy (both staging files in use, or not open yet): then -EAGAIN, and the
 * caller keeps it. */
static int stage_later(struct fb_bridge *b, size_t len, bool wait)
{
	uint64_t seq = 0;
	int rc = stage(b, len, &seq, wait);

	if(rc < 0 && seq){
		/* staged, only its sync failed (spool.sync always): it goes, as sent; staged again it
		 * would go twice */
		notify(b);
		return 0;
	}
	if(rc == -ENOSPC || rc == -E2BIG){
		fb_count(&b->ctr->dropped_full, 1);
	}else if(rc < 0 && rc != -EAGAIN){
		fb_count(&b->ctr->dropped_error, 1);
	}
	return rc;
}

static int buf_reserve(struct fb_bridge *b, size_t len)
{
	if(len > b->buf_size){
		uint8_t *nb = realloc(b->buf, len);
		if(nb == NULL){
			return -ENOMEM;
		}
		b->buf = nb;
		b->buf_size = len;
	}
	return 0;
}

/* A held message or a window summary of rule RULE of G, staged (RC 0) or dropped (RC < 0; -EAGAIN:
 * it stays held): counted in the rule's counters while G's rules are the current ones (after a
 * reload an index may mean another rule). Returns RC. */
static int count_rule_later(struct fb_bridge *b, const struct generation *g, int rule, int rc)
{
	if(g == b->gen && rule >= 0 && rule < FB_RULECTR_SLOTS && rc != -EAGAIN){
		fb_rulectr_inc(rc == 0 ? &b->sh->rules.rule[rule].forwarded : &b->sh->rules.rule[rule].dropped);
	}
	return rc;
}

/* fb_reduce_sink.record: a held message of rule RULE whose interval ended (or that was flushed).
 * UD is the generation whose rules held it. */
static int reduce_record(void *ud, int rule, const uint8_t *rec, size_t len, bool wait)
{
	struct fb_bridge *b = ((struct generation *)ud)->owner;

	if(buf_reserve(b, len) < 0){
		fb_count(&b->ctr->dropped_error, 1);
		return count_rule_later(b, ud, rule, -ENOMEM);
	}
	memcpy(b->buf, rec, len);
	return count_rule_later(b, ud, rule, stage_later(b, len, wait));
}

static int timed_suffix(struct fb_bridge *b, const struct generation *g, int rule, uint64_t now, uint32_t *len);

/* fb_reduce_sink.window: a closed aggregate window, sent with the headers and origin of rule RULE
 * of UD, the generation whose rules held it (after a reload, not the current one). */
static int reduce_window(void *ud, int rule, const char *cloud_topic, const char *json, size_t jlen, bool wait)
{
	const struct generation *g = ud;
	struct fb_bridge *b = g->owner;
	const struct fb_e2c_rule *e = &g->cfg->e2c[rule];
	uint64_t now = fb_wall_ms();
	struct fb_record r = {
		.qos = (uint8_t)e->qos,
		.lane = (uint8_t)e->priority,
		.live_first = e->live_first,
		.enqueue_ms = now,
		.expiry_ms = e->ttl_ms ? now + e->ttl_ms : 0,
		.expiry_local = e->ttl_ms != 0,
		.topic = cloud_topic,
		.topic_len = (uint16_t)strlen(cloud_topic),
		.props = g->extra[rule],
		.props_len = g->extra_len[rule],
		.payload = json,
		.payload_len = (uint32_t)jlen,
	};
	size_t len;

	if(g->timed[rule]){
		/* The capture time of a window's summary is when the window closed. */
		int rc = timed_suffix(b, g, rule, now, &r.props_len);
		if(rc < 0){
			fb_count(&b->ctr->dropped_error, 1);
			return count_rule_later(b, g, rule, rc);
		}
		r.props = b->tbuf;
	}
	len = fb_record_size(&r);

	if(buf_reserve(b, len) < 0){
		fb_count(&b->ctr->dropped_error, 1);
		return count_rule_later(b, g, rule, -ENOMEM);
	}
	fb_record_encode(&r, b->buf);
	return count_rule_later(b, g, rule, stage_later(b, len, wait));
}

/* Makes the reduce state for the current generation's rules (none when no rule needs it). */
static int reduce_start(struct fb_bridge *b)
{
	const struct fb_reduce_sink sink = { reduce_record, reduce_window, b->gen };
	int rc;

	b->gen->owner = b;
	rc = fb_reduce_new(b->gen->cfg, &sink, b->ctr, &b->red);

	if(rc < 0){
		fb_log(&b->lg, MOSQ_LOG_ERR, "cannot keep state for min_interval, on_change, deadband or "
				"aggregate: %s; those rules forward every message", strerror(-rc));
	}
	return rc;
}

/* Frees G unless it is still in use: by the link process (b->first, b->link_gen), as the rules
 * (b->gen), or by a retired reduce state. Set the new reference first. */
static void generation_unref(struct fb_bridge *b, struct generation *g)
{
	if(g == NULL || g == b->first || g == b->link_gen || g == b->gen){
		return;
	}
	for(const struct retired *t = b->retired; t; t = t->next){
		if(t->gen == g){
			return;
		}
	}
	g->older = NULL; /* b->first stays */
	generation_free(g);
}

/* Ends the oldest retired reduce state: what it still holds is sent at once (nothing when the ticks
 * have sent it all; else a stop, or more reloads than RETIRED_MAX), and its rules go unless still
 * in use. */
static void retired_pop(struct fb_bridge *b)
{
	struct retired *t = b->retired;

	fb_reduce_flush(t->red);
	fb_reduce_free(t->red);
	b->retired = t->next;
	b->retired_n--;
	generation_unref(b, t->gen);
	free(t);
}

/* A reload: the reduce state of the rules being replaced is retired, with them: the ticks send what
 * it holds (throttled messages, open windows) a slice at a time, waiting for room, before what the
 * new rules hold, which start with a state of their own (reduce_start()). A message captured
 * meanwhile on a topic a retired state holds sends that first (capture_matched()). Without memory
 * for its place in the list, it sends everything at once, as a stop does. */
static void reduce_retire(struct fb_bridge *b)
{
	struct retired *t, **end = &b->retired;

	if(b->red == NULL){
		return;
	}
	t = malloc(sizeof(*t));
	if(t == NULL){
		fb_reduce_flush(b->red);
		fb_reduce_free(b->red);
		b->red = NULL;
		return;
	}
	fb_reduce_retire(b->red);
	*t = (struct retired){ b->red, b->gen, NULL };
	b->red = NULL;
	while(*end){
		end = &(*end)->next;
	}
	*end = t;
	if(++b->retired_n > RETIRED_MAX){
		retired_pop(b);
	}
}

/* What a message on TOPIC under the current rules must follow: what the retired states hold for it
 * goes first, oldest first. Returns 0, or -EAGAIN when the staging channel has no room for that
 * now (it is kept; the caller turns the message away like any capture that finds it busy). */
static int retired_send_topic(struct fb_bridge *b, const char *topic)
{
	for(struct retired *t = b->retired; t; t = t->next){
		if(fb_reduce_send_topic(t->red, topic) == -EAGAIN){
			return -EAGAIN;
		}
	}
	return 0;
}

/* Sends what the rules hold (throttled messages, open windows) and forgets it: before a stop. */
static void reduce_end(struct fb_bridge *b)
{
	while(b->retired){
		retired_pop(b);
	}
	if(b->red){
		fb_reduce_flush(b->red);
		fb_reduce_free(b->red);
		b->red = NULL;
	}
	fb_waker_every(&b->soon, 0); /* nothing is left due (a reload may bring no such rule) */
}

/* ---- the broker side ------------------------------------------------------------------------- */

int fb_bridge_start(const char *config_file, const struct fb_logger *lg, const struct fb_host *host,
		struct fb_bridge **out)
{
	struct fb_bridge *b;
	const struct fb_config *cfg;
	uint64_t until;
	int rc;

	*out = NULL;
	b = calloc(1, sizeof(*b));
	if(b == NULL){
		return -ENOMEM;
	}
	b->efd = b->shfd = b->cfgfd = b->wlock = -1;
	b->out = *lg;
	b->lg = (struct fb_logger){ bridge_log, b };
	b->host = *host;
	b->broker = getpid();
	b->started_ms = fb_mono_ms();
	b->config_file = strdup(config_file);
	if(b->config_file == NULL){
		rc = -ENOMEM;
		goto fail;
	}
	rc = generation_load(config_file, &b->lg, &b->gen);
	if(rc < 0){
		goto fail;
	}
	b->first = b->gen;
	cfg = b->gen->cfg;
	rc = fb_supervise_check_program(b->host.link_program);
	if(rc < 0){
		fb_log(&b->lg, MOSQ_LOG_ERR, "cannot run flowmq-link at %s: %s; set plugin_opt_link_program to "
				"the flowmq-link installed with this plugin", b->host.link_program ? b->host.link_program : "(none)",
				strerror(-rc));
		goto fail;
	}
	b->cfgfd = config_memfd(config_file);
	if(b->cfgfd < 0){
		rc = b->cfgfd;
		fb_log(&b->lg, MOSQ_LOG_ERR, "%s: cannot keep a copy for the link process: %s", config_file,
				strerror(-rc));
		goto fail;
	}

	rc = fb_shared_create(&b->sh, &b->shfd);
	if(rc < 0){
		fb_log(&b->lg, MOSQ_LOG_ERR, "cannot map memory shared with the link process: %s", strerror(-rc));
		goto fail;
	}
	fb_logq_init(&b->logq, &b->sh->logq);
	b->ctr = &b->sh->ctr;
	b->inj = (struct fb_inject){
		.ring = &b->sh->c2e,
		.dir = cfg->spool.path,
		.host = &b->host,
		.ctr = b->ctr,
		.lg = &b->lg,
	};
	b->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if(b->efd < 0){
		rc = -errno;
		fb_log(&b->lg, MOSQ_LOG_ERR, "cannot create an eventfd: %s", strerror(-rc));
		goto fail;
	}
	b->sv = (struct fb_supervise){
		.sh = b->sh,
		.shfd = b->shfd,
		.efd = b->efd,
		.cfgfd = b->cfgfd,
		.broker = b->broker,
		.wake_signo = b->host.wake_signo,
		.program = b->host.link_program,
		.config_name = b->config_file,
		.lg = &b->lg,
		.link_timeout_ms = cfg->link_timeout_ms,
		.fresh = fresh_channel,
		.fresh_wait = fresh_wait,
		.ud = b,
	};
	b->cfgfd = -1; /* b->sv owns it from here on (a reload replaces it) */
	rc = fb_supervise_spawn(&b->sv);
	if(rc < 0){
		fb_log(&b->lg, MOSQ_LOG_ERR, "cannot start the link process: %s", strerror(-rc));
		goto fail;
	}
	/* The link process opens the spool and makes the staging files ready. A failure it reports
	 * within START_WAIT_MS fails the start with its reason; a slow open (a long WAL to replay, a
	 * loaded disk) does not hold the broker longer: the tick opens the staging files when they are
	 * ready, and until then matched messages follow spool.on_full. */
	until = fb_mono_ms() + START_WAIT_MS;
	while(atomic_load_explicit(&b->sh->child_state, memory_order_acquire) == 0 && fb_mono_ms() < until){
		if(!fb_supervise_alive(&b->sv)){
			rc = atomic_load(&b->sh->child_state);
			if(b->sv.refused){
				rc = -EPROTO; /* logged */
			}else{
				rc = rc < 0 ? rc : -EIO;
				fb_log(&b->lg, MOSQ_LOG_ERR, "the link process did not start");
			}
			goto fail;
		}
		fb_sleep_ms(1);
	}
	rc = atomic_load(&b->sh->child_state);
	if(rc < 0){
		goto fail;
	}
	if(rc == 0){
		fb_log(&b->lg, MOSQ_LOG_WARNING, "the link process is still opening the spool %s after %d s; until "
				"it is ready, matched messages follow spool.on_full", cfg->spool.path, START_WAIT_MS / 1000);
		b->writer_logged = true;
	}else if(!writer_ready(b)){
		rc = -EIO;
		goto fail;
	}
	reduce_start(b);
	if(b->host.wake_signo > 0 && (rc = fb_waker_timer_init(&b->soon, b->host.wake_signo)) < 0){
		/* without it, a tick that stopped with work left goes on at the next loop turn (when
		 * idle, 100 ms later) */
		fb_log(&b->lg, MOSQ_LOG_WARNING, "cannot create a timer: %s", strerror(-rc));
	}
	fb_log(&b->lg, MOSQ_LOG_NOTICE, "started: site %s, %zu edge_to_cloud and %zu cloud_to_edge rules, spool %s, cloud %s",
			cfg->site_id, cfg->e2c_count, cfg->c2e_count, cfg->spool.path, cfg->cloud.endpoints[0].url);
	*out = b;
	return 0;

fail:
	fb_bridge_stop(b);
	return rc;
}

void fb_bridge_stop(struct fb_bridge *b)
{
	if(b == NULL){
		return;
	}
	/* Messages injected at the last tick stay in spool "in" when the broker stops right after it:
	 * they are injected again at the next start. */
	reduce_end(b); /* staged before the link process stops: the next start sends them */
	fb_waker_timer_cleanup(&b->soon);
	if(b->sh){
		fb_supervise_stop(&b->sv);
	}
	fb_chan_writer_close(b->w);
	if(b->wlock >= 0){
		close(b->wlock);
	}
	if(b->efd >= 0){
		close(b->efd);
	}
	if(b->sh){
		drain_log(b); /* what the link process said while it stopped */
		fb_logq_cleanup(&b->logq);
		fb_shared_unmap(b->sh);
		b->sh = NULL;
	}
	if(b->shfd >= 0){
		close(b->shfd);
	}
	if(b->sv.sh){
		fb_supervise_close(&b->sv); /* b->sv.cfgfd, and a pending replacement's */
	}else if(b->cfgfd >= 0){
		close(b->cfgfd);
	}
	fb_inject_cleanup(&b->inj);
	fb_c2e_reader_cleanup(&b->rq);
	if(b->link_gen && b->link_gen != b->gen){
		b->link_gen->older = NULL; /* b->first: freed with b->gen */
		generation_free(b->link_gen);
	}
	generation_free(b->gen);
	fb_publish_memo_free(&b->memo);
	free(b->buf);
	free(b->pbuf);
	free(b->tbuf);
	free(b->config_file);
	free(b);
}

/* Stages record BUF (LEN bytes) for the link process: one bounded copy, never a wait. Returns 0,
 * or -ENOSPC when the channel cannot take it now (both staging files in use because the link
 * process has fallen behind, is hung or has not opened the spool yet, or max_size reached): the
 * caller applies spool.on_full. One log line per such episode. With WAIT, a channel that is only
 * busy (both staging files in use, or not open) returns -EAGAIN instead, counted and logged
 * nowhere: the caller keeps the record and tries again later. A file that cannot be written (a
 * large record's own, a full disk too) is an error, never a full channel: its errno, or -EIO
 * when that is one of the above (b->write_err keeps it for the log). */
static int stage(struct fb_bridge *b, size_t len, uint64_t *seq, bool wait)
{
	const char *why = NULL;
	int rc;

	b->write_err = 0;
	if(!writer_ready(b)){
		if(wait){
			return -EAGAIN;
		}
		rc = -ENOSPC;
	}else{
		rc = fb_chan_append(b->w, b->buf, len, seq);
		if(rc == 0){
			if(b->full_logged){
				fb_log(&b->lg, MOSQ_LOG_NOTICE, "the staging channel takes messages again (%" PRIu64
						" turned away per spool.on_full meanwhile)", b->full_refused);
				b->full_logged = false;
				b->full_refused = 0;
			}
			notify(b);
			return 0;
		}
		if(fb_chan_write_failed(b->w)){
			b->write_err = rc;
			return rc == -ENOSPC || rc == -E2BIG || rc == -EBUSY || rc == -EAGAIN ? -EIO : rc;
		}
		if(rc == -EBUSY){
			b->sv.chan_full = true;
			notify(b);
			if(wait){
				return -EAGAIN;
			}
			why = "both staging files are in use (the link process is behind)";
			rc = -ENOSPC;
		}
	}
	if(rc == -ENOSPC){
		b->full_refused += why || b->w == NULL;
		if(why && !b->full_logged){
			fb_log(&b->lg, MOSQ_LOG_WARNING, "%s: matched messages follow spool.on_full until it drains", why);
			b->full_logged = true;
		}
	}
	return rc;
}

static __attribute__((noinline)) void publish_status(struct fb_bridge *b, uint64_t now)
{
	struct fb_shared *sh = b->sh;
	struct fb_status m;
	enum fb_link_state state;
	unsigned g, tries = 0;

	if(now >= b->next_check){
		fb_supervise_restart(&b->sv);
		fb_supervise_watch(&b->sv, b->w != NULL);
		writer_ready(b);
		b->next_check = now + 1;
	}
	if(now < b->next_status){
		return;
	}
	drain_log(b);
	for(;;){
		g = fb_seq_read_begin(&sh->sgen);
		memcpy(&m, &sh->status, sizeof(m));
		if(!fb_seq_read_again(&sh->sgen, g)){
			b->last = m;
			break;
		}
		if(++tries == STATUS_SPINS){
			/* A link process stopped or killed inside its update (the next one evens the lock):
			 * the status is published all the same, from the last whole snapshot. */
			m = b->last;
			break;
		}
	}
	/* The counters as they are now (they live in shared memory), the rest as the link process
	 * last saw it. */
	state = atomic_load_explicit(&b->ctr->link_stalled, memory_order_relaxed) ? FB_LINK_STALLED : m.link.state;
	if((!fb_supervise_alive(&b->sv) || !b->sv.child_running) && state == FB_LINK_CONNECTED){
		state = FB_LINK_DISCONNECTED;
	}
	fb_publish_status(&b->host, &m, state, b->ctr);
	fb_publish_metrics(&b->host, &m, state, (fb_mono_ms() - b->started_ms) / 1000, &b->sh->rules,
			b->gen->cfg->e2c_count, &b->memo);
	b->next_status = now + (b->gen->cfg->status_interval_ms + 999) / 1000;
}

/* The dead letters that `spool requeue-dead` sends again through the running bridge (request.h):
 * staged like captures, in the order the link process put them; the ring's head tells it which
 * are staged (it then deletes them from "dead"). One that the channel cannot take now stays in
 * the ring for a later tick: nothing waits, nothing is dropped. */
static __attribute__((noinline)) void requeue_run(struct fb_bridge *b, uint64_t now)
{
	const char *dir = b->first->cfg->spool.path;
	const uint8_t *rec = NULL;
	uint64_t seq, staged;
	size_t len, bytes = 0;
	unsigned n = 0;
	int rc = 0;
	bool any = false;

	/* The budget of the cloud-to-edge ring's: each is read (a large one from its file) and copied
	 * on this thread; the rest waits for the next loop turn. */
	while(n < FB_INJECT_BUDGET && bytes < FB_INJECT_BYTES
			&& fb_c2e_next(&b->sh->requeue, &b->rq, dir, FB_REQUEUE_STEM, &seq, &rec, &len)){
		n++;
		bytes += len;
		if(rec == NULL){
			/* its file cannot be read now: the dead letter stays where it is, in "dead" too; a
			 * file that is gone the link process writes again from there (control.c) */
			rc = b->rq.err ? b->rq.err : -EIO;
			if(!b->rq_read_logged){
				fb_log(&b->lg, MOSQ_LOG_ERR, "requeue-dead: dead letter %" PRIu64 " cannot be read from %s: "
						"%s; it stays in spool \"dead\"%s and is tried again every second, with those "
						"behind it", seq, b->rq.path, strerror(-rc),
						rc == -ENOENT ? " (the link process writes the file again from there)" : "");
				b->rq_read_logged = true;
			}
			break;
		}
		if(len == 0){
			/* withdrawn by the link process (fb_c2e_withdraw()): its dead letter is gone */
			fb_c2e_consume(&b->sh->requeue, &b->rq);
			b->rq_read_logged = false;
			continue;
		}
		if(!writer_ready(b)){
			rc = -EAGAIN;
			break;
		}
		staged = 0;
		rc = fb_chan_append(b->w, rec, len, &staged);
		if(rc < 0 && staged){
			/* Staged, only its sync failed (spool.sync always): staged again it would go twice.
			 * The link process deletes the dead letter only once it has synced the staging
			 * files itself. */
			if(!b->rq_sync_logged){
				fb_log(&b->lg, MOSQ_LOG_WARNING, "requeue-dead: dead letter %" PRIu64 " is staged, but the "
						"staging file cannot be synced: %s; it stays in spool \"dead\" until the link "
						"process has synced it", seq, strerror(-rc));
				b->rq_sync_logged = true;
			}
			rc = 0;
		}
		if(rc < 0){
			if(rc == -EBUSY){
				b->sv.chan_full = true;
			}
			break;
		}
		any = true;
		fb_c2e_consume(&b->sh->requeue, &b->rq);
		b->rq_read_logged = false; /* the next one that cannot be read is another */
	}
	if(rc < 0){
		b->rq_retry = now + 1; /* not at every loop turn */
	}
	if(rc < 0 && rec != NULL && !b->rq_logged){
		fb_log(&b->lg, MOSQ_LOG_NOTICE, "requeue-dead: dead letter %" PRIu64 " waits for the staging "
				"channel (%s); it is staged when there is room", seq, strerror(-rc));
		b->rq_logged = true;
	}else if(rc == 0){
		b->rq_logged = b->rq_read_logged = false;
	}
	if(any || rc == -EBUSY){
		notify(b);
	}
}

/* Sends what the reduce states have due: the oldest retired one while it holds anything (it goes
 * once it has sent everything), else the current one, so that one slice at a time runs. While more
 * is due, or the ring is emptied for a link process on a fresh channel (fresh_wait()), the broker
 * thread comes back here every millisecond even when idle (while the channel has no room for what
 * is due, after 1, 2, 4 ... 64 ms: fb_reduce_pause_ms()). */
static __attribute__((noinline)) void soon_tick(struct fb_bridge *b)
{
	unsigned every = 0;

	while(b->retired && !fb_reduce_tick(b->retired->red)){
		retired_pop(b); /* nothing left */
	}
	if(b->retired){
		every = fb_reduce_pause_ms(b->retired->red);
	}else if(b->red && fb_reduce_tick(b->red)){
		every = fb_reduce_pause_ms(b->red);
	}
	if(b->draining && atomic_load_explicit(&b->sh->c2e.tail, memory_order_relaxed) == b->inj.rd.head){
		b->draining = false; /* empty: the next check starts the link process */
	}
	if(b->draining){
		every = 1;
	}
	fb_waker_every(&b->soon, every);
}

void fb_bridge_tick(struct fb_bridge *b, uint64_t now)
{
	/* Every broker loop turn comes here: with nothing to do, a few loads and compares (the work
	 * is out of line, so that the compiler need not set up a frame for it). */
	if(b->inj.injected != b->inj.released){
		fb_inject_release(&b->inj);
	}
	if(now >= b->next_check){
		/* Between the two: a link process started here on a fresh channel (fresh_channel()) finds
		 * everything injected released, so a salvage leaves it out. */
		publish_status(b, now);
	}
	if(atomic_load_explicit(&b->sh->c2e.tail, memory_order_relaxed) != b->inj.rd.head){
		fb_inject_run(&b->inj);
	}
	if(atomic_load_explicit(&b->sh->logq.tail, memory_order_relaxed)
			!= atomic_load_explicit(&b->sh->logq.head, memory_order_relaxed)){
		drain_log(b);
	}
	if(atomic_load_explicit(&b->sh->requeue.tail, memory_order_relaxed) != b->rq.head && now >= b->rq_retry){
		requeue_run(b, now);
	}
	if(b->red || b->retired || b->draining || b->soon.every_ms){
		soon_tick(b); /* the last: it disarms the timer once nothing is left */
	}
}

/* Writes user property NAME = VALUE (its capture-time variables expanded for NOW) at P, which has
 * room up to END. Returns the end of what it wrote, or NULL when a value grows past 65535 bytes. */
static uint8_t *put_user_prop(uint8_t *p, const uint8_t *end, const char *name, const char *value, uint64_t now)
{
	size_t nlen = strlen(name);
	int vlen;

	*p++ = MQTT_PROP_USER_PROPERTY;
	fb_put_be16(p, (uint16_t)nlen);
	memcpy(p + 2, name, nlen);
	p += 2 + nlen;
	vlen = fb_route_header_expand(value, now, (char *)p + 2, (size_t)(end - p - 2));
	if(vlen < 0 || vlen > FB_HEADER_VALUE_MAX){
		return NULL;
	}
	fb_put_be16(p, (uint16_t)vlen);
	return p + 2 + vlen;
}

/* The suffix of a rule whose headers use the capture time: its headers, expanded for NOW, then the
 * origin, encoded into b->tbuf. Returns 0 (*LEN set) or a negative errno. */
static __attribute__((noinline)) int timed_suffix(struct fb_bridge *b, const struct generation *g, int rule,
		uint64_t now, uint32_t *len)
{
	const struct fb_e2c_rule *r = &g->cfg->e2c[rule];
	const uint8_t *end;
	uint8_t *p;

	if(b->tbuf_size < g->timed[rule]){
		uint8_t *nb = realloc(b->tbuf, g->timed[rule]);
		if(nb == NULL){
			return -ENOMEM;
		}
		b->tbuf = nb;
		b->tbuf_size = g->timed[rule];
	}
	p = b->tbuf;
	end = b->tbuf + b->tbuf_size;
	for(size_t h = 0; h < r->header_count && p; h++){
		p = put_user_prop(p, end, r->headers[h].name, r->headers[h].value, now);
	}
	if(p){
		p = put_user_prop(p, end, FB_ORIGIN_PROPERTY, g->cfg->site_id, now);
	}
	if(p == NULL){
		return -E2BIG;
	}
	*len = (uint32_t)(p - b->tbuf);
	return 0;
}

/* The errno behind stage()'s -EIO (RC otherwise): a file it could not write or sync, a full disk
 * too (b->write_err, which this clears). */
static int stage_errno(struct fb_bridge *b, int rc)
{
	if(rc == -EIO && b->write_err){
		rc = b->write_err;
	}
	b->write_err = 0;
	return rc;
}

/* A matched message of rule RULE (-1: unknown) dropped or refused: counted in CTR and the rule's
 * "dropped". */
static void count_dropped(struct fb_bridge *b, atomic_uint_fast64_t *ctr, int rule)
{
	fb_count(ctr, 1);
	if(rule >= 0 && rule < FB_RULECTR_SLOTS){
		fb_rulectr_inc(&b->sh->rules.rule[rule].dropped);
	}
}

/* A matched message (of rule RULE, -1: unknown) that could not be spooled for error RC: refused (an
 * MQTT v5 publisher sees 0x87) and counted, because a 3.1.1 or QoS 0 publisher cannot tell.
 * Logged once until a message is spooled again. */
static void refused_for_error(struct fb_bridge *b, int rule, const char *topic, int rc)
{
	rc = stage_errno(b, rc);
	count_dropped(b, &b->ctr->dropped_error, rule);
	if(!b->error_logged){
		fb_log(&b->lg, MOSQ_LOG_ERR, "cannot spool a message on %s: %s; refused and counted in "
				"edge_to_cloud/dropped/error (further ones are counted, not logged, until a message is "
				"spooled again)", topic, strerror(-rc));
		b->error_logged = true;
	}
}

/* A matched message on TOPIC staged whose sync failed (spool.sync: always; RC, -EIO for the errno
 * stage() kept): not known to be on disk, so the publisher is refused (0x87 for MQTT v5) and may
 * send it again, a repeat as at least once allows; but staged, so it goes to the cloud and counts
 * as forwarded, never as dropped. Logged once until a message is spooled again. */
static void refused_unsynced(struct fb_bridge *b, const char *topic, int rc)
{
	rc = stage_errno(b, rc);
	notify(b);
	if(!b->unsynced_logged){
		fb_log(&b->lg, MOSQ_LOG_ERR, "cannot sync the staging file for a message on %s: %s; refused, as "
				"spool.sync is always, and sent to the cloud as staged: a publisher that sends it again "
				"sends it twice (further ones are not logged until a message is spooled again)",
				topic, strerror(-rc));
		b->unsynced_logged = true;
	}
}

/* A capture turned away because what a reduce state holds for its topic waits for the busy staging
 * channel: counted in the episode stage() logs. Returns -ENOSPC. */
static int busy_refused(struct fb_bridge *b)
{
	b->full_refused++;
	if(!b->full_logged){
		fb_log(&b->lg, MOSQ_LOG_WARNING, "the staging channel is busy (both staging files in use, or not "
				"open): matched messages follow spool.on_full until it drains");
		b->full_logged = true;
	}
	return -ENOSPC;
}

/* fb_bridge_capture() for a topic that a rule matched (RC from fb_route_match(), RES its result).
 * Kept out of line, so that a topic no rule matches costs only the lookup. */
static __attribute__((noinline)) int capture_matched(struct fb_bridge *b, int rc, struct fb_route_result res,
		const char *topic, const void *payload, uint32_t payloadlen, const mosquitto_property *props,
		bool retain)
{
	struct generation *g = b->gen;
	const struct fb_e2c_rule *rule;
	struct fb_record r;
	const uint8_t *sfx;
	uint32_t eprops_len = 0, sfx_len = 0;
	uint64_t seq = 0, now;
	size_t len;
	bool hold = false, reduced = false, unsynced;

	if(rc == -EINVAL){
		/* The rule matched but the rewritten topic is not a valid topic (empty, or longer than
		 * 65535 bytes): nothing can be sent, so it counts as filtered. */
		fb_log(&b->lg, MOSQ_LOG_WARNING, "%s: edge_to_cloud[%d] makes an invalid cloud topic of it; not forwarded",
				topic, res.rule);
		count_dropped(b, &b->ctr->dropped_filtered, res.rule);
		return 0;
	}
	if(rc < 0){
		refused_for_error(b, -1, topic, rc);
		return rc;
	}
	rule = &g->cfg->e2c[res.rule];
	if(res.drop){
		count_dropped(b, &b->ctr->dropped_filtered, res.rule);
		return 0;
	}
	/* What the rules before a reload hold for this topic goes first; and a window of this topic
	 * that has closed and not gone yet (fb_reduce_offer()). When the channel has no room for that
	 * now, it stays, and this message is turned away as any capture then (stage()). */
	if(b->retired && retired_send_topic(b, topic) == -EAGAIN){
		rc = busy_refused(b);
		goto full;
	}
	if(b->red && fb_reduce_active(&rule->reduce)){
		rc = fb_reduce_offer(b->red, res.rule, topic, res.topic, payload, payloadlen, fb_mono_ms(), fb_wall_ms());
		if(rc == FB_REDUCE_TAKEN){
			rc = 0;
			goto out;
		}
		if(rc == -EAGAIN){
			rc = busy_refused(b);
			goto full;
		}
		hold = rc == FB_REDUCE_HOLD;
		reduced = rc >= 0;
		rc = 0; /* -ENOMEM: forwarded */
	}
	now = fb_wall_ms();
	if(g->timed[res.rule]){
		rc = timed_suffix(b, g, res.rule, now, &sfx_len);
		sfx = b->tbuf;
	}else{
		sfx = g->extra[res.rule];
		sfx_len = g->extra_len[res.rule];
	}
	if(rc >= 0){
		rc = fb_props_encode_into(props, sfx, sfx_len, &b->pbuf, &b->pbuf_size, &eprops_len);
	}
	if(rc < 0){
		goto out;
	}
	r = (struct fb_record){
		.qos = (uint8_t)rule->qos,
		.retain = retain && !rule->retain_clear,
		.lane = (uint8_t)rule->priority,
		.live_first = rule->live_first,
		.enqueue_ms = now,
		/* Mosquitto 2.0.11 keeps the publisher's message expiry from plugins: only the rule's
		 * ttl (kept on the edge, instead of spool.ttl) or spool.ttl apply. */
		.expiry_ms = rule->ttl_ms ? now + rule->ttl_ms : 0,
		.expiry_local = rule->ttl_ms != 0,
		.topic = res.topic,
		.topic_len = (uint16_t)strlen(res.topic),
		.props = b->pbuf,
		.props_len = eprops_len,
		.payload = payload,
		.payload_len = payloadlen,
	};
	len = fb_record_size(&r);
	if(len > b->buf_size){
		uint8_t *nb = realloc(b->buf, len);
		if(nb == NULL){
			rc = -ENOMEM;
			goto out;
		}
		b->buf = nb;
		b->buf_size = len;
	}
	fb_record_encode(&r, b->buf);
	if(hold && fb_reduce_hold(b->red, b->buf, len) == 0){
		goto out; /* sent at the end of its interval */
	}
	rc = stage(b, len, &seq, false);
	unsynced = rc < 0 && seq; /* staged, only its sync failed */
	if(rc == 0 || unsynced){
		/* Only now is it the last one sent: a message turned away below leaves the filter as it
		 * was, so that the publisher's retry of it is not suppressed as unchanged. */
		if(reduced){
			fb_reduce_sent(b->red);
		}
		if(res.rule < FB_RULECTR_SLOTS){
			fb_rulectr_inc(&b->sh->rules.rule[res.rule].forwarded);
		}
	}
	if(unsynced){
		refused_unsynced(b, topic, rc);
		rc = FB_BRIDGE_UNSYNCED;
		goto done;
	}
	if(rc == 0 && (b->error_logged || b->unsynced_logged)){
		fb_log(&b->lg, MOSQ_LOG_NOTICE, "matched messages are spooled again");
		b->error_logged = b->unsynced_logged = false;
	}
full:
	if(rc == -ENOSPC || rc == -E2BIG){
		count_dropped(b, &b->ctr->dropped_full, res.rule);
		/* drop_new accepts and drops; reject refuses, so the publisher sees 0x87. */
		rc = g->cfg->spool.on_full == FB_ON_FULL_REJECT ? -ENOSPC : 0;
		goto done;
	}
out:
	if(rc < 0){
		refused_for_error(b, res.rule, topic, rc);
	}
done:
	free(res.topic);
	return rc;
}

static __attribute__((noinline)) int capture_lookup(struct fb_bridge *b, const char *topic,
		const void *payload, uint32_t payloadlen, const mosquitto_property *props, bool retain)
{
	struct fb_route_result res;
	int rc = fb_route_match(b->gen->routes, FB_ROUTE_E2C, topic, &res);

	if(rc == 0){
		return 0;
	}
	rc = capture_matched(b, rc, res, topic, payload, payloadlen, props, retain);
	return rc < 0 ? rc : FB_BRIDGE_MATCHED;
}

int fb_bridge_capture(struct fb_bridge *b, const char *topic, const void *payload, uint32_t payloadlen,
		const mosquitto_property *props, int qos, bool retain)
{
	const struct generation *g = b->gen;
	const unsigned char c = (unsigned char)topic[0];
	(void)qos;

	if(g->first_byte_only && !(g->first_bytes[c >> 6] & (UINT64_C(1) << (c & 63)))){
		return 0; /* no rule can match: the common case for local traffic, without a call */
	}
	return capture_lookup(b, topic, payload, payloadlen, props, retain);
}

/* After a reload: when the cloud settings of G differ from those of the link process (or of the
 * one a pending replacement starts) and nothing that needs a broker restart changed, the link
 * process is replaced (fb_supervise_replace(), without waiting): it is stopped in order (it
 * disconnects; what it had not settled stays in the staging files and the spool) and a new one is
 * started with the bytes of CFGFD, a memfd of the reloaded file, which this takes. Otherwise logs
 * what waits for a restart. Broker thread. */
static void reload_cloud(struct fb_bridge *b, struct generation *g, int cfgfd)
{
	const struct fb_config *run = (b->link_gen ? b->link_gen : b->first)->cfg;
	struct generation *old;
	char keys[256];
	bool cloud = !fb_config_cloud_equal(run, g->cfg);

	if(fb_config_restart_keys(run, g->cfg, keys, sizeof(keys))){
		fb_log(&b->lg, MOSQ_LOG_WARNING, "reload of %s: changes to %s take effect at the next restart of "
				"the broker%s", b->config_file, keys, cloud ? "; so do the changes to cloud" : "");
		close(cfgfd);
		return;
	}
	if(!cloud){
		close(cfgfd);
		return;
	}
	fb_log(&b->lg, MOSQ_LOG_NOTICE, "reload of %s: cloud settings changed; restarting the link process "
			"with them (what it had not sent stays in the spool)", b->config_file);
	old = b->link_gen;
	b->link_gen = g;
	generation_unref(b, old);
	/* Never waits: the tick starts the new one once the old one has ended (within 5 s, or killed). */
	fb_supervise_replace(&b->sv, cfgfd);
}

int fb_bridge_reload(struct fb_bridge *b)
{
	struct generation *g, *old;
	int rc, cfgfd;

	/* The bytes first, then the load: a link process started with them sees what was checked,
	 * unless the file changes in between (then the link process's own load tells). */
	cfgfd = config_memfd(b->config_file);
	if(cfgfd < 0){
		fb_log(&b->lg, MOSQ_LOG_ERR, "reload of %s failed: %s; the running configuration stays",
				b->config_file, strerror(-cfgfd));
		return cfgfd;
	}
	rc = generation_load(b->config_file, &b->lg, &g);
	if(rc < 0){
		close(cfgfd);
		fb_log(&b->lg, MOSQ_LOG_ERR, "reload of %s failed; the running configuration stays", b->config_file);
		return rc;
	}
	/* Only the broker thread used the one replaced here, unless it is the first (the link
	 * process's): keep the first and the newest, and the one a retired reduce state still sends
	 * for; free the rest. */
	reduce_retire(b); /* with the rules they were held for */
	old = b->gen;
	g->older = b->first;
	b->gen = g;
	generation_unref(b, old);
	/* Rule indexes may mean other rules now: their counts start again. */
	fb_rulectr_reset(&b->sh->rules);
	fb_publish_memo_reset(&b->memo);
	reduce_start(b);
	if(b->red == NULL && b->retired == NULL && !b->draining){
		fb_waker_every(&b->soon, 0); /* nothing is left due */
	}
	fb_log(&b->lg, MOSQ_LOG_NOTICE, "reloaded %s: %zu edge_to_cloud rules now apply", b->config_file,
			g->cfg->e2c_count);
	reload_cloud(b, g, cfgfd);
	return 0;
}

const struct fb_config *fb_bridge_config(const struct fb_bridge *b)
{
	return b->gen->cfg;
}

struct fb_counters *fb_bridge_counters(struct fb_bridge *b)
{
	return b->ctr;
}
