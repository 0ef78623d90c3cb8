/* SPDX-License-Identifier: Apache-2.0 */
/*
 * thin verify: a published layer against the manifest its record holds
 * (what the repository was to keep, see convert.h).  Corruption (an entry
 * changed, missing or extra, owners, modes, content) and what would mount
 * wrongly (a .wh. name, which overlay shows as a file) fail; what the
 * repository's filesystem is known to lose (hardlinks, xattrs, opaque
 * marks where it has no xattrs) is reported and does not.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "tar/tar.h"
#include "thin/repo.h"
#include "thin/verify.h"
#include "util/banned.h"
#include "util/dirstack.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

#define MAX_PROBLEMS 10

typedef struct verifier {
	json_t *expect;	 /* path -> row */
	strbuf problems; /* "; "-separated, the first MAX_PROBLEMS */
	size_t n_problems;
	bool opaque_unreadable; /* the filesystem shows no xattrs */
	bool opaque_lost;	/* ...and an opaque dir was published */
} verifier;

static void problem(verifier *v, const char *fmt, ...) _printf_(2, 3);
static void problem(verifier *v, const char *fmt, ...)
{
	if (v->n_problems++ >= MAX_PROBLEMS)
		return;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	strbuf_appendf(&v->problems, "%s%s", v->problems.len ? "; " : "", msg);
}

static int sha256_fd(int fd, char ret[65])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	_cleanup_free_ char *buf = malloc(1 << 20);
	int r = ctx && buf && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 ? 0 : -ENOMEM;
	while (r == 0) {
		ssize_t n = read(fd, buf, 1 << 20);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			r = negerrno();
		if (n <= 0)
			break;
		EVP_DigestUpdate(ctx, buf, (size_t)n);
	}
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	if (r == 0 && EVP_DigestFinal_ex(ctx, md, &len) != 1)
		r = -EIO;
	EVP_MD_CTX_free(ctx);
	for (unsigned i = 0; r == 0 && i < len; i++)
		snprintf(ret + 2 * i, 3, "%02x", md[i]);
	return r;
}

/* The row the tree shows for `name` in dirfd (see convert.h). */
static int actual_row(verifier *v, int dirfd, const char *name, const struct stat *st, char *type, json_t **extra,
		      char sha[65])
{
	*extra = NULL;
	sha[0] = '\0';
	switch (st->st_mode & S_IFMT) {
	case S_IFREG: {
		*type = 'f';
		*extra = json_integer((json_int_t)st->st_size);
		_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return negerrno();
		return sha256_fd(fd, sha);
	}
	case S_IFDIR: {
		*type = 'd';
		_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return negerrno();
		char val[2];
		ssize_t n = fgetxattr(fd, OVERLAY_OPAQUE_XATTR, val, sizeof(val));
		if (n == 1 && val[0] == 'y')
			*type = 'o';
		else if (n < 0 && (errno == ENOTSUP || errno == EOPNOTSUPP))
			v->opaque_unreadable = true;
		return 0;
	}
	case S_IFLNK: {
		*type = 'l';
		char target[PATH_MAX + 1];
		ssize_t n = readlinkat(dirfd, name, target, sizeof(target) - 1);
		if (n < 0)
			return negerrno();
		target[n] = '\0';
		*extra = json_string(target);
		return 0;
	}
	case S_IFCHR:
	case S_IFBLK: {
		*type = S_ISCHR(st->st_mode) ? (st->st_rdev == 0 ? 'w' : 'c') : 'b';
		char dev[32];
		snprintf(dev, sizeof(dev), "%u:%u", major(st->st_rdev), minor(st->st_rdev));
		*extra = json_string(dev);
		return 0;
	}
	case S_IFIFO:
		*type = 'p';
		return 0;
	default:
		*type = '?';
		return 0;
	}
}

