/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Writing layer tars: PAX (ustar headers, extended records only where
 * needed), as Docker writes them: mtimes in whole seconds, no atime or
 * ctime, no user or group names (numeric owners; no NSS lookups), entries
 * sorted by name so the same tree always gives the same bytes.  Hardlinks
 * go through libarchive's link resolver: the first path carries the data,
 * later ones link to it.  Overlay whiteouts (character devices 0/0) share
 * one inode with overlay's work dir, so they never reach the resolver.
 *
 * Trees being exported may belong to a running container: every path is
 * opened relative to its parent's fd with O_NOFOLLOW (or beneath the root
 * with fs_open_beneath), so a symlink swapped in cannot lead outside.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "tar/tar.h"
#include "util/banned.h"
#include "util/dirstack.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

#define DATA_BUF   (256 * 1024)
#define XATTR_LIST (64 * 1024)

struct tar_writer {
	struct archive *a;
	struct archive_entry_linkresolver *links;
	const tar_opts *o;
	strata_progress progress;
	char *buf;	   /* DATA_BUF bytes */
	char *xattr_names; /* XATTR_LIST bytes */
	char *xattr_value; /* XATTR_SIZE_MAX bytes, on first use */
	/* The naive diff's last parent dir. */
	char *parent_path;
	int parent_fd;
};

tar_writer *tar_writer_free(tar_writer *w)
{
	if (!w)
		return NULL;
	if (w->a)
		archive_write_free(w->a);
	if (w->links)
		archive_entry_linkresolver_free(w->links);
	if (w->parent_fd >= 0)
		close(w->parent_fd);
	free(w->parent_path);
	free(w->buf);
	free(w->xattr_names);
	free(w->xattr_value);
	free(w);
	return NULL;
}

static void tar_writer_freep(tar_writer **w)
{
	tar_writer_free(*w);
}

int tar_writer_new(int out_fd, const tar_opts *o, tar_writer **ret, strata_error *err)
{
	_cleanup_(tar_writer_freep) tar_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->parent_fd = -1;
	w->o = o;
	w->buf = malloc(DATA_BUF);
	w->xattr_names = malloc(XATTR_LIST);
	w->a = archive_write_new();
	w->links = archive_entry_linkresolver_new();
	if (!w->buf || !w->xattr_names || !w->a || !w->links)
		return -ENOMEM;
	archive_entry_linkresolver_set_strategy(w->links, ARCHIVE_FORMAT_TAR_PAX_RESTRICTED);
	/* Into a pipe, a bigger pipe buffer lets the reader drain while this
	 * side reads files, instead of the two taking turns every 64 KiB. */
	struct stat ost;
	if (fstat(out_fd, &ost) == 0 && S_ISFIFO(ost.st_mode))
		(void)fcntl(out_fd, F_SETPIPE_SZ, 1024 * 1024);
	/* Blocks of 64 KiB cut the write calls; no padding of the last one
	 * beyond the end-of-archive blocks (a pipe is not a tape). */
	if (archive_write_set_format_pax_restricted(w->a) != ARCHIVE_OK ||
	    archive_write_set_format_option(w->a, "pax", "xattrheader", "SCHILY") != ARCHIVE_OK ||
	    archive_write_add_filter_none(w->a) != ARCHIVE_OK ||
	    archive_write_set_bytes_per_block(w->a, 64 * 1024) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(w->a, 1) != ARCHIVE_OK ||
	    archive_write_open_fd(w->a, out_fd) != ARCHIVE_OK)
		return error_setf(err, -EIO, "tar writer: %s", archive_error_string(w->a));
	*ret = TAKE_PTR(w);
	return 0;
}

int tar_writer_finish(tar_writer *w, strata_error *err)
{
	if (archive_write_close(w->a) != ARCHIVE_OK)
		return error_setf(err, -EIO, "write tar: %s", archive_error_string(w->a));
	w->progress.done = 1;
	if (w->o->progress)
		w->o->progress(&w->progress, w->o->progress_data);
	return 0;
}

