/* account: the accounting of received messages shared by loadgen's sub mode and cloudsink.
 *
 * Both programs count what arrives with the same definitions and print the same keys, so that a
 * scenario of scripts/bench reads a drain into either of them alike. Every published payload of
 * loadgen pub (at least HDR_LEN bytes) starts with a struct hdr; a message without it only counts
 * as received and foreign.
 *
 * Not thread-safe: cloudsink calls it with its lock held.
 */
#ifndef BENCH_ACCOUNT_H
#define BENCH_ACCOUNT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define HDR_LEN 16
#define MAGIC 0xF10Bu
#define MAX_CONNS 256          /* connections of loadgen pub: the connection indexes a header holds */

/* The payload header, in the publisher's byte order (both ends run on the same machine). */
struct hdr {
	int64_t sent_ns;       /* send time, CLOCK_REALTIME */
	uint32_t seq;          /* sequence number within its connection */
	uint16_t conn;         /* connection index */
	uint16_t magic;        /* MAGIC; anything else: no header */
};

_Static_assert(sizeof(struct hdr) == HDR_LEN, "the payload header is HDR_LEN bytes");

struct stream {
	uint64_t *seen;        /* bitmap of seq numbers */
	size_t words;
	int64_t last;          /* highest seq so far, -1 before the first */
};

struct account {
	const char *first_file;  /* -F, or NULL */
	struct stream streams[MAX_CONNS];
	long received, unique, dups, reorder, foreign;
	int64_t first_ns, last_ns;
	int64_t *lat;          /* latency of each first arrival, ns */
	size_t nlat, caplat;
	bool arrived;          /* a message arrived since the last connection */
};

int64_t now_ns(clockid_t clk);
double cpu_seconds(void);

/* The header of a payload of len bytes into *h; magic 0 when the payload is shorter. */
void account_header(struct hdr *h, const void *payload, size_t len);

/* A connection (re)started: the next message is the first after it, the one -F reports. */
void account_connected(struct account *a);

/* One message with header h that arrived at t (realtime). */
void account_message(struct account *a, const struct hdr *h, int64_t t);

/* Whether nothing arrived for idle seconds after the first message (-I). */
bool account_idle(const struct account *a, double idle);

/* Writes each latency (us) to lat_file (-L, or NULL) and prints the keys on stdout, from
 * received= to cpu_s=, without the end of the line: cloudsink adds its own keys to it. */
void account_print(struct account *a, const char *lat_file);

#endif
