/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The aufs engine without aufs: mount data building (parsed back and
 * checked against the seed's budget), /proc/filesystems parsing, the
 * availability checks, the dirperm1 probe and a mount that must fail
 * cleanly on a kernel that has no aufs.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <linux/magic.h>

#include "union/aufs.h"
#include "util/fs.h"
#include "util/macro.h"

#define SEED_OFFSET	    54 /* the seed's `offset` */
#define SEED_DIRPERM1_EXTRA 9  /* the seed's len(",dirperm1") */
#define FIXED_TAIL	    ",dio,xino=/dev/shm/aufs.xino"
#define SHORT_LABEL	    "system_u:object_r:container_file_t:s0:c1,c2"
#define EXT4_MAGIC	    0xEF53UL
#define AUFS_MAGIC	    0x61756673UL

/* ---- helpers ---- */

static char *xstrdup(const char *s)
{
	char *d = strdup(s);
	assert_non_null(d);
	return d;
}

static char *xprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *xprintf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	char *s = NULL;
	int n = vasprintf(&s, fmt, ap);
	va_end(ap);
	assert_true(n >= 0);
	return s;
}

/* A label of exactly `len` bytes ('a'..'z', so valid). */
static char *make_label(size_t len)
{
	char *s = malloc(len + 1);
	assert_non_null(s);
	for (size_t i = 0; i < len; i++)
		s[i] = (char)('a' + i % 26);
	s[len] = '\0';
	return s;
}

/* A path of exactly `len` bytes (len >= 12) that names branch i uniquely. */
static char *make_path(size_t i, size_t len)
{
	char *s = malloc(len + 1);
	assert_non_null(s);
	int n = snprintf(s, len + 1, "/d/%06zu/", i);
	assert_true(n > 0 && (size_t)n <= len);
	for (size_t k = (size_t)n; k < len; k++)
		s[k] = (char)('a' + k % 26);
	s[len] = '\0';
	return s;
}

enum path_kind { PATHS_SHORT, PATHS_200, PATHS_4000, PATHS_MIXED, N_PATH_KINDS };

static size_t path_len(enum path_kind kind, size_t i)
{
	switch (kind) {
	case PATHS_SHORT:
		return 14;
	case PATHS_200:
		return 200;
	case PATHS_4000:
		return 4000;
	default:
		return 12 + (i * 7919) % 290; /* 12..301, in no order */
	}
}

static char **make_paths(enum path_kind kind, size_t n)
{
	char **v = calloc(n + 1, sizeof(char *));
	assert_non_null(v);
	for (size_t i = 0; i < n; i++)
		v[i] = make_path(i, path_len(kind, i));
	return v;
}

