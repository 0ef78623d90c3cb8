/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Publishing a layer into a repository (see repo.h).
 *
 * dir: the layer is extracted into <PATH>/.layers/.incoming-<rand>/layerfs
 * with the same hostile-input rules as any apply, its record written
 * beside it, everything synced, and only then is the staging dir renamed
 * to <PATH>/.layers/<hh>/<hex>: a reader of the repository sees a
 * complete layer or none.  Content-addressed: a layer already there is
 * the same layer, and is kept.
 */
#include <archive.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "tar/tar.h"
#include "thin/convert.h"
#include "thin/cvmfs.h"
#include "thin/repo.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

int thin_digest_fd(int fd, char ret[THIN_DIGEST_LEN + 1], uint64_t *ret_size)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx)
		return -ENOMEM;
	int r = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 ? 0 : -EIO;
	_cleanup_free_ char *buf = malloc(1 << 20);
	if (!buf)
		r = -ENOMEM;
	uint64_t size = 0;
	for (off_t off = 0; r == 0;) {
		ssize_t n = pread(fd, buf, 1 << 20, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			r = negerrno();
		else if (n == 0)
			break;
		else if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
			r = -EIO;
		else {
			off += n;
			size += (uint64_t)n;
		}
	}
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	if (r == 0 && (EVP_DigestFinal_ex(ctx, md, &len) != 1 || len != THIN_DIGEST_LEN / 2))
		r = -EIO;
	EVP_MD_CTX_free(ctx);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < len; i++)
		snprintf(ret + 2 * i, 3, "%02x", md[i]);
	if (ret_size)
		*ret_size = size;
	return 0;
}

static int mkdir_p_at(int dirfd, const char *name, int *ret_fd)
{
	int r = fs_mkdir_at(dirfd, name, 0755);
	if (r < 0 && r != -EEXIST)
		return r;
	*ret_fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return *ret_fd < 0 ? negerrno() : 0;
}

/* The record beside layerfs: what was published, with the manifest
 * `thin verify` compares the layer with. */
static int write_record(int dirfd, int tar_fd, const char *digest, uint64_t tar_size, strata_error *err)
{
	repo_record rec = {.digest = digest, .tar_size = tar_size};
	repo_form form = {0};
	int r = repo_form_make(tar_fd, NULL, 0, -1, NULL, &form, err);
	_cleanup_free_ char *text = NULL;
	if (r >= 0)
		r = repo_record_text(&rec, &form, &text);
	repo_form_release(&form);
	if (r >= 0)
		r = fs_write_atomic_at(dirfd, THIN_RECORD, text, strlen(text), 0644, 0);
	return r;
}

