/* Integration suite "rotate": credentials rotated while the bridge runs (issue 18). The link
 * process reads the password file, the client certificate, its key and the CA again for every
 * connection attempt, so renewed files are used at the next reconnect, nothing spooled lost. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define NEW_PASSWORD "edge-rotated-9876"

/* Replaces PATH with TEXT the way a renewal agent does: a new file renamed over the old one. */
static void replace_file(const char *path, const char *text, mode_t mode)
{
	char *tmp = fbh_strdupf("%s.new", path);

	fbh_write_file(tmp, text, mode);
	ck_assert_int_eq(chmod(tmp, mode), 0);
	ck_assert_int_eq(rename(tmp, path), 0);
	free(tmp);
}

static void publish_range(struct fbh_broker *edge, size_t from, size_t n)
{
	struct fbh_pub *pub = fbh_pub_connect(edge->port, NULL);

	ck_assert_ptr_nonnull(pub);
	for(size_t i = from; i < from + n; i++){
		char payload[32];
		int len = snprintf(payload, sizeof(payload), "p%zu", i);

		ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/rot", payload, len, 1, false, NULL), 0);
	}
	ck_assert(fbh_pub_wait_all(pub, 30000));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);
}

/* The cloud's password for the edge changes while the cloud is down; the cloud comes back with the
 * new password. The edge is refused while the token file holds the old password, fails (without
 * using the old password) while the file cannot be used, and reconnects once the file holds the
 * new token: every message published before, during and after arrives once, in order. */
START_TEST(test_password_rotation)
{
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { 0 };
	struct fbh_client_opts so = persistent_sub("cloud-sub-rot");
	struct fbh_sub *sub, *sys;
	char *conf, *pwfile;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	co.extra = cloud_persistent_extra(&cloud);
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, "edge/site-A/#", 1);
	ck_assert_ptr_nonnull(sub);
	start_edge(&edge, cloud.port, FBH_YAML_STANDARD, NULL);
	pwfile = fbh_strdupf("%s/cloud-password", edge.dir);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait(sys, "state", "connected", 20000));

	publish_range(&edge, 0, 20);
	ck_assert(wait_exactly(sub, 20, 30000, 300));
	fbh_sub_stop(sub);

	/* The cloud drops the session and comes back with a new password for the edge. */
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	publish_range(&edge, 20, 30);
	ck_assert(sys_wait_u64(sys, "spool/messages", 30, 10000));
	conf = fbh_cloud_conf(&cloud, &co);
	{
		const char *argv[] = { "mosquitto_passwd", "-b", NULL, FBH_EDGE_USER, NEW_PASSWORD, NULL };
		char *passwd = fbh_strdupf("%s/passwd", cloud.dir);
		int st;

		argv[2] = passwd;
		st = fbh_run_cmd(argv, NULL);
		ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
		free(passwd);
	}
	fbh_broker_log_mark(&edge);
	ck_assert_int_eq(fbh_broker_start(&cloud, conf), 0);
	free(conf);

	/* The old token is refused; nothing is lost meanwhile. */
	ck_assert_msg(fbh_wait_log(&edge, "the cloud refused the connection: Not authorized", 20000),
			"the edge was not refused with the old password");
	publish_range(&edge, 50, 10);
	ck_assert(sys_wait_u64(sys, "spool/messages", 40, 10000));

	/* A token file that cannot be used fails the attempt naming file and reason. */
	fbh_broker_log_mark(&edge);
	replace_file(pwfile, NEW_PASSWORD "\n", 0620);
	ck_assert_msg(fbh_wait_log(&edge, "is writable by group (mode 620); chmod go-w", 20000),
			"no log line for the unusable password file");
	ck_assert(fbh_broker_log_line_has(&edge, "cannot connect to", "cloud.auth.password_file"));
	ck_assert_str_ne(sys_value(sys, "state"), "connected");
	ck_assert(sys_wait_u64(sys, "spool/messages", 40, 5000));

	/* The renewed token: the next attempt uses it. */
	replace_file(pwfile, NEW_PASSWORD "\n", 0600);
	sub = fbh_sub_start(cloud.port2, &so, "edge/site-A/#", 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 30000));
	publish_range(&edge, 60, 10);
	/* The persistent subscriber got 0..19 before; 20..69 arrive now, once each, in order. */
	ck_assert(wait_exactly(sub, 50, 60000, 1000));
	for(size_t i = 0; i < 50; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);

		ck_assert_str_eq(m->topic, "edge/site-A/telemetry/rot");
		ck_assert_msg(payload_index(m, "p") == (long)(20 + i), "message %zu is '%s'", i, (const char *)m->payload);
	}
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 70, 10000));
	fbh_sub_stop(sub);
	fbh_sub_stop(sys);
	free(pwfile);
	free((char *)co.extra);
}
END_TEST

