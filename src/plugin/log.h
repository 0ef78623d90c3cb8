/* SPDX-License-Identifier: Apache-2.0 */
/* The server's log: one line per event on stderr, in logfmt
 * ("2026-11-23T10:00:00.123Z level=info method=GraphDriver.Get id=abc ..."),
 * each written with a single write(2) so lines from threads never mix. */
#pragma once

#include <stdarg.h>

typedef enum plugin_log_level {
	PLUGIN_LOG_DEBUG,
	PLUGIN_LOG_INFO,
	PLUGIN_LOG_WARN,
	PLUGIN_LOG_ERROR,
} plugin_log_level;

/* "debug", "info", "warn" or "error"; -1 for anything else. */
int plugin_log_level_parse(const char *name);
void plugin_log_set_level(plugin_log_level level);
int plugin_log_enabled(plugin_log_level level);

/* Logs `fmt` (logfmt fields, already quoted where needed). */
void plugin_log(plugin_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* `s` as a logfmt value: bare when it is printable and has no space,
 * quote or '=', else in double quotes with \" \\ and \xNN escapes.  Cut at
 * about `size` bytes.  Returns buf. */
const char *plugin_log_value(const char *s, char *buf, size_t size);
#define LOG_VALUE(s) plugin_log_value((s), (char[1200]){0}, 1200)
