/* flowmq-bridge: the route engine (see route.h and README.md, "Topic filters and templates");
 * either process, any thread.
 *
 * Each direction compiles into one topic tree. A node is one filter level; it has
 *   - its literal children, sorted by level text (binary search on lookup),
 *   - a '+' child,
 *   - hash_rule: the lowest rule whose filter is this node's path followed by '#',
 *   - end_rule: the lowest rule whose filter ends exactly at this node,
 *   - min_rule: the lowest rule anywhere in the subtree (including hash_rule and end_rule).
 * Rules are numbered in file order, so "first rule wins" is "lowest index wins". A lookup walks the
 * topic levels depth-first through the literal and '+' branches, collecting hash_rule/end_rule, and
 * skips every subtree whose min_rule cannot beat the best rule found so far. Its cost grows with
 * the topic's length and the '+' branches along its path, and only logarithmically with the number
 * of sibling levels; it does not scan the rules.
 *
 * Nodes live in one array and refer to each other by index; the walk is iterative (parent index
 * plus a backwards scan of the topic to climb), so neither a deep filter nor a deep topic can
 * exhaust the stack, and a lookup allocates nothing. Level texts point into the configuration's
 * strings, which outlive the table.
 *
 * The tree only says which rule wins. The rewritten topic is then produced by rewrite(), which
 * matches that one filter against the topic again while filling the template; fb_route_rewrite()
 * is the same routine. Both the walk and rewrite() implement the MQTT rules below; the unit test
 * cross-checks them on random filters and topics.
 *
 * MQTT rules: '+' matches exactly one level, possibly empty; '#' (always last) matches the parent
 * level and any number of levels below; a filter whose first level is a wildcard never matches a
 * topic starting with '$'; levels are compared byte for byte.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mosquitto.h>

#include "route.h"

#define NO_NODE UINT32_MAX
#define NO_RULE INT_MAX
#define ROOT 0u
#define TOPIC_MAX 65535

struct node {
	const char *key;   /* level text, not NUL-terminated; unused for the root and '+' nodes */
	uint32_t key_len;
	uint32_t parent;   /* NO_NODE for the root */
	uint32_t plus;     /* the '+' child or NO_NODE */
	uint32_t *child;   /* literal children, sorted by (key_len, key bytes) */
	uint32_t child_count;
	uint32_t child_cap;
	int end_rule;
	int hash_rule;
	int min_rule;
	bool is_plus;      /* this node is its parent's '+' child */
};

struct rule_ref {
	const char *filter;
	const char *tmpl;  /* NULL for drop rules */
	bool drop;
	/* A rule "F/#" -> "T/#" with no other wildcard (the most common shape) rewrites by swapping
	 * the prefix: F's and T's lengths, both > 0, or 0 for any other rule. */
	size_t prefix_from, prefix_to;
};

struct tree {
	struct node *nodes;
	uint32_t node_count;
	uint32_t node_cap;
	bool has_plus;     /* some filter has a '+' level: a lookup may have to try other branches */
	struct rule_ref *rules;
	size_t rule_count;
	/* When no filter starts with a wildcard, a topic can only match if its first byte starts one
	 * of the root's levels: most unmatched topics are refused on their first byte. */
	bool first_byte_only;
	uint64_t first_bytes[4]; /* bit set per first byte of a root level */
};

struct fb_routes {
	struct tree dir[2]; /* indexed by enum fb_route_dir */
};

/* ---- levels ---------------------------------------------------------------------------------- */

/* Length of the level starting at S (up to the next '/' or the end). */
static size_t level_len(const char *s)
{
	return (size_t)(strchrnul(s, '/') - s);
}

static bool level_is(const char *s, size_t len, char c)
{
	return len == 1 && s[0] == c;
}

/* Orders levels by length, then bytes: any total order does for the binary search. */
static int key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	if(alen != blen){
		return alen < blen ? -1 : 1;
	}
	return memcmp(a, b, alen);
}

