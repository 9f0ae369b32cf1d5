/* Unit tests of plugin/common/route.c: MQTT matching semantics, template rewriting, first-rule-wins,
 * drop rules, both directions and topic checks. That an unmatched lookup allocates nothing is
 * test-route-alloc.c (it replaces malloc, which sanitizer builds cannot). */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>

#include "route.h"

/* ---- helpers --------------------------------------------------------------------------------- */

/* A configuration holding only rules. Strings are borrowed (literals or test-owned buffers). */
struct rules {
	struct fb_config cfg;
	struct fb_e2c_rule e2c[1100];
	struct fb_c2e_rule c2e[1100];
};

static struct rules *rules_new(void)
{
	struct rules *r = calloc(1, sizeof(*r));
	ck_assert_ptr_nonnull(r);
	r->cfg.site_id = "site-A";
	r->cfg.e2c = r->e2c;
	r->cfg.c2e = r->c2e;
	return r;
}

static void e2c_add(struct rules *r, const char *local, const char *cloud, bool drop)
{
	ck_assert_uint_lt(r->cfg.e2c_count, 1100);
	struct fb_e2c_rule *e = &r->e2c[r->cfg.e2c_count++];
	e->local = (char *)local;
	e->cloud = (char *)cloud;
	e->drop = drop;
	e->qos = 1;
}

static void c2e_add(struct rules *r, const char *cloud, const char *local)
{
	ck_assert_uint_lt(r->cfg.c2e_count, 1100);
	struct fb_c2e_rule *c = &r->c2e[r->cfg.c2e_count++];
	c->cloud = (char *)cloud;
	c->local = (char *)local;
	c->qos = 1;
}

static struct fb_routes *build(const struct rules *r)
{
	struct fb_routes *routes = NULL;
	ck_assert_int_eq(fb_routes_build(&r->cfg, &routes), 0);
	ck_assert_ptr_nonnull(routes);
	return routes;
}

/* Asserts that TOPIC matches rule RULE in direction DIR and maps to EXPECTED (NULL: a drop). */
static void expect_match(const struct fb_routes *routes, enum fb_route_dir dir, const char *topic,
		int rule, const char *expected)
{
	struct fb_route_result res = { .rule = -1 };
	int rc = fb_route_match(routes, dir, topic, &res);
	ck_assert_msg(rc == 1, "'%s': expected a match, got %d", topic, rc);
	ck_assert_msg(res.rule == rule, "'%s': expected rule %d, got %d", topic, rule, res.rule);
	if(expected){
		ck_assert(!res.drop);
		ck_assert_ptr_nonnull(res.topic);
		ck_assert_str_eq(res.topic, expected);
	}else{
		ck_assert(res.drop);
		ck_assert_ptr_null(res.topic);
	}
	free(res.topic);
}

static void expect_no_match(const struct fb_routes *routes, enum fb_route_dir dir, const char *topic)
{
	struct fb_route_result res = { .rule = -1 };
	int rc = fb_route_match(routes, dir, topic, &res);
	ck_assert_msg(rc == 0, "'%s': expected no match, got %d (rule %d)", topic, rc, res.rule);
}

/* ---- the semantics table --------------------------------------------------------------------- */

struct match_case {
	const char *filter;
	const char *tmpl;
	const char *topic;
	const char *expected; /* NULL: no match */
};

static const struct match_case cases[] = {
	/* literal levels, byte-exact */
	{ "a/b/c", "x", "a/b/c", "x" },
	{ "a/b/c", "x", "a/b", NULL },
	{ "a/b/c", "x", "a/b/c/d", NULL },
	{ "a/b/c", "x", "A/b/c", NULL },
	{ "a/b", "x", "a/b/", NULL },
	{ "a/b", "x", "a/bc", NULL },
	/* '+' is exactly one level, possibly empty */
	{ "a/+/c", "x/+", "a/b/c", "x/b" },
	{ "a/+/c", "x/+", "a//c", "x/" },
	{ "a/+/c", "x/+", "a/c", NULL },
	{ "a/+/c", "x/+", "a/b/d/c", NULL },
	{ "a/+", "x/+/y", "a/", "x//y" },
	{ "a/+", "x/+/y", "a", NULL },
	{ "+", "x/+", "a", "x/a" },
	{ "+", "x/+", "/", NULL },
	{ "+/+", "+/+", "/", "/" },
	{ "/+", "x/+", "/a", "x/a" },
	{ "+/a", "+/b", "/a", "/b" },
	{ "a/+/+", "+/+/z", "a/b/c", "b/c/z" },
	{ "a/+/+", "+/+/z", "a//", "//z" },
	/* '#' matches the parent and every level below */
	{ "a/#", "x/#", "a", "x" },
	{ "a/#", "x/#", "a/", "x/" },
	{ "a/#", "x/#", "a/b/c", "x/b/c" },
	{ "a/#", "x/#", "a//", "x//" },
	{ "a/#", "x/#", "ab", NULL },
	{ "a/#", "x/#", "b/a", NULL },
	{ "a/#", "#", "a/b/c", "b/c" },
	{ "#", "x/#", "a/b", "x/a/b" },
	{ "#", "x/#", "/", "x//" },
	{ "#", "x/#", "a$", "x/a$" },
	/* '$' topics: never matched by a filter starting with a wildcard */
	{ "#", "x/#", "$SYS/x", NULL },
	{ "#", "#", "$", NULL },
	{ "+/x", "y/+", "$SYS/x", NULL },
	{ "+/#", "y/+/#", "$SYS/x", NULL },
	{ "+", "+", "$", NULL },
	{ "$SYS/#", "sys/#", "$SYS/x", "sys/x" },
	{ "$SYS/#", "sys/#", "$SYS", "sys" },
	{ "$SYS/+", "sys/+", "$SYS/x", "sys/x" },
	{ "$SYS/+", "sys/+", "$SYS/x/y", NULL },
	{ "+/$x", "y/+", "a/$x", "y/a" },
	{ "a/+", "y/+", "a/$x", "y/$x" },
	/* several wildcards, '#' possibly matching zero levels */
	{ "+/+/+/#", "o/+/+/+/#", "a/b/c", "o/a/b/c" },
	{ "+/+/+/#", "o/+/+/+/#", "a/b/c/d/e", "o/a/b/c/d/e" },
	{ "+/+/+/#", "o/+/+/+/#", "a/b", NULL },
	{ "a/+/c/#", "x/+/y/#", "a/b/c", "x/b/y" },
	{ "a/+/c/#", "x/+/y/#", "a/b/c/", "x/b/y/" },
	{ "a/+/c/#", "x/+/y/#", "a/b/c/d/e", "x/b/y/d/e" },
	{ "a/+/#", "+/#", "a/b", "b" },
	{ "a/+/#", "+/#", "a", NULL },
	/* the design's example */
	{ "local/telemetry/#", "edge/site-A/telemetry/#", "local/telemetry", "edge/site-A/telemetry" },
	{ "local/telemetry/#", "edge/site-A/telemetry/#", "local/telemetry/", "edge/site-A/telemetry/" },
	{ "local/telemetry/#", "edge/site-A/telemetry/#", "local/telemetry/a/b", "edge/site-A/telemetry/a/b" },
	{ "local/telemetry/#", "edge/site-A/telemetry/#", "local/telemetryX", NULL },
	{ "local/telemetry/#", "edge/site-A/telemetry/#", "Local/telemetry", NULL },
	/* empty levels are levels */
	{ "a//b", "x", "a//b", "x" },
	{ "a//b", "x", "a/b", NULL },
	{ "a//b", "x", "a///b", NULL },
	{ "/a", "x", "/a", "x" },
	{ "/a", "x", "a", NULL },
	{ "a/", "x", "a/", "x" },
	{ "a/", "x", "a", NULL },
	/* fixed templates */
	{ "sensors/+/temp", "fixed/topic", "sensors/1/temp", "fixed/topic" },
	{ "#", "fixed", "anything/at/all", "fixed" },
	/* UTF-8 is compared byte for byte */
	{ "capteurs/\xc3\xa9t\xc3\xa9/+", "c/+", "capteurs/\xc3\xa9t\xc3\xa9/x", "c/x" },
	{ "capteurs/\xc3\xa9t\xc3\xa9/+", "c/+", "capteurs/ete/x", NULL },
	{ "+/x", "\xe2\x82\xac/+", "\xc3\xa9/x", "\xe2\x82\xac/\xc3\xa9" },
};
#define CASE_COUNT ((int)(sizeof(cases) / sizeof(cases[0])))

