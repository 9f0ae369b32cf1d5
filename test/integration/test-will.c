/* Will messages reach the cloud like any matched message: a client killed, one whose keepalive
 * expired, a delayed Will, a session taken over; none for a clean DISCONNECT, none for a resumed
 * session, none that the edge's ACL denies; ordinary publishes on the same topics exactly once.
 * Real brokers: the cloud stand-in (TLS) and an edge mosquitto with the plugin, whose loopback
 * subscriber connects to the edge's own listener. */
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mqtt_protocol.h>

#include "common.h"

#define CLOUD_FILTER "edge/site-A/#"
#define READY_LINE "are forwarded through the loopback subscriber"

/* Standard rules plus one that overlaps the first: local/telemetry/alarm matches both (the first
 * wins), so the loopback gets two copies of it and must use one. */
#define WILL_YAML FBH_YAML_BASE \
	"edge_to_cloud:\n" \
	"  - local: local/telemetry/#\n" \
	"    cloud: edge/${site_id}/telemetry/#\n" \
	"    qos: 1\n" \
	"    headers:\n" \
	"      edge-site-id: ${site_id}\n" \
	"  - local: local/+/alarm\n" \
	"    cloud: edge/${site_id}/alarm/+\n" \
	"  - local: local/debug/#\n" \
	"    drop: true\n"

static long now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---- raw clients: libmosquitto without a loop thread, so the test decides what they send ---- */

struct raw {
	struct mosquitto *m;
	int connack; /* -1 until the CONNACK came */
};

static void raw_on_connect(struct mosquitto *m, void *ud, int rc, int flags, const mosquitto_property *p)
{
	struct raw *r = ud;
	(void)m; (void)flags; (void)p;
	r->connack = rc;
}

/* Connects client ID (with USERNAME, or none) to the edge with MQTT v5, KEEPALIVE seconds, SESSION_EXPIRY (0: none, clean
 * start; else clean start off), and a QoS 1 Will on WILL_TOPIC (NULL: none) with WILL_PAYLOAD, the
 * user property state=gone, content type text/plain and WILL_DELAY seconds. Returns once the
 * CONNACK accepted it. */
static struct raw *raw_connect(int port, const char *id, const char *username, int keepalive, uint32_t session_expiry,
		const char *will_topic, const char *will_payload, uint32_t will_delay)
{
	struct raw *r = calloc(1, sizeof(*r));
	mosquitto_property *cp = NULL;
	long deadline = now_ms() + 10000;

	ck_assert_ptr_nonnull(r);
	r->connack = -1;
	r->m = mosquitto_new(id, session_expiry == 0, r);
	ck_assert_ptr_nonnull(r->m);
	ck_assert_int_eq(mosquitto_int_option(r->m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5), 0);
	mosquitto_connect_v5_callback_set(r->m, raw_on_connect);
	if(username){
		ck_assert_int_eq(mosquitto_username_pw_set(r->m, username, NULL), 0);
	}
	if(will_topic){
		mosquitto_property *wp = NULL;

		ck_assert_int_eq(mosquitto_property_add_string_pair(&wp, MQTT_PROP_USER_PROPERTY, "state", "gone"), 0);
		ck_assert_int_eq(mosquitto_property_add_string(&wp, MQTT_PROP_CONTENT_TYPE, "text/plain"), 0);
		if(will_delay){
			ck_assert_int_eq(mosquitto_property_add_int32(&wp, MQTT_PROP_WILL_DELAY_INTERVAL, will_delay), 0);
		}
		/* The library owns WP from here on. */
		ck_assert_int_eq(mosquitto_will_set_v5(r->m, will_topic, (int)strlen(will_payload), will_payload, 1,
					false, wp), 0);
	}
	if(session_expiry){
		ck_assert_int_eq(mosquitto_property_add_int32(&cp, MQTT_PROP_SESSION_EXPIRY_INTERVAL, session_expiry), 0);
	}
	ck_assert_int_eq(mosquitto_connect_bind_v5(r->m, "127.0.0.1", port, keepalive, NULL, cp), 0);
	mosquitto_property_free_all(&cp);
	while(r->connack < 0 && now_ms() < deadline){
		mosquitto_loop(r->m, 100, 1);
	}
	ck_assert_msg(r->connack == 0, "client %s: CONNACK %d", id, r->connack);
	return r;
}

/* The connection dies without DISCONNECT: the broker reads end-of-file. */
static void raw_kill(struct raw *r)
{
	ck_assert_int_eq(shutdown(mosquitto_socket(r->m), SHUT_RDWR), 0);
	mosquitto_destroy(r->m);
	free(r);
}

