/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The aufs engine (the seeds' union filesystem), for kernels that have it.
 *
 * Mount data is built as Docker's aufs driver builds it: the first mount
 * gets "br:<rw>=rw:<ro>=ro+wh:..." with as many read-only branches as fit
 * in one page minus room for the fixed options and the mount label, then
 * ",dio,xino=/dev/shm/aufs.xino" (and ",dirperm1" when the kernel's aufs
 * takes it); the branches that did not fit are added by remounts
 * (MS_REMOUNT) with "append:<dir>=ro+wh" options, several per remount,
 * each remount's data within one page.  A mount label becomes
 * ',context="<label>"' after the options of every call.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "strata.h"

#define AUFS_XINO	"/dev/shm/aufs.xino"
#define AUFS_FIXED_ROOM 54 /* the seed's reserve for ",dio,xino=..." and the label's quoting */
#define AUFS_DIRPERM1	"dirperm1"

typedef struct aufs_mount_data {
	char *first;	  /* data for mount(2) */
	char **appends;	  /* data for each MS_REMOUNT, NULL-terminated (may be empty) */
	size_t n_appends; /* length of appends */
	size_t n_first;	  /* read-only branches in `first` */
} aufs_mount_data;

/*
 * Builds the data for mounting `rw` over `ro` (n_ro dirs, top first) with
 * `label` (NULL or "" for none).  Pure: for unit tests.  Every string,
 * its NUL included, fits in page_size bytes.  -E2BIG (err says which
 * branch) when one branch cannot fit in a page even alone; -EINVAL for a
 * path or label that would break the option syntax (',', ':', '=' in a
 * path; a quote, backslash or control character in a label).
 */
int aufs_build_mount_data(const char *rw, char *const *ro, size_t n_ro, const char *label, bool dirperm1,
			  size_t page_size, aufs_mount_data *ret, strata_error *err);
void aufs_mount_data_release(aufs_mount_data *m);

/* 1 if /proc/filesystems (the file at `path`, for tests) lists aufs, 0 if
 * not, a negative errno if it cannot be read. */
int aufs_listed(const char *path);
/*
 * Is aufs usable here?  Tries `modprobe aufs` first when it is not listed
 * (as the seed does), refuses inside a user namespace and on aufs, btrfs
 * and ecryptfs backing filesystems.  0 if usable, else an error saying why.
 */
int aufs_supported(unsigned long backing_magic, const char *backing_name, strata_error *err);
/* Probes whether aufs takes dirperm1 (mounts a scratch aufs under tmp_dir). */
bool aufs_probe_dirperm1(const char *tmp_dir);

/* Mounts the union (mount, then the remounts); on failure unmounts. */
int aufs_mount(const char *target, const aufs_mount_data *m, strata_error *err);
