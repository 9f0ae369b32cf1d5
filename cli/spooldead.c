/* flowmq-bridge spool requeue-dead / spool purge-dead: the dead letters of a stopped spool sent
 * again or removed (the flowmq-bridge process, its one thread). They open the spool as the link
 * process does (its lock held meanwhile) and refuse a spool that a running link process holds. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "cli.h"
#include "record.h"
#include "session.h"
#include "spool.h"

#define DEAD_BATCH 256

/* The dead letters read so far, as copies. */
struct dead_batch {
	struct {
		uint64_t seq;
		uint8_t *val;
		size_t len;
	} r[DEAD_BATCH];
	size_t n;
	uint64_t last;
	int err;
};

static int dead_collect(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct dead_batch *b = ud;

	b->r[b->n].val = malloc(len ? len : 1);
	if(b->r[b->n].val == NULL){
		b->err = -ENOMEM;
		return 1;
	}
	memcpy(b->r[b->n].val, val, len);
	b->r[b->n].seq = seq;
	b->r[b->n].len = len;
	b->n++;
	b->last = seq;
	return 0;
}

static void dead_batch_clear(struct dead_batch *b)
{
	for(size_t i = 0; i < b->n; i++){
		free(b->r[i].val);
	}
	b->n = 0;
}

/* The record a dead letter VAL (LEN bytes) becomes when queued again (caller frees): without its
 * reason property, captured now (spool.ttl counts from the requeue; an absolute expiry stays).
 * An unreadable record is queued again as it is. */
static uint8_t *requeued(const uint8_t *val, size_t len, size_t *out_len)
{
	struct fb_record r;
	uint8_t *props = NULL, *buf;

	if(fb_record_decode(val, len, &r) != 0){
		buf = malloc(len ? len : 1);
		if(buf){
			memcpy(buf, val, len);
			*out_len = len;
		}
		return buf;
	}
	if(r.props_len){
		props = malloc(r.props_len);
		if(props == NULL){
			return NULL;
		}
		memcpy(props, r.props, r.props_len);
		r.props_len = fb_props_remove_user(props, r.props_len, FB_DEAD_REASON_PROPERTY);
		r.props = props;
	}
	r.enqueue_ms = fb_wall_ms();
	*out_len = fb_record_size(&r);
	buf = malloc(*out_len);
	if(buf){
		fb_record_encode(&r, buf);
	}
	free(props);
	return buf;
}

