/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Container images as files, read without Docker (what `strata thin make
 * --from` converts):
 *   - a `docker save` archive: manifest.json lists each image's Config and
 *     Layers by path, either the classic layout (<id>/layer.tar, the
 *     config <hex>.json) or Docker 25's (blobs/sha256/<hex>);
 *   - an OCI image layout directory (oci-layout, index.json,
 *     blobs/sha256/<hex>), nested indexes included;
 *   - an OCI archive: a tar of such a layout.
 * An archive may be compressed (it is then decompressed once into an
 * unnamed temp file); layer blobs may be plain, gzip, zstd, xz, bzip2 or
 * lz4 tars.
 *
 * Everything in it is untrusted.  Refused, naming the file and what is
 * wrong: entries with ".." or absolute names and duplicate entries of an
 * archive; a truncated archive (one without tar's end-of-archive blocks,
 * or cut inside an entry); links that lead out of it; paths in manifest.json
 * that escape; digests other than sha256 in lowercase hex; a blob whose
 * content or size is not what its name or descriptor says; JSON files over
 * IMAGE_JSON_MAX, duplicate keys, more than THIN_MAX_LAYERS layers; a
 * config whose diff_ids do not match the layers in number; a layer that
 * decompresses to more than IMAGE_LAYER_MAX.  Nothing is ever written
 * but the caller's temp files.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "strata.h"
#include "thin/thin.h"

#define IMAGE_JSON_MAX	    (16u << 20)	   /* manifest.json, index.json, a manifest, a config */
#define IMAGE_LAYER_MAX	    (256ull << 30) /* a layer tar, decompressed */
#define IMAGE_MANIFESTS_MAX 1024	   /* manifests and indexes looked at in a layout */

typedef struct image_source image_source;

typedef struct image_layer {
	char *name;			       /* the blob's path in the archive or layout */
	char diff_id[THIN_DIGEST_LEN + 1];     /* the config's: sha256 of the tar, decompressed */
	char blob_digest[THIN_DIGEST_LEN + 1]; /* sha256 the blob must have ("" none known) */
	int64_t blob_size;		       /* the size it must have (-1 none known) */
} image_layer;

typedef struct image {
	image_source *src;
	const char *format; /* "docker save", "OCI layout", "OCI archive" */
	char *ref;	    /* what the image is called: its first name, else its manifest or config */
	char **tags;	    /* names of it that are docker references NAME:TAG (strv, may be empty) */
	json_t *config;	    /* the image config */
	size_t n_layers;
	image_layer *layers; /* base first */
} image;

/*
 * Opens the image at `path` and picks its one image, or the one named `tag`
 * (a RepoTag, an org.opencontainers.image.ref.name or an
 * io.containerd.image.name; "NAME" means "NAME:latest") when it holds
 * several; with one image, `tag` is not checked.  More than one image
 * without a matching tag is an error listing them.  tmp_dir_fd: where a
 * compressed archive is decompressed to.  Every JSON file is read and
 * checked, and every layer blob is found, before this returns.
 */
int image_open(const char *path, int tmp_dir_fd, const char *tag, image *ret, strata_error *err);
void image_release(image *img);

/*
 * Layer i decompressed, written to out_fd (at its offset; -1: only
 * hashed), checking the blob against its digest and size.  *ret_digest:
 * sha256 (hex) of the tar written; *ret_size its bytes.  At most one layer
 * is read at a time.
 */
int image_layer_read(image *img, size_t i, int out_fd, char ret_digest[THIN_DIGEST_LEN + 1], uint64_t *ret_size,
		     strata_error *err);

/* sha256 (lowercase hex) of a buffer. */
int image_sha256(const void *data, size_t len, char ret[THIN_DIGEST_LEN + 1]);

/* Is `ref` a docker reference with a tag (NAME:TAG, NAME lowercase
 * [a-z0-9._/-] and an optional registry host[:port]/)? */
bool image_ref_valid(const char *ref);
