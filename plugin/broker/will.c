/* flowmq-bridge: the loopback subscriber that forwards Wills. Broker process, broker thread.
 *
 * Why a subscriber (see will.h): Mosquitto 2.0.11 sends a Will from context__send_will() (a
 * connection that died or timed out), from will_delay__check() (a delayed Will that came due) and
 * from handle__connect() (a session taken over), straight into the subscription tree; the only
 * plugin event on that path is MOSQ_EVT_ACL_CHECK with MOSQ_ACL_WRITE. An ACL callback cannot
 * capture Wills without taking part in access control: 2.0.11 asks the MOSQ_EVT_ACL_CHECK
 * callbacks in registration order (plugins in mosquitto.conf order, then the acl_file check, which
 * is registered after every plugin), stops at the first answer that is not MOSQ_ERR_PLUGIN_DEFER,
 * and turns "everyone deferred" into a denial, whereas no callback at all means "allowed". So
 *   - with no other access control, deferring denies every publish, subscription and delivery;
 *   - with an acl_file or a plugin after us, answering MOSQ_ERR_SUCCESS bypasses it (and the
 *     older auth plugins, versions 2 to 4, which are asked only after every callback deferred);
 *   - a plugin before us that answers hides the Will from us;
 *   - our callback runs before the acl_file's, so it cannot know whether the Will is allowed;
 *   - the event carries no properties (2.0.11 passes NULL), so user properties, content type and
 *     the rest of a Will would be lost; and it would run for every delivery of every message.
 * A subscriber sees exactly what the broker delivered, after every access check, with the
 * properties, on every path. The price is one more delivery per message on a rule's filter.
 *
 * How a copy is told from a Will: the MOSQ_EVT_MESSAGE callback runs before the broker queues the
 * message to its subscribers, so the capture's note (topic and payload hash) is always there before
 * the copy arrives here. Notes are counted per hash (the same message may be published twice),
 * consumed by the copy, and forgotten after NOTE_TTL_MS or when NOTE_CAP newer notes push them out
 * (a copy that never comes: a publish refused later, a QoS 2 publish never released).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "bytes.h"
#include "config.h"
#include "notes.h"
#include "record.h"
#include "route.h"
#include "will.h"

/* Notes remembered at most, and for how long. */
#define NOTE_CAP (1u << 16)
#define NOTE_TTL_MS 10000
/* Keepalive of the loopback connection. */
#define KEEPALIVE_S 60
/* Pauses between connection attempts. */
#define RETRY_MIN_MS 500
#define RETRY_MAX_MS 30000
/* How long the probe may take to come back. */
#define PROBE_TIMEOUT_MS 10000
/* Packets read per pass at most, so that one tick stays short; the rest waits in the socket. */
#define READ_BUDGET 1024
/* A pass runs at most this often (coarse clock, 1 to 4 ms steps), so that a busy broker's loop
 * turns do not each pay for a read that finds nothing; Wills wait that much longer. */
#define READ_EVERY_MS 5
/* The probe's topic ('$': clients' '#' subscriptions do not see it); its random payload is what
 * proves that the loopback reached this broker. */
#define PROBE_TOPIC "$flowmq-bridge/loopback"

enum state {
	W_IDLE,        /* not connected; the next attempt at retry_ms */
	W_CONNECTING,  /* CONNECT sent, waiting for CONNACK */
	W_SUBSCRIBING, /* waiting for SUBACKs */
	W_PROBING,     /* probe published, waiting for it to come back */
	W_READY,       /* forwarding */
};

struct fb_will {
	struct fb_logger lg;
	struct fb_host host;
	struct fb_bridge *b;
	char *addr;          /* host, port and user for log lines */
	int port;
	char *username;
	char *password;
	char *client_id;
	enum state state;
	int fd;              /* the loopback connection, -1: none */
	uint8_t *in;         /* received bytes not handled yet */
	size_t in_len, in_cap;
	uint8_t *out;        /* bytes to send, from out_off */
	size_t out_off, out_len, out_cap;
	char *topic;         /* the current PUBLISH's topic, NUL-terminated */
	size_t topic_cap;
	uint16_t mid;        /* last packet identifier */
	uint64_t last_out_ms; /* coarse clock of the last write */
	uint64_t ping_ms;    /* coarse clock of the PINGREQ waiting for its PINGRESP, 0: none */