static int archive_fail(tar_writer *w, const char *path, strata_error *err)
{
	int code = archive_errno(w->a) > 0 ? -archive_errno(w->a) : -EIO;
	return error_setf(err, code, "write tar entry \"%s\": %s", QUOTE(path), archive_error_string(w->a));
}

/* Adds the kept xattrs of an inode: through fd when >= 0, else through
 * the parent's magic link and the name (l*xattr: not followed). */
static int add_xattrs(tar_writer *w, struct archive_entry *e, int fd, int dirfd, const char *name, const char *path,
		      strata_error *err)
{
	char lpath[64 + NAME_MAX];
	if (fd < 0)
		snprintf(lpath, sizeof(lpath), "/proc/self/fd/%d/%s", dirfd, name);
	ssize_t n =
		fd >= 0 ? flistxattr(fd, w->xattr_names, XATTR_LIST) : llistxattr(lpath, w->xattr_names, XATTR_LIST);
	if (n < 0) {
		if (errno == ENOTSUP || errno == ENODATA)
			return 0;
		return error_set(err, negerrno(), "list xattrs of \"%s\"", QUOTE(path));
	}
	for (const char *k = w->xattr_names; k < w->xattr_names + n; k += strlen(k) + 1) {
		if (!tar_xattr_kept(k))
			continue;
		if (!w->xattr_value && !(w->xattr_value = malloc(XATTR_SIZE_MAX)))
			return -ENOMEM;
		ssize_t v = fd >= 0 ? fgetxattr(fd, k, w->xattr_value, XATTR_SIZE_MAX)
				    : lgetxattr(lpath, k, w->xattr_value, XATTR_SIZE_MAX);
		if (v < 0) {
			if (errno == ENODATA)
				continue; /* removed meanwhile */
			return error_set(err, negerrno(), "read xattr %s of \"%s\"", k, QUOTE(path));
		}
		archive_entry_xattr_add_entry(e, k, w->xattr_value, (size_t)v);
	}
	return 0;
}

static int fill_entry(tar_writer *w, struct archive_entry *e, const struct stat *st, const char *path,
		      strata_error *err)
{
	archive_entry_copy_stat(e, st);
	archive_entry_unset_atime(e);
	archive_entry_unset_ctime(e);
	archive_entry_unset_birthtime(e);
	archive_entry_set_mtime(e, st->st_mtim.tv_sec, 0);
	archive_entry_set_pathname(e, path);
	uint32_t uid, gid;
	if (idmap_to_container(w->o->uids, st->st_uid, &uid) < 0)
		return error_setf(err, -ERANGE, "\"%s\": uid %u has no container id in the uid map", QUOTE(path),
				  (unsigned)st->st_uid);
	if (idmap_to_container(w->o->gids, st->st_gid, &gid) < 0)
		return error_setf(err, -ERANGE, "\"%s\": gid %u has no container id in the gid map", QUOTE(path),
				  (unsigned)st->st_gid);
	archive_entry_set_uid(e, uid);
	archive_entry_set_gid(e, gid);
	return 0;
}

/* Data regions of a file with holes, as libarchive's sparse map. */
static int add_sparse_map(struct archive_entry *e, int fd, const struct stat *st)
{
	if ((uint64_t)st->st_blocks * 512 >= (uint64_t)st->st_size)
		return 0;
	off_t off = 0;
	bool any_hole = false;
	while (off < st->st_size) {
		off_t data = lseek(fd, off, SEEK_DATA);
		if (data < 0) {
			if (errno == ENXIO) { /* a hole to the end */
				any_hole = true;
				break;
			}
			return errno == EINVAL ? 0 : negerrno(); /* no SEEK_DATA: dense */
		}
		off_t hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return negerrno();
		if (hole > st->st_size)
			hole = st->st_size;
		if (data > off)
			any_hole = true;
		archive_entry_sparse_add_entry(e, data, hole - data);
		off = hole;
	}
	if (!any_hole)
		archive_entry_sparse_clear(e);
	/* A file that is all hole still needs one (empty) region at its end
	 * for readers to learn its size. */
	else if (archive_entry_sparse_count(e) == 0)
		archive_entry_sparse_add_entry(e, st->st_size, 0);
	return lseek(fd, 0, SEEK_SET) < 0 ? negerrno() : 0;
}

