#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mqtt_protocol.h>

#include "bridge.h"
#include "handoff.h"
#include "link.h"
#include "metrics.h"
#include "record.h"
#include "route.h"
#include "spool.h"
#include "tail.h"

/* Bytes of recent records kept in memory for the worker (see tail.h). */
#define TAIL_BUDGET (8u << 20)

/* One loaded configuration with its compiled routes. A reload makes a new generation; older ones
 * stay alive until stop, because the worker keeps using the first one (cloud settings and
 * cloud_to_edge rules change only with a restart). */
struct generation {
	struct fb_config *cfg;
	struct fb_routes *routes;
	uint8_t **extra;        /* per edge_to_cloud rule: its headers, then the origin, encoded */
	uint32_t *extra_len;
	bool first_byte_only;     /* fb_route_first_bytes() of the edge_to_cloud rules */
	uint64_t first_bytes[4];
	struct generation *older;
};

struct fb_bridge {
	char *config_file;
	struct fb_logger lg;
	struct fb_host host;
	struct generation *gen;   /* newest; broker thread only */
	struct generation *first; /* the one the worker uses */
	struct fb_spool *spool;
	struct fb_handoff handoff;
	bool handoff_ready;
	struct fb_tail tail;
	struct fb_link *link;
	struct fb_counters ctr;
	uint8_t *buf;             /* capture buffers, broker thread: the record */
	size_t buf_size;
	uint8_t *pbuf;            /* its properties */
	size_t pbuf_size;
	struct fb_inmsg *injected; /* handed to the broker at the last tick, still in spool "in" */
	time_t next_status;
};

static void generation_free(struct generation *g)
{
	while(g){
		struct generation *older = g->older;

		if(g->extra){
			for(size_t i = 0; i < g->cfg->e2c_count; i++){
				free(g->extra[i]);
			}
		}
		free(g->extra);
		free(g->extra_len);
		fb_routes_free(g->routes);
		fb_config_free(g->cfg);
		free(g);
		g = older;
	}
}

static int generation_load(const char *file, const struct fb_logger *lg, struct generation **out)
{
	struct generation *g = calloc(1, sizeof(*g));
	int rc;

	*out = NULL;
	if(g == NULL){
		return -ENOMEM;
	}
	rc = fb_config_load(file, lg, &g->cfg);
	if(rc < 0){
		goto fail;
	}
	rc = fb_routes_build(g->cfg, &g->routes);
	if(rc < 0){
		fb_log(lg, MOSQ_LOG_ERR, "%s: cannot compile the routes: %s", file, strerror(-rc));
		goto fail;
	}
	g->first_byte_only = fb_route_first_bytes(g->routes, FB_ROUTE_E2C, g->first_bytes);
	rc = -ENOMEM;
	g->extra = calloc(g->cfg->e2c_count + 1, sizeof(*g->extra));
	g->extra_len = calloc(g->cfg->e2c_count + 1, sizeof(*g->extra_len));
	if(g->extra == NULL || g->extra_len == NULL){
		goto fail;
	}
	/* Encoded once here, appended to every captured message's properties. */
	for(size_t i = 0; i < g->cfg->e2c_count; i++){
		const struct fb_e2c_rule *rule = &g->cfg->e2c[i];
		const char **x = calloc(2 * (rule->header_count + 1), sizeof(*x));

		if(x == NULL){
			rc = -ENOMEM;
			goto fail;
		}
		for(size_t h = 0; h < rule->header_count; h++){
			x[2 * h] = rule->headers[h].name;
			x[2 * h + 1] = rule->headers[h].value;
		}
		x[2 * rule->header_count] = FB_ORIGIN_PROPERTY;
		x[2 * rule->header_count + 1] = g->cfg->site_id;
		rc = fb_props_encode(NULL, x, rule->header_count + 1, &g->extra[i], &g->extra_len[i]);
		free(x);
		if(rc < 0){
			fb_log(lg, MOSQ_LOG_ERR, "%s: edge_to_cloud[%zu]: cannot encode its headers: %s", file,
					i, strerror(-rc));
			goto fail;
		}
	}
	*out = g;
	return 0;

fail:
	generation_free(g);
	return rc;
}

