/* flowmq-bridge: the YAML configuration (README.md, "Configuration reference"); both programs and
 * the CLI load it.
 *
 * fb_config_load() reads the file with libcyaml, applies the defaults (libcyaml 1.3.1 has none),
 * expands ${site_id}, converts durations and sizes, and validates everything. Every error is
 * reported through the logger as "FILE:LINE: KEY: what is wrong" (KEY is a path such as
 * edge_to_cloud[1].cloud) and makes the load fail. The returned struct is immutable: it may be
 * read from any thread.
 */
#ifndef FB_CONFIG_H
#define FB_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "log.h"

enum fb_on_full {
	FB_ON_FULL_DROP_OLDEST = 0, /* default */
	FB_ON_FULL_DROP_NEW,
	FB_ON_FULL_REJECT,
};

enum fb_sync {
	FB_SYNC_INTERVAL = 0, /* default, with sync_interval_ms = 100 */
	FB_SYNC_ALWAYS,
	FB_SYNC_NEVER,
};

struct fb_header {
	char *name;
	char *value; /* ${site_id} expanded */
};

struct fb_endpoint {
	char *url;  /* as written, e.g. mqtts://host:8883 */
	char *host; /* host name or address, without brackets */
	uint16_t port; /* default 8883 for mqtts, 1883 for mqtt */
	bool tls;   /* false only for mqtt:// (requires tls.allow_plaintext) */
};

/* What an edge_to_cloud rule does to send less (README.md, "Sending less"); all zero: every
 * message is forwarded. */
enum fb_agg_emit {
	FB_AGG_COUNT = 1 << 0,
	FB_AGG_MIN = 1 << 1,
	FB_AGG_MAX = 1 << 2,
	FB_AGG_AVG = 1 << 3,
	FB_AGG_SUM = 1 << 4,
	FB_AGG_LAST = 1 << 5,
	FB_AGG_ALL = (1 << 6) - 1,
};

struct fb_reduce_opts {
	uint64_t min_interval_ms; /* 0: none */
	bool on_change;           /* skip a payload equal to the last one forwarded */
	bool has_deadband;
	double deadband;          /* skip |value - last forwarded| <= deadband */
	char *field;              /* dotted path of the number in a JSON object; NULL: the payload */
	uint64_t heartbeat_ms;    /* 0: none */
	uint64_t window_ms;       /* aggregate window; 0: no aggregate */
	char *agg_field;          /* aggregate.field (or field); NULL: the payload is the number */
	unsigned emit;            /* FB_AGG_* of aggregate.emit, default all */
};

/* True when the rule keeps per-topic state (broker/reduce.c). */
static inline bool fb_reduce_active(const struct fb_reduce_opts *o)
{
	return o->min_interval_ms || o->on_change || o->has_deadband || o->window_ms;
}

struct fb_e2c_rule {
	char *local;  /* topic filter on the edge */
	char *cloud;  /* topic template, ${site_id} expanded; NULL when drop */
	int qos;      /* 0, 1 or 2; default 1 */
	bool retain_clear; /* retain: clear */
	bool drop;    /* drop: true */
	unsigned priority; /* the lane, 0 (highest) .. FB_LANES - 1 (record.h); default FB_LANE_DEFAULT */
	bool live_first;   /* live_first: true: new messages go ahead of the rule's backlog */
	struct fb_header *headers;
	size_t header_count;
	uint64_t ttl_ms; /* ttl: 0 when not set (spool.ttl applies) */
	unsigned line; /* line of the rule in the file */
	struct fb_reduce_opts reduce;
};

struct fb_c2e_rule {
	char *cloud;  /* topic filter in the cloud, ${site_id} expanded */
	char *local;  /* topic template on the edge */
	int qos;      /* default 1 */
	bool retain_clear; /* retain: keep (default) | clear */
	uint32_t max_payload; /* bytes, default 256KiB */
	unsigned line;
};

/* The largest cloud.poison_after: beyond it a record that breaks every connection would hold the
 * queue (and its reconnect back-off) for hours. */
#define FB_CONFIG_POISON_AFTER_MAX 100
/* The largest cloud.max_rate, messages per second. */
#define FB_CONFIG_MAX_RATE_MAX 10000000u

/* cloud.lane_min_share when it is not set: 5 %, in basis points. */
#define FB_LANE_MIN_SHARE_DEFAULT 500

struct fb_config {
	char *file;    /* path it was loaded from */
	char *site_id;

