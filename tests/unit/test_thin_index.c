/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The in-memory index of the layers below a published one (thin/index.h):
 * names, whiteouts, opaque dirs in either order, re-adding a deleted name,
 * a non-directory replacing a directory, deep trees (no recursion), layer
 * tars read through libarchive, and a randomized comparison with a naive
 * model that applies each layer's deletions first, then its entries.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "thin/index.h"

/* ---------------------------------------------------------------- helpers */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The names of dir, sorted, joined by spaces ("" for none). */
static char *listing(lower_index *x, const char *dir)
{
	char **names = NULL;
	assert_int_equal(lower_index_list(x, dir, &names), 0);
	size_t n = 0, len = 1;
	while (names[n])
		len += strlen(names[n++]) + 1;
	qsort(names, n, sizeof(char *), cmp_str);
	char *out = calloc(1, len);
	assert_non_null(out);
	for (size_t i = 0; i < n; i++) {
		if (i)
			strcat(out, " ");
		strcat(out, names[i]);
		free(names[i]);
	}
	free(names);
	return out;
}

static void assert_list(lower_index *x, const char *dir, const char *want)
{
	char *got = listing(x, dir);
	if (strcmp(got, want) != 0)
		fail_msg("list(\"%s\"): got \"%s\", want \"%s\"", dir, got, want);
	free(got);
}

/* Adds a layer: each argument is "NAME" (a file) or "NAME/" (a dir). */
static void layer(lower_index *x, ...)
{
	assert_int_equal(lower_index_next_layer(x), 0);
	va_list ap;
	va_start(ap, x);
	for (const char *e; (e = va_arg(ap, const char *));) {
		size_t n = strlen(e);
		const char *why = NULL;
		int r = lower_index_entry(x, e, n > 0 && e[n - 1] == '/', &why);
		if (r != 0)
			fail_msg("entry \"%s\": %d (%s)", e, r, why ? why : "");
	}
	va_end(ap);
}

static lower_index *new_index(void)
{
	lower_index *x = NULL;
	assert_int_equal(lower_index_new(&x), 0);
	return x;
}

/* ---------------------------------------------------------------- cases */

static void empty(void **state)
{
	(void)state;
	lower_index *x = new_index();
	assert_list(x, "", "");
	assert_list(x, "a", "");
	assert_list(x, "a/b", "");
	assert_int_equal(lower_index_size(x), 0);
	lower_index_free(x);
	assert_null(lower_index_free(NULL));
}

static void names_cleaned(void **state)
{
	(void)state;
	lower_index *x = new_index();
	layer(x, "./", "/", "./a/", "./a/b", "c", "/abs/x", "d/e/f", "g//h/", "./i/./j", NULL);
	assert_list(x, "", "a abs c d g i");
	assert_list(x, "a", "b");
	assert_list(x, "abs", "x");
	assert_list(x, "d", "e"); /* an implicit parent is a dir */
	assert_list(x, "d/e", "f");
	assert_list(x, "/d/e", "f");
	assert_list(x, "./d/e/", "f");
	assert_list(x, "g", "h");
	assert_list(x, "i", "j");
	assert_list(x, "c", ""); /* a file */
	assert_list(x, "a/b", "");
	assert_list(x, "nope", "");
	assert_list(x, "nope/deeper", "");
	assert_list(x, "a/../a", ""); /* not resolved: no such dir */
	assert_int_equal(lower_index_size(x), 12);
	lower_index_free(x);
}

static void whiteouts(void **state)
{
	(void)state;
	lower_index *x = new_index();
	layer(x, "a/x", "a/y", "b/z/deep/er", "top", NULL);
	layer(x, "a/.wh.x", ".wh.b", ".wh.nothing", "a/sub/.wh.nothing", NULL);
	assert_list(x, "", "a top");
	assert_list(x, "a", "sub y");
	assert_list(x, "b", "");
	assert_list(x, "b/z", "");
	assert_list(x, "b/z/deep", "");
	/* A whiteout in the layer that has the name removes only what the
	 * layers below had there. */
	layer(x, "top/", "top/new", ".wh.top", NULL);
	assert_list(x, "", "a top");
	assert_list(x, "top", "new");
	lower_index_free(x);
}

