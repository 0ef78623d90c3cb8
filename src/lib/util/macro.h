/* SPDX-License-Identifier: Apache-2.0 */
/* Cleanup helpers in the systemd/composefs style: locals that release
 * themselves, with explicit hand-over through TAKE_PTR / TAKE_FD. */
#pragma once

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f)   __attribute__((cleanup(f)))
#define _unused_       __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _warn_unused_  __attribute__((warn_unused_result))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* Free/close helpers keep errno: they run on error paths after errno was set. */
static inline void freep(void *p)
{
	int saved = errno;
	free(*(void **)p);
	errno = saved;
}

static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

static inline void closedirp(DIR **d)
{
	if (*d) {
		int saved = errno;
		closedir(*d);
		errno = saved;
	}
}

static inline void strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static inline void strv_freep(char ***v)
{
	int saved = errno;
	strv_free(*v);
	errno = saved;
}

#define _cleanup_free_	    _cleanup_(freep)
#define _cleanup_close_	    _cleanup_(closep)
#define _cleanup_closedir_  _cleanup_(closedirp)
#define _cleanup_strv_free_ _cleanup_(strv_freep)

#define TAKE_PTR(p)                                                                                                    \
	({                                                                                                             \
		__typeof__(p) _tmp = (p);                                                                              \
		(p) = NULL;                                                                                            \
		_tmp;                                                                                                  \
	})

#define TAKE_FD(fd)                                                                                                    \
	({                                                                                                             \
		int _tmp = (fd);                                                                                       \
		(fd) = -1;                                                                                             \
		_tmp;                                                                                                  \
	})

/* -errno from a failed libc call, never 0 (guards against a libc that
 * fails without setting errno). */
static inline int negerrno(void)
{
	return errno > 0 ? -errno : -EIO;
}

static inline size_t strv_length(char *const *v)
{
	size_t n = 0;
	while (v && v[n])
		n++;
	return n;
}

/* Room for n + 1 elements of `size` bytes in *items (capacity *alloc,
 * doubled as needed, starting at `first`).  -ENOMEM leaves both as they
 * were. */
static inline int grow(void *items, size_t *alloc, size_t n, size_t size, size_t first)
{
	if (n < *alloc)
		return 0;
	size_t a = *alloc ? 2 * *alloc : first;
	void *p = realloc(*(void **)items, a * size);
	if (!p)
		return -ENOMEM;
	*(void **)items = p;
	*alloc = a;
	return 0;
}
