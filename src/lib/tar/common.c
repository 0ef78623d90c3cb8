/* SPDX-License-Identifier: Apache-2.0 */
/* What apply, export and changes share: names, xattrs, inode sets. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#include "tar/tar.h"
#include "util/banned.h"
#include "util/macro.h"

bool tar_xattr_kept(const char *name)
{
	/* overlay's own bookkeeping, in either namespace: a rootless
	 * consumer mounting with userxattr honours user.overlay.*, so a tar
	 * must never carry one into a layer (or out of one). */
	if (!strncmp(name, "trusted.overlay.", 16) || !strncmp(name, "user.overlay.", 13))
		return false;
	return !strncmp(name, "user.", 5) || !strncmp(name, "trusted.", 8) || !strcmp(name, "security.capability");
}

bool tar_is_opaque(int dirfd)
{
	char v[2];
	return fgetxattr(dirfd, OVERLAY_OPAQUE_XATTR, v, sizeof(v)) == 1 && v[0] == 'y';
}

/* Lexical cleaning only rejects what can never be valid; whether a path
 * stays inside the layer is decided by the kernel at resolution time
 * (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS), not here. */
int tar_clean_name(const char *name, char **ret_path, const char **ret_why)
{
	if (!name || !*name) {
		*ret_why = "empty name";
		return -EINVAL;
	}
	if (name[0] == '/') {
		*ret_why = "absolute name";
		return -EINVAL;
	}
	size_t len = strlen(name);
	_cleanup_free_ char *out = malloc(len + 1);
	if (!out)
		return -ENOMEM;
	size_t o = 0;
	for (const char *p = name; *p;) {
		const char *e = strchrnul(p, '/');
		size_t n = (size_t)(e - p);
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			*ret_why = "\"..\" component";
			return -EINVAL;
		}
		if (n > 0 && !(n == 1 && p[0] == '.')) {
			if (o > 0)
				out[o++] = '/';
			memcpy(out + o, p, n);
			o += n;
		}
		p = *e ? e + 1 : e;
	}
	out[o] = '\0';
	*ret_path = TAKE_PTR(out);
	return 0;
}

/* Open addressing on (dev, ino); the table doubles at half full. */
static size_t slot(const inode_set *s, dev_t dev, ino_t ino)
{
	uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ull ^ (uint64_t)dev;
	return (size_t)(h ^ (h >> 29)) & (s->alloc - 1);
}

int inode_set_add(inode_set *s, dev_t dev, ino_t ino)
{
	if (2 * (s->n + 1) > s->alloc) {
		size_t alloc = s->alloc ? s->alloc * 2 : 64;
		struct inode_key *keys = calloc(alloc, sizeof(*keys));
		if (!keys)
			return -ENOMEM;
		inode_set grown = {.n = 0, .alloc = alloc, .keys = keys};
		for (size_t i = 0; i < s->alloc; i++)
			if (s->keys[i].ino)
				inode_set_add(&grown, s->keys[i].dev, s->keys[i].ino);
		free(s->keys);
		*s = grown;
	}
	/* ino 0 marks a free slot; no filesystem here hands out inode 0. */
	for (size_t i = slot(s, dev, ino);; i = (i + 1) & (s->alloc - 1)) {
		if (!s->keys[i].ino) {
			s->keys[i] = (struct inode_key){dev, ino};
			s->n++;
			return 1;
		}
		if (s->keys[i].ino == ino && s->keys[i].dev == dev)
			return 0;
	}
}

void inode_set_release(inode_set *s)
{
	free(s->keys);
	*s = (inode_set){0};
}
