/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-id locks that work across threads and processes alike.
 *
 * Every id maps to one byte of ROOT/lock (FNV-1a hash, 62 bits), locked with
 * an open file description lock (F_OFD_SETLKW).  OFD locks belong to the
 * open file description, not the process, so two threads that each open the
 * file exclude each other exactly as two processes do; a process that dies
 * loses its locks.  No lock file per id means nothing accumulates and there
 * is no unlink-while-waiting race.  Two ids that hash to the same byte only
 * serialise more than needed.
 *
 * Holds: a process that uses a layer's union for the length of one call
 * (a naive diff mounts both trees) takes a shared lock on the id's byte in
 * a second range of the same file instead of a reference count.  The
 * kernel drops it when the process dies, however it dies, so a union is
 * never kept mounted for a holder that is gone; lock_held() asks whether
 * anyone holds it.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"
#include "util/banned.h"
#include "util/macro.h"

unsigned long long lock_offset(const char *id)
{
	unsigned long long h = 1469598103934665603ULL;
	for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
		h ^= *p;
		h *= 1099511628211ULL;
	}
	return h & ((1ULL << 62) - 1);
}

static int lock_range(int fd, unsigned long long offset, short type)
{
	struct flock fl = {
		.l_type = type,
		.l_whence = SEEK_SET,
		.l_start = (off_t)offset,
		.l_len = 1,
	};
	for (;;) {
		if (fcntl(fd, F_OFD_SETLKW, &fl) == 0)
			return 0;
		if (errno != EINTR)
			return negerrno();
	}
}

/* Holds live above the id locks and the init lock (2^62). */
static unsigned long long hold_offset(const char *id)
{
	return (1ULL << 62) + 1 + (lock_offset(id) >> 1);
}

int lock_hold(store *s, const char *id, id_lock *ret)
{
	id_lock l = ID_LOCK_INIT;
	l.fd = openat(s->root_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (l.fd < 0)
		return negerrno();
	l.offset[l.n++] = hold_offset(id);
	/* Nobody takes a hold byte exclusively: this never waits. */
	int r = lock_range(l.fd, l.offset[0], F_RDLCK);
	if (r < 0) {
		close(l.fd);
		return r;
	}
	*ret = l;
	return 0;
}

int lock_held(store *s, const char *id)
{
	_cleanup_close_ int fd = openat(s->root_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return negerrno();
	struct flock fl = {
		.l_type = F_WRLCK,
		.l_whence = SEEK_SET,
		.l_start = (off_t)hold_offset(id),
		.l_len = 1,
	};
	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return negerrno();
	return fl.l_type != F_UNLCK;
}

/* Below the id locks' range, which starts at 2^62: one byte per kind of
 * front end.  strata serve holds its byte shared (two on one store are
 * fine: each takes only its own layers' locks), the snapshotter its byte
 * exclusively (its start reconciles the store with its database and
 * would take another's rows in the making for debris); each checks that
 * nobody holds the other's. */
#define FRONT_END_OFFSET (1ULL << 61)

int lock_front_end(store *s, unsigned kind, int *ret_fd)
{
	_cleanup_close_ int fd = openat(s->root_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return negerrno();
	struct flock own = {
		.l_type = kind ? F_WRLCK : F_RDLCK,
		.l_whence = SEEK_SET,
		.l_start = (off_t)(FRONT_END_OFFSET + kind),
		.l_len = 1,
	};
	if (fcntl(fd, F_OFD_SETLK, &own) < 0)
		return errno == EAGAIN || errno == EACCES ? -EALREADY : negerrno();
	/* Two starting at once may each see the other: both refuse. */
	struct flock other = {
		.l_type = F_WRLCK,
		.l_whence = SEEK_SET,
		.l_start = (off_t)(FRONT_END_OFFSET + !kind),
		.l_len = 1,
	};
	if (fcntl(fd, F_OFD_GETLK, &other) < 0)
		return negerrno();
	if (other.l_type != F_UNLCK)
		return -EAGAIN;
	*ret_fd = TAKE_FD(fd);
	return 0;
}

int lock_ids(store *s, const char *id, const char *id2, id_lock *ret)
{
	id_lock l = ID_LOCK_INIT;
	l.fd = openat(s->root_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (l.fd < 0)
		return negerrno();

	l.offset[l.n++] = lock_offset(id);
	if (id2) {
		unsigned long long o2 = lock_offset(id2);
		if (o2 < l.offset[0]) {
			l.offset[1] = l.offset[0];
			l.offset[0] = o2;
			l.n = 2;
		} else if (o2 > l.offset[0]) {
			l.offset[l.n++] = o2;
		}
	}
	for (int i = 0; i < l.n; i++) {
		int r = lock_range(l.fd, l.offset[i], F_WRLCK);
		if (r < 0) {
			close(l.fd); /* closing drops whatever was taken */
			return r;
		}
	}
	*ret = l;
	return 0;
}

int lock_store_init(store *s, id_lock *ret)
{
	id_lock l = ID_LOCK_INIT;
	l.fd = openat(s->root_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (l.fd < 0)
		return negerrno();
	/* Id offsets are below 2^62: this byte is nobody else's. */
	l.offset[l.n++] = 1ULL << 62;
	int r = lock_range(l.fd, l.offset[0], F_WRLCK);
	if (r < 0) {
		close(l.fd);
		return r;
	}
	*ret = l;
	return 0;
}

void lock_release(id_lock *l)
{
	if (l->fd < 0)
		return;
	int saved = errno;
	/* Closing the description releases its OFD locks. */
	close(l->fd);
	l->fd = -1;
	errno = saved;
}
