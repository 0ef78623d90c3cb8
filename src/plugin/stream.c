/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "stream.h"

/* Bytes in flight between the connection and the library. */
#define STREAM_PIPE_SIZE (1u << 20)
/* What a diff must produce before its reply starts. */
#define STREAM_HEAD_SIZE (64u << 10)
/* The spool: what was sent is punched out in steps this big... */
#define SPOOL_PUNCH_STEP (4u << 20)
/* ...at offsets this aligned (whole blocks are freed, not zeroed). */
#define SPOOL_PUNCH_ALIGN (64u << 10)
/* The longest a reader waits for the diff without looking again: a
 * signal missed between its look and its wait costs at most this. */
#define SPOOL_POLL_NS (100 * 1000 * 1000L)

struct plugin_stream {
	strata_driver *driver;
	char *id, *parent; /* parent NULL: the library's default */
	bool apply;
	/* Diff: the tar goes into an unnamed temp file, not a pipe. */
	bool spool;
	int fd; /* our end: the write end (apply), the read end or the spool (diff) */
	/* The thread's end; the thread closes it when done.  For a diff it is
	 * guarded by `lock`, as stream_free may swap it (diff_stop). */
	int thread_fd;
	pthread_t thread;
	bool running; /* started and not yet joined */
	int cancel;   /* set when the connection was cut short */
	pthread_mutex_t lock;
	pthread_cond_t grew; /* diff: the spool grew, or the diff ended */
	bool done;	     /* diff: strata_diff returned; rc and err are set */
	int rc;
	uint64_t size;
	strata_error err;
	/* Pipe: the first bytes, read before the reply starts. */
	char *head;
	size_t head_len, head_off;
	/* Spool: how far the client has been sent, and punched. */
	off_t sent, punched;
	bool no_punch;
};

static void *apply_main(void *p)
{
	plugin_stream *st = p;
	strata_tar_options o = {.cancel = &st->cancel};
	st->rc = strata_apply_diff(st->driver, st->id, st->parent, st->thread_fd, &o, &st->size, &st->err);
	/* Closing the read end turns the connection's next write into EPIPE:
	 * it stops feeding a layer that will not be made. */
	close(st->thread_fd);
	return NULL;
}

static void diff_progress(const strata_progress *progress, void *data)
{
	(void)progress;
	plugin_stream *st = data;
	/* Cheap without waiters; a reader that misses it looks again after
	 * SPOOL_POLL_NS anyway. */
	pthread_cond_broadcast(&st->grew);
}

static void *diff_main(void *p)
{
	plugin_stream *st = p;
	strata_tar_options o = {
		.progress = st->spool ? diff_progress : NULL,
		.progress_data = st,
		.cancel = &st->cancel,
	};
	strata_error err = {0};
	int rc = strata_diff(st->driver, st->id, st->parent, st->thread_fd, &o, &err);
	pthread_mutex_lock(&st->lock);
	st->rc = rc;
	if (rc < 0)
		st->err = err;
	close(st->thread_fd); /* a pipe reader's EOF */
	st->thread_fd = -1;
	st->done = true;
	pthread_cond_broadcast(&st->grew);
	pthread_mutex_unlock(&st->lock);
	return NULL;
}

static int stream_error(strata_error *err, int code, const char *what, const char *id, const char *detail)
{
	snprintf(err->message, sizeof(err->message), "%s %s: %s%s%s", what, id, detail, code ? ": " : "",
		 code ? strerror(code) : "");
	err->code = code;
	return -code;
}

static plugin_stream *stream_new(strata_driver *d, const char *id, const char *parent, bool apply, strata_error *err)
{
	plugin_stream *st = calloc(1, sizeof(*st));
	if (!st) {
		stream_error(err, ENOMEM, apply ? "apply" : "diff", id, "out of memory");
		return NULL;
	}
	*st = (plugin_stream){.driver = d, .apply = apply, .fd = -1, .thread_fd = -1};
	pthread_mutex_init(&st->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&st->grew, &ca);
	pthread_condattr_destroy(&ca);
	st->id = strdup(id);
	st->parent = parent ? strdup(parent) : NULL;
	if (!st->id || (parent && !st->parent)) {
		stream_free(st);
		stream_error(err, ENOMEM, apply ? "apply" : "diff", id, "out of memory");
		return NULL;
	}
	return st;
}

