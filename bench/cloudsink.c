/* cloudsink: a cloud that keeps up, for the drain scenarios of scripts/bench.
 *
 *   cloudsink -p PORT --cert F --key F --cafile F -t FILTER [options]
 *
 * A minimal MQTT v5 server over TLS 1.3 (client certificate required) that terminates one or more
 * bridge connections, acknowledges what they publish and counts it with the definitions of
 * loadgen's sub mode (same payload header, same keys: account.c), so that a drain measures the
 * edge and not a single-threaded Mosquitto stand-in. It never sends PUBLISH, keeps no session and
 * stores nothing.
 *
 * Threads: the main thread accepts connections and watches the end conditions (-n, -W, -I, SIGTERM,
 * SIGINT); each connection has its own thread. A connection thread reads everything that is waiting
 * (one batch), handles every complete packet of it, counts the batch under the shared lock once and
 * writes all the batch's replies in one SSL_write: no allocation and no system call per message.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "account.h"

#define MAX_FILTERS 8
#define MAX_PACKET (1u << 20)   /* remaining length; larger packets close the connection */
#define IN_CAP (2u << 20)       /* a whole packet always fits beside a batch's partial one */
#define OUT_CAP0 (64u << 10)
#define TLS_RBUF (64u << 10)    /* OpenSSL's read-ahead buffer: one recv() takes many records */
#define REC_MAX 4096            /* matched PUBLISHes collected before they are counted */

struct opts {
	const char *cert, *key, *cafile, *filters[MAX_FILTERS], *ready_file, *first_file, *lat_file;
	int port, nfilters, receive_max, alias_max;
	long count;
	double timeout, idle;
};

