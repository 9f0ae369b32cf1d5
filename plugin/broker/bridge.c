/* flowmq-bridge: the running bridge (see bridge.h). Both processes: the broker thread (capture, tick,
 * injection, supervision) and, after the fork, the link process (child_main: spool, worker, status). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mqtt_protocol.h>

#include "bridge.h"
#include "chan.h"
#include "handoff.h"
#include "link.h"
#include "metrics.h"
#include "record.h"
#include "route.h"
#include "spool.h"
#include "tail.h"

/* Bytes of recent records kept in memory for the worker (see tail.h). */
#define TAIL_BUDGET (8u << 20)

/* One loaded configuration with its compiled routes. A reload makes a new generation and frees
 * the one it replaces, except the first: the link process keeps using that one (cloud settings
 * and cloud_to_edge rules change only with a restart). So at most two are alive. */
struct generation {
	struct fb_config *cfg;
	struct fb_routes *routes;
	uint8_t **extra;        /* per edge_to_cloud rule: its headers, then the origin, encoded */
	uint32_t *extra_len;
	bool first_byte_only;     /* fb_route_first_bytes() of the edge_to_cloud rules */
	uint64_t first_bytes[4];
	struct generation *older;
};

/* Cloud-to-edge ring in shared memory: the link process writes records of spool "in" (u64 seq,
 * u32 length, u32 flags, the record, padding to 8 bytes) at c2e_tail, the broker thread reads
 * them at c2e_head (byte counts, never wrapped; the position is the count modulo the size). A
 * record that does not fit at the end of the ring starts again at its beginning; one larger than
 * half the ring is written to a file of its own and the ring carries its name (C2E_FILE). */
#define C2E_RING (8u << 20)
#define C2E_HEAD 16u
#define C2E_WRAP UINT32_MAX
#define C2E_FILE 1u
#define C2E_FILE_NAME "flowmq-c2e-"

/* Status values are collected in the link process this often, for the broker to publish; each
 * turn also advances the heartbeat. */
#define SNAPSHOT_MS 500
/* How often the broker re-reads a snapshot that the link process is updating (an update is a copy
 * of a few hundred bytes) before it publishes the previous one: a link process stopped inside
 * its update costs the broker thread this little. */
#define METRICS_SPINS 1000
/* How long fb_bridge_start() waits for the first link process to open the spool (its failure in
 * that time fails the start); after it, the broker runs on and the tick opens the staging channel
 * once the link process has it ready, while captures follow spool.on_full. */
#define START_WAIT_MS 5000
/* A link process that has not opened the spool, and has read or written nothing, this long is
 * taken for hung: opening a damaged spool (copying it, RocksDB's repair, re-queueing every record)
 * may take far longer on a slow card, but it keeps reading and writing (see open_watch()). */
#define START_HANG_MS 60000
/* A link process that ends within RESTART_QUICK_MS of its start is restarted after a growing
 * pause, at most RESTART_MAX_MS. */
#define RESTART_QUICK_MS 10000
#define RESTART_MAX_MS 16000
/* How long an orderly stop of the link process may take before it is killed, and how long the
 * broker then waits for the kernel to end it. */
#define STOP_WAIT_MS 5000
#define KILL_WAIT_MS 1000

/* The state both processes share (MAP_SHARED, anonymous: created before the fork). */
struct fb_shared {
	struct fb_chan_shared chan;
	struct fb_counters ctr;
	atomic_bool notified;            /* an eventfd write to the link process is pending */
	atomic_bool stop;                /* broker: the link process is to stop */
	atomic_int child_state;          /* link process: 1 running, < 0 -errno of a failed start */
	atomic_uint mgen;                /* link process: sequence lock over METRICS */
	struct fb_metrics metrics;
	atomic_uint_fast64_t c2e_head;   /* broker */
	atomic_uint_fast64_t c2e_tail;   /* link process */
	atomic_uint_fast64_t c2e_pushed; /* link process: newest "in" seq in the ring */
	atomic_uint_fast64_t in_released;/* broker: newest "in" seq injected and taken by the broker */
	atomic_uint_fast64_t beat;       /* link process: advanced at every turn of its snapshot loop */
	uint8_t c2e[C2E_RING];
};

struct fb_bridge {
	char *config_file;
	struct fb_logger lg;
	struct fb_host host;
	struct generation *gen;   /* newest; broker thread only */
	struct generation *first; /* the one the link process uses */
	struct fb_shared *sh;
	int efd;                  /* wakes the link process's worker */
	pid_t broker;             /* this process */
	pid_t child;              /* the link process, 0: none */
	struct fb_chan_writer *w;
	struct fb_counters *ctr;  /* &sh->ctr */
	uint8_t *buf;             /* capture buffers, broker thread: the record */
	size_t buf_size;
	uint8_t *pbuf;            /* its properties */
	size_t pbuf_size;
	uint64_t c2e_head;        /* broker: where the next ring record starts */
	uint8_t *c2e_file;        /* broker: a record read from a file of its own */
	size_t c2e_file_cap;
	uint64_t injected;        /* newest "in" seq handed to the broker at the last tick */
	uint64_t released;        /* ... and the newest published as in_released */
	time_t next_status;
	time_t next_check;        /* when to look after the link process next */
	uint64_t started_ms;      /* when the link process was started (monotonic) */
	uint64_t restart_ms;      /* when to start the next one; 0: not decided */
	unsigned quick_fails;     /* link processes in a row that ended soon after their start */
	/* The watchdog (broker thread): the link process's progress as last seen, and since when. */
	bool child_running;       /* the current link process has reported its spool open */
	bool killed;              /* ... has been sent SIGKILL as hung, not reaped yet */
	uint64_t beat;            /* sh->beat as last seen */
	uint64_t beat_ms;         /* when it last moved (or when nothing was pending) */
	uint64_t seen;            /* the reader's sh->chan.seen and file states as last seen */
	unsigned states;
	uint64_t progress_ms;     /* when they last moved (or when nothing was pending) */
	bool chan_full;           /* an append found both staging files in use (since the last progress) */
	bool full_logged;         /* the current full episode has been logged */
	bool writer_logged;       /* a failure to open the staging channel has been logged */
	uint64_t full_refused;    /* captures turned away in the current episode */
	struct fb_metrics last;   /* the last status snapshot read whole */