/* Queues whatever a crash left in spool "in": it is injected at the first tick. */
static int recover_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct fb_bridge *b = ud;
	struct fb_inmsg *m = fb_inmsg_from_record(seq, val, len);

	if(m){
		fb_handoff_push(&b->handoff, m);
	}else{
		fb_log(&b->lg, MOSQ_LOG_ERR, "spool \"in\" record %llu is unreadable; dropped", (unsigned long long)seq);
		fb_spool_delete(b->spool, FB_Q_IN, seq, len);
		fb_count(&b->ctr.c2e_dropped, 1);
	}
	return 0;
}

int fb_bridge_start(const char *config_file, const struct fb_logger *lg, const struct fb_host *host,
		struct fb_bridge **out)
{
	struct fb_bridge *b;
	struct fb_spool_opts so;
	struct fb_link_deps ld;
	const struct fb_config *cfg;
	int rc;

	*out = NULL;
	b = calloc(1, sizeof(*b));
	if(b == NULL){
		return -ENOMEM;
	}
	b->lg = *lg;
	b->host = *host;
	b->config_file = strdup(config_file);
	if(b->config_file == NULL){
		rc = -ENOMEM;
		goto fail;
	}
	rc = generation_load(config_file, lg, &b->gen);
	if(rc < 0){
		goto fail;
	}
	b->first = b->gen;
	cfg = b->gen->cfg;

	so = (struct fb_spool_opts){
		.path = cfg->spool.path,
		.max_size = cfg->spool.max_size,
		.on_full = cfg->spool.on_full,
		.sync = cfg->spool.sync,
		.lg = &b->lg,
	};
	fb_spool_thread_init();
	rc = fb_spool_open(&so, &b->spool);
	if(rc < 0){
		fb_log(lg, MOSQ_LOG_ERR, "cannot open the spool %s: %s", cfg->spool.path, strerror(-rc));
		goto fail;
	}
	fb_handoff_init(&b->handoff);
	{
		struct fb_spool_stats st;
		fb_spool_stats(b->spool, &st);
		fb_tail_init(&b->tail, TAIL_BUDGET, st.last_seq);
	}
	b->handoff_ready = true;
	rc = fb_spool_read(b->spool, FB_Q_IN, 0, SIZE_MAX, recover_visit, b);
	if(rc < 0){
		goto fail;
	}

	ld = (struct fb_link_deps){
		.cfg = cfg,
		.routes = b->first->routes,
		.spool = b->spool,
		.ctr = &b->ctr,
		.handoff = &b->handoff,
		.tail = &b->tail,
		.host = &b->host,
		.lg = &b->lg,
	};
	rc = fb_link_start(&ld, &b->link);
	if(rc < 0){
		fb_log(lg, MOSQ_LOG_ERR, "cannot start the worker thread: %s", strerror(-rc));
		goto fail;
	}
	fb_log(lg, MOSQ_LOG_NOTICE, "started: site %s, %zu edge_to_cloud and %zu cloud_to_edge rules, spool %s, cloud %s",
			cfg->site_id, cfg->e2c_count, cfg->c2e_count, cfg->spool.path, cfg->cloud.endpoints[0].url);
	*out = b;
	return 0;

fail:
	fb_bridge_stop(b);
	return rc;
}

void fb_bridge_stop(struct fb_bridge *b)
{
	if(b == NULL){
		return;
	}
	fb_link_stop(b->link);
	/* The broker never took the last tick's messages when it stops right after it: they stay in
	 * spool "in" and are injected again at the next start. */
	while(b->injected){
		struct fb_inmsg *next = b->injected->next;
		fb_inmsg_free(b->injected);
		b->injected = next;
	}
	if(b->handoff_ready){
		/* Messages not injected yet stay in spool "in" and are injected at the next start. */
		fb_handoff_cleanup(&b->handoff);
		fb_tail_cleanup(&b->tail);
	}
	fb_spool_close(b->spool);
	generation_free(b->gen);
	free(b->buf);
	free(b->pbuf);
	free(b->config_file);
	free(b);
}

