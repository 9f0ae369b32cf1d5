/* Unit tests of plugin/ipc/stage.c: the staging file in front of the spool's "out" queue. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stage.h"

#define SIZE 8192

static char tmpdir[256];
static char path[512];

static void setup(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "%s/test-stage-XXXXXX",
			getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(path, sizeof(path), "%s/stage", tmpdir);
}

static void teardown(void)
{
	unlink(path);
	rmdir(tmpdir);
}

/* Everything a walk visits. */
struct seen {
	size_t n;
	uint64_t seqs[1024];
	size_t lens[1024];
	int values_ok; /* every value is value_of(seq, len) */
	size_t stop_at; /* return 7 from the visitor at this record (1-based); 0: never */
};

static void value_of(uint8_t *buf, uint64_t seq, size_t len)
{
	for(size_t i = 0; i < len; i++){
		buf[i] = (uint8_t)(seq * 31 + i);
	}
}

static int visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct seen *sn = ud;
	uint8_t expect[4096];

	ck_assert_uint_lt(sn->n, 1024);
	ck_assert_uint_le(len, sizeof(expect));
	value_of(expect, seq, len);
	if(memcmp(expect, val, len) != 0){
		sn->values_ok = 0;
	}
	sn->seqs[sn->n] = seq;
	sn->lens[sn->n] = len;
	sn->n++;
	return sn->stop_at && sn->n == sn->stop_at ? 7 : 0;
}

static struct fb_stage *open_stage(void)
{
	struct fb_stage *st = NULL;

	ck_assert_int_eq(fb_stage_open(path, SIZE, &st), 0);
	ck_assert_ptr_nonnull(st);
	return st;
}

static void append(struct fb_stage *st, uint64_t seq, size_t len)
{
	uint8_t buf[4096];

	value_of(buf, seq, len);
	ck_assert_int_eq(fb_stage_append(st, seq, buf, len), 0);
}

START_TEST(crc32c_matches_the_standard_check_value)
{
	/* The CRC-32C check value of "123456789" (RFC 3720, iSCSI). */
	ck_assert_uint_eq(fb_crc32c(0, "123456789", 9), 0xE3069283u);
	ck_assert_uint_eq(fb_crc32c(0, "", 0), 0);
	/* In pieces, continuing from the previous value. */
	ck_assert_uint_eq(fb_crc32c(fb_crc32c(0, "12345", 5), "6789", 4), 0xE3069283u);
}
END_TEST

/* Bit by bit, as the polynomial defines it: the reference for every path of fb_crc32c(). */
static uint32_t crc32c_bitwise(uint32_t crc, const uint8_t *p, size_t len)
{
	crc = ~crc;
	while(len--){
		crc ^= *p++;
		for(int k = 0; k < 8; k++){
			crc = crc & 1 ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
		}
	}
	return ~crc;
}

START_TEST(crc32c_matches_the_bitwise_definition_at_every_length_and_alignment)
{
	uint8_t buf[600];
	uint32_t x = 12345;

	for(size_t i = 0; i < sizeof(buf); i++){
		x = x * 1103515245u + 12345u;
		buf[i] = (uint8_t)(x >> 16);
	}
	/* Lengths around the 8-byte steps of the instruction paths, from odd addresses too. */
	for(size_t off = 0; off < 8; off++){
		for(size_t len = 0; len <= 70; len++){
			ck_assert_uint_eq(fb_crc32c(0, buf + off, len), crc32c_bitwise(0, buf + off, len));
			ck_assert_uint_eq(fb_crc32c(0xDEADBEEFu, buf + off, len),
					crc32c_bitwise(0xDEADBEEFu, buf + off, len));
		}
	}
	ck_assert_uint_eq(fb_crc32c(0, buf, sizeof(buf)), crc32c_bitwise(0, buf, sizeof(buf)));
}
END_TEST

