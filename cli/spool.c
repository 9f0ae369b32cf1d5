/* flowmq-bridge spool: what a spool holds (the flowmq-bridge process, its one thread). Reads the
 * spool only, never changes it, also while the broker runs (then: a snapshot). */
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "cli.h"
#include "spool.h"

static int spool_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct fb_spool_stats st;
	struct fb_logger lg = cli_stderr_logger;
	cJSON *j, *o, *msgs = NULL;
	pid_t holder;
	bool json;
	int rc, arg;

	if(argc > 1 && !strcmp(argv[1], "peek")){
		return cli_spool_peek.run(&cli_spool_peek, argc - 1, argv + 1);
	}
	if(argc > 1 && !strcmp(argv[1], "dead")){
		return cli_spool_dead.run(&cli_spool_dead, argc - 1, argv + 1);
	}
	if(argc > 1 && !strcmp(argv[1], "requeue-dead")){
		return cli_spool_requeue_dead.run(&cli_spool_requeue_dead, argc - 1, argv + 1);
	}
	if(argc > 1 && !strcmp(argv[1], "purge-dead")){
		return cli_spool_purge_dead.run(&cli_spool_purge_dead, argc - 1, argv + 1);
	}
	arg = cli_options(cmd, argc, argv, 1, &json, NULL, &rc);
	if(arg < 0){
		return rc;
	}
	if(json){
		msgs = cJSON_CreateArray();
		if(msgs == NULL){
			fprintf(stderr, "error: out of memory\n");
			return CLI_EXIT_FAIL;
		}
		lg = (struct fb_logger){ cli_log_json, msgs };
	}
	rc = fb_spool_inspect(argv[arg], &lg, &st, &holder) < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
	if(!json){
		if(rc != CLI_EXIT_OK){
			return rc; /* fb_spool_inspect() has said why */
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
		return rc;
	}
	j = cJSON_CreateObject();
	if(j == NULL){
		cJSON_Delete(msgs);
		fprintf(stderr, "error: out of memory\n");
		return CLI_EXIT_FAIL;
	}
	cJSON_AddStringToObject(j, "path", argv[arg]);
	cJSON_AddBoolToObject(j, "readable", rc == CLI_EXIT_OK);
	if(rc == CLI_EXIT_OK){
		o = cJSON_AddObjectToObject(j, "out");
		cJSON_AddNumberToObject(o, "messages", (double)st.messages);
		cJSON_AddNumberToObject(o, "bytes", (double)st.bytes);
		cJSON_AddNumberToObject(o, "oldest_seq", (double)st.first_seq);
		o = cJSON_AddObjectToObject(j, "in");
		cJSON_AddNumberToObject(o, "messages", (double)st.in);
		cJSON_AddNumberToObject(j, "dead_letters", (double)st.dead);
		cJSON_AddBoolToObject(j, "in_use", holder != 0);
		if(holder > 0){
			cJSON_AddNumberToObject(j, "link_pid", (double)holder);
		}else{
			cJSON_AddNullToObject(j, "link_pid");
		}
	}
	cJSON_AddItemToObject(j, "diagnostics", msgs);
	return cli_json_print(j) < 0 ? CLI_EXIT_FAIL : rc;
}

const struct cli_cmd cli_spool = {
	.name = "spool",
	.args = "[--json] PATH",
	.summary = "show what a spool holds (read-only, also while the broker runs)",
	.help =
		"Prints the records waiting for the cloud (count, bytes, oldest sequence number), the cloud\n"
		"messages not yet delivered to the edge, and the dead letters of the spool folder PATH.\n"
		"It never changes a byte of the folder; while a link process has the spool open the\n"
		"figures are a snapshot. Exit status 0, or 1 when the spool cannot be read.\n"
		"\n"
		"Options:\n"
		"  --json   print the figures as a JSON object (out, in, dead_letters, in_use, link_pid,\n"
		"           diagnostics: the errors)\n"
		"  --help   this text\n"
		"\n"
		"Subcommands (each with its own --help):\n"
		"  spool peek [--json] [-n N] PATH   the oldest N records in send order\n"
		"  spool dead [--json] PATH          the dead letters with their reason codes\n"
		"  spool requeue-dead [--json] PATH  queue the dead letters again (broker stopped)\n"
		"  spool purge-dead [--json] PATH    remove the dead letters (broker stopped)\n",
	.run = spool_run,
};