/* Our end and the thread's end of a pipe. */
static int stream_pipe(plugin_stream *st, strata_error *err)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		return stream_error(err, errno, st->apply ? "apply" : "diff", st->id, "pipe");
	st->fd = st->apply ? p[1] : p[0];
	st->thread_fd = st->apply ? p[0] : p[1];
	/* Best effort: a bigger pipe means fewer wake-ups per MiB. */
	(void)fcntl(p[1], F_SETPIPE_SZ, (int)STREAM_PIPE_SIZE);
	return 0;
}

static int stream_run(plugin_stream *st, strata_error *err)
{
	/* See PLUGIN_THREAD_STACK. */
	pthread_attr_t attr;
	int r = pthread_attr_init(&attr);
	if (!r) {
		r = pthread_attr_setstacksize(&attr, PLUGIN_THREAD_STACK);
		if (!r)
			r = pthread_create(&st->thread, &attr, st->apply ? apply_main : diff_main, st);
		pthread_attr_destroy(&attr);
	}
	if (r) {
		close(st->thread_fd);
		st->thread_fd = -1;
		return stream_error(err, r, st->apply ? "apply" : "diff", st->id, "start a thread");
	}
	st->running = true;
	return 0;
}

static void stream_join(plugin_stream *st)
{
	if (st->running) {
		pthread_join(st->thread, NULL);
		st->running = false;
	}
}

static void close_ours(plugin_stream *st)
{
	if (st->fd >= 0) {
		close(st->fd);
		st->fd = -1;
	}
}

int stream_apply_start(strata_driver *d, const char *id, const char *parent, plugin_stream **ret, strata_error *err)
{
	plugin_stream *st = stream_new(d, id, parent, true, err);
	if (!st)
		return -err->code;
	int r = stream_pipe(st, err);
	if (r >= 0)
		r = stream_run(st, err);
	if (r < 0) {
		stream_free(st);
		return r;
	}
	*ret = st;
	return 0;
}

int stream_write(plugin_stream *st, const void *data, size_t len)
{
	const char *p = data;
	while (len > 0) {
		if (st->fd < 0)
			return -EPIPE;
		ssize_t n = write(st->fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int r = -errno;
			close_ours(st); /* the apply has stopped reading */
			return r;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int stream_apply_finish(plugin_stream *st, uint64_t *ret_size, strata_error *err)
{
	close_ours(st); /* the end of the body: the apply reads EOF */
	stream_join(st);
	if (st->rc < 0) {
		*err = st->err;
		return st->rc;
	}
	*ret_size = st->size;
	return 0;
}

/* ---- Diff ---- */

/*
 * A pipe whose read end is closed, kept for the life of the process: a
 * diff to stop gets it dup'ed over its spool fd (diff_stop), so its next
 * write fails with EPIPE (SIGPIPE is ignored) without our having to find a
 * free descriptor at that moment.
 */
static int broken_pipe = -1;
static pthread_once_t broken_pipe_once = PTHREAD_ONCE_INIT;

static void broken_pipe_make(void)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) == 0) {
		close(p[0]);
		broken_pipe = p[1];
	}
}

/*
 * The diff writes into the spool, which never blocks: when the client has
 * gone, its next write is made to fail so that it stops instead of
 * exporting a tar nobody will read.  thread_fd is swapped under the lock
 * the thread closes it under, so the number cannot belong to anything
 * else by then.
 */
static void diff_stop(plugin_stream *st)
{
	pthread_mutex_lock(&st->lock);
	if (st->thread_fd >= 0 && broken_pipe >= 0)
		(void)dup3(broken_pipe, st->thread_fd, O_CLOEXEC);
	pthread_mutex_unlock(&st->lock);
}

