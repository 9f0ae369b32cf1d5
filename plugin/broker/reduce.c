/* flowmq-bridge, broker process, broker thread: sending less (see reduce.h): per-topic throttling,
 * report-by-exception and windowed aggregates of edge_to_cloud rules. */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "hash.h"
#include "record.h"
#include "reduce.h"

/* Held messages wait on a timer wheel: SLOTS lists of SLOT_MS each, so that adding, moving and
 * expiring a timer costs O(1); a slot is run once its time has passed (a held message goes out at
 * most SLOT_MS plus one tick late), one turn of the wheel is about 16 s, and a timer further out is
 * looked at once per turn. The tick runs the wheel at most every TICK_MS. */
#define SLOT_MS 16u
#define SLOTS 1024u
#define TICK_MS 10u

/* While more is due than a tick sends (FB_REDUCE_BUDGET), the broker thread gives it a third of
 * the time since its last slice (a quarter of its time at most), between SLICE_MIN_US and
 * SLICE_MAX_US: Mosquitto reads one packet per client per loop turn, so time taken in a turn is
 * taken from every client's rate. */
#define SLICE_SHARE 3u
#define SLICE_MIN_US 20u
#define SLICE_MAX_US 1000u
/* While the sink has no room, the tick tries again after 1 ms, then after twice as long each time,
 * up to this: a channel that stays full for hours (a link process that cannot start, a full disk)
 * does not wake the broker a thousand times a second. */
#define BLOCKED_MAX_MS 64u

/* What one tick may still send: a count and, when DEADLINE_US is set, a time (each send is
 * allowed once the first has been). */
struct budget {
	unsigned n;
	unsigned taken;
	uint64_t deadline_us;
};

struct entry {
	struct entry *hnext;               /* hash chain */
	struct entry *lru_prev, *lru_next; /* table's LRU list, most recent first */
	struct entry *t_prev, *t_next;     /* timer slot (throttle) or rule's window list (aggregate) */
	uint64_t hash;
	int rule;
	bool linked;                       /* on t_prev/t_next */

	/* throttle */
	bool has_last;      /* a message has passed the filter */
	bool sent_once;     /* last_sent_ms is set */
	bool pending;       /* rec holds a message to send at due_ms */
	uint64_t last_pass_ms;   /* monotonic: the last message that passed the filter */
	uint64_t last_sent_ms;   /* monotonic: the last message sent */
	uint64_t due_ms;
	double last_value;
	uint64_t last_hash;
	uint32_t last_len;
	uint8_t *rec;
	size_t rec_len, rec_cap;

	/* aggregate */
	char *cloud_topic;
	uint64_t win_end;   /* wall clock */
	uint64_t count;
	double min, max, sum, last;
	uint64_t first_ts, last_ts;

	size_t topic_len;
	char topic[];
};

struct table {
	struct entry **buckets;
	size_t nbuckets;     /* a power of two */
	size_t count;
	size_t max;
	struct entry lru;    /* sentinel: lru.lru_next is the most recent */
};

struct fb_reduce {
	const struct fb_config *cfg;
	struct fb_reduce_sink sink;
	struct fb_counters *ctr;
	struct table t[2];
	/* throttle timers */
	struct entry slots[SLOTS]; /* sentinels */
	uint64_t wheel_ms;         /* slots before this time have been run (0: never) */
	size_t timers;
	/* open windows, per rule in the order they opened (so in order of their end) */
	struct entry *windows;     /* e2c_count sentinels */
	size_t open_windows;
	uint64_t next_tick_ms;     /* fb_reduce_tick() does nothing before this */
	bool behind;               /* the last tick left sends due */
	bool blocked;              /* ... because the sink had no room (-EAGAIN) */
	unsigned blocked_ms;       /* the pause after the last tick that found no room, 0: none */
	uint64_t slice_end_us;     /* when its slice ended */
	struct entry *held;        /* the entry of the last FB_REDUCE_HOLD */
	/* The entry of the last FB_REDUCE_SEND or FB_REDUCE_HOLD and what its message changes there
	 * once it is staged (fb_reduce_sent()) or held (fb_reduce_hold()): till then the entry stays
	 * as it was, so that a message the channel turns away is not taken for sent. */
	struct entry *offered;
	struct {
		bool filtered;     /* on_change or deadband: the last_* below */
		uint64_t mono_ms;
		double value;
		uint64_t hash;
		uint32_t len;
	} pass;
	bool retiring;             /* fb_reduce_retire(): everything is due */
};