static void opaque_marker_first(void **state)
{
	(void)state;
	lower_index *x = new_index();
	layer(x, "d/old", "d/sub/f", "d/keep", "e/f", NULL);
	layer(x, "d/.wh..wh..opq", "d/new", "d/sub/g", NULL);
	assert_list(x, "", "d e");
	assert_list(x, "d", "new sub");
	assert_list(x, "d/sub", "g");
	assert_list(x, "e", "f");
	lower_index_free(x);
}

static void opaque_marker_last(void **state)
{
	(void)state;
	lower_index *x = new_index();
	layer(x, "d/old", "d/sub/f", "d/keep", "e/f", NULL);
	/* The marker after the layer's own entries of d: they stay. */
	layer(x, "d/", "d/new", "d/sub/", "d/sub/g", "d/.wh..wh..opq", NULL);
	assert_list(x, "", "d e");
	assert_list(x, "d", "new sub");
	assert_list(x, "d/sub", "g");
	lower_index_free(x);
}

static void opaque_nested_and_root(void **state)
{
	(void)state;
	lower_index *x = new_index();
	layer(x, "a/b/c/old", "a/b/keep", "a/other", "r", NULL);
	/* A dir of this layer under an opaque one is opaque too: nothing of
	 * the layers below shows through it. */
	layer(x, "a/b/c/", "a/.wh..wh..opq", NULL);
	assert_list(x, "a", "b");
	assert_list(x, "a/b", "c");
	assert_list(x, "a/b/c", "");
	/* An opaque root is ignored, as overlay ignores it. */
	layer(x, ".wh..wh..opq", "s", NULL);
	assert_list(x, "", "a r s");
	/* aufs's bookkeeping names add and delete nothing. */
	layer(x, ".wh..wh.plnk/", ".wh..wh.plnk/123.45", "a/.wh..wh.aufs", NULL);
	assert_list(x, "", "a r s");
	assert_list(x, "a", "b");
	lower_index_free(x);
}

static void readd_deleted(void **state)
{
	(void)state;
	lower_index *x = new_index();
	layer(x, "a/f", "a/g/h", NULL);
	layer(x, ".wh.a", NULL);
	assert_list(x, "", "");
	layer(x, "a/new", NULL);
	assert_list(x, "", "a");
	assert_list(x, "a", "new"); /* f and g stay deleted */
	assert_list(x, "a/g", "");
	/* A file replaces a dir and what was under it; a dir replaces the
	 * file again, empty. */
	layer(x, "a", NULL);
	assert_list(x, "a", "");
	assert_int_equal(lower_index_size(x), 1);
	layer(x, "a/", "a/z", NULL);
	assert_list(x, "a", "z");
	/* A whiteout and the name again in the same layer. */
	layer(x, ".wh.a", "a/w", NULL);
	assert_list(x, "a", "w");
	lower_index_free(x);
}

static void hostile_names(void **state)
{
	(void)state;
	lower_index *x = new_index();
	const char *bad[] = {"..", "../x", "a/../../b", "a/..", "", ".wh.", "a/.wh..", "a/.wh...", "a/.wh.x/y"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *why = NULL;
		int r = lower_index_entry(x, bad[i], false, &why);
		if (r != -EINVAL)
			fail_msg("entry \"%s\": %d, want -EINVAL", bad[i], r);
		assert_non_null(why);
	}
	lower_index_free(x);
}

/* 20000 levels in one entry, then 2000 levels each its own entry, a
 * whiteout and an opaque dir at the top: no walk recurses. */
