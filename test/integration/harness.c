/* flowmq-bridge integration test harness (test processes): see harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mqtt_protocol.h>

#ifndef FB_PLUGIN_PATH
#define FB_PLUGIN_PATH ""
#endif
#ifndef FB_LINK_PROGRAM
#define FB_LINK_PROGRAM ""
#endif
#ifndef FB_SOURCE_ROOT
#define FB_SOURCE_ROOT ""
#endif

#define MOSQUITTO_BIN "/usr/sbin/mosquitto"
#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS 10000
#define MAX_PROCS 64
#define MAX_PORTS 512

extern char **environ;

/* Harness state. Forked Check tests inherit a copy: everything that gets cleaned up remembers the
 * pid that created it, and only that process cleans it up. */
struct proc_entry {
	pid_t pid;
	pid_t owner;
};

enum client_kind { CLIENT_SUB, CLIENT_PUB };

struct client {
	enum client_kind kind;
	pid_t owner;
	struct client *next_reg; /* registry, for fbh_teardown */
	struct mosquitto *mosq;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int state;      /* 0 connecting, 1 connected, -1 refused / gone */
	int connack_rc;
	bool loop_started;
};

static struct {
	bool inited;
	pid_t root_owner;
	char root[PATH_MAX];     /* run root: certs and per-test directories */
	pid_t tmp_owner;
	char tmp[PATH_MAX];      /* this test's directory */
	struct proc_entry procs[MAX_PROCS];
	int ports[MAX_PORTS];
	size_t nports;
	pid_t certs_owner;
	struct fbh_certs certs;
	struct client *clients;
	pthread_mutex_t clients_mu;
	unsigned serial;
} H = { .clients_mu = PTHREAD_MUTEX_INITIALIZER };

/* ---- small utilities ------------------------------------------------------------------------ */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	char buf[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, "fbh: %s\n", buf);
	ck_abort_msg("fbh: %s", buf);
	abort(); /* not reached */
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

static void deadline_ts(struct timespec *ts, int timeout_ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += timeout_ms / 1000;
	ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		die("out of memory");
	return p;
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		die("out of memory");
	return p;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		die("out of memory");
	return p;
}

char *fbh_strdupf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n < 0)
		die("out of memory");
	return s;
}

static void path_join(char *dst, const char *dir, const char *name)
{
	int n = snprintf(dst, PATH_MAX, "%s/%s", dir, name);

	if (n < 0 || n >= PATH_MAX)
		die("path too long: %s/%s", dir, name);
}

static bool keep_tmp(void)
{
	const char *v = getenv("FB_KEEP_TMP");

	return v && *v && strcmp(v, "0") != 0;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void rm_rf(const char *path)
{
	if (path[0])
		nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static bool file_exists(const char *path)
{
	return access(path, F_OK) == 0;
}

static bool find_in_path(const char *name)
{
	const char *path = getenv("PATH");
	char buf[PATH_MAX];

	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
	while (*path) {
		const char *end = strchr(path, ':');
		size_t len = end ? (size_t)(end - path) : strlen(path);

		if (len > 0 && len + strlen(name) + 2 < sizeof(buf)) {
			memcpy(buf, path, len);
			buf[len] = '/';
			strcpy(buf + len + 1, name);
			if (access(buf, X_OK) == 0)
				return true;
		}
		path += len;
		if (*path == ':')
			path++;
	}
	return false;
}

void fbh_write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	size_t len = strlen(text), off = 0;

	if (fd < 0)
		die("cannot write %s: %s", path, strerror(errno));
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("cannot write %s: %s", path, strerror(errno));
		}
		off += (size_t)n;
	}
	if (fchmod(fd, mode) < 0)
		die("cannot chmod %s: %s", path, strerror(errno));
	close(fd);
}

/* Reads PATH from OFFSET to its end. *LEN gets the length; NULL when unreadable. */
static char *read_from(const char *path, long offset, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0;

	if (!f)
		return NULL;
	if (offset > 0 && fseek(f, offset, SEEK_SET) != 0) {
		fclose(f);
		return NULL;
	}
	for (;;) {
		if (cap - n < 65536) {
			cap = cap ? cap * 2 : 65536;
			buf = realloc(buf, cap + 1);
			if (!buf)
				die("out of memory");
		}
		size_t r = fread(buf + n, 1, cap - n, f);

		n += r;
		if (r == 0)
			break;
	}
	fclose(f);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

char *fbh_read_file(const char *path)
{
	return read_from(path, 0, NULL);
}

static long file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

unsigned fbh_line_of(const char *text, const char *needle)
{
	const char *hit;
	unsigned line = 1;

	if (!text || !needle || !(hit = strstr(text, needle)))
		return 0;
	for (const char *p = text; p < hit; p++)
		if (*p == '\n')
			line++;
	return line;
}

const char *fbh_plugin_path(void)
{
	const char *p = getenv("FB_PLUGIN_PATH");

	return p && *p ? p : FB_PLUGIN_PATH;
}

const char *fbh_link_program(void)
{
	const char *p = getenv("FB_LINK_PROGRAM");

	return p && *p ? p : FB_LINK_PROGRAM;
}

const char *fbh_source_root(void)
{
	const char *p = getenv("FB_SOURCE_ROOT");

	return p && *p ? p : FB_SOURCE_ROOT;
}

/* ---- processes ------------------------------------------------------------------------------ */

static void proc_register(pid_t pid)
{
	for (size_t i = 0; i < MAX_PROCS; i++) {
		if (H.procs[i].pid == 0) {
			H.procs[i].pid = pid;
			H.procs[i].owner = getpid();
			return;
		}
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	die("too many processes");
}

static void proc_forget(pid_t pid)
{
	for (size_t i = 0; i < MAX_PROCS; i++)
		if (H.procs[i].pid == pid)
			H.procs[i].pid = 0;
}

/* SIGKILLs and reaps every process started by this process. */
static void procs_kill_mine(void)
{
	pid_t self = getpid();

	for (size_t i = 0; i < MAX_PROCS; i++) {
		if (H.procs[i].pid > 0 && H.procs[i].owner == self) {
			kill(H.procs[i].pid, SIGKILL);
			while (waitpid(H.procs[i].pid, NULL, 0) < 0 && errno == EINTR)
				;
			H.procs[i].pid = 0;
		}
	}
}

/* fork + exec, child dies with us (PR_SET_PDEATHSIG). ENVP NULL: our environment. Output is
 * appended to LOG (or /dev/null). Returns the pid or -1. */
static pid_t spawn(const char *file, const char *const argv[], char *const envp[], const char *log)
{
	pid_t parent = getpid();
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		/* Only async-signal-safe calls from here on: the parent may run client threads. */
		int fd;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		fd = open("/dev/null", O_RDONLY);
		if (fd >= 0) {
			dup2(fd, 0);
			if (fd > 0)
				close(fd);
		}
		fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
			if (fd > 2)
				close(fd);
		}
		if (strchr(file, '/'))
			execve(file, (char *const *)argv, envp ? envp : environ);
		else
			execvpe(file, (char *const *)argv, envp ? envp : environ);
		_exit(127);
	}
	return pid;
}

int fbh_run_cmd(const char *const argv[], const char *log)
{
	pid_t pid = spawn(argv[0], argv, NULL, log);
	int status;

	if (pid < 0)
		return -1;
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return -1;
	}
	return status;
}

static int status_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return -WTERMSIG(status);
	return INT_MIN;
}

/* ---- run set-up, tmp directories, cleanup --------------------------------------------------- */

static void clients_free_mine(void);

static void cleanup_at_exit(void)
{
	pid_t self = getpid();

	procs_kill_mine();
	if (H.tmp[0] && H.tmp_owner == self) {
		if (keep_tmp())
			fprintf(stderr, "fbh: FB_KEEP_TMP: kept %s\n", H.tmp);
		else
			rm_rf(H.tmp);
		H.tmp[0] = '\0';
	}
	if (H.root[0] && H.root_owner == self) {
		if (keep_tmp())
			fprintf(stderr, "fbh: FB_KEEP_TMP: kept %s\n", H.root);
		else
			rm_rf(H.root);
		H.root[0] = '\0';
	}
}

