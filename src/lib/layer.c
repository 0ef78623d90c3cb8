/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layer lifecycle: create, remove, exists, metadata.
 *
 * Crash-safety invariant: a layer exists exactly when its chain file
 * layers/<id> exists.  create writes it last, after everything else is on
 * disk (fsynced); remove renames it away first (fsynced), before anything
 * else is touched.  So an interrupted create leaves only invisible debris,
 * and an interrupted remove leaves layers/<id>-removing, which the next
 * init (or a new create of the same id) finishes.
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
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

int layer_unmount(strata_driver *d, const char *id, strata_error *err)
{
	_cleanup_free_ char *target = driver_path(d, "mnt", id);
	if (!target)
		return -ENOMEM;
	int r = union_unmount(target, err);
	return r < 0 ? r : thin_release_holder(d, id, err);
}

/* Renames <dirfd>/<id> to <id>-removing (replacing the debris of an
 * earlier attempt) and deletes it. */
static int remove_dir(strata_driver *d, int dirfd, const char *sub, const char *id, strata_error *err)
{
	char removing[STORE_REMOVING_NAME_MAX];
	store_removing_name(id, removing);

	if (renameat(dirfd, id, dirfd, removing) < 0 && errno != ENOENT) {
		if (errno != EEXIST && errno != ENOTEMPTY)
			return error_set(err, negerrno(), "rename %s/%s/%s", d->store->root, sub, id);
		/* An earlier remove left <id>-removing: delete it, then retry. */
		int r = fs_rm_tree_at(dirfd, removing, err);
		if (r < 0)
			return error_prefix(err, r, "%s/%s", d->store->root, sub);
		if (renameat(dirfd, id, dirfd, removing) < 0 && errno != ENOENT)
			return error_set(err, negerrno(), "rename %s/%s/%s", d->store->root, sub, id);
	}
	int r = fs_rm_tree_at(dirfd, removing, err);
	if (r < 0)
		return error_prefix(err, r, "%s/%s", d->store->root, sub);
	return 0;
}

int layer_scrub(strata_driver *d, const char *id, strata_error *err)
{
	store *s = d->store;
	const struct {
		int fd;
		const char *sub;
	} dirs[] = {{s->mnt_fd, "mnt"}, {s->diff_fd, "diff"}, {s->work_fd, "work"}};

	/* Never delete through a union: mnt/<id> goes first. */
	int r = layer_unmount(d, id, err);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
		r = remove_dir(d, dirs[i].fd, dirs[i].sub, id, err);
		if (r < 0)
			return r;
	}
	r = link_remove(s, id);
	if (r < 0)
		return error_set(err, r, "remove short link of %s", id);
	r = refs_remove(s, id);
	if (r < 0)
		return error_set(err, r, "remove %s/refs/%s", s->root, id);
	r = thin_forget_under(d, id, err);
	if (r < 0)
		return r;

	char removing[STORE_REMOVING_NAME_MAX];
	store_removing_name(id, removing);
	if (unlinkat(s->layers_fd, removing, 0) < 0 && errno != ENOENT)
		return error_set(err, negerrno(), "unlink %s/layers/%s", s->root, removing);
	return 0;
}

/* The dirs an interrupted create leaves are empty: only empty ones go. */
static int clear_dir(strata_driver *d, int dirfd, const char *sub, const char *id, strata_error *err)
{
	if (unlinkat(dirfd, id, AT_REMOVEDIR) == 0 || errno == ENOENT)
		return 0;
	if (errno == ENOTEMPTY || errno == EEXIST || errno == EBUSY || errno == ENOTDIR)
		return error_setf(err, -ENOTEMPTY,
				  "%s/%s/%s is there but no layer %s exists, and strata did not leave it (it is not an "
				  "empty directory); it is not deleted: see strata check",
				  d->store->root, sub, id, id);
	return error_set(err, negerrno(), "rmdir %s/%s/%s", d->store->root, sub, id);
}

