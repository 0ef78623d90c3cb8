/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "util/banned.h"
#include "util/error.h"

static bool id_char(char c, bool first)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return !first && (c == '_' || c == '.' || c == '-');
}

/*
 * Ids come from outside (Docker sends 64 hex chars, containers
 * "<hex>-init") and become file names under the root, so they are checked
 * before anything touches disk: [A-Za-z0-9][A-Za-z0-9_.-]*, at most 128
 * bytes.  The first character excludes ".", ".." and hidden names, so an id
 * can never climb out of its directory or collide with a temp file.  Ids
 * ending in "-removing" are refused because that suffix marks the remains
 * of an interrupted remove, which init deletes.
 */
int id_validate(const char *id, strata_error *err)
{
	if (!id || !*id)
		return error_setf(err, -EINVAL, "invalid id \"\": empty");
	size_t len = strnlen(id, STRATA_ID_MAX + 1);
	if (len > STRATA_ID_MAX)
		return error_setf(err, -EINVAL, "invalid id \"%s\": longer than %d bytes", QUOTE(id), STRATA_ID_MAX);
	for (size_t i = 0; i < len; i++) {
		if (!id_char(id[i], i == 0)) {
			unsigned char c = (unsigned char)id[i];
			if (c < 0x20 || c >= 0x7f)
				return error_setf(
					err, -EINVAL,
					"invalid id: byte 0x%02x at offset %zu (allowed: [A-Za-z0-9][A-Za-z0-9_.-]*)",
					c, i);
			return error_setf(err, -EINVAL,
					  "invalid id \"%s\": '%c' at offset %zu (allowed: [A-Za-z0-9][A-Za-z0-9_.-]*)",
					  QUOTE(id), id[i], i);
		}
	}
	size_t sl = strlen(STORE_REMOVING_SUFFIX);
	if (len >= sl && !strcmp(id + len - sl, STORE_REMOVING_SUFFIX))
		return error_setf(err, -EINVAL, "invalid id \"%s\": the suffix %s is reserved for interrupted removes",
				  id, STORE_REMOVING_SUFFIX);
	return 0;
}

void store_removing_name(const char *id, char ret[STORE_REMOVING_NAME_MAX])
{
	snprintf(ret, STORE_REMOVING_NAME_MAX, "%s%s", id, STORE_REMOVING_SUFFIX);
}

char *store_owner_id(const char *name)
{
	size_t len = strlen(name), sl = strlen(STORE_REMOVING_SUFFIX);
	if (len > sl && !strcmp(name + len - sl, STORE_REMOVING_SUFFIX))
		len -= sl;
	char *id = strndup(name, len);
	if (id && id_validate(id, NULL) < 0) {
		free(id);
		return NULL;
	}
	return id;
}

bool store_name_reserved(const char *name)
{
	size_t len = strlen(name), sl = strlen(STORE_REMOVING_SUFFIX);
	return name[0] == '.' || (len >= sl && !strcmp(name + len - sl, STORE_REMOVING_SUFFIX));
}