/* SIGTERM/SIGINT/SIGHUP (meson's timeout, ^C): kill our brokers by pid, then die of the signal.
 * Only async-signal-safe calls; the temporary root may stay behind in that case. */
static void on_fatal_signal(int sig)
{
	pid_t self = getpid();

	for (size_t i = 0; i < MAX_PROCS; i++)
		if (H.procs[i].pid > 0 && H.procs[i].owner == self)
			kill(H.procs[i].pid, SIGKILL);
	signal(sig, SIG_DFL);
	raise(sig);
}

static const char *tmp_base(void)
{
	const char *t = getenv("TMPDIR");

	return t && *t ? t : "/tmp";
}

/* Creates the run's root directory (once, in the process that calls it first). */
static void ensure_root(void)
{
	if (H.root[0])
		return;
	if (snprintf(H.root, sizeof(H.root), "%s/fbh-XXXXXX", tmp_base()) >= (int)sizeof(H.root))
		die("TMPDIR too long");
	if (!mkdtemp(H.root)) {
		int e = errno;

		H.root[0] = '\0';
		die("mkdtemp under %s: %s", tmp_base(), strerror(e));
	}
	H.root_owner = getpid();
}

int fbh_init(void)
{
	static const char *const tools[] = { "openssl", "mosquitto_passwd" };

	if (H.inited)
		return 0;
	if (access(MOSQUITTO_BIN, X_OK) != 0) {
		printf("SKIP: %s is missing (apt-get install mosquitto)\n", MOSQUITTO_BIN);
		return FBH_SKIP;
	}
	for (size_t i = 0; i < sizeof(tools) / sizeof(tools[0]); i++) {
		if (!find_in_path(tools[i])) {
			printf("SKIP: %s is not in PATH (apt-get install %s)\n", tools[i],
					i == 0 ? "openssl" : "mosquitto");
			return FBH_SKIP;
		}
	}
	if (!fbh_plugin_path()[0] || !file_exists(fbh_plugin_path())) {
		printf("SKIP: the plugin %s has not been built\n", fbh_plugin_path());
		return FBH_SKIP;
	}
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_fatal_signal);
	signal(SIGINT, on_fatal_signal);
	signal(SIGHUP, on_fatal_signal);
	mosquitto_lib_init();
	H.inited = true;
	ensure_root();
	atexit(cleanup_at_exit);
	return 0;
}

int fbh_run(Suite *s)
{
	SRunner *sr;
	int failed, rc = fbh_init();

	sr = srunner_create(s);
	if (rc != 0) {
		srunner_free(sr); /* frees S too */
		return rc;
	}
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}

TCase *fbh_tcase(const char *name)
{
	TCase *tc = tcase_create(name);

	tcase_add_checked_fixture(tc, fbh_setup, fbh_teardown);
	tcase_set_timeout(tc, 120);
	return tc;
}

void fbh_setup(void)
{
	if (!H.inited && fbh_init() != 0)
		die("prerequisites missing");
	/* A forked test dies with the runner (then its brokers die with it). */
	if (getpid() != H.root_owner)
		prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static void ports_release_mine(void)
{
	char path[64], buf[32];

	for (size_t i = 0; i < H.nports; i++) {
		int fd;
		ssize_t n;

		snprintf(path, sizeof(path), "/tmp/fbh-ports/%d", H.ports[i]);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[n > 0 ? n : 0] = '\0';
		if (strtol(buf, NULL, 10) == (long)getpid())
			unlink(path);
	}
}

void fbh_teardown(void)
{
	clients_free_mine();
	procs_kill_mine();
	ports_release_mine();
	if (H.tmp[0] && H.tmp_owner == getpid()) {
		if (keep_tmp())
			fprintf(stderr, "fbh: FB_KEEP_TMP: kept %s\n", H.tmp);
		else
			rm_rf(H.tmp);
	}
	H.tmp[0] = '\0';
	H.tmp_owner = 0;
}

const char *fbh_tmpdir(void)
{
	if (H.tmp[0] && H.tmp_owner == getpid())
		return H.tmp;
	if (!H.inited && fbh_init() != 0)
		die("prerequisites missing");
	ensure_root();
	if (snprintf(H.tmp, sizeof(H.tmp), "%s/t%ld-XXXXXX", H.root, (long)getpid()) >= (int)sizeof(H.tmp))
		die("TMPDIR too long");
	if (!mkdtemp(H.tmp)) {
		int e = errno;

		H.tmp[0] = '\0';
		die("mkdtemp %s: %s", H.root, strerror(e));
	}
	H.tmp_owner = getpid();
	if (keep_tmp())
		fprintf(stderr, "fbh: test directory %s\n", H.tmp);
	return H.tmp;
}

/* ---- ports ---------------------------------------------------------------------------------- */

static bool port_taken_by_us(int port)
{
	for (size_t i = 0; i < H.nports; i++)
		if (H.ports[i] == port)
			return true;
	return false;
}

/* Test programs run in parallel and pick ports at random: a port is ours only once we hold its
 * reservation file, /tmp/fbh-ports/PORT holding our pid. A reservation whose process is gone is
 * taken over. */
static bool port_reserve(int port)
{
	const char *dir = "/tmp/fbh-ports";
	char path[64], buf[32];

	mkdir(dir, 01777);
	chmod(dir, 01777);
	snprintf(path, sizeof(path), "%s/%d", dir, port);
	for (int attempt = 0; attempt < 2; attempt++) {
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);

		if (fd >= 0) {
			int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
			bool ok = write(fd, buf, (size_t)n) == n;
			close(fd);
			return ok;
		}
		if (errno != EEXIST)
			return false;
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			ssize_t n = read(fd, buf, sizeof(buf) - 1);
			long pid;

			close(fd);
			buf[n > 0 ? n : 0] = '\0';
			pid = strtol(buf, NULL, 10);
			if (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM))
				return false; /* held by a live process */
		}
		unlink(path); /* stale: its process is gone */
	}
	return false;
}

static bool port_bindable(int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	bool ok;

	if (fd < 0)
		return false;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

static int ephemeral_low(void)
{
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	int lo = 32768, hi = 60999;

	if (f) {
		if (fscanf(f, "%d %d", &lo, &hi) != 2)
			lo = 32768;
		fclose(f);
	}
	return lo;
}

int fbh_free_port(void)
{
	static bool seeded;
	int lo = 15000, hi = ephemeral_low() - 1;
	int port = 0;

	if (!seeded) {
		srandom((unsigned)(getpid() ^ (unsigned)now_ms()));
		seeded = true;
	}
	if (hi - lo >= 1000) {
		for (int tries = 0; tries < 500 && !port; tries++) {
			int p = lo + (int)(random() % (hi - lo + 1));

			if (!port_taken_by_us(p) && port_bindable(p) && port_reserve(p))
				port = p;
		}
	}
	for (int tries = 0; tries < 100 && !port; tries++) {
		struct sockaddr_in sa = { .sin_family = AF_INET };
		socklen_t len = sizeof(sa);
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0)
			die("socket: %s", strerror(errno));
		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0
				&& getsockname(fd, (struct sockaddr *)&sa, &len) == 0
				&& !port_taken_by_us(ntohs(sa.sin_port)) && port_reserve(ntohs(sa.sin_port)))
			port = ntohs(sa.sin_port);
		close(fd);
	}
	if (!port)
		die("no free port on 127.0.0.1");
	if (H.nports < MAX_PORTS)
		H.ports[H.nports++] = port;
	return port;
}

/* ---- certificates --------------------------------------------------------------------------- */

