/* flowmq-bridge spool peek / spool dead: the records of a spool, one by one (the flowmq-bridge
 * process, its one thread). Read the spool only, never change it, also while the broker runs
 * (then: a snapshot), through fb_spool_inspect_records(). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "cli.h"
#include "record.h"
#include "session.h"
#include "spool.h"

#define PEEK_DEFAULT 10
#define PEEK_MAX 100000

/* One record as printed. */
struct rec_row {
	uint64_t seq;
	bool readable;
	unsigned lane;
	unsigned qos;
	bool retain;
	uint64_t enqueue_ms;
	uint32_t size;      /* payload bytes */
	char *topic;        /* NULL when unreadable */
	char *reason;       /* dead letters: the reason property's value ("0x95 why"), or NULL */
};

struct rec_list {
	struct rec_row *rows;
	size_t n, cap;
	size_t per_lane[FB_LANES]; /* peek: rows kept of each lane */
	size_t limit;              /* peek: rows kept per lane; 0: all */
	bool dead;
	int err;
};

static void rec_list_clear(struct rec_list *l)
{
	for(size_t i = 0; i < l->n; i++){
		free(l->rows[i].topic);
		free(l->rows[i].reason);
	}
	l->n = 0;
	memset(l->per_lane, 0, sizeof(l->per_lane));
}

static int rec_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct rec_list *l = ud;
	struct rec_row row = { .seq = seq };
	struct fb_record r;
	const char *reason;
	uint16_t rlen;

	if(seq == 0){
		rec_list_clear(l); /* the look starts again */
		return 0;
	}
	row.lane = fb_record_lane(val, len);
	if(l->limit && l->per_lane[row.lane] >= l->limit){
		return 0; /* the oldest LIMIT of this lane are kept already */
	}
	if(fb_record_decode(val, len, &r) == 0){
		row.readable = true;
		row.qos = r.qos;
		row.retain = r.retain;
		row.enqueue_ms = r.enqueue_ms;
		row.size = r.payload_len;
		row.topic = strndup(r.topic, r.topic_len);
		if(row.topic == NULL){
			l->err = -ENOMEM;
			return 1;
		}
		reason = l->dead ? fb_props_find_user(r.props, r.props_len, FB_DEAD_REASON_PROPERTY, &rlen) : NULL;
		if(reason && (row.reason = strndup(reason, rlen)) == NULL){
			free(row.topic);
			l->err = -ENOMEM;
			return 1;
		}
	}else{
		row.size = (uint32_t)len;
	}
	if(l->n == l->cap){
		size_t cap = l->cap ? 2 * l->cap : 64;
		struct rec_row *rows = realloc(l->rows, cap * sizeof(*rows));

		if(rows == NULL){
			free(row.topic);
			free(row.reason);
			l->err = -ENOMEM;
			return 1;
		}
		l->rows = rows;
		l->cap = cap;
	}
	l->rows[l->n++] = row;
	l->per_lane[row.lane]++;
	return 0;
}