	/* In the link process only. */
	struct fb_spool *spool;
	struct fb_tail tail;
	struct fb_link *link;
	bool in_more;             /* spool "in" may hold records not in the ring yet */
	bool pump_full;           /* the last pump stopped at a full ring */
	uint64_t in_deleted;      /* newest "in" seq released and deleted */
	struct fb_spool_del *dels;
	size_t dels_n, dels_cap;
};

static void generation_free(struct generation *g)
{
	while(g){
		struct generation *older = g->older;

		if(g->extra){
			for(size_t i = 0; i < g->cfg->e2c_count; i++){
				free(g->extra[i]);
			}
		}
		free(g->extra);
		free(g->extra_len);
		fb_routes_free(g->routes);
		fb_config_free(g->cfg);
		free(g);
		g = older;
	}
}

static int generation_load(const char *file, const struct fb_logger *lg, struct generation **out)
{
	struct generation *g = calloc(1, sizeof(*g));
	int rc;

	*out = NULL;
	if(g == NULL){
		return -ENOMEM;
	}
	rc = fb_config_load(file, lg, &g->cfg);
	if(rc < 0){
		goto fail;
	}
	rc = fb_routes_build(g->cfg, &g->routes);
	if(rc < 0){
		fb_log(lg, MOSQ_LOG_ERR, "%s: cannot compile the routes: %s", file, strerror(-rc));
		goto fail;
	}
	g->first_byte_only = fb_route_first_bytes(g->routes, FB_ROUTE_E2C, g->first_bytes);
	rc = -ENOMEM;
	g->extra = calloc(g->cfg->e2c_count + 1, sizeof(*g->extra));
	g->extra_len = calloc(g->cfg->e2c_count + 1, sizeof(*g->extra_len));
	if(g->extra == NULL || g->extra_len == NULL){
		goto fail;
	}
	/* Encoded once here, appended to every captured message's properties. */
	for(size_t i = 0; i < g->cfg->e2c_count; i++){
		const struct fb_e2c_rule *rule = &g->cfg->e2c[i];
		const char **x = calloc(2 * (rule->header_count + 1), sizeof(*x));

		if(x == NULL){
			rc = -ENOMEM;
			goto fail;
		}
		for(size_t h = 0; h < rule->header_count; h++){
			x[2 * h] = rule->headers[h].name;
			x[2 * h + 1] = rule->headers[h].value;
		}
		x[2 * rule->header_count] = FB_ORIGIN_PROPERTY;
		x[2 * rule->header_count + 1] = g->cfg->site_id;
		rc = fb_props_encode(NULL, x, rule->header_count + 1, &g->extra[i], &g->extra_len[i]);
		free(x);
		if(rc < 0){
			fb_log(lg, MOSQ_LOG_ERR, "%s: edge_to_cloud[%zu]: cannot encode its headers: %s", file,
					i, strerror(-rc));
			goto fail;
		}
	}
	*out = g;
	return 0;

fail:
	generation_free(g);
	return rc;
}

/* ---- shared state ---------------------------------------------------------------------------- */

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while(nanosleep(&ts, &ts) != 0 && errno == EINTR){
	}
}

static void c2e_file_path(const struct fb_bridge *b, uint64_t seq, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/%s%" PRIu64, b->first->cfg->spool.path, C2E_FILE_NAME, seq);
}

static void put_u32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

static uint32_t get_u32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return v;
}

static void put_u64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static uint64_t get_u64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return v;
}

/* ---- the link process ------------------------------------------------------------------------ */

/* Writes record SEQ of spool "in" into the ring. Returns 0, or -ENOBUFS when it has no room now. */
static int ring_put(struct fb_bridge *b, uint64_t seq, const void *rec, size_t len)
{
	struct fb_shared *sh = b->sh;
	uint64_t head = atomic_load_explicit(&sh->c2e_head, memory_order_acquire);
	uint64_t tail = atomic_load_explicit(&sh->c2e_tail, memory_order_relaxed);
	uint32_t flags = 0;
	char path[4096];
	size_t off, skip = 0, need;

	if(len > C2E_RING / 2){
		/* Too large for the ring: in a file of its own, the ring carries its seq. */
		c2e_file_path(b, seq, path, sizeof(path));
		if(fb_file_write(path, rec, len, false) != 0){
			return -ENOBUFS;
		}
		flags = C2E_FILE;
		rec = NULL;
		len = 0;
	}
	need = C2E_HEAD + ((len + 7) & ~(size_t)7);
	off = (size_t)(tail % C2E_RING);
	if(C2E_RING - off < need){
		skip = C2E_RING - off;
	}
	if(tail + skip + need - head > C2E_RING){
		if(flags == C2E_FILE){
			unlink(path);
		}
		return -ENOBUFS;
	}
	if(skip){
		if(skip >= C2E_HEAD){
			put_u32(sh->c2e + off + 8, C2E_WRAP);
		}
		tail += skip;
		off = 0;
	}
	put_u64(sh->c2e + off, seq);
	put_u32(sh->c2e + off + 8, (uint32_t)len);
	put_u32(sh->c2e + off + 12, flags);
	if(len){
		memcpy(sh->c2e + off + C2E_HEAD, rec, len);
	}
	atomic_store_explicit(&sh->c2e_tail, tail + need, memory_order_release);
	atomic_store_explicit(&sh->c2e_pushed, seq, memory_order_relaxed);
	return 0;
}

/* fb_link_deps.c2e_push: straight into the ring unless older records wait in the spool. */
static int c2e_push(void *ud, uint64_t seq, const void *rec, size_t len)
{
	struct fb_bridge *b = ud;

	if(b->in_more || atomic_load_explicit(&b->sh->c2e_pushed, memory_order_relaxed) + 1 != seq
			|| ring_put(b, seq, rec, len) != 0){
		b->in_more = true;
		return -ENOBUFS;
	}
	return 0;
}

