/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Short names for the legacy mount(2) path, whose option string must fit
 * one page.  As Docker's overlay2 does with its l/ directory, each layer
 * gets a random short name: l/<short> -> ../diff/<id>, and link/<id> ->
 * <short> for the way back.  Six characters of [0-9A-Za-z] (5.7e10 names,
 * collisions retried) keep 500 lowers within 4096 bytes when the mount
 * runs with l/ as its working directory: "lowerdir=" + 500 * 7 + upper and
 * work, about 3.7 KiB.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

int link_create(store *s, const char *id, strata_error *err)
{
	char target[STRATA_ID_MAX + 16];
	snprintf(target, sizeof(target), "../diff/%s", id);

	for (int attempt = 0; attempt < 16; attempt++) {
		char name[STORE_LINK_LEN + 1];
		int r = fs_random_name(name, STORE_LINK_LEN);
		if (r < 0)
			return error_set(err, r, "getrandom");
		name[STORE_LINK_LEN] = '\0';
		if (symlinkat(target, s->l_fd, name) < 0) {
			if (errno == EEXIST)
				continue;
			return error_set(err, negerrno(), "symlink %s/l/%s", s->root, name);
		}
		/* A leftover link/<id> from an interrupted create of the same id
		 * is replaced: nothing else can name a layer that does not exist. */
		if (unlinkat(s->link_fd, id, 0) < 0 && errno != ENOENT) {
			r = error_set(err, negerrno(), "unlink %s/link/%s", s->root, id);
			unlinkat(s->l_fd, name, 0);
			return r;
		}
		if (symlinkat(name, s->link_fd, id) < 0) {
			r = error_set(err, negerrno(), "symlink %s/link/%s", s->root, id);
			unlinkat(s->l_fd, name, 0);
			return r;
		}
		return 0;
	}
	return error_setf(err, -EEXIST, "no free short name in %s/l after 16 attempts", s->root);
}

int link_read(store *s, const char *id, char ret_short[STORE_LINK_LEN + 1])
{
	char buf[STORE_LINK_LEN + 2];
	ssize_t n = readlinkat(s->link_fd, id, buf, sizeof(buf));
	if (n < 0)
		return negerrno();
	if (n != STORE_LINK_LEN)
		return -EBADMSG;
	memcpy(ret_short, buf, STORE_LINK_LEN);
	ret_short[STORE_LINK_LEN] = '\0';
	return 0;
}

int link_remove(store *s, const char *id)
{
	char name[STORE_LINK_LEN + 1];
	int r = link_read(s, id, name);
	if (r == -ENOENT)
		return 0;
	if (r < 0 && r != -EBADMSG)
		return r;
	/* A malformed link/<id> names no short link: only it goes. */
	if (r == 0 && unlinkat(s->l_fd, name, 0) < 0 && errno != ENOENT)
		return negerrno();
	if (unlinkat(s->link_fd, id, 0) < 0 && errno != ENOENT)
		return negerrno();
	return 0;
}
