/* Helpers shared by the flowmq-bridge integration and fault suites (test processes; on top of
 * harness.h). */
#ifndef FB_TEST_COMMON_H
#define FB_TEST_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"

#define SYS_PREFIX "$SYS/broker/flowmq-bridge/"

/* Options for test clients of the cloud (its plaintext listener, port2). */
extern const struct fbh_client_opts cloud_tester;

/* A subscriber to the edge's $SYS/broker/flowmq-bridge/# status topics. */
struct fbh_sub *sys_watch(struct fbh_broker *edge);

/* The newest value of status KEY (e.g. "spool/messages") seen by W, or NULL. */
const char *sys_value(struct fbh_sub *w, const char *key);

/* Waits until status KEY equals VALUE. */
bool sys_wait(struct fbh_sub *w, const char *key, const char *value, int timeout_ms);

/* Waits until status KEY, read as a number, equals V. */
bool sys_wait_u64(struct fbh_sub *w, const char *key, uint64_t v, int timeout_ms);

/* Index N of a payload "<prefix>N", or -1. */
long payload_index(const struct fbh_msg *m, const char *prefix);

/* Waits until S has received exactly N messages and nothing more arrives for SETTLE_MS. */
bool wait_exactly(struct fbh_sub *s, size_t n, int timeout_ms, int settle_ms);

/* Cloud configuration extra that keeps sessions across a restart (persistence in B->dir); the
 * cloud queues without limit for offline persistent subscribers (fbh_cloud_conf). */
char *cloud_persistent_extra(struct fbh_broker *b);

/* Options of a persistent cloud subscriber called ID. */
struct fbh_client_opts persistent_sub(const char *id);

/* Starts the cloud stand-in (OPTS may be NULL); the test fails, with the log, if it does not. */
void start_cloud(struct fbh_broker *cloud, const struct fbh_cloud_opts *opts);

/* Writes the plugin configuration from YAML_TMPL and starts the edge with it (EXTRA: more
 * mosquitto.conf lines, may be NULL); the test fails, with the log, if it does not start. */
void start_edge(struct fbh_broker *edge, int cloud_port, const char *yaml_tmpl, const char *extra);

/* Starts the cloud stand-in with a subscriber to what the edge forwards to edge/site-A/telemetry/#
 * (*SUB), and the edge with configuration YAML_TMPL, watched by *SYS (the test fails if any of
 * them does not start). */
void start_cloud_and_edge(struct fbh_broker *cloud, struct fbh_broker *edge, const char *yaml_tmpl, struct fbh_sub **sub,
		struct fbh_sub **sys);

/* Starts the cloud stand-in and an edge whose cloud_to_edge rule maps cloud/commands/<site>/# to
 * local/commands/# with max_payload 16MiB (commands larger than the cloud-to-edge ring), with a
 * local subscriber to local/commands/# (*LOCAL) and *SYS watching; returns once the edge is
 * connected to the cloud. */
void start_commands(struct fbh_broker *cloud, struct fbh_broker *edge, struct fbh_sub **local, struct fbh_sub **sys);

/* The link process of the edge broker BROKER (its only child, named flowmq-link); 0 when it has
 * none right now. link_pid_wait(): waits for one for up to 5 s (the test fails without). */
pid_t link_pid(pid_t broker);
pid_t link_pid_wait(pid_t broker);

/* How many times NEEDLE occurs in the whole log of EDGE (since its first start, marks ignored). */
unsigned log_count(struct fbh_broker *edge, const char *needle);

/* How many files whose names start with STEM (c2e.h: FB_C2E_STEM, FB_REQUEUE_STEM; a ".new" being
 * written counts too) the spool folder of EDGE holds. */
size_t spool_files(struct fbh_broker *edge, const char *stem);

/* The state of folder DIR as text: every entry's path, type, mode, size, mtime and SHA-256, one per
 * line, sorted (caller frees). tree_settled(): the same once two looks 0.5 s apart agree (the test
 * fails after 30 s of changes). For "byte-identical before and after" checks. */
char *tree_state(const char *dir);
char *tree_settled(const char *dir);

#endif
