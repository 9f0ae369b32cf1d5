/* flowmq-bridge, both processes: the cloud-to-edge ring (see c2e.h): the writing side (fb_c2e_put
 * and the files of large records) in the link process, the reading side in the broker thread. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bytes.h"
#include "c2e.h"
#include "stage.h" /* fb_file_write(), fb_file_read() */

#define C2E_HEAD 16u
#define C2E_WRAP UINT32_MAX
#define C2E_FILE 1u

static void c2e_file_path(const char *dir, const char *stem, uint64_t seq, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/%s%" PRIu64, dir, stem, seq);
}

int fb_c2e_write_file(const char *dir, const char *stem, uint64_t seq, const void *rec, size_t len)
{
	char path[4096], tmp[4096 + 8];
	int rc;

	/* Written aside and renamed into place: an entry already in the ring for the same seq reads
	 * either the whole old file or the whole new one, never a part. */
	c2e_file_path(dir, stem, seq, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	rc = fb_file_write(tmp, rec, len, false);
	if(rc == 0 && rename(tmp, path) != 0){
		rc = -errno;
		unlink(tmp);
	}
	return rc;
}

int fb_c2e_put(struct fb_c2e *r, const char *dir, const char *stem, uint64_t seq, const void *rec, size_t len)
{
	return fb_c2e_put_kept(r, UINT64_MAX, dir, stem, seq, rec, len);
}

int fb_c2e_put_kept(struct fb_c2e *r, uint64_t kept, const char *dir, const char *stem, uint64_t seq,
		const void *rec, size_t len)
{
	uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	uint32_t flags = 0;
	size_t off, skip = 0, need;

	if(kept < head){
		head = kept;
	}
	if(len > FB_C2E_RING / 2){
		/* Too large for the ring: in a file of its own, the ring carries its seq. */
		flags = C2E_FILE;
	}
	need = C2E_HEAD + (flags == C2E_FILE ? 0 : ((len + 7) & ~(size_t)7));
	off = (size_t)(tail % FB_C2E_RING);
	if(FB_C2E_RING - off < need){
		skip = FB_C2E_RING - off;
	}
	if(tail + skip + need - head > FB_C2E_RING){
		/* No room: checked before the file is written, because a link process started afresh
		 * pushes again what the ring may still hold, and its file (by seq) is then the one an
		 * entry already in the ring reads. */
		return -ENOBUFS;
	}
	if(flags == C2E_FILE){
		int rc = fb_c2e_write_file(dir, stem, seq, rec, len);

		if(rc){
			return rc;
		}
		rec = NULL;
		len = 0;
	}
	if(skip){
		if(skip >= C2E_HEAD){
			fb_put_le32(r->ring + off + 8, C2E_WRAP);
		}
		tail += skip;
		off = 0;
	}
	fb_put_le64(r->ring + off, seq);
	fb_put_le32(r->ring + off + 8, (uint32_t)len);
	fb_put_le32(r->ring + off + 12, flags);
	if(len){
		memcpy(r->ring + off + C2E_HEAD, rec, len);
	}
	atomic_store_explicit(&r->tail, tail + need, memory_order_release);
	atomic_store_explicit(&r->pushed, seq, memory_order_relaxed);
	return 0;
}

int fb_c2e_withdraw(const char *dir, const char *stem, uint64_t seq)
{
	return fb_c2e_write_file(dir, stem, seq, NULL, 0);
}

/* The entry at *HEAD, past the end of the ring that a record did not fit into (*HEAD moves past
 * that end); NULL when the ring holds no more. */
static const uint8_t *entry_at(struct fb_c2e *r, uint64_t *head)
{
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);

	while(*head != tail){
		size_t off = (size_t)(*head % FB_C2E_RING);
		const uint8_t *p = r->ring + off;

		if(FB_C2E_RING - off < C2E_HEAD || fb_get_le32(p + 8) == C2E_WRAP){
			*head += FB_C2E_RING - off;
			continue;
		}
		return p;
	}
	return NULL;
}

int fb_c2e_head_file(struct fb_c2e *r, const char *dir, const char *stem, uint64_t *seq, char *path, size_t cap)
{
	uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
	const uint8_t *p = entry_at(r, &head);

	/* The caller is the writer: the entries from the head to the tail are its own, and nothing
	 * changes them while it looks. */
	if(p == NULL || !(fb_get_le32(p + 12) & C2E_FILE)){
		return 0;
	}
	*seq = fb_get_le64(p);
	c2e_file_path(dir, stem, *seq, path, cap);
	return 1;
}

void fb_c2e_walk(struct fb_c2e *r, uint64_t from, fb_c2e_walk_fn fn, void *ud)
{
	uint64_t pos = from;
	const uint8_t *p;

	/* As in fb_c2e_head_file(): the entries from FROM to the tail are the caller's own. */
	while((p = entry_at(r, &pos)) != NULL){
		pos += C2E_HEAD + ((fb_get_le32(p + 8) + 7) & ~(size_t)7);
		if(fn(ud, fb_get_le64(p), pos)){
			return;
		}
	}
}

int fb_c2e_next(struct fb_c2e *r, struct fb_c2e_reader *rd, const char *dir, const char *stem,
		uint64_t *seq, const uint8_t **rec, size_t *len)
{
	const uint8_t *p = entry_at(r, &rd->head);

	if(p){
		*seq = fb_get_le64(p);
		*len = fb_get_le32(p + 8);
		*rec = p + C2E_HEAD;
		rd->next = rd->head + C2E_HEAD + ((*len + 7) & ~(size_t)7);
		rd->unlink = false;
		rd->err = 0;
		if(fb_get_le32(p + 12) & C2E_FILE){
			c2e_file_path(dir, stem, *seq, rd->path, sizeof(rd->path));
			rd->err = fb_file_read(rd->path, &rd->file, &rd->file_cap, len);
			*rec = rd->err == 0 ? rd->file : NULL;
			rd->unlink = true; /* once consumed: a record not consumed is read again */
		}
		return 1;
	}
	atomic_store_explicit(&r->head, rd->head, memory_order_release);
	return 0;
}

void fb_c2e_consume(struct fb_c2e *r, struct fb_c2e_reader *rd)
{
	if(rd->unlink){
		unlink(rd->path);
		rd->unlink = false;
	}
	rd->head = rd->next;
	atomic_store_explicit(&r->head, rd->head, memory_order_release);
}

size_t fb_c2e_drop(struct fb_c2e *r, struct fb_c2e_reader *rd, const char *dir, const char *stem)
{
	const uint8_t *p;
	size_t n = 0;

	while((p = entry_at(r, &rd->head)) != NULL){
		if(fb_get_le32(p + 12) & C2E_FILE){
			c2e_file_path(dir, stem, fb_get_le64(p), rd->path, sizeof(rd->path));
			unlink(rd->path);
		}
		rd->head += C2E_HEAD + ((fb_get_le32(p + 8) + 7) & ~(size_t)7);
		n++;
	}
	rd->next = rd->head;
	rd->unlink = false;
	rd->err = 0;
	atomic_store_explicit(&r->head, rd->head, memory_order_release);
	return n;
}

void fb_c2e_reader_cleanup(struct fb_c2e_reader *rd)
{
	free(rd->file);
	rd->file = NULL;
	rd->file_cap = 0;
}
