/* Test process, fault suite: one message never jams the queue.
 *
 * Messages the cloud will not take wait in the spool during an outage, ahead of ordinary ones:
 * one on a topic the cloud's ACL denies (PUBACK 0x87, then Mosquitto 2.0.11 closes the connection)
 * and one of 5 MB, larger than the cloud's
 * Maximum Packet Size (max_packet_size, announced in CONNACK: never sent, 0x95). When the cloud
 * returns, the queue moves on at once: both go to dead letters with their reasons, the others
 * arrive in order, and every count is exact. A second case uses a cloud that simply breaks the
 * connection while the large message is on the wire (a TCP relay that cuts every connection once
 * 1 MiB went through it): after the first cut, with other messages in flight, each of those goes
 * alone; after cloud.poison_after cuts with it alone (3 by default, and 5 when set) it goes to
 * dead letters, and the reconnect back-off grows in between (a CONNACK alone does not reset it);
 * so it does while a higher lane's messages go first on every connection. A third uses a relay that goes silent instead, more often than poison_after: silence
 * is not the message's doing, and it is delivered once the cloud answers again. A fourth passes
 * the message too slowly to be sent within keepalive: that is its doing, and it goes to dead
 * letters after poison_after such breaks. A fifth leaves the cloud holding the packet ids of QoS 2
 * messages (their PUBRELs dropped) at a cut or a kill -9 of the link process: the next connection
 * releases them, and no message is refused or taken for a repeat. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mqtt_protocol.h>

#include "common.h"
#include "session.h"
#include "record.h"
#include "spool.h"

#define BIG (5 * 1024 * 1024)
#define N_SMALL 10
#define CLOUD_FILTER "#"
/* cloud.poison_after when the configuration does not set it (README). */
#define POISON_DEFAULT 3

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Count of lines in B's log (since its mark) that contain both S1 and S2. */
static int log_lines_with(struct fbh_broker *b, const char *s1, const char *s2)
{
	char *text = fbh_read_file(b->log);
	int n = 0;

	ck_assert_ptr_nonnull(text);
	for(char *line = text + (b->log_mark < (long)strlen(text) ? b->log_mark : 0), *end; *line; line = end + 1){
		end = strchr(line, '\n');
		if(end == NULL){
			end = line + strlen(line) - 1;
		}
		*end = '\0';
		if(strstr(line, s1) && strstr(line, s2)){
			n++;
		}
		if(end[1] == '\0'){
			break;
		}
	}
	free(text);
	return n;
}

/* The dead letters of the spool at PATH (the edge stopped): topic, payload size and reason. */
struct dead {
	char topic[128];
	size_t payload_len;
	char reason[512];
};

struct dead_list {
	struct dead d[8];
	size_t n;
};

static int dead_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct dead_list *dl = ud;
	struct fb_record r;
	const char *v;
	uint16_t vlen = 0;
	(void)seq;

	ck_assert_uint_lt(dl->n, 8);
	ck_assert_int_eq(fb_record_decode(val, len, &r), 0);
	snprintf(dl->d[dl->n].topic, sizeof(dl->d[dl->n].topic), "%.*s", (int)r.topic_len, r.topic);
	dl->d[dl->n].payload_len = r.payload_len;
	v = fb_props_find_user(r.props, r.props_len, FB_DEAD_REASON_PROPERTY, &vlen);
	snprintf(dl->d[dl->n].reason, sizeof(dl->d[dl->n].reason), "%.*s", v ? (int)vlen : 6, v ? v : "(none)");
	dl->n++;
	return 0;
}

static void read_dead(struct fbh_broker *edge, struct dead_list *dl)
{
	char *path = fbh_strdupf("%s/spool", edge->dir);
	struct fb_spool_opts o = { .path = path };
	struct fb_spool_stats st;
	struct fb_spool *s;

	memset(dl, 0, sizeof(*dl));
	ck_assert_int_eq(fb_spool_open(&o, &s), 0);
	ck_assert_int_ge(fb_spool_read(s, FB_Q_DEAD, 0, 8, dead_visit, dl), 0);
	fb_spool_stats(s, &st);
	ck_assert_uint_eq(st.messages, 0);
	ck_assert_uint_eq(st.dead, dl->n);
	fb_spool_close(s);
	free(path);
}

#define POISON_RULES \
	"edge_to_cloud:\n" \
	"  - local: local/secret/#\n" \
	"    cloud: forbidden/${site_id}/#\n" \
	"  - local: local/telemetry/#\n" \
	"    cloud: edge/${site_id}/telemetry/#\n"

/* Publishes, at the edge, the poison and the small messages "s0".."s9" on local/telemetry/a,
 * with DENIED first when asked, then the 5 MB message, then the small ones. All are PUBACKed
 * with success (they wait in the spool). */
static void publish_poison(struct fbh_broker *edge, bool denied)
{
	struct fbh_pub *pub = fbh_pub_connect(edge->port, NULL);
	char *big = malloc(BIG);

	ck_assert_ptr_nonnull(pub);
	ck_assert_ptr_nonnull(big);
	memset(big, 'B', BIG);
	if(denied){
		ck_assert_int_ge(fbh_pub_send(pub, "local/secret/x", "denied", 6, 1, false, NULL), 0);
	}
	ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/big", big, BIG, 1, false, NULL), 0);
	ck_assert_int_eq(fbh_pub_send_n(pub, "local/telemetry/a", "s", N_SMALL, 1, NULL), 0);
	ck_assert(fbh_pub_wait_all(pub, 60000));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	ck_assert_uint_eq(fbh_pub_acked(pub), N_SMALL + 1 + denied);
	fbh_pub_close(pub);
	free(big);
}

