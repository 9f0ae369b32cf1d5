/* flowmq-bridge: the wake-ups between the processes (see waker.h): fb_waker_init/cleanup and
 * fb_waker_notify and the timer in the broker thread, fb_waker_wake in the link process's worker. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "waker.h"

static void on_wake_signal(int signo)
{
	(void)signo; /* interrupting epoll_wait is all it takes */
}

/* A real-time signal nobody else in the process handles. */
static int pick_signal(void)
{
	for(int s = SIGRTMIN + 4; s <= SIGRTMAX; s++){
		struct sigaction cur;

		if(sigaction(s, NULL, &cur) == 0 && cur.sa_handler == SIG_DFL){
			return s;
		}
		if(cur.sa_handler == on_wake_signal){
			return s; /* a second instance of the plugin shares it */
		}
	}
	return -1;
}

int fb_waker_init(struct fb_waker *w)
{
	struct sigaction sa;

	memset(w, 0, sizeof(*w));
	w->signo = pick_signal();
	if(w->signo < 0){
		w->signo = 0;
		return -EBUSY;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_wake_signal;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	if(sigaction(w->signo, &sa, NULL) < 0){
		return -errno;
	}
	w->armed = true;
	return 0;
}

void fb_waker_cleanup(struct fb_waker *w)
{
	if(w->armed){
		/* The handler lives in this module, which may be unloaded: ignore from now on. */
		signal(w->signo, SIG_IGN);
		w->armed = false;
	}
}

void fb_waker_wake(pid_t pid, int signo)
{
	if(signo > 0 && pid > 0){
		kill(pid, signo);
	}
}

int fb_waker_timer_init(struct fb_waker_timer *t, int signo)
{
	struct sigevent ev;

	memset(t, 0, sizeof(*t));
	if(signo <= 0){
		return -EINVAL;
	}
	memset(&ev, 0, sizeof(ev));
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = signo;
	if(timer_create(CLOCK_MONOTONIC, &ev, &t->id) != 0){
		return -errno;
	}
	t->made = true;
	return 0;
}

void fb_waker_timer_cleanup(struct fb_waker_timer *t)
{
	if(t->made){
		timer_delete(t->id);
		t->made = false;
	}
}

void fb_waker_every(struct fb_waker_timer *t, unsigned ms)
{
	struct timespec every = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };
	struct itimerspec when = { .it_value = every, .it_interval = every };

	if(t->made && t->every_ms != ms){
		timer_settime(t->id, 0, &when, NULL);
		t->every_ms = ms;
	}
}

void fb_waker_notify(int efd, atomic_bool *notified)
{
	uint64_t one = 1;

	if(!atomic_exchange(notified, true)){
		if(write(efd, &one, sizeof(one)) < 0){
			/* the counter cannot overflow with one write per wake-up */
		}
	}
}
