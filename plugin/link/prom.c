/* flowmq-bridge: the Prometheus text endpoint (see prom.h); link process, libmicrohttpd's thread
 * (fb_prom_start() and fb_prom_stop() on the main thread). */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>
#include <mosquitto.h>

#include "prom.h"
#include "record.h"

#define PROM_PREFIX "flowmq_bridge_"
#define PROM_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct fb_prom {
	struct MHD_Daemon *d;
	struct fb_shared *sh;
	size_t nrules;
	uint64_t started_ms;
	const struct fb_logger *lg;
};

/* A growing text buffer; ok goes false for good at the first allocation that fails. */
struct prom_buf {
	char *p;
	size_t len, cap;
	int ok;
};

static void prom_put(struct prom_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void prom_put(struct prom_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if(!b->ok){
		return;
	}
	for(;;){
		va_start(ap, fmt);
		n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if(n < 0){
			b->ok = 0;
			return;
		}
		if((size_t)n < b->cap - b->len){
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap * 2 + (size_t)n;
		char *p = realloc(b->p, cap);
		if(p == NULL){
			b->ok = 0;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
}

static void prom_head(struct prom_buf *b, const char *name, const char *type, const char *help)
{
	prom_put(b, "# HELP " PROM_PREFIX "%s %s\n# TYPE " PROM_PREFIX "%s %s\n", name, help, name, type);
}

static void prom_gauge(struct prom_buf *b, const char *name, const char *help, uint64_t v)
{
	prom_head(b, name, "gauge", help);
	prom_put(b, PROM_PREFIX "%s %" PRIu64 "\n", name, v);
}

/* A counter of counters.h: its $SYS topic suffix with '/' as '_', then _total. */
static void prom_counter(struct prom_buf *b, const char *topic, const char *help, uint64_t v)
{
	char name[96];
	size_t i;

	for(i = 0; topic[i] && i < sizeof(name) - 1; i++){
		name[i] = topic[i] == '/' ? '_' : topic[i];
	}
	name[i] = '\0';
	prom_put(b, "# HELP " PROM_PREFIX "%s_total %s\n# TYPE " PROM_PREFIX "%s_total counter\n"
			PROM_PREFIX "%s_total %" PRIu64 "\n", name, help, name, name, v);
}

/* A whole copy of the status, under its sequence lock (the link's main thread writes it). */
static void prom_status(struct fb_shared *sh, struct fb_status *st)
{
	unsigned g;

	do{
		g = fb_seq_read_begin(&sh->sgen);
		memcpy(st, &sh->status, sizeof(*st));
	}while(fb_seq_read_again(&sh->sgen, g));
}

int fb_prom_render(struct fb_shared *sh, size_t nrules, uint64_t uptime_s, char **out, size_t *len)
{
	struct prom_buf b = { .cap = 8192, .ok = 1 };
	struct fb_counter_values v;
	struct fb_status st;

	*out = NULL;
	*len = 0;
	if((b.p = malloc(b.cap)) == NULL){
		return -ENOMEM;
	}
	b.p[0] = '\0';
	prom_status(sh, &st);
	fb_counters_load(&sh->ctr, &v);

	prom_gauge(&b, "connected", "1 while the cloud session is connected, else 0",
			st.link.state == FB_LINK_CONNECTED);
	prom_gauge(&b, "last_connect_timestamp_seconds",
			"Unix time of the last connection the cloud accepted (0: none yet)", st.link.last_connect_ts);
	prom_gauge(&b, "link_uptime_seconds", "seconds since this link process started", uptime_s);
	prom_gauge(&b, "spool_messages", "live records in the spool waiting for the cloud", st.spool.messages);
	prom_gauge(&b, "spool_bytes", "bytes of the live records in the spool", st.spool.bytes);
	prom_gauge(&b, "spool_oldest_age_seconds", "age of the oldest live record in the spool", st.oldest_age_s);
	prom_gauge(&b, "spool_dead", "dead letters in the spool", st.spool.dead);
	prom_gauge(&b, "spool_disk_full", "1 while the spool cannot write for lack of space, else 0",
			st.spool.disk_full ? 1 : 0);
	prom_gauge(&b, "cloud_to_edge_pending", "cloud messages spooled and not yet taken by the local broker",
			st.spool.in);
#define FB_PROM_COUNTER(name, topic, desc) prom_counter(&b, topic, desc, v.name);
	FB_COUNTERS(FB_PROM_COUNTER)
#undef FB_PROM_COUNTER

	prom_head(&b, "spool_lane_messages", "gauge", "live records in the spool per lane");
	for(unsigned l = 0; l < FB_STATUS_LANES; l++){
		prom_put(&b, PROM_PREFIX "spool_lane_messages{lane=\"%u\"} %" PRIu64 "\n", l, st.lane_messages[l]);
	}
	prom_head(&b, "spool_lane_oldest_age_seconds", "gauge", "age of each lane's oldest live record (0: empty)");
	for(unsigned l = 0; l < FB_STATUS_LANES; l++){
		prom_put(&b, PROM_PREFIX "spool_lane_oldest_age_seconds{lane=\"%u\"} %" PRIu64 "\n", l,
				st.lane_oldest_age_s[l]);
	}

	if(nrules > FB_RULECTR_SLOTS){
		nrules = FB_RULECTR_SLOTS;
	}
	if(nrules){
		prom_head(&b, "rule_forwarded_total", "counter",
				"messages an edge_to_cloud rule (by index) took for the cloud");
		for(size_t i = 0; i < nrules; i++){
			prom_put(&b, PROM_PREFIX "rule_forwarded_total{rule=\"%zu\"} %" PRIu64 "\n", i,
					fb_rulectr_get(&sh->rules.rule[i].forwarded));
		}
		prom_head(&b, "rule_dropped_total", "counter",
				"messages an edge_to_cloud rule (by index) dropped: drop rule, invalid cloud topic, spool.on_full");
		for(size_t i = 0; i < nrules; i++){
			prom_put(&b, PROM_PREFIX "rule_dropped_total{rule=\"%zu\"} %" PRIu64 "\n", i,
					fb_rulectr_get(&sh->rules.rule[i].dropped));
		}
	}
	if(!b.ok){
		free(b.p);
		return -ENOMEM;
	}
	*out = b.p;
	*len = b.len;
	return 0;
}

static enum MHD_Result prom_reply(struct MHD_Connection *c, unsigned status, const char *text)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
	enum MHD_Result ret;

	if(r == NULL){
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result prom_handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
		const char *version, const char *upload_data, size_t *upload_size, void **con_cls)
{
	struct fb_prom *p = cls;
	struct MHD_Response *r;
	enum MHD_Result ret;
	char *text;
	size_t len;
	uint64_t now;

	(void)version;
	(void)upload_data;
	(void)upload_size;
	(void)con_cls;
	if(strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0){
		return prom_reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET /metrics\n");
	}
	if(strcmp(url, "/metrics") != 0){
		return prom_reply(c, MHD_HTTP_NOT_FOUND, "not found: the metrics are at /metrics\n");
	}
	now = fb_mono_ms();
	if(fb_prom_render(p->sh, p->nrules, now > p->started_ms ? (now - p->started_ms) / 1000u : 0, &text, &len) < 0){
		return prom_reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
	}
	r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if(r == NULL){
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, PROM_CONTENT_TYPE);
	ret = MHD_queue_response(c, MHD_HTTP_OK, r);
	MHD_destroy_response(r);
	return ret;
}

static void prom_mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct fb_prom *p = cls;
	char line[512];
	size_t n;

	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while(n && (line[n - 1] == '\n' || line[n - 1] == '\r')){
		line[--n] = '\0';
	}
	fb_log(p->lg, MOSQ_LOG_WARNING, "metrics endpoint: %s", line);
}

/* A listening TCP socket on O's address, or a negative errno. */
static int prom_listen(const struct fb_prom_opts *o)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	int fd, one = 1, rc;

	memset(&ss, 0, sizeof(ss));
	if(o->ipv6){
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons(o->port);
		if(inet_pton(AF_INET6, o->host, &a->sin6_addr) != 1){
			return -EINVAL;
		}
		sl = sizeof(*a);
	}else{
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_port = htons(o->port);
		if(inet_pton(AF_INET, o->host, &a->sin_addr) != 1){
			return -EINVAL;
		}
		sl = sizeof(*a);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if(fd < 0){
		return -errno;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if(o->ipv6){
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	}
	if(bind(fd, (struct sockaddr *)&ss, sl) != 0 || listen(fd, 16) != 0){
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

int fb_prom_start(const struct fb_prom_opts *o, struct fb_prom **out)
{
	struct fb_prom *p;
	int fd;

	*out = NULL;
	fd = prom_listen(o);
	if(fd < 0){
		fb_log(o->lg, MOSQ_LOG_ERR, "metrics.listen %s: cannot listen: %s; the bridge runs on without the "
				"metrics endpoint", o->listen, strerror(-fd));
		return fd;
	}
	if((p = calloc(1, sizeof(*p))) == NULL){
		close(fd);
		fb_log(o->lg, MOSQ_LOG_ERR, "metrics.listen %s: out of memory; the bridge runs on without the "
				"metrics endpoint", o->listen);
		return -ENOMEM;
	}
	*p = (struct fb_prom){ .sh = o->sh, .nrules = o->nrules, .started_ms = o->started_ms, .lg = o->lg };
	p->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
			prom_handle, p,
			MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
			MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
			MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
			MHD_OPTION_EXTERNAL_LOGGER, prom_mhd_log, p,
			MHD_OPTION_END);
	if(p->d == NULL){
		close(fd);
		free(p);
		fb_log(o->lg, MOSQ_LOG_ERR, "metrics.listen %s: cannot start the HTTP server; the bridge runs on "
				"without the metrics endpoint", o->listen);
		return -EIO;
	}
	fb_log(o->lg, MOSQ_LOG_NOTICE, "metrics endpoint: http://%s/metrics", o->listen);
	*out = p;
	return 0;
}

void fb_prom_stop(struct fb_prom *p)
{
	if(p == NULL){
		return;
	}
	MHD_stop_daemon(p->d);
	free(p);
}