	char **filters;      /* local filters of the edge_to_cloud rules, '$' ones left out */
	size_t nfilters;
	bool *overlaps;      /* filters[i] can match a topic that another filter matches too */
	size_t subacks;      /* SUBACKs still expected */
	bool reconnect;      /* the rules changed: start a fresh connection */

	char nonce[33];
	uint64_t deadline_ms; /* of the CONNACK, the SUBACKs or the probe */
	uint64_t retry_ms;
	uint32_t backoff_ms;
	uint64_t pass_ms;    /* coarse clock at the last pass of fb_will_tick() */
	uint64_t now_ms;     /* coarse clock at the last tick: the notes' time (one loop turn late at
	                        most, nothing for notes that live for seconds) */
	bool warned;         /* a failure was logged since the last success */
	bool spool_warned;   /* a Will the spool refused was logged since the last one it took */

	struct fb_notes *notes;
};

/* ---- notes ------------------------------------------------------------------------------- */

/* Milliseconds of a monotonic clock in steps of 1 to 4 ms: cheaper than CLOCK_MONOTONIC, and
 * plenty for notes that live for seconds. */
static uint64_t coarse_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
	return (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u;
}

void fb_will_note(struct fb_will *w, const char *topic, const void *payload, uint32_t payloadlen)
{
	if(w == NULL || w->state < W_SUBSCRIBING || topic[0] == '$'){
		return;
	}
	fb_notes_add(w->notes, topic, payload, payloadlen, w->now_ms);
}

/* ---- filters ----------------------------------------------------------------------------- */

static void filters_free(struct fb_will *w)
{
	for(size_t i = 0; i < w->nfilters; i++){
		free(w->filters[i]);
	}
	free(w->filters);
	free(w->overlaps);
	w->filters = NULL;
	w->overlaps = NULL;
	w->nfilters = 0;
}

/* Takes the filters of the rules in force; returns 1 when they differ from the current ones, 0
 * when they are the same, or -ENOMEM. */
static int filters_load(struct fb_will *w)
{
	const struct fb_config *cfg = fb_bridge_config(w->b);
	char **f;
	bool *ov;
	size_t n = 0;

	f = calloc(cfg->e2c_count ? cfg->e2c_count : 1, sizeof(*f));
	ov = calloc(cfg->e2c_count ? cfg->e2c_count : 1, sizeof(*ov));
	if(f == NULL || ov == NULL){
		goto nomem;
	}
	for(size_t i = 0; i < cfg->e2c_count; i++){
		const char *local = cfg->e2c[i].local;

		if(local[0] == '$'){
			continue; /* see README: '$' topics are left to the capture */
		}
		if((f[n] = strdup(local)) == NULL){
			goto nomem;
		}
		n++;
	}
	if(n == w->nfilters){
		size_t i;

		for(i = 0; i < n && !strcmp(f[i], w->filters[i]); i++){
		}
		if(i == n){
			for(i = 0; i < n; i++){
				free(f[i]);
			}
			free(f);
			free(ov);
			return 0;
		}
	}
	for(size_t i = 0; i < n; i++){
		for(size_t j = i + 1; j < n; j++){
			if(fb_route_filters_overlap(f[i], f[j])){
				ov[i] = ov[j] = true;
			}
		}
	}
	filters_free(w);
	w->filters = f;
	w->overlaps = ov;
	w->nfilters = n;
	return 1;

nomem:
	if(f){
		for(size_t i = 0; i < n; i++){
			free(f[i]);
		}
	}
	free(f);
	free(ov);
	return -ENOMEM;
}

/* ---- the wire --------------------------------------------------------------------------------
 *
 * A minimal MQTT v5 client of our own rather than libmosquitto's: the loopback receives a copy
 * of every matched message, and libmosquitto reads each packet with three or more recv() calls
 * and a malloc() of the message; here one recv() takes what arrived and copies are checked where
 * they lie. It speaks only what the loopback needs: CONNECT (clean start, no session), SUBSCRIBE
 * at QoS 0 (so that every PUBLISH comes at QoS 0 and needs no answer), PINGREQ, DISCONNECT. */

#define IN_MIN (64u << 10)

static int out_reserve(struct fb_will *w, size_t n)
{
	if(w->out_len + n > w->out_cap){
		size_t cap = w->out_cap ? w->out_cap : 4096;
		uint8_t *p;

		while(cap < w->out_len + n){
			cap *= 2;
		}
		p = realloc(w->out, cap);
		if(p == NULL){
			return -ENOMEM;
		}
		w->out = p;
		w->out_cap = cap;
	}
	return 0;
}

