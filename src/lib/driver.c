/* SPDX-License-Identifier: Apache-2.0 */
/* Opening a store, options, status: the parts of the contract that are
 * about the store as a whole. */
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "driver.h"
#include "union/aufs.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

#ifndef AUFS_SUPER_MAGIC
#define AUFS_SUPER_MAGIC 0x61756673
#endif
#ifndef ZFS_SUPER_MAGIC
#define ZFS_SUPER_MAGIC 0x2fc12fc1
#endif
#ifndef XFS_SUPER_MAGIC
#define XFS_SUPER_MAGIC 0x58465342
#endif
#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif
#ifndef F2FS_SUPER_MAGIC
#define F2FS_SUPER_MAGIC 0xf2f52010
#endif

static const struct {
	unsigned long magic;
	const char *name;
} fs_names[] = {
	{EXT4_SUPER_MAGIC, "extfs"},
	{XFS_SUPER_MAGIC, "xfs"},
	{BTRFS_SUPER_MAGIC, "btrfs"},
	{TMPFS_MAGIC, "tmpfs"},
	{OVERLAYFS_SUPER_MAGIC, "overlayfs"},
	{AUFS_SUPER_MAGIC, "aufs"},
	{ZFS_SUPER_MAGIC, "zfs"},
	{NFS_SUPER_MAGIC, "nfs"},
	{ECRYPTFS_SUPER_MAGIC, "ecryptfs"},
	{FUSE_SUPER_MAGIC, "fuse"},
	{F2FS_SUPER_MAGIC, "f2fs"},
	{SQUASHFS_MAGIC, "squashfs"},
	{MSDOS_SUPER_MAGIC, "msdos"},
};

static void fs_name(unsigned long magic, char *buf, size_t size)
{
	for (size_t i = 0; i < ELEMENTSOF(fs_names); i++)
		if (fs_names[i].magic == magic) {
			snprintf(buf, size, "%s", fs_names[i].name);
			return;
		}
	snprintf(buf, size, "0x%lx", magic);
}

char *driver_path(const strata_driver *d, const char *sub, const char *id)
{
	char *p = NULL;
	if (asprintf(&p, "%s/%s/%s", d->store->root, sub, id) < 0)
		return NULL;
	return p;
}

strata_driver *strata_driver_free(strata_driver *d)
{
	if (!d)
		return NULL;
	if (d->front_end_fd >= 0)
		close(d->front_end_fd);
	store_free(d->store);
	thin_config_release(&d->thin);
	idmap_release(&d->uids);
	idmap_release(&d->gids);
	free(d);
	return NULL;
}

static void driver_freep(strata_driver **d)
{
	strata_driver_free(*d);
}

void strata_driver_set_log(strata_driver *d, strata_log_fn fn, void *data)
{
	d->thin.log = fn;
	d->thin.log_data = data;
}

int strata_claim(strata_driver *d, const char *front_end, strata_error *err)
{
	error_clear(err);
	if (d->front_end_fd >= 0)
		return 0;
	bool snapshotter = !strcmp(front_end, "snapshotter");
	if (!snapshotter && strcmp(front_end, "serve"))
		return error_setf(err, -EINVAL, "claim %s: unknown front end \"%s\"", d->store->root, QUOTE(front_end));
	int r = lock_front_end(d->store, snapshotter, &d->front_end_fd);
	if (r == -EALREADY)
		return error_setf(err, -EBUSY, "%s %s: the store is in use by another strata snapshotter", front_end,
				  d->store->root);
	if (r == -EAGAIN)
		return error_setf(
			err, -EBUSY,
			"%s %s: the store is in use by strata %s (one engine per store: give each its own --root)",
			front_end, d->store->root, snapshotter ? "serve" : "snapshotter");
	return r < 0 ? error_set(err, r, "%s %s: lock %s/lock", front_end, d->store->root, d->store->root) : 0;
}

const char *strata_driver_root(const strata_driver *d)
{
	return d->store->root;
}

int strata_id_validate(const char *id, strata_error *err)
{
	error_clear(err);
	return id_validate(id, err);
}

