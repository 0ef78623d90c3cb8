/* SPDX-License-Identifier: Apache-2.0 */
/*
 * thin.json (SPEC section 4): the strict parser, its should-fail table, the
 * formatter's round trip, the image helpers, url/repo/path/digest checks and
 * reading the file from a layer's diff dir.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "thin/repo.h"
#include "thin/thin.h"

/* sha256 of "" and of "a", and a digest whose first two digits are "01". */
#define HEX_A	    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define HEX_B	    "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
#define HEX_C	    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define HEX_C_UPPER "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"
#define HEX_63	    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde"
#define HEX_65	    HEX_C "0"
#define HEX_G	    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg"

#define URL_A "cvmfs://unpacked.cern.ch/registry.hub.docker.com/library/centos:7"

#define LAYER(digest, url) "{\"digest\":\"" digest "\",\"url\":\"" url "\"}"
#define DOC(layers)	   "{\"version\":\"1.0\",\"layers\":[" layers "]}"
#define DOC_A		   DOC(LAYER(HEX_A, URL_A))

/* ---------------------------------------------------------------- helpers */

static bool str_eq_or_null(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static void assert_image_equal(const thin_image *a, const thin_image *b)
{
	assert_string_equal(a->version, b->version);
	if (!str_eq_or_null(a->min_version, b->min_version))
		fail_msg("min_version differs: %s / %s", a->min_version ? a->min_version : "(null)",
			 b->min_version ? b->min_version : "(null)");
	if (!str_eq_or_null(a->origin, b->origin))
		fail_msg("origin differs: %s / %s", a->origin ? a->origin : "(null)", b->origin ? b->origin : "(null)");
	if (!str_eq_or_null(a->comment, b->comment))
		fail_msg("comment differs: %s / %s", a->comment ? a->comment : "(null)",
			 b->comment ? b->comment : "(null)");
	assert_int_equal(a->n, b->n);
	for (size_t i = 0; i < a->n; i++) {
		assert_string_equal(a->layers[i].digest, b->layers[i].digest);
		assert_string_equal(a->layers[i].repo, b->layers[i].repo);
		assert_string_equal(a->layers[i].path, b->layers[i].path);
	}
}

/* `words` is "a|b|c": true if msg holds any of them. */
static bool has_word(const char *msg, const char *words)
{
	if (!words)
		return true;
	char buf[128];
	snprintf(buf, sizeof(buf), "%s", words);
	for (char *w = buf, *bar; w; w = bar) {
		bar = strchr(w, '|');
		if (bar)
			*bar++ = '\0';
		if (strstr(msg, w))
			return true;
	}
	return false;
}

static thin_image parse_ok_len(const char *text, size_t len)
{
	thin_image img = {0};
	strata_error err = {0};
	int r = thin_parse(text, len, &img, &err);
	if (r != 0)
		fail_msg("parse failed (r=%d): %s\n  input: %.*s", r, err.message, (int)(len < 300 ? len : 300), text);
	return img;
}

static thin_image parse_ok(const char *text)
{
	return parse_ok_len(text, strlen(text));
}

/* A sentinel the parser must leave alone when it refuses (never freed). */
static const thin_image sentinel = {
	.version = (char *)"sentinel",
	.origin = (char *)"untouched",
	.n = 3,
	.layers = (thin_layer *)(uintptr_t)0x10,
};

/* Refused with -EINVAL, a message holding one of `words`, ret untouched.
 * Says what is wrong and returns false otherwise, so a table reports every
 * case that fails and not only the first. */
static bool refused_len(const char *name, const char *text, size_t len, const char *words)
{
	thin_image img = sentinel;
	strata_error err = {0};
	int r = thin_parse(text, len, &img, &err);
	if (r != -EINVAL) {
		if (r == 0)
			thin_image_release(&img);
		print_error("%s: expected -EINVAL, got %d\n  input: %.*s\n", name, r, (int)(len < 300 ? len : 300),
			    text);
		return false;
	}
	if (memcmp(&img, &sentinel, sizeof(img)) != 0) {
		print_error("%s: ret touched on failure\n", name);
		return false;
	}
	if (err.message[0] == '\0') {
		print_error("%s: empty error message\n", name);
		return false;
	}
	if (!has_word(err.message, words)) {
		print_error("%s: message \"%s\" does not mention %s\n", name, err.message, words);
		return false;
	}
	return true;
}

static void expect_refused_len(const char *name, const char *text, size_t len, const char *words)
{
	if (!refused_len(name, text, len, words))
		fail_msg("%s: not refused as expected", name);
}

static void expect_refused(const char *name, const char *text, const char *words)
{
	expect_refused_len(name, text, strlen(text), words);
}

/* A document of n layers with distinct digests, built at run time. */
static char *doc_of_layers(size_t n)
{
	size_t cap = 64 + n * 160;
	char *text = malloc(cap);
	assert_non_null(text);
	size_t len = (size_t)snprintf(text, cap, "{\"version\":\"1.0\",\"layers\":[");
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(text + len, cap - len,
					"%s{\"digest\":\"%064zx\",\"url\":\"cvmfs://r.cern.ch/l/%zu\"}", i ? "," : "",
					i + 1, i);
	snprintf(text + len, cap - len, "]}\n");
	return text;
}

static char *repeat(char c, size_t n)
{
	char *s = malloc(n + 1);
	assert_non_null(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* "a/a/a...": a clean path of exactly n bytes (n odd or even). */
static char *long_path(size_t n)
{
	char *s = repeat('a', n);
	for (size_t i = 1; i + 1 < n; i += 2)
		s[i] = '/';
	return s;
}

/* ------------------------------------------------------------- digests */

static void digest_parse(void **state)
{
	(void)state;
	char out[THIN_DIGEST_LEN + 1];

	assert_true(thin_digest_parse(HEX_A, out));
	assert_string_equal(out, HEX_A);
	assert_true(thin_digest_parse("sha256:" HEX_B, out));
	assert_string_equal(out, HEX_B);
	/* Any case in, lowercase out. */
	assert_true(thin_digest_parse(HEX_C_UPPER, out));
	assert_string_equal(out, HEX_C);
	assert_true(thin_digest_parse("sha256:" HEX_C_UPPER, out));
	assert_string_equal(out, HEX_C);
	assert_true(thin_digest_parse("0123456789AbCdEf0123456789aBcDeF0123456789abcdef0123456789ABCDEF", out));
	assert_string_equal(out, HEX_C);

	static const char *const bad[] = {
		"",
		"sha256:",
		HEX_63,
		HEX_65,
		HEX_G,
		"sha256:" HEX_63,
		"sha256:" HEX_65,
		"sha512:" HEX_A,
		"sha256" HEX_A,
		"sha256:sha256:" HEX_A,
		":" HEX_A,
		" " HEX_A,
		HEX_A " ",
		HEX_A "\n",
		"0x" HEX_63,
		"e3b0c44298fc1c149afbf4c8996fb924-7ae41e4649b934ca495991b7852b855",
		"e3b0c44298fc1c149afbf4c8996fb924\xc3\xa9"
		"ae41e4649b934ca495991b7852b85",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (thin_digest_parse(bad[i], out))
			fail_msg("digest #%zu accepted: \"%s\"", i, bad[i]);
}

static void layerfs_path(void **state)
{
	(void)state;
	assert_int_equal(THIN_LAYERFS_PATH_LEN, strlen(".layers/01/" HEX_C "/layerfs"));
	/* Exactly THIN_LAYERFS_PATH_LEN + 1 bytes, with guards on both sides. */
	char buf[THIN_LAYERFS_PATH_LEN + 3];
	memset(buf, 'X', sizeof(buf));
	thin_layerfs_path(HEX_C, buf + 1);
	assert_string_equal(buf + 1, ".layers/01/" HEX_C "/layerfs");
	assert_int_equal(buf[0], 'X');
	assert_int_equal(buf[THIN_LAYERFS_PATH_LEN + 2], 'X');

	thin_layerfs_path(HEX_A, buf + 1);
	assert_string_equal(buf + 1, ".layers/e3/" HEX_A "/layerfs");
	/* The path it builds is one thin_path_valid takes. */
	assert_true(thin_path_valid(buf + 1));
}

/* ------------------------------------------------------- repo, path, url */

static const char *const repos_ok[] = {
	"a", "Z", "0", "sw.cern.ch", "unpacked.cern.ch", "a-b_c.d", "A9-._", "a.", "a..b", "0-0",
};
static const char *const repos_bad[] = {
	"",    ".",   "..", ".a",   "-a",  "_a",   "a/b",	  "/a",	  "a/",	   "a b", "a:b",
	"a@b", "a+b", "a~", "a\tb", "a\n", "\x7f", "caf\xc3\xa9", "a\\b", "a%2fb", "a?b", "a#b",
};
static const char *const paths_ok[] = {
	"a",
	"a/b",
	"registry.hub.docker.com/library/centos:7",
	".a",
	"a/.b",
	"...",
	"a/...",
	"..a",
	"a..",
	"a/b..c/d",
	".layers/01/" HEX_C "/layerfs",
	"with space/x",
	"caf\xc3\xa9/x",
	"back\\slash",
	"a:b@c?d#e%f",
};
static const char *const paths_bad[] = {
	"",	"/",	"/a",	 "a/",	  "/a/",   "a//b",     "//",	    ".",      "..",
	"./a",	"a/.",	"a/./b", "../a",  "a/..",  "a/../b",   "../../etc", "a/b/..", "a\nb",
	"a\tb", "a\rb", "\x01",	 "a\x1f", "a\x7f", "\x1b[31m", "a/\x01/b",
};

static void repo_valid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(repos_ok) / sizeof(repos_ok[0]); i++)
		if (!thin_repo_valid(repos_ok[i]))
			fail_msg("repo refused: \"%s\"", repos_ok[i]);
	for (size_t i = 0; i < sizeof(repos_bad) / sizeof(repos_bad[0]); i++)
		if (thin_repo_valid(repos_bad[i]))
			fail_msg("repo #%zu accepted: \"%s\"", i, repos_bad[i]);

	char *s = repeat('r', THIN_REPO_MAX);
	assert_true(thin_repo_valid(s));
	free(s);
	s = repeat('r', THIN_REPO_MAX + 1);
	assert_false(thin_repo_valid(s));
	free(s);
}

static void path_valid(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(paths_ok) / sizeof(paths_ok[0]); i++)
		if (!thin_path_valid(paths_ok[i]))
			fail_msg("path refused: \"%s\"", paths_ok[i]);
	for (size_t i = 0; i < sizeof(paths_bad) / sizeof(paths_bad[0]); i++)
		if (thin_path_valid(paths_bad[i]))
			fail_msg("path #%zu accepted: \"%s\"", i, paths_bad[i]);

	char *s = long_path(THIN_PATH_MAX);
	assert_true(thin_path_valid(s));
	free(s);
	s = repeat('p', THIN_PATH_MAX);
	assert_true(thin_path_valid(s));
	free(s);
	s = long_path(THIN_PATH_MAX + 1);
	assert_false(thin_path_valid(s));
	free(s);
	s = repeat('p', THIN_PATH_MAX + 1);
	assert_false(thin_path_valid(s));
	free(s);
}

static void url_ok(const char *url, const char *want_repo, const char *want_path)
{
	char *repo = NULL, *path = NULL;
	const char *why = NULL;
	int r = thin_url_parse(url, &repo, &path, &why);
	if (r != 0)
		fail_msg("url refused (r=%d, %s): \"%s\"", r, why ? why : "(null)", url);
	assert_string_equal(repo, want_repo);
	assert_string_equal(path, want_path);
	free(repo);
	free(path);
}

static void url_bad(const char *url)
{
	char *repo = (char *)"untouched", *path = (char *)"untouched";
	const char *why = NULL;
	int r = thin_url_parse(url, &repo, &path, &why);
	if (r != -EINVAL)
		fail_msg("url accepted or wrong code (r=%d): \"%s\"", r, url);
	if (!why || !why[0])
		fail_msg("no reason for refusing \"%s\"", url);
	assert_string_equal(repo, "untouched");
	assert_string_equal(path, "untouched");
}

static void url_parse(void **state)
{
	(void)state;
	url_ok(URL_A, "unpacked.cern.ch", "registry.hub.docker.com/library/centos:7");
	url_ok("cvmfs://a/b", "a", "b");
	url_ok("cvmfs://sw.cern.ch/.layers/01/" HEX_C "/layerfs", "sw.cern.ch", ".layers/01/" HEX_C "/layerfs");

	/* Every valid repo and path, and every bad one, through a url too. */
	char *url = NULL;
	for (size_t i = 0; i < sizeof(repos_ok) / sizeof(repos_ok[0]); i++) {
		assert_true(asprintf(&url, "cvmfs://%s/x/y", repos_ok[i]) > 0);
		url_ok(url, repos_ok[i], "x/y");
		free(url);
	}
	for (size_t i = 0; i < sizeof(paths_ok) / sizeof(paths_ok[0]); i++) {
		assert_true(asprintf(&url, "cvmfs://repo.example.org/%s", paths_ok[i]) > 0);
		url_ok(url, "repo.example.org", paths_ok[i]);
		free(url);
	}
	for (size_t i = 0; i < sizeof(repos_bad) / sizeof(repos_bad[0]); i++) {
		if (strchr(repos_bad[i], '/'))
			continue; /* the first '/' ends the repo: another url */
		assert_true(asprintf(&url, "cvmfs://%s/x", repos_bad[i]) > 0);
		url_bad(url);
		free(url);
	}
	for (size_t i = 0; i < sizeof(paths_bad) / sizeof(paths_bad[0]); i++) {
		assert_true(asprintf(&url, "cvmfs://repo.example.org/%s", paths_bad[i]) > 0);
		url_bad(url);
		free(url);
	}

	static const char *const bad[] = {
		"",
		"cvmfs://",
		"cvmfs:///",
		"cvmfs:///a",
		"cvmfs://repo",
		"cvmfs://repo/",
		"cvmfs://repo//a",
		"cvmfs:/repo/a",
		"cvmfs:repo/a",
		"cvmfs//repo/a",
		"repo/a",
		"/repo/a",
		"http://repo/a",
		"https://repo/a",
		"file:///cvmfs/repo/a",
		"s3://repo/a",
		"cvmfs:/",
		" cvmfs://repo/a",
		"xcvmfs://repo/a",
		"cvmfs://.repo/a",
		"cvmfs://../a",
		"cvmfs://./a",
		"cvmfs://user@repo/a",
		"cvmfs://repo:80/a",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		url_bad(bad[i]);

	/* Length limits, both sides of each. */
	char *s = repeat('r', THIN_REPO_MAX);
	assert_true(asprintf(&url, "cvmfs://%s/p", s) > 0);
	url_ok(url, s, "p");
	free(url);
	free(s);
	s = repeat('r', THIN_REPO_MAX + 1);
	assert_true(asprintf(&url, "cvmfs://%s/p", s) > 0);
	url_bad(url);
	free(url);
	free(s);
	s = long_path(THIN_PATH_MAX);
	assert_true(asprintf(&url, "cvmfs://r/%s", s) > 0);
	url_ok(url, "r", s);
	free(url);
	free(s);
	s = long_path(THIN_PATH_MAX + 1);
	assert_true(asprintf(&url, "cvmfs://r/%s", s) > 0);
	url_bad(url);
	free(url);
	free(s);
}

/* ---------------------------------------------------------- valid files */

static void parse_minimal(void **state)
{
	(void)state;
	thin_image img = parse_ok(DOC_A);
	assert_string_equal(img.version, "1.0");
	assert_null(img.min_version);
	assert_null(img.origin);
	assert_null(img.comment);
	assert_int_equal(img.n, 1);
	assert_string_equal(img.layers[0].digest, HEX_A);
	assert_string_equal(img.layers[0].repo, "unpacked.cern.ch");
	assert_string_equal(img.layers[0].path, "registry.hub.docker.com/library/centos:7");
	thin_image_release(&img);

	/* Whitespace anywhere JSON allows it, a trailing newline included. */
	img = parse_ok(" \n\t{ \"layers\" : [ { \"url\" : \"cvmfs://r/p\" ,\n \"digest\" : \"" HEX_B
		       "\" } ] , \"version\" : \"1.0\" }\n\n");
	assert_int_equal(img.n, 1);
	assert_string_equal(img.layers[0].digest, HEX_B);
	assert_string_equal(img.layers[0].repo, "r");
	assert_string_equal(img.layers[0].path, "p");
	thin_image_release(&img);

	/* Passing err as NULL is fine. */
	img = (thin_image){0};
	assert_int_equal(thin_parse(DOC_A, strlen(DOC_A), &img, NULL), 0);
	thin_image_release(&img);
	img = sentinel;
	assert_int_equal(thin_parse("[]", 2, &img, NULL), -EINVAL);
	assert_memory_equal(&img, &sentinel, sizeof(img));
}

static const char doc_full[] =
	"{\"version\":\"1.0\",\"min_version\":\"1.0\","
	"\"origin\":\"docker.io/library/centos:7\","
	"\"layers\":[" LAYER(HEX_A, "cvmfs://unpacked.cern.ch/a/base") "," LAYER(
		"sha256:" HEX_B,
		"cvmfs://sw.cern.ch/.layers/ca/" HEX_B
		"/layerfs") "," LAYER(HEX_C_UPPER, "cvmfs://x-y_z.example.org/top") "],"
										    "\"comment\":\"built by ci "
										    "\\\"nightly\\\"\\n\\u00e9\"}";

static void parse_all_keys(void **state)
{
	(void)state;
	thin_image img = parse_ok(doc_full);
	assert_string_equal(img.version, "1.0");
	assert_string_equal(img.min_version, "1.0");
	assert_string_equal(img.origin, "docker.io/library/centos:7");
	assert_string_equal(img.comment, "built by ci \"nightly\"\n\xc3\xa9");
	assert_int_equal(img.n, 3);
	/* Base first, as written. */
	assert_string_equal(img.layers[0].digest, HEX_A);
	assert_string_equal(img.layers[0].repo, "unpacked.cern.ch");
	assert_string_equal(img.layers[0].path, "a/base");
	/* "sha256:" dropped. */
	assert_string_equal(img.layers[1].digest, HEX_B);
	assert_string_equal(img.layers[1].repo, "sw.cern.ch");
	assert_string_equal(img.layers[1].path, ".layers/ca/" HEX_B "/layerfs");
	/* Uppercase stored lowercase. */
	assert_string_equal(img.layers[2].digest, HEX_C);
	assert_string_equal(img.layers[2].repo, "x-y_z.example.org");
	assert_string_equal(img.layers[2].path, "top");
	thin_image_release(&img);
}

static void parse_digest_forms(void **state)
{
	(void)state;
	static const char *const forms[] = {
		DOC(LAYER(HEX_C, "cvmfs://r/p")),
		DOC(LAYER("sha256:" HEX_C, "cvmfs://r/p")),
		DOC(LAYER(HEX_C_UPPER, "cvmfs://r/p")),
		DOC(LAYER("sha256:" HEX_C_UPPER, "cvmfs://r/p")),
		/* The layerfs layout is lowercase; the digest field may not be. */
		DOC(LAYER(HEX_C_UPPER, "cvmfs://r/.layers/01/" HEX_C "/layerfs")),
		DOC(LAYER("sha256:" HEX_C, "cvmfs://r/sub/dir/.layers/01/" HEX_C "/layerfs")),
	};
	for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
		thin_image img = parse_ok(forms[i]);
		assert_int_equal(img.n, 1);
		assert_string_equal(img.layers[0].digest, HEX_C);
		thin_image_release(&img);
	}
}

static void parse_many_layers(void **state)
{
	(void)state;
	char *text = doc_of_layers(THIN_MAX_LAYERS);
	thin_image img = parse_ok(text);
	assert_int_equal(img.n, THIN_MAX_LAYERS);
	char want[THIN_DIGEST_LEN + 1], path[32];
	for (size_t i = 0; i < img.n; i++) {
		snprintf(want, sizeof(want), "%064zx", i + 1);
		snprintf(path, sizeof(path), "l/%zu", i);
		assert_string_equal(img.layers[i].digest, want);
		assert_string_equal(img.layers[i].repo, "r.cern.ch");
		assert_string_equal(img.layers[i].path, path);
	}
	thin_image_release(&img);
	free(text);

	text = doc_of_layers(THIN_MAX_LAYERS + 1);
	expect_refused("501 layers", text, "layers|501|500");
	free(text);

	text = doc_of_layers(2);
	img = parse_ok(text);
	assert_int_equal(img.n, 2);
	thin_image_release(&img);
	free(text);
}

static void parse_forward_compat(void **state)
{
	(void)state;
	/* A newer writer that a 1.0 reader can still read: its extra keys are
	 * ignored, at the top and in layers. */
	static const char text[] = "{\"version\":\"1.3\",\"min_version\":\"1.0\",\"future\":{\"x\":[1,2,null]},"
				   "\"layers\":[{\"digest\":\"" HEX_A "\",\"url\":\"cvmfs://r/p\",\"size\":123,"
				   "\"annotations\":{\"k\":\"v\"}}],\"signature\":\"...\",\"n\":7}";
	thin_image img = parse_ok(text);
	assert_string_equal(img.version, "1.3");
	assert_string_equal(img.min_version, "1.0");
	assert_null(img.origin);
	assert_null(img.comment);
	assert_int_equal(img.n, 1);
	assert_string_equal(img.layers[0].digest, HEX_A);
	assert_string_equal(img.layers[0].repo, "r");
	assert_string_equal(img.layers[0].path, "p");

	/* What it keeps survives a round trip. */
	char *out = NULL;
	assert_int_equal(thin_format(&img, &out), 0);
	thin_image back = parse_ok(out);
	assert_image_equal(&img, &back);
	thin_image_release(&back);
	free(out);
	thin_image_release(&img);

	/* A later major version that says 1.0 readers can read it. */
	img = parse_ok("{\"version\":\"2.0\",\"min_version\":\"1.0\",\"layers\":[" LAYER(HEX_A, "cvmfs://r/p") "]}");
	assert_string_equal(img.version, "2.0");
	thin_image_release(&img);

	/* Minor versions compare as numbers, not text. */
	img = parse_ok("{\"version\":\"1.10\",\"min_version\":\"1.0\",\"layers\":[" LAYER(HEX_A, "cvmfs://r/p") "]}");
	assert_string_equal(img.version, "1.10");
	thin_image_release(&img);

	/* min_version 1.0 on a 1.0 file changes nothing. */
	img = parse_ok("{\"version\":\"1.0\",\"min_version\":\"1.0\",\"layers\":[" LAYER(HEX_A, "cvmfs://r/p") "]}");
	assert_string_equal(img.min_version, "1.0");
	thin_image_release(&img);

	/* Keys a newer version adds are ignored, but the ones 1.0 defines
	 * are still checked. */
	expect_refused("1.3, bad digest",
		       "{\"version\":\"1.3\",\"min_version\":\"1.0\",\"layers\":[" LAYER(HEX_63, "cvmfs://r/p") "]}",
		       "digest");
	expect_refused("1.3, bad url",
		       "{\"version\":\"1.3\",\"min_version\":\"1.0\",\"layers\":[" LAYER(HEX_A, "http://r/p") "]}",
		       "url");
	expect_refused("1.3, origin a number",
		       "{\"version\":\"1.3\",\"min_version\":\"1.0\",\"origin\":1,\"layers\":[" LAYER(
			       HEX_A, "cvmfs://r/p") "]}",
		       "origin");
}

/* Only the first len bytes are read: no terminating NUL needed. */
static void parse_len(void **state)
{
	(void)state;
	size_t len = strlen(DOC_A);
	char *exact = malloc(len);
	assert_non_null(exact);
	memcpy(exact, DOC_A, len);
	thin_image img = parse_ok_len(exact, len);
	assert_int_equal(img.n, 1);
	thin_image_release(&img);
	free(exact);

	/* Garbage past len is not looked at. */
	static const char longer[] = DOC_A "garbage";
	img = parse_ok_len(longer, strlen(DOC_A));
	thin_image_release(&img);

	/* ... and a document cut short by len is refused. */
	expect_refused_len("cut short", DOC_A, strlen(DOC_A) - 1, NULL);
	expect_refused_len("zero length", DOC_A, 0, NULL);
}

/* ------------------------------------------------------- should-fail table */

struct bad_case {
	const char *name;
	const char *text;
	const char *words; /* one of these in the message; NULL: any message */
};

#define V10	      "\"version\":\"1.0\""
#define LAYERS_A      "\"layers\":[" LAYER(HEX_A, URL_A) "]"
#define ONE_URL(url)  DOC(LAYER(HEX_A, url))
#define ONE_DIGEST(d) DOC(LAYER(d, "cvmfs://r/p"))

static const struct bad_case bad_cases[] = {
	/* Not an object. */
	{"array", "[" DOC_A "]", "object"},
	{"empty array", "[]", "object"},
	/* A parser that only takes objects and arrays may say "'{' expected". */
	{"string", "\"" HEX_A "\"", "object|'{'"},
	{"number", "1.0", "object|'{'"},
	{"true", "true", "object|'{'"},
	{"null", "null", "object|'{'"},
	/* Not JSON at all: the message says where (a line and column). */
	{"empty", "", "line"},
	{"blank", " \n", "line"},
	{"open brace", "{", "line"},
	{"unterminated", "{\"version\":\"1.0\",\"layers\":[" LAYER(HEX_A, URL_A), "line"},
	{"single quotes", "{'version':'1.0'}", "line"},
	{"trailing comma", "{" V10 "," LAYERS_A ",}", "line"},
	{"comment in json", "{" V10 ", /* c */ " LAYERS_A "}", "line"},
	{"bad utf-8", "{" V10 "," LAYERS_A ",\"comment\":\"\xff\xfe\"}", "line"},
	{"nul escape in url", ONE_URL("cvmfs://r/a\\u0000b"), "line"},
	/* Trailing garbage (a NUL byte within len included). */
	{"trailing word", DOC_A " x", "line"},
	{"second object", DOC_A "{}", "line"},
	{"second document", DOC_A "\n" DOC_A, "line"},
	{"trailing bracket", DOC_A "]", "line"},
	{"trailing string", DOC_A "\"s\"", "line"},
	{"trailing nul", DOC_A "\n\0", "line"}, /* length given below */
	/* Version. */
	{"no version", "{" LAYERS_A "}", "version"},
	{"version number", "{\"version\":1.0," LAYERS_A "}", "version"},
	{"version integer", "{\"version\":1," LAYERS_A "}", "version"},
	{"version null", "{\"version\":null," LAYERS_A "}", "version"},
	{"version object", "{\"version\":{}," LAYERS_A "}", "version"},
	{"version empty", "{\"version\":\"\"," LAYERS_A "}", "version"},
	{"version 2.0", "{\"version\":\"2.0\"," LAYERS_A "}", "version"},
	{"version 1.3 alone", "{\"version\":\"1.3\"," LAYERS_A "}", "version"},
	{"version 0.9", "{\"version\":\"0.9\"," LAYERS_A "}", "version"},
	{"version 2.0 needs 2.0", "{\"version\":\"2.0\",\"min_version\":\"2.0\"," LAYERS_A "}", "version"},
	{"version 1.3 needs 1.1", "{\"version\":\"1.3\",\"min_version\":\"1.1\"," LAYERS_A "}", "version"},
	{"min_version number", "{\"version\":\"1.3\",\"min_version\":1.0," LAYERS_A "}", "min_version"},
	{"min_version null", "{" V10 ",\"min_version\":null," LAYERS_A "}", "min_version"},
	{"min_version number on 1.0", "{" V10 ",\"min_version\":1," LAYERS_A "}", "min_version"},
	/* Keys 1.0 does not define. */
	{"unknown key", "{" V10 "," LAYERS_A ",\"extra\":1}", "extra"},
	{"unknown key with min_version", "{" V10 ",\"min_version\":\"1.0\"," LAYERS_A ",\"extra\":\"x\"}", "extra"},
	{"unknown layer key", DOC("{\"digest\":\"" HEX_A "\",\"url\":\"cvmfs://r/p\",\"size\":12}"), "size"},
	{"misspelt key", "{" V10 "," LAYERS_A ",\"comments\":\"x\"}", "comments"},
	{"key case", "{\"Version\":\"1.0\"," LAYERS_A "}", "Version|version"},
	/* Layers. */
	{"no layers", "{" V10 "}", "layers"},
	{"empty layers", "{" V10 ",\"layers\":[]}", "layers"},
	{"layers object", "{" V10 ",\"layers\":{}}", "layers"},
	{"layers string", "{" V10 ",\"layers\":\"" URL_A "\"}", "layers"},
	{"layers null", "{" V10 ",\"layers\":null}", "layers"},
	{"layer a string", "{" V10 ",\"layers\":[\"" URL_A "\"]}", "layer"},
	{"layer null", "{" V10 ",\"layers\":[null]}", "layer"},
	{"layer an array", "{" V10 ",\"layers\":[[\"" HEX_A "\",\"" URL_A "\"]]}", "layer"},
	{"layer empty object", "{" V10 ",\"layers\":[{}]}", "digest|url"},
	{"second layer null", "{" V10 ",\"layers\":[" LAYER(HEX_A, URL_A) ",null]}", "layer"},
	/* Digest. */
	{"no digest", DOC("{\"url\":\"cvmfs://r/p\"}"), "digest"},
	{"digest null", DOC("{\"digest\":null,\"url\":\"cvmfs://r/p\"}"), "digest"},
	{"digest number", DOC("{\"digest\":12345,\"url\":\"cvmfs://r/p\"}"), "digest"},
	{"digest empty", ONE_DIGEST(""), "digest"},
	{"digest 63", ONE_DIGEST(HEX_63), "digest"},
	{"digest 65", ONE_DIGEST(HEX_65), "digest"},
	{"digest non-hex", ONE_DIGEST(HEX_G), "digest"},
	{"digest prefix 63", ONE_DIGEST("sha256:" HEX_63), "digest"},
	{"digest prefix only", ONE_DIGEST("sha256:"), "digest"},
	{"digest sha512", ONE_DIGEST("sha512:" HEX_A), "digest"},
	{"digest double prefix", ONE_DIGEST("sha256:sha256:" HEX_A), "digest"},
	{"digest space", ONE_DIGEST(" " HEX_A), "digest"},
	{"digest newline", ONE_DIGEST(HEX_A "\\n"), "digest"},
	{"second layer digest", DOC(LAYER(HEX_A, "cvmfs://r/p") "," LAYER(HEX_63, "cvmfs://r/q")), "digest"},
	/* Url. */
	{"no url", DOC("{\"digest\":\"" HEX_A "\"}"), "url"},
	{"url null", DOC("{\"digest\":\"" HEX_A "\",\"url\":null}"), "url"},
	{"url number", DOC("{\"digest\":\"" HEX_A "\",\"url\":42}"), "url"},
	{"url array", DOC("{\"digest\":\"" HEX_A "\",\"url\":[\"" URL_A "\"]}"), "url"},
	{"url empty", ONE_URL(""), "url"},
	{"url http", ONE_URL("http://r/p"), "url"},
	{"url file", ONE_URL("file:///cvmfs/r/p"), "url"},
	{"url no scheme", ONE_URL("r/p"), "url"},
	{"url one slash", ONE_URL("cvmfs:/r/p"), "url"},
	{"url empty repo", ONE_URL("cvmfs:///p"), "url"},
	{"url repo only", ONE_URL("cvmfs://r"), "url"},
	{"url repo slash", ONE_URL("cvmfs://r/"), "url"},
	{"url dot repo", ONE_URL("cvmfs://.r/p"), "url"},
	{"url dotdot repo", ONE_URL("cvmfs://../p"), "url"},
	{"url dash repo", ONE_URL("cvmfs://-r/p"), "url"},
	{"url repo space", ONE_URL("cvmfs://r r/p"), "url"},
	{"url repo port", ONE_URL("cvmfs://r:80/p"), "url"},
	{"url path leading slash", ONE_URL("cvmfs://r//p"), "url"},
	{"url path trailing slash", ONE_URL("cvmfs://r/p/"), "url"},
	{"url path empty component", ONE_URL("cvmfs://r/a//b"), "url"},
	{"url path dot", ONE_URL("cvmfs://r/."), "url"},
	{"url path dotdot", ONE_URL("cvmfs://r/.."), "url"},
	{"url path dot component", ONE_URL("cvmfs://r/a/./b"), "url"},
	{"url path dotdot component", ONE_URL("cvmfs://r/a/../b"), "url"},
	{"url path dotdot escape", ONE_URL("cvmfs://r/../../etc"), "url"},
	{"url path trailing dotdot", ONE_URL("cvmfs://r/a/.."), "url"},
	{"url path newline", ONE_URL("cvmfs://r/a\\nb"), "url"},
	{"url path tab", ONE_URL("cvmfs://r/a\\tb"), "url"},
	{"url path \\u0001", ONE_URL("cvmfs://r/a\\u0001b"), "url"},
	{"url path \\u001f", ONE_URL("cvmfs://r/a\\u001f"), "url"},
	{"url path escape", ONE_URL("cvmfs://r/\\u001b[31m"), "url"},
	{"url path del", ONE_URL("cvmfs://r/a\\u007f"), "url"},
	/* The layerfs layout names the digest: it must be this one. */
	{"layerfs other digest", DOC(LAYER(HEX_A, "cvmfs://r/.layers/ca/" HEX_B "/layerfs")), "digest|layerfs|url"},
	{"layerfs other digest, deep", DOC(LAYER(HEX_A, "cvmfs://r/x/y/.layers/ca/" HEX_B "/layerfs")),
	 "digest|layerfs|url"},
	{"layerfs other digest, right hh", DOC(LAYER(HEX_A, "cvmfs://r/.layers/e3/" HEX_B "/layerfs")),
	 "digest|layerfs|url"},
	{"layerfs wrong hh", DOC(LAYER(HEX_C, "cvmfs://r/.layers/ff/" HEX_C "/layerfs")), "digest|layerfs|url"},
	{"layerfs wrong hh, other digest", DOC(LAYER(HEX_A, "cvmfs://r/.layers/ff/" HEX_B "/layerfs")),
	 "digest|layerfs|url"},
	/* The same digest twice, however written. */
	{"duplicate digest", DOC(LAYER(HEX_A, "cvmfs://r/p") "," LAYER(HEX_A, "cvmfs://r/q")), "digest"},
	{"duplicate digest, prefix", DOC(LAYER(HEX_C, "cvmfs://r/p") "," LAYER("sha256:" HEX_C, "cvmfs://r/q")),
	 "digest"},
	{"duplicate digest, case", DOC(LAYER(HEX_C_UPPER, "cvmfs://r/p") "," LAYER(HEX_C, "cvmfs://s/q")), "digest"},
	{"duplicate digest, apart",
	 DOC(LAYER(HEX_A, "cvmfs://r/p") "," LAYER(HEX_B, "cvmfs://r/q") "," LAYER(HEX_A, "cvmfs://r/s")), "digest"},
	/* Duplicate keys. */
	{"duplicate version", "{" V10 "," V10 "," LAYERS_A "}", "duplicate"},
	{"duplicate version, differing", "{" V10 ",\"version\":\"2.0\"," LAYERS_A "}", "duplicate"},
	{"duplicate layers", "{" V10 "," LAYERS_A "," LAYERS_A "}", "duplicate"},
	{"duplicate comment", "{" V10 "," LAYERS_A ",\"comment\":\"a\",\"comment\":\"b\"}", "duplicate"},
	{"duplicate url", DOC("{\"digest\":\"" HEX_A "\",\"url\":\"cvmfs://r/p\",\"url\":\"cvmfs://r/q\"}"),
	 "duplicate"},
	{"duplicate digest key", DOC("{\"digest\":\"" HEX_A "\",\"digest\":\"" HEX_B "\",\"url\":\"cvmfs://r/p\"}"),
	 "duplicate"},
	/* Optional keys of the wrong type. */
	{"origin number", "{" V10 "," LAYERS_A ",\"origin\":7}", "origin"},
	{"origin null", "{" V10 "," LAYERS_A ",\"origin\":null}", "origin"},
	{"origin array", "{" V10 "," LAYERS_A ",\"origin\":[\"docker.io\"]}", "origin"},
	{"comment object", "{" V10 "," LAYERS_A ",\"comment\":{}}", "comment"},
	{"comment bool", "{" V10 "," LAYERS_A ",\"comment\":false}", "comment"},
	{"comment null", "{" V10 "," LAYERS_A ",\"comment\":null}", "comment"},
	{"min_version true", "{" V10 ",\"min_version\":true," LAYERS_A "}", "min_version"},
};

/* Versions are MAJOR.MINOR in digits, strictly: no sign or blank that a
 * lax number parser (sscanf's %u) would skip, even when min_version would
 * let a 1.0 reader in.  A min_version that is not plainly 1.0 does not say a
 * 1.0 reader can read the file. */
static const struct bad_case bad_versions[] = {
	{"version 1.+3", "{\"version\":\"1.+3\",\"min_version\":\"1.0\"," LAYERS_A "}", "version"},
	{"version 1.-3", "{\"version\":\"1.-3\",\"min_version\":\"1.0\"," LAYERS_A "}", "version"},
	{"version 1. 3", "{\"version\":\"1. 3\",\"min_version\":\"1.0\"," LAYERS_A "}", "version"},
	{"version +1.3", "{\"version\":\"+1.3\",\"min_version\":\"1.0\"," LAYERS_A "}", "version"},
	{"version 1.3 blank", "{\"version\":\"1.3 \",\"min_version\":\"1.0\"," LAYERS_A "}", "version"},
	{"version v1.3", "{\"version\":\"v1.3\",\"min_version\":\"1.0\"," LAYERS_A "}", "version"},
	{"version 1", "{\"version\":\"1\",\"min_version\":\"1.0\"," LAYERS_A "}", "version"},
	{"min_version 1. 0", "{\"version\":\"1.3\",\"min_version\":\"1. 0\"," LAYERS_A "}", "version"},
	{"min_version 1.+0", "{\"version\":\"1.3\",\"min_version\":\"1.+0\"," LAYERS_A "}", "version"},
	{"min_version 1.-0", "{\"version\":\"1.3\",\"min_version\":\"1.-0\"," LAYERS_A "}", "version"},
	{"min_version empty", "{\"version\":\"1.3\",\"min_version\":\"\"," LAYERS_A "}", "version"},
};

static void run_table(const struct bad_case *cases, size_t n)
{
	size_t failed = 0;
	for (size_t i = 0; i < n; i++) {
		const struct bad_case *c = &cases[i];
		size_t len = strlen(c->text);
		if (strcmp(c->name, "trailing nul") == 0)
			len++;
		if (!refused_len(c->name, c->text, len, c->words))
			failed++;
	}
	if (failed)
		fail_msg("%zu of %zu should-fail cases not refused as expected", failed, n);
}

static void parse_should_fail(void **state)
{
	(void)state;
	run_table(bad_cases, sizeof(bad_cases) / sizeof(bad_cases[0]));
}

static void parse_version_strict(void **state)
{
	(void)state;
	run_table(bad_versions, sizeof(bad_versions) / sizeof(bad_versions[0]));
}

static void parse_long_names(void **state)
{
	(void)state;
	char *name = NULL, *text = NULL;

	name = repeat('r', THIN_REPO_MAX);
	assert_true(asprintf(&text, DOC("{\"digest\":\"" HEX_A "\",\"url\":\"cvmfs://%s/p\"}"), name) > 0);
	thin_image img = parse_ok(text);
	assert_string_equal(img.layers[0].repo, name);
	thin_image_release(&img);
	free(text);
	free(name);

	name = repeat('r', THIN_REPO_MAX + 1);
	assert_true(asprintf(&text, DOC("{\"digest\":\"" HEX_A "\",\"url\":\"cvmfs://%s/p\"}"), name) > 0);
	expect_refused("repo too long", text, "url");
	free(text);
	free(name);

	name = long_path(THIN_PATH_MAX);
	assert_true(asprintf(&text, DOC("{\"digest\":\"" HEX_A "\",\"url\":\"cvmfs://r/%s\"}"), name) > 0);
	img = parse_ok(text);
	assert_string_equal(img.layers[0].path, name);
	thin_image_release(&img);
	free(text);
	free(name);

	name = long_path(THIN_PATH_MAX + 1);
	assert_true(asprintf(&text, DOC("{\"digest\":\"" HEX_A "\",\"url\":\"cvmfs://r/%s\"}"), name) > 0);
	expect_refused("path too long", text, "url");
	free(text);
	free(name);
}

/* -------------------------------------------------------------- format */

static void format_round_trip(void **state)
{
	(void)state;
	static const char *const docs[] = {
		DOC_A,
		doc_full,
		DOC(LAYER("sha256:" HEX_C_UPPER, "cvmfs://r/p") "," LAYER(HEX_A,
									  "cvmfs://s/.layers/e3/" HEX_A "/layerfs")),
		"{\"version\":\"1.0\",\"origin\":\"o\"," LAYERS_A "}",
		"{\"version\":\"1.0\",\"comment\":\"\"," LAYERS_A "}",
		"{\"version\":\"1.0\",\"comment\":\"tab\\there \\\\ \\/ \\\"q\\\" \\u0001 \\ud83d\\ude00\"," LAYERS_A
		"}",
	};
	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		thin_image img = parse_ok(docs[i]);
		char *text = NULL;
		assert_int_equal(thin_format(&img, &text), 0);
		assert_non_null(text);
		size_t len = strlen(text);
		assert_true(len > 0);
		if (text[len - 1] != '\n')
			fail_msg("doc #%zu: no trailing newline: %s", i, text);
		/* Pretty-printed: more than one line. */
		assert_non_null(memchr(text, '\n', len - 1));
		/* Digests without prefix. */
		assert_null(strstr(text, "sha256:"));
		assert_null(strstr(text, HEX_C_UPPER));
		thin_image back = parse_ok(text);
		assert_image_equal(&img, &back);

		/* Stable: formatting what was parsed back gives the same text. */
		char *again = NULL;
		assert_int_equal(thin_format(&back, &again), 0);
		assert_string_equal(text, again);
		free(again);
		thin_image_release(&back);
		thin_image_release(&img);
		free(text);
	}
}

