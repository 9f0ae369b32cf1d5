/* `flowmq-bridge check --connect`: each endpoint's resolve, TCP, TLS and MQTT CONNECT steps
 * against the harness's TLS cloud stand-in, a wrong CA, a wrong password, a wrong host name, a
 * closed port and a certificate that expires within 30 days. The test process runs the CLI
 * (FB_CLI_PATH) and asserts its output line by line (times replaced by "T"). */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "common.h"

/* Runs the CLI with ARGS; returns its exit code, with stdout in *OUT and stderr in *ERR. */
static int cli(char **out, char **err, const char *const args[])
{
	static int runs;
	char *o = fbh_strdupf("%s/out-%d", fbh_tmpdir(), ++runs), *e = fbh_strdupf("%s/err-%d", fbh_tmpdir(), runs);
	const char *argv[16] = { FB_CLI_PATH };
	int st, n = 1;
	pid_t pid;

	for(; args[n - 1]; n++){
		argv[n] = args[n - 1];
	}
	argv[n] = NULL;
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if(pid == 0){
		int fo = open(o, O_WRONLY | O_CREAT | O_TRUNC, 0600), fe = open(e, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		if(fo < 0 || fe < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0){
			_exit(127);
		}
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st), "the CLI died (status %d)", st);
	*out = fbh_read_file(o);
	*err = fbh_read_file(e);
	ck_assert_ptr_nonnull(*out);
	ck_assert_ptr_nonnull(*err);
	free(o);
	free(e);
	return WEXITSTATUS(st);
}

#define CLI(out, err, ...) cli(out, err, (const char *const[]){ __VA_ARGS__, NULL })

/* Replaces every "(12.3 ms)" of S by "(T ms)", in place. */
static char *untimed(char *s)
{
	char *r = s, *w = s;

	while(*r){
		if(r[0] == '(' && r[1] >= '0' && r[1] <= '9'){
			const char *q = r + 1;

			while((*q >= '0' && *q <= '9') || *q == '.'){
				q++;
			}
			if(strncmp(q, " ms)", 4) == 0){
				memcpy(w, "(T ms)", 6);
				w += 6;
				r = (char *)q + 4;
				continue;
			}
		}
		*w++ = *r++;
	}
	*w = '\0';
	return s;
}

/* The expiry of the certificate in PEM file PATH as the CLI prints it: DATE and whole days left. */
static void cert_expiry(const char *path, char date[64], int *days)
{
	FILE *f = fopen(path, "r");
	X509 *x;
	struct tm tm;
	int d, s;

	ck_assert_ptr_nonnull(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	ck_assert_ptr_nonnull(x);
	ck_assert_int_eq(ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm), 1);
	ck_assert_int_eq(ASN1_TIME_diff(&d, &s, NULL, X509_get0_notAfter(x)), 1);
	strftime(date, 64, "%Y-%m-%d %H:%M:%S UTC", &tm);
	*days = d;
	X509_free(x);
}

/* Waits until the certificate in PEM file PATH is 2 s old or more: in its first second the CLI may
 * count one whole day more than this test counts a moment later. */
static void cert_settle(const char *path)
{
	FILE *f = fopen(path, "r");
	X509 *x;
	int d, s;

	ck_assert_ptr_nonnull(f);
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	ck_assert_ptr_nonnull(x);
	ck_assert_int_eq(ASN1_TIME_diff(&d, &s, X509_get0_notBefore(x), NULL), 1);
	if(d == 0 && s < 2){
		sleep((unsigned)(2 - s));
	}
	X509_free(x);
}

static char *ok_line(const char *yaml, struct fbh_broker *edge)
{
	return fbh_strdupf("%s: OK: site site-A, 1 endpoint(s), 2 edge_to_cloud and 1 cloud_to_edge rules, spool %s/spool\n",
			yaml, edge->dir);
}

