/* flowmq-bridge: integers stored at a fixed byte order (any process, any thread; header only).
 *
 * Every format the bridge writes names its byte order here, so that a file, a shared-memory
 * record or a packet has the same bytes on every machine:
 *   - big endian (network order): the spool record and the MQTT v5 wire (record.c, will.c) and
 *     the RocksDB keys of the spool, whose byte order is their sort order (spool.c);
 *   - little endian: the staging files and their big-value pointers (stage.c, chan.c), the
 *     cloud-to-edge ring in the shared region (c2e.c).
 * fb_put_*() store V at P, fb_get_*() load from P; P needs no alignment and must have room for
 * the width (2, 4 or 8 bytes). The compiler turns each into one load or store (plus a byte swap
 * where the machine's order differs).
 */
#ifndef FB_BYTES_H
#define FB_BYTES_H

#include <stdint.h>

/* ---- big endian ---- */

static inline void fb_put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void fb_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void fb_put_be64(uint8_t *p, uint64_t v)
{
	fb_put_be32(p, (uint32_t)(v >> 32));
	fb_put_be32(p + 4, (uint32_t)v);
}

static inline uint16_t fb_get_be16(const uint8_t *p)
{
	return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}

static inline uint32_t fb_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t fb_get_be64(const uint8_t *p)
{
	return (uint64_t)fb_get_be32(p) << 32 | fb_get_be32(p + 4);
}

/* ---- little endian ---- */

static inline void fb_put_le16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void fb_put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static inline void fb_put_le64(uint8_t *p, uint64_t v)
{
	fb_put_le32(p, (uint32_t)v);
	fb_put_le32(p + 4, (uint32_t)(v >> 32));
}

static inline uint16_t fb_get_le16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}

static inline uint32_t fb_get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t fb_get_le64(const uint8_t *p)
{
	return (uint64_t)fb_get_le32(p) | (uint64_t)fb_get_le32(p + 4) << 32;
}

#endif