/* ---- single-filter matching and rewriting ----------------------------------------------------- */

/* Walks FILTER against TOPIC one wildcard at a time. t == NULL means the topic has no level left
 * (which differs from an empty last level: "a/" has the levels "a" and ""). */
struct cursor {
	const char *filter; /* start of the whole filter, for the '$' rule */
	const char *topic;
	const char *f;      /* next filter level, NULL when the filter is exhausted */
	const char *t;      /* next topic level, NULL when the topic is exhausted */
};

static void cursor_init(struct cursor *c, const char *filter, const char *topic)
{
	c->filter = filter;
	c->topic = topic;
	c->f = filter;
	c->t = topic;
}

static const char *next_level(const char *s, size_t len)
{
	return s[len] == '/' ? s + len + 1 : NULL;
}

/* Advances to the next wildcard of the filter. Returns
 *   1: a wildcard matched; *cap and *cap_len give the level taken by '+' (*hash false) or the
 *      rest of the topic taken by '#' (*hash true; *cap NULL when '#' matched zero levels),
 *   0: the filter ended and matched the whole topic,
 *  -1: the filter does not match the topic. */
static int cursor_next(struct cursor *c, const char **cap, size_t *cap_len, bool *hash)
{
	while(c->f){
		size_t flen = level_len(c->f);
		bool first = c->f == c->filter;

		if(level_is(c->f, flen, '#')){
			if(first && c->topic[0] == '$'){
				return -1;
			}
			*hash = true;
			*cap = c->t;
			*cap_len = c->t ? strlen(c->t) : 0;
			c->f = NULL;
			c->t = NULL;
			return 1;
		}
		if(c->t == NULL){
			return -1;
		}
		size_t tlen = level_len(c->t);
		if(level_is(c->f, flen, '+')){
			if(first && c->topic[0] == '$'){
				return -1;
			}
			*hash = false;
			*cap = c->t;
			*cap_len = tlen;
			c->f = next_level(c->f, flen);
			c->t = next_level(c->t, tlen);
			return 1;
		}
		if(flen != tlen || memcmp(c->f, c->t, flen) != 0){
			return -1;
		}
		c->f = next_level(c->f, flen);
		c->t = next_level(c->t, tlen);
	}
	return c->t == NULL ? 0 : -1;
}

/* Has S a '+' or '#' level? */
static bool has_wildcard(const char *s)
{
	for(const char *l = s; l; ){
		size_t len = level_len(l);
		if(level_is(l, len, '+') || level_is(l, len, '#')){
			return true;
		}
		l = next_level(l, len);
	}
	return false;
}

/* Rewrites TOPIC matched by FILTER into TMPL. Returns 1 with *out (free()), 0 when FILTER does not
 * match TOPIC or TMPL's wildcards do not correspond to FILTER's, or -ENOMEM. Allocates only the
 * result, and only on a match. A TMPL without wildcards is a fixed topic, returned as is. */
static int rewrite(const char *filter, const char *tmpl, const char *topic, bool matched, char **out)
{
	struct cursor c;
	const char *cap;
	size_t cap_len;
	bool hash;
	int rc;

	*out = NULL;

	/* First pass, unless the tree found the match: does FILTER match at all? */
	if(!matched){
		cursor_init(&c, filter, topic);
		while((rc = cursor_next(&c, &cap, &cap_len, &hash)) == 1){
		}
		if(rc < 0){
			return 0;
		}
	}

	size_t tmpl_len = strlen(tmpl);
	if(!has_wildcard(tmpl)){
		/* A fixed topic. */
		*out = strdup(tmpl);
		return *out ? 1 : -ENOMEM;
	}

	/* The captures are disjoint pieces of TOPIC: this bounds the result. */
	char *buf = malloc(tmpl_len + strlen(topic) + 1);
	if(buf == NULL){
		return -ENOMEM;
	}
	char *o = buf;

	cursor_init(&c, filter, topic);
	for(const char *m = tmpl; m; ){
		size_t mlen = level_len(m);
		bool plus = level_is(m, mlen, '+');

		if(plus || level_is(m, mlen, '#')){
			if(cursor_next(&c, &cap, &cap_len, &hash) != 1 || hash == plus){
				free(buf);
				return 0; /* TMPL's wildcards are not FILTER's */
			}
			if(hash && cap == NULL){
				/* '#' matched zero levels: drop the '/' before it too. */
				if(o > buf){
					o--;
				}
			}else{
				memcpy(o, cap, cap_len);
				o += cap_len;
			}
		}else{
			memcpy(o, m, mlen);
			o += mlen;
		}
		m = next_level(m, mlen);
		if(m){
			*o++ = '/';
		}
	}
	if(cursor_next(&c, &cap, &cap_len, &hash) != 0){
		free(buf);
		return 0; /* FILTER has wildcards that TMPL lacks */
	}
	*o = '\0';
	*out = buf;
	return 1;
}

