/* libFuzzer target (test/fuzz, runs in the fuzzer process): the route compiler and matcher.
 *
 * Input: lines. Up to the first empty line, each line is a rule: its first byte chooses the
 * direction (edge_to_cloud, cloud_to_edge or both) and the template (fixed, the filter behind a
 * prefix, the filter's wildcards only, or a drop rule), the rest is the topic filter; filters the
 * configuration would refuse are left out, as the loader leaves them out. The lines after it are
 * topics. Each topic is looked up in both directions and the answer compared with a linear scan
 * in file order that asks libmosquitto's matcher and fb_route_rewrite(): the same first rule, the
 * same rewritten topic (or -EINVAL when that is not a valid topic), the same drop flag, and
 * fb_route_first_bytes() never refuses a topic that matches.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>

#include "config.h"
#include "route.h"

#define MAX_RULES 64
#define MAX_TOPICS 64

struct rule {
	char *filter;
	char *tmpl; /* NULL: drop */
};

static void die(const char *what, const char *topic, int dir, int got, int want)
{
	fprintf(stderr, "%s: topic '%s' direction %d: got %d, expected %d\n", what, topic, dir, got, want);
	abort();
}

static char *xstrdup(const char *s)
{
	char *d = strdup(s);

	if(d == NULL){
		abort();
	}
	return d;
}

/* The template a rule gets for FILTER: KIND 0 fixed, 1 the filter behind a prefix, 2 only the
 * filter's wildcards ('+' levels, then '#'), 3 drop (edge_to_cloud only; else like 1). */
static char *make_template(const char *filter, int kind, int index, bool e2c)
{
	char *t = malloc(strlen(filter) + 32), *o;
	const char *f;

	if(t == NULL){
		abort();
	}
	switch(kind){
		case 0:
			snprintf(t, strlen(filter) + 32, "fixed/%d", index);
			return t;
		case 3:
			if(e2c){
				free(t);
				return NULL;
			}
			/* fall through */
		case 1:
			snprintf(t, strlen(filter) + 32, "r%d/%s", index, filter);
			return t;
		default:
			o = t;
			for(f = filter; *f; f++){
				if((*f == '+' || *f == '#') && (f == filter || f[-1] == '/')){
					o += sprintf(o, "%s%c", o == t ? "" : "/", *f);
				}
			}
			if(o == t){
				strcpy(t, "w");
			}
			return t;
	}
}