/* Compares one entry of the tree with the manifest's row for it. */
static int check_entry(verifier *v, int dirfd, const char *name, const char *path, const struct stat *st)
{
	if (!strncmp(name, WHITEOUT_PREFIX, strlen(WHITEOUT_PREFIX)))
		problem(v, "\"/%s\" is a .wh. name: overlay shows it as a file, so what it should delete stays",
			QUOTE(path));
	if (!v->expect)
		return 0;
	char type, sha[65];
	json_t *extra = NULL;
	int r = actual_row(v, dirfd, name, st, &type, &extra, sha);
	if (r < 0) {
		json_decref(extra);
		problem(v, "\"/%s\" cannot be read: %s", QUOTE(path), strerror(-r));
		return 0;
	}
	json_t *row = json_object_get(v->expect, path);
	if (!row) {
		json_decref(extra);
		problem(v, "\"/%s\" is there but was not published", QUOTE(path));
		return 0;
	}
	const char *etype = json_string_value(json_array_get(row, 1));
	json_int_t emode = json_integer_value(json_array_get(row, 2));
	json_int_t euid = json_integer_value(json_array_get(row, 3)), egid = json_integer_value(json_array_get(row, 4));
	json_t *eextra = json_array_get(row, 5);
	const char *esha = json_string_value(json_array_get(row, 6));
	char t = etype ? etype[0] : '?';
	if (t == 'o' && type == 'd' && v->opaque_unreadable) {
		type = 'o'; /* a known loss, reported once */
		v->opaque_lost = true;
	}
	if (t != type)
		problem(v, "\"/%s\" was published as type %c, is %c", QUOTE(path), t, type);
	else if (type != 'l' && type != 'w' && emode != (json_int_t)(st->st_mode & 07777))
		problem(v, "\"/%s\" mode %04o, published %04o", QUOTE(path), (unsigned)(st->st_mode & 07777),
			(unsigned)emode);
	else if (euid != (json_int_t)st->st_uid || egid != (json_int_t)st->st_gid)
		problem(v, "\"/%s\" owner %u:%u, published %lld:%lld", QUOTE(path), (unsigned)st->st_uid,
			(unsigned)st->st_gid, (long long)euid, (long long)egid);
	else if (extra && !json_equal(extra, eextra))
		problem(v, "\"/%s\" %s differs from what was published", QUOTE(path),
			type == 'f'   ? "size"
			: type == 'l' ? "target"
				      : "device number");
	else if (esha && strcmp(esha, sha) != 0)
		problem(v, "\"/%s\" content differs from what was published", QUOTE(path));
	json_decref(extra);
	/* Seen: what is left at the end is missing. */
	return json_object_del(v->expect, path) < 0 ? -EIO : 0;
}

typedef struct verify_level {
	char **names;
	size_t next, path_len;
} verify_level;

static int walk(verifier *v, int root_fd)
{
	dir_stack dirs = DIR_STACK_INIT(root_fd);
	verify_level *levels = NULL;
	size_t n = 0, alloc = 0;
	strbuf path = {0};
	int r = strbuf_append(&path, "", 0);
	for (int fd = root_fd; r >= 0;) {
		if (fd >= 0) {
			char **names = NULL;
			r = fs_list_dir(fd, &names);
			if (r >= 0 && grow(&levels, &alloc, n, sizeof(*levels), 16) < 0)
				r = -ENOMEM;
			if (r < 0) {
				strv_free(names);
				break;
			}
			levels[n++] = (verify_level){names, 0, path.len};
			fd = -1;
		}
		if (!n)
			break;
		verify_level *l = &levels[n - 1];
		strbuf_truncate(&path, l->path_len);
		const char *name = l->names[l->next];
		if (!name) {
			strv_free(l->names);
			if (--n > 0)
				r = dir_stack_pop(&dirs);
			continue;
		}
		l->next++;
		int dfd = dir_stack_fd(&dirs);
		struct stat st;
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = negerrno();
			break;
		}
		r = strbuf_push_name(&path, name);
		if (r >= 0)
			r = check_entry(v, dfd, name, path.buf, &st);
		if (r >= 0 && S_ISDIR(st.st_mode)) {
			fd = dir_stack_push(&dirs, name);
			r = fd < 0 ? fd : 0;
		}
	}
	while (n > 0)
		strv_free(levels[--n].names);
	free(levels);
	dir_stack_release(&dirs);
	strbuf_release(&path);
	return r;
}

