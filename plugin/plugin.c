/* flowmq-bridge: Mosquitto plugin entry points.
 *
 * Only option handling and callback registration live here; struct fb_bridge (bridge.c) holds
 * all state and is handed to every callback as userdata, so the plugin can be loaded twice.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "bridge.h"
#include "handoff.h"
#include "log.h"
#include "record.h" /* fb_wall_ms() */

#define FB_EXPORT __attribute__((visibility("default")))

struct fb_plugin {
	mosquitto_plugin_id_t *id;
	struct fb_bridge *bridge;
	struct fb_waker waker;
	struct fb_logq *logq;   /* the link process's log lines (see log.h) */
	pid_t pid;              /* the broker's */
	struct fb_logger lg;    /* log_to_broker(), with this struct */
};

static void log_now(void *ud, int level, const char *line)
{
	(void)ud;
	mosquitto_log_printf(level, "flowmq-bridge: %s", line);
}

static const struct fb_logger direct_logger = { log_now, NULL };

/* Broker thread: logs what the link process queued. */
static void drain_log(struct fb_plugin *p)
{
	fb_logq_drain(p->logq, &direct_logger, fb_wall_ms());
}

/* The logger of every module. In the link process (a fork of the broker) the line goes into the
 * queue; in the broker, after what the link process queued before it. */
static void log_to_broker(void *ud, int level, const char *line)
{
	struct fb_plugin *p = ud;

	if(getpid() != p->pid){
		fb_logq_push(p->logq, level, line);
		return;
	}
	drain_log(p);
	log_now(NULL, level, line);
}

static int host_publish(void *ud, const char *topic, int payloadlen, void *payload, int qos,
		bool retain, mosquitto_property *props)
{
	(void)ud;
	switch(mosquitto_broker_publish(NULL, topic, payloadlen, payload, qos, retain, props)){
		case MOSQ_ERR_SUCCESS: return 0;
		case MOSQ_ERR_NOMEM: return -ENOMEM;
		default: return -EINVAL;
	}
}

static void host_wake(void *ud)
{
	fb_waker_wake(ud);
}

static int on_message(int event, void *event_data, void *userdata)
{
	struct fb_plugin *p = userdata;
	struct mosquitto_evt_message *ev = event_data;
	(void)event;

	if(fb_bridge_capture(p->bridge, ev->topic, ev->payload, ev->payloadlen, ev->properties,
				ev->qos, ev->retain) < 0){
		/* Not spooled (on_full: reject, or a spool failure): refuse, so the publisher sees 0x87
		 * and keeps the message rather than lose it. */
		return MOSQ_ERR_ACL_DENIED;
	}
	return MOSQ_ERR_SUCCESS;
}

static int on_tick(int event, void *event_data, void *userdata)
{
	struct fb_plugin *p = userdata;
	const struct mosquitto_evt_tick *ev = event_data;
	(void)event;

	drain_log(p);
	/* Mosquitto 2.0.11 leaves now_s zero (later versions fill it in). */
	fb_bridge_tick(p->bridge, ev->now_s ? ev->now_s : time(NULL));
	return MOSQ_ERR_SUCCESS;
}

static int on_reload(int event, void *event_data, void *userdata)
{
	struct fb_plugin *p = userdata;
	(void)event; (void)event_data;

	fb_bridge_reload(p->bridge);
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
	const char *file;
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
	p->pid = getpid();
	p->lg = (struct fb_logger){ log_to_broker, p };
	*userdata = p;

	if(fb_logq_new(&p->logq) < 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "flowmq-bridge: cannot map memory for the link process's log");
		goto fail;
	}

	if(fb_waker_init(&p->waker) < 0){
		mosquitto_log_printf(MOSQ_LOG_ERR, "flowmq-bridge: cannot set up the broker wake-up signal");
		goto fail;
	}
	host = (struct fb_host){ .publish = host_publish, .wake = host_wake, .ud = &p->waker };
	if(fb_bridge_start(file, &p->lg, &host, &p->bridge) < 0){
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
	fb_bridge_stop(p->bridge);
	drain_log(p); /* what the link process said while it stopped */
	fb_logq_free(p->logq);
	fb_waker_cleanup(&p->waker);
	free(p);
	return MOSQ_ERR_SUCCESS;
}
