/* flowmq-bridge: what the CLI's commands share (the flowmq-bridge process, its one thread).
 *
 * Each command lives in its own file (cli/NAME.c) as a struct cli_cmd; cli/flowmq-bridge.c only
 * dispatches. Exit codes of every command: 0 success, 1 failure (a bad file, a spool that cannot
 * be read, no endpoint that passes), 2 usage error; `route` adds 3 (the topic is not forwarded).
 */
#ifndef FB_CLI_H
#define FB_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include <cJSON.h>

#include "log.h"

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2

struct cli_cmd {
	const char *name;
	const char *args;     /* e.g. "[--json] FILE TOPIC" */
	const char *summary;  /* one line, for `flowmq-bridge --help` */
	const char *help;     /* the rest of `flowmq-bridge NAME --help` */
	int (*run)(const struct cli_cmd *cmd, int argc, char **argv); /* argv[0] is NAME */
};

extern const struct cli_cmd cli_check, cli_spool, cli_route, cli_health;
/* The subcommands of spool (cli/spoolrecords.c), dispatched by cli/spool.c. */
extern const struct cli_cmd cli_spool_peek, cli_spool_dead;
/* The subcommands of spool that change it, while the broker is stopped (cli/spooldead.c). */
extern const struct cli_cmd cli_spool_requeue_dead, cli_spool_purge_dead;

/* Parses the options every command takes: --help/-h (prints the command's help, *EXIT = 0),
 * --json, and when CONNECT is not NULL --connect. Unknown options print a usage error (*EXIT =
 * 2). Returns the index of the first operand, or -1 with *EXIT set when the command is done.
 * NARGS operands are required: another count is a usage error. */
int cli_options(const struct cli_cmd *cmd, int argc, char **argv, int nargs, bool *json, bool *connect,
		int *exit);

/* Prints "usage: flowmq-bridge NAME ARGS" to F. */
void cli_print_usage(FILE *f, const struct cli_cmd *cmd);

/* Prints "flowmq-bridge NAME: WHAT" and the command's usage line to stderr; returns 2. */
int cli_usage_error(const struct cli_cmd *cmd, const char *what);

/* A logger printing to stderr ("error: ", "warning: " prefixes). */
extern const struct fb_logger cli_stderr_logger;

/* A logger that also appends each error and warning line to the cJSON array UD (--json). */
void cli_log_json(void *ud, int level, const char *line);

/* Prints J (pretty, then a newline) to stdout and frees it. Returns 0, or -ENOMEM. */
int cli_json_print(cJSON *j);

#endif
