/* Unit tests of plugin/link/tls.c: the TLS context loads the CA, the client certificate chain and the
 * key from regular files, and refuses at once (never blocks on) a FIFO put in a file's place after
 * the configuration was checked. Certificates are made here with OpenSSL. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tls.h"

static char dir[64];
static char path_ca[128], path_cert[128], path_key[128], path_fifo[128], path_junk[128];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

/* A self-signed certificate for CN and its key. */
static X509 *make_cert(const char *cn, EVP_PKEY **key)
{
	X509 *x = X509_new();
	X509_NAME *name;

	*key = EVP_EC_gen("P-256");
	ck_assert_ptr_nonnull(*key);
	ck_assert_ptr_nonnull(x);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, *key);
	name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, name);
	ck_assert_int_gt(X509_sign(x, *key, EVP_sha256()), 0);
	return x;
}

static void setup(void)
{
	EVP_PKEY *ca_key, *key;
	X509 *ca, *cert;
	FILE *f;

	snprintf(dir, sizeof(dir), "/tmp/fb-test-tls-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path_ca, sizeof(path_ca), "%s/ca.pem", dir);
	snprintf(path_cert, sizeof(path_cert), "%s/edge.crt", dir);
	snprintf(path_key, sizeof(path_key), "%s/edge.key", dir);
	snprintf(path_fifo, sizeof(path_fifo), "%s/fifo", dir);
	snprintf(path_junk, sizeof(path_junk), "%s/junk.pem", dir);
	ca = make_cert("test CA", &ca_key);
	cert = make_cert("edge", &key);
	ck_assert_ptr_nonnull(f = fopen(path_ca, "w"));
	PEM_write_X509(f, ca);
	fclose(f);
	/* The certificate, then one chain certificate. */
	ck_assert_ptr_nonnull(f = fopen(path_cert, "w"));
	PEM_write_X509(f, cert);
	PEM_write_X509(f, ca);
	fclose(f);
	ck_assert_ptr_nonnull(f = fopen(path_key, "w"));
	PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL);
	fclose(f);
	ck_assert_ptr_nonnull(f = fopen(path_junk, "w"));
	fputs("not a certificate\n", f);
	fclose(f);
	ck_assert_int_eq(mkfifo(path_fifo, 0600), 0);
	X509_free(ca);
	X509_free(cert);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(key);
}