char *fb_route_rewrite(const char *filter, const char *tmpl, const char *topic)
{
	char *out;

	if(filter == NULL || tmpl == NULL || topic == NULL){
		return NULL;
	}
	return rewrite(filter, tmpl, topic, false, &out) == 1 ? out : NULL;
}

/* ---- checks ---------------------------------------------------------------------------------- */

/* Wraps libmosquitto's checks, which are the broker's. Note that mosquitto_validate_utf8() also
 * refuses control characters (U+0001..U+001F, U+007F..U+009F) and non-characters: the broker
 * refuses such topics in PUBLISH and SUBSCRIBE packets anyway. The reasons are the configuration's
 * error messages. */
int fb_route_check_topic(const char *s, enum fb_topic_kind kind, const char **why)
{
	const char *reason = NULL;
	size_t len;

	if(s == NULL || s[0] == '\0'){
		reason = "must not be empty";
	}else if((len = strlen(s)) > TOPIC_MAX){
		reason = "longer than 65535 bytes";
	}else if(mosquitto_validate_utf8(s, (int)len) != MOSQ_ERR_SUCCESS){
		reason = "not valid UTF-8";
	}else if(kind == FB_TOPIC_PUBLISH && mosquitto_pub_topic_check(s) != MOSQ_ERR_SUCCESS){
		reason = "wildcards are not allowed here";
	}else if(kind != FB_TOPIC_PUBLISH && mosquitto_sub_topic_check(s) != MOSQ_ERR_SUCCESS){
		reason = "'+' must be a whole level and '#' the whole last level";
	}
	if(why){
		*why = reason;
	}
	return reason ? -EINVAL : 0;
}

int fb_topic_filter_check(const char *filter)
{
	return fb_route_check_topic(filter, FB_TOPIC_FILTER, NULL);
}

int fb_topic_publish_check(const char *topic)
{
	return fb_route_check_topic(topic, FB_TOPIC_PUBLISH, NULL);
}

/* Writes the wildcards of a valid filter as "+,#" into BUF (those that fit) and returns how many
 * there are. */
static size_t wildcard_list(const char *t, char *buf, size_t len)
{
	size_t count = 0, n = 0;

	buf[0] = '\0';
	for(; *t; t++){
		if(*t == '+' || *t == '#'){
			if(n + 3 < len){
				n += (size_t)snprintf(buf + n, len - n, "%s%c", count ? "," : "", *t);
			}
			count++;
		}
	}
	return count;
}