START_TEST(appended_records_come_back_in_order_with_exact_bytes)
{
	struct fb_stage *st = open_stage();
	struct seen sn = { .values_ok = 1 };
	struct stat sb;

	/* The whole file has its disk blocks: no store through the mapping can hit a full disk. */
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(sb.st_size, SIZE);
	ck_assert_int_ge((long long)sb.st_blocks * 512, SIZE);

	ck_assert_uint_eq(fb_stage_count(st), 0);
	append(st, 41, 100);
	append(st, 42, 0);
	size_t after42 = fb_stage_used(st);
	append(st, 43, 7);
	ck_assert_uint_eq(fb_stage_count(st), 3);
	ck_assert_int_eq(fb_stage_each_from(st, 0, visit, &sn), 0);
	ck_assert_uint_eq(sn.n, 3);
	ck_assert_uint_eq(sn.seqs[0], 41);
	ck_assert_uint_eq(sn.seqs[2], 43);
	ck_assert_uint_eq(sn.lens[0], 100);
	ck_assert_uint_eq(sn.lens[1], 0);
	ck_assert_uint_eq(sn.lens[2], 7);
	ck_assert(sn.values_ok);

	/* From a record's offset on: that record and the ones after it. */
	memset(&sn, 0, sizeof(sn));
	ck_assert_uint_eq(after42, 16 + 104 + 16);
	ck_assert_int_eq(fb_stage_each_from(st, after42, visit, &sn), 0);
	ck_assert_uint_eq(sn.n, 1);
	ck_assert_uint_eq(sn.seqs[0], 43);

	/* The visitor's non-zero value stops the walk and comes back. */
	memset(&sn, 0, sizeof(sn));
	sn.stop_at = 2;
	ck_assert_int_eq(fb_stage_each_from(st, 0, visit, &sn), 7);
	ck_assert_uint_eq(sn.n, 2);

	/* Cleared: nothing to visit, and the next record starts over at the beginning. */
	fb_stage_clear(st);
	ck_assert_uint_eq(fb_stage_count(st), 0);
	memset(&sn, 0, sizeof(sn));
	ck_assert_int_eq(fb_stage_each_from(st, 0, visit, &sn), 0);
	ck_assert_uint_eq(sn.n, 0);
	append(st, 44, 10);
	ck_assert_uint_eq(fb_stage_used(st), 16 + 16);
	ck_assert_int_eq(fb_stage_each_from(st, 0, visit, &sn), 0);
	ck_assert_uint_eq(sn.n, 1);
	ck_assert_uint_eq(sn.seqs[0], 44);
	fb_stage_close(st);
}
END_TEST

START_TEST(records_survive_a_close_without_clear)
{
	struct fb_stage *st = open_stage();
	struct seen sn = { .values_ok = 1 };

	for(uint64_t i = 1; i <= 20; i++){
		append(st, 100 + i, (size_t)(i * 13));
	}
	fb_stage_close(st); /* as after kill -9: the mapping's pages are in the file */

	st = open_stage();
	ck_assert_int_eq(fb_stage_recover(st, 0, visit, &sn, NULL), 0);
	ck_assert_uint_eq(sn.n, 20);
	for(size_t i = 0; i < 20; i++){
		ck_assert_uint_eq(sn.seqs[i], 101 + i);
		ck_assert_uint_eq(sn.lens[i], (i + 1) * 13);
	}
	ck_assert(sn.values_ok);

	/* After a reset nothing comes back. */
	ck_assert_int_eq(fb_stage_reset(st), 0);
	fb_stage_close(st);
	st = open_stage();
	memset(&sn, 0, sizeof(sn));
	ck_assert_int_eq(fb_stage_recover(st, 0, visit, &sn, NULL), 0);
	ck_assert_uint_eq(sn.n, 0);
	fb_stage_close(st);
}
END_TEST

/* fb_stage_clear() zeroes the first record only: the old records behind it are still valid, and
 * recovery tells them apart by seq (at least the lower bound, the first seq not settled, and above
 * the record before). */
START_TEST(a_cleared_file_recovers_nothing_though_old_records_follow)
{
	struct fb_stage *st = open_stage();
	struct seen sn = { .values_ok = 1 };
	struct fb_stage_damage dmg;

	for(uint64_t i = 1; i <= 10; i++){
		append(st, i, 50);
	}
	fb_stage_clear(st);
	fb_stage_close(st);
	st = open_stage();
	ck_assert_int_eq(fb_stage_recover(st, 11, visit, &sn, &dmg), 0);
	ck_assert_uint_eq(sn.n, 0);
	ck_assert_uint_eq(dmg.regions, 0);

	/* New records over the old ones: the old ones behind them have lower seqs. */
	ck_assert_int_eq(fb_stage_reset(st), 0);
	for(uint64_t i = 1; i <= 10; i++){
		append(st, 500 + i, 50);
	}
	fb_stage_clear(st);
	append(st, 600, 50);
	append(st, 601, 50);
	fb_stage_close(st);
	st = open_stage();
	memset(&sn, 0, sizeof(sn));
	ck_assert_int_eq(fb_stage_recover(st, 0, visit, &sn, &dmg), 0);
	ck_assert_uint_eq(sn.n, 2);
	ck_assert_uint_eq(sn.seqs[0], 600);
	ck_assert_uint_eq(sn.seqs[1], 601);
	ck_assert_uint_eq(dmg.regions, 0);
	fb_stage_close(st);
}
END_TEST