static void teardown(void)
{
	nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static struct fb_config *config(const char *ca, const char *cert, const char *key)
{
	static struct fb_config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.cloud.tls.ca_file = (char *)ca;
	cfg.cloud.tls.cert_file = (char *)cert;
	cfg.cloud.tls.key_file = (char *)key;
	cfg.cloud.tls.min_version = 0x0304;
	cfg.cloud.tls.verify = true;
	return &cfg;
}

static struct fb_endpoint ep = { .url = "mqtts://localhost:8883", .host = "localhost", .port = 8883, .tls = true };

START_TEST(test_loads_ca_chain_and_key)
{
	char err[512] = "";
	SSL_CTX *ctx = fb_tls_ctx_new(config(path_ca, path_cert, path_key), &ep, err, sizeof(err));
	STACK_OF(X509) *chain = NULL;
	X509_NAME *subject;
	char cn[64] = "";

	ck_assert_msg(ctx != NULL, "%s", err);
	subject = X509_get_subject_name(SSL_CTX_get0_certificate(ctx));
	X509_NAME_get_text_by_NID(subject, NID_commonName, cn, sizeof(cn));
	ck_assert_str_eq(cn, "edge");
	ck_assert_int_eq(SSL_CTX_get0_chain_certs(ctx, &chain), 1);
	ck_assert_int_eq(sk_X509_num(chain), 1);
	ck_assert_int_eq(sk_X509_OBJECT_num(X509_STORE_get0_objects(SSL_CTX_get_cert_store(ctx))), 1);
	SSL_CTX_free(ctx);
}
END_TEST

/* A FIFO in place of any of the three files fails the connect attempt at once, saying why. */
START_TEST(test_fifo_in_place_of_a_file_is_refused)
{
	const char *files[3][3] = {
		{ path_fifo, path_cert, path_key },
		{ path_ca, path_fifo, path_key },
		{ path_ca, path_cert, path_fifo },
	};
	static const char *const keys[3] = { "tls.ca_file", "tls.cert_file", "tls.key_file" };
	char err[512], expected[512];
	SSL_CTX *ctx;

	for(int i = 0; i < 3; i++){
		err[0] = '\0';
		ctx = fb_tls_ctx_new(config(files[i][0], files[i][1], files[i][2]), &ep, err, sizeof(err));
		ck_assert_ptr_null(ctx);
		snprintf(expected, sizeof(expected), "cannot load %s %s: not a regular file", keys[i], path_fifo);
		ck_assert_str_eq(err, expected);
	}
}
END_TEST

START_TEST(test_file_without_certificates_is_refused)
{
	char err[512] = "", expected[512];
	SSL_CTX *ctx = fb_tls_ctx_new(config(path_junk, NULL, NULL), &ep, err, sizeof(err));

	ck_assert_ptr_null(ctx);
	snprintf(expected, sizeof(expected), "cannot load tls.ca_file %s: no certificate in it", path_junk);
	ck_assert_str_eq(err, expected);
	ctx = fb_tls_ctx_new(config(path_ca, path_junk, path_key), &ep, err, sizeof(err));
	ck_assert_ptr_null(ctx);
	snprintf(expected, sizeof(expected), "cannot load tls.cert_file %s", path_junk);
	ck_assert_msg(strncmp(err, expected, strlen(expected)) == 0, "%s", err);
	ctx = fb_tls_ctx_new(config(path_ca, path_cert, path_junk), &ep, err, sizeof(err));
	ck_assert_ptr_null(ctx);
	snprintf(expected, sizeof(expected), "cannot load tls.key_file %s", path_junk);
	ck_assert_msg(strncmp(err, expected, strlen(expected)) == 0, "%s", err);
}
END_TEST

/* Write coalescing (fb_tls_coalesce()), over a real TLS 1.3 connection on a socket pair: a
 * client SSL (the link's side) and a server SSL that reads what it sent. */
struct pair {
	int fd[2];              /* [0] client, [1] server; both non-blocking */
	SSL_CTX *cctx, *sctx;
	SSL *c, *s;
};

static void pair_open(struct pair *p, int client_sndbuf)
{
	EVP_PKEY *key;
	X509 *cert = make_cert("cloud", &key);
	int i, rc, rs, done_c = 0, done_s = 0;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, p->fd), 0);
	if(client_sndbuf > 0){
		ck_assert_int_eq(setsockopt(p->fd[0], SOL_SOCKET, SO_SNDBUF, &client_sndbuf, sizeof(client_sndbuf)), 0);
	}
	for(i = 0; i < 2; i++){
		ck_assert_int_eq(fcntl(p->fd[i], F_SETFL, O_NONBLOCK), 0);
	}
	ck_assert_ptr_nonnull(p->cctx = SSL_CTX_new(TLS_client_method()));
	ck_assert_ptr_nonnull(p->sctx = SSL_CTX_new(TLS_server_method()));
	SSL_CTX_set_min_proto_version(p->cctx, TLS1_3_VERSION);
	ck_assert_int_eq(SSL_CTX_use_certificate(p->sctx, cert), 1);
	ck_assert_int_eq(SSL_CTX_use_PrivateKey(p->sctx, key), 1);
	X509_free(cert);
	EVP_PKEY_free(key);
	ck_assert_ptr_nonnull(p->c = SSL_new(p->cctx));
	ck_assert_ptr_nonnull(p->s = SSL_new(p->sctx));
	SSL_set_fd(p->c, p->fd[0]);
	SSL_set_fd(p->s, p->fd[1]);
	for(i = 0; i < 1000 && !(done_c && done_s); i++){
		if(!done_c){
			rc = SSL_connect(p->c);
			done_c = rc == 1;
			ck_assert(done_c || SSL_get_error(p->c, rc) == SSL_ERROR_WANT_READ);
		}
		if(!done_s){
			rs = SSL_accept(p->s);
			done_s = rs == 1;
			ck_assert(done_s || SSL_get_error(p->s, rs) == SSL_ERROR_WANT_READ);
		}
	}
	ck_assert(done_c && done_s);
	ck_assert_int_eq(SSL_version(p->c), TLS1_3_VERSION);
	/* The server's session tickets: read by the client now, so they do not count as data later. */
	{
		char b;
		ck_assert_int_le(SSL_read(p->c, &b, 1), 0);
	}
}

