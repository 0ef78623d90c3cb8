/* SPDX-License-Identifier: Apache-2.0 */
/*
 * containerd's filter syntax (github.com/containerd/containerd/filters), as
 * List receives it: each string a conjunction of comma-separated terms, the
 * strings alternatives.  A term is `FIELD`, `FIELD==VALUE`, `FIELD!=VALUE`
 * or `FIELD~=REGEXP`; FIELD is a dot-separated path whose parts may be
 * quoted ("..." with backslash escapes, or /.../), VALUE likewise or bare.
 * Snapshot fields: name, parent, kind (view|active|committed), and
 * labels.<key> (`labels."containerd.io/gc.root"`).
 */
#pragma once

#include <stdbool.h>

#include "meta.h"

typedef struct snap_filter snap_filter;

/* Parses the n strings (none: matches everything).  -EINVAL with a message
 * naming the filter and the offset on a syntax error or a bad regexp. */
int snap_filter_parse(char *const *filters, size_t n, snap_filter **ret, strata_error *err);
bool snap_filter_match(const snap_filter *f, const snap_info *info);
snap_filter *snap_filter_free(snap_filter *f);
