/* The flowmq-bridge command against real spools: `flowmq-bridge spool PATH` reads a spool, also
 * the one a running edge's link process has open, and never changes a byte of its folder. The
 * test process runs the CLI (FB_CLI_PATH) next to an edge broker with the plugin and a cloud
 * stand-in. `flowmq-bridge health` follows the link process's status file: healthy while
 * connected or disconnected for less than the threshold, unhealthy past it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "common.h"
#include "statusfile.h"

#define CLOUD_TOPIC "edge/site-A/telemetry/#"

/* The entries of folder DIR whose names start with PREFIX. */
static int count_entries(const char *dir, const char *prefix)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while((e = readdir(d)) != NULL){
		n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
	}
	closedir(d);
	return n;
}

/* Runs `flowmq-bridge spool PATH`; returns its exit code and *OUT (stdout and stderr; caller
 * frees). */
static int cli_spool(const char *path, char **out)
{
	static int runs;
	char *log = fbh_strdupf("%s/cli-%d.log", fbh_tmpdir(), ++runs);
	const char *argv[] = { FB_CLI_PATH, "spool", path, NULL };
	int st = fbh_run_cmd(argv, log);

	*out = fbh_read_file(log);
	ck_assert_ptr_nonnull(*out);
	free(log);
	ck_assert_msg(st != -1 && WIFEXITED(st), "the CLI did not exit normally (status %d): %s", st, *out);
	return WEXITSTATUS(st);
}

/* The lines of TEXT. */
static int line_count(const char *text)
{
	int n = 0;

	for(const char *p = text; *p; p++){
		n += *p == '\n';
	}
	return n;
}

/* The parent pid of process PID, from /proc/PID/stat; -1 when it is gone. */
static long parent_of(long pid)
{
	char path[64], *text, *p;
	long ppid = -1;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	text = fbh_read_file(path);
	if(text == NULL){
		return -1;
	}
	p = strrchr(text, ')'); /* after the command name, which may hold anything */
	if(p == NULL || sscanf(p + 1, " %*c %ld", &ppid) != 1){
		ppid = -1;
	}
	free(text);
	return ppid;
}

/* Checks that S received exactly the messages PREFIX0..PREFIX<n-1>, in order. */
static void assert_sequence(struct fbh_sub *s, const char *prefix, size_t n)
{
	ck_assert_uint_eq(fbh_sub_count(s), n);
	for(size_t i = 0; i < n; i++){
		const struct fbh_msg *m = fbh_sub_msg(s, i);
		ck_assert_msg(payload_index(m, prefix) == (long)i, "message %zu is '%s', expected %s%zu",
				i, (const char *)m->payload, prefix, i);
	}
}