/* One row of the table, through fb_route_rewrite() and through a one-rule table in each direction;
 * libmosquitto's own matcher must agree on match / no match. */
START_TEST(test_table_row)
{
	const struct match_case *c = &cases[_i];
	char *s = fb_route_rewrite(c->filter, c->tmpl, c->topic);

	if(c->expected){
		ck_assert_msg(s != NULL, "row %d: '%s' should match '%s'", _i, c->filter, c->topic);
		ck_assert_str_eq(s, c->expected);
	}else{
		ck_assert_msg(s == NULL, "row %d: '%s' should not match '%s' (gave '%s')", _i, c->filter,
				c->topic, s);
	}
	free(s);

	bool mosq = false;
	ck_assert_int_eq(mosquitto_topic_matches_sub(c->filter, c->topic, &mosq), MOSQ_ERR_SUCCESS);
	ck_assert_msg(mosq == (c->expected != NULL), "row %d: libmosquitto disagrees", _i);

	struct rules *r = rules_new();
	e2c_add(r, c->filter, c->tmpl, false);
	c2e_add(r, c->filter, c->tmpl);
	struct fb_routes *routes = build(r);
	for(int dir = FB_ROUTE_E2C; dir <= FB_ROUTE_C2E; dir++){
		if(c->expected){
			expect_match(routes, dir, c->topic, 0, c->expected);
		}else{
			expect_no_match(routes, dir, c->topic);
		}
	}
	fb_routes_free(routes);
	free(r);
}
END_TEST

START_TEST(test_table_has_40_cases)
{
	ck_assert_int_ge(CASE_COUNT, 40);
}
END_TEST

/* ---- rewriting ------------------------------------------------------------------------------- */

START_TEST(test_rewrite_several_plus_and_trailing_hash)
{
	char *s = fb_route_rewrite("site/+/dev/+/kind/+/#", "c/+/+/k/+/rest/#",
			"site/s1/dev/d2/kind/temp/x/y/z");
	ck_assert_str_eq(s, "c/s1/d2/k/temp/rest/x/y/z");
	free(s);

	s = fb_route_rewrite("site/+/dev/+/kind/+/#", "c/+/+/k/+/rest/#", "site/s1/dev/d2/kind/temp");
	ck_assert_str_eq(s, "c/s1/d2/k/temp/rest");
	free(s);

	s = fb_route_rewrite("site/+/dev/+/kind/+/#", "c/+/+/k/+/rest/#", "site//dev//kind//");
	ck_assert_str_eq(s, "c///k//rest/");
	free(s);
}
END_TEST

START_TEST(test_rewrite_hash_zero_levels_drops_slash)
{
	char *s = fb_route_rewrite("local/telemetry/#", "edge/site-A/telemetry/#", "local/telemetry");
	ck_assert_str_eq(s, "edge/site-A/telemetry");
	free(s);

	/* an empty trailing level is one level, kept */
	s = fb_route_rewrite("local/telemetry/#", "edge/site-A/telemetry/#", "local/telemetry/");
	ck_assert_str_eq(s, "edge/site-A/telemetry/");
	free(s);

	/* template "#" alone and zero levels: the empty string (fb_route_match refuses it below) */
	s = fb_route_rewrite("a/#", "#", "a");
	ck_assert_str_eq(s, "");
	free(s);
}
END_TEST

START_TEST(test_rewrite_rejects_mismatched_templates)
{
	/* wildcards that are not the filter's, in count, kind or order */
	ck_assert_ptr_null(fb_route_rewrite("a/+", "x/+/+", "a/b"));
	ck_assert_ptr_null(fb_route_rewrite("a/+/#", "x/#", "a/b/c"));
	ck_assert_ptr_null(fb_route_rewrite("a/+", "x/#", "a/b"));
	ck_assert_ptr_null(fb_route_rewrite("a/#", "x/+", "a/b"));
	ck_assert_ptr_null(fb_route_rewrite("+", "+/+", "a"));
	ck_assert_ptr_null(fb_route_rewrite(NULL, "x", "a"));
	ck_assert_ptr_null(fb_route_rewrite("a", NULL, "a"));
	ck_assert_ptr_null(fb_route_rewrite("a", "x", NULL));
}
END_TEST

START_TEST(test_fixed_template)
{
	struct rules *r = rules_new();
	e2c_add(r, "sensors/+/temp/#", "site-A/all-temperatures", false);
	c2e_add(r, "cloud/commands/#", "local/commands");
	struct fb_routes *routes = build(r);

	expect_match(routes, FB_ROUTE_E2C, "sensors/7/temp", 0, "site-A/all-temperatures");
	expect_match(routes, FB_ROUTE_E2C, "sensors/8/temp/a/b", 0, "site-A/all-temperatures");
	expect_match(routes, FB_ROUTE_C2E, "cloud/commands/reboot/now", 0, "local/commands");
	expect_match(routes, FB_ROUTE_C2E, "cloud/commands", 0, "local/commands");
	fb_routes_free(routes);
	free(r);
}
END_TEST