/* Requeues (REQUEUE) or purges every dead letter of PATH. */
static int dead_run(const struct cli_cmd *cmd, int argc, char **argv, bool requeue)
{
	struct fb_logger lg = cli_stderr_logger;
	struct fb_spool_stats st;
	struct fb_spool_opts o = { 0 };
	struct fb_spool *s = NULL;
	struct dead_batch *b;
	struct fb_spool_del del[DEAD_BATCH];
	cJSON *j, *msgs = NULL;
	uint64_t done = 0, seq;
	size_t len;
	uint8_t *val;
	pid_t holder;
	bool json;
	int rc, arg = cli_options(cmd, argc, argv, 1, &json, NULL, &rc);

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
	/* The read-only look first: a folder that is no spool, or a damaged one, is refused
	 * unchanged (fb_spool_open() would move a damaged one aside). */
	rc = fb_spool_inspect(argv[arg], &lg, &st, &holder);
	if(rc == 0 && holder != 0){
		if(holder > 0){
			fb_log(&lg, MOSQ_LOG_ERR, "spool %s is in use by a running link process (pid %ld): stop "
					"the broker first; %s on a running broker is not supported yet, nothing changed",
					argv[arg], (long)holder, cmd->name + strlen("spool "));
		}else{
			fb_log(&lg, MOSQ_LOG_ERR, "spool %s is in use by a running link process: stop the broker "
					"first; %s on a running broker is not supported yet, nothing changed", argv[arg],
					cmd->name + strlen("spool "));
		}
		rc = -EBUSY;
	}
	if(rc == 0){
		o.path = argv[arg];
		o.on_full = FB_ON_FULL_REJECT;
		o.sync = FB_SYNC_ALWAYS;
		o.lg = &lg;
		rc = fb_spool_open(&o, &s);
		if(rc == -EBUSY){
			fb_log(&lg, MOSQ_LOG_ERR, "spool %s: a link process took it meanwhile; nothing changed",
					argv[arg]);
		}else if(rc < 0){
			fb_log(&lg, MOSQ_LOG_ERR, "cannot open spool %s: %s", argv[arg], strerror(-rc));
		}
	}
	b = rc == 0 ? calloc(1, sizeof(*b)) : NULL;
	if(rc == 0 && b == NULL){
		rc = -ENOMEM;
	}
	for(uint64_t after = 0; rc == 0; after = b->last){
		dead_batch_clear(b);
		rc = fb_spool_read(s, FB_Q_DEAD, after, DEAD_BATCH, dead_collect, b);
		if(rc >= 0 && b->err){
			rc = b->err;
		}
		if(rc <= 0){
			break;
		}
		rc = 0;
		for(size_t i = 0; rc == 0 && i < b->n; i++){
			if(requeue){
				/* To "out" first, then out of "dead": a crash in between sends it twice, never
				 * loses it. */
				val = requeued(b->r[i].val, b->r[i].len, &len);
				rc = val ? fb_spool_append(s, FB_Q_OUT, val, len, &seq, NULL) : -ENOMEM;
				free(val);
				if(rc == 0){
					rc = fb_spool_delete(s, FB_Q_DEAD, b->r[i].seq, b->r[i].len);
				}
				done += rc == 0;
			}else{
				del[i] = (struct fb_spool_del){ b->r[i].seq, b->r[i].len };
			}
		}
		if(!requeue && rc == 0){
			rc = fb_spool_delete_many(s, FB_Q_DEAD, del, b->n);
			done += rc == 0 ? b->n : 0;
		}
		if(rc < 0){
			fb_log(&lg, MOSQ_LOG_ERR, "spool %s: %s stopped after %llu dead letters: %s", argv[arg],
					cmd->name + strlen("spool "), (unsigned long long)done, strerror(-rc));
		}
	}
	if(b){
		dead_batch_clear(b);
		free(b);
	}
	if(s){
		if(rc == 0){
			rc = fb_spool_sync(s);
		}
		fb_spool_close(s);
	}
	if(!json){
		if(rc == 0){
			printf("%llu dead letter%s %s\n", (unsigned long long)done, done == 1 ? "" : "s",
					requeue ? "queued again for the cloud" : "removed");
		}
		return rc < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
	}
	j = cJSON_CreateObject();
	if(j == NULL){
		cJSON_Delete(msgs);
		fprintf(stderr, "error: out of memory\n");
		return CLI_EXIT_FAIL;
	}
	cJSON_AddStringToObject(j, "path", argv[arg]);
	cJSON_AddBoolToObject(j, "ok", rc == 0);
	cJSON_AddNumberToObject(j, requeue ? "requeued" : "purged", (double)done);
	cJSON_AddBoolToObject(j, "in_use", holder != 0);
	cJSON_AddItemToObject(j, "diagnostics", msgs);
	return cli_json_print(j) < 0 || rc < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

static int requeue_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	return dead_run(cmd, argc, argv, true);
}

static int purge_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	return dead_run(cmd, argc, argv, false);
}

const struct cli_cmd cli_spool_requeue_dead = {
	.name = "spool requeue-dead",
	.args = "[--json] PATH",
	.summary = "queue the dead letters of a stopped spool for the cloud again",
	.help =
		"Moves every dead letter of the spool folder PATH back to the queue for the cloud, in\n"
		"its lane, without its reason, as if captured now (spool.ttl counts again; a message\n"
		"expiry stays). Only while the broker is stopped: a spool that a running link process\n"
		"holds is refused and left unchanged (doing it on a running broker is not supported\n"
		"yet). A folder that is not a spool, or a damaged spool, is refused unchanged.\n"
		"Exit status 0, 1 when nothing could be done, 2 usage error.\n"
		"\n"
		"Options:\n"
		"  --json   print {path, ok, requeued, in_use, diagnostics}\n"
		"  --help   this text\n",
	.run = requeue_run,
};

const struct cli_cmd cli_spool_purge_dead = {
	.name = "spool purge-dead",
	.args = "[--json] PATH",
	.summary = "remove the dead letters of a stopped spool",
	.help =
		"Removes every dead letter of the spool folder PATH. Only while the broker is stopped:\n"
		"a spool that a running link process holds is refused and left unchanged (doing it on a\n"
		"running broker is not supported yet). A folder that is not a spool, or a damaged\n"
		"spool, is refused unchanged. Exit status 0, 1 when nothing could be done, 2 usage\n"
		"error.\n"
		"\n"
		"Options:\n"
		"  --json   print {path, ok, purged, in_use, diagnostics}\n"
		"  --help   this text\n",
	.run = purge_run,
};
