/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The snapshotter's metadata: containerd's snapshot keys and what each
 * one is (kind, parent, labels, times), mapped to strata layer ids, in a
 * SQLite database at ROOT/containerd/snapshots.db.
 *
 * Every change is one SQLite transaction, so a crash leaves the old or the
 * new state.  Layers are made before their row and removed after it: a
 * layer without a row is debris of a crash (meta_layer_ids lists what the
 * rows name, for the start-up reconciliation), a row without a layer is a
 * layer lost outside strata's control.
 *
 * Functions return 0 (or a count) on success, a negative errno on failure:
 * -ENOENT no such key, -EEXIST key taken, -ENOTEMPTY the snapshot has
 * children, -EINVAL a bad argument, -EIO a database error (the message in
 * *err names the key and SQLite's own words).  A meta handle is used by one
 * thread at a time (the caller serialises).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <strata.h>

typedef enum snap_kind {
	SNAP_UNKNOWN = 0, /* the values of containerd's Kind enum */
	SNAP_VIEW = 1,
	SNAP_ACTIVE = 2,
	SNAP_COMMITTED = 3,
} snap_kind;

typedef struct snap_info {
	char *key;    /* the containerd key (active, view) or name (committed) */
	char *parent; /* the parent's name, NULL for none */
	char *id;     /* the strata layer id */
	snap_kind kind;
	int64_t created_ns; /* nanoseconds since the epoch */
	int64_t updated_ns;
	strata_kv_list labels; /* sorted by key */
	int64_t size;	       /* usage recorded at commit (-1: not recorded) */
	int64_t inodes;
} snap_info;

void snap_info_release(snap_info *info);

typedef struct meta meta;

/* Opens (creating) the database at `path`, WAL mode, foreign keys on. */
int meta_open(const char *path, meta **ret_meta, strata_error *err);
meta *meta_close(meta *m);

/* Inserts a new snapshot.  `info->created_ns`/`updated_ns` are set by the
 * caller; `labels` copied.  -EEXIST if the key is taken; -ENOENT if the
 * parent is not a row; -EINVAL if the parent is not committed. */
int meta_insert(meta *m, const snap_info *info, strata_error *err);

/* The row of `key` into *ret (caller releases).  -ENOENT if none. */
int meta_get(meta *m, const char *key, snap_info *ret, strata_error *err);

/* Active `key` becomes committed `name`, with `labels` (may be NULL: keep
 * none) and the usage measured; updated_ns = now_ns.  -ENOENT no key,
 * -EINVAL not active (kind returned in the message), -EEXIST name taken. */
int meta_commit(meta *m, const char *key, const char *name, const strata_kv_list *labels, int64_t size, int64_t inodes,
		int64_t now_ns, strata_error *err);

/* Removes the row of `key`; *ret_id gets its layer id (caller frees).
 * -ENOENT none, -ENOTEMPTY it is the parent of another row. */
int meta_remove(meta *m, const char *key, char **ret_id, strata_error *err);

/* Replaces the labels of `key` with `labels` (whole set), updated_ns =
 * now_ns.  -ENOENT none. */
int meta_set_labels(meta *m, const char *key, const strata_kv_list *labels, int64_t now_ns, strata_error *err);

/* Calls fn for every row (ordered by key); a negative return stops the
 * walk and is returned. */
typedef int (*meta_walk_fn)(const snap_info *info, void *data);
int meta_walk(meta *m, meta_walk_fn fn, void *data, strata_error *err);

/* The layer ids of all rows, NULL-terminated, sorted (caller frees each
 * and the array). */
int meta_layer_ids(meta *m, char ***ret_ids, strata_error *err);

/* Removes the rows whose layer id is in `ids` (NULL-terminated) and,
 * iteratively, every row below them; *ret_removed counts the rows.  One
 * transaction.  For the reconciliation: rows whose layer is gone. */
int meta_remove_ids(meta *m, char *const *ids, unsigned *ret_removed, strata_error *err);