/* Streams the bytes [from, to) of fd.  A file that shrank meanwhile is
 * padded with zeros (the header is written); one that grew is cut at the
 * header's size. */
static int write_range(tar_writer *w, int fd, off_t from, off_t to, const char *path, strata_error *err)
{
	off_t done = from;
	while (done < to) {
		size_t want = (size_t)(to - done < DATA_BUF ? to - done : DATA_BUF);
		ssize_t n = pread(fd, w->buf, want, done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return error_set(err, negerrno(), "read \"%s\"", QUOTE(path));
		}
		if (n == 0)
			break;
		if (archive_write_data(w->a, w->buf, (size_t)n) < 0)
			return archive_fail(w, path, err);
		done += n;
		w->progress.bytes += (uint64_t)n;
		if (w->o->progress)
			w->o->progress(&w->progress, w->o->progress_data);
	}
	return 0;
}

/* libarchive takes a sparse file's content whole and drops the bytes of
 * its holes itself; a hole is fed from zeros, never read (16 GiB of hole
 * would otherwise be 16 GiB of reads). */
static int write_holes(tar_writer *w, off_t len, const char *path, strata_error *err)
{
	static const char zeros[DATA_BUF];
	while (len > 0) {
		size_t n = (size_t)(len < DATA_BUF ? len : DATA_BUF);
		if (archive_write_data(w->a, zeros, n) < 0)
			return archive_fail(w, path, err);
		len -= (off_t)n;
	}
	return 0;
}

/* The content of the entry e (stat'ed size `size`), region by region when
 * it has a sparse map. */
static int write_content(tar_writer *w, struct archive_entry *e, int fd, off_t size, const char *path,
			 strata_error *err)
{
	if (archive_entry_sparse_reset(e) == 0)
		return write_range(w, fd, 0, size, path, err);
	off_t at = 0;
	la_int64_t off, len;
	while (archive_entry_sparse_next(e, &off, &len) == ARCHIVE_OK) {
		if (off < at || off > size)
			break; /* not a map add_sparse_map makes */
		if (len > size - off)
			len = size - off;
		int r = write_holes(w, off - at, path, err);
		if (r >= 0)
			r = write_range(w, fd, off, off + len, path, err);
		if (r < 0)
			return r;
		at = off + len;
	}
	return write_holes(w, size - at, path, err);
}

static int write_entry_header(tar_writer *w, struct archive_entry *e, const char *path, strata_error *err)
{
	int ar = archive_write_header(w->a, e);
	if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN)
		return archive_fail(w, path, err);
	w->progress.entries++;
	if (w->o->progress)
		w->o->progress(&w->progress, w->o->progress_data);
	return 0;
}

