/* flowmq-bridge: flowmq-link, the link process's program: its main thread; the cloud session's
 * worker (session.c) calls the cloud-to-edge hooks here.
 *
 * The plugin starts it (posix_spawn; it sets PR_SET_PDEATHSIG itself first) with the descriptors of
 * ipc/shared.h and nothing else. It attaches the shared region (refusing one of another IPC
 * version with exit status FB_IPC_EXIT_VERSION), loads the configuration the broker loaded first
 * (cloud settings and cloud_to_edge rules change only with a restart), opens the spool (the reader
 * of the staging channel), runs the cloud session (session.c) and, every 500 ms, copies the status
 * into the shared region and advances the heartbeat, until the broker says stop or dies. It never
 * calls the broker API: its log lines go through the log queue in the region.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "session.h"
#include "logq.h"
#include "prom.h"
#include "shared.h"
#include "record.h"
#include "route.h"
#include "spool.h"
#include "statusfile.h"
#include "tail.h"
#include "waker.h"

/* Bytes of recent records kept in memory for the worker (see tail.h). */
#define TAIL_BUDGET (8u << 20)
/* Status values are copied into the shared region this often; each turn also advances the
 * heartbeat. */
#define SNAPSHOT_MS 500
/* While an operator's request is in progress (control.h), its turns come this often. */
#define CONTROL_MS 20

struct fb_main_args {
	struct fb_shared *sh;      /* attached */
	int efd;                   /* the eventfd the broker writes to */
	pid_t broker;              /* the broker process (the parent) */
	int wake_signo;            /* the signal that wakes the broker thread (0: none) */
	bool running;              /* the staging channel's writer runs already (a restart) */
	const char *config_path;   /* the bytes of the configuration the broker loaded first */
	const char *config_name;   /* the file they came from, for log lines */
};

struct link_main {
	const struct fb_main_args *a;
	struct fb_shared *sh;
	struct fb_logq logq;
	struct fb_logger lg;       /* into the log queue */
	struct fb_config *cfg;
	struct fb_routes *routes;
	struct fb_spool *spool;
	struct fb_tail tail;
	struct fb_session *link;
	struct fb_prom *prom;     /* the metrics.listen endpoint, NULL when none */
	struct fb_control *ctl;   /* the operator's requests (requeue-dead, purge-dead); NULL: none */
	bool in_more;             /* spool "in" may hold records not in the ring yet */
	int file_err;             /* why the large record at the head of what waits could not be
	                           * written to its file for the ring (a negative errno), 0: none */
	uint64_t file_retry_ms;   /* monotonic ms before which it is not tried again */
	bool pump_full;           /* the last pump stopped at a full ring */
	uint64_t in_deleted;      /* newest "in" seq released and deleted */
	char *status_path;         /* the status file (statusfile.h), NULL when out of memory */
	uint64_t status_due;       /* monotonic ms of its next refresh */
	bool status_connected;     /* the state it last saw */
	uint64_t status_since;     /* wall ms since when in that state */
	bool status_failed;        /* a failure to write it has been logged */
};

/* ---- cloud to edge: the ring's producer ----------------------------------------------------- */

/* fb_session_deps.c2e_push: straight into the ring unless older records wait in the spool. */
static int c2e_push(void *ud, uint64_t seq, const void *rec, size_t len)
{
	struct link_main *m = ud;

	if(m->in_more || atomic_load_explicit(&m->sh->c2e.pushed, memory_order_relaxed) + 1 != seq
			|| fb_c2e_put(&m->sh->c2e, m->cfg->spool.path, FB_C2E_STEM, seq, rec, len) != 0){
		m->in_more = true;
		return -ENOBUFS;
	}
	return 0;
}

/* A large record whose file for the ring cannot be written (a full disk) is tried again this often;
 * meanwhile the broker is not woken for it. */
#define C2E_FILE_RETRY_MS 1000

