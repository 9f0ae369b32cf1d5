/* The bridge's lines in the broker's log: the link process's lines carry the time they happened
 * (not the time the link process was forked), each error is logged once with one prefix, and
 * credentials over a plaintext endpoint are warned about at load and at every connect. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <check.h>

#include "common.h"
#include "harness.h"

/* The log of B since its start (all of it: the file is rewritten by each test's broker). */
static char *log_text(struct fbh_broker *b)
{
	char *t = fbh_read_file(b->log);

	ck_assert_ptr_nonnull(t);
	return t;
}

/* Lines of TEXT that contain both S1 and S2 (S2 may be NULL). */
static unsigned count_lines(const char *text, const char *s1, const char *s2)
{
	unsigned n = 0;

	for(const char *line = text; line && *line;){
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		char *copy = strndup(line, len);

		n += strstr(copy, s1) && (s2 == NULL || strstr(copy, s2));
		free(copy);
		line = end ? end + 1 : NULL;
	}
	return n;
}

/* The timestamp Mosquitto wrote at the start of the first line of TEXT containing S1 and S2
 * ("1700000000: ..."), or -1. */
static long long stamp_of(const char *text, const char *s1, const char *s2)
{
	for(const char *line = text; line && *line;){
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		char *copy = strndup(line, len);
		long long ts = -1;

		if(strstr(copy, s1) && (s2 == NULL || strstr(copy, s2))){
			ts = strtoll(copy, NULL, 10);
		}
		free(copy);
		if(ts >= 0){
			return ts;
		}
		line = end ? end + 1 : NULL;
	}
	return -1;
}

/* Mosquitto 2.0.11 stamps each line with its cached clock, which only the broker's main loop
 * advances: in the forked link process it stood still at the fork. Two link-process lines 4 s
 * apart (connected; the cloud stops, connection lost) must carry times 4 s apart, the second no
 * earlier than the moment the cloud was stopped. */
START_TEST(test_link_process_lines_carry_their_own_time)
{
	struct fbh_broker cloud, edge;
	long long connected, lost;
	time_t stopped;
	char *text;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	start_edge(&edge, cloud.port, FBH_YAML_STANDARD, "log_timestamp true\n");
	ck_assert_msg(fbh_wait_log(&edge, "flowmq-bridge: connected to", 20000), "no connection: %s", edge.log);
	sleep(4);
	stopped = time(NULL);
	fbh_broker_stop(&cloud);
	ck_assert_msg(fbh_wait_log(&edge, "flowmq-bridge: connection to", 20000), "no lost connection: %s", edge.log);

	text = log_text(&edge);
	connected = stamp_of(text, "flowmq-bridge: connected to", NULL);
	lost = stamp_of(text, "flowmq-bridge: connection to", " lost: ");
	ck_assert_msg(connected > 0 && lost > 0, "no timestamps:\n%s", text);
	ck_assert_msg(lost >= (long long)stopped - 1, "the lost line says %lld, the cloud stopped at %lld:\n%s",
			lost, (long long)stopped, text);
	ck_assert_msg(lost - connected >= 3, "connected at %lld, lost at %lld:\n%s", connected, lost, text);
	/* Lines reach the log within a tick: none needed the "earlier" note. */
	ck_assert_uint_eq(count_lines(text, "logged by the link process", NULL), 0);
	free(text);
	fbh_broker_stop(&edge);
}
END_TEST

