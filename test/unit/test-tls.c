/* Unit tests of plugin/link/tls.c: the TLS context loads the CA, the client certificate chain and the
 * key from regular files, and refuses at once (never blocks on) a FIFO put in a file's place after
 * the configuration was checked. Certificates are made here with OpenSSL. */
#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
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

static Suite *tls_suite(void)
{
	Suite *s = suite_create("tls");
	TCase *tc = tcase_create("files");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_loads_ca_chain_and_key);
	tcase_add_test(tc, test_fifo_in_place_of_a_file_is_refused);
	tcase_add_test(tc, test_file_without_certificates_is_refused);
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
