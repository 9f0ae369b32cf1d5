/* libFuzzer target (test/fuzz, runs in the fuzzer process): the staging-file reader.
 *
 * The input becomes a staging file (zero-padded to 4096 bytes, the smallest file that is
 * recovered as it is), which is opened and recovered as after a crash, then followed through a
 * second mapping as the link process does, then reset and written and recovered again. With the
 * first byte odd, the CRCs of the records that the input lays out are made valid first, so the
 * fuzzer reaches past the checksum into lengths, sequence numbers and padding.
 *
 * Checks: every record recovery hands out is one the format says is valid (its header before it
 * names its length and seq, its CRC-32C matches, it lies inside the file), seqs increase, the
 * values are readable to their end; following never crashes; after a reset, exactly the records
 * appended are recovered.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stage.h"

#define MIN_FILE 4096
#define MAX_FILE 65536

static char path[64];

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put32(uint8_t *p, uint32_t v)
{
	for(int i = 0; i < 4; i++){
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

struct seen {
	uint64_t last_seq;
	size_t count;
	size_t bytes;
	size_t file_size;
	uint32_t sum;
};

static void fail(const char *what, uint64_t seq, size_t len)
{
	fprintf(stderr, "%s (seq %llu, length %zu)\n", what, (unsigned long long)seq, len);
	abort();
}

/* A recovered record must be as stage.h lays it out: u32 length, u32 CRC, u64 seq, value. */
static int visit_recovered(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct seen *s = ud;
	const uint8_t *head = (const uint8_t *)val - 16;
	uint8_t meta[12];

	if(seq == 0 || seq <= s->last_seq || len > s->file_size - 16 || get32(head) != len
			|| get64(head + 8) != seq){
		fail("recovered a record that the header before it does not describe", seq, len);
	}
	memcpy(meta, head + 8, 8);
	memcpy(meta + 8, head, 4);
	if(fb_crc32c(fb_crc32c(0, meta, sizeof(meta)), val, len) != get32(head + 4)){
		fail("recovered a record whose CRC does not match", seq, len);
	}
	s->bytes += 16 + ((len + 7) & ~(size_t)7);
	if(s->bytes > s->file_size){
		fail("recovered more bytes than the file holds", seq, len);
	}
	s->last_seq = seq;
	s->count++;
	return 0;
}

/* Followed records: read every byte (a read past the mapping faults). */
static int visit_followed(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct seen *s = ud;
	const uint8_t *v = val;

	for(size_t i = 0; i < len; i++){
		s->sum += v[i];
	}
	s->count++;
	return 0;
}

struct expect {
	uint64_t seq;
	size_t n;
	const uint8_t *vals[8];
	size_t lens[8];
	size_t at;
};

static int visit_expected(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct expect *e = ud;

	if(e->at >= e->n || seq != e->seq + e->at || len != e->lens[e->at]
			|| (len && memcmp(val, e->vals[e->at], len) != 0)){
		fail("after a reset, recovery does not give back exactly what was appended", seq, len);
	}
	e->at++;
	return 0;
}

/* Makes the CRC of each record that BUF lays out from its start valid. */
static void fix_crcs(uint8_t *buf, size_t size)
{
	size_t off = 0, len;
	uint8_t meta[12];

	while(size - off >= 16){
		len = get32(buf + off);
		if(len > size - off - 16){
			break;
		}
		memcpy(meta, buf + off + 8, 8);
		memcpy(meta + 8, buf + off, 4);
		put32(buf + off + 4, fb_crc32c(fb_crc32c(0, meta, sizeof(meta)), buf + off + 16, len));
		off += 16 + ((len + 7) & ~(size_t)7);
		if(off > size){
			break;
		}
	}
}

static char dir_path[64];