static void die(const char *what)
{
	fprintf(stderr, "cloudsink: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void die_ssl(const char *what)
{
	fprintf(stderr, "cloudsink: %s\n", what);
	ERR_print_errors_fp(stderr);
	exit(2);
}

/* ---------------------------------------------------------------- accounting (any thread, with the lock) */

struct sink {
	const struct opts *o;
	pthread_mutex_t lock;
	struct account acc;    /* the matched PUBLISHes, as loadgen sub counts them */
	long other, connections, max_batch, over_rm;
	bool done;             /* -n reached: nothing is counted any more */
	int wake_fd;           /* eventfd: tells the main thread that -n is reached */
};

/* One matched PUBLISH that arrived at t (realtime). With the lock. */
static void sink_message(struct sink *s, const struct hdr *h, int64_t t)
{
	account_message(&s->acc, h, t);
	if(s->o->count > 0 && s->acc.unique >= s->o->count){
		uint64_t one = 1;
		s->done = true;
		if(write(s->wake_fd, &one, sizeof(one)) < 0){
			/* the main thread also sees done when it polls */
		}
	}
}

/* ---------------------------------------------------------------- wire format (connection threads) */

struct rd {
	const unsigned char *p, *end;
};

static bool rd_u8(struct rd *r, unsigned *v)
{
	if(r->end - r->p < 1){
		return false;
	}
	*v = *r->p++;
	return true;
}

static bool rd_u16(struct rd *r, unsigned *v)
{
	if(r->end - r->p < 2){
		return false;
	}
	*v = (unsigned)r->p[0] << 8 | r->p[1];
	r->p += 2;
	return true;
}

static bool rd_skip(struct rd *r, size_t n)
{
	if((size_t)(r->end - r->p) < n){
		return false;
	}
	r->p += n;
	return true;
}

static bool rd_varint(struct rd *r, uint32_t *v)
{
	*v = 0;
	for(int i = 0; i < 4; i++){
		if(r->p == r->end){
			return false;
		}
		*v |= (uint32_t)(*r->p & 0x7F) << (7 * i);
		if(!(*r->p++ & 0x80)){
			return true;
		}
	}
	return false;
}

/* A string or binary field (two-byte length first); s and n may be NULL. */
static bool rd_bin(struct rd *r, const unsigned char **s, size_t *n)
{
	unsigned len;

	if(!rd_u16(r, &len) || (size_t)(r->end - r->p) < len){
		return false;
	}
	if(s){
		*s = r->p;
		*n = len;
	}
	r->p += len;
	return true;
}

/* Reads a property block (its length first). The Topic Alias goes to *alias when alias is not NULL
 * (unchanged when absent). Returns NULL, or what is wrong with *id the property concerned (0: the
 * block itself). */
static const char *props_read(struct rd *r, int *alias, unsigned *id)
{
	struct rd p;
	uint32_t len, v;
	unsigned u;
	bool ok;

	*id = 0;
	if(!rd_varint(r, &len)){
		return "bad property length";
	}
	if(len > (size_t)(r->end - r->p)){
		return "property length beyond the packet";
	}
	p = (struct rd){ r->p, r->p + len };
	r->p += len;
	while(p.p < p.end){
		if(!rd_varint(&p, &v)){
			return "bad property identifier";
		}
		*id = v;
		switch(v){
			case 0x01: case 0x17: case 0x19: case 0x24: case 0x25: case 0x28: case 0x29: case 0x2A:
				ok = rd_skip(&p, 1);
				break;
			case 0x13: case 0x21: case 0x22:
				ok = rd_skip(&p, 2);
				break;
			case 0x23:
				ok = rd_u16(&p, &u);
				if(ok && alias){
					*alias = (int)u;
				}
				break;
			case 0x02: case 0x11: case 0x18: case 0x27:
				ok = rd_skip(&p, 4);
				break;
			case 0x0B:
				ok = rd_varint(&p, &v);
				break;
			case 0x03: case 0x08: case 0x09: case 0x12: case 0x15: case 0x16: case 0x1A: case 0x1C: case 0x1F:
				ok = rd_bin(&p, NULL, NULL);
				break;
			case 0x26:
				ok = rd_bin(&p, NULL, NULL) && rd_bin(&p, NULL, NULL);
				break;
			default:
				return "unknown property";
		}
		if(!ok){
			return "truncated property";
		}
	}
	return NULL;
}

/* " (property 0xNN)" for an error of props_read, "" when it concerns the whole block. */
static const char *prop_name(unsigned id)
{
	static __thread char buf[32];

	if(id == 0){
		return "";
	}
	snprintf(buf, sizeof(buf), " (property 0x%02x)", id);
	return buf;
}

/* MQTT topic matching of a valid filter f: '+' is one level, '#' this level and all below; a topic
 * that starts with '$' matches no filter that starts with a wildcard. */
static bool topic_match(const char *f, const unsigned char *t, size_t tlen)
{
	const unsigned char *end = t + tlen;

	if(tlen > 0 && t[0] == '$' && (f[0] == '+' || f[0] == '#')){
		return false;
	}
	for(;;){
		if(f[0] == '#'){
			return true;
		}
		if(f[0] == '+'){
			while(t < end && *t != '/'){
				t++;
			}
			f++;
		}else{
			while(*f && *f != '/' && t < end && *t == (unsigned char)*f){
				f++;
				t++;
			}
			if((*f && *f != '/') || (t < end && *t != '/')){
				return false;
			}
		}
		if(*f == '\0'){
			return t == end;
		}
		if(t == end){
			return strcmp(f, "/#") == 0;  /* "a/#" matches "a" */
		}
		f++;
		t++;
	}
}

/* ---------------------------------------------------------------- a connection (its own thread) */

struct alias {
	unsigned char *topic;  /* NULL: not set */
	size_t len, cap;
};

struct conn {
	struct sink *s;
	const struct opts *o;
	SSL *ssl;
	int fd, index;
	char id[64];           /* client id, for messages */
	bool connected;        /* CONNECT accepted */
	bool eof;              /* the peer closed after the last bytes read */
	unsigned char *in, *out;
	size_t inlen, outlen, outcap;
	struct alias *aliases; /* 1..alias_max, from the CONNECT on */
	int64_t t;             /* arrival of the batch, realtime */
	long batch_q;          /* QoS 1 and 2 PUBLISHes in this batch so far */
	long other, over_rm;   /* not yet counted */
	int nrecs;
	struct hdr recs[REC_MAX];  /* matched PUBLISHes not yet counted (magic 0: no header) */
};

static const char *const packet_names[16] = { "reserved", "CONNECT", "CONNACK", "PUBLISH", "PUBACK",
	"PUBREC", "PUBREL", "PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ",
	"PINGRESP", "DISCONNECT", "AUTH" };

/* Room for n more bytes of replies; grows by doubling (no allocation per message). */
static unsigned char *out_put(struct conn *c, size_t n)
{
	unsigned char *p;

	if(c->outlen + n > c->outcap){
		while(c->outlen + n > c->outcap){
			c->outcap *= 2;
		}
		if((c->out = realloc(c->out, c->outcap)) == NULL){
			die("realloc");
		}
	}
	p = c->out + c->outlen;
	c->outlen += n;
	return p;
}

/* A fixed header of type byte b and remaining length rl; returns where the rest goes. */
static unsigned char *out_packet(struct conn *c, unsigned b, size_t rl)
{
	unsigned char *p = out_put(c, 1 + (rl < 128 ? 1 : rl < 16384 ? 2 : rl < 2097152 ? 3 : 4) + rl);

	*p++ = (unsigned char)b;
	do{
		*p = rl & 0x7F;
		rl >>= 7;
		*p++ |= rl ? 0x80 : 0;
	}while(rl);
	return p;
}

/* A reply of 2 bytes: a packet identifier (PUBACK, PUBREC, PUBCOMP: reason 0, short form). */
static void out_ack(struct conn *c, unsigned b, unsigned id)
{
	unsigned char *p = out_put(c, 4);
	p[0] = (unsigned char)b;
	p[1] = 2;
	p[2] = (unsigned char)(id >> 8);
	p[3] = (unsigned char)id;
}

/* Reports a protocol error of packet type `type`; once connected, a DISCONNECT with `reason` goes
 * out with the batch's replies. Returns -1: the connection closes. */
__attribute__((format(printf, 4, 5)))
static int conn_error(struct conn *c, unsigned type, unsigned reason, const char *fmt, ...)
{
	char why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	fprintf(stderr, "cloudsink: connection %d (%s): %s: %s\n", c->index, c->id[0] ? c->id : "?",
			packet_names[type & 15], why);
	if(c->connected && reason){
		unsigned char *p = out_packet(c, 0xE0, 1);
		*p = (unsigned char)reason;
	}
	return -1;
}

/* Adds what this connection collected to the shared counts, under the lock once. */
static void conn_count(struct conn *c)
{
	struct sink *s = c->s;

	if(c->nrecs == 0 && c->other == 0 && c->batch_q == 0){
		return;
	}
	pthread_mutex_lock(&s->lock);
	if(!s->done){
		s->other += c->other;
		s->over_rm += c->over_rm;
		if(c->batch_q > s->max_batch){
			s->max_batch = c->batch_q;
		}
		for(int i = 0; i < c->nrecs && !s->done; i++){
			sink_message(s, &c->recs[i], c->t);
		}
	}
	pthread_mutex_unlock(&s->lock);
	c->nrecs = 0;
	c->other = 0;
	c->over_rm = 0;
}

static int conn_connect(struct conn *c, struct rd *r)
{
	const unsigned char *name, *cid;
	size_t nlen, cidlen;
	unsigned level, flags, keepalive, pid;
	const char *why;
	unsigned char *p;
	size_t plen;

	if(c->connected){
		return conn_error(c, 1, 0x82, "a second CONNECT");
	}
	if(!rd_bin(r, &name, &nlen) || !rd_u8(r, &level)){
		return conn_error(c, 1, 0, "truncated protocol name or level");
	}
	if(!(nlen == 4 && !memcmp(name, "MQTT", 4)) && !(nlen == 6 && !memcmp(name, "MQIsdp", 6))){
		return conn_error(c, 1, 0, "protocol name is not MQTT");
	}
	if(level != 5){
		/* in the format of the client's version (a CONNACK of MQTT 3 has no properties) */
		p = out_packet(c, 0x20, 2);
		p[0] = 0;
		p[1] = 0x84;
		return conn_error(c, 1, 0, "protocol level %u, only 5 (MQTT v5) is served", level);
	}
	if(!rd_u8(r, &flags) || !rd_u16(r, &keepalive)){
		return conn_error(c, 1, 0, "truncated flags or keep alive");
	}
	if((why = props_read(r, NULL, &pid)) != NULL){
		return conn_error(c, 1, 0, "%s%s", why, prop_name(pid));
	}
	if(!rd_bin(r, &cid, &cidlen)){
		return conn_error(c, 1, 0, "truncated client identifier");
	}
	snprintf(c->id, sizeof(c->id), "%.*s", (int)(cidlen < sizeof(c->id) ? cidlen : sizeof(c->id) - 1), cid);
	if(c->aliases == NULL && (c->aliases = calloc((size_t)c->o->alias_max + 1, sizeof(*c->aliases))) == NULL){
		die("calloc");
	}
	c->connected = true;

	plen = (c->o->receive_max != 65535 ? 3 : 0) + (c->o->alias_max > 0 ? 3 : 0);
	p = out_packet(c, 0x20, 3 + plen);
	*p++ = 0;                 /* session present 0 */
	*p++ = 0;                 /* success */
	*p++ = (unsigned char)plen;
	if(c->o->receive_max != 65535){
		*p++ = 0x21;
		*p++ = (unsigned char)(c->o->receive_max >> 8);
		*p++ = (unsigned char)c->o->receive_max;
	}
	if(c->o->alias_max > 0){
		*p++ = 0x22;
		*p++ = (unsigned char)(c->o->alias_max >> 8);
		*p++ = (unsigned char)c->o->alias_max;
	}
	pthread_mutex_lock(&c->s->lock);
	c->s->connections++;
	account_connected(&c->s->acc);
	pthread_mutex_unlock(&c->s->lock);
	return 0;
}

static int conn_publish(struct conn *c, unsigned flags, struct rd *r)
{
	unsigned qos = (flags >> 1) & 3, id = 0, pid;
	const unsigned char *topic;
	size_t tlen;
	int alias = -1;
	const char *why;
	bool match = false;

	if(qos == 3){
		return conn_error(c, 3, 0x81, "QoS 3");
	}
	if(!rd_bin(r, &topic, &tlen)){
		return conn_error(c, 3, 0x81, "truncated topic");
	}
	if(qos > 0 && (!rd_u16(r, &id) || id == 0)){
		return conn_error(c, 3, 0x81, "truncated packet identifier or identifier 0");
	}
	if((why = props_read(r, &alias, &pid)) != NULL){
		return conn_error(c, 3, 0x81, "%s%s", why, prop_name(pid));
	}
	if(alias == 0 || alias > c->o->alias_max){
		return conn_error(c, 3, 0x94, "topic alias %d out of 1..%d", alias, c->o->alias_max);
	}
	if(alias > 0){
		struct alias *a = &c->aliases[alias];
		if(tlen > 0){
			if(tlen > a->cap){
				a->cap = tlen < 64 ? 64 : tlen;
				if((a->topic = realloc(a->topic, a->cap)) == NULL){
					die("realloc");
				}
			}
			memcpy(a->topic, topic, tlen);
			a->len = tlen;
		}else if(a->topic == NULL){
			return conn_error(c, 3, 0x82, "unknown topic alias %d", alias);
		}else{
			topic = a->topic;
			tlen = a->len;
		}
	}else if(tlen == 0){
		return conn_error(c, 3, 0x82, "empty topic without a topic alias");
	}

	for(int i = 0; i < c->o->nfilters && !match; i++){
		match = topic_match(c->o->filters[i], topic, tlen);
	}
	if(match){
		account_header(&c->recs[c->nrecs++], r->p, (size_t)(r->end - r->p));
		if(c->nrecs == REC_MAX){
			conn_count(c);
		}
	}else{
		c->other++;
	}
	if(qos > 0){
		/* every QoS > 0 PUBLISH of the batch is unacknowledged until the batch's replies go out */
		if(++c->batch_q > c->o->receive_max){
			c->over_rm++;
		}
		out_ack(c, qos == 1 ? 0x40 : 0x50, id);
	}
	return 0;
}

/* SUBSCRIBE (0x82) and UNSUBSCRIBE (0xA2): one reason code per filter. */
static int conn_subscribe(struct conn *c, unsigned type, unsigned flags, struct rd *r)
{
	unsigned id, pid, opts = 0;
	const char *why;
	struct rd f;
	size_t n = 0;
	unsigned char *p;

	if(flags != 2){
		return conn_error(c, type, 0x81, "flags %u, not 2", flags);
	}
	if(!rd_u16(r, &id)){
		return conn_error(c, type, 0x81, "truncated packet identifier");
	}
	if((why = props_read(r, NULL, &pid)) != NULL){
		return conn_error(c, type, 0x81, "%s%s", why, prop_name(pid));
	}
	for(f = *r; f.p < f.end; n++){
		if(!rd_bin(&f, NULL, NULL) || (type == 8 && !rd_u8(&f, &opts))){
			return conn_error(c, type, 0x81, "truncated topic filter");
		}
	}
	if(n == 0){
		return conn_error(c, type, 0x82, "no topic filter");
	}
	p = out_packet(c, type == 8 ? 0x90 : 0xB0, 3 + n);
	*p++ = (unsigned char)(id >> 8);
	*p++ = (unsigned char)id;
	*p++ = 0;
	while(r->p < r->end){
		rd_bin(r, NULL, NULL);
		if(type == 8){
			rd_u8(r, &opts);
			*p++ = (opts & 3) > 1 ? 1 : (unsigned char)(opts & 3);  /* granted QoS, at most 1 */
		}else{
			*p++ = 0;
		}
	}
	return 0;
}

/* One complete packet: b is its first byte, r its remaining length. Returns 0, 1 when the client
 * disconnected, or -1 after a protocol error (reported). */
static int conn_packet(struct conn *c, unsigned b, struct rd *r)
{
	unsigned type = b >> 4, flags = b & 15, id;

	if(!c->connected && type != 1){
		return conn_error(c, type, 0, "before CONNECT");
	}
	switch(type){
		case 1:
			return conn_connect(c, r);
		case 3:
			return conn_publish(c, flags, r);
		case 6:  /* PUBREL of a QoS 2 PUBLISH (acknowledged with PUBREC): complete it */
			if(flags != 2 || !rd_u16(r, &id)){
				return conn_error(c, type, 0x81, "bad flags or truncated packet identifier");
			}
			out_ack(c, 0x70, id);
			return 0;
		case 8:
		case 10:
			return conn_subscribe(c, type, flags, r);
		case 12:
			out_packet(c, 0xD0, 0);
			return 0;
		case 14:
			return 1;
		case 0:
			return conn_error(c, type, 0x81, "reserved packet type 0");
		default:  /* PUBACK, PUBREC, PUBCOMP (we never publish), AUTH, packets of servers: ignored */
			return 0;
	}
}

/* Handles every complete packet in c->in and keeps a partial one for the next read. Returns 0, or
 * 1 when the connection is to close once the replies so far are written. */
static int conn_parse(struct conn *c)
{
	size_t pos = 0;
	int rc = 0;

	while(rc == 0 && pos < c->inlen){
		const unsigned char *p = c->in + pos;
		size_t avail = c->inlen - pos, h = 1;
		uint32_t rl = 0;
		struct rd r;

		for(;;){
			if(h == 5){
				rc = conn_error(c, p[0] >> 4, 0x81, "malformed remaining length");
				goto out;
			}
			if(h == avail){
				goto out;  /* the rest of the header is still on its way */
			}
			rl |= (uint32_t)(p[h] & 0x7F) << (7 * (h - 1));
			if(!(p[h++] & 0x80)){
				break;
			}
		}
		if(rl > MAX_PACKET){
			rc = conn_error(c, p[0] >> 4, 0x95, "%u bytes, more than the %u this sink takes", rl, MAX_PACKET);
			break;
		}
		if(avail - h < rl){
			break;
		}
		r = (struct rd){ p + h, p + h + rl };
		rc = conn_packet(c, p[0], &r);
		pos += h + rl;
	}
out:
	c->inlen -= pos;
	memmove(c->in, c->in + pos, c->inlen);
	return rc != 0;
}

/* After an SSL call (of `what`) returned ret: waits until the socket is ready for what it asked for
 * (timeout_ms, -1: none). Returns 0, or -1 when the connection is over: an error is reported, a
 * close by the peer is not. */
static int conn_wait(struct conn *c, int ret, int timeout_ms, const char *what)
{
	struct pollfd pfd = { .fd = c->fd };
	int err = SSL_get_error(c->ssl, ret), rc;
	const char *id = c->id[0] ? c->id : "?";

	switch(err){
		case SSL_ERROR_WANT_READ:
			pfd.events = POLLIN;
			break;
		case SSL_ERROR_WANT_WRITE:
			pfd.events = POLLOUT;
			break;
		case SSL_ERROR_ZERO_RETURN:
			return -1;
		case SSL_ERROR_SYSCALL:
			if(ERR_peek_error() == 0 && (errno == 0 || errno == ECONNRESET || errno == EPIPE)){
				return -1;
			}
			fprintf(stderr, "cloudsink: connection %d (%s): %s: %s\n", c->index, id, what,
					errno ? strerror(errno) : "error");
			ERR_print_errors_fp(stderr);
			return -1;
		default:
			fprintf(stderr, "cloudsink: connection %d (%s): %s: TLS error %d\n", c->index, id, what, err);
			ERR_print_errors_fp(stderr);
			return -1;
	}
	while((rc = poll(&pfd, 1, timeout_ms)) < 0 && errno == EINTR){
	}
	if(rc == 0){
		fprintf(stderr, "cloudsink: connection %d (%s): %s: timeout\n", c->index, id, what);
		return -1;
	}
	return rc < 0 ? -1 : 0;
}

/* Reads everything that is waiting (at least one byte) into c->in. Returns 0, or -1 when the
 * connection is over and nothing was read; after a close with bytes read, c->eof is set. */
static int conn_read(struct conn *c)
{
	size_t before = c->inlen;

	while(c->inlen < IN_CAP){
		int n;

		ERR_clear_error();
		errno = 0;
		if((n = SSL_read(c->ssl, c->in + c->inlen, (int)(IN_CAP - c->inlen))) > 0){
			c->inlen += (size_t)n;
			continue;
		}
		if(c->inlen > before && SSL_get_error(c->ssl, n) == SSL_ERROR_WANT_READ){
			break;
		}
		if(conn_wait(c, n, -1, "read") < 0){
			c->eof = true;
			return c->inlen > before ? 0 : -1;
		}
	}
	return 0;
}

static int conn_write(struct conn *c)
{
	size_t done = 0;

	while(done < c->outlen){
		int n;

		ERR_clear_error();
		errno = 0;
		if((n = SSL_write(c->ssl, c->out + done, (int)(c->outlen - done))) > 0){
			done += (size_t)n;
			continue;
		}
		if(conn_wait(c, n, -1, "write") < 0){
			return -1;
		}
	}
	c->outlen = 0;
	return 0;
}

static void *conn_run(void *arg)
{
	struct conn *c = arg;
	int rc;

	for(;;){
		ERR_clear_error();
		errno = 0;
		if((rc = SSL_accept(c->ssl)) == 1){
			break;
		}
		if(conn_wait(c, rc, 10000, "TLS handshake") < 0){
			goto out;
		}
	}
	for(;;){
		bool stop;

		if(conn_read(c) < 0){
			break;
		}
		c->t = now_ns(CLOCK_REALTIME);
		c->batch_q = 0;
		stop = conn_parse(c);
		conn_count(c);
		if(c->outlen && conn_write(c) < 0){
			break;
		}
		if(stop || c->eof){
			break;
		}
	}
out:
	SSL_free(c->ssl);
	close(c->fd);
	for(int i = 0; c->aliases && i <= c->o->alias_max; i++){
		free(c->aliases[i].topic);
	}
	free(c->aliases);
	free(c->in);
	free(c->out);
	free(c);
	return NULL;
}

/* Takes ownership of fd: serves it in a detached thread. */
static void conn_start(struct sink *s, SSL_CTX *ctx, int fd, int index)
{
	struct conn *c = calloc(1, sizeof(*c));
	pthread_attr_t attr;
	pthread_t thread;
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if(c == NULL || (c->in = malloc(IN_CAP)) == NULL || (c->out = malloc(OUT_CAP0)) == NULL
			|| (c->ssl = SSL_new(ctx)) == NULL){
		die("connection");
	}
	c->s = s;
	c->o = s->o;
	c->fd = fd;
	c->index = index;
	c->outcap = OUT_CAP0;
	SSL_set_fd(c->ssl, fd);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if((errno = pthread_create(&thread, &attr, conn_run, c)) != 0){
		die("pthread_create");
	}
	pthread_attr_destroy(&attr);
}

/* ---------------------------------------------------------------- main */

/* Prints the result line, with the lock held (the connection threads stop counting), and ends the
 * process without running exit handlers under their feet. */
static void finish(struct sink *s)
{
	const struct opts *o = s->o;

	pthread_mutex_lock(&s->lock);
	account_print(&s->acc, o->lat_file);
	printf(" other=%ld connections=%ld max_batch=%ld over_rm=%ld\n", s->other, s->connections, s->max_batch,
			s->over_rm);
	fflush(stdout);
	_exit(o->count > 0 && s->acc.unique < o->count ? 1 : 0);
}

static SSL_CTX *tls_setup(const struct opts *o)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if(ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION)
			|| !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION)){
		die_ssl("TLS 1.3 context");
	}
	if(SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1){
		die_ssl("--cert");
	}
	if(SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1){
		die_ssl("--key");
	}
	if(SSL_CTX_load_verify_locations(ctx, o->cafile, NULL) != 1){
		die_ssl("--cafile");
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_default_read_buffer_len(ctx, TLS_RBUF);
	return ctx;
}