/* The client certificate and key are renewed (here: by another CA, which the cloud trusts from now
 * on). While the files hold the old certificate the cloud refuses the handshake; once they are
 * replaced the next attempt presents the new one. Nothing spooled is lost. */
START_TEST(test_client_cert_rotation)
{
	const struct fbh_certs *c = fbh_certs();
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { 0 };
	struct fbh_client_opts so = persistent_sub("cloud-sub-cert");
	struct fbh_sub *sub, *sys;
	char *cert, *key, *yaml, *text;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	cert = fbh_strdupf("%s/client.crt", edge.dir);
	key = fbh_strdupf("%s/client.key", edge.dir);
	text = fbh_read_file(c->client_cert);
	fbh_write_file(cert, text, 0644);
	free(text);
	text = fbh_read_file(c->client_key);
	fbh_write_file(key, text, 0600);
	free(text);

	co.extra = cloud_persistent_extra(&cloud);
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, "edge/site-A/#", 1);
	ck_assert_ptr_nonnull(sub);
	yaml = fbh_strdupf("%s", FBH_YAML_STANDARD);
	{
		/* The certificate and key in the edge's own folder. */
		char *p = strstr(yaml, "@CERT_FILE@"), *q;

		ck_assert_ptr_nonnull(p);
		q = fbh_strdupf("%.*s@DIR@/client.crt%s", (int)(p - yaml), yaml, p + strlen("@CERT_FILE@"));
		free(yaml);
		yaml = q;
		p = strstr(yaml, "@KEY_FILE@");
		ck_assert_ptr_nonnull(p);
		q = fbh_strdupf("%.*s@DIR@/client.key%s", (int)(p - yaml), yaml, p + strlen("@KEY_FILE@"));
		free(yaml);
		yaml = q;
	}
	start_edge(&edge, cloud.port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait(sys, "state", "connected", 20000));
	publish_range(&edge, 0, 10);
	ck_assert(wait_exactly(sub, 10, 30000, 300));
	fbh_sub_stop(sub);

	/* The cloud now accepts only client certificates of the other CA. */
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	co.cafile_wrong_ca = true;
	fbh_broker_log_mark(&edge);
	start_cloud(&cloud, &co);
	ck_assert_msg(fbh_wait_log(&edge, "cannot connect to", 20000), "the old certificate was not refused");
	publish_range(&edge, 10, 20);
	ck_assert(sys_wait_u64(sys, "spool/messages", 20, 10000));
	ck_assert_str_ne(sys_value(sys, "state"), "connected");

	/* Renewal: new certificate and key in place; the next attempt presents them. */
	text = fbh_read_file(c->wrong_client_key);
	replace_file(key, text, 0600);
	free(text);
	text = fbh_read_file(c->wrong_client_cert);
	replace_file(cert, text, 0644);
	free(text);
	sub = fbh_sub_start(cloud.port2, &so, "edge/site-A/#", 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert(sys_wait(sys, "state", "connected", 30000));
	publish_range(&edge, 30, 10);
	ck_assert(wait_exactly(sub, 30, 60000, 1000));
	for(size_t i = 0; i < 30; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);

		ck_assert_str_eq(m->topic, "edge/site-A/telemetry/rot");
		ck_assert_msg(payload_index(m, "p") == (long)(10 + i), "message %zu is '%s'", i, (const char *)m->payload);
	}
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 40, 10000));
	fbh_sub_stop(sub);
	fbh_sub_stop(sys);
	free(yaml);
	free(cert);
	free(key);
	free((char *)co.extra);
}
END_TEST

/* Publishes N messages p<FROM>.. without waiting for their acknowledgements; returns the client. */
static struct fbh_pub *publish_async(struct fbh_broker *edge, size_t from, size_t n)
{
	struct fbh_pub *pub = fbh_pub_connect(edge->port, NULL);

	ck_assert_ptr_nonnull(pub);
	for(size_t i = from; i < from + n; i++){
		char payload[32];
		int len = snprintf(payload, sizeof(payload), "p%zu", i);

		ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/rot", payload, len, 1, false, NULL), 0);
	}
	return pub;
}

/* p0..p89 went to cloud A (SUBA), then to cloud B (SUBB) after a switch: A has p0..p(K-1) and B
 * pJ..p89 (NB of them), each in order, with J <= K (a message in flight at the switch may reach
 * both: at least once). */
