/* SPDX-License-Identifier: Apache-2.0 */
/* thin.json: strict parsing and canonical writing (see thin.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "thin/thin.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

static bool is_name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
	       c == '-';
}

bool thin_repo_valid(const char *repo)
{
	size_t n = strlen(repo);
	if (n == 0 || n > THIN_REPO_MAX || !is_name_char(repo[0]) || repo[0] == '.' || repo[0] == '-' || repo[0] == '_')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_name_char(repo[i]))
			return false;
	return true;
}

/* thin.json is JSON: every string in it is UTF-8. */
static bool utf8_valid(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		unsigned c = *p, n = c < 0x80		  ? 0
				     : (c & 0xe0) == 0xc0 ? 1
				     : (c & 0xf0) == 0xe0 ? 2
				     : (c & 0xf8) == 0xf0 ? 3
							  : 4;
		if (n == 4 || (n == 1 && c < 0xc2) || (c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] >= 0x90) ||
		    c > 0xf4)
			return false;
		if (c == 0xe0 && p[1] < 0xa0)
			return false; /* overlong */
		if (c == 0xed && p[1] >= 0xa0)
			return false; /* surrogates */
		for (unsigned i = 1; i <= n; i++)
			if ((p[i] & 0xc0) != 0x80)
				return false;
		p += n + 1;
	}
	return true;
}

static const char *path_problem(const char *path)
{
	size_t n = strlen(path);
	if (n == 0)
		return "the path is empty";
	if (n > THIN_PATH_MAX)
		return "the path is too long";
	if (path[0] == '/' || path[n - 1] == '/')
		return "the path begins or ends with '/'";
	for (const char *p = path; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return "the path holds a control character";
	if (!utf8_valid(path))
		return "the path is not UTF-8";
	for (const char *c = path; *c;) {
		size_t len = strcspn(c, "/");
		if (len == 0)
			return "the path has an empty component";
		if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
			return "the path has a \".\" or \"..\" component";
		c += len;
		if (*c == '/')
			c++;
	}
	return NULL;
}

bool thin_path_valid(const char *path)
{
	return path_problem(path) == NULL;
}

int thin_url_parse(const char *url, char **ret_repo, char **ret_path, const char **ret_why)
{
	const size_t sl = sizeof(THIN_URL_SCHEME) - 1;
	if (strncmp(url, THIN_URL_SCHEME, sl) != 0) {
		*ret_why = "the url does not begin with cvmfs://";
		return -EINVAL;
	}
	const char *repo = url + sl, *slash = strchr(repo, '/');
	if (!slash) {
		*ret_why = "the url names no path inside the repository";
		return -EINVAL;
	}
	_cleanup_free_ char *r = strndup(repo, (size_t)(slash - repo));
	if (!r)
		return -ENOMEM;
	if (!thin_repo_valid(r)) {
		*ret_why = "the url's repository is not a valid name";
		return -EINVAL;
	}
	const char *why = path_problem(slash + 1);
	if (why) {
		*ret_why = why;
		return -EINVAL;
	}
	char *p = strdup(slash + 1);
	if (!p)
		return -ENOMEM;
	*ret_repo = TAKE_PTR(r);
	*ret_path = p;
	return 0;
}

bool thin_digest_parse(const char *s, char ret[THIN_DIGEST_LEN + 1])
{
	if (!strncmp(s, "sha256:", 7))
		s += 7;
	if (strlen(s) != THIN_DIGEST_LEN)
		return false;
	char out[THIN_DIGEST_LEN + 1];
	for (size_t i = 0; i < THIN_DIGEST_LEN; i++) {
		char c = s[i];
		if (c >= 'A' && c <= 'F')
			c = (char)(c - 'A' + 'a');
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
		out[i] = c;
	}
	out[THIN_DIGEST_LEN] = '\0';
	memcpy(ret, out, sizeof(out));
	return true;
}

void thin_layerfs_path(const char *digest, char *ret)
{
	snprintf(ret, THIN_LAYERFS_PATH_LEN + 1, "%s/%.2s/%s/%s", THIN_LAYERS_DIR, digest, digest, THIN_LAYERFS);
}

bool thin_path_chained(const char *path, const char *digest)
{
	char want[THIN_LAYERFS_PATH_LEN + 18];
	snprintf(want, sizeof(want), "%s/%.2s/%s-", THIN_LAYERS_DIR, digest, digest);
	size_t wl = strlen(want);
	if (strncmp(path, want, wl) != 0)
		return false;
	const char *rest = path + wl;
	for (int i = 0; i < 16; i++)
		if (!((rest[i] >= '0' && rest[i] <= '9') || (rest[i] >= 'a' && rest[i] <= 'f')))
			return false;
	return !strcmp(rest + 16, "/" THIN_LAYERFS);
}

/* A url in CernVM-FS's layout names its digest: it must be the layer's. */
static bool layout_digest_mismatch(const char *path, const char *digest)
{
	size_t n = strlen(path), want = THIN_LAYERFS_PATH_LEN;
	if (n < want || (n > want && path[n - want - 1] != '/'))
		return false;
	const char *tail = path + n - want;
	if (strncmp(tail, THIN_LAYERS_DIR "/", sizeof(THIN_LAYERS_DIR)) != 0 ||
	    strcmp(tail + want - sizeof(THIN_LAYERFS) + 1, THIN_LAYERFS) != 0)
		return false;
	char expected[THIN_LAYERFS_PATH_LEN + 1];
	thin_layerfs_path(digest, expected);
	return strcmp(tail, expected) != 0;
}

void thin_image_release(thin_image *img)
{
	if (!img)
		return;
	free(img->version);
	free(img->min_version);
	free(img->origin);
	free(img->comment);
	for (size_t i = 0; i < img->n; i++) {
		free(img->layers[i].repo);
		free(img->layers[i].path);
	}
	free(img->layers);
	*img = (thin_image){0};
}

static void thin_image_releasep(thin_image *img)
{
	thin_image_release(img);
}

/* "1.0" -> 1, 0; false if not MAJOR.MINOR, each 1 to 3 digits. */
static bool version_parse(const char *v, unsigned *ret_major, unsigned *ret_minor)
{
	unsigned part[2] = {0, 0};
	for (int i = 0; i < 2; i++) {
		size_t n = 0;
		while (v[n] >= '0' && v[n] <= '9')
			part[i] = part[i] * 10 + (unsigned)(v[n++] - '0');
		if (n == 0 || n > 3 || v[n] != (i == 0 ? '.' : '\0'))
			return false;
		v += n + 1;
	}
	*ret_major = part[0];
	*ret_minor = part[1];
	return true;
}

static int optional_string(json_t *root, const char *key, char **ret, strata_error *err)
{
	json_t *v = json_object_get(root, key);
	if (!v)
		return 0;
	if (!json_is_string(v))
		return error_setf(err, -EINVAL, "thin.json: \"%s\" is not a string", key);
	*ret = strdup(json_string_value(v));
	return *ret ? 0 : -ENOMEM;
}

static int check_keys(json_t *obj, const char *const *known, const char *where, strata_error *err)
{
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v)
	{
		bool ok = false;
		for (const char *const *k = known; *k && !ok; k++)
			ok = !strcmp(*k, key);
		if (!ok)
			return error_setf(err, -EINVAL,
					  "thin.json: %s has an unknown key \"%s\" (version 1.0 defines no such key)",
					  where, QUOTE(key));
	}
	return 0;
}

