/* flowmq-bridge: a 64-bit hash of bytes in memory, sixteen at a time (any process, any thread;
 * header only).
 *
 * For hash tables and for telling messages apart while they are in memory: the loopback's notes
 * (notes.c), the reduce state by topic and its last payload (reduce.c), the topic aliases
 * (alias.c). Its values depend on the machine's byte order and are never stored or sent.
 *
 * Each step multiplies two 64-bit words, each xored with the running hash and a constant, into a
 * 128-bit product and folds its halves (fb_hash_mum()), which spreads each input bit over the
 * result. fb_hash_run() first folds the length into the running hash, then takes the bytes in
 * steps of sixteen; the last 1 to 16 are read as two words that together hold each of them (the
 * reads may overlap), so that inputs of one length map to distinct word pairs, and the length
 * tells lengths apart. fb_hash_mix() folds one word, fb_hash_finish() spreads the bits once more,
 * so that the low bits index a table, and fb_hash() is run and finish for one run of bytes.
 *
 * Not a defence against chosen collisions: a step whose first word equals the running hash xored
 * with FB_HASH_K1 multiplies by zero. Collisions only cost a comparison in the tables, and the
 * notes take a colliding message for another one at most for the seconds a note lives.
 */
#ifndef FB_HASH_H
#define FB_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* SHA-512's initial words: constants with no structure of their own. */
#define FB_HASH_SEED UINT64_C(0x6A09E667F3BCC909)
#define FB_HASH_K1 UINT64_C(0xBB67AE8584CAA73B)
#define FB_HASH_K2 UINT64_C(0x3C6EF372FE94F82B)
#define FB_HASH_K3 UINT64_C(0xA54FF53A5F1D36F1)

/* The two halves of A * B (128 bits), xored, from 32-bit products: what fb_hash_mum() computes
 * where the compiler has no 128-bit integer. */
static inline uint64_t fb_hash_mum_portable(uint64_t a, uint64_t b)
{
	uint64_t al = (uint32_t)a, ah = a >> 32, bl = (uint32_t)b, bh = b >> 32;
	uint64_t ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
	uint64_t mid = (ll >> 32) + (uint32_t)lh + (uint32_t)hl;
	uint64_t lo = (mid << 32) | (uint32_t)ll;
	uint64_t hi = hh + (lh >> 32) + (hl >> 32) + (mid >> 32);

	return lo ^ hi;
}

static inline uint64_t fb_hash_mum(uint64_t a, uint64_t b)
{
#ifdef __SIZEOF_INT128__
	unsigned __int128 r = (unsigned __int128)a * b;

	return (uint64_t)r ^ (uint64_t)(r >> 64);
#else
	return fb_hash_mum_portable(a, b);
#endif
}

static inline uint64_t fb_hash_load64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

static inline uint64_t fb_hash_load32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

static inline uint64_t fb_hash_mix(uint64_t h, uint64_t v)
{
	return fb_hash_mum(h ^ FB_HASH_K1, v ^ FB_HASH_K2);
}

static inline uint64_t fb_hash_run(uint64_t h, const void *data, size_t n)
{
	const uint8_t *p = data;
	uint64_t a = 0, b = 0;

	h ^= (uint64_t)n * FB_HASH_K3;
	while(n > 16){
		h = fb_hash_mum(fb_hash_load64(p) ^ FB_HASH_K1 ^ h, fb_hash_load64(p + 8) ^ FB_HASH_K2 ^ h);
		p += 16;
		n -= 16;
	}
	if(n >= 8){
		a = fb_hash_load64(p);
		b = fb_hash_load64(p + n - 8);
	}else if(n >= 4){
		a = fb_hash_load32(p);
		b = fb_hash_load32(p + n - 4);
	}else if(n > 0){
		a = (uint64_t)p[0] << 16 | (uint64_t)p[n / 2] << 8 | p[n - 1];
	}
	return fb_hash_mum(a ^ FB_HASH_K1 ^ h, b ^ FB_HASH_K2 ^ h);
}

static inline uint64_t fb_hash_finish(uint64_t h)
{
	h ^= h >> 33;
	h *= UINT64_C(0xFF51AFD7ED558CCD);
	h ^= h >> 33;
	h *= UINT64_C(0xC4CEB9FE1A85EC53);
	return h ^ (h >> 33);
}

static inline uint64_t fb_hash(const void *data, size_t n)
{
	return fb_hash_finish(fb_hash_run(FB_HASH_SEED, data, n));
}

#endif