/* DISCONNECT with reason 0 (normal: no Will), then close. */
static void raw_disconnect(struct raw *r)
{
	ck_assert_int_eq(mosquitto_disconnect_v5(r->m, 0, NULL), 0);
	for(int i = 0; i < 10 && mosquitto_socket(r->m) >= 0; i++){
		mosquitto_loop(r->m, 50, 1);
	}
	mosquitto_destroy(r->m);
	free(r);
}

/* Forgets the client without a word on the wire (its socket stays open until destroyed). */
static void raw_free(struct raw *r)
{
	mosquitto_destroy(r->m);
	free(r);
}

/* ---- assertions on what arrived -------------------------------------------------------------- */

static size_t count_payload(struct fbh_sub *s, const char *topic, const char *payload)
{
	size_t n = 0;

	for(size_t i = 0; i < fbh_sub_count(s); i++){
		const struct fbh_msg *m = fbh_sub_msg(s, i);

		if(!strcmp(m->topic, topic) && !strcmp(m->payload, payload)){
			n++;
		}
	}
	return n;
}

static const struct fbh_msg *find_payload(struct fbh_sub *s, const char *payload)
{
	for(size_t i = 0; i < fbh_sub_count(s); i++){
		if(!strcmp(fbh_sub_msg(s, i)->payload, payload)){
			return fbh_sub_msg(s, i);
		}
	}
	return NULL;
}

/* A forwarded Will: on TOPIC, its payload, QoS 1 (the rule's), the Will's user property and
 * content type, the rule's header, the origin. */
static void assert_will(struct fbh_sub *cloud, const char *topic, const char *payload, bool rule_headers)
{
	const struct fbh_msg *m;
	char *ct = NULL;

	ck_assert_uint_eq(count_payload(cloud, topic, payload), 1);
	m = find_payload(cloud, payload);
	ck_assert_ptr_nonnull(m);
	ck_assert_str_eq(m->topic, topic);
	ck_assert_int_eq(m->payloadlen, (int)strlen(payload));
	ck_assert_str_eq(fbh_msg_user_prop(m, "state"), "gone");
	ck_assert_ptr_nonnull(mosquitto_property_read_string(m->props, MQTT_PROP_CONTENT_TYPE, &ct, false));
	ck_assert_str_eq(ct, "text/plain");
	free(ct);
	ck_assert_str_eq(fbh_msg_user_prop(m, "flowmq-bridge-origin"), FBH_SITE_ID);
	if(rule_headers){
		ck_assert_str_eq(fbh_msg_user_prop(m, "edge-site-id"), FBH_SITE_ID);
	}
}

/* Starts cloud, a cloud subscriber on edge/site-A/#, the edge with its loopback on its own
 * listener (plus EXTRA), and waits until the loopback is ready. */
static struct fbh_sub *start_pair(struct fbh_broker *cloud, struct fbh_broker *edge, const char *extra)
{
	struct fbh_sub *sub;
	char *ex;

	fbh_broker_init(cloud, "cloud");
	fbh_broker_init(edge, "edge");
	start_cloud(cloud, NULL);
	sub = fbh_sub_start(cloud->port2, &cloud_tester, CLOUD_FILTER, 1);
	ck_assert_ptr_nonnull(sub);
	ex = fbh_strdupf("plugin_opt_loopback_address 127.0.0.1:%d\n%s", edge->port, extra ? extra : "");
	start_edge(edge, cloud->port, WILL_YAML, ex);
	free(ex);
	if(!fbh_wait_log(edge, READY_LINE, 30000)){
		fbh_broker_dump_log(edge);
		ck_abort_msg("the loopback subscriber did not get ready");
	}
	ck_assert(fbh_broker_log_contains(edge, "Wills on 3 rules' topics"));
	return sub;
}

