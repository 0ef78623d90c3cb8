/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tar side of the contract: apply_diff, diff, diff_size, changes.
 *
 * Crash-safety invariant of apply: the tar is extracted into a staging
 * dir, diff/.tmp-<rand>-<id>, which replaces the (empty) diff dir with one
 * rename only once it is complete and on disk.  Until then the layer is
 * exactly as it was; a crash leaves only the staging dir, which init
 * removes under the id's lock (recover.c).
 *
 * diff, size and changes against the direct parent read the layer's own
 * diff dir (the fast path); against any other parent both layers are
 * mounted and their trees compared (the naive path), as Docker's
 * NaiveDiffDriver does.
 */
#include <archive.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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

static const strata_tar_options no_options;

static void tar_opts_init(const strata_driver *d, const strata_tar_options *o, tar_opts *ret)
{
	*ret = (tar_opts){
		.uids = &d->uids,
		.gids = &d->gids,
		/* An aufs store's diff dirs keep the .wh. files of the tar. */
		.flags = o->flags | (d->aufs ? TAR_AUFS : 0),
		.progress = o->progress,
		.progress_data = o->progress_data,
		.cancel = o->cancel,
	};
}

/* The parent a naive comparison uses: NULL means the direct one. */
static const char *naive_parent(char *const *parents, const char *parent)
{
	return parent ? parent : parents[0] ? parents[0] : "";
}

/* Against the direct parent (NULL means it), the diff dir is the answer. */
static bool is_direct(char *const *parents, const char *parent, unsigned flags)
{
	if (flags & STRATA_TAR_NAIVE)
		return false;
	if (!parent)
		return true;
	return !strcmp(parent, parents[0] ? parents[0] : "");
}

static int dir_is_empty(int dirfd)
{
	_cleanup_closedir_ DIR *dir = NULL;
	int r = fs_opendir_at(dirfd, ".", &dir);
	if (r < 0)
		return r;
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(dir);
		if (!de)
			return errno ? negerrno() : 1;
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			return 0;
	}
}

/* A tar that makes a thin layer must hold a valid thin.json and nothing
 * else (what else it held would never be seen); the store then knows it
 * has thin layers. */
int layer_check_thin(strata_driver *d, int sfd, strata_error *err)
{
	thin_image img = {0};
	int r = thin_read_at(sfd, &img, err);
	thin_image_release(&img);
	if (r <= 0)
		return r;
	_cleanup_strv_free_ char **names = NULL;
	r = fs_list_dir(sfd, &names);
	if (r < 0)
		return error_set(err, r, "read the extracted layer");
	if (strv_length(names) != 1)
		return error_setf(err, -EINVAL,
				  "the tar holds " THIN_FILE
				  " and %zu other entries at its top: a thin layer holds only " THIN_FILE,
				  strv_length(names) - 1);
	_cleanup_close_ int fd = -1;
	r = driver_thin_dir(d, true, &fd);
	return r < 0 ? error_set(err, r, "mkdir %s/thin", d->store->root) : 1;
}

/* A staging dir beside diff/<id>, with the diff dir's owner and mode:
 * ".tmp-<rand>-<id>", which init removes if a crash leaves it.  Its name
 * into stage, an fd of it into *ret_sfd. */
