/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "store/store.h"

#define BOOT "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"

static void parse_counts(void **state)
{
	(void)state;
	unsigned c = 99;
	assert_int_equal(refs_parse(BOOT " 3\n", BOOT, &c), 0);
	assert_int_equal(c, 3);
	assert_int_equal(refs_parse(BOOT " 1", BOOT, &c), 0);
	assert_int_equal(c, 1);
}

static void other_boot_counts_nothing(void **state)
{
	(void)state;
	unsigned c = 99;
	/* No mount survives a reboot, so neither do its references. */
	assert_int_equal(refs_parse("11111111-2222-3333-4444-555555555555 7\n", BOOT, &c), 0);
	assert_int_equal(c, 0);
	c = 99;
	assert_int_equal(refs_parse("", BOOT, &c), 0);
	assert_int_equal(c, 0);
}

static void garbage_is_an_error(void **state)
{
	(void)state;
	unsigned c = 0;
	assert_int_equal(refs_parse(BOOT " x\n", BOOT, &c), -EBADMSG);
	assert_int_equal(refs_parse(BOOT " -1\n", BOOT, &c), -EBADMSG);
	assert_int_equal(refs_parse(BOOT " 3 4\n", BOOT, &c), -EBADMSG);
	assert_int_equal(refs_parse(BOOT " \n", BOOT, &c), -EBADMSG);
	assert_int_equal(refs_parse(BOOT " 99999999999\n", BOOT, &c), -EBADMSG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parse_counts),
		cmocka_unit_test(other_boot_counts_nothing),
		cmocka_unit_test(garbage_is_an_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
