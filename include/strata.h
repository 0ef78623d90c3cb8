/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libstrata: a layered filesystem store for container images.
 *
 * One opaque handle, `strata_driver`, implements the graph driver contract
 * (SPEC section 1).  Every call is thread-safe: calls on one layer id are
 * serialised (across threads and across processes sharing a store root),
 * calls on different ids run in parallel.
 *
 * Error convention: functions return 0 (or a non-negative value) on success
 * and a negative errno value on failure.  When `err` is not NULL it is filled
 * with a one-line message naming the operation and the id or path.
 * Outputs are named ret_* and are untouched on failure.
 */
#ifndef STRATA_H
#define STRATA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(STRATA_BUILDING_LIBRARY)
#define STRATA_API __attribute__((visibility("default")))
#else
#define STRATA_API
#endif

#define STRATA_ID_MAX	 128
#define STRATA_ERROR_MAX 1024

typedef struct strata_error {
	int code;			/* positive errno value; 0 when no error */
	char message[STRATA_ERROR_MAX]; /* "operation subject: detail" */
} strata_error;

typedef struct strata_driver strata_driver;

/* A list of key/value string pairs (status, metadata). */
typedef struct strata_kv {
	char *key;
	char *value;
} strata_kv;

typedef struct strata_kv_list {
	size_t n;
	strata_kv *items;
} strata_kv_list;

STRATA_API void strata_kv_list_clear(strata_kv_list *list);

enum {
	/* Create ROOT and its layout if missing, check that the backing
	 * filesystem can carry the union engine, and recover from an earlier
	 * crash (leftover *-removing dirs, stale mounts, temp files). Without
	 * this flag the store must already exist; no recovery is done. */
	STRATA_OPEN_INIT = 1u << 0,
};

/*
 * Opens the store at `root`.  `options` is a NULL-terminated array of
 * "key=value" driver options (may be NULL).  Known options:
 *   engine=overlay          the union engine (overlay is the only one yet)
 *   mountapi=auto|new|legacy
 *                           how overlay is mounted: the new mount API with one
 *                           lowerdir+ per layer, or mount(2) with short paths;
 *                           auto probes the kernel
 *   uidmap=CONTAINER:HOST:SIZE, gidmap=CONTAINER:HOST:SIZE
 *                           (repeatable) owners in layer tars are container
 *                           ids: apply shifts them to host ids, diff back;
 *                           new layers' dirs belong to the mapped root
 * Unknown options are an error.
 */
STRATA_API int strata_driver_open(const char *root, const char *const *options, unsigned flags,
				  strata_driver **ret_driver, strata_error *err);

/* Messages that are not errors (a publish waiting for another, what a
 * repository's filesystem cannot keep): level 0 information, 1 warning.
 * Called from the thread of the call.  Without one they are dropped. */
typedef void (*strata_log_fn)(int level, const char *message, void *data);
STRATA_API void strata_driver_set_log(strata_driver *driver, strata_log_fn fn, void *data);

/* Releases the handle.  Does not unmount anything: see strata_cleanup(). */
STRATA_API strata_driver *strata_driver_free(strata_driver *driver);

/* For a long-running front end, `front_end` "serve" (Docker) or
 * "snapshotter" (containerd): claims the store for this handle until it is
 * freed.  -EBUSY, with a message naming both and the root, while a front
 * end of the other kind holds it (in any process): two engines would each
 * take the other's layers for debris; likewise for a second snapshotter.
 * Several strata serve may share a store.  The CLI's commands claim
 * nothing. */
STRATA_API int strata_claim(strata_driver *driver, const char *front_end, strata_error *err);

/* The absolute store root. */
STRATA_API const char *strata_driver_root(const strata_driver *driver);

/*
 * Creates layer `id` on top of `parent` (NULL or "" for a base layer).
 * `storage_opts` is a NULL-terminated "key=value" array (may be NULL); no
 * storage option is supported yet, so any is an error.
 */
