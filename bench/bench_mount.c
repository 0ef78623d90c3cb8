/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench_mount: what strata costs on top of the kernel.
 *
 *   get/put   strata_get + strata_put of the top layer of chains of 1, 2,
 *             10, 100 and 500 layers, through the new mount API and the
 *             legacy mount(2) fallback, against the same overlay mounted
 *             and unmounted with raw syscalls on the same directories.
 *   create    strata_create + strata_remove of many layers on one parent,
 *             against the same directory work done with raw syscalls.
 *
 * Runs vary by up to 2x on these machines (SPEC section 7), so every
 * contender of a phase runs interleaved with the others, iteration by
 * iteration, and only medians and 90th percentiles are compared.
 *
 * Usage: bench_mount [-n ITERATIONS] [-c LAYERS] SCRATCH_DIR
 * SCRATCH_DIR must exist; the stores made under it are removed on exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "strata.h"

#define ID_LEN	       64
#define CHAIN_MAX      500
#define WARMUP	       5
#define TARGET_LAYERS  100
#define TARGET_GET_MS  5.0
#define DEFAULT_ITERS  50
#define DEFAULT_CREATE 300

enum { API_NEW, API_LEGACY, API_COUNT };
static const char *const api_names[API_COUNT] = {"new", "legacy"};

static const size_t chain_lengths[] = {1, 2, 10, 100, 500};
#define N_LENGTHS (sizeof(chain_lengths) / sizeof(chain_lengths[0]))

/* The same options strata gives every union (src/lib/union/overlay.c):
 * the raw peer must mount exactly the same thing to be a fair baseline. */
static const char *const fixed_options[][2] = {
	{"index", "off"},
	{"redirect_dir", "off"},
	{"metacopy", "off"},
};
#define N_FIXED (sizeof(fixed_options) / sizeof(fixed_options[0]))

typedef struct stats {
	double med, p90;
} stats;

typedef struct row {
	size_t layers;
	int api;
	bool has_raw; /* a base layer mounts nothing: there is no raw peer */
	stats get, mnt, put, umnt;
} row;

/* Everything teardown() must undo, whichever path leads there. */
static struct {
	char *scratch;
	char *store_root; /* chains, mounted by both handles */
	char *cr_root;	  /* strata's create/remove store */
	char *raw_root;	  /* the raw peer's create/remove tree */
	char *short_root; /* the raw legacy peer's short symlinks */
	strata_driver *drv[API_COUNT];
	strata_driver *drv_cr;
	char *raw_target; /* non-NULL while a raw mount is up */
	bool drop_caches;
} g;

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

__attribute__((format(printf, 1, 2))) static int fail(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("bench_mount: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return -1;
}

static int fail_strata(const char *what, int r, const strata_error *err)
{
	return fail("%s: %s", what, err->message[0] ? err->message : strerror(-r));
}

static int check_stop(void)
{
	return stop_requested ? fail("interrupted") : 0;
}

__attribute__((format(printf, 1, 2))) static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	va_start(ap, fmt);
	int r = vasprintf(&s, fmt, ap);
	va_end(ap);
	return r < 0 ? NULL : s;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

/* Sorts v in place.  p90 is the nearest-rank percentile. */
static stats stats_of(double *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	stats s;
	s.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
	size_t rank = (n * 9 + 9) / 10;
	s.p90 = v[rank ? rank - 1 : 0];
	return s;
}

static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15u);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

/* Docker's ids are 64 hex digits; path lengths, and with them the legacy
 * option string and every lookup, depend on that. */
static void make_id(char out[ID_LEN + 1], uint64_t tag, uint64_t i)
{
	uint64_t state = tag << 32 | i;
	for (int k = 0; k < 4; k++)
		snprintf(out + 16 * k, 17, "%016" PRIx64, splitmix64(&state));
}

/* Short names for the raw legacy peer: 6 characters, as strata's l/. */
static void short_name(char out[7], char kind, size_t i)
{
	snprintf(out, 7, "%c%05u", kind, (unsigned)(i % 100000));
}

/* A page cache grown by earlier phases slows later ones (SPEC section 7). */
static void drop_caches(void)
{
	sync();
	if (!g.drop_caches)
		return;
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	if (write(fd, "1", 1) != 1)
		g.drop_caches = false;
	close(fd);
}

static int write_file_at(int dirfd, const char *name, const char *data, bool durable)
{
	int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	size_t len = strlen(data);
	int r = write(fd, data, len) == (ssize_t)len ? 0 : (errno ? -errno : -EIO);
	if (r == 0 && durable && fsync(fd) < 0)
		r = -errno;
	close(fd);
	return r;
}

/* ---- teardown ---- */

