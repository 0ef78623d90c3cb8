/* SPDX-License-Identifier: Apache-2.0 */
/*
 * get / put / cleanup: reference-counted union mounts.
 *
 * The count lives in refs/<id> (see store/refs.c) and is changed only under
 * the id's lock, so threads of one process and separate processes (the CLI's
 * mount and umount) share one consistent count.  The mount table is the
 * other half of the truth: a mount that exists with no count is adopted by
 * the next get (a get that crashed between mounting and counting), and a
 * count whose mount vanished is remounted on the next get.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

static int mount_chain(strata_driver *d, const char *id, char **parents, const char *label, strata_error *err)
{
	store *s = d->store;
	size_t n = strv_length(parents);

	_cleanup_free_ char *target = driver_path(d, "mnt", id);
	_cleanup_free_ char *upper = driver_path(d, "diff", id);
	_cleanup_free_ char *work = driver_path(d, "work", id);
	_cleanup_free_ char *short_upper = NULL, *short_work = NULL;
	/* One allocation for all lower paths: ROOT/diff/<id> each. */
	size_t stride = strlen(s->root) + sizeof("/diff/") + STRATA_ID_MAX;
	_cleanup_free_ char *lower_buf = malloc(n * stride);
	_cleanup_free_ char **lowers = calloc(n + 1, sizeof(char *));
	_cleanup_free_ char *short_buf = NULL;
	_cleanup_free_ char **short_lowers = NULL;
	if (!target || !upper || !work || !lower_buf || !lowers)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		lowers[i] = lower_buf + i * stride;
		snprintf(lowers[i], stride, "%s/diff/%s", s->root, parents[i]);
	}

	union_request req = {
		.target = target,
		.upper = upper,
		.work = work,
		.lowers = lowers,
		.n_lowers = n,
		.label = label,
		.selinux = d->selinux,
		.short_dirfd = -1,
	};

	if (d->api == OVERLAY_API_LEGACY) {
		short_buf = malloc(n * (STORE_LINK_LEN + 1));
		short_lowers = calloc(n + 1, sizeof(char *));
		if (!short_buf || !short_lowers || asprintf(&short_upper, "../diff/%s", id) < 0 ||
		    asprintf(&short_work, "../work/%s", id) < 0)
			return -ENOMEM;
		for (size_t i = 0; i < n; i++) {
			short_lowers[i] = short_buf + i * (STORE_LINK_LEN + 1);
			int r = link_read(s, parents[i], short_lowers[i]);
			if (r < 0)
				return error_set(err, r, "read short link %s/link/%s", s->root, parents[i]);
		}
		req.short_dirfd = s->l_fd;
		req.short_lowers = short_lowers;
		req.short_upper = short_upper;
		req.short_work = short_work;
	}
	return overlay_mount(&req, d->api, err);
}

static int get_layer(strata_driver *d, const char *id, const char *label, char **ret_path, strata_error *err)
{
	store *s = d->store;
	int r = id_validate(id, err);
	if (r < 0)
		return r;
	r = overlay_label_validate(label, err);
	if (r < 0)
		return r;

	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	r = lock_ids(s, id, NULL, &lock);
	if (r < 0)
		return error_set(err, r, "lock %s/lock", s->root);

	_cleanup_strv_free_ char **parents = NULL;
	r = chain_read(s, id, &parents, err);
	if (r < 0)
		return r;
	unsigned count = 0;
	r = refs_read(s, id, &count);
	if (r < 0)
		return error_set(err, r, "read %s/refs/%s", s->root, id);

	bool has_parents = parents[0] != NULL;
	_cleanup_free_ char *path = driver_path(d, has_parents ? "mnt" : "diff", id);
	if (!path)
		return -ENOMEM;

	bool mounted_now = false;
	if (has_parents) {
		r = fs_is_mount_point_at(s->mnt_fd, id);
		if (r < 0)
			return error_set(err, r, "stat %s", path);
		if (r == 0) {
			r = mount_chain(d, id, parents, label, err);
			if (r < 0)
				return r;
			mounted_now = true;
		}
	}

	r = refs_write(s, id, count + 1);
	if (r < 0) {
		error_set(err, r, "write %s/refs/%s", s->root, id);
		/* No count, no mount: nothing leaks if recording fails. */
		if (mounted_now)
			union_unmount(path, NULL);
		return r;
	}
	*ret_path = TAKE_PTR(path);
	return 0;
}

