/* flowmq-bridge: Mosquitto plugin entry points (broker process, broker thread).
 *
 * Only option handling and callback registration live here; struct fb_bridge (bridge.c) holds
 * all state and is handed to every callback as userdata, so the plugin can be loaded twice.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "bridge.h"
#include "log.h"
#include "waker.h"
#include "will.h"

#define FB_EXPORT __attribute__((visibility("default")))

/* Where meson installs flowmq-link (LIBEXECDIR/flowmq-bridge/flowmq-link); plugin_opt_link_program
 * overrides it. */
#ifndef FB_LINK_PROGRAM
#define FB_LINK_PROGRAM "/usr/libexec/flowmq-bridge/flowmq-link"
#endif

struct fb_plugin {
	mosquitto_plugin_id_t *id;
	struct fb_bridge *bridge;
	struct fb_will *will;     /* NULL with plugin_opt_loopback false */
	struct fb_waker waker;  /* the signal the link process wakes the broker thread with */
	struct fb_logger lg;    /* log_now() */
	char *link_program;     /* plugin_opt_link_program, or FB_LINK_PROGRAM */
};

static void log_now(void *ud, int level, const char *line)
{
	(void)ud;
	mosquitto_log_printf(level, "flowmq-bridge: %s", line);
}

static int host_publish(void *ud, const char *topic, int payloadlen, void *payload, int qos,
		bool retain, mosquitto_property *props)
{
	struct fb_plugin *p = ud;

	/* An injected message is never forwarded back: the loopback subscriber skips its copy. */
	fb_will_note(p->will, topic, payload, (uint32_t)payloadlen);
	switch(mosquitto_broker_publish(NULL, topic, payloadlen, payload, qos, retain, props)){
		case MOSQ_ERR_SUCCESS: return 0;
		case MOSQ_ERR_NOMEM: return -ENOMEM;
		default: return -EINVAL;
	}
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct fb_plugin *p = userdata;
	struct mosquitto_evt_message *ev = event_data;
	(void)event;

	int rc = fb_bridge_capture(p->bridge, ev->topic, ev->payload, ev->payloadlen, ev->properties,
			ev->qos, ev->retain);

	if(rc < 0){
		/* Not spooled (on_full: reject, or a spool failure): refuse, so the publisher sees 0x87
		 * and keeps the message rather than lose it. */
		return MOSQ_ERR_ACL_DENIED;
	}
	if(rc == FB_BRIDGE_MATCHED){
		/* The broker delivers it to the loopback subscriber next, which must skip it. */
		fb_will_note(p->will, ev->topic, ev->payload, ev->payloadlen);
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_tick(int event, void *event_data, void *userdata)
{
	struct fb_plugin *p = userdata;
	struct timespec t;
	(void)event; (void)event_data;

	/* One clock for both, monotonic: a wall clock set back (NTP, a snapshot restored) would stop
	 * the looking after the link process for as long. (2.0.11 leaves the event's now_s zero.) */
	clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
	fb_bridge_tick(p->bridge, (uint64_t)t.tv_sec);
	fb_will_tick(p->will, (uint64_t)t.tv_sec * 1000u + (uint64_t)t.tv_nsec / 1000000u);
	return MOSQ_ERR_SUCCESS;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	struct fb_plugin *p = userdata;
	(void)event; (void)event_data;

	if(fb_bridge_reload(p->bridge) == 0){
		fb_will_reload(p->will);
	}
	/* 2.0.11 stops calling reload callbacks (and initialising older plugins) at the first one
	 * that returns anything but MOSQ_ERR_PLUGIN_DEFER: let the others run too. */
	return MOSQ_ERR_PLUGIN_DEFER;
}

static const char *option(struct mosquitto_opt *opts, int count, const char *key)
{
	for(int i = 0; i < count; i++){
		if(opts[i].key && !strcmp(opts[i].key, key)){
			return opts[i].value;
		}
	}
	return NULL;
}

/* Mosquitto 2.0's plugin identifier holds the listener the plugin was loaded for, and that is
 * non-NULL exactly when per_listener_settings is true. In that mode 2.0.11 never calls tick
 * callbacks, so cloud-to-edge injection and status could never run. */
static bool per_listener_settings(mosquitto_plugin_id_t *id)
{
	return *(void *const *)id != NULL;
}

/* Reads the first line of a password file for the loopback subscriber into BUF (SIZE bytes).
 * Refuses what is not a regular file and files that group or others may write; one that they may
 * read (a read-only secret mount) gets a warning. */
static int read_password_file(const char *path, char *buf, size_t size)
{
	struct stat st;
	ssize_t n;
	int fd;

	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if(fd < 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "flowmq-bridge: plugin_opt_loopback_password_file: cannot open %s: %s",
				path, strerror(errno));
		return -1;
	}
	if(fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "flowmq-bridge: plugin_opt_loopback_password_file: %s is not a regular file",
				path);
		close(fd);
		return -1;
	}
	if(st.st_mode & (S_IWGRP | S_IWOTH)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "flowmq-bridge: plugin_opt_loopback_password_file: %s may be "
				"written by group or others (mode %03o); chmod go-w it", path, (unsigned)(st.st_mode & 0777));
		close(fd);
		return -1;
	}
	if(st.st_mode & (S_IRGRP | S_IROTH)){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "flowmq-bridge: plugin_opt_loopback_password_file: %s may be read "
				"by group or others (mode %03o); chmod 600 it unless it is a read-only secret mount", path,
				(unsigned)(st.st_mode & 0777));
	}
	n = read(fd, buf, size - 1);
	close(fd);
	if(n < 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "flowmq-bridge: plugin_opt_loopback_password_file: cannot read %s: %s",
				path, strerror(errno));
		return -1;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	return 0;
}

