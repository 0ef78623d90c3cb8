/* SPDX-License-Identifier: Apache-2.0 */
#include <string.h>

#include "util.h"

const char *snap_quote(const char *s, char *buf, size_t size)
{
	static const char hex[] = "0123456789abcdef";
	size_t k = 0;
	for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
		if (k + 8 >= size) {
			memcpy(buf + k, "...", 3);
			k += 3;
			break;
		}
		if (*p < 0x20 || *p >= 0x7f || *p == '\\' || *p == '"') {
			buf[k++] = '\\';
			buf[k++] = 'x';
			buf[k++] = hex[*p >> 4];
			buf[k++] = hex[*p & 0xf];
		} else {
			buf[k++] = (char)*p;
		}
	}
	buf[k] = '\0';
	return buf;
}
