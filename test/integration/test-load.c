/* Loading the plugin into a real Mosquitto 2.0.11: it starts with a valid configuration, stops
 * cleanly on SIGTERM, and makes the broker refuse to start when the configuration is wrong. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <check.h>

#include "harness.h"

/* The broker exited by itself (no signal) with a non-zero code, never reached "running", and
 * logged that the plugin refused to initialise: Mosquitto 2.0.11 logs "Error: Plugin returned RC
 * when initialising." and main() returns that RC as the exit code. */
static void assert_refused(struct fbh_broker *b)
{
	int code = fbh_broker_exit_code(b);
	char *want;

	if (code <= 0)
		fbh_broker_dump_log(b);
	ck_assert_msg(b->exited, "the broker should have exited");
	ck_assert_msg(code > 0, "the broker should exit with a non-zero code, got %d", code);
	want = fbh_strdupf("Error: Plugin returned %d when initialising.", code);
	ck_assert_msg(fbh_broker_log_contains(b, want), "log lacks \"%s\"", want);
	free(want);
	ck_assert(!fbh_broker_log_line_has(b, "mosquitto version ", " running"));
}

START_TEST(test_valid_config_starts_serves_clients_and_stops_cleanly)
{
	struct fbh_broker edge;
	struct fbh_sub *sub;
	char *yaml, *conf;
	long acked;

	fbh_broker_init(&edge, "edge");
	/* Nothing listens on the cloud port: the bridge keeps reconnecting, the broker is fine. */
	yaml = fbh_edge_yaml(&edge, fbh_free_port(), FBH_YAML_STANDARD);
	conf = fbh_edge_conf(&edge, yaml, NULL);
	if (fbh_broker_start(&edge, conf) != 0)
		fbh_broker_dump_log(&edge);
	ck_assert_int_eq(edge.pid > 0, 1);
	ck_assert_msg(fbh_wait_log(&edge, "flowmq-bridge: started", 5000),
			"no 'flowmq-bridge: started' line in %s", edge.log);
	ck_assert(fbh_broker_log_contains(&edge, "Loading plugin: "));

	/* The broker serves local clients with the plugin loaded. */
	sub = fbh_sub_start(edge.port, NULL, "local/#", 1);
	ck_assert_ptr_nonnull(sub);
	acked = fbh_publish(edge.port, NULL, "local/telemetry/t1", "m", 3, 1, NULL, 5000);
	ck_assert_int_eq(acked, 3);
	ck_assert_uint_eq(fbh_sub_wait_count(sub, 3, 5000), 3);
	ck_assert_str_eq(fbh_sub_msg(sub, 0)->topic, "local/telemetry/t1");
	ck_assert_str_eq(fbh_sub_msg(sub, 0)->payload, "m0");
	ck_assert_str_eq(fbh_sub_msg(sub, 2)->payload, "m2");
	fbh_sub_stop(sub);
	ck_assert(fbh_broker_running(&edge));

	/* SIGTERM: the plugin's cleanup runs and the broker exits with 0. */
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	ck_assert(fbh_broker_log_line_has(&edge, "mosquitto version ", " terminating"));
	free(conf);
	free(yaml);
}
END_TEST

START_TEST(test_template_wildcard_mismatch_refuses_to_start_with_file_line_key)
{
	/* Rule 0 maps a trailing '#' to a '+': the wildcards differ. */
	static const char tmpl[] = FBH_YAML_BASE
		"edge_to_cloud:\n"
		"  - local: local/telemetry/#\n"
		"    cloud: edge/${site_id}/telemetry/+\n"
		"    qos: 1\n"
		FBH_YAML_C2E_RULES;
	struct fbh_broker edge;
	char *yaml, *conf, *text, *want;
	unsigned line;

	fbh_broker_init(&edge, "edge");
	yaml = fbh_edge_yaml(&edge, fbh_free_port(), tmpl);
	text = fbh_read_file(yaml);
	line = fbh_line_of(text, "cloud: edge/${site_id}/telemetry/+");
	ck_assert_uint_gt(line, 0);
	conf = fbh_edge_conf(&edge, yaml, NULL);

	ck_assert_int_eq(fbh_broker_start(&edge, conf), -1);
	assert_refused(&edge);
	want = fbh_strdupf("flowmq-bridge.yaml:%u: edge_to_cloud[0].cloud: ", line);
	if (!fbh_broker_log_contains(&edge, want))
		fbh_broker_dump_log(&edge);
	ck_assert_msg(fbh_broker_log_contains(&edge, want), "log lacks \"%s\"", want);
	free(want);
	free(text);
	free(conf);
	free(yaml);
}
END_TEST

START_TEST(test_missing_plugin_opt_config_file_refuses_to_start)
{
	struct fbh_broker edge;
	char *conf;

	fbh_broker_init(&edge, "edge");
	conf = fbh_edge_conf(&edge, NULL, NULL);
	ck_assert_int_eq(fbh_broker_start(&edge, conf), -1);
	assert_refused(&edge);
	ck_assert(fbh_broker_log_line_has(&edge, "flowmq-bridge:", "plugin_opt_config_file"));
	free(conf);
}
END_TEST

START_TEST(test_missing_config_file_refuses_to_start_naming_the_file)
{
	struct fbh_broker edge;
	char *conf, *path, *want;

	fbh_broker_init(&edge, "edge");
	path = fbh_strdupf("%s/does-not-exist.yaml", edge.dir);
	conf = fbh_edge_conf(&edge, path, NULL);
	ck_assert_int_eq(fbh_broker_start(&edge, conf), -1);
	assert_refused(&edge);
	/* The full path as configured, so that the operator sees which file. */
	want = fbh_strdupf("flowmq-bridge: %s: ", path);
	if (!fbh_broker_log_contains(&edge, want))
		fbh_broker_dump_log(&edge);
	ck_assert_msg(fbh_broker_log_contains(&edge, want), "log lacks \"%s\"", want);
	free(want);
	free(path);
	free(conf);
}
END_TEST

START_TEST(test_per_listener_settings_true_refuses_to_start)
{
	struct fbh_broker edge;
	char *yaml, *conf;

	fbh_broker_init(&edge, "edge");
	yaml = fbh_edge_yaml(&edge, fbh_free_port(), FBH_YAML_STANDARD);
	/* per_listener_settings must come first, and the plugin after a listener (2.0.11). */
	conf = fbh_strdupf(
			"per_listener_settings true\n"
			"listener %d 127.0.0.1\n"
			"allow_anonymous true\n"
			"plugin %s\n"
			"plugin_opt_config_file %s\n",
			edge.port, fbh_plugin_path(), yaml);
	ck_assert_int_eq(fbh_broker_start(&edge, conf), -1);
	assert_refused(&edge);
	if (!fbh_broker_log_line_has(&edge, "flowmq-bridge:", "per_listener_settings"))
		fbh_broker_dump_log(&edge);
	ck_assert(fbh_broker_log_line_has(&edge, "flowmq-bridge:", "per_listener_settings"));
	free(conf);
	free(yaml);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("load");
	TCase *tc = fbh_tcase("load");

	tcase_add_test(tc, test_valid_config_starts_serves_clients_and_stops_cleanly);
	tcase_add_test(tc, test_template_wildcard_mismatch_refuses_to_start_with_file_line_key);
	tcase_add_test(tc, test_missing_plugin_opt_config_file_refuses_to_start);
	tcase_add_test(tc, test_missing_config_file_refuses_to_start_naming_the_file);
	tcase_add_test(tc, test_per_listener_settings_true_refuses_to_start);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
