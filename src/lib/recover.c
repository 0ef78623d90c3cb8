/* SPDX-License-Identifier: Apache-2.0 */
/*
 * What init does beyond creating the layout: prove the backing filesystem
 * can carry overlay, and undo what a crashed process left behind.
 *
 * Recovery takes each id's lock before touching anything of that id, so it
 * is safe while other processes use the store: an operation in flight owns
 * its lock, and whatever recovery finds once it holds the lock is debris.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "driver.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

#define PROBE_PREFIX ".probe-"

static int probe_mount(strata_driver *d, int probe_fd, const char *probe, strata_error *err)
{
	_cleanup_free_ char *lower = NULL, *upper = NULL, *work = NULL, *merged = NULL;
	if (asprintf(&lower, "%s/lower", probe) < 0 || asprintf(&upper, "%s/upper", probe) < 0 ||
	    asprintf(&work, "%s/work", probe) < 0 || asprintf(&merged, "%s/merged", probe) < 0)
		return -ENOMEM;
	char *lowers[] = {lower, NULL};
	char lower_name[] = "lower";
	char *short_lowers[] = {lower_name, NULL};
	union_request req = {
		.target = merged,
		.upper = upper,
		.work = work,
		.lowers = lowers,
		.n_lowers = 1,
		.short_dirfd = probe_fd,
		.short_lowers = short_lowers,
		.short_upper = "upper",
		.short_work = "work",
	};
	int r = overlay_mount(&req, d->api, err);
	if (r < 0)
		return r;

	/* Deleting a lower file through the union must leave overlay's
	 * whiteout (a 0/0 character device) in the upper dir: the format
	 * every layer's diff relies on. */
	_cleanup_close_ int mfd = open(merged, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (mfd < 0)
		r = error_set(err, negerrno(), "open %s", merged);
	else if (unlinkat(mfd, "file", 0) < 0)
		r = error_set(err, negerrno(), "delete a lower file through overlay at %s", merged);
	closep(&mfd);
	mfd = -1;
	int u = union_unmount(merged, r < 0 ? NULL : err);
	if (r < 0)
		return r;
	if (u < 0)
		return u;

	struct stat st;
	if (fstatat(probe_fd, "upper/file", &st, AT_SYMLINK_NOFOLLOW) < 0)
		return error_set(err, negerrno(), "overlay left no whiteout in %s", upper);
	if (!S_ISCHR(st.st_mode) || st.st_rdev != makedev(0, 0))
		return error_setf(err, -EOPNOTSUPP, "overlay whiteout in %s is not a 0/0 character device", upper);
	return 0;
}