void strata_kv_list_clear(strata_kv_list *list)
{
	if (!list)
		return;
	for (size_t i = 0; i < list->n; i++) {
		free(list->items[i].key);
		free(list->items[i].value);
	}
	free(list->items);
	list->items = NULL;
	list->n = 0;
}

int kv_add(strata_kv_list *list, const char *key, const char *fmt, ...)
{
	strata_kv *items = realloc(list->items, (list->n + 1) * sizeof(*items));
	if (!items)
		return -ENOMEM;
	list->items = items;
	char *value = NULL;
	va_list ap;
	va_start(ap, fmt);
	int r = vasprintf(&value, fmt, ap);
	va_end(ap);
	char *k = strdup(key);
	if (r < 0 || !k) {
		free(k);
		if (r >= 0)
			free(value);
		return -ENOMEM;
	}
	items[list->n++] = (strata_kv){k, value};
	return 0;
}

typedef enum engine_choice { ENGINE_AUTO, ENGINE_OVERLAY, ENGINE_AUFS } engine_choice;

/* Options arrive as "key=value" from the CLI (-o) or Docker's Init Opts. */
static int parse_options(strata_driver *d, const char *const *options, overlay_api *ret_api, engine_choice *ret_engine,
			 strata_error *err)
{
	*ret_api = OVERLAY_API_AUTO;
	*ret_engine = ENGINE_AUTO;
	for (const char *const *o = options; o && *o; o++) {
		const char *eq = strchr(*o, '=');
		if (!eq)
			return error_setf(err, -EINVAL, "driver option \"%s\" is not key=value", *o);
		size_t kl = (size_t)(eq - *o);
		const char *v = eq + 1;
		if (kl == 6 && !strncmp(*o, "engine", kl)) {
			if (!strcmp(v, "overlay"))
				*ret_engine = ENGINE_OVERLAY;
			else if (!strcmp(v, "aufs"))
				*ret_engine = ENGINE_AUFS;
			else if (!strcmp(v, "auto"))
				*ret_engine = ENGINE_AUTO;
			else
				return error_setf(
					err, -EINVAL,
					"driver option engine=%s: unknown engine (known: overlay, aufs, auto)", v);
		} else if (kl == 8 && !strncmp(*o, "mountapi", kl)) {
			if (!strcmp(v, "auto"))
				*ret_api = OVERLAY_API_AUTO;
			else if (!strcmp(v, "new"))
				*ret_api = OVERLAY_API_NEW;
			else if (!strcmp(v, "legacy"))
				*ret_api = OVERLAY_API_LEGACY;
			else
				return error_setf(err, -EINVAL,
						  "driver option mountapi=%s: expected auto, new or legacy", v);
		} else if (kl == 6 && (!strncmp(*o, "uidmap", kl) || !strncmp(*o, "gidmap", kl))) {
			int r = idmap_add(**o == 'u' ? &d->uids : &d->gids, v, err);
			if (r < 0)
				return error_prefix(err, r, "driver option %.*s", (int)kl, *o);
		} else {
			int r = thin_config_set(&d->thin, *o, kl, v, err);
			if (r < 0)
				return r;
			if (r == 0)
				return error_setf(err, -EINVAL, "unknown driver option \"%.*s\"", (int)kl, *o);
		}
	}
	return 0;
}

/* The nearest existing ancestor of path, for checks before mkdir. */
static int statfs_nearest(const char *path, struct statfs *ret)
{
	_cleanup_free_ char *p = strdup(path);
	if (!p)
		return -ENOMEM;
	for (;;) {
		if (statfs(p, ret) == 0)
			return 0;
		if (errno != ENOENT)
			return negerrno();
		char *slash = strrchr(p, '/');
		if (!slash)
			return -ENOENT;
		if (slash == p) {
			p[1] = '\0';
			return statfs(p, ret) == 0 ? 0 : negerrno();
		}
		*slash = '\0';
	}
}

static bool selinux_enabled(void)
{
	/* As Docker's label package: labels only mean something when
	 * selinuxfs is mounted; otherwise context= would make mounts fail. */
	return access("/sys/fs/selinux/enforce", F_OK) == 0;
}

