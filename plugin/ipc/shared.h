/* flowmq-bridge: THE contract between the two programs, the region they share (both processes).
 *
 * The plugin (broker process, broker thread) creates one region (a memfd, mapped MAP_SHARED by
 * both) and an eventfd, and starts flowmq-link with them. Everything the two exchange goes
 * through this region, the eventfd, the wake signal (waker.h) and files in the spool folder:
 *
 *   what                       written by                    read by
 *   hdr (magic, version, size) broker (link: link_version)   link checks it before anything else
 *   stop                       broker                        link: end in order
 *   child_state                link (1 ready, <0 -errno)     broker: start wait, supervision
 *   beat                       link (every 500 ms turn)      broker's watchdog
 *   notified                   broker sets, link clears      eventfd writes at most once per wake-up
 *   ctr (counters.h)           both, relaxed atomics         broker publishes them
 *   chan (chan.h)              writer part: broker           staging channel of the captures;
 *                              reader part: link             the records are in the staging files
 *   sgen + status (status.h)   link, under a sequence lock   broker publishes a whole copy
 *   logq (logq.h)              link's threads                broker logs the lines
 *   c2e (c2e.h)                tail/pushed: link             broker injects, then publishes
 *                              head/released: broker         released; link deletes from spool "in"
 *   rules (rulectr.h)          broker (capture)              broker publishes; either may read
 *   requeue (c2e.h)            tail/released: link (main     broker stages the dead letters of
 *                              thread; released: broker     `spool requeue-dead`; link deletes
 *                              after a drop) head: broker    them from "dead" once HEAD is past
 *
 * Crashes. Neither side ever waits for the other while holding anything: every structure is a
 * single-writer ring, a counter or a sequence lock, and a writer that dies half-way through an
 * update has not published it. A link process that dies or hangs (no heartbeat while records
 * wait, see broker/supervise.c) is killed and started again by the broker; what it had not
 * settled is in the staging files (page cache) and what it had settled is in RocksDB, so the new
 * one carries on from there; the region outlives it (sequence locks are evened by the next writer,
 * fb_seq_writer_reset()). The link process dies with the broker (PR_SET_PDEATHSIG, and it checks
 * getppid()); the staging files and the spool survive, and the next start recovers them.
 *
 * The header comes first and never changes shape: a flowmq-link built for another FB_IPC_VERSION
 * (any change to this region's layout raises it) writes its own version into link_version and
 * exits with FB_IPC_EXIT_VERSION, and the plugin refuses it with a clear log line.
 */
#ifndef FB_SHARED_H
#define FB_SHARED_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "c2e.h"
#include "chan.h"
#include "counters.h"
#include "logq.h"
#include "rulectr.h"
#include "status.h"

#define FB_IPC_MAGIC UINT64_C(0x314b4e494c514d46) /* "FMQLINK1" */
#ifdef FB_IPC_VERSION_OVERRIDE
#define FB_IPC_VERSION FB_IPC_VERSION_OVERRIDE /* only for the test of a mismatched flowmq-link */
#else
#define FB_IPC_VERSION 5
#endif

/* flowmq-link's exit status when the region is not of its version. */
#define FB_IPC_EXIT_VERSION 86

/* The descriptors flowmq-link is started with (every other one is closed): the region, the
 * eventfd the broker wakes its worker with, and a memfd with the bytes of the configuration the
 * broker loaded first (read as /proc/self/fd/FB_LINK_FD_CONFIG). Its arguments:
 *   flowmq-link --broker-pid PID --wake-signal SIGNO --running 0|1 --config-name FILE */
#define FB_LINK_FD_SHARED 3
#define FB_LINK_FD_EVENT 4
#define FB_LINK_FD_CONFIG 5

struct fb_shared_header {
	uint64_t magic;           /* FB_IPC_MAGIC */
	uint32_t version;         /* broker: its FB_IPC_VERSION */
	uint32_t link_version;    /* link: its FB_IPC_VERSION, written before it checks */
	uint64_t size;            /* broker: sizeof(struct fb_shared) */
};

struct fb_shared {
	struct fb_shared_header hdr;
	atomic_bool stop;                /* broker: the link process is to stop */
	atomic_bool notified;            /* an eventfd write to the link process is pending */
	atomic_int child_state;          /* link process: 1 running, < 0 -errno of a failed start */
	atomic_uint_fast64_t beat;       /* link process: advanced at every turn of its status loop */
	struct fb_counters ctr;
	struct fb_chan_shared chan;
	atomic_uint sgen;                /* link process: sequence lock over STATUS */
	struct fb_status status;
	struct fb_logq_ring logq;
	struct fb_c2e c2e;
	struct fb_rulectr rules;         /* broker thread: per edge_to_cloud rule */
	struct fb_c2e requeue;           /* link process: dead letters to stage again (request.h) */
};

/* Creates the region (a memfd of sizeof(struct fb_shared), header filled in) and maps it.
 * Returns 0 with *SH and *FD (close-on-exec; the caller passes it on to flowmq-link), or a
 * negative errno. Broker thread. */
int fb_shared_create(struct fb_shared **sh, int *fd);

/* Maps the region of FD and checks its header against VERSION (the caller's FB_IPC_VERSION),
 * after writing VERSION into hdr.link_version. Returns 0 with *SH, -EPROTO when the region is of
 * another version (or not a region at all), or another negative errno. Link process. */
int fb_shared_attach(int fd, uint32_t version, struct fb_shared **sh);

/* Unmaps. Accepts NULL. Either process. */
void fb_shared_unmap(struct fb_shared *sh);

#endif
