/* flowmq-bridge fault tests: an LD_PRELOAD library for the edge broker (and the link process it
 * forks) that makes name lookups slow or fail.
 *
 * getaddrinfo() for the name in FB_SLOWDNS_NAME sleeps FB_SLOWDNS_DELAY_MS and then answers
 * 127.0.0.1; for the name in FB_SLOWDNS_FAIL_NAME it sleeps as long and answers EAI_NONAME. Every
 * other lookup, and every lookup with AI_NUMERICHOST (which never asks a resolver), goes to the C
 * library's getaddrinfo() at once. Each slow lookup appends "<name> <ms>\n" to FB_SLOWDNS_LOG
 * when that is set, when it ends.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

static void slowdns_log(const char *node, long ms)
{
	const char *path = getenv("FB_SLOWDNS_LOG");
	char line[300];
	int fd, n;

	if(path == NULL || (fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)) < 0){
		return;
	}
	n = snprintf(line, sizeof(line), "%s %ld\n", node, ms);
	if(write(fd, line, (size_t)n) < 0){
		/* the test finds the line missing */
	}
	close(fd);
}

static int slowdns_is(const char *node, const char *var)
{
	const char *name = getenv(var);

	return node && name && name[0] && strcasecmp(node, name) == 0;
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
	gai_fn real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
	const char *delay = getenv("FB_SLOWDNS_DELAY_MS");
	struct timespec ts;
	int fail, rc;
	long ms;

	if(real == NULL){
		return EAI_SYSTEM;
	}
	fail = slowdns_is(node, "FB_SLOWDNS_FAIL_NAME");
	if((!fail && !slowdns_is(node, "FB_SLOWDNS_NAME")) || (hints && (hints->ai_flags & AI_NUMERICHOST))){
		return real(node, service, hints, res);
	}
	ms = delay ? strtol(delay, NULL, 10) : 0;
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while(nanosleep(&ts, &ts) != 0){
		/* EINTR: sleep the rest */
	}
	rc = fail ? EAI_NONAME : real("127.0.0.1", service, hints, res);
	slowdns_log(node, ms);
	return rc;
}