int thin_verify_layer(const char *layerfs, char **ret_detail, char **ret_note, strata_error *err)
{
	*ret_detail = *ret_note = NULL;
	size_t n = strlen(layerfs);
	_cleanup_free_ char *record = NULL;
	if (n < sizeof(THIN_LAYERFS) - 1 ||
	    asprintf(&record, "%.*s%s", (int)(n - (sizeof(THIN_LAYERFS) - 1)), layerfs, THIN_RECORD) < 0)
		return -ENOMEM;
	json_error_t jerr;
	json_t *rec = json_load_file(record, 0, &jerr);
	json_t *manifest = json_object_get(rec, "manifest");
	verifier v = {0};
	int r = 0;
	if (json_is_array(manifest)) {
		v.expect = json_object();
		if (!v.expect)
			r = -ENOMEM;
		size_t i;
		json_t *row;
		json_array_foreach(manifest, i, row)
		{
			const char *p = json_string_value(json_array_get(row, 0));
			if (r >= 0 && (!p || json_array_size(row) != 7))
				r = error_setf(err, -EBADMSG, "%s: manifest row %zu is malformed", record, i);
			else if (r >= 0 && json_object_set(v.expect, p, row) < 0)
				r = -ENOMEM;
		}
	}
	_cleanup_close_ int fd = r >= 0 ? open(layerfs, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	if (r >= 0 && fd < 0)
		r = error_set(err, negerrno(), "open %s", layerfs);
	if (r >= 0 && (r = walk(&v, fd)) < 0)
		error_set(err, r, "read %s", layerfs);
	if (r >= 0 && v.expect) {
		const char *p;
		json_t *row;
		json_object_foreach(v.expect, p, row) problem(&v, "\"/%s\" was published but is missing", QUOTE(p));
	}
	/* What the filesystem could not keep: said, not failed. */
	json_t *losses = json_object_get(rec, "losses");
	json_int_t hl = json_integer_value(json_object_get(losses, "hardlinks"));
	json_int_t xa = json_integer_value(json_object_get(losses, "xattrs"));
	strbuf note = {0};
	if (r >= 0 && hl > 0)
		r = strbuf_appendf(&note, "%lld hardlink%s published as separate files", (long long)hl,
				   hl == 1 ? "" : "s");
	if (r >= 0 && xa > 0)
		r = strbuf_appendf(&note, "%sthe xattrs of %lld entr%s not kept", note.len ? "; " : "", (long long)xa,
				   xa == 1 ? "y" : "ies");
	if (r >= 0 && v.opaque_lost)
		r = strbuf_appendf(&note, "%sthe filesystem shows no xattrs: opaque marks unchecked",
				   note.len ? "; " : "");
	if (r >= 0 && !manifest)
		r = strbuf_appendf(&note, "%sno manifest was recorded (%s)", note.len ? "; " : "",
				   rec ? "an older publisher" : "published by something else");
	json_decref(v.expect);
	json_decref(rec);
	if (r < 0) {
		strbuf_release(&v.problems);
		strbuf_release(&note);
		return r;
	}
	if (note.len)
		*ret_note = strbuf_detach(&note);
	if (v.n_problems) {
		if (v.n_problems > MAX_PROBLEMS)
			strbuf_appendf(&v.problems, "; and %zu more", v.n_problems - MAX_PROBLEMS);
		*ret_detail = strbuf_detach(&v.problems);
		return -EBADMSG;
	}
	strbuf_release(&v.problems);
	return manifest ? 0 : -ENODATA;
}
