/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Image files as sets of named entries (see archive.h).
 *
 * An archive is a tar on a seekable fd: one pass records every entry
 * (name, type, size, link target, where its headers start), sorted by name
 * for lookups and to find duplicates; reading an entry starts a reader at
 * its headers.  docker save writes manifest.json last, so nothing can be
 * read in one go.  A directory is read with openat2(RESOLVE_IN_ROOT): its
 * symlinks stay inside it.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "tar/tar.h"
#include "thin/archive.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

#define LINK_HOPS 16

enum entry_type { ENTRY_FILE, ENTRY_DIR, ENTRY_LINK, ENTRY_OTHER };

typedef struct src_entry {
	char *name;   /* cleaned */
	char *target; /* ENTRY_LINK: the entry it names (cleaned); NULL when it leads out */
	uint64_t size;
	int64_t offset; /* where its headers start in the tar */
	enum entry_type type;
} src_entry;

struct image_source {
	char *path; /* as given, for messages */
	bool is_dir;
	bool compressed;
	int fd; /* the directory, or the plain tar */
	src_entry *entries;
	size_t n;
};

/* ---- the source: a directory or a tar ---- */

image_source *image_source_free(image_source *s)
{
	if (!s)
		return NULL;
	for (size_t i = 0; i < s->n; i++) {
		free(s->entries[i].name);
		free(s->entries[i].target);
	}
	free(s->entries);
	if (s->fd >= 0)
		close(s->fd);
	free(s->path);
	free(s);
	return NULL;
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const src_entry *)a)->name, ((const src_entry *)b)->name);
}

static src_entry *entry_find(const image_source *s, const char *name)
{
	src_entry key = {.name = (char *)name};
	return bsearch(&key, s->entries, s->n, sizeof(*s->entries), entry_cmp);
}

/* Where a symlink at `name` pointing to `link` leads, lexically, inside
 * the archive: *ret NULL when it leads out (absolute, or too many ".."). */
static int resolve_link(const char *name, const char *link, char **ret)
{
	*ret = NULL;
	if (!link || link[0] == '/' || !*link)
		return 0;
	strbuf sb = {0};
	const char *slash = strrchr(name, '/');
	int r = strbuf_append(&sb, "", 0);
	if (r >= 0 && slash)
		r = strbuf_append(&sb, name, (size_t)(slash - name));
	for (const char *p = link; r >= 0 && *p;) {
		const char *e = strchrnul(p, '/');
		size_t n = (size_t)(e - p);
		if (n == 2 && p[0] == '.' && p[1] == '.') {
			if (sb.len == 0) {
				strbuf_release(&sb);
				return 0; /* out of the archive */
			}
			char *up = memrchr(sb.buf, '/', sb.len);
			strbuf_truncate(&sb, up ? (size_t)(up - sb.buf) : 0);
		} else if (n > 0 && !(n == 1 && p[0] == '.')) {
			if (sb.len > 0)
				r = strbuf_append(&sb, "/", 1);
			if (r >= 0)
				r = strbuf_append(&sb, p, n);
		}
		p = *e ? e + 1 : e;
	}
	if (r < 0) {
		strbuf_release(&sb);
		return r;
	}
	*ret = strbuf_detach(&sb);
	return *ret ? 0 : -ENOMEM;
}

static struct archive *tar_reader_new(void)
{
	struct archive *a = archive_read_new();
	if (a && archive_read_support_format_tar(a) != ARCHIVE_OK) {
		archive_read_free(a);
		a = NULL;
	}
	return a;
}

int image_support_filters(struct archive *a)
{
	return archive_read_support_filter_gzip(a) == ARCHIVE_OK && archive_read_support_filter_zstd(a) == ARCHIVE_OK &&
			       archive_read_support_filter_xz(a) == ARCHIVE_OK &&
			       archive_read_support_filter_bzip2(a) == ARCHIVE_OK &&
			       archive_read_support_filter_lz4(a) == ARCHIVE_OK
		       ? 0
		       : -ENOMEM;
}

