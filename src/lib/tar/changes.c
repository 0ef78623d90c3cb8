/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Change lists, in Docker's terms (A added, C modified, D deleted), two
 * ways that must agree:
 *
 * - changes_trees compares an old and a new tree as Docker's ChangesDirs
 *   does: an entry is modified when its mode, owner, rdev or
 *   security.capability differ, or, for non-directories, its size or mtime;
 *   a directory with any change beneath it is modified; the root never is.
 *
 * - changes_layer reads only a diff dir and, for each name in it, the
 *   same name in the parents' diff dirs, which it resolves the way overlay
 *   merges them (nearest parent first; a whiteout or a non-directory hides
 *   what is below; an opaque directory hides the layers below it).  A
 *   whiteout is D when the name exists below; a non-directory that exists
 *   below is C; a directory that exists below is C when its mode or owner
 *   differ or anything beneath it changed; the rest is A.  In an opaque
 *   directory every name below that the layer does not have is D.
 *
 * They differ only where the layer rewrote a file without changing any
 * of the compared fields (the tree comparison cannot see that).
 *
 * Lower layers are immutable and were checked to be directories on the
 * way down, so they are addressed by path from their root fds; the upper
 * dir may belong to a running container and is walked by fd, O_NOFOLLOW.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "tar/tar.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

int change_add(change_list *l, const char *path, strata_change_kind kind)
{
	if (l->n == l->alloc) {
		size_t alloc = l->alloc ? 2 * l->alloc : 64;
		strata_change *ni = realloc(l->items, alloc * sizeof(*ni));
		if (!ni)
			return -ENOMEM;
		l->items = ni;
		l->alloc = alloc;
	}
	char *p = NULL;
	if (asprintf(&p, "/%s", path) < 0)
		return -ENOMEM;
	l->items[l->n++] = (strata_change){p, kind};
	return 0;
}

static int cmp_change(const void *a, const void *b)
{
	return strcmp(((const strata_change *)a)->path, ((const strata_change *)b)->path);
}

void change_list_sort(change_list *l)
{
	if (l->n > 1)
		qsort(l->items, l->n, sizeof(*l->items), cmp_change);
}

void change_list_release(change_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->items[i].path);
	free(l->items);
	*l = (change_list){0};
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_sorted(int dirfd, char ***ret)
{
	int r = fs_list_dir(dirfd, ret);
	if (r >= 0)
		qsort(*ret, strv_length(*ret), sizeof(char *), cmp_names);
	return r;
}

/* "<dir>/<name>", or name at the root. */
static int join(const char *dir, const char *name, char **ret)
{
	return asprintf(ret, "%s%s%s", dir, *dir ? "/" : "", name) < 0 ? -ENOMEM : 0;
}

/* ---------------- tree comparison ---------------- */

typedef struct capability {
	ssize_t len; /* -1: none */
	char data[64];
} capability;

static void read_capability(int dirfd, const char *name, const struct stat *st, capability *ret)
{
	ret->len = -1;
	if (!S_ISREG(st->st_mode))
		return;
	char lpath[64 + NAME_MAX];
	snprintf(lpath, sizeof(lpath), "/proc/self/fd/%d/%s", dirfd, name);
	ret->len = lgetxattr(lpath, "security.capability", ret->data, sizeof(ret->data));
}

static bool same_time(struct timespec a, struct timespec b)
{
	/* Docker's sameFsTime: a zero nanosecond part (from a tar) matches. */
	return a.tv_sec == b.tv_sec && (a.tv_nsec == b.tv_nsec || a.tv_nsec == 0 || b.tv_nsec == 0);
}

static bool entry_modified(const struct stat *o, const struct stat *n, const capability *oc, const capability *nc)
{
	if (o->st_mode != n->st_mode || o->st_uid != n->st_uid || o->st_gid != n->st_gid || o->st_rdev != n->st_rdev)
		return true;
	if (!S_ISDIR(n->st_mode) && (!same_time(o->st_mtim, n->st_mtim) || o->st_size != n->st_size))
		return true;
	return oc->len != nc->len || (oc->len > 0 && memcmp(oc->data, nc->data, (size_t)oc->len) != 0);
}