static void free_paths(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static size_t label_len(const char *label)
{
	return label ? strlen(label) : 0;
}

static bool has_label(const char *label)
{
	return label && *label;
}

/* The seed's room for the first mount's "br:..." part (may be negative). */
static long long seed_budget(const char *label, bool dirperm1, size_t page)
{
	return (long long)page - (long long)label_len(label) - SEED_OFFSET - (dirperm1 ? SEED_DIRPERM1_EXTRA : 0);
}

/* What the build should return, from the rules alone: the seed's greedy
 * first mount, then every branch left over must fit a remount alone. */
static int expected_result(const char *rw, char *const *ro, size_t n, const char *label, bool dirperm1, size_t page)
{
	long long budget = seed_budget(label, dirperm1, page);
	long long used = 3 + (long long)strlen(rw) + 3;
	if (used > budget)
		return -E2BIG;
	size_t i = 0;
	while (i < n && used + 1 + (long long)strlen(ro[i]) + 6 <= budget)
		used += 1 + (long long)strlen(ro[i++]) + 6;
	size_t suffix = has_label(label) ? 10 + strlen(label) + 1 : 0;
	for (; i < n; i++)
		if (7 + strlen(ro[i]) + 6 + suffix + 1 > page)
			return -E2BIG;
	return 0;
}

/* How many remounts the seed's loop would make for the same input (its
 * remounts keep the first mount's budget and a trailing ','). */
static size_t seed_remounts(char *const *ro, size_t n, size_t n_first, const char *label, bool dirperm1, size_t page)
{
	long long budget = seed_budget(label, dirperm1, page);
	size_t count = 0;
	for (size_t i = n_first; i < n;) {
		long long bp = 0;
		size_t before = i;
		while (i < n && bp + 7 + (long long)strlen(ro[i]) + 7 <= budget)
			bp += 7 + (long long)strlen(ro[i++]) + 7;
		if (i == before)
			return (size_t)-1; /* the seed would loop forever */
		count++;
	}
	return count;
}

/*
 * Parses m back and checks it against everything the rules say: the
 * first string's shape and budget, each remount's shape and size, the
 * branches in order, and that the packing is greedy (the next branch
 * did not fit where the string ended).
 */
static void check_data(const char *rw, char *const *ro, size_t n, const char *label, bool dirperm1, size_t page,
		       const aufs_mount_data *m)
{
	char *lab = has_label(label) ? xprintf(",context=\"%s\"", label) : xstrdup("");
	char *tail = xprintf("%s%s%s", FIXED_TAIL, dirperm1 ? ",dirperm1" : "", lab);
	char *head = xprintf("br:%s=rw", rw);
	size_t lab_len = strlen(lab), tail_len = strlen(tail), head_len = strlen(head);

	/* first: "br:<rw>=rw" (":<ro>=ro+wh")* <tail> */
	assert_non_null(m->first);
	size_t flen = strlen(m->first);
	assert_true(flen + 1 <= page);
	assert_true(flen >= head_len + tail_len);
	assert_memory_equal(m->first, head, head_len);
	assert_string_equal(m->first + flen - tail_len, tail);
	size_t blen = flen - tail_len; /* the branch part, as the seed's b[:bp] */
	long long budget = seed_budget(label, dirperm1, page);
	assert_true((long long)blen <= budget);

	size_t got = 0, pos = head_len;
	while (pos < blen) {
		assert_int_equal(m->first[pos], ':');
		const char *dir = m->first + pos + 1;
		const char *eq = memchr(dir, '=', blen - pos - 1);
		assert_non_null(eq);
		assert_true(got < n);
		assert_int_equal((size_t)(eq - dir), strlen(ro[got]));
		assert_true(memcmp(dir, ro[got], strlen(ro[got])) == 0);
		assert_true((size_t)(eq - m->first) + 6 <= blen);
		assert_memory_equal(eq, "=ro+wh", 6);
		pos = (size_t)(eq - m->first) + 6;
		got++;
	}
	assert_int_equal(pos, blen);
	assert_int_equal(got, m->n_first);
	/* As many as the seed's budget holds: the next one would not fit. */
	if (got < n)
		assert_true((long long)(blen + 1 + strlen(ro[got]) + 6) > budget);

	/* appends: "append:<ro>=ro+wh" (",append:<ro>=ro+wh")* <label> */
	assert_non_null(m->appends);
	assert_null(m->appends[m->n_appends]);
	for (size_t a = 0; a < m->n_appends; a++) {
		const char *s = m->appends[a];
		assert_non_null(s);
		size_t alen = strlen(s);
		assert_true(alen + 1 <= page);
		assert_true(alen > lab_len);
		assert_string_equal(s + alen - lab_len, lab);
		size_t body = alen - lab_len;
		size_t p = 0;
		for (;;) {
			assert_true(p + 7 <= body);
			assert_memory_equal(s + p, "append:", 7);
			const char *dir = s + p + 7;
			const char *eq = memchr(dir, '=', body - p - 7);
			assert_non_null(eq);
			assert_true(got < n);
			assert_int_equal((size_t)(eq - dir), strlen(ro[got]));
			assert_true(memcmp(dir, ro[got], strlen(ro[got])) == 0);
			assert_true((size_t)(eq - s) + 6 <= body);
			assert_memory_equal(eq, "=ro+wh", 6);
			p = (size_t)(eq - s) + 6;
			got++;
			if (p == body)
				break;
			assert_int_equal(s[p], ',');
			p++;
		}
		/* Greedy: the first branch of the next remount did not fit here. */
		if (a + 1 < m->n_appends)
			assert_true(alen + 1 + 7 + strlen(ro[got]) + 6 + 1 > page);
	}
	assert_int_equal(got, n);
	/* Never more remounts than the seed would make. */
	size_t seed = seed_remounts(ro, n, m->n_first, label, dirperm1, page);
	assert_true(m->n_appends <= seed);

	free(lab);
	free(tail);
	free(head);
}

/* Builds, checks the result against the rules and, on success, the data. */
static int build_and_check(const char *rw, char *const *ro, size_t n, const char *label, bool dirperm1, size_t page)
{
	aufs_mount_data m = {0};
	strata_error err = {0};
	int want = expected_result(rw, ro, n, label, dirperm1, page);
	int r = aufs_build_mount_data(rw, ro, n, label, dirperm1, page, &m, &err);
	if (r != want)
		fail_msg("n=%zu page=%zu label=%zu dirperm1=%d: got %d, want %d (%s)", n, page, label_len(label),
			 dirperm1, r, want, err.message);
	if (r == 0) {
		assert_int_equal(err.code, 0);
		check_data(rw, ro, n, label, dirperm1, page, &m);
		aufs_mount_data_release(&m);
	} else {
		assert_int_equal(err.code, -r);
		assert_non_null(strstr(err.message, "aufs"));
		assert_null(m.first); /* untouched */
		assert_null(m.appends);
	}
	return r;
}

/* ---- exact strings ---- */

static void no_branches(void **state)
{
	(void)state;
	aufs_mount_data m = {0};
	assert_int_equal(aufs_build_mount_data("/s/diff/top", NULL, 0, NULL, false, 4096, &m, NULL), 0);
	assert_string_equal(m.first, "br:/s/diff/top=rw,dio,xino=/dev/shm/aufs.xino");
	assert_int_equal(m.n_first, 0);
	assert_int_equal(m.n_appends, 0);
	assert_non_null(m.appends);
	assert_null(m.appends[0]);
	aufs_mount_data_release(&m);

	/* An empty label is no label. */
	assert_int_equal(aufs_build_mount_data("/s/diff/top", NULL, 0, "", true, 4096, &m, NULL), 0);
	assert_string_equal(m.first, "br:/s/diff/top=rw,dio,xino=/dev/shm/aufs.xino,dirperm1");
	aufs_mount_data_release(&m);
}

static void two_branches_exact(void **state)
{
	(void)state;
	char *ro[] = {"/s/diff/mid", "/s/diff/base", NULL};
	aufs_mount_data m = {0};
	assert_int_equal(aufs_build_mount_data("/s/diff/top", ro, 2, NULL, false, 4096, &m, NULL), 0);
	assert_string_equal(m.first,
			    "br:/s/diff/top=rw:/s/diff/mid=ro+wh:/s/diff/base=ro+wh,dio,xino=/dev/shm/aufs.xino");
	assert_int_equal(m.n_first, 2);
	assert_int_equal(m.n_appends, 0);
	aufs_mount_data_release(&m);

	assert_int_equal(aufs_build_mount_data("/s/diff/top", ro, 2, SHORT_LABEL, true, 4096, &m, NULL), 0);
	assert_string_equal(m.first, "br:/s/diff/top=rw:/s/diff/mid=ro+wh:/s/diff/base=ro+wh,dio,xino=/dev/shm/"
				     "aufs.xino,dirperm1,context=\"" SHORT_LABEL "\"");
	assert_int_equal(m.n_first, 2);
	aufs_mount_data_release(&m);

	/* Only one branch: the other comes in a remount. */
	assert_int_equal(aufs_build_mount_data("/s/diff/top", ro, 1, NULL, false, 4096, &m, NULL), 0);
	assert_string_equal(m.first, "br:/s/diff/top=rw:/s/diff/mid=ro+wh,dio,xino=/dev/shm/aufs.xino");
	aufs_mount_data_release(&m);
}

/* Small pages worked out by hand: "br:/rw=rw" is 9 bytes, ":/aN=ro+wh" 10,
 * "append:/aN=ro+wh" 16. */
static void tiny_page_exact(void **state)
{
	(void)state;
	char *ro[] = {"/a1", "/a2", "/a3", "/a4", "/a5", NULL};
	aufs_mount_data m = {0};

	/* Page 80: budget 26 holds rw and one branch; the other four
	 * (4*16 + 3 commas = 67 bytes, 68 with the NUL) share one remount. */
	assert_int_equal(aufs_build_mount_data("/rw", ro, 5, NULL, false, 80, &m, NULL), 0);
	assert_string_equal(m.first, "br:/rw=rw:/a1=ro+wh" FIXED_TAIL);
	assert_int_equal(m.n_first, 1);
	assert_int_equal(m.n_appends, 1);
	assert_string_equal(m.appends[0], "append:/a2=ro+wh,append:/a3=ro+wh,append:/a4=ro+wh,append:/a5=ro+wh");
	assert_null(m.appends[1]);
	aufs_mount_data_release(&m);

	/* Page 64: budget 10 holds rw only; three branches per remount. */
	assert_int_equal(aufs_build_mount_data("/rw", ro, 5, NULL, false, 64, &m, NULL), 0);
	assert_string_equal(m.first, "br:/rw=rw" FIXED_TAIL);
	assert_int_equal(m.n_first, 0);
	assert_int_equal(m.n_appends, 2);
	assert_string_equal(m.appends[0], "append:/a1=ro+wh,append:/a2=ro+wh,append:/a3=ro+wh");
	assert_string_equal(m.appends[1], "append:/a4=ro+wh,append:/a5=ro+wh");
	assert_null(m.appends[2]);
	aufs_mount_data_release(&m);

	/* With label "L": budget 9 holds rw exactly; 50 + 12 + 1 = 63. */
	assert_int_equal(aufs_build_mount_data("/rw", ro, 5, "L", false, 64, &m, NULL), 0);
	assert_string_equal(m.first, "br:/rw=rw" FIXED_TAIL ",context=\"L\"");
	assert_int_equal(m.n_appends, 2);
	assert_string_equal(m.appends[0], "append:/a1=ro+wh,append:/a2=ro+wh,append:/a3=ro+wh,context=\"L\"");
	assert_string_equal(m.appends[1], "append:/a4=ro+wh,append:/a5=ro+wh,context=\"L\"");
	aufs_mount_data_release(&m);

	/* Page 62: the first mount cannot hold even "br:/rw=rw". */
	strata_error err = {0};
	assert_int_equal(aufs_build_mount_data("/rw", ro, 5, NULL, false, 62, &m, &err), -E2BIG);
	assert_null(m.first);
}

/* ---- boundaries ---- */

static void rw_boundary(void **state)
{
	(void)state;
	const char *rw = "/s/diff/top"; /* "br:/s/diff/top=rw": 17 */
	size_t rwlen = 17;
	char *ro[] = {"/x", NULL};
	strata_error err = {0};
	aufs_mount_data m = {0};

	for (int d = 0; d <= 1; d++) {
		const char *labels[] = {NULL, "L", SHORT_LABEL};
		for (size_t k = 0; k < 3; k++) {
			size_t page = rwlen + SEED_OFFSET + (d ? SEED_DIRPERM1_EXTRA : 0) + label_len(labels[k]);
			assert_int_equal(aufs_build_mount_data(rw, NULL, 0, labels[k], d, page, &m, &err), 0);
			check_data(rw, NULL, 0, labels[k], d, page, &m);
			assert_true(strlen(m.first) + 1 <= page);
			aufs_mount_data_release(&m);

			assert_int_equal(aufs_build_mount_data(rw, NULL, 0, labels[k], d, page - 1, &m, &err), -E2BIG);
			assert_null(m.first);
			assert_non_null(strstr(err.message, "aufs rw branch \"/s/diff/top\" takes 17 bytes"));
			char *room = xprintf("room for 16 (page %zu", page - 1);
			assert_non_null(strstr(err.message, room));
			free(room);

			/* With a branch: at the boundary the first mount has
			 * no room left for it, so it goes to a remount; one
			 * byte less fails on rw whatever the branches. */
			build_and_check(rw, ro, 1, labels[k], d, page);
			build_and_check(rw, ro, 1, labels[k], d, page - 1);
		}
	}
}

static void first_branch_boundary(void **state)
{
	(void)state;
	char *ro[] = {"/s/diff/mid", "/s/diff/base", NULL}; /* ":/s/diff/mid=ro+wh": 18 */
	aufs_mount_data m = {0};
	size_t page = 17 + 18 + SEED_OFFSET;
	assert_int_equal(aufs_build_mount_data("/s/diff/top", ro, 2, NULL, false, page, &m, NULL), 0);
	assert_int_equal(m.n_first, 1);
	assert_int_equal(m.n_appends, 1);
	assert_string_equal(m.appends[0], "append:/s/diff/base=ro+wh");
	check_data("/s/diff/top", ro, 2, NULL, false, page, &m);
	aufs_mount_data_release(&m);

	assert_int_equal(aufs_build_mount_data("/s/diff/top", ro, 2, NULL, false, page - 1, &m, NULL), 0);
	assert_int_equal(m.n_first, 0);
	assert_int_equal(m.n_appends, 1);
	assert_string_equal(m.appends[0], "append:/s/diff/mid=ro+wh,append:/s/diff/base=ro+wh");
	check_data("/s/diff/top", ro, 2, NULL, false, page - 1, &m);
	aufs_mount_data_release(&m);
}

static void remount_boundary(void **state)
{
	(void)state;
	char *big = make_path(0, 150);
	char *ro[] = {big, NULL};
	const char *labels[] = {NULL, "L", SHORT_LABEL};
	strata_error err = {0};
	aufs_mount_data m = {0};
	for (size_t k = 0; k < 3; k++) {
		size_t suffix = has_label(labels[k]) ? 11 + strlen(labels[k]) : 0;
		/* "append:" + 150 + "=ro+wh" + label + NUL, exactly a page. */
		size_t page = 7 + 150 + 6 + suffix + 1;
		assert_int_equal(aufs_build_mount_data("/rw", ro, 1, labels[k], false, page, &m, &err), 0);
		assert_int_equal(m.n_first, 0);
		assert_int_equal(m.n_appends, 1);
		assert_int_equal(strlen(m.appends[0]) + 1, page);
		check_data("/rw", ro, 1, labels[k], false, page, &m);
		aufs_mount_data_release(&m);

		assert_int_equal(aufs_build_mount_data("/rw", ro, 1, labels[k], false, page - 1, &m, &err), -E2BIG);
		assert_null(m.first);
		assert_non_null(strstr(err.message, "aufs ro branch 0 \"/d/000000/"));
		char *sizes = xprintf("takes %zu bytes in a remount (%zu of them the label), more than one page (%zu)",
				      page, suffix, page - 1);
		assert_non_null(strstr(err.message, sizes));
		free(sizes);
	}
	free(big);
}

/* Options of 53 bytes ("append:" + 40 + "=ro+wh"): two fill a remount
 * exactly, and the first mount holds none without a label. */
static void remount_packing_boundary(void **state)
{
	(void)state;
	char **ro = make_paths(PATHS_SHORT, 4);
	for (size_t i = 0; i < 4; i++) {
		free(ro[i]);
		ro[i] = make_path(i, 40);
	}
	aufs_mount_data m = {0};

	/* 53 + 1 + 53 + NUL = 108. */
	assert_int_equal(aufs_build_mount_data("/rw", ro, 3, NULL, false, 108, &m, NULL), 0);
	assert_int_equal(m.n_first, 0);
	assert_int_equal(m.n_appends, 2);
	assert_int_equal(strlen(m.appends[0]) + 1, 108);
	check_data("/rw", ro, 3, NULL, false, 108, &m);
	aufs_mount_data_release(&m);

	assert_int_equal(aufs_build_mount_data("/rw", ro, 4, NULL, false, 108, &m, NULL), 0);
	assert_int_equal(m.n_appends, 2);
	check_data("/rw", ro, 4, NULL, false, 108, &m);
	aufs_mount_data_release(&m);

	/* One byte less: one option per remount. */
	assert_int_equal(aufs_build_mount_data("/rw", ro, 3, NULL, false, 107, &m, NULL), 0);
	assert_int_equal(m.n_first, 0);
	assert_int_equal(m.n_appends, 3);
	check_data("/rw", ro, 3, NULL, false, 107, &m);
	aufs_mount_data_release(&m);

	/* With "ABCDE" (16 more bytes per call), the first mount's budget
	 * (124 - 5 - 54 = 65) takes rw and one branch (9 + 47); the two
	 * left fill one remount exactly. */
	assert_int_equal(aufs_build_mount_data("/rw", ro, 3, "ABCDE", false, 124, &m, NULL), 0);
	assert_int_equal(m.n_first, 1);
	assert_int_equal(m.n_appends, 1);
	assert_int_equal(strlen(m.appends[0]) + 1, 124);
	check_data("/rw", ro, 3, "ABCDE", false, 124, &m);
	aufs_mount_data_release(&m);

	assert_int_equal(aufs_build_mount_data("/rw", ro, 3, "ABCDE", false, 123, &m, NULL), 0);
	assert_int_equal(m.n_first, 1);
	assert_int_equal(m.n_appends, 2);
	check_data("/rw", ro, 3, "ABCDE", false, 123, &m);
	aufs_mount_data_release(&m);
	free_paths(ro);
}

/* ---- the matrix ---- */

static const size_t counts[] = {0, 1, 2, 10, 100, 500, 1000};

static void matrix(size_t page)
{
	char **paths[N_PATH_KINDS];
	for (int k = 0; k < N_PATH_KINDS; k++)
		paths[k] = make_paths((enum path_kind)k, 1000);
	char *near = make_label(page - 100);			 /* leaves the first mount ~40 bytes */
	char *near_rw = make_label(page - SEED_OFFSET - 17 - 9); /* rw, dirperm1: exactly full */
	char *long_rw = make_path(999999, 300);
	/* The label decides both budgets; a long rw branch only the first
	 * mount's, so it runs with fewer labels ("" is NULL: see no_branches
	 * and matrix_spot_checks). */
	const struct {
		const char *rw, *label;
	} cases[] = {
		{"/s/diff/top", NULL}, {"/s/diff/top", SHORT_LABEL}, {"/s/diff/top", near}, {"/s/diff/top", near_rw},
		{long_rw, NULL},       {long_rw, SHORT_LABEL},
	};

	size_t ok = 0, big = 0;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		for (int d = 0; d <= 1; d++)
			for (int k = 0; k < N_PATH_KINDS; k++)
				for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
					int res = build_and_check(cases[i].rw, paths[k], counts[c], cases[i].label, d,
								  page);
					if (res == 0)
						ok++;
					else
						big++;
				}
	/* Both outcomes are exercised on every page size. */
	assert_true(ok > 0);
	assert_true(big > 0);

	for (int k = 0; k < N_PATH_KINDS; k++)
		free_paths(paths[k]);
	free(near);
	free(near_rw);
	free(long_rw);
}

