/* SPDX-License-Identifier: Apache-2.0 */
/*
 * thin.publisher=cvmfs: a layer into a CernVM-FS repository, from its
 * release manager, with `cvmfs_server ingest` (see repo.h).
 *
 * What ingest cannot do is done before it: whiteouts become 0/0 char
 * devices and opaque dirs explicit whiteouts over the layers below
 * (convert.c); the whole layer, its record and manifest go into one tar in
 * a file (a tar cut short on stdin would be published as half a layer),
 * ingested with -k (owners kept) below .layers/<hh>/<name>, so the layer
 * and its record appear in one revision.  One publish per repository at a
 * time (a lock: a second transaction would fail); a publish that fails or
 * is killed by the timeout is aborted, so the repository stays healthy.
 * Then the reading client is told to look (thin.remount_cmd), and the
 * layer must resolve through the thin root before the publish counts as
 * done: a commit that succeeds runs at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "thin/convert.h"
#include "thin/cvmfs.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

#define LOCK_DIR	 "/run/lock"
#define SERVER_CONF_DIR	 "/etc/cvmfs/repositories.d"
#define POLL_MS		 200
#define REMOUNT_AGAIN_MS 5000
/* Looking at and aborting a transaction after a failed ingest: given this
 * long at least, whatever thin.timeout (which the ingest may just have
 * used up). */
#define RECOVERY_TIMEOUT_S 120
/* An ingest opens its transaction within this long of its start. */
#define INGEST_OPENS_S 60

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A dir of the release manager of repo: `key` (CVMFS_UNION_DIR=, ...) of
 * its server.conf, or <fallback>/<repo>.  NULL when this machine is not
 * its release manager. */
static char *server_dir(const char *repo, const char *key, const char *fallback)
{
	char *conf = NULL;
	if (asprintf(&conf, SERVER_CONF_DIR "/%s/server.conf", repo) < 0)
		return NULL;
	FILE *f = fopen(conf, "re");
	free(conf);
	if (!f)
		return NULL;
	char line[4096], *dir = NULL;
	while (!dir && fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, strlen(key)) != 0)
			continue;
		char *v = line + strlen(key);
		v[strcspn(v, "\n")] = '\0';
		if (*v == '"' || *v == '\'') {
			v++;
			v[strcspn(v, "\"'")] = '\0';
		}
		dir = strdup(v);
	}
	fclose(f);
	if (!dir && asprintf(&dir, "%s/%s", fallback, repo) < 0)
		dir = NULL;
	return dir;
}

/* The release manager's union of repo (its /cvmfs/<repo>). */
static char *release_manager_union(const char *repo)
{
	return server_dir(repo, "CVMFS_UNION_DIR=", "/cvmfs");
}

int cvmfs_check_thin_root(const thin_config *c, const char *repo, strata_error *err)
{
	_cleanup_free_ char *uni = release_manager_union(repo);
	if (!uni)
		return 0;
	_cleanup_free_ char *mine = NULL;
	if (asprintf(&mine, "%s/%s", c->root, repo) < 0)
		return -ENOMEM;
	struct stat a, b;
	if (stat(mine, &a) < 0 || stat(uni, &b) < 0)
		return 0;
	if (a.st_dev != b.st_dev || a.st_ino != b.st_ino)
		return 0;
	return error_setf(err, -EDEADLK,
			  "the thin root's %s is the release manager's own union mount of repository %s (%s): a "
			  "publish ends by remounting it, which waits for every union strata holds on it; mount a "
			  "separate client of %s and point thin.root at its parent",
			  mine, repo, uni, repo);
}

/* 1 if the repository holds the layer at path, as its release manager
 * sees it (its union, read-only outside a transaction): published, even
 * if no client was told yet (the publisher was killed before it could),
 * or none of the thin root mounts the repository now (internal method). */
static int published_on_server(const thin_config *c, const char *repo, const char *path, const char *digest)
{
	_cleanup_free_ char *uni = release_manager_union(repo);
	size_t n = uni ? strlen(uni) : 0, rl = strlen(repo);
	if (n <= rl + 1 || uni[n - rl - 1] != '/' || strcmp(uni + n - rl, repo) != 0)
		return 0;
	uni[n - rl - 1] = '\0';
	thin_config server = *c;
	server.root = uni;
	return thin_published_at(&server, repo, path, digest);
}