START_TEST(test_spool_of_a_running_edge_is_a_snapshot_and_changes_no_byte)
{
	const size_t n = 700;
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { 0 };
	struct fbh_client_opts so = persistent_sub("cloud-sub-cli");
	struct fbh_sub *sub, *sys;
	char *spool, *before, *after, *out, *live_first, *p, want[64];
	long pid;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	spool = fbh_strdupf("%s/spool", edge.dir);

	/* A cloud that keeps a persistent session for SO, then goes down: what the edge captures
	 * waits in its spool. */
	co.extra = cloud_persistent_extra(&cloud);
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, CLOUD_TOPIC, 1);
	ck_assert_ptr_nonnull(sub);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);

	start_edge(&edge, cloud.port, FBH_YAML_STANDARD, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert_int_eq(fbh_publish(edge.port, NULL, "local/telemetry/cli", "c", n, 1, NULL, 60000), (long)n);
	ck_assert(sys_wait_u64(sys, "spool/messages", n, 10000));

	/* The broker runs, its link process holds the spool. */
	before = tree_settled(spool);
	ck_assert_int_eq(cli_spool(spool, &out), 0);
	after = tree_state(spool);
	ck_assert_str_eq(after, before);
	ck_assert_int_eq(count_entries(edge.dir, "spool."), 0); /* nothing moved aside */
	snprintf(want, sizeof(want), "out: %zu messages, ", n);
	ck_assert_msg(strncmp(out, want, strlen(want)) == 0, "output: %s", out);
	ck_assert_msg(strstr(out, ", oldest seq 1\nin: 0 messages\ndead letters: 0\n"), "output: %s", out);
	p = strstr(out, "\nsnapshot: the spool is in use by a running link process (pid ");
	ck_assert_msg(p != NULL, "output: %s", out);
	pid = strtol(p + strlen("\nsnapshot: the spool is in use by a running link process (pid "), NULL, 10);
	ck_assert_int_eq(parent_of(pid), edge.pid); /* the edge's own link process */
	ck_assert_int_eq(line_count(out), 4);
	live_first = strndup(out, (size_t)(strchr(out, '\n') - out));
	ck_assert(fbh_broker_running(&edge));
	ck_assert(sys_wait_u64(sys, "spool/messages", n, 5000));
	free(before);
	free(after);
	free(out);
	fbh_sub_stop(sys);

	/* The broker stopped: the same figures, no snapshot line, still not a byte changed. */
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	before = tree_state(spool);
	ck_assert_int_eq(cli_spool(spool, &out), 0);
	after = tree_state(spool);
	ck_assert_str_eq(after, before);
	ck_assert_int_eq(count_entries(edge.dir, "spool."), 0);
	ck_assert_msg(strncmp(out, live_first, strlen(live_first)) == 0 && out[strlen(live_first)] == '\n',
			"running: %s; stopped: %s", live_first, out);
	ck_assert_msg(strstr(out, "\nin: 0 messages\ndead letters: 0\n"), "output: %s", out);
	ck_assert_int_eq(line_count(out), 3);
	free(before);
	free(after);
	free(out);

	/* The spool the CLI looked at twice delivers everything, in order. */
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, CLOUD_TOPIC, 1);
	ck_assert_ptr_nonnull(sub);
	start_edge(&edge, cloud.port, FBH_YAML_STANDARD, NULL);
	sys = sys_watch(&edge);
	ck_assert(wait_exactly(sub, n, 60000, 500));
	assert_sequence(sub, "c", n);
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	ck_assert_int_eq(cli_spool(spool, &out), 0);
	ck_assert_msg(strncmp(out, "out: 0 messages, 0 bytes, oldest seq 0\n", 39) == 0, "output: %s", out);
	free(out);
	fbh_sub_stop(sys);
	fbh_sub_stop(sub);
	free(live_first);
	free(spool);
	free((char *)co.extra);
}
END_TEST

START_TEST(test_spool_refuses_a_missing_folder_and_creates_nothing)
{
	char *dir = fbh_strdupf("%s/place", fbh_tmpdir());
	char *spool = fbh_strdupf("%s/no-spool-here", dir);
	char *before, *after, *out;

	ck_assert_int_eq(mkdir(dir, 0700), 0);
	before = tree_state(dir);
	ck_assert_int_eq(cli_spool(spool, &out), 1);
	after = tree_state(dir);
	ck_assert_str_eq(after, before);
	ck_assert_int_eq(line_count(out), 1);
	ck_assert_msg(strstr(out, "error: spool ") == out && strstr(out, spool) && strstr(out, "no such folder"),
			"output: %s", out);
	ck_assert_int_eq(access(spool, F_OK), -1);
	ck_assert_int_eq(errno, ENOENT);
	free(before);
	free(after);
	free(out);
	free(spool);
	free(dir);
}
END_TEST

