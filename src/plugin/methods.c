/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Docker's graphdriver calls (SPEC section 5) on the driver contract.
 * Requests are {"ID","Parent","MountLabel","StorageOpt"} (Init:
 * {"Home","Opts","UIDMaps","GIDMaps"}); a missing or null field is an empty
 * one, as Go's omitempty leaves it out; a field of the wrong type is a 400.
 * Ids are checked by the library before anything touches the disk.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "methods.h"

static int call_error(plugin_call *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int call_error(plugin_call *c, int code, const char *fmt, ...)
{
	int n = snprintf(c->err.message, sizeof(c->err.message), "%s: ", c->method);
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->err.message + n, sizeof(c->err.message) - (size_t)n, fmt, ap);
	va_end(ap);
	c->err.code = -code;
	return code;
}

static int nomem(plugin_call *c)
{
	return call_error(c, -ENOMEM, "out of memory");
}

/* Takes ownership of v. */
static int reply_set(plugin_call *c, const char *key, json_t *v)
{
	if (!v || json_object_set_new(c->reply, key, v) < 0)
		return nomem(c);
	return 0;
}

/* Paths on disk are bytes, JSON strings are UTF-8: a file name that is not
 * becomes U+FFFD where it breaks, as Go's encoder (and so Docker's own
 * drivers) show it.  NULL only when out of memory. */
static json_t *path_string(const char *s)
{
	json_t *v = json_string(s);
	return v ? v : json_string_lossy(s);
}

/* True when the JSON string v holds a NUL byte: as a C string it would
 * end there ("a\u0000../x" read as "a").  Requests are parsed without
 * JSON_ALLOW_NUL, so jansson refuses those already; this keeps every
 * string the calls pass on honest should that ever change. */
static bool string_has_nul(const json_t *v)
{
	return strlen(json_string_value(v)) != json_string_length(v);
}

/* *ret is "" when the field is missing, null, or of the wrong type (an error). */
static int arg_string(plugin_call *c, const char *key, const char **ret)
{
	json_t *v = json_object_get(c->args, key);
	*ret = "";
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return call_error(c, -EINVAL, "request field \"%s\" must be a string", key);
	if (string_has_nul(v))
		return call_error(c, -EINVAL, "request field \"%s\" holds a NUL byte", key);
	*ret = json_string_value(v);
	return 0;
}

/* ID, and Parent when `parent` is not NULL: the fields most calls take. */
static int args_id(plugin_call *c, const char **parent)
{
	int r = arg_string(c, "ID", &c->id);
	if (r >= 0 && parent) {
		r = arg_string(c, "Parent", parent);
		c->parent = *parent;
	}
	return r;
}

static void strv_free_n(char **v)
{
	for (char **p = v; p && *p; p++)
		free(*p);
	free(v);
}

static int m_activate(plugin_call *c)
{
	json_t *a = json_array();
	if (!a || json_array_append_new(a, json_string("GraphDriver")) < 0) {
		json_decref(a);
		return nomem(c);
	}
	return reply_set(c, "Implements", a);
}

/* One Init id map, as "uidmap=C:H:S" (a driver option). */
static int map_option(plugin_call *c, const char *field, size_t i, json_t *m, char **ret)
{
	static const char *const keys[] = {"container_id", "host_id", "size"};
	json_int_t v[3];
	if (!json_is_object(m))
		return call_error(c, -EINVAL, "%s[%zu] must be an object", field, i);
	for (int k = 0; k < 3; k++) {
		json_t *x = json_object_get(m, keys[k]);
		if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > UINT32_MAX)
			return call_error(c, -EINVAL, "%s[%zu].%s must be an integer from 0 to %" PRIu32, field, i,
					  keys[k], UINT32_MAX);
		v[k] = json_integer_value(x);
	}
	if (asprintf(ret, "%s=%" JSON_INTEGER_FORMAT ":%" JSON_INTEGER_FORMAT ":%" JSON_INTEGER_FORMAT,
		     !strcmp(field, "UIDMaps") ? "uidmap" : "gidmap", v[0], v[1], v[2]) < 0)
		return nomem(c);
	return 0;
}

static int array_arg(plugin_call *c, const char *key, json_t **ret)
{
	json_t *v = json_object_get(c->args, key);
	*ret = NULL;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_array(v))
		return call_error(c, -EINVAL, "request field \"%s\" must be an array", key);
	*ret = v;
	return 0;
}

/*
 * The options for the store: the server's own (-o), then Docker's
 * --storage-opt values (a "<name>." prefix, as Docker's drivers take theirs,
 * is dropped), then the id maps.
 */
