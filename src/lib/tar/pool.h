/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A bounded queue of jobs run by worker threads, so that apply can hand
 * the per-file kernel work (write, chown, chmod, xattrs, times, close) to a
 * second core while the calling thread reads the tar and creates names.
 * Only the calling thread touches the namespace; a job owns an open fd and
 * acts on that inode alone, so jobs never race with later entries.
 */
#pragma once

#include <stddef.h>

#include "strata.h"

typedef struct work_pool work_pool;

/* Runs a job and frees it; returns -errno with err set on failure. */
typedef int (*work_fn)(void *job, strata_error *err);
/* Frees a job without running it (after an earlier failure). */
typedef void (*work_free_fn)(void *job);

/* threads workers; at most max_jobs queued and max_bytes of their
 * declared sizes in flight (submit blocks beyond either). */
int pool_new(size_t threads, size_t max_jobs, size_t max_bytes, work_fn run, work_free_fn drop, work_pool **ret);

/* Queues job (the pool owns it from now on, even on failure).  Returns
 * the first worker error if one has happened; the caller stops then. */
int pool_submit(work_pool *p, void *job, size_t bytes);

/* Waits for every queued job, stops the workers and frees the pool.
 * Returns the first worker error, with its message in err. */
int pool_finish(work_pool *p, strata_error *err);