static int parse_layer(json_t *l, size_t i, bool strict, thin_layer *ret, strata_error *err)
{
	static const char *const known[] = {"digest", "url", NULL};
	char where[32];
	snprintf(where, sizeof(where), "layers[%zu]", i);
	if (!json_is_object(l))
		return error_setf(err, -EINVAL, "thin.json: %s is not an object", where);
	int r = strict ? check_keys(l, known, where, err) : 0;
	if (r < 0)
		return r;
	json_t *digest = json_object_get(l, "digest"), *url = json_object_get(l, "url");
	if (!json_is_string(digest))
		return error_setf(err, -EINVAL, "thin.json: %s has no digest string", where);
	if (!thin_digest_parse(json_string_value(digest), ret->digest))
		return error_setf(err, -EINVAL, "thin.json: %s: digest \"%s\" is not a sha256 (64 hex digits)", where,
				  QUOTE(json_string_value(digest)));
	if (!json_is_string(url))
		return error_setf(err, -EINVAL, "thin.json: %s has no url string", where);
	const char *why = NULL;
	r = thin_url_parse(json_string_value(url), &ret->repo, &ret->path, &why);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return error_setf(err, -EINVAL, "thin.json: %s: url \"%s\": %s", where, QUOTE(json_string_value(url)),
				  why);
	if (layout_digest_mismatch(ret->path, ret->digest))
		return error_setf(err, -EINVAL, "thin.json: %s: url \"%s\" names another digest than sha256:%s", where,
				  QUOTE(json_string_value(url)), ret->digest);
	return 0;
}

