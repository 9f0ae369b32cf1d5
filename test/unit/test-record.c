/* Unit tests (test process) of plugin/common/record.c: the spool record format and the MQTT v5 property encoding. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <mqtt_protocol.h>

#include "record.h"

/* A record with every field set, and its encoding written out by hand from record.h. */
static const uint8_t props_pfi[] = { 0x01, 0x01 }; /* payload format indicator = 1 */

static const uint8_t known_bytes[] = {
	0x01,                                           /* version */
	0x05,                                           /* QoS 1 | retain */
	0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* enqueue ms */
	0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, /* expiry ms */
	0x00, 0x03, 'a', '/', 'b',                      /* topic */
	0x00, 0x00, 0x00, 0x02, 0x01, 0x01,             /* properties */
	'h', 'i',                                       /* payload */
};

static struct fb_record known_record(void)
{
	struct fb_record r = {
		.qos = 1,
		.retain = true,
		.lane = FB_LANE_DEFAULT,
		.enqueue_ms = 0x0102030405060708ULL,
		.expiry_ms = 0x1112131415161718ULL,
		.topic = "a/b",
		.topic_len = 3,
		.props = props_pfi,
		.props_len = sizeof(props_pfi),
		.payload = "hi",
		.payload_len = 2,
	};
	return r;
}

START_TEST(record_encodes_known_record_to_exact_bytes)
{
	struct fb_record r = known_record();
	uint8_t buf[64];

	ck_assert_uint_eq(fb_record_size(&r), sizeof(known_bytes));
	memset(buf, 0xAA, sizeof(buf));
	ck_assert_uint_eq(fb_record_encode(&r, buf), sizeof(known_bytes));
	ck_assert_mem_eq(buf, known_bytes, sizeof(known_bytes));
	ck_assert_uint_eq(buf[sizeof(known_bytes)], 0xAA); /* nothing written past the end */
}
END_TEST

START_TEST(record_decodes_known_bytes_to_every_field)
{
	struct fb_record r;

	ck_assert_int_eq(fb_record_decode(known_bytes, sizeof(known_bytes), &r), 0);
	ck_assert_uint_eq(r.qos, 1);
	ck_assert(r.retain);
	ck_assert_uint_eq(r.enqueue_ms, 0x0102030405060708ULL);
	ck_assert_uint_eq(r.expiry_ms, 0x1112131415161718ULL);
	ck_assert_uint_eq(r.topic_len, 3);
	ck_assert_mem_eq(r.topic, "a/b", 3);
	ck_assert_ptr_eq(r.topic, (const char *)known_bytes + 20); /* points into the buffer */
	ck_assert_uint_eq(r.props_len, 2);
	ck_assert_mem_eq(r.props, props_pfi, 2);
	ck_assert_uint_eq(r.payload_len, 2);
	ck_assert_mem_eq(r.payload, "hi", 2);
}
END_TEST

/* The lane rides in flags bits 3-6 as lane + 1; the default lane encodes as 0, so a record of the
 * default lane is the bytes of a record written before lanes, and such a record (staged or spooled
 * by an earlier version) reads back in the default lane. */
START_TEST(record_lane_in_flags_and_old_records_in_default_lane)
{
	struct fb_record r = known_record(), d;
	uint8_t buf[64];
	unsigned lane;

	ck_assert_int_eq(fb_record_decode(known_bytes, sizeof(known_bytes), &d), 0);
	ck_assert_uint_eq(d.lane, FB_LANE_DEFAULT);
	ck_assert_uint_eq(fb_record_lane(known_bytes, sizeof(known_bytes)), FB_LANE_DEFAULT);
	for(lane = 0; lane < FB_LANES; lane++){
		r.lane = (uint8_t)lane;
		ck_assert_uint_eq(fb_record_encode(&r, buf), sizeof(known_bytes));
		ck_assert_uint_eq(buf[1], 0x05 | (lane == FB_LANE_DEFAULT ? 0 : (lane + 1) << 3));
		ck_assert_mem_eq(buf + 2, known_bytes + 2, sizeof(known_bytes) - 2);
		ck_assert_uint_eq(fb_record_lane(buf, sizeof(known_bytes)), lane);
		ck_assert_int_eq(fb_record_decode(buf, sizeof(known_bytes), &d), 0);
		ck_assert_uint_eq(d.lane, lane);
		ck_assert_uint_eq(d.qos, 1);
		ck_assert(d.retain);
	}
	/* Lane codes 11..15 are no lane, and the default lane has one encoding (0): refused. */
	buf[1] = 0x05 | (11 << 3);
	ck_assert_int_eq(fb_record_decode(buf, sizeof(known_bytes), &d), -EINVAL);
	buf[1] = 0x05 | ((FB_LANE_DEFAULT + 1) << 3);
	ck_assert_int_eq(fb_record_decode(buf, sizeof(known_bytes), &d), -EINVAL);
	/* Bit 7: live_first. */
	ck_assert(!fb_record_live_first(known_bytes, sizeof(known_bytes)));
	r.lane = 0;
	r.live_first = true;
	ck_assert_uint_eq(fb_record_encode(&r, buf), sizeof(known_bytes));
	ck_assert_uint_eq(buf[1], 0x85 | (1 << 3));
	ck_assert(fb_record_live_first(buf, sizeof(known_bytes)));
	ck_assert_int_eq(fb_record_decode(buf, sizeof(known_bytes), &d), 0);
	ck_assert(d.live_first);
	ck_assert_uint_eq(d.lane, 0);
}
END_TEST

