/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Thin layers in the store (SPEC section 4): which dirs a chain with a thin
 * layer mounts, holding the repositories they live in, and committing a
 * layer on a thin image by publishing it.
 *
 * A thin layer's thin.json lists its whole image, base first: the topmost
 * thin layer of a chain therefore stands for everything below it, and the
 * union is made of the store layers above it (top first) and then its
 * image's layers (top first).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver.h"
#include "thin/verify.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

#define THIN_DIR "thin"

int driver_thin_dir(strata_driver *d, bool create, int *ret_fd)
{
	int fd = openat(d->store->root_fd, THIN_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT && create) {
		int r = fs_mkdir_at(d->store->root_fd, THIN_DIR, 0700);
		if (r < 0 && r != -EEXIST)
			return r;
		fd = openat(d->store->root_fd, THIN_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0)
		return negerrno();
	d->thin_seen = true;
	*ret_fd = fd;
	return 0;
}

int layer_thin_read(strata_driver *d, const char *id, thin_image *ret, strata_error *err)
{
	_cleanup_close_ int fd = openat(d->store->diff_fd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return error_set(err, negerrno(), "open %s/diff/%s", d->store->root, id);
	int r = thin_read_at(fd, ret, err);
	return r < 0 ? error_prefix(err, r, "thin layer %s", id) : r;
}

static void thin_image_releasep(thin_image *img)
{
	thin_image_release(img);
}

void chain_plan_release(chain_plan *p)
{
	thin_image_release(&p->image);
	free(p->thin_id);
	strv_free(p->dirs);
	strv_free(p->repos);
	*p = (chain_plan){0};
}

static int add_unique(char ***v, size_t *n, const char *s)
{
	for (size_t i = 0; i < *n; i++)
		if (!strcmp((*v)[i], s))
			return 0;
	char **nv = realloc(*v, (*n + 2) * sizeof(char *));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[*n] = strdup(s);
	nv[*n + 1] = NULL;
	if (!nv[*n])
		return -ENOMEM;
	(*n)++;
	return 0;
}

/*
 * ROOT/thin/under/<id>: the thin layer standing for the image under layer
 * id, recorded when id is created.  A layer's thin.json can only appear
 * while it has no child (apply refuses a layer with one), so what is under
 * a new layer never changes: get reads one record instead of a thin.json
 * lookup per layer of the chain.
 */
#define UNDER_DIR "under"

static bool thin_dir_exists(strata_driver *d)
{
	if (!d->thin_seen && faccessat(d->store->root_fd, THIN_DIR, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		d->thin_seen = true;
	return d->thin_seen;
}

/* ROOT/thin/under/<id>, relative to the store root. */
#define UNDER_NAME_MAX (sizeof(THIN_DIR "/" UNDER_DIR "/") + STRATA_ID_MAX)
static void under_name(const char *id, char ret[UNDER_NAME_MAX])
{
	snprintf(ret, UNDER_NAME_MAX, THIN_DIR "/" UNDER_DIR "/%s", id);
}

/* The record for id: 1 and the thin layer's id, or 0 if there is none. */
static int read_under(strata_driver *d, const char *id, char **ret, strata_error *err)
{
	char name[UNDER_NAME_MAX];
	under_name(id, name);
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int r = fs_read_at(d->store->root_fd, name, STRATA_ID_MAX + 2, &data, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return error_set(err, r, "read %s/%s", d->store->root, name);
	data[strcspn(data, "\n")] = '\0';
	if (id_validate(data, NULL) < 0)
		return error_setf(err, -EINVAL, "%s/%s: not a layer id", d->store->root, name);
	*ret = TAKE_PTR(data);
	return 1;
}

int thin_record_under(strata_driver *d, const char *id, const char *parent, strata_error *err)
{
	if (!parent || !*parent || !thin_dir_exists(d))
		return 0;
	/* Whether the parent holds a thin.json; get parses it (and says
	 * what is wrong with it). */
	char name[STRATA_ID_MAX + sizeof("/" THIN_FILE)];
	snprintf(name, sizeof(name), "%s/" THIN_FILE, parent);
	_cleanup_free_ char *under = NULL;
	int r = 0;
	if (faccessat(d->store->diff_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		if (!(under = strdup(parent)))
			return -ENOMEM;
		r = 1;
	} else if (errno != ENOENT) {
		return error_set(err, negerrno(), "stat %s/diff/%s", d->store->root, name);
	} else {
		r = read_under(d, parent, &under, err);
	}
	if (r <= 0)
		return r;
	_cleanup_close_ int fd = -1;
	r = driver_thin_dir(d, false, &fd);
	if (r >= 0) {
		r = fs_mkdir_at(fd, UNDER_DIR, 0700);
		r = r == -EEXIST ? 0 : r;
	}
	_cleanup_close_ int ufd = r >= 0 ? openat(fd, UNDER_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
	if (r >= 0 && ufd < 0)
		r = negerrno();
	if (r >= 0)
		r = fs_write_atomic_at(ufd, id, under, strlen(under), 0600, FS_WRITE_SYNC);
	return r < 0 ? error_set(err, r, "write %s/" THIN_DIR "/" UNDER_DIR "/%s", d->store->root, id) : 0;
}

int thin_forget_under(strata_driver *d, const char *id, strata_error *err)
{
	char name[UNDER_NAME_MAX];
	under_name(id, name);
	if (thin_dir_exists(d) && unlinkat(d->store->root_fd, name, 0) < 0 && errno != ENOENT)
		return error_set(err, negerrno(), "remove %s/%s", d->store->root, name);
	return 0;
}

int thin_check_under(strata_driver *d, const char *id, const char *parent, bool repair, char **ret_what,
		     strata_error *err)
{
	*ret_what = NULL;
	if (!thin_dir_exists(d))
		return 0;
	/* What create would record now, from the parent, against what is
	 * recorded. */
	_cleanup_free_ char *want = NULL, *have = NULL;
	int r = 0;
	if (parent && *parent) {
		char name[STRATA_ID_MAX + sizeof("/" THIN_FILE)];
		snprintf(name, sizeof(name), "%s/" THIN_FILE, parent);
		if (faccessat(d->store->diff_fd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
			if (!(want = strdup(parent)))
				return -ENOMEM;
		} else {
			r = read_under(d, parent, &want, NULL);
		}
	}
	int h = read_under(d, id, &have, NULL);
	bool bad = h < 0;
	if (!bad && r >= 0)
		bad = (want != NULL) != (have != NULL) || (want && strcmp(want, have) != 0);
	if (!bad)
		return 0;
	if (asprintf(ret_what,
		     "its thin record (%s/" THIN_DIR "/" UNDER_DIR "/%s) names %s, its parent's chain says %s",
		     d->store->root, id,
		     h < 0  ? "no valid layer"
		     : have ? have
			    : "none",
		     want ? want : "none") < 0) {
		*ret_what = NULL;
		return -ENOMEM;
	}
	if (!repair)
		return 1;
	r = thin_forget_under(d, id, err);
	if (r >= 0)
		r = thin_record_under(d, id, parent, err);
	return r < 0 ? r : 2;
}

int chain_plan_read(strata_driver *d, const char *id, char *const *parents, chain_plan *ret, strata_error *err)
{
	chain_plan p = {.n_store = strv_length(parents)};
	/* A store that never took a thin layer has no thin dir. */
	if (!thin_dir_exists(d)) {
		*ret = p;
		return 0;
	}
	int r = layer_thin_read(d, id, &p.image, err);
	if (r > 0) {
		p.self = true;
		p.n_store = 0;
		p.thin_id = strdup(id);
	} else if (r == 0) {
		r = read_under(d, id, &p.thin_id, err);
		size_t k = 0;
		while (r > 0 && parents[k] && strcmp(parents[k], p.thin_id) != 0)
			k++;
		if (r > 0 && !parents[k])
			r = error_setf(err, -EINVAL,
				       "layer %s: the thin layer recorded under it, %s, is not in its chain", id,
				       p.thin_id);
		if (r > 0) {
			p.n_store = k;
			r = layer_thin_read(d, p.thin_id, &p.image, err);
			if (r == 0)
				r = error_setf(err, -EINVAL,
					       "layer %s: %s, recorded as the thin layer under it, is not thin", id,
					       p.thin_id);
		}
	}
	size_t n = 0;
	if (r > 0 && !p.thin_id)
		r = -ENOMEM;
	for (size_t i = 0; r > 0 && i < p.image.n; i++)
		r = add_unique(&p.repos, &n, p.image.layers[i].repo) < 0 ? -ENOMEM : 1;
	if (r < 0) {
		chain_plan_release(&p);
		return r;
	}
	*ret = p;
	return 0;
}

int thin_release_holder(strata_driver *d, const char *holder, strata_error *err)
{
	/* Not thin_seen: a put in a new process (every `strata umount`) has
	 * read no chain, and must still drop the holder its get recorded. */
	if (!d->thin.internal)
		return 0;
	_cleanup_close_ int fd = -1;
	int r = driver_thin_dir(d, false, &fd);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return error_set(err, r, "open %s/" THIN_DIR, d->store->root);
	return thin_repos_release(&d->thin, fd, holder, err);
}

int chain_plan_acquire(strata_driver *d, const char *holder, chain_plan *p, strata_error *err)
{
	if (p->image.n == 0)
		return 0;
	/* Published layers are in overlay's format, which aufs cannot read. */
	if (d->aufs)
		return error_setf(err, -EOPNOTSUPP, "thin image of layer %s: thin layers need the overlay engine",
				  p->thin_id);
	if (d->thin.internal) {
		_cleanup_close_ int fd = -1;
		int r = driver_thin_dir(d, true, &fd);
		if (r < 0)
			return error_set(err, r, "mkdir %s/" THIN_DIR, d->store->root);
		r = thin_repos_acquire(&d->thin, fd, holder, p->repos, err);
		if (r < 0)
			return error_prefix(err, r, "thin image of layer %s", p->thin_id);
		p->acquired = true;
	}
	char **dirs = calloc(p->image.n + 1, sizeof(char *));
	int r = dirs ? 0 : -ENOMEM;
	for (size_t i = 0; r >= 0 && i < p->image.n; i++) {
		r = thin_resolve(&d->thin, &p->image.layers[p->image.n - 1 - i], &dirs[i], err);
		if (r < 0)
			error_prefix(err, r, "thin image of layer %s", p->thin_id);
	}
	if (r < 0) {
		strv_free(dirs);
		if (p->acquired)
			thin_release_holder(d, holder, NULL);
		p->acquired = false;
		return r;
	}
	p->dirs = dirs;
	return 0;
}

/* ---- committing on a thin image ---- */

static bool is_init_layer(const char *id)
{
	size_t n = strlen(id);
	return n > 5 && !strcmp(id + n - 5, "-init");
}

/* Exports a layer's diff dir as a tar into an unnamed temp file, returns
 * its fd and sha256. */
static int export_layer(strata_driver *d, const char *name, const tar_opts *o, int *ret_fd,
			char ret_digest[THIN_DIGEST_LEN + 1], uint64_t *ret_size, strata_error *err)
{
	_cleanup_close_ int dfd = openat(d->store->diff_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return error_set(err, negerrno(), "open %s/diff/%s", d->store->root, name);
	_cleanup_close_ int tmp = -1;
	int r = driver_tar_to_temp(d, dfd, o, &tmp, err);
	if (r < 0)
		return error_prefix(err, r, "export layer %s", name);
	r = thin_digest_fd(tmp, ret_digest, ret_size);
	if (r < 0)
		return error_set(err, r, "sha256 of layer %s", name);
	*ret_fd = TAKE_FD(tmp);
	return 0;
}

/*
 * What a publisher may ask about the layers under a store layer it
 * publishes (thin_lower): the store layers published before it, over the
 * thin image's layers, as the published image will stack them (Docker's
 * -init layer is not in it).  Opened on first use: only an opaque dir in a
 * layer for a filesystem without xattrs asks.
 */
typedef struct chain_lower {
	strata_driver *d;
	char *const *names; /* store layers below, lowest first */
	size_t n_names;
	const thin_image *image; /* under them; image->n == 0: none */
	char holder[STRATA_ID_MAX + sizeof("@publish")];
	bool held;
	int *fds; /* top first */
	size_t n_fds;
	bool opened;
} chain_lower;

static void chain_lower_release(chain_lower *cl)
{
	for (size_t i = 0; i < cl->n_fds; i++)
		close(cl->fds[i]);
	free(cl->fds);
	if (cl->held)
		thin_release_holder(cl->d, cl->holder, NULL);
	cl->fds = NULL;
	cl->n_fds = 0;
	cl->held = cl->opened = false;
}

static int chain_lower_open(chain_lower *cl, strata_error *err)
{
	strata_driver *d = cl->d;
	cl->fds = malloc((cl->n_names + cl->image->n + 1) * sizeof(int));
	if (!cl->fds)
		return -ENOMEM;
	for (size_t i = cl->n_names; i-- > 0;) {
		int fd = openat(d->store->diff_fd, cl->names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return error_set(err, negerrno(), "open %s/diff/%s", d->store->root, cl->names[i]);
		cl->fds[cl->n_fds++] = fd;
	}
	if (cl->image->n > 0 && d->thin.internal) {
		_cleanup_strv_free_ char **repos = NULL;
		size_t nr = 0;
		for (size_t i = 0; i < cl->image->n; i++)
			if (add_unique(&repos, &nr, cl->image->layers[i].repo) < 0)
				return -ENOMEM;
		_cleanup_close_ int tfd = -1;
		int r = driver_thin_dir(d, true, &tfd);
		if (r >= 0)
			r = thin_repos_acquire(&d->thin, tfd, cl->holder, repos, err);
		if (r < 0)
			return r;
		cl->held = true;
	}
	for (size_t i = cl->image->n; i-- > 0;) {
		_cleanup_free_ char *dir = NULL;
		int r = thin_resolve(&d->thin, &cl->image->layers[i], &dir, err);
		if (r < 0)
			return r;
		int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			return error_set(err, negerrno(), "open %s", dir);
		cl->fds[cl->n_fds++] = fd;
	}
	cl->opened = true;
	return 0;
}

static int chain_lower_list(void *data, const char *dir, char ***ret)
{
	chain_lower *cl = data;
	if (!cl->opened) {
		int r = chain_lower_open(cl, NULL);
		if (r < 0)
			return r;
	}
	return changes_merged_names(cl->fds, cl->n_fds, cl->d->aufs ? TAR_AUFS : 0, dir, ret, NULL);
}

/* The chain digest of img's layers (thin_lower.chain). */
static int chain_digest(const thin_image *img, char ret[THIN_DIGEST_LEN + 1])
{
	ret[0] = '\0';
	if (img->n == 0)
		return 0;
	_cleanup_close_ int fd = memfd_create("strata-chain", MFD_CLOEXEC);
	if (fd < 0)
		return negerrno();
	for (size_t i = 0; i < img->n; i++) {
		char line[THIN_DIGEST_LEN + 2];
		snprintf(line, sizeof(line), "%s\n", img->layers[i].digest);
		if (write(fd, line, THIN_DIGEST_LEN + 1) != THIN_DIGEST_LEN + 1)
			return -EIO;
	}
	return thin_digest_fd(fd, ret, NULL);
}

/* Publishes the store layers `names` (lowest first) with cfg into repo
 * and puts each on top of img, whose layers (a thin image's) are below
 * them.  `holder` names this publish for repository holds. */
static int publish_layers(strata_driver *d, const thin_config *cfg, const char *repo, char *const *names, size_t n,
			  const tar_opts *o, thin_image *img, const char *holder, strata_error *err)
{
	/* Published without progress reports: those are for the tar the
	 * caller reads. */
	tar_opts quiet = *o;
	quiet.progress = NULL;
	_cleanup_(thin_image_releasep) thin_image image = {0};
	int r = thin_image_copy(img, &image);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		_cleanup_close_ int tmp = -1;
		char digest[THIN_DIGEST_LEN + 1];
		uint64_t size = 0;
		r = export_layer(d, names[i], &quiet, &tmp, digest, &size, err);
		if (r < 0)
			return r;
		chain_lower cl = {.d = d, .names = names, .n_names = i, .image = &image};
		snprintf(cl.holder, sizeof(cl.holder), "%s@publish", holder);
		thin_lower lower = {.list = chain_lower_list, .data = &cl};
		r = chain_digest(img, lower.chain);
		if (r < 0)
			return error_set(err, r, "digest of the chain under layer %s", names[i]);
		thin_published pub;
		r = thin_publish(cfg, repo, tmp, digest, size, img->n > 0 ? &lower : NULL, &pub, err);
		chain_lower_release(&cl);
		if (r < 0)
			return error_prefix(err, r, "layer %s", names[i]);
		r = thin_image_push(img, digest, repo, pub.path);
		if (r == -EEXIST)
			continue; /* the same content is in the image already */
		if (r == -E2BIG)
			return error_setf(err, r, "the thin image would have more than %d layers", THIN_MAX_LAYERS);
		if (r < 0)
			return error_set(err, r, "add layer %s to the thin image", names[i]);
	}
	return 0;
}

int thin_publish_chain(strata_driver *d, const char *id, const chain_plan *plan, char *const *parents,
		       const tar_opts *o, thin_image *ret, strata_error *err)
{
	if (!d->thin.publisher)
		return error_setf(
			err, -EOPNOTSUPP,
			"the layer is on the thin image of layer %s: its diff is published to a repository, "
			"but no publisher is configured (driver option thin.publisher=dir:PATH or cmd:COMMAND)",
			plan->thin_id);
	const char *repo = d->thin.repo ? d->thin.repo : plan->image.layers[plan->image.n - 1].repo;
	/* Store layers between the image and this one, lowest first; Docker
	 * never puts a container's -init layer into an image. */
	_cleanup_free_ char **names = calloc(plan->n_store + 2, sizeof(char *));
	if (!names)
		return -ENOMEM;
	size_t n = 0;
	for (size_t k = plan->n_store; k-- > 0;)
		if (!is_init_layer(parents[k]))
			names[n++] = parents[k];
	names[n++] = (char *)id;
	_cleanup_(thin_image_releasep) thin_image img = {0};
	int r = thin_image_copy(&plan->image, &img);
	if (r < 0)
		return r;
	r = publish_layers(d, &d->thin, repo, names, n, o, &img, id, err);
	if (r < 0)
		return r;
	*ret = img;
	img = (thin_image){0};
	return 0;
}

int thin_commit(strata_driver *d, const char *id, int dfd, const chain_plan *plan, char *const *parents, int out_fd,
		const tar_opts *o, strata_error *err)
{
	_cleanup_(thin_image_releasep) thin_image img = {0};
	int r = thin_publish_chain(d, id, plan, parents, o, &img, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *text = NULL;
	if (thin_format(&img, &text) < 0)
		return -ENOMEM;
	/* The same layer always gives the same tar: the entry's mtime is the
	 * diff dir's. */
	struct stat st;
	if (fstat(dfd, &st) < 0)
		return error_set(err, negerrno(), "stat %s/diff/%s", d->store->root, id);
	tar_writer *w = NULL;
	r = tar_writer_new(out_fd, o, &w, err);
	if (r >= 0)
		r = tar_write_blob(w, THIN_FILE, text, strlen(text), 0644, st.st_mtim.tv_sec, err);
	if (r >= 0)
		r = tar_writer_finish(w, err);
	tar_writer_free(w);
	return r;
}

/* ---- the public thin API ---- */

static int thin_make(strata_driver *d, const char *id, const char *repo, const char *publisher, char **ret_json,
		     strata_error *err)
{
	if (!repo)
		return error_setf(err, -EINVAL, "no repository given");
	if (!strncmp(repo, THIN_URL_SCHEME, sizeof(THIN_URL_SCHEME) - 1))
		repo += sizeof(THIN_URL_SCHEME) - 1;
	size_t rl = strcspn(repo, "/");
	_cleanup_free_ char *repo_name = strndup(repo, rl);
	if (!repo_name)
		return -ENOMEM;
	if ((repo[rl] && repo[rl + 1]) || !thin_repo_valid(repo_name))
		return error_setf(err, -EINVAL, "repository \"%s\": expected NAME or cvmfs://NAME", QUOTE(repo));
	thin_config cfg = d->thin;
	if (publisher) {
		int r = thin_publisher_validate(publisher, err);
		if (r < 0)
			return r;
		cfg.publisher = (char *)publisher;
	}
	if (!cfg.publisher)
		return error_setf(err, -EINVAL, "no publisher given (--publisher, or driver option thin.publisher)");

	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	_cleanup_strv_free_ char **parents = NULL;
	int r = layer_lock(d, id, &lock, &parents, err);
	if (r < 0)
		return r;
	_cleanup_(chain_plan_release) chain_plan plan = {0};
	r = chain_plan_read(d, id, parents, &plan, err);
	if (r < 0)
		return r;
	_cleanup_(thin_image_releasep) thin_image img = {0};
	if (plan.self) /* thin already: its image as it is */
		return thin_format(&plan.image, ret_json) < 0 ? -ENOMEM : 0;
	if (plan.image.n > 0) {
		r = thin_image_copy(&plan.image, &img);
		if (r < 0)
			return r;
	}
	if (!img.version && !(img.version = strdup(THIN_VERSION)))
		return -ENOMEM;
	if (!img.comment && asprintf(&img.comment, "made by strata thin make from layer %s", id) < 0) {
		img.comment = NULL;
		return -ENOMEM;
	}
	/* The chain lowest first, down to the thin image if there is one. */
	_cleanup_free_ char **names = calloc(plan.n_store + 2, sizeof(char *));
	if (!names)
		return -ENOMEM;
	size_t n = 0;
	for (size_t k = plan.n_store; k-- > 0;)
		names[n++] = parents[k];
	names[n++] = (char *)id;
	tar_opts o = {.uids = &d->uids, .gids = &d->gids};
	r = publish_layers(d, &cfg, repo_name, names, n, &o, &img, id, err);
	if (r < 0)
		return r;
	return thin_format(&img, ret_json) < 0 ? -ENOMEM : 0;
}

int strata_thin_make(strata_driver *d, const char *id, const char *repo, const char *publisher, char **ret_json,
		     strata_error *err)
{
	error_clear(err);
	int r = thin_make(d, id, repo, publisher, ret_json, err);
	return r < 0 ? error_prefix(err, r, "thin make %s", QUOTE(id)) : 0;
}

void strata_thin_report_clear(strata_thin_report *rep)
{
	if (!rep)
		return;
	for (size_t i = 0; i < rep->n; i++) {
		free(rep->layers[i].digest);
		free(rep->layers[i].url);
		free(rep->layers[i].path);
		free(rep->layers[i].detail);
		free(rep->layers[i].note);
	}
	free(rep->layers);
	free(rep->json);
	*rep = (strata_thin_report){0};
}

/* sha256 of the tar strata makes of dir (as the publisher hashed it). */
static int digest_dir(strata_driver *d, const char *dir, char ret[THIN_DIGEST_LEN + 1], strata_error *err)
{
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return error_set(err, negerrno(), "open %s", dir);
	idmap none = {0};
	tar_opts o = {.uids = &none, .gids = &none};
	_cleanup_close_ int tmp = -1;
	int r = driver_tar_to_temp(d, dfd, &o, &tmp, err);
	if (r < 0)
		return error_prefix(err, r, "export %s", dir);
	r = thin_digest_fd(tmp, ret, NULL);
	return r < 0 ? error_set(err, r, "sha256 of %s", dir) : 0;
}

static int thin_inspect(strata_driver *d, const char *id, unsigned flags, strata_thin_report *ret, strata_error *err)
{
	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	_cleanup_strv_free_ char **parents = NULL;
	int r = layer_lock(d, id, &lock, &parents, err);
	if (r < 0)
		return r;
	_cleanup_(thin_image_releasep) thin_image img = {0};
	r = layer_thin_read(d, id, &img, err);
	if (r < 0)
		return r;
	if (r == 0)
		return error_setf(err, -EINVAL, "not a thin layer (its diff dir holds no " THIN_FILE ")");
	strata_thin_report rep = {0};
	_cleanup_(chain_plan_release) chain_plan plan = {.self = true};
	if (thin_format(&img, &rep.json) < 0 || !(rep.layers = calloc(img.n, sizeof(*rep.layers))))
		goto oom;
	rep.n = img.n;
	if (!(plan.thin_id = strdup(id)))
		goto oom;
	for (size_t i = 0; i < img.n; i++)
		if (add_unique(&plan.repos, &(size_t){strv_length(plan.repos)}, img.layers[i].repo) < 0)
			goto oom;
	char holder[STRATA_ID_MAX + sizeof("@inspect")];
	snprintf(holder, sizeof(holder), "%s@inspect", id);
	if (d->thin.internal) {
		_cleanup_close_ int fd = -1;
		r = driver_thin_dir(d, true, &fd);
		if (r < 0) {
			strata_thin_report_clear(&rep);
			return error_set(err, r, "mkdir %s/" THIN_DIR, d->store->root);
		}
		r = thin_repos_acquire(&d->thin, fd, holder, plan.repos, err);
		if (r < 0) {
			strata_thin_report_clear(&rep);
			return r;
		}
	}
	int bad = 0;
	for (size_t i = 0; i < img.n; i++) {
		const thin_layer *l = &img.layers[i];
		strata_thin_layer *out = &rep.layers[i];
		strata_error e = {0};
		if (!(out->digest = strdup(l->digest)) ||
		    asprintf(&out->url, THIN_URL_SCHEME "%s/%s", l->repo, l->path) < 0) {
			out->url = NULL;
			r = -ENOMEM;
			break;
		}
		out->status = thin_resolve(&d->thin, l, &out->path, &e);
		if (out->status == 0 && (flags & STRATA_THIN_VERIFY)) {
			/* Against the manifest recorded at publication; a layer
			 * published without one by its digest, as strata's tar
			 * of it (exact only where the filesystem keeps all). */
			char *problems = NULL;
			out->status = thin_verify_layer(out->path, &problems, &out->note, &e);
			if (out->status == -EBADMSG)
				error_setf(&e, -EBADMSG, "%s", problems);
			free(problems);
			char got[THIN_DIGEST_LEN + 1];
			if (out->status == -ENODATA && (out->status = digest_dir(d, out->path, got, &e)) == 0 &&
			    strcmp(got, l->digest) != 0)
				out->status = error_setf(&e, -EBADMSG,
							 "digest mismatch: the content of %s has sha256:%s, not the "
							 "published sha256:%s",
							 out->path, got, l->digest);
		}
		if (out->status == -ENOMEM) {
			r = -ENOMEM;
			break;
		}
		if (out->status < 0) {
			bad++;
			out->detail = strdup(e.message);
		}
	}
	if (d->thin.internal)
		thin_release_holder(d, holder, NULL);
	if (r < 0) {
		strata_thin_report_clear(&rep);
		return r;
	}
	*ret = rep;
	return bad;
oom:
	strata_thin_report_clear(&rep);
	return -ENOMEM;
}

int strata_thin_inspect(strata_driver *d, const char *id, unsigned flags, strata_thin_report *ret, strata_error *err)
{
	error_clear(err);
	int r = thin_inspect(d, id, flags, ret, err);
	return r < 0 ? error_prefix(err, r, "thin %s %s", (flags & STRATA_THIN_VERIFY) ? "verify" : "show", QUOTE(id))
		     : r;
}

static bool holder_mounted(const char *holder, void *data)
{
	strata_driver *d = data;
	return id_validate(holder, NULL) == 0 && fs_is_mount_point_at(d->store->mnt_fd, holder) > 0;
}

static bool holder_none(const char *holder, void *data)
{
	(void)holder;
	(void)data;
	return false;
}

int thin_prune(strata_driver *d, bool only_stale, strata_error *err)
{
	_cleanup_close_ int fd = -1;
	int r = driver_thin_dir(d, false, &fd);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return error_set(err, r, "open %s/" THIN_DIR, d->store->root);
	r = thin_repos_prune(&d->thin, fd, only_stale ? holder_mounted : holder_none, d, err);
	return r < 0 ? error_prefix(err, r, "thin repositories") : 0;
}

int thin_check_image(strata_driver *d, const char *id, const char *parent, char *const *grandparents, strata_error *err)
{
	_cleanup_(chain_plan_release) chain_plan plan = {0};
	int r = chain_plan_read(d, parent, grandparents, &plan, err);
	if (r < 0 || plan.image.n == 0)
		return r;
	plan.self = false;
	char holder[STRATA_ID_MAX + sizeof("@create")];
	snprintf(holder, sizeof(holder), "%s@create", id);
	r = chain_plan_acquire(d, holder, &plan, err);
	if (plan.acquired)
		thin_release_holder(d, holder, NULL);
	return r;
}
