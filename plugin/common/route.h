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

/* Validity checks shared with the configuration: 0 or -EINVAL. */
int fb_topic_filter_check(const char *filter);
int fb_topic_publish_check(const char *topic);

#endif
