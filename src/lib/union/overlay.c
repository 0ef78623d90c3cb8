/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The overlayfs engine.
 *
 * Mount options every union gets, and why:
 *   index=off         a lower dir is shared by many unions and is also the
 *                     upper of its own layer's union; the inode index
 *                     would tie it to one of them.
 *   redirect_dir=off  renaming a lower directory fails with EXDEV and
 *                     tools copy it instead, so a layer's diff dir always
 *                     holds the files themselves, never a redirect xattr
 *                     that only this kernel's overlay can interpret.
 *   metacopy=off      for the same reason: a chmod copies the data up.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "union/union.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

static const char *const fixed_options[][2] = {
	{"index", "off"},
	{"redirect_dir", "off"},
	{"metacopy", "off"},
};

int overlay_label_validate(const char *label, strata_error *err)
{
	if (!label)
		return 0;
	for (const char *p = label; *p; p++)
		if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20 || *p == 0x7f)
			return error_setf(err, -EINVAL,
					  "invalid mount label \"%s\": quote, backslash or control character",
					  QUOTE(label));
	return 0;
}

int overlay_build_params(const union_request *req, overlay_param **ret_params, size_t *ret_n)
{
	size_t n = req->n_lowers + 2 + ELEMENTSOF(fixed_options) + 1;
	overlay_param *p = calloc(n, sizeof(*p));
	if (!p)
		return -ENOMEM;

	size_t k = 0;
#define PATH_PARAM(KEY, PATH)                                                                                          \
	do {                                                                                                           \
		p[k].key = (KEY);                                                                                      \
		p[k].value = strlen(PATH) <= OVERLAY_FSCONFIG_STRING_MAX ? (PATH) : NULL;                              \
		p[k].fd = -1;                                                                                          \
		k++;                                                                                                   \
	} while (0)

	for (size_t i = 0; i < req->n_lowers; i++)
		PATH_PARAM("lowerdir+", req->lowers[i]);
	if (req->upper) { /* none: a read-only union (a thin image itself) */
		PATH_PARAM("upperdir", req->upper);
		PATH_PARAM("workdir", req->work);
	}
#undef PATH_PARAM
	for (size_t i = 0; i < ELEMENTSOF(fixed_options); i++)
		p[k++] = (overlay_param){.key = fixed_options[i][0], .value = fixed_options[i][1], .fd = -1};
	if (req->selinux && req->label && *req->label)
		p[k++] = (overlay_param){.key = "context", .value = req->label, .fd = -1};

	*ret_params = p;
	*ret_n = k;
	return 0;
}

int overlay_build_legacy_data(const union_request *req, size_t page_size, char **ret_data, strata_error *err)
{
	strbuf sb = {0};
	int r = strbuf_append(&sb, "lowerdir=", 9);
	for (size_t i = 0; r >= 0 && i < req->n_lowers; i++)
		r = strbuf_appendf(&sb, "%s%s", i ? ":" : "", req->short_lowers[i]);
	if (r >= 0 && req->short_upper)
		r = strbuf_appendf(&sb, ",upperdir=%s,workdir=%s", req->short_upper, req->short_work);
	for (size_t i = 0; r >= 0 && i < ELEMENTSOF(fixed_options); i++)
		r = strbuf_appendf(&sb, ",%s=%s", fixed_options[i][0], fixed_options[i][1]);
	if (r >= 0 && req->selinux && req->label && *req->label)
		r = strbuf_appendf(&sb, ",context=\"%s\"", req->label);
	if (r < 0) {
		strbuf_release(&sb);
		return r;
	}
	/* The kernel copies one page of mount data, NUL included. */
	if (sb.len + 1 > page_size) {
		size_t len = sb.len;
		strbuf_release(&sb);
		return error_setf(err, -E2BIG,
				  "legacy mount options for %zu layers take %zu bytes, more than one page (%zu)",
				  req->n_lowers, len + 1, page_size);
	}
	*ret_data = strbuf_detach(&sb);
	return *ret_data ? 0 : -ENOMEM;
}

