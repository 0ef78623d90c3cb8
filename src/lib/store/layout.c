/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

static const char *const subdirs[] = {"layers", "diff", "mnt", "work", "refs", "l", "link"};

static int *subdir_fd(store *s, size_t i)
{
	int *fds[] = {&s->layers_fd, &s->diff_fd, &s->mnt_fd, &s->work_fd, &s->refs_fd, &s->l_fd, &s->link_fd};
	return fds[i];
}

store *store_free(store *s)
{
	if (!s)
		return NULL;
	closep(&s->root_fd);
	for (size_t i = 0; i < ELEMENTSOF(subdirs); i++)
		closep(subdir_fd(s, i));
	free(s->root);
	free(s);
	return NULL;
}

static void store_freep(store **s)
{
	store_free(*s);
}

static int read_boot_id(char ret[STORE_BOOT_ID_LEN + 1])
{
	_cleanup_free_ char *data = NULL;
	int r = fs_read_at(AT_FDCWD, "/proc/sys/kernel/random/boot_id", 64, &data, NULL);
	if (r < 0)
		return r;
	if (strlen(data) < STORE_BOOT_ID_LEN)
		return -EBADMSG;
	memcpy(ret, data, STORE_BOOT_ID_LEN);
	ret[STORE_BOOT_ID_LEN] = '\0';
	return 0;
}

static int mkdir_p(const char *path, mode_t mode)
{
	/* Creates missing ancestors of the root (as `mkdir -p`). */
	_cleanup_free_ char *copy = strdup(path);
	if (!copy)
		return -ENOMEM;
	for (char *p = copy + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(copy, 0755) < 0 && errno != EEXIST)
			return negerrno();
		*p = '/';
	}
	if (mkdir(copy, mode) < 0 && errno != EEXIST)
		return negerrno();
	return 0;
}

int store_open(const char *root, bool create, store **ret, strata_error *err)
{
	if (root[0] != '/')
		return error_setf(err, -EINVAL, "root %s is not an absolute path", root);

	_cleanup_(store_freep) store *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->root_fd = -1;
	for (size_t i = 0; i < ELEMENTSOF(subdirs); i++)
		*subdir_fd(s, i) = -1;

	if (create) {
		int r = mkdir_p(root, 0700);
		if (r < 0)
			return error_set(err, r, "mkdir %s", root);
	}
	s->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->root_fd < 0 && errno == ENOENT && !create)
		return error_setf(err, -ENOENT, "%s is not a strata store (no such directory); run `strata init`",
				  root);
	if (s->root_fd < 0)
		return error_set(err, negerrno(), "open %s", root);

	/* The store's identity as a path: resolved once so mount options and
	 * messages name the real directory, whatever symlinks led to it. */
	s->root = realpath(root, NULL);
	if (!s->root)
		return error_set(err, negerrno(), "resolve %s", root);

	for (size_t i = 0; i < ELEMENTSOF(subdirs); i++) {
		if (create) {
			int r = fs_mkdir_at(s->root_fd, subdirs[i], 0700);
			if (r < 0 && r != -EEXIST)
				return error_set(err, r, "mkdir %s/%s", s->root, subdirs[i]);
		}
		int fd = openat(s->root_fd, subdirs[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			if (errno == ENOENT && !create)
				return error_setf(err, -ENOENT, "%s is not a strata store (no %s/); run `strata init`",
						  s->root, subdirs[i]);
			return error_set(err, negerrno(), "open %s/%s", s->root, subdirs[i]);
		}
		*subdir_fd(s, i) = fd;
	}
	if (create) {
		if (fchmod(s->root_fd, 0700) < 0)
			return error_set(err, negerrno(), "chmod %s", s->root);
		_cleanup_close_ int lfd = openat(s->root_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (lfd < 0)
			return error_set(err, negerrno(), "create %s/lock", s->root);
	}

	int r = read_boot_id(s->boot_id);
	if (r < 0)
		return error_set(err, r, "read /proc/sys/kernel/random/boot_id");

	*ret = TAKE_PTR(s);
	return 0;
}

int store_layer_exists(store *s, const char *id)
{
	struct stat st;
	if (fstatat(s->layers_fd, id, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : negerrno();
	return S_ISREG(st.st_mode) ? 1 : 0;
}
