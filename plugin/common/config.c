/* flowmq-bridge: the YAML configuration (see config.h and README.md, "Configuration reference");
 * either process (and the CLI), the thread that loads it.
 *
 * Loading runs in four steps:
 * 1. libyaml's document API parses the file once. That catches syntax errors, gives every key path
 *    (e.g. edge_to_cloud[1].cloud) its line, and holds the edge_to_cloud headers: libcyaml 1.3.1
 *    cannot load a mapping with arbitrary keys.
 * 2. libcyaml loads the same bytes into struct raw_config: every scalar is a string, so libcyaml
 *    only refuses unknown keys, duplicate keys and a mapping/list/scalar in the wrong place. Its
 *    error and backtrace come through cyaml_log_fn() and become one "FILE:LINE: KEY: what" line.
 * 3. config_apply_defaults() fills every unset key with its documented default, as text.
 * 4. config_validate() converts the strings into struct fb_config and reports every problem it
 *    finds, not only the first.
 *
 * Messages name the file by its basename ("flowmq-bridge.yaml:14: edge_to_cloud[1].cloud: ..."):
 * the operator knows which file the broker was given, and tests can match the text exactly. Only
 * "cannot open" names the path as given. Sequence indexes in key paths start at 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cyaml/cyaml.h>
#include <mosquitto.h>
#include <yaml.h>

#include "config.h"
#include "record.h"
#include "route.h"

#define CONFIG_MAX_BYTES (1024 * 1024)
#define CONFIG_MAX_KEYS 10000 /* bounds the walk of a document full of aliases */
#define SPOOL_MIN_SIZE (64 * 1024)
#define MQTT_MAX_PAYLOAD 268435455u
#define SECRET_MAX_BYTES 65535
#define HOUR_MS 3600000u
#define DAY_MS 86400000u
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* The document as libcyaml loads it: member names are the YAML keys; NULL means not set. */
struct raw_reconnect {
	char *min;
	char *max;
};

struct raw_auth {
	char *username;
	char *password_file;
};

struct raw_tls {
	char *ca_file;
	char *cert_file;
	char *key_file;
	char *min_version;
	char *server_name;
	char *verify;
	char *alpn;
	char *allow_plaintext;
};

struct raw_cloud {
	char **endpoints;
	unsigned endpoints_count;
	char *client_id;
	char *keepalive;
	char *session_expiry;
	char *connect_timeout;
	char *max_inflight;
	struct raw_reconnect *reconnect;
	char *status_topic;
	struct raw_auth *auth;
	struct raw_tls *tls;
	char *poison_after;
	char *lane_min_share;
	char *max_rate;
	char *max_bandwidth;
	char *topic_aliases;
};

struct raw_spool {
	char *path;
	char *max_size;
	char *on_full;
	char *sync;
	char *ttl;
	char *max_tracked_topics;
};

struct raw_aggregate {
	char *window;
	char *field;
	char **emit;
	unsigned emit_count;
};

struct raw_e2c {
	char *local;
	char *cloud;
	char *qos;
	char *retain;
	char *drop;
	char *priority;
	char *live_first;
	char *ttl;
	/* headers: read from the libyaml document */
	char *min_interval;
	char *on_change;
	char *deadband;
	char *field;
	char *heartbeat;
	struct raw_aggregate *aggregate;
};

struct raw_c2e {
	char *cloud;
	char *local;
	char *qos;
	char *retain;
	char *max_payload;
};

struct raw_metrics {
	char *listen;
};

struct raw_config {
	char *site_id;
	struct raw_cloud *cloud;
	struct raw_spool *spool;
	char *status_interval;
	char *link_timeout;
	struct raw_e2c *edge_to_cloud;
	unsigned edge_to_cloud_count;
	struct raw_c2e *cloud_to_edge;
	unsigned cloud_to_edge_count;
	struct raw_metrics *metrics;
};

/* Every key is optional for libcyaml (config_validate() names missing ones with a line), and an
 * empty value or ~/null loads as NULL. */
#define OPT (CYAML_FLAG_OPTIONAL | CYAML_FLAG_POINTER_NULL_STR)
#define STR(s, m) CYAML_FIELD_STRING_PTR(#m, OPT, struct s, m, 0, CYAML_UNLIMITED)
#define MAP(s, m, f) CYAML_FIELD_MAPPING_PTR(#m, OPT, struct s, m, f)
#define SEQ(s, m, e) CYAML_FIELD_SEQUENCE(#m, OPT, struct s, m, e, 0, CYAML_UNLIMITED)

static const cyaml_schema_value_t string_entry = {
	CYAML_VALUE_STRING(CYAML_FLAG_POINTER, char, 0, CYAML_UNLIMITED),
};

static const cyaml_schema_field_t reconnect_fields[] = {
	STR(raw_reconnect, min),
	STR(raw_reconnect, max),
	CYAML_FIELD_END
};

static const cyaml_schema_field_t auth_fields[] = {
	STR(raw_auth, username),
	STR(raw_auth, password_file),
	CYAML_FIELD_END
};

static const cyaml_schema_field_t tls_fields[] = {
	STR(raw_tls, ca_file),
	STR(raw_tls, cert_file),
	STR(raw_tls, key_file),
	STR(raw_tls, min_version),
	STR(raw_tls, server_name),
	STR(raw_tls, verify),
	STR(raw_tls, alpn),
	STR(raw_tls, allow_plaintext),
	CYAML_FIELD_END
};

static const cyaml_schema_field_t cloud_fields[] = {
	SEQ(raw_cloud, endpoints, &string_entry),
	STR(raw_cloud, client_id),
	STR(raw_cloud, keepalive),
	STR(raw_cloud, session_expiry),
	STR(raw_cloud, connect_timeout),
	STR(raw_cloud, max_inflight),
	MAP(raw_cloud, reconnect, reconnect_fields),
	STR(raw_cloud, status_topic),
	MAP(raw_cloud, auth, auth_fields),
	MAP(raw_cloud, tls, tls_fields),
	STR(raw_cloud, poison_after),
	STR(raw_cloud, lane_min_share),
	STR(raw_cloud, max_rate),
	STR(raw_cloud, max_bandwidth),
	STR(raw_cloud, topic_aliases),
	CYAML_FIELD_END
};

static const cyaml_schema_field_t spool_fields[] = {
	STR(raw_spool, path),
	STR(raw_spool, max_size),
	STR(raw_spool, on_full),
	STR(raw_spool, sync),
	STR(raw_spool, ttl),
	STR(raw_spool, max_tracked_topics),
	CYAML_FIELD_END
};

static const cyaml_schema_field_t aggregate_fields[] = {
	STR(raw_aggregate, window),
	STR(raw_aggregate, field),
	SEQ(raw_aggregate, emit, &string_entry),
	CYAML_FIELD_END
};

static const cyaml_schema_field_t e2c_fields[] = {
	STR(raw_e2c, local),
	STR(raw_e2c, cloud),
	STR(raw_e2c, qos),
	STR(raw_e2c, retain),
	STR(raw_e2c, drop),
	STR(raw_e2c, priority),
	STR(raw_e2c, live_first),
	STR(raw_e2c, ttl),
	CYAML_FIELD_IGNORE("headers", CYAML_FLAG_OPTIONAL),
	STR(raw_e2c, min_interval),
	STR(raw_e2c, on_change),
	STR(raw_e2c, deadband),
	STR(raw_e2c, field),
	STR(raw_e2c, heartbeat),
	MAP(raw_e2c, aggregate, aggregate_fields),
	CYAML_FIELD_END
};

static const cyaml_schema_value_t e2c_entry = {
	CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_e2c, e2c_fields),
};

static const cyaml_schema_field_t c2e_fields[] = {
	STR(raw_c2e, cloud),
	STR(raw_c2e, local),
	STR(raw_c2e, qos),
	STR(raw_c2e, retain),
	STR(raw_c2e, max_payload),
	CYAML_FIELD_END
};

static const cyaml_schema_value_t c2e_entry = {
	CYAML_VALUE_MAPPING(CYAML_FLAG_DEFAULT, struct raw_c2e, c2e_fields),
};

static const cyaml_schema_field_t metrics_fields[] = {
	STR(raw_metrics, listen),
	CYAML_FIELD_END
};

static const cyaml_schema_field_t top_fields[] = {
	STR(raw_config, site_id),
	MAP(raw_config, cloud, cloud_fields),
	MAP(raw_config, spool, spool_fields),
	STR(raw_config, status_interval),
	STR(raw_config, link_timeout),
	SEQ(raw_config, edge_to_cloud, &e2c_entry),
	SEQ(raw_config, cloud_to_edge, &c2e_entry),
	MAP(raw_config, metrics, metrics_fields),
	CYAML_FIELD_END
};

static const cyaml_schema_value_t top_schema = {
	CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, struct raw_config, top_fields),
};

struct keyline {
	char *path;
	unsigned line;
	yaml_node_t *node; /* the value */
};

struct loader {
	const char *name; /* basename of the file, for messages */
	const struct fb_logger *lg;
	yaml_document_t doc;
	struct keyline *keys;
	size_t key_count;
	size_t key_alloc;
	const char *site_id; /* what ${site_id} expands to */
	unsigned errors;
	bool oom;
};

static const struct keyline *key_find(const struct loader *ld, const char *path)
{
	/* last first: a duplicate key is reported at its second occurrence */
	for(size_t i = ld->key_count; i-- > 0;){
		if(strcmp(ld->keys[i].path, path) == 0){
			return &ld->keys[i];
		}
	}
	return NULL;
}

/* The line of PATH, or of its nearest parent that is in the file, or 1. */
static unsigned key_line(const struct loader *ld, const char *path)
{
	char buf[256];
	const struct keyline *k;
	char *cut;

	snprintf(buf, sizeof(buf), "%s", path);
	while(buf[0]){
		if((k = key_find(ld, buf)) != NULL){
			return k->line;
		}
		cut = buf + strlen(buf) - 1;
		while(cut > buf && *cut != '.' && *cut != '['){
			cut--;
		}
		*cut = '\0';
	}
	return 1;
}