START_TEST(test_empty_rewritten_topic_is_einval)
{
	struct rules *r = rules_new();
	e2c_add(r, "a/#", "#", false);
	e2c_add(r, "b/+", "+", false);
	struct fb_routes *routes = build(r);
	struct fb_route_result res = { .rule = -1 };

	ck_assert_int_eq(fb_route_match(routes, FB_ROUTE_E2C, "a", &res), -EINVAL);
	ck_assert_int_eq(res.rule, 0);
	ck_assert_ptr_null(res.topic);
	ck_assert_int_eq(fb_route_match(routes, FB_ROUTE_E2C, "b/", &res), -EINVAL);
	ck_assert_int_eq(res.rule, 1);
	ck_assert_ptr_null(res.topic);
	expect_match(routes, FB_ROUTE_E2C, "a/x/y", 0, "x/y");
	expect_match(routes, FB_ROUTE_E2C, "b/z", 1, "z");
	fb_routes_free(routes);
	free(r);
}
END_TEST

/* The rewritten topic must stay within MQTT's 65535 bytes. */
START_TEST(test_too_long_rewritten_topic_is_einval)
{
	char *topic = malloc(65536);
	char *want = malloc(65536);
	ck_assert_ptr_nonnull(topic);
	ck_assert_ptr_nonnull(want);
	memset(topic, 'a', 65535);
	memcpy(topic, "t/", 2);
	topic[65531] = '\0'; /* "t/" + 65529 bytes: "prefix/" + 65529 is 65536 bytes */

	struct rules *r = rules_new();
	e2c_add(r, "t/#", "prefix/#", false);
	struct fb_routes *routes = build(r);
	struct fb_route_result res = { .rule = -1 };
	ck_assert_int_eq(fb_route_match(routes, FB_ROUTE_E2C, topic, &res), -EINVAL);
	ck_assert_int_eq(res.rule, 0);
	ck_assert_ptr_null(res.topic);

	topic[65530] = '\0'; /* one byte less: exactly 65535 */
	memset(want, 'a', 65535);
	memcpy(want, "prefix/", 7);
	want[65535] = '\0';
	expect_match(routes, FB_ROUTE_E2C, topic, 0, want);
	fb_routes_free(routes);
	free(r);
	free(topic);
	free(want);
}
END_TEST

/* ---- rule order, drop, directions ------------------------------------------------------------ */

START_TEST(test_first_rule_wins_over_later_more_specific)
{
	struct rules *r = rules_new();
	e2c_add(r, "local/#", "general/#", false);
	e2c_add(r, "local/telemetry/#", "specific/#", false);
	e2c_add(r, "local/telemetry/temp", "exact", false);
	struct fb_routes *routes = build(r);

	expect_match(routes, FB_ROUTE_E2C, "local/telemetry/temp", 0, "general/telemetry/temp");
	expect_match(routes, FB_ROUTE_E2C, "local/telemetry", 0, "general/telemetry");
	expect_match(routes, FB_ROUTE_E2C, "local", 0, "general");
	fb_routes_free(routes);
	free(r);
}
END_TEST

START_TEST(test_first_rule_wins_from_deeper_branch)
{
	struct rules *r = rules_new();
	/* rule 0 sits deep in the '+' branch; rules 1..3 are shallower or literal */
	e2c_add(r, "+/b/c/+/e", "deep/+/+", false);
	e2c_add(r, "a/b/c/d/e", "literal", false);
	e2c_add(r, "a/#", "shallow/#", false);
	e2c_add(r, "#", "all/#", false);
	/* rule 4 literal deep, rule 5 '+' shallow: a later rule never wins */
	e2c_add(r, "x/y/z/w", "xw", false);
	e2c_add(r, "x/+/z/w", "xplus/+", false);
	struct fb_routes *routes = build(r);

	expect_match(routes, FB_ROUTE_E2C, "a/b/c/d/e", 0, "deep/a/d");
	expect_match(routes, FB_ROUTE_E2C, "q/b/c/d/e", 0, "deep/q/d");
	expect_match(routes, FB_ROUTE_E2C, "a/b/c/d/f", 2, "shallow/b/c/d/f");
	expect_match(routes, FB_ROUTE_E2C, "a", 2, "shallow");
	expect_match(routes, FB_ROUTE_E2C, "x/y/z/w", 3, "all/x/y/z/w");
	expect_match(routes, FB_ROUTE_E2C, "b", 3, "all/b");
	expect_no_match(routes, FB_ROUTE_E2C, "$SYS/b/c/d/e");
	fb_routes_free(routes);
	free(r);

	/* and the other way round: the literal branch holds the first rule */
	r = rules_new();
	e2c_add(r, "x/y/z/w", "xw", false);
	e2c_add(r, "x/+/z/w", "xplus/+", false);
	e2c_add(r, "+/+/+/+", "four/+/+/+/+", false);
	routes = build(r);
	expect_match(routes, FB_ROUTE_E2C, "x/y/z/w", 0, "xw");
	expect_match(routes, FB_ROUTE_E2C, "x/q/z/w", 1, "xplus/q");
	expect_match(routes, FB_ROUTE_E2C, "x/q/z/v", 2, "four/x/q/z/v");
	fb_routes_free(routes);
	free(r);
}
END_TEST

START_TEST(test_duplicate_filters_first_wins)
{
	struct rules *r = rules_new();
	e2c_add(r, "a/+", "first/+", false);
	e2c_add(r, "a/+", "second/+", false);
	e2c_add(r, "b/#", "first/#", false);
	e2c_add(r, "b/#", "second/#", false);
	struct fb_routes *routes = build(r);
	expect_match(routes, FB_ROUTE_E2C, "a/1", 0, "first/1");
	expect_match(routes, FB_ROUTE_E2C, "b/1", 2, "first/1");
	fb_routes_free(routes);
	free(r);
}
END_TEST

START_TEST(test_drop_rules)
{
	struct rules *r = rules_new();
	e2c_add(r, "local/debug/#", NULL, true);
	e2c_add(r, "local/#", "edge/site-A/#", false);
	e2c_add(r, "other/+", "ignored/+", true); /* a drop rule's template is ignored */
	struct fb_routes *routes = build(r);

	expect_match(routes, FB_ROUTE_E2C, "local/debug", 0, NULL);
	expect_match(routes, FB_ROUTE_E2C, "local/debug/x/y", 0, NULL);
	expect_match(routes, FB_ROUTE_E2C, "local/debugx", 1, "edge/site-A/debugx");
	expect_match(routes, FB_ROUTE_E2C, "other/1", 2, NULL);
	expect_no_match(routes, FB_ROUTE_E2C, "other/1/2");
	fb_routes_free(routes);
	free(r);
}
END_TEST

