/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The snapshotter's metadata in SQLite.  Every change runs in one
 * BEGIN IMMEDIATE transaction: the write lock is taken before the checks,
 * so a check and the change it guards cannot be separated by another
 * writer, and any failure rolls the whole change back.
 *
 * Keys, names and labels come from containerd and may hold any byte but
 * NUL: they are only ever bound as parameters (with their length), never
 * spliced into SQL, and they are quoted before they go into a message.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "meta.h"
#include "util.h"

#define SCHEMA_VERSION 1
/* containerd's limit (labels.Validate): key and value together. */
#define LABEL_MAX 4096

struct meta {
	sqlite3 *db;
};

/* What an operation is about, for its error messages. */
typedef struct call {
	meta *m;
	strata_error *err;
	const char *op;	 /* "insert", "commit", ... */
	const char *key; /* the subject, quoted in messages; may be NULL */
} call;

static void finalizep(sqlite3_stmt **st)
{
	/* sqlite3_finalize repeats the statement's last error; every step
	 * was already checked, so its result carries nothing new. */
	if (*st)
		(void)sqlite3_finalize(*st);
}

#define _cleanup_stmt_ _cleanup_(finalizep)

static void error_clear(strata_error *err)
{
	if (err) {
		err->code = 0;
		err->message[0] = '\0';
	}
}

/* Sets *err to `op "key": <fmt>` (`op: <fmt>` without a key) and returns code (a negative errno). */
static int fail(const call *c, int code, const char *fmt, ...) _printf_(3, 4);
static int fail(const call *c, int code, const char *fmt, ...)
{
	if (!c->err)
		return code;
	int n = c->key ? snprintf(c->err->message, sizeof(c->err->message), "%s \"%s\": ", c->op, Q(c->key))
		       : snprintf(c->err->message, sizeof(c->err->message), "%s: ", c->op);
	if (n < 0)
		n = 0;
	if ((size_t)n < sizeof(c->err->message)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->err->message + n, sizeof(c->err->message) - (size_t)n, fmt, ap);
		va_end(ap);
	}
	c->err->code = -code;
	return code;
}

/* A failed SQLite call: -ENOMEM or -EIO, with SQLite's own words.  Read
 * before anything else runs on the connection, which would replace them. */
static int fail_db(const call *c, int rc)
{
	int code = (rc & 0xff) == SQLITE_NOMEM ? -ENOMEM : -EIO;
	if (!c->m || !c->m->db)
		return fail(c, code, "%s", sqlite3_errstr(rc));
	return fail(c, code, "%s", sqlite3_errmsg(c->m->db));
}

static const char *kind_name(int kind)
{
	switch (kind) {
	case SNAP_VIEW:
		return "view";
	case SNAP_ACTIVE:
		return "active";
	case SNAP_COMMITTED:
		return "committed";
	default:
		return "unknown";
	}
}

/*
 * Prepares `sql` and binds its parameters, in order, from the arguments
 * as `types` says: 's' a string (const char *, not NULL), 'n' a string or
 * NULL (bound as NULL), 'l' an int64_t, 'i' an int.
 */
static int db_prepare(const call *c, sqlite3_stmt **ret, const char *sql, const char *types, ...)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(c->m->db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return fail_db(c, rc);

	va_list ap;
	va_start(ap, types);
	for (int i = 1; rc == SQLITE_OK && types[i - 1]; i++) {
		switch (types[i - 1]) {
		case 's':
		case 'n': {
			const char *s = va_arg(ap, const char *);
			if (s)
				rc = sqlite3_bind_text64(st, i, s, strlen(s), SQLITE_STATIC, SQLITE_UTF8);
			else
				rc = sqlite3_bind_null(st, i);
			break;
		}
		case 'l':
			rc = sqlite3_bind_int64(st, i, va_arg(ap, int64_t));
			break;
		case 'i':
			rc = sqlite3_bind_int(st, i, va_arg(ap, int));
			break;
		default:
			rc = SQLITE_MISUSE;
		}
	}
	va_end(ap);
	if (rc != SQLITE_OK)
		return fail_db(c, rc);
	*ret = TAKE_PTR(st);
	return 0;
}

