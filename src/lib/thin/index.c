/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The merged tree of an image's layers in memory (see index.h).
 *
 * Each node records the last layer that had it (`gen`): a layer's own
 * entries and their parents get its number.  A whiteout or an opaque
 * marker of layer k then deletes, at and under the name it targets, every
 * node older than k, and keeps (and looks under) the nodes of layer k:
 * this makes the result independent of the order of entries within the
 * layer's tar, as it is on disk.
 */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tar/tar.h"
#include "thin/index.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/macro.h"

typedef struct index_node index_node;
struct index_node {
	index_node *parent;
	index_node *first_child, *prev, *next; /* siblings: a doubly linked list */
	index_node *hash_next;		       /* the bucket's chain */
	size_t hash;
	uint32_t gen; /* the last layer that had this node */
	bool dir;
	size_t len;
	char name[]; /* the base name, NUL-terminated */
};

struct lower_index {
	index_node *root;
	index_node **buckets;
	size_t n_buckets; /* a power of two */
	size_t n_nodes;	  /* without the root */
	uint32_t gen;	  /* the current layer; 0 before the first */
};

static size_t node_hash(const index_node *parent, const char *name, size_t len)
{
	/* FNV-1a over the name, seeded with the parent's address. */
	uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)(uintptr_t)parent;
	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)name[i];
		h *= 0x100000001b3ull;
	}
	return (size_t)(h ^ (h >> 32));
}

int lower_index_new(lower_index **ret)
{
	lower_index *x = calloc(1, sizeof(*x));
	if (!x)
		return -ENOMEM;
	x->root = calloc(1, sizeof(index_node) + 1);
	x->n_buckets = 1024;
	x->buckets = calloc(x->n_buckets, sizeof(index_node *));
	if (!x->root || !x->buckets) {
		free(x->root);
		free(x->buckets);
		free(x);
		return -ENOMEM;
	}
	x->root->dir = true;
	x->root->gen = UINT32_MAX; /* never pruned */
	*ret = x;
	return 0;
}

lower_index *lower_index_free(lower_index *x)
{
	if (!x)
		return NULL;
	for (size_t b = 0; b < x->n_buckets; b++)
		for (index_node *n = x->buckets[b], *next; n; n = next) {
			next = n->hash_next;
			free(n);
		}
	free(x->buckets);
	free(x->root);
	free(x);
	return NULL;
}

size_t lower_index_size(const lower_index *x)
{
	return x->n_nodes;
}

int lower_index_next_layer(lower_index *x)
{
	if (x->gen == UINT32_MAX - 1)
		return -E2BIG;
	x->gen++;
	return 0;
}

static index_node *find_child(const lower_index *x, const index_node *parent, const char *name, size_t len)
{
	size_t h = node_hash(parent, name, len);
	for (index_node *n = x->buckets[h & (x->n_buckets - 1)]; n; n = n->hash_next)
		if (n->hash == h && n->parent == parent && n->len == len && !memcmp(n->name, name, len))
			return n;
	return NULL;
}

/* Doubles the table at one node per bucket on average. */
static int maybe_grow(lower_index *x)
{
	if (x->n_nodes < x->n_buckets)
		return 0;
	size_t nb = x->n_buckets * 2;
	index_node **b = calloc(nb, sizeof(*b));
	if (!b)
		return -ENOMEM;
	for (size_t i = 0; i < x->n_buckets; i++)
		for (index_node *n = x->buckets[i], *next; n; n = next) {
			next = n->hash_next;
			n->hash_next = b[n->hash & (nb - 1)];
			b[n->hash & (nb - 1)] = n;
		}
	free(x->buckets);
	x->buckets = b;
	x->n_buckets = nb;
	return 0;
}

