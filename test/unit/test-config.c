/* Unit tests of plugin/common/config.c: every default, the shipped example, the duration and size parsers,
 * ${site_id} expansion, and refused configurations with their exact "FILE:LINE: KEY: what" line.
 * Each test writes its YAML into a fresh mkdtemp folder. */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"

#ifndef FB_SOURCE_ROOT
#error "FB_SOURCE_ROOT must name the source tree"
#endif
#define EXAMPLE FB_SOURCE_ROOT "/conf.d/flowmq-bridge.yaml"

/* ---- helpers --------------------------------------------------------------------------------- */

#define LOG_MAX 128

static char dir[64];
static struct {
	int level[LOG_MAX];
	char *text[LOG_MAX];
	size_t count;
} logs;

static void capture(void *ud, int level, const char *line)
{
	if(logs.count < LOG_MAX){
		logs.level[logs.count] = level;
		logs.text[logs.count++] = strdup(line);
	}
}

static const struct fb_logger lg = { capture, NULL };

static void logs_clear(void)
{
	for(size_t i = 0; i < logs.count; i++){
		free(logs.text[i]);
	}
	logs.count = 0;
}

/* Every captured line, for failure messages. */
static const char *logs_dump(void)
{
	static char buf[8192];
	size_t n = 0;

	buf[0] = '\0';
	for(size_t i = 0; i < logs.count && n < sizeof(buf); i++){
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\n  [%d] %s", logs.level[i], logs.text[i]);
	}
	return logs.count ? buf : " (nothing logged)";
}

static size_t logs_count(int level)
{
	size_t n = 0;

	for(size_t i = 0; i < logs.count; i++){
		n += logs.level[i] == level;
	}
	return n;
}

static bool logged(int level, const char *needle)
{
	for(size_t i = 0; i < logs.count; i++){
		if(logs.level[i] == level && strstr(logs.text[i], needle)){
			return true;
		}
	}
	return false;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/fb-test-config-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	logs.count = 0;
}

static void teardown(void)
{
	logs_clear();
	nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static const char *in_dir(const char *name)
{
	static char path[2][256];
	static int next;

	next ^= 1;
	snprintf(path[next], sizeof(path[next]), "%s/%s", dir, name);
	return path[next];
}

/* Writes TEXT to DIR/NAME with MODE; "@DIR@" in TEXT stands for the temporary folder. */
static void write_file(const char *name, const char *text, mode_t mode)
{
	const char *p, *at;
	FILE *f = fopen(in_dir(name), "w");

	ck_assert_ptr_nonnull(f);
	for(p = text; (at = strstr(p, "@DIR@")) != NULL; p = at + 5){
		fwrite(p, 1, (size_t)(at - p), f);
		fputs(dir, f);
	}
	fputs(p, f);
	ck_assert_int_eq(fclose(f), 0);
	ck_assert_int_eq(chmod(in_dir(name), mode), 0);
}

/* Writes YAML to DIR/cfg.yaml and loads it. */
static int load_yaml(const char *yaml, struct fb_config **cfg)
{
	write_file("cfg.yaml", yaml, 0644);
	return fb_config_load(in_dir("cfg.yaml"), &lg, cfg);
}

static struct fb_config *load_ok(const char *yaml)
{
	struct fb_config *cfg = NULL;
	int rc = load_yaml(yaml, &cfg);

	ck_assert_msg(rc == 0, "load failed with %d:%s", rc, logs_dump());
	ck_assert_ptr_nonnull(cfg);
	ck_assert_msg(logs_count(MOSQ_LOG_ERR) == 0, "errors logged:%s", logs_dump());
	return cfg;
}

/* Asserts that YAML is refused with -EINVAL and that an error line contains EXPECTED. */
static void expect_refused(const char *yaml, const char *expected)
{
	struct fb_config *cfg = (struct fb_config *)&cfg;
	int rc = load_yaml(yaml, &cfg);

	ck_assert_msg(rc == -EINVAL, "expected -EINVAL, got %d:%s", rc, logs_dump());
	ck_assert_ptr_null(cfg);
	ck_assert_msg(logged(MOSQ_LOG_ERR, expected), "no error line contains \"%s\":%s", expected, logs_dump());
}

#define HEAD "site_id: site-A\ncloud:\n  endpoints: [mqtts://cloud.example]\nspool:\n  path: /tmp/spool\n"
#define RULE "edge_to_cloud:\n  - local: a/#\n    cloud: b/#\n"
#define MINIMAL HEAD RULE /* 8 lines; the rule is line 7 */

/* ---- defaults and the shipped example ---------------------------------------------------------- */

START_TEST(test_minimal_config_gets_every_default)
{
	struct fb_config *cfg = load_ok(MINIMAL);

	ck_assert_uint_eq(logs.count, 0);
	ck_assert_str_eq(cfg->file, in_dir("cfg.yaml"));
	ck_assert_str_eq(cfg->site_id, "site-A");
	ck_assert_uint_eq(cfg->cloud.endpoint_count, 1);
	ck_assert_str_eq(cfg->cloud.endpoints[0].url, "mqtts://cloud.example");
	ck_assert_str_eq(cfg->cloud.endpoints[0].host, "cloud.example");
	ck_assert_uint_eq(cfg->cloud.endpoints[0].port, 8883);
	ck_assert(cfg->cloud.endpoints[0].tls);
	ck_assert_str_eq(cfg->cloud.client_id, "flowmq-bridge-site-A");
	ck_assert_uint_eq(cfg->cloud.keepalive_s, 30);
	ck_assert_uint_eq(cfg->cloud.session_expiry_s, 86400);
	ck_assert_uint_eq(cfg->cloud.connect_timeout_ms, 10000);
	ck_assert_uint_eq(cfg->cloud.max_inflight, 64);
	ck_assert_uint_eq(cfg->cloud.reconnect_min_ms, 500);
	ck_assert_uint_eq(cfg->cloud.reconnect_max_ms, 60000);
	ck_assert_uint_eq(cfg->cloud.poison_after, 3);
	ck_assert_uint_eq(cfg->cloud.max_rate, 0);
	ck_assert_uint_eq(cfg->cloud.max_bandwidth, 0);
	ck_assert_ptr_null(cfg->cloud.status_topic);
	ck_assert_ptr_null(cfg->cloud.username);
	ck_assert_ptr_null(cfg->cloud.password_file);
	ck_assert_ptr_null(cfg->cloud.password);
	ck_assert_ptr_null(cfg->cloud.tls.ca_file);
	ck_assert_ptr_null(cfg->cloud.tls.cert_file);
	ck_assert_ptr_null(cfg->cloud.tls.key_file);
	ck_assert_int_eq(cfg->cloud.tls.min_version, 0x0304);
	ck_assert_ptr_null(cfg->cloud.tls.server_name);
	ck_assert(cfg->cloud.tls.verify);
	ck_assert_ptr_null(cfg->cloud.tls.alpn);
	ck_assert(!cfg->cloud.tls.allow_plaintext);
	ck_assert_str_eq(cfg->spool.path, "/tmp/spool");
	ck_assert_uint_eq(cfg->spool.max_size, 1ull << 30);
	ck_assert_int_eq(cfg->spool.on_full, FB_ON_FULL_DROP_OLDEST);
	ck_assert_int_eq(cfg->spool.sync, FB_SYNC_INTERVAL);
	ck_assert_uint_eq(cfg->spool.sync_interval_ms, 100);
	ck_assert_uint_eq(cfg->spool.ttl_ms, 0);
	ck_assert_uint_eq(cfg->status_interval_ms, 10000);
	ck_assert_uint_eq(cfg->link_timeout_ms, 10000);
	ck_assert_uint_eq(cfg->e2c_count, 1);
	ck_assert_str_eq(cfg->e2c[0].local, "a/#");
	ck_assert_str_eq(cfg->e2c[0].cloud, "b/#");
	ck_assert_int_eq(cfg->e2c[0].qos, 1);
	ck_assert(!cfg->e2c[0].retain_clear);
	ck_assert(!cfg->e2c[0].drop);
	ck_assert_ptr_null(cfg->e2c[0].headers);
	ck_assert_uint_eq(cfg->e2c[0].header_count, 0);
	ck_assert_uint_eq(cfg->e2c[0].ttl_ms, 0);
	ck_assert_uint_eq(cfg->e2c[0].line, 7);
	ck_assert_uint_eq(cfg->e2c[0].priority, 4);
	ck_assert(!cfg->e2c[0].live_first);
	ck_assert_uint_eq(cfg->cloud.lane_min_share_bp, 500);
	ck_assert_uint_eq(cfg->c2e_count, 0);
	ck_assert_ptr_null(cfg->c2e);
	fb_config_free(cfg);
}
END_TEST

START_TEST(test_cloud_to_edge_rule_defaults)
{
	struct fb_config *cfg = load_ok(HEAD "cloud_to_edge:\n  - cloud: cmd/+\n    local: in/+\n");

	ck_assert_uint_eq(cfg->e2c_count, 0);
	ck_assert_uint_eq(cfg->c2e_count, 1);
	ck_assert_str_eq(cfg->c2e[0].cloud, "cmd/+");
	ck_assert_str_eq(cfg->c2e[0].local, "in/+");
	ck_assert_int_eq(cfg->c2e[0].qos, 1);
	ck_assert(!cfg->c2e[0].retain_clear);
	ck_assert_uint_eq(cfg->c2e[0].max_payload, 256 * 1024);
	ck_assert_uint_eq(cfg->c2e[0].line, 7);
	fb_config_free(cfg);
}
END_TEST

START_TEST(test_every_key_set_is_converted)
{
	struct fb_config *cfg;

	write_file("ca.pem", "ca", 0644);
	write_file("edge.crt", "crt", 0644);
	write_file("edge.key", "key", 0600);
	write_file("token", "s3cret\r\n", 0600);
	cfg = load_ok(
		"site_id: S_1.x-2\n"
		"cloud:\n"
		"  endpoints:\n"
		"    - mqtts://a.example\n"
		"    - mqtts://[::1]:8884\n"
		"    - mqtt://10.0.0.1\n"
		"    - mqtt://broker_1.local:65535\n"
		"  client_id: my-client\n"
		"  keepalive: 2m\n"
		"  session_expiry: 7d\n"
		"  connect_timeout: 1500ms\n"
		"  max_inflight: 65535\n"
		"  reconnect:\n"
		"    min: 1s\n"
		"    max: 1s\n"
		"  status_topic: st\n"
		"  auth: { username: user, password_file: @DIR@/token }\n"
		"  tls:\n"
		"    ca_file: @DIR@/ca.pem\n"
		"    cert_file: @DIR@/edge.crt\n"
		"    key_file: @DIR@/edge.key\n"
		"    min_version: 1.2\n"
		"    server_name: sni.example\n"
		"    verify: yes\n"
		"    alpn: mqtt\n"
		"    allow_plaintext: true\n"
		"spool:\n"
		"  path: /var/spool/x\n"
		"  max_size: 64KiB\n"
		"  on_full: reject\n"
		"  sync: always\n"
		"  ttl: 2h\n"
		"status_interval: 100ms\n"
		"edge_to_cloud:\n"
		"  - { local: a/+/#, cloud: b/+/c/#, qos: 0, retain: clear, ttl: 90s }\n"
		"  - local: '#'\n"
		"    drop: true\n"
		"cloud_to_edge:\n"
		"  - cloud: x\n"
		"    local: y\n"
		"    qos: 2\n"
		"    retain: clear\n"
		"    max_payload: 1\n"
		"link_timeout: 3s\n");

	/* The username and password go to the mqtt:// endpoints in clear: one warning. */
	ck_assert_msg(logs.count == 1, "%s", logs_dump());
	ck_assert_int_eq(logs.level[0], MOSQ_LOG_WARNING);
	ck_assert_str_eq(logs.text[0], "cfg.yaml:6: cloud.endpoints[2]: 'mqtt://10.0.0.1' is not encrypted: the "
			"username and password of cloud.auth go to it in clear");
	ck_assert_str_eq(cfg->site_id, "S_1.x-2");
	ck_assert_uint_eq(cfg->cloud.endpoint_count, 4);
	ck_assert_str_eq(cfg->cloud.endpoints[1].url, "mqtts://[::1]:8884");
	ck_assert_str_eq(cfg->cloud.endpoints[1].host, "::1");
	ck_assert_uint_eq(cfg->cloud.endpoints[1].port, 8884);
	ck_assert(cfg->cloud.endpoints[1].tls);
	ck_assert_str_eq(cfg->cloud.endpoints[2].host, "10.0.0.1");
	ck_assert_uint_eq(cfg->cloud.endpoints[2].port, 1883);
	ck_assert(!cfg->cloud.endpoints[2].tls);
	ck_assert_str_eq(cfg->cloud.endpoints[3].host, "broker_1.local");
	ck_assert_uint_eq(cfg->cloud.endpoints[3].port, 65535);
	ck_assert_str_eq(cfg->cloud.client_id, "my-client");
	ck_assert_uint_eq(cfg->cloud.keepalive_s, 120);
	ck_assert_uint_eq(cfg->cloud.session_expiry_s, 7 * 86400);
	ck_assert_uint_eq(cfg->cloud.connect_timeout_ms, 1500);
	ck_assert_uint_eq(cfg->cloud.max_inflight, 65535);
	ck_assert_uint_eq(cfg->cloud.reconnect_min_ms, 1000);
	ck_assert_uint_eq(cfg->cloud.reconnect_max_ms, 1000);
	ck_assert_str_eq(cfg->cloud.status_topic, "st");
	ck_assert_str_eq(cfg->cloud.username, "user");
	ck_assert_str_eq(cfg->cloud.password_file, in_dir("token"));
	ck_assert_str_eq(cfg->cloud.password, "s3cret");
	ck_assert_str_eq(cfg->cloud.tls.ca_file, in_dir("ca.pem"));
	ck_assert_str_eq(cfg->cloud.tls.cert_file, in_dir("edge.crt"));
	ck_assert_str_eq(cfg->cloud.tls.key_file, in_dir("edge.key"));
	ck_assert_int_eq(cfg->cloud.tls.min_version, 0x0303);
	ck_assert_str_eq(cfg->cloud.tls.server_name, "sni.example");
	ck_assert(cfg->cloud.tls.verify);
	ck_assert_str_eq(cfg->cloud.tls.alpn, "mqtt");
	ck_assert(cfg->cloud.tls.allow_plaintext);
	ck_assert_str_eq(cfg->spool.path, "/var/spool/x");
	ck_assert_uint_eq(cfg->spool.max_size, 65536);
	ck_assert_int_eq(cfg->spool.on_full, FB_ON_FULL_REJECT);
	ck_assert_int_eq(cfg->spool.sync, FB_SYNC_ALWAYS);
	ck_assert_uint_eq(cfg->spool.ttl_ms, 2 * 3600 * 1000);
	ck_assert_uint_eq(cfg->status_interval_ms, 100);
	ck_assert_uint_eq(cfg->link_timeout_ms, 3000);
	ck_assert_uint_eq(cfg->e2c_count, 2);
	ck_assert_str_eq(cfg->e2c[0].local, "a/+/#");
	ck_assert_str_eq(cfg->e2c[0].cloud, "b/+/c/#");
	ck_assert_int_eq(cfg->e2c[0].qos, 0);
	ck_assert(cfg->e2c[0].retain_clear);
	ck_assert_uint_eq(cfg->e2c[0].ttl_ms, 90000);
	ck_assert_uint_eq(cfg->e2c[0].line, 35);
	ck_assert_str_eq(cfg->e2c[1].local, "#");
	ck_assert_ptr_null(cfg->e2c[1].cloud);
	ck_assert(cfg->e2c[1].drop);
	ck_assert_uint_eq(cfg->e2c[1].line, 36);
	ck_assert_uint_eq(cfg->c2e_count, 1);
	ck_assert_int_eq(cfg->c2e[0].qos, 2);
	ck_assert(cfg->c2e[0].retain_clear);
	ck_assert_uint_eq(cfg->c2e[0].max_payload, 1);
	ck_assert_uint_eq(cfg->c2e[0].line, 39);
	fb_config_free(cfg);
}
END_TEST

START_TEST(test_sync_modes)
{
	static const struct {
		const char *text;
		enum fb_sync sync;
		uint32_t interval_ms;
	} cases[] = {
		{ "always", FB_SYNC_ALWAYS, 0 },
		{ "never", FB_SYNC_NEVER, 0 },
		{ "1ms", FB_SYNC_INTERVAL, 1 },
		{ "2s", FB_SYNC_INTERVAL, 2000 },
		{ "1h", FB_SYNC_INTERVAL, 3600000 },
	};
	char yaml[512];

	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		snprintf(yaml, sizeof(yaml), HEAD "  sync: %s\n" RULE, cases[i].text);
		struct fb_config *cfg = load_ok(yaml);
		ck_assert_int_eq(cfg->spool.sync, cases[i].sync);
		ck_assert_uint_eq(cfg->spool.sync_interval_ms, cases[i].interval_ms);
		fb_config_free(cfg);
	}
}
END_TEST

