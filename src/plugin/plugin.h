/* SPDX-License-Identifier: Apache-2.0 */
/* strata serve: the Docker graphdriver plugin server (SPEC section 5). */
#pragma once

#include "strata.h"

typedef struct plugin_config {
	const char *socket_path;    /* where to listen */
	const char *name;	    /* the driver's name: Init options may be prefixed "<name>." */
	const char *const *options; /* driver options given to every Init, before Docker's */
	unsigned grace_seconds;	    /* how long SIGTERM waits for calls in flight */
} plugin_config;

/* Listens on cfg->socket_path until SIGTERM or SIGINT, then stops taking
 * calls, lets those in flight finish (up to grace_seconds), unmounts every
 * union of the store and removes the socket.  Logs to stderr.  Returns 0
 * after a clean shutdown, negative errno (message in err) when it cannot
 * start or the final unmount fails. */
int plugin_serve(const plugin_config *cfg, strata_error *err);