static char *tls_ok_line(const char *server_cert)
{
	char date[64];
	int days;

	cert_expiry(server_cert, date, &days);
	return fbh_strdupf("  tls: ok (T ms): TLSv1.3 TLS_AES_256_GCM_SHA384, certificate CN=localhost issued by "
			"CN=flowmq-test-ca, expires %s (in %d days), host name localhost verified\n", date, days);
}

START_TEST(a_working_endpoint_passes_every_step)
{
	struct fbh_broker cloud, edge;
	char *yaml, *out, *err, *want, *ok, *tls;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	yaml = fbh_edge_yaml(&edge, cloud.port, FBH_YAML_STANDARD);
	cert_settle(fbh_certs()->server_cert);
	ck_assert_int_eq(CLI(&out, &err, "check", "--connect", yaml), 0);
	ok = ok_line(yaml, &edge);
	tls = tls_ok_line(fbh_certs()->server_cert);
	want = fbh_strdupf("%s"
			"mqtts://localhost:%d\n"
			"  resolve: ok (T ms): 127.0.0.1\n"
			"  tcp: ok (T ms): connected to 127.0.0.1 port %d\n"
			"%s"
			"  mqtt: ok (T ms): CONNACK 0x00 (Success) for client id edge-site-A-check, user edge-site-A\n"
			"  passed\n"
			"1 of 1 endpoint passed\n", ok, cloud.port, cloud.port, tls);
	ck_assert_str_eq(untimed(out), want);
	ck_assert_str_eq(err, "");
	/* The cloud saw the check's own client id, with the configured user, and a clean end. */
	ck_assert(fbh_wait_log(&cloud, "as edge-site-A-check (p5, c1, k5, u'edge-site-A')", 10000));
	ck_assert(fbh_wait_log(&cloud, "Client edge-site-A-check disconnected.", 10000));
	free(want);
	free(ok);
	free(tls);
	free(out);
	free(err);
	free(yaml);
}
END_TEST

START_TEST(a_wrong_password_fails_at_connect)
{
	struct fbh_broker cloud, edge;
	char *yaml, *out, *err, *want, *ok, *tls, *pw;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	yaml = fbh_edge_yaml(&edge, cloud.port, FBH_YAML_STANDARD);
	pw = fbh_strdupf("%s/cloud-password", edge.dir);
	fbh_write_file(pw, "not-the-password\n", 0600);
	cert_settle(fbh_certs()->server_cert);
	ck_assert_int_eq(CLI(&out, &err, "check", "--connect", yaml), 1);
	ok = ok_line(yaml, &edge);
	tls = tls_ok_line(fbh_certs()->server_cert);
	want = fbh_strdupf("%s"
			"mqtts://localhost:%d\n"
			"  resolve: ok (T ms): 127.0.0.1\n"
			"  tcp: ok (T ms): connected to 127.0.0.1 port %d\n"
			"%s"
			"  mqtt: FAILED (T ms): CONNECT refused: reason 0x87 (Not authorized)\n"
			"  FAILED\n"
			"0 of 1 endpoint passed\n", ok, cloud.port, cloud.port, tls);
	ck_assert_str_eq(untimed(out), want);
	free(want);
	free(ok);
	free(tls);
	free(out);
	free(err);
	free(pw);
	free(yaml);
}
END_TEST

/* Runs check --connect on FILE, expecting the TLS step to fail with WHY. */
static void tls_fails(struct fbh_broker *cloud, struct fbh_broker *edge, const char *yaml, const char *why)
{
	char *out, *err, *want, *ok;

	ck_assert_int_eq(CLI(&out, &err, "check", "--connect", yaml), 1);
	ok = ok_line(yaml, edge);
	want = fbh_strdupf("%s"
			"mqtts://localhost:%d\n"
			"  resolve: ok (T ms): 127.0.0.1\n"
			"  tcp: ok (T ms): connected to 127.0.0.1 port %d\n"
			"  tls: FAILED (T ms): handshake failed: %s\n"
			"  FAILED\n"
			"0 of 1 endpoint passed\n", ok, cloud->port, cloud->port, why);
	ck_assert_str_eq(untimed(out), want);
	free(want);
	free(ok);
	free(out);
	free(err);
}

