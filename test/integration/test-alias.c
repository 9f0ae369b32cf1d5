/* Test process: MQTT v5 topic aliases toward the cloud (cloud.topic_aliases), end to end: the edge reaches the
 * cloud stand-in through a TCP relay in this test that counts the bytes the edge sends and the TLS
 * records they form, so that the MQTT bytes inside can be told from the records' framing (how many
 * records a run takes depends on how the link's turns batch the messages). A cloud whose listener
 * announces Topic Alias Maximum 10 gets aliases: every message arrives on its full topic, in order,
 * and the bytes drop; a cloud announcing 0 gets none (Mosquitto ends a connection that uses an
 * alias it did not announce: no reconnect may happen), and neither does any cloud with
 * topic_aliases: false. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mqtt_protocol.h>

#include "bytes.h"
#include "common.h"

/* ---- a counting TCP relay -------------------------------------------------------------------- */

struct relay {
	int lfd;
	int port;       /* where the edge connects */
	int target;     /* the cloud's TLS port */
	atomic_ullong up; /* bytes from the edge to the cloud */
	atomic_ullong records; /* TLS records in them */
	uint8_t hdr[5];  /* the record header being read (relay thread) */
	size_t hdr_have, body_left;
	atomic_bool stop;
	pthread_t thread;
};

/* Follows the TLS record framing of the edge's bytes: a 5-byte header whose last two bytes are the
 * length of the body that follows. */
static void count_records(struct relay *r, const uint8_t *p, size_t n)
{
	while(n > 0){
		if(r->body_left > 0){
			size_t k = n < r->body_left ? n : r->body_left;

			r->body_left -= k;
			p += k;
			n -= k;
			continue;
		}
		r->hdr[r->hdr_have++] = *p++;
		n--;
		if(r->hdr_have == sizeof(r->hdr)){
			r->body_left = fb_get_be16(r->hdr + 3);
			r->hdr_have = 0;
			atomic_fetch_add(&r->records, 1);
		}
	}
}

static void *relay_run(void *arg)
{
	struct relay *r = arg;

	while(!atomic_load(&r->stop)){
		struct pollfd pl = { .fd = r->lfd, .events = POLLIN };
		struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)r->target),
			.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		int a, b;

		if(poll(&pl, 1, 100) <= 0){
			continue;
		}
		if((a = accept(r->lfd, NULL, NULL)) < 0){
			continue;
		}
		b = socket(AF_INET, SOCK_STREAM, 0);
		if(b < 0 || connect(b, (struct sockaddr *)&to, sizeof(to)) < 0){
			close(a);
			if(b >= 0){
				close(b);
			}
			continue;
		}
		/* one connection at a time, until either side closes */
		r->hdr_have = r->body_left = 0;
		for(bool open = true; open && !atomic_load(&r->stop);){
			struct pollfd p[2] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN } };
			char buf[65536];

			if(poll(p, 2, 100) <= 0){
				continue;
			}
			for(int k = 0; k < 2 && open; k++){
				if(p[k].revents & (POLLIN | POLLHUP | POLLERR)){
					ssize_t n = read(p[k].fd, buf, sizeof(buf));
					if(n <= 0){
						open = false;
						break;
					}
					if(k == 0){
						atomic_fetch_add(&r->up, (unsigned long long)n);
						count_records(r, (const uint8_t *)buf, (size_t)n);
					}
					for(ssize_t done = 0; done < n;){
						ssize_t w = write(p[1 - k].fd, buf + done, (size_t)(n - done));
						if(w <= 0){
							open = false;
							break;
						}
						done += w;
					}
				}
			}
		}
		close(a);
		close(b);
	}
	return NULL;
}