START_TEST(test_denied_and_oversize_messages_go_to_dead_letters_and_the_rest_arrive)
{
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { 0 };
	struct fbh_client_opts so = persistent_sub("cloud-sub-poison");
	struct fbh_sub *sub, *sys;
	struct dead_list dl;
	unsigned long reconnects;
	char *extra;
	int64_t t0;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	/* The cloud keeps sessions across its restart and announces a Maximum Packet Size of 1 MiB. */
	extra = cloud_persistent_extra(&cloud);
	co.extra = fbh_strdupf("%smax_packet_size 1048576\n", extra);
	free(extra);
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, CLOUD_FILTER, 1);
	ck_assert_ptr_nonnull(sub);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);

	/* The outage: everything waits in the edge's spool, the poison at the head. */
	start_edge(&edge, cloud.port, FBH_YAML_BASE POISON_RULES, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	publish_poison(&edge, true);
	ck_assert(sys_wait_u64(sys, "spool/messages", N_SMALL + 2, 10000));

	/* The cloud returns: the queue moves on within 30 s. */
	t0 = now_ms();
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, CLOUD_FILTER, 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert_msg(wait_exactly(sub, N_SMALL, 30000, 500), "%zu of %d small messages arrived within 30 s",
			fbh_sub_count(sub), N_SMALL);
	fprintf(stderr, "the queue moved on: %d messages delivered %lld ms after the cloud's return\n", N_SMALL,
			(long long)(now_ms() - t0));
	for(size_t i = 0; i < N_SMALL; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		ck_assert_str_eq(m->topic, "edge/site-A/telemetry/a");
		ck_assert_int_eq(payload_index(m, "s"), (long)i);
	}
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "spool/dead", 2, 5000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/rejected", 2, 5000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", N_SMALL, 5000));
	ck_assert(sys_wait_u64(sys, "stalls", 0, 5000));
	/* Mosquitto 2.0.11 answers a denied PUBLISH with PUBACK 0x87 and then closes the connection
	 * (the PUBACK itself can be lost to the reset): the denied message costs one connection per
	 * attempt, at most POISON_DEFAULT of them. The oversize one is never sent. */
	reconnects = strtoul(sys_value(sys, "reconnects"), NULL, 10);
	fprintf(stderr, "connections replaced: %lu\n", reconnects);
	ck_assert_uint_le(reconnects, POISON_DEFAULT);
	/* Logged once each, with topic and reason. */
	ck_assert_int_eq(log_lines_with(&edge, "moved to dead letters", "forbidden/site-A/x"), 1);
	ck_assert_int_eq(log_lines_with(&edge, "forbidden/site-A/x", "0x87 Not authorized")
			+ log_lines_with(&edge, "forbidden/site-A/x", "0x80 Unspecified error (the connection broke 3 times"), 1);
	ck_assert_int_eq(log_lines_with(&edge, "moved to dead letters", "edge/site-A/telemetry/big"), 1);
	ck_assert_int_eq(log_lines_with(&edge, "edge/site-A/telemetry/big", "0x95 Packet too large"), 1);
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);

	/* The dead letters keep the messages and say why. */
	read_dead(&edge, &dl);
	ck_assert_uint_eq(dl.n, 2);
	{
		/* In the order they were moved: the oversize one at once, the denied one after its
		 * PUBACK (or the breaks). */
		const struct dead *denied = !strcmp(dl.d[0].topic, "forbidden/site-A/x") ? &dl.d[0] : &dl.d[1];
		const struct dead *big = denied == &dl.d[0] ? &dl.d[1] : &dl.d[0];

		ck_assert_str_eq(denied->topic, "forbidden/site-A/x");
		ck_assert_uint_eq(denied->payload_len, 6);
		/* The cloud's reason when its PUBACK arrived before the reset, else the breaks. */
		ck_assert_msg(!strncmp(denied->reason, "0x87 Not authorized", 19)
				|| !strncmp(denied->reason, "0x80 Unspecified error (the connection broke 3 times", 51),
				"reason '%s'", denied->reason);
		ck_assert_str_eq(big->topic, "edge/site-A/telemetry/big");
		ck_assert_uint_eq(big->payload_len, BIG);
		ck_assert_msg(!strncmp(big->reason, "0x95 Packet too large", 21), "reason '%s'", big->reason);
	}
	free((char *)co.extra);
}
END_TEST

/* A TCP relay from a port of its own to the cloud that cuts each connection (both sides) once
 * more than LIMIT bytes went from the edge to the cloud through it: a cloud that breaks the
 * connection while a large message is in flight, without a word. With HOLES, the first HOLES such
 * connections go silent instead (the cloud side is closed, and the edge's side is neither read
 * nor answered, so that its bytes go unacknowledged once the socket's buffer is full, until the
 * edge gives up on it and connects again), and later ones pass everything: a network black hole
 * while the message is in flight, which is not the message's doing. With SLOW, the first SLOW
 * such connections go on at SLOW_RATE bytes a second instead, until the edge gives up on them:
 * an uplink too slow for the message within keepalive. */
#define RELAY_DEAF 1
#define RELAY_CUT 2
#define SLOW_CHUNK 16384
#define SLOW_RATE (256 * 1024)

struct relay {
	int lfd;
	int port;
	int cloud_port;
	size_t limit;
	int holes;
	int slow;
	atomic_bool stop;
	atomic_int cuts;
	/* RELAY_DEAF: the edge's bytes are read and dropped while the cloud's still reach it;
	 * RELAY_CUT: the connection is cut (both sides) and later ones are relayed again */
	atomic_int deaf;
	int accepts;
	int64_t accept_ms[16];   /* when each connection came in */
	int64_t cut_ms[16];      /* when each cut was made */
	pthread_t thread;
};

/* Holds A without reading it or answering until the edge connects again (or the relay stops). */
static void relay_swallow(struct relay *r, int a)
{
	(void)a;
	while(!atomic_load(&r->stop)){
		struct pollfd p = { .fd = r->lfd, .events = POLLIN };

		if(poll(&p, 1, 100) > 0){
			return;
		}
	}
}

