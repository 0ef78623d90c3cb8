/* SPDX-License-Identifier: Apache-2.0 */
/*
 * An image file as a set of named entries, for image.c: a tar archive
 * (decompressed first into an unnamed temp file if it is compressed) or a
 * directory (an OCI layout).  Everything in it is untrusted: entry names
 * with ".." or absolute, duplicates and truncated archives are refused
 * when it is opened; links are followed only inside it.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "strata.h"

struct archive;

#define IMAGE_IO_BLOCK	  (128 * 1024)
#define IMAGE_ENTRIES_MAX 100000	  /* entries of an archive */
#define IMAGE_SPOOL_MAX	  (1024ull << 30) /* a compressed archive, decompressed */

typedef struct image_source image_source;

/* One open entry: a file of the directory, or the archive positioned at
 * the entry's data. */
typedef struct image_stream {
	int fd;
	struct archive *a;
	uint64_t size;
	const char *name;
} image_stream;

#define IMAGE_STREAM_INIT                                                                                              \
	{                                                                                                              \
		.fd = -1                                                                                               \
	}

/* Opens `path`: a directory, or a tar (plain or compressed: decompressed
 * into an unnamed temp file in tmp_dir_fd) that is listed whole. */
int image_source_open(const char *path, int tmp_dir_fd, image_source **ret, strata_error *err);
/* Accepts NULL; returns NULL. */
image_source *image_source_free(image_source *s);
bool image_source_is_dir(const image_source *s);
/* Is there an entry `name` (of any type)? */
bool image_source_has(const image_source *s, const char *name);

/* Opens the regular file `name` (a clean relative path; links inside the
 * archive followed) for reading: -ENOENT when it is not there, err naming
 * it.  One stream at a time per source. */
int image_stream_open(image_source *s, const char *name, image_stream *ret, strata_error *err);
/* Up to n bytes: the count, 0 at the end, or -errno. */
ssize_t image_stream_read(image_stream *st, void *buf, size_t n, strata_error *err);
void image_stream_close(image_stream *st);

/* The decompressors an image file's parts may use: gzip, zstd, xz,
 * bzip2, lz4. */
int image_support_filters(struct archive *a);
/* All of buf to fd. */
int image_write_all(int fd, const void *buf, size_t n);
