/* flowmq-bridge: per-rule counters in the shared region (both processes; written by the broker
 * thread only).
 *
 * One slot per edge_to_cloud rule (by index, up to FB_RULECTR_SLOTS rules): what the capture did
 * with the messages the rule matched. The broker thread is the only writer, so an increment is a
 * relaxed load and store of its own slot, no locked instruction on the capture path; any thread of
 * either process may read a slot (relaxed) at any time. The broker thread publishes them under
 * $SYS/broker/flowmq-bridge/rules/<index>/ (publish.c) and zeroes them when a reload replaces
 * the rules (an index may then mean another rule).
 */
#ifndef FB_RULECTR_H
#define FB_RULECTR_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Rules beyond this many are not counted one by one (the global counters still count them). */
#define FB_RULECTR_SLOTS 1024

struct fb_rulectr_slot {
	atomic_uint_fast64_t forwarded; /* taken for the cloud: staged into the spool */
	atomic_uint_fast64_t dropped;   /* a drop rule, an invalid cloud topic, or spool.on_full */
};

struct fb_rulectr {
	struct fb_rulectr_slot rule[FB_RULECTR_SLOTS];
};

/* Adds 1 to C. Broker thread only (the one writer). */
static inline void fb_rulectr_inc(atomic_uint_fast64_t *c)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1, memory_order_relaxed);
}

/* Reads C. Any thread of either process. */
static inline uint64_t fb_rulectr_get(const atomic_uint_fast64_t *c)
{
	return atomic_load_explicit((atomic_uint_fast64_t *)c, memory_order_relaxed);
}

/* Zeroes every slot. Broker thread only. */
static inline void fb_rulectr_reset(struct fb_rulectr *r)
{
	for(size_t i = 0; i < FB_RULECTR_SLOTS; i++){
		atomic_store_explicit(&r->rule[i].forwarded, 0, memory_order_relaxed);
		atomic_store_explicit(&r->rule[i].dropped, 0, memory_order_relaxed);
	}
}

#endif