/* ---- helpers --------------------------------------------------------------------------------- */

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Takes one send from B; false when B is spent. */
static bool take(struct budget *b)
{
	if(b->n == 0){
		return false;
	}
	if(b->deadline_us && b->taken && mono_us() >= b->deadline_us){
		b->n = 0;
		return false;
	}
	b->n--;
	b->taken++;
	return true;
}

static void list_init(struct entry *s)
{
	s->t_prev = s->t_next = s;
}

static void list_add_tail(struct entry *s, struct entry *e)
{
	e->t_prev = s->t_prev;
	e->t_next = s;
	s->t_prev->t_next = e;
	s->t_prev = e;
	e->linked = true;
}

static void list_del(struct entry *e)
{
	if(e->linked){
		e->t_prev->t_next = e->t_next;
		e->t_next->t_prev = e->t_prev;
		e->t_prev = e->t_next = NULL;
		e->linked = false;
	}
}

static void lru_del(struct entry *e)
{
	e->lru_prev->lru_next = e->lru_next;
	e->lru_next->lru_prev = e->lru_prev;
}

static void lru_front(struct table *t, struct entry *e)
{
	e->lru_next = t->lru.lru_next;
	e->lru_prev = &t->lru;
	t->lru.lru_next->lru_prev = e;
	t->lru.lru_next = e;
}

int fb_reduce_value(const void *payload, uint32_t len, const char *field, double *out)
{
	const char *p = payload, *end = NULL;
	const cJSON *v;
	cJSON *root;
	int rc = -EINVAL;

	if(len == 0){
		return -EINVAL;
	}
	root = cJSON_ParseWithLengthOpts(p, len, &end, false);
	if(root == NULL){
		return -EINVAL;
	}
	/* Nothing but white space may follow the value. */
	for(const char *q = end; q && q < p + len; q++){
		if(*q != ' ' && *q != '\t' && *q != '\n' && *q != '\r'){
			goto out;
		}
	}
	v = root;
	if(field){
		const char *f = field;
		char key[256];

		while(*f && v){
			size_t n = strcspn(f, ".");
			if(n >= sizeof(key) || !cJSON_IsObject(v)){
				v = NULL;
				break;
			}
			memcpy(key, f, n);
			key[n] = '\0';
			v = cJSON_GetObjectItemCaseSensitive(v, key);
			f += n + (f[n] == '.');
		}
	}
	if(v && cJSON_IsNumber(v) && isfinite(v->valuedouble)){
		*out = v->valuedouble;
		rc = 0;
	}
out:
	cJSON_Delete(root);
	return rc;
}

/* ---- tables ---------------------------------------------------------------------------------- */

static int table_init(struct table *t, size_t max)
{
	t->nbuckets = 64;
	t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
	t->max = max;
	t->lru.lru_next = t->lru.lru_prev = &t->lru;
	return t->buckets ? 0 : -ENOMEM;
}

static struct entry *table_find(struct table *t, const char *topic, size_t len, uint64_t h)
{
	for(struct entry *e = t->buckets[h & (t->nbuckets - 1)]; e; e = e->hnext){
		if(e->hash == h && e->topic_len == len && memcmp(e->topic, topic, len) == 0){
			return e;
		}
	}
	return NULL;
}

/* Doubles the buckets when the table holds more entries than buckets (amortised O(1)). */
static void table_grow(struct table *t)
{
	size_t n = t->nbuckets * 2;
	struct entry **nb = calloc(n, sizeof(*nb));

	if(nb == NULL){
		return; /* longer chains, still correct */
	}
	for(size_t i = 0; i < t->nbuckets; i++){
		for(struct entry *e = t->buckets[i], *next; e; e = next){
			next = e->hnext;
			e->hnext = nb[e->hash & (n - 1)];
			nb[e->hash & (n - 1)] = e;
		}
	}
	free(t->buckets);
	t->buckets = nb;
	t->nbuckets = n;
}

