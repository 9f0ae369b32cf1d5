/* flowmq-bridge: supervision of flowmq-link, the link process (broker process, broker thread).
 *
 * fb_supervise_spawn() starts flowmq-link with posix_spawn (it sets PR_SET_PDEATHSIG itself and
 * dies with the broker), only the descriptors of ipc/shared.h, its arguments (broker pid,
 * wake signal, whether the staging channel runs, the configuration's name). The tick then looks
 * after it every second: fb_supervise_restart() starts a new one when it has ended (after a
 * growing pause when it ends soon after its start), fb_supervise_watch() kills one that makes no
 * progress for link_timeout while work waits for it (or that opens the spool for 60 s without
 * reading or writing). A flowmq-link of another IPC version is refused once and never started
 * again. fb_supervise_stop() asks for an orderly stop and kills what does not stop, waiting for it
 * (at the broker's stop). fb_supervise_replace() (a reload with changed cloud settings) asks the
 * same without waiting: the tick kills the old link process once 5 s have passed, and starts the
 * new one, with the new configuration, as soon as the old one has ended; the broker thread never
 * waits for it. Nothing is lost either way: what the link process had not settled is in the
 * staging files, the rest in the spool.
 */
#ifndef FB_SUPERVISE_H
#define FB_SUPERVISE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "log.h"
#include "shared.h"

struct fb_supervise {
	/* Set by the caller before the first fb_supervise_spawn(); they must outlive it. */
	struct fb_shared *sh;
	int shfd, efd;             /* the descriptors flowmq-link gets (shared.h) ... */
	int cfgfd;                 /* ... and the configuration's memfd: owned from here on
	                              (fb_supervise_replace() swaps it, fb_supervise_close() closes it) */
	pid_t broker;              /* this process */
	int wake_signo;
	const char *program;       /* flowmq-link */
	const char *config_name;   /* the configuration file, for its log lines */
	const struct fb_logger *lg;
	uint32_t link_timeout_ms;
	/* Called before a link process is started on a fresh staging channel (the last one handed
	 * it back): the channel's writer must close, the new one recovers the files as it leaves
	 * them. */
	void (*fresh)(void *ud);
	/* Asked before that: true while the broker side is not ready for it yet (the tick asks again
	 * at its next check; may be NULL). */
	bool (*fresh_wait)(void *ud);
	void *ud;
	/* Set by the channel's writer: an append found both staging files in use (pending work). */
	bool chan_full;

	/* Private. */
	pid_t child;              /* the link process, 0: none */
	uint64_t started_ms;      /* when the link process was started (monotonic) */
	uint64_t restart_ms;      /* when to start the next one; 0: not decided */
	unsigned quick_fails;     /* link processes in a row that ended soon after their start */
	bool child_running;       /* the current link process has reported its spool open */
	bool killed;              /* ... has been sent SIGKILL as hung, not reaped yet */
	bool refused;             /* flowmq-link is of another IPC version: not started again */
	uint64_t beat;            /* sh->beat as last seen */
	uint64_t beat_ms;         /* when it last moved (or when nothing was pending) */
	uint64_t seen;            /* the reader's sh->chan.seen and file states as last seen */
	unsigned states;
	uint64_t progress_ms;     /* when they last moved (or when nothing was pending) */
	bool replacing;           /* fb_supervise_replace(): the old link process is stopping */
	int next_cfgfd;           /* ... the new one's configuration (only while replacing) */
	uint64_t replace_ms;      /* ... when the old one is killed if it has not ended */
};

/* Returns 0 when PATH is an executable regular file, else a negative errno. Any thread. */
int fb_supervise_check_program(const char *path);

/* Starts a link process. Returns 0 or a negative errno (the spawn failed; an exec failure is logged
 * and sets sh->child_state to it). */
int fb_supervise_spawn(struct fb_supervise *s);

/* True while the link process runs; reaps it (and logs why) once it has ended. */
bool fb_supervise_alive(struct fb_supervise *s);

/* The tick, every second: restarts the link process if it has ended (not before its pause is
 * over); while a replacement is pending, kills the old link process once its 5 s are over and
 * starts the new one, at once, once the old one has ended. */
void fb_supervise_restart(struct fb_supervise *s);

/* The watchdog: kills a hung link process (reaped and replaced by later ticks). WRITER_OPEN: the
 * staging channel's writer is open (only then can records wait for the link process). */
void fb_supervise_watch(struct fb_supervise *s, bool writer_open);

/* Replaces the link process with one that gets the configuration in CFGFD (a memfd, which this
 * takes), without waiting: asks the running one for an orderly stop (at once SIGKILL when it is
 * known to be hung) and returns; fb_supervise_restart() kills it after 5 s and starts the new one
 * once it has ended (not counted as a restart). With no link process running the new one starts
 * here. A second call while a replacement is pending only replaces the pending configuration.
 * Broker thread. */
void fb_supervise_replace(struct fb_supervise *s, int cfgfd);

/* Stops the link process: orderly for at most 5 s, then SIGKILL; waits for it (the broker stops).
 * A pending replacement is dropped. */
void fb_supervise_stop(struct fb_supervise *s);

/* Closes the configuration's memfds (the current one and a pending replacement's); after
 * fb_supervise_stop(). */
void fb_supervise_close(struct fb_supervise *s);

#endif