static void relay_start(struct relay *r, int target)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1;

	memset(r, 0, sizeof(*r));
	r->target = target;
	r->port = fbh_free_port();
	sa.sin_port = htons((uint16_t)r->port);
	r->lfd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(r->lfd, 0);
	setsockopt(r->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	ck_assert_int_eq(bind(r->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(r->lfd, 4), 0);
	ck_assert_int_eq(pthread_create(&r->thread, NULL, relay_run, r), 0);
}

static void relay_stop(struct relay *r)
{
	atomic_store(&r->stop, true);
	pthread_join(r->thread, NULL);
	close(r->lfd);
}

/* ---- the runs -------------------------------------------------------------------------------- */

#define TOPICS 50
#define PER_TOPIC 20
/* What a TLS 1.3 record adds to what it carries once the handshake is done: the 5-byte header,
 * the inner content type and the AEAD's 16-byte tag (the cloud stand-in's suites all have one). */
#define TLS_RECORD_OVERHEAD 22

/* The cloud stand-in's configuration (with CO, NULL: the standard one) with "max_topic_alias MAX"
 * on its TLS listener (the edge's). */
static void start_cloud_alias_max(struct fbh_broker *cloud, int max, const struct fbh_cloud_opts *co)
{
	char *conf = fbh_cloud_conf(cloud, co), *at = strstr(conf, "use_identity_as_username false\n"), *c2;

	ck_assert_ptr_nonnull(at);
	at += strlen("use_identity_as_username false\n");
	ck_assert_int_gt(asprintf(&c2, "%.*smax_topic_alias %d\n%s", (int)(at - conf), conf, max, at), 0);
	free(conf);
	if(fbh_broker_start(cloud, c2) != 0){
		fbh_broker_dump_log(cloud);
		ck_abort_msg("the cloud did not start");
	}
	free(c2);
}

/* Sends TOPICS x PER_TOPIC messages (each topic's PER_TOPIC in a row, topics in turn) from an edge
 * with topic_aliases ALIASES to a cloud announcing MAX; asserts that all arrive, each topic's in
 * order on its own topic, with no reconnect; returns the bytes the edge sent once connected, less
 * its TLS records' framing (the MQTT bytes). */
static unsigned long long run(int max, bool aliases, const char *name)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub, *sys;
	struct fbh_pub *pub;
	struct relay r;
	unsigned next[TOPICS] = { 0 };
	unsigned long long bytes, records;
	char *yaml, *cname, *ename;
	const char *base = FBH_YAML_BASE, *cl = strstr(base, "cloud:\n") + 7;

	ck_assert_int_gt(asprintf(&cname, "cloud-%s", name), 0);
	ck_assert_int_gt(asprintf(&ename, "edge-%s", name), 0);
	fbh_broker_init(&cloud, cname);
	fbh_broker_init(&edge, ename);
	start_cloud_alias_max(&cloud, max, NULL);
	relay_start(&r, cloud.port);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "edge/site-A/telemetry/#", 1);
	ck_assert_ptr_nonnull(sub);
	/* cloud.topic_aliases right after "cloud:" */
	ck_assert_int_gt(asprintf(&yaml, "%.*s  topic_aliases: %s\n%s"
			"edge_to_cloud:\n  - local: local/telemetry/#\n    cloud: edge/${site_id}/telemetry/#\n",
			(int)(cl - base), base, aliases ? "true" : "false", cl), 0);
	start_edge(&edge, r.port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert(sys_wait(sys, "state", "connected", 20000));
	atomic_store(&r.up, 0);
	atomic_store(&r.records, 0);
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	for(unsigned t = 0; t < TOPICS; t++){
		for(unsigned n = 0; n < PER_TOPIC; n++){
			char topic[96], p[32];
			snprintf(topic, sizeof(topic), "local/telemetry/line-%u/machine-%u/spindle/temperature", t % 4 + 1, t);
			int len = snprintf(p, sizeof(p), "%u-%u", t, n);
			ck_assert_int_ge(fbh_pub_send(pub, topic, p, len, 1, false, NULL), 0);
		}
	}
	ck_assert(fbh_pub_wait_all(pub, 30000));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);
	ck_assert_msg(wait_exactly(sub, TOPICS * PER_TOPIC, 30000, 1000), "%s: %zu of %d arrived", name,
			fbh_sub_count(sub), TOPICS * PER_TOPIC);
	for(size_t i = 0; i < fbh_sub_count(sub); i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		unsigned t, n;
		char want[96];

		ck_assert_int_eq(sscanf(m->payload, "%u-%u", &t, &n), 2);
		ck_assert_uint_lt(t, TOPICS);
		snprintf(want, sizeof(want), "edge/site-A/telemetry/line-%u/machine-%u/spindle/temperature", t % 4 + 1, t);
		ck_assert_str_eq(m->topic, want);
		ck_assert_uint_eq(n, next[t]++);
	}
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", TOPICS * PER_TOPIC, 5000));
	ck_assert(sys_wait_u64(sys, "reconnects", 0, 1000));
	ck_assert(sys_wait(sys, "state", "connected", 1000));
	bytes = atomic_load(&r.up);
	records = atomic_load(&r.records);
	ck_assert_uint_le(records * TLS_RECORD_OVERHEAD, bytes);
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	relay_stop(&r);
	free(yaml);
	free(cname);
	free(ename);
	fprintf(stderr, "topic aliases %s, cloud maximum %d: %llu bytes in %llu TLS records for %d messages "
			"(%.1f per message), %llu without the records' framing\n", aliases ? "on" : "off", max, bytes,
			records, TOPICS * PER_TOPIC, (double)bytes / (TOPICS * PER_TOPIC),
			bytes - records * TLS_RECORD_OVERHEAD);
	return bytes - records * TLS_RECORD_OVERHEAD;
}