START_TEST(test_cloud_to_edge_direction)
{
	struct rules *r = rules_new();
	e2c_add(r, "local/telemetry/#", "edge/site-A/telemetry/#", false);
	c2e_add(r, "cloud/commands/site-A/#", "local/commands/#");
	c2e_add(r, "cloud/config/+/set", "local/config/+");
	struct fb_routes *routes = build(r);

	expect_match(routes, FB_ROUTE_C2E, "cloud/commands/site-A/reboot", 0, "local/commands/reboot");
	expect_match(routes, FB_ROUTE_C2E, "cloud/commands/site-A", 0, "local/commands");
	expect_match(routes, FB_ROUTE_C2E, "cloud/config/pump/set", 1, "local/config/pump");
	expect_no_match(routes, FB_ROUTE_C2E, "cloud/commands/site-B/reboot");
	/* each direction has its own tree and its own numbering */
	expect_no_match(routes, FB_ROUTE_C2E, "local/telemetry/x");
	expect_no_match(routes, FB_ROUTE_E2C, "cloud/commands/site-A/reboot");
	expect_match(routes, FB_ROUTE_E2C, "local/telemetry/x", 0, "edge/site-A/telemetry/x");
	fb_routes_free(routes);
	free(r);
}
END_TEST

START_TEST(test_empty_tables_match_nothing)
{
	struct rules *r = rules_new();
	struct fb_routes *routes = build(r);
	expect_no_match(routes, FB_ROUTE_E2C, "a");
	expect_no_match(routes, FB_ROUTE_C2E, "a");
	fb_routes_free(routes);
	fb_routes_free(NULL);
	free(r);
}
END_TEST

START_TEST(test_match_rejects_bad_arguments)
{
	struct rules *r = rules_new();
	e2c_add(r, "#", "x/#", false);
	struct fb_routes *routes = build(r);
	struct fb_route_result res;
	ck_assert_int_eq(fb_route_match(NULL, FB_ROUTE_E2C, "a", &res), -EINVAL);
	ck_assert_int_eq(fb_route_match(routes, FB_ROUTE_E2C, NULL, &res), -EINVAL);
	ck_assert_int_eq(fb_route_match(routes, FB_ROUTE_E2C, "a", NULL), -EINVAL);
	ck_assert_int_eq(fb_route_match(routes, (enum fb_route_dir)2, "a", &res), -EINVAL);
	fb_routes_free(routes);
	free(r);
}
END_TEST

/* ---- building -------------------------------------------------------------------------------- */

static int build_one_e2c(const char *local, const char *cloud, bool drop)
{
	struct rules *r = rules_new();
	struct fb_routes *routes = (struct fb_routes *)r; /* must be reset to NULL on failure */
	e2c_add(r, "ok/#", "fine/#", false);
	e2c_add(r, local, cloud, drop);
	int rc = fb_routes_build(&r->cfg, &routes);
	if(rc < 0){
		ck_assert_ptr_null(routes);
	}
	fb_routes_free(routes);
	free(r);
	return rc;
}

START_TEST(test_build_rejects_bad_rules)
{
	ck_assert_int_eq(build_one_e2c("a/+", "x/+", false), 0);
	ck_assert_int_eq(build_one_e2c("a/#", NULL, true), 0);
	ck_assert_int_eq(build_one_e2c("a/b+", "x", false), -EINVAL);
	ck_assert_int_eq(build_one_e2c("a/#/b", "x/#/b", false), -EINVAL);
	ck_assert_int_eq(build_one_e2c("", "x", false), -EINVAL);
	ck_assert_int_eq(build_one_e2c(NULL, "x", false), -EINVAL);
	ck_assert_int_eq(build_one_e2c("a/#", NULL, false), -EINVAL);
	ck_assert_int_eq(build_one_e2c("a/+", "fixed", false), 0);
	ck_assert_int_eq(build_one_e2c("a/+/#", "x/+/#", false), 0);
	ck_assert_int_eq(build_one_e2c("a/+", "x/#", false), -EINVAL);
	ck_assert_int_eq(build_one_e2c("a/+/#", "x/#/+", false), -EINVAL);
	ck_assert_int_eq(build_one_e2c("a/+/#", "x/+", false), -EINVAL);
	ck_assert_int_eq(build_one_e2c("a", "x/+", false), -EINVAL);
	ck_assert_int_eq(build_one_e2c("a", "x+", false), -EINVAL);
	ck_assert_int_eq(build_one_e2c("a", "", false), -EINVAL);
	ck_assert_int_eq(build_one_e2c("bad\xff", NULL, true), -EINVAL);

	struct rules *r = rules_new();
	struct fb_routes *routes = NULL;
	c2e_add(r, "cloud/+", "local/#");
	ck_assert_int_eq(fb_routes_build(&r->cfg, &routes), -EINVAL);
	ck_assert_ptr_null(routes);
	ck_assert_int_eq(fb_routes_build(NULL, &routes), -EINVAL);
	ck_assert_int_eq(fb_routes_build(&r->cfg, NULL), -EINVAL);
	free(r);
}
END_TEST

/* ---- topic checks ---------------------------------------------------------------------------- */

START_TEST(test_topic_checks)
{
	const char *good_filters[] = { "a", "a/b", "+", "#", "a/+/b", "a/#", "+/+/#", "/", "//", "a//b",
		"$SYS/#", "\xc3\xa9t\xc3\xa9/+" };
	const char *bad_filters[] = { "", "a+", "a/b#", "#/a", "a/#/b", "a/++", "+a/b", "\xc3",
		"\xc0\x80", "a\x01" };
	const char *good_topics[] = { "a", "a/b", "/", "//", "a//b", "$SYS/x", "\xc3\xa9t\xc3\xa9" };
	const char *bad_topics[] = { "", "+", "#", "a/+", "a/#", "a+b", "a/b#", "\xff", "a\x01" };

	for(size_t i = 0; i < sizeof(good_filters) / sizeof(*good_filters); i++){
		ck_assert_msg(fb_topic_filter_check(good_filters[i]) == 0, "%s", good_filters[i]);
	}
	for(size_t i = 0; i < sizeof(bad_filters) / sizeof(*bad_filters); i++){
		ck_assert_msg(fb_topic_filter_check(bad_filters[i]) == -EINVAL, "%s", bad_filters[i]);
	}
	for(size_t i = 0; i < sizeof(good_topics) / sizeof(*good_topics); i++){
		ck_assert_msg(fb_topic_publish_check(good_topics[i]) == 0, "%s", good_topics[i]);
	}
	for(size_t i = 0; i < sizeof(bad_topics) / sizeof(*bad_topics); i++){
		ck_assert_msg(fb_topic_publish_check(bad_topics[i]) == -EINVAL, "%s", bad_topics[i]);
	}
	ck_assert_int_eq(fb_topic_filter_check(NULL), -EINVAL);
	ck_assert_int_eq(fb_topic_publish_check(NULL), -EINVAL);

	/* 65535 bytes is the limit */
	char *big = malloc(65537);
	ck_assert_ptr_nonnull(big);
	memset(big, 'a', 65536);
	big[65535] = '\0';
	ck_assert_int_eq(fb_topic_filter_check(big), 0);
	ck_assert_int_eq(fb_topic_publish_check(big), 0);
	big[65535] = 'a';
	big[65536] = '\0';
	ck_assert_int_eq(fb_topic_filter_check(big), -EINVAL);
	ck_assert_int_eq(fb_topic_publish_check(big), -EINVAL);
	free(big);
}
END_TEST

