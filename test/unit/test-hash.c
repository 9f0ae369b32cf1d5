/* Unit tests (test process) of plugin/common/hash.h: the same bytes hash the same wherever they
 * lie, every length and every bit counts, the low bits spread a table's keys, and the product
 * without a 128-bit integer equals the one with it. */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "hash.h"

START_TEST(test_the_same_bytes_hash_the_same_at_any_alignment)
{
	static const char topic[] = "edge/site-A/telemetry/line-1/machine-12/spindle/temperature";
	uint8_t buf[sizeof(topic) + 8];
	uint64_t want = fb_hash(topic, strlen(topic));

	for(size_t off = 0; off < 8; off++){
		memcpy(buf + off, topic, strlen(topic));
		ck_assert_msg(fb_hash(buf + off, strlen(topic)) == want, "offset %zu", off);
	}
}
END_TEST

/* Zero bytes of every length from 0 to 40: the length is folded in before the bytes, so none
 * collide (a hash of zero-padded words alone would give "a" and "a\0" the same value). */
START_TEST(test_every_length_of_zero_bytes_hashes_differently)
{
	static const uint8_t zeros[40];
	uint64_t h[41];

	for(size_t n = 0; n <= 40; n++){
		h[n] = fb_hash(zeros, n);
		for(size_t m = 0; m < n; m++){
			ck_assert_msg(h[m] != h[n], "lengths %zu and %zu", m, n);
		}
	}
	ck_assert(fb_hash("a", 1) != fb_hash("a\0", 2));
}
END_TEST

/* Each of the 24 * 8 inputs one bit away from a 24-byte topic hashes differently from it and from
 * each other (so no two inputs two bits apart collide either). */
START_TEST(test_every_single_bit_counts)
{
	char base[] = "edge/site-A/telemetry/cg";
	uint64_t h[24 * 8 + 1];
	size_t k = 0;

	ck_assert_uint_eq(strlen(base), 24);
	h[k++] = fb_hash(base, 24);
	for(size_t i = 0; i < 24; i++){
		for(int b = 0; b < 8; b++){
			base[i] ^= (char)(1 << b);
			h[k] = fb_hash(base, 24);
			base[i] ^= (char)(1 << b);
			for(size_t m = 0; m < k; m++){
				ck_assert_msg(h[m] != h[k], "byte %zu bit %d collides with input %zu", i, b, m);
			}
			k++;
		}
	}
}
END_TEST

/* 4,096 topics that differ only in two numbers, into 1,024 buckets by the low 10 bits: no bucket
 * gets more than 16 (a random spread gives 4 on average and more than 16 in about one draw in
 * 700; low bits that ignored a part of the topic would pile them into a few buckets). */
START_TEST(test_the_low_bits_spread_similar_topics)
{
	unsigned load[1024] = { 0 };
	unsigned most = 0;
	char topic[64];

	for(int i = 0; i < 4096; i++){
		int n = snprintf(topic, sizeof(topic), "local/telemetry/line-%d/machine-%d/temperature", i / 64, i % 64);
		unsigned *l = &load[fb_hash(topic, (size_t)n) & 1023];
		(*l)++;
		most = *l > most ? *l : most;
	}
	ck_assert_uint_le(most, 16);
}
END_TEST

#ifdef __SIZEOF_INT128__
/* fb_hash_mum_portable() (four 32-bit products) gives what the 128-bit product gives, for the
 * extremes and for 100,000 pseudo-random pairs. (Where the compiler has no 128-bit integer,
 * fb_hash_mum() is the portable product itself: nothing to compare.) */
START_TEST(test_the_portable_product_equals_the_128_bit_one)
{
	static const uint64_t edge[] = { 0, 1, 2, UINT32_MAX, (uint64_t)UINT32_MAX + 1, UINT64_MAX, UINT64_MAX - 1,
		FB_HASH_K1, FB_HASH_K2 };
	uint64_t x = FB_HASH_SEED;

	for(size_t i = 0; i < sizeof(edge) / sizeof(edge[0]); i++){
		for(size_t j = 0; j < sizeof(edge) / sizeof(edge[0]); j++){
			ck_assert_msg(fb_hash_mum_portable(edge[i], edge[j]) == fb_hash_mum(edge[i], edge[j]),
					"0x%016llx * 0x%016llx", (unsigned long long)edge[i], (unsigned long long)edge[j]);
		}
	}
	for(int i = 0; i < 100000; i++){
		uint64_t a, b;
		x = x * UINT64_C(6364136223846793005) + 1442695040888963407u;
		a = x;
		x = x * UINT64_C(6364136223846793005) + 1442695040888963407u;
		b = x;
		ck_assert_msg(fb_hash_mum_portable(a, b) == fb_hash_mum(a, b),
				"0x%016llx * 0x%016llx", (unsigned long long)a, (unsigned long long)b);
	}
}
END_TEST
#endif

int main(void)
{
	Suite *s = suite_create("hash");
	TCase *tc = tcase_create("hash");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_the_same_bytes_hash_the_same_at_any_alignment);
	tcase_add_test(tc, test_every_length_of_zero_bytes_hashes_differently);
	tcase_add_test(tc, test_every_single_bit_counts);
	tcase_add_test(tc, test_the_low_bits_spread_similar_topics);
#ifdef __SIZEOF_INT128__
	tcase_add_test(tc, test_the_portable_product_equals_the_128_bit_one);
#endif
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
