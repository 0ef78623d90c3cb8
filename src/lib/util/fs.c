/* SPDX-License-Identifier: Apache-2.0 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

int fs_random_name(char *buf, size_t n)
{
	static const char alphabet[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	unsigned char raw[64];

	if (n > sizeof(raw))
		return -EINVAL;
	size_t got = 0;
	while (got < n) {
		ssize_t r = getrandom(raw + got, n - got, 0);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return negerrno();
		}
		got += (size_t)r;
	}
	/* 62 does not divide 256: the bias is irrelevant for unique names. */
	for (size_t i = 0; i < n; i++)
		buf[i] = alphabet[raw[i] % 62];
	return 0;
}

static int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		ssize_t w = write(fd, p, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return negerrno();
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

int fs_fsync_dir(int dirfd)
{
	/* The store keeps its dirs open O_RDONLY, so no new fd is needed
	 * (a step that could fail with EMFILE after a rename committed). */
	if (fsync(dirfd) == 0)
		return 0;
	if (errno != EBADF)
		return negerrno();
	_cleanup_close_ int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return negerrno();
	if (fsync(fd) < 0)
		return negerrno();
	return 0;
}

int fs_write_atomic_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode, unsigned flags)
{
	char rnd[8], tmp[NAME_MAX + 1];
	int r = fs_random_name(rnd, sizeof(rnd));
	if (r < 0)
		return r;
	if (snprintf(tmp, sizeof(tmp), ".tmp-%.*s-%.200s", (int)sizeof(rnd), rnd, name) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;

	_cleanup_close_ int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return negerrno();
	r = write_all(fd, data, len);
	if (r >= 0 && fchmod(fd, mode) < 0)
		r = negerrno();
	if (r >= 0 && (flags & FS_WRITE_SYNC) && fsync(fd) < 0)
		r = negerrno();
	if (r >= 0) {
		unsigned rflags = (flags & FS_WRITE_NOREPLACE) ? RENAME_NOREPLACE : 0;
		if (renameat2(dirfd, tmp, dirfd, name, rflags) < 0)
			r = negerrno();
	}
	if (r < 0) {
		unlinkat(dirfd, tmp, 0);
		return r;
	}
	if (flags & FS_WRITE_SYNC)
		return fs_fsync_dir(dirfd);
	return 0;
}

int fs_read_at(int dirfd, const char *name, size_t max, char **ret_data, size_t *ret_len)
{
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return negerrno();

	size_t alloc = 256, len = 0;
	_cleanup_free_ char *buf = malloc(alloc);
	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (len + 1 >= alloc) {
			if (alloc > max + 1)
				return -EFBIG;
			alloc *= 2;
			char *n = realloc(buf, alloc);
			if (!n)
				return -ENOMEM;
			buf = n;
		}
		ssize_t got = read(fd, buf + len, alloc - len - 1);
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return negerrno();
		}
		if (got == 0)
			break;
		len += (size_t)got;
		if (len > max)
			return -EFBIG;
	}
	buf[len] = '\0';
	if (ret_len)
		*ret_len = len;
	*ret_data = TAKE_PTR(buf);
	return 0;
}

int fs_mkdir_at(int dirfd, const char *name, mode_t mode)
{
	if (mkdirat(dirfd, name, mode) < 0)
		return negerrno();
	/* mkdir applies the umask; the layout's modes are part of its contract. */
	if (fchmodat(dirfd, name, mode, 0) < 0)
		return negerrno();
	return 0;
}

