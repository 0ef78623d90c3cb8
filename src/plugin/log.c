/* SPDX-License-Identifier: Apache-2.0 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static plugin_log_level min_level = PLUGIN_LOG_INFO;

int plugin_log_level_parse(const char *name)
{
	for (int i = 0; i < 4; i++)
		if (!strcmp(name, level_names[i]))
			return i;
	return -1;
}

void plugin_log_set_level(plugin_log_level level)
{
	min_level = level;
}

int plugin_log_enabled(plugin_log_level level)
{
	return level >= min_level;
}

void plugin_log(plugin_log_level level, const char *fmt, ...)
{
	if (level < min_level)
		return;
	char line[4096];
	struct timespec now;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	size_t n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ level=%s ", now.tv_nsec / 1000000,
			      level_names[level]);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += (size_t)m < sizeof(line) - n - 1 ? (size_t)m : sizeof(line) - n - 2;
	line[n++] = '\n';
	/* One write: stderr is shared by every connection thread. */
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

const char *plugin_log_value(const char *s, char *buf, size_t size)
{
	if (!s || !*s) {
		snprintf(buf, size, "-");
		return buf;
	}
	bool bare = true;
	for (const char *p = s; *p; p++)
		if (*p <= ' ' || *p >= 0x7f || *p == '"' || *p == '=' || *p == '\\')
			bare = false;
	size_t n = 0;
	if (!bare)
		buf[n++] = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p && n + 8 < size; p++) {
		if (bare)
			buf[n++] = (char)*p;
		else if (*p == '"' || *p == '\\')
			n += (size_t)snprintf(buf + n, size - n, "\\%c", *p);
		else if (*p < ' ' || *p >= 0x7f)
			n += (size_t)snprintf(buf + n, size - n, "\\x%02x", *p);
		else
			buf[n++] = (char)*p;
	}
	if (!bare)
		buf[n++] = '"';
	buf[n] = 0;
	return buf;
}
