/* flowmq-bridge: the staging files in front of the spool's "out" queue (see stage.h). Written by the broker
 * thread, read by the link process. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bytes.h"
#include "stage.h"

#define REC_HEAD 16u
#define ALIGN8(n) (((n) + 7u) & ~(size_t)7u)

struct fb_stage {
	int fd;           /* -1: a copy in memory (fb_stage_open_copy()) */
	uint8_t *map;
	size_t size;      /* as mapped */
	size_t want;      /* as configured */
	size_t used;      /* bytes of records from the start */
	size_t count;     /* records in them */
};

/* ---- CRC-32C ---- */

/* The table path runs everywhere; x86-64 with SSE 4.2 and ARMv8 with the CRC extension use their
 * CRC-32C instructions, chosen once at run time (the build targets the baseline of each). */
#if defined(__x86_64__)
#define CRC_HW_X86 1
#elif defined(__aarch64__) && defined(__linux__)
#define CRC_HW_ARM 1
#include <arm_acle.h>
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static bool crc_hw;

static void crc_init(void)
{
	uint32_t c;
	int i, k;

	for(i = 0; i < 256; i++){
		c = (uint32_t)i;
		for(k = 0; k < 8; k++){
			c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
		}
		crc_table[i] = c;
	}
#if defined(CRC_HW_X86)
	__builtin_cpu_init();
	crc_hw = __builtin_cpu_supports("sse4.2");
#elif defined(CRC_HW_ARM)
	crc_hw = (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
#endif
}

#if defined(CRC_HW_X86)
__attribute__((target("sse4.2")))
static uint32_t crc_hw_run(uint32_t crc, const uint8_t *p, size_t len)
{
	uint64_t c = crc;
	uint64_t v;

	while(len >= 8){
		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
		p += 8;
		len -= 8;
	}
	while(len--){
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	}
	return (uint32_t)c;
}
#elif defined(CRC_HW_ARM)
__attribute__((target("+crc")))
static uint32_t crc_hw_run(uint32_t crc, const uint8_t *p, size_t len)
{
	uint64_t v;

	while(len >= 8){
		memcpy(&v, p, 8);
		crc = __crc32cd(crc, v);
		p += 8;
		len -= 8;
	}
	while(len--){
		crc = __crc32cb(crc, *p++);
	}
	return crc;
}
#endif

uint32_t fb_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	pthread_once(&crc_once, crc_init);
	crc = ~crc;
#if defined(CRC_HW_X86) || defined(CRC_HW_ARM)
	if(crc_hw){
		return ~crc_hw_run(crc, p, len);
	}
#endif
	while(len--){
		crc = crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
	}
	return ~crc;
}

/* ---- records ---- */

/* The CRC of a record: over its seq and length (as stored) and its value. */
static uint32_t rec_crc(const uint8_t *head, const void *val, size_t len)
{
	uint8_t meta[12];

	memcpy(meta, head + 8, 8);
	memcpy(meta + 8, head, 4);
	return fb_crc32c(fb_crc32c(0, meta, sizeof(meta)), val, len);
}

/* The record at OFF: its size in the file (header, value, padding) when its header is plausible
 * and its CRC matches, else 0. */
static size_t rec_valid(const struct fb_stage *st, size_t off, uint64_t *seq, size_t *len)
{
	const uint8_t *p = st->map + off;
	size_t need;

	*len = fb_get_le32(p);
	*seq = fb_get_le64(p + 8);
	if(*seq == 0 || *len > st->size - off - REC_HEAD){
		return 0;
	}
	need = REC_HEAD + ALIGN8(*len);
	if(need > st->size - off || fb_get_le32(p + 4) != rec_crc(p, p + REC_HEAD, *len)){
		return 0;
	}
	return need;
}

/* Walks the whole file, calling FN for each valid record with a seq of at least LO and above the
 * previous one's. Records are 8-byte aligned from offset 0, so past anything that is not such a
 * record (damage, a cleared first record, the torn or older records behind the current fill) the
 * walk goes on 8 bytes further. Bytes skipped between two records taken are damage (DMG). Returns
 * FN's non-zero value, else 0. */
static int walk(const struct fb_stage *st, uint64_t lo, fb_stage_visit_fn fn, void *ud,
		struct fb_stage_damage *dmg)
{
	const uint8_t *base = st->map;
	size_t off = 0, len, need, skip_from = 0;
	uint64_t seq, last = 0;
	bool taken = false, skipping = false;
	int rc;