/* Keys in a fixed order: the order they were written in does not matter. */
static void format_key_order(void **state)
{
	(void)state;
	static const char a[] = "{\"version\":\"1.0\",\"min_version\":\"1.0\",\"origin\":\"o\",\"layers\":[" LAYER(
		HEX_A, "cvmfs://r/p") "],\"comment\":\"c\"}";
	static const char b[] = "{\"comment\":\"c\",\"layers\":[{\"url\":\"cvmfs://r/p\",\"digest\":\"sha256:" HEX_A
				"\"}],\"origin\":\"o\",\"min_version\":\"1.0\",\"version\":\"1.0\"}";
	thin_image ia = parse_ok(a), ib = parse_ok(b);
	char *ta = NULL, *tb = NULL;
	assert_int_equal(thin_format(&ia, &ta), 0);
	assert_int_equal(thin_format(&ib, &tb), 0);
	assert_string_equal(ta, tb);
	/* Absent optional keys stay absent (not null). */
	thin_image minimal = parse_ok(DOC_A);
	char *tm = NULL;
	assert_int_equal(thin_format(&minimal, &tm), 0);
	assert_null(strstr(tm, "null"));
	assert_null(strstr(tm, "origin"));
	assert_null(strstr(tm, "comment"));
	assert_null(strstr(tm, "min_version"));
	free(tm);
	thin_image_release(&minimal);
	free(ta);
	free(tb);
	thin_image_release(&ia);
	thin_image_release(&ib);
}