static void out_byte(struct fb_will *w, uint8_t b)
{
	w->out[w->out_len++] = b;
}

static void out_u16(struct fb_will *w, uint16_t v)
{
	fb_put_be16(w->out + w->out_len, v);
	w->out_len += 2;
}

static void out_varint(struct fb_will *w, uint32_t v)
{
	do{
		uint8_t b = v & 0x7f;

		v >>= 7;
		out_byte(w, v ? b | 0x80 : b);
	}while(v);
}

static void out_str(struct fb_will *w, const char *s, size_t n)
{
	out_u16(w, (uint16_t)n);
	memcpy(w->out + w->out_len, s, n);
	w->out_len += n;
}

static size_t varint_size(uint32_t v)
{
	return v < 128 ? 1 : v < 16384 ? 2 : v < 2097152 ? 3 : 4;
}

/* Queues CONNECT: MQTT v5, clean start, no session expiry, KEEPALIVE_S. */
static int send_connect(struct fb_will *w)
{
	size_t idn = strlen(w->client_id), un = w->username ? strlen(w->username) : 0,
			pn = w->password ? strlen(w->password) : 0;
	size_t rl = 10 + 1 + 2 + idn + (w->username ? 2 + un : 0) + (w->password ? 2 + pn : 0);
	uint8_t flags = 0x02;

	if(idn > UINT16_MAX || un > UINT16_MAX || pn > UINT16_MAX){
		return -EINVAL;
	}
	if(out_reserve(w, 1 + 4 + rl) < 0){
		return -ENOMEM;
	}
	flags |= w->username ? 0x80 : 0;
	flags |= w->password ? 0x40 : 0;
	out_byte(w, 0x10);
	out_varint(w, (uint32_t)rl);
	out_str(w, "MQTT", 4);
	out_byte(w, 5);
	out_byte(w, flags);
	out_u16(w, KEEPALIVE_S);
	out_varint(w, 0); /* no properties */
	out_str(w, w->client_id, idn);
	if(w->username){
		out_str(w, w->username, un);
	}
	if(w->password){
		out_str(w, w->password, pn);
	}
	return 0;
}

/* Queues SUBSCRIBE of FILTER at QoS 0, retain as published, no retained messages, with
 * subscription identifier ID (0: none). */
static int send_subscribe(struct fb_will *w, const char *filter, uint32_t id)
{
	size_t fn = strlen(filter), pl = id ? 1 + varint_size(id) : 0;
	size_t rl = 2 + varint_size((uint32_t)pl) + pl + 2 + fn + 1;

	if(out_reserve(w, 1 + 4 + rl) < 0){
		return -ENOMEM;
	}
	out_byte(w, 0x82);
	out_varint(w, (uint32_t)rl);
	w->mid = (uint16_t)(w->mid == UINT16_MAX ? 1 : w->mid + 1);
	out_u16(w, w->mid);
	out_varint(w, (uint32_t)pl);
	if(id){
		out_byte(w, MQTT_PROP_SUBSCRIPTION_IDENTIFIER);
		out_varint(w, id);
	}
	out_str(w, filter, fn);
	out_byte(w, MQTT_SUB_OPT_RETAIN_AS_PUBLISHED | MQTT_SUB_OPT_SEND_RETAIN_NEVER);
	return 0;
}

static int send_short(struct fb_will *w, uint8_t cmd)
{
	if(out_reserve(w, 2) < 0){
		return -ENOMEM;
	}
	out_byte(w, cmd);
	out_byte(w, 0);
	return 0;
}

/* Writes what is queued, without waiting. Returns 0 (all written, or the socket is full) or a
 * negative errno. */
static int flush(struct fb_will *w)
{
	while(w->out_off < w->out_len){
		ssize_t n = send(w->fd, w->out + w->out_off, w->out_len - w->out_off, MSG_NOSIGNAL | MSG_DONTWAIT);

		if(n < 0){
			if(errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR){
				return 0;
			}
			return -errno;
		}
		w->out_off += (size_t)n;
		w->last_out_ms = coarse_ms();
	}
	w->out_off = w->out_len = 0;
	return 0;
}

