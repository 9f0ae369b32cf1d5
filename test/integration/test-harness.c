/* Test process: the test harness itself: the FlowMQ stand-in enforces what the bridge tests rely
 * on (TLS 1.3, client certificates from the right CA, host names, passwords, the ACL), brokers
 * restart on the same port, the test clients record exactly what they see, and a broker that does
 * not answer is reported with what its processes were doing. No plugin involved. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <check.h>
#include <mqtt_protocol.h>
#include <openssl/ssl.h>

#include "harness.h"

/* A TLS client of the cloud's TLS listener, as the edge would connect. */
static struct fbh_client_opts edge_tls(void)
{
	const struct fbh_certs *c = fbh_certs();
	struct fbh_client_opts o = {
		.username = FBH_EDGE_USER,
		.password = FBH_EDGE_PASSWORD,
		.tls_ca = c->ca,
		.tls_cert = c->client_cert,
		.tls_key = c->client_key,
		.connect_timeout_ms = 3000,
	};

	return o;
}

static const struct fbh_client_opts tester = {
	.username = FBH_CLOUD_TEST_USER,
	.password = FBH_CLOUD_TEST_PASSWORD,
};

static void start_cloud(struct fbh_broker *cloud, const struct fbh_cloud_opts *opts)
{
	char *conf;

	fbh_broker_init(cloud, "cloud");
	conf = fbh_cloud_conf(cloud, opts);
	if (fbh_broker_start(cloud, conf) != 0)
		fbh_broker_dump_log(cloud);
	ck_assert_int_gt(cloud->pid, 0);
	free(conf);
}

static int negotiated_version(struct fbh_pub *p)
{
	SSL *ssl = mosquitto_ssl_get(fbh_pub_mosq(p));

	return ssl ? SSL_version(ssl) : -1;
}