static void matrix_page_256(void **state)
{
	(void)state;
	matrix(256);
}

static void matrix_page_4096(void **state)
{
	(void)state;
	matrix(4096);
}

static void matrix_page_65536(void **state)
{
	(void)state;
	matrix(65536);
}

/* Specific outcomes the matrix only checks by rule. */
static void matrix_spot_checks(void **state)
{
	(void)state;
	char **shorts = make_paths(PATHS_SHORT, 1000);
	char **p4000 = make_paths(PATHS_4000, 1000);
	aufs_mount_data m = {0};
	strata_error err = {0};

	/* 1000 short branches on a 4096 page: the first mount holds
	 * (4096 - 54 - 17) / 21 = 191 of them, remounts 4095 / 28 = 146. */
	assert_int_equal(aufs_build_mount_data("/s/diff/top", shorts, 1000, NULL, false, 4096, &m, &err), 0);
	assert_int_equal(m.n_first, 191);
	assert_int_equal(m.n_appends, (1000 - 191 + 145) / 146);
	check_data("/s/diff/top", shorts, 1000, NULL, false, 4096, &m);
	aufs_mount_data_release(&m);

	/* An empty label is no label, in the remounts too. */
	assert_int_equal(aufs_build_mount_data("/s/diff/top", shorts, 1000, "", false, 256, &m, &err), 0);
	assert_null(strstr(m.first, "context"));
	for (size_t i = 0; i < m.n_appends; i++)
		assert_null(strstr(m.appends[i], "context"));
	check_data("/s/diff/top", shorts, 1000, "", false, 256, &m);
	aufs_mount_data_release(&m);

	/* A tiny page: many remounts, every one within it. */
	assert_int_equal(aufs_build_mount_data("/s/diff/top", shorts, 1000, NULL, true, 256, &m, &err), 0);
	assert_true(m.n_appends >= 1000 / 9);
	check_data("/s/diff/top", shorts, 1000, NULL, true, 256, &m);
	aufs_mount_data_release(&m);

	/* 4000-byte branches: none in the first mount, one per remount. */
	assert_int_equal(aufs_build_mount_data("/s/diff/top", p4000, 500, SHORT_LABEL, true, 4096, &m, &err), 0);
	assert_int_equal(m.n_first, 0);
	assert_int_equal(m.n_appends, 500);
	check_data("/s/diff/top", p4000, 500, SHORT_LABEL, true, 4096, &m);
	aufs_mount_data_release(&m);

	/* ... and on a 64k page, 16 per remount. */
	assert_int_equal(aufs_build_mount_data("/s/diff/top", p4000, 1000, NULL, false, 65536, &m, &err), 0);
	assert_int_equal(m.n_first, 16);
	assert_int_equal(m.n_appends, (1000 - 16 + 15) / 16);
	aufs_mount_data_release(&m);

	/* A 4000-byte branch does not fit a 256-byte page. */
	assert_int_equal(aufs_build_mount_data("/s/diff/top", p4000, 1, NULL, false, 256, &m, &err), -E2BIG);
	assert_non_null(strstr(err.message, "aufs ro branch 0 \"/d/000000/"));
	assert_non_null(strstr(err.message, "takes 4014 bytes"));
	assert_non_null(strstr(err.message, "more than one page (256)"));

	free_paths(shorts);
	free_paths(p4000);
}