/* Ends the connection (if any) and forgets the notes; the next attempt at RETRY_MS. */
static void drop_connection(struct fb_will *w)
{
	if(w->fd >= 0){
		if(w->state >= W_SUBSCRIBING){
			/* DISCONNECT, normal: best effort, the socket closes right after. */
			w->out_off = w->out_len = 0;
			if(send_short(w, 0xe0) == 0){
				(void)flush(w);
			}
		}
		close(w->fd);
		w->fd = -1;
	}
	w->state = W_IDLE;
	w->in_len = 0;
	w->out_off = w->out_len = 0;
	w->ping_ms = 0;
	if(w->in_cap > IN_MIN){
		uint8_t *p = realloc(w->in, IN_MIN);

		if(p){
			w->in = p;
			w->in_cap = IN_MIN;
		}
	}
	fb_notes_clear(w->notes);
}

static void fail(struct fb_will *w, const char *what)
{
	if(!w->warned){
		fb_log(&w->lg, MOSQ_LOG_WARNING, "Wills are not forwarded while the loopback subscriber at %s:%d "
				"cannot work (%s); retrying", w->addr, w->port, what);
		w->warned = true;
	}
	drop_connection(w);
	w->retry_ms = fb_mono_ms() + w->backoff_ms;
	w->backoff_ms = w->backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : w->backoff_ms * 2;
}

static void send_probe(struct fb_will *w)
{
	char *payload = malloc(sizeof(w->nonce));
	int rc;

	if(payload == NULL){
		fail(w, "out of memory");
		return;
	}
	memcpy(payload, w->nonce, sizeof(w->nonce));
	rc = w->host.publish(w->host.ud, PROBE_TOPIC, (int)strlen(w->nonce), payload, 0, false, NULL);
	if(rc < 0){
		free(payload);
		fail(w, "cannot publish the probe");
		return;
	}
	w->state = W_PROBING;
}

/* Reads a variable byte integer at *POS of P[0..N). Returns 0, or -1 when malformed or short. */
static int get_varint(const uint8_t *p, size_t n, size_t *pos, uint32_t *v)
{
	uint32_t x = 0;

	for(int i = 0; i < 4; i++){
		if(*pos >= n){
			return -1;
		}
		x |= (uint32_t)(p[*pos] & 0x7f) << (7 * i);
		if(!(p[(*pos)++] & 0x80)){
			*v = x;
			return 0;
		}
	}
	return -1;
}

static int get_u16(const uint8_t *p, size_t n, size_t *pos, uint16_t *v)
{
	if(n - *pos < 2 || *pos > n){
		return -1;
	}
	*v = fb_get_be16(p + *pos);
	*pos += 2;
	return 0;
}

/* A length-prefixed string or binary at *POS: its bytes and length. */
static int get_bin(const uint8_t *p, size_t n, size_t *pos, const uint8_t **s, uint16_t *len)
{
	if(get_u16(p, n, pos, len) < 0 || n - *pos < *len){
		return -1;
	}
	*s = p + *pos;
	*pos += *len;
	return 0;
}

static char *dup_n(const uint8_t *s, size_t n)
{
	char *c = malloc(n + 1);

	if(c){
		memcpy(c, s, n);
		c[n] = '\0';
	}
	return c;
}

/* Walks the properties of a PUBLISH (P[0..N)): the subscription identifier into *SUB_ID, and,
 * when LIST is not NULL, every property a forwarded message keeps into a new *LIST (caller frees
 * with mosquitto_property_free_all()). Returns 0 or -1 (malformed, or out of memory). */
