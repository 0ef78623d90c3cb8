/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading container images from docker save archives, OCI layouts and OCI
 * archives (see image.h).
 *
 * An archive is a tar on a seekable fd: one pass records every entry
 * (name, type, size, link target, where its headers start), sorted by name
 * for lookups and to find duplicates; reading an entry starts a reader at
 * its headers.  docker save writes manifest.json last, so nothing can be
 * read in one go.
 * A directory is read with openat2(RESOLVE_IN_ROOT): its symlinks stay
 * inside it.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "tar/tar.h"
#include "thin/image.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

#define IO_BLOCK    (128 * 1024)
#define LINK_HOPS   16
#define BLOB_PREFIX "blobs/sha256/"

/* OCI's media types that are not images, and buildkit's attestations. */
#define REF_NAME_ANNOTATION	   "org.opencontainers.image.ref.name"
#define CONTAINERD_NAME_ANNOTATION "io.containerd.image.name"

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

/* One open entry: a file of the directory, or the archive positioned at
 * the entry's data. */
typedef struct src_stream {
	int fd;
	struct archive *a;
	uint64_t size;
	const char *name;
} src_stream;

#define SRC_STREAM_INIT                                                                                                \
	{                                                                                                              \
		.fd = -1                                                                                               \
	}

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

/* ---- the source: a directory or a tar ---- */

static image_source *source_free(image_source *s)
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

static int support_filters(struct archive *a)
{
	return archive_read_support_filter_gzip(a) == ARCHIVE_OK && archive_read_support_filter_zstd(a) == ARCHIVE_OK &&
			       archive_read_support_filter_xz(a) == ARCHIVE_OK &&
			       archive_read_support_filter_bzip2(a) == ARCHIVE_OK &&
			       archive_read_support_filter_lz4(a) == ARCHIVE_OK
		       ? 0
		       : -ENOMEM;
}

/* Writes all of buf to fd. */
static int write_all(int fd, const void *buf, size_t n)
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
	if (!a || support_filters(a) < 0 || archive_read_support_format_raw(a) != ARCHIVE_OK) {
		archive_read_free(a);
		return -ENOMEM;
	}
	_cleanup_free_ char *buf = malloc(IO_BLOCK);
	struct archive_entry *e;
	int r = buf ? 0 : -ENOMEM;
	if (r >= 0 && lseek(s->fd, 0, SEEK_SET) < 0)
		r = error_set(err, negerrno(), "rewind the archive");
	if (r >= 0 &&
	    (archive_read_open_fd(a, s->fd, IO_BLOCK) != ARCHIVE_OK || archive_read_next_header(a, &e) != ARCHIVE_OK))
		r = error_setf(err, -EINVAL, "decompress the archive: %s", archive_error_string(a));
	uint64_t total = 0;
	while (r >= 0) {
		la_ssize_t n = archive_read_data(a, buf, IO_BLOCK);
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
		else if ((r = write_all(tmp, buf, (size_t)n)) < 0)
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
	if (archive_read_open_fd(a, s->fd, IO_BLOCK) != ARCHIVE_OK) {
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

static int source_open(const char *path, int tmp_dir_fd, image_source **ret, strata_error *err)
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
		if (!a || support_filters(a) < 0) {
			r = -ENOMEM;
		} else if (archive_read_open_fd(a, s->fd, IO_BLOCK) != ARCHIVE_OK ||
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
		source_free(s);
		return r;
	}
	*ret = s;
	return 0;
}

static bool source_has(const image_source *s, const char *name)
{
	if (!s->is_dir)
		return entry_find(s, name) != NULL;
	struct open_how how = {.flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS};
	long fd = syscall(SYS_openat2, s->fd, name, &how, sizeof(how));
	if (fd >= 0)
		close((int)fd);
	return fd >= 0;
}

static void stream_close(src_stream *st)
{
	if (st->fd >= 0)
		close(st->fd);
	if (st->a)
		archive_read_free(st->a);
	*st = (src_stream)SRC_STREAM_INIT;
}

/* Opens `name` (a path relative to the archive's or layout's root) for
 * reading.  -ENOENT when it is not there. */
static int stream_open(image_source *s, const char *name, src_stream *ret, strata_error *err)
{
	src_stream st = SRC_STREAM_INIT;
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
			stream_close(&st);
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
		stream_close(&st);
		return r;
	}
	st.size = e->size;
	*ret = st;
	return 0;
}

