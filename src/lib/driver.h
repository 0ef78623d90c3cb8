/* SPDX-License-Identifier: Apache-2.0 */
/* The driver's internals, shared by the files that implement the contract. */
#pragma once

#include <stdbool.h>

#include "store/store.h"
#include "strata.h"
#include "tar/tar.h"
#include "union/union.h"

struct strata_driver {
	store *store;
	overlay_api api; /* resolved: NEW or LEGACY */
	bool fd_layers;	 /* the new API also takes layers by fd */
	bool selinux;
	char backing_fs[32];
	idmap uids, gids; /* container -> host, for layer tars */
};

/* Every trace of `id` except its chain file: its union is unmounted, the
 * diff, mnt and work dirs renamed to -removing and deleted, short links
 * and counts dropped.  Also finishes an interrupted remove
 * (layers/<id>-removing).  Caller holds the id's lock. */
int layer_scrub(strata_driver *d, const char *id, strata_error *err);

/* The start of every operation on one existing layer: validates id,
 * takes its lock (released by the caller, _cleanup_lock_) and reads its
 * chain, nearest parent first. */
int layer_lock(strata_driver *d, const char *id, id_lock *ret_lock, char ***ret_parents, strata_error *err);

/* The first layer naming `id` as its direct parent: 1 and its id in
 * *ret_child (caller frees), or 0.  Caller holds the id's lock (a create
 * on top of id takes it too, so no child appears meanwhile). */
int layer_find_child(strata_driver *d, const char *id, char **ret_child);

/* Unmounts mnt/<id> if something is mounted there. */
int layer_unmount(strata_driver *d, const char *id, strata_error *err);

/* Unmounts what is mounted under ROOT/mnt/<name>, one name at a time
 * under that name's lock, and resets the counts of the layers unmounted.
 * With only_stale (recovery), a layer whose count says it is held stays
 * mounted. */
int driver_unmount_views(strata_driver *d, bool only_stale, strata_error *err);

/* Crash recovery at init (recover.c). */
int driver_recover(strata_driver *d, strata_error *err);

/* Checks the backing filesystem can carry overlay, by mounting a tiny one. */
int driver_probe_backing(strata_driver *d, strata_error *err);

/* Appends a key and a formatted value to a list. */
int kv_add(strata_kv_list *list, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* "ROOT/<sub>/<id>" (caller frees), NULL on ENOMEM. */
char *driver_path(const strata_driver *d, const char *sub, const char *id);