static int publish_props(const uint8_t *p, size_t n, uint32_t *sub_id, mosquitto_property **list)
{
	size_t pos = 0;
	int rc = 0;

	while(pos < n && rc == 0){
		const uint8_t *a, *b;
		uint16_t alen, blen, u16;
		uint32_t id, v;
		char *sa = NULL, *sb = NULL;

		if(get_varint(p, n, &pos, &id) < 0){
			return -1;
		}
		switch(id){
			case MQTT_PROP_PAYLOAD_FORMAT_INDICATOR:
				if(pos >= n){
					return -1;
				}
				if(list){
					rc = mosquitto_property_add_byte(list, (int)id, p[pos]);
				}
				pos++;
				break;
			case MQTT_PROP_MESSAGE_EXPIRY_INTERVAL:
				if(n - pos < 4){
					return -1;
				}
				if(list){
					v = fb_get_be32(p + pos);
					rc = mosquitto_property_add_int32(list, (int)id, v);
				}
				pos += 4;
				break;
			case MQTT_PROP_CONTENT_TYPE:
			case MQTT_PROP_RESPONSE_TOPIC:
				if(get_bin(p, n, &pos, &a, &alen) < 0){
					return -1;
				}
				if(list){
					rc = (sa = dup_n(a, alen)) ? mosquitto_property_add_string(list, (int)id, sa) : MOSQ_ERR_NOMEM;
				}
				break;
			case MQTT_PROP_CORRELATION_DATA:
				if(get_bin(p, n, &pos, &a, &alen) < 0){
					return -1;
				}
				if(list){
					rc = mosquitto_property_add_binary(list, (int)id, a, alen);
				}
				break;
			case MQTT_PROP_SUBSCRIPTION_IDENTIFIER:
				if(get_varint(p, n, &pos, &v) < 0){
					return -1;
				}
				*sub_id = v;
				break;
			case MQTT_PROP_TOPIC_ALIAS:
				if(get_u16(p, n, &pos, &u16) < 0){
					return -1;
				}
				break;
			case MQTT_PROP_USER_PROPERTY:
				if(get_bin(p, n, &pos, &a, &alen) < 0 || get_bin(p, n, &pos, &b, &blen) < 0){
					return -1;
				}
				if(list){
					sa = dup_n(a, alen);
					sb = dup_n(b, blen);
					rc = sa && sb ? mosquitto_property_add_string_pair(list, (int)id, sa, sb) : MOSQ_ERR_NOMEM;
				}
				break;
			default:
				return -1; /* not a PUBLISH property */
		}
		free(sa);
		free(sb);
	}
	return rc == 0 ? 0 : -1;
}

/* A PUBLISH (flags F, the rest of the packet P[0..N)) that the broker delivered to the loopback. */
static void on_publish(struct fb_will *w, uint8_t f, const uint8_t *p, size_t n)
{
	const uint8_t *t, *props, *payload;
	uint16_t tlen;
	uint32_t plen, sub_id = 0, payloadlen;
	size_t pos = 0, idx;
	mosquitto_property *list = NULL;
	bool retain = f & 1;
	int rc;

	if(((f >> 1) & 3) != 0 || get_bin(p, n, &pos, &t, &tlen) < 0 || get_varint(p, n, &pos, &plen) < 0
			|| n - pos < plen){
		return; /* only QoS 0 is subscribed; anything else is not ours to read */
	}
	props = p + pos;
	pos += plen;
	payload = p + pos;
	payloadlen = (uint32_t)(n - pos);
	if(tlen + 1u > w->topic_cap){
		char *nt = realloc(w->topic, tlen + 1u);

		if(nt == NULL){
			return;
		}
		w->topic = nt;
		w->topic_cap = tlen + 1u;
	}
	memcpy(w->topic, t, tlen);
	w->topic[tlen] = '\0';

	if(w->topic[0] == '$' && !strcmp(w->topic, PROBE_TOPIC)){
		if(w->state == W_PROBING && payloadlen == strlen(w->nonce) && !memcmp(payload, w->nonce, payloadlen)){
			w->state = W_READY;
			w->backoff_ms = RETRY_MIN_MS;
			w->warned = false;
			fb_log(&w->lg, MOSQ_LOG_NOTICE, "Wills on %zu rules' topics are forwarded through the loopback "
					"subscriber at %s:%d", w->nfilters, w->addr, w->port);
		}
		return;
	}
	if(w->state < W_SUBSCRIBING || publish_props(props, plen, &sub_id, NULL) < 0 || sub_id > w->nfilters){
		return;
	}
	/* No identifier: the filter overlaps no other, so this is the topic's only copy. */
	idx = sub_id - 1;
	if(sub_id && w->overlaps[idx]){
		for(size_t k = 0; k < idx; k++){
			bool match = false;

			if(w->overlaps[k] && mosquitto_topic_matches_sub(w->filters[k], w->topic, &match)
					== MOSQ_ERR_SUCCESS && match){
				return; /* the copy of filter k counts */
			}
		}
	}
	if(fb_notes_take(w->notes, w->topic, payload, payloadlen, w->now_ms)){
		return; /* the capture had it */
	}
	if(w->state != W_READY){
		return; /* not known yet to be this broker */
	}
	if(publish_props(props, plen, &sub_id, &list) < 0){
		mosquitto_property_free_all(&list);
		fb_log(&w->lg, MOSQ_LOG_WARNING, "a Will on %s has properties that cannot be read; not forwarded", w->topic);
		return;
	}
	rc = fb_bridge_capture(w->b, w->topic, payload, payloadlen, list, 0, retain);
	mosquitto_property_free_all(&list);
	if(rc == FB_BRIDGE_MATCHED || rc == FB_BRIDGE_UNSYNCED){
		/* Staged (for FB_BRIDGE_UNSYNCED, without the sync: the capture logs it): it goes. */
		fb_count(&fb_bridge_counters(w->b)->wills, 1);
		w->spool_warned = false;
	}else if(rc < 0 && !w->spool_warned){
		/* Counted by the capture (dropped/full or dropped/error); logged once until one goes
		 * through again. */
		fb_log(&w->lg, MOSQ_LOG_WARNING, "a Will on %s could not be spooled: %s", w->topic, strerror(-rc));
		w->spool_warned = true;
	}
}