START_TEST(test_wills_of_killed_and_timed_out_clients_arrive_once_clean_disconnect_sends_none)
{
	static const char *tk = "local/telemetry/dev-k/status", *tt = "local/telemetry/alarm",
			*tc = "local/telemetry/dev-c/status";
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub, *local, *sys;
	struct raw *k, *t, *c;
	long t0;

	sub = start_pair(&cloud, &edge, NULL);
	local = fbh_sub_start(edge.port, NULL, "local/#", 1);
	ck_assert_ptr_nonnull(local);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);

	k = raw_connect(edge.port, "dev-k", NULL, 30, 0, tk, "offline-k", 0);
	t = raw_connect(edge.port, "dev-t", NULL, 5, 0, tt, "offline-t", 0);
	c = raw_connect(edge.port, "dev-c", NULL, 30, 0, tc, "offline-c", 0);

	/* Ordinary publishes on the Will topics: captured, and their loopback copies skipped. */
	ck_assert_int_eq(fbh_publish(edge.port, NULL, tk, "k", 10, 1, NULL, 10000), 10);
	ck_assert_int_eq(fbh_publish(edge.port, NULL, tt, "t", 10, 1, NULL, 10000), 10);
	ck_assert_int_eq(fbh_publish(edge.port, NULL, tc, "c", 10, 1, NULL, 10000), 10);

	t0 = now_ms();
	raw_kill(k);
	raw_disconnect(c);
	/* t sends nothing more: the broker ends it after 1.5 keepalives (7.5 s; libmosquitto allows no keepalive under 5 s). */

	ck_assert_msg(wait_exactly(sub, 32, 30000, 3000), "%zu messages in the cloud, expected 32",
			fbh_sub_count(sub));
	ck_assert_msg(now_ms() - t0 >= 5000, "the keepalive Will cannot come before 1.5 keepalives");
	assert_will(sub, "edge/site-A/telemetry/dev-k/status", "offline-k", true);
	assert_will(sub, "edge/site-A/telemetry/alarm", "offline-t", true);
	ck_assert_uint_eq(count_payload(sub, "edge/site-A/telemetry/dev-c/status", "offline-c"), 0);
	for(int i = 0; i < 10; i++){
		char p[8];

		snprintf(p, sizeof(p), "k%d", i);
		ck_assert_uint_eq(count_payload(sub, "edge/site-A/telemetry/dev-k/status", p), 1);
		snprintf(p, sizeof(p), "t%d", i);
		ck_assert_uint_eq(count_payload(sub, "edge/site-A/telemetry/alarm", p), 1);
		snprintf(p, sizeof(p), "c%d", i);
		ck_assert_uint_eq(count_payload(sub, "edge/site-A/telemetry/dev-c/status", p), 1);
	}
	/* Local subscribers saw the same two Wills (the broker sent them; the plugin only listened). */
	ck_assert(wait_exactly(local, 32, 10000, 500));
	ck_assert_uint_eq(count_payload(local, tk, "offline-k"), 1);
	ck_assert_uint_eq(count_payload(local, tt, "offline-t"), 1);
	ck_assert_uint_eq(count_payload(local, tc, "offline-c"), 0);
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/wills", 2, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 32, 10000));

	raw_free(t);
	fbh_sub_stop(sys);
	fbh_sub_stop(local);
	fbh_sub_stop(sub);
}
END_TEST

START_TEST(test_delayed_will_and_session_takeover_arrive_resumed_session_sends_none)
{
	static const char *td = "local/telemetry/dev-d/status", *ta = "local/telemetry/dev-a/status",
			*te = "local/telemetry/dev-e/status";
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub, *sys;
	struct raw *d, *a, *a2, *e, *e2;
	long t0;

	sub = start_pair(&cloud, &edge, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);

	/* A Will delayed by 2 s (session kept 60 s): sent when the delay is over. */
	d = raw_connect(edge.port, "dev-d", NULL, 30, 60, td, "offline-d", 2);
	/* A Will delayed by 30 s whose session is resumed within the delay: never sent. */
	e = raw_connect(edge.port, "dev-e", NULL, 30, 60, te, "offline-e", 30);
	/* A session taken over by a new connection with the same client id: its Will is sent. */
	a = raw_connect(edge.port, "dev-a", NULL, 30, 0, ta, "offline-a", 0);

	t0 = now_ms();
	raw_kill(d);
	raw_kill(e);
	e2 = raw_connect(edge.port, "dev-e", NULL, 30, 60, NULL, NULL, 0);
	a2 = raw_connect(edge.port, "dev-a", NULL, 30, 0, NULL, NULL, 0);

	ck_assert(wait_exactly(sub, 2, 30000, 3000));
	ck_assert_msg(now_ms() - t0 >= 1000, "the delayed Will came before its delay");
	assert_will(sub, "edge/site-A/telemetry/dev-d/status", "offline-d", true);
	assert_will(sub, "edge/site-A/telemetry/dev-a/status", "offline-a", true);
	ck_assert_uint_eq(count_payload(sub, "edge/site-A/telemetry/dev-e/status", "offline-e"), 0);
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/wills", 2, 10000));

	raw_free(a);
	raw_disconnect(a2);
	raw_disconnect(e2);
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
}
END_TEST

