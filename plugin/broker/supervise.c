/* flowmq-bridge, broker process, broker thread: supervision of flowmq-link (see supervise.h):
 * starting, watching, restarting and stopping the link process. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "record.h" /* fb_mono_ms(), fb_sleep_ms() */
#include "supervise.h"

/* A link process that has not opened the spool, and has read or written nothing, this long is
 * taken for hung: opening a damaged spool (copying it, RocksDB's repair, re-queueing every record)
 * may take far longer on a slow card, but it keeps reading and writing (link/main.c, open_watch). */
#define START_HANG_MS 60000
/* A link process that ends within RESTART_QUICK_MS of its start is restarted after a growing
 * pause, at most RESTART_MAX_MS. */
#define RESTART_QUICK_MS 10000
#define RESTART_MAX_MS 16000
/* How long an orderly stop of the link process may take before it is killed, and how long the
 * broker then waits for the kernel to end it. */
#define STOP_WAIT_MS 5000
#define KILL_WAIT_MS 1000

/* Returns 0 when PATH is an executable regular file, else a negative errno. */
int fb_supervise_check_program(const char *path)
{
	struct stat st;

	if(path == NULL || path[0] == '\0'){
		return -ENOENT;
	}
	if(stat(path, &st) < 0){
		return -errno;
	}
	if(!S_ISREG(st.st_mode)){
		return S_ISDIR(st.st_mode) ? -EISDIR : -EACCES;
	}
	if(access(path, X_OK) < 0){
		return -errno;
	}
	return 0;
}

/* Starts a link process: posix_spawn() of flowmq-link with the descriptors of shared.h and
 * nothing else (the broker's sockets, log files and the rest are closed), every signal at its
 * default and none blocked. posix_spawn() does not copy the broker's page tables as fork() would
 * (a broker with a large heap, or the sanitizer build's shadow memory, made that take long on the
 * broker thread); flowmq-link sets PR_SET_PDEATHSIG itself and checks that the broker is still its
 * parent. Once a link process has made the staging channel ready (reset it), the next one follows
 * it as it is (the broker may have staged records meanwhile); before that a new one recovers and
 * resets it again. */
int fb_supervise_spawn(struct fb_supervise *s)
{
	bool running = atomic_load_explicit(&s->sh->chan.ready, memory_order_acquire) != 0;
	char pid_s[24], sig_s[24];
	char *argv[] = { (char *)s->program, "--broker-pid", pid_s, "--wake-signal", sig_s,
		"--running", running ? "1" : "0", "--config-name", (char *)s->config_name, NULL };
	const int from[3] = { s->shfd, s->efd, s->cfgfd };
	const int to[3] = { FB_LINK_FD_SHARED, FB_LINK_FD_EVENT, FB_LINK_FD_CONFIG };
	int tmp[3] = { -1, -1, -1 };
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none, all;
	pid_t pid;
	int rc = 0;

	if(!running && s->fresh){
		s->fresh(s->ud);
	}
	snprintf(pid_s, sizeof(pid_s), "%d", (int)s->broker);
	snprintf(sig_s, sizeof(sig_s), "%d", s->wake_signo);

	atomic_store(&s->sh->child_state, 0);
	if(posix_spawn_file_actions_init(&fa) != 0){
		return -ENOMEM;
	}
	if(posix_spawnattr_init(&at) != 0){
		posix_spawn_file_actions_destroy(&fa);
		return -ENOMEM;
	}
	/* Copies out of the way of 3..5 first (close-on-exec: they stay in the broker only), then
	 * into place in the child (dup2 clears close-on-exec there). */
	for(int i = 0; i < 3 && rc == 0; i++){
		tmp[i] = fcntl(from[i], F_DUPFD_CLOEXEC, 10);
		rc = tmp[i] < 0 ? errno : posix_spawn_file_actions_adddup2(&fa, tmp[i], to[i]);
	}
	if(rc == 0){
		rc = posix_spawn_file_actions_addclosefrom_np(&fa, FB_LINK_FD_CONFIG + 1);
	}
	sigemptyset(&none);
	sigfillset(&all);
	if(rc == 0){
		rc = posix_spawnattr_setsigmask(&at, &none);
	}
	if(rc == 0){
		rc = posix_spawnattr_setsigdefault(&at, &all);
	}
	if(rc == 0){
		rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	}
	if(rc == 0){
		rc = posix_spawn(&pid, s->program, &fa, &at, argv, environ);
		if(rc != 0 && rc != EAGAIN && rc != ENOMEM){
			/* The exec failed (glibc reports it here): as a link process that ended at once. */
			fb_log(s->lg, MOSQ_LOG_ERR, "cannot run flowmq-link at %s: %s", s->program, strerror(rc));
			atomic_store(&s->sh->child_state, -rc);
		}
	}
	for(int i = 0; i < 3; i++){
		if(tmp[i] >= 0){
			close(tmp[i]);
		}
	}
	posix_spawnattr_destroy(&at);
	posix_spawn_file_actions_destroy(&fa);
	if(rc != 0){
		return -rc;
	}
	s->child = pid;
	s->started_ms = fb_mono_ms();
	s->child_running = false;
	s->killed = false;
	s->beat = atomic_load_explicit(&s->sh->beat, memory_order_acquire);
	s->beat_ms = s->started_ms;
	return 0;
}

