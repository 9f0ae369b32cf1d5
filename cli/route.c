/* flowmq-bridge route: which edge_to_cloud rule a local topic hits, as a dry run (the
 * flowmq-bridge process, its one thread). The lookup is the plugin's own (common/route.c), on a
 * table built from the file as the plugin builds it; what a forwarded message carries (QoS,
 * retain, user properties) follows broker/bridge.c's capture. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "config.h"
#include "record.h"
#include "route.h"

#define ROUTE_EXIT_NOT_FORWARDED 3

static void add_header(cJSON *arr, const char *name, const char *value)
{
	cJSON *h = cJSON_CreateObject();

	cJSON_AddStringToObject(h, "name", name);
	cJSON_AddStringToObject(h, "value", value);
	cJSON_AddItemToArray(arr, h);
}

/* RC and RES from fb_route_match(); prints (or fills J with) the answer, returns the exit code. */
static int route_report(const struct fb_config *cfg, const char *topic, int rc,
		const struct fb_route_result *res, cJSON *j)
{
	const struct fb_e2c_rule *r = rc == 0 ? NULL : &cfg->e2c[res->rule];
	const char *outcome = rc == 0 ? "no_rule" : rc < 0 ? "invalid_cloud_topic" : res->drop ? "dropped" : "forwarded";

	if(j){
		cJSON_AddStringToObject(j, "topic", topic);
		cJSON_AddStringToObject(j, "outcome", outcome);
		cJSON_AddBoolToObject(j, "forwarded", r && rc > 0 && !res->drop);
		if(r == NULL){
			cJSON_AddNullToObject(j, "rule");
		}else{
			cJSON *o = cJSON_AddObjectToObject(j, "rule"), *hs;

			cJSON_AddNumberToObject(o, "index", res->rule);
			cJSON_AddNumberToObject(o, "line", r->line);
			cJSON_AddStringToObject(o, "local", r->local);
			if(r->drop){
				cJSON_AddNullToObject(o, "cloud");
			}else{
				cJSON_AddStringToObject(o, "cloud", r->cloud);
			}
			cJSON_AddBoolToObject(o, "drop", r->drop);
			if(rc > 0 && !res->drop){
				cJSON_AddStringToObject(j, "cloud_topic", res->topic);
				cJSON_AddNumberToObject(j, "qos", r->qos);
				cJSON_AddStringToObject(j, "retain", r->retain_clear ? "clear" : "keep");
				hs = cJSON_AddArrayToObject(j, "headers");
				for(size_t h = 0; h < r->header_count; h++){
					add_header(hs, r->headers[h].name, r->headers[h].value);
				}
				add_header(hs, FB_ORIGIN_PROPERTY, cfg->site_id);
			}
		}
	}else if(r == NULL){
		printf("%s: no edge_to_cloud rule matches; not forwarded\n", topic);
	}else{
		printf("%s\n  rule:        edge_to_cloud[%d], line %u: %s -> %s\n", topic, res->rule, r->line,
				r->local, r->drop ? "drop" : r->cloud);
		if(rc < 0){
			printf("  not forwarded: the rule makes an invalid cloud topic of it "
					"(empty, or longer than 65535 bytes)\n");
		}else if(res->drop){
			printf("  not forwarded: the rule drops it\n");
		}else{
			printf("  cloud topic: %s\n  qos:         %d\n  retain:      %s\n", res->topic, r->qos,
					r->retain_clear ? "cleared" : "kept as published");
			for(size_t h = 0; h < r->header_count; h++){
				printf("  header:      %s: %s\n", r->headers[h].name, r->headers[h].value);
			}
			printf("  header:      %s: %s\n", FB_ORIGIN_PROPERTY, cfg->site_id);
		}
	}
	return r && rc > 0 && !res->drop ? CLI_EXIT_OK : ROUTE_EXIT_NOT_FORWARDED;
}

static int route_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct fb_config *cfg = NULL;
	struct fb_routes *routes = NULL;
	struct fb_route_result res = { 0 };
	const char *file, *topic, *why = NULL;
	bool json;
	int rc, arg = cli_options(cmd, argc, argv, 2, &json, NULL, &rc);
	cJSON *j = NULL;

	if(arg < 0){
		return rc;
	}
	file = argv[arg];
	topic = argv[arg + 1];
	if(fb_route_check_topic(topic, FB_TOPIC_PUBLISH, &why) < 0){
		fprintf(stderr, "error: %s: not a topic a client can publish to: %s\n", topic, why);
		return CLI_EXIT_FAIL;
	}
	if(fb_config_load(file, &cli_stderr_logger, &cfg) < 0){
		return CLI_EXIT_FAIL;
	}
	rc = fb_routes_build(cfg, &routes);
	if(rc < 0){
		fprintf(stderr, "error: %s: cannot compile the routes: %s\n", file, strerror(-rc));
		fb_config_free(cfg);
		return CLI_EXIT_FAIL;
	}
	rc = fb_route_match(routes, FB_ROUTE_E2C, topic, &res);
	if(rc == -ENOMEM){
		fprintf(stderr, "error: out of memory\n");
		rc = CLI_EXIT_FAIL;
		goto out;
	}
	if(json && (j = cJSON_CreateObject()) == NULL){
		fprintf(stderr, "error: out of memory\n");
		rc = CLI_EXIT_FAIL;
		goto out;
	}
	rc = route_report(cfg, topic, rc, &res, j);
	if(j && cli_json_print(j) < 0){
		rc = CLI_EXIT_FAIL;
	}
out:
	free(res.topic);
	fb_routes_free(routes);
	fb_config_free(cfg);
	return rc;
}

const struct cli_cmd cli_route = {
	.name = "route",
	.args = "[--json] FILE TOPIC",
	.summary = "show which edge_to_cloud rule a local topic hits (dry run)",
	.help =
		"Loads FILE as the plugin does and looks the local topic TOPIC up in its edge_to_cloud\n"
		"rules with the plugin's own route engine (the first matching rule in file order wins).\n"
		"Prints the rule (index, line, filter and template), and for a forwarded topic the cloud\n"
		"topic, the QoS towards the cloud, the retain handling and the user properties added\n"
		"(the rule's headers, then flowmq-bridge-origin). Nothing is connected or published.\n"
		"\n"
		"Exit status: 0 the topic is forwarded, 3 it is not (no rule matches, a drop rule, or the\n"
		"rule makes an invalid cloud topic of it), 1 a bad FILE or TOPIC, 2 a usage error.\n"
		"\n"
		"Options:\n"
		"  --json   print the answer as a JSON object (topic, outcome: forwarded | dropped |\n"
		"           no_rule | invalid_cloud_topic, rule, cloud_topic, qos, retain, headers)\n"
		"  --help   this text\n",
	.run = route_run,
};
