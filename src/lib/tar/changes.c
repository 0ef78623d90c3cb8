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

int change_add(change_list *l, const char *path, strata_change_kind kind)
{
	if (grow(&l->items, &l->alloc, l->n, sizeof(*l->items), 64) < 0)
		return -ENOMEM;
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

/* A path under the tree's root: "<dir>/<name>" in *path. */
static int path_enter(strbuf *path, const char *name, strata_error *err)
{
	int r = strbuf_push_name(path, name);
	if (r == -ENAMETOOLONG)
		return error_setf(err, r, "\"/%s/...\": a path longer than %d bytes cannot be a change",
				  QUOTE(path->buf), PATH_MAX - 1);
	return r;
}

/* One directory of the comparison: both listings, merged in order. */
typedef struct cmp_level {
	char **nn, **on; /* new and old names, sorted (on NULL: no old dir) */
	size_t i, j, nnew, nold;
	size_t count;	 /* changes beneath so far */
	size_t path_len; /* of this directory's path */
	bool has_old;	 /* the old tree has this directory too */
	bool reported;	 /* the directory itself is in the list already */
} cmp_level;

typedef struct tree_cmp {
	change_list *out;
	strata_error *err;
	dir_stack new_dirs, old_dirs;
	cmp_level *levels;
	size_t n, alloc;
	strbuf path;
} tree_cmp;

/* Enters a directory: new_fd open on the new side, old_fd (-1: none) on
 * the old side. */
static int cmp_enter(tree_cmp *c, int new_fd, int old_fd, bool reported)
{
	if (grow(&c->levels, &c->alloc, c->n, sizeof(*c->levels), 16) < 0)
		return -ENOMEM;
	cmp_level l = {.path_len = c->path.len, .has_old = old_fd >= 0, .reported = reported};
	int r = list_sorted(new_fd, &l.nn);
	if (r < 0)
		return error_set(c->err, r, "read dir \"/%s\"", QUOTE(c->path.buf));
	if (old_fd >= 0) {
		r = list_sorted(old_fd, &l.on);
		if (r < 0) {
			strv_free(l.nn);
			return error_set(c->err, r, "read old dir \"/%s\"", QUOTE(c->path.buf));
		}
	}
	l.nnew = strv_length(l.nn);
	l.nold = strv_length(l.on);
	c->levels[c->n++] = l;
	return 0;
}

/* Leaves the innermost directory: a directory with changes beneath it is
 * modified (once), so that applying the diff restores its metadata. */
static int cmp_leave(tree_cmp *c)
{
	cmp_level l = c->levels[--c->n];
	strv_free(l.nn);
	strv_free(l.on);
	strbuf_truncate(&c->path, l.path_len);
	if (c->n == 0)
		return 0; /* the root is never a change */
	int r = dir_stack_pop(&c->new_dirs);
	if (r >= 0 && l.has_old)
		r = dir_stack_pop(&c->old_dirs);
	if (r < 0)
		return error_set(c->err, r, "return from \"/%s\"", QUOTE(c->path.buf));
	cmp_level *parent = &c->levels[c->n - 1];
	if (l.count > 0 && !l.reported) {
		r = change_add(c->out, c->path.buf, STRATA_CHANGE_MODIFY);
		if (r < 0)
			return r;
		parent->count++;
	}
	parent->count += l.count;
	strbuf_truncate(&c->path, parent->path_len);
	return 0;
}

/* The next name of the innermost directory. */
static int cmp_step(tree_cmp *c)
{
	cmp_level *l = &c->levels[c->n - 1];
	strbuf_truncate(&c->path, l->path_len);
	int cmp = l->i == l->nnew ? 1 : l->j == l->nold ? -1 : strcmp(l->nn[l->i], l->on[l->j]);
	const char *name = cmp <= 0 ? l->nn[l->i] : l->on[l->j];
	int new_fd = dir_stack_fd(&c->new_dirs), old_fd = l->has_old ? dir_stack_fd(&c->old_dirs) : -1;
	/* A whiteout in a tree is nothing there: a parentless layer's view
	 * is its raw diff dir, where overlay's markers remain.  A name
	 * readdir listed that is gone now is absent too: overlay lists the
	 * whiteouts of a dir that exists only in the upper layer, and a
	 * running container may delete files meanwhile. */
	struct stat ost, nst;
	bool have_old = false, have_new = false;
	int r = path_enter(&c->path, name, c->err);
	if (r < 0)
		return r;
	if (cmp >= 0) {
		if (fstatat(old_fd, name, &ost, AT_SYMLINK_NOFOLLOW) == 0)
			have_old = !tar_is_whiteout(&ost);
		else if (errno != ENOENT)
			return error_set(c->err, negerrno(), "stat old \"/%s\"", QUOTE(c->path.buf));
		l->j++;
	}
	if (cmp <= 0) {
		if (fstatat(new_fd, name, &nst, AT_SYMLINK_NOFOLLOW) == 0)
			have_new = !tar_is_whiteout(&nst);
		else if (errno != ENOENT)
			return error_set(c->err, negerrno(), "stat \"/%s\"", QUOTE(c->path.buf));
		l->i++;
	}
	if (have_old && !have_new) {
		l->count++;
		return change_add(c->out, c->path.buf, STRATA_CHANGE_DELETE);
	}
	if (!have_new)
		return 0;
	bool reported = true;
	if (!have_old) {
		r = change_add(c->out, c->path.buf, STRATA_CHANGE_ADD);
	} else {
		capability oc, nc;
		read_capability(old_fd, name, &ost, &oc);
		read_capability(new_fd, name, &nst, &nc);
		reported = entry_modified(&ost, &nst, &oc, &nc);
		if (reported)
			r = change_add(c->out, c->path.buf, STRATA_CHANGE_MODIFY);
	}
	if (r < 0)
		return r;
	if (reported)
		l->count++;
	if (!S_ISDIR(nst.st_mode))
		return 0;

	int nfd = dir_stack_push(&c->new_dirs, name);
	if (nfd < 0)
		return error_set(c->err, nfd, "open \"/%s\"", QUOTE(c->path.buf));
	int ofd = -1;
	if (have_old && S_ISDIR(ost.st_mode)) {
		ofd = dir_stack_push(&c->old_dirs, name);
		if (ofd < 0) {
			dir_stack_pop(&c->new_dirs);
			return error_set(c->err, ofd, "open old \"/%s\"", QUOTE(c->path.buf));
		}
	}
	r = cmp_enter(c, nfd, ofd, reported);
	if (r < 0) {
		dir_stack_pop(&c->new_dirs);
		if (ofd >= 0)
			dir_stack_pop(&c->old_dirs);
	}
	return r;
}

int changes_trees(int old_fd, int new_fd, change_list *ret, strata_error *err)
{
	tree_cmp c = {
		.out = ret,
		.err = err,
		.new_dirs = DIR_STACK_INIT(new_fd),
		.old_dirs = DIR_STACK_INIT(old_fd),
	};
	int r = strbuf_append(&c.path, "", 0);
	if (r >= 0)
		r = cmp_enter(&c, new_fd, old_fd, true);
	while (r >= 0 && c.n > 0) {
		cmp_level *l = &c.levels[c.n - 1];
		r = l->i == l->nnew && l->j == l->nold ? cmp_leave(&c) : cmp_step(&c);
	}
	while (c.n > 0) {
		c.n--;
		strv_free(c.levels[c.n].nn);
		strv_free(c.levels[c.n].on);
	}
	free(c.levels);
	dir_stack_release(&c.new_dirs);
	dir_stack_release(&c.old_dirs);
	strbuf_release(&c.path);
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
			if (grow(&all, &alloc, n, sizeof(*all), 64) < 0) {
				r = -ENOMEM;
				break;
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

int changes_merged_names(const int *lower_fds, size_t n_lowers, unsigned flags, const char *rel, char ***ret,
			 strata_error *err)
{
	layer_cmp c = {.lower_fds = lower_fds, .aufs = flags & TAR_AUFS, .err = err};
	stack st = {0};
	st.layer = malloc((n_lowers ? n_lowers : 1) * sizeof(size_t));
	if (!st.layer)
		return -ENOMEM;
	for (size_t i = 0; i < n_lowers; i++)
		st.layer[st.n++] = i;
	/* Down from the root, one component at a time: the layers that make
	 * up each dir of the way, as overlay merges them. */
	_cleanup_free_ char *prefix = strdup(rel);
	if (!prefix) {
		free(st.layer);
		return -ENOMEM;
	}
	int r = 0;
	for (char *slash = *prefix ? prefix : NULL; slash && r >= 0;) {
		slash = strchr(slash, '/');
		if (slash)
			*slash = '\0';
		struct stat lst;
		size_t k = 0;
		r = lookup_below(&c, &st, prefix, &lst, &k);
		if (r == 0 || (r > 0 && !S_ISDIR(lst.st_mode))) {
			st.n = 0; /* not a dir down there: nothing below */
			r = 0;
			break;
		}
		stack next = {0};
		if (r > 0)
			r = stack_below(&c, &st, k, prefix, &next);
		free(st.layer);
		st = next;
		if (slash)
			*slash++ = '/';
	}
	if (r >= 0 && st.n == 0) {
		*ret = calloc(1, sizeof(char *));
		r = *ret ? 0 : -ENOMEM;
	} else if (r >= 0) {
		r = merged_listing(&c, &st, rel, ret);
	}
	free(st.layer);
	return r;
}

/* One directory of the layer's walk. */
typedef struct layer_level {
	char **names; /* sorted */
	size_t next;
	stack below;	 /* the parents' dirs that make up the merged view here */
	bool replaced;	 /* opaque here or above: the parents' names are hidden */
	bool reported;	 /* the directory itself is in the list already */
	size_t count;	 /* changes beneath so far */
	size_t path_len; /* of this directory's path */
} layer_level;

typedef struct layer_walk {
	layer_cmp *c;
	dir_stack upper;
	layer_level *levels;
	size_t n, alloc;
	strbuf path;
} layer_walk;

/* Enters the upper directory open at fd; takes `below`. */
static int walk_enter(layer_walk *w, int fd, stack below, bool replaced, bool reported)
{
	if (grow(&w->levels, &w->alloc, w->n, sizeof(*w->levels), 16) < 0) {
		free(below.layer);
		return -ENOMEM;
	}
	layer_level l = {.below = below, .replaced = replaced, .reported = reported, .path_len = w->path.len};
	int r = list_sorted(fd, &l.names);
	if (r < 0) {
		free(below.layer);
		return error_set(w->c->err, r, "read dir \"/%s\"", QUOTE(w->path.buf));
	}
	w->levels[w->n++] = l;
	return 0;
}

/* Below an opaque dir, what the parents have and this layer does not is
 * hidden: deleted. */
static int walk_hidden(layer_walk *w, layer_level *l)
{
	layer_cmp *c = w->c;
	if (c->aufs) {
		/* The names this layer decides: a .wh. file decides its
		 * victim's. */
		for (char **p = l->names; *p; p++)
			if (!strncmp(*p, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) && !is_aufs_meta(*p))
				memmove(*p, *p + strlen(WHITEOUT_PREFIX), strlen(*p) - strlen(WHITEOUT_PREFIX) + 1);
		qsort(l->names, strv_length(l->names), sizeof(char *), cmp_names);
	}
	_cleanup_strv_free_ char **old = NULL;
	int r = merged_listing(c, &l->below, w->path.buf, &old);
	if (r < 0)
		return r;
	size_t n = strv_length(l->names);
	for (char **p = old; *p; p++) {
		if (bsearch(p, l->names, n, sizeof(char *), cmp_names))
			continue;
		_cleanup_free_ char *rel = NULL;
		r = join(w->path.buf, *p, &rel);
		if (r < 0)
			return r;
		r = change_add(c->out, rel, STRATA_CHANGE_DELETE);
		if (r < 0)
			return r;
		l->count++;
	}
	return 0;
}

/* Leaves the innermost directory: a directory with changes beneath it is
 * modified (once). */
static int walk_leave(layer_walk *w)
{
	layer_level *l = &w->levels[w->n - 1];
	strbuf_truncate(&w->path, l->path_len);
	int r = 0;
	if (l->replaced && l->below.n > 0)
		r = walk_hidden(w, l);
	layer_level done = *l;
	w->n--;
	strv_free(done.names);
	free(done.below.layer);
	if (r < 0 || w->n == 0)
		return r;
	r = dir_stack_pop(&w->upper);
	if (r < 0)
		return error_set(w->c->err, r, "return from \"/%s\"", QUOTE(w->path.buf));
	layer_level *parent = &w->levels[w->n - 1];
	if (done.count > 0 && !done.reported) {
		r = change_add(w->c->out, w->path.buf, STRATA_CHANGE_MODIFY);
		if (r < 0)
			return r;
		parent->count++;
	}
	parent->count += done.count;
	strbuf_truncate(&w->path, parent->path_len);
	return 0;
}

/* aufs: a .wh. file deletes the name below.  ".wh.", ".wh.." and ".wh..."
 * name no file (aufs never makes them): joined, they would name this dir
 * or its parent. */
static int walk_aufs_whiteout(layer_walk *w, layer_level *l, const char *victim)
{
	if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
		return 0;
	int r = path_enter(&w->path, victim, w->c->err);
	if (r < 0)
		return r;
	struct stat lst;
	size_t k = 0;
	r = lookup_below(w->c, &l->below, w->path.buf, &lst, &k);
	if (r <= 0)
		return r;
	l->count++;
	return change_add(w->c->out, w->path.buf, STRATA_CHANGE_DELETE);
}

/* The next name of the innermost directory. */
static int walk_step(layer_walk *w)
{
	layer_cmp *c = w->c;
	layer_level *l = &w->levels[w->n - 1];
	strbuf_truncate(&w->path, l->path_len);
	const char *name = l->names[l->next++];
	if (c->aufs && is_aufs_meta(name))
		return 0;
	if (c->aufs && !strncmp(name, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)))
		return walk_aufs_whiteout(w, l, name + strlen(WHITEOUT_PREFIX));
	int r = path_enter(&w->path, name, c->err);
	if (r < 0)
		return r;
	const char *rel = w->path.buf;
	struct stat st, lst;
	if (fstatat(dir_stack_fd(&w->upper), name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0; /* deleted meanwhile by a running container */
		return error_set(c->err, negerrno(), "stat \"/%s\"", QUOTE(rel));
	}
	size_t k = 0;
	int exists = lookup_below(c, &l->below, rel, &lst, &k);
	if (exists < 0)
		return exists;
	if (!c->aufs && tar_is_whiteout(&st)) {
		if (!exists)
			return 0;
		l->count++;
		return change_add(c->out, rel, STRATA_CHANGE_DELETE);
	}
	if (!S_ISDIR(st.st_mode)) {
		l->count++;
		return change_add(c->out, rel, exists ? STRATA_CHANGE_MODIFY : STRATA_CHANGE_ADD);
	}

	stack child = {0};
	bool reported = false;
	if (!exists || !S_ISDIR(lst.st_mode)) {
		/* New here, or a dir in place of a file: nothing below it. */
		r = change_add(c->out, rel, exists ? STRATA_CHANGE_MODIFY : STRATA_CHANGE_ADD);
		reported = true;
	} else {
		r = stack_below(c, &l->below, k, rel, &child);
		if (r >= 0 && (st.st_mode != lst.st_mode || st.st_uid != lst.st_uid || st.st_gid != lst.st_gid)) {
			r = change_add(c->out, rel, STRATA_CHANGE_MODIFY);
			reported = true;
		}
	}
	if (r >= 0 && reported)
		l->count++;
	int fd = r < 0 ? r : dir_stack_push(&w->upper, name);
	if (fd < 0) {
		free(child.layer);
		return r < 0 ? r : error_set(c->err, fd, "open \"/%s\"", QUOTE(rel));
	}
	/* Below an opaque dir overlay looks at no lower layer, so its subdirs
	 * replace theirs as well. */
	bool replaced = l->replaced || dir_is_opaque(c, fd);
	r = walk_enter(w, fd, child, replaced, reported);
	if (r < 0)
		dir_stack_pop(&w->upper);
	return r;
}

int changes_layer(int upper_fd, const int *lower_fds, size_t n_lowers, unsigned flags, change_list *ret,
		  strata_error *err)
{
	layer_cmp c = {.lower_fds = lower_fds, .aufs = flags & TAR_AUFS, .out = ret, .err = err};
	layer_walk w = {.c = &c, .upper = DIR_STACK_INIT(upper_fd)};
	stack root = {0};
	root.layer = malloc((n_lowers ? n_lowers : 1) * sizeof(size_t));
	if (!root.layer)
		return -ENOMEM;
	/* Layer roots always merge: overlay ignores an opaque mark there. */
	for (size_t i = 0; i < n_lowers; i++)
		root.layer[root.n++] = i;
	int r = strbuf_append(&w.path, "", 0);
	if (r < 0)
		free(root.layer);
	else
		r = walk_enter(&w, upper_fd, root, false, true);
	while (r >= 0 && w.n > 0) {
		layer_level *l = &w.levels[w.n - 1];
		r = l->names[l->next] ? walk_step(&w) : walk_leave(&w);
	}
	while (w.n > 0) {
		w.n--;
		strv_free(w.levels[w.n].names);
		free(w.levels[w.n].below.layer);
	}
	free(w.levels);
	dir_stack_release(&w.upper);
	strbuf_release(&w.path);
	if (r < 0)
		return r;
	change_list_sort(ret);
	return 0;
}

/* ---------------- sizes ---------------- */

/* Iterative (a tree a container wrote may be 100,000 levels deep): each
 * level keeps the names still to visit in its directory. */
typedef struct size_level {
	char **names;
	size_t next;
} size_level;

static int size_walk(int root_fd, inode_set *seen, uint64_t *total, strata_error *err)
{
	dir_stack dirs = DIR_STACK_INIT(root_fd);
	size_level *levels = NULL;
	size_t n = 0, alloc = 0;
	int r = 0;
	char **names = NULL;
	for (int fd = root_fd; r >= 0;) {
		if (fd >= 0) {
			/* A directory just entered: list it. */
			r = fs_list_dir(fd, &names);
			if (r < 0) {
				error_set(err, r, "read dir at depth %zu", n);
				break;
			}
			if (grow(&levels, &alloc, n, sizeof(*levels), 16) < 0) {
				r = -ENOMEM;
				break;
			}
			levels[n++] = (size_level){TAKE_PTR(names), 0};
			fd = -1;
		}
		if (n == 0)
			break;
		size_level *l = &levels[n - 1];
		const char *name = l->names[l->next];
		if (!name) {
			strv_free(l->names);
			if (--n > 0)
				r = dir_stack_pop(&dirs);
			if (r < 0)
				error_set(err, r, "return to the parent dir at depth %zu", n);
			continue;
		}
		l->next++;
		struct stat st;
		if (fstatat(dir_stack_fd(&dirs), name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			r = error_set(err, negerrno(), "stat \"%s\"", QUOTE(name));
		} else if (S_ISREG(st.st_mode)) {
			if (st.st_nlink > 1) {
				r = inode_set_add(seen, st.st_dev, st.st_ino);
				if (r <= 0)
					continue;
			}
			*total += (uint64_t)st.st_size;
		} else if (S_ISDIR(st.st_mode)) {
			fd = dir_stack_push(&dirs, name);
			if (fd < 0)
				r = error_set(err, fd, "open dir \"%s\"", QUOTE(name));
		}
	}
	while (n > 0)
		strv_free(levels[--n].names);
	free(levels);
	dir_stack_release(&dirs);
	return r < 0 ? r : 0;
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