/* The same messages: with aliases (maximum 10, 50 topics, so aliases are replaced) at least 25 %
 * fewer MQTT bytes than without; a maximum of 0 sends no alias (no reconnect, the same MQTT bytes
 * within 2 % as with aliases off; an alias property on every message would add about 3 %). The
 * TLS records' framing is left out: the turns that batch the messages, and with them the number
 * of records, vary from run to run (a sanitizer build once made 2.6 % more bytes with it). */
START_TEST(test_aliases_cut_bytes_within_the_announced_maximum)
{
	unsigned long long with = run(10, true, "on10");
	unsigned long long without = run(10, false, "off10");
	unsigned long long zero = run(0, true, "on0");

	ck_assert_msg(with * 4 <= without * 3, "with aliases %llu bytes, without %llu", with, without);
	ck_assert_msg(zero * 100 >= without * 98 && zero * 100 <= without * 102, "maximum 0: %llu bytes, without "
			"aliases %llu", zero, without);
}
END_TEST

/* A reconnect starts a new alias table (cloud maximum 5, 8 topics): the messages spooled while the
 * cloud was down go out on the new connection on the same topics as before, each topic's first
 * with its full topic, and arrive on the right topics; a stale alias would make the cloud end the
 * connection (more than the one reconnect). */
START_TEST(test_aliases_start_over_after_a_reconnect)
{
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { 0 };
	struct fbh_client_opts so = persistent_sub("cloud-sub-alias");
	struct fbh_sub *sub, *sys;
	char *conf, *at, *c2;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	co.extra = cloud_persistent_extra(&cloud);
	conf = fbh_cloud_conf(&cloud, &co);
	at = strstr(conf, "use_identity_as_username false\n") + strlen("use_identity_as_username false\n");
	ck_assert_int_gt(asprintf(&c2, "%.*smax_topic_alias 5\n%s", (int)(at - conf), conf, at), 0);
	ck_assert_int_eq(fbh_broker_start(&cloud, c2), 0);
	sub = fbh_sub_start(cloud.port2, &so, "edge/site-A/telemetry/#", 1);
	ck_assert_ptr_nonnull(sub);
	start_edge(&edge, cloud.port, FBH_YAML_STANDARD, NULL);
	sys = sys_watch(&edge);
	ck_assert(sys_wait(sys, "state", "connected", 20000));
	for(int round = 0; round < 2; round++){
		for(unsigned t = 0; t < 8; t++){
			char topic[64], prefix[16];
			snprintf(topic, sizeof(topic), "local/telemetry/t%u", t);
			snprintf(prefix, sizeof(prefix), "r%d-", round);
			ck_assert_int_eq(fbh_publish(edge.port, NULL, topic, prefix, 5, 1, NULL, 10000), 5);
		}
		if(round == 0){
			ck_assert(wait_exactly(sub, 40, 20000, 500));
			fbh_sub_stop(sub);
			ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
			ck_assert(sys_wait(sys, "state", "connecting", 20000) || sys_wait(sys, "state", "disconnected", 1));
		}
	}
	ck_assert(sys_wait_u64(sys, "spool/messages", 40, 10000));
	ck_assert_int_eq(fbh_broker_start(&cloud, c2), 0);
	sub = fbh_sub_start(cloud.port2, &so, "edge/site-A/telemetry/#", 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert(wait_exactly(sub, 40, 20000, 1000));
	for(size_t i = 0; i < 40; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		char want[64];
		snprintf(want, sizeof(want), "edge/site-A/telemetry/t%zu", i / 5);
		ck_assert_str_eq(m->topic, want);
		ck_assert_int_eq(payload_index(m, "r1-"), (long)(i % 5));
	}
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "reconnects", 1, 1000));
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	free(conf);
	free(c2);
	free((char *)co.extra);
}
END_TEST