/* The lock of one repository's publishes, across processes and stores. */
static int lock_repo(const thin_config *c, const char *repo, int *ret_fd, strata_error *err)
{
	_cleanup_free_ char *path = NULL;
	if (asprintf(&path, LOCK_DIR "/strata-cvmfs-%s.lock", repo) < 0)
		return -ENOMEM;
	int fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return error_set(err, negerrno(), "open %s", path);
	if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
		*ret_fd = fd;
		return 0;
	}
	thin_log(c, 0, "publish to %s: waiting for another publish to finish (lock %s)", repo, path);
	long long deadline = now_ms() + (long long)c->timeout_s * 1000;
	while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK && errno != EINTR) {
			int r = error_set(err, negerrno(), "lock %s", path);
			close(fd);
			return r;
		}
		if (now_ms() > deadline) {
			close(fd);
			return error_setf(err, -ETIMEDOUT, "another publish to %s held %s for more than %us", repo,
					  path, c->timeout_s);
		}
		sleep_ms(POLL_MS);
	}
	*ret_fd = fd;
	return 0;
}

static unsigned recovery_timeout(const thin_config *c)
{
	return c->timeout_s > RECOVERY_TIMEOUT_S ? c->timeout_s : RECOVERY_TIMEOUT_S;
}

/* 1 if the repository is in a transaction. */
static int in_transaction(const thin_config *c, const char *repo)
{
	/* What cvmfs_server itself looks at (2.12: is_in_transaction checks
	 * <spool>/in_transaction.lock): no command to fail or be slow. */
	_cleanup_free_ char *spool = server_dir(repo, "CVMFS_SPOOL_DIR=", "/var/spool/cvmfs");
	_cleanup_free_ char *flag = NULL;
	if (spool && asprintf(&flag, "%s/in_transaction.lock", spool) >= 0 && access(flag, F_OK) == 0)
		return 1;
	_cleanup_free_ char *e_repo = NULL;
	if (asprintf(&e_repo, "STRATA_REPO=%s", repo) < 0)
		return -ENOMEM;
	const char *env[] = {e_repo, NULL};
	/* And its own word ("NAME (stratum0 / local - in transaction)"),
	 * for versions that keep the flag elsewhere. */
	return thin_run("cvmfs_server list | grep -F -- \"$STRATA_REPO (\" | grep -q 'in transaction'", env, -1,
			recovery_timeout(c), NULL) == 0;
}

static int abort_transaction(const thin_config *c, const char *repo, strata_error *err)
{
	_cleanup_free_ char *e_repo = NULL;
	if (asprintf(&e_repo, "STRATA_REPO=%s", repo) < 0)
		return -ENOMEM;
	const char *env[] = {e_repo, NULL};
	return thin_run("cvmfs_server abort -f \"$STRATA_REPO\"", env, -1, recovery_timeout(c), err);
}

/* 1 if <root>/<repo> is a mount point. */
static int thin_root_mounted(const thin_config *c, const char *repo)
{
	_cleanup_close_ int fd = open(c->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : negerrno();
	int r = fs_is_mount_point_at(fd, repo);
	return r == -ENOENT ? 0 : r;
}

/*
 * A publish whose strata was killed (and its ingest with it, as all of a
 * service's processes are) leaves the repository in the transaction that
 * ingest opened, and every later publish would be refused.  The marker
 * LOCK_DIR/strata-cvmfs-<repo>.ingest says so: written (holding the
 * ingest's process group) once the ingest runs, removed once strata is
 * done with it, both under the repository's lock.
 */
static char *marker_path(const char *repo)
{
	char *p = NULL;
	return asprintf(&p, LOCK_DIR "/strata-cvmfs-%s.ingest", repo) < 0 ? NULL : p;
}

static void marker_write(pid_t pgid, void *data)
{
	const char *path = data;
	char text[32];
	int n = snprintf(text, sizeof(text), "%ld\n", (long)pgid);
	/* LOCK_DIR is world-writable (sticky): a new file of ours, never one
	 * someone else left there. */
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd >= 0) {
		if (write(fd, text, (size_t)n) != n)
			unlink(path);
		close(fd);
	}
}

static bool timespec_le(struct timespec a, struct timespec b)
{
	return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec <= b.tv_nsec);
}

/* Under the lock, before a publish: what an earlier one that did not
 * finish left is cleaned up.  Its ingest, if it still runs, is waited
 * for; then a transaction opened after its marker was written and soon
 * enough to be its ingest's (nobody else can open one while that is
 * open) is aborted.  Anything else is left alone (the caller refuses a
 * transaction it did not open). */