static void relay_pair(struct relay *r, int a)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)r->cloud_port) };
	int b = socket(AF_INET, SOCK_STREAM, 0);
	size_t up = 0;
	bool slowed = false;
	char buf[65536];

	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	atomic_store(&r->deaf, 0);
	if(b < 0 || connect(b, (struct sockaddr *)&sa, sizeof(sa)) < 0){
		if(b >= 0){
			close(b);
		}
		close(a);
		return;
	}
	while(!atomic_load(&r->stop)){
		/* A slowed connection ends when the edge connects again: the bytes it had queued before
		 * it gave up would otherwise keep the relay reading them for a long time. */
		struct pollfd p[3] = { { .fd = a, .events = POLLIN }, { .fd = b, .events = POLLIN },
			{ .fd = r->lfd, .events = POLLIN } };
		ssize_t n;

		if(atomic_load(&r->deaf) == RELAY_CUT){
			atomic_store(&r->deaf, 0);
			atomic_fetch_add(&r->cuts, 1);
			break;
		}
		if(poll(p, slowed ? 3 : 2, 100) <= 0){
			continue;
		}
		if(slowed && p[2].revents){
			break;
		}
		if(p[0].revents){
			slowed = slowed || (up > r->limit && atomic_load(&r->cuts) < r->slow);
			n = read(a, buf, slowed ? SLOW_CHUNK : sizeof(buf));
			if(n > 0 && atomic_load(&r->deaf) == RELAY_DEAF){
				continue;
			}
			if(n <= 0 || write(b, buf, (size_t)n) != n){
				break;
			}
			up += (size_t)n;
			if(slowed){
				usleep(1000000 / (SLOW_RATE / SLOW_CHUNK));
			}else if(up > r->limit && r->slow == 0 && (r->holes == 0 || atomic_load(&r->cuts) < r->holes)){
				int c = atomic_load(&r->cuts);
				if(c < 16){
					r->cut_ms[c] = now_ms();
				}
				atomic_fetch_add(&r->cuts, 1);
				if(r->holes){
					close(b);
					b = -1;
					relay_swallow(r, a);
				}
				break;
			}
		}
		if(p[1].revents){
			n = read(b, buf, sizeof(buf));
			if(n <= 0 || write(a, buf, (size_t)n) != n){
				break;
			}
		}
	}
	if(slowed){
		int c = atomic_load(&r->cuts);
		if(c < 16){
			r->cut_ms[c] = now_ms();
		}
		atomic_fetch_add(&r->cuts, 1); /* the edge gave it up */
	}
	close(a);
	if(b >= 0){
		close(b);
	}
}

static void *relay_main(void *arg)
{
	struct relay *r = arg;

	while(!atomic_load(&r->stop)){
		struct pollfd p = { .fd = r->lfd, .events = POLLIN };
		if(poll(&p, 1, 100) > 0){
			int a = accept(r->lfd, NULL, NULL);
			if(a >= 0){
				if(r->accepts < 16){
					r->accept_ms[r->accepts] = now_ms();
				}
				r->accepts++;
				relay_pair(r, a); /* one connection at a time, as the edge makes them */
			}
		}
	}
	return NULL;
}

/* Starts relaying on PORT (nothing listens there before: connections are refused); HOLES, SLOW:
 * see struct relay (both 0: every connection over LIMIT is cut). */
