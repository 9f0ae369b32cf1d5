/* Test process: flowmq-bridge spool peek and spool dead (issue 18) on a spool filled by the test:
 * the oldest records in send order, the dead letters with their reason codes, exact counts and
 * fields, in text and JSON; the spool folder byte-identical (SHA-256 of every file, sizes, mtimes)
 * before and after each run, while the edge's link process holds the spool and after the edge
 * stopped. */
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "c2e.h" /* FB_C2E_RING, FB_REQUEUE_STEM */
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

/* The cloud's ACL for the edge that accepts forbidden/site-A/# too. */
static const struct fbh_cloud_opts open_cloud = { .acl = "user " FBH_EDGE_USER "\n"
	"topic readwrite edge/site-A/#\n"
	"topic readwrite forbidden/site-A/#\n"
	"\n"
	"user " FBH_CLOUD_TEST_USER "\n"
	"topic readwrite #\n" };

/* Checks the JSON of `spool purge-dead --json`: ok, PURGED dead letters, IN_USE, no diagnostics. */
static void check_purged_json(const char *out, int purged, bool in_use)
{
	cJSON *j = cJSON_Parse(out);

	ck_assert_msg(j != NULL, "not JSON: %s", out);
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "ok")));
	ck_assert_int_eq(cJSON_GetObjectItem(j, "purged")->valueint, purged);
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "in_use")) == in_use);
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "diagnostics")), 0);
	cJSON_Delete(j);
}

/* Starts the standard cloud (it refuses what rule 0 sends) and the edge with TOOLS_YAML, watched by
 * *SYS; returns once the edge is connected, with the path of its spool folder (caller frees). */
static char *start_tools(struct fbh_broker *cloud, struct fbh_broker *edge, struct fbh_sub **sys)
{
	fbh_broker_init(cloud, "cloud");
	fbh_broker_init(edge, "edge");
	start_cloud(cloud, NULL);
	start_edge(edge, cloud->port, TOOLS_YAML, NULL);
	*sys = sys_watch(edge);
	ck_assert_ptr_nonnull(*sys);
	ck_assert(sys_wait(*sys, "state", "connected", 10000));
	return fbh_strdupf("%s/spool", edge->dir);
}

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

	spool = start_tools(&cloud, &edge, &sys);

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

		start_cloud(&cloud, &open_cloud);
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
	check_purged_json(out, 2, false);
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

/* Restarts CLOUD (OPTS: its ACL) and waits until the edge (its status in SYS) is connected again. */
static void cloud_restart(struct fbh_broker *cloud, const struct fbh_cloud_opts *opts, struct fbh_sub *sys)
{
	ck_assert_int_eq(fbh_broker_stop(cloud), 0);
	ck_assert(sys_wait_u64(sys, "connected", 0, 15000));
	start_cloud(cloud, opts);
	ck_assert(sys_wait_u64(sys, "connected", 1, 20000));
}

/* Sends N messages "sI" (I from FIRST) on local/secret/z, which the standard cloud refuses. */
static void publish_secrets(struct fbh_broker *edge, int first, int n)
{
	struct fbh_pub *pub = fbh_pub_connect(edge->port, NULL);
	char payload[16];

	ck_assert_ptr_nonnull(pub);
	for(int i = first; i < first + n; i++){
		snprintf(payload, sizeof(payload), "s%d", i);
		ck_assert_int_ge(fbh_pub_send(pub, "local/secret/z", payload, (int)strlen(payload), 1, false, NULL), 0);
	}
	ck_assert(fbh_pub_wait_all(pub, 10000));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);
}

/* requeue-dead and purge-dead on a running broker go through its link process: the dead letters
 * reach the cloud once it accepts them, in order, behind what was queued, without their reason;
 * purge-dead empties "dead"; a link process that does not answer (SIGSTOP) gets its request taken
 * back, nothing changed; a second request while one is pending is refused. */
