/* SPDX-License-Identifier: Apache-2.0 */
/* The snapshotter's metadata: rows, labels, errors and transactions, on a
 * real SQLite file in a temporary directory. */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "meta.h"

#define T0 INT64_C(1700000000123456789)

static char dir[64];
static char db_path[128];
static meta *m;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/strata-unit-snap-meta.XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(db_path, sizeof(db_path), "%s/snapshots.db", dir);
	strata_error err;
	if (meta_open(db_path, &m, &err) < 0) {
		print_message("# %s\n", err.message);
		nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	m = meta_close(m);
	return nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

#define assert_message(err, s)                                                                                         \
	do {                                                                                                           \
		if (!strstr((err).message, (s)))                                                                       \
			fail_msg("message \"%s\" lacks \"%s\"", (err).message, (s));                                   \
	} while (0)

#define LABELS(...)                                                                                                    \
	((strata_kv_list){sizeof((strata_kv[]){__VA_ARGS__}) / sizeof(strata_kv), (strata_kv[]){__VA_ARGS__}})
#define NO_LABELS ((strata_kv_list){0, NULL})

static int add(const char *key, const char *id, const char *parent, snap_kind kind, strata_kv_list labels)
{
	snap_info info = {
		.key = (char *)key,
		.id = (char *)id,
		.parent = (char *)parent,
		.kind = kind,
		.created_ns = T0,
		.updated_ns = T0 + 1,
		.labels = labels,
		.size = -1,
		.inodes = -1,
	};
	strata_error err = {0};
	int r = meta_insert(m, &info, &err);
	if (r < 0)
		print_message("# insert: %s\n", err.message);
	return r;
}

static void must_add(const char *key, const char *id, const char *parent, snap_kind kind)
{
	assert_int_equal(add(key, id, parent, kind, NO_LABELS), 0);
}

static void assert_label(const snap_info *info, size_t i, const char *key, const char *value)
{
	assert_true(i < info->labels.n);
	assert_string_equal(info->labels.items[i].key, key);
	assert_string_equal(info->labels.items[i].value, value);
}

static bool exists(const char *key)
{
	snap_info info;
	int r = meta_get(m, key, &info, NULL);
	if (r == 0)
		snap_info_release(&info);
	assert_true(r == 0 || r == -ENOENT);
	return r == 0;
}

/* The number of rows of a table, read past the module. */
static int count_rows(const char *table)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	char *sql = sqlite3_mprintf("SELECT count(*) FROM %s", table);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_free(sql);
	sqlite3_close(db);
	return n;
}

static void raw_exec(const char *sql)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL), SQLITE_OK);
	char *msg = NULL;
	int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
	if (rc != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
	sqlite3_close(db);
}

static void insert_and_get(void **state)
{
	(void)state;
	must_add("default/1/base", "L1", NULL, SNAP_COMMITTED);
	assert_int_equal(add("default/2/work", "L2", "default/1/base", SNAP_ACTIVE,
			     LABELS({"zeta", "z"}, {"containerd.io/gc.root", "2024"}, {"alpha", ""})),
			 0);

	snap_info info;
	strata_error err;
	assert_int_equal(meta_get(m, "default/2/work", &info, &err), 0);
	assert_string_equal(info.key, "default/2/work");
	assert_string_equal(info.id, "L2");
	assert_string_equal(info.parent, "default/1/base");
	assert_int_equal(info.kind, SNAP_ACTIVE);
	assert_true(info.created_ns == T0);
	assert_true(info.updated_ns == T0 + 1);
	assert_true(info.size == -1 && info.inodes == -1);
	/* Sorted by key, whatever the order given. */
	assert_int_equal(info.labels.n, 3);
	assert_label(&info, 0, "alpha", "");
	assert_label(&info, 1, "containerd.io/gc.root", "2024");
	assert_label(&info, 2, "zeta", "z");
	snap_info_release(&info);
	assert_null(info.key);
	assert_int_equal(info.labels.n, 0);

	assert_int_equal(meta_get(m, "default/1/base", &info, &err), 0);
	assert_null(info.parent);
	assert_int_equal(info.kind, SNAP_COMMITTED);
	assert_int_equal(info.labels.n, 0);
	snap_info_release(&info);
	snap_info_release(NULL);

	/* containerd's "no parent" is "". */
	must_add("default/3/empty-parent", "L3", "", SNAP_VIEW);
	assert_int_equal(meta_get(m, "default/3/empty-parent", &info, NULL), 0);
	assert_null(info.parent);
	assert_int_equal(info.kind, SNAP_VIEW);
	snap_info_release(&info);
}