/* Waits for the spool to grow or the diff to end, at most SPOOL_POLL_NS.
 * Called with st->lock held. */
static void spool_wait(plugin_stream *st)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	t.tv_nsec += SPOOL_POLL_NS;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	if (!st->done)
		pthread_cond_timedwait(&st->grew, &st->lock, &t);
}

/*
 * The spool: an unnamed file in the store root, so the diff never waits
 * for the client (it holds the layer's lock while it writes).  It goes
 * with its last descriptor.  -EOPNOTSUPP (or what older kernels say) when
 * the filesystem cannot make one: the caller falls back to a pipe.
 */
static int spool_open(plugin_stream *st, strata_error *err)
{
	const char *root = strata_driver_root(st->driver);
	int fd = open(root, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		int e = errno;
		if (e == EOPNOTSUPP || e == EISDIR || e == EINVAL)
			return -EOPNOTSUPP;
		char what[600];
		snprintf(what, sizeof(what), "make a spool file in %s", root);
		return stream_error(err, e, "diff", st->id, what);
	}
	/* The thread's own descriptor, which diff_stop may replace. */
	int tfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (tfd < 0) {
		int e = errno;
		close(fd);
		return stream_error(err, e, "diff", st->id, "dup the spool file");
	}
	st->fd = fd;
	st->thread_fd = tfd;
	st->spool = true;
	return 0;
}

/* Frees what the client has been sent, in SPOOL_PUNCH_STEP steps: the
 * file then only ever holds the backlog, and pages a fast client has read
 * are dropped before they are written back. */
static void spool_punch(plugin_stream *st)
{
	off_t end = st->sent & ~(off_t)(SPOOL_PUNCH_ALIGN - 1);
	if (st->no_punch || end - st->punched < (off_t)SPOOL_PUNCH_STEP)
		return;
	if (fallocate(st->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st->punched, end - st->punched) < 0) {
		/* Not supported here: the file keeps the whole tar until the
		 * end of the reply.  Anything else is as harmless. */
		if (errno != EOPNOTSUPP)
			plugin_log(PLUGIN_LOG_WARN,
				   "msg=\"cannot free the sent part of a diff's spool file\" id=%s err=%s",
				   LOG_VALUE(st->id), LOG_VALUE(strerror(errno)));
		st->no_punch = true;
		return;
	}
	st->punched = end;
}

/* The diff's result once it has ended and its output is all read. */
static ssize_t diff_result(plugin_stream *st, strata_error *err)
{
	stream_join(st);
	if (st->rc < 0) {
		*err = st->err;
		return st->rc;
	}
	return 0;
}

/* Pipe: the first read, before the reply starts. */
static int pipe_head(plugin_stream *st, strata_error *err)
{
	st->head = malloc(STREAM_HEAD_SIZE);
	if (!st->head)
		return stream_error(err, ENOMEM, "diff", st->id, "out of memory");
	ssize_t n;
	do
		n = read(st->fd, st->head, STREAM_HEAD_SIZE);
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		st->head_len = (size_t)n;
		return 1;
	}
	int read_errno = n < 0 ? errno : 0;
	close_ours(st);
	int r = (int)diff_result(st, err);
	if (r < 0)
		return r;
	if (read_errno)
		return stream_error(err, read_errno, "diff", st->id, "read the tar");
	return 0;
}