START_TEST(test_poison_after_takes_1_to_100)
{
	static const struct {
		const char *text;
		uint32_t breaks;
	} cases[] = {
		{ "1", 1 },
		{ "3", 3 },
		{ "5", 5 },
		{ "100", 100 },
		{ "~", 3 },   /* null: the default */
	};
	char yaml[512];

	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		snprintf(yaml, sizeof(yaml), "site_id: site-A\ncloud:\n  endpoints: [mqtts://cloud.example]\n"
				"  poison_after: %s\nspool:\n  path: /tmp/spool\n" RULE, cases[i].text);
		struct fb_config *cfg = load_ok(yaml);
		ck_assert_msg(logs.count == 0, "poison_after: %s logged:%s", cases[i].text, logs_dump());
		ck_assert_uint_eq(cfg->cloud.poison_after, cases[i].breaks);
		fb_config_free(cfg);
	}
}
END_TEST

START_TEST(test_priority_and_lane_min_share)
{
	static const struct {
		const char *prio, *share;
		unsigned lane;
		uint32_t bp;
	} cases[] = {
		{ "0", "0%", 0, 0 },
		{ "9", "50%", 9, 5000 },
		{ "4", "5%", 4, 500 },
		{ "2", "2.5%", 2, 250 },
		{ "7", "12.34%", 7, 1234 },
		{ "~", "~", 4, 500 },   /* null: the defaults */
	};
	char yaml[512];

	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		snprintf(yaml, sizeof(yaml), "site_id: site-A\ncloud:\n  endpoints: [mqtts://cloud.example]\n"
				"  lane_min_share: %s\nspool:\n  path: /tmp/spool\n" RULE "    priority: %s\n",
				cases[i].share, cases[i].prio);
		struct fb_config *cfg = load_ok(yaml);
		ck_assert_msg(logs.count == 0, "case %zu logged:%s", i, logs_dump());
		ck_assert_uint_eq(cfg->e2c[0].priority, cases[i].lane);
		ck_assert(!cfg->e2c[0].live_first);
		ck_assert_uint_eq(cfg->cloud.lane_min_share_bp, cases[i].bp);
		fb_config_free(cfg);
	}
	{
		struct fb_config *cfg = load_ok(MINIMAL "    live_first: true\n");
		ck_assert(cfg->e2c[0].live_first);
		ck_assert_uint_eq(cfg->e2c[0].priority, 4);
		fb_config_free(cfg);
	}
}
END_TEST

/* cloud.max_rate: messages per second, "/s" optional; cloud.max_bandwidth: a size per second. */
START_TEST(test_rate_caps)
{
	static const struct {
		const char *rate, *bandwidth;
		uint32_t want_rate;
		uint64_t want_bandwidth;
	} cases[] = {
		{ "1000", "256KiB", 1000, 256 * 1024 },
		{ "500/s", "256KiB/s", 500, 256 * 1024 },
		{ "1", "1KiB", 1, 1024 },
		{ "10000000", "1TiB", 10000000, 1ull << 40 },
		{ "7", "1500", 7, 1500 },
	};

	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		char yaml[512];
		struct fb_config *cfg;

		snprintf(yaml, sizeof(yaml), "site_id: site-A\ncloud:\n  endpoints: [mqtts://cloud.example]\n"
				"  max_rate: %s\n  max_bandwidth: %s\nspool:\n  path: /tmp/spool\n" RULE,
				cases[i].rate, cases[i].bandwidth);
		cfg = load_ok(yaml);
		ck_assert_uint_eq(cfg->cloud.max_rate, cases[i].want_rate);
		ck_assert_uint_eq(cfg->cloud.max_bandwidth, cases[i].want_bandwidth);
		fb_config_free(cfg);
	}
}
END_TEST

START_TEST(test_password_file_loses_one_trailing_newline)
{
	static const struct {
		const char *content;
		const char *password;
	} cases[] = {
		{ "tok", "tok" },
		{ "tok\n", "tok" },
		{ "tok\r\n", "tok" },
		{ "tok\n\n", "tok\n" },
		{ " a b \n", " a b " },
	};

	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		write_file("token", cases[i].content, 0600);
		struct fb_config *cfg = load_ok("site_id: site-A\ncloud:\n  endpoints: [mqtts://cloud.example]\n"
				"  auth: { password_file: @DIR@/token }\nspool:\n  path: /tmp/spool\n" RULE);
		ck_assert_str_eq(cfg->cloud.password, cases[i].password);
		ck_assert_str_eq(cfg->cloud.password_file, in_dir("token"));
		fb_config_free(cfg);
		logs_clear();
	}
}
END_TEST

/* fb_config_read_secret(), read at every connection attempt: the trimming and the checks of the
 * load, each failure with its errno and a reason naming the file. */
