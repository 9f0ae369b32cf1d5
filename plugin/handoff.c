#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

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

void fb_handoff_init(struct fb_handoff *h)
{
	pthread_mutex_init(&h->lock, NULL);
	h->head = NULL;
	h->tail = &h->head;
	h->count = 0;
}

void fb_handoff_cleanup(struct fb_handoff *h)
{
	struct fb_inmsg *m = fb_handoff_take(h);

	while(m){
		struct fb_inmsg *next = m->next;
		fb_inmsg_free(m);
		m = next;
	}
	pthread_mutex_destroy(&h->lock);
}

void fb_handoff_push(struct fb_handoff *h, struct fb_inmsg *m)
{
	m->next = NULL;
	pthread_mutex_lock(&h->lock);
	*h->tail = m;
	h->tail = &m->next;
	__atomic_store_n(&h->count, h->count + 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&h->lock);
}

struct fb_inmsg *fb_handoff_take(struct fb_handoff *h)
{
	struct fb_inmsg *m;

	/* Every broker loop turn asks: no lock while the queue is empty. A push racing with this
	 * check is taken at the next turn (the worker wakes the broker until it is). */
	if(__atomic_load_n(&h->count, __ATOMIC_ACQUIRE) == 0){
		return NULL;
	}
	pthread_mutex_lock(&h->lock);
	m = h->head;
	h->head = NULL;
	h->tail = &h->head;
	__atomic_store_n(&h->count, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&h->lock);
	return m;
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
		pthread_kill(w->thread, w->signo);
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