static int pump_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct link_main *m = ud;
	int rc = fb_c2e_put(&m->sh->c2e, m->cfg->spool.path, FB_C2E_STEM, seq, val, len);

	if(rc == -ENOBUFS){
		m->pump_full = true;
		return 1; /* full: the rest waits */
	}
	if(rc < 0){
		if(m->file_err == 0){
			fb_log(&m->lg, MOSQ_LOG_ERR, "cloud message %llu (%zu bytes) cannot be handed to the broker: "
					"writing its file in %s failed: %s; it and the cloud messages behind it wait in spool "
					"\"in\" and are tried again every second", (unsigned long long)seq, len,
					m->cfg->spool.path, strerror(-rc));
		}
		m->file_err = rc;
		m->file_retry_ms = fb_mono_ms() + C2E_FILE_RETRY_MS;
		m->pump_full = true;
		return 1;
	}
	if(m->file_err){
		fb_log(&m->lg, MOSQ_LOG_NOTICE, "cloud message %llu handed to the broker: the cloud messages "
				"waiting in spool \"in\" go on", (unsigned long long)seq);
		m->file_err = 0;
	}
	return 0;
}

/* fb_session_deps.c2e_pending: deletes from spool "in" what the broker has injected, hands over what
 * waits, and says whether the broker has anything left to take. */
static size_t c2e_pending(void *ud)
{
	struct link_main *m = ud;
	struct fb_shared *sh = m->sh;
	uint64_t released = atomic_load_explicit(&sh->c2e.released, memory_order_acquire);

	if(released > m->in_deleted && fb_spool_delete_through(m->spool, FB_Q_IN, m->in_deleted, released) == 0){
		m->in_deleted = released;
	}
	if(m->in_more && (m->file_err == 0 || fb_mono_ms() >= m->file_retry_ms)){
		int n;

		m->pump_full = false;
		n = fb_spool_read(m->spool, FB_Q_IN, atomic_load_explicit(&sh->c2e.pushed, memory_order_relaxed),
				256, pump_visit, m);
		if(n >= 0 && n < 256 && !m->pump_full){
			m->in_more = false; /* everything in spool "in" is in the ring */
		}
	}
	/* While a large record's file cannot be written, the broker has nothing to take for it. */
	return fb_c2e_waiting(&sh->c2e) || (m->in_more && m->file_err == 0);
}

/* fb_session_deps.wake: the broker thread has cloud messages to inject. */
static void wake_broker(void *ud)
{
	struct link_main *m = ud;

	fb_waker_wake(m->a->broker, m->a->wake_signo);
}

/* ---- status ---------------------------------------------------------------------------------- */

static int oldest_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct fb_record r;
	(void)seq;

	if(fb_record_decode(val, len, &r) == 0){
		*(uint64_t *)ud = r.enqueue_ms;
	}
	return 1;
}

_Static_assert(FB_STATUS_LANES == FB_LANES, "one status entry per lane");

/* Each lane's depth and the age of its oldest record (one read of the spool per lane that holds
 * records). */
static void snapshot_lanes(struct link_main *m, struct fb_status *st)
{
	uint64_t first[FB_LANES], now = fb_wall_ms();

	fb_spool_lane_stats(m->spool, st->lane_messages, first);
	for(unsigned l = 0; l < FB_LANES; l++){
		uint64_t enqueued = 0;

		if(st->lane_messages[l] && fb_spool_lane_oldest(m->spool, l, oldest_visit, &enqueued) > 0 && enqueued){
			st->lane_oldest_age_s[l] = now > enqueued ? (now - enqueued) / 1000u : 0;
		}
	}
}

/* Copies the status into the shared region. The spool's disk-full state goes into the counter too,
 * for the broker thread: its status and its watchdog (a link process that takes no staged records
 * while the disk is full is not hung) read the counter. */