int fb_route_check_template(const char *filter, const char *tmpl, char *why, size_t why_len)
{
	char tw[64], fw[64];
	size_t tn, fn;
	const char *t = tmpl, *f = filter;

	if(fb_topic_filter_check(filter) < 0 || fb_topic_filter_check(tmpl) < 0){
		if(why && why_len){
			snprintf(why, why_len, "%s is not a valid topic filter",
					fb_topic_filter_check(filter) < 0 ? "filter" : "template");
		}
		return -EINVAL;
	}
	/* In a valid filter every '+' and '#' is a whole level: counting characters counts levels. */
	tn = wildcard_list(tmpl, tw, sizeof(tw));
	fn = wildcard_list(filter, fw, sizeof(fw));
	if(tn == 0){
		return 0; /* a fixed topic */
	}
	if(tn != fn){
		if(why && why_len){
			snprintf(why, why_len, "template has %zu wildcard%s, filter has %zu", tn, tn == 1 ? "" : "s", fn);
		}
		return -EINVAL;
	}
	for(;;){
		t += strcspn(t, "+#");
		f += strcspn(f, "+#");
		if(*t == '\0'){
			return 0;
		}
		if(*t++ != *f++){
			if(why && why_len){
				snprintf(why, why_len, "template wildcards (%s) do not match filter wildcards (%s)", tw, fw);
			}
			return -EINVAL;
		}
	}
}

/* True when some topic matches both filters (MQTT rules: '#' also matches the parent level, and
 * wildcards in the first level never match a topic that starts with '$'). */
bool fb_route_filters_overlap(const char *a, const char *b)
{
	size_t la, lb;

	if((a[0] == '$') != (b[0] == '$')){
		return false;
	}
	for(;;){
		la = strcspn(a, "/");
		lb = strcspn(b, "/");
		if((la == 1 && a[0] == '#') || (lb == 1 && b[0] == '#')){
			return true;
		}
		if(!(la == 1 && a[0] == '+') && !(lb == 1 && b[0] == '+') && (la != lb || memcmp(a, b, la) != 0)){
			return false;
		}
		a += la;
		b += lb;
		if(*a == '\0' || *b == '\0'){
			return strcmp(a, b) == 0 || strcmp(a, "/#") == 0 || strcmp(b, "/#") == 0;
		}
		a++;
		b++;
	}
}

/* ---- header values --------------------------------------------------------------------------- */

size_t fb_route_header_var(const char *s)
{
	static const char *const vars[] = { FB_HEADER_CAPTURED_AT, FB_HEADER_CAPTURED_AT_MS };

	if(s[0] != '$' || s[1] != '{'){
		return 0;
	}
	for(size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++){
		size_t n = strlen(vars[i]);
		if(strncmp(s, vars[i], n) == 0){
			return n;
		}
	}
	return 0;
}

int fb_route_check_header(const char *value, const char **why)
{
	size_t len = 0, n;
	bool vars = false;

	if(why){
		*why = NULL;
	}
	for(const char *p = value; *p; ){
		if((n = fb_route_header_var(p)) > 0){
			/* the widest expansion up to the year 9999: 24 bytes, or 20 digits */
			len += n == sizeof(FB_HEADER_CAPTURED_AT_MS) - 1 ? 20 : 24;
			p += n;
			vars = true;
			continue;
		}
		if(p[0] == '$' && p[1] == '{'){
			if(why){
				*why = strchr(p, '}') ? "unknown variable (header values may use ${site_id}, ${captured_at} "
						"and ${captured_at_ms})" : "unterminated '${'";
			}
			return -EINVAL;
		}
		len++;
		p++;
	}
	if(len > FB_HEADER_VALUE_MAX){
		if(why){
			*why = "longer than 65535 bytes once expanded";
		}
		return -EINVAL;
	}
	return vars ? 1 : 0;
}

/* Writes V in decimal, at least WIDTH digits (zeros in front), at P; returns the end. */
static char *put_dec(char *p, uint64_t v, int width)
{
	char tmp[20];
	int n = 0;

	do{
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	}while(v);
	while(n < width){
		tmp[n++] = '0';
	}
	while(n){
		*p++ = tmp[--n];
	}
	return p;
}

/* Days since 1970-01-01 to a date of the proleptic Gregorian calendar. Counted from 0000-03-01 in
 * eras of 400 years (146097 days), a year runs from March to February, so that the leap day is a
 * year's last day; the month follows from the day of that year by a linear formula (153 days per
 * five months from March). */