static void check_topic(const struct fb_routes *routes, enum fb_route_dir dir, const struct rule *rules,
		size_t n, const char *topic, const uint64_t *first, bool have_first)
{
	struct fb_route_result res = { .rule = -1 };
	int want = -1, rc;
	char *want_topic = NULL;

	for(size_t i = 0; i < n && want < 0; i++){
		bool mosq = false;
		if(mosquitto_topic_matches_sub(rules[i].filter, topic, &mosq) != MOSQ_ERR_SUCCESS){
			die("libmosquitto refuses a checked filter or topic", topic, dir, (int)i, -1);
		}
		if(rules[i].tmpl){
			want_topic = fb_route_rewrite(rules[i].filter, rules[i].tmpl, topic);
			if(mosq != (want_topic != NULL)){
				fprintf(stderr, "filter '%s', template '%s': ", rules[i].filter, rules[i].tmpl);
				die("fb_route_rewrite disagrees with libmosquitto", topic, dir, want_topic != NULL, mosq);
			}
		}
		if(mosq){
			want = (int)i;
		}
	}
	rc = fb_route_match(routes, dir, topic, &res);
	if(rc == -ENOMEM){
		abort();
	}
	if(want < 0){
		if(rc != 0){
			die("matched no rule of the scan", topic, dir, res.rule, want);
		}
		return;
	}
	if(res.rule != want){
		die("first matching rule", topic, dir, res.rule, want);
	}
	if(res.drop != (rules[want].tmpl == NULL)){
		die("drop flag", topic, dir, res.drop, rules[want].tmpl == NULL);
	}
	if(rules[want].tmpl == NULL){
		if(rc != 1 || res.topic != NULL){
			die("drop rule result", topic, dir, rc, 1);
		}
	}else if(want_topic[0] == '\0' || strlen(want_topic) > 65535){
		if(rc != -EINVAL || res.topic != NULL){
			die("an invalid rewritten topic is refused", topic, dir, rc, -EINVAL);
		}
	}else if(rc != 1 || res.topic == NULL || strcmp(res.topic, want_topic) != 0){
		fprintf(stderr, "rewritten '%s', expected '%s'\n", res.topic ? res.topic : "(null)", want_topic);
		die("rewritten topic", topic, dir, rc, 1);
	}
	if(have_first && !((first[(unsigned char)topic[0] >> 6] >> ((unsigned char)topic[0] & 63)) & 1)){
		die("fb_route_first_bytes() refuses a matching topic", topic, dir, want, -1);
	}
	free(res.topic);
	free(want_topic);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct rule e2c_rules[MAX_RULES], c2e_rules[MAX_RULES];
	struct fb_e2c_rule e2c[MAX_RULES];
	struct fb_c2e_rule c2e[MAX_RULES];
	char *topics[MAX_TOPICS];
	size_t ne = 0, nc = 0, nt = 0;
	struct fb_config cfg;
	struct fb_routes *routes = NULL;
	char *text, *line, *save = NULL;
	bool in_rules = true;
	int rc, index = 0;

	text = malloc(size + 1);
	if(text == NULL){
		abort();
	}
	memcpy(text, data, size);
	text[size] = '\0';
	memset(e2c, 0, sizeof(e2c));
	memset(c2e, 0, sizeof(c2e));

	/* strsep, not strtok: the empty line that ends the rules must be seen */
	save = text;
	while((line = strsep(&save, "\n")) != NULL){
		if(in_rules){
			if(line[0] == '\0'){
				in_rules = false;
				continue;
			}
			unsigned char ctrl = (unsigned char)line[0];
			const char *filter = line + 1;
			int dir = ctrl % 3, kind = (ctrl / 3) % 4;
			if(fb_topic_filter_check(filter) != 0 || index >= MAX_RULES){
				continue;
			}
			if(dir != 1){ /* edge_to_cloud */
				e2c_rules[ne].filter = xstrdup(filter);
				e2c_rules[ne].tmpl = make_template(filter, kind, index, true);
				e2c[ne].local = e2c_rules[ne].filter;
				e2c[ne].cloud = e2c_rules[ne].tmpl;
				e2c[ne].drop = e2c_rules[ne].tmpl == NULL;
				e2c[ne].qos = 1;
				e2c[ne].line = (unsigned)index;
				ne++;
			}
			if(dir != 0){ /* cloud_to_edge */
				c2e_rules[nc].filter = xstrdup(filter);
				c2e_rules[nc].tmpl = make_template(filter, kind, index, false);
				c2e[nc].cloud = c2e_rules[nc].filter;
				c2e[nc].local = c2e_rules[nc].tmpl;
				c2e[nc].qos = 1;
				c2e[nc].line = (unsigned)index;
				nc++;
			}
			index++;
		}else if(nt < MAX_TOPICS && fb_topic_publish_check(line) == 0){
			topics[nt++] = line;
		}
	}

	memset(&cfg, 0, sizeof(cfg));
	cfg.site_id = "site-A";
	cfg.e2c = e2c;
	cfg.e2c_count = ne;
	cfg.c2e = c2e;
	cfg.c2e_count = nc;
	rc = fb_routes_build(&cfg, &routes);
	if(rc != 0 || routes == NULL){
		fprintf(stderr, "fb_routes_build of checked rules: %d\n", rc);
		abort();
	}
	uint64_t first_e[4], first_c[4];
	bool have_e = fb_route_first_bytes(routes, FB_ROUTE_E2C, first_e);
	bool have_c = fb_route_first_bytes(routes, FB_ROUTE_C2E, first_c);
	for(size_t k = 0; k < nt; k++){
		check_topic(routes, FB_ROUTE_E2C, e2c_rules, ne, topics[k], first_e, have_e);
		check_topic(routes, FB_ROUTE_C2E, c2e_rules, nc, topics[k], first_c, have_c);
	}
	fb_routes_free(routes);
	for(size_t i = 0; i < ne; i++){
		free(e2c_rules[i].filter);
		free(e2c_rules[i].tmpl);
	}
	for(size_t i = 0; i < nc; i++){
		free(c2e_rules[i].filter);
		free(c2e_rules[i].tmpl);
	}
	free(text);
	return 0;
}
