/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The on-disk store:
 *
 *   ROOT/layers/<id>   chain file: parent ids, nearest first, one a line
 *                      (the seed's format).  Its presence is what makes a
 *                      layer exist: it is written last on create and
 *                      removed first on remove.
 *   ROOT/diff/<id>     the layer's own files (overlay upperdir)
 *   ROOT/mnt/<id>      where the union is mounted
 *   ROOT/work/<id>     overlay's workdir (same filesystem as diff)
 *   ROOT/refs/<id>     "<boot-id> <count>": references held by get
 *   ROOT/l/<short>     symlink to ../diff/<id>: short lower paths for the
 *   ROOT/link/<id>     legacy mount(2) path; link/<id> -> <short>
 *   ROOT/lock          byte-range locks, one byte per id (see lock.c)
 *   ROOT/strata-store  the marker: this directory is a store strata made.
 *                      Written first, into a new or empty directory; a
 *                      directory that holds other files is never a store
 *                      (recovery deletes and unmounts what it finds).
 *
 * Names beginning with '.' are temp files; names ending in "-removing" are
 * the remains of an interrupted remove.  Neither can be a layer id.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "strata.h"

#define STORE_LINK_LEN		6
#define STORE_BOOT_ID_LEN	36
#define STORE_REMOVING_SUFFIX	"-removing"
#define STORE_REMOVING_NAME_MAX (STRATA_ID_MAX + sizeof(STORE_REMOVING_SUFFIX))
#define STORE_MARKER		"strata-store"
#define STORE_MARKER_TEXT	"strata store, format 1\n"
/* overlayfs refuses more than 500 lower layers. */
#define STORE_MAX_PARENTS 500

typedef struct store {
	char *root; /* absolute, no trailing slash */
	int root_fd;
	int layers_fd, diff_fd, mnt_fd, work_fd, refs_fd, l_fd, link_fd;
	char boot_id[STORE_BOOT_ID_LEN + 1];
} store;

/* Open (and with `create`, make) the layout under root.  root must be
 * absolute.  On failure err says which directory. */
int store_open(const char *root, bool create, store **ret, strata_error *err);
store *store_free(store *s);

/* ---- ids (id.c) ---- */
int id_validate(const char *id, strata_error *err);

/* ---- chain files (chain.c) ---- */
/* Parses chain file content into a NULL-terminated id vector. */
int chain_parse(const char *data, size_t len, char ***ret_ids, strata_error *err);
/* Reads layers/<id>.  -ENOENT if the layer does not exist. */
int chain_read(store *s, const char *id, char ***ret_parents, strata_error *err);
/* Content of a chain file for a layer whose direct parent is `parent`
 * and whose parent's own chain is `grandparents`. */
int chain_format(const char *parent, char *const *grandparents, char **ret_data, size_t *ret_len);

/* ---- locks (lock.c) ---- */
typedef struct id_lock {
	int fd;
	unsigned long long offset[2];
	int n;
} id_lock;
#define ID_LOCK_INIT                                                                                                   \
	{                                                                                                              \
		.fd = -1, .n = 0                                                                                       \
	}

/* Blocks until this open file description owns the lock of `id` (and of
 * `id2` when not NULL; both are taken in a fixed order, so two callers
 * locking the same pair never deadlock). */
int lock_ids(store *s, const char *id, const char *id2, id_lock *ret);
/* The store-wide init lock: one init probes and recovers at a time (a
 * second init would take the first one's probe dir for debris). */
int lock_store_init(store *s, id_lock *ret);
/* A hold on `id` for as long as this process keeps it (lock_release, or
 * death): see lock.c.  Never waits. */
int lock_hold(store *s, const char *id, id_lock *ret);
/* 1 if any process holds `id`, 0 if not. */
int lock_held(store *s, const char *id);
/* The store's front end: kind 0 (serve, any number) or 1 (snapshotter,
 * one), one kind at a time.  Never waits: -EAGAIN while a front end of the
 * other kind holds the store, -EALREADY while another snapshotter does.
 * *ret_fd keeps the claim (closing it releases). */
int lock_front_end(store *s, unsigned kind, int *ret_fd);
void lock_release(id_lock *l);
static inline void lock_releasep(id_lock *l)
{
	lock_release(l);
}
#define _cleanup_lock_ __attribute__((cleanup(lock_releasep)))
unsigned long long lock_offset(const char *id);

/* ---- reference counts (refs.c) ---- */
/* Count recorded for id in this boot; 0 if none or from an earlier boot. */
int refs_read(store *s, const char *id, unsigned *ret_count);
/* Records count. */
int refs_write(store *s, const char *id, unsigned count);
/* 1 if refs/<id> is a record refs_write made (of any boot), 0 if not. */
int refs_is_record(store *s, const char *id);
/* Forgets the record (a layer being removed). */
int refs_remove(store *s, const char *id);
/* Parses "<boot-id> <count>"; pure, for tests. */
int refs_parse(const char *data, const char *boot_id, unsigned *ret_count);

/* ---- short links (links.c) ---- */
int link_create(store *s, const char *id, strata_error *err);
int link_read(store *s, const char *id, char ret_short[STORE_LINK_LEN + 1]);
int link_remove(store *s, const char *id);

/* ---- layer existence ---- */
/* 1 if layers/<id> exists, 0 if not. */
int store_layer_exists(store *s, const char *id);
/* "<id>-removing", the name an interrupted remove leaves. */
void store_removing_name(const char *id, char ret[STORE_REMOVING_NAME_MAX]);
/* The layer id a directory entry belongs to ("<id>" or "<id>-removing"),
 * or NULL if it is not one of ours.  Caller frees. */
char *store_owner_id(const char *name);
/* Is `name` (a directory entry) reserved: temp file or -removing? */
bool store_name_reserved(const char *name);
