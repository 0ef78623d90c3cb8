/* SPDX-License-Identifier: Apache-2.0 */
/*
 * get / put / cleanup: reference-counted union mounts.
 *
 * The count lives in refs/<id> (see store/refs.c) and is changed only under
 * the id's lock, so threads of one process and separate processes (the CLI's
 * mount and umount) share one consistent count.  The mount table is the
 * other half of the truth: a mount that exists with no count is adopted by
 * the next get (a get or put that crashed between mounting and counting),
 * and counts whose mount vanished are void: the next get mounts afresh.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "driver.h"
#include "union/aufs.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

/* The union of a chain: the store layers above any thin image, then the
 * thin image's dirs (plan.dirs), all read-only under the layer's own diff
 * dir.  A thin layer itself is a read-only union of its own diff dir (its
 * thin.json) over its image: Docker rebuilds a layer's tar (docker save,
 * push) from the files under Get's path, and this layer's tar is thin.json. */
static int mount_chain(strata_driver *d, const char *id, char **parents, const chain_plan *plan, const char *label,
		       strata_error *err)
{
	store *s = d->store;
	size_t n_store = plan->n_store, n_thin = strv_length(plan->dirs);
	bool self = plan->self;
	size_t n = n_store + self + n_thin;

	_cleanup_free_ char *target = driver_path(d, "mnt", id);
	_cleanup_free_ char *upper = self ? NULL : driver_path(d, "diff", id);
	_cleanup_free_ char *work = self ? NULL : driver_path(d, "work", id);
	_cleanup_free_ char *own = self ? driver_path(d, "diff", id) : NULL;
	_cleanup_free_ char *short_upper = NULL, *short_work = NULL;
	/* One allocation for the store's lower paths: ROOT/diff/<id> each. */
	size_t stride = strlen(s->root) + sizeof("/diff/") + STRATA_ID_MAX;
	_cleanup_free_ char *lower_buf = malloc((n_store ? n_store : 1) * stride);
	_cleanup_free_ char **lowers = calloc(n + 1, sizeof(char *));
	_cleanup_free_ char *short_buf = NULL;
	_cleanup_free_ char **short_lowers = NULL;
	if (!target || (!self && (!upper || !work)) || (self && !own) || !lower_buf || !lowers)
		return -ENOMEM;
	size_t longest = upper ? strlen(upper) : 0;
	for (size_t i = 0; i < n; i++) {
		if (i < n_store) {
			lowers[i] = lower_buf + i * stride;
			snprintf(lowers[i], stride, "%s/diff/%s", s->root, parents[i]);
		} else if (self && i == n_store) {
			lowers[i] = own;
		} else {
			lowers[i] = plan->dirs[i - n_store - self];
		}
		if (strlen(lowers[i]) > longest)
			longest = strlen(lowers[i]);
	}

	if (d->aufs) {
		/* aufs: the layer's diff dir over its parents' (no thin
		 * layers: chain_plan_acquire refuses them). */
		aufs_mount_data m = {0};
		int r = aufs_build_mount_data(upper, lowers, n, label, d->dirperm1, (size_t)getpagesize(), &m, err);
		if (r >= 0)
			r = aufs_mount(target, &m, err);
		aufs_mount_data_release(&m);
		return r;
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

	/* Paths too long for an fsconfig string go by fd, which kernels
	 * before 6.13 do not take: there the legacy path mounts instead. */
	overlay_api api = d->api;
	if (api == OVERLAY_API_NEW && !d->fd_layers && longest > OVERLAY_FSCONFIG_STRING_MAX)
		api = OVERLAY_API_LEGACY;

	if (api == OVERLAY_API_LEGACY) {
		short_buf = malloc((n_store ? n_store : 1) * (STORE_LINK_LEN + 1));
		short_lowers = calloc(n + 1, sizeof(char *));
		if (!short_buf || !short_lowers ||
		    (upper &&
		     (asprintf(&short_upper, "../diff/%s", id) < 0 || asprintf(&short_work, "../work/%s", id) < 0)))
			return -ENOMEM;
		for (size_t i = 0; i < n; i++) {
			if (i >= n_store) { /* outside the store: absolute */
				short_lowers[i] = lowers[i];
				continue;
			}
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
	return overlay_mount(&req, api, err);
}

/* The layer's view, mounted if it needs a mount and has none.  Caller
 * holds the id's lock.  *ret_mounted_now: mounted by this call. */
static int ensure_view(strata_driver *d, const char *id, char **parents, const char *label, char **ret_path,
		       bool *ret_mounted_now, strata_error *err)
{
	store *s = d->store;
	*ret_mounted_now = false;
	_cleanup_(chain_plan_release) chain_plan plan = {0};
	int r = chain_plan_read(d, id, parents, &plan, err);
	if (r < 0)
		return r;
	/* A base layer is its diff dir; a thin one is the union of its image. */
	bool needs_mount = parents[0] != NULL || plan.self;
	_cleanup_free_ char *path = driver_path(d, needs_mount ? "mnt" : "diff", id);
	if (!path)
		return -ENOMEM;
	if (needs_mount) {
		r = union_mounted_at(s->mnt_fd, id, path, err);
		if (r < 0)
			return r;
		if (r == 0) {
			r = chain_plan_acquire(d, id, &plan, err);
			if (r < 0)
				return r;
			r = mount_chain(d, id, parents, &plan, label, err);
			if (r < 0) {
				thin_release_holder(d, id, NULL);
				return r;
			}
			*ret_mounted_now = true;
		}
	}
	*ret_path = TAKE_PTR(path);
	return 0;
}

/* Unmounts the view of `id` if nobody uses it: no reference counted and
 * no hold.  Caller holds the id's lock. */
static int unmount_if_unused(strata_driver *d, const char *id, strata_error *err)
{
	store *s = d->store;
	unsigned count = 0;
	int r = refs_read(s, id, &count);
	if (r < 0)
		return error_set(err, r, "read %s/refs/%s", s->root, id);
	if (count > 0)
		return 0;
	r = lock_held(s, id);
	if (r < 0)
		return error_set(err, r, "read the holds in %s/lock", s->root);
	if (r > 0)
		return 0;
	return layer_unmount(d, id, err);
}

static int get_layer(strata_driver *d, const char *id, const char *label, char **ret_path, strata_error *err)
{
	store *s = d->store;
	int r = overlay_label_validate(label, err);
	if (r < 0)
		return r;
	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	_cleanup_strv_free_ char **parents = NULL;
	r = layer_lock(d, id, &lock, &parents, err);
	if (r < 0)
		return r;
	unsigned count = 0;
	r = refs_read(s, id, &count);
	if (r < 0)
		return error_set(err, r, "read %s/refs/%s", s->root, id);

	_cleanup_free_ char *path = NULL;
	bool mounted_now = false;
	r = ensure_view(d, id, parents, label, &path, &mounted_now, err);
	if (r < 0)
		return r;
	/* References to a mount that vanished (unmounted behind our back)
	 * are void; counting them would keep this new mount alive after its
	 * last put. */
	if (mounted_now)
		count = 0;

	r = refs_write(s, id, count + 1);
	if (r < 0) {
		error_set(err, r, "write %s/refs/%s", s->root, id);
		/* No count, no mount: nothing leaks if recording fails (nobody
		 * else has seen this mount: the id's lock was held throughout). */
		if (mounted_now)
			layer_unmount(d, id, NULL);
		return r;
	}
	*ret_path = TAKE_PTR(path);
	return 0;
}

int strata_get(strata_driver *d, const char *id, const char *mount_label, char **ret_path, strata_error *err)
{
	error_clear(err);
	int r = get_layer(d, id, mount_label, ret_path, err);
	return r < 0 ? error_prefix(err, r, "get %s", QUOTE(id)) : 0;
}

int layer_hold(strata_driver *d, const char *id, id_lock *ret_hold, char **ret_path, strata_error *err)
{
	/* The hold comes first: whoever would unmount the view sees it. */
	int r = id_validate(id, err);
	if (r < 0)
		return r;
	id_lock hold = ID_LOCK_INIT;
	r = lock_hold(d->store, id, &hold);
	if (r < 0)
		return error_set(err, r, "hold %s in %s/lock", id, d->store->root);
	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	_cleanup_strv_free_ char **parents = NULL;
	r = layer_lock(d, id, &lock, &parents, err);
	bool mounted_now = false;
	if (r >= 0)
		r = ensure_view(d, id, parents, NULL, ret_path, &mounted_now, err);
	if (r < 0) {
		lock_release(&hold);
		return r;
	}
	*ret_hold = hold;
	return 0;
}

int layer_unhold(strata_driver *d, const char *id, id_lock *hold, strata_error *err)
{
	if (hold->fd < 0)
		return 0;
	lock_release(hold);
	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	int r = lock_ids(d->store, id, NULL, &lock);
	if (r < 0)
		return error_set(err, r, "lock %s/lock", d->store->root);
	r = store_layer_exists(d->store, id);
	if (r <= 0)
		return r < 0 ? error_set(err, r, "stat %s/layers/%s", d->store->root, id) : 0;
	return unmount_if_unused(d, id, err);
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

	if (count == 0) {
		/* A mount nobody counts or holds is a leftover of a crashed get
		 * or put: put reclaims it, as Docker's RefCounter does. */
		int mounted = fs_is_mount_point_at(s->mnt_fd, id);
		int held = lock_held(s, id);
		if (mounted > 0 && held == 0)
			return layer_unmount(d, id, err);
		return error_setf(err, -EINVAL, "layer is not in use (no get holds a reference)");
	}
	r = refs_write(s, id, count - 1);
	if (r < 0)
		return error_set(err, r, "write %s/refs/%s", s->root, id);
	/* The count is recorded before the unmount: a crash in between
	 * leaves a mount with no count, which the next get adopts and init
	 * removes, never a count with no mount.  A hold (a naive diff in
	 * another process) keeps the view mounted; its release unmounts. */
	if (count == 1) {
		r = unmount_if_unused(d, id, err);
		if (r < 0) {
			refs_write(s, id, count); /* still mounted: still counted */
			return r;
		}
	}
	return 0;
}

int strata_put(strata_driver *d, const char *id, strata_error *err)
{
	error_clear(err);
	int r = put_layer(d, id, err);
	return r < 0 ? error_prefix(err, r, "put %s", QUOTE(id)) : 0;
}

int driver_unmount_views(strata_driver *d, bool only_stale, strata_error *err)
{
	store *s = d->store;
	_cleanup_free_ char *mnt = NULL;
	if (asprintf(&mnt, "%s/mnt/", s->root) < 0)
		return -ENOMEM;
	mount_entry *m = NULL;
	size_t n = 0;
	int r = mountinfo_under(s->root, &m, &n);
	if (r < 0)
		return error_set(err, r, "read /proc/self/mountinfo");

	size_t plen = strlen(mnt);
	int first_error = 0;
	for (size_t i = 0; i < n && !first_error; i++) {
		/* Views are mounted at mnt/<id> itself; anything deeper, or
		 * under a name that is no layer's, is not strata's. */
		if (strncmp(m[i].mountpoint, mnt, plen) != 0 || strchr(m[i].mountpoint + plen, '/'))
			continue;
		const char *name = m[i].mountpoint + plen;
		_cleanup_free_ char *id = store_owner_id(name);
		if (!id)
			continue;
		bool is_layer_view = !strcmp(id, name);
		_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
		r = lock_ids(s, id, NULL, &lock);
		if (r < 0) {
			first_error = error_set(err, r, "lock %s", id);
			break;
		}
		if (only_stale && is_layer_view) {
			/* Kept: a live layer whose count says someone holds
			 * it, or that a live process holds, and anything we
			 * cannot judge (a read error must never detach a
			 * running container's root). */
			unsigned count = 0;
			int exists = store_layer_exists(s, id);
			if (exists < 0 ||
			    (exists > 0 && (refs_read(s, id, &count) < 0 || count > 0 || lock_held(s, id) != 0)))
				continue;
		}
		/* The table was read before the lock: a view gone since is
		 * fine.  A mount that is not strata's union, or one with a mount
		 * inside it, stays (strata check reports it). */
		r = union_mounted_at(s->mnt_fd, name, m[i].mountpoint, NULL);
		if (r == -EBUSY)
			continue;
		if (r < 0) {
			first_error = error_set(err, r, "stat %s", m[i].mountpoint);
			break;
		}
		if (r > 0) {
			strata_error uerr;
			r = union_unmount(m[i].mountpoint, &uerr);
			if (r == -EBUSY)
				continue;
			if (r < 0) {
				if (err)
					*err = uerr;
				first_error = r;
				break;
			}
		}
		if (!is_layer_view)
			continue;
		first_error = thin_release_holder(d, id, err);
		if (!first_error) {
			r = refs_write(s, id, 0);
			if (r < 0)
				first_error = error_set(err, r, "reset %s/refs/%s", s->root, id);
		}
	}
	mount_entries_free(m, n);
	return first_error;
}

static int cleanup(strata_driver *d, strata_error *err)
{
	store *s = d->store;
	int r = driver_unmount_views(d, false, err);
	if (r < 0)
		return r;

	/* Counts go with the mounts (base layers have counts but no mount),
	 * each under its id's lock so a get in flight finishes first. */
	_cleanup_strv_free_ char **names = NULL;
	r = fs_list_dir(s->refs_fd, &names);
	if (r < 0)
		return error_set(err, r, "read %s/refs", s->root);
	for (char **p = names; *p; p++) {
		if (store_name_reserved(*p) || id_validate(*p, NULL) < 0)
			continue;
		_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
		r = lock_ids(s, *p, NULL, &lock);
		if (r < 0)
			return error_set(err, r, "lock %s", *p);
		/* A get that ran after the sweep above mounted again.  What is
		 * not strata's union stays (strata check reports it). */
		r = union_mounted_at(s->mnt_fd, *p, *p, NULL);
		if (r == -EBUSY)
			continue;
		r = layer_unmount(d, *p, err);
		if (r < 0)
			return r;
		r = refs_write(s, *p, 0);
		if (r < 0)
			return error_set(err, r, "reset %s/refs/%s", s->root, *p);
	}
	/* Nothing is mounted now: neither is any repository strata mounted. */
	return thin_prune(d, false, err);
}

int strata_cleanup(strata_driver *d, strata_error *err)
{
	error_clear(err);
	int r = cleanup(d, err);
	return r < 0 ? error_prefix(err, r, "cleanup %s", d->store->root) : 0;
}