STRATA_API int strata_create(strata_driver *driver, const char *id, const char *parent, const char *const *storage_opts,
			     strata_error *err);
/* Same as strata_create; the layer is meant to be a container's writable top. */
STRATA_API int strata_create_rw(strata_driver *driver, const char *id, const char *parent,
				const char *const *storage_opts, strata_error *err);

/* Unmounts (whatever the reference count), then removes the layer. */
STRATA_API int strata_remove(strata_driver *driver, const char *id, strata_error *err);

/* The ids of the store's layers that start with `prefix` (NULL: all), as a
 * NULL-terminated array, unsorted (caller frees each and the array). */
STRATA_API int strata_layers(strata_driver *driver, const char *prefix, char ***ret_ids, strata_error *err);

/* 1 if the layer exists, 0 if not, negative errno on error (bad id). */
STRATA_API int strata_exists(strata_driver *driver, const char *id, strata_error *err);

/*
 * Takes one reference on the layer and returns the path of its merged view
 * in *ret_path (caller frees).  The first reference mounts the union; a
 * layer without parents returns its diff dir.  `mount_label` (may be NULL)
 * becomes a context= mount option when SELinux is enabled.
 */
STRATA_API int strata_get(strata_driver *driver, const char *id, const char *mount_label, char **ret_path,
			  strata_error *err);

/* Drops one reference; the last one unmounts.  -EINVAL if not in use. */
STRATA_API int strata_put(strata_driver *driver, const char *id, strata_error *err);

/* Store-wide information as [key, value] pairs. */
STRATA_API int strata_status(strata_driver *driver, strata_kv_list *ret_status, strata_error *err);

/* Per-layer information: paths, parent, chain length, reference count. */
STRATA_API int strata_get_metadata(strata_driver *driver, const char *id, strata_kv_list *ret_metadata,
				   strata_error *err);

/* Unmounts every union strata mounted under the root and resets counts. */
STRATA_API int strata_cleanup(strata_driver *driver, strata_error *err);

/* ---- mounts made by the caller (containerd's snapshotter) ---- */

/* One mount as containerd describes it: mount(2) type, source, options. */
typedef struct strata_mount_spec {
	char *type; /* "overlay" or "bind" */
	char *source;
	char **options; /* NULL-terminated */
} strata_mount_spec;

STRATA_API void strata_mount_spec_clear(strata_mount_spec *spec);

enum {
	/* A read-only view of the layer's parents (its own diff dir unused). */
	STRATA_MOUNTS_VIEW = 1u << 0,
};

/*
 * What mounting layer `id` takes, for a caller that mounts it itself,
 * without strata mounting or counting anything: a base layer is a bind
 * mount of its diff dir; any other an overlay whose lowerdir lists the
 * parents' short links (ROOT/l/...) and, on a thin image, the image's
 * layer dirs (the internal method's repositories are mounted and held for
 * `id` until it is removed).  Options as strata's own unions (index=off,
 * redirect_dir=off, metacopy=off).  *ret is the caller's to clear.
 */
STRATA_API int strata_mounts(strata_driver *driver, const char *id, unsigned flags, strata_mount_spec *ret,
			     strata_error *err);

/* After a caller filled layer `id` through its mounts: *ret_thin = 1 if
 * its content is a thin layer (thin.json alone, valid), 0 if an ordinary
 * one.  -EINVAL (message naming the layer) for an invalid thin.json. */
STRATA_API int strata_seal(strata_driver *driver, const char *id, int *ret_thin, strata_error *err);

/* A layer on a thin image, complete and unused (no child, not mounted):
 * publishes it with the driver's thin.publisher (and the store layers
 * between it and the image) and makes it a thin layer in place, its diff
 * dir holding only the new thin.json.  *ret_published = 0 when the layer is
 * not on a thin image or is thin already.  -EOPNOTSUPP without a publisher,
 * -EBUSY when it has a child or is mounted. */