static int init_options(plugin_call *c, char ***ret)
{
	const plugin_config *cfg = server_config(c->server);
	json_t *opts, *maps[2];
	int r = array_arg(c, "Opts", &opts);
	if (r >= 0)
		r = array_arg(c, "UIDMaps", &maps[0]);
	if (r >= 0)
		r = array_arg(c, "GIDMaps", &maps[1]);
	if (r < 0)
		return r;
	size_t n = 0;
	for (const char *const *o = cfg->options; o && *o; o++)
		n++;
	size_t max = n + json_array_size(opts) + json_array_size(maps[0]) + json_array_size(maps[1]);
	char **v = calloc(max + 1, sizeof(char *));
	if (!v)
		return nomem(c);
	n = 0;
	for (const char *const *o = cfg->options; o && *o; o++)
		if (!(v[n++] = strdup(*o)))
			goto oom;
	size_t prefix = strlen(cfg->name);
	for (size_t i = 0; i < json_array_size(opts); i++) {
		json_t *o = json_array_get(opts, i);
		const char *s = json_string_value(o);
		if (!s) {
			r = call_error(c, -EINVAL, "Opts[%zu] must be a string", i);
			goto fail;
		}
		if (string_has_nul(o)) {
			r = call_error(c, -EINVAL, "Opts[%zu] holds a NUL byte", i);
			goto fail;
		}
		if (!strncmp(s, cfg->name, prefix) && s[prefix] == '.')
			s += prefix + 1;
		if (!(v[n++] = strdup(s)))
			goto oom;
	}
	for (int k = 0; k < 2; k++)
		for (size_t i = 0; i < json_array_size(maps[k]); i++) {
			r = map_option(c, k ? "GIDMaps" : "UIDMaps", i, json_array_get(maps[k], i), &v[n]);
			if (r < 0)
				goto fail;
			n++;
		}
	*ret = v;
	return 0;
oom:
	r = nomem(c);
fail:
	strv_free_n(v);
	return r;
}

static int m_init(plugin_call *c)
{
	const char *home;
	int r = arg_string(c, "Home", &home);
	if (r < 0)
		return r;
	if (home[0] != '/')
		return call_error(c, -EINVAL, "Home \"%s\" is not an absolute path", home);
	char **options = NULL;
	r = init_options(c, &options);
	if (r < 0)
		return r;
	r = server_init_driver(c->server, home, (const char *const *)options, &c->err);
	strv_free_n(options);
	return r;
}

static int m_capabilities(plugin_call *c)
{
	/* strata's diff is deterministic but not the bytes Docker was given
	 * (other tar writers order and pad differently): Docker keeps its
	 * tar-split data to give back the original layer tars. */
	json_t *caps = json_pack("{s:b}", "ReproducesExactDiffs", 0);
	return reply_set(c, "Capabilities", caps);
}

/* StorageOpt {"size":"10G"} as {"size=10G", NULL}. */
static int storage_options(plugin_call *c, char ***ret)
{
	json_t *so = json_object_get(c->args, "StorageOpt");
	*ret = NULL;
	if (!so || json_is_null(so))
		return 0;
	if (!json_is_object(so))
		return call_error(c, -EINVAL, "request field \"StorageOpt\" must be an object");
	char **v = calloc(json_object_size(so) + 1, sizeof(char *));
	if (!v)
		return nomem(c);
	const char *key;
	json_t *value;
	size_t n = 0;
	json_object_foreach(so, key, value)
	{
		if (!json_is_string(value) || string_has_nul(value)) {
			strv_free_n(v);
			return call_error(c, -EINVAL, "StorageOpt \"%s\" must be a string without NUL bytes", key);
		}
		if (asprintf(&v[n], "%s=%s", key, json_string_value(value)) < 0) {
			v[n] = NULL;
			strv_free_n(v);
			return nomem(c);
		}
		n++;
	}
	*ret = v;
	return 0;
}

static int create(plugin_call *c, bool rw)
{
	const char *parent;
	char **opts = NULL;
	int r = args_id(c, &parent);
	if (r >= 0)
		r = storage_options(c, &opts);
	if (r < 0)
		return r;
	r = (rw ? strata_create_rw : strata_create)(c->driver, c->id, parent, (const char *const *)opts, &c->err);
	strv_free_n(opts);
	return r;
}

static int m_create(plugin_call *c)
{
	return create(c, false);
}

static int m_create_rw(plugin_call *c)
{
	return create(c, true);
}

static int m_remove(plugin_call *c)
{
	int r = args_id(c, NULL);
	return r < 0 ? r : strata_remove(c->driver, c->id, &c->err);
}

static int m_exists(plugin_call *c)
{
	int r = args_id(c, NULL);
	if (r >= 0)
		r = strata_exists(c->driver, c->id, &c->err);
	return r < 0 ? r : reply_set(c, "Exists", json_boolean(r > 0));
}

