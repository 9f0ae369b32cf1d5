#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

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

/* libmosquitto sets SNI to the host it connects to; tls.server_name overrides it just before the
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
	snprintf(st->server_name, sizeof(st->server_name), "%s", cfg->cloud.tls.server_name ? cfg->cloud.tls.server_name : "");

	if(!SSL_CTX_set_min_proto_version(ctx, cfg->cloud.tls.min_version)){
		set_err(err, errlen, "cannot set the minimum TLS version", NULL);
		goto fail;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	/* One connection that is busy when it matters: keep the record buffers instead of freeing
	 * and allocating 16 KiB at every record, and read every record that has arrived at once
	 * (link.c's read_all() processes them). */
	SSL_CTX_set_read_ahead(ctx, 1);

	if(cfg->cloud.tls.ca_file){
		if(SSL_CTX_load_verify_locations(ctx, cfg->cloud.tls.ca_file, NULL) != 1){
			set_err(err, errlen, "cannot load tls.ca_file", cfg->cloud.tls.ca_file);
			goto fail;
		}
	}else if(SSL_CTX_set_default_verify_paths(ctx) != 1){
		set_err(err, errlen, "cannot load the system trust store", NULL);
		goto fail;
	}
	if(cfg->cloud.tls.cert_file){
		if(SSL_CTX_use_certificate_chain_file(ctx, cfg->cloud.tls.cert_file) != 1){
			set_err(err, errlen, "cannot load tls.cert_file", cfg->cloud.tls.cert_file);
			goto fail;
		}
		if(SSL_CTX_use_PrivateKey_file(ctx, cfg->cloud.tls.key_file, SSL_FILETYPE_PEM) != 1){
			set_err(err, errlen, "cannot load tls.key_file", cfg->cloud.tls.key_file);
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