static void relay_start(struct relay *r, int port, int cloud_port, size_t limit, int holes, int slow)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int one = 1, rcvbuf = 64 * 1024;

	memset(r, 0, sizeof(*r));
	r->cloud_port = cloud_port;
	r->limit = limit;
	r->holes = holes;
	r->slow = slow;
	r->port = port;
	sa.sin_port = htons((uint16_t)r->port);
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	r->lfd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(r->lfd, 0);
	setsockopt(r->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* A small receive buffer (inherited by the accepted sockets), as on a slow link: what the relay
	 * does not read stays unacknowledged at the edge, instead of megabytes taken in at once. */
	ck_assert_int_eq(setsockopt(r->lfd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
	ck_assert_int_eq(bind(r->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(r->lfd, 4), 0);
	ck_assert_int_eq(pthread_create(&r->thread, NULL, relay_main, r), 0);
}

static void relay_stop(struct relay *r)
{
	atomic_store(&r->stop, true);
	pthread_join(r->thread, NULL);
	close(r->lfd);
}

/* The edge's configuration: FBH_YAML_BASE with POISON_RULES, and cloud.poison_after: BREAKS unless
 * BREAKS is 0 (the default then applies). The caller frees. */
static char *poison_yaml(int breaks)
{
	const char *base = FBH_YAML_BASE POISON_RULES;
	const char *cloud = strstr(base, "cloud:\n");

	ck_assert_ptr_nonnull(cloud);
	cloud += strlen("cloud:\n");
	if(breaks == 0){
		return fbh_strdupf("%s", base);
	}
	return fbh_strdupf("%.*s  poison_after: %d\n%s", (int)(cloud - base), base, breaks, cloud);
}

/* Starts the cloud (no size limit: only the relay objects) with a subscriber to everything (*SUB),
 * a relay to it that acts once more than 1 MiB went through a connection (HOLES, SLOW: struct relay),
 * and the edge with YAML, reaching the cloud through the relay and watched by *SYS. Once the edge
 * is connected, the 5 MB message and the small ones go out on the live connection
 * (publish_poison()). Returns when they were published (now_ms()). */
static int64_t start_through_relay(struct fbh_broker *cloud, struct fbh_broker *edge, struct relay *relay, int holes,
		int slow, const char *yaml, struct fbh_sub **sub, struct fbh_sub **sys)
{
	int relay_port = fbh_free_port();
	int64_t t0;

	fbh_broker_init(cloud, "cloud");
	fbh_broker_init(edge, "edge");
	start_cloud(cloud, NULL);
	*sub = fbh_sub_start(cloud->port2, &cloud_tester, CLOUD_FILTER, 1);
	ck_assert_ptr_nonnull(*sub);
	relay_start(relay, relay_port, cloud->port, 1024 * 1024, holes, slow);
	start_edge(edge, relay_port, yaml, NULL);
	*sys = sys_watch(edge);
	ck_assert_ptr_nonnull(*sys);
	ck_assert(sys_wait(*sys, "state", "connected", 10000));
	t0 = now_ms();
	publish_poison(edge, false);
	return t0;
}

/* The 5 MB message breaks every connection that carries it: it goes to dead letters after exactly
 * BREAKS cut connections with it alone in flight (cloud.poison_after, or the default when SET is
 * false), and the queue moves on. A first cut with the small ones in flight behind it too (it
 * depends on how soon they are sent) names no record: each of them goes alone from then on, and
 * that cut is one more. */
static void check_breaks(int breaks, bool set)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub, *sys;
	struct relay relay;
	struct dead_list dl;
	char seen[N_SMALL] = { 0 };
	long last = -1;
	int connects;
	int64_t t0;
	char *yaml = poison_yaml(set ? breaks : 0);
	char why[96];

	int cuts, shared;

	ck_assert_int_le(breaks, 14); /* the relay records 16 connections */

	/* The 5 MB message breaks every connection that carries it. */
	t0 = start_through_relay(&cloud, &edge, &relay, 0, 0, yaml, &sub, &sys);
	ck_assert_msg(fbh_sub_wait_count(sub, N_SMALL, 30000) >= N_SMALL, "%zu of %d small messages arrived within 30 s",
			fbh_sub_count(sub), N_SMALL);
	fprintf(stderr, "the queue moved on: %d messages delivered %lld ms after the publish, %d connections cut\n",
			N_SMALL, (long long)(now_ms() - t0), atomic_load(&relay.cuts));
	usleep(500000);
	/* In order; a message can repeat only if it was in flight at a cut. */
	for(size_t i = 0; i < fbh_sub_count(sub); i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		long k = payload_index(m, "s");
		ck_assert_str_eq(m->topic, "edge/site-A/telemetry/a");
		ck_assert(k >= 0 && k < N_SMALL);
		if(!seen[k]){
			ck_assert_int_eq(k, last + 1);
			seen[k] = 1;
			last = k;
		}
	}
	ck_assert_int_eq(last, N_SMALL - 1);
	shared = log_lines_with(&edge, "records were in flight when the connection broke: ",
			"go alone from the next connection on");
	ck_assert_int_le(shared, 1);
	cuts = breaks + shared;
	ck_assert_int_eq(atomic_load(&relay.cuts), cuts);
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "spool/dead", 1, 5000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/rejected", 1, 5000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", N_SMALL, 5000));
	ck_assert(sys_wait_u64(sys, "reconnects", (uint64_t)cuts, 5000));
	ck_assert_int_eq(log_lines_with(&edge, "moved to dead letters", "edge/site-A/telemetry/big"), 1);
	/* A connection that broke before any acknowledgement is a failed attempt: the pauses before
	 * the later connects grow (reconnect min 100 ms: about 50-100, then 100-200 ms, ...). */
	connects = log_lines_with(&edge, "connected to", "as edge-site-A");
	ck_assert_int_eq(connects, cuts + 1);
	ck_assert_int_eq(log_lines_with(&edge, "connection to", "lost"), cuts);
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	relay_stop(&relay);
	ck_assert_int_eq(relay.accepts, cuts + 1);
	for(int i = 0; i < cuts; i++){
		fprintf(stderr, "cut %d: next connection %lld ms later\n", i + 1,
				(long long)(relay.accept_ms[i + 1] - relay.cut_ms[i]));
	}
	/* Jitter keeps each pause within [back-off / 2, back-off]: starting from the 100 ms minimum
	 * (the first connection succeeded), a connection that broke before any acknowledgement
	 * doubles it to 200, then 400 ms, up to the 1 s maximum; load can only lengthen a pause.
	 * Without the growth every pause would stay within 50-100 ms (plus the time to notice the cut
	 * and connect). */
	for(int i = 0; i < cuts; i++){
		int64_t backoff = 100 << i;

		ck_assert_int_ge(relay.accept_ms[i + 1] - relay.cut_ms[i], (backoff < 1000 ? backoff : 1000) / 2);
	}

	read_dead(&edge, &dl);
	ck_assert_uint_eq(dl.n, 1);
	ck_assert_str_eq(dl.d[0].topic, "edge/site-A/telemetry/big");
	ck_assert_uint_eq(dl.d[0].payload_len, BIG);
	snprintf(why, sizeof(why), "broke %d times while it was the only record in flight", breaks);
	ck_assert_msg(!strncmp(dl.d[0].reason, "0x80 ", 5) && strstr(dl.d[0].reason, why),
			"reason '%s'", dl.d[0].reason);
	ck_assert_int_eq(log_lines_with(&edge, "edge/site-A/telemetry/big", why), 1);
	free(yaml);
}

START_TEST(test_message_that_breaks_the_connection_goes_to_dead_letters_after_three_breaks)
{
	check_breaks(POISON_DEFAULT, false);
}
END_TEST

START_TEST(test_message_that_breaks_the_connection_goes_to_dead_letters_after_poison_after_breaks)
{
	check_breaks(5, true);
}
END_TEST

/* Alarms published at the edge every EVERY_US on a rule of lane 0, from a thread of their own, until
 * STOP is set or MAX (when not 0) are published. */
struct alarms {
	int port;
	useconds_t every_us;
	int max;
	pthread_t th;
	atomic_bool stop;
	atomic_int sent, failed;
};

static void *alarms_main(void *ud)
{
	struct alarms *a = ud;
	struct fbh_pub *pub = fbh_pub_connect(a->port, NULL);
	char payload[32];

	if(pub == NULL){
		atomic_store(&a->failed, 1);
		return NULL;
	}
	while(!atomic_load(&a->stop) && (a->max == 0 || atomic_load(&a->sent) < a->max)){
		int n = snprintf(payload, sizeof(payload), "a%d", atomic_load(&a->sent));

		if(fbh_pub_send(pub, "local/alarm/x", payload, n, 1, false, NULL) < 0){
			atomic_fetch_add(&a->failed, 1);
		}else{
			atomic_fetch_add(&a->sent, 1);
		}
		usleep(a->every_us);
	}
	if(!fbh_pub_wait_all(pub, 30000) || fbh_pub_count_failed(pub) != 0){
		atomic_fetch_add(&a->failed, 1);
	}
	fbh_pub_close(pub);
	return NULL;
}

