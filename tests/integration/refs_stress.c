/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Threads taking and dropping references on one layer through one driver
 * handle, as a daemon serving concurrent requests would.
 *   refs_stress ROOT ID THREADS ITERATIONS cycle   each thread: get, check, put
 *   refs_stress ROOT ID THREADS 0 hold             all get, check count, all put
 * Exits 0 when every call succeeded, every get returned a mounted view, and
 * at the end the count is 0 and nothing is mounted.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "strata.h"

static strata_driver *driver;
static const char *layer;
static int iterations;
static atomic_int failures;
static pthread_barrier_t barrier;

static int is_mount_root(const char *path)
{
	struct statx sx;
	if (statx(0, path, 0, STATX_TYPE, &sx) < 0)
		return 0;
	return !!(sx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

static void failed(const char *what, const strata_error *err)
{
	fprintf(stderr, "%s: %s\n", what, err ? err->message : "");
	atomic_fetch_add(&failures, 1);
}

static void *cycle(void *arg)
{
	(void)arg;
	for (int i = 0; i < iterations; i++) {
		char *path = NULL;
		strata_error err;
		if (strata_get(driver, layer, NULL, &path, &err) < 0) {
			failed("get", &err);
			continue;
		}
		/* While we hold a reference the union must stay mounted. */
		if (!is_mount_root(path))
			failed("view not mounted while referenced", NULL);
		free(path);
		if (strata_put(driver, layer, &err) < 0)
			failed("put", &err);
	}
	return NULL;
}

static void *hold(void *arg)
{
	(void)arg;
	char *path = NULL;
	strata_error err;
	if (strata_get(driver, layer, NULL, &path, &err) < 0)
		failed("get", &err);
	free(path);
	pthread_barrier_wait(&barrier); /* everyone holds one */
	pthread_barrier_wait(&barrier); /* main has checked the count */
	if (strata_put(driver, layer, &err) < 0)
		failed("put", &err);
	return NULL;
}

static const char *meta(const char *key, strata_kv_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->items[i].key, key))
			return l->items[i].value;
	return "";
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: refs_stress ROOT ID THREADS ITERATIONS cycle|hold\n");
		return 2;
	}
	strata_error err;
	if (strata_driver_open(argv[1], NULL, 0, &driver, &err) < 0) {
		fprintf(stderr, "%s\n", err.message);
		return 1;
	}
	layer = argv[2];
	int n = atoi(argv[3]);
	iterations = atoi(argv[4]);
	int holding = !strcmp(argv[5], "hold");
	pthread_t *t = calloc((size_t)n, sizeof(*t));
	pthread_barrier_init(&barrier, NULL, (unsigned)n + 1);

	for (int i = 0; i < n; i++)
		pthread_create(&t[i], NULL, holding ? hold : cycle, NULL);
	if (holding) {
		pthread_barrier_wait(&barrier);
		strata_kv_list l = {0};
		if (strata_get_metadata(driver, layer, &l, &err) < 0)
			failed("metadata", &err);
		if (atoi(meta("RefCount", &l)) != n || strcmp(meta("Mounted", &l), "true")) {
			fprintf(stderr, "while all hold: RefCount %s, Mounted %s\n", meta("RefCount", &l),
				meta("Mounted", &l));
			atomic_fetch_add(&failures, 1);
		}
		strata_kv_list_clear(&l);
		pthread_barrier_wait(&barrier);
	}
	for (int i = 0; i < n; i++)
		pthread_join(t[i], NULL);

	strata_kv_list l = {0};
	if (strata_get_metadata(driver, layer, &l, &err) < 0)
		failed("metadata", &err);
	if (strcmp(meta("RefCount", &l), "0") || strcmp(meta("Mounted", &l), "false")) {
		fprintf(stderr, "at the end: RefCount %s, Mounted %s\n", meta("RefCount", &l), meta("Mounted", &l));
		atomic_fetch_add(&failures, 1);
	}
	strata_kv_list_clear(&l);
	strata_driver_free(driver);
	pthread_barrier_destroy(&barrier);
	free(t);
	int f = atomic_load(&failures);
	if (f)
		fprintf(stderr, "%d failures\n", f);
	return f ? 1 : 0;
}
