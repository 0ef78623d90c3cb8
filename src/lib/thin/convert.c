/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A layer tar in the form a repository keeps it, and the manifest of what
 * the repository will then hold (see convert.h).
 *
 * A layer tar says "deleted" with .wh.<name> entries and "opaque" with a
 * <dir>/.wh..wh..opq entry.  overlay reads neither from a lower dir: it
 * wants a 0/0 character device for a whiteout and trusted.overlay.opaque=y
 * on an opaque dir.  A repository filesystem that keeps devices but no
 * xattrs (CernVM-FS: `cvmfs_server ingest` stores .wh. names as plain files
 * and drops xattrs and hardlinks) gets whiteouts as devices, and an opaque
 * dir as a whiteout of every name the layers below hold in it (and in each
 * dir of the layer below it, which overlay would not merge either): right
 * only over those layers, which the caller records.
 *
 * The tar is read twice: once for its names (which dirs are opaque, which
 * names the layer has where), once to write.  Names are checked as apply
 * checks them (tar_clean_name): the input may come from an image archive.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "tar/tar.h"
#include "thin/convert.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

#define COPY_BUF (256 * 1024)

void repo_form_release(repo_form *f)
{
	json_decref(f->manifest);
	*f = (repo_form){0};
}

/* ---- names ---- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Strips the whiteout prefixes: 1 and the victim's path for ".wh.<x>", 2
 * and the dir for "<dir>/.wh..wh..opq", 0 for an ordinary name (*ret the
 * path itself), -EINVAL for ".wh." names that name nothing. */
static int classify(const char *path, char **ret)
{
	const char *base = strrchr(path, '/');
	size_t dirlen = base ? (size_t)(base - path) : 0;
	base = base ? base + 1 : path;
	if (!strncmp(base, WHITEOUT_META, strlen(WHITEOUT_META))) {
		if (strcmp(base, WHITEOUT_OPAQUE) != 0)
			return -EINVAL; /* aufs bookkeeping: never layer content */
		*ret = strndup(path, dirlen);
		return *ret ? 2 : -ENOMEM;
	}
	if (!strncmp(base, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX))) {
		const char *victim = base + strlen(WHITEOUT_PREFIX);
		if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
			return -EINVAL;
		if (asprintf(ret, "%.*s%s%s", (int)dirlen, path, dirlen ? "/" : "", victim) < 0)
			return -ENOMEM;
		return 1;
	}
	*ret = strdup(path);
	return *ret ? 0 : -ENOMEM;
}

/* The layer's names as they will be (whiteouts under their victims'
 * names), sorted; its opaque dirs; and its dirs. */
typedef struct layer_names {
	char **paths;
	size_t n, alloc;
	char **opaque;
	size_t n_opaque, alloc_opaque;
	char **dirs;
	size_t n_dirs, alloc_dirs;
} layer_names;

static void layer_names_release(layer_names *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->paths[i]);
	for (size_t i = 0; i < l->n_opaque; i++)
		free(l->opaque[i]);
	for (size_t i = 0; i < l->n_dirs; i++)
		free(l->dirs[i]);
	free(l->paths);
	free(l->opaque);
	free(l->dirs);
	*l = (layer_names){0};
}

static int push(char ***v, size_t *n, size_t *alloc, char *s)
{
	if (grow(v, alloc, *n, sizeof(char *), 64) < 0) {
		free(s);
		return -ENOMEM;
	}
	(*v)[(*n)++] = s;
	return 0;
}

static int entry_path(struct archive_entry *e, char **ret_clean, strata_error *err)
{
	const char *name = archive_entry_pathname(e);
	const char *why = NULL;
	int r = tar_clean_name(name, ret_clean, &why);
	if (r == -EINVAL)
		return error_setf(err, r, "entry \"%s\": %s", QUOTE(name ? name : ""), why);
	return r;
}