/* 1: a row is ready; 0: done; negative: the error, in c->err. */
static int db_step(const call *c, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return fail_db(c, rc);
}

/* Runs a statement without parameters that returns no rows we need. */
static int db_exec(const call *c, const char *sql)
{
	int rc = sqlite3_exec(c->m->db, sql, NULL, NULL, NULL);
	return rc == SQLITE_OK ? 0 : fail_db(c, rc);
}

static int db_begin(const call *c)
{
	return db_exec(c, "BEGIN IMMEDIATE");
}

/* Ends a transaction: COMMIT when r >= 0, else (or if COMMIT fails)
 * ROLLBACK.  Returns r, or COMMIT's error. */
static int db_end(const call *c, int r)
{
	if (r >= 0)
		r = db_exec(c, "COMMIT");
	/* A failed COMMIT (SQLITE_BUSY, a full disk) leaves the transaction
	 * open; the message already names the first error, so ROLLBACK's
	 * own result is not reported. */
	if (r < 0 && !sqlite3_get_autocommit(c->m->db))
		(void)sqlite3_exec(c->m->db, "ROLLBACK", NULL, NULL, NULL);
	return r;
}

/* A copy of text column `i` (NULL for SQL NULL). */
static int col_dup(const call *c, sqlite3_stmt *st, int i, char **ret)
{
	if (sqlite3_column_type(st, i) == SQLITE_NULL) {
		*ret = NULL;
		return 0;
	}
	const unsigned char *t = sqlite3_column_text(st, i);
	if (!t)
		return fail(c, -ENOMEM, "reading a row: out of memory");
	size_t n = (size_t)sqlite3_column_bytes(st, i);
	char *s = malloc(n + 1);
	if (!s)
		return fail(c, -ENOMEM, "reading a row: out of memory");
	memcpy(s, t, n);
	s[n] = '\0';
	*ret = s;
	return 0;
}

void snap_info_release(snap_info *info)
{
	if (!info)
		return;
	free(info->key);
	free(info->parent);
	free(info->id);
	strata_kv_list_clear(&info->labels);
	memset(info, 0, sizeof(*info));
}

/* The labels of the row that `st` (bound to the key) selects, in the
 * order the query gives them (by name). */
static int load_labels(const call *c, sqlite3_stmt *st, strata_kv_list *ret)
{
	strata_kv_list l = {0};
	size_t alloc = 0;
	int r;
	while ((r = db_step(c, st)) > 0) {
		if (l.n == alloc) {
			size_t a = alloc ? 2 * alloc : 8;
			strata_kv *items = realloc(l.items, a * sizeof(*items));
			if (!items) {
				r = fail(c, -ENOMEM, "reading labels: out of memory");
				break;
			}
			l.items = items;
			alloc = a;
		}
		strata_kv *kv = &l.items[l.n];
		*kv = (strata_kv){0};
		r = col_dup(c, st, 0, &kv->key);
		if (r >= 0)
			r = col_dup(c, st, 1, &kv->value);
		l.n++; /* counted even half-filled, so the clear below frees it */
		if (r < 0)
			break;
		if (!kv->key || !kv->value) {
			r = fail(c, -EIO, "a label with no name or value");
			break;
		}
	}
	if (r < 0) {
		strata_kv_list_clear(&l);
		return r;
	}
	*ret = l;
	return 0;
}

#define ROW_COLUMNS "key, id, parent, kind, created, updated, size, inodes"

/* The current row of `row` (ROW_COLUMNS), with its labels through
 * `labels` (prepared, its parameter 1 rebound here). */
