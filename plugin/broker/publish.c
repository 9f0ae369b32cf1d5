/* flowmq-bridge: status publishing (see publish.h); broker process, broker thread. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "publish.h"

static void put(const struct fb_host *host, const char *key, const char *value)
{
	char topic[128];
	size_t len = strlen(value);
	char *payload = malloc(len + 1);

	if(payload == NULL){
		return;
	}
	memcpy(payload, value, len + 1);
	snprintf(topic, sizeof(topic), FB_PUBLISH_PREFIX "%s", key);
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

void fb_publish_status(const struct fb_host *host, const struct fb_status *st, enum fb_link_state state,
		const struct fb_counters *c)
{
	struct fb_counter_values v;
	/* The link process copies the spool's disk-full state into the counter at every snapshot. */
	unsigned disk_full = atomic_load_explicit(&c->disk_full, memory_order_relaxed);

	fb_counters_load(c, &v);
	put(host, "state", fb_status_state_name(state));
	put(host, "endpoint", st->link.endpoint);
	put_u64(host, "spool/messages", st->spool.messages);
	put_u64(host, "spool/bytes", st->spool.bytes);
	put_u64(host, "spool/oldest_age_s", st->oldest_age_s);
#define FB_PUT_COUNTER(name, topic, desc) put_u64(host, topic, v.name);
	FB_COUNTERS(FB_PUT_COUNTER)
#undef FB_PUT_COUNTER
	put_u64(host, "spool/dead", st->spool.dead);
	put_u64(host, "spool/disk_full", disk_full);
	put(host, "last_error", st->link.last_error);
	/* Lanes: every one, so that a lane that emptied shows 0. */
	for(unsigned l = 0; l < FB_STATUS_LANES; l++){
		char key[48];

		snprintf(key, sizeof(key), "spool/lane/%u/messages", l);
		put_u64(host, key, st->lane_messages[l]);
		snprintf(key, sizeof(key), "spool/lane/%u/oldest_age_s", l);
		put_u64(host, key, st->lane_oldest_age_s[l]);
	}
}

int fb_publish_metrics(const struct fb_host *host, const struct fb_status *st, enum fb_link_state state,
		uint64_t uptime_s, const struct fb_rulectr *r, size_t nrules, struct fb_publish_memo *memo)
{
	char key[64];

	put_u64(host, "connected", state == FB_LINK_CONNECTED);
	put_u64(host, "cloud_to_edge/pending", st->spool.in);
	put_u64(host, "uptime_s", uptime_s);
	put_u64(host, "last_connect_ts", st->link.last_connect_ts);

	if(nrules > FB_RULECTR_SLOTS){
		nrules = FB_RULECTR_SLOTS;
	}
	if(nrules > memo->count){
		uint64_t *n = realloc(memo->last, 2 * nrules * sizeof(*n));

		if(n == NULL){
			return -ENOMEM;
		}
		for(size_t i = 2 * memo->count; i < 2 * nrules; i++){
			n[i] = UINT64_MAX;
		}
		memo->last = n;
	}
	for(size_t i = nrules; i < memo->count; i++){
		snprintf(key, sizeof(key), "rules/%zu/forwarded", i);
		put(host, key, "");
		snprintf(key, sizeof(key), "rules/%zu/dropped", i);
		put(host, key, "");
	}
	memo->count = nrules;
	for(size_t i = 0; i < nrules; i++){
		uint64_t f = fb_rulectr_get(&r->rule[i].forwarded), d = fb_rulectr_get(&r->rule[i].dropped);

		if(memo->last[2 * i] != f){
			snprintf(key, sizeof(key), "rules/%zu/forwarded", i);
			put_u64(host, key, f);
			memo->last[2 * i] = f;
		}
		if(memo->last[2 * i + 1] != d){
			snprintf(key, sizeof(key), "rules/%zu/dropped", i);
			put_u64(host, key, d);
			memo->last[2 * i + 1] = d;
		}
	}
	return 0;
}

void fb_publish_memo_reset(struct fb_publish_memo *memo)
{
	for(size_t i = 0; i < 2 * memo->count; i++){
		memo->last[i] = UINT64_MAX;
	}
}

void fb_publish_memo_free(struct fb_publish_memo *memo)
{
	free(memo->last);
	memo->last = NULL;
	memo->count = 0;
}
