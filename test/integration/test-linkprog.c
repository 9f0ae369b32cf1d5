/* flowmq-link, the link process's program, as the plugin starts it: a missing or non-executable
 * program and one of another IPC version are refused with one clear log line and the broker does
 * not start; the link process's log lines reach the broker's log destinations through the broker
 * thread, `log_dest topic` included, with their levels. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "common.h"
#include "harness.h"
#include "shared.h"

#ifndef FB_LINK_MISMATCH
#define FB_LINK_MISMATCH ""
#endif

/* Lines of TEXT that contain S. */
static unsigned count_lines(const char *text, const char *s)
{
	unsigned n = 0;

	for(const char *line = text; line && *line;){
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);
		char *copy = strndup(line, len);

		n += strstr(copy, s) != NULL;
		free(copy);
		line = end ? end + 1 : NULL;
	}
	return n;
}

/* Starts an edge whose plugin is told to run PROGRAM, expects the broker to refuse to start, and
 * returns its whole log. The cloud port is one where nothing listens: the bridge never gets as
 * far as connecting. */
static char *start_refused(struct fbh_broker *edge, const char *program)
{
	char *yaml = fbh_edge_yaml(edge, fbh_free_port(), FBH_YAML_STANDARD);
	char *extra = fbh_strdupf("plugin_opt_link_program %s\n", program);
	char *conf = fbh_edge_conf(edge, yaml, extra);
	char *log;

	ck_assert_int_eq(fbh_broker_start(edge, conf), -1);
	ck_assert(edge->exited);
	ck_assert_int_ne(fbh_broker_exit_code(edge), 0);
	log = fbh_read_file(edge->log);
	ck_assert_ptr_nonnull(log);
	free(conf);
	free(extra);
	free(yaml);
	return log;
}

START_TEST(test_missing_link_program_refuses_start_with_one_line)
{
	struct fbh_broker edge;
	char *path, *log, *want;

	fbh_broker_init(&edge, "edge");
	path = fbh_strdupf("%s/no-such-dir/flowmq-link", edge.dir);
	log = start_refused(&edge, path);
	want = fbh_strdupf("flowmq-bridge: cannot run flowmq-link at %s: No such file or directory; set "
			"plugin_opt_link_program to the flowmq-link installed with this plugin", path);
	ck_assert_msg(count_lines(log, want) == 1, "expected once: %s\nlog:\n%s", want, log);
	/* That is the only line about it, and no link process was started. */
	ck_assert_uint_eq(count_lines(log, "flowmq-link"), 1);
	ck_assert_uint_eq(count_lines(log, "flowmq-bridge: started:"), 0);
	free(want);
	free(log);
	free(path);
}
END_TEST

START_TEST(test_non_executable_link_program_refuses_start_with_one_line)
{
	struct fbh_broker edge;
	char *path, *log, *want;

	fbh_broker_init(&edge, "edge");
	path = fbh_strdupf("%s/flowmq-link", edge.dir);
	fbh_write_file(path, "#!/bin/sh\nexit 0\n", 0644);
	log = start_refused(&edge, path);
	want = fbh_strdupf("flowmq-bridge: cannot run flowmq-link at %s: Permission denied; set "
			"plugin_opt_link_program to the flowmq-link installed with this plugin", path);
	/* No x bit at all: refused even when the tests run as root. */
	ck_assert_msg(count_lines(log, want) == 1, "expected once: %s\nlog:\n%s", want, log);
	ck_assert_uint_eq(count_lines(log, "flowmq-link"), 1);
	free(want);
	free(log);
	free(path);
}
END_TEST

/* A flowmq-link built for IPC version 999 (-DFB_IPC_VERSION_OVERRIDE=999): it writes its version
 * into the shared region's header and exits with its distinct status; the plugin logs both
 * versions once, does not start it again, and the broker does not start. */
START_TEST(test_mismatched_link_program_is_refused)
{
	struct fbh_broker edge;
	char *log, *want;

	ck_assert_msg(access(FB_LINK_MISMATCH, X_OK) == 0, "%s is missing", FB_LINK_MISMATCH);
	fbh_broker_init(&edge, "edge");
	log = start_refused(&edge, FB_LINK_MISMATCH);
	want = fbh_strdupf("flowmq-bridge: flowmq-link at %s speaks IPC version 999, this plugin version %d; "
			"refusing it", FB_LINK_MISMATCH, FB_IPC_VERSION);
	ck_assert_msg(count_lines(log, want) == 1, "expected once: %s\nlog:\n%s", want, log);
	ck_assert_uint_eq(count_lines(log, "IPC version"), 1);
	ck_assert_uint_eq(count_lines(log, "restarting the link process"), 0);
	ck_assert_uint_eq(count_lines(log, "the link process did not start"), 0);
	ck_assert_uint_eq(count_lines(log, "flowmq-bridge: started:"), 0);
	free(want);
	free(log);
}
END_TEST

/* The link process's "cannot connect" (an error it logs when the cloud refuses the connection)
 * reaches a $SYS/broker/log/# subscriber of the edge as an error-level line ($SYS/broker/log/E),
 * logged by the broker thread with the plugin's prefix. */
START_TEST(test_link_process_line_reaches_log_dest_topic)
{
	struct fbh_broker edge;
	struct fbh_sub *logs;
	int port = fbh_free_port(); /* nothing listens: every attempt is refused */
	char *want, *yaml, *conf;
	bool found = false;
	size_t seen = 0;

	fbh_broker_init(&edge, "edge");
	yaml = fbh_edge_yaml(&edge, port, FBH_YAML_STANDARD);
	conf = fbh_edge_conf(&edge, yaml, "log_dest topic\n");
	ck_assert_int_eq(fbh_broker_start(&edge, conf), 0);
	logs = fbh_sub_start(edge.port, NULL, "$SYS/broker/log/#", 0);
	ck_assert_ptr_nonnull(logs);
	want = fbh_strdupf("flowmq-bridge: cannot connect to mqtts://localhost:%d: ", port);
	/* The link process retries every second at most: a line comes while we listen. */
	for(int round = 0; round < 60 && !found; round++){
		size_t n = fbh_sub_wait_count(logs, seen + 1, 1000);

		for(; seen < n; seen++){
			const struct fbh_msg *m = fbh_sub_msg(logs, seen);

			if(strstr(m->payload, want)){
				ck_assert_str_eq(m->topic, "$SYS/broker/log/E");
				found = true;
				break;
			}
		}
	}
	ck_assert_msg(found, "no \"%s\" on $SYS/broker/log/# (log in %s)", want, edge.log);
	/* And the same line in the log file: one logger, every destination. */
	ck_assert(fbh_broker_log_contains(&edge, want));
	fbh_sub_stop(logs);
	free(want);
	free(conf);
	free(yaml);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("linkprog");
	TCase *tc = fbh_tcase("linkprog");

	tcase_add_test(tc, test_missing_link_program_refuses_start_with_one_line);
	tcase_add_test(tc, test_non_executable_link_program_refuses_start_with_one_line);
	tcase_add_test(tc, test_mismatched_link_program_is_refused);
	tcase_add_test(tc, test_link_process_line_reaches_log_dest_topic);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