static int load_row(const call *c, sqlite3_stmt *row, sqlite3_stmt *labels, snap_info *ret)
{
	snap_info info = {0};
	int r = col_dup(c, row, 0, &info.key);
	if (r >= 0)
		r = col_dup(c, row, 1, &info.id);
	if (r >= 0)
		r = col_dup(c, row, 2, &info.parent);
	if (r >= 0 && (!info.key || !info.id))
		r = fail(c, -EIO, "a row with no key or id");
	if (r < 0) {
		snap_info_release(&info);
		return r;
	}
	info.kind = (snap_kind)sqlite3_column_int(row, 3);
	info.created_ns = sqlite3_column_int64(row, 4);
	info.updated_ns = sqlite3_column_int64(row, 5);
	info.size = sqlite3_column_int64(row, 6);
	info.inodes = sqlite3_column_int64(row, 7);

	int rc = sqlite3_reset(labels);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text64(labels, 1, info.key, strlen(info.key), SQLITE_STATIC, SQLITE_UTF8);
	if (rc != SQLITE_OK)
		r = fail_db(c, rc);
	else
		r = load_labels(c, labels, &info.labels);
	/* info.key is bound as SQLITE_STATIC: unbind before it goes away. */
	(void)sqlite3_reset(labels);
	(void)sqlite3_clear_bindings(labels);
	if (r < 0) {
		snap_info_release(&info);
		return r;
	}
	*ret = info;
	return 0;
}

#define LABELS_QUERY "SELECT name, value FROM labels WHERE key = ?1 ORDER BY name"

/* Labels must fit containerd's limit; checked before any change. */
static int check_labels(const call *c, const strata_kv_list *labels)
{
	if (!labels)
		return 0;
	if (labels->n && !labels->items)
		return fail(c, -EINVAL, "label list without items");
	for (size_t i = 0; i < labels->n; i++) {
		const strata_kv *kv = &labels->items[i];
		if (!kv->key || !kv->value)
			return fail(c, -EINVAL, "label %zu has no key or value", i);
		size_t n = strlen(kv->key) + strlen(kv->value);
		if (n > LABEL_MAX)
			return fail(c, -EINVAL, "label \"%s\": key and value are %zu bytes, more than %d", Q(kv->key),
				    n, LABEL_MAX);
	}
	return 0;
}

/* Replaces the labels of `key` (inside the caller's transaction).  A key
 * given twice keeps its last value, as a protobuf map would. */
static int write_labels(const call *c, const char *key, const strata_kv_list *labels)
{
	_cleanup_stmt_ sqlite3_stmt *del = NULL;
	int r = db_prepare(c, &del, "DELETE FROM labels WHERE key = ?1", "s", key);
	if (r >= 0)
		r = db_step(c, del);
	if (r < 0 || !labels || labels->n == 0)
		return r < 0 ? r : 0;

	_cleanup_stmt_ sqlite3_stmt *ins = NULL;
	r = db_prepare(c, &ins, "INSERT OR REPLACE INTO labels (key, name, value) VALUES (?1, ?2, ?3)", "s", key);
	if (r < 0)
		return r;
	for (size_t i = 0; i < labels->n; i++) {
		const strata_kv *kv = &labels->items[i];
		int rc = sqlite3_reset(ins);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_text64(ins, 2, kv->key, strlen(kv->key), SQLITE_STATIC, SQLITE_UTF8);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_text64(ins, 3, kv->value, strlen(kv->value), SQLITE_STATIC, SQLITE_UTF8);
		if (rc != SQLITE_OK)
			return fail_db(c, rc);
		r = db_step(c, ins);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The kind of row `key`: 0 and *ret_kind set, or -ENOENT (no message). */
static int row_kind(const call *c, const char *key, int *ret_kind)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = db_prepare(c, &st, "SELECT kind FROM snapshots WHERE key = ?1", "s", key);
	if (r >= 0)
		r = db_step(c, st);
	if (r < 0)
		return r;
	if (r == 0)
		return -ENOENT;
	*ret_kind = sqlite3_column_int(st, 0);
	return 0;
}

/* ---- opening ---- */

static const char schema_v1[] = "CREATE TABLE snapshots ("
				"  key TEXT PRIMARY KEY NOT NULL,"
				"  id TEXT NOT NULL UNIQUE,"
				/* Only committed rows are parents, and only active rows are renamed
				 * (meta_commit), so a parent key never changes under its children. */
				"  parent TEXT REFERENCES snapshots (key),"
				"  kind INTEGER NOT NULL CHECK (kind BETWEEN 1 AND 3),"
				"  created INTEGER NOT NULL,"
				"  updated INTEGER NOT NULL,"
				"  size INTEGER NOT NULL DEFAULT -1,"
				"  inodes INTEGER NOT NULL DEFAULT -1"
				");"
				"CREATE INDEX snapshots_parent ON snapshots (parent);"
				"CREATE TABLE labels ("
				"  key TEXT NOT NULL REFERENCES snapshots (key) ON DELETE CASCADE ON UPDATE CASCADE,"
				"  name TEXT NOT NULL,"
				"  value TEXT NOT NULL,"
				"  PRIMARY KEY (key, name)"
				") WITHOUT ROWID;"
				"PRAGMA user_version = 1;";

static int read_int_pragma(const call *c, const char *sql, int *ret)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = db_prepare(c, &st, sql, "");
	if (r >= 0)
		r = db_step(c, st);
	if (r < 0)
		return r;
	if (r == 0)
		return fail(c, -EIO, "%s returned nothing", sql);
	*ret = sqlite3_column_int(st, 0);
	return 0;
}

