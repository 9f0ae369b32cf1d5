/* flowmq-bridge: the spool record format and the MQTT v5 property encoding (see record.h); either
 * process, any thread.
 *
 * Properties are stored in the MQTT v5 wire encoding (spec 2.2.2.2): the identifier as a variable
 * byte integer, then the value in the encoding its type prescribes. Only what fb_props_encode()
 * writes is accepted back by fb_props_decode(): the properties a forwarded PUBLISH may carry.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mqtt_protocol.h>

#include "bytes.h"
#include "record.h"

#define REC_HEADER_LEN (1 + 1 + 8 + 8 + 2) /* up to the topic bytes */
#define REC_FLAG_QOS   0x03
#define REC_FLAG_RETAIN 0x04
#define REC_FLAG_LANE  0x78 /* the lane + 1; 0: written before lanes, FB_LANE_DEFAULT */
#define REC_LANE_SHIFT 3
#define REC_FLAG_LIVE_FIRST 0x80 /* the rule has live_first: true */
#define REC_EXPIRY_LOCAL (UINT64_C(1) << 63) /* in the expiry field: it is a rule's ttl */
#define VARINT_MAX     268435455U /* largest value of a 4-byte variable byte integer */

/* ---- records ---- */

size_t fb_record_size(const struct fb_record *r)
{
	return REC_HEADER_LEN + r->topic_len + 4 + (size_t)r->props_len + r->payload_len;
}

static size_t varint_size(size_t v)
{
	return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4;
}

size_t fb_record_publish_size(const struct fb_record *r, size_t topic_len, size_t extra_props)
{
	size_t props = r->props_len + extra_props;
	size_t rest = 2 + topic_len + (r->qos ? 2 : 0) + varint_size(props) + props + r->payload_len;

	return 1 + varint_size(rest) + rest;
}

size_t fb_record_encode(const struct fb_record *r, uint8_t *buf)
{
	uint8_t *p = buf;

	*p++ = FB_RECORD_VERSION;
	*p++ = (uint8_t)((r->qos & REC_FLAG_QOS) | (r->retain ? REC_FLAG_RETAIN : 0)
			| (r->lane < FB_LANES && r->lane != FB_LANE_DEFAULT ? ((unsigned)r->lane + 1) << REC_LANE_SHIFT : 0)
			| (r->live_first ? REC_FLAG_LIVE_FIRST : 0));
	fb_put_be64(p, r->enqueue_ms);
	fb_put_be64(p + 8, r->expiry_ms | (r->expiry_local ? REC_EXPIRY_LOCAL : 0));
	fb_put_be16(p + 16, r->topic_len);
	p += 18;
	if(r->topic_len){
		memcpy(p, r->topic, r->topic_len);
		p += r->topic_len;
	}
	fb_put_be32(p, r->props_len);
	p += 4;
	if(r->props_len){
		memcpy(p, r->props, r->props_len);
		p += r->props_len;
	}
	if(r->payload_len){
		memcpy(p, r->payload, r->payload_len);
		p += r->payload_len;
	}
	return (size_t)(p - buf);
}

static int props_validate(const uint8_t *buf, uint32_t len);

bool fb_record_live_first(const void *val, size_t len)
{
	const uint8_t *p = val;

	return val != NULL && len >= 2 && p[0] == FB_RECORD_VERSION && (p[1] & REC_FLAG_LIVE_FIRST) != 0;
}

unsigned fb_record_lane(const void *val, size_t len)
{
	const uint8_t *p = val;
	unsigned l;

	if(val == NULL || len < 2 || p[0] != FB_RECORD_VERSION){
		return FB_LANE_DEFAULT;
	}
	l = (p[1] & REC_FLAG_LANE) >> REC_LANE_SHIFT;
	return l == 0 || l > FB_LANES ? FB_LANE_DEFAULT : l - 1;
}

