/* SPDX-License-Identifier: Apache-2.0 */
/* Chain files in the seed's format: parents nearest first, one a line. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "store/store.h"
#include "util/macro.h"

static char **parse_ok(const char *data, size_t len)
{
	char **ids = NULL;
	strata_error err = {0};
	int r = chain_parse(data, len, &ids, &err);
	if (r != 0)
		fail_msg("parse failed: %s", err.message);
	return ids;
}

static void parse_valid(void **state)
{
	(void)state;
	char **ids = parse_ok("", 0);
	assert_null(ids[0]);
	strv_free(ids);

	ids = parse_ok("a\n", 2);
	assert_string_equal(ids[0], "a");
	assert_null(ids[1]);
	strv_free(ids);

	ids = parse_ok("mid\nbase\n", 9);
	assert_string_equal(ids[0], "mid");
	assert_string_equal(ids[1], "base");
	assert_null(ids[2]);
	strv_free(ids);

	/* Written by hand without the final newline: still the same chain. */
	ids = parse_ok("mid\nbase", 8);
	assert_string_equal(ids[1], "base");
	strv_free(ids);
}

static void parse_invalid(void **state)
{
	(void)state;
	static const char *const bad[] = {"\n", "a\n\nb\n", "../x\n", "a b\n", ".tmp\n", "a\r\n", "x-removing\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char **ids = NULL;
		strata_error err = {0};
		int r = chain_parse(bad[i], strlen(bad[i]), &ids, &err);
		if (r != -EBADMSG)
			fail_msg("chain #%zu accepted (r=%d)", i, r);
		assert_null(ids);
		assert_non_null(strstr(err.message, "line"));
	}
	char **ids = NULL;
	assert_int_equal(chain_parse("a\0b\n", 4, &ids, NULL), -EBADMSG);
}

static void parse_too_long(void **state)
{
	(void)state;
	size_t n = STORE_MAX_PARENTS + 1;
	char *data = malloc(n * 8);
	size_t len = 0;
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(data + len, 8, "l%zu\n", i);
	char **ids = NULL;
	strata_error err = {0};
	assert_int_equal(chain_parse(data, len, &ids, &err), -EBADMSG);
	assert_non_null(strstr(err.message, "501 parents"));
	/* 500 is the most overlay takes, and is accepted. */
	len = 0;
	for (size_t i = 0; i < STORE_MAX_PARENTS; i++)
		len += (size_t)snprintf(data + len, 8, "l%zu\n", i);
	assert_int_equal(chain_parse(data, len, &ids, NULL), 0);
	assert_int_equal(strv_length(ids), STORE_MAX_PARENTS);
	strv_free(ids);
	free(data);
}

static void format_round_trip(void **state)
{
	(void)state;
	char *data = NULL;
	size_t len = 0;
	assert_int_equal(chain_format(NULL, NULL, &data, &len), 0);
	assert_int_equal(len, 0);
	free(data);

	char *gp[] = {"mid", "base", NULL};
	assert_int_equal(chain_format("top", gp, &data, &len), 0);
	assert_string_equal(data, "top\nmid\nbase\n");
	char **ids = parse_ok(data, len);
	assert_string_equal(ids[0], "top");
	assert_string_equal(ids[2], "base");
	assert_null(ids[3]);
	strv_free(ids);
	free(data);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parse_valid),
		cmocka_unit_test(parse_invalid),
		cmocka_unit_test(parse_too_long),
		cmocka_unit_test(format_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