typedef struct tree_cmp {
	change_list *out;
	strata_error *err;
} tree_cmp;

static int compare_dirs(tree_cmp *c, int old_fd, int new_fd, const char *path, size_t *ret_count);

/* A new entry `name` (in new_fd) against old_fd's `name` (old_fd -1 or
 * old_st NULL: absent). */
static int compare_entry(tree_cmp *c, int old_fd, const struct stat *old_st, int new_fd, const char *name,
			 const struct stat *new_st, const char *path, size_t *count)
{
	struct stat nst = *new_st;
	bool reported = false;
	int r;
	if (!old_st) {
		r = change_add(c->out, path, STRATA_CHANGE_ADD);
		if (r < 0)
			return r;
		(*count)++;
		reported = true;
	} else {
		capability oc, nc;
		read_capability(old_fd, name, old_st, &oc);
		read_capability(new_fd, name, &nst, &nc);
		if (entry_modified(old_st, &nst, &oc, &nc)) {
			r = change_add(c->out, path, STRATA_CHANGE_MODIFY);
			if (r < 0)
				return r;
			(*count)++;
			reported = true;
		}
	}
	if (!S_ISDIR(nst.st_mode))
		return 0;

	_cleanup_close_ int nfd = openat(new_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (nfd < 0)
		return error_set(c->err, negerrno(), "open \"/%s\"", QUOTE(path));
	_cleanup_close_ int ofd = -1;
	if (old_st && S_ISDIR(old_st->st_mode)) {
		ofd = openat(old_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (ofd < 0)
			return error_set(c->err, negerrno(), "open old \"/%s\"", QUOTE(path));
	}
	size_t sub = 0;
	r = compare_dirs(c, ofd, nfd, path, &sub);
	if (r < 0)
		return r;
	/* A dir with changes beneath is modified (once), so that applying
	 * the diff restores its metadata. */
	if (sub > 0 && !reported) {
		r = change_add(c->out, path, STRATA_CHANGE_MODIFY);
		if (r < 0)
			return r;
		(*count)++;
	}
	*count += sub;
	return 0;
}

static int compare_dirs(tree_cmp *c, int old_fd, int new_fd, const char *path, size_t *ret_count)
{
	_cleanup_strv_free_ char **nn = NULL, **on = NULL;
	int r = list_sorted(new_fd, &nn);
	if (r < 0)
		return error_set(c->err, r, "read dir \"/%s\"", QUOTE(path));
	if (old_fd >= 0) {
		r = list_sorted(old_fd, &on);
		if (r < 0)
			return error_set(c->err, r, "read old dir \"/%s\"", QUOTE(path));
	}
	size_t count = 0, i = 0, j = 0, nnew = strv_length(nn), nold = strv_length(on);
	while (i < nnew || j < nold) {
		int cmp = i == nnew ? 1 : j == nold ? -1 : strcmp(nn[i], on[j]);
		const char *name = cmp <= 0 ? nn[i] : on[j];
		_cleanup_free_ char *child = NULL;
		r = join(path, name, &child);
		if (r < 0)
			return r;
		/* A whiteout in a tree is nothing there: a parentless layer's
		 * view is its raw diff dir, where overlay's markers remain. */
		struct stat ost, nst;
		bool have_old = false, have_new = false;
		if (cmp >= 0) {
			if (fstatat(old_fd, name, &ost, AT_SYMLINK_NOFOLLOW) < 0)
				return error_set(c->err, negerrno(), "stat old \"/%s\"", QUOTE(child));
			have_old = !tar_is_whiteout(&ost);
			j++;
		}
		if (cmp <= 0) {
			if (fstatat(new_fd, name, &nst, AT_SYMLINK_NOFOLLOW) < 0)
				return error_set(c->err, negerrno(), "stat \"/%s\"", QUOTE(child));
			have_new = !tar_is_whiteout(&nst);
			i++;
		}
		if (have_old && !have_new) {
			r = change_add(c->out, child, STRATA_CHANGE_DELETE);
			if (r < 0)
				return r;
			count++;
		} else if (have_new) {
			r = compare_entry(c, old_fd, have_old ? &ost : NULL, new_fd, name, &nst, child, &count);
			if (r < 0)
				return r;
		}
	}
	*ret_count = count;
	return 0;
}

int changes_trees(int old_fd, int new_fd, change_list *ret, strata_error *err)
{
	tree_cmp c = {.out = ret, .err = err};
	size_t count = 0;
	int r = compare_dirs(&c, old_fd, new_fd, "", &count);
	if (r < 0)
		return r;
	change_list_sort(ret);
	return 0;
}

/* ---------------- the fast path over a diff dir ---------------- */

typedef struct layer_cmp {
	const int *lower_fds;
	bool aufs; /* the AUFS on-disk format: .wh. files, .wh..wh..opq */
	change_list *out;
	strata_error *err;
} layer_cmp;

static bool is_aufs_meta(const char *name)
{
	return !strncmp(name, WHITEOUT_META, strlen(WHITEOUT_META));
}

/* aufs: is there a ".wh.<base of rel>" beside rel in this layer? */
static bool aufs_whited_out(int layer_fd, const char *rel)
{
	const char *slash = strrchr(rel, '/');
	char wh[PATH_MAX];
	int n = slash ? snprintf(wh, sizeof(wh), "%.*s/" WHITEOUT_PREFIX "%s", (int)(slash - rel), rel, slash + 1)
		      : snprintf(wh, sizeof(wh), WHITEOUT_PREFIX "%s", rel);
	return n > 0 && (size_t)n < sizeof(wh) && faccessat(layer_fd, wh, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
}

static bool dir_is_opaque(const layer_cmp *c, int dirfd)
{
	if (c->aufs)
		return faccessat(dirfd, WHITEOUT_OPAQUE, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
	return tar_is_opaque(dirfd);
}

/* The layers (indexes into lower_fds, nearest first) whose dir at some
 * path makes up the parents' merged view of it. */
typedef struct stack {
	size_t n;
	size_t *layer;
} stack;

/* Looks `rel` up in the merged view of `below`: 1 and its stat and the
 * stack position where found, or 0 if absent (or whited out). */
static int lookup_below(layer_cmp *c, const stack *below, const char *rel, struct stat *ret_st, size_t *ret_k)
{
	for (size_t k = 0; k < below->n; k++) {
		if (c->aufs && aufs_whited_out(c->lower_fds[below->layer[k]], rel))
			return 0;
		if (fstatat(c->lower_fds[below->layer[k]], rel, ret_st, AT_SYMLINK_NOFOLLOW) == 0) {
			/* aufs has no device whiteouts: a 0/0 device is content. */
			if (!c->aufs && tar_is_whiteout(ret_st))
				return 0;
			*ret_k = k;
			return 1;
		}
		if (errno != ENOENT)
			return error_set(c->err, negerrno(), "stat parent layer's \"/%s\"", QUOTE(rel));
	}
	return 0;
}

static int lower_is_opaque(layer_cmp *c, size_t layer, const char *rel, bool *ret)
{
	_cleanup_close_ int fd = openat(c->lower_fds[layer], rel, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return error_set(c->err, negerrno(), "open parent layer's \"/%s\"", QUOTE(rel));
	*ret = dir_is_opaque(c, fd);
	return 0;
}

/* The merged view of dir `rel`, found as a dir at below->layer[k]: that
 * layer's dir, then the same dir in each layer further down, until one is
 * opaque or has a non-directory (or a whiteout) there. */
static int stack_below(layer_cmp *c, const stack *below, size_t k, const char *rel, stack *ret)
{
	ret->n = 0;
	ret->layer = malloc((below->n - k) * sizeof(size_t));
	if (!ret->layer)
		return -ENOMEM;
	for (size_t first = k; k < below->n; k++) {
		size_t layer = below->layer[k];
		struct stat st;
		if (c->aufs && k > first && aufs_whited_out(c->lower_fds[layer], rel))
			break;
		if (fstatat(c->lower_fds[layer], rel, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			return error_set(c->err, negerrno(), "stat parent layer's \"/%s\"", QUOTE(rel));
		}
		if (!S_ISDIR(st.st_mode))
			break;
		ret->layer[ret->n++] = layer;
		bool opaque = false;
		int r = lower_is_opaque(c, layer, rel, &opaque);
		if (r < 0)
			return r;
		if (opaque)
			break;
	}
	return 0;
}

typedef struct seen_name {
	char *name;
	size_t order;
	bool present;
} seen_name;

static int cmp_seen(const void *a, const void *b)
{
	const seen_name *x = a, *y = b;
	int c = strcmp(x->name, y->name);
	return c ? c : (x->order > y->order) - (x->order < y->order);
}

/* The parents' merged listing of dir `rel`: names present (not whited
 * out), sorted. */
static int merged_listing(layer_cmp *c, const stack *below, const char *rel, char ***ret)
{
	seen_name *all = NULL;
	size_t n = 0, alloc = 0;
	int r = 0;
	for (size_t k = 0; k < below->n && r >= 0; k++) {
		_cleanup_close_ int fd = openat(c->lower_fds[below->layer[k]], *rel ? rel : ".",
						O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			r = error_set(c->err, negerrno(), "open parent layer's \"/%s\"", QUOTE(rel));
			break;
		}
		char **names = NULL;
		r = fs_list_dir(fd, &names);
		if (r < 0) {
			error_set(c->err, r, "read parent layer's \"/%s\"", QUOTE(rel));
			break;
		}
		/* Names move into `all` one by one, leaving NULLs: the vector
		 * is freed by its length, not as a strv. */
		size_t n_names = strv_length(names);
		for (char **p = names; p < names + n_names; p++) {
			struct stat st;
			bool present = true;
			if (c->aufs) {
				if (is_aufs_meta(*p))
					continue;
				if (!strncmp(*p, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX))) {
					/* Hides the name in the layers below. */
					memmove(*p, *p + strlen(WHITEOUT_PREFIX),
						strlen(*p) - strlen(WHITEOUT_PREFIX) + 1);
					present = false;
				}
			} else if (fstatat(fd, *p, &st, AT_SYMLINK_NOFOLLOW) < 0) {
				r = error_set(c->err, negerrno(), "stat parent layer's \"/%s/%s\"", QUOTE(rel), *p);
				break;
			} else {
				present = !tar_is_whiteout(&st);
			}
			if (n == alloc) {
				alloc = alloc ? 2 * alloc : 64;
				seen_name *na = realloc(all, alloc * sizeof(*na));
				if (!na) {
					r = -ENOMEM;
					break;
				}
				all = na;
			}
			all[n++] = (seen_name){TAKE_PTR(*p), k, present};
		}
		for (size_t i = 0; i < n_names; i++)
			free(names[i]);
		free(names);
	}
	char **out = NULL;
	if (r >= 0) {
		if (n > 1)
			qsort(all, n, sizeof(*all), cmp_seen);
		out = calloc(n + 1, sizeof(char *));
		if (!out)
			r = -ENOMEM;
	}
	size_t m = 0;
	const char *prev = NULL; /* still valid: moved to out or freed below */
	for (size_t i = 0; i < n && r >= 0; i++) {
		/* The nearest layer's entry of each name decides. */
		bool first = !prev || strcmp(all[i].name, prev) != 0;
		prev = all[i].name;
		if (first && all[i].present)
			out[m++] = TAKE_PTR(all[i].name);
	}
	for (size_t i = 0; i < n; i++)
		free(all[i].name);
	free(all);
	if (r < 0) {
		strv_free(out);
		return r;
	}
	*ret = out;
	return 0;
}

static int walk_layer(layer_cmp *c, int upper_fd, const char *path, const stack *below, bool replaced,
		      size_t *ret_count);

static int layer_entry(layer_cmp *c, int upper_fd, const char *name, const char *rel, const stack *below, bool replaced,
		       size_t *count)
{
	struct stat st, lst;
	if (fstatat(upper_fd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return error_set(c->err, negerrno(), "stat \"/%s\"", QUOTE(rel));
	size_t k = 0;
	int exists = lookup_below(c, below, rel, &lst, &k);
	if (exists < 0)
		return exists;
	int r;
	if (!c->aufs && tar_is_whiteout(&st)) {
		if (!exists)
			return 0;
		(*count)++;
		return change_add(c->out, rel, STRATA_CHANGE_DELETE);
	}
	if (!S_ISDIR(st.st_mode)) {
		(*count)++;
		return change_add(c->out, rel, exists ? STRATA_CHANGE_MODIFY : STRATA_CHANGE_ADD);
	}

	_cleanup_close_ int fd = openat(upper_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return error_set(c->err, negerrno(), "open \"/%s\"", QUOTE(rel));
	stack child = {0};
	bool reported = false;
	if (!exists || !S_ISDIR(lst.st_mode)) {
		/* New here, or a dir in place of a file: nothing below it. */
		r = change_add(c->out, rel, exists ? STRATA_CHANGE_MODIFY : STRATA_CHANGE_ADD);
		if (r < 0)
			return r;
		(*count)++;
		reported = true;
	} else {
		r = stack_below(c, below, k, rel, &child);
		if (r < 0) {
			free(child.layer);
			return r;
		}
		if (st.st_mode != lst.st_mode || st.st_uid != lst.st_uid || st.st_gid != lst.st_gid) {
			r = change_add(c->out, rel, STRATA_CHANGE_MODIFY);
			if (r < 0) {
				free(child.layer);
				return r;
			}
			(*count)++;
			reported = true;
		}
	}
	/* Below an opaque dir overlay looks at no lower layer, so its subdirs
	 * replace theirs as well. */
	size_t sub = 0;
	r = walk_layer(c, fd, rel, &child, replaced || dir_is_opaque(c, fd), &sub);
	free(child.layer);
	if (r < 0)
		return r;
	if (sub > 0 && !reported) {
		r = change_add(c->out, rel, STRATA_CHANGE_MODIFY);
		if (r < 0)
			return r;
		(*count)++;
	}
	*count += sub;
	return 0;
}

static int walk_layer(layer_cmp *c, int upper_fd, const char *path, const stack *below, bool replaced,
		      size_t *ret_count)
{
	_cleanup_strv_free_ char **names = NULL;
	int r = list_sorted(upper_fd, &names);
	if (r < 0)
		return error_set(c->err, r, "read dir \"/%s\"", QUOTE(path));
	size_t count = 0;
	for (char **p = names; *p; p++) {
		_cleanup_free_ char *rel = NULL;
		if (c->aufs && is_aufs_meta(*p))
			continue;
		if (c->aufs && !strncmp(*p, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX))) {
			/* aufs: a .wh. file deletes the name below.  ".wh.",
			 * ".wh.." and ".wh..." name no file (aufs never makes
			 * them): joined, they would name this dir or its
			 * parent. */
			const char *victim = *p + strlen(WHITEOUT_PREFIX);
			if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
				continue;
			r = join(path, victim, &rel);
			if (r < 0)
				return r;
			struct stat lst;
			size_t k = 0;
			r = lookup_below(c, below, rel, &lst, &k);
			if (r > 0) {
				count++;
				r = change_add(c->out, rel, STRATA_CHANGE_DELETE);
			}
			if (r < 0)
				return r;
			continue;
		}
		r = join(path, *p, &rel);
		if (r < 0)
			return r;
		r = layer_entry(c, upper_fd, *p, rel, below, replaced, &count);
		if (r < 0)
			return r;
	}
	if (c->aufs) {
		/* The names this layer decides, for the opaque case below: a
		 * .wh. file decides its victim's. */
		for (char **p = names; *p; p++)
			if (!strncmp(*p, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) && !is_aufs_meta(*p))
				memmove(*p, *p + strlen(WHITEOUT_PREFIX), strlen(*p) - strlen(WHITEOUT_PREFIX) + 1);
		qsort(names, strv_length(names), sizeof(char *), cmp_names);
	}
	if (replaced && below->n > 0) {
		/* What the parents have here and this layer does not is
		 * hidden: deleted. */
		_cleanup_strv_free_ char **old = NULL;
		r = merged_listing(c, below, path, &old);
		if (r < 0)
			return r;
		size_t n = strv_length(names);
		for (char **p = old; *p; p++) {
			if (bsearch(p, names, n, sizeof(char *), cmp_names))
				continue;
			_cleanup_free_ char *rel = NULL;
			r = join(path, *p, &rel);
			if (r < 0)
				return r;
			r = change_add(c->out, rel, STRATA_CHANGE_DELETE);
			if (r < 0)
				return r;
			count++;
		}
	}
	*ret_count = count;
	return 0;
}

int changes_layer(int upper_fd, const int *lower_fds, size_t n_lowers, unsigned flags, change_list *ret,
		  strata_error *err)
{
	layer_cmp c = {.lower_fds = lower_fds, .aufs = flags & TAR_AUFS, .out = ret, .err = err};
	stack root = {0};
	root.layer = malloc((n_lowers ? n_lowers : 1) * sizeof(size_t));
	if (!root.layer)
		return -ENOMEM;
	/* Layer roots always merge: overlay ignores an opaque mark there. */
	for (size_t i = 0; i < n_lowers; i++)
		root.layer[root.n++] = i;
	size_t count = 0;
	int r = walk_layer(&c, upper_fd, "", &root, false, &count);
	free(root.layer);
	if (r < 0)
		return r;
	change_list_sort(ret);
	return 0;
}

/* ---------------- sizes ---------------- */

static int size_walk(int dirfd, inode_set *seen, uint64_t *total, strata_error *err)
{
	_cleanup_strv_free_ char **names = NULL;
	int r = fs_list_dir(dirfd, &names);
	if (r < 0)
		return error_set(err, r, "read dir");
	for (char **p = names; *p; p++) {
		struct stat st;
		if (fstatat(dirfd, *p, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			return error_set(err, negerrno(), "stat \"%s\"", QUOTE(*p));
		}
		if (S_ISREG(st.st_mode)) {
			if (st.st_nlink > 1) {
				r = inode_set_add(seen, st.st_dev, st.st_ino);
				if (r < 0)
					return r;
				if (r == 0)
					continue;
			}
			*total += (uint64_t)st.st_size;
		} else if (S_ISDIR(st.st_mode)) {
			_cleanup_close_ int fd = openat(dirfd, *p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd < 0)
				return error_set(err, negerrno(), "open dir \"%s\"", QUOTE(*p));
			r = size_walk(fd, seen, total, err);
			if (r < 0)
				return error_prefix(err, r, "%s", *p);
		}
	}
	return 0;
}

int size_tree(int root_fd, uint64_t *ret, strata_error *err)
{
	inode_set seen = {0};
	uint64_t total = 0;
	int r = size_walk(root_fd, &seen, &total, err);
	inode_set_release(&seen);
	if (r >= 0)
		*ret = total;
	return r;
}

int size_changes(int root_fd, const change_list *changes, uint64_t *ret, strata_error *err)
{
	inode_set seen = {0};
	uint64_t total = 0;
	int r = 0;
	for (size_t i = 0; i < changes->n && r >= 0; i++) {
		const strata_change *ch = &changes->items[i];
		if (ch->kind == STRATA_CHANGE_DELETE)
			continue;
		/* Resolved beneath the root: the tree may be a running
		 * container's. */
		_cleanup_close_ int fd = fs_open_beneath(root_fd, ch->path + 1, O_PATH | O_NOFOLLOW);
		if (fd < 0) {
			r = error_set(err, fd, "open \"%s\"", QUOTE(ch->path));
			break;
		}
		struct stat st;
		if (fstat(fd, &st) < 0) {
			r = error_set(err, negerrno(), "stat \"%s\"", QUOTE(ch->path));
			break;
		}
		if (!S_ISREG(st.st_mode))
			continue;
		r = inode_set_add(&seen, st.st_dev, st.st_ino);
		if (r > 0)
			total += (uint64_t)st.st_size;
	}
	inode_set_release(&seen);
	if (r >= 0)
		*ret = total;
	return r;
}
