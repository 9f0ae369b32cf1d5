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
 *   - with an acl_file or a plugin after us, answering MOSQ_ERR_SUCCESS bypasses it;
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

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "config.h"
#include "notes.h"
#include "record.h"
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
/* The probe's topic: only this plugin publishes there (clients cannot subscribe to it with '#'). */
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
	struct mosquitto *mosq;
	bool ever_connected; /* connected at least once (connect, not reconnect, the first time) */
	enum state state;

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
	uint64_t misc_ms;    /* coarse clock of the next mosquitto_loop_misc() */
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
	fb_notes_add(w->notes, topic, payload, payloadlen, coarse_ms());
}

/* ---- filters ----------------------------------------------------------------------------- */

/* True when some topic matches both filters A and B. */
static bool filters_overlap(const char *a, const char *b)
{
	for(;;){
		size_t la = strcspn(a, "/"), lb = strcspn(b, "/");

		if((la == 1 && a[0] == '#') || (lb == 1 && b[0] == '#')){
			return true;
		}
		if(!(la == 1 && a[0] == '+') && !(lb == 1 && b[0] == '+')
				&& (la != lb || memcmp(a, b, la))){
			return false;
		}
		a += la;
		b += lb;
		if(*a == '\0' || *b == '\0'){
			/* Both end: the same topic. One ends: "x/#" also matches "x". */
			return (*a == '\0' && *b == '\0') || !strcmp(*a ? a : b, "/#");
		}
		a++;
		b++;
	}
}

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
			if(filters_overlap(f[i], f[j])){
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

/* ---- the connection ---------------------------------------------------------------------- */

/* Ends the connection (if any) and forgets the notes; the next attempt at RETRY_MS. */
static void drop_connection(struct fb_will *w)
{
	enum state was = w->state;

	w->state = W_IDLE; /* first: mosquitto_disconnect() calls on_disconnect() */
	if(was != W_IDLE){
		mosquitto_disconnect(w->mosq);
		/* The socket is closed once the DISCONNECT is written, or at the next connect. */
		mosquitto_loop_write(w->mosq, 1);
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

static void on_connect(struct mosquitto *m, void *ud, int rc, int flags, const mosquitto_property *props)
{
	struct fb_will *w = ud;
	mosquitto_property *sp = NULL;
	char what[96];
	(void)flags; (void)props;

	if(w->state != W_CONNECTING){
		return;
	}
	if(rc != 0){
		snprintf(what, sizeof(what), "CONNACK %s", mosquitto_reason_string(rc));
		fail(w, what);
		return;
	}
	w->state = W_SUBSCRIBING;
	w->subacks = 0;
	w->deadline_ms = fb_mono_ms() + PROBE_TIMEOUT_MS;
	/* One SUBSCRIBE per rule, its identifier the rule's place + 1: a message that matches
	 * overlapping filters comes once per filter, and only the first filter's copy counts. */
	for(size_t i = 0; i <= w->nfilters; i++){
		const char *f = i < w->nfilters ? w->filters[i] : PROBE_TOPIC;

		sp = NULL;
		if(i < w->nfilters && mosquitto_property_add_varint(&sp, MQTT_PROP_SUBSCRIPTION_IDENTIFIER,
					(uint32_t)i + 1) != MOSQ_ERR_SUCCESS){
			fail(w, "out of memory");
			return;
		}
		rc = mosquitto_subscribe_v5(m, NULL, f, 0,
				MQTT_SUB_OPT_RETAIN_AS_PUBLISHED | MQTT_SUB_OPT_SEND_RETAIN_NEVER, sp);
		mosquitto_property_free_all(&sp);
		if(rc != MOSQ_ERR_SUCCESS){
			snprintf(what, sizeof(what), "subscribe: %s", mosquitto_strerror(rc));
			fail(w, what);
			return;
		}
		w->subacks++;
	}
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

static void on_subscribe(struct mosquitto *m, void *ud, int mid, int count, const int *granted,
		const mosquitto_property *props)
{
	struct fb_will *w = ud;
	(void)m; (void)mid; (void)props;

	if(w->state != W_SUBSCRIBING){
		return;
	}
	for(int i = 0; i < count; i++){
		if(granted[i] >= 0x80){
			/* Mosquitto answers SUBACKs in order; the filter is not named in the SUBACK. */
			fb_log(&w->lg, MOSQ_LOG_WARNING, "the loopback subscriber at %s:%d was refused a subscription "
					"(reason 0x%02x; check the broker's ACL for it): Wills on some rules' topics are not forwarded",
					w->addr, w->port, granted[i]);
		}
	}
	if(--w->subacks == 0){
		send_probe(w);
	}
}

static void forward(struct fb_will *w, const struct mosquitto_message *msg, const mosquitto_property *props)
{
	uint32_t id = 0;
	size_t idx;
	int rc;

	if(mosquitto_property_read_varint(props, MQTT_PROP_SUBSCRIPTION_IDENTIFIER, &id, false) == NULL
			|| id == 0 || id > w->nfilters){
		return;
	}
	idx = id - 1;
	if(w->overlaps[idx]){
		for(size_t k = 0; k < idx; k++){
			bool match = false;

			if(w->overlaps[k] && mosquitto_topic_matches_sub(w->filters[k], msg->topic, &match)
					== MOSQ_ERR_SUCCESS && match){
				return; /* the copy of filter k counts */
			}
		}
	}
	if(fb_notes_take(w->notes, msg->topic, msg->payload, (uint32_t)msg->payloadlen, coarse_ms())){
		return; /* the capture had it */
	}
	if(w->state != W_READY){
		return; /* not known yet to be this broker */
	}
	rc = fb_bridge_capture(w->b, msg->topic, msg->payload, (uint32_t)msg->payloadlen, props, msg->qos,
			msg->retain);
	if(rc == FB_BRIDGE_MATCHED){
		fb_count(&fb_bridge_counters(w->b)->wills, 1);
		w->spool_warned = false;
	}else if(rc < 0 && !w->spool_warned){
		/* Counted by the capture (dropped/full); logged once until one goes through again. */
		fb_log(&w->lg, MOSQ_LOG_WARNING, "a Will on %s could not be spooled: %s", msg->topic, strerror(-rc));
		w->spool_warned = true;
	}
}

static void on_message(struct mosquitto *m, void *ud, const struct mosquitto_message *msg,
		const mosquitto_property *props)
{
	struct fb_will *w = ud;
	(void)m;

	if(!strcmp(msg->topic, PROBE_TOPIC)){
		if(w->state == W_PROBING && msg->payloadlen == (int)strlen(w->nonce)
				&& !memcmp(msg->payload, w->nonce, (size_t)msg->payloadlen)){
			w->state = W_READY;
			w->backoff_ms = RETRY_MIN_MS;
			w->warned = false;
			fb_log(&w->lg, MOSQ_LOG_NOTICE, "Wills on %zu rules' topics are forwarded through the loopback "
					"subscriber at %s:%d", w->nfilters, w->addr, w->port);
		}
		return;
	}
	if(w->state >= W_SUBSCRIBING){
		forward(w, msg, props);
	}
}

static void on_disconnect(struct mosquitto *m, void *ud, int rc, const mosquitto_property *props)
{
	struct fb_will *w = ud;
	char what[96];
	(void)m; (void)props;

	if(w->state != W_IDLE){
		snprintf(what, sizeof(what), "connection lost: %s", mosquitto_reason_string(rc));
		fail(w, what);
	}
}

static void connect_start(struct fb_will *w)
{
	unsigned char r[16];
	FILE *f;
	int rc, sock;

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
	/* Asynchronous: connect() on a non-blocking socket, CONNECT written when the socket is
	 * ready. The broker thread never waits for its own listener. */
	rc = w->ever_connected ? mosquitto_reconnect_async(w->mosq)
			: mosquitto_connect_bind_async(w->mosq, w->addr, w->port, KEEPALIVE_S, NULL);
	if(rc != MOSQ_ERR_SUCCESS){
		char what[96];

		snprintf(what, sizeof(what), "connect: %s", rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
		w->state = W_IDLE;
		fail(w, what);
		return;
	}
	w->ever_connected = true;
	sock = mosquitto_socket(w->mosq);
	if(sock >= 0){
		/* Not for the link process's program when it is exec'd. */
		(void)fcntl(sock, F_SETFD, FD_CLOEXEC);
	}
	w->state = W_CONNECTING;
	w->deadline_ms = fb_mono_ms() + PROBE_TIMEOUT_MS;
}

void fb_will_tick(struct fb_will *w)
{
	uint64_t now;
	int rc = MOSQ_ERR_SUCCESS;

	if(w == NULL || w->mosq == NULL){
		return;
	}
	now = coarse_ms();
	if(now - w->pass_ms < READ_EVERY_MS){
		return;
	}
	w->pass_ms = now;
	if(w->state == W_IDLE){
		if(fb_mono_ms() >= w->retry_ms){
			connect_start(w);
		}
		if(w->state == W_IDLE){
			return;
		}
	}
	if(w->reconnect){
		drop_connection(w);
		w->retry_ms = 0;
		return;
	}
	if(w->state == W_READY && now < w->misc_ms && !mosquitto_want_write(w->mosq)){
		/* The common case, nothing arrived: one cheap system call, without libmosquitto. */
		char c;

		if(recv(mosquitto_socket(w->mosq), &c, 1, MSG_PEEK | MSG_DONTWAIT) < 0
				&& (errno == EAGAIN || errno == EWOULDBLOCK)){
			return;
		}
	}
	if(mosquitto_want_write(w->mosq)){
		rc = mosquitto_loop_write(w->mosq, 1);
	}
	/* mosquitto_loop_read() reads about one packet per call: read until the socket is empty. */
	for(int i = 0; rc == MOSQ_ERR_SUCCESS && w->state != W_IDLE && i < READ_BUDGET; i++){
		errno = 0;
		rc = mosquitto_loop_read(w->mosq, 1);
		if(errno == EAGAIN || errno == EWOULDBLOCK){
			break;
		}
	}
	if(w->state == W_IDLE){
		return; /* on_disconnect() or fail() ran */
	}
	if(rc == MOSQ_ERR_SUCCESS && mosquitto_want_write(w->mosq)){
		rc = mosquitto_loop_write(w->mosq, 1);
	}
	if(rc == MOSQ_ERR_SUCCESS && now >= w->misc_ms){
		/* Keepalive (60 s): once a second is plenty. */
		w->misc_ms = now + 1000;
		rc = mosquitto_loop_misc(w->mosq);
	}
	if(w->state == W_IDLE){
		return;
	}
	if(rc != MOSQ_ERR_SUCCESS){
		char what[96];

		snprintf(what, sizeof(what), "%s", rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
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
	/* No mosquitto_lib_init(): the broker has set up OpenSSL and the sockets layer already, and
	 * mosquitto_lib_cleanup() would tear down what the broker uses. */
	w->mosq = mosquitto_new(w->client_id, true, w);
	if(w->mosq == NULL){
		goto fail;
	}
	if(mosquitto_int_option(w->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5) != MOSQ_ERR_SUCCESS
			|| (w->username && mosquitto_username_pw_set(w->mosq, w->username, w->password)
				!= MOSQ_ERR_SUCCESS)){
		rc = -EINVAL;
		goto fail;
	}
	mosquitto_connect_v5_callback_set(w->mosq, on_connect);
	mosquitto_subscribe_v5_callback_set(w->mosq, on_subscribe);
	mosquitto_message_v5_callback_set(w->mosq, on_message);
	mosquitto_disconnect_v5_callback_set(w->mosq, on_disconnect);
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
	if(w->mosq){
		if(w->state != W_IDLE){
			w->state = W_IDLE;
			mosquitto_disconnect(w->mosq);
			mosquitto_loop_write(w->mosq, 1);
		}
		mosquitto_destroy(w->mosq);
	}
	filters_free(w);
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
