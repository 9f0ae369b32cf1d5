/* flowmq-bridge: an operator's request to the running link process (see request.h); posted and
 * taken back by the flowmq-bridge command, claimed and answered by flowmq-link's main thread. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "request.h"

/* SPOOL_PATH (without trailing slashes) + SUFFIX into BUF. Returns 0 or -ENAMETOOLONG. */
static int path_of(char *buf, size_t size, const char *spool_path, const char *suffix)
{
	size_t n = strlen(spool_path);

	while(n > 1 && spool_path[n - 1] == '/'){
		n--;
	}
	if(snprintf(buf, size, "%.*s%s", (int)n, spool_path, suffix) >= (int)size){
		return -ENAMETOOLONG;
	}
	return 0;
}

const char *fb_request_op_name(enum fb_request_op op)
{
	return op == FB_REQUEST_REQUEUE_DEAD ? "requeue-dead" : op == FB_REQUEST_PURGE_DEAD ? "purge-dead" : "?";
}

int fb_request_nonce(struct fb_request *rq)
{
	uint8_t r[16];

	if(getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)){
		return errno ? -errno : -EIO;
	}
	for(size_t i = 0; i < sizeof(r); i++){
		snprintf(rq->nonce + 2 * i, 3, "%02x", r[i]);
	}
	return 0;
}

/* Writes TEXT into a new file PATH (mode 0600). Returns 0 or a negative errno. */
static int write_new(const char *path, const char *text)
{
	size_t len = strlen(text);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	int rc = 0;

	if(fd < 0){
		return -errno;
	}
	if(write(fd, text, len) != (ssize_t)len){
		rc = errno ? -errno : -EIO;
	}
	if(close(fd) != 0 && rc == 0){
		rc = -errno;
	}
	if(rc){
		unlink(path);
	}
	return rc;
}

int fb_request_post(const char *spool_path, const struct fb_request *rq)
{
	char path[4096], tmp[4096], text[256];
	int rc;

	if((rc = path_of(path, sizeof(path), spool_path, "-request")) < 0){
		return rc;
	}
	if(snprintf(tmp, sizeof(tmp), "%s.%s.tmp", path, rq->nonce) >= (int)sizeof(tmp)){
		return -ENAMETOOLONG;
	}
	snprintf(text, sizeof(text), FB_REQUEST_MAGIC "\nop %s\nnonce %s\npid %ld\n", fb_request_op_name(rq->op),
			rq->nonce, (long)rq->pid);
	rc = write_new(tmp, text);
	if(rc == 0){
		/* link(2), not rename(2): it never replaces a request that is pending. */
		rc = link(tmp, path) == 0 ? 0 : -errno;
		unlink(tmp);
	}
	return rc;
}

/* Parses the request file PATH into *RQ. Returns 0, -EPROTO or another negative errno. */
static int request_read(const char *path, struct fb_request *rq)
{
	char line[256], op[32] = "";
	FILE *f = fopen(path, "re");
	long pid = 0;

	if(f == NULL){
		return -errno;
	}
	memset(rq, 0, sizeof(*rq));
	if(fgets(line, sizeof(line), f) == NULL || strcmp(line, FB_REQUEST_MAGIC "\n") != 0){
		fclose(f);
		return -EPROTO;
	}
	while(fgets(line, sizeof(line), f)){
		line[strcspn(line, "\n")] = '\0';
		if(sscanf(line, "op %31s", op) == 1 || sscanf(line, "pid %ld", &pid) == 1){
			continue;
		}
		if(strncmp(line, "nonce ", 6) == 0 && strlen(line + 6) == 32 && strspn(line + 6, "0123456789abcdef") == 32){
			memcpy(rq->nonce, line + 6, 33);
		}
	}
	fclose(f);
	rq->pid = (pid_t)pid;
	rq->op = !strcmp(op, "requeue-dead") ? FB_REQUEST_REQUEUE_DEAD
		: !strcmp(op, "purge-dead") ? FB_REQUEST_PURGE_DEAD : 0;
	return rq->op && rq->nonce[0] ? 0 : -EPROTO;
}

