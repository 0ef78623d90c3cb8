/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream.h"

/* Bytes in flight between the connection and the library. */
#define STREAM_PIPE_SIZE (1u << 20)
/* What a diff must produce before its reply starts. */
#define STREAM_HEAD_SIZE (64u << 10)

struct plugin_stream {
	strata_driver *driver;
	char *id, *parent; /* parent NULL: the library's default */
	bool apply;
	int fd;	       /* our end: the write end (apply) or the read end (diff) */
	int thread_fd; /* the thread's end; the thread closes it when done */
	pthread_t thread;
	bool running; /* started and not yet joined */
	int cancel;   /* apply: set when the body was cut short */
	int rc;
	uint64_t size;
	strata_error err;
	char *head; /* diff: the first bytes, read before the reply starts */
	size_t head_len, head_off;
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

static void *diff_main(void *p)
{
	plugin_stream *st = p;
	st->rc = strata_diff(st->driver, st->id, st->parent, st->thread_fd, NULL, &st->err);
	close(st->thread_fd); /* the reader's EOF */
	return NULL;
}

static int stream_start(strata_driver *d, const char *id, const char *parent, bool apply, plugin_stream **ret,
			strata_error *err)
{
	plugin_stream *st = calloc(1, sizeof(*st));
	if (!st)
		goto nomem;
	*st = (plugin_stream){.driver = d, .apply = apply, .fd = -1, .thread_fd = -1};
	st->id = strdup(id);
	st->parent = parent ? strdup(parent) : NULL;
	if (!st->id || (parent && !st->parent))
		goto nomem;
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0) {
		int r = -errno;
		snprintf(err->message, sizeof(err->message), "%s %s: pipe: %s", apply ? "apply" : "diff", id,
			 strerror(-r));
		err->code = -r;
		stream_free(st);
		return r;
	}
	st->fd = apply ? p[1] : p[0];
	st->thread_fd = apply ? p[0] : p[1];
	/* Best effort: a bigger pipe means fewer wake-ups per MiB. */
	(void)fcntl(p[1], F_SETPIPE_SZ, (int)STREAM_PIPE_SIZE);
	int r = pthread_create(&st->thread, NULL, apply ? apply_main : diff_main, st);
	if (r) {
		close(st->thread_fd);
		st->thread_fd = -1;
		snprintf(err->message, sizeof(err->message), "%s %s: start a thread: %s", apply ? "apply" : "diff", id,
			 strerror(r));
		err->code = r;
		stream_free(st);
		return -r;
	}
	st->running = true;
	*ret = st;
	return 0;
nomem:
	stream_free(st);
	snprintf(err->message, sizeof(err->message), "%s %s: out of memory", apply ? "apply" : "diff", id);
	err->code = ENOMEM;
	return -ENOMEM;
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
	return stream_start(d, id, parent, true, ret, err);
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

int stream_diff_start(strata_driver *d, const char *id, const char *parent, plugin_stream **ret, strata_error *err)
{
	plugin_stream *st = NULL;
	int r = stream_start(d, id, parent, false, &st, err);
	if (r < 0)
		return r;
	st->head = malloc(STREAM_HEAD_SIZE);
	if (!st->head) {
		stream_free(st);
		snprintf(err->message, sizeof(err->message), "diff %s: out of memory", id);
		err->code = ENOMEM;
		return -ENOMEM;
	}
	/* Nearly every error (no such layer, a failed mount) comes before the
	 * first byte: waiting for it lets those be a proper error reply. */
	ssize_t n;
	do
		n = read(st->fd, st->head, STREAM_HEAD_SIZE);
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		st->head_len = (size_t)n;
		*ret = st;
		return 1;
	}
	int read_errno = n < 0 ? errno : 0;
	close_ours(st);
	stream_join(st);
	if (st->rc < 0 || read_errno) {
		r = st->rc < 0 ? st->rc : -read_errno;
		if (st->rc < 0)
			*err = st->err;
		else
			snprintf(err->message, sizeof(err->message), "diff %s: read the tar: %s", id,
				 strerror(read_errno));
		err->code = -r;
		stream_free(st);
		return r;
	}
	*ret = st;
	return 0;
}

ssize_t stream_read(plugin_stream *st, char *buf, size_t max, strata_error *err)
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
	stream_join(st);
	if (st->rc < 0) {
		*err = st->err;
		return st->rc;
	}
	if (read_errno) {
		snprintf(err->message, sizeof(err->message), "diff %s: read the tar: %s", st->id, strerror(read_errno));
		err->code = read_errno;
		return -read_errno;
	}
	return 0;
}

plugin_stream *stream_free(plugin_stream *st)
{
	if (!st)
		return NULL;
	/* Cancel first, then close: the apply must see the flag by the time
	 * it reads the EOF. */
	__atomic_store_n(&st->cancel, 1, __ATOMIC_RELEASE);
	close_ours(st);
	stream_join(st);
	free(st->head);
	free(st->id);
	free(st->parent);
	free(st);
	return NULL;
}
