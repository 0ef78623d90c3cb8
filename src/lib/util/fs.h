/* SPDX-License-Identifier: Apache-2.0 */
/* fd-relative file helpers.  All fds are O_CLOEXEC. */
#pragma once

#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "strata.h"

enum {
	/* fsync the file and its directory: the write survives a power loss. */
	FS_WRITE_SYNC = 1u << 0,
	/* Fail with -EEXIST instead of replacing an existing file. */
	FS_WRITE_NOREPLACE = 1u << 1,
};

/* Writes `name` in `dirfd` atomically: a temp file ".tmp-<name>-<rand>",
 * then rename.  Readers see the old content or the new, never a mix.
 * Temp names start with '.', which no layer id can. */
int fs_write_atomic_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode, unsigned flags);

/* Reads a whole small file into a NUL-terminated buffer.  -EFBIG past `max`. */
int fs_read_at(int dirfd, const char *name, size_t max, char **ret_data, size_t *ret_len);

/* mkdirat + fchmodat, so the mode is exact whatever the umask. -EEXIST kept. */
int fs_mkdir_at(int dirfd, const char *name, mode_t mode);

int fs_fsync_dir(int dirfd);

/* A fresh DIR stream on dirfd/name (name "." for dirfd itself), so the
 * caller's fd offset is untouched.  Readers must set errno = 0 before each
 * readdir() to tell the end from an error. */
int fs_opendir_at(int dirfd, const char *name, DIR **ret);

/* The names in dirfd (without "." and ".."), as a NULL-terminated vector
 * the caller frees with strv_free: a copy, so the caller may change the
 * directory while it walks the names. */
int fs_list_dir(int dirfd, char ***ret);

/* Removes `name` under `dirfd` and everything beneath it.  Never follows a
 * symlink and never descends into another filesystem: a mount point inside
 * the tree makes it fail with -EBUSY (deleting through a mount would destroy
 * another layer's data).  Uses a constant number of fds whatever the depth.
 * A missing `name` is success.  On failure, err names the offending path. */
int fs_rm_tree_at(int dirfd, const char *name, strata_error *err);

/* Fills buf (n bytes) with [0-9A-Za-z] from getrandom(). */
int fs_random_name(char *buf, size_t n);

/* 1 if `name` under dirfd is a mount point, 0 if not, -errno on error. */
int fs_is_mount_point_at(int dirfd, const char *name);

/* Appends a formatted string to a heap buffer (for option strings). */
typedef struct strbuf {
	char *buf;
	size_t len;
	size_t alloc;
} strbuf;

int strbuf_appendf(strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends "/name" to a relative path ("name" to an empty one): a tree
 * walk's way down.  -ENAMETOOLONG past PATH_MAX - 1 bytes (a container can
 * build a tree deeper than any path names), -ENOMEM. */
int strbuf_push_name(strbuf *sb, const char *name);
/* Back up to len bytes (a walk's way up). */
void strbuf_truncate(strbuf *sb, size_t len);
int strbuf_append(strbuf *sb, const char *s, size_t n);
void strbuf_release(strbuf *sb);
char *strbuf_detach(strbuf *sb);

/* openat2(root_fd, path, flags) resolving beneath root_fd without crossing
 * a symlink or a mount ("" is root_fd itself).  Returns the fd or -errno:
 * -ELOOP when a component is a symlink, -EXDEV when it leaves root_fd. */
int fs_open_beneath(int root_fd, const char *path, int flags);
