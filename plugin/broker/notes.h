/* flowmq-bridge: a short memory of messages by topic and payload.
 *
 * The loopback subscriber (will.h) receives a copy of every message on a rule's filter and must
 * skip those the capture already took. The capture adds a note of each such message; its copy
 * takes the note back. Notes are kept per hash of the topic, the payload length and its first and
 * last KiB (the same message may be noted twice and then comes twice); a note whose copy never
 * comes leaves after the time to live, or when the capacity is reached and a newer note needs its
 * place. Notes leave in the order they were added; copies take the oldest note of their hash.
 */
#ifndef FB_NOTES_H
#define FB_NOTES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fb_notes;

/* Makes room for CAP notes (a power of two, at least 2) kept TTL_MS milliseconds at most.
 * Returns 0 or -EINVAL / -ENOMEM. The caller frees *OUT with fb_notes_free(). One thread. */
int fb_notes_new(uint32_t cap, uint64_t ttl_ms, struct fb_notes **out);

/* Accepts NULL. */
void fb_notes_free(struct fb_notes *n);

/* Adds a note of the message at NOW_MS (a monotonic clock), pushing out the oldest note when
 * full. */
void fb_notes_add(struct fb_notes *n, const char *topic, const void *payload, uint32_t payloadlen,
		uint64_t now_ms);

/* Takes back a note of the message: true when one was waiting. Notes older than the time to live
 * at NOW_MS are forgotten first. */
bool fb_notes_take(struct fb_notes *n, const char *topic, const void *payload, uint32_t payloadlen,
		uint64_t now_ms);

/* Forgets every note. */
void fb_notes_clear(struct fb_notes *n);

/* Notes waiting for their copy (not taken, not expired as of the last call). */
size_t fb_notes_pending(const struct fb_notes *n);

#endif