START_TEST(record_round_trips_all_qos_retain_and_empty_fields)
{
	static const uint8_t payload[] = { 0, 1, 2, 0, 255 };
	struct fb_record r, d;
	uint8_t buf[128];
	size_t n;
	int qos, retain;

	for(qos = 0; qos <= 2; qos++){
		for(retain = 0; retain <= 1; retain++){
			memset(&r, 0, sizeof(r));
			r.qos = (uint8_t)qos;
			r.retain = retain;
			r.enqueue_ms = UINT64_MAX;
			r.expiry_ms = 0;
			r.topic = qos == 0 ? "" : "t/é";
			r.topic_len = (uint16_t)strlen(r.topic);
			r.payload = qos == 2 ? NULL : payload;
			r.payload_len = qos == 2 ? 0 : sizeof(payload);
			n = fb_record_encode(&r, buf);
			ck_assert_uint_eq(n, fb_record_size(&r));
			ck_assert_int_eq(fb_record_decode(buf, n, &d), 0);
			ck_assert_uint_eq(d.qos, qos);
			ck_assert_int_eq(d.retain, retain);
			ck_assert_uint_eq(d.enqueue_ms, UINT64_MAX);
			ck_assert_uint_eq(d.expiry_ms, 0);
			ck_assert_uint_eq(d.topic_len, r.topic_len);
			ck_assert_mem_eq(d.topic, r.topic, r.topic_len);
			ck_assert_uint_eq(d.props_len, 0);
			ck_assert_uint_eq(d.payload_len, r.payload_len);
			if(r.payload_len){
				ck_assert_mem_eq(d.payload, payload, sizeof(payload));
			}
		}
	}
}
END_TEST

/* Bit 63 of the expiry: it is a rule's ttl (kept on the edge, not sent to the cloud). */
START_TEST(record_expiry_bit_63_marks_a_rule_ttl)
{
	struct fb_record r = known_record(), d;
	uint8_t buf[64];
	size_t n;

	ck_assert_int_eq(fb_record_decode(known_bytes, sizeof(known_bytes), &d), 0);
	ck_assert(!d.expiry_local);
	r.expiry_local = true;
	n = fb_record_encode(&r, buf);
	ck_assert_uint_eq(n, sizeof(known_bytes));
	ck_assert_uint_eq(buf[10], 0x91); /* 0x11 | bit 63 */
	ck_assert_mem_eq(buf, known_bytes, 10);
	ck_assert_mem_eq(buf + 11, known_bytes + 11, sizeof(known_bytes) - 11);
	ck_assert_int_eq(fb_record_decode(buf, n, &d), 0);
	ck_assert(d.expiry_local);
	ck_assert(d.retain);
	ck_assert_uint_eq(d.qos, 1);
	ck_assert_uint_eq(d.expiry_ms, 0x1112131415161718ULL);
}
END_TEST

START_TEST(record_round_trips_large_payload)
{
	struct fb_record r = known_record(), d;
	size_t plen = 1 << 20, i, n;
	uint8_t *payload = malloc(plen), *buf;

	for(i = 0; i < plen; i++){
		payload[i] = (uint8_t)(i * 7);
	}
	r.payload = payload;
	r.payload_len = (uint32_t)plen;
	buf = malloc(fb_record_size(&r));
	n = fb_record_encode(&r, buf);
	ck_assert_int_eq(fb_record_decode(buf, n, &d), 0);
	ck_assert_uint_eq(d.payload_len, plen);
	ck_assert_mem_eq(d.payload, payload, plen);
	free(buf);
	free(payload);
}
END_TEST

/* The payload is "the rest", so only truncations that cut into the header, the topic or the
 * properties can be detected: with an empty payload, that is every truncation. */
START_TEST(record_rejects_every_truncation)
{
	struct fb_record r = known_record(), d;
	uint8_t buf[64];
	size_t n, len, payload_at;

	r.payload_len = 0;
	n = fb_record_encode(&r, buf);
	for(len = 0; len < n; len++){
		ck_assert_msg(fb_record_decode(buf, len, &d) == -EINVAL, "truncated to %zu of %zu", len, n);
	}
	ck_assert_int_eq(fb_record_decode(buf, n, &d), 0);

	/* With a payload: every cut before the payload is refused, cuts within it shorten it. */
	payload_at = sizeof(known_bytes) - 2;
	for(len = 0; len < payload_at; len++){
		ck_assert_int_eq(fb_record_decode(known_bytes, len, &d), -EINVAL);
	}
	ck_assert_int_eq(fb_record_decode(known_bytes, payload_at + 1, &d), 0);
	ck_assert_uint_eq(d.payload_len, 1);
	ck_assert_int_eq(fb_record_decode(NULL, 0, &d), -EINVAL);
}
END_TEST

