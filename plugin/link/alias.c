/* flowmq-bridge: MQTT v5 topic aliases toward the cloud (see alias.h); link process, worker
 * thread. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "alias.h"
#include "hash.h"

struct fb_alias_entry {
	char *topic;       /* NULL: free */
	size_t len;
	uint64_t hash;
	uint32_t chain;    /* next in the bucket, index + 1 */
	uint32_t prev, next; /* LRU ring, index + 1 */
};

void fb_alias_cleanup(struct fb_alias *a)
{
	if(a->e){
		for(uint32_t i = 0; i < a->max; i++){
			free(a->e[i].topic);
		}
	}
	free(a->e);
	free(a->buckets);
	memset(a, 0, sizeof(*a));
}

int fb_alias_reset(struct fb_alias *a, uint16_t max)
{
	fb_alias_cleanup(a);
	if(max == 0){
		return 0;
	}
	a->nbuckets = 1;
	while(a->nbuckets < 2u * max){
		a->nbuckets *= 2;
	}
	a->e = calloc(max, sizeof(*a->e));
	a->buckets = calloc(a->nbuckets, sizeof(*a->buckets));
	if(a->e == NULL || a->buckets == NULL){
		fb_alias_cleanup(a);
		return -ENOMEM;
	}
	a->max = max;
	return 0;
}

/* LRU ring: a->lru is the most recent; its prev is the least recent. */
static void lru_unlink(struct fb_alias *a, uint32_t i)
{
	struct fb_alias_entry *e = &a->e[i - 1];

	if(e->next == i){
		a->lru = 0;
	}else{
		a->e[e->prev - 1].next = e->next;
		a->e[e->next - 1].prev = e->prev;
		if(a->lru == i){
			a->lru = e->next;
		}
	}
	e->prev = e->next = 0;
}

static void lru_front(struct fb_alias *a, uint32_t i)
{
	struct fb_alias_entry *e = &a->e[i - 1];

	if(a->lru == 0){
		e->prev = e->next = i;
	}else{
		struct fb_alias_entry *head = &a->e[a->lru - 1];
		e->next = a->lru;
		e->prev = head->prev;
		a->e[head->prev - 1].next = i;
		head->prev = i;
	}
	a->lru = i;
}

static uint32_t find(const struct fb_alias *a, const char *topic, size_t len, uint64_t h)
{
	for(uint32_t i = a->buckets[h & (a->nbuckets - 1)]; i; i = a->e[i - 1].chain){
		const struct fb_alias_entry *e = &a->e[i - 1];
		if(e->hash == h && e->len == len && memcmp(e->topic, topic, len) == 0){
			return i;
		}
	}
	return 0;
}

/* Takes entry I out of its bucket and the LRU ring, and frees its topic. */
static void release(struct fb_alias *a, uint32_t i)
{
	struct fb_alias_entry *e = &a->e[i - 1];
	uint32_t *pp = &a->buckets[e->hash & (a->nbuckets - 1)];

	while(*pp != i){
		pp = &a->e[*pp - 1].chain;
	}
	*pp = e->chain;
	lru_unlink(a, i);
	free(e->topic);
	e->topic = NULL;
	e->chain = 0;
	a->used--;
}

uint16_t fb_alias_get(struct fb_alias *a, const char *topic, size_t len, bool *full)
{
	uint64_t h;
	uint32_t i;
	char *copy;

	*full = true;
	if(a->max == 0){
		return 0;
	}
	h = fb_hash(topic, len);
	if((i = find(a, topic, len, h)) != 0){
		if(a->lru != i){ /* a run of one topic keeps it the most recent */
			lru_unlink(a, i);
			lru_front(a, i);
		}
		*full = false;
		return (uint16_t)i;
	}
	if((copy = malloc(len + 1)) == NULL){
		return 0;
	}
	memcpy(copy, topic, len);
	copy[len] = '\0';
	if(a->free){
		i = a->free;
		a->free = a->e[i - 1].chain;
	}else if(a->fresh < a->max){
		i = ++a->fresh;
	}else{
		i = a->e[a->lru - 1].prev; /* the least recently used gets the new topic */
		release(a, i);
	}
	a->e[i - 1] = (struct fb_alias_entry){ .topic = copy, .len = len, .hash = h,
		.chain = a->buckets[h & (a->nbuckets - 1)] };
	a->buckets[h & (a->nbuckets - 1)] = i;
	lru_front(a, i);
	a->used++;
	return (uint16_t)i;
}

uint16_t fb_alias_find(const struct fb_alias *a, const char *topic, size_t len)
{
	return a->max ? (uint16_t)find(a, topic, len, fb_hash(topic, len)) : 0;
}

void fb_alias_drop(struct fb_alias *a, const char *topic, size_t len)
{
	uint32_t i;

	if(a->max && (i = find(a, topic, len, fb_hash(topic, len))) != 0){
		release(a, i);
		a->e[i - 1].chain = a->free;
		a->free = i;
	}
}