static int pump_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct fb_bridge *b = ud;

	if(ring_put(b, seq, val, len) != 0){
		b->pump_full = true;
		return 1; /* full: the rest waits */
	}
	return 0;
}

static int release_visit(void *ud, uint64_t seq, const void *val, size_t len)
{
	struct fb_bridge *b = ud;
	(void)val;

	if(seq > atomic_load_explicit(&b->sh->in_released, memory_order_acquire)){
		return 1;
	}
	if(b->dels_n == b->dels_cap){
		size_t cap = b->dels_cap ? 2 * b->dels_cap : 64;
		struct fb_spool_del *d = realloc(b->dels, cap * sizeof(*d));
		if(d == NULL){
			return 1;
		}
		b->dels = d;
		b->dels_cap = cap;
	}
	b->dels[b->dels_n++] = (struct fb_spool_del){ seq, len };
	return 0;
}

/* fb_link_deps.c2e_pending: deletes from spool "in" what the broker has injected, hands over what
 * waits, and says whether the broker has anything left to take. */
static size_t c2e_pending(void *ud)
{
	struct fb_bridge *b = ud;
	struct fb_shared *sh = b->sh;
	uint64_t released = atomic_load_explicit(&sh->in_released, memory_order_acquire);

	if(released > b->in_deleted){
		b->dels_n = 0;
		fb_spool_read(b->spool, FB_Q_IN, b->in_deleted, SIZE_MAX, release_visit, b);
		if(b->dels_n && fb_spool_delete_many(b->spool, FB_Q_IN, b->dels, b->dels_n) == 0){
			b->in_deleted = b->dels[b->dels_n - 1].seq;
		}
		if(b->dels_n == 0){
			b->in_deleted = released;
		}
	}
	if(b->in_more){
		int n;

		b->pump_full = false;
		n = fb_spool_read(b->spool, FB_Q_IN, atomic_load_explicit(&sh->c2e_pushed, memory_order_relaxed),
				256, pump_visit, b);
		if(n >= 0 && n < 256 && !b->pump_full){
			b->in_more = false; /* everything in spool "in" is in the ring */
		}
	}
	return atomic_load_explicit(&sh->c2e_tail, memory_order_acquire)
		!= atomic_load_explicit(&sh->c2e_head, memory_order_acquire) || b->in_more;
}

static void snapshot(struct fb_bridge *b)
{
	struct fb_shared *sh = b->sh;
	struct fb_metrics m;

	fb_metrics_collect(&m, b->ctr, b->link, b->spool);
	/* The spool's disk-full state, for the broker thread: its status and its watchdog (a link
	 * process that takes no staged records while the disk is full is not hung) read the counter. */
	if(b->spool){
		atomic_store_explicit(&b->ctr->disk_full, m.spool.disk_full ? 1u : 0u, memory_order_relaxed);
		m.disk_full = m.spool.disk_full;
	}
	fb_seq_write_begin(&sh->mgen);
	memcpy(&sh->metrics, &m, sizeof(m));
	fb_seq_write_end(&sh->mgen);
}

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
		sleep_ms(20);
	}
	close(fd);
}

/* Closes the broker's network sockets (listeners, client connections) in the link process: a
 * connection the broker closes must not stay open in here. Log files and the syslog socket stay. */
static void close_broker_sockets(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int self = d ? dirfd(d) : -1;

	if(d == NULL){
		return;
	}
	while((e = readdir(d)) != NULL){
		int fd = atoi(e->d_name), domain = 0;
		socklen_t len = sizeof(domain);
		struct stat sb;

		if(fd <= 2 || fd == self || fstat(fd, &sb) != 0 || !S_ISSOCK(sb.st_mode)){
			continue;
		}
		if(getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0
				&& (domain == AF_INET || domain == AF_INET6)){
			close(fd);
		}
	}
	closedir(d);
}

/* The link process while it opens the spool: a thread that advances the heartbeat every 500 ms
 * in which the process read or wrote something (/proc/self/io), so that the broker's watchdog
 * tells a long open that makes progress (a salvage, a long WAL) from one that is stuck. */
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

		sleep_ms(SNAPSHOT_MS);
		now = io_bytes();
		if(now != last){
			last = now;
			atomic_fetch_add_explicit(w->beat, 1, memory_order_release);
		}
	}
	return NULL;
}

/* The link process: opens the spool (the reader of the staging channel), runs the cloud link and
 * collects the status, until the broker says stop or dies. Never returns. */
