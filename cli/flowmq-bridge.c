/* flowmq-bridge: the command-line companion of the plugin; its own process, one thread.
 *
 *   flowmq-bridge check CONFIG.yaml     validate a configuration exactly as the plugin does
 *   flowmq-bridge spool PATH            show what a spool holds; reads it only, never changes
 *                                       it, also while the broker runs (then: a snapshot)
 *   flowmq-bridge health PATH|CONFIG [--max-disconnected 5m]
 *                                       exit 0 when the bridge is connected or disconnected for
 *                                       less than the threshold, 1 otherwise; one line says why
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "config.h"
#include "log.h"
#include "record.h"
#include "spool.h"
#include "statusfile.h"

static void log_stderr(void *ud, int level, const char *line)
{
	(void)ud;
	fprintf(stderr, "%s%s\n", level == MOSQ_LOG_ERR ? "error: " : level == MOSQ_LOG_WARNING ? "warning: " : "", line);
}

static const struct fb_logger lg = { log_stderr, NULL };

static int cmd_check(const char *file)
{
	struct fb_config *cfg;

	if(fb_config_load(file, &lg, &cfg) < 0){
		return 1;
	}
	printf("%s: OK: site %s, %zu endpoint(s), %zu edge_to_cloud and %zu cloud_to_edge rules, spool %s\n",
			file, cfg->site_id, cfg->cloud.endpoint_count, cfg->e2c_count, cfg->c2e_count, cfg->spool.path);
	fb_config_free(cfg);
	return 0;
}

static int cmd_spool(const char *path)
{
	struct fb_spool_stats st;
	pid_t holder;

	if(fb_spool_inspect(path, &lg, &st, &holder) < 0){
		return 1; /* fb_spool_inspect() has said why */
	}
	printf("out: %llu messages, %llu bytes, oldest seq %llu\nin: %llu messages\ndead letters: %llu\n",
			(unsigned long long)st.messages, (unsigned long long)st.bytes,
			(unsigned long long)st.first_seq, (unsigned long long)st.in, (unsigned long long)st.dead);
	if(holder > 0){
		printf("snapshot: the spool is in use by a running link process (pid %ld); "
				"the figures change as it runs\n", (long)holder);
	}else if(holder < 0){
		printf("snapshot: the spool is in use by a running link process; "
				"the figures change as it runs\n");
	}
	return 0;
}

/* The first error of a configuration health cannot load, as its one line. */
static void log_errors(void *ud, int level, const char *line)
{
	bool *said = ud;

	if(level == MOSQ_LOG_ERR && !*said){
		fprintf(stdout, "unhealthy: %s\n", line);
		*said = true;
	}
}

/* The status file that ARG names: itself (a file that starts like one), that of a spool folder, or
 * that of the spool of a configuration file. Caller frees; NULL after printing why. */
static char *health_status_path(const char *arg)
{
	bool said = false;
	const struct fb_logger quiet = { log_errors, &said };
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
		return NULL; /* said why */
	}
	path = fb_statusfile_path(cfg->spool.path);
	fb_config_free(cfg);
	return path;
}

static int cmd_health(const char *arg, const char *max_down)
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
	if((path = health_status_path(arg)) == NULL){
		return 1;
	}
	rc = fb_statusfile_read(path, &sf);
	if(rc < 0){
		printf("unhealthy: cannot read the status file %s: %s\n", path,
				rc == -EPROTO ? "not a status file" : strerror(-rc));
		free(path);
		return 1;
	}
	free(path);
	ok = fb_statusfile_healthy(&sf, fb_wall_ms(), max_ms, why, sizeof(why));
	printf("%s\n", why);
	return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
	if(argc >= 3 && !strcmp(argv[1], "health")){
		if(argc == 3){
			return cmd_health(argv[2], NULL);
		}
		if(argc == 5 && !strcmp(argv[3], "--max-disconnected")){
			return cmd_health(argv[2], argv[4]);
		}
		if(argc == 4 && !strncmp(argv[3], "--max-disconnected=", 19)){
			return cmd_health(argv[2], argv[3] + 19);
		}
	}
	if(argc == 3 && !strcmp(argv[1], "check")){
		return cmd_check(argv[2]);
	}
	if(argc == 3 && !strcmp(argv[1], "spool")){
		return cmd_spool(argv[2]);
	}
	fprintf(stderr, "usage: flowmq-bridge check CONFIG.yaml\n       flowmq-bridge spool PATH\n"
			"       flowmq-bridge health SPOOL|STATUS-FILE|CONFIG.yaml [--max-disconnected 5m]\n");
	return 2;
}