static void insert_errors(void **state)
{
	(void)state;
	strata_error err;
	must_add("base", "L1", NULL, SNAP_COMMITTED);
	must_add("work", "L2", "base", SNAP_ACTIVE);
	must_add("look", "L3", "base", SNAP_VIEW);

	snap_info info = {.key = "base", .id = "L9", .kind = SNAP_ACTIVE};
	assert_int_equal(meta_insert(m, &info, &err), -EEXIST);
	assert_int_equal(err.code, EEXIST);
	assert_message(err, "insert \"base\": snapshot exists");

	info = (snap_info){.key = "new", .id = "L9", .parent = "nowhere", .kind = SNAP_ACTIVE};
	assert_int_equal(meta_insert(m, &info, &err), -ENOENT);
	assert_message(err, "parent \"nowhere\" does not exist");

	info.parent = "work";
	assert_int_equal(meta_insert(m, &info, &err), -EINVAL);
	assert_message(err, "insert \"new\": parent \"work\" is not committed (it is active)");
	info.parent = "look";
	assert_int_equal(meta_insert(m, &info, &err), -EINVAL);
	assert_message(err, "(it is view)");

	info = (snap_info){.key = "new", .id = "L1", .kind = SNAP_ACTIVE};
	assert_int_equal(meta_insert(m, &info, &err), -EEXIST);
	assert_message(err, "layer id \"L1\" is already used by \"base\"");

	info = (snap_info){.key = "", .id = "L9", .kind = SNAP_ACTIVE};
	assert_int_equal(meta_insert(m, &info, &err), -EINVAL);
	info = (snap_info){.key = "new", .id = "", .kind = SNAP_ACTIVE};
	assert_int_equal(meta_insert(m, &info, &err), -EINVAL);
	info = (snap_info){.key = "new", .id = "L9", .kind = SNAP_UNKNOWN};
	assert_int_equal(meta_insert(m, &info, &err), -EINVAL);
	assert_message(err, "bad kind 0");
	/* err may be NULL. */
	info = (snap_info){.key = "base", .id = "L9", .kind = SNAP_ACTIVE};
	assert_int_equal(meta_insert(m, &info, NULL), -EEXIST);

	assert_false(exists("new"));
	assert_int_equal(count_rows("snapshots"), 3);
}

static void get_missing(void **state)
{
	(void)state;
	snap_info info = {.key = (char *)"sentinel"};
	strata_error err;
	assert_int_equal(meta_get(m, "absent", &info, &err), -ENOENT);
	assert_int_equal(err.code, ENOENT);
	assert_string_equal(err.message, "get \"absent\": no such snapshot");
	/* Untouched on failure. */
	assert_string_equal(info.key, "sentinel");
}

