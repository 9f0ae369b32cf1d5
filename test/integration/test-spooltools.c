/* flowmq-bridge spool peek and spool dead (issue 18) on a spool filled by the test: the oldest
 * records in send order, the dead letters with their reason codes, exact counts and fields, in
 * text and JSON; the spool folder byte-identical (SHA-256 of every file, sizes, mtimes) before and
 * after each run, while the edge's link process holds the spool and after the edge stopped. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "common.h"

/* Rule 0 goes to a cloud topic the cloud's ACL refuses (dead letters), rule 2 is lane 0. */
#define TOOLS_YAML FBH_YAML_BASE \
	"edge_to_cloud:\n" \
	"  - local: local/secret/#\n" \
	"    cloud: forbidden/${site_id}/#\n" \
	"  - local: local/telemetry/#\n" \
	"    cloud: edge/${site_id}/telemetry/#\n" \
	"  - local: local/alarm/#\n" \
	"    cloud: edge/${site_id}/alarm/#\n" \
	"    priority: 0\n"

/* Runs the CLI with ARGS (after the program, NULL-terminated); returns its exit code and *OUT
 * (stdout and stderr; caller frees). */
static int cli_run(char **out, const char *a0, const char *a1, const char *a2, const char *a3, const char *a4)
{
	static int runs;
	char *log = fbh_strdupf("%s/tools-%d.log", fbh_tmpdir(), ++runs);
	const char *argv[] = { FB_CLI_PATH, a0, a1, a2, a3, a4, NULL };
	int st = fbh_run_cmd(argv, log);

	*out = fbh_read_file(log);
	ck_assert_ptr_nonnull(*out);
	free(log);
	ck_assert_msg(st != -1 && WIFEXITED(st), "the CLI did not exit normally (status %d): %s", st, *out);
	return WEXITSTATUS(st);
}

/* Runs the CLI on SPOOL and asserts that no byte of SPOOL changed; returns the exit code. */
static int cli_still(const char *spool, char **out, const char *a0, const char *a1, const char *a2,
		const char *a3, const char *a4)
{
	char *before = tree_state(spool), *after;
	int rc = cli_run(out, a0, a1, a2, a3, a4);

	after = tree_state(spool);
	ck_assert_msg(strcmp(before, after) == 0, "the spool changed:\n%s\nto\n%s", before, after);
	free(before);
	free(after);
	return rc;
}

static int line_count(const char *text)
{
	int n = 0;

	for(const char *p = text; *p; p++){
		n += *p == '\n';
	}
	return n;
}

/* Removes the " age N.Ns" of each line of TEXT in place (ages move on). */
static void strip_ages(char *text)
{
	char *p, *q;

	while((p = strstr(text, " age ")) != NULL){
		q = strchr(p + 5, 's');
		ck_assert_ptr_nonnull(q);
		memmove(p, q + 1, strlen(q + 1) + 1);
	}
}

static const char *const peek4_text =
	"4 oldest records in send order\n"
	"seq 8 lane 0 qos 1 size 7 topic edge/site-A/alarm/x\n"
	"seq 9 lane 0 qos 1 size 7 topic edge/site-A/alarm/x\n"
	"seq 10 lane 0 qos 1 size 7 topic edge/site-A/alarm/x\n"
	"seq 3 lane 4 qos 1 size 2 topic edge/site-A/telemetry/y\n";

static const char *const dead_text =
	"2 dead letters\n"
	"seq 1 lane 4 qos 1 size 2 topic forbidden/site-A/z reason 0x87 @REASON@\n"
	"seq 2 lane 4 qos 1 size 2 topic forbidden/site-A/z reason 0x87 @REASON@\n";

