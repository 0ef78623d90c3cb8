/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The snapshots service on a strata store (see service.h for the crash
 * invariant: a layer is made before its row and removed after it).
 *
 * One mutex orders the metadata changes with the layer creations they
 * depend on; removals of layers (the slow part) run outside it.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "filter.h"
#include "service.h"
#include "util.h"

#define LAYER_PREFIX "ctd-"

struct snap_service {
	strata_driver *driver;
	meta *meta;
	pthread_mutex_t lock;
	snap_log_fn log;
	void *log_data;
	bool remote;  /* thin.repo set: remote snapshots */
	bool publish; /* thin.publisher set: commits on thin images publish */
};

static void info_releasep(snap_info *i)
{
	snap_info_release(i);
}
#define _cleanup_info_ __attribute__((cleanup(info_releasep)))

static void logf_(snap_service *svc, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void logf_(snap_service *svc, int level, const char *fmt, ...)
{
	if (!svc->log)
		return;
	char buf[STRATA_ERROR_MAX + 256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	svc->log(level, buf, svc->log_data);
}

static int status(snap_status *st, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int status(snap_status *st, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(st->message, sizeof(st->message), fmt, ap);
	va_end(ap);
	st->code = code;
	return code ? -1 : 0;
}

/* A meta or strata error as a gRPC status. */
static int status_from(snap_status *st, int r, const char *op, const char *key, const strata_error *err)
{
	int code = r == -ENOENT	     ? SNAP_NOT_FOUND
		   : r == -EEXIST    ? SNAP_ALREADY_EXISTS
		   : r == -ENOTEMPTY ? SNAP_FAILED_PRECONDITION
		   : r == -EINVAL    ? SNAP_INVALID_ARGUMENT
		   : r == -EBUSY     ? SNAP_FAILED_PRECONDITION
		   : r == -E2BIG     ? SNAP_FAILED_PRECONDITION
				     : SNAP_INTERNAL;
	return status(st, code, "%s %s: %s", op, Q(key), err && err->message[0] ? err->message : strerror(-r));
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int new_layer_id(char ret[sizeof(LAYER_PREFIX) + 24])
{
	unsigned char raw[12];
	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
		return -errno;
	int at = snprintf(ret, sizeof(LAYER_PREFIX) + 24, "%s", LAYER_PREFIX);
	for (size_t i = 0; i < sizeof(raw); i++)
		at += snprintf(ret + at, 3, "%02x", raw[i]);
	return 0;
}

static bool key_ok(const char *key, const char *op, snap_status *st)
{
	if (!key || !*key) {
		status(st, SNAP_INVALID_ARGUMENT, "%s: empty key", op);
		return false;
	}
	return true;
}

/* ---- start: the database and the layers agree ---- */

static int reconcile(snap_service *svc, strata_error *err)
{
	/* Rows whose layer is gone (removed outside strata's control). */
	char **ids = NULL;
	int r = meta_layer_ids(svc->meta, &ids, err);
	if (r < 0)
		return r;
	size_t n = 0, k = 0;
	while (ids[n])
		n++;
	char **gone = calloc(n + 1, sizeof(char *));
	for (size_t i = 0; gone && i < n; i++) {
		int e = strata_exists(svc->driver, ids[i], NULL);
		if (e == 0)
			gone[k++] = ids[i];
	}
	if (!gone)
		r = -ENOMEM;
	unsigned removed = 0;
	if (r >= 0 && k > 0) {
		r = meta_remove_ids(svc->meta, gone, &removed, err);
		if (r >= 0)
			logf_(svc, 1, "%u snapshots whose layers were gone forgotten (first: layer %s)", removed,
			      gone[0]);
	}
	free(gone);
	for (size_t i = 0; i < n; i++)
		free(ids[i]);
	free(ids);
	return r;
}

int snap_service_open(const char *root, const char *const *options, snap_log_fn log, void *log_data, snap_service **ret,
		      strata_error *err)
{
	snap_service *svc = calloc(1, sizeof(*svc));
	if (!svc)
		return -ENOMEM;
	svc->log = log;
	svc->log_data = log_data;
	for (const char *const *o = options; o && *o; o++)
		if (!strncmp(*o, "thin.repo=", 10) && (*o)[10])
			svc->remote = true;
		else if (!strncmp(*o, "thin.publisher=", 15) && (*o)[15])
			svc->publish = true;
	pthread_mutex_init(&svc->lock, NULL);
	int r = strata_driver_open(root, options, STRATA_OPEN_INIT, &svc->driver, err);
	if (r >= 0)
		r = strata_claim(svc->driver, "snapshotter", err);
	_cleanup_free_ char *dir = NULL, *db = NULL;
	if (r >= 0 && (asprintf(&dir, "%s/containerd", strata_driver_root(svc->driver)) < 0 ||
		       asprintf(&db, "%s/snapshots.db", dir) < 0))
		r = -ENOMEM;
	if (r >= 0 && mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = -errno;
		snprintf(err->message, sizeof(err->message), "snapshotter: mkdir %s: %s", dir, strerror(-r));
		err->code = -r;
	}
	if (r >= 0)
		r = meta_open(db, &svc->meta, err);
	if (r >= 0)
		r = reconcile(svc, err);
	if (r >= 0) {
		snap_status st = {0};
		if (snap_cleanup(svc, &st) < 0)
			logf_(svc, 1, "%s", st.message);
	}
	if (r < 0) {
		snap_service_free(svc);
		return r;
	}
	*ret = svc;
	return 0;
}

snap_service *snap_service_free(snap_service *svc)
{
	if (!svc)
		return NULL;
	meta_close(svc->meta);
	strata_driver_free(svc->driver);
	pthread_mutex_destroy(&svc->lock);
	free(svc);
	return NULL;
}

/* ---- the calls ---- */

static const char *label_get(const strata_kv_list *l, const char *key)
{
	for (size_t i = 0; l && i < l->n; i++)
		if (!strcmp(l->items[i].key, key))
			return l->items[i].value;
	return NULL;
}

#define LABEL_REF    "containerd.io/snapshot.ref"
#define LABEL_DIGEST "containerd.io/snapshot/cri.layer-digest"

/*
 * A remote snapshot: containerd is about to unpack the layer whose chain id
 * is `target` (label containerd.io/snapshot.ref); if the thin repository
 * holds it (by the digest label CRI and nerdctl set, or else found by its
 * chain id over the parent's), the layer becomes a committed thin snapshot
 * named `key`, and containerd, told AlreadyExists, skips the download.
 * 1 made, 0 not (an ordinary Prepare follows), -1 with *st on errors.
 */
static int remote(snap_service *svc, const char *key, const char *parent, const snap_info *up,
		  const strata_kv_list *labels, const char *target, char id[sizeof(LAYER_PREFIX) + 24], snap_status *st)
{
	strata_error err = {0};
	char found[STRATA_DIGEST_MAX];
	/* The parent's chain id: its own ref label, else what follows the
	 * last '/' of containerd's name for it (ns/N/chainid). */
	const char *pchain = NULL;
	if (up->key) {
		pchain = label_get(&up->labels, LABEL_REF);
		if (!pchain)
			pchain = strrchr(up->key, '/') ? strrchr(up->key, '/') + 1 : up->key;
	}
	/* The CRI's digest label names the layer's blob, which is its diff id
	 * only for an uncompressed layer: it is used when it gives the chain
	 * id (a label is a claim, checked), else the layer is looked for by
	 * its chain id, over every digest the repository holds. */
	const char *digest = label_get(labels, LABEL_DIGEST);
	char chain[STRATA_DIGEST_MAX];
	if (digest && (strata_chain_id(pchain, digest, chain) < 0 || strcmp(chain, target) != 0))
		digest = NULL;
	if (!digest) {
		int r = strata_thin_find_chain(svc->driver, NULL, pchain, target, found, &err);
		if (r == -ENOENT)
			return 0;
		if (r < 0) {
			logf_(svc, 1, "prepare %s: looking for %s in the thin repository: %s", Q(key), Q(target),
			      err.message);
			return 0;
		}
		digest = found;
	}
	if (new_layer_id(id) < 0)
		return 0;
	int r = strata_create_thin(svc->driver, id, up->id, digest, NULL, &err);
	if (r < 0) {
		if (r != -ENOENT)
			logf_(svc, 0, "prepare %s: %s: not a remote snapshot: %s", Q(key), Q(target), err.message);
		return 0;
	}
	int64_t now = now_ns();
	snap_info row = {
		.key = (char *)key,
		.parent = (parent && *parent) ? (char *)parent : NULL,
		.id = id,
		.kind = SNAP_COMMITTED,
		.created_ns = now,
		.updated_ns = now,
		.size = 0,
		.inodes = 0,
	};
	if (labels)
		row.labels = *labels;
	r = meta_insert(svc->meta, &row, &err);
	if (r < 0) {
		strata_remove(svc->driver, id, NULL);
		return status_from(st, r, "prepare", key, &err);
	}
	logf_(svc, 0, "prepare %s: layer %s (%s) is in the thin repository: thin layer %s", Q(key), Q(target), digest,
	      id);
	return 1;
}

static int prepare(snap_service *svc, const char *key, const char *parent, const strata_kv_list *labels, bool view,
		   char ret_id[sizeof(LAYER_PREFIX) + 24], snap_status *st)
{
	const char *op = view ? "view" : "prepare";
	strata_error err = {0};
	_cleanup_info_ snap_info have = {0};
	int r = meta_get(svc->meta, key, &have, &err);
	if (r == 0)
		return status(st, SNAP_ALREADY_EXISTS, "%s %s: snapshot already exists", op, Q(key));
	if (r != -ENOENT)
		return status_from(st, r, op, key, &err);
	_cleanup_info_ snap_info up = {0};
	if (parent && *parent) {
		r = meta_get(svc->meta, parent, &up, &err);
		if (r == -ENOENT)
			return status(st, SNAP_NOT_FOUND, "%s %s: parent %s does not exist", op, Q(key), Q(parent));
		if (r < 0)
			return status_from(st, r, op, key, &err);
		if (up.kind != SNAP_COMMITTED)
			return status(st, SNAP_INVALID_ARGUMENT, "%s %s: parent %s is not a committed snapshot", op,
				      Q(key), Q(parent));
	}
	const char *target = label_get(labels, LABEL_REF);
	if (target && !view && svc->remote) {
		r = remote(svc, key, parent, &up, labels, target, ret_id, st);
		if (r < 0)
			return r;
		if (r > 0)
			return status(st, SNAP_ALREADY_EXISTS,
				      "prepare %s: target snapshot %s already exists (a thin layer of the repository)",
				      Q(key), Q(target));
	}
	r = new_layer_id(ret_id);
	if (r < 0)
		return status(st, SNAP_INTERNAL, "%s %s: getrandom: %s", op, Q(key), strerror(-r));
	r = view ? strata_create(svc->driver, ret_id, up.id, NULL, &err)
		 : strata_create_rw(svc->driver, ret_id, up.id, NULL, &err);
	if (r < 0)
		return status_from(st, r, op, key, &err);
	int64_t now = now_ns();
	snap_info row = {
		.key = (char *)key,
		.parent = (parent && *parent) ? (char *)parent : NULL,
		.id = ret_id,
		.kind = view ? SNAP_VIEW : SNAP_ACTIVE,
		.created_ns = now,
		.updated_ns = now,
		.size = -1,
		.inodes = -1,
	};
	if (labels)
		row.labels = *labels;
	r = meta_insert(svc->meta, &row, &err);
	if (r < 0) {
		strata_error rm = {0};
		if (strata_remove(svc->driver, ret_id, &rm) < 0)
			logf_(svc, 1, "%s %s: remove layer %s after a failed insert: %s", op, Q(key), ret_id,
			      rm.message);
		return status_from(st, r, op, key, &err);
	}
	return 0;
}

/*
 * The bytes of mount data containerd will hand mount(2), which takes one
 * page: when the options pass a page less 512, containerd chdirs to the
 * lowers' common parent dir (here ROOT/l/) and lists them relative to it.
 */
#define MOUNT_DATA_MAX 4096

static int mount_data_size(const strata_mount_spec *m)
{
	size_t total = 0, lower_at = SIZE_MAX;
	for (size_t i = 0; m->options[i]; i++) {
		total += strlen(m->options[i]) + (i > 0);
		if (!strncmp(m->options[i], "lowerdir=", 9))
			lower_at = i;
	}
	if (strcmp(m->type, "overlay") != 0 || total < MOUNT_DATA_MAX - 512 || lower_at == SIZE_MAX)
		return (int)(total > INT_MAX ? INT_MAX : total);
	const char *lower = m->options[lower_at] + 9;
	/* The common prefix of the lowers, cut back to a '/'. */
	size_t common = strcspn(lower, ":");
	for (const char *p = lower; *p;) {
		const char *q = p + strcspn(p, ":");
		size_t k = 0;
		while (k < common && k < (size_t)(q - p) && p[k] == lower[k])
			k++;
		common = k;
		p = *q ? q + 1 : q;
	}
	while (common > 0 && lower[common - 1] != '/')
		common--;
	if (common <= 1)
		return (int)(total > INT_MAX ? INT_MAX : total);
	/* Each lower loses the prefix. */
	size_t n = 1;
	for (const char *p = lower; *p; p++)
		n += *p == ':';
	size_t compact = total - n * common;
	return (int)(compact > INT_MAX ? INT_MAX : compact);
}

int snap_prepare(snap_service *svc, const char *key, const char *parent, const strata_kv_list *labels, bool view,
		 strata_mount_spec *ret_mount, snap_status *st)
{
	*st = (snap_status){0};
	const char *op = view ? "view" : "prepare";
	if (!key_ok(key, op, st))
		return -1;
	char id[sizeof(LAYER_PREFIX) + 24];
	pthread_mutex_lock(&svc->lock);
	int r = prepare(svc, key, parent, labels, view, id, st);
	pthread_mutex_unlock(&svc->lock);
	if (r < 0)
		return r;
	strata_error err = {0};
	r = strata_mounts(svc->driver, id, view ? STRATA_MOUNTS_VIEW : 0, ret_mount, &err);
	if (r < 0) {
		status_from(st, r, op, key, &err);
	} else if ((r = mount_data_size(ret_mount)) > MOUNT_DATA_MAX) {
		status(st, SNAP_FAILED_PRECONDITION,
		       "%s %s: the chain is too long for containerd's mount(2): its options take %d bytes, more than "
		       "the %d of a page",
		       op, Q(key), r, MOUNT_DATA_MAX);
		strata_mount_spec_clear(ret_mount);
	} else {
		return 0;
	}
	/* Nothing half-made: the snapshot goes again. */
	snap_status ignored;
	snap_remove(svc, key, &ignored);
	return -1;
}

/* The row of `key`, read under the lock; *st set when there is none. */
static int lookup(snap_service *svc, const char *op, const char *key, snap_info *ret, snap_status *st)
{
	*st = (snap_status){0};
	if (!key_ok(key, op, st))
		return -1;
	strata_error err = {0};
	pthread_mutex_lock(&svc->lock);
	int r = meta_get(svc->meta, key, ret, &err);
	pthread_mutex_unlock(&svc->lock);
	return r < 0 ? status_from(st, r, op, key, &err) : 0;
}

int snap_mounts(snap_service *svc, const char *key, strata_mount_spec *ret_mount, snap_status *st)
{
	_cleanup_info_ snap_info info = {0};
	if (lookup(svc, "mounts", key, &info, st) < 0)
		return -1;
	strata_error err = {0};
	if (info.kind == SNAP_COMMITTED)
		return status(st, SNAP_FAILED_PRECONDITION, "mounts %s: a committed snapshot has no mounts", Q(key));
	int r = strata_mounts(svc->driver, info.id, info.kind == SNAP_VIEW ? STRATA_MOUNTS_VIEW : 0, ret_mount, &err);
	return r < 0 ? status_from(st, r, "mounts", key, &err) : 0;
}

int snap_commit(snap_service *svc, const char *name, const char *key, const strata_kv_list *labels, snap_status *st)
{
	*st = (snap_status){0};
	if (!key_ok(key, "commit", st) || !key_ok(name, "commit", st))
		return -1;
	strata_error err = {0};
	pthread_mutex_lock(&svc->lock);
	_cleanup_info_ snap_info info = {0};
	int r = meta_get(svc->meta, key, &info, &err);
	if (r < 0) {
		pthread_mutex_unlock(&svc->lock);
		return status_from(st, r, "commit", key, &err);
	}
	if (info.kind != SNAP_ACTIVE) {
		pthread_mutex_unlock(&svc->lock);
		return status(st, SNAP_FAILED_PRECONDITION, "commit %s: snapshot is not active (it is a %s)", Q(key),
			      info.kind == SNAP_VIEW ? "view" : "committed snapshot");
	}
	_cleanup_info_ snap_info taken = {0};
	r = meta_get(svc->meta, name, &taken, &err);
	if (r == 0) {
		pthread_mutex_unlock(&svc->lock);
		return status(st, SNAP_ALREADY_EXISTS, "commit %s as %s: snapshot %s already exists", Q(key), Q(name),
			      Q(name));
	}
	pthread_mutex_unlock(&svc->lock);
	/* What containerd wrote through the mounts is final now: a layer
	 * holding only thin.json is a thin layer, whose children mount its
	 * image.  The walk for the usage runs without the service's lock (a
	 * big layer takes a while); the checks above are made again after. */
	int thin = 0, published = 0;
	int64_t size = -1, inodes = -1;
	r = strata_seal(svc->driver, info.id, &thin, &err);
	/* On a thin image, with a publisher: the layer goes to the
	 * repository and becomes thin, as a commit through strata serve.
	 * One still mounted somewhere (containerd commits a running
	 * container's snapshot) stays as it is. */
	if (r >= 0 && !thin && svc->publish) {
		r = strata_publish(svc->driver, info.id, &published, &err);
		if (r == -EBUSY) {
			logf_(svc, 1, "commit %s: not published: %s", Q(key), err.message);
			r = 0;
		}
	}
	if (r >= 0)
		r = strata_usage(svc->driver, info.id, &size, &inodes, &err);
	if (r < 0)
		return status_from(st, r, "commit", key, &err);
	pthread_mutex_lock(&svc->lock);
	_cleanup_info_ snap_info again = {0};
	r = meta_get(svc->meta, key, &again, &err);
	if (r >= 0 && (again.kind != SNAP_ACTIVE || strcmp(again.id, info.id) != 0)) {
		/* Removed (and perhaps made again) meanwhile. */
		snprintf(err.message, sizeof(err.message), "the snapshot was removed while it was being committed");
		r = -ENOENT;
	}
	if (r >= 0)
		r = meta_commit(svc->meta, key, name, labels, size, inodes, now_ns(), &err);
	pthread_mutex_unlock(&svc->lock);
	if (r < 0)
		return status_from(st, r, "commit", key, &err);
	if (thin)
		logf_(svc, 0, "commit %s as %s: a thin layer (layer %s)", Q(key), Q(name), info.id);
	if (published)
		logf_(svc, 0, "commit %s as %s: published into the repository, now a thin layer (layer %s)", Q(key),
		      Q(name), info.id);
	return 0;
}

int snap_remove(snap_service *svc, const char *key, snap_status *st)
{
	*st = (snap_status){0};
	if (!key_ok(key, "remove", st))
		return -1;
	strata_error err = {0};
	_cleanup_free_ char *id = NULL;
	pthread_mutex_lock(&svc->lock);
	int r = meta_remove(svc->meta, key, &id, &err);
	pthread_mutex_unlock(&svc->lock);
	if (r == -ENOTEMPTY)
		return status(st, SNAP_FAILED_PRECONDITION, "remove %s: cannot remove snapshot with child", Q(key));
	if (r < 0)
		return status_from(st, r, "remove", key, &err);
	/* The row is gone: the layer is debris now, which Cleanup and the
	 * next start remove if this fails. */
	r = strata_remove(svc->driver, id, &err);
	if (r < 0)
		logf_(svc, 1, "remove %s: layer %s stays until the next cleanup: %s", Q(key), id, err.message);
	return 0;
}

int snap_stat(snap_service *svc, const char *key, snap_info *ret, snap_status *st)
{
	return lookup(svc, "stat", key, ret, st);
}

static int label_set(strata_kv_list *l, const char *key, const char *value)
{
	for (size_t i = 0; i < l->n; i++) {
		if (strcmp(l->items[i].key, key))
			continue;
		char *v = strdup(value);
		if (!v)
			return -ENOMEM;
		free(l->items[i].value);
		l->items[i].value = v;
		return 0;
	}
	strata_kv *items = realloc(l->items, (l->n + 1) * sizeof(*items));
	if (!items)
		return -ENOMEM;
	l->items = items;
	items[l->n].key = strdup(key);
	items[l->n].value = strdup(value);
	if (!items[l->n].key || !items[l->n].value) {
		free(items[l->n].key);
		free(items[l->n].value);
		return -ENOMEM;
	}
	l->n++;
	return 0;
}

/* Labels with empty values are dropped (containerd's way to unset one). */
static void labels_compact(strata_kv_list *l)
{
	size_t k = 0;
	for (size_t i = 0; i < l->n; i++) {
		if (l->items[i].value[0]) {
			l->items[k++] = l->items[i];
		} else {
			free(l->items[i].key);
			free(l->items[i].value);
		}
	}
	l->n = k;
}

int snap_update(snap_service *svc, const snap_info *info, char *const *paths, size_t n_paths, snap_info *ret,
		snap_status *st)
{
	*st = (snap_status){0};
	const char *key = info->key;
	if (!key_ok(key, "update", st))
		return -1;
	strata_error err = {0};
	pthread_mutex_lock(&svc->lock);
	_cleanup_info_ snap_info cur = {0};
	int r = meta_get(svc->meta, key, &cur, &err);
	if (r < 0) {
		pthread_mutex_unlock(&svc->lock);
		return status_from(st, r, "update", key, &err);
	}
	strata_kv_list next = {0};
	bool whole = n_paths == 0;
	for (size_t i = 0; i < n_paths && r >= 0; i++) {
		if (!strcmp(paths[i], "labels"))
			whole = true;
		else if (strncmp(paths[i], "labels.", 7) != 0) {
			pthread_mutex_unlock(&svc->lock);
			return status(st, SNAP_INVALID_ARGUMENT, "update %s: cannot update the field \"%s\"", Q(key),
				      Q(paths[i]));
		}
	}
	const strata_kv_list *base = whole ? &info->labels : &cur.labels;
	for (size_t i = 0; i < base->n && r >= 0; i++)
		r = label_set(&next, base->items[i].key, base->items[i].value);
	for (size_t i = 0; i < n_paths && r >= 0; i++) {
		if (strncmp(paths[i], "labels.", 7) != 0)
			continue;
		const char *v = label_get(&info->labels, paths[i] + 7);
		r = label_set(&next, paths[i] + 7, v ? v : "");
	}
	if (r >= 0) {
		labels_compact(&next);
		r = meta_set_labels(svc->meta, key, &next, now_ns(), &err);
	}
	if (r >= 0)
		r = meta_get(svc->meta, key, ret, &err);
	pthread_mutex_unlock(&svc->lock);
	strata_kv_list_clear(&next);
	return r < 0 ? status_from(st, r, "update", key, &err) : 0;
}

typedef struct list_ctx {
	snap_filter *filter;
	meta_walk_fn fn;
	void *data;
} list_ctx;

static int list_one(const snap_info *info, void *data)
{
	list_ctx *c = data;
	return snap_filter_match(c->filter, info) ? c->fn(info, c->data) : 0;
}

int snap_list(snap_service *svc, char *const *filters, size_t n_filters, meta_walk_fn fn, void *data, snap_status *st)
{
	*st = (snap_status){0};
	strata_error err = {0};
	list_ctx c = {.fn = fn, .data = data};
	int r = snap_filter_parse(filters, n_filters, &c.filter, &err);
	if (r < 0)
		return status(st, SNAP_INVALID_ARGUMENT, "list: %s", err.message);
	/* Under the lock: the walk reads one consistent state.  The callback
	 * only queues what it is given. */
	pthread_mutex_lock(&svc->lock);
	r = meta_walk(svc->meta, list_one, &c, &err);
	pthread_mutex_unlock(&svc->lock);
	snap_filter_free(c.filter);
	return r < 0 ? status_from(st, r, "list", "", &err) : 0;
}

int snap_usage(snap_service *svc, const char *key, int64_t *ret_size, int64_t *ret_inodes, snap_status *st)
{
	_cleanup_info_ snap_info info = {0};
	if (lookup(svc, "usage", key, &info, st) < 0)
		return -1;
	if (info.kind == SNAP_ACTIVE || info.size < 0) {
		strata_error err = {0};
		int r = strata_usage(svc->driver, info.id, ret_size, ret_inodes, &err);
		return r < 0 ? status_from(st, r, "usage", key, &err) : 0;
	}
	*ret_size = info.size;
	*ret_inodes = info.inodes;
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int snap_cleanup(snap_service *svc, snap_status *st)
{
	*st = (snap_status){0};
	strata_error err = {0};
	char **layers = NULL, **named = NULL;
	pthread_mutex_lock(&svc->lock);
	int r = strata_layers(svc->driver, LAYER_PREFIX, &layers, &err);
	if (r >= 0)
		r = meta_layer_ids(svc->meta, &named, &err);
	pthread_mutex_unlock(&svc->lock);
	size_t n_named = 0, removed = 0;
	while (named && named[n_named])
		n_named++;
	for (size_t i = 0; r >= 0 && layers[i]; i++) {
		if (bsearch(&layers[i], named, n_named, sizeof(char *), cmp_str))
			continue;
		/* Made by a Prepare whose row is not written yet? Such a
		 * layer is younger than the lock we took: look again under
		 * it, just before removing. */
		pthread_mutex_lock(&svc->lock);
		char **again = NULL;
		int g = meta_layer_ids(svc->meta, &again, NULL);
		size_t n_again = 0;
		while (again && again[n_again])
			n_again++;
		bool found = g >= 0 && bsearch(&layers[i], again, n_again, sizeof(char *), cmp_str);
		strata_error rm = {0};
		if (g >= 0 && !found) {
			if (strata_remove(svc->driver, layers[i], &rm) < 0)
				logf_(svc, 1, "cleanup: layer %s: %s", layers[i], rm.message);
			else
				removed++;
		}
		pthread_mutex_unlock(&svc->lock);
		for (size_t k = 0; again && again[k]; k++)
			free(again[k]);
		free(again);
	}
	for (size_t i = 0; layers && layers[i]; i++)
		free(layers[i]);
	free(layers);
	for (size_t i = 0; named && named[i]; i++)
		free(named[i]);
	free(named);
	if (r < 0)
		return status_from(st, r, "cleanup", strata_driver_root(svc->driver), &err);
	if (removed)
		logf_(svc, 0, "cleanup: removed %zu layers that no snapshot names", removed);
	return 0;
}