static int check_version(const call *c, int version)
{
	if (version > SCHEMA_VERSION)
		return fail(c, -EPROTONOSUPPORT,
			    "the database has schema version %d, newer than the %d this strata understands", version,
			    SCHEMA_VERSION);
	if (version < 0)
		return fail(c, -EIO, "the database has a bad schema version %d", version);
	return 0;
}

static int setup_db(const call *c)
{
	int r = db_exec(c, "PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL;");
	if (r < 0)
		return r;

	/* Refuse a newer schema before touching the file in any way. */
	int version;
	r = read_int_pragma(c, "PRAGMA user_version", &version);
	if (r >= 0)
		r = check_version(c, version);
	if (r < 0)
		return r;

	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	r = db_prepare(c, &st, "PRAGMA journal_mode = WAL", "");
	if (r >= 0)
		r = db_step(c, st);
	if (r < 0)
		return r;
	const char *mode = r > 0 ? (const char *)sqlite3_column_text(st, 0) : NULL;
	/* Without WAL a reader blocks the writer; a filesystem without
	 * shared memory support keeps the old mode rather than failing. */
	if (!mode || strcmp(mode, "wal") != 0)
		return fail(c, -EIO, "cannot switch to WAL journal mode (got \"%s\")", Q(mode));
	/* A statement still stepping would keep COMMIT below from ending. */
	sqlite3_finalize(st);
	st = NULL;

	if (version == SCHEMA_VERSION)
		return 0;

	/* Another process may be creating the schema too: look again under
	 * the write lock. */
	r = db_begin(c);
	if (r < 0)
		return r;
	r = read_int_pragma(c, "PRAGMA user_version", &version);
	if (r >= 0)
		r = check_version(c, version);
	if (r >= 0 && version == 0)
		r = db_exec(c, schema_v1);
	return db_end(c, r);
}

int meta_open(const char *path, meta **ret_meta, strata_error *err)
{
	error_clear(err);
	call c = {.err = err, .op = "open", .key = path};
	if (!path || !*path || !ret_meta)
		return fail(&c, -EINVAL, "no path");

	meta *m = calloc(1, sizeof(*m));
	if (!m)
		return fail(&c, -ENOMEM, "out of memory");
	c.m = m;

	int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX;
#ifdef SQLITE_OPEN_NOFOLLOW
	flags |= SQLITE_OPEN_NOFOLLOW;
#endif
	int rc = sqlite3_open_v2(path, &m->db, flags, NULL);
	if (rc != SQLITE_OK) {
		/* The handle (if any) holds the message, and must be closed. */
		int r = fail_db(&c, rc);
		meta_close(m);
		return r;
	}
	rc = sqlite3_extended_result_codes(m->db, 1);
	if (rc == SQLITE_OK)
		rc = sqlite3_busy_timeout(m->db, 10000);
	int r = rc == SQLITE_OK ? setup_db(&c) : fail_db(&c, rc);
	if (r < 0) {
		meta_close(m);
		return r;
	}
	*ret_meta = m;
	return 0;
}

meta *meta_close(meta *m)
{
	if (!m)
		return NULL;
	/* Statements are all finalized by the time a call returns, so this
	 * closes for real (and checkpoints the WAL). */
	(void)sqlite3_close(m->db);
	free(m);
	return NULL;
}

