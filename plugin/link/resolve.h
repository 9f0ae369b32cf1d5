/* flowmq-bridge: name lookups off the link worker.
 *
 * getaddrinfo() may take as long as the resolver's timeouts allow (or hang on a broken NSS
 * module): run on the worker thread, it would stop the worker from taking staged records, and the
 * broker would replace the link process again and again (issue 13). A lookup runs on a thread of
 * its own, detached; the worker polls fb_resolve_fd() and reads the result once it is done. A
 * lookup the worker no longer waits for (a bound passed, or the link stops) is dropped with
 * fb_resolve_free() without waiting: the thread frees what is left when its getaddrinfo() returns.
 * Link process; every function is for the worker thread.
 */
#ifndef FB_RESOLVE_H
#define FB_RESOLVE_H

#include <stdbool.h>

struct addrinfo;
struct fb_resolve;

/* Lookups (running or abandoned) that may exist at once: a resolver that hangs cannot pile up
 * threads without bound. */
#define FB_RESOLVE_MAX_RUNNING 8

/**
 * fb_resolve_start() - start looking up HOST (TCP addresses, IPv4 and IPv6).
 * @host: the name; copied.
 * @out: the lookup, owned by the caller until fb_resolve_free().
 *
 * Return: 0; -EAGAIN when FB_RESOLVE_MAX_RUNNING lookups still run; another negative errno when no
 * thread (or eventfd, or memory) could be had.
 */
int fb_resolve_start(const char *host, struct fb_resolve **out);

/* An eventfd that becomes readable when the lookup is done; owned by the lookup. */
int fb_resolve_fd(const struct fb_resolve *r);

/* Whether the lookup is done (then fb_resolve_result() may be called). */
bool fb_resolve_done(const struct fb_resolve *r);

/**
 * fb_resolve_result() - the outcome of a finished lookup.
 * @r: a lookup for which fb_resolve_done() returned true.
 * @res: the addresses in getaddrinfo()'s order, owned by R (valid until fb_resolve_free()).
 *
 * Return: 0, or getaddrinfo()'s error code; fb_resolve_error() says it in words.
 */
int fb_resolve_result(const struct fb_resolve *r, const struct addrinfo **res);

/* Why a finished lookup failed (gai_strerror(), or strerror() for EAI_SYSTEM); owned by R. */
const char *fb_resolve_error(const struct fb_resolve *r);

/* Drops R, done or not, without waiting for it. Accepts NULL. */
void fb_resolve_free(struct fb_resolve *r);

#endif