static void on_connack(struct fb_will *w, const uint8_t *p, size_t n)
{
	char what[96];

	if(w->state != W_CONNECTING){
		return;
	}
	if(n < 2 || p[1] != 0){
		snprintf(what, sizeof(what), "CONNACK %s", n < 2 ? "malformed" : mosquitto_reason_string(p[1]));
		fail(w, what);
		return;
	}
	w->state = W_SUBSCRIBING;
	w->subacks = 0;
	w->deadline_ms = fb_mono_ms() + PROBE_TIMEOUT_MS;
	/* One SUBSCRIBE per rule. A message that matches overlapping filters comes once per filter:
	 * those filters carry a subscription identifier, the rule's place + 1, and only the first
	 * filter's copy counts. The others go without (an identifier costs the broker a property
	 * allocated, encoded and freed for every copy). */
	for(size_t i = 0; i <= w->nfilters; i++){
		if(send_subscribe(w, i < w->nfilters ? w->filters[i] : PROBE_TOPIC,
					i < w->nfilters && w->overlaps[i] ? (uint32_t)i + 1 : 0) < 0){
			fail(w, "out of memory");
			return;
		}
		w->subacks++;
	}
}

static void on_suback(struct fb_will *w, const uint8_t *p, size_t n)
{
	size_t pos = 2;
	uint32_t plen;

	if(w->state != W_SUBSCRIBING || n < 2 || get_varint(p, n, &pos, &plen) < 0 || n - pos < plen){
		return;
	}
	for(pos += plen; pos < n; pos++){
		if(p[pos] >= 0x80){
			fb_log(&w->lg, MOSQ_LOG_WARNING, "the loopback subscriber at %s:%d was refused a subscription "
					"(reason 0x%02x; check the broker's ACL for it): Wills on some rules' topics are not forwarded",
					w->addr, w->port, p[pos]);
		}
	}
	if(--w->subacks == 0){
		send_probe(w);
	}
}

/* Handles the complete packets in the input buffer, at most BUDGET of them. Returns how many. */
static int handle_input(struct fb_will *w, int budget)
{
	size_t pos = 0;
	int done = 0;

	while(done < budget && w->state != W_IDLE){
		size_t hdr = pos + 1;
		uint32_t rl;
		uint8_t cmd;

		if(w->in_len - pos < 2 || get_varint(w->in, w->in_len, &hdr, &rl) < 0){
			if(w->in_len - pos >= 5){
				fail(w, "malformed packet");
				return done;
			}
			break; /* the length is not complete yet */
		}
		if(w->in_len - hdr < rl){
			if(hdr + rl > w->in_cap){
				/* A packet larger than the buffer: make room for it. */
				size_t need = hdr - pos + rl;
				uint8_t *np;

				memmove(w->in, w->in + pos, w->in_len - pos);
				w->in_len -= pos;
				pos = 0;
				if(need > w->in_cap && (np = realloc(w->in, need)) != NULL){
					w->in = np;
					w->in_cap = need;
				}else if(need > w->in_cap){
					fail(w, "out of memory");
					return done;
				}
			}
			break;
		}
		cmd = w->in[pos];
		switch(cmd >> 4){
			case 3:
				on_publish(w, cmd & 0x0f, w->in + hdr, rl);
				break;
			case 2:
				on_connack(w, w->in + hdr, rl);
				break;
			case 9:
				on_suback(w, w->in + hdr, rl);
				break;
			case 13:
				w->ping_ms = 0;
				break;
			case 14:
				fail(w, rl ? mosquitto_reason_string(w->in[hdr]) : "DISCONNECT from the broker");
				return done;
			default:
				break;
		}
		if(w->state == W_IDLE){
			return done; /* failed: the buffer is gone */
		}
		pos = hdr + rl;
		done++;
	}
	if(pos){
		memmove(w->in, w->in + pos, w->in_len - pos);
		w->in_len -= pos;
	}
	return done;
}