/* One non-directory entry named `name` in dirfd, at `path` in the tar. */
static int write_nondir(tar_writer *w, int dirfd, const char *name, const char *path, const struct stat *st,
			strata_error *err)
{
	struct archive_entry *e = archive_entry_new();
	if (!e)
		return -ENOMEM;
	struct archive_entry *spare = NULL;
	_cleanup_close_ int fd = -1;
	int r = fill_entry(w, e, st, path, err);
	if (r < 0)
		goto out;

	if (S_ISREG(st->st_mode)) {
		/* A running container may swap the file for a fifo (open would
		 * block) or a device node (reading it would copy a host disk
		 * into the tar): open without blocking, and read only the very
		 * inode that was stat'ed as a regular file. */
		fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOATIME | O_CLOEXEC);
		if (fd < 0 && errno == EPERM)
			fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		if (fd < 0) {
			r = error_set(err, negerrno(), "open \"%s\"", QUOTE(path));
			goto out;
		}
		struct stat fst;
		if (fstat(fd, &fst) < 0 || !S_ISREG(fst.st_mode) || fst.st_ino != st->st_ino ||
		    fst.st_dev != st->st_dev) {
			r = error_setf(err, -EAGAIN, "\"%s\" changed while it was being read", QUOTE(path));
			goto out;
		}
		r = add_sparse_map(e, fd, st);
		if (r < 0) {
			error_set(err, r, "map holes of \"%s\"", QUOTE(path));
			goto out;
		}
	} else if (S_ISLNK(st->st_mode)) {
		char target[PATH_MAX + 1];
		ssize_t n = readlinkat(dirfd, name, target, sizeof(target) - 1);
		if (n < 0) {
			r = error_set(err, negerrno(), "readlink \"%s\"", QUOTE(path));
			goto out;
		}
		target[n] = '\0';
		archive_entry_set_symlink(e, target);
	}
	r = add_xattrs(w, e, fd, dirfd, name, path, err);
	if (r < 0)
		goto out;

	/* Hardlinked symlinks go as separate symlinks: apply (like Docker)
	 * refuses a hardlink to a symlink. */
	if (st->st_nlink > 1 && !S_ISLNK(st->st_mode)) {
		archive_entry_linkify(w->links, &e, &spare);
		if (archive_entry_hardlink(e))
			archive_entry_sparse_clear(e);
	}
	r = write_entry_header(w, e, path, err);
	if (r < 0)
		goto out;
	/* A hardlink to an earlier path has size 0: no data. */
	if (fd >= 0 && archive_entry_size(e) > 0 && !archive_entry_hardlink(e))
		r = write_content(w, e, fd, st->st_size, path, err);
out:
	archive_entry_free(e);
	archive_entry_free(spare);
	return r;
}

static int write_dir(tar_writer *w, int fd, const char *path, const struct stat *st, strata_error *err)
{
	struct archive_entry *e = archive_entry_new();
	if (!e)
		return -ENOMEM;
	int r = fill_entry(w, e, st, path, err);
	if (r >= 0)
		r = add_xattrs(w, e, fd, -1, NULL, path, err);
	if (r >= 0)
		r = write_entry_header(w, e, path, err);
	archive_entry_free(e);
	return r;
}

/* "<dir>/<marker>" as an empty regular file with the owner, mode and mtime
 * of `st`, as Docker writes whiteouts and opaque markers. */