static int collect_names(struct archive *a, layer_names *out, strata_error *err)
{
	for (;;) {
		struct archive_entry *e;
		int ar = archive_read_next_header(a, &e);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN)
			return error_setf(err, -EINVAL, "read the layer tar: %s", archive_error_string(a));
		_cleanup_free_ char *clean = NULL;
		int r = entry_path(e, &clean, err);
		if (r < 0)
			return r;
		if (!*clean)
			continue; /* the root */
		char *p = NULL;
		r = classify(clean, &p);
		if (r == -EINVAL)
			return error_setf(err, r, "entry \"%s\": a whiteout that names nothing", QUOTE(clean));
		if (r == 2 && !*p) {
			free(p); /* an opaque mark on the layer's root: overlay ignores it */
			continue;
		}
		if (r == 0 && archive_entry_filetype(e) == AE_IFDIR) {
			char *d = strdup(p);
			if (!d || push(&out->dirs, &out->n_dirs, &out->alloc_dirs, d) < 0) {
				free(p);
				return -ENOMEM;
			}
		}
		if (r < 0 || (r = push(r == 2 ? &out->opaque : &out->paths, r == 2 ? &out->n_opaque : &out->n,
				       r == 2 ? &out->alloc_opaque : &out->alloc, p)) < 0)
			return r;
	}
	if (out->n > 1)
		qsort(out->paths, out->n, sizeof(char *), cmp_str);
	return 0;
}

/* The direct children the layer has in dir (a prefix scan of the sorted
 * paths; deeper paths imply their first component).  Sorted, unique. */
