/* flowmq-bridge: how each process wakes the other (both processes).
 *
 * Broker to link: an eventfd the link process's worker polls. The broker thread writes to it when
 * it stages records (fb_waker_notify(): at most one write per worker wake-up, the "notified" flag
 * in the shared region says one is pending) and when the link process is to stop.
 *
 * Link to broker: when idle, Mosquitto 2.0.11 sleeps in epoll_wait(..., 100 ms) and only runs
 * tick callbacks after it returns. The plugin installs an empty handler (SA_RESTART) for a
 * real-time signal nobody else handles (fb_waker_init()), and the link process sends that signal
 * to the broker process (fb_waker_wake()): epoll_wait is never restarted after a signal handler,
 * so it returns EINTR at once, the loop runs and calls our tick. The broker blocks only SIGINT,
 * SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 around epoll_wait, so the signal gets through; the broker
 * process has no other thread, so a signal sent to the process reaches it. A signal that arrives
 * while the loop is busy (not in epoll_wait) does not shorten the next wait, so the link process
 * repeats the wake every FB_WAKER_REWAKE_MS until the broker has drained the cloud-to-edge ring.
 *
 * Broker to itself: while a tick stops with work left (a budget ran out), a timer
 * (fb_waker_every()) sends the same signal to this process every millisecond, so that an idle
 * broker comes back to its tick; a busy one ticks at every loop turn anyway.
 */
#ifndef FB_WAKER_H
#define FB_WAKER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <sys/types.h>
#include <time.h>

#define FB_WAKER_REWAKE_MS 2

struct fb_waker {
	int signo;
	bool armed;
};

/* Picks the signal and installs the empty handler. Returns 0 or -errno. Broker thread. */
int fb_waker_init(struct fb_waker *w);

/* Ignores the signal from now on; call after the link process has stopped. Broker thread. */
void fb_waker_cleanup(struct fb_waker *w);

/* Interrupts the broker thread's epoll_wait: sends SIGNO to PID (nothing when SIGNO is 0). Link
 * process, any thread. */
void fb_waker_wake(pid_t pid, int signo);

/* The broker thread's own wake-up (fb_waker_every()). */
struct fb_waker_timer {
	timer_t id;
	bool made;
	unsigned every_ms;   /* 0: disarmed */
};

/* Makes T, a timer that sends SIGNO to this process, disarmed. Returns 0 or -errno (T then does
 * nothing). Broker thread. */
int fb_waker_timer_init(struct fb_waker_timer *t, int signo);

/* Deletes T (before the signal's handler goes). Accepts one that was never made. */
void fb_waker_timer_cleanup(struct fb_waker_timer *t);

/* Has T send its signal every MS milliseconds from now on; 0 disarms it. Nothing when it does
 * that already (no system call). Broker thread. */
void fb_waker_every(struct fb_waker_timer *t, unsigned ms);

/* Tells a worker waiting on EFD that the staging channel has new records (or that it is to
 * stop). Cheap: one eventfd write at most per worker wake-up, which clears NOTIFIED. Broker
 * thread. */
void fb_waker_notify(int efd, atomic_bool *notified);

#endif