static int publish_dir(const char *path, const char *repo, int tar_fd, const char *digest, uint64_t tar_size,
		       strata_error *err)
{
	_cleanup_close_ int repo_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (repo_fd < 0)
		return error_set(err, negerrno(), "open repository dir %s", path);
	_cleanup_close_ int layers_fd = -1, hh_fd = -1;
	int r = mkdir_p_at(repo_fd, THIN_LAYERS_DIR, &layers_fd);
	if (r < 0)
		return error_set(err, r, "mkdir %s/" THIN_LAYERS_DIR, path);
	char hh[3] = {digest[0], digest[1], '\0'};
	r = mkdir_p_at(layers_fd, hh, &hh_fd);
	if (r < 0)
		return error_set(err, r, "mkdir %s/" THIN_LAYERS_DIR "/%s", path, hh);
	if (faccessat(hh_fd, digest, F_OK, AT_SYMLINK_NOFOLLOW) == 0)
		return 0; /* content-addressed: already published */

	char rnd[8], stage[32];
	r = fs_random_name(rnd, sizeof(rnd));
	if (r < 0)
		return error_set(err, r, "getrandom");
	snprintf(stage, sizeof(stage), ".incoming-%.8s", rnd);
	if (mkdirat(layers_fd, stage, 0755) < 0)
		return error_set(err, negerrno(), "mkdir %s/" THIN_LAYERS_DIR "/%s", path, stage);
	_cleanup_close_ int stage_fd = openat(layers_fd, stage, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	_cleanup_close_ int fs_fd = -1;
	struct archive *a = NULL;
	uint64_t size = 0;
	/* Identity maps: a repository holds container ids, whoever reads it. */
	idmap none = {0};
	tar_opts o = {.uids = &none, .gids = &none};
	if (stage_fd < 0) {
		r = error_set(err, negerrno(), "open %s/" THIN_LAYERS_DIR "/%s", path, stage);
		goto fail;
	}
	r = mkdir_p_at(stage_fd, THIN_LAYERFS, &fs_fd);
	if (r < 0) {
		error_set(err, r, "mkdir %s/" THIN_LAYERS_DIR "/%s/" THIN_LAYERFS, path, stage);
		goto fail;
	}
	if (lseek(tar_fd, 0, SEEK_SET) < 0) {
		r = error_set(err, negerrno(), "rewind the layer tar");
		goto fail;
	}
	r = tar_reader_open_fd(tar_fd, &a, err);
	if (r < 0)
		goto fail;
	r = tar_extract(a, tar_fd, 0, fs_fd, &o, &size, err);
	archive_read_free(a);
	if (r < 0) {
		error_prefix(err, r, "extract into %s/" THIN_LAYERS_DIR "/%s", path, stage);
		goto fail;
	}
	r = write_record(stage_fd, tar_fd, digest, tar_size, err);
	if (r < 0) {
		error_prefix(err, r, "write %s/" THIN_LAYERS_DIR "/%s/" THIN_RECORD, path, stage);
		goto fail;
	}
	if (syncfs(stage_fd) < 0) {
		r = error_set(err, negerrno(), "sync %s", path);
		goto fail;
	}
	if (renameat(layers_fd, stage, hh_fd, digest) < 0) {
		r = negerrno();
		if (r == -EEXIST || r == -ENOTEMPTY) { /* another publisher was first */
			fs_rm_tree_at(layers_fd, stage, NULL);
			return 0;
		}
		error_set(err, r, "rename %s/" THIN_LAYERS_DIR "/%s to %s/%s", path, stage, hh, digest);
		goto fail;
	}
	r = fs_fsync_dir(hh_fd);
	if (r < 0)
		return error_set(err, r, "fsync %s/" THIN_LAYERS_DIR "/%s", path, hh);
	(void)repo;
	return 0;
fail:
	fs_rm_tree_at(layers_fd, stage, NULL);
	return r;
}

static int publish_cmd(const thin_config *c, const char *cmd, const char *repo, int tar_fd, const char *digest,
		       uint64_t tar_size, strata_error *err)
{
	char layout[THIN_LAYERFS_PATH_LEN + 1];
	thin_layerfs_path(digest, layout);
	_cleanup_free_ char *e_repo = NULL, *e_digest = NULL, *e_path = NULL, *e_size = NULL;
	if (asprintf(&e_repo, "STRATA_REPO=%s", repo) < 0 || asprintf(&e_digest, "STRATA_DIGEST=%s", digest) < 0 ||
	    asprintf(&e_path, "STRATA_LAYER_PATH=%s", layout) < 0 ||
	    asprintf(&e_size, "STRATA_TAR_SIZE=%llu", (unsigned long long)tar_size) < 0)
		return -ENOMEM;
	const char *env[] = {e_repo, e_digest, e_path, e_size, NULL};
	if (lseek(tar_fd, 0, SEEK_SET) < 0)
		return error_set(err, negerrno(), "rewind the layer tar");
	return thin_run(cmd, env, tar_fd, c->timeout_s, err);
}

int thin_publish(const thin_config *c, const char *repo, int tar_fd, const char *digest, uint64_t tar_size,
		 const thin_lower *lower, thin_published *ret, strata_error *err)
{
	if (!c->publisher)
		return error_setf(err, -EOPNOTSUPP,
				  "no publisher is configured (driver option thin.publisher=dir:PATH or cmd:COMMAND)");
	*ret = (thin_published){0};
	thin_layerfs_path(digest, ret->path);
	int r;
	/* Content-addressed: a layer the repository has is not published
	 * again, whichever publisher made it: at its digest's place, or at
	 * the place of its copy flattened over exactly these layers below
	 * (what the cvmfs publisher makes of a layer with opaque dirs), which
	 * is as right here.  (The cvmfs publisher itself looks once it knows
	 * which of the two it would make.) */
	char chained[THIN_PUBLISHED_PATH_MAX];
	snprintf(chained, sizeof(chained), THIN_LAYERS_DIR "/%.2s/%s-%.16s/" THIN_LAYERFS, digest, digest,
		 lower ? lower->chain : "");
	if (!strcmp(c->publisher, "cvmfs"))
		r = cvmfs_publish(c, repo, tar_fd, digest, tar_size, lower, ret, err);
	else if (thin_published_at(c, repo, ret->path, digest) > 0)
		return (ret->existed = true), 0;
	else if (lower && *lower->chain && thin_published_at(c, repo, chained, digest) > 0) {
		snprintf(ret->path, sizeof(ret->path), "%s", chained);
		return (ret->existed = true), 0;
	} else if (!strncmp(c->publisher, "dir:", 4))
		r = publish_dir(c->publisher + 4, repo, tar_fd, digest, tar_size, err);
	else
		r = publish_cmd(c, c->publisher + 4, repo, tar_fd, digest, tar_size, err);
	return r < 0 ? error_prefix(err, r, "publish layer sha256:%s to repository %s with %s", digest, repo,
				    c->publisher)
		     : 0;
}
