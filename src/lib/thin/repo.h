/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Where thin layers live and how they get there: the driver's thin
 * options, the repositories' mounts (internal method), resolving a layer
 * to its directory, and publishing new layers.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "strata.h"
#include "thin/thin.h"

#define THIN_DEFAULT_ROOT	"/cvmfs"
#define THIN_DEFAULT_MOUNT_CMD	"mount -t cvmfs \"$STRATA_REPO\" \"$STRATA_MOUNTPOINT\""
#define THIN_DEFAULT_UMOUNT_CMD "umount \"$STRATA_MOUNTPOINT\""
#define THIN_DEFAULT_TIMEOUT	300
#define THIN_RECORD		"strata-layer.json" /* beside layerfs: what was published */

typedef struct thin_config {
	char *root;	    /* where repositories are mounted, <root>/<repo> */
	bool internal;	    /* strata mounts a repository on first use */
	char *mount_cmd;    /* run with sh -c; $STRATA_REPO, $STRATA_MOUNTPOINT */
	char *umount_cmd;   /* likewise, after the repository's last user */
	char *publisher;    /* "dir:PATH" or "cmd:COMMAND"; NULL: none */
	char *repo;	    /* publish into this repository; NULL: the image's top layer's */
	unsigned timeout_s; /* for each command */
} thin_config;

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
 * the status and the last line the command wrote to stderr.
 */
int thin_run(const char *cmd, const char *const *env, int stdin_fd, unsigned timeout_s, strata_error *err);

/* ---- resolving (resolve.c) ---- */
/*
 * The directory holding layer l: <root>/<repo>/<path>, else
 * <root>/<repo>/.layers/<hh>/<hex>/layerfs.  -ENOENT naming the digest and
 * both paths when neither is a directory; -EBADMSG when the record written
 * beside it at publication names another digest.
 */
int thin_resolve(const thin_config *c, const thin_layer *l, char **ret_path, strata_error *err);

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
 * Publishes the layer tar in tar_fd (read from offset 0), whose sha256 is
 * `digest`, into `repo` with c->publisher, so that it appears at
 * <repo>/.layers/<hh>/<hex>/layerfs.  dir: extracts it there atomically
 * (a staging dir renamed into place; a layer already there is kept);
 * cmd: runs the command with the tar on stdin.
 */
int thin_publish(const thin_config *c, const char *repo, int tar_fd, const char *digest, uint64_t tar_size,
		 strata_error *err);