static int m_get(plugin_call *c)
{
	const char *label;
	int r = args_id(c, NULL);
	if (r >= 0)
		r = arg_string(c, "MountLabel", &label);
	if (r < 0)
		return r;
	char *dir = NULL;
	r = strata_get(c->driver, c->id, *label ? label : NULL, &dir, &c->err);
	if (r < 0)
		return r;
	r = reply_set(c, "Dir", path_string(dir));
	free(dir);
	return r;
}

static int m_put(plugin_call *c)
{
	int r = args_id(c, NULL);
	if (r >= 0)
		r = strata_id_validate(c->id, &c->err);
	if (r < 0)
		return r;
	r = strata_put(c->driver, c->id, &c->err);
	/* With a valid id, EINVAL is "not in use".  Docker's own drivers take a
	 * put without a get as done, and Docker does send them (a container
	 * unmounted twice); an error here would only fill its log. */
	if (r == -EINVAL) {
		plugin_log(PLUGIN_LOG_WARN, "method=GraphDriver.Put id=%s msg=%s", LOG_VALUE(c->id),
			   LOG_VALUE(c->err.message));
		return 0;
	}
	return r;
}

static int kv_pairs(plugin_call *c, const strata_kv_list *l, const char *key, bool as_object)
{
	json_t *out = as_object ? json_object() : json_array();
	for (size_t i = 0; out && i < l->n; i++) {
		json_t *v = path_string(l->items[i].value);
		int r = as_object ? json_object_set_new(out, l->items[i].key, v)
				  : json_array_append_new(out, json_pack("[so]", l->items[i].key, v));
		if (r < 0) {
			json_decref(out);
			out = NULL;
		}
	}
	return reply_set(c, key, out);
}

static int m_status(plugin_call *c)
{
	strata_kv_list l = {0};
	int r = strata_status(c->driver, &l, &c->err);
	if (r >= 0)
		r = kv_pairs(c, &l, "Status", false);
	strata_kv_list_clear(&l);
	return r;
}

static int m_get_metadata(plugin_call *c)
{
	strata_kv_list l = {0};
	int r = args_id(c, NULL);
	if (r >= 0)
		r = strata_get_metadata(c->driver, c->id, &l, &c->err);
	if (r >= 0)
		r = kv_pairs(c, &l, "Metadata", true);
	strata_kv_list_clear(&l);
	return r;
}

static int m_cleanup(plugin_call *c)
{
	/* dockerd calls this as it stops; it will Init again when it starts. */
	server_forget_init(c->server);
	return strata_cleanup(c->driver, &c->err);
}

static int m_changes(plugin_call *c)
{
	const char *parent;
	int r = args_id(c, &parent);
	if (r < 0)
		return r;
	strata_change_list l = {0};
	r = strata_changes(c->driver, c->id, parent, NULL, &l, &c->err);
	if (r < 0)
		return r;
	json_t *a = json_array();
	for (size_t i = 0; a && i < l.n; i++)
		if (json_array_append_new(a, json_pack("{s:o,s:i}", "Path", path_string(l.items[i].path), "Kind",
						       (int)l.items[i].kind)) < 0) {
			json_decref(a);
			a = NULL;
		}
	strata_change_list_clear(&l);
	return reply_set(c, "Changes", a);
}

static int m_diff_size(plugin_call *c)
{
	const char *parent;
	uint64_t size = 0;
	int r = args_id(c, &parent);
	if (r >= 0)
		r = strata_diff_size(c->driver, c->id, parent, NULL, &size, &c->err);
	return r < 0 ? r : reply_set(c, "Size", json_integer((json_int_t)size));
}

static int m_diff(plugin_call *c)
{
	const char *parent;
	int r = args_id(c, &parent);
	if (r < 0)
		return r;
	r = stream_diff_start(c->driver, c->id, parent, &c->diff, &c->err);
	return r < 0 ? r : 0;
}

/* ApplyDiff is not here: its body is the tar, not JSON (see server.c). */
static const plugin_method methods[] = {
	{"Plugin.Activate", false, m_activate},
	{"GraphDriver.Init", false, m_init},
	{"GraphDriver.Capabilities", false, m_capabilities},
	{"GraphDriver.Create", true, m_create},
	{"GraphDriver.CreateReadWrite", true, m_create_rw},
	{"GraphDriver.Remove", true, m_remove},
	{"GraphDriver.Exists", true, m_exists},
	{"GraphDriver.Get", true, m_get},
	{"GraphDriver.Put", true, m_put},
	{"GraphDriver.Status", true, m_status},
	{"GraphDriver.GetMetadata", true, m_get_metadata},
	{"GraphDriver.Cleanup", true, m_cleanup},
	{"GraphDriver.Changes", true, m_changes},
	{"GraphDriver.DiffSize", true, m_diff_size},
	{"GraphDriver.Diff", true, m_diff},
};

const plugin_method *plugin_method_find(const char *name)
{
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (!strcmp(methods[i].name, name))
			return &methods[i];
	return NULL;
}
