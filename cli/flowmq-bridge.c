/* flowmq-bridge: the command-line companion of the plugin; its own process, one thread.
 *
 *   flowmq-bridge check CONFIG.yaml     validate a configuration exactly as the plugin does
 *   flowmq-bridge spool PATH            show what a spool holds; reads it only, never changes
 *                                       it, also while the broker runs (then: a snapshot)
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "config.h"
#include "log.h"
#include "spool.h"

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

int main(int argc, char **argv)
{
	if(argc == 3 && !strcmp(argv[1], "check")){
		return cmd_check(argv[2]);
	}
	if(argc == 3 && !strcmp(argv[1], "spool")){
		return cmd_spool(argv[2]);
	}
	fprintf(stderr, "usage: flowmq-bridge check CONFIG.yaml\n       flowmq-bridge spool PATH\n");
	return 2;
}