static void commit(void **state)
{
	(void)state;
	must_add("base", "L1", NULL, SNAP_COMMITTED);
	assert_int_equal(add("work", "L2", "base", SNAP_ACTIVE, LABELS({"old", "1"}, {"keep?", "no"})), 0);

	strata_kv_list labels = LABELS({"b", "2"}, {"a", "1"});
	strata_error err;
	assert_int_equal(meta_commit(m, "work", "layer2", &labels, 4096, 12, T0 + 50, &err), 0);
	assert_false(exists("work"));

	snap_info info;
	assert_int_equal(meta_get(m, "layer2", &info, &err), 0);
	assert_string_equal(info.key, "layer2");
	assert_string_equal(info.id, "L2");
	assert_string_equal(info.parent, "base");
	assert_int_equal(info.kind, SNAP_COMMITTED);
	assert_true(info.created_ns == T0);
	assert_true(info.updated_ns == T0 + 50);
	assert_true(info.size == 4096 && info.inodes == 12);
	assert_int_equal(info.labels.n, 2);
	assert_label(&info, 0, "a", "1");
	assert_label(&info, 1, "b", "2");
	snap_info_release(&info);
	assert_int_equal(count_rows("labels"), 2);

	/* A committed snapshot can be a parent now; NULL labels keep none. */
	assert_int_equal(add("work2", "L3", "layer2", SNAP_ACTIVE, LABELS({"x", "y"})), 0);
	assert_int_equal(meta_commit(m, "work2", "layer3", NULL, 0, 0, T0 + 60, &err), 0);
	assert_int_equal(meta_get(m, "layer3", &info, &err), 0);
	assert_string_equal(info.parent, "layer2");
	assert_int_equal(info.labels.n, 0);
	snap_info_release(&info);
	assert_int_equal(count_rows("labels"), 2);
}

static void assert_unchanged_active(void)
{
	snap_info info;
	assert_int_equal(meta_get(m, "work", &info, NULL), 0);
	assert_int_equal(info.kind, SNAP_ACTIVE);
	assert_string_equal(info.id, "L2");
	assert_true(info.updated_ns == T0 + 1);
	assert_true(info.size == -1);
	assert_int_equal(info.labels.n, 1);
	assert_label(&info, 0, "mine", "yes");
	snap_info_release(&info);
}

static void commit_errors(void **state)
{
	(void)state;
	strata_error err;
	must_add("base", "L1", NULL, SNAP_COMMITTED);
	assert_int_equal(add("work", "L2", "base", SNAP_ACTIVE, LABELS({"mine", "yes"})), 0);
	must_add("look", "L3", "base", SNAP_VIEW);
	must_add("taken", "L4", NULL, SNAP_COMMITTED);

	assert_int_equal(meta_commit(m, "absent", "x", NULL, 0, 0, T0, &err), -ENOENT);
	assert_string_equal(err.message, "commit \"absent\": no such snapshot");
	assert_int_equal(meta_commit(m, "base", "x", NULL, 0, 0, T0, &err), -EINVAL);
	assert_string_equal(err.message, "commit \"base\": snapshot is not active (it is committed)");
	assert_int_equal(meta_commit(m, "look", "x", NULL, 0, 0, T0, &err), -EINVAL);
	assert_message(err, "(it is view)");

	/* Onto a taken name: nothing changes. */
	strata_kv_list labels = LABELS({"new", "label"});
	assert_int_equal(meta_commit(m, "work", "taken", &labels, 1, 1, T0 + 9, &err), -EEXIST);
	assert_string_equal(err.message, "commit \"work\": name \"taken\" is taken");
	assert_unchanged_active();
	/* As in containerd, the key's own name is taken too. */
	assert_int_equal(meta_commit(m, "work", "work", &labels, 1, 1, T0 + 9, &err), -EEXIST);
	assert_unchanged_active();

	assert_int_equal(meta_commit(m, "work", "", NULL, 0, 0, T0, &err), -EINVAL);
	assert_int_equal(meta_commit(m, "work", NULL, NULL, 0, 0, T0, NULL), -EINVAL);
	assert_unchanged_active();
}

/* A trigger planted past the module makes the statement after the first
 * change of a transaction fail: the whole change must roll back. */
