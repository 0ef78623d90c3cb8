/* SPDX-License-Identifier: Apache-2.0 */
/* The driver's internals, shared by the files that implement the contract. */
#pragma once

#include <stdbool.h>

#include "store/store.h"
#include "strata.h"
#include "tar/tar.h"
#include "thin/repo.h"
#include "union/union.h"

struct strata_driver {
	store *store;
	overlay_api api; /* resolved: NEW or LEGACY */
	bool fd_layers;	 /* the new API also takes layers by fd */
	bool selinux;
	char backing_fs[32];
	idmap uids, gids; /* container -> host, for layer tars */
	bool aufs;	  /* the aufs engine (union/aufs.h); else overlay */
	bool dirperm1;	  /* aufs takes dirperm1 */
	thin_config thin;
	bool thin_seen;	  /* ROOT/thin exists: some layer may be thin */
	int front_end_fd; /* strata_claim's lock, -1 */
};

/* Every trace of `id` except its chain file: its union is unmounted, the
 * diff, mnt and work dirs renamed to -removing and deleted, short links
 * and counts dropped.  Also finishes an interrupted remove
 * (layers/<id>-removing).  Caller holds the id's lock. */
int layer_scrub(strata_driver *d, const char *id, strata_error *err);

/* What an interrupted create or remove of `id` left, when `id` is no
 * layer: all of it after a remove (layers/<id>-removing), else only what
 * a create makes (empty dirs, short links, a count, a thin record).
 * Anything else there is not strata's: it stays, and the result is
 * -ENOTEMPTY with a message naming it.  Caller holds the id's lock. */
int layer_clear_debris(strata_driver *d, const char *id, strata_error *err);

/* The start of every operation on one existing layer: validates id,
 * takes its lock (released by the caller, _cleanup_lock_) and reads its
 * chain, nearest parent first. */
int layer_lock(strata_driver *d, const char *id, id_lock *ret_lock, char ***ret_parents, strata_error *err);

/* The first layer naming `id` as its direct parent: 1 and its id in
 * *ret_child (caller frees), or 0.  Caller holds the id's lock (a create
 * on top of id takes it too, so no child appears meanwhile). */
int layer_find_child(strata_driver *d, const char *id, char **ret_child);

/* The view of `id` for as long as this process keeps *ret_hold (a naive
 * diff's trees): mounted if needed, but not counted, so a process that
 * dies holding it leaves nothing that keeps the union mounted (init and
 * the next put unmount it).  *ret_path: the view (caller frees). */
int layer_hold(strata_driver *d, const char *id, id_lock *ret_hold, char **ret_path, strata_error *err);
/* Drops the hold; the view is unmounted if nobody counts or holds it. */
int layer_unhold(strata_driver *d, const char *id, id_lock *hold, strata_error *err);

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

/* Writes the tree under dir_fd as a layer tar (options o) into an unnamed
 * temp file in the store root; *ret_fd is it, at its end.  For tars that
 * must exist whole before they are used (hashed, published, re-read). */
int driver_tar_to_temp(strata_driver *d, int dir_fd, const tar_opts *o, int *ret_fd, strata_error *err);

/* Appends a key and a formatted value to a list. */
int kv_add(strata_kv_list *list, const char *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* "ROOT/<sub>/<id>" (caller frees), NULL on ENOMEM. */
char *driver_path(const strata_driver *d, const char *sub, const char *id);

/* ---- thin layers (thinlayer.c) ---- */

/* How a layer's chain is mounted when thin layers are in it.  Below the
 * topmost thin layer nothing counts: its thin.json lists the whole image. */
typedef struct chain_plan {
	size_t n_store;	  /* parents[0 .. n_store-1]: store layers above the thin image */
	thin_image image; /* the topmost thin layer's image; image.n == 0: no thin layer */
	char *thin_id;	  /* that layer's id */
	bool self;	  /* the layer itself is thin: a read-only union of its image */
	char **dirs;	  /* the image's layer dirs, top first (chain_plan_acquire) */
	char **repos;	  /* the repositories they live in, each once */
	bool acquired;	  /* repositories held for the layer (internal method) */
} chain_plan;

/* Reads the thin.json of `id` or, if it is not thin, of the thin layer
 * recorded under it (thin_record_under): two lookups whatever the chain's
 * length, one faccessat when the store has never had a thin layer. */
int chain_plan_read(strata_driver *d, const char *id, char *const *parents, chain_plan *ret, strata_error *err);
/* Mounts the repositories (internal method, held by `holder`) and resolves
 * every thin layer to its dir.  On failure nothing stays held. */
int chain_plan_acquire(strata_driver *d, const char *holder, chain_plan *p, strata_error *err);
void chain_plan_release(chain_plan *p);
/* Checks that the thin image under a new layer on `parent` (whose chain
 * is `grandparents`), if any, resolves: every layer is there. */
int thin_check_image(strata_driver *d, const char *id, const char *parent, char *const *grandparents,
		     strata_error *err);
/* After mnt/<holder> is unmounted: drops what it held. */
int thin_release_holder(strata_driver *d, const char *holder, strata_error *err);

/* At create, before the chain file: records the thin layer under a new
 * layer on `parent` (parent itself, or what is recorded under it), if any. */
int thin_record_under(strata_driver *d, const char *id, const char *parent, strata_error *err);
/* strata check: compares the record of `id` with what create would
 * record from `parent`: 0 they agree, 1 they do not (*ret_what says how,
 * caller frees), 2 they did not and repair rewrote it. */
int thin_check_under(strata_driver *d, const char *id, const char *parent, bool repair, char **ret_what,
		     strata_error *err);
/* At remove: forgets that record. */
int thin_forget_under(strata_driver *d, const char *id, strata_error *err);
/* Drops the repository holds of layers whose union is not mounted (all of
 * them unless only_stale), then unmounts the repositories strata mounted
 * that nothing holds. */
int thin_prune(strata_driver *d, bool only_stale, strata_error *err);

/* A layer's extracted content (dir fd sfd) holding thin.json: 1 if that
 * makes a valid thin layer (thin.json alone; the store's thin dir made),
 * 0 if there is no thin.json, -EINVAL if it is not valid. */
int layer_check_thin(strata_driver *d, int sfd, strata_error *err);

/* Reads diff/<id>/thin.json: 1 if the layer is thin, 0 if not. */
int layer_thin_read(strata_driver *d, const char *id, thin_image *ret, strata_error *err);
/* ROOT/thin, made on first use (create). -ENOENT if missing and !create. */
int driver_thin_dir(strata_driver *d, bool create, int *ret_fd);

/* Publishes layer `id` on a thin image (and the store layers between it
 * and the image, but Docker's -init layers); *ret is the image with them
 * on top.  dfd unused. */
int thin_publish_chain(strata_driver *d, const char *id, const chain_plan *plan, char *const *parents,
		       const tar_opts *o, thin_image *ret, strata_error *err);

/* A diff of a layer on a thin image: publishes it (and the store layers
 * between it and the image, but Docker's -init layers) and writes a tar
 * holding only the new thin.json to out_fd.  dfd is the layer's diff dir. */
int thin_commit(strata_driver *d, const char *id, int dfd, const chain_plan *plan, char *const *parents, int out_fd,
		const tar_opts *o, strata_error *err);