static void connect_start(struct fb_will *w)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	unsigned char r[16];
	FILE *f;
	char what[96];
	int fd, one = 1;

	w->reconnect = false;
	f = fopen("/dev/urandom", "re");
	if(f == NULL || fread(r, 1, sizeof(r), f) != sizeof(r)){
		for(size_t i = 0; i < sizeof(r); i++){
			r[i] = (unsigned char)(fb_mono_ms() >> (i % 8) ^ (uintptr_t)w >> (i % 4));
		}
	}
	if(f){
		fclose(f);
	}
	for(size_t i = 0; i < sizeof(r); i++){
		snprintf(w->nonce + 2 * i, 3, "%02x", r[i]);
	}
	memset(&ss, 0, sizeof(ss));
	if(inet_pton(AF_INET, w->addr, &((struct sockaddr_in *)&ss)->sin_addr) == 1){
		((struct sockaddr_in *)&ss)->sin_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)w->port);
		sl = sizeof(struct sockaddr_in);
	}else{
		inet_pton(AF_INET6, w->addr, &((struct sockaddr_in6 *)&ss)->sin6_addr);
		((struct sockaddr_in6 *)&ss)->sin6_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)w->port);
		sl = sizeof(struct sockaddr_in6);
	}
	/* Non-blocking connect: the broker thread never waits for its own listener. CLOEXEC: not for
	 * programs the broker starts. */
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if(fd < 0){
		snprintf(what, sizeof(what), "socket: %s", strerror(errno));
		fail(w, what);
		return;
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if(connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS){
		snprintf(what, sizeof(what), "connect: %s", strerror(errno));
		close(fd);
		fail(w, what);
		return;
	}
	w->fd = fd;
	w->state = W_CONNECTING;
	w->deadline_ms = fb_mono_ms() + PROBE_TIMEOUT_MS;
	w->last_out_ms = coarse_ms();
	if(send_connect(w) < 0){
		fail(w, "cannot build CONNECT");
	}
}

void fb_will_tick(struct fb_will *w, uint64_t now)
{
	ssize_t n = 0;
	int rc, budget = READ_BUDGET;
	char what[96];

	if(w == NULL){
		return;
	}
	w->now_ms = now;
	if(now - w->pass_ms < READ_EVERY_MS){
		return;
	}
	w->pass_ms = now;
	if(w->state == W_IDLE){
		if(fb_mono_ms() < w->retry_ms){
			return;
		}
		connect_start(w);
		if(w->state == W_IDLE){
			return;
		}
	}
	if(w->reconnect){
		drop_connection(w);
		w->retry_ms = 0;
		return;
	}
	/* Packets left from the last pass first, then what arrived, until the socket is empty or
	 * the budget is spent. */
	budget -= handle_input(w, budget);
	while(w->state != W_IDLE && budget > 0){
		if(w->in_cap - w->in_len < 4096){
			size_t cap = w->in_cap < IN_MIN ? IN_MIN : w->in_cap * 2;
			uint8_t *p = realloc(w->in, cap);

			if(p == NULL){
				fail(w, "out of memory");
				return;
			}
			w->in = p;
			w->in_cap = cap;
		}
		n = recv(w->fd, w->in + w->in_len, w->in_cap - w->in_len, MSG_DONTWAIT);
		if(n <= 0){
			break;
		}
		w->in_len += (size_t)n;
		budget -= handle_input(w, budget);
	}
	if(w->state == W_IDLE){
		return;
	}
	if(n == 0){
		fail(w, "the broker closed the connection");
		return;
	}
	if(n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR){
		snprintf(what, sizeof(what), "%s", strerror(errno));
		fail(w, what);
		return;
	}
	/* Keepalive: a PINGREQ after half the keepalive without sending; no PINGRESP within the
	 * other half ends the connection. */
	if(w->state >= W_SUBSCRIBING){
		if(w->ping_ms && now - w->ping_ms > KEEPALIVE_S * 500u){
			fail(w, "no PINGRESP");
			return;
		}
		/* (a write of this tick may be stamped after NOW) */
		if(!w->ping_ms && now > w->last_out_ms && now - w->last_out_ms >= KEEPALIVE_S * 500u
				&& send_short(w, 0xc0) == 0){
			w->ping_ms = now;
		}
	}
	rc = flush(w);
	if(rc < 0){
		snprintf(what, sizeof(what), "%s", strerror(-rc));
		fail(w, what);
		return;
	}
	if(w->state != W_READY && fb_mono_ms() > w->deadline_ms){
		fail(w, w->state == W_PROBING ? "its probe did not come back: is that address a listener of this broker, "
				"and may the loopback read $flowmq-bridge/#?" : "no answer from the broker");
	}
}