START_TEST(record_rejects_garbage)
{
	uint8_t buf[sizeof(known_bytes)];
	struct fb_record d;
	unsigned seed = 12345;
	uint8_t rnd[256];
	size_t i, len;
	int rc, round;

	/* Wrong version. */
	memcpy(buf, known_bytes, sizeof(buf));
	buf[0] = 2;
	ck_assert_int_eq(fb_record_decode(buf, sizeof(buf), &d), -EINVAL);
	buf[0] = 0;
	ck_assert_int_eq(fb_record_decode(buf, sizeof(buf), &d), -EINVAL);

	/* QoS 3 and unknown flag bits. */
	memcpy(buf, known_bytes, sizeof(buf));
	buf[1] = 0x03;
	ck_assert_int_eq(fb_record_decode(buf, sizeof(buf), &d), -EINVAL);
	buf[1] = 0x59; /* lane code 11: no lane */
	ck_assert_int_eq(fb_record_decode(buf, sizeof(buf), &d), -EINVAL);

	/* Topic and properties lengths past the end. */
	memcpy(buf, known_bytes, sizeof(buf));
	buf[19] = 0xFF;
	ck_assert_int_eq(fb_record_decode(buf, sizeof(buf), &d), -EINVAL);
	memcpy(buf, known_bytes, sizeof(buf));
	buf[23] = 0x01; /* props length 0x01000002 */
	ck_assert_int_eq(fb_record_decode(buf, sizeof(buf), &d), -EINVAL);
	memcpy(buf, known_bytes, sizeof(buf));
	buf[26] = 0x05; /* props length 5 > what is left before the payload: eats it, then short */
	ck_assert_int_eq(fb_record_decode(buf, sizeof(buf), &d), -EINVAL);

	/* Properties that are not a valid encoding. */
	memcpy(buf, known_bytes, sizeof(buf));
	buf[27] = 0x7F; /* unknown identifier */
	ck_assert_int_eq(fb_record_decode(buf, sizeof(buf), &d), -EINVAL);

	/* Random buffers: never a crash, and whatever decodes lies within the buffer. */
	for(round = 0; round < 100000; round++){
		len = (size_t)(rand_r(&seed) % (int)sizeof(rnd));
		for(i = 0; i < len; i++){
			rnd[i] = (uint8_t)rand_r(&seed);
		}
		if(len > 0 && round % 2){
			rnd[0] = FB_RECORD_VERSION;
		}
		if(len > 1 && round % 4 == 1){
			rnd[1] &= 0x06;
		}
		if(len > 20 && round % 8 == 1){
			rnd[18] = 0;
			rnd[19] %= 16;
		}
		rc = fb_record_decode(rnd, len, &d);
		ck_assert(rc == 0 || rc == -EINVAL);
		if(rc == 0){
			ck_assert_uint_eq(20 + d.topic_len + 4 + d.props_len + d.payload_len, len);
		}
	}
}
END_TEST

/* ---- properties ---- */

static const uint8_t corr[] = { 0x00, 0x01, 0x00, 0x02 };

/* The publisher's properties used by several tests, in this order. */
static mosquitto_property *publisher_props(void)
{
	mosquitto_property *p = NULL;

	ck_assert_int_eq(mosquitto_property_add_string_pair(&p, MQTT_PROP_USER_PROPERTY, "a", "1"), 0);
	ck_assert_int_eq(mosquitto_property_add_string(&p, MQTT_PROP_CONTENT_TYPE, "application/json"), 0);
	ck_assert_int_eq(mosquitto_property_add_string_pair(&p, MQTT_PROP_USER_PROPERTY, "b", "2"), 0);
	ck_assert_int_eq(mosquitto_property_add_binary(&p, MQTT_PROP_CORRELATION_DATA, corr, sizeof(corr)), 0);
	ck_assert_int_eq(mosquitto_property_add_byte(&p, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, 1), 0);
	ck_assert_int_eq(mosquitto_property_add_string(&p, MQTT_PROP_RESPONSE_TOPIC, "reply/x"), 0);
	ck_assert_int_eq(mosquitto_property_add_string_pair(&p, MQTT_PROP_USER_PROPERTY, "a", "3"), 0);
	return p;
}

/* The MQTT v5 encoding of publisher_props(), by hand. */
static const uint8_t publisher_bytes[] = {
	0x26, 0x00, 0x01, 'a', 0x00, 0x01, '1',
	0x03, 0x00, 0x10, 'a', 'p', 'p', 'l', 'i', 'c', 'a', 't', 'i', 'o', 'n', '/', 'j', 's', 'o', 'n',
	0x26, 0x00, 0x01, 'b', 0x00, 0x01, '2',
	0x09, 0x00, 0x04, 0x00, 0x01, 0x00, 0x02,
	0x01, 0x01,
	0x08, 0x00, 0x07, 'r', 'e', 'p', 'l', 'y', '/', 'x',
	0x26, 0x00, 0x01, 'a', 0x00, 0x01, '3',
};
/* Where each property of publisher_bytes ends. */
static const size_t publisher_ends[] = { 7, 26, 33, 40, 42, 52, 59 };

static void assert_user(const mosquitto_property *p, const char *name, const char *value)
{
	char *n = NULL, *v = NULL;

	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(mosquitto_property_identifier(p), MQTT_PROP_USER_PROPERTY);
	ck_assert_ptr_eq(mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &n, &v, false), p);
	ck_assert_str_eq(n, name);
	ck_assert_str_eq(v, value);
	free(n);
	free(v);
}

static void assert_string(const mosquitto_property *p, int id, const char *value)
{
	char *v = NULL;

	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(mosquitto_property_identifier(p), id);
	ck_assert_ptr_eq(mosquitto_property_read_string(p, id, &v, false), p);
	ck_assert_str_eq(v, value);
	free(v);
}