static void pair_close(struct pair *p)
{
	SSL_free(p->c);
	SSL_free(p->s);
	SSL_CTX_free(p->cctx);
	SSL_CTX_free(p->sctx);
	close(p->fd[0]);
	close(p->fd[1]);
}

/* Bytes waiting to be read on FD. */
static int readable(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
}

/* Reads everything the server can decrypt now into BUF at *GOT (at most CAP in all). */
static void server_read(struct pair *p, unsigned char *buf, size_t cap, size_t *got)
{
	int n;

	while(*got < cap && (n = SSL_read(p->s, buf + *got, (int)(cap - *got))) > 0){
		*got += (size_t)n;
	}
}

/* Bytes that have arrived at FD and wait to be read. */
static int queued(int fd)
{
	int n = -1;

	ck_assert_int_eq(ioctl(fd, FIONREAD, &n), 0);
	return n;
}

START_TEST(test_coalesce_gathers_a_turn_into_one_record)
{
	struct pair p;
	BIO *wbuf;
	unsigned char msg[100], got[1000];
	size_t n = 0;
	int i;

	pair_open(&p, 0);
	ck_assert_ptr_nonnull(wbuf = fb_tls_coalesce(p.c, 4096));
	ck_assert_ptr_eq(SSL_get_wbio(p.c), wbuf);
	for(i = 0; i < 10; i++){
		memset(msg, 'a' + i, sizeof(msg));
		ck_assert_int_eq(SSL_write(p.c, msg, sizeof(msg)), (int)sizeof(msg));
	}
	/* Ten writes gathered, not encrypted, nothing on the socket. */
	ck_assert_uint_eq(fb_tls_pending(wbuf), 10 * sizeof(msg));
	ck_assert(!readable(p.fd[1]));
	ck_assert_int_eq(fb_tls_flush(wbuf), 0);
	ck_assert_uint_eq(fb_tls_pending(wbuf), 0);
	/* One record: 1,000 bytes and 22 of TLS 1.3 framing and tag (ten records were 1,220). */
	ck_assert_int_eq(queued(p.fd[1]), 1000 + 22);
	server_read(&p, got, sizeof(got), &n);
	ck_assert_uint_eq(n, 1000);
	for(i = 0; i < 1000; i++){
		ck_assert_int_eq(got[i], 'a' + i / 100);
	}
	/* Nothing held: flushing again writes nothing. */
	ck_assert_int_eq(fb_tls_flush(wbuf), 0);
	ck_assert(!readable(p.fd[1]));
	/* The server's SSL does not gather: its SSL_write() is OpenSSL's, and the client reads it. */
	ck_assert_int_eq(SSL_write(p.s, "pong", 4), 4);
	{
		char b[8];
		ck_assert_int_eq(SSL_read(p.c, b, sizeof(b)), 4);
		ck_assert_mem_eq(b, "pong", 4);
	}
	ck_assert_int_eq(SSL_write(p.c, "z", -1), -1);
	/* fb_tls_direct() writes what was gathered ("x", a record of its own); after it a write
	 * goes to the socket at once ("y", another). */
	ck_assert_int_eq(SSL_write(p.c, "x", 1), 1);
	ck_assert(!readable(p.fd[1]));
	fb_tls_direct(p.c, wbuf);
	ck_assert_ptr_eq(SSL_get_wbio(p.c), SSL_get_rbio(p.c));
	ck_assert_int_eq(queued(p.fd[1]), 1 + 22);
	ck_assert_int_eq(SSL_write(p.c, "y", 1), 1);
	ck_assert_int_eq(queued(p.fd[1]), 2 * (1 + 22));
	n = 0;
	server_read(&p, got, sizeof(got), &n);
	ck_assert_uint_eq(n, 2);
	ck_assert_mem_eq(got, "xy", 2);
	pair_close(&p);
}
END_TEST