START_TEST(a_wrong_ca_fails_at_tls)
{
	struct fbh_broker cloud, edge;
	char *yaml;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	yaml = fbh_edge_yaml(&edge, cloud.port, FBH_YAML_STANDARD);
	free(yaml);
	/* The same file with the unrelated CA as trust store. */
	yaml = fbh_edge_yaml(&edge, cloud.port, "site_id: site-A\ncloud:\n  endpoints:\n    - mqtts://localhost:@CLOUD_PORT@\n"
			"  client_id: edge-${site_id}\n  auth:\n    username: edge-${site_id}\n    password_file: @PASSWORD_FILE@\n"
			"  tls:\n    ca_file: @WRONG_CA_FILE@\n    cert_file: @CERT_FILE@\n    key_file: @KEY_FILE@\n"
			"spool:\n  path: @SPOOL_PATH@\n" FBH_YAML_RULES);
	tls_fails(&cloud, &edge, yaml, "certificate verify failed: self-signed certificate in certificate chain");
	free(yaml);
}
END_TEST

START_TEST(a_wrong_host_name_fails_at_tls)
{
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts o = { .wrong_host_cert = true };
	char *yaml;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, &o);
	yaml = fbh_edge_yaml(&edge, cloud.port, FBH_YAML_STANDARD);
	tls_fails(&cloud, &edge, yaml, "certificate verify failed: hostname mismatch");
	free(yaml);
}
END_TEST

START_TEST(a_closed_port_fails_at_tcp)
{
	struct fbh_broker edge;
	char *yaml, *out, *err, *want;
	int port = fbh_free_port();

	fbh_broker_init(&edge, "edge");
	yaml = fbh_edge_yaml(&edge, port, FBH_YAML_STANDARD);
	ck_assert_int_eq(CLI(&out, &err, "check", "--connect", yaml), 1);
	want = fbh_strdupf("%s: OK: site site-A, 1 endpoint(s), 2 edge_to_cloud and 1 cloud_to_edge rules, spool %s/spool\n"
			"mqtts://localhost:%d\n"
			"  resolve: ok (T ms): 127.0.0.1\n"
			"  tcp: FAILED (T ms): 127.0.0.1 port %d: Connection refused\n"
			"  FAILED\n"
			"0 of 1 endpoint passed\n", yaml, edge.dir, port, port);
	ck_assert_str_eq(untimed(out), want);
	free(want);
	free(out);
	free(err);
	free(yaml);
}
END_TEST

/* A server certificate for localhost by the harness's CA, valid for DAYS days, into DIR. */
static void make_server_cert(const char *dir, int days, char **cert, char **key)
{
	const struct fbh_certs *c = fbh_certs();
	char *csr = fbh_strdupf("%s/short.csr", dir), *ext = fbh_strdupf("%s/short.ext", dir);
	char *log = fbh_strdupf("%s/openssl.log", dir), *d = fbh_strdupf("%d", days);

	*cert = fbh_strdupf("%s/short.crt", dir);
	*key = fbh_strdupf("%s/short.key", dir);
	fbh_write_file(ext, "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n", 0600);
	{
		const char *req[] = { "openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
			"-nodes", "-keyout", *key, "-subj", "/CN=localhost", "-out", csr, NULL };
		const char *sign[] = { "openssl", "x509", "-req", "-in", csr, "-CA", c->ca, "-CAkey", c->ca_key,
			"-set_serial", "4242", "-days", d, "-extfile", ext, "-out", *cert, NULL };
		int st = fbh_run_cmd(req, log);

		ck_assert_msg(st == 0, "openssl req failed: %s", fbh_read_file(log));
		st = fbh_run_cmd(sign, log);
		ck_assert_msg(st == 0, "openssl x509 failed: %s", fbh_read_file(log));
	}
	free(csr);
	free(ext);
	free(log);
	free(d);
}