static const char openssl_cnf[] =
	"[req]\n"
	"distinguished_name = dn\n"
	"prompt = no\n"
	"[dn]\n"
	"CN = unused\n"
	"[v3_ca]\n"
	"basicConstraints = critical,CA:TRUE\n"
	"keyUsage = critical,keyCertSign,cRLSign\n"
	"subjectKeyIdentifier = hash\n"
	"[server]\n"
	"basicConstraints = critical,CA:FALSE\n"
	"keyUsage = critical,digitalSignature\n"
	"extendedKeyUsage = serverAuth\n"
	"subjectAltName = DNS:localhost,IP:127.0.0.1\n"
	"subjectKeyIdentifier = hash\n"
	"authorityKeyIdentifier = keyid\n"
	"[wronghost]\n"
	"basicConstraints = critical,CA:FALSE\n"
	"keyUsage = critical,digitalSignature\n"
	"extendedKeyUsage = serverAuth\n"
	"subjectAltName = DNS:wrong.example\n"
	"subjectKeyIdentifier = hash\n"
	"authorityKeyIdentifier = keyid\n"
	"[client]\n"
	"basicConstraints = critical,CA:FALSE\n"
	"keyUsage = critical,digitalSignature\n"
	"extendedKeyUsage = clientAuth\n"
	"subjectKeyIdentifier = hash\n"
	"authorityKeyIdentifier = keyid\n";

static void openssl_or_die(const struct fbh_certs *c, const char *const argv[])
{
	char log[PATH_MAX];
	int st;

	path_join(log, c->dir, "openssl.log");
	st = fbh_run_cmd(argv, log);
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		char *out = fbh_read_file(log);
		char cmd[1024] = "";

		for (size_t i = 0; argv[i]; i++) {
			strncat(cmd, argv[i], sizeof(cmd) - strlen(cmd) - 2);
			strncat(cmd, " ", sizeof(cmd) - strlen(cmd) - 1);
		}
		fprintf(stderr, "fbh: openssl failed (status %d): %s\n%s\n", st, cmd, out ? out : "");
		free(out);
		die("openssl failed: %s", cmd);
	}
}

static void gen_key(const struct fbh_certs *c, const char *key)
{
	const char *argv[] = { "openssl", "genpkey", "-algorithm", "EC",
		"-pkeyopt", "ec_paramgen_curve:P-256", "-out", key, NULL };

	openssl_or_die(c, argv);
}

static void gen_ca(const struct fbh_certs *c, const char *cnf, const char *key, const char *cert,
		const char *cn)
{
	char subj[128];
	const char *argv[] = { "openssl", "req", "-x509", "-new", "-config", cnf, "-key", key,
		"-subj", subj, "-days", "3650", "-sha256", "-extensions", "v3_ca", "-out", cert, NULL };

	gen_key(c, key);
	snprintf(subj, sizeof(subj), "/CN=%s", cn);
	openssl_or_die(c, argv);
}

static void gen_leaf(struct fbh_certs *c, const char *cnf, const char *key, const char *cert,
		const char *cn, const char *ca, const char *ca_key, const char *ext)
{
	char subj[128], csr[PATH_MAX + 8], serial[32];
	const char *req[] = { "openssl", "req", "-new", "-config", cnf, "-key", key,
		"-subj", subj, "-out", csr, NULL };
	const char *sign[] = { "openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key,
		"-set_serial", serial, "-days", "3650", "-sha256", "-extfile", cnf, "-extensions", ext,
		"-out", cert, NULL };

	gen_key(c, key);
	snprintf(subj, sizeof(subj), "/CN=%s", cn);
	snprintf(csr, sizeof(csr), "%s.csr", cert);
	snprintf(serial, sizeof(serial), "%u", 1000 + ++H.serial);
	openssl_or_die(c, req);
	openssl_or_die(c, sign);
}

const struct fbh_certs *fbh_certs(void)
{
	struct fbh_certs *c = &H.certs;
	char cnf[PATH_MAX], done[PATH_MAX];

	if (!H.inited && fbh_init() != 0)
		die("prerequisites missing");
	ensure_root();
	if (H.certs_owner == H.root_owner && c->dir[0])
		return c; /* made in this process or its parent, and still there */
	path_join(c->dir, H.root, "certs");
	path_join(c->ca, c->dir, "ca.pem");
	path_join(c->ca_key, c->dir, "ca.key");
	path_join(c->server_cert, c->dir, "server.pem");
	path_join(c->server_key, c->dir, "server.key");
	path_join(c->client_cert, c->dir, "client.pem");
	path_join(c->client_key, c->dir, "client.key");
	path_join(c->wrong_ca, c->dir, "wrong-ca.pem");
	path_join(c->wrong_ca_key, c->dir, "wrong-ca.key");
	path_join(c->wrong_client_cert, c->dir, "wrong-client.pem");
	path_join(c->wrong_client_key, c->dir, "wrong-client.key");
	path_join(c->wronghost_cert, c->dir, "wronghost.pem");
	path_join(c->wronghost_key, c->dir, "wronghost.key");
	path_join(done, c->dir, "done");
	if (file_exists(done)) {
		/* An earlier forked test made them. */
		H.certs_owner = H.root_owner;
		return c;
	}
	if (mkdir(c->dir, 0755) < 0 && errno != EEXIST)
		die("mkdir %s: %s", c->dir, strerror(errno));
	path_join(cnf, c->dir, "openssl.cnf");
	fbh_write_file(cnf, openssl_cnf, 0644);

	gen_ca(c, cnf, c->ca_key, c->ca, "flowmq-test-ca");
	gen_leaf(c, cnf, c->server_key, c->server_cert, "localhost", c->ca, c->ca_key, "server");
	gen_leaf(c, cnf, c->client_key, c->client_cert, FBH_EDGE_USER, c->ca, c->ca_key, "client");
	gen_leaf(c, cnf, c->wronghost_key, c->wronghost_cert, "wrong.example", c->ca, c->ca_key,
			"wronghost");
	gen_ca(c, cnf, c->wrong_ca_key, c->wrong_ca, "flowmq-wrong-ca");
	gen_leaf(c, cnf, c->wrong_client_key, c->wrong_client_cert, FBH_EDGE_USER, c->wrong_ca,
			c->wrong_ca_key, "client");
	fbh_write_file(done, "ok\n", 0644);
	H.certs_owner = H.root_owner;
	return c;
}

/* ---- brokers -------------------------------------------------------------------------------- */

void fbh_broker_init(struct fbh_broker *b, const char *name)
{
	memset(b, 0, sizeof(*b));
	snprintf(b->name, sizeof(b->name), "%s", name);
	path_join(b->dir, fbh_tmpdir(), name);
	if (mkdir(b->dir, 0755) < 0 && errno != EEXIST)
		die("mkdir %s: %s", b->dir, strerror(errno));
	path_join(b->conf, b->dir, "mosquitto.conf");
	path_join(b->log, b->dir, "mosquitto.log");
	b->port = fbh_free_port();
	b->port2 = fbh_free_port();
	b->wait_status = 0;
	b->exited = false;
}

/* Finds NEEDLE in B's log after *POS; advances *POS so that the next call reads only new text. */
static bool log_search(struct fbh_broker *b, const char *needle, long *pos)
{
	size_t len = 0, nlen = strlen(needle);
	char *text = read_from(b->log, *pos, &len);
	bool found;

	if (!text)
		return false;
	found = strstr(text, needle) != NULL;
	if (!found && len >= nlen)
		*pos += (long)(len - nlen + 1);
	free(text);
	return found;
}

/* True when the log since the mark has mosquitto's "... running" line and, if PORT, its
 * "Opening ipv4 listen socket on port PORT." line. */
static bool log_says_up(struct fbh_broker *b)
{
	char *text = read_from(b->log, b->log_mark, NULL);
	bool running = false, listening = b->port <= 0;
	char want[96];

	snprintf(want, sizeof(want), "listen socket on port %d.", b->port);
	for (char *line = text; line && *line;) {
		char *nl = strchr(line, '\n');

		if (nl)
			*nl = '\0';
		if (strstr(line, "mosquitto version ") && strstr(line, " running"))
			running = true;
		if (strstr(line, want))
			listening = true;
		line = nl ? nl + 1 : NULL;
	}
	free(text);
	return running && listening;
}

