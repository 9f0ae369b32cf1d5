/* flowmq-bridge: the spool record format (both processes: the broker stages records, the link reads them).
 *
 * A record is what the spool stores for one message:
 *   u8  version (FB_RECORD_VERSION)
 *   u8  flags: bits 0-1 QoS, bit 2 retain, bits 3-6 the lane + 1, or 0 for FB_LANE_DEFAULT (so
 *       a record of the default lane is byte for byte what it was before lanes existed, and
 *       records staged or spooled by an earlier version belong to the default lane), bit 7
 *       live_first (the rule's: newer records of the rule go ahead of its backlog)
 *   u64 enqueue time, ms since the epoch (big-endian)
 *   u64 expiry time, ms since the epoch, 0 = never (big-endian); bit 63 set: it is an
 *       edge_to_cloud rule's ttl (expiry_local), the time in the other bits
 *   u16 topic length, topic bytes
 *   u32 properties length, properties (MQTT v5 property encoding of the PUBLISH properties to send)
 *   payload (the rest)
 * Every integer is big-endian. Decoding validates every length against the buffer.
 */
#ifndef FB_RECORD_H
#define FB_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mosquitto.h>

#define FB_RECORD_VERSION 1

/* Lanes: an edge_to_cloud rule's priority, 0 (highest) to FB_LANES - 1; default FB_LANE_DEFAULT. */
#define FB_LANES 10
#define FB_LANE_DEFAULT 4

/* The user property that marks a message forwarded by this bridge: value = site_id. */
#define FB_ORIGIN_PROPERTY "flowmq-bridge-origin"

/* Wall-clock milliseconds since the epoch, the clock of enqueue and expiry times. Any thread. */
uint64_t fb_wall_ms(void);
/* Milliseconds of the monotonic clock, for timeouts and intervals. Any thread. */
uint64_t fb_mono_ms(void);
/* Sleeps MS milliseconds, also through signals. Any thread. */
void fb_sleep_ms(unsigned ms);

struct fb_record {
	uint8_t qos;
	bool retain;
	uint8_t lane;          /* 0 .. FB_LANES - 1 (set it: 0 is the highest lane) */
	bool live_first;       /* the rule's live_first */
	uint64_t enqueue_ms;
	uint64_t expiry_ms;
	/* expiry_ms (below 2^63) is an edge_to_cloud rule's ttl: the message expires in the spool
	 * (instead of spool.ttl) and is not sent with a Message Expiry Interval. */
	bool expiry_local;
	const char *topic;     /* not NUL-terminated when decoded: use topic_len */
	uint16_t topic_len;
	const uint8_t *props;  /* encoded properties */
	uint32_t props_len;
	const void *payload;
	uint32_t payload_len;
};

/* Size of the encoded record. */
size_t fb_record_size(const struct fb_record *r);

/* Property bytes a sender adds to a record's own: a Topic Alias (identifier, two-byte alias) and a
 * Message Expiry Interval (identifier, four-byte interval). */
#define FB_RECORD_ALIAS_PROP_SIZE 3
#define FB_RECORD_EXPIRY_PROP_SIZE 5

/* Size of the MQTT v5 PUBLISH that sends R, as a Maximum Packet Size counts it (the whole packet):
 * fixed header, remaining length, a topic of TOPIC_LEN bytes (0: the empty topic of a PUBLISH that
 * carries only its Topic Alias), the packet id when R's QoS is above 0, R's properties plus
 * EXTRA_PROPS bytes of properties the sender adds (FB_RECORD_*_PROP_SIZE), payload. Any thread. */
size_t fb_record_publish_size(const struct fb_record *r, size_t topic_len, size_t extra_props);

/* Encodes R into BUF (at least fb_record_size(r) bytes). Returns the bytes written. */
size_t fb_record_encode(const struct fb_record *r, uint8_t *buf);

/* Decodes BUF into R, pointing into BUF. Returns 0 or -EINVAL (bad version, flags or lengths;
 * the default lane written other than as 0 is refused, so that a record has one encoding). */
int fb_record_decode(const void *buf, size_t len, struct fb_record *r);

/* The lane of the encoded record VAL (LEN bytes) without decoding the rest: FB_LANE_DEFAULT for
 * a record of a version before lanes and for anything unreadable. Any thread. */
unsigned fb_record_lane(const void *val, size_t len);

/* Whether the encoded record VAL (LEN bytes) has the live_first flag. Any thread. */
bool fb_record_live_first(const void *val, size_t len);

/* Encodes a mosquitto property list, followed by EXTRA user properties (name/value pairs,
 * EXTRA_COUNT of them) into a new buffer (caller frees with free()). Properties that make no sense
 * on a forwarded PUBLISH (topic alias, subscription identifier, message expiry interval) are
 * skipped, and so are the list's user properties named like one of EXTRA's (EXTRA replaces them).
 * Returns 0 or a negative errno. Empty result: *out = NULL, *len = 0. Any thread. */
int fb_props_encode(const mosquitto_property *props, const char *const *extra, size_t extra_count,
		uint8_t **out, uint32_t *len);

/* Like fb_props_encode(), for the capture path: the forwardable properties of PROPS, then SUFFIX
 * (SUFFIX_LEN bytes encoded by fb_props_encode() beforehand), into *BUF of *CAP bytes, which it
 * grows with realloc() as needed (the caller keeps and frees it; NULL to start). A publisher's user
 * properties named FB_ORIGIN_PROPERTY or like one of SUFFIX's user properties are dropped: the
 * bridge's values replace them (the check runs only for user properties the publisher sent).
 * *LEN is the encoded length. Returns 0 or a negative errno (*BUF stays the caller's either way).
 * Any thread. */
int fb_props_encode_into(const mosquitto_property *props, const uint8_t *suffix, uint32_t suffix_len,
		uint8_t **buf, size_t *cap, uint32_t *len);

/* Decodes properties into a new mosquitto property list (caller frees with
 * mosquitto_property_free_all()). Returns 0 or -EINVAL/-ENOMEM. */
int fb_props_decode(const uint8_t *buf, uint32_t len, mosquitto_property **out);

/* Finds the first user property NAME in encoded properties; returns its value (not
 * NUL-terminated) and length, or NULL. */
const char *fb_props_find_user(const uint8_t *buf, uint32_t len, const char *name, uint16_t *vlen);

/* Removes every user property NAME from the encoded properties BUF (LEN bytes) in place; returns
 * the new length. Properties after an unreadable one are kept as they are. Any thread. */
uint32_t fb_props_remove_user(uint8_t *buf, uint32_t len, const char *name);

#endif