/* Starts the loopback subscriber that forwards Wills (will.h), from the plugin_opt_loopback*
 * options. Returns 0 (also when disabled) or -1 (logged). */
static int start_loopback(struct fb_plugin *p, struct mosquitto_opt *opts, int count,
		const struct fb_host *host)
{
	const char *on = option(opts, count, "loopback");
	const char *addr = option(opts, count, "loopback_address");
	const char *pwfile = option(opts, count, "loopback_password_file");
	struct fb_will_opts wo = { 0 };
	char password[1024];
	char *buf;
	int rc;

	if(on && strcmp(on, "true") && strcmp(on, "false")){
		mosquitto_log_printf(MOSQ_LOG_ERR, "flowmq-bridge: plugin_opt_loopback: '%s' is neither true nor false", on);
		return -1;
	}
	if(on && !strcmp(on, "false")){
		mosquitto_log_printf(MOSQ_LOG_WARNING, "flowmq-bridge: plugin_opt_loopback false: Will messages are not "
				"forwarded to the cloud");
		return 0;
	}
	if(addr == NULL){
		addr = "127.0.0.1:1883";
	}
	buf = strdup(addr);
	if(buf == NULL){
		return -1;
	}
	if(fb_will_parse_address(addr, buf, &wo) < 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "flowmq-bridge: plugin_opt_loopback_address: '%s' is not "
				"ADDRESS:PORT with a numeric address of a plain MQTT listener of this broker", addr);
		free(buf);
		return -1;
	}
	wo.username = option(opts, count, "loopback_username");
	if(pwfile){
		if(read_password_file(pwfile, password, sizeof(password)) < 0){
			free(buf);
			return -1;
		}
		wo.password = password;
	}
	rc = fb_will_start(&wo, p->bridge, host, &p->lg, &p->will);
	explicit_bzero(password, sizeof(password));
	free(buf);
	return rc < 0 ? -1 : 0;
}

FB_EXPORT int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5){
			return 5;
		}
	}
	return -1;
}

FB_EXPORT int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count);

FB_EXPORT int mosquitto_plugin_init(mosquitto_plugin_id_t *id, void **userdata,
		struct mosquitto_opt *opts, int opt_count)
{
	struct fb_plugin *p;
	const char *file, *link_program;
	struct fb_host host;

	if(per_listener_settings(id)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "flowmq-bridge: cannot run with per_listener_settings true "
				"(Mosquitto 2.0 never calls plugin tick callbacks in that mode); set per_listener_settings false");
		return MOSQ_ERR_INVAL;
	}
	file = option(opts, opt_count, "config_file");
	if(file == NULL || file[0] == '\0'){
		mosquitto_log_printf(MOSQ_LOG_ERR, "flowmq-bridge: missing plugin_opt_config_file "
				"(the path of the flowmq-bridge YAML configuration)");
		return MOSQ_ERR_INVAL;
	}
	p = calloc(1, sizeof(*p));
	if(p == NULL){
		return MOSQ_ERR_NOMEM;
	}
	p->id = id;
	p->lg = (struct fb_logger){ log_now, p };
	*userdata = p;

	if(fb_waker_init(&p->waker) < 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "flowmq-bridge: cannot set up the broker wake-up signal");
		goto fail;
	}
	link_program = option(opts, opt_count, "link_program");
	p->link_program = strdup(link_program && link_program[0] ? link_program : FB_LINK_PROGRAM);
	if(p->link_program == NULL){
		goto fail;
	}
	host = (struct fb_host){ .publish = host_publish, .ud = p, .wake_signo = p->waker.signo,
		.link_program = p->link_program };
	if(fb_bridge_start(file, &p->lg, &host, &p->bridge) < 0){
		goto fail;
	}
	if(start_loopback(p, opts, opt_count, &host) < 0){
		goto fail;
	}
	if(mosquitto_callback_register(id, MOSQ_EVT_MESSAGE, on_message, NULL, p)
			|| mosquitto_callback_register(id, MOSQ_EVT_TICK, on_tick, NULL, p)
			|| mosquitto_callback_register(id, MOSQ_EVT_RELOAD, on_reload, NULL, p)){
		mosquitto_log_printf(MOSQ_LOG_ERR, "flowmq-bridge: cannot register broker callbacks");
		goto fail;
	}
	return MOSQ_ERR_SUCCESS;

fail:
	mosquitto_plugin_cleanup(p, opts, opt_count);
	*userdata = NULL;
	return MOSQ_ERR_UNKNOWN;
}

FB_EXPORT int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *opts, int opt_count)
{
	struct fb_plugin *p = userdata;
	(void)opts; (void)opt_count;

	if(p == NULL){
		return MOSQ_ERR_SUCCESS;
	}
	if(p->id){
		mosquitto_callback_unregister(p->id, MOSQ_EVT_MESSAGE, on_message, NULL);
		mosquitto_callback_unregister(p->id, MOSQ_EVT_TICK, on_tick, NULL);
		mosquitto_callback_unregister(p->id, MOSQ_EVT_RELOAD, on_reload, NULL);
	}
	fb_will_stop(p->will);
	fb_bridge_stop(p->bridge); /* logs what the link process said while it stopped */
	fb_waker_cleanup(&p->waker);
	free(p->link_program);
	free(p);
	return MOSQ_ERR_SUCCESS;
}
