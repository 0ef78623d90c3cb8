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

/* Creates missing ancestors of the root and the root itself (as
 * `mkdir -p`).  *ret_created: the root itself was made here. */
static int mkdir_p(const char *path, mode_t mode, bool *ret_created)
{
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
	*ret_created = mkdir(copy, mode) == 0;
	if (!*ret_created && errno != EEXIST)
		return negerrno();
	return 0;
}

/* Names strata makes at the top of a store.  Temp files (".tmp-...") and
 * probe dirs (".probe-...") are strata's too. */
static const char *const top_names[] = {"layers", "diff",   "mnt",	  "work", "refs",	 "l",	      "link",
					"lock",	  "engine", STORE_MARKER, "thin", "import-aufs", "containerd"};

static bool top_name_ours(const char *name)
{
	if (!strncmp(name, ".tmp-", 5) || !strncmp(name, ".probe-", 7))
		return true;
	for (size_t i = 0; i < ELEMENTSOF(top_names); i++)
		if (!strcmp(name, top_names[i]))
			return true;
	return false;
}

/*
 * What the directory at root_fd is: 1 a strata store (it has the marker,
 * or it is a store made before the marker existed: the whole layout, the
 * lock file and nothing else at its top), 0 empty, or -ENOTEMPTY with
 * *ret_foreign naming an entry that says it is somebody else's.
 */
static int store_identify(int root_fd, char **ret_foreign)
{
	*ret_foreign = NULL;
	if (faccessat(root_fd, STORE_MARKER, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 1;
	_cleanup_strv_free_ char **names = NULL;
	int r = fs_list_dir(root_fd, &names);
	if (r < 0)
		return r;
	bool only_temp = true;
	for (char **p = names; *p; p++) {
		if (!top_name_ours(*p)) {
			*ret_foreign = strdup(*p);
			return *ret_foreign ? -ENOTEMPTY : -ENOMEM;
		}
		/* An init that died writing the marker leaves only its temp. */
		if (strncmp(*p, ".tmp-", 5) != 0)
			only_temp = false;
	}
	if (only_temp)
		return 0;
	for (size_t i = 0; i < ELEMENTSOF(subdirs); i++) {
		struct stat st;
		if (fstatat(root_fd, subdirs[i], &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode)) {
			*ret_foreign = strdup(names[0]);
			return *ret_foreign ? -ENOTEMPTY : -ENOMEM;
		}
	}
	struct stat st;
	if (fstatat(root_fd, "lock", &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode)) {
		*ret_foreign = strdup(names[0]);
		return *ret_foreign ? -ENOTEMPTY : -ENOMEM;
	}
	return 1;
}

/* The marker goes first into an empty directory: from then on the
 * directory is a store, and a later init finishes its layout. */
static int write_marker(int root_fd)
{
	static const char text[] = STORE_MARKER_TEXT;
	int r = fs_write_atomic_at(root_fd, STORE_MARKER, text, sizeof(text) - 1, 0600, FS_WRITE_SYNC);
	/* Two inits of one new store race to the same content. */
	if (r < 0 && faccessat(root_fd, STORE_MARKER, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0;
	return r;
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

	bool created = false;
	if (create) {
		int r = mkdir_p(root, 0700, &created);
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

	/* Only a directory strata made, or an empty one, becomes a store:
	 * recovery deletes and unmounts what it finds in a store, so a
	 * directory holding somebody's files is refused, never adopted. */
	_cleanup_free_ char *foreign = NULL;
	int kind = store_identify(s->root_fd, &foreign);
	if (kind == -ENOTEMPTY)
		return error_setf(err, -ENOTEMPTY,
				  "%s is not a strata store and is not empty (it holds \"%s\"); strata makes a store "
				  "only in a new or empty directory",
				  s->root, QUOTE(foreign));
	if (kind < 0)
		return error_set(err, kind, "read %s", s->root);
	if (kind == 0 && !create)
		return error_setf(err, -ENOENT, "%s is not a strata store (it is empty); run `strata init`", s->root);
	if (create && faccessat(s->root_fd, STORE_MARKER, F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
		int r = write_marker(s->root_fd);
		if (r < 0)
			return error_set(err, r, "write %s/%s", s->root, STORE_MARKER);
	}

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
		/* Only a root made here gets its mode set: a directory strata
		 * was pointed at keeps the one it had. */
		if (created && fchmod(s->root_fd, 0700) < 0)
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