/* A spool that cannot be opened is one error line, with one "flowmq-bridge: " prefix. */
START_TEST(test_spool_error_is_logged_once_with_one_prefix)
{
	struct fbh_broker edge;
	char *yaml, *conf, *text, *blocker;

	fbh_broker_init(&edge, "edge");
	/* The spool's parent is a regular file: the folder cannot be created. */
	blocker = fbh_strdupf("%s/not-a-folder", edge.dir);
	fbh_write_file(blocker, "x", 0600);
	yaml = fbh_edge_yaml(&edge, fbh_free_port(), FBH_YAML_BASE FBH_YAML_RULES);
	{
		/* spool.path: @SPOOL_PATH@ was expanded; point it below the file instead. */
		char *y = fbh_read_file(yaml), *at = strstr(y, "  path: ");
		char *fixed;

		ck_assert_ptr_nonnull(at);
		fixed = fbh_strdupf("%.*s  path: %s/spool\n%s", (int)(at - y), y, blocker, strchr(at, '\n') + 1);
		fbh_write_file(yaml, fixed, 0600);
		free(fixed);
		free(y);
	}
	conf = fbh_edge_conf(&edge, yaml, NULL);
	ck_assert_int_eq(fbh_broker_start(&edge, conf), -1);
	text = log_text(&edge);
	ck_assert_msg(count_lines(text, "flowmq-bridge: flowmq-bridge:", NULL) == 0, "doubled prefix:\n%s", text);
	ck_assert_msg(count_lines(text, "flowmq-bridge: ", "/not-a-folder/spool") == 1, "not exactly one line:\n%s", text);
	ck_assert_msg(count_lines(text, "flowmq-bridge: cannot create spool folder ", ": Not a directory") == 1,
			"%s", text);
	free(text);
	free(conf);
	free(yaml);
	free(blocker);
}
END_TEST

/* allow_plaintext with a username and password: one warning at load, one at every connect. */
START_TEST(test_plaintext_credentials_warned_at_load_and_each_connect)
{
	struct fbh_broker cloud, edge;
	const char *tmpl =
		"site_id: " FBH_SITE_ID "\n"
		"cloud:\n"
		"  endpoints: [mqtt://127.0.0.1:@PORT2@]\n"
		"  keepalive: 5s\n"
		"  reconnect: { min: 100ms, max: 1s }\n"
		"  auth:\n"
		"    username: edge-${site_id}\n"
		"    password_file: @PASSWORD_FILE@\n"
		"  tls:\n"
		"    allow_plaintext: true\n"
		"spool:\n"
		"  path: @SPOOL_PATH@\n"
		FBH_YAML_E2C_RULES;
	char *yaml_tmpl, *text, *p;
	const char *load_warning, *connect_warning;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	/* The cloud's plaintext listener is port2; fbh_edge_yaml() knows only @CLOUD_PORT@. */
	yaml_tmpl = strdup(tmpl);
	p = strstr(yaml_tmpl, "@PORT2@");
	*p = '\0';
	p = fbh_strdupf("%s@CLOUD_PORT@%s", yaml_tmpl, strstr(tmpl, "@PORT2@") + 7);
	free(yaml_tmpl);
	start_edge(&edge, cloud.port2, p, NULL);
	free(p);
	ck_assert_msg(fbh_wait_log(&edge, "flowmq-bridge: connected to", 20000), "no connection: %s", edge.log);
	fbh_broker_stop(&cloud);
	start_cloud(&cloud, NULL);
	fbh_broker_log_mark(&edge);
	ck_assert_msg(fbh_wait_log(&edge, "flowmq-bridge: connected to", 20000), "no reconnection: %s", edge.log);

	text = log_text(&edge);
	load_warning = "flowmq-bridge.yaml:3: cloud.endpoints[0]: 'mqtt://127.0.0.1:";
	connect_warning = " is not encrypted: the username and password go to it in clear";
	ck_assert_msg(count_lines(text, load_warning, "is not encrypted: the username and password of cloud.auth go "
			"to it in clear") == 1, "%s", text);
	ck_assert_uint_eq(count_lines(text, "flowmq-bridge: connected to", NULL), 2);
	ck_assert_msg(count_lines(text, "flowmq-bridge: mqtt://127.0.0.1:", connect_warning) >= 2, "%s", text);
	free(text);
	fbh_broker_stop(&edge);
	fbh_broker_stop(&cloud);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("logging");
	TCase *tc = fbh_tcase("logging");

	tcase_add_test(tc, test_link_process_lines_carry_their_own_time);
	tcase_add_test(tc, test_spool_error_is_logged_once_with_one_prefix);
	tcase_add_test(tc, test_plaintext_credentials_warned_at_load_and_each_connect);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
