/* flowmq-bridge health: whether the bridge is connected, from the status file the link process
 * rewrites every status_interval (no broker connection needed); for a container's HEALTHCHECK.
 * The flowmq-bridge process, its one thread. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "cli.h"
#include "config.h"
#include "log.h"
#include "record.h"
#include "statusfile.h"

/* The first error line of loading the configuration: why it is unhealthy. */
struct first_error {
	char line[1024];
};

static void log_errors(void *ud, int level, const char *line)
{
	struct first_error *fe = ud;

	if(level == MOSQ_LOG_ERR && fe->line[0] == '\0'){
		snprintf(fe->line, sizeof(fe->line), "%s", line);
	}
}

/* Prints the verdict OK with WHY (a line, or {"healthy", "reason"} with JSON); returns the exit
 * code. */
static int verdict(bool ok, const char *why, bool json)
{
	if(json){
		cJSON *j = cJSON_CreateObject();

		if(j == NULL || !cJSON_AddBoolToObject(j, "healthy", ok) || !cJSON_AddStringToObject(j, "reason", why)){
			cJSON_Delete(j);
			fprintf(stderr, "error: out of memory\n");
			return 1;
		}
		cli_json_print(j);
	}else{
		printf("%s\n", why);
	}
	return ok ? 0 : 1;
}

/* The status file that ARG names: itself (a file that starts like one), that of a spool folder, or
 * that of the spool of a configuration file. Caller frees; NULL with the reason in WHY. */
static char *health_status_path(const char *arg, char *why, size_t size)
{
	struct first_error fe = { "" };
	const struct fb_logger quiet = { log_errors, &fe };
	struct fb_config *cfg;
	char head[sizeof(FB_STATUSFILE_MAGIC)] = "";
	struct stat st;
	char *path;
	FILE *f;

	if(stat(arg, &st) == 0 && S_ISDIR(st.st_mode)){
		return fb_statusfile_path(arg);
	}
	if((f = fopen(arg, "re")) != NULL){
		size_t n = fread(head, 1, sizeof(head) - 1, f);
		head[n] = '\0';
		fclose(f);
		if(!strcmp(head, FB_STATUSFILE_MAGIC)){
			return strdup(arg);
		}
	}
	if(fb_config_load(arg, &quiet, &cfg) < 0){
		snprintf(why, size, "unhealthy: %s", fe.line[0] ? fe.line : "cannot load the configuration");
		return NULL;
	}
	path = fb_statusfile_path(cfg->spool.path);
	fb_config_free(cfg);
	return path;
}

static int cmd_health(const char *arg, const char *max_down, bool json)
{
	struct fb_statusfile sf;
	uint64_t max_ms = 5 * 60 * 1000;
	char why[1024], *path;
	bool ok;
	int rc;

	if(max_down && fb_parse_duration_ms(max_down, &max_ms) < 0){
		fprintf(stderr, "flowmq-bridge health: --max-disconnected: invalid duration '%s' (e.g. 30s, 5m)\n", max_down);
		return 2;
	}
	if((path = health_status_path(arg, why, sizeof(why))) == NULL){
		return verdict(false, why, json);
	}
	rc = fb_statusfile_read(path, &sf);
	if(rc < 0){
		snprintf(why, sizeof(why), "unhealthy: cannot read the status file %s: %s", path,
				rc == -EPROTO ? "not a status file" : strerror(-rc));
		free(path);
		return verdict(false, why, json);
	}
	free(path);
	ok = fb_statusfile_healthy(&sf, fb_wall_ms(), max_ms, why, sizeof(why));
	return verdict(ok, why, json);
}

static int health_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	const char *arg = NULL, *max_down = NULL;
	bool json = false;

	for(int i = 1; i < argc; i++){
		if(!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")){
			cli_print_usage(stdout, cmd);
			printf("\n%s", cmd->help);
			return CLI_EXIT_OK;
		}else if(!strcmp(argv[i], "--json")){
			json = true;
		}else if(!strcmp(argv[i], "--max-disconnected")){
			if(i + 1 >= argc){
				return cli_usage_error(cmd, "--max-disconnected needs a duration (e.g. 5m)");
			}
			max_down = argv[++i];
		}else if(!strncmp(argv[i], "--max-disconnected=", 19)){
			max_down = argv[i] + 19;
		}else if(argv[i][0] == '-' && argv[i][1] != '\0'){
			char what[128];

			snprintf(what, sizeof(what), "unknown option '%s'", argv[i]);
			return cli_usage_error(cmd, what);
		}else if(arg == NULL){
			arg = argv[i];
		}else{
			return cli_usage_error(cmd, "one PATH or CONFIG only");
		}
	}
	if(arg == NULL){
		return cli_usage_error(cmd, "missing PATH or CONFIG");
	}
	return cmd_health(arg, max_down, json);
}

const struct cli_cmd cli_health = {
	.name = "health",
	.args = "[--json] [--max-disconnected DURATION] SPOOL|STATUS-FILE|CONFIG",
	.summary = "exit 0 when the bridge is connected or disconnected for less than a threshold",
	.help =
		"Reads the status file that the link process rewrites every status_interval (beside the\n"
		"spool folder: SPOOL-status), named directly, through its spool folder, or through the\n"
		"configuration's spool.path. No broker connection is needed: for a HEALTHCHECK.\n"
		"\n"
		"Exit status: 0 healthy (connected, or disconnected for less than the threshold), 1\n"
		"unhealthy (also when the status file is missing or stale), 2 a usage error. One line says\n"
		"why.\n"
		"\n"
		"Options:\n"
		"  --max-disconnected DURATION   the threshold (default 5m; e.g. 30s, 10m)\n"
		"  --json                        print {\"healthy\": ..., \"reason\": ...}\n"
		"  --help                        this text\n",
	.run = health_run,
};
