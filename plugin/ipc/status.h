/* flowmq-bridge: the status snapshot, plain data that the link process fills and the broker
 * thread publishes (both processes).
 *
 * The link process copies its cloud session's state and the spool's figures into the shared
 * region every 500 ms under a sequence lock (shared.h); the broker thread reads a whole copy and
 * publishes it with the counters (publish.c). Nothing in here points anywhere: a copy is all of it.
 */
#ifndef FB_STATUS_H
#define FB_STATUS_H

#include <stdint.h>

enum fb_link_state {
	FB_LINK_DISCONNECTED = 0,
	FB_LINK_CONNECTING,
	FB_LINK_CONNECTED,
	FB_LINK_STALLED,      /* the broker sees the link process as hung (published by the broker) */
};

/* The cloud session (session.c). */
struct fb_link_status {
	enum fb_link_state state;
	char endpoint[256];
	char last_error[256];
	uint64_t last_connect_ts; /* Unix time of the last connection the cloud accepted, 0: none yet */
};

/* The spool (spool.c). */
struct fb_spool_stats {
	uint64_t messages;   /* live records in FB_Q_OUT */
	uint64_t bytes;      /* their keys + values */
	uint64_t dead;       /* records in FB_Q_DEAD */
	uint64_t in;         /* records in FB_Q_IN */
	uint64_t first_seq;  /* oldest live FB_Q_OUT seq, 0 when empty */
	uint64_t last_seq;   /* newest FB_Q_OUT seq appended (live or not), 0 when none */
	unsigned disk_full;  /* 1 while nothing can be written for lack of space */
};

/* Lanes: as many as record.h's FB_LANES (checked there). */
#define FB_STATUS_LANES 10

struct fb_status {
	struct fb_link_status link;
	struct fb_spool_stats spool;
	uint64_t oldest_age_s;  /* of the oldest live FB_Q_OUT record */
	uint64_t lane_messages[FB_STATUS_LANES];     /* live FB_Q_OUT records per lane */
	uint64_t lane_oldest_age_s[FB_STATUS_LANES]; /* age of each lane's oldest, 0 when empty */
};

/* "connected", "connecting", "stalled" or "disconnected". Any thread. */
const char *fb_status_state_name(enum fb_link_state s);

#endif