static void failure_mid_transaction_rolls_back(void **state)
{
	(void)state;
	strata_error err;
	must_add("base", "L1", NULL, SNAP_COMMITTED);
	assert_int_equal(add("work", "L2", "base", SNAP_ACTIVE, LABELS({"mine", "yes"})), 0);
	raw_exec("CREATE TRIGGER boom BEFORE INSERT ON labels WHEN NEW.name = 'boom'"
		 " BEGIN SELECT RAISE(ABORT, 'planted failure'); END");

	/* commit: the row is renamed, then the second label fails. */
	strata_kv_list labels = LABELS({"fine", "1"}, {"boom", "2"});
	assert_int_equal(meta_commit(m, "work", "layer", &labels, 1, 1, T0 + 9, &err), -EIO);
	assert_int_equal(err.code, EIO);
	assert_string_equal(err.message, "commit \"work\": planted failure");
	assert_false(exists("layer"));
	assert_unchanged_active();

	/* insert: the row goes in, then its label fails. */
	assert_int_equal(add("other", "L3", "base", SNAP_ACTIVE, LABELS({"a", "1"}, {"boom", "1"})), -EIO);
	assert_false(exists("other"));

	/* set_labels: the old labels stay. */
	assert_int_equal(meta_set_labels(m, "work", &labels, T0 + 10, &err), -EIO);
	assert_message(err, "set labels \"work\": planted failure");
	assert_unchanged_active();
	assert_int_equal(count_rows("labels"), 1);

	/* The handle still works after the rollbacks. */
	assert_int_equal(meta_commit(m, "work", "layer", NULL, 1, 1, T0 + 9, &err), 0);
	assert_true(exists("layer"));
}

static void remove_rows(void **state)
{
	(void)state;
	strata_error err;
	must_add("base", "L1", NULL, SNAP_COMMITTED);
	assert_int_equal(add("work", "L2", "base", SNAP_ACTIVE, LABELS({"a", "1"}, {"b", "2"})), 0);

	char *id = (char *)"sentinel";
	assert_int_equal(meta_remove(m, "base", &id, &err), -ENOTEMPTY);
	assert_int_equal(err.code, ENOTEMPTY);
	assert_string_equal(err.message, "remove \"base\": snapshot has children (\"work\")");
	assert_string_equal(id, "sentinel");
	assert_int_equal(meta_remove(m, "absent", &id, &err), -ENOENT);
	assert_string_equal(err.message, "remove \"absent\": no such snapshot");
	assert_string_equal(id, "sentinel");

	assert_int_equal(meta_remove(m, "work", &id, &err), 0);
	assert_string_equal(id, "L2");
	free(id);
	assert_int_equal(count_rows("labels"), 0);
	assert_false(exists("work"));
	assert_int_equal(meta_remove(m, "work", NULL, &err), -ENOENT);
	/* The parent can go now; ret_id may be NULL. */
	assert_int_equal(meta_remove(m, "base", NULL, &err), 0);
	assert_int_equal(count_rows("snapshots"), 0);
}

static void set_labels(void **state)
{
	(void)state;
	strata_error err;
	assert_int_equal(add("k", "L1", NULL, SNAP_COMMITTED, LABELS({"old", "1"}, {"keep", "2"})), 0);

	/* The whole set is replaced; a key given twice keeps the last value. */
	strata_kv_list labels = LABELS({"new", "a"}, {"keep", "3"}, {"new", "b"});
	assert_int_equal(meta_set_labels(m, "k", &labels, T0 + 7, &err), 0);
	snap_info info;
	assert_int_equal(meta_get(m, "k", &info, &err), 0);
	assert_int_equal(info.labels.n, 2);
	assert_label(&info, 0, "keep", "3");
	assert_label(&info, 1, "new", "b");
	assert_true(info.updated_ns == T0 + 7);
	assert_true(info.created_ns == T0);
	snap_info_release(&info);

	assert_int_equal(meta_set_labels(m, "k", NULL, T0 + 8, &err), 0);
	assert_int_equal(count_rows("labels"), 0);

	assert_int_equal(meta_set_labels(m, "absent", &labels, T0, &err), -ENOENT);
	assert_string_equal(err.message, "set labels \"absent\": no such snapshot");
}