/* ---- rejected input ---- */

static void assert_rejected(const char *rw, char *const *ro, size_t n, const char *label, const char *msg)
{
	strata_error err = {0};
	aufs_mount_data m = {.first = (char *)"sentinel", .n_first = 77};
	/* A tiny page too: syntax is checked before size. */
	for (size_t page = 16; page <= 65536; page *= 16) {
		assert_int_equal(aufs_build_mount_data(rw, ro, n, label, page == 256, page, &m, &err), -EINVAL);
		assert_int_equal(err.code, EINVAL);
		if (!strstr(err.message, msg))
			fail_msg("message \"%s\" lacks \"%s\"", err.message, msg);
		assert_string_equal(m.first, "sentinel");
		assert_int_equal(m.n_first, 77);
	}
}

static void bad_paths(void **state)
{
	(void)state;
	static const char *const bad[] = {"/a,b", "/a:b", "/a=b", "/a\nb", "/a\tb", "/a\x01", "/a\x7f", "\x1b[31m"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_rejected(bad[i], NULL, 0, NULL, "invalid aufs rw branch 0");
		char *ro[] = {"/ok/1", "/ok/2", (char *)bad[i], NULL};
		assert_rejected("/rw", ro, 3, NULL, "invalid aufs ro branch 2");
		assert_rejected("/rw", ro, 3, NULL, "',', ':', '=' or control character");
		char *first[] = {(char *)bad[i], NULL};
		assert_rejected("/rw", first, 1, SHORT_LABEL, "invalid aufs ro branch 0");
	}
	/* Byte by byte: every control character and the three separators
	 * are refused, every other byte is taken. */
	for (int c = 1; c < 256; c++) {
		char path[] = {'/', 'a', (char)c, 'b', '\0'};
		char *ro[] = {path, NULL};
		aufs_mount_data m = {0};
		int r = aufs_build_mount_data("/rw", ro, 1, NULL, false, 4096, &m, NULL);
		bool bad_byte = c < 0x20 || c == 0x7f || c == ',' || c == ':' || c == '=';
		if (r != (bad_byte ? -EINVAL : 0))
			fail_msg("byte 0x%02x: got %d", c, r);
		if (r == 0)
			check_data("/rw", ro, 1, NULL, false, 4096, &m);
		aufs_mount_data_release(&m);
		assert_int_equal(aufs_build_mount_data(path, NULL, 0, NULL, false, 4096, &m, NULL), r);
		aufs_mount_data_release(&m);
	}

	/* Quoted in the message, not raw. */
	assert_rejected("/a\nb", NULL, 0, NULL, "\"/a\\x0ab\"");

	assert_rejected("", NULL, 0, NULL, "invalid aufs rw branch 0: empty path");
	assert_rejected(NULL, NULL, 0, NULL, "empty path");
	char *empty[] = {"/ok", "", NULL};
	assert_rejected("/rw", empty, 2, NULL, "invalid aufs ro branch 1: empty path");
	char *short_list[] = {"/ok", NULL};
	assert_rejected("/rw", short_list, 2, NULL, "invalid aufs ro branch 1: empty path");
	assert_rejected("/rw", NULL, 3, NULL, "3 read-only branches but no list");
}

