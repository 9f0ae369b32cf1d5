/* flowmq-bridge: the uplink caps cloud.max_rate (messages per second) and cloud.max_bandwidth
 * (bytes per second), a token bucket on what the link process sends to the cloud.
 *
 * Each cap is a bucket that fills at its rate, up to FB_RATE_BURST_MS worth (at least two
 * messages), and a message takes one token of the message bucket and its size from the byte
 * bucket. A message goes out while the message bucket holds a whole token and the byte bucket is
 * above zero: a message larger than what the byte bucket holds still goes out whole, and the ones
 * after it wait until the debt is paid, so order is kept and any size passes. Tokens are counted
 * in thousandths, filled per millisecond. Worker thread only.
 */
#ifndef FB_RATE_H
#define FB_RATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The buckets hold this many milliseconds of their rate at most: the largest burst, and the
 * longest pause of the worker (a busy machine, a spool write) that costs no sending. */
#define FB_RATE_BURST_MS 250
/* A worker that waits for tokens waits for this many milliseconds' worth (or one message): a few
 * messages per wake-up instead of one. */
#define FB_RATE_QUANTUM_MS 10

struct fb_rate {
	bool on;               /* a cap is set: the rest applies */
	uint64_t msgs_per_s;   /* 0: no message cap */
	uint64_t bytes_per_s;  /* 0: no byte cap */
	int64_t msgs;          /* message tokens, thousandths */
	int64_t bytes;         /* byte tokens, thousandths (below zero: a debt) */
	int64_t msgs_max;      /* the buckets' capacity, thousandths */
	int64_t bytes_max;
	uint64_t last_ms;      /* monotonic ms of the last fill */
};

/* Sets the caps (0: none; both 0: off, and fb_rate_* cost nothing more than the test of ON) with
 * full buckets at NOW_MS. */
void fb_rate_init(struct fb_rate *r, uint64_t msgs_per_s, uint64_t bytes_per_s, uint64_t now_ms);

/* Fills the buckets up to NOW_MS and returns how many messages may go now: ALLOWED, or fewer when
 * the message cap allows fewer, 0 when a bucket is empty (the byte cap counts as "any number"
 * while its bucket is above zero: fb_rate_take() tells when it is spent). */
uint64_t fb_rate_cap(struct fb_rate *r, uint64_t allowed, uint64_t now_ms);

/* Takes one message of BYTES from the buckets. Returns true when no further message may go now
 * (a bucket is spent), false otherwise. */
bool fb_rate_take(struct fb_rate *r, size_t bytes);

/* True when no message may go until the buckets fill again (as of the last fill). */
bool fb_rate_spent(const struct fb_rate *r);

/* When a worker that waits for tokens should look again (monotonic ms, not before the last fill):
 * once a message may go and, if later, FB_RATE_QUANTUM_MS worth of tokens are there. */
uint64_t fb_rate_next_ms(const struct fb_rate *r);

#endif
