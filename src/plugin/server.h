/* SPDX-License-Identifier: Apache-2.0 */
/* What the protocol methods need from the server. */
#pragma once

#include "plugin.h"

typedef struct plugin_server plugin_server;

const plugin_config *server_config(const plugin_server *s);
/* The driver Init opened; NULL before the first Init.  A handle stays valid
 * until the server exits, even after a later Init replaces it. */
strata_driver *server_driver(plugin_server *s);
/* Opens (creating and recovering) the store at `home` with `options` and
 * makes it the driver for the calls that follow. */
int server_init_driver(plugin_server *s, const char *home, const char *const *options, strata_error *err);
/* Forgets the last Init (see state.h): dockerd is going away. */
void server_forget_init(plugin_server *s);
