/* flowmq-bridge integration test harness (test process).
 *
 * Real brokers on 127.0.0.1, on ports chosen free at run time; certificates made with the openssl
 * CLI into a temporary folder; MQTT v5 test clients built on libmosquitto. Every process the harness
 * starts is killed by pid: at fbh_teardown(), at exit (atexit), and by the kernel if the test process
 * dies first (PR_SET_PDEATHSIG). Nothing here uses a fixed port or kills by name.
 *
 * Typical test file:
 *
 *	START_TEST(test_something)
 *	{
 *		struct fbh_broker cloud, edge;
 *		fbh_broker_init(&cloud, "cloud");
 *		fbh_broker_init(&edge, "edge");
 *		char *cc = fbh_cloud_conf(&cloud, NULL);
 *		ck_assert_int_eq(fbh_broker_start(&cloud, cc), 0);
 *		char *yaml = fbh_edge_yaml(&edge, cloud.port, FBH_YAML_STANDARD);
 *		char *ec = fbh_edge_conf(&edge, yaml, NULL);
 *		ck_assert_int_eq(fbh_broker_start(&edge, ec), 0);
 *		...
 *	}
 *	END_TEST
 *
 *	int main(void)
 *	{
 *		Suite *s = suite_create("...");
 *		TCase *tc = fbh_tcase("...");   // tcase with fbh_setup/fbh_teardown and a timeout
 *		tcase_add_test(tc, test_something);
 *		suite_add_tcase(s, tc);
 *		return fbh_run(s);              // 77 (skip) when mosquitto or openssl is missing
 *	}
 *
 * Unless noted, functions that prepare files abort the current test (ck_abort_msg) on failure; broker
 * and client functions return a status so that failures can be asserted. Strings returned as char *
 * are malloc'd: the caller frees them with free(). All functions are for the test's main thread.
 */
#ifndef FBH_HARNESS_H
#define FBH_HARNESS_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <sys/wait.h> /* fbh_run_cmd() returns a wait status */

#include <check.h>
#include <mosquitto.h>

#define FBH_SKIP 77

/* Mosquitto 2.0.11 facts the tests depend on:
 * - A QoS 1 publish that matches no subscriber gets PUBACK 0x10 (not 0): treat < 0x80 as success.
 * - A wrong password gets CONNACK 0x87 (Not authorized) on MQTT v5, not 0x86.
 * - "tls_version tlsv1.2" (broker and libmosquitto) is a minimum, not an exact version.
 * - When a plugin's init fails, the broker logs "Error: Plugin returned RC when initialising."
 *   and exits with RC, without calling the plugin's cleanup.
 * - With per_listener_settings true, "plugin" lines must follow a "listener" line.
 * - A string option given twice ("user", "password_file", ...) is a configuration error.
 */

/* MQTT v5 reason codes the tests assert. */
#define FBH_RC_SUCCESS 0x00
#define FBH_RC_NO_MATCHING_SUBSCRIBERS 0x10 /* Mosquitto's PUBACK when nobody is subscribed */
#define FBH_RC_NOT_AUTHORIZED 0x87

/* Fixed identities used by the certificates, the cloud's password file and the YAML templates. */
#define FBH_SITE_ID "site-A"
#define FBH_EDGE_USER "edge-site-A"
#define FBH_EDGE_PASSWORD "edge-secret-0123"
#define FBH_CLOUD_TEST_USER "cloudtester"
#define FBH_CLOUD_TEST_PASSWORD "tester-secret-4567"

/* ---- running tests ------------------------------------------------------------------------- */

/* Returns 0, or prints why and returns FBH_SKIP when /usr/sbin/mosquitto, mosquitto_passwd or
 * openssl is missing. Creates the per-run temporary root and registers the atexit cleanup.
 * fbh_run() calls it; call it yourself only with a hand-written main. */
int fbh_init(void);

