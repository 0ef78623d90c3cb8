/* SPDX-License-Identifier: Apache-2.0 */
/* uid/gid maps, as user namespaces and Docker's --userns-remap use them. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tar/tar.h"
#include "util/banned.h"
#include "util/error.h"

static int parse_u32(const char *s, const char **end, uint32_t *ret)
{
	if (*s < '0' || *s > '9')
		return -EINVAL;
	uint64_t v = 0;
	while (*s >= '0' && *s <= '9') {
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > UINT32_MAX)
			return -ERANGE;
		s++;
	}
	*end = s;
	*ret = (uint32_t)v;
	return 0;
}

static bool overlaps(uint32_t a, uint32_t b, uint32_t size_a, uint32_t size_b)
{
	uint64_t ea = (uint64_t)a + size_a, eb = (uint64_t)b + size_b;
	return a < eb && b < ea;
}

int idmap_add(idmap *m, const char *spec, strata_error *err)
{
	idmap_range r;
	const char *p = spec;
	if (parse_u32(p, &p, &r.container) < 0 || *p++ != ':' || parse_u32(p, &p, &r.host) < 0 || *p++ != ':' ||
	    parse_u32(p, &p, &r.size) < 0 || *p != '\0' || r.size == 0)
		return error_setf(err, -EINVAL, "id map \"%s\": expected CONTAINER:HOST:SIZE with SIZE > 0",
				  QUOTE(spec));
	if ((uint64_t)r.container + r.size > (uint64_t)UINT32_MAX + 1 ||
	    (uint64_t)r.host + r.size > (uint64_t)UINT32_MAX + 1)
		return error_setf(err, -ERANGE, "id map \"%s\": range goes past 4294967295", QUOTE(spec));
	for (size_t i = 0; i < m->n; i++) {
		const idmap_range *o = &m->ranges[i];
		if (overlaps(o->container, r.container, o->size, r.size) || overlaps(o->host, r.host, o->size, r.size))
			return error_setf(err, -EINVAL, "id map \"%s\" overlaps %" PRIu32 ":%" PRIu32 ":%" PRIu32,
					  QUOTE(spec), o->container, o->host, o->size);
	}
	idmap_range *nr = realloc(m->ranges, (m->n + 1) * sizeof(*nr));
	if (!nr)
		return -ENOMEM;
	m->ranges = nr;
	m->ranges[m->n++] = r;
	return 0;
}

void idmap_release(idmap *m)
{
	free(m->ranges);
	m->ranges = NULL;
	m->n = 0;
}

static int map(const idmap *m, uint32_t id, bool to_host, uint32_t *ret)
{
	if (!m || m->n == 0) {
		*ret = id;
		return 0;
	}
	for (size_t i = 0; i < m->n; i++) {
		const idmap_range *r = &m->ranges[i];
		uint32_t from = to_host ? r->container : r->host, to = to_host ? r->host : r->container;
		if (id >= from && (uint64_t)id < (uint64_t)from + r->size) {
			*ret = to + (id - from);
			return 0;
		}
	}
	return -ERANGE;
}

int idmap_to_host(const idmap *m, uint32_t id, uint32_t *ret)
{
	return map(m, id, true, ret);
}

int idmap_to_container(const idmap *m, uint32_t id, uint32_t *ret)
{
	return map(m, id, false, ret);
}