/* Spool: waits for STREAM_HEAD_SIZE bytes or the end of the diff. */
static int spool_head(plugin_stream *st, strata_error *err)
{
	off_t size = 0;
	pthread_mutex_lock(&st->lock);
	for (;;) {
		struct stat sb;
		if (fstat(st->fd, &sb) < 0) {
			int e = errno;
			pthread_mutex_unlock(&st->lock);
			return stream_error(err, e, "diff", st->id, "stat the spool file");
		}
		size = sb.st_size;
		if (st->done || size >= (off_t)STREAM_HEAD_SIZE)
			break;
		spool_wait(st);
	}
	bool done = st->done;
	pthread_mutex_unlock(&st->lock);
	if (done) {
		int r = (int)diff_result(st, err);
		if (r < 0)
			return r;
		/* The whole tar is in the spool: its size is final now. */
		struct stat sb;
		if (fstat(st->fd, &sb) == 0)
			size = sb.st_size;
	}
	return size > 0;
}

int stream_diff_start(strata_driver *d, const char *id, const char *parent, plugin_stream **ret, strata_error *err)
{
	pthread_once(&broken_pipe_once, broken_pipe_make);
	plugin_stream *st = stream_new(d, id, parent, false, err);
	if (!st)
		return -err->code;
	int r = spool_open(st, err);
	if (r == -EOPNOTSUPP) {
		plugin_log(PLUGIN_LOG_DEBUG,
			   "msg=\"no O_TMPFILE in the store root; the diff streams through a pipe\" id=%s",
			   LOG_VALUE(id));
		r = stream_pipe(st, err);
	}
	if (r >= 0)
		r = stream_run(st, err);
	/* Nearly every error (no such layer, a failed mount) comes before the
	 * first byte: waiting for the first bytes lets those be a proper error
	 * reply. */
	if (r >= 0)
		r = st->spool ? spool_head(st, err) : pipe_head(st, err);
	if (r < 0) {
		stream_free(st);
		return r;
	}
	*ret = st;
	return r;
}

static ssize_t spool_read(plugin_stream *st, char *buf, size_t max, strata_error *err)
{
	for (;;) {
		/* Read `done` before looking: when it was already set, the
		 * look sees every byte the diff wrote. */
		pthread_mutex_lock(&st->lock);
		bool done = st->done;
		pthread_mutex_unlock(&st->lock);
		ssize_t n = pread(st->fd, buf, max, st->sent);
		if (n > 0) {
			st->sent += n;
			spool_punch(st);
			return n;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			diff_stop(st);
			return stream_error(err, e, "diff", st->id, "read the spool file");
		}
		if (done)
			return diff_result(st, err);
		pthread_mutex_lock(&st->lock);
		spool_wait(st);
		pthread_mutex_unlock(&st->lock);
	}
}

static ssize_t pipe_read(plugin_stream *st, char *buf, size_t max, strata_error *err)
{
	if (st->head_off < st->head_len) {
		size_t n = st->head_len - st->head_off;
		if (n > max)
			n = max;
		memcpy(buf, st->head + st->head_off, n);
		st->head_off += n;
		return (ssize_t)n;
	}
	ssize_t n = 0;
	int read_errno = 0;
	if (st->fd >= 0) {
		do
			n = read(st->fd, buf, max);
		while (n < 0 && errno == EINTR);
		if (n > 0)
			return n;
		read_errno = n < 0 ? errno : 0;
	}
	close_ours(st);
	ssize_t r = diff_result(st, err);
	if (r < 0)
		return r;
	if (read_errno)
		return stream_error(err, read_errno, "diff", st->id, "read the tar");
	return 0;
}

ssize_t stream_read(plugin_stream *st, char *buf, size_t max, strata_error *err)
{
	return st->spool ? spool_read(st, buf, max, err) : pipe_read(st, buf, max, err);
}

plugin_stream *stream_free(plugin_stream *st)
{
	if (!st)
		return NULL;
	/* Cancel first, then close: the apply must see the flag by the time
	 * it reads the EOF. */
	__atomic_store_n(&st->cancel, 1, __ATOMIC_RELEASE);
	if (st->spool)
		diff_stop(st);
	close_ours(st);
	stream_join(st);
	pthread_cond_destroy(&st->grew);
	pthread_mutex_destroy(&st->lock);
	free(st->head);
	free(st->id);
	free(st->parent);
	free(st);
	return NULL;
}
