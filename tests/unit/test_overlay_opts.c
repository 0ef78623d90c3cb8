/* SPDX-License-Identifier: Apache-2.0 */
/* Option building for both overlay mount paths, without mounting. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "union/union.h"

static union_request two_layers(void)
{
	static char *lowers[] = {"/s/diff/mid", "/s/diff/base", NULL};
	static char *shorts[] = {"AAAAAA", "BBBBBB", NULL};
	return (union_request){
		.target = "/s/mnt/top",
		.upper = "/s/diff/top",
		.work = "/s/work/top",
		.lowers = lowers,
		.n_lowers = 2,
		.short_lowers = shorts,
		.short_upper = "../diff/top",
		.short_work = "../work/top",
	};
}

static void params_order(void **state)
{
	(void)state;
	union_request req = two_layers();
	overlay_param *p = NULL;
	size_t n = 0;
	assert_int_equal(overlay_build_params(&req, &p, &n), 0);
	assert_int_equal(n, 7);
	/* Top layer first: the nearest parent hides what is below it. */
	assert_string_equal(p[0].key, "lowerdir+");
	assert_string_equal(p[0].value, "/s/diff/mid");
	assert_string_equal(p[1].key, "lowerdir+");
	assert_string_equal(p[1].value, "/s/diff/base");
	assert_string_equal(p[2].key, "upperdir");
	assert_string_equal(p[2].value, "/s/diff/top");
	assert_string_equal(p[3].key, "workdir");
	assert_string_equal(p[3].value, "/s/work/top");
	assert_string_equal(p[4].key, "index");
	assert_string_equal(p[4].value, "off");
	assert_string_equal(p[5].key, "redirect_dir");
	assert_string_equal(p[6].key, "metacopy");
	free(p);
}

static void params_label(void **state)
{
	(void)state;
	union_request req = two_layers();
	req.label = "system_u:object_r:container_file_t:s0:c1,c2";
	overlay_param *p = NULL;
	size_t n = 0;

	/* Without SELinux the label is dropped: context= would fail the mount. */
	assert_int_equal(overlay_build_params(&req, &p, &n), 0);
	assert_int_equal(n, 7);
	free(p);

	req.selinux = true;
	assert_int_equal(overlay_build_params(&req, &p, &n), 0);
	assert_int_equal(n, 8);
	assert_string_equal(p[7].key, "context");
	assert_string_equal(p[7].value, req.label);
	free(p);

	req.label = "";
	assert_int_equal(overlay_build_params(&req, &p, &n), 0);
	assert_int_equal(n, 7);
	free(p);
}

static void params_long_paths_use_fds(void **state)
{
	(void)state;
	char longpath[300];
	memset(longpath, 'x', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	char exact[OVERLAY_FSCONFIG_STRING_MAX + 1];
	memset(exact, 'y', sizeof(exact) - 1);
	exact[0] = '/';
	exact[sizeof(exact) - 1] = '\0';

	char *lowers[] = {longpath, exact, NULL};
	union_request req = two_layers();
	req.lowers = lowers;
	req.upper = longpath;
	overlay_param *p = NULL;
	size_t n = 0;
	assert_int_equal(overlay_build_params(&req, &p, &n), 0);
	assert_null(p[0].value);		/* 299 bytes: by fd */
	assert_string_equal(p[1].value, exact); /* 255 bytes: still a string */
	assert_null(p[2].value);
	assert_string_equal(p[3].value, "/s/work/top");
	free(p);
}

static void legacy_data_exact(void **state)
{
	(void)state;
	union_request req = two_layers();
	char *data = NULL;
	assert_int_equal(overlay_build_legacy_data(&req, 4096, &data, NULL), 0);
	assert_string_equal(data, "lowerdir=AAAAAA:BBBBBB,upperdir=../diff/top,workdir=../work/top,"
				  "index=off,redirect_dir=off,metacopy=off");
	free(data);

	req.selinux = true;
	req.label = "system_u:object_r:container_file_t:s0:c1,c2";
	assert_int_equal(overlay_build_legacy_data(&req, 4096, &data, NULL), 0);
	assert_non_null(strstr(data, ",context=\"system_u:object_r:container_file_t:s0:c1,c2\""));
	free(data);
}

static union_request many(size_t n, char ***out_names)
{
	char **names = calloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++) {
		names[i] = malloc(7);
		snprintf(names[i], 7, "%06u", (unsigned)(i % 1000000));
	}
	*out_names = names;
	union_request req = two_layers();
	req.n_lowers = n;
	req.short_lowers = names;
	req.short_upper = "../diff/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	req.short_work = "../work/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
	return req;
}

static void free_names(char **names)
{
	for (char **p = names; *p; p++)
		free(*p);
	free(names);
}

static void legacy_500_layers_fit_a_page(void **state)
{
	(void)state;
	char **names = NULL;
	union_request req = many(500, &names);
	char *data = NULL;
	strata_error err = {0};
	assert_int_equal(overlay_build_legacy_data(&req, 4096, &data, &err), 0);
	assert_true(strlen(data) < 4096);
	assert_non_null(strstr(data, "lowerdir=000000:000001:"));
	assert_non_null(strstr(data, ":000499,upperdir="));
	free(data);

	/* With a label of the usual size too. */
	req.selinux = true;
	req.label = "system_u:object_r:container_file_t:s0:c123,c456";
	assert_int_equal(overlay_build_legacy_data(&req, 4096, &data, &err), 0);
	free(data);
	free_names(names);
}

static void legacy_too_long(void **state)
{
	(void)state;
	char **names = NULL;
	union_request req = many(600, &names);
	char *data = NULL;
	strata_error err = {0};
	assert_int_equal(overlay_build_legacy_data(&req, 4096, &data, &err), -E2BIG);
	assert_null(data);
	assert_non_null(strstr(err.message, "600 layers"));
	assert_non_null(strstr(err.message, "more than one page (4096)"));

	/* The boundary: a string of exactly page-1 bytes fits, page does not. */
	req.n_lowers = 1;
	assert_int_equal(overlay_build_legacy_data(&req, 4096, &data, &err), 0);
	size_t len = strlen(data);
	free(data);
	assert_int_equal(overlay_build_legacy_data(&req, len + 1, &data, &err), 0);
	free(data);
	assert_int_equal(overlay_build_legacy_data(&req, len, &data, &err), -E2BIG);
	free_names(names);
}

static void label_validation(void **state)
{
	(void)state;
	assert_int_equal(overlay_label_validate(NULL, NULL), 0);
	assert_int_equal(overlay_label_validate("system_u:object_r:x:s0:c1,c2", NULL), 0);
	strata_error err = {0};
	assert_int_equal(overlay_label_validate("a\"b", &err), -EINVAL);
	assert_non_null(strstr(err.message, "invalid mount label"));
	assert_int_equal(overlay_label_validate("a\\b", NULL), -EINVAL);
	assert_int_equal(overlay_label_validate("a\nb", NULL), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(params_order),
		cmocka_unit_test(params_label),
		cmocka_unit_test(params_long_paths_use_fds),
		cmocka_unit_test(legacy_data_exact),
		cmocka_unit_test(legacy_500_layers_fit_a_page),
		cmocka_unit_test(legacy_too_long),
		cmocka_unit_test(label_validation),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
