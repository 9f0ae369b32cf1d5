#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tail.h"

void fb_tail_init(struct fb_tail *t, size_t budget, uint64_t last_seq)
{
	t->last_seq = last_seq;
	pthread_mutex_init(&t->lock, NULL);
	t->head = NULL;
	t->tail = &t->head;
	t->bytes = 0;
	t->budget = budget;
}

void fb_tail_cleanup(struct fb_tail *t)
{
	while(t->head){
		struct fb_tail_rec *next = t->head->next;
		free(t->head);
		t->head = next;
	}
	pthread_mutex_destroy(&t->lock);
}

int fb_tail_push(struct fb_tail *t, uint64_t seq, const void *val, size_t len)
{
	struct fb_tail_rec *r;

	/* Published after the spool append: a worker that sees it finds the record in the spool. */
	__atomic_store_n(&t->last_seq, seq, __ATOMIC_RELEASE);
	/* Unlocked peek: a stale value only makes one record go one way or the other. */
	if(__atomic_load_n(&t->bytes, __ATOMIC_RELAXED) + len > t->budget){
		return -ENOBUFS;
	}
	r = malloc(sizeof(*r) + len);
	if(r == NULL){
		return -ENOBUFS;
	}
	r->next = NULL;
	r->seq = seq;
	r->len = len;
	memcpy(r->val, val, len);
	pthread_mutex_lock(&t->lock);
	*t->tail = r;
	t->tail = &r->next;
	__atomic_store_n(&t->bytes, t->bytes + len, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&t->lock);
	return 0;
}

struct fb_tail_rec *fb_tail_take_next(struct fb_tail *t, uint64_t upto)
{
	struct fb_tail_rec *r, *stale = NULL, **stale_end = &stale;

	pthread_mutex_lock(&t->lock);
	while(t->head && t->head->seq <= upto){
		r = t->head;
		t->head = r->next;
		__atomic_store_n(&t->bytes, t->bytes - r->len, __ATOMIC_RELAXED);
		*stale_end = r;
		stale_end = &r->next;
	}
	r = NULL;
	if(t->head && t->head->seq == upto + 1){
		r = t->head;
		t->head = r->next;
		__atomic_store_n(&t->bytes, t->bytes - r->len, __ATOMIC_RELAXED);
	}
	if(t->head == NULL){
		t->tail = &t->head;
	}
	pthread_mutex_unlock(&t->lock);
	*stale_end = NULL;
	while(stale){
		struct fb_tail_rec *next = stale->next;
		free(stale);
		stale = next;
	}
	return r;
}

uint64_t fb_tail_last(struct fb_tail *t)
{
	return __atomic_load_n(&t->last_seq, __ATOMIC_ACQUIRE);
}
