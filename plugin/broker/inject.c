/* flowmq-bridge: injection of cloud messages (see inject.h); broker process, broker thread. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <mqtt_protocol.h>

#include "inject.h"
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

static void inject_one(struct fb_inject *in, struct fb_inmsg *m)
{
	if(m->expiry_ms){
		uint64_t now = fb_wall_ms();

		if(now >= m->expiry_ms){
			fb_count(&in->ctr->c2e_dropped, 1);
			return;
		}
		mosquitto_property_add_int32(&m->props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL,
				(uint32_t)((m->expiry_ms - now + 999) / 1000));
	}
	if(in->host->publish(in->host->ud, m->topic, m->payloadlen, m->payload, m->qos, m->retain, m->props) == 0){
		m->payload = NULL; /* the broker owns them now */
		m->props = NULL;
		fb_count(&in->ctr->injected, 1);
	}else{
		fb_log(in->lg, MOSQ_LOG_ERR, "cannot inject a cloud message on %s", m->topic);
		fb_count(&in->ctr->c2e_dropped, 1);
	}
}

unsigned fb_inject_run(struct fb_inject *in)
{
	const uint8_t *rec;
	uint64_t seq;
	size_t len;
	unsigned n = 0;

	/* The link process refills the ring while this runs: without a budget a cloud backlog would
	 * keep the broker thread here, and local traffic waiting. */
	while(n < FB_INJECT_BUDGET && fb_c2e_next(in->ring, &in->rd, in->dir, FB_C2E_STEM, &seq, &rec, &len)){
		n++;
		struct fb_inmsg *m = rec ? fb_inmsg_from_record(seq, rec, len) : NULL;

		if(m){
			inject_one(in, m);
			fb_inmsg_free(m);
		}else{
			fb_log(in->lg, MOSQ_LOG_ERR, "spool \"in\" record %" PRIu64 " is unreadable; dropped", seq);
			fb_count(&in->ctr->c2e_dropped, 1);
		}
		in->injected = seq;
		fb_c2e_consume(in->ring, &in->rd);
	}
	return n;
}

void fb_inject_release(struct fb_inject *in)
{
	atomic_store_explicit(&in->ring->released, in->injected, memory_order_release);
	in->released = in->injected;
}

void fb_inject_cleanup(struct fb_inject *in)
{
	fb_c2e_reader_cleanup(&in->rd);
}