static void civil_date(uint64_t days, uint64_t *y, unsigned *m, unsigned *d)
{
	uint64_t z = days + 719468; /* 0000-03-01 to 1970-01-01 */
	uint64_t era = z / 146097;
	unsigned doe = (unsigned)(z - era * 146097);                          /* day of the era */
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* year of the era */
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);              /* day of that year */
	unsigned mp = (5 * doy + 2) / 153;                                   /* month, 0 = March */

	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = era * 400 + yoe + (*m <= 2 ? 1 : 0);
}

size_t fb_route_rfc3339(uint64_t captured_ms, char *out)
{
	uint64_t secs = captured_ms / 1000, y;
	unsigned sod = (unsigned)(secs % 86400), m, d;
	char *p = out;

	civil_date(secs / 86400, &y, &m, &d);
	p = put_dec(p, y, 4);
	*p++ = '-';
	p = put_dec(p, m, 2);
	*p++ = '-';
	p = put_dec(p, d, 2);
	*p++ = 'T';
	p = put_dec(p, sod / 3600, 2);
	*p++ = ':';
	p = put_dec(p, sod / 60 % 60, 2);
	*p++ = ':';
	p = put_dec(p, sod % 60, 2);
	*p++ = '.';
	p = put_dec(p, captured_ms % 1000, 3);
	*p++ = 'Z';
	return (size_t)(p - out);
}

int fb_route_header_expand(const char *value, uint64_t captured_ms, char *out, size_t cap)
{
	char tmp[FB_RFC3339_MAX];
	size_t len = 0, n, t;

	for(const char *p = value; *p; ){
		if((n = fb_route_header_var(p)) > 0){
			t = n == sizeof(FB_HEADER_CAPTURED_AT_MS) - 1 ? (size_t)(put_dec(tmp, captured_ms, 1) - tmp) : fb_route_rfc3339(captured_ms, tmp);
			if(cap - len < t){
				return -ENOSPC;
			}
			memcpy(out + len, tmp, t);
			len += t;
			p += n;
			continue;
		}
		if(len == cap){
			return -ENOSPC;
		}
		out[len++] = *p++;
	}
	return len > INT32_MAX ? -ENOSPC : (int)len;
}

/* ---- the tree -------------------------------------------------------------------------------- */

static int min_int(int a, int b)
{
	return a < b ? a : b;
}

static void tree_free(struct tree *t)
{
	for(uint32_t i = 0; i < t->node_count; i++){
		free(t->nodes[i].child);
	}
	free(t->nodes);
	free(t->rules);
	memset(t, 0, sizeof(*t));
}

/* Appends a node; returns its index or NO_NODE on ENOMEM. Invalidates node pointers. */
static uint32_t node_new(struct tree *t, uint32_t parent, const char *key, size_t key_len)
{
	if(t->node_count == t->node_cap){
		uint32_t cap = t->node_cap ? t->node_cap * 2 : 16;
		struct node *n = realloc(t->nodes, cap * sizeof(*n));
		if(n == NULL){
			return NO_NODE;
		}
		t->nodes = n;
		t->node_cap = cap;
	}
	t->nodes[t->node_count] = (struct node){
		.key = key,
		.key_len = (uint32_t)key_len,
		.parent = parent,
		.plus = NO_NODE,
		.end_rule = NO_RULE,
		.hash_rule = NO_RULE,
		.min_rule = NO_RULE,
	};
	return t->node_count++;
}

/* Binary search among N's literal children. Returns the child, or NO_NODE and in *pos the place
 * where KEY would be inserted. */
