/* flowmq-bridge: the cloud session (see session.h). Link process only: its worker thread; never calls the
 * broker API. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "session.h"
#include "rate.h"
#include "alias.h"
#include "ack.h"
#include "upload.h"
#include "record.h"
#include "resolve.h"
#include "client.h"
#include "tls.h"
#include "waker.h"
#include "yield.h"

#define MAX_POLL_MS 1000
/* The write coalescing buffer of a connection (tls.h: fb_tls_coalesce()). */
#define COALESCE_BYTES (64 * 1024)

/* A slot of the in-flight window. A record keeps its slot until its spool delete is written, so
 * that what a crash can send twice never exceeds max_inflight records. */
#define SLOT_FREE 0
#define SLOT_ACKED (-1)  /* acknowledged (or QoS 0 and sent), delete not written yet */

struct inflight {
	int mid;       /* > 0: waiting for the cloud's acknowledgement of this packet id */
	uint8_t qos;   /* the PUBLISH's */
	uint64_t seq;
	size_t len;
};

/* How many of the records in flight at a break go alone afterwards at most (suspect_break()): the
 * first ones sent, one round trip each. */
#define ALONE_MAX 32

struct fb_session {
	struct fb_session_deps d;
	pthread_t thread;
	int efd;              /* d.efd: the channel's writer and fb_session_stop() write to it */
	atomic_bool stopping;
	atomic_bool dirty;    /* appended since the last WAL fsync */

	pthread_mutex_t status_lock;
	struct fb_link_status status;

	/* Everything below belongs to the worker thread. */
	struct mosquitto *mosq;
	SSL_CTX *ctx;
	BIO *wbuf;               /* the write coalescing of the connection (tls.h), NULL: none */
	size_t ep;               /* endpoint of the current or next attempt */
	size_t round_failures;   /* endpoints that failed since the last success */
	bool tcp_up;             /* the socket has been writable once (TCP connect done) */
	int nodelay;             /* TCP_NODELAY as last set: -1 unknown */
	bool connected;          /* CONNACK with success */
	bool ever_connected;
	bool lost;               /* the connection ended: tear it down after this iteration */
	char lost_reason[200];
	char lib_error[200];     /* last error line libmosquitto logged */
	uint64_t attempt_ms;
	uint64_t next_attempt_ms;
	uint32_t backoff_ms;
	uint64_t last_rx_ms;
	uint32_t keepalive_ms;   /* of this connection: the cloud's Server Keep Alive from CONNACK,
	                          * else cloud.keepalive; 0: the cloud turned keepalive off */
	uint32_t keepalive_logged; /* the last Server Keep Alive logged (s), 0: none */
	uint64_t progress_ms;    /* last acknowledgement, connect, or moment nothing was pending */
	uint32_t max_packet;     /* the cloud's Maximum Packet Size from CONNACK, 0: no limit */
	bool retain_available;   /* the cloud's Retain Available from CONNACK (absent: 1) */
	bool retain_told;        /* ... 0, and a retained record went without retain: logged */
	bool will_plain;         /* a cloud refused the retained status Will (0x9A): sent without retain */
	bool acked;              /* an acknowledgement arrived on this connection */
	int disconnect_reason;   /* reason code of the cloud's DISCONNECT on this connection, 0: none */
	bool silent;             /* the connection ended because nothing came back (keepalive) */
	bool local;              /* ... for a reason on this side (memory, the spool, libmosquitto) */
	struct fb_upload up;     /* whether the cloud takes what is sent (housekeeping()'s silence check) */
	uint64_t suspect_seq;    /* the record alone in flight when the last counted break came */
	unsigned suspect_breaks; /* ... how many such breaks it has had (suspect_break()) */
	/* Records that were in flight together when a connection broke (suspect_break()): each goes
	 * alone (nothing else in flight with it) until it is acknowledged or leaves the queue. */
	uint64_t alone[ALONE_MAX];
	size_t alone_n;
	uint64_t alone_seq;      /* one of them in flight alone now, 0: none */
	bool alone_wait;         /* fill() waits for the records in flight before sending one of them, */
	unsigned alone_lane;     /* ... which is in this lane: */
	bool alone_lane_next;    /* fill() takes that lane next */
	bool declined;           /* send_visit() did not send the record it was given */
	unsigned fill_lane;      /* the lane fill() takes records from */
	uint64_t pending_check_ms; /* when the spool was last asked whether anything is pending */
	uint64_t last_sync_ms;
	uint64_t last_wake_ms;
	bool c2e_waiting;        /* the broker has not taken every cloud message handed over */
	bool maybe_more;         /* spool "out" may hold records after cursor */
	uint64_t ready_us;       /* when the worker last cleared d.notified (monotonic µs; yield.h: lingering) */
	uint64_t read_retry_ms;  /* after a spool read error: no new attempt before this */
	/* Per lane queue (spool.h): last seq handed to libmosquitto (or skipped); for the queue of
	 * a lane's live_first rules, of its live part (seqs above live_from). */
	uint64_t cursor[FB_LANE_QUEUES];
	uint64_t back[FB_LANES]; /* live_first queues: the same for their backlog (up to live_from) */
	uint64_t live_from;      /* newest seq in "out" when this connection came up */
	uint64_t *cur;           /* the cursor of what fill() sends now */
	uint64_t share_credit;   /* lane_min_share: owed to the lower lanes, in 1/10000 sends */
	struct inflight *ring;
	size_t ring_cap, ring_head, ring_used;
	size_t ring_next;           /* ring index after the slot ring_find() found last */
	size_t window;              /* records waiting for an acknowledgement at most: ring_cap, or
	                             * the cloud's Receive Maximum when lower (libmosquitto would queue
	                             * the rest and write each one alone as a PUBACK frees its place).
	                             * The ring's other slots hold acknowledged records until their
	                             * delete is written: with a small Receive Maximum the window
	                             * refills while the deletes wait for a batch */
	size_t sending;             /* slots waiting for an acknowledgement */
	size_t acked_count;         /* SLOT_ACKED slots */
	bool flush_failed;          /* the last flush_acked() could not delete: again after ACK_FLUSH_MS */
	uint64_t acked_since_ms;    /* when the oldest of them was acknowledged */
	struct fb_spool_del *batch; /* ring_cap entries, for the deletes */
	uint8_t *props_key;         /* encoded properties of the last record sent ... */
	uint32_t props_key_len;
	mosquitto_property *props_list; /* ... and their decoded list, reused while they repeat */
	struct alias_cached *alias_c; /* [a - 1]: props_list's properties with Topic Alias a, reused
	                               * while the properties repeat (NULL: none yet) */
	uint16_t alias_cap;         /* entries of alias_c */
	uint16_t alias_head;        /* the aliases with a list, chained through alias_c[].next */
	char *topic_buf;         /* 65536 bytes: a record's topic, NUL-terminated */
	struct fb_yield yield;   /* how many records may go out while the broker thread is starved */
	struct fb_rate rate;     /* cloud.max_rate and cloud.max_bandwidth */
	unsigned jitter_seed;
	struct fb_resolve *rq;   /* the endpoint's name lookup while it runs (l->mosq exists, no socket) */
	struct fb_alias alias;   /* topic aliases of this connection (cloud.topic_aliases) */
	/* QoS 2 packet ids the cloud's session may still hold (held_release()): one bit each. */
	uint8_t held[65536 / 8];
	size_t held_n;
	size_t held_ep;          /* the endpoint whose session holds them, SIZE_MAX: not known */
	bool held_sent;          /* their PUBRELs went out on this connection, not known taken yet */
	uint16_t last_mid;       /* the packet id a client of this session used last, 0: none yet */
	unsigned lease_left;     /* packet ids that may still be used before the ids file is written */
	uint16_t lease_w;        /* the ids file says no id after this one is used, 0: not yet */
	int ids_fd;              /* the ids file, open once written, -1: not yet */
	bool lease_failed;       /* writing the ids file failed: said once */
	int status_mid;          /* packet id of this connection's status message */
	bool has_qos2;           /* an edge_to_cloud rule sends at QoS 2 */
	char *ids_path;          /* the ids file (ids_write()) */
};

static void set_status(struct fb_session *l, enum fb_link_state state, const char *error)
{
	pthread_mutex_lock(&l->status_lock);
	l->status.state = state;
	if(state == FB_LINK_CONNECTED){
		l->status.last_connect_ts = (uint64_t)time(NULL);
	}
	snprintf(l->status.endpoint, sizeof(l->status.endpoint), "%s", l->d.cfg->cloud.endpoints[l->ep].url);
	if(error){
		snprintf(l->status.last_error, sizeof(l->status.last_error), "%s", error);
	}
	pthread_mutex_unlock(&l->status_lock);
}

void fb_session_status(struct fb_session *l, struct fb_link_status *st)
{
	pthread_mutex_lock(&l->status_lock);
	*st = l->status;
	pthread_mutex_unlock(&l->status_lock);
}

/* Takes the records the broker thread staged into spool "out" and the tail. */
static int tail_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct fb_session *l = ud;

	fb_tail_push(l->d.tail, seq, val, len);
	l->maybe_more = true; /* whatever woke the worker, or nothing did: there is more to send */
	l->yield.in++;
	atomic_store_explicit(&l->dirty, true, memory_order_relaxed);
	return 0;
}

static void ingest(struct fb_session *l)
{
	uint64_t dropped = 0;

	fb_spool_ingest(l->d.spool, tail_visit, l, &dropped);
	if(dropped){
		fb_count(&l->d.ctr->dropped_full, dropped);
	}
}

/* ---- in-flight window ------------------------------------------------------------------------ */

static struct inflight *ring_at(struct fb_session *l, size_t i)
{
	return &l->ring[(l->ring_head + i) % l->ring_cap];
}

static void ring_clear(struct fb_session *l)
{
	l->ring_head = 0;
	l->ring_used = 0;
	l->sending = 0;
	l->acked_count = 0;
	l->flush_failed = false;
}

static void ring_pop_free(struct fb_session *l)
{
	while(l->ring_used > 0 && ring_at(l, 0)->mid == SLOT_FREE){
		l->ring_head = (l->ring_head + 1) % l->ring_cap;
		l->ring_used--;
	}
}

static void slot_acked(struct fb_session *l, struct inflight *e)
{
	if(l->acked_count++ == 0){
		l->acked_since_ms = fb_mono_ms();
	}
	e->mid = SLOT_ACKED;
}

/* QOS > 0: packet MID waits for its acknowledgement; 0: sent, nothing to wait for. */
static void ring_push(struct fb_session *l, uint8_t qos, int mid, uint64_t seq, size_t len)
{
	struct inflight *e = ring_at(l, l->ring_used++);

	e->seq = seq;
	e->len = len;
	e->qos = qos;
	if(qos > 0){
		e->mid = mid;
		l->sending++;
	}else{
		slot_acked(l, e);
	}
}

/* Acknowledgements nearly always arrive in order: the search starts after the slot found last
 * (the acknowledged slots before it stay until flush_acked(), up to half the ring), then wraps. */
static struct inflight *ring_find(struct fb_session *l, int mid)
{
	size_t start = (l->ring_next + l->ring_cap - l->ring_head) % l->ring_cap;

	if(start >= l->ring_used){
		start = 0;
	}
	for(size_t k = 0; k < l->ring_used; k++){
		size_t i = (start + k) % l->ring_used;
		struct inflight *e = ring_at(l, i);
		if(e->mid == mid){
			l->ring_next = (l->ring_head + i + 1) % l->ring_cap;
			return e;
		}
	}
	return NULL;
}

/* ---- packet ids across connections --------------------------------------------------------- *
 *
 * A QoS 2 record in flight when a connection breaks may have reached the cloud, which then holds
 * its packet id (PUBREC sent) until a PUBREL with that id arrives. libmosquitto numbers the packets
 * of every new client from 1 and knows nothing of the last one's, and the link sends such a record
 * again as a new PUBLISH. A later record that got a held id would be taken for a repeat of the
 * earlier message and dropped (MQTT 5, 4.3.3: the receiver must not deliver it again; Mosquitto
 * does so when topic and payload are the same), though its PUBCOMP counts it as forwarded.
 * So the ids that were in flight at QoS 2 are released: the next connection that resumes the
 * session sends a PUBREL for each before anything else (a cloud that holds none answers PUBCOMP,
 * in MQTT 5 with 0x92; libmosquitto ignores it), and every client goes on numbering after the
 * last one's ids, so that none of them meets a held id before its PUBCOMP is in. The ids are
 * kept until an acknowledgement of something sent after the PUBRELs shows that the cloud has
 * taken them. */

