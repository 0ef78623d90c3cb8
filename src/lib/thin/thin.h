/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Thin layers (SPEC section 4): a layer whose diff dir holds thin.json has
 * its files on a shared read-only filesystem (CernVM-FS, or any POSIX
 * filesystem holding the same layout):
 *
 *   {"version": "1.0", "min_version": "1.0", "origin": "...",
 *    "layers": [{"digest": "<sha256 hex>", "url": "cvmfs://<repo>/<path>"}, ...],
 *    "comment": "..."}
 *
 * Layers are listed base first.  Each one is a directory found at
 * <thin root>/<repo>/<path>, or by digest at
 * <thin root>/<repo>/.layers/<hh>/<hex>/layerfs (CernVM-FS's layout).
 *
 * This file: the thin.json format (thin.c).  Pure, no I/O but reading the
 * file: for unit tests and fuzzing.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "strata.h"

#define THIN_FILE	"thin.json"
#define THIN_VERSION	"1.0"
#define THIN_MAX_BYTES	(1u << 20) /* a thin.json larger than this is refused */
#define THIN_MAX_LAYERS 500	   /* overlay's limit on lower dirs */
#define THIN_DIGEST_LEN 64	   /* sha256, lowercase hex */
#define THIN_URL_SCHEME "cvmfs://"
#define THIN_LAYERS_DIR ".layers"
#define THIN_LAYERFS	"layerfs"
#define THIN_REPO_MAX	255
#define THIN_PATH_MAX	1024

typedef struct thin_layer {
	char digest[THIN_DIGEST_LEN + 1]; /* lowercase hex, no "sha256:" */
	char *repo;			  /* <repo> of the url */
	char *path;			  /* <path> of the url: relative, clean */
} thin_layer;

typedef struct thin_image {
	char *version;	   /* as written */
	char *min_version; /* NULL when absent */
	char *origin;	   /* NULL when absent */
	char *comment;	   /* NULL when absent */
	size_t n;
	thin_layer *layers; /* base first */
} thin_image;

/*
 * Parses thin.json strictly.  Refused, with a message saying where: not a
 * JSON object; a missing or non-string version; a version other than 1.0
 * unless min_version says a 1.0 reader can read it; a key this version does
 * not define (under version 1.0); no layers, or more than THIN_MAX_LAYERS;
 * a layer without a valid digest (64 hex digits, an optional "sha256:"
 * prefix, any case: stored lowercase) or url; a url that thin_url_parse
 * refuses; a url ending in .layers/<hh>/<hex>/layerfs whose hex is not the
 * digest; the same digest twice; duplicate keys; trailing garbage.
 * -EINVAL (or -ENOMEM).  `ret` is untouched on failure.
 */
int thin_parse(const char *text, size_t len, thin_image *ret, strata_error *err);

/* thin.json text for img: pretty-printed, keys in a fixed order, digests
 * without prefix, a trailing newline.  thin_parse(thin_format(x)) == x. */
int thin_format(const thin_image *img, char **ret_text);

/* Frees what img holds and zeroes it; accepts a zeroed img. */
void thin_image_release(thin_image *img);

/* Deep copy. */
int thin_image_copy(const thin_image *src, thin_image *ret);

/* Adds a layer on top (at the end of the list).  -EEXIST if the digest is
 * already there, -E2BIG past THIN_MAX_LAYERS, -EINVAL for a bad digest,
 * repo or path. */
int thin_image_push(thin_image *img, const char *digest, const char *repo, const char *path);

/*
 * "cvmfs://<repo>/<path>" into its parts (caller frees both).  The repo is
 * a name ([A-Za-z0-9][A-Za-z0-9._-]*, up to THIN_REPO_MAX bytes); the path
 * is relative and clean: non-empty, no leading or trailing '/', no empty,
 * "." or ".." component, no control bytes, up to THIN_PATH_MAX bytes.
 * -EINVAL with *ret_why saying what is wrong.
 */
int thin_url_parse(const char *url, char **ret_repo, char **ret_path, const char **ret_why);

bool thin_repo_valid(const char *repo);
bool thin_path_valid(const char *path);

/* Lowercase hex of 64 digits, an optional "sha256:" prefix: into ret
 * (lowercase, no prefix).  false if it is not one. */
bool thin_digest_parse(const char *s, char ret[THIN_DIGEST_LEN + 1]);

/* ".layers/<hh>/<hex>/layerfs" for a digest (CernVM-FS's layout), into a
 * buffer of THIN_LAYERFS_PATH_LEN + 1 bytes. */
#define THIN_LAYERFS_PATH_LEN (sizeof(THIN_LAYERS_DIR) + 3 + THIN_DIGEST_LEN + 1 + sizeof(THIN_LAYERFS) - 1)
void thin_layerfs_path(const char *digest, char *ret);

/* Is path ".layers/<hh>/<digest>-<16 hex>/layerfs": the layer published
 * for one chain below it (opaque dirs flattened), never to be found by
 * its digest alone? */
bool thin_path_chained(const char *path, const char *digest);

/*
 * Reads <dirfd>/thin.json: 1 and *ret when it is there and valid, 0 when
 * there is none, a negative errno when it is unreadable, too large, not a
 * regular file or malformed (err says which, naming "thin.json").
 */
int thin_read_at(int dirfd, thin_image *ret, strata_error *err);