/* How many of SUB's messages on TOPIC, with payloads PREFIX<k>, arrived in order counting each k
 * at its first arrival; -1 when one came out of order. */
static long in_order(struct fbh_sub *sub, const char *topic, const char *prefix)
{
	long last = -1;

	for(size_t i = 0; i < fbh_sub_count(sub); i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		long k;

		if(strcmp(m->topic, topic) != 0){
			continue;
		}
		k = payload_index(m, prefix);
		if(k > last + 1){
			return -1;
		}
		if(k == last + 1){
			last = k;
		}
	}
	return last + 1;
}

/* Stops SYS, SUB, the edge and the relay, and reads the edge's dead letters into DL: exactly one,
 * the 5 MB message. */
static void stop_with_the_big_one_dead(struct fbh_broker *edge, struct fbh_sub *sub, struct fbh_sub *sys,
		struct relay *relay, struct dead_list *dl)
{
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(edge), 0);
	relay_stop(relay);
	read_dead(edge, dl);
	ck_assert_uint_eq(dl->n, 1);
	ck_assert_str_eq(dl->d[0].topic, "edge/site-A/telemetry/big");
}

/* Every one of the ALARMS alarms reaches SUB, in order; then the spool is empty, one record is a
 * dead letter (counted rejected), and ORDINARY + ALARMS were forwarded. */
static void check_alarms_and_one_dead(struct fbh_sub *sub, struct fbh_sub *sys, long alarms, long ordinary)
{
	for(int i = 0; i < 600 && in_order(sub, "edge/site-A/alarm/x", "a") < alarms; i++){
		usleep(100 * 1000);
	}
	ck_assert_int_eq(in_order(sub, "edge/site-A/alarm/x", "a"), alarms);
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "spool/dead", 1, 5000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/rejected", 1, 5000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", (uint64_t)(ordinary + alarms), 5000));
}

/* As check_breaks(), while a rule of a higher lane (priority 0) gets an alarm every 100 ms, which
 * goes first on every connection: some are acknowledged before the 5 MB message breaks the
 * connection, some are in flight with it. Neither clears it nor takes the blame: it goes to dead
 * letters after poison_after breaks while it went alone, no alarm goes to dead letters, and every
 * alarm and the small messages arrive, in order. (Before, an alarm acknowledged on every connection
 * kept the large one from being blamed for ever, and an alarm in flight at each cut was
 * dead-lettered in its place.) */
START_TEST(test_message_that_breaks_the_connection_goes_to_dead_letters_while_a_higher_lane_flows)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub, *sys;
	struct relay relay;
	struct dead_list dl;
	struct alarms al = { 0 };
	char *yaml = fbh_strdupf("%s%s", FBH_YAML_BASE POISON_RULES,
			"  - local: local/alarm/#\n"
			"    cloud: edge/${site_id}/alarm/#\n"
			"    priority: 0\n");
	int relay_port = fbh_free_port();
	char why[96];
	long small = 0, alarms;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, CLOUD_FILTER, 1);
	ck_assert_ptr_nonnull(sub);
	relay_start(&relay, relay_port, cloud.port, 1024 * 1024, 0, 0);
	start_edge(&edge, relay_port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait(sys, "state", "connected", 10000));
	al.port = edge.port;
	al.every_us = 100 * 1000;
	ck_assert_int_eq(pthread_create(&al.th, NULL, alarms_main, &al), 0);
	usleep(300 * 1000);
	publish_poison(&edge, false);
	for(int i = 0; i < 600 && small < N_SMALL; i++){
		usleep(100 * 1000);
		small = in_order(sub, "edge/site-A/telemetry/a", "s");
		ck_assert_int_ge(small, 0);
	}
	usleep(1000 * 1000); /* alarms go on for a second with the queue moving */
	atomic_store(&al.stop, true);
	ck_assert_int_eq(pthread_join(al.th, NULL), 0);
	fprintf(stderr, "higher lane: %ld of %d small messages in order, %d connections cut, %d alarms\n",
			small, N_SMALL, atomic_load(&relay.cuts), atomic_load(&al.sent));
	ck_assert_int_eq(small, N_SMALL);
	ck_assert_int_eq(atomic_load(&al.failed), 0);
	ck_assert_int_gt(atomic_load(&al.sent), 10);
	alarms = atomic_load(&al.sent);
	check_alarms_and_one_dead(sub, sys, alarms, N_SMALL);
	ck_assert_int_eq(log_lines_with(&edge, "moved to dead letters", "edge/site-A/telemetry/big"), 1);
	ck_assert_int_eq(log_lines_with(&edge, "moved to dead letters", ""), 1);
	/* poison_after cuts with it alone in flight, and one more if an alarm (sent just before it) was
	 * in flight with it at the first: from then on it goes alone. */
	ck_assert_int_le(log_lines_with(&edge, "records were in flight when the connection broke: ", ""), 1);
	ck_assert_int_eq(atomic_load(&relay.cuts), POISON_DEFAULT
			+ log_lines_with(&edge, "records were in flight when the connection broke: ", ""));
	stop_with_the_big_one_dead(&edge, sub, sys, &relay, &dl);
	snprintf(why, sizeof(why), "broke %d times while it was the only record in flight", POISON_DEFAULT);
	ck_assert_msg(strstr(dl.d[0].reason, why), "reason '%s'", dl.d[0].reason);
	free(yaml);
}
END_TEST

