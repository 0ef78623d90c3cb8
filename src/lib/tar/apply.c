/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Extracting a layer tar into a directory.
 *
 * Security invariant: every path is resolved by the kernel beneath the
 * root fd with RESOLVE_NO_SYMLINKS (fs_open_beneath), and the last
 * component is created with *at() calls that never follow it (O_EXCL,
 * O_NOFOLLOW, AT_SYMLINK_NOFOLLOW).  So no entry can create, change or
 * follow anything outside the root, whatever symlinks earlier entries made:
 * an entry whose parent path crosses a symlink is refused, not resolved.
 * Names are cleaned lexically only to reject what is never valid (".."
 * components, absolute and empty names).  Nothing here calls getpwnam or
 * anything else that loads NSS modules: owners are numeric.
 *
 * Speed: extraction is mostly kernel time, so the work per entry is kept
 * to the syscalls it needs.  The last parent dir stays open (tars list a
 * directory's entries together); chown and chmod are skipped when creation
 * already gave the right owner and mode; directory modes and times are set
 * once at the end, deepest first, as libarchive's write_disk does (their
 * children would change the times, and a read-only mode would be set too
 * early).
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "tar/pool.h"
#include "tar/tar.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

#define READ_BLOCK (128 * 1024)
/* Regular files are written by a worker: files up to SMALL_FILE_MAX in
 * one job, larger ones a block at a time.  At most APPLY_QUEUE_BYTES are
 * in flight (memory stays flat) and APPLY_QUEUE_JOBS jobs (fds). */
#define SMALL_FILE_MAX	  (1024 * 1024)
#define APPLY_QUEUE_BYTES (8 * 1024 * 1024)
#define APPLY_QUEUE_JOBS  256
#define APPLY_WORKERS	  1
/* Content the kernel cannot copy_file_range goes through this much memory. */
#define COPY_BUF (256 * 1024)
/* With TAR_EARLY_WRITEBACK, a writeback of the tree starts in the
 * background after each this many bytes, so the caller's final sync
 * waits only for the tail instead of the whole layer. */
#define WRITEBACK_EVERY (32 * 1024 * 1024)

typedef struct dir_fixup {
	char *path;
	mode_t mode;
	uid_t uid;
	gid_t gid;
	struct timespec times[2];
} dir_fixup;

/* A thread that runs syncfs when kicked (TAR_EARLY_WRITEBACK).  Its
 * errors do not matter: the caller's own final sync reports them. */
typedef struct flusher {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool pending, stop, started;
	int fd;
	uint64_t unflushed;
} flusher;

static void *flusher_main(void *arg)
{
	flusher *f = arg;
	pthread_mutex_lock(&f->lock);
	for (;;) {
		while (!f->pending && !f->stop)
			pthread_cond_wait(&f->wake, &f->lock);
		if (!f->pending)
			break;
		f->pending = false;
		pthread_mutex_unlock(&f->lock);
		(void)syncfs(f->fd);
		pthread_mutex_lock(&f->lock);
	}
	pthread_mutex_unlock(&f->lock);
	return NULL;
}

static void flusher_start(flusher *f, int fd)
{
	f->fd = fd;
	pthread_mutex_init(&f->lock, NULL);
	pthread_cond_init(&f->wake, NULL);
	f->started = pthread_create(&f->thread, NULL, flusher_main, f) == 0;
}

static void flusher_add(flusher *f, uint64_t bytes)
{
	f->unflushed += bytes;
	if (!f->started || f->unflushed < WRITEBACK_EVERY)
		return;
	f->unflushed = 0;
	pthread_mutex_lock(&f->lock);
	f->pending = true;
	pthread_cond_signal(&f->wake);
	pthread_mutex_unlock(&f->lock);
}

static void flusher_stop(flusher *f)
{
	if (!f->started)
		return;
	pthread_mutex_lock(&f->lock);
	f->stop = true;
	f->pending = false;
	pthread_cond_signal(&f->wake);
	pthread_mutex_unlock(&f->lock);
	pthread_join(f->thread, NULL);
	pthread_mutex_destroy(&f->lock);
	pthread_cond_destroy(&f->wake);
	f->started = false;
}

typedef struct extractor {
	struct archive *a;
	int root_fd;
	const tar_opts *o;
	strata_error *err;
	const char *entry; /* raw name of the entry being extracted */
	mode_t umask;
	uid_t euid;
	gid_t egid;
	uid_t root_uid; /* the container's root on the host */
	gid_t root_gid;
	char *parent_path; /* the open parent dir, relative ("" root) */
	int parent_fd;
	dir_fixup *dirs;
	size_t n_dirs, alloc_dirs;
	uint64_t size;
	strata_progress progress;
	work_pool *pool;
	flusher flush;
	int input_fd;	   /* >= 0: an uncompressed tar in a plain file */
	int64_t copy_end;  /* stream offset where the next header must start, or -1 */
	off_t input_start; /* its offset at the start of the stream */
} extractor;