static int recover_abandoned(const thin_config *c, const char *repo, strata_error *err)
{
	_cleanup_free_ char *path = marker_path(repo);
	if (!path)
		return -ENOMEM;
	char text[32] = "";
	struct stat mst;
	_cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : error_set(err, negerrno(), "open %s", path);
	if (fstat(fd, &mst) < 0 || read(fd, text, sizeof(text) - 1) < 0)
		return error_set(err, negerrno(), "read %s", path);
	if (mst.st_uid != geteuid() || !S_ISREG(mst.st_mode)) {
		thin_log(c, 1, "publish to %s: %s is not a file strata wrote: ignored", repo, path);
		return 0;
	}
	char *end = NULL;
	long pgid = strtol(text, &end, 10);
	if (pgid > 1 && end != text && thin_group_running((pid_t)pgid)) {
		thin_log(c, 0,
			 "publish to %s: waiting for the ingest of an earlier publish that did not finish "
			 "(process group %ld, %s)",
			 repo, pgid, path);
		long long deadline = now_ms() + (long long)c->timeout_s * 1000;
		while (thin_group_running((pid_t)pgid)) {
			if (now_ms() > deadline)
				return error_setf(err, -EBUSY,
						  "the ingest of an earlier publish to %s that did not finish (process "
						  "group %ld, %s) still runs after %us",
						  repo, pgid, path, c->timeout_s);
			sleep_ms(POLL_MS);
		}
	}
	_cleanup_free_ char *spool = server_dir(repo, "CVMFS_SPOOL_DIR=", "/var/spool/cvmfs");
	_cleanup_free_ char *flag = NULL;
	if (!spool || asprintf(&flag, "%s/in_transaction.lock", spool) < 0)
		return -ENOMEM;
	struct stat fst;
	/* Timestamps of two filesystems: a second of slack. */
	struct timespec from = {mst.st_mtim.tv_sec - 1, mst.st_mtim.tv_nsec},
			until = {mst.st_mtim.tv_sec + INGEST_OPENS_S, mst.st_mtim.tv_nsec};
	if (in_transaction(c, repo) > 0 && stat(flag, &fst) == 0 && timespec_le(from, fst.st_mtim) &&
	    timespec_le(fst.st_mtim, until)) {
		strata_error aerr = {0};
		int r = abort_transaction(c, repo, &aerr);
		if (r < 0) {
			if (err)
				*err = aerr;
			return error_prefix(err, r,
					    "abort the transaction an earlier publish to %s that did not finish left",
					    repo);
		}
		thin_log(c, 1,
			 "publish to %s: an earlier publish did not finish (its strata was killed?) and left the "
			 "repository in its ingest's transaction: aborted",
			 repo);
	}
	unlink(path);
	return 0;
}

/* The client sees the new revision, and the layer resolves through the
 * thin root. */
static int wait_visible(const thin_config *c, const char *repo, const char *path, const char *digest, strata_error *err)
{
	/* The internal method with no union using the repository now: there
	 * is no client to tell, and the next mount reads the new revision. */
	if (c->internal && thin_root_mounted(c, repo) == 0)
		return 0;
	_cleanup_free_ char *e_repo = NULL;
	if (asprintf(&e_repo, "STRATA_REPO=%s", repo) < 0)
		return -ENOMEM;
	const char *env[] = {e_repo, NULL};
	const char *remount = c->remount_cmd ? c->remount_cmd : THIN_DEFAULT_REMOUNT_CMD;
	thin_layer l = {.repo = (char *)repo, .path = (char *)path};
	memcpy(l.digest, digest, THIN_DIGEST_LEN + 1);
	long long deadline = now_ms() + (long long)c->timeout_s * 1000, next_remount = 0;
	strata_error rerr = {0};
	for (;;) {
		if (now_ms() >= next_remount) {
			int r = thin_run(remount, env, -1, c->timeout_s, &rerr);
			if (r < 0 && !next_remount)
				thin_log(c, 1, "publish to %s: thin.remount_cmd failed: %s", repo, rerr.message);
			next_remount = now_ms() + REMOUNT_AGAIN_MS;
		}
		_cleanup_free_ char *found = NULL;
		strata_error e = {0};
		int r = thin_resolve(c, &l, &found, &e);
		if (r == 0)
			return 0;
		if (r != -ENOENT) {
			if (err)
				*err = e;
			return error_prefix(err, r, "after publishing");
		}
		if (now_ms() >= deadline)
			return error_setf(err, -ETIMEDOUT,
					  "published, but the layer did not appear at %s/%s/%s within %us (thin.root "
					  "%s; the client is told to look by thin.remount_cmd: %s%s%s)",
					  c->root, repo, path, c->timeout_s, c->root, remount,
					  rerr.message[0] ? ", which failed: " : "", rerr.message);
		sleep_ms(POLL_MS);
	}
}