/* Undoes mountinfo's octal escapes (\040 for a space) in place. */
static void unescape_mountinfo(char *s)
{
	char *w = s;
	for (char *p = s; *p; p++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' && p[3] >= '0' &&
		    p[3] <= '7') {
			*w++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
			p += 3;
		} else {
			*w++ = *p;
		}
	}
	*w = '\0';
}

/*
 * The last line of defence: anything still mounted under the scratch dir
 * after strata_cleanup is a strata bug (or a raw mount we lost track of),
 * so it is reported, and detached so the tree can be deleted.  Later
 * mounts come later in mountinfo; going backwards unmounts children first.
 * Returns the number of mounts found.
 */
static int unmount_leftovers(const char *prefix)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f) {
		fail("open /proc/self/mountinfo: %s", strerror(errno));
		return -1;
	}
	char **found = NULL;
	size_t n = 0, plen = strlen(prefix);
	char *line = NULL;
	size_t cap = 0;
	while (getline(&line, &cap, f) > 0) {
		char *save = NULL, *field = strtok_r(line, " ", &save);
		for (int i = 0; field && i < 4; i++)
			field = strtok_r(NULL, " ", &save);
		if (!field)
			continue;
		unescape_mountinfo(field);
		if (strncmp(field, prefix, plen) || (field[plen] != '/' && field[plen] != '\0'))
			continue;
		char **grown = realloc(found, (n + 1) * sizeof(*found));
		if (!grown)
			break;
		found = grown;
		found[n] = strdup(field);
		if (found[n])
			n++;
	}
	free(line);
	fclose(f);
	for (size_t i = n; i-- > 0;) {
		fail("left mounted after cleanup: %s", found[i]);
		if (umount2(found[i], MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
			fail("umount %s: %s", found[i], strerror(errno));
		free(found[i]);
	}
	free(found);
	return (int)n;
}

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (remove(path) < 0 && errno != ENOENT) {
		fail("remove %s (%d): %s", path, type, strerror(errno));
		return -1;
	}
	return 0;
}

/* FTW_MOUNT: a mount that survived everything above must stop the delete
 * rather than let it reach the layers beneath through the union. */
static int rm_tree(const char *path)
{
	struct stat st;
	if (!path || lstat(path, &st) < 0)
		return 0;
	return nftw(path, rm_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) == 0 ? 0 : -1;
}

static int teardown(void)
{
	int rc = 0;
	strata_error err = {0};

	/* The raw legacy peer works from inside the tree being deleted. */
	if (chdir("/") < 0)
		rc = fail("chdir /: %s", strerror(errno));
	if (g.raw_target) {
		if (umount2(g.raw_target, UMOUNT_NOFOLLOW) < 0 &&
		    umount2(g.raw_target, MNT_DETACH | UMOUNT_NOFOLLOW) < 0)
			rc = fail("umount %s: %s", g.raw_target, strerror(errno));
		free(g.raw_target);
		g.raw_target = NULL;
	}
	strata_driver **handles[] = {&g.drv[API_NEW], &g.drv[API_LEGACY], &g.drv_cr};
	for (size_t i = 0; i < sizeof(handles) / sizeof(handles[0]); i++) {
		if (!*handles[i])
			continue;
		int r = strata_cleanup(*handles[i], &err);
		if (r < 0)
			rc = fail_strata("strata_cleanup", r, &err);
		*handles[i] = strata_driver_free(*handles[i]);
	}
	if (g.scratch && unmount_leftovers(g.scratch) != 0)
		rc = -1;
	char *trees[] = {g.store_root, g.cr_root, g.raw_root, g.short_root};
	for (size_t i = 0; i < sizeof(trees) / sizeof(trees[0]); i++) {
		if (rm_tree(trees[i]) < 0)
			rc = -1;
		free(trees[i]);
	}
	g.store_root = g.cr_root = g.raw_root = g.short_root = NULL;
	free(g.scratch);
	g.scratch = NULL;
	return rc;
}

/* ---- raw peers ---- */

typedef struct raw_spec {
	const char *target;
	/* new API: absolute paths */
	char **lowers; /* top first */
	size_t n_lowers;
	const char *upper, *work;
	/* legacy: option data naming short links relative to short_root */
	char *legacy_data;
} raw_spec;

static int fsconfig_fail(int fsfd, const char *what)
{
	int e = errno;
	char log[512] = "";
	ssize_t n = read(fsfd, log, sizeof(log) - 1);
	if (n > 0)
		log[n - (log[n - 1] == '\n')] = '\0';
	return fail("raw mount: %s: %s%s%s", what, strerror(e), log[0] ? ": " : "", log);
}

