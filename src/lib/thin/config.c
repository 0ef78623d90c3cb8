/* SPDX-License-Identifier: Apache-2.0 */
/* The thin.* driver options (see repo.h and strata.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thin/repo.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/macro.h"

int thin_config_init(thin_config *c)
{
	*c = (thin_config){.timeout_s = THIN_DEFAULT_TIMEOUT};
	c->root = strdup(THIN_DEFAULT_ROOT);
	c->mount_cmd = strdup(THIN_DEFAULT_MOUNT_CMD);
	c->umount_cmd = strdup(THIN_DEFAULT_UMOUNT_CMD);
	if (!c->root || !c->mount_cmd || !c->umount_cmd) {
		thin_config_release(c);
		return -ENOMEM;
	}
	return 0;
}

void thin_config_release(thin_config *c)
{
	free(c->root);
	free(c->mount_cmd);
	free(c->umount_cmd);
	free(c->publisher);
	free(c->repo);
	free(c->remount_cmd);
	*c = (thin_config){0};
}

void thin_log(const thin_config *c, int level, const char *fmt, ...)
{
	if (!c->log)
		return;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	c->log(level, msg, c->log_data);
}

int thin_publisher_validate(const char *spec, strata_error *err)
{
	if (!strncmp(spec, "dir:", 4)) {
		if (spec[4] != '/')
			return error_setf(err, -EINVAL, "publisher \"%s\": dir: takes an absolute path", spec);
		return 0;
	}
	if (!strncmp(spec, "cmd:", 4)) {
		if (!spec[4])
			return error_setf(err, -EINVAL, "publisher \"%s\": cmd: takes a command", spec);
		return 0;
	}
	if (!strcmp(spec, "cvmfs"))
		return 0;
	return error_setf(err, -EINVAL, "publisher \"%s\": expected dir:PATH, cmd:COMMAND or cvmfs", spec);
}

static int replace(char **field, const char *value)
{
	char *v = strdup(value);
	if (!v)
		return -ENOMEM;
	free(*field);
	*field = v;
	return 1;
}

int thin_config_set(thin_config *c, const char *key, size_t kl, const char *v, strata_error *err)
{
#define KEY(k) (kl == sizeof(k) - 1 && !strncmp(key, k, kl))
	if (KEY("thin.root")) {
		if (v[0] != '/')
			return error_setf(err, -EINVAL, "driver option thin.root=%s: an absolute path is needed", v);
		return replace(&c->root, v);
	}
	if (KEY("thin.mount")) {
		if (!strcmp(v, "external"))
			c->internal = false;
		else if (!strcmp(v, "internal"))
			c->internal = true;
		else
			return error_setf(err, -EINVAL, "driver option thin.mount=%s: expected external or internal",
					  v);
		return 1;
	}
	if (KEY("thin.mount_cmd") || KEY("thin.umount_cmd")) {
		if (!*v)
			return error_setf(err, -EINVAL, "driver option %.*s: empty command", (int)kl, key);
		return replace(key[5] == 'm' ? &c->mount_cmd : &c->umount_cmd, v);
	}
	if (KEY("thin.publisher")) {
		int r = thin_publisher_validate(v, err);
		if (r < 0)
			return error_prefix(err, r, "driver option thin.publisher");
		return replace(&c->publisher, v);
	}
	if (KEY("thin.remount_cmd")) {
		if (!*v)
			return error_setf(err, -EINVAL, "driver option thin.remount_cmd: empty command");
		return replace(&c->remount_cmd, v);
	}
	if (KEY("thin.repo")) {
		if (!thin_repo_valid(v))
			return error_setf(err, -EINVAL, "driver option thin.repo=%s: not a repository name", v);
		return replace(&c->repo, v);
	}
	if (KEY("thin.timeout")) {
		char *end = NULL;
		unsigned long t = strtoul(v, &end, 10);
		if (!*v || *end || t == 0 || t > 86400)
			return error_setf(err, -EINVAL, "driver option thin.timeout=%s: seconds, 1 to 86400", v);
		c->timeout_s = (unsigned)t;
		return 1;
	}
	return 0;
#undef KEY
}