int layer_clear_debris(strata_driver *d, const char *id, strata_error *err)
{
	store *s = d->store;
	char removing[STORE_REMOVING_NAME_MAX];
	store_removing_name(id, removing);
	struct stat st;
	/* An interrupted remove: everything of id is strata's to delete. */
	if (fstatat(s->layers_fd, removing, &st, AT_SYMLINK_NOFOLLOW) == 0)
		return layer_scrub(d, id, err);

	/* An interrupted create: empty dirs, the short links, a count, a
	 * thin record.  Anything else under these names is not strata's. */
	const struct {
		int fd;
		const char *sub;
	} dirs[] = {{s->mnt_fd, "mnt"}, {s->diff_fd, "diff"}, {s->work_fd, "work"}};
	int first = 0;
	for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
		/* -removing names are strata's own, whatever is in them. */
		int r = fs_rm_tree_at(dirs[i].fd, removing, err);
		if (r >= 0) /* the message names the first thing left */
			r = clear_dir(d, dirs[i].fd, dirs[i].sub, id, first ? NULL : err);
		if (r < 0 && r != -ENOTEMPTY)
			return error_prefix(err, r, "%s/%s", s->root, dirs[i].sub);
		if (r < 0 && !first)
			first = r;
	}
	char target[STRATA_ID_MAX + 16];
	ssize_t n = readlinkat(s->link_fd, id, target, sizeof(target));
	if (n >= 0 || errno == ENOENT) {
		int r = link_remove(s, id);
		if (r < 0)
			return error_set(err, r, "remove short link of %s", id);
	} else if (!first) {
		first = error_setf(err, -ENOTEMPTY, "%s/link/%s is not a symlink strata made; it is not deleted",
				   s->root, id);
	}
	int r = refs_is_record(s, id);
	if (r > 0)
		r = refs_remove(s, id);
	if (r < 0)
		return error_set(err, r, "remove %s/refs/%s", s->root, id);
	r = thin_forget_under(d, id, err);
	if (r < 0)
		return r;
	return first;
}

static int check_storage_opts(const char *const *opts, strata_error *err)
{
	/* No storage option is supported yet (a size quota needs project
	 * quotas on the backing filesystem); accepting one silently would
	 * promise what is not done. */
	if (opts && opts[0])
		return error_setf(err, -EINVAL, "unknown storage option \"%s\"", QUOTE(opts[0]));
	return 0;
}

