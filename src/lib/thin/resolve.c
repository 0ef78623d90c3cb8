/* SPDX-License-Identifier: Apache-2.0 */
/* Finding a thin layer's directory under the thin root (see repo.h). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "thin/repo.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/macro.h"

/* 1 if path is a directory, 0 if it is missing or something else. */
static int is_dir(const char *path)
{
	struct stat st;
	if (stat(path, &st) < 0)
		return errno == ENOENT || errno == ENOTDIR ? 0 : negerrno();
	return S_ISDIR(st.st_mode) ? 1 : 0;
}

/*
 * Records already found to name their digest, by the record file's identity
 * (device, inode, size, change time): a record also lists what the layer
 * holds, a few MB for a big image, and a daemon resolves the same layers at
 * every container start.  A record written anew has another identity.  The
 * set is the process's, bounded, and forgotten whole when full.
 */
#define RECORD_CACHE_MAX 4096

typedef struct record_key {
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec ctime;
	char digest[THIN_DIGEST_LEN + 1];
} record_key;

static pthread_mutex_t record_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static record_key *record_cache;
static size_t record_cache_n;

static bool record_key_of(const char *record, const char *digest, record_key *ret)
{
	struct stat st;
	if (stat(record, &st) < 0)
		return false;
	/* Compared with memcmp: the padding zeroed too. */
	memset(ret, 0, sizeof(*ret));
	ret->dev = st.st_dev;
	ret->ino = st.st_ino;
	ret->size = st.st_size;
	ret->ctime = st.st_ctim;
	memcpy(ret->digest, digest, THIN_DIGEST_LEN + 1);
	return true;
}

static bool record_cached(const record_key *k)
{
	bool found = false;
	pthread_mutex_lock(&record_cache_lock);
	for (size_t i = 0; i < record_cache_n && !found; i++)
		found = !memcmp(&record_cache[i], k, sizeof(*k));
	pthread_mutex_unlock(&record_cache_lock);
	return found;
}

static void record_remember(const record_key *k)
{
	pthread_mutex_lock(&record_cache_lock);
	if (!record_cache)
		record_cache = calloc(RECORD_CACHE_MAX, sizeof(*record_cache));
	if (record_cache) {
		if (record_cache_n == RECORD_CACHE_MAX)
			record_cache_n = 0;
		record_cache[record_cache_n++] = *k;
	}
	pthread_mutex_unlock(&record_cache_lock);
}

/* The record our publisher leaves beside layerfs, if there is one: the
 * digest it published there must be the one asked for. */
static int check_record(const char *dir, const thin_layer *l, strata_error *err)
{
	size_t n = strlen(dir);
	if (n < sizeof(THIN_LAYERFS) || strcmp(dir + n - (sizeof(THIN_LAYERFS) - 1), THIN_LAYERFS) != 0 ||
	    (n > sizeof(THIN_LAYERFS) - 1 && dir[n - sizeof(THIN_LAYERFS)] != '/'))
		return 0;
	_cleanup_free_ char *record = NULL;
	if (asprintf(&record, "%.*s%s", (int)(n - (sizeof(THIN_LAYERFS) - 1)), dir, THIN_RECORD) < 0)
		return -ENOMEM;
	record_key key;
	bool keyed = record_key_of(record, l->digest, &key);
	if (keyed && record_cached(&key))
		return 0;
	json_error_t jerr;
	json_t *j = json_load_file(record, 0, &jerr);
	if (!j) {
		if (access(record, F_OK) < 0 && errno == ENOENT)
			return 0; /* published by something else: nothing recorded */
		return error_setf(err, -EBADMSG, "thin layer sha256:%s: unreadable record %s: %s", l->digest, record,
				  jerr.text);
	}
	const char *d = json_string_value(json_object_get(j, "digest"));
	char hex[THIN_DIGEST_LEN + 1];
	int r = 0;
	if (!d || !thin_digest_parse(d, hex))
		r = error_setf(err, -EBADMSG, "thin layer sha256:%s: record %s has no valid digest", l->digest, record);
	else if (strcmp(hex, l->digest) != 0)
		r = error_setf(err, -EBADMSG,
			       "thin layer sha256:%s: digest mismatch: %s was published as sha256:%s (record %s)",
			       l->digest, dir, hex, record);
	json_decref(j);
	if (r == 0 && keyed)
		record_remember(&key);
	return r;
}

int thin_resolve(const thin_config *c, const thin_layer *l, char **ret_path, strata_error *err)
{
	char layout[THIN_LAYERFS_PATH_LEN + 1];
	thin_layerfs_path(l->digest, layout);
	_cleanup_free_ char *by_url = NULL, *by_digest = NULL;
	if (asprintf(&by_url, "%s/%s/%s", c->root, l->repo, l->path) < 0 ||
	    asprintf(&by_digest, "%s/%s/%s", c->root, l->repo, layout) < 0)
		return -ENOMEM;
	char **found = NULL;
	int r = is_dir(by_url);
	if (r < 0)
		return error_set(err, r, "thin layer sha256:%s: stat %s", l->digest, by_url);
	/* A layer published for one chain (opaque dirs flattened over it)
	 * is that one or none: the digest's own place may hold it for
	 * another chain. */
	if (r > 0)
		found = &by_url;
	else if (strcmp(by_url, by_digest) != 0 && !thin_path_chained(l->path, l->digest)) {
		r = is_dir(by_digest);
		if (r < 0)
			return error_set(err, r, "thin layer sha256:%s: stat %s", l->digest, by_digest);
		if (r > 0)
			found = &by_digest;
	}
	if (!found) {
		if (!strcmp(by_url, by_digest) || thin_path_chained(l->path, l->digest))
			return error_setf(err, -ENOENT, "thin layer sha256:%s is missing: no directory %s", l->digest,
					  by_url);
		return error_setf(err, -ENOENT, "thin layer sha256:%s is missing: no directory %s nor %s", l->digest,
				  by_url, by_digest);
	}
	r = check_record(*found, l, err);
	if (r < 0)
		return r;
	*ret_path = TAKE_PTR(*found);
	return 0;
}

int thin_published_at(const thin_config *c, const char *repo, const char *path, const char *digest)
{
	_cleanup_free_ char *dir = NULL;
	if (asprintf(&dir, "%s/%s/%s", c->root, repo, path) < 0)
		return -ENOMEM;
	int r = is_dir(dir);
	if (r <= 0)
		return r;
	thin_layer l = {.repo = (char *)repo, .path = (char *)path};
	memcpy(l.digest, digest, THIN_DIGEST_LEN + 1);
	return check_record(dir, &l, NULL) == 0 ? 1 : 0;
}
