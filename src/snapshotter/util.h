/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Small helpers of the snapshotter's files.  The front end links only the
 * public API, so it keeps its own copies of these habits of the library.
 */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

#define _cleanup_(f)   __attribute__((cleanup(f)))
#define _printf_(a, b) __attribute__((format(printf, a, b)))

static inline void snap_freep(void *p)
{
	int saved = errno;
	free(*(void **)p);
	errno = saved;
}
#define _cleanup_free_ _cleanup_(snap_freep)

static inline void *snap_take_ptr(void *pp)
{
	void *p = *(void **)pp;
	*(void **)pp = NULL;
	return p;
}
#define TAKE_PTR(p) ((__typeof__(p))snap_take_ptr(&(p)))

/* `s` made safe for a one-line message: bytes outside printable ASCII,
 * backslash and the double quote become \xNN; cut with "..." when long.
 * Q(s) quotes into a buffer that lives as long as the enclosing block. */
#define QUOTE_MAX 128
const char *snap_quote(const char *s, char *buf, size_t size);
#define Q(s) snap_quote((s), (char[QUOTE_MAX]){0}, QUOTE_MAX)
