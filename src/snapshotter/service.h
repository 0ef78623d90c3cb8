/* SPDX-License-Identifier: Apache-2.0 */
/*
 * containerd's snapshotter contract on a strata store, free of any wire
 * format: the gRPC layer (grpc_server.c) decodes a request, calls one of
 * these and encodes what it returns.
 *
 * A snapshot is a strata layer (id "ctd-" and 24 hex digits) plus a row in
 * the metadata (meta.h) naming it by containerd's key.  Layers are made
 * before their row and removed after it, so a crash leaves at worst a
 * layer without a row, which the start (and Cleanup) removes: only layers
 * with the "ctd-" prefix, the snapshotter's own.
 *
 * Every call fills *st: code 0, or a gRPC status code with a message that
 * names the operation and the key.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <strata.h>

#include "meta.h"

/* gRPC status codes, as containerd maps them to its errdefs. */
enum {
	SNAP_OK = 0,
	SNAP_INVALID_ARGUMENT = 3,
	SNAP_NOT_FOUND = 5,
	SNAP_ALREADY_EXISTS = 6,
	SNAP_FAILED_PRECONDITION = 9,
	SNAP_UNIMPLEMENTED = 12,
	SNAP_INTERNAL = 13,
	SNAP_UNAVAILABLE = 14,
};

typedef struct snap_status {
	int code;
	char message[STRATA_ERROR_MAX + 256];
} snap_status;

typedef struct snap_service snap_service;

/* Log lines that are not answers (a reconciliation, a failed removal). */
typedef void (*snap_log_fn)(int level, const char *message, void *data);

/* Opens (creating) the store, claims it for the snapshotter, opens the
 * metadata at ROOT/containerd/snapshots.db and reconciles the two. */
int snap_service_open(const char *root, const char *const *options, snap_log_fn log, void *log_data, snap_service **ret,
		      strata_error *err);
snap_service *snap_service_free(snap_service *svc);

/* Prepare (view false) or View (view true). */
int snap_prepare(snap_service *svc, const char *key, const char *parent, const strata_kv_list *labels, bool view,
		 strata_mount_spec *ret_mount, snap_status *st);
int snap_mounts(snap_service *svc, const char *key, strata_mount_spec *ret_mount, snap_status *st);
int snap_commit(snap_service *svc, const char *name, const char *key, const strata_kv_list *labels, snap_status *st);
int snap_remove(snap_service *svc, const char *key, snap_status *st);
int snap_stat(snap_service *svc, const char *key, snap_info *ret, snap_status *st);
/* Update: `info->key` names the snapshot; `paths` the fields to change
 * (none: the labels, whole); only labels and labels.<key> may change. */
int snap_update(snap_service *svc, const snap_info *info, char *const *paths, size_t n_paths, snap_info *ret,
		snap_status *st);
/* Calls fn for each snapshot matching the filters (none: all). */
int snap_list(snap_service *svc, char *const *filters, size_t n_filters, meta_walk_fn fn, void *data, snap_status *st);
int snap_usage(snap_service *svc, const char *key, int64_t *ret_size, int64_t *ret_inodes, snap_status *st);
/* Removes the snapshotter's layers that no snapshot names. */
int snap_cleanup(snap_service *svc, snap_status *st);
