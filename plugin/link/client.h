/* flowmq-bridge: the cloud connection's libmosquitto client (link process, worker thread).
 *
 * The client is made without libmosquitto's wake-up socket pair.
 * libmosquitto 2.0.11 opens a socket pair in every client it creates and writes one byte to it for
 * every packet it queues, to wake a mosquitto_loop() that waits in select(). The link never runs
 * mosquitto_loop(): its worker polls the client's socket itself (session.c). Nobody reads the pair,
 * so after its first few hundred bytes each of those writes fails with EAGAIN: one system call per
 * packet, for nothing, about a fifth of the link's CPU time while a backlog drains. libmosquitto
 * skips the write when the client has no pair, and a client has none when socketpair() fails while
 * it is created (libmosquitto then logs a warning, to no callback yet).
 */
#ifndef FB_CLIENT_H
#define FB_CLIENT_H

#include <stdbool.h>

#include <mosquitto.h>

/* mosquitto_new(ID, CLEAN_START, OBJ) without the socket pair: this program defines socketpair(),
 * which the dynamic linker finds before libc's (as it finds SSL_write(), tls.h), and it fails with
 * EMFILE only on the calling thread, only inside this function; anywhere else it is the system
 * call. Returns NULL when out of memory (errno ENOMEM) or for invalid arguments (EINVAL). */
struct mosquitto *fb_client_new(const char *id, bool clean_start, void *obj);

#endif
