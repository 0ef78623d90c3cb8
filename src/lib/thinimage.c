/* SPDX-License-Identifier: Apache-2.0 */
/*
 * strata thin make --from IMAGE: a thin image made from an image archive
 * or layout, without Docker (what CernVM-FS's DUCC does for
 * unpacked.cern.ch), and a docker save archive of it that `docker load`
 * takes.
 *
 * Two passes over the layers.  The first only decompresses and hashes:
 * every blob against its digest, every tar against its diff_id, so that an
 * archive that is not whole and right publishes nothing.  The second
 * decompresses each layer again, base first, into an unnamed temp file in
 * the store root, hashes that file (what is published is what was
 * checked, even if the archive changed meanwhile), publishes it and adds
 * its names to the index of the layers below the next one.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>

#include "driver.h"
#include "thin/image.h"
#include "thin/index.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

static void image_releasep(image *img)
{
	image_release(img);
}

static void thin_image_releasep(thin_image *img)
{
	thin_image_release(img);
}

static void lower_index_freep(lower_index **x)
{
	lower_index_free(*x);
}

static void strbuf_releasep(strbuf *sb)
{
	strbuf_release(sb);
}

/* "NAME" or "cvmfs://NAME" into NAME (as strata thin make takes it). */
static int repo_name(const char *repo, char **ret, strata_error *err)
{
	if (!repo)
		return error_setf(err, -EINVAL, "no repository given (--repo, or driver option thin.repo)");
	const char *name = repo;
	if (!strncmp(name, THIN_URL_SCHEME, sizeof(THIN_URL_SCHEME) - 1))
		name += sizeof(THIN_URL_SCHEME) - 1;
	size_t len = strcspn(name, "/");
	_cleanup_free_ char *r = strndup(name, len);
	if (!r)
		return -ENOMEM;
	if ((name[len] && name[len + 1]) || !thin_repo_valid(r))
		return error_setf(err, -EINVAL, "repository \"%s\": expected NAME or cvmfs://NAME", QUOTE(repo));
	*ret = TAKE_PTR(r);
	return 0;
}

/* The last component of a path, for messages ("img/" is "img"). */
static char *base_name(const char *path)
{
	size_t len = strlen(path);
	while (len > 1 && path[len - 1] == '/')
		len--;
	const char *start = memrchr(path, '/', len);
	start = start && len > 1 ? start + 1 : path;
	return strndup(start, len - (size_t)(start - path));
}

/* The config's "created" in seconds, or 0: the fixed mtime of what the
 * loadable image holds, so the same input gives the same bytes. */
static time_t created_time(json_t *config)
{
	const char *s = json_string_value(json_object_get(config, "created"));
	struct tm tm = {0};
	if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
			 &tm.tm_sec) != 6)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	time_t t = timegm(&tm);
	return t < 0 ? 0 : t;
}

/* ---- the loadable image ---- */

static struct archive *ustar_writer(void)
{
	struct archive *a = archive_write_new();
	if (a && (archive_write_set_format_ustar(a) != ARCHIVE_OK || archive_write_add_filter_none(a) != ARCHIVE_OK ||
		  archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK)) {
		archive_write_free(a);
		a = NULL;
	}
	return a;
}

/* One file, owned by 0:0, at a fixed mtime. */
static int put_file(struct archive *a, const char *name, const void *data, size_t len, time_t mtime)
{
	struct archive_entry *e = archive_entry_new();
	if (!e)
		return -ENOMEM;
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	archive_entry_set_size(e, (la_int64_t)len);
	archive_entry_set_mtime(e, mtime, 0);
	int r = archive_write_header(a, e) == ARCHIVE_OK ? 0 : -EIO;
	archive_entry_free(e);
	if (r == 0 && len > 0 && archive_write_data(a, data, len) != (la_ssize_t)len)
		r = -EIO;
	return r;
}

/* The thin layer: a tar holding only thin.json. */
static int layer_tar(const char *json, time_t mtime, char **ret, size_t *ret_len)
{
	size_t len = strlen(json), size = len + 4096;
	_cleanup_free_ char *buf = malloc(size);
	struct archive *a = ustar_writer();
	size_t used = 0;
	int r = buf && a ? 0 : -ENOMEM;
	if (r == 0 && archive_write_open_memory(a, buf, size, &used) != ARCHIVE_OK)
		r = -EIO;
	if (r == 0)
		r = put_file(a, THIN_FILE, json, len, mtime);
	if (r == 0 && archive_write_close(a) != ARCHIVE_OK)
		r = -EIO;
	archive_write_free(a);
	if (r < 0)
		return r;
	*ret = TAKE_PTR(buf);
	*ret_len = used;
	return 0;
}

