/* SPDX-License-Identifier: Apache-2.0 */
/* The pure parts of the tar module: name cleaning, xattr filter, id maps,
 * inode sets, the worker pool. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tar/pool.h"
#include "tar/tar.h"

static void clean_names(void **state)
{
	(void)state;
	static const struct {
		const char *in, *out;
	} ok[] = {
		{"a", "a"},	 {"./a", "a"},	     {"a/", "a"},	 {"./a/./b/", "a/b"},
		{"a//b", "a/b"}, {".", ""},	     {"./", ""},	 {".wh.x", ".wh.x"},
		{"...", "..."},	 {"a/..b", "a/..b"}, {"..a/b", "..a/b"}, {"a/b/c/d", "a/b/c/d"},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		char *out = NULL;
		const char *why = NULL;
		assert_int_equal(tar_clean_name(ok[i].in, &out, &why), 0);
		assert_string_equal(out, ok[i].out);
		free(out);
	}
	static const char *const bad[] = {"",	  "/",	    "/etc/passwd", "..",	   "../a",
					  "a/..", "a/../b", "./..",	   "a/b/../../..", NULL};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *out = NULL;
		const char *why = NULL;
		assert_int_equal(tar_clean_name(bad[i], &out, &why), -EINVAL);
		assert_non_null(why);
		assert_null(out);
	}
}

static void xattr_filter(void **state)
{
	(void)state;
	assert_true(tar_xattr_kept("user.foo"));
	assert_true(tar_xattr_kept("trusted.foo"));
	assert_true(tar_xattr_kept("security.capability"));
	assert_false(tar_xattr_kept("trusted.overlay.opaque"));
	assert_false(tar_xattr_kept("trusted.overlay.redirect"));
	assert_false(tar_xattr_kept("user.overlay.opaque"));
	assert_false(tar_xattr_kept("user.overlay.redirect"));
	assert_true(tar_xattr_kept("user.overlayish"));
	assert_false(tar_xattr_kept("security.selinux"));
	assert_false(tar_xattr_kept("system.posix_acl_access"));
	assert_false(tar_xattr_kept("userfoo"));
}

static void idmaps(void **state)
{
	(void)state;
	idmap m = {0};
	uint32_t v;
	assert_int_equal(idmap_to_host(&m, 1234, &v), 0); /* empty: identity */
	assert_int_equal(v, 1234);
	assert_int_equal(idmap_add(&m, "0:100000:65536", NULL), 0);
	assert_int_equal(idmap_add(&m, "65536:300000:1", NULL), 0);
	assert_int_equal(idmap_to_host(&m, 0, &v), 0);
	assert_int_equal(v, 100000);
	assert_int_equal(idmap_to_host(&m, 65535, &v), 0);
	assert_int_equal(v, 165535);
	assert_int_equal(idmap_to_host(&m, 65536, &v), 0);
	assert_int_equal(v, 300000);
	assert_int_equal(idmap_to_host(&m, 65537, &v), -ERANGE);
	assert_int_equal(idmap_to_container(&m, 165535, &v), 0);
	assert_int_equal(v, 65535);
	assert_int_equal(idmap_to_container(&m, 0, &v), -ERANGE);

	static const char *const bad[] = {"",
					  "1",
					  "1:2",
					  "1:2:0",
					  "a:b:c",
					  "1:2:3:4",
					  "-1:2:3",
					  "1:2:3x",
					  "4294967295:0:2",
					  "0:4294967295:2",
					  "99999999999:0:1",
					  "1000:200000:1",  /* container side overlaps 0:100000:65536 */
					  "70000:100001:5", /* host side overlaps */
					  NULL};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		strata_error err = {0};
		if (!bad[i]) {
			assert_int_equal(idmap_add(&m, "", &err) < 0, 1);
			continue;
		}
		if (idmap_add(&m, bad[i], &err) == 0)
			fail_msg("id map \"%s\" accepted", bad[i]);
		assert_non_null(strstr(err.message, "id map"));
	}
	assert_int_equal(m.n, 2);
	idmap_release(&m);
}

static void inode_sets(void **state)
{
	(void)state;
	inode_set s = {0};
	for (ino_t i = 1; i <= 10000; i++)
		assert_int_equal(inode_set_add(&s, 7, i), 1);
	for (ino_t i = 1; i <= 10000; i++)
		assert_int_equal(inode_set_add(&s, 7, i), 0);
	assert_int_equal(inode_set_add(&s, 8, 1), 1); /* another device */
	assert_int_equal(s.n, 10001);
	inode_set_release(&s);
}

static size_t ran, dropped;
static int job_run(void *job, strata_error *err)
{
	int v = *(int *)job;
	free(job);
	__atomic_add_fetch(&ran, 1, __ATOMIC_SEQ_CST);
	if (v == 13) {
		snprintf(err->message, sizeof(err->message), "job 13 failed");
		return -EIO;
	}
	return 0;
}
static void job_drop(void *job)
{
	free(job);
	__atomic_add_fetch(&dropped, 1, __ATOMIC_SEQ_CST);
}

static void pool_runs_everything(void **state)
{
	(void)state;
	for (size_t threads = 1; threads <= 3; threads++) {
		ran = dropped = 0;
		work_pool *p = NULL;
		assert_int_equal(pool_new(threads, 4, 100, job_run, job_drop, &p), 0);
		for (int i = 0; i < 1000; i++) {
			int *j = malloc(sizeof(int));
			*j = i + 100;
			assert_int_equal(pool_submit(p, j, 60), 0); /* over budget: one at a time */
		}
		strata_error err = {0};
		assert_int_equal(pool_finish(p, &err), 0);
		assert_int_equal(ran, 1000);
		assert_int_equal(dropped, 0);
	}
}

static void pool_reports_first_error(void **state)
{
	(void)state;
	ran = dropped = 0;
	work_pool *p = NULL;
	assert_int_equal(pool_new(2, 8, 1 << 20, job_run, job_drop, &p), 0);
	int submitted = 0, failed = 0;
	for (int i = 0; i < 1000; i++) {
		int *j = malloc(sizeof(int));
		*j = i;
		if (pool_submit(p, j, 1) < 0) {
			failed = 1;
			break;
		}
		submitted++;
	}
	strata_error err = {0};
	assert_int_equal(pool_finish(p, &err), -EIO);
	assert_string_equal(err.message, "job 13 failed");
	/* Every job was run or dropped: nothing leaks. */
	assert_int_equal(ran + dropped, (size_t)submitted + (size_t)failed);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(clean_names),
		cmocka_unit_test(xattr_filter),
		cmocka_unit_test(idmaps),
		cmocka_unit_test(inode_sets),
		cmocka_unit_test(pool_runs_everything),
		cmocka_unit_test(pool_reports_first_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
