/* flowmq-bridge: injection of cloud messages (see inject.h); broker process, broker thread. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <mqtt_protocol.h>

#include "inject.h"
#include "record.h"

int fb_inmsg_from_record(uint64_t seq, const void *val, size_t len, struct fb_inmsg **out)
{
	struct fb_record r;
	struct fb_inmsg *m;
	int rc;

	*out = NULL;
	if(fb_record_decode(val, len, &r) < 0){
		return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if(m == NULL){
		return -ENOMEM;
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
	if(m->topic == NULL || (r.payload_len && m->payload == NULL)){
		fb_inmsg_free(m);
		return -ENOMEM;
	}
	rc = fb_props_decode(r.props, r.props_len, &m->props);
	if(rc < 0){
		fb_inmsg_free(m);
		return rc; /* -EINVAL: malformed, -ENOMEM */
	}
	*out = m;
	return 0;
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

/* Whether a record that cannot be read or built now may be on a later try: the broker is out of
 * descriptors (EMFILE, ENFILE: its file cannot be opened) or memory (ENOMEM), or a call was
 * interrupted (EINTR, EAGAIN). Such a record waits. Anything else stays a counted drop: its file
 * is gone (ENOENT) or is no file (EISDIR), cannot be read (EIO: a failing disk, or a file shorter
 * than its size), or the record is malformed (EINVAL). Trying again would not change those, and a
 * record that waits holds up every cloud message behind it. */
static bool inject_passing(int rc)
{
	return rc == -EMFILE || rc == -ENFILE || rc == -ENOMEM || rc == -EINTR || rc == -EAGAIN;
}

/* The record SEQ at the ring's head failed with RC, a passing reason, when its file was read
 * (UNREAD: the file in in->rd.path could not be) or the message built: it stays there. */
static void inject_wait(struct fb_inject *in, uint64_t seq, bool unread, int rc)
{
	uint64_t now = fb_mono_ms();

	if(!in->waiting || in->wait_seq != seq){
		if(unread){
			fb_log(in->lg, MOSQ_LOG_ERR, "spool \"in\" record %" PRIu64 " cannot be read from %s now: %s; "
					"it and the cloud messages behind it wait and are tried again every %u ms",
					seq, in->rd.path, strerror(-rc), FB_INJECT_RETRY_MS);
		}else{
			fb_log(in->lg, MOSQ_LOG_ERR, "spool \"in\" record %" PRIu64 " cannot be injected now: %s; "
					"it and the cloud messages behind it wait and are tried again every %u ms",
					seq, strerror(-rc), FB_INJECT_RETRY_MS);
		}
		in->waiting = true;
		in->wait_seq = seq;
		in->wait_since_ms = now;
	}
	in->retry_ms = now + FB_INJECT_RETRY_MS;
}

unsigned fb_inject_run(struct fb_inject *in)
{
	const uint8_t *rec;
	uint64_t seq;
	size_t len, bytes = 0;
	unsigned n = 0;

	/* A record that waits for descriptors or memory: not at every tick (the link process wakes
	 * the broker every few ms while the ring holds records). */
	if(in->waiting && fb_mono_ms() < in->retry_ms){
		return 0;
	}
	/* The link process refills the ring while this runs: without a budget a cloud backlog would
	 * keep the broker thread here, and local traffic waiting. */
	while(n < FB_INJECT_BUDGET && bytes < FB_INJECT_BYTES
			&& fb_c2e_next(in->ring, &in->rd, in->dir, FB_C2E_STEM, &seq, &rec, &len)){
		struct fb_inmsg *m = NULL;
		int rc = rec ? fb_inmsg_from_record(seq, rec, len, &m) : in->rd.err;

		if(rc < 0 && inject_passing(rc)){
			/* Not consumed, so neither released nor its file removed: order is kept. */
			inject_wait(in, seq, rec == NULL, rc);
			break;
		}
		if(in->waiting){
			fb_log(in->lg, MOSQ_LOG_NOTICE, "spool \"in\" record %" PRIu64 " no longer waits (after %"
					PRIu64 " ms); cloud messages are injected again", seq, fb_mono_ms() - in->wait_since_ms);
			in->waiting = false;
		}
		n++;
		bytes += len;
		if(m){
			inject_one(in, m);
			fb_inmsg_free(m);
		}else if(rec == NULL){
			fb_log(in->lg, MOSQ_LOG_ERR, "spool \"in\" record %" PRIu64 " is unreadable (%s: %s); dropped",
					seq, in->rd.path, strerror(-rc));
			fb_count(&in->ctr->c2e_dropped, 1);
		}else{
			fb_log(in->lg, MOSQ_LOG_ERR, "spool \"in\" record %" PRIu64 " is unreadable (malformed); dropped", seq);
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

size_t fb_inject_restart(struct fb_inject *in)
{
	size_t n = fb_c2e_drop(in->ring, &in->rd, in->dir, FB_C2E_STEM);

	in->injected = in->released = 0;
	in->waiting = false;
	return n;
}

void fb_inject_cleanup(struct fb_inject *in)
{
	fb_c2e_reader_cleanup(&in->rd);
}