START_TEST(test_will_denied_by_the_edge_acl_is_neither_delivered_nor_forwarded)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub, *local, *sys;
	struct raw *denied, *allowed;
	char *acl, *extra;

	/* Anonymous clients (the loopback, the test's subscribers) read everything; dev-denied may
	 * write only below local/telemetry/own/, dev-allowed anywhere below local/telemetry/. */
	fbh_broker_init(&edge, "edge");
	acl = fbh_strdupf("%s/edge-acl", edge.dir);
	fbh_write_file(acl,
			"topic read local/#\n"
			"topic read $SYS/#\n"
			"topic read $flowmq-bridge/#\n"
			"\n"
			"user dev-denied\n"
			"topic write local/telemetry/own/#\n"
			"\n"
			"user dev-allowed\n"
			"topic write local/telemetry/#\n", 0644);
	extra = fbh_strdupf("acl_file %s\n", acl);
	sub = start_pair(&cloud, &edge, extra);
	local = fbh_sub_start(edge.port, NULL, "local/#", 1);
	ck_assert_ptr_nonnull(local);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);

	denied = raw_connect(edge.port, "dev-denied", "dev-denied", 30, 0, "local/telemetry/other/status",
			"offline-denied", 0);
	allowed = raw_connect(edge.port, "dev-allowed", "dev-allowed", 30, 0, "local/telemetry/allowed/status",
			"offline-allowed", 0);
	raw_kill(denied);
	raw_kill(allowed);

	ck_assert(wait_exactly(sub, 1, 30000, 3000));
	assert_will(sub, "edge/site-A/telemetry/allowed/status", "offline-allowed", true);
	ck_assert(wait_exactly(local, 1, 10000, 500));
	ck_assert_uint_eq(count_payload(local, "local/telemetry/allowed/status", "offline-allowed"), 1);
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/wills", 1, 10000));
	free(acl);
	free(extra);
	fbh_sub_stop(sys);
	fbh_sub_stop(local);
	fbh_sub_stop(sub);
}
END_TEST

/* A large payload: the loopback's read buffer (64 KiB) grows for the 300 KiB publishes' copies. */
static char *big_payload(const char *tag, size_t len)
{
	char *p = malloc(len + 1);

	ck_assert_ptr_nonnull(p);
	for(size_t i = 0; i < len; i++){
		p[i] = (char)('a' + (i * 7 + strlen(tag)) % 26);
	}
	memcpy(p, tag, strlen(tag));
	p[len] = '\0';
	return p;
}

START_TEST(test_large_will_and_large_publishes_arrive_once)
{
	const size_t len = 300 * 1024;
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub;
	struct fbh_pub *pub;
	struct raw *k;
	/* A Will payload has a 16-bit length in CONNECT: 65,000 bytes, the largest round size. */
	char *will = big_payload("will-", 65000);

	sub = start_pair(&cloud, &edge, NULL);
	k = raw_connect(edge.port, "dev-big", NULL, 30, 0, "local/telemetry/big", will, 0);
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	for(int i = 0; i < 5; i++){
		char tag[16], *p;

		snprintf(tag, sizeof(tag), "pub%d-", i);
		p = big_payload(tag, len);
		ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/big", p, (int)len, 1, false, NULL), 0);
		free(p);
	}
	ck_assert(fbh_pub_wait_all(pub, 20000));
	fbh_pub_close(pub);
	raw_kill(k);

	ck_assert(wait_exactly(sub, 6, 30000, 3000));
	ck_assert_uint_eq(count_payload(sub, "edge/site-A/telemetry/big", will), 1);
	for(int i = 0; i < 5; i++){
		char tag[16], *p;

		snprintf(tag, sizeof(tag), "pub%d-", i);
		p = big_payload(tag, len);
		ck_assert_msg(count_payload(sub, "edge/site-A/telemetry/big", p) == 1, "publish %d", i);
		free(p);
	}
	assert_will(sub, "edge/site-A/telemetry/big", will, true);
	free(will);
	fbh_sub_stop(sub);
}
END_TEST

/* The loopback loses its connection (a client takes over its client id): it comes back and
 * forwards Wills again. A reload that adds a rule: Wills on the new rule's topics are forwarded. */