static void format_many_layers(void **state)
{
	(void)state;
	char *doc = doc_of_layers(THIN_MAX_LAYERS);
	thin_image img = parse_ok(doc);
	char *text = NULL;
	assert_int_equal(thin_format(&img, &text), 0);
	assert_true(strlen(text) < THIN_MAX_BYTES);
	thin_image back = parse_ok(text);
	assert_image_equal(&img, &back);
	thin_image_release(&back);
	thin_image_release(&img);
	free(text);
	free(doc);
}

/* ------------------------------------------------ release, copy, push */

static void image_release(void **state)
{
	(void)state;
	static const thin_image zero = {0};
	thin_image img = {0};
	thin_image_release(&img);
	assert_memory_equal(&img, &zero, sizeof(img));

	img = parse_ok(doc_full);
	thin_image_release(&img);
	assert_memory_equal(&img, &zero, sizeof(img));
	/* Released twice: the second sees a zeroed image. */
	thin_image_release(&img);
	assert_memory_equal(&img, &zero, sizeof(img));
}

static void image_copy(void **state)
{
	(void)state;
	static const char *const docs[] = {DOC_A, doc_full};
	for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
		thin_image src = parse_ok(docs[i]);
		thin_image dst = {0};
		assert_int_equal(thin_image_copy(&src, &dst), 0);
		assert_image_equal(&src, &dst);
		/* Deep: nothing shared. */
		assert_ptr_not_equal(dst.version, src.version);
		assert_ptr_not_equal(dst.layers, src.layers);
		if (src.comment)
			assert_ptr_not_equal(dst.comment, src.comment);
		if (src.origin)
			assert_ptr_not_equal(dst.origin, src.origin);
		if (src.min_version)
			assert_ptr_not_equal(dst.min_version, src.min_version);
		for (size_t j = 0; j < src.n; j++) {
			assert_ptr_not_equal(dst.layers[j].repo, src.layers[j].repo);
			assert_ptr_not_equal(dst.layers[j].path, src.layers[j].path);
		}
		/* The copy outlives the original. */
		thin_image keep = {0};
		assert_int_equal(thin_image_copy(&src, &keep), 0);
		thin_image_release(&src);
		assert_image_equal(&keep, &dst);
		/* And pushing onto the copy leaves the other alone. */
		size_t n = dst.n;
		assert_int_equal(thin_image_push(&dst,
						 "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
						 "r", "new"),
				 0);
		assert_int_equal(dst.n, n + 1);
		assert_int_equal(keep.n, n);
		thin_image_release(&keep);
		thin_image_release(&dst);
	}

	/* A zeroed image copies to a zeroed image. */
	static const thin_image zero = {0};
	thin_image empty = {0}, out = {0};
	assert_int_equal(thin_image_copy(&empty, &out), 0);
	assert_null(out.version);
	assert_null(out.min_version);
	assert_null(out.origin);
	assert_null(out.comment);
	assert_int_equal(out.n, 0);
	thin_image_release(&out);
	assert_memory_equal(&out, &zero, sizeof(out));
}

