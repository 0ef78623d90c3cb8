/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Container images from docker save archives, OCI layouts and OCI archives
 * (see image.h): which image, its config and its layers, from manifest.json
 * or index.json; every JSON file and blob checked against the digest and
 * size its name or descriptor gives.  The files themselves come from
 * archive.c.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "tar/tar.h"
#include "thin/archive.h"
#include "thin/image.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

#define BLOB_PREFIX "blobs/sha256/"

/* The annotations that name an image in an OCI index. */
#define REF_NAME_ANNOTATION	   "org.opencontainers.image.ref.name"
#define CONTAINERD_NAME_ANNOTATION "io.containerd.image.name"

int image_sha256(const void *data, size_t len, char ret[THIN_DIGEST_LEN + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1 || n != THIN_DIGEST_LEN / 2)
		return -EIO;
	for (unsigned i = 0; i < n; i++)
		snprintf(ret + 2 * i, 3, "%02x", md[i]);
	return 0;
}

static bool is_hex64(const char *s, size_t len)
{
	if (len != THIN_DIGEST_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

/* The sha256 an entry's name says it has: blobs/sha256/<hex> and a
 * classic docker save's config, <hex>.json. */
static bool digest_of_name(const char *name, char ret[THIN_DIGEST_LEN + 1])
{
	const char *hex = NULL;
	size_t len = strlen(name);
	if (!strncmp(name, BLOB_PREFIX, sizeof(BLOB_PREFIX) - 1) &&
	    is_hex64(name + sizeof(BLOB_PREFIX) - 1, len - (sizeof(BLOB_PREFIX) - 1)))
		hex = name + sizeof(BLOB_PREFIX) - 1;
	else if (len == THIN_DIGEST_LEN + 5 && !strcmp(name + THIN_DIGEST_LEN, ".json") &&
		 is_hex64(name, THIN_DIGEST_LEN))
		hex = name;
	if (!hex)
		return false;
	memcpy(ret, hex, THIN_DIGEST_LEN);
	ret[THIN_DIGEST_LEN] = '\0';
	return true;
}

/* "sha256:<64 lowercase hex>" (OCI's digest grammar for sha256) into hex. */
static int parse_digest(const char *s, char ret[THIN_DIGEST_LEN + 1], const char **ret_why)
{
	if (!s) {
		*ret_why = "no digest";
		return -EINVAL;
	}
	if (strncmp(s, "sha256:", 7) != 0) {
		*ret_why = strchr(s, ':') ? "not a sha256 digest (the only algorithm supported)"
					  : "not a digest (ALGORITHM:HEX)";
		return -EINVAL;
	}
	if (!is_hex64(s + 7, strlen(s + 7))) {
		*ret_why = "not 64 lowercase hex digits after sha256:";
		return -EINVAL;
	}
	memcpy(ret, s + 7, THIN_DIGEST_LEN + 1);
	return 0;
}

/* ---- references ---- */

static bool is_lower_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* One path component of a repository name: [a-z0-9]+ joined by ".", "_",
 * "__" or runs of "-". */
static bool name_component_valid(const char *s, size_t n)
{
	if (n == 0 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_lower_alnum(s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
			return false;
	return true;
}

static bool domain_valid(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!is_lower_alnum(c) && !(c >= 'A' && c <= 'Z') && c != '.' && c != '-' && c != ':')
			return false;
	}
	return true;
}

bool image_ref_valid(const char *ref)
{
	size_t len = strlen(ref);
	const char *slash = strrchr(ref, '/');
	const char *colon = strrchr(slash ? slash : ref, ':');
	if (len > 255 || !colon || colon == ref)
		return false;
	/* The tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}. */
	const char *tag = colon + 1;
	size_t tl = strlen(tag);
	if (tl == 0 || tl > 128 || tag[0] == '.' || tag[0] == '-')
		return false;
	for (size_t i = 0; i < tl; i++)
		if (!is_lower_alnum(tag[i]) && !(tag[i] >= 'A' && tag[i] <= 'Z') && tag[i] != '_' && tag[i] != '.' &&
		    tag[i] != '-')
			return false;
	/* The name: components; the first may be a registry host[:port]. */
	size_t nl = (size_t)(colon - ref);
	const char *p = ref, *end = ref + nl;
	bool first = true;
	while (p <= end) {
		const char *e = memchr(p, '/', (size_t)(end - p));
		if (!e)
			e = end;
		size_t n = (size_t)(e - p);
		bool host = first && e != end &&
			    (memchr(p, '.', n) || memchr(p, ':', n) || (n == 9 && !memcmp(p, "localhost", 9)));
		if (host ? !domain_valid(p, n) : !name_component_valid(p, n))
			return false;
		first = false;
		p = e + 1;
	}
	return true;
}

/* NAME means NAME:latest, as for docker. */
static int normalize_ref(const char *ref, char **ret)
{
	const char *slash = strrchr(ref, '/');
	bool tagged = strchr(slash ? slash : ref, ':') != NULL;
	if (asprintf(ret, "%s%s", ref, tagged ? "" : ":latest") < 0) {
		*ret = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* A whole small file, checked against the digest its name or `digest`
 * gives, and against `size` (-1: any). */
static int read_small(image_source *s, const char *name, const char *digest, int64_t size, char **ret, size_t *ret_len,
		      strata_error *err)
{
	image_stream st;
	int r = image_stream_open(s, name, &st, err);
	if (r < 0)
		return r;
	if (st.size > IMAGE_JSON_MAX) {
		image_stream_close(&st);
		return error_setf(err, -EFBIG, "%s has %" PRIu64 " bytes, more than the %u allowed", QUOTE(name),
				  st.size, IMAGE_JSON_MAX);
	}
	/* One byte more than its size: a file that grows is caught. */
	size_t cap = (size_t)st.size + 1;
	_cleanup_free_ char *buf = malloc(cap + 1);
	size_t len = 0;
	if (!buf)
		r = -ENOMEM;
	while (r >= 0) {
		ssize_t n = image_stream_read(&st, buf + len, cap - len, err);
		if (n < 0)
			r = (int)n;
		else if (n == 0)
			break;
		else if ((len += (size_t)n) > st.size)
			r = error_setf(err, -EIO, "%s changed while it was read", QUOTE(name));
	}
	image_stream_close(&st);
	if (r < 0)
		return r;
	buf[len] = '\0';
	char want[THIN_DIGEST_LEN + 1], got[THIN_DIGEST_LEN + 1];
	if (size >= 0 && (uint64_t)size != len)
		return error_setf(err, -EBADMSG, "%s has %zu bytes, its descriptor says %" PRId64, QUOTE(name), len,
				  size);
	if (digest || digest_of_name(name, want)) {
		if (image_sha256(buf, len, got) < 0)
			return -EIO;
		if (strcmp(got, digest ? digest : want) != 0)
			return error_setf(err, -EBADMSG, "%s has sha256:%s, not the sha256:%s %s", QUOTE(name), got,
					  digest ? digest : want, digest ? "its descriptor says" : "its name says");
	}
	char *shrunk = realloc(buf, len + 1);
	*ret = shrunk ? shrunk : buf;
	buf = NULL;
	if (ret_len)
		*ret_len = len;
	return 0;
}

static int read_json(image_source *s, const char *name, const char *digest, int64_t size, json_t **ret,
		     strata_error *err)
{
	_cleanup_free_ char *text = NULL;
	size_t len = 0;
	int r = read_small(s, name, digest, size, &text, &len, err);
	if (r < 0)
		return r;
	json_error_t jerr;
	json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j)
		return error_setf(err, -EINVAL, "%s: not valid JSON: %s (line %d)", QUOTE(name), jerr.text, jerr.line);
	*ret = j;
	return 0;
}

/* ---- choosing the image ---- */

typedef struct candidate {
	char **names;			    /* what it is called (strv) */
	char *label;			    /* for messages */
	json_t *docker;			    /* docker save: its manifest.json element (borrowed) */
	char manifest[THIN_DIGEST_LEN + 1]; /* OCI: its manifest's digest */
	int64_t manifest_size;
} candidate;

typedef struct candidates {
	size_t n, alloc;
	candidate *items;
} candidates;

static void candidates_release(candidates *c)
{
	for (size_t i = 0; i < c->n; i++) {
		strv_free(c->items[i].names);
		free(c->items[i].label);
	}
	free(c->items);
	*c = (candidates){0};
}

static int strv_push(char ***v, const char *s)
{
	size_t n = strv_length(*v);
	char **nv = realloc(*v, (n + 2) * sizeof(char *));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[n] = strdup(s);
	nv[n + 1] = NULL;
	return nv[n] ? 0 : -ENOMEM;
}

static bool strv_has(char *const *v, const char *s)
{
	for (size_t i = 0; v && v[i]; i++)
		if (!strcmp(v[i], s))
			return true;
	return false;
}

/* "a, b, c" of the candidates' labels, for an error. */
static char *list_candidates(const candidates *c)
{
	strbuf sb = {0};
	for (size_t i = 0; i < c->n; i++)
		if (strbuf_appendf(&sb, "%s%s", i ? ", " : "", c->items[i].label) < 0) {
			strbuf_release(&sb);
			return NULL;
		}
	return strbuf_detach(&sb);
}

static int choose(const candidates *c, const char *tag, size_t *ret, strata_error *err)
{
	if (c->n == 0)
		return error_setf(err, -ENOENT, "it holds no image");
	if (c->n == 1) {
		*ret = 0;
		return 0;
	}
	_cleanup_free_ char *list = list_candidates(c);
	if (!list)
		return -ENOMEM;
	if (!tag)
		return error_setf(err, -EINVAL, "it holds %zu images (%s): choose one with --tag", c->n, list);
	_cleanup_free_ char *norm = NULL;
	if (normalize_ref(tag, &norm) < 0)
		return -ENOMEM;
	size_t found = SIZE_MAX;
	for (size_t i = 0; i < c->n; i++) {
		if (!strv_has(c->items[i].names, tag) && !strv_has(c->items[i].names, norm))
			continue;
		if (found != SIZE_MAX)
			return error_setf(err, -EINVAL, "it holds more than one image named %s (%s)", QUOTE(tag), list);
		found = i;
	}
	if (found == SIZE_MAX)
		return error_setf(err, -ENOENT, "it holds no image named %s, only %s", QUOTE(tag), list);
	*ret = found;
	return 0;
}

/* ---- docker save: manifest.json ---- */

static int docker_candidates(json_t *manifest, candidates *c, strata_error *err)
{
	if (!json_is_array(manifest) || json_array_size(manifest) == 0)
		return error_setf(err, -EINVAL, "manifest.json: not a list of images");
	if (json_array_size(manifest) > IMAGE_MANIFESTS_MAX)
		return error_setf(err, -E2BIG, "manifest.json: more than %d images", IMAGE_MANIFESTS_MAX);
	size_t i;
	json_t *m;
	json_array_foreach(manifest, i, m)
	{
		if (!json_is_object(m) || !json_is_string(json_object_get(m, "Config")))
			return error_setf(err, -EINVAL, "manifest.json: image %zu: no Config", i + 1);
		if (grow(&c->items, &c->alloc, c->n, sizeof(*c->items), 4) < 0)
			return -ENOMEM;
		candidate *x = &c->items[c->n++];
		*x = (candidate){.docker = m};
		json_t *tags = json_object_get(m, "RepoTags"), *t;
		size_t k;
		if (tags && !json_is_array(tags) && !json_is_null(tags))
			return error_setf(err, -EINVAL, "manifest.json: image %zu: RepoTags is not a list", i + 1);
		json_array_foreach(tags, k, t)
		{
			if (!json_is_string(t))
				return error_setf(err, -EINVAL, "manifest.json: image %zu: a RepoTag is not a string",
						  i + 1);
			if (strv_push(&x->names, json_string_value(t)) < 0)
				return -ENOMEM;
		}
		const char *config = json_string_value(json_object_get(m, "Config"));
		if (asprintf(&x->label, "%s", x->names ? x->names[0] : QUOTE(config)) < 0) {
			x->label = NULL;
			return -ENOMEM;
		}
	}
	return 0;
}

/* A path in manifest.json: relative and clean, nothing outside the archive. */
static int manifest_path(const char *what, json_t *j, char **ret, strata_error *err)
{
	const char *raw = json_string_value(j), *why = NULL;
	if (!raw)
		return error_setf(err, -EINVAL, "manifest.json: %s is not a string", what);
	int r = tar_clean_name(raw, ret, &why);
	if (r == -EINVAL || (r >= 0 && !**ret)) {
		if (r >= 0) {
			free(*ret);
			*ret = NULL;
		}
		return error_setf(err, -EINVAL, "manifest.json: %s \"%s\": %s", what, QUOTE(raw),
				  why ? why : "the archive's root");
	}
	return r;
}

static int docker_load(image_source *s, const candidate *c, image *img, json_t **ret_config, strata_error *err)
{
	_cleanup_free_ char *config = NULL;
	int r = manifest_path("Config", json_object_get(c->docker, "Config"), &config, err);
	if (r < 0)
		return r;
	r = read_json(s, config, NULL, -1, ret_config, err);
	if (r < 0)
		return r;
	json_t *layers = json_object_get(c->docker, "Layers");
	if (!json_is_array(layers))
		return error_setf(err, -EINVAL, "manifest.json: image %s: Layers is not a list", c->label);
	if (json_array_size(layers) > THIN_MAX_LAYERS)
		return error_setf(err, -E2BIG, "image %s has %zu layers, more than overlay's limit of %d", c->label,
				  json_array_size(layers), THIN_MAX_LAYERS);
	img->layers = calloc(json_array_size(layers) + 1, sizeof(*img->layers));
	if (!img->layers)
		return -ENOMEM;
	size_t i;
	json_t *l;
	json_array_foreach(layers, i, l)
	{
		image_layer *x = &img->layers[img->n_layers++];
		x->blob_size = -1;
		char what[48];
		snprintf(what, sizeof(what), "layer %zu", i + 1);
		r = manifest_path(what, l, &x->name, err);
		if (r < 0)
			return r;
		digest_of_name(x->name, x->blob_digest);
	}
	return 0;
}

/* ---- OCI: index.json, nested indexes, manifests ---- */

typedef struct descriptor {
	char digest[THIN_DIGEST_LEN + 1];
	int64_t size;
	const char *media_type; /* NULL when absent */
} descriptor;

static int parse_descriptor(const char *where, json_t *j, descriptor *ret, strata_error *err)
{
	const char *why = NULL;
	if (!json_is_object(j))
		return error_setf(err, -EINVAL, "%s: not a descriptor", where);
	json_t *size = json_object_get(j, "size"), *mt = json_object_get(j, "mediaType");
	if (parse_digest(json_string_value(json_object_get(j, "digest")), ret->digest, &why) < 0)
		return error_setf(err, -EINVAL, "%s: digest %s: %s", where,
				  json_is_string(json_object_get(j, "digest"))
					  ? QUOTE(json_string_value(json_object_get(j, "digest")))
					  : "(none)",
				  why);
	if (!json_is_integer(size) || json_integer_value(size) < 0)
		return error_setf(err, -EINVAL, "%s: no size", where);
	if (mt && !json_is_string(mt))
		return error_setf(err, -EINVAL, "%s: mediaType is not a string", where);
	ret->size = (int64_t)json_integer_value(size);
	ret->media_type = json_string_value(mt);
	return 0;
}

static void blob_name(const char *digest, char ret[sizeof(BLOB_PREFIX) + THIN_DIGEST_LEN])
{
	snprintf(ret, sizeof(BLOB_PREFIX) + THIN_DIGEST_LEN, BLOB_PREFIX "%s", digest);
}

static int read_blob_json(image_source *s, const descriptor *d, json_t **ret, strata_error *err)
{
	char name[sizeof(BLOB_PREFIX) + THIN_DIGEST_LEN];
	blob_name(d->digest, name);
	if ((uint64_t)d->size > IMAGE_JSON_MAX)
		return error_setf(err, -EFBIG, "%s: its descriptor says %" PRId64 " bytes, more than the %u allowed",
				  name, d->size, IMAGE_JSON_MAX);
	return read_json(s, name, d->digest, d->size, ret, err);
}

static const char *annotation(json_t *desc, const char *key)
{
	return json_string_value(json_object_get(json_object_get(desc, "annotations"), key));
}

/* Not an image: buildkit's attestation manifests, unknown platforms. */
static bool not_an_image(json_t *desc)
{
	const char *type = annotation(desc, "vnd.docker.reference.type");
	const char *os = json_string_value(json_object_get(json_object_get(desc, "platform"), "os"));
	return (type && !strcmp(type, "attestation-manifest")) || (os && !strcmp(os, "unknown"));
}

/* "NAME (os/arch)" or "sha256:HEX (os/arch)", for messages. */
static char *make_label(char *const *names, const char *digest, json_t *platform)
{
	const char *os = json_string_value(json_object_get(platform, "os"));
	const char *arch = json_string_value(json_object_get(platform, "architecture"));
	strbuf sb = {0};
	int r = names ? strbuf_appendf(&sb, "%s", QUOTE(names[0])) : strbuf_appendf(&sb, "sha256:%s", digest);
	if (r >= 0 && os)
		r = strbuf_appendf(&sb, " (%s%s%s)", QUOTE(os), arch ? "/" : "", arch ? QUOTE(arch) : "");
	if (r < 0) {
		strbuf_release(&sb);
		return NULL;
	}
	return strbuf_detach(&sb);
}

/* The images of an OCI layout: index.json and the indexes it names, each
 * looked at once (a queue, not recursion).  A manifest takes the names of
 * the descriptor that led to it. */
static int oci_candidates(image_source *s, json_t *index, candidates *c, strata_error *err)
{
	typedef struct pending {
		json_t *index; /* owned */
		char **names;  /* owned */
		char *label;   /* owned */
	} pending;
	pending *queue = NULL;
	size_t head = 0, n = 0, alloc = 0, seen = 0;
	int r = grow(&queue, &alloc, n, sizeof(*queue), 8);
	if (r < 0)
		return r;
	queue[n++] = (pending){.index = json_incref(index)};
	while (r >= 0 && head < n) {
		pending p = queue[head++];
		json_t *manifests = json_object_get(p.index, "manifests"), *m;
		size_t i;
		if (!json_is_array(manifests))
			r = error_setf(err, -EINVAL, "%s: no manifests list", p.label ? p.label : "index.json");
		json_array_foreach(manifests, i, m)
		{
			if (r < 0)
				break;
			char where[96];
			snprintf(where, sizeof(where), "%s: manifest %zu", p.label ? p.label : "index.json", i + 1);
			descriptor d;
			if ((r = parse_descriptor(where, m, &d, err)) < 0)
				break;
			if (not_an_image(m))
				continue;
			if (++seen > IMAGE_MANIFESTS_MAX) {
				r = error_setf(err, -E2BIG, "more than %d manifests and indexes", IMAGE_MANIFESTS_MAX);
				break;
			}
			/* Its names: its own annotations, else what led here. */
			char **names = NULL;
			const char *keys[] = {CONTAINERD_NAME_ANNOTATION, REF_NAME_ANNOTATION};
			for (size_t k = 0; r >= 0 && k < ELEMENTSOF(keys); k++)
				if (annotation(m, keys[k]) && !strv_has(names, annotation(m, keys[k])))
					r = strv_push(&names, annotation(m, keys[k]));
			for (size_t k = 0; r >= 0 && !names && p.names && p.names[k]; k++)
				r = strv_push(&names, p.names[k]);
			json_t *blob = NULL;
			if (r >= 0)
				r = read_blob_json(s, &d, &blob, err);
			if (r < 0) {
				strv_free(names);
				break;
			}
			_cleanup_free_ char *label = NULL;
			if (r >= 0 && !(label = make_label(names, d.digest, json_object_get(m, "platform"))))
				r = -ENOMEM;
			if (r >= 0 && json_is_array(json_object_get(blob, "manifests"))) {
				/* An index: looked at in its turn. */
				if ((r = grow(&queue, &alloc, n, sizeof(*queue), 8)) >= 0) {
					queue[n++] = (pending){.index = blob, .names = names, .label = TAKE_PTR(label)};
					blob = NULL;
					names = NULL;
				}
			} else if (r >= 0 && json_is_object(blob) && json_object_get(blob, "layers")) {
				if ((r = grow(&c->items, &c->alloc, c->n, sizeof(*c->items), 4)) >= 0) {
					candidate *x = &c->items[c->n++];
					*x = (candidate){
						.names = names, .label = TAKE_PTR(label), .manifest_size = d.size};
					memcpy(x->manifest, d.digest, sizeof(x->manifest));
					names = NULL;
				}
			}
			/* Anything else (an artifact) is not an image. */
			json_decref(blob);
			strv_free(names);
		}
		json_decref(p.index);
		strv_free(p.names);
		free(p.label);
	}
	for (; head < n; head++) {
		json_decref(queue[head].index);
		strv_free(queue[head].names);
		free(queue[head].label);
	}
	free(queue);
	return r;
}

static int oci_load(image_source *s, const candidate *c, image *img, json_t **ret_config, strata_error *err)
{
	descriptor md = {.size = c->manifest_size};
	memcpy(md.digest, c->manifest, sizeof(md.digest));
	json_t *manifest = NULL;
	int r = read_blob_json(s, &md, &manifest, err);
	if (r < 0)
		return r;
	char where[THIN_DIGEST_LEN + 64];
	snprintf(where, sizeof(where), "manifest sha256:%s", c->manifest);
	descriptor cd;
	json_t *layers = json_object_get(manifest, "layers"), *l;
	r = parse_descriptor("config", json_object_get(manifest, "config"), &cd, err);
	if (r >= 0)
		r = read_blob_json(s, &cd, ret_config, err);
	if (r >= 0 && !json_is_array(layers))
		r = error_setf(err, -EINVAL, "%s: layers is not a list", where);
	if (r >= 0 && json_array_size(layers) > THIN_MAX_LAYERS)
		r = error_setf(err, -E2BIG, "image %s has %zu layers, more than overlay's limit of %d", c->label,
			       json_array_size(layers), THIN_MAX_LAYERS);
	if (r >= 0 && !(img->layers = calloc(json_array_size(layers) + 1, sizeof(*img->layers))))
		r = -ENOMEM;
	size_t i;
	json_array_foreach(layers, i, l)
	{
		if (r < 0)
			break;
		char lw[THIN_DIGEST_LEN + 96];
		snprintf(lw, sizeof(lw), "%s: layer %zu", where, i + 1);
		descriptor d;
		if ((r = parse_descriptor(lw, l, &d, err)) < 0)
			break;
		if (d.media_type && strstr(d.media_type, "encrypted")) {
			r = error_setf(err, -EOPNOTSUPP, "%s: an encrypted layer (%s)", lw, QUOTE(d.media_type));
			break;
		}
		image_layer *x = &img->layers[img->n_layers++];
		char name[sizeof(BLOB_PREFIX) + THIN_DIGEST_LEN];
		blob_name(d.digest, name);
		if (!(x->name = strdup(name))) {
			r = -ENOMEM;
			break;
		}
		memcpy(x->blob_digest, d.digest, sizeof(x->blob_digest));
		x->blob_size = d.size;
	}
	json_decref(manifest);
	return r;
}

/* ---- the image ---- */

static int take_config(image *img, const char *label, json_t *config, strata_error *err)
{
	img->config = config;
	json_t *rootfs = json_object_get(config, "rootfs"), *ids = json_object_get(rootfs, "diff_ids"), *id;
	const char *type = json_string_value(json_object_get(rootfs, "type"));
	if (!json_is_object(config) || !json_is_array(ids) || !type || strcmp(type, "layers") != 0)
		return error_setf(err, -EINVAL, "the config of %s has no rootfs of type layers with diff_ids", label);
	if (json_array_size(ids) != img->n_layers)
		return error_setf(err, -EINVAL, "the config of %s lists %zu diff_ids for %zu layers", label,
				  json_array_size(ids), img->n_layers);
	size_t i;
	json_array_foreach(ids, i, id)
	{
		const char *why = NULL;
		if (parse_digest(json_string_value(id), img->layers[i].diff_id, &why) < 0)
			return error_setf(err, -EINVAL, "the config of %s: diff_id %zu: %s", label, i + 1, why);
	}
	return 0;
}

/* Every layer blob is there, and has the size its descriptor says. */
static int check_blobs(image_source *s, const image *img, strata_error *err)
{
	for (size_t i = 0; i < img->n_layers; i++) {
		const image_layer *l = &img->layers[i];
		image_stream st;
		int r = image_stream_open(s, l->name, &st, err);
		if (r < 0)
			return error_prefix(err, r, "layer %zu", i + 1);
		uint64_t size = st.size;
		image_stream_close(&st);
		if (l->blob_size >= 0 && size != (uint64_t)l->blob_size)
			return error_setf(err, -EBADMSG,
					  "layer %zu: %s has %" PRIu64 " bytes, its descriptor says %" PRId64, i + 1,
					  QUOTE(l->name), size, l->blob_size);
	}
	return 0;
}

void image_release(image *img)
{
	for (size_t i = 0; img->layers && i < img->n_layers; i++)
		free(img->layers[i].name);
	free(img->layers);
	free(img->ref);
	strv_free(img->tags);
	json_decref(img->config);
	image_source_free(img->src);
	*img = (image){0};
}

int image_open(const char *path, int tmp_dir_fd, const char *tag, image *ret, strata_error *err)
{
	image img = {0};
	candidates c = {0};
	json_t *top = NULL, *config = NULL;
	int r = image_source_open(path, tmp_dir_fd, &img.src, err);
	if (r < 0)
		return r;
	image_source *s = img.src;
	bool docker = image_source_has(s, "manifest.json");
	if (docker) {
		img.format = "docker save";
		r = read_json(s, "manifest.json", NULL, -1, &top, err);
		if (r >= 0)
			r = docker_candidates(top, &c, err);
	} else if (image_source_has(s, "index.json")) {
		img.format = image_source_is_dir(s) ? "OCI layout" : "OCI archive";
		json_t *layout = NULL;
		r = read_json(s, "oci-layout", NULL, -1, &layout, err);
		const char *v = json_string_value(json_object_get(layout, "imageLayoutVersion"));
		if (r >= 0 && (!v || strncmp(v, "1.", 2) != 0))
			r = error_setf(err, -EINVAL, "oci-layout: imageLayoutVersion %s is not 1.x",
				       v ? QUOTE(v) : "missing");
		json_decref(layout);
		if (r >= 0)
			r = read_json(s, "index.json", NULL, -1, &top, err);
		if (r >= 0)
			r = oci_candidates(s, top, &c, err);
	} else {
		r = error_setf(err, -EINVAL,
			       "not an image: no manifest.json (docker save) or index.json (OCI layout) in it");
	}
	size_t k = 0;
	if (r >= 0)
		r = choose(&c, tag, &k, err);
	if (r >= 0)
		r = docker ? docker_load(s, &c.items[k], &img, &config, err)
			   : oci_load(s, &c.items[k], &img, &config, err);
	if (r >= 0) {
		r = take_config(&img, c.items[k].label, config, err);
		config = NULL;
	}
	if (r >= 0)
		r = check_blobs(s, &img, err);
	/* Its names that docker load takes as tags. */
	for (size_t i = 0; r >= 0 && c.items[k].names && c.items[k].names[i]; i++)
		if (image_ref_valid(c.items[k].names[i]) && !strv_has(img.tags, c.items[k].names[i]))
			r = strv_push(&img.tags, c.items[k].names[i]);
	if (r >= 0 && !(img.ref = strdup(c.items[k].names ? c.items[k].names[0] : c.items[k].label)))
		r = -ENOMEM;
	candidates_release(&c);
	json_decref(top);
	json_decref(config);
	if (r < 0) {
		image_release(&img);
		return r;
	}
	*ret = img;
	return 0;
}

/* ---- layers ---- */

typedef struct blob_reader {
	image_source *s;
	image_stream st;
	EVP_MD_CTX *md;
	uint64_t bytes;
	int error; /* the stream's, when libarchive stops */
	strata_error *err;
	char *buf;
} blob_reader;

static la_ssize_t blob_read(struct archive *a, void *data, const void **ret_buf)
{
	blob_reader *b = data;
	ssize_t n = image_stream_read(&b->st, b->buf, IMAGE_IO_BLOCK, b->err);
	if (n < 0) {
		b->error = (int)n;
		archive_set_error(a, EIO, "%s", b->err ? b->err->message : "read error");
		return -1;
	}
	if (n > 0 && EVP_DigestUpdate(b->md, b->buf, (size_t)n) != 1) {
		b->error = -EIO;
		archive_set_error(a, EIO, "sha256");
		return -1;
	}
	b->bytes += (uint64_t)n;
	*ret_buf = b->buf;
	return n;
}

static int hex_final(EVP_MD_CTX *md, char ret[THIN_DIGEST_LEN + 1])
{
	unsigned char h[EVP_MAX_MD_SIZE];
	unsigned n = 0;
	if (EVP_DigestFinal_ex(md, h, &n) != 1 || n != THIN_DIGEST_LEN / 2)
		return -EIO;
	for (unsigned i = 0; i < n; i++)
		snprintf(ret + 2 * i, 3, "%02x", h[i]);
	return 0;
}

int image_layer_read(image *img, size_t i, int out_fd, char ret_digest[THIN_DIGEST_LEN + 1], uint64_t *ret_size,
		     strata_error *err)
{
	image_source *s = img->src;
	const image_layer *l = &img->layers[i];
	blob_reader b = {.s = s, .st = IMAGE_STREAM_INIT, .err = err};
	EVP_MD_CTX *tar_md = EVP_MD_CTX_new();
	b.md = EVP_MD_CTX_new();
	b.buf = malloc(IMAGE_IO_BLOCK);
	char *out = malloc(IMAGE_IO_BLOCK);
	struct archive *a = archive_read_new();
	int r = 0;
	if (!tar_md || !b.md || !b.buf || !out || !a || image_support_filters(a) < 0 ||
	    archive_read_support_format_raw(a) != ARCHIVE_OK || EVP_DigestInit_ex(b.md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestInit_ex(tar_md, EVP_sha256(), NULL) != 1)
		r = -ENOMEM;
	if (r >= 0)
		r = image_stream_open(s, l->name, &b.st, err);
	uint64_t size = 0;
	struct archive_entry *e;
	/* An empty blob is an empty tar stream: libarchive would see no
	 * format in it. */
	if (r >= 0 && b.st.size > 0) {
		if (archive_read_open(a, &b, NULL, blob_read, NULL) != ARCHIVE_OK ||
		    archive_read_next_header(a, &e) != ARCHIVE_OK)
			r = b.error ? b.error
				    : error_setf(err, -EINVAL, "%s: %s", QUOTE(l->name), archive_error_string(a));
		while (r >= 0) {
			la_ssize_t n = archive_read_data(a, out, IMAGE_IO_BLOCK);
			if (n == 0)
				break;
			if (n < 0) {
				r = b.error ? b.error
					    : error_setf(err, -EINVAL, "decompress %s: %s", QUOTE(l->name),
							 archive_error_string(a));
				break;
			}
			size += (uint64_t)n;
			if (size > IMAGE_LAYER_MAX)
				r = error_setf(err, -EFBIG, "%s decompresses to more than %llu GiB", QUOTE(l->name),
					       (unsigned long long)(IMAGE_LAYER_MAX >> 30));
			else if (EVP_DigestUpdate(tar_md, out, (size_t)n) != 1)
				r = -EIO;
			else if (out_fd >= 0 && (r = image_write_all(out_fd, out, (size_t)n)) < 0)
				error_set(err, r, "write layer %zu to a temp file", i + 1);
		}
		/* What the decompressor did not need is part of the blob. */
		while (r >= 0) {
			const void *ignored;
			la_ssize_t n = blob_read(a, &b, &ignored);
			if (n < 0)
				r = b.error;
			if (n <= 0)
				break;
		}
	}
	char blob[THIN_DIGEST_LEN + 1];
	if (r >= 0 && (hex_final(b.md, blob) < 0 || hex_final(tar_md, ret_digest) < 0))
		r = -EIO;
	if (r >= 0 && l->blob_digest[0] && strcmp(blob, l->blob_digest) != 0)
		r = error_setf(err, -EBADMSG, "%s has sha256:%s, not the sha256:%s its name or descriptor says",
			       QUOTE(l->name), blob, l->blob_digest);
	if (r >= 0 && l->blob_size >= 0 && b.bytes != (uint64_t)l->blob_size)
		r = error_setf(err, -EBADMSG, "%s has %" PRIu64 " bytes, its descriptor says %" PRId64, QUOTE(l->name),
			       b.bytes, l->blob_size);
	archive_read_free(a);
	image_stream_close(&b.st);
	EVP_MD_CTX_free(b.md);
	EVP_MD_CTX_free(tar_md);
	free(b.buf);
	free(out);
	if (r < 0)
		return r;
	*ret_size = size;
	return 0;
}
