/* flowmq-bridge, broker process, broker thread: sending less (README.md, "Sending less"): the
 * per-topic state of the edge_to_cloud rules' min_interval, on_change, deadband, heartbeat and
 * aggregate options.
 *
 * The state lives where the capture runs, in two hash tables (one for the throttling and
 * report-by-exception options, one for aggregate windows), each bounded by
 * spool.max_tracked_topics: beyond it the least recently used topic is evicted, and what it held
 * (a throttled message waiting for the end of its interval, an open window) is sent first. A
 * capture costs a hash lookup and at most one eviction, never a scan. Held messages and open
 * windows are sent by the tick when their time comes, after a reload (fb_reduce_retire()) a slice
 * at a time, and by fb_reduce_flush() at a stop.
 *
 * Nothing here stages a record itself: what is to be sent goes to the caller's sink.
 */
#ifndef FB_REDUCE_H
#define FB_REDUCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "counters.h"

struct fb_reduce;

/* Where fb_reduce sends what it held; both run on the broker thread, from fb_reduce_offer()
 * (an eviction, or a window that closed before the tick sent it), fb_reduce_tick() or
 * fb_reduce_flush(). A failure is the sink's to count, except that with WAIT (only from the tick)
 * a sink that has no room now returns -EAGAIN without counting: the held message or the window
 * then stays as it is, and the tick tries again a millisecond later. */
struct fb_reduce_sink {
	/* Stages REC (LEN bytes, an encoded record given to fb_reduce_hold(); borrowed) that
	 * edge_to_cloud rule RULE held. */
	int (*record)(void *ud, int rule, const uint8_t *rec, size_t len, bool wait);
	/* Sends the summary JSON (LEN bytes, borrowed) of a closed window of edge_to_cloud rule RULE
	 * to CLOUD_TOPIC. */
	int (*window)(void *ud, int rule, const char *cloud_topic, const char *json, size_t len, bool wait);
	void *ud;
};

/* The kinds of per-topic state, each bounded by spool.max_tracked_topics. */
enum fb_reduce_kind {
	FB_REDUCE_THROTTLE = 0, /* min_interval, on_change, deadband, heartbeat */
	FB_REDUCE_AGGREGATE,
};

/* fb_reduce_offer() verdicts. */
enum fb_reduce_verdict {
	FB_REDUCE_SEND = 0, /* forward the message now; once staged, fb_reduce_sent() */
	FB_REDUCE_HOLD,     /* encode it and give the record to fb_reduce_hold(): sent later */
	FB_REDUCE_TAKEN,    /* suppressed, folded into a window or unparsable; counted */
};

/* Makes the state for the edge_to_cloud rules of CFG (which must outlive it). *out is NULL when
 * no rule reduces anything. CTR receives suppressed, aggregated, windows, dropped_unparsable,
 * dropped_error (a summary that cannot be made for memory) and reduce_evicted. Returns 0 or -ENOMEM. Broker thread. */
int fb_reduce_new(const struct fb_config *cfg, const struct fb_reduce_sink *sink, struct fb_counters *ctr,
		struct fb_reduce **out);

/* Frees everything without sending it (see fb_reduce_flush()). Accepts NULL. */
void fb_reduce_free(struct fb_reduce *r);

/* Decides about a message on local TOPIC that edge_to_cloud rule RULE (with options) matched and
 * maps to CLOUD_TOPIC, at MONO_MS (monotonic) and WALL_MS (wall clock) milliseconds. Returns an
 * enum fb_reduce_verdict, -ENOMEM (then forward it), or -EAGAIN: the topic's window has closed
 * and not gone yet, and the sink has no room for it now (it stays; the message is not taken,
 * the caller turns it away as when the channel is busy). Broker thread. */
int fb_reduce_offer(struct fb_reduce *r, int rule, const char *topic, const char *cloud_topic,
		const void *payload, uint32_t len, uint64_t mono_ms, uint64_t wall_ms);

/* After FB_REDUCE_HOLD (and nothing else in between): keeps a copy of REC, the encoded message,
 * to be sent at the end of its interval in place of the one held before. Returns 0 or -ENOMEM
 * (then send it now, as after FB_REDUCE_SEND). Broker thread. */
int fb_reduce_hold(struct fb_reduce *r, const uint8_t *rec, size_t len);

/* After FB_REDUCE_SEND (or a failed fb_reduce_hold()), once the message is staged, and nothing
 * else in between: the message is the last one that passed on_change, deadband and heartbeat, and
 * its send starts the next min_interval; a held message it overtakes is replaced (counted as
 * suppressed). A message that is not staged (the channel turned it away, an error) changes
 * nothing: the publisher's retry of it is compared with the one before, not taken for a repeat.
 * Broker thread. */
void fb_reduce_sent(struct fb_reduce *r);

/* At most this many held messages and closed windows are sent per tick. Windows end together (at
 * the same multiple of their length for every topic of a rule): up to spool.max_tracked_topics of
 * them at once would otherwise keep the broker thread, and local traffic, waiting for as long as
 * it takes to encode and stage them all, and fill the staging files faster than the link process
 * empties them. */
#define FB_REDUCE_BUDGET 256u

/* Sends the held messages whose interval has ended and the windows that have closed by then, at
 * most FB_REDUCE_BUDGET of them. Returns true when more are due: call again soon (the next call
 * goes on where this one stopped). fb_reduce_tick() reads the clocks itself, only when something
 * waits, does nothing within 10 ms of a call that left nothing due, and while more are due takes
 * a slice of at most a third of the time since its last one (20 us to 1 ms). fb_reduce_tick_at()
 * is bounded by the count only. Broker thread. */
bool fb_reduce_tick(struct fb_reduce *r);
bool fb_reduce_tick_at(struct fb_reduce *r, uint64_t mono_ms, uint64_t wall_ms);

/* After fb_reduce_tick() returned true: in how many ms the next call is worth it (1, or while the
 * sink has no room 1, 2, 4 ... 64 after each call that found none). Broker thread. */
unsigned fb_reduce_pause_ms(const struct fb_reduce *r);

/* Sends every held message and every open window now (a stop), and forgets them. */
void fb_reduce_flush(struct fb_reduce *r);

/* A reload: R takes no more messages (the caller makes a state for the new rules), and from now
 * on its ticks send everything it holds, held messages first, as if all were due, with the same
 * budget, time slices and waiting for room as fb_reduce_tick(), which returns false once nothing
 * is left: then free it. So a reload with many open windows does not keep the broker thread, nor
 * overflow the staging files, as a flush would. */
void fb_reduce_retire(struct fb_reduce *r);

/* Sends now what R holds for local TOPIC, a held message or an open window, and forgets it: a
 * message on TOPIC under the new rules goes after it, in order. Returns 0, or -EAGAIN when the
 * sink has no room for it now: it stays (the caller turns the new message away, as it would any
 * message while the channel is busy). */
int fb_reduce_send_topic(struct fb_reduce *r, const char *topic);

/* Topics tracked now of KIND. */
size_t fb_reduce_tracked(const struct fb_reduce *r, enum fb_reduce_kind kind);

/* Extracts the number a rule compares or aggregates: the whole payload (FIELD NULL) or the member
 * at dotted path FIELD of a JSON object. Returns 0, or -EINVAL when there is no finite number
 * there. Any thread. */
int fb_reduce_value(const void *payload, uint32_t len, const char *field, double *out);

#endif