static int children(const layer_names *l, const char *dir, char ***ret, size_t *ret_n)
{
	size_t dl = strlen(dir);
	char **v = NULL;
	size_t n = 0, alloc = 0;
	for (size_t i = 0; i < l->n; i++) {
		const char *p = l->paths[i];
		if (dl && (strncmp(p, dir, dl) != 0 || p[dl] != '/'))
			continue;
		const char *rest = dl ? p + dl + 1 : p;
		size_t cl = strcspn(rest, "/");
		if (n > 0 && strlen(v[n - 1]) == cl && !strncmp(v[n - 1], rest, cl))
			continue; /* sorted: the same child again */
		char *c = strndup(rest, cl);
		if (!c || push(&v, &n, &alloc, c) < 0) {
			for (size_t k = 0; k < n; k++)
				free(v[k]);
			free(v);
			return -ENOMEM;
		}
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

/* ---- the manifest ---- */

/* A path -> manifest row index map, for hardlinks (open addressing). */
typedef struct path_map {
	size_t alloc, n;
	struct path_slot {
		char *path;
		size_t row;
	} * slots;
} path_map;

static size_t path_hash(const char *s)
{
	size_t h = 1469598103934665603ULL;
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return h;
}

static int path_map_put(path_map *m, const char *path, size_t row)
{
	if (2 * (m->n + 1) > m->alloc) {
		path_map g = {.alloc = m->alloc ? 2 * m->alloc : 64};
		g.slots = calloc(g.alloc, sizeof(*g.slots));
		if (!g.slots)
			return -ENOMEM;
		for (size_t i = 0; i < m->alloc; i++) {
			if (!m->slots[i].path)
				continue;
			size_t k = path_hash(m->slots[i].path) & (g.alloc - 1);
			while (g.slots[k].path)
				k = (k + 1) & (g.alloc - 1);
			g.slots[k] = m->slots[i];
			g.n++;
		}
		free(m->slots);
		*m = g;
	}
	size_t k = path_hash(path) & (m->alloc - 1);
	while (m->slots[k].path && strcmp(m->slots[k].path, path) != 0)
		k = (k + 1) & (m->alloc - 1);
	if (!m->slots[k].path) {
		if (!(m->slots[k].path = strdup(path)))
			return -ENOMEM;
		m->n++;
	}
	m->slots[k].row = row;
	return 0;
}

static const struct path_slot *path_map_get(const path_map *m, const char *path)
{
	if (!m->alloc)
		return NULL;
	size_t k = path_hash(path) & (m->alloc - 1);
	while (m->slots[k].path) {
		if (!strcmp(m->slots[k].path, path))
			return &m->slots[k];
		k = (k + 1) & (m->alloc - 1);
	}
	return NULL;
}

static void path_map_release(path_map *m)
{
	for (size_t i = 0; i < m->alloc; i++)
		free(m->slots[i].path);
	free(m->slots);
	*m = (path_map){0};
}

/* One row: [path, type, mode, uid, gid, extra, sha256]; extra is the
 * size (f), the target (l) or "major:minor" (c, b, w). */
static int manifest_add(json_t *m, const char *path, char type, unsigned mode, uint64_t uid, uint64_t gid,
			json_t *extra, const char *sha)
{
	char t[2] = {type, '\0'};
	json_t *row = json_pack("[s,s,i,I,I,o,s?]", path, t, (int)(mode & 07777), (json_int_t)uid, (json_int_t)gid,
				extra ? extra : json_null(), sha);
	return row && json_array_append_new(m, row) == 0 ? 0 : -ENOMEM;
}

/* ---- writing ---- */

typedef struct form_writer {
	struct archive *a; /* NULL: the manifest only */
	unsigned flags;
	repo_form *f;
	path_map files; /* regular files' rows, for hardlinks to them */
	char *buf;
	strata_error *err;
} form_writer;

static int write_fail(form_writer *w, const char *path)
{
	return error_setf(w->err, archive_errno(w->a) > 0 ? -archive_errno(w->a) : -EIO, "write entry \"%s\": %s",
			  QUOTE(path), archive_error_string(w->a));
}

/* "layerfs/<path>" ("layerfs" for the root). */
static int out_name(const char *path, char **ret)
{
	return asprintf(ret, THIN_LAYERFS "%s%s", *path ? "/" : "", path) < 0 ? -ENOMEM : 0;
}

static int write_header(form_writer *w, struct archive_entry *e, const char *path)
{
	if (!w->a)
		return 0;
	_cleanup_free_ char *name = NULL;
	int r = out_name(path, &name);
	if (r < 0)
		return r;
	archive_entry_set_pathname(e, name);
	int ar = archive_write_header(w->a, e);
	return ar == ARCHIVE_OK || ar == ARCHIVE_WARN ? 0 : write_fail(w, path);
}

/* A whiteout as overlay reads it from a lower dir: a 0/0 char device. */
static int write_whiteout(form_writer *w, const char *path, time_t mtime)
{
	struct archive_entry *e = archive_entry_new();
	if (!e)
		return -ENOMEM;
	archive_entry_set_filetype(e, AE_IFCHR);
	archive_entry_set_perm(e, 0);
	archive_entry_set_rdev(e, makedev(0, 0));
	archive_entry_set_mtime(e, mtime, 0);
	int r = write_header(w, e, path);
	archive_entry_free(e);
	if (r >= 0)
		r = manifest_add(w->f->manifest, path, 'w', 0, 0, 0, json_string("0:0"), NULL);
	return r;
}

/* A regular file's content, block by block (holes fed as zeros, never
 * stored), hashed as it goes. */
static int copy_content(form_writer *w, struct archive *in, const char *path, int64_t size, char ret_sha[65])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(ctx);
		return -ENOMEM;
	}
	static const char zeros[COPY_BUF];
	int64_t at = 0;
	int r = 0;
	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int ar = archive_read_data_block(in, &buf, &len, &off);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) {
			r = error_setf(w->err, -EINVAL, "entry \"%s\": %s", QUOTE(path), archive_error_string(in));
			break;
		}
		for (int pass = 0; pass < 2 && r >= 0; pass++) {
			/* pass 0: the hole before this block; pass 1: the block */
			int64_t n = pass ? (int64_t)len : off - at;
			for (int64_t done = 0; n > 0 && done < n;) {
				size_t k = pass ? (size_t)n : (size_t)(n - done < COPY_BUF ? n - done : COPY_BUF);
				const void *p = pass ? buf : zeros;
				EVP_DigestUpdate(ctx, p, k);
				if (w->a && archive_write_data(w->a, p, k) < 0)
					r = write_fail(w, path);
				done += (int64_t)k;
			}
		}
		at = off + (int64_t)len;
	}
	for (int64_t n; r >= 0 && (n = size - at) > 0; at += n < COPY_BUF ? n : COPY_BUF) {
		size_t k = (size_t)(n < COPY_BUF ? n : COPY_BUF);
		EVP_DigestUpdate(ctx, zeros, k);
		if (w->a && archive_write_data(w->a, zeros, k) < 0)
			r = write_fail(w, path);
	}
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	if (r >= 0 && EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
		r = -EIO;
	EVP_MD_CTX_free(ctx);
	for (unsigned i = 0; r >= 0 && i < mdlen; i++)
		snprintf(ret_sha + 2 * i, 3, "%02x", md[i]);
	return r;
}

