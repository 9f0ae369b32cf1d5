/* flowmq-bridge: name lookups on a thread of their own (link process; see resolve.h). */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "resolve.h"

struct fb_resolve {
	atomic_int refs;        /* the worker's and the lookup thread's */
	atomic_bool done;       /* rc, res and error are set */
	int efd;
	int rc;
	struct addrinfo *res;
	char error[200];
	char host[];
};

/* Lookup threads alive, over every lookup of the process. */
static atomic_int running;

static void unref(struct fb_resolve *r)
{
	if(atomic_fetch_sub(&r->refs, 1) == 1){
		if(r->res){
			freeaddrinfo(r->res);
		}
		close(r->efd);
		free(r);
	}
}

static void *lookup(void *arg)
{
	struct fb_resolve *r = arg;
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	uint64_t one = 1;

	r->rc = getaddrinfo(r->host, NULL, &hints, &r->res);
	if(r->rc == EAI_SYSTEM){
		snprintf(r->error, sizeof(r->error), "%s", strerror(errno));
	}else if(r->rc != 0){
		snprintf(r->error, sizeof(r->error), "%s", gai_strerror(r->rc));
	}
	atomic_store(&r->done, true);
	if(write(r->efd, &one, sizeof(one)) < 0){
		/* cannot fail: one write to a fresh eventfd */
	}
	unref(r);
	atomic_fetch_sub(&running, 1);
	return NULL;
}

int fb_resolve_start(const char *host, struct fb_resolve **out)
{
	size_t len = strlen(host);
	struct fb_resolve *r;
	pthread_attr_t attr;
	sigset_t all, old;
	pthread_t t;
	int rc;

	*out = NULL;
	if(atomic_fetch_add(&running, 1) >= FB_RESOLVE_MAX_RUNNING){
		atomic_fetch_sub(&running, 1);
		return -EAGAIN;
	}
	r = calloc(1, sizeof(*r) + len + 1);
	if(r == NULL){
		atomic_fetch_sub(&running, 1);
		return -ENOMEM;
	}
	memcpy(r->host, host, len + 1);
	atomic_init(&r->refs, 2);
	r->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if(r->efd < 0){
		rc = -errno;
		free(r);
		atomic_fetch_sub(&running, 1);
		return rc;
	}
	/* Signals stay with the threads that handle them; the thread needs no joining. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	rc = -pthread_create(&t, &attr, lookup, r);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if(rc < 0){
		close(r->efd);
		free(r);
		atomic_fetch_sub(&running, 1);
		return rc;
	}
	*out = r;
	return 0;
}

int fb_resolve_fd(const struct fb_resolve *r)
{
	return r->efd;
}

bool fb_resolve_done(const struct fb_resolve *r)
{
	return atomic_load(&((struct fb_resolve *)r)->done);
}

int fb_resolve_result(const struct fb_resolve *r, const struct addrinfo **res)
{
	*res = r->rc == 0 ? r->res : NULL;
	return r->rc;
}

const char *fb_resolve_error(const struct fb_resolve *r)
{
	return r->error;
}

void fb_resolve_free(struct fb_resolve *r)
{
	if(r){
		unref(r);
	}
}