static int stage_make(store *s, const char *id, int dfd, char stage[NAME_MAX + 1], int *ret_sfd, strata_error *err)
{
	struct stat dst;
	if (fstat(dfd, &dst) < 0)
		return error_set(err, negerrno(), "stat %s/diff/%s", s->root, id);
	char rnd[8];
	int r = fs_random_name(rnd, sizeof(rnd));
	if (r < 0)
		return error_set(err, r, "getrandom");
	snprintf(stage, NAME_MAX + 1, ".tmp-%.8s-%s", rnd, id);
	if (mkdirat(s->diff_fd, stage, 0700) < 0)
		return error_set(err, negerrno(), "mkdir %s/diff/%s", s->root, stage);
	int sfd = openat(s->diff_fd, stage, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (sfd < 0)
		r = error_set(err, negerrno(), "open %s/diff/%s", s->root, stage);
	else if (fchown(sfd, dst.st_uid, dst.st_gid) < 0 || fchmod(sfd, dst.st_mode & 07777) < 0)
		r = error_set(err, negerrno(), "set owner and mode of %s/diff/%s", s->root, stage);
	if (r < 0) {
		if (sfd >= 0)
			close(sfd);
		fs_rm_tree_at(s->diff_fd, stage, NULL);
		return r;
	}
	*ret_sfd = sfd;
	return 0;
}

static int apply_layer(strata_driver *d, const char *id, const char *parent, int in_fd, const tar_opts *o,
		       uint64_t *ret_size, strata_error *err)
{
	store *s = d->store;
	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	_cleanup_strv_free_ char **parents = NULL;
	int r = layer_lock(d, id, &lock, &parents, err);
	if (r < 0)
		return r;
	if (parent && strcmp(parent, parents[0] ? parents[0] : ""))
		return error_setf(err, -EINVAL, "\"%s\" is not the layer's parent (%s)", QUOTE(parent),
				  parents[0] ? parents[0] : "none");

	/* The diff dir is about to be replaced: nobody may be using it. */
	unsigned count = 0;
	r = refs_read(s, id, &count);
	if (r < 0)
		return error_set(err, r, "read %s/refs/%s", s->root, id);
	int mounted = fs_is_mount_point_at(s->mnt_fd, id);
	if (count > 0 || mounted > 0)
		return error_setf(err, -EBUSY, "the layer is in use (mounted or held by get); put it first");

	/* Layers on top were made over the old content. */
	_cleanup_free_ char *child = NULL;
	r = layer_find_child(d, id, &child);
	if (r < 0)
		return error_set(err, r, "read %s/layers", s->root);
	if (r > 0)
		return error_setf(err, -EBUSY, "the layer is the parent of %s; apply before creating layers on it",
				  child);

	_cleanup_close_ int dfd = openat(s->diff_fd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return error_set(err, negerrno(), "open %s/diff/%s", s->root, id);
	r = dir_is_empty(dfd);
	if (r < 0)
		return error_set(err, r, "read %s/diff/%s", s->root, id);
	if (r == 0)
		return error_setf(err, -ENOTEMPTY, "the layer already has content; a tar applies to an empty layer");
	char stage[NAME_MAX + 1];
	_cleanup_close_ int sfd = -1;
	r = stage_make(s, id, dfd, stage, &sfd, err);
	if (r < 0)
		return r;
	struct archive *a = NULL;
	uint64_t size = 0;
	/* A plain file can be copied from inside the kernel. */
	struct stat ist;
	off_t start = fstat(in_fd, &ist) == 0 && S_ISREG(ist.st_mode) ? lseek(in_fd, 0, SEEK_CUR) : -1;
	r = tar_reader_open_fd(in_fd, &a, err);
	if (r < 0)
		goto fail;
	r = tar_extract(a, start >= 0 ? in_fd : -1, start, sfd, o, &size, err);
	archive_read_free(a);
	if (r < 0)
		goto fail;
	r = layer_check_thin(d, sfd, err);
	if (r < 0)
		goto fail;
	/* Whoever feeds the input may know it was cut short where the tar
	 * format cannot tell (at an entry boundary). */
	if (tar_cancelled(o)) {
		r = error_setf(err, -ECANCELED, "cancelled before the layer was complete");
		goto fail;
	}
	/* On disk before it becomes visible. */
	if (syncfs(sfd) < 0) {
		r = error_set(err, negerrno(), "sync %s/diff/%s", s->root, stage);
		goto fail;
	}
	/* rename(2) replaces an empty directory atomically. */
	if (renameat(s->diff_fd, stage, s->diff_fd, id) < 0) {
		r = error_set(err, negerrno(), "rename %s/diff/%s to %s", s->root, stage, id);
		goto fail;
	}
	/* Past the commit point the layer holds the tar; only its rename may
	 * not be on disk yet, and the error says so. */
	r = fs_fsync_dir(s->diff_fd);
	if (r < 0)
		return error_set(err, r, "fsync %s/diff (the tar is applied)", s->root);
	*ret_size = size;
	return 0;
fail:
	fs_rm_tree_at(s->diff_fd, stage, NULL);
	return r;
}

int strata_apply_diff(strata_driver *d, const char *id, const char *parent, int fd, const strata_tar_options *options,
		      uint64_t *ret_size, strata_error *err)
{
	error_clear(err);
	tar_opts o;
	tar_opts_init(d, options ? options : &no_options, &o);
	o.flags |= TAR_EARLY_WRITEBACK; /* apply_layer syncs before the rename */
	int r = apply_layer(d, id, parent, fd, &o, ret_size, err);
	return r < 0 ? error_prefix(err, r, "apply %s", QUOTE(id)) : 0;
}

int driver_tar_to_temp(strata_driver *d, int dir_fd, const tar_opts *o, int *ret_fd, strata_error *err)
{
	_cleanup_close_ int tmp = openat(d->store->root_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (tmp < 0)
		return error_set(err, negerrno(), "create a temp file in %s", d->store->root);
	tar_writer *w = NULL;
	int r = tar_writer_new(tmp, o, &w, err);
	if (r >= 0)
		r = tar_write_layer(w, dir_fd, err);
	if (r >= 0)
		r = tar_writer_finish(w, err);
	tar_writer_free(w);
	if (r < 0)
		return r;
	*ret_fd = TAKE_FD(tmp);
	return 0;
}

/* ---- the naive path: two mounted trees ---- */

typedef struct trees {
	strata_driver *d;
	const char *id, *parent;
	int new_fd, old_fd; /* old_fd -1: no parent, an empty tree */
	/* Holds, not references: a process killed mid-diff leaves nothing
	 * that keeps the unions mounted. */
	id_lock new_hold, old_hold;
} trees;

/* Idempotent: every hold taken is dropped exactly once. */
static void trees_release(trees *t)
{
	if (t->new_fd >= 0)
		close(t->new_fd);
	if (t->old_fd >= 0)
		close(t->old_fd);
	t->new_fd = t->old_fd = -1;
	layer_unhold(t->d, t->parent, &t->old_hold, NULL);
	layer_unhold(t->d, t->id, &t->new_hold, NULL);
}

static int open_tree(strata_driver *d, const char *id, int *ret_fd, id_lock *ret_hold, strata_error *err)
{
	_cleanup_free_ char *path = NULL;
	int r = layer_hold(d, id, ret_hold, &path, err);
	if (r < 0)
		return error_prefix(err, r, "mount %s", QUOTE(id));
	*ret_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (*ret_fd < 0)
		return error_set(err, negerrno(), "open %s", path);
	return 0;
}

static int trees_open(strata_driver *d, const char *id, const char *parent, trees *ret, strata_error *err)
{
	*ret = (trees){.d = d,
		       .id = id,
		       .parent = parent,
		       .new_fd = -1,
		       .old_fd = -1,
		       .new_hold = ID_LOCK_INIT,
		       .old_hold = ID_LOCK_INIT};
	int r = open_tree(d, id, &ret->new_fd, &ret->new_hold, err);
	if (r >= 0 && parent && *parent)
		r = open_tree(d, parent, &ret->old_fd, &ret->old_hold, err);
	if (r < 0)
		trees_release(ret);
	return r;
}

/*
 * A layer opened for diff, size or changes.  On the fast path it stays
 * locked with its diff dir open (it cannot be removed or applied to while
 * it is read); on the naive path the lock is dropped at once, as get and
 * put take it themselves, and naive_parent names the tree to compare with.
 */
typedef struct layer_view {
	id_lock lock;
	char **parents;
	int dfd; /* >= 0: the fast path */
	const char *naive_parent;
} layer_view;

static void layer_view_close(layer_view *v)
{
	lock_release(&v->lock);
	if (v->dfd >= 0)
		close(v->dfd);
	strv_free(v->parents);
}

static int layer_view_open(strata_driver *d, const char *id, const char *parent, unsigned flags, layer_view *v,
			   strata_error *err)
{
	*v = (layer_view){.lock = ID_LOCK_INIT, .dfd = -1};
	if (parent && *parent) {
		int r = id_validate(parent, err);
		if (r < 0)
			return error_prefix(err, r, "parent");
	}
	int r = layer_lock(d, id, &v->lock, &v->parents, err);
	if (r >= 0 && !is_direct(v->parents, parent, flags)) {
		v->naive_parent = naive_parent(v->parents, parent);
		lock_release(&v->lock);
	} else if (r >= 0) {
		v->dfd = openat(d->store->diff_fd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (v->dfd < 0)
			r = error_set(err, negerrno(), "open %s/diff/%s", d->store->root, id);
	}
	if (r < 0)
		layer_view_close(v);
	return r;
}

static int naive_changes(strata_driver *d, const char *id, const char *parent, trees *t, change_list *ret,
			 strata_error *err)
{
	int r = trees_open(d, id, parent, t, err);
	if (r < 0)
		return r;
	r = changes_trees(t->old_fd, t->new_fd, ret, err);
	if (r < 0)
		trees_release(t);
	return r;
}

static int diff_layer(strata_driver *d, const char *id, const char *parent, int out_fd, const tar_opts *o,
		      strata_error *err)
{
	layer_view v;
	int r = layer_view_open(d, id, parent, o->flags, &v, err);
	if (r < 0)
		return r;
	if (v.dfd >= 0) {
		/* On a thin image, committing publishes (thinlayer.c). */
		_cleanup_(chain_plan_release) chain_plan plan = {0};
		r = chain_plan_read(d, id, v.parents, &plan, err);
		if (r >= 0 && plan.image.n > 0 && !plan.self) {
			r = thin_commit(d, id, v.dfd, &plan, v.parents, out_fd, o, err);
			layer_view_close(&v);
			return r;
		}
		if (r < 0) {
			layer_view_close(&v);
			return r;
		}
	}
	tar_writer *w = NULL;
	trees t = {.new_fd = -1, .old_fd = -1, .new_hold = ID_LOCK_INIT, .old_hold = ID_LOCK_INIT};
	change_list changes = {0};
	if (v.dfd < 0)
		r = naive_changes(d, id, v.naive_parent, &t, &changes, err);
	if (r >= 0)
		r = tar_writer_new(out_fd, o, &w, err);
	if (r >= 0 && v.dfd >= 0)
		r = tar_write_layer(w, v.dfd, err);
	for (size_t i = 0; i < changes.n && r >= 0; i++) {
		const strata_change *c = &changes.items[i];
		if (c->kind == STRATA_CHANGE_DELETE)
			r = tar_write_whiteout(w, c->path + 1, err);
		else
			r = tar_write_path(w, t.new_fd, c->path + 1, err);
	}
	if (r >= 0)
		r = tar_writer_finish(w, err);
	tar_writer_free(w);
	change_list_release(&changes);
	trees_release(&t);
	layer_view_close(&v);
	return r;
}

int strata_diff(strata_driver *d, const char *id, const char *parent, int fd, const strata_tar_options *options,
		strata_error *err)
{
	error_clear(err);
	tar_opts o;
	tar_opts_init(d, options ? options : &no_options, &o);
	int r = diff_layer(d, id, parent, fd, &o, err);
	return r < 0 ? error_prefix(err, r, "diff %s", QUOTE(id)) : 0;
}

/* The dirs under the layer's own, nearest first: the parents' diff dirs,
 * or with a thin image, the store layers above it and the image's dirs. */
static int open_lowers(strata_driver *d, char *const *parents, const chain_plan *plan, int **ret, size_t *ret_n,
		       strata_error *err)
{
	store *s = d->store;
	size_t n_thin = strv_length(plan->dirs), n = plan->n_store + n_thin;
	int *fds = malloc((n ? n : 1) * sizeof(int));
	if (!fds)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		if (i < plan->n_store)
			fds[i] = openat(s->diff_fd, parents[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		else
			fds[i] = open(plan->dirs[i - plan->n_store], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fds[i] < 0) {
			int r = i < plan->n_store
					? error_set(err, negerrno(), "open %s/diff/%s", s->root, parents[i])
					: error_set(err, negerrno(), "open %s", plan->dirs[i - plan->n_store]);
			while (i-- > 0)
				close(fds[i]);
			free(fds);
			return r;
		}
	}
	*ret = fds;
	*ret_n = n;
	return 0;
}

static void close_lowers(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++)
		close(fds[i]);
	free(fds);
}

/* The fast path's changes: the diff dir against the dirs under it. */
static int own_changes(strata_driver *d, const char *id, layer_view *v, change_list *ret, strata_error *err)
{
	_cleanup_(chain_plan_release) chain_plan plan = {0};
	int r = chain_plan_read(d, id, v->parents, &plan, err);
	if (r < 0)
		return r;
	if (plan.self) { /* its changes are its thin.json over its parents' */
		chain_plan_release(&plan);
		plan.n_store = strv_length(v->parents);
	}
	/* Reading the image needs its repositories, held as one more user. */
	char holder[STRATA_ID_MAX + sizeof("@changes")];
	snprintf(holder, sizeof(holder), "%s@changes", id);
	r = chain_plan_acquire(d, holder, &plan, err);
	if (r < 0)
		return r;
	int *lowers = NULL;
	size_t n = 0;
	r = open_lowers(d, v->parents, &plan, &lowers, &n, err);
	if (r >= 0) {
		r = changes_layer(v->dfd, lowers, n, d->aufs ? TAR_AUFS : 0, ret, err);
		close_lowers(lowers, n);
	}
	if (plan.acquired)
		thin_release_holder(d, holder, NULL);
	return r;
}

static int layer_changes(strata_driver *d, const char *id, const char *parent, unsigned flags, change_list *ret,
			 strata_error *err)
{
	layer_view v;
	int r = layer_view_open(d, id, parent, flags, &v, err);
	if (r < 0)
		return r;
	if (v.dfd < 0) {
		trees t;
		r = naive_changes(d, id, v.naive_parent, &t, ret, err);
		if (r >= 0)
			trees_release(&t);
	} else {
		r = own_changes(d, id, &v, ret, err);
	}
	layer_view_close(&v);
	return r;
}

int strata_changes(strata_driver *d, const char *id, const char *parent, const strata_tar_options *options,
		   strata_change_list *ret_changes, strata_error *err)
{
	error_clear(err);
	change_list l = {0};
	int r = layer_changes(d, id, parent, (options ? options : &no_options)->flags, &l, err);
	if (r < 0) {
		change_list_release(&l);
		return error_prefix(err, r, "changes %s", QUOTE(id));
	}
	*ret_changes = (strata_change_list){.n = l.n, .items = l.items};
	return 0;
}

void strata_change_list_clear(strata_change_list *list)
{
	if (!list)
		return;
	change_list l = {.n = list->n, .alloc = list->n, .items = list->items};
	change_list_release(&l);
	*list = (strata_change_list){0};
}

static int layer_size(strata_driver *d, const char *id, const char *parent, unsigned flags, uint64_t *ret,
		      strata_error *err)
{
	layer_view v;
	int r = layer_view_open(d, id, parent, flags, &v, err);
	if (r < 0)
		return r;
	if (v.dfd < 0) {
		trees t;
		change_list changes = {0};
		r = naive_changes(d, id, v.naive_parent, &t, &changes, err);
		if (r >= 0) {
			r = size_changes(t.new_fd, &changes, ret, err);
			trees_release(&t);
		}
		change_list_release(&changes);
	} else {
		r = size_tree(v.dfd, ret, err);
	}
	layer_view_close(&v);
	return r;
}

int strata_diff_size(strata_driver *d, const char *id, const char *parent, const strata_tar_options *options,
		     uint64_t *ret_size, strata_error *err)
{
	error_clear(err);
	int r = layer_size(d, id, parent, (options ? options : &no_options)->flags, ret_size, err);
	return r < 0 ? error_prefix(err, r, "size %s", QUOTE(id)) : 0;
}

/* ---- publishing a layer in place (containerd's commits) ---- */

/* 1 if an overlay anywhere uses ROOT/diff/<id> as its upper dir. */
static int upper_in_use(strata_driver *d, const char *id)
{
	_cleanup_free_ char *want = NULL, *text = NULL;
	size_t len = 0;
	if (asprintf(&want, "upperdir=%s/diff/%s", d->store->root, id) < 0)
		return -ENOMEM;
	int r = fs_read_at(AT_FDCWD, "/proc/self/mountinfo", 64u << 20, &text, &len);
	if (r < 0)
		return r;
	size_t wl = strlen(want);
	for (const char *p = text; (p = memmem(p, len - (size_t)(p - text), want, wl)); p += wl) {
		char next = p[wl];
		if (next == ',' || next == ' ' || next == '\n' || next == '\0')
			return 1;
	}
	return 0;
}

static int publish_in_place(strata_driver *d, const char *id, int *ret_published, strata_error *err)
{
	store *s = d->store;
	*ret_published = 0;
	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	_cleanup_strv_free_ char **parents = NULL;
	int r = layer_lock(d, id, &lock, &parents, err);
	if (r < 0)
		return r;
	_cleanup_(chain_plan_release) chain_plan plan = {0};
	r = chain_plan_read(d, id, parents, &plan, err);
	if (r < 0)
		return r;
	/* Not on a thin image, or thin itself: nothing to publish. */
	if (plan.image.n == 0 || plan.self)
		return 0;
	/* The content is about to move to the repository and the diff dir to
	 * hold only thin.json: nobody may be reading or writing it, nor may a
	 * layer have been made over it (its chain would lose this one). */
	_cleanup_free_ char *child = NULL;
	r = layer_find_child(d, id, &child);
	if (r < 0)
		return error_set(err, r, "read %s/layers", s->root);
	if (child)
		return error_setf(err, -EBUSY, "layer %s is made on it", child);
	unsigned count = 0;
	r = refs_read(s, id, &count);
	if (r < 0)
		return error_set(err, r, "read %s/refs/%s", s->root, id);
	int mounted = fs_is_mount_point_at(s->mnt_fd, id);
	int upper = upper_in_use(d, id);
	if (upper < 0)
		return error_set(err, upper, "read /proc/self/mountinfo");
	if (count > 0 || mounted > 0 || upper > 0)
		return error_setf(err, -EBUSY, "the layer is mounted (its diff dir is an overlay's upper dir)");
	tar_opts o;
	tar_opts_init(d, &no_options, &o);
	thin_image img = {0};
	r = thin_publish_chain(d, id, &plan, parents, &o, &img, err);
	_cleanup_free_ char *text = NULL;
	if (r >= 0 && thin_format(&img, &text) < 0)
		r = -ENOMEM;
	thin_image_release(&img);
	if (r < 0)
		return r;

	/* The published content in a staging dir, swapped with the diff dir
	 * in one rename: a crash leaves the old content or thin.json (both
	 * the same files to a reader), and the other under a .tmp- name that
	 * init removes. */
	_cleanup_close_ int dfd = openat(s->diff_fd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return error_set(err, negerrno(), "open %s/diff/%s", s->root, id);
	char stage[NAME_MAX + 1];
	_cleanup_close_ int sfd = -1;
	r = stage_make(s, id, dfd, stage, &sfd, err);
	if (r < 0)
		return r;
	if ((r = fs_write_atomic_at(sfd, THIN_FILE, text, strlen(text), 0644, FS_WRITE_SYNC)) < 0)
		error_set(err, r, "write %s/diff/%s/" THIN_FILE, s->root, stage);
	else if (fsync(sfd) < 0)
		r = error_set(err, negerrno(), "fsync %s/diff/%s", s->root, stage);
	else if (renameat2(s->diff_fd, stage, s->diff_fd, id, RENAME_EXCHANGE) < 0)
		r = error_set(err, negerrno(), "exchange %s/diff/%s with %s", s->root, stage, id);
	if (r < 0) {
		fs_rm_tree_at(s->diff_fd, stage, NULL);
		return r;
	}
	/* Past the swap the layer is thin; what follows only tidies up. */
	r = fs_fsync_dir(s->diff_fd);
	if (r >= 0)
		r = layer_check_thin(d, sfd, err);
	fs_rm_tree_at(s->diff_fd, stage, NULL);
	if (r < 0)
		return r;
	*ret_published = 1;
	return 0;
}

int strata_publish(strata_driver *d, const char *id, int *ret_published, strata_error *err)
{
	error_clear(err);
	int r = publish_in_place(d, id, ret_published, err);
	return r < 0 ? error_prefix(err, r, "publish %s", QUOTE(id)) : 0;
}