/* openssl s_client with a client certificate and TLS_FLAG (-tls1_2, -tls1_3): its exit status. */
static int s_client(struct fbh_broker *cloud, const char *tls_flag)
{
	const struct fbh_certs *c = fbh_certs();
	char *connect = fbh_strdupf("127.0.0.1:%d", cloud->port);
	char *log = fbh_strdupf("%s/s_client%s.log", cloud->dir, tls_flag);
	const char *argv[] = { "openssl", "s_client", "-connect", connect, tls_flag,
		"-CAfile", c->ca, "-cert", c->client_cert, "-key", c->client_key,
		"-verify_return_error", NULL };
	int st = fbh_run_cmd(argv, log);

	free(connect);
	free(log);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(test_cloud_accepts_edge_with_client_cert_and_password_over_tls13)
{
	struct fbh_broker cloud;
	struct fbh_client_opts o;
	struct fbh_pub *p;

	start_cloud(&cloud, NULL);
	o = edge_tls();
	p = fbh_pub_connect(cloud.port, &o);
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(negotiated_version(p), TLS1_3_VERSION);
	fbh_pub_close(p);

	/* A client that speaks TLS 1.2 at most is refused (libmosquitto cannot cap the version). */
	ck_assert_int_eq(s_client(&cloud, "-tls1_3"), 0);
	ck_assert_int_ne(s_client(&cloud, "-tls1_2"), 0);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
}
END_TEST

START_TEST(test_cloud_refuses_missing_or_foreign_client_cert_and_bad_password)
{
	const struct fbh_certs *c = fbh_certs();
	struct fbh_broker cloud;
	struct fbh_client_opts o;

	start_cloud(&cloud, NULL);

	o = edge_tls();
	o.tls_cert = o.tls_key = NULL;
	ck_assert_ptr_null(fbh_pub_connect(cloud.port, &o));

	o = edge_tls();
	o.tls_cert = c->wrong_client_cert;
	o.tls_key = c->wrong_client_key;
	ck_assert_ptr_null(fbh_pub_connect(cloud.port, &o));

	o = edge_tls();
	o.password = "wrong";
	ck_assert_ptr_null(fbh_pub_connect(cloud.port, &o));
	ck_assert(fbh_wait_log(&cloud, "not authorised", 3000));

	/* No anonymous clients on the plaintext listener either. */
	ck_assert_ptr_null(fbh_pub_connect(cloud.port2, NULL));
}
END_TEST

START_TEST(test_cloud_tls12_only_negotiates_tls12)
{
	struct fbh_cloud_opts co = { .tls12_only = true };
	struct fbh_broker cloud;
	struct fbh_client_opts o;
	struct fbh_pub *p;

	start_cloud(&cloud, &co);
	o = edge_tls();
	p = fbh_pub_connect(cloud.port, &o);
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(negotiated_version(p), TLS1_2_VERSION);
	fbh_pub_close(p);

	o.tls_version = "tlsv1.3";
	ck_assert_ptr_null(fbh_pub_connect(cloud.port, &o));
}
END_TEST

START_TEST(test_cloud_wrong_host_cert_fails_verification_unless_insecure)
{
	struct fbh_cloud_opts co = { .wrong_host_cert = true };
	struct fbh_broker cloud;
	struct fbh_client_opts o;
	struct fbh_pub *p;

	start_cloud(&cloud, &co);
	o = edge_tls();
	ck_assert_ptr_null(fbh_pub_connect(cloud.port, &o));
	o.tls_insecure = true;
	p = fbh_pub_connect(cloud.port, &o);
	ck_assert_ptr_nonnull(p);
	fbh_pub_close(p);
}
END_TEST

START_TEST(test_cloud_acl_refuses_edge_outside_its_topics_with_0x87)
{
	struct fbh_broker cloud;
	struct fbh_client_opts o;
	struct fbh_sub *sub;
	struct fbh_pub *p;

	start_cloud(&cloud, NULL);
	sub = fbh_sub_start(cloud.port2, &tester, "#", 1);
	ck_assert_ptr_nonnull(sub);

	o = edge_tls();
	p = fbh_pub_connect(cloud.port, &o);
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(fbh_pub_send(p, "edge/site-A/telemetry/a", "ok", 2, 1, false, NULL), 0);
	ck_assert_int_eq(fbh_pub_send(p, "edge/site-B/telemetry/a", "no", 2, 1, false, NULL), 1);
	ck_assert_int_eq(fbh_pub_send(p, "cloud/commands/site-A/x", "no", 2, 1, false, NULL), 2);
	ck_assert(fbh_pub_wait_all(p, 5000));
	ck_assert_int_eq(fbh_pub_reason(p, 0), FBH_RC_SUCCESS);
	ck_assert_int_eq(fbh_pub_reason(p, 1), FBH_RC_NOT_AUTHORIZED);
	ck_assert_int_eq(fbh_pub_reason(p, 2), FBH_RC_NOT_AUTHORIZED);
	ck_assert_uint_eq(fbh_pub_count_failed(p), 2);

	ck_assert_uint_eq(fbh_sub_wait_count(sub, 1, 5000), 1);
	ck_assert_str_eq(fbh_sub_msg(sub, 0)->topic, "edge/site-A/telemetry/a");
	fbh_pub_close(p);
}
END_TEST

START_TEST(test_sub_records_order_qos_retain_and_user_properties)
{
	struct fbh_broker cloud;
	mosquitto_property *props = NULL;
	struct fbh_sub *sub;
	struct fbh_pub *p;
	const struct fbh_msg *m;
	char want[32];

	start_cloud(&cloud, NULL);
	sub = fbh_sub_start(cloud.port2, &tester, "edge/#", 1);
	ck_assert_ptr_nonnull(sub);

	mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "k", "v1");
	mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "k", "v2");
	mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, "edge-site-id", "site-A");
	ck_assert_int_eq(fbh_publish(cloud.port2, &tester, "edge/site-A/t", "p", 500, 1, props, 10000),
			500);
	mosquitto_property_free_all(&props);

	ck_assert_uint_eq(fbh_sub_wait_count(sub, 500, 10000), 500);
	for (size_t i = 0; i < 500; i++) {
		m = fbh_sub_msg(sub, i);
		snprintf(want, sizeof(want), "p%zu", i);
		ck_assert_str_eq(m->payload, want);
		ck_assert_int_eq(m->qos, 1);
		ck_assert(!m->retain);
	}
	m = fbh_sub_msg(sub, 0);
	ck_assert_uint_eq(m->user_prop_count, 3);
	ck_assert_str_eq(m->user_props[0].name, "k");
	ck_assert_str_eq(m->user_props[0].value, "v1");
	ck_assert_str_eq(m->user_props[1].value, "v2");
	ck_assert_str_eq(fbh_msg_user_prop(m, "edge-site-id"), "site-A");
	ck_assert_ptr_null(fbh_msg_user_prop(m, "missing"));

	/* Nobody subscribed: Mosquitto 2.0 acknowledges with 0x10, which is not a failure. */
	p = fbh_pub_connect(cloud.port2, &tester);
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(fbh_pub_send(p, "other/x", "r", 1, 1, true, NULL), 0);
	ck_assert(fbh_pub_wait_all(p, 5000));
	ck_assert_int_eq(fbh_pub_reason(p, 0), FBH_RC_NO_MATCHING_SUBSCRIBERS);
	ck_assert_uint_eq(fbh_pub_count_failed(p), 0);
	fbh_pub_close(p);
	ck_assert(fbh_sub_add(sub, "other/#", 1) == 0);
	ck_assert_uint_eq(fbh_sub_wait_count(sub, 501, 5000), 501);
	ck_assert(fbh_sub_msg(sub, 500)->retain);
}
END_TEST