START_TEST(test_spool_refuses_a_foreign_folder_and_leaves_it_byte_identical)
{
	char *dir = fbh_strdupf("%s/place", fbh_tmpdir());
	char *spool = fbh_strdupf("%s/photos", dir);
	char *path, *before, *after, *out;

	ck_assert_int_eq(mkdir(dir, 0700), 0);
	ck_assert_int_eq(mkdir(spool, 0700), 0);
	path = fbh_strdupf("%s/holiday.jpg", spool);
	fbh_write_file(path, "\xff\xd8\xff\xe0 not much of a picture", 0644);
	free(path);
	path = fbh_strdupf("%s/CURRENT", spool);
	fbh_write_file(path, "MANIFEST-000001\n", 0644);
	free(path);
	path = fbh_strdupf("%s/album", spool);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	free(path);

	before = tree_state(dir);
	ck_assert_int_eq(cli_spool(spool, &out), 1);
	after = tree_state(dir);
	ck_assert_str_eq(after, before);
	ck_assert_int_eq(line_count(out), 1);
	ck_assert_msg(strstr(out, spool) && strstr(out, "is not a flowmq-bridge spool (no FLOWMQ-SPOOL file;"),
			"output: %s", out);
	free(before);
	free(after);
	free(out);
	free(spool);
	free(dir);
}
END_TEST

/* Runs `flowmq-bridge health ARG [--max-disconnected MAX]`; returns its exit code and *OUT. */
static int cli_health(const char *arg, const char *max, char **out)
{
	static int runs;
	char *log = fbh_strdupf("%s/health-%d.log", fbh_tmpdir(), ++runs);
	const char *argv[] = { FB_CLI_PATH, "health", arg, max ? "--max-disconnected" : NULL, max, NULL };

	if(max && !strcmp(max, "--json")){
		argv[3] = "--json"; /* no threshold: the JSON verdict */
		argv[4] = NULL;
	}
	int st = fbh_run_cmd(argv, log);

	*out = fbh_read_file(log);
	ck_assert_ptr_nonnull(*out);
	free(log);
	ck_assert_msg(st != -1 && WIFEXITED(st), "the CLI did not exit normally (status %d): %s", st, *out);
	return WEXITSTATUS(st);
}

/* Polls health until it exits with WANT and its one line starts with PREFIX (30 s). */
static char *health_until(const char *arg, const char *max, int want, const char *prefix)
{
	char *out = NULL;

	for(int i = 0; i < 300; i++){
		free(out);
		if(cli_health(arg, max, &out) == want && strncmp(out, prefix, strlen(prefix)) == 0){
			return out;
		}
		usleep(100 * 1000);
	}
	ck_abort_msg("health %s never exited %d with \"%s...\"; last: %s", arg, want, prefix, out);
	return NULL;
}

