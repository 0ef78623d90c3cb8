/* SPDX-License-Identifier: Apache-2.0 */
/* Id validation: the gate every id from outside passes before disk. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "store/store.h"

static void valid_ids(void **state)
{
	(void)state;
	static const char *const ok[] = {
		"a",
		"A",
		"0",
		"abc",
		"a.b",
		"a_b",
		"a-b",
		"a-init",
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef-init",
		"x..y",
		"x--",
		"removing",
		"a-removin",
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		strata_error err = {0};
		int r = id_validate(ok[i], &err);
		if (r != 0)
			fail_msg("\"%s\" rejected: %s", ok[i], err.message);
	}
	char max[STRATA_ID_MAX + 1];
	memset(max, 'a', STRATA_ID_MAX);
	max[STRATA_ID_MAX] = '\0';
	assert_int_equal(id_validate(max, NULL), 0);
}

static void invalid_ids(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"",	".",	"..",  ".a",  "-a",  "_a",   "a/b", "/a",	"a/",	 "../a",	 "a b",
		"a\nb", "a\tb", "a:b", "a,b", "a=b", "a\\b", "a*",  "\xc3\xa9", "a\x7f", "abc-removing", "-removing",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		strata_error err = {0};
		int r = id_validate(bad[i], &err);
		if (r != -EINVAL)
			fail_msg("id #%zu accepted", i);
		assert_true(strlen(err.message) > 0);
		assert_non_null(strstr(err.message, "invalid id"));
	}
	char over[STRATA_ID_MAX + 2];
	memset(over, 'a', STRATA_ID_MAX + 1);
	over[STRATA_ID_MAX + 1] = '\0';
	strata_error err = {0};
	assert_int_equal(id_validate(over, &err), -EINVAL);
	assert_non_null(strstr(err.message, "longer than 128"));
	assert_int_equal(id_validate(NULL, NULL), -EINVAL);
}

static void message_names_the_character(void **state)
{
	(void)state;
	strata_error err = {0};
	id_validate("ab/cd", &err);
	assert_non_null(strstr(err.message, "'/' at offset 2"));
	id_validate("ab\ncd", &err);
	assert_non_null(strstr(err.message, "0x0a at offset 2"));
}

static void reserved_names(void **state)
{
	(void)state;
	assert_true(store_name_reserved(".tmp-abc"));
	assert_true(store_name_reserved("abc-removing"));
	assert_false(store_name_reserved("abc"));
	assert_false(store_name_reserved("abc-init"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(valid_ids),
		cmocka_unit_test(invalid_ids),
		cmocka_unit_test(message_names_the_character),
		cmocka_unit_test(reserved_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