START_TEST(test_loopback_recovers_from_a_takeover_and_follows_a_reload)
{
	static const char *more = WILL_YAML
		"  - local: site/+/state\n"
		"    cloud: edge/${site_id}/state/+\n";
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub;
	struct raw *intruder, *k, *s;
	char *yaml;

	sub = start_pair(&cloud, &edge, NULL);
	fbh_broker_log_mark(&edge);
	intruder = raw_connect(edge.port, "flowmq-bridge-loopback-site-A", NULL, 30, 0, NULL, NULL, 0);
	ck_assert(fbh_wait_log(&edge, "Wills are not forwarded while the loopback subscriber", 10000));
	raw_disconnect(intruder);
	if(!fbh_wait_log(&edge, READY_LINE, 30000)){
		fbh_broker_dump_log(&edge);
		ck_abort_msg("the loopback did not come back");
	}
	k = raw_connect(edge.port, "dev-k", NULL, 30, 0, "local/telemetry/after-kick", "offline-k", 0);
	raw_kill(k);
	ck_assert(wait_exactly(sub, 1, 30000, 1000));
	assert_will(sub, "edge/site-A/telemetry/after-kick", "offline-k", true);

	yaml = fbh_edge_yaml(&edge, cloud.port, more);
	fbh_broker_log_mark(&edge);
	ck_assert_int_eq(fbh_broker_signal(&edge, SIGHUP), 0);
	ck_assert(fbh_wait_log(&edge, "flowmq-bridge: reloaded", 10000));
	if(!fbh_wait_log(&edge, "Wills on 4 rules' topics are forwarded", 30000)){
		fbh_broker_dump_log(&edge);
		ck_abort_msg("the loopback did not follow the reload");
	}
	s = raw_connect(edge.port, "dev-s", NULL, 30, 0, "site/press-1/state", "offline-s", 0);
	raw_kill(s);
	ck_assert(wait_exactly(sub, 2, 30000, 2000));
	assert_will(sub, "edge/site-A/state/press-1", "offline-s", false);
	free(yaml);
	fbh_sub_stop(sub);
}
END_TEST

START_TEST(test_loopback_at_another_broker_forwards_nothing_from_it)
{
	struct fbh_broker cloud, edge, other;
	struct fbh_sub *sub;
	struct raw *k;
	char *conf, *extra;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	fbh_broker_init(&other, "other");
	conf = fbh_strdupf("listener %d 127.0.0.1\nallow_anonymous true\n", other.port);
	ck_assert_int_eq(fbh_broker_start(&other, conf), 0);
	start_cloud(&cloud, NULL);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, CLOUD_FILTER, 1);
	ck_assert_ptr_nonnull(sub);
	extra = fbh_strdupf("plugin_opt_loopback_address 127.0.0.1:%d\n", other.port);
	start_edge(&edge, cloud.port, WILL_YAML, extra);

	/* The other broker accepts the loopback and its subscriptions, but never echoes the probe. */
	ck_assert(fbh_wait_log(&other, "flowmq-bridge-loopback-site-A", 20000));
	k = raw_connect(other.port, "dev-k", NULL, 30, 0, "local/telemetry/dev-k/status", "offline-k", 0);
	ck_assert_int_eq(fbh_publish(other.port, NULL, "local/telemetry/dev-k/status", "o", 5, 1, NULL, 10000), 5);
	raw_kill(k);
	if(!fbh_wait_log(&edge, "its probe did not come back: is that address a listener of this broker", 30000)){
		fbh_broker_dump_log(&edge);
		ck_abort_msg("no warning about the foreign loopback");
	}
	ck_assert(!fbh_broker_log_contains(&edge, READY_LINE));
	ck_assert(wait_exactly(sub, 0, 1000, 2000));

	free(conf);
	free(extra);
	fbh_sub_stop(sub);
}
END_TEST

