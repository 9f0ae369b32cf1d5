/* flowmq-bridge check --connect: each endpoint's name lookup, TCP connection, TLS handshake and
 * MQTT v5 CONNECT, timed and reported step by step (the flowmq-bridge process, its one thread).
 *
 * The lookup is the link process's (link/resolve.c, bounded by cloud.connect_timeout), the TLS
 * context is the link process's (link/tls.c, fb_tls_ctx_new(): the same trust store, client
 * certificate, minimum version, SNI and host-name check), and the credentials are the configured
 * ones. The CONNECT is written here, on the same connection as the handshake, so that each step
 * is timed on its own. It uses the client id "<cloud.client_id>-check" with a clean start and no
 * session expiry: the check never takes over (and so disconnects) the running bridge's session
 * and leaves no session behind. The connection ends with a DISCONNECT.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "connect.h"
#include "resolve.h"
#include "tls.h"

#define DETAIL_MAX 1024

/* One endpoint's check. */
struct probe {
	const struct fb_config *cfg;
	const struct fb_endpoint *ep;
	cJSON *json;      /* the endpoint's object, or NULL for text */
	cJSON *steps;
	cJSON *warnings;
	bool failed;
	double t0;        /* the current step's start */
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	char addr[INET6_ADDRSTRLEN + 16];
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Ends the current step: OK or failed, with DETAIL. */
static void __attribute__((format(printf, 4, 5))) step(struct probe *p, const char *name, bool ok,
		const char *fmt, ...)
{
	char detail[DETAIL_MAX];
	double ms = now_ms() - p->t0;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	p->failed |= !ok;
	if(p->json){
		cJSON *s = cJSON_CreateObject();

		cJSON_AddStringToObject(s, "step", name);
		cJSON_AddBoolToObject(s, "ok", ok);
		cJSON_AddNumberToObject(s, "ms", (double)(long)(ms * 10 + 0.5) / 10);
		cJSON_AddStringToObject(s, "detail", detail);
		cJSON_AddItemToArray(p->steps, s);
	}else{
		printf("  %s: %s (%.1f ms): %s\n", name, ok ? "ok" : "FAILED", ms, detail);
	}
	p->t0 = now_ms();
}

static void __attribute__((format(printf, 2, 3))) warn(struct probe *p, const char *fmt, ...)
{
	char text[DETAIL_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if(p->warnings){
		cJSON_AddItemToArray(p->warnings, cJSON_CreateString(text));
	}else{
		printf("%swarning: %s\n", p->ep ? "  " : "", text);
	}
}

/* ---- resolve and TCP --------------------------------------------------------------------------- */

static void addr_text(const struct sockaddr *sa, char *buf, size_t len)
{
	const void *a = sa->sa_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr
			: (const void *)&((const struct sockaddr_in *)sa)->sin_addr;

	if(inet_ntop(sa->sa_family, a, buf, (socklen_t)len) == NULL){
		snprintf(buf, len, "?");
	}
}

/* Looks the endpoint's host up, bounded by cloud.connect_timeout. Returns the lookup (caller frees
 * with fb_resolve_free()) with *RES, or NULL after reporting the failed step. */
static struct fb_resolve *probe_resolve(struct probe *p, const struct addrinfo **res)
{
	struct fb_resolve *r = NULL;
	struct pollfd pfd;
	char list[DETAIL_MAX] = "";
	size_t used = 0;
	int rc;

	rc = fb_resolve_start(p->ep->host, &r);
	if(rc < 0){
		step(p, "resolve", false, "cannot look %s up: %s", p->ep->host, strerror(-rc));
		return NULL;
	}
	pfd = (struct pollfd){ .fd = fb_resolve_fd(r), .events = POLLIN };
	while(!fb_resolve_done(r)){
		double left = (double)p->cfg->cloud.connect_timeout_ms - (now_ms() - p->t0);

		if(left <= 0){
			step(p, "resolve", false, "looking %s up took longer than cloud.connect_timeout (%u ms)",
					p->ep->host, p->cfg->cloud.connect_timeout_ms);
			fb_resolve_free(r);
			return NULL;
		}
		poll(&pfd, 1, (int)left + 1);
	}
	if(fb_resolve_result(r, res) != 0){
		step(p, "resolve", false, "cannot resolve %s: %s", p->ep->host, fb_resolve_error(r));
		fb_resolve_free(r);
		return NULL;
	}
	for(const struct addrinfo *ai = *res; ai && used < sizeof(list) - 64; ai = ai->ai_next){
		char a[INET6_ADDRSTRLEN];

		addr_text(ai->ai_addr, a, sizeof(a));
		used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", used ? ", " : "", a);
	}
	step(p, "resolve", true, "%s", list);
	return r;
}

/* Connects to one address within TIMEOUT_MS. Returns the socket or a negative errno. */
static int tcp_connect(const struct addrinfo *ai, uint16_t port, int timeout_ms)
{
	struct sockaddr_storage ss;
	struct pollfd pfd;
	int fd, err = 0;
	socklen_t elen = sizeof(err);

	memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
	if(ss.ss_family == AF_INET6){
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
	}else{
		((struct sockaddr_in *)&ss)->sin_port = htons(port);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if(fd < 0){
		return -errno;
	}
	if(connect(fd, (struct sockaddr *)&ss, ai->ai_addrlen) != 0){
		if(errno != EINPROGRESS){
			err = errno;
			close(fd);
			return -err;
		}
		pfd = (struct pollfd){ .fd = fd, .events = POLLOUT };
		if(poll(&pfd, 1, timeout_ms) != 1){
			close(fd);
			return -ETIMEDOUT;
		}
		if(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err != 0){
			close(fd);
			return -(err ? err : EIO);
		}
	}
	/* Blocking from here, with the connect timeout on every read and write; no Nagle delay, so
	 * that the CONNECT written right after the handshake's last flight is not held back for the
	 * server's delayed ACK (40 ms) and the mqtt step times the server's answer. */
	{
		struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
		int one = 1;

		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	return fd;
}

/* Tries each address in order; reports the step. Returns 0 or -1. */
static int probe_tcp(struct probe *p, const struct addrinfo *res)
{
	char why[DETAIL_MAX] = "";
	size_t used = 0;

	for(const struct addrinfo *ai = res; ai; ai = ai->ai_next){
		char a[INET6_ADDRSTRLEN];
		int fd = tcp_connect(ai, p->ep->port, (int)p->cfg->cloud.connect_timeout_ms);

		addr_text(ai->ai_addr, a, sizeof(a));
		if(fd >= 0){
			p->fd = fd;
			snprintf(p->addr, sizeof(p->addr), "%s port %u", a, p->ep->port);
			step(p, "tcp", true, "connected to %s", p->addr);
			return 0;
		}
		if(used < sizeof(why) - 64){
			used += (size_t)snprintf(why + used, sizeof(why) - used, "%s%s port %u: %s", used ? "; " : "", a,
					p->ep->port, fd == -ETIMEDOUT ? "no answer within cloud.connect_timeout" : strerror(-fd));
		}
	}
	step(p, "tcp", false, "%s", why);
	return -1;
}

/* ---- TLS --------------------------------------------------------------------------------------- */

static void name_text(const X509_NAME *n, char *buf, size_t len)
{
	BIO *b = BIO_new(BIO_s_mem());
	int r;

	buf[0] = '\0';
	if(b == NULL){
		return;
	}
	X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253);
	r = BIO_read(b, buf, (int)len - 1);
	buf[r > 0 ? r : 0] = '\0';
	BIO_free(b);
}

/* The expiry of X: its date (UTC) into DATE and the whole days left into *DAYS (negative once
 * expired). Returns 0 or -1. */
static int expiry(const X509 *x, char *date, size_t len, int *days)
{
	const ASN1_TIME *na = X509_get0_notAfter(x);
	struct tm tm;
	int d = 0, s = 0;

	if(na == NULL || ASN1_TIME_to_tm(na, &tm) != 1 || ASN1_TIME_diff(&d, &s, NULL, na) != 1){
		return -1;
	}
	strftime(date, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
	*days = d;
	return 0;
}

static void warn_expiry(struct probe *p, const char *what, const X509 *x)
{
	char date[64], subj[256];
	int days;

	if(expiry(x, date, sizeof(date), &days) == 0 && days < CONNECT_EXPIRY_WARN_DAYS){
		name_text(X509_get_subject_name(x), subj, sizeof(subj));
		warn(p, "%s %s expires in %d days (%s)", what, subj, days, date);
	}
}

/* The OpenSSL error queue as one line, emptied. */
static void ssl_errors(char *buf, size_t len)
{
	unsigned long e;
	size_t used = 0;

	buf[0] = '\0';
	while((e = ERR_get_error()) != 0){
		char one[256];

		ERR_error_string_n(e, one, sizeof(one));
		if(used < len){
			used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? "; " : "", one);
		}
	}
}

static int probe_tls(struct probe *p)
{
	const char *name = p->cfg->cloud.tls.server_name ? p->cfg->cloud.tls.server_name : p->ep->host;
	char err[DETAIL_MAX], subj[256], issuer[256], date[64];
	X509 *peer;
	int rc, days;

	p->ctx = fb_tls_ctx_new(p->cfg, p->ep, err, sizeof(err));
	if(p->ctx == NULL){
		step(p, "tls", false, "%s", err);
		return -1;
	}
	p->ssl = SSL_new(p->ctx);
	if(p->ssl == NULL || SSL_set_fd(p->ssl, p->fd) != 1){
		ssl_errors(err, sizeof(err));
		step(p, "tls", false, "cannot set up the connection: %s", err);
		return -1;
	}
	ERR_clear_error();
	rc = SSL_connect(p->ssl);
	if(rc != 1){
		const char *verr = fb_tls_verify_error(p->ctx);
		int e = SSL_get_error(p->ssl, rc);

		ssl_errors(err, sizeof(err));
		if(verr[0]){
			step(p, "tls", false, "handshake failed: %s", verr);
		}else if(e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SSL && !err[0])){
			step(p, "tls", false, "handshake failed: %s", errno == EAGAIN
					? "no answer within cloud.connect_timeout" : "the server closed the connection");
		}else{
			step(p, "tls", false, "handshake failed: %s", err[0] ? err : "unknown error");
		}
		return -1;
	}
	peer = SSL_get1_peer_certificate(p->ssl);
	if(peer == NULL){
		step(p, "tls", false, "%s %s: the server sent no certificate", SSL_get_version(p->ssl),
				SSL_get_cipher_name(p->ssl));
		return -1;
	}
	name_text(X509_get_subject_name(peer), subj, sizeof(subj));
	name_text(X509_get_issuer_name(peer), issuer, sizeof(issuer));
	if(expiry(peer, date, sizeof(date), &days) != 0){
		snprintf(date, sizeof(date), "?");
		days = 0;
	}
	if(p->cfg->cloud.tls.verify){
		step(p, "tls", true, "%s %s, certificate %s issued by %s, expires %s (in %d days), host name %s verified",
				SSL_get_version(p->ssl), SSL_get_cipher_name(p->ssl), subj, issuer, date, days, name);
	}else{
		bool match = X509_check_ip_asc(peer, name, 0) == 1 || X509_check_host(peer, name, 0, 0, NULL) == 1;

		step(p, "tls", true, "%s %s, certificate %s issued by %s, expires %s (in %d days), host name %s %s "
				"(not verified: tls.verify is false)", SSL_get_version(p->ssl), SSL_get_cipher_name(p->ssl),
				subj, issuer, date, days, name, match ? "matches" : "does not match");
	}
	if(p->json){
		cJSON *t = cJSON_AddObjectToObject(p->json, "tls");

		cJSON_AddStringToObject(t, "version", SSL_get_version(p->ssl));
		cJSON_AddStringToObject(t, "cipher", SSL_get_cipher_name(p->ssl));
		cJSON_AddStringToObject(t, "subject", subj);
		cJSON_AddStringToObject(t, "issuer", issuer);
		cJSON_AddStringToObject(t, "not_after", date);
		cJSON_AddNumberToObject(t, "days_left", days);
		cJSON_AddBoolToObject(t, "host_name_verified", p->cfg->cloud.tls.verify);
	}
	warn_expiry(p, "the server's certificate", peer);
	X509_free(peer);
	return 0;
}

/* ---- MQTT v5 CONNECT --------------------------------------------------------------------------- */

static int xfer_write(struct probe *p, const uint8_t *b, size_t len)
{
	while(len){
		ssize_t n = p->ssl ? SSL_write(p->ssl, b, (int)len) : send(p->fd, b, len, MSG_NOSIGNAL);

		if(n <= 0){
			if(!p->ssl && n < 0 && errno == EINTR){
				continue;
			}
			return -1;
		}
		b += n;
		len -= (size_t)n;
	}
	return 0;
}

static int xfer_read(struct probe *p, uint8_t *b, size_t len)
{
	while(len){
		ssize_t n = p->ssl ? SSL_read(p->ssl, b, (int)len) : recv(p->fd, b, len, 0);

		if(n <= 0){
			if(!p->ssl && n < 0 && errno == EINTR){
				continue;
			}
			return n == 0 || (p->ssl && SSL_get_error(p->ssl, (int)n) == SSL_ERROR_ZERO_RETURN) ? -EPIPE
				: errno == EAGAIN ? -ETIMEDOUT : -EIO;
		}
		b += n;
		len -= (size_t)n;
	}
	return 0;
}

static size_t put_varint(uint8_t *b, uint32_t v)
{
	size_t n = 0;

	do{
		b[n] = v % 128;
		v /= 128;
		b[n] |= v ? 0x80 : 0;
		n++;
	}while(v);
	return n;
}

static size_t put_str(uint8_t *b, const void *s, size_t len)
{
	b[0] = (uint8_t)(len >> 8);
	b[1] = (uint8_t)len;
	memcpy(b + 2, s, len);
	return len + 2;
}

/* Finds the Reason String (0x1F) in CONNACK properties P[0..LEN): copies it into OUT. */
static void reason_string(const uint8_t *pr, size_t len, char *out, size_t outlen)
{
	size_t i = 0;

	out[0] = '\0';
	while(i < len){
		uint8_t id = pr[i++];
		size_t skip;

		switch(id){
			case 0x24: case 0x25: case 0x28: case 0x29: case 0x2A: skip = 1; break;
			case 0x21: case 0x22: case 0x13: skip = 2; break;
			case 0x11: case 0x27: skip = 4; break;
			case 0x12: case 0x1A: case 0x1C: case 0x15: case 0x16: case 0x1F:
				if(i + 2 > len){
					return;
				}
				skip = 2 + ((size_t)pr[i] << 8 | pr[i + 1]);
				if(id == 0x1F && i + skip <= len){
					snprintf(out, outlen, "%.*s", (int)(skip - 2), (const char *)pr + i + 2);
				}
				break;
			case 0x26:
				if(i + 2 > len){
					return;
				}
				skip = 2 + ((size_t)pr[i] << 8 | pr[i + 1]);
				if(i + skip + 2 > len){
					return;
				}
				skip += 2 + ((size_t)pr[i + skip] << 8 | pr[i + skip + 1]);
				break;
			default:
				return;
		}
		i += skip;
	}
}

static int probe_mqtt(struct probe *p, const char *client_id)
{
	const char *user = p->cfg->cloud.username, *pw = p->cfg->cloud.password;
	size_t idl = strlen(client_id), ul = user ? strlen(user) : 0, pl = pw ? strlen(pw) : 0;
	uint8_t hdr[8], *pkt, *b, ack[4 + 65536], why[300];
	size_t rem, n = 0, hn;
	uint32_t alen = 0;
	int rc, shift = 0;

	if(idl > 65535 || ul > 65535 || pl > 65535){
		step(p, "mqtt", false, "the client id, user name or password is longer than 65535 bytes");
		return -1;
	}
	/* Protocol name, version 5, flags, keep alive, no properties; client id, user name, password. */
	rem = 7 + 1 + 2 + 1 + 2 + idl + (user ? 2 + ul : 0) + (pw ? 2 + pl : 0);
	pkt = malloc(rem + 5);
	if(pkt == NULL){
		step(p, "mqtt", false, "out of memory");
		return -1;
	}
	b = pkt;
	b[n++] = 0x10;
	n += put_varint(b + n, (uint32_t)rem);
	n += put_str(b + n, "MQTT", 4);
	b[n++] = 5;
	b[n++] = (uint8_t)(0x02 | (user ? 0x80 : 0) | (pw ? 0x40 : 0));
	b[n++] = (uint8_t)(p->cfg->cloud.keepalive_s >> 8);
	b[n++] = (uint8_t)p->cfg->cloud.keepalive_s;
	b[n++] = 0; /* properties: none (session expiry 0) */
	n += put_str(b + n, client_id, idl);
	if(user){
		n += put_str(b + n, user, ul);
	}
	if(pw){
		n += put_str(b + n, pw, pl);
	}
	rc = xfer_write(p, pkt, n);
	free(pkt);
	if(rc != 0){
		step(p, "mqtt", false, "cannot send CONNECT: the connection broke");
		return -1;
	}
	/* CONNACK: type, remaining length, flags, reason code, properties. */
	rc = xfer_read(p, hdr, 2);
	for(hn = 1; rc == 0 && (hdr[hn] & 0x80) && hn < 4; hn++){
		alen |= (uint32_t)(hdr[hn] & 0x7f) << shift;
		shift += 7;
		rc = xfer_read(p, hdr + hn + 1, 1);
	}
	if(rc == 0){
		alen |= (uint32_t)(hdr[hn] & 0x7f) << shift;
	}
	if(rc != 0){
		step(p, "mqtt", false, "no CONNACK: %s", rc == -ETIMEDOUT ? "no answer within cloud.connect_timeout"
				: "the server closed the connection");
		return -1;
	}
	if((hdr[0] & 0xf0) != 0x20 || alen < 2 || alen > sizeof(ack) || xfer_read(p, ack, alen) != 0){
		step(p, "mqtt", false, "the server's answer to CONNECT is not a CONNACK (first byte 0x%02x)", hdr[0]);
		return -1;
	}
	why[0] = '\0';
	if(alen > 2){
		size_t plen = 0, i = 2;
		int sh = 0;

		while(i < alen && (ack[i] & 0x80) && sh < 28){
			plen |= (size_t)(ack[i++] & 0x7f) << sh;
			sh += 7;
		}
		if(i < alen){
			plen |= (size_t)(ack[i++] & 0x7f) << sh;
			if(i + plen <= alen){
				reason_string(ack + i, plen, (char *)why, sizeof(why));
			}
		}
	}
	if(ack[1] != 0){
		step(p, "mqtt", false, "CONNECT refused: reason 0x%02x (%s)%s%s%s", ack[1], mosquitto_reason_string(ack[1]),
				why[0] ? ": \"" : "", (const char *)why, why[0] ? "\"" : "");
		return -1;
	}
	step(p, "mqtt", true, "CONNACK 0x00 (Success) for client id %s%s%s", client_id, user ? ", user " : "",
			user ? user : "");
	{
		static const uint8_t disconnect[] = { 0xe0, 0x00 };

		xfer_write(p, disconnect, sizeof(disconnect));
	}
	return 0;
}

/* ---- one endpoint, all endpoints --------------------------------------------------------------- */

static void probe_endpoint(struct probe *p, const char *client_id)
{
	struct fb_resolve *r;
	const struct addrinfo *res;

	p->fd = -1;
	p->t0 = now_ms();
	r = probe_resolve(p, &res);
	if(r == NULL){
		return;
	}
	if(probe_tcp(p, res) != 0){
		fb_resolve_free(r);
		return;
	}
	fb_resolve_free(r);
	if(p->ep->tls){
		if(probe_tls(p) != 0){
			return;
		}
	}else{
		step(p, "tls", true, "none: the endpoint is mqtt:// (tls.allow_plaintext)");
	}
	probe_mqtt(p, client_id);
}

static void probe_close(struct probe *p)
{
	if(p->ssl){
		SSL_shutdown(p->ssl);
		SSL_free(p->ssl);
	}
	SSL_CTX_free(p->ctx);
	if(p->fd >= 0){
		close(p->fd);
	}
}

/* Warns about the client certificate (tls.cert_file) when it expires soon. */
static void client_cert_expiry(const struct fb_config *cfg, cJSON *warnings)
{
	struct probe p = { .cfg = cfg, .warnings = warnings };
	FILE *f;
	X509 *x;

	if(cfg->cloud.tls.cert_file == NULL || (f = fopen(cfg->cloud.tls.cert_file, "re")) == NULL){
		return; /* an unreadable file is reported by the TLS step */
	}
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if(x){
		warn_expiry(&p, "the client certificate (tls.cert_file)", x);
		X509_free(x);
	}
	ERR_clear_error();
}

int connect_check(const struct fb_config *cfg, cJSON *out)
{
	char *client_id;
	cJSON *eps = NULL, *warnings = NULL;
	int passed = 0;

	if(asprintf(&client_id, "%s-check", cfg->cloud.client_id) < 0){
		return -ENOMEM;
	}
	if(out){
		eps = cJSON_AddArrayToObject(out, "endpoints");
		warnings = cJSON_AddArrayToObject(out, "warnings");
		if(eps == NULL || warnings == NULL){
			free(client_id);
			return -ENOMEM;
		}
	}
	client_cert_expiry(cfg, warnings);
	for(size_t i = 0; i < cfg->cloud.endpoint_count; i++){
		struct probe p = { .cfg = cfg, .ep = &cfg->cloud.endpoints[i] };

		if(out){
			p.json = cJSON_CreateObject();
			cJSON_AddItemToArray(eps, p.json);
			cJSON_AddStringToObject(p.json, "url", p.ep->url);
			p.steps = cJSON_AddArrayToObject(p.json, "steps");
			p.warnings = cJSON_AddArrayToObject(p.json, "warnings");
		}else{
			printf("%s\n", p.ep->url);
		}
		probe_endpoint(&p, client_id);
		probe_close(&p);
		passed += !p.failed;
		if(out){
			cJSON_AddBoolToObject(p.json, "passed", !p.failed);
		}else{
			printf("  %s\n", p.failed ? "FAILED" : "passed");
		}
	}
	if(out){
		cJSON_AddNumberToObject(out, "passed", passed);
	}else{
		printf("%d of %zu endpoint%s passed\n", passed, cfg->cloud.endpoint_count,
				cfg->cloud.endpoint_count == 1 ? "" : "s");
	}
	free(client_id);
	return passed;
}