static char *dump(json_t *j)
{
	return j ? json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
}

/*
 * A docker save archive (the classic layout) of the thin image: its one
 * layer holds thin.json; its config is the original's with rootfs and
 * history made the thin image's, so Env, Entrypoint, Cmd, WorkingDir,
 * User, Labels, ports, volumes and the platform stay.
 */
static int write_loadable(const image *img, const char *json, const char *repo, char *const *tags, int fd,
			  strata_error *err)
{
	time_t mtime = created_time(img->config);
	_cleanup_free_ char *tar = NULL, *config_text = NULL, *manifest_text = NULL, *repos_text = NULL;
	_cleanup_free_ char *created_by = NULL;
	size_t tar_len = 0;
	char tar_digest[THIN_DIGEST_LEN + 1], config_digest[THIN_DIGEST_LEN + 1];
	int r = layer_tar(json, mtime, &tar, &tar_len);
	if (r >= 0)
		r = image_sha256(tar, tar_len, tar_digest);
	if (r < 0)
		return error_set(err, r, "make the thin layer tar");

	json_t *config = json_deep_copy(img->config);
	/* Docker's record of the container that built the last step: there
	 * is none for this image. */
	json_object_del(config, "container");
	json_object_del(config, "container_config");
	json_t *created = json_object_get(img->config, "created");
	char diff_id[sizeof("sha256:") + THIN_DIGEST_LEN];
	snprintf(diff_id, sizeof(diff_id), "sha256:%s", tar_digest);
	if (asprintf(&created_by, "strata thin make --from: a thin image of %s, its %zu layers in repository %s",
		     img->ref, img->n_layers, repo) < 0)
		created_by = NULL;
	json_t *history = json_pack("[{s:s, s:s}]", "created_by", created_by ? created_by : "", "comment",
				    "thin.json lists the layers; their files are on the shared filesystem");
	if (history && created)
		json_object_set(json_array_get(history, 0), "created", created);
	if (!config || !created_by || !history ||
	    json_object_set_new(config, "rootfs", json_pack("{s:s, s:[s]}", "type", "layers", "diff_ids", diff_id)) <
		    0 ||
	    json_object_set_new(config, "history", history) < 0 || !(config_text = dump(config))) {
		json_decref(config);
		return -ENOMEM;
	}
	json_decref(config);
	r = image_sha256(config_text, strlen(config_text), config_digest);
	if (r < 0)
		return r;

	char config_name[THIN_DIGEST_LEN + sizeof(".json")], layer_name[THIN_DIGEST_LEN + sizeof("/layer.tar")];
	snprintf(config_name, sizeof(config_name), "%s.json", config_digest);
	snprintf(layer_name, sizeof(layer_name), "%s/layer.tar", tar_digest);
	json_t *repo_tags = json_array(), *repositories = json_object();
	for (size_t i = 0; repo_tags && repositories && tags && tags[i]; i++) {
		const char *colon = strrchr(tags[i], ':');
		_cleanup_free_ char *name = strndup(tags[i], (size_t)(colon - tags[i]));
		json_t *entry = name ? json_object_get(repositories, name) : NULL;
		if (!name || json_array_append_new(repo_tags, json_string(tags[i])) < 0 ||
		    (!entry && json_object_set_new(repositories, name, entry = json_object()) < 0) ||
		    json_object_set_new(entry, colon + 1, json_string(tar_digest)) < 0) {
			json_decref(repo_tags);
			json_decref(repositories);
			return -ENOMEM;
		}
	}
	json_t *manifest = repo_tags ? json_pack("[{s:s, s:o, s:[s]}]", "Config", config_name, "RepoTags", repo_tags,
						 "Layers", layer_name)
				     : NULL;
	manifest_text = dump(manifest);
	repos_text = dump(repositories);
	json_decref(manifest);
	json_decref(repositories);
	if (!manifest_text || !repos_text)
		return -ENOMEM;

	struct archive *a = ustar_writer();
	if (!a)
		return -ENOMEM;
	r = archive_write_open_fd(a, fd) == ARCHIVE_OK ? 0 : -EIO;
	if (r == 0)
		r = put_file(a, layer_name, tar, tar_len, mtime);
	if (r == 0)
		r = put_file(a, config_name, config_text, strlen(config_text), mtime);
	if (r == 0)
		r = put_file(a, "manifest.json", manifest_text, strlen(manifest_text), mtime);
	if (r == 0)
		r = put_file(a, "repositories", repos_text, strlen(repos_text), mtime);
	if (r == 0 && archive_write_close(a) != ARCHIVE_OK)
		r = -EIO;
	if (r < 0) {
		int e = archive_errno(a);
		r = error_setf(err, e > 0 ? -e : r, "write the loadable image: %s",
			       archive_error_string(a) ? archive_error_string(a) : strerror(e > 0 ? e : EIO));
	}
	archive_write_free(a);
	return r;
}