static uint32_t child_find(const struct tree *t, const struct node *n, const char *key,
		size_t key_len, uint32_t *pos)
{
	uint32_t lo = 0;
	uint32_t hi = n->child_count;

	while(lo < hi){
		uint32_t mid = lo + (hi - lo) / 2;
		const struct node *c = &t->nodes[n->child[mid]];
		int cmp = key_cmp(key, key_len, c->key, c->key_len);
		if(cmp == 0){
			return n->child[mid];
		}
		if(cmp < 0){
			hi = mid;
		}else{
			lo = mid + 1;
		}
	}
	if(pos){
		*pos = lo;
	}
	return NO_NODE;
}

/* Returns the literal child KEY of node P, created if needed, or NO_NODE on ENOMEM. */
static uint32_t child_get(struct tree *t, uint32_t p, const char *key, size_t key_len)
{
	uint32_t pos;
	uint32_t c = child_find(t, &t->nodes[p], key, key_len, &pos);
	if(c != NO_NODE){
		return c;
	}
	c = node_new(t, p, key, key_len);
	if(c == NO_NODE){
		return NO_NODE;
	}
	struct node *n = &t->nodes[p];
	if(n->child_count == n->child_cap){
		uint32_t cap = n->child_cap ? n->child_cap * 2 : 4;
		uint32_t *a = realloc(n->child, cap * sizeof(*a));
		if(a == NULL){
			t->node_count--; /* unreferenced yet */
			return NO_NODE;
		}
		n->child = a;
		n->child_cap = cap;
	}
	memmove(&n->child[pos + 1], &n->child[pos], (n->child_count - pos) * sizeof(*n->child));
	n->child[pos] = c;
	n->child_count++;
	return c;
}

static uint32_t plus_get(struct tree *t, uint32_t p)
{
	if(t->nodes[p].plus != NO_NODE){
		return t->nodes[p].plus;
	}
	t->has_plus = true;
	uint32_t c = node_new(t, p, NULL, 0);
	if(c == NO_NODE){
		return NO_NODE;
	}
	t->nodes[c].is_plus = true;
	t->nodes[p].plus = c;
	return c;
}

/* Adds rule number RULE (rules are added in increasing order) with its checked FILTER. */
static int tree_add(struct tree *t, const char *filter, int rule)
{
	uint32_t n = ROOT;

	for(const char *f = filter; ; ){
		size_t flen = level_len(f);

		t->nodes[n].min_rule = min_int(t->nodes[n].min_rule, rule);
		if(level_is(f, flen, '#')){
			t->nodes[n].hash_rule = min_int(t->nodes[n].hash_rule, rule);
			return 0;
		}
		n = level_is(f, flen, '+') ? plus_get(t, n) : child_get(t, n, f, flen);
		if(n == NO_NODE){
			return -ENOMEM;
		}
		f = next_level(f, flen);
		if(f == NULL){
			t->nodes[n].min_rule = min_int(t->nodes[n].min_rule, rule);
			t->nodes[n].end_rule = min_int(t->nodes[n].end_rule, rule);
			return 0;
		}
	}
}

/* Start of the level before the one starting at T (T may be the "no level left" position just
 * past the terminating NUL: the NUL then plays the separator). */
static const char *level_prev(const char *topic, const char *t)
{
	const char *p = t - 1; /* the separator before T's level */
	while(p > topic && p[-1] != '/'){
		p--;
	}
	return p;
}