/* ---- changes ---- */

static int insert_locked(const call *c, const snap_info *info, const char *parent)
{
	int kind;
	int r = row_kind(c, info->key, &kind);
	if (r == 0)
		return fail(c, -EEXIST, "snapshot exists");
	if (r != -ENOENT)
		return r;

	if (parent) {
		r = row_kind(c, parent, &kind);
		if (r == -ENOENT)
			return fail(c, -ENOENT, "parent \"%s\" does not exist", Q(parent));
		if (r < 0)
			return r;
		if (kind != SNAP_COMMITTED)
			return fail(c, -EINVAL, "parent \"%s\" is not committed (it is %s)", Q(parent),
				    kind_name(kind));
	}

	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	r = db_prepare(c, &st, "SELECT key FROM snapshots WHERE id = ?1", "s", info->id);
	if (r >= 0)
		r = db_step(c, st);
	if (r < 0)
		return r;
	if (r > 0)
		return fail(c, -EEXIST, "layer id \"%s\" is already used by \"%s\"", Q(info->id),
			    Q((const char *)sqlite3_column_text(st, 0)));

	_cleanup_stmt_ sqlite3_stmt *ins = NULL;
	r = db_prepare(c, &ins,
		       "INSERT INTO snapshots (key, id, parent, kind, created, updated, size, inodes)"
		       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
		       "ssnillll", info->key, info->id, parent, (int)info->kind, info->created_ns, info->updated_ns,
		       info->size, info->inodes);
	if (r >= 0)
		r = db_step(c, ins);
	if (r < 0)
		return r;
	return write_labels(c, info->key, &info->labels);
}

int meta_insert(meta *m, const snap_info *info, strata_error *err)
{
	error_clear(err);
	call c = {.m = m, .err = err, .op = "insert", .key = info ? info->key : NULL};
	if (!m || !info || !info->key || !*info->key)
		return fail(&c, -EINVAL, "no key");
	if (!info->id || !*info->id)
		return fail(&c, -EINVAL, "no layer id");
	if (info->kind != SNAP_VIEW && info->kind != SNAP_ACTIVE && info->kind != SNAP_COMMITTED)
		return fail(&c, -EINVAL, "bad kind %d", (int)info->kind);
	int r = check_labels(&c, &info->labels);
	if (r < 0)
		return r;
	/* containerd's "no parent" is the empty string. */
	const char *parent = info->parent && *info->parent ? info->parent : NULL;

	r = db_begin(&c);
	if (r < 0)
		return r;
	return db_end(&c, insert_locked(&c, info, parent));
}

int meta_get(meta *m, const char *key, snap_info *ret, strata_error *err)
{
	error_clear(err);
	call c = {.m = m, .err = err, .op = "get", .key = key};
	if (!m || !key || !ret)
		return fail(&c, -EINVAL, "no key");

	/* Both statements run inside the one read transaction the first
	 * one holds open, so the labels belong to the row read. */
	_cleanup_stmt_ sqlite3_stmt *row = NULL, *labels = NULL;
	int r = db_prepare(&c, &row, "SELECT " ROW_COLUMNS " FROM snapshots WHERE key = ?1", "s", key);
	if (r >= 0)
		r = db_prepare(&c, &labels, LABELS_QUERY, "");
	if (r >= 0)
		r = db_step(&c, row);
	if (r < 0)
		return r;
	if (r == 0)
		return fail(&c, -ENOENT, "no such snapshot");
	return load_row(&c, row, labels, ret);
}

static int commit_locked(const call *c, const char *key, const char *name, const strata_kv_list *labels, int64_t size,
			 int64_t inodes, int64_t now_ns)
{
	int kind;
	int r = row_kind(c, key, &kind);
	if (r == -ENOENT)
		return fail(c, -ENOENT, "no such snapshot");
	if (r < 0)
		return r;
	if (kind != SNAP_ACTIVE)
		return fail(c, -EINVAL, "snapshot is not active (it is %s)", kind_name(kind));

	/* name == key is taken too, as in containerd. */
	r = row_kind(c, name, &kind);
	if (r == 0)
		return fail(c, -EEXIST, "name \"%s\" is taken", Q(name));
	if (r != -ENOENT)
		return r;

	/* The key is renamed in place; ON UPDATE CASCADE carries the old
	 * labels along, and write_labels then replaces them. */
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	r = db_prepare(c, &st,
		       "UPDATE snapshots SET key = ?1, kind = ?2, updated = ?3, size = ?4, inodes = ?5 WHERE key = ?6",
		       "sillls", name, (int)SNAP_COMMITTED, now_ns, size, inodes, key);
	if (r >= 0)
		r = db_step(c, st);
	if (r < 0)
		return r;
	return write_labels(c, name, labels);
}