/* True while the link process runs; reaps it (and logs why) once it has ended. */
bool fb_supervise_alive(struct fb_supervise *s)
{
	int status;
	pid_t r;

	if(s->child <= 0){
		return false;
	}
	r = waitpid(s->child, &status, WNOHANG);
	if(r == 0){
		return true;
	}
	if(r == s->child && WIFEXITED(status) && WEXITSTATUS(status) == FB_IPC_EXIT_VERSION){
		/* Not restarted: another one would say the same. */
		fb_log(s->lg, MOSQ_LOG_ERR, "flowmq-link at %s speaks IPC version %u, this plugin version %u; "
				"refusing it (install the flowmq-link of this plugin, or set plugin_opt_link_program)",
				s->program, (unsigned)s->sh->hdr.link_version, (unsigned)FB_IPC_VERSION);
		s->refused = true;
	}else if(r == s->child && WIFEXITED(status) && WEXITSTATUS(status) == 127
			&& atomic_load(&s->sh->child_state) < 0){
		fb_log(s->lg, MOSQ_LOG_ERR, "cannot run flowmq-link at %s: %s", s->program,
				strerror(-atomic_load(&s->sh->child_state)));
	}else if(r == s->child && !s->killed
			&& !(atomic_load(&s->sh->stop) && WIFEXITED(status) && WEXITSTATUS(status) == 0)){
		if(WIFSIGNALED(status)){
			fb_log(s->lg, MOSQ_LOG_ERR, "the link process (pid %d) was killed by signal %d",
					(int)s->child, WTERMSIG(status));
		}else{
			fb_log(s->lg, MOSQ_LOG_ERR, "the link process (pid %d) exited with status %d",
					(int)s->child, WEXITSTATUS(status));
		}
	}
	s->child = 0;
	s->killed = false;
	s->child_running = false;
	return false;
}

/* True while a link process would start on a fresh channel and the broker side asks it to wait. */
static bool fresh_waits(struct fb_supervise *s)
{
	return !atomic_load_explicit(&s->sh->chan.ready, memory_order_acquire) && s->fresh_wait
		&& s->fresh_wait(s->ud);
}

/* The replacement proper, once the old link process has ended: the pending configuration takes
 * the place of the old one, and the new link process starts at once (no pause, not counted as a
 * restart: nothing failed). */
static void replace_now(struct fb_supervise *s)
{
	int rc;

	atomic_store(&s->sh->stop, false);
	close(s->cfgfd);
	s->cfgfd = s->next_cfgfd;
	s->next_cfgfd = -1;
	s->replacing = false;
	s->restart_ms = 0;
	s->quick_fails = 0;
	s->started_ms = fb_mono_ms();
	if(!s->refused && (rc = fb_supervise_spawn(s)) < 0 && atomic_load(&s->sh->child_state) == 0){
		fb_log(s->lg, MOSQ_LOG_ERR, "cannot start the link process: %s; retrying", strerror(-rc));
	}
}