static void __attribute__((noreturn)) child_main(struct fb_bridge *b, bool running)
{
	struct fb_shared *sh = b->sh;
	const struct fb_config *cfg = b->first->cfg;
	struct fb_spool_opts so;
	struct fb_link_deps ld;
	struct fb_spool_stats st;
	static const int quiet[] = { SIGINT, SIGTERM, SIGHUP, SIGUSR1, SIGUSR2, SIGPIPE };
	struct open_watch watch;
	bool watching;
	int rc;

	/* Dies with the broker; the broker's signals are its own (it stops this process itself). */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if(getppid() != b->broker){
		_exit(1);
	}
	for(size_t i = 0; i < sizeof(quiet) / sizeof(quiet[0]); i++){
		signal(quiet[i], SIG_IGN);
	}
	prctl(PR_SET_NAME, "flowmq-link");
	close_broker_sockets();
	fb_seq_writer_reset(&sh->mgen); /* the previous link process may have died inside an update */

	so = (struct fb_spool_opts){
		.path = cfg->spool.path,
		.max_size = cfg->spool.max_size,
		.on_full = cfg->spool.on_full,
		.sync = cfg->spool.sync,
		.lg = &b->lg,
		.chan = &sh->chan,
		.chan_running = running,
		.corrupt = &b->ctr->dropped_corrupt,
	};
	fb_spool_thread_init();
	watch = (struct open_watch){ .beat = &sh->beat };
	watching = pthread_create(&watch.thread, NULL, open_watch_run, &watch) == 0;
	wait_for_lock(cfg->spool.path);
	rc = fb_spool_open(&so, &b->spool);
	if(watching){
		atomic_store(&watch.done, true);
		pthread_join(watch.thread, NULL);
	}
	if(rc < 0){
		/* fb_spool_open() has logged why. */
		atomic_store(&sh->child_state, rc);
		_exit(1);
	}
	fb_spool_stats(b->spool, &st);
	fb_tail_init(&b->tail, TAIL_BUDGET, st.last_seq);
	/* Cloud messages a crash left in spool "in" go to the broker first. */
	b->in_more = st.in > 0;
	atomic_store(&sh->c2e_pushed, 0);
	if(!running){
		atomic_store(&sh->in_released, 0);
	}
	b->in_deleted = 0;

	ld = (struct fb_link_deps){
		.cfg = cfg,
		.routes = b->first->routes,
		.spool = b->spool,
		.ctr = b->ctr,
		.tail = &b->tail,
		.host = &b->host,
		.lg = &b->lg,
		.efd = b->efd,
		.notified = &sh->notified,
		.c2e_push = c2e_push,
		.c2e_pending = c2e_pending,
		.c2e_ud = b,
		.broker_pid = b->broker,
	};
	rc = fb_link_start(&ld, &b->link);
	if(rc < 0){
		fb_log(&b->lg, MOSQ_LOG_ERR, "cannot start the worker thread: %s", strerror(-rc));
		atomic_store(&sh->child_state, rc);
		fb_spool_close(b->spool);
		_exit(1);
	}
	snapshot(b);
	atomic_fetch_add_explicit(&sh->beat, 1, memory_order_release);
	atomic_store_explicit(&sh->child_state, 1, memory_order_release);
	while(!atomic_load(&sh->stop) && getppid() == b->broker){
		sleep_ms(SNAPSHOT_MS);
		/* The heartbeat: snapshot() takes the spool's lock, so a worker stuck while holding it
		 * (inside a settle, say) stops the beat too. A stopped process (SIGSTOP) beats no more. */
		snapshot(b);
		atomic_fetch_add_explicit(&sh->beat, 1, memory_order_release);
	}
	fb_link_stop(b->link);
	fb_tail_cleanup(&b->tail);
	fb_spool_close(b->spool);
	_exit(0);
}

/* Starts a link process. Once a link process has made the staging channel ready (reset it), the
 * next one follows it as it is (the broker may have staged records meanwhile); before that a new
 * one recovers and resets it again. */
static int spawn(struct fb_bridge *b)
{
	bool running = atomic_load_explicit(&b->sh->chan.ready, memory_order_acquire) != 0;
	pid_t pid;

	if(!running && b->w){
		/* The last link process handed the channel back (its spool has to be moved aside and
		 * salvaged, which only a fresh channel allows): the next one recovers the staging files
		 * as this writer leaves them, so it writes no more; the tick opens them again once they
		 * are ready. */
		fb_chan_writer_close(b->w);
		b->w = NULL;
		b->writer_logged = true;
		fb_log(&b->lg, MOSQ_LOG_WARNING, "the staging files are started afresh; until they are "
				"ready, matched messages follow spool.on_full");
	}

	atomic_store(&b->sh->child_state, 0);
	pid = fork();
	if(pid < 0){
		return -errno;
	}
	if(pid == 0){
		child_main(b, running);
	}
	b->child = pid;
	b->started_ms = fb_mono_ms();
	b->child_running = false;
	b->killed = false;
	b->beat = atomic_load_explicit(&b->sh->beat, memory_order_acquire);
	b->beat_ms = b->started_ms;
	return 0;
}

/* True while the link process runs; reaps it (and logs why) once it has ended. */
static bool child_alive(struct fb_bridge *b)
{
	int status;
	pid_t r;

	if(b->child <= 0){
		return false;
	}
	r = waitpid(b->child, &status, WNOHANG);
	if(r == 0){
		return true;
	}
	if(r == b->child && !b->killed
			&& !(atomic_load(&b->sh->stop) && WIFEXITED(status) && WEXITSTATUS(status) == 0)){
		if(WIFSIGNALED(status)){
			fb_log(&b->lg, MOSQ_LOG_ERR, "the link process (pid %d) was killed by signal %d",
					(int)b->child, WTERMSIG(status));
		}else{
			fb_log(&b->lg, MOSQ_LOG_ERR, "the link process (pid %d) exited with status %d",
					(int)b->child, WEXITSTATUS(status));
		}
	}
	b->child = 0;
	b->killed = false;
	b->child_running = false;
	return false;
}

/* Restarts the link process if it has ended. Broker thread. */
static void supervise(struct fb_bridge *b)
{
	uint64_t now;

	if((b->child > 0 && child_alive(b)) || atomic_load(&b->sh->stop)){
		return;
	}
	now = fb_mono_ms();
	if(b->restart_ms == 0){
		/* Just ended. One that ended soon after its start (a spool it cannot open, say) is
		 * started again after 1 s, 2 s, 4 s ... up to RESTART_MAX_MS, not in a tight loop. */
		b->quick_fails = now - b->started_ms < RESTART_QUICK_MS ? b->quick_fails + 1 : 0;
		b->restart_ms = now;
		if(b->quick_fails){
			uint64_t wait = (uint64_t)1000 << (b->quick_fails < 6 ? b->quick_fails - 1 : 5);
			b->restart_ms += wait < RESTART_MAX_MS ? wait : RESTART_MAX_MS;
		}
	}
	if(now < b->restart_ms){
		return;
	}
	b->restart_ms = 0;
	b->started_ms = now; /* also when the fork fails: that counts as a quick end */
	fb_log(&b->lg, MOSQ_LOG_NOTICE, "restarting the link process; what it had not sent stays in the spool");
	fb_count(&b->ctr->link_restarts, 1);
	if(spawn(b) < 0){
		fb_log(&b->lg, MOSQ_LOG_ERR, "cannot start the link process: %s", strerror(errno));
	}
}