/* Messages on 8 topics in turn (within a Topic Alias Maximum of 10, so every topic keeps its alias)
 * whose publisher's user property changes every 50 messages, plus the rule's header: every message
 * arrives on its own topic, in order, with its own properties and no other (the link reuses one
 * decoded list per alias while the properties repeat, and drops them all when they change). */
START_TEST(test_topics_in_turn_keep_their_own_properties)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub, *sys;
	struct fbh_pub *pub;
	const char *base = FBH_YAML_BASE, *cl = strstr(base, "cloud:\n") + 7;
	unsigned next[8] = { 0 };
	char *yaml;
	const unsigned total = 400;

	fbh_broker_init(&cloud, "cloud-turn");
	fbh_broker_init(&edge, "edge-turn");
	start_cloud_alias_max(&cloud, 10, NULL);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "edge/site-A/telemetry/#", 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert_int_gt(asprintf(&yaml, "%.*s  topic_aliases: true\n%s"
			"edge_to_cloud:\n  - local: local/telemetry/#\n    cloud: edge/${site_id}/telemetry/#\n"
			"    headers:\n      edge-site-id: ${site_id}\n", (int)(cl - base), base, cl), 0);
	start_edge(&edge, cloud.port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert(sys_wait(sys, "state", "connected", 20000));
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	for(unsigned i = 0; i < total; i++){
		mosquitto_property *props = NULL;
		char topic[64], p[32], part[16];
		int len;

		snprintf(topic, sizeof(topic), "local/telemetry/m%u", i % 8);
		snprintf(part, sizeof(part), "part-%u", i / 50);
		len = snprintf(p, sizeof(p), "%u-%u", i % 8, i / 8);
		ck_assert_int_eq(mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "part", part), 0);
		ck_assert_int_ge(fbh_pub_send(pub, topic, p, len, 1, false, props), 0);
		mosquitto_property_free_all(&props);
	}
	ck_assert(fbh_pub_wait_all(pub, 30000));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);
	ck_assert_msg(wait_exactly(sub, total, 30000, 1000), "%zu of %u arrived", fbh_sub_count(sub), total);
	for(size_t k = 0; k < fbh_sub_count(sub); k++){
		const struct fbh_msg *m = fbh_sub_msg(sub, k);
		unsigned t, n;
		char want[64];

		ck_assert_int_eq(sscanf(m->payload, "%u-%u", &t, &n), 2);
		ck_assert_uint_lt(t, 8);
		snprintf(want, sizeof(want), "edge/site-A/telemetry/m%u", t);
		ck_assert_str_eq(m->topic, want);
		ck_assert_uint_eq(n, next[t]++);
		snprintf(want, sizeof(want), "part-%u", (n * 8 + t) / 50);
		ck_assert_ptr_nonnull(fbh_msg_user_prop(m, "part"));
		ck_assert_str_eq(fbh_msg_user_prop(m, "part"), want);
		ck_assert_ptr_nonnull(fbh_msg_user_prop(m, "edge-site-id"));
		ck_assert_str_eq(fbh_msg_user_prop(m, "edge-site-id"), "site-A");
		/* the publisher's, the rule's header, the origin mark (loops), in that order */
		ck_assert_uint_eq(m->user_prop_count, 3);
		ck_assert_str_eq(m->user_props[0].name, "part");
		ck_assert_str_eq(m->user_props[1].name, "edge-site-id");
		ck_assert_str_eq(m->user_props[2].name, "flowmq-bridge-origin");
		ck_assert_str_eq(m->user_props[2].value, "site-A");
	}
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", total, 5000));
	ck_assert(sys_wait_u64(sys, "reconnects", 0, 1000));
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	free(yaml);
}
END_TEST