static int parse_root(json_t *root, thin_image *img, strata_error *err)
{
	static const char *const known[] = {"version", "min_version", "origin", "layers", "comment", NULL};
	if (!json_is_object(root))
		return error_setf(err, -EINVAL, "thin.json: not a JSON object");
	json_t *version = json_object_get(root, "version");
	if (!json_is_string(version))
		return error_setf(err, -EINVAL, "thin.json: no version string");
	int r = optional_string(root, "version", &img->version, err);
	r = r < 0 ? r : optional_string(root, "min_version", &img->min_version, err);
	r = r < 0 ? r : optional_string(root, "origin", &img->origin, err);
	r = r < 0 ? r : optional_string(root, "comment", &img->comment, err);
	if (r < 0)
		return r;

	/* A newer writer may add keys that a 1.0 reader can skip: it says so
	 * with min_version.  Otherwise only 1.0 is understood. */
	unsigned ma, mi, mma, mmi;
	bool strict = !strcmp(img->version, THIN_VERSION);
	if (!strict) {
		if (!version_parse(img->version, &ma, &mi))
			return error_setf(err, -EINVAL, "thin.json: version \"%s\" is not MAJOR.MINOR",
					  QUOTE(img->version));
		if (!img->min_version || !version_parse(img->min_version, &mma, &mmi) || mma != 1 || mmi != 0 ||
		    ma < 1 || (ma == 1 && mi == 0))
			return error_setf(err, -EINVAL,
					  "thin.json: version \"%s\" is not supported (this strata reads version 1.0, "
					  "and min_version does not say it can read this one)",
					  QUOTE(img->version));
	} else if (img->min_version && strcmp(img->min_version, THIN_VERSION) != 0) {
		return error_setf(err, -EINVAL, "thin.json: min_version \"%s\" is newer than version 1.0",
				  QUOTE(img->min_version));
	}
	if (strict) {
		r = check_keys(root, known, "the file", err);
		if (r < 0)
			return r;
	}

	json_t *layers = json_object_get(root, "layers");
	if (!json_is_array(layers))
		return error_setf(err, -EINVAL, "thin.json: no \"layers\" array");
	size_t n = json_array_size(layers);
	if (n == 0)
		return error_setf(err, -EINVAL, "thin.json: the layers array is empty");
	if (n > THIN_MAX_LAYERS)
		return error_setf(err, -EINVAL, "thin.json: %zu layers, more than overlay's %d", n, THIN_MAX_LAYERS);
	img->layers = calloc(n, sizeof(*img->layers));
	if (!img->layers)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		r = parse_layer(json_array_get(layers, i), i, strict, &img->layers[i], err);
		img->n = i + 1; /* what is allocated, for release */
		if (r < 0)
			return r;
		for (size_t j = 0; j < i; j++)
			if (!strcmp(img->layers[j].digest, img->layers[i].digest))
				return error_setf(err, -EINVAL,
						  "thin.json: layers[%zu] repeats the digest of layers[%zu]", i, j);
	}
	return 0;
}

int thin_parse(const char *text, size_t len, thin_image *ret, strata_error *err)
{
	json_error_t jerr;
	json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return error_setf(err, -EINVAL, "thin.json: line %d column %d: %s", jerr.line, jerr.column,
				  QUOTE(jerr.text));
	_cleanup_(thin_image_releasep) thin_image img = {0};
	int r = parse_root(root, &img, err);
	json_decref(root);
	if (r < 0)
		return r;
	*ret = img;
	img = (thin_image){0};
	return 0;
}

