/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Layer tars between an HTTP connection and the library, which reads and
 * writes tars on file descriptors, in a thread of their own.
 *
 * ApplyDiff: a pipe to strata_apply_diff.  Its size bounds what is in
 * flight, so a fast client waits for the disk and a slow one for itself.
 *
 * Diff: strata_diff holds the layer's lock while it writes, so it must
 * never wait on the client.  It writes into a spool, an unnamed temp file
 * in the store root (O_TMPFILE), which the reply reads from its own offset
 * as the file grows; what was sent is punched out, so the file only holds
 * the backlog.  The lock goes when the tar is complete, whatever the
 * client does; a client that disconnects makes the diff's next write fail.
 * Without O_TMPFILE, a pipe as for ApplyDiff (a stalled client then stalls
 * the diff).
 */
#pragma once

#include <stdint.h>
#include <sys/types.h>

#include "strata.h"

/*
 * The stack of every thread that calls the library (MHD's connection
 * threads, and the apply's and diff's here).  The library's tree walks are
 * iterative (a container may make its layer 100,000 directories deep) and
 * keep at most a few dozen fds open, so a call needs no more stack however
 * deep the tree.  Explicit, so it does not follow RLIMIT_STACK; stacks cost
 * address space, not memory: only the pages a call touches are resident.
 */
#define PLUGIN_THREAD_STACK (8u << 20)

typedef struct plugin_stream plugin_stream;

/* Starts an apply of the tar that stream_write() will feed; `parent` NULL:
 * not checked. */
int stream_apply_start(strata_driver *d, const char *id, const char *parent, plugin_stream **ret, strata_error *err);
/* Feeds the apply.  -EPIPE once the apply has stopped reading (it failed,
 * or the tar ended): the caller drops the rest of the body and learns the
 * outcome from stream_apply_finish(). */
int stream_write(plugin_stream *st, const void *data, size_t len);
/* The body has ended: waits for the apply.  Returns its result; *ret_size
 * and *err as strata_apply_diff sets them. */
int stream_apply_finish(plugin_stream *st, uint64_t *ret_size, strata_error *err);

/* Starts a diff and waits for its first 64 KiB, or its end.  Returns 1
 * when output has begun (read it with stream_read), 0 when the diff ended
 * without any, negative when it failed before (or could not start). */
int stream_diff_start(strata_driver *d, const char *id, const char *parent, plugin_stream **ret, strata_error *err);
/* Up to `max` bytes of the diff: >0 bytes, 0 at its successful end,
 * negative when it failed (message in *err). */
ssize_t stream_read(plugin_stream *st, char *buf, size_t max, strata_error *err);

/* Stops whatever still runs (an apply is cancelled, so a tar cut short
 * never becomes a layer; a diff's next write fails with EPIPE), waits for
 * the thread and frees.  Accepts NULL; returns NULL. */
plugin_stream *stream_free(plugin_stream *st);