/* The cloud's Maximum Packet Size in the size test, and what the edge adds to each message's
 * properties there: the origin mark (user property: identifier, 2 + 20 + 2 + 6 bytes). */
#define MAX_PACKET 1000
#define ORIGIN_PROPS 31
#define T_KNOWN "edge/site-A/telemetry/known"
#define T_NEW "edge/site-A/telemetry/new"
#define T_NONE "edge/site-A/telemetry/none"

/* The payload length that makes a QoS 1 PUBLISH with a topic of TOPIC_LEN bytes (0: alias-only)
 * and PROPS bytes of properties exactly SIZE bytes long (a remaining length of two bytes). */
static int payload_for(int size, int topic_len, int props)
{
	return size - 3 - (2 + topic_len + 2 + 1 + props);
}

/* NAME's payload, LEN bytes: NAME, then 'x'. The caller frees it. */
static char *sized_payload(const char *name, int len)
{
	char *payload = malloc((size_t)len);

	ck_assert_ptr_nonnull(payload);
	memset(payload, 'x', (size_t)len);
	memcpy(payload, name, strlen(name));
	return payload;
}

/* Publishes NAME's payload (sized_payload()) on the edge's local/telemetry/TOPIC. */
static void publish_sized(struct fbh_pub *pub, const char *topic, const char *name, int len)
{
	char *payload = sized_payload(name, len), local[64];

	snprintf(local, sizeof(local), "local/telemetry/%s", topic);
	ck_assert_int_ge(fbh_pub_send(pub, local, payload, len, 1, false, NULL), 0);
	free(payload);
}

/* The cloud's Maximum Packet Size counts the packet that is sent, Topic Alias included (cloud
 * maximum 1000 bytes, aliases on): on a topic the cloud has the alias of, a message whose
 * alias-only PUBLISH is exactly 1000 bytes arrives (with its full topic it would be 1024); one
 * byte more goes to dead letters (0x95). A message on a new topic whose PUBLISH with topic and new
 * alias would be 1003 bytes goes out without an alias (1000 bytes) and arrives; one 1001 bytes
 * even without an alias goes to dead letters. Neither makes an alias mapping: later messages on
 * those topics arrive on them, with no reconnect (a stale alias would end the connection). */