static bool has_kept_xattrs(struct archive_entry *e)
{
	const char *k;
	const void *v;
	size_t len;
	archive_entry_xattr_reset(e);
	while (archive_entry_xattr_next(e, &k, &v, &len) == ARCHIVE_OK)
		if (tar_xattr_kept(k))
			return true;
	return false;
}

static int write_entry(form_writer *w, struct archive *in, struct archive_entry *e, const char *path,
		       const layer_names *names)
{
	int r;
	_cleanup_free_ char *p = NULL;
	int kind = *path ? classify(path, &p) : 0;
	if (kind < 0)
		return kind == -EINVAL
			       ? error_setf(w->err, kind, "entry \"%s\": a whiteout that names nothing", QUOTE(path))
			       : kind;
	if (kind == 1)
		return write_whiteout(w, p, archive_entry_mtime(e));
	if (kind == 2)
		return 0; /* its dir's row says opaque; flattened at the end */

	mode_t type = archive_entry_filetype(e);
	const char *link = archive_entry_hardlink(e);
	_cleanup_free_ char *target = NULL;
	if (link) {
		const char *why = NULL;
		r = tar_clean_name(link, &target, &why);
		if (r == -EINVAL)
			return error_setf(w->err, r, "entry \"%s\": hardlink target: %s", QUOTE(path), why);
		if (r < 0)
			return r;
		const struct path_slot *s = path_map_get(&w->files, target);
		if (!s)
			return error_setf(w->err, -EINVAL, "entry \"%s\": hardlink to \"%s\", not a file before it",
					  QUOTE(path), QUOTE(target));
		/* A repository without hardlinks holds another file with
		 * the same content; the manifest says so either way. */
		if (w->flags & REPO_FORM_NO_HARDLINKS)
			w->f->hardlinks++;
		json_t *row = json_deep_copy(json_array_get(w->f->manifest, s->row));
		if (!row || json_array_set_new(row, 0, json_string(path)) < 0 ||
		    json_array_append_new(w->f->manifest, row) < 0)
			return -ENOMEM;
		if (!w->a)
			return 0;
		_cleanup_free_ char *tname = NULL;
		r = out_name(target, &tname);
		if (r < 0)
			return r;
		archive_entry_set_hardlink(e, tname);
		return write_header(w, e, path);
	}

	if (w->flags & REPO_FORM_NO_XATTRS) {
		if (has_kept_xattrs(e))
			w->f->xattrs++;
		archive_entry_xattr_clear(e);
	}
	/* Whatever the tar's names were, the output's are numeric only. */
	archive_entry_copy_uname(e, NULL);
	archive_entry_copy_gname(e, NULL);
	unsigned mode = archive_entry_perm(e);
	int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
	char t = type == AE_IFREG   ? 'f'
		 : type == AE_IFDIR ? 'd'
		 : type == AE_IFLNK ? 'l'
		 : type == AE_IFCHR ? 'c'
		 : type == AE_IFBLK ? 'b'
		 : type == AE_IFIFO ? 'p'
				    : 0;
	if (!t)
		return error_setf(w->err, -EINVAL, "entry \"%s\": unsupported type 0%o", QUOTE(path), (unsigned)type);
	if (t == 'c' && archive_entry_rdev(e) == 0)
		return error_setf(w->err, -EINVAL, "entry \"%s\": a 0/0 character device is a whiteout, not content",
				  QUOTE(path));
	if (t == 'd' && !(w->flags & REPO_FORM_FLATTEN)) {
		/* Kept as overlay's mark where the filesystem has xattrs. */
		for (size_t i = 0; i < names->n_opaque; i++)
			if (!strcmp(names->opaque[i], path))
				t = 'o';
	}
	r = write_header(w, e, path);
	if (r < 0)
		return r;
	char sha[65] = "";
	json_t *extra = NULL;
	if (t == 'f') {
		r = copy_content(w, in, path, archive_entry_size(e), sha);
		if (r < 0)
			return r;
		extra = json_integer((json_int_t)archive_entry_size(e));
		r = path_map_put(&w->files, path, json_array_size(w->f->manifest));
		if (r < 0)
			return r;
	} else if (t == 'l') {
		extra = json_string(archive_entry_symlink(e) ? archive_entry_symlink(e) : "");
	} else if (t == 'c' || t == 'b') {
		char dev[32];
		snprintf(dev, sizeof(dev), "%u:%u", major(archive_entry_rdev(e)), minor(archive_entry_rdev(e)));
		extra = json_string(dev);
	}
	return manifest_add(w->f->manifest, path, t, mode, (uint64_t)uid, (uint64_t)gid, extra, *sha ? sha : NULL);
}

