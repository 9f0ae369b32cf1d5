/* Helpers shared by the flowmq-bridge integration and fault suites (test processes): see common.h. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "common.h"

const struct fbh_client_opts cloud_tester = {
	.username = FBH_CLOUD_TEST_USER,
	.password = FBH_CLOUD_TEST_PASSWORD,
};

struct fbh_sub *sys_watch(struct fbh_broker *edge)
{
	return fbh_sub_start(edge->port, NULL, SYS_PREFIX "#", 0);
}

const char *sys_value(struct fbh_sub *w, const char *key)
{
	size_t n = fbh_sub_count(w);
	size_t plen = strlen(SYS_PREFIX);

	while(n-- > 0){
		const struct fbh_msg *m = fbh_sub_msg(w, n);
		if(!strncmp(m->topic, SYS_PREFIX, plen) && !strcmp(m->topic + plen, key)){
			return m->payload;
		}
	}
	return NULL;
}

static long elapsed_ms(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

bool sys_wait(struct fbh_sub *w, const char *key, const char *value, int timeout_ms)
{
	struct timespec t0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	do{
		const char *v = sys_value(w, key);
		if(v && !strcmp(v, value)){
			return true;
		}
		usleep(20000);
	}while(elapsed_ms(&t0) < timeout_ms);
	fprintf(stderr, "status %s is '%s', expected '%s'\n", key, sys_value(w, key) ? sys_value(w, key) : "(none)", value);
	return false;
}

bool sys_wait_u64(struct fbh_sub *w, const char *key, uint64_t v, int timeout_ms)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
	return sys_wait(w, key, buf, timeout_ms);
}

long payload_index(const struct fbh_msg *m, const char *prefix)
{
	size_t plen = strlen(prefix);
	char *end;
	long v;

	if((size_t)m->payloadlen <= plen || strncmp(m->payload, prefix, plen)){
		return -1;
	}
	errno = 0;
	v = strtol((const char *)m->payload + plen, &end, 10);
	return (errno || *end) ? -1 : v;
}

bool wait_exactly(struct fbh_sub *s, size_t n, int timeout_ms, int settle_ms)
{
	if(fbh_sub_wait_count(s, n, timeout_ms) < n){
		fprintf(stderr, "received %zu messages, expected %zu\n", fbh_sub_count(s), n);
		return false;
	}
	usleep((useconds_t)settle_ms * 1000);
	if(fbh_sub_count(s) != n){
		fprintf(stderr, "received %zu messages, expected exactly %zu\n", fbh_sub_count(s), n);
		return false;
	}
	return true;
}

char *cloud_persistent_extra(struct fbh_broker *b)
{
	return fbh_strdupf("persistence true\npersistence_location %s/\nautosave_interval 0\n", b->dir);
}

struct fbh_client_opts persistent_sub(const char *id)
{
	struct fbh_client_opts o = cloud_tester;

	o.client_id = id;
	o.persistent = true;
	o.session_expiry = 3600;
	return o;
}

void start_cloud(struct fbh_broker *cloud, const struct fbh_cloud_opts *opts)
{
	char *conf = fbh_cloud_conf(cloud, opts);
	int rc = fbh_broker_start(cloud, conf);

	if(rc != 0){
		fbh_broker_dump_log(cloud);
	}
	ck_assert_int_eq(rc, 0);
	free(conf);
}

void start_edge(struct fbh_broker *edge, int cloud_port, const char *yaml_tmpl, const char *extra)
{
	char *yaml = fbh_edge_yaml(edge, cloud_port, yaml_tmpl);
	char *conf = fbh_edge_conf(edge, yaml, extra);
	int rc = fbh_broker_start(edge, conf);

	if(rc != 0){
		fbh_broker_dump_log(edge);
	}
	ck_assert_int_eq(rc, 0);
	/* A link process slower than the broker's 5 s start wait (a loaded machine, the sanitizer
	 * build) leaves the broker running with matched messages following spool.on_full until the
	 * staging files open: the tests publish only once they are open. */
	if(fbh_broker_log_contains(edge, "is still opening the spool")){
		ck_assert_msg(fbh_wait_log(edge, "matched messages are spooled again", 60000),
				"the staging files did not open: %s", edge->log);
	}
	free(conf);
	free(yaml);
}

/* ---- the state of a folder: every entry's path, type, mode, size, mtime and SHA-256 ---- */

static char *tree_text;
static size_t tree_len, tree_cap;

static void sha256_file(const char *path, char hex[65])
{
	unsigned char buf[65536], md[32];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_ptr_nonnull(ctx);
	ck_assert_int_eq(EVP_DigestInit_ex(ctx, EVP_sha256(), NULL), 1);
	while((n = read(fd, buf, sizeof(buf))) > 0){
		ck_assert_int_eq(EVP_DigestUpdate(ctx, buf, (size_t)n), 1);
	}
	ck_assert_int_eq(n, 0);
	close(fd);
	ck_assert_int_eq(EVP_DigestFinal_ex(ctx, md, &mdlen), 1);
	EVP_MD_CTX_free(ctx);
	ck_assert_uint_eq(mdlen, 32);
	for(int i = 0; i < 32; i++){
		snprintf(hex + 2 * i, 3, "%02x", md[i]);
	}
}

