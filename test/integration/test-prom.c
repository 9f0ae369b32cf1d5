/* The Prometheus text endpoint (metrics.listen) of the link process: exact values after known
 * traffic, scraped over HTTP by the test's own client; a port already taken is logged once and
 * the bridge runs on; with "promtool" as argument only the check of the output by
 * `promtool check metrics` (fetched with curl) runs, a skip (77) when either is missing. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define PROM_RULES \
	"edge_to_cloud:\n" \
	"  - local: local/telemetry/#\n" \
	"    cloud: edge/${site_id}/telemetry/#\n" \
	"    priority: 3\n" \
	"  - local: local/debug/#\n" \
	"    drop: true\n" \
	"  - local: local/secret/#\n" \
	"    cloud: forbidden/${site_id}/#\n"

/* An HTTP/1.0 request to 127.0.0.1:PORT; returns the whole response (malloc'ed) or NULL when
 * nothing answers. */
static char *http_request(int port, const char *method, const char *path)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct timeval tv = { .tv_sec = 10 };
	char req[256], *buf = NULL;
	size_t len = 0, cap = 0;
	int fd;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if(connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0){
		close(fd);
		return NULL;
	}
	snprintf(req, sizeof(req), "%s %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n", method, path, port);
	ck_assert_int_eq(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	for(;;){
		ssize_t n;

		if(cap - len < 4096){
			cap = cap * 2 + 8192;
			ck_assert_ptr_nonnull(buf = realloc(buf, cap));
		}
		n = read(fd, buf + len, cap - len - 1);
		if(n <= 0){
			break;
		}
		len += (size_t)n;
	}
	close(fd);
	if(buf){
		buf[len] = '\0';
	}
	return buf;
}

