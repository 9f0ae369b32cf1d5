/* flowmq-bridge spool requeue-dead / spool purge-dead: the dead letters of a spool sent again or
 * removed (the flowmq-bridge process, its one thread). On a stopped spool they open it as the link
 * process does (its lock held meanwhile); a spool that a running link process holds is changed by
 * that process, on request (ipc/request.h, link/control.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "chan.h"
#include "cli.h"
#include "control.h"
#include "record.h"
#include "request.h"
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

#define TIMEOUT_DEFAULT_S 60
#define WAIT_POLL_MS 500 /* a link process looks for requests as often */

/* Takes "--timeout N" / "--timeout=N" out of ARGV (*ARGC shrinks) into *SECONDS. Returns 0, or -1
 * after a usage error (*EXIT). */
static int timeout_option(const struct cli_cmd *cmd, int *argc, char **argv, unsigned *seconds, int *exit)
{
	char what[300];

	for(int i = 1; i < *argc; i++){
		const char *v = NULL;
		int used = 1;
		char *end;
		unsigned long n;

		if(strcmp(argv[i], "--") == 0){
			break;
		}
		if(strncmp(argv[i], "--timeout=", 10) == 0){
			v = argv[i] + 10;
		}else if(strcmp(argv[i], "--timeout") == 0){
			v = i + 1 < *argc ? argv[i + 1] : "";
			used = i + 1 < *argc ? 2 : 1;
		}else{
			continue;
		}
		errno = 0;
		n = strtoul(v, &end, 10);
		if(v[0] < '0' || v[0] > '9' || *end || errno || n < 1 || n > 3600){
			snprintf(what, sizeof(what), "--timeout: expects whole seconds from 1 to 3600, got '%s'", v);
			*exit = cli_usage_error(cmd, what);
			return -1;
		}
		*seconds = (unsigned)n;
		memmove(argv + i, argv + i + used, (size_t)(*argc - i - used + 1) * sizeof(*argv));
		*argc -= used;
		i--;
	}
	return 0;
}

/* The request to the running link process of PATH (holder HOLDER): posted, then its reply waited
 * for at most TIMEOUT_S. Returns 0 when done, or a negative errno after the reason was logged;
 * *DONE is what the link process did, UINT64_MAX when it cannot know (its request was interrupted
 * by the end of the link process that had claimed it). */