static int write_marker(tar_writer *w, const char *dir, const char *marker, const char *name, const struct stat *st,
			strata_error *err)
{
	_cleanup_free_ char *path = NULL;
	if (asprintf(&path, "%s%s%s%s", dir, *dir ? "/" : "", marker, name) < 0)
		return -ENOMEM;
	struct stat m = {
		.st_mode = S_IFREG | (st ? st->st_mode & 0777 : 0),
		.st_uid = st ? st->st_uid : 0,
		.st_gid = st ? st->st_gid : 0,
		.st_nlink = 1,
		.st_mtim = st ? st->st_mtim : (struct timespec){0},
	};
	/* A whiteout overlay made while a container ran belongs to whoever
	 * mounted the union (the host's root), which an id map need not
	 * cover: it is no file of the container's, so it goes out as the
	 * container's root's (Docker leaves such whiteouts unmapped). */
	uint32_t id;
	if (idmap_to_container(w->o->uids, m.st_uid, &id) < 0 && idmap_to_host(w->o->uids, 0, &id) == 0)
		m.st_uid = id;
	if (idmap_to_container(w->o->gids, m.st_gid, &id) < 0 && idmap_to_host(w->o->gids, 0, &id) == 0)
		m.st_gid = id;
	struct archive_entry *e = archive_entry_new();
	if (!e)
		return -ENOMEM;
	int r = fill_entry(w, e, &m, path, err);
	if (r >= 0)
		r = write_entry_header(w, e, path, err);
	archive_entry_free(e);
	return r;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One directory of the walk: its sorted names and how far it got. */
typedef struct export_level {
	char **names;
	size_t next;
	size_t path_len; /* of the walk's path at this directory */
} export_level;

/* Appends "/name" (or "name" at the root) to the walk's path.  A path a
 * tar reader could not create (PATH_MAX) is refused. */
static int path_push(strbuf *path, const char *name, strata_error *err)
{
	int r = strbuf_push_name(path, name);
	if (r == -ENAMETOOLONG)
		return error_setf(err, r, "\"%s/...\": a path longer than %d bytes cannot go into a tar",
				  QUOTE(path->buf), PATH_MAX - 1);
	return r;
}

/* A new level for the directory open at fd. */
static int level_open(export_level **levels, size_t *n, size_t *alloc, int fd, const strbuf *path, strata_error *err)
{
	if (grow(levels, alloc, *n, sizeof(**levels), 16) < 0)
		return -ENOMEM;
	char **names = NULL;
	int r = fs_list_dir(fd, &names);
	if (r < 0)
		return error_set(err, r, "read dir \"%s\"", QUOTE(path->len ? path->buf : "/"));
	qsort(names, strv_length(names), sizeof(char *), cmp_names);
	(*levels)[(*n)++] = (export_level){names, 0, path->len};
	return 0;
}

/* One name of the directory at dirfd (path->buf), in the AUFS format or
 * overlay's.  *ret_is_dir: it is a directory to descend into, its path
 * appended to `path`. */
static int write_name(tar_writer *w, int dirfd, const char *name, strbuf *path, bool *ret_is_dir, struct stat *st,
		      strata_error *err)
{
	*ret_is_dir = false;
	int r;
	if (fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0; /* deleted meanwhile */
		return error_set(err, negerrno(), "stat \"%s/%s\"", QUOTE(path->buf), QUOTE(name));
	}
	if (w->o->flags & TAR_AUFS) {
		/* aufs's whiteouts are hardlinks of one file (.wh..wh.aufs):
		 * each is its own entry, never a link; its bookkeeping dirs
		 * are not content. */
		if (!strncmp(name, WHITEOUT_META, strlen(WHITEOUT_META))) {
			if (!strcmp(name, WHITEOUT_OPAQUE) && S_ISREG(st->st_mode) && path->len)
				return write_marker(w, path->buf, WHITEOUT_OPAQUE, "", st, err);
			return 0;
		}
		if (!strncmp(name, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) && S_ISREG(st->st_mode))
			return write_marker(w, path->buf, WHITEOUT_PREFIX, name + strlen(WHITEOUT_PREFIX), st, err);
	} else if (tar_is_whiteout(st)) {
		return write_marker(w, path->buf, WHITEOUT_PREFIX, name, st, err);
	}
	if (S_ISSOCK(st->st_mode))
		return 0; /* tar has no sockets; Docker skips them too */
	size_t base_len = path->len;
	r = path_push(path, name, err);
	if (r < 0)
		return r;
	if (!S_ISDIR(st->st_mode)) {
		r = write_nondir(w, dirfd, name, path->buf, st, err);
		strbuf_truncate(path, base_len);
		return r;
	}
	*ret_is_dir = true;
	return 0;
}

/* Depth-first in name order, without recursion: a dir_stack holds the
 * open directories, a level per directory its names. */
static int walk(tar_writer *w, int root_fd, strbuf *path, strata_error *err)
{
	dir_stack dirs = DIR_STACK_INIT(root_fd);
	export_level *levels = NULL;
	size_t n = 0, alloc = 0;
	int r = level_open(&levels, &n, &alloc, root_fd, path, err);
	while (r >= 0 && n > 0) {
		export_level *l = &levels[n - 1];
		strbuf_truncate(path, l->path_len);
		if (!l->names[l->next]) {
			strv_free(l->names);
			n--;
			if (n > 0) {
				r = dir_stack_pop(&dirs);
				if (r < 0)
					error_set(err, r, "return to dir \"%s\"", QUOTE(path->buf));
			}
			continue;
		}
		const char *name = l->names[l->next++];
		bool is_dir = false;
		struct stat st;
		r = write_name(w, dir_stack_fd(&dirs), name, path, &is_dir, &st, err);
		if (r < 0 || !is_dir)
			continue;
		int fd = dir_stack_push(&dirs, name);
		if (fd < 0) {
			r = error_set(err, fd, "open dir \"%s\"", QUOTE(path->buf));
			continue;
		}
		r = write_dir(w, fd, path->buf, &st, err);
		if (r >= 0 && !(w->o->flags & TAR_AUFS) && tar_is_opaque(fd))
			r = write_marker(w, path->buf, WHITEOUT_OPAQUE, "", &st, err);
		if (r >= 0)
			r = level_open(&levels, &n, &alloc, fd, path, err);
		if (r < 0)
			break;
	}
	while (n > 0)
		strv_free(levels[--n].names);
	free(levels);
	dir_stack_release(&dirs);
	return r;
}

int tar_write_layer(tar_writer *w, int root_fd, strata_error *err)
{
	/* The root dir itself is not an entry (Docker's layers have none),
	 * nor is an opaque mark on it (overlay ignores it). */
	strbuf path = {0};
	if (strbuf_append(&path, "", 0) < 0)
		return -ENOMEM;
	int r = walk(w, root_fd, &path, err);
	strbuf_release(&path);
	return r;
}

int tar_write_path(tar_writer *w, int root_fd, const char *path, strata_error *err)
{
	const char *slash = strrchr(path, '/');
	size_t dirlen = slash ? (size_t)(slash - path) : 0;
	const char *name = slash ? slash + 1 : path;
	if (!w->parent_path || strlen(w->parent_path) != dirlen || memcmp(w->parent_path, path, dirlen) != 0) {
		if (w->parent_fd >= 0)
			close(w->parent_fd);
		free(w->parent_path);
		w->parent_fd = -1;
		w->parent_path = strndup(path, dirlen);
		if (!w->parent_path)
			return -ENOMEM;
		w->parent_fd = fs_open_beneath(root_fd, w->parent_path, O_RDONLY | O_DIRECTORY);
		if (w->parent_fd < 0)
			return error_set(err, w->parent_fd, "open dir \"%s\"", QUOTE(w->parent_path));
	}
	struct stat st;
	if (fstatat(w->parent_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return error_set(err, negerrno(), "stat \"%s\"", QUOTE(path));
	if (S_ISSOCK(st.st_mode))
		return 0;
	if (!S_ISDIR(st.st_mode))
		return write_nondir(w, w->parent_fd, name, path, &st, err);
	_cleanup_close_ int fd = openat(w->parent_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return error_set(err, negerrno(), "open dir \"%s\"", QUOTE(path));
	return write_dir(w, fd, path, &st, err);
}

int tar_write_whiteout(tar_writer *w, const char *path, strata_error *err)
{
	const char *slash = strrchr(path, '/');
	_cleanup_free_ char *dir = strndup(path, slash ? (size_t)(slash - path) : 0);
	if (!dir)
		return -ENOMEM;
	return write_marker(w, dir, WHITEOUT_PREFIX, slash ? slash + 1 : path, NULL, err);
}

int tar_write_blob(tar_writer *w, const char *path, const void *data, size_t len, mode_t mode, time_t mtime,
		   strata_error *err)
{
	/* Container root: the host ids that map to 0. */
	uint32_t uid = 0, gid = 0;
	if (idmap_to_host(w->o->uids, 0, &uid) < 0 || idmap_to_host(w->o->gids, 0, &gid) < 0)
		return error_setf(err, -ERANGE, "\"%s\": the id maps have no container root", QUOTE(path));
	struct stat st = {
		.st_mode = S_IFREG | (mode & 07777),
		.st_uid = uid,
		.st_gid = gid,
		.st_nlink = 1,
		.st_size = (off_t)len,
		.st_mtim = {.tv_sec = mtime},
	};
	struct archive_entry *e = archive_entry_new();
	if (!e)
		return -ENOMEM;
	int r = fill_entry(w, e, &st, path, err);
	if (r >= 0)
		r = write_entry_header(w, e, path, err);
	archive_entry_free(e);
	if (r < 0)
		return r;
	if (len && archive_write_data(w->a, data, len) != (la_ssize_t)len)
		return archive_fail(w, path, err);
	w->progress.bytes += len;
	return 0;
}