static int add_child(lower_index *x, index_node *parent, const char *name, size_t len, bool dir, index_node **ret)
{
	if (maybe_grow(x) < 0)
		return -ENOMEM;
	index_node *n = calloc(1, sizeof(*n) + len + 1);
	if (!n)
		return -ENOMEM;
	memcpy(n->name, name, len);
	n->len = len;
	n->dir = dir;
	n->gen = x->gen;
	n->parent = parent;
	n->hash = node_hash(parent, name, len);
	n->hash_next = x->buckets[n->hash & (x->n_buckets - 1)];
	x->buckets[n->hash & (x->n_buckets - 1)] = n;
	n->next = parent->first_child;
	if (n->next)
		n->next->prev = n;
	parent->first_child = n;
	x->n_nodes++;
	*ret = n;
	return 0;
}

/* Unlinks and frees a node without children. */
static void remove_leaf(lower_index *x, index_node *n)
{
	index_node **p = &x->buckets[n->hash & (x->n_buckets - 1)];
	while (*p != n)
		p = &(*p)->hash_next;
	*p = n->hash_next;
	if (n->prev)
		n->prev->next = n->next;
	else
		n->parent->first_child = n->next;
	if (n->next)
		n->next->prev = n->prev;
	x->n_nodes--;
	free(n);
}

/* Removes everything under `top` (and `top` itself unless keep_top):
 * leaves first, going down first children and back up parent links. */
static void remove_tree(lower_index *x, index_node *top, bool keep_top)
{
	index_node *n = top;
	for (;;) {
		if (n->first_child) {
			n = n->first_child;
			continue;
		}
		if (n == top)
			break;
		index_node *up = n->parent;
		remove_leaf(x, n);
		n = up;
	}
	if (!keep_top)
		remove_leaf(x, top);
}

/* The node after n in a pre-order walk of the tree under `top` that skips
 * what is under n; NULL at the end. */
static index_node *next_skipping(const index_node *n, const index_node *top)
{
	while (n != top && !n->next)
		n = n->parent;
	return n == top ? NULL : n->next;
}

/* What the layers below the current one had at and under n goes; what the
 * current layer has there stays.  Under a node of the current layer, its
 * older children are pruned the same way. */
static void prune_older(lower_index *x, index_node *top)
{
	if (top->gen < x->gen) {
		remove_tree(x, top, false);
		return;
	}
	index_node *n = top->first_child;
	while (n) {
		index_node *next;
		if (n->gen < x->gen) {
			next = next_skipping(n, top);
			remove_tree(x, n, false);
		} else {
			next = n->first_child ? n->first_child : next_skipping(n, top);
		}
		n = next;
	}
}

/* The children of dir, without dir itself: an opaque directory. */
static void prune_older_children(lower_index *x, index_node *dir)
{
	for (index_node *c = dir->first_child, *next; c; c = next) {
		next = c->next; /* c (with its subtree) may go; its sibling stays */
		prune_older(x, c);
	}
}

/* The child `name` of parent as a node of the current layer: made if
 * missing; a directory replacing a non-directory, or the other way round
 * (the directory's subtree goes with it). */
static int touch(lower_index *x, index_node *parent, const char *name, size_t len, bool dir, index_node **ret)
{
	index_node *n = find_child(x, parent, name, len);
	if (!n)
		return add_child(x, parent, name, len, dir, ret);
	if (!dir && n->dir)
		remove_tree(x, n, true);
	n->dir = dir;
	n->gen = x->gen;
	*ret = n;
	return 0;
}