static void report(struct loader *ld, int level, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void report(struct loader *ld, int level, const char *path, const char *fmt, ...)
{
	char what[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	fb_log(ld->lg, level, "%s:%u: %s: %s", ld->name, key_line(ld, path), path, what);
	if(level == MOSQ_LOG_ERR){
		ld->errors++;
	}
}

#define cfg_err(ld, path, ...) report((ld), MOSQ_LOG_ERR, (path), __VA_ARGS__)
#define cfg_warn(ld, path, ...) report((ld), MOSQ_LOG_WARNING, (path), __VA_ARGS__)

/* Step 1: index every key path of the libyaml document with its line. */

static void index_add(struct loader *ld, char *path, unsigned line, yaml_node_t *node)
{
	struct keyline *k;

	if(ld->key_count == ld->key_alloc){
		ld->key_alloc = ld->key_alloc ? ld->key_alloc * 2 : 64;
		k = realloc(ld->keys, ld->key_alloc * sizeof(*k));
		if(k == NULL){
			ld->oom = true;
			free(path);
			return;
		}
		ld->keys = k;
	}
	ld->keys[ld->key_count++] = (struct keyline){ path, line, node };
}

static void index_node(struct loader *ld, yaml_node_t *node, const char *path, unsigned depth)
{
	yaml_node_t *k, *v;
	char *sub;
	int n;

	if(node == NULL || depth > 16 || ld->oom || ld->key_count > CONFIG_MAX_KEYS){
		return;
	}
	if(node->type == YAML_MAPPING_NODE){
		for(yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++){
			k = yaml_document_get_node(&ld->doc, p->key);
			v = yaml_document_get_node(&ld->doc, p->value);
			if(k == NULL || k->type != YAML_SCALAR_NODE){
				continue;
			}
			if(asprintf(&sub, "%s%s%s", path, path[0] ? "." : "", (char *)k->data.scalar.value) < 0){
				ld->oom = true;
				return;
			}
			index_add(ld, sub, (unsigned)k->start_mark.line + 1, v);
			index_node(ld, v, sub, depth + 1);
		}
	}else if(node->type == YAML_SEQUENCE_NODE){
		n = 0;
		for(yaml_node_item_t *it = node->data.sequence.items.start; it < node->data.sequence.items.top; it++, n++){
			v = yaml_document_get_node(&ld->doc, *it);
			if(v == NULL){
				continue;
			}
			if(asprintf(&sub, "%s[%d]", path, n) < 0){
				ld->oom = true;
				return;
			}
			index_add(ld, sub, (unsigned)v->start_mark.line + 1, v);
			index_node(ld, v, sub, depth + 1);
		}
	}
}

/* What the document API drops without a word: a second document (libyaml and libcyaml read only
 * the first) and explicit tags (resolved or ignored, so "!!int", "!secret" change nothing). One
 * pass over the events finds the first of either; a syntax error ends the pass quietly (the
 * document load reports it). */
struct yaml_extras {
	bool second_doc;
	yaml_mark_t second_doc_mark;
	bool tag;
	yaml_mark_t tag_mark;
	char tag_text[64];
};

static int scan_events(const char *buf, size_t len, struct yaml_extras *x)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	unsigned docs = 0;
	bool done = false;

	if(!yaml_parser_initialize(&parser)){
		return -ENOMEM;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	while(!done && yaml_parser_parse(&parser, &ev)){
		const yaml_char_t *tag = NULL;

		switch(ev.type){
			case YAML_DOCUMENT_START_EVENT:
				if(++docs == 2){
					x->second_doc = true;
					x->second_doc_mark = ev.start_mark;
					done = true;
				}
				break;
			case YAML_SCALAR_EVENT:
				tag = ev.data.scalar.tag;
				break;
			case YAML_SEQUENCE_START_EVENT:
				tag = ev.data.sequence_start.tag;
				break;
			case YAML_MAPPING_START_EVENT:
				tag = ev.data.mapping_start.tag;
				break;
			case YAML_STREAM_END_EVENT:
				done = true;
				break;
			default:
				break;
		}
		if(tag && !x->tag){
			x->tag = true;
			x->tag_mark = ev.start_mark;
			snprintf(x->tag_text, sizeof(x->tag_text), "%s", (const char *)tag);
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	return 0;
}

/* The key path of the node that starts at MARK, or "(document)". */
static const char *path_at(const struct loader *ld, yaml_mark_t mark)
{
	for(size_t i = 0; i < ld->key_count; i++){
		if(ld->keys[i].node && ld->keys[i].node->start_mark.index == mark.index){
			return ld->keys[i].path;
		}
	}
	return "(document)";
}

static int parse_document(struct loader *ld, const char *buf, size_t len)
{
	struct yaml_extras x = { .second_doc = false };

	yaml_parser_t parser;
	int rc = 0;

	if(!yaml_parser_initialize(&parser)){
		return -ENOMEM;
	}
	yaml_parser_set_input_string(&parser, (const unsigned char *)buf, len);
	if(!yaml_parser_load(&parser, &ld->doc)){
		if(parser.error == YAML_MEMORY_ERROR){
			rc = -ENOMEM;
		}else{
			fb_log(ld->lg, MOSQ_LOG_ERR, "%s:%u: yaml: %s%s%s", ld->name,
					(unsigned)(parser.error == YAML_READER_ERROR ? 1 : parser.problem_mark.line + 1),
					parser.problem ? parser.problem : "syntax error",
					parser.context ? " " : "", parser.context ? parser.context : "");
			rc = -EINVAL;
		}
		memset(&ld->doc, 0, sizeof(ld->doc));
	}
	yaml_parser_delete(&parser);
	if(rc == 0){
		index_node(ld, yaml_document_get_root_node(&ld->doc), "", 0);
		if(ld->oom){
			rc = -ENOMEM;
		}else if(ld->key_count > CONFIG_MAX_KEYS){
			fb_log(ld->lg, MOSQ_LOG_ERR, "%s:1: (document): more than %d keys", ld->name, CONFIG_MAX_KEYS);
			rc = -EINVAL;
		}
	}
	if(rc == 0 && (rc = scan_events(buf, len, &x)) == 0){
		/* Both are reported: each is a reason to refuse the file. */
		if(x.tag){
			fb_log(ld->lg, MOSQ_LOG_ERR, "%s:%u: %s: YAML tags are not supported ('%s')", ld->name,
					(unsigned)x.tag_mark.line + 1, path_at(ld, x.tag_mark), x.tag_text);
			rc = -EINVAL;
		}
		if(x.second_doc){
			fb_log(ld->lg, MOSQ_LOG_ERR, "%s:%u: (document): a second YAML document is not supported "
					"(one configuration per file)", ld->name, (unsigned)x.second_doc_mark.line + 1);
			rc = -EINVAL;
		}
	}
	return rc;
}

/* Step 2: libcyaml, with its log turned into one message.
 *
 * On an error libcyaml 1.3.1 logs "Load: <what>", then "Load: Backtrace:" and, innermost first,
 * "  in mapping field 'KEY' (line: L, column: C)", "  in mapping (line: ...)" or
 * "  in sequence entry 'N' (line: ...)" where N counts the entries read so far. */

#define CAPTURE_FRAMES 16

struct cyaml_capture {
	char what[256];
	struct {
		char name[64]; /* field name, or "" for a sequence entry or a mapping */
		int index;     /* sequence entry, or -1 */
		unsigned line;
	} frames[CAPTURE_FRAMES];
	unsigned frame_count;
};

static void cyaml_log_fn(cyaml_log_t level, void *ctx, const char *fmt, va_list args)
{
	struct cyaml_capture *cap = ctx;
	char msg[256];
	const char *q, *e, *l;

	if(level < CYAML_LOG_ERROR){
		return;
	}
	vsnprintf(msg, sizeof(msg), fmt, args);
	msg[strcspn(msg, "\n")] = '\0';
	if(strncmp(msg, "  in ", 5) == 0){
		if(cap->frame_count == CAPTURE_FRAMES){
			return;
		}
		q = strchr(msg, '\'');
		e = q ? strchr(q + 1, '\'') : NULL;
		l = strstr(msg, "(line: ");
		cap->frames[cap->frame_count].name[0] = '\0';
		cap->frames[cap->frame_count].index = -1;
		cap->frames[cap->frame_count].line = l ? (unsigned)strtoul(l + 7, NULL, 10) : 0;
		if(strncmp(msg, "  in mapping field '", 20) == 0 && e){
			snprintf(cap->frames[cap->frame_count].name, sizeof(cap->frames[0].name), "%.*s",
					(int)(e - q - 1), q + 1);
		}else if(strncmp(msg, "  in sequence entry '", 21) == 0 && e){
			cap->frames[cap->frame_count].index = atoi(q + 1) - 1;
		}
		cap->frame_count++;
	}else if(cap->what[0] == '\0' && strcmp(msg, "Load: Backtrace:") != 0){
		snprintf(cap->what, sizeof(cap->what), "%s", strncmp(msg, "Load: ", 6) == 0 ? msg + 6 : msg);
	}
}

static void *cyaml_mem_fn(void *ctx, void *ptr, size_t size)
{
	/* realloc/free, so that fb_config_free() and config_apply_defaults() can mix with it */
	if(size == 0){
		free(ptr);
		return NULL;
	}
	return realloc(ptr, size);
}

static const cyaml_config_t cyaml_base_config = {
	.log_fn = cyaml_log_fn,
	.mem_fn = cyaml_mem_fn,
	.log_level = CYAML_LOG_ERROR,
	.flags = CYAML_CFG_NO_ALIAS, /* unknown keys stay errors (no CYAML_CFG_IGNORE_UNKNOWN_KEYS) */
};

static const char *cyaml_kind(const char *s)
{
	if(strncmp(s, "MAPPING", 7) == 0){
		return "a mapping";
	}else if(strncmp(s, "SEQUENCE", 8) == 0){
		return "a list";
	}else if(strcmp(s, "SCALAR") == 0 || strcmp(s, "STRING") == 0){
		return "a scalar value";
	}
	return s;
}

/* The schema of the mapping the capture's frames lead to, or NULL. */
static const cyaml_schema_field_t *cyaml_frames_schema(const struct cyaml_capture *cap)
{
	const cyaml_schema_value_t *v = &top_schema;
	const cyaml_schema_field_t *f;

	for(unsigned i = cap->frame_count; i-- > 0;){
		if(cap->frames[i].name[0]){
			if(v->type != CYAML_MAPPING){
				return NULL;
			}
			for(f = v->mapping.fields; f->key && strcmp(f->key, cap->frames[i].name); f++){
			}
			if(f->key == NULL){
				return NULL;
			}
			v = &f->value;
		}else if(cap->frames[i].index >= 0){
			if(v->type != CYAML_SEQUENCE){
				return NULL;
			}
			v = v->sequence.entry;
		}
	}
	return v->type == CYAML_MAPPING ? v->mapping.fields : NULL;
}

static void cyaml_report(struct loader *ld, const struct cyaml_capture *cap, cyaml_err_t err)
{
	char path[256] = "", what[512], expected[64], got[64];
	const cyaml_schema_field_t *f;
	const struct keyline *k;
	size_t n = 0;
	unsigned line = cap->frame_count ? cap->frames[0].line : 1;

	for(unsigned i = cap->frame_count; i-- > 0 && n < sizeof(path);){
		if(cap->frames[i].name[0]){
			n += snprintf(path + n, sizeof(path) - n, "%s%s", n ? "." : "", cap->frames[i].name);
		}else if(cap->frames[i].index >= 0){
			n += snprintf(path + n, sizeof(path) - n, "[%d]", cap->frames[i].index);
		}
	}
	if(strncmp(cap->what, "Unexpected key: ", 16) == 0){
		if(n < sizeof(path)){
			snprintf(path + n, sizeof(path) - n, "%s%s", n ? "." : "", cap->what + 16);
		}
		n = snprintf(what, sizeof(what), "unknown key");
		if((f = cyaml_frames_schema(cap)) != NULL){
			for(const char *sep = " (expected one of: "; f->key && n < sizeof(what); f++, sep = ", "){
				n += snprintf(what + n, sizeof(what) - n, "%s%s", sep, f->key);
			}
			if(n < sizeof(what)){
				snprintf(what + n, sizeof(what) - n, ")");
			}
		}
	}else if(sscanf(cap->what, "Expecting %63s got event: %63s", expected, got) == 2){
		expected[strcspn(expected, ",")] = '\0';
		snprintf(what, sizeof(what), "expected %s, got %s", cyaml_kind(expected), cyaml_kind(got));
	}else if(strncmp(cap->what, "Mapping field already seen: ", 28) == 0){
		snprintf(what, sizeof(what), "duplicate key");
	}else if(err == CYAML_ERR_ALIAS){
		snprintf(what, sizeof(what), "YAML anchors and aliases are not supported");
	}else{
		snprintf(what, sizeof(what), "%s", cap->what[0] ? cap->what : cyaml_strerror(err));
	}
	if((k = key_find(ld, path)) != NULL){
		line = k->line;
	}
	fb_log(ld->lg, MOSQ_LOG_ERR, "%s:%u: %s: %s", ld->name, line, path[0] ? path : "(document)", what);
}

/* Step 3: defaults, as the text an operator would write. */

static int set_defaults(char **const *fields, const char *const *values, size_t count)
{
	for(size_t i = 0; i < count; i++){
		if(*fields[i] == NULL && (*fields[i] = strdup(values[i])) == NULL){
			return -ENOMEM;
		}
	}
	return 0;
}

#define SET_DEFAULTS(fields, values) ({ \
		_Static_assert(ARRAY_SIZE(fields) == ARRAY_SIZE(values), "one default per key"); \
		set_defaults((fields), (values), ARRAY_SIZE(fields)); })

static int alloc_if_null(void **p, size_t size)
{
	if(*p == NULL && (*p = calloc(1, size)) == NULL){
		return -ENOMEM;
	}
	return 0;
}

static int config_apply_defaults(struct raw_config *raw)
{
	static const char *const cloud_defaults[] = { "flowmq-bridge-${site_id}", "30s", "1d", "10s", "64",
		"500ms", "60s", "1.3", "true", "false", "1GiB", "drop_oldest", "100ms", "10s", "3" };
	static const char *const e2c_defaults[] = { "1", "keep", "false" };
	static const char *const c2e_defaults[] = { "1", "keep", "256KiB" };
	struct raw_cloud *c;

	if(alloc_if_null((void **)&raw->cloud, sizeof(*raw->cloud)) < 0
			|| alloc_if_null((void **)&raw->spool, sizeof(*raw->spool)) < 0
			|| alloc_if_null((void **)&raw->cloud->reconnect, sizeof(*raw->cloud->reconnect)) < 0
			|| alloc_if_null((void **)&raw->cloud->auth, sizeof(*raw->cloud->auth)) < 0
			|| alloc_if_null((void **)&raw->cloud->tls, sizeof(*raw->cloud->tls)) < 0){
		return -ENOMEM;
	}
	c = raw->cloud;
	char **const cloud_keys[] = { &c->client_id, &c->keepalive, &c->session_expiry, &c->connect_timeout,
		&c->max_inflight, &c->reconnect->min, &c->reconnect->max, &c->tls->min_version, &c->tls->verify,
		&c->tls->allow_plaintext, &raw->spool->max_size, &raw->spool->on_full, &raw->spool->sync,
		&raw->status_interval, &c->poison_after };
	if(SET_DEFAULTS(cloud_keys, cloud_defaults) < 0){
		return -ENOMEM;
	}
	for(unsigned i = 0; i < raw->edge_to_cloud_count; i++){
		struct raw_e2c *r = &raw->edge_to_cloud[i];
		char **const keys[] = { &r->qos, &r->retain, &r->drop };
		if(SET_DEFAULTS(keys, e2c_defaults) < 0){
			return -ENOMEM;
		}
	}
	for(unsigned i = 0; i < raw->cloud_to_edge_count; i++){
		struct raw_c2e *r = &raw->cloud_to_edge[i];
		char **const keys[] = { &r->qos, &r->retain, &r->max_payload };
		if(SET_DEFAULTS(keys, c2e_defaults) < 0){
			return -ENOMEM;
		}
	}
	return 0;
}

/* Step 4: conversion and validation. Each helper logs its own error and returns false. */

static int parse_u64(const char *s, uint64_t *v, const char **end)
{
	uint64_t n = 0;
	const char *p = s;

	if(*p < '0' || *p > '9'){
		return -EINVAL;
	}
	for(; *p >= '0' && *p <= '9'; p++){
		if(n > (UINT64_MAX - (uint64_t)(*p - '0')) / 10){
			return -EINVAL;
		}
		n = n * 10 + (uint64_t)(*p - '0');
	}
	*v = n;
	*end = p;
	return 0;
}

struct unit {
	const char *name;
	uint64_t mul;
};

static int parse_with_units(const char *s, const struct unit *units, size_t count, uint64_t *out)
{
	const char *end;
	uint64_t n;

	if(s == NULL || parse_u64(s, &n, &end) < 0){
		return -EINVAL;
	}
	for(size_t i = 0; i < count; i++){
		if(strcmp(end, units[i].name) == 0){
			if(n > UINT64_MAX / units[i].mul){
				return -EINVAL;
			}
			*out = n * units[i].mul;
			return 0;
		}
	}
	return -EINVAL;
}

static const struct unit duration_units[] = {
	{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 }, { "d", 86400000 },
};

static const struct unit size_units[] = {
	{ "", 1 }, { "B", 1 }, { "KiB", 1ull << 10 }, { "MiB", 1ull << 20 }, { "GiB", 1ull << 30 },
	{ "TiB", 1ull << 40 },
};

int fb_parse_duration_ms(const char *s, uint64_t *ms)
{
	return parse_with_units(s, duration_units, ARRAY_SIZE(duration_units), ms);
}

int fb_parse_size(const char *s, uint64_t *bytes)
{
	return parse_with_units(s, size_units, ARRAY_SIZE(size_units), bytes);
}

/* Writes V with the largest unit that divides it exactly: "65535s", "1d", "64KiB". */
static const char *fmt_units(char *buf, size_t len, uint64_t v, const struct unit *units, size_t count)
{
	size_t i = count - 1;

	while(i > 0 && (v == 0 || v % units[i].mul != 0)){
		i--;
	}
	if(v == 0 && units == duration_units){
		i = 1;
	}
	snprintf(buf, len, "%" PRIu64 "%s", v / units[i].mul, units[i].name[0] ? units[i].name : "B");
	return buf;
}

static bool range_ok(struct loader *ld, const char *path, const char *s, uint64_t v, uint64_t min,
		uint64_t max, const struct unit *units, size_t count)
{
	char a[32], b[32];

	if(v >= min && v <= max){
		return true;
	}
	if(max == UINT64_MAX){
		cfg_err(ld, path, "'%s' must be at least %s", s, fmt_units(a, sizeof(a), min, units, count));
	}else{
		cfg_err(ld, path, "'%s' must be between %s and %s", s, fmt_units(a, sizeof(a), min, units, count),
				fmt_units(b, sizeof(b), max, units, count));
	}
	return false;
}

static bool all_digits(const char *s)
{
	return s[0] && strspn(s, "0123456789") == strlen(s);
}

static bool duration_at(struct loader *ld, const char *path, const char *s, uint64_t min, uint64_t max,
		bool whole_seconds, uint64_t *out)
{
	uint64_t v;

	if(fb_parse_duration_ms(s, &v) < 0){
		if(all_digits(s)){
			cfg_err(ld, path, "duration '%s' needs a unit: ms, s, m, h or d (e.g. %ss)", s, s);
		}else{
			cfg_err(ld, path, "invalid duration '%s' (expected a number and a unit: 250ms, 30s, 5m, 2h, 7d)", s);
		}
		return false;
	}
	if(whole_seconds && v % 1000 != 0){
		cfg_err(ld, path, "'%s' must be a whole number of seconds", s);
		return false;
	}
	if(!range_ok(ld, path, s, v, min, max, duration_units, ARRAY_SIZE(duration_units))){
		return false;
	}
	*out = v;
	return true;
}

static bool size_at(struct loader *ld, const char *path, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v;

	if(fb_parse_size(s, &v) < 0){
		cfg_err(ld, path, "invalid size '%s' (expected bytes or a number and a unit: 512KiB, 64MiB, 2GiB; "
				"units B, KiB, MiB, GiB, TiB)", s);
		return false;
	}
	if(!range_ok(ld, path, s, v, min, max, size_units, ARRAY_SIZE(size_units))){
		return false;
	}
	*out = v;
	return true;
}

static bool uint_at(struct loader *ld, const char *path, const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	const char *end;
	uint64_t v;

	if(parse_u64(s, &v, &end) < 0 || *end || v < min || v > max){
		cfg_err(ld, path, "invalid value '%s' (expected an integer from %" PRIu64 " to %" PRIu64 ")", s, min, max);
		return false;
	}
	*out = v;
	return true;
}

/* A share of the sending capacity: "5%", "2.5%" or "0%" (NULL: FB_LANE_MIN_SHARE_DEFAULT), up to
 * 50 %, in basis points (1/10000) into *OUT. */
static bool share_at(struct loader *ld, const char *path, const char *s, uint32_t *out)
{
	const char *end, *p;
	uint64_t whole, frac = 0, scale = 100;

	if(s == NULL){
		*out = FB_LANE_MIN_SHARE_DEFAULT;
		return true;
	}
	if(parse_u64(s, &whole, &end) < 0 || whole > 50){
		goto bad;
	}
	if(*end == '.'){
		p = end + 1;
		if(*p < '0' || *p > '9'){
			goto bad;
		}
		for(; *p >= '0' && *p <= '9'; p++){
			if(scale > 1){
				frac += (uint64_t)(*p - '0') * (scale / 10);
				scale /= 10;
			}else if(*p != '0'){
				goto bad; /* finer than a basis point */
			}
		}
		end = p;
	}
	if(strcmp(end, "%") != 0 || whole * 100 + frac > 5000){
		goto bad;
	}
	*out = (uint32_t)(whole * 100 + frac);
	return true;
bad:
	cfg_err(ld, path, "invalid value '%s' (expected a percentage from 0%% to 50%%, e.g. 5%%)", s);
	return false;
}

/* Returns the index of S in CHOICES (NULL-terminated), or -1 after logging the error. */
static int choice_at(struct loader *ld, const char *path, const char *s, const char *const *choices)
{
	char list[128] = "";
	size_t n = 0;

	for(int i = 0; choices[i]; i++){
		if(strcmp(s, choices[i]) == 0){
			return i;
		}
		n += snprintf(list + n, sizeof(list) - n, "%s%s", i ? " | " : "", choices[i]);
	}
	cfg_err(ld, path, "invalid value '%s' (expected %s)", s, list);
	return -1;
}

static bool bool_at(struct loader *ld, const char *path, const char *s, bool *out)
{
	static const char *const words[] = { "false", "no", "off", "true", "yes", "on", NULL };

	for(int i = 0; words[i]; i++){
		if(strcasecmp(s, words[i]) == 0){
			*out = i >= 3;
			return true;
		}
	}
	cfg_err(ld, path, "invalid value '%s' (expected true | false)", s);
	return false;
}

static bool required(struct loader *ld, const char *path, const char *s)
{
	if(s == NULL){
		cfg_err(ld, path, "missing required value");
	}
	return s != NULL;
}

static char *copy(struct loader *ld, const char *s)
{
	char *d = NULL;

	if(s && (d = strdup(s)) == NULL){
		ld->oom = true;
	}
	return d;
}

/* Returns S with ${site_id} expanded (caller frees), or NULL after logging the error. HEADER: S is
 * a header value, whose capture-time variables (route.h) stay as they are, for the capture. */
static char *expand_as(struct loader *ld, const char *path, const char *s, bool header)
{
	const size_t site_len = strlen(ld->site_id);
	size_t len = 0, var;
	const char *p, *end;
	char *out, *o;

	for(p = s; *p; p++){
		if(p[0] != '$' || p[1] != '{'){
			len++;
			continue;
		}
		if((end = strchr(p, '}')) == NULL){
			cfg_err(ld, path, "unterminated '${' in '%s'", s);
			return NULL;
		}
		if((var = fb_route_header_var(p)) > 0 && header){
			len += var;
			p += var - 1;
			continue;
		}
		if(strncmp(p, "${site_id}", 10) != 0){
			cfg_err(ld, path, "unknown variable '%.*s' (%s)", (int)(end - p + 1), p,
					header ? "header values may use ${site_id}, ${captured_at} and ${captured_at_ms}"
					: var ? "only ${site_id} is defined here; the capture time only in header values"
					: "only ${site_id} is defined");
			return NULL;
		}
		len += site_len;
		p = end;
	}
	if((out = o = malloc(len + 1)) == NULL){
		ld->oom = true;
		return NULL;
	}
	for(p = s; *p; p++){
		if(header && (var = fb_route_header_var(p)) > 0){
			memcpy(o, p, var);
			o += var;
			p += var - 1;
		}else if(p[0] == '$' && p[1] == '{'){
			memcpy(o, ld->site_id, site_len);
			o += site_len;
			p += 9;
		}else{
			*o++ = *p;
		}
	}
	*o = '\0';
	return out;
}

static char *expand(struct loader *ld, const char *path, const char *s)
{
	return expand_as(ld, path, s, false);
}

/* Returns S expanded and checked as a topic of KIND (caller frees), or NULL after logging. */
static char *topic_at(struct loader *ld, const char *path, const char *s, enum fb_topic_kind kind)
{
	static const char *const names[] = {
		[FB_TOPIC_FILTER] = "topic filter",
		[FB_TOPIC_TEMPLATE] = "topic template",
		[FB_TOPIC_PUBLISH] = "topic",
	};
	const char *why;
	char *t;

	if(s == NULL || (t = expand(ld, path, s)) == NULL){
		return NULL;
	}
	if(fb_route_check_topic(t, kind, &why) < 0){
		cfg_err(ld, path, "invalid %s '%s': %s", names[kind], t, why);
		free(t);
		return NULL;
	}
	return t;
}

/* TEMPLATE is filled from FILTER's wildcards, in order; without wildcards it is a fixed topic. */
static bool template_matches(struct loader *ld, const char *path, const char *template, const char *filter)
{
	char why[256];

	if(fb_route_check_template(filter, template, why, sizeof(why)) < 0){
		cfg_err(ld, path, "%s", why);
		return false;
	}
	return true;
}

/* What a file that is not a regular file is, for messages. */
static const char *file_kind(mode_t mode)
{
	if(S_ISDIR(mode)){
		return "a directory";
	}else if(S_ISFIFO(mode)){
		return "a FIFO";
	}else if(S_ISSOCK(mode)){
		return "a socket";
	}else if(S_ISCHR(mode) || S_ISBLK(mode)){
		return "a device";
	}
	return "not a regular file";
}

/* Opens FILE for reading without ever blocking: O_NONBLOCK, so that a FIFO (or a device) named
 * by mistake or by malice cannot hang the load, then fstat() of the descriptor itself (no window
 * between the check and the use). Returns the descriptor of a regular file with *ST filled in, or
 * -1 after logging the error at PATH. */
static int open_regular(struct loader *ld, const char *path, const char *file, struct stat *st)
{
	char e[128];
	int fd;

	if((fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) < 0){
		cfg_err(ld, path, "cannot read '%s': %s", file, strerror_r(errno, e, sizeof(e)));
		return -1;
	}
	if(fstat(fd, st) < 0){
		cfg_err(ld, path, "cannot read '%s': %s", file, strerror_r(errno, e, sizeof(e)));
		close(fd);
		return -1;
	}
	if(!S_ISREG(st->st_mode)){
		cfg_err(ld, path, "'%s' is not a regular file (%s)", file, file_kind(st->st_mode));
		close(fd);
		return -1;
	}
	return fd;
}

/* A secret file (a password file, a private key) that group or others may write is refused: anyone
 * could replace the secret. One they may only read is accepted (the read-only secret mounts of
 * Docker and Kubernetes are 0444 or 0644, owned by root); the callers warn about that. */
static bool secret_mode_ok(struct loader *ld, const char *path, const char *file, mode_t mode)
{
	if(mode & (S_IWGRP | S_IWOTH)){
		cfg_err(ld, path, "'%s' is writable by %s (mode %03o); chmod go-w", file,
				(mode & S_IWGRP) && (mode & S_IWOTH) ? "group and others" : mode & S_IWGRP ? "group" : "others",
				(unsigned)(mode & 0777));
		return false;
	}
	return true;
}

/* Checks that FILE can be opened for reading and is a regular file. SECRET: a private key, which
 * gets a warning when others may read it. */
static bool file_at(struct loader *ld, const char *path, const char *file, bool secret)
{
	struct stat st;
	int fd;

	if((fd = open_regular(ld, path, file, &st)) < 0){
		return false;
	}
	close(fd);
	if(secret && !secret_mode_ok(ld, path, file, st.st_mode)){
		return false;
	}
	if(secret && (st.st_mode & S_IROTH)){
		cfg_warn(ld, path, "private key '%s' is readable by others; chmod 600", file);
	}
	return true;
}

int fb_config_read_secret(const char *file, char **out, char *err, size_t errlen)
{
	char e[128];
	char *buf = NULL;
	struct stat st;
	size_t len = 0;
	ssize_t r;
	int fd, rc = 0;

	*out = NULL;
	if((fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) < 0 || fstat(fd, &st) < 0){
		rc = -errno;
		snprintf(err, errlen, "cannot read '%s': %s", file, strerror_r(-rc, e, sizeof(e)));
		if(fd >= 0){
			close(fd);
		}
		return rc;
	}
	if(!S_ISREG(st.st_mode)){
		snprintf(err, errlen, "'%s' is not a regular file (%s)", file, file_kind(st.st_mode));
		rc = -EINVAL;
	}else if(st.st_mode & (S_IWGRP | S_IWOTH)){
		/* Anyone could replace the secret. One that group or others may only read is accepted
		 * (the read-only secret mounts of Docker and Kubernetes are 0444 or 0644, owned by root):
		 * 1 tells the caller, which warns. */
		snprintf(err, errlen, "'%s' is writable by %s (mode %03o); chmod go-w", file,
				(st.st_mode & S_IWGRP) && (st.st_mode & S_IWOTH) ? "group and others"
				: st.st_mode & S_IWGRP ? "group" : "others", (unsigned)(st.st_mode & 0777));
		rc = -EACCES;
	}else if(st.st_size > SECRET_MAX_BYTES + 2){
		snprintf(err, errlen, "'%s' is larger than %d bytes", file, SECRET_MAX_BYTES);
		rc = -EFBIG;
	}else if((buf = malloc((size_t)st.st_size + 1)) == NULL){
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
	}else{
		while(len < (size_t)st.st_size && (r = read(fd, buf + len, (size_t)st.st_size - len)) > 0){
			len += (size_t)r;
		}
		buf[len] = '\0';
		if(len && buf[len - 1] == '\n'){
			buf[--len] = '\0';
			if(len && buf[len - 1] == '\r'){
				buf[--len] = '\0';
			}
		}
		if(len == 0){
			snprintf(err, errlen, "'%s' is empty", file);
			free(buf);
			buf = NULL;
			rc = -ENODATA;
		}else if(st.st_mode & (S_IRGRP | S_IROTH)){
			rc = 1;
		}
	}
	close(fd);
	*out = buf;
	return rc;
}

/* Returns the content of the secret FILE without one trailing newline (caller frees), or NULL
 * after logging. The file must be a regular file that group and others cannot write; one they can
 * read gets a warning. */
static char *secret_at(struct loader *ld, const char *path, const char *file)
{
	char err[4352];
	struct stat st;
	char *buf;
	int rc;

	rc = fb_config_read_secret(file, &buf, err, sizeof(err));
	if(rc == -ENOMEM){
		ld->oom = true;
	}else if(rc < 0){
		cfg_err(ld, path, "%s", err);
	}else if(rc == 1 && stat(file, &st) == 0){
		cfg_warn(ld, path, "'%s' is readable by %s (mode %03o); chmod 600 unless it is a read-only "
				"secret mount", file, (st.st_mode & S_IROTH) ? "others" : "group", (unsigned)(st.st_mode & 0777));
	}
	return buf;
}

static bool host_chars_ok(const char *h, size_t len, bool bracketed)
{
	const char *allowed = bracketed ? "0123456789abcdefABCDEF:." :
		"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_";

	for(size_t i = 0; i < len; i++){
		if(strchr(allowed, h[i]) == NULL){
			return false;
		}
	}
	return len > 0;
}

/* mqtts://host[:port], mqtt://host[:port], host may be [IPv6]. validate_tls() checks plaintext. */
static bool endpoint_at(struct loader *ld, const char *path, const char *url, struct fb_endpoint *ep)
{
	const char *host, *host_end, *rest;
	bool tls, bracketed;
	uint64_t port;

	if(strncmp(url, "mqtts://", 8) == 0){
		tls = true;
		host = url + 8;
	}else if(strncmp(url, "mqtt://", 7) == 0){
		tls = false;
		host = url + 7;
	}else{
		cfg_err(ld, path, "unsupported endpoint '%s' (expected mqtts://host[:port])", url);
		return false;
	}
	if((bracketed = *host == '[')){
		host++;
		host_end = strchr(host, ']');
		rest = host_end ? host_end + 1 : NULL;
	}else{
		host_end = host + strcspn(host, ":");
		rest = host_end;
	}
	if(rest == NULL || !host_chars_ok(host, (size_t)(host_end - host), bracketed)
			|| (*rest && *rest != ':')){
		cfg_err(ld, path, "invalid endpoint '%s' (expected mqtts://host[:port])", url);
		return false;
	}
	port = tls ? 8883 : 1883;
	if(*rest == ':' && (!all_digits(rest + 1) || strlen(rest + 1) > 5
			|| (port = strtoull(rest + 1, NULL, 10)) < 1 || port > 65535)){
		cfg_err(ld, path, "invalid port in '%s' (expected 1 to 65535)", url);
		return false;
	}
	ep->tls = tls;
	ep->port = (uint16_t)port;
	ep->url = copy(ld, url);
	if((ep->host = strndup(host, (size_t)(host_end - host))) == NULL){
		ld->oom = true;
	}
	return true;
}

static bool site_id_ok(const char *s)
{
	size_t n = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-");

	return n >= 1 && n <= 64 && s[n] == '\0';
}

static void validate_tls(struct loader *ld, const struct raw_cloud *c, struct fb_config *cfg)
{
	static const char *const tls_versions[] = { "1.3", "1.2", NULL };
	const struct raw_tls *t = c->tls;
	char path[64];
	int i;

	if(t->ca_file && file_at(ld, "cloud.tls.ca_file", t->ca_file, false)){
		cfg->cloud.tls.ca_file = copy(ld, t->ca_file);
	}
	if(t->cert_file && !t->key_file){
		cfg_err(ld, "cloud.tls.cert_file", "cert_file needs key_file");
	}else if(t->key_file && !t->cert_file){
		cfg_err(ld, "cloud.tls.key_file", "key_file needs cert_file");
	}else if(t->cert_file && file_at(ld, "cloud.tls.cert_file", t->cert_file, false)
			&& file_at(ld, "cloud.tls.key_file", t->key_file, true)){
		cfg->cloud.tls.cert_file = copy(ld, t->cert_file);
		cfg->cloud.tls.key_file = copy(ld, t->key_file);
	}
	if((i = choice_at(ld, "cloud.tls.min_version", t->min_version, tls_versions)) >= 0){
		cfg->cloud.tls.min_version = i == 0 ? 0x0304 : 0x0303;
	}
	cfg->cloud.tls.server_name = copy(ld, t->server_name);
	if(bool_at(ld, "cloud.tls.verify", t->verify, &cfg->cloud.tls.verify) && !cfg->cloud.tls.verify){
		cfg_warn(ld, "cloud.tls.verify", "certificate verification disabled");
	}
	if(t->alpn && strlen(t->alpn) > 255){
		cfg_err(ld, "cloud.tls.alpn", "longer than 255 bytes");
	}else{
		cfg->cloud.tls.alpn = copy(ld, t->alpn);
	}
	if(!bool_at(ld, "cloud.tls.allow_plaintext", t->allow_plaintext, &cfg->cloud.tls.allow_plaintext)){
		return;
	}
	for(unsigned e = 0; e < c->endpoints_count; e++){
		if(strncmp(c->endpoints[e], "mqtt://", 7) != 0){
			continue;
		}
		snprintf(path, sizeof(path), "cloud.endpoints[%u]", e);
		if(!cfg->cloud.tls.allow_plaintext){
			cfg_err(ld, path, "'%s' is not encrypted: use mqtts:// or set cloud.tls.allow_plaintext: true",
					c->endpoints[e]);
		}else if(c->auth->username){
			/* Once per load; session.c repeats it at every plaintext connect. */
			cfg_warn(ld, path, "'%s' is not encrypted: the username%s of cloud.auth go%s to it in clear",
					c->endpoints[e], c->auth->password_file ? " and password" : "",
					c->auth->password_file ? "" : "es");
			break;
		}
	}
}

/* S without a trailing "/s" (a rate may be written 500/s), in BUF of LEN bytes. */
static const char *per_second(const char *s, char *buf, size_t len)
{
	size_t n = strlen(s);

	if(n > 2 && strcmp(s + n - 2, "/s") == 0 && n - 2 < len){
		memcpy(buf, s, n - 2);
		buf[n - 2] = '\0';
		return buf;
	}
	return s;
}

/* cloud.max_rate and cloud.max_bandwidth: optional caps on what the link process sends. */
static void validate_caps(struct loader *ld, const struct raw_cloud *c, struct fb_config *cfg)
{
	char buf[64];
	const char *end, *s;
	uint64_t v;

	if(c->max_rate){
		s = per_second(c->max_rate, buf, sizeof(buf));
		if(parse_u64(s, &v, &end) < 0 || *end || v < 1 || v > FB_CONFIG_MAX_RATE_MAX){
			cfg_err(ld, "cloud.max_rate", "invalid value '%s' (expected messages per second, an integer from 1 "
					"to %u, e.g. 500 or 500/s)", c->max_rate, FB_CONFIG_MAX_RATE_MAX);
		}else{
			cfg->cloud.max_rate = (uint32_t)v;
		}
	}
	if(c->max_bandwidth){
		s = per_second(c->max_bandwidth, buf, sizeof(buf));
		size_at(ld, "cloud.max_bandwidth", s, 1024, 1ull << 40, &cfg->cloud.max_bandwidth);
	}
}

static void validate_cloud(struct loader *ld, const struct raw_cloud *c, struct fb_config *cfg)
{
	char path[64];
	uint64_t v;

	if(c->endpoints_count == 0){
		cfg_err(ld, "cloud.endpoints", "at least one endpoint is required (mqtts://host[:port])");
	}else if((cfg->cloud.endpoints = calloc(c->endpoints_count, sizeof(*cfg->cloud.endpoints))) == NULL){
		ld->oom = true;
	}else{
		for(unsigned e = 0; e < c->endpoints_count; e++){
			snprintf(path, sizeof(path), "cloud.endpoints[%u]", e);
			if(endpoint_at(ld, path, c->endpoints[e], &cfg->cloud.endpoints[cfg->cloud.endpoint_count])){
				cfg->cloud.endpoint_count++;
			}
		}
	}
	if((cfg->cloud.client_id = expand(ld, "cloud.client_id", c->client_id)) != NULL
			&& (cfg->cloud.client_id[0] == '\0' || strlen(cfg->cloud.client_id) > 65535)){
		cfg_err(ld, "cloud.client_id", "must be 1 to 65535 bytes");
	}
	if(duration_at(ld, "cloud.keepalive", c->keepalive, 5000, 65535000, true, &v)){
		cfg->cloud.keepalive_s = (uint32_t)(v / 1000);
	}
	if(duration_at(ld, "cloud.session_expiry", c->session_expiry, 0, UINT32_MAX * 1000ull, true, &v)){
		cfg->cloud.session_expiry_s = (uint32_t)(v / 1000);
	}
	if(duration_at(ld, "cloud.connect_timeout", c->connect_timeout, 100, HOUR_MS, false, &v)){
		cfg->cloud.connect_timeout_ms = (uint32_t)v;
	}
	if(uint_at(ld, "cloud.max_inflight", c->max_inflight, 1, 65535, &v)){
		cfg->cloud.max_inflight = (uint32_t)v;
	}
	if(uint_at(ld, "cloud.poison_after", c->poison_after, 1, FB_CONFIG_POISON_AFTER_MAX, &v)){
		cfg->cloud.poison_after = (uint32_t)v;
	}
	share_at(ld, "cloud.lane_min_share", c->lane_min_share, &cfg->cloud.lane_min_share_bp);
	if(duration_at(ld, "cloud.reconnect.min", c->reconnect->min, 1, DAY_MS, false, &v)){
		cfg->cloud.reconnect_min_ms = (uint32_t)v;
	}
	if(duration_at(ld, "cloud.reconnect.max", c->reconnect->max, 1, DAY_MS, false, &v)){
		cfg->cloud.reconnect_max_ms = (uint32_t)v;
	}
	if(cfg->cloud.reconnect_min_ms && cfg->cloud.reconnect_max_ms
			&& cfg->cloud.reconnect_min_ms > cfg->cloud.reconnect_max_ms){
		cfg_err(ld, "cloud.reconnect", "min (%s) is greater than max (%s)", c->reconnect->min,
				c->reconnect->max);
	}
	cfg->cloud.status_topic = topic_at(ld, "cloud.status_topic", c->status_topic, FB_TOPIC_PUBLISH);
	if(c->auth->username){
		cfg->cloud.username = expand(ld, "cloud.auth.username", c->auth->username);
	}
	if(c->auth->password_file
			&& (cfg->cloud.password = secret_at(ld, "cloud.auth.password_file", c->auth->password_file))){
		cfg->cloud.password_file = copy(ld, c->auth->password_file);
	}
	validate_tls(ld, c, cfg);
	validate_caps(ld, c, cfg);
}

static void validate_spool(struct loader *ld, const struct raw_spool *s, struct fb_config *cfg)
{
	static const char *const on_full[] = { "drop_oldest", "drop_new", "reject", NULL };
	uint64_t v;
	int i;

	if(required(ld, "spool.path", s->path)){
		cfg->spool.path = copy(ld, s->path);
	}
	size_at(ld, "spool.max_size", s->max_size, SPOOL_MIN_SIZE, UINT64_MAX, &cfg->spool.max_size);
	if((i = choice_at(ld, "spool.on_full", s->on_full, on_full)) >= 0){
		cfg->spool.on_full = (enum fb_on_full)i;
	}
	if(strcmp(s->sync, "always") == 0){
		cfg->spool.sync = FB_SYNC_ALWAYS;
	}else if(strcmp(s->sync, "never") == 0){
		cfg->spool.sync = FB_SYNC_NEVER;
	}else if(fb_parse_duration_ms(s->sync, &v) < 0){
		cfg_err(ld, "spool.sync", "invalid value '%s' (expected always | never | an interval such as 100ms)",
				s->sync);
	}else if(duration_at(ld, "spool.sync", s->sync, 1, HOUR_MS, false, &v)){
		cfg->spool.sync = FB_SYNC_INTERVAL;
		cfg->spool.sync_interval_ms = (uint32_t)v;
	}
	if(s->ttl){
		duration_at(ld, "spool.ttl", s->ttl, 1, UINT64_MAX, false, &cfg->spool.ttl_ms);
	}
}

static const char *rule_path(char *buf, size_t len, const char *section, size_t i, const char *key)
{
	snprintf(buf, len, "%s[%zu]%s%s", section, i, key ? "." : "", key ? key : "");
	return buf;
}

static void headers_at(struct loader *ld, size_t rule, struct fb_e2c_rule *r)
{
	char path[96], hpath[160];
	const struct keyline *k;
	yaml_node_t *node, *name, *value;
	size_t count;

	rule_path(path, sizeof(path), "edge_to_cloud", rule, "headers");
	if((k = key_find(ld, path)) == NULL || (node = k->node) == NULL){
		return;
	}
	if(node->type == YAML_SCALAR_NODE && node->data.scalar.length == 0){
		return;
	}
	if(node->type != YAML_MAPPING_NODE){
		cfg_err(ld, path, "expected a mapping of header names to values");
		return;
	}
	count = (size_t)(node->data.mapping.pairs.top - node->data.mapping.pairs.start);
	if(count == 0){
		return;
	}
	if((r->headers = calloc(count, sizeof(*r->headers))) == NULL){
		ld->oom = true;
		return;
	}
	for(yaml_node_pair_t *p = node->data.mapping.pairs.start; p < node->data.mapping.pairs.top; p++){
		name = yaml_document_get_node(&ld->doc, p->key);
		value = yaml_document_get_node(&ld->doc, p->value);
		snprintf(hpath, sizeof(hpath), "%s.%s", path,
				name && name->type == YAML_SCALAR_NODE ? (char *)name->data.scalar.value : "?");
		if(name == NULL || name->type != YAML_SCALAR_NODE || name->data.scalar.length == 0){
			cfg_err(ld, path, "header names must be non-empty strings");
		}else if(strcmp((char *)name->data.scalar.value, FB_ORIGIN_PROPERTY) == 0){
			cfg_err(ld, hpath, "reserved header name (the bridge sets it)");
		}else if(value == NULL || value->type != YAML_SCALAR_NODE){
			cfg_err(ld, hpath, "header value must be a string");
		}else{
			struct fb_header *h = &r->headers[r->header_count];
			const char *why;
			if((h->value = expand_as(ld, hpath, (char *)value->data.scalar.value, true)) == NULL){
				continue;
			}
			if(fb_route_check_header(h->value, &why) < 0){
				cfg_err(ld, hpath, "%s", why);
				free(h->value);
				h->value = NULL;
				continue;
			}
			h->name = copy(ld, (char *)name->data.scalar.value);
			r->header_count++;
		}
	}
}

static int qos_at(struct loader *ld, const char *path, const char *s)
{
	static const char *const levels[] = { "0", "1", "2", NULL };

	return choice_at(ld, path, s, levels);
}

static bool retain_clear_at(struct loader *ld, const char *path, const char *s)
{
	static const char *const modes[] = { "keep", "clear", NULL };

	return choice_at(ld, path, s, modes) == 1;
}

/* A dotted path of JSON object keys ("a.b.c"): no empty key. */
static bool field_path_ok(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && s[0] != '.' && s[n - 1] != '.' && strstr(s, "..") == NULL;
}

static char *field_at(struct loader *ld, const char *path, const char *s)
{
	if(!field_path_ok(s)){
		cfg_err(ld, path, "invalid field '%s' (expected a key of a JSON object, dotted for nested "
				"objects: temperature, sensor.value)", s);
		return NULL;
	}
	return copy(ld, s);
}

/* The options that make a rule send less (README.md, "Sending less"). */
static void validate_reduce(struct loader *ld, size_t i, const struct raw_e2c *rr, struct fb_e2c_rule *r)
{
	static const char *const emits[] = { "count", "min", "max", "avg", "sum", "last", NULL };
	struct fb_reduce_opts *o = &r->reduce;
	const struct raw_aggregate *a = rr->aggregate;
	char path[128], *end;
	int k;

#define R(key) rule_path(path, sizeof(path), "edge_to_cloud", i, (key))
	if(r->drop){
		static const char *const keys[] = { "min_interval", "on_change", "deadband", "field", "heartbeat",
			"aggregate", NULL };
		for(k = 0; keys[k]; k++){
			if(key_find(ld, R(keys[k]))){
				cfg_err(ld, path, "not allowed with drop: true");
			}
		}
		return;
	}
	if(rr->min_interval){
		duration_at(ld, R("min_interval"), rr->min_interval, 1, DAY_MS, false, &o->min_interval_ms);
	}
	if(rr->on_change){
		bool_at(ld, R("on_change"), rr->on_change, &o->on_change);
	}
	if(rr->deadband){
		errno = 0;
		o->deadband = strtod(rr->deadband, &end);
		if(end == rr->deadband || *end != '\0' || errno != 0 || !(o->deadband >= 0) || o->deadband > 1e300){
			cfg_err(ld, R("deadband"), "invalid value '%s' (expected a number of at least 0, e.g. 0.5)",
					rr->deadband);
		}else{
			o->has_deadband = true;
		}
	}
	if(rr->field){
		o->field = field_at(ld, R("field"), rr->field);
	}
	if(rr->heartbeat){
		duration_at(ld, R("heartbeat"), rr->heartbeat, 1, 7 * DAY_MS, false, &o->heartbeat_ms);
		if(!o->on_change && !rr->deadband){
			cfg_err(ld, R("heartbeat"), "needs on_change or deadband (without them every message is sent)");
		}
	}
	if(rr->field && !o->on_change && !rr->deadband && !a){
		cfg_err(ld, R("field"), "needs on_change, deadband or aggregate");
	}
	if(a == NULL){
		return;
	}
	if(rr->min_interval || o->on_change || rr->deadband || rr->heartbeat){
		cfg_err(ld, R("aggregate"), "cannot be combined with min_interval, on_change, deadband or heartbeat");
	}
	if(required(ld, R("aggregate.window"), a->window)){
		duration_at(ld, path, a->window, 100, DAY_MS, false, &o->window_ms);
	}
	if(a->field){
		o->agg_field = field_at(ld, R("aggregate.field"), a->field);
	}else if(o->field){
		o->agg_field = copy(ld, o->field);
	}
	o->emit = a->emit_count ? 0 : FB_AGG_ALL;
	for(unsigned e = 0; e < a->emit_count; e++){
		char epath[160];

		snprintf(epath, sizeof(epath), "%s[%u]", R("aggregate.emit"), e);
		if(a->emit[e] && (k = choice_at(ld, epath, a->emit[e], emits)) >= 0){
			o->emit |= 1u << k;
		}
	}
#undef R
}

/* Keys of the cloud and spool sections that belong to the rules' reduction and aliases. */
static void validate_reduce_globals(struct loader *ld, const struct raw_config *raw, struct fb_config *cfg)
{
	uint64_t v;

	cfg->cloud.topic_aliases = true;
	if(raw->cloud->topic_aliases){
		bool_at(ld, "cloud.topic_aliases", raw->cloud->topic_aliases, &cfg->cloud.topic_aliases);
	}
	cfg->spool.max_tracked_topics = 100000;
	if(raw->spool->max_tracked_topics
			&& uint_at(ld, "spool.max_tracked_topics", raw->spool->max_tracked_topics, 1, 100000000, &v)){
		cfg->spool.max_tracked_topics = (uint32_t)v;
	}
}

static void validate_rules(struct loader *ld, const struct raw_config *raw, struct fb_config *cfg)
{
	char path[96];
	uint64_t v;

#define E2C(key) rule_path(path, sizeof(path), "edge_to_cloud", i, (key))
#define C2E(key) rule_path(path, sizeof(path), "cloud_to_edge", i, (key))

	if(raw->edge_to_cloud_count + raw->cloud_to_edge_count == 0){
		cfg_err(ld, "edge_to_cloud", "no edge_to_cloud or cloud_to_edge rules");
		return;
	}
	if(raw->edge_to_cloud_count && (cfg->e2c = calloc(raw->edge_to_cloud_count, sizeof(*cfg->e2c))) == NULL){
		ld->oom = true;
		return;
	}
	for(size_t i = 0; i < raw->edge_to_cloud_count; i++){
		const struct raw_e2c *rr = &raw->edge_to_cloud[i];
		struct fb_e2c_rule *r = &cfg->e2c[cfg->e2c_count++];

		r->line = key_line(ld, E2C(NULL));
		r->qos = qos_at(ld, E2C("qos"), rr->qos);
		r->retain_clear = retain_clear_at(ld, E2C("retain"), rr->retain);
		r->priority = FB_LANE_DEFAULT;
		if(rr->priority && uint_at(ld, E2C("priority"), rr->priority, 0, FB_LANES - 1, &v)){
			r->priority = (unsigned)v;
		}
		if(rr->live_first){
			bool_at(ld, E2C("live_first"), rr->live_first, &r->live_first);
		}
		bool_at(ld, E2C("drop"), rr->drop, &r->drop);
		validate_reduce(ld, i, rr, r);
		if(required(ld, E2C("local"), rr->local)){
			r->local = topic_at(ld, path, rr->local, FB_TOPIC_FILTER);
		}
		if(r->drop){
			if(rr->cloud){
				cfg_err(ld, E2C("cloud"), "not allowed with drop: true");
			}
			if(key_find(ld, E2C("headers"))){
				cfg_err(ld, path, "not allowed with drop: true");
			}
			if(rr->ttl){
				cfg_err(ld, E2C("ttl"), "not allowed with drop: true");
			}
			continue;
		}
		if(required(ld, E2C("cloud"), rr->cloud) && (r->cloud = topic_at(ld, path, rr->cloud, FB_TOPIC_TEMPLATE))
				&& r->local && !template_matches(ld, path, r->cloud, r->local)){
			free(r->cloud);
			r->cloud = NULL;
		}
		headers_at(ld, i, r);
		if(rr->ttl){
			duration_at(ld, E2C("ttl"), rr->ttl, 1, UINT64_MAX, false, &r->ttl_ms);
		}
	}
	if(raw->cloud_to_edge_count && (cfg->c2e = calloc(raw->cloud_to_edge_count, sizeof(*cfg->c2e))) == NULL){
		ld->oom = true;
		return;
	}
	for(size_t i = 0; i < raw->cloud_to_edge_count; i++){
		const struct raw_c2e *rr = &raw->cloud_to_edge[i];
		struct fb_c2e_rule *r = &cfg->c2e[cfg->c2e_count++];

		r->line = key_line(ld, C2E(NULL));
		r->qos = qos_at(ld, C2E("qos"), rr->qos);
		r->retain_clear = retain_clear_at(ld, C2E("retain"), rr->retain);
		if(size_at(ld, C2E("max_payload"), rr->max_payload, 1, MQTT_MAX_PAYLOAD, &v)){
			r->max_payload = (uint32_t)v;
		}
		if(required(ld, C2E("cloud"), rr->cloud)){
			r->cloud = topic_at(ld, path, rr->cloud, FB_TOPIC_FILTER);
		}
		if(required(ld, C2E("local"), rr->local)
				&& (r->local = topic_at(ld, path, rr->local, FB_TOPIC_TEMPLATE))
				&& r->cloud && !template_matches(ld, path, r->local, r->cloud)){
			free(r->local);
			r->local = NULL;
		}
	}
#undef E2C
#undef C2E
}

/* A cloud subscription that matches what this edge publishes to the cloud brings it back. */
static void warn_echo_loops(struct loader *ld, const struct fb_config *cfg)
{
	char path[96];

	for(size_t j = 0; j < cfg->c2e_count; j++){
		for(size_t i = 0; i < cfg->e2c_count; i++){
			const char *sub = cfg->c2e[j].cloud, *pub = cfg->e2c[i].cloud;
			if(sub && pub && fb_route_filters_overlap(sub, pub)){
				cfg_warn(ld, rule_path(path, sizeof(path), "cloud_to_edge", j, "cloud"),
						"'%s' overlaps edge_to_cloud[%zu].cloud '%s': forwarded messages come back (echo loop risk)",
						sub, i, pub);
			}
		}
	}
}

/* metrics.listen: ADDRESS:PORT, ADDRESS a numeric IPv4 address or a bracketed IPv6 one (the
 * endpoint binds exactly there, no name lookup); unset: no endpoint. */
static void validate_metrics(struct loader *ld, const struct raw_metrics *m, struct fb_config *cfg)
{
	static const char *const path = "metrics.listen";
	const char *s = m ? m->listen : NULL, *host, *host_end, *colon;
	char addr[INET6_ADDRSTRLEN];
	unsigned char bin[sizeof(struct in6_addr)];
	uint64_t port;
	size_t len;
	bool v6;

	if(s == NULL){
		return;
	}
	if((v6 = *s == '[')){
		host = s + 1;
		host_end = strchr(host, ']');
		colon = host_end ? host_end + 1 : NULL;
	}else{
		host = s;
		host_end = strrchr(s, ':');
		colon = host_end;
	}
	if(host_end == NULL || colon == NULL || *colon != ':'){
		cfg_err(ld, path, "invalid listen address '%s' (expected ADDRESS:PORT, e.g. 127.0.0.1:9234)", s);
		return;
	}
	len = (size_t)(host_end - host);
	if(len == 0 || len >= sizeof(addr)){
		cfg_err(ld, path, "invalid address in '%s' (expected a numeric IPv4 address or [IPv6])", s);
		return;
	}
	memcpy(addr, host, len);
	addr[len] = '\0';
	if(inet_pton(v6 ? AF_INET6 : AF_INET, addr, bin) != 1){
		cfg_err(ld, path, "invalid address in '%s' (expected a numeric IPv4 address or [IPv6])", s);
		return;
	}
	if(!all_digits(colon + 1) || strlen(colon + 1) > 5 || (port = strtoull(colon + 1, NULL, 10)) < 1
			|| port > 65535){
		cfg_err(ld, path, "invalid port in '%s' (expected 1 to 65535)", s);
		return;
	}
	cfg->metrics.listen = copy(ld, s);
	cfg->metrics.host = copy(ld, addr);
	cfg->metrics.port = (uint16_t)port;
	cfg->metrics.ipv6 = v6;
}

static void config_validate(struct loader *ld, const struct raw_config *raw, struct fb_config *cfg)
{
	uint64_t v;

	ld->site_id = "site";
	if(required(ld, "site_id", raw->site_id)){
		if(site_id_ok(raw->site_id)){
			ld->site_id = raw->site_id;
			cfg->site_id = copy(ld, raw->site_id);
		}else{
			cfg_err(ld, "site_id", "invalid site_id '%s' (1 to 64 of A-Z a-z 0-9 _ . -)", raw->site_id);
		}
	}
	validate_cloud(ld, raw->cloud, cfg);
	validate_spool(ld, raw->spool, cfg);
	if(duration_at(ld, "status_interval", raw->status_interval, 100, DAY_MS, false, &v)){
		cfg->status_interval_ms = (uint32_t)v;
	}
	cfg->link_timeout_ms = 10000;
	if(raw->link_timeout && duration_at(ld, "link_timeout", raw->link_timeout, 1000, DAY_MS, false, &v)){
		cfg->link_timeout_ms = (uint32_t)v;
	}
	validate_rules(ld, raw, cfg);
	validate_reduce_globals(ld, raw, cfg);
	validate_metrics(ld, raw->metrics, cfg);
	warn_echo_loops(ld, cfg);
}

static int read_file(const char *path, const struct fb_logger *lg, char **out, size_t *out_len)
{
	struct stat st;
	char e[128], *buf;
	size_t len = 0;
	ssize_t r;
	int fd, err;

	/* O_NONBLOCK: a FIFO must not hang the broker or `check` (see open_regular()). */
	if((fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)) < 0){
		err = errno;
		fb_log(lg, MOSQ_LOG_ERR, "%s: cannot open: %s", path, strerror_r(err, e, sizeof(e)));
		return -err;
	}
	if(fstat(fd, &st) < 0){
		err = errno;
		fb_log(lg, MOSQ_LOG_ERR, "%s: cannot open: %s", path, strerror_r(err, e, sizeof(e)));
		close(fd);
		return -err;
	}
	if(!S_ISREG(st.st_mode) || st.st_size > CONFIG_MAX_BYTES){
		if(S_ISREG(st.st_mode)){
			fb_log(lg, MOSQ_LOG_ERR, "%s: cannot open: larger than %d bytes", path, CONFIG_MAX_BYTES);
		}else{
			fb_log(lg, MOSQ_LOG_ERR, "%s: cannot open: not a regular file (%s)", path, file_kind(st.st_mode));
		}
		close(fd);
		return -EINVAL;
	}
	if((buf = malloc((size_t)st.st_size + 1)) == NULL){
		close(fd);
		return -ENOMEM;
	}
	while(len < (size_t)st.st_size && (r = read(fd, buf + len, (size_t)st.st_size - len)) > 0){
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	return 0;
}

int fb_config_load(const char *path, const struct fb_logger *lg, struct fb_config **out)
{
	struct loader ld = { .lg = lg };
	struct cyaml_capture cap = { .frame_count = 0 };
	cyaml_config_t cy = cyaml_base_config;
	struct raw_config *raw = NULL;
	struct fb_config *cfg = NULL;
	cyaml_err_t cerr;
	char *buf = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	ld.name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
	if((rc = read_file(path, lg, &buf, &len)) < 0){
		return rc;
	}
	if((rc = parse_document(&ld, buf, len)) < 0){
		goto out;
	}
	cy.log_ctx = &cap;
	cerr = cyaml_load_data((const uint8_t *)buf, len, &cy, &top_schema, (cyaml_data_t **)&raw, NULL);
	if(cerr == CYAML_ERR_OOM){
		rc = -ENOMEM;
		goto out;
	}else if(cerr != CYAML_OK){
		cyaml_report(&ld, &cap, cerr);
		rc = -EINVAL;
		goto out;
	}
	if((raw == NULL && (raw = calloc(1, sizeof(*raw))) == NULL)
			|| (rc = config_apply_defaults(raw)) < 0 || (cfg = calloc(1, sizeof(*cfg))) == NULL
			|| (cfg->file = strdup(path)) == NULL){
		rc = -ENOMEM;
		goto out;
	}
	config_validate(&ld, raw, cfg);
	rc = ld.oom ? -ENOMEM : ld.errors ? -EINVAL : 0;
out:
	if(rc == 0){
		*out = cfg;
	}else{
		fb_config_free(cfg);
	}
	cyaml_free(&cy, &top_schema, raw, 0);
	for(size_t i = 0; i < ld.key_count; i++){
		free(ld.keys[i].path);
	}
	free(ld.keys);
	yaml_document_delete(&ld.doc);
	free(buf);
	return rc;
}

void fb_config_free(struct fb_config *cfg)
{
	if(cfg == NULL){
		return;
	}
	for(size_t i = 0; i < cfg->cloud.endpoint_count; i++){
		free(cfg->cloud.endpoints[i].url);
		free(cfg->cloud.endpoints[i].host);
	}
	free(cfg->cloud.endpoints);
	free(cfg->cloud.client_id);
	free(cfg->cloud.status_topic);
	free(cfg->cloud.username);
	free(cfg->cloud.password_file);
	free(cfg->cloud.password);
	free(cfg->cloud.tls.ca_file);
	free(cfg->cloud.tls.cert_file);
	free(cfg->cloud.tls.key_file);
	free(cfg->cloud.tls.server_name);
	free(cfg->cloud.tls.alpn);
	free(cfg->spool.path);
	for(size_t i = 0; i < cfg->e2c_count; i++){
		free(cfg->e2c[i].local);
		free(cfg->e2c[i].cloud);
		for(size_t h = 0; h < cfg->e2c[i].header_count; h++){
			free(cfg->e2c[i].headers[h].name);
			free(cfg->e2c[i].headers[h].value);
		}
		free(cfg->e2c[i].headers);
		free(cfg->e2c[i].reduce.field);
		free(cfg->e2c[i].reduce.agg_field);
	}
	free(cfg->e2c);
	for(size_t i = 0; i < cfg->c2e_count; i++){
		free(cfg->c2e[i].cloud);
		free(cfg->c2e[i].local);
	}
	free(cfg->c2e);
	free(cfg->metrics.listen);
	free(cfg->metrics.host);
	free(cfg->site_id);
	free(cfg->file);
	free(cfg);
}

static bool str_same(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

bool fb_config_cloud_equal(const struct fb_config *a, const struct fb_config *b)
{
	if(a->cloud.endpoint_count != b->cloud.endpoint_count){
		return false;
	}
	for(size_t i = 0; i < a->cloud.endpoint_count; i++){
		if(!str_same(a->cloud.endpoints[i].url, b->cloud.endpoints[i].url)){
			return false;
		}
	}
	/* The password itself is read again at every connection attempt: its file's name counts. */
	return str_same(a->cloud.client_id, b->cloud.client_id)
		&& a->cloud.keepalive_s == b->cloud.keepalive_s
		&& a->cloud.session_expiry_s == b->cloud.session_expiry_s
		&& a->cloud.connect_timeout_ms == b->cloud.connect_timeout_ms
		&& a->cloud.max_inflight == b->cloud.max_inflight
		&& a->cloud.reconnect_min_ms == b->cloud.reconnect_min_ms
		&& a->cloud.reconnect_max_ms == b->cloud.reconnect_max_ms
		&& str_same(a->cloud.status_topic, b->cloud.status_topic)
		&& str_same(a->cloud.username, b->cloud.username)
		&& str_same(a->cloud.password_file, b->cloud.password_file)
		&& str_same(a->cloud.tls.ca_file, b->cloud.tls.ca_file)
		&& str_same(a->cloud.tls.cert_file, b->cloud.tls.cert_file)
		&& str_same(a->cloud.tls.key_file, b->cloud.tls.key_file)
		&& a->cloud.tls.min_version == b->cloud.tls.min_version
		&& str_same(a->cloud.tls.server_name, b->cloud.tls.server_name)
		&& a->cloud.tls.verify == b->cloud.tls.verify
		&& str_same(a->cloud.tls.alpn, b->cloud.tls.alpn)
		&& a->cloud.tls.allow_plaintext == b->cloud.tls.allow_plaintext
		&& a->cloud.poison_after == b->cloud.poison_after
		&& a->cloud.lane_min_share_bp == b->cloud.lane_min_share_bp
		&& a->cloud.max_rate == b->cloud.max_rate
		&& a->cloud.max_bandwidth == b->cloud.max_bandwidth
		&& a->cloud.topic_aliases == b->cloud.topic_aliases;
}

static void restart_key(char *buf, size_t len, size_t *used, const char *key)
{
	int n;

	if(*used >= len){
		return;
	}
	n = snprintf(buf + *used, len - *used, "%s%s", *used ? ", " : "", key);
	*used += n > 0 ? (size_t)n : 0;
}

size_t fb_config_restart_keys(const struct fb_config *a, const struct fb_config *b, char *buf, size_t len)
{
	size_t used = 0;
	bool c2e = a->c2e_count == b->c2e_count;

	if(len){
		buf[0] = '\0';
	}
	if(!str_same(a->spool.path, b->spool.path)){
		restart_key(buf, len, &used, "spool.path");
	}
	if(a->spool.max_size != b->spool.max_size){
		restart_key(buf, len, &used, "spool.max_size");
	}
	if(a->spool.on_full != b->spool.on_full){
		restart_key(buf, len, &used, "spool.on_full");
	}
	if(a->spool.sync != b->spool.sync || a->spool.sync_interval_ms != b->spool.sync_interval_ms){
		restart_key(buf, len, &used, "spool.sync");
	}
	if(a->spool.ttl_ms != b->spool.ttl_ms){
		restart_key(buf, len, &used, "spool.ttl");
	}
	for(size_t i = 0; c2e && i < a->c2e_count; i++){
		const struct fb_c2e_rule *x = &a->c2e[i], *y = &b->c2e[i];

		c2e = str_same(x->cloud, y->cloud) && str_same(x->local, y->local) && x->qos == y->qos
			&& x->retain_clear == y->retain_clear && x->max_payload == y->max_payload;
	}
	if(!c2e){
		restart_key(buf, len, &used, "cloud_to_edge");
	}
	if(a->link_timeout_ms != b->link_timeout_ms){
		restart_key(buf, len, &used, "link_timeout");
	}
	return used;
}