/* fbh_init(), then runs S with srunner (CK_FORK and CK_VERBOSITY from the environment) and
 * returns the exit code for meson: 0, 1 when a test failed, or FBH_SKIP. Takes ownership of S. */
int fbh_run(Suite *s);

/* A TCase with fbh_setup/fbh_teardown as checked fixture and a 120 s timeout (CK_DEFAULT_TIMEOUT
 * and CK_TIMEOUT_MULTIPLIER still apply on top). */
TCase *fbh_tcase(const char *name);

/* The Check tag (tcase_set_tags) of the test cases that must run alone: they assert a latency
 * bound (a p99 of PUBACKs or injections) or load every CPU on purpose. meson runs a program with
 * such cases twice: NAME-alone with CK_INCLUDE_TAGS=alone, not in parallel, and NAME with
 * CK_EXCLUDE_TAGS=alone beside other tests (see test/integration/meson.build). */
#define FBH_TAG_ALONE "alone"

/* Checked fixture: fbh_teardown() kills every broker this process started and still runs, frees
 * every client it created and removes fbh_tmpdir() (unless FB_KEEP_TMP is set). */
void fbh_setup(void);
void fbh_teardown(void);

/* ---- files, ports, processes --------------------------------------------------------------- */

/* This test's temporary directory (created on first call, same path until fbh_teardown()).
 * Under the run's root in $TMPDIR (or /tmp); kept and printed when FB_KEEP_TMP is set. */
const char *fbh_tmpdir(void);

/* A TCP port on 127.0.0.1 that is free now: a random port below the kernel's ephemeral range
 * (so that no outgoing connection can take it while a broker restarts), checked by binding it;
 * never the same port twice in one process. Falls back to bind(0) + getsockname. */
int fbh_free_port(void);

/* The plugin under test: $FB_PLUGIN_PATH, else the path meson compiled in. */
const char *fbh_plugin_path(void);

/* The flowmq-link program under test: $FB_LINK_PROGRAM, else the path meson compiled in. */
const char *fbh_link_program(void);

/* The source tree: $FB_SOURCE_ROOT, else the path meson compiled in. */
const char *fbh_source_root(void);

/* Writes TEXT to PATH with MODE (truncating). Aborts the test on failure. */
void fbh_write_file(const char *path, const char *text, mode_t mode);

/* Reads a whole file; NULL if it cannot be read. */
char *fbh_read_file(const char *path);

/* printf into a malloc'd string. Aborts the test when out of memory. */
char *fbh_strdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* 1-based number of the first line of TEXT that contains NEEDLE, or 0. */
unsigned fbh_line_of(const char *text, const char *needle);

/* Runs ARGV (argv[0] is looked up in PATH) with stdout/stderr appended to LOG (or /dev/null) and
 * returns its wait status, or -1 when it could not be started. */
int fbh_run_cmd(const char *const argv[], const char *log);

/* ---- certificates -------------------------------------------------------------------------- */

struct fbh_certs {
	char dir[PATH_MAX];
	char ca[PATH_MAX];            /* CA certificate (EC P-256), CN=flowmq-test-ca */
	char ca_key[PATH_MAX];
	char server_cert[PATH_MAX];   /* CN=localhost, SAN DNS:localhost, IP:127.0.0.1, by ca */
	char server_key[PATH_MAX];
	char client_cert[PATH_MAX];   /* CN=edge-site-A, clientAuth, by ca */
	char client_key[PATH_MAX];
	char wrong_ca[PATH_MAX];      /* an unrelated CA, CN=flowmq-wrong-ca */
	char wrong_ca_key[PATH_MAX];
	char wrong_client_cert[PATH_MAX]; /* CN=edge-site-A signed by wrong_ca */
	char wrong_client_key[PATH_MAX];
	char wronghost_cert[PATH_MAX];    /* CN=wrong.example, SAN DNS:wrong.example only, by ca */
	char wronghost_key[PATH_MAX];
};