static int create_layer(strata_driver *d, const char *id, const char *parent, const char *const *storage_opts, bool rw,
			strata_error *err)
{
	store *s = d->store;
	int r = id_validate(id, err);
	if (r < 0)
		return r;
	if (parent && *parent) {
		r = id_validate(parent, err);
		if (r < 0)
			return error_prefix(err, r, "parent");
		if (!strcmp(parent, id))
			return error_setf(err, -EINVAL, "a layer cannot be its own parent");
	}
	r = check_storage_opts(storage_opts, err);
	if (r < 0)
		return r;

	/* Holding the parent's lock too keeps a concurrent remove of the
	 * parent from slipping between reading its chain and committing ours. */
	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	r = lock_ids(s, id, parent && *parent ? parent : NULL, &lock);
	if (r < 0)
		return error_set(err, r, "lock %s/lock", s->root);

	r = store_layer_exists(s, id);
	if (r < 0)
		return error_set(err, r, "stat %s/layers/%s", s->root, id);
	if (r > 0)
		return error_setf(err, -EEXIST, "layer already exists");

	_cleanup_strv_free_ char **grandparents = NULL;
	if (parent && *parent) {
		r = chain_read(s, parent, &grandparents, err);
		if (r == -ENOENT)
			return error_setf(err, r, "parent %s does not exist", parent);
		if (r < 0)
			return error_prefix(err, r, "parent %s", parent);
		size_t depth = strv_length(grandparents) + 1;
		if (depth > STORE_MAX_PARENTS)
			return error_setf(
				err, -E2BIG,
				"chain would have %zu layers; overlay mounts at most %d (500 lower + 1 upper)",
				depth + 1, STORE_MAX_PARENTS + 1);
		/* A container on a thin image needs the image's layers: when
		 * one is missing, fail now, before Docker makes a container
		 * whose first mount would fail (it leaks what it made then). */
		if (rw) {
			r = thin_check_image(d, id, parent, grandparents, err);
			if (r < 0)
				return r;
		}
	}

	/* Debris of an interrupted create or remove of this id goes first:
	 * we hold the lock, so no live operation owns it. */
	r = layer_clear_debris(d, id, err);
	if (r < 0)
		return error_prefix(err, r, "clear leftovers");

	_cleanup_free_ char *chain = NULL;
	size_t chain_len = 0;
	r = chain_format(parent, grandparents, &chain, &chain_len);
	if (r < 0)
		return error_set(err, r, "format chain");

	const struct {
		int fd;
		const char *sub;
		mode_t mode;
	} dirs[] = {{s->diff_fd, "diff", 0755}, {s->mnt_fd, "mnt", 0755}, {s->work_fd, "work", 0700}};
	/* With id maps, the container's root owns its root dir, as in Docker's
	 * drivers: a remapped root must be able to write to "/". */
	uid_t root_uid = 0;
	gid_t root_gid = 0;
	uint32_t host;
	if (idmap_to_host(&d->uids, 0, &host) == 0)
		root_uid = host;
	if (idmap_to_host(&d->gids, 0, &host) == 0)
		root_gid = host;
	for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
		r = fs_mkdir_at(dirs[i].fd, id, dirs[i].mode);
		if (r >= 0 && (root_uid || root_gid) &&
		    fchownat(dirs[i].fd, id, root_uid, root_gid, AT_SYMLINK_NOFOLLOW) < 0)
			r = negerrno();
		if (r < 0) {
			error_set(err, r, "mkdir %s/%s/%s", s->root, dirs[i].sub, id);
			goto fail;
		}
	}
	r = link_create(s, id, err);
	if (r < 0)
		goto fail;
	r = thin_record_under(d, id, parent, err);
	if (r < 0)
		goto fail;

	/* Everything the chain file promises must be on disk before it is. */
	int syncfds[] = {s->diff_fd, s->mnt_fd, s->work_fd, s->l_fd, s->link_fd};
	for (size_t i = 0; i < ELEMENTSOF(syncfds); i++) {
		if (fsync(syncfds[i]) < 0) {
			r = error_set(err, negerrno(), "fsync %s", s->root);
			goto fail;
		}
	}
	r = fs_write_atomic_at(s->layers_fd, id, chain, chain_len, 0600, FS_WRITE_SYNC | FS_WRITE_NOREPLACE);
	if (r < 0) {
		error_set(err, r, "write %s/layers/%s", s->root, id);
		goto fail;
	}
	return 0;

fail:
	/* The chain file may have been renamed into place before its dir
	 * sync failed.  Nobody else could have made it (we hold the lock and
	 * saw no layer), so it goes first: the layer must not stay visible
	 * while the rest is scrubbed. */
	unlinkat(s->layers_fd, id, 0);
	layer_scrub(d, id, NULL);
	return r;
}

int strata_create(strata_driver *d, const char *id, const char *parent, const char *const *storage_opts,
		  strata_error *err)
{
	error_clear(err);
	int r = create_layer(d, id, parent, storage_opts, false, err);
	return r < 0 ? error_prefix(err, r, "create %s", QUOTE(id)) : 0;
}

int strata_create_rw(strata_driver *d, const char *id, const char *parent, const char *const *storage_opts,
		     strata_error *err)
{
	error_clear(err);
	/* overlay mounts every layer with its own diff dir as the upper, so
	 * a container's layer needs nothing an image layer lacks; only a thin
	 * image under it is checked (create_layer). */
	int r = create_layer(d, id, parent, storage_opts, true, err);
	return r < 0 ? error_prefix(err, r, "create %s", QUOTE(id)) : 0;
}