/* The cloud closes the connection after a denied message (PUBACK 0x87, then the close) with the
 * ordinary messages sent behind it in flight, through a relay that passes 16 KiB every 1/16 s (the
 * cloud's Receive Maximum of 20 allows some 300 messages a second). Those each go alone from then
 * on, while a higher lane holds a backlog of 3,000 alarms, published as fast as the edge takes them
 * from the break on: a record that goes alone waits for what is in flight to be acknowledged and
 * then goes before the alarms behind it. All 40 ordinary messages arrive, in order, before the
 * alarms have all arrived; the denied one goes to dead letters, nothing else does (a record that
 * goes alone is not blamed for a break it was not alone in), and every alarm arrives, in order.
 * (The relay's acknowledgements come in bursts, so what is in flight empties often here; a record
 * passed over while acknowledgements trickle in one by one is not shown by this test.) */
START_TEST(test_records_in_flight_at_a_break_go_alone_without_waiting_for_a_higher_lane)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub, *sys;
	struct fbh_pub *pub;
	struct alarms al = { 0 };
	char *yaml = fbh_strdupf("%s%s", FBH_YAML_BASE POISON_RULES,
			"  - local: local/alarm/#\n"
			"    cloud: edge/${site_id}/alarm/#\n"
			"    priority: 0\n");
	struct relay relay;
	int relay_port = fbh_free_port();
	long small = 0, alarms;
	int64_t t0;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, CLOUD_FILTER, 1);
	ck_assert_ptr_nonnull(sub);
	relay_start(&relay, relay_port, cloud.port, 1, 0, 15);
	start_edge(&edge, relay_port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait(sys, "state", "connected", 10000));

	/* The denied message, then the ordinary ones: those sent with it are in flight at the close. */
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	ck_assert_int_ge(fbh_pub_send(pub, "local/secret/x", "denied", 6, 1, false, NULL), 0);
	ck_assert_int_eq(fbh_pub_send_n(pub, "local/telemetry/a", "s", 40, 1, NULL), 0);
	ck_assert(fbh_pub_wait_all(pub, 30000));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);
	ck_assert(fbh_wait_log(&edge, "go alone from the next connection on", 30000));
	al.port = edge.port;
	al.every_us = 0;
	al.max = 3000;
	ck_assert_int_eq(pthread_create(&al.th, NULL, alarms_main, &al), 0);
	t0 = now_ms();
	for(int i = 0; i < 1200 && small < 40; i++){
		usleep(25 * 1000);
		small = in_order(sub, "edge/site-A/telemetry/a", "s");
		ck_assert_int_ge(small, 0);
	}
	alarms = in_order(sub, "edge/site-A/alarm/x", "a");
	fprintf(stderr, "alone: %ld of 40 ordinary messages in order %lld ms after the break, %ld of %d alarms then\n",
			small, (long long)(now_ms() - t0), alarms, al.max);
	ck_assert_int_eq(small, 40);
	ck_assert_int_lt(alarms, al.max); /* the higher lane still held alarms */
	ck_assert_int_eq(pthread_join(al.th, NULL), 0);
	ck_assert_int_eq(atomic_load(&al.failed), 0);
	alarms = atomic_load(&al.sent);
	ck_assert_int_eq(alarms, al.max);
	check_alarms_and_one_dead(sub, sys, alarms, 40);
	ck_assert_int_eq(log_lines_with(&edge, "moved to dead letters", ""), 1);
	ck_assert_int_eq(log_lines_with(&edge, "moved to dead letters", "forbidden/site-A/x"), 1);
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	relay_stop(&relay);
	free(yaml);
}
END_TEST

/* The cloud goes silent while the 5 MB message is in flight (a black hole: nothing comes back, and
 * the edge gives the connection up after 1.5 x keepalive), on more connections in a row than
 * cloud.poison_after: silence is not the message's doing. Once the cloud answers again the message
 * is delivered, then the small ones in order; nothing goes to dead letters. */
START_TEST(test_message_in_flight_when_the_cloud_goes_silent_is_delivered_not_dead_lettered)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub, *sys;
	struct relay relay;
	struct dead_list dl;
	const int holes = POISON_DEFAULT + 1;
	const struct fbh_msg *m;
	char *yaml = poison_yaml(0);
	int64_t t0;

	t0 = start_through_relay(&cloud, &edge, &relay, holes, 0, yaml, &sub, &sys);
	/* Each silent connection costs 1.5 x keepalive (7.5 s) and a back-off of 1 s at most. */
	ck_assert_msg(fbh_sub_wait_count(sub, N_SMALL + 1, 120000) >= N_SMALL + 1,
			"%zu of %d messages arrived within 120 s", fbh_sub_count(sub), N_SMALL + 1);
	fprintf(stderr, "delivered %lld ms after the publish, %d connections went silent\n",
			(long long)(now_ms() - t0), atomic_load(&relay.cuts));
	usleep(500000);
	/* Exactly once each, in order: the silent connections delivered nothing. */
	ck_assert_uint_eq(fbh_sub_count(sub), N_SMALL + 1);
	m = fbh_sub_msg(sub, 0);
	ck_assert_str_eq(m->topic, "edge/site-A/telemetry/big");
	ck_assert_int_eq(m->payloadlen, BIG);
	for(size_t i = 0; i < N_SMALL; i++){
		m = fbh_sub_msg(sub, i + 1);
		ck_assert_str_eq(m->topic, "edge/site-A/telemetry/a");
		ck_assert_int_eq(payload_index(m, "s"), (long)i);
	}
	ck_assert_int_eq(atomic_load(&relay.cuts), holes);
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", N_SMALL + 1, 5000));
	ck_assert(sys_wait_u64(sys, "reconnects", (uint64_t)holes, 5000));
	ck_assert_str_eq(sys_value(sys, "spool/dead"), "0");
	ck_assert_str_eq(sys_value(sys, "edge_to_cloud/dropped/rejected"), "0");
	ck_assert_int_eq(log_lines_with(&edge, "connection to", "lost"), holes);
	ck_assert_int_eq(log_lines_with(&edge, "connection to", "nothing received for 7500 ms"), holes);
	ck_assert_int_eq(log_lines_with(&edge, "connection to", "while the cloud was still taking"), 0);
	ck_assert_int_eq(log_lines_with(&edge, "moved to dead letters", ""), 0);
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	relay_stop(&relay);
	ck_assert_int_eq(relay.accepts, holes + 1);

	read_dead(&edge, &dl);
	ck_assert_uint_eq(dl.n, 0);
	free(yaml);
}
END_TEST

