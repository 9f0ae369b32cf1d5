/* flowmq-bridge: whether the cloud is taking what the link sends (link process, worker thread).
 *
 * The link gives a connection up when nothing came back for 1.5 x keepalive. Over a slow uplink a
 * large PUBLISH can take longer than that to send, and the cloud answers nothing (not even
 * PINGRESP: libmosquitto's PINGREQ waits behind it) until it has read all of it. Such a break is
 * the message's doing, unlike a network black hole or a frozen cloud, which acknowledge nothing:
 * the kernel's count of bytes the peer acknowledged tells them apart.
 */
#ifndef FB_UPLOAD_H
#define FB_UPLOAD_H

#include <stdbool.h>
#include <stdint.h>

struct fb_upload {
	uint64_t acked;     /* bytes the peer had acknowledged at the last look */
	uint64_t moved_ms;  /* when that count last grew (or the connection began) */
	uint64_t looked_ms; /* when it was last looked at */
};

/* A new connection on socket FD at NOW_MS (monotonic). */
void fb_upload_start(struct fb_upload *u, int fd, uint64_t now_ms);

/* Looks at the count of socket FD again when EVERY_MS have passed since the last look. */
void fb_upload_look(struct fb_upload *u, int fd, uint64_t now_ms, uint64_t every_ms);

/* Whether socket FD still has bytes to send or waiting for the peer's acknowledgement (or
 * UNWRITTEN: bytes not handed to the socket yet) and the peer acknowledged some within the last
 * WITHIN_MS: a send under way. Looks at the count now. */
bool fb_upload_moving(struct fb_upload *u, int fd, bool unwritten, uint64_t now_ms, uint64_t within_ms);

#endif
