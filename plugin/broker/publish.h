/* flowmq-bridge: status values published under $SYS/broker/flowmq-bridge/ (README.md, "Status and
 * metrics"), retained, every status_interval (broker process, broker thread). */
#ifndef FB_PUBLISH_H
#define FB_PUBLISH_H

#include "bridge.h"
#include "counters.h"
#include "status.h"

#define FB_PUBLISH_PREFIX "$SYS/broker/flowmq-bridge/"

/* Publishes the snapshot ST (as the link process last saw it) with the counters C as they are
 * now, through HOST. STATE is the state to publish (the snapshot's, unless the broker knows
 * better). Broker thread. */
void fb_publish_status(const struct fb_host *host, const struct fb_status *st, enum fb_link_state state,
		const struct fb_counters *c);

#endif
