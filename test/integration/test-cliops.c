/* The flowmq-bridge command's basics (--version, --help, usage errors, --json) and `route`: the
 * test process runs the CLI (FB_CLI_PATH) on files it writes and asserts its exact output. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cJSON.h>

#include "common.h"

/* Runs the CLI with ARGS (NULL-terminated, without argv[0]); returns its exit code, with its
 * stdout in *OUT and stderr in *ERR (caller frees). */
static int cli(char **out, char **err, const char *const args[])
{
	static int runs;
	char *o = fbh_strdupf("%s/out-%d", fbh_tmpdir(), ++runs), *e = fbh_strdupf("%s/err-%d", fbh_tmpdir(), runs);
	const char *argv[16] = { FB_CLI_PATH };
	int st, n = 1;
	pid_t pid;

	for(; args[n - 1]; n++){
		ck_assert_int_lt(n, 15);
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

START_TEST(version_prints_the_project_version)
{
	char *out, *err;

	ck_assert_int_eq(CLI(&out, &err, "--version"), 0);
	ck_assert_str_eq(out, "flowmq-bridge 0.1.0\n");
	ck_assert_str_eq(err, "");
	free(out);
	free(err);
}
END_TEST

START_TEST(help_lists_every_command)
{
	char *out, *err;

	ck_assert_int_eq(CLI(&out, &err, "--help"), 0);
	ck_assert_str_eq(err, "");
	ck_assert_ptr_nonnull(strstr(out, "usage: flowmq-bridge COMMAND [OPTIONS] ARGS...\n"));
	ck_assert_ptr_nonnull(strstr(out, "\n  check   validate a configuration file"));
	ck_assert_ptr_nonnull(strstr(out, "\n  route   show which edge_to_cloud rule a local topic hits"));
	ck_assert_ptr_nonnull(strstr(out, "\n  spool   show what a spool holds"));
	free(out);
	free(err);
	/* No command: the same text on stderr, a usage error. */
	ck_assert_int_eq(CLI(&out, &err, NULL), 2);
	ck_assert_str_eq(out, "");
	ck_assert_ptr_nonnull(strstr(err, "flowmq-bridge: missing command\nusage: flowmq-bridge COMMAND"));
	free(out);
	free(err);
}
END_TEST

START_TEST(every_command_has_help)
{
	static const char *const cmds[][2] = {
		{ "check", "usage: flowmq-bridge check [--json] [--connect] FILE\n" },
		{ "route", "usage: flowmq-bridge route [--json] FILE TOPIC\n" },
		{ "spool", "usage: flowmq-bridge spool [--json] PATH\n" },
	};

	for(size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++){
		char *out, *err;

		ck_assert_int_eq(CLI(&out, &err, cmds[i][0], "--help"), 0);
		ck_assert_str_eq(err, "");
		ck_assert_msg(strncmp(out, cmds[i][1], strlen(cmds[i][1])) == 0, "%s --help: %s", cmds[i][0], out);
		ck_assert_ptr_nonnull(strstr(out, "  --json "));
		ck_assert_ptr_nonnull(strstr(out, "  --help "));
		free(out);
		free(err);
		/* -h too, and after the operands */
		ck_assert_int_eq(CLI(&out, &err, cmds[i][0], "x", "-h"), 0);
		ck_assert_msg(strncmp(out, cmds[i][1], strlen(cmds[i][1])) == 0, "%s -h: %s", cmds[i][0], out);
		free(out);
		free(err);
	}
}
END_TEST

START_TEST(usage_errors_are_clear)
{
	char *out, *err;

	ck_assert_int_eq(CLI(&out, &err, "frobnicate"), 2);
	ck_assert_str_eq(out, "");
	ck_assert_str_eq(err, "flowmq-bridge: unknown command 'frobnicate'\nTry 'flowmq-bridge --help'.\n");
	free(out);
	free(err);

	ck_assert_int_eq(CLI(&out, &err, "route", "only-a-file.yaml"), 2);
	ck_assert_str_eq(out, "");
	ck_assert_str_eq(err, "flowmq-bridge route: expects 2 arguments, got 1\n"
			"usage: flowmq-bridge route [--json] FILE TOPIC\n"
			"Try 'flowmq-bridge route --help'.\n");
	free(out);
	free(err);

	ck_assert_int_eq(CLI(&out, &err, "spool", "--frob", "/x"), 2);
	ck_assert_str_eq(err, "flowmq-bridge spool: unknown option '--frob'\n"
			"usage: flowmq-bridge spool [--json] PATH\n"
			"Try 'flowmq-bridge spool --help'.\n");
	free(out);
	free(err);

	/* --connect belongs to check only */
	ck_assert_int_eq(CLI(&out, &err, "route", "--connect", "a", "b"), 2);
	ck_assert_str_eq(err, "flowmq-bridge route: unknown option '--connect'\n"
			"usage: flowmq-bridge route [--json] FILE TOPIC\n"
			"Try 'flowmq-bridge route --help'.\n");
	free(out);
	free(err);
}
END_TEST

/* ---- a configuration with rules of every kind ---- */

#define ROUTE_YAML \
	"site_id: site-A\n" \
	"cloud:\n" \
	"  endpoints:\n" \
	"    - mqtts://localhost:8883\n" \
	"spool:\n" \
	"  path: @DIR@/spool\n" \
	"edge_to_cloud:\n" \
	"  - local: plant/+/temp\n" \
	"    cloud: edge/${site_id}/+/temperature\n" \
	"    qos: 0\n" \
	"    retain: clear\n" \
	"    headers:\n" \
	"      unit: celsius\n" \
	"      site: ${site_id}\n" \
	"  - local: plant/#\n" \
	"    drop: true\n" \
	"  - local: logs/#\n" \
	"    cloud: \"#\"\n" \
	"    qos: 2\n"

/* A cloud_to_edge rule that logs/# -> # would echo: a warning. */
#define ECHO_C2E \
	"cloud_to_edge:\n" \
	"  - cloud: cloud/commands/${site_id}/#\n" \
	"    local: local/commands/#\n"

static char *route_yaml_with(const char *tmpl, unsigned *l0, unsigned *l1, unsigned *l2)
{
	struct fbh_broker b;
	char *path, *text;

	fbh_broker_init(&b, "route");
	path = fbh_edge_yaml(&b, 8883, tmpl);
	text = fbh_read_file(path);
	*l0 = fbh_line_of(text, "- local: plant/+/temp");
	*l1 = fbh_line_of(text, "- local: plant/#");
	*l2 = fbh_line_of(text, "- local: logs/#");
	ck_assert_uint_eq(*l0, 8);
	ck_assert_uint_eq(*l1, 15);
	ck_assert_uint_eq(*l2, 17);
	free(text);
	return path;
}

static char *route_yaml(unsigned *l0, unsigned *l1, unsigned *l2)
{
	return route_yaml_with(ROUTE_YAML, l0, l1, l2);
}

START_TEST(route_shows_the_rule_topic_qos_and_headers)
{
	unsigned l0, l1, l2;
	char *yaml = route_yaml(&l0, &l1, &l2), *out, *err;

	ck_assert_int_eq(CLI(&out, &err, "route", yaml, "plant/p7/temp"), 0);
	ck_assert_str_eq(err, "");
	ck_assert_str_eq(out,
			"plant/p7/temp\n"
			"  rule:        edge_to_cloud[0], line 8: plant/+/temp -> edge/site-A/+/temperature\n"
			"  cloud topic: edge/site-A/p7/temperature\n"
			"  qos:         0\n"
			"  retain:      cleared\n"
			"  header:      unit: celsius\n"
			"  header:      site: site-A\n"
			"  header:      flowmq-bridge-origin: site-A\n");
	free(out);
	free(err);

	/* An empty '+' level matches too (MQTT rules). */
	ck_assert_int_eq(CLI(&out, &err, "route", yaml, "plant//temp"), 0);
	ck_assert_ptr_nonnull(strstr(out, "  cloud topic: edge/site-A//temperature\n"));
	free(out);
	free(err);

	ck_assert_int_eq(CLI(&out, &err, "route", yaml, "logs/a/b"), 0);
	ck_assert_str_eq(out,
			"logs/a/b\n"
			"  rule:        edge_to_cloud[2], line 17: logs/# -> #\n"
			"  cloud topic: a/b\n"
			"  qos:         2\n"
			"  retain:      kept as published\n"
			"  header:      flowmq-bridge-origin: site-A\n");
	free(out);
	free(err);
	free(yaml);
}
END_TEST

START_TEST(route_says_when_a_topic_is_not_forwarded)
{
	unsigned l0, l1, l2;
	char *yaml = route_yaml(&l0, &l1, &l2), *out, *err;

	/* The first matching rule wins: plant/p7/pressure misses rule 0 and hits the drop rule. */
	ck_assert_int_eq(CLI(&out, &err, "route", yaml, "plant/p7/pressure"), 3);
	ck_assert_str_eq(err, "");
	ck_assert_str_eq(out,
			"plant/p7/pressure\n"
			"  rule:        edge_to_cloud[1], line 15: plant/# -> drop\n"
			"  not forwarded: the rule drops it\n");
	free(out);
	free(err);

	ck_assert_int_eq(CLI(&out, &err, "route", yaml, "office/p7/temp"), 3);
	ck_assert_str_eq(out, "office/p7/temp: no edge_to_cloud rule matches; not forwarded\n");
	free(out);
	free(err);

	/* A wildcard filter never matches a '$' topic. */
	ck_assert_int_eq(CLI(&out, &err, "route", yaml, "$SYS/logs"), 3);
	ck_assert_str_eq(out, "$SYS/logs: no edge_to_cloud rule matches; not forwarded\n");
	free(out);
	free(err);

	/* "logs" matches logs/# with '#' taking nothing: the cloud topic would be empty. */
	ck_assert_int_eq(CLI(&out, &err, "route", yaml, "logs"), 3);
	ck_assert_str_eq(out,
			"logs\n"
			"  rule:        edge_to_cloud[2], line 17: logs/# -> #\n"
			"  not forwarded: the rule makes an invalid cloud topic of it (empty, or longer than 65535 bytes)\n");
	free(out);
	free(err);

	ck_assert_int_eq(CLI(&out, &err, "route", yaml, "plant/+/temp"), 1);
	ck_assert_str_eq(out, "");
	ck_assert_str_eq(err, "error: plant/+/temp: not a topic a client can publish to: wildcards are not allowed here\n");
	free(out);
	free(err);
	free(yaml);
}
END_TEST

START_TEST(route_reports_a_bad_file_like_check)
{
	struct fbh_broker b;
	char *yaml, *out, *err;

	fbh_broker_init(&b, "bad");
	yaml = fbh_edge_yaml(&b, 8883, "site_id: site-A\ncloud:\n  endpoints:\n    - mqtts://localhost:8883\n"
			"spool:\n  path: @DIR@/spool\nedge_to_cloud:\n  - local: a/+\n    cloud: b/+/+\n");
	ck_assert_int_eq(CLI(&out, &err, "route", yaml, "a/x"), 1);
	ck_assert_str_eq(out, "");
	ck_assert_str_eq(err, "error: flowmq-bridge.yaml:9: edge_to_cloud[0].cloud: template has 2 wildcards, filter has 1\n");
	free(out);
	free(err);
	free(yaml);
}
END_TEST

START_TEST(route_json)
{
	unsigned l0, l1, l2;
	char *yaml = route_yaml(&l0, &l1, &l2), *out, *err;
	cJSON *j, *want;

	ck_assert_int_eq(CLI(&out, &err, "route", "--json", yaml, "plant/p7/temp"), 0);
	j = cJSON_Parse(out);
	ck_assert_ptr_nonnull(j);
	want = cJSON_Parse("{\"topic\":\"plant/p7/temp\",\"outcome\":\"forwarded\",\"forwarded\":true,"
			"\"rule\":{\"index\":0,\"line\":8,\"local\":\"plant/+/temp\",\"cloud\":\"edge/site-A/+/temperature\","
			"\"drop\":false},\"cloud_topic\":\"edge/site-A/p7/temperature\",\"qos\":0,\"retain\":\"clear\","
			"\"headers\":[{\"name\":\"unit\",\"value\":\"celsius\"},{\"name\":\"site\",\"value\":\"site-A\"},"
			"{\"name\":\"flowmq-bridge-origin\",\"value\":\"site-A\"}]}");
	ck_assert_ptr_nonnull(want);
	ck_assert_msg(cJSON_Compare(j, want, true), "got %s", out);
	cJSON_Delete(j);
	cJSON_Delete(want);
	free(out);
	free(err);

	ck_assert_int_eq(CLI(&out, &err, "route", "--json", yaml, "plant/x"), 3);
	j = cJSON_Parse(out);
	want = cJSON_Parse("{\"topic\":\"plant/x\",\"outcome\":\"dropped\",\"forwarded\":false,"
			"\"rule\":{\"index\":1,\"line\":15,\"local\":\"plant/#\",\"cloud\":null,\"drop\":true}}");
	ck_assert_msg(cJSON_Compare(j, want, true), "got %s", out);
	cJSON_Delete(j);
	cJSON_Delete(want);
	free(out);
	free(err);

	ck_assert_int_eq(CLI(&out, &err, "route", "--json", yaml, "nowhere"), 3);
	j = cJSON_Parse(out);
	want = cJSON_Parse("{\"topic\":\"nowhere\",\"outcome\":\"no_rule\",\"forwarded\":false,\"rule\":null}");
	ck_assert_msg(cJSON_Compare(j, want, true), "got %s", out);
	cJSON_Delete(j);
	cJSON_Delete(want);
	free(out);
	free(err);
	free(yaml);
}
END_TEST

START_TEST(check_and_spool_json)
{
	unsigned l0, l1, l2;
	char *yaml = route_yaml_with(ROUTE_YAML ECHO_C2E, &l0, &l1, &l2), *out, *err, *want_text, *want_text2, *spool;
	cJSON *j, *want;

	ck_assert_int_eq(CLI(&out, &err, "check", "--json", yaml), 0);
	j = cJSON_Parse(out);
	want_text = fbh_strdupf("{\"file\":\"%s\",\"valid\":true,\"site_id\":\"site-A\","
			"\"endpoints\":[\"mqtts://localhost:8883\"],\"edge_to_cloud_rules\":3,\"cloud_to_edge_rules\":1,"
			"\"spool_path\":\"%s/route/spool\",\"diagnostics\":[{\"level\":\"warning\",\"message\":"
			"\"flowmq-bridge.yaml:21: cloud_to_edge[0].cloud: 'cloud/commands/site-A/#' overlaps "
			"edge_to_cloud[2].cloud '#': forwarded messages come back (echo loop risk)\"}]}", yaml, fbh_tmpdir());
	want = cJSON_Parse(want_text);
	ck_assert_ptr_nonnull(want);
	ck_assert_msg(cJSON_Compare(j, want, true), "got %s", out);
	cJSON_Delete(j);
	cJSON_Delete(want);
	free(want_text);
	free(out);
	free(err);

	/* A missing spool: the error in the JSON and on stderr, exit 1. */
	spool = fbh_strdupf("%s/route/spool", fbh_tmpdir());
	ck_assert_int_eq(CLI(&out, &err, "spool", "--json", spool), 1);
	j = cJSON_Parse(out);
	want_text = fbh_strdupf("{\"path\":\"%s\",\"readable\":false,\"diagnostics\":[{\"level\":\"error\","
			"\"message\":\"spool %s: no such folder\"}]}", spool, spool);
	want = cJSON_Parse(want_text);
	ck_assert_msg(cJSON_Compare(j, want, true), "got %s", out);
	want_text2 = fbh_strdupf("error: spool %s: no such folder\n", spool);
	ck_assert_str_eq(err, want_text2);
	free(want_text2);
	cJSON_Delete(j);
	cJSON_Delete(want);
	free(want_text);
	free(out);
	free(err);
	free(spool);
	free(yaml);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cliops");
	TCase *tc = fbh_tcase("basics");

	tcase_add_test(tc, version_prints_the_project_version);
	tcase_add_test(tc, help_lists_every_command);
	tcase_add_test(tc, every_command_has_help);
	tcase_add_test(tc, usage_errors_are_clear);
	suite_add_tcase(s, tc);
	tc = fbh_tcase("route");
	tcase_add_test(tc, route_shows_the_rule_topic_qos_and_headers);
	tcase_add_test(tc, route_says_when_a_topic_is_not_forwarded);
	tcase_add_test(tc, route_reports_a_bad_file_like_check);
	tcase_add_test(tc, route_json);
	tcase_add_test(tc, check_and_spool_json);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