/* Checks that P starts with the properties of publisher_props(), in order; returns what follows. */
static const mosquitto_property *assert_publisher_list(const mosquitto_property *p)
{
	void *bin = NULL;
	uint16_t blen = 0;
	uint8_t b = 0;

	assert_user(p, "a", "1");
	p = mosquitto_property_next(p);
	assert_string(p, MQTT_PROP_CONTENT_TYPE, "application/json");
	p = mosquitto_property_next(p);
	assert_user(p, "b", "2");
	p = mosquitto_property_next(p);
	ck_assert_int_eq(mosquitto_property_identifier(p), MQTT_PROP_CORRELATION_DATA);
	ck_assert_ptr_eq(mosquitto_property_read_binary(p, MQTT_PROP_CORRELATION_DATA, &bin, &blen, false), p);
	ck_assert_uint_eq(blen, sizeof(corr));
	ck_assert_mem_eq(bin, corr, sizeof(corr));
	free(bin);
	p = mosquitto_property_next(p);
	ck_assert_int_eq(mosquitto_property_identifier(p), MQTT_PROP_PAYLOAD_FORMAT_INDICATOR);
	ck_assert_ptr_eq(mosquitto_property_read_byte(p, MQTT_PROP_PAYLOAD_FORMAT_INDICATOR, &b, false), p);
	ck_assert_uint_eq(b, 1);
	p = mosquitto_property_next(p);
	assert_string(p, MQTT_PROP_RESPONSE_TOPIC, "reply/x");
	p = mosquitto_property_next(p);
	assert_user(p, "a", "3");
	return mosquitto_property_next(p);
}

START_TEST(props_encode_to_exact_mqtt5_bytes)
{
	mosquitto_property *p = publisher_props();
	uint8_t *buf = NULL;
	uint32_t len = 0;

	ck_assert_int_eq(fb_props_encode(p, NULL, 0, &buf, &len), 0);
	ck_assert_uint_eq(len, sizeof(publisher_bytes));
	ck_assert_mem_eq(buf, publisher_bytes, sizeof(publisher_bytes));
	free(buf);
	mosquitto_property_free_all(&p);
}
END_TEST

START_TEST(props_round_trip_in_order)
{
	mosquitto_property *p = publisher_props(), *d = NULL;
	uint8_t *buf = NULL;
	uint32_t len = 0;

	ck_assert_int_eq(fb_props_encode(p, NULL, 0, &buf, &len), 0);
	ck_assert_int_eq(fb_props_decode(buf, len, &d), 0);
	ck_assert_ptr_null(assert_publisher_list(d));
	/* The decoded list is acceptable for a PUBLISH as it is. */
	ck_assert_int_eq(mosquitto_property_check_all(CMD_PUBLISH, d), MOSQ_ERR_SUCCESS);
	mosquitto_property_free_all(&d);
	free(buf);
	mosquitto_property_free_all(&p);
}
END_TEST

START_TEST(props_skip_alias_subscription_id_and_expiry)
{
	mosquitto_property *p = NULL;
	static const uint8_t expect[] = { 0x03, 0x00, 0x01, 'x' };
	uint8_t *buf = NULL;
	uint32_t len = 0;

	ck_assert_int_eq(mosquitto_property_add_int32(&p, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, 60), 0);
	ck_assert_int_eq(mosquitto_property_add_int16(&p, MQTT_PROP_TOPIC_ALIAS, 3), 0);
	ck_assert_int_eq(mosquitto_property_add_string(&p, MQTT_PROP_CONTENT_TYPE, "x"), 0);
	ck_assert_int_eq(mosquitto_property_add_varint(&p, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, 1000), 0);
	ck_assert_int_eq(fb_props_encode(p, NULL, 0, &buf, &len), 0);
	ck_assert_uint_eq(len, sizeof(expect));
	ck_assert_mem_eq(buf, expect, sizeof(expect));
	free(buf);
	mosquitto_property_free_all(&p);

	/* Only skipped properties: an empty result. */
	ck_assert_int_eq(mosquitto_property_add_int16(&p, MQTT_PROP_TOPIC_ALIAS, 3), 0);
	buf = (uint8_t *)1;
	len = 1;
	ck_assert_int_eq(fb_props_encode(p, NULL, 0, &buf, &len), 0);
	ck_assert_ptr_null(buf);
	ck_assert_uint_eq(len, 0);
	mosquitto_property_free_all(&p);
}
END_TEST

START_TEST(props_extra_headers_follow_publisher_properties)
{
	mosquitto_property *p = publisher_props(), *d = NULL;
	const mosquitto_property *rest;
	static const char *const extra[] = {
		"edge-site-id", "site-A",
		"flowmq-bridge-origin", "site-A",
	};
	uint8_t *buf = NULL;
	uint32_t len = 0;

	ck_assert_int_eq(fb_props_encode(p, extra, 2, &buf, &len), 0);
	ck_assert_mem_eq(buf, publisher_bytes, sizeof(publisher_bytes));
	ck_assert_int_eq(fb_props_decode(buf, len, &d), 0);
	rest = assert_publisher_list(d);
	assert_user(rest, "edge-site-id", "site-A");
	rest = mosquitto_property_next(rest);
	assert_user(rest, "flowmq-bridge-origin", "site-A");
	ck_assert_ptr_null(mosquitto_property_next(rest));
	mosquitto_property_free_all(&d);
	free(buf);
	mosquitto_property_free_all(&p);

	/* Extra headers alone, with an empty value. */
	static const char *const one[] = { "k", "" };
	static const uint8_t expect[] = { 0x26, 0x00, 0x01, 'k', 0x00, 0x00 };
	ck_assert_int_eq(fb_props_encode(NULL, one, 1, &buf, &len), 0);
	ck_assert_uint_eq(len, sizeof(expect));
	ck_assert_mem_eq(buf, expect, sizeof(expect));
	free(buf);
}
END_TEST