/* Send order: the highest lane (0) first, each lane in seq order (README "Priority lanes"). */
static int rec_send_order(const void *a, const void *b)
{
	const struct rec_row *x = a, *y = b;

	if(x->lane != y->lane){
		return x->lane < y->lane ? -1 : 1;
	}
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Splits a reason value "0xNN why" into its code (-1: none) and its text. */
static int reason_code(const char *v, const char **text)
{
	char *end;
	long c;

	*text = v;
	if(v == NULL || strncmp(v, "0x", 2) != 0){
		return -1;
	}
	c = strtol(v + 2, &end, 16);
	if(end == v + 2 || c < 0 || c > 255){
		return -1;
	}
	*text = *end == ' ' ? end + 1 : end;
	return (int)c;
}

static double age_s(uint64_t now, uint64_t enq)
{
	return now > enq ? (double)(now - enq) / 1000.0 : 0.0;
}

static void holder_line(pid_t holder)
{
	if(holder > 0){
		printf("snapshot: the spool is in use by a running link process (pid %ld); "
				"the records change as it runs\n", (long)holder);
	}else if(holder < 0){
		printf("snapshot: the spool is in use by a running link process; the records change as it runs\n");
	}
}

/* Runs peek (LIMIT > 0) or dead (LIMIT 0) on PATH. */
static int records_run(const char *path, bool dead, size_t limit, bool json)
{
	struct rec_list l = { .limit = limit, .dead = dead };
	struct fb_logger lg = cli_stderr_logger;
	cJSON *j = NULL, *msgs = NULL, *arr = NULL, *o;
	const char *text;
	uint64_t now;
	size_t shown;
	pid_t holder = 0;
	int rc, code;

	if(json){
		msgs = cJSON_CreateArray();
		if(msgs == NULL){
			fprintf(stderr, "error: out of memory\n");
			return CLI_EXIT_FAIL;
		}
		lg = (struct fb_logger){ cli_log_json, msgs };
	}
	rc = fb_spool_inspect_records(path, &lg, dead ? FB_Q_DEAD : FB_Q_OUT, rec_visit, &l, &holder);
	if(rc == 0 && l.err){
		rc = l.err;
		fb_log(&lg, MOSQ_LOG_ERR, "spool %s: %s", path, strerror(-rc));
	}
	now = fb_wall_ms();
	if(!dead && l.n > 0){ /* l.rows is NULL when the spool holds none */
		qsort(l.rows, l.n, sizeof(*l.rows), rec_send_order);
	}
	shown = !dead && l.n > limit ? limit : l.n;
	if(!json){
		if(rc < 0){
			rec_list_clear(&l);
			free(l.rows);
			return CLI_EXIT_FAIL;
		}
		if(dead){
			printf("%zu dead letter%s\n", l.n, l.n == 1 ? "" : "s");
		}else{
			printf("%zu oldest record%s in send order\n", shown, shown == 1 ? "" : "s");
		}
		for(size_t i = 0; i < shown; i++){
			struct rec_row *w = &l.rows[i];

			if(!w->readable){
				printf("seq %" PRIu64 ": unreadable record (%" PRIu32 " bytes)\n", w->seq, w->size);
				continue;
			}
			printf("seq %" PRIu64 " lane %u qos %u%s age %.1fs size %" PRIu32 " topic %s", w->seq, w->lane,
					w->qos, w->retain ? " retain" : "", age_s(now, w->enqueue_ms), w->size, w->topic);
			if(dead){
				code = reason_code(w->reason, &text);
				if(code >= 0){
					printf(" reason 0x%02x %s", code, text);
				}else{
					printf(" reason %s", w->reason ? w->reason : "unknown");
				}
			}
			printf("\n");
		}
		holder_line(holder);
		rec_list_clear(&l);
		free(l.rows);
		return CLI_EXIT_OK;
	}
	j = cJSON_CreateObject();
	if(j == NULL){
		cJSON_Delete(msgs);
		rec_list_clear(&l);
		free(l.rows);
		fprintf(stderr, "error: out of memory\n");
		return CLI_EXIT_FAIL;
	}
	cJSON_AddStringToObject(j, "path", path);
	cJSON_AddBoolToObject(j, "readable", rc == 0);
	if(rc == 0){
		arr = cJSON_AddArrayToObject(j, dead ? "dead_letters" : "records");
		for(size_t i = 0; arr && i < shown; i++){
			struct rec_row *w = &l.rows[i];

			o = cJSON_CreateObject();
			if(o == NULL){
				break;
			}
			cJSON_AddNumberToObject(o, "seq", (double)w->seq);
			cJSON_AddBoolToObject(o, "readable", w->readable);
			if(w->readable){
				cJSON_AddStringToObject(o, "topic", w->topic);
				cJSON_AddNumberToObject(o, "size", w->size);
				cJSON_AddNumberToObject(o, "age_s", age_s(now, w->enqueue_ms));
				cJSON_AddNumberToObject(o, "qos", w->qos);
				cJSON_AddNumberToObject(o, "lane", w->lane);
				cJSON_AddBoolToObject(o, "retain", w->retain);
			}else{
				cJSON_AddNumberToObject(o, "size", w->size);
			}
			if(dead){
				code = reason_code(w->reason, &text);
				if(code >= 0){
					cJSON_AddNumberToObject(o, "reason_code", code);
					cJSON_AddStringToObject(o, "reason", text);
				}else{
					cJSON_AddNullToObject(o, "reason_code");
					if(w->reason){
						cJSON_AddStringToObject(o, "reason", w->reason);
					}else{
						cJSON_AddNullToObject(o, "reason");
					}
				}
			}
			cJSON_AddItemToArray(arr, o);
		}
		cJSON_AddBoolToObject(j, "in_use", holder != 0);
		if(holder > 0){
			cJSON_AddNumberToObject(j, "link_pid", (double)holder);
		}else{
			cJSON_AddNullToObject(j, "link_pid");
		}
	}
	cJSON_AddItemToObject(j, "diagnostics", msgs);
	rec_list_clear(&l);
	free(l.rows);
	return cli_json_print(j) < 0 || rc < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

static int peek_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	char **args, what[300], *end;
	unsigned long n = PEEK_DEFAULT;
	bool json;
	int nargs = 0, arg, rc;

	/* -n N (or -nN) is taken out first; the rest is parsed as every command's options. */
	args = calloc((size_t)argc + 1, sizeof(*args));
	if(args == NULL){
		fprintf(stderr, "error: out of memory\n");
		return CLI_EXIT_FAIL;
	}
	for(int i = 0; i < argc; i++){
		const char *v = NULL;

		if(i > 0 && !strcmp(argv[i], "-n")){
			if(i + 1 == argc){
				free(args);
				return cli_usage_error(cmd, "-n needs a number");
			}
			v = argv[++i];
		}else if(i > 0 && !strncmp(argv[i], "-n", 2)){
			v = argv[i] + 2;
		}
		if(v){
			errno = 0;
			n = strtoul(v, &end, 10);
			if(errno || end == v || *end || *v == '-' || n == 0 || n > PEEK_MAX){
				snprintf(what, sizeof(what), "-n: '%s' is not a number from 1 to %d", v, PEEK_MAX);
				free(args);
				return cli_usage_error(cmd, what);
			}
			continue;
		}
		args[nargs++] = argv[i];
	}
	arg = cli_options(cmd, nargs, args, 1, &json, NULL, &rc);
	if(arg >= 0){
		rc = records_run(args[arg], false, n, json);
	}
	free(args);
	return rc;
}

static int dead_run(const struct cli_cmd *cmd, int argc, char **argv)
{
	bool json;
	int rc, arg = cli_options(cmd, argc, argv, 1, &json, NULL, &rc);

	if(arg < 0){
		return rc;
	}
	return records_run(argv[arg], true, 0, json);
}

const struct cli_cmd cli_spool_peek = {
	.name = "spool peek",
	.args = "[--json] [-n N] PATH",
	.summary = "the oldest records waiting for the cloud, in send order (read-only)",
	.help =
		"Prints the N (default 10) records of the spool folder PATH that the link process sends\n"
		"first: the highest lane (priority 0) first, each lane oldest first. For each: its seq,\n"
		"lane, QoS, age (since it was captured), payload size and topic. (Within a lane, live\n"
		"messages of a live_first rule and the lane_min_share of lower lanes can go ahead at run\n"
		"time.) It never changes a byte of the folder; while a link process has the spool open\n"
		"the list is a snapshot. Exit status 0, 1 when the spool cannot be read, 2 usage error.\n"
		"\n"
		"Options:\n"
		"  -n N     how many records (1 to 100000; default 10)\n"
		"  --json   print {path, readable, records: [{seq, readable, topic, size, age_s, qos,\n"
		"           lane, retain}], in_use, link_pid, diagnostics}\n"
		"  --help   this text\n",
	.run = peek_run,
};

const struct cli_cmd cli_spool_dead = {
	.name = "spool dead",
	.args = "[--json] PATH",
	.summary = "the dead letters of a spool with their reason codes (read-only)",
	.help =
		"Prints every dead letter of the spool folder PATH, oldest first: its seq, lane, QoS,\n"
		"age (since it was captured), payload size, topic, and the MQTT reason code and reason\n"
		"for which the cloud refused it. It never changes a byte of the folder; while a link\n"
		"process has the spool open the list is a snapshot. Exit status 0, 1 when the spool\n"
		"cannot be read, 2 usage error.\n"
		"\n"
		"Options:\n"
		"  --json   print {path, readable, dead_letters: [{seq, readable, topic, size, age_s, qos,\n"
		"           lane, retain, reason_code, reason}], in_use, link_pid, diagnostics}\n"
		"  --help   this text\n",
	.run = dead_run,
};