STRATA_API int strata_publish(strata_driver *driver, const char *id, int *ret_published, strata_error *err);

/* Disk usage of the layer's own diff dir, as containerd counts it: bytes
 * in blocks allocated and inodes, each hard-linked inode once. */
STRATA_API int strata_usage(strata_driver *driver, const char *id, int64_t *ret_size, int64_t *ret_inodes,
			    strata_error *err);

/* ---- remote snapshots: thin layers from what a repository holds ---- */

#define STRATA_DIGEST_MAX 72 /* "sha256:" + 64 hex digits + NUL */

/*
 * Creates layer `id` on `parent` (NULL: a base layer) as a thin layer whose
 * image is the parent's (which must be thin) plus layer `digest`
 * ("sha256:<hex>") of repository `repo` (NULL: the driver option
 * thin.repo), found in the thin root at .layers/<hh>/<hex>/layerfs.
 * -ENOENT when the repository does not hold it: nothing is made.
 */
STRATA_API int strata_create_thin(strata_driver *driver, const char *id, const char *parent, const char *digest,
				  const char *repo, strata_error *err);

/* OCI's chain id of a layer with `digest` ("sha256:<hex>", its diff id)
 * over `parent_chain` (NULL or "" for a base layer: the digest itself).
 * -EINVAL for a malformed digest or chain id. */
STRATA_API int strata_chain_id(const char *parent_chain, const char *digest, char ret[STRATA_DIGEST_MAX]);

/*
 * The digest of the layer in repository `repo` (NULL: thin.repo) whose
 * chain id over `parent_chain` (NULL for a base layer) is `chain_id`, as
 * "sha256:<hex>" in ret_digest: OCI's chain id, sha256 of "<parent chain>
 * sha256:<digest>".  -ENOENT (no message) when none is.  For containerd
 * callers that name a layer by its chain id only (plain `ctr`).
 */
STRATA_API int strata_thin_find_chain(strata_driver *driver, const char *repo, const char *parent_chain,
				      const char *chain_id, char ret_digest[STRATA_DIGEST_MAX], strata_error *err);

/* ---- layer tars (SPEC section 3) ---- */

enum {
	/* apply: refuse block and character device entries. */
	STRATA_TAR_NO_DEVICES = 1u << 0,
	/* diff, changes, size: compare the two mounted trees even when the
	 * parent is the layer's direct parent (the slow path; for checks). */
	STRATA_TAR_NAIVE = 1u << 1,
};

/* What an apply or a diff has done so far. */
typedef struct strata_progress {
	uint64_t bytes;	  /* file content bytes read (apply) or written (diff) */
	uint64_t entries; /* tar entries handled */
	int done;	  /* 1 on the last call */
} strata_progress;

typedef void (*strata_progress_fn)(const strata_progress *progress, void *data);

typedef struct strata_tar_options {
	unsigned flags;		     /* STRATA_TAR_* */
	strata_progress_fn progress; /* may be NULL; called often, from the calling thread */
	void *progress_data;
	/* May be NULL.  Another thread sets *cancel to nonzero to stop the
	 * operation: apply then fails with -ECANCELED and leaves the layer as it
	 * was, even when its input has ended cleanly (a tar cut at an entry
	 * boundary looks complete: set *cancel before closing the input).
	 * Read with an atomic load. */
	const int *cancel;
	void *reserved[3]; /* zero */
} strata_tar_options;

/*
 * Extracts the layer tar read from `fd` (plain, gzip, zstd or xz) into the
 * layer's diff dir, converting .wh. whiteouts and opaque markers to
 * overlay's form and shifting owners through the driver's id maps.  The
 * layer must exist, be unmounted, be empty and have no child.  `parent` (NULL: not
 * checked) must be the layer's direct parent.  The tar is extracted into a
 * staging dir that replaces the diff dir only when complete: a failed or
 * interrupted apply leaves the layer as it was.  A hostile entry is
 * refused, naming it.  *ret_size gets the bytes of regular file content.
 * `options` may be NULL.
 */
