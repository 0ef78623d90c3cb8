/* SPDX-License-Identifier: Apache-2.0 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util/error.h"

void error_clear(strata_error *err)
{
	if (!err)
		return;
	err->code = 0;
	err->message[0] = '\0';
}

static int error_vset(strata_error *err, int code, int with_errno, const char *fmt, va_list ap)
{
	if (!err)
		return code;
	int n = vsnprintf(err->message, sizeof(err->message), fmt, ap);
	if (n < 0)
		n = 0;
	if (with_errno && (size_t)n < sizeof(err->message))
		snprintf(err->message + n, sizeof(err->message) - (size_t)n, ": %s", strerror(-code));
	err->code = -code;
	return code;
}

int error_set(strata_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	error_vset(err, code, 1, fmt, ap);
	va_end(ap);
	return code;
}

int error_setf(strata_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	error_vset(err, code, 0, fmt, ap);
	va_end(ap);
	return code;
}

int error_prefix(strata_error *err, int code, const char *fmt, ...)
{
	if (!err)
		return code;
	if (err->message[0] == '\0')
		snprintf(err->message, sizeof(err->message), "%s", strerror(-code));

	char prefix[STRATA_ERROR_MAX];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;

	char joined[2 * STRATA_ERROR_MAX + 2];
	snprintf(joined, sizeof(joined), "%s: %s", prefix, err->message);
	/* Truncation keeps the operation and subject, which come first. */
	size_t len = strnlen(joined, sizeof(err->message) - 1);
	memcpy(err->message, joined, len);
	err->message[len] = '\0';
	err->code = -code;
	return code;
}

const char *error_quote(const char *s, char *buf, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	size_t k = 0;
	if (!s)
		s = "";
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (k + 8 >= size) {
			memcpy(buf + k, "...", 3);
			k += 3;
			break;
		}
		if (*p >= 0x20 && *p < 0x7f && *p != '\\') {
			buf[k++] = (char)*p;
		} else {
			buf[k++] = '\\';
			buf[k++] = 'x';
			buf[k++] = hex[*p >> 4];
			buf[k++] = hex[*p & 15];
		}
	}
	buf[k] = '\0';
	return buf;
}