/* The kernel explains fsconfig failures through the context fd. */
static void fs_context_log(int fsfd, char *buf, size_t size)
{
	buf[0] = '\0';
	size_t used = 0;
	for (;;) {
		char line[512];
		ssize_t n = read(fsfd, line, sizeof(line) - 1);
		if (n <= 0)
			break;
		line[n] = '\0';
		if (line[n - 1] == '\n')
			line[--n] = '\0';
		/* Lines are "e overlay: message". */
		const char *msg = n > 2 && line[1] == ' ' ? line + 2 : line;
		int w = snprintf(buf + used, size - used, "%s%s", used ? "; " : "", msg);
		if (w < 0 || (size_t)w >= size - used)
			break;
		used += (size_t)w;
	}
}

int overlay_probe(void)
{
	_cleanup_close_ int fsfd = fsopen("overlay", FSOPEN_CLOEXEC);
	if (fsfd < 0)
		return 0;
	/* Setting lowers creates nothing: the context is dropped unused. */
	if (fsconfig(fsfd, FSCONFIG_SET_STRING, "lowerdir+", "/", 0) < 0)
		return 0;
	int features = OVERLAY_NEW_API;
	_cleanup_close_ int rootfd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (rootfd >= 0 && fsconfig(fsfd, FSCONFIG_SET_FD, "lowerdir+", NULL, rootfd) == 0)
		features |= OVERLAY_FD_LAYERS;
	return features;
}