static void snapshot(struct link_main *m)
{
	struct fb_shared *sh = m->sh;
	struct fb_status st;
	uint64_t enqueued = 0;

	memset(&st, 0, sizeof(st));
	fb_session_status(m->link, &st.link);
	fb_spool_stats(m->spool, &st.spool);
	if(st.spool.messages && fb_spool_oldest(m->spool, oldest_visit, &enqueued) > 0 && enqueued){
		uint64_t now = fb_wall_ms();
		st.oldest_age_s = now > enqueued ? (now - enqueued) / 1000u : 0;
	}
	snapshot_lanes(m, &st);
	atomic_store_explicit(&sh->ctr.disk_full, st.spool.disk_full ? 1u : 0u, memory_order_relaxed);
	fb_seq_write_begin(&sh->sgen);
	memcpy(&sh->status, &st, sizeof(st));
	fb_seq_write_end(&sh->sgen);
}

/* Every status_interval (and at once when the connection comes or goes): rewrites the status file
 * that `flowmq-bridge health` reads. A failure is logged once, and again after a success. */
static void status_file(struct link_main *m)
{
	struct fb_link_status ls;
	struct fb_statusfile sf;
	uint64_t now = fb_mono_ms();
	bool connected;
	int rc;

	if(m->status_path == NULL){
		return;
	}
	fb_session_status(m->link, &ls);
	connected = ls.state == FB_LINK_CONNECTED;
	if(connected == m->status_connected && now < m->status_due){
		return;
	}
	if(connected != m->status_connected){
		m->status_connected = connected;
		m->status_since = fb_wall_ms();
	}
	m->status_due = now + m->cfg->status_interval_ms;
	memset(&sf, 0, sizeof(sf));
	sf.updated_ms = fb_wall_ms();
	sf.interval_ms = m->cfg->status_interval_ms;
	sf.pid = getpid();
	snprintf(sf.state, sizeof(sf.state), "%s", fb_status_state_name(ls.state));
	sf.since_ms = m->status_since;
	snprintf(sf.endpoint, sizeof(sf.endpoint), "%s", ls.endpoint);
	snprintf(sf.last_error, sizeof(sf.last_error), "%s", ls.last_error);
	rc = fb_statusfile_write(m->status_path, &sf);
	if(rc < 0 && !m->status_failed){
		fb_log(&m->lg, MOSQ_LOG_WARNING, "cannot write the status file %s: %s", m->status_path, strerror(-rc));
	}
	m->status_failed = rc < 0;
}

/* ---- start ----------------------------------------------------------------------------------- */

/* Waits until no other process holds the spool's RocksDB lock: the link process of a broker that
 * was just killed may take a moment to die. */
static void wait_for_lock(const char *path)
{
	char lock[4096];
	uint64_t until = fb_mono_ms() + 10000;
	int fd;

	snprintf(lock, sizeof(lock), "%s/LOCK", path);
	fd = open(lock, O_RDWR | O_CLOEXEC);
	if(fd < 0){
		return;
	}
	while(fb_mono_ms() < until){
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
		if(fcntl(fd, F_GETLK, &fl) != 0 || fl.l_type == F_UNLCK){
			break;
		}
		fb_sleep_ms(20);
	}
	close(fd);
}

/* While the spool opens: a thread that advances the heartbeat every 500 ms in which the process
 * read or wrote something (/proc/self/io), so that the broker's watchdog tells a long open that
 * makes progress (a salvage, a long WAL) from one that is stuck. */
struct open_watch {
	atomic_uint_fast64_t *beat;
	atomic_bool done;
	pthread_t thread;
};

static uint64_t io_bytes(void)
{
	FILE *f = fopen("/proc/self/io", "re");
	char line[128];
	unsigned long long v, sum = 0;

	if(f == NULL){
		return 0;
	}
	while(fgets(line, sizeof(line), f)){
		if(sscanf(line, "rchar: %llu", &v) == 1 || sscanf(line, "wchar: %llu", &v) == 1){
			sum += v;
		}
	}
	fclose(f);
	return sum;
}

