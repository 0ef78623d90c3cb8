/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "union/union.h"
#include "util/banned.h"
#include "util/macro.h"

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static char *unescape(const char *s, size_t n)
{
	char *out = malloc(n + 1);
	if (!out)
		return NULL;
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\\' && i + 3 < n && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' &&
		    s[i + 2] <= '7' && s[i + 3] >= '0' && s[i + 3] <= '7') {
			out[k++] = (char)((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
			i += 3;
		} else {
			out[k++] = s[i];
		}
	}
	out[k] = '\0';
	return out;
}

/* Field i (0-based) of a space-separated line. */
static const char *field(const char *line, int i, size_t *len)
{
	const char *p = line;
	for (int f = 0; f < i; f++) {
		p = strchr(p, ' ');
		if (!p)
			return NULL;
		p++;
	}
	const char *e = strchr(p, ' ');
	*len = e ? (size_t)(e - p) : strcspn(p, "\n");
	return p;
}

int mountinfo_parse_line(const char *line, mount_entry *ret)
{
	size_t mlen, flen;
	const char *mp = field(line, 4, &mlen);
	const char *sep = strstr(line, " - ");
	if (!mp || !sep)
		return -EBADMSG;
	const char *fs = field(sep + 3, 0, &flen);
	if (!fs)
		return -EBADMSG;
	mount_entry e = {unescape(mp, mlen), strndup(fs, flen)};
	if (!e.mountpoint || !e.fstype) {
		free(e.mountpoint);
		free(e.fstype);
		return -ENOMEM;
	}
	*ret = e;
	return 0;
}

void mount_entries_free(mount_entry *m, size_t n)
{
	for (size_t i = 0; m && i < n; i++) {
		free(m[i].mountpoint);
		free(m[i].fstype);
	}
	free(m);
}

static int by_depth_desc(const void *a, const void *b)
{
	const mount_entry *x = a, *y = b;
	size_t lx = strlen(x->mountpoint), ly = strlen(y->mountpoint);
	return lx < ly ? 1 : lx > ly ? -1 : 0;
}

int mountinfo_under(const char *prefix, mount_entry **ret, size_t *ret_n)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return negerrno();

	size_t plen = strlen(prefix), n = 0, alloc = 0;
	mount_entry *list = NULL;
	_cleanup_free_ char *line = NULL;
	size_t cap = 0;
	int r = 0;
	/* Lines can be long: a 500-layer overlay lists every lower dir. */
	while (getline(&line, &cap, f) > 0) {
		mount_entry e;
		if (mountinfo_parse_line(line, &e) < 0)
			continue;
		bool under = !strncmp(e.mountpoint, prefix, plen) &&
			     (e.mountpoint[plen] == '\0' || e.mountpoint[plen] == '/');
		if (!under) {
			free(e.mountpoint);
			free(e.fstype);
			continue;
		}
		if (n == alloc) {
			alloc = alloc ? alloc * 2 : 8;
			mount_entry *nl = realloc(list, alloc * sizeof(*nl));
			if (!nl) {
				free(e.mountpoint);
				free(e.fstype);
				r = -ENOMEM;
				break;
			}
			list = nl;
		}
		list[n++] = e;
	}
	fclose(f);
	if (r < 0) {
		mount_entries_free(list, n);
		return r;
	}
	if (n > 1)
		qsort(list, n, sizeof(*list), by_depth_desc);
	*ret = list;
	*ret_n = n;
	return 0;
}
