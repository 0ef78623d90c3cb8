/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Output files (-o FILE): the command never deletes, truncates or replaces
 * anything it did not make.  A regular file (or a new name) is written as
 * an unnamed temp file beside it and renamed into place only once the
 * command succeeded, so a failure leaves the old file as it was; a device
 * or a fifo (/dev/null, a named pipe) is written in place and never
 * removed.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"

static int output_error(const char *what, const char *fmt, const char *path, int e)
{
	cli_error("%s: %s %s: %s", what, fmt, path, strerror(e));
	return EXIT_FAILURE;
}

int cli_output_open(cli_output *o, const char *path, const char *what)
{
	*o = (cli_output){.fd = -1, .dir_fd = -1, .what = what, .path = path};
	struct stat st;
	int sr = stat(path, &st);
	if (sr < 0 && errno != ENOENT)
		return output_error(what, "stat", path, errno);
	if (sr == 0 && !S_ISREG(st.st_mode)) {
		if (S_ISDIR(st.st_mode)) {
			cli_error("%s: output %s is a directory", what, path);
			return EXIT_FAILURE;
		}
		/* Written where it is: a device or a pipe is not ours to replace. */
		o->fd = open(path, O_WRONLY | O_NOCTTY | O_CLOEXEC);
		if (o->fd < 0)
			return output_error(what, "open", path, errno);
		return 0;
	}
	o->existed = sr == 0;
	o->mode = sr == 0 ? st.st_mode & 07777 : 0;
	/* A symlink names where the file goes; one that leads nowhere is
	 * written through, as the shell's > would. */
	char *target = realpath(path, NULL);
	if (!target && errno == ENOENT) {
		char buf[PATH_MAX];
		ssize_t n = readlink(path, buf, sizeof(buf) - 1);
		target = strdup(n > 0 ? (buf[n] = '\0', buf) : path);
		if (n > 0 && buf[0] != '/') {
			cli_error("%s: output %s is a symlink to a relative path that does not exist", what, path);
			free(target);
			return EXIT_FAILURE;
		}
	}
	if (!target)
		return output_error(what, "resolve", path, errno);
	char *dcopy = strdup(target), *bcopy = strdup(target);
	if (!dcopy || !bcopy) {
		free(target);
		free(dcopy);
		free(bcopy);
		return output_error(what, "prepare", path, ENOMEM);
	}
	o->name = strdup(basename(bcopy));
	o->dir_fd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int e = errno;
	free(bcopy);
	free(dcopy);
	free(target);
	if (!o->name || o->dir_fd < 0) {
		e = o->name ? e : ENOMEM;
		cli_output_abort(o);
		return output_error(what, "open the directory of", path, e);
	}
	o->fd = openat(o->dir_fd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0666);
	if (o->fd < 0) {
		/* A filesystem without O_TMPFILE: a named temp file instead. */
		for (int i = 0; i < 100 && o->fd < 0; i++) {
			free(o->tmp);
			o->tmp = NULL;
			if (asprintf(&o->tmp, ".%s.strata-%d-%d", o->name, (int)getpid(), i) < 0) {
				o->tmp = NULL;
				break;
			}
			o->fd = openat(o->dir_fd, o->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
		}
		if (o->fd < 0) {
			e = errno;
			free(o->tmp);
			o->tmp = NULL; /* not ours: nothing was created */
			cli_output_abort(o);
			return output_error(what, "create a temp file beside", path, e);
		}
	}
	o->staged = true;
	return 0;
}

int cli_output_commit(cli_output *o)
{
	int rc = 0;
	if (!o->staged) {
		if (close(o->fd) < 0)
			rc = output_error(o->what, "close", o->path, errno);
		o->fd = -1;
		return rc;
	}
	/* An existing file keeps its mode. */
	if (o->existed && fchmod(o->fd, o->mode) < 0)
		rc = output_error(o->what, "chmod the new", o->path, errno);
	if (!rc && !o->tmp) {
		char proc[64];
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", o->fd);
		for (int i = 0; i < 100; i++) {
			if (asprintf(&o->tmp, ".%s.strata-%d-%d", o->name, (int)getpid(), i) < 0) {
				o->tmp = NULL;
				rc = output_error(o->what, "name", o->path, ENOMEM);
				break;
			}
			if (linkat(AT_FDCWD, proc, o->dir_fd, o->tmp, AT_SYMLINK_FOLLOW) == 0)
				break;
			int e = errno;
			free(o->tmp);
			o->tmp = NULL;
			if (e != EEXIST) {
				rc = output_error(o->what, "link the new", o->path, e);
				break;
			}
		}
	}
	if (!rc && close(o->fd) < 0)
		rc = output_error(o->what, "close", o->path, errno);
	o->fd = -1;
	if (!rc && renameat(o->dir_fd, o->tmp, o->dir_fd, o->name) < 0)
		rc = output_error(o->what, "rename into", o->path, errno);
	if (!rc) {
		free(o->tmp);
		o->tmp = NULL; /* it is the output now */
	}
	cli_output_abort(o);
	return rc;
}

void cli_output_abort(cli_output *o)
{
	if (o->fd >= 0)
		close(o->fd);
	o->fd = -1;
	/* Only the temp name this command made goes. */
	if (o->tmp && o->dir_fd >= 0)
		unlinkat(o->dir_fd, o->tmp, 0);
	free(o->tmp);
	o->tmp = NULL;
	if (o->dir_fd >= 0)
		close(o->dir_fd);
	o->dir_fd = -1;
	free(o->name);
	o->name = NULL;
}