/* Writes all of buf to fd. */
int image_write_all(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return negerrno();
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* A compressed archive, decompressed into an unnamed temp file. */
static int spool(image_source *s, int tmp_dir_fd, strata_error *err)
{
	_cleanup_close_ int tmp = openat(tmp_dir_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (tmp < 0)
		return error_set(err, negerrno(), "create a temp file to decompress the archive into");
	struct archive *a = archive_read_new();
	if (!a || image_support_filters(a) < 0 || archive_read_support_format_raw(a) != ARCHIVE_OK) {
		archive_read_free(a);
		return -ENOMEM;
	}
	_cleanup_free_ char *buf = malloc(IMAGE_IO_BLOCK);
	struct archive_entry *e;
	int r = buf ? 0 : -ENOMEM;
	if (r >= 0 && lseek(s->fd, 0, SEEK_SET) < 0)
		r = error_set(err, negerrno(), "rewind the archive");
	if (r >= 0 && (archive_read_open_fd(a, s->fd, IMAGE_IO_BLOCK) != ARCHIVE_OK ||
		       archive_read_next_header(a, &e) != ARCHIVE_OK))
		r = error_setf(err, -EINVAL, "decompress the archive: %s", archive_error_string(a));
	uint64_t total = 0;
	while (r >= 0) {
		la_ssize_t n = archive_read_data(a, buf, IMAGE_IO_BLOCK);
		if (n == 0)
			break;
		if (n < 0) {
			r = error_setf(err, -EINVAL, "decompress the archive: %s", archive_error_string(a));
			break;
		}
		total += (uint64_t)n;
		if (total > IMAGE_SPOOL_MAX)
			r = error_setf(err, -EFBIG, "decompress the archive: more than %llu GiB",
				       (unsigned long long)(IMAGE_SPOOL_MAX >> 30));
		else if ((r = image_write_all(tmp, buf, (size_t)n)) < 0)
			error_set(err, r, "write the decompressed archive to a temp file");
	}
	archive_read_free(a);
	if (r < 0)
		return r;
	close(s->fd);
	s->fd = TAKE_FD(tmp);
	return 0;
}

/* Opens an archive reader on the plain tar from `offset`. */
static int open_pass(image_source *s, int64_t offset, struct archive **ret, strata_error *err)
{
	if (lseek(s->fd, offset, SEEK_SET) < 0)
		return error_set(err, negerrno(), "rewind the archive");
	struct archive *a = tar_reader_new();
	if (!a)
		return -ENOMEM;
	if (archive_read_open_fd(a, s->fd, IMAGE_IO_BLOCK) != ARCHIVE_OK) {
		int r = error_setf(err, -EINVAL, "%s", archive_error_string(a));
		archive_read_free(a);
		return r;
	}
	*ret = a;
	return 0;
}

/* The pass that lists the archive.  A tar that ends without its
 * end-of-archive blocks was cut at an entry boundary: refused like one cut
 * inside an entry, which libarchive reports. */
static int scan(image_source *s, strata_error *err)
{
	struct archive *a = NULL;
	int r = open_pass(s, 0, &a, err);
	if (r < 0)
		return r;
	size_t alloc = 0;
	uint64_t data_end = 0;
	struct archive_entry *e;
	int ar;
	for (;;) {
		ar = archive_read_next_header(a, &e);
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN)
			break;
		if (s->n >= IMAGE_ENTRIES_MAX) {
			r = error_setf(err, -E2BIG, "more than %d entries", IMAGE_ENTRIES_MAX);
			break;
		}
		const char *raw = archive_entry_pathname(e), *why = NULL;
		char *name = NULL;
		r = tar_clean_name(raw, &name, &why);
		if (r == -EINVAL) {
			r = error_setf(err, r, "entry \"%s\": %s", QUOTE(raw), why);
			break;
		}
		if (r < 0)
			break;
		int64_t size = archive_entry_size(e);
		data_end = (uint64_t)archive_filter_bytes(a, 0) + (((uint64_t)(size > 0 ? size : 0) + 511) & ~511ull);
		if (!*name) { /* "./": the archive's root */
			free(name);
			continue;
		}
		if (grow(&s->entries, &alloc, s->n, sizeof(*s->entries), 64) < 0) {
			free(name);
			r = -ENOMEM;
			break;
		}
		src_entry *x = &s->entries[s->n++];
		*x = (src_entry){
			.name = name, .size = size > 0 ? (uint64_t)size : 0, .offset = archive_read_header_position(a)};
		const char *hard = archive_entry_hardlink(e);
		mode_t type = archive_entry_filetype(e);
		if (hard) {
			x->type = ENTRY_LINK;
			/* A hardlink names an entry from the archive's root. */
			if (tar_clean_name(hard, &x->target, &why) == -ENOMEM)
				r = -ENOMEM;
		} else if (type == AE_IFLNK) {
			x->type = ENTRY_LINK;
			r = resolve_link(name, archive_entry_symlink(e), &x->target);
		} else {
			x->type = type == AE_IFREG ? ENTRY_FILE : type == AE_IFDIR ? ENTRY_DIR : ENTRY_OTHER;
		}
		if (r < 0)
			break;
	}
	if (r >= 0 && ar != ARCHIVE_EOF)
		r = s->n == 0 ? error_setf(err, -EINVAL, "not a tar archive (nor a directory)")
			      : error_setf(err, -EINVAL, "the archive is damaged or truncated: %s",
					   archive_error_string(a));
	if (r >= 0 && s->n > 0 && (uint64_t)archive_filter_bytes(a, 0) <= data_end)
		r = error_setf(err, -EINVAL, "the archive is truncated (it ends without the end-of-archive blocks)");
	archive_read_free(a);
	if (r < 0)
		return r;
	qsort(s->entries, s->n, sizeof(*s->entries), entry_cmp);
	for (size_t i = 1; i < s->n; i++)
		if (!strcmp(s->entries[i - 1].name, s->entries[i].name) &&
		    (s->entries[i].type != ENTRY_DIR || s->entries[i - 1].type != ENTRY_DIR))
			return error_setf(err, -EINVAL, "entry \"%s\" is in it twice", QUOTE(s->entries[i].name));
	return 0;
}

int image_source_open(const char *path, int tmp_dir_fd, image_source **ret, strata_error *err)
{
	image_source *s = calloc(1, sizeof(*s));
	if (!s || !(s->path = strdup(path))) {
		free(s);
		return -ENOMEM;
	}
	s->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	struct stat st;
	int r = 0;
	if (s->fd < 0 || fstat(s->fd, &st) < 0)
		r = error_set(err, negerrno(), "open %s", path);
	else if (S_ISDIR(st.st_mode))
		s->is_dir = true;
	else if (!S_ISREG(st.st_mode))
		r = error_setf(err, -EINVAL, "not an archive (a regular file) or an OCI layout (a directory)");
	if (r >= 0 && !s->is_dir) {
		/* Compressed?  The first header tells, through the filters. */
		struct archive *a = tar_reader_new();
		struct archive_entry *e;
		if (!a || image_support_filters(a) < 0) {
			r = -ENOMEM;
		} else if (archive_read_open_fd(a, s->fd, IMAGE_IO_BLOCK) != ARCHIVE_OK ||
			   archive_read_next_header(a, &e) != ARCHIVE_OK) {
			r = error_setf(err, -EINVAL, "not a tar archive (nor a directory): %s",
				       archive_error_string(a) ? archive_error_string(a) : "empty");
		} else {
			s->compressed = archive_filter_count(a) > 1;
		}
		archive_read_free(a);
		if (r >= 0 && s->compressed)
			r = spool(s, tmp_dir_fd, err);
		if (r >= 0)
			r = scan(s, err);
	}
	if (r < 0) {
		image_source_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

bool image_source_is_dir(const image_source *s)
{
	return s->is_dir;
}

bool image_source_has(const image_source *s, const char *name)
{
	if (!s->is_dir)
		return entry_find(s, name) != NULL;
	struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	long fd = syscall(SYS_openat2, s->fd, name, &how, sizeof(how));
	if (fd >= 0)
		close((int)fd);
	return fd >= 0;
}

void image_stream_close(image_stream *st)
{
	if (st->fd >= 0)
		close(st->fd);
	if (st->a)
		archive_read_free(st->a);
	*st = (image_stream)IMAGE_STREAM_INIT;
}

/* Opens `name` (a path relative to the archive's or layout's root) for
 * reading.  -ENOENT when it is not there. */
int image_stream_open(image_source *s, const char *name, image_stream *ret, strata_error *err)
{
	image_stream st = IMAGE_STREAM_INIT;
	st.name = name;
	if (s->is_dir) {
		/* In the layout's root whatever its symlinks say; a fifo does
		 * not block the open (O_NONBLOCK) and is refused after it. */
		struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
				       .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
		long fd = syscall(SYS_openat2, s->fd, name, &how, sizeof(how));
		if (fd < 0)
			return error_set(err, negerrno(), "open %s", QUOTE(name));
		st.fd = (int)fd;
		struct stat sb;
		int r = fstat(st.fd, &sb) < 0  ? error_set(err, negerrno(), "stat %s", QUOTE(name))
			: !S_ISREG(sb.st_mode) ? error_setf(err, -EINVAL, "%s is not a regular file", QUOTE(name))
					       : 0;
		if (r < 0) {
			image_stream_close(&st);
			return r;
		}
		st.size = (uint64_t)sb.st_size;
		*ret = st;
		return 0;
	}
	const src_entry *e = NULL;
	const char *want = name;
	for (int hop = 0; hop <= LINK_HOPS; hop++) {
		e = entry_find(s, want);
		if (!e)
			return error_setf(err, -ENOENT, "%s is not in the archive%s", QUOTE(name),
					  hop ? " (a link to a missing entry)" : "");
		if (e->type != ENTRY_LINK)
			break;
		if (!e->target)
			return error_setf(err, -EPERM, "%s is a link that leads out of the archive", QUOTE(name));
		want = e->target;
		e = NULL;
	}
	if (!e)
		return error_setf(err, -ELOOP, "%s: too many links", QUOTE(name));
	if (e->type != ENTRY_FILE)
		return error_setf(err, -EINVAL, "%s is not a regular file", QUOTE(name));
	/* Straight to its headers: a reader needs nothing of what comes
	 * before (docker save and OCI archives have no global pax headers). */
	int r = open_pass(s, e->offset, &st.a, err);
	struct archive_entry *ae = NULL;
	if (r >= 0) {
		int ar = archive_read_next_header(st.a, &ae);
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN)
			r = error_setf(err, -EIO, "read %s: %s", QUOTE(name), archive_error_string(st.a));
	}
	if (r >= 0) {
		/* The file must not have changed since the listing. */
		_cleanup_free_ char *got = NULL;
		const char *why;
		if (tar_clean_name(archive_entry_pathname(ae), &got, &why) < 0 || strcmp(got, e->name) != 0)
			r = error_setf(err, -EIO, "changed while it was read");
	}
	if (r < 0) {
		image_stream_close(&st);
		return r;
	}
	st.size = e->size;
	*ret = st;
	return 0;
}

/* Reads up to n bytes: the count, 0 at the end, or -errno. */
ssize_t image_stream_read(image_stream *st, void *buf, size_t n, strata_error *err)
{
	if (st->a) {
		la_ssize_t got = archive_read_data(st->a, buf, n);
		if (got < 0)
			return error_setf(err, -EIO, "read %s: %s", QUOTE(st->name), archive_error_string(st->a));
		return got;
	}
	for (;;) {
		ssize_t got = read(st->fd, buf, n);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return error_set(err, negerrno(), "read %s", QUOTE(st->name));
		return got;
	}
}
