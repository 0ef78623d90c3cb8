/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/macro.h"

/* A chain never lists more than 500 parents plus slack for a corrupt file
 * to be recognised as such rather than read without bound. */
#define CHAIN_FILE_MAX ((STORE_MAX_PARENTS + 1) * (STRATA_ID_MAX + 1))

int chain_parse(const char *data, size_t len, char ***ret_ids, strata_error *err)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		if (data[i] == '\n')
			n++;
	if (len > 0 && data[len - 1] != '\n')
		n++;

	_cleanup_strv_free_ char **ids = calloc(n + 1, sizeof(char *));
	if (!ids)
		return -ENOMEM;

	size_t k = 0, start = 0;
	while (start < len) {
		const char *nl = memchr(data + start, '\n', len - start);
		size_t end = nl ? (size_t)(nl - data) : len;
		size_t ll = end - start;
		if (ll == 0)
			return error_setf(err, -EBADMSG, "empty line %zu", k + 1);
		if (memchr(data + start, '\0', ll))
			return error_setf(err, -EBADMSG, "NUL byte in line %zu", k + 1);
		ids[k] = strndup(data + start, ll);
		if (!ids[k])
			return -ENOMEM;
		int r = id_validate(ids[k], err);
		if (r < 0)
			return error_prefix(err, -EBADMSG, "line %zu", k + 1);
		k++;
		start = end + 1;
	}
	if (k > STORE_MAX_PARENTS)
		return error_setf(err, -EBADMSG, "%zu parents, more than overlay's %d", k, STORE_MAX_PARENTS);
	*ret_ids = TAKE_PTR(ids);
	return 0;
}

int chain_read(store *s, const char *id, char ***ret_parents, strata_error *err)
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int r = fs_read_at(s->layers_fd, id, CHAIN_FILE_MAX, &data, &len);
	if (r == -ENOENT)
		return error_setf(err, r, "no such layer");
	if (r < 0)
		return error_set(err, r, "read %s/layers/%s", s->root, id);
	r = chain_parse(data, len, ret_parents, err);
	if (r < 0)
		return error_prefix(err, r, "corrupt chain file %s/layers/%s", s->root, id);
	return 0;
}

int chain_format(const char *parent, char *const *grandparents, char **ret_data, size_t *ret_len)
{
	strbuf sb = {0};
	int r = 0;
	if (parent && *parent) {
		r = strbuf_appendf(&sb, "%s\n", parent);
		for (char *const *p = grandparents; r >= 0 && p && *p; p++)
			r = strbuf_appendf(&sb, "%s\n", *p);
	} else {
		r = strbuf_append(&sb, "", 0);
	}
	if (r < 0) {
		strbuf_release(&sb);
		return r;
	}
	*ret_len = sb.len;
	*ret_data = strbuf_detach(&sb);
	return *ret_data ? 0 : -ENOMEM;
}
