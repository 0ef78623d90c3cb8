/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tar/pool.h"
#include "util/banned.h"
#include "util/error.h"

struct work_pool {
	pthread_mutex_t lock;
	pthread_cond_t not_empty, not_full;
	void **ring;
	size_t *ring_bytes;
	size_t cap, head, count;
	size_t bytes, max_bytes;
	bool stop;
	int error;
	strata_error err;
	work_fn run;
	work_free_fn drop;
	size_t n_threads;
	pthread_t threads[];
};

static void *worker(void *arg)
{
	work_pool *p = arg;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (p->count == 0 && !p->stop)
			pthread_cond_wait(&p->not_empty, &p->lock);
		if (p->count == 0)
			break;
		void *job = p->ring[p->head];
		size_t bytes = p->ring_bytes[p->head];
		p->head = (p->head + 1) % p->cap;
		p->count--;
		bool failed = p->error < 0;
		pthread_mutex_unlock(&p->lock);

		strata_error err = {0};
		int r = 0;
		if (failed)
			p->drop(job);
		else
			r = p->run(job, &err);

		pthread_mutex_lock(&p->lock);
		p->bytes -= bytes;
		if (r < 0 && p->error == 0) {
			p->error = r;
			p->err = err;
		}
		pthread_cond_signal(&p->not_full);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

int pool_new(size_t threads, size_t max_jobs, size_t max_bytes, work_fn run, work_free_fn drop, work_pool **ret)
{
	work_pool *p = calloc(1, sizeof(*p) + threads * sizeof(pthread_t));
	if (!p)
		return -ENOMEM;
	p->ring = calloc(max_jobs, sizeof(void *));
	p->ring_bytes = calloc(max_jobs, sizeof(size_t));
	if (!p->ring || !p->ring_bytes) {
		free(p->ring);
		free(p->ring_bytes);
		free(p);
		return -ENOMEM;
	}
	p->cap = max_jobs;
	p->max_bytes = max_bytes;
	p->run = run;
	p->drop = drop;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->not_empty, NULL);
	pthread_cond_init(&p->not_full, NULL);
	for (size_t i = 0; i < threads; i++) {
		int r = pthread_create(&p->threads[i], NULL, worker, p);
		if (r != 0) {
			p->n_threads = i;
			pool_finish(p, NULL);
			return -r;
		}
	}
	p->n_threads = threads;
	*ret = p;
	return 0;
}

int pool_submit(work_pool *p, void *job, size_t bytes)
{
	pthread_mutex_lock(&p->lock);
	/* A job bigger than the budget still goes, alone. */
	while (p->error == 0 && (p->count == p->cap || (p->bytes > 0 && p->bytes + bytes > p->max_bytes)))
		pthread_cond_wait(&p->not_full, &p->lock);
	int r = p->error;
	if (r == 0) {
		size_t tail = (p->head + p->count) % p->cap;
		p->ring[tail] = job;
		p->ring_bytes[tail] = bytes;
		p->count++;
		p->bytes += bytes;
		pthread_cond_signal(&p->not_empty);
	}
	pthread_mutex_unlock(&p->lock);
	if (r < 0)
		p->drop(job);
	return r;
}

int pool_finish(work_pool *p, strata_error *err)
{
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->not_empty);
	pthread_mutex_unlock(&p->lock);
	for (size_t i = 0; i < p->n_threads; i++)
		pthread_join(p->threads[i], NULL);
	/* No worker (pool_new failed half way): drop what is queued. */
	for (; p->count > 0; p->count--, p->head = (p->head + 1) % p->cap)
		p->drop(p->ring[p->head]);
	int r = p->error;
	if (r < 0 && err)
		*err = p->err;
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->not_empty);
	pthread_cond_destroy(&p->not_full);
	free(p->ring);
	free(p->ring_bytes);
	free(p);
	return r;
}
