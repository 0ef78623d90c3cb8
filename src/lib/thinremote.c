/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Thin layers made from what a repository already holds, without a tar:
 * containerd's remote snapshots.  When containerd is about to unpack a
 * layer that the thin root's repository has (published by `strata thin
 * make` into .layers/<hh>/<hex>/layerfs), the snapshotter makes a thin
 * layer pointing at it instead, and containerd skips the download.
 *
 * A thin layer's thin.json lists its whole image, so the new layer's image
 * is its parent's plus this one: only a thin parent (or none) qualifies.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "driver.h"
#include "thin/repo.h"
#include "thin/thin.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

static const char *repo_of(strata_driver *d, const char *repo)
{
	return repo && *repo ? repo : d->thin.repo;
}

/* "sha256:" + 64 lowercase hex digits. */
static bool digest_ok(const char *s, char hex[THIN_DIGEST_LEN + 1])
{
	return s && !strncmp(s, "sha256:", 7) && thin_digest_parse(s + 7, hex);
}

static void image_releasep(thin_image *img)
{
	thin_image_release(img);
}

static int create_thin(strata_driver *d, const char *id, const char *parent, const char *digest, const char *repo,
		       strata_error *err)
{
	char hex[THIN_DIGEST_LEN + 1];
	if (!digest_ok(digest, hex))
		return error_setf(err, -EINVAL, "\"%s\" is not a sha256 digest", QUOTE(digest));
	repo = repo_of(d, repo);
	if (!repo)
		return error_setf(err, -EINVAL, "no repository: set the driver option thin.repo");
	if (!d->thin.root)
		return error_setf(err, -EINVAL, "no thin root: set the driver option thin.root");
	_cleanup_(image_releasep) thin_image img = {0};
	if (parent && *parent) {
		int r = layer_thin_read(d, parent, &img, err);
		if (r < 0)
			return r;
		if (r == 0)
			return error_setf(err, -EINVAL, "parent %s is not a thin layer", parent);
	} else if (!(img.version = strdup("1.0"))) {
		return -ENOMEM;
	}
	char layout[THIN_LAYERFS_PATH_LEN + 1];
	thin_layerfs_path(hex, layout);
	int r = thin_image_push(&img, hex, repo, layout);
	if (r < 0)
		return error_setf(err, r, "add %s to the thin image of %s", digest,
				  parent && *parent ? parent : "none");
	/* Only what resolves now: otherwise containerd pulls the layer. */
	_cleanup_free_ char *dir = NULL;
	r = thin_resolve(&d->thin, &img.layers[img.n - 1], &dir, err);
	if (r < 0)
		return r;
	_cleanup_free_ char *text = NULL;
	r = thin_format(&img, &text);
	if (r < 0)
		return r;
	r = strata_create(d, id, parent, NULL, err);
	if (r < 0)
		return r;
	/* Between the create and the thin.json the layer is an empty one:
	 * the caller names it only once this returns. */
	_cleanup_lock_ id_lock lock = ID_LOCK_INIT;
	_cleanup_strv_free_ char **parents = NULL;
	r = layer_lock(d, id, &lock, &parents, err);
	_cleanup_close_ int fd =
		r >= 0 ? openat(d->store->diff_fd, id, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
	if (r >= 0 && fd < 0)
		r = error_set(err, negerrno(), "open %s/diff/%s", d->store->root, id);
	if (r >= 0 && (r = fs_write_atomic_at(fd, THIN_FILE, text, strlen(text), 0644, FS_WRITE_SYNC)) < 0)
		error_set(err, r, "write %s/diff/%s/" THIN_FILE, d->store->root, id);
	if (r >= 0)
		r = layer_check_thin(d, fd, err);
	if (r < 0) {
		lock_release(&lock);
		strata_remove(d, id, NULL);
		return r;
	}
	return 0;
}

int strata_create_thin(strata_driver *d, const char *id, const char *parent, const char *digest, const char *repo,
		       strata_error *err)
{
	error_clear(err);
	int r = create_thin(d, id, parent, digest, repo, err);
	return r < 0 ? error_prefix(err, r, "create thin %s", QUOTE(id)) : 0;
}

/* sha256(parent_chain + " " + "sha256:" + hex) as "sha256:<hex>". */
static int chain_of(const char *parent_chain, const char *hex, char ret[7 + THIN_DIGEST_LEN + 1])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
		 EVP_DigestUpdate(ctx, parent_chain, strlen(parent_chain)) == 1 &&
		 EVP_DigestUpdate(ctx, " sha256:", 8) == 1 && EVP_DigestUpdate(ctx, hex, THIN_DIGEST_LEN) == 1 &&
		 EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 32;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return -ENOMEM;
	memcpy(ret, "sha256:", 7);
	for (size_t i = 0; i < 32; i++)
		snprintf(ret + 7 + 2 * i, 3, "%02x", md[i]);
	return 0;
}

int strata_chain_id(const char *parent_chain, const char *digest, char ret[STRATA_DIGEST_MAX])
{
	char hex[THIN_DIGEST_LEN + 1];
	if (!digest_ok(digest, hex))
		return -EINVAL;
	if (!parent_chain || !*parent_chain) {
		snprintf(ret, STRATA_DIGEST_MAX, "sha256:%s", hex);
		return 0;
	}
	if (!digest_ok(parent_chain, (char[THIN_DIGEST_LEN + 1]){0}))
		return -EINVAL;
	return chain_of(parent_chain, hex, ret);
}

static int find_by_chain(strata_driver *d, const char *repo, const char *parent_chain, const char *chain_id,
			 char *ret_digest, strata_error *err)
{
	char want[THIN_DIGEST_LEN + 1];
	if (!digest_ok(chain_id, want))
		return error_setf(err, -EINVAL, "\"%s\" is not a sha256 chain id", QUOTE(chain_id));
	if (parent_chain && *parent_chain && !digest_ok(parent_chain, (char[THIN_DIGEST_LEN + 1]){0}))
		return error_setf(err, -EINVAL, "\"%s\" is not a sha256 chain id", QUOTE(parent_chain));
	repo = repo_of(d, repo);
	if (!repo || !d->thin.root)
		return -ENOENT;
	_cleanup_free_ char *layers = NULL;
	if (asprintf(&layers, "%s/%s/" THIN_LAYERS_DIR, d->thin.root, repo) < 0)
		return -ENOMEM;
	/* A base layer's chain id is its digest. */
	if (!parent_chain || !*parent_chain) {
		char layout[THIN_LAYERFS_PATH_LEN + 1];
		thin_layerfs_path(want, layout);
		_cleanup_free_ char *path = NULL;
		if (asprintf(&path, "%s/%s/%s", d->thin.root, repo, layout) < 0)
			return -ENOMEM;
		if (access(path, F_OK) < 0)
			return errno == ENOENT || errno == ENOTDIR ? -ENOENT
								   : error_set(err, negerrno(), "stat %s", path);
		snprintf(ret_digest, 7 + THIN_DIGEST_LEN + 1, "sha256:%s", want);
		return 0;
	}
	/* Otherwise every digest the repository holds, over the parent. */
	_cleanup_close_ int lfd = open(layers, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (lfd < 0)
		return errno == ENOENT || errno == ENOTDIR ? -ENOENT : error_set(err, negerrno(), "open %s", layers);
	_cleanup_strv_free_ char **prefixes = NULL;
	int r = fs_list_dir(lfd, &prefixes);
	if (r < 0)
		return error_set(err, r, "read %s", layers);
	for (char **p = prefixes; *p; p++) {
		if (strlen(*p) != 2)
			continue;
		_cleanup_close_ int hfd = openat(lfd, *p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		_cleanup_strv_free_ char **digests = NULL;
		if (hfd < 0 || fs_list_dir(hfd, &digests) < 0)
			continue;
		for (char **h = digests; *h; h++) {
			char hex[THIN_DIGEST_LEN + 1], chain[7 + THIN_DIGEST_LEN + 1];
			if (!thin_digest_parse(*h, hex) || strncmp(hex, *p, 2) != 0)
				continue;
			r = chain_of(parent_chain, hex, chain);
			if (r < 0)
				return r;
			if (strcmp(chain + 7, want) != 0)
				continue;
			char name[THIN_DIGEST_LEN + sizeof("/" THIN_LAYERFS)];
			snprintf(name, sizeof(name), "%s/" THIN_LAYERFS, hex);
			if (faccessat(hfd, name, F_OK, 0) < 0)
				continue;
			snprintf(ret_digest, 7 + THIN_DIGEST_LEN + 1, "sha256:%s", hex);
			return 0;
		}
	}
	return -ENOENT;
}

int strata_thin_find_chain(strata_driver *d, const char *repo, const char *parent_chain, const char *chain_id,
			   char ret_digest[STRATA_DIGEST_MAX], strata_error *err)
{
	error_clear(err);
	int r = find_by_chain(d, repo, parent_chain, chain_id, ret_digest, err);
	return r < 0 && r != -ENOENT ? error_prefix(err, r, "find chain %s", QUOTE(chain_id)) : r;
}