static void table_unlink(struct table *t, struct entry *e)
{
	struct entry **pp = &t->buckets[e->hash & (t->nbuckets - 1)];

	while(*pp != e){
		pp = &(*pp)->hnext;
	}
	*pp = e->hnext;
	lru_del(e);
	t->count--;
}

static void entry_free(struct entry *e)
{
	if(e){
		free(e->rec);
		free(e->cloud_topic);
		free(e);
	}
}

/* ---- sending --------------------------------------------------------------------------------- */

/* Sends what E holds. WAIT (the tick): when the sink has no room now (-EAGAIN), E keeps it, on
 * its timer, and this returns -EAGAIN; otherwise a failure is the sink's to count. */
static int send_held(struct fb_reduce *r, struct entry *e, uint64_t mono_ms, bool wait)
{
	if(e->pending){
		if(r->sink.record(r->sink.ud, e->rule, e->rec, e->rec_len, wait) == -EAGAIN){
			return -EAGAIN;
		}
		e->pending = false;
		e->last_sent_ms = mono_ms;
		e->sent_once = true;
	}
	if(e->linked){
		list_del(e);
		r->timers--;
	}
	return 0;
}

/* Sends E's window summary, when it has messages, and closes it. WAIT as for send_held(): on
 * -EAGAIN the window stays as it was. */
static int send_window(struct fb_reduce *r, struct entry *e, bool wait)
{
	const unsigned emit = r->cfg->e2c[e->rule].reduce.emit;
	cJSON *o = NULL;
	char *json = NULL;
	int rc = 0;

	if(e->count){
		o = cJSON_CreateObject();
		if(o == NULL
				|| ((emit & FB_AGG_COUNT) && !cJSON_AddNumberToObject(o, "count", (double)e->count))
				|| ((emit & FB_AGG_MIN) && !cJSON_AddNumberToObject(o, "min", e->min))
				|| ((emit & FB_AGG_MAX) && !cJSON_AddNumberToObject(o, "max", e->max))
				|| ((emit & FB_AGG_AVG) && !cJSON_AddNumberToObject(o, "avg", e->sum / (double)e->count))
				|| ((emit & FB_AGG_SUM) && !cJSON_AddNumberToObject(o, "sum", e->sum))
				|| ((emit & FB_AGG_LAST) && !cJSON_AddNumberToObject(o, "last", e->last))
				|| !cJSON_AddNumberToObject(o, "first_ts", (double)e->first_ts)
				|| !cJSON_AddNumberToObject(o, "last_ts", (double)e->last_ts)
				|| (json = cJSON_PrintUnformatted(o)) == NULL){
			/* out of memory: the window is lost, and counted like any summary that could not be
			 * staged for memory (the sink's dropped/error) */
			fb_count(&r->ctr->dropped_error, 1);
		}else if((rc = r->sink.window(r->sink.ud, e->rule, e->cloud_topic, json, strlen(json), wait)) == 0){
			fb_count(&r->ctr->windows, 1);
		}
		cJSON_free(json);
		cJSON_Delete(o);
		if(rc == -EAGAIN){
			return -EAGAIN; /* the window stays as it was */
		}
		e->count = 0;
	}
	if(e->linked){
		list_del(e);
		r->open_windows--;
	}
	return 0;
}

/* Sends what E, an entry of T, holds now and forgets it. WAIT as for send_held(): on -EAGAIN, E
 * stays as it was. */
static int forget(struct fb_reduce *r, struct table *t, struct entry *e, bool wait)
{
	int rc;

	if(t == &r->t[FB_REDUCE_AGGREGATE]){
		rc = send_window(r, e, wait);
	}else{
		rc = send_held(r, e, e->last_sent_ms, wait);
	}
	if(rc == -EAGAIN){
		return rc;
	}
	table_unlink(t, e);
	if(r->held == e){
		r->held = NULL;
	}
	if(r->offered == e){
		r->offered = NULL;
	}
	entry_free(e);
	return 0;
}

