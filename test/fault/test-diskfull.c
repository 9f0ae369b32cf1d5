/* Fault test (test process, a load thread): the spool's disk fills up, for real.
 *
 * The edge's spool lives on a small tmpfs that this test mounts (it needs root: otherwise the
 * test is skipped with 77 and the reason), with a filler file leaving about 1 MiB free. The cloud
 * is down. A load thread publishes 1 KiB QoS 1 messages at 500/s on a matched topic until RocksDB
 * runs out of space and then some; meanwhile a probe client publishes QoS 1 on an unmatched topic
 * ten times a second and times each PUBACK. Asserted: the probe's p99 stays below 50 ms; the link
 * process neither aborts nor is replaced (same pid, no "killed by signal" in the log);
 * spool/disk_full goes to 1. A link process killed then is replaced by one that starts on the
 * full disk and stays up; so does the broker, stopped and started again on the full disk (the
 * staged messages go into RocksDB in the space of the spool's reserve file). Then the filler is deleted and the cloud comes back: spool/disk_full
 * goes back to 0 and every message the edge PUBACKed reaches the cloud, or is counted as
 * dropped/full, exactly.
 *
 * A large message's own file that the full disk refuses is an error, not a full spool: refused
 * with 0x87, counted in dropped/error, logged with its topic and reason; sent again once there is
 * space, it reaches the cloud once.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "common.h"

#define CLOUD_TOPIC "edge/site-A/telemetry/#"
#define PAYLOAD_LEN 1024
#define RATE 500
/* Ten seconds of load fill the disk and most of the staging files; FB_DISKFULL_SECONDS makes it
 * longer, so that the staging files fill up and spool.on_full applies. */
static unsigned load_seconds = 10;
#define N_LOAD ((size_t)RATE * load_seconds)
#define TMPFS_SIZE "32m"

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- the load: its own libmosquitto client and thread ---- */

struct load {
	int port;
	pthread_t th;
	struct mosquitto *mosq;
	atomic_int connected;
	atomic_size_t acked_ok, acked_failed;
	int mid_index[65536];       /* mid -> message index */
	atomic_uchar *ok;           /* ok[i]: message i was PUBACKed with success */
	size_t sent;
};

static void load_on_connect(struct mosquitto *m, void *ud, int rc, int flags, const mosquitto_property *p)
{
	struct load *l = ud;
	(void)m; (void)flags; (void)p;
	atomic_store(&l->connected, rc == 0 ? 1 : -1);
}

static void load_on_publish(struct mosquitto *m, void *ud, int mid, int reason, const mosquitto_property *p)
{
	struct load *l = ud;
	int i = l->mid_index[mid & 0xffff];
	(void)m; (void)p;

	if(reason < 0x80){
		atomic_store(&l->ok[i], 1);
		atomic_fetch_add(&l->acked_ok, 1);
	}else{
		atomic_fetch_add(&l->acked_failed, 1);
	}
}

static void make_payload(uint8_t *buf, size_t i, uint64_t *rng)
{
	int n = snprintf((char *)buf, PAYLOAD_LEN, "d%zu:", i);

	for(size_t k = (size_t)n; k < PAYLOAD_LEN; k++){
		*rng ^= *rng << 13;
		*rng ^= *rng >> 7;
		*rng ^= *rng << 17;
		buf[k] = (uint8_t)*rng;
	}
}

static void *load_main(void *ud)
{
	struct load *l = ud;
	uint8_t payload[PAYLOAD_LEN];
	uint64_t rng = 0x2545f4914f6cdd1dull, t0 = mono_ms();
	int mid;

	for(size_t i = 0; i < N_LOAD; i++){
		uint64_t due = t0 + i * 1000u / RATE;
		while(mono_ms() < due){
			usleep(500);
		}
		make_payload(payload, i, &rng);
		/* mid_index is written before the message can be acknowledged: libmosquitto's mids
		 * are sequential, so the next one is known. */
		l->mid_index[(l->sent + 1) & 0xffff] = (int)i;
		if(mosquitto_publish_v5(l->mosq, &mid, "local/telemetry/full", PAYLOAD_LEN, payload, 1, false, NULL)
				!= MOSQ_ERR_SUCCESS){
			break;
		}
		l->mid_index[mid & 0xffff] = (int)i;
		l->sent++;
	}
	return NULL;
}

