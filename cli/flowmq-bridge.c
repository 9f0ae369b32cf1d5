/* flowmq-bridge: the command-line companion of the plugin; its own process, one thread.
 *
 *   flowmq-bridge check [--json] [--connect] FILE  validate a configuration exactly as the plugin
 *                                                  does; --connect also tries every endpoint
 *   flowmq-bridge route [--json] FILE TOPIC        which rule a local topic hits (a dry run)
 *   flowmq-bridge spool [--json] PATH              show what a spool holds; reads it only
 *   flowmq-bridge spool peek|dead ... PATH         its oldest records, its dead letters; reads only
 *   flowmq-bridge spool requeue-dead|purge-dead PATH  the dead letters of a stopped spool
 *   flowmq-bridge health [--max-disconnected 5m] PATH|CONFIG
 *                                                  exit 0 when connected, or disconnected for less
 *                                                  than the threshold (a HEALTHCHECK)
 *
 * Each command is in its own file (cli/NAME.c); this file only dispatches. What the commands share
 * (options, usage errors, loggers, JSON output) is in cli/cli.c.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#ifndef FB_VERSION
#define FB_VERSION "unknown"
#endif

static const struct cli_cmd *const commands[] = { &cli_check, &cli_route, &cli_spool, &cli_health };
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

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
