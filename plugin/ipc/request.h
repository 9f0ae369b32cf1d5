/* flowmq-bridge: an operator's request to the running link process, and its reply (the
 * flowmq-bridge command posts and waits, flowmq-link's main thread answers; any thread).
 *
 * A spool that a running link process holds can only be changed by that process. The command
 * writes the request as a small text file beside the spool folder (like the status file, so the
 * spool's own files stay exactly the spool's), the link process looks for it at every turn of
 * its main loop (at most 500 ms), claims it by renaming it, does it, and writes the reply into a
 * file named after the request's nonce, which the command reads and removes:
 *
 *   SPOOL-request              at most one pending; made with link(2): a second one is refused
 *     flowmq-bridge-request 1
 *     op requeue-dead          requeue-dead | purge-dead
 *     nonce 3f9c...            32 hex digits
 *     pid 4242                 the command's
 *   SPOOL-request.taken        the request being worked on (a link process that dies leaves it;
 *                              the next one answers it as interrupted)
 *   SPOOL-reply.NONCE
 *     flowmq-bridge-reply 1
 *     ok 1                     1: done; 0: not (error says why; done counts what was)
 *     done 2                   dead letters requeued or purged
 *     left 0                   of those the request found, still to do (it goes on)
 *     error ...
 *
 * A command that gives up before the link process claimed the request takes it back (rename);
 * then nothing happened.
 */
#ifndef FB_REQUEST_H
#define FB_REQUEST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define FB_REQUEST_MAGIC "flowmq-bridge-request 1"
#define FB_REPLY_MAGIC "flowmq-bridge-reply 1"

enum fb_request_op {
	FB_REQUEST_REQUEUE_DEAD = 1,
	FB_REQUEST_PURGE_DEAD = 2,
};

struct fb_request {
	enum fb_request_op op;
	char nonce[33];
	pid_t pid;
};

struct fb_reply {
	bool ok;
	/* DONE is not known: the reply of a link process to a request an earlier one claimed and did
	 * not answer (it ended meanwhile); LEFT is then what spool "dead" holds now. */
	bool done_unknown;
	uint64_t done;
	uint64_t left;
	char error[256];
};

/* "requeue-dead" or "purge-dead". Any thread. */
const char *fb_request_op_name(enum fb_request_op op);

/* Fills RQ->nonce with 32 random hex digits. Returns 0 or a negative errno. */
int fb_request_nonce(struct fb_request *rq);

/* Posts RQ for the link process of the spool at SPOOL_PATH. Returns 0, -EEXIST when a request is
 * pending already, or another negative errno. The command. */
int fb_request_post(const char *spool_path, const struct fb_request *rq);

/* Takes back the request with NONCE if the link process has not claimed it. Returns 0 (taken
 * back: nothing was done), -EINPROGRESS when it has been claimed, or another negative errno. */
int fb_request_withdraw(const char *spool_path, const char *nonce);

/* Reads and removes the reply to NONCE. Returns 0 with *RP, -ENOENT when there is none yet,
 * -EPROTO for a file that is no reply, or another negative errno. The command. */
int fb_reply_take(const char *spool_path, const char *nonce, struct fb_reply *rp);

/* Claims the pending request, if any. Returns 1 with *RQ, 0 when there is none, or -EPROTO for
 * an unreadable one (removed, not answered: its command times out), or another negative errno.
 * Link process, main thread. */
int fb_request_claim(const char *spool_path, struct fb_request *rq);

/* A request a previous link process claimed and did not answer (it ended meanwhile): returns 1
 * with *RQ and removes it, or 0 when there is none. Link process, main thread, at its start. */
int fb_request_abandoned(const char *spool_path, struct fb_request *rq);

/* Writes RP as the reply to RQ and ends the claim. Returns 0 or a negative errno. Link process,
 * main thread. */
int fb_reply_post(const char *spool_path, const struct fb_request *rq, const struct fb_reply *rp);

#endif