static void load_start(struct load *l, int port)
{
	memset(l, 0, sizeof(*l));
	l->port = port;
	l->ok = calloc(N_LOAD, sizeof(*l->ok));
	ck_assert_ptr_nonnull(l->ok);
	l->mosq = mosquitto_new("diskfull-load", true, l);
	ck_assert_ptr_nonnull(l->mosq);
	mosquitto_int_option(l->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_int_option(l->mosq, MOSQ_OPT_SEND_MAXIMUM, 100);
	mosquitto_connect_v5_callback_set(l->mosq, load_on_connect);
	mosquitto_publish_v5_callback_set(l->mosq, load_on_publish);
	ck_assert_int_eq(mosquitto_connect_bind_v5(l->mosq, "127.0.0.1", port, 30, NULL, NULL), MOSQ_ERR_SUCCESS);
	ck_assert_int_eq(mosquitto_loop_start(l->mosq), MOSQ_ERR_SUCCESS);
	for(int t = 0; t < 500 && atomic_load(&l->connected) == 0; t++){
		usleep(10000);
	}
	ck_assert_int_eq(atomic_load(&l->connected), 1);
	ck_assert_int_eq(pthread_create(&l->th, NULL, load_main, l), 0);
}

static void load_finish(struct load *l)
{
	pthread_join(l->th, NULL);
	ck_assert_uint_eq(l->sent, N_LOAD);
	/* Every publish completes: acknowledged, or refused with a reason code. */
	for(int t = 0; t < 1200 && atomic_load(&l->acked_ok) + atomic_load(&l->acked_failed) < l->sent; t++){
		usleep(100000);
	}
	ck_assert_uint_eq(atomic_load(&l->acked_ok) + atomic_load(&l->acked_failed), l->sent);
	mosquitto_disconnect_v5(l->mosq, 0, NULL);
	mosquitto_loop_stop(l->mosq, false);
	mosquitto_destroy(l->mosq);
}

/* ---- helpers ---- */

/* Writes a file of zeros at PATH until only about LEAVE bytes are free in its file system. */
static void fill_up(const char *path, uint64_t leave)
{
	struct statvfs sv;
	uint64_t avail, want;
	static char zeros[1 << 16];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(statvfs(path, &sv), 0);
	avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	want = avail > leave ? avail - leave : 0;
	while(want > 0){
		size_t n = want < sizeof(zeros) ? (size_t)want : sizeof(zeros);
		ssize_t w = write(fd, zeros, n);
		if(w <= 0){
			break;
		}
		want -= (uint64_t)w;
	}
	ck_assert_int_eq(fsync(fd), 0);
	close(fd);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t sys_u64(struct fbh_sub *sys, const char *key)
{
	const char *v = sys_value(sys, key);
	return v ? strtoull(v, NULL, 10) : 0;
}

static char mnt[PATH_MAX + 16];

static char mnt2[PATH_MAX + 16], mnt3[PATH_MAX + 16], mnt4[PATH_MAX + 16];

static void unmount_tmpfs(void)
{
	if(mnt4[0]){
		umount2(mnt4, MNT_DETACH);
		rmdir(mnt4);
		mnt4[0] = '\0';
	}
	if(mnt3[0]){
		umount2(mnt3, MNT_DETACH);
		rmdir(mnt3);
		mnt3[0] = '\0';
	}
	if(mnt2[0]){
		umount2(mnt2, MNT_DETACH);
		rmdir(mnt2);
		mnt2[0] = '\0';
	}
	if(mnt[0]){
		umount2(mnt, MNT_DETACH);
		rmdir(mnt);
		mnt[0] = '\0';
	}
}

/* FBH_YAML_STANDARD with the spool in folder "spool" of MOUNT. */
static char *yaml_spool_on(const char *mount)
{
	char *yaml = fbh_strdupf("%s", FBH_YAML_STANDARD), *p = strstr(yaml, "@SPOOL_PATH@"), *y2;

	ck_assert_ptr_nonnull(p);
	*p = '\0';
	y2 = fbh_strdupf("%s%s/spool%s", yaml, mount, p + strlen("@SPOOL_PATH@"));
	free(yaml);
	return y2;
}

START_TEST(test_full_disk_is_a_state_and_nothing_acknowledged_is_lost)
{
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { 0 };
	struct fbh_client_opts so = persistent_sub("cloud-sub-diskfull");
	struct fbh_sub *sub, *sys;
	struct fbh_pub *probe;
	struct load *l = calloc(1, sizeof(*l));
	uint64_t *lat = calloc(load_seconds * 20 + 100, sizeof(*lat)), p99, worst = 0;
	size_t nlat = 0, delivered = 0, dropped, dropped_before;
	unsigned char *seen;
	char *yaml, *filler;
	pid_t link0, link1;
	bool full_seen = false;

	ck_assert_ptr_nonnull(l);
	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	ck_assert(mnt[0] != '\0'); /* mounted by main() */

	/* A persistent cloud session, then the cloud goes down. */
	co.extra = cloud_persistent_extra(&cloud);
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, CLOUD_TOPIC, 1);
	ck_assert_ptr_nonnull(sub);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);

	yaml = yaml_spool_on(mnt);
	start_edge(&edge, cloud.port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait_u64(sys, "spool/disk_full", 0, 10000));
	link0 = link_pid(edge.pid);
	ck_assert_int_gt(link0, 0);

	filler = fbh_strdupf("%s/filler", mnt);
	fill_up(filler, 1u << 20);

	probe = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(probe);
	load_start(l, edge.port);
	/* The probe, ten times a second while the load runs. */
	ck_assert_ptr_nonnull(lat);
	for(uint64_t end = mono_ms() + load_seconds * 1000u + 2000u; mono_ms() < end;){
		uint64_t t0 = mono_ms();
		ck_assert_int_ge(fbh_pub_send(probe, "other/probe", "p", 1, 1, false, NULL), 0);
		ck_assert(fbh_pub_wait_all(probe, 60000));
		lat[nlat] = mono_ms() - t0;
		if(lat[nlat] >= 50){
			fprintf(stderr, "diskfull: probe %zu took %" PRIu64 " ms\n", nlat, lat[nlat]);
		}
		nlat++;
		if(!full_seen && sys_u64(sys, "spool/disk_full") == 1){
			full_seen = true;
		}
		usleep(100000);
	}
	load_finish(l);
	fbh_pub_close(probe);
	for(size_t i = 0; i < nlat; i++){
		worst = lat[i] > worst ? lat[i] : worst;
	}
	qsort(lat, nlat, sizeof(lat[0]), cmp_u64);
	p99 = lat[(nlat * 99) / 100 < nlat ? (nlat * 99) / 100 : nlat - 1];
	fprintf(stderr, "diskfull: %zu load messages, %zu acknowledged, %zu refused; probe p99 %" PRIu64
			" ms, max %" PRIu64 " ms over %zu probes\n", l->sent, atomic_load(&l->acked_ok),
			atomic_load(&l->acked_failed), p99, worst, nlat);

	/* The disk was full, and said so; the link process lives on. */
	ck_assert(full_seen || sys_wait_u64(sys, "spool/disk_full", 1, 5000));
	ck_assert(fbh_broker_log_contains(&edge, "disk full"));
	ck_assert(!fbh_broker_log_contains(&edge, "killed by signal"));
	ck_assert(!fbh_broker_log_contains(&edge, "link process (pid"));
	link1 = link_pid(edge.pid);
	ck_assert_int_eq(link1, link0);

	/* A link process started on the full disk opens the spool (with its reserve) and runs. */
	ck_assert_int_eq(kill(link0, SIGKILL), 0);
	link1 = 0;
	for(int t = 0; t < 300 && (link1 == 0 || link1 == link0); t++){
		usleep(100000);
		link1 = link_pid(edge.pid);
	}
	ck_assert_int_gt(link1, 0);
	ck_assert_int_ne(link1, link0);
	sleep(3);
	ck_assert_int_eq(link_pid(edge.pid), link1);
	ck_assert(!fbh_broker_log_contains(&edge, "killed by signal 6"));
	ck_assert(!fbh_broker_log_contains(&edge, "exited with status"));
	ck_assert(sys_wait_u64(sys, "spool/disk_full", 1, 10000));

	/* So does a broker started on the full disk: the staged messages go into RocksDB at
	 * the start, in the space of the reserve file. */
	sleep(2); /* the counters are published every second */
	dropped_before = (size_t)sys_u64(sys, "edge_to_cloud/dropped/full");
	fbh_sub_stop(sys);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	start_edge(&edge, cloud.port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(fbh_wait_log(&edge, "the reserve was used to open", 10000));
	ck_assert(sys_wait_u64(sys, "spool/disk_full", 1, 10000));
	ck_assert(sys_wait_u64(sys, "spool/messages", atomic_load(&l->acked_ok) - dropped_before, 10000));
	ck_assert(!fbh_broker_log_contains(&edge, "killed by signal"));
	ck_assert(!fbh_broker_log_contains(&edge, "exited with status"));

	/* Space returns, then the cloud. */
	ck_assert_int_eq(unlink(filler), 0);
	ck_assert(sys_wait_u64(sys, "spool/disk_full", 0, 30000));
	ck_assert(fbh_wait_log(&edge, "disk full over", 5000));
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, CLOUD_TOPIC, 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert(sys_wait_u64(sys, "spool/messages", 0, 120000));
	usleep(1000000);
	/* The counters start again with the broker: the drops before its restart count too. */
	dropped = dropped_before + (size_t)sys_u64(sys, "edge_to_cloud/dropped/full");

	/* Every acknowledged message arrived (duplicates counted once), or was counted dropped. */
	seen = calloc(N_LOAD, 1);
	ck_assert_ptr_nonnull(seen);
	for(size_t i = 0; i < fbh_sub_count(sub); i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		long idx;
		char *end;

		ck_assert_str_eq(m->topic, "edge/site-A/telemetry/full");
		ck_assert_int_eq(m->payloadlen, PAYLOAD_LEN);
		ck_assert_int_eq(((const char *)m->payload)[0], 'd');
		idx = strtol((const char *)m->payload + 1, &end, 10);
		ck_assert_int_eq(*end, ':');
		ck_assert(idx >= 0 && idx < (long)N_LOAD);
		if(!seen[idx]){
			seen[idx] = 1;
			delivered++;
		}
	}
	for(size_t i = 0; i < N_LOAD; i++){
		if(atomic_load(&l->ok[i]) && !seen[i]){
			ck_assert_msg(dropped > 0, "acknowledged message %zu never arrived, none dropped", i);
		}
	}
	fprintf(stderr, "diskfull: %zu delivered, %zu dropped/full, %zu acknowledged\n", delivered,
			dropped, atomic_load(&l->acked_ok));
	ck_assert_uint_eq(delivered + dropped, atomic_load(&l->acked_ok));
	/* Refused publishes (on_full) never reach the cloud. */
	ck_assert_uint_le(delivered, atomic_load(&l->acked_ok));

	fbh_sub_stop(sub);
	fbh_sub_stop(sys);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	/* Last, so that a loaded machine's slow probe does not hide the other results. */
	ck_assert_msg(p99 < 50, "probe PUBACK p99 %" PRIu64 " ms", p99);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	free(seen);
	free(lat);
	free(l->ok);
	free(l);
	free(filler);
	free(yaml);
	free((char *)co.extra);
}
END_TEST

/* ---- a damaged spool salvaged on a disk without room for a copy ---- */

#define TMPFS2_SIZE "48m"
#define SALVAGE_N 1000

/* The regular files of folder DIR (name and content), to compare a kept folder with. */
struct snap {
	size_t n;
	char *name[64];
	uint8_t *data[64];
	size_t len[64];
};

static void snap_take(struct snap *sn, const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;

	ck_assert_ptr_nonnull(d);
	memset(sn, 0, sizeof(*sn));
	while((e = readdir(d)) != NULL){
		char *path;
		struct stat st;
		FILE *f;

		if(e->d_name[0] == '.'){
			continue;
		}
		path = fbh_strdupf("%s/%s", dir, e->d_name);
		ck_assert_int_eq(lstat(path, &st), 0);
		ck_assert(S_ISREG(st.st_mode));
		ck_assert_uint_lt(sn->n, 64);
		sn->name[sn->n] = strdup(e->d_name);
		sn->len[sn->n] = (size_t)st.st_size;
		sn->data[sn->n] = malloc(sn->len[sn->n] + 1);
		ck_assert_ptr_nonnull(sn->data[sn->n]);
		f = fopen(path, "rb");
		ck_assert_ptr_nonnull(f);
		ck_assert_uint_eq(fread(sn->data[sn->n], 1, sn->len[sn->n], f), sn->len[sn->n]);
		fclose(f);
		free(path);
		sn->n++;
	}
	closedir(d);
}

static void snap_free(struct snap *sn)
{
	for(size_t i = 0; i < sn->n; i++){
		free(sn->name[i]);
		free(sn->data[i]);
	}
	sn->n = 0;
}

/* Bytes a copy of the spool folder takes (all files but the reserve and LOCK). */
static uint64_t copy_need(const struct snap *sn)
{
	uint64_t n = 0;

	for(size_t i = 0; i < sn->n; i++){
		if(strcmp(sn->name[i], "flowmq-reserve") != 0 && strcmp(sn->name[i], "LOCK") != 0){
			n += (sn->len[i] + 4095) & ~(uint64_t)4095;
		}
	}
	return n;
}

/* CURRENT deleted in a stopped edge's spool, on a tmpfs left with room for the fresh spool and the
 * records queued again, but not for a copy of the damaged spool. Before: "cannot copy ... to
 * salvage its records: No space left on device", nothing queued again, nothing counted: all
 * 1,000 PUBACKed messages lost. Now the spool moved aside is read in place through hard links
 * (read only): every record is queued again, delivered + counted as corrupt == PUBACKed, the log
 * says so with the count, and the folder kept is byte-identical to the damaged spool. */
START_TEST(test_salvage_without_room_for_a_copy_reads_in_place)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub, *sys;
	struct fbh_pub *pub;
	struct snap before, after;
	char *yaml, *spool, *path, *filler, *kept = NULL, payload[1100], line[160];
	size_t acked, distinct = 0;
	uint64_t corrupt, free_now, leave;
	unsigned char *seen;
	long last = -1;
	DIR *d;
	struct dirent *e;

	ck_assert(mnt2[0] != '\0');
	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	spool = fbh_strdupf("%s/spool", mnt2);
	yaml = yaml_spool_on(mnt2);

	/* A backlog while the cloud is down. */
	start_edge(&edge, cloud.port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	for(size_t i = 0; i < SALVAGE_N; i++){
		int len = snprintf(payload, sizeof(payload), "c%zu;", i);
		while(len < 1000){
			payload[len] = (char)('a' + (i * 7 + (size_t)len) % 26);
			len++;
		}
		ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/t", payload, len, 1, false, NULL), 0);
	}
	ck_assert(fbh_pub_wait_all(pub, 120000));
	acked = fbh_pub_acked(pub) - fbh_pub_count_failed(pub);
	ck_assert_uint_eq(acked, SALVAGE_N);
	fbh_pub_close(pub);
	ck_assert(sys_wait_u64(sys, "spool/messages", SALVAGE_N, 60000));
	fbh_sub_stop(sys);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);

	/* The damage, then the disk fills: room for the fresh spool's staging files (2 x 4 MiB)
	 * and half a copy of the damaged spool, which is more than the records queued again take. */
	path = fbh_strdupf("%s/CURRENT", spool);
	ck_assert_int_eq(unlink(path), 0);
	free(path);
	snap_take(&before, spool);
	leave = (8u << 20) + copy_need(&before) / 2;
	filler = fbh_strdupf("%s/filler", mnt2);
	fill_up(filler, leave);
	{
		struct statvfs sv;
		ck_assert_int_eq(statvfs(mnt2, &sv), 0);
		free_now = (uint64_t)sv.f_bavail * sv.f_frsize;
	}
	fprintf(stderr, "salvage: a copy needs %" PRIu64 " KiB, %" PRIu64 " KiB free\n",
			copy_need(&before) >> 10, free_now >> 10);
	ck_assert_uint_lt(free_now, (8u << 20) + copy_need(&before));

	/* The edge starts on it (the cloud still down): moved aside, salvaged in place. */
	start_edge(&edge, cloud.port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	if(!fbh_wait_log(&edge, "salvaged from", 60000)){
		fbh_broker_dump_log(&edge);
		ck_abort_msg("no salvage");
	}
	ck_assert(fbh_broker_log_contains(&edge, "its CURRENT file is missing"));
	ck_assert(fbh_broker_log_line_has(&edge, "cannot copy", "reading it in place instead"));
	snprintf(line, sizeof(line), ": %u records queued again into \"out\"", SALVAGE_N);
	ck_assert_msg(fbh_broker_log_contains(&edge, line), "the log does not say %s", line);
	ck_assert(sys_wait_u64(sys, "spool/messages", SALVAGE_N, 30000));
	d = opendir(mnt2);
	ck_assert_ptr_nonnull(d);
	while((e = readdir(d)) != NULL){
		if(strncmp(e->d_name, "spool.corrupt-", 14) == 0 && strchr(e->d_name + 14, '.') == NULL){
			ck_assert_ptr_null(kept);
			kept = fbh_strdupf("%s/%s", mnt2, e->d_name);
		}
		ck_assert_msg(strstr(e->d_name, ".salvage") == NULL, "%s left behind", e->d_name);
	}
	closedir(d);
	ck_assert_ptr_nonnull(kept);
	ck_assert(fbh_broker_log_line_has(&edge, "moved aside to", kept));

	/* Space returns, then the cloud (the edge restarted: no wait for its back-off). */
	fbh_sub_stop(sys);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	ck_assert_int_eq(unlink(filler), 0);
	start_cloud(&cloud, NULL);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, CLOUD_TOPIC, 1);
	ck_assert_ptr_nonnull(sub);
	start_edge(&edge, cloud.port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	if(!sys_wait_u64(sys, "spool/messages", 0, 120000)){
		fbh_broker_dump_log(&edge);
		ck_abort_msg("the spool did not drain");
	}
	ck_assert(sys_wait(sys, "state", "connected", 10000));
	fbh_sub_wait_count(sub, SALVAGE_N, 60000);
	usleep(1000 * 1000);
	/* The counter starts again with the broker: the salvage's count is in the first one's log. */
	corrupt = 0;
	for(uint64_t n = 1; n <= SALVAGE_N; n++){
		snprintf(line, sizeof(line), ": %" PRIu64 " records (seq ", n);
		if(fbh_broker_log_line_has(&edge, line, " lost to damage in the spool moved aside to")){
			corrupt = n;
			break;
		}
	}
	seen = calloc(SALVAGE_N, 1);
	ck_assert_ptr_nonnull(seen);
	for(size_t i = 0; i < fbh_sub_count(sub); i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		char *end;
		long k;

		ck_assert_uint_ge((size_t)m->payloadlen, 3);
		ck_assert_int_eq(((const char *)m->payload)[0], 'c');
		k = strtol((const char *)m->payload + 1, &end, 10);
		ck_assert_int_eq(*end, ';');
		ck_assert(k >= 0 && k < SALVAGE_N);
		if(!seen[k]){
			seen[k] = 1;
			distinct++;
			ck_assert_msg(k > last, "message %ld arrived after %ld", k, last);
			last = k;
		}
	}
	fprintf(stderr, "salvage: %zu PUBACKed, %zu delivered, %" PRIu64 " counted as corrupt (%zu received)\n",
			acked, distinct, corrupt, fbh_sub_count(sub));
	ck_assert_uint_eq(distinct + corrupt, acked);
	/* Nothing was lost to a deleted CURRENT: the WAL holds every record. */
	ck_assert_uint_eq(corrupt, 0);
	/* Repeats only for what was in flight when a connection broke (max_inflight 64). */
	ck_assert_uint_le(fbh_sub_count(sub), SALVAGE_N + 64);

	/* The spool moved aside is the damaged one, byte for byte, and nothing more. */
	snap_take(&after, kept);
	ck_assert_uint_eq(after.n, before.n);
	for(size_t i = 0; i < before.n; i++){
		size_t j;
		for(j = 0; j < after.n && strcmp(after.name[j], before.name[i]) != 0; j++){
		}
		ck_assert_msg(j < after.n, "%s is not kept", before.name[i]);
		ck_assert_uint_eq(after.len[j], before.len[i]);
		ck_assert_msg(memcmp(after.data[j], before.data[i], before.len[i]) == 0, "%s differs", before.name[i]);
	}

	fbh_sub_stop(sub);
	fbh_sub_stop(sys);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	snap_free(&before);
	snap_free(&after);
	free(seen);
	free(kept);
	free(filler);
	free(spool);
	free(yaml);
}
END_TEST

/* ---- the disk fills while the cloud is connected and traffic flows ---- */

#define BACKLOG_N 6000
#define TRAFFIC_N 1000

/* Lines of the broker's log (since the mark) that contain S. */
static size_t log_lines_with(struct fbh_broker *b, const char *s)
{
	char *text = fbh_read_file(b->log), *p;
	size_t n = 0;

	ck_assert_ptr_nonnull(text);
	for(p = text + (b->log_mark > 0 && (size_t)b->log_mark <= strlen(text) ? (size_t)b->log_mark : 0);
			(p = strstr(p, s)) != NULL; p += strlen(s)){
		n++;
	}
	free(text);
	return n;
}

/* A backlog of 6,000 1 KiB messages spooled while the cloud was down (in RocksDB and the staging
 * files); the cloud comes back and the edge connects; as soon as the first message arrives, the
 * cloud broker is paused for half a second while the disk fills (1 MiB left on the tmpfs), and
 * 1,000 more messages are published (100/s) from then on. Asserted: spool/disk_full goes to 1 and the spool
 * still drains to 0 meanwhile (reads do not fail on a full disk, acknowledgements are kept); the
 * log has exactly one "disk full" line for the episode and no failed read; every PUBACKed
 * message arrives (or is counted in dropped/full), in order; duplicates are at most max_inflight
 * (64) per connection that broke (reconnects), since only what was in flight is sent again;
 * after space returns and the edge restarts, nothing is sent again (the deletes kept in memory
 * were written). Before: reads failed with ENOSPC while the disk was full, so nothing already
 * spooled was forwarded until space returned, and the acknowledgements were not written. */
START_TEST(test_full_disk_while_connected_keeps_forwarding_and_acknowledging)
{
	struct fbh_broker cloud, edge;
	struct fbh_cloud_opts co = { 0 };
	struct fbh_client_opts so = persistent_sub("cloud-sub-connected");
	struct fbh_sub *sub, *sys;
	struct fbh_pub *pub;
	char *yaml, *filler, payload[1100];
	size_t acked, received, distinct = 0, dups, dropped, n_pub = BACKLOG_N + TRAFFIC_N;
	uint64_t at_fill, reconnects, full_lines;
	unsigned char *seen;
	long last = -1;
	bool drained_while_full;

	ck_assert(mnt3[0] != '\0');
	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	co.extra = cloud_persistent_extra(&cloud);
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, CLOUD_TOPIC, 1);
	ck_assert_ptr_nonnull(sub);
	fbh_sub_stop(sub);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);

	yaml = yaml_spool_on(mnt3);

	/* The backlog, paced so that the staging files never turn anything away. */
	start_edge(&edge, cloud.port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);
	for(size_t i = 0; i < BACKLOG_N; i++){
		int len = snprintf(payload, sizeof(payload), "c%zu;", i);
		while(len < 1024){
			payload[len] = (char)('a' + (i * 13 + (size_t)len) % 26);
			len++;
		}
		ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/c", payload, len, 1, false, NULL), 0);
		if((i + 1) % 500 == 0){
			ck_assert(fbh_pub_wait_all(pub, 120000));
			ck_assert(sys_wait_u64(sys, "spool/messages", i + 1, 60000));
		}
	}
	ck_assert(fbh_pub_wait_all(pub, 120000));
	ck_assert(sys_wait_u64(sys, "spool/disk_full", 0, 10000));

	/* The cloud returns and the backlog starts to drain; as soon as it does, the cloud broker
	 * is paused (SIGSTOP, well within the keepalive: the connection stays up), the disk fills,
	 * traffic starts, and the cloud goes on. */
	start_cloud(&cloud, &co);
	sub = fbh_sub_start(cloud.port2, &so, CLOUD_TOPIC, 1);
	ck_assert_ptr_nonnull(sub);
	ck_assert(fbh_sub_wait_count(sub, 1, 30000) >= 1);
	ck_assert_int_eq(kill(cloud.pid, SIGSTOP), 0);
	ck_assert(sys_wait(sys, "state", "connected", 3000));
	filler = fbh_strdupf("%s/filler", mnt3);
	fbh_broker_log_mark(&edge);
	fill_up(filler, 1u << 20);
	at_fill = fbh_sub_count(sub);
	for(size_t i = BACKLOG_N; i < n_pub; i++){
		int len = snprintf(payload, sizeof(payload), "c%zu;", i);
		while(len < 1024){
			payload[len] = (char)('a' + (i * 13 + (size_t)len) % 26);
			len++;
		}
		ck_assert_int_ge(fbh_pub_send(pub, "local/telemetry/c", payload, len, 1, false, NULL), 0);
		if(i == BACKLOG_N + 50){
			ck_assert_int_eq(kill(cloud.pid, SIGCONT), 0);
		}
		usleep(10000);
	}
	ck_assert(fbh_pub_wait_all(pub, 120000));
	acked = fbh_pub_acked(pub) - fbh_pub_count_failed(pub);
	fbh_pub_close(pub);
	ck_assert(sys_wait_u64(sys, "spool/disk_full", 1, 10000));
	fprintf(stderr, "connected: %" PRIu64 " received when the disk filled, %zu now\n", at_fill,
			fbh_sub_count(sub));
	ck_assert_uint_lt(at_fill, BACKLOG_N);

	/* Everything spooled drains while the disk is still full. */
	if(!sys_wait_u64(sys, "spool/messages", 0, 120000)){
		fbh_broker_dump_log(&edge);
		ck_abort_msg("the spool did not drain on the full disk");
	}
	drained_while_full = sys_u64(sys, "spool/disk_full") == 1;
	ck_assert_msg(drained_while_full, "space returned before the spool drained");
	sleep(2);
	reconnects = sys_u64(sys, "reconnects");
	dropped = (size_t)sys_u64(sys, "edge_to_cloud/dropped/full");
	full_lines = log_lines_with(&edge, "disk full (");
	ck_assert_uint_eq(full_lines, 1);
	ck_assert_uint_eq(log_lines_with(&edge, "reading \"out\" failed"), 0);
	ck_assert_uint_eq(log_lines_with(&edge, "No space left on device"), 1); /* the one line */

	/* Space returns: the deletes kept in memory are written. */
	ck_assert_int_eq(unlink(filler), 0);
	ck_assert(sys_wait_u64(sys, "spool/disk_full", 0, 30000));
	ck_assert(fbh_wait_log(&edge, "disk full over", 5000));
	ck_assert_uint_eq(log_lines_with(&edge, "disk full over"), 1);
	received = fbh_sub_count(sub);
	fbh_sub_stop(sys);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);

	/* A restart sends nothing again: every acknowledgement reached the disk. */
	start_edge(&edge, cloud.port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait(sys, "state", "connected", 30000));
	sleep(3);
	ck_assert_uint_eq(sys_u64(sys, "spool/messages"), 0);
	ck_assert_uint_eq(sys_u64(sys, "edge_to_cloud/forwarded"), 0);
	ck_assert_uint_eq(fbh_sub_count(sub), received);

	seen = calloc(n_pub, 1);
	ck_assert_ptr_nonnull(seen);
	for(size_t i = 0; i < received; i++){
		const struct fbh_msg *m = fbh_sub_msg(sub, i);
		char *end;
		long k;

		ck_assert_str_eq(m->topic, "edge/site-A/telemetry/c");
		ck_assert_int_eq(m->payloadlen, 1024);
		k = strtol((const char *)m->payload + 1, &end, 10);
		ck_assert_int_eq(*end, ';');
		ck_assert(k >= 0 && (size_t)k < n_pub);
		if(!seen[k]){
			seen[k] = 1;
			distinct++;
			ck_assert_msg(k > last, "message %ld arrived after %ld", k, last);
			last = k;
		}
	}
	dups = received - distinct;
	fprintf(stderr, "connected: %zu PUBACKed, %zu delivered, %zu dropped/full, %zu duplicates, "
			"%" PRIu64 " reconnects\n", acked, distinct, dropped, dups, reconnects);
	ck_assert_uint_eq(distinct + dropped, acked);
	ck_assert_uint_le(dups, 64 * reconnects);

	fbh_sub_stop(sub);
	fbh_sub_stop(sys);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	free(seen);
	free(filler);
	free(yaml);
	free((char *)co.extra);
}
END_TEST