static void deep(void **state)
{
	(void)state;
	enum { DEPTH = 20000 };
	char *path = malloc(2 * DEPTH + 16);
	assert_non_null(path);
	size_t len = 0;
	for (int i = 0; i < DEPTH; i++) {
		path[len++] = 'd';
		path[len++] = '/';
	}
	memcpy(path + len, "leaf", 5);
	lower_index *x = new_index();
	layer(x, path, NULL);
	assert_int_equal(lower_index_size(x), DEPTH + 1);
	path[len - 1] = '\0'; /* the deepest dir */
	assert_list(x, path, "leaf");
	path[len - 1] = '/';
	layer(x, ".wh.d", NULL);
	assert_int_equal(lower_index_size(x), 0);
	assert_list(x, "", "");

	/* Every level its own entry: as deep as a path can name (PATH_MAX),
	 * the input itself grows with the square of the depth. */
	len = 2 * 2000;
	assert_int_equal(lower_index_next_layer(x), 0);
	for (size_t end = 1; end <= len; end += 2) {
		char c = path[end];
		path[end] = '\0';
		const char *why = NULL;
		assert_int_equal(lower_index_entry(x, path, true, &why), 0);
		path[end] = c;
	}
	assert_int_equal(lower_index_size(x), 2000);
	layer(x, "d/.wh..wh..opq", "d/other", NULL);
	assert_int_equal(lower_index_size(x), 2);
	assert_list(x, "d", "other");
	lower_index_free(x);
	free(path);
}

static void many_names(void **state)
{
	(void)state;
	lower_index *x = new_index();
	assert_int_equal(lower_index_next_layer(x), 0);
	char name[32];
	const char *why = NULL;
	for (int i = 0; i < 50000; i++) {
		snprintf(name, sizeof(name), "dir/f%d", i);
		assert_int_equal(lower_index_entry(x, name, false, &why), 0);
	}
	char **names = NULL;
	assert_int_equal(lower_index_list(x, "dir", &names), 0);
	size_t n = 0;
	while (names[n])
		free(names[n++]);
	free(names);
	assert_int_equal(n, 50000);
	layer(x, "dir/.wh.f123", "dir/.wh.f49999", NULL);
	assert_int_equal(lower_index_size(x), 50000 - 1);
	layer(x, "dir/.wh..wh..opq", NULL);
	assert_int_equal(lower_index_size(x), 1);
	lower_index_free(x);
}

/* A layer tar in a memfd, made with libarchive: "d:NAME" a dir,
 * "f:NAME" a file, "h:NAME>TARGET" a hardlink. */
static int make_tar(const char *const *entries)
{
	int fd = memfd_create("layer", MFD_CLOEXEC);
	assert_true(fd >= 0);
	struct archive *a = archive_write_new();
	assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_fd(a, fd), ARCHIVE_OK);
	for (size_t i = 0; entries[i]; i++) {
		struct archive_entry *e = archive_entry_new();
		char kind = entries[i][0];
		char name[256];
		snprintf(name, sizeof(name), "%s", entries[i] + 2);
		char *target = strchr(name, '>');
		if (target)
			*target++ = '\0';
		archive_entry_set_pathname(e, name);
		archive_entry_set_filetype(e, kind == 'd' ? AE_IFDIR : AE_IFREG);
		archive_entry_set_perm(e, 0644);
		if (kind == 'h')
			archive_entry_set_hardlink(e, target);
		assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
		archive_entry_free(e);
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
	return fd;
}