/* The body of a 200 answer to GET /metrics (the content type checked), or NULL. */
static char *scrape(int port)
{
	char *r = http_request(port, "GET", "/metrics"), *body;

	if(r == NULL){
		return NULL;
	}
	ck_assert_msg(strncmp(r, "HTTP/1.0 200 ", 13) == 0 || strncmp(r, "HTTP/1.1 200 ", 13) == 0,
			"not a 200 answer: %.200s", r);
	ck_assert_msg(strstr(r, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n") != NULL,
			"no Prometheus content type: %.400s", r);
	ck_assert_ptr_nonnull(body = strstr(r, "\r\n\r\n"));
	body = strdup(body + 4);
	free(r);
	return body;
}

/* The value of the sample line "NAME VALUE" in TEXT (NAME with its labels), or -1 when absent. */
static long long sample(const char *text, const char *name)
{
	size_t n = strlen(name);

	for(const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL){
		if(strncmp(l, name, n) == 0 && l[n] == ' '){
			return strtoll(l + n + 1, NULL, 10);
		}
	}
	return -1;
}

/* Scrapes until sample NAME equals WANT (the status is copied every 500 ms). */
static bool wait_sample(int port, const char *name, long long want, int timeout_ms)
{
	long long got = -2;

	for(int waited = 0; waited <= timeout_ms; waited += 100){
		char *t = scrape(port);

		if(t){
			got = sample(t, name);
			free(t);
			if(got == want){
				return true;
			}
		}
		usleep(100 * 1000);
	}
	fprintf(stderr, "%s: wanted %lld, last seen %lld\n", name, want, got);
	return false;
}

static void send_n(int port, const char *topic, int n)
{
	struct fbh_pub *pub = fbh_pub_connect(port, NULL);

	ck_assert_ptr_nonnull(pub);
	for(int i = 0; i < n; i++){
		ck_assert_int_ge(fbh_pub_send(pub, topic, "x", 1, 1, false, NULL), 0);
	}
	ck_assert(fbh_pub_wait_all(pub, 10000));
	fbh_pub_close(pub);
}

static void start_edge_metrics(struct fbh_broker *edge, int cloud_port, int mport)
{
	char *yaml = fbh_strdupf("%smetrics:\n  listen: 127.0.0.1:%d\n", FBH_YAML_BASE PROM_RULES, mport);

	start_edge(edge, cloud_port, yaml, NULL);
	free(yaml);
}

START_TEST(exact_values_after_known_traffic)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub;
	int mport = fbh_free_port();
	time_t t0 = time(NULL);
	char *t, *r;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "#", 1);
	ck_assert_ptr_nonnull(sub);
	start_edge_metrics(&edge, cloud.port, mport);
	ck_assert(fbh_wait_log(&edge, "metrics endpoint: http://127.0.0.1:", 10000));
	ck_assert(wait_sample(mport, "flowmq_bridge_connected", 1, 15000));

	send_n(edge.port, "local/telemetry/a", 3);
	send_n(edge.port, "local/debug/b", 2);
	send_n(edge.port, "other/d", 4);         /* no rule */
	ck_assert(wait_exactly(sub, 3, 10000, 500));
	ck_assert(wait_sample(mport, "flowmq_bridge_edge_to_cloud_forwarded_total", 3, 10000));

	ck_assert_ptr_nonnull(t = scrape(mport));
	ck_assert_int_eq(sample(t, "flowmq_bridge_connected"), 1);
	ck_assert_int_eq(sample(t, "flowmq_bridge_edge_to_cloud_forwarded_total"), 3);
	ck_assert_int_eq(sample(t, "flowmq_bridge_edge_to_cloud_dropped_filtered_total"), 2);
	ck_assert_int_eq(sample(t, "flowmq_bridge_edge_to_cloud_dropped_rejected_total"), 0);
	ck_assert_int_eq(sample(t, "flowmq_bridge_edge_to_cloud_dropped_full_total"), 0);
	ck_assert_int_eq(sample(t, "flowmq_bridge_reconnects_total"), 0);
	ck_assert_int_eq(sample(t, "flowmq_bridge_link_restarts_total"), 0);
	ck_assert_int_eq(sample(t, "flowmq_bridge_cloud_to_edge_injected_total"), 0);
	ck_assert_int_eq(sample(t, "flowmq_bridge_rule_forwarded_total{rule=\"0\"}"), 3);
	ck_assert_int_eq(sample(t, "flowmq_bridge_rule_dropped_total{rule=\"0\"}"), 0);
	ck_assert_int_eq(sample(t, "flowmq_bridge_rule_forwarded_total{rule=\"1\"}"), 0);
	ck_assert_int_eq(sample(t, "flowmq_bridge_rule_dropped_total{rule=\"1\"}"), 2);
	ck_assert_int_eq(sample(t, "flowmq_bridge_rule_forwarded_total{rule=\"2\"}"), 0);
	ck_assert_int_eq(sample(t, "flowmq_bridge_rule_dropped_total{rule=\"2\"}"), 0);
	ck_assert_int_eq(sample(t, "flowmq_bridge_rule_forwarded_total{rule=\"3\"}"), -1);
	ck_assert_int_eq(sample(t, "flowmq_bridge_spool_dead"), 0);
	ck_assert_int_eq(sample(t, "flowmq_bridge_spool_messages"), 0);
	ck_assert_int_eq(sample(t, "flowmq_bridge_cloud_to_edge_pending"), 0);
	ck_assert_int_eq(sample(t, "flowmq_bridge_spool_disk_full"), 0);
	for(int l = 0; l < 10; l++){
		char name[96];

		snprintf(name, sizeof(name), "flowmq_bridge_spool_lane_messages{lane=\"%d\"}", l);
		ck_assert_int_eq(sample(t, name), 0);
	}
	ck_assert_int_eq(sample(t, "flowmq_bridge_spool_lane_messages{lane=\"10\"}"), -1);
	ck_assert_int_ge(sample(t, "flowmq_bridge_last_connect_timestamp_seconds"), (long long)t0);
	ck_assert_int_le(sample(t, "flowmq_bridge_last_connect_timestamp_seconds"), (long long)time(NULL));
	ck_assert_int_ge(sample(t, "flowmq_bridge_link_uptime_seconds"), 0);
	ck_assert_int_le(sample(t, "flowmq_bridge_link_uptime_seconds"), (long long)(time(NULL) - t0 + 1));
	/* Every family is typed once, counters end in _total. */
	ck_assert_ptr_nonnull(strstr(t, "# TYPE flowmq_bridge_edge_to_cloud_forwarded_total counter\n"));
	ck_assert_ptr_nonnull(strstr(t, "# TYPE flowmq_bridge_rule_dropped_total counter\n"));
	ck_assert_ptr_nonnull(strstr(t, "# TYPE flowmq_bridge_connected gauge\n"));
	ck_assert_ptr_nonnull(strstr(t, "# TYPE flowmq_bridge_spool_dead gauge\n"));
	free(t);

	/* Other paths and methods. */
	ck_assert_ptr_nonnull(r = http_request(mport, "GET", "/"));
	ck_assert_msg(strstr(r, " 404 ") != NULL, "%.200s", r);
	free(r);
	ck_assert_ptr_nonnull(r = http_request(mport, "POST", "/metrics"));
	ck_assert_msg(strstr(r, " 405 ") != NULL, "%.200s", r);
	free(r);

	/* A message the cloud's ACL refuses: taken by rule 2, then a dead letter. */
	send_n(edge.port, "local/secret/c", 1);
	ck_assert(wait_sample(mport, "flowmq_bridge_spool_dead", 1, 10000));
	ck_assert(wait_sample(mport, "flowmq_bridge_edge_to_cloud_dropped_rejected_total", 1, 5000));
	ck_assert_ptr_nonnull(t = scrape(mport));
	ck_assert_int_eq(sample(t, "flowmq_bridge_rule_forwarded_total{rule=\"2\"}"), 1);
	ck_assert_int_eq(sample(t, "flowmq_bridge_rule_forwarded_total{rule=\"0\"}"), 3);
	ck_assert_int_eq(sample(t, "flowmq_bridge_edge_to_cloud_forwarded_total"), 3);
	free(t);

	/* The cloud goes away: connected 0, the messages meanwhile wait in the spool, in rule 0's lane 3. */
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	ck_assert(wait_sample(mport, "flowmq_bridge_connected", 0, 15000));
	send_n(edge.port, "local/telemetry/b", 5);
	ck_assert(wait_sample(mport, "flowmq_bridge_spool_messages", 5, 10000));
	ck_assert(wait_sample(mport, "flowmq_bridge_spool_lane_messages{lane=\"3\"}", 5, 5000));
	ck_assert_ptr_nonnull(t = scrape(mport));
	for(int l = 0; l < 10; l++){
		char name[96];

		snprintf(name, sizeof(name), "flowmq_bridge_spool_lane_messages{lane=\"%d\"}", l);
		ck_assert_int_eq(sample(t, name), l == 3 ? 5 : 0);
	}
	ck_assert_int_ge(sample(t, "flowmq_bridge_spool_lane_oldest_age_seconds{lane=\"3\"}"), 0);
	ck_assert_int_eq(sample(t, "flowmq_bridge_spool_lane_oldest_age_seconds{lane=\"2\"}"), 0);
	ck_assert_int_eq(sample(t, "flowmq_bridge_rule_forwarded_total{rule=\"0\"}"), 8);
	ck_assert_int_eq(sample(t, "flowmq_bridge_edge_to_cloud_forwarded_total"), 3);
	free(t);
	fbh_sub_stop(sub);
}
END_TEST