static void connection_lost(struct fb_session *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Packet ids run 1 to 65535: ID moved on by K. */
static uint16_t mid_add(uint16_t id, unsigned k)
{
	return (uint16_t)((id + 65534u + k) % 65535u + 1u);
}

/* A link process that ends (an orderly stop, kill -9, a crash) leaves its packet ids to the next
 * one: the ids file in the spool folder says that no id after W was used, and which D ids up to W
 * may still be held ("flowmq-ids W D Q", Q: 1 when a rule sends at QoS 2). It is written when a
 * packet id is used with none left of the last lease, for MID_LEASE ids from it (so the last id
 * used is at most MID_LEASE before W, and those in flight a window and the subscriptions of a
 * connection before that), and when a break adds held ids (D then reaches back to the oldest id
 * not known released). The next process goes on after W and releases those D ids. The record
 * has a fixed width and is rewritten in place: a full disk does not stop it. With spool.sync:
 * always it is synced; else a power cut can leave an older lease. */
#define MID_LEASE 1024
#define IDS_FORMAT "flowmq-ids %5u %5u %1d\n"
#define IDS_LEN 25

static bool held_has(const struct fb_session *l, unsigned mid)
{
	return (l->held[mid >> 3] >> (mid & 7)) & 1u;
}

static void held_add(struct fb_session *l, unsigned mid)
{
	if(!held_has(l, mid)){
		l->held[mid >> 3] |= (uint8_t)(1u << (mid & 7));
		l->held_n++;
	}
}

static void held_drop(struct fb_session *l, unsigned mid)
{
	if(held_has(l, mid)){
		l->held[mid >> 3] &= (uint8_t)~(1u << (mid & 7));
		l->held_n--;
	}
}

static void held_clear(struct fb_session *l)
{
	if(l->held_n){
		memset(l->held, 0, sizeof(l->held));
		l->held_n = 0;
	}
	l->held_sent = false;
}

/* The ids up to the lease's end that may be held: those a connection can leave in flight, and the
 * held ones further back; never so many that the next client's own ids (after W) are among them. */
static unsigned ids_range(const struct fb_session *l, uint16_t w)
{
	const struct fb_config *cfg = l->d.cfg;
	unsigned near = cfg->cloud.max_inflight + (unsigned)cfg->c2e_count + 8;
	unsigned d = MID_LEASE + near;

	for(unsigned mid = 1; l->held_n && mid < 65536; mid++){
		if(held_has(l, mid)){
			unsigned back = ((unsigned)w + 65535u - mid) % 65535u + 1u; /* W itself: 1 */
			d = back > d ? back : d;
		}
	}
	return near >= 65535 ? 0 : d > 65535 - near ? 65535 - near : d;
}

static void ids_write(struct fb_session *l)
{
	char buf[IDS_LEN + 1];
	bool fresh = false;
	int rc = 0, oerr = 0;

	if(l->ids_path == NULL || l->lease_w == 0){
		return;
	}
	if(l->ids_fd < 0){
		l->ids_fd = open(l->ids_path, O_RDWR | O_CLOEXEC, 0600);
		if(l->ids_fd < 0 && errno == ENOENT){
			l->ids_fd = open(l->ids_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
			fresh = true;
		}
		oerr = errno;
	}
	snprintf(buf, sizeof(buf), IDS_FORMAT, (unsigned)l->lease_w, ids_range(l, l->lease_w), l->has_qos2);
	if(l->ids_fd < 0){
		rc = -oerr;
	}else if((errno = 0, pwrite(l->ids_fd, buf, IDS_LEN, 0) != IDS_LEN)
			|| (l->d.cfg->spool.sync == FB_SYNC_ALWAYS && fdatasync(l->ids_fd) != 0)){
		rc = errno ? -errno : -EIO;
	}else if(fresh && l->d.cfg->spool.sync == FB_SYNC_ALWAYS){
		int dfd = open(l->d.cfg->spool.path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

		if(dfd >= 0){
			fsync(dfd);
			close(dfd);
		}
	}
	if(rc && !l->lease_failed){
		fb_log(l->d.lg, MOSQ_LOG_WARNING, "cannot write the packet id file %s: %s; a link process after this "
				"one may number its packets from 1 again", l->ids_path, strerror(-rc));
	}else if(!rc && l->lease_failed){
		fb_log(l->d.lg, MOSQ_LOG_NOTICE, "the packet id file %s is written again", l->ids_path);
	}
	l->lease_failed = rc != 0;
}

static void mid_used(struct fb_session *l, int mid)
{
	if(mid > 0){
		if(!l->held_sent){
			held_drop(l, (unsigned)mid); /* 65,535 ids on without a session that could release it: in use again */
		}
		l->last_mid = (uint16_t)mid;
		if(l->lease_left == 0){
			l->lease_w = mid_add(l->last_mid, MID_LEASE - 1);
			ids_write(l);
			l->lease_left = l->lease_failed ? 63 : MID_LEASE - 1; /* a failed write: again soon */
		}else{
			l->lease_left--;
		}
	}
}

/* At the start of the process: what the last one left (ids_write()). */
static void mid_restore(struct fb_session *l)
{
	const struct fb_config *cfg = l->d.cfg;
	unsigned w, d;
	int q = 0;
	char buf[IDS_LEN + 1];
	ssize_t n;
	int fd;

	for(size_t i = 0; i < cfg->e2c_count; i++){
		l->has_qos2 = l->has_qos2 || cfg->e2c[i].qos == 2;
	}
	l->ids_path = malloc(strlen(cfg->spool.path) + sizeof("/" FB_SPOOL_IDS_FILE));
	if(l->ids_path == NULL){
		return;
	}
	sprintf(l->ids_path, "%s/%s", cfg->spool.path, FB_SPOOL_IDS_FILE);
	fd = open(l->ids_path, O_RDONLY | O_CLOEXEC);
	if(fd < 0){
		return;
	}
	n = pread(fd, buf, IDS_LEN, 0);
	close(fd);
	buf[n > 0 ? n : 0] = '\0';
	if(n == IDS_LEN && sscanf(buf, "flowmq-ids %5u %5u %1d", &w, &d, &q) == 3 && w >= 1 && w <= 65535
			&& d <= 65535){
		l->last_mid = (uint16_t)w;
		l->lease_w = (uint16_t)w;
		l->held_ep = SIZE_MAX; /* the last process's endpoint */
		for(unsigned k = 0; q == 1 && k < d; k++){
			held_add(l, mid_add((uint16_t)w, 65535u - k)); /* W, W - 1, ... */
		}
		/* this configuration's window may be larger: never its next ids */
		d = ids_range(l, (uint16_t)w);
		for(unsigned k = d; k < 65535; k++){
			held_drop(l, mid_add((uint16_t)w, 65535u - k));
		}
	}
}

/* A new client (no socket yet) goes on after the last one's packet ids: libmosquitto 2.0 takes the
 * next id of a QoS 0 publish before it finds that there is no connection. */
static void mid_seek(struct fb_session *l)
{
	int mid = 0;

	for(unsigned n = 0; l->last_mid && mid != l->last_mid && n < 65535; n++){
		if(mosquitto_publish_v5(l->mosq, &mid, "flowmq/seek", 0, NULL, 0, false, NULL) != MOSQ_ERR_NO_CONN){
			fb_log(l->d.lg, MOSQ_LOG_WARNING, "packet ids cannot go on from the last connection: this "
					"libmosquitto sends a publish without a connection");
			return;
		}
	}
}

/* Writes LEN bytes to the connection before anything libmosquitto sends later (on_connect():
 * nothing of its own waits to be written then). Returns 0 or -1 when the connection failed or
 * did not take them within a second and LEN / 16 ms (with TLS they are only gathered). */
static int raw_write(struct fb_session *l, const uint8_t *buf, size_t len)
{
	SSL *ssl = mosquitto_ssl_get(l->mosq);
	int sock = mosquitto_socket(l->mosq);
	uint64_t deadline = fb_mono_ms() + 1000 + len / 16; /* 16 kB/s at least */

	while(len > 0){
		struct pollfd p = { .fd = sock, .events = POLLOUT };
		ssize_t n = 0;

		if(ssl){
			/* with write coalescing (tls.h), SSL_write() only gathers */
			int w = SSL_write(ssl, buf, len > 65536 ? 65536 : (int)len);

			if(w > 0){
				n = w;
			}else if(SSL_get_error(ssl, w) == SSL_ERROR_WANT_READ){
				p.events = POLLIN;
			}else if(SSL_get_error(ssl, w) != SSL_ERROR_WANT_WRITE){
				return -1;
			}
		}else if((n = send(sock, buf, len, MSG_NOSIGNAL)) < 0){
			if(errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR){
				return -1;
			}
			n = 0;
		}
		buf += n;
		len -= (size_t)n;
		if(len && (fb_mono_ms() >= deadline || (poll(&p, 1, 100) < 0 && errno != EINTR))){
			return -1;
		}
	}
	return 0;
}

/* The cloud resumed the session: a PUBREL for each packet id it may hold (v5, reason 0 left out).
 * Returns false when the connection failed (lost). */
static bool held_release(struct fb_session *l)
{
	uint8_t *buf = malloc(l->held_n * 4);
	size_t n = 0;

	if(buf == NULL){
		l->local = !l->lost;
		connection_lost(l, "out of memory");
		return false;
	}
	for(unsigned mid = 1; mid < 65536; mid++){
		if(held_has(l, mid)){
			buf[n++] = CMD_PUBREL | 2;
			buf[n++] = 2;
			buf[n++] = (uint8_t)(mid >> 8);
			buf[n++] = (uint8_t)mid;
		}
	}
	if(raw_write(l, buf, n) != 0){
		free(buf);
		connection_lost(l, "cannot send PUBREL for %zu packet ids the cloud's session may hold", l->held_n);
		return false;
	}
	free(buf);
	fb_log(l->d.lg, MOSQ_LOG_INFO, "PUBREL sent for %zu packet ids the cloud's session may hold (QoS 2 messages "
			"in flight when a connection or link process ended; they are sent again with new ids)", l->held_n);
	l->held_sent = true;
	return true;
}

/* Deletes every acknowledged record in one spool write and frees their slots. Until then they
 * count as in flight: a crash in between sends them again. Counted as forwarded: the records the
 * delete found live (drop_oldest may have dropped one in flight, counted as dropped already). A
 * delete that fails (the disk filled up at that write, out of memory) keeps the slots, and the
 * next flush tries again: freed, they would be sent again only after a reconnect, and counted
 * twice. */
#define ACK_FLUSH_MS 20

static void flush_acked(struct fb_session *l)
{
	size_t n = 0, removed;
	int rc;

	if(l->acked_count == 0){
		return;
	}
	for(size_t i = 0; i < l->ring_used; i++){
		struct inflight *e = ring_at(l, i);
		if(e->mid == SLOT_ACKED){
			l->batch[n++] = (struct fb_spool_del){ e->seq, e->len };
		}
	}
	rc = fb_spool_delete_counted(l->d.spool, FB_Q_OUT, l->batch, n, &removed);
	if(rc < 0){
		if(!l->flush_failed){
			fb_log(l->d.lg, MOSQ_LOG_ERR, "%zu records the cloud acknowledged cannot be deleted from the "
					"spool now: %s; they are tried again every %d ms, and new records wait for room",
					n, strerror(-rc), ACK_FLUSH_MS);
		}
		l->flush_failed = true;
		l->acked_since_ms = fb_mono_ms(); /* again after ACK_FLUSH_MS */
		return;
	}
	if(l->flush_failed){
		fb_log(l->d.lg, MOSQ_LOG_NOTICE, "records the cloud acknowledged are deleted from the spool again");
		l->flush_failed = false;
	}
	for(size_t i = 0; i < l->ring_used; i++){
		struct inflight *e = ring_at(l, i);
		if(e->mid == SLOT_ACKED){
			e->mid = SLOT_FREE;
		}
	}
	fb_count(&l->d.ctr->forwarded, removed);
	l->acked_count = 0;
	ring_pop_free(l);
}

/* Records the broker thread staged stay in their staging file, as durable there as in RocksDB's
 * WAL (fb_spool_sync() syncs both), until the broker has moved on to the other file and is a
 * quarter into it: then the ones still unacknowledged go into RocksDB in one batch and the file is
 * emptied, three quarters of a file before the broker needs it again. A record acknowledged before
 * that never reaches RocksDB. */
static void maybe_settle(struct fb_session *l)
{
	ingest(l);
	if(fb_spool_settle_wanted(l->d.spool)){
		fb_spool_settle(l->d.spool);
	}
}

/* Batches deletes while messages flow: flushes when acknowledged records fill half the ring
 * (max_inflight), after ACK_FLUSH_MS, or when nothing waits for an acknowledgement any more. */
static void maybe_flush_acked(struct fb_session *l, uint64_t now)
{
	if(l->acked_count && (now >= l->acked_since_ms + ACK_FLUSH_MS
				|| (!l->flush_failed && (l->acked_count >= l->ring_cap / 2 || l->sending == 0)))){
		flush_acked(l);
	}
}

/* ---- connection lifecycle -------------------------------------------------------------------- */

static void connection_lost(struct fb_session *l, const char *fmt, ...)
{
	va_list ap;

	if(l->lost){
		return; /* keep the first reason */
	}
	l->lost = true;
	va_start(ap, fmt);
	vsnprintf(l->lost_reason, sizeof(l->lost_reason), fmt, ap);
	va_end(ap);
}

static void move_dead(struct fb_session *l, uint64_t seq, int reason, const char *why);

/* Whether the way this connection ended can come from what was sent: the cloud closed it (the
 * socket ended or was reset, no DISCONNECT) or sent a DISCONNECT whose reason is about a packet.
 * A DISCONNECT about the cloud itself or the session (shutting down, busy, session taken over,
 * use another server, quota, Receive Maximum exceeded: ours to fix) is not, nor a failure on this
 * side (memory, the spool, libmosquitto), and neither is silence: nothing received for 1.5 x
 * keepalive, or no answer to a PINGREQ, is a black hole in the network or a frozen cloud; unless
 * the cloud was still taking a PUBLISH then (upload.h): one too large to send within keepalive
 * over this connection. */
static bool break_blames_message(const struct fb_session *l)
{
	if(l->silent || l->local){
		return false;
	}
	switch(l->disconnect_reason){
		case 0:
		case MQTT_RC_UNSPECIFIED:
		case MQTT_RC_MALFORMED_PACKET:
		case MQTT_RC_PROTOCOL_ERROR:
		case MQTT_RC_IMPLEMENTATION_SPECIFIC:
		case MQTT_RC_NOT_AUTHORIZED:
		case MQTT_RC_TOPIC_NAME_INVALID:
		case MQTT_RC_TOPIC_ALIAS_INVALID:
		case MQTT_RC_PACKET_TOO_LARGE:
		case MQTT_RC_PAYLOAD_FORMAT_INVALID:
		case MQTT_RC_RETAIN_NOT_SUPPORTED:
		case MQTT_RC_QOS_NOT_SUPPORTED:
			return true;
		default:
			return false;
	}
}

/* Where SEQ is among the records that go alone, or -1. */
static ssize_t alone_find(const struct fb_session *l, uint64_t seq)
{
	for(size_t i = 0; i < l->alone_n; i++){
		if(l->alone[i] == seq){
			return (ssize_t)i;
		}
	}
	return -1;
}

static bool alone_has(const struct fb_session *l, uint64_t seq)
{
	return alone_find(l, seq) >= 0;
}

/* Record SEQ was acknowledged or left the queue: it need not go alone any more. */
static void alone_done(struct fb_session *l, uint64_t seq)
{
	ssize_t i = alone_find(l, seq);

	if(i >= 0){
		l->alone[i] = l->alone[--l->alone_n];
	}
	if(l->alone_seq == seq){
		l->alone_seq = 0;
	}
}

/* Forgets those of them that left the queue otherwise (spool.on_full: drop_oldest). */
static void alone_prune(struct fb_session *l)
{
	for(size_t i = 0; i < l->alone_n;){
		if(fb_spool_live(l->d.spool, FB_Q_OUT, l->alone[i])){
			i++;
		}else{
			l->alone[i] = l->alone[--l->alone_n];
		}
	}
}

/* A connection broke in a way that can come from what was sent (break_blames_message()). When
 * exactly one record was in flight without its acknowledgement, it is the one: after
 * cloud.poison_after such breaks (with no other record blamed in between, and none acknowledging
 * it), it goes to dead letters with the reason, and the queue moves on. When several were, any of
 * them may be: each of them (the first ALONE_MAX sent) goes alone from the next connection on
 * (send_visit()), with nothing else in flight, so that a break then names its record; the other
 * records flow as usual. Acknowledgements of other records do not clear a suspect: with priority
 * lanes, a higher lane's records go first on every connection. Breaks that are not the message's
 * change nothing. Worker thread, from teardown() before the window is cleared. */
static void suspect_break(struct fb_session *l)
{
	struct inflight *head = NULL;
	size_t waiting = 0, added = 0;
	char why[400];

	if(!break_blames_message(l)){
		return;
	}
	for(size_t i = 0; i < l->ring_used; i++){
		if(ring_at(l, i)->mid > 0){
			head = head ? head : ring_at(l, i);
			waiting++;
		}
	}
	if(waiting == 0){
		return;
	}
	alone_prune(l);
	if(waiting > 1){
		for(size_t i = 0; i < l->ring_used && l->alone_n < ALONE_MAX; i++){
			uint64_t seq = ring_at(l, i)->seq;

			if(ring_at(l, i)->mid > 0 && !alone_has(l, seq)){
				l->alone[l->alone_n++] = seq;
				added++;
			}
		}
		if(added){
			fb_log(l->d.lg, MOSQ_LOG_NOTICE, "%zu records were in flight when the connection broke: %zu of them "
					"go alone from the next connection on, so that a record that breaks the connection is "
					"known (cloud.poison_after)", waiting, added);
		}
		return;
	}
	if(head->seq != l->suspect_seq){
		l->suspect_seq = head->seq;
		l->suspect_breaks = 0;
	}
	if(!alone_has(l, head->seq) && l->alone_n < ALONE_MAX){
		l->alone[l->alone_n++] = head->seq; /* it goes alone again */
	}
	if(++l->suspect_breaks < l->d.cfg->cloud.poison_after){
		return;
	}
	snprintf(why, sizeof(why), "%s (the connection broke %u times while it was the only record in flight, "
			"without an acknowledgement; last: %s)",
			mosquitto_reason_string(l->disconnect_reason ? l->disconnect_reason : MQTT_RC_UNSPECIFIED),
			l->suspect_breaks, l->lost_reason);
	move_dead(l, head->seq, l->disconnect_reason ? l->disconnect_reason : MQTT_RC_UNSPECIFIED, why);
	l->suspect_breaks = 0;
	l->suspect_seq = 0;
}

static void teardown(struct fb_session *l)
{
	const struct fb_config *cfg = l->d.cfg;
	const char *url = cfg->cloud.endpoints[l->ep].url;
	uint32_t delay;
	bool carried;

	if(l->connected){
		fb_log(l->d.lg, MOSQ_LOG_WARNING, "connection to %s lost: %s", url, l->lost_reason);
	}else{
		fb_log(l->d.lg, MOSQ_LOG_ERR, "cannot connect to %s: %s", url, l->lost_reason);
	}
	set_status(l, FB_LINK_DISCONNECTED, l->lost_reason);

	fb_resolve_free(l->rq);
	l->rq = NULL;
	l->wbuf = NULL; /* freed with the SSL */
	mosquitto_destroy(l->mosq);
	l->mosq = NULL;
	SSL_CTX_free(l->ctx);
	l->ctx = NULL;
	carried = l->acked || l->sending == 0;
	if(l->connected){
		suspect_break(l);
	}
	/* Records in flight stay in the spool: the next connection sends them again, oldest first. */
	if(cfg->cloud.session_expiry_s > 0){
		size_t before = l->held_n;

		for(size_t i = 0; i < l->ring_used; i++){
			if(ring_at(l, i)->mid > 0 && ring_at(l, i)->qos == 2){
				held_add(l, ring_at(l, i)->mid);
			}
		}
		if(l->held_n > before){
			l->held_ep = l->ep;
			ids_write(l); /* the next process releases them too */
		}
	}
	l->held_sent = false; /* PUBRELs not known taken: sent again */
	flush_acked(l);
	ring_clear(l);
	l->alone_seq = 0;
	l->alone_wait = false;
	l->alone_lane_next = false;

	if(l->connected && carried){
		/* A working endpoint that dropped: try it again first, after the minimum delay. */
		l->round_failures = 0;
		l->backoff_ms = cfg->cloud.reconnect_min_ms;
		delay = cfg->cloud.reconnect_min_ms;
	}else if(l->connected){
		/* Connected, sent, and not one acknowledgement: a failed attempt, on the same endpoint
		 * (the cloud took the connection; it is what we send that it will not take). */
		delay = l->backoff_ms / 2 + (uint32_t)rand_r(&l->jitter_seed) % (l->backoff_ms / 2 + 1);
		l->backoff_ms = l->backoff_ms * 2 > cfg->cloud.reconnect_max_ms ? cfg->cloud.reconnect_max_ms : l->backoff_ms * 2;
	}else if(++l->round_failures < cfg->cloud.endpoint_count){
		l->ep = (l->ep + 1) % cfg->cloud.endpoint_count; /* fail over at once */
		delay = 0;
	}else{
		/* Every endpoint failed: back off exponentially, with jitter in [backoff/2, backoff]. */
		l->round_failures = 0;
		l->ep = 0;
		delay = l->backoff_ms / 2 + (uint32_t)rand_r(&l->jitter_seed) % (l->backoff_ms / 2 + 1);
		l->backoff_ms = l->backoff_ms * 2 > cfg->cloud.reconnect_max_ms ? cfg->cloud.reconnect_max_ms : l->backoff_ms * 2;
	}
	l->next_attempt_ms = fb_mono_ms() + delay;
	l->connected = false;
	l->lost = false;
	l->silent = false;
	l->local = false;
	l->lost_reason[0] = '\0';
	l->lib_error[0] = '\0';
}

static void on_log(struct mosquitto *mosq, void *obj, int level, const char *str)
{
	struct fb_session *l = obj;
	(void)mosq;

	if(level == MOSQ_LOG_ERR && l->lib_error[0] == '\0'){
		snprintf(l->lib_error, sizeof(l->lib_error), "%s", str);
	}
}

/* Whether libmosquitto's error RC is of this side: memory. Anything else may come from the record
 * (it counts toward cloud.poison_after, so that the queue moves on) or from the connection. */
static bool local_error(int rc)
{
	return rc == MOSQ_ERR_NOMEM;
}

/* How often the link looks at what the cloud acknowledged of its bytes (upload.h), and how
 * recently that must have grown for a send to be under way: three looks. A black hole or a
 * frozen cloud acknowledges nothing new from then on. */
static uint64_t upload_look_ms(const struct fb_session *l)
{
	return l->keepalive_ms && l->keepalive_ms / 4 < 1000 ? l->keepalive_ms / 4 : 1000;
}

static uint64_t upload_recent_ms(const struct fb_session *l)
{
	return 3 * upload_look_ms(l) + 100;
}

static void subscribe_all(struct fb_session *l)
{
	const struct fb_config *cfg = l->d.cfg;

	for(size_t i = 0; i < cfg->c2e_count; i++){
		/* A message counts as received once it is in spool "in"; libmosquitto acknowledges QoS 2
		 * (PUBREC) before it hands the message over, so subscriptions use QoS 1 at most. */
		int qos = cfg->c2e[i].qos > 1 ? 1 : cfg->c2e[i].qos;
		/* no-local: our own publishes never come back; retain-as-published: retained cloud
		 * messages stay retained locally (unless the rule says retain: clear); retained
		 * messages are sent only when the subscription is new, not at every reconnect. */
		int opts = MQTT_SUB_OPT_NO_LOCAL | MQTT_SUB_OPT_RETAIN_AS_PUBLISHED | MQTT_SUB_OPT_SEND_RETAIN_NEW;
		int mid = 0;
		int rc = mosquitto_subscribe_v5(l->mosq, &mid, cfg->c2e[i].cloud, qos, opts, NULL);

		mid_used(l, mid);

		if(rc != MOSQ_ERR_SUCCESS){
			l->local = !l->lost && local_error(rc);
			connection_lost(l, "cannot subscribe to %s: %s", cfg->c2e[i].cloud, mosquitto_strerror(rc));
		}
	}
}

/* Topic aliases start over with every connection, within the Topic Alias Maximum of its CONNACK
 * (absent: 0, none). */
static void aliases_reset(struct fb_session *l, const mosquitto_property *connack)
{
	uint16_t max = 0;

	if(l->d.cfg->cloud.topic_aliases){
		mosquitto_property_read_int16(connack, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, &max, false);
	}
	fb_alias_reset(&l->alias, max);
}

struct alias_cached {
	mosquitto_property *list;
	uint16_t next; /* the next alias with a list, 0: none */
};

static void alias_list_forget(struct fb_session *l)
{
	while(l->alias_head){
		struct alias_cached *c = &l->alias_c[l->alias_head - 1];

		mosquitto_property_free_all(&c->list);
		l->alias_head = c->next;
	}
}

/* Keeps LIST as props_list's properties with Topic Alias ALIAS (at most the Topic Alias
 * Maximum). Returns false (LIST not kept) when memory is short. */
static bool alias_keep(struct fb_session *l, uint16_t alias, mosquitto_property *list)
{
	if(alias > l->alias_cap){
		struct alias_cached *c = realloc(l->alias_c, (size_t)l->alias.max * sizeof(*c));

		if(c == NULL){
			return false;
		}
		memset(c + l->alias_cap, 0, (size_t)(l->alias.max - l->alias_cap) * sizeof(*c));
		l->alias_c = c;
		l->alias_cap = l->alias.max;
	}
	l->alias_c[alias - 1].list = list;
	l->alias_c[alias - 1].next = l->alias_head;
	l->alias_head = alias;
	return true;
}

/* The alias for R's topic (in l->topic_buf), added to *PROPS; when *PROPS is the cached
 * l->props_list, *PROPS becomes the list kept for this alias, made the first time: a list of its
 * own decoded from R (mosquitto_property_copy_all() makes lists whose head libmosquitto 2.0.11
 * would send alone), kept while the properties repeat (messages on the topics that have an alias
 * decode nothing). Sets *KEPT when *PROPS is kept by the session (the caller must not free it),
 * and *FULL when the PUBLISH carries the full topic. Returns the alias, 0: none after all (memory
 * is short; no mapping made). */
static uint16_t alias_props(struct fb_session *l, const struct fb_record *r, mosquitto_property **props, bool *kept,
		bool *full)
{
	mosquitto_property *own = *props;
	bool cached = *props == l->props_list;
	uint16_t alias = fb_alias_get(&l->alias, l->topic_buf, r->topic_len, full);

	*kept = cached;
	if(alias == 0){
		return 0;
	}
	if(cached && alias <= l->alias_cap && l->alias_c[alias - 1].list){
		*props = l->alias_c[alias - 1].list;
		return alias;
	}
	if(cached && (own = NULL, fb_props_decode(r->props, r->props_len, &own) < 0)){
		fb_alias_drop(&l->alias, l->topic_buf, r->topic_len);
		*full = true;
		return 0;
	}
	if(mosquitto_property_add_int16(&own, MQTT_PROP_TOPIC_ALIAS, alias) != MOSQ_ERR_SUCCESS){
		fb_alias_drop(&l->alias, l->topic_buf, r->topic_len);
		if(own != *props){
			mosquitto_property_free_all(&own);
		}
		*full = true;
		return 0;
	}
	*kept = cached && alias_keep(l, alias, own);
	*props = own;
	return alias;
}

/* MQTT 5 (3.2.2.3.14): a Server Keep Alive in the CONNACK replaces the keepalive the CONNECT
 * asked for. libmosquitto applies it to its PINGREQs; the link's own clocks (silence_deadline(),
 * stall_guard()) follow it through l->keepalive_ms. Logged when it differs from cloud.keepalive,
 * once for each value. */
static void keepalive_from(struct fb_session *l, const mosquitto_property *connack)
{
	const struct fb_config *cfg = l->d.cfg;
	uint16_t ska;

	l->keepalive_ms = cfg->cloud.keepalive_s * 1000u;
	if(mosquitto_property_read_int16(connack, MQTT_PROP_SERVER_KEEP_ALIVE, &ska, false) == NULL
			|| ska == cfg->cloud.keepalive_s){
		return;
	}
	l->keepalive_ms = ska * 1000u;
	if(ska != l->keepalive_logged){
		fb_log(l->d.lg, MOSQ_LOG_INFO, "the cloud's Server Keep Alive is %u s: it replaces cloud.keepalive (%u s)%s",
				ska, cfg->cloud.keepalive_s, ska ? "" : "; no keepalive on this connection");
		l->keepalive_logged = ska;
	}
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *props)
{
	struct fb_session *l = obj;
	const struct fb_config *cfg = l->d.cfg;

	if(rc == MQTT_RC_RETAIN_NOT_SUPPORTED && cfg->cloud.status_topic && !l->will_plain){
		/* MQTT 5: a cloud without retained messages refuses a retained Will. */
		l->will_plain = true;
		connection_lost(l, "the cloud refused the connection: %s; the status Will (cloud.status_topic) goes "
				"without retain from the next attempt on", mosquitto_reason_string(rc));
		return;
	}
	if(rc != 0){
		connection_lost(l, "the cloud refused the connection: %s", mosquitto_reason_string(rc));
		return;
	}
	l->connected = true;
	l->status_mid = 0;
	l->progress_ms = fb_mono_ms();
	fb_upload_start(&l->up, mosquitto_socket(mosq), l->progress_ms);
	l->acked = false;
	l->disconnect_reason = 0;
	l->max_packet = 0;
	mosquitto_property_read_int32(props, MQTT_PROP_MAXIMUM_PACKET_SIZE, &l->max_packet, false);
	keepalive_from(l, props);
	{
		uint8_t ra = 1; /* absent: 1 (MQTT 5, 3.2.2.3.5) */

		if(mosquitto_property_read_byte(props, MQTT_PROP_RETAIN_AVAILABLE, &ra, false) && ra){
			/* said so (another endpoint, or the cloud changed): retained again next time; a
			 * cloud that leaves it out may still refuse a retained Will */
			l->will_plain = false;
		}
		l->retain_available = ra != 0;
		l->retain_told = false;
	}
	{
		uint16_t rm = 65535; /* absent: 65,535 (MQTT 5, 3.2.2.3.3) */

		mosquitto_property_read_int16(props, MQTT_PROP_RECEIVE_MAXIMUM, &rm, false);
		l->window = rm && rm < l->ring_cap ? rm : l->ring_cap;
	}
	aliases_reset(l, props);
	l->round_failures = 0;
	/* The back-off starts over once this connection has carried something (teardown()). */
	memset(l->cursor, 0, sizeof(l->cursor));
	memset(l->back, 0, sizeof(l->back));
	alone_prune(l);
	ingest(l);
	{
		struct fb_spool_stats st;

		/* live_first: what is in the spool now is the backlog, what comes later is live. */
		fb_spool_stats(l->d.spool, &st);
		l->live_from = st.last_seq;
		for(unsigned q = FB_LANES; q < FB_LANE_QUEUES; q++){
			l->cursor[q] = st.last_seq;
		}
	}
	l->share_credit = 0;
	l->maybe_more = true;
	if(l->ever_connected){
		fb_count(&l->d.ctr->reconnects, 1);
	}
	l->ever_connected = true;
	l->wbuf = fb_tls_coalesce(mosquitto_ssl_get(mosq), COALESCE_BYTES);
	/* libmosquitto formats a debug line for every packet while a log callback is set; it is
	 * only needed to explain a failed connect. */
	mosquitto_log_callback_set(mosq, NULL);
	set_status(l, FB_LINK_CONNECTED, NULL);
	fb_log(l->d.lg, MOSQ_LOG_NOTICE, "connected to %s as %s", cfg->cloud.endpoints[l->ep].url, cfg->cloud.client_id);
	if(cfg->cloud.session_expiry_s == 0 || (!(flags & 1) && (l->held_ep == SIZE_MAX || l->held_ep == l->ep))){
		held_clear(l); /* the session that held them is gone (another endpoint's may still be there) */
	}else if((flags & 1) && l->held_n && !held_release(l)){
		return;
	}
	subscribe_all(l);
	if(cfg->cloud.status_topic){
		int mid = 0;

		mosquitto_publish_v5(mosq, &mid, cfg->cloud.status_topic, 6, "online", 1, true, NULL);
		mid_used(l, mid);
		l->status_mid = mid;
	}
}

/* Records why the connection ended, from the most precise source available: a certificate
 * verification failure, the error libmosquitto logged, the socket error, or RC. */
static void lost_with_rc(struct fb_session *l, int rc, int sock_err)
{
	const struct fb_config *cfg = l->d.cfg;
	const char *verify = fb_tls_verify_error(l->ctx);

	if(rc == MOSQ_ERR_KEEPALIVE && !l->lost){
		/* libmosquitto's PINGREQ went unanswered (its socket is closed now: the last look
		 * decides whether the cloud was still taking a PUBLISH) */
		l->silent = fb_mono_ms() >= l->up.moved_ms + upload_recent_ms(l);
	}
	if(!verify[0] && !l->connected && l->tcp_up && l->ctx && cfg->cloud.tls.cert_file == NULL){
		/* A cloud that requires a client certificate closes the connection right after the
		 * TLS 1.3 handshake; the alert saying so is often lost to the reset. */
		connection_lost(l, "%s; no client certificate is configured (tls.cert_file), and the cloud may require one",
				l->lib_error[0] ? l->lib_error : sock_err ? strerror(sock_err) : mosquitto_strerror(rc));
	}else if(verify[0]){
		connection_lost(l, "TLS: %s", verify);
	}else if(l->lib_error[0]){
		connection_lost(l, "%s", l->lib_error);
	}else if(sock_err){
		connection_lost(l, "%s", strerror(sock_err));
	}else if(rc == MOSQ_ERR_KEEPALIVE){
		connection_lost(l, "no answer to PINGREQ within keepalive");
	}else if(rc == MOSQ_ERR_ERRNO){
		connection_lost(l, "%s", strerror(errno));
	}else if(rc > 0 && rc < 0x80){
		connection_lost(l, "%s", mosquitto_strerror(rc));
	}else{
		connection_lost(l, "the cloud disconnected: %s", mosquitto_reason_string(rc));
	}
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props)
{
	struct fb_session *l = obj;
	(void)mosq; (void)props;

	if(rc >= 0x80 && rc <= 0xff){
		l->disconnect_reason = rc; /* the cloud's DISCONNECT */
	}
	lost_with_rc(l, rc, 0);
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid, int reason, const mosquitto_property *props);
static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
		const mosquitto_property *props);

/* A lookup slower than this is worth a log line. */
#define RESOLVE_SLOW_MS 1000

/* Connects libmosquitto to the first address of RES (numeric, so that it looks nothing up) that
 * does not fail at once, as libmosquitto would with the name: a non-blocking connect that fails
 * later is a failed attempt, not a reason to try the next address. */
static void connect_addresses(struct fb_session *l, const struct addrinfo *res)
{
	const struct fb_config *cfg = l->d.cfg;
	const struct fb_endpoint *ep = &cfg->cloud.endpoints[l->ep];
	int rc = MOSQ_ERR_EAI, err = 0;

	for(const struct addrinfo *a = res; a; a = a->ai_next){
		char ip[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];

		if(getnameinfo(a->ai_addr, a->ai_addrlen, ip, sizeof(ip), NULL, 0, NI_NUMERICHOST) != 0){
			continue;
		}
		l->lib_error[0] = '\0';
		rc = mosquitto_connect_bind_async(l->mosq, ip, ep->port, (int)cfg->cloud.keepalive_s, NULL);
		if(rc == MOSQ_ERR_SUCCESS || rc == MOSQ_ERR_CONN_PENDING){
			return;
		}
		if(rc != MOSQ_ERR_ERRNO){
			break;
		}
		err = errno;
	}
	if(rc == MOSQ_ERR_ERRNO){
		connection_lost(l, "%s", strerror(err));
	}else if(rc == MOSQ_ERR_EAI){
		connection_lost(l, "%s has no usable address", ep->host);
	}else{
		connection_lost(l, "%s", l->lib_error[0] ? l->lib_error : mosquitto_strerror(rc));
	}
}

/* Hands the username and the password to l->mosq. The password file is read again for every
 * attempt (rotated tokens), with the checks of the configuration load; when it cannot be read the
 * attempt fails naming the file and the reason, and the password read before is not used. */
static bool set_credentials(struct fb_session *l)
{
	const struct fb_config *cfg = l->d.cfg;
	char err[512];
	char *pw = NULL;

	if(cfg->cloud.password_file && fb_config_read_secret(cfg->cloud.password_file, &pw, err, sizeof(err)) < 0){
		connection_lost(l, "cloud.auth.password_file: %s", err);
		return false;
	}
	mosquitto_username_pw_set(l->mosq, cfg->cloud.username, pw);
	if(pw){
		explicit_bzero(pw, strlen(pw));
		free(pw);
	}
	return true;
}

static void start_attempt(struct fb_session *l, uint64_t now)
{
	const struct fb_config *cfg = l->d.cfg;
	const struct fb_endpoint *ep = &cfg->cloud.endpoints[l->ep];
	mosquitto_property *cprops = NULL;
	char err[256];
	int rc;

	set_status(l, FB_LINK_CONNECTING, NULL);
	l->attempt_ms = now;
	l->last_rx_ms = now;
	l->keepalive_ms = cfg->cloud.keepalive_s * 1000u;
	l->tcp_up = false;
	l->nodelay = -1;
	l->mosq = fb_client_new(cfg->cloud.client_id, false, l); /* client.h: no wake-up socket pair */
	if(l->mosq == NULL){
		connection_lost(l, "out of memory");
		return;
	}
	mosquitto_int_option(l->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	/* Threaded mode: a QoS 1 PUBACK for a cloud message waits in the out-queue until our next
	 * write, which comes after on_message() has made the message durable in spool "in". */
	mosquitto_threaded_set(l->mosq, true);
	mosquitto_int_option(l->mosq, MOSQ_OPT_SEND_MAXIMUM, (int)cfg->cloud.max_inflight);
	mosquitto_log_callback_set(l->mosq, on_log);
	mosquitto_connect_v5_callback_set(l->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(l->mosq, on_disconnect);
	mosquitto_publish_v5_callback_set(l->mosq, on_publish);
	mosquitto_message_v5_callback_set(l->mosq, on_message);
	mid_seek(l);

	if(ep->tls){
		l->ctx = fb_tls_ctx_new(cfg, ep, err, sizeof(err));
		if(l->ctx == NULL){
			connection_lost(l, "TLS: %s", err);
			return;
		}
		/* Our context as it is: libmosquitto must not apply its own defaults to it. */
		mosquitto_int_option(l->mosq, MOSQ_OPT_SSL_CTX_WITH_DEFAULTS, 0);
		mosquitto_void_option(l->mosq, MOSQ_OPT_SSL_CTX, l->ctx);
		if(!cfg->cloud.tls.verify){
			fb_log(l->d.lg, MOSQ_LOG_WARNING, "tls.verify is false: the certificate of %s is not verified", ep->url);
		}
	}
	if(cfg->cloud.username){
		if(!ep->tls){
			fb_log(l->d.lg, MOSQ_LOG_WARNING, "%s is not encrypted: the username%s go%s to it in clear", ep->url,
					cfg->cloud.password ? " and password" : "", cfg->cloud.password ? "" : "es");
		}
		if(!set_credentials(l)){
			return;
		}
	}
	if(cfg->cloud.status_topic){
		mosquitto_will_set_v5(l->mosq, cfg->cloud.status_topic, 7, "offline", 1, !l->will_plain, NULL);
	}

	/* libmosquitto 2.0 has no asynchronous connect that takes CONNECT properties, but
	 * mosquitto_connect_bind_v5() stores the properties before it validates the host: with a NULL
	 * host it stores them and returns MOSQ_ERR_INVAL without connecting. */
	mosquitto_property_add_int32(&cprops, MQTT_PROP_SESSION_EXPIRY_INTERVAL, cfg->cloud.session_expiry_s);
	mosquitto_property_add_int16(&cprops, MQTT_PROP_RECEIVE_MAXIMUM, 1024);
	mosquitto_connect_bind_v5(l->mosq, NULL, ep->port, (int)cfg->cloud.keepalive_s, NULL, cprops);
	mosquitto_property_free_all(&cprops);

	/* libmosquitto looks the host up with getaddrinfo() on the calling thread, which may take as
	 * long as the resolver's timeouts: the worker would stop taking staged records meanwhile, and
	 * the broker would replace the link process. A name is looked up on a thread of its own
	 * (resolve.c) and libmosquitto gets the numeric address; the TLS context checks the
	 * certificate against, and sends as SNI, the configured name (tls.c). */
	{
		struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST };
		struct addrinfo *res = NULL;

		if(getaddrinfo(ep->host, NULL, &hints, &res) == 0){
			connect_addresses(l, res);
			freeaddrinfo(res);
			return;
		}
	}
	rc = fb_resolve_start(ep->host, &l->rq);
	if(rc == -EAGAIN){
		connection_lost(l, "cannot look up %s: %d earlier lookups are still running", ep->host, FB_RESOLVE_MAX_RUNNING);
	}else if(rc < 0){
		connection_lost(l, "cannot look up %s: %s", ep->host, strerror(-rc));
	}
}

/* The endpoint's name lookup is done: connect, or fail the attempt naming the host. */
static void resolved(struct fb_session *l, uint64_t now)
{
	const struct fb_endpoint *ep = &l->d.cfg->cloud.endpoints[l->ep];
	const struct addrinfo *res;
	int rc = fb_resolve_result(l->rq, &res);

	if(now - l->attempt_ms >= RESOLVE_SLOW_MS){
		fb_log(l->d.lg, MOSQ_LOG_WARNING, "looking up %s took %llu ms", ep->host,
				(unsigned long long)(now - l->attempt_ms));
	}
	if(rc != 0){
		connection_lost(l, "cannot resolve %s: %s", ep->host, fb_resolve_error(l->rq));
	}else{
		connect_addresses(l, res);
	}
	fb_resolve_free(l->rq);
	l->rq = NULL;
}

/* ---- edge to cloud --------------------------------------------------------------------------- */

/* Moves record SEQ, which cannot be read (or sent) as it is, to dead letters as it is; counted as
 * rejected once it has moved. */
static void move_unreadable(struct fb_session *l, uint64_t seq, const void *val, size_t len)
{
	alone_done(l, seq);
	if(fb_spool_move_dead(l->d.spool, seq, len, val, len) == 1){
		fb_count(&l->d.ctr->dropped_rejected, 1);
	}
}

/* Moves spool record SEQ (VAL, LEN as stored) to dead letters because of REASON (an MQTT reason
 * code >= 0x80) and WHY: one log line with its topic, counted as rejected. The dead letter is the
 * record with the user property FB_DEAD_REASON_PROPERTY "0x95 <why>" added, so the reason stays
 * with it (as it is when that cannot be built). One write batch: never in both queues, never in
 * neither. A record that is no longer live (drop_oldest took it, and counted it) is left alone;
 * one the spool could not move (a full disk) stays in "out", is sent again after a reconnect, and
 * is counted when it moves. */
static void dead_letter(struct fb_session *l, uint64_t seq, const void *val, size_t len, int reason, const char *why)
{
	char value[420];
	const char *extra[2] = { FB_DEAD_REASON_PROPERTY, value };
	struct fb_record r;
	uint8_t *add = NULL, *props = NULL, *buf = NULL;
	uint32_t add_len = 0;
	size_t size;
	int rc = -EINVAL;

	alone_done(l, seq);
	if(!fb_spool_live(l->d.spool, FB_Q_OUT, seq)){
		return;
	}
	snprintf(value, sizeof(value), "0x%02x %s", reason & 0xff, why);
	if(fb_record_decode(val, len, &r) < 0){
		fb_log(l->d.lg, MOSQ_LOG_WARNING, "spool record %llu moved to dead letters: %s",
				(unsigned long long)seq, value);
		move_unreadable(l, seq, val, len);
		return;
	}
	fb_log(l->d.lg, MOSQ_LOG_WARNING, "spool record %llu on %.*s (%u bytes) moved to dead letters: %s",
			(unsigned long long)seq, (int)r.topic_len, r.topic, r.payload_len, value);
	if(fb_props_encode(NULL, extra, 1, &add, &add_len) == 0
			&& (props = malloc((size_t)r.props_len + add_len + 1)) != NULL){
		if(r.props_len){
			memcpy(props, r.props, r.props_len);
		}
		memcpy(props + r.props_len, add, add_len);
		r.props = props;
		r.props_len += add_len;
		size = fb_record_size(&r);
		if((buf = malloc(size)) != NULL){
			fb_record_encode(&r, buf);
			rc = fb_spool_move_dead(l->d.spool, seq, len, buf, size);
		}
	}
	if(rc == -EINVAL || rc == -ENOMEM){
		rc = fb_spool_move_dead(l->d.spool, seq, len, val, len); /* without its reason */
	}
	if(rc == 1){
		fb_count(&l->d.ctr->dropped_rejected, 1);
	}
	free(buf);
	free(props);
	free(add);
}

struct dead_ctx {
	struct fb_session *l;
	uint64_t seq;
	int reason;
	const char *why;
};

static int dead_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct dead_ctx *dc = ud;

	if(seq == dc->seq){
		dead_letter(dc->l, seq, val, len, dc->reason, dc->why);
	}
	return 1;
}

/* dead_letter() for record SEQ, read back from the spool. */
static void move_dead(struct fb_session *l, uint64_t seq, int reason, const char *why)
{
	struct dead_ctx dc = { l, seq, reason, why };

	fb_spool_read(l->d.spool, FB_Q_OUT, seq - 1, 1, dead_visit, &dc);
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid, int reason, const mosquitto_property *props)
{
	struct fb_session *l = obj;
	struct inflight *e = ring_find(l, mid);
	(void)mosq; (void)props;

	if(l->held_sent && (e != NULL || (l->status_mid > 0 && mid == l->status_mid))){
		held_clear(l); /* the cloud took the PUBRELs sent before this packet (QoS 0: only written) */
	}
	if(e == NULL){
		return; /* the status message, or QoS 0 */
	}
	l->sending--;
	l->progress_ms = fb_mono_ms();
	l->acked = true;
	if(e->seq == l->suspect_seq){
		l->suspect_breaks = 0;
		l->suspect_seq = 0;
	}
	alone_done(l, e->seq);
	if(l->alone_wait && l->sending == 0){
		l->alone_wait = false; /* fill() sends it now, taking its lane first */
		l->alone_lane_next = true;
	}
	if(fb_ack_rejected(e->qos, reason)){
		char why[160];

		snprintf(why, sizeof(why), "%s (the cloud's %s)", mosquitto_reason_string(reason),
				e->qos == 2 ? "PUBREC" : "PUBACK");
		move_dead(l, e->seq, reason, why);
		e->mid = SLOT_FREE;
		ring_pop_free(l);
	}else{
		slot_acked(l, e);
	}
}

/* Keeps LIST (taking ownership) as the decoded form of the encoded properties KEY. */
static void remember_props(struct fb_session *l, const uint8_t *key, uint32_t len, mosquitto_property *list)
{
	uint8_t *copy = malloc(len ? len : 1);

	mosquitto_property_free_all(&l->props_list);
	alias_list_forget(l); /* made from the old properties */
	free(l->props_key);
	l->props_key = copy;
	l->props_key_len = len;
	l->props_list = list;
	if(copy){
		memcpy(copy, key, len);
	}else{
		l->props_key_len = 0;
		l->props_key = NULL;
	}
}

/* Size of the PUBLISH that sends R (its Message Expiry Interval settled: r->expiry_ms): with a
 * Topic Alias when ALIAS, and then without its topic when KNOWN (the cloud has the mapping). */
static size_t packet_size(const struct fb_record *r, bool alias, bool known)
{
	size_t extra = r->expiry_ms ? FB_RECORD_EXPIRY_PROP_SIZE : 0;

	if(!alias){
		return fb_record_publish_size(r, r->topic_len, extra);
	}
	return fb_record_publish_size(r, known ? 0 : r->topic_len, extra + FB_RECORD_ALIAS_PROP_SIZE);
}

/* Sends one spool record. Returns 0 to go on, 1 to stop filling. */
static int send_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct fb_session *l = ud;
	const struct fb_config *cfg = l->d.cfg;
	struct fb_record r;
	mosquitto_property *props = NULL;
	uint64_t now = fb_wall_ms();
	int mid = 0, rc;
	bool full, kept, alias, retain, capped, alone = l->alone_n && alone_has(l, seq);

	if(alone && l->sending > 0){
		/* It goes alone (suspect_break()): once what is in flight is acknowledged, before the
		 * records of any other lane. */
		*l->cur = seq - 1;
		l->alone_wait = true;
		l->alone_lane = l->fill_lane;
		l->declined = true;
		return 1;
	}
	*l->cur = seq;
	if(fb_record_decode(val, len, &r) < 0){
		fb_log(l->d.lg, MOSQ_LOG_ERR, "spool record %llu is unreadable; moved to dead letters", (unsigned long long)seq);
		move_unreadable(l, seq, val, len);
		return 0;
	}
	/* A rule's ttl (expiry_local) replaces spool.ttl for its messages. */
	if((r.expiry_ms && now >= r.expiry_ms)
			|| (!r.expiry_local && cfg->spool.ttl_ms && r.enqueue_ms + cfg->spool.ttl_ms <= now)){
		if(fb_spool_delete(l->d.spool, FB_Q_OUT, seq, len) == 0){ /* else again after a reconnect */
			fb_count(&l->d.ctr->dropped_expired, 1);
			alone_done(l, seq);
		}
		return 0;
	}
	if(r.expiry_local){
		r.expiry_ms = 0; /* the edge's own: not sent as a Message Expiry Interval */
	}
	if(r.expiry_ms == 0 && l->props_key && r.props_len == l->props_key_len
			&& !memcmp(r.props, l->props_key, r.props_len)){
		props = l->props_list; /* same properties as the previous record: decoded already */
	}else if(fb_props_decode(r.props, r.props_len, &props) < 0){
		fb_log(l->d.lg, MOSQ_LOG_ERR, "spool record %llu has unreadable properties; moved to dead letters", (unsigned long long)seq);
		move_unreadable(l, seq, val, len);
		return 0;
	}else if(r.expiry_ms){
		mosquitto_property_add_int32(&props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL,
				(uint32_t)((r.expiry_ms - now + 999) / 1000));
	}else{
		remember_props(l, r.props, r.props_len, props);
	}
	memcpy(l->topic_buf, r.topic, r.topic_len);
	l->topic_buf[r.topic_len] = '\0';
	/* The size of the packet that will be sent: with an alias when the connection has them
	 * (without its topic when the cloud knows the alias), else, or when that is too large, the
	 * full topic without an alias (no mapping is made for it). Too large either way: dead
	 * letters, and the alias table stays as it was. */
	alias = l->alias.max != 0;
	if(l->max_packet && packet_size(&r, alias, false) > l->max_packet){
		/* The largest form is too large (rarely): the exact one. */
		bool known = alias && fb_alias_find(&l->alias, l->topic_buf, r.topic_len) != 0;
		size_t size = packet_size(&r, alias, known);

		if(size > l->max_packet && alias){
			size_t plain = packet_size(&r, false, false);

			alias = plain > l->max_packet;
			size = plain < size ? plain : size;
		}
		if(size > l->max_packet){
			char why[160];

			if(props != l->props_list){
				mosquitto_property_free_all(&props);
			}
			snprintf(why, sizeof(why), "%s (%zu bytes; the cloud's Maximum Packet Size is %u)",
					mosquitto_reason_string(MQTT_RC_PACKET_TOO_LARGE), size, l->max_packet);
			dead_letter(l, seq, val, len, MQTT_RC_PACKET_TOO_LARGE, why);
			return 0;
		}
	}

	/* A cloud without retained messages gets the message without retain (the delivery contract
	 * is about the message reaching the cloud), said once per connection. libmosquitto 2.0.11
	 * would clear the flag itself, silently (mosquitto_publish_v5()). */
	retain = r.retain && l->retain_available;
	if(r.retain && !retain && !l->retain_told){
		l->retain_told = true;
		fb_log(l->d.lg, MOSQ_LOG_WARNING, "the cloud does not support retained messages: sent without retain "
				"(%.*s first; said once per connection)", (int)r.topic_len, r.topic);
	}

	/* libmosquitto copies the properties it keeps. */
	if(alias){
		alias = alias_props(l, &r, &props, &kept, &full) != 0;
		if(!alias && l->max_packet && packet_size(&r, false, false) > l->max_packet){
			/* Fits only with its alias, which memory did not allow: not sent (libmosquitto would
			 * refuse it); the connection is replaced, as for any shortage of memory. */
			if(!kept){
				mosquitto_property_free_all(&props);
			}
			*l->cur = seq - 1;
			l->local = !l->lost;
			connection_lost(l, "out of memory");
			return 1;
		}
	}else{
		full = true;
		kept = props == l->props_list;
	}
	rc = mosquitto_publish_v5(l->mosq, &mid, full ? l->topic_buf : NULL, (int)r.payload_len, r.payload, r.qos,
			retain, props);
	mid_used(l, mid);
	if(!kept){
		mosquitto_property_free_all(&props);
	}
	if(rc != MOSQ_ERR_SUCCESS){
		fb_alias_drop(&l->alias, l->topic_buf, r.topic_len); /* not sent: no mapping */
	}
	switch(rc){
		case MOSQ_ERR_SUCCESS:
			break;
		case MOSQ_ERR_OVERSIZE_PACKET:
		case MOSQ_ERR_QOS_NOT_SUPPORTED:
		case MOSQ_ERR_RETAIN_NOT_SUPPORTED:
		case MOSQ_ERR_MALFORMED_UTF8:
		case MOSQ_ERR_INVAL:
			/* The cloud can never take this record: dead letters, the queue goes on. */
			dead_letter(l, seq, val, len, rc == MOSQ_ERR_OVERSIZE_PACKET ? MQTT_RC_PACKET_TOO_LARGE
					: rc == MOSQ_ERR_QOS_NOT_SUPPORTED ? MQTT_RC_QOS_NOT_SUPPORTED
					: rc == MOSQ_ERR_RETAIN_NOT_SUPPORTED ? MQTT_RC_RETAIN_NOT_SUPPORTED
					: MQTT_RC_TOPIC_NAME_INVALID, mosquitto_strerror(rc));
			return 0;
		default:
			*l->cur = seq - 1;
			l->local = !l->lost && local_error(rc);
			connection_lost(l, "publish failed: %s", mosquitto_strerror(rc));
			return 1;
	}
	ring_push(l, r.qos, mid, seq, len); /* QoS 0: best effort, sent once */
	l->yield.sent++;
	capped = l->rate.on && fb_rate_take(&l->rate, packet_size(&r, alias, !full));
	if(alone){
		if(r.qos > 0){
			l->alone_seq = seq; /* nothing more until it is acknowledged (room()) */
			return 1;
		}
		alone_done(l, seq);
	}
	return capped ? 1 : 0; /* a cap is reached: the next records wait for it */
}

/* Records fill() may send now: as many as the window (unacknowledged records) and the ring
 * (those and the acknowledged ones whose delete is not written yet: what a crash can send twice,
 * at most max_inflight) both have room for. */
static size_t room(const struct fb_session *l)
{
	size_t w = l->sending < l->window ? l->window - l->sending : 0;
	size_t r = l->ring_cap - l->ring_used;

	if(l->alone_seq || l->alone_wait){
		return 0; /* a record goes alone (suspect_break()) */
	}
	return w < r ? w : r;
}

/* Whether fill() would send: records may be waiting, and there is room for a batch of at least
 * a quarter of the window (one spool iterator per batch, not per PUBACK). */
static bool can_fill(const struct fb_session *l, uint64_t now)
{
	size_t batch = l->window / 4 ? l->window / 4 : 1;

	return l->connected && !l->lost && l->maybe_more && now >= l->read_retry_ms
		&& (l->ring_used == 0 || room(l) >= batch);
}

/* Lanes: the highest lane with records waiting (bit 0 of PENDING first), except that while lower
 * lanes wait too, cloud.lane_min_share of the sends go to the highest of them: every send adds
 * the share (in 1/10000) to a credit, and a credit of one send buys a lower lane one record.
 * Limits *WANT so that a batch of the top lane does not run past the lower lanes' turn. */
#define SHARE_UNIT 10000u

static unsigned pick_lane(struct fb_session *l, uint32_t pending, size_t *want)
{
	unsigned top = (unsigned)__builtin_ctz(pending);
	uint32_t lower = pending & ~(1u << top);
	uint64_t share = l->d.cfg->cloud.lane_min_share_bp, until;

	if(lower == 0 || share == 0){
		l->share_credit = 0;
		return top;
	}
	if(l->share_credit >= SHARE_UNIT){
		*want = 1;
		return (unsigned)__builtin_ctz(lower);
	}
	until = (SHARE_UNIT - l->share_credit + share - 1) / share;
	if(*want > until){
		*want = (size_t)until;
	}
	return top;
}

/* N records of lane LANE went out while the lanes in PENDING waited. */
static void lane_sent(struct fb_session *l, uint32_t pending, unsigned lane, size_t n)
{
	uint64_t share = l->d.cfg->cloud.lane_min_share_bp;
	unsigned top = (unsigned)__builtin_ctz(pending);

	if((pending & ~(1u << top)) == 0){
		return;
	}
	l->share_credit += share * n;
	if(lane != top){
		l->share_credit = l->share_credit > SHARE_UNIT * n ? l->share_credit - SHARE_UNIT * n : 0;
	}
}

/* What fill() sends next: the lanes with records waiting (bit L), and the next record of each
 * lane queue, of the live part (NEXT, PENDING) and of the backlog part of the live_first queues
 * (BNEXT, BACKLOG). */
struct waiting {
	uint32_t pending, backlog, lanes;
	uint64_t next[FB_LANE_QUEUES], bnext[FB_LANE_QUEUES];
};

static void waiting_get(struct fb_session *l, struct waiting *w)
{
	uint64_t bafter[FB_LANE_QUEUES];
	uint32_t nonempty = 0;

	w->pending = fb_spool_lanes_next(l->d.spool, l->cursor, w->next, &nonempty);
	w->backlog = 0;
	if(nonempty >> FB_LANES){
		/* live_first queues hold records: their backlog parts too. */
		for(unsigned q = 0; q < FB_LANE_QUEUES; q++){
			bafter[q] = q < FB_LANES ? UINT64_MAX : l->back[q - FB_LANES];
		}
		w->backlog = fb_spool_lanes_next(l->d.spool, bafter, w->bnext, NULL);
	}
	for(uint32_t b = w->backlog; b; b &= b - 1){
		unsigned q = (unsigned)__builtin_ctz(b);
		if(w->bnext[q] > l->live_from){
			w->backlog &= ~(1u << q); /* live: in the live part */
		}
	}
	w->lanes = (w->pending | w->pending >> FB_LANES | w->backlog >> FB_LANES) & ((1u << FB_LANES) - 1);
}

/* Within LANE: the live part of its live_first queue first; then its other queue and the backlog
 * of the live_first queue in the order of their seqs. Sets l->cur, *Q, *AFTER, *BEFORE, and
 * returns the seq of the record to send next. */
static uint64_t choose_queue(struct fb_session *l, const struct waiting *w, unsigned lane, unsigned *q,
		uint64_t *after, uint64_t *before)
{
	unsigned lf = lane + FB_LANES;
	uint64_t x2, x3;

	if((w->pending >> lf) & 1){
		*q = lf;
		l->cur = &l->cursor[lf];
		*after = l->cursor[lf];
		*before = 0;
		return w->next[lf];
	}
	x2 = (w->pending >> lane) & 1 ? w->next[lane] : 0;
	x3 = (w->backlog >> lf) & 1 ? w->bnext[lf] : 0;
	if(x3 && (x2 == 0 || x3 < x2)){
		*q = lf;
		l->cur = &l->back[lane];
		*after = l->back[lane];
		*before = x2 ? x2 : l->live_from + 1;
		return x3;
	}
	*q = lane;
	l->cur = &l->cursor[lane];
	*after = l->cursor[lane];
	*before = x3;
	return x2;
}

/* Whether tail record R is still to be sent (not sent, dropped or acknowledged yet). */
static bool tail_waiting(const struct fb_session *l, const struct waiting *w, const struct fb_tail_rec *r)
{
	unsigned q = fb_record_lane(r->val, r->len) + (fb_record_live_first(r->val, r->len) ? FB_LANES : 0);

	if(q >= FB_LANES && r->seq <= l->live_from){
		return ((w->backlog >> q) & 1) && r->seq >= w->bnext[q];
	}
	return ((w->pending >> q) & 1) && r->seq >= w->next[q];
}

static void fill(struct fb_session *l)
{
	if(!can_fill(l, fb_mono_ms())){
		return;
	}
	ingest(l);
	while(l->maybe_more && !l->lost && room(l) > 0){
		size_t want = room(l);
		uint64_t allowed = fb_yield_allowed(&l->yield);
		uint64_t seq, after, before;
		struct waiting w;
		struct fb_tail_rec *r;
		unsigned lane, q;
		int n;

		if(l->rate.on){
			allowed = fb_rate_cap(&l->rate, allowed, fb_mono_ms());
		}
		if(allowed == 0){
			break; /* the broker thread comes first, or a cap: more in the next period */
		}
		if(want > allowed){
			want = (size_t)allowed;
		}
		waiting_get(l, &w);
		if(w.lanes == 0){
			l->maybe_more = false; /* every lane sent up to its newest record */
			if(l->sending == 0){
				l->alone_n = 0; /* nothing waits or is in flight: none of them is left */
			}
			break;
		}
		if(l->alone_lane_next && (w.lanes & (1u << l->alone_lane))){
			lane = l->alone_lane; /* a record that goes alone waited for it (send_visit()) */
		}else{
			lane = pick_lane(l, w.lanes, &want);
		}
		l->alone_lane_next = false;
		l->fill_lane = lane;
		seq = choose_queue(l, &w, lane, &q, &after, &before);

		/* The tail holds the newest records in the order they came: those sent already (or
		 * dropped) go; the oldest is taken when it is the record to send next. */
		while((r = fb_tail_peek(l->d.tail)) != NULL && !tail_waiting(l, &w, r)){
			fb_tail_drop(l->d.tail);
		}
		l->declined = false;
		if(r && r->seq == seq){
			send_visit(l, r->seq, r->val, r->len);
			fb_tail_drop(l->d.tail);
			if(!l->declined){
				lane_sent(l, w.lanes, lane, 1);
			}
			continue;
		}
		n = fb_spool_read_lane(l->d.spool, q, after, before, want, send_visit, l);
		if(n < 0){
			/* fb_spool_read_lane() has logged why. */
			l->read_retry_ms = fb_mono_ms() + MAX_POLL_MS;
			return;
		}
		if(n == 0){
			l->maybe_more = false;
			break;
		}
		lane_sent(l, w.lanes, lane, (size_t)n - l->declined);
	}
}

/* ---- cloud to edge --------------------------------------------------------------------------- */

static void c2e_drop(struct fb_session *l, const char *topic, const char *why)
{
	fb_count(&l->d.ctr->c2e_dropped, 1);
	fb_log(l->d.lg, MOSQ_LOG_WARNING, "cloud message on %s dropped: %s", topic, why);
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
		const mosquitto_property *props)
{
	struct fb_session *l = obj;
	const struct fb_config *cfg = l->d.cfg;
	struct fb_route_result res = { 0 };
	const struct fb_c2e_rule *rule;
	struct fb_record r = { 0 };
	uint8_t *eprops = NULL, *buf = NULL;
	uint32_t eprops_len = 0, expiry_s = 0;
	uint16_t vlen;
	const char *origin;
	uint64_t seq;
	size_t len;
	int rc;
	(void)mosq;

	if(l->lost && msg->qos > 0 && cfg->cloud.session_expiry_s > 0){
		/* The connection is given up (an earlier message of this read could not be stored): it
		 * goes without the queued PUBACKs, and the session sends both again, in order. Storing
		 * this one now would inject it before the earlier one, and twice. */
		return;
	}
	rc = fb_route_match(l->d.routes, FB_ROUTE_C2E, msg->topic, &res);
	if(rc == -ENOMEM){
		l->local = !l->lost;
		connection_lost(l, "out of memory");
		return;
	}
	if(rc <= 0){
		c2e_drop(l, msg->topic, rc == 0 ? "no cloud_to_edge rule matches"
				: rc == -EINVAL ? "the mapped local topic is not a valid topic" : strerror(-rc));
		return;
	}
	rule = &cfg->c2e[res.rule];
	if((uint32_t)msg->payloadlen > rule->max_payload){
		c2e_drop(l, msg->topic, "payload larger than max_payload");
		goto out;
	}
	if(fb_topic_publish_check(res.topic) < 0){
		c2e_drop(l, msg->topic, "mapped local topic is not a valid publish topic");
		goto out;
	}
	rc = fb_props_encode(props, NULL, 0, &eprops, &eprops_len);
	if(rc == -ENOMEM){
		l->local = !l->lost;
		connection_lost(l, "out of memory");
		goto out;
	}
	if(rc < 0){
		c2e_drop(l, msg->topic, "unreadable properties");
		goto out;
	}
	origin = fb_props_find_user(eprops, eprops_len, FB_ORIGIN_PROPERTY, &vlen);
	if(origin && vlen == strlen(cfg->site_id) && !memcmp(origin, cfg->site_id, vlen)){
		c2e_drop(l, msg->topic, "it carries this site's own origin marker (echo)");
		goto out;
	}
	mosquitto_property_read_int32(props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &expiry_s, false);

	r.qos = (uint8_t)rule->qos;
	r.retain = msg->retain && !rule->retain_clear;
	r.enqueue_ms = fb_wall_ms();
	r.expiry_ms = expiry_s ? r.enqueue_ms + (uint64_t)expiry_s * 1000u : 0;
	r.topic = res.topic;
	r.topic_len = (uint16_t)strlen(res.topic);
	r.props = eprops;
	r.props_len = eprops_len;
	r.payload = msg->payload;
	r.payload_len = (uint32_t)msg->payloadlen;
	len = fb_record_size(&r);
	buf = malloc(len);
	if(buf == NULL){
		l->local = !l->lost;
		connection_lost(l, "out of memory");
		goto out;
	}
	fb_record_encode(&r, buf);
	rc = fb_spool_append(l->d.spool, FB_Q_IN, buf, len, &seq, NULL);
	if(rc < 0){
		/* Not durable: drop the connection before the queued PUBACK is written, so the cloud
		 * delivers the message again. */
		l->local = !l->lost;
		connection_lost(l, "cannot store a cloud message in the spool: %s", strerror(-rc));
		goto out;
	}
	atomic_store_explicit(&l->dirty, true, memory_order_relaxed);
	l->d.c2e_push(l->d.c2e_ud, seq, buf, len); /* or later, from the spool */
	l->d.wake(l->d.wake_ud);
	l->last_wake_ms = fb_mono_ms();
out:
	free(buf);
	free(eprops);
	free(res.topic);
}

/* ---- the worker ------------------------------------------------------------------------------ */

/* When the connection counts as dead: nothing received for 1.5 x its keepalive; never when the
 * cloud turned keepalive off. */
static uint64_t silence_deadline(const struct fb_session *l)
{
	return l->keepalive_ms ? l->last_rx_ms + (uint64_t)l->keepalive_ms * 3u / 2u : UINT64_MAX;
}

static int poll_timeout(struct fb_session *l, uint64_t now)
{
	const struct fb_config *cfg = l->d.cfg;
	uint64_t until = now + MAX_POLL_MS;

#define EARLIER(t) do{ uint64_t t_ = (t); if(t_ < until) until = t_; }while(0)
	if(l->mosq == NULL){
		EARLIER(l->next_attempt_ms);
	}else if(!l->connected){
		EARLIER(l->attempt_ms + cfg->cloud.connect_timeout_ms);
	}else{
		EARLIER(silence_deadline(l));
	}
	if(cfg->spool.sync == FB_SYNC_INTERVAL && atomic_load_explicit(&l->dirty, memory_order_relaxed)){
		EARLIER(l->last_sync_ms + cfg->spool.sync_interval_ms);
	}
	if(l->c2e_waiting){
		EARLIER(l->last_wake_ms + FB_WAKER_REWAKE_MS);
	}
	if(l->acked_count){
		EARLIER(l->acked_since_ms + ACK_FLUSH_MS);
	}
	if(l->yield.active){
		EARLIER(fb_yield_next_ms(&l->yield));
	}
	if(l->maybe_more && l->read_retry_ms > now){
		EARLIER(l->read_retry_ms);
	}
	if(can_fill(l, now) && fb_yield_allowed(&l->yield) > 0){
		/* Deleting acknowledged records freed the window after fill() ran: when that was
		 * everything in flight, no PUBACK is coming to wake the worker. Under a cap, once it
		 * lets a few more go. */
		EARLIER(l->rate.on && fb_rate_spent(&l->rate) ? fb_rate_next_ms(&l->rate) : now);
	}
#undef EARLIER
	return until <= now ? 0 : (int)(until - now);
}

/* The guard that bounds any bug (or cloud) that keeps records waiting on a live connection:
 * records pending, connected, and no acknowledgement for STALL_KEEPALIVES keepalive periods (the
 * shorter of cloud.keepalive and the cloud's Server Keep Alive: a cloud announcing a long one
 * does not stretch it) mean
 * a fresh connection, logged and counted (stalls). What is in flight is sent again on the next
 * connection: repeats stay within max_inflight. The clock starts at the last acknowledgement, the
 * connect, or the last moment nothing was pending (sampled every PENDING_CHECK_MS at most, or a
 * quarter keepalive, from the spool's own count rather than the worker's view of it). */
#define STALL_KEEPALIVES 2
#define PENDING_CHECK_MS 1000

static void stall_guard(struct fb_session *l, uint64_t now)
{
	uint64_t ka_ms = l->keepalive_ms && l->keepalive_ms < l->d.cfg->cloud.keepalive_s * 1000u
		? l->keepalive_ms : (uint64_t)l->d.cfg->cloud.keepalive_s * 1000u;
	uint64_t every = ka_ms / 4 < PENDING_CHECK_MS ? ka_ms / 4 : PENDING_CHECK_MS;
	struct fb_spool_stats st;

	if(!l->connected || l->lost){
		return;
	}
	if(l->flush_failed){
		/* New records wait for the spool's deletes (flush_acked()), not for the cloud: a fresh
		 * connection would only send the acknowledged ones again. */
		l->progress_ms = now;
		return;
	}
	if(now < l->pending_check_ms + every && now < l->progress_ms + STALL_KEEPALIVES * ka_ms){
		return;
	}
	l->pending_check_ms = now;
	fb_spool_stats(l->d.spool, &st);
	if(st.messages == 0 && l->sending == 0){
		l->progress_ms = now; /* nothing waits: nothing can stall */
		return;
	}
	if(now < l->progress_ms + STALL_KEEPALIVES * ka_ms){
		return;
	}
	if(fb_upload_moving(&l->up, mosquitto_socket(l->mosq), mosquitto_want_write(l->mosq), now, upload_recent_ms(l))){
		l->progress_ms = now; /* the cloud is still taking a large PUBLISH: no stall */
		return;
	}
	/* One line, from teardown(): "connection to ... lost: forwarding stalled ...". */
	fb_count(&l->d.ctr->stalls, 1);
	connection_lost(l, "forwarding stalled: %llu records pending, %zu in flight, and no acknowledgement for "
			"%llu ms (%d x keepalive); a fresh connection sends them again",
			(unsigned long long)st.messages, l->sending, (unsigned long long)(now - l->progress_ms),
			STALL_KEEPALIVES);
}

static void housekeeping(struct fb_session *l, uint64_t now)
{
	const struct fb_config *cfg = l->d.cfg;

	fb_spool_lane_iter_expire(l->d.spool);
	if(cfg->spool.sync == FB_SYNC_INTERVAL && now >= l->last_sync_ms + cfg->spool.sync_interval_ms){
		if(atomic_exchange(&l->dirty, false)){
			fb_spool_sync(l->d.spool);
		}
		l->last_sync_ms = now;
	}
	/* The broker may have been busy when the last wake-up signal arrived: repeat it until the
	 * broker thread has taken the queue. */
	l->c2e_waiting = l->d.c2e_pending(l->d.c2e_ud) > 0;
	if(l->c2e_waiting && now >= l->last_wake_ms + FB_WAKER_REWAKE_MS){
		l->d.wake(l->d.wake_ud);
		l->last_wake_ms = now;
	}
	if(l->rq && now >= l->attempt_ms + cfg->cloud.connect_timeout_ms){
		/* The thread goes on until getaddrinfo() returns; nobody waits for it. */
		connection_lost(l, "looking up %s took longer than connect_timeout (%u ms): abandoned",
				cfg->cloud.endpoints[l->ep].host, cfg->cloud.connect_timeout_ms);
	}
	if(l->mosq && !l->connected && now >= l->attempt_ms + cfg->cloud.connect_timeout_ms){
		connection_lost(l, "no CONNACK within connect_timeout (%u ms)", cfg->cloud.connect_timeout_ms);
	}
	if(l->connected && !l->lost && now >= silence_deadline(l)){
		if(fb_upload_moving(&l->up, mosquitto_socket(l->mosq), mosquitto_want_write(l->mosq), now, upload_recent_ms(l))){
			connection_lost(l, "nothing received for %u ms (1.5 x keepalive) while the cloud was still taking "
					"a PUBLISH: too slow a connection for it within keepalive", l->keepalive_ms * 3u / 2u);
		}else{
			l->silent = true;
			connection_lost(l, "nothing received for %u ms (1.5 x keepalive): connection is dead",
					l->keepalive_ms * 3u / 2u);
		}
	}
	if(l->connected && !l->lost){
		fb_upload_look(&l->up, mosquitto_socket(l->mosq), now, upload_look_ms(l));
	}
	stall_guard(l, now);
}

/* Sends the ACK of what the socket received now. A turn that read from the cloud and sent nothing
 * (the window has less room than a batch) waits for more PUBACKs; the kernel would hold its ACK of
 * what it read for up to 40 ms, and a cloud whose socket runs Nagle's algorithm (Mosquitto's
 * default) holds its next PUBACKs until that ACK comes: the drain stalled 40 ms per window. */
static void ack_now(struct fb_session *l)
{
	int one = 1;
	int sock = mosquitto_socket(l->mosq);

	if(sock >= 0){
		(void)setsockopt(sock, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
	}
}

/* Live traffic goes out at once (TCP_NODELAY); while a backlog drains, the kernel may coalesce
 * the small packets (Nagle), which raises the drain rate by about a third. Setting TCP_NODELAY
 * again also pushes out whatever is pending. */
static void set_nodelay(struct fb_session *l, bool on)
{
	int v = on ? 1 : 0;
	int sock = mosquitto_socket(l->mosq);

	if(v != l->nodelay && sock >= 0 && setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &v, sizeof(v)) == 0){
		l->nodelay = v;
	}
}

/* Reads what the cloud sent. The TLS context reads ahead (tls.c): one read(2) brings all the TLS
 * records that have arrived, and those OpenSSL holds no longer show on the socket. So this goes
 * on while OpenSSL holds a whole record: SSL_peek() decrypts the next one if it is complete (and
 * tries the socket once if it is not). mosquitto_loop_read() on its own may stop after a single
 * packet (libmosquitto leaves EAGAIN in errno from a write to its internal socket pair). */
static int read_all(struct fb_session *l)
{
	SSL *ssl;
	char peek;
	int rc;

	for(;;){
		rc = mosquitto_loop_read(l->mosq, 1);
		ssl = l->mosq ? mosquitto_ssl_get(l->mosq) : NULL;
		if(rc != MOSQ_ERR_SUCCESS || ssl == NULL || !SSL_is_init_finished(ssl) || !SSL_has_pending(ssl)){
			return rc;
		}
		if(SSL_pending(ssl) == 0 && SSL_peek(ssl, &peek, 1) <= 0){
			return rc; /* only part of a record: the socket wakes the worker for the rest */
		}
	}
}

static uint64_t mono_us(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

static void *worker(void *arg)
{
	struct fb_session *l = arg;
	struct pollfd pfd[2];

	fb_spool_thread_init();
	while(!atomic_load(&l->stopping)){
		uint64_t now = fb_mono_ms();
		int n, sock;

		if(l->mosq == NULL && now >= l->next_attempt_ms){
			start_attempt(l, now);
		}
		if(l->lost){
			teardown(l);
			continue;
		}

		pfd[0] = (struct pollfd){ .fd = l->efd, .events = POLLIN };
		n = 1;
		sock = l->mosq ? mosquitto_socket(l->mosq) : -1;
		if(sock >= 0){
			short ev = POLLIN;
			/* Until the TCP connect completes, wait for writability: that is when the TLS
			 * handshake (or the CONNECT) can start. */
			if(!l->tcp_up || mosquitto_want_write(l->mosq) || fb_tls_pending(l->wbuf)){
				ev |= POLLOUT;
			}
			pfd[1] = (struct pollfd){ .fd = sock, .events = ev };
			n = 2;
		}else if(l->rq){
			/* The name lookup is a part of the attempt: its thread wakes the worker. */
			pfd[1] = (struct pollfd){ .fd = fb_resolve_fd(l->rq), .events = POLLIN };
			n = 2;
		}
		if(poll(pfd, (nfds_t)n, poll_timeout(l, now)) < 0 && errno != EINTR){
			fb_log(l->d.lg, MOSQ_LOG_ERR, "poll failed: %s", strerror(errno));
			usleep(100000);
			continue;
		}
		now = fb_mono_ms();
		if(pfd[0].revents & POLLIN){
			uint64_t v;
			unsigned wait_us;

			/* Records only (nothing from the cloud or the connection attempt to handle), and
			 * coming fast: let more come before taking them (yield.h, lingering), also while
			 * the cloud is unreachable, when they are only taken into the queue. Not when the
			 * channel's writer needs a staging file back: that settle comes first (offline it
			 * writes the whole sealed file, and the writer refuses per on_full once both files
			 * are in use). */
			if(!(n == 2 && pfd[1].revents)
					&& (wait_us = fb_linger_us(mono_us(), l->ready_us)) != 0
					&& !fb_spool_settle_wanted(l->d.spool)){
				usleep(wait_us);
				now = fb_mono_ms();
			}
			/* Drain first, then clear the flag: a writer that finds the flag still set
			 * (and writes nothing) staged its record before the exchange below, so the
			 * ingest after it takes the record; a writer that finds it clear writes after
			 * the drain, and the eventfd stays readable. Clearing first would let that
			 * write be drained here with the flag left set: no writer would write again,
			 * and the worker would never wake for new records (issue 13, point 0). */
			if(read(l->efd, &v, sizeof(v)) < 0){
				/* EAGAIN: another wake-up consumed it */
			}
			atomic_exchange(l->d.notified, false);
			l->ready_us = mono_us();
			l->maybe_more = true;
		}
		if(l->rq){
			if(fb_resolve_done(l->rq)){
				resolved(l, now);
			}
		}else if(n == 2 && pfd[1].revents){
			if(pfd[1].revents & (POLLIN | POLLERR | POLLHUP)){
				l->last_rx_ms = now;
			}
			if(pfd[1].revents & POLLOUT){
				l->tcp_up = true;
			}
			if(!l->connected && (pfd[1].revents & (POLLERR | POLLHUP))){
				/* A refused or failed TCP connect: libmosquitto does not read while the connect
				 * is pending, so take the reason from the socket. */
				int err = 0;
				socklen_t elen = sizeof(err);
				getsockopt(sock, SOL_SOCKET, SO_ERROR, &err, &elen);
				if(err){
					lost_with_rc(l, MOSQ_ERR_CONN_LOST, err);
				}else{
					connection_lost(l, "connection refused or closed before the handshake");
				}
			}else{
				/* mosquitto_loop_read() also drives the TLS handshake; a failed handshake
				 * returns an error without calling on_disconnect. */
				int rc = read_all(l);
				if(rc != MOSQ_ERR_SUCCESS){
					lost_with_rc(l, rc, 0);
				}
			}
		}
		if(l->mosq && !l->lost){
			mosquitto_loop_misc(l->mosq);
		}
		fb_yield_tick(&l->yield, now);
		if(l->connected && !l->lost){
			uint64_t sent = l->yield.sent;

			/* The acknowledgements this turn read free their slots first, so that the window
			 * refills in this turn (and goes out in the same write). */
			maybe_flush_acked(l, fb_mono_ms());
			fill(l);
			if(!l->lost && l->yield.sent == sent && l->sending > 0 && n == 2 && (pfd[1].revents & POLLIN)){
				ack_now(l);
			}
		}
		if(l->connected && !l->lost){
			set_nodelay(l, !l->maybe_more);
		}
		if(l->mosq && !l->lost && mosquitto_want_write(l->mosq)){
			int rc = mosquitto_loop_write(l->mosq, 1);
			if(rc != MOSQ_ERR_SUCCESS){
				lost_with_rc(l, rc, 0);
			}
		}
		/* Everything this turn wrote, in one write(2). */
		if(l->wbuf && !l->lost && fb_tls_flush(l->wbuf) < 0){
			connection_lost(l, "write to the cloud failed: %s", strerror(errno ? errno : EIO));
		}
		maybe_flush_acked(l, fb_mono_ms());
		maybe_settle(l);
		housekeeping(l, now);
	}

	/* Orderly stop: disconnect with the Will, so the cloud sees the status "offline"; records in
	 * flight stay in the spool and are sent again after the next start. */
	/* A lookup still running is left to its thread. */
	fb_resolve_free(l->rq);
	l->rq = NULL;
	if(l->mosq){
		/* A lost connection gets no DISCONNECT: libmosquitto would write the PUBACKs queued for
		 * cloud messages that could not be stored before it (the cloud publishes the Will then). */
		if(l->connected && !l->lost){
			/* libmosquitto frees the SSL (and the coalescing with it) as soon as it has written
			 * the DISCONNECT: that one goes to the socket directly. */
			fb_tls_direct(mosquitto_ssl_get(l->mosq), l->wbuf);
			mosquitto_disconnect_v5(l->mosq, MQTT_RC_DISCONNECT_WITH_WILL_MSG, NULL);
			mosquitto_loop_write(l->mosq, 1);
		}
		l->wbuf = NULL;
		mosquitto_destroy(l->mosq);
		l->mosq = NULL;
		SSL_CTX_free(l->ctx);
		l->ctx = NULL;
	}
	flush_acked(l);
	fb_spool_sync(l->d.spool);
	return NULL;
}

int fb_session_start(const struct fb_session_deps *d, struct fb_session **out)
{
	struct fb_session *l;
	int rc;

	*out = NULL;
	l = calloc(1, sizeof(*l));
	if(l == NULL){
		return -ENOMEM;
	}
	l->ids_fd = -1;
	l->d = *d;
	fb_rate_init(&l->rate, d->cfg->cloud.max_rate, d->cfg->cloud.max_bandwidth, fb_mono_ms());
	if(fb_yield_init(&l->yield, d->broker_pid, fb_mono_ms())){
		fb_log(d->lg, MOSQ_LOG_INFO, "a backlog gives way to the broker (pid %d) while it waits for a CPU",
				(int)d->broker_pid);
	}
	pthread_mutex_init(&l->status_lock, NULL);
	l->ring_cap = d->cfg->cloud.max_inflight;
	l->window = l->ring_cap;
	l->ring = calloc(l->ring_cap, sizeof(*l->ring));
	l->batch = calloc(l->ring_cap, sizeof(*l->batch));
	l->topic_buf = malloc(65536);
	l->efd = d->efd;
	if(l->ring == NULL || l->batch == NULL || l->topic_buf == NULL){
		rc = -ENOMEM;
		goto fail;
	}
	l->backoff_ms = d->cfg->cloud.reconnect_min_ms;
	l->jitter_seed = (unsigned)fb_wall_ms() ^ (unsigned)getpid();
	l->last_sync_ms = fb_mono_ms();
	l->maybe_more = true;
	l->cur = &l->cursor[FB_LANE_DEFAULT];
	mid_restore(l);
	/* A link process killed between draining the eventfd and clearing the flag left it set: the
	 * channel's writer would never write the eventfd again. */
	atomic_store(d->notified, false);
	set_status(l, FB_LINK_DISCONNECTED, NULL);
	rc = -pthread_create(&l->thread, NULL, worker, l);
	if(rc < 0){
		goto fail;
	}
	*out = l;
	return 0;

fail:
	free(l->ids_path);
	if(l->ids_fd >= 0){
		close(l->ids_fd);
	}
	fb_yield_cleanup(&l->yield);
	free(l->ring);
	free(l->batch);
	free(l->topic_buf);
	pthread_mutex_destroy(&l->status_lock);
	free(l);
	return rc;
}

void fb_session_stop(struct fb_session *l)
{
	uint64_t one = 1;

	if(l == NULL){
		return;
	}
	atomic_store(&l->stopping, true);
	if(write(l->efd, &one, sizeof(one)) < 0){
		/* the worker also wakes within MAX_POLL_MS */
	}
	pthread_join(l->thread, NULL);
	fb_yield_cleanup(&l->yield);
	free(l->ring);
	free(l->batch);
	free(l->topic_buf);
	free(l->ids_path);
	if(l->ids_fd >= 0){
		close(l->ids_fd);
	}
	free(l->props_key);
	mosquitto_property_free_all(&l->props_list);
	alias_list_forget(l);
	free(l->alias_c);
	fb_alias_cleanup(&l->alias);
	pthread_mutex_destroy(&l->status_lock);
	free(l);
}
