/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The merged tree of an image's layers, names only, in memory: what a
 * publisher asks about the layers under the one it publishes (thin_lower's
 * list, repo.h).  Layers are added base first from their tars, merged as
 * overlay merges them:
 *   - ".wh.NAME" deletes NAME (and everything under it) of the layers below;
 *   - "D/.wh..wh..opq" deletes everything under D of the layers below,
 *     whichever comes first in the tar, the marker or this layer's own
 *     entries under D (those stay); an opaque mark on the root is ignored,
 *     as overlay ignores it;
 *   - a non-directory entry replaces a directory of the layers below with
 *     everything under it; a parent a tar does not list is a directory all
 *     the same (extraction makes it).
 *
 * A node is keyed by its parent node and its own name (a hash table), so
 * memory is proportional to the number of entries and the length of their
 * base names, however deep the tree: a path is never stored whole.  Every
 * walk is a loop over parent and sibling links, never recursion: nothing
 * an image holds can exhaust the stack.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "strata.h"

typedef struct lower_index lower_index;

int lower_index_new(lower_index **ret);
/* Accepts NULL; returns NULL. */
lower_index *lower_index_free(lower_index *x);

/* Starts the next layer, on top of those added so far. */
int lower_index_next_layer(lower_index *x);

/*
 * One entry of the current layer, its name as in the tar ("./a/b/",
 * "a/.wh.c"): cleaned (no leading "./" or "/", no trailing "/").  -EINVAL
 * with *ret_why for a name with a ".." component, an empty one, or a
 * whiteout of no name (".wh.", ".wh..", ".wh..."); -ENOMEM.
 */
int lower_index_entry(lower_index *x, const char *name, bool is_dir, const char **ret_why);

/* Adds a layer tar (read from offset 0, any compression the library reads)
 * as the next layer; *ret_entries (may be NULL): its entries.  err names
 * the entry it refused. */
int lower_index_add_tar(lower_index *x, int tar_fd, size_t *ret_entries, strata_error *err);

/*
 * thin_lower's list: the names in `dir` ("" for the root; "a/b" relative,
 * a leading "/" or "./" is ignored) of the merged tree, NULL-terminated,
 * in no particular order, caller frees (strv).  A dir the tree does not
 * have, or a non-directory, gives an empty list.  `data` is the index.
 */
int lower_index_list(void *data, const char *dir, char ***ret_names);

/* Names in the tree (the root not counted). */
size_t lower_index_size(const lower_index *x);