static void *open_watch_run(void *arg)
{
	struct open_watch *w = arg;
	uint64_t last = io_bytes();

	while(!atomic_load(&w->done)){
		uint64_t now;

		fb_sleep_ms(SNAPSHOT_MS);
		now = io_bytes();
		if(now != last){
			last = now;
			atomic_fetch_add_explicit(w->beat, 1, memory_order_release);
		}
	}
	return NULL;
}

/* The configuration's own log lines while it is loaded again in here: its warnings were logged
 * when the broker loaded the same bytes; an error (a password file that changed since) names the
 * file they came from, not the descriptor they are read through. */
struct config_log {
	const struct fb_main_args *a;
	const struct fb_logger *to;
};

static void config_log(void *ud, int level, const char *line)
{
	struct config_log *c = ud;
	const char *path = c->a->config_path, *base = strrchr(path, '/');
	size_t plen = strlen(path), blen;

	if(level != MOSQ_LOG_ERR){
		return;
	}
	base = base ? base + 1 : path;
	blen = strlen(base);
	if(!strncmp(line, path, plen) && line[plen] == ':'){
		fb_log(c->to, level, "%s%s", c->a->config_name, line + plen);
	}else if(!strncmp(line, base, blen) && line[blen] == ':'){
		const char *nb = strrchr(c->a->config_name, '/');
		fb_log(c->to, level, "%s%s", nb ? nb + 1 : c->a->config_name, line + blen);
	}else{
		fb_log(c->to, level, "%s", line);
	}
}

static void __attribute__((noreturn)) fail(struct link_main *m, int rc)
{
	atomic_store(&m->sh->child_state, rc);
	_exit(1);
}

/* Runs the link process until the broker says stop or dies; never returns. The exit status is 0
 * after an orderly stop, 1 otherwise (child_state in the region says why). */