/* The reasons a topic is refused: the configuration prints them as they are. */
START_TEST(test_topic_check_reasons)
{
#define NOT_WHOLE "'+' must be a whole level and '#' the whole last level"
	static const struct {
		const char *s;
		enum fb_topic_kind kind;
		const char *why; /* NULL: valid */
	} cases[] = {
		{ "", FB_TOPIC_FILTER, "must not be empty" },
		{ "", FB_TOPIC_TEMPLATE, "must not be empty" },
		{ NULL, FB_TOPIC_PUBLISH, "must not be empty" },
		{ "\xff", FB_TOPIC_TEMPLATE, "not valid UTF-8" },
		{ "a\x01", FB_TOPIC_FILTER, "not valid UTF-8" },
		{ "\xc0\x80", FB_TOPIC_PUBLISH, "not valid UTF-8" },
		{ "a/+", FB_TOPIC_PUBLISH, "wildcards are not allowed here" },
		{ "#", FB_TOPIC_PUBLISH, "wildcards are not allowed here" },
		{ "a/#/b", FB_TOPIC_FILTER, NOT_WHOLE },
		{ "a+", FB_TOPIC_TEMPLATE, NOT_WHOLE },
		{ "a/+", FB_TOPIC_FILTER, NULL },
		{ "a/+/#", FB_TOPIC_TEMPLATE, NULL },
		{ "a/b", FB_TOPIC_PUBLISH, NULL },
		{ "$SYS/x", FB_TOPIC_PUBLISH, NULL },
	};

	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		const char *want = cases[i].why;
		const char *why = "unset";
		int rc = fb_route_check_topic(cases[i].s, cases[i].kind, &why);

		ck_assert_msg(rc == (want ? -EINVAL : 0), "case %zu: rc %d", i, rc);
		if(want){
			ck_assert_msg(why && strcmp(why, want) == 0, "case %zu: '%s'", i, why ? why : "(null)");
		}else{
			ck_assert_msg(why == NULL, "case %zu: '%s'", i, why);
		}
		ck_assert_int_eq(fb_route_check_topic(cases[i].s, cases[i].kind, NULL), rc);
	}

	char *big = malloc(65537);
	const char *why = NULL;
	ck_assert_ptr_nonnull(big);
	memset(big, 'a', 65536);
	big[65536] = '\0';
	ck_assert_int_eq(fb_route_check_topic(big, FB_TOPIC_PUBLISH, &why), -EINVAL);
	ck_assert_str_eq(why, "longer than 65535 bytes");
	big[65535] = '\0';
	ck_assert_int_eq(fb_route_check_topic(big, FB_TOPIC_FILTER, &why), 0);
	ck_assert_ptr_null(why);
	free(big);
#undef NOT_WHOLE
}
END_TEST

/* A template is a fixed topic or has its filter's wildcard levels in order; the reasons name the
 * counts or both lists. */
START_TEST(test_template_check_reasons)
{
	static const struct {
		const char *filter, *tmpl, *why; /* why NULL: valid */
	} cases[] = {
		{ "a/+", "x/+", NULL },
		{ "a/+", "fixed", NULL },
		{ "a/+/#", "x/+/y/#", NULL },
		{ "#", "#", NULL },
		{ "a/+", "x/+/+", "template has 2 wildcards, filter has 1" },
		{ "a/+/#", "x/#", "template has 1 wildcard, filter has 2" },
		{ "a", "x/+", "template has 1 wildcard, filter has 0" },
		{ "a/+/#", "x/+/+", "template wildcards (+,+) do not match filter wildcards (+,#)" },
		{ "a/+", "x/#", "template wildcards (#) do not match filter wildcards (+)" },
		{ "a/#/b", "x", "filter is not a valid topic filter" },
		{ "", "x", "filter is not a valid topic filter" },
		{ "a/+", "x+", "template is not a valid topic filter" },
		{ "a/+", "", "template is not a valid topic filter" },
	};
	char why[256];

	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		int rc;

		strcpy(why, "unset");
		rc = fb_route_check_template(cases[i].filter, cases[i].tmpl, why, sizeof(why));
		ck_assert_msg(rc == (cases[i].why ? -EINVAL : 0), "case %zu: rc %d", i, rc);
		ck_assert_str_eq(why, cases[i].why ? cases[i].why : "unset");
		ck_assert_int_eq(fb_route_check_template(cases[i].filter, cases[i].tmpl, NULL, 0), rc);
	}

	/* The reason is cut to the buffer. */
	ck_assert_int_eq(fb_route_check_template("a/+", "x/+/+", why, 10), -EINVAL);
	ck_assert_str_eq(why, "template ");

	/* The wildcard lists stop at 31 entries (61 bytes); the counts stay exact. */
	char filter[128] = "", tmpl[128] = "", list[64] = "+";
	for(int i = 0; i < 40; i++){
		strcat(filter, i ? "/+" : "+");
		strcat(tmpl, i == 39 ? "/#" : i ? "/+" : "+");
	}
	for(int i = 1; i < 31; i++){
		strcat(list, ",+");
	}
	char want[256];
	snprintf(want, sizeof(want), "template wildcards (%s) do not match filter wildcards (%s)", list, list);
	ck_assert_int_eq(fb_route_check_template(filter, tmpl, why, sizeof(why)), -EINVAL);
	ck_assert_str_eq(why, want);
	ck_assert_int_eq(fb_route_check_template(filter, "x/+", why, sizeof(why)), -EINVAL);
	ck_assert_str_eq(why, "template has 1 wildcard, filter has 40");
}
END_TEST

/* fb_route_filters_overlap(): the MQTT rules, whichever filter comes first. */
START_TEST(test_filters_overlap)
{
	static const struct {
		const char *a, *b;
		bool overlap;
	} cases[] = {
		{ "a/b", "a/b", true },
		{ "a/b", "a/c", false },
		{ "a/+", "a/b", true },
		{ "a/+", "a", false },
		{ "a/+", "a/", true },   /* '+' matches the empty level */
		{ "a/#", "a", true },    /* '#' matches its parent */
		{ "a/#", "a/b/c", true },
		{ "a/#", "b/#", false },
		{ "a", "a/", false },
		{ "a/+/c", "a/b", false },
		{ "+", "/", false },     /* "/" has two levels */
		{ "+/#", "/", true },
		{ "#", "x", true },
		{ "#", "$SYS/x", false }, /* a wildcard first level never matches '$' topics */
		{ "+/x", "$SYS/x", false },
		{ "$SYS/#", "$SYS/x", true },
		{ "$SYS/+", "$SYS/x/y", false },
	};

	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		ck_assert_msg(fb_route_filters_overlap(cases[i].a, cases[i].b) == cases[i].overlap,
				"'%s' '%s'", cases[i].a, cases[i].b);
		ck_assert_msg(fb_route_filters_overlap(cases[i].b, cases[i].a) == cases[i].overlap,
				"'%s' '%s'", cases[i].b, cases[i].a);
	}
}
END_TEST

