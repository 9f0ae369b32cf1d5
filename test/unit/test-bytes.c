/* Unit tests of plugin/common/bytes.h: the exact bytes of every fixed-order load and store. */
#include <stdint.h>
#include <string.h>

#include <check.h>

#include "bytes.h"

#define FILL 0xEE
#define AT 3 /* an odd offset: no helper may rely on alignment */

static uint8_t buf[32];

static void fill(void)
{
	memset(buf, FILL, sizeof(buf));
}

/* BUF holds WANT (N bytes) at AT and FILL everywhere else. */
static void expect_bytes(const uint8_t *want, size_t n)
{
	for(size_t i = 0; i < sizeof(buf); i++){
		uint8_t b = i >= AT && i < AT + n ? want[i - AT] : FILL;
		ck_assert_msg(buf[i] == b, "byte %zu is 0x%02x, want 0x%02x", i, buf[i], b);
	}
}

START_TEST(test_big_endian_stores_put_the_most_significant_byte_first)
{
	static const uint8_t be16[] = { 0x12, 0x34 };
	static const uint8_t be32[] = { 0x12, 0x34, 0x56, 0x78 };
	static const uint8_t be64[] = { 0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF };

	fill();
	fb_put_be16(buf + AT, 0x1234);
	expect_bytes(be16, sizeof(be16));
	fill();
	fb_put_be32(buf + AT, 0x12345678u);
	expect_bytes(be32, sizeof(be32));
	fill();
	fb_put_be64(buf + AT, UINT64_C(0x0123456789ABCDEF));
	expect_bytes(be64, sizeof(be64));
}
END_TEST

START_TEST(test_little_endian_stores_put_the_least_significant_byte_first)
{
	static const uint8_t le16[] = { 0x34, 0x12 };
	static const uint8_t le32[] = { 0x78, 0x56, 0x34, 0x12 };
	static const uint8_t le64[] = { 0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01 };

	fill();
	fb_put_le16(buf + AT, 0x1234);
	expect_bytes(le16, sizeof(le16));
	fill();
	fb_put_le32(buf + AT, 0x12345678u);
	expect_bytes(le32, sizeof(le32));
	fill();
	fb_put_le64(buf + AT, UINT64_C(0x0123456789ABCDEF));
	expect_bytes(le64, sizeof(le64));
}
END_TEST

START_TEST(test_loads_read_the_bytes_in_their_order)
{
	static const uint8_t in[] = { 0xFF, 0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF, 0xFF };
	const uint8_t *p = in + 1; /* odd address within the array */

	ck_assert_uint_eq(fb_get_be16(p), 0x0123);
	ck_assert_uint_eq(fb_get_be32(p), 0x01234567u);
	ck_assert_uint_eq(fb_get_be64(p), UINT64_C(0x0123456789ABCDEF));
	ck_assert_uint_eq(fb_get_le16(p), 0x2301);
	ck_assert_uint_eq(fb_get_le32(p), 0x67452301u);
	ck_assert_uint_eq(fb_get_le64(p), UINT64_C(0xEFCDAB8967452301));
}
END_TEST

/* Values with the top bit set, all ones and zero come back unchanged (no sign extension, no
 * truncation), and each store writes exactly its width. */
START_TEST(test_edge_values_round_trip)
{
	static const uint64_t v64[] = { 0, 1, 0x80, UINT64_C(0x8000000000000000), UINT64_C(0x00000000FFFFFFFF),
		UINT64_C(0xFFFFFFFF00000000), UINT64_MAX };
	static const uint8_t ones[8] = { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };

	for(size_t i = 0; i < sizeof(v64) / sizeof(v64[0]); i++){
		uint64_t v = v64[i];

		fill();
		fb_put_be16(buf + AT, (uint16_t)v);
		ck_assert_uint_eq(fb_get_be16(buf + AT), (uint16_t)v);
		fb_put_le16(buf + AT, (uint16_t)v);
		ck_assert_uint_eq(fb_get_le16(buf + AT), (uint16_t)v);
		fb_put_be32(buf + AT, (uint32_t)v);
		ck_assert_uint_eq(fb_get_be32(buf + AT), (uint32_t)v);
		fb_put_le32(buf + AT, (uint32_t)v);
		ck_assert_uint_eq(fb_get_le32(buf + AT), (uint32_t)v);
		fb_put_be64(buf + AT, v);
		ck_assert_uint_eq(fb_get_be64(buf + AT), v);
		fb_put_le64(buf + AT, v);
		ck_assert_uint_eq(fb_get_le64(buf + AT), v);
	}
	fill();
	fb_put_be16(buf + AT, UINT16_MAX);
	expect_bytes(ones, 2);
	fill();
	fb_put_le16(buf + AT, UINT16_MAX);
	expect_bytes(ones, 2);
	fill();
	fb_put_be32(buf + AT, UINT32_MAX);
	expect_bytes(ones, 4);
	fill();
	fb_put_le32(buf + AT, UINT32_MAX);
	expect_bytes(ones, 4);
	fill();
	fb_put_be64(buf + AT, UINT64_MAX);
	expect_bytes(ones, 8);
	fill();
	fb_put_le64(buf + AT, UINT64_MAX);
	expect_bytes(ones, 8);
}
END_TEST

/* The spool's RocksDB keys are big-endian seqs: their bytewise order is the numeric order. */
START_TEST(test_big_endian_keys_sort_bytewise_in_numeric_order)
{
	static const uint64_t seqs[] = { 0, 1, 255, 256, 65535, 65536, UINT64_C(0xFFFFFFFF),
		UINT64_C(0x100000000), UINT64_C(0x0100000000000000), UINT64_MAX - 1, UINT64_MAX };
	uint8_t a[8], b[8];

	for(size_t i = 0; i + 1 < sizeof(seqs) / sizeof(seqs[0]); i++){
		fb_put_be64(a, seqs[i]);
		fb_put_be64(b, seqs[i + 1]);
		ck_assert_msg(memcmp(a, b, 8) < 0, "key of %llu does not sort before key of %llu",
				(unsigned long long)seqs[i], (unsigned long long)seqs[i + 1]);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("bytes");
	TCase *tc = tcase_create("bytes");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_big_endian_stores_put_the_most_significant_byte_first);
	tcase_add_test(tc, test_little_endian_stores_put_the_least_significant_byte_first);
	tcase_add_test(tc, test_loads_read_the_bytes_in_their_order);
	tcase_add_test(tc, test_edge_values_round_trip);
	tcase_add_test(tc, test_big_endian_keys_sort_bytewise_in_numeric_order);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