	while(st->size - off >= REC_HEAD){
		need = rec_valid(st, off, &seq, &len);
		if(need == 0){
			if(!skipping){
				skipping = true;
				skip_from = off;
			}
			off += 8;
			continue;
		}
		if(seq <= last || seq < lo){
			/* An older record (behind a cleared first record or the current fill): not damage,
			 * and nothing to take. */
			if(!skipping){
				skipping = true;
				skip_from = off;
			}
			off += need;
			continue;
		}
		if(skipping && taken && dmg){
			if(dmg->regions++ == 0){
				dmg->first_off = skip_from;
			}
			dmg->bytes += off - skip_from;
		}
		skipping = false;
		if((rc = fn(ud, seq, base + off + REC_HEAD, len)) != 0){
			return rc;
		}
		taken = true;
		last = seq;
		off += need;
	}
	return 0;
}

/* ---- the file ---- */

static int map_file(struct fb_stage *st, size_t size)
{
	st->map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, st->fd, 0);
	if(st->map == MAP_FAILED){
		st->map = NULL;
		return -errno;
	}
	st->size = size;
	st->used = 0;
	st->count = 0;
	return 0;
}

/* Gives the file SIZE zero bytes, with its disk blocks allocated: a store through the mapping
 * into a hole would need a block, and a full disk would then kill the broker with SIGBUS. The
 * blocks are allocated as unwritten extents where the filesystem can: nothing is written. */
static int size_file(int fd, size_t size)
{
	int rc;

	if(ftruncate(fd, 0) != 0 || ftruncate(fd, (off_t)size) != 0){
		return -errno;
	}
	rc = posix_fallocate(fd, 0, (off_t)size);
	return rc ? -rc : 0;
}

int fb_stage_open(const char *path, size_t size, struct fb_stage **out)
{
	struct fb_stage *st;
	struct stat sb;
	size_t have;
	int rc;

	*out = NULL;
	if(size < 4096 || size % 8 || size > SIZE_MAX / 2){
		return -EINVAL;
	}
	st = calloc(1, sizeof(*st));
	if(st == NULL){
		return -ENOMEM;
	}
	st->want = size;
	st->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if(st->fd < 0){
		rc = -errno;
		free(st);
		return rc;
	}
	if(fstat(st->fd, &sb) != 0){
		rc = -errno;
		goto fail;
	}
	have = (size_t)sb.st_size & ~(size_t)7;
	if(have < 4096){
		/* New (or too short to hold anything): the configured size, zero-filled. */
		rc = size_file(st->fd, size);
		if(rc){
			goto fail;
		}
		have = size;
	}else if((rc = posix_fallocate(st->fd, 0, (off_t)have)) != 0){
		rc = -rc;
		goto fail;
	}
	rc = map_file(st, have);
	if(rc){
		goto fail;
	}
	*out = st;
	return 0;
fail:
	close(st->fd);
	free(st);
	return rc;
}

void fb_stage_close(struct fb_stage *st)
{
	if(st == NULL){
		return;
	}
	if(st->fd < 0){
		free(st->map);
	}else{
		if(st->map){
			munmap(st->map, st->size);
		}
		close(st->fd);
	}
	free(st);
}

int fb_stage_open_copy(const char *path, struct fb_stage **out)
{
	struct fb_stage *st;
	struct stat sb;
	size_t got = 0;
	ssize_t n;
	int fd, rc = 0;

	*out = NULL;
	st = calloc(1, sizeof(*st));
	if(st == NULL){
		return -ENOMEM;
	}
	st->fd = -1;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if(fd < 0){
		rc = errno == ENOENT ? 0 : -errno; /* a missing file holds nothing */
		goto out;
	}
	if(fstat(fd, &sb) != 0){
		rc = -errno;
		goto out;
	}
	if(!S_ISREG(sb.st_mode) || (uint64_t)sb.st_size > SIZE_MAX / 2){
		rc = -EINVAL;
		goto out;
	}
	st->map = malloc((size_t)sb.st_size + 1);
	if(st->map == NULL){
		rc = -ENOMEM;
		goto out;
	}
	/* Read, not mapped: a writer that truncates the file meanwhile cannot fault this process,
	 * and the copy stays as it was read. */
	while(got < (size_t)sb.st_size){
		n = pread(fd, st->map + got, (size_t)sb.st_size - got, (off_t)got);
		if(n < 0 && errno == EINTR){
			continue;
		}
		if(n < 0){
			rc = -errno;
			goto out;
		}
		if(n == 0){
			break; /* made shorter meanwhile: what was read */
		}
		got += (size_t)n;
	}
	st->size = got & ~(size_t)7;
	st->want = st->size;
out:
	if(fd >= 0){
		close(fd);
	}
	if(rc){
		fb_stage_close(st);
		return rc;
	}
	*out = st;
	return 0;
}

size_t fb_stage_max_value(const struct fb_stage *st)
{
	return st->size - REC_HEAD;
}

int fb_stage_recover(struct fb_stage *st, uint64_t lo, fb_stage_visit_fn fn, void *ud,
		struct fb_stage_damage *dmg)
{
	if(dmg){
		memset(dmg, 0, sizeof(*dmg));
	}
	return walk(st, lo, fn, ud, dmg);
}