/* The uplink is too slow for the 5 MB message within keepalive (the relay passes it at 256 KiB/s on
 * every connection: 20 s, against 1.5 x keepalive of 7.5 s), and the cloud answers nothing until it
 * has all of it. Unlike silence, that break is the message's doing (the cloud was still taking
 * it): after cloud.poison_after such breaks it goes to dead letters, and the queue moves on, in
 * order. (Before, it was sent again on every connection, for ever.) */
START_TEST(test_message_too_slow_to_send_within_keepalive_goes_to_dead_letters)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub, *sys;
	struct relay relay;
	struct dead_list dl;
	char *yaml = poison_yaml(0);
	int64_t t0;
	int shared;

	t0 = start_through_relay(&cloud, &edge, &relay, 0, 16, yaml, &sub, &sys);
	ck_assert_msg(wait_exactly(sub, N_SMALL, 120000, 500), "%zu of %d small messages arrived within 120 s",
			fbh_sub_count(sub), N_SMALL);
	fprintf(stderr, "the queue moved on %lld ms after the publish, %d slow connections\n",
			(long long)(now_ms() - t0), atomic_load(&relay.cuts));
	for(size_t i = 0; i < N_SMALL; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		ck_assert_str_eq(m->topic, "edge/site-A/telemetry/a");
		ck_assert_int_eq(payload_index(m, "s"), (long)i);
	}
	/* Exactly poison_after breaks blamed it while it went alone, and one with the small ones in
	 * flight behind it, if they were sent before the first. A loaded machine may stall the relay
	 * for longer than the link's look at the cloud's acknowledgements (about 3 s): such a break is
	 * taken for silence, which leaves the count as it was, and costs one more slowed connection. */
	shared = log_lines_with(&edge, "records were in flight when the connection broke: ", "");
	ck_assert_int_le(shared, 1);
	ck_assert_int_ge(atomic_load(&relay.cuts), POISON_DEFAULT + shared);
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "spool/dead", 1, 5000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/rejected", 1, 5000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", N_SMALL, 5000));
	ck_assert(sys_wait_u64(sys, "reconnects", (uint64_t)atomic_load(&relay.cuts), 5000));
	ck_assert_int_eq(log_lines_with(&edge, "connection to", "while the cloud was still taking a PUBLISH"),
			POISON_DEFAULT + shared);
	ck_assert_int_eq(log_lines_with(&edge, "connection to", "lost"), atomic_load(&relay.cuts));
	ck_assert_int_eq(log_lines_with(&edge, "moved to dead letters", "edge/site-A/telemetry/big"), 1);
	stop_with_the_big_one_dead(&edge, sub, sys, &relay, &dl);
	ck_assert_uint_eq(dl.d[0].payload_len, BIG);
	ck_assert_msg(strstr(dl.d[0].reason, "the connection broke 3 times while it was the only record in flight")
			&& strstr(dl.d[0].reason, "while the cloud was still taking a PUBLISH"), "reason '%s'", dl.d[0].reason);
	free(yaml);
}
END_TEST

/* QoS 2 packet ids across a break. The relay drops what the edge sends while the cloud's packets
 * still reach it: the cloud holds the packet ids of the QoS 2 messages it has sent PUBREC for, as
 * their PUBRELs never arrive. Then the connection is cut, or the link process is killed (-9; the
 * broker starts another). The cloud (Mosquitto, Receive Maximum 20) refuses every QoS 2 message
 * beyond its quota while it holds the ids of a whole window; and every message here has the same
 * topic and payload (only its user property "n" differs), so it would also take a later message
 * that came with a held id for a repeat and drop it, as MQTT 5 asks of any cloud. The next
 * connection releases the held ids (a PUBREL for each, logged) and its packet ids go on after the
 * last ones, across link processes too (the ids file): every message arrives, the released ones
 * twice at most (the PUBREL delivers them, and they are sent again), and none is rejected. Before,
 * the ids of a new connection started at 1 again: the cloud answered 0x97 (Quota exceeded) to each
 * message, one per connection, and they went to dead letters. */
#define N_Q2 1500
#define MAX_INFLIGHT_DEFAULT 64
/* What the next link process releases (session.c, ids_range()): MID_LEASE + max_inflight + the
 * cloud_to_edge rules (none) + 8. */
#define RELEASED_RANGE (1024 + MAX_INFLIGHT_DEFAULT + 8)

/* From the cloud's log: the packet id of the edge's first PUBLISH on its second connection is above
 * every id of its first connection (they go on, they do not start at 1 again). */
static void check_ids_go_on(struct fbh_broker *cloud)
{
	char *text = fbh_read_file(cloud->log);
	unsigned connects = 0, max_before = 0, first_after = 0, mid;
	const char *pub = "Received PUBLISH from edge-site-A (d";

	ck_assert_ptr_nonnull(text);
	for(char *line = text, *end; *line && first_after == 0; line = end + 1){
		const char *m;

		end = strchr(line, '\n');
		if(end == NULL){
			break;
		}
		*end = '\0';
		if(strstr(line, "New client connected") && strstr(line, " as edge-site-A ")){
			connects++;
		}else if(strstr(line, pub) && (m = strstr(line, ", m")) && sscanf(m, ", m%u,", &mid) == 1){
			if(connects == 1 && mid > max_before){
				max_before = mid;
			}else if(connects == 2){
				first_after = mid;
			}
		}
	}
	free(text);
	ck_assert_uint_gt(max_before, 0);
	ck_assert_msg(first_after > max_before, "the second connection's first packet id is %u, the first's ids went to %u",
			first_after, max_before);
}

