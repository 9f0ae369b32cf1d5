/* Fault test (test process): a spool.path that is not a spool of ours is refused and left as it
 * is; a spool of an earlier version (no marker file, only a spool's files) is adopted.
 *
 * "Left as it is" is checked byte for byte: a listing of every entry below the folder (name,
 * type, mode, size, modification time, and an FNV-1a hash of each file's content) before the
 * broker starts and after it has refused to start.
 */
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"

static char *listing;
static size_t listing_len;

static uint64_t fnv_file(const char *path)
{
	uint64_t h = 0xcbf29ce484222325ull;
	unsigned char buf[4096];
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	while((n = read(fd, buf, sizeof(buf))) > 0){
		for(ssize_t i = 0; i < n; i++){
			h = (h ^ buf[i]) * 0x100000001b3ull;
		}
	}
	close(fd);
	return h;
}

static int list_one(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	char line[8192];
	int n;

	(void)ftw;
	n = snprintf(line, sizeof(line), "%s %d %o %lld %lld.%09ld %016" PRIx64 "\n", path, type,
			(unsigned)sb->st_mode, (long long)sb->st_size, (long long)sb->st_mtim.tv_sec,
			sb->st_mtim.tv_nsec, type == FTW_F ? fnv_file(path) : 0);
	listing = realloc(listing, listing_len + (size_t)n + 1);
	ck_assert_ptr_nonnull(listing);
	memcpy(listing + listing_len, line, (size_t)n + 1);
	listing_len += (size_t)n;
	return 0;
}

/* The listing of DIR (caller frees). */
static char *checksums(const char *dir)
{
	char *out;

	listing = NULL;
	listing_len = 0;
	ck_assert_int_eq(nftw(dir, list_one, 16, FTW_PHYS), 0);
	out = listing;
	listing = NULL;
	return out;
}

/* Writes TEXT to EDGE->dir/spool/NAME. */
static void put(struct fbh_broker *edge, const char *name, const char *text, mode_t mode)
{
	char *path = fbh_strdupf("%s/spool/%s", edge->dir, name);

	fbh_write_file(path, text, mode);
	free(path);
}

/* Starts an edge whose spool.path is EDGE->dir/spool, as the files there are, and asserts that
 * the broker refuses to start, names the folder in its log, and leaves the folder byte-identical. */
static void refused_untouched(struct fbh_broker *edge, const char *why)
{
	char *spool = fbh_strdupf("%s/spool", edge->dir);
	char *before = checksums(spool), *after;
	char *yaml = fbh_edge_yaml(edge, fbh_free_port(), FBH_YAML_STANDARD);
	char *conf = fbh_edge_conf(edge, yaml, NULL);
	DIR *d;
	struct dirent *e;

	ck_assert_int_eq(fbh_broker_start(edge, conf), -1);
	ck_assert(edge->exited);
	ck_assert_int_ne(fbh_broker_exit_code(edge), 0);
	ck_assert_msg(fbh_broker_log_line_has(edge, spool, why), "no line naming %s with \"%s\"", spool, why);
	after = checksums(spool);
	ck_assert_str_eq(after, before);
	/* Nothing was moved aside either. */
	d = opendir(edge->dir);
	ck_assert_ptr_nonnull(d);
	while((e = readdir(d)) != NULL){
		ck_assert_msg(strncmp(e->d_name, "spool.", 6) != 0, "found %s", e->d_name);
	}
	closedir(d);
	free(before);
	free(after);
	free(yaml);
	free(conf);
	free(spool);
}

START_TEST(test_folder_with_a_current_file_is_refused_and_left_byte_identical)
{
	struct fbh_broker edge;
	char *p;

	fbh_broker_init(&edge, "edge");
	p = fbh_strdupf("%s/spool", edge.dir);
	ck_assert_int_eq(mkdir(p, 0755), 0);
	free(p);
	/* Someone's project: a file called CURRENT, a LOG, a sub-folder, some data. */
	put(&edge, "CURRENT", "release-2024\n", 0644);
	put(&edge, "LOG", "2024-05-01 deployed\n", 0644);
	put(&edge, "notes.txt", "do not delete\n", 0600);
	p = fbh_strdupf("%s/spool/sub", edge.dir);
	ck_assert_int_eq(mkdir(p, 0700), 0);
	free(p);
	put(&edge, "sub/data.bin", "\x01\x02\x03", 0644);
	refused_untouched(&edge, "is not a flowmq-bridge spool");
	ck_assert(fbh_broker_log_contains(&edge, "notes.txt") || fbh_broker_log_contains(&edge, "sub"));
}
END_TEST