static int raw_mount_new(const raw_spec *s)
{
	int fsfd = fsopen("overlay", FSOPEN_CLOEXEC);
	if (fsfd < 0)
		return fail("raw mount: fsopen overlay: %s", strerror(errno));
	int r = 0;
	for (size_t i = 0; r == 0 && i < s->n_lowers; i++)
		if (fsconfig(fsfd, FSCONFIG_SET_STRING, "lowerdir+", s->lowers[i], 0) < 0)
			r = fsconfig_fail(fsfd, s->lowers[i]);
	if (r == 0 && fsconfig(fsfd, FSCONFIG_SET_STRING, "upperdir", s->upper, 0) < 0)
		r = fsconfig_fail(fsfd, s->upper);
	if (r == 0 && fsconfig(fsfd, FSCONFIG_SET_STRING, "workdir", s->work, 0) < 0)
		r = fsconfig_fail(fsfd, s->work);
	for (size_t i = 0; r == 0 && i < N_FIXED; i++)
		if (fsconfig(fsfd, FSCONFIG_SET_STRING, fixed_options[i][0], fixed_options[i][1], 0) < 0)
			r = fsconfig_fail(fsfd, fixed_options[i][0]);
	if (r == 0 && fsconfig(fsfd, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
		r = fsconfig_fail(fsfd, "create");
	if (r < 0) {
		close(fsfd);
		return r;
	}
	int mfd = fsmount(fsfd, FSMOUNT_CLOEXEC, 0);
	if (mfd < 0)
		r = fail("raw mount: fsmount: %s", strerror(errno));
	else if (move_mount(mfd, "", AT_FDCWD, s->target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
		r = fail("raw mount: move_mount to %s: %s", s->target, strerror(errno));
	if (mfd >= 0)
		close(mfd);
	close(fsfd);
	return r;
}

/* Runs with short_root as the working directory (see phase_mount). */
static int raw_mount_legacy(const raw_spec *s)
{
	if (mount("overlay", s->target, "overlay", 0, s->legacy_data) < 0)
		return fail("raw mount(2) at %s: %s", s->target, strerror(errno));
	return 0;
}

/* ---- get/put phase ---- */

/* Outside the timings: a mount that succeeds but lacks the bottom or the
 * top layer's file would make every figure meaningless. */
static int check_view(const char *path, size_t layers)
{
	int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return fail("open mounted view %s: %s", path, strerror(errno));
	size_t probe[] = {0, layers - 1};
	int r = 0;
	for (size_t i = 0; r == 0 && i < 2; i++) {
		char name[32];
		struct stat st;
		snprintf(name, sizeof(name), "layer-%zu", probe[i]);
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			r = fail("mounted view %s lacks %s: %s", path, name, strerror(errno));
	}
	close(dfd);
	return r;
}

static int kv_find(const strata_kv_list *l, const char *key, char **ret)
{
	for (size_t i = 0; i < l->n; i++) {
		if (!strcmp(l->items[i].key, key)) {
			*ret = strdup(l->items[i].value);
			return *ret ? 0 : fail("out of memory");
		}
	}
	return fail("strata_get_metadata: no key %s", key);
}

static char chain_ids[CHAIN_MAX][ID_LEN + 1];

static int build_chain(double *ret_seconds)
{
	strata_error err = {0};
	strata_driver *d = g.drv[API_NEW];
	double t0 = now_ms();
	for (size_t i = 0; i < CHAIN_MAX; i++) {
		if (check_stop() < 0)
			return -1;
		make_id(chain_ids[i], 1, i);
		int r = strata_create(d, chain_ids[i], i ? chain_ids[i - 1] : NULL, NULL, &err);
		if (r < 0)
			return fail_strata("strata_create", r, &err);
	}
	*ret_seconds = (now_ms() - t0) / 1e3;

	/* Lower layers are read only through the union: one small file in
	 * each gives lookups something to find at every depth. */
	for (size_t i = 0; i < CHAIN_MAX; i++) {
		strata_kv_list md = {0};
		int r = strata_get_metadata(d, chain_ids[i], &md, &err);
		if (r < 0)
			return fail_strata("strata_get_metadata", r, &err);
		char *diff = NULL;
		r = kv_find(&md, "DiffDir", &diff);
		strata_kv_list_clear(&md);
		if (r < 0)
			return r;
		char *file = xasprintf("%s/layer-%zu", diff, i);
		free(diff);
		if (!file)
			return fail("out of memory");
		char content[64];
		snprintf(content, sizeof(content), "layer %zu of the benchmark chain\n", i);
		r = write_file_at(AT_FDCWD, file, content, false);
		if (r < 0)
			fail("write %s: %s", file, strerror(-r));
		free(file);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Short links for the raw legacy peer, as strata's own l/ dir: every
 * layer's diff and work dir under a 6-character name, so 500 lowers fit
 * one page of mount(2) options. */
static int make_short_links(void)
{
	const char *root = strata_driver_root(g.drv[API_NEW]);
	if (mkdir(g.short_root, 0700) < 0)
		return fail("mkdir %s: %s", g.short_root, strerror(errno));
	for (size_t i = 0; i < CHAIN_MAX; i++) {
		const char *const kinds[][2] = {{"l", "diff"}, {"w", "work"}};
		for (size_t k = 0; k < 2; k++) {
			char name[7];
			short_name(name, kinds[k][0][0], i);
			char *target = xasprintf("%s/%s/%s", root, kinds[k][1], chain_ids[i]);
			char *link = xasprintf("%s/%s", g.short_root, name);
			int r = target && link ? symlink(target, link) : (errno = ENOMEM, -1);
			int e = errno;
			free(target);
			free(link);
			if (r < 0)
				return fail("symlink in %s: %s", g.short_root, strerror(e));
		}
	}
	return 0;
}

static void raw_spec_clear(raw_spec *s)
{
	for (size_t i = 0; s->lowers && i < s->n_lowers; i++)
		free(s->lowers[i]);
	free(s->lowers);
	free(s->legacy_data);
	*s = (raw_spec){0};
}

static int raw_spec_build(raw_spec *s, size_t layers, const char *target, const char *upper, const char *work)
{
	const char *root = strata_driver_root(g.drv[API_NEW]);
	size_t top = layers - 1;
	*s = (raw_spec){.target = target, .upper = upper, .work = work, .n_lowers = top};
	s->lowers = calloc(top ? top : 1, sizeof(*s->lowers));
	if (!s->lowers)
		return fail("out of memory");
	for (size_t i = 0; i < top; i++) {
		s->lowers[i] = xasprintf("%s/diff/%s", root, chain_ids[top - 1 - i]);
		if (!s->lowers[i])
			return fail("out of memory");
	}

	size_t size = 0;
	FILE *f = open_memstream(&s->legacy_data, &size);
	if (!f)
		return fail("out of memory");
	fputs("lowerdir=", f);
	for (size_t i = 0; i < top; i++) {
		char name[7];
		short_name(name, 'l', top - 1 - i);
		fprintf(f, "%s%s", i ? ":" : "", name);
	}
	char up[7], wk[7];
	short_name(up, 'l', top);
	short_name(wk, 'w', top);
	fprintf(f, ",upperdir=%s,workdir=%s", up, wk);
	for (size_t i = 0; i < N_FIXED; i++)
		fprintf(f, ",%s=%s", fixed_options[i][0], fixed_options[i][1]);
	if (ferror(f) | fclose(f))
		return fail("out of memory");
	return 0;
}

typedef struct samples {
	double *get, *mnt, *put, *umnt;
} samples;

static int strata_round(strata_driver *d, const char *id, const char *want_path, size_t layers, bool check,
			double *t_get, double *t_put)
{
	strata_error err = {0};
	char *path = NULL;
	double t0 = now_ms();
	int r = strata_get(d, id, NULL, &path, &err);
	double t1 = now_ms();
	if (r < 0)
		return fail_strata("strata_get", r, &err);
	if (strcmp(path, want_path))
		r = fail("strata_get returned %s, metadata says %s", path, want_path);
	if (r == 0 && check)
		r = check_view(path, layers);
	free(path);
	double t2 = now_ms();
	int q = strata_put(d, id, &err);
	double t3 = now_ms();
	if (q < 0)
		return fail_strata("strata_put", q, &err);
	*t_get = t1 - t0;
	*t_put = t3 - t2;
	return r;
}

static int raw_round(const raw_spec *s, int api, size_t layers, bool check, double *t_mnt, double *t_umnt)
{
	double t0 = now_ms();
	int r = api == API_NEW ? raw_mount_new(s) : raw_mount_legacy(s);
	double t1 = now_ms();
	if (r < 0)
		return r;
	g.raw_target = strdup(s->target);
	if (!g.raw_target) {
		umount2(s->target, UMOUNT_NOFOLLOW);
		return fail("out of memory");
	}
	if (check)
		r = check_view(s->target, layers);
	double t2 = now_ms();
	if (umount2(s->target, UMOUNT_NOFOLLOW) < 0)
		return fail("raw umount %s: %s", s->target, strerror(errno));
	double t3 = now_ms();
	free(g.raw_target);
	g.raw_target = NULL;
	*t_mnt = t1 - t0;
	*t_umnt = t3 - t2;
	return r;
}

static int phase_mount(size_t layers, int iters, row out[API_COUNT])
{
	strata_error err = {0};
	const char *id = chain_ids[layers - 1];
	strata_kv_list md = {0};
	int r = strata_get_metadata(g.drv[API_NEW], id, &md, &err);
	if (r < 0)
		return fail_strata("strata_get_metadata", r, &err);
	char *upper = NULL, *work = NULL, *merged = NULL;
	raw_spec spec = {0};
	samples smp[API_COUNT] = {0};
	bool has_raw = layers > 1;

	if (kv_find(&md, "DiffDir", &upper) < 0 || kv_find(&md, "WorkDir", &work) < 0 ||
	    kv_find(&md, "MergedDir", &merged) < 0)
		goto fail;
	if (has_raw && raw_spec_build(&spec, layers, merged, upper, work) < 0)
		goto fail;
	for (int a = 0; a < API_COUNT; a++) {
		smp[a].get = calloc((size_t)iters * 4, sizeof(double));
		if (!smp[a].get) {
			fail("out of memory");
			goto fail;
		}
		smp[a].mnt = smp[a].get + iters;
		smp[a].put = smp[a].get + 2 * iters;
		smp[a].umnt = smp[a].get + 3 * iters;
	}

	drop_caches();
	/* Four contenders; the order rotates every iteration so that none
	 * always runs right after the same neighbour's unmount. */
	enum { N_CONTENDERS = 2 * API_COUNT };
	for (int it = -WARMUP; it < iters; it++) {
		if (check_stop() < 0)
			goto fail;
		for (int k = 0; k < N_CONTENDERS; k++) {
			int c = (k + (it + WARMUP)) % N_CONTENDERS;
			int api = c / 2;
			bool raw = c % 2;
			/* Check the view once per contender, in the first warm-up. */
			bool check = it == -WARMUP;
			double a = 0, b = 0;
			if (raw && !has_raw)
				continue;
			r = raw ? raw_round(&spec, api, layers, check, &a, &b)
				: strata_round(g.drv[api], id, merged, layers, check, &a, &b);
			if (r < 0)
				goto fail;
			if (it < 0)
				continue;
			if (raw) {
				smp[api].mnt[it] = a;
				smp[api].umnt[it] = b;
			} else {
				smp[api].get[it] = a;
				smp[api].put[it] = b;
			}
		}
	}

	for (int a = 0; a < API_COUNT; a++) {
		out[a] = (row){.layers = layers, .api = a, .has_raw = has_raw};
		out[a].get = stats_of(smp[a].get, (size_t)iters);
		out[a].put = stats_of(smp[a].put, (size_t)iters);
		if (has_raw) {
			out[a].mnt = stats_of(smp[a].mnt, (size_t)iters);
			out[a].umnt = stats_of(smp[a].umnt, (size_t)iters);
		}
	}
	r = 0;
	goto out;
fail:
	r = -1;
out:
	for (int a = 0; a < API_COUNT; a++)
		free(smp[a].get);
	raw_spec_clear(&spec);
	free(upper);
	free(work);
	free(merged);
	strata_kv_list_clear(&md);
	return r;
}

/* ---- create/remove phase ---- */

/* The raw peer's tree mirrors a strata store: the same directories, the
 * same short links, and the same fsync points (strata's create fsyncs
 * five directories, then writes the chain file atomically and durably),
 * so the difference is strata's own work: locks, checks, chain parsing,
 * and remove's search for children. */
enum { RAW_DIFF, RAW_MNT, RAW_WORK, RAW_LAYERS, RAW_L, RAW_LINK, RAW_NDIRS };
static const char *const raw_dir_names[RAW_NDIRS] = {"diff", "mnt", "work", "layers", "l", "link"};

typedef struct raw_store {
	int fd[RAW_NDIRS];
} raw_store;

static void raw_store_close(raw_store *s)
{
	for (int i = 0; i < RAW_NDIRS; i++)
		if (s->fd[i] >= 0)
			close(s->fd[i]);
}

static int raw_store_open(raw_store *s)
{
	for (int i = 0; i < RAW_NDIRS; i++)
		s->fd[i] = -1;
	if (mkdir(g.raw_root, 0700) < 0)
		return fail("mkdir %s: %s", g.raw_root, strerror(errno));
	int root = open(g.raw_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return fail("open %s: %s", g.raw_root, strerror(errno));
	for (int i = 0; i < RAW_NDIRS; i++) {
		if (mkdirat(root, raw_dir_names[i], 0700) < 0 ||
		    (s->fd[i] = openat(root, raw_dir_names[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
			int e = errno;
			close(root);
			return fail("mkdir %s/%s: %s", g.raw_root, raw_dir_names[i], strerror(e));
		}
	}
	close(root);
	return 0;
}

static int raw_create(raw_store *s, const char *id, const char *parent, size_t i)
{
	static const mode_t modes[] = {0755, 0755, 0700};
	for (int k = RAW_DIFF; k <= RAW_WORK; k++)
		if (mkdirat(s->fd[k], id, modes[k]) < 0)
			return fail("raw create: mkdir %s/%s: %s", raw_dir_names[k], id, strerror(errno));
	char name[7], target[ID_LEN + 16];
	short_name(name, 'c', i);
	snprintf(target, sizeof(target), "../diff/%s", id);
	if (symlinkat(target, s->fd[RAW_L], name) < 0 || symlinkat(name, s->fd[RAW_LINK], id) < 0)
		return fail("raw create: symlink for %s: %s", id, strerror(errno));
	for (int k = RAW_DIFF; k < RAW_NDIRS; k++)
		if (k != RAW_LAYERS && fsync(s->fd[k]) < 0)
			return fail("raw create: fsync %s: %s", raw_dir_names[k], strerror(errno));
	char tmp[ID_LEN + 8], chain[ID_LEN + 2];
	snprintf(tmp, sizeof(tmp), ".%s.tmp", id);
	snprintf(chain, sizeof(chain), "%s\n", parent);
	int r = write_file_at(s->fd[RAW_LAYERS], tmp, chain, true);
	if (r < 0)
		return fail("raw create: write layers/%s: %s", tmp, strerror(-r));
	if (renameat2(s->fd[RAW_LAYERS], tmp, s->fd[RAW_LAYERS], id, RENAME_NOREPLACE) < 0 ||
	    fsync(s->fd[RAW_LAYERS]) < 0)
		return fail("raw create: commit layers/%s: %s", id, strerror(errno));
	return 0;
}

static int raw_remove(raw_store *s, const char *id, size_t i)
{
	char removing[ID_LEN + 16], name[7];
	snprintf(removing, sizeof(removing), "%s-removing", id);
	short_name(name, 'c', i);
	if (renameat(s->fd[RAW_LAYERS], id, s->fd[RAW_LAYERS], removing) < 0 || fsync(s->fd[RAW_LAYERS]) < 0)
		return fail("raw remove: rename layers/%s: %s", id, strerror(errno));
	for (int k = RAW_DIFF; k <= RAW_WORK; k++)
		if (unlinkat(s->fd[k], id, AT_REMOVEDIR) < 0)
			return fail("raw remove: rmdir %s/%s: %s", raw_dir_names[k], id, strerror(errno));
	if (unlinkat(s->fd[RAW_L], name, 0) < 0 || unlinkat(s->fd[RAW_LINK], id, 0) < 0 ||
	    unlinkat(s->fd[RAW_LAYERS], removing, 0) < 0)
		return fail("raw remove: unlink for %s: %s", id, strerror(errno));
	return 0;
}

typedef struct rate {
	double per_s, med_ms, p90_ms;
} rate;

static rate rate_of(double *ms, size_t n)
{
	double total = 0;
	for (size_t i = 0; i < n; i++)
		total += ms[i];
	stats s = stats_of(ms, n);
	return (rate){.per_s = total > 0 ? (double)n * 1e3 / total : 0, .med_ms = s.med, .p90_ms = s.p90};
}

/*
 * Every create runs before any remove: on this machine's journal-less ext4
 * file creation slows down for minutes after a mass delete (SPEC section
 * 7), which would punish whichever contender created last.
 */
static int phase_create_remove(size_t count, rate out[4])
{
	static const char *const opts[] = {"mountapi=new", NULL};
	strata_error err = {0};
	raw_store rs;
	char(*ids)[ID_LEN + 1] = calloc(count, sizeof(*ids));
	double *t = calloc(count * 4, sizeof(double));
	double *sc = t, *rc = t + count, *sr = t + 2 * count, *rr = t + 3 * count;
	char base[ID_LEN + 1];
	int r = -1;

	if (raw_store_open(&rs) < 0)
		goto out;
	if (!ids || !t) {
		fail("out of memory");
		goto out;
	}
	r = strata_driver_open(g.cr_root, opts, STRATA_OPEN_INIT, &g.drv_cr, &err);
	if (r < 0) {
		fail_strata("strata_driver_open", r, &err);
		goto out;
	}
	make_id(base, 2, 0);
	r = strata_create(g.drv_cr, base, NULL, NULL, &err);
	if (r < 0) {
		fail_strata("strata_create", r, &err);
		goto out;
	}
	for (size_t i = 0; i < count; i++)
		make_id(ids[i], 3, i);

	drop_caches();
	r = -1;
	for (size_t i = 0; i < count; i++) {
		if (check_stop() < 0)
			goto out;
		/* Alternate who goes first: the second of a pair finds the
		 * disk just written to by the first. */
		for (int k = 0; k < 2; k++) {
			bool raw = (k + i) % 2;
			double t0 = now_ms();
			int q = raw ? raw_create(&rs, ids[i], base, i)
				    : strata_create(g.drv_cr, ids[i], base, NULL, &err);
			double dt = now_ms() - t0;
			if (q < 0) {
				if (!raw)
					fail_strata("strata_create", q, &err);
				goto out;
			}
			(raw ? rc : sc)[i] = dt;
		}
	}
	drop_caches();
	for (size_t i = 0; i < count; i++) {
		if (check_stop() < 0)
			goto out;
		for (int k = 0; k < 2; k++) {
			bool raw = (k + i) % 2;
			double t0 = now_ms();
			int q = raw ? raw_remove(&rs, ids[i], i) : strata_remove(g.drv_cr, ids[i], &err);
			double dt = now_ms() - t0;
			if (q < 0) {
				if (!raw)
					fail_strata("strata_remove", q, &err);
				goto out;
			}
			(raw ? rr : sr)[i] = dt;
		}
	}
	out[0] = rate_of(sc, count);
	out[1] = rate_of(rc, count);
	out[2] = rate_of(sr, count);
	out[3] = rate_of(rr, count);
	r = 0;
out:
	raw_store_close(&rs);
	free(ids);
	free(t);
	return r;
}

/* ---- report ---- */

static void print_ratio(double a, double b)
{
	if (b > 0)
		printf(" %6.2fx", a / b);
	else
		printf(" %7s", "-");
}

static void print_table(const row *rows, size_t n)
{
	printf("\nget/put latency, ms (median and p90 over the measured iterations)\n");
	printf("%6s %-6s | %7s %7s | %7s %7s | %7s | %7s %7s | %7s %7s | %7s\n", "layers", "api", "get", "p90",
	       "rawmnt", "p90", "ratio", "put", "p90", "rawumnt", "p90", "ratio");
	for (size_t i = 0; i < n; i++) {
		const row *w = &rows[i];
		printf("%6zu %-6s | %7.3f %7.3f |", w->layers, api_names[w->api], w->get.med, w->get.p90);
		if (w->has_raw)
			printf(" %7.3f %7.3f |", w->mnt.med, w->mnt.p90);
		else
			printf(" %7s %7s |", "-", "-");
		print_ratio(w->get.med, w->has_raw ? w->mnt.med : 0);
		printf(" | %7.3f %7.3f |", w->put.med, w->put.p90);
		if (w->has_raw)
			printf(" %7.3f %7.3f |", w->umnt.med, w->umnt.p90);
		else
			printf(" %7s %7s |", "-", "-");
		print_ratio(w->put.med, w->has_raw ? w->umnt.med : 0);
		printf("\n");
	}
	printf("raw peer: api new = fsopen + one fsconfig lowerdir+ per layer + fsmount + move_mount;\n"
	       "          api legacy = mount(2) with 6-character relative names (a page of options).\n"
	       "          Both with strata's options (index, redirect_dir, metacopy off) and umount2.\n"
	       "1 layer: a base layer's get returns its diff dir and mounts nothing (no peer).\n");
}

static void print_rates(const rate r[4], size_t count)
{
	static const char *const what[] = {"create", "remove"};
	printf("\ncreate/remove of %zu layers on one parent (interleaved with the raw peer)\n", count);
	printf("%-7s | %9s %7s %7s | %9s %7s %7s | %7s\n", "op", "strata/s", "med ms", "p90 ms", "raw/s", "med ms",
	       "p90 ms", "ratio");
	for (int i = 0; i < 2; i++) {
		const rate *s = &r[2 * i], *w = &r[2 * i + 1];
		printf("%-7s | %9.1f %7.3f %7.3f | %9.1f %7.3f %7.3f |", what[i], s->per_s, s->med_ms, s->p90_ms,
		       w->per_s, w->med_ms, w->p90_ms);
		print_ratio(w->per_s, s->per_s);
		printf("\n");
	}
	printf("raw peer: mkdir diff/mnt/work, two short-name symlinks, fsync of the five dirs, chain file\n"
	       "          written, fsynced and renamed into layers/; remove renames, fsyncs, rmdirs, unlinks.\n"
	       "ratio: strata time per layer over the raw peer's.\n");
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench_mount [-n ITERATIONS] [-c LAYERS] SCRATCH_DIR\n"
		"  -n  measured get/put iterations per chain length (default %d, at least 30 for reporting)\n"
		"  -c  layers created and removed in the throughput phase (default %d)\n",
		DEFAULT_ITERS, DEFAULT_CREATE);
}

static int parse_count(const char *s, long min, long max, long *ret)
{
	char *end = NULL;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	*ret = v;
	return 0;
}

int main(int argc, char **argv)
{
	long iters = DEFAULT_ITERS, count = DEFAULT_CREATE;
	int opt;
	while ((opt = getopt(argc, argv, "hn:c:")) != -1) {
		switch (opt) {
		case 'n':
			if (parse_count(optarg, 1, 100000, &iters) < 0) {
				fail("-n %s: expected 1..100000", optarg);
				return 2;
			}
			break;
		case 'c':
			/* The raw peer's short names hold 5 digits. */
			if (parse_count(optarg, 1, 99999, &count) < 0) {
				fail("-c %s: expected 1..99999", optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}

	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	int rc = 1;
	strata_error err = {0};
	row rows[N_LENGTHS * API_COUNT];
	rate rates[4];
	double chain_seconds = 0;

	g.scratch = realpath(argv[optind], NULL);
	if (!g.scratch) {
		fail("scratch dir %s: %s", argv[optind], strerror(errno));
		goto out;
	}
	g.store_root = xasprintf("%s/store", g.scratch);
	g.cr_root = xasprintf("%s/store-cr", g.scratch);
	g.raw_root = xasprintf("%s/raw-cr", g.scratch);
	g.short_root = xasprintf("%s/short", g.scratch);
	if (!g.store_root || !g.cr_root || !g.raw_root || !g.short_root) {
		fail("out of memory");
		goto out;
	}
	/* Never delete what was there before: the trees must be ours. */
	const char *const mine[] = {g.store_root, g.cr_root, g.raw_root, g.short_root};
	for (size_t i = 0; i < sizeof(mine) / sizeof(mine[0]); i++) {
		struct stat st;
		if (lstat(mine[i], &st) == 0) {
			fail("%s already exists; give an empty scratch dir", mine[i]);
			free(g.store_root);
			free(g.cr_root);
			free(g.raw_root);
			free(g.short_root);
			g.store_root = g.cr_root = g.raw_root = g.short_root = NULL;
			goto out;
		}
	}
	g.drop_caches = access("/proc/sys/vm/drop_caches", W_OK) == 0;

	const char *const opts[API_COUNT][2] = {{"mountapi=new", NULL}, {"mountapi=legacy", NULL}};
	int r = strata_driver_open(g.store_root, opts[API_NEW], STRATA_OPEN_INIT, &g.drv[API_NEW], &err);
	if (r < 0) {
		fail_strata("strata_driver_open", r, &err);
		goto out;
	}
	r = strata_driver_open(g.store_root, opts[API_LEGACY], 0, &g.drv[API_LEGACY], &err);
	if (r < 0) {
		fail_strata("strata_driver_open", r, &err);
		goto out;
	}

	printf("bench_mount: store %s, %ld iterations (+%d warm-up) per chain length, %ld layers created/removed\n",
	       g.scratch, iters, WARMUP, count);
	printf("page cache dropped before each phase: %s\n", g.drop_caches ? "yes" : "no (not root?)");
	fflush(stdout);

	/* All creates (the chain, then the throughput phase's) come before the
	 * first remove: see phase_create_remove. */
	fprintf(stderr, "building a chain of %d layers...\n", CHAIN_MAX);
	if (build_chain(&chain_seconds) < 0 || make_short_links() < 0)
		goto out;
	fprintf(stderr, "create/remove of %ld layers...\n", count);
	if (phase_create_remove((size_t)count, rates) < 0)
		goto out;
	if (chdir(g.short_root) < 0) {
		fail("chdir %s: %s", g.short_root, strerror(errno));
		goto out;
	}
	for (size_t i = 0; i < N_LENGTHS; i++) {
		fprintf(stderr, "get/put of a %zu-layer chain...\n", chain_lengths[i]);
		if (phase_mount(chain_lengths[i], (int)iters, &rows[i * API_COUNT]) < 0)
			goto out;
	}

	print_table(rows, N_LENGTHS * API_COUNT);
	print_rates(rates, (size_t)count);
	printf("\nchain build: %d creates, each on the previous layer, in %.2f s (%.1f layers/s)\n", CHAIN_MAX,
	       chain_seconds, chain_seconds > 0 ? CHAIN_MAX / chain_seconds : 0);
	for (size_t i = 0; i < N_LENGTHS * API_COUNT; i++) {
		if (rows[i].layers != TARGET_LAYERS)
			continue;
		bool met = rows[i].get.med <= TARGET_GET_MS;
		printf("target: get of a %d-layer chain <= %.0f ms median, mountapi=%s: %.3f ms %s%s\n", TARGET_LAYERS,
		       TARGET_GET_MS, api_names[rows[i].api], rows[i].get.med, met ? "PASS" : "MISS",
		       rows[i].api == API_NEW ? "" : " (informational: the fallback)");
	}
	if (iters < 30)
		printf("note: fewer than 30 iterations; figures are not for reporting\n");
	rc = 0;
out:
	fflush(stdout);
	if (teardown() < 0)
		rc = 1;
	return rc;
}
