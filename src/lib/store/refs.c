/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reference counts shared by every process using the store.
 *
 * refs/<id> holds "<boot-id> <count>".  It is read and written only under
 * the id's lock.  Writes are atomic (rename) but not fsynced: a count only
 * means something while the mounts it describes exist, and no mount
 * survives a reboot, so a count from another boot reads as 0.  After a
 * process crash the page cache still holds the last count, which is exactly
 * the number of references that were taken and not returned.
 */
#include <errno.h>
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
	if (count == 0) {
		if (unlinkat(s->refs_fd, id, 0) < 0 && errno != ENOENT)
			return negerrno();
		return 0;
	}
	char buf[STORE_BOOT_ID_LEN + 32];
	int n = snprintf(buf, sizeof(buf), "%s %u\n", s->boot_id, count);
	return fs_write_atomic_at(s->refs_fd, id, buf, (size_t)n, 0600, 0);
}
