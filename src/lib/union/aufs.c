/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The aufs engine: mount data built as the seed's aufsMount builds it, the
 * availability checks of its Init/supportsAufs, and the dirperm1 probe.
 *
 * Where this differs from the seed, and why:
 *   - the branches that do not fit in the first mount are appended by
 *     remounts that each use a whole page less the label (the seed kept
 *     the first mount's reduced budget for them too, and left a ','
 *     before the label: "append:x=ro+wh,,context=...");
 *   - a branch too long for any page is an error (-E2BIG), where the
 *     seed's copy() silently truncated it into a wrong branch path;
 *   - a failed first mount(2) unmounts nothing: nothing of ours is at the
 *     target then, and detaching it would drop whatever was mounted there
 *     before.  A failed remount detaches the half-built union.
 */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/magic.h>

#include "union/aufs.h"
#include "union/union.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

#define AUFS_SUPER_MAGIC 0x61756673 /* "aufs": not in linux/magic.h, aufs is out of tree */

#define FIXED_OPTIONS	",dio,xino=" AUFS_XINO
#define DIRPERM1_OPTION "," AUFS_DIRPERM1
#define RW_PREFIX	"br:"
#define RW_SUFFIX	"=rw"
#define RO_PREFIX	":"
#define RO_SUFFIX	"=ro+wh"
#define APPEND_PREFIX	"append:"
#define LABEL_PREFIX	",context=\""
#define LABEL_SUFFIX	"\""

#define SLEN(s) (sizeof(s) - 1)

/* A branch path goes unquoted into "br:a=rw:b=ro+wh,...": aufs splits on
 * ',' (options), ':' (branches) and '=' (path from permission), so any of
 * them would make it read a different branch list than the one asked for. */
static int branch_validate(const char *path, const char *what, size_t index, strata_error *err)
{
	if (!path || !*path)
		return error_setf(err, -EINVAL, "invalid aufs %s branch %zu: empty path", what, index);
	for (const unsigned char *p = (const unsigned char *)path; *p; p++)
		if (*p < 0x20 || *p == 0x7f || *p == ',' || *p == ':' || *p == '=')
			return error_setf(err, -EINVAL,
					  "invalid aufs %s branch %zu \"%s\": ',', ':', '=' or control character", what,
					  index, QUOTE(path));
	return 0;
}

/* Bytes ",context=\"<label>\"" takes after the options of every call. */
static size_t label_room(const char *label)
{
	return label && *label ? SLEN(LABEL_PREFIX) + strlen(label) + SLEN(LABEL_SUFFIX) : 0;
}

/* "<a><b><c>" onto sb by plain copies: no format string for a path or a
 * label that may be most of a page long. */
static int strbuf_append3(strbuf *sb, const char *a, const char *b, const char *c)
{
	int r = strbuf_append(sb, a, strlen(a));
	if (r >= 0)
		r = strbuf_append(sb, b, strlen(b));
	if (r >= 0)
		r = strbuf_append(sb, c, strlen(c));
	return r;
}

static int append_label(strbuf *sb, const char *label)
{
	if (!label || !*label)
		return 0;
	return strbuf_append3(sb, LABEL_PREFIX, label, LABEL_SUFFIX);
}