static void image_push(void **state)
{
	(void)state;
	thin_image img = parse_ok(doc_full);
	thin_image before = {0};
	assert_int_equal(thin_image_copy(&img, &before), 0);

	/* On top: at the end, base first stays. */
	assert_int_equal(thin_image_push(&img,
					 "sha256:"
					 "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789",
					 "sw.cern.ch", "layers/new"),
			 0);
	assert_int_equal(img.n, 4);
	assert_string_equal(img.layers[3].digest, "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789");
	assert_string_equal(img.layers[3].repo, "sw.cern.ch");
	assert_string_equal(img.layers[3].path, "layers/new");
	for (size_t i = 0; i < before.n; i++) {
		assert_string_equal(img.layers[i].digest, before.layers[i].digest);
		assert_string_equal(img.layers[i].path, before.layers[i].path);
	}
	assert_string_equal(img.origin, before.origin);
	assert_string_equal(img.comment, before.comment);

	/* The layerfs layout, for the pushed digest. */
	char lp[THIN_LAYERFS_PATH_LEN + 1];
	thin_layerfs_path("fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210", lp);
	assert_int_equal(thin_image_push(&img, "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
					 "sw.cern.ch", lp),
			 0);
	assert_int_equal(img.n, 5);
	assert_string_equal(img.layers[4].path, lp);

	/* The same digest again, however written: -EEXIST, nothing changed. */
	static const char *const again[] = {HEX_A, "sha256:" HEX_B, HEX_C_UPPER, "sha256:" HEX_C_UPPER};
	for (size_t i = 0; i < sizeof(again) / sizeof(again[0]); i++)
		assert_int_equal(thin_image_push(&img, again[i], "r", "p"), -EEXIST);
	assert_int_equal(img.n, 5);

	/* Bad input: -EINVAL, nothing changed. */
	static const struct {
		const char *digest, *repo, *path;
	} bad[] = {
		{"", "r", "p"},
		{HEX_63, "r", "p"},
		{HEX_65, "r", "p"},
		{HEX_G, "r", "p"},
		{"sha512:"
		 "1111111111111111111111111111111111111111111111111111111111111111",
		 "r", "p"},
		{"1111111111111111111111111111111111111111111111111111111111111111", "", "p"},
		{"1111111111111111111111111111111111111111111111111111111111111111", "a/b", "p"},
		{"1111111111111111111111111111111111111111111111111111111111111111", ".r", "p"},
		{"1111111111111111111111111111111111111111111111111111111111111111", "r r", "p"},
		{"1111111111111111111111111111111111111111111111111111111111111111", "r", ""},
		{"1111111111111111111111111111111111111111111111111111111111111111", "r", "/p"},
		{"1111111111111111111111111111111111111111111111111111111111111111", "r", "p/"},
		{"1111111111111111111111111111111111111111111111111111111111111111", "r", "a//b"},
		{"1111111111111111111111111111111111111111111111111111111111111111", "r", "."},
		{"1111111111111111111111111111111111111111111111111111111111111111", "r", "a/../b"},
		{"1111111111111111111111111111111111111111111111111111111111111111", "r", "a\nb"},
		/* A layerfs path naming another digest: thin_parse would refuse
		 * the thin.json this makes. */
		{"1111111111111111111111111111111111111111111111111111111111111111", "r",
		 ".layers/e3/" HEX_A "/layerfs"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = thin_image_push(&img, bad[i].digest, bad[i].repo, bad[i].path);
		if (r != -EINVAL)
			fail_msg("push #%zu (%s, %s, %s): expected -EINVAL, got %d", i, bad[i].digest, bad[i].repo,
				 bad[i].path, r);
	}
	assert_int_equal(img.n, 5);

	/* What push made formats and parses back, the new layers on top. */
	char *text = NULL;
	assert_int_equal(thin_format(&img, &text), 0);
	thin_image back = parse_ok(text);
	assert_image_equal(&img, &back);
	assert_string_equal(back.layers[back.n - 1].digest,
			    "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210");
	thin_image_release(&back);
	free(text);
	thin_image_release(&before);
	thin_image_release(&img);
}

/* Whatever push takes, format writes and parse reads back:
 * thin_parse(thin_format(x)) == x holds for images push builds. */
static void image_push_format(void **state)
{
	(void)state;
	static const char *const paths[] = {
		"quote\"d",
		"back\\slash",
		"caf\xc3\xa9/\xe2\x82\xac",
		"a/b c/{\"k\":1}",
		/* Not UTF-8: JSON cannot hold it as it is, so push must refuse it
		 * or format must write it some way parse reads back. */
		"latin1-caf\xe9",
		"\xff\xfe",
	};
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		thin_image img = parse_ok(DOC_A);
		int r = thin_image_push(&img, HEX_C, "r", paths[i]);
		if (r == -EINVAL) {
			thin_image_release(&img);
			continue;
		}
		if (r != 0)
			fail_msg("push of path #%zu: %d", i, r);
		char *text = NULL;
		r = thin_format(&img, &text);
		if (r != 0) {
			thin_image_release(&img);
			fail_msg("push took path #%zu but thin_format fails: %d", i, r);
		}
		thin_image back = parse_ok(text);
		assert_image_equal(&img, &back);
		thin_image_release(&back);
		free(text);
		thin_image_release(&img);
	}
}