START_TEST(test_maximum_packet_size_counts_the_topic_alias_that_is_sent)
{
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { .extra = fbh_strdupf("max_packet_size %d\n", MAX_PACKET) };
	struct fbh_sub *sub, *sys;
	struct fbh_pub *pub;
	const char *base = FBH_YAML_BASE, *cl = strstr(base, "cloud:\n") + 7;
	char *yaml;
	const int alias_props = ORIGIN_PROPS + 3;
	const struct { const char *topic, *name; int len; } sent[] = {
		{ T_KNOWN, "a", 8 },
		{ T_KNOWN, "b-alias-only-fits", payload_for(MAX_PACKET, 0, alias_props) },
		{ T_NEW, "d-fits-without-alias", payload_for(MAX_PACKET + 3, (int)strlen(T_NEW), alias_props) },
		{ T_KNOWN, "f", 8 },
		{ T_NONE, "g", 8 },
		{ T_NEW, "h", 8 },
	};
	const int too_large_known = payload_for(MAX_PACKET + 1, 0, alias_props);
	const int too_large_new = payload_for(MAX_PACKET + 1, (int)strlen(T_NONE), ORIGIN_PROPS);
	char needle[256];

	fbh_broker_init(&cloud, "cloud-size");
	fbh_broker_init(&edge, "edge-size");
	start_cloud_alias_max(&cloud, 10, &co);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "edge/site-A/telemetry/#", 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert_int_gt(asprintf(&yaml, "%.*s  topic_aliases: true\n%s"
			"edge_to_cloud:\n  - local: local/telemetry/#\n    cloud: edge/${site_id}/telemetry/#\n",
			(int)(cl - base), base, cl), 0);
	start_edge(&edge, cloud.port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert(sys_wait(sys, "state", "connected", 20000));
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	publish_sized(pub, "known", sent[0].name, sent[0].len);
	publish_sized(pub, "known", sent[1].name, sent[1].len);
	publish_sized(pub, "known", "c-alias-only-too-large", too_large_known);
	publish_sized(pub, "new", sent[2].name, sent[2].len);
	publish_sized(pub, "none", "e-too-large-without-alias", too_large_new);
	publish_sized(pub, "known", sent[3].name, sent[3].len);
	publish_sized(pub, "none", sent[4].name, sent[4].len);
	publish_sized(pub, "new", sent[5].name, sent[5].len);
	ck_assert(fbh_pub_wait_all(pub, 30000));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);

	ck_assert_msg(wait_exactly(sub, 6, 30000, 1000), "%zu of 6 arrived", fbh_sub_count(sub));
	for(size_t i = 0; i < 6; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		char *want = sized_payload(sent[i].name, sent[i].len);

		ck_assert_str_eq(m->topic, sent[i].topic);
		ck_assert_int_eq(m->payloadlen, sent[i].len);
		ck_assert_mem_eq(m->payload, want, (size_t)sent[i].len);
		free(want);
	}
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 6, 5000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/rejected", 2, 5000));
	ck_assert(sys_wait_u64(sys, "spool/dead", 2, 5000));
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 5000));
	ck_assert(sys_wait_u64(sys, "reconnects", 0, 1000));
	snprintf(needle, sizeof(needle), "on " T_KNOWN " (%d bytes) moved to dead letters: 0x95 Packet too large "
			"(%d bytes; the cloud's Maximum Packet Size is %d)", too_large_known, MAX_PACKET + 1, MAX_PACKET);
	ck_assert_uint_eq(log_count(&edge, needle), 1);
	snprintf(needle, sizeof(needle), "on " T_NONE " (%d bytes) moved to dead letters: 0x95 Packet too large "
			"(%d bytes; the cloud's Maximum Packet Size is %d)", too_large_new, MAX_PACKET + 1, MAX_PACKET);
	ck_assert_uint_eq(log_count(&edge, needle), 1);
	ck_assert_uint_eq(log_count(&edge, "moved to dead letters"), 2);
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	free(yaml);
	free((char *)co.extra);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("alias");
	TCase *tc = fbh_tcase("alias");

	tcase_add_test(tc, test_aliases_cut_bytes_within_the_announced_maximum);
	tcase_add_test(tc, test_aliases_start_over_after_a_reconnect);
	tcase_add_test(tc, test_topics_in_turn_keep_their_own_properties);
	tcase_add_test(tc, test_maximum_packet_size_counts_the_topic_alias_that_is_sent);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