/* ---- publishing ---- */

static int check_layers(image *img, uint64_t *sizes, strata_error *err)
{
	_cleanup_free_ char(*digests)[THIN_DIGEST_LEN + 1] = calloc(img->n_layers + 1, sizeof(*digests));
	if (!digests)
		return -ENOMEM;
	for (size_t i = 0; i < img->n_layers; i++) {
		/* A blob the image lists again is read once: an archive of a
		 * few KiB could otherwise have one decompression bomb hashed
		 * 500 times. */
		size_t j = 0;
		while (j < i && strcmp(img->layers[j].name, img->layers[i].name) != 0)
			j++;
		int r = 0;
		if (j < i) {
			memcpy(digests[i], digests[j], sizeof(digests[i]));
			sizes[i] = sizes[j];
		} else {
			r = image_layer_read(img, i, -1, digests[i], &sizes[i], err);
		}
		if (r < 0)
			return error_prefix(err, r, "layer %zu/%zu", i + 1, img->n_layers);
		if (strcmp(digests[i], img->layers[i].diff_id) != 0)
			return error_setf(
				err, -EBADMSG,
				"layer %zu/%zu (%s): its tar has sha256:%s, the config's diff_id says sha256:%s", i + 1,
				img->n_layers, img->layers[i].name, digests[i], img->layers[i].diff_id);
	}
	return 0;
}

typedef struct publish_ctx {
	strata_driver *d;
	const thin_config *cfg;
	const char *repo;
	const strata_thin_make_options *o;
	image *img;
	thin_image *out;
	lower_index *index;
	strbuf *chain;	  /* the digests published so far, each "hex\n" */
	size_t *layer_of; /* out's layer k is the image's layer layer_of[k] (0-based) */
	size_t *entries;  /* entries of each of the image's layers */
} publish_ctx;

static void report(const publish_ctx *p, size_t i, const char *digest, uint64_t size, const char *path, bool existed,
		   size_t duplicate)
{
	if (!p->o->progress)
		return;
	strata_thin_make_progress pr = {.index = i + 1,
					.total = p->img->n_layers,
					.digest = digest,
					.size = size,
					.path = path,
					.existed = existed,
					.duplicate = duplicate};
	p->o->progress(&pr, p->o->progress_data);
}