START_TEST(test_read_secret_checks_like_load)
{
	char err[512], *pw = (char *)err;

	write_file("token", "tok\r\n", 0600);
	ck_assert_int_eq(fb_config_read_secret(in_dir("token"), &pw, err, sizeof(err)), 0);
	ck_assert_str_eq(pw, "tok");
	free(pw);

	/* A read-only secret mount: accepted, 1 tells the loader to warn. */
	write_file("token", "tok\n", 0640);
	ck_assert_int_eq(fb_config_read_secret(in_dir("token"), &pw, err, sizeof(err)), 1);
	ck_assert_str_eq(pw, "tok");
	free(pw);

	write_file("token", "tok\n", 0620);
	ck_assert_int_eq(fb_config_read_secret(in_dir("token"), &pw, err, sizeof(err)), -EACCES);
	ck_assert_ptr_null(pw);
	ck_assert_ptr_nonnull(strstr(err, "/token' is writable by group (mode 620); chmod go-w"));

	write_file("token", "\n", 0600);
	ck_assert_int_eq(fb_config_read_secret(in_dir("token"), &pw, err, sizeof(err)), -ENODATA);
	ck_assert_ptr_null(pw);
	ck_assert_ptr_nonnull(strstr(err, "/token' is empty"));

	ck_assert_int_eq(fb_config_read_secret(in_dir("missing"), &pw, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_null(pw);
	ck_assert_ptr_nonnull(strstr(err, "/missing': No such file or directory"));
}
END_TEST

/* What a SIGHUP compares: the cloud section, and the keys that only a restart applies. */
START_TEST(test_cloud_equal_and_restart_keys)
{
	struct fb_config *a = load_ok(MINIMAL), *b, *c, *d;
	char keys[128];

	b = load_ok(MINIMAL);
	ck_assert(fb_config_cloud_equal(a, b));
	ck_assert_uint_eq(fb_config_restart_keys(a, b, keys, sizeof(keys)), 0);
	ck_assert_str_eq(keys, "");
	c = load_ok("site_id: site-A\ncloud:\n  endpoints: [mqtts://cloud.example, mqtts://other.example]\n"
			"spool:\n  path: /tmp/spool\n" RULE);
	ck_assert(!fb_config_cloud_equal(a, c));
	ck_assert_uint_eq(fb_config_restart_keys(a, c, keys, sizeof(keys)), 0);
	d = load_ok("site_id: site-A\ncloud:\n  endpoints: [mqtts://cloud.example]\n  keepalive: 7s\n"
			"spool:\n  path: /tmp/spool2\n  ttl: 1h\n" RULE "cloud_to_edge:\n  - cloud: c/#\n    local: l/#\n");
	ck_assert(!fb_config_cloud_equal(a, d));
	ck_assert_uint_eq(fb_config_restart_keys(a, d, keys, sizeof(keys)), strlen("spool.path, spool.ttl, cloud_to_edge"));
	ck_assert_str_eq(keys, "spool.path, spool.ttl, cloud_to_edge");
	fb_config_free(a);
	fb_config_free(b);
	fb_config_free(c);
	fb_config_free(d);
}
END_TEST

START_TEST(test_shipped_example_loads)
{
	struct fb_config *cfg = NULL;
	int rc = fb_config_load(EXAMPLE, &lg, &cfg);

	ck_assert_msg(rc == 0, "%s refused (%d):%s", EXAMPLE, rc, logs_dump());
	ck_assert_msg(logs.count == 0, "logged:%s", logs_dump());
	ck_assert_str_eq(cfg->site_id, "site-A");
	ck_assert_uint_eq(cfg->cloud.endpoint_count, 1);
	ck_assert_str_eq(cfg->cloud.endpoints[0].host, "project-1.flowmq.example");
	ck_assert_uint_eq(cfg->cloud.endpoints[0].port, 8883);
	ck_assert_str_eq(cfg->cloud.client_id, "edge-site-A");
	ck_assert_uint_eq(cfg->cloud.keepalive_s, 30);
	ck_assert_uint_eq(cfg->cloud.session_expiry_s, 86400);
	ck_assert_uint_eq(cfg->cloud.reconnect_min_ms, 500);
	ck_assert_uint_eq(cfg->cloud.reconnect_max_ms, 60000);
	ck_assert_uint_eq(cfg->cloud.poison_after, 3);
	ck_assert_str_eq(cfg->cloud.status_topic, "flowmq/edge/site-A/status");
	ck_assert_str_eq(cfg->cloud.username, "edge-site-A");
	ck_assert_int_eq(cfg->cloud.tls.min_version, 0x0304);
	ck_assert(cfg->cloud.tls.verify);
	ck_assert_str_eq(cfg->spool.path, "/var/lib/mosquitto/flowmq-bridge");
	ck_assert_uint_eq(cfg->spool.max_size, 1ull << 30);
	ck_assert_uint_eq(cfg->spool.sync_interval_ms, 100);
	ck_assert_uint_eq(cfg->spool.ttl_ms, 7ull * 86400 * 1000);
	ck_assert_uint_eq(cfg->status_interval_ms, 10000);
	ck_assert_uint_eq(cfg->link_timeout_ms, 10000);
	ck_assert_uint_eq(cfg->e2c_count, 5);
	ck_assert_str_eq(cfg->e2c[0].local, "local/telemetry/#");
	ck_assert_str_eq(cfg->e2c[0].cloud, "edge/site-A/telemetry/#");
	ck_assert_uint_eq(cfg->e2c[0].header_count, 2);
	ck_assert_str_eq(cfg->e2c[0].headers[0].name, "edge-site-id");
	ck_assert_str_eq(cfg->e2c[0].headers[0].value, "site-A");
	ck_assert_str_eq(cfg->e2c[0].headers[1].name, "captured-at");
	ck_assert_str_eq(cfg->e2c[0].headers[1].value, "${captured_at}");
	ck_assert_uint_eq(cfg->e2c[0].ttl_ms, 3600000);
	ck_assert_uint_eq(cfg->e2c[0].priority, 4);
	ck_assert(cfg->e2c[0].live_first == false);
	ck_assert_str_eq(cfg->e2c[1].local, "local/alarm/#");
	ck_assert_uint_eq(cfg->e2c[1].priority, 0);
	ck_assert_str_eq(cfg->e2c[2].local, "local/debug/#");
	ck_assert(cfg->e2c[2].drop);
	ck_assert_uint_eq(cfg->cloud.lane_min_share_bp, 500);
	ck_assert(!fb_reduce_active(&cfg->e2c[0].reduce));
	ck_assert_str_eq(cfg->e2c[3].cloud, "edge/site-A/machines/+/temperature");
	ck_assert(cfg->e2c[3].reduce.has_deadband);
	ck_assert(cfg->e2c[3].reduce.deadband == 0.5);
	ck_assert_str_eq(cfg->e2c[3].reduce.field, "temperature");
	ck_assert_uint_eq(cfg->e2c[3].reduce.heartbeat_ms, 300000);
	ck_assert_uint_eq(cfg->e2c[3].reduce.min_interval_ms, 1000);
	ck_assert_uint_eq(cfg->e2c[3].reduce.window_ms, 0);
	ck_assert_uint_eq(cfg->e2c[4].reduce.window_ms, 60000);
	ck_assert_str_eq(cfg->e2c[4].reduce.agg_field, "count");
	ck_assert_uint_eq(cfg->e2c[4].reduce.emit, FB_AGG_ALL);
	ck_assert(cfg->cloud.topic_aliases);
	ck_assert_uint_eq(cfg->spool.max_tracked_topics, 100000);
	ck_assert_uint_eq(cfg->c2e_count, 1);
	ck_assert_str_eq(cfg->c2e[0].cloud, "cloud/commands/site-A/#");
	ck_assert_str_eq(cfg->c2e[0].local, "local/commands/#");
	ck_assert_uint_eq(cfg->c2e[0].max_payload, 256 * 1024);
	fb_config_free(cfg);
}
END_TEST

/* The example keeps the keys that name files, and server_name and alpn, commented out so that it
 * loads where those files do not exist. This test loads a copy with those lines uncommented and
 * /etc/mosquitto/flowmq/ rewritten to the temporary folder, which holds the files. */
START_TEST(test_shipped_example_optional_keys_load)
{
	static const char *const keys[] = { "password_file:", "ca_file:", "cert_file:", "key_file:",
		"server_name:", "alpn:", "max_rate:", "max_bandwidth:", "metrics:", "listen:" };
	static const char etc[] = "/etc/mosquitto/flowmq/";
	char line[512], prefix[256];
	struct fb_config *cfg = NULL;
	unsigned uncommented = 0;
	FILE *in, *out;
	int rc;

	write_file("token", "t0ken\n", 0600);
	write_file("ca.pem", "ca", 0644);
	write_file("edge.crt", "crt", 0644);
	write_file("edge.key", "key", 0600);
	snprintf(prefix, sizeof(prefix), "%s/", dir);
	ck_assert_ptr_nonnull(in = fopen(EXAMPLE, "r"));
	ck_assert_ptr_nonnull(out = fopen(in_dir("flowmq-bridge.yaml"), "w"));
	while(fgets(line, sizeof(line), in)){
		char *p = line + strspn(line, " "), *e;
		for(size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++){
			if(strncmp(p, "# ", 2) == 0 && strncmp(p + 2, keys[k], strlen(keys[k])) == 0){
				memmove(p, p + 2, strlen(p + 2) + 1);
				uncommented++;
			}
		}
		if((e = strstr(line, etc)) != NULL){
			fwrite(line, 1, (size_t)(e - line), out);
			fputs(prefix, out);
			fputs(e + strlen(etc), out);
		}else{
			fputs(line, out);
		}
	}
	fclose(in);
	ck_assert_int_eq(fclose(out), 0);
	ck_assert_uint_eq(uncommented, 10);

	rc = fb_config_load(in_dir("flowmq-bridge.yaml"), &lg, &cfg);
	ck_assert_msg(rc == 0, "refused (%d):%s", rc, logs_dump());
	ck_assert_str_eq(cfg->cloud.password, "t0ken");
	ck_assert_str_eq(cfg->cloud.tls.ca_file, in_dir("ca.pem"));
	ck_assert_str_eq(cfg->cloud.tls.cert_file, in_dir("edge.crt"));
	ck_assert_str_eq(cfg->cloud.tls.key_file, in_dir("edge.key"));
	ck_assert_str_eq(cfg->cloud.tls.server_name, "project-1.flowmq.example");
	ck_assert_str_eq(cfg->cloud.tls.alpn, "mqtt");
	ck_assert_uint_eq(cfg->cloud.max_rate, 500);
	ck_assert_uint_eq(cfg->cloud.max_bandwidth, 256 * 1024);
	ck_assert_str_eq(cfg->metrics.listen, "127.0.0.1:9234");
	ck_assert_str_eq(cfg->metrics.host, "127.0.0.1");
	ck_assert_uint_eq(cfg->metrics.port, 9234);
	ck_assert(!cfg->metrics.ipv6);
	fb_config_free(cfg);
}
END_TEST

/* metrics.listen: unset by default; ADDRESS:PORT with a numeric IPv4 or bracketed IPv6 address. */
START_TEST(test_metrics_listen)
{
	struct fb_config *cfg = load_ok(MINIMAL);

	ck_assert_ptr_null(cfg->metrics.listen);
	ck_assert_ptr_null(cfg->metrics.host);
	ck_assert_uint_eq(cfg->metrics.port, 0);
	fb_config_free(cfg);
	cfg = load_ok(MINIMAL "metrics:\n");
	ck_assert_ptr_null(cfg->metrics.listen);
	fb_config_free(cfg);
	cfg = load_ok(MINIMAL "metrics:\n  listen: 0.0.0.0:1\n");
	ck_assert_str_eq(cfg->metrics.host, "0.0.0.0");
	ck_assert_uint_eq(cfg->metrics.port, 1);
	ck_assert(!cfg->metrics.ipv6);
	fb_config_free(cfg);
	cfg = load_ok(MINIMAL "metrics:\n  listen: \"[::1]:65535\"\n");
	ck_assert_str_eq(cfg->metrics.listen, "[::1]:65535");
	ck_assert_str_eq(cfg->metrics.host, "::1");
	ck_assert_uint_eq(cfg->metrics.port, 65535);
	ck_assert(cfg->metrics.ipv6);
	fb_config_free(cfg);
}
END_TEST

/* The keys of "Sending less": defaults (nothing reduced, aliases on, 100000 topics) and values. */
START_TEST(test_reduce_keys)
{
	struct fb_config *cfg = load_ok(MINIMAL);

	ck_assert(!fb_reduce_active(&cfg->e2c[0].reduce));
	ck_assert(cfg->cloud.topic_aliases);
	ck_assert_uint_eq(cfg->spool.max_tracked_topics, 100000);
	fb_config_free(cfg);
	logs_clear();

	cfg = load_ok("site_id: s\ncloud:\n  endpoints: [mqtts://c]\n  topic_aliases: false\n"
		"spool:\n  path: /tmp/spool\n  max_tracked_topics: 100\n"
		"edge_to_cloud:\n"
		"  - local: a/#\n    cloud: b/#\n    on_change: true\n    heartbeat: 30s\n    min_interval: 250ms\n"
		"  - local: c/#\n    cloud: d/#\n    deadband: 0\n    field: x.y.z\n"
		"  - local: e/#\n    cloud: f/#\n    field: v\n    aggregate: { window: 10s, emit: [max, count] }\n"
		"  - local: g/#\n    cloud: h/#\n    aggregate:\n      window: 1m\n      field: w\n");
	ck_assert(!cfg->cloud.topic_aliases);
	ck_assert_uint_eq(cfg->spool.max_tracked_topics, 100);
	ck_assert(cfg->e2c[0].reduce.on_change);
	ck_assert(!cfg->e2c[0].reduce.has_deadband);
	ck_assert_ptr_null(cfg->e2c[0].reduce.field);
	ck_assert_uint_eq(cfg->e2c[0].reduce.heartbeat_ms, 30000);
	ck_assert_uint_eq(cfg->e2c[0].reduce.min_interval_ms, 250);
	ck_assert(cfg->e2c[1].reduce.has_deadband);
	ck_assert(cfg->e2c[1].reduce.deadband == 0.0);
	ck_assert_str_eq(cfg->e2c[1].reduce.field, "x.y.z");
	ck_assert(fb_reduce_active(&cfg->e2c[1].reduce));
	ck_assert_uint_eq(cfg->e2c[2].reduce.window_ms, 10000);
	ck_assert_str_eq(cfg->e2c[2].reduce.agg_field, "v");
	ck_assert_uint_eq(cfg->e2c[2].reduce.emit, FB_AGG_MAX | FB_AGG_COUNT);
	ck_assert_uint_eq(cfg->e2c[3].reduce.window_ms, 60000);
	ck_assert_str_eq(cfg->e2c[3].reduce.agg_field, "w");
	ck_assert_uint_eq(cfg->e2c[3].reduce.emit, FB_AGG_ALL);
	fb_config_free(cfg);
}
END_TEST

START_TEST(test_free_accepts_null)
{
	fb_config_free(NULL);
}
END_TEST

/* ---- parsers ----------------------------------------------------------------------------------- */

START_TEST(test_parse_duration)
{
	static const struct {
		const char *text;
		uint64_t ms;
	} good[] = {
		{ "0ms", 0 }, { "0s", 0 }, { "1ms", 1 }, { "250ms", 250 }, { "30s", 30000 }, { "5m", 300000 },
		{ "2h", 7200000 }, { "7d", 604800000 }, { "007s", 7000 },
		{ "18446744073709551615ms", UINT64_MAX },
		{ "213503982334d", 213503982334ull * 86400000 },
	};
	static const char *const bad[] = {
		"", "30", "s", "ms", "-1s", "+1s", "1.5s", "30 s", " 30s", "30s ", "30S", "30sec", "1w", "1y",
		"0x10s", "1s1ms", "18446744073709551616ms", "213503982335d", "5000000000000000h",
	};
	uint64_t v;

	for(size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++){
		v = 42;
		ck_assert_msg(fb_parse_duration_ms(good[i].text, &v) == 0, "'%s' refused", good[i].text);
		ck_assert_msg(v == good[i].ms, "'%s' -> %" PRIu64, good[i].text, v);
	}
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		v = 42;
		ck_assert_msg(fb_parse_duration_ms(bad[i], &v) == -EINVAL, "'%s' accepted", bad[i]);
		ck_assert_uint_eq(v, 42);
	}
	ck_assert_int_eq(fb_parse_duration_ms(NULL, &v), -EINVAL);
}
END_TEST

START_TEST(test_parse_size)
{
	static const struct {
		const char *text;
		uint64_t bytes;
	} good[] = {
		{ "0", 0 }, { "512", 512 }, { "512B", 512 }, { "1KiB", 1024 }, { "512KiB", 512 * 1024 },
		{ "64MiB", 64ull << 20 }, { "2GiB", 2ull << 30 }, { "1TiB", 1ull << 40 },
		{ "16777215TiB", 16777215ull << 40 }, { "18446744073709551615", UINT64_MAX },
	};
	static const char *const bad[] = {
		"", "B", "KiB", "1KB", "1kib", "1K", "1MB", "1GB", "1 KiB", " 1KiB", "-1", "1.5MiB", "1PiB",
		"16777216TiB", "18446744073709551616", "1KiBB",
	};
	uint64_t v;

	for(size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++){
		v = 42;
		ck_assert_msg(fb_parse_size(good[i].text, &v) == 0, "'%s' refused", good[i].text);
		ck_assert_msg(v == good[i].bytes, "'%s' -> %" PRIu64, good[i].text, v);
	}
	for(size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++){
		v = 42;
		ck_assert_msg(fb_parse_size(bad[i], &v) == -EINVAL, "'%s' accepted", bad[i]);
		ck_assert_uint_eq(v, 42);
	}
	ck_assert_int_eq(fb_parse_size(NULL, &v), -EINVAL);
}
END_TEST

/* ---- ${site_id} ------------------------------------------------------------------------------- */

/* Header values may hold the capture time: kept as written (the capture expands it), next to
 * ${site_id} (expanded at load). */
START_TEST(test_header_values_keep_the_capture_time_variables)
{
	struct fb_config *cfg = load_ok(MINIMAL
		"    headers:\n"
		"      at: ${captured_at}\n"
		"      ms: ${captured_at_ms}\n"
		"      both: ${site_id}@${captured_at_ms}/${captured_at}\n");

	ck_assert_msg(logs.count == 0, "%s", logs_dump());
	ck_assert_uint_eq(cfg->e2c[0].header_count, 3);
	ck_assert_str_eq(cfg->e2c[0].headers[0].value, "${captured_at}");
	ck_assert_str_eq(cfg->e2c[0].headers[1].value, "${captured_at_ms}");
	ck_assert_str_eq(cfg->e2c[0].headers[2].value, "site-A@${captured_at_ms}/${captured_at}");
	fb_config_free(cfg);
}
END_TEST

/* A value that would exceed an MQTT string (65,535 bytes) once the capture time is in it. */
START_TEST(test_header_value_too_long_with_the_capture_time)
{
	size_t n = 65512;
	char *yaml = malloc(n + 256);
	int len = snprintf(yaml, 256, "%s    headers:\n      big: ", MINIMAL);

	memset(yaml + len, 'a', n);
	strcpy(yaml + len + n, "${captured_at}\n");
	expect_refused(yaml, "cfg.yaml:10: edge_to_cloud[0].headers.big: longer than 65535 bytes once expanded");
	free(yaml);
}
END_TEST

START_TEST(test_site_id_expands_everywhere)
{
	struct fb_config *cfg = load_ok(
		"site_id: s1\n"
		"cloud:\n"
		"  endpoints: [mqtts://h]\n"
		"  client_id: c-${site_id}\n"
		"  status_topic: st/${site_id}/x\n"
		"  auth:\n"
		"    username: u-${site_id}\n"
		"spool:\n"
		"  path: /tmp/spool\n"
		"edge_to_cloud:\n"
		"  - local: l/${site_id}/#\n"
		"    cloud: ${site_id}/c/#\n"
		"    headers:\n"
		"      site: ${site_id}\n"
		"      twice: ${site_id}-${site_id}\n"
		"      plain: $SYS{x}\n"
		"      empty:\n"
		"  - local: d/${site_id}\n"
		"    drop: true\n"
		"cloud_to_edge:\n"
		"  - cloud: cmd/${site_id}/+\n"
		"    local: loc/${site_id}/+\n");

	ck_assert_str_eq(cfg->cloud.client_id, "c-s1");
	ck_assert_str_eq(cfg->cloud.status_topic, "st/s1/x");
	ck_assert_str_eq(cfg->cloud.username, "u-s1");
	ck_assert_str_eq(cfg->e2c[0].local, "l/s1/#");
	ck_assert_str_eq(cfg->e2c[0].cloud, "s1/c/#");
	ck_assert_uint_eq(cfg->e2c[0].header_count, 4);
	ck_assert_str_eq(cfg->e2c[0].headers[0].name, "site");
	ck_assert_str_eq(cfg->e2c[0].headers[0].value, "s1");
	ck_assert_str_eq(cfg->e2c[0].headers[1].name, "twice");
	ck_assert_str_eq(cfg->e2c[0].headers[1].value, "s1-s1");
	ck_assert_str_eq(cfg->e2c[0].headers[2].name, "plain");
	ck_assert_str_eq(cfg->e2c[0].headers[2].value, "$SYS{x}");
	ck_assert_str_eq(cfg->e2c[0].headers[3].name, "empty");
	ck_assert_str_eq(cfg->e2c[0].headers[3].value, "");
	ck_assert_str_eq(cfg->e2c[1].local, "d/s1");
	ck_assert_str_eq(cfg->c2e[0].cloud, "cmd/s1/+");
	ck_assert_str_eq(cfg->c2e[0].local, "loc/s1/+");
	fb_config_free(cfg);
}
END_TEST

/* ---- refused configurations ---------------------------------------------------------------------- */

/* Files named in the cases: @DIR@/gw.token (mode 0620), @DIR@/ow.token (0602), @DIR@/aw.token
 * (0666), @DIR@/edge.crt (0600), @DIR@/gw.key (0660). */
static const struct {
	const char *yaml;
	const char *error;
} refused[] = {
	/* structure: libcyaml */
	{ MINIMAL "bogus: 1\n",
	  "cfg.yaml:9: bogus: unknown key (expected one of: site_id, cloud, spool, status_interval, link_timeout, "
	  "edge_to_cloud, cloud_to_edge, metrics)" },
	{ MINIMAL "metrics:\n  listen: 127.0.0.1\n",
	  "cfg.yaml:10: metrics.listen: invalid listen address '127.0.0.1' (expected ADDRESS:PORT, e.g. 127.0.0.1:9234)" },
	{ MINIMAL "metrics:\n  listen: localhost:9234\n",
	  "cfg.yaml:10: metrics.listen: invalid address in 'localhost:9234' (expected a numeric IPv4 address or [IPv6])" },
	{ MINIMAL "metrics:\n  listen: :9234\n",
	  "cfg.yaml:10: metrics.listen: invalid address in ':9234' (expected a numeric IPv4 address or [IPv6])" },
	{ MINIMAL "metrics:\n  listen: \"[::1:9234\"\n",
	  "cfg.yaml:10: metrics.listen: invalid listen address '[::1:9234' (expected ADDRESS:PORT, e.g. 127.0.0.1:9234)" },
	{ MINIMAL "metrics:\n  listen: 127.0.0.1:0\n",
	  "cfg.yaml:10: metrics.listen: invalid port in '127.0.0.1:0' (expected 1 to 65535)" },
	{ MINIMAL "metrics:\n  listen: 127.0.0.1:65536\n",
	  "cfg.yaml:10: metrics.listen: invalid port in '127.0.0.1:65536' (expected 1 to 65535)" },
	{ MINIMAL "metrics:\n  listen: 127.0.0.1:http\n",
	  "cfg.yaml:10: metrics.listen: invalid port in '127.0.0.1:http' (expected 1 to 65535)" },
	{ MINIMAL "metrics:\n  port: 9234\n", "cfg.yaml:10: metrics.port: unknown key (expected one of: listen)" },
	{ "site_id: site-A\ncloud:\n  endpoints: [mqtts://cloud.example]\n  keepalve: 30s\n",
	  "cfg.yaml:4: cloud.keepalve: unknown key (expected one of: endpoints, client_id, keepalive," },
	{ MINIMAL "    qso: 1\n", "cfg.yaml:9: edge_to_cloud[0].qso: unknown key" },
	{ MINIMAL "  - local: c\n    cloud: d\n    tls: {}\n", "cfg.yaml:11: edge_to_cloud[1].tls: unknown key" },
	{ "site_id: site-A\ncloud: [a]\n", "cfg.yaml:2: cloud: expected a mapping, got a list" },
	{ "site_id: site-A\ncloud:\n  endpoints: mqtts://x\n",
	  "cfg.yaml:3: cloud.endpoints: expected a list, got a scalar value" },
	{ "site_id: [a]\n", "cfg.yaml:1: site_id: expected a scalar value, got a list" },
	{ "site_id: a\nsite_id: b\n", "cfg.yaml:2: site_id: duplicate key" },
	{ "- a\n", "cfg.yaml:1: (document): expected a mapping, got a list" },
	{ "site_id: &x site-A\nstatus_interval: *x\n", "status_interval: YAML anchors and aliases are not supported" },
	{ "site_id: site-A\ncloud:\n  endpoints: [\n", "cfg.yaml:4: yaml: did not find expected node content" },
	/* what libyaml's document API and libcyaml would drop without a word */
	{ MINIMAL "---\nsite_id: site-B\n",
	  "cfg.yaml:9: (document): a second YAML document is not supported (one configuration per file)" },
	{ "---\n" MINIMAL "...\n--- {}\n",
	  "cfg.yaml:11: (document): a second YAML document is not supported (one configuration per file)" },
	{ HEAD "status_interval: !!str 10s\n" RULE,
	  "cfg.yaml:6: status_interval: YAML tags are not supported ('tag:yaml.org,2002:str')" },
	{ HEAD "edge_to_cloud:\n  - local: a/#\n    cloud: !secret b/#\n",
	  "cfg.yaml:8: edge_to_cloud[0].cloud: YAML tags are not supported ('!secret')" },
	{ HEAD "edge_to_cloud: !!seq\n  - local: a/#\n    cloud: b/#\n",
	  "cfg.yaml:6: edge_to_cloud: YAML tags are not supported ('tag:yaml.org,2002:seq')" },
	/* sending less */
	{ MINIMAL "    min_interval: 1\n", "cfg.yaml:9: edge_to_cloud[0].min_interval: duration '1' needs a unit" },
	{ MINIMAL "    min_interval: 0ms\n", "cfg.yaml:9: edge_to_cloud[0].min_interval: '0ms' must be between 1ms and 1d" },
	{ MINIMAL "    on_change: maybe\n", "cfg.yaml:9: edge_to_cloud[0].on_change: invalid value 'maybe' (expected true | false)" },
	{ MINIMAL "    deadband: -1\n",
	  "cfg.yaml:9: edge_to_cloud[0].deadband: invalid value '-1' (expected a number of at least 0, e.g. 0.5)" },
	{ MINIMAL "    deadband: 0.5x\n", "cfg.yaml:9: edge_to_cloud[0].deadband: invalid value '0.5x'" },
	{ MINIMAL "    deadband: nan\n", "cfg.yaml:9: edge_to_cloud[0].deadband: invalid value 'nan'" },
	{ MINIMAL "    deadband: 1\n    field: a..b\n",
	  "cfg.yaml:10: edge_to_cloud[0].field: invalid field 'a..b' (expected a key of a JSON object, dotted for "
	  "nested objects: temperature, sensor.value)" },
	{ MINIMAL "    field: t\n", "cfg.yaml:9: edge_to_cloud[0].field: needs on_change, deadband or aggregate" },
	{ MINIMAL "    heartbeat: 5m\n",
	  "cfg.yaml:9: edge_to_cloud[0].heartbeat: needs on_change or deadband (without them every message is sent)" },
	{ MINIMAL "    on_change: false\n    heartbeat: 5m\n",
	  "cfg.yaml:10: edge_to_cloud[0].heartbeat: needs on_change or deadband (without them every message is sent)" },
	{ MINIMAL "    aggregate: { field: t }\n", "cfg.yaml:9: edge_to_cloud[0].aggregate.window: missing required value" },
	{ MINIMAL "    aggregate: { window: 50ms }\n",
	  "cfg.yaml:9: edge_to_cloud[0].aggregate.window: '50ms' must be between 100ms and 1d" },
	{ MINIMAL "    aggregate: { window: 1m, emit: [count, median] }\n",
	  "cfg.yaml:9: edge_to_cloud[0].aggregate.emit[1]: invalid value 'median' (expected count | min | max | avg | sum | last)" },
	{ MINIMAL "    aggregate: { window: 1m, every: 2 }\n",
	  "cfg.yaml:9: edge_to_cloud[0].aggregate.every: unknown key (expected one of: window, field, emit)" },
	{ MINIMAL "    aggregate: { window: 1m }\n    on_change: true\n",
	  "cfg.yaml:9: edge_to_cloud[0].aggregate: cannot be combined with min_interval, on_change, deadband or heartbeat" },
	{ HEAD "edge_to_cloud:\n  - local: a/#\n    drop: true\n    min_interval: 1s\n",
	  "cfg.yaml:9: edge_to_cloud[0].min_interval: not allowed with drop: true" },
	{ HEAD "  max_tracked_topics: 0\n" RULE,
	  "cfg.yaml:6: spool.max_tracked_topics: invalid value '0' (expected an integer from 1 to 100000000)" },
	{ "site_id: site-A\ncloud:\n  topic_aliases: sometimes\n",
	  "cfg.yaml:3: cloud.topic_aliases: invalid value 'sometimes' (expected true | false)" },
	/* site_id */
	{ "cloud:\n  endpoints: [mqtts://cloud.example]\nspool:\n  path: /tmp/spool\n" RULE,
	  "cfg.yaml:1: site_id: missing required value" },
	{ "site_id: site A/1\n", "cfg.yaml:1: site_id: invalid site_id 'site A/1' (1 to 64 of A-Z a-z 0-9 _ . -)" },
	{ "site_id: x2345678901234567890123456789012345678901234567890123456789012345\n",
	  "cfg.yaml:1: site_id: invalid site_id 'x2345678901" },
	/* endpoints */
	{ "site_id: site-A\ncloud:\n  endpoints: []\n",
	  "cfg.yaml:3: cloud.endpoints: at least one endpoint is required (mqtts://host[:port])" },
	{ "site_id: site-A\n", "cfg.yaml:1: cloud.endpoints: at least one endpoint is required" },
	{ "site_id: site-A\ncloud:\n  endpoints:\n    - mqtts://ok\n    - https://cloud.example\n",
	  "cfg.yaml:5: cloud.endpoints[1]: unsupported endpoint 'https://cloud.example' (expected mqtts://host[:port])" },
	{ "site_id: site-A\ncloud:\n  endpoints: [mqtt://cloud.example]\n",
	  "cfg.yaml:3: cloud.endpoints[0]: 'mqtt://cloud.example' is not encrypted: use mqtts:// or set "
	  "cloud.tls.allow_plaintext: true" },
	{ "site_id: site-A\ncloud:\n  endpoints: [mqtts://cloud.example:0]\n",
	  "cfg.yaml:3: cloud.endpoints[0]: invalid port in 'mqtts://cloud.example:0' (expected 1 to 65535)" },
	{ "site_id: site-A\ncloud:\n  endpoints: [mqtts://cloud.example:65536]\n",
	  "cloud.endpoints[0]: invalid port in 'mqtts://cloud.example:65536'" },
	{ "site_id: site-A\ncloud:\n  endpoints: ['mqtts://cloud.example:']\n",
	  "cloud.endpoints[0]: invalid port in 'mqtts://cloud.example:'" },
	{ "site_id: site-A\ncloud:\n  endpoints: ['mqtts://[::1']\n",
	  "cfg.yaml:3: cloud.endpoints[0]: invalid endpoint 'mqtts://[::1' (expected mqtts://host[:port])" },
	{ "site_id: site-A\ncloud:\n  endpoints: ['mqtts://h/path']\n", "invalid endpoint 'mqtts://h/path'" },
	/* durations, integers, sizes */
	{ HEAD "link_timeout: 500ms\n", "cfg.yaml:6: link_timeout: '500ms' must be between 1s and " },
	{ HEAD "status_interval: 10\n",
	  "cfg.yaml:6: status_interval: duration '10' needs a unit: ms, s, m, h or d (e.g. 10s)" },
	{ "site_id: site-A\ncloud:\n  connect_timeout: 10 s\n",
	  "cfg.yaml:3: cloud.connect_timeout: invalid duration '10 s' (expected a number and a unit: 250ms, 30s, 5m, 2h, 7d)" },
	{ "site_id: site-A\ncloud:\n  keepalive: 4s\n", "cfg.yaml:3: cloud.keepalive: '4s' must be between 5s and 65535s" },
	{ "site_id: site-A\ncloud:\n  keepalive: 65536s\n", "cfg.yaml:3: cloud.keepalive: '65536s' must be between 5s and 65535s" },
	{ "site_id: site-A\ncloud:\n  keepalive: 7500ms\n", "cfg.yaml:3: cloud.keepalive: '7500ms' must be a whole number of seconds" },
	{ "site_id: site-A\ncloud:\n  session_expiry: 4294967296s\n",
	  "cfg.yaml:3: cloud.session_expiry: '4294967296s' must be between 0s and 4294967295s" },
	{ "site_id: site-A\ncloud:\n  max_inflight: 0\n",
	  "cfg.yaml:3: cloud.max_inflight: invalid value '0' (expected an integer from 1 to 65535)" },
	{ "site_id: site-A\ncloud:\n  max_inflight: 64k\n", "cloud.max_inflight: invalid value '64k'" },
	{ MINIMAL "    priority: 10\n",
	  "cfg.yaml:9: edge_to_cloud[0].priority: invalid value '10' (expected an integer from 0 to 9)" },
	{ MINIMAL "    live_first: maybe\n",
	  "cfg.yaml:9: edge_to_cloud[0].live_first: invalid value 'maybe' (expected true | false)" },
	{ MINIMAL "    priority: high\n",
	  "cfg.yaml:9: edge_to_cloud[0].priority: invalid value 'high' (expected an integer from 0 to 9)" },
	{ "site_id: site-A\ncloud:\n  lane_min_share: 5\n",
	  "cfg.yaml:3: cloud.lane_min_share: invalid value '5' (expected a percentage from 0% to 50%, e.g. 5%)" },
	{ "site_id: site-A\ncloud:\n  lane_min_share: 51%\n",
	  "cfg.yaml:3: cloud.lane_min_share: invalid value '51%' (expected a percentage from 0% to 50%, e.g. 5%)" },
	{ "site_id: site-A\ncloud:\n  lane_min_share: 50.01%\n", "cloud.lane_min_share: invalid value '50.01%'" },
	{ "site_id: site-A\ncloud:\n  lane_min_share: 0.001%\n", "cloud.lane_min_share: invalid value '0.001%'" },
	{ "site_id: site-A\ncloud:\n  lane_min_share: 5.%\n", "cloud.lane_min_share: invalid value '5.%'" },
	{ "site_id: site-A\ncloud:\n  poison_after: 0\n",
	  "cfg.yaml:3: cloud.poison_after: invalid value '0' (expected an integer from 1 to 100)" },
	{ "site_id: site-A\ncloud:\n  endpoints: [mqtts://cloud.example]\n  poison_after: 101\n",
	  "cfg.yaml:4: cloud.poison_after: invalid value '101' (expected an integer from 1 to 100)" },
	{ "site_id: site-A\ncloud:\n  poison_after: -1\n",
	  "cfg.yaml:3: cloud.poison_after: invalid value '-1' (expected an integer from 1 to 100)" },
	{ "site_id: site-A\ncloud:\n  poison_after: 3 times\n",
	  "cfg.yaml:3: cloud.poison_after: invalid value '3 times' (expected an integer from 1 to 100)" },
	{ "site_id: site-A\ncloud:\n  poison_after: 18446744073709551619\n",
	  "cfg.yaml:3: cloud.poison_after: invalid value '18446744073709551619' (expected an integer from 1 to 100)" },
	{ "site_id: site-A\ncloud:\n  max_rate: 0\n",
	  "cfg.yaml:3: cloud.max_rate: invalid value '0' (expected messages per second, an integer from 1 to 10000000, "
	  "e.g. 500 or 500/s)" },
	{ "site_id: site-A\ncloud:\n  max_rate: 10000001\n", "cfg.yaml:3: cloud.max_rate: invalid value '10000001'" },
	{ "site_id: site-A\ncloud:\n  max_rate: -5\n", "cfg.yaml:3: cloud.max_rate: invalid value '-5'" },
	{ "site_id: site-A\ncloud:\n  max_rate: 1.5\n", "cfg.yaml:3: cloud.max_rate: invalid value '1.5'" },
	{ "site_id: site-A\ncloud:\n  max_rate: 500/m\n", "cfg.yaml:3: cloud.max_rate: invalid value '500/m'" },
	{ "site_id: site-A\ncloud:\n  max_rate: /s\n", "cfg.yaml:3: cloud.max_rate: invalid value '/s'" },
	{ "site_id: site-A\ncloud:\n  endpoints: [mqtts://cloud.example]\n  max_rate: [1]\n",
	  "cfg.yaml:4: cloud.max_rate: expected a scalar value, got a list" },
	{ "site_id: site-A\ncloud:\n  max_bandwidth: 256KB\n",
	  "cfg.yaml:3: cloud.max_bandwidth: invalid size '256KB' (expected bytes or a number and a unit: 512KiB, 64MiB, "
	  "2GiB; units B, KiB, MiB, GiB, TiB)" },
	{ "site_id: site-A\ncloud:\n  max_bandwidth: 1000\n",
	  "cfg.yaml:3: cloud.max_bandwidth: '1000' must be between 1KiB and 1TiB" },
	{ "site_id: site-A\ncloud:\n  max_bandwidth: 0KiB/s\n",
	  "cfg.yaml:3: cloud.max_bandwidth: '0KiB' must be between 1KiB and 1TiB" },
	{ "site_id: site-A\ncloud:\n  max_bandwidth: 2TiB\n",
	  "cfg.yaml:3: cloud.max_bandwidth: '2TiB' must be between 1KiB and 1TiB" },
	{ "site_id: site-A\ncloud:\n  poison_after: [3]\n",
	  "cfg.yaml:3: cloud.poison_after: expected a scalar value, got a list" },
	{ "site_id: site-A\ncloud:\n  reconnect: { min: 2m, max: 60s }\n",
	  "cfg.yaml:3: cloud.reconnect: min (2m) is greater than max (60s)" },
	{ "site_id: site-A\ncloud:\n  reconnect:\n    max: 0s\n", "cfg.yaml:4: cloud.reconnect.max: '0s' must be between 1ms and 1d" },
	{ HEAD "  max_size: 10GB\n",
	  "cfg.yaml:6: spool.max_size: invalid size '10GB' (expected bytes or a number and a unit: 512KiB, 64MiB, 2GiB; "
	  "units B, KiB, MiB, GiB, TiB)" },
	{ HEAD "  max_size: 1KiB\n", "cfg.yaml:6: spool.max_size: '1KiB' must be at least 64KiB" },
	{ HEAD "  on_full: drop_all\n",
	  "cfg.yaml:6: spool.on_full: invalid value 'drop_all' (expected drop_oldest | drop_new | reject)" },
	{ HEAD "  sync: sometimes\n",
	  "cfg.yaml:6: spool.sync: invalid value 'sometimes' (expected always | never | an interval such as 100ms)" },
	{ HEAD "  sync: 0ms\n", "cfg.yaml:6: spool.sync: '0ms' must be between 1ms and 1h" },
	{ HEAD "  ttl: 0d\n", "cfg.yaml:6: spool.ttl: '0d' must be at least 1ms" },
	{ "site_id: site-A\nspool:\n  max_size: 1GiB\n", "cfg.yaml:2: spool.path: missing required value" },
	{ "site_id: site-A\n", "cfg.yaml:1: spool.path: missing required value" },
	/* tls and auth */
	{ "site_id: site-A\ncloud:\n  tls:\n    min_version: 1.1\n",
	  "cfg.yaml:4: cloud.tls.min_version: invalid value '1.1' (expected 1.3 | 1.2)" },
	{ "site_id: site-A\ncloud:\n  tls:\n    verify: maybe\n",
	  "cfg.yaml:4: cloud.tls.verify: invalid value 'maybe' (expected true | false)" },
	{ "site_id: site-A\ncloud:\n  tls:\n    cert_file: @DIR@/edge.crt\n",
	  "cfg.yaml:4: cloud.tls.cert_file: cert_file needs key_file" },
	{ "site_id: site-A\ncloud:\n  tls:\n\n    key_file: @DIR@/edge.crt\n",
	  "cfg.yaml:5: cloud.tls.key_file: key_file needs cert_file" },
	{ "site_id: site-A\ncloud:\n  tls:\n    ca_file: @DIR@/missing.pem\n",
	  "/missing.pem': No such file or directory" },
	{ "site_id: site-A\ncloud:\n  tls:\n    ca_file: @DIR@\n", "cfg.yaml:4: cloud.tls.ca_file: '" },
	{ "site_id: site-A\ncloud:\n  auth:\n    password_file: @DIR@/gw.token\n",
	  "cfg.yaml:4: cloud.auth.password_file: '@DIR@/gw.token' is writable by group (mode 620); chmod go-w" },
	{ "site_id: site-A\ncloud:\n  auth:\n    password_file: @DIR@/ow.token\n",
	  "cfg.yaml:4: cloud.auth.password_file: '@DIR@/ow.token' is writable by others (mode 602); chmod go-w" },
	{ "site_id: site-A\ncloud:\n  auth:\n    password_file: @DIR@/aw.token\n",
	  "cfg.yaml:4: cloud.auth.password_file: '@DIR@/aw.token' is writable by group and others (mode 666); chmod go-w" },
	{ "site_id: site-A\ncloud:\n  tls:\n    cert_file: @DIR@/edge.crt\n    key_file: @DIR@/gw.key\n",
	  "cfg.yaml:5: cloud.tls.key_file: '@DIR@/gw.key' is writable by group (mode 660); chmod go-w" },
	{ "site_id: site-A\ncloud:\n  auth:\n    password_file: @DIR@/none\n",
	  "cfg.yaml:4: cloud.auth.password_file: cannot read '" },
	{ "site_id: site-A\ncloud:\n  status_topic: st/+/x\n",
	  "cfg.yaml:3: cloud.status_topic: invalid topic 'st/+/x': wildcards are not allowed here" },
	{ "site_id: site-A\ncloud:\n  client_id: ${site_id}-${host}\n",
	  "cfg.yaml:3: cloud.client_id: unknown variable '${host}' (only ${site_id} is defined)" },
	{ "site_id: site-A\ncloud:\n  auth:\n    username: ${site_id\n",
	  "cfg.yaml:4: cloud.auth.username: unterminated '${' in '${site_id'" },
	/* rules */
	{ HEAD, "cfg.yaml:1: edge_to_cloud: no edge_to_cloud or cloud_to_edge rules" },
	{ HEAD "edge_to_cloud: []\ncloud_to_edge: []\n", "cfg.yaml:6: edge_to_cloud: no edge_to_cloud or cloud_to_edge rules" },
	{ HEAD "edge_to_cloud:\n  - local: a/#/b\n    cloud: b\n",
	  "cfg.yaml:7: edge_to_cloud[0].local: invalid topic filter 'a/#/b': '+' must be a whole level and '#' the "
	  "whole last level" },
	{ HEAD "edge_to_cloud:\n  - local: a/b+\n    cloud: b\n", "cfg.yaml:7: edge_to_cloud[0].local: invalid topic filter 'a/b+'" },
	{ HEAD "edge_to_cloud:\n  - local: a/#\n    cloud: b/#/c\n",
	  "cfg.yaml:8: edge_to_cloud[0].cloud: invalid topic template 'b/#/c': '+' must be a whole level" },
	{ HEAD "edge_to_cloud:\n  - local: a/+\n    cloud: b/+/+\n",
	  "cfg.yaml:8: edge_to_cloud[0].cloud: template has 2 wildcards, filter has 1" },
	{ HEAD "edge_to_cloud:\n  - local: a/+/+\n    cloud: b/+\n",
	  "cfg.yaml:8: edge_to_cloud[0].cloud: template has 1 wildcard, filter has 2" },
	{ HEAD "edge_to_cloud:\n  - local: a/+/#\n    cloud: b/+/+\n",
	  "cfg.yaml:8: edge_to_cloud[0].cloud: template wildcards (+,+) do not match filter wildcards (+,#)" },
	{ HEAD "edge_to_cloud:\n  - local: a\n",
	  "cfg.yaml:7: edge_to_cloud[0].cloud: missing required value" },
	{ HEAD "edge_to_cloud:\n  - cloud: a\n", "cfg.yaml:7: edge_to_cloud[0].local: missing required value" },
	{ MINIMAL "    qos: 3\n", "cfg.yaml:9: edge_to_cloud[0].qos: invalid value '3' (expected 0 | 1 | 2)" },
	{ MINIMAL "    retain: forever\n", "cfg.yaml:9: edge_to_cloud[0].retain: invalid value 'forever' (expected keep | clear)" },
	{ MINIMAL "    drop: sure\n", "cfg.yaml:9: edge_to_cloud[0].drop: invalid value 'sure' (expected true | false)" },
	{ MINIMAL "    drop: true\n", "cfg.yaml:8: edge_to_cloud[0].cloud: not allowed with drop: true" },
	{ HEAD "edge_to_cloud:\n  - local: a\n    drop: true\n    headers: { a: b }\n",
	  "cfg.yaml:9: edge_to_cloud[0].headers: not allowed with drop: true" },
	{ HEAD "edge_to_cloud:\n  - local: a\n    drop: true\n    ttl: 1h\n",
	  "cfg.yaml:9: edge_to_cloud[0].ttl: not allowed with drop: true" },
	{ MINIMAL "    ttl: 0s\n", "cfg.yaml:9: edge_to_cloud[0].ttl: '0s' must be at least 1ms" },
	{ MINIMAL "    ttl: 60\n", "cfg.yaml:9: edge_to_cloud[0].ttl: duration '60' needs a unit: ms, s, m, h or d (e.g. 60s)" },
	{ MINIMAL "    ttl: 1.5h\n",
	  "cfg.yaml:9: edge_to_cloud[0].ttl: invalid duration '1.5h' (expected a number and a unit: 250ms, 30s, 5m, 2h, 7d)" },
	{ MINIMAL "    ttl: [1h]\n", "cfg.yaml:9: edge_to_cloud[0].ttl: expected a scalar value, got a list" },
	{ HEAD "edge_to_cloud:\n  - local: a/#\n    cloud: b/${site}/#\n",
	  "cfg.yaml:8: edge_to_cloud[0].cloud: unknown variable '${site}' (only ${site_id} is defined)" },
	{ MINIMAL "    headers: [a, b]\n",
	  "cfg.yaml:9: edge_to_cloud[0].headers: expected a mapping of header names to values" },
	{ MINIMAL "    headers:\n      ok: v\n      h: { x: 1 }\n",
	  "cfg.yaml:11: edge_to_cloud[0].headers.h: header value must be a string" },
	{ MINIMAL "    headers:\n      flowmq-bridge-origin: x\n",
	  "cfg.yaml:10: edge_to_cloud[0].headers.flowmq-bridge-origin: reserved header name (the bridge sets it)" },
	{ MINIMAL "    headers:\n      h: ${nope}\n",
	  "cfg.yaml:10: edge_to_cloud[0].headers.h: unknown variable '${nope}' (header values may use ${site_id}, "
	  "${captured_at} and ${captured_at_ms})" },
	{ MINIMAL "    headers:\n      h: ${captured_at\n",
	  "cfg.yaml:10: edge_to_cloud[0].headers.h: unterminated '${' in '${captured_at'" },
	{ HEAD "edge_to_cloud:\n  - local: a/#\n    cloud: b/${captured_at}/#\n",
	  "cfg.yaml:8: edge_to_cloud[0].cloud: unknown variable '${captured_at}' (only ${site_id} is defined here; "
	  "the capture time only in header values)" },
	{ "site_id: site-A\ncloud:\n  client_id: c-${captured_at_ms}\n",
	  "cfg.yaml:3: cloud.client_id: unknown variable '${captured_at_ms}' (only ${site_id} is defined here; "
	  "the capture time only in header values)" },
	{ HEAD "cloud_to_edge:\n  - cloud: c/+\n    local: l/#\n",
	  "cfg.yaml:8: cloud_to_edge[0].local: template wildcards (#) do not match filter wildcards (+)" },
	{ HEAD "cloud_to_edge:\n  - cloud: c/#/x\n    local: l\n",
	  "cfg.yaml:7: cloud_to_edge[0].cloud: invalid topic filter 'c/#/x'" },
	{ HEAD "cloud_to_edge:\n  - cloud: c\n", "cfg.yaml:7: cloud_to_edge[0].local: missing required value" },
	{ HEAD "cloud_to_edge:\n  - cloud: c\n    local: l\n    qos: -1\n",
	  "cfg.yaml:9: cloud_to_edge[0].qos: invalid value '-1' (expected 0 | 1 | 2)" },
	{ HEAD "cloud_to_edge:\n  - cloud: c\n    local: l\n    max_payload: 1GiB\n",
	  "cfg.yaml:9: cloud_to_edge[0].max_payload: '1GiB' must be between 1B and 268435455B" },
	{ "", "cfg.yaml:1: site_id: missing required value" },
};

static const char *with_dir(const char *text);

START_TEST(test_refused)
{
	write_file("gw.token", "secret\n", 0620);
	write_file("ow.token", "secret\n", 0602);
	write_file("aw.token", "secret\n", 0666);
	write_file("gw.key", "key", 0660);
	write_file("edge.crt", "crt", 0600);
	expect_refused(refused[_i].yaml, with_dir(refused[_i].error));
	ck_assert_uint_eq(logs_count(MOSQ_LOG_ERR), logs.count);
}
END_TEST

START_TEST(test_every_error_is_reported)
{
	struct fb_config *cfg = NULL;
	int rc = load_yaml(
		"site_id: site-A\n"
		"cloud:\n"
		"  endpoints: [mqtts://cloud.example]\n"
		"  keepalive: 1s\n"
		"spool:\n"
		"  on_full: never\n"
		"edge_to_cloud:\n"
		"  - local: a/+\n"
		"    cloud: b/+/+\n"
		"    qos: 5\n", &cfg);

	ck_assert_int_eq(rc, -EINVAL);
	ck_assert_ptr_null(cfg);
	ck_assert_msg(logs.count == 5, "%s", logs_dump());
	ck_assert_str_eq(logs.text[0], "cfg.yaml:4: cloud.keepalive: '1s' must be between 5s and 65535s");
	ck_assert_str_eq(logs.text[1], "cfg.yaml:5: spool.path: missing required value");
	ck_assert_str_eq(logs.text[2], "cfg.yaml:6: spool.on_full: invalid value 'never' (expected drop_oldest | drop_new | reject)");
	ck_assert_str_eq(logs.text[3], "cfg.yaml:10: edge_to_cloud[0].qos: invalid value '5' (expected 0 | 1 | 2)");
	ck_assert_str_eq(logs.text[4], "cfg.yaml:9: edge_to_cloud[0].cloud: template has 2 wildcards, filter has 1");
}
END_TEST

/* The message named in the design notes, in a file called flowmq-bridge.yaml. */
START_TEST(test_message_names_basename_line_and_key)
{
	struct fb_config *cfg = NULL;

	write_file("flowmq-bridge.yaml",
		"site_id: site-A\n"
		"cloud:\n"
		"  endpoints:\n"
		"    - mqtts://project-1.flowmq.example:8883\n"
		"spool:\n"
		"  path: /var/lib/mosquitto/flowmq-bridge\n"
		"\n"
		"# rules\n"
		"edge_to_cloud:\n"
		"  - local: local/telemetry/#\n"
		"    cloud: edge/${site_id}/telemetry/#\n"
		"  - local: local/+/status\n"
		"    qos: 0\n"
		"    cloud: edge/+/+\n", 0644);
	ck_assert_int_eq(fb_config_load(in_dir("flowmq-bridge.yaml"), &lg, &cfg), -EINVAL);
	ck_assert_msg(logs.count == 1, "%s", logs_dump());
	ck_assert_int_eq(logs.level[0], MOSQ_LOG_ERR);
	ck_assert_str_eq(logs.text[0], "flowmq-bridge.yaml:14: edge_to_cloud[1].cloud: template has 2 wildcards, filter has 1");
}
END_TEST

START_TEST(test_missing_file)
{
	struct fb_config *cfg = (struct fb_config *)&cfg;
	char expected[300];

	ck_assert_int_eq(fb_config_load(in_dir("none.yaml"), &lg, &cfg), -ENOENT);
	ck_assert_ptr_null(cfg);
	snprintf(expected, sizeof(expected), "%s: cannot open: No such file or directory", in_dir("none.yaml"));
	ck_assert_uint_eq(logs.count, 1);
	ck_assert_str_eq(logs.text[0], expected);
}
END_TEST

START_TEST(test_unreadable_file)
{
	struct fb_config *cfg = (struct fb_config *)&cfg;
	uid_t euid = geteuid();
	int rc;

	write_file("cfg.yaml", MINIMAL, 0000);
	/* root reads anything: run the load as nobody (the temporary folder is 0700 as well) */
	if(euid == 0 && seteuid(65534) != 0){
		fprintf(stderr, "test_unreadable_file: skipped, root cannot seteuid(65534)\n");
		return;
	}
	rc = fb_config_load(in_dir("cfg.yaml"), &lg, &cfg);
	if(euid == 0){
		ck_assert_int_eq(seteuid(0), 0);
	}
	ck_assert_int_eq(rc, -EACCES);
	ck_assert_ptr_null(cfg);
	ck_assert(logged(MOSQ_LOG_ERR, "cfg.yaml: cannot open: Permission denied"));
}
END_TEST

/* ---- warnings ------------------------------------------------------------------------------------ */

START_TEST(test_verify_false_warns)
{
	struct fb_config *cfg = load_ok("site_id: site-A\ncloud:\n  endpoints: [mqtts://cloud.example]\n"
			"  tls:\n    verify: false\nspool:\n  path: /tmp/spool\n" RULE);

	ck_assert(!cfg->cloud.tls.verify);
	ck_assert_msg(logs.count == 1, "%s", logs_dump());
	ck_assert_int_eq(logs.level[0], MOSQ_LOG_WARNING);
	ck_assert_str_eq(logs.text[0], "cfg.yaml:5: cloud.tls.verify: certificate verification disabled");
	fb_config_free(cfg);
}
END_TEST

static const struct {
	const char *sub; /* cloud_to_edge cloud filter */
	const char *pub; /* edge_to_cloud cloud template */
	bool overlap;
} echo[] = {
	{ "edge/site-A/#", "edge/site-A/telemetry/#", true },
	{ "edge/+/telemetry", "edge/site-A/telemetry", true },
	{ "edge/#", "edge", true },
	{ "a/b", "a/b/#", true },
	{ "#", "a/b", true },
	{ "+/x", "y/+", true },
	{ "a//b", "a/+/b", true },
	{ "$SYS/x", "$SYS/+", true },
	{ "a/+", "a", false },
	{ "a/b/c", "a/b", false },
	{ "cmd/#", "edge/#", false },
	{ "#", "$SYS/x", false },
	{ "+/x", "$aws/x", false },
	{ "a/+/c", "a/b/d", false },
};

START_TEST(test_echo_loop_warning)
{
	struct fb_config *cfg;
	char yaml[1024], local[64] = "l";

	for(const char *p = echo[_i].pub; *p; p++){
		if(*p == '+' || *p == '#'){
			strcat(local, *p == '+' ? "/+" : "/#");
		}
	}
	snprintf(yaml, sizeof(yaml), HEAD
		"edge_to_cloud:\n"
		"  - local: '%s'\n"
		"    cloud: '%s'\n"
		"cloud_to_edge:\n"
		"  - cloud: '%s'\n"
		"    local: in\n", local, echo[_i].pub, echo[_i].sub);
	cfg = load_ok(yaml);
	ck_assert_msg(logs_count(MOSQ_LOG_WARNING) == (echo[_i].overlap ? 1 : 0), "'%s' vs '%s':%s",
			echo[_i].sub, echo[_i].pub, logs_dump());
	fb_config_free(cfg);
}
END_TEST

START_TEST(test_echo_loop_warning_text)
{
	struct fb_config *cfg = load_ok(HEAD
		"edge_to_cloud:\n"
		"  - local: local/telemetry/#\n"
		"    cloud: edge/${site_id}/telemetry/#\n"
		"  - local: x\n"
		"    drop: true\n"
		"cloud_to_edge:\n"
		"  - cloud: cloud/#\n"
		"    local: c/#\n"
		"  - cloud: edge/+/telemetry/alarms\n"
		"    local: alarms\n");

	ck_assert_msg(logs.count == 1, "%s", logs_dump());
	ck_assert_int_eq(logs.level[0], MOSQ_LOG_WARNING);
	ck_assert_str_eq(logs.text[0], "cfg.yaml:14: cloud_to_edge[1].cloud: 'edge/+/telemetry/alarms' overlaps "
			"edge_to_cloud[0].cloud 'edge/site-A/telemetry/#': forwarded messages come back (echo loop risk)");
	fb_config_free(cfg);
}
END_TEST

/* A FIFO named as the configuration or as any file it names is refused at once: opening one for
 * reading would wait for a writer (the broker's start, or `check`, would hang for ever). */
static const struct {
	const char *yaml; /* NULL: the configuration itself is the FIFO */
	const char *error;
} fifos[] = {
	{ NULL, NULL },
	{ "site_id: site-A\ncloud:\n  auth:\n    password_file: @DIR@/fifo\n",
	  "cfg.yaml:4: cloud.auth.password_file: '@DIR@/fifo' is not a regular file (a FIFO)" },
	{ "site_id: site-A\ncloud:\n  tls:\n    ca_file: @DIR@/fifo\n",
	  "cfg.yaml:4: cloud.tls.ca_file: '@DIR@/fifo' is not a regular file (a FIFO)" },
	{ "site_id: site-A\ncloud:\n  tls:\n    cert_file: @DIR@/fifo\n    key_file: @DIR@/edge.key\n",
	  "cfg.yaml:4: cloud.tls.cert_file: '@DIR@/fifo' is not a regular file (a FIFO)" },
	{ "site_id: site-A\ncloud:\n  tls:\n    cert_file: @DIR@/edge.crt\n    key_file: @DIR@/fifo\n",
	  "cfg.yaml:5: cloud.tls.key_file: '@DIR@/fifo' is not a regular file (a FIFO)" },
};

/* TEXT with "@DIR@" replaced by the temporary folder, in a static buffer. */
static const char *with_dir(const char *text)
{
	static char buf[1024];
	const char *at = strstr(text, "@DIR@");

	if(at == NULL){
		snprintf(buf, sizeof(buf), "%s", text);
	}else{
		snprintf(buf, sizeof(buf), "%.*s%s%s", (int)(at - text), text, dir, at + 5);
	}
	return buf;
}

START_TEST(test_fifo_is_refused)
{
	struct fb_config *cfg = (struct fb_config *)&cfg;
	char expected[1024];
	int rc;

	ck_assert_int_eq(mkfifo(in_dir("fifo"), 0600), 0);
	write_file("edge.crt", "crt", 0644);
	write_file("edge.key", "key", 0600);
	if(fifos[_i].yaml == NULL){
		rc = fb_config_load(in_dir("fifo"), &lg, &cfg);
		snprintf(expected, sizeof(expected), "%s: cannot open: not a regular file (a FIFO)", in_dir("fifo"));
	}else{
		rc = load_yaml(fifos[_i].yaml, &cfg);
		snprintf(expected, sizeof(expected), "%s", with_dir(fifos[_i].error));
	}
	ck_assert_int_eq(rc, -EINVAL);
	ck_assert_ptr_null(cfg);
	ck_assert_msg(logged(MOSQ_LOG_ERR, expected), "no error line \"%s\":%s", expected, logs_dump());
}
END_TEST

/* A private key that others may read is accepted with a warning (a group may read it: Debian's
 * ssl-cert group is the usual way to share keys with a service). */
START_TEST(test_key_readable_by_others_warns)
{
	static const mode_t modes[] = { 0600, 0640, 0644, 0604 };
	char expected[512];

	write_file("ca.pem", "ca", 0644);
	write_file("edge.crt", "crt", 0644);
	for(size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++){
		struct fb_config *cfg;
		bool warned = (modes[i] & 0004) != 0;

		logs_clear();
		write_file("edge.key", "key", modes[i]);
		cfg = load_ok("site_id: site-A\ncloud:\n  endpoints: [mqtts://cloud.example]\n  tls:\n"
				"    cert_file: @DIR@/edge.crt\n    key_file: @DIR@/edge.key\nspool:\n  path: /tmp/spool\n" RULE);
		ck_assert_str_eq(cfg->cloud.tls.key_file, in_dir("edge.key"));
		ck_assert_msg(logs.count == (warned ? 1 : 0), "mode %o:%s", (unsigned)modes[i], logs_dump());
		if(warned){
			snprintf(expected, sizeof(expected), "cfg.yaml:6: cloud.tls.key_file: private key '%s' is readable "
					"by others; chmod 600", in_dir("edge.key"));
			ck_assert_int_eq(logs.level[0], MOSQ_LOG_WARNING);
			ck_assert_str_eq(logs.text[0], expected);
		}
		fb_config_free(cfg);
	}
}
END_TEST

/* Secret mounts of Docker and Kubernetes: a token file of mode 0444 (or 0644, 0640) owned by root
 * is accepted, with one warning naming file, line and key; a 0600 or 0400 one without. */
START_TEST(test_read_only_secret_mount_accepted_with_warning)
{
	static const struct { mode_t mode; const char *who; } cases[] = {
		{ 0444, "others" }, { 0644, "others" }, { 0640, "group" }, { 0600, NULL }, { 0400, NULL },
	};
	char expected[512];

	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		struct fb_config *cfg;

		logs_clear();
		unlink(in_dir("token"));
		write_file("token", "s3cret\n", cases[i].mode);
		if(geteuid() == 0){
			ck_assert_int_eq(chown(in_dir("token"), 0, 0), 0); /* as a secret mount hands it over */
		}
		cfg = load_ok("site_id: site-A\ncloud:\n  endpoints: [mqtts://cloud.example]\n  auth:\n"
				"    password_file: @DIR@/token\nspool:\n  path: /tmp/spool\n" RULE);
		ck_assert_str_eq(cfg->cloud.password, "s3cret");
		ck_assert_msg(logs.count == (cases[i].who ? 1u : 0u), "mode %o:%s", (unsigned)cases[i].mode, logs_dump());
		if(cases[i].who){
			snprintf(expected, sizeof(expected), "cfg.yaml:5: cloud.auth.password_file: '%s' is readable by %s "
					"(mode %03o); chmod 600 unless it is a read-only secret mount", in_dir("token"), cases[i].who,
					(unsigned)cases[i].mode);
			ck_assert_int_eq(logs.level[0], MOSQ_LOG_WARNING);
			ck_assert_str_eq(logs.text[0], expected);
		}
		fb_config_free(cfg);
	}
}
END_TEST

