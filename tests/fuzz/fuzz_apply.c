/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer harness for apply (tar_extract), in the way of libarchive's
 * write-disk fuzzer: each input is extracted into a fresh layer dir beside
 * a sentinel dir; whatever the input, the sentinel's file must keep its
 * content, nothing may appear beside the layer, and the extraction must
 * end (success or a clean error).  Runs as root, so device nodes, owners
 * and trusted.* xattrs are really made.
 */
#include <archive.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tar/tar.h"
#include "util/fs.h"

#define SENTINEL "sentinel: must survive every input\n"

static char base[256];
static int base_fd = -1;

static void die(const char *what)
{
	fprintf(stderr, "fuzz_apply: %s\n", what);
	abort();
}

static void teardown(void)
{
	fs_rm_tree_at(AT_FDCWD, base, NULL);
}

static void setup(void)
{
	/* Under $STRATA_FUZZ_DIR when the test script gives one. */
	const char *dir = getenv("STRATA_FUZZ_DIR");
	snprintf(base, sizeof(base), "%s/strata-fuzz.XXXXXX", dir && *dir ? dir : "/var/tmp");
	if (!mkdtemp(base))
		die("mkdtemp");
	atexit(teardown);
	base_fd = open(base, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (base_fd < 0 || mkdirat(base_fd, "outside", 0755) < 0)
		die("setup");
	int fd = openat(base_fd, "outside/sentinel", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, SENTINEL, strlen(SENTINEL)) != (ssize_t)strlen(SENTINEL))
		die("write sentinel");
	close(fd);
}

static void check_outside(void)
{
	char buf[256];
	int fd = openat(base_fd, "outside/sentinel", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		die("sentinel file is gone");
	ssize_t n = read(fd, buf, sizeof(buf));
	close(fd);
	if (n != (ssize_t)strlen(SENTINEL) || memcmp(buf, SENTINEL, (size_t)n) != 0)
		die("sentinel file changed");
	struct stat st;
	if (fstatat(base_fd, "outside/sentinel", &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode) ||
	    st.st_nlink != 1 || (st.st_mode & 07777) != 0644)
		die("sentinel inode changed");
	/* Nothing new beside the layer, nor in the sentinel dir. */
	const char *dirs[] = {".", "outside"};
	for (size_t i = 0; i < 2; i++) {
		DIR *d = fdopendir(openat(base_fd, dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC));
		if (!d)
			die("opendir");
		struct dirent *de;
		while ((de = readdir(d))) {
			const char *n2 = de->d_name;
			if (!strcmp(n2, ".") || !strcmp(n2, ".."))
				continue;
			if (i == 0 && (!strcmp(n2, "outside") || !strcmp(n2, "layer") || !strcmp(n2, "input.tar")))
				continue;
			if (i == 1 && !strcmp(n2, "sentinel"))
				continue;
			fprintf(stderr, "fuzz_apply: unexpected %s/%s\n", dirs[i], n2);
			abort();
		}
		closedir(d);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (base_fd < 0)
		setup();
	if (fs_rm_tree_at(base_fd, "layer", NULL) < 0 || mkdirat(base_fd, "layer", 0755) < 0)
		die("reset layer");
	int layer = openat(base_fd, "layer", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (layer < 0)
		die("open layer");

	/* Even-sized inputs go through a plain file, as `strata apply -i`
	 * reads them (content copied in the kernel); odd ones from memory,
	 * as a pipe or a compressed stream is read. */
	int in = -1;
	if (size % 2 == 0) {
		in = openat(base_fd, "input.tar", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (in < 0 || write(in, data, size) != (ssize_t)size || lseek(in, 0, SEEK_SET) != 0)
			die("write input file");
	}
	struct archive *a = NULL;
	strata_error err = {0};
	int r = 0;
	if (in >= 0) {
		r = tar_reader_open_fd(in, &a, &err);
	} else {
		a = archive_read_new();
		archive_read_support_format_tar(a);
		archive_read_support_filter_gzip(a);
		archive_read_support_filter_zstd(a);
		archive_read_support_filter_xz(a);
		if (archive_read_open_memory(a, data, size) != ARCHIVE_OK)
			r = -1;
	}
	if (r == 0) {
		tar_opts o = {0};
		uint64_t applied = 0;
		r = tar_extract(a, in, 0, layer, &o, &applied, &err);
		/* Every failure explains itself. */
		if (r < 0 && !err.message[0])
			die("error without a message");
	}
	if (a)
		archive_read_free(a);
	if (in >= 0)
		close(in);
	close(layer);
	check_outside();
	return 0;
}