/*
 * Only first lines matter: a chain naming id further down also has a
 * direct child of id naming it first.  Fails closed: a chain file that
 * cannot be read is an error, never "no child", or a parent could be
 * removed under its child.  The scan costs one small read per layer in the
 * store; a reverse index would be cheaper but is one more thing a crash
 * could leave inconsistent.
 */
int layer_find_child(strata_driver *d, const char *id, char **ret_child)
{
	_cleanup_strv_free_ char **names = NULL;
	int r = fs_list_dir(d->store->layers_fd, &names);
	if (r < 0)
		return r;
	size_t idlen = strlen(id);
	*ret_child = NULL;
	for (char **p = names; *p; p++) {
		if (store_name_reserved(*p) || !strcmp(*p, id))
			continue;
		_cleanup_close_ int cfd = openat(d->store->layers_fd, *p, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (cfd < 0) {
			if (errno == ENOENT)
				continue; /* removed meanwhile */
			return negerrno();
		}
		char buf[STRATA_ID_MAX + 2];
		ssize_t n = pread(cfd, buf, sizeof(buf), 0);
		if (n < 0)
			return negerrno();
		if ((size_t)n < idlen)
			continue;
		if (!memcmp(buf, id, idlen) && ((size_t)n == idlen || buf[idlen] == '\n')) {
			*ret_child = strdup(*p);
			return *ret_child ? 1 : -ENOMEM;
		}
	}
	return 0;
}

static int remove_layer(strata_driver *d, const char *id, strata_error *err)
{
	store *s = d->store;
	int r = id_validate(id, err);
	if (r < 0)
		return r;

	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	r = lock_ids(s, id, NULL, &lock);
	if (r < 0)
		return error_set(err, r, "lock %s/lock", s->root);

	char removing[STORE_REMOVING_NAME_MAX];
	store_removing_name(id, removing);

	r = store_layer_exists(s, id);
	if (r < 0)
		return error_set(err, r, "stat %s/layers/%s", s->root, id);
	if (r == 0) {
		/* Retrying a remove that was interrupted finishes it. */
		struct stat st;
		if (fstatat(s->layers_fd, removing, &st, AT_SYMLINK_NOFOLLOW) == 0)
			return layer_scrub(d, id, err);
		return error_setf(err, -ENOENT, "no such layer");
	}

	_cleanup_free_ char *child = NULL;
	r = layer_find_child(d, id, &child);
	if (r < 0)
		return error_set(err, r, "read %s/layers", s->root);
	if (r > 0)
		return error_setf(err, -EBUSY, "layer is the parent of %s; remove that first", child);

	/* The count goes before the union: a crash in between leaves a
	 * mount nobody counts (init unmounts it), never a count without a
	 * mount. */
	unsigned count = 0;
	r = refs_read(s, id, &count);
	if (r < 0)
		return error_set(err, r, "read %s/refs/%s", s->root, id);
	if (count > 0 && (r = refs_write(s, id, 0)) < 0)
		return error_set(err, r, "reset %s/refs/%s", s->root, id);
	r = layer_unmount(d, id, err);
	if (r < 0) {
		if (count > 0)
			refs_write(s, id, count); /* still mounted: still counted */
		return r;
	}

	/* The commit point: from here on the layer does not exist. */
	if (renameat(s->layers_fd, id, s->layers_fd, removing) < 0)
		return error_set(err, negerrno(), "rename %s/layers/%s", s->root, id);
	r = fs_fsync_dir(s->layers_fd);
	if (r < 0)
		return error_set(err, r, "fsync %s/layers", s->root);

	return layer_scrub(d, id, err);
}

int strata_remove(strata_driver *d, const char *id, strata_error *err)
{
	error_clear(err);
	int r = remove_layer(d, id, err);
	return r < 0 ? error_prefix(err, r, "remove %s", QUOTE(id)) : 0;
}

int strata_exists(strata_driver *d, const char *id, strata_error *err)
{
	error_clear(err);
	int r = id_validate(id, err);
	if (r < 0)
		return error_prefix(err, r, "exists %s", QUOTE(id));
	r = store_layer_exists(d->store, id);
	if (r < 0)
		return error_set(err, r, "exists %s: stat %s/layers/%s", id, d->store->root, id);
	return r;
}

int layer_lock(strata_driver *d, const char *id, id_lock *ret_lock, char ***ret_parents, strata_error *err)
{
	int r = id_validate(id, err);
	if (r < 0)
		return r;
	r = lock_ids(d->store, id, NULL, ret_lock);
	if (r < 0)
		return error_set(err, r, "lock %s/lock", d->store->root);
	return chain_read(d->store, id, ret_parents, err);
}

static int metadata(strata_driver *d, const char *id, strata_kv_list *ret, strata_error *err)
{
	store *s = d->store;
	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	_cleanup_strv_free_ char **parents = NULL;
	int r = layer_lock(d, id, &lock, &parents, err);
	if (r < 0)
		return r;
	unsigned refs = 0;
	r = refs_read(s, id, &refs);
	if (r < 0)
		return error_set(err, r, "read %s/refs/%s", s->root, id);
	int mounted = fs_is_mount_point_at(s->mnt_fd, id);
	if (mounted < 0)
		mounted = 0;

	/* With a thin image the union's lowers stop at it (thinlayer.c). */
	_cleanup_(chain_plan_release) chain_plan plan = {0};
	r = chain_plan_read(d, id, parents, &plan, err);
	if (r < 0)
		return r;
	strbuf lower = {0};
	for (size_t i = 0; r >= 0 && i < plan.n_store; i++)
		r = strbuf_appendf(&lower, "%s%s/diff/%s", i ? ":" : "", s->root, parents[i]);
	if (r < 0) {
		strbuf_release(&lower);
		return -ENOMEM;
	}
	_cleanup_free_ char *lowerdir = strbuf_detach(&lower);
	if (!lowerdir)
		return -ENOMEM;

	size_t n = strv_length(parents);
	strata_kv_list l = {0};
	r = kv_add(&l, "DiffDir", "%s/diff/%s", s->root, id);
	r = r < 0 ? r : kv_add(&l, "MergedDir", "%s/%s/%s", s->root, n || plan.self ? "mnt" : "diff", id);
	r = r < 0 ? r : kv_add(&l, "WorkDir", "%s/work/%s", s->root, id);
	r = r < 0 ? r : kv_add(&l, "LowerDir", "%s", lowerdir);
	r = r < 0 ? r : kv_add(&l, "Parent", "%s", n ? parents[0] : "");
	r = r < 0 ? r : kv_add(&l, "ChainLength", "%zu", n + 1);
	r = r < 0 ? r : kv_add(&l, "RefCount", "%u", refs);
	r = r < 0 ? r : kv_add(&l, "Mounted", "%s", mounted > 0 ? "true" : "false");
	if (plan.image.n > 0) /* the layers themselves: strata thin show */
		r = r < 0 ? r
			  : kv_add(&l, "ThinImage", "%s (%zu layers in %s%s)", plan.thin_id, plan.image.n,
				   plan.image.layers[plan.image.n - 1].repo,
				   strv_length(plan.repos) > 1 ? " and others" : "");
	if (r < 0) {
		strata_kv_list_clear(&l);
		return -ENOMEM;
	}
	*ret = l;
	return 0;
}

int strata_get_metadata(strata_driver *d, const char *id, strata_kv_list *ret_metadata, strata_error *err)
{
	error_clear(err);
	int r = metadata(d, id, ret_metadata, err);
	return r < 0 ? error_prefix(err, r, "metadata %s", QUOTE(id)) : 0;
}
