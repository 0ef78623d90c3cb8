/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layers mounted by the caller: containerd's snapshotter mounts what a
 * snapshot's Mounts call returns itself (in the container's mount
 * namespace, at a target of its choosing), so strata describes the mount
 * instead of making it, and counts nothing.  The shapes are those of
 * containerd's own overlayfs snapshotter, so that containerd's mount code
 * (which shortens a lowerdir longer than a page by chdir to the common
 * prefix) handles them alike: the short links keep 500 lowers in a page.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver.h"
#include "util/banned.h"
#include "util/dirstack.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

void strata_mount_spec_clear(strata_mount_spec *spec)
{
	if (!spec)
		return;
	free(spec->type);
	free(spec->source);
	strv_free(spec->options);
	*spec = (strata_mount_spec){0};
}

static int spec_set(strata_mount_spec *m, const char *type, const char *source)
{
	m->type = strdup(type);
	m->source = strdup(source);
	m->options = calloc(8, sizeof(char *));
	return m->type && m->source && m->options ? 0 : -ENOMEM;
}

/* Appends an option (at most 7: the fixed ones and three paths). */
static int spec_add(strata_mount_spec *m, char *option)
{
	if (!option)
		return -ENOMEM;
	size_t n = strv_length(m->options);
	m->options[n] = option;
	return 0;
}

static int spec_add_path(strata_mount_spec *m, const char *key, const char *path)
{
	char *o = NULL;
	if (asprintf(&o, "%s=%s", key, path) < 0)
		return -ENOMEM;
	return spec_add(m, o);
}

/* lowerdir=: the store layers above any thin image by their short links,
 * then the image's dirs (absolute: they live outside the store). */
static int lowerdir(strata_driver *d, char **parents, const chain_plan *plan, char **ret)
{
	store *s = d->store;
	size_t n_thin = strv_length(plan->dirs), len = sizeof("lowerdir=");
	for (size_t i = 0; i < n_thin; i++)
		len += strlen(plan->dirs[i]) + 1;
	len += plan->n_store * (strlen(s->root) + sizeof("/l/") + STORE_LINK_LEN + 1);
	_cleanup_free_ char *buf = malloc(len);
	if (!buf)
		return -ENOMEM;
	size_t at = (size_t)snprintf(buf, len, "lowerdir=");
	for (size_t i = 0; i < plan->n_store; i++) {
		char link[STORE_LINK_LEN + 1];
		int r = link_read(s, parents[i], link);
		if (r < 0)
			return r;
		at += (size_t)snprintf(buf + at, len - at, "%s%s/l/%s", i ? ":" : "", s->root, link);
	}
	for (size_t i = 0; i < n_thin; i++)
		at += (size_t)snprintf(buf + at, len - at, "%s%s", at > sizeof("lowerdir=") - 1 ? ":" : "",
				       plan->dirs[i]);
	*ret = TAKE_PTR(buf);
	return 0;
}

