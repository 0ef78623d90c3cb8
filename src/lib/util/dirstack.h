/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The open directories of an iterative tree walk.
 *
 * A tree a container wrote can be 100,000 directories deep: no walk may
 * recurse on the C stack per level, nor hold an fd per level.  A dir_stack
 * keeps the fds of the deepest DIR_STACK_OPEN levels; a shallower level's
 * fd is closed and, when the walk climbs back to it, reopened through ".."
 * of its child and checked to be the same directory (device and inode).
 * A tree changed meanwhile (a directory moved by a running container)
 * makes the walk fail with -ESTALE instead of wandering elsewhere.
 */
#pragma once

#include <stddef.h>
#include <sys/types.h>

#define DIR_STACK_OPEN 64

typedef struct dir_stack_level {
	int fd; /* -1: closed; reopened through ".." of the level below */
	dev_t dev;
	ino_t ino;
} dir_stack_level;

typedef struct dir_stack {
	int root_fd; /* the caller's: never closed here */
	size_t depth, alloc;
	dir_stack_level *levels;
} dir_stack;

#define DIR_STACK_INIT(fd)                                                                                             \
	{                                                                                                              \
		.root_fd = (fd)                                                                                        \
	}

/* The innermost directory: the root while nothing is pushed. */
int dir_stack_fd(const dir_stack *s);

/* Opens directory `name` in the innermost one (never following a
 * symlink) and makes it the innermost.  Returns its fd (the stack owns
 * it) or -errno: -ENOTDIR or -ELOOP when `name` is not a directory now. */
int dir_stack_push(dir_stack *s, const char *name);

/* Leaves the innermost directory for its parent.  -ESTALE when the
 * parent, reopened through "..", is not the directory it was. */
int dir_stack_pop(dir_stack *s);

void dir_stack_release(dir_stack *s);