int fb_record_decode(const void *buf, size_t len, struct fb_record *r)
{
	const uint8_t *p = buf;
	size_t pos, rest;
	uint8_t flags;

	if(buf == NULL || len < REC_HEADER_LEN || p[0] != FB_RECORD_VERSION){
		return -EINVAL;
	}
	flags = p[1];
	if((flags & ~(REC_FLAG_QOS | REC_FLAG_RETAIN | REC_FLAG_LANE | REC_FLAG_LIVE_FIRST)) != 0
			|| (flags & REC_FLAG_QOS) == 3
			|| ((flags & REC_FLAG_LANE) >> REC_LANE_SHIFT) > FB_LANES
			|| ((flags & REC_FLAG_LANE) >> REC_LANE_SHIFT) == FB_LANE_DEFAULT + 1){
		/* (The default lane is written as 0 only: one encoding per record.) */
		return -EINVAL;
	}
	memset(r, 0, sizeof(*r));
	r->qos = flags & REC_FLAG_QOS;
	r->retain = (flags & REC_FLAG_RETAIN) != 0;
	r->live_first = (flags & REC_FLAG_LIVE_FIRST) != 0;
	r->lane = (flags & REC_FLAG_LANE) ? (uint8_t)(((flags & REC_FLAG_LANE) >> REC_LANE_SHIFT) - 1) : FB_LANE_DEFAULT;
	r->enqueue_ms = fb_get_be64(p + 2);
	r->expiry_ms = fb_get_be64(p + 10);
	r->expiry_local = (r->expiry_ms & REC_EXPIRY_LOCAL) != 0;
	r->expiry_ms &= ~REC_EXPIRY_LOCAL;
	r->topic_len = fb_get_be16(p + 18);
	pos = REC_HEADER_LEN;

	if(len - pos < r->topic_len){
		return -EINVAL;
	}
	r->topic = (const char *)p + pos;
	pos += r->topic_len;

	if(len - pos < 4){
		return -EINVAL;
	}
	r->props_len = fb_get_be32(p + pos);
	pos += 4;
	if(len - pos < r->props_len){
		return -EINVAL;
	}
	r->props = r->props_len ? p + pos : NULL;
	pos += r->props_len;
	if(props_validate(r->props, r->props_len) != 0){
		return -EINVAL;
	}

	rest = len - pos;
	if(rest > UINT32_MAX){
		return -EINVAL;
	}
	r->payload = p + pos;
	r->payload_len = (uint32_t)rest;
	return 0;
}

/* ---- properties ---- */

enum prop_use {
	PROP_UNKNOWN = 0, /* not valid in a PUBLISH: never written, rejected when read */
	PROP_FORWARD,     /* kept on the forwarded PUBLISH */
	PROP_SKIP,        /* valid in a PUBLISH, but not forwarded (see record.h) */
};

struct prop_info {
	uint8_t type; /* enum mqtt5_property_type */
	uint8_t use;  /* enum prop_use */
};

/* The PUBLISH properties of MQTT v5 (spec 3.3.2.3). */
static const struct prop_info prop_table[MQTT_PROP_SHARED_SUB_AVAILABLE + 1] = {
	[MQTT_PROP_PAYLOAD_FORMAT_INDICATOR] = { MQTT_PROP_TYPE_BYTE, PROP_FORWARD },
	[MQTT_PROP_MESSAGE_EXPIRY_INTERVAL] = { MQTT_PROP_TYPE_INT32, PROP_SKIP },
	[MQTT_PROP_CONTENT_TYPE] = { MQTT_PROP_TYPE_STRING, PROP_FORWARD },
	[MQTT_PROP_RESPONSE_TOPIC] = { MQTT_PROP_TYPE_STRING, PROP_FORWARD },
	[MQTT_PROP_CORRELATION_DATA] = { MQTT_PROP_TYPE_BINARY, PROP_FORWARD },
	[MQTT_PROP_SUBSCRIPTION_IDENTIFIER] = { MQTT_PROP_TYPE_VARINT, PROP_SKIP },
	[MQTT_PROP_TOPIC_ALIAS] = { MQTT_PROP_TYPE_INT16, PROP_SKIP },
	[MQTT_PROP_USER_PROPERTY] = { MQTT_PROP_TYPE_STRING_PAIR, PROP_FORWARD },
};

static const struct prop_info *prop_lookup(uint32_t id)
{
	if(id >= sizeof(prop_table) / sizeof(prop_table[0]) || prop_table[id].use == PROP_UNKNOWN){
		return NULL;
	}
	return &prop_table[id];
}