static void from_tars(void **state)
{
	(void)state;
	lower_index *x = new_index();
	const char *l1[] = {"d:./",
			    "d:./etc/",
			    "f:./etc/passwd",
			    "d:./usr/",
			    "d:./usr/lib/",
			    "f:./usr/lib/a",
			    "h:./usr/lib/b>./usr/lib/a",
			    "d:./opt/",
			    "f:./opt/x",
			    NULL};
	const char *l2[] = {"d:etc/", "f:etc/.wh.passwd", "f:etc/group", "d:opt/", "f:opt/.wh..wh..opq", "f:opt/y",
			    NULL};
	const char *bad[] = {"f:ok", "f:../evil", NULL};
	int fd = make_tar(l1);
	size_t entries = 0;
	strata_error err = {0};
	assert_int_equal(lower_index_add_tar(x, fd, &entries, &err), 0);
	assert_int_equal(entries, 9);
	close(fd);
	fd = make_tar(l2);
	assert_int_equal(lower_index_add_tar(x, fd, &entries, &err), 0);
	assert_int_equal(entries, 6);
	close(fd);
	assert_list(x, "", "etc opt usr");
	assert_list(x, "etc", "group");
	assert_list(x, "usr/lib", "a b");
	assert_list(x, "opt", "y");
	fd = make_tar(bad);
	assert_int_equal(lower_index_add_tar(x, fd, &entries, &err), -EINVAL);
	if (!strstr(err.message, "../evil"))
		fail_msg("message: %s", err.message);
	close(fd);
	lower_index_free(x);
}

/* ---- a naive model: a list of full paths, each layer's deletions
 * applied first (to what the layers below left), then its entries ---- */

typedef struct model {
	size_t n;
	char *path[512];
	bool dir[512];
} model;

static bool under(const char *p, const char *top)
{
	size_t n = strlen(top);
	return !strncmp(p, top, n) && p[n] == '/';
}

static void model_remove(model *m, const char *top, bool with_top)
{
	for (size_t i = 0; i < m->n;) {
		if ((with_top && !strcmp(m->path[i], top)) || under(m->path[i], top)) {
			free(m->path[i]);
			m->path[i] = m->path[m->n - 1];
			m->dir[i] = m->dir[m->n - 1];
			m->n--;
		} else {
			i++;
		}
	}
}

static int model_find(const model *m, const char *p)
{
	for (size_t i = 0; i < m->n; i++)
		if (!strcmp(m->path[i], p))
			return (int)i;
	return -1;
}

static void model_put(model *m, const char *p, bool dir)
{
	int i = model_find(m, p);
	if (i >= 0) {
		if (!dir && m->dir[i])
			model_remove(m, p, false);
		m->dir[model_find(m, p)] = dir;
		return;
	}
	assert_true(m->n < 512);
	m->path[m->n] = strdup(p);
	m->dir[m->n++] = dir;
}

static void model_layer(model *m, char **names, const bool *dirs, size_t n)
{
	for (size_t i = 0; i < n; i++) { /* deletions */
		char *slash = strrchr(names[i], '/');
		const char *base = slash ? slash + 1 : names[i];
		char parent[128] = "";
		if (slash)
			snprintf(parent, sizeof(parent), "%.*s", (int)(slash - names[i]), names[i]);
		if (!strcmp(base, ".wh..wh..opq")) {
			if (*parent)
				model_remove(m, parent, false);
		} else if (!strncmp(base, ".wh.", 4)) {
			char target[160];
			snprintf(target, sizeof(target), "%s%s%s", parent, *parent ? "/" : "", base + 4);
			model_remove(m, target, true);
		}
	}
	for (size_t i = 0; i < n; i++) { /* entries, parents as dirs */
		char p[128];
		snprintf(p, sizeof(p), "%s", names[i]);
		for (char *s = p; (s = strchr(s, '/')); s++) {
			*s = '\0';
			model_put(m, p, true);
			*s = '/';
		}
		const char *base = strrchr(p, '/') ? strrchr(p, '/') + 1 : p;
		if (strncmp(base, ".wh.", 4) != 0)
			model_put(m, p, dirs[i]);
	}
}

