/* flowmq-bridge: the cloud connection's TLS client context; link process only (worker thread).
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

/* Write coalescing. libmosquitto writes each packet with its own SSL_write() as soon as it is
 * queued (and from inside its read loop, one per PUBACK that frees a slot), so every PUBLISH
 * became one TLS record in one write(2), and mostly one TCP segment: on a backlog's drain the
 * cloud woke up and read once per message. fb_tls_coalesce() puts a buffering BIO of SIZE bytes
 * in front of the connected SSL's socket (the handshake is done; reads are not buffered): the
 * records of everything written in one turn of the worker go out in one write(2) at
 * fb_tls_flush(), which the worker calls at the end of every turn, so nothing waits longer than
 * the turn it was written in. When a record does not fit, what the buffer holds is written first;
 * a record larger than SIZE then goes straight to the socket. Returns the BIO (SSL owns it; valid
 * while the SSL lives), or NULL when it cannot (the connection then writes unbuffered). Worker
 * thread. */
BIO *fb_tls_coalesce(SSL *ssl, int size);

/* Gathering (tls.c: SSL_write()). On the SSL given to fb_tls_coalesce(), SSL_write() does not
 * encrypt: it copies the bytes into the BIO's plaintext buffer and returns them all as written.
 * libmosquitto calls SSL_write() once per packet, so without this every packet was one TLS record
 * of its own (about 10,000 instructions of libssl and libcrypto for a 200-byte PUBLISH, on the
 * edge and again in the cloud). fb_tls_flush() encrypts what a turn gathered in records of up to
 * 16 KiB. Only the flowmq-link program (and the tests that link this file) see this SSL_write():
 * it is defined with default visibility in the program, which the dynamic linker searches before
 * libssl. */

/* Encrypts what the SSL of BIO (from fb_tls_coalesce()) gathered and writes what BIO holds.
 * Returns 0 when all of it is written, 1 when the socket takes no more now (wait for POLLOUT and
 * call again), or -1 when the connection failed. Worker thread. */
int fb_tls_flush(BIO *bio);

/* Bytes BIO holds, gathered or encrypted, not yet written to the socket. */
size_t fb_tls_pending(BIO *bio);

/* Ends the write coalescing of SSL (BIO from fb_tls_coalesce(), which this frees): what BIO holds
 * (and what it gathered) is written first (as far as the socket takes it now), and later writes go to the socket at
 * once. For the DISCONNECT of an orderly stop: libmosquitto frees the SSL right after writing it,
 * so it must not wait in the buffer. Worker thread. */
void fb_tls_direct(SSL *ssl, BIO *bio);

#endif
