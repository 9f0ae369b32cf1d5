/* flowmq-bridge: a short memory of messages by topic and payload (notes.h). Broker process,
 * broker thread (the loopback subscriber's). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"
#include "notes.h"

struct slot {
	uint64_t h;          /* 0: free */
	uint32_t unconsumed; /* notes of this hash in the ring whose copy has not come yet */
	uint32_t in_ring;    /* notes of this hash in the ring */
};

struct note {
	uint64_t h;
	uint64_t t_ms;
};

struct fb_notes {
	uint32_t cap;        /* ring size, a power of two */
	uint32_t nslots;     /* 2 * cap: the table is at most half full */
	uint64_t ttl_ms;
	struct slot *slots;  /* open addressing, linear probing, no tombstones */
	struct note *ring;   /* notes in the order they were added */
	uint32_t head;       /* oldest note */
	uint32_t count;
	size_t pending;      /* sum of unconsumed */
};

/* The hash of a message: its topic, its length, and its first and last HASH_EDGE payload bytes
 * (a note lives for seconds at most; two matched messages that differ only in the middle of a
 * large payload are not worth hashing megabytes twice for each). */
#define HASH_EDGE 1024u

static uint64_t message_hash(const char *topic, const void *payload, uint32_t payloadlen)
{
	size_t tlen = strlen(topic);
	uint64_t h = fb_hash_run(FB_HASH_SEED, topic, tlen);

	h = fb_hash_mix(h, ((uint64_t)tlen << 32) | payloadlen);
	if(payloadlen <= 2 * HASH_EDGE){
		h = fb_hash_run(h, payload, payloadlen);
	}else{
		h = fb_hash_run(h, payload, HASH_EDGE);
		h = fb_hash_run(h, (const uint8_t *)payload + payloadlen - HASH_EDGE, HASH_EDGE);
	}
	h = fb_hash_finish(h);
	return h ? h : 1;
}

static struct slot *slot_find(struct fb_notes *n, uint64_t h)
{
	for(uint32_t i = (uint32_t)h & (n->nslots - 1);; i = (i + 1) & (n->nslots - 1)){
		if(n->slots[i].h == h){
			return &n->slots[i];
		}
		if(n->slots[i].h == 0){
			return NULL;
		}
	}
}

/* The slot for H, made when missing (never more hashes than notes: at most half the slots). */
static struct slot *slot_get(struct fb_notes *n, uint64_t h)
{
	uint32_t i;

	for(i = (uint32_t)h & (n->nslots - 1); n->slots[i].h != 0 && n->slots[i].h != h;
			i = (i + 1) & (n->nslots - 1)){
	}
	n->slots[i].h = h;
	return &n->slots[i];
}

/* Empties slot S, moving later entries of its probe sequence back (no tombstones). */
static void slot_remove(struct fb_notes *n, struct slot *s)
{
	uint32_t mask = n->nslots - 1, i = (uint32_t)(s - n->slots), j = i, home;

	for(;;){
		n->slots[i] = (struct slot){ 0 };
		for(;;){
			j = (j + 1) & mask;
			if(n->slots[j].h == 0){
				return;
			}
			home = (uint32_t)n->slots[j].h & mask;
			/* Entry j stays unless its home lies cyclically outside (i, j]. */
			if(i <= j ? (i < home && home <= j) : (i < home || home <= j)){
				continue;
			}
			break;
		}
		n->slots[i] = n->slots[j];
		i = j;
	}
}

/* Forgets the oldest note. Copies take the oldest notes of their hash first, so the note that
 * leaves was taken when the ring holds more notes of the hash than are untaken. */
static void pop(struct fb_notes *n)
{
	struct slot *s = slot_find(n, n->ring[n->head].h);

	if(s){
		if(s->in_ring == s->unconsumed && s->unconsumed > 0){
			s->unconsumed--;
			n->pending--;
		}
		if(--s->in_ring == 0){
			slot_remove(n, s);
		}
	}
	n->head = (n->head + 1) & (n->cap - 1);
	n->count--;
}

static void expire(struct fb_notes *n, uint64_t now)
{
	while(n->count && now - n->ring[n->head].t_ms > n->ttl_ms){
		pop(n);
	}
}

int fb_notes_new(uint32_t cap, uint64_t ttl_ms, struct fb_notes **out)
{
	struct fb_notes *n;

	*out = NULL;
	if(cap < 2 || (cap & (cap - 1)) || cap > (UINT32_C(1) << 30)){
		return -EINVAL;
	}
	n = calloc(1, sizeof(*n));
	if(n == NULL){
		return -ENOMEM;
	}
	n->cap = cap;
	n->nslots = cap * 2;
	n->ttl_ms = ttl_ms;
	n->slots = calloc(n->nslots, sizeof(*n->slots));
	n->ring = calloc(cap, sizeof(*n->ring));
	if(n->slots == NULL || n->ring == NULL){
		fb_notes_free(n);
		return -ENOMEM;
	}
	*out = n;
	return 0;
}

void fb_notes_free(struct fb_notes *n)
{
	if(n == NULL){
		return;
	}
	free(n->slots);
	free(n->ring);
	free(n);
}

void fb_notes_add(struct fb_notes *n, const char *topic, const void *payload, uint32_t payloadlen,
		uint64_t now_ms)
{
	uint64_t h = message_hash(topic, payload, payloadlen);
	struct slot *s;

	expire(n, now_ms);
	if(n->count == n->cap){
		pop(n);
	}
	n->ring[(n->head + n->count) & (n->cap - 1)] = (struct note){ .h = h, .t_ms = now_ms };
	n->count++;
	s = slot_get(n, h);
	s->in_ring++;
	s->unconsumed++;
	n->pending++;
}

bool fb_notes_take(struct fb_notes *n, const char *topic, const void *payload, uint32_t payloadlen,
		uint64_t now_ms)
{
	struct slot *s;

	expire(n, now_ms);
	s = slot_find(n, message_hash(topic, payload, payloadlen));
	if(s == NULL || s->unconsumed == 0){
		return false;
	}
	s->unconsumed--;
	n->pending--;
	return true;
}

void fb_notes_clear(struct fb_notes *n)
{
	memset(n->slots, 0, (size_t)n->nslots * sizeof(*n->slots));
	n->head = 0;
	n->count = 0;
	n->pending = 0;
}

size_t fb_notes_pending(const struct fb_notes *n)
{
	return n->pending;
}