int driver_probe_backing(strata_driver *d, strata_error *err)
{
	store *s = d->store;
	char rnd[8], name[32];
	int r = fs_random_name(rnd, sizeof(rnd));
	if (r < 0)
		return error_set(err, r, "getrandom");
	snprintf(name, sizeof(name), PROBE_PREFIX "%.8s", rnd);

	r = fs_mkdir_at(s->root_fd, name, 0700);
	if (r < 0)
		return error_set(err, r, "mkdir %s/%s", s->root, name);
	_cleanup_free_ char *probe = NULL;
	if (asprintf(&probe, "%s/%s", s->root, name) < 0) {
		fs_rm_tree_at(s->root_fd, name, NULL);
		return -ENOMEM;
	}

	_cleanup_close_ int ffd = -1;
	_cleanup_close_ int pfd = openat(s->root_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (pfd < 0) {
		r = error_set(err, negerrno(), "open %s", probe);
		goto out;
	}
	static const char *const dirs[] = {"lower", "upper", "work", "merged"};
	for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
		r = fs_mkdir_at(pfd, dirs[i], 0700);
		if (r < 0) {
			error_set(err, r, "mkdir %s/%s", probe, dirs[i]);
			goto out;
		}
	}
	ffd = openat(pfd, "lower/file", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (ffd < 0) {
		r = error_set(err, negerrno(), "create %s/lower/file", probe);
		goto out;
	}

	/* overlay needs d_type to tell whiteouts from files cheaply. */
	DIR *dir = NULL;
	r = fs_opendir_at(pfd, "lower", &dir);
	if (r < 0) {
		error_set(err, r, "open %s/lower", probe);
		goto out;
	}
	bool dtype = false;
	struct dirent *de;
	while ((de = readdir(dir)))
		if (!strcmp(de->d_name, "file"))
			dtype = de->d_type == DT_REG;
	closedir(dir);
	if (!dtype) {
		r = error_setf(err, -EOPNOTSUPP,
			       "backing filesystem %s at %s does not report file types (d_type); overlay needs them "
			       "(for ext4: mkfs -O filetype; for xfs: mkfs -n ftype=1)",
			       d->backing_fs, s->root);
		goto out;
	}

	r = probe_mount(d, pfd, probe, err);
	/* Running out of memory or fds says nothing about the filesystem. */
	if (r < 0 && r != -ENOMEM && r != -EMFILE && r != -ENFILE)
		error_prefix(err, r, "backing filesystem %s cannot carry overlay", d->backing_fs);
out:;
	int q = fs_rm_tree_at(s->root_fd, name, r < 0 ? NULL : err);
	return r < 0 ? r : q;
}

/* ".tmp-<8 random>-<id>": an atomic write or an apply of <id> that never
 * reached its rename, unless a live operation on <id> is writing it right
 * now: hence its lock. */
static int recover_temp(strata_driver *d, int dirfd, const char *sub, const char *name, strata_error *err)
{
	store *s = d->store;
	_cleanup_free_ char *owner = strlen(name) > 14 ? store_owner_id(name + 14) : NULL;
	_cleanup_lock_ id_lock tlock = ID_LOCK_INIT;
	if (owner) {
		int r = lock_ids(s, owner, NULL, &tlock);
		if (r < 0)
			return error_set(err, r, "lock %s", owner);
	}
	/* A file, or an apply's staging dir (diff.c). */
	int r = fs_rm_tree_at(dirfd, name, err);
	return r < 0 ? error_prefix(err, r, "%s/%s", s->root, sub) : 0;
}

/* The temp files of the records in dirfd (thin/under, import-aufs). */
static int recover_temps(strata_driver *d, int dirfd, const char *sub, strata_error *err)
{
	_cleanup_strv_free_ char **names = NULL;
	int r = fs_list_dir(dirfd, &names);
	if (r < 0)
		return error_set(err, r, "read %s/%s", d->store->root, sub);
	for (char **p = names; *p && r >= 0; p++)
		if (!strncmp(*p, ".tmp-", 5))
			r = recover_temp(d, dirfd, sub, *p, err);
	return r;
}

static int recover_dir(strata_driver *d, int dirfd, const char *sub, strata_error *err)
{
	store *s = d->store;
	_cleanup_strv_free_ char **names = NULL;
	int r = fs_list_dir(dirfd, &names);
	if (r < 0)
		return error_set(err, r, "read %s/%s", s->root, sub);

	for (char **p = names; *p; p++) {
		const char *name = *p;
		if (!strncmp(name, ".tmp-", 5)) {
			r = recover_temp(d, dirfd, sub, name, err);
			if (r < 0)
				return r;
			continue;
		}
		_cleanup_free_ char *id = store_owner_id(name);
		if (!id)
			continue; /* not ours: leave it */

		_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
		r = lock_ids(s, id, NULL, &lock);
		if (r < 0)
			return error_set(err, r, "lock %s", id);
		r = store_layer_exists(s, id);
		if (r < 0)
			return error_set(err, r, "stat %s/layers/%s", s->root, id);
		bool live = r > 0;
		if (strcmp(name, id) != 0) {
			/* "<id>-removing": strata's own name.  In layers/ it marks
			 * an interrupted remove, which is finished; elsewhere it
			 * is what a remove had renamed away. */
			if (dirfd == s->layers_fd && !live)
				r = layer_scrub(d, id, err);
			else
				r = fs_rm_tree_at(dirfd, name, err);
			/* A mount strata did not make in there stays, and so
			 * does what holds it (strata check reports it). */
			if (r < 0 && r != -EBUSY)
				return error_prefix(err, r, "finish removing %s", id);
			continue;
		}
		if (live)
			continue;
		/* No chain file: what an interrupted create left.  What
		 * strata did not make stays (strata check reports it). */
		r = layer_clear_debris(d, id, NULL);
		if (r < 0 && r != -ENOTEMPTY)
			return error_set(err, r, "clear what an interrupted create of %s left", id);
	}
	return 0;
}

/* Temp files of the atomic writes at the top of the store (engine, the
 * marker): written under the init lock, which recovery holds. */
static int recover_top(strata_driver *d, char **names, strata_error *err)
{
	static const char *const files[] = {"engine", STORE_MARKER};
	for (char **p = names; *p; p++) {
		/* ".tmp-<8 random>-<name>" */
		if (strncmp(*p, ".tmp-", 5) != 0 || strlen(*p) < 15 || (*p)[13] != '-')
			continue;
		for (size_t i = 0; i < ELEMENTSOF(files); i++)
			if (!strcmp(*p + 14, files[i]) && unlinkat(d->store->root_fd, *p, 0) < 0 && errno != ENOENT)
				return error_set(err, negerrno(), "unlink %s/%s", d->store->root, *p);
	}
	return 0;
}

/* l/<short> links whose layer is gone, or that no link/<id> points back to
 * (a create interrupted between the two symlinks). */
static int recover_short_links(strata_driver *d, strata_error *err)
{
	store *s = d->store;
	_cleanup_strv_free_ char **names = NULL;
	int r = fs_list_dir(s->l_fd, &names);
	if (r < 0)
		return error_set(err, r, "read %s/l", s->root);
	for (char **p = names; *p; p++) {
		char target[STRATA_ID_MAX + 16];
		ssize_t n = readlinkat(s->l_fd, *p, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = '\0';
		if (strncmp(target, "../diff/", 8) != 0)
			continue;
		const char *id = target + 8;
		if (id_validate(id, NULL) < 0)
			continue;
		_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
		r = lock_ids(s, id, NULL, &lock);
		if (r < 0)
			return error_set(err, r, "lock %s", id);
		/* Only links proven dangling go: an error reading the layer's
		 * side keeps the link, as its children's legacy mounts need it. */
		char back[STORE_LINK_LEN + 1];
		int exists = store_layer_exists(s, id);
		int lr = exists > 0 ? link_read(s, id, back) : -ENOENT;
		if (exists < 0 || (lr < 0 && lr != -ENOENT && lr != -EBADMSG) || (lr == 0 && !strcmp(back, *p)))
			continue;
		if (unlinkat(s->l_fd, *p, 0) < 0 && errno != ENOENT)
			return error_set(err, negerrno(), "unlink %s/l/%s", s->root, *p);
	}
	return 0;
}

int driver_recover(strata_driver *d, strata_error *err)
{
	store *s = d->store;

	/* Probe dirs of an init that died mid-probe (a mount may remain). */
	_cleanup_strv_free_ char **top = NULL;
	int r = fs_list_dir(s->root_fd, &top);
	if (r < 0)
		return error_set(err, r, "read %s", s->root);
	r = recover_top(d, top, err);
	if (r < 0)
		return r;
	for (char **p = top; *p; p++) {
		if (strncmp(*p, PROBE_PREFIX, strlen(PROBE_PREFIX)) != 0)
			continue;
		_cleanup_free_ char *merged = NULL;
		if (asprintf(&merged, "%s/%s/merged", s->root, *p) < 0)
			return -ENOMEM;
		_cleanup_close_ int pfd = openat(s->root_fd, *p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (pfd >= 0 && fs_is_mount_point_at(pfd, "merged") > 0) {
			r = union_unmount(merged, err);
			if (r < 0)
				return r;
		}
		r = fs_rm_tree_at(s->root_fd, *p, err);
		if (r < 0)
			return error_prefix(err, r, "%s", s->root);
	}

	/* Mounts first, so no directory removed below has a mount in it. */
	r = driver_unmount_views(d, true, err);
	if (r < 0)
		return r;
	/* Repositories held by unions that are gone (a crash, a reboot). */
	r = thin_prune(d, true, err);
	if (r < 0)
		return r;

	const struct {
		int fd;
		const char *sub;
	} dirs[] = {{s->layers_fd, "layers"}, {s->diff_fd, "diff"}, {s->mnt_fd, "mnt"},
		    {s->work_fd, "work"},     {s->refs_fd, "refs"}, {s->link_fd, "link"}};
	for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
		r = recover_dir(d, dirs[i].fd, dirs[i].sub, err);
		if (r < 0)
			return r;
	}
	/* Records written with temp files, under the ids' locks too. */
	static const char *const records[] = {"thin/under", "import-aufs"};
	for (size_t i = 0; i < ELEMENTSOF(records); i++) {
		_cleanup_close_ int fd =
			openat(s->root_fd, records[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0 && errno != ENOENT)
			return error_set(err, negerrno(), "open %s/%s", s->root, records[i]);
		if (fd >= 0 && (r = recover_temps(d, fd, records[i], err)) < 0)
			return r;
	}
	return recover_short_links(d, err);
}