/* ---- a large message on a full disk ---- */

/* Above a quarter of a staging file of the default spool.max_size: a file of its own. */
#define BIG_LEN (2u << 20)

/* The cloud connected, the tmpfs filled to the last byte, then a 2 MiB MQTT v5 QoS 1 message on
 * a matched topic: its own file cannot be written (ENOSPC). Asserted: PUBACK 0x87, dropped/error
 * 1 and dropped/full 0 (and rules/0/dropped 1), an ERR line with the topic and "No space left on
 * device". Space back, the same message again: accepted, and the cloud gets it exactly once, byte
 * for byte. Before: accepted (0x10), counted in dropped/full, nothing logged, gone: the channel's
 * -ENOSPC (max_size) and the disk's could not be told apart. */
START_TEST(test_large_message_on_a_full_disk_is_refused_as_an_error)
{
	struct fbh_broker cloud, edge;
	struct fbh_sub *sub, *sys;
	struct fbh_pub *pub;
	const struct fbh_msg *m;
	char *yaml, *filler, *big = malloc(BIG_LEN);

	ck_assert(mnt4[0] != '\0');
	ck_assert_ptr_nonnull(big);
	for(size_t i = 0; i < BIG_LEN; i++){
		big[i] = (char)('a' + (i * 7) % 26);
	}
	fbh_broker_init(&cloud, "cloud");
	fbh_broker_init(&edge, "edge");
	start_cloud(&cloud, NULL);
	sub = fbh_sub_start(cloud.port2, &cloud_tester, CLOUD_TOPIC, 1);
	ck_assert_ptr_nonnull(sub);
	yaml = yaml_spool_on(mnt4);
	start_edge(&edge, cloud.port, yaml, NULL);
	sys = sys_watch(&edge);
	ck_assert_ptr_nonnull(sys);
	ck_assert(sys_wait(sys, "state", "connected", 10000));
	pub = fbh_pub_connect(edge.port, NULL);
	ck_assert_ptr_nonnull(pub);

	/* Not a byte left. */
	filler = fbh_strdupf("%s/filler", mnt4);
	fill_up(filler, 0);
	{
		struct statvfs sv;
		ck_assert_int_eq(statvfs(mnt4, &sv), 0);
		ck_assert_uint_eq((uint64_t)sv.f_bavail * sv.f_frsize, 0);
	}
	ck_assert_int_eq(fbh_pub_send(pub, "local/telemetry/big", big, BIG_LEN, 1, false, NULL), 0);
	ck_assert(fbh_pub_wait_all(pub, 30000));
	ck_assert_int_eq(fbh_pub_reason(pub, 0), FBH_RC_NOT_AUTHORIZED);
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/dropped/error", 1, 5000));
	ck_assert(sys_wait_u64(sys, "rules/0/dropped", 1, 5000));
	ck_assert_uint_eq(sys_u64(sys, "edge_to_cloud/dropped/full"), 0);
	ck_assert(fbh_wait_log(&edge, "cannot spool a message on local/telemetry/big: No space left on device; "
			"refused and counted in edge_to_cloud/dropped/error", 5000));

	/* Space back: the publisher sends it again, and it goes through, once. */
	ck_assert_int_eq(unlink(filler), 0);
	ck_assert_int_eq(fbh_pub_send(pub, "local/telemetry/big", big, BIG_LEN, 1, false, NULL), 1);
	ck_assert(fbh_pub_wait_all(pub, 30000));
	ck_assert_int_lt(fbh_pub_reason(pub, 1), 0x80);
	ck_assert(wait_exactly(sub, 1, 30000, 1000));
	m = fbh_sub_msg(sub, 0);
	ck_assert_str_eq(m->topic, "edge/site-A/telemetry/big");
	ck_assert_int_eq(m->payloadlen, (int)BIG_LEN);
	ck_assert_int_eq(memcmp(m->payload, big, BIG_LEN), 0);
	ck_assert(sys_wait_u64(sys, "edge_to_cloud/forwarded", 1, 5000));
	ck_assert_uint_eq(sys_u64(sys, "edge_to_cloud/dropped/error"), 1);
	ck_assert_uint_eq(sys_u64(sys, "edge_to_cloud/dropped/full"), 0);

	fbh_pub_close(pub);
	fbh_sub_stop(sub);
	fbh_sub_stop(sys);
	ck_assert_int_eq(fbh_broker_stop(&edge), 0);
	ck_assert_int_eq(fbh_broker_stop(&cloud), 0);
	free(filler);
	free(yaml);
	free(big);
}
END_TEST