/* fb_bridge_capture() for a topic that a rule matched (RC from fb_route_match(), RES its result).
 * Kept out of line, so that a topic no rule matches costs only the lookup. */
static __attribute__((noinline)) int capture_matched(struct fb_bridge *b, int rc, struct fb_route_result res,
		const char *topic, const void *payload, uint32_t payloadlen, const mosquitto_property *props,
		bool retain)
{
	struct generation *g = b->gen;
	const struct fb_e2c_rule *rule;
	struct fb_record r;
	uint32_t eprops_len = 0;
	uint64_t seq, dropped = 0;
	size_t len;

	if(rc == -EINVAL){
		/* The rule matched but the rewritten topic is not a valid topic (empty, or longer than
		 * 65535 bytes): nothing can be sent, so it counts as filtered. */
		fb_log(&b->lg, MOSQ_LOG_WARNING, "%s: edge_to_cloud[%d] makes an invalid cloud topic of it; not forwarded",
				topic, res.rule);
		fb_count(&b->ctr.dropped_filtered, 1);
		return 0;
	}
	if(rc < 0){
		return rc;
	}
	rule = &g->cfg->e2c[res.rule];
	if(res.drop){
		fb_count(&b->ctr.dropped_filtered, 1);
		return 0;
	}
	rc = fb_props_encode_into(props, g->extra[res.rule], g->extra_len[res.rule], &b->pbuf,
			&b->pbuf_size, &eprops_len);
	if(rc < 0){
		goto out;
	}
	r = (struct fb_record){
		.qos = (uint8_t)rule->qos,
		.retain = retain && !rule->retain_clear,
		.enqueue_ms = fb_wall_ms(),
		/* Mosquitto 2.0.11 keeps the publisher's message expiry from plugins: only spool.ttl
		 * applies to captured messages. */
		.expiry_ms = 0,
		.topic = res.topic,
		.topic_len = (uint16_t)strlen(res.topic),
		.props = b->pbuf,
		.props_len = eprops_len,
		.payload = payload,
		.payload_len = payloadlen,
	};
	len = fb_record_size(&r);
	if(len > b->buf_size){
		uint8_t *nb = realloc(b->buf, len);
		if(nb == NULL){
			rc = -ENOMEM;
			goto out;
		}
		b->buf = nb;
		b->buf_size = len;
	}
	fb_record_encode(&r, b->buf);
	rc = fb_spool_append(b->spool, FB_Q_OUT, b->buf, len, &seq, &dropped);
	if(dropped){
		fb_count(&b->ctr.dropped_full, dropped);
	}
	if(rc == -ENOSPC || rc == -E2BIG){
		fb_count(&b->ctr.dropped_full, 1);
		/* drop_new accepts and drops; reject refuses, so the publisher sees 0x87. */
		rc = g->cfg->spool.on_full == FB_ON_FULL_REJECT ? -ENOSPC : 0;
		goto out;
	}
	if(rc < 0){
		fb_log(&b->lg, MOSQ_LOG_ERR, "cannot spool a message on %s: %s", topic, strerror(-rc));
		goto out;
	}
	fb_tail_push(&b->tail, seq, b->buf, len);
	fb_link_notify(b->link);
out:
	free(res.topic);
	return rc;
}

static __attribute__((noinline)) int capture_lookup(struct fb_bridge *b, const char *topic,
		const void *payload, uint32_t payloadlen, const mosquitto_property *props, bool retain)
{
	struct fb_route_result res;
	int rc = fb_route_match(b->gen->routes, FB_ROUTE_E2C, topic, &res);

	return rc == 0 ? 0 : capture_matched(b, rc, res, topic, payload, payloadlen, props, retain);
}