static int listen_on(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;

	if(fd < 0){
		die("socket");
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0){
		die("bind");
	}
	if(listen(fd, 128) < 0){
		die("listen");
	}
	return fd;
}

static void usage(void)
{
	fputs("usage: cloudsink -p PORT --cert FILE --key FILE --cafile FILE -t FILTER [options]\n"
		"  MQTT v5 over TLS 1.3 on 127.0.0.1:PORT, client certificate signed by --cafile required;\n"
		"  acknowledges every PUBLISH and counts those matching a filter like loadgen sub\n"
		"  -t FILTER          topics to count (repeatable, + and #); others count as other=\n"
		"  -n COUNT           stop after COUNT distinct messages (default 0: until -W, -I or a signal)\n"
		"  -W SECONDS         give up after this long (default 600)\n"
		"  -I SECONDS         stop when nothing matched arrived for this long after the first message\n"
		"  -r MAX             Receive Maximum in the CONNACK (default 65535: not sent)\n"
		"  -a MAX             Topic Alias Maximum in the CONNACK (default 256, 0: not sent)\n"
		"  -R FILE            create FILE once listening\n"
		"  -F FILE            on the first matched message after each connection, write FILE:\n"
		"                     unique=<messages before it> ns=<its arrival, realtime>\n"
		"  -L FILE            write each latency (us) to FILE\n"
		"prints on exit (also on SIGTERM/SIGINT) one line: loadgen sub's keys and other= connections=\n"
		"max_batch= (QoS 1/2 PUBLISHes in one read, before their acks) over_rm= (of them, beyond -r)\n",
		stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	enum { OPT_CERT = 256, OPT_KEY, OPT_CAFILE };
	static const struct option longopts[] = {
		{ "cert", required_argument, NULL, OPT_CERT },
		{ "key", required_argument, NULL, OPT_KEY },
		{ "cafile", required_argument, NULL, OPT_CAFILE },
		{ NULL, 0, NULL, 0 }
	};
	struct opts o = { .receive_max = 65535, .alias_max = 256, .timeout = 600 };
	static struct sink s;
	SSL_CTX *ctx;
	sigset_t sigs;
	int c, lfd, sfd, nconn = 0;
	int64_t deadline;

	while((c = getopt_long(argc, argv, "p:t:n:W:I:r:a:R:F:L:", longopts, NULL)) != -1){
		switch(c){
			case 'p': o.port = atoi(optarg); break;
			case 't':
				if(o.nfilters == MAX_FILTERS || mosquitto_sub_topic_check(optarg) != MOSQ_ERR_SUCCESS){
					fprintf(stderr, "cloudsink: -t %s: not a topic filter, or more than %d\n", optarg, MAX_FILTERS);
					return 2;
				}
				o.filters[o.nfilters++] = optarg;
				break;
			case 'n': o.count = atol(optarg); break;
			case 'W': o.timeout = atof(optarg); break;
			case 'I': o.idle = atof(optarg); break;
			case 'r': o.receive_max = atoi(optarg); break;
			case 'a': o.alias_max = atoi(optarg); break;
			case 'R': o.ready_file = optarg; break;
			case 'F': o.first_file = optarg; break;
			case 'L': o.lat_file = optarg; break;
			case OPT_CERT: o.cert = optarg; break;
			case OPT_KEY: o.key = optarg; break;
			case OPT_CAFILE: o.cafile = optarg; break;
			default: usage();
		}
	}
	if(optind != argc || o.port < 1 || o.port > 65535 || !o.cert || !o.key || !o.cafile || o.nfilters == 0
			|| o.receive_max < 1 || o.receive_max > 65535 || o.alias_max < 0 || o.alias_max > 65535){
		usage();
	}

	/* Signals reach the main thread only, through a signalfd; a peer gone mid-write is an error. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	if((sfd = signalfd(-1, &sigs, SFD_CLOEXEC)) < 0){
		die("signalfd");
	}
	s.o = &o;
	s.acc.first_file = o.first_file;
	pthread_mutex_init(&s.lock, NULL);
	if((s.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0){
		die("eventfd");
	}
	ctx = tls_setup(&o);
	lfd = listen_on(o.port);
	if(o.ready_file){
		FILE *f = fopen(o.ready_file, "w");
		if(f){
			fclose(f);
		}
	}

	deadline = now_ns(CLOCK_MONOTONIC) + (int64_t)(o.timeout * 1e9);
	for(;;){
		struct pollfd pfd[3] = { { .fd = lfd, .events = POLLIN }, { .fd = sfd, .events = POLLIN },
			{ .fd = s.wake_fd, .events = POLLIN } };
		bool idle = false;

		if(poll(pfd, 3, 50) < 0 && errno != EINTR){
			die("poll");
		}
		if(pfd[1].revents || pfd[2].revents || now_ns(CLOCK_MONOTONIC) > deadline){
			break;
		}
		if(o.idle > 0){
			pthread_mutex_lock(&s.lock);
			idle = account_idle(&s.acc, o.idle);
			pthread_mutex_unlock(&s.lock);
			if(idle){
				break;
			}
		}
		if(pfd[0].revents & POLLIN){
			int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
			if(fd >= 0){
				conn_start(&s, ctx, fd, nconn++);
			}else if(errno != EAGAIN && errno != EINTR && errno != ECONNABORTED){
				fprintf(stderr, "cloudsink: accept: %s\n", strerror(errno));
			}
		}
	}
	finish(&s);
	return 0;
}