/* Mounts a tmpfs of SIZE on a new folder STEM-XXXXXX in TMPDIR, named in M (of PATH_MAX + 16
 * bytes; empty when it fails). Returns 0 or an errno. */
static int mount_one(char *m, const char *stem, const char *size)
{
	const char *tmp = getenv("TMPDIR");
	char opts[64];
	int e;

	snprintf(m, PATH_MAX + 16, "%s/%s-XXXXXX", tmp && tmp[0] ? tmp : "/tmp", stem);
	if(mkdtemp(m) == NULL){
		m[0] = '\0';
		return errno;
	}
	snprintf(opts, sizeof(opts), "size=%s,mode=0700", size);
	if(mount("tmpfs", m, "tmpfs", 0, opts) != 0){
		e = errno;
		rmdir(m);
		m[0] = '\0';
		return e;
	}
	return 0;
}

/* Mounts the tests' tmpfs file systems, here in the parent process so that they are unmounted
 * however the forked tests end. Returns 0, or prints why and returns 77. */
static int mount_tmpfs(void)
{
	const struct { char *m; const char *stem, *size; } fs[] = {
		{ mnt, "fb-diskfull", TMPFS_SIZE },
		{ mnt2, "fb-salvage", TMPFS2_SIZE },
		{ mnt3, "fb-connected", TMPFS_SIZE },
		{ mnt4, "fb-bigfile", TMPFS_SIZE },
	};

	for(size_t i = 0; i < sizeof(fs) / sizeof(fs[0]); i++){
		int e = mount_one(fs[i].m, fs[i].stem, fs[i].size);

		if(e){
			fprintf(stderr, "SKIP: this test mounts small tmpfs file systems on new folders, which "
					"needs root (CAP_SYS_ADMIN): %s: %s\n", fs[i].stem, strerror(e));
			unmount_tmpfs();
			return FBH_SKIP;
		}
	}
	return 0;
}