static int absolute_root(const char *root, char **ret)
{
	if (root[0] == '/') {
		*ret = strdup(root);
		return *ret ? 0 : -ENOMEM;
	}
	_cleanup_free_ char *cwd = getcwd(NULL, 0);
	if (!cwd)
		return negerrno();
	return asprintf(ret, "%s/%s", cwd, root) < 0 ? -ENOMEM : 0;
}

/*
 * With id maps, a container's root is an unprivileged host uid that must
 * reach its root filesystem, mnt/<id> (diff/<id> for a base layer): the
 * store root, mnt/ and diff/ become traversable by the remapped root's
 * group, as Docker's own drivers make theirs (0710, group = that gid).
 * Only the execute bit is given: nobody can list the store.
 */
static int open_for_remapped_root(strata_driver *d, strata_error *err)
{
	uint32_t gid = 0;
	if (idmap_to_host(&d->gids, 0, &gid) < 0 || gid == 0)
		return 0;
	store *s = d->store;
	const struct {
		int fd;
		const char *sub;
	} dirs[] = {{s->root_fd, ""}, {s->mnt_fd, "/mnt"}, {s->diff_fd, "/diff"}};
	for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
		struct stat st;
		if (fstat(dirs[i].fd, &st) < 0)
			return error_set(err, negerrno(), "stat %s%s", s->root, dirs[i].sub);
		if ((st.st_mode & 0001) || (st.st_gid == gid && (st.st_mode & 0010)))
			continue; /* already traversable */
		if (fchown(dirs[i].fd, (uid_t)-1, gid) < 0 || fchmod(dirs[i].fd, (st.st_mode & 0700) | 0010) < 0)
			return error_set(err, negerrno(), "let the remapped root (gid %u) traverse %s%s", (unsigned)gid,
					 s->root, dirs[i].sub);
	}
	return 0;
}