static void image_push_limit(void **state)
{
	(void)state;
	/* From nothing up to the limit. */
	thin_image img = {0};
	char digest[THIN_DIGEST_LEN + 1], path[32];
	for (size_t i = 0; i < THIN_MAX_LAYERS; i++) {
		snprintf(digest, sizeof(digest), "%064zx", i + 1);
		snprintf(path, sizeof(path), "l/%zu", i);
		int r = thin_image_push(&img, digest, "r.cern.ch", path);
		if (r != 0)
			fail_msg("push %zu: %d", i, r);
		assert_int_equal(img.n, i + 1);
	}
	for (size_t i = 0; i < img.n; i++) {
		snprintf(digest, sizeof(digest), "%064zx", i + 1);
		assert_string_equal(img.layers[i].digest, digest);
	}
	snprintf(digest, sizeof(digest), "%064zx", (size_t)THIN_MAX_LAYERS + 1);
	assert_int_equal(thin_image_push(&img, digest, "r.cern.ch", "one/too/many"), -E2BIG);
	assert_int_equal(img.n, THIN_MAX_LAYERS);
	thin_image_release(&img);

	/* The same through a parsed file of 500. */
	char *doc = doc_of_layers(THIN_MAX_LAYERS);
	img = parse_ok(doc);
	assert_int_equal(thin_image_push(&img, HEX_A, "r", "p"), -E2BIG);
	assert_int_equal(img.n, THIN_MAX_LAYERS);
	thin_image_release(&img);
	free(doc);

	/* 499 takes one more. */
	doc = doc_of_layers(THIN_MAX_LAYERS - 1);
	img = parse_ok(doc);
	assert_int_equal(thin_image_push(&img, HEX_A, "r", "p"), 0);
	assert_int_equal(img.n, THIN_MAX_LAYERS);
	assert_string_equal(img.layers[THIN_MAX_LAYERS - 1].digest, HEX_A);
	thin_image_release(&img);
	free(doc);
}

