/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Bringing an AUFS-format store (Docker's /var/lib/docker/aufs, which
 * Docker 24 stopped reading) into this store: strata import-aufs.
 *
 * Each source layer is exported in the AUFS format (tar/export.c with
 * TAR_AUFS: .wh. files become whiteout entries, .wh..wh..opq an opaque
 * marker, aufs's bookkeeping is dropped, a file hardlinked into
 * .wh..wh.plnk is written once at its visible path) into an unnamed temp
 * file, then applied like any layer tar, which converts to overlay's
 * format and is atomic.  The source is opened read-only and never written.
 *
 * Resuming: ROOT/import-aufs/<id> says "started" before a layer is made
 * and "done" after its apply; a rerun keeps done layers, remakes started
 * ones, and refuses to touch a layer of the same id it did not make.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
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

#define STATE_DIR "import-aufs"

typedef struct aufs_layer {
	char *id;
	char **parents; /* nearest first */
} aufs_layer;

typedef struct aufs_store {
	char *root;
	int layers_fd, diff_fd;
	size_t n;
	aufs_layer *layers; /* parents before children */
} aufs_store;

static void aufs_store_release(aufs_store *a)
{
	free(a->root);
	if (a->layers_fd >= 0)
		close(a->layers_fd);
	if (a->diff_fd >= 0)
		close(a->diff_fd);
	for (size_t i = 0; i < a->n; i++) {
		free(a->layers[i].id);
		strv_free(a->layers[i].parents);
	}
	free(a->layers);
	*a = (aufs_store){.layers_fd = -1, .diff_fd = -1};
}

static int cmp_depth(const void *x, const void *y)
{
	const aufs_layer *a = x, *b = y;
	size_t da = strv_length(a->parents), db = strv_length(b->parents);
	return da != db ? (da > db) - (da < db) : strcmp(a->id, b->id);
}