/* Kills a hung link process. It is reaped by a later tick (child_alive(), never waiting): the
 * kernel ends even a stopped process on SIGKILL, but not necessarily at once. */
static void kill_hung(struct fb_bridge *b, const char *why)
{
	fb_log(&b->lg, MOSQ_LOG_ERR, "the link process (pid %d) %s; killing it and starting a new one "
			"(what it had not sent is in the staging files and the spool)", (int)b->child, why);
	atomic_store_explicit(&b->ctr->link_stalled, 1, memory_order_relaxed);
	kill(b->child, SIGKILL);
	b->killed = true;
}

/* The watchdog, every second in the tick: a link process that makes no progress for link_timeout
 * while work is pending is hung, and replaced. Progress is the heartbeat (its snapshot loop turns,
 * which a stopped process, or one whose worker holds the spool's lock, does not do) and the
 * reader side of the staging channel (its "seen" mark moves as the worker takes records, a file
 * state moves as it settles and empties a file). Pending work is a record staged and not taken,
 * or an append that found both staging files in use. While the spool reports a full disk, a
 * channel that does not drain is that state, not a hang: then the heartbeat alone counts. */
static void watchdog(struct fb_bridge *b)
{
	struct fb_shared *sh = b->sh;
	uint64_t now = fb_mono_ms(), beat, seen, appended, timeout;
	unsigned states;
	bool pending;

	if(b->child <= 0 || b->killed){
		return;
	}
	if(!b->child_running){
		if(atomic_load_explicit(&sh->child_state, memory_order_acquire) != 1){
			beat = atomic_load_explicit(&sh->beat, memory_order_acquire);
			if(beat != b->beat){
				b->beat = beat;
				b->beat_ms = now; /* it reads or writes: a long open, not a hang */
			}
			if(now - b->beat_ms >= START_HANG_MS){
				kill_hung(b, "has been opening the spool for 60 s without reading or writing");
			}
			return;
		}
		b->child_running = true;
		b->beat = atomic_load_explicit(&sh->beat, memory_order_acquire);
		b->beat_ms = b->progress_ms = now;
	}
	timeout = b->first->cfg->link_timeout_ms;
	beat = atomic_load_explicit(&sh->beat, memory_order_acquire);
	if(beat != b->beat){
		b->beat = beat;
		b->beat_ms = now;
		/* A new link process that beats is no longer the hung one. */
		atomic_store_explicit(&b->ctr->link_stalled, 0, memory_order_relaxed);
	}
	seen = atomic_load_explicit(&sh->chan.seen, memory_order_relaxed);
	states = atomic_load_explicit(&sh->chan.state[0], memory_order_relaxed)
		| atomic_load_explicit(&sh->chan.state[1], memory_order_relaxed) << 4;
	appended = atomic_load_explicit(&sh->chan.appended, memory_order_relaxed);
	if(seen != b->seen || states != b->states){
		b->seen = seen;
		b->states = states;
		b->progress_ms = now;
		b->chan_full = false;
	}
	pending = b->w && (appended != seen || b->chan_full);
	if(!pending){
		b->beat_ms = b->progress_ms = now;
		return;
	}
	if(now - b->beat_ms >= timeout){
		kill_hung(b, "shows no heartbeat while records wait for it");
	}else if(now - b->progress_ms >= timeout
			&& !atomic_load_explicit(&b->ctr->disk_full, memory_order_relaxed)){
		kill_hung(b, "takes no staged records");
	}
}

/* Opens the writing end of the staging channel once a link process has made it ready. Returns
 * true when it is open. Broker thread; bounded (maps two files). */
static bool writer_ready(struct fb_bridge *b)
{
	const struct fb_config *cfg = b->first->cfg;
	struct fb_chan_limits lim;
	int rc;

	if(b->w){
		return true;
	}
	if(!atomic_load_explicit(&b->sh->chan.ready, memory_order_acquire)){
		return false;
	}
	lim = (struct fb_chan_limits){
		.max_size = cfg->spool.max_size,
		.on_full = cfg->spool.on_full,
		.sync = cfg->spool.sync == FB_SYNC_ALWAYS,
	};
	rc = fb_chan_writer_open(cfg->spool.path, &b->sh->chan, &lim, &b->w);
	if(rc < 0){
		if(!b->writer_logged){
			fb_log(&b->lg, MOSQ_LOG_ERR, "cannot open the staging files in %s: %s; matched messages "
					"follow spool.on_full until they open", cfg->spool.path, strerror(-rc));
			b->writer_logged = true;
		}
		return false;
	}
	if(b->writer_logged || b->full_logged){
		fb_log(&b->lg, MOSQ_LOG_NOTICE, "the staging files in %s are open; matched messages are spooled "
				"again (%" PRIu64 " turned away per spool.on_full meanwhile)", cfg->spool.path, b->full_refused);
	}
	b->writer_logged = b->full_logged = false;
	b->full_refused = 0;
	return true;
}

static void notify(struct fb_bridge *b)
{
	fb_link_notify_fd(b->efd, &b->sh->notified);
}

/* ---- the broker side ------------------------------------------------------------------------- */

/* Stops the link process: an orderly stop (it disconnects from the cloud and closes the spool)
 * for at most STOP_WAIT_MS, at once SIGKILL when it is known to be hung. Nothing is lost either
 * way: what it had not settled is in the staging files. Waits at most KILL_WAIT_MS more for the
 * kernel to end it; one that does not end even then (stuck in the kernel) is left to init. */