int fb_request_withdraw(const char *spool_path, const char *nonce)
{
	char path[4096], mine[4096];
	struct fb_request rq;
	int rc;

	if((rc = path_of(path, sizeof(path), spool_path, "-request")) < 0){
		return rc;
	}
	if(snprintf(mine, sizeof(mine), "%s.%s.withdrawn", path, nonce) >= (int)sizeof(mine)){
		return -ENAMETOOLONG;
	}
	if(rename(path, mine) != 0){
		return errno == ENOENT ? -EINPROGRESS : -errno;
	}
	rc = request_read(mine, &rq);
	if(rc == 0 && strcmp(rq.nonce, nonce) != 0){
		/* Another command's request (ours was claimed): back where it was. */
		rc = link(mine, path) == 0 || errno == EEXIST ? -EINPROGRESS : -errno;
	}else{
		rc = 0;
	}
	unlink(mine);
	return rc;
}

int fb_reply_take(const char *spool_path, const char *nonce, struct fb_reply *rp)
{
	char path[4096], suffix[64], line[512];
	unsigned seen = 0;
	FILE *f;
	int rc;

	snprintf(suffix, sizeof(suffix), "-reply.%s", nonce);
	if((rc = path_of(path, sizeof(path), spool_path, suffix)) < 0){
		return rc;
	}
	f = fopen(path, "re");
	if(f == NULL){
		return -errno;
	}
	memset(rp, 0, sizeof(*rp));
	if(fgets(line, sizeof(line), f) == NULL || strcmp(line, FB_REPLY_MAGIC "\n") != 0){
		fclose(f);
		return -EPROTO;
	}
	while(fgets(line, sizeof(line), f)){
		unsigned ok;

		line[strcspn(line, "\n")] = '\0';
		if(sscanf(line, "ok %u", &ok) == 1){
			rp->ok = ok == 1;
			seen |= 1;
		}else if(sscanf(line, "done %" SCNu64, &rp->done) == 1){
			seen |= 2;
		}else if(strcmp(line, "done -") == 0){
			rp->done_unknown = true;
			seen |= 2;
		}else if(sscanf(line, "left %" SCNu64, &rp->left) == 1){
			seen |= 4;
		}else if(strncmp(line, "error ", 6) == 0){
			size_t n = strnlen(line + 6, sizeof(rp->error) - 1);

			memcpy(rp->error, line + 6, n);
			rp->error[n] = '\0';
		}
	}
	fclose(f);
	unlink(path);
	return seen == 7 ? 0 : -EPROTO;
}

int fb_request_claim(const char *spool_path, struct fb_request *rq)
{
	char path[4096], taken[4096];
	int rc;

	if((rc = path_of(path, sizeof(path), spool_path, "-request")) < 0
			|| (rc = path_of(taken, sizeof(taken), spool_path, "-request.taken")) < 0){
		return rc;
	}
	if(access(path, F_OK) != 0){
		return errno == ENOENT ? 0 : -errno;
	}
	if(rename(path, taken) != 0){
		return errno == ENOENT ? 0 : -errno; /* withdrawn meanwhile */
	}
	rc = request_read(taken, rq);
	if(rc < 0){
		unlink(taken);
		return rc;
	}
	return 1;
}

int fb_request_abandoned(const char *spool_path, struct fb_request *rq)
{
	char taken[4096];
	int rc;

	if((rc = path_of(taken, sizeof(taken), spool_path, "-request.taken")) < 0){
		return rc;
	}
	rc = request_read(taken, rq);
	if(rc == -ENOENT){
		return 0;
	}
	unlink(taken);
	return rc == 0 ? 1 : 0;
}

int fb_reply_post(const char *spool_path, const struct fb_request *rq, const struct fb_reply *rp)
{
	char path[4096], tmp[4096], taken[4096], suffix[64], text[512], err[256], done[24];
	int rc;

	snprintf(suffix, sizeof(suffix), "-reply.%s", rq->nonce);
	if((rc = path_of(path, sizeof(path), spool_path, suffix)) < 0
			|| (rc = path_of(taken, sizeof(taken), spool_path, "-request.taken")) < 0){
		return rc;
	}
	if(snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)){
		return -ENAMETOOLONG;
	}
	snprintf(err, sizeof(err), "%s", rp->error);
	err[strcspn(err, "\r\n")] = '\0';
	if(rp->done_unknown){
		snprintf(done, sizeof(done), "-");
	}else{
		snprintf(done, sizeof(done), "%" PRIu64, rp->done);
	}
	snprintf(text, sizeof(text), FB_REPLY_MAGIC "\nok %d\ndone %s\nleft %" PRIu64 "\nerror %s\n",
			rp->ok ? 1 : 0, done, rp->left, err);
	rc = write_new(tmp, text);
	if(rc == 0 && rename(tmp, path) != 0){
		rc = -errno;
		unlink(tmp);
	}
	unlink(taken);
	return rc;
}