/* Generates the certificates once per run (cached in the run's root, so forked tests share them)
 * and returns their paths. Aborts the test when openssl fails (its output is printed). */
const struct fbh_certs *fbh_certs(void);

/* ---- brokers ------------------------------------------------------------------------------- */

struct fbh_broker {
	pid_t pid;              /* > 0 while running */
	int port;               /* main listener: picked by fbh_broker_init(), may be overwritten */
	int port2;              /* a second free port (the cloud's plaintext listener for test clients) */
	char name[64];
	char dir[PATH_MAX];     /* fbh_tmpdir()/NAME: conf, log, passwords, spool live here */
	char conf[PATH_MAX];    /* DIR/mosquitto.conf */
	char log[PATH_MAX];     /* DIR/mosquitto.log: log_dest file plus the process's stdout/stderr */
	char openssl_conf[PATH_MAX]; /* non-empty: OPENSSL_CONF for the process (fbh_cloud_conf tls12_only) */
	long log_mark;          /* log searches start here; set at each start and by fbh_broker_log_mark */
	bool exited;            /* the last process has been reaped */
	int wait_status;        /* its waitpid() status */
};

/* Zeroes B, creates fbh_tmpdir()/NAME and picks port and port2. Ports and directory stay the same
 * across stop/start, so a broker can be restarted on the same port with the same spool. */
void fbh_broker_init(struct fbh_broker *b, const char *name);

/* Writes B->conf = CONF_BODY + "log_dest file B->log", "log_type all" (and "user root" when
 * running as root, because 2.0.11 otherwise switches to user mosquitto before loading plugins and
 * could not read the temporary folder; so CONF_BODY must not set "user"), starts
 * /usr/sbin/mosquitto -c B->conf (stdout/stderr appended to B->log too) and waits up to 10 s until
 * the log shows "Opening ipv4 listen socket on port B->port." and "mosquitto version ... running"
 * (the listeners are bound and listening by then), or until the process exits. It does not probe
 * with a TCP connection: on a TLS listener that makes OpenSSL 3 log "unexpected eof" errors that
 * TLS tests would trip over. CONF_BODY holds the listener lines.
 * Returns 0 when it is up; -1 when it exited (B->exited, B->wait_status, fbh_broker_exit_code()),
 * or when it was neither up nor gone after 10 s (then it has been killed). */
int fbh_broker_start(struct fbh_broker *b, const char *conf_body);

/* Starts ARGV (argv[0] a path) as B's process instead of Mosquitto: a server of another kind, such
 * as bench/cloudsink. Our environment; stdout and stderr appended to B->log (the log mark moves to
 * its end); killed at fbh_teardown() like a broker, and fbh_broker_stop(), _kill(), _signal(),
 * _running(), _wait_exit() and _exit_code() apply. It does not wait for the program to listen.
 * Returns 0, or -1 when it could not be started. */
int fbh_broker_spawn(struct fbh_broker *b, const char *const argv[]);

/* SIGTERM (and SIGCONT, in case it is stopped), waits up to 10 s, then SIGKILL. Returns the exit
 * code (0 is a clean stop), or -SIGNAL when it had to be killed or died from a signal, or -1 when
 * it was not running. */
int fbh_broker_stop(struct fbh_broker *b);

/* SIGKILL and reap (a crash). No-op when not running. */
void fbh_broker_kill(struct fbh_broker *b);

/* Sends SIG (SIGSTOP, SIGCONT, SIGHUP, ...). Returns 0 or -errno. */
int fbh_broker_signal(struct fbh_broker *b, int sig);

/* True while the process runs (reaps it, without blocking, when it has exited). */
bool fbh_broker_running(struct fbh_broker *b);

/* Waits up to TIMEOUT_MS for the process to exit on its own. Returns its exit code (>= 0),
 * -SIGNAL when it died from a signal, or INT_MIN on timeout (still running). */