static int publish_one(publish_ctx *p, size_t i, strata_error *err)
{
	const image_layer *l = &p->img->layers[i];
	size_t n = p->img->n_layers;
	/* thin.json lists a digest once: a layer the image has lower down
	 * already is left out, as strata thin make does. */
	for (size_t k = 0; k < p->out->n; k++) {
		if (strcmp(p->out->layers[k].digest, l->diff_id) != 0)
			continue;
		size_t j = p->layer_of[k];
		if (p->entries[j] > 0)
			thin_log(p->cfg, 1,
				 "layer %zu/%zu (sha256:%s) is layer %zu again: a thin image lists each layer once, so "
				 "its %zu entries are not applied again over layers %zu to %zu",
				 i + 1, n, l->diff_id, j + 1, p->entries[j], j + 2, i);
		p->entries[i] = p->entries[j];
		report(p, i, l->diff_id, 0, NULL, true, j + 1);
		return 0;
	}
	_cleanup_close_ int tmp = openat(p->d->store->root_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (tmp < 0)
		return error_set(err, negerrno(), "create a temp file in %s", p->d->store->root);
	char digest[THIN_DIGEST_LEN + 1];
	uint64_t size = 0;
	int r = image_layer_read(p->img, i, tmp, digest, &size, err);
	if (r < 0)
		return r;
	r = thin_digest_fd(tmp, digest, &size);
	if (r < 0)
		return error_set(err, r, "sha256 of layer %zu", i + 1);
	if (strcmp(digest, l->diff_id) != 0)
		return error_setf(err, -EBADMSG,
				  "%s: its tar has sha256:%s now, not the sha256:%s of the check (the archive changed)",
				  l->name, digest, l->diff_id);
	thin_lower lower = {.list = p->out->n ? lower_index_list : NULL, .data = p->index};
	if (p->out->n && image_sha256(p->chain->buf, p->chain->len, lower.chain) < 0)
		return -EIO;
	thin_published pub;
	r = thin_publish(p->cfg, p->repo, tmp, digest, size, &lower, &pub, err);
	if (r < 0)
		return r;
	r = lower_index_add_tar(p->index, tmp, &p->entries[i], err);
	if (r < 0)
		return error_prefix(err, r, "index %s", l->name);
	r = thin_image_push(p->out, digest, p->repo, pub.path);
	if (r == -E2BIG)
		return error_setf(err, r, "the thin image would have more than %d layers", THIN_MAX_LAYERS);
	if (r < 0)
		return error_set(err, r, "add layer sha256:%s to the thin image", digest);
	p->layer_of[p->out->n - 1] = i;
	if (strbuf_appendf(p->chain, "%s\n", digest) < 0)
		return -ENOMEM;
	report(p, i, digest, size, pub.path, pub.existed, 0);
	return 0;
}

static int thin_make_from(strata_driver *d, const char *path, const strata_thin_make_options *o, char **ret_json,
			  strata_error *err)
{
	_cleanup_free_ char *repo = NULL, *tag = NULL, *label = NULL;
	int r = repo_name(o->repo ? o->repo : d->thin.repo, &repo, err);
	if (r < 0)
		return r;
	thin_config cfg = d->thin;
	if (o->publisher) {
		r = thin_publisher_validate(o->publisher, err);
		if (r < 0)
			return r;
		cfg.publisher = (char *)o->publisher;
	}
	if (!cfg.publisher)
		return error_setf(err, -EINVAL, "no publisher given (--publisher, or driver option thin.publisher)");
	if (o->tag) {
		const char *slash = strrchr(o->tag, '/');
		if (asprintf(&tag, "%s%s", o->tag, strchr(slash ? slash : o->tag, ':') ? "" : ":latest") < 0) {
			tag = NULL;
			return -ENOMEM;
		}
		if (!image_ref_valid(tag))
			return error_setf(err, -EINVAL, "tag \"%s\": not a docker reference NAME:TAG", QUOTE(o->tag));
	}
	if (!(label = base_name(path)))
		return -ENOMEM;

	_cleanup_(image_releasep) image img = {0};
	r = image_open(path, d->store->root_fd, o->tag, &img, err);
	if (r < 0)
		return r;
	_cleanup_free_ uint64_t *sizes = calloc(img.n_layers + 1, sizeof(*sizes));
	_cleanup_free_ size_t *layer_of = calloc(img.n_layers + 1, sizeof(*layer_of));
	_cleanup_free_ size_t *entries = calloc(img.n_layers + 1, sizeof(*entries));
	if (!sizes || !layer_of || !entries)
		return -ENOMEM;
	r = check_layers(&img, sizes, err);
	if (r < 0)
		return r;
	thin_log(&cfg, 0, "%s: %s %s, %zu layers, checked", QUOTE(label), img.format, QUOTE(img.ref), img.n_layers);

	_cleanup_(thin_image_releasep) thin_image out = {0};
	_cleanup_(lower_index_freep) lower_index *index = NULL;
	_cleanup_(strbuf_releasep) strbuf chain = {0};
	if (!(out.version = strdup(THIN_VERSION)) ||
	    /* Quoted: a file name need not be UTF-8, thin.json must be. */
	    asprintf(&out.origin, "strata thin make --from %s (%s %s)", QUOTE(label), img.format, QUOTE(img.ref)) < 0) {
		out.origin = NULL;
		return -ENOMEM;
	}
	r = lower_index_new(&index);
	if (r < 0)
		return r;
	publish_ctx p = {.d = d,
			 .cfg = &cfg,
			 .repo = repo,
			 .o = o,
			 .img = &img,
			 .out = &out,
			 .index = index,
			 .chain = &chain,
			 .layer_of = layer_of,
			 .entries = entries};
	for (size_t i = 0; r >= 0 && i < img.n_layers; i++) {
		r = publish_one(&p, i, err);
		if (r < 0)
			error_prefix(err, r, "layer %zu/%zu sha256:%s", i + 1, img.n_layers, img.layers[i].diff_id);
	}
	if (r < 0)
		return r;
	_cleanup_free_ char *json = NULL;
	if (thin_format(&out, &json) < 0)
		return -ENOMEM;
	if (o->out_fd >= 0) {
		char *const *tags = img.tags;
		char *one[] = {tag, NULL};
		r = write_loadable(&img, json, repo, tag ? one : tags, o->out_fd, err);
		if (r < 0)
			return r;
	}
	*ret_json = TAKE_PTR(json);
	return 0;
}

int strata_thin_make_from(strata_driver *d, const char *path, const strata_thin_make_options *o, char **ret_json,
			  strata_error *err)
{
	error_clear(err);
	strata_thin_make_options none = {.out_fd = -1};
	int r = thin_make_from(d, path, o ? o : &none, ret_json, err);
	return r < 0 ? error_prefix(err, r, "thin make --from %s", QUOTE(path)) : 0;
}