static void label_limits(void **state)
{
	(void)state;
	strata_error err;
	char key[4097], value[4097];
	memset(key, 'k', sizeof(key));
	memset(value, 'v', sizeof(value));

	/* 4096 bytes of key and value together is the most. */
	key[200] = '\0';
	value[3896] = '\0';
	strata_kv_list labels = LABELS({key, value});
	assert_int_equal(add("fits", "L1", NULL, SNAP_COMMITTED, labels), 0);
	value[3896] = 'v';
	value[3897] = '\0';
	assert_int_equal(add("too-big", "L2", NULL, SNAP_COMMITTED, labels), -EINVAL);
	assert_false(exists("too-big"));

	snap_info info = {.key = "too-big", .id = "L2", .kind = SNAP_ACTIVE, .labels = labels};
	assert_int_equal(meta_insert(m, &info, &err), -EINVAL);
	assert_int_equal(err.code, EINVAL);
	assert_message(err, "insert \"too-big\": label \"kkkk");
	/* The long key is cut in the message. */
	assert_message(err, "...\": key and value are 4097 bytes, more than 4096");
	assert_true(strlen(err.message) < 300);

	assert_int_equal(meta_set_labels(m, "fits", &labels, T0, &err), -EINVAL);
	assert_message(err, "set labels \"fits\": label \"kkk");
	must_add("work", "L3", "fits", SNAP_ACTIVE);
	assert_int_equal(meta_commit(m, "work", "done", &labels, 0, 0, T0, &err), -EINVAL);
	assert_message(err, "commit \"work\": label");
	assert_true(exists("work"));

	/* A key that is all value: one byte of key, 4095 of value is fine,
	 * an odd key is escaped in the message. */
	memset(value, 'v', sizeof(value));
	value[4095] = '\0';
	labels = LABELS({"\n", value});
	assert_int_equal(meta_set_labels(m, "fits", &labels, T0, &err), 0);
	value[4095] = 'v';
	value[4096] = '\0';
	assert_int_equal(meta_set_labels(m, "fits", &labels, T0, &err), -EINVAL);
	assert_message(err, "label \"\\x0a\": key and value are 4097 bytes");

	labels = LABELS({"a", NULL});
	assert_int_equal(meta_set_labels(m, "fits", &labels, T0, &err), -EINVAL);
}

static const char *odd_keys[] = {
	"default/12/sha256:0123456789abcdef",
	"with space",
	"with \"quotes\" and 'apostrophes'",
	"'); DROP TABLE snapshots; --",
	"ünïcødé/層/🙂",
	"tab\tand\nnewline",
	"%s%n%x",
	"\x01\x7f\xff",
};

static void odd_keys_round_trip(void **state)
{
	(void)state;
	strata_error err;
	char id[32];
	for (size_t i = 0; i < sizeof(odd_keys) / sizeof(*odd_keys); i++) {
		snprintf(id, sizeof(id), "L%zu", i);
		assert_int_equal(add(odd_keys[i], id, NULL, SNAP_COMMITTED, LABELS({(char *)odd_keys[i], "v"})), 0);
	}
	char *big = malloc(4001);
	assert_non_null(big);
	for (size_t i = 0; i < 4000; i++)
		big[i] = (char)('a' + i % 26);
	big[4000] = '\0';
	must_add(big, "Lbig", odd_keys[0], SNAP_ACTIVE);

	for (size_t i = 0; i < sizeof(odd_keys) / sizeof(*odd_keys); i++) {
		snap_info info;
		assert_int_equal(meta_get(m, odd_keys[i], &info, &err), 0);
		assert_string_equal(info.key, odd_keys[i]);
		assert_label(&info, 0, odd_keys[i], "v");
		snap_info_release(&info);
	}
	/* A prefix or a LIKE pattern is no match. */
	assert_false(exists("default/12"));
	assert_false(exists("with%"));

	snap_info info;
	assert_int_equal(meta_get(m, big, &info, &err), 0);
	assert_string_equal(info.key, big);
	assert_string_equal(info.parent, odd_keys[0]);
	snap_info_release(&info);

	/* Commit onto an odd name; the message quotes odd bytes. */
	assert_int_equal(meta_commit(m, big, "committed \"name\"\n", NULL, 0, 0, T0, &err), 0);
	assert_true(exists("committed \"name\"\n"));
	assert_int_equal(meta_commit(m, "tab\tand\nnewline", "x", NULL, 0, 0, T0, &err), -EINVAL);
	assert_message(err, "commit \"tab\\x09and\\x0anewline\": snapshot is not active");
	assert_int_equal(meta_get(m, big, &info, &err), -ENOENT);
	assert_true(strlen(err.message) < 200);
	free(big);
}