START_TEST(requeue_and_purge_dead_while_running)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sys, *sub;
	char *spool, *request, *out, *line;
	pid_t lp;

	spool = start_tools(&cloud, &edge, &sys);
	request = fbh_strdupf("%s-request", spool);

	/* Three messages the cloud refuses: three dead letters. */
	publish_secrets(&edge, 0, 3);
	ck_assert(sys_wait_u64(sys, "spool/dead", 3, 10000));
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/rejected", 3, 10000));

	/* The cloud accepts them now; one telemetry message is forwarded first. */
	cloud_restart(&cloud, &open_cloud, sys);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "#", 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert_int_eq(fbh_publish(edge.port, NULL, "local/telemetry/y", "t", 1, 1, NULL, 10000), 1);
	ck_assert(fbh_sub_wait_count(sub, 1, 10000) == 1);

	fbh_broker_log_mark(&edge);
	ck_assert_int_eq(cli_run(&out, "spool", "requeue-dead", spool, NULL, NULL), 0);
	ck_assert_str_eq(out, "3 dead letters queued again for the cloud\n");
	free(out);
	ck_assert(wait_exactly(sub, 4, 10000, 500));
	for(int i = 0; i < 4; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		char want[8];

		snprintf(want, sizeof(want), i ? "s%d" : "t0", i - 1);
		ck_assert_str_eq(m->topic, i ? "forbidden/site-A/z" : "edge/site-A/telemetry/y");
		ck_assert_int_eq(m->payloadlen, 2);
		ck_assert_int_eq(memcmp(m->payload, want, 2), 0);
		ck_assert_ptr_null(fbh_msg_user_prop(m, "flowmq-dead-reason"));
		ck_assert_ptr_nonnull(fbh_msg_user_prop(m, "flowmq-bridge-origin"));
		ck_assert_str_eq(fbh_msg_user_prop(m, "flowmq-bridge-origin"), "site-A");
	}
	ck_assert(sys_wait_u64(sys, "spool/dead", 0, 10000));
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 4, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/rejected", 3, 5000));
	line = fbh_strdupf("requeue-dead by pid ");
	ck_assert_msg(fbh_broker_log_line_has(&edge, line, ": 3 dead letters queued again for the cloud"),
			"no log line of the requeue");
	free(line);
	ck_assert_int_eq(access(request, F_OK), -1);
	fbh_sub_stop(sub);

	/* The cloud refuses again: two dead letters, which purge-dead removes. */
	cloud_restart(&cloud, NULL, sys);
	publish_secrets(&edge, 3, 2);
	ck_assert(sys_wait_u64(sys, "spool/dead", 2, 10000));
	ck_assert_int_eq(cli_run(&out, "spool", "purge-dead", "--json", spool, NULL), 0);
	check_purged_json(out, 2, true);
	free(out);
	ck_assert(sys_wait_u64(sys, "spool/dead", 0, 10000));

	/* One more dead letter; the link process stopped: the request is taken back unanswered. */
	publish_secrets(&edge, 5, 1);
	ck_assert(sys_wait_u64(sys, "spool/dead", 1, 10000));
	lp = link_pid(edge.pid);
	ck_assert_int_gt(lp, 0);
	ck_assert_int_eq(kill(lp, SIGSTOP), 0);
	ck_assert_int_eq(cli_run(&out, "spool", "requeue-dead", "--timeout", "2", spool), 1);
	line = fbh_strdupf("error: spool %s: the running link process (pid %d) did not take the request within "
			"2 s (is it stopped or hung?); nothing changed\n", spool, (int)lp);
	ck_assert_str_eq(out, line);
	free(line);
	free(out);
	ck_assert_int_eq(access(request, F_OK), -1);

	/* A request pending (written here by hand): a second one is refused. */
	fbh_write_file(request, "flowmq-bridge-request 1\nop purge-dead\nnonce 0123456789abcdef0123456789abcdef\n"
			"pid 1\n", 0600);
	ck_assert_int_eq(cli_run(&out, "spool", "purge-dead", "--timeout", "1", spool), 1);
	line = fbh_strdupf("error: spool %s: another request to the running link process (pid %d) is pending; "
			"try again once it is answered, nothing changed\n", spool, (int)lp);
	ck_assert_str_eq(out, line);
	free(line);
	free(out);
	ck_assert_int_eq(unlink(request), 0);
	ck_assert_int_eq(kill(lp, SIGCONT), 0);
	ck_assert(sys_wait_u64(sys, "spool/dead", 1, 10000));
	ck_assert_int_eq(cli_run(&out, "spool", "dead", spool, NULL, NULL), 0);
	ck_assert_msg(strncmp(out, "1 dead letter\n", 14) == 0, "output: %s", out);
	free(out);
	fbh_sub_stop(sys);
	free(request);
	free(spool);
}
END_TEST