/* The capture path's variant: pre-encoded headers after the publisher's properties, in a buffer
 * that is reused from call to call; the bytes are those of fb_props_encode(). */
START_TEST(props_encode_into_reuses_its_buffer_and_matches_props_encode)
{
	mosquitto_property *p = publisher_props();
	static const char *const extra[] = {
		"edge-site-id", "site-A",
		"flowmq-bridge-origin", "site-A",
	};
	uint8_t *suffix = NULL, *whole = NULL, *buf = NULL, *first;
	uint32_t suffix_len = 0, whole_len = 0, len = 0;
	size_t cap = 0;

	ck_assert_int_eq(fb_props_encode(NULL, extra, 2, &suffix, &suffix_len), 0);
	ck_assert_int_eq(fb_props_encode(p, extra, 2, &whole, &whole_len), 0);

	ck_assert_int_eq(fb_props_encode_into(p, suffix, suffix_len, &buf, &cap, &len), 0);
	ck_assert_uint_eq(len, whole_len);
	ck_assert_mem_eq(buf, whole, whole_len);
	ck_assert_uint_ge(cap, len);
	first = buf;

	/* Again, and with no publisher properties: same buffer, only the suffix. */
	ck_assert_int_eq(fb_props_encode_into(p, suffix, suffix_len, &buf, &cap, &len), 0);
	ck_assert_ptr_eq(buf, first);
	ck_assert_uint_eq(len, whole_len);
	ck_assert_mem_eq(buf, whole, whole_len);
	ck_assert_int_eq(fb_props_encode_into(NULL, suffix, suffix_len, &buf, &cap, &len), 0);
	ck_assert_ptr_eq(buf, first);
	ck_assert_uint_eq(len, suffix_len);
	ck_assert_mem_eq(buf, suffix, suffix_len);

	/* Nothing at all. */
	ck_assert_int_eq(fb_props_encode_into(NULL, NULL, 0, &buf, &cap, &len), 0);
	ck_assert_uint_eq(len, 0);
	free(buf);
	free(whole);
	free(suffix);
	mosquitto_property_free_all(&p);
}
END_TEST

/* A publisher cannot spoof what the bridge sets: its own origin marker is dropped, and so is each
 * user property that a rule's headers set (the rule's value replaces it). Names compare exactly
 * (MQTT user property names are case-sensitive); everything else keeps its order. */