/* Whether configuration CONF loads a plugin (a "plugin" or "auth_plugin" line). */
static bool conf_loads_plugin(const char *conf)
{
	for (const char *line = conf; *line;) {
		const char *nl = strchr(line, '\n');

		line += strspn(line, " \t");
		if ((strncmp(line, "plugin", 6) == 0 && (line[6] == ' ' || line[6] == '\t'))
				|| (strncmp(line, "auth_plugin", 11) == 0 && (line[11] == ' ' || line[11] == '\t')))
			return true;
		if (!nl)
			break;
		line = nl + 1;
	}
	return false;
}

/* Builds the child's environment: ours plus OPENSSL_CONF when B asks for it. In a sanitizer build
 * (see meson.build) a broker that loads a plugin (PLUGIN) also gets LD_PRELOAD=FB_BROKER_PRELOAD,
 * the ASan runtime, which must be the first library of the un-instrumented broker that loads the
 * instrumented plugin, and ASAN_OPTIONS=FB_BROKER_ASAN_OPTIONS, when these are set. A broker
 * without a plugin (a cloud stand-in) runs none of our code and runs without them: under ASan,
 * with the slow unwinder that the leak suppressions need, Mosquitto spent 2.7 times the CPU per
 * message (20,000 QoS 1 messages: 2.8 s against 1.0), and the sanitizer build's tests are
 * CPU-bound. Only brokers get them, so the other tools a test runs stay as they are. */
static char **broker_env(const struct fbh_broker *b, bool plugin)
{
	static const char *const vars[][2] = {
		{ "FB_BROKER_PRELOAD", "LD_PRELOAD=" },
		{ "FB_BROKER_ASAN_OPTIONS", "ASAN_OPTIONS=" },
	};
	const char *set[2];
	size_t n = 0, j = 0, k;
	char **env;

	for (k = 0; k < 2; k++) {
		set[k] = plugin ? getenv(vars[k][0]) : NULL;
		if (set[k] && !set[k][0])
			set[k] = NULL;
	}
	while (environ[n])
		n++;
	env = xcalloc(n + 4, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		bool replaced = b->openssl_conf[0] && strncmp(environ[i], "OPENSSL_CONF=", 13) == 0;
		for (k = 0; k < 2; k++)
			if (set[k] && strncmp(environ[i], vars[k][1], strlen(vars[k][1])) == 0)
				replaced = true;
		if (!replaced)
			env[j++] = environ[i];
	}
	if (b->openssl_conf[0])
		env[j++] = fbh_strdupf("OPENSSL_CONF=%s", b->openssl_conf);
	for (k = 0; k < 2; k++)
		if (set[k])
			env[j++] = fbh_strdupf("%s%s", vars[k][1], set[k]);
	env[j] = NULL;
	return env;
}

/* Frees ENV and the entries broker_env() made (those not taken from environ). */
static void broker_env_free(char **env)
{
	for (size_t i = 0; env[i]; i++) {
		bool ours = true;
		for (size_t k = 0; environ[k] && ours; k++)
			if (environ[k] == env[i])
				ours = false;
		if (ours)
			free(env[i]);
	}
	free(env);
}

static void broker_reaped(struct fbh_broker *b, int status)
{
	proc_forget(b->pid);
	b->pid = 0;
	b->exited = true;
	b->wait_status = status;
}

int fbh_broker_start(struct fbh_broker *b, const char *conf_body)
{
	const char *argv[] = { MOSQUITTO_BIN, "-c", b->conf, NULL };
	char *conf;
	char **env;
	int64_t deadline;
	pid_t pid;

	if (b->pid > 0)
		die("broker %s is already running", b->name);
	conf = fbh_strdupf("%s%s"
			"\n# added by the test harness\n"
			"log_dest file %s\n"
			"log_type all\n"
			"%s",
			conf_body, (conf_body[0] && conf_body[strlen(conf_body) - 1] != '\n') ? "\n" : "",
			b->log, geteuid() == 0 ? "user root\n" : "");
	fbh_write_file(b->conf, conf, 0644);
	free(conf);

	b->log_mark = file_size(b->log);
	b->exited = false;
	b->wait_status = 0;
	env = broker_env(b, conf_loads_plugin(conf_body));
	pid = spawn(MOSQUITTO_BIN, argv, env, b->log);
	broker_env_free(env);
	if (pid < 0)
		die("cannot start %s: %s", MOSQUITTO_BIN, strerror(errno));
	proc_register(pid);
	b->pid = pid;

	deadline = now_ms() + START_TIMEOUT_MS;
	for (;;) {
		int status;
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid) {
			broker_reaped(b, status);
			return -1;
		}
		if (log_says_up(b))
			return 0;
		if (now_ms() > deadline) {
			fprintf(stderr, "fbh: broker %s did not come up within %d ms\n", b->name,
					START_TIMEOUT_MS);
			fbh_broker_dump_log(b);
			fbh_broker_kill(b);
			return -1;
		}
		sleep_ms(10);
	}
}

int fbh_broker_spawn(struct fbh_broker *b, const char *const argv[])
{
	pid_t pid;

	if (b->pid > 0)
		die("broker %s is already running", b->name);
	b->log_mark = file_size(b->log);
	b->exited = false;
	b->wait_status = 0;
	pid = spawn(argv[0], argv, NULL, b->log);
	if (pid < 0)
		return -1;
	proc_register(pid);
	b->pid = pid;
	return 0;
}

bool fbh_broker_running(struct fbh_broker *b)
{
	int status;
	pid_t r;

	if (b->pid <= 0)
		return false;
	r = waitpid(b->pid, &status, WNOHANG);
	if (r == b->pid) {
		broker_reaped(b, status);
		return false;
	}
	return true;
}

int fbh_broker_wait_exit(struct fbh_broker *b, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;

	while (fbh_broker_running(b)) {
		if (now_ms() >= deadline)
			return INT_MIN;
		sleep_ms(10);
	}
	return fbh_broker_exit_code(b);
}

int fbh_broker_exit_code(const struct fbh_broker *b)
{
	return b->exited ? status_code(b->wait_status) : INT_MIN;
}

int fbh_broker_stop(struct fbh_broker *b)
{
	int rc;

	if (!fbh_broker_running(b))
		return -1;
	kill(b->pid, SIGTERM);
	kill(b->pid, SIGCONT);
	rc = fbh_broker_wait_exit(b, STOP_TIMEOUT_MS);
	if (rc == INT_MIN) {
		fprintf(stderr, "fbh: broker %s ignored SIGTERM for %d ms: SIGKILL\n", b->name,
				STOP_TIMEOUT_MS);
		fbh_broker_diag(b, stderr);
		fbh_broker_kill(b);
		return -SIGKILL;
	}
	return rc;
}

void fbh_broker_kill(struct fbh_broker *b)
{
	int status;

	if (b->pid <= 0)
		return;
	kill(b->pid, SIGKILL);
	while (waitpid(b->pid, &status, 0) < 0) {
		if (errno != EINTR) {
			status = 0;
			break;
		}
	}
	broker_reaped(b, status);
}

int fbh_broker_signal(struct fbh_broker *b, int sig)
{
	if (b->pid <= 0)
		return -ESRCH;
	return kill(b->pid, sig) == 0 ? 0 : -errno;
}

void fbh_broker_log_mark(struct fbh_broker *b)
{
	b->log_mark = file_size(b->log);
}

bool fbh_broker_log_contains(struct fbh_broker *b, const char *substring)
{
	long pos = b->log_mark;

	return log_search(b, substring, &pos);
}