static void flip(off_t off)
{
	uint8_t byte;
	int fd = open(path, O_RDWR);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, &byte, 1, off), 1);
	byte ^= 0x40;
	ck_assert_int_eq(pwrite(fd, &byte, 1, off), 1);
	close(fd);
}

/* Damage costs only the records it hits: recovery goes on with the next valid record. */
START_TEST(a_damaged_record_is_skipped_and_the_rest_recovered)
{
	struct fb_stage *st = open_stage();
	struct seen sn = { .values_ok = 1 };
	struct fb_stage_damage dmg;

	append(st, 1, 24); /* 16 + 24 bytes */
	append(st, 2, 24);
	append(st, 3, 24);
	fb_stage_close(st);

	/* One flipped byte in the value of record 2. */
	flip(40 + 16 + 5);
	st = open_stage();
	ck_assert_int_eq(fb_stage_recover(st, 0, visit, &sn, &dmg), 0);
	ck_assert_uint_eq(sn.n, 2);
	ck_assert_uint_eq(sn.seqs[0], 1);
	ck_assert_uint_eq(sn.seqs[1], 3);
	ck_assert(sn.values_ok);
	ck_assert_uint_eq(dmg.regions, 1);
	ck_assert_uint_eq(dmg.first_off, 40);
	ck_assert_uint_eq(dmg.bytes, 40);
	fb_stage_close(st);
}
END_TEST

/* A damaged length sends a strict reader anywhere; the walk finds the next record by its own
 * header and CRC. Damage at the start and several damaged stretches, with records of varied
 * sizes. */
START_TEST(damaged_lengths_and_first_records_resync)
{
	struct fb_stage *st = open_stage();
	struct seen sn = { .values_ok = 1 };
	struct fb_stage_damage dmg;
	size_t off[41];
	uint64_t seq;

	for(seq = 1; seq <= 40; seq++){
		off[seq] = fb_stage_used(st);
		append(st, 100 + seq, (size_t)(seq * 11 % 97));
	}
	fb_stage_close(st);
	flip((off_t)off[1] + 8);          /* record 101: its seq */
	flip((off_t)off[10] + 2);         /* record 110: its length, now some 4 MiB */
	flip((off_t)off[11] + 4);         /* record 111: its CRC */
	flip((off_t)off[25] + 16);        /* record 125: its value (it has one: 25 * 11 % 97 = 81) */

	st = open_stage();
	ck_assert_int_eq(fb_stage_recover(st, 0, visit, &sn, &dmg), 0);
	ck_assert_uint_eq(sn.n, 36);
	ck_assert(sn.values_ok);
	for(size_t i = 0, want = 102; i < sn.n; i++, want++){
		while(want == 110 || want == 111 || want == 125){
			want++;
		}
		ck_assert_uint_eq(sn.seqs[i], want);
	}
	/* The damage before the first record taken is not between two records: not counted here
	 * (the caller sees the seq gap from what it expected). */
	ck_assert_uint_eq(dmg.regions, 2);
	ck_assert_uint_eq(dmg.first_off, off[10]);
	ck_assert_uint_eq(dmg.bytes, off[12] - off[10] + off[26] - off[25]);

	/* A lower bound above them all: nothing. */
	memset(&sn, 0, sizeof(sn));
	ck_assert_int_eq(fb_stage_recover(st, 141, visit, &sn, NULL), 0);
	ck_assert_uint_eq(sn.n, 0);
	fb_stage_close(st);
}
END_TEST

START_TEST(a_full_file_refuses_and_too_large_values_are_e2big)
{
	struct fb_stage *st = open_stage();
	uint8_t buf[SIZE];
	uint64_t seq = 1;

	memset(buf, 'x', sizeof(buf));
	ck_assert_uint_eq(fb_stage_max_value(st), SIZE - 16);
	ck_assert_int_eq(fb_stage_append(st, 1, buf, SIZE - 15), -E2BIG);
	/* 1,000-byte values take 1,016 bytes: eight fit into 8,192. */
	while(fb_stage_append(st, seq, buf, 1000) == 0){
		seq++;
	}
	ck_assert_uint_eq(seq - 1, 8);
	ck_assert_int_eq(fb_stage_append(st, seq, buf, 1000), -ENOSPC);
	ck_assert_uint_eq(fb_stage_count(st), 8);
	fb_stage_clear(st);
	ck_assert_int_eq(fb_stage_append(st, seq, buf, SIZE - 16), 0);
	ck_assert_int_eq(fb_stage_append(st, seq + 1, buf, 0), -ENOSPC);
	fb_stage_close(st);
}
END_TEST