int fbh_broker_wait_exit(struct fbh_broker *b, int timeout_ms);

/* The exit code of the reaped process: >= 0 for exit(), -SIGNAL for a signal, INT_MIN if none. */
int fbh_broker_exit_code(const struct fbh_broker *b);

/* Log searches look at the log written after the mark only: the mark is set at every start, and
 * fbh_broker_log_mark() moves it to the current end (to wait for a new occurrence). */
void fbh_broker_log_mark(struct fbh_broker *b);
bool fbh_broker_log_contains(struct fbh_broker *b, const char *substring);
/* True when one line of the log (since the mark) contains both S1 and S2. */
bool fbh_broker_log_line_has(struct fbh_broker *b, const char *s1, const char *s2);
/* Polls the log until SUBSTRING appears (true) or TIMEOUT_MS pass (false). */
bool fbh_wait_log(struct fbh_broker *b, const char *substring, int timeout_ms);
/* Prints the broker's log (since the mark) to stderr, prefixed with its name; for diagnostics. */
void fbh_broker_dump_log(struct fbh_broker *b);
/* Prints to OUT, one "fbh: diag" line per process, what the running broker and its child
 * processes (the link process) are doing: each thread's state, wait channel and the top of its
 * kernel stack. Called when a broker does not answer in time (a stop, a log line waited for). */
void fbh_broker_diag(struct fbh_broker *b, FILE *out);

/* ---- configurations ------------------------------------------------------------------------ */

struct fbh_cloud_opts {
	bool tls12_only;        /* "tls_version tlsv1.2" plus OPENSSL_CONF MaxProtocol = TLSv1.2:
	                           in 2.0.11 tls_version is only a minimum */
	bool client_cert_optional; /* require_certificate false (default: true) */
	bool wrong_host_cert;   /* present the wrong.example certificate instead of localhost */
	bool cafile_wrong_ca;   /* trust only the wrong CA for client certificates */
	const char *acl;        /* acl_file content; NULL: FBH_CLOUD_ACL_STANDARD */
	const char *extra;      /* appended verbatim (e.g. "max_inflight_messages 5\n") */
};

/* The cloud's standard ACL. */
#define FBH_CLOUD_ACL_STANDARD \
	"user " FBH_EDGE_USER "\n" \
	"topic readwrite edge/site-A/#\n" \
	"topic read cloud/commands/site-A/#\n" \
	"topic readwrite flowmq/edge/site-A/#\n" \
	"\n" \
	"user " FBH_CLOUD_TEST_USER "\n" \
	"topic readwrite #\n"

/* mosquitto.conf text for the FlowMQ stand-in (OPTS may be NULL):
 *   listener B->port 127.0.0.1 with TLS (certs from fbh_certs(), tls_version tlsv1.3,
 *   require_certificate true, use_identity_as_username false), listener B->port2 127.0.0.1 in
 *   plaintext for test clients, allow_anonymous false, password_file (FBH_EDGE_USER and
 *   FBH_CLOUD_TEST_USER, made with mosquitto_passwd), acl_file, persistence false.
 * Writes B->dir/passwd and B->dir/acl; with tls12_only sets B->openssl_conf. */
char *fbh_cloud_conf(struct fbh_broker *b, const struct fbh_cloud_opts *opts);

/* mosquitto.conf text for the edge: listener B->port 127.0.0.1, allow_anonymous true,
 * plugin fbh_plugin_path(), plugin_opt_config_file YAML_PATH (omitted when NULL),
 * plugin_opt_link_program fbh_link_program() (omitted when EXTRA sets it), then EXTRA. */
char *fbh_edge_conf(struct fbh_broker *b, const char *yaml_path, const char *extra);

