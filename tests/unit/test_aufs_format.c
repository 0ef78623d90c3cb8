/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The AUFS on-disk format (TAR_AUFS) in the three tar operations, on real
 * directories: export of an aufs diff dir, apply of a Docker-format tar
 * into one, and the change list of an aufs layer over aufs parents, which
 * must equal the change list of the same layers built in overlay's format.
 * Each case has a contrast without TAR_AUFS where the two formats differ.
 * Needs root (mknod, trusted.* xattrs).
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cmocka.h>

#include "tar/tar.h"
#include "util/fs.h"
#include "util/macro.h"

static char tmpl[64];
static int dfd = -1;

static int setup(void **state)
{
	(void)state;
	snprintf(tmpl, sizeof(tmpl), "/tmp/strata-unit-aufs.XXXXXX");
	if (!mkdtemp(tmpl))
		return -1;
	dfd = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return dfd < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	(void)state;
	int r = fs_rm_tree_at(AT_FDCWD, tmpl, NULL);
	close(dfd);
	return r;
}

/* Apply resolves every entry's parent with openat2, which valgrind 3.19
 * does not know (ENOSYS): under it the apply cases return at once; the
 * plain pass runs them.  (Not skip(): cmocka 1.1.5 prints "not ok # SKIP",
 * which meson's TAP parser counts as a failure.) */
static bool no_openat2(const char *test)
{
	struct open_how how = {.flags = O_RDONLY | O_DIRECTORY | O_CLOEXEC};
	long fd = syscall(SYS_openat2, dfd, ".", &how, sizeof(how));
	if (fd >= 0)
		close((int)fd);
	else if (errno == ENOSYS) {
		print_message("# %s: not run, openat2 is not available (valgrind?)\n", test);
		return true;
	}
	return false;
}

/* ---------------- building trees ---------------- */

/* A fresh directory `name` under the test's temp dir, opened. */
static int new_dir(const char *name)
{
	assert_int_equal(fs_rm_tree_at(dfd, name, NULL), 0);
	assert_int_equal(fs_mkdir_at(dfd, name, 0755), 0);
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

/* mkdir -p, every dir 0755 whatever the umask, so that two trees built
 * alike have the same modes. */
static void mkdirs(int root, const char *path)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		int r = fs_mkdir_at(root, buf, 0755);
		if (r < 0 && r != -EEXIST)
			fail_msg("mkdir %s: %s", buf, strerror(-r));
		*p = c;
		if (!c)
			return;
	}
}

static void mkparents(int root, const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return;
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	mkdirs(root, dir);
}

