/* flowmq-bridge: status values published under $SYS/broker/flowmq-bridge/ (DESIGN.md "Status and
 * metrics"), retained, every status_interval. */
#ifndef FB_METRICS_H
#define FB_METRICS_H

#include <stdint.h>

#include "bridge.h"
#include "link.h"
#include "spool.h"

#define FB_METRICS_PREFIX "$SYS/broker/flowmq-bridge/"

struct fb_metrics {
	struct fb_link_status link;
	struct fb_spool_stats spool;
	uint64_t oldest_age_s;
	uint64_t forwarded, dropped_full, dropped_expired, dropped_rejected, dropped_filtered;
	uint64_t injected, c2e_dropped, reconnects;
	uint64_t dropped_corrupt, stalls, link_restarts, wills;
	unsigned disk_full, link_stalled;
};

/* Fills M from the counters, the link and the spool. Any thread. */
void fb_metrics_collect(struct fb_metrics *m, const struct fb_counters *c, struct fb_link *link,
		struct fb_spool *spool);

/* Publishes every value through HOST. Broker thread. */
void fb_metrics_publish(const struct fb_host *host, const struct fb_metrics *m);

#endif