START_TEST(props_publisher_cannot_spoof_origin_or_headers)
{
	static const char *const extra[] = {
		"edge-site-id", "site-A",
		"flowmq-bridge-origin", "site-A",
	};
	static const char *const origin_only[] = { "flowmq-bridge-origin", "site-A" };
	static const uint8_t kept[] = {
		0x03, 0x00, 0x01, 't',                                   /* content type "t" */
		0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v',                  /* k: v */
		0x26, 0x00, 0x0c, 'E', 'd', 'g', 'e', '-', 'S', 'i', 't', 'e', '-', 'I', 'd', 0x00, 0x01, 'x',
	};
	static const uint8_t spoofed_site[] = {
		0x26, 0x00, 0x0c, 'e', 'd', 'g', 'e', '-', 's', 'i', 't', 'e', '-', 'i', 'd', 0x00, 0x05,
		's', 'p', 'o', 'o', 'f',
	};
	static const uint8_t origin[] = {
		0x26, 0x00, 0x14, 'f', 'l', 'o', 'w', 'm', 'q', '-', 'b', 'r', 'i', 'd', 'g', 'e', '-', 'o', 'r',
		'i', 'g', 'i', 'n', 0x00, 0x06, 's', 'i', 't', 'e', '-', 'A',
	};
	static const uint8_t site[] = {
		0x26, 0x00, 0x0c, 'e', 'd', 'g', 'e', '-', 's', 'i', 't', 'e', '-', 'i', 'd', 0x00, 0x06,
		's', 'i', 't', 'e', '-', 'A',
	};
	mosquitto_property *p = NULL;
	uint8_t *suffix = NULL, *buf = NULL, *whole = NULL, expect[256];
	uint32_t suffix_len = 0, len = 0, whole_len = 0;
	size_t cap = 0, n;

	ck_assert_int_eq(mosquitto_property_add_string_pair(&p, MQTT_PROP_USER_PROPERTY, "flowmq-bridge-origin", "evil"), 0);
	ck_assert_int_eq(mosquitto_property_add_string(&p, MQTT_PROP_CONTENT_TYPE, "t"), 0);
	ck_assert_int_eq(mosquitto_property_add_string_pair(&p, MQTT_PROP_USER_PROPERTY, "edge-site-id", "spoof"), 0);
	ck_assert_int_eq(mosquitto_property_add_string_pair(&p, MQTT_PROP_USER_PROPERTY, "k", "v"), 0);
	ck_assert_int_eq(mosquitto_property_add_string_pair(&p, MQTT_PROP_USER_PROPERTY, "flowmq-bridge-origin", "evil2"), 0);
	ck_assert_int_eq(mosquitto_property_add_string_pair(&p, MQTT_PROP_USER_PROPERTY, "Edge-Site-Id", "x"), 0);

	/* The capture path: the rule's headers and the origin, pre-encoded. */
	ck_assert_int_eq(fb_props_encode(NULL, extra, 2, &suffix, &suffix_len), 0);
	ck_assert_uint_eq(suffix_len, sizeof(site) + sizeof(origin));
	ck_assert_int_eq(fb_props_encode_into(p, suffix, suffix_len, &buf, &cap, &len), 0);
	n = 0;
	memcpy(expect + n, kept, sizeof(kept)); n += sizeof(kept);
	memcpy(expect + n, site, sizeof(site)); n += sizeof(site);
	memcpy(expect + n, origin, sizeof(origin)); n += sizeof(origin);
	ck_assert_uint_eq(len, n);
	ck_assert_mem_eq(buf, expect, n);

	/* fb_props_encode() with the same extras gives the same bytes. */
	ck_assert_int_eq(fb_props_encode(p, extra, 2, &whole, &whole_len), 0);
	ck_assert_uint_eq(whole_len, n);
	ck_assert_mem_eq(whole, expect, n);
	free(whole);
	free(suffix);

	/* A rule without headers: only the origin is replaced; the publisher's edge-site-id stays. */
	ck_assert_int_eq(fb_props_encode(NULL, origin_only, 1, &suffix, &suffix_len), 0);
	ck_assert_int_eq(fb_props_encode_into(p, suffix, suffix_len, &buf, &cap, &len), 0);
	n = 0;
	memcpy(expect + n, kept, 4); n += 4;
	memcpy(expect + n, spoofed_site, sizeof(spoofed_site)); n += sizeof(spoofed_site);
	memcpy(expect + n, kept + 4, sizeof(kept) - 4); n += sizeof(kept) - 4;
	memcpy(expect + n, origin, sizeof(origin)); n += sizeof(origin);
	ck_assert_uint_eq(len, n);
	ck_assert_mem_eq(buf, expect, n);

	/* Without extras (the cloud-to-edge path), nothing is dropped: the origin stays readable. */
	ck_assert_int_eq(fb_props_encode(p, NULL, 0, &whole, &whole_len), 0);
	ck_assert_ptr_nonnull(fb_props_find_user(whole, whole_len, "flowmq-bridge-origin", NULL));
	ck_assert_uint_eq(whole_len, sizeof(kept) + sizeof(spoofed_site) + 2 * (1 + 2 + 20 + 2) + 4 + 5);
	free(whole);
	free(suffix);
	free(buf);
	mosquitto_property_free_all(&p);
}
END_TEST

START_TEST(props_encode_rejects_bad_extra_headers)
{
	static const char *const bad_utf8[] = { "k", "\xC0\x80" };
	static const char *const null_value[] = { "k", NULL };
	uint8_t *buf = (uint8_t *)1;
	uint32_t len = 1;
	char *long_name = malloc(70000);

	ck_assert_int_eq(fb_props_encode(NULL, bad_utf8, 1, &buf, &len), -EINVAL);
	ck_assert_ptr_null(buf);
	ck_assert_uint_eq(len, 0);
	ck_assert_int_eq(fb_props_encode(NULL, null_value, 1, &buf, &len), -EINVAL);
	memset(long_name, 'n', 69999);
	long_name[69999] = '\0';
	const char *const too_long[] = { long_name, "v" };
	ck_assert_int_eq(fb_props_encode(NULL, too_long, 1, &buf, &len), -EINVAL);
	free(long_name);
}
END_TEST

START_TEST(props_empty_encode_and_decode)
{
	mosquitto_property *d = (mosquitto_property *)1;
	uint8_t *buf = (uint8_t *)1;
	uint32_t len = 1;

	ck_assert_int_eq(fb_props_encode(NULL, NULL, 0, &buf, &len), 0);
	ck_assert_ptr_null(buf);
	ck_assert_uint_eq(len, 0);
	ck_assert_int_eq(fb_props_decode(NULL, 0, &d), 0);
	ck_assert_ptr_null(d);
}
END_TEST

/* Every prefix of an encoding either ends on a property boundary (and decodes to that many
 * properties) or is refused. */
START_TEST(props_decode_rejects_every_truncation)
{
	mosquitto_property *d = NULL;
	const mosquitto_property *p;
	size_t len, b, n;
	int rc;

	for(len = 0; len < sizeof(publisher_bytes); len++){
		for(b = 0; b < sizeof(publisher_ends) / sizeof(publisher_ends[0]); b++){
			if(publisher_ends[b] == len){
				break;
			}
		}
		rc = fb_props_decode(publisher_bytes, (uint32_t)len, &d);
		if(len == 0 || b < sizeof(publisher_ends) / sizeof(publisher_ends[0])){
			ck_assert_msg(rc == 0, "prefix %zu", len);
			for(n = 0, p = d; p; p = mosquitto_property_next(p)){
				n++;
			}
			ck_assert_uint_eq(n, len == 0 ? 0 : b + 1);
			mosquitto_property_free_all(&d);
		}else{
			ck_assert_msg(rc == -EINVAL, "prefix %zu: %d", len, rc);
			ck_assert_ptr_null(d);
		}
	}
}
END_TEST