static size_t count_of(const char *text, const char *needle)
{
	size_t n = 0;

	for(const char *p = text; (p = strstr(p, needle)) != NULL; p++){
		n++;
	}
	return n;
}

START_TEST(a_port_already_taken_is_logged_once_and_the_bridge_runs_on)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub;
	struct sockaddr_in a = { .sin_family = AF_INET };
	int mport = fbh_free_port(), fd, one = 1;
	char want[160], *log;

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	a.sin_port = htons((uint16_t)mport);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(fd, 1), 0);

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "#", 1);
	ck_assert_ptr_nonnull(sub);
	start_edge_metrics(&edge, cloud.port, mport);
	snprintf(want, sizeof(want), "metrics.listen 127.0.0.1:%d: cannot listen: Address already in use; "
			"the bridge runs on without the metrics endpoint", mport);
	ck_assert(fbh_wait_log(&edge, want, 10000));
	send_n(edge.port, "local/telemetry/a", 4);
	ck_assert(wait_exactly(sub, 4, 10000, 500));
	ck_assert_ptr_nonnull(log = fbh_read_file(edge.log));
	ck_assert_uint_eq(count_of(log, want), 1);
	ck_assert_uint_eq(count_of(log, "metrics endpoint: http://"), 0);
	free(log);
	fbh_sub_stop(sub);
	close(fd);
}
END_TEST

