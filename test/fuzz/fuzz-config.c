/* libFuzzer target (test/fuzz, runs in the fuzzer process): the configuration loader.
 *
 * Each input is written to a file (the loader reads a path) and loaded with fb_config_load(); a
 * configuration that loads is compiled into routes as the plugin would. Every log line is formatted
 * (a logger that reads it) so that formatting of hostile values is exercised. The loader must
 * accept or refuse, never crash, leak or read out of bounds; a refusal must log an error and leave
 * *out NULL, an acceptance must log no error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "route.h"

static char path[64];
static int errors;

static void logline(void *ud, int level, const char *line)
{
	volatile size_t n = strlen(line); /* reads every byte of the formatted line */

	(void)n;
	if(level == MOSQ_LOG_ERR){
		errors++;
	}
}

static const struct fb_logger lg = { logline, NULL };

static char dir_path[64];

/* Leaves nothing behind in /tmp. */
static void cleanup(void)
{
	unlink(path);
	rmdir(dir_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	char dir[] = "/tmp/fb-fuzz-config-XXXXXX";

	/* A folder of its own, so that relative file names in the input (password_file: x) find
	 * nothing but the configuration itself. */
	if(mkdtemp(dir) == NULL){
		perror("mkdtemp");
		abort();
	}
	snprintf(path, sizeof(path), "%s/cfg.yaml", dir);
	snprintf(dir_path, sizeof(dir_path), "%s", dir);
	atexit(cleanup);
	if(chdir(dir) != 0){
		perror("chdir");
		abort();
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fb_config *cfg = (struct fb_config *)1;
	struct fb_routes *routes = NULL;
	int fd, rc;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if(fd < 0 || (size && write(fd, data, size) != (ssize_t)size)){
		perror(path);
		abort();
	}
	close(fd);
	errors = 0;
	rc = fb_config_load(path, &lg, &cfg);
	if(rc < 0){
		if(cfg != NULL || (rc != -ENOMEM && errors == 0)){
			fprintf(stderr, "refused (%d) with out=%p and %d error lines\n", rc, (void *)cfg, errors);
			abort();
		}
		return 0;
	}
	if(rc != 0 || cfg == NULL || errors != 0){
		fprintf(stderr, "loaded (%d) with out=%p and %d error lines\n", rc, (void *)cfg, errors);
		abort();
	}
	/* A valid configuration compiles (its rules passed the same checks). */
	rc = fb_routes_build(cfg, &routes);
	if(rc != 0 && rc != -ENOMEM){
		fprintf(stderr, "a configuration that loaded does not compile: %d\n", rc);
		abort();
	}
	if(routes != NULL){
		struct fb_route_result res;
		for(size_t i = 0; i < cfg->e2c_count; i++){
			/* A rule's filter without wildcards, used as a topic, matches that rule or an
			 * earlier one. */
			if(fb_topic_publish_check(cfg->e2c[i].local) != 0){
				continue;
			}
			memset(&res, 0, sizeof(res));
			rc = fb_route_match(routes, FB_ROUTE_E2C, cfg->e2c[i].local, &res);
			if(rc == 1){
				free(res.topic);
			}
			if((rc != 1 && rc != -EINVAL && rc != -ENOMEM) || (rc != -ENOMEM && res.rule > (int)i)){
				fprintf(stderr, "rule %zu '%s' does not match itself: %d, rule %d\n", i,
						cfg->e2c[i].local, rc, res.rule);
				abort();
			}
		}
	}
	fb_routes_free(routes);
	fb_config_free(cfg);
	return 0;
}