/* Writes B->dir/flowmq-bridge.yaml from TMPL with these placeholders replaced, and returns its
 * path. An unknown @NAME@ aborts the test.
 *   @CLOUD_PORT@     CLOUD_PORT
 *   @CA_FILE@ @CERT_FILE@ @KEY_FILE@             fbh_certs() ca, client_cert, client_key
 *   @WRONG_CA_FILE@ @WRONG_CERT_FILE@ @WRONG_KEY_FILE@
 *   @PASSWORD_FILE@  B->dir/cloud-password, mode 0600, holding FBH_EDGE_PASSWORD (written here)
 *   @SPOOL_PATH@     B->dir/spool (kept across restarts)
 *   @DIR@            B->dir
 * The text after expansion is kept in the file; fbh_line_of(fbh_read_file(path), ...) finds a line. */
char *fbh_edge_yaml(struct fbh_broker *b, int cloud_port, const char *tmpl);

/* Standard plugin configuration (README.md, "Configuration reference"), fast reconnects for
 * tests. Concatenate the parts to replace some: FBH_YAML_BASE FBH_YAML_RULES == FBH_YAML_STANDARD. */
#define FBH_YAML_BASE \
	"site_id: " FBH_SITE_ID "\n" \
	"cloud:\n" \
	"  endpoints:\n" \
	"    - mqtts://localhost:@CLOUD_PORT@\n" \
	"  client_id: edge-${site_id}\n" \
	"  keepalive: 5s\n" \
	"  connect_timeout: 5s\n" \
	"  reconnect:\n" \
	"    min: 100ms\n" \
	"    max: 1s\n" \
	"  auth:\n" \
	"    username: edge-${site_id}\n" \
	"    password_file: @PASSWORD_FILE@\n" \
	"  tls:\n" \
	"    ca_file: @CA_FILE@\n" \
	"    cert_file: @CERT_FILE@\n" \
	"    key_file: @KEY_FILE@\n" \
	"spool:\n" \
	"  path: @SPOOL_PATH@\n" \
	"status_interval: 1s\n"

#define FBH_YAML_E2C_RULES \
	"edge_to_cloud:\n" \
	"  - local: local/telemetry/#\n" \
	"    cloud: edge/${site_id}/telemetry/#\n" \
	"    qos: 1\n" \
	"    headers:\n" \
	"      edge-site-id: ${site_id}\n" \
	"  - local: local/debug/#\n" \
	"    drop: true\n"

#define FBH_YAML_C2E_RULES \
	"cloud_to_edge:\n" \
	"  - cloud: cloud/commands/${site_id}/#\n" \
	"    local: local/commands/#\n" \
	"    qos: 1\n"

#define FBH_YAML_RULES FBH_YAML_E2C_RULES FBH_YAML_C2E_RULES
#define FBH_YAML_STANDARD FBH_YAML_BASE FBH_YAML_RULES

/* ---- MQTT v5 test clients ------------------------------------------------------------------ */

struct fbh_client_opts {
	const char *client_id;   /* NULL: generated */
	const char *username;    /* NULL: none */
	const char *password;
	bool persistent;         /* clean start off (with session_expiry) */
	uint32_t session_expiry; /* seconds, with persistent */
	int keepalive;           /* 0: 30 s */
	int max_inflight;        /* 0: library default; else MOSQ_OPT_SEND_MAXIMUM */
	int connect_timeout_ms;  /* 0: 5000 */
	/* TLS: off unless tls_ca is set. The host name checked is 127.0.0.1 (the server certificate
	 * has IP:127.0.0.1; the wrong.example one fails) unless tls_insecure. */
	const char *tls_ca;
	const char *tls_cert;    /* client certificate and key, optional */
	const char *tls_key;
	const char *tls_version; /* "tlsv1.3", "tlsv1.2": in libmosquitto 2.0.11 only a minimum */
	bool tls_insecure;
};

struct fbh_prop {
	char *name;
	char *value;
};

struct fbh_msg {
	char *topic;
	void *payload;           /* NUL-terminated copy */
	int payloadlen;
	int qos;
	bool retain;
	struct fbh_prop *user_props; /* in received order */
	size_t user_prop_count;
	mosquitto_property *props;   /* copy of every property */
};