START_TEST(props_decode_rejects_garbage)
{
	static const uint8_t unknown_id[] = { 0x7F, 0x00 };
	static const uint8_t skipped_expiry[] = { 0x02, 0x00, 0x00, 0x00, 0x3C };
	static const uint8_t skipped_alias[] = { 0x23, 0x00, 0x01 };
	static const uint8_t not_publish[] = { 0x11, 0x00, 0x00, 0x00, 0x3C }; /* session expiry */
	static const uint8_t dup_content_type[] = { 0x03, 0x00, 0x01, 'x', 0x03, 0x00, 0x01, 'y' };
	static const uint8_t bad_utf8[] = { 0x03, 0x00, 0x02, 0xC0, 0x80 };
	static const uint8_t nul_in_string[] = { 0x26, 0x00, 0x01, 'a', 0x00, 0x02, 'b', 0x00 };
	static const uint8_t long_varint[] = { 0x80, 0x80, 0x80, 0x80, 0x01 };
	static const uint8_t id_zero[] = { 0x00 };
	static const uint8_t two_user_props[] = { 0x26, 0, 1, 'a', 0, 0, 0x26, 0, 1, 'a', 0, 0 };
	mosquitto_property *d = NULL;
	unsigned seed = 99;
	uint8_t rnd[64];
	size_t i, len;
	int rc, round;

#define REJECTS(buf) do{ \
		ck_assert_int_eq(fb_props_decode(buf, sizeof(buf), &d), -EINVAL); \
		ck_assert_ptr_null(d); \
	}while(0)
	REJECTS(unknown_id);
	REJECTS(skipped_expiry);
	REJECTS(skipped_alias);
	REJECTS(not_publish);
	REJECTS(dup_content_type);
	REJECTS(bad_utf8);
	REJECTS(nul_in_string);
	REJECTS(long_varint);
	REJECTS(id_zero);
#undef REJECTS
	ck_assert_int_eq(fb_props_decode(NULL, 3, &d), -EINVAL);

	/* User properties may repeat, even with the same name. */
	ck_assert_int_eq(fb_props_decode(two_user_props, sizeof(two_user_props), &d), 0);
	mosquitto_property_free_all(&d);

	/* Random bytes: no crash, no leak (valgrind), 0 or -EINVAL. */
	for(round = 0; round < 20000; round++){
		len = (size_t)(rand_r(&seed) % (int)sizeof(rnd));
		for(i = 0; i < len; i++){
			rnd[i] = (uint8_t)rand_r(&seed);
			if(round % 2 && i % 4 == 0){
				rnd[i] = (uint8_t)(rand_r(&seed) % 2 ? 0x26 : 0x03);
			}
		}
		rc = fb_props_decode(rnd, (uint32_t)len, &d);
		ck_assert(rc == 0 || rc == -EINVAL);
		mosquitto_property_free_all(&d);
		fb_props_find_user(rnd, (uint32_t)len, "a", NULL);
	}
}
END_TEST

START_TEST(props_remove_user_removes_every_match_in_place)
{
	uint8_t buf[sizeof(publisher_bytes)];
	uint32_t len;
	uint16_t vlen;

	/* Both "a" go, everything else stays, in order, byte for byte. */
	memcpy(buf, publisher_bytes, sizeof(buf));
	len = fb_props_remove_user(buf, sizeof(buf), "a");
	ck_assert_uint_eq(len, sizeof(publisher_bytes) - 2 * 7);
	ck_assert_mem_eq(buf, publisher_bytes + 7, sizeof(publisher_bytes) - 2 * 7);
	ck_assert_ptr_null(fb_props_find_user(buf, len, "a", &vlen));
	ck_assert_ptr_nonnull(fb_props_find_user(buf, len, "b", &vlen));
	/* No match: unchanged. */
	memcpy(buf, publisher_bytes, sizeof(buf));
	ck_assert_uint_eq(fb_props_remove_user(buf, sizeof(buf), "c"), sizeof(publisher_bytes));
	ck_assert_mem_eq(buf, publisher_bytes, sizeof(buf));
	/* Unreadable tail: kept as it is. */
	memcpy(buf, publisher_bytes, sizeof(buf));
	ck_assert_uint_eq(fb_props_remove_user(buf, 7 + 3, "a"), 3);
	ck_assert_mem_eq(buf, publisher_bytes + 7, 3);
	ck_assert_uint_eq(fb_props_remove_user(buf, 0, "a"), 0);
}
END_TEST

START_TEST(props_find_user_returns_first_match)
{
	mosquitto_property *p = publisher_props();
	static const char *const extra[] = { "origin", "site-A" };
	uint8_t *buf = NULL;
	uint32_t len = 0;
	uint16_t vlen = 0;
	const char *v;

	ck_assert_int_eq(fb_props_encode(p, extra, 1, &buf, &len), 0);
	v = fb_props_find_user(buf, len, "a", &vlen);
	ck_assert_ptr_nonnull(v);
	ck_assert_uint_eq(vlen, 1);
	ck_assert_mem_eq(v, "1", 1);
	v = fb_props_find_user(buf, len, "origin", &vlen);
	ck_assert_ptr_nonnull(v);
	ck_assert_uint_eq(vlen, 6);
	ck_assert_mem_eq(v, "site-A", 6);
	ck_assert_ptr_null(fb_props_find_user(buf, len, "orig", &vlen));
	ck_assert_ptr_null(fb_props_find_user(buf, len, "origin2", &vlen));
	/* Content type's value is not a user property named "application/json". */
	ck_assert_ptr_null(fb_props_find_user(buf, len, "application/json", &vlen));
	/* Cut into the extra header: not found, no overread. */
	ck_assert_ptr_null(fb_props_find_user(buf, len - 1, "origin", &vlen));
	ck_assert_ptr_null(fb_props_find_user(NULL, 0, "a", &vlen));
	free(buf);
	mosquitto_property_free_all(&p);
}
END_TEST

