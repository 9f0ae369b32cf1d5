/* flowmq-bridge: cloud-to-edge hand-off from the link process to the broker thread.
 *
 * Every mosquitto_broker_* call must run in the broker thread, so the link process writes cloud
 * messages (already durable in spool "in") into a ring in shared memory (bridge.c) and wakes the
 * broker; the MOSQ_EVT_TICK callback builds an fb_inmsg from each record, injects it, and one tick
 * later tells the link process to delete it from the spool.
 *
 * Waking the broker: when idle, Mosquitto 2.0.11 sleeps in epoll_wait(..., 100 ms) and only runs
 * tick callbacks after it returns. fb_waker sends a real-time signal with an empty handler
 * (SA_RESTART) to the broker: epoll_wait is never restarted after a signal handler, so it returns
 * EINTR at once, the loop runs and calls our tick. The broker blocks only SIGINT, SIGTERM, SIGHUP,
 * SIGUSR1 and SIGUSR2 around epoll_wait, so the signal gets through; the broker process has no
 * other thread, so a signal sent to the process reaches it. A signal that arrives while the loop is
 * busy (not in epoll_wait) does not shorten the next wait, so the link process repeats the wake
 * every FB_HANDOFF_REWAKE_MS until the ring has been drained.
 */
#ifndef FB_HANDOFF_H
#define FB_HANDOFF_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <mosquitto.h>

#define FB_HANDOFF_REWAKE_MS 2

struct fb_inmsg {
	uint64_t seq;        /* record in spool "in" */
	size_t reclen;       /* its value length, for the spool accounting */
	char *topic;         /* local topic (rewritten) */
	void *payload;       /* malloc'd, may be NULL when payloadlen is 0 */
	int payloadlen;
	int qos;
	bool retain;
	mosquitto_property *props;
	uint64_t expiry_ms;  /* wall clock, 0: never */
};

/* Builds a message from a spool "in" record (record.h), copying what it needs. Returns NULL when
 * the record is unreadable or memory is short. Any thread. */
struct fb_inmsg *fb_inmsg_from_record(uint64_t seq, const void *val, size_t len);

/* Frees a message and everything it still owns. Accepts NULL. */
void fb_inmsg_free(struct fb_inmsg *m);

struct fb_waker {
	pthread_t thread;
	pid_t pid;
	int signo;
	bool armed;
};

/* Remembers the calling (broker) thread and process and installs the empty handler. Returns 0
 * or -errno. */
int fb_waker_init(struct fb_waker *w);
/* Interrupts the broker thread's epoll_wait. Any thread, or a child process of the broker. */
void fb_waker_wake(struct fb_waker *w);
/* Ignores the signal from now on; call after the link process has stopped. Broker thread. */
void fb_waker_cleanup(struct fb_waker *w);

#endif