int meta_commit(meta *m, const char *key, const char *name, const strata_kv_list *labels, int64_t size, int64_t inodes,
		int64_t now_ns, strata_error *err)
{
	error_clear(err);
	call c = {.m = m, .err = err, .op = "commit", .key = key};
	if (!m || !key)
		return fail(&c, -EINVAL, "no key");
	if (!name || !*name)
		return fail(&c, -EINVAL, "no name to commit to");
	int r = check_labels(&c, labels);
	if (r < 0)
		return r;

	r = db_begin(&c);
	if (r < 0)
		return r;
	return db_end(&c, commit_locked(&c, key, name, labels, size, inodes, now_ns));
}

static int remove_locked(const call *c, const char *key, char **ret_id)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = db_prepare(c, &st, "SELECT id FROM snapshots WHERE key = ?1", "s", key);
	if (r >= 0)
		r = db_step(c, st);
	if (r < 0)
		return r;
	if (r == 0)
		return fail(c, -ENOENT, "no such snapshot");
	_cleanup_free_ char *id = NULL;
	r = col_dup(c, st, 0, &id);
	if (r < 0)
		return r;

	_cleanup_stmt_ sqlite3_stmt *child = NULL;
	r = db_prepare(c, &child, "SELECT key FROM snapshots WHERE parent = ?1 ORDER BY key LIMIT 1", "s", key);
	if (r >= 0)
		r = db_step(c, child);
	if (r < 0)
		return r;
	if (r > 0)
		return fail(c, -ENOTEMPTY, "snapshot has children (\"%s\")",
			    Q((const char *)sqlite3_column_text(child, 0)));

	_cleanup_stmt_ sqlite3_stmt *del = NULL;
	r = db_prepare(c, &del, "DELETE FROM snapshots WHERE key = ?1", "s", key);
	if (r >= 0)
		r = db_step(c, del);
	if (r < 0)
		return r;
	*ret_id = TAKE_PTR(id);
	return 0;
}

int meta_remove(meta *m, const char *key, char **ret_id, strata_error *err)
{
	error_clear(err);
	call c = {.m = m, .err = err, .op = "remove", .key = key};
	if (!m || !key)
		return fail(&c, -EINVAL, "no key");

	int r = db_begin(&c);
	if (r < 0)
		return r;
	_cleanup_free_ char *id = NULL;
	r = db_end(&c, remove_locked(&c, key, &id));
	if (r < 0)
		return r;
	if (ret_id)
		*ret_id = TAKE_PTR(id);
	return 0;
}

static int set_labels_locked(const call *c, const char *key, const strata_kv_list *labels, int64_t now_ns)
{
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = db_prepare(c, &st, "UPDATE snapshots SET updated = ?1 WHERE key = ?2", "ls", now_ns, key);
	if (r >= 0)
		r = db_step(c, st);
	if (r < 0)
		return r;
	if (sqlite3_changes(c->m->db) == 0)
		return fail(c, -ENOENT, "no such snapshot");
	return write_labels(c, key, labels);
}

int meta_set_labels(meta *m, const char *key, const strata_kv_list *labels, int64_t now_ns, strata_error *err)
{
	error_clear(err);
	call c = {.m = m, .err = err, .op = "set labels", .key = key};
	if (!m || !key)
		return fail(&c, -EINVAL, "no key");
	int r = check_labels(&c, labels);
	if (r < 0)
		return r;

	r = db_begin(&c);
	if (r < 0)
		return r;
	return db_end(&c, set_labels_locked(&c, key, labels, now_ns));
}