typedef struct seen {
	char keys[8][64];
	size_t n;
	size_t labels;
	int stop_at;
} seen;

static int record(const snap_info *info, void *data)
{
	seen *s = data;
	if ((int)s->n == s->stop_at)
		return -ECANCELED;
	snprintf(s->keys[s->n++], sizeof(s->keys[0]), "%s", info->key);
	s->labels += info->labels.n;
	return 1; /* positive: carry on */
}

static void walk(void **state)
{
	(void)state;
	strata_error err;
	seen s = {.stop_at = -1};
	assert_int_equal(meta_walk(m, record, &s, &err), 0);
	assert_int_equal(s.n, 0);

	must_add("b", "L2", NULL, SNAP_COMMITTED);
	assert_int_equal(add("a", "L1", NULL, SNAP_COMMITTED, LABELS({"x", "1"}, {"y", "2"})), 0);
	assert_int_equal(add("c/1", "L3", "b", SNAP_ACTIVE, LABELS({"z", "3"})), 0);
	must_add("B", "L4", "a", SNAP_VIEW);

	assert_int_equal(meta_walk(m, record, &s, &err), 0);
	assert_int_equal(s.n, 4);
	/* By key, bytewise. */
	assert_string_equal(s.keys[0], "B");
	assert_string_equal(s.keys[1], "a");
	assert_string_equal(s.keys[2], "b");
	assert_string_equal(s.keys[3], "c/1");
	assert_int_equal(s.labels, 3);

	s = (seen){.stop_at = 2};
	assert_int_equal(meta_walk(m, record, &s, &err), -ECANCELED);
	assert_int_equal(s.n, 2);
}

static void layer_ids(void **state)
{
	(void)state;
	strata_error err;
	char **ids = NULL;
	assert_int_equal(meta_layer_ids(m, &ids, &err), 0);
	assert_non_null(ids);
	assert_null(ids[0]);
	free(ids);

	char id[32], key[32];
	for (int i = 9; i >= 0; i--) {
		snprintf(key, sizeof(key), "k%d", i);
		snprintf(id, sizeof(id), "id-%02d", i * 7 % 10);
		must_add(key, id, NULL, SNAP_COMMITTED);
	}
	assert_int_equal(meta_layer_ids(m, &ids, &err), 0);
	for (int i = 0; i < 10; i++) {
		snprintf(id, sizeof(id), "id-%02d", i);
		assert_string_equal(ids[i], id);
		free(ids[i]);
	}
	assert_null(ids[10]);
	free(ids);
}

static void remove_ids(void **state)
{
	(void)state;
	strata_error err;
	/* c1 <- c2 <- a3, c2 <- c6 <- v7, c1 <- v4; c5 apart. */
	must_add("c1", "L1", NULL, SNAP_COMMITTED);
	assert_int_equal(add("c2", "L2", "c1", SNAP_COMMITTED, LABELS({"a", "1"})), 0);
	assert_int_equal(add("a3", "L3", "c2", SNAP_ACTIVE, LABELS({"b", "2"})), 0);
	must_add("v4", "L4", "c1", SNAP_VIEW);
	must_add("c5", "L5", NULL, SNAP_COMMITTED);
	must_add("c6", "L6", "c2", SNAP_COMMITTED);
	must_add("v7", "L7", "c6", SNAP_VIEW);

	unsigned removed = 99;
	char *none[] = {NULL};
	assert_int_equal(meta_remove_ids(m, none, &removed, &err), 0);
	assert_int_equal(removed, 0);
	assert_int_equal(meta_remove_ids(m, NULL, &removed, &err), 0);

	/* L6 is below L2: counted once.  An unknown id is no error. */
	char *first[] = {"L2", "L6", "no-such-layer", NULL};
	assert_int_equal(meta_remove_ids(m, first, &removed, &err), 0);
	assert_int_equal(removed, 4);
	assert_true(exists("c1") && exists("v4") && exists("c5"));
	assert_false(exists("c2") || exists("a3") || exists("c6") || exists("v7"));
	assert_int_equal(count_rows("labels"), 0);

	char *rest[] = {"L5", "L1", NULL};
	assert_int_equal(meta_remove_ids(m, rest, &removed, &err), 0);
	assert_int_equal(removed, 3);
	assert_int_equal(count_rows("snapshots"), 0);
}