/* The PUBLISH sizes of the known record, written out by hand: 0x32 0x0c, topic 00 03 a/b, packet
 * id, property length 02, 01 01, "hi" is 14 bytes; an alias-only PUBLISH drops the topic's three
 * bytes and adds a Topic Alias (23 00 01) of three. */
START_TEST(record_publish_size_counts_every_byte_of_the_packet)
{
	struct fb_record r = known_record();

	ck_assert_uint_eq(fb_record_publish_size(&r, 3, 0), 14);
	ck_assert_uint_eq(fb_record_publish_size(&r, 3, FB_RECORD_ALIAS_PROP_SIZE), 17);
	ck_assert_uint_eq(fb_record_publish_size(&r, 0, FB_RECORD_ALIAS_PROP_SIZE), 14);
	ck_assert_uint_eq(fb_record_publish_size(&r, 3, FB_RECORD_EXPIRY_PROP_SIZE), 19);
	ck_assert_uint_eq(fb_record_publish_size(&r, 3, FB_RECORD_ALIAS_PROP_SIZE + FB_RECORD_EXPIRY_PROP_SIZE), 22);
	r.qos = 0; /* no packet id */
	ck_assert_uint_eq(fb_record_publish_size(&r, 3, 0), 12);
	r.qos = 2;
	ck_assert_uint_eq(fb_record_publish_size(&r, 3, 0), 14);
}
END_TEST

/* The remaining length and the property length grow by a byte at 128 (and the remaining length
 * again at 16384 and 2^21). */
START_TEST(record_publish_size_follows_the_variable_byte_integers)
{
	struct fb_record r = known_record();

	r.props_len = 0;
	r.payload_len = 119; /* remaining length 2 + 3 + 2 + 1 + 119 = 127 */
	ck_assert_uint_eq(fb_record_publish_size(&r, 3, 0), 1 + 1 + 127);
	r.payload_len = 120;
	ck_assert_uint_eq(fb_record_publish_size(&r, 3, 0), 1 + 2 + 128);
	r.payload_len = 16383 - 8;
	ck_assert_uint_eq(fb_record_publish_size(&r, 3, 0), 1 + 2 + 16383);
	r.payload_len = 16384 - 8;
	ck_assert_uint_eq(fb_record_publish_size(&r, 3, 0), 1 + 3 + 16384);
	r.payload_len = 2097152 - 8;
	ck_assert_uint_eq(fb_record_publish_size(&r, 3, 0), 1 + 4 + 2097152);
	r.qos = 0;
	r.payload_len = 0;
	r.props_len = 124; /* with a Topic Alias: 127 bytes of properties, length in one byte */
	ck_assert_uint_eq(fb_record_publish_size(&r, 0, FB_RECORD_ALIAS_PROP_SIZE), 1 + 2 + (2 + 1 + 127));
	r.props_len = 125; /* 128: two bytes */
	ck_assert_uint_eq(fb_record_publish_size(&r, 0, FB_RECORD_ALIAS_PROP_SIZE), 1 + 2 + (2 + 2 + 128));
}
END_TEST

static Suite *record_suite(void)
{
	Suite *s = suite_create("record");
	TCase *tc;

	tc = tcase_create("record");
	tcase_add_test(tc, record_encodes_known_record_to_exact_bytes);
	tcase_add_test(tc, record_decodes_known_bytes_to_every_field);
	tcase_add_test(tc, record_lane_in_flags_and_old_records_in_default_lane);
	tcase_add_test(tc, record_round_trips_all_qos_retain_and_empty_fields);
	tcase_add_test(tc, record_round_trips_large_payload);
	tcase_add_test(tc, record_expiry_bit_63_marks_a_rule_ttl);
	tcase_add_test(tc, record_rejects_every_truncation);
	tcase_add_test(tc, record_rejects_garbage);
	tcase_add_test(tc, record_publish_size_counts_every_byte_of_the_packet);
	tcase_add_test(tc, record_publish_size_follows_the_variable_byte_integers);
	suite_add_tcase(s, tc);

	tc = tcase_create("props");
	tcase_add_test(tc, props_encode_to_exact_mqtt5_bytes);
	tcase_add_test(tc, props_round_trip_in_order);
	tcase_add_test(tc, props_skip_alias_subscription_id_and_expiry);
	tcase_add_test(tc, props_extra_headers_follow_publisher_properties);
	tcase_add_test(tc, props_encode_into_reuses_its_buffer_and_matches_props_encode);
	tcase_add_test(tc, props_publisher_cannot_spoof_origin_or_headers);
	tcase_add_test(tc, props_encode_rejects_bad_extra_headers);
	tcase_add_test(tc, props_empty_encode_and_decode);
	tcase_add_test(tc, props_decode_rejects_every_truncation);
	tcase_add_test(tc, props_decode_rejects_garbage);
	tcase_add_test(tc, props_find_user_returns_first_match);
	tcase_add_test(tc, props_remove_user_removes_every_match_in_place);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(record_suite());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
