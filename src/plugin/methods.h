/* SPDX-License-Identifier: Apache-2.0 */
/* The protocol's JSON calls, each mapped onto the driver contract. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "server.h"
#include "stream.h"

typedef struct plugin_call {
	plugin_server *server;
	const char *method;    /* "GraphDriver.Get": prefixes protocol errors */
	strata_driver *driver; /* NULL before Init */
	json_t *args;	       /* the request: always an object */
	json_t *reply;	       /* the reply object to fill */
	const char *id;	       /* for the log; point into args */
	const char *parent;
	plugin_stream *diff; /* set by Diff: the reply is this tar */
	strata_error err;    /* filled when the call fails */
} plugin_call;

typedef struct plugin_method {
	const char *name; /* "GraphDriver.Get" */
	bool needs_driver;
	int (*run)(plugin_call *c);
} plugin_method;

/* s as a JSON string, each byte that is not part of valid UTF-8 replaced
 * by U+FFFD (utf8.c).  NULL only when out of memory. */
json_t *json_string_lossy(const char *s);

/* NULL for a method the protocol does not have. */
const plugin_method *plugin_method_find(const char *name);