static int driver_open(const char *root, const char *const *options, unsigned flags, strata_driver **ret_driver,
		       strata_error *err)
{
	const char *op = (flags & STRATA_OPEN_INIT) ? "init" : "open";
	if (!root || !*root)
		return error_setf(err, -EINVAL, "%s: empty root path", op);

	_cleanup_(driver_freep) strata_driver *d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->front_end_fd = -1;

	int r = thin_config_init(&d->thin);
	if (r < 0)
		return r;
	overlay_api want;
	engine_choice engine;
	r = parse_options(d, options, &want, &engine, err);
	if (r < 0)
		return error_prefix(err, r, "%s %s", op, root);

	_cleanup_free_ char *abs = NULL;
	r = absolute_root(root, &abs);
	if (r < 0)
		return error_set(err, r, "%s %s: resolve path", op, root);

	struct statfs sfs;
	r = statfs_nearest(abs, &sfs);
	if (r < 0)
		return error_set(err, r, "%s %s: statfs", op, abs);
	fs_name((unsigned long)sfs.f_type, d->backing_fs, sizeof(d->backing_fs));
	/* A store keeps the engine it was made with (ROOT/engine): its diff
	 * dirs are in that engine's format.  auto: that one, or for a new
	 * store aufs when the kernel lists it (as Docker chose), else overlay. */
	engine_choice recorded = ENGINE_AUTO;
	_cleanup_free_ char *engine_path = NULL;
	if (asprintf(&engine_path, "%s/engine", abs) < 0)
		return -ENOMEM;
	_cleanup_free_ char *rec = NULL;
	size_t rec_len = 0;
	r = fs_read_at(AT_FDCWD, engine_path, 64, &rec, &rec_len);
	if (r >= 0)
		recorded = !strncmp(rec, "aufs", 4) ? ENGINE_AUFS : ENGINE_OVERLAY;
	else if (r != -ENOENT)
		return error_set(err, r, "%s %s: read %s", op, abs, engine_path);
	if (engine != ENGINE_AUTO && recorded != ENGINE_AUTO && engine != recorded)
		return error_setf(err, -EINVAL, "%s %s: engine=%s, but the store was made with %s (see %s)", op, abs,
				  engine == ENGINE_AUFS ? "aufs" : "overlay",
				  recorded == ENGINE_AUFS ? "aufs" : "overlay", engine_path);
	if (engine == ENGINE_AUTO)
		engine = recorded != ENGINE_AUTO		? recorded
			 : aufs_listed("/proc/filesystems") > 0 ? ENGINE_AUFS
								: ENGINE_OVERLAY;
	d->aufs = engine == ENGINE_AUFS;
	if (d->aufs) {
		r = aufs_supported((unsigned long)sfs.f_type, d->backing_fs, err);
		if (r < 0)
			return error_prefix(err, r, "%s %s: engine=aufs", op, abs);
	} else if (flags & STRATA_OPEN_INIT) {
		switch ((unsigned long)sfs.f_type) {
		case OVERLAYFS_SUPER_MAGIC:
		case AUFS_SUPER_MAGIC:
		case ECRYPTFS_SUPER_MAGIC:
			return error_setf(err, -EOPNOTSUPP,
					  "init %s: backing filesystem is %s; overlay cannot use it for layers "
					  "(put the root on ext4, xfs or btrfs)",
					  abs, d->backing_fs);
		}
	}

	r = store_open(abs, flags & STRATA_OPEN_INIT, &d->store, err);
	if (r < 0)
		return error_prefix(err, r, "%s %s", op, abs);

	int features = overlay_probe();
	d->fd_layers = features & OVERLAY_FD_LAYERS;
	if (want == OVERLAY_API_AUTO)
		d->api = (features & OVERLAY_NEW_API) ? OVERLAY_API_NEW : OVERLAY_API_LEGACY;
	else if (want == OVERLAY_API_NEW && !(features & OVERLAY_NEW_API))
		return error_setf(err, -EOPNOTSUPP,
				  "%s %s: mountapi=new: this kernel's overlay does not take lowerdir+ (Linux 6.7+)", op,
				  d->store->root);
	else
		d->api = want;
	d->selinux = selinux_enabled();

	if (flags & STRATA_OPEN_INIT) {
		_cleanup_lock_ id_lock init_lock = ID_LOCK_INIT;
		r = lock_store_init(d->store, &init_lock);
		if (r < 0)
			return error_set(err, r, "init %s: lock %s/lock", d->store->root, d->store->root);
		/* Under the init lock: recovery removes the temp files of
		 * writes at the store's top, and none is in flight. */
		if (recorded == ENGINE_AUTO) {
			const char *name = d->aufs ? "aufs\n" : "overlay\n";
			r = fs_write_atomic_at(d->store->root_fd, "engine", name, strlen(name), 0600, FS_WRITE_SYNC);
			if (r < 0)
				return error_set(err, r, "init %s: write %s", d->store->root, engine_path);
		}
		r = open_for_remapped_root(d, err);
		if (r < 0)
			return error_prefix(err, r, "init %s", d->store->root);
		if (d->aufs)
			d->dirperm1 = aufs_probe_dirperm1(d->store->root);
		else
			r = driver_probe_backing(d, err);
		if (r < 0)
			return error_prefix(err, r, "init %s", d->store->root);
		r = driver_recover(d, err);
		if (r < 0)
			return error_prefix(err, r, "init %s: recover", d->store->root);
	}

	*ret_driver = TAKE_PTR(d);
	return 0;
}

int strata_driver_open(const char *root, const char *const *options, unsigned flags, strata_driver **ret_driver,
		       strata_error *err)
{
	error_clear(err);
	int r = driver_open(root, options, flags, ret_driver, err);
	/* Every failure leaves a message naming the operation and the root. */
	if (r < 0 && err && !err->message[0])
		error_set(err, r, "%s %s", (flags & STRATA_OPEN_INIT) ? "init" : "open", root ? root : "");
	return r;
}

int strata_layers(strata_driver *d, const char *prefix, char ***ret_ids, strata_error *err)
{
	error_clear(err);
	_cleanup_strv_free_ char **names = NULL;
	int r = fs_list_dir(d->store->layers_fd, &names);
	if (r < 0)
		return error_set(err, r, "list %s/layers", d->store->root);
	size_t k = 0, pl = prefix ? strlen(prefix) : 0;
	for (char **p = names; *p; p++) {
		if (!store_name_reserved(*p) && id_validate(*p, NULL) == 0 && !strncmp(*p, prefix ? prefix : "", pl))
			names[k++] = *p;
		else
			free(*p);
	}
	names[k] = NULL;
	*ret_ids = TAKE_PTR(names);
	return 0;
}