/* Replaces the first FROM in *TEXT by TO. */
static void replace(char **text, const char *from, const char *to)
{
	char *p = strstr(*text, from), *n;

	ck_assert_ptr_nonnull(p);
	n = fbh_strdupf("%.*s%s%s", (int)(p - *text), *text, to, p + strlen(from));
	free(*text);
	*text = n;
}

START_TEST(a_certificate_expiring_within_30_days_warns)
{
	struct fbh_broker cloud, edge;
	char *yaml, *out, *err, *conf, *cert, *key, *tls, *want, *ok, line[256], date[64];
	int days;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	make_server_cert(cloud.dir, 10, &cert, &key);
	conf = fbh_cloud_conf(&cloud, NULL);
	replace(&conf, fbh_certs()->server_cert, cert);
	replace(&conf, fbh_certs()->server_key, key);
	ck_assert_int_eq(fbh_broker_start(&cloud, conf), 0);
	yaml = fbh_edge_yaml(&edge, cloud.port, FBH_YAML_STANDARD);
	/* Valid for 10 days from a moment ago, a second or more before the check: 9 whole days left
	 * for both the CLI and this test. */
	sleep(2);
	/* Passes, with a warning. */
	ck_assert_int_eq(CLI(&out, &err, "check", "--connect", yaml), 0);
	cert_expiry(cert, date, &days);
	ck_assert_int_eq(days, 9);
	ok = ok_line(yaml, &edge);
	tls = tls_ok_line(cert);
	snprintf(line, sizeof(line), "  warning: the server's certificate CN=localhost expires in 9 days (%s)\n", date);
	want = fbh_strdupf("%s"
			"mqtts://localhost:%d\n"
			"  resolve: ok (T ms): 127.0.0.1\n"
			"  tcp: ok (T ms): connected to 127.0.0.1 port %d\n"
			"%s%s"
			"  mqtt: ok (T ms): CONNACK 0x00 (Success) for client id edge-site-A-check, user edge-site-A\n"
			"  passed\n"
			"1 of 1 endpoint passed\n", ok, cloud.port, cloud.port, tls, line);
	ck_assert_str_eq(untimed(out), want);
	free(want);
	free(ok);
	free(tls);
	free(out);
	free(err);
	free(conf);
	free(cert);
	free(key);
	free(yaml);
}
END_TEST

START_TEST(a_client_certificate_expiring_within_30_days_warns)
{
	struct fbh_broker edge;
	char *yaml, *out, *err, *want, *cert, *key, *tmpl, date[64];
	int port = fbh_free_port(), days;

	fbh_broker_init(&edge, "edge");
	make_server_cert(edge.dir, 10, &cert, &key);
	tmpl = fbh_strdupf("%s", FBH_YAML_STANDARD);
	replace(&tmpl, "@CERT_FILE@", cert);
	replace(&tmpl, "@KEY_FILE@", key);
	yaml = fbh_edge_yaml(&edge, port, tmpl);
	sleep(2);
	ck_assert_int_eq(CLI(&out, &err, "check", "--connect", yaml), 1);
	cert_expiry(cert, date, &days);
	ck_assert_int_eq(days, 9);
	want = fbh_strdupf("%s: OK: site site-A, 1 endpoint(s), 2 edge_to_cloud and 1 cloud_to_edge rules, spool %s/spool\n"
			"warning: the client certificate (tls.cert_file) CN=localhost expires in 9 days (%s)\n"
			"mqtts://localhost:%d\n"
			"  resolve: ok (T ms): 127.0.0.1\n"
			"  tcp: FAILED (T ms): 127.0.0.1 port %d: Connection refused\n"
			"  FAILED\n"
			"0 of 1 endpoint passed\n", yaml, edge.dir, date, port, port);
	ck_assert_str_eq(untimed(out), want);
	free(want);
	free(out);
	free(err);
	free(tmpl);
	free(cert);
	free(key);
	free(yaml);
}
END_TEST