int cvmfs_publish(const thin_config *c, const char *repo, int tar_fd, const char *digest, uint64_t tar_size,
		  const thin_lower *lower, thin_published *ret, strata_error *err)
{
	int r = cvmfs_check_thin_root(c, repo, err);
	if (r < 0)
		return r;
	/* The layer in the repository's form, in an unnamed file that the
	 * command reads through /proc (nothing is left if we die). */
	_cleanup_close_ int tmp = open("/var/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (tmp < 0)
		return error_set(err, negerrno(), "create a temp file in /var/tmp");
	repo_record rec = {.digest = digest,
			   .tar_size = tar_size,
			   .publisher = "strata (cvmfs)",
			   .over = lower && *lower->chain ? lower->chain : NULL};
	repo_form form = {0};
	r = repo_form_make(tar_fd, lower, REPO_FORM_FLATTEN | REPO_FORM_NO_XATTRS | REPO_FORM_NO_HARDLINKS, tmp, &rec,
			   &form, err);
	if (r < 0)
		return error_prefix(err, r, "convert the layer for CernVM-FS");
	bool flattened = form.flattened;
	uint64_t hardlinks = form.hardlinks, xattrs = form.xattrs;
	repo_form_release(&form);
	char name[THIN_DIGEST_LEN + 18];
	if (flattened)
		snprintf(name, sizeof(name), "%s-%.16s", digest, lower->chain);
	else
		snprintf(name, sizeof(name), "%s", digest);
	*ret = (thin_published){0};
	snprintf(ret->path, sizeof(ret->path), THIN_LAYERS_DIR "/%.2s/%s/" THIN_LAYERFS, digest, name);

	_cleanup_close_ int lock = -1;
	r = lock_repo(c, repo, &lock, err);
	if (r < 0)
		return r;
	/* Published already (maybe by another publisher while we waited). */
	if (thin_published_at(c, repo, ret->path, digest) > 0) {
		ret->existed = true;
		return 0;
	}
	r = recover_abandoned(c, repo, err);
	if (r < 0)
		return r;
	r = in_transaction(c, repo);
	if (r > 0)
		return error_setf(err, -EBUSY,
				  "repository %s is in a transaction strata did not open; it is left alone (finish it, "
				  "or cvmfs_server abort %s)",
				  repo, repo);
	if (published_on_server(c, repo, ret->path, digest) > 0) {
		ret->existed = true;
		flock(lock, LOCK_UN);
		return wait_visible(c, repo, ret->path, digest, err);
	}
	if (hardlinks)
		thin_log(c, 1, "layer sha256:%s: CernVM-FS keeps no hardlinks: %llu published as separate files",
			 digest, (unsigned long long)hardlinks);
	if (xattrs)
		thin_log(c, 1, "layer sha256:%s: CernVM-FS keeps no xattrs: those of %llu entr%s dropped", digest,
			 (unsigned long long)xattrs, xattrs == 1 ? "y" : "ies");

	_cleanup_free_ char *e_repo = NULL, *e_tar = NULL, *e_base = NULL;
	if (asprintf(&e_repo, "STRATA_REPO=%s", repo) < 0 ||
	    asprintf(&e_tar, "STRATA_TAR=/proc/%ld/fd/%d", (long)getpid(), tmp) < 0 ||
	    asprintf(&e_base, "STRATA_BASE=" THIN_LAYERS_DIR "/%.2s/%s", digest, name) < 0)
		return -ENOMEM;
	const char *env[] = {e_repo, e_tar, e_base, NULL};
	_cleanup_free_ char *marker = marker_path(repo);
	if (!marker)
		return -ENOMEM;
	strata_error ierr = {0};
	r = thin_run_notify("cvmfs_server ingest -k -t \"$STRATA_TAR\" -b \"$STRATA_BASE\" \"$STRATA_REPO\"", env, -1,
			    c->timeout_s, marker_write, marker, &ierr);
	if (r < 0) {
		/* Ours: the repository was in no transaction before it.  The
		 * marker stays if the abort fails: the next publish tries
		 * again. */
		strata_error aerr = {0};
		if (in_transaction(c, repo) > 0 && abort_transaction(c, repo, &aerr) < 0)
			thin_log(c, 1, "publish to %s: abort the failed transaction: %s", repo, aerr.message);
		else
			unlink(marker);
		if (err)
			*err = ierr;
		return error_prefix(err, r, "cvmfs_server ingest");
	}
	unlink(marker);
	flock(lock, LOCK_UN);
	return wait_visible(c, repo, ret->path, digest, err);
}
