/* flowmq-bridge: the link process's log queue (see logq.h): written by the link process's threads,
 * read by the broker thread. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "logq.h"

/* The ring holds entries of: u32 size (of the whole entry, a multiple of 8), i32 level, u64 wall
 * clock ms, the line and its NUL, padding to 8 bytes. head and tail count bytes and never wrap;
 * the position is the count modulo LOGQ_RING. An entry that does not fit at the end of the ring
 * starts again at its beginning: the rest of the end is skipped (marked LOGQ_WRAP when it has
 * room for the size). A writer killed in the middle of an entry never published it: nothing
 * waits for it. */
#define LOGQ_RING FB_LOGQ_RING
#define LOGQ_ENTRY_HEAD 16u
#define LOGQ_WRAP UINT32_MAX

void fb_logq_init(struct fb_logq *q, struct fb_logq_ring *ring)
{
	q->sh = ring;
	pthread_mutex_init(&q->lock, NULL);
	q->dropped_seen = atomic_load_explicit(&ring->dropped, memory_order_relaxed);
	q->own = NULL;
}

void fb_logq_cleanup(struct fb_logq *q)
{
	pthread_mutex_destroy(&q->lock);
}

void fb_logq_log(void *ud, int level, const char *line)
{
	fb_logq_push(ud, level, line);
}

int fb_logq_new(struct fb_logq **out)
{
	struct fb_logq *q = calloc(1, sizeof(*q));
	void *mem;

	*out = NULL;
	if(q == NULL){
		return -ENOMEM;
	}
	mem = mmap(NULL, sizeof(struct fb_logq_ring), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if(mem == MAP_FAILED){
		int rc = -errno;
		free(q);
		return rc;
	}
	fb_logq_init(q, mem);
	q->own = mem;
	*out = q;
	return 0;
}

void fb_logq_free(struct fb_logq *q)
{
	if(q == NULL){
		return;
	}
	if(q->own){
		munmap(q->own, sizeof(struct fb_logq_ring));
	}
	fb_logq_cleanup(q);
	free(q);
}

static uint64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void fb_logq_push(struct fb_logq *q, int level, const char *line)
{
	struct fb_logq_ring *sh;
	size_t len, need, off, skip = 0;
	uint64_t head, tail, ms = wall_ms();
	uint32_t size;
	int32_t lv = level;

	if(q == NULL || line == NULL){
		return;
	}
	sh = q->sh;
	len = strnlen(line, FB_LOGQ_LINE_MAX);
	need = (LOGQ_ENTRY_HEAD + len + 1 + 7) & ~(size_t)7;
	pthread_mutex_lock(&q->lock);
	head = atomic_load_explicit(&sh->head, memory_order_acquire);
	tail = atomic_load_explicit(&sh->tail, memory_order_relaxed);
	off = (size_t)(tail % LOGQ_RING);
	if(LOGQ_RING - off < need){
		skip = LOGQ_RING - off;
	}
	if(tail + skip + need - head > LOGQ_RING){
		atomic_fetch_add_explicit(&sh->dropped, 1, memory_order_relaxed);
		pthread_mutex_unlock(&q->lock);
		return;
	}
	if(skip){
		if(skip >= sizeof(size)){
			size = LOGQ_WRAP;
			memcpy(sh->ring + off, &size, sizeof(size));
		}
		tail += skip;
		off = 0;
	}
	size = (uint32_t)need;
	memcpy(sh->ring + off, &size, 4);
	memcpy(sh->ring + off + 4, &lv, 4);
	memcpy(sh->ring + off + 8, &ms, 8);
	memcpy(sh->ring + off + LOGQ_ENTRY_HEAD, line, len);
	memset(sh->ring + off + LOGQ_ENTRY_HEAD + len, 0, need - LOGQ_ENTRY_HEAD - len);
	atomic_store_explicit(&sh->tail, tail + need, memory_order_release);
	pthread_mutex_unlock(&q->lock);
}

size_t fb_logq_drain(struct fb_logq *q, const struct fb_logger *to, uint64_t now_ms)
{
	struct fb_logq_ring *sh;
	uint64_t head, tail, dropped;
	size_t n = 0;

	if(q == NULL){
		return 0;
	}
	sh = q->sh;
	head = atomic_load_explicit(&sh->head, memory_order_relaxed);
	tail = atomic_load_explicit(&sh->tail, memory_order_acquire);
	while(head != tail){
		size_t off = (size_t)(head % LOGQ_RING), textlen;
		char line[FB_LOGQ_LINE_MAX + 64];
		uint32_t size;
		int32_t lv;
		uint64_t ms;

		if(LOGQ_RING - off < LOGQ_ENTRY_HEAD){
			head += LOGQ_RING - off;
			continue;
		}
		memcpy(&size, sh->ring + off, 4);
		if(size == LOGQ_WRAP){
			head += LOGQ_RING - off;
			continue;
		}
		if(size <= LOGQ_ENTRY_HEAD || size % 8 || size > LOGQ_RING - off || size > tail - head){
			head = tail; /* not written by fb_logq_push(): skip everything */
			break;
		}
		memcpy(&lv, sh->ring + off + 4, 4);
		memcpy(&ms, sh->ring + off + 8, 8);
		textlen = strnlen((const char *)sh->ring + off + LOGQ_ENTRY_HEAD, size - LOGQ_ENTRY_HEAD);
		if(textlen > FB_LOGQ_LINE_MAX){
			textlen = FB_LOGQ_LINE_MAX;
		}
		memcpy(line, sh->ring + off + LOGQ_ENTRY_HEAD, textlen);
		if(now_ms >= ms + FB_LOGQ_LATE_MS){
			snprintf(line + textlen, sizeof(line) - textlen, " (logged by the link process %llu s earlier)",
					(unsigned long long)((now_ms - ms) / 1000));
		}else{
			line[textlen] = '\0';
		}
		head += size;
		/* Released before the line is handed over: the writer may reuse the room at once. */
		atomic_store_explicit(&sh->head, head, memory_order_release);
		if(to && to->fn){
			to->fn(to->ud, lv, line);
		}
		n++;
	}
	atomic_store_explicit(&sh->head, head, memory_order_release);
	dropped = atomic_load_explicit(&sh->dropped, memory_order_relaxed);
	if(dropped != q->dropped_seen){
		fb_log(to, MOSQ_LOG_WARNING, "%llu log lines of the link process were lost (its log queue was full)",
				(unsigned long long)(dropped - q->dropped_seen));
		q->dropped_seen = dropped;
	}
	return n;
}