int fs_is_mount_point_at(int dirfd, const char *name)
{
	struct statx sx;
	if (statx(dirfd, name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_TYPE, &sx) < 0)
		return negerrno();
	if (sx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT)
		return !!(sx.stx_attributes & STATX_ATTR_MOUNT_ROOT);

	/* Old kernels: compare the device with the parent's. */
	struct stat self, parent;
	if (fstatat(dirfd, name, &self, AT_SYMLINK_NOFOLLOW) < 0)
		return negerrno();
	_cleanup_close_ int fd = openat(dirfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return negerrno();
	if (fstatat(fd, "..", &parent, 0) < 0)
		return negerrno();
	return self.st_dev != parent.st_dev || self.st_ino == parent.st_ino;
}

/*
 * Depth-first removal that keeps one directory fd open at a time: empty a
 * directory's files; on a non-empty subdirectory descend into it; when a
 * directory is empty go back up through ".." and rescan the parent.  The
 * tree is ours (a layer being removed), so nobody renames inside it while
 * we walk, which is what makes ".." safe here.  Every descent checks st_dev,
 * so a mount point anywhere in the tree stops the removal.
 */
int fs_rm_tree_at(int parent_fd, const char *name, strata_error *err)
{
	struct stat top;
	if (fstatat(parent_fd, name, &top, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		return error_set(err, negerrno(), "stat %s", name);
	}
	if (!S_ISDIR(top.st_mode)) {
		if (unlinkat(parent_fd, name, 0) < 0 && errno != ENOENT)
			return error_set(err, negerrno(), "unlink %s", name);
		return 0;
	}
	struct stat parent_st;
	if (fstatat(parent_fd, ".", &parent_st, 0) < 0)
		return error_set(err, negerrno(), "stat parent of %s", name);
	if (top.st_dev != parent_st.st_dev)
		return error_set(err, -EBUSY, "remove %s: is a mount point", name);

	int fd = openat(parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return error_set(err, negerrno(), "open %s", name);
	size_t depth = 0;
	int r = 0;

	for (;;) {
		DIR *d = fdopendir(fd);
		if (!d) {
			r = error_set(err, negerrno(), "read dir under %s", name);
			close(fd);
			return r;
		}
		int next = -1; /* the subdirectory to descend into, if any */
		struct dirent *de;
		for (;;) {
			errno = 0;
			de = readdir(d);
			if (!de)
				break;
			if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
				continue;
			int dfd = dirfd(d);
			bool is_dir = de->d_type == DT_DIR;
			if (de->d_type == DT_UNKNOWN) {
				struct stat st;
				if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
					if (errno == ENOENT)
						continue;
					r = error_set(err, negerrno(), "stat %s under %s", de->d_name, name);
					break;
				}
				is_dir = S_ISDIR(st.st_mode);
			}
			if (!is_dir) {
				if (unlinkat(dfd, de->d_name, 0) < 0 && errno != ENOENT) {
					r = error_set(err, negerrno(), "unlink %s under %s", de->d_name, name);
					break;
				}
				continue;
			}
			if (unlinkat(dfd, de->d_name, AT_REMOVEDIR) == 0 || errno == ENOENT)
				continue;
			if (errno == EBUSY) {
				r = error_set(err, -EBUSY, "remove %s: %s inside it is a mount point", name,
					      de->d_name);
				break;
			}
			if (errno != ENOTEMPTY && errno != EEXIST) {
				r = error_set(err, negerrno(), "rmdir %s under %s", de->d_name, name);
				break;
			}
			struct stat st;
			if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
				r = error_set(err, negerrno(), "stat %s under %s", de->d_name, name);
				break;
			}
			if (st.st_dev != top.st_dev) {
				r = error_set(err, -EBUSY, "remove %s: %s inside it is a mount point", name,
					      de->d_name);
				break;
			}
			next = openat(dfd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (next < 0) {
				r = error_set(err, negerrno(), "open %s under %s", de->d_name, name);
				break;
			}
			break;
		}
		if (r == 0 && !de && errno != 0)
			r = error_set(err, negerrno(), "read dir under %s", name);

		if (r < 0) {
			closedir(d);
			return r;
		}
		if (next >= 0) {
			closedir(d);
			fd = next;
			depth++;
			continue;
		}
		/* This directory is empty now. */
		if (depth == 0) {
			closedir(d);
			break;
		}
		int up = openat(dirfd(d), "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		closedir(d);
		if (up < 0)
			return error_set(err, negerrno(), "open parent dir under %s", name);
		fd = up;
		depth--;
	}

	if (unlinkat(parent_fd, name, AT_REMOVEDIR) < 0 && errno != ENOENT)
		return error_set(err, negerrno(), "rmdir %s", name);
	return 0;
}

int fs_opendir_at(int dirfd, const char *name, DIR **ret)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return negerrno();
	DIR *d = fdopendir(fd);
	if (!d) {
		int r = negerrno();
		close(fd);
		return r;
	}
	*ret = d;
	return 0;
}

int fs_list_dir(int dirfd, char ***ret)
{
	_cleanup_closedir_ DIR *dir = NULL;
	int r = fs_opendir_at(dirfd, ".", &dir);
	if (r < 0)
		return r;
	size_t n = 0, alloc = 16;
	_cleanup_strv_free_ char **v = calloc(alloc + 1, sizeof(char *));
	if (!v)
		return -ENOMEM;
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(dir);
		if (!de)
			break;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == alloc) {
			alloc *= 2;
			char **nv = realloc(v, (alloc + 1) * sizeof(char *));
			if (!nv)
				return -ENOMEM;
			v = nv;
		}
		v[n] = strdup(de->d_name);
		if (!v[n])
			return -ENOMEM;
		v[++n] = NULL;
	}
	if (errno)
		return negerrno();
	*ret = TAKE_PTR(v);
	return 0;
}