START_TEST(test_broker_restarts_on_same_port_and_subscriber_follows)
{
	struct fbh_broker cloud;
	struct fbh_sub *sub;
	char *conf;
	int port;

	start_cloud(&cloud, NULL);
	port = cloud.port2;
	sub = fbh_sub_start(cloud.port2, &tester, "a/#", 1);
	ck_assert_ptr_nonnull(sub);

	/* kill -9, then the same configuration on the same ports. */
	fbh_broker_kill(&cloud);
	ck_assert_int_eq(fbh_broker_exit_code(&cloud), -SIGKILL);
	conf = fbh_cloud_conf(&cloud, NULL);
	ck_assert_int_eq(fbh_broker_start(&cloud, conf), 0);
	free(conf);
	ck_assert_int_eq(cloud.port2, port);
	/* The log mark moved: the first run's lines are not seen again. */
	ck_assert(!fbh_broker_log_contains(&cloud, "a/#"));

	/* The subscriber reconnects by itself (1 s delay) and subscribes again. */
	ck_assert(fbh_wait_log(&cloud, "a/#", 10000));
	ck_assert_int_eq(fbh_publish(cloud.port2, &tester, "a/b", "x", 1, 1, NULL, 5000), 1);
	ck_assert_uint_eq(fbh_sub_wait_count(sub, 1, 5000), 1);

	/* SIGSTOP: still running, nothing answers; SIGCONT: serves again; SIGTERM: exit 0. */
	ck_assert_int_eq(fbh_broker_signal(&cloud, SIGSTOP), 0);
	ck_assert(fbh_broker_running(&cloud));
	ck_assert_int_eq(fbh_broker_signal(&cloud, SIGCONT), 0);
	ck_assert_int_eq(fbh_publish(cloud.port2, &tester, "a/b", "y", 1, 1, NULL, 5000), 1);
	ck_assert_uint_eq(fbh_sub_wait_count(sub, 2, 5000), 2);
	ck_assert_int_eq(fbh_broker_signal(&cloud, SIGSTOP), 0);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0); /* stop also continues a stopped broker */
}
END_TEST

START_TEST(test_broker_that_cannot_start_reports_its_exit_code)
{
	struct fbh_broker b;

	fbh_broker_init(&b, "bad");
	ck_assert_int_eq(fbh_broker_start(&b, "listener 1 127.0.0.1\nno_such_option true\n"), -1);
	ck_assert(b.exited);
	ck_assert_int_gt(fbh_broker_exit_code(&b), 0);
	ck_assert(fbh_broker_log_contains(&b, "no_such_option"));
}
END_TEST

START_TEST(test_spawned_program_logs_and_stops_like_a_broker)
{
	const char *argv[] = { "/bin/sh", "-c", "echo spawned; exec sleep 30", NULL };
	struct fbh_broker b;

	fbh_broker_init(&b, "sh");
	ck_assert_int_eq(fbh_broker_spawn(&b, argv), 0);
	ck_assert(fbh_wait_log(&b, "spawned", 5000));
	ck_assert(fbh_broker_running(&b));
	ck_assert_int_eq(fbh_broker_stop(&b), -SIGTERM);
	ck_assert(b.exited);
}
END_TEST

/* What a broker that does not answer is doing, for the failure report: one line per process, the
 * broker's and each child's, with each thread's name and state. */