bool fbh_broker_log_line_has(struct fbh_broker *b, const char *s1, const char *s2)
{
	char *text = read_from(b->log, b->log_mark, NULL);
	bool found = false;

	for (char *line = text; line && *line && !found;) {
		char *nl = strchr(line, '\n');

		if (nl)
			*nl = '\0';
		found = strstr(line, s1) && strstr(line, s2);
		line = nl ? nl + 1 : NULL;
	}
	free(text);
	return found;
}

bool fbh_wait_log(struct fbh_broker *b, const char *substring, int timeout_ms)
{
	int64_t deadline = now_ms() + timeout_ms;
	long pos = b->log_mark;

	for (;;) {
		if (log_search(b, substring, &pos))
			return true;
		if (now_ms() >= deadline) {
			fprintf(stderr, "fbh: broker %s: no '%s' in its log after %d ms\n", b->name, substring,
					timeout_ms);
			fbh_broker_diag(b, stderr);
			return false;
		}
		sleep_ms(20);
	}
}

/* /proc/PID/task/TID/NAME, whole (fbh_read_file()); NULL when unreadable. */
static char *task_read(pid_t pid, const char *tid, const char *name)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "/proc/%d/task/%s/%s", (int)pid, tid, name);
	return fbh_read_file(path);
}

/* One line for process PID: each thread's name, state, wait channel and the top of its kernel
 * stack (read as root), and the pids of its children, which get a line each. */
static void diag_process(FILE *out, const char *name, pid_t pid, int depth)
{
	char path[64], *line = NULL, *kids = NULL, *k;
	size_t line_len = 0, kids_len = 0;
	FILE *lf, *kf;
	DIR *d;
	struct dirent *e;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (d == NULL)
		return;
	lf = open_memstream(&line, &line_len);
	kf = open_memstream(&kids, &kids_len);
	if (lf == NULL || kf == NULL)
		die("out of memory");
	fprintf(lf, "fbh: diag %s pid %d:", name, (int)pid);
	while ((e = readdir(d)) != NULL) {
		char *stat, *wchan, *stack, *children, *open, *close;

		if (e->d_name[0] == '.')
			continue;
		stat = task_read(pid, e->d_name, "stat");
		wchan = task_read(pid, e->d_name, "wchan");
		stack = task_read(pid, e->d_name, "stack");
		children = task_read(pid, e->d_name, "children");
		/* "TID (COMM) STATE ..." */
		open = stat ? strchr(stat, '(') : NULL;
		close = stat ? strrchr(stat, ')') : NULL;
		if (open && close > open && close[1] == ' ')
			fprintf(lf, " [%s %.*s %c", e->d_name, (int)(close - open - 1), open + 1, close[2]);
		else
			fprintf(lf, " [%s ? ?", e->d_name);
		fprintf(lf, " %s", wchan ? wchan : "?");
		/* The first four lines, "[<0>] do_epoll_wait+0x4a0/0x4e0", by function name; the first
		 * one not when it is the wait channel again. */
		k = stack;
		for (int i = 0, shown = 0; k && *k && i < 4; i++) {
			char *nl = strchr(k, '\n'), *fn;

			if (nl)
				*nl = '\0';
			fn = strchr(k, ']');
			fn = fn ? fn + 2 : k;
			fn[strcspn(fn, "+")] = '\0';
			if (i > 0 || !wchan || strcmp(fn, wchan))
				fprintf(lf, "%s%s", shown++ ? "<" : " ", fn);
			k = nl ? nl + 1 : NULL;
		}
		fputs("]", lf);
		if (children)
			fprintf(kf, "%s ", children);
		free(stat);
		free(wchan);
		free(stack);
		free(children);
	}
	closedir(d);
	fclose(lf);
	fclose(kf);
	fprintf(out, "%s\n", line);
	for (k = kids; depth < 2 && *k;) {
		char *end;
		long child = strtol(k, &end, 10);

		if (end == k)
			break;
		diag_process(out, "child", (pid_t)child, depth + 1);
		k = end;
	}
	free(line);
	free(kids);
}

void fbh_broker_diag(struct fbh_broker *b, FILE *out)
{
	if (b->pid > 0 && !b->exited)
		diag_process(out, b->name, b->pid, 0);
}

void fbh_broker_dump_log(struct fbh_broker *b)
{
	char *text = read_from(b->log, b->log_mark, NULL);

	fprintf(stderr, "---- %s log (%s) ----\n", b->name, b->log);
	if (text) {
		for (char *line = text; *line;) {
			char *nl = strchr(line, '\n');

			if (nl)
				*nl = '\0';
			fprintf(stderr, "[%s] %s\n", b->name, line);
			if (!nl)
				break;
			line = nl + 1;
		}
	}
	fprintf(stderr, "---- end of %s log ----\n", b->name);
	free(text);
}

/* ---- configurations ------------------------------------------------------------------------- */

static void passwd_or_die(const char *log, const char *const argv[])
{
	int st = fbh_run_cmd(argv, log);

	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		char *out = fbh_read_file(log);

		fprintf(stderr, "fbh: mosquitto_passwd failed (status %d):\n%s\n", st, out ? out : "");
		free(out);
		die("mosquitto_passwd failed");
	}
}

char *fbh_cloud_conf(struct fbh_broker *b, const struct fbh_cloud_opts *opts)
{
	static const struct fbh_cloud_opts defaults;
	const struct fbh_certs *c = fbh_certs();
	char passwd[PATH_MAX], acl[PATH_MAX], log[PATH_MAX];

	if (!opts)
		opts = &defaults;
	path_join(passwd, b->dir, "passwd");
	path_join(acl, b->dir, "acl");
	path_join(log, b->dir, "mosquitto_passwd.log");
	{
		const char *create[] = { "mosquitto_passwd", "-c", "-b", passwd, FBH_EDGE_USER,
			FBH_EDGE_PASSWORD, NULL };
		const char *add[] = { "mosquitto_passwd", "-b", passwd, FBH_CLOUD_TEST_USER,
			FBH_CLOUD_TEST_PASSWORD, NULL };

		passwd_or_die(log, create);
		passwd_or_die(log, add);
	}
	fbh_write_file(acl, opts->acl ? opts->acl : FBH_CLOUD_ACL_STANDARD, 0644);

	if (opts->tls12_only) {
		path_join(b->openssl_conf, b->dir, "openssl-tls12.cnf");
		fbh_write_file(b->openssl_conf,
				"openssl_conf = fbh_init\n"
				"[fbh_init]\n"
				"ssl_conf = fbh_ssl\n"
				"[fbh_ssl]\n"
				"system_default = fbh_sys\n"
				"[fbh_sys]\n"
				"MaxProtocol = TLSv1.2\n", 0644);
	} else {
		b->openssl_conf[0] = '\0';
	}

	return fbh_strdupf(
			"# FlowMQ stand-in (test harness)\n"
			"per_listener_settings false\n"
			"allow_anonymous false\n"
			"password_file %s\n"
			"acl_file %s\n"
			"persistence false\n"
			/* A test subscriber that falls behind must not lose messages in the cloud: the
			 * tests count every message. */
			"max_queued_messages 0\n"
			"\n"
			"listener %d 127.0.0.1\n"
			"cafile %s\n"
			"certfile %s\n"
			"keyfile %s\n"
			"tls_version %s\n"
			"require_certificate %s\n"
			"use_identity_as_username false\n"
			"\n"
			"listener %d 127.0.0.1\n"
			"%s",
			passwd, acl, b->port,
			opts->cafile_wrong_ca ? c->wrong_ca : c->ca,
			opts->wrong_host_cert ? c->wronghost_cert : c->server_cert,
			opts->wrong_host_cert ? c->wronghost_key : c->server_key,
			opts->tls12_only ? "tlsv1.2" : "tlsv1.3",
			opts->client_cert_optional ? "false" : "true",
			b->port2,
			opts->extra ? opts->extra : "");
}

