/* flowmq-bridge: MQTT v5 topic aliases toward the cloud (link process, worker thread).
 *
 * One table per connection: at most the Topic Alias Maximum that the cloud's CONNACK announced
 * (none if it announced 0 or nothing), the least recently used alias given to a new topic when all
 * are taken. A PUBLISH that sets up or changes a mapping carries the full topic and the alias;
 * later ones the alias and an empty topic. A new connection starts with an empty table
 * (fb_alias_reset()), so what is sent again after a reconnect carries its full topic first.
 */
#ifndef FB_ALIAS_H
#define FB_ALIAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fb_alias_entry;

struct fb_alias {
	uint16_t max;      /* aliases 1..max may be used; 0: none */
	uint16_t used;
	struct fb_alias_entry *e;  /* max entries; e[i] has alias i + 1 */
	uint32_t *buckets; /* entry index + 1 of each chain's head, 0: empty */
	uint32_t nbuckets; /* a power of two */
	uint32_t lru;      /* entry index + 1 of the most recently used, 0: none */
	uint32_t fresh;    /* entries never used so far start after this many */
	uint32_t free;     /* entry index + 1 of the first dropped one (chained), 0: none */
};

/* Forgets every mapping and allows MAX aliases from now on (0: none). Returns 0 or -ENOMEM (then
 * no aliases are used). Worker thread. */
int fb_alias_reset(struct fb_alias *a, uint16_t max);

/* The alias for TOPIC (LEN bytes): 1..max, or 0 when aliases are off (or memory is short). *FULL
 * is true when this PUBLISH must carry the full topic too (a new or changed mapping). The mapping
 * counts as made: if the PUBLISH is not sent after all, call fb_alias_drop(). Worker thread. */
uint16_t fb_alias_get(struct fb_alias *a, const char *topic, size_t len, bool *full);

/* The alias TOPIC (LEN bytes) is mapped to now, 0: none. Changes nothing (not even the order of
 * use): a PUBLISH can be sized before fb_alias_get() makes a mapping for it. Worker thread. */
uint16_t fb_alias_find(const struct fb_alias *a, const char *topic, size_t len);

/* Forgets the mapping of TOPIC, if any: its next PUBLISH carries the full topic again. */
void fb_alias_drop(struct fb_alias *a, const char *topic, size_t len);

/* Frees the table (the struct itself is the caller's). */
void fb_alias_cleanup(struct fb_alias *a);

#endif