/* ---- scale ----------------------------------------------------------------------------------- */

START_TEST(test_500_rules_every_lookup_correct)
{
	enum { N = 500 };
	static char local[N][32], cloud[N][32];
	struct rules *r = rules_new();
	char topic[128], want[128];

	for(int i = 0; i < N; i++){
		snprintf(local[i], sizeof(local[i]), "site/%d/+/temp/#", i);
		snprintf(cloud[i], sizeof(cloud[i]), "cloud/%d/+/t/#", i);
		e2c_add(r, local[i], cloud[i], false);
	}
	e2c_add(r, "site/+/+/temp/#", "other/+/+/#", false); /* rule 500 */
	e2c_add(r, "site/#", NULL, true);                     /* rule 501 */
	struct fb_routes *routes = build(r);

	for(int i = 0; i < N; i++){
		snprintf(topic, sizeof(topic), "site/%d/dev%d/temp", i, i % 7);
		snprintf(want, sizeof(want), "cloud/%d/dev%d/t", i, i % 7);
		expect_match(routes, FB_ROUTE_E2C, topic, i, want);

		snprintf(topic, sizeof(topic), "site/%d/d/temp/a/%d", i, i);
		snprintf(want, sizeof(want), "cloud/%d/d/t/a/%d", i, i);
		expect_match(routes, FB_ROUTE_E2C, topic, i, want);

		snprintf(topic, sizeof(topic), "site/%d/d/hum", i);
		expect_match(routes, FB_ROUTE_E2C, topic, 501, NULL);

		snprintf(topic, sizeof(topic), "site/%d/d/temp", i + N);
		snprintf(want, sizeof(want), "other/%d/d", i + N);
		expect_match(routes, FB_ROUTE_E2C, topic, 500, want);

		snprintf(topic, sizeof(topic), "site/%d", i);
		expect_match(routes, FB_ROUTE_E2C, topic, 501, NULL);

		snprintf(topic, sizeof(topic), "sites/%d/d/temp", i);
		expect_no_match(routes, FB_ROUTE_E2C, topic);
	}
	fb_routes_free(routes);

	/* the same rules behind a catch-all: the catch-all always wins */
	struct rules *r2 = rules_new();
	e2c_add(r2, "site/+/+/temp/#", "first/+/+/#", false);
	for(int i = 0; i < N; i++){
		e2c_add(r2, local[i], cloud[i], false);
	}
	routes = build(r2);
	for(int i = 0; i < N; i++){
		snprintf(topic, sizeof(topic), "site/%d/x/temp/y", i);
		snprintf(want, sizeof(want), "first/%d/x/y", i);
		expect_match(routes, FB_ROUTE_E2C, topic, 0, want);
	}
	fb_routes_free(routes);
	free(r);
	free(r2);
}
END_TEST

/* ---- randomized cross-check ------------------------------------------------------------------ */

static uint32_t rng_state;

static uint32_t rng(uint32_t n)
{
	rng_state = rng_state * 1664525u + 1013904223u;
	return (rng_state >> 8) % n;
}

static bool random_no_plus; /* random filters without '+', and with '#' more often */

static void random_topic(char *buf, bool filter)
{
	static const char *levels[] = { "a", "b", "", "ab", "$s" };
	int count = 1 + (int)rng(5);
	char *o = buf;


	for(int i = 0; i < count; i++){
		const char *l;
		if(filter && i == count - 1 && rng(random_no_plus ? 2 : 6) == 0){
			l = "#";
		}else if(filter && !random_no_plus && rng(4) == 0){
			l = "+";
		}else{
			l = levels[rng(i == 0 ? 5 : 4)]; /* "$s" only as a first level */
		}
		o += sprintf(o, "%s%s", i ? "/" : "", l);
	}
	if(buf[0] == '\0'){
		strcpy(buf, "/"); /* "" is not a topic */
	}
}

/* Random rule sets and topics: the tree's answer must be the first rule, in order, that
 * fb_route_rewrite() and libmosquitto's matcher both say matches. */
START_TEST(test_tree_agrees_with_linear_scan)
{
	enum { RULES = 40, TOPICS = 400, ROUNDS = 60 };
	static char filters[RULES][64];
	static char tmpls[RULES][80];
	char topic[64];

	rng_state = 12345;
	for(int round = 0; round < ROUNDS; round++){
		/* Every other round without '+': the lookup's single-path case, and more rules of the
		 * "F/#" -> "T/#" shape that fb_route_match() rewrites by swapping the prefix. */
		random_no_plus = round % 2;
		struct rules *r = rules_new();
		for(int i = 0; i < RULES; i++){
			random_topic(filters[i], true);
			if(i % 5 == 4){
				snprintf(tmpls[i], sizeof(tmpls[i]), "fixed/%d", i);
			}else{
				snprintf(tmpls[i], sizeof(tmpls[i]), "r%d/%.40s", i, filters[i]);
			}
			e2c_add(r, filters[i], tmpls[i], false);
			c2e_add(r, filters[i], tmpls[i]);
		}
		struct fb_routes *routes = build(r);
		for(int k = 0; k < TOPICS; k++){
			random_topic(topic, false);
			int first = -1;
			char *want = NULL;
			for(int i = 0; i < RULES && first < 0; i++){
				bool mosq = false;
				ck_assert_int_eq(mosquitto_topic_matches_sub(filters[i], topic, &mosq), 0);
				want = fb_route_rewrite(filters[i], tmpls[i], topic);
				ck_assert_msg(mosq == (want != NULL), "'%s' vs '%s'", filters[i], topic);
				if(want){
					first = i;
				}
			}
			for(int dir = FB_ROUTE_E2C; dir <= FB_ROUTE_C2E; dir++){
				if(first < 0){
					expect_no_match(routes, dir, topic);
				}else{
					expect_match(routes, dir, topic, first, want);
				}
			}
			free(want);
		}
		fb_routes_free(routes);
		free(r);
	}
}
END_TEST