static int mounts(strata_driver *d, const char *id, unsigned flags, strata_mount_spec *ret, strata_error *err)
{
	if (d->aufs)
		return error_setf(err, -EOPNOTSUPP, "the aufs engine mounts its unions itself");
	bool view = flags & STRATA_MOUNTS_VIEW;
	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	_cleanup_strv_free_ char **parents = NULL;
	int r = layer_lock(d, id, &lock, &parents, err);
	if (r < 0)
		return r;
	_cleanup_(chain_plan_release) chain_plan plan = {0};
	r = chain_plan_read(d, id, parents, &plan, err);
	if (r < 0)
		return r;
	if (plan.self)
		return error_setf(err, -EINVAL, "layer %s is a thin layer: it has no mounts of its own", id);
	size_t n_lowers = plan.n_store + plan.image.n;
	_cleanup_(strata_mount_spec_clear) strata_mount_spec m = {0};
	_cleanup_free_ char *upper = driver_path(d, "diff", id);
	_cleanup_free_ char *work = driver_path(d, "work", id);
	if (!upper || !work)
		return -ENOMEM;

	/* No lowers: the layer's own dir (a view of nothing is an empty
	 * read-only dir, as containerd's).  A view of one layer: that dir,
	 * read-only (overlay wants two lowers when it has no upper). */
	r = n_lowers ? chain_plan_acquire(d, id, &plan, err) : 0;
	if (r < 0)
		return r;
	if (n_lowers == 0 || (view && n_lowers == 1)) {
		const char *src = n_lowers == 0 ? upper : plan.n_store ? NULL : plan.dirs[0];
		_cleanup_free_ char *store_src = n_lowers && plan.n_store ? driver_path(d, "diff", parents[0]) : NULL;
		if (!src && !(src = store_src))
			return -ENOMEM;
		if ((r = spec_set(&m, "bind", src)) < 0 || (r = spec_add(&m, strdup(view ? "ro" : "rw"))) < 0 ||
		    (r = spec_add(&m, strdup("rbind"))) < 0)
			return r;
		*ret = m;
		m = (strata_mount_spec){0};
		return 0;
	}

	_cleanup_free_ char *lower = NULL;
	r = lowerdir(d, parents, &plan, &lower);
	if (r < 0)
		return error_set(err, r, "read the short links of the chain of %s", id);
	if ((r = spec_set(&m, "overlay", "overlay")) < 0 || (r = spec_add(&m, strdup("index=off"))) < 0 ||
	    (r = spec_add(&m, strdup("redirect_dir=off"))) < 0 || (r = spec_add(&m, strdup("metacopy=off"))) < 0)
		return r;
	if (!view && ((r = spec_add_path(&m, "workdir", work)) < 0 || (r = spec_add_path(&m, "upperdir", upper)) < 0))
		return r;
	if ((r = spec_add(&m, TAKE_PTR(lower))) < 0)
		return r;
	*ret = m;
	m = (strata_mount_spec){0};
	return 0;
}

int strata_mounts(strata_driver *d, const char *id, unsigned flags, strata_mount_spec *ret, strata_error *err)
{
	error_clear(err);
	int r = mounts(d, id, flags, ret, err);
	return r < 0 ? error_prefix(err, r, "mounts of %s", QUOTE(id)) : 0;
}

int strata_seal(strata_driver *d, const char *id, int *ret_thin, strata_error *err)
{
	error_clear(err);
	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	_cleanup_strv_free_ char **parents = NULL;
	int r = layer_lock(d, id, &lock, &parents, err);
	if (r < 0)
		return error_prefix(err, r, "seal %s", QUOTE(id));
	_cleanup_close_ int fd = openat(d->store->diff_fd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return error_set(err, negerrno(), "seal %s: open %s/diff/%s", id, d->store->root, id);
	r = layer_check_thin(d, fd, err);
	if (r < 0)
		return error_prefix(err, r, "seal %s", id);
	*ret_thin = r > 0;
	return 0;
}

/* ---- usage ---- */

/* The inodes with more than one link already counted: open addressing. */
typedef struct ino_set {
	size_t n, cap;
	struct stat_key {
		dev_t dev;
		ino_t ino;
	} * keys;
} ino_set;

/* 1 if newly added, 0 if there, -ENOMEM. */
static int ino_set_add(ino_set *set, dev_t dev, ino_t ino)
{
	if (2 * (set->n + 1) > set->cap) {
		size_t cap = set->cap ? 2 * set->cap : 64;
		struct stat_key *keys = calloc(cap, sizeof(*keys));
		if (!keys)
			return -ENOMEM;
		for (size_t i = 0; i < set->cap; i++) {
			if (!set->keys[i].ino)
				continue;
			size_t h = (size_t)(set->keys[i].ino * 0x9E3779B97F4A7C15ull) & (cap - 1);
			while (keys[h].ino)
				h = (h + 1) & (cap - 1);
			keys[h] = set->keys[i];
		}
		free(set->keys);
		set->keys = keys;
		set->cap = cap;
	}
	size_t h = (size_t)(ino * 0x9E3779B97F4A7C15ull) & (set->cap - 1);
	for (; set->keys[h].ino; h = (h + 1) & (set->cap - 1))
		if (set->keys[h].ino == ino && set->keys[h].dev == dev)
			return 0;
	set->keys[h] = (struct stat_key){dev, ino};
	set->n++;
	return 1;
}

/* The subdirectories of one level still to visit. */
typedef struct usage_level {
	char **names;
	size_t n, next, alloc;
} usage_level;

static void usage_levels_free(usage_level *levels, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t k = levels[i].next; k < levels[i].n; k++)
			free(levels[i].names[k]);
		free(levels[i].names);
	}
	free(levels);
}