/* Evicts the least recently used entry of T, sending what it holds first. */
static void evict(struct fb_reduce *r, struct table *t)
{
	struct entry *e = t->lru.lru_prev;

	if(e == &t->lru){
		return;
	}
	forget(r, t, e, false);
	fb_count(&r->ctr->reduce_evicted, 1);
}

static struct entry *lookup(struct fb_reduce *r, struct table *t, int rule, const char *topic, bool *fresh)
{
	size_t len = strlen(topic);
	uint64_t h = fb_hash(topic, len);
	struct entry *e = table_find(t, topic, len, h);

	*fresh = false;
	if(e){
		lru_del(e);
		lru_front(t, e);
		return e;
	}
	if(t->count >= t->max){
		evict(r, t);
	}
	e = calloc(1, sizeof(*e) + len + 1);
	if(e == NULL){
		return NULL;
	}
	memcpy(e->topic, topic, len + 1);
	e->topic_len = len;
	e->hash = h;
	e->rule = rule;
	if(t->count >= t->nbuckets){
		table_grow(t);
	}
	e->hnext = t->buckets[h & (t->nbuckets - 1)];
	t->buckets[h & (t->nbuckets - 1)] = e;
	lru_front(t, e);
	t->count++;
	*fresh = true;
	return e;
}

/* ---- the timer wheel ------------------------------------------------------------------------- */

static void timer_add(struct fb_reduce *r, struct entry *e)
{
	uint64_t at = e->due_ms > r->wheel_ms ? e->due_ms : r->wheel_ms;

	list_add_tail(&r->slots[(at / SLOT_MS) % SLOTS], e);
	r->timers++;
}

/* Sends what is due in slot S (everything due before LIMIT) while B lasts (NULL: no limit).
 * Returns false when B ran out before the slot was done. */
static bool run_slot(struct fb_reduce *r, struct entry *s, uint64_t limit, uint64_t mono_ms, struct budget *b)
{
	for(struct entry *e = s->t_next, *next; e != s; e = next){
		next = e->t_next;
		if(e->due_ms < limit){
			if(b && !take(b)){
				return false;
			}
			if(send_held(r, e, mono_ms, b != NULL) == -EAGAIN){
				r->blocked = true;
				return false;
			}
		}
	}
	return true;
}

/* Returns false when the budget ran out (or the sink had no room) with held messages still due:
 * the wheel stays where it is, so the next call goes on from that slot (on the path for a run
 * more than a turn late, from the first slot again: what was sent is off the wheel). */
static bool run_timers(struct fb_reduce *r, uint64_t mono_ms, struct budget *b)
{
	if(r->timers == 0){
		r->wheel_ms = mono_ms - mono_ms % SLOT_MS;
		return true;
	}
	if(mono_ms - r->wheel_ms >= (uint64_t)SLOTS * SLOT_MS){
		/* more than a turn since the last run: every slot once */
		for(unsigned i = 0; i < SLOTS && r->timers; i++){
			if(!run_slot(r, &r->slots[i], mono_ms + 1, mono_ms, b)){
				return false;
			}
		}
		r->wheel_ms = mono_ms - mono_ms % SLOT_MS;
		return true;
	}
	while(r->wheel_ms + SLOT_MS <= mono_ms && r->timers){
		if(!run_slot(r, &r->slots[(r->wheel_ms / SLOT_MS) % SLOTS], r->wheel_ms + SLOT_MS, mono_ms, b)){
			return false;
		}
		r->wheel_ms += SLOT_MS;
	}
	if(r->timers == 0){
		r->wheel_ms = mono_ms - mono_ms % SLOT_MS;
	}
	return true;
}

/* Returns false when the budget ran out with closed windows still to send. */
static bool run_windows(struct fb_reduce *r, uint64_t wall_ms, struct budget *b)
{
	struct table *t = &r->t[FB_REDUCE_AGGREGATE];

	for(size_t i = 0; i < r->cfg->e2c_count && r->open_windows; i++){
		struct entry *s = &r->windows[i];

		while(s->t_next != s && s->t_next->win_end <= wall_ms){
			struct entry *e = s->t_next;

			if(!take(b)){
				return false;
			}
			if(send_window(r, e, true) == -EAGAIN){
				r->blocked = true;
				return false;
			}
			table_unlink(t, e);
			entry_free(e);
		}
	}
	return true;
}

