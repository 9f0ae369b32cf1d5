/* flowmq-bridge: options, usage errors, loggers and JSON output the CLI's commands share (see
 * cli.h); the flowmq-bridge process, its one thread. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

static void log_stderr(void *ud, int level, const char *line)
{
	(void)ud;
	fprintf(stderr, "%s%s\n", level == MOSQ_LOG_ERR ? "error: " : level == MOSQ_LOG_WARNING ? "warning: " : "", line);
}

const struct fb_logger cli_stderr_logger = { log_stderr, NULL };

void cli_log_json(void *ud, int level, const char *line)
{
	cJSON *arr = ud;

	log_stderr(NULL, level, line);
	if(level == MOSQ_LOG_ERR || level == MOSQ_LOG_WARNING){
		cJSON *o = cJSON_CreateObject();

		if(o){
			cJSON_AddStringToObject(o, "level", level == MOSQ_LOG_ERR ? "error" : "warning");
			cJSON_AddStringToObject(o, "message", line);
			cJSON_AddItemToArray(arr, o);
		}
	}
}

int cli_json_print(cJSON *j)
{
	char *s = j ? cJSON_Print(j) : NULL;

	cJSON_Delete(j);
	if(s == NULL){
		fprintf(stderr, "error: out of memory\n");
		return -ENOMEM;
	}
	printf("%s\n", s);
	cJSON_free(s);
	return 0;
}

void cli_print_usage(FILE *f, const struct cli_cmd *cmd)
{
	fprintf(f, "usage: flowmq-bridge %s %s\n", cmd->name, cmd->args);
}

int cli_usage_error(const struct cli_cmd *cmd, const char *what)
{
	fprintf(stderr, "flowmq-bridge %s: %s\n", cmd->name, what);
	cli_print_usage(stderr, cmd);
	fprintf(stderr, "Try 'flowmq-bridge %s --help'.\n", cmd->name);
	return CLI_EXIT_USAGE;
}

int cli_options(const struct cli_cmd *cmd, int argc, char **argv, int nargs, bool *json, bool *connect,
		int *exit)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "json", no_argument, NULL, 'j' },
		{ "connect", no_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	char what[300];
	int c;

	optind = 1;
	opterr = 0;
	*json = false;
	if(connect){
		*connect = false;
	}
	while((c = getopt_long(argc, argv, "h", opts, NULL)) != -1){
		switch(c){
			case 'h':
				cli_print_usage(stdout, cmd);
				printf("%s\n\n%s", cmd->summary, cmd->help);
				*exit = CLI_EXIT_OK;
				return -1;
			case 'j':
				*json = true;
				break;
			case 'c':
				if(connect){
					*connect = true;
					break;
				}
				/* --connect is only an option of check */
				__attribute__((fallthrough));
			default:
				snprintf(what, sizeof(what), "unknown option '%s'", argv[optind - 1]);
				*exit = cli_usage_error(cmd, what);
				return -1;
		}
	}
	if(argc - optind != nargs){
		snprintf(what, sizeof(what), "expects %d argument%s, got %d", nargs, nargs == 1 ? "" : "s",
				argc - optind);
		*exit = cli_usage_error(cmd, what);
		return -1;
	}
	return optind;
}