int lower_index_entry(lower_index *x, const char *name, bool is_dir, const char **ret_why)
{
	/* A leading "/" is dropped, as GNU tar drops it. */
	const char *rel = name;
	while (rel && *rel == '/')
		rel++;
	if (rel && !*rel && rel != name)
		rel = ".";
	_cleanup_free_ char *path = NULL;
	int r = tar_clean_name(rel, &path, ret_why);
	if (r < 0)
		return r;
	if (x->gen == 0 && (r = lower_index_next_layer(x)) < 0)
		return r;
	/* What apply does: aufs's bookkeeping at the root (.wh..wh.plnk/...)
	 * is no content; a directory named .wh.* is refused. */
	if (!*path || (!strncmp(path, WHITEOUT_META, sizeof(WHITEOUT_META) - 1) && strcmp(path, WHITEOUT_OPAQUE) != 0))
		return 0;
	char *last = strrchr(path, '/');
	for (const char *c = path; last && c < last; c = strchrnul(c, '/') + 1)
		if (!strncmp(c, WHITEOUT_PREFIX, sizeof(WHITEOUT_PREFIX) - 1)) {
			*ret_why = "a directory in its path is named " WHITEOUT_PREFIX "*";
			return -EINVAL;
		}
	/* The parents: directories of this layer. */
	index_node *parent = x->root;
	char *base = path;
	for (char *slash; (slash = strchr(base, '/'));) {
		r = touch(x, parent, base, (size_t)(slash - base), true, &parent);
		if (r < 0)
			return r;
		base = slash + 1;
	}
	size_t len = strlen(base);
	if (strncmp(base, WHITEOUT_PREFIX, sizeof(WHITEOUT_PREFIX) - 1) != 0) {
		index_node *n;
		return touch(x, parent, base, len, is_dir, &n);
	}
	if (!strcmp(base, WHITEOUT_OPAQUE)) {
		if (parent != x->root) /* overlay ignores an opaque root */
			prune_older_children(x, parent);
		return 0;
	}
	if (!strncmp(base, WHITEOUT_META, sizeof(WHITEOUT_META) - 1))
		return 0; /* aufs's bookkeeping (.wh..wh.plnk, ...): no name */
	const char *target = base + sizeof(WHITEOUT_PREFIX) - 1;
	if (!*target || !strcmp(target, ".") || !strcmp(target, "..")) {
		*ret_why = "a whiteout of no name";
		return -EINVAL;
	}
	index_node *n = find_child(x, parent, target, strlen(target));
	if (n)
		prune_older(x, n);
	return 0;
}

int lower_index_add_tar(lower_index *x, int tar_fd, size_t *ret_entries, strata_error *err)
{
	if (lseek(tar_fd, 0, SEEK_SET) < 0)
		return error_set(err, negerrno(), "rewind the layer tar");
	int r = lower_index_next_layer(x);
	if (r < 0)
		return error_setf(err, r, "too many layers");
	struct archive *a = NULL;
	r = tar_reader_open_fd(tar_fd, &a, err);
	if (r < 0)
		return r;
	struct archive_entry *e;
	size_t entries = 0;
	int ar;
	while ((ar = archive_read_next_header(a, &e)) == ARCHIVE_OK || ar == ARCHIVE_WARN) {
		entries++;
		const char *name = archive_entry_pathname(e), *why = NULL;
		bool dir = archive_entry_filetype(e) == AE_IFDIR && !archive_entry_hardlink(e);
		r = lower_index_entry(x, name, dir, &why);
		if (r < 0) {
			if (r == -EINVAL)
				error_setf(err, r, "entry \"%s\": %s", QUOTE(name), why);
			archive_read_free(a);
			return r;
		}
	}
	if (ar != ARCHIVE_EOF)
		r = error_setf(err, -EINVAL, "read the layer tar: %s", archive_error_string(a));
	archive_read_free(a);
	if (r < 0)
		return r;
	if (ret_entries)
		*ret_entries = entries;
	return 0;
}

int lower_index_list(void *data, const char *dir, char ***ret_names)
{
	lower_index *x = data;
	const index_node *n = x->root;
	for (const char *p = dir ? dir : ""; n && *p;) {
		const char *e = strchrnul(p, '/');
		size_t len = (size_t)(e - p);
		if (len > 0 && !(len == 1 && p[0] == '.'))
			n = find_child(x, n, p, len);
		if (n && !n->dir)
			n = NULL;
		p = *e ? e + 1 : e;
	}
	size_t count = 0;
	for (const index_node *c = n ? n->first_child : NULL; c; c = c->next)
		count++;
	char **names = calloc(count + 1, sizeof(char *));
	if (!names)
		return -ENOMEM;
	size_t i = 0;
	for (const index_node *c = n ? n->first_child : NULL; c; c = c->next)
		if (!(names[i++] = strdup(c->name))) {
			strv_free(names);
			return -ENOMEM;
		}
	*ret_names = names;
	return 0;
}
