/* flowmq-bridge: the cloud connection's TLS context (link process, worker thread); see tls.h. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

/* Certificate and key files larger than this are refused. */
#define TLS_FILE_MAX (4u << 20)

#include "tls.h"

/* Per-context state, stored as the SSL_CTX's ex_data. */
struct tls_state {
	char server_name[256];   /* SNI to send */
	char verify_error[256];  /* why the last verification failed */
};

static int state_index = -1;
static pthread_once_t state_once = PTHREAD_ONCE_INIT;

static void state_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
	(void)parent; (void)ad; (void)idx; (void)argl; (void)argp;
	OPENSSL_free(ptr);
}

static void state_index_init(void)
{
	state_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, state_free);
}

static struct tls_state *state_of(SSL_CTX *ctx)
{
	return state_index < 0 ? NULL : SSL_CTX_get_ex_data(ctx, state_index);
}

static int verify_cb(int ok, X509_STORE_CTX *store)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct tls_state *st = ssl ? state_of(SSL_get_SSL_CTX(ssl)) : NULL;

	if(!ok && st && st->verify_error[0] == '\0'){
		int e = X509_STORE_CTX_get_error(store);
		snprintf(st->verify_error, sizeof(st->verify_error), "certificate verify failed: %s",
				X509_verify_cert_error_string(e));
	}
	return ok;
}

/* libmosquitto sets SNI to the host it connects to, which is the numeric address session.c looked
 * up: the configured name (tls.server_name, else the endpoint's host) replaces it just before the
 * ClientHello is written. */
static void info_cb(const SSL *ssl, int where, int ret)
{
	struct tls_state *st;
	(void)ret;

	if(!(where & SSL_CB_HANDSHAKE_START)){
		return;
	}
	st = state_of(SSL_get_SSL_CTX(ssl));
	if(st){
		st->verify_error[0] = '\0';
		if(st->server_name[0]){
			SSL_set_tlsext_host_name((SSL *)ssl, st->server_name);
		}
	}
}

static void set_err(char *err, size_t errlen, const char *what, const char *file)
{
	unsigned long e = ERR_get_error();
	char reason[200] = "";

	if(e){
		ERR_error_string_n(e, reason, sizeof(reason));
	}
	ERR_clear_error();
	snprintf(err, errlen, "%s%s%s%s%s", what, file ? " " : "", file ? file : "", e ? ": " : "", reason);
}

/* Reads FILE into a memory BIO (caller frees with BIO_free()), or returns NULL with the reason in
 * ERR. The files are read here, not by OpenSSL: opened with O_NONBLOCK and checked with fstat() on
 * the descriptor itself, so that a FIFO (or a device) put in a file's place after the configuration
 * was checked is refused at once instead of hanging the worker. */
