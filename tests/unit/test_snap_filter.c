/* SPDX-License-Identifier: Apache-2.0 */
/* containerd's filter syntax over snapshot fields: what parses, what
 * matches, and what is refused (with the offset of the fault). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "filter.h"

#define ELEMENTS(x) (sizeof(x) / sizeof((x)[0]))

static strata_kv base_labels[] = {
	{"containerd.io/gc.root", "2024-01-01T00:00:00Z"},
	{"a.b", "dotted"},
	{"empty", ""},
	{"containerd.io/snapshot.ref", "sha256:abc"},
	{"label with space", "v a l"},
	{"ünï", "cødé"},
};

/* A committed base with labels, an active child, a view of the base. */
static const snap_info base = {
	.key = "default/1/sha256:abc",
	.id = "L1",
	.kind = SNAP_COMMITTED,
	.labels = {ELEMENTS(base_labels), base_labels},
};
static const snap_info work = {
	.key = "default/2/work",
	.parent = "default/1/sha256:abc",
	.id = "L2",
	.kind = SNAP_ACTIVE,
};
static const snap_info look = {
	.key = "other/3/view",
	.parent = "default/1/sha256:abc",
	.id = "L3",
	.kind = SNAP_VIEW,
};

/* Which of base, work, look the filters match, as "bwl" with '-' for no. */
static void expect(char *const *filters, size_t n, const char *want)
{
	snap_filter *f = NULL;
	strata_error err = {0};
	int r = snap_filter_parse(filters, n, &f, &err);
	if (r < 0)
		fail_msg("parse \"%s\": %d %s", n ? filters[0] : "", r, err.message);
	char got[4] = {
		snap_filter_match(f, &base) ? 'b' : '-',
		snap_filter_match(f, &work) ? 'w' : '-',
		snap_filter_match(f, &look) ? 'l' : '-',
		'\0',
	};
	snap_filter_free(f);
	if (strcmp(got, want) != 0)
		fail_msg("\"%s\"%s: matched %s, wanted %s", n ? filters[0] : "", n > 1 ? " (and more)" : "", got, want);
}

static void expect1(const char *filter, const char *want)
{
	char *v[] = {(char *)filter};
	expect(v, 1, want);
}

static void expect_error(const char *filter, size_t offset, const char *what)
{
	snap_filter *f = (snap_filter *)&f; /* a sentinel: untouched on failure */
	strata_error err = {0};
	char *v[] = {(char *)filter};
	int r = snap_filter_parse(v, 1, &f, &err);
	if (r != -EINVAL)
		fail_msg("\"%s\": parse returned %d, wanted -EINVAL", filter, r);
	assert_ptr_equal(f, (snap_filter *)&f);
	assert_int_equal(err.code, EINVAL);
	char at[64];
	snprintf(at, sizeof(at), " at offset %zu", offset);
	if (!strstr(err.message, what) || !strstr(err.message, at) || strncmp(err.message, "filter \"", 8) != 0)
		fail_msg("\"%s\": message \"%s\", wanted \"%s\"%s", filter, err.message, what, at);
}

static void none_matches_everything(void **state)
{
	(void)state;
	expect(NULL, 0, "bwl");
	expect1("", "bwl");
	assert_true(snap_filter_match(NULL, &base));
	assert_null(snap_filter_free(NULL));
}

static void containerd_sends_these(void **state)
{
	(void)state;
	/* gc and the CRI plugin's own filters. */
	expect1("parent==default/1/sha256:abc", "-wl");
	expect1("kind==committed", "b--");
	expect1("kind==active", "-w-");
	expect1("kind==view", "--l");
	expect1("labels.\"containerd.io/gc.root\"", "b--");
	expect1("name~=^default/", "bw-");
	expect1("labels.\"containerd.io/snapshot.ref\"==sha256:abc", "b--");
}

static void operators(void **state)
{
	(void)state;
	expect1("name==default/2/work", "-w-");
	expect1("name!=default/2/work", "b-l");
	expect1("name~=work$", "-w-");
	expect1("name~=^(other|default/1)", "b-l");
	expect1("name@=work", "-w-");
	/* Spaces around the operator and before the value are skipped. */
	expect1("kind == view", "--l");
	expect1("kind ==view", "--l");
}

static void presence(void **state)
{
	(void)state;
	/* name, parent and kind are always there (containerd's adaptor). */
	expect1("name", "bwl");
	expect1("parent", "bwl");
	expect1("kind", "bwl");
	/* A label is there when set, even to "". */
	expect1("labels.empty", "b--");
	expect1("labels.absent", "---");
	expect1("labels", "---");
	/* "labels.a.b" names the label "a.b". */
	expect1("labels.a.b", "b--");
	expect1("labels.a.b==dotted", "b--");
	expect1("labels.\"a.b\"==dotted", "b--");
	expect1("labels.a", "---");
}

static void missing_fields(void **state)
{
	(void)state;
	/* A missing field is "": == and presence fail, != and ~= may hold. */
	expect1("id", "---");
	expect1("id==L1", "---");
	expect1("id!=L1", "bwl");
	expect1("labels.absent==\"\"", "---");
	expect1("labels.absent!=x", "bwl");
	expect1("labels.absent~=^$", "bwl");
	expect1("parent==\"\"", "b--");
	expect1("parent!=\"\"", "-wl");
	expect1("labels.empty==\"\"", "b--");
	/* Only the first part names a plain field. */
	expect1("name.whatever==default/2/work", "-w-");
}

