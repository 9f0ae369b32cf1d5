/* flowmq-bridge: status values (see metrics.h). Collected in the link process, published by the broker
 * thread. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"
#include "record.h"

static uint64_t load(const atomic_uint_fast64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

static int oldest_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct fb_record r;
	(void)seq;

	if(fb_record_decode(val, len, &r) == 0){
		*(uint64_t *)ud = r.enqueue_ms;
	}
	return 1;
}

void fb_metrics_collect(struct fb_metrics *m, const struct fb_counters *c, struct fb_link *link,
		struct fb_spool *spool)
{
	uint64_t enqueued = 0;

	memset(m, 0, sizeof(*m));
	fb_link_status(link, &m->link);
	fb_spool_stats(spool, &m->spool);
	if(m->spool.messages && fb_spool_oldest(spool, oldest_visit, &enqueued) > 0 && enqueued){
		uint64_t now = fb_wall_ms();
		m->oldest_age_s = now > enqueued ? (now - enqueued) / 1000u : 0;
	}
	m->forwarded = load(&c->forwarded);
	m->dropped_full = load(&c->dropped_full);
	m->dropped_expired = load(&c->dropped_expired);
	m->dropped_rejected = load(&c->dropped_rejected);
	m->dropped_filtered = load(&c->dropped_filtered);
	m->injected = load(&c->injected);
	m->c2e_dropped = load(&c->c2e_dropped);
	m->reconnects = load(&c->reconnects);
	m->dropped_corrupt = load(&c->dropped_corrupt);
	m->stalls = load(&c->stalls);
	m->link_restarts = load(&c->link_restarts);
	m->wills = load(&c->wills);
	/* The spool's own state (the link process), or a writer that saw the disk full. */
	m->disk_full = atomic_load_explicit(&c->disk_full, memory_order_relaxed) || m->spool.disk_full;
	m->link_stalled = atomic_load_explicit(&c->link_stalled, memory_order_relaxed);
}

static void put(const struct fb_host *host, const char *key, const char *value)
{
	char topic[128];
	size_t len = strlen(value);
	char *payload = malloc(len + 1);

	if(payload == NULL){
		return;
	}
	memcpy(payload, value, len + 1);
	snprintf(topic, sizeof(topic), FB_METRICS_PREFIX "%s", key);
	if(host->publish(host->ud, topic, (int)len, len ? payload : NULL, 0, true, NULL) < 0 || len == 0){
		free(payload);
	}
}

static void put_u64(const struct fb_host *host, const char *key, uint64_t v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	put(host, key, buf);
}

void fb_metrics_publish(const struct fb_host *host, const struct fb_metrics *m)
{
	put(host, "state", fb_link_state_name(m->link_stalled ? FB_LINK_STALLED : m->link.state));
	put(host, "endpoint", m->link.endpoint);
	put_u64(host, "spool/messages", m->spool.messages);
	put_u64(host, "spool/bytes", m->spool.bytes);
	put_u64(host, "spool/oldest_age_s", m->oldest_age_s);
	put_u64(host, "edge_to_cloud/forwarded", m->forwarded);
	put_u64(host, "edge_to_cloud/dropped/full", m->dropped_full);
	put_u64(host, "edge_to_cloud/dropped/expired", m->dropped_expired);
	put_u64(host, "edge_to_cloud/dropped/rejected", m->dropped_rejected);
	put_u64(host, "edge_to_cloud/dropped/filtered", m->dropped_filtered);
	put_u64(host, "edge_to_cloud/dropped/corrupt", m->dropped_corrupt);
	put_u64(host, "edge_to_cloud/wills", m->wills);
	put_u64(host, "spool/dead", m->spool.dead);
	put_u64(host, "spool/disk_full", m->disk_full);
	put_u64(host, "stalls", m->stalls);
	put_u64(host, "link_restarts", m->link_restarts);
	put_u64(host, "cloud_to_edge/injected", m->injected);
	put_u64(host, "cloud_to_edge/dropped", m->c2e_dropped);
	put_u64(host, "reconnects", m->reconnects);
	put(host, "last_error", m->link.last_error);
}