int fb_bridge_capture(struct fb_bridge *b, const char *topic, const void *payload, uint32_t payloadlen,
		const mosquitto_property *props, int qos, bool retain)
{
	const struct generation *g = b->gen;
	const unsigned char c = (unsigned char)topic[0];
	(void)qos;

	if(g->first_byte_only && !(g->first_bytes[c >> 6] & (UINT64_C(1) << (c & 63)))){
		return 0; /* no rule can match: the common case for local traffic, without a call */
	}
	return capture_lookup(b, topic, payload, payloadlen, props, retain);
}

/* mosquitto_broker_publish() only queues a message; the broker takes it into its own structures
 * at the start of its next loop iteration, before the next tick. So a message leaves spool "in"
 * one tick after it was handed over: a crash in between injects it again rather than lose it. */
static __attribute__((noinline)) void release_injected(struct fb_bridge *b)
{
	struct fb_inmsg *m = b->injected;

	b->injected = NULL;
	while(m){
		struct fb_inmsg *next = m->next;
		fb_spool_delete(b->spool, FB_Q_IN, m->seq, m->reclen);
		fb_inmsg_free(m);
		m = next;
	}
}

static __attribute__((noinline)) void inject(struct fb_bridge *b)
{
	struct fb_inmsg *m = fb_handoff_take(&b->handoff);
	struct fb_inmsg **done = &b->injected;
	uint64_t now = 0;

	while(m){
		struct fb_inmsg *next = m->next;

		if(m->expiry_ms){
			if(now == 0){
				now = fb_wall_ms();
			}
			if(now >= m->expiry_ms){
				fb_count(&b->ctr.c2e_dropped, 1);
				goto done;
			}
			mosquitto_property_add_int32(&m->props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL,
					(uint32_t)((m->expiry_ms - now + 999) / 1000));
		}
		if(b->host.publish(b->host.ud, m->topic, m->payloadlen, m->payload, m->qos, m->retain, m->props) == 0){
			m->payload = NULL; /* the broker owns them now */
			m->props = NULL;
			fb_count(&b->ctr.injected, 1);
		}else{
			fb_log(&b->lg, MOSQ_LOG_ERR, "cannot inject a cloud message on %s", m->topic);
			fb_count(&b->ctr.c2e_dropped, 1);
		}
done:
		m->next = NULL;
		*done = m;
		done = &m->next;
		m = next;
	}
}

static __attribute__((noinline)) void publish_status(struct fb_bridge *b, time_t now)
{
	struct fb_metrics m;

	fb_metrics_collect(&m, &b->ctr, b->link, b->spool);
	fb_metrics_publish(&b->host, &m);
	b->next_status = now + (time_t)((b->gen->cfg->status_interval_ms + 999) / 1000);
}

void fb_bridge_tick(struct fb_bridge *b, time_t now)
{
	/* Every broker loop turn comes here: with nothing to do, three loads and compares (the work
	 * is out of line, so that the compiler need not set up a frame for it). */
	if(b->injected){
		release_injected(b);
	}
	if(fb_handoff_pending(&b->handoff)){
		inject(b);
	}
	if(now >= b->next_status){
		publish_status(b, now);
	}
}

int fb_bridge_reload(struct fb_bridge *b)
{
	struct generation *g;
	int rc;

	rc = generation_load(b->config_file, &b->lg, &g);
	if(rc < 0){
		fb_log(&b->lg, MOSQ_LOG_ERR, "reload of %s failed; the running configuration stays", b->config_file);
		return rc;
	}
	g->older = b->gen;
	b->gen = g;
	fb_log(&b->lg, MOSQ_LOG_NOTICE, "reloaded %s: %zu edge_to_cloud rules now apply; changes to cloud, spool "
			"and cloud_to_edge take effect at the next restart", b->config_file, g->cfg->e2c_count);
	return 0;
}
