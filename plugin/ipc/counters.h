/* flowmq-bridge: the counters both programs add to, defined once (both processes, any thread).
 *
 * The counters live in the shared region (shared.h): the broker thread and the link process's
 * threads add to them with relaxed atomics, the broker thread publishes them retained under
 * $SYS/broker/flowmq-bridge/ every status_interval (publish.c). Adding a counter is one line in
 * FB_COUNTERS (name, $SYS topic suffix, what it counts) plus its test: the struct, the plain copy
 * and the publishing all follow from the list. Changing the list changes the shared region's
 * layout: raise FB_IPC_VERSION (shared.h) with it.
 */
#ifndef FB_COUNTERS_H
#define FB_COUNTERS_H

#include <stdatomic.h>
#include <stdint.h>

/* X(name, $SYS topic suffix, description), in the order they are published. */
#define FB_COUNTERS(X) \
	X(forwarded,        "edge_to_cloud/forwarded",         "records the cloud acknowledged (or QoS 0 records sent)") \
	X(dropped_full,     "edge_to_cloud/dropped/full",      "messages dropped or refused per spool.on_full") \
	X(dropped_expired,  "edge_to_cloud/dropped/expired",   "records past their rule ttl or spool.ttl") \
	X(dropped_rejected, "edge_to_cloud/dropped/rejected",  "records the cloud refused (moved to dead letters)") \
	X(dropped_filtered, "edge_to_cloud/dropped/filtered",  "messages a rule dropped or could not map") \
	X(dropped_corrupt,  "edge_to_cloud/dropped/corrupt",   "records lost to damage the bridge detected") \
	X(wills,            "edge_to_cloud/wills",             "Will messages captured by the loopback subscriber") \
	X(stalls,           "stalls",                          "live connections replaced for lack of PUBACK progress") \
	X(link_restarts,    "link_restarts",                   "link processes killed as hung, or restarted after an end") \
	X(injected,         "cloud_to_edge/injected",          "cloud messages injected into the local broker") \
	X(c2e_dropped,      "cloud_to_edge/dropped",           "cloud messages dropped (no rule, too large, expired, echo)") \
	X(reconnects,       "reconnects",                      "connections to the cloud made after the first") \
	X(dropped_unparsable, "edge_to_cloud/dropped/unparsable", "messages a deadband or aggregate rule found no number in") \
	X(suppressed,       "edge_to_cloud/suppressed",        "messages not sent: throttled (min_interval), unchanged (on_change) or within deadband") \
	X(aggregated,       "edge_to_cloud/aggregated",        "messages folded into aggregate windows") \
	X(windows,          "edge_to_cloud/windows",           "aggregate windows published") \
	X(reduce_evicted,   "edge_to_cloud/evicted",           "topics evicted from throttle or aggregate state (spool.max_tracked_topics), what they held sent first") \
	X(dropped_error,    "edge_to_cloud/dropped/error",     "matched messages that could not be spooled for an error (disk, memory): refused, or dropped when held")

/* In the shared region. */
struct fb_counters {
#define FB_COUNTER_FIELD(name, topic, desc) atomic_uint_fast64_t name;
	FB_COUNTERS(FB_COUNTER_FIELD)
#undef FB_COUNTER_FIELD
	atomic_uint disk_full;     /* 1 while the spool cannot write for lack of space (published as spool/disk_full) */
	atomic_uint link_stalled;  /* 1 while the broker sees the link process as hung (state "stalled") */
};

/* A plain copy, for publishing. */
struct fb_counter_values {
#define FB_COUNTER_VALUE(name, topic, desc) uint64_t name;
	FB_COUNTERS(FB_COUNTER_VALUE)
#undef FB_COUNTER_VALUE
};

/* Adds N to counter C. Any thread of either process. */
static inline void fb_count(atomic_uint_fast64_t *c, uint64_t n)
{
	atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* Copies every counter of C into V. Any thread. */
static inline void fb_counters_load(const struct fb_counters *c, struct fb_counter_values *v)
{
#define FB_COUNTER_LOAD(name, topic, desc) v->name = atomic_load_explicit(&c->name, memory_order_relaxed);
	FB_COUNTERS(FB_COUNTER_LOAD)
#undef FB_COUNTER_LOAD
}

#endif