/* requeue-dead and purge-dead while the broker runs but no link process holds the spool: it was
 * killed and cannot start again (its program is gone). The broker still stages into the files it
 * has mapped, so the CLI must not open the spool as a stopped broker's, which empties those files:
 * it waits for a link process up to --timeout, then changes nothing and says why. Once the program
 * is back, a waiting request goes to the next link process. Everything the broker staged while
 * no link process ran arrives once, in order, after what went before. */
START_TEST(requeue_dead_waits_while_no_link_process_runs)
{
	struct fbh_broker cloud, edge, waiting;
	struct fbh_sub *sys, *sub;
	char *spool, *prog, *extra, *out, *line, *before, *after;
	const char *argv[] = { FB_CLI_PATH, "spool", "requeue-dead", "--timeout", "60", NULL, NULL };
	cJSON *j;
	pid_t lp, edge_pid;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	spool = fbh_strdupf("%s/spool", edge.dir);
	prog = fbh_strdupf("%s/flowmq-link", edge.dir);
	ck_assert_int_eq(symlink(fbh_link_program(), prog), 0);
	extra = fbh_strdupf("plugin_opt_link_program %s\n", prog);
	start_cloud(&cloud, NULL);
	start_edge(&edge, cloud.port, TOOLS_YAML, extra);
	edge_pid = edge.pid;
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait(sys, "state", "connected", 10000));
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "edge/#", 1);
	ck_assert_ptr_nonnull(sub);

	/* Two dead letters; five telemetry messages forwarded. */
	publish_secrets(&edge, 0, 2);
	ck_assert(sys_wait_u64(sys, "spool/dead", 2, 10000));
	ck_assert_int_eq(fbh_publish(edge.port, NULL, "local/telemetry/w", "t", 5, 1, NULL, 10000), 5);
	ck_assert(fbh_sub_wait_count(sub, 5, 10000) == 5);

	/* The link process killed and its program gone: the broker cannot start another one. Five
	 * more messages are acknowledged and staged by the broker meanwhile. */
	ck_assert_int_eq(unlink(prog), 0);
	lp = link_pid_wait(edge.pid);
	fbh_broker_log_mark(&edge);
	ck_assert_int_eq(kill(lp, SIGKILL), 0);
	ck_assert(fbh_wait_log(&edge, "cannot run flowmq-link at", 20000));
	ck_assert_int_eq(fbh_publish(edge.port, NULL, "local/telemetry/w", "u", 5, 1, NULL, 10000), 5);

	before = tree_settled(spool);
	ck_assert_int_eq(cli_run(&out, "spool", "requeue-dead", "--timeout", "2", spool), 1);
	line = fbh_strdupf("error: spool %s: a running broker uses it, and no link process took it within 2 s "
			"(is its link process being restarted, or can it not start? see the broker's log); nothing "
			"changed\n", spool);
	ck_assert_str_eq(out, line);
	free(line);
	free(out);
	ck_assert_int_eq(cli_run(&out, "spool", "purge-dead", "--json", "--timeout=1", spool), 1);
	line = fbh_strdupf("error: spool %s: a running broker uses it, and no link process took it within 1 s "
			"(is its link process being restarted, or can it not start? see the broker's log); nothing "
			"changed\n", spool);
	ck_assert_msg(strncmp(out, line, strlen(line)) == 0, "output: %s", out);
	j = cJSON_Parse(out + strlen(line)); /* stderr's line, then the JSON */
	free(line);
	ck_assert_msg(j != NULL, "not JSON: %s", out);
	ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "ok")));
	ck_assert_int_eq(cJSON_GetObjectItem(j, "purged")->valueint, 0);
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(j, "in_use")));
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(j, "diagnostics")), 1);
	cJSON_Delete(j);
	free(out);
	after = tree_state(spool);
	ck_assert_msg(strcmp(before, after) == 0, "the spool changed:\n%s\nto\n%s", before, after);
	free(before);
	free(after);

	/* Five more, staged after the refusals (before the fix, the CLI had emptied the files under
	 * the broker, and two of these were lost without a count). */
	ck_assert_int_eq(fbh_publish(edge.port, NULL, "local/telemetry/w", "v", 5, 1, NULL, 10000), 5);

	/* A request that waits: the program back, the next link process takes it. */
	argv[5] = spool;
	fbh_broker_init(&waiting, "cli-wait");
	ck_assert_int_eq(fbh_broker_spawn(&waiting, argv), 0);
	ck_assert_int_eq(fbh_broker_wait_exit(&waiting, 1000), INT_MIN);
	ck_assert_int_eq(symlink(fbh_link_program(), prog), 0);
	ck_assert_int_eq(fbh_broker_wait_exit(&waiting, 60000), 0);
	out = fbh_read_file(waiting.log);
	ck_assert_ptr_nonnull(out);
	ck_assert_str_eq(out, "2 dead letters queued again for the cloud\n");
	free(out);

	/* t0..t4, u0..u4, then v0..v4, each once; the requeued secrets refused again. */
	ck_assert(wait_exactly(sub, 15, 30000, 1000));
	for(int i = 0; i < 15; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		char want[8];

		snprintf(want, sizeof(want), "%c%d", "tuv"[i / 5], i % 5);
		ck_assert_str_eq(m->topic, "edge/site-A/telemetry/w");
		ck_assert_int_eq(m->payloadlen, (int)strlen(want));
		ck_assert_int_eq(memcmp(m->payload, want, strlen(want)), 0);
	}
	/* Seventeen publishes: fifteen forwarded, two dead letters. */
	ck_assert(sys_wait_u64(sys, "spool/dead", 2, 20000));
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 15, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/corrupt", 0, 5000));
	ck_assert(fbh_broker_running(&edge));
	ck_assert_int_eq(edge.pid, edge_pid);
	fbh_sub_stop(sub);
	fbh_sub_stop(sys);
	free(extra);
	free(prog);
	free(spool);
}
END_TEST