int aufs_build_mount_data(const char *rw, char *const *ro, size_t n_ro, const char *label, bool dirperm1,
			  size_t page_size, aufs_mount_data *ret, strata_error *err)
{
	int r = branch_validate(rw, "rw", 0, err);
	if (r < 0)
		return r;
	if (n_ro > 0 && !ro)
		return error_setf(err, -EINVAL, "invalid aufs branches: %zu read-only branches but no list", n_ro);
	for (size_t i = 0; i < n_ro; i++) {
		r = branch_validate(ro[i], "ro", i, err);
		if (r < 0)
			return r;
	}
	r = overlay_label_validate(label, err);
	if (r < 0)
		return r;

	/* The seed's budget for the first mount's branch list: one page less
	 * the label and a fixed reserve for the options after the branches.
	 * The reserve is larger than what follows the branches really takes,
	 * so the first string always fits in a page with its NUL.  With
	 * dirperm1 the seed reserves len(",dirperm1"), 9 more. */
	size_t label_len = label ? strlen(label) : 0;
	size_t reserve = label_len + AUFS_FIXED_ROOM + (dirperm1 ? SLEN(DIRPERM1_OPTION) : 0);
	size_t budget = page_size > reserve ? page_size - reserve : 0;
	size_t rw_len = SLEN(RW_PREFIX) + strlen(rw) + SLEN(RW_SUFFIX);
	if (rw_len > budget)
		return error_setf(err, -E2BIG,
				  "aufs rw branch \"%s\" takes %zu bytes, the first mount has room for %zu "
				  "(page %zu less %zu for the label and %zu for the fixed options)",
				  QUOTE(rw), rw_len, budget, page_size, label_len, reserve - label_len);

	size_t n_first = 0;
	size_t used = rw_len;
	while (n_first < n_ro) {
		size_t len = SLEN(RO_PREFIX) + strlen(ro[n_first]) + SLEN(RO_SUFFIX);
		if (used + len > budget)
			break;
		used += len;
		n_first++;
	}

	/* Every remount string carries the label too, and its NUL. */
	size_t suffix = label_room(label);
	for (size_t i = n_first; i < n_ro; i++) {
		size_t need = SLEN(APPEND_PREFIX) + strlen(ro[i]) + SLEN(RO_SUFFIX) + suffix + 1;
		if (need > page_size)
			return error_setf(err, -E2BIG,
					  "aufs ro branch %zu \"%s\" takes %zu bytes in a remount (%zu of them the "
					  "label), more than one page (%zu)",
					  i, QUOTE(ro[i]), need, suffix, page_size);
	}

	strbuf sb = {0};
	r = strbuf_append3(&sb, RW_PREFIX, rw, RW_SUFFIX);
	for (size_t i = 0; r >= 0 && i < n_first; i++)
		r = strbuf_append3(&sb, RO_PREFIX, ro[i], RO_SUFFIX);
	if (r >= 0)
		r = strbuf_append(&sb, FIXED_OPTIONS, SLEN(FIXED_OPTIONS));
	if (r >= 0 && dirperm1)
		r = strbuf_append(&sb, DIRPERM1_OPTION, SLEN(DIRPERM1_OPTION));
	if (r >= 0)
		r = append_label(&sb, label);
	if (r < 0) {
		strbuf_release(&sb);
		return error_set(err, r, "build aufs mount data");
	}
	_cleanup_free_ char *first = strbuf_detach(&sb);
	if (!first)
		return error_set(err, -ENOMEM, "build aufs mount data");

	/* The remounts, packed greedily in order: as many "append:" options
	 * per string as a page holds.  Greedy in order is the fewest strings
	 * for a list that must stay in order.  At most one per branch. */
	_cleanup_strv_free_ char **appends = calloc(n_ro - n_first + 1, sizeof(char *));
	if (!appends)
		return error_set(err, -ENOMEM, "build aufs remount data");

	size_t k = 0;
	for (size_t i = n_first; i < n_ro;) {
		size_t len = 0;
		r = 0;
		while (r >= 0 && i < n_ro) {
			size_t opt = SLEN(APPEND_PREFIX) + strlen(ro[i]) + SLEN(RO_SUFFIX);
			if (len > 0 && len + 1 + opt + suffix + 1 > page_size)
				break;
			r = strbuf_append3(&sb, len > 0 ? "," APPEND_PREFIX : APPEND_PREFIX, ro[i], RO_SUFFIX);
			len += (len > 0) + opt;
			i++;
		}
		if (r >= 0)
			r = append_label(&sb, label);
		if (r < 0) {
			strbuf_release(&sb);
			return error_set(err, r, "build aufs remount data");
		}
		appends[k] = strbuf_detach(&sb);
		if (!appends[k])
			return error_set(err, -ENOMEM, "build aufs remount data");
		k++;
	}

	*ret = (aufs_mount_data){
		.first = TAKE_PTR(first),
		.appends = TAKE_PTR(appends),
		.n_appends = k,
		.n_first = n_first,
	};
	return 0;
}

void aufs_mount_data_release(aufs_mount_data *m)
{
	if (!m)
		return;
	free(m->first);
	strv_free(m->appends);
	*m = (aufs_mount_data){0};
}

/*
 * 1 if the file lists "aufs" as a filesystem name, 0 if not, -errno if it
 * cannot be read.  Lines are "<flags>\t<name>", flags "nodev" or empty.
 * The name must be "aufs" exactly: the seed's substring match would also
 * take "aufs2" or any name containing it.
 */
int aufs_listed(const char *path)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return negerrno();

	_cleanup_free_ char *line = NULL;
	size_t size = 0;
	int found = 0;
	ssize_t n;
	while ((n = getline(&line, &size, f)) >= 0) {
		if (n > 0 && line[n - 1] == '\n')
			line[--n] = '\0';
		const char *tab = strchr(line, '\t');
		if (tab && !strcmp(tab + 1, "aufs")) {
			found = 1;
			break;
		}
	}
	int r = !found && ferror(f) ? negerrno() : found;
	fclose(f);
	return r;
}

/* The initial user namespace maps every id to itself: one line,
 * "0 0 4294967295".  Anything else is a nested namespace, where aufs
 * refuses to mount.  No uid_map at all is a kernel without user
 * namespaces, so the initial one. */
static int in_user_namespace(void)
{
	_cleanup_free_ char *data = NULL;
	int r = fs_read_at(AT_FDCWD, "/proc/self/uid_map", 65536, &data, NULL);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	unsigned long inside, outside, count;
	int end = 0;
	if (sscanf(data, "%lu %lu %lu %n", &inside, &outside, &count, &end) != 3)
		return 1;
	return !(inside == 0 && outside == 0 && count == 4294967295UL && data[end] == '\0');
}