static void stop_child(struct fb_bridge *b)
{
	uint64_t until;
	uint64_t one = 1;

	if(b->child <= 0){
		return;
	}
	atomic_store(&b->sh->stop, true);
	if(!b->killed && atomic_load_explicit(&b->ctr->link_stalled, memory_order_relaxed)){
		kill(b->child, SIGKILL);
		b->killed = true;
	}
	if(!b->killed){
		if(write(b->efd, &one, sizeof(one)) < 0){
			/* the worker also wakes within its poll timeout */
		}
		until = fb_mono_ms() + STOP_WAIT_MS;
		while(child_alive(b) && fb_mono_ms() < until){
			sleep_ms(5);
		}
		if(b->child <= 0){
			return;
		}
		fb_log(&b->lg, MOSQ_LOG_WARNING, "the link process did not stop within %d s; killing it",
				STOP_WAIT_MS / 1000);
		kill(b->child, SIGKILL);
		b->killed = true;
	}
	until = fb_mono_ms() + KILL_WAIT_MS;
	while(child_alive(b) && fb_mono_ms() < until){
		sleep_ms(5);
	}
	if(b->child > 0){
		fb_log(&b->lg, MOSQ_LOG_WARNING, "the link process (pid %d) has not ended after SIGKILL; "
				"not waiting for it", (int)b->child);
		b->child = 0;
	}
}

int fb_bridge_start(const char *config_file, const struct fb_logger *lg, const struct fb_host *host,
		struct fb_bridge **out)
{
	struct fb_bridge *b;
	const struct fb_config *cfg;
	uint64_t until;
	void *mem;
	int rc;

	*out = NULL;
	b = calloc(1, sizeof(*b));
	if(b == NULL){
		return -ENOMEM;
	}
	b->efd = -1;
	b->lg = *lg;
	b->host = *host;
	b->broker = getpid();
	b->config_file = strdup(config_file);
	if(b->config_file == NULL){
		rc = -ENOMEM;
		goto fail;
	}
	rc = generation_load(config_file, lg, &b->gen);
	if(rc < 0){
		goto fail;
	}
	b->first = b->gen;
	cfg = b->gen->cfg;

