/* Unit tests of plugin/link/client.c: the cloud connection's libmosquitto client has no wake-up
 * socket pair, so queueing a packet makes no system call. */
#include <check.h>
#include <dirent.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mosquitto.h>

#include "client.h"

/* File descriptors open in this process. */
static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while((e = readdir(d)) != NULL){
		n += e->d_name[0] != '.';
	}
	closedir(d);
	return n - 1; /* the directory's own */
}

/* write(2)-family calls this process has made (/proc/self/io, syscw), or -1. No ck_assert() in
 * here: Check reports each one through a pipe, a write of its own. */
static long write_calls(void)
{
	FILE *f = fopen("/proc/self/io", "r");
	char line[128];
	long v = -1;

	while(f && fgets(line, sizeof(line), f)){
		if(sscanf(line, "syscw: %ld", &v) == 1){
			break;
		}
	}
	if(f){
		fclose(f);
	}
	return v;
}

START_TEST(the_client_opens_no_socket_pair)
{
	struct mosquitto *plain, *ours;
	int n0 = open_fds();

	ck_assert_ptr_nonnull(plain = mosquitto_new("plain", true, NULL));
	ck_assert_int_eq(open_fds(), n0 + 2); /* libmosquitto's own pair: the count sees it */
	ck_assert_ptr_nonnull(ours = fb_client_new("ours", true, NULL));
	ck_assert_int_eq(open_fds(), n0 + 2);
	mosquitto_destroy(ours);
	mosquitto_destroy(plain);
	ck_assert_int_eq(open_fds(), n0);
	/* Invalid arguments still fail as in mosquitto_new(). */
	ck_assert_ptr_null(fb_client_new(NULL, false, NULL));
}
END_TEST

START_TEST(socketpair_works_outside_the_client)
{
	struct mosquitto *mosq;
	int sv[2];
	char c = 0;

	/* Before and after a client is made, on this thread: the system call, a working pair. */
	for(int i = 0; i < 2; i++){
		ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
		ck_assert_int_eq(write(sv[1], "k", 1), 1);
		ck_assert_int_eq(read(sv[0], &c, 1), 1);
		ck_assert_int_eq(c, 'k');
		close(sv[0]);
		close(sv[1]);
		if(i == 0){
			ck_assert_ptr_nonnull(mosq = fb_client_new("x", true, NULL));
			mosquitto_destroy(mosq);
		}
	}
}
END_TEST

/* Queues 100 QoS 0 PUBLISH packets on a client connected (threaded mode, as the link runs it, so
 * nothing is written to the socket until the worker says so) to a listener that never accepts.
 * Returns the write calls they made. */
static long writes_for_100_publishes(struct mosquitto *mosq)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int ls = socket(AF_INET, SOCK_STREAM, 0), failed = 0;
	long w0, w1;

	ck_assert_int_ge(ls, 0);
	ck_assert_int_eq(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(ls, 4), 0);
	ck_assert_int_eq(getsockname(ls, (struct sockaddr *)&a, &alen), 0);
	mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
	mosquitto_threaded_set(mosq, true);
	ck_assert_int_eq(mosquitto_connect(mosq, "127.0.0.1", ntohs(a.sin_port), 60), MOSQ_ERR_SUCCESS);
	/* No ck_assert() in between (see write_calls()). */
	w0 = write_calls();
	for(int i = 0; i < 100; i++){
		failed += mosquitto_publish_v5(mosq, NULL, "t/x", 3, "abc", 0, false, NULL) != MOSQ_ERR_SUCCESS;
	}
	w1 = write_calls();
	ck_assert_int_eq(failed, 0);
	ck_assert_int_ge(w0, 0);
	ck_assert_int_ge(w1, 0);
	mosquitto_destroy(mosq);
	close(ls);
	return w1 - w0;
}

START_TEST(queueing_a_packet_makes_no_system_call)
{
	ck_assert_int_eq(writes_for_100_publishes(mosquitto_new("plain", true, NULL)), 100);
	ck_assert_int_eq(writes_for_100_publishes(fb_client_new("ours", true, NULL)), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("client");
	TCase *tc = tcase_create("basic");
	SRunner *sr;
	int failed;

	mosquitto_lib_init();
	tcase_add_test(tc, the_client_opens_no_socket_pair);
	tcase_add_test(tc, socketpair_works_outside_the_client);
	tcase_add_test(tc, queueing_a_packet_makes_no_system_call);
	suite_add_tcase(s, tc);

	sr = srunner_create(s);
	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	mosquitto_lib_cleanup();
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