/* One parsed property; pointers point into the encoded buffer. */
struct prop_view {
	uint32_t id;
	const struct prop_info *info;
	uint32_t num;        /* byte, two-byte, four-byte and variable byte integers */
	const uint8_t *a;    /* string, binary data, or the name of a string pair */
	uint16_t alen;
	const uint8_t *b;    /* the value of a string pair */
	uint16_t blen;
};

static int read_varint(const uint8_t *buf, uint32_t len, uint32_t *pos, uint32_t *out)
{
	uint32_t v = 0;
	int i;

	for(i = 0; i < 4; i++){
		if(*pos >= len){
			return -EINVAL;
		}
		v |= (uint32_t)(buf[*pos] & 0x7F) << (7 * i);
		if((buf[(*pos)++] & 0x80) == 0){
			*out = v;
			return 0;
		}
	}
	return -EINVAL; /* more than four bytes */
}

static int read_lenstr(const uint8_t *buf, uint32_t len, uint32_t *pos,
		const uint8_t **s, uint16_t *slen)
{
	if(len - *pos < 2){
		return -EINVAL;
	}
	*slen = fb_get_be16(buf + *pos);
	*pos += 2;
	if(len - *pos < *slen){
		return -EINVAL;
	}
	*s = buf + *pos;
	*pos += *slen;
	return 0;
}

/* Parses the property at buf[*pos] (pos < len) and advances *pos. Returns 0 or -EINVAL. */
static int prop_parse(const uint8_t *buf, uint32_t len, uint32_t *pos, struct prop_view *v)
{
	memset(v, 0, sizeof(*v));
	if(read_varint(buf, len, pos, &v->id) != 0){
		return -EINVAL;
	}
	v->info = prop_lookup(v->id);
	if(v->info == NULL){
		return -EINVAL;
	}
	switch(v->info->type){
		case MQTT_PROP_TYPE_BYTE:
			if(len - *pos < 1){
				return -EINVAL;
			}
			v->num = buf[(*pos)++];
			return 0;
		case MQTT_PROP_TYPE_INT16:
			if(len - *pos < 2){
				return -EINVAL;
			}
			v->num = fb_get_be16(buf + *pos);
			*pos += 2;
			return 0;
		case MQTT_PROP_TYPE_INT32:
			if(len - *pos < 4){
				return -EINVAL;
			}
			v->num = fb_get_be32(buf + *pos);
			*pos += 4;
			return 0;
		case MQTT_PROP_TYPE_VARINT:
			return read_varint(buf, len, pos, &v->num);
		case MQTT_PROP_TYPE_STRING:
		case MQTT_PROP_TYPE_BINARY:
			return read_lenstr(buf, len, pos, &v->a, &v->alen);
		case MQTT_PROP_TYPE_STRING_PAIR:
			if(read_lenstr(buf, len, pos, &v->a, &v->alen) != 0){
				return -EINVAL;
			}
			return read_lenstr(buf, len, pos, &v->b, &v->blen);
		default:
			return -EINVAL;
	}
}

static int props_validate(const uint8_t *buf, uint32_t len)
{
	struct prop_view v;
	uint32_t pos = 0;

	while(pos < len){
		if(prop_parse(buf, len, &pos, &v) != 0){
			return -EINVAL;
		}
	}
	return 0;
}

/* A growable output buffer for fb_props_encode(). */
struct obuf {
	uint8_t *p;
	size_t len;
	size_t cap;
	int err;
};

static uint8_t *obuf_reserve(struct obuf *o, size_t n)
{
	size_t cap;
	uint8_t *p;

	if(o->err){
		return NULL;
	}
	if(o->cap - o->len < n){
		cap = o->cap ? o->cap : 64;
		while(cap - o->len < n){
			cap *= 2;
		}
		p = realloc(o->p, cap);
		if(p == NULL){
			o->err = -ENOMEM;
			return NULL;
		}
		o->p = p;
		o->cap = cap;
	}
	p = o->p + o->len;
	o->len += n;
	return p;
}

static void obuf_varint(struct obuf *o, uint32_t v)
{
	uint8_t tmp[4];
	size_t n = 0;
	uint8_t *p;

	do{
		tmp[n] = v & 0x7F;
		v >>= 7;
		if(v){
			tmp[n] |= 0x80;
		}
		n++;
	}while(v && n < sizeof(tmp));
	p = obuf_reserve(o, n);
	if(p){
		memcpy(p, tmp, n);
	}
}