static int tree_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	char hex[65] = "-", line[PATH_MAX + 200];
	int len;

	(void)ftw;
	if(flag == FTW_F){
		sha256_file(path, hex);
	}
	len = snprintf(line, sizeof(line), "%s type %d mode %o size %lld mtime %lld.%09ld sha256 %s\n",
			path, flag, (unsigned)st->st_mode, (long long)st->st_size,
			(long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec, hex);
	ck_assert_int_lt(len, (int)sizeof(line));
	if(tree_len + (size_t)len + 1 > tree_cap){
		tree_cap = (tree_len + (size_t)len + 1) * 2;
		tree_text = realloc(tree_text, tree_cap);
		ck_assert_ptr_nonnull(tree_text);
	}
	memcpy(tree_text + tree_len, line, (size_t)len + 1);
	tree_len += (size_t)len;
	return 0;
}

/* The state of folder DIR (caller frees); "" when it does not exist. */
char *tree_state(const char *dir)
{
	struct stat sb;
	char *t;

	if(stat(dir, &sb) != 0){
		ck_assert_int_eq(errno, ENOENT);
		return strdup("");
	}
	tree_text = NULL;
	tree_len = tree_cap = 0;
	ck_assert_int_eq(nftw(dir, tree_one, 16, FTW_PHYS), 0);
	t = tree_text;
	tree_text = NULL;
	return t;
}

/* Waits until DIR stays the same for 500 ms (a link process that has nothing to do writes
 * nothing) and returns that state. */
char *tree_settled(const char *dir)
{
	char *a = tree_state(dir), *b;

	for(int i = 0; i < 60; i++){
		usleep(500 * 1000);
		b = tree_state(dir);
		if(strcmp(a, b) == 0){
			free(b);
			return a;
		}
		free(a);
		a = b;
	}
	ck_abort_msg("%s keeps changing without the CLI", dir);
	return NULL;
}


void start_cloud_and_edge(struct fbh_broker *cloud, struct fbh_broker *edge, const char *yaml_tmpl, struct fbh_sub **sub,
		struct fbh_sub **sys)
{
	fbh_broker_init(cloud, "cloud");
	fbh_broker_init(edge, "edge");
	start_cloud(cloud, NULL);
	*sub = fbh_sub_start(cloud->port2, &cloud_tester, "edge/site-A/telemetry/#", 1);
	ck_assert_ptr_nonnull(*sub);
	start_edge(edge, cloud->port, yaml_tmpl, NULL);
	*sys = sys_watch(edge);
	ck_assert_ptr_nonnull(*sys);
}

void start_commands(struct fbh_broker *cloud, struct fbh_broker *edge, struct fbh_sub **local, struct fbh_sub **sys)
{
	fbh_broker_init(cloud, "cloud");
	fbh_broker_init(edge, "edge");
	start_cloud(cloud, NULL);
	start_edge(edge, cloud->port, FBH_YAML_BASE FBH_YAML_E2C_RULES
			"cloud_to_edge:\n"
			"  - cloud: cloud/commands/${site_id}/#\n"
			"    local: local/commands/#\n"
			"    max_payload: 16MiB\n", NULL);
	*local = fbh_sub_start(edge->port, NULL, "local/commands/#", 1);
	ck_assert_ptr_nonnull(*local);
	*sys = sys_watch(edge);
	ck_assert_ptr_nonnull(*sys);
	ck_assert(sys_wait(*sys, "state", "connected", 10000));
}

pid_t link_pid(pid_t broker)
{
	char path[128], *text, *name;
	long child = 0;
	int end = 0;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)broker, (int)broker);
	text = fbh_read_file(path);
	if(text == NULL || sscanf(text, "%ld %n", &child, &end) != 1){
		free(text);
		return 0;
	}
	ck_assert_msg(text[end] == '\0', "the edge has more than one child: %s", text);
	free(text);
	snprintf(path, sizeof(path), "/proc/%ld/comm", child);
	name = fbh_read_file(path);
	if(name == NULL || strcmp(name, "flowmq-link\n") != 0){
		free(name);
		return 0; /* ended in between, or forked and not named yet */
	}
	free(name);
	return (pid_t)child;
}

pid_t link_pid_wait(pid_t broker)
{
	pid_t p = 0;

	for(int i = 0; i < 500 && (p = link_pid(broker)) == 0; i++){
		usleep(10000);
	}
	ck_assert_msg(p > 0, "the edge (pid %d) has no link process", (int)broker);
	return p;
}

unsigned log_count(struct fbh_broker *edge, const char *needle)
{
	char *text = fbh_read_file(edge->log);
	unsigned n = 0;

	ck_assert_ptr_nonnull(text);
	for(const char *p = text; (p = strstr(p, needle)) != NULL; p += strlen(needle)){
		n++;
	}
	free(text);
	return n;
}

size_t spool_files(struct fbh_broker *edge, const char *stem)
{
	char *pattern = fbh_strdupf("%s/spool/%s*", edge->dir, stem);
	glob_t g;
	size_t n;

	n = glob(pattern, 0, NULL, &g) == 0 ? g.gl_pathc : 0;
	globfree(&g);
	free(pattern);
	return n;
}