/* Reads up to n bytes: the count, 0 at the end, or -errno. */
static ssize_t stream_read(src_stream *st, void *buf, size_t n, strata_error *err)
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

/* A whole small file, checked against the digest its name or `digest`
 * gives, and against `size` (-1: any). */
static int read_small(image_source *s, const char *name, const char *digest, int64_t size, char **ret, size_t *ret_len,
		      strata_error *err)
{
	src_stream st;
	int r = stream_open(s, name, &st, err);
	if (r < 0)
		return r;
	if (st.size > IMAGE_JSON_MAX) {
		stream_close(&st);
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
		ssize_t n = stream_read(&st, buf + len, cap - len, err);
		if (n < 0)
			r = (int)n;
		else if (n == 0)
			break;
		else if ((len += (size_t)n) > st.size)
			r = error_setf(err, -EIO, "%s changed while it was read", QUOTE(name));
	}
	stream_close(&st);
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
		src_stream st;
		int r = stream_open(s, l->name, &st, err);
		if (r < 0)
			return error_prefix(err, r, "layer %zu", i + 1);
		uint64_t size = st.size;
		stream_close(&st);
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
	source_free(img->src);
	*img = (image){0};
}

int image_open(const char *path, int tmp_dir_fd, const char *tag, image *ret, strata_error *err)
{
	image img = {0};
	candidates c = {0};
	json_t *top = NULL, *config = NULL;
	int r = source_open(path, tmp_dir_fd, &img.src, err);
	if (r < 0)
		return r;
	image_source *s = img.src;
	bool docker = source_has(s, "manifest.json");
	if (docker) {
		img.format = "docker save";
		r = read_json(s, "manifest.json", NULL, -1, &top, err);
		if (r >= 0)
			r = docker_candidates(top, &c, err);
	} else if (source_has(s, "index.json")) {
		img.format = s->is_dir ? "OCI layout" : "OCI archive";
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
	src_stream st;
	EVP_MD_CTX *md;
	uint64_t bytes;
	int error; /* the stream's, when libarchive stops */
	strata_error *err;
	char *buf;
} blob_reader;

static la_ssize_t blob_read(struct archive *a, void *data, const void **ret_buf)
{
	blob_reader *b = data;
	ssize_t n = stream_read(&b->st, b->buf, IO_BLOCK, b->err);
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
	blob_reader b = {.s = s, .st = SRC_STREAM_INIT, .err = err};
	EVP_MD_CTX *tar_md = EVP_MD_CTX_new();
	b.md = EVP_MD_CTX_new();
	b.buf = malloc(IO_BLOCK);
	char *out = malloc(IO_BLOCK);
	struct archive *a = archive_read_new();
	int r = 0;
	if (!tar_md || !b.md || !b.buf || !out || !a || support_filters(a) < 0 ||
	    archive_read_support_format_raw(a) != ARCHIVE_OK || EVP_DigestInit_ex(b.md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestInit_ex(tar_md, EVP_sha256(), NULL) != 1)
		r = -ENOMEM;
	if (r >= 0)
		r = stream_open(s, l->name, &b.st, err);
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
			la_ssize_t n = archive_read_data(a, out, IO_BLOCK);
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
			else if (out_fd >= 0 && (r = write_all(out_fd, out, (size_t)n)) < 0)
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
	stream_close(&b.st);
	EVP_MD_CTX_free(b.md);
	EVP_MD_CTX_free(tar_md);
	free(b.buf);
	free(out);
	if (r < 0)
		return r;
	*ret_size = size;
	return 0;
}