/* allow_plaintext with credentials warns once per load, naming the first plaintext endpoint;
 * without credentials, or over TLS only, it does not. */
START_TEST(test_plaintext_credentials_warn)
{
	static const struct {
		const char *endpoints;
		const char *auth;
		const char *warning; /* NULL: none */
	} cases[] = {
		{ "[mqtts://a.example, mqtt://b.example, mqtt://c.example]", "{ username: u, password_file: @DIR@/token }",
		  "cfg.yaml:3: cloud.endpoints[1]: 'mqtt://b.example' is not encrypted: the username and password of "
		  "cloud.auth go to it in clear" },
		{ "[mqtt://b.example]", "{ username: u }",
		  "cfg.yaml:3: cloud.endpoints[0]: 'mqtt://b.example' is not encrypted: the username of cloud.auth goes "
		  "to it in clear" },
		{ "[mqtt://b.example]", "{}", NULL },
		{ "[mqtts://a.example]", "{ username: u, password_file: @DIR@/token }", NULL },
	};
	char yaml[1024];

	write_file("token", "t0ken\n", 0600);
	for(size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++){
		struct fb_config *cfg;

		logs_clear();
		snprintf(yaml, sizeof(yaml), "site_id: site-A\ncloud:\n  endpoints: %s\n  auth: %s\n"
				"  tls: { allow_plaintext: true }\nspool:\n  path: /tmp/spool\n" RULE, cases[i].endpoints,
				cases[i].auth);
		cfg = load_ok(yaml);
		ck_assert(cfg->cloud.tls.allow_plaintext);
		ck_assert_msg(logs.count == (cases[i].warning ? 1 : 0), "case %zu:%s", i, logs_dump());
		if(cases[i].warning){
			ck_assert_int_eq(logs.level[0], MOSQ_LOG_WARNING);
			ck_assert_str_eq(logs.text[0], cases[i].warning);
		}
		fb_config_free(cfg);
	}
}
END_TEST