/* Restarts the link process if it has ended; carries on a pending replacement. Broker thread. */
void fb_supervise_restart(struct fb_supervise *s)
{
	uint64_t now;
	int rc;

	if(s->replacing){
		if(fb_supervise_alive(s)){
			now = fb_mono_ms();
			if(now < s->replace_ms){
				return;
			}
			if(!s->killed){
				fb_log(s->lg, MOSQ_LOG_WARNING, "the link process did not stop within %d s; killing it",
						STOP_WAIT_MS / 1000);
				kill(s->child, SIGKILL);
				s->killed = true;
				s->replace_ms = now + KILL_WAIT_MS; /* reaped by a later tick */
				return;
			}
			/* As fb_supervise_stop(): one stuck in the kernel is not waited for. */
			fb_log(s->lg, MOSQ_LOG_WARNING, "the link process (pid %d) has not ended after SIGKILL; "
					"not waiting for it", (int)s->child);
			s->child = 0;
		}
		if(!fresh_waits(s)){
			replace_now(s);
		}
		return;
	}
	if((s->child > 0 && fb_supervise_alive(s)) || atomic_load(&s->sh->stop) || s->refused){
		return;
	}
	now = fb_mono_ms();
	if(s->restart_ms == 0){
		/* Just ended. One that ended soon after its start (a spool it cannot open, say) is
		 * started again after 1 s, 2 s, 4 s ... up to RESTART_MAX_MS, not in a tight loop. */
		s->quick_fails = now - s->started_ms < RESTART_QUICK_MS ? s->quick_fails + 1 : 0;
		s->restart_ms = now;
		if(s->quick_fails){
			uint64_t wait = (uint64_t)1000 << (s->quick_fails < 6 ? s->quick_fails - 1 : 5);
			s->restart_ms += wait < RESTART_MAX_MS ? wait : RESTART_MAX_MS;
		}
	}
	if(now < s->restart_ms || fresh_waits(s)){
		return;
	}
	s->restart_ms = 0;
	s->started_ms = now; /* also when the spawn fails: that counts as a quick end */
	fb_log(s->lg, MOSQ_LOG_NOTICE, "restarting the link process; what it had not sent stays in the spool");
	fb_count(&s->sh->ctr.link_restarts, 1);
	rc = fb_supervise_spawn(s);
	if(rc < 0 && atomic_load(&s->sh->child_state) == 0){ /* an exec failure is logged */
		fb_log(s->lg, MOSQ_LOG_ERR, "cannot start the link process: %s", strerror(-rc));
	}
}

/* Kills a hung link process. It is reaped by a later tick (fb_supervise_alive(), never waiting): the
 * kernel ends even a stopped process on SIGKILL, but not necessarily at once. */
static void kill_hung(struct fb_supervise *s, const char *why)
{
	fb_log(s->lg, MOSQ_LOG_ERR, "the link process (pid %d) %s; killing it and starting a new one "
			"(what it had not sent is in the staging files and the spool)", (int)s->child, why);
	atomic_store_explicit(&s->sh->ctr.link_stalled, 1, memory_order_relaxed);
	kill(s->child, SIGKILL);
	s->killed = true;
}

/* The watchdog, every second in the tick: a link process that makes no progress for link_timeout
 * while work is pending is hung, and replaced. Progress is the heartbeat (its snapshot loop turns,
 * which a stopped process, or one whose worker holds the spool's lock, does not do) and the
 * reader side of the staging channel (its "seen" mark moves as the worker takes records, a file
 * state moves as it settles and empties a file). Pending work is a record staged and not taken,
 * or an append that found both staging files in use. While the spool reports a full disk, a
 * channel that does not drain is that state, not a hang: then the heartbeat alone counts. */
void fb_supervise_watch(struct fb_supervise *s, bool writer_open)
{
	struct fb_shared *sh = s->sh;
	uint64_t now = fb_mono_ms(), beat, seen, appended, timeout;
	unsigned states;
	bool pending;

	if(s->child <= 0 || s->killed || s->replacing){
		return; /* a replacement's old link process is killed by its own deadline */
	}
	if(!s->child_running){
		if(atomic_load_explicit(&sh->child_state, memory_order_acquire) != 1){
			beat = atomic_load_explicit(&sh->beat, memory_order_acquire);
			if(beat != s->beat){
				s->beat = beat;
				s->beat_ms = now; /* it reads or writes: a long open, not a hang */
			}
			if(now - s->beat_ms >= START_HANG_MS){
				kill_hung(s, "has been opening the spool for 60 s without reading or writing");
			}
			return;
		}
		s->child_running = true;
		s->beat = atomic_load_explicit(&sh->beat, memory_order_acquire);
		s->beat_ms = s->progress_ms = now;
	}
	timeout = s->link_timeout_ms;
	beat = atomic_load_explicit(&sh->beat, memory_order_acquire);
	if(beat != s->beat){
		s->beat = beat;
		s->beat_ms = now;
		/* A new link process that beats is no longer the hung one. */
		atomic_store_explicit(&s->sh->ctr.link_stalled, 0, memory_order_relaxed);
	}
	seen = atomic_load_explicit(&sh->chan.seen, memory_order_relaxed);
	states = atomic_load_explicit(&sh->chan.state[0], memory_order_relaxed)
		| atomic_load_explicit(&sh->chan.state[1], memory_order_relaxed) << 4;
	appended = atomic_load_explicit(&sh->chan.appended, memory_order_relaxed);
	if(seen != s->seen || states != s->states){
		s->seen = seen;
		s->states = states;
		s->progress_ms = now;
		s->chan_full = false;
	}
	pending = writer_open && (appended != seen || s->chan_full);
	if(!pending){
		s->beat_ms = s->progress_ms = now;
		return;
	}
	if(now - s->beat_ms >= timeout){
		kill_hung(s, "shows no heartbeat while records wait for it");
	}else if(now - s->progress_ms >= timeout
			&& !atomic_load_explicit(&s->sh->ctr.disk_full, memory_order_relaxed)){
		kill_hung(s, "takes no staged records");
	}
}