/* The dirs of the layer at or below an opaque dir: overlay merges none of
 * them with the layers below. */
static int replaced_dirs(const layer_names *l, const char *opaque, char ***ret, size_t *ret_n)
{
	char **v = NULL;
	size_t n = 0, alloc = 0;
	char *d = strdup(opaque);
	int r = d ? push(&v, &n, &alloc, d) : -ENOMEM;
	size_t ol = strlen(opaque);
	for (size_t i = 0; r >= 0 && i < l->n; i++) {
		const char *p = l->paths[i];
		if (strncmp(p, opaque, ol) != 0 || p[ol] != '/')
			continue;
		/* Every ancestor of p below the opaque dir is a dir here. */
		for (const char *s = strchr(p + ol + 1, '/'); r >= 0 && s; s = strchr(s + 1, '/')) {
			char *a = strndup(p, (size_t)(s - p));
			r = a ? push(&v, &n, &alloc, a) : -ENOMEM;
		}
	}
	/* And so is every dir entry below it, also one with nothing in it
	 * here (an empty dir over a populated one below). */
	for (size_t i = 0; r >= 0 && i < l->n_dirs; i++) {
		const char *p = l->dirs[i];
		if (strncmp(p, opaque, ol) != 0 || p[ol] != '/')
			continue;
		char *a = strdup(p);
		r = a ? push(&v, &n, &alloc, a) : -ENOMEM;
	}
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			free(v[i]);
		free(v);
		return r;
	}
	qsort(v, n, sizeof(char *), cmp_str);
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (m > 0 && !strcmp(v[m - 1], v[i]))
			free(v[i]);
		else
			v[m++] = v[i];
	}
	*ret = v;
	*ret_n = m;
	return 0;
}