/* ---- listing ---- */

int meta_walk(meta *m, meta_walk_fn fn, void *data, strata_error *err)
{
	error_clear(err);
	call c = {.m = m, .err = err, .op = "walk"};
	if (!m || !fn)
		return fail(&c, -EINVAL, "no callback");

	/* One read transaction for the whole walk (the row statement stays
	 * open): the callback sees one consistent state of the table.  It
	 * must not change the database through this handle. */
	_cleanup_stmt_ sqlite3_stmt *rows = NULL, *labels = NULL;
	int r = db_prepare(&c, &rows, "SELECT " ROW_COLUMNS " FROM snapshots ORDER BY key", "");
	if (r >= 0)
		r = db_prepare(&c, &labels, LABELS_QUERY, "");
	while (r >= 0 && (r = db_step(&c, rows)) > 0) {
		snap_info info;
		r = load_row(&c, rows, labels, &info);
		if (r < 0)
			break;
		r = fn(&info, data);
		snap_info_release(&info);
	}
	return r < 0 ? r : 0;
}

static void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

int meta_layer_ids(meta *m, char ***ret_ids, strata_error *err)
{
	error_clear(err);
	call c = {.m = m, .err = err, .op = "list layer ids"};
	if (!m || !ret_ids)
		return fail(&c, -EINVAL, "no output");

	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = db_prepare(&c, &st, "SELECT id FROM snapshots ORDER BY id", "");
	if (r < 0)
		return r;
	char **ids = calloc(1, sizeof(*ids));
	size_t n = 0, alloc = 1;
	if (!ids)
		return fail(&c, -ENOMEM, "out of memory");
	while ((r = db_step(&c, st)) > 0) {
		if (n + 1 >= alloc) {
			char **v = realloc(ids, 2 * alloc * sizeof(*v));
			if (!v) {
				r = fail(&c, -ENOMEM, "out of memory");
				break;
			}
			ids = v;
			alloc *= 2;
		}
		r = col_dup(&c, st, 0, &ids[n]);
		if (r < 0)
			break;
		ids[++n] = NULL;
	}
	if (r < 0) {
		strv_free(ids);
		return r;
	}
	*ret_ids = ids;
	return 0;
}

static int remove_ids_locked(const call *c, char *const *ids, unsigned *ret_removed)
{
	/* A row and all rows below it, in one statement: the parent
	 * references are checked at its end, when the whole subtree is gone.
	 * UNION (not UNION ALL) stops on a cycle, should one ever exist. */
	_cleanup_stmt_ sqlite3_stmt *st = NULL;
	int r = db_prepare(c, &st,
			   "WITH RECURSIVE below (key) AS ("
			   "  SELECT key FROM snapshots WHERE id = ?1"
			   "  UNION SELECT s.key FROM snapshots s JOIN below b ON s.parent = b.key)"
			   " DELETE FROM snapshots WHERE key IN below",
			   "");
	if (r < 0)
		return r;
	unsigned removed = 0;
	for (size_t i = 0; ids[i]; i++) {
		int rc = sqlite3_reset(st);
		if (rc == SQLITE_OK)
			rc = sqlite3_bind_text64(st, 1, ids[i], strlen(ids[i]), SQLITE_STATIC, SQLITE_UTF8);
		if (rc != SQLITE_OK)
			return fail_db(c, rc);
		r = db_step(c, st);
		if (r < 0)
			return r;
		/* Rows only: the labels' cascade is not counted. */
		removed += (unsigned)sqlite3_changes(c->m->db);
	}
	*ret_removed = removed;
	return 0;
}

int meta_remove_ids(meta *m, char *const *ids, unsigned *ret_removed, strata_error *err)
{
	error_clear(err);
	call c = {.m = m, .err = err, .op = "remove layers"};
	if (!m)
		return fail(&c, -EINVAL, "no handle");
	unsigned removed = 0;
	if (ids && ids[0]) {
		int r = db_begin(&c);
		if (r < 0)
			return r;
		r = db_end(&c, remove_ids_locked(&c, ids, &removed));
		if (r < 0)
			return r;
	}
	if (ret_removed)
		*ret_removed = removed;
	return 0;
}