/* An explicit document start and end around the one document are fine. */
START_TEST(test_one_document_with_markers_loads)
{
	struct fb_config *cfg = load_ok("---\n" MINIMAL "...\n");

	ck_assert_uint_eq(logs.count, 0);
	ck_assert_str_eq(cfg->site_id, "site-A");
	fb_config_free(cfg);
}
END_TEST

/* ---- runner -------------------------------------------------------------------------------------- */

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc;

	tc = tcase_create("load");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_reduce_keys);
	tcase_add_test(tc, test_minimal_config_gets_every_default);
	tcase_add_test(tc, test_cloud_to_edge_rule_defaults);
	tcase_add_test(tc, test_every_key_set_is_converted);
	tcase_add_test(tc, test_sync_modes);
	tcase_add_test(tc, test_poison_after_takes_1_to_100);
	tcase_add_test(tc, test_priority_and_lane_min_share);
	tcase_add_test(tc, test_password_file_loses_one_trailing_newline);
	tcase_add_test(tc, test_read_secret_checks_like_load);
	tcase_add_test(tc, test_cloud_equal_and_restart_keys);
	tcase_add_test(tc, test_rate_caps);
	tcase_add_test(tc, test_read_only_secret_mount_accepted_with_warning);
	tcase_add_test(tc, test_shipped_example_loads);
	tcase_add_test(tc, test_shipped_example_optional_keys_load);
	tcase_add_test(tc, test_free_accepts_null);
	tcase_add_test(tc, test_site_id_expands_everywhere);
	tcase_add_test(tc, test_header_values_keep_the_capture_time_variables);
	tcase_add_test(tc, test_header_value_too_long_with_the_capture_time);
	tcase_add_test(tc, test_missing_file);
	tcase_add_test(tc, test_unreadable_file);
	suite_add_tcase(s, tc);

	tc = tcase_create("parse");
	tcase_add_test(tc, test_parse_duration);
	tcase_add_test(tc, test_parse_size);
	suite_add_tcase(s, tc);

	tc = tcase_create("refused");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_refused, 0, sizeof(refused) / sizeof(refused[0]));
	tcase_add_test(tc, test_every_error_is_reported);
	tcase_add_loop_test(tc, test_fifo_is_refused, 0, sizeof(fifos) / sizeof(fifos[0]));
	tcase_add_test(tc, test_one_document_with_markers_loads);
	tcase_add_test(tc, test_message_names_basename_line_and_key);
	suite_add_tcase(s, tc);

	tc = tcase_create("warnings");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_verify_false_warns);
	tcase_add_loop_test(tc, test_echo_loop_warning, 0, sizeof(echo) / sizeof(echo[0]));
	tcase_add_test(tc, test_echo_loop_warning_text);
	tcase_add_test(tc, test_key_readable_by_others_warns);
	tcase_add_test(tc, test_plaintext_credentials_warn);
	tcase_add_test(tc, test_metrics_listen);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(config_suite());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