static int entry_fail(extractor *x, int code, const char *fmt, ...) _printf_(3, 4);
static int entry_fail(extractor *x, int code, const char *fmt, ...)
{
	char detail[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	char q[256];
	return error_setf(x->err, code, "entry \"%s\": %s", error_quote(x->entry, q, sizeof(q)), detail);
}

static int entry_syserr(extractor *x, int code, const char *what, const char *path)
{
	char q[256];
	return entry_fail(x, code, "%s \"%s\": %s", what, error_quote(path, q, sizeof(q)), strerror(-code));
}

/* The process umask, without changing it (umask(2) would race with other
 * threads): creation modes are trimmed by it, so it says when a chmod is
 * needed.  When unknown, chmod always. */
static mode_t read_umask(void)
{
	_cleanup_free_ char *status = NULL;
	size_t len;
	if (fs_read_at(AT_FDCWD, "/proc/self/status", 1 << 16, &status, &len) < 0)
		return 07777;
	const char *u = strstr(status, "\nUmask:");
	return u ? (mode_t)strtoul(u + 7, NULL, 8) & 0777 : 07777;
}

static void cache_drop(extractor *x)
{
	if (x->parent_fd >= 0)
		close(x->parent_fd);
	x->parent_fd = -1;
	free(x->parent_path);
	x->parent_path = NULL;
}

/* The cached parent fd is stale once the dir it names, or one above it,
 * is deleted to make room for a new entry. */
static void cache_drop_under(extractor *x, const char *removed)
{
	size_t n = strlen(removed);
	if (x->parent_path && !strncmp(x->parent_path, removed, n) &&
	    (x->parent_path[n] == '\0' || x->parent_path[n] == '/'))
		cache_drop(x);
}

static int resolve_error(extractor *x, int r, const char *dir)
{
	switch (r) {
	case -ELOOP:
		return entry_fail(x, r, "path \"%s\" goes through a symlink", dir);
	case -ENOTDIR:
		return entry_fail(x, r, "a component of \"%s\" is not a directory", dir);
	case -EXDEV:
		return entry_fail(x, r, "path \"%s\" leaves the layer", dir);
	default:
		return entry_syserr(x, r, "open", dir);
	}
}

/* Creates the missing dirs of `dir` one component at a time, as Docker
 * does for tars that omit parent entries (mode 0755, owner root). */
static int make_parents(extractor *x, const char *dir)
{
	_cleanup_close_ int fd = fcntl(x->root_fd, F_DUPFD_CLOEXEC, 3);
	if (fd < 0)
		return entry_syserr(x, negerrno(), "dup", ".");
	_cleanup_free_ char *copy = strdup(dir);
	if (!copy)
		return -ENOMEM;
	for (char *p = copy; *p;) {
		char *slash = strchrnul(p, '/');
		bool last = !*slash;
		*slash = '\0';
		int next = openat(fd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0 && errno == ENOENT) {
			if (mkdirat(fd, p, 0755) < 0 && errno != EEXIST)
				return entry_syserr(x, negerrno(), "mkdir", copy);
			next = openat(fd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			/* Owned by the container's root, as if the tar had it. */
			if (next >= 0 && (x->root_uid != x->euid || x->root_gid != x->egid) &&
			    fchown(next, x->root_uid, x->root_gid) < 0) {
				close(next);
				return entry_syserr(x, negerrno(), "chown", copy);
			}
		}
		if (next < 0)
			return resolve_error(x, negerrno(), copy);
		close(fd);
		fd = next;
		if (!last)
			*slash = '/';
		p = last ? slash : slash + 1;
	}
	return TAKE_FD(fd);
}

/* The fd of dir (relative to the root), from the one-entry cache. */
static int open_parent(extractor *x, const char *dir, size_t len, int *ret_fd)
{
	if (x->parent_path && strlen(x->parent_path) == len && !memcmp(x->parent_path, dir, len)) {
		*ret_fd = x->parent_fd;
		return 0;
	}
	cache_drop(x);
	_cleanup_free_ char *path = strndup(dir, len);
	if (!path)
		return -ENOMEM;
	int fd = fs_open_beneath(x->root_fd, path, O_RDONLY | O_DIRECTORY);
	if (fd == -ENOENT)
		fd = make_parents(x, path);
	else if (fd < 0)
		return resolve_error(x, fd, path);
	if (fd < 0)
		return fd;
	x->parent_fd = fd;
	x->parent_path = TAKE_PTR(path);
	*ret_fd = fd;
	return 0;
}

/* Clears `name` for a new entry: an existing dir stays when the new entry
 * is a dir too (tar semantics: the later entry updates it); anything else
 * there is deleted.  Returns 1 when an existing dir was kept. */
static int make_room(extractor *x, int pfd, const char *name, const char *path, bool new_is_dir)
{
	struct stat st;
	if (fstatat(pfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : entry_syserr(x, negerrno(), "stat", path);
	if (S_ISDIR(st.st_mode)) {
		if (new_is_dir)
			return 1;
		cache_drop_under(x, path);
		strata_error rm_err = {0};
		int r = fs_rm_tree_at(pfd, name, &rm_err);
		return r < 0 ? entry_fail(x, r, "replace directory: %s", rm_err.message) : 0;
	}
	if (unlinkat(pfd, name, 0) < 0 && errno != ENOENT)
		return entry_syserr(x, negerrno(), "unlink", path);
	return 0;
}

/* After creating pfd/name failed: if the name was taken, and only the
 * first time, clears it (make_room) and returns 0 so the caller retries;
 * otherwise the error, naming `what` failed. */
static int room_to_retry(extractor *x, bool *retried, int pfd, const char *name, const char *path, const char *what)
{
	if (errno != EEXIST || *retried)
		return entry_syserr(x, negerrno(), what, path);
	*retried = true;
	int r = make_room(x, pfd, name, path, false);
	return r < 0 ? r : 0;
}

/* Owns pfd/name (not followed) by uid:gid unless creation already did. */
static int chown_at(extractor *x, int pfd, const char *name, const char *path, uid_t uid, gid_t gid)
{
	if ((uid != x->euid || gid != x->egid) && fchownat(pfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) < 0)
		return entry_syserr(x, negerrno(), "chown", path);
	return 0;
}

static int map_owner(extractor *x, struct archive_entry *e, uid_t *ret_uid, gid_t *ret_gid)
{
	la_int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
	uint32_t hu, hg;
	if (uid < 0 || uid > UINT32_MAX - 1 || idmap_to_host(x->o->uids, (uint32_t)uid, &hu) < 0)
		return entry_fail(x, -ERANGE, "uid %" PRId64 " has no host id in the uid map", (int64_t)uid);
	if (gid < 0 || gid > UINT32_MAX - 1 || idmap_to_host(x->o->gids, (uint32_t)gid, &hg) < 0)
		return entry_fail(x, -ERANGE, "gid %" PRId64 " has no host id in the gid map", (int64_t)gid);
	*ret_uid = hu;
	*ret_gid = hg;
	return 0;
}

static void entry_times(struct archive_entry *e, struct timespec times[2])
{
	times[1] = (struct timespec){archive_entry_mtime(e), archive_entry_mtime_nsec(e)};
	if (archive_entry_atime_is_set(e))
		times[0] = (struct timespec){archive_entry_atime(e), archive_entry_atime_nsec(e)};
	else
		times[0] = times[1];
}

/* Does a new inode need an explicit chmod to get `mode`? */
static bool needs_chmod(const extractor *x, mode_t mode)
{
	return (mode & (S_ISUID | S_ISGID | S_ISVTX)) || (mode & 0777 & x->umask);
}

/* Sets the kept xattrs: on fd when >= 0, else on pfd/name (not followed). */
static int set_xattrs(extractor *x, struct archive_entry *e, int fd, int pfd, const char *name, const char *path)
{
	if (archive_entry_xattr_reset(e) == 0)
		return 0;
	char proc[64];
	if (fd < 0)
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d/", pfd);
	_cleanup_free_ char *lpath = NULL;
	const char *key;
	const void *value;
	size_t size;
	while (archive_entry_xattr_next(e, &key, &value, &size) == ARCHIVE_OK) {
		if (!tar_xattr_kept(key))
			continue;
		int r;
		if (fd >= 0) {
			r = fsetxattr(fd, key, value, size, 0);
		} else {
			/* No lsetxattrat: the magic link of the parent (already
			 * resolved beneath the root) plus the name, not followed. */
			if (!lpath && asprintf(&lpath, "%s%s", proc, name) < 0)
				return -ENOMEM;
			r = lsetxattr(lpath, key, value, size, 0);
		}
		/* The kernel takes no user.* xattrs on symlinks and devices;
		 * Docker drops those too. */
		if (r < 0 && fd < 0 && errno == EPERM && !strncmp(key, "user.", 5))
			continue;
		if (r < 0)
			return entry_fail(x, negerrno(), "set xattr %s on \"%s\": %s", key, path, strerror(errno));
	}
	return 0;
}

/*
 * A regular file's work handed to the worker (see pool.h): content at an
 * offset, and, in the file's last job, its metadata and the fd to close.
 * A small file is one job; a large one is a job per block of the tar
 * followed by a last job without content.  The single worker runs jobs in
 * order, so a file's blocks land before its times and close.  One
 * allocation: path and content follow the struct.
 */
typedef struct file_job {
	int fd;
	bool last;	/* metadata, then close fd */
	bool abort;	/* last job of a file the reader gave up on: close only */
	off_t offset;	/* of the content */
	off_t truncate; /* last job: size to extend to (a final hole), or -1 */
	bool do_chown, do_chmod;
	uid_t uid;
	gid_t gid;
	mode_t mode;
	struct timespec times[2];
	size_t n_xattrs;
	struct job_xattr {
		char *name;
		void *value;
		size_t size;
	} * xattrs;
	int src_fd; /* >= 0: copy len bytes from src_fd at src_off */
	off_t src_off;
	char *path;
	char *data;
	size_t len;
} file_job;

static void file_job_free(void *p)
{
	file_job *j = p;
	if (j->last && j->fd >= 0)
		close(j->fd);
	for (size_t i = 0; i < j->n_xattrs; i++) {
		free(j->xattrs[i].name);
		free(j->xattrs[i].value);
	}
	free(j->xattrs);
	free(j);
}

static int job_fail(strata_error *err, int code, const char *path, const char *what)
{
	char q[256];
	return error_setf(err, code, "entry \"%s\": %s: %s", error_quote(path, q, sizeof(q)), what, strerror(-code));
}

/* chown clears setuid bits and security.capability, so chmod and xattrs
 * come after it; times last. */
static int file_job_finish(file_job *j, strata_error *err)
{
	if (j->truncate >= 0 && ftruncate(j->fd, j->truncate) < 0)
		return job_fail(err, negerrno(), j->path, "truncate");
	if (j->do_chown && fchown(j->fd, j->uid, j->gid) < 0)
		return job_fail(err, negerrno(), j->path, "chown");
	if (j->do_chmod && fchmod(j->fd, j->mode) < 0)
		return job_fail(err, negerrno(), j->path, "chmod");
	for (size_t i = 0; i < j->n_xattrs; i++)
		if (fsetxattr(j->fd, j->xattrs[i].name, j->xattrs[i].value, j->xattrs[i].size, 0) < 0)
			return job_fail(err, negerrno(), j->path, "set xattr");
	if (futimens(j->fd, j->times) < 0)
		return job_fail(err, negerrno(), j->path, "set times");
	int fd = j->fd;
	j->fd = -1;
	return close(fd) < 0 ? job_fail(err, negerrno(), j->path, "close") : 0;
}

/* copy_file_range cannot copy between these two files (another
 * filesystem, or one that does not take it): the data goes through memory. */
static bool copy_range_unsupported(int e)
{
	return e == EXDEV || e == EINVAL || e == EOPNOTSUPP || e == ENOSYS;
}

/* Copies [off, len) of the job's source range with pread and pwrite. */
static int copy_by_reading(file_job *j, size_t off, strata_error *err)
{
	size_t cap = j->len - off < COPY_BUF ? j->len - off : COPY_BUF;
	_cleanup_free_ char *buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	while (off < j->len) {
		size_t want = j->len - off < cap ? j->len - off : cap;
		ssize_t n = pread(j->src_fd, buf, want, j->src_off + (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? job_fail(err, negerrno(), j->path, "read content")
				     : job_fail(err, -EIO, j->path, "read content: archive truncated");
		for (ssize_t done = 0; done < n;) {
			ssize_t w = pwrite(j->fd, buf + done, (size_t)(n - done), j->offset + (off_t)off + done);
			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0)
				return job_fail(err, negerrno(), j->path, "write");
			done += w;
		}
		off += (size_t)n;
	}
	return 0;
}

static int file_job_run(void *p, strata_error *err)
{
	file_job *j = p;
	int r = 0;
	for (size_t off = 0; off < j->len && j->src_fd >= 0;) {
		loff_t in = j->src_off + (off_t)off, out = j->offset + (off_t)off;
		ssize_t w = copy_file_range(j->src_fd, &in, j->fd, &out, j->len - off, 0);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && copy_range_unsupported(errno)) {
			r = copy_by_reading(j, off, err);
			break;
		}
		if (w <= 0) {
			r = w < 0 ? job_fail(err, negerrno(), j->path, "copy content")
				  : job_fail(err, -EIO, j->path, "copy content: archive truncated");
			break;
		}
		off += (size_t)w;
	}
	for (size_t off = 0; off < j->len && j->src_fd < 0;) {
		ssize_t w = pwrite(j->fd, j->data + off, j->len - off, j->offset + (off_t)off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			r = job_fail(err, negerrno(), j->path, "write");
			break;
		}
		off += (size_t)w;
	}
	if (r >= 0 && j->last && !j->abort)
		r = file_job_finish(j, err);
	file_job_free(j);
	return r;
}

static int job_copy_xattrs(file_job *j, struct archive_entry *e)
{
	int n = archive_entry_xattr_reset(e);
	if (n <= 0)
		return 0;
	j->xattrs = calloc((size_t)n, sizeof(*j->xattrs));
	if (!j->xattrs)
		return -ENOMEM;
	const char *key;
	const void *value;
	size_t size;
	while (archive_entry_xattr_next(e, &key, &value, &size) == ARCHIVE_OK && j->n_xattrs < (size_t)n) {
		if (!tar_xattr_kept(key))
			continue;
		struct job_xattr *xa = &j->xattrs[j->n_xattrs++];
		xa->name = strdup(key);
		xa->value = malloc(size ? size : 1);
		if (!xa->name || !xa->value)
			return -ENOMEM;
		memcpy(xa->value, value, size);
		xa->size = size;
	}
	return 0;
}

static int create_file(extractor *x, int pfd, const char *name, const char *path, mode_t mode)
{
	bool retried = false;
	int fd;
	while ((fd = openat(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 0777)) < 0) {
		int r = room_to_retry(x, &retried, pfd, name, path, "create");
		if (r < 0)
			return r;
	}
	return fd;
}

static file_job *job_new(int fd, const char *path, size_t len)
{
	size_t plen = strlen(path) + 1;
	file_job *j = malloc(sizeof(*j) + plen + len);
	if (!j)
		return NULL;
	*j = (file_job){
		.fd = fd,
		.truncate = -1,
		.src_fd = -1,
		.path = (char *)(j + 1),
		.data = (char *)(j + 1) + plen,
		.len = len,
	};
	memcpy(j->path, path, plen);
	return j;
}

static int job_submit(extractor *x, file_job *j)
{
	/* A worker's failure is reported, with its message, by pool_finish. */
	int r = pool_submit(x->pool, j, sizeof(*j) + j->len);
	return r < 0 ? r : 0;
}

/* The content, as jobs: a small file read whole (holes as zeros), a large
 * one block by block.  Sets *ret_end to the end of the last block. */
static int queue_content(extractor *x, struct archive_entry *e, int fd, const char *path, file_job **ret_small,
			 off_t *ret_end)
{
	la_int64_t size = archive_entry_size(e);
	if (x->input_fd >= 0 && size > 0 && archive_entry_sparse_count(e) == 0 &&
	    archive_filter_code(x->a, 0) == ARCHIVE_FILTER_NONE) {
		/* The header is consumed and the content not yet: the stream
		 * position is where the content starts in the file.  libarchive
		 * then skips it (by seeking) on the next header. */
		file_job *j = job_new(fd, path, 0);
		if (!j)
			return -ENOMEM;
		j->src_fd = x->input_fd;
		int64_t start = archive_filter_bytes(x->a, 0);
		j->src_off = x->input_start + (off_t)start;
		j->len = (size_t)size;
		/* Only if the entry really stores `size` bytes there (a sparse
		 * map libarchive folded away would not): checked at the next
		 * header, before the apply can succeed. */
		x->copy_end = start + ((size + 511) & ~(int64_t)511);
		x->progress.bytes += (uint64_t)size;
		*ret_small = j;
		*ret_end = size;
		return 0;
	}
	if (size <= SMALL_FILE_MAX) {
		file_job *j = job_new(fd, path, (size_t)size);
		if (!j)
			return -ENOMEM;
		for (size_t got = 0; got < j->len;) {
			la_ssize_t n = archive_read_data(x->a, j->data + got, j->len - got);
			if (n <= 0) {
				free(j);
				return entry_fail(x, -EIO, "read content: %s",
						  n < 0 ? archive_error_string(x->a) : "truncated archive");
			}
			got += (size_t)n;
		}
		x->progress.bytes += (uint64_t)size;
		*ret_small = j;
		*ret_end = size;
		return 0;
	}
	off_t end = 0;
	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int r = archive_read_data_block(x->a, &buf, &len, &off);
		if (r == ARCHIVE_EOF)
			break;
		if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
			return entry_fail(x, -EIO, "read content: %s", archive_error_string(x->a));
		if (off < 0 || off + (la_int64_t)len > size)
			return entry_fail(x, -EINVAL, "content outside the declared size");
		if (len == 0)
			continue;
		file_job *j = job_new(fd, path, len);
		if (!j)
			return -ENOMEM;
		memcpy(j->data, buf, len);
		j->offset = off;
		r = job_submit(x, j);
		if (r < 0)
			return r;
		if (off + (off_t)len > end)
			end = off + (off_t)len;
		x->progress.bytes += len;
		if (x->o->progress)
			x->o->progress(&x->progress, x->o->progress_data);
	}
	*ret_small = NULL;
	*ret_end = end;
	return 0;
}

static int extract_file(extractor *x, struct archive_entry *e, int pfd, const char *name, const char *path)
{
	uid_t uid;
	gid_t gid;
	int r = map_owner(x, e, &uid, &gid);
	if (r < 0)
		return r;
	la_int64_t size = archive_entry_size(e);
	if (size < 0)
		return entry_fail(x, -EINVAL, "negative size");
	mode_t mode = archive_entry_perm(e) & 07777;
	int fd = create_file(x, pfd, name, path, mode);
	if (fd < 0)
		return fd;

	file_job *small = NULL;
	off_t end = 0;
	r = queue_content(x, e, fd, path, &small, &end);
	/* The fd now belongs to the file's last job, whatever happened: the
	 * worker may still hold earlier blocks of it. */
	file_job *j = small ? small : job_new(fd, path, 0);
	if (!j) {
		pool_finish(TAKE_PTR(x->pool), NULL);
		close(fd);
		return -ENOMEM;
	}
	j->last = true;
	j->abort = r < 0;
	if (r >= 0) {
		j->truncate = size > end ? size : -1;
		j->do_chown = uid != x->euid || gid != x->egid;
		j->do_chmod = needs_chmod(x, mode);
		j->uid = uid;
		j->gid = gid;
		j->mode = mode;
		entry_times(e, j->times);
		r = job_copy_xattrs(j, e);
		j->abort = r < 0;
		x->size += (uint64_t)size;
		flusher_add(&x->flush, (uint64_t)size);
	}
	int q = job_submit(x, j);
	return r < 0 ? r : q;
}

static int extract_dir(extractor *x, struct archive_entry *e, int pfd, const char *name, const char *path)
{
	dir_fixup f;
	int r = map_owner(x, e, &f.uid, &f.gid);
	if (r < 0)
		return r;
	f.mode = archive_entry_perm(e) & 07777;
	entry_times(e, f.times);

	bool again = !*path; /* the root always exists */
	if (*path && mkdirat(pfd, name, f.mode & 0777) < 0) {
		if (errno != EEXIST)
			return entry_syserr(x, negerrno(), "mkdir", path);
		r = make_room(x, pfd, name, path, true);
		if (r < 0)
			return r;
		again = r == 1;
		if (r == 0 && mkdirat(pfd, name, f.mode & 0777) < 0)
			return entry_syserr(x, negerrno(), "mkdir", path);
	}
	if (archive_entry_xattr_count(e) > 0) {
		_cleanup_close_ int fd = *path ? openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
					       : fcntl(x->root_fd, F_DUPFD_CLOEXEC, 3);
		if (fd < 0)
			return entry_syserr(x, negerrno(), "open", path);
		r = set_xattrs(x, e, fd, -1, NULL, path);
		if (r < 0)
			return r;
	}
	/* A dir named again: the later entry's metadata wins, as for files. */
	for (size_t i = x->n_dirs; again && i-- > 0;)
		if (!strcmp(x->dirs[i].path, path)) {
			f.path = x->dirs[i].path;
			x->dirs[i] = f;
			return 0;
		}
	if (x->n_dirs == x->alloc_dirs) {
		size_t alloc = x->alloc_dirs ? 2 * x->alloc_dirs : 256;
		dir_fixup *nd = realloc(x->dirs, alloc * sizeof(*nd));
		if (!nd)
			return -ENOMEM;
		x->dirs = nd;
		x->alloc_dirs = alloc;
	}
	f.path = strdup(path);
	if (!f.path)
		return -ENOMEM;
	x->dirs[x->n_dirs++] = f;
	return 0;
}

/* After everything: owners, modes and times of the dirs, deepest first.
 * A dir a later entry replaced (by a symlink, say) no longer resolves as
 * a dir and is skipped. */
static int fix_dirs(extractor *x)
{
	for (size_t i = x->n_dirs; i-- > 0;) {
		dir_fixup *f = &x->dirs[i];
		_cleanup_close_ int fd = fs_open_beneath(x->root_fd, f->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
		if (fd == -ENOENT || fd == -ELOOP || fd == -ENOTDIR)
			continue;
		x->entry = f->path;
		if (fd < 0)
			return entry_syserr(x, fd, "open", f->path);
		struct stat st;
		if (fstat(fd, &st) < 0)
			return entry_syserr(x, negerrno(), "stat", f->path);
		if ((st.st_uid != f->uid || st.st_gid != f->gid) && fchown(fd, f->uid, f->gid) < 0)
			return entry_syserr(x, negerrno(), "chown", f->path);
		if ((st.st_mode & 07777) != f->mode && fchmod(fd, f->mode) < 0)
			return entry_syserr(x, negerrno(), "chmod", f->path);
		if (futimens(fd, f->times) < 0)
			return entry_syserr(x, negerrno(), "set times of", f->path);
	}
	return 0;
}

static int extract_hardlink(extractor *x, struct archive_entry *e, int pfd, const char *name, const char *path)
{
	const char *why = NULL;
	_cleanup_free_ char *target = NULL;
	int r = tar_clean_name(archive_entry_hardlink(e), &target, &why);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return entry_fail(x, r, "hardlink target: %s", why);
	if (!strcmp(target, path))
		return entry_fail(x, -EINVAL, "hardlink to itself");
	const char *slash = strrchr(target, '/');
	_cleanup_free_ char *tdir = strndup(target, slash ? (size_t)(slash - target) : 0);
	if (!tdir)
		return -ENOMEM;
	const char *tbase = slash ? slash + 1 : target;
	if (!*tbase)
		return entry_fail(x, -EINVAL, "hardlink to the layer root");
	_cleanup_close_ int tfd = fs_open_beneath(x->root_fd, tdir, O_PATH | O_DIRECTORY);
	if (tfd < 0 && tfd != -ENOENT)
		return resolve_error(x, tfd, tdir);
	struct stat st;
	if (tfd < 0 || fstatat(tfd, tbase, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (tfd >= 0 && errno != ENOENT)
			return entry_syserr(x, negerrno(), "stat", target);
		return entry_fail(x, -ENOENT, "hardlink target \"%s\" is not in the layer (yet)", target);
	}
	if (S_ISLNK(st.st_mode))
		return entry_fail(x, -EPERM, "hardlink target \"%s\" is a symlink", target);
	if (S_ISDIR(st.st_mode))
		return entry_fail(x, -EPERM, "hardlink target \"%s\" is a directory", target);
	if (tar_is_whiteout(&st))
		return entry_fail(x, -EPERM, "hardlink target \"%s\" is a whiteout", target);
	/* flags 0: linkat never follows the target. */
	bool retried = false;
	while (linkat(tfd, tbase, pfd, name, 0) < 0) {
		r = room_to_retry(x, &retried, pfd, name, path, "link");
		if (r < 0)
			return r;
	}
	return 0;
}

/* Symlinks, devices and fifos: created, then owned and timed by name,
 * never followed. */
static int extract_special(extractor *x, struct archive_entry *e, int pfd, const char *name, const char *path)
{
	uid_t uid;
	gid_t gid;
	int r = map_owner(x, e, &uid, &gid);
	if (r < 0)
		return r;
	mode_t type = archive_entry_filetype(e), mode = archive_entry_perm(e) & 07777;
	const char *target = NULL;
	if (type == AE_IFLNK) {
		target = archive_entry_symlink(e);
		if (!target || !*target)
			return entry_fail(x, -EINVAL, "symlink without a target");
	} else if (type == AE_IFCHR || type == AE_IFBLK) {
		if (x->o->flags & STRATA_TAR_NO_DEVICES)
			return entry_fail(x, -EPERM, "device nodes are not allowed here");
		if (type == AE_IFCHR && archive_entry_rdev(e) == 0)
			return entry_fail(
				x, -EINVAL,
				"a character device 0/0 is overlay's own whiteout; layer tars say .wh.<name>");
	}
	bool retried = false;
	while ((target ? symlinkat(target, pfd, name)
		       : mknodat(pfd, name, (type == AE_IFIFO ? S_IFIFO : type) | (mode & 0777),
				 type == AE_IFIFO ? 0 : archive_entry_rdev(e))) < 0) {
		r = room_to_retry(x, &retried, pfd, name, path, target ? "symlink" : "mknod");
		if (r < 0)
			return r;
	}
	r = chown_at(x, pfd, name, path, uid, gid);
	if (r < 0)
		return r;
	/* Not a symlink (those have no mode), just created by us in a dir
	 * only we write to: fchmodat by name is safe. */
	if (!target && needs_chmod(x, mode) && fchmodat(pfd, name, mode, 0) < 0)
		return entry_syserr(x, negerrno(), "chmod", path);
	r = set_xattrs(x, e, -1, pfd, name, path);
	if (r < 0)
		return r;
	struct timespec times[2];
	entry_times(e, times);
	if (utimensat(pfd, name, times, AT_SYMLINK_NOFOLLOW) < 0)
		return entry_syserr(x, negerrno(), "set times of", path);
	return 0;
}

/* ".wh.<name>": overlay's whiteout, a character device 0/0, in place of
 * whatever this layer already put at <name>. */
static int extract_whiteout(extractor *x, struct archive_entry *e, int pfd, const char *name, const char *path)
{
	uid_t uid;
	gid_t gid;
	int r = map_owner(x, e, &uid, &gid);
	if (r < 0)
		return r;
	/* The entry's mode and mtime, so that exporting the layer again gives
	 * the same bytes (thin layers are addressed by the digest of that
	 * tar; export writes a whiteout with its device's mode). */
	mode_t mode = archive_entry_perm(e) & 0777;
	bool retried = false;
	while (mknodat(pfd, name, S_IFCHR | mode, makedev(0, 0)) < 0) {
		r = room_to_retry(x, &retried, pfd, name, path, "make whiteout");
		if (r < 0)
			return r;
	}
	r = chown_at(x, pfd, name, path, uid, gid);
	if (r < 0)
		return r;
	if (needs_chmod(x, mode) && fchmodat(pfd, name, mode, 0) < 0)
		return entry_syserr(x, negerrno(), "chmod", path);
	struct timespec times[2];
	entry_times(e, times);
	if (utimensat(pfd, name, times, AT_SYMLINK_NOFOLLOW) < 0)
		return entry_syserr(x, negerrno(), "set times of", path);
	return 0;
}

static int extract_entry(extractor *x, struct archive_entry *e)
{
	const char *why = NULL;
	_cleanup_free_ char *path = NULL;
	int r = tar_clean_name(x->entry, &path, &why);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return entry_fail(x, r, "%s", why);

	char *slash = strrchr(path, '/');
	size_t dirlen = slash ? (size_t)(slash - path) : 0;
	char *base = slash ? slash + 1 : path;
	mode_t type = archive_entry_filetype(e);

	/* aufs bookkeeping at the root (.wh..wh.plnk and the like) is not
	 * layer content: skipped, as Docker does. */
	if (!strncmp(path, WHITEOUT_META, strlen(WHITEOUT_META)) && strcmp(base, WHITEOUT_OPAQUE) != 0)
		return 0;

	if (!*path) {
		if (type != AE_IFDIR)
			return entry_fail(x, -EINVAL, "the layer root must be a directory");
		return extract_dir(x, e, x->root_fd, ".", "");
	}
	/* Overlay ignores an opaque mark on a layer root. */
	if (dirlen == 0 && !strcmp(base, WHITEOUT_OPAQUE))
		return 0;
	/* A dir named .wh.* would become a whiteout or a marker on export. */
	for (const char *c = path; c < path + dirlen; c = strchrnul(c, '/') + 1)
		if (!strncmp(c, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)))
			return entry_fail(x, -EINVAL, "a directory in its path is named %s*", WHITEOUT_PREFIX);

	int pfd = -1;
	r = open_parent(x, path, dirlen, &pfd);
	if (r < 0)
		return r;

	if (!strncmp(base, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)) && (x->o->flags & TAR_AUFS)) {
		/* aufs reads .wh. files itself: they stay files. */
		if (!strncmp(base, WHITEOUT_META, strlen(WHITEOUT_META)) && strcmp(base, WHITEOUT_OPAQUE) != 0)
			return 0;
		const char *victim = base + strlen(WHITEOUT_PREFIX);
		if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
			return entry_fail(x, -EINVAL, "whiteout of \"%s\" names no file", victim);
		if (type != AE_IFREG || archive_entry_hardlink(e))
			return entry_fail(x, -EINVAL, "a whiteout must be a regular file");
		return extract_file(x, e, pfd, base, path);
	}
	if (!strncmp(base, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX))) {
		if (!strcmp(base, WHITEOUT_OPAQUE)) {
			if (fsetxattr(pfd, OVERLAY_OPAQUE_XATTR, "y", 1, 0) < 0)
				return entry_fail(x, negerrno(), "mark \"%.*s\" opaque: %s", (int)dirlen, path,
						  strerror(errno));
			return 0;
		}
		if (!strncmp(base, WHITEOUT_META, strlen(WHITEOUT_META)))
			return 0;
		const char *victim = base + strlen(WHITEOUT_PREFIX);
		if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
			return entry_fail(x, -EINVAL, "whiteout of \"%s\" names no file", victim);
		/* path now names the deleted file, for messages. */
		memmove(base, victim, strlen(victim) + 1);
		return extract_whiteout(x, e, pfd, base, path);
	}

	if (archive_entry_hardlink(e))
		return extract_hardlink(x, e, pfd, base, path);
	switch (type) {
	case AE_IFREG:
		return extract_file(x, e, pfd, base, path);
	case AE_IFDIR:
		return extract_dir(x, e, pfd, base, path);
	case AE_IFLNK:
	case AE_IFCHR:
	case AE_IFBLK:
	case AE_IFIFO:
		return extract_special(x, e, pfd, base, path);
	default:
		return entry_fail(x, -EINVAL, "unsupported entry type 0%o", (unsigned)type);
	}
}

/* After an entry whose content went by copy_file_range: did the archive
 * really hold that content where it was copied from?  (A header is read
 * exactly where the padded content ends, or the end of the archive is.) */
static int check_copied(extractor *x, const char *entry)
{
	if (x->copy_end < 0)
		return 0;
	int64_t at = archive_read_header_position(x->a), want = x->copy_end;
	x->copy_end = -1;
	if (at == want)
		return 0;
	char q[256];
	return error_setf(x->err, -EINVAL, "entry \"%s\": its stored content does not match its size",
			  error_quote(entry ? entry : "", q, sizeof(q)));
}

int tar_extract(struct archive *a, int input_fd, off_t input_start, int root_fd, const tar_opts *o, uint64_t *ret_size,
		strata_error *err)
{
	extractor x = {
		.input_fd = input_fd,
		.input_start = input_start,
		.copy_end = -1,
		.a = a,
		.root_fd = root_fd,
		.o = o,
		.err = err,
		.umask = read_umask(),
		.euid = geteuid(),
		.egid = getegid(),
		.parent_fd = -1,
	};
	uint32_t ru, rg;
	x.root_uid = idmap_to_host(o->uids, 0, &ru) == 0 ? ru : x.euid;
	x.root_gid = idmap_to_host(o->gids, 0, &rg) == 0 ? rg : x.egid;
	/* The previous entry's name, for errors in the next header; reused,
	 * not reallocated per entry. */
	strbuf last_buf = {0};
	const char *last = NULL;
	int r = pool_new(APPLY_WORKERS, APPLY_QUEUE_JOBS, APPLY_QUEUE_BYTES, file_job_run, file_job_free, &x.pool);
	if (r < 0)
		return error_set(err, r, "start apply workers");
	if (o->flags & TAR_EARLY_WRITEBACK)
		flusher_start(&x.flush, root_fd);
	for (;;) {
		struct archive_entry *e;
		int ar = archive_read_next_header(a, &e);
		if (ar == ARCHIVE_OK || ar == ARCHIVE_WARN || ar == ARCHIVE_EOF) {
			r = check_copied(&x, last);
			if (r < 0)
				goto out;
		}
		if (ar == ARCHIVE_EOF)
			break;
		if (tar_cancelled(o)) {
			r = error_setf(err, -ECANCELED, "cancelled");
			goto out;
		}
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) { /* RETRY too: a damaged header */
			char q[256];
			if (last)
				r = error_setf(err, -EINVAL, "tar after entry \"%s\": %s",
					       error_quote(last, q, sizeof(q)), archive_error_string(a));
			else
				r = error_setf(err, -EINVAL, "tar: %s", archive_error_string(a));
			goto out;
		}
		x.entry = archive_entry_pathname(e);
		if (!x.entry)
			x.entry = "";
		r = extract_entry(&x, e);
		if (r < 0) {
			if (r == -ENOMEM)
				error_set(err, r, "extract");
			goto out;
		}
		last_buf.len = 0;
		if (strbuf_append(&last_buf, x.entry, strlen(x.entry)) < 0) {
			r = -ENOMEM;
			goto out;
		}
		last = last_buf.buf;
		x.progress.entries++;
		if (o->progress)
			o->progress(&x.progress, o->progress_data);
	}
	cache_drop(&x);
	r = pool_finish(TAKE_PTR(x.pool), err);
	if (r < 0)
		goto out;
	r = fix_dirs(&x);
	if (r < 0)
		goto out;
	x.progress.done = 1;
	if (o->progress)
		o->progress(&x.progress, o->progress_data);
	*ret_size = x.size;
out:
	flusher_stop(&x.flush);
	if (x.pool) {
		/* Stopped early: a worker's error explains more than ours. */
		strata_error werr = {0};
		if (pool_finish(x.pool, &werr) < 0 && err)
			*err = werr;
	}
	cache_drop(&x);
	strbuf_release(&last_buf);
	for (size_t i = 0; i < x.n_dirs; i++)
		free(x.dirs[i].path);
	free(x.dirs);
	return r;
}

int tar_reader_open_fd(int fd, struct archive **ret, strata_error *err)
{
	struct archive *a = archive_read_new();
	if (!a)
		return -ENOMEM;
	/* Layer tars only: ustar, pax and GNU tar, compressed or not. */
	if (archive_read_support_format_tar(a) != ARCHIVE_OK || archive_read_support_filter_gzip(a) != ARCHIVE_OK ||
	    archive_read_support_filter_zstd(a) != ARCHIVE_OK || archive_read_support_filter_xz(a) != ARCHIVE_OK ||
	    archive_read_open_fd(a, fd, READ_BLOCK) != ARCHIVE_OK) {
		int r = error_setf(err, -EINVAL, "tar: %s", archive_error_string(a));
		archive_read_free(a);
		return r;
	}
	*ret = a;
	return 0;
}
