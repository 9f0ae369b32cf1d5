/* flowmq-bridge: status values published under $SYS/broker/flowmq-bridge/ (README.md, "Status and
 * metrics"), retained, every status_interval (broker process, broker thread). */
#ifndef FB_PUBLISH_H
#define FB_PUBLISH_H

#include "bridge.h"
#include "counters.h"
#include "rulectr.h"
#include "status.h"

#define FB_PUBLISH_PREFIX "$SYS/broker/flowmq-bridge/"

/* Publishes the snapshot ST (as the link process last saw it) with the counters C as they are
 * now, through HOST. STATE is the state to publish (the snapshot's, unless the broker knows
 * better). Broker thread. */
void fb_publish_status(const struct fb_host *host, const struct fb_status *st, enum fb_link_state state,
		const struct fb_counters *c);

/* What fb_publish_metrics() remembers between calls: the per-rule values it last published.
 * Broker thread; zero-initialise, free with fb_publish_memo_free(). */
struct fb_publish_memo {
	uint64_t *last;   /* 2 per rule (forwarded, dropped); UINT64_MAX: to be published */
	size_t count;     /* rules published */
};

/* Publishes the numeric values exporters read (README.md, "Status and metrics"): connected (1 when
 * STATE is connected, else 0), cloud_to_edge/pending (ST's spool "in"), uptime_s (UPTIME_S),
 * last_connect_ts (ST's), and rules/<index>/forwarded and .../dropped for the first NRULES slots
 * of R (only those that changed since MEMO last saw them; retained, so a new subscriber still
 * gets each). Rules MEMO published beyond NRULES (a reload removed them) have their retained
 * values cleared. Returns 0, or -ENOMEM (then nothing per rule was published). Broker thread. */
int fb_publish_metrics(const struct fb_host *host, const struct fb_status *st, enum fb_link_state state,
		uint64_t uptime_s, const struct fb_rulectr *r, size_t nrules, struct fb_publish_memo *memo);

/* Makes the next fb_publish_metrics() publish every rule's values again (after a reload). */
void fb_publish_memo_reset(struct fb_publish_memo *memo);

/* Accepts a zeroed memo. */
void fb_publish_memo_free(struct fb_publish_memo *memo);

#endif