static void and_or(void **state)
{
	(void)state;
	/* Commas: all terms.  Several strings: any of them. */
	expect1("kind==active,name~=work", "-w-");
	expect1("kind==active,name~=view", "---");
	expect1("parent==default/1/sha256:abc,kind!=view,name~=^default/", "-w-");
	char *any[] = {"kind==committed", "name==other/3/view"};
	expect(any, 2, "b-l");
	char *with_empty[] = {"kind==committed", ""};
	expect(with_empty, 2, "bwl");
	char *none[] = {"kind==nothing", "name==nobody"};
	expect(none, 2, "---");
}

static void quoting(void **state)
{
	(void)state;
	expect1("name==\"default/2/work\"", "-w-");
	expect1("\"name\"==default/2/work", "-w-");
	expect1("labels.\"label with space\"==\"v a l\"", "b--");
	expect1("labels.\"label with space\"~=/^v a/", "b--");
	/* Bare values run to the comma and may hold '.', '/', ':', '=', quotes. */
	expect1("labels.\"containerd.io/gc.root\"==2024-01-01T00:00:00Z", "b--");
	expect1("name==a\"b,kind", "---");
	/* Escapes, Go style. */
	expect1("name==\"default\\x2f2/work\"", "-w-");
	expect1("name==\"default\\0572/work\"", "-w-");
	expect1("name==\"default\\u002f2/work\"", "-w-");
	expect1("name==\"default\\U0000002f2/work\"", "-w-");
	expect1("labels.\"\\u00fcn\\u00ef\"==\"c\\u00f8d\\u00e9\"", "b--");
	expect1("labels.\"\\xc3\\xbcn\\xc3\\xaf\"", "b--");
	expect1("name~=/^default\\/2/", "-w-");
	expect1("name~=|^(other\\|x)|", "--l");
	expect1("labels.\"a.b\"==\"dot\\ted\"", "---");
	/* Quoted parts of a label path join with '.'. */
	expect1("labels.\"a\".\"b\"", "b--");
	expect1("labels.\"a\".b==dotted", "b--");
}

static void syntax_errors(void **state)
{
	(void)state;
	expect_error(" ", 1, "expected a field or a quoted string");
	expect_error("name==foo,", 10, "expected a field or a quoted string");
	expect_error(",name", 0, "expected a field or a quoted string");
	expect_error("name==", 6, "expected a value or a quoted string");
	expect_error("name==,kind", 6, "expected a value or a quoted string");
	expect_error("name=foo", 4, "unsupported operator \"=\"");
	expect_error("name===foo", 4, "unsupported operator \"===\"");
	expect_error("name>foo", 4, "expected an operator");
	expect_error("name foo", 5, "expected an operator");
	expect_error("name==foo bar", 9, "unexpected input \" \"");
	expect_error("name==\"foo\"bar", 11, "unexpected input \"b\"");
	expect_error("labels.", 7, "expected a field or a quoted string");
	expect_error("labels..a", 7, "expected a field or a quoted string");
	expect_error("#", 0, "expected a field or a quoted string");
	expect_error("name==\"open", 11, "unterminated quoted string");
	expect_error("name==\"line\nbreak\"", 11, "unterminated quoted string");
	expect_error("parent==/x", 10, "unterminated quoted string");
	/* A bare value cannot start with a quote character. */
	expect_error("name==/default/1", 15, "unexpected input \"1\"");
	expect_error("name==|a|b", 9, "unexpected input \"b\"");
	expect_error("name==\"a\\qb\"", 8, "bad escape sequence");
	expect_error("name==\"a\\'b\"", 8, "bad escape sequence");
	expect_error("name==/a\\.b/", 8, "bad escape sequence");
	expect_error("name==\"\\x4\"", 7, "bad escape sequence");
	expect_error("name==\"\\400\"", 7, "escape sequence out of range");
	expect_error("name==\"\\U00110000\"", 7, "escape sequence out of range");
	expect_error("name==\"\\x00\"", 7, "NUL in quoted string");
	expect_error("name~=(", 6, "bad regular expression \"(\"");
	expect_error("name~=\"a{2,1}\"", 6, "bad regular expression");
}

static void errors_in_any_string(void **state)
{
	(void)state;
	char *v[] = {"kind==view", "kind=="};
	snap_filter *f = NULL;
	strata_error err;
	assert_int_equal(snap_filter_parse(v, 2, &f, &err), -EINVAL);
	assert_null(f);
	assert_string_equal(err.message, "filter \"kind==\": expected a value or a quoted string at offset 6");
	/* err may be NULL. */
	assert_int_equal(snap_filter_parse(v, 2, &f, NULL), -EINVAL);

	/* The filter is quoted safely in the message. */
	char *odd[] = {"name==\"\x01\\q\""};
	assert_int_equal(snap_filter_parse(odd, 1, &f, &err), -EINVAL);
	assert_string_equal(err.message,
			    "filter \"name==\\x22\\x01\\x5cq\\x22\": bad escape sequence in quoted string at offset 8");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(none_matches_everything),
		cmocka_unit_test(containerd_sends_these),
		cmocka_unit_test(operators),
		cmocka_unit_test(presence),
		cmocka_unit_test(missing_fields),
		cmocka_unit_test(and_or),
		cmocka_unit_test(quoting),
		cmocka_unit_test(syntax_errors),
		cmocka_unit_test(errors_in_any_string),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