static char *model_listing(const model *m, const char *dir)
{
	char *names[512];
	size_t n = 0, len = 1, dl = strlen(dir);
	int d = *dir ? model_find(m, dir) : -2;
	if (d == -1 || (d >= 0 && !m->dir[d]))
		return strdup("");
	for (size_t i = 0; i < m->n; i++) {
		const char *p = m->path[i];
		if (dl && !under(p, dir))
			continue;
		const char *rest = dl ? p + dl + 1 : p;
		if (strchr(rest, '/'))
			continue;
		names[n++] = (char *)rest;
		len += strlen(rest) + 1;
	}
	qsort(names, n, sizeof(char *), cmp_str);
	char *out = calloc(1, len);
	for (size_t i = 0; i < n; i++) {
		if (i)
			strcat(out, " ");
		strcat(out, names[i]);
	}
	return out;
}

static void randomized(void **state)
{
	(void)state;
	static const char *const parts[] = {"a", "b", "c"};
	unsigned seed = 12345;
	for (int round = 0; round < 300; round++) {
		lower_index *x = new_index();
		model m = {0};
		int layers = 1 + (int)(rand_r(&seed) % 6);
		for (int l = 0; l < layers; l++) {
			char *names[24];
			bool dirs[24];
			size_t n = (size_t)(rand_r(&seed) % 12);
			for (size_t i = 0; i < n; i++) {
				char p[128] = "";
				int depth = 1 + (int)(rand_r(&seed) % 3);
				for (int k = 0; k < depth; k++) {
					const char *c = parts[rand_r(&seed) % 3];
					unsigned kind = rand_r(&seed) % 10;
					/* The last component: sometimes a whiteout or an opaque marker. */
					if (k == depth - 1 && kind == 0)
						c = ".wh..wh..opq";
					char comp[24];
					snprintf(comp, sizeof(comp), "%s%s",
						 k == depth - 1 && kind < 3 && kind > 0 ? ".wh." : "", c);
					size_t pl = strlen(p);
					snprintf(p + pl, sizeof(p) - pl, "%s%s", pl ? "/" : "", comp);
				}
				names[i] = strdup(p);
				dirs[i] = rand_r(&seed) % 2;
			}
			assert_int_equal(lower_index_next_layer(x), 0);
			for (size_t i = 0; i < n; i++) {
				const char *why = NULL;
				assert_int_equal(lower_index_entry(x, names[i], dirs[i], &why), 0);
			}
			model_layer(&m, names, dirs, n);
			for (size_t i = 0; i < n; i++)
				free(names[i]);
		}
		/* Every dir the model can name, and some it cannot. */
		const char *dirs_to_check[] = {"",    "a",   "b",   "c",   "a/a",   "a/b",  "a/c",    "b/a",	"b/b",
					       "b/c", "c/a", "c/b", "c/c", "a/a/a", "nope", "a/nope", "a/a/a/a"};
		for (size_t k = 0; k < sizeof(dirs_to_check) / sizeof(dirs_to_check[0]); k++) {
			char *want = model_listing(&m, dirs_to_check[k]);
			char *got = listing(x, dirs_to_check[k]);
			if (strcmp(want, got) != 0)
				fail_msg("round %d, list(\"%s\"): got \"%s\", the model says \"%s\"", round,
					 dirs_to_check[k], got, want);
			free(want);
			free(got);
		}
		assert_int_equal(lower_index_size(x), m.n);
		for (size_t i = 0; i < m.n; i++)
			free(m.path[i]);
		lower_index_free(x);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(empty),
		cmocka_unit_test(names_cleaned),
		cmocka_unit_test(whiteouts),
		cmocka_unit_test(opaque_marker_first),
		cmocka_unit_test(opaque_marker_last),
		cmocka_unit_test(opaque_nested_and_root),
		cmocka_unit_test(readd_deleted),
		cmocka_unit_test(hostile_names),
		cmocka_unit_test(deep),
		cmocka_unit_test(many_names),
		cmocka_unit_test(from_tars),
		cmocka_unit_test(randomized),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