static void __attribute__((noreturn)) run(const struct fb_main_args *a)
{
	struct link_main m = { .a = a, .sh = a->sh };
	struct fb_shared *sh = a->sh;
	struct config_log cl;
	struct fb_logger clg;
	struct fb_spool_opts so;
	struct fb_session_deps ld;
	struct fb_spool_stats st;
	uint64_t in_pushed, in_released;
	static const int quiet[] = { SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGPIPE };
	struct open_watch watch;
	bool watching;
	uint64_t started_ms = fb_mono_ms();
	int rc;

	for(size_t i = 0; i < sizeof(quiet) / sizeof(quiet[0]); i++){
		signal(quiet[i], SIG_IGN);
	}
	prctl(PR_SET_NAME, "flowmq-link");
	fb_logq_init(&m.logq, &sh->logq);
	m.lg = (struct fb_logger){ fb_logq_log, &m.logq };
	fb_seq_writer_reset(&sh->sgen); /* the previous link process may have died inside an update */

	cl = (struct config_log){ a, &m.lg };
	clg = (struct fb_logger){ config_log, &cl };
	rc = fb_config_load(a->config_path, &clg, &m.cfg);
	if(rc == 0){
		rc = fb_routes_build(m.cfg, &m.routes);
		if(rc < 0){
			fb_log(&m.lg, MOSQ_LOG_ERR, "%s: cannot compile the routes: %s", a->config_name, strerror(-rc));
		}
	}
	if(rc < 0){
		fail(&m, rc);
	}

	in_pushed = atomic_load(&sh->c2e.pushed);
	in_released = atomic_load(&sh->c2e.released);
	so = (struct fb_spool_opts){
		.path = m.cfg->spool.path,
		.max_size = m.cfg->spool.max_size,
		.on_full = m.cfg->spool.on_full,
		.sync = m.cfg->spool.sync,
		.lg = &m.lg,
		.chan = &sh->chan,
		.chan_running = a->running,
		.corrupt = &sh->ctr.dropped_corrupt,
		/* On a fresh channel: what the broker released of the spool the last link process had
		 * (fresh_channel() in the broker injected and released what the ring held first). On a
		 * running one: spool "in" goes on numbering above the ring's marks. */
		.in_injected = a->running ? 0 : in_released,
		.in_next = a->running ? (in_pushed > in_released ? in_pushed : in_released) + 1 : 0,
	};
	if(!a->running){
		/* The ring is empty and spool "in" may be numbered afresh (a salvage): the marks start
		 * again before the channel is ready, not after, so that this process ending in between
		 * cannot leave the old numbering's marks to the next one, which starts on the running
		 * channel. (Ending during a salvage, the next one salvages again with in_injected 0:
		 * what the broker had injected comes again, at least once.) */
		atomic_store(&sh->c2e.pushed, 0);
		atomic_store(&sh->c2e.released, 0);
	}
	fb_spool_thread_init();
	watch = (struct open_watch){ .beat = &sh->beat };
	watching = pthread_create(&watch.thread, NULL, open_watch_run, &watch) == 0;
	wait_for_lock(m.cfg->spool.path);
	rc = fb_spool_open(&so, &m.spool);
	if(watching){
		atomic_store(&watch.done, true);
		pthread_join(watch.thread, NULL);
	}
	if(rc < 0){
		fail(&m, rc); /* fb_spool_open() has logged why */
	}
	fb_spool_stats(m.spool, &st);
	fb_tail_init(&m.tail, TAIL_BUDGET, st.last_seq);
	/* Cloud messages a crash left in spool "in" go to the broker first. After a restart the ring
	 * still holds what the last link process pushed (up to c2e.pushed): only what comes after is
	 * pushed, not those again. On a fresh channel the ring is empty (fresh_channel()) and the
	 * marks are 0: all of it is pushed. */
	m.in_more = st.in > 0;
	m.in_deleted = 0;

	ld = (struct fb_session_deps){
		.cfg = m.cfg,
		.routes = m.routes,
		.spool = m.spool,
		.ctr = &sh->ctr,
		.tail = &m.tail,
		.wake = wake_broker,
		.wake_ud = &m,
		.lg = &m.lg,
		.efd = a->efd,
		.notified = &sh->notified,
		.c2e_push = c2e_push,
		.c2e_pending = c2e_pending,
		.c2e_ud = &m,
		.broker_pid = a->broker,
	};
	{
		/* Before the worker: the requeue ring's take-over (control.c) comes before any dead letter
		 * this process adds. */
		struct fb_control_deps cd = {
			.spool_path = m.cfg->spool.path,
			.spool = m.spool,
			.ring = &sh->requeue,
			.max_size = m.cfg->spool.max_size,
			.max_live = &sh->chan.max_live,
			.wake = wake_broker,
			.wake_ud = &m,
			.lg = &m.lg,
		};

		if(fb_control_open(&cd, &m.ctl) < 0){
			fb_log(&m.lg, MOSQ_LOG_WARNING, "out of memory: requeue-dead and purge-dead on this running "
					"bridge are refused");
		}
	}
	rc = fb_session_start(&ld, &m.link);
	if(rc < 0){
		fb_log(&m.lg, MOSQ_LOG_ERR, "cannot start the worker thread: %s", strerror(-rc));
		fb_spool_close(m.spool);
		fail(&m, rc);
	}
	snapshot(&m);
	m.status_path = fb_statusfile_path(m.cfg->spool.path);
	m.status_since = fb_wall_ms();
	{
		/* Not connected since before this process started, when the previous link process says
		 * so: a link process that restarts again and again is not "disconnected for 0s". */
		struct fb_statusfile old;

		if(m.status_path && fb_statusfile_read(m.status_path, &old) == 0){
			uint64_t was = strcmp(old.state, "connected") ? old.since_ms : old.updated_ms;
			if(was && was < m.status_since){
				m.status_since = was;
			}
		}
	}
	status_file(&m);
	atomic_fetch_add_explicit(&sh->beat, 1, memory_order_release);
	atomic_store_explicit(&sh->child_state, 1, memory_order_release);
	if(m.cfg->metrics.listen){
		struct fb_prom_opts po = {
			.listen = m.cfg->metrics.listen,
			.host = m.cfg->metrics.host,
			.port = m.cfg->metrics.port,
			.ipv6 = m.cfg->metrics.ipv6,
			.sh = sh,
			.nrules = m.cfg->e2c_count,
			.started_ms = started_ms,
			.lg = &m.lg,
		};
		(void)fb_prom_start(&po, &m.prom); /* logs why not; the bridge runs on without it */
	}
	{
		uint64_t due = fb_mono_ms() + SNAPSHOT_MS, now;
		bool busy = false;

		while(!atomic_load(&sh->stop) && getppid() == a->broker){
			now = fb_mono_ms();
			if(now < due){
				fb_sleep_ms((unsigned)(busy && due - now > CONTROL_MS ? CONTROL_MS : due - now));
			}
			if(fb_mono_ms() >= due){
				/* The heartbeat: snapshot() takes the spool's lock, so a worker stuck while holding
				 * it (inside a settle, say) stops the beat too. A stopped process (SIGSTOP) beats
				 * no more. */
				snapshot(&m);
				status_file(&m);
				atomic_fetch_add_explicit(&sh->beat, 1, memory_order_release);
				due = fb_mono_ms() + SNAPSHOT_MS;
			}
			busy = fb_control_turn(m.ctl);
		}
	}
	fb_control_close(m.ctl);
	fb_prom_stop(m.prom);
	fb_session_stop(m.link);
	fb_tail_cleanup(&m.tail);
	fb_spool_close(m.spool);
	free(m.status_path);
	_exit(0);
}