/* -------------------------------------------------------------- read_at */

static char tmpdir[64];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static int read_setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/strata-unit-thin.XXXXXX");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int read_teardown(void **state)
{
	(void)state;
	/* Files made unreadable would stop nothing here: we only unlink. */
	return nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh sub dir of the temp dir, opened. */
static int subdir(const char *name)
{
	char path[128];
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	if (mkdir(path, 0755) < 0)
		fail_msg("mkdir %s: %s", path, strerror(errno));
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

static void write_at(int dfd, const char *name, const char *data, size_t len)
{
	int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	size_t off = 0;
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);
		assert_true(w > 0);
		off += (size_t)w;
	}
	assert_int_equal(close(fd), 0);
}

/* A valid thin.json padded with spaces to exactly `size` bytes. */
static void write_padded(int dfd, size_t size)
{
	char *buf = malloc(size);
	assert_non_null(buf);
	memset(buf, ' ', size);
	memcpy(buf, DOC_A, strlen(DOC_A));
	buf[size - 1] = '\n';
	write_at(dfd, THIN_FILE, buf, size);
	free(buf);
}

static void expect_read_refused(int dfd, const char *what)
{
	thin_image img = sentinel;
	strata_error err = {0};
	int r = thin_read_at(dfd, &img, &err);
	if (r >= 0) {
		if (r == 1)
			thin_image_release(&img);
		fail_msg("%s: read_at returned %d", what, r);
	}
	if (!strstr(err.message, THIN_FILE))
		fail_msg("%s: message \"%s\" does not name " THIN_FILE, what, err.message);
}