/* `modprobe aufs`, quietly, ignoring how it ends: the only question is
 * whether /proc/filesystems lists aufs afterwards.  No modprobe installed
 * is the same as modprobe failing. */
static void modprobe_aufs(void)
{
	posix_spawn_file_actions_t fa;
	if (posix_spawn_file_actions_init(&fa) != 0)
		return;
	if (posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0) != 0 ||
	    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0) != 0 ||
	    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		return;
	}
	char *const argv[] = {(char *)"modprobe", (char *)"aufs", NULL};
	pid_t pid;
	int r = posix_spawnp(&pid, "modprobe", &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		return;
	while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
		;
}

static const char *backing_fs_refused(unsigned long magic)
{
	switch (magic) {
	case AUFS_SUPER_MAGIC:
		return "aufs";
	case BTRFS_SUPER_MAGIC:
		return "btrfs";
	case ECRYPTFS_SUPER_MAGIC:
		return "ecryptfs";
	default:
		return NULL;
	}
}

int aufs_supported(unsigned long backing_magic, const char *backing_name, strata_error *err)
{
	/* The cheap, certain refusals first: they hold whatever the kernel
	 * has, and they keep modprobe from running where it cannot help. */
	const char *refused = backing_fs_refused(backing_magic);
	if (refused)
		return error_setf(err, -EOPNOTSUPP, "aufs cannot sit on %s",
				  backing_name && *backing_name ? backing_name : refused);

	int r = in_user_namespace();
	if (r < 0)
		return error_set(err, r, "read /proc/self/uid_map");
	if (r > 0)
		return error_setf(err, -EPERM, "aufs cannot be used in a user namespace");

	r = aufs_listed("/proc/filesystems");
	if (r == 0) {
		modprobe_aufs();
		r = aufs_listed("/proc/filesystems");
	}
	if (r < 0)
		return error_set(err, r, "read /proc/filesystems");
	if (r == 0)
		return error_setf(err, -ENODEV,
				  "aufs is not in /proc/filesystems and modprobe aufs did not load it "
				  "(this kernel has no aufs: use engine=overlay)");
	return 0;
}

bool aufs_probe_dirperm1(const char *tmp_dir)
{
	_cleanup_free_ char *base = NULL, *un = NULL, *data = NULL;
	if (asprintf(&base, "%s/strata-aufs-base-XXXXXX", tmp_dir) < 0) {
		base = NULL;
		return false;
	}
	/* The base dir is an aufs branch: a name aufs would split differently
	 * could only make the probe lie. */
	if (branch_validate(base, "probe", 0, NULL) < 0)
		return false;
	if (asprintf(&un, "%s/strata-aufs-union-XXXXXX", tmp_dir) < 0) {
		un = NULL;
		return false;
	}
	if (!mkdtemp(base))
		return false;
	bool ok = false;
	if (!mkdtemp(un))
		goto out_base;
	if (asprintf(&data, "br:%s,%s,xino=%s", base, AUFS_DIRPERM1, AUFS_XINO) < 0) {
		data = NULL;
		goto out_union;
	}
	if (mount("none", un, "aufs", 0, data) == 0) {
		ok = true;
		if (umount2(un, UMOUNT_NOFOLLOW) < 0)
			umount2(un, MNT_DETACH | UMOUNT_NOFOLLOW);
	}
out_union:
	rmdir(un);
out_base:
	rmdir(base);
	return ok;
}

/* Read-only branches in one remount string: one "append:" option each. */
static size_t appends_in(const char *data)
{
	size_t n = 0;
	for (const char *p = data; (p = strstr(p, APPEND_PREFIX)); p += SLEN(APPEND_PREFIX))
		if (p == data || p[-1] == ',')
			n++;
	return n;
}

int aufs_mount(const char *target, const aufs_mount_data *m, strata_error *err)
{
	if (!target || !m || !m->first)
		return error_setf(err, -EINVAL, "mount aufs at %s: no mount data", target ? target : "(null)");

	if (mount("none", target, "aufs", 0, m->first) < 0)
		return error_set(err, negerrno(), "mount aufs at %s", target);

	/* Branch numbers in messages are indexes into the read-only list the
	 * data was built from (top first), as the caller knows them. */
	size_t next = m->n_first;
	for (size_t i = 0; i < m->n_appends; i++) {
		size_t n = appends_in(m->appends[i]);
		if (mount("none", target, "aufs", MS_REMOUNT, m->appends[i]) < 0) {
			int r = negerrno();
			/* A union missing its lower branches would show the
			 * layer without its parents' files: never leave it. */
			umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW);
			return error_set(err, r, "remount aufs at %s (append branches %zu..%zu)", target, next,
					 next + n - 1);
		}
		next += n;
	}
	return 0;
}