/* Checks the JSON of `spool peek --json` (all 8 records) against what the test spooled. */
static void check_peek_json(const char *out, bool running)
{
	static const char *const topics[8] = { "edge/site-A/alarm/x", "edge/site-A/alarm/x", "edge/site-A/alarm/x",
		"edge/site-A/telemetry/y", "edge/site-A/telemetry/y", "edge/site-A/telemetry/y", "edge/site-A/telemetry/y",
		"edge/site-A/telemetry/y" };
	static const unsigned seqs[8] = { 8, 9, 10, 3, 4, 5, 6, 7 };
	cJSON *j = cJSON_Parse(out), *recs, *r;
	double prev_age = 0;

	ck_assert_msg(j != NULL, "not JSON: %s", out);
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "readable")));
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "in_use")) == running);
	ck_assert(cJSON_IsNumber(cJSON_GetObjectItem(j, "link_pid")) == running);
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "diagnostics")), 0);
	recs = cJSON_GetObjectItem(j, "records");
	ck_assert_int_eq(cJSON_GetArraySize(recs), 8);
	for(int i = 0; i < 8; i++){
		r = cJSON_GetArrayItem(recs, i);
		ck_assert_int_eq(cJSON_GetObjectItem(r, "seq")->valueint, (int)seqs[i]);
		ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(r, "readable")));
		ck_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(r, "topic")), topics[i]);
		ck_assert_int_eq(cJSON_GetObjectItem(r, "size")->valueint, i < 3 ? 7 : 2);
		ck_assert_int_eq(cJSON_GetObjectItem(r, "qos")->valueint, 1);
		ck_assert_int_eq(cJSON_GetObjectItem(r, "lane")->valueint, i < 3 ? 0 : 4);
		ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(r, "retain")));
		ck_assert_double_ge(cJSON_GetObjectItem(r, "age_s")->valuedouble, 0.0);
		ck_assert_double_le(cJSON_GetObjectItem(r, "age_s")->valuedouble, 3600.0);
		if(i == 3){
			prev_age = 1e9; /* telemetry was spooled before the alarms */
		}
		if(i > 0){
			ck_assert_double_le(cJSON_GetObjectItem(r, "age_s")->valuedouble, i == 3 ? 1e9 : prev_age);
		}
		prev_age = cJSON_GetObjectItem(r, "age_s")->valuedouble;
	}
	cJSON_Delete(j);
}

static void check_dead_json(const char *out, bool running, const char *reason)
{
	cJSON *j = cJSON_Parse(out), *dl, *r;

	ck_assert_msg(j != NULL, "not JSON: %s", out);
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "readable")));
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "in_use")) == running);
	dl = cJSON_GetObjectItem(j, "dead_letters");
	ck_assert_int_eq(cJSON_GetArraySize(dl), 2);
	for(int i = 0; i < 2; i++){
		r = cJSON_GetArrayItem(dl, i);
		ck_assert_int_eq(cJSON_GetObjectItem(r, "seq")->valueint, i + 1);
		ck_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(r, "topic")), "forbidden/site-A/z");
		ck_assert_int_eq(cJSON_GetObjectItem(r, "size")->valueint, 2);
		ck_assert_int_eq(cJSON_GetObjectItem(r, "qos")->valueint, 1);
		ck_assert_int_eq(cJSON_GetObjectItem(r, "lane")->valueint, 4);
		ck_assert_int_eq(cJSON_GetObjectItem(r, "reason_code")->valueint, 0x87);
		ck_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(r, "reason")), reason);
	}
	cJSON_Delete(j);
}

/* Replaces @REASON@ in TEMPLATE by REASON (caller frees). */
static char *with_reason(const char *template, const char *reason)
{
	char *t = strdup(template), *p;

	ck_assert_ptr_nonnull(t);
	while((p = strstr(t, "@REASON@")) != NULL){
		char *n = fbh_strdupf("%.*s%s%s", (int)(p - t), t, reason, p + 8);
		free(t);
		t = n;
	}
	return t;
}