/* ---- the API --------------------------------------------------------------------------------- */

int fb_reduce_new(const struct fb_config *cfg, const struct fb_reduce_sink *sink, struct fb_counters *ctr,
		struct fb_reduce **out)
{
	struct fb_reduce *r;
	bool any = false;

	*out = NULL;
	for(size_t i = 0; i < cfg->e2c_count; i++){
		any |= !cfg->e2c[i].drop && fb_reduce_active(&cfg->e2c[i].reduce);
	}
	if(!any){
		return 0;
	}
	r = calloc(1, sizeof(*r));
	if(r == NULL){
		return -ENOMEM;
	}
	r->cfg = cfg;
	r->sink = *sink;
	r->ctr = ctr;
	for(unsigned i = 0; i < SLOTS; i++){
		list_init(&r->slots[i]);
	}
	r->windows = calloc(cfg->e2c_count, sizeof(*r->windows));
	if(r->windows == NULL || table_init(&r->t[0], cfg->spool.max_tracked_topics) < 0
			|| table_init(&r->t[1], cfg->spool.max_tracked_topics) < 0){
		fb_reduce_free(r);
		return -ENOMEM;
	}
	for(size_t i = 0; i < cfg->e2c_count; i++){
		list_init(&r->windows[i]);
	}
	*out = r;
	return 0;
}

void fb_reduce_free(struct fb_reduce *r)
{
	if(r == NULL){
		return;
	}
	for(int k = 0; k < 2; k++){
		struct table *t = &r->t[k];

		if(t->buckets){
			for(struct entry *e = t->lru.lru_next, *next; e != &t->lru; e = next){
				next = e->lru_next;
				entry_free(e);
			}
		}
		free(t->buckets);
	}
	free(r->windows);
	free(r);
}

/* on_change / deadband / heartbeat: does the message pass? What it passes with goes to r->pass;
 * E takes it only once the message is staged or held (pass()). */
static int filter(struct fb_reduce *r, const struct fb_reduce_opts *o, struct entry *e,
		const void *payload, uint32_t len, uint64_t mono_ms)
{
	bool changed = true, by_value = o->has_deadband || o->field;
	uint64_t h = 0;
	double v = 0;

	r->pass.filtered = false;
	r->pass.mono_ms = mono_ms;
	if(!o->on_change && !o->has_deadband){
		return 1;
	}
	if(by_value){
		if(fb_reduce_value(payload, len, o->field, &v) < 0){
			fb_count(&r->ctr->dropped_unparsable, 1);
			return -EINVAL;
		}
		if(e->has_last){
			changed = o->has_deadband ? fabs(v - e->last_value) > o->deadband : v != e->last_value;
		}
	}else{
		h = fb_hash(payload, len);
		changed = !e->has_last || h != e->last_hash || len != e->last_len;
	}
	if(!changed && !(o->heartbeat_ms && mono_ms - e->last_pass_ms >= o->heartbeat_ms)){
		fb_count(&r->ctr->suppressed, 1);
		return 0;
	}
	r->pass.filtered = true;
	r->pass.value = v;
	r->pass.hash = h;
	r->pass.len = len;
	return 1;
}

/* The message offered last on E is staged or held: it is the last one that passed the filter. */
static void pass(struct fb_reduce *r, struct entry *e)
{
	if(r->pass.filtered){
		e->has_last = true;
		e->last_pass_ms = r->pass.mono_ms;
		e->last_value = r->pass.value;
		e->last_hash = r->pass.hash;
		e->last_len = r->pass.len;
	}
	r->offered = NULL;
	r->held = NULL;
}

static int offer_throttle(struct fb_reduce *r, const struct fb_reduce_opts *o, struct entry *e,
		const void *payload, uint32_t len, uint64_t mono_ms)
{
	int rc = filter(r, o, e, payload, len, mono_ms);

	if(rc <= 0){
		return FB_REDUCE_TAKEN;
	}
	r->offered = e;
	if(o->min_interval_ms == 0 || !e->sent_once || mono_ms - e->last_sent_ms >= o->min_interval_ms){
		return FB_REDUCE_SEND;
	}
	r->held = e;
	return FB_REDUCE_HOLD;
}

