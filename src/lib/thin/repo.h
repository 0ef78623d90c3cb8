/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Where thin layers live and how they get there: the driver's thin
 * options, the repositories' mounts (internal method), resolving a layer
 * to its directory, and publishing new layers.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "strata.h"
#include "thin/thin.h"

#define THIN_DEFAULT_ROOT	 "/cvmfs"
#define THIN_DEFAULT_MOUNT_CMD	 "mount -t cvmfs \"$STRATA_REPO\" \"$STRATA_MOUNTPOINT\""
#define THIN_DEFAULT_UMOUNT_CMD	 "umount \"$STRATA_MOUNTPOINT\""
#define THIN_DEFAULT_TIMEOUT	 300
#define THIN_DEFAULT_REMOUNT_CMD "cvmfs_talk -i \"$STRATA_REPO\" remount sync"
#define THIN_RECORD		 "strata-layer.json" /* beside layerfs: what was published */

/* Messages for whoever runs strata (the CLI's stderr, serve's log):
 * level 0 information, 1 a warning.  Set with strata_driver_set_log. */
typedef void (*thin_log_fn)(int level, const char *message, void *data);

typedef struct thin_config {
	char *root;	    /* where repositories are mounted, <root>/<repo> */
	bool internal;	    /* strata mounts a repository on first use */
	char *mount_cmd;    /* run with sh -c; $STRATA_REPO, $STRATA_MOUNTPOINT */
	char *umount_cmd;   /* likewise, after the repository's last user */
	char *publisher;    /* "dir:PATH", "cmd:COMMAND" or "cvmfs"; NULL: none */
	char *repo;	    /* publish into this repository; NULL: the image's top layer's */
	unsigned timeout_s; /* for each command */
	char *remount_cmd;  /* cvmfs publisher: makes the reading client see a new revision */
	thin_log_fn log;    /* may be NULL */
	void *log_data;
} thin_config;

/* Logs a formatted message through c->log, if set. */
void thin_log(const thin_config *c, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

int thin_config_init(thin_config *c);
void thin_config_release(thin_config *c);
/* Applies "thin.<key>=value": 1 if it was a thin option, 0 if the key is
 * not one, -EINVAL (err says why) for a bad value. */
int thin_config_set(thin_config *c, const char *key, size_t key_len, const char *value, strata_error *err);
/* Checks a publisher spec ("dir:/abs/path" or "cmd:COMMAND"). */
int thin_publisher_validate(const char *spec, strata_error *err);

/* ---- commands (run.c) ---- */
/*
 * Runs `cmd` with /bin/sh -c, `env` (KEY=VALUE, NULL-terminated) added to
 * the environment, stdin from stdin_fd (-1: /dev/null), in its own process
 * group, killed after timeout_s.  A non-zero exit is an error that gives
 * the status and the last line the command wrote to stderr.  A command
 * that fails or times out has what is left of its process group killed.
 */
int thin_run(const char *cmd, const char *const *env, int stdin_fd, unsigned timeout_s, strata_error *err);
/* thin_run, calling started(its process group, data) once it runs. */
int thin_run_notify(const char *cmd, const char *const *env, int stdin_fd, unsigned timeout_s,
		    void (*started)(pid_t pgid, void *data), void *data, strata_error *err);
/* Whether a process of group pgid is still running (zombies are not). */
bool thin_group_running(pid_t pgid);

/* ---- resolving (resolve.c) ---- */
/*
 * The directory holding layer l: <root>/<repo>/<path>, else
 * <root>/<repo>/.layers/<hh>/<hex>/layerfs.  -ENOENT naming the digest and
 * both paths when neither is a directory; -EBADMSG when the record written
 * beside it at publication names another digest.
 */
int thin_resolve(const thin_config *c, const thin_layer *l, char **ret_path, strata_error *err);
/* 1 if <root>/<repo>/<path> is a layer dir whose record (if any) names
 * digest, 0 if not (exactly there: no fallback). */
int thin_published_at(const thin_config *c, const char *repo, const char *path, const char *digest);

/* ---- repository mounts, internal method (repos.c) ----
 * State lives in the store's thin dir (state_fd): users/<holder> lists the
 * repositories a holder (a mounted layer) uses, mounted/<repo> marks a
 * repository strata mounted.  A repository's count is the number of
 * holders naming it: it goes up on acquire and down on release, and the
 * last release unmounts it.  All under an flock on the dir's "lock". */
int thin_repos_acquire(const thin_config *c, int state_fd, const char *holder, char *const *repos, strata_error *err);
/* A holder with no record is fine (nothing held). */
int thin_repos_release(const thin_config *c, int state_fd, const char *holder, strata_error *err);
/* Drops every holder for which keep(holder, data) is false, then unmounts
 * what is left unused. */
int thin_repos_prune(const thin_config *c, int state_fd, bool (*keep)(const char *holder, void *data), void *data,
		     strata_error *err);
/* "repo=N users" for status, NULL-terminated, caller frees (strv). */
int thin_repos_describe(int state_fd, char ***ret);

/* ---- publishing (publish.c) ---- */
/* sha256 of everything in fd from offset 0, lowercase hex. */
int thin_digest_fd(int fd, char ret[THIN_DIGEST_LEN + 1], uint64_t *ret_size);

/*
 * The layers under the one being published, as the publisher may need
 * them: a filesystem that cannot mark a directory opaque (CernVM-FS keeps
 * no xattrs) gets an opaque directory as explicit whiteouts of every name
 * the layers below hold in it, which is only right over those layers.
 */
typedef struct thin_lower {
	/* The names in directory `dir` (relative, no leading '/', "" for the
	 * root) of the layers below, merged as overlay merges them (whited out
	 * names absent): NULL-terminated, any order, caller frees (strv).  A
	 * dir they do not have gives an empty list.  NULL: no layers below. */
	int (*list)(void *data, const char *dir, char ***ret_names);
	void *data;
	/* sha256 (hex) of the digests of the layers below, base first, each
	 * as 64 hex digits and a newline; "" when there are none. */
	char chain[THIN_DIGEST_LEN + 1];
} thin_lower;

/* ".layers/<hh>/<hex>/layerfs", or for a layer flattened over a chain
 * ".layers/<hh>/<hex>-<first 16 hex of the chain>/layerfs". */
#define THIN_PUBLISHED_PATH_MAX (THIN_LAYERFS_PATH_LEN + 18)

typedef struct thin_published {
	char path[THIN_PUBLISHED_PATH_MAX]; /* in the repository: the url's path */
	bool existed;			    /* it was there already: not published again */
} thin_published;

/*
 * Publishes the layer tar in tar_fd (a standard layer tar, .wh. whiteouts,
 * read from offset 0), whose sha256 is `digest`, into `repo` with
 * c->publisher, unless it is there already (seen through the thin root or
 * in the publish target).  `lower` (may be NULL: a base layer) describes
 * the layers under it.  *ret says where it is.
 *   dir:PATH  extracted into PATH/<path> atomically (a staging dir renamed
 *             into place), with its record;
 *   cmd:CMD   CMD run with the tar on stdin;
 *   cvmfs     cvmfs_server ingest (cvmfs.c).
 */
int thin_publish(const thin_config *c, const char *repo, int tar_fd, const char *digest, uint64_t tar_size,
		 const thin_lower *lower, thin_published *ret, strata_error *err);
