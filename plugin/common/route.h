/* flowmq-bridge: the route engine.
 *
 * Compiles the edge_to_cloud and cloud_to_edge rules of a configuration into a topic tree. A
 * lookup returns the first matching rule in file order and the rewritten topic. MQTT matching
 * semantics: '+' matches one level (possibly empty), a trailing '#' matches the parent and every
 * level below, and a filter starting with a wildcard never matches a topic starting with '$'.
 *
 * A compiled table is immutable: lookups may run in any thread at the same time. The broker
 * thread swaps tables on reload by pointer.
 */
#ifndef FB_ROUTE_H
#define FB_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct fb_routes;

enum fb_route_dir {
	FB_ROUTE_E2C = 0, /* match local topics against edge_to_cloud[].local */
	FB_ROUTE_C2E = 1, /* match cloud topics against cloud_to_edge[].cloud */
};

struct fb_route_result {
	int rule;     /* index into cfg->e2c or cfg->c2e */
	bool drop;    /* the rule says drop: true; topic stays NULL */
	char *topic;  /* rewritten topic, caller frees with free() */
};

/* Compiles both directions of CFG. CFG must outlive the table. Returns 0 or -ENOMEM/-EINVAL.
 * Caller frees with fb_routes_free(). Any thread. */
int fb_routes_build(const struct fb_config *cfg, struct fb_routes **out);

/* Accepts NULL. */
void fb_routes_free(struct fb_routes *r);

/* Looks TOPIC up. Returns 1 and fills RES on a match, 0 when no rule matches (no allocation is
 * made then), or a negative errno: -EINVAL when a rule matched (RES->rule and RES->drop are
 * filled, RES->topic is NULL) but the rewritten topic is not a valid topic (empty, or longer than
 * 65535 bytes), -ENOMEM. Any thread. */
int fb_route_match(const struct fb_routes *r, enum fb_route_dir dir, const char *topic,
		struct fb_route_result *res);

/* Whether every topic that DIR's rules can match starts with a byte set in FIRST (bit b of
 * FIRST[b / 64] for byte b): true and FIRST filled when no rule starts with a wildcard (or an
 * empty level); false otherwise. Lets a caller refuse most topics before a lookup. Any thread. */
bool fb_route_first_bytes(const struct fb_routes *r, enum fb_route_dir dir, uint64_t first[4]);

/* Fills TEMPLATE's wildcards from the levels of TOPIC matched by FILTER, as the rules do:
 * '+' takes one matched level, a trailing '#' the rest (possibly empty, dropping the '/' before
 * it). Returns a new string (free()) or NULL when FILTER does not match TOPIC. Any thread. */
char *fb_route_rewrite(const char *filter, const char *tmpl, const char *topic);

/* ---- checks: the one place topics, filters and templates are validated (the configuration
 * reports what these say). Any thread. ---- */

enum fb_topic_kind {
	FB_TOPIC_FILTER = 0,   /* a subscription filter: '+' a whole level, '#' the whole last level */
	FB_TOPIC_TEMPLATE = 1, /* a rule's rewrite template: written like a filter */
	FB_TOPIC_PUBLISH = 2,  /* a topic to publish to: no wildcards */
};

/* Checks S as a KIND with the broker's rules (not empty, at most 65535 bytes, valid UTF-8 without
 * control characters, wildcards as KIND allows). Returns 0, or -EINVAL and, when WHY is not NULL,
 * sets *WHY to the reason (a static string such as "must not be empty"; NULL on success). */
int fb_route_check_topic(const char *s, enum fb_topic_kind kind, const char **why);

/* fb_route_check_topic() as a filter or as a topic to publish to: 0 or -EINVAL. */
int fb_topic_filter_check(const char *filter);
int fb_topic_publish_check(const char *topic);

/* Checks that TMPL is a template for FILTER, both valid filters: a fixed topic (no wildcards), or
 * FILTER's wildcard levels in the same order. Returns 0, or -EINVAL and, when WHY is not NULL,
 * writes the reason there (at most WHY_LEN bytes with the NUL), such as "template has 2
 * wildcards, filter has 1". */
int fb_route_check_template(const char *filter, const char *tmpl, char *why, size_t why_len);

/* ---- header values: a rule's headers may hold, besides ${site_id} (expanded when the
 * configuration loads), the capture time of each message, expanded at capture. Any thread. ---- */

#define FB_HEADER_CAPTURED_AT "${captured_at}"       /* RFC 3339 UTC with ms: 2026-11-29T18:20:00.123Z */
#define FB_HEADER_CAPTURED_AT_MS "${captured_at_ms}" /* ms since the epoch: 1795976400123 */
#define FB_HEADER_VALUE_MAX 65535                   /* bytes of an expanded value (MQTT string) */

/* The length of the capture-time variable that S starts with (FB_HEADER_CAPTURED_AT or
 * FB_HEADER_CAPTURED_AT_MS), or 0 when S starts with neither. */
size_t fb_route_header_var(const char *s);

/* Checks VALUE (a header value, ${site_id} expanded already): every "${" must start a
 * capture-time variable, and the value with them expanded must fit in FB_HEADER_VALUE_MAX bytes.
 * Returns 0 when it holds no variable, 1 when it holds at least one (expand it per message with
 * fb_route_header_expand()), or -EINVAL and, when WHY is not NULL, *WHY (a static string). */
int fb_route_check_header(const char *value, const char **why);

/* Writes VALUE, checked by fb_route_check_header(), with its capture-time variables expanded for
 * CAPTURED_MS (wall-clock ms since the epoch) into OUT, CAP bytes at most (no NUL is written).
 * Returns the length, or -ENOSPC when CAP is too small. Allocates nothing. */
int fb_route_header_expand(const char *value, uint64_t captured_ms, char *out, size_t cap);

/* Writes CAPTURED_MS as RFC 3339 UTC with milliseconds ("2026-11-29T18:20:00.123Z", 24 bytes up
 * to the year 9999) into OUT (at least FB_RFC3339_MAX bytes, no NUL). Returns the length. */
#define FB_RFC3339_MAX 32
size_t fb_route_rfc3339(uint64_t captured_ms, char *out);

/* Whether some topic matches both valid filters A and B (MQTT rules: '#' also matches its parent
 * level; a filter starting with a wildcard never matches a topic starting with '$'). */
bool fb_route_filters_overlap(const char *a, const char *b);

#endif