static void obuf_num(struct obuf *o, uint8_t type, uint32_t v)
{
	uint8_t *p;

	switch(type){
		case MQTT_PROP_TYPE_BYTE:
			if((p = obuf_reserve(o, 1)) != NULL){
				*p = (uint8_t)v;
			}
			break;
		case MQTT_PROP_TYPE_INT16:
			if((p = obuf_reserve(o, 2)) != NULL){
				fb_put_be16(p, (uint16_t)v);
			}
			break;
		case MQTT_PROP_TYPE_INT32:
			if((p = obuf_reserve(o, 4)) != NULL){
				fb_put_be32(p, v);
			}
			break;
		default:
			obuf_varint(o, v);
			break;
	}
}

static void obuf_lenstr(struct obuf *o, const void *s, size_t n)
{
	uint8_t *p;

	if(n > UINT16_MAX){
		if(!o->err){
			o->err = -EINVAL;
		}
		return;
	}
	p = obuf_reserve(o, 2 + n);
	if(p){
		fb_put_be16(p, (uint16_t)n);
		if(n){
			memcpy(p + 2, s, n);
		}
	}
}

/* User properties that the bridge sets itself (a rule's headers, the origin marker): a publisher's
 * own property of the same name is dropped, so that the cloud sees only the bridge's value. */
struct replaced {
	const uint8_t *suffix;      /* encoded user properties (fb_props_encode_into()), or NULL */
	uint32_t suffix_len;
	const char *const *extra;   /* name/value pairs (fb_props_encode()), or NULL */
	size_t extra_count;
	bool origin;                /* FB_ORIGIN_PROPERTY too */
};

static bool is_replaced(const struct replaced *r, const char *name)
{
	size_t nlen = strlen(name);
	struct prop_view v;
	uint32_t pos = 0;

	if(r->origin && strcmp(name, FB_ORIGIN_PROPERTY) == 0){
		return true;
	}
	for(size_t i = 0; i < r->extra_count; i++){
		if(r->extra[2 * i] && strcmp(name, r->extra[2 * i]) == 0){
			return true;
		}
	}
	while(pos < r->suffix_len){
		if(prop_parse(r->suffix, r->suffix_len, &pos, &v) != 0){
			break;
		}
		if(v.id == MQTT_PROP_USER_PROPERTY && v.alen == nlen && memcmp(v.a, name, nlen) == 0){
			return true;
		}
	}
	return false;
}

/* Appends the current property P (identifier ID, described by INFO) to O, unless it is a user
 * property that R replaces. */
static void encode_one(struct obuf *o, const mosquitto_property *p, int id,
		const struct prop_info *info, const struct replaced *r)
{
	uint8_t v8 = 0;
	uint16_t v16 = 0, blen = 0;
	uint32_t v32 = 0;
	char *s = NULL, *name = NULL;
	void *bin = NULL;
	const mosquitto_property *found = NULL;

	/* mosquitto_property_read_*() search from P for ID: P itself matches, so they read P. */
	switch(info->type){
		case MQTT_PROP_TYPE_BYTE:
			found = mosquitto_property_read_byte(p, id, &v8, false);
			v32 = v8;
			break;
		case MQTT_PROP_TYPE_INT16:
			found = mosquitto_property_read_int16(p, id, &v16, false);
			v32 = v16;
			break;
		case MQTT_PROP_TYPE_INT32:
			found = mosquitto_property_read_int32(p, id, &v32, false);
			break;
		case MQTT_PROP_TYPE_VARINT:
			found = mosquitto_property_read_varint(p, id, &v32, false);
			break;
		case MQTT_PROP_TYPE_STRING:
			found = mosquitto_property_read_string(p, id, &s, false);
			break;
		case MQTT_PROP_TYPE_BINARY:
			found = mosquitto_property_read_binary(p, id, &bin, &blen, false);
			break;
		case MQTT_PROP_TYPE_STRING_PAIR:
			found = mosquitto_property_read_string_pair(p, id, &name, &s, false);
			break;
	}
	if(found != p){
		/* The readers return NULL only when out of memory here. */
		if(!o->err){
			o->err = -ENOMEM;
		}
		goto out;
	}
	if(info->type == MQTT_PROP_TYPE_STRING_PAIR && is_replaced(r, name)){
		goto out;
	}

	obuf_varint(o, (uint32_t)id);
	switch(info->type){
		case MQTT_PROP_TYPE_STRING:
			obuf_lenstr(o, s, strlen(s));
			break;
		case MQTT_PROP_TYPE_BINARY:
			obuf_lenstr(o, bin, blen);
			break;
		case MQTT_PROP_TYPE_STRING_PAIR:
			obuf_lenstr(o, name, strlen(name));
			obuf_lenstr(o, s, strlen(s));
			break;
		default:
			obuf_num(o, info->type, v32);
			break;
	}
out:
	free(s);
	free(name);
	free(bin);
}