START_TEST(a_file_of_another_size_is_recovered_then_resized)
{
	struct fb_stage *st = NULL;
	struct seen sn = { .values_ok = 1 };
	struct stat sb;

	ck_assert_int_eq(fb_stage_open(path, 2 * SIZE, &st), 0);
	append(st, 7, 4000);
	append(st, 8, 4000);
	append(st, 9, 4000); /* ends beyond SIZE */
	fb_stage_close(st);

	st = open_stage();
	ck_assert_int_eq(fb_stage_recover(st, 0, visit, &sn, NULL), 0);
	ck_assert_uint_eq(sn.n, 3);
	ck_assert_uint_eq(sn.seqs[2], 9);
	ck_assert(sn.values_ok);
	ck_assert_int_eq(fb_stage_reset(st), 0);
	ck_assert_int_eq(stat(path, &sb), 0);
	ck_assert_int_eq(sb.st_size, SIZE);
	ck_assert_uint_eq(fb_stage_max_value(st), SIZE - 16);
	fb_stage_close(st);

	ck_assert_int_eq(fb_stage_open(path, 100, &st), -EINVAL);
	ck_assert_int_eq(fb_stage_open("/nonexistent-dir/stage", SIZE, &st), -ENOENT);
}
END_TEST

START_TEST(a_copy_holds_the_records_as_they_were_and_a_missing_file_nothing)
{
	struct fb_stage *st = open_stage(), *copy = NULL;
	struct seen sn = { .values_ok = 1 };
	struct stat before, after;
	char missing[600];

	for(uint64_t seq = 1; seq <= 5; seq++){
		append(st, seq, 40 + seq);
	}
	ck_assert_int_eq(stat(path, &before), 0);
	ck_assert_int_eq(fb_stage_open_copy(path, &copy), 0);
	ck_assert_int_eq(stat(path, &after), 0);
	ck_assert_int_eq(after.st_size, before.st_size);
	ck_assert_int_eq(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
	ck_assert_int_eq(after.st_mtim.tv_nsec, before.st_mtim.tv_nsec);
	/* Later appends and an emptied file do not reach the copy. */
	append(st, 6, 10);
	fb_stage_clear(st);
	ck_assert_int_eq(fb_stage_recover(copy, 1, visit, &sn, NULL), 0);
	ck_assert_uint_eq(sn.n, 5);
	for(size_t i = 0; i < 5; i++){
		ck_assert_uint_eq(sn.seqs[i], i + 1);
		ck_assert_uint_eq(sn.lens[i], 41 + i);
	}
	ck_assert(sn.values_ok);
	fb_stage_close(copy);
	fb_stage_close(st);

	snprintf(missing, sizeof(missing), "%s/none", tmpdir);
	ck_assert_int_eq(fb_stage_open_copy(missing, &copy), 0);
	memset(&sn, 0, sizeof(sn));
	ck_assert_int_eq(fb_stage_recover(copy, 1, visit, &sn, NULL), 0);
	ck_assert_uint_eq(sn.n, 0);
	fb_stage_close(copy);
	ck_assert_int_eq(access(missing, F_OK), -1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("stage");
	TCase *tc = tcase_create("basic");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, crc32c_matches_the_standard_check_value);
	tcase_add_test(tc, crc32c_matches_the_bitwise_definition_at_every_length_and_alignment);
	tcase_add_test(tc, appended_records_come_back_in_order_with_exact_bytes);
	tcase_add_test(tc, records_survive_a_close_without_clear);
	tcase_add_test(tc, a_cleared_file_recovers_nothing_though_old_records_follow);
	tcase_add_test(tc, a_damaged_record_is_skipped_and_the_rest_recovered);
	tcase_add_test(tc, damaged_lengths_and_first_records_resync);
	tcase_add_test(tc, a_full_file_refuses_and_too_large_values_are_e2big);
	tcase_add_test(tc, a_file_of_another_size_is_recovered_then_resized);
	tcase_add_test(tc, a_copy_holds_the_records_as_they_were_and_a_missing_file_nothing);
	suite_add_tcase(s, tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