static void split_delivery(struct fbh_sub *suba, struct fbh_sub *subb, size_t *k, size_t *j, size_t *nb)
{
	*k = fbh_sub_count(suba);
	ck_assert_uint_ge(*k, 20);
	for(size_t i = 0; i < *k; i++){
		ck_assert_msg(payload_index(fbh_sub_msg(suba, i), "p") == (long)i, "cloud A message %zu is '%s'", i,
				(const char *)fbh_sub_msg(suba, i)->payload);
	}
	ck_assert(fbh_sub_wait_count(subb, 90 - *k, 30000) >= 90 - *k);
	usleep(500000);
	*nb = fbh_sub_count(subb);
	ck_assert_uint_ge(*nb, 90 - *k);
	*j = (size_t)payload_index(fbh_sub_msg(subb, 0), "p");
	ck_assert_uint_le(*j, *k);
	ck_assert_uint_eq(*nb, 90 - *j);
	for(size_t i = 0; i < *nb; i++){
		ck_assert_msg(payload_index(fbh_sub_msg(subb, i), "p") == (long)(*j + i), "cloud B message %zu is '%s'", i,
				(const char *)fbh_sub_msg(subb, i)->payload);
	}
}

/* SIGHUP with a new endpoint list: the link process is restarted with it and moves to the other
 * cloud. Of the 90 messages published before, during and after, cloud A gets p0..p(K-1) in order
 * and cloud B pJ..p89 in order with J <= K (a message in flight at the switch may reach both:
 * at least once); every message arrives, none is left in the spool. */
START_TEST(test_sighup_new_endpoints)
{
	struct fbh_broker a, b, edge;
	struct fbh_sub *suba, *subb, *sys;
	struct fbh_pub *pub;
	size_t k, j, nb;
	char *yaml;

	fbh_broker_init(&a, "cloudA");
	fbh_broker_init(&b, "cloudB");
	fbh_broker_init(&edge, "edge");
	start_cloud(&a, NULL);
	start_cloud(&b, NULL);
	suba = fbh_sub_start(a.port2, &cloud_tester, "edge/site-A/#", 1);
	subb = fbh_sub_start(b.port2, &cloud_tester, "edge/site-A/#", 1);
	ck_assert_ptr_nonnull(suba);
	ck_assert_ptr_nonnull(subb);
	start_edge(&edge, a.port, FBH_YAML_STANDARD, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait(sys, "state", "connected", 20000));

	publish_range(&edge, 0, 20);
	ck_assert(wait_exactly(suba, 20, 30000, 300));

	/* The endpoint list now names cloud B only. */
	yaml = fbh_edge_yaml(&edge, b.port, FBH_YAML_STANDARD);
	fbh_broker_log_mark(&edge);
	pub = publish_async(&edge, 20, 50);
	ck_assert_int_eq(fbh_broker_signal(&edge, SIGHUP), 0);
	ck_assert(fbh_pub_wait_all(pub, 30000));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);
	ck_assert_msg(fbh_wait_log(&edge, "cloud settings changed; restarting the link process", 20000),
			"no restart of the link process after SIGHUP");
	{
		char *line = fbh_strdupf("connected to mqtts://localhost:%d as", b.port);

		ck_assert_msg(fbh_wait_log(&edge, line, 20000), "the link did not connect to cloud B");
		free(line);
	}
	publish_range(&edge, 70, 20);

	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 30000));
	split_delivery(suba, subb, &k, &j, &nb);
	/* Cloud A gets nothing more. */
	ck_assert_uint_eq(fbh_sub_count(suba), k);
	fprintf(stderr, "rotate: cloud A got p0..p%zu, cloud B p%zu..p89 (%zu sent to both)\n", k - 1, j, k - j);

	/* And back: the comparison is with what the running link process has, not the first file. */
	free(yaml);
	yaml = fbh_edge_yaml(&edge, a.port, FBH_YAML_STANDARD);
	fbh_broker_log_mark(&edge);
	ck_assert_int_eq(fbh_broker_signal(&edge, SIGHUP), 0);
	{
		char *line = fbh_strdupf("connected to mqtts://localhost:%d as", a.port);

		ck_assert_msg(fbh_wait_log(&edge, line, 20000), "the link did not move back to cloud A");
		free(line);
	}
	publish_range(&edge, 90, 10);
	ck_assert(wait_exactly(suba, k + 10, 30000, 500));
	for(size_t i = 0; i < 10; i++){
		ck_assert_int_eq(payload_index(fbh_sub_msg(suba, k + i), "p"), (long)(90 + i));
	}
	ck_assert_uint_eq(fbh_sub_count(subb), nb);
	fbh_sub_stop(suba);
	fbh_sub_stop(subb);
	fbh_sub_stop(sys);
	free(yaml);
}
END_TEST