/* Reads AUFS_ROOT/layers: every layer and its chain, parents first. */
static int aufs_store_open(const char *root, aufs_store *ret, strata_error *err)
{
	aufs_store a = {.layers_fd = -1, .diff_fd = -1};
	int r = 0;
	if (!(a.root = strdup(root)))
		return -ENOMEM;
	_cleanup_close_ int rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rfd < 0)
		r = error_set(err, negerrno(), "open %s", root);
	if (r >= 0 && (a.layers_fd = openat(rfd, "layers", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		r = error_set(err, negerrno(), "open %s/layers (is this an aufs store?)", root);
	if (r >= 0 && (a.diff_fd = openat(rfd, "diff", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		r = error_set(err, negerrno(), "open %s/diff (is this an aufs store?)", root);
	_cleanup_strv_free_ char **names = NULL;
	if (r >= 0 && (r = fs_list_dir(a.layers_fd, &names)) < 0)
		error_set(err, r, "read %s/layers", root);
	size_t n = r >= 0 ? strv_length(names) : 0;
	if (r >= 0 && !(a.layers = calloc(n ? n : 1, sizeof(*a.layers))))
		r = -ENOMEM;
	for (size_t i = 0; r >= 0 && i < n; i++) {
		/* "<id>-removing" and dot names are leftovers, not layers;
		 * any other name that is not a layer id is refused rather
		 * than silently left behind. */
		if (store_name_reserved(names[i]))
			continue;
		r = id_validate(names[i], err);
		if (r < 0) {
			error_prefix(err, r, "%s/layers/%s: not a layer id (move it away to import the rest)", root,
				     names[i]);
			break;
		}
		/* Only a regular file is read: a fifo would block forever. */
		struct stat cst;
		if (fstatat(a.layers_fd, names[i], &cst, AT_SYMLINK_NOFOLLOW) < 0) {
			r = error_set(err, negerrno(), "stat %s/layers/%s", root, names[i]);
			break;
		}
		if (!S_ISREG(cst.st_mode)) {
			r = error_setf(err, -EINVAL, "%s/layers/%s: not a regular file", root, names[i]);
			break;
		}
		_cleanup_free_ char *data = NULL;
		size_t len = 0;
		r = fs_read_at(a.layers_fd, names[i], 1u << 20, &data, &len);
		if (r < 0) {
			error_set(err, r, "read %s/layers/%s", root, names[i]);
			break;
		}
		aufs_layer *l = &a.layers[a.n];
		r = chain_parse(data, len, &l->parents, err);
		if (r < 0) {
			error_prefix(err, r, "%s/layers/%s", root, names[i]);
			break;
		}
		a.n++; /* released with the store from here on */
		/* A copy: taking it would leave a hole where strv_free stops. */
		if (!(l->id = strdup(names[i]))) {
			r = -ENOMEM;
			break;
		}
		if (strv_length(l->parents) > STORE_MAX_PARENTS) {
			r = error_setf(err, -E2BIG, "%s/layers/%s: a chain of %zu layers; overlay mounts at most %d",
				       root, l->id, strv_length(l->parents) + 1, STORE_MAX_PARENTS + 1);
			break;
		}
	}
	if (r >= 0)
		qsort(a.layers, a.n, sizeof(*a.layers), cmp_depth);
	/* Every parent must be a layer of the store, with a diff dir, and a
	 * chain must be its parent's chain with the parent on top (the import
	 * makes each layer on its parent: a chain that says otherwise would be
	 * imported as another tree). */
	for (size_t i = 0; r >= 0 && i < a.n; i++) {
		const aufs_layer *nearest = NULL;
		for (char **p = a.layers[i].parents; *p && r >= 0; p++) {
			const aufs_layer *found = NULL;
			for (size_t j = 0; j < a.n && !found; j++)
				if (!strcmp(a.layers[j].id, *p))
					found = &a.layers[j];
			if (!found)
				r = error_setf(err, -ENOENT,
					       "%s/layers/%s names parent %s, which the store does not have", root,
					       a.layers[i].id, *p);
			if (p == a.layers[i].parents)
				nearest = found;
		}
		if (r >= 0 && nearest) {
			char **mine = a.layers[i].parents + 1, **theirs = nearest->parents;
			while (*mine && *theirs && !strcmp(*mine, *theirs))
				mine++, theirs++;
			if (*mine || *theirs)
				r = error_setf(err, -EINVAL,
					       "%s/layers/%s: the chain below %s is not %s/layers/%s's chain (%s where "
					       "it has %s)",
					       root, a.layers[i].id, nearest->id, root, nearest->id,
					       *mine ? *mine : "nothing", *theirs ? *theirs : "nothing");
		}
		struct stat st;
		if (r >= 0 &&
		    (fstatat(a.diff_fd, a.layers[i].id, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode)))
			r = error_setf(err, -ENOENT, "%s/diff/%s: missing or not a directory", root, a.layers[i].id);
	}
	if (r < 0) {
		aufs_store_release(&a);
		return r;
	}
	*ret = a;
	return 0;
}

/* What a layer tar holds, counted by its entries. */
static int count_tar(int fd, strata_import_stats *st, uint64_t *ret_entries, strata_error *err)
{
	struct archive *a = NULL;
	if (lseek(fd, 0, SEEK_SET) < 0)
		return error_set(err, negerrno(), "rewind the layer tar");
	int r = tar_reader_open_fd(fd, &a, err);
	if (r < 0)
		return r;
	struct archive_entry *e;
	uint64_t n = 0;
	int ar;
	while ((ar = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		n++;
		const char *name = archive_entry_pathname(e);
		const char *base = name ? strrchr(name, '/') : NULL;
		base = base ? base + 1 : name ? name : "";
		if (!strcmp(base, WHITEOUT_OPAQUE))
			st->opaque_dirs++;
		else if (!strncmp(base, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)))
			st->whiteouts++;
		else if (archive_entry_hardlink(e))
			st->hardlinks++;
		else if (archive_entry_filetype(e) == AE_IFDIR)
			st->dirs++;
		else if (archive_entry_filetype(e) == AE_IFREG) {
			st->files++;
			st->bytes += (uint64_t)archive_entry_size(e);
		} else
			st->links++;
	}
	if (ar != ARCHIVE_EOF)
		r = error_setf(err, -EIO, "read back the layer tar: %s", archive_error_string(a));
	archive_read_free(a);
	*ret_entries = n;
	return r;
}

/* Exports the source layer's diff dir, in the AUFS format, to a temp file. */
static int export_source(strata_driver *d, const aufs_store *src, const char *id, int *ret_fd, strata_error *err)
{
	_cleanup_close_ int dfd = openat(src->diff_fd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return error_set(err, negerrno(), "open %s/diff/%s", src->root, id);
	/* Owners as they are on disk: the source store holds host ids, and
	 * apply maps them again through this store's maps. */
	idmap none = {0};
	tar_opts o = {.uids = &none, .gids = &none, .flags = TAR_AUFS};
	int r = driver_tar_to_temp(d, dfd, &o, ret_fd, err);
	return r < 0 ? error_prefix(err, r, "read %s/diff/%s", src->root, id) : 0;
}

/*
 * aufs never shows a whiteout; overlay shows one (as a name that cannot be
 * stat'ed) in a directory it does not merge with a lower one: in a base
 * layer, in a directory new in this layer or opaque here, or one over a
 * lower non-directory.  Such whiteouts hide nothing, so they go: only
 * whiteouts that hide an entry of the parent's merged view stay.  Run
 * before the layer is marked done, so a crash means it is made again.
 */
typedef struct phantom_level {
	char **names;
	size_t next;
	bool opaque;	 /* opaque here or above: nothing below merges */
	bool has_parent; /* the parent's view has this directory */
	size_t path_len;
} phantom_level;

/* Iterative (an AUFS layer a container wrote may be very deep): the
 * layer's dirs and the parent view's on two dir_stacks. */
static int drop_phantoms_in(int root_fd, int parent_root_fd, strata_error *err)
{
	dir_stack dirs = DIR_STACK_INIT(root_fd), pdirs = DIR_STACK_INIT(parent_root_fd);
	phantom_level *levels = NULL;
	size_t n = 0, alloc = 0;
	strbuf path = {0};
	int r = strbuf_append(&path, "", 0);
	int fd = root_fd;
	bool opaque = false, has_parent = parent_root_fd >= 0;
	while (r >= 0) {
		if (fd >= 0) { /* a directory just entered */
			if (grow(&levels, &alloc, n, sizeof(*levels), 16) < 0) {
				r = -ENOMEM;
				break;
			}
			phantom_level l = {.opaque = opaque, .has_parent = has_parent, .path_len = path.len};
			r = fs_list_dir(fd, &l.names);
			if (r < 0) {
				error_set(err, r, "read /%s", QUOTE(path.buf));
				break;
			}
			levels[n++] = l;
			fd = -1;
		}
		if (n == 0)
			break;
		phantom_level *l = &levels[n - 1];
		strbuf_truncate(&path, l->path_len);
		const char *name = l->names[l->next];
		if (!name) {
			bool popped_parent = l->has_parent;
			strv_free(l->names);
			if (--n == 0)
				break;
			r = dir_stack_pop(&dirs);
			if (r >= 0 && popped_parent)
				r = dir_stack_pop(&pdirs);
			if (r < 0)
				error_set(err, r, "return from /%s", QUOTE(path.buf));
			continue;
		}
		l->next++;
		int dfd = dir_stack_fd(&dirs), pfd = l->has_parent ? dir_stack_fd(&pdirs) : -1;
		struct stat st;
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = error_set(err, negerrno(), "stat /%s%s%s", QUOTE(path.buf), path.len ? "/" : "",
				      QUOTE(name));
			break;
		}
		if (tar_is_whiteout(&st)) {
			struct stat pst;
			bool hides = !l->opaque && pfd >= 0 && fstatat(pfd, name, &pst, AT_SYMLINK_NOFOLLOW) == 0;
			if (!hides && unlinkat(dfd, name, 0) < 0)
				r = error_set(err, negerrno(), "remove the whiteout /%s%s%s", QUOTE(path.buf),
					      path.len ? "/" : "", QUOTE(name));
			continue;
		}
		if (!S_ISDIR(st.st_mode))
			continue;
		r = strbuf_push_name(&path, name);
		if (r == -ENAMETOOLONG)
			error_setf(err, r, "/%s/...: a path longer than %d bytes", QUOTE(path.buf), PATH_MAX - 1);
		if (r < 0)
			break;
		bool parent_opaque = l->opaque, parent_has = l->has_parent;
		fd = dir_stack_push(&dirs, name);
		if (fd < 0) {
			r = error_set(err, fd, "open /%s", QUOTE(path.buf));
			break;
		}
		opaque = parent_opaque || tar_is_opaque(fd);
		has_parent = false;
		if (!opaque && parent_has) {
			int sub = dir_stack_push(&pdirs, name);
			has_parent = sub >= 0;
		}
	}
	while (n > 0)
		strv_free(levels[--n].names);
	free(levels);
	dir_stack_release(&dirs);
	dir_stack_release(&pdirs);
	strbuf_release(&path);
	return r < 0 ? r : 0;
}

static int drop_phantom_whiteouts(strata_driver *d, const char *id, const char *parent, strata_error *err)
{
	_cleanup_close_ int dfd = openat(d->store->diff_fd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return error_set(err, negerrno(), "open %s/diff/%s", d->store->root, id);
	_cleanup_free_ char *view = NULL;
	_cleanup_close_ int pfd = -1;
	id_lock hold = ID_LOCK_INIT;
	int r = 0;
	if (parent) {
		r = layer_hold(d, parent, &hold, &view, err);
		if (r < 0)
			return r;
		pfd = open(view, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (pfd < 0)
			r = error_set(err, negerrno(), "open %s", view);
	}
	if (r >= 0)
		r = drop_phantoms_in(dfd, pfd, err);
	if (r >= 0 && syncfs(dfd) < 0)
		r = error_set(err, negerrno(), "sync %s/diff/%s", d->store->root, id);
	if (parent) {
		close(pfd);
		pfd = -1;
		strata_error e2;
		int pr = layer_unhold(d, parent, &hold, &e2);
		if (pr < 0 && r >= 0)
			r = error_set(err, pr, "%s", e2.message);
	}
	return r;
}

static int state_read(int state_fd, const char *id, char ret[16])
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int r = fs_read_at(state_fd, id, 64, &data, &len);
	if (r < 0)
		return r;
	snprintf(ret, 16, "%.*s", (int)strcspn(data, "\n"), data);
	return 0;
}

static int state_write(int state_fd, const char *id, const char *what)
{
	return fs_write_atomic_at(state_fd, id, what, strlen(what), 0600, FS_WRITE_SYNC);
}

static int open_state(strata_driver *d, int *ret, strata_error *err)
{
	int r = fs_mkdir_at(d->store->root_fd, STATE_DIR, 0700);
	if (r < 0 && r != -EEXIST)
		return error_set(err, r, "mkdir %s/" STATE_DIR, d->store->root);
	*ret = openat(d->store->root_fd, STATE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return *ret < 0 ? error_set(err, negerrno(), "open %s/" STATE_DIR, d->store->root) : 0;
}

static int import_layer(strata_driver *d, const aufs_store *src, const aufs_layer *l, int state_fd,
			strata_import_stats *st, bool *ret_skipped, uint64_t *ret_entries, strata_error *err)
{
	char state[16] = "";
	int r = state_read(state_fd, l->id, state);
	if (r < 0 && r != -ENOENT)
		return error_set(err, r, "read %s/" STATE_DIR "/%s", d->store->root, l->id);
	int exists = strata_exists(d, l->id, err);
	if (exists < 0)
		return exists;
	if (exists && !strcmp(state, "done")) {
		*ret_skipped = true;
		return 0;
	}
	if (exists && !state[0])
		return error_setf(err, -EEXIST,
				  "layer %s already exists in the store and was not made by import-aufs "
				  "(import into another store, or remove it)",
				  l->id);
	if (exists) { /* started by an interrupted run: made again */
		r = strata_remove(d, l->id, err);
		if (r < 0)
			return r;
	}
	r = state_write(state_fd, l->id, "started\n");
	if (r < 0)
		return error_set(err, r, "write %s/" STATE_DIR "/%s", d->store->root, l->id);
	const char *parent = l->parents[0];
	r = strata_create(d, l->id, parent, NULL, err);
	if (r < 0)
		return r;
	_cleanup_close_ int tmp = -1;
	r = export_source(d, src, l->id, &tmp, err);
	if (r < 0)
		return r;
	strata_import_stats add = {0};
	r = count_tar(tmp, &add, ret_entries, err);
	if (r < 0)
		return error_prefix(err, r, "layer %s", l->id);
	if (lseek(tmp, 0, SEEK_SET) < 0)
		return error_set(err, negerrno(), "rewind the layer tar");
	uint64_t size = 0;
	r = strata_apply_diff(d, l->id, parent, tmp, NULL, &size, err);
	if (r < 0)
		return r;
	r = drop_phantom_whiteouts(d, l->id, parent, err);
	if (r < 0)
		return error_prefix(err, r, "layer %s", l->id);
	r = state_write(state_fd, l->id, "done\n");
	if (r < 0)
		return error_set(err, r, "write %s/" STATE_DIR "/%s", d->store->root, l->id);
	st->files += add.files;
	st->dirs += add.dirs;
	st->links += add.links;
	st->hardlinks += add.hardlinks;
	st->whiteouts += add.whiteouts;
	st->opaque_dirs += add.opaque_dirs;
	st->bytes += add.bytes;
	return 0;
}

static int import_aufs(strata_driver *d, const char *aufs_root, strata_import_fn progress, void *data,
		       strata_import_stats *ret, strata_error *err)
{
	aufs_store src;
	int r = aufs_store_open(aufs_root, &src, err);
	if (r < 0)
		return r;
	/* Before anything is made (the state dir included): a layer of the
	 * same id that the import did not make stops the import, and nothing
	 * is changed. */
	_cleanup_close_ int state_fd =
		openat(d->store->root_fd, STATE_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (state_fd < 0 && errno != ENOENT)
		r = error_set(err, negerrno(), "open %s/" STATE_DIR, d->store->root);
	for (size_t i = 0; r >= 0 && i < src.n; i++) {
		char state[16] = "";
		int sr = state_fd >= 0 ? state_read(state_fd, src.layers[i].id, state) : -ENOENT;
		if (sr < 0 && sr != -ENOENT) {
			r = error_set(err, sr, "read %s/" STATE_DIR "/%s", d->store->root, src.layers[i].id);
			break;
		}
		int exists = strata_exists(d, src.layers[i].id, err);
		if (exists < 0)
			r = exists;
		else if (exists && !state[0])
			r = error_setf(err, -EEXIST,
				       "layer %s already exists in the store and was not made by import-aufs "
				       "(import into another store, or remove it)",
				       src.layers[i].id);
	}
	if (r >= 0 && state_fd < 0)
		r = open_state(d, &state_fd, err);
	strata_import_stats st = {0};
	for (size_t i = 0; r >= 0 && i < src.n; i++) {
		bool skipped = false;
		uint64_t entries = 0;
		r = import_layer(d, &src, &src.layers[i], state_fd, &st, &skipped, &entries, err);
		if (r < 0)
			break;
		if (skipped)
			st.skipped++;
		else
			st.layers++;
		if (progress) {
			strata_import_progress p = {i + 1, src.n, src.layers[i].id, skipped, entries};
			progress(&p, data);
		}
	}
	aufs_store_release(&src);
	if (r < 0)
		return r;
	*ret = st;
	return 0;
}

int strata_import_aufs(strata_driver *d, const char *aufs_root, strata_import_fn progress, void *data,
		       strata_import_stats *ret_stats, strata_error *err)
{
	error_clear(err);
	int r = import_aufs(d, aufs_root, progress, data, ret_stats, err);
	return r < 0 ? error_prefix(err, r, "import-aufs %s", aufs_root) : 0;
}

/* ---- import-aufs --check: the overlay view against the aufs view ---- */

#define CHECK_MAX_DIFFS 1000

typedef struct check_ctx {
	strata_driver *d;
	const char *id;
	strata_check_report *rep;
	size_t found; /* differences in this layer */
	strata_error *err;
} check_ctx;

static int report(check_ctx *c, const char *rel, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int report(check_ctx *c, const char *rel, const char *fmt, ...)
{
	c->found++;
	if (c->rep->n >= CHECK_MAX_DIFFS)
		return 0; /* counted, not listed */
	strata_check_diff *nd = realloc(c->rep->diffs, (c->rep->n + 1) * sizeof(*nd));
	if (!nd)
		return -ENOMEM;
	c->rep->diffs = nd;
	strata_check_diff *x = &nd[c->rep->n];
	*x = (strata_check_diff){0};
	va_list ap;
	va_start(ap, fmt);
	int r = vasprintf(&x->what, fmt, ap);
	va_end(ap);
	if (r < 0) {
		x->what = NULL;
		return -ENOMEM;
	}
	if (!(x->id = strdup(c->id)) || asprintf(&x->path, "/%s", rel) < 0) {
		free(x->id);
		free(x->what);
		return -ENOMEM;
	}
	c->rep->n++;
	return 0;
}

typedef struct aufs_entry {
	char *name;
	size_t branch;
	bool hidden;
	struct stat st;
} aufs_entry;

static int cmp_aufs_entry(const void *x, const void *y)
{
	const aufs_entry *a = x, *b = y;
	int c = strcmp(a->name, b->name);
	if (c)
		return c;
	if (a->branch != b->branch)
		return (a->branch > b->branch) - (a->branch < b->branch);
	return (int)a->hidden - (int)b->hidden;
}

static void aufs_entries_free(aufs_entry *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].name);
	free(v);
}

/* The aufs view of one dir: for each name, the topmost branch's word
 * (an entry, or a whiteout hiding the branches below). */
static int aufs_listing(const int *bfds, size_t nb, aufs_entry **ret, size_t *ret_n)
{
	aufs_entry *v = NULL;
	size_t n = 0, alloc = 0;
	int r = 0;
	for (size_t k = 0; k < nb && r >= 0; k++) {
		_cleanup_strv_free_ char **names = NULL;
		r = fs_list_dir(bfds[k], &names);
		for (char **p = names; r >= 0 && *p; p++) {
			if (!strncmp(*p, WHITEOUT_META, strlen(WHITEOUT_META)))
				continue;
			bool wh = !strncmp(*p, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX));
			struct stat sst = {0};
			if (!wh && fstatat(bfds[k], *p, &sst, AT_SYMLINK_NOFOLLOW) < 0) {
				r = negerrno();
				break;
			}
			if (S_ISSOCK(sst.st_mode))
				continue; /* not layer content: the import drops sockets, as Docker does */
			if (grow(&v, &alloc, n, sizeof(*v), 64) < 0) {
				r = -ENOMEM;
				break;
			}
			aufs_entry *e = &v[n];
			*e = (aufs_entry){.branch = k, .hidden = wh, .st = sst};
			if (!(e->name = strdup(wh ? *p + strlen(WHITEOUT_PREFIX) : *p))) {
				r = -ENOMEM;
				break;
			}
			n++;
		}
	}
	if (r < 0) {
		aufs_entries_free(v, n);
		return r;
	}
	if (n > 0) /* qsort(NULL, 0) is undefined */
		qsort(v, n, sizeof(*v), cmp_aufs_entry);
	/* Keep the first record of each name: the topmost branch's. */
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (m > 0 && !strcmp(v[m - 1].name, v[i].name)) {
			free(v[i].name);
			continue;
		}
		v[m++] = v[i];
	}
	*ret = v;
	*ret_n = m;
	return 0;
}

static int compare_content(int afd, int ofd, bool *ret_same)
{
	char a[65536], b[65536];
	for (;;) {
		ssize_t na = read(afd, a, sizeof(a));
		if (na < 0)
			return negerrno();
		size_t got = 0;
		while (got < (size_t)na) {
			ssize_t nb = read(ofd, b + got, (size_t)na - got);
			if (nb < 0)
				return negerrno();
			if (nb == 0)
				break;
			got += (size_t)nb;
		}
		if (got != (size_t)na || memcmp(a, b, got) != 0) {
			*ret_same = false;
			return 0;
		}
		if (na == 0) {
			*ret_same = read(ofd, b, 1) == 0;
			return 0;
		}
	}
}

static int cmp_names_ptr(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One directory of the check: the aufs view (from the branches that make
 * it up) against the overlay view.  The branches are addressed from their
 * roots, and their dir fds are open only while the walk is in this very
 * directory, so a deep tree over many branches holds few fds. */
typedef struct check_level {
	aufs_entry *a; /* the aufs view, sorted */
	size_t na, i;
	char **o; /* the overlay view's names, sorted */
	size_t no, j;
	size_t *br; /* branches (indexes of the roots), topmost first */
	int *bfd;   /* their dirs here, -1 while closed */
	size_t nbr;
	size_t path_len;
} check_level;

typedef struct check_walk {
	check_ctx *c;
	const int *roots; /* every branch's root, topmost first */
	dir_stack odirs;  /* the overlay view */
	check_level *levels;
	size_t n, alloc;
	strbuf path;
} check_walk;

static void level_close_branches(check_level *l)
{
	for (size_t k = 0; k < l->nbr; k++)
		if (l->bfd[k] >= 0) {
			close(l->bfd[k]);
			l->bfd[k] = -1;
		}
}

static int level_open_branches(check_walk *w, check_level *l)
{
	for (size_t k = 0; k < l->nbr; k++) {
		if (l->bfd[k] >= 0)
			continue;
		l->bfd[k] = fs_open_beneath(w->roots[l->br[k]], w->path.buf, O_RDONLY | O_DIRECTORY);
		if (l->bfd[k] < 0) {
			int r = l->bfd[k];
			l->bfd[k] = -1;
			return error_set(w->c->err, r, "open /%s in branch %zu", QUOTE(w->path.buf), l->br[k]);
		}
	}
	return 0;
}

static void level_free(check_level *l)
{
	level_close_branches(l);
	aufs_entries_free(l->a, l->na);
	strv_free(l->o);
	free(l->br);
	free(l->bfd);
}

/* Enters the directory at w->path: takes `br` (nbr branches); ofd is the
 * overlay view's dir. */
static int check_enter(check_walk *w, size_t *br, size_t nbr, int ofd)
{
	if (grow(&w->levels, &w->alloc, w->n, sizeof(*w->levels), 16) < 0) {
		free(br);
		return -ENOMEM;
	}
	check_level l = {.br = br, .nbr = nbr, .path_len = w->path.len};
	l.bfd = malloc((nbr ? nbr : 1) * sizeof(int));
	if (!l.bfd) {
		free(br);
		return -ENOMEM;
	}
	for (size_t k = 0; k < nbr; k++)
		l.bfd[k] = -1;
	int r = level_open_branches(w, &l);
	if (r >= 0) {
		r = aufs_listing(l.bfd, l.nbr, &l.a, &l.na);
		if (r < 0)
			error_set(w->c->err, r, "read the aufs view of /%s", QUOTE(w->path.buf));
	}
	if (r >= 0) {
		r = fs_list_dir(ofd, &l.o);
		if (r < 0)
			error_set(w->c->err, r, "read overlay view's /%s", QUOTE(w->path.buf));
	}
	if (r < 0) {
		level_free(&l);
		return r;
	}
	l.no = strv_length(l.o);
	qsort(l.o, l.no, sizeof(char *), cmp_names_ptr);
	w->levels[w->n++] = l;
	return 0;
}

/* Compares one entry present in both views; *ret_br (and *ret_nbr) when
 * it is a directory to descend into: the branches its dir merges. */
static int check_entry(check_walk *w, check_level *l, const aufs_entry *e, int odir, size_t **ret_br, size_t *ret_nbr)
{
	check_ctx *c = w->c;
	const char *name = e->name, *rel = w->path.buf;
	int bdir = l->bfd[e->branch];
	*ret_br = NULL;
	struct stat ost;
	if (fstatat(odir, name, &ost, AT_SYMLINK_NOFOLLOW) < 0)
		return error_set(c->err, negerrno(), "stat overlay view's /%s", QUOTE(rel));
	const struct stat *ast = &e->st;
	if ((ast->st_mode & S_IFMT) != (ost.st_mode & S_IFMT))
		return report(c, rel, "type differs: aufs 0%o, overlay 0%o", (unsigned)(ast->st_mode & S_IFMT),
			      (unsigned)(ost.st_mode & S_IFMT));
	int r = 0;
	if ((ast->st_mode & 07777) != (ost.st_mode & 07777))
		r = report(c, rel, "mode differs: aufs %04o, overlay %04o", (unsigned)(ast->st_mode & 07777),
			   (unsigned)(ost.st_mode & 07777));
	if (r >= 0 && (ast->st_uid != ost.st_uid || ast->st_gid != ost.st_gid))
		r = report(c, rel, "owner differs: aufs %u:%u, overlay %u:%u", (unsigned)ast->st_uid,
			   (unsigned)ast->st_gid, (unsigned)ost.st_uid, (unsigned)ost.st_gid);
	if (r >= 0 && !S_ISDIR(ast->st_mode) && ast->st_mtim.tv_sec != ost.st_mtim.tv_sec)
		r = report(c, rel, "mtime differs: aufs %lld, overlay %lld", (long long)ast->st_mtim.tv_sec,
			   (long long)ost.st_mtim.tv_sec);
	if (r >= 0 && (S_ISCHR(ast->st_mode) || S_ISBLK(ast->st_mode)) && ast->st_rdev != ost.st_rdev)
		r = report(c, rel, "device number differs");
	if (r >= 0 && S_ISLNK(ast->st_mode)) {
		_cleanup_free_ char *at = malloc(PATH_MAX + 1), *ot = malloc(PATH_MAX + 1);
		if (!at || !ot)
			return -ENOMEM;
		ssize_t na = readlinkat(bdir, name, at, PATH_MAX);
		ssize_t no = readlinkat(odir, name, ot, PATH_MAX);
		if (na < 0 || no < 0)
			return error_set(c->err, negerrno(), "readlink /%s", QUOTE(rel));
		if (na != no || memcmp(at, ot, (size_t)na) != 0)
			r = report(c, rel, "symlink target differs: aufs \"%.*s\", overlay \"%.*s\"", (int)na, at,
				   (int)no, ot);
	}
	if (r >= 0 && S_ISREG(ast->st_mode)) {
		if (ast->st_size != ost.st_size)
			return report(c, rel, "size differs: aufs %lld, overlay %lld", (long long)ast->st_size,
				      (long long)ost.st_size);
		_cleanup_close_ int afd = openat(bdir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		_cleanup_close_ int of = openat(odir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (afd < 0 || of < 0)
			return error_set(c->err, negerrno(), "open /%s", QUOTE(rel));
		bool same = true;
		r = compare_content(afd, of, &same);
		if (r < 0)
			return error_set(c->err, r, "read /%s", QUOTE(rel));
		if (!same)
			r = report(c, rel, "content differs");
	}
	if (r < 0 || !S_ISDIR(ast->st_mode))
		return r;

	/* The dir's own branches: from where it was found down, until a
	 * whiteout, a non-directory or an opaque dir. */
	size_t *sub = malloc(l->nbr * sizeof(size_t));
	if (!sub)
		return -ENOMEM;
	size_t ns = 0;
	char wh[NAME_MAX + 8];
	snprintf(wh, sizeof(wh), WHITEOUT_PREFIX "%s", name);
	for (size_t k = e->branch; k < l->nbr && r >= 0; k++) {
		if (k > e->branch && faccessat(l->bfd[k], wh, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
			break;
		struct stat st;
		if (fstatat(l->bfd[k], name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			r = error_set(c->err, negerrno(), "stat /%s in branch %zu", QUOTE(rel), l->br[k]);
			break;
		}
		if (!S_ISDIR(st.st_mode))
			break;
		sub[ns++] = l->br[k];
		/* As the import reads them: only a regular file is a marker. */
		_cleanup_close_ int fd = openat(l->bfd[k], name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		struct stat mst;
		if (fd >= 0 && fstatat(fd, WHITEOUT_OPAQUE, &mst, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(mst.st_mode))
			break;
	}
	if (r < 0) {
		free(sub);
		return r;
	}
	*ret_br = sub;
	*ret_nbr = ns;
	return 0;
}

/* The next name of the innermost directory. */
static int check_step(check_walk *w)
{
	check_level *l = &w->levels[w->n - 1];
	strbuf_truncate(&w->path, l->path_len);
	int r = level_open_branches(w, l);
	if (r < 0)
		return r;
	if (l->i < l->na && l->a[l->i].hidden) {
		l->i++;
		return 0;
	}
	int cmp = l->i >= l->na ? 1 : l->j >= l->no ? -1 : strcmp(l->a[l->i].name, l->o[l->j]);
	const char *name = cmp <= 0 ? l->a[l->i].name : l->o[l->j];
	r = strbuf_push_name(&w->path, name);
	if (r == -ENAMETOOLONG)
		return error_setf(w->c->err, r, "/%s/...: a path longer than %d bytes", QUOTE(w->path.buf),
				  PATH_MAX - 1);
	if (r < 0)
		return r;
	if (cmp < 0) {
		l->i++;
		return report(w->c, w->path.buf, "missing from the overlay view");
	}
	if (cmp > 0) {
		l->j++;
		return report(w->c, w->path.buf, "not in the aufs view");
	}
	const aufs_entry *e = &l->a[l->i++];
	l->j++;
	size_t *br = NULL, nbr = 0;
	int odir = dir_stack_fd(&w->odirs);
	r = check_entry(w, l, e, odir, &br, &nbr);
	if (r < 0 || !br)
		return r;
	int ofd = dir_stack_push(&w->odirs, e->name);
	if (ofd < 0) {
		free(br);
		return error_set(w->c->err, ofd, "open overlay view's /%s", QUOTE(w->path.buf));
	}
	/* Only the innermost directory keeps its branches open. */
	level_close_branches(l);
	r = check_enter(w, br, nbr, ofd);
	if (r < 0)
		dir_stack_pop(&w->odirs);
	return r;
}

static int check_tree(check_ctx *c, const int *roots, size_t nb, int ofd)
{
	check_walk w = {.c = c, .roots = roots, .odirs = DIR_STACK_INIT(ofd)};
	size_t *br = malloc((nb ? nb : 1) * sizeof(size_t));
	if (!br)
		return -ENOMEM;
	for (size_t k = 0; k < nb; k++)
		br[k] = k;
	int r = strbuf_append(&w.path, "", 0);
	if (r < 0)
		free(br);
	else
		r = check_enter(&w, br, nb, ofd);
	while (r >= 0 && w.n > 0) {
		check_level *l = &w.levels[w.n - 1];
		if (l->i < l->na || l->j < l->no) {
			r = check_step(&w);
			continue;
		}
		level_free(l);
		if (--w.n > 0) {
			r = dir_stack_pop(&w.odirs);
			if (r < 0)
				error_set(c->err, r, "return from /%s", QUOTE(w.path.buf));
		}
	}
	while (w.n > 0)
		level_free(&w.levels[--w.n]);
	free(w.levels);
	dir_stack_release(&w.odirs);
	strbuf_release(&w.path);
	return r;
}

static int check_layer(strata_driver *d, const aufs_store *src, const aufs_layer *l, strata_check_report *rep,
		       size_t *ret_found, strata_error *err)
{
	size_t nb = 1 + strv_length(l->parents);
	_cleanup_free_ int *bfds = malloc(nb * sizeof(int));
	if (!bfds)
		return -ENOMEM;
	size_t opened = 0;
	int r = 0;
	for (; opened < nb; opened++) {
		const char *b = opened == 0 ? l->id : l->parents[opened - 1];
		bfds[opened] = openat(src->diff_fd, b, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (bfds[opened] < 0) {
			r = error_set(err, negerrno(), "open %s/diff/%s", src->root, b);
			break;
		}
	}
	_cleanup_free_ char *view = NULL;
	id_lock hold = ID_LOCK_INIT;
	bool got = false;
	if (r >= 0) {
		r = layer_hold(d, l->id, &hold, &view, err);
		got = r >= 0;
	}
	_cleanup_close_ int ofd = -1;
	if (r >= 0 && (ofd = open(view, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		r = error_set(err, negerrno(), "open %s", view);
	check_ctx c = {.d = d, .id = l->id, .rep = rep, .err = err};
	if (r >= 0)
		r = check_tree(&c, bfds, nb, ofd);
	if (got) {
		strata_error e2;
		int pr = layer_unhold(d, l->id, &hold, &e2);
		if (pr < 0 && r >= 0)
			r = error_set(err, pr, "%s", e2.message);
	}
	for (size_t i = 0; i < opened; i++)
		close(bfds[i]);
	*ret_found = c.found;
	return r;
}

void strata_check_report_clear(strata_check_report *rep)
{
	if (!rep)
		return;
	for (size_t i = 0; i < rep->n; i++) {
		free(rep->diffs[i].id);
		free(rep->diffs[i].path);
		free(rep->diffs[i].what);
	}
	free(rep->diffs);
	*rep = (strata_check_report){0};
}

static int import_check(strata_driver *d, const char *aufs_root, strata_import_fn progress, void *data,
			strata_check_report *ret, strata_error *err)
{
	aufs_store src;
	int r = aufs_store_open(aufs_root, &src, err);
	if (r < 0)
		return r;
	strata_check_report rep = {0};
	size_t total = 0;
	for (size_t i = 0; r >= 0 && i < src.n; i++) {
		int exists = strata_exists(d, src.layers[i].id, err);
		if (exists <= 0) {
			r = exists < 0
				    ? exists
				    : error_setf(err, -ENOENT, "layer %s is not in the store (run import-aufs first)",
						 src.layers[i].id);
			break;
		}
		size_t found = 0;
		r = check_layer(d, &src, &src.layers[i], &rep, &found, err);
		if (r < 0) {
			error_prefix(err, r, "layer %s", src.layers[i].id);
			break;
		}
		total += found;
		rep.layers++;
		if (progress) {
			strata_import_progress p = {i + 1, src.n, src.layers[i].id, 0, found};
			progress(&p, data);
		}
	}
	aufs_store_release(&src);
	if (r < 0) {
		strata_check_report_clear(&rep);
		return r;
	}
	*ret = rep;
	return total > INT32_MAX ? INT32_MAX : (int)total;
}

int strata_import_aufs_check(strata_driver *d, const char *aufs_root, strata_import_fn progress, void *data,
			     strata_check_report *ret, strata_error *err)
{
	error_clear(err);
	int r = import_check(d, aufs_root, progress, data, ret, err);
	return r < 0 ? error_prefix(err, r, "import-aufs --check %s", aufs_root) : r;
}