char *fbh_edge_conf(struct fbh_broker *b, const char *yaml_path, const char *extra)
{
	char *opt = yaml_path ? fbh_strdupf("plugin_opt_config_file %s\n", yaml_path) : xstrdup("");
	/* The build tree's flowmq-link, unless EXTRA names one. */
	char *link = extra && strstr(extra, "plugin_opt_link_program") ? xstrdup("")
		: fbh_strdupf("plugin_opt_link_program %s\n", fbh_link_program());
	char *conf = fbh_strdupf(
			"# edge broker with flowmq-bridge (test harness)\n"
			"listener %d 127.0.0.1\n"
			"allow_anonymous true\n"
			"plugin %s\n"
			"%s"
			"%s"
			"%s",
			b->port, fbh_plugin_path(), opt, link, extra ? extra : "");

	free(opt);
	free(link);
	return conf;
}

char *fbh_edge_yaml(struct fbh_broker *b, int cloud_port, const char *tmpl)
{
	const struct fbh_certs *c = fbh_certs();
	char pwfile[PATH_MAX], spool[PATH_MAX], yaml[PATH_MAX], port[16];
	const struct {
		const char *name;
		const char *value;
	} vars[] = {
		{ "CLOUD_PORT", port },
		{ "CA_FILE", c->ca },
		{ "CERT_FILE", c->client_cert },
		{ "KEY_FILE", c->client_key },
		{ "WRONG_CA_FILE", c->wrong_ca },
		{ "WRONG_CERT_FILE", c->wrong_client_cert },
		{ "WRONG_KEY_FILE", c->wrong_client_key },
		{ "PASSWORD_FILE", pwfile },
		{ "SPOOL_PATH", spool },
		{ "DIR", b->dir },
	};
	size_t cap = strlen(tmpl) + 1, len = 0;
	char *out;

	snprintf(port, sizeof(port), "%d", cloud_port);
	path_join(pwfile, b->dir, "cloud-password");
	path_join(spool, b->dir, "spool");
	path_join(yaml, b->dir, "flowmq-bridge.yaml");
	fbh_write_file(pwfile, FBH_EDGE_PASSWORD "\n", 0600);

	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		cap += strlen(vars[i].value) * 8;
	cap += strlen(tmpl) * 2;
	out = xmalloc(cap);
	for (const char *p = tmpl; *p;) {
		const char *end;
		size_t nlen, i;

		if (*p != '@' || !(end = strchr(p + 1, '@'))) {
			out[len++] = *p++;
			continue;
		}
		nlen = (size_t)(end - p - 1);
		bool placeholder = nlen > 0;

		for (const char *q = p + 1; q < end; q++)
			if (!((*q >= 'A' && *q <= 'Z') || *q == '_'))
				placeholder = false;
		if (!placeholder) {
			out[len++] = *p++;
			continue;
		}
		for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
			if (strlen(vars[i].name) == nlen && strncmp(vars[i].name, p + 1, nlen) == 0)
				break;
		if (i == sizeof(vars) / sizeof(vars[0]))
			die("unknown placeholder @%.*s@ in YAML template", (int)nlen, p + 1);
		size_t vlen = strlen(vars[i].value);

		if (len + vlen + 1 >= cap) {
			cap = (len + vlen + 1) * 2;
			out = realloc(out, cap);
			if (!out)
				die("out of memory");
		}
		memcpy(out + len, vars[i].value, vlen);
		len += vlen;
		p = end + 1;
		if (len + 1 >= cap) {
			cap *= 2;
			out = realloc(out, cap);
			if (!out)
				die("out of memory");
		}
	}
	out[len] = '\0';
	fbh_write_file(yaml, out, 0644);
	free(out);
	return xstrdup(yaml);
}

/* ---- MQTT clients --------------------------------------------------------------------------- */

struct fbh_sub {
	struct client c;           /* first member: callbacks get a struct client * */
	struct fbh_msg **msgs;
	size_t count, cap;
	char **filters;
	int *filter_qos;
	size_t filter_count;
	int sub_mid;
	int sub_result;            /* 0 waiting, 1 granted, -1 refused */
};

struct fbh_pub {
	struct client c;
	int16_t *reasons;          /* per send index: -1 pending */
	size_t sent, acked, cap;
	long *mid_index;           /* mid -> send index */
};

static void client_register(struct client *c)
{
	pthread_mutex_lock(&H.clients_mu);
	c->next_reg = H.clients;
	H.clients = c;
	pthread_mutex_unlock(&H.clients_mu);
}

static void client_unregister(struct client *c)
{
	pthread_mutex_lock(&H.clients_mu);
	for (struct client **pp = &H.clients; *pp; pp = &(*pp)->next_reg) {
		if (*pp == c) {
			*pp = c->next_reg;
			break;
		}
	}
	pthread_mutex_unlock(&H.clients_mu);
}

static void cond_init_monotonic(pthread_cond_t *cv)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(cv, &attr);
	pthread_condattr_destroy(&attr);
}

static void msg_free(struct fbh_msg *m)
{
	if (!m)
		return;
	free(m->topic);
	free(m->payload);
	for (size_t i = 0; i < m->user_prop_count; i++) {
		free(m->user_props[i].name);
		free(m->user_props[i].value);
	}
	free(m->user_props);
	mosquitto_property_free_all(&m->props);
	free(m);
}

const char *fbh_msg_user_prop(const struct fbh_msg *m, const char *name)
{
	for (size_t i = 0; i < m->user_prop_count; i++)
		if (strcmp(m->user_props[i].name, name) == 0)
			return m->user_props[i].value;
	return NULL;
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags,
		const mosquitto_property *props)
{
	struct client *c = obj;

	(void)flags;
	(void)props;
	pthread_mutex_lock(&c->mu);
	c->connack_rc = rc;
	c->state = rc == 0 ? 1 : -1;
	if (rc == 0 && c->kind == CLIENT_SUB) {
		struct fbh_sub *s = (struct fbh_sub *)c;

		/* Reconnected after the broker went away: subscribe again. */
		for (size_t i = 0; i < s->filter_count; i++)
			mosquitto_subscribe_v5(mosq, NULL, s->filters[i], s->filter_qos[i], 0, NULL);
	}
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props)
{
	struct client *c = obj;

	(void)mosq;
	(void)rc;
	(void)props;
	pthread_mutex_lock(&c->mu);
	c->state = -1;
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mu);
}

/* libmosquitto's own errors (TLS handshake failures end its thread without on_disconnect):
 * a failure while connecting ends the wait, and is printed. */
static void on_log(struct mosquitto *mosq, void *obj, int level, const char *str)
{
	struct client *c = obj;

	(void)mosq;
	if (level != MOSQ_LOG_ERR)
		return;
	pthread_mutex_lock(&c->mu);
	if (c->state == 0) {
		fprintf(stderr, "fbh: libmosquitto: %s\n", str);
		c->state = -1;
		pthread_cond_broadcast(&c->cv);
	}
	pthread_mutex_unlock(&c->mu);
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int qos_count,
		const int *granted, const mosquitto_property *props)
{
	struct fbh_sub *s = obj;

	(void)mosq;
	(void)props;
	pthread_mutex_lock(&s->c.mu);
	if (mid == s->sub_mid)
		s->sub_result = (qos_count >= 1 && granted[0] < 0x80) ? 1 : -1;
	pthread_cond_broadcast(&s->c.cv);
	pthread_mutex_unlock(&s->c.mu);
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
		const mosquitto_property *props)
{
	struct fbh_sub *s = obj;
	struct fbh_msg *m = xcalloc(1, sizeof(*m));
	const mosquitto_property *p;
	char *name = NULL, *value = NULL;

	(void)mosq;
	m->topic = xstrdup(msg->topic);
	m->payloadlen = msg->payloadlen;
	m->payload = xmalloc((size_t)msg->payloadlen + 1);
	if (msg->payloadlen > 0)
		memcpy(m->payload, msg->payload, (size_t)msg->payloadlen);
	((char *)m->payload)[msg->payloadlen] = '\0';
	m->qos = msg->qos;
	m->retain = msg->retain;
	if (props)
		mosquitto_property_copy_all(&m->props, props);
	for (p = mosquitto_property_read_string_pair(props, MQTT_PROP_USER_PROPERTY, &name, &value, false);
			p;
			p = mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, true)) {
		m->user_props = realloc(m->user_props, (m->user_prop_count + 1) * sizeof(*m->user_props));
		if (!m->user_props)
			die("out of memory");
		m->user_props[m->user_prop_count].name = name;
		m->user_props[m->user_prop_count].value = value;
		m->user_prop_count++;
		name = value = NULL;
	}

	pthread_mutex_lock(&s->c.mu);
	if (s->count == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 64;
		s->msgs = realloc(s->msgs, s->cap * sizeof(*s->msgs));
		if (!s->msgs)
			die("out of memory");
	}
	s->msgs[s->count++] = m;
	pthread_cond_broadcast(&s->c.cv);
	pthread_mutex_unlock(&s->c.mu);
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid, int reason,
		const mosquitto_property *props)
{
	struct fbh_pub *p = obj;

	(void)mosq;
	(void)props;
	pthread_mutex_lock(&p->c.mu);
	if (mid >= 0 && mid < 65536) {
		long i = p->mid_index[mid];

		if (i >= 0 && (size_t)i < p->sent && p->reasons[i] < 0) {
			p->reasons[i] = (int16_t)(reason & 0xff);
			p->acked++;
			p->mid_index[mid] = -1;
		}
	}
	pthread_cond_broadcast(&p->c.cv);
	pthread_mutex_unlock(&p->c.mu);
}

