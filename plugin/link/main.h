/* flowmq-bridge: the link process's main (link process, its main thread).
 *
 * The link process attaches the shared region (ipc/shared.h), loads the configuration the broker
 * loaded first (cloud settings and cloud_to_edge rules change only with a restart), opens the
 * spool (the reader of the staging channel), runs the cloud session (link.c) and, every 500 ms,
 * copies the status into the shared region and advances the heartbeat, until the broker says stop
 * or dies. It never calls the broker API: its log lines go through the log queue in the region.
 */
#ifndef FB_MAIN_H
#define FB_MAIN_H

#include <stdbool.h>
#include <sys/types.h>

#include "shared.h"

struct fb_main_args {
	struct fb_shared *sh;      /* attached */
	int efd;                   /* the eventfd the broker writes to */
	pid_t broker;              /* the broker process (the parent) */
	int wake_signo;            /* the signal that wakes the broker thread (0: none) */
	bool running;              /* the staging channel's writer runs already (a restart) */
	const char *config_path;   /* the bytes of the configuration the broker loaded first */
	const char *config_name;   /* the file they came from, for log lines */
};

/* Runs the link process until the broker says stop or dies; never returns. The exit status is 0
 * after an orderly stop, 1 otherwise (child_state in the region says why). Link process. */
void fb_main_run(const struct fb_main_args *a) __attribute__((noreturn));

#endif
