/* flowmq-bridge: the TLS client context for the cloud connection.
 *
 * We build the SSL_CTX ourselves (minimum version, trust store, client certificate, hostname
 * verification, SNI, ALPN) and hand it to libmosquitto with MOSQ_OPT_SSL_CTX, so that the
 * library applies none of its own defaults.
 */
#ifndef FB_TLS_H
#define FB_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "config.h"

/* Builds a client context for connecting to EP with CFG's tls settings. On failure returns NULL
 * and writes the reason into ERR. Caller frees with SSL_CTX_free(). Worker thread. */
SSL_CTX *fb_tls_ctx_new(const struct fb_config *cfg, const struct fb_endpoint *ep, char *err, size_t errlen);

/* The reason the last handshake on a context from fb_tls_ctx_new() failed certificate
 * verification ("" when it did not), e.g. "certificate verify failed: hostname mismatch".
 * Worker thread. */
const char *fb_tls_verify_error(SSL_CTX *ctx);

#endif