/* A topic FILTER matches: each '+' takes level "q", a '#' the levels "q/r". */
static void topic_for(const char *filter, char *buf)
{
	char *o = buf;

	for(const char *f = filter; *f; f++){
		if((*f == '+' || *f == '#') && (f == filter || f[-1] == '/') && (f[1] == '/' || f[1] == '\0')){
			o += sprintf(o, "%s", *f == '+' ? "q" : "q/r");
		}else{
			*o++ = *f;
		}
	}
	*o = '\0';
}

/* Random filters and templates: fb_route_check_template() accepts exactly the templates that
 * fb_route_rewrite() can fill (a one-rule table builds exactly then); two filters that a random
 * topic both match overlap. */
START_TEST(test_template_check_agrees_with_rewrite)
{
	char filter[64], tmpl[64], other[64], topic[96];
	size_t accepted = 0, refused = 0, overlaps = 0;

	rng_state = 777;
	for(int i = 0; i < 20000; i++){
		random_no_plus = i % 3 == 0;
		random_topic(filter, true);
		random_topic(tmpl, true);
		topic_for(filter, topic);
		bool ok = fb_route_check_template(filter, tmpl, NULL, 0) == 0;
		char *s = fb_route_rewrite(filter, tmpl, topic);
		ck_assert_msg(ok == (s != NULL), "'%s' -> '%s' on '%s': check %d", filter, tmpl, topic, ok);
		free(s);
		if(i % 100 == 0){
			ck_assert_int_eq(build_one_e2c(filter, tmpl, false), ok ? 0 : -EINVAL);
		}
		ok ? accepted++ : refused++;

		random_topic(other, true);
		random_topic(topic, false);
		bool ma = false, mb = false;
		ck_assert_int_eq(mosquitto_topic_matches_sub(filter, topic, &ma), 0);
		ck_assert_int_eq(mosquitto_topic_matches_sub(other, topic, &mb), 0);
		if(ma && mb){
			ck_assert_msg(fb_route_filters_overlap(filter, other), "'%s' '%s' both match '%s'", filter, other, topic);
			overlaps++;
		}
	}
	/* Both outcomes occur often: the comparison is not vacuous. */
	ck_assert_uint_gt(accepted, 2000);
	ck_assert_uint_gt(refused, 2000);
	ck_assert_uint_gt(overlaps, 100);
}
END_TEST

static bool first_byte_set(const uint64_t first[4], unsigned char b)
{
	return (first[b >> 6] >> (b & 63)) & 1;
}

/* fb_route_first_bytes(): exactly the first bytes of the root levels, and only when no filter
 * starts with a wildcard; every topic a rule matches starts with one of them. */
START_TEST(test_first_bytes)
{
	struct rules *r = rules_new();
	uint64_t first[4];

	e2c_add(r, "local/telemetry/#", "edge/telemetry/#", false);
	e2c_add(r, "local/debug/#", NULL, true);
	e2c_add(r, "plant/+/x", "p/+/x", false);
	e2c_add(r, "/lead", "lead", false);
	e2c_add(r, "$SYS/x", "sys/x", false);
	c2e_add(r, "+/cmd", "local/cmd");
	struct fb_routes *routes = build(r);

	ck_assert(fb_route_first_bytes(routes, FB_ROUTE_E2C, first));
	for(int b = 0; b < 256; b++){
		ck_assert_msg(first_byte_set(first, (unsigned char)b) == (b == 'l' || b == 'p' || b == '/' || b == '$'),
				"byte %d", b);
	}
	uint64_t c2e_first[4];
	ck_assert(!fb_route_first_bytes(routes, FB_ROUTE_C2E, c2e_first));
	/* Every topic a rule matches passes the filter; the others are refused by it or the lookup. */
	static const char *const topics[] = { "local/telemetry", "local/telemetry/a/b", "local/debug/x",
			"plant/1/x", "plant//x", "/lead", "$SYS/x", "locale", "plant/1/y", "lead", "", "/",
			"x/local/telemetry/a" };
	for(size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++){
		struct fb_route_result res = { .rule = -1 };
		int rc = fb_route_match(routes, FB_ROUTE_E2C, topics[i], &res);
		if(rc != 0){
			ck_assert_msg(first_byte_set(first, (unsigned char)topics[i][0]), "%s", topics[i]);
		}
		free(res.topic);
	}
	fb_routes_free(routes);
	free(r);

	r = rules_new();
	e2c_add(r, "a/b", "a/b", false);
	e2c_add(r, "#", "all/#", false);
	routes = build(r);
	ck_assert(!fb_route_first_bytes(routes, FB_ROUTE_E2C, first));
	fb_routes_free(routes);
	free(r);

	r = rules_new(); /* no rules: nothing can match, so no byte is set */
	routes = build(r);
	ck_assert(fb_route_first_bytes(routes, FB_ROUTE_E2C, first));
	for(int b = 0; b < 256; b++){
		ck_assert(!first_byte_set(first, (unsigned char)b));
	}
	fb_routes_free(routes);
	free(r);
}
END_TEST

/* ---- header values with the capture time ---- */

/* Expands VALUE for MS into a fresh string (the test frees it). */
static char *expand_str(const char *value, uint64_t ms)
{
	char buf[256];
	int n = fb_route_header_expand(value, ms, buf, sizeof(buf));

	ck_assert_int_ge(n, 0);
	return strndup(buf, (size_t)n);
}

START_TEST(test_header_expands_captured_at_and_ms)
{
	static const struct {
		uint64_t ms;
		const char *rfc;
	} dates[] = {
		{ 0, "1970-01-01T00:00:00.000Z" },
		{ 1795976400123ull, "2026-11-29T18:20:00.123Z" },
		{ 951782400000ull, "2000-02-29T00:00:00.000Z" },    /* leap day of a year divisible by 400 */
		{ 951868799999ull, "2000-02-29T23:59:59.999Z" },
		{ 1709251199999ull, "2024-02-29T23:59:59.999Z" },
		{ 4107542400000ull, "2100-03-01T00:00:00.000Z" },   /* 2100 is no leap year */
		{ 253402300799999ull, "9999-12-31T23:59:59.999Z" },
	};
	char *v;

	for(size_t i = 0; i < sizeof(dates) / sizeof(dates[0]); i++){
		char want[64];

		v = expand_str("${captured_at}", dates[i].ms);
		ck_assert_str_eq(v, dates[i].rfc);
		free(v);
		snprintf(want, sizeof(want), "%llu", (unsigned long long)dates[i].ms);
		v = expand_str("${captured_at_ms}", dates[i].ms);
		ck_assert_str_eq(v, want);
		free(v);
	}
	v = expand_str("at ${captured_at} = ${captured_at_ms}ms; ${captured_at}", 1795976400123ull);
	ck_assert_str_eq(v, "at 2026-11-29T18:20:00.123Z = 1795976400123ms; 2026-11-29T18:20:00.123Z");
	free(v);
	v = expand_str("plain $ {x} $captured_at", 5);
	ck_assert_str_eq(v, "plain $ {x} $captured_at");
	free(v);
	v = expand_str("", 5);
	ck_assert_str_eq(v, "");
	free(v);
}
END_TEST