START_TEST(peek_and_dead_show_exact_records_and_change_no_byte)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sys, *sub;
	struct fbh_pub *pub;
	char *spool, *out, *want, *reason, *p;
	char payload[16];

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	spool = fbh_strdupf("%s/spool", edge.dir);
	start_cloud(&cloud, NULL);
	start_edge(&edge, cloud.port, TOOLS_YAML, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait(sys, "state", "connected", 10000));

	/* Two messages the cloud refuses: dead letters 1 and 2. */
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	ck_assert_int_ge(fbh_pub_send(pub, "local/secret/z", "s0", 2, 1, false, NULL), 0);
	ck_assert_int_ge(fbh_pub_send(pub, "local/secret/z", "s1", 2, 1, false, NULL), 0);
	ck_assert(fbh_pub_wait_all(pub, 10000));
	ck_assert(sys_wait_u64(sys, "spool/dead", 2, 10000));
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));

	/* The cloud goes away: 5 telemetry (seq 3..7), then 3 alarms in lane 0 (seq 8..10). */
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	ck_assert(sys_wait_u64(sys, "connected", 0, 15000));
	for(int i = 0; i < 5; i++){
		snprintf(payload, sizeof(payload), "t%d", i);
		ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/y", payload, 2, 1, false, NULL), 0);
	}
	ck_assert(fbh_pub_wait_all(pub, 10000));
	usleep(50 * 1000); /* the alarms are younger */
	for(int i = 0; i < 3; i++){
		snprintf(payload, sizeof(payload), "alarm-%d", i);
		ck_assert_int_ge(fbh_pub_send(pub, "local/alarm/x", payload, 7, 1, false, NULL), 0);
	}
	ck_assert(fbh_pub_wait_all(pub, 10000));
	fbh_pub_close(pub);
	ck_assert(sys_wait_u64(sys, "spool/messages", 8, 10000));
	fbh_sub_stop(sys);
	free(tree_settled(spool));

	/* The reason the cloud gave, as the link process logged it. */
	reason = fbh_read_file(edge.log);
	ck_assert_ptr_nonnull(reason);
	p = strstr(reason, "moved to dead letters: 0x87 ");
	ck_assert_msg(p != NULL, "log: %s", reason);
	p += strlen("moved to dead letters: 0x87 ");
	p = strndup(p, strcspn(p, "\n"));
	free(reason);
	reason = p;

	for(int running = 1; running >= 0; running--){
		if(!running){
			ck_assert_int_eq(fbh_broker_stop(&edge), 0);
		}
		ck_assert_int_eq(cli_still(spool, &out, "spool", "peek", "-n", "4", spool), 0);
		strip_ages(out);
		p = strstr(out, "snapshot: the spool is in use by a running link process (pid ");
		ck_assert_msg((p != NULL) == running, "output: %s", out);
		if(p){
			*p = '\0';
		}
		ck_assert_str_eq(out, peek4_text);
		free(out);

		ck_assert_int_eq(cli_still(spool, &out, "spool", "peek", "--json", spool, NULL), 0);
		check_peek_json(out, running);
		free(out);

		ck_assert_int_eq(cli_still(spool, &out, "spool", "dead", spool, NULL, NULL), 0);
		strip_ages(out);
		p = strstr(out, "snapshot: the spool is in use by a running link process (pid ");
		ck_assert_msg((p != NULL) == running, "output: %s", out);
		if(p){
			*p = '\0';
		}
		want = with_reason(dead_text, reason);
		ck_assert_str_eq(out, want);
		free(want);
		free(out);

		ck_assert_int_eq(cli_still(spool, &out, "spool", "dead", "--json", spool, NULL), 0);
		check_dead_json(out, running, reason);
		free(out);

		if(running){
			/* Changing the spool under a running link process is refused, nothing changed. */
			ck_assert_int_eq(cli_still(spool, &out, "spool", "requeue-dead", spool, NULL, NULL), 1);
			ck_assert_msg(strstr(out, "error: spool ") == out && strstr(out, " is in use by a running "
					"link process (pid ") && strstr(out, "): stop the broker first; requeue-dead on a "
					"running broker is not supported yet, nothing changed\n"), "output: %s", out);
			ck_assert_int_eq(line_count(out), 1);
			free(out);
			ck_assert_int_eq(cli_still(spool, &out, "spool", "purge-dead", "--json", spool, NULL), 1);
			ck_assert_msg(strstr(out, "purge-dead on a running broker is not supported yet")
					&& strstr(out, "\"ok\":\tfalse") && strstr(out, "\"purged\":\t0"), "output: %s", out);
			free(out);
		}

		/* The stats agree. */
		ck_assert_int_eq(cli_still(spool, &out, "spool", spool, NULL, NULL, NULL), 0);
		ck_assert_msg(strncmp(out, "out: 8 messages, ", 17) == 0 && strstr(out, "\ndead letters: 2\n"),
				"output: %s", out);
		free(out);
	}

	/* Stopped: requeue-dead queues both dead letters again, behind the 8 (seq 11, 12). */
	ck_assert_int_eq(cli_run(&out, "spool", "requeue-dead", spool, NULL, NULL), 0);
	ck_assert_str_eq(out, "2 dead letters queued again for the cloud\n");
	free(out);
	ck_assert_int_eq(cli_still(spool, &out, "spool", "dead", spool, NULL, NULL), 0);
	ck_assert_str_eq(out, "0 dead letters\n");
	free(out);
	ck_assert_int_eq(cli_still(spool, &out, "spool", "peek", "-n", "20", spool), 0);
	strip_ages(out);
	ck_assert_str_eq(out, "10 oldest records in send order\n"
			"seq 8 lane 0 qos 1 size 7 topic edge/site-A/alarm/x\n"
			"seq 9 lane 0 qos 1 size 7 topic edge/site-A/alarm/x\n"
			"seq 10 lane 0 qos 1 size 7 topic edge/site-A/alarm/x\n"
			"seq 3 lane 4 qos 1 size 2 topic edge/site-A/telemetry/y\n"
			"seq 4 lane 4 qos 1 size 2 topic edge/site-A/telemetry/y\n"
			"seq 5 lane 4 qos 1 size 2 topic edge/site-A/telemetry/y\n"
			"seq 6 lane 4 qos 1 size 2 topic edge/site-A/telemetry/y\n"
			"seq 7 lane 4 qos 1 size 2 topic edge/site-A/telemetry/y\n"
			"seq 11 lane 4 qos 1 size 2 topic forbidden/site-A/z\n"
			"seq 12 lane 4 qos 1 size 2 topic forbidden/site-A/z\n");
	free(out);

	/* The edge and a cloud that now accepts forbidden/site-A/# back: all 10 are delivered, the
	 * lane-0 alarms first, each lane in order, the requeued dead letters last. */
	{
		static const char *const want_topics[10] = { "edge/site-A/alarm/x", "edge/site-A/alarm/x",
			"edge/site-A/alarm/x", "edge/site-A/telemetry/y", "edge/site-A/telemetry/y",
			"edge/site-A/telemetry/y", "edge/site-A/telemetry/y", "edge/site-A/telemetry/y",
			"forbidden/site-A/z", "forbidden/site-A/z" };
		static const char *const want_payloads[10] = { "alarm-0", "alarm-1", "alarm-2", "t0", "t1",
			"t2", "t3", "t4", "s0", "s1" };
		struct fbh_cloud_opts co = { .acl = "user " FBH_EDGE_USER "\n"
			"topic readwrite edge/site-A/#\n"
			"topic readwrite forbidden/site-A/#\n"
			"\n"
			"user " FBH_CLOUD_TEST_USER "\n"
			"topic readwrite #\n" };

		start_cloud(&cloud, &co);
		sub = fbh_sub_start(cloud.port2, &cloud_tester, "#", 1);
		ck_assert_ptr_nonnull(sub);
		start_edge(&edge, cloud.port, TOOLS_YAML, NULL);
		sys = sys_watch(&edge);
		ck_assert_ptr_nonnull(sys);
		ck_assert(sys_wait_u64(sys, "spool/messages", 0, 20000));
		ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 10, 10000));
		ck_assert(wait_exactly(sub, 10, 10000, 500));
		for(int i = 0; i < 10; i++){
			const struct fbh_msg *m = fbh_sub_msg(sub, i);

			ck_assert_str_eq(m->topic, want_topics[i]);
			ck_assert_int_eq(m->payloadlen, (int)strlen(want_payloads[i]));
			ck_assert_int_eq(memcmp(m->payload, want_payloads[i], strlen(want_payloads[i])), 0);
			/* The requeued ones went without the reason of their dead letter, with the origin. */
			ck_assert_ptr_null(fbh_msg_user_prop(m, "flowmq-dead-reason"));
			ck_assert_ptr_nonnull(fbh_msg_user_prop(m, "flowmq-bridge-origin"));
			ck_assert_str_eq(fbh_msg_user_prop(m, "flowmq-bridge-origin"), "site-A");
		}
		ck_assert(sys_wait_u64(sys, "spool/dead", 0, 10000));
		ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/rejected", 0, 5000));
		fbh_sub_stop(sub);

		/* Two more refused (the standard cloud again): two new dead letters. */
		ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
		start_cloud(&cloud, NULL);
		ck_assert(sys_wait(sys, "state", "connected", 15000));
		pub = fbh_pub_connect(edge.port, NULL);
		ck_assert_ptr_nonnull(pub);
		ck_assert_int_ge(fbh_pub_send(pub, "local/secret/z", "s2", 2, 1, false, NULL), 0);
		ck_assert_int_ge(fbh_pub_send(pub, "local/secret/z", "s3", 2, 1, false, NULL), 0);
		ck_assert(fbh_pub_wait_all(pub, 10000));
		fbh_pub_close(pub);
		ck_assert(sys_wait_u64(sys, "spool/dead", 2, 10000));
		fbh_sub_stop(sys);
		ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	}
	ck_assert_int_eq(cli_still(spool, &out, "spool", "dead", "--json", spool, NULL), 0);
	{
		cJSON *j = cJSON_Parse(out), *dl;

		ck_assert_ptr_nonnull(j);
		dl = cJSON_GetObjectItem(j, "dead_letters");
		ck_assert_int_eq(cJSON_GetArraySize(dl), 2);
		for(int i = 0; i < 2; i++){
			cJSON *r = cJSON_GetArrayItem(dl, i);

			/* "dead" was empty when the link process opened the spool: seqs start at 1 again. */
			ck_assert_int_eq(cJSON_GetObjectItem(r, "seq")->valueint, 1 + i);
			ck_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(r, "topic")), "forbidden/site-A/z");
			ck_assert_int_eq(cJSON_GetObjectItem(r, "reason_code")->valueint, 0x87);
			ck_assert_str_eq(cJSON_GetStringValue(cJSON_GetObjectItem(r, "reason")), reason);
		}
		cJSON_Delete(j);
	}
	free(out);

	/* purge-dead removes them. */
	ck_assert_int_eq(cli_run(&out, "spool", "purge-dead", "--json", spool, NULL), 0);
	{
		cJSON *j = cJSON_Parse(out);

		ck_assert_msg(j != NULL, "not JSON: %s", out);
		ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "ok")));
		ck_assert_int_eq(cJSON_GetObjectItem(j, "purged")->valueint, 2);
		ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "in_use")));
		cJSON_Delete(j);
	}
	free(out);
	ck_assert_int_eq(cli_still(spool, &out, "spool", spool, NULL, NULL, NULL), 0);
	ck_assert_str_eq(out, "out: 0 messages, 0 bytes, oldest seq 0\nin: 0 messages\ndead letters: 0\n");
	free(out);
	ck_assert_int_eq(cli_run(&out, "spool", "purge-dead", spool, NULL, NULL), 0);
	ck_assert_str_eq(out, "0 dead letters removed\n");
	free(out);
	free(reason);
	free(spool);
}
END_TEST

