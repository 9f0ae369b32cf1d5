/* flowmq-bridge: the status file (see statusfile.h); written by the link process's main thread,
 * read by the flowmq-bridge command. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "statusfile.h"

char *fb_statusfile_path(const char *spool_path)
{
	size_t n = strlen(spool_path);
	char *p;

	while(n > 1 && spool_path[n - 1] == '/'){
		n--; /* "/var/lib/x/" names the same folder as "/var/lib/x" */
	}
	p = malloc(n + sizeof("-status"));
	if(p){
		memcpy(p, spool_path, n);
		memcpy(p + n, "-status", sizeof("-status"));
	}
	return p;
}

/* S without line breaks (a last_error could hold one). */
static void one_line(char *dst, size_t size, const char *s)
{
	size_t i;

	snprintf(dst, size, "%s", s);
	for(i = 0; dst[i]; i++){
		if(dst[i] == '\n' || dst[i] == '\r'){
			dst[i] = ' ';
		}
	}
}

int fb_statusfile_write(const char *path, const struct fb_statusfile *st)
{
	char tmp[4096], ep[256], err[256], buf[1024];
	int fd, n, rc = 0;

	if(snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)){
		return -ENAMETOOLONG;
	}
	one_line(ep, sizeof(ep), st->endpoint);
	one_line(err, sizeof(err), st->last_error);
	n = snprintf(buf, sizeof(buf), FB_STATUSFILE_MAGIC "\nupdated_ms %" PRIu64 "\ninterval_ms %" PRIu64
			"\npid %ld\nstate %s\nsince_ms %" PRIu64 "\nendpoint %s\nlast_error %s\n",
			st->updated_ms, st->interval_ms, (long)st->pid, st->state, st->since_ms, ep, err);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if(fd < 0){
		return -errno;
	}
	if(write(fd, buf, (size_t)n) != n){
		rc = errno ? -errno : -EIO;
	}
	if(close(fd) != 0 && rc == 0){
		rc = -errno;
	}
	if(rc == 0 && rename(tmp, path) != 0){
		rc = -errno;
	}
	if(rc != 0){
		unlink(tmp);
	}
	return rc;
}

int fb_statusfile_read(const char *path, struct fb_statusfile *st)
{
	char line[512];
	FILE *f = fopen(path, "re");
	unsigned seen = 0;
	long pid;

	if(f == NULL){
		return -errno;
	}
	memset(st, 0, sizeof(*st));
	if(fgets(line, sizeof(line), f) == NULL || strcmp(line, FB_STATUSFILE_MAGIC "\n") != 0){
		fclose(f);
		return -EPROTO;
	}
	while(fgets(line, sizeof(line), f)){
		char *v = strchr(line, ' ');

		line[strcspn(line, "\n")] = '\0';
		if(v == NULL){
			continue;
		}
		*v++ = '\0';
		if(!strcmp(line, "updated_ms") && sscanf(v, "%" SCNu64, &st->updated_ms) == 1){
			seen |= 1;
		}else if(!strcmp(line, "interval_ms") && sscanf(v, "%" SCNu64, &st->interval_ms) == 1){
			seen |= 2;
		}else if(!strcmp(line, "pid") && sscanf(v, "%ld", &pid) == 1){
			st->pid = (pid_t)pid;
		}else if(!strcmp(line, "state")){
			snprintf(st->state, sizeof(st->state), "%s", v);
			seen |= 4;
		}else if(!strcmp(line, "since_ms") && sscanf(v, "%" SCNu64, &st->since_ms) == 1){
			seen |= 8;
		}else if(!strcmp(line, "endpoint")){
			snprintf(st->endpoint, sizeof(st->endpoint), "%s", v);
		}else if(!strcmp(line, "last_error")){
			snprintf(st->last_error, sizeof(st->last_error), "%s", v);
		}
	}
	fclose(f);
	return seen == 15 ? 0 : -EPROTO;
}

/* MS as "1h2m", "5m", "42s". */
static const char *span(char *buf, size_t size, uint64_t ms)
{
	uint64_t s = ms / 1000;

	if(s >= 3600){
		snprintf(buf, size, "%" PRIu64 "h%" PRIu64 "m", s / 3600, s % 3600 / 60);
	}else if(s >= 60){
		snprintf(buf, size, "%" PRIu64 "m%" PRIu64 "s", s / 60, s % 60);
	}else{
		snprintf(buf, size, "%" PRIu64 "s", s);
	}
	return buf;
}

bool fb_statusfile_healthy(const struct fb_statusfile *st, uint64_t now_ms, uint64_t max_down_ms,
		char *why, size_t size)
{
	uint64_t age = now_ms > st->updated_ms ? now_ms - st->updated_ms : 0;
	uint64_t stale_after = 2 * st->interval_ms + 10000;
	bool connected = !strcmp(st->state, "connected");
	uint64_t down_since, down;
	char a[32], b[32];

	if(age > stale_after){
		/* Nothing known since the last refresh: not connected since then at the latest. */
		down_since = connected ? st->updated_ms : st->since_ms;
		down = now_ms > down_since ? now_ms - down_since : 0;
		snprintf(why, size, "%s: status not refreshed for %s (the link process is not running or hangs), "
				"last state %s", down >= max_down_ms ? "unhealthy" : "healthy", span(a, sizeof(a), age), st->state);
		return down < max_down_ms;
	}
	if(connected){
		snprintf(why, size, "healthy: connected to %s for %s", st->endpoint,
				span(a, sizeof(a), now_ms > st->since_ms ? now_ms - st->since_ms : 0));
		return true;
	}
	down = now_ms > st->since_ms ? now_ms - st->since_ms : 0;
	snprintf(why, size, "%s: %s for %s (%s %s)%s%s", down >= max_down_ms ? "unhealthy" : "healthy", st->state,
			span(a, sizeof(a), down), down >= max_down_ms ? "at least" : "less than",
			span(b, sizeof(b), max_down_ms), st->last_error[0] ? ": " : "", st->last_error);
	return down < max_down_ms;
}
