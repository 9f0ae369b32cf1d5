/* flowmq-bridge check --connect: tries every endpoint of a configuration step by step (the
 * flowmq-bridge process, its one thread). */
#ifndef FB_CLI_CONNECT_H
#define FB_CLI_CONNECT_H

#include <cJSON.h>

#include "config.h"

/* A certificate expiring within this many days is warned about. */
#define CONNECT_EXPIRY_WARN_DAYS 30

/**
 * connect_check() - resolve, TCP, TLS and MQTT v5 CONNECT for each endpoint of CFG.
 * @cfg: a loaded configuration; its credentials are used as the link process uses them.
 * @out: NULL to print the steps as text on stdout; otherwise a JSON object that receives
 *       "endpoints" (one object per endpoint) and "passed" (their count).
 *
 * Return: the number of endpoints that passed every step (>= 0), or -ENOMEM.
 */
int connect_check(const struct fb_config *cfg, cJSON *out);

#endif
