/* SPDX-License-Identifier: Apache-2.0 */
/*
 * strata check: every invariant the store relies on, one problem per line.
 *
 * Each layer is judged under its id's lock, so a check may run beside live
 * operations: what an operation in flight owns is never taken for debris.
 * Repairs do only what recovery would do (finish a remove, drop what an
 * interrupted create or a dead process left, make missing empty dirs and
 * short links, reset counts to the mount table); what strata did not
 * provably make (files under a name no layer has, foreign mounts, a
 * corrupt chain file) is reported and left alone.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
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

typedef struct checker {
	strata_driver *d;
	bool repair;
	strata_problem_list *out;
	size_t remaining; /* problems not repaired */
} checker;

/* Records a problem.  `repaired` > 0: `action` was done; 0: not repaired
 * (`action`, may be NULL, says why); < 0: the repair failed (errno). */
static int problem(checker *c, const char *layer, const char *path, int repaired, const char *action, const char *fmt,
		   ...) _printf_(6, 7);
static int problem(checker *c, const char *layer, const char *path, int repaired, const char *action, const char *fmt,
		   ...)
{
	strata_problem_list *l = c->out;
	strata_problem *items = realloc(l->items, (l->n + 1) * sizeof(*items));
	if (!items)
		return -ENOMEM;
	l->items = items;
	strata_problem *p = &items[l->n];
	*p = (strata_problem){.repaired = repaired > 0};
	va_list ap;
	va_start(ap, fmt);
	int r = vasprintf(&p->what, fmt, ap);
	va_end(ap);
	if (r < 0) {
		p->what = NULL;
		return -ENOMEM;
	}
	int ok = 1;
	if (layer)
		ok = (p->layer = strdup(layer)) != NULL;
	if (ok && path)
		ok = asprintf(&p->path, "%s%s%s", c->d->store->root, *path ? "/" : "", path) >= 0;
	if (ok && repaired < 0)
		ok = asprintf(&p->repair, "repair failed: %s", strerror(-repaired)) >= 0;
	else if (ok && action)
		ok = (p->repair = strdup(action)) != NULL;
	if (!ok) {
		free(p->what);
		free(p->layer);
		free(p->path);
		return -ENOMEM;
	}
	l->n++;
	if (repaired <= 0)
		c->remaining++;
	return 0;
}

/* A repair's result for problem(): 1 done, or the negative errno. */
static int done(int r)
{
	return r < 0 ? r : 1;
}

void strata_problem_list_clear(strata_problem_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n; i++) {
		free(l->items[i].layer);
		free(l->items[i].path);
		free(l->items[i].what);
		free(l->items[i].repair);
	}
	free(l->items);
	*l = (strata_problem_list){0};
}

/* ---- the store as a whole ---- */