START_TEST(promtool_accepts_what_curl_scrapes)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub;
	int mport = fbh_free_port(), st;
	char *cmd, *out, *body, *log;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "#", 1);
	ck_assert_ptr_nonnull(sub);
	start_edge_metrics(&edge, cloud.port, mport);
	ck_assert(wait_sample(mport, "flowmq_bridge_connected", 1, 15000));
	send_n(edge.port, "local/telemetry/a", 2);
	send_n(edge.port, "local/debug/a", 1);
	ck_assert(wait_exactly(sub, 2, 10000, 500));
	ck_assert(wait_sample(mport, "flowmq_bridge_edge_to_cloud_forwarded_total", 2, 10000));

	out = fbh_strdupf("%s/metrics.txt", edge.dir);
	log = fbh_strdupf("%s/promtool.log", edge.dir);
	cmd = fbh_strdupf("curl -sSf -o '%s' http://127.0.0.1:%d/metrics", out, mport);
	st = system(cmd);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "curl failed: %d", st);
	free(cmd);
	ck_assert_ptr_nonnull(body = fbh_read_file(out));
	ck_assert_int_eq(sample(body, "flowmq_bridge_edge_to_cloud_forwarded_total"), 2);
	ck_assert_int_eq(sample(body, "flowmq_bridge_rule_dropped_total{rule=\"1\"}"), 1);
	free(body);
	cmd = fbh_strdupf("promtool check metrics <'%s' >'%s' 2>&1", out, log);
	st = system(cmd);
	free(cmd);
	body = fbh_read_file(log);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "promtool check metrics: status %d: %s", st,
			body ? body : "");
	ck_assert_msg(body && body[0] == '\0', "promtool has remarks: %s", body ? body : "");
	free(body);
	free(out);
	free(log);
	fbh_sub_stop(sub);
}
END_TEST

static bool have(const char *prog)
{
	char *cmd = fbh_strdupf("command -v %s >/dev/null 2>&1", prog);
	int st = system(cmd);

	free(cmd);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

int main(int argc, char **argv)
{
	Suite *s = suite_create("prom");
	TCase *tc = fbh_tcase("prom");

	if(argc > 1 && strcmp(argv[1], "promtool") == 0){
		if(!have("promtool")){
			puts("SKIP: promtool is missing (Debian package prometheus; scripts/lib.sh installs it)");
			return 77;
		}
		if(!have("curl")){
			puts("SKIP: curl is missing (scripts/lib.sh installs it)");
			return 77;
		}
		tcase_add_test(tc, promtool_accepts_what_curl_scrapes);
	}else{
		tcase_add_test(tc, exact_values_after_known_traffic);
		tcase_add_test(tc, a_port_already_taken_is_logged_once_and_the_bridge_runs_on);
	}
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