START_TEST(peek_and_dead_refuse_bad_usage_and_missing_spools)
{
	char *dir = fbh_strdupf("%s/tools", fbh_tmpdir()), *missing, *out;

	ck_assert_int_eq(mkdir(dir, 0700), 0);
	missing = fbh_strdupf("%s/no-spool-here", dir);
	ck_assert_int_eq(cli_run(&out, "spool", "peek", "-n", "0", dir), 2);
	ck_assert_msg(strstr(out, "flowmq-bridge spool peek: -n: '0' is not a number from 1 to 100000\n") == out,
			"output: %s", out);
	free(out);
	ck_assert_int_eq(cli_run(&out, "spool", "peek", "-n", "x", dir), 2);
	free(out);
	ck_assert_int_eq(cli_run(&out, "spool", "dead", NULL, NULL, NULL), 2);
	ck_assert_msg(strstr(out, "flowmq-bridge spool dead: expects 1 argument, got 0\n") == out, "output: %s", out);
	free(out);
	ck_assert_int_eq(cli_run(&out, "spool", "peek", missing, NULL, NULL), 1);
	ck_assert_msg(strstr(out, "error: spool ") == out && strstr(out, "no such folder"), "output: %s", out);
	free(out);
	ck_assert_int_eq(cli_run(&out, "spool", "dead", "--json", missing, NULL), 1);
	ck_assert_msg(strstr(out, "\"readable\":\tfalse"), "output: %s", out);
	free(out);
	ck_assert_int_eq(access(missing, F_OK), -1);
	ck_assert_int_eq(cli_run(&out, "spool", "peek", "--help", NULL, NULL), 0);
	ck_assert_msg(strstr(out, "usage: flowmq-bridge spool peek [--json] [-n N] PATH\n") == out, "output: %s", out);
	free(out);
	free(missing);
	free(dir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("spooltools");
	TCase *tc = fbh_tcase("spooltools");

	tcase_add_test(tc, peek_and_dead_show_exact_records_and_change_no_byte);
	tcase_add_test(tc, peek_and_dead_refuse_bad_usage_and_missing_spools);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
