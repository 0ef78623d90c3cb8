/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reference counts shared by every process using the store.
 *
 * refs/<id> holds "<boot-id> <count>", the count zero-padded to a fixed
 * width.  It is read and written only under the id's lock, in place, with
 * one pwrite of the whole record: readers are serialised by the lock, a
 * process that dies cannot tear a single small write, and no temp file or
 * unlink churns inodes on every get and put.  Nothing is fsynced: a count
 * only means something while the mounts it describes exist, and no mount
 * survives a reboot, so a count from another boot reads as 0.  After a
 * process crash the page cache still holds the last count written.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"
#include "util/banned.h"
#include "util/fs.h"
#include "util/macro.h"

int refs_parse(const char *data, const char *boot_id, unsigned *ret_count)
{
	size_t bl = strlen(boot_id);
	if (strncmp(data, boot_id, bl) != 0 || data[bl] != ' ') {
		/* Another boot, or not ours to trust: no references. */
		*ret_count = 0;
		return 0;
	}
	const char *p = data + bl + 1;
	char *end = NULL;
	errno = 0;
	unsigned long v = strtoul(p, &end, 10);
	if (errno || end == p || (*end != '\n' && *end != '\0') || v > 1000000000UL || *p == '-')
		return -EBADMSG;
	*ret_count = (unsigned)v;
	return 0;
}

int refs_read(store *s, const char *id, unsigned *ret_count)
{
	_cleanup_free_ char *data = NULL;
	int r = fs_read_at(s->refs_fd, id, 128, &data, NULL);
	if (r == -ENOENT) {
		*ret_count = 0;
		return 0;
	}
	if (r < 0)
		return r;
	return refs_parse(data, s->boot_id, ret_count);
}

int refs_write(store *s, const char *id, unsigned count)
{
	char buf[STORE_BOOT_ID_LEN + 16];
	int n = snprintf(buf, sizeof(buf), "%s %010u\n", s->boot_id, count);
	_cleanup_close_ int fd = openat(s->refs_fd, id, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return negerrno();
	ssize_t w = pwrite(fd, buf, (size_t)n, 0);
	if (w < 0)
		return negerrno();
	if (w != n)
		return -EIO;
	return 0;
}

int refs_remove(store *s, const char *id)
{
	if (unlinkat(s->refs_fd, id, 0) < 0 && errno != ENOENT)
		return negerrno();
	return 0;
}

int refs_is_record(store *s, const char *id)
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int r = fs_read_at(s->refs_fd, id, 128, &data, &len);
	if (r == -ENOENT || r == -EFBIG)
		return 0;
	if (r < 0)
		return r;
	/* "<boot-id> <count>\n", as refs_write makes it, of any boot. */
	if (len != STORE_BOOT_ID_LEN + 12 || data[STORE_BOOT_ID_LEN] != ' ' || data[len - 1] != '\n')
		return 0;
	for (size_t i = STORE_BOOT_ID_LEN + 1; i < len - 1; i++)
		if (data[i] < '0' || data[i] > '9')
			return 0;
	return 1;
}