/* Returns the lowest rule matching TOPIC, or NO_RULE. Allocates nothing. */
static int tree_lookup(const struct tree *tr, const char *topic)
{
	const struct node *nodes = tr->nodes;
	const char *none = topic + strlen(topic) + 1; /* position of "no level left" */
	const bool dollar = topic[0] == '$';
	int best = NO_RULE;
	uint32_t n = ROOT;
	const char *t = topic; /* the topic level that N's children match */

	if(tr->node_count == 0){
		return NO_RULE;
	}
	for(;;){
		/* Enter N. */
		const struct node *nd = &nodes[n];
		if(nd->min_rule < best){
			/* '#' below N matches the rest, zero levels included. */
			if(nd->hash_rule < best && !(n == ROOT && dollar)){
				best = nd->hash_rule;
			}
			if(t == none){
				if(nd->end_rule < best){
					best = nd->end_rule;
				}
			}else{
				size_t len = level_len(t);
				const char *next = t[len] == '/' ? t + len + 1 : none;
				uint32_t c = child_find(tr, nd, t, len, NULL);
				if(c == NO_NODE && !(n == ROOT && dollar)){
					c = nd->plus;
				}
				if(c != NO_NODE){
					n = c;
					t = next;
					continue;
				}
			}
		}
		/* Leave N: try its '+' sibling if we came from the literal one, else climb. Without any
		 * '+' the path just taken was the only one. */
		if(!tr->has_plus){
			return best;
		}
		for(;;){
			if(n == ROOT){
				return best;
			}
			uint32_t p = nodes[n].parent;
			if(!nodes[n].is_plus && nodes[p].plus != NO_NODE && !(p == ROOT && dollar)){
				n = nodes[p].plus; /* same topic level as its sibling */
				break;
			}
			n = p;
			t = level_prev(topic, t);
		}
	}
}

/* Length of S without its trailing "/#" when that is its only wildcard and something is left;
 * else 0. */
static size_t hash_prefix(const char *s)
{
	size_t len = strlen(s);

	if(len < 3 || strcmp(s + len - 2, "/#") != 0 || strpbrk(s, "+#") != s + len - 1){
		return 0;
	}
	return len - 2;
}

/* Sets R's prefix_from and prefix_to (struct rule_ref). */
static void prefix_rule(struct rule_ref *r)
{
	size_t from = r->drop ? 0 : hash_prefix(r->filter);
	size_t to = from ? hash_prefix(r->tmpl) : 0;

	r->prefix_from = to ? from : 0;
	r->prefix_to = to;
}

/* Compiles RULES (COUNT of them, filled in; T takes ownership of the array). */
static int tree_build(struct tree *t, struct rule_ref *rules, size_t count)
{
	t->rules = rules;
	t->rule_count = count;
	if(count >= (size_t)NO_RULE){
		return -EINVAL;
	}
	if(node_new(t, NO_NODE, NULL, 0) == NO_NODE){
		return -ENOMEM;
	}
	for(size_t i = 0; i < count; i++){
		const struct rule_ref *r = &rules[i];
		if(r->drop ? fb_topic_filter_check(r->filter) < 0
				: r->tmpl == NULL || fb_route_check_template(r->filter, r->tmpl, NULL, 0) < 0){
			return -EINVAL;
		}
		int rc = tree_add(t, r->filter, (int)i);
		if(rc < 0){
			return rc;
		}
		prefix_rule(&rules[i]);
	}
	/* The quick refusal holds when the root has only literal children: no '+' level and no '#'
	 * rule there (a root level may be empty: a filter "/a" starts with byte '/'). */
	const struct node *root = &t->nodes[ROOT];
	t->first_byte_only = root->plus == NO_NODE && root->hash_rule == NO_RULE && root->end_rule == NO_RULE;
	for(uint32_t i = 0; i < root->child_count; i++){
		const struct node *c = &t->nodes[root->child[i]];
		unsigned char b = c->key_len ? (unsigned char)c->key[0] : (unsigned char)'/';
		t->first_bytes[b >> 6] |= UINT64_C(1) << (b & 63);
	}
	return 0;
}