int thin_format(const thin_image *img, char **ret_text)
{
	json_t *root = json_object(), *layers = json_array();
	int r = root && layers ? 0 : -ENOMEM;
	if (!r && json_object_set_new(root, "version", json_string(img->version ? img->version : THIN_VERSION)) < 0)
		r = -ENOMEM;
	if (!r && img->min_version && json_object_set_new(root, "min_version", json_string(img->min_version)) < 0)
		r = -ENOMEM;
	if (!r && img->origin && json_object_set_new(root, "origin", json_string(img->origin)) < 0)
		r = -ENOMEM;
	for (size_t i = 0; !r && i < img->n; i++) {
		_cleanup_free_ char *url = NULL;
		if (asprintf(&url, THIN_URL_SCHEME "%s/%s", img->layers[i].repo, img->layers[i].path) < 0) {
			url = NULL;
			r = -ENOMEM;
		} else if (json_array_append_new(
				   layers, json_pack("{s:s,s:s}", "digest", img->layers[i].digest, "url", url)) < 0) {
			r = -EINVAL; /* not UTF-8: thin_image_push refuses such paths */
		}
	}
	if (!r && json_object_set(root, "layers", layers) < 0)
		r = -ENOMEM;
	if (!r && img->comment && json_object_set_new(root, "comment", json_string(img->comment)) < 0)
		r = -ENOMEM;
	char *text = r ? NULL : json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(layers);
	json_decref(root);
	if (!text)
		return -ENOMEM;
	size_t n = strlen(text);
	char *out = realloc(text, n + 2);
	if (!out) {
		free(text);
		return -ENOMEM;
	}
	out[n] = '\n';
	out[n + 1] = '\0';
	*ret_text = out;
	return 0;
}

static int dup_or_null(const char *s, char **ret)
{
	*ret = NULL;
	if (s && !(*ret = strdup(s)))
		return -ENOMEM;
	return 0;
}

int thin_image_copy(const thin_image *src, thin_image *ret)
{
	_cleanup_(thin_image_releasep) thin_image img = {0};
	if (dup_or_null(src->version, &img.version) < 0 || dup_or_null(src->min_version, &img.min_version) < 0 ||
	    dup_or_null(src->origin, &img.origin) < 0 || dup_or_null(src->comment, &img.comment) < 0)
		return -ENOMEM;
	img.layers = calloc(src->n ? src->n : 1, sizeof(*img.layers));
	if (!img.layers)
		return -ENOMEM;
	for (size_t i = 0; i < src->n; i++) {
		thin_layer *l = &img.layers[i];
		img.n = i + 1;
		memcpy(l->digest, src->layers[i].digest, sizeof(l->digest));
		if (!(l->repo = strdup(src->layers[i].repo)) || !(l->path = strdup(src->layers[i].path)))
			return -ENOMEM;
	}
	*ret = img;
	img = (thin_image){0};
	return 0;
}

int thin_image_push(thin_image *img, const char *digest, const char *repo, const char *path)
{
	char hex[THIN_DIGEST_LEN + 1];
	if (!thin_digest_parse(digest, hex) || !thin_repo_valid(repo) || !thin_path_valid(path) ||
	    layout_digest_mismatch(path, hex))
		return -EINVAL;
	for (size_t i = 0; i < img->n; i++)
		if (!strcmp(img->layers[i].digest, hex))
			return -EEXIST;
	if (img->n >= THIN_MAX_LAYERS)
		return -E2BIG;
	thin_layer *layers = realloc(img->layers, (img->n + 1) * sizeof(*layers));
	if (!layers)
		return -ENOMEM;
	img->layers = layers;
	thin_layer *l = &layers[img->n];
	*l = (thin_layer){0};
	memcpy(l->digest, hex, sizeof(hex));
	l->repo = strdup(repo);
	l->path = strdup(path);
	if (!l->repo || !l->path) {
		free(l->repo);
		free(l->path);
		return -ENOMEM;
	}
	img->n++;
	return 0;
}

int thin_read_at(int dirfd, thin_image *ret, strata_error *err)
{
	_cleanup_close_ int fd = openat(dirfd, THIN_FILE, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		return error_set(err, negerrno(), "open " THIN_FILE);
	}
	struct stat st;
	if (fstat(fd, &st) < 0)
		return error_set(err, negerrno(), "stat " THIN_FILE);
	if (!S_ISREG(st.st_mode))
		return error_setf(err, -EINVAL, THIN_FILE " is not a regular file");
	if (st.st_size > (off_t)THIN_MAX_BYTES)
		return error_setf(err, -EFBIG, THIN_FILE " is %lld bytes, more than the %u allowed",
				  (long long)st.st_size, THIN_MAX_BYTES);
	size_t size = (size_t)st.st_size;
	_cleanup_free_ char *buf = malloc(size ? size : 1);
	if (!buf)
		return -ENOMEM;
	size_t got = 0;
	while (got < size) {
		ssize_t n = read(fd, buf + got, size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return error_set(err, negerrno(), "read " THIN_FILE);
		if (n == 0)
			break;
		got += (size_t)n;
	}
	int r = thin_parse(buf, got, ret, err);
	return r < 0 ? r : 1;
}