static int check_top(checker *c)
{
	store *s = c->d->store;
	int r;
	if (faccessat(s->root_fd, STORE_MARKER, F_OK, AT_SYMLINK_NOFOLLOW) < 0) {
		static const char text[] = STORE_MARKER_TEXT;
		int rep = c->repair ? done(fs_write_atomic_at(s->root_fd, STORE_MARKER, text, sizeof(text) - 1, 0600,
							      FS_WRITE_SYNC))
				    : 0;
		r = problem(c, NULL, STORE_MARKER, rep, rep > 0 ? "written" : NULL,
			    "the store marker is missing (a store made before it existed)");
		if (r < 0)
			return r;
	}
	_cleanup_free_ char *engine = NULL;
	r = fs_read_at(s->root_fd, "engine", 64, &engine, NULL);
	const char *want = c->d->aufs ? "aufs\n" : "overlay\n";
	if (r == -ENOENT) {
		int rep = c->repair ? done(fs_write_atomic_at(s->root_fd, "engine", want, strlen(want), 0600,
							      FS_WRITE_SYNC))
				    : 0;
		r = problem(c, NULL, "engine", rep, rep > 0 ? "written" : NULL, "the engine record is missing");
	} else if (r >= 0 && strcmp(engine, "overlay\n") != 0 && strcmp(engine, "aufs\n") != 0) {
		r = problem(c, NULL, "engine", 0, "its diff dirs are in one engine's format: set it by hand",
			    "the engine record names no engine (\"%.*s\")", (int)strcspn(engine, "\n"), engine);
	} else if (r >= 0 && strcmp(engine, want) != 0) {
		r = problem(c, NULL, "engine", 0, NULL, "the engine record says %.*s, the store is open with %.*s",
			    (int)strcspn(engine, "\n"), engine, (int)strcspn(want, "\n"), want);
	}
	if (r < 0 && r != -ENOMEM)
		r = problem(c, NULL, "engine", 0, NULL, "cannot read the engine record: %s", strerror(-r));
	if (r < 0)
		return r;

	_cleanup_strv_free_ char **names = NULL;
	r = fs_list_dir(s->root_fd, &names);
	if (r < 0)
		return r;
	static const char *const known[] = {"layers", "diff",	     "mnt",	  "work",   "refs",
					    "l",      "link",	     "lock",	  "engine", STORE_MARKER,
					    "thin",   "import-aufs", "containerd"};
	for (char **p = names; *p; p++) {
		bool ok = false;
		for (size_t i = 0; i < ELEMENTSOF(known) && !ok; i++)
			ok = !strcmp(*p, known[i]);
		if (ok)
			continue;
		if (!strncmp(*p, ".tmp-", 5) || !strncmp(*p, ".probe-", 7)) {
			/* An init's temp file or probe dir: init removes them
			 * under the init lock, which check holds. */
			int rep = 0;
			if (c->repair) {
				_cleanup_free_ char *merged = NULL;
				if (asprintf(&merged, "%s/%s/merged", s->root, *p) < 0)
					return -ENOMEM;
				rep = !strncmp(*p, ".probe-", 7) ? union_unmount(merged, NULL) : 0;
				rep = done(rep < 0 ? rep : fs_rm_tree_at(s->root_fd, *p, NULL));
			}
			r = problem(c, NULL, *p, rep, rep > 0 ? "removed" : NULL,
				    "left by an init that did not finish");
		} else {
			r = problem(c, NULL, *p, 0, "not strata's: left alone", "an entry strata does not make");
		}
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- one layer ---- */

static int check_dirs(checker *c, const char *id, bool *ret_has_diff)
{
	store *s = c->d->store;
	const struct {
		int fd;
		const char *sub;
		mode_t mode;
	} dirs[] = {{s->diff_fd, "diff", 0}, {s->mnt_fd, "mnt", 0755}, {s->work_fd, "work", 0700}};
	*ret_has_diff = true;
	for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
		struct stat st;
		if (fstatat(dirs[i].fd, id, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
			continue;
		char path[STRATA_ID_MAX + 8];
		snprintf(path, sizeof(path), "%s/%s", dirs[i].sub, id);
		int r;
		if (!dirs[i].mode) {
			*ret_has_diff = false;
			r = problem(c, id, path, 0, "its content is lost: remove the layer",
				    "the layer's diff dir is missing");
		} else {
			int rep = c->repair && errno == ENOENT ? done(fs_mkdir_at(dirs[i].fd, id, dirs[i].mode)) : 0;
			r = problem(c, id, path, rep, rep > 0 ? "made (empty)" : NULL, "the layer's %s dir is missing",
				    dirs[i].sub);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

/* The l/ entry leading to ../diff/<id>: 1 and its name, or 0. */
static int short_link_to(store *s, const char *id, char **ret)
{
	_cleanup_strv_free_ char **names = NULL;
	int r = fs_list_dir(s->l_fd, &names);
	if (r < 0)
		return r;
	char want[STRATA_ID_MAX + 16];
	snprintf(want, sizeof(want), "../diff/%s", id);
	for (char **p = names; *p; p++) {
		char got[STRATA_ID_MAX + 16];
		ssize_t n = readlinkat(s->l_fd, *p, got, sizeof(got) - 1);
		if (n > 0 && strlen(*p) == STORE_LINK_LEN && (got[n] = '\0', !strcmp(got, want))) {
			*ret = strdup(*p);
			return *ret ? 1 : -ENOMEM;
		}
	}
	return 0;
}

static int check_links(checker *c, const char *id)
{
	store *s = c->d->store;
	char shortname[STORE_LINK_LEN + 1], path[STRATA_ID_MAX + 8];
	snprintf(path, sizeof(path), "link/%s", id);
	int r = link_read(s, id, shortname);
	const char *what = NULL;
	if (r == -ENOENT)
		what = "its short link is missing";
	else if (r == -EBADMSG)
		what = "its short link is malformed";
	else if (r < 0)
		return problem(c, id, path, 0, NULL, "cannot read its short link: %s", strerror(-r));
	else {
		char want[STRATA_ID_MAX + 16], got[STRATA_ID_MAX + 16];
		snprintf(want, sizeof(want), "../diff/%s", id);
		ssize_t n = readlinkat(s->l_fd, shortname, got, sizeof(got) - 1);
		if (n < 0)
			what = "its short link names a missing l/ entry";
		else if (got[n] = '\0', strcmp(got, want) != 0)
			what = "its short link names an l/ entry that leads elsewhere";
	}
	if (!what)
		return 0;
	int rep = 0;
	const char *action = "made anew";
	if (c->repair) {
		/* Only link/<id> goes: an l/ entry that leads elsewhere is
		 * another layer's.  An l/ entry that leads here is taken back. */
		_cleanup_free_ char *found = NULL;
		if (unlinkat(s->link_fd, id, 0) < 0 && errno != ENOENT)
			rep = negerrno();
		else if ((rep = short_link_to(s, id, &found)) > 0 && symlinkat(found, s->link_fd, id) == 0)
			action = "pointed back at its l/ entry";
		else
			rep = done(link_create(s, id, NULL));
	}
	return problem(c, id, path, rep, rep > 0 ? action : NULL, "%s", what);
}

static int check_mount(checker *c, const char *id, char *const *parents)
{
	strata_driver *d = c->d;
	store *s = d->store;
	char mpath[STRATA_ID_MAX + 8], rpath[STRATA_ID_MAX + 8];
	snprintf(mpath, sizeof(mpath), "mnt/%s", id);
	snprintf(rpath, sizeof(rpath), "refs/%s", id);
	_cleanup_free_ char *target = driver_path(d, "mnt", id);
	if (!target)
		return -ENOMEM;
	int mounted = union_mounted_at(s->mnt_fd, id, target, NULL);
	if (mounted == -EBUSY)
		return problem(c, id, mpath, 0, "not strata's: left alone", "a mount strata did not make is there");
	if (mounted < 0)
		return problem(c, id, mpath, 0, NULL, "cannot tell what is mounted there: %s", strerror(-mounted));

	unsigned count = 0;
	int r = refs_read(s, id, &count);
	if (r == -EBADMSG) {
		int rep = c->repair ? done(refs_write(s, id, mounted > 0)) : 0;
		r = problem(c, id, rpath, rep, rep > 0 ? (mounted > 0 ? "set to 1" : "set to 0") : NULL,
			    "its reference count is malformed");
		if (r < 0)
			return r;
		if (rep > 0)
			count = mounted > 0;
	} else if (r < 0) {
		return problem(c, id, rpath, 0, NULL, "cannot read its reference count: %s", strerror(-r));
	}

	/* Does the layer's view need a union?  A base layer's is its diff
	 * dir, unless it is thin (a read-only union of its image). */
	bool needs_mount = parents[0] != NULL;
	if (!needs_mount) {
		thin_image img = {0};
		needs_mount = layer_thin_read(d, id, &img, NULL) > 0;
		thin_image_release(&img);
	}
	if (count > 0 && needs_mount && !mounted) {
		int rep = c->repair ? done(refs_write(s, id, 0)) : 0;
		return problem(c, id, rpath, rep, rep > 0 ? "count reset to 0" : NULL,
			       "counted %u reference%s, but its union is not mounted", count, count == 1 ? "" : "s");
	}
	int held = mounted > 0 && count == 0 ? lock_held(s, id) : 1;
	if (held < 0)
		return problem(c, id, mpath, 0, NULL, "cannot read the holds in lock: %s", strerror(-held));
	if (!held) {
		int rep = c->repair ? done(layer_unmount(d, id, NULL)) : 0;
		return problem(c, id, mpath, rep, rep > 0 ? "unmounted" : NULL,
			       "its union is mounted, but no reference counts it and no live process holds it");
	}
	return 0;
}

/* Caller holds the id's lock. */
static int check_layer(checker *c, const char *id)
{
	strata_driver *d = c->d;
	store *s = d->store;
	char lpath[STRATA_ID_MAX + 8];
	snprintf(lpath, sizeof(lpath), "layers/%s", id);
	strata_error cerr = {0};
	_cleanup_strv_free_ char **parents = NULL;
	int r = chain_read(s, id, &parents, &cerr);
	if (r < 0)
		return problem(c, id, lpath, 0, "the layer's place in its chain is unknown: remove it by hand", "%s",
			       cerr.message);

	bool chain_ok = true;
	for (size_t i = 0; parents[i]; i++) {
		if (!strcmp(parents[i], id)) {
			chain_ok = false;
			r = problem(c, id, lpath, 0, NULL, "its chain names the layer itself (a cycle)");
		} else if ((r = store_layer_exists(s, parents[i])) == 0) {
			chain_ok = false;
			r = problem(c, id, lpath, 0, NULL, "its chain names %s, which does not exist", parents[i]);
		}
		if (r < 0)
			return r;
	}
	if (chain_ok && parents[0]) {
		/* The chain is the parent's, with the parent in front. */
		_cleanup_strv_free_ char **grand = NULL;
		if (chain_read(s, parents[0], &grand, NULL) >= 0) {
			size_t i = 0;
			while (grand[i] && parents[i + 1] && !strcmp(grand[i], parents[i + 1]))
				i++;
			if (grand[i] || parents[i + 1]) {
				chain_ok = false;
				r = problem(c, id, lpath, 0, NULL,
					    "its chain disagrees with its parent %s's from the %zu%s layer down",
					    parents[0], i + 2,
					    i == 0   ? "nd"
					    : i == 1 ? "rd"
						     : "th");
				if (r < 0)
					return r;
			}
		}
	}
	bool has_diff = true;
	r = check_dirs(c, id, &has_diff);
	if (r >= 0)
		r = check_links(c, id);
	if (r >= 0 && has_diff && chain_ok)
		r = check_mount(c, id, parents);
	if (r >= 0) {
		_cleanup_free_ char *what = NULL;
		char tpath[STRATA_ID_MAX + 16];
		snprintf(tpath, sizeof(tpath), "thin/under/%s", id);
		int t = thin_check_under(d, id, parents[0], c->repair, &what, NULL);
		if (t < 0 && c->repair && what)
			r = problem(c, id, tpath, t, NULL, "%s", what);
		else if (t < 0 && t != -ENOMEM)
			r = problem(c, id, tpath, 0, NULL, "cannot check its thin record: %s", strerror(-t));
		else if (t < 0)
			r = t;
		else if (t > 0)
			r = problem(c, id, tpath, t == 2, t == 2 ? "written anew" : NULL, "%s", what);
	}
	return r;
}

/* ---- names that are no live layer's ---- */

/* Is what `name` is in dirfd what a create leaves before its chain file:
 * an empty dir, a symlink, a count record? */
static bool create_debris(checker *c, int dirfd, const char *name)
{
	struct stat st;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return false;
	if (S_ISLNK(st.st_mode))
		return dirfd == c->d->store->link_fd;
	if (S_ISREG(st.st_mode))
		return dirfd == c->d->store->refs_fd && refs_is_record(c->d->store, name) > 0;
	if (!S_ISDIR(st.st_mode))
		return false;
	if (dirfd == c->d->store->mnt_fd && fs_is_mount_point_at(dirfd, name) != 0)
		return false;
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_strv_free_ char **names = NULL;
	return fd >= 0 && fs_list_dir(fd, &names) >= 0 && !names[0];
}

static int check_names(checker *c, int dirfd, const char *sub)
{
	store *s = c->d->store;
	_cleanup_strv_free_ char **names = NULL;
	int r = fs_list_dir(dirfd, &names);
	if (r < 0)
		return r;
	for (char **p = names; *p; p++) {
		const char *name = *p;
		_cleanup_free_ char *path = NULL;
		if (asprintf(&path, "%s/%s", sub, name) < 0)
			return -ENOMEM;
		bool temp = !strncmp(name, ".tmp-", 5);
		_cleanup_free_ char *id = store_owner_id(temp && strlen(name) > 14 ? name + 14 : name);
		_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
		if (id && (r = lock_ids(s, id, NULL, &lock)) < 0)
			return r;
		/* Gone while we waited for the lock: an operation finished. */
		if (faccessat(dirfd, name, F_OK, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		int live = id ? store_layer_exists(s, id) : 0;
		if (live < 0)
			return live;
		if (temp) {
			int rep = c->repair ? done(fs_rm_tree_at(dirfd, name, NULL)) : 0;
			r = problem(c, id, path, rep, rep > 0 ? "removed" : NULL,
				    "a temp file or staging dir of a write or apply that did not finish");
		} else if (!id) {
			r = problem(c, NULL, path, 0, "not strata's: left alone", "an entry that is no layer id");
		} else if (strcmp(id, name) != 0) {
			/* "<id>-removing": strata's name for what a remove
			 * had taken away. */
			int rep = 0;
			if (c->repair)
				rep = done(dirfd == s->layers_fd && !live ? layer_scrub(c->d, id, NULL)
									  : fs_rm_tree_at(dirfd, name, NULL));
			r = problem(c, id, path, rep, rep > 0 ? "removal finished" : NULL,
				    "the remains of a remove that did not finish");
		} else if (live && dirfd == s->layers_fd) {
			r = check_layer(c, id);
		} else if (live) {
			continue;
		} else if (create_debris(c, dirfd, name)) {
			int rep = c->repair ? done(layer_clear_debris(c->d, id, NULL)) : 0;
			r = problem(c, id, path, rep, rep > 0 ? "removed" : NULL,
				    "left by a create that did not finish (no layer %s exists)", id);
		} else if (dirfd == s->mnt_fd && fs_is_mount_point_at(dirfd, name) > 0) {
			r = problem(c, id, path, 0, "not strata's: left alone",
				    "a mount strata did not make is there (no layer %s exists)", id);
		} else {
			r = problem(c, id, path, 0, "not strata's: left alone",
				    "no layer %s exists, and this is not what strata leaves", id);
		}
		if (r < 0)
			return r;
	}
	return 0;
}

/* l/<short>: each must lead to a live layer whose link/<id> names it. */
static int check_short_links(checker *c)
{
	store *s = c->d->store;
	_cleanup_strv_free_ char **names = NULL;
	int r = fs_list_dir(s->l_fd, &names);
	if (r < 0)
		return r;
	for (char **p = names; *p; p++) {
		char target[STRATA_ID_MAX + 16], path[STRATA_ID_MAX + 8];
		snprintf(path, sizeof(path), "l/%s", *p);
		ssize_t n = readlinkat(s->l_fd, *p, target, sizeof(target) - 1);
		if (n < 0 || (target[n] = '\0', strncmp(target, "../diff/", 8) != 0) ||
		    id_validate(target + 8, NULL) < 0) {
			r = problem(c, NULL, path, 0, "not strata's: left alone", "not a short link strata makes");
			if (r < 0)
				return r;
			continue;
		}
		const char *id = target + 8;
		_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
		r = lock_ids(s, id, NULL, &lock);
		if (r < 0)
			return r;
		/* The entry may have gone, with its layer, while we waited. */
		char again[sizeof(target)];
		ssize_t m = readlinkat(s->l_fd, *p, again, sizeof(again) - 1);
		if (m < 0 && errno == ENOENT)
			continue;
		if (m != n || memcmp(again, target, (size_t)n) != 0)
			continue;
		char back[STORE_LINK_LEN + 1];
		int live = store_layer_exists(s, id);
		if (live < 0)
			return live;
		int lr = live > 0 ? link_read(s, id, back) : -ENOENT;
		if (lr == 0 && !strcmp(back, *p))
			continue;
		/* A live layer without its link/ entry: reported (and taken
		 * back by the repair) with the layer. */
		if (live > 0 && lr == -ENOENT)
			continue;
		int rep = c->repair ? done(unlinkat(s->l_fd, *p, 0) < 0 && errno != ENOENT ? negerrno() : 0) : 0;
		r = problem(c, live ? id : NULL, path, rep, rep > 0 ? "removed" : NULL,
			    live ? "a short link to %s that its link/ entry does not name"
				 : "a short link to %s, which does not exist",
			    id);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Mounts under the root that are not a layer's view at mnt/<id>. */
static int check_mounts(checker *c)
{
	store *s = c->d->store;
	mount_entry *m = NULL;
	size_t n = 0;
	int r = mountinfo_under(s->root, &m, &n);
	if (r < 0)
		return r;
	size_t rl = strlen(s->root);
	for (size_t i = 0; i < n && r >= 0; i++) {
		const char *rel = m[i].mountpoint + rl;
		rel += *rel == '/';
		/* Whatever is at mnt/<name> is judged with that name (above),
		 * and so is init's probe. */
		if (!strncmp(rel, "mnt/", 4) && strrchr(rel, '/') == rel + 3)
			continue;
		if (!strncmp(rel, ".probe-", 7))
			continue;
		r = problem(c, NULL, rel, 0, "not strata's: left alone", "a %s mount strata did not make", m[i].fstype);
	}
	mount_entries_free(m, n);
	return r;
}

/* thin/under/<id> of ids that are no layer's. */
static int check_thin_records(checker *c)
{
	store *s = c->d->store;
	_cleanup_close_ int ufd = openat(s->root_fd, "thin/under", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (ufd < 0)
		return errno == ENOENT ? 0 : negerrno();
	_cleanup_strv_free_ char **names = NULL;
	int r = fs_list_dir(ufd, &names);
	if (r < 0)
		return r;
	for (char **p = names; *p; p++) {
		bool temp = !strncmp(*p, ".tmp-", 5);
		_cleanup_free_ char *id = store_owner_id(temp && strlen(*p) > 14 ? *p + 14 : *p);
		if (!id)
			continue;
		_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
		r = lock_ids(s, id, NULL, &lock);
		if (r < 0)
			return r;
		int live = store_layer_exists(s, id);
		if (live < 0)
			return live;
		if (live > 0 && !temp)
			continue;
		_cleanup_free_ char *path = NULL;
		if (asprintf(&path, "thin/under/%s", *p) < 0)
			return -ENOMEM;
		int rep = c->repair ? done(unlinkat(ufd, *p, 0) < 0 && errno != ENOENT ? negerrno() : 0) : 0;
		r = problem(c, id, path, rep, rep > 0 ? "removed" : NULL,
			    temp ? "a temp file of a thin record that was never written" : "a thin record of no layer");
		if (r < 0)
			return r;
	}
	return 0;
}

static int check(strata_driver *d, unsigned flags, strata_problem_list *ret, strata_error *err)
{
	store *s = d->store;
	strata_problem_list out = {0};
	checker c = {.d = d, .repair = flags & STRATA_CHECK_REPAIR, .out = &out};
	/* Beside a running init, its recovery and this check would judge
	 * the same debris. */
	_cleanup_lock_ id_lock init_lock = ID_LOCK_INIT;
	int r = lock_store_init(s, &init_lock);
	if (r < 0)
		return error_set(err, r, "lock %s/lock", s->root);
	const struct {
		int fd;
		const char *sub;
	} dirs[] = {{s->layers_fd, "layers"}, {s->diff_fd, "diff"}, {s->mnt_fd, "mnt"},
		    {s->work_fd, "work"},     {s->refs_fd, "refs"}, {s->link_fd, "link"}};
	r = check_top(&c);
	for (size_t i = 0; r >= 0 && i < ELEMENTSOF(dirs); i++) {
		r = check_names(&c, dirs[i].fd, dirs[i].sub);
		if (r < 0)
			error_set(err, r, "check %s/%s", s->root, dirs[i].sub);
	}
	if (r >= 0 && (r = check_short_links(&c)) < 0)
		error_set(err, r, "check %s/l", s->root);
	if (r >= 0 && (r = check_mounts(&c)) < 0)
		error_set(err, r, "check the mounts under %s", s->root);
	if (r >= 0 && (r = check_thin_records(&c)) < 0)
		error_set(err, r, "check %s/thin/under", s->root);
	if (r < 0) {
		strata_problem_list_clear(&out);
		return r;
	}
	*ret = out;
	return c.remaining > INT32_MAX ? INT32_MAX : (int)c.remaining;
}

int strata_check(strata_driver *d, unsigned flags, strata_problem_list *ret, strata_error *err)
{
	error_clear(err);
	int r = check(d, flags, ret, err);
	return r < 0 ? error_prefix(err, r, "check %s", d->store->root) : r;
}
