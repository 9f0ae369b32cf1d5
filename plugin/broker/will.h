/* flowmq-bridge, broker process, broker thread: forwarding of Will messages through a loopback
 * subscriber.
 *
 * Mosquitto 2.0.11 publishes a client's Will (its connection died, its keepalive expired, a
 * delayed Will came due, or a new connection took its session over) straight into its subscription
 * tree: no MOSQ_EVT_MESSAGE, so fb_bridge_capture() never sees it, and no plugin event carries it
 * with its properties. The only way to see every Will as it was published, with its properties,
 * and only after the broker's own access checks let it through, is to be a subscriber.
 *
 * So the broker thread runs one MQTT v5 client of its own broker ("loopback"): it connects to a
 * listener of this broker (plugin_opt_loopback_address, default 127.0.0.1:1883), subscribes to the
 * local filter of every edge_to_cloud rule (QoS 0, retain as published, no retained messages at
 * subscribe, a subscription identifier on filters that overlap) and proves that it reached this
 * very broker: the plugin publishes a random nonce into its own broker and waits for it to come
 * back over the connection (no other broker can know it). Everything it then receives is a message
 * the broker delivered on a rule's filter. Messages that the capture saw (fb_will_note() from the
 * MOSQ_EVT_MESSAGE callback) or that the bridge injected itself are remembered briefly by their
 * topic and payload and skipped when they come back; what is left - Wills, and messages other
 * plugins publish with mosquitto_broker_publish() - goes through fb_bridge_capture() like any
 * captured message and is counted in edge_to_cloud/wills.
 *
 * The plugin registers no access-control callback: it never takes part in an access decision.
 * Limits are listed in README.md ("What is forwarded").
 */
#ifndef FB_WILL_H
#define FB_WILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "bridge.h"
#include "log.h"

struct fb_will;

/* Where and as whom the loopback subscriber connects (plugin_opt_loopback_* options). */
struct fb_will_opts {
	const char *host;          /* numeric address of a plain MQTT listener of this broker */
	int port;
	const char *username;      /* NULL: none */
	const char *password;      /* NULL: none */
	bool disabled;             /* plugin_opt_loopback false: Wills are not forwarded */
};

/* Parses "HOST:PORT" (IPv4 dotted quad, or "[v6]:PORT") into O's host and port. HOST points
 * into BUF (a copy the caller owns, at least strlen(ADDR)+1 bytes). Returns 0 or -EINVAL. Any
 * thread. */
int fb_will_parse_address(const char *addr, char *buf, struct fb_will_opts *o);

/* Starts the loopback subscriber for the rules of fb_bridge_config(B); the connection is made
 * later, from fb_will_tick(), and never waited for. O's strings are copied. Captured messages are
 * handed to fb_bridge_capture(B, ...); HOST's publish hook sends the probe. Returns 0 or a negative
 * errno (logged). The caller frees *OUT with fb_will_stop(). Broker thread. */
int fb_will_start(const struct fb_will_opts *o, struct fb_bridge *b, const struct fb_host *host,
		const struct fb_logger *lg, struct fb_will **out);

/* Disconnects and frees. Accepts NULL. Broker thread. */
void fb_will_stop(struct fb_will *w);

/* Remembers that the capture saw (or the bridge injected) a message on TOPIC with PAYLOAD, so that
 * its copy from the loopback is skipped. Cheap; does nothing while the loopback is not connected,
 * and for topics starting with '$'. Broker thread. */
void fb_will_note(struct fb_will *w, const char *topic, const void *payload, uint32_t payloadlen);

/* Drives the loopback client without waiting: connects, reads what arrived, forwards what the
 * capture did not see, keeps the connection alive, retries after a failure with a growing pause.
 * Call at every MOSQ_EVT_TICK with NOW_MS, CLOCK_MONOTONIC_COARSE in milliseconds (read once per
 * tick by the caller). Broker thread. */
void fb_will_tick(struct fb_will *w, uint64_t now_ms);

/* The rules changed (after fb_bridge_reload()): subscribe to the new filters. Broker thread. */
void fb_will_reload(struct fb_will *w);

/* True once the loopback is subscribed and has proven it reaches this broker. Broker thread. */
bool fb_will_ready(const struct fb_will *w);

#endif