STRATA_API int strata_apply_diff(strata_driver *driver, const char *id, const char *parent, int fd,
				 const strata_tar_options *options, uint64_t *ret_size, strata_error *err);

/*
 * Writes the changes of layer `id` against `parent` as a PAX tar to `fd`.
 * `parent` NULL (or the direct parent): the layer's own diff dir, with
 * whiteouts and opaque dirs in .wh. form.  Any other parent ("" for none):
 * both trees are mounted and compared, deletions written as whiteouts.
 */
STRATA_API int strata_diff(strata_driver *driver, const char *id, const char *parent, int fd,
			   const strata_tar_options *options, strata_error *err);

/* Bytes of regular file content in the changes (each inode once). */
STRATA_API int strata_diff_size(strata_driver *driver, const char *id, const char *parent,
				const strata_tar_options *options, uint64_t *ret_size, strata_error *err);

/* Docker's change kinds (its ChangeModify, ChangeAdd, ChangeDelete). */
typedef enum strata_change_kind {
	STRATA_CHANGE_MODIFY = 0,
	STRATA_CHANGE_ADD = 1,
	STRATA_CHANGE_DELETE = 2,
} strata_change_kind;

typedef struct strata_change {
	char *path; /* absolute in the layer's view: "/etc/passwd" */
	strata_change_kind kind;
} strata_change;

typedef struct strata_change_list {
	size_t n;
	strata_change *items;
} strata_change_list;

/* The changes of `id` against `parent` (as strata_diff), sorted by path. */
STRATA_API int strata_changes(strata_driver *driver, const char *id, const char *parent,
			      const strata_tar_options *options, strata_change_list *ret_changes, strata_error *err);
STRATA_API void strata_change_list_clear(strata_change_list *list);

/* ---- thin layers (SPEC section 4) ----
 * A layer whose diff dir holds thin.json has its files on a shared
 * read-only filesystem.  Driver options:
 *   thin.root=PATH          where repositories are mounted (default /cvmfs)
 *   thin.mount=external|internal
 *                           repositories are mounted already (default), or
 *                           strata mounts each on first use and unmounts it
 *                           after its last user
 *   thin.mount_cmd=CMD, thin.umount_cmd=CMD
 *                           sh -c commands for internal mounts, with
 *                           $STRATA_REPO and $STRATA_MOUNTPOINT set
 *                           (default: mount -t cvmfs / umount)
 *   thin.publisher=dir:PATH|cmd:CMD|cvmfs
 *                           where a diff on a thin image publishes layers:
 *                           extracted under PATH, the tar on CMD's stdin,
 *                           or cvmfs_server ingest on a CernVM-FS release
 *                           manager (whiteouts as devices, opaque dirs
 *                           flattened over the chain below, one publish
 *                           per repository at a time, aborted on failure)
 *   thin.remount_cmd=CMD    after a cvmfs publish: the reading client sees
 *                           the new revision (default: cvmfs_talk -i
 *                           "$STRATA_REPO" remount sync)
 *   thin.repo=NAME          the repository they go to (default: that of the
 *                           image's top layer)
 *   thin.timeout=SECONDS    for each command (default 300)
 */

typedef struct strata_thin_layer {
	char *digest; /* sha256, lowercase hex */
	char *url;    /* cvmfs://<repo>/<path> */
	char *path;   /* the dir it resolves to; NULL when it does not */
	int status;   /* 0, or a negative errno: -ENOENT missing, -EBADMSG not as published */
	char *detail; /* why, when status is not 0 */
	char *note;   /* verify: what the repository's filesystem is known to lose, or NULL */
} strata_thin_layer;

typedef struct strata_thin_report {
	char *json; /* the layer's thin.json, canonical form */
	size_t n;
	strata_thin_layer *layers; /* base first */
} strata_thin_report;

