/* flowmq-bridge: the command-line companion of the plugin; its own process, one thread.
 *
 *   flowmq-bridge check [--json] [--connect] FILE  validate a configuration exactly as the plugin
 *                                                  does; --connect also tries every endpoint
 *   flowmq-bridge route [--json] FILE TOPIC        which rule a local topic hits (a dry run)
 *   flowmq-bridge spool [--json] PATH              show what a spool holds; reads it only
 *
 * Each command is in its own file (cli/NAME.c); this file dispatches and holds the options and
 * output helpers they share (cli.h).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#ifndef FB_VERSION
#define FB_VERSION "unknown"
#endif

static const struct cli_cmd *const commands[] = { &cli_check, &cli_route, &cli_spool };
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

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

static void print_usage_line(FILE *f, const struct cli_cmd *cmd)
{
	fprintf(f, "usage: flowmq-bridge %s %s\n", cmd->name, cmd->args);
}

int cli_usage_error(const struct cli_cmd *cmd, const char *what)
{
	fprintf(stderr, "flowmq-bridge %s: %s\n", cmd->name, what);
	print_usage_line(stderr, cmd);
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
				print_usage_line(stdout, cmd);
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

static void print_help(FILE *f)
{
	fprintf(f, "usage: flowmq-bridge COMMAND [OPTIONS] ARGS...\n"
			"       flowmq-bridge --version | --help\n\n"
			"The command-line companion of the flowmq-bridge Mosquitto plugin.\n\nCommands:\n");
	for(size_t i = 0; i < NCOMMANDS; i++){
		fprintf(f, "  %-7s %s\n", commands[i]->name, commands[i]->summary);
	}
	fprintf(f, "\nEvery command takes --help, and --json to print its result as JSON.\n"
			"'flowmq-bridge COMMAND --help' describes one.\n");
}

int main(int argc, char **argv)
{
	if(argc < 2){
		fprintf(stderr, "flowmq-bridge: missing command\n");
		print_help(stderr);
		return CLI_EXIT_USAGE;
	}
	if(!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")){
		printf("flowmq-bridge %s\n", FB_VERSION);
		return CLI_EXIT_OK;
	}
	if(!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")){
		print_help(stdout);
		return CLI_EXIT_OK;
	}
	for(size_t i = 0; i < NCOMMANDS; i++){
		if(!strcmp(argv[1], commands[i]->name)){
			return commands[i]->run(commands[i], argc - 1, argv + 1);
		}
	}
	fprintf(stderr, "flowmq-bridge: unknown command '%s'\nTry 'flowmq-bridge --help'.\n", argv[1]);
	return CLI_EXIT_USAGE;
}