/* Leaves nothing behind in /tmp. */
static void cleanup(void)
{
	unlink(path);
	rmdir(dir_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char dir[] = "/tmp/fb-fuzz-stage-XXXXXX";

	if(mkdtemp(dir) == NULL){
		perror("mkdtemp");
		abort();
	}
	snprintf(path, sizeof(path), "%s/stage", dir);
	snprintf(dir_path, sizeof(dir_path), "%s", dir);
	atexit(cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fb_stage *st = NULL, *rd = NULL;
	struct seen rec = { 0 }, fol = { 0 };
	size_t fsize, want_count;
	uint8_t *buf;
	int fd, rc;

	if(size < 1 || size - 1 > MAX_FILE){
		return 0;
	}
	fsize = size - 1 < MIN_FILE ? MIN_FILE : size - 1;
	buf = calloc(1, fsize);
	if(buf == NULL){
		abort();
	}
	memcpy(buf, data + 1, size - 1);
	if(data[0] & 1){
		fix_crcs(buf, fsize);
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if(fd < 0 || write(fd, buf, fsize) != (ssize_t)fsize){
		perror(path);
		abort();
	}
	close(fd);
	free(buf);

	/* The writer's side after a crash: open (configured for another size) and recover. */
	rc = fb_stage_open(path, 8192, &st);
	if(rc != 0){
		fprintf(stderr, "fb_stage_open: %d\n", rc);
		abort();
	}
	rec.file_size = fb_stage_size(st);
	if(rec.file_size != (fsize & ~(size_t)7)){
		fail("an existing file of another size is not taken as it is", 0, rec.file_size);
	}
	struct fb_stage_damage dmg = { 0 };
	if(fb_stage_recover(st, 0, visit_recovered, &rec, &dmg) != 0){
		fail("recovery stopped without a visitor asking it to", 0, 0);
	}
	/* Records are taken past damage (the reader resyncs): what it took and what it skipped
	 * between them never add up to more than the file. */
	if(rec.bytes + dmg.bytes > rec.file_size || (dmg.regions && dmg.first_off >= rec.file_size)){
		fail("recovered and damaged bytes exceed the file", rec.bytes, dmg.bytes);
	}

	/* The reader's side: follow as many records as the input's second byte says were published. */
	want_count = size > 1 ? data[1] % 64 : 0;
	rc = fb_stage_open(path, 8192, &rd);
	if(rc != 0){
		fprintf(stderr, "fb_stage_open (reader): %d\n", rc);
		abort();
	}
	rc = fb_stage_follow(rd, want_count, visit_followed, &fol);
	if((rc != 0 && rc != -EIO) || (rc == 0 && fol.count != want_count) || fb_stage_used(rd) > fb_stage_size(rd)){
		fail("following gave an unexpected result", want_count, fol.count);
	}
	struct seen again = { 0 };
	if(fb_stage_each_from(rd, 0, visit_followed, &again) != 0 || again.count != fol.count
			|| again.sum != fol.sum){
		fail("fb_stage_each_from() differs from what was followed", fol.count, again.count);
	}
	fb_stage_close(rd);

	/* Reset, append, recover: exactly the appended records come back. */
	if(fb_stage_reset(st) != 0 || fb_stage_size(st) != 8192){
		fail("reset", 0, fb_stage_size(st));
	}
	struct expect e = { .seq = 1 + (size > 2 ? data[2] : 0) };
	for(size_t i = 0; i < 8 && i * 97 < size; i++){
		e.vals[i] = data + i * 97;
		e.lens[i] = size - i * 97 < 300 ? size - i * 97 : 300;
		if(fb_stage_append(st, e.seq + i, e.vals[i], e.lens[i]) != 0){
			fail("append to an empty file", e.seq + i, e.lens[i]);
		}
		e.n++;
	}
	fb_stage_close(st);
	st = NULL;
	if(fb_stage_open(path, 8192, &st) != 0 || fb_stage_recover(st, 0, visit_expected, &e, NULL) != 0
			|| e.at != e.n){
		fail("recovering the appended records", e.seq, e.at);
	}
	fb_stage_close(st);
	return 0;
}