static int mount_new_api(const union_request *req, strata_error *err)
{
	_cleanup_free_ overlay_param *params = NULL;
	size_t n = 0;
	int r = overlay_build_params(req, &params, &n);
	if (r < 0)
		return error_set(err, r, "build overlay options");

	_cleanup_close_ int fsfd = fsopen("overlay", FSOPEN_CLOEXEC);
	if (fsfd < 0)
		return error_set(err, negerrno(), "fsopen overlay");

	char log[512];
	for (size_t i = 0; i < n; i++) {
		const char *path = NULL;
		if (!params[i].value) {
			/* Too long for a string: hand the kernel an fd instead
			 * (overlay takes layers by fd since Linux 6.13). */
			path = !strcmp(params[i].key, "upperdir")  ? req->upper
			       : !strcmp(params[i].key, "workdir") ? req->work
								   : req->lowers[i];
			_cleanup_close_ int dfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
			if (dfd < 0)
				return error_set(err, negerrno(), "open %s", path);
			r = fsconfig(fsfd, FSCONFIG_SET_FD, params[i].key, NULL, dfd);
		} else {
			path = params[i].value;
			r = fsconfig(fsfd, FSCONFIG_SET_STRING, params[i].key, params[i].value, 0);
		}
		if (r < 0) {
			r = negerrno();
			fs_context_log(fsfd, log, sizeof(log));
			return error_setf(err, r, "fsconfig %s=%s: %s", params[i].key, path,
					  log[0] ? log : strerror(-r));
		}
	}
	if (fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
		r = negerrno();
		fs_context_log(fsfd, log, sizeof(log));
		return error_setf(err, r, "create overlay with %zu layers: %s", req->n_lowers + 1,
				  log[0] ? log : strerror(-r));
	}
	_cleanup_close_ int mfd = fsmount(fsfd, FSMOUNT_CLOEXEC, 0);
	if (mfd < 0)
		return error_set(err, negerrno(), "fsmount overlay");
	if (move_mount(mfd, "", AT_FDCWD, req->target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		return error_set(err, negerrno(), "move_mount to %s", req->target);
	return 0;
}

/*
 * mount(2) resolves relative paths against the working directory, which is
 * shared by every thread of the process.  The mount therefore runs in a
 * short-lived thread that unshares its fs state (CLONE_FS) and changes
 * directory privately; the caller's threads never see a chdir.
 */
struct legacy_job {
	int dirfd;
	const char *target;
	const char *data;
	int result;
};

static void *legacy_mount_thread(void *arg)
{
	struct legacy_job *job = arg;
	if (unshare(CLONE_FS) < 0 || fchdir(job->dirfd) < 0) {
		job->result = negerrno();
		return NULL;
	}
	job->result = mount("overlay", job->target, "overlay", 0, job->data) < 0 ? negerrno() : 0;
	return NULL;
}

static int mount_legacy(const union_request *req, strata_error *err)
{
	_cleanup_free_ char *data = NULL;
	long page = sysconf(_SC_PAGESIZE);
	int r = overlay_build_legacy_data(req, page > 0 ? (size_t)page : 4096, &data, err);
	if (r < 0)
		return r;

	struct legacy_job job = {.dirfd = req->short_dirfd, .target = req->target, .data = data, .result = 0};
	pthread_t t;
	r = -pthread_create(&t, NULL, legacy_mount_thread, &job);
	if (r < 0)
		return error_set(err, r, "start mount thread");
	pthread_join(t, NULL);
	if (job.result < 0)
		return error_set(err, job.result, "mount overlay at %s (legacy, %zu layers)", req->target,
				 req->n_lowers + 1);
	return 0;
}

int overlay_mount(const union_request *req, overlay_api api, strata_error *err)
{
	int r = overlay_label_validate(req->label, err);
	if (r < 0)
		return r;
	if (api == OVERLAY_API_LEGACY)
		return mount_legacy(req, err);
	return mount_new_api(req, err);
}

#ifndef AUFS_SUPER_MAGIC
#define AUFS_SUPER_MAGIC 0x61756673
#endif

/* What strata mounts at a layer's mnt/<id>: overlay or aufs. */
static bool union_fstype(unsigned long type)
{
	return type == OVERLAYFS_SUPER_MAGIC || type == AUFS_SUPER_MAGIC;
}

static int foreign_mount(const char *path, unsigned long type, strata_error *err)
{
	return error_setf(err, -EBUSY,
			  "%s: a mount strata did not make is there (filesystem type 0x%lx); strata will not use "
			  "or unmount it",
			  path, type);
}

int union_mounted_at(int dirfd, const char *name, const char *path, strata_error *err)
{
	int r = fs_is_mount_point_at(dirfd, name);
	if (r == -ENOENT || r == 0)
		return 0;
	if (r < 0)
		return error_set(err, r, "stat %s", path);
	_cleanup_close_ int fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	struct statfs sfs;
	if (fd < 0 || fstatfs(fd, &sfs) < 0)
		return error_set(err, negerrno(), "statfs %s", path);
	if (!union_fstype((unsigned long)sfs.f_type))
		return foreign_mount(path, (unsigned long)sfs.f_type, err);
	return 1;
}

/* Mounts below target (not target itself): none of them is strata's. */
static int nested_mount(const char *target, char **ret_first)
{
	mount_entry *m = NULL;
	size_t n = 0;
	int r = mountinfo_under(target, &m, &n);
	if (r < 0)
		return r;
	*ret_first = NULL;
	for (size_t i = 0; i < n && !*ret_first; i++)
		if (strcmp(m[i].mountpoint, target) != 0)
			*ret_first = strdup(m[i].mountpoint);
	mount_entries_free(m, n);
	return *ret_first ? 1 : 0;
}

int union_unmount(const char *target, strata_error *err)
{
	/* Only strata's own union goes: nothing else mounted there, and
	 * nothing mounted inside it, is unmounted. */
	int r = union_mounted_at(AT_FDCWD, target, target, err);
	if (r <= 0)
		return r;
	if (umount2(target, UMOUNT_NOFOLLOW) == 0)
		return 0;
	/* Unmounting is idempotent: EINVAL (not a mount point, any more) and
	 * ENOENT (no such dir) leave what the caller asked for.  Callers need
	 * no check first, and a check made before taking a lock cannot go
	 * stale. */
	if (errno == EINVAL || errno == ENOENT)
		return 0;
	if (errno != EBUSY)
		return error_set(err, negerrno(), "unmount %s", target);
	/* Busy: an open file (detached, as Docker's overlay2 does, so a stray
	 * open file cannot pin a layer forever), or a mount inside it that
	 * detaching would take along. */
	_cleanup_free_ char *inner = NULL;
	r = nested_mount(target, &inner);
	if (r < 0)
		return error_set(err, r, "unmount %s: read /proc/self/mountinfo", target);
	if (r > 0)
		return error_setf(err, -EBUSY,
				  "unmount %s: %s is mounted inside it and is not strata's; unmount it first", target,
				  inner);
	if (umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
		return 0;
	return error_set(err, negerrno(), "unmount %s", target);
}