int fb_stage_reset(struct fb_stage *st)
{
	int rc;

	/* All of it, not only the first record: after a restart sequences may begin again at 1, and
	 * an old record that happens to follow a new one with the next seq must not come back.
	 * Truncating to nothing and back zeroes it without writing. */
	munmap(st->map, st->size);
	st->map = NULL;
	rc = size_file(st->fd, st->want);
	if(rc){
		return rc;
	}
	rc = map_file(st, st->want);
	if(rc){
		return rc;
	}
	st->used = 0;
	st->count = 0;
	return 0;
}

int fb_stage_append(struct fb_stage *st, uint64_t seq, const void *val, size_t len)
{
	size_t need;
	uint8_t *p;

	if(len > fb_stage_max_value(st)){
		return -E2BIG;
	}
	need = REC_HEAD + ALIGN8(len);
	if(need > st->size - st->used){
		return -ENOSPC;
	}
	p = st->map + st->used;
	fb_put_le32(p, (uint32_t)len);
	fb_put_le64(p + 8, seq);
	if(len){
		memcpy(p + REC_HEAD, val, len);
	}
	fb_put_le32(p + 4, rec_crc(p, p + REC_HEAD, len));
	st->used += need;
	st->count++;
	return 0;
}

size_t fb_stage_count(const struct fb_stage *st)
{
	return st->count;
}

void fb_stage_clear(struct fb_stage *st)
{
	if(st->used){
		memset(st->map, 0, REC_HEAD);
	}
	st->used = 0;
	st->count = 0;
}

bool fb_stage_cleared(const struct fb_stage *st)
{
	static const uint8_t zero[REC_HEAD];

	return st->size >= REC_HEAD && memcmp(st->map, zero, REC_HEAD) == 0;
}

int fb_stage_follow(struct fb_stage *st, size_t count, fb_stage_visit_fn fn, void *ud)
{
	const uint8_t *p;
	size_t len, need;
	uint64_t seq;
	int rc;

	while(st->count < count){
		if(st->size - st->used < REC_HEAD){
			return -EIO;
		}
		p = st->map + st->used;
		len = fb_get_le32(p);
		seq = fb_get_le64(p + 8);
		need = REC_HEAD + ALIGN8(len);
		if(len > st->size - st->used - REC_HEAD || need > st->size - st->used || seq == 0){
			return -EIO; /* the writer published a record it did not write: cannot happen */
		}
		st->used += need;
		st->count++;
		if(fn && (rc = fn(ud, seq, p + REC_HEAD, len)) != 0){
			return rc;
		}
	}
	return 0;
}

int fb_stage_sync(struct fb_stage *st)
{
	return fdatasync(st->fd) == 0 ? 0 : -errno;
}

size_t fb_stage_used(const struct fb_stage *st)
{
	return st->used;
}

size_t fb_stage_size(const struct fb_stage *st)
{
	return st->size;
}

int fb_stage_each_from(struct fb_stage *st, size_t off, fb_stage_visit_fn fn, void *ud)
{
	const uint8_t *p;
	size_t len;
	int rc;

	while(off < st->used){
		p = st->map + off;
		len = fb_get_le32(p);
		rc = fn(ud, fb_get_le64(p + 8), p + REC_HEAD, len);
		if(rc){
			return rc;
		}
		off += REC_HEAD + ALIGN8(len);
	}
	return 0;
}

int fb_file_write(const char *path, const void *buf, size_t len, bool sync)
{
	const uint8_t *p = buf;
	int fd, rc = 0;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if(fd < 0){
		return -errno;
	}
	while(len > 0){
		ssize_t n = write(fd, p, len);
		if(n < 0){
			if(errno == EINTR){
				continue;
			}
			rc = -errno;
			break;
		}
		p += n;
		len -= (size_t)n;
	}
	if(rc == 0 && sync && fdatasync(fd) != 0){
		rc = -errno;
	}
	close(fd);
	if(rc){
		unlink(path);
	}
	return rc;
}

int fb_file_read(const char *path, uint8_t **buf, size_t *cap, size_t *len)
{
	struct stat sb;
	size_t got = 0;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if(fd < 0){
		return -errno;
	}
	if(fstat(fd, &sb) != 0){
		rc = -errno;
		goto out;
	}
	if((size_t)sb.st_size > *cap || *buf == NULL){
		uint8_t *nb = realloc(*buf, (size_t)sb.st_size + 1);
		if(nb == NULL){
			rc = -ENOMEM;
			goto out;
		}
		*buf = nb;
		*cap = (size_t)sb.st_size + 1;
	}
	while(got < (size_t)sb.st_size){
		ssize_t n = read(fd, *buf + got, (size_t)sb.st_size - got);
		if(n <= 0){
			if(n < 0 && errno == EINTR){
				continue;
			}
			rc = n < 0 ? -errno : -EIO;
			break;
		}
		got += (size_t)n;
	}
	*len = got;
out:
	close(fd);
	return rc;
}