static void read_at(void **state)
{
	(void)state;
	thin_image img = {0};
	strata_error err = {0};

	/* None: 0, nothing to free. */
	int dfd = subdir("none");
	img = sentinel;
	assert_int_equal(thin_read_at(dfd, &img, &err), 0);
	/* A file of another name is not it. */
	write_at(dfd, "thin.json.tmp", DOC_A, strlen(DOC_A));
	write_at(dfd, "THIN.JSON", DOC_A, strlen(DOC_A));
	img = (thin_image){0};
	assert_int_equal(thin_read_at(dfd, &img, &err), 0);
	close(dfd);

	/* Valid: 1 and the image. */
	dfd = subdir("valid");
	write_at(dfd, THIN_FILE, doc_full, strlen(doc_full));
	img = (thin_image){0};
	assert_int_equal(thin_read_at(dfd, &img, &err), 1);
	thin_image want = parse_ok(doc_full);
	assert_image_equal(&img, &want);
	thin_image_release(&want);
	thin_image_release(&img);
	/* err may be NULL. */
	assert_int_equal(thin_read_at(dfd, &img, NULL), 1);
	thin_image_release(&img);
	close(dfd);

	/* Malformed, in several ways: negative, naming thin.json. */
	static const char *const malformed[] = {
		"",
		"{",
		"null",
		DOC(LAYER(HEX_63, "cvmfs://r/p")),
		DOC(LAYER(HEX_A, "http://r/p")),
		DOC_A "x",
		"{\"version\":\"2.0\"," LAYERS_A "}",
	};
	for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++) {
		char name[32];
		snprintf(name, sizeof(name), "malformed%zu", i);
		dfd = subdir(name);
		write_at(dfd, THIN_FILE, malformed[i], strlen(malformed[i]));
		err = (strata_error){0};
		expect_read_refused(dfd, name);
		close(dfd);
	}

	/* A symlink, to a valid file next to it, or dangling. */
	dfd = subdir("symlink");
	write_at(dfd, "real.json", DOC_A, strlen(DOC_A));
	assert_int_equal(symlinkat("real.json", dfd, THIN_FILE), 0);
	expect_read_refused(dfd, "symlink");
	close(dfd);
	dfd = subdir("symlink-abs");
	char target[128];
	snprintf(target, sizeof(target), "%s/valid/" THIN_FILE, tmpdir);
	assert_int_equal(symlinkat(target, dfd, THIN_FILE), 0);
	expect_read_refused(dfd, "absolute symlink");
	close(dfd);
	dfd = subdir("dangling");
	assert_int_equal(symlinkat("nowhere", dfd, THIN_FILE), 0);
	expect_read_refused(dfd, "dangling symlink");
	close(dfd);

	/* A directory, and a fifo (which must not block the reader). */
	dfd = subdir("dir");
	assert_int_equal(mkdirat(dfd, THIN_FILE, 0755), 0);
	expect_read_refused(dfd, "directory");
	close(dfd);
	dfd = subdir("fifo");
	assert_int_equal(mkfifoat(dfd, THIN_FILE, 0644), 0);
	expect_read_refused(dfd, "fifo");
	close(dfd);

	/* THIN_MAX_BYTES is the most it reads. */
	dfd = subdir("exact");
	write_padded(dfd, THIN_MAX_BYTES);
	img = (thin_image){0};
	assert_int_equal(thin_read_at(dfd, &img, &err), 1);
	assert_int_equal(img.n, 1);
	thin_image_release(&img);
	close(dfd);
	dfd = subdir("big");
	write_padded(dfd, THIN_MAX_BYTES + 1);
	expect_read_refused(dfd, "too large");
	close(dfd);
	dfd = subdir("huge");
	int fd = openat(dfd, THIN_FILE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)64 << 20), 0);
	close(fd);
	expect_read_refused(dfd, "huge");
	close(dfd);

	/* Unreadable (root reads anyway: only as a user). */
	if (geteuid() != 0) {
		dfd = subdir("unreadable");
		write_at(dfd, THIN_FILE, DOC_A, strlen(DOC_A));
		assert_int_equal(fchmodat(dfd, THIN_FILE, 0, 0), 0);
		expect_read_refused(dfd, "unreadable");
		close(dfd);
	}
}