	struct {
		struct fb_endpoint *endpoints;
		size_t endpoint_count;
		char *client_id;            /* default flowmq-bridge-${site_id} */
		uint32_t keepalive_s;       /* default 30 */
		uint32_t session_expiry_s;  /* default 86400 */
		uint32_t connect_timeout_ms; /* default 10000 */
		uint32_t max_inflight;      /* default 64 */
		uint32_t reconnect_min_ms;  /* default 500 */
		uint32_t reconnect_max_ms;  /* default 60000 */
		char *status_topic;         /* NULL when not set */
		char *username;             /* NULL when not set */
		char *password_file;        /* NULL when not set */
		char *password;             /* contents of password_file, trailing newline removed */
		struct {
			char *ca_file;     /* NULL: system trust store */
			char *cert_file;   /* NULL or set together with key_file */
			char *key_file;
			int min_version;   /* 0x0304 (TLS1_3_VERSION, default) or 0x0303 */
			char *server_name; /* NULL: the endpoint host */
			bool verify;       /* default true */
			char *alpn;        /* NULL when not set */
			bool allow_plaintext; /* default false */
		} tls;
		/* A record that was the only one in flight, unacknowledged, when the connection broke
		 * this many times goes to dead letters (session.c: suspect_break()); default 3, 1 to
		 * FB_CONFIG_POISON_AFTER_MAX. */
		uint32_t poison_after;
		/* Share of the sends that lower lanes get while they hold messages, in basis points
		 * (1/10000); default FB_LANE_MIN_SHARE_DEFAULT (5 %), at most 5000. */
		uint32_t lane_min_share_bp;
		/* Caps on what the link process sends (token bucket, link/rate.h); 0: no cap. */
		uint32_t max_rate;          /* messages per second, 1 to FB_CONFIG_MAX_RATE_MAX */
		uint64_t max_bandwidth;     /* bytes per second (of the PUBLISH packets), 1KiB to 1TiB */
		bool topic_aliases;         /* default true */
	} cloud;

	struct {
		char *path;
		uint64_t max_size;        /* bytes, default 1GiB */
		enum fb_on_full on_full;
		enum fb_sync sync;
		uint32_t sync_interval_ms; /* with FB_SYNC_INTERVAL, default 100 */
		uint64_t ttl_ms;          /* 0: none */
		uint32_t max_tracked_topics; /* per-topic reduce state per rule kind, default 100000 */
	} spool;

	uint32_t status_interval_ms; /* default 10000 */
	uint32_t link_timeout_ms;    /* a link process without progress this long is replaced; default 10000 */

	struct fb_e2c_rule *e2c;
	size_t e2c_count;
	struct fb_c2e_rule *c2e;
	size_t c2e_count;

	/* The Prometheus text endpoint of the link process (link/prom.c); listen NULL: none. */
	struct {
		char *listen;  /* as written, for messages */
		char *host;    /* the numeric address, without brackets */
		uint16_t port;
		bool ipv6;
	} metrics;
};

/* Loads, defaults, expands and validates PATH. On success returns 0 and *out (caller frees with
 * fb_config_free()). On failure returns a negative errno (-ENOENT, -EACCES, -EINVAL, -ENOMEM),
 * *out stays NULL, and each problem has been logged at MOSQ_LOG_ERR. Warnings (for example an
 * echo loop between cloud_to_edge and edge_to_cloud) are logged at MOSQ_LOG_WARNING. Any thread. */
int fb_config_load(const char *path, const struct fb_logger *lg, struct fb_config **out);

/* Accepts NULL. */
void fb_config_free(struct fb_config *cfg);

/* Reads the secret FILE (cloud.auth.password_file) with the checks of fb_config_load(): a regular
 * file that group and others cannot write, at most 65535 bytes, not empty; one trailing newline
 * (and a carriage return before it) removed. Returns 0 and *out (caller frees), 1 and *out when
 * group or others may read the file (accepted: read-only secret mounts; fb_config_load() warns),
 * or a negative errno with *out NULL and ERR naming the file and the reason. Any thread; the link process calls it before
 * every connection attempt, so a rotated token is used at the next connect. */
int fb_config_read_secret(const char *file, char **out, char *err, size_t errlen);

/* True when A and B have the same cloud settings (endpoints, client_id, keepalive, auth, tls,
 * reconnect, caps, ...): what the link process connects with. The password counts by its file's
 * name only (its content is read at every attempt). Any thread. */
bool fb_config_cloud_equal(const struct fb_config *a, const struct fb_config *b);

/* Writes into BUF (LEN bytes, NUL-terminated, "" when none) the keys that differ between A and B
 * and that a reload cannot apply, comma-separated ("spool.path, cloud_to_edge"). Returns the
 * length written (0: none). Any thread. */
size_t fb_config_restart_keys(const struct fb_config *a, const struct fb_config *b, char *buf, size_t len);

/* "250ms 30s 5m 2h 7d" -> milliseconds. Returns 0 or -EINVAL. */
int fb_parse_duration_ms(const char *s, uint64_t *ms);

/* "512KiB 64MiB 2GiB" (and plain bytes, B, KiB, MiB, GiB, TiB) -> bytes. Returns 0 or -EINVAL. */
int fb_parse_size(const char *s, uint64_t *bytes);

#endif