/* The forwardable properties of PROPS into O, without the user properties that R replaces. */
static void encode_forwarded(struct obuf *o, const mosquitto_property *props, const struct replaced *r)
{
	const mosquitto_property *p;
	const struct prop_info *info;
	int id;

	for(p = props; p != NULL && !o->err; p = mosquitto_property_next(p)){
		id = mosquitto_property_identifier(p);
		info = id > 0 ? prop_lookup((uint32_t)id) : NULL;
		if(info == NULL || info->use != PROP_FORWARD){
			continue;
		}
		encode_one(o, p, id, info, r);
	}
}

int fb_props_encode(const mosquitto_property *props, const char *const *extra, size_t extra_count,
		uint8_t **out, uint32_t *len)
{
	struct obuf o = { 0 };
	const struct replaced r = { .extra = extra, .extra_count = extra_count };
	size_t i, nlen, vlen;

	*out = NULL;
	*len = 0;

	encode_forwarded(&o, props, &r);
	for(i = 0; i < extra_count && !o.err; i++){
		const char *name = extra[2 * i], *value = extra[2 * i + 1];

		if(name == NULL || value == NULL){
			o.err = -EINVAL;
			break;
		}
		nlen = strlen(name);
		vlen = strlen(value);
		if(nlen > UINT16_MAX || vlen > UINT16_MAX
				|| mosquitto_validate_utf8(name, (int)nlen) != MOSQ_ERR_SUCCESS
				|| mosquitto_validate_utf8(value, (int)vlen) != MOSQ_ERR_SUCCESS){
			o.err = -EINVAL;
			break;
		}
		obuf_varint(&o, MQTT_PROP_USER_PROPERTY);
		obuf_lenstr(&o, name, nlen);
		obuf_lenstr(&o, value, vlen);
	}

	if(!o.err && o.len > VARINT_MAX){
		o.err = -E2BIG; /* would not fit into a PUBLISH */
	}
	if(o.err){
		free(o.p);
		return o.err;
	}
	if(o.len == 0){
		free(o.p);
		return 0;
	}
	*out = o.p;
	*len = (uint32_t)o.len;
	return 0;
}

int fb_props_encode_into(const mosquitto_property *props, const uint8_t *suffix, uint32_t suffix_len,
		uint8_t **buf, size_t *cap, uint32_t *len)
{
	struct obuf o = { .p = *buf, .cap = *buf ? *cap : 0 };
	const struct replaced r = { .suffix = suffix, .suffix_len = suffix_len, .origin = true };
	uint8_t *p;

	*len = 0;
	encode_forwarded(&o, props, &r);
	if(suffix_len && (p = obuf_reserve(&o, suffix_len)) != NULL){
		memcpy(p, suffix, suffix_len);
	}
	if(!o.err && o.len > VARINT_MAX){
		o.err = -E2BIG; /* would not fit into a PUBLISH */
	}
	*buf = o.p;
	*cap = o.cap;
	if(o.err){
		return o.err;
	}
	*len = (uint32_t)o.len;
	return 0;
}

/* A NUL-terminated copy of a UTF-8 string from the encoding, or NULL (*err set). */
static char *dup_utf8(const uint8_t *s, uint16_t n, int *err)
{
	char *c;

	c = malloc((size_t)n + 1);
	if(c == NULL){
		*err = -ENOMEM;
		return NULL;
	}
	if(n){
		memcpy(c, s, n);
	}
	c[n] = '\0';
	/* The terminated copy, not S: libmosquitto 2.0.11's check reads up to 3 bytes past N when the
	 * string ends inside a multi-byte character, and takes what follows for its rest; the NUL
	 * stops it there. */
	if(mosquitto_validate_utf8(c, n) != MOSQ_ERR_SUCCESS){
		free(c);
		*err = -EINVAL;
		return NULL;
	}
	return c;
}