int main(void)
{
	Suite *s;
	TCase *tc;
	const char *secs = getenv("FB_DISKFULL_SECONDS");
	int rc;

	if(secs && atoi(secs) > 0){
		load_seconds = (unsigned)atoi(secs);
	}
	rc = mount_tmpfs();
	if(rc){
		return rc;
	}
	s = suite_create("diskfull");
	/* The probe's p99: alone (tag "alone", see meson.build); the other cases run beside other
	 * tests. */
	tc = fbh_tcase("diskfull");
	tcase_set_timeout(tc, 600);
	tcase_set_tags(tc, FBH_TAG_ALONE);
	tcase_add_test(tc, test_full_disk_is_a_state_and_nothing_acknowledged_is_lost);
	suite_add_tcase(s, tc);
	tc = fbh_tcase("connected");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_full_disk_while_connected_keeps_forwarding_and_acknowledging);
	suite_add_tcase(s, tc);
	tc = fbh_tcase("salvage");
	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, test_salvage_without_room_for_a_copy_reads_in_place);
	suite_add_tcase(s, tc);
	tc = fbh_tcase("bigfile");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_large_message_on_a_full_disk_is_refused_as_an_error);
	suite_add_tcase(s, tc);
	rc = fbh_run(s);
	unmount_tmpfs();
	return rc;
}