enum {
	/* inspect: also hash each layer's content and compare its digest. */
	STRATA_THIN_VERIFY = 1u << 0,
};

/* Describes thin layer `id`: every layer of its image and where it
 * resolves.  Returns the number of layers with a problem (0: all good) or
 * a negative errno (not a thin layer, unreadable thin.json, ...). */
STRATA_API int strata_thin_inspect(strata_driver *driver, const char *id, unsigned flags, strata_thin_report *ret,
				   strata_error *err);
STRATA_API void strata_thin_report_clear(strata_thin_report *report);

/* Publishes the chain of `id` (the layers above its thin image, if it is
 * on one; else all) into repository `repo` ("NAME" or "cvmfs://NAME")
 * with `publisher` (NULL: thin.publisher) and returns in *ret_json (caller
 * frees) the thin.json of a thin image for it. */
STRATA_API int strata_thin_make(strata_driver *driver, const char *id, const char *repo, const char *publisher,
				char **ret_json, strata_error *err);

/* What strata_thin_make_from has done, after each layer. */
typedef struct strata_thin_make_progress {
	size_t index, total; /* this layer is number index (1-based) of total, base first */
	const char *digest;  /* sha256 (hex) of the layer tar, its diff_id */
	uint64_t size;	     /* bytes of the layer tar, uncompressed */
	const char *path;    /* where it is in the repository (the url's path); NULL for a duplicate */
	int existed;	     /* the repository had it already: not published again */
	size_t duplicate;    /* nonzero: the same as layer number `duplicate` below, listed once */
} strata_thin_make_progress;

typedef void (*strata_thin_make_fn)(const strata_thin_make_progress *progress, void *data);

typedef struct strata_thin_make_options {
	const char *repo;      /* "NAME" or "cvmfs://NAME"; NULL: driver option thin.repo */
	const char *publisher; /* "dir:PATH" or "cmd:COMMAND"; NULL: driver option thin.publisher */
	/* The image to take when the archive holds several (a RepoTag, an
	 * org.opencontainers.image.ref.name or io.containerd.image.name;
	 * "NAME" is "NAME:latest"), and the tag of the loadable image; NULL:
	 * the archive's only image, with its own tags. */
	const char *tag;
	int out_fd;		      /* >= 0: write a loadable thin image (a docker save archive) here; -1: none */
	strata_thin_make_fn progress; /* may be NULL; called from the calling thread */
	void *progress_data;
	void *reserved[4]; /* zero */
} strata_thin_make_options;

/*
 * Publishes the layers of the image in `image_path` into a repository,
 * without Docker: a `docker save` archive (classic or Docker 25's layout),
 * an OCI image layout directory or an OCI archive, compressed or not, with
 * plain, gzip or zstd layers.  Every layer is checked first (its blob
 * against its digest, its tar against the config's diff_id), so an archive
 * that is not whole and right publishes nothing; then each, base first, is
 * decompressed into an unnamed temp file in the store root and published
 * (one the repository has is kept), the publisher being told the merged
 * names of the layers below.  *ret_json (caller frees): the thin.json of
 * the thin image.  With o->out_fd, also writes a docker save archive of
 * the thin image to it: one layer holding that thin.json, the original's
 * config (its rootfs and history made the thin image's) and tags (or
 * o->tag).  The input is untrusted: a hostile archive is refused, naming
 * what is wrong in it.
 */
STRATA_API int strata_thin_make_from(strata_driver *driver, const char *image_path, const strata_thin_make_options *o,
				     char **ret_json, strata_error *err);

/* ---- AUFS-format stores (SPEC section 2) ---- */

/* What an import or check has done, after each layer. */
typedef struct strata_import_progress {
	size_t index, total; /* this layer is number index (1-based) of total */
	const char *id;
	int skipped;	  /* import: already imported by an earlier run */
	uint64_t entries; /* tar entries of this layer (import) or differences (check) */
} strata_import_progress;

typedef void (*strata_import_fn)(const strata_import_progress *progress, void *data);