static void put_file(int root, const char *path, const char *data, mode_t mode)
{
	mkparents(root, path);
	int fd = openat(root, path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		fail_msg("create %s: %s", path, strerror(errno));
	size_t len = strlen(data);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void put_link(int root, const char *target, const char *path)
{
	mkparents(root, path);
	if (linkat(root, target, root, path, 0) < 0)
		fail_msg("link %s to %s: %s", path, target, strerror(errno));
}

static void put_char00(int root, const char *path)
{
	mkparents(root, path);
	if (mknodat(root, path, S_IFCHR | 0644, makedev(0, 0)) < 0)
		fail_msg("mknod %s: %s", path, strerror(errno));
}

/* "<dir of path>/<prefix><base of path>" */
static void prefixed(const char *path, const char *prefix, char *buf, size_t size)
{
	const char *slash = strrchr(path, '/');
	if (slash)
		snprintf(buf, size, "%.*s/%s%s", (int)(slash - path), path, prefix, slash + 1);
	else
		snprintf(buf, size, "%s%s", prefix, path);
}

static void assert_absent(int root, const char *path)
{
	struct stat st;
	if (fstatat(root, path, &st, AT_SYMLINK_NOFOLLOW) == 0)
		fail_msg("%s exists", path);
	assert_int_equal(errno, ENOENT);
}

static void assert_empty_file(int root, const char *path)
{
	struct stat st;
	if (fstatat(root, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
		fail_msg("stat %s: %s", path, strerror(errno));
	if (!S_ISREG(st.st_mode) || st.st_size != 0)
		fail_msg("%s: mode 0%o size %lld, want an empty regular file", path, (unsigned)st.st_mode,
			 (long long)st.st_size);
}

static void assert_whiteout(int root, const char *path)
{
	struct stat st;
	if (fstatat(root, path, &st, AT_SYMLINK_NOFOLLOW) < 0)
		fail_msg("stat %s: %s", path, strerror(errno));
	if (!tar_is_whiteout(&st))
		fail_msg("%s: mode 0%o, want a 0/0 character device", path, (unsigned)st.st_mode);
}

/* The names in root/path, sorted, joined by spaces. */
static void listing(int root, const char *path, char *buf, size_t size)
{
	_cleanup_close_ int fd = openat(root, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	assert_true(fd >= 0);
	_cleanup_strv_free_ char **names = NULL;
	assert_int_equal(fs_list_dir(fd, &names), 0);
	size_t n = strv_length(names);
	for (size_t i = 1; i < n; i++) /* few names: insertion sort */
		for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
			char *t = names[j];
			names[j] = names[j - 1];
			names[j - 1] = t;
		}
	size_t len = 0;
	buf[0] = '\0';
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? " " : "", names[i]);
	assert_true(len < size);
}

static void assert_listing(int root, const char *path, const char *want)
{
	char got[1024];
	listing(root, path, got, sizeof(got));
	if (strcmp(got, want) != 0)
		fail_msg("listing of \"%s\": got \"%s\", want \"%s\"", path, got, want);
}

static bool has_opaque_xattr(int root, const char *path)
{
	_cleanup_close_ int fd = openat(root, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	assert_true(fd >= 0);
	char v[8];
	ssize_t n = fgetxattr(fd, OVERLAY_OPAQUE_XATTR, v, sizeof(v));
	if (n < 0)
		assert_int_equal(errno, ENODATA);
	return n >= 0;
}

/* ---------------- export ---------------- */

typedef struct tar_item {
	char *name;
	unsigned type;
	int64_t size;
	char *hardlink;
	dev_t rdev;
} tar_item;

typedef struct tar_items {
	size_t n;
	tar_item v[64];
} tar_items;

static void tar_items_release(tar_items *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->v[i].name);
		free(t->v[i].hardlink);
	}
	t->n = 0;
}

/* Every entry of the tar in fd, read with libarchive. */
static void read_tar(int fd, tar_items *ret)
{
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	struct archive *a = archive_read_new();
	assert_non_null(a);
	assert_int_equal(archive_read_support_format_tar(a), ARCHIVE_OK);
	assert_int_equal(archive_read_open_fd(a, fd, 10240), ARCHIVE_OK);
	ret->n = 0;
	struct archive_entry *e;
	int ar;
	while ((ar = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		assert_true(ret->n < ELEMENTSOF(ret->v));
		tar_item *it = &ret->v[ret->n++];
		const char *hl = archive_entry_hardlink(e);
		*it = (tar_item){
			.name = strdup(archive_entry_pathname(e)),
			.type = archive_entry_filetype(e),
			.size = archive_entry_size(e),
			.hardlink = hl ? strdup(hl) : NULL,
			.rdev = archive_entry_rdev(e),
		};
	}
	assert_int_equal(ar, ARCHIVE_EOF);
	archive_read_free(a);
}

typedef struct want_item {
	const char *name;
	unsigned type;	      /* checked unless hardlink */
	int64_t size;	      /* checked unless hardlink */
	const char *hardlink; /* NULL: must not be a hardlink */
} want_item;

static void print_items(const tar_items *t)
{
	for (size_t i = 0; i < t->n; i++)
		print_message("#   %s type 0%o size %lld%s%s\n", t->v[i].name, t->v[i].type, (long long)t->v[i].size,
			      t->v[i].hardlink ? " link to " : "", t->v[i].hardlink ? t->v[i].hardlink : "");
}

/* The tar holds exactly `want`, in that order (export sorts by name);
 * libarchive names dirs with a trailing slash. */
static void assert_items(const tar_items *t, const want_item *want, size_t n)
{
	bool ok = t->n == n;
	for (size_t i = 0; ok && i < n; i++) {
		const tar_item *it = &t->v[i];
		const want_item *w = &want[i];
		ok = !strcmp(it->name, w->name) && !it->hardlink == !w->hardlink;
		if (ok && w->hardlink)
			ok = !strcmp(it->hardlink, w->hardlink);
		else if (ok)
			ok = it->type == w->type && it->size == w->size;
		if (!ok)
			print_message("# entry %zu: got \"%s\", want \"%s\" type 0%o size %lld%s%s\n", i, it->name,
				      w->name, w->type, (long long)w->size, w->hardlink ? " link to " : "",
				      w->hardlink ? w->hardlink : "");
	}
	if (!ok) {
		print_message("# tar entries (%zu, want %zu):\n", t->n, n);
		print_items(t);
		fail_msg("the exported tar differs");
	}
}

static int export_dir(int root, unsigned flags, strata_error *err)
{
	int fd = openat(dfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	idmap none = {0};
	tar_opts o = {.uids = &none, .gids = &none, .flags = flags};
	tar_writer *w = NULL;
	int r = tar_writer_new(fd, &o, &w, err);
	if (r >= 0)
		r = tar_write_layer(w, root, err);
	if (r >= 0)
		r = tar_writer_finish(w, err);
	tar_writer_free(w);
	if (r < 0)
		fail_msg("export: %s", err->message);
	return fd;
}

/*
 * An aufs diff dir as aufs leaves it: every whiteout, and the opaque
 * markers, are hardlinks of the branch's .wh..wh.aufs; a file with
 * another link in a lower branch keeps a link in .wh..wh.plnk;
 * .wh..wh.orph holds files removed while open; an interrupted rmdir can
 * leave a .wh..wh.<name>.<n> dir.
 */
static void make_aufs_diff(int root)
{
	put_file(root, ".wh..wh.aufs", "", 0444);
	put_link(root, ".wh..wh.aufs", ".wh.gone1");
	put_link(root, ".wh..wh.aufs", ".wh.gone2");
	put_link(root, ".wh..wh.aufs", ".wh..wh..opq"); /* on the root: meaningless */
	put_link(root, ".wh..wh.aufs", "dir/.wh.gone3");
	put_link(root, ".wh..wh.aufs", "dir/.wh..wh..opq");
	put_file(root, "dir/file", "data", 0644);
	put_file(root, "dir/.wh..wh.old.1a2b/leftover", "old", 0644);
	mkdirs(root, ".wh..wh.plnk");
	put_file(root, "visible", "hello\n", 0644);
	put_link(root, "visible", ".wh..wh.plnk/1234.5678");
	put_file(root, ".wh..wh.orph/orphan", "x", 0644);
	put_file(root, "twin1", "twins", 0644);
	put_link(root, "twin1", "twin2");
	put_char00(root, "cdev");
}

static void export_aufs(void **state)
{
	(void)state;
	_cleanup_close_ int root = new_dir("export-src");
	make_aufs_diff(root);
	strata_error err = {0};
	tar_items t = {0};

	/* aufs: whiteouts are separate empty files, never links to each other
	 * or to .wh..wh.aufs; bookkeeping is gone; the plnk'ed file is whole
	 * at its visible path; the 0/0 device is content. */
	_cleanup_close_ int tar = export_dir(root, TAR_AUFS, &err);
	read_tar(tar, &t);
	static const want_item aufs[] = {
		{".wh.gone1", AE_IFREG, 0, NULL},
		{".wh.gone2", AE_IFREG, 0, NULL},
		{"cdev", AE_IFCHR, 0, NULL},
		{"dir/", AE_IFDIR, 0, NULL},
		{"dir/.wh..wh..opq", AE_IFREG, 0, NULL},
		{"dir/.wh.gone3", AE_IFREG, 0, NULL},
		{"dir/file", AE_IFREG, 4, NULL},
		{"twin1", AE_IFREG, 5, NULL},
		{"twin2", 0, 0, "twin1"}, /* ordinary hardlinks still are */
		{"visible", AE_IFREG, 6, NULL},
	};
	assert_items(&t, aufs, ELEMENTSOF(aufs));
	for (size_t i = 0; i < t.n; i++)
		if (!strcmp(t.v[i].name, "cdev"))
			assert_int_equal(t.v[i].rdev, 0);
	tar_items_release(&t);

	/* Without TAR_AUFS the same dir is taken for overlay's: the .wh.
	 * files are content (hardlinks of the first of them), bookkeeping is
	 * exported, visible links to the plnk path, the 0/0 device is a
	 * whiteout. */
	_cleanup_close_ int plain = export_dir(root, 0, &err);
	read_tar(plain, &t);
	static const want_item overlay[] = {
		{".wh..wh..opq", AE_IFREG, 0, NULL},
		{".wh..wh.aufs", 0, 0, ".wh..wh..opq"},
		{".wh..wh.orph/", AE_IFDIR, 0, NULL},
		{".wh..wh.orph/orphan", AE_IFREG, 1, NULL},
		{".wh..wh.plnk/", AE_IFDIR, 0, NULL},
		{".wh..wh.plnk/1234.5678", AE_IFREG, 6, NULL},
		{".wh.gone1", 0, 0, ".wh..wh..opq"},
		{".wh.gone2", 0, 0, ".wh..wh..opq"},
		{".wh.cdev", AE_IFREG, 0, NULL},
		{"dir/", AE_IFDIR, 0, NULL},
		{"dir/.wh..wh..opq", 0, 0, ".wh..wh..opq"},
		{"dir/.wh..wh.old.1a2b/", AE_IFDIR, 0, NULL},
		{"dir/.wh..wh.old.1a2b/leftover", AE_IFREG, 3, NULL},
		{"dir/.wh.gone3", 0, 0, ".wh..wh..opq"},
		{"dir/file", AE_IFREG, 4, NULL},
		{"twin1", AE_IFREG, 5, NULL},
		{"twin2", 0, 0, "twin1"},
		{"visible", 0, 0, ".wh..wh.plnk/1234.5678"},
	};
	assert_items(&t, overlay, ELEMENTSOF(overlay));
	tar_items_release(&t);
}

/* The aufs export applied in the AUFS format gives back the dir without
 * its bookkeeping.  The 0/0 device is left out: apply refuses one in
 * either format, as overlay's own whiteout. */
static int apply_fd(int tar, int root, unsigned flags, strata_error *err);

static void export_apply_round_trip(void **state)
{
	(void)state;
	if (no_openat2(__func__))
		return;
	_cleanup_close_ int root = new_dir("rt-src");
	make_aufs_diff(root);
	assert_int_equal(unlinkat(root, "cdev", 0), 0);
	strata_error err = {0};
	_cleanup_close_ int tar = export_dir(root, TAR_AUFS, &err);
	_cleanup_close_ int out = new_dir("rt-out");
	if (apply_fd(tar, out, TAR_AUFS, &err) < 0)
		fail_msg("apply: %s", err.message);
	assert_listing(out, ".", ".wh.gone1 .wh.gone2 dir twin1 twin2 visible");
	assert_listing(out, "dir", ".wh..wh..opq .wh.gone3 file");
	assert_empty_file(out, ".wh.gone1");
	assert_empty_file(out, "dir/.wh..wh..opq");
	struct stat a, b;
	assert_int_equal(fstatat(out, "twin1", &a, 0), 0);
	assert_int_equal(fstatat(out, "twin2", &b, 0), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	assert_int_equal(fstatat(out, "visible", &a, 0), 0);
	assert_int_equal(a.st_size, 6);
	assert_int_equal(a.st_nlink, 1);
}

/* ---------------- apply ---------------- */

typedef struct tar_ent {
	const char *name;
	unsigned type; /* AE_IF*; 0 with link: a hardlink */
	const char *data;
	const char *link; /* symlink or hardlink target */
} tar_ent;

/* A Docker-style PAX tar of `ents`, in an unnamed temp file at offset 0. */
static int make_tar(const tar_ent *ents, size_t n)
{
	int fd = openat(dfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	struct archive *a = archive_write_new();
	assert_non_null(a);
	assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
	assert_int_equal(archive_write_add_filter_none(a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_fd(a, fd), ARCHIVE_OK);
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *e = archive_entry_new();
		assert_non_null(e);
		archive_entry_set_pathname(e, ents[i].name);
		archive_entry_set_mtime(e, 1700000000, 0);
		size_t len = ents[i].data ? strlen(ents[i].data) : 0;
		if (!ents[i].type) {
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_perm(e, 0644);
			archive_entry_set_hardlink(e, ents[i].link);
		} else {
			archive_entry_set_filetype(e, ents[i].type);
			archive_entry_set_perm(e, ents[i].type == AE_IFDIR ? 0755 : 0644);
			if (ents[i].type == AE_IFLNK)
				archive_entry_set_symlink(e, ents[i].link);
			if (ents[i].type == AE_IFREG)
				archive_entry_set_size(e, (la_int64_t)len);
		}
		assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
		if (len)
			assert_int_equal(archive_write_data(a, ents[i].data, len), (la_ssize_t)len);
		archive_entry_free(e);
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	return fd;
}

static int apply_fd(int tar, int root, unsigned flags, strata_error *err)
{
	assert_int_equal(lseek(tar, 0, SEEK_SET), 0);
	struct archive *a = NULL;
	int r = tar_reader_open_fd(tar, &a, err);
	if (r < 0)
		return r;
	idmap none = {0};
	tar_opts o = {.uids = &none, .gids = &none, .flags = flags};
	uint64_t size = 0;
	r = tar_extract(a, tar, 0, root, &o, &size, err);
	archive_read_free(a);
	return r;
}

static const tar_ent docker_tar[] = {
	{"d/", AE_IFDIR, NULL, NULL},
	{"d/.wh..wh..opq", AE_IFREG, NULL, NULL},
	{"d/.wh.y", AE_IFREG, NULL, NULL},
	{"d/keep", AE_IFREG, "kept", NULL},
	{".wh..wh..opq", AE_IFREG, NULL, NULL}, /* on the root: ignored */
	{".wh..wh.aufs", AE_IFREG, NULL, NULL},
	{".wh..wh.orph/", AE_IFDIR, NULL, NULL},
	{".wh..wh.plnk/", AE_IFDIR, NULL, NULL},
	{".wh..wh.plnk/1.2", AE_IFREG, "plnk", NULL},
	{".wh.x", AE_IFREG, NULL, NULL},
	{"f", AE_IFREG, "file", NULL},
};

static void apply_aufs(void **state)
{
	(void)state;
	if (no_openat2(__func__))
		return;
	_cleanup_close_ int tar = make_tar(docker_tar, ELEMENTSOF(docker_tar));
	strata_error err = {0};

	_cleanup_close_ int root = new_dir("apply-aufs");
	if (apply_fd(tar, root, TAR_AUFS, &err) < 0)
		fail_msg("apply: %s", err.message);
	assert_listing(root, ".", ".wh.x d f");
	assert_listing(root, "d", ".wh..wh..opq .wh.y keep");
	assert_empty_file(root, ".wh.x");
	assert_empty_file(root, "d/.wh.y");
	assert_empty_file(root, "d/.wh..wh..opq");
	assert_false(has_opaque_xattr(root, "d"));
	assert_false(has_opaque_xattr(root, "."));

	/* Overlay's format: whiteouts are devices, the opaque mark an xattr,
	 * and no .wh. name is left. */
	_cleanup_close_ int ovl = new_dir("apply-overlay");
	if (apply_fd(tar, ovl, 0, &err) < 0)
		fail_msg("apply: %s", err.message);
	assert_listing(ovl, ".", "d f x");
	assert_listing(ovl, "d", "keep y");
	assert_whiteout(ovl, "x");
	assert_whiteout(ovl, "d/y");
	assert_true(has_opaque_xattr(ovl, "d"));
	assert_false(has_opaque_xattr(ovl, "."));
}

static void apply_aufs_refuses(void **state)
{
	(void)state;
	if (no_openat2(__func__))
		return;
	static const struct {
		const char *why;
		tar_ent ents[2];
		const char *absent;
	} bad[] = {
		{"whiteout dir", {{"d/", AE_IFDIR, NULL, NULL}, {".wh.dir/", AE_IFDIR, NULL, NULL}}, ".wh.dir"},
		{"whiteout symlink", {{"d/", AE_IFDIR, NULL, NULL}, {".wh.sym", AE_IFLNK, NULL, "d"}}, ".wh.sym"},
		{"whiteout fifo", {{"d/", AE_IFDIR, NULL, NULL}, {"d/.wh.p", AE_IFIFO, NULL, NULL}}, "d/.wh.p"},
		{"whiteout hardlink", {{"f", AE_IFREG, "data", NULL}, {".wh.f", 0, NULL, "f"}}, ".wh.f"},
		{"opaque marker symlink",
		 {{"d/", AE_IFDIR, NULL, NULL}, {"d/.wh..wh..opq", AE_IFLNK, NULL, "x"}},
		 "d/.wh..wh..opq"},
		{"opaque marker dir",
		 {{"d/", AE_IFDIR, NULL, NULL}, {"d/.wh..wh..opq/", AE_IFDIR, NULL, NULL}},
		 "d/.wh..wh..opq"},
		{"empty victim", {{"d/", AE_IFDIR, NULL, NULL}, {".wh.", AE_IFREG, NULL, NULL}}, ".wh."},
		{"dot victim", {{"d/", AE_IFDIR, NULL, NULL}, {".wh..", AE_IFREG, NULL, NULL}}, ".wh.."},
		{"dotdot victim", {{"d/", AE_IFDIR, NULL, NULL}, {".wh...", AE_IFREG, NULL, NULL}}, ".wh..."},
		{"empty victim in a dir", {{"d/", AE_IFDIR, NULL, NULL}, {"d/.wh.", AE_IFREG, NULL, NULL}}, "d/.wh."},
		{"dot victim in a dir", {{"d/", AE_IFDIR, NULL, NULL}, {"d/.wh..", AE_IFREG, NULL, NULL}}, "d/.wh.."},
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		_cleanup_close_ int tar = make_tar(bad[i].ents, 2);
		_cleanup_close_ int root = new_dir("apply-bad");
		strata_error err = {0};
		int r = apply_fd(tar, root, TAR_AUFS, &err);
		if (r != -EINVAL)
			fail_msg("%s: apply returned %d (%s), want -EINVAL", bad[i].why, r, err.message);
		/* The message names the entry. */
		if (!strstr(err.message, bad[i].ents[1].name))
			fail_msg("%s: message \"%s\" does not name the entry", bad[i].why, err.message);
		assert_absent(root, bad[i].absent);
	}
	/* Overlay's format refuses the names that delete nothing too. */
	static const tar_ent dot[] = {{".wh..", AE_IFREG, NULL, NULL}};
	_cleanup_close_ int tar = make_tar(dot, 1);
	_cleanup_close_ int root = new_dir("apply-bad");
	strata_error err = {0};
	assert_int_equal(apply_fd(tar, root, 0, &err), -EINVAL);
}

/* ---------------- changes ---------------- */

typedef enum op_kind {
	OP_END,
	OP_DIR,	 /* a directory (and its parents) */
	OP_FILE, /* a regular file */
	OP_WH,	 /* a whiteout of path */
	OP_OPQ,	 /* path (an existing dir) is opaque */
	/* aufs only: */
	OP_CHR00,    /* a 0/0 character device, content in aufs */
	OP_AUFS_RAW, /* an empty regular file of that name, nothing else */
	OP_AUFS_DIR, /* a directory of that name (with a file in it) */
} op_kind;

typedef struct op {
	op_kind kind;
	const char *path;
} op;

/*
 * One layer in either format.  aufs: whiteouts and opaque markers are
 * links of .wh..wh.aufs, and every layer has the bookkeeping (.wh..wh.aufs,
 * .wh..wh.plnk with a link of the layer's first file, .wh..wh.orph, an
 * opaque marker on the root), none of which may show in a change list.
 * overlay: whiteouts are 0/0 devices, opaque dirs have
 * trusted.overlay.opaque=y.
 */
static void build_layer(int root, const op *ops, bool aufs)
{
	bool plnk = false;
	if (aufs) {
		put_file(root, ".wh..wh.aufs", "", 0444);
		mkdirs(root, ".wh..wh.plnk");
		put_file(root, ".wh..wh.orph/.wh..wh.orph-file", "orphan", 0600);
		put_link(root, ".wh..wh.aufs", WHITEOUT_OPAQUE);
	}
	for (const op *o = ops; o->kind != OP_END; o++) {
		char buf[PATH_MAX];
		switch (o->kind) {
		case OP_END:
			break;
		case OP_DIR:
			mkdirs(root, o->path);
			break;
		case OP_FILE:
			put_file(root, o->path, o->path, 0644);
			if (aufs && !plnk) {
				put_link(root, o->path, ".wh..wh.plnk/4242.77");
				plnk = true;
			}
			break;
		case OP_WH:
			if (aufs) {
				prefixed(o->path, WHITEOUT_PREFIX, buf, sizeof(buf));
				put_link(root, ".wh..wh.aufs", buf);
			} else {
				put_char00(root, o->path);
			}
			break;
		case OP_OPQ:
			if (aufs) {
				snprintf(buf, sizeof(buf), "%s/%s", o->path, WHITEOUT_OPAQUE);
				put_link(root, ".wh..wh.aufs", buf);
			} else {
				_cleanup_close_ int fd =
					openat(root, o->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
				assert_true(fd >= 0);
				assert_int_equal(fsetxattr(fd, OVERLAY_OPAQUE_XATTR, "y", 1, 0), 0);
			}
			break;
		case OP_CHR00:
			assert_true(aufs);
			put_char00(root, o->path);
			break;
		case OP_AUFS_RAW:
			if (aufs)
				put_file(root, o->path, "", 0444);
			break;
		case OP_AUFS_DIR:
			if (aufs) {
				snprintf(buf, sizeof(buf), "%s/file", o->path);
				put_file(root, buf, "x", 0644);
			}
			break;
		}
	}
}

#define MAX_LAYERS  4
#define MAX_CHANGES 32

typedef struct scenario {
	const char *name;
	size_t n_layers;	       /* the last one is the layer, the others its parents */
	const op *layers[MAX_LAYERS];  /* bottom first */
	const char *want[MAX_CHANGES]; /* "K /path", sorted; NULL-terminated */
} scenario;

/* The change list of the scenario's top layer built in one format, as
 * "K /path" lines (caller frees). */
static char **layer_changes(const scenario *s, bool aufs)
{
	char name[128];
	snprintf(name, sizeof(name), "changes-%s-%s", s->name, aufs ? "aufs" : "overlay");
	_cleanup_close_ int dir = new_dir(name);
	int fds[MAX_LAYERS];
	for (size_t i = 0; i < s->n_layers; i++) {
		char ln[32];
		snprintf(ln, sizeof(ln), "%zu", i);
		assert_int_equal(fs_mkdir_at(dir, ln, 0755), 0);
		fds[i] = openat(dir, ln, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		assert_true(fds[i] >= 0);
		build_layer(fds[i], s->layers[i], aufs);
	}
	int lowers[MAX_LAYERS];
	size_t n_lowers = s->n_layers - 1;
	for (size_t i = 0; i < n_lowers; i++)
		lowers[i] = fds[n_lowers - 1 - i]; /* nearest first */
	change_list list = {0};
	strata_error err = {0};
	int r = changes_layer(fds[n_lowers], lowers, n_lowers, aufs ? TAR_AUFS : 0, &list, &err);
	if (r < 0)
		fail_msg("%s (%s): changes_layer: %s", s->name, aufs ? "aufs" : "overlay", err.message);
	char **lines = calloc(list.n + 1, sizeof(char *));
	assert_non_null(lines);
	for (size_t i = 0; i < list.n; i++) {
		static const char kinds[] = {
			[STRATA_CHANGE_MODIFY] = 'C', [STRATA_CHANGE_ADD] = 'A', [STRATA_CHANGE_DELETE] = 'D'};
		assert_true(asprintf(&lines[i], "%c %s", kinds[list.items[i].kind], list.items[i].path) > 0);
	}
	change_list_release(&list);
	for (size_t i = 0; i < s->n_layers; i++)
		close(fds[i]);
	return lines;
}

static bool same_lines(char *const *a, const char *const *b)
{
	size_t i = 0;
	for (; a[i] && b[i]; i++)
		if (strcmp(a[i], b[i]) != 0)
			return false;
	return !a[i] && !b[i];
}

static void print_lines(const char *what, char *const *lines)
{
	print_message("# %s:\n", what);
	for (size_t i = 0; lines[i]; i++)
		print_message("#   %s\n", lines[i]);
}

static void check_scenario(const scenario *s, bool both)
{
	char **aufs = layer_changes(s, true);
	bool ok = same_lines(aufs, s->want);
	char **ovl = both ? layer_changes(s, false) : NULL;
	if (ovl)
		ok = ok && same_lines(ovl, s->want) && same_lines(aufs, (const char *const *)ovl);
	if (!ok) {
		print_lines("want", (char *const *)s->want);
		print_lines("aufs (TAR_AUFS)", aufs);
		if (ovl)
			print_lines("overlay", ovl);
	}
	strv_free(aufs);
	strv_free(ovl);
	if (!ok)
		fail_msg("%s: change lists differ", s->name);
}

/* Deletes, modifies and adds over one parent. */
static const op basic0[] = {
	{OP_FILE, "f_del"},  {OP_FILE, "d_del/x"},   {OP_FILE, "d_del/sub/y"}, {OP_FILE, "f_mod"},
	{OP_FILE, "keep/a"}, {OP_FILE, "untouched"}, {OP_END, NULL},
};
static const op basic1[] = {
	{OP_WH, "f_del"},   {OP_WH, "d_del"},	{OP_WH, "nothere"}, /* deletes nothing: no change */
	{OP_FILE, "f_mod"}, {OP_FILE, "added"}, {OP_FILE, "keep/new"}, {OP_WH, "keep/nothere"}, {OP_END, NULL},
};

/* Opaque dirs replacing dirs with contents. */
static const op opaque0[] = {
	{OP_FILE, "o/a"},
	{OP_FILE, "o/b"},
	{OP_FILE, "o/sub/c"},
	{OP_FILE, "o/gone"},
	/* aufs's temp name of an interrupted rmdir: not a name of the dir. */
	{OP_AUFS_DIR, "o/.wh..wh.old.1a2b"},
	{OP_FILE, "e/x"},
	{OP_FILE, "e/y"},
	{OP_END, NULL},
};
static const op opaque1[] = {
	{OP_DIR, "o"},	   {OP_OPQ, "o"}, {OP_FILE, "o/a"}, {OP_FILE, "o/new"},
	{OP_DIR, "o/sub"}, {OP_DIR, "e"}, {OP_OPQ, "e"},    {OP_END, NULL},
};

/* A whiteout in a middle layer: what it hid is absent for the top. */
static const op middle_wh0[] = {
	{OP_FILE, "f"}, {OP_FILE, "g/h"}, {OP_FILE, "z"}, {OP_FILE, "kept"}, {OP_END, NULL},
};
static const op middle_wh1[] = {
	{OP_WH, "f"}, {OP_WH, "g"}, {OP_WH, "z"}, {OP_FILE, "m"}, {OP_END, NULL},
};
static const op middle_wh2[] = {
	{OP_FILE, "f"},	    /* re-added: A, not C */
	{OP_FILE, "g/new"}, /* a dir re-added */
	{OP_WH, "z"},	    /* already gone */
	{OP_WH, "m"},	    {OP_END, NULL},
};

/* An opaque dir in a middle layer hides the bottom's. */
static const op middle_opq0[] = {
	{OP_FILE, "d/a"}, {OP_FILE, "d/b"}, {OP_FILE, "d/c"}, {OP_FILE, "d2/z"}, {OP_FILE, "d2/w"}, {OP_END, NULL},
};
static const op middle_opq1[] = {
	{OP_DIR, "d"},	{OP_OPQ, "d"},	   {OP_FILE, "d/c"},  {OP_FILE, "d/m"}, {OP_DIR, "d2"},
	{OP_OPQ, "d2"}, {OP_FILE, "d2/y"}, {OP_FILE, "d2/w"}, {OP_END, NULL},
};
static const op middle_opq2[] = {
	{OP_DIR, "d"},	  {OP_WH, "d/c"}, {OP_WH, "d/a"}, /* hidden by the middle: nothing */
	{OP_FILE, "d/b"},				  /* hidden by the middle: A */
	{OP_FILE, "d/m"}, {OP_DIR, "d2"}, {OP_OPQ, "d2"}, {OP_FILE, "d2/x"}, {OP_END, NULL},
};

/* The same, four directories deep. */
static const op deep0[] = {
	{OP_FILE, "a/b/c/d/f1"},  {OP_FILE, "a/b/c/d/f2"}, {OP_FILE, "a/b/c/d/e/g"}, {OP_FILE, "a/b/c/d/o/p"},
	{OP_FILE, "a/b/c/d/o/q"}, {OP_FILE, "a/b/c/keep"}, {OP_END, NULL},
};
static const op deep1[] = {
	{OP_FILE, "a/b/c/d/f3"},
	{OP_WH, "a/b/c/d/f2"},
	{OP_FILE, "a/b/c/d/o/r"},
	{OP_END, NULL},
};
static const op deep2[] = {
	{OP_FILE, "a/b/c/d/f1"},  {OP_WH, "a/b/c/d/f3"},	{OP_FILE, "a/b/c/d/f2"},
	{OP_WH, "a/b/c/d/e"},	  {OP_DIR, "a/b/c/d/o"},	{OP_OPQ, "a/b/c/d/o"},
	{OP_FILE, "a/b/c/d/o/q"}, {OP_FILE, "a/b/c/d/n/m/new"}, {OP_END, NULL},
};

static const scenario scenarios[] = {
	{"basic",
	 2,
	 {basic0, basic1},
	 {"A /added", "D /d_del", "D /f_del", "C /f_mod", "C /keep", "A /keep/new", NULL}},
	{"opaque",
	 2,
	 {opaque0, opaque1},
	 {"C /e", "D /e/x", "D /e/y", "C /o", "C /o/a", "D /o/b", "D /o/gone", "A /o/new", "C /o/sub", "D /o/sub/c",
	  NULL}},
	{"middle-whiteout", 3, {middle_wh0, middle_wh1, middle_wh2}, {"A /f", "A /g", "A /g/new", "D /m", NULL}},
	{"middle-opaque",
	 3,
	 {middle_opq0, middle_opq1, middle_opq2},
	 {"C /d", "A /d/b", "D /d/c", "C /d/m", "C /d2", "D /d2/w", "A /d2/x", "D /d2/y", NULL}},
	{"deep",
	 3,
	 {deep0, deep1, deep2},
	 {"C /a", "C /a/b", "C /a/b/c", "C /a/b/c/d", "D /a/b/c/d/e", "C /a/b/c/d/f1", "A /a/b/c/d/f2", "D /a/b/c/d/f3",
	  "A /a/b/c/d/n", "A /a/b/c/d/n/m", "A /a/b/c/d/n/m/new", "C /a/b/c/d/o", "D /a/b/c/d/o/p", "C /a/b/c/d/o/q",
	  "D /a/b/c/d/o/r", NULL}},
};

static void changes_aufs_like_overlay(void **state)
{
	(void)state;
	for (size_t i = 0; i < ELEMENTSOF(scenarios); i++)
		check_scenario(&scenarios[i], true);
}

/* aufs has no device whiteouts: a 0/0 character device is a file like
 * any other (export writes it as one). */
static const op chr0[] = {
	{OP_CHR00, "cdev"},
	{OP_CHR00, "cdev2"},
	{OP_FILE, "f"},
	{OP_END, NULL},
};
static const op chr1[] = {
	{OP_WH, "cdev"}, {OP_FILE, "cdev2"}, {OP_CHR00, "f"}, {OP_CHR00, "newdev"}, {OP_END, NULL},
};

/* .wh. files that name no file (aufs never makes them) delete nothing. */
static const op noname0[] = {
	{OP_FILE, "d/x"},
	{OP_FILE, "y"},
	{OP_END, NULL},
};
static const op noname1[] = {
	{OP_AUFS_RAW, ".wh."},	  {OP_AUFS_RAW, ".wh.."},    {OP_AUFS_RAW, ".wh..."}, {OP_AUFS_RAW, "d/.wh."},
	{OP_AUFS_RAW, "d/.wh.."}, {OP_AUFS_RAW, "d/.wh..."}, {OP_END, NULL},
};

static const scenario aufs_only[] = {
	{"char-device", 2, {chr0, chr1}, {"D /cdev", "C /cdev2", "C /f", "A /newdev", NULL}},
	{"no-victim", 2, {noname0, noname1}, {NULL}},
};

static void changes_aufs_devices(void **state)
{
	(void)state;
	check_scenario(&aufs_only[0], false);
}

static void changes_aufs_no_victim(void **state)
{
	(void)state;
	check_scenario(&aufs_only[1], false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(export_aufs),
		cmocka_unit_test(export_apply_round_trip),
		cmocka_unit_test(apply_aufs),
		cmocka_unit_test(apply_aufs_refuses),
		cmocka_unit_test(changes_aufs_like_overlay),
		cmocka_unit_test(changes_aufs_devices),
		cmocka_unit_test(changes_aufs_no_victim),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