/* Waits while PRED(c) is false, up to TIMEOUT_MS. Called with c->mu held. */
#define WAIT_UNTIL(c, cond, timeout_ms) \
	do { \
		struct timespec dl_; \
		deadline_ts(&dl_, (timeout_ms)); \
		while (!(cond)) { \
			if (pthread_cond_timedwait(&(c)->cv, &(c)->mu, &dl_) == ETIMEDOUT) \
				break; \
		} \
	} while (0)

static void client_close(struct client *c)
{
	if (c->mosq) {
		mosquitto_disconnect_v5(c->mosq, 0, NULL);
		if (c->loop_started)
			mosquitto_loop_stop(c->mosq, false);
		mosquitto_destroy(c->mosq);
		c->mosq = NULL;
	}
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
}

/* Creates, connects and starts the loop; waits for the CONNACK. Returns 0 or -1 (reason printed). */
static int client_connect(struct client *c, enum client_kind kind, int port,
		const struct fbh_client_opts *opts)
{
	static const struct fbh_client_opts none;
	static unsigned counter;
	mosquitto_property *props = NULL;
	char id[64];
	int rc, state;

	if (!H.inited && fbh_init() != 0)
		die("prerequisites missing");
	if (!opts)
		opts = &none;
	c->kind = kind;
	c->owner = getpid();
	pthread_mutex_init(&c->mu, NULL);
	cond_init_monotonic(&c->cv);
	if (opts->client_id)
		snprintf(id, sizeof(id), "%s", opts->client_id);
	else
		snprintf(id, sizeof(id), "fbh-%s-%ld-%u", kind == CLIENT_SUB ? "sub" : "pub",
				(long)getpid(), ++counter);
	c->mosq = mosquitto_new(id, !opts->persistent, c);
	if (!c->mosq)
		die("mosquitto_new: %s", strerror(errno));
	mosquitto_int_option(c->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	if (opts->max_inflight > 0)
		mosquitto_int_option(c->mosq, MOSQ_OPT_SEND_MAXIMUM, opts->max_inflight);
	mosquitto_reconnect_delay_set(c->mosq, 1, 2, false);
	if (opts->username)
		mosquitto_username_pw_set(c->mosq, opts->username, opts->password);
	mosquitto_connect_v5_callback_set(c->mosq, on_connect);
	mosquitto_disconnect_v5_callback_set(c->mosq, on_disconnect);
	mosquitto_log_callback_set(c->mosq, on_log);
	if (kind == CLIENT_SUB) {
		mosquitto_subscribe_v5_callback_set(c->mosq, on_subscribe);
		mosquitto_message_v5_callback_set(c->mosq, on_message);
	} else {
		mosquitto_publish_v5_callback_set(c->mosq, on_publish);
	}
	if (opts->tls_ca) {
		rc = mosquitto_tls_set(c->mosq, opts->tls_ca, NULL, opts->tls_cert, opts->tls_key, NULL);
		if (rc == MOSQ_ERR_SUCCESS)
			rc = mosquitto_tls_opts_set(c->mosq, 1, opts->tls_version, NULL);
		if (rc == MOSQ_ERR_SUCCESS && opts->tls_insecure)
			rc = mosquitto_tls_insecure_set(c->mosq, true);
		if (rc != MOSQ_ERR_SUCCESS) {
			fprintf(stderr, "fbh: %s: TLS options: %s\n", id, mosquitto_strerror(rc));
			return -1;
		}
	}
	if (opts->persistent)
		mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
				opts->session_expiry);
	rc = mosquitto_connect_bind_v5(c->mosq, "127.0.0.1", port,
			opts->keepalive > 0 ? opts->keepalive : 30, NULL, props);
	mosquitto_property_free_all(&props);
	if (rc != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "fbh: %s cannot connect to 127.0.0.1:%d: %s\n", id, port,
				rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
		return -1;
	}
	if (mosquitto_loop_start(c->mosq) != MOSQ_ERR_SUCCESS) {
		fprintf(stderr, "fbh: %s: mosquitto_loop_start failed\n", id);
		return -1;
	}
	c->loop_started = true;
	pthread_mutex_lock(&c->mu);
	WAIT_UNTIL(c, c->state != 0, opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 5000);
	state = c->state;
	rc = c->connack_rc;
	pthread_mutex_unlock(&c->mu);
	if (state != 1) {
		if (state == 0)
			fprintf(stderr, "fbh: %s: no CONNACK from 127.0.0.1:%d\n", id, port);
		else if (rc != 0)
			fprintf(stderr, "fbh: %s: refused by 127.0.0.1:%d: CONNACK %d (%s)\n", id, port, rc,
					mosquitto_reason_string(rc));
		else
			fprintf(stderr, "fbh: %s: connection to 127.0.0.1:%d failed\n", id, port);
		return -1;
	}
	return 0;
}

static void sub_free(struct fbh_sub *s)
{
	client_close(&s->c);
	for (size_t i = 0; i < s->count; i++)
		msg_free(s->msgs[i]);
	free(s->msgs);
	for (size_t i = 0; i < s->filter_count; i++)
		free(s->filters[i]);
	free(s->filters);
	free(s->filter_qos);
	free(s);
}

static void pub_free(struct fbh_pub *p)
{
	client_close(&p->c);
	free(p->reasons);
	free(p->mid_index);
	free(p);
}

static void clients_free_mine(void)
{
	pid_t self = getpid();

	for (;;) {
		struct client *c = NULL;

		pthread_mutex_lock(&H.clients_mu);
		for (struct client *i = H.clients; i; i = i->next_reg) {
			if (i->owner == self) {
				c = i;
				break;
			}
		}
		pthread_mutex_unlock(&H.clients_mu);
		if (!c)
			return;
		client_unregister(c);
		if (c->kind == CLIENT_SUB)
			sub_free((struct fbh_sub *)c);
		else
			pub_free((struct fbh_pub *)c);
	}
}

