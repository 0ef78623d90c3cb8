/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Repository mounts for the internal method (see repo.h).
 *
 * Counting by holder records rather than by a number: a crash between a
 * mount and its record leaves a record (or a marker) that the next
 * acquire, release or prune reconciles, never a count that only grows.
 * A repository strata did not mount (already mounted, e.g. by autofs) is
 * used and never unmounted.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "thin/repo.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

#define USERS_DIR   "users"
#define MOUNTED_DIR "mounted"

typedef struct repo_state {
	int lock_fd, users_fd, mounted_fd;
} repo_state;

static void repo_state_close(repo_state *s)
{
	if (s->users_fd >= 0)
		close(s->users_fd);
	if (s->mounted_fd >= 0)
		close(s->mounted_fd);
	if (s->lock_fd >= 0)
		close(s->lock_fd); /* drops the flock */
	*s = (repo_state){-1, -1, -1};
}

static int open_subdir(int dirfd, const char *name, int *ret)
{
	int r = fs_mkdir_at(dirfd, name, 0700);
	if (r < 0 && r != -EEXIST)
		return r;
	*ret = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	return *ret < 0 ? negerrno() : 0;
}

static int repo_state_open(int state_fd, repo_state *s, strata_error *err)
{
	*s = (repo_state){-1, -1, -1};
	s->lock_fd = openat(state_fd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (s->lock_fd < 0)
		return error_set(err, negerrno(), "open thin/lock");
	while (flock(s->lock_fd, LOCK_EX) < 0)
		if (errno != EINTR) {
			int r = negerrno();
			repo_state_close(s);
			return error_set(err, r, "lock thin/lock");
		}
	int r = open_subdir(state_fd, USERS_DIR, &s->users_fd);
	if (r >= 0)
		r = open_subdir(state_fd, MOUNTED_DIR, &s->mounted_fd);
	if (r < 0) {
		repo_state_close(s);
		return error_set(err, r, "open thin/" USERS_DIR " and thin/" MOUNTED_DIR);
	}
	return 0;
}

static int mountpoint_of(const thin_config *c, const char *repo, char **ret)
{
	return asprintf(ret, "%s/%s", c->root, repo) < 0 ? -ENOMEM : 0;
}

/* 1 if <root>/<repo> is a mount point. */
static int repo_mounted(const thin_config *c, const char *repo)
{
	_cleanup_close_ int fd = open(c->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : negerrno();
	int r = fs_is_mount_point_at(fd, repo);
	return r == -ENOENT ? 0 : r;
}

static int run_for(const thin_config *c, const char *cmd, const char *repo, const char *what, strata_error *err)
{
	_cleanup_free_ char *mp = NULL, *env_repo = NULL, *env_mp = NULL;
	if (mountpoint_of(c, repo, &mp) < 0 || asprintf(&env_repo, "STRATA_REPO=%s", repo) < 0 ||
	    asprintf(&env_mp, "STRATA_MOUNTPOINT=%s", mp) < 0)
		return -ENOMEM;
	const char *env[] = {env_repo, env_mp, NULL};
	int r = thin_run(cmd, env, -1, c->timeout_s, err);
	return r < 0 ? error_prefix(err, r, "%s repository %s at %s", what, repo, mp) : 0;
}

static int mount_repo(const thin_config *c, repo_state *s, const char *repo, strata_error *err)
{
	int r = repo_mounted(c, repo);
	if (r < 0)
		return error_set(err, r, "stat %s/%s", c->root, repo);
	if (r > 0)
		return 0; /* ours from before, or someone else's: use it */
	_cleanup_free_ char *mp = NULL;
	if (mountpoint_of(c, repo, &mp) < 0)
		return -ENOMEM;
	/* The mount point, as mount(8) needs one (and the root too). */
	if (mkdir(c->root, 0755) < 0 && errno != EEXIST)
		return error_set(err, negerrno(), "mkdir %s", c->root);
	if (mkdir(mp, 0755) < 0 && errno != EEXIST)
		return error_set(err, negerrno(), "mkdir %s", mp);
	/* The marker first: a crash after the mount leaves it, so the mount
	 * is known as ours and the next prune unmounts it. */
	r = fs_write_atomic_at(s->mounted_fd, repo, "", 0, 0600, 0);
	if (r < 0)
		return error_set(err, r, "write thin/" MOUNTED_DIR "/%s", repo);
	r = run_for(c, c->mount_cmd, repo, "mount", err);
	if (r >= 0) {
		r = repo_mounted(c, repo);
		if (r == 0)
			r = error_setf(err, -EIO,
				       "mount repository %s: the mount command succeeded but %s is not a mount point",
				       repo, mp);
		else if (r < 0)
			r = error_set(err, r, "stat %s", mp);
	}
	if (r < 0)
		unlinkat(s->mounted_fd, repo, 0);
	return r < 0 ? r : 0;
}

static int unmount_repo(const thin_config *c, repo_state *s, const char *repo, strata_error *err)
{
	int r = repo_mounted(c, repo);
	if (r > 0)
		r = run_for(c, c->umount_cmd, repo, "unmount", err);
	else if (r < 0)
		r = error_set(err, r, "stat %s/%s", c->root, repo);
	if (r >= 0 && unlinkat(s->mounted_fd, repo, 0) < 0 && errno != ENOENT)
		r = error_set(err, negerrno(), "remove thin/" MOUNTED_DIR "/%s", repo);
	return r;
}

/* The repositories a holder's record names. */
static int read_holder(repo_state *s, const char *holder, char ***ret)
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int r = fs_read_at(s->users_fd, holder, 1u << 20, &data, &len);
	if (r < 0)
		return r;
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		n += data[i] == '\n';
	char **v = calloc(n + 2, sizeof(char *));
	if (!v)
		return -ENOMEM;
	size_t k = 0;
	for (char *p = data; *p;) {
		size_t l = strcspn(p, "\n");
		if (l > 0 && !(v[k++] = strndup(p, l))) {
			strv_free(v);
			return -ENOMEM;
		}
		p += l;
		if (*p)
			p++;
	}
	*ret = v;
	return 0;
}

/* Is `repo` named by any holder record? */
static int repo_in_use(repo_state *s, const char *repo)
{
	_cleanup_strv_free_ char **holders = NULL;
	int r = fs_list_dir(s->users_fd, &holders);
	if (r < 0)
		return r;
	for (char **h = holders; *h; h++) {
		if ((*h)[0] == '.')
			continue;
		_cleanup_strv_free_ char **repos = NULL;
		r = read_holder(s, *h, &repos);
		if (r == -ENOENT)
			continue;
		if (r < 0)
			return r;
		for (char **p = repos; *p; p++)
			if (!strcmp(*p, repo))
				return 1;
	}
	return 0;
}

/* Unmounts each repository strata mounted that no holder names now. */
static int unmount_unused(const thin_config *c, repo_state *s, strata_error *err)
{
	_cleanup_strv_free_ char **mounted = NULL;
	int r = fs_list_dir(s->mounted_fd, &mounted);
	if (r < 0)
		return error_set(err, r, "read thin/" MOUNTED_DIR);
	int first = 0;
	for (char **m = mounted; *m; m++) {
		if ((*m)[0] == '.' || !thin_repo_valid(*m))
			continue;
		r = repo_in_use(s, *m);
		if (r < 0)
			return error_set(err, r, "read thin/" USERS_DIR);
		if (r == 0) {
			r = unmount_repo(c, s, *m, first ? NULL : err);
			if (r < 0 && !first)
				first = r;
		}
	}
	return first;
}

int thin_repos_acquire(const thin_config *c, int state_fd, const char *holder, char *const *repos, strata_error *err)
{
	repo_state s;
	int r = repo_state_open(state_fd, &s, err);
	if (r < 0)
		return r;
	strbuf sb = {0};
	for (char *const *p = repos; *p && r >= 0; p++)
		r = strbuf_appendf(&sb, "%s\n", *p);
	/* Recorded before mounting: a repository is never mounted for a
	 * holder that no record names. */
	if (r >= 0) {
		r = fs_write_atomic_at(s.users_fd, holder, sb.buf ? sb.buf : "", sb.len, 0600, 0);
		if (r < 0)
			error_set(err, r, "write thin/" USERS_DIR "/%s", holder);
	}
	strbuf_release(&sb);
	for (char *const *p = repos; *p && r >= 0; p++)
		r = mount_repo(c, &s, *p, err);
	if (r < 0) {
		unlinkat(s.users_fd, holder, 0);
		unmount_unused(c, &s, NULL);
	}
	repo_state_close(&s);
	return r;
}

int thin_repos_release(const thin_config *c, int state_fd, const char *holder, strata_error *err)
{
	repo_state s;
	int r = repo_state_open(state_fd, &s, err);
	if (r < 0)
		return r;
	/* No record is fine (nothing held); what is unused goes either way. */
	if (unlinkat(s.users_fd, holder, 0) < 0 && errno != ENOENT)
		r = error_set(err, negerrno(), "remove thin/" USERS_DIR "/%s", holder);
	if (r >= 0)
		r = unmount_unused(c, &s, err);
	repo_state_close(&s);
	return r;
}

int thin_repos_prune(const thin_config *c, int state_fd, bool (*keep)(const char *holder, void *data), void *data,
		     strata_error *err)
{
	repo_state s;
	int r = repo_state_open(state_fd, &s, err);
	if (r < 0)
		return r;
	_cleanup_strv_free_ char **holders = NULL;
	r = fs_list_dir(s.users_fd, &holders);
	if (r < 0)
		r = error_set(err, r, "read thin/" USERS_DIR);
	for (char **h = holders; r >= 0 && *h; h++)
		if ((*h)[0] != '.' && !keep(*h, data) && unlinkat(s.users_fd, *h, 0) < 0 && errno != ENOENT)
			r = error_set(err, negerrno(), "remove thin/" USERS_DIR "/%s", *h);
	if (r >= 0)
		r = unmount_unused(c, &s, err);
	repo_state_close(&s);
	return r;
}

int thin_repos_describe(int state_fd, char ***ret)
{
	repo_state s;
	int r = repo_state_open(state_fd, &s, NULL);
	if (r < 0)
		return r;
	_cleanup_strv_free_ char **holders = NULL;
	_cleanup_strv_free_ char **names = NULL;
	size_t n = 0;
	r = fs_list_dir(s.users_fd, &holders);
	for (char **h = holders; r >= 0 && *h; h++) {
		_cleanup_strv_free_ char **repos = NULL;
		if ((*h)[0] == '.' || read_holder(&s, *h, &repos) < 0)
			continue;
		for (char **p = repos; *p && r >= 0; p++) {
			bool seen = false;
			for (size_t i = 0; i < n && !seen; i++)
				seen = !strcmp(names[i], *p);
			if (seen)
				continue;
			char **v = realloc(names, (n + 2) * sizeof(char *));
			if (!v) {
				r = -ENOMEM;
				break;
			}
			names = v;
			names[n] = strdup(*p);
			names[n + 1] = NULL;
			if (!names[n])
				r = -ENOMEM;
			else
				n++;
		}
	}
	char **out = calloc(n + 1, sizeof(char *));
	if (r >= 0 && !out)
		r = -ENOMEM;
	for (size_t i = 0; r >= 0 && i < n; i++) {
		unsigned users = 0;
		for (char **h = holders; *h; h++) {
			_cleanup_strv_free_ char **repos = NULL;
			if ((*h)[0] == '.' || read_holder(&s, *h, &repos) < 0)
				continue;
			for (char **p = repos; *p; p++)
				users += !strcmp(*p, names[i]);
		}
		bool ours = faccessat(s.mounted_fd, names[i], F_OK, AT_SYMLINK_NOFOLLOW) == 0;
		if (asprintf(&out[i], "%s (%u users%s)", names[i], users, ours ? ", mounted by strata" : "") < 0) {
			out[i] = NULL;
			r = -ENOMEM;
		}
	}
	repo_state_close(&s);
	if (r < 0) {
		strv_free(out);
		return r;
	}
	*ret = out;
	return 0;
}