/* ---- a SIGHUP while the link process is stopped -------------------------------------------- */

/* A link process this test stopped with SIGSTOP, sent SIGCONT at the exit of the test's process
 * should the test end early (a failed assertion exits at once; the harness's own exit handler,
 * registered before, then stops the edge, whose stop would kill the link process after 5 s
 * anyway: this way nothing stays stopped meanwhile). */
static pid_t stopped_link;

static void cont_stopped_link(void)
{
	if(stopped_link > 0){
		kill(stopped_link, SIGCONT);
		stopped_link = 0;
	}
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* One local round trip on the edge: a QoS 1 publish to a topic no rule forwards, until both its
 * PUBACK and its delivery to the local subscriber SUB have arrived. Returns the time in ms, or a
 * negative value when it has not completed within 20 s. */
static double local_round_trip(struct fbh_pub *pub, struct fbh_sub *sub, size_t i)
{
	char payload[32];
	int len = snprintf(payload, sizeof(payload), "r%zu", i);
	double t0 = now_ms(), t;

	ck_assert_int_ge(fbh_pub_send(pub, "local/probe/rt", payload, len, 1, false, NULL), 0);
	do{
		if(fbh_pub_acked(pub) == i + 1 && fbh_sub_count(sub) == i + 1){
			t = now_ms() - t0;
			ck_assert_str_eq(fbh_sub_msg(sub, i)->payload, payload);
			return t;
		}
		usleep(200);
	}while(now_ms() - t0 < 20000);
	return -1;
}

/* SIGHUP with a new endpoint list while the link process is stopped (SIGSTOP): it cannot stop in
 * order, and the broker thread does not wait for it. Local round trips on the edge during the
 * following 3 s each take less than 500 ms (waiting for the link process, the broker would hold
 * them ~6 s); the tick kills the old link process after 5 s and starts one with the new settings,
 * which connects to cloud B. Of the 90 messages published before the SIGSTOP, while it is stopped,
 * during the replacement and after it, cloud A gets p0..p(K-1) in order and cloud B pJ..p89 in
 * order with J <= K: none lost. */
START_TEST(test_sighup_stopped_link_does_not_hold_the_broker)
{
	struct fbh_broker a, b, edge;
	struct fbh_sub *suba, *subb, *sys, *local;
	struct fbh_pub *pub, *probe;
	double max = 0, t0;
	size_t k, j, nb, n = 0;
	pid_t link;
	char *yaml;

	fbh_broker_init(&a, "cloudA");
	fbh_broker_init(&b, "cloudB");
	fbh_broker_init(&edge, "edge");
	start_cloud(&a, NULL);
	start_cloud(&b, NULL);
	suba = fbh_sub_start(a.port2, &cloud_tester, "edge/site-A/#", 1);
	subb = fbh_sub_start(b.port2, &cloud_tester, "edge/site-A/#", 1);
	ck_assert_ptr_nonnull(suba);
	ck_assert_ptr_nonnull(subb);
	start_edge(&edge, a.port, FBH_YAML_STANDARD, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait(sys, "state", "connected", 20000));
	local = fbh_sub_start(edge.port, NULL, "local/probe/#", 1);
	ck_assert_ptr_nonnull(local);
	probe = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(probe);

	publish_range(&edge, 0, 20);
	ck_assert(wait_exactly(suba, 20, 30000, 300));

	/* The link process stops; the edge still takes and stages messages. */
	link = link_pid(edge.pid);
	ck_assert_int_gt(link, 0);
	atexit(cont_stopped_link);
	stopped_link = link;
	ck_assert_int_eq(kill(link, SIGSTOP), 0);
	publish_range(&edge, 20, 30);

	/* The endpoint list now names cloud B only. */
	yaml = fbh_edge_yaml(&edge, b.port, FBH_YAML_STANDARD);
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	fbh_broker_log_mark(&edge);
	ck_assert_int_eq(fbh_broker_signal(&edge, SIGHUP), 0);
	/* p50..p69 during the replacement, without waiting for their acknowledgements. */
	for(size_t i = 50; i < 70; i++){
		char payload[32];
		int len = snprintf(payload, sizeof(payload), "p%zu", i);

		ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/rot", payload, len, 1, false, NULL), 0);
	}
	t0 = now_ms();
	while(now_ms() - t0 < 3000){
		double t = local_round_trip(probe, local, n);

		ck_assert_msg(t >= 0, "local round trip %zu did not complete within 20 s", n);
		ck_assert_msg(t < 500, "local round trip %zu took %.1f ms, %.0f ms after the SIGHUP", n, t, now_ms() - t0);
		max = t > max ? t : max;
		n++;
		usleep(20000);
	}
	fprintf(stderr, "rotate: %zu local round trips in the 3 s after the SIGHUP, the longest %.1f ms\n", n, max);
	/* The reload happened in that window, and the old link process is still there (stopped). */
	ck_assert(fbh_broker_log_contains(&edge, "cloud settings changed; restarting the link process"));
	ck_assert(!fbh_broker_log_contains(&edge, "did not stop within"));
	ck_assert_int_eq(link_pid(edge.pid), link);
	ck_assert(fbh_pub_wait_all(pub, 30000));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);

	ck_assert_msg(fbh_wait_log(&edge, "the link process did not stop within 5 s; killing it", 20000),
			"the stopped link process was not killed");
	stopped_link = 0; /* killed: nothing to continue */
	{
		char *line = fbh_strdupf("connected to mqtts://localhost:%d as", b.port);

		ck_assert_msg(fbh_wait_log(&edge, line, 20000), "the link did not connect to cloud B");
		free(line);
	}
	ck_assert_int_ne(link_pid(edge.pid), link);
	/* Killed for the replacement: neither an error nor a restart. */
	ck_assert(!fbh_broker_log_contains(&edge, "the link process (pid"));
	ck_assert(!fbh_broker_log_contains(&edge, "restarting the link process;"));
	publish_range(&edge, 70, 20);

	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 30000));
	ck_assert(sys_wait_u64(sys, "link_restarts", 0, 10000));
	split_delivery(suba, subb, &k, &j, &nb);
	ck_assert_uint_eq(fbh_sub_count(suba), k);
	/* The probes stayed local. */
	ck_assert_uint_eq(fbh_sub_count(local), n);
	fprintf(stderr, "rotate: cloud A got p0..p%zu, cloud B p%zu..p89 (%zu sent to both)\n", k - 1, j, k - j);
	fbh_pub_close(probe);
	fbh_sub_stop(local);
	fbh_sub_stop(suba);
	fbh_sub_stop(subb);
	fbh_sub_stop(sys);
	free(yaml);
}
END_TEST