static BIO *read_regular(const char *what, const char *file, char *err, size_t errlen)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	ssize_t r;
	BIO *bio = NULL;
	int fd;

	fd = open(file, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if(fd < 0){
		snprintf(err, errlen, "cannot load %s %s: %s", what, file, strerror(errno));
		return NULL;
	}
	if(fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)){
		snprintf(err, errlen, "cannot load %s %s: not a regular file", what, file);
		goto out;
	}
	if(st.st_size > TLS_FILE_MAX){
		snprintf(err, errlen, "cannot load %s %s: larger than %u bytes", what, file, TLS_FILE_MAX);
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if(buf == NULL){
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	while(len < (size_t)st.st_size && (r = read(fd, buf + len, (size_t)st.st_size - len)) != 0){
		if(r < 0){
			if(errno == EINTR){
				continue;
			}
			snprintf(err, errlen, "cannot load %s %s: %s", what, file, strerror(errno));
			goto out;
		}
		len += (size_t)r;
	}
	bio = BIO_new(BIO_s_mem());
	if(bio == NULL || (len && BIO_write(bio, buf, (int)len) != (int)len)){
		BIO_free(bio);
		bio = NULL;
		set_err(err, errlen, "cannot load", file);
	}
out:
	free(buf);
	close(fd);
	return bio;
}

/* No passphrase prompt: an encrypted key fails to load instead of reading a terminal. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf; (void)size; (void)rwflag; (void)u;
	return 0;
}

/* Every certificate (and CRL) of the PEM file FILE into CTX's trust store. Returns 0 or -1 with
 * the reason in ERR. */
static int load_ca(SSL_CTX *ctx, const char *file, char *err, size_t errlen)
{
	BIO *bio = read_regular("tls.ca_file", file, err, errlen);
	STACK_OF(X509_INFO) *infos;
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	int n = 0, rc = 0;

	if(bio == NULL){
		return -1;
	}
	infos = PEM_X509_INFO_read_bio(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	if(infos == NULL){
		set_err(err, errlen, "cannot load tls.ca_file", file);
		return -1;
	}
	for(int i = 0; i < sk_X509_INFO_num(infos) && rc == 0; i++){
		X509_INFO *xi = sk_X509_INFO_value(infos, i);

		if(xi->x509){
			rc = X509_STORE_add_cert(store, xi->x509) == 1 ? 0 : -1;
			n++;
		}
		if(rc == 0 && xi->crl){
			rc = X509_STORE_add_crl(store, xi->crl) == 1 ? 0 : -1;
			n++;
		}
	}
	sk_X509_INFO_pop_free(infos, X509_INFO_free);
	if(rc == 0 && n == 0){
		snprintf(err, errlen, "cannot load tls.ca_file %s: no certificate in it", file);
		return -1;
	}
	if(rc != 0){
		set_err(err, errlen, "cannot load tls.ca_file", file);
	}
	return rc;
}

/* The client certificate (the first in FILE) and its chain (the rest), as
 * SSL_CTX_use_certificate_chain_file() would. Returns 0 or -1 with the reason in ERR. */
static int load_cert_chain(SSL_CTX *ctx, const char *file, char *err, size_t errlen)
{
	BIO *bio = read_regular("tls.cert_file", file, err, errlen);
	X509 *x;
	unsigned long e;
	int rc = -1;

	if(bio == NULL){
		return -1;
	}
	x = PEM_read_bio_X509_AUX(bio, NULL, no_passphrase, NULL);
	if(x == NULL || SSL_CTX_use_certificate(ctx, x) != 1 || SSL_CTX_clear_chain_certs(ctx) != 1){
		goto out;
	}
	for(X509 *ca; (ca = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL)) != NULL;){
		if(SSL_CTX_add0_chain_cert(ctx, ca) != 1){
			X509_free(ca);
			goto out;
		}
	}
	/* The loop ends at the end of the file ("no start line") or at damage. */
	e = ERR_peek_last_error();
	if(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE){
		ERR_clear_error();
		rc = 0;
	}
out:
	if(rc != 0){
		set_err(err, errlen, "cannot load tls.cert_file", file);
	}
	X509_free(x);
	BIO_free(bio);
	return rc;
}

static int load_key(SSL_CTX *ctx, const char *file, char *err, size_t errlen)
{
	BIO *bio = read_regular("tls.key_file", file, err, errlen);
	EVP_PKEY *key;
	int rc = -1;

	if(bio == NULL){
		return -1;
	}
	key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	if(key && SSL_CTX_use_PrivateKey(ctx, key) == 1){
		rc = 0;
	}else{
		set_err(err, errlen, "cannot load tls.key_file", file);
	}
	EVP_PKEY_free(key);
	BIO_free(bio);
	return rc;
}

SSL_CTX *fb_tls_ctx_new(const struct fb_config *cfg, const struct fb_endpoint *ep, char *err, size_t errlen)
{
	const char *name = cfg->cloud.tls.server_name ? cfg->cloud.tls.server_name : ep->host;
	struct tls_state *st;
	SSL_CTX *ctx;

	pthread_once(&state_once, state_index_init);
	ctx = SSL_CTX_new(TLS_client_method());
	if(ctx == NULL || state_index < 0){
		set_err(err, errlen, "cannot create TLS context", NULL);
		SSL_CTX_free(ctx);
		return NULL;
	}
	st = OPENSSL_zalloc(sizeof(*st));
	if(st == NULL || !SSL_CTX_set_ex_data(ctx, state_index, st)){
		OPENSSL_free(st);
		SSL_CTX_free(ctx);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	snprintf(st->server_name, sizeof(st->server_name), "%s", name);

	if(!SSL_CTX_set_min_proto_version(ctx, cfg->cloud.tls.min_version)){
		set_err(err, errlen, "cannot set the minimum TLS version", NULL);
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	/* One connection that is busy when it matters: keep the record buffers instead of freeing
	 * and allocating 16 KiB at every record, and read every record that has arrived at once
	 * (session.c's read_all() processes them). */
	SSL_CTX_set_read_ahead(ctx, 1);

	if(cfg->cloud.tls.ca_file){
		if(load_ca(ctx, cfg->cloud.tls.ca_file, err, errlen) != 0){
			goto fail;
		}
	}else if(SSL_CTX_set_default_verify_paths(ctx) != 1){
		set_err(err, errlen, "cannot load the system trust store", NULL);
		goto fail;
	}
	if(cfg->cloud.tls.cert_file){
		if(load_cert_chain(ctx, cfg->cloud.tls.cert_file, err, errlen) != 0
				|| load_key(ctx, cfg->cloud.tls.key_file, err, errlen) != 0){
			goto fail;
		}
		if(SSL_CTX_check_private_key(ctx) != 1){
			set_err(err, errlen, "tls.key_file does not match tls.cert_file", cfg->cloud.tls.key_file);
			goto fail;
		}
	}
	if(cfg->cloud.tls.verify){
		X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
		int ok;

		X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if(X509_VERIFY_PARAM_set1_ip_asc(param, name) == 1){
			ok = 1; /* an IP address: checked against the certificate's IP SANs */
		}else{
			ok = X509_VERIFY_PARAM_set1_host(param, name, 0);
		}
		if(ok != 1){
			set_err(err, errlen, "cannot set the verification name", name);
			goto fail;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
	}else{
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	if(cfg->cloud.tls.alpn){
		size_t n = strlen(cfg->cloud.tls.alpn);
		unsigned char wire[256];

		if(n == 0 || n > 255){
			snprintf(err, errlen, "tls.alpn must be 1 to 255 bytes");
			goto fail;
		}
		wire[0] = (unsigned char)n;
		memcpy(wire + 1, cfg->cloud.tls.alpn, n);
		if(SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)n + 1) != 0){
			set_err(err, errlen, "cannot set tls.alpn", NULL);
			goto fail;
		}
	}
	SSL_CTX_set_info_callback(ctx, info_cb);
	return ctx;

fail:
	SSL_CTX_free(ctx);
	return NULL;
}

const char *fb_tls_verify_error(SSL_CTX *ctx)
{
	struct tls_state *st = ctx ? state_of(ctx) : NULL;

	return st ? st->verify_error : "";
}

/* The coalescing BIO: a filter in front of the socket BIO that keeps what is written in one
 * buffer until BIO_flush(). OpenSSL's own BIO_f_buffer() does the same, but it passes every
 * control query it does not know on to the socket BIO, and libssl asks the write BIO whether it
 * is a kernel TLS socket about nine times per record; this one answers that itself. */
struct coalesce {
	SSL *ssl;             /* the connection whose write BIO this is */
	bool gather;          /* SSL_write() on SSL gathers into plain (below) */
	unsigned char *plain; /* what SSL_write() was given this turn, not yet encrypted */
	size_t plain_off;     /* bytes of plain already encrypted */
	size_t plain_len;
	size_t plain_cap;
	size_t off;           /* bytes of buf already written to the socket */
	size_t len;           /* bytes held, from the start of buf */
	size_t cap;
	unsigned char buf[];
};

static BIO_METHOD *coalesce_method;
static int coalesce_type;
static pthread_once_t coalesce_once = PTHREAD_ONCE_INIT;

/* Writes what C holds to the next BIO. 1: all of it; 0: the socket takes no more now (B's retry
 * flags say so); -1: the connection failed. */
static int coalesce_drain(BIO *b, struct coalesce *c)
{
	BIO *next = BIO_next(b);

	while(c->off < c->len){
		size_t left = c->len - c->off;
		int n = BIO_write(next, c->buf + c->off, left > INT_MAX ? INT_MAX : (int)left);

		if(n <= 0){
			BIO_copy_next_retry(b);
			return BIO_should_retry(b) ? 0 : -1;
		}
		c->off += (size_t)n;
	}
	c->off = c->len = 0;
	return 1;
}

static int coalesce_write(BIO *b, const char *data, int n)
{
	struct coalesce *c = BIO_get_data(b);
	int r;

	BIO_clear_retry_flags(b);
	if(c == NULL || BIO_next(b) == NULL || n < 0){
		return -1;
	}
	if((size_t)n > c->cap - c->len){
		if((r = coalesce_drain(b, c)) <= 0){
			return -1;
		}
		if((size_t)n > c->cap){ /* larger than the whole buffer: straight through */
			r = BIO_write(BIO_next(b), data, n);
			BIO_copy_next_retry(b);
			return r;
		}
	}
	memcpy(c->buf + c->len, data, (size_t)n);
	c->len += (size_t)n;
	return n;
}

static long coalesce_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct coalesce *c;
	BIO *next;

#ifdef BIO_CTRL_GET_KTLS_SEND
	/* libssl asks this about nine times per record: answered first, and without looking further
	 * (the records go through our buffer, never kernel TLS). */
	if(cmd == BIO_CTRL_GET_KTLS_SEND){
		return 0;
	}
#endif
	c = BIO_get_data(b);
	next = BIO_next(b);
	switch(cmd){
	case BIO_CTRL_WPENDING:
		return c ? (long)(c->len - c->off) : 0;
	case BIO_CTRL_FLUSH:
		BIO_clear_retry_flags(b);
		if(c == NULL || next == NULL || coalesce_drain(b, c) <= 0){
			return 0;
		}
		return BIO_flush(next);
	case BIO_CTRL_PUSH:
	case BIO_CTRL_POP:
	case BIO_CTRL_DUP:
		return 0;
	default:
		return next ? BIO_ctrl(next, cmd, num, ptr) : 0;
	}
}

static int coalesce_destroy(BIO *b)
{
	struct coalesce *c = BIO_get_data(b);

	if(c){
		free(c->plain);
	}
	free(c);
	BIO_set_data(b, NULL);
	BIO_set_init(b, 0);
	return 1;
}

static void coalesce_method_init(void)
{
	BIO_METHOD *m;

	coalesce_type = BIO_get_new_index() | BIO_TYPE_FILTER;
	m = BIO_meth_new(coalesce_type, "flowmq write coalescing");

	if(m && (!BIO_meth_set_write(m, coalesce_write) || !BIO_meth_set_ctrl(m, coalesce_ctrl)
			|| !BIO_meth_set_destroy(m, coalesce_destroy))){
		BIO_meth_free(m);
		m = NULL;
	}
	coalesce_method = m;
}

BIO *fb_tls_coalesce(SSL *ssl, int size)
{
	BIO *sock = ssl ? SSL_get_wbio(ssl) : NULL, *buf;
	struct coalesce *c;

	if(sock == NULL || size <= 0 || !SSL_is_init_finished(ssl) || BIO_method_type(sock) != BIO_TYPE_SOCKET){
		return NULL;
	}
	pthread_once(&coalesce_once, coalesce_method_init);
	if(coalesce_method == NULL || (buf = BIO_new(coalesce_method)) == NULL){
		return NULL;
	}
	c = malloc(sizeof(*c) + (size_t)size);
	if(c == NULL || !BIO_up_ref(sock)){
		free(c);
		BIO_free(buf);
		return NULL;
	}
	*c = (struct coalesce){ .ssl = ssl, .gather = true, .cap = (size_t)size };
	BIO_set_data(buf, c);
	BIO_set_init(buf, 1);
	BIO_push(buf, sock);
	/* The SSL's reference to the old write BIO goes; the socket BIO stays its read BIO and the
	 * end of this chain. */
	SSL_set0_wbio(ssl, buf);
	/* plain_drain() may encrypt part of what it hands over, and hands over the rest (with more
	 * behind it, from a buffer that may have moved) after a retry. */
	SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	return buf;
}

/* The coalescing of SSL while it gathers, or NULL. */
static struct coalesce *gathering(const SSL *ssl)
{
	BIO *b = ssl ? SSL_get_wbio(ssl) : NULL;
	struct coalesce *c;

	if(b == NULL || coalesce_type == 0 || BIO_method_type(b) != coalesce_type){
		return NULL;
	}
	c = BIO_get_data(b);
	return c && c->gather ? c : NULL;
}

/* Encrypts what C gathered, in records of up to 16 KiB, into the coalescing buffer (and the
 * socket, when the buffer fills). 1: all of it; 0: the socket takes no more now; -1: the
 * connection failed. */
static int plain_drain(struct coalesce *c)
{
	while(c->plain_off < c->plain_len){
		size_t w = 0;

		ERR_clear_error();
		if(SSL_write_ex(c->ssl, c->plain + c->plain_off, c->plain_len - c->plain_off, &w) != 1){
			int e = SSL_get_error(c->ssl, 0);
			return e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? 0 : -1;
		}
		c->plain_off += w;
	}
	c->plain_off = c->plain_len = 0;
	return 1;
}

/* Gathering: libmosquitto hands every packet to SSL_write() on its own, and each call makes one
 * TLS record: about 10,000 instructions of libssl and libcrypto per PUBLISH of 200 bytes on the
 * edge, and as many again in the cloud to open it. This definition in the flowmq-link program
 * comes first in the dynamic linker's search, so libmosquitto's calls arrive here: on a
 * connection that gathers, the bytes are copied into the turn's plaintext buffer and count as
 * written; fb_tls_flush() encrypts them together at the end of the turn. Any other SSL (and every
 * SSL in a program that does not link this file) goes to OpenSSL's SSL_write_ex(), with
 * SSL_write()'s results: the bytes written, or -1 with the reason for SSL_get_error(). */
__attribute__((visibility("default"))) int SSL_write(SSL *ssl, const void *buf, int num)
{
	struct coalesce *c = gathering(ssl);
	size_t w = 0;

	if(num < 0){
		return -1;
	}
	if(c && num > 0){
		if((size_t)num > c->plain_cap - c->plain_len){
			size_t cap = c->plain_cap ? c->plain_cap : 16384;
			unsigned char *p;

			while(cap - c->plain_len < (size_t)num){
				cap *= 2;
			}
			if((p = realloc(c->plain, cap)) == NULL){
				errno = ENOMEM;
				return -1;
			}
			c->plain = p;
			c->plain_cap = cap;
		}
		memcpy(c->plain + c->plain_len, buf, (size_t)num);
		c->plain_len += (size_t)num;
		return num;
	}
	return SSL_write_ex(ssl, buf, (size_t)num, &w) == 1 ? (int)w : -1;
}

int fb_tls_flush(BIO *bio)
{
	struct coalesce *c = bio ? BIO_get_data(bio) : NULL;
	int r;

	if(c && c->plain_off < c->plain_len && (r = plain_drain(c)) <= 0){
		return r < 0 ? -1 : 1;
	}
	if(BIO_wpending(bio) == 0){
		return 0;
	}
	if(BIO_flush(bio) == 1){
		return 0;
	}
	return BIO_should_retry(bio) ? 1 : -1;
}

size_t fb_tls_pending(BIO *bio)
{
	struct coalesce *c = bio ? BIO_get_data(bio) : NULL;

	return bio ? (size_t)BIO_wpending(bio) + (c ? c->plain_len - c->plain_off : 0) : 0;
}

void fb_tls_direct(SSL *ssl, BIO *bio)
{
	BIO *sock;

	if(ssl == NULL || bio == NULL || SSL_get_wbio(ssl) != bio || (sock = BIO_next(bio)) == NULL){
		return;
	}
	(void)fb_tls_flush(bio);
	((struct coalesce *)BIO_get_data(bio))->gather = false;
	if(!BIO_up_ref(sock)){
		return;
	}
	SSL_set0_wbio(ssl, sock); /* frees BIO (and its reference to SOCK) */
}