START_TEST(test_folder_of_other_files_is_refused_and_left_byte_identical)
{
	struct fbh_broker edge;
	char *p;

	fbh_broker_init(&edge, "edge");
	p = fbh_strdupf("%s/spool", edge.dir);
	ck_assert_int_eq(mkdir(p, 0755), 0);
	free(p);
	put(&edge, "photo.jpg", "\xff\xd8\xff\xe0 not really", 0644);
	refused_untouched(&edge, "is not a flowmq-bridge spool");
	ck_assert(fbh_broker_log_contains(&edge, "photo.jpg"));
}
END_TEST

START_TEST(test_spool_of_a_newer_format_is_refused_and_left_byte_identical)
{
	struct fbh_broker edge;
	char *p;

	fbh_broker_init(&edge, "edge");
	p = fbh_strdupf("%s/spool", edge.dir);
	ck_assert_int_eq(mkdir(p, 0700), 0);
	free(p);
	put(&edge, "FLOWMQ-SPOOL", "flowmq-bridge spool\nformat 7\n", 0600);
	put(&edge, "CURRENT", "MANIFEST-000001\n", 0644);
	refused_untouched(&edge, "format 7");
}
END_TEST

START_TEST(test_spool_without_marker_is_adopted_with_its_messages)
{
	struct fbh_broker edge;
	struct fbh_sub *sys;
	char *marker, *text;
	const size_t n = 25;

	fbh_broker_init(&edge, "edge");
	/* A spool with 25 messages (the cloud is down), made by this version ... */
	start_edge(&edge, fbh_free_port(), FBH_YAML_STANDARD, NULL);
	sys = sys_watch(&edge);
	ck_assert_int_eq(fbh_publish(edge.port, NULL, "local/telemetry/a", "a", n, 1, NULL, 30000), (long)n);
	ck_assert(sys_wait_u64(sys, "spool/messages", n, 10000));
	fbh_sub_stop(sys);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	marker = fbh_strdupf("%s/spool/FLOWMQ-SPOOL", edge.dir);
	text = fbh_read_file(marker);
	ck_assert_ptr_nonnull(text);
	ck_assert_str_eq(text, "flowmq-bridge spool\nformat 1\n");
	free(text);
	/* ... then as an earlier version left it: without the marker and its reserve file. */
	ck_assert_int_eq(unlink(marker), 0);
	{
		char *reserve = fbh_strdupf("%s/spool/flowmq-reserve", edge.dir);
		unlink(reserve);
		free(reserve);
	}
	start_edge(&edge, fbh_free_port(), FBH_YAML_STANDARD, NULL);
	sys = sys_watch(&edge);
	ck_assert(sys_wait_u64(sys, "spool/messages", n, 10000));
	ck_assert(fbh_broker_log_contains(&edge, "marked as ours"));
	text = fbh_read_file(marker);
	ck_assert_ptr_nonnull(text);
	ck_assert_str_eq(text, "flowmq-bridge spool\nformat 1\n");
	free(text);
	fbh_sub_stop(sys);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	free(marker);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("foreign");
	TCase *tc = fbh_tcase("foreign");

	tcase_add_test(tc, test_folder_with_a_current_file_is_refused_and_left_byte_identical);
	tcase_add_test(tc, test_folder_of_other_files_is_refused_and_left_byte_identical);
	tcase_add_test(tc, test_spool_of_a_newer_format_is_refused_and_left_byte_identical);
	tcase_add_test(tc, test_spool_without_marker_is_adopted_with_its_messages);
	suite_add_tcase(s, tc);
	return fbh_run(s);
}
