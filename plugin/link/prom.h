/* flowmq-bridge: the optional Prometheus text endpoint (metrics.listen) of the link process.
 *
 * libmicrohttpd serves GET /metrics on its own thread: each scrape reads the counters
 * (counters.h), the per-rule counters (rulectr.h) with relaxed atomic loads and a whole copy of
 * the status (status.h) under its sequence lock, straight from the shared region. It never takes
 * a lock of the cloud session or the spool, so a scrape cannot hold up the link's worker.
 */
#ifndef FB_PROM_H
#define FB_PROM_H

#include <stddef.h>
#include <stdint.h>

#include "log.h"
#include "shared.h"

struct fb_prom;

struct fb_prom_opts {
	const char *listen;     /* as configured, for messages */
	const char *host;       /* numeric IPv4 or IPv6 address */
	uint16_t port;
	int ipv6;               /* host is an IPv6 address */
	struct fb_shared *sh;   /* read only; outlives the endpoint */
	size_t nrules;          /* edge_to_cloud rules (capped at FB_RULECTR_SLOTS) */
	uint64_t started_ms;    /* fb_mono_ms() when the link process started: the uptime */
	const struct fb_logger *lg; /* any thread may log through it */
};

/* Renders the metrics of SH in the Prometheus text exposition format (version 0.0.4) into a
 * malloc'ed, NUL-terminated buffer *OUT of *LEN bytes (caller frees). Returns 0 or -ENOMEM. Any
 * thread. */
int fb_prom_render(struct fb_shared *sh, size_t nrules, uint64_t uptime_s, char **out, size_t *len);

/* Binds O->host:O->port and starts serving on libmicrohttpd's thread. On success *OUT holds the
 * endpoint (stop with fb_prom_stop()). A failure (the port is taken, say) is logged once at
 * MOSQ_LOG_ERR naming metrics.listen and returns a negative errno: the caller runs on without the
 * endpoint. Link process main thread. */
int fb_prom_start(const struct fb_prom_opts *o, struct fb_prom **out);

/* Stops serving and frees P; accepts NULL. Link process main thread. */
void fb_prom_stop(struct fb_prom *p);

#endif
