/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "union/union.h"

static void parse_plain(void **state)
{
	(void)state;
	mount_entry e;
	assert_int_equal(mountinfo_parse_line("45 27 0:39 / /var/lib/strata/mnt/abc rw,relatime shared:1 - overlay "
					      "overlay rw,lowerdir+=/a,upperdir=/b\n",
					      &e),
			 0);
	assert_string_equal(e.mountpoint, "/var/lib/strata/mnt/abc");
	assert_string_equal(e.fstype, "overlay");
	free(e.mountpoint);
	free(e.fstype);
}

static void parse_escapes(void **state)
{
	(void)state;
	mount_entry e;
	assert_int_equal(mountinfo_parse_line("45 27 0:39 / /tmp/a\\040b\\011c\\134d rw - ext4 /dev/x rw", &e), 0);
	assert_string_equal(e.mountpoint, "/tmp/a b\tc\\d");
	assert_string_equal(e.fstype, "ext4");
	free(e.mountpoint);
	free(e.fstype);

	/* A backslash that starts no octal escape is kept as is. */
	assert_int_equal(mountinfo_parse_line("1 2 0:1 / /x\\9 rw - tmpfs t rw", &e), 0);
	assert_string_equal(e.mountpoint, "/x\\9");
	free(e.mountpoint);
	free(e.fstype);
}

static void parse_bad(void **state)
{
	(void)state;
	mount_entry e;
	assert_int_equal(mountinfo_parse_line("garbage", &e), -EBADMSG);
	assert_int_equal(mountinfo_parse_line("1 2 3 / /x rw no separator", &e), -EBADMSG);
}

static void under_finds_proc(void **state)
{
	(void)state;
	mount_entry *m = NULL;
	size_t n = 0;
	assert_int_equal(mountinfo_under("/proc", &m, &n), 0);
	assert_true(n >= 1);
	int found = 0;
	for (size_t i = 0; i < n; i++) {
		if (!strcmp(m[i].mountpoint, "/proc") && !strcmp(m[i].fstype, "proc"))
			found = 1;
		/* "/procfoo" is not under "/proc". */
		assert_true(m[i].mountpoint[5] == '\0' || m[i].mountpoint[5] == '/');
	}
	assert_true(found);
	/* Deepest first: the order to unmount in. */
	for (size_t i = 1; i < n; i++)
		assert_true(strlen(m[i - 1].mountpoint) >= strlen(m[i].mountpoint));
	mount_entries_free(m, n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parse_plain),
		cmocka_unit_test(parse_escapes),
		cmocka_unit_test(parse_bad),
		cmocka_unit_test(under_finds_proc),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