/* First user property called NAME, or NULL. */
const char *fbh_msg_user_prop(const struct fbh_msg *m, const char *name);

struct fbh_sub;

/* Connects to 127.0.0.1:PORT (OPTS may be NULL), subscribes to FILTER with QOS and returns once
 * the SUBACK granted it. NULL on failure (reason on stderr, e.g. CONNACK refused). */
struct fbh_sub *fbh_sub_start(int port, const struct fbh_client_opts *opts, const char *filter, int qos);
/* One more subscription, waiting for its SUBACK. Returns 0 or -1. */
int fbh_sub_add(struct fbh_sub *s, const char *filter, int qos);
/* Waits until at least N messages have arrived; returns the count at return (>= N on success). */
size_t fbh_sub_wait_count(struct fbh_sub *s, size_t n, int timeout_ms);
size_t fbh_sub_count(struct fbh_sub *s);
/* The I-th message received (stable until fbh_sub_clear/fbh_sub_stop), or NULL. */
const struct fbh_msg *fbh_sub_msg(struct fbh_sub *s, size_t i);
/* Forgets the messages received so far. */
void fbh_sub_clear(struct fbh_sub *s);
/* True while connected (false after the broker went away). */
bool fbh_sub_connected(struct fbh_sub *s);
/* Disconnects and frees. Accepts NULL. */
void fbh_sub_stop(struct fbh_sub *s);
/* The libmosquitto handle (e.g. for mosquitto_ssl_get()); owned by S. */
struct mosquitto *fbh_sub_mosq(struct fbh_sub *s);

struct fbh_pub;

/* Connects to 127.0.0.1:PORT; returns once the CONNACK accepted it, NULL otherwise. */
struct fbh_pub *fbh_pub_connect(int port, const struct fbh_client_opts *opts);
/* Queues one publish (PROPS is copied, may be NULL). Returns its index in send order (>= 0) or
 * -1 when libmosquitto refused it. */
long fbh_pub_send(struct fbh_pub *p, const char *topic, const void *payload, int payloadlen, int qos,
		bool retain, const mosquitto_property *props);
/* Queues N publishes to TOPIC with payloads PAYLOAD_PREFIX + "0", "1", ... Returns 0 or -1. */
int fbh_pub_send_n(struct fbh_pub *p, const char *topic, const char *payload_prefix, size_t n,
		int qos, const mosquitto_property *props);
/* Waits until every queued publish completed (PUBACK/PUBCOMP, or sent for QoS 0). */
bool fbh_pub_wait_all(struct fbh_pub *p, int timeout_ms);
size_t fbh_pub_sent(struct fbh_pub *p);      /* publishes queued */
size_t fbh_pub_acked(struct fbh_pub *p);     /* publishes completed */
/* Reason code of the I-th publish: 0..255, or -1 while not completed. */
int fbh_pub_reason(struct fbh_pub *p, size_t i);
/* How many completed publishes carry reason code RC. */
size_t fbh_pub_count_reason(struct fbh_pub *p, int rc);
/* How many completed publishes carry a reason code >= 0x80. */
size_t fbh_pub_count_failed(struct fbh_pub *p);
/* Disconnects (after the queued messages were written) and frees. Accepts NULL. */
void fbh_pub_close(struct fbh_pub *p);
/* The libmosquitto handle; owned by P. */
struct mosquitto *fbh_pub_mosq(struct fbh_pub *p);

/* Connect, publish N messages ("<prefix><i>") with QOS, wait for all acknowledgements, close.
 * Returns the number acknowledged with a reason code < 0x80, or -1 when connecting failed. */
long fbh_publish(int port, const struct fbh_client_opts *opts, const char *topic,
		const char *payload_prefix, size_t n, int qos, const mosquitto_property *props, int timeout_ms);

#endif