static void __attribute__((noreturn)) usage(void)
{
	fprintf(stderr, "flowmq-link is started by the flowmq-bridge plugin, with the descriptors %d, %d and %d:\n"
			"  flowmq-link --broker-pid PID --wake-signal SIGNO --running 0|1 --config-name FILE\n",
			FB_LINK_FD_SHARED, FB_LINK_FD_EVENT, FB_LINK_FD_CONFIG);
	exit(2);
}

static long number(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if(errno || end == s || *end || v < 0){
		usage();
	}
	return v;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "broker-pid", required_argument, NULL, 'p' },
		{ "wake-signal", required_argument, NULL, 's' },
		{ "running", required_argument, NULL, 'r' },
		{ "config-name", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	static char config_path[64];
	struct fb_main_args a = { .efd = FB_LINK_FD_EVENT, .config_path = config_path };
	int c, rc;

	while((c = getopt_long(argc, argv, "", opts, NULL)) != -1){
		switch(c){
			case 'p': a.broker = (pid_t)number(optarg); break;
			case 's': a.wake_signo = (int)number(optarg); break;
			case 'r': a.running = number(optarg) != 0; break;
			case 'c': a.config_name = optarg; break;
			default: usage();
		}
	}
	if(optind != argc || a.broker <= 0 || a.config_name == NULL){
		usage();
	}
	/* Dies with the broker from here on; a broker that died before is noticed just after. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if(getppid() != a.broker){
		return 1;
	}
	rc = fb_shared_attach(FB_LINK_FD_SHARED, FB_IPC_VERSION, &a.sh);
	if(rc == -EPROTO){
		return FB_IPC_EXIT_VERSION; /* the plugin logs it, with both versions */
	}
	if(rc < 0){
		fprintf(stderr, "flowmq-link: cannot map the region shared with the broker: %s\n", strerror(-rc));
		return 1;
	}
	snprintf(config_path, sizeof(config_path), "/proc/self/fd/%d", FB_LINK_FD_CONFIG);
	run(&a);
}