/* The whiteouts that stand for opaque dirs over the layers below. */
static int flatten(form_writer *w, const layer_names *l, const thin_lower *lower)
{
	if (!lower || !lower->list)
		return 0;
	for (size_t o = 0; o < l->n_opaque; o++) {
		char **dirs = NULL;
		size_t nd = 0;
		int r = replaced_dirs(l, l->opaque[o], &dirs, &nd);
		for (size_t i = 0; r >= 0 && i < nd; i++) {
			char **below = NULL, **mine = NULL;
			size_t nm = 0;
			r = lower->list(lower->data, dirs[i], &below);
			if (r < 0) {
				error_set(w->err, r, "list the layers below in \"%s\"", QUOTE(dirs[i]));
				break;
			}
			r = children(l, dirs[i], &mine, &nm);
			for (char **b = below; r >= 0 && b && *b; b++) {
				if (nm && bsearch(b, mine, nm, sizeof(char *), cmp_str))
					continue;
				_cleanup_free_ char *p = NULL;
				if (asprintf(&p, "%s%s%s", dirs[i], *dirs[i] ? "/" : "", *b) < 0)
					r = -ENOMEM;
				else
					r = write_whiteout(w, p, 0);
				w->f->flattened = true;
			}
			strv_free(below);
			for (size_t k = 0; k < nm; k++)
				free(mine[k]);
			free(mine);
		}
		for (size_t i = 0; i < nd; i++)
			free(dirs[i]);
		free(dirs);
		if (r < 0)
			return r;
	}
	return 0;
}

static int open_reader(int fd, struct archive **ret, strata_error *err)
{
	if (lseek(fd, 0, SEEK_SET) < 0)
		return error_set(err, negerrno(), "rewind the layer tar");
	return tar_reader_open_fd(fd, ret, err);
}

static int write_dir_entry(form_writer *w, const char *name, unsigned mode, int64_t uid, int64_t gid, time_t mtime)
{
	struct archive_entry *e = archive_entry_new();
	if (!e)
		return -ENOMEM;
	archive_entry_set_filetype(e, AE_IFDIR);
	archive_entry_set_perm(e, mode);
	archive_entry_set_uid(e, uid);
	archive_entry_set_gid(e, gid);
	archive_entry_set_mtime(e, mtime, 0);
	archive_entry_set_pathname(e, name);
	int ar = archive_write_header(w->a, e);
	archive_entry_free(e);
	return ar == ARCHIVE_OK || ar == ARCHIVE_WARN ? 0 : write_fail(w, name);
}

