/* flowmq-bridge check: validates a configuration as the plugin does (the flowmq-bridge process,
 * its one thread). */
#include <stdio.h>

#include "cli.h"
#include "config.h"
#include "connect.h"

static int check_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	struct fb_config *cfg = NULL;
	cJSON *j = NULL, *msgs = NULL, *eps;
	struct fb_logger lg = cli_stderr_logger;
	bool json, connect;
	int rc, arg = cli_options(cmd, argc, argv, 1, &json, &connect, &rc);
	const char *file;

	if(arg < 0){
		return rc;
	}
	file = argv[arg];
	if(json){
		j = cJSON_CreateObject();
		msgs = cJSON_CreateArray();
		if(j == NULL || msgs == NULL){
			cJSON_Delete(j);
			cJSON_Delete(msgs);
			fprintf(stderr, "error: out of memory\n");
			return CLI_EXIT_FAIL;
		}
		lg = (struct fb_logger){ cli_log_json, msgs };
	}
	rc = fb_config_load(file, &lg, &cfg) < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
	if(!json){
		if(rc == CLI_EXIT_OK){
			printf("%s: OK: site %s, %zu endpoint(s), %zu edge_to_cloud and %zu cloud_to_edge rules, spool %s\n",
					file, cfg->site_id, cfg->cloud.endpoint_count, cfg->e2c_count, cfg->c2e_count,
					cfg->spool.path);
			if(connect && connect_check(cfg, NULL) <= 0){
				rc = CLI_EXIT_FAIL;
			}
		}
		fb_config_free(cfg);
		return rc;
	}
	cJSON_AddStringToObject(j, "file", file);
	cJSON_AddBoolToObject(j, "valid", rc == CLI_EXIT_OK);
	if(cfg){
		cJSON_AddStringToObject(j, "site_id", cfg->site_id);
		eps = cJSON_AddArrayToObject(j, "endpoints");
		for(size_t i = 0; eps && i < cfg->cloud.endpoint_count; i++){
			cJSON_AddItemToArray(eps, cJSON_CreateString(cfg->cloud.endpoints[i].url));
		}
		cJSON_AddNumberToObject(j, "edge_to_cloud_rules", (double)cfg->e2c_count);
		cJSON_AddNumberToObject(j, "cloud_to_edge_rules", (double)cfg->c2e_count);
		cJSON_AddStringToObject(j, "spool_path", cfg->spool.path);
		if(connect){
			cJSON *c = cJSON_AddObjectToObject(j, "connect");

			if(c == NULL || connect_check(cfg, c) <= 0){
				rc = CLI_EXIT_FAIL;
			}
		}
	}
	cJSON_AddItemToObject(j, "diagnostics", msgs);
	fb_config_free(cfg);
	return cli_json_print(j) < 0 ? CLI_EXIT_FAIL : rc;
}

const struct cli_cmd cli_check = {
	.name = "check",
	.args = "[--json] [--connect] FILE",
	.summary = "validate a configuration file exactly as the plugin loads it",
	.help =
		"Loads FILE as the plugin does (defaults, ${site_id}, every check) and prints a summary,\n"
		"or each problem as FILE:LINE: KEY: what is wrong. Exit status 0 when it is valid, 1 when not.\n"
		"\n"
		"With --connect it then tries every cloud endpoint as the link process would, step by\n"
		"step, each with its result and time: resolve (the host name), tcp (connect), tls (the\n"
		"handshake with the configured CA, client certificate and minimum version: negotiated\n"
		"version and cipher, the server certificate's subject, issuer and expiry, the host-name\n"
		"check) and mqtt (an MQTT v5 CONNECT with the configured user name and password, as client\n"
		"id <cloud.client_id>-check with a clean start, so the running bridge's session is left\n"
		"alone). A certificate (the server's or tls.cert_file) that expires within 30 days is\n"
		"warned about. Exit status 1 when no endpoint passes every step.\n"
		"\n"
		"Options:\n"
		"  --connect  also connect to every endpoint (above)\n"
		"  --json     print the result as a JSON object (valid, site_id, endpoints, rule counts,\n"
		"             spool_path, diagnostics: the errors and warnings; with --connect, connect:\n"
		"             endpoints with their steps, warnings, passed)\n"
		"  --help     this text\n",
	.run = check_run,
};