/* Counts in SEEN how often each message of check_qos2_break() came (by its "n"), checking topic
 * and payload; *GOT: messages, *TWICE: those that came more than once. Returns how many never came. */
static size_t qos2_seen(struct fbh_sub *sub, unsigned *seen, size_t *got, size_t *twice)
{
	size_t missing = 0;

	memset(seen, 0, N_Q2 * sizeof(*seen));
	*got = fbh_sub_count(sub);
	*twice = 0;
	for(size_t i = 0; i < *got; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		const char *n = fbh_msg_user_prop(m, "n");

		ck_assert_str_eq(m->topic, "edge/site-A/q2/a");
		ck_assert_str_eq(m->payload, "same");
		ck_assert_ptr_nonnull(n);
		ck_assert_int_lt(atoi(n), N_Q2);
		seen[atoi(n)]++;
	}
	for(int i = 0; i < N_Q2; i++){
		missing += seen[i] == 0;
		*twice += seen[i] > 1;
		ck_assert_uint_le(seen[i], 2);
	}
	return missing;
}

static void check_qos2_break(bool kill_link)
{
	struct fbh_broker cloud, edge;
	struct relay relay;
	struct fbh_sub *sub, *sys;
	struct fbh_pub *pub;
	int relay_port = fbh_free_port();
	static unsigned seen[N_Q2];
	size_t got, missing = 0, twice = 0;
	pid_t first = 0;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, CLOUD_FILTER, 1);
	ck_assert_ptr_nonnull(sub);
	relay_start(&relay, relay_port, cloud.port, SIZE_MAX, 0, 0);
	start_edge(&edge, relay_port, FBH_YAML_BASE
			"edge_to_cloud:\n"
			"  - local: local/q2/#\n"
			"    cloud: edge/${site_id}/q2/#\n"
			"    qos: 2\n", NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait(sys, "state", "connected", 10000));

	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	for(int i = 0; i < N_Q2; i++){
		mosquitto_property *props = NULL;
		char n[16];

		snprintf(n, sizeof(n), "%d", i);
		ck_assert_int_eq(mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "n", n), 0);
		ck_assert_int_ge(fbh_pub_send(pub, "local/q2/a", "same", 4, 1, false, props), 0);
		mosquitto_property_free_all(&props);
	}
	/* While the messages flow: deaf, then cut (or the link process killed). */
	ck_assert_uint_ge(fbh_sub_wait_count(sub, 500, 20000), 500);
	fbh_broker_log_mark(&edge);
	atomic_store(&relay.deaf, RELAY_DEAF);
	usleep(500 * 1000);
	ck_assert_uint_lt(fbh_sub_count(sub), N_Q2);
	if(kill_link){
		first = link_pid_wait(edge.pid);
		ck_assert_int_eq(kill(first, SIGKILL), 0);
	}else{
		atomic_store(&relay.deaf, RELAY_CUT);
	}
	ck_assert(fbh_pub_wait_all(pub, 20000));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);

	/* Every message arrives (within 60 s), then the repeats, if any. */
	for(int64_t until = now_ms() + 60000; ; usleep(200 * 1000)){
		missing = qos2_seen(sub, seen, &got, &twice);
		if(missing == 0 || now_ms() > until){
			break;
		}
	}
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	usleep(1000 * 1000);
	missing = qos2_seen(sub, seen, &got, &twice);
	ck_assert(fbh_broker_log_contains(&edge, "PUBREL sent for"));
	if(kill_link){
		char *line = fbh_strdupf("PUBREL sent for %d packet ids", RELEASED_RANGE);

		ck_assert_msg(fbh_broker_log_contains(&edge, line), "no line: %s", line);
		free(line);
		ck_assert_int_ne(link_pid_wait(edge.pid), first);
	}
	ck_assert_msg(missing == 0, "%zu of %d messages never reached the cloud (%zu received)", missing, N_Q2, got);
	/* Repeats: only messages in flight at the break (cloud.max_inflight). */
	ck_assert_uint_le(twice, MAX_INFLIGHT_DEFAULT);
	ck_assert_uint_eq(got, N_Q2 + twice);
	ck_assert_int_eq(atomic_load(&relay.cuts), kill_link ? 0 : 1);
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/rejected", 0, 1000));
	ck_assert(sys_wait_u64(sys, "spool/dead", 0, 1000));
	if(!kill_link){
		ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", N_Q2, 1000));
	}
	ck_assert_uint_eq(log_count(&edge, "moved to dead letters"), 0);
	check_ids_go_on(&cloud);
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	relay_stop(&relay);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
}

START_TEST(test_qos2_packet_ids_the_cloud_holds_at_a_break_are_released)
{
	check_qos2_break(false);
}
END_TEST

START_TEST(test_qos2_packet_ids_the_cloud_holds_are_released_by_the_next_link_process)
{
	check_qos2_break(true);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("poison");
	TCase *tc = fbh_tcase("poison");

	signal(SIGPIPE, SIG_IGN);
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_denied_and_oversize_messages_go_to_dead_letters_and_the_rest_arrive);
	tcase_add_test(tc, test_message_that_breaks_the_connection_goes_to_dead_letters_after_three_breaks);
	tcase_add_test(tc, test_message_that_breaks_the_connection_goes_to_dead_letters_after_poison_after_breaks);
	tcase_add_test(tc, test_message_that_breaks_the_connection_goes_to_dead_letters_while_a_higher_lane_flows);
	tcase_add_test(tc, test_records_in_flight_at_a_break_go_alone_without_waiting_for_a_higher_lane);
	tcase_add_test(tc, test_message_in_flight_when_the_cloud_goes_silent_is_delivered_not_dead_lettered);
	tcase_add_test(tc, test_message_too_slow_to_send_within_keepalive_goes_to_dead_letters);
	suite_add_tcase(s, tc);
	tc = fbh_tcase("qos2");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_qos2_packet_ids_the_cloud_holds_at_a_break_are_released);
	tcase_add_test(tc, test_qos2_packet_ids_the_cloud_holds_are_released_by_the_next_link_process);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