int strbuf_append(strbuf *sb, const char *s, size_t n)
{
	if (sb->len + n + 1 > sb->alloc) {
		size_t want = sb->alloc ? sb->alloc : 256;
		while (want < sb->len + n + 1)
			want *= 2;
		char *nb = realloc(sb->buf, want);
		if (!nb)
			return -ENOMEM;
		sb->buf = nb;
		sb->alloc = want;
	}
	memcpy(sb->buf + sb->len, s, n);
	sb->len += n;
	sb->buf[sb->len] = '\0';
	return 0;
}

int strbuf_appendf(strbuf *sb, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if (sb->len + (size_t)n + 1 > sb->alloc) {
		int r = strbuf_append(sb, "", 0); /* ensure buf exists */
		if (r < 0)
			return r;
		size_t want = sb->alloc;
		while (want < sb->len + (size_t)n + 1)
			want *= 2;
		char *nb = realloc(sb->buf, want);
		if (!nb)
			return -ENOMEM;
		sb->buf = nb;
		sb->alloc = want;
	}
	va_start(ap, fmt);
	vsnprintf(sb->buf + sb->len, sb->alloc - sb->len, fmt, ap);
	va_end(ap);
	sb->len += (size_t)n;
	return 0;
}

int strbuf_push_name(strbuf *sb, const char *name)
{
	size_t nl = strlen(name);
	if (sb->len + 1 + nl >= PATH_MAX)
		return -ENAMETOOLONG;
	if ((sb->len && strbuf_append(sb, "/", 1) < 0) || strbuf_append(sb, name, nl) < 0)
		return -ENOMEM;
	return 0;
}

void strbuf_truncate(strbuf *sb, size_t len)
{
	if (sb->buf && len <= sb->len) {
		sb->len = len;
		sb->buf[len] = '\0';
	}
}

void strbuf_release(strbuf *sb)
{
	free(sb->buf);
	sb->buf = NULL;
	sb->len = sb->alloc = 0;
}

char *strbuf_detach(strbuf *sb)
{
	char *b = sb->buf;
	if (!b)
		b = strdup("");
	sb->buf = NULL;
	sb->len = sb->alloc = 0;
	return b;
}

int fs_open_beneath(int root_fd, const char *path, int flags)
{
	struct open_how how = {
		.flags = (uint64_t)(flags | O_CLOEXEC),
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV,
	};
	long fd = syscall(SYS_openat2, root_fd, *path ? path : ".", &how, sizeof(how));
	return fd < 0 ? negerrno() : (int)fd;
}