START_TEST(json_reports_each_endpoint_and_passes_when_one_does)
{
	struct fbh_broker cloud, edge;
	char *yaml, *out, *err;
	int closed = fbh_free_port();
	cJSON *j, *c, *eps, *e0, *e1, *s;
	char *tmpl;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	tmpl = fbh_strdupf("%s", FBH_YAML_STANDARD);
	replace(&tmpl, "    - mqtts://localhost:@CLOUD_PORT@\n", "    - mqtts://127.0.0.1:CLOSED\n    - mqtts://localhost:@CLOUD_PORT@\n");
	{
		char *p = fbh_strdupf("%d", closed);

		replace(&tmpl, "CLOSED", p);
		free(p);
	}
	yaml = fbh_edge_yaml(&edge, cloud.port, tmpl);
	ck_assert_int_eq(CLI(&out, &err, "check", "--json", "--connect", yaml), 0);
	j = cJSON_Parse(out);
	ck_assert_msg(j != NULL, "not JSON: %s", out);
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "valid")));
	c = cJSON_GetObjectItem(j, "connect");
	ck_assert_int_eq(cJSON_GetObjectItem(c, "passed")->valueint, 1);
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(c, "warnings")), 0);
	eps = cJSON_GetObjectItem(c, "endpoints");
	ck_assert_int_eq(cJSON_GetArraySize(eps), 2);
	e0 = cJSON_GetArrayItem(eps, 0);
	e1 = cJSON_GetArrayItem(eps, 1);
	ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(e0, "passed")));
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(e1, "passed")));
	/* the closed one: resolve ok, tcp failed, nothing more */
	s = cJSON_GetObjectItem(e0, "steps");
	ck_assert_int_eq(cJSON_GetArraySize(s), 2);
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(s, 1), "step")->valuestring, "tcp");
	ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetArrayItem(s, 1), "ok")));
	{
		char *d = fbh_strdupf("127.0.0.1 port %d: Connection refused", closed);

		ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(s, 1), "detail")->valuestring, d);
		free(d);
	}
	/* the good one: four steps, each ok and timed, and its TLS facts */
	s = cJSON_GetObjectItem(e1, "steps");
	ck_assert_int_eq(cJSON_GetArraySize(s), 4);
	for(int i = 0; i < 4; i++){
		static const char *const names[] = { "resolve", "tcp", "tls", "mqtt" };
		cJSON *st = cJSON_GetArrayItem(s, i);

		ck_assert_str_eq(cJSON_GetObjectItem(st, "step")->valuestring, names[i]);
		ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(st, "ok")));
		ck_assert(cJSON_GetObjectItem(st, "ms")->valuedouble >= 0);
	}
	c = cJSON_GetObjectItem(e1, "tls");
	ck_assert_str_eq(cJSON_GetObjectItem(c, "version")->valuestring, "TLSv1.3");
	ck_assert_str_eq(cJSON_GetObjectItem(c, "subject")->valuestring, "CN=localhost");
	ck_assert_str_eq(cJSON_GetObjectItem(c, "issuer")->valuestring, "CN=flowmq-test-ca");
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(c, "host_name_verified")));
	cJSON_Delete(j);
	free(tmpl);
	free(out);
	free(err);
	free(yaml);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("connect");
	TCase *tc = fbh_tcase("connect");

	tcase_add_test(tc, a_working_endpoint_passes_every_step);
	tcase_add_test(tc, a_wrong_password_fails_at_connect);
	tcase_add_test(tc, a_wrong_ca_fails_at_tls);
	tcase_add_test(tc, a_wrong_host_name_fails_at_tls);
	tcase_add_test(tc, a_closed_port_fails_at_tcp);
	tcase_add_test(tc, a_certificate_expiring_within_30_days_warns);
	tcase_add_test(tc, a_client_certificate_expiring_within_30_days_warns);
	tcase_add_test(tc, json_reports_each_endpoint_and_passes_when_one_does);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