typedef struct strata_import_stats {
	size_t layers;		     /* imported now */
	size_t skipped;		     /* imported by an earlier, interrupted run */
	uint64_t files, dirs, links; /* regular files, directories, symlinks and specials */
	uint64_t hardlinks;	     /* hardlinks (.wh..wh.plnk ones resolved to their visible path) */
	uint64_t whiteouts, opaque_dirs;
	uint64_t bytes; /* regular file content */
} strata_import_stats;

/*
 * Imports the layers of an AUFS store (the seed's layout: AUFS_ROOT/layers/<id>
 * chain files, AUFS_ROOT/diff/<id> dirs, as /var/lib/docker/aufs holds them)
 * into this store under the same ids, parents first, converting .wh.
 * whiteouts and .wh..wh..opq markers to overlay's and dropping aufs's
 * bookkeeping (.wh..wh.plnk, .wh..wh.aufs, .wh..wh.orph).  The source is
 * only read.  A run that was interrupted can be run again: layers it
 * finished are kept, a half-made one is made again (the store records
 * which layers the import made in ROOT/import-aufs/).  `progress` may be
 * NULL.
 */
STRATA_API int strata_import_aufs(strata_driver *driver, const char *aufs_root, strata_import_fn progress, void *data,
				  strata_import_stats *ret_stats, strata_error *err);

/* One difference between an imported layer's overlay view and the aufs view. */
typedef struct strata_check_diff {
	char *id;
	char *path;
	char *what;
} strata_check_diff;

typedef struct strata_check_report {
	size_t layers; /* compared */
	size_t n;
	strata_check_diff *diffs;
} strata_check_report;

/*
 * For every layer of the AUFS store: mounts the imported layer with overlay
 * and compares its merged tree with the merged tree the aufs semantics give
 * for the source chain (names, types, modes, owners, sizes, mtimes of
 * non-directories, symlink targets, device numbers, file contents).
 * Returns the number of differences (0: identical) or a negative errno.
 */
STRATA_API int strata_import_aufs_check(strata_driver *driver, const char *aufs_root, strata_import_fn progress,
					void *data, strata_check_report *ret, strata_error *err);
STRATA_API void strata_check_report_clear(strata_check_report *report);

/* ---- checking the store (strata check) ---- */

typedef struct strata_problem {
	char *layer;  /* the layer it concerns; NULL: the store as a whole */
	char *path;   /* the file or directory at fault (absolute) */
	char *what;   /* what is wrong */
	char *repair; /* what the repair did, or why there is none; may be NULL */
	int repaired; /* 1: fixed by STRATA_CHECK_REPAIR */
} strata_problem;

typedef struct strata_problem_list {
	size_t n;
	strata_problem *items;
} strata_problem_list;

enum {
	/* Fix what is safe to fix: finish interrupted removes, remove what
	 * interrupted creates and writes left, make missing empty dirs and
	 * short links, bring counts in line with the mount table.  What
	 * strata did not provably make is reported, never touched. */
	STRATA_CHECK_REPAIR = 1u << 0,
};

/*
 * Verifies every invariant the store relies on: chain files parse, name
 * existing parents and agree with them, no cycles; every layer has its
 * dirs and short links, and they lead to it; no debris of interrupted
 * operations; reference counts agree with the mount table and with live
 * holders; thin records name the thin layer of the chain; the engine
 * record and the store marker.  Safe beside other processes using the
 * store.  Returns the number of problems not repaired (0: clean) or a
 * negative errno; *ret lists every problem found.
 */
STRATA_API int strata_check(strata_driver *driver, unsigned flags, strata_problem_list *ret, strata_error *err);
STRATA_API void strata_problem_list_clear(strata_problem_list *list);

/* 0 if `id` is a valid layer id, -EINVAL (with a message) if not. */
STRATA_API int strata_id_validate(const char *id, strata_error *err);

#ifdef __cplusplus
}
#endif

#endif