int fb_will_parse_address(const char *addr, char *buf, struct fb_will_opts *o)
{
	char *colon, *end, *host = buf;
	unsigned char a[sizeof(struct in6_addr)];
	long port;

	strcpy(buf, addr);
	colon = strrchr(buf, ':');
	if(colon == NULL){
		return -EINVAL;
	}
	*colon = '\0';
	if(host[0] == '['){
		size_t n = strlen(host);

		if(n < 3 || host[n - 1] != ']'){
			return -EINVAL;
		}
		host[n - 1] = '\0';
		host++;
	}
	errno = 0;
	port = strtol(colon + 1, &end, 10);
	if(host[0] == '\0' || colon[1] == '\0' || *end != '\0' || errno || port < 1 || port > 65535){
		return -EINVAL;
	}
	/* Numeric only: a name would need a resolver call on the broker thread. */
	if(inet_pton(AF_INET, host, a) != 1 && inet_pton(AF_INET6, host, a) != 1){
		return -EINVAL;
	}
	o->host = host;
	o->port = (int)port;
	return 0;
}

int fb_will_start(const struct fb_will_opts *o, struct fb_bridge *b, const struct fb_host *host,
		const struct fb_logger *lg, struct fb_will **out)
{
	const struct fb_config *cfg = fb_bridge_config(b);
	struct fb_will *w;
	int rc = -ENOMEM;

	*out = NULL;
	w = calloc(1, sizeof(*w));
	if(w == NULL){
		return -ENOMEM;
	}
	w->fd = -1;
	w->lg = *lg;
	w->host = *host;
	w->b = b;
	w->port = o->port;
	w->backoff_ms = RETRY_MIN_MS;
	rc = fb_notes_new(NOTE_CAP, NOTE_TTL_MS, &w->notes);
	if(rc < 0){
		goto fail;
	}
	rc = -ENOMEM;
	w->addr = strdup(o->host);
	w->client_id = malloc(strlen(cfg->site_id) + sizeof("flowmq-bridge-loopback-"));
	if(w->addr == NULL || w->client_id == NULL
			|| (o->username && (w->username = strdup(o->username)) == NULL)
			|| (o->password && (w->password = strdup(o->password)) == NULL)){
		goto fail;
	}
	sprintf(w->client_id, "flowmq-bridge-loopback-%s", cfg->site_id);
	if(filters_load(w) < 0){
		goto fail;
	}
	w->state = W_IDLE;
	*out = w;
	return 0;

fail:
	fb_log(lg, MOSQ_LOG_ERR, "cannot set up the loopback subscriber for Wills: %s", strerror(-rc));
	fb_will_stop(w);
	return rc;
}

void fb_will_stop(struct fb_will *w)
{
	if(w == NULL){
		return;
	}
	if(w->notes){
		drop_connection(w);
	}
	filters_free(w);
	free(w->in);
	free(w->out);
	free(w->topic);
	fb_notes_free(w->notes);
	free(w->addr);
	free(w->username);
	free(w->password);
	free(w->client_id);
	free(w);
}

void fb_will_reload(struct fb_will *w)
{
	int rc;

	if(w == NULL){
		return;
	}
	rc = filters_load(w);
	if(rc < 0){
		fb_log(&w->lg, MOSQ_LOG_ERR, "the loopback subscriber keeps the old rules' filters: out of memory");
	}else if(rc > 0){
		/* A fresh connection subscribes to the new filters (subscription identifiers are places
		 * in the filter list); Wills sent in the few milliseconds in between are not forwarded. */
		w->reconnect = true;
	}
}

bool fb_will_ready(const struct fb_will *w)
{
	return w && w->state == W_READY;
}