START_TEST(test_diag_shows_a_stopped_process_and_its_child)
{
	const char *argv[] = { "/bin/sh", "-c", "sleep 30 & echo \"spawned $!\"; wait", NULL };
	struct fbh_broker b;
	char *text, *want, *log, *nl;
	FILE *f;
	int child;

	fbh_broker_init(&b, "sh");
	ck_assert_int_eq(fbh_broker_spawn(&b, argv), 0);
	ck_assert(fbh_wait_log(&b, "spawned ", 5000));
	log = fbh_read_file(b.log);
	ck_assert_int_eq(sscanf(strstr(log, "spawned "), "spawned %d", &child), 1);
	ck_assert_int_gt(child, 0);
	ck_assert_int_eq(fbh_broker_signal(&b, SIGSTOP), 0);
	usleep(100 * 1000);
	f = tmpfile();
	ck_assert_ptr_nonnull(f);
	fbh_broker_diag(&b, f);
	rewind(f);
	text = calloc(1, 8192);
	ck_assert_uint_gt(fread(text, 1, 8191, f), 0);
	fclose(f);
	nl = strchr(text, '\n');
	ck_assert_ptr_nonnull(nl);
	*nl = '\0';
	/* the first line: the process, its one thread stopped */
	want = fbh_strdupf("fbh: diag sh pid %d: [%d sh T ", (int)b.pid, (int)b.pid);
	ck_assert_msg(strncmp(text, want, strlen(want)) == 0, "'%s' does not start with '%s'", text, want);
	free(want);
	/* the second: its child, asleep, and nothing more */
	want = fbh_strdupf("fbh: diag child pid %d: [%d sleep S ", child, child);
	ck_assert_msg(strncmp(nl + 1, want, strlen(want)) == 0, "'%s' does not start with '%s'", nl + 1, want);
	ck_assert_ptr_nonnull(strchr(nl + 1, '\n'));
	ck_assert_str_eq(strchr(nl + 1, '\n'), "\n");
	free(want);
	ck_assert_int_eq(kill(child, SIGKILL), 0);
	ck_assert_int_eq(fbh_broker_stop(&b), -SIGTERM);
	free(text);
	free(log);
}
END_TEST

START_TEST(test_yaml_placeholders_are_expanded)
{
	struct fbh_broker edge;
	char *path, *text, *pw;

	fbh_broker_init(&edge, "edge");
	path = fbh_edge_yaml(&edge, 4242, FBH_YAML_STANDARD);
	text = fbh_read_file(path);
	ck_assert_ptr_nonnull(text);
	ck_assert_ptr_null(strchr(text, '@'));
	ck_assert_ptr_nonnull(strstr(text, "mqtts://localhost:4242\n"));
	ck_assert_ptr_nonnull(strstr(text, fbh_certs()->client_key));
	ck_assert_uint_eq(fbh_line_of(text, "site_id: site-A"), 1);
	ck_assert_uint_gt(fbh_line_of(text, "cloud: edge/${site_id}/telemetry/#"), 1);
	pw = fbh_strdupf("%s/cloud-password", edge.dir);
	free(text);
	text = fbh_read_file(pw);
	ck_assert_str_eq(text, FBH_EDGE_PASSWORD "\n");
	free(text);
	free(pw);
	free(path);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("harness");
	TCase *tc = fbh_tcase("harness");

	tcase_add_test(tc, test_cloud_accepts_edge_with_client_cert_and_password_over_tls13);
	tcase_add_test(tc, test_cloud_refuses_missing_or_foreign_client_cert_and_bad_password);
	tcase_add_test(tc, test_cloud_tls12_only_negotiates_tls12);
	tcase_add_test(tc, test_cloud_wrong_host_cert_fails_verification_unless_insecure);
	tcase_add_test(tc, test_cloud_acl_refuses_edge_outside_its_topics_with_0x87);
	tcase_add_test(tc, test_sub_records_order_qos_retain_and_user_properties);
	tcase_add_test(tc, test_broker_restarts_on_same_port_and_subscriber_follows);
	tcase_add_test(tc, test_broker_that_cannot_start_reports_its_exit_code);
	tcase_add_test(tc, test_spawned_program_logs_and_stops_like_a_broker);
	tcase_add_test(tc, test_diag_shows_a_stopped_process_and_its_child);
	tcase_add_test(tc, test_yaml_placeholders_are_expanded);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
