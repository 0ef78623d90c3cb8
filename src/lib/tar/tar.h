/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layer tars: extraction (apply.c), export (export.c), change lists and
 * sizes (changes.c), owner shifting (idmap.c).  Everything here works on
 * directory fds handed in by the driver; nothing knows about the store.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "strata.h"

struct archive;

/* ---- id maps (idmap.c) ---- */
typedef struct idmap_range {
	uint32_t container, host, size;
} idmap_range;

typedef struct idmap {
	size_t n;
	idmap_range *ranges;
} idmap;

/* Adds "CONTAINER:HOST:SIZE".  Overlapping ranges on either side are an
 * error: the map must be a bijection for apply and diff to be inverses. */
int idmap_add(idmap *m, const char *spec, strata_error *err);
void idmap_release(idmap *m);
/* An empty map is the identity.  -ERANGE if id has no mapping. */
int idmap_to_host(const idmap *m, uint32_t id, uint32_t *ret);
int idmap_to_container(const idmap *m, uint32_t id, uint32_t *ret);

/* ---- shared by apply and export ---- */
/* apply: the caller syncs the tree when done; start writeback early. */
#define TAR_EARLY_WRITEBACK (1u << 16)
/* The AUFS on-disk format: whiteouts are ".wh.<name>" files and opaque
 * dirs hold ".wh..wh..opq", as in the tar; ".wh..wh.*" bookkeeping (plnk,
 * aufs, orph) is never layer content.  Apply keeps the .wh. files as
 * they are, export writes them as they are, changes reads them. */
#define TAR_AUFS (1u << 17)

typedef struct tar_opts {
	const idmap *uids, *gids;
	unsigned flags; /* STRATA_TAR_*, TAR_EARLY_WRITEBACK */
	strata_progress_fn progress;
	void *progress_data;
	const int *cancel; /* see strata_tar_options */
} tar_opts;

static inline bool tar_cancelled(const tar_opts *o)
{
	return o->cancel && __atomic_load_n(o->cancel, __ATOMIC_ACQUIRE);
}

#define WHITEOUT_PREFIX	     ".wh."
#define WHITEOUT_META	     ".wh..wh."
#define WHITEOUT_OPAQUE	     ".wh..wh..opq"
#define OVERLAY_OPAQUE_XATTR "trusted.overlay.opaque"

/* Does an xattr travel in layer tars?  security.capability, user.* and
 * trusted.* except overlay's own bookkeeping (trusted.overlay.*, user.overlay.*). */
bool tar_xattr_kept(const char *name);

/* Is the directory marked opaque (trusted.overlay.opaque=y)? */
bool tar_is_opaque(int dirfd);

/* Overlay's whiteout: a character device 0/0. */
static inline bool tar_is_whiteout(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && st->st_rdev == 0;
}

/*
 * Cleans a tar entry name into a relative path without "." components or
 * trailing slashes ("" for the root itself).  -EINVAL for absolute names,
 * ".." components and empty names; *ret_why says which.
 */
int tar_clean_name(const char *name, char **ret_path, const char **ret_why);

/* ---- apply.c ---- */
/*
 * Extracts the archive `a` (opened for reading) into the directory
 * `root_fd`, which should be empty.  Nothing outside it is created,
 * changed or followed: parents are resolved with openat2 and
 * RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH, and an entry whose path crosses a
 * symlink is refused.  On failure the partial tree is left for the caller
 * to delete; err names the entry.
 *
 * When the archive reads a plain file, `input_fd` is it and `input_start`
 * its offset when the reader was opened (else -1 and 0): content of an
 * uncompressed tar is then copied inside the kernel (copy_file_range),
 * never through user memory.
 */
int tar_extract(struct archive *a, int input_fd, off_t input_start, int root_fd, const tar_opts *o, uint64_t *ret_size,
		strata_error *err);

/* A reader for layer tars on fd: any of the supported compressions. */
int tar_reader_open_fd(int fd, struct archive **ret, strata_error *err);

/* ---- export.c ---- */
typedef struct tar_writer tar_writer;

int tar_writer_new(int out_fd, const tar_opts *o, tar_writer **ret, strata_error *err);
/* Flushes and frees; returns the first error of the whole write. */
int tar_writer_finish(tar_writer *w, strata_error *err);
tar_writer *tar_writer_free(tar_writer *w);

/* Writes the whole tree under root_fd (a diff dir): whiteouts become
 * ".wh.<name>" entries, opaque dirs get a ".wh..wh..opq" entry. */
int tar_write_layer(tar_writer *w, int root_fd, strata_error *err);

/* Writes one entry of a merged tree (no recursion into dirs): `path` is
 * relative to root_fd.  For the naive diff. */
int tar_write_path(tar_writer *w, int root_fd, const char *path, strata_error *err);
/* Writes a ".wh." entry deleting `path`. */
int tar_write_whiteout(tar_writer *w, const char *path, strata_error *err);
/* Writes a regular file `path` holding `data`, owned by (container) root. */
int tar_write_blob(tar_writer *w, const char *path, const void *data, size_t len, mode_t mode, time_t mtime,
		   strata_error *err);

/* ---- changes.c ---- */
typedef struct change_list {
	size_t n, alloc;
	strata_change *items;
} change_list;

int change_add(change_list *l, const char *path, strata_change_kind kind);
void change_list_sort(change_list *l);
void change_list_release(change_list *l);

/*
 * The fast path: the changes a diff dir makes over its parents' merged
 * view, reading only the diff dir and, for each name in it, the parents'
 * entries of that name.  lower_fds: the parents' diff dirs, nearest first.
 * flags: TAR_AUFS for diff dirs in the AUFS format.
 */
int changes_layer(int upper_fd, const int *lower_fds, size_t n_lowers, unsigned flags, change_list *ret,
		  strata_error *err);

/* The names in dir `rel` ("" the root) of the merged view of lower_fds
 * (nearest first) as overlay shows it: sorted, NULL-terminated (caller
 * frees, strv); empty when rel is no dir there. */
int changes_merged_names(const int *lower_fds, size_t n_lowers, unsigned flags, const char *rel, char ***ret,
			 strata_error *err);

/* The naive path: compares two trees (old_fd -1: an empty tree), as
 * Docker's ChangesDirs does. */
int changes_trees(int old_fd, int new_fd, change_list *ret, strata_error *err);

/* Bytes of regular files in a tree, each inode once. */
int size_tree(int root_fd, uint64_t *ret, strata_error *err);
/* Bytes of the regular files that `changes` adds or modifies in root_fd. */
int size_changes(int root_fd, const change_list *changes, uint64_t *ret, strata_error *err);

/* ---- inode sets, to count or link each inode once (inodes.c) ---- */
typedef struct inode_set {
	size_t n, alloc; /* alloc: a power of two */
	struct inode_key {
		dev_t dev;
		ino_t ino;
	} * keys;
} inode_set;

/* 1 if added, 0 if already there, -ENOMEM. */
int inode_set_add(inode_set *s, dev_t dev, ino_t ino);
void inode_set_release(inode_set *s);