	mem = mmap(NULL, sizeof(struct fb_shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if(mem == MAP_FAILED){
		rc = -errno;
		fb_log(lg, MOSQ_LOG_ERR, "cannot map memory shared with the link process: %s", strerror(-rc));
		goto fail;
	}
	b->sh = mem;
	b->ctr = &b->sh->ctr;
	b->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if(b->efd < 0){
		rc = -errno;
		fb_log(lg, MOSQ_LOG_ERR, "cannot create an eventfd: %s", strerror(-rc));
		goto fail;
	}
	rc = spawn(b);
	if(rc < 0){
		fb_log(lg, MOSQ_LOG_ERR, "cannot start the link process: %s", strerror(-rc));
		goto fail;
	}
	/* The link process opens the spool and makes the staging files ready. A failure it reports
	 * within START_WAIT_MS fails the start with its reason; a slow open (a long WAL to replay, a
	 * loaded disk) does not hold the broker longer: the tick opens the staging files when they are
	 * ready, and until then matched messages follow spool.on_full. */
	until = fb_mono_ms() + START_WAIT_MS;
	while(atomic_load_explicit(&b->sh->child_state, memory_order_acquire) == 0 && fb_mono_ms() < until){
		if(!child_alive(b)){
			rc = atomic_load(&b->sh->child_state);
			rc = rc < 0 ? rc : -EIO;
			fb_log(lg, MOSQ_LOG_ERR, "the link process did not start");
			goto fail;
		}
		sleep_ms(1);
	}
	rc = atomic_load(&b->sh->child_state);
	if(rc < 0){
		goto fail;
	}
	if(rc == 0){
		fb_log(lg, MOSQ_LOG_WARNING, "the link process is still opening the spool %s after %d s; until "
				"it is ready, matched messages follow spool.on_full", cfg->spool.path, START_WAIT_MS / 1000);
		b->writer_logged = true;
	}else if(!writer_ready(b)){
		rc = -EIO;
		goto fail;
	}
	fb_log(lg, MOSQ_LOG_NOTICE, "started: site %s, %zu edge_to_cloud and %zu cloud_to_edge rules, spool %s, cloud %s",
			cfg->site_id, cfg->e2c_count, cfg->c2e_count, cfg->spool.path, cfg->cloud.endpoints[0].url);
	*out = b;
	return 0;

fail:
	fb_bridge_stop(b);
	return rc;
}

void fb_bridge_stop(struct fb_bridge *b)
{
	if(b == NULL){
		return;
	}
	/* Messages injected at the last tick stay in spool "in" when the broker stops right after it:
	 * they are injected again at the next start. */
	if(b->sh){
		stop_child(b);
	}
	fb_chan_writer_close(b->w);
	if(b->efd >= 0){
		close(b->efd);
	}
	if(b->sh){
		munmap(b->sh, sizeof(*b->sh));
	}
	generation_free(b->gen);
	free(b->buf);
	free(b->pbuf);
	free(b->c2e_file);
	free(b->dels);
	free(b->config_file);
	free(b);
}

/* Stages record BUF (LEN bytes) for the link process: one bounded copy, never a wait. Returns 0,
 * or -ENOSPC when the channel cannot take it now (both staging files in use because the link
 * process has fallen behind, is hung or has not opened the spool yet, or max_size reached): the
 * caller applies spool.on_full. One log line per such episode. */
static int stage(struct fb_bridge *b, size_t len, uint64_t *seq)
{
	const char *why = NULL;
	int rc;

	if(!writer_ready(b)){
		rc = -ENOSPC;
	}else{
		rc = fb_chan_append(b->w, b->buf, len, seq);
		if(rc == 0){
			if(b->full_logged){
				fb_log(&b->lg, MOSQ_LOG_NOTICE, "the staging channel takes messages again (%" PRIu64
						" turned away per spool.on_full meanwhile)", b->full_refused);
				b->full_logged = false;
				b->full_refused = 0;
			}
			notify(b);
			return 0;
		}
		if(rc == -EBUSY){
			b->chan_full = true;
			why = "both staging files are in use (the link process is behind)";
			rc = -ENOSPC;
			notify(b);
		}
	}
	if(rc == -ENOSPC){
		b->full_refused += why || b->w == NULL;
		if(why && !b->full_logged){
			fb_log(&b->lg, MOSQ_LOG_WARNING, "%s: matched messages follow spool.on_full until it drains", why);
			b->full_logged = true;
		}
	}
	return rc;
}

/* ---- cloud to edge, broker side ------------------------------------------------------------- */

/* Reads record SEQ, which the link process wrote to a file of its own, into *BUF (*CAP bytes) and
 * removes the file. Returns 0 or a negative errno. */
static int read_c2e_file(struct fb_bridge *b, uint64_t seq, uint8_t **buf, size_t *cap, size_t *len)
{
	char path[4096];
	int rc;

	c2e_file_path(b, seq, path, sizeof(path));
	rc = fb_file_read(path, buf, cap, len);
	unlink(path);
	return rc;
}

static void inject_one(struct fb_bridge *b, struct fb_inmsg *m)
{
	if(m->expiry_ms){
		uint64_t now = fb_wall_ms();

		if(now >= m->expiry_ms){
			fb_count(&b->ctr->c2e_dropped, 1);
			return;
		}
		mosquitto_property_add_int32(&m->props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL,
				(uint32_t)((m->expiry_ms - now + 999) / 1000));
	}
	if(b->host.publish(b->host.ud, m->topic, m->payloadlen, m->payload, m->qos, m->retain, m->props) == 0){
		m->payload = NULL; /* the broker owns them now */
		m->props = NULL;
		fb_count(&b->ctr->injected, 1);
	}else{
		fb_log(&b->lg, MOSQ_LOG_ERR, "cannot inject a cloud message on %s", m->topic);
		fb_count(&b->ctr->c2e_dropped, 1);
	}
}

/* Injects every message in the ring. mosquitto_broker_publish() only queues a message; the broker
 * takes it into its own structures at the start of its next loop iteration, before the next tick.
 * So a message is released (and leaves spool "in") one tick after it was injected: a crash in
 * between injects it again rather than lose it. */
static __attribute__((noinline)) void inject(struct fb_bridge *b)
{
	struct fb_shared *sh = b->sh;
	uint64_t tail = atomic_load_explicit(&sh->c2e_tail, memory_order_acquire);

	while(b->c2e_head != tail){
		size_t off = (size_t)(b->c2e_head % C2E_RING), len, need;
		const uint8_t *p = sh->c2e + off, *rec = p + C2E_HEAD;
		struct fb_inmsg *m = NULL;
		uint64_t seq;

		if(C2E_RING - off < C2E_HEAD || get_u32(p + 8) == C2E_WRAP){
			b->c2e_head += C2E_RING - off;
			continue;
		}
		seq = get_u64(p);
		len = get_u32(p + 8);
		need = C2E_HEAD + ((len + 7) & ~(size_t)7);
		if(get_u32(p + 12) & C2E_FILE){
			rec = read_c2e_file(b, seq, &b->c2e_file, &b->c2e_file_cap, &len) == 0 ? b->c2e_file : NULL;
		}
		if(rec){
			m = fb_inmsg_from_record(seq, rec, len);
		}
		if(m){
			inject_one(b, m);
			fb_inmsg_free(m);
		}else{
			fb_log(&b->lg, MOSQ_LOG_ERR, "spool \"in\" record %" PRIu64 " is unreadable; dropped", seq);
			fb_count(&b->ctr->c2e_dropped, 1);
		}
		b->injected = seq;
		b->c2e_head += need;
		atomic_store_explicit(&sh->c2e_head, b->c2e_head, memory_order_release);
	}
}

static __attribute__((noinline)) void release_injected(struct fb_bridge *b)
{
	atomic_store_explicit(&b->sh->in_released, b->injected, memory_order_release);
	b->released = b->injected;
}

static __attribute__((noinline)) void publish_status(struct fb_bridge *b, time_t now)
{
	struct fb_shared *sh = b->sh;
	struct fb_metrics m;
	unsigned g, tries = 0;

	if(now >= b->next_check){
		supervise(b);
		watchdog(b);
		writer_ready(b);
		b->next_check = now + 1;
	}
	if(now < b->next_status){
		return;
	}
	for(;;){
		g = fb_seq_read_begin(&sh->mgen);
		memcpy(&m, &sh->metrics, sizeof(m));
		if(!fb_seq_read_again(&sh->mgen, g)){
			b->last = m;
			break;
		}
		if(++tries == METRICS_SPINS){
			/* A link process stopped or killed inside its update (the next one evens the lock):
			 * the status is published all the same, from the last whole snapshot. */
			m = b->last;
			break;
		}
	}
	/* The counters as they are now (they live in shared memory), the rest as the link process
	 * last saw it. */
	m.forwarded = atomic_load_explicit(&b->ctr->forwarded, memory_order_relaxed);
	m.dropped_full = atomic_load_explicit(&b->ctr->dropped_full, memory_order_relaxed);
	m.dropped_expired = atomic_load_explicit(&b->ctr->dropped_expired, memory_order_relaxed);
	m.dropped_rejected = atomic_load_explicit(&b->ctr->dropped_rejected, memory_order_relaxed);
	m.dropped_filtered = atomic_load_explicit(&b->ctr->dropped_filtered, memory_order_relaxed);
	m.injected = atomic_load_explicit(&b->ctr->injected, memory_order_relaxed);
	m.c2e_dropped = atomic_load_explicit(&b->ctr->c2e_dropped, memory_order_relaxed);
	m.reconnects = atomic_load_explicit(&b->ctr->reconnects, memory_order_relaxed);
	m.dropped_corrupt = atomic_load_explicit(&b->ctr->dropped_corrupt, memory_order_relaxed);
	m.stalls = atomic_load_explicit(&b->ctr->stalls, memory_order_relaxed);
	m.link_restarts = atomic_load_explicit(&b->ctr->link_restarts, memory_order_relaxed);
	m.wills = atomic_load_explicit(&b->ctr->wills, memory_order_relaxed);
	m.disk_full = atomic_load_explicit(&b->ctr->disk_full, memory_order_relaxed);
	m.link_stalled = atomic_load_explicit(&b->ctr->link_stalled, memory_order_relaxed);
	if((!child_alive(b) || !b->child_running) && m.link.state == FB_LINK_CONNECTED){
		m.link.state = FB_LINK_DISCONNECTED;
	}
	fb_metrics_publish(&b->host, &m);
	b->next_status = now + (time_t)((b->gen->cfg->status_interval_ms + 999) / 1000);
}

void fb_bridge_tick(struct fb_bridge *b, time_t now)
{
	/* Every broker loop turn comes here: with nothing to do, three loads and compares (the work
	 * is out of line, so that the compiler need not set up a frame for it). */
	if(b->injected != b->released){
		release_injected(b);
	}
	if(atomic_load_explicit(&b->sh->c2e_tail, memory_order_relaxed) != b->c2e_head){
		inject(b);
	}
	if(now >= b->next_check){
		publish_status(b, now);
	}
}

/* fb_bridge_capture() for a topic that a rule matched (RC from fb_route_match(), RES its result).
 * Kept out of line, so that a topic no rule matches costs only the lookup. */
static __attribute__((noinline)) int capture_matched(struct fb_bridge *b, int rc, struct fb_route_result res,
		const char *topic, const void *payload, uint32_t payloadlen, const mosquitto_property *props,
		bool retain)
{
	struct generation *g = b->gen;
	const struct fb_e2c_rule *rule;
	struct fb_record r;
	uint32_t eprops_len = 0;
	uint64_t seq;
	size_t len;

	if(rc == -EINVAL){
		/* The rule matched but the rewritten topic is not a valid topic (empty, or longer than
		 * 65535 bytes): nothing can be sent, so it counts as filtered. */
		fb_log(&b->lg, MOSQ_LOG_WARNING, "%s: edge_to_cloud[%d] makes an invalid cloud topic of it; not forwarded",
				topic, res.rule);
		fb_count(&b->ctr->dropped_filtered, 1);
		return 0;
	}
	if(rc < 0){
		return rc;
	}
	rule = &g->cfg->e2c[res.rule];
	if(res.drop){
		fb_count(&b->ctr->dropped_filtered, 1);
		return 0;
	}
	rc = fb_props_encode_into(props, g->extra[res.rule], g->extra_len[res.rule], &b->pbuf,
			&b->pbuf_size, &eprops_len);
	if(rc < 0){
		goto out;
	}
	r = (struct fb_record){
		.qos = (uint8_t)rule->qos,
		.retain = retain && !rule->retain_clear,
		.enqueue_ms = fb_wall_ms(),
		/* Mosquitto 2.0.11 keeps the publisher's message expiry from plugins: only spool.ttl
		 * applies to captured messages. */
		.expiry_ms = 0,
		.topic = res.topic,
		.topic_len = (uint16_t)strlen(res.topic),
		.props = b->pbuf,
		.props_len = eprops_len,
		.payload = payload,
		.payload_len = payloadlen,
	};
	len = fb_record_size(&r);
	if(len > b->buf_size){
		uint8_t *nb = realloc(b->buf, len);
		if(nb == NULL){
			rc = -ENOMEM;
			goto out;
		}
		b->buf = nb;
		b->buf_size = len;
	}
	fb_record_encode(&r, b->buf);
	rc = stage(b, len, &seq);
	if(rc == -ENOSPC || rc == -E2BIG){
		fb_count(&b->ctr->dropped_full, 1);
		/* drop_new accepts and drops; reject refuses, so the publisher sees 0x87. */
		rc = g->cfg->spool.on_full == FB_ON_FULL_REJECT ? -ENOSPC : 0;
		goto out;
	}
	if(rc < 0){
		fb_log(&b->lg, MOSQ_LOG_ERR, "cannot spool a message on %s: %s", topic, strerror(-rc));
		goto out;
	}
out:
	free(res.topic);
	return rc;
}

static __attribute__((noinline)) int capture_lookup(struct fb_bridge *b, const char *topic,
		const void *payload, uint32_t payloadlen, const mosquitto_property *props, bool retain)
{
	struct fb_route_result res;
	int rc = fb_route_match(b->gen->routes, FB_ROUTE_E2C, topic, &res);

	if(rc == 0){
		return 0;
	}
	rc = capture_matched(b, rc, res, topic, payload, payloadlen, props, retain);
	return rc < 0 ? rc : FB_BRIDGE_MATCHED;
}

int fb_bridge_capture(struct fb_bridge *b, const char *topic, const void *payload, uint32_t payloadlen,
		const mosquitto_property *props, int qos, bool retain)
{
	const struct generation *g = b->gen;
	const unsigned char c = (unsigned char)topic[0];
	(void)qos;

	if(g->first_byte_only && !(g->first_bytes[c >> 6] & (UINT64_C(1) << (c & 63)))){
		return 0; /* no rule can match: the common case for local traffic, without a call */
	}
	return capture_lookup(b, topic, payload, payloadlen, props, retain);
}

int fb_bridge_reload(struct fb_bridge *b)
{
	struct generation *g;
	int rc;

	rc = generation_load(b->config_file, &b->lg, &g);
	if(rc < 0){
		fb_log(&b->lg, MOSQ_LOG_ERR, "reload of %s failed; the running configuration stays", b->config_file);
		return rc;
	}
	/* Only the broker thread used the one replaced here, unless it is the first (the link
	 * process's): keep the first and the newest, free the rest. */
	if(b->gen != b->first){
		b->gen->older = NULL;
		generation_free(b->gen);
	}
	g->older = b->first;
	b->gen = g;
	fb_log(&b->lg, MOSQ_LOG_NOTICE, "reloaded %s: %zu edge_to_cloud rules now apply; changes to cloud, spool "
			"and cloud_to_edge take effect at the next restart", b->config_file, g->cfg->e2c_count);
	return 0;
}

const struct fb_config *fb_bridge_config(const struct fb_bridge *b)
{
	return b->gen->cfg;
}

struct fb_counters *fb_bridge_counters(struct fb_bridge *b)
{
	return b->ctr;
}
