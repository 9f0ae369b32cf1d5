/* libFuzzer target (test/fuzz, runs in the fuzzer process): the spool record and property
 * decoders, which read what comes back from disk.
 *
 * The first byte chooses what the rest is: even, a spool record (fb_record_decode()); odd, an
 * encoded property list (fb_props_decode()). Checks, besides no crash, leak or out-of-bounds read:
 * - a record that decodes re-encodes to the same bytes, and its fields lie inside the input;
 * - fb_props_decode() answers the same whatever follows the buffer;
 * - a property list that decodes re-encodes (fb_props_encode(), fb_props_encode_into()) to bytes
 *   that decode again and re-encode identically; the re-encoding holds the user properties in
 *   order, as fb_props_find_user() and libmosquitto's list agree on the first one of a name.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "record.h"

static void fail(const char *what)
{
	fprintf(stderr, "%s\n", what);
	abort();
}

/* Encodes LIST, decodes that, and encodes again: both encodings must be equal. */
static void props_roundtrip(const mosquitto_property *list)
{
	static const char *const extra[] = { FB_ORIGIN_PROPERTY, "site-A" };
	uint8_t *e1 = NULL, *e2 = NULL, *into = NULL;
	uint32_t l1 = 0, l2 = 0, linto = 0;
	size_t cap = 0;
	mosquitto_property *again = NULL;
	int rc;

	rc = fb_props_encode(list, extra, 1, &e1, &l1);
	if(rc == -E2BIG){
		return;
	}
	if(rc != 0){
		fail("a decoded property list does not encode");
	}
	if(fb_props_decode(e1, l1, &again) != 0){
		fail("an encoded property list does not decode");
	}
	/* the origin added last is the last user property: the first one of its name when the input
	 * had none */
	uint16_t vlen = 0;
	const char *v = fb_props_find_user(e1, l1, FB_ORIGIN_PROPERTY, &vlen);
	if(v == NULL){
		fail("the origin property is not found in the encoding");
	}
	char *name = NULL, *value = NULL;
	const mosquitto_property *p = mosquitto_property_read_string_pair(again, MQTT_PROP_USER_PROPERTY,
			&name, &value, false);
	while(p && strcmp(name, FB_ORIGIN_PROPERTY) != 0){
		free(name);
		free(value);
		name = value = NULL;
		p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, true);
	}
	if(p == NULL || strlen(value) != vlen || memcmp(value, v, vlen) != 0){
		fail("fb_props_find_user() and the decoded list disagree");
	}
	free(name);
	free(value);
	/* without the extra property: the same as fb_props_encode_into() with no suffix */
	rc = fb_props_encode(again, NULL, 0, &e2, &l2);
	if(rc != 0 || l2 != l1 || (l1 && memcmp(e1, e2, l1) != 0)){
		fail("re-encoding a decoded encoding changed it");
	}
	/* into a buffer, with a suffix: the list without the publisher's origin and without user
	 * properties of a name the suffix sets (a publisher cannot spoof them), then the suffix.
	 * The expected prefix is fb_props_encode() with both names as extras, less the extras' own
	 * encoding at its end. */
	static const char *const sfx_pair[] = { "flowmq-fuzz-suffix", "1" };
	static const char *const both[] = { FB_ORIGIN_PROPERTY, "o", "flowmq-fuzz-suffix", "1" };
	uint8_t *sfx = NULL, *tail = NULL, *pre = NULL;
	uint32_t lsfx = 0, ltail = 0, lpre = 0;

	if(fb_props_encode(NULL, sfx_pair, 1, &sfx, &lsfx) != 0 || fb_props_encode(NULL, both, 2, &tail, &ltail) != 0){
		fail("encoding fixed user properties failed");
	}
	rc = fb_props_encode(again, both, 2, &pre, &lpre);
	if(rc == 0){
		if(lpre < ltail || memcmp(pre + lpre - ltail, tail, ltail) != 0){
			fail("fb_props_encode() does not end with its extras");
		}
		lpre -= ltail;
		rc = fb_props_encode_into(again, sfx, lsfx, &into, &cap, &linto);
		if(rc == 0){
			if(linto != lpre + lsfx || memcmp(into, pre, lpre) != 0 || memcmp(into + lpre, sfx, lsfx) != 0){
				fail("fb_props_encode_into() differs from fb_props_encode()");
			}
		}else if(rc != -E2BIG){
			fail("fb_props_encode_into() failed");
		}
	}else if(rc != -E2BIG){
		fail("fb_props_encode() with two extras failed");
	}
	free(sfx);
	free(tail);
	free(pre);
	free(into);
	free(e1);
	free(e2);
	mosquitto_property_free_all(&again);
}

static void props(const uint8_t *buf, uint32_t len)
{
	mosquitto_property *list = (mosquitto_property *)1, *padded_list = NULL;
	uint8_t *padded;
	uint16_t vlen;
	int rc, padded_rc;

	(void)fb_props_find_user(buf, len, FB_ORIGIN_PROPERTY, &vlen);
	/* The answer must not depend on the bytes after the buffer (ASan sees reads past it in our
	 * code, not in libmosquitto's): the same bytes followed by UTF-8 continuation bytes, which a
	 * decoder reading past the end would take for the rest of a truncated character. */
	padded = malloc((size_t)len + 4);
	if(padded == NULL){
		abort();
	}
	if(len){
		memcpy(padded, buf, len);
	}
	memset(padded + len, 0x80, 4);
	padded_rc = fb_props_decode(padded, len, &padded_list);
	mosquitto_property_free_all(&padded_list);
	free(padded);
	rc = fb_props_decode(buf, len, &list);
	if(rc != padded_rc){
		fprintf(stderr, "fb_props_decode: %d, with continuation bytes after the buffer: %d\n", rc,
				padded_rc);
		fail("fb_props_decode() reads past the end of its buffer");
	}
	if(rc != 0){
		if(list != NULL || (rc != -EINVAL && rc != -ENOMEM)){
			fail("fb_props_decode() failed but returned a list or an unexpected error");
		}
		return;
	}
	props_roundtrip(list);
	mosquitto_property_free_all(&list);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fb_record r;
	uint8_t *copy, *enc;

	if(size < 1){
		return 0;
	}
	/* an exact-size copy: ASan sees every read past the end */
	copy = malloc(size - 1 ? size - 1 : 1);
	if(copy == NULL){
		abort();
	}
	memcpy(copy, data + 1, size - 1);
	if(data[0] & 1){
		props(size > 1 ? copy : NULL, (uint32_t)(size - 1));
		free(copy);
		return 0;
	}
	if(fb_record_decode(copy, size - 1, &r) == 0){
		const uint8_t *end = copy + (size - 1);
		if(r.qos > 2 || (const uint8_t *)r.topic + r.topic_len > end
				|| (r.props_len && r.props + r.props_len > end)
				|| (const uint8_t *)r.payload + r.payload_len != end){
			fail("a decoded field lies outside the input");
		}
		if(fb_record_size(&r) != size - 1){
			fail("fb_record_size() of a decoded record differs from its length");
		}
		enc = malloc(size - 1);
		if(enc == NULL){
			abort();
		}
		if(fb_record_encode(&r, enc) != size - 1 || memcmp(enc, copy, size - 1) != 0){
			fail("a decoded record re-encodes differently");
		}
		free(enc);
		props(r.props, r.props_len);
	}
	free(copy);
	return 0;
}