int fb_routes_build(const struct fb_config *cfg, struct fb_routes **out)
{
	struct rule_ref *e2c = NULL;
	struct rule_ref *c2e = NULL;
	struct fb_routes *r = NULL;
	int rc;

	if(out == NULL){
		return -EINVAL;
	}
	*out = NULL;
	if(cfg == NULL || (cfg->e2c_count && cfg->e2c == NULL) || (cfg->c2e_count && cfg->c2e == NULL)){
		return -EINVAL;
	}
	/* calloc(0) may return NULL: allocate at least one entry. */
	e2c = calloc(cfg->e2c_count + 1, sizeof(*e2c));
	c2e = calloc(cfg->c2e_count + 1, sizeof(*c2e));
	r = calloc(1, sizeof(*r));
	if(e2c == NULL || c2e == NULL || r == NULL){
		free(e2c);
		free(c2e);
		free(r);
		return -ENOMEM;
	}
	for(size_t i = 0; i < cfg->e2c_count; i++){
		e2c[i].filter = cfg->e2c[i].local;
		e2c[i].drop = cfg->e2c[i].drop;
		e2c[i].tmpl = e2c[i].drop ? NULL : cfg->e2c[i].cloud;
	}
	for(size_t i = 0; i < cfg->c2e_count; i++){
		c2e[i].filter = cfg->c2e[i].cloud;
		c2e[i].tmpl = cfg->c2e[i].local;
	}
	rc = tree_build(&r->dir[FB_ROUTE_E2C], e2c, cfg->e2c_count);
	if(rc == 0){
		rc = tree_build(&r->dir[FB_ROUTE_C2E], c2e, cfg->c2e_count);
	}else{
		free(c2e);
	}
	if(rc < 0){
		fb_routes_free(r);
		return rc;
	}
	*out = r;
	return 0;
}

void fb_routes_free(struct fb_routes *r)
{
	if(r == NULL){
		return;
	}
	tree_free(&r->dir[FB_ROUTE_E2C]);
	tree_free(&r->dir[FB_ROUTE_C2E]);
	free(r);
}

/* On a match whose rewritten topic is not a valid topic (empty, as with template "#" for a '#'
 * that matched zero levels, or longer than 65535 bytes), returns -EINVAL with RES filled except
 * for the topic (NULL): the message cannot be forwarded under that rule. */
bool fb_route_first_bytes(const struct fb_routes *r, enum fb_route_dir dir, uint64_t first[4])
{
	const struct tree *t = &r->dir[dir];

	memcpy(first, t->first_bytes, sizeof(t->first_bytes));
	return t->first_byte_only;
}

int fb_route_match(const struct fb_routes *r, enum fb_route_dir dir, const char *topic,
		struct fb_route_result *res)
{
	if(r == NULL || topic == NULL || res == NULL || (dir != FB_ROUTE_E2C && dir != FB_ROUTE_C2E)){
		return -EINVAL;
	}
	const struct tree *t = &r->dir[dir];
	if(t->first_byte_only){
		/* Most topics no rule can match end here, before anything else is looked at. */
		unsigned char b = (unsigned char)topic[0];
		if(!(t->first_bytes[b >> 6] & (UINT64_C(1) << (b & 63)))){
			return 0;
		}
	}
	int rule = tree_lookup(t, topic);
	if(rule == NO_RULE){
		return 0;
	}
	res->rule = rule;
	res->drop = t->rules[rule].drop;
	res->topic = NULL;
	if(res->drop){
		return 1;
	}

	const struct rule_ref *rr = &t->rules[rule];
	char *s;
	size_t len;
	if(rr->prefix_from){
		/* "F/#" -> "T/#": TOPIC is F, or F/rest (the tree matched it): T, or T/rest. */
		size_t tlen = strlen(topic);
		len = rr->prefix_to + (tlen - rr->prefix_from);
		s = malloc(len + 1);
		if(s == NULL){
			return -ENOMEM;
		}
		memcpy(s, rr->tmpl, rr->prefix_to);
		memcpy(s + rr->prefix_to, topic + rr->prefix_from, tlen - rr->prefix_from + 1);
	}else{
		int rc = rewrite(rr->filter, rr->tmpl, topic, true, &s);
		if(rc < 0){
			return rc;
		}
		if(rc == 0){
			return -EINVAL; /* cannot happen: the tree and rewrite() disagree */
		}
		len = strlen(s);
	}
	if(len == 0 || len > TOPIC_MAX){
		free(s);
		return -EINVAL;
	}
	res->topic = s;
	return 1;
}
