/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A layer in the form a repository keeps it (convert.c): what a publisher
 * hands the repository, and the manifest of what the repository then
 * holds, which `strata thin verify` compares a published layer with.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "strata.h"
#include "thin/repo.h"

typedef struct repo_form {
	/* [[path, type, mode, uid, gid, extra, sha256], ...]: type f file, d
	 * dir, o opaque dir, l symlink, c and b devices, p fifo, w whiteout;
	 * extra the size (f), the target (l) or "major:minor" (c, b, w). */
	json_t *manifest;
	uint64_t entries;
	uint64_t hardlinks; /* links the repository holds as separate files */
	uint64_t xattrs;    /* entries whose xattrs the repository does not keep */
	bool flattened;	    /* opaque dirs became whiteouts over the layers below */
} repo_form;

enum {
	/* Opaque dirs as whiteouts of what the layers below hold there
	 * (a filesystem without xattrs); else kept as type o. */
	REPO_FORM_FLATTEN = 1u << 0,
	/* The repository keeps no xattrs: they are dropped and counted. */
	REPO_FORM_NO_XATTRS = 1u << 1,
	/* The repository keeps no hardlinks: each is another file (counted). */
	REPO_FORM_NO_HARDLINKS = 1u << 2,
};

/* What the record beside layerfs (THIN_RECORD) says. */
typedef struct repo_record {
	const char *digest;
	uint64_t tar_size;
	uint64_t entries;      /* when there is no repo_form */
	const char *publisher; /* NULL: "strata" */
	const char *over;      /* the chain a flattened layer was made over */
} repo_record;

/*
 * Reads the standard layer tar in tar_fd (from offset 0; names checked as
 * apply checks them) and fills *ret.  With out_fd >= 0 also writes the
 * layer in the repository's form to it: "./" (the layer's dir), "layerfs/"
 * and every entry below it, whiteouts as 0/0 char devices, and last the
 * record `rec` (with the manifest) as THIN_RECORD.  `lower` (may be NULL)
 * lists what the layers below hold, for REPO_FORM_FLATTEN.
 */
int repo_form_make(int tar_fd, const thin_lower *lower, unsigned flags, int out_fd, const repo_record *rec,
		   repo_form *ret, strata_error *err);
void repo_form_release(repo_form *f);

/* The record's JSON text (caller frees); f may be NULL (no manifest). */
int repo_record_text(const repo_record *rec, const repo_form *f, char **ret);