static int offer_aggregate(struct fb_reduce *r, int rule, const struct fb_reduce_opts *o, const char *topic,
		const char *cloud_topic, const void *payload, uint32_t len, uint64_t wall_ms)
{
	struct table *t = &r->t[FB_REDUCE_AGGREGATE];
	struct entry *e;
	bool fresh;
	double v;

	if(fb_reduce_value(payload, len, o->agg_field, &v) < 0){
		fb_count(&r->ctr->dropped_unparsable, 1);
		return FB_REDUCE_TAKEN;
	}
	e = lookup(r, t, rule, topic, &fresh);
	if(e == NULL){
		return -ENOMEM;
	}
	if(fresh && (e->cloud_topic = strdup(cloud_topic)) == NULL){
		table_unlink(t, e);
		entry_free(e);
		return -ENOMEM;
	}
	if(e->count && e->win_end <= wall_ms && send_window(r, e, true) == -EAGAIN){
		/* closed, and the tick has not sent it yet: it goes first, or stays while there is no room */
		return -EAGAIN;
	}
	if(e->count == 0){
		e->win_end = wall_ms - wall_ms % o->window_ms + o->window_ms;
		e->min = e->max = v;
		e->sum = 0;
		e->first_ts = wall_ms;
		list_add_tail(&r->windows[rule], e);
		r->open_windows++;
	}
	e->count++;
	e->min = v < e->min ? v : e->min;
	e->max = v > e->max ? v : e->max;
	e->sum += v;
	e->last = v;
	e->last_ts = wall_ms;
	fb_count(&r->ctr->aggregated, 1);
	return FB_REDUCE_TAKEN;
}

int fb_reduce_offer(struct fb_reduce *r, int rule, const char *topic, const char *cloud_topic,
		const void *payload, uint32_t len, uint64_t mono_ms, uint64_t wall_ms)
{
	const struct fb_reduce_opts *o = &r->cfg->e2c[rule].reduce;
	struct entry *e;
	bool fresh;

	r->held = NULL;
	r->offered = NULL;
	if(o->window_ms){
		return offer_aggregate(r, rule, o, topic, cloud_topic, payload, len, wall_ms);
	}
	e = lookup(r, &r->t[FB_REDUCE_THROTTLE], rule, topic, &fresh);
	if(e == NULL){
		return -ENOMEM;
	}
	return offer_throttle(r, o, e, payload, len, mono_ms);
}

void fb_reduce_sent(struct fb_reduce *r)
{
	struct entry *e = r->offered;

	if(e == NULL){
		return;
	}
	pass(r, e);
	if(e->pending){
		/* its interval is over (or holding this one failed) and the tick has not sent it yet:
		 * this newer one replaces it */
		e->pending = false;
		fb_count(&r->ctr->suppressed, 1);
		if(e->linked){
			list_del(e);
			r->timers--;
		}
	}
	e->last_sent_ms = r->pass.mono_ms;
	e->sent_once = true;
}

int fb_reduce_hold(struct fb_reduce *r, const uint8_t *rec, size_t len)
{
	struct entry *e = r->held;

	if(e == NULL){
		return -EINVAL;
	}
	r->held = NULL;
	if(len > e->rec_cap){
		uint8_t *n = realloc(e->rec, len);
		if(n == NULL){
			return -ENOMEM; /* r->offered stays, for fb_reduce_sent() */
		}
		e->rec = n;
		e->rec_cap = len;
	}
	pass(r, e);
	memcpy(e->rec, rec, len);
	e->rec_len = len;
	if(e->pending){
		fb_count(&r->ctr->suppressed, 1); /* the one held is replaced by this newer one */
	}else{
		e->pending = true;
		e->due_ms = e->last_sent_ms + r->cfg->e2c[e->rule].reduce.min_interval_ms;
		timer_add(r, e);
	}
	return 0;
}

/* Retiring: sends every held message (slot by slot of the wheel), then every open window (per rule
 * in the order they opened), while B lasts; returns true while some are left. */