int fbh_sub_add(struct fbh_sub *s, const char *filter, int qos)
{
	int mid = 0, result;

	pthread_mutex_lock(&s->c.mu);
	s->filters = realloc(s->filters, (s->filter_count + 1) * sizeof(*s->filters));
	s->filter_qos = realloc(s->filter_qos, (s->filter_count + 1) * sizeof(*s->filter_qos));
	if (!s->filters || !s->filter_qos)
		die("out of memory");
	s->filters[s->filter_count] = xstrdup(filter);
	s->filter_qos[s->filter_count] = qos;
	s->filter_count++;
	s->sub_result = 0;
	/* Under the lock, so that the SUBACK cannot be handled before sub_mid is set. */
	if (mosquitto_subscribe_v5(s->c.mosq, &mid, filter, qos, 0, NULL) != MOSQ_ERR_SUCCESS) {
		pthread_mutex_unlock(&s->c.mu);
		fprintf(stderr, "fbh: subscribe %s failed\n", filter);
		return -1;
	}
	s->sub_mid = mid;
	WAIT_UNTIL(&s->c, s->sub_result != 0, 5000);
	result = s->sub_result;
	pthread_mutex_unlock(&s->c.mu);
	if (result != 1) {
		fprintf(stderr, "fbh: subscribe %s: %s\n", filter, result == 0 ? "no SUBACK" : "refused");
		return -1;
	}
	return 0;
}

struct fbh_sub *fbh_sub_start(int port, const struct fbh_client_opts *opts, const char *filter, int qos)
{
	struct fbh_sub *s = xcalloc(1, sizeof(*s));

	if (client_connect(&s->c, CLIENT_SUB, port, opts) < 0 || fbh_sub_add(s, filter, qos) < 0) {
		sub_free(s);
		return NULL;
	}
	client_register(&s->c);
	return s;
}

size_t fbh_sub_wait_count(struct fbh_sub *s, size_t n, int timeout_ms)
{
	size_t count;

	pthread_mutex_lock(&s->c.mu);
	WAIT_UNTIL(&s->c, s->count >= n, timeout_ms);
	count = s->count;
	pthread_mutex_unlock(&s->c.mu);
	return count;
}

size_t fbh_sub_count(struct fbh_sub *s)
{
	size_t count;

	pthread_mutex_lock(&s->c.mu);
	count = s->count;
	pthread_mutex_unlock(&s->c.mu);
	return count;
}

const struct fbh_msg *fbh_sub_msg(struct fbh_sub *s, size_t i)
{
	const struct fbh_msg *m = NULL;

	pthread_mutex_lock(&s->c.mu);
	if (i < s->count)
		m = s->msgs[i];
	pthread_mutex_unlock(&s->c.mu);
	return m;
}

void fbh_sub_clear(struct fbh_sub *s)
{
	pthread_mutex_lock(&s->c.mu);
	for (size_t i = 0; i < s->count; i++)
		msg_free(s->msgs[i]);
	s->count = 0;
	pthread_mutex_unlock(&s->c.mu);
}

bool fbh_sub_connected(struct fbh_sub *s)
{
	bool up;

	pthread_mutex_lock(&s->c.mu);
	up = s->c.state == 1;
	pthread_mutex_unlock(&s->c.mu);
	return up;
}

void fbh_sub_stop(struct fbh_sub *s)
{
	if (!s)
		return;
	client_unregister(&s->c);
	sub_free(s);
}

struct mosquitto *fbh_sub_mosq(struct fbh_sub *s)
{
	return s->c.mosq;
}

struct mosquitto *fbh_pub_mosq(struct fbh_pub *p)
{
	return p->c.mosq;
}

struct fbh_pub *fbh_pub_connect(int port, const struct fbh_client_opts *opts)
{
	struct fbh_pub *p = xcalloc(1, sizeof(*p));

	p->mid_index = xmalloc(65536 * sizeof(*p->mid_index));
	for (size_t i = 0; i < 65536; i++)
		p->mid_index[i] = -1;
	if (client_connect(&p->c, CLIENT_PUB, port, opts) < 0) {
		pub_free(p);
		return NULL;
	}
	client_register(&p->c);
	return p;
}

long fbh_pub_send(struct fbh_pub *p, const char *topic, const void *payload, int payloadlen, int qos,
		bool retain, const mosquitto_property *props)
{
	int mid = 0, rc;
	long idx;

	pthread_mutex_lock(&p->c.mu);
	if (p->sent == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 256;
		p->reasons = realloc(p->reasons, p->cap * sizeof(*p->reasons));
		if (!p->reasons)
			die("out of memory");
	}
	idx = (long)p->sent;
	p->reasons[idx] = -1;
	/* Under the lock: on_publish for this mid waits until mid_index is set. */
	rc = mosquitto_publish_v5(p->c.mosq, &mid, topic, payloadlen, payload, qos, retain, props);
	if (rc != MOSQ_ERR_SUCCESS) {
		pthread_mutex_unlock(&p->c.mu);
		fprintf(stderr, "fbh: publish %s: %s\n", topic, mosquitto_strerror(rc));
		return -1;
	}
	p->sent++;
	if (mid > 0 && mid < 65536)
		p->mid_index[mid] = idx;
	pthread_mutex_unlock(&p->c.mu);
	return idx;
}

int fbh_pub_send_n(struct fbh_pub *p, const char *topic, const char *payload_prefix, size_t n,
		int qos, const mosquitto_property *props)
{
	for (size_t i = 0; i < n; i++) {
		char *payload = fbh_strdupf("%s%zu", payload_prefix ? payload_prefix : "", i);
		long r = fbh_pub_send(p, topic, payload, (int)strlen(payload), qos, false, props);

		free(payload);
		if (r < 0)
			return -1;
	}
	return 0;
}

bool fbh_pub_wait_all(struct fbh_pub *p, int timeout_ms)
{
	bool all;

	pthread_mutex_lock(&p->c.mu);
	WAIT_UNTIL(&p->c, p->acked >= p->sent, timeout_ms);
	all = p->acked >= p->sent;
	pthread_mutex_unlock(&p->c.mu);
	return all;
}

size_t fbh_pub_sent(struct fbh_pub *p)
{
	size_t n;

	pthread_mutex_lock(&p->c.mu);
	n = p->sent;
	pthread_mutex_unlock(&p->c.mu);
	return n;
}

size_t fbh_pub_acked(struct fbh_pub *p)
{
	size_t n;

	pthread_mutex_lock(&p->c.mu);
	n = p->acked;
	pthread_mutex_unlock(&p->c.mu);
	return n;
}

int fbh_pub_reason(struct fbh_pub *p, size_t i)
{
	int r = -1;

	pthread_mutex_lock(&p->c.mu);
	if (i < p->sent)
		r = p->reasons[i];
	pthread_mutex_unlock(&p->c.mu);
	return r;
}

size_t fbh_pub_count_reason(struct fbh_pub *p, int rc)
{
	size_t n = 0;

	pthread_mutex_lock(&p->c.mu);
	for (size_t i = 0; i < p->sent; i++)
		if (p->reasons[i] == rc)
			n++;
	pthread_mutex_unlock(&p->c.mu);
	return n;
}

size_t fbh_pub_count_failed(struct fbh_pub *p)
{
	size_t n = 0;

	pthread_mutex_lock(&p->c.mu);
	for (size_t i = 0; i < p->sent; i++)
		if (p->reasons[i] >= 0x80)
			n++;
	pthread_mutex_unlock(&p->c.mu);
	return n;
}

void fbh_pub_close(struct fbh_pub *p)
{
	if (!p)
		return;
	client_unregister(&p->c);
	pub_free(p);
}

long fbh_publish(int port, const struct fbh_client_opts *opts, const char *topic,
		const char *payload_prefix, size_t n, int qos, const mosquitto_property *props, int timeout_ms)
{
	struct fbh_pub *p = fbh_pub_connect(port, opts);
	long ok = 0;

	if (!p)
		return -1;
	if (fbh_pub_send_n(p, topic, payload_prefix, n, qos, props) == 0)
		fbh_pub_wait_all(p, timeout_ms);
	pthread_mutex_lock(&p->c.mu);
	for (size_t i = 0; i < p->sent; i++)
		if (p->reasons[i] >= 0 && p->reasons[i] < 0x80)
			ok++;
	pthread_mutex_unlock(&p->c.mu);
	fbh_pub_close(p);
	return ok;
}