START_TEST(test_bad_loopback_options_stop_the_broker_with_one_clear_line)
{
	static const struct {
		const char *extra;
		const char *line;
	} cases[] = {
		{ "plugin_opt_loopback maybe\n", "plugin_opt_loopback: 'maybe' is neither true nor false" },
		{ "plugin_opt_loopback_address localhost:1883\n", "plugin_opt_loopback_address: 'localhost:1883' is not ADDRESS:PORT" },
		{ "plugin_opt_loopback_address 127.0.0.1:0\n", "plugin_opt_loopback_address: '127.0.0.1:0' is not ADDRESS:PORT" },
		{ "plugin_opt_loopback_address 127.0.0.1\n", "plugin_opt_loopback_address: '127.0.0.1' is not ADDRESS:PORT" },
	};
	struct fbh_broker cloud;

	fbh_broker_init(&cloud, "cloud");
	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		struct fbh_broker edge;
		char name[32], *yaml, *conf;

		snprintf(name, sizeof(name), "edge%zu", i);
		fbh_broker_init(&edge, name);
		yaml = fbh_edge_yaml(&edge, cloud.port, WILL_YAML);
		conf = fbh_edge_conf(&edge, yaml, cases[i].extra);
		ck_assert_int_eq(fbh_broker_start(&edge, conf), -1);
		ck_assert_msg(fbh_broker_log_contains(&edge, cases[i].line), "case %zu: no '%s'", i, cases[i].line);
		free(yaml);
		free(conf);
	}
	{
		/* A password file group or others may write is refused too; one they may only read (a
		 * read-only secret mount) is taken, with a warning. */
		struct fbh_broker edge, edge2;
		char *yaml, *conf, *pw, *extra;

		fbh_broker_init(&edge, "edge-pw");
		pw = fbh_strdupf("%s/loopback-password", edge.dir);
		fbh_write_file(pw, "secret\n", 0620);
		extra = fbh_strdupf("plugin_opt_loopback_password_file %s\n", pw);
		yaml = fbh_edge_yaml(&edge, cloud.port, WILL_YAML);
		conf = fbh_edge_conf(&edge, yaml, extra);
		ck_assert_int_eq(fbh_broker_start(&edge, conf), -1);
		ck_assert(fbh_broker_log_line_has(&edge, pw, "may be written by group or others (mode 620)"));
		free(yaml);
		free(conf);
		free(extra);
		free(pw);

		fbh_broker_init(&edge2, "edge-pw-ro");
		pw = fbh_strdupf("%s/loopback-password", edge2.dir);
		fbh_write_file(pw, "secret\n", 0444);
		extra = fbh_strdupf("plugin_opt_loopback_password_file %s\n", pw);
		yaml = fbh_edge_yaml(&edge2, cloud.port, WILL_YAML);
		conf = fbh_edge_conf(&edge2, yaml, extra);
		ck_assert_int_eq(fbh_broker_start(&edge2, conf), 0);
		ck_assert(fbh_broker_log_line_has(&edge2, pw, "may be read by group or others (mode 444)"));
		ck_assert_int_eq(fbh_broker_stop(&edge2), 0);
		free(yaml);
		free(conf);
		free(extra);
		free(pw);
	}
}
END_TEST

START_TEST(test_loopback_false_forwards_no_will_and_says_so)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub, *local;
	struct raw *k;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, CLOUD_FILTER, 1);
	ck_assert_ptr_nonnull(sub);
	start_edge(&edge, cloud.port, WILL_YAML, "plugin_opt_loopback false\n");
	ck_assert(fbh_broker_log_contains(&edge, "plugin_opt_loopback false: Will messages are not forwarded to the cloud"));
	local = fbh_sub_start(edge.port, NULL, "local/#", 1);
	ck_assert_ptr_nonnull(local);

	k = raw_connect(edge.port, "dev-k", NULL, 30, 0, "local/telemetry/dev-k/status", "offline-k", 0);
	ck_assert_int_eq(fbh_publish(edge.port, NULL, "local/telemetry/dev-k/status", "k", 3, 1, NULL, 10000), 3);
	raw_kill(k);
	ck_assert(wait_exactly(local, 4, 10000, 500));
	ck_assert(wait_exactly(sub, 3, 30000, 2000));
	ck_assert_uint_eq(count_payload(sub, "edge/site-A/telemetry/dev-k/status", "offline-k"), 0);
	fbh_sub_stop(local);
	fbh_sub_stop(sub);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("will");
	TCase *tc = fbh_tcase("will");

	tcase_add_test(tc, test_wills_of_killed_and_timed_out_clients_arrive_once_clean_disconnect_sends_none);
	tcase_add_test(tc, test_delayed_will_and_session_takeover_arrive_resumed_session_sends_none);
	tcase_add_test(tc, test_will_denied_by_the_edge_acl_is_neither_delivered_nor_forwarded);
	tcase_add_test(tc, test_large_will_and_large_publishes_arrive_once);
	tcase_add_test(tc, test_loopback_recovers_from_a_takeover_and_follows_a_reload);
	tcase_add_test(tc, test_loopback_at_another_broker_forwards_nothing_from_it);
	tcase_add_test(tc, test_bad_loopback_options_stop_the_broker_with_one_clear_line);
	tcase_add_test(tc, test_loopback_false_forwards_no_will_and_says_so);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
