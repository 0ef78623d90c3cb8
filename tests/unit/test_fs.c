/* SPDX-License-Identifier: Apache-2.0 */
/* fd-relative helpers on a real filesystem (and a real tmpfs mount). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/fs.h"

static char tmpl[64];
static int dfd = -1;

static int setup(void **state)
{
	(void)state;
	snprintf(tmpl, sizeof(tmpl), "/var/tmp/strata-unit-fs.XXXXXX");
	if (!mkdtemp(tmpl))
		return -1;
	dfd = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return dfd < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	char path[128];
	/* The mount test unmounts itself; this is the safety net. */
	snprintf(path, sizeof(path), "%s/tree/a/mnt", tmpl);
	umount2(path, MNT_DETACH);
	int r = fs_rm_tree_at(AT_FDCWD, tmpl, NULL);
	close(dfd);
	return r;
}

static int count_entries(int fd)
{
	int n = 0;
	DIR *d = fdopendir(openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void atomic_write(void **state)
{
	(void)state;
	int sub = (mkdirat(dfd, "aw", 0700), openat(dfd, "aw", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	assert_int_equal(fs_write_atomic_at(sub, "f", "one\n", 4, 0640, FS_WRITE_SYNC), 0);
	assert_int_equal(fs_write_atomic_at(sub, "f", "two\n", 4, 0640, 0), 0);
	char *data = NULL;
	size_t len = 0;
	assert_int_equal(fs_read_at(sub, "f", 100, &data, &len), 0);
	assert_string_equal(data, "two\n");
	assert_int_equal(len, 4);
	free(data);

	struct stat st;
	assert_int_equal(fstatat(sub, "f", &st, 0), 0);
	assert_int_equal(st.st_mode & 07777, 0640); /* whatever the umask */

	assert_int_equal(fs_write_atomic_at(sub, "f", "three", 5, 0600, FS_WRITE_NOREPLACE), -EEXIST);
	assert_int_equal(fs_read_at(sub, "f", 100, &data, &len), 0);
	assert_string_equal(data, "two\n");
	free(data);
	/* No temp file is left behind, on success or failure. */
	assert_int_equal(count_entries(sub), 1);
	close(sub);
}

static void read_limits(void **state)
{
	(void)state;
	char big[5000];
	memset(big, 'x', sizeof(big));
	assert_int_equal(fs_write_atomic_at(dfd, "big", big, sizeof(big), 0600, 0), 0);
	char *data = NULL;
	assert_int_equal(fs_read_at(dfd, "big", 4096, &data, NULL), -EFBIG);
	assert_null(data);
	size_t len = 0;
	assert_int_equal(fs_read_at(dfd, "big", 5000, &data, &len), 0);
	assert_int_equal(len, 5000);
	free(data);
	assert_int_equal(fs_read_at(dfd, "missing", 10, &data, NULL), -ENOENT);
	/* Never through a symlink. */
	assert_int_equal(symlinkat("big", dfd, "link"), 0);
	assert_int_equal(fs_read_at(dfd, "link", 5000, &data, NULL), -ELOOP);
}

static void rm_deep_tree_with_few_fds(void **state)
{
	(void)state;
	assert_int_equal(mkdirat(dfd, "deep", 0755), 0);
	int fd = openat(dfd, "deep", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	for (int i = 0; i < 3000; i++) {
		assert_int_equal(mkdirat(fd, "d", 0755), 0);
		int f = openat(fd, "file", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		close(f);
		int next = openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		close(fd);
		fd = next;
	}
	/* A directory nobody may enter but root. */
	assert_int_equal(mkdirat(fd, "locked", 0), 0);
	close(fd);

	struct rlimit old, low = {.rlim_cur = 32, .rlim_max = 0};
	getrlimit(RLIMIT_NOFILE, &old);
	low.rlim_max = old.rlim_max;
	setrlimit(RLIMIT_NOFILE, &low);
	strata_error err = {0};
	int r = fs_rm_tree_at(dfd, "deep", &err);
	setrlimit(RLIMIT_NOFILE, &old);
	if (r != 0)
		fail_msg("rm deep: %s", err.message);
	assert_int_equal(faccessat(dfd, "deep", F_OK, AT_SYMLINK_NOFOLLOW), -1);
	assert_int_equal(fs_rm_tree_at(dfd, "deep", NULL), 0); /* missing is fine */
}

static void rm_never_follows_symlinks(void **state)
{
	(void)state;
	assert_int_equal(mkdirat(dfd, "outside", 0755), 0);
	int f = openat(dfd, "outside/sentinel", O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	close(f);
	assert_int_equal(mkdirat(dfd, "victim", 0755), 0);
	char target[128];
	snprintf(target, sizeof(target), "%s/outside", tmpl);
	assert_int_equal(symlinkat(target, dfd, "victim/abs"), 0);
	assert_int_equal(symlinkat("../outside", dfd, "victim/rel"), 0);
	assert_int_equal(fs_rm_tree_at(dfd, "victim", NULL), 0);
	assert_int_equal(faccessat(dfd, "outside/sentinel", F_OK, 0), 0);
	/* A symlink as the top is unlinked, not followed. */
	assert_int_equal(symlinkat("outside", dfd, "toplink"), 0);
	assert_int_equal(fs_rm_tree_at(dfd, "toplink", NULL), 0);
	assert_int_equal(faccessat(dfd, "outside/sentinel", F_OK, 0), 0);
}

static void rm_stops_at_mount_points(void **state)
{
	(void)state;
	assert_int_equal(mkdirat(dfd, "tree", 0755), 0);
	assert_int_equal(mkdirat(dfd, "tree/a", 0755), 0);
	assert_int_equal(mkdirat(dfd, "tree/a/mnt", 0755), 0);
	char mnt[128];
	snprintf(mnt, sizeof(mnt), "%s/tree/a/mnt", tmpl);
	assert_int_equal(mount("tmpfs", mnt, "tmpfs", 0, "size=1m"), 0);
	char precious[160];
	snprintf(precious, sizeof(precious), "%s/precious", mnt);
	int f = open(precious, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	assert_true(f >= 0);
	close(f);
	/* A non-empty dir so the walk must decide whether to descend. */
	char inner[160];
	snprintf(inner, sizeof(inner), "%s/x", mnt);
	mkdir(inner, 0755);

	assert_int_equal(fs_is_mount_point_at(dfd, "tree/a/mnt"), 1);
	assert_int_equal(fs_is_mount_point_at(dfd, "tree/a"), 0);

	strata_error err = {0};
	assert_int_equal(fs_rm_tree_at(dfd, "tree", &err), -EBUSY);
	if (!strstr(err.message, "mount point"))
		fail_msg("message: %s", err.message);
	assert_int_equal(access(precious, F_OK), 0);

	/* And the mount itself as the top. */
	assert_int_equal(fs_rm_tree_at(dfd, "tree/a/mnt", &err), -EBUSY);
	assert_int_equal(access(precious, F_OK), 0);

	assert_int_equal(umount(mnt), 0);
	assert_int_equal(fs_rm_tree_at(dfd, "tree", NULL), 0);
}

static void random_names(void **state)
{
	(void)state;
	char a[33] = {0}, b[33] = {0};
	assert_int_equal(fs_random_name(a, 32), 0);
	assert_int_equal(fs_random_name(b, 32), 0);
	assert_string_not_equal(a, b);
	for (int i = 0; i < 32; i++)
		assert_non_null(strchr("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", a[i]));
	assert_int_equal(fs_random_name(a, 65), -EINVAL);
}

static void strbuf_grows(void **state)
{
	(void)state;
	strbuf sb = {0};
	for (int i = 0; i < 1000; i++)
		assert_int_equal(strbuf_appendf(&sb, "%d,", i), 0);
	assert_int_equal(strncmp(sb.buf, "0,1,2,", 6), 0);
	assert_int_equal(sb.len, strlen(sb.buf));
	char *s = strbuf_detach(&sb);
	assert_null(sb.buf);
	assert_non_null(strstr(s, ",999,"));
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(atomic_write),
		cmocka_unit_test(read_limits),
		cmocka_unit_test(rm_deep_tree_with_few_fds),
		cmocka_unit_test(rm_never_follows_symlinks),
		cmocka_unit_test(rm_stops_at_mount_points),
		cmocka_unit_test(random_names),
		cmocka_unit_test(strbuf_grows),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