static int count_layers(strata_driver *d, size_t *ret)
{
	_cleanup_strv_free_ char **names = NULL;
	int r = fs_list_dir(d->store->layers_fd, &names);
	if (r < 0)
		return r;
	size_t n = 0;
	for (char **p = names; *p; p++)
		if (!store_name_reserved(*p) && id_validate(*p, NULL) == 0)
			n++;
	*ret = n;
	return 0;
}

static int status(strata_driver *d, strata_kv_list *ret_status, strata_error *err)
{
	size_t layers = 0, n_mounts = 0;
	int r = count_layers(d, &layers);
	if (r < 0)
		return error_set(err, r, "status: read %s/layers", d->store->root);

	_cleanup_free_ char *mnt = NULL;
	if (asprintf(&mnt, "%s/mnt", d->store->root) < 0)
		return -ENOMEM;
	mount_entry *m = NULL;
	r = mountinfo_under(mnt, &m, &n_mounts);
	if (r < 0)
		return error_set(err, r, "status: read /proc/self/mountinfo");
	size_t overlays = 0;
	for (size_t i = 0; i < n_mounts; i++)
		if (!strcmp(m[i].fstype, "overlay"))
			overlays++;
	mount_entries_free(m, n_mounts);

	strata_kv_list l = {0};
	r = 0;
	r = r < 0 ? r : kv_add(&l, "Root Dir", "%s", d->store->root);
	r = r < 0 ? r : kv_add(&l, "Backing Filesystem", "%s", d->backing_fs);
	r = r < 0 ? r : kv_add(&l, "Union Engine", "%s", d->aufs ? "aufs" : "overlay");
	if (d->aufs)
		r = r < 0 ? r : kv_add(&l, "Dirperm1 Supported", "%s", d->dirperm1 ? "true" : "false");
	else
		r = r < 0 ? r
			  : kv_add(&l, "Mount API", "%s",
				   d->api == OVERLAY_API_NEW ? "new (fsconfig lowerdir+)"
							     : "legacy (mount(2), short paths)");
	r = r < 0 ? r : kv_add(&l, "Supports d_type", "true");
	r = r < 0 ? r : kv_add(&l, "Max Chain Length", "%d", STORE_MAX_PARENTS + 1);
	r = r < 0 ? r : kv_add(&l, "SELinux Labels", "%s", d->selinux ? "true" : "false");
	r = r < 0 ? r : kv_add(&l, "Layers", "%zu", layers);
	r = r < 0 ? r : kv_add(&l, "Mounted", "%zu", overlays);
	r = r < 0 ? r : kv_add(&l, "Thin Root", "%s", d->thin.root);
	r = r < 0 ? r : kv_add(&l, "Thin Mount Method", "%s", d->thin.internal ? "internal" : "external");
	r = r < 0 ? r : kv_add(&l, "Thin Publisher", "%s", d->thin.publisher ? d->thin.publisher : "none");
	if (r >= 0 && d->thin.internal) {
		_cleanup_close_ int tfd = -1;
		_cleanup_strv_free_ char **repos = NULL;
		if (driver_thin_dir(d, false, &tfd) >= 0 && thin_repos_describe(tfd, &repos) >= 0) {
			for (char **p = repos; *p && r >= 0; p++)
				r = kv_add(&l, "Thin Repository", "%s", *p);
		}
	}
	if (r < 0) {
		strata_kv_list_clear(&l);
		return error_set(err, r, "status");
	}
	*ret_status = l;
	return 0;
}

int strata_status(strata_driver *d, strata_kv_list *ret_status, strata_error *err)
{
	error_clear(err);
	int r = status(d, ret_status, err);
	if (r < 0 && err && !err->message[0])
		error_set(err, r, "status %s", d->store->root);
	return r;
}
