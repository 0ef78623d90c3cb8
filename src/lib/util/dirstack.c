/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/banned.h"
#include "util/dirstack.h"
#include "util/macro.h"

int dir_stack_fd(const dir_stack *s)
{
	return s->depth ? s->levels[s->depth - 1].fd : s->root_fd;
}

int dir_stack_push(dir_stack *s, const char *name)
{
	if (grow(&s->levels, &s->alloc, s->depth, sizeof(*s->levels), 16) < 0)
		return -ENOMEM;
	int fd = openat(dir_stack_fd(s), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return negerrno();
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int r = negerrno();
		close(fd);
		return r;
	}
	s->levels[s->depth++] = (dir_stack_level){fd, st.st_dev, st.st_ino};
	/* Only the deepest levels keep their fds. */
	if (s->depth > DIR_STACK_OPEN) {
		dir_stack_level *old = &s->levels[s->depth - 1 - DIR_STACK_OPEN];
		if (old->fd >= 0) {
			close(old->fd);
			old->fd = -1;
		}
	}
	return fd;
}

int dir_stack_pop(dir_stack *s)
{
	if (!s->depth)
		return -EINVAL;
	dir_stack_level *top = &s->levels[s->depth - 1];
	int r = 0;
	if (s->depth >= 2 && s->levels[s->depth - 2].fd < 0) {
		dir_stack_level *up = &s->levels[s->depth - 2];
		int fd = openat(top->fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		struct stat st;
		if (fd < 0)
			r = negerrno();
		else if (fstat(fd, &st) < 0)
			r = negerrno();
		else if (st.st_dev != up->dev || st.st_ino != up->ino)
			r = -ESTALE;
		if (r < 0) {
			if (fd >= 0)
				close(fd);
		} else {
			up->fd = fd;
		}
	}
	close(top->fd);
	s->depth--;
	return r;
}

void dir_stack_release(dir_stack *s)
{
	for (size_t i = 0; i < s->depth; i++)
		if (s->levels[i].fd >= 0)
			close(s->levels[i].fd);
	free(s->levels);
	s->levels = NULL;
	s->depth = s->alloc = 0;
}