START_TEST(test_coalesce_full_socket_asks_to_retry_and_loses_nothing)
{
	/* A small socket buffer and a coalescing buffer of 8 KiB. First 64 KiB are gathered without
	 * the server reading: the flush encrypts until the socket takes no more and asks to retry.
	 * Then more is gathered behind what waits (the gathering buffer grows and may move while
	 * libssl holds a record it could not write), and the server reads while the client gathers
	 * and flushes: everything arrives, once and in order. */
	enum { TOTAL = 1 << 20, FIRST = 64 << 10 };
	struct pair p;
	BIO *wbuf;
	unsigned char *sent = malloc(TOTAL), *got = malloc(TOTAL);
	size_t off = 0, n = 0, chunk;
	int i, rounds;

	ck_assert_ptr_nonnull(sent);
	ck_assert_ptr_nonnull(got);
	for(i = 0; i < TOTAL; i++){
		sent[i] = (unsigned char)(i * 7 + i / 251);
	}
	pair_open(&p, 4096);
	ck_assert_ptr_nonnull(wbuf = fb_tls_coalesce(p.c, 8192));
	for(; off < FIRST; off += 300){
		ck_assert_int_eq(SSL_write(p.c, sent + off, 300), 300);
	}
	ck_assert_uint_eq(fb_tls_pending(wbuf), off);
	ck_assert_int_eq(fb_tls_flush(wbuf), 1);
	ck_assert_uint_gt(fb_tls_pending(wbuf), 0);
	/* More behind it, before the server has read anything. */
	for(i = 0; i < 200; i++, off += 300){
		ck_assert_int_eq(SSL_write(p.c, sent + off, 300), 300);
	}
	ck_assert_int_eq(fb_tls_flush(wbuf), 1);
	for(rounds = 0; (off < TOTAL || fb_tls_pending(wbuf) > 0) && rounds < 1000000; rounds++){
		server_read(&p, got, TOTAL, &n);
		if(off < TOTAL){
			chunk = rounds % 7 == 6 ? 12000 : 300; /* now and then more than the buffer */
			chunk = TOTAL - off < chunk ? TOTAL - off : chunk;
			ck_assert_int_eq(SSL_write(p.c, sent + off, (int)chunk), (int)chunk);
			off += chunk;
		}
		ck_assert_int_ge(fb_tls_flush(wbuf), 0);
	}
	while(n < TOTAL && rounds++ < 1000000){
		server_read(&p, got, TOTAL, &n);
	}
	ck_assert_uint_eq(off, TOTAL);
	ck_assert_uint_eq(n, TOTAL);
	ck_assert_mem_eq(got, sent, TOTAL);
	pair_close(&p);
	free(sent);
	free(got);
}
END_TEST

START_TEST(test_coalesce_refuses_before_the_handshake)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl;
	int fd[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, fd), 0);
	ck_assert_ptr_nonnull(ssl = SSL_new(ctx));
	SSL_set_fd(ssl, fd[0]);
	ck_assert_ptr_null(fb_tls_coalesce(ssl, 4096));
	ck_assert_ptr_null(fb_tls_coalesce(NULL, 4096));
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(fd[0]);
	close(fd[1]);
}
END_TEST

static Suite *tls_suite(void)
{
	Suite *s = suite_create("tls");
	TCase *tc = tcase_create("files");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_loads_ca_chain_and_key);
	tcase_add_test(tc, test_fifo_in_place_of_a_file_is_refused);
	tcase_add_test(tc, test_file_without_certificates_is_refused);
	suite_add_tcase(s, tc);
	tc = tcase_create("coalesce");
	tcase_add_test(tc, test_coalesce_gathers_a_turn_into_one_record);
	tcase_add_test(tc, test_coalesce_full_socket_asks_to_retry_and_loses_nothing);
	tcase_add_test(tc, test_coalesce_refuses_before_the_handshake);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(tls_suite());
	int failed;

	srunner_run_all(sr, CK_ENV);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
