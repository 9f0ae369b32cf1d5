/* flowmq-bridge: the in-memory tail of spool "out" (see tail.h), a ring of records; link process,
 * worker thread. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tail.h"

#define HEAD_LEN sizeof(struct fb_tail_rec)
#define WRAP UINT32_MAX

static size_t rec_size(size_t len)
{
	return (HEAD_LEN + len + 7) & ~(size_t)7;
}

void fb_tail_init(struct fb_tail *t, size_t budget, uint64_t last_seq)
{
	memset(t, 0, sizeof(*t));
	t->budget = budget & ~(size_t)7;
	t->last_seq = last_seq;
}

void fb_tail_cleanup(struct fb_tail *t)
{
	free(t->ring);
	t->ring = NULL;
}

/* Room for NEED contiguous bytes at t->tail, wrapping to the start if that is where they are.
 * Returns the offset or -1. */
static long reserve(struct fb_tail *t, size_t need)
{
	size_t end;

	if(t->used == 0){
		t->head = t->tail = 0; /* empty: start over at the beginning */
	}else if(t->tail == t->head){
		return -1; /* full */
	}
	if(t->tail >= t->head){
		end = t->budget - t->tail;
		if(end >= need){
			return (long)t->tail;
		}
		if(t->head < need){
			return -1;
		}
		/* Skip the end of the ring: marked, unless too short to hold a mark. */
		if(end >= HEAD_LEN){
			((struct fb_tail_rec *)(t->ring + t->tail))->len = WRAP;
		}
		t->used += end;
		t->tail = 0;
		return 0;
	}
	return t->head - t->tail >= need ? (long)t->tail : -1;
}

int fb_tail_push(struct fb_tail *t, uint64_t seq, const void *val, size_t len)
{
	struct fb_tail_rec *r;
	size_t need = rec_size(len);
	long off;

	t->last_seq = seq; /* in the spool already, queued here or not */
	if(len >= WRAP || need > t->budget / 2){
		return -ENOBUFS;
	}
	if(t->ring == NULL && (t->ring = malloc(t->budget)) == NULL){
		return -ENOBUFS;
	}
	off = reserve(t, need);
	if(off < 0){
		return -ENOBUFS;
	}
	r = (struct fb_tail_rec *)(t->ring + off);
	r->seq = seq;
	r->len = (uint32_t)len;
	memcpy(r->val, val, len);
	t->tail = (size_t)off + need;
	if(t->tail == t->budget){
		t->tail = 0;
	}
	t->used += need;
	return 0;
}

/* Moves t->head past a skipped end of the ring. With t->used > 0. */
static void skip_end(struct fb_tail *t)
{
	size_t end = t->budget - t->head;

	if(end < HEAD_LEN || ((struct fb_tail_rec *)(t->ring + t->head))->len == WRAP){
		t->used -= end;
		t->head = 0;
	}
}

static void drop_head(struct fb_tail *t, size_t n)
{
	t->head += n;
	if(t->head == t->budget){
		t->head = 0;
	}
	t->used -= n;
}

struct fb_tail_rec *fb_tail_take_next(struct fb_tail *t, uint64_t upto)
{
	struct fb_tail_rec *r = NULL;

	while(t->used > 0 && t->taken == 0){
		skip_end(t);
		if(t->used == 0){
			break;
		}
		r = (struct fb_tail_rec *)(t->ring + t->head);
		if(r->seq > upto){
			if(r->seq == upto + 1){
				t->taken = rec_size(r->len);
			}else{
				r = NULL;
			}
			break;
		}
		drop_head(t, rec_size(r->len)); /* sent already, from the spool */
		r = NULL;
	}
	return r;
}

struct fb_tail_rec *fb_tail_peek(struct fb_tail *t)
{
	if(t->used == 0 || t->taken){
		return NULL;
	}
	skip_end(t);
	if(t->used == 0){
		return NULL;
	}
	return (struct fb_tail_rec *)(t->ring + t->head);
}

void fb_tail_drop(struct fb_tail *t)
{
	struct fb_tail_rec *r = fb_tail_peek(t);

	if(r){
		drop_head(t, rec_size(r->len));
	}
}

void fb_tail_release(struct fb_tail *t)
{
	if(t->taken){
		drop_head(t, t->taken);
		t->taken = 0;
	}
}

uint64_t fb_tail_last(struct fb_tail *t)
{
	return t->last_seq;
}
