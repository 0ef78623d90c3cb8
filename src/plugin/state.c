/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "state.h"

int state_save(const char *socket_path, const char *home, const char *const *options)
{
	json_t *opts = json_array();
	json_t *st = opts ? json_pack("{s:s,s:o}", "Home", home, "Options", opts) : NULL;
	for (const char *const *o = options; st && o && *o; o++)
		if (json_array_append_new(opts, json_string(*o)) < 0) {
			json_decref(st);
			st = NULL;
		}
	char *text = st ? json_dumps(st, JSON_COMPACT) : NULL;
	json_decref(st);
	char *path = NULL, *tmp = NULL;
	if (!text || asprintf(&path, "%s.init", socket_path) < 0 || asprintf(&tmp, "%s.init.tmp", socket_path) < 0) {
		free(text);
		free(path);
		return -ENOMEM;
	}
	int r = 0;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		r = -errno;
	else {
		size_t len = strlen(text);
		errno = 0;
		if (write(fd, text, len) != (ssize_t)len || fsync(fd) < 0)
			r = errno ? -errno : -EIO;
		if (close(fd) < 0 && !r)
			r = -errno;
		if (!r && rename(tmp, path) < 0)
			r = -errno;
		if (r)
			unlink(tmp);
	}
	free(text);
	free(path);
	free(tmp);
	return r;
}

int state_load(const char *socket_path, char **ret_home, char ***ret_options)
{
	char *path = NULL;
	if (asprintf(&path, "%s.init", socket_path) < 0)
		return -ENOMEM;
	json_error_t jerr;
	json_t *st = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	int r = 0;
	if (!st)
		r = access(path, F_OK) < 0 ? -errno : -EINVAL;
	free(path);
	if (r < 0)
		return r;
	json_t *home = json_object_get(st, "Home"), *opts = json_object_get(st, "Options");
	if (!json_is_string(home) || !json_is_array(opts)) {
		json_decref(st);
		return -EINVAL;
	}
	size_t n = json_array_size(opts);
	char **v = calloc(n + 1, sizeof(char *));
	char *h = strdup(json_string_value(home));
	r = v && h ? 0 : -ENOMEM;
	for (size_t i = 0; !r && i < n; i++) {
		const char *o = json_string_value(json_array_get(opts, i));
		if (!o)
			r = -EINVAL;
		else if (!(v[i] = strdup(o)))
			r = -ENOMEM;
	}
	json_decref(st);
	if (r < 0) {
		for (size_t i = 0; v && i < n; i++)
			free(v[i]);
		free(v);
		free(h);
		return r;
	}
	*ret_home = h;
	*ret_options = v;
	return 0;
}

void state_forget(const char *socket_path)
{
	char *path = NULL;
	if (asprintf(&path, "%s.init", socket_path) >= 0)
		unlink(path);
	free(path);
}