/* SIGHUP with a new spool.path and a new endpoint: both wait for a restart of the broker, which
 * the log says; the link process stays connected to the cloud it has. */
START_TEST(test_sighup_spool_path_needs_restart)
{
	struct fbh_broker a, b, edge;
	struct fbh_sub *suba, *sys;
	char *yaml, *text, *p, *q;

	fbh_broker_init(&a, "cloudA");
	fbh_broker_init(&b, "cloudB");
	fbh_broker_init(&edge, "edge");
	start_cloud(&a, NULL);
	suba = fbh_sub_start(a.port2, &cloud_tester, "edge/site-A/#", 1);
	ck_assert_ptr_nonnull(suba);
	start_edge(&edge, a.port, FBH_YAML_STANDARD, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait(sys, "state", "connected", 20000));

	yaml = fbh_edge_yaml(&edge, b.port, FBH_YAML_STANDARD);
	text = fbh_read_file(yaml);
	ck_assert_ptr_nonnull(text);
	p = strstr(text, "/spool\n");
	ck_assert_ptr_nonnull(p);
	q = fbh_strdupf("%.*s/spool2\n%s", (int)(p - text), text, p + strlen("/spool\n"));
	fbh_write_file(yaml, q, 0644);
	fbh_broker_log_mark(&edge);
	ck_assert_int_eq(fbh_broker_signal(&edge, SIGHUP), 0);
	ck_assert_msg(fbh_wait_log(&edge, "changes to spool.path take effect at the next restart of the broker; "
			"so do the changes to cloud", 20000), "no log line naming spool.path");
	ck_assert(!fbh_broker_log_contains(&edge, "restarting the link process"));
	publish_range(&edge, 0, 10);
	ck_assert(wait_exactly(suba, 10, 30000, 500));
	ck_assert_str_eq(sys_value(sys, "state"), "connected");
	fbh_sub_stop(suba);
	fbh_sub_stop(sys);
	free(q);
	free(text);
	free(yaml);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("rotate");
	TCase *tc = fbh_tcase("rotate");

	tcase_add_test(tc, test_password_rotation);
	tcase_add_test(tc, test_client_cert_rotation);
	tcase_add_test(tc, test_sighup_new_endpoints);
	tcase_add_test(tc, test_sighup_stopped_link_does_not_hold_the_broker);
	tcase_add_test(tc, test_sighup_spool_path_needs_restart);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