static void bad_labels(void **state)
{
	(void)state;
	static const char *const bad[] = {"a\"b", "a\\b", "a\nb", "\t", "x\x7f", "\x01"};
	char *ro[] = {"/ro", NULL};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_rejected("/rw", NULL, 0, bad[i], "invalid mount label");
		assert_rejected("/rw", ro, 1, bad[i], "invalid mount label");
	}
}

/* What aufs does not split on is taken as it is. */
static void unusual_but_valid(void **state)
{
	(void)state;
	char *ro[] = {"/with space", "/plus+sign", "/caf\xc3\xa9", "/semi;colon", "/quote\"d", NULL};
	aufs_mount_data m = {0};
	assert_int_equal(aufs_build_mount_data("/r w", ro, 5, "s0:c1,c2 x", true, 4096, &m, NULL), 0);
	check_data("/r w", ro, 5, "s0:c1,c2 x", true, 4096, &m);
	aufs_mount_data_release(&m);
}

static void too_big(void **state)
{
	(void)state;
	strata_error err = {0};
	aufs_mount_data m = {0};
	char *label = make_label(5000);
	char *rw = make_path(1, 5000);

	assert_int_equal(aufs_build_mount_data("/rw", NULL, 0, NULL, false, 0, &m, &err), -E2BIG);
	assert_int_equal(aufs_build_mount_data("/rw", NULL, 0, NULL, false, 1, &m, &err), -E2BIG);
	/* A label longer than the page: no underflow into a huge budget. */
	assert_int_equal(aufs_build_mount_data("/rw", NULL, 0, label, false, 4096, &m, &err), -E2BIG);
	assert_non_null(strstr(err.message, "the first mount has room for 0"));
	assert_int_equal(aufs_build_mount_data(rw, NULL, 0, NULL, false, 4096, &m, &err), -E2BIG);
	assert_non_null(strstr(err.message, "aufs rw branch \"/d/000001/"));
	assert_non_null(strstr(err.message, "takes 5006 bytes, the first mount has room for 4042 (page 4096 less 0 "
					    "for the label and 54 for the fixed options)"));
	assert_int_equal(aufs_build_mount_data(rw, NULL, 0, NULL, false, 65536, &m, &err), 0);
	aufs_mount_data_release(&m);

	/* The bad branch is named among good ones. */
	char **ro = make_paths(PATHS_SHORT, 20);
	free(ro[13]);
	ro[13] = make_path(13, 300);
	assert_int_equal(aufs_build_mount_data("/rw", ro, 20, NULL, false, 256, &m, &err), -E2BIG);
	assert_non_null(strstr(err.message, "aufs ro branch 13 \"/d/000013/"));
	assert_null(m.first);
	free_paths(ro);
	free(label);
	free(rw);
}