/* Asks the link process for an orderly stop without waiting for it: at once SIGKILL when it is
 * known to be hung, else a wake of its worker, which sees sh->stop. */
static void ask_stop(struct fb_supervise *s)
{
	uint64_t one = 1;

	atomic_store(&s->sh->stop, true);
	if(!s->killed && atomic_load_explicit(&s->sh->ctr.link_stalled, memory_order_relaxed)){
		kill(s->child, SIGKILL);
		s->killed = true;
	}
	if(!s->killed && write(s->efd, &one, sizeof(one)) < 0){
		/* the worker also wakes within its poll timeout */
	}
}

/* Replaces the link process with one started with CFGFD, never waiting (a reload on the broker
 * thread: local traffic goes on meanwhile). The old one gets STOP_WAIT_MS for its orderly stop,
 * as at a stop of the broker; the tick (fb_supervise_restart()) kills it after that and starts the
 * new one once it has been reaped. */
void fb_supervise_replace(struct fb_supervise *s, int cfgfd)
{
	if(s->replacing){
		close(s->next_cfgfd); /* never used: the newest configuration wins */
		s->next_cfgfd = cfgfd;
		return;
	}
	s->next_cfgfd = cfgfd;
	s->replacing = true;
	if(!fb_supervise_alive(s)){
		/* none running (it ended and waits for its restart, or was refused): now, unless the
		 * broker side asks a fresh channel to wait, then the tick starts it */
		if(!fresh_waits(s)){
			replace_now(s);
		}
		return;
	}
	s->replace_ms = fb_mono_ms() + STOP_WAIT_MS;
	ask_stop(s);
}

/* Closes the configuration's memfds. */
void fb_supervise_close(struct fb_supervise *s)
{
	if(s->replacing){
		close(s->next_cfgfd);
		s->replacing = false;
	}
	if(s->cfgfd >= 0){
		close(s->cfgfd);
		s->cfgfd = -1;
	}
}

/* Stops the link process: an orderly stop (it disconnects from the cloud and closes the spool)
 * for at most STOP_WAIT_MS (what is left of them when a replacement had asked for it already), at
 * once SIGKILL when it is known to be hung. Nothing is lost either way: what it had not settled
 * is in the staging files. Waits at most KILL_WAIT_MS more for the kernel to end it; one that does
 * not end even then (stuck in the kernel) is left to init. */
void fb_supervise_stop(struct fb_supervise *s)
{
	uint64_t until = fb_mono_ms() + STOP_WAIT_MS;

	if(s->replacing){
		/* The broker stops: no new link process; the old one is stopping already, within the
		 * time it was given then. */
		until = s->replace_ms;
		close(s->next_cfgfd);
		s->next_cfgfd = -1;
		s->replacing = false;
	}
	if(s->child <= 0){
		return;
	}
	ask_stop(s);
	if(!s->killed){
		while(fb_supervise_alive(s) && fb_mono_ms() < until){
			fb_sleep_ms(5);
		}
		if(s->child <= 0){
			return;
		}
		fb_log(s->lg, MOSQ_LOG_WARNING, "the link process did not stop within %d s; killing it",
				STOP_WAIT_MS / 1000);
		kill(s->child, SIGKILL);
		s->killed = true;
	}
	until = fb_mono_ms() + KILL_WAIT_MS;
	while(fb_supervise_alive(s) && fb_mono_ms() < until){
		fb_sleep_ms(5);
	}
	if(s->child > 0){
		fb_log(s->lg, MOSQ_LOG_WARNING, "the link process (pid %d) has not ended after SIGKILL; "
				"not waiting for it", (int)s->child);
		s->child = 0;
	}
}