/* fb_route_rfc3339() agrees with gmtime_r() on random instants from 1970 to 9999. */
START_TEST(test_header_rfc3339_agrees_with_gmtime)
{
	unsigned seed = 4242;

	for(int i = 0; i < 200000; i++){
		uint64_t ms = (((uint64_t)rand_r(&seed) << 31) ^ (uint64_t)rand_r(&seed)) % 253402300800000ull;
		time_t t = (time_t)(ms / 1000);
		struct tm tm;
		char want[64], got[FB_RFC3339_MAX];
		size_t n;

		if(i < 1000){
			ms = (uint64_t)i * 86400000ull * 365 / 4 + (uint64_t)i; /* near year and day boundaries */
			t = (time_t)(ms / 1000);
		}
		ck_assert_ptr_nonnull(gmtime_r(&t, &tm));
		snprintf(want, sizeof(want), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
				tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
		n = fb_route_rfc3339(ms, got);
		ck_assert_uint_eq(n, 24);
		ck_assert_msg(memcmp(got, want, 24) == 0, "%llu: %.24s, expected %s", (unsigned long long)ms, got, want);
	}
}
END_TEST

START_TEST(test_header_expand_stops_at_the_buffer_end)
{
	char buf[32];

	memset(buf, 'x', sizeof(buf));
	ck_assert_int_eq(fb_route_header_expand("${captured_at}", 0, buf, 23), -ENOSPC);
	ck_assert_int_eq(fb_route_header_expand("${captured_at}", 0, buf, 24), 24);
	ck_assert_int_eq(buf[24], 'x');
	ck_assert_int_eq(fb_route_header_expand("abc", 0, buf, 2), -ENOSPC);
	ck_assert_int_eq(fb_route_header_expand("${captured_at_ms}", 12345, buf, 4), -ENOSPC);
	ck_assert_int_eq(fb_route_header_expand("${captured_at_ms}", 12345, buf, 5), 5);
	ck_assert_mem_eq(buf, "12345", 5);
}
END_TEST

START_TEST(test_header_check)
{
	const char *why = (const char *)1;
	char *big;

	ck_assert_int_eq(fb_route_check_header("site-A", &why), 0);
	ck_assert_ptr_null(why);
	ck_assert_int_eq(fb_route_check_header("", NULL), 0);
	ck_assert_int_eq(fb_route_check_header("$SYS {x}", NULL), 0);
	ck_assert_int_eq(fb_route_check_header("${captured_at}", &why), 1);
	ck_assert_ptr_null(why);
	ck_assert_int_eq(fb_route_check_header("t=${captured_at_ms}", NULL), 1);
	ck_assert_int_eq(fb_route_check_header("${captured}", &why), -EINVAL);
	ck_assert_str_eq(why, "unknown variable (header values may use ${site_id}, ${captured_at} and ${captured_at_ms})");
	ck_assert_int_eq(fb_route_check_header("${captured_at", &why), -EINVAL);
	ck_assert_str_eq(why, "unterminated '${'");
	ck_assert_uint_eq(fb_route_header_var("${captured_at}x"), 14);
	ck_assert_uint_eq(fb_route_header_var("${captured_at_ms}"), 17);
	ck_assert_uint_eq(fb_route_header_var("${captured_at_m}"), 0);
	ck_assert_uint_eq(fb_route_header_var("$captured_at"), 0);

	/* 65,535 bytes once expanded at most: 65,511 + 24 fit, 65,512 + 24 do not. */
	big = malloc(65536 + 32);
	memset(big, 'a', 65511);
	strcpy(big + 65511, "${captured_at}");
	ck_assert_int_eq(fb_route_check_header(big, NULL), 1);
	memset(big, 'a', 65512);
	strcpy(big + 65512, "${captured_at}");
	ck_assert_int_eq(fb_route_check_header(big, &why), -EINVAL);
	ck_assert_str_eq(why, "longer than 65535 bytes once expanded");
	memset(big, 'a', 65536);
	big[65536] = '\0';
	ck_assert_int_eq(fb_route_check_header(big, NULL), -EINVAL);
	free(big);
}
END_TEST

static Suite *route_suite(void)
{
	Suite *s = suite_create("route");
	TCase *tc;

	tc = tcase_create("semantics");
	tcase_add_loop_test(tc, test_table_row, 0, CASE_COUNT);
	tcase_add_test(tc, test_table_has_40_cases);
	suite_add_tcase(s, tc);

	tc = tcase_create("rewrite");
	tcase_add_test(tc, test_rewrite_several_plus_and_trailing_hash);
	tcase_add_test(tc, test_rewrite_hash_zero_levels_drops_slash);
	tcase_add_test(tc, test_rewrite_rejects_mismatched_templates);
	tcase_add_test(tc, test_fixed_template);
	tcase_add_test(tc, test_empty_rewritten_topic_is_einval);
	tcase_add_test(tc, test_too_long_rewritten_topic_is_einval);
	suite_add_tcase(s, tc);

	tc = tcase_create("rules");
	tcase_add_test(tc, test_first_rule_wins_over_later_more_specific);
	tcase_add_test(tc, test_first_rule_wins_from_deeper_branch);
	tcase_add_test(tc, test_duplicate_filters_first_wins);
	tcase_add_test(tc, test_drop_rules);
	tcase_add_test(tc, test_cloud_to_edge_direction);
	tcase_add_test(tc, test_empty_tables_match_nothing);
	tcase_add_test(tc, test_match_rejects_bad_arguments);
	tcase_add_test(tc, test_first_bytes);
	tcase_add_test(tc, test_build_rejects_bad_rules);
	suite_add_tcase(s, tc);

	tc = tcase_create("checks");
	tcase_add_test(tc, test_topic_checks);
	tcase_add_test(tc, test_topic_check_reasons);
	tcase_add_test(tc, test_template_check_reasons);
	tcase_add_test(tc, test_filters_overlap);
	suite_add_tcase(s, tc);

	tc = tcase_create("header values");
	tcase_add_test(tc, test_header_expands_captured_at_and_ms);
	tcase_add_test(tc, test_header_rfc3339_agrees_with_gmtime);
	tcase_add_test(tc, test_header_expand_stops_at_the_buffer_end);
	tcase_add_test(tc, test_header_check);
	suite_add_tcase(s, tc);

	tc = tcase_create("scale");
	tcase_add_test(tc, test_500_rules_every_lookup_correct);
	tcase_add_test(tc, test_tree_agrees_with_linear_scan);
	tcase_add_test(tc, test_template_check_agrees_with_rewrite);
	suite_add_tcase(s, tc);

	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(route_suite());
	srunner_run_all(sr, CK_ENV);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