static void reopen_sees_the_same(void **state)
{
	(void)state;
	strata_error err;
	must_add("base", "L1", NULL, SNAP_COMMITTED);
	assert_int_equal(add("work", "L2", "base", SNAP_ACTIVE, LABELS({"k", "v"})), 0);
	m = meta_close(m);
	assert_null(m);
	assert_null(meta_close(NULL));

	assert_int_equal(meta_open(db_path, &m, &err), 0);
	snap_info info;
	assert_int_equal(meta_get(m, "work", &info, &err), 0);
	assert_string_equal(info.parent, "base");
	assert_string_equal(info.id, "L2");
	assert_int_equal(info.kind, SNAP_ACTIVE);
	assert_true(info.created_ns == T0);
	assert_label(&info, 0, "k", "v");
	snap_info_release(&info);

	/* Two handles on one file (WAL): each sees the other's commits. */
	meta *other;
	assert_int_equal(meta_open(db_path, &other, &err), 0);
	assert_int_equal(meta_commit(other, "work", "done", NULL, 5, 6, T0 + 3, &err), 0);
	assert_int_equal(meta_get(m, "done", &info, &err), 0);
	assert_true(info.size == 5);
	snap_info_release(&info);
	meta_close(other);
}

static void newer_schema_refused(void **state)
{
	(void)state;
	strata_error err;
	m = meta_close(m);
	raw_exec("PRAGMA user_version = 2");

	meta *h = (meta *)&err; /* a sentinel: untouched on failure */
	assert_int_equal(meta_open(db_path, &h, &err), -EPROTONOSUPPORT);
	assert_ptr_equal(h, (meta *)&err);
	assert_int_equal(err.code, EPROTONOSUPPORT);
	assert_message(err, "open \"");
	assert_message(err, "schema version 2, newer than the 1");

	raw_exec("PRAGMA user_version = 1");
	assert_int_equal(meta_open(db_path, &m, &err), 0);
}

static void open_errors(void **state)
{
	(void)state;
	strata_error err;
	char path[192];
	meta *h = NULL;

	snprintf(path, sizeof(path), "%s/no-such-dir/snapshots.db", dir);
	assert_int_equal(meta_open(path, &h, &err), -EIO);
	assert_null(h);
	assert_message(err, "open \"/tmp/strata-unit-snap-meta.");
	assert_message(err, "no-such-dir/snapshots.db\": ");

	/* A symlink is not followed. */
	snprintf(path, sizeof(path), "%s/link.db", dir);
	assert_int_equal(symlink(db_path, path), 0);
	assert_int_equal(meta_open(path, &h, &err), -EIO);
	assert_null(h);

	assert_int_equal(meta_open("", &h, &err), -EINVAL);
	assert_int_equal(meta_open(NULL, &h, NULL), -EINVAL);

	/* Not a database at all. */
	snprintf(path, sizeof(path), "%s/garbage.db", dir);
	FILE *f = fopen(path, "we");
	assert_non_null(f);
	for (int i = 0; i < 64; i++)
		fputs("this is not an SQLite database\n", f);
	fclose(f);
	assert_int_equal(meta_open(path, &h, &err), -EIO);
	assert_null(h);
	assert_message(err, "garbage.db\": file is not a database");
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(insert_and_get),
		T(insert_errors),
		T(get_missing),
		T(commit),
		T(commit_errors),
		T(failure_mid_transaction_rolls_back),
		T(remove_rows),
		T(set_labels),
		T(label_limits),
		T(odd_keys_round_trip),
		T(walk),
		T(layer_ids),
		T(remove_ids),
		T(reopen_sees_the_same),
		T(newer_schema_refused),
		T(open_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
