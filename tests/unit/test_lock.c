/* SPDX-License-Identifier: Apache-2.0 */
/* Per-id locks: exclusion between threads, no false sharing between ids,
 * no deadlock when two callers lock the same pair in opposite orders. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "store/store.h"
#include "util/fs.h"

static char tmpl[64];
static store *st;

static int setup(void **state)
{
	(void)state;
	snprintf(tmpl, sizeof(tmpl), "/var/tmp/strata-unit-lock.XXXXXX");
	if (!mkdtemp(tmpl))
		return -1;
	return store_open(tmpl, true, &st, NULL);
}

static int teardown(void **state)
{
	(void)state;
	store_free(st);
	return fs_rm_tree_at(AT_FDCWD, tmpl, NULL);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct contender {
	const char *id;
	double acquired;
};

static void *contend(void *arg)
{
	struct contender *c = arg;
	id_lock l = ID_LOCK_INIT;
	if (lock_ids(st, c->id, NULL, &l) == 0) {
		c->acquired = now();
		lock_release(&l);
	}
	return NULL;
}

static void same_id_excludes(void **state)
{
	(void)state;
	id_lock held = ID_LOCK_INIT;
	assert_int_equal(lock_ids(st, "layer-a", NULL, &held), 0);
	struct contender c = {.id = "layer-a"};
	pthread_t t;
	pthread_create(&t, NULL, contend, &c);
	usleep(200 * 1000);
	double released = now();
	lock_release(&held);
	pthread_join(t, NULL);
	/* The other thread got the lock only after we let it go. */
	assert_true(c.acquired >= released);
}

static void other_ids_do_not_wait(void **state)
{
	(void)state;
	id_lock held = ID_LOCK_INIT;
	assert_int_equal(lock_ids(st, "layer-a", NULL, &held), 0);
	struct contender c = {.id = "layer-b"};
	double start = now();
	pthread_t t;
	pthread_create(&t, NULL, contend, &c);
	pthread_join(t, NULL);
	assert_true(c.acquired - start < 0.15);
	lock_release(&held);
	assert_true(lock_offset("layer-a") != lock_offset("layer-b"));
}

struct pair_loop {
	const char *a, *b;
	atomic_int *done;
};

static void *lock_pairs(void *arg)
{
	struct pair_loop *p = arg;
	for (int i = 0; i < 2000; i++) {
		id_lock l = ID_LOCK_INIT;
		if (lock_ids(st, p->a, p->b, &l) < 0)
			return NULL;
		lock_release(&l);
	}
	atomic_fetch_add(p->done, 1);
	return NULL;
}

static void opposite_pairs_never_deadlock(void **state)
{
	(void)state;
	atomic_int done = 0;
	struct pair_loop x = {"child", "parent", &done}, y = {"parent", "child", &done};
	pthread_t t1, t2;
	pthread_create(&t1, NULL, lock_pairs, &x);
	pthread_create(&t2, NULL, lock_pairs, &y);
	/* A deadlock would hang here; give it a generous deadline. */
	double start = now();
	while (atomic_load(&done) < 2 && now() - start < 20)
		usleep(10 * 1000);
	assert_int_equal(atomic_load(&done), 2);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
}

static void pair_with_itself(void **state)
{
	(void)state;
	id_lock l = ID_LOCK_INIT;
	assert_int_equal(lock_ids(st, "same", "same", &l), 0);
	assert_int_equal(l.n, 1);
	lock_release(&l);
	assert_int_equal(l.fd, -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(same_id_excludes),
		cmocka_unit_test(other_ids_do_not_wait),
		cmocka_unit_test(opposite_pairs_never_deadlock),
		cmocka_unit_test(pair_with_itself),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
