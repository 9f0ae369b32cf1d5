#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "handoff.h"
#include "record.h"

struct fb_inmsg *fb_inmsg_from_record(uint64_t seq, const void *val, size_t len)
{
	struct fb_record r;
	struct fb_inmsg *m;

	if(fb_record_decode(val, len, &r) < 0){
		return NULL;
	}
	m = calloc(1, sizeof(*m));
	if(m == NULL){
		return NULL;
	}
	m->seq = seq;
	m->reclen = len;
	m->qos = r.qos;
	m->retain = r.retain;
	m->expiry_ms = r.expiry_ms;
	m->payloadlen = (int)r.payload_len;
	m->topic = strndup(r.topic, r.topic_len);
	if(r.payload_len){
		m->payload = malloc(r.payload_len);
		if(m->payload){
			memcpy(m->payload, r.payload, r.payload_len);
		}
	}
	if(m->topic == NULL || (r.payload_len && m->payload == NULL)
			|| fb_props_decode(r.props, r.props_len, &m->props) < 0){
		fb_inmsg_free(m);
		return NULL;
	}
	return m;
}

void fb_inmsg_free(struct fb_inmsg *m)
{
	if(m == NULL){
		return;
	}
	free(m->topic);
	free(m->payload);
	mosquitto_property_free_all(&m->props);
	free(m);
}

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
	w->thread = pthread_self();
	w->pid = getpid();
	w->signo = pick_signal();
	if(w->signo < 0){
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

void fb_waker_wake(struct fb_waker *w)
{
	if(w->armed){
		if(getpid() == w->pid){
			pthread_kill(w->thread, w->signo);
		}else{
			kill(w->pid, w->signo); /* from the link process: the broker is single-threaded */
		}
	}
}

void fb_waker_cleanup(struct fb_waker *w)
{
	if(w->armed){
		/* The handler lives in this module, which may be unloaded: ignore from now on. */
		signal(w->signo, SIG_IGN);
		w->armed = false;
	}
}