static int ask_link(const struct cli_cmd *cmd, const struct fb_logger *lg, const char *path, pid_t holder,
		bool requeue, unsigned timeout_s, uint64_t *done)
{
	const char *op = cmd->name + strlen("spool ");
	struct fb_request rq = { .op = requeue ? FB_REQUEST_REQUEUE_DEAD : FB_REQUEST_PURGE_DEAD, .pid = getpid() };
	struct fb_reply rp;
	char who[64];
	uint64_t until;
	int rc;

	if(holder > 0){
		snprintf(who, sizeof(who), "the running link process (pid %ld)", (long)holder);
	}else{
		snprintf(who, sizeof(who), "the running link process");
	}
	rc = fb_request_nonce(&rq);
	if(rc == 0){
		rc = fb_request_post(path, &rq);
	}
	if(rc == -EEXIST){
		fb_log(lg, MOSQ_LOG_ERR, "spool %s: another request to %s is pending; try again once it is "
				"answered, nothing changed", path, who);
		return rc;
	}
	if(rc < 0){
		fb_log(lg, MOSQ_LOG_ERR, "spool %s: cannot post the request to %s beside the spool folder: %s; "
				"nothing changed", path, who, strerror(-rc));
		return rc;
	}
	until = fb_mono_ms() + (uint64_t)timeout_s * 1000u;
	while((rc = fb_reply_take(path, rq.nonce, &rp)) == -ENOENT && fb_mono_ms() < until){
		fb_sleep_ms(50);
	}
	if(rc == -ENOENT){
		if(fb_request_withdraw(path, rq.nonce) == 0){
			fb_log(lg, MOSQ_LOG_ERR, "spool %s: %s did not take the request within %u s (is it stopped or "
					"hung?); nothing changed", path, who, timeout_s);
			return -ETIMEDOUT;
		}
		fb_log(lg, MOSQ_LOG_ERR, "spool %s: %s took the request but has not answered within %u s; it goes "
				"on (see the broker's log, or flowmq-bridge spool dead %s)", path, who, timeout_s, path);
		return -ETIMEDOUT;
	}
	if(rc < 0){
		fb_log(lg, MOSQ_LOG_ERR, "spool %s: cannot read the answer of %s: %s", path, who, strerror(-rc));
		return rc;
	}
	*done = rp.done_unknown ? UINT64_MAX : rp.done;
	if(!rp.ok){
		char d[32] = ""; /* nothing when not known */

		if(!rp.done_unknown){
			snprintf(d, sizeof(d), "%" PRIu64 " done, ", rp.done);
		}
		fb_log(lg, MOSQ_LOG_ERR, "spool %s: %s by %s: %s%" PRIu64 " left: %s", path, op, who, d, rp.left,
				rp.error);
		return -EAGAIN;
	}
	return 0;
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
	bool json, broker = false;  /* a broker runs with the staging files open, no link process */
	unsigned timeout_s = TIMEOUT_DEFAULT_S;
	int idle = -1;              /* holds the spool folder's lock exclusively (chan.h) */
	int rc, arg;

	if(timeout_option(cmd, &argc, argv, &timeout_s, &rc) < 0){
		return rc;
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
	/* The read-only look first: a folder that is no spool, or a damaged one, is refused
	 * unchanged (fb_spool_open() would move a damaged one aside). */
	rc = fb_spool_inspect(argv[arg], &lg, &st, &holder);
	if(rc == 0 && holder == 0){
		/* No link process holds it, but a broker may run with it (its link process being
		 * restarted, or unable to start), with the staging files mapped: then only the next link
		 * process may change the spool. Wait for one, up to the time-out. */
		uint64_t until = fb_mono_ms() + (uint64_t)timeout_s * 1000u;

		while((idle = fb_chan_lock(argv[arg], true)) == -EBUSY && fb_mono_ms() < until){
			broker = true;
			fb_sleep_ms(WAIT_POLL_MS);
			if((holder = fb_spool_holder(argv[arg])) != 0){
				break;
			}
		}
		/* A link process that came gets the request below, with a time-out of its own. */
		if(holder == 0 && idle == -EBUSY){
			fb_log(&lg, MOSQ_LOG_ERR, "spool %s: a running broker uses it, and no link process took it "
					"within %u s (is its link process being restarted, or can it not start? see the broker's "
					"log); nothing changed", argv[arg], timeout_s);
			rc = -EBUSY;
		}else if(holder == 0 && idle < 0){
			fb_log(&lg, MOSQ_LOG_ERR, "spool %s: cannot lock the folder: %s; nothing changed", argv[arg],
					strerror(-idle));
			rc = idle;
		}
		if(rc < 0){
			goto report;
		}
		broker = false; /* a stopped broker's spool, or a link process holds it (in_use either way) */
	}
	if(rc == 0 && holder != 0){
		/* A running link process holds it: only it may change it. */
		rc = ask_link(cmd, &lg, argv[arg], holder, requeue, timeout_s, &done);
		goto report;
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
				val = fb_control_requeued(b->r[i].val, b->r[i].len, &len);
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
report:
	if(idle >= 0){
		close(idle); /* after the spool: a broker's writer may map the files again */
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
	if(done == UINT64_MAX){
		cJSON_AddNullToObject(j, requeue ? "requeued" : "purged"); /* not known */
	}else{
		cJSON_AddNumberToObject(j, requeue ? "requeued" : "purged", (double)done);
	}
	cJSON_AddBoolToObject(j, "in_use", holder != 0 || broker);
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
	.args = "[--json] [--timeout SECONDS] PATH",
	.summary = "queue the dead letters of a spool for the cloud again",
	.help =
		"Moves every dead letter of the spool folder PATH back to the queue for the cloud, in its\n"
		"lane, without its reason, as if captured now (spool.ttl counts again; a message expiry\n"
		"stays). On a stopped broker it changes the spool itself. While the broker runs, the\n"
		"running link process does it on request (a file beside the spool folder) and this waits\n"
		"for its answer (a broker without a link process, one being restarted: for the next one,\n"
		"up to the time-out): the broker stages the dead letters behind what is queued, and they\n"
		"are deleted as dead letters once staged (a crash in between may send one twice, never\n"
		"loses one). A folder that is not a spool, or a damaged spool, is refused unchanged. Exit\n"
		"status 0 when all were queued again, 1 when not (the reason is printed; a running link\n"
		"process that has no room in its staging channel goes on as room comes), 2 usage error.\n"
		"\n"
		"Options:\n"
		"  --json               print {path, ok, requeued, in_use, diagnostics}\n"
		"  --timeout SECONDS    how long to wait for a link process, and then for its answer\n"
		"                       (each; default 60)\n"
		"  --help               this text\n",
	.run = requeue_run,
};

const struct cli_cmd cli_spool_purge_dead = {
	.name = "spool purge-dead",
	.args = "[--json] [--timeout SECONDS] PATH",
	.summary = "remove the dead letters of a spool",
	.help =
		"Removes every dead letter of the spool folder PATH. On a stopped broker it changes the\n"
		"spool itself; while the broker runs, the running link process does it on request (a file\n"
		"beside the spool folder) and this waits for its answer (a broker without a link process,\n"
		"one being restarted: for the next one, up to the time-out). A folder that is not a\n"
		"spool, or a damaged spool, is refused unchanged. Exit status 0, 1 when nothing could be\n"
		"done, 2 usage error.\n"
		"\n"
		"Options:\n"
		"  --json               print {path, ok, purged, in_use, diagnostics}\n"
		"  --timeout SECONDS    how long to wait for a link process, and then for its answer\n"
		"                       (each; default 60)\n"
		"  --help               this text\n",
	.run = purge_run,
};