int strata_get(strata_driver *d, const char *id, const char *mount_label, char **ret_path, strata_error *err)
{
	error_clear(err);
	int r = get_layer(d, id, mount_label, ret_path, err);
	return r < 0 ? error_prefix(err, r, "get %s", id ? id : "") : 0;
}

static int put_layer(strata_driver *d, const char *id, strata_error *err)
{
	store *s = d->store;
	int r = id_validate(id, err);
	if (r < 0)
		return r;

	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	r = lock_ids(s, id, NULL, &lock);
	if (r < 0)
		return error_set(err, r, "lock %s/lock", s->root);

	r = store_layer_exists(s, id);
	if (r < 0)
		return error_set(err, r, "stat %s/layers/%s", s->root, id);
	if (r == 0)
		return error_setf(err, -ENOENT, "no such layer");

	unsigned count = 0;
	r = refs_read(s, id, &count);
	if (r < 0)
		return error_set(err, r, "read %s/refs/%s", s->root, id);

	int mounted = fs_is_mount_point_at(s->mnt_fd, id);
	if (mounted < 0 && mounted != -ENOENT)
		return error_set(err, mounted, "stat %s/mnt/%s", s->root, id);

	if (count == 0) {
		/* A mount nobody counts is a leftover of a crashed get:
		 * put reclaims it, as Docker's RefCounter does. */
		if (mounted > 0)
			return layer_unmount(d, id, err);
		return error_setf(err, -EINVAL, "layer is not in use (no get holds a reference)");
	}
	if (count == 1 && mounted > 0) {
		r = layer_unmount(d, id, err);
		if (r < 0)
			return r; /* the count stays: the mount is still there */
	}
	r = refs_write(s, id, count - 1);
	if (r < 0)
		return error_set(err, r, "write %s/refs/%s", s->root, id);
	return 0;
}

int strata_put(strata_driver *d, const char *id, strata_error *err)
{
	error_clear(err);
	int r = put_layer(d, id, err);
	return r < 0 ? error_prefix(err, r, "put %s", id ? id : "") : 0;
}

/* Unmounts whatever is mounted at or below ROOT/mnt/<name> and forgets its
 * count.  Mounts below a layer's view (a container runtime's /proc, say)
 * come first: mountinfo_under returns deepest first. */
static int cleanup_mounts(strata_driver *d, strata_error *err)
{
	store *s = d->store;
	_cleanup_free_ char *mnt = NULL;
	if (asprintf(&mnt, "%s/mnt", s->root) < 0)
		return -ENOMEM;
	mount_entry *m = NULL;
	size_t n = 0;
	int r = mountinfo_under(mnt, &m, &n);
	if (r < 0)
		return error_set(err, r, "read /proc/self/mountinfo");

	int first_error = 0;
	size_t plen = strlen(mnt);
	for (size_t i = 0; i < n; i++) {
		if (m[i].mountpoint[plen] != '/')
			continue; /* ROOT/mnt itself is not ours to unmount */
		r = union_unmount(m[i].mountpoint, first_error ? NULL : err);
		if (r < 0 && !first_error)
			first_error = r;
	}
	mount_entries_free(m, n);
	return first_error;
}

static int cleanup(strata_driver *d, strata_error *err)
{
	store *s = d->store;
	int r = cleanup_mounts(d, err);

	/* Counts go with the mounts, each under its id's lock so a get in
	 * flight finishes first. */
	_cleanup_close_ int fd = openat(s->refs_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return error_set(err, negerrno(), "open %s/refs", s->root);
	_cleanup_closedir_ DIR *dir = fdopendir(TAKE_FD(fd));
	if (!dir)
		return error_set(err, negerrno(), "open %s/refs", s->root);
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (store_name_reserved(de->d_name) || id_validate(de->d_name, NULL) < 0)
			continue;
		_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
		int q = lock_ids(s, de->d_name, NULL, &lock);
		if (q >= 0) {
			/* A get that raced with the sweep above mounted again. */
			q = layer_unmount(d, de->d_name, r < 0 ? NULL : err);
			if (q >= 0)
				q = refs_write(s, de->d_name, 0);
		}
		if (q < 0 && r >= 0)
			r = error_set(err, q, "reset %s/refs/%s", s->root, de->d_name);
	}
	return r;
}

int strata_cleanup(strata_driver *d, strata_error *err)
{
	error_clear(err);
	int r = cleanup(d, err);
	return r < 0 ? error_prefix(err, r, "cleanup %s", d->store->root) : 0;
}