static bool run_all(struct fb_reduce *r, uint64_t mono_ms, struct budget *b)
{
	for(unsigned i = 0; i < SLOTS && r->timers; i++){
		if(!run_slot(r, &r->slots[i], UINT64_MAX, mono_ms, b)){
			return true;
		}
	}
	if(r->open_windows && !run_windows(r, UINT64_MAX, b)){
		return true;
	}
	return false;
}

/* Sends what is due while B lasts; returns true when more is due. */
static bool run(struct fb_reduce *r, uint64_t mono_ms, uint64_t wall_ms, struct budget *b)
{
	if(r->retiring){
		return run_all(r, mono_ms, b);
	}
	bool done = run_timers(r, mono_ms, b);

	if(r->open_windows){
		/* the windows get what the held messages left */
		done = run_windows(r, wall_ms, b) && done;
	}
	return !done;
}

bool fb_reduce_tick_at(struct fb_reduce *r, uint64_t mono_ms, uint64_t wall_ms)
{
	struct budget b = { .n = FB_REDUCE_BUDGET };

	return run(r, mono_ms, wall_ms, &b);
}

bool fb_reduce_tick(struct fb_reduce *r)
{
	struct budget b = { .n = FB_REDUCE_BUDGET };
	uint64_t now, now_us, allow = SLICE_MAX_US;

	if(r->timers == 0 && r->open_windows == 0){
		r->behind = false;
		r->blocked_ms = 0;
		return false;
	}
	now = fb_mono_ms();
	if(now < r->next_tick_ms){
		return r->behind;
	}
	now_us = mono_us();
	if(r->behind){
		allow = (now_us - r->slice_end_us) / SLICE_SHARE;
		if(allow < SLICE_MIN_US){
			return true; /* the broker turns fast: its time adds up until it is worth a slice */
		}
		allow = allow < SLICE_MAX_US ? allow : SLICE_MAX_US;
	}
	b.deadline_us = now_us + allow;
	r->blocked = false;
	r->behind = run(r, now, fb_wall_ms(), &b);
	r->slice_end_us = mono_us();
	/* no room in the channel: try again in a millisecond, then in twice as long each time (not at
	 * every loop turn) */
	if(r->blocked){
		r->blocked_ms = r->blocked_ms ? r->blocked_ms * 2 : 1;
		r->blocked_ms = r->blocked_ms < BLOCKED_MAX_MS ? r->blocked_ms : BLOCKED_MAX_MS;
	}else{
		r->blocked_ms = 0;
	}
	r->next_tick_ms = r->behind ? now + r->blocked_ms : now + TICK_MS;
	return r->behind;
}

unsigned fb_reduce_pause_ms(const struct fb_reduce *r)
{
	return r->blocked_ms ? r->blocked_ms : 1;
}

void fb_reduce_retire(struct fb_reduce *r)
{
	r->retiring = true;
	r->next_tick_ms = 0;
}

int fb_reduce_send_topic(struct fb_reduce *r, const char *topic)
{
	size_t len = strlen(topic);
	uint64_t h = fb_hash(topic, len);

	for(int k = 0; k < 2; k++){
		struct table *t = &r->t[k];
		struct entry *e = t->count ? table_find(t, topic, len, h) : NULL;

		if(e && forget(r, t, e, true) == -EAGAIN){
			return -EAGAIN;
		}
	}
	return 0;
}

void fb_reduce_flush(struct fb_reduce *r)
{
	uint64_t now;

	if(r == NULL){
		return;
	}
	now = fb_mono_ms();
	for(unsigned i = 0; i < SLOTS && r->timers; i++){
		run_slot(r, &r->slots[i], UINT64_MAX, now, NULL);
	}
	for(size_t i = 0; i < r->cfg->e2c_count && r->open_windows; i++){
		struct entry *s = &r->windows[i];

		while(s->t_next != s){
			struct entry *e = s->t_next;

			table_unlink(&r->t[FB_REDUCE_AGGREGATE], e);
			send_window(r, e, false);
			entry_free(e);
		}
	}
}

size_t fb_reduce_tracked(const struct fb_reduce *r, enum fb_reduce_kind kind)
{
	return r ? r->t[kind].count : 0;
}
