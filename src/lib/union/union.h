/* SPDX-License-Identifier: Apache-2.0 */
/* Union engines: given the dirs of a chain, mount their union. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "strata.h"

typedef struct union_request {
	const char *target;  /* absolute mount point */
	const char *upper;   /* absolute read-write dir (the layer's diff); NULL: read-only */
	const char *work;    /* absolute overlay workdir, same fs as upper */
	char *const *lowers; /* absolute read-only dirs, top first */
	size_t n_lowers;
	const char *label; /* SELinux mount label, or NULL */
	bool selinux;	   /* apply the label (only when SELinux is on) */

	/* The legacy mount(2) path runs with short_dirfd as its working
	 * directory and names every dir relative to it. */
	int short_dirfd;
	char *const *short_lowers;
	const char *short_upper;
	const char *short_work;
} union_request;

typedef enum overlay_api {
	OVERLAY_API_AUTO,
	OVERLAY_API_NEW,    /* fsopen/fsconfig, one lowerdir+ per layer (6.7+) */
	OVERLAY_API_LEGACY, /* mount(2), one page of options */
} overlay_api;

/* fsconfig caps one string value at 256 bytes including the NUL. */
#define OVERLAY_FSCONFIG_STRING_MAX 255

typedef struct overlay_param {
	const char *key;
	const char *value; /* NULL: pass `fd` below instead of a string */
	int fd;
} overlay_param;

enum {
	OVERLAY_NEW_API = 1 << 0,   /* lowerdir+ through fsconfig (Linux 6.7+) */
	OVERLAY_FD_LAYERS = 1 << 1, /* layers given as fds (Linux 6.13+) */
};
/* What this kernel's overlay takes: OVERLAY_* flags. */
int overlay_probe(void);

/* The fsconfig parameters for req, in order.  Paths longer than fsconfig
 * accepts come back with value NULL: the caller passes an O_PATH fd.
 * Pure: for unit tests.  *ret_params is one allocation. */
int overlay_build_params(const union_request *req, overlay_param **ret_params, size_t *ret_n);

/* The mount(2) option string for req, from the short_* names.  -E2BIG
 * (with a message saying how long it got) past one page. Pure. */
int overlay_build_legacy_data(const union_request *req, size_t page_size, char **ret_data, strata_error *err);

/* A label is quoted into the options: refuse what would break the quoting. */
int overlay_label_validate(const char *label, strata_error *err);

int overlay_mount(const union_request *req, overlay_api api, strata_error *err);

/* Unmounts strata's union at target if one is there (0 if nothing is
 * mounted there, or target is missing); a busy union is detached (as
 * Docker's overlay2 does), so a stray open file cannot pin a layer
 * forever.  What strata did not mount is never unmounted: another kind of
 * mount at target, or a mount inside the union, is -EBUSY with a message
 * naming it. */
int union_unmount(const char *target, strata_error *err);

/* 1 if strata's union (overlay or aufs) is mounted at name under dirfd
 * (`path` for messages), 0 if nothing is mounted there or it is missing,
 * -EBUSY (with a message) if something else is mounted there. */
int union_mounted_at(int dirfd, const char *name, const char *path, strata_error *err);

/* ---- /proc/self/mountinfo (mountinfo.c) ---- */
typedef struct mount_entry {
	char *mountpoint;
	char *fstype;
} mount_entry;

/* Mounts at `prefix` or below it, deepest first (the order to unmount). */
int mountinfo_under(const char *prefix, mount_entry **ret, size_t *ret_n);
void mount_entries_free(mount_entry *m, size_t n);
/* Parses one mountinfo line; pure, for tests. */
int mountinfo_parse_line(const char *line, mount_entry *ret);