int repo_form_make(int tar_fd, const thin_lower *lower, unsigned flags, int out_fd, const repo_record *rec,
		   repo_form *ret, strata_error *err)
{
	*ret = (repo_form){.manifest = json_array()};
	if (!ret->manifest)
		return -ENOMEM;
	layer_names names = {0};
	struct archive *in = NULL;
	int r = open_reader(tar_fd, &in, err);
	if (r >= 0)
		r = collect_names(in, &names, err);
	archive_read_free(in);
	in = NULL;

	form_writer w = {.flags = flags, .f = ret, .err = err};
	if (r >= 0 && out_fd >= 0) {
		w.a = archive_write_new();
		if (!w.a || archive_write_set_format_pax_restricted(w.a) != ARCHIVE_OK ||
		    archive_write_add_filter_none(w.a) != ARCHIVE_OK ||
		    archive_write_set_bytes_in_last_block(w.a, 1) != ARCHIVE_OK ||
		    archive_write_open_fd(w.a, out_fd) != ARCHIVE_OK)
			r = w.a ? error_setf(err, -EIO, "tar writer: %s", archive_error_string(w.a)) : -ENOMEM;
	}
	/* The base dir (ingest's -b) and the layer's root, mode and owner as
	 * the tar's root entry says (else 0755 root), written first. */
	bool root_done = false;
	if (r >= 0 && w.a)
		r = write_dir_entry(&w, ".", 0755, 0, 0, 0);
	if (r >= 0)
		r = open_reader(tar_fd, &in, err);
	while (r >= 0) {
		struct archive_entry *e;
		int ar = archive_read_next_header(in, &e);
		if (ar == ARCHIVE_EOF)
			break;
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) {
			r = error_setf(err, -EINVAL, "read the layer tar: %s", archive_error_string(in));
			break;
		}
		_cleanup_free_ char *path = NULL;
		r = entry_path(e, &path, err);
		if (r < 0)
			break;
		if (!*path) {
			if (archive_entry_filetype(e) != AE_IFDIR)
				r = error_setf(err, -EINVAL, "the layer's root entry is not a directory");
			else if (!root_done && w.a)
				r = write_dir_entry(&w, THIN_LAYERFS, archive_entry_perm(e), archive_entry_uid(e),
						    archive_entry_gid(e), archive_entry_mtime(e));
			root_done = true;
			continue;
		}
		if (!root_done && w.a)
			r = write_dir_entry(&w, THIN_LAYERFS, 0755, 0, 0, 0);
		root_done = true;
		if (r >= 0) {
			r = write_entry(&w, in, e, path, &names);
			ret->entries++;
		}
	}
	archive_read_free(in);
	if (r >= 0 && !root_done && w.a) /* an empty layer: an empty layerfs */
		r = write_dir_entry(&w, THIN_LAYERFS, 0755, 0, 0, 0);
	if (r >= 0 && (flags & REPO_FORM_FLATTEN))
		r = flatten(&w, &names, lower);
	if (r >= 0 && w.a && rec) {
		_cleanup_free_ char *text = NULL;
		r = repo_record_text(rec, ret, &text);
		struct archive_entry *e = r >= 0 ? archive_entry_new() : NULL;
		if (r >= 0 && !e)
			r = -ENOMEM;
		if (r >= 0) {
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_perm(e, 0644);
			archive_entry_set_size(e, (la_int64_t)strlen(text));
			archive_entry_set_mtime(e, time(NULL), 0);
			archive_entry_set_pathname(e, THIN_RECORD);
			int ar = archive_write_header(w.a, e);
			if ((ar != ARCHIVE_OK && ar != ARCHIVE_WARN) ||
			    archive_write_data(w.a, text, strlen(text)) != (la_ssize_t)strlen(text))
				r = write_fail(&w, THIN_RECORD);
		}
		archive_entry_free(e);
	}
	if (w.a) {
		if (r >= 0 && archive_write_close(w.a) != ARCHIVE_OK)
			r = write_fail(&w, "(end)");
		archive_write_free(w.a);
	}
	path_map_release(&w.files);
	layer_names_release(&names);
	if (r < 0)
		repo_form_release(ret);
	return r;
}

int repo_record_text(const repo_record *rec, const repo_form *f, char **ret)
{
	char when[32];
	time_t now = time(NULL);
	struct tm tm;
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
	json_t *j = json_pack("{s:s,s:I,s:I,s:s,s:s}", "digest", rec->digest, "tar_size", (json_int_t)rec->tar_size,
			      "entries", (json_int_t)(f ? f->entries : rec->entries), "published", when, "publisher",
			      rec->publisher ? rec->publisher : "strata");
	if (!j)
		return -ENOMEM;
	int r = 0;
	if (f && f->flattened && rec->over && json_object_set_new(j, "over", json_string(rec->over)) < 0)
		r = -ENOMEM;
	if (r >= 0 && f &&
	    json_object_set_new(
		    j, "losses",
		    json_pack("{s:I,s:I}", "hardlinks", (json_int_t)f->hardlinks, "xattrs", (json_int_t)f->xattrs)) < 0)
		r = -ENOMEM;
	if (r >= 0 && f && json_object_set(j, "manifest", f->manifest) < 0)
		r = -ENOMEM;
	char *text = r >= 0 ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!text)
		return -ENOMEM;
	*ret = text;
	return 0;
}