static int count(int dfd, const char *name, const struct stat *st, ino_set *seen, int64_t *size, int64_t *inodes)
{
	(void)dfd;
	(void)name;
	if (st->st_nlink > 1 && !S_ISDIR(st->st_mode)) {
		int r = ino_set_add(seen, st->st_dev, st->st_ino);
		if (r <= 0)
			return r;
	}
	*size += (int64_t)st->st_blocks * 512;
	*inodes += 1;
	return 0;
}

/* Reads one directory: counts its entries, lists its subdirectories. */
static int scan(int fd, usage_level *level, ino_set *seen, int64_t *size, int64_t *inodes)
{
	int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	if (dup_fd < 0)
		return negerrno();
	DIR *dir = fdopendir(dup_fd);
	if (!dir) {
		int r = negerrno();
		close(dup_fd);
		return r;
	}
	int r = 0;
	struct dirent *de;
	while (r >= 0 && (errno = 0, de = readdir(dir))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		struct stat st;
		if (fstatat(fd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = errno == ENOENT ? 0 : negerrno();
			continue;
		}
		r = count(fd, de->d_name, &st, seen, size, inodes);
		if (r >= 0 && S_ISDIR(st.st_mode)) {
			char *copy = strdup(de->d_name);
			if (!copy || grow(&level->names, &level->alloc, level->n, sizeof(char *), 8) < 0) {
				free(copy);
				r = -ENOMEM;
			} else {
				level->names[level->n++] = copy;
			}
		}
	}
	if (r >= 0 && errno != 0 && !de)
		r = negerrno();
	closedir(dir);
	return r;
}

static int usage(strata_driver *d, const char *id, int64_t *ret_size, int64_t *ret_inodes, strata_error *err)
{
	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	_cleanup_strv_free_ char **parents = NULL;
	int r = layer_lock(d, id, &lock, &parents, err);
	if (r < 0)
		return r;
	_cleanup_close_ int root = openat(d->store->diff_fd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (root < 0)
		return error_set(err, negerrno(), "open %s/diff/%s", d->store->root, id);
	struct stat st;
	if (fstat(root, &st) < 0)
		return error_set(err, negerrno(), "stat %s/diff/%s", d->store->root, id);
	int64_t size = 0, inodes = 0;
	ino_set seen = {0};
	dir_stack dirs = DIR_STACK_INIT(root);
	usage_level *levels = calloc(1, sizeof(*levels));
	size_t depth = 1, alloc = 1; /* levels[depth - 1]: the innermost */
	r = levels ? count(root, ".", &st, &seen, &size, &inodes) : -ENOMEM;
	if (r >= 0)
		r = scan(root, &levels[0], &seen, &size, &inodes);
	while (r >= 0 && depth > 0) {
		usage_level *l = &levels[depth - 1];
		if (l->next == l->n) {
			free(l->names);
			*l = (usage_level){0};
			depth--;
			if (depth > 0)
				r = dir_stack_pop(&dirs);
			continue;
		}
		_cleanup_free_ char *name = l->names[l->next++];
		int fd = dir_stack_push(&dirs, name);
		if (fd == -ENOENT || fd == -ENOTDIR || fd == -ELOOP)
			continue; /* gone or replaced meanwhile: not counted */
		if (fd < 0) {
			r = fd;
			break;
		}
		if (grow(&levels, &alloc, depth, sizeof(*levels), 16) < 0) {
			r = -ENOMEM;
			break;
		}
		levels[depth] = (usage_level){0};
		depth++;
		r = scan(fd, &levels[depth - 1], &seen, &size, &inodes);
	}
	usage_levels_free(levels, depth);
	dir_stack_release(&dirs);
	free(seen.keys);
	if (r < 0)
		return error_set(err, r, "walk %s/diff/%s", d->store->root, id);
	*ret_size = size;
	*ret_inodes = inodes;
	return 0;
}

int strata_usage(strata_driver *d, const char *id, int64_t *ret_size, int64_t *ret_inodes, strata_error *err)
{
	error_clear(err);
	int r = usage(d, id, ret_size, ret_inodes, err);
	return r < 0 ? error_prefix(err, r, "usage of %s", QUOTE(id)) : 0;
}