/* requeue-dead on a running broker whose spool is full (spool.max_size, on_full reject, the cloud
 * away): after 10 s without room the answer comes early, saying how many wait (exit code 1); the
 * link process goes on, and once the cloud is back and the backlog drains, the dead letters are
 * delivered behind it, in order. */
START_TEST(requeue_dead_waits_for_room_in_a_full_spool)
{
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { 0 };
	struct fbh_client_opts so = persistent_sub("cloud-sub-requeue-full");
	struct fbh_sub *sys, *sub;
	struct fbh_pub *pub;
	char *spool, *yaml, *p, *out, *want, big[301];
	long filled;
	pid_t lp;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	spool = fbh_strdupf("%s/spool", edge.dir);
	co.extra = cloud_persistent_extra(&cloud);
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, "#", 1);
	ck_assert_ptr_nonnull(sub);
	fbh_sub_stop(sub);
	p = strstr(TOOLS_YAML, "  path: @SPOOL_PATH@\n");
	ck_assert_ptr_nonnull(p);
	yaml = fbh_strdupf("%.*s  path: @SPOOL_PATH@\n  max_size: 64KiB\n  on_full: reject\n%s", (int)(p - TOOLS_YAML),
			TOOLS_YAML, p + strlen("  path: @SPOOL_PATH@\n"));
	start_edge(&edge, cloud.port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait(sys, "state", "connected", 10000));

	/* Three dead letters of 300 bytes each, larger than any message of the backlog. */
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	for(int i = 0; i < 3; i++){
		memset(big, 'x', 300);
		big[0] = (char)('0' + i);
		ck_assert_int_ge(fbh_pub_send(pub, "local/secret/z", big, 300, 1, false, NULL), 0);
	}
	ck_assert(fbh_pub_wait_all(pub, 10000));
	fbh_pub_close(pub);
	ck_assert(sys_wait_u64(sys, "spool/dead", 3, 10000));

	/* The cloud goes away; small messages fill the spool until it refuses them. */
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	ck_assert(sys_wait_u64(sys, "connected", 0, 15000));
	filled = fbh_publish(edge.port, NULL, "local/telemetry/y", "f", 3000, 1, NULL, 120000);
	ck_assert_int_gt(filled, 10);
	ck_assert_int_lt(filled, 3000);
	{
		char n[24];

		snprintf(n, sizeof(n), "%ld", filled);
		ck_assert(sys_wait(sys, "spool/messages", n, 10000));
	}

	lp = link_pid(edge.pid);
	ck_assert_int_gt(lp, 0);
	fbh_broker_log_mark(&edge);
	ck_assert_int_eq(cli_run(&out, "spool", "requeue-dead", "--timeout", "40", spool), 1);
	want = fbh_strdupf("error: spool %s: requeue-dead by the running link process (pid %d): 0 done, 3 left: "
			"3 dead letters wait for room in the staging channel (spool.max_size reached, or the link "
			"process is behind); they are queued as room comes\n", spool, (int)lp);
	ck_assert_str_eq(out, want);
	free(want);
	free(out);
	ck_assert_uint_eq(strtoull(sys_value(sys, "spool/dead"), NULL, 10), 3);

	/* The cloud is back and accepts them: the backlog, then the three, in order. */
	co.acl = open_cloud.acl;
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, "#", 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert(wait_exactly(sub, (size_t)filled + 3, 60000, 1000));
	for(long i = 0; i < filled; i++){
		ck_assert_int_eq(payload_index(fbh_sub_msg(sub, (size_t)i), "f"), i);
	}
	for(int i = 0; i < 3; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, (size_t)filled + (size_t)i);

		ck_assert_str_eq(m->topic, "forbidden/site-A/z");
		ck_assert_int_eq(m->payloadlen, 300);
		ck_assert_int_eq(((const char *)m->payload)[0], '0' + i);
		ck_assert_ptr_null(fbh_msg_user_prop(m, "flowmq-dead-reason"));
	}
	ck_assert(sys_wait_u64(sys, "spool/dead", 0, 10000));
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(fbh_wait_log(&edge, ": 3 dead letters queued again for the cloud", 10000));
	fbh_sub_stop(sub);
	fbh_sub_stop(sys);
	free((char *)co.extra);
	free(yaml);
	free(spool);
}
END_TEST