static int mosq_err(int rc)
{
	if(rc == MOSQ_ERR_SUCCESS){
		return 0;
	}
	return rc == MOSQ_ERR_NOMEM ? -ENOMEM : -EINVAL;
}

int fb_props_decode(const uint8_t *buf, uint32_t len, mosquitto_property **out)
{
	mosquitto_property *list = NULL;
	struct prop_view v;
	uint32_t pos = 0;
	uint64_t seen = 0; /* identifiers below 64 that were present, to refuse duplicates */
	char *a = NULL, *b = NULL;
	int rc = 0;

	*out = NULL;
	if(buf == NULL && len > 0){
		return -EINVAL;
	}
	while(pos < len){
		if(prop_parse(buf, len, &pos, &v) != 0 || v.info->use != PROP_FORWARD){
			rc = -EINVAL;
			break;
		}
		/* The spec allows only user properties more than once in a PUBLISH. */
		if(v.id != MQTT_PROP_USER_PROPERTY && (seen & (1ULL << v.id))){
			rc = -EINVAL;
			break;
		}
		seen |= 1ULL << v.id;

		switch(v.info->type){
			case MQTT_PROP_TYPE_BYTE:
				rc = mosq_err(mosquitto_property_add_byte(&list, (int)v.id, (uint8_t)v.num));
				break;
			case MQTT_PROP_TYPE_BINARY:
				rc = mosq_err(mosquitto_property_add_binary(&list, (int)v.id, v.a, v.alen));
				break;
			case MQTT_PROP_TYPE_STRING:
				if((a = dup_utf8(v.a, v.alen, &rc)) != NULL){
					rc = mosq_err(mosquitto_property_add_string(&list, (int)v.id, a));
				}
				break;
			case MQTT_PROP_TYPE_STRING_PAIR:
				if((a = dup_utf8(v.a, v.alen, &rc)) != NULL
						&& (b = dup_utf8(v.b, v.blen, &rc)) != NULL){
					rc = mosq_err(mosquitto_property_add_string_pair(&list, (int)v.id, a, b));
				}
				break;
			default:
				/* Only the types of forwarded properties can get here. */
				rc = -EINVAL;
				break;
		}
		free(a);
		free(b);
		a = b = NULL;
		if(rc){
			break;
		}
	}
	if(rc){
		mosquitto_property_free_all(&list);
		return rc;
	}
	*out = list;
	return 0;
}

const char *fb_props_find_user(const uint8_t *buf, uint32_t len, const char *name, uint16_t *vlen)
{
	struct prop_view v;
	uint32_t pos = 0;
	size_t nlen;

	if(buf == NULL || name == NULL){
		return NULL;
	}
	nlen = strlen(name);
	while(pos < len){
		if(prop_parse(buf, len, &pos, &v) != 0){
			return NULL;
		}
		if(v.id == MQTT_PROP_USER_PROPERTY && v.alen == nlen && memcmp(v.a, name, nlen) == 0){
			if(vlen){
				*vlen = v.blen;
			}
			return (const char *)v.b;
		}
	}
	return NULL;
}

static uint64_t clock_ms(clockid_t clock)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

uint64_t fb_wall_ms(void)
{
	return clock_ms(CLOCK_REALTIME);
}

uint64_t fb_mono_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

void fb_sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while(nanosleep(&ts, &ts) != 0 && errno == EINTR){
	}
}

uint32_t fb_props_remove_user(uint8_t *buf, uint32_t len, const char *name)
{
	struct prop_view v;
	uint32_t pos = 0, start, out = 0;
	size_t nlen = strlen(name);

	while(pos < len){
		start = pos;
		if(prop_parse(buf, len, &pos, &v) != 0){
			memmove(buf + out, buf + start, len - start); /* unreadable: kept as it is */
			return out + (len - start);
		}
		if(v.id == MQTT_PROP_USER_PROPERTY && v.alen == nlen && memcmp(v.a, name, nlen) == 0){
			continue;
		}
		memmove(buf + out, buf + start, pos - start);
		out += pos - start;
	}
	return out;
}