START_TEST(test_health_is_healthy_while_connected_and_unhealthy_past_the_threshold)
{
	struct fbh_broker cloud, edge;
	char *yaml, *spool, *status, *out, *missing;

	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	start_edge(&edge, cloud.port, FBH_YAML_STANDARD, NULL);
	yaml = fbh_strdupf("%s/flowmq-bridge.yaml", edge.dir);
	spool = fbh_strdupf("%s/spool", edge.dir);
	status = fbh_strdupf("%s/spool-status", edge.dir);

	/* Connected: the same answer from the configuration, the spool folder and the file itself. */
	out = health_until(yaml, NULL, 0, "healthy: connected to mqtts://localhost:");
	ck_assert_ptr_null(strchr(out, '\n') == out + strlen(out) - 1 ? NULL : out); /* one line */
	free(out);
	ck_assert_int_eq(cli_health(spool, "2s", &out), 0);
	ck_assert_msg(!strncmp(out, "healthy: connected to mqtts://localhost:", 40), "%s", out);
	free(out);
	ck_assert_int_eq(cli_health(status, NULL, &out), 0);
	ck_assert_msg(!strncmp(out, "healthy: connected to mqtts://localhost:", 40), "%s", out);
	free(out);

	/* The cloud goes away: healthy below the threshold, unhealthy past it. */
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	out = NULL;
	for(int i = 0; i < 300; i++){
		free(out);
		out = health_until(yaml, "10m", 0, "healthy: ");
		if(strstr(out, "connected to") == NULL){
			break;
		}
		usleep(100 * 1000);
	}
	ck_assert_msg(strstr(out, "connected to") == NULL, "%s", out);
	ck_assert_msg(strstr(out, " (less than 10m0s)") != NULL, "%s", out);
	free(out);
	out = health_until(yaml, "2s", 1, "unhealthy: ");
	ck_assert_msg(strstr(out, " (at least 2s)") != NULL, "%s", out);
	ck_assert_ptr_null(strchr(out, '\n') == out + strlen(out) - 1 ? NULL : out);
	free(out);

	/* The edge restarts while the cloud is still down: its new link process goes on counting from
	 * the disconnection, it does not start again from 0s. */
	{
		struct fb_statusfile before, now;

		ck_assert_int_eq(fb_statusfile_read(status, &before), 0);
		ck_assert_int_eq(fbh_broker_stop(&edge), 0);
		start_edge(&edge, cloud.port, FBH_YAML_STANDARD, NULL);
		for(int i = 0; i < 300; i++){
			if(fb_statusfile_read(status, &now) == 0 && now.pid != before.pid){
				break;
			}
			usleep(100 * 1000);
		}
		ck_assert_int_ne(now.pid, before.pid);
		ck_assert_str_ne(now.state, "connected");
		ck_assert_uint_eq(now.since_ms, before.since_ms);
		ck_assert_int_eq(cli_health(yaml, "2s", &out), 1);
		ck_assert_msg(!strncmp(out, "unhealthy: ", 11), "%s", out);
		free(out);
	}

	/* Back: healthy again. */
	start_cloud(&cloud, NULL);
	out = health_until(yaml, "2s", 0, "healthy: connected to mqtts://localhost:");
	free(out);

	/* No status file (a spool that no link process runs): unhealthy, saying so. */
	missing = fbh_strdupf("%s/none", edge.dir);
	ck_assert_int_eq(mkdir(missing, 0700), 0);
	ck_assert_int_eq(cli_health(missing, NULL, &out), 1);
	ck_assert_msg(strstr(out, "unhealthy: cannot read the status file ") == out
			&& strstr(out, "/none-status: No such file or directory\n"), "%s", out);
	free(out);
	/* ... and with --json, the same as JSON. */
	ck_assert_int_eq(cli_health(missing, "--json", &out), 1);
	{
		cJSON *j = cJSON_Parse(out);

		ck_assert_msg(j != NULL, "not JSON: %s", out);
		ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "healthy")));
		ck_assert_ptr_nonnull(strstr(cJSON_GetStringValue(cJSON_GetObjectItem(j, "reason")),
				"/none-status: No such file or directory"));
		cJSON_Delete(j);
	}
	free(out);
	/* A configuration that does not load: unhealthy, its first error as the one line. */
	free(missing);
	missing = fbh_strdupf("%s/bad.yaml", edge.dir);
	fbh_write_file(missing, "site_id: site-A\nbogus: 1\n", 0600);
	ck_assert_int_eq(cli_health(missing, NULL, &out), 1);
	ck_assert_msg(strncmp(out, "unhealthy: bad.yaml:2: bogus: unknown key", 41) == 0
			&& strchr(out, '\n') == out + strlen(out) - 1, "%s", out);
	free(out);
	ck_assert_int_eq(cli_health(missing, "--json", &out), 1);
	{
		cJSON *j = cJSON_Parse(out);

		ck_assert_msg(j != NULL, "not JSON: %s", out);
		ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(j, "healthy")));
		ck_assert_msg(!strncmp(cJSON_GetStringValue(cJSON_GetObjectItem(j, "reason")),
				"unhealthy: bad.yaml:2: bogus: unknown key", 41), "%s", out);
		cJSON_Delete(j);
	}
	free(out);
	/* A bad threshold is a usage error. */
	ck_assert_int_eq(cli_health(yaml, "soon", &out), 2);
	free(out);

	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	free(missing);
	free(yaml);
	free(spool);
	free(status);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cli");
	TCase *tc = fbh_tcase("spool");

	tcase_add_test(tc, test_spool_of_a_running_edge_is_a_snapshot_and_changes_no_byte);
	tcase_add_test(tc, test_spool_refuses_a_missing_folder_and_creates_nothing);
	tcase_add_test(tc, test_spool_refuses_a_foreign_folder_and_leaves_it_byte_identical);
	tcase_add_test(tc, test_health_is_healthy_while_connected_and_unhealthy_past_the_threshold);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