/* The file of requeued dead letter SEQ (one larger than half the requeue ring) in SPOOL, written
 * whole (not the .new it is written as first); NULL while there is none (caller frees). */
static char *requeue_file(const char *spool, unsigned seq)
{
	char *path = fbh_strdupf("%s/" FB_REQUEUE_STEM "%u", spool, seq);

	if(access(path, F_OK) != 0){
		free(path);
		return NULL;
	}
	return path;
}

/* requeue-dead on a running broker, and the file of a large dead letter (larger than half the
 * requeue ring: it travels in a file of its own) is deleted before the broker thread reads it (the
 * edge broker is stopped with SIGSTOP meanwhile). The dead letter is still in spool "dead": the
 * link process writes the file again, and every dead letter is queued once, in order, byte for
 * byte; the request is answered as done; each side logs it once. A later request works. */
START_TEST(requeue_dead_writes_a_deleted_large_file_again_and_queues_each_once_in_order)
{
	const size_t big_len = FB_C2E_RING / 2 + 1;
	struct fbh_broker cloud, edge, cli;
	struct fbh_sub *sys, *sub;
	struct fbh_pub *pub;
	const char *argv[] = { FB_CLI_PATH, "spool", "requeue-dead", "--timeout", "60", NULL, NULL };
	char *spool, *path = NULL, *out, *line;
	uint8_t *big = malloc(big_len);
	int rc;

	ck_assert_ptr_nonnull(big);
	for(size_t i = 0; i < big_len; i++){
		big[i] = (uint8_t)(i * 13 + i / 4096);
	}
	spool = start_tools(&cloud, &edge, &sys);

	/* Three the cloud refuses: dead letters 1 (s0), 2 (large) and 3 (s2). */
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	ck_assert_int_ge(fbh_pub_send(pub, "local/secret/z", "s0", 2, 1, false, NULL), 0);
	ck_assert_int_ge(fbh_pub_send(pub, "local/secret/z", big, (int)big_len, 1, false, NULL), 0);
	ck_assert_int_ge(fbh_pub_send(pub, "local/secret/z", "s2", 2, 1, false, NULL), 0);
	ck_assert(fbh_pub_wait_all(pub, 30000));
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);
	ck_assert(sys_wait_u64(sys, "spool/dead", 3, 30000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/rejected", 3, 10000));

	/* The cloud accepts them now. The edge broker stopped, the link process puts them into the
	 * requeue ring; the large one's file is deleted before the broker thread can read it. */
	cloud_restart(&cloud, &open_cloud, sys);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "forbidden/#", 1);
	ck_assert_ptr_nonnull(sub);
	fbh_broker_log_mark(&edge);
	ck_assert_int_eq(fbh_broker_signal(&edge, SIGSTOP), 0);
	argv[5] = spool;
	fbh_broker_init(&cli, "cli-requeue");
	ck_assert_int_eq(fbh_broker_spawn(&cli, argv), 0);
	for(int i = 0; i < 3000 && (path = requeue_file(spool, 2)) == NULL; i++){
		usleep(10000);
	}
	ck_assert_msg(path != NULL, "the link process wrote no file for dead letter 2");
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(fbh_broker_signal(&edge, SIGCONT), 0);

	/* The request is answered as done. */
	rc = fbh_broker_wait_exit(&cli, 60000);
	out = fbh_read_file(cli.log);
	ck_assert_ptr_nonnull(out);
	ck_assert_msg(rc == 0 && strcmp(out, "3 dead letters queued again for the cloud\n") == 0,
			"exit code %d: %s", rc, out);
	free(out);

	/* s0, the large one, s2: each once, in order, byte for byte, without their reason. */
	ck_assert(wait_exactly(sub, 3, 30000, 1000));
	for(int i = 0; i < 3; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, (size_t)i);

		ck_assert_str_eq(m->topic, "forbidden/site-A/z");
		if(i == 1){
			ck_assert_int_eq(m->payloadlen, (int)big_len);
			ck_assert(memcmp(m->payload, big, big_len) == 0);
		}else{
			ck_assert_int_eq(m->payloadlen, 2);
			ck_assert_int_eq(memcmp(m->payload, i ? "s2" : "s0", 2), 0);
		}
		ck_assert_ptr_null(fbh_msg_user_prop(m, "flowmq-dead-reason"));
	}
	fbh_sub_stop(sub);
	/* Three refused and counted, the same three forwarded once requeued; nothing left over. */
	ck_assert(sys_wait_u64(sys, "spool/dead", 0, 10000));
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 3, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/rejected", 3, 5000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/corrupt", 0, 5000));
	ck_assert_uint_eq(spool_files(&edge, FB_REQUEUE_STEM), 0);
	/* Logged once by each side: the broker thread's failed read, the link process's repair. */
	ck_assert(fbh_wait_log(&edge, ": 3 dead letters queued again for the cloud", 10000));
	line = fbh_strdupf("requeue-dead: dead letter 2 cannot be read from %s: No such file or directory", path);
	ck_assert_uint_eq(log_count(&edge, line), 1);
	free(line);
	line = fbh_strdupf("requeue-dead: the file %s of dead letter 2 was gone; written again from spool \"dead\"",
			path);
	ck_assert_uint_eq(log_count(&edge, line), 1);
	free(line);

	/* A later request: one more dead letter, queued again once the cloud accepts it. */
	cloud_restart(&cloud, NULL, sys);
	publish_secrets(&edge, 3, 1);
	ck_assert(sys_wait_u64(sys, "spool/dead", 1, 10000));
	cloud_restart(&cloud, &open_cloud, sys);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, "forbidden/#", 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert_int_eq(cli_run(&out, "spool", "requeue-dead", "--timeout", "20", spool), 0);
	ck_assert_str_eq(out, "1 dead letter queued again for the cloud\n");
	free(out);
	ck_assert(wait_exactly(sub, 1, 10000, 500));
	ck_assert_int_eq(fbh_sub_msg(sub, 0)->payloadlen, 2);
	ck_assert_int_eq(memcmp(fbh_sub_msg(sub, 0)->payload, "s3", 2), 0);
	ck_assert(sys_wait_u64(sys, "spool/dead", 0, 10000));
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 4, 10000));
	fbh_sub_stop(sub);
	fbh_sub_stop(sys);
	free(path);
	free(spool);
	free(big);
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
	tcase_add_test(tc, requeue_and_purge_dead_while_running);
	tcase_add_test(tc, requeue_dead_waits_for_room_in_a_full_spool);
	tcase_add_test(tc, requeue_dead_waits_while_no_link_process_runs);
	tcase_add_test(tc, requeue_dead_writes_a_deleted_large_file_again_and_queues_each_once_in_order);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