static void release_is_safe(void **state)
{
	(void)state;
	aufs_mount_data_release(NULL);
	aufs_mount_data m = {0};
	aufs_mount_data_release(&m);
	char *ro[] = {"/a", NULL};
	assert_int_equal(aufs_build_mount_data("/rw", ro, 1, NULL, false, 4096, &m, NULL), 0);
	aufs_mount_data_release(&m);
	assert_null(m.first);
	assert_null(m.appends);
	assert_int_equal(m.n_appends, 0);
	assert_int_equal(m.n_first, 0);
	aufs_mount_data_release(&m);
}

/* ---- /proc/filesystems ---- */

static char tmpdir[64];

static int setup_tmp(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/var/tmp/strata-unit-aufs.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown_tmp(void **state)
{
	(void)state;
	return fs_rm_tree_at(AT_FDCWD, tmpdir, NULL) < 0 ? -1 : 0;
}

static int listed(const char *content, size_t len)
{
	char *path = xprintf("%s/filesystems", tmpdir);
	FILE *f = fopen(path, "we");
	assert_non_null(f);
	assert_int_equal(fwrite(content, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	int r = aufs_listed(path);
	unlink(path);
	free(path);
	return r;
}

#define LISTED(s) listed((s), sizeof(s) - 1)

static void listed_variants(void **state)
{
	(void)state;
	assert_int_equal(LISTED("nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\taufs\nnodev\toverlay\n"), 1);
	assert_int_equal(LISTED("nodev\taufs\n"), 1);
	assert_int_equal(LISTED("\taufs\n"), 1);
	assert_int_equal(LISTED("nodev\tsysfs\n\taufs"), 1); /* no final newline */
	assert_int_equal(LISTED("nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n"), 0);
	assert_int_equal(LISTED("nodev\taufs2\n"), 0);
	assert_int_equal(LISTED("nodev\tnotaufs\n"), 0);
	assert_int_equal(LISTED("\tau\n\tfs\n"), 0);
	assert_int_equal(LISTED("aufs\text4\n"), 0); /* the flags column is not a name */
	assert_int_equal(LISTED("aufs\n"), 0);	     /* no tab, no name */
	assert_int_equal(LISTED(""), 0);
	assert_int_equal(LISTED("\n\n\n"), 0);
	/* A NUL in a line hides nothing after it. */
	assert_int_equal(LISTED("\tx\0\taufs\n"), 0);
	assert_int_equal(LISTED("\tx\0\n\taufs\n"), 1);

	/* Lines longer than any buffer. */
	size_t n = 100000;
	char *huge = malloc(n + 16);
	assert_non_null(huge);
	memset(huge, 'z', n);
	memcpy(huge + n, "\n\taufs\n", 7);
	assert_int_equal(listed(huge, n + 7), 1);
	memcpy(huge + n, "\n\taufsz\n", 8);
	assert_int_equal(listed(huge, n + 8), 0);
	free(huge);
}

static void listed_errors(void **state)
{
	(void)state;
	char *missing = xprintf("%s/no-such-file", tmpdir);
	assert_int_equal(aufs_listed(missing), -ENOENT);
	free(missing);
	/* A directory opens but does not read. */
	assert_int_equal(aufs_listed(tmpdir), -EISDIR);
	/* The real one reads, whatever it lists. */
	assert_true(aufs_listed("/proc/filesystems") >= 0);
}

/* ---- aufs_supported ---- */

static void supported_refuses_backing(void **state)
{
	(void)state;
	static const struct {
		unsigned long magic;
		const char *name;
	} refused[] = {{AUFS_MAGIC, "aufs"}, {BTRFS_SUPER_MAGIC, "btrfs"}, {ECRYPTFS_SUPER_MAGIC, "ecryptfs"}};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		strata_error err = {0};
		assert_int_equal(aufs_supported(refused[i].magic, refused[i].name, &err), -EOPNOTSUPP);
		char *want = xprintf("aufs cannot sit on %s", refused[i].name);
		assert_string_equal(err.message, want);
		free(want);
		/* Without a name, the magic's own. */
		assert_int_equal(aufs_supported(refused[i].magic, NULL, &err), -EOPNOTSUPP);
		want = xprintf("aufs cannot sit on %s", refused[i].name);
		assert_string_equal(err.message, want);
		free(want);
		assert_int_equal(aufs_supported(refused[i].magic, "", NULL), -EOPNOTSUPP);
	}
}

static void supported_here(void **state)
{
	(void)state;
	strata_error err = {0};
	int r = aufs_supported(EXT4_MAGIC, "extfs", &err);
	if (r == 0) {
		/* A kernel with aufs, outside a user namespace. */
		assert_int_equal(aufs_listed("/proc/filesystems"), 1);
		return;
	}
	assert_true(r < 0);
	assert_int_equal(err.code, -r);
	assert_non_null(strstr(err.message, "aufs"));
	if (r == -ENODEV)
		assert_string_equal(err.message, "aufs is not in /proc/filesystems and modprobe aufs did not "
						 "load it (this kernel has no aufs: use engine=overlay)");
	/* NULL err is fine. */
	assert_int_equal(aufs_supported(EXT4_MAGIC, "extfs", NULL), r);
}

/* In a new user namespace: -EPERM, before availability, after the
 * backing filesystem. */
static void supported_user_namespace(void **state)
{
	(void)state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (unshare(CLONE_NEWUSER) < 0)
			_exit(77);
		strata_error err = {0};
		if (aufs_supported(EXT4_MAGIC, "extfs", &err) != -EPERM)
			_exit(1);
		if (strcmp(err.message, "aufs cannot be used in a user namespace") != 0)
			_exit(2);
		if (aufs_supported(BTRFS_SUPER_MAGIC, "btrfs", &err) != -EOPNOTSUPP)
			_exit(3);
		_exit(0);
	}
	int status = 0;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77)
		skip();
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* ---- dirperm1 probe and mount ---- */

static size_t entries(const char *dir)
{
	char **names = NULL;
	_cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(fs_list_dir(fd, &names), 0);
	size_t n = strv_length(names);
	strv_free(names);
	return n;
}

static void probe_dirperm1(void **state)
{
	(void)state;
	char *dir = xprintf("%s/probe", tmpdir);
	assert_int_equal(mkdir(dir, 0700), 0);
	bool have = aufs_probe_dirperm1(dir);
	if (aufs_listed("/proc/filesystems") == 0)
		assert_false(have);
	/* Its scratch dirs are gone, mounted or not. */
	assert_int_equal(entries(dir), 0);

	char *missing = xprintf("%s/no-such-dir", tmpdir);
	assert_false(aufs_probe_dirperm1(missing));
	free(missing);

	/* A dir aufs would split: not probed, nothing made. */
	char *colon = xprintf("%s/a:b", tmpdir);
	assert_int_equal(mkdir(colon, 0700), 0);
	assert_false(aufs_probe_dirperm1(colon));
	assert_int_equal(entries(colon), 0);
	free(colon);
	free(dir);
}

static void mount_fails_cleanly(void **state)
{
	(void)state;
	if (aufs_listed("/proc/filesystems") != 0)
		skip(); /* a kernel with aufs: this test is about one without */
	char *target = xprintf("%s/mnt", tmpdir);
	assert_int_equal(mkdir(target, 0755), 0);
	char *rw = xprintf("%s/rw", tmpdir);
	assert_int_equal(mkdir(rw, 0755), 0);
	char **ro = make_paths(PATHS_MIXED, 300);

	aufs_mount_data m = {0};
	assert_int_equal(aufs_build_mount_data(rw, ro, 300, SHORT_LABEL, false, 4096, &m, NULL), 0);
	assert_true(m.n_appends > 0);
	strata_error err = {0};
	int r = aufs_mount(target, &m, &err);
	assert_true(r < 0);
	assert_int_equal(err.code, -r);
	char *want = xprintf("mount aufs at %s: ", target);
	assert_memory_equal(err.message, want, strlen(want));
	free(want);
	assert_int_equal(fs_is_mount_point_at(AT_FDCWD, target), 0);
	assert_int_equal(entries(target), 0);
	aufs_mount_data_release(&m);

	/* No data, no target. */
	assert_int_equal(aufs_mount(target, &m, &err), -EINVAL);
	assert_non_null(strstr(err.message, "no mount data"));
	assert_int_equal(aufs_mount(NULL, &m, NULL), -EINVAL);
	assert_int_equal(aufs_mount(target, NULL, NULL), -EINVAL);

	/* A missing target fails the same way. */
	char *missing = xprintf("%s/no-such-dir", tmpdir);
	assert_int_equal(aufs_build_mount_data(rw, NULL, 0, NULL, false, 4096, &m, NULL), 0);
	assert_true(aufs_mount(missing, &m, &err) < 0);
	assert_non_null(strstr(err.message, "mount aufs at"));
	aufs_mount_data_release(&m);

	free(missing);
	free_paths(ro);
	free(rw);
	free(target);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(no_branches),
		cmocka_unit_test(two_branches_exact),
		cmocka_unit_test(tiny_page_exact),
		cmocka_unit_test(rw_boundary),
		cmocka_unit_test(first_branch_boundary),
		cmocka_unit_test(remount_boundary),
		cmocka_unit_test(remount_packing_boundary),
		cmocka_unit_test(matrix_page_256),
		cmocka_unit_test(matrix_page_4096),
		cmocka_unit_test(matrix_page_65536),
		cmocka_unit_test(matrix_spot_checks),
		cmocka_unit_test(bad_paths),
		cmocka_unit_test(bad_labels),
		cmocka_unit_test(unusual_but_valid),
		cmocka_unit_test(too_big),
		cmocka_unit_test(release_is_safe),
		cmocka_unit_test(listed_variants),
		cmocka_unit_test(listed_errors),
		cmocka_unit_test(supported_refuses_backing),
		cmocka_unit_test(supported_here),
		cmocka_unit_test(supported_user_namespace),
		cmocka_unit_test(probe_dirperm1),
		cmocka_unit_test(mount_fails_cleanly),
	};
	return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