/* A daemon remembers records it has checked: one written anew (another
 * digest) after a resolve must be read again and refused. */
static void resolve_record_rewritten(void **state)
{
	(void)state;
	char root[] = "/tmp/strata-thin-resolve-XXXXXX";
	assert_non_null(mkdtemp(root));
	static const char hex[] = "aa00000000000000000000000000000000000000000000000000000000000001";
	static const char other[] = "bb00000000000000000000000000000000000000000000000000000000000002";
	char dir[512], rec[512], cmd[1024];
	snprintf(dir, sizeof(dir), "%s/repo/.layers/aa/%s/layerfs", root, hex);
	snprintf(rec, sizeof(rec), "%s/repo/.layers/aa/%s/" THIN_RECORD, root, hex);
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s'", dir);
	assert_int_equal(system(cmd), 0);
	thin_config c;
	assert_int_equal(thin_config_init(&c), 0);
	free(c.root);
	c.root = strdup(root);
	thin_layer l = {.repo = "repo", .path = NULL};
	memcpy(l.digest, hex, sizeof(hex));
	char path[THIN_LAYERFS_PATH_LEN + 1];
	thin_layerfs_path(hex, path);
	l.path = path;
	for (int round = 0; round < 3; round++) {
		/* Rounds 0 and 1: the right digest (the second from the
		 * cache); round 2: the record rewritten naming another. */
		FILE *f = round == 1 ? NULL : fopen(rec, "w");
		if (f) {
			fprintf(f, "{\"digest\": \"%s\", \"padding\": \"%s\"}\n", round == 2 ? other : hex, "x");
			fclose(f);
		}
		char *got = NULL;
		strata_error err = {0};
		int r = thin_resolve(&c, &l, &got, &err);
		if (round < 2) {
			assert_int_equal(r, 0);
			assert_string_equal(got, dir);
		} else {
			assert_int_equal(r, -EBADMSG);
			assert_non_null(strstr(err.message, "digest mismatch"));
		}
		free(got);
	}
	thin_config_release(&c);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(resolve_record_rewritten),
		cmocka_unit_test(digest_parse),
		cmocka_unit_test(layerfs_path),
		cmocka_unit_test(repo_valid),
		cmocka_unit_test(path_valid),
		cmocka_unit_test(url_parse),
		cmocka_unit_test(parse_minimal),
		cmocka_unit_test(parse_all_keys),
		cmocka_unit_test(parse_digest_forms),
		cmocka_unit_test(parse_many_layers),
		cmocka_unit_test(parse_forward_compat),
		cmocka_unit_test(parse_len),
		cmocka_unit_test(parse_should_fail),
		cmocka_unit_test(parse_version_strict),
		cmocka_unit_test(parse_long_names),
		cmocka_unit_test(format_round_trip),
		cmocka_unit_test(format_key_order),
		cmocka_unit_test(format_many_layers),
		cmocka_unit_test(image_release),
		cmocka_unit_test(image_copy),
		cmocka_unit_test(image_push),
		cmocka_unit_test(image_push_format),
		cmocka_unit_test(image_push_limit),
		cmocka_unit_test_setup_teardown(read_at, read_setup, read_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
