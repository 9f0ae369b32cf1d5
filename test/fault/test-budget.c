/* Fault test (test process): spool.max_size bounds the spool folder on disk.
 *
 * The cloud is down, the edge's spool has a small max_size with on_full: drop_oldest, and 1 KiB
 * messages of random bytes (RocksDB's lz4 cannot shrink them) are published far beyond it. The
 * size of the spool folder as du counts it (allocated blocks: preallocated files count in full)
 * must stay within max_size + the overhead that README.md documents (fb_spool_layout()), measured
 * after every batch and at the end, and the counts must be exact: every PUBACKed message is in
 * the spool or counted as dropped/full.
 */
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "spool.h"

#define PAYLOAD_LEN 1024
#define BATCH 1000

static uint64_t du_total;

static int du_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)path; (void)type; (void)ftw;
	du_total += (uint64_t)sb->st_blocks * 512u;
	return 0;
}

/* Bytes allocated to DIR and everything in it, as du counts them. */
static uint64_t du(const char *dir)
{
	du_total = 0;
	ck_assert_int_eq(nftw(dir, du_one, 16, FTW_PHYS), 0);
	return du_total;
}

/* Payload I: "b<I>:" then random bytes, PAYLOAD_LEN in all. */
static void make_payload(uint8_t *buf, size_t i, uint64_t *rng)
{
	int n = snprintf((char *)buf, PAYLOAD_LEN, "b%zu:", i);

	for(size_t k = (size_t)n; k < PAYLOAD_LEN; k++){
		*rng ^= *rng << 13;
		*rng ^= *rng >> 7;
		*rng ^= *rng << 17;
		buf[k] = (uint8_t)*rng;
	}
}

static void fill_within_budget(const char *max_size_text, uint64_t max_size, size_t n)
{
	struct fbh_broker edge;
	struct fbh_sub *sys;
	struct fbh_pub *pub;
	struct fb_spool_layout lay;
	uint8_t payload[PAYLOAD_LEN];
	uint64_t rng = 0x9e3779b97f4a7c15ull, empty, peak = 0, now, limit;
	char *yaml, *spool;
	const char *v;
	uint64_t spooled, dropped;

	fb_spool_layout(max_size, &lay);
	limit = max_size + lay.overhead;
	ck_assert_uint_le(lay.overhead, 16u << 20); /* the documented bound */

	fbh_broker_init(&edge, "edge");
	/* The cloud's port is never opened: the cloud is down throughout. */
	yaml = fbh_strdupf(FBH_YAML_BASE FBH_YAML_E2C_RULES);
	{
		/* The spool section with the limit. */
		char *p = strstr(yaml, "  path: @SPOOL_PATH@\n"), *y2;
		ck_assert_ptr_nonnull(p);
		p += strlen("  path: @SPOOL_PATH@\n");
		y2 = fbh_strdupf("%.*s  max_size: %s\n  on_full: drop_oldest\n%s", (int)(p - yaml), yaml,
				max_size_text, p);
		free(yaml);
		yaml = y2;
	}
	start_edge(&edge, fbh_free_port(), yaml, NULL);
	free(yaml);
	spool = fbh_strdupf("%s/spool", edge.dir);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 10000));
	empty = du(spool);
	fprintf(stderr, "budget %s: empty spool %" PRIu64 " KiB\n", max_size_text, empty >> 10);
	ck_assert_uint_le(empty, limit);

	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	for(size_t i = 0; i < n; i++){
		make_payload(payload, i, &rng);
		ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/b", payload, PAYLOAD_LEN, 1, false, NULL), 0);
		if((i + 1) % BATCH == 0 || i + 1 == n){
			ck_assert(fbh_pub_wait_all(pub, 120000));
			now = du(spool);
			peak = now > peak ? now : peak;
			ck_assert_msg(now <= limit, "after %zu messages the spool folder holds %" PRIu64
					" bytes, over max_size %" PRIu64 " + overhead %" PRIu64, i + 1, now,
					max_size, lay.overhead);
		}
	}
	/* Every message was accepted (drop_oldest), none refused. */
	ck_assert_uint_eq(fbh_pub_acked(pub), n);
	ck_assert_uint_eq(fbh_pub_count_failed(pub), 0);
	fbh_pub_close(pub);

	/* The link process takes what is staged within a second or two: then the counts add up. */
	for(int t = 0; t < 300; t++){
		usleep(100000);
		v = sys_value(sys, "spool/messages");
		spooled = v ? strtoull(v, NULL, 10) : 0;
		v = sys_value(sys, "edge_to_cloud/dropped/full");
		dropped = v ? strtoull(v, NULL, 10) : 0;
		if(spooled + dropped == n){
			break;
		}
	}
	v = sys_value(sys, "spool/messages");
	spooled = v ? strtoull(v, NULL, 10) : 0;
	v = sys_value(sys, "edge_to_cloud/dropped/full");
	dropped = v ? strtoull(v, NULL, 10) : 0;
	ck_assert_uint_eq(spooled + dropped, n);
	ck_assert_uint_gt(dropped, 0);
	v = sys_value(sys, "spool/bytes");
	ck_assert_ptr_nonnull(v);
	ck_assert_uint_le(strtoull(v, NULL, 10), lay.live);
	/* Compactions settle: the folder stays within the bound afterwards too. */
	sleep(3);
	now = du(spool);
	peak = now > peak ? now : peak;
	fprintf(stderr, "budget %s: %zu messages of %d bytes published, %" PRIu64 " spooled, %" PRIu64
			" dropped/full; folder %" PRIu64 " KiB at the end, %" PRIu64 " KiB at most; limit %"
			PRIu64 " KiB (max_size + %" PRIu64 " KiB overhead)\n", max_size_text, n, PAYLOAD_LEN,
			spooled, dropped, now >> 10, peak >> 10, limit >> 10, lay.overhead >> 10);
	ck_assert_uint_le(now, limit);

	fbh_sub_stop(sys);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	free(spool);
}

START_TEST(test_2mib_spool_folder_stays_within_max_size_and_overhead)
{
	fill_within_budget("2MiB", 2u << 20, 12000);
}
END_TEST

START_TEST(test_64mib_spool_folder_stays_within_max_size_and_overhead)
{
	fill_within_budget("64MiB", 64u << 20, 120000);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("budget");
	TCase *tc = fbh_tcase("budget");

	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_2mib_spool_folder_stays_within_max_size_and_overhead);
	tcase_add_test(tc, test_64mib_spool_folder_stays_within_max_size_and_overhead);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
