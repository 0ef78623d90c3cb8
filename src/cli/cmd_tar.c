/* SPDX-License-Identifier: Apache-2.0 */
/* Verbs on layer tars: apply, diff, size, changes. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli.h"

enum { OPT_QUIET = 'q', OPT_NO_DEVICES = 0x100, OPT_NAIVE, OPT_JSON };

/* ID and an optional PARENT; NULL parent: the layer's direct parent. */
static int positional(const cli_command *cmd, int argc, char **argv, const char **ret_id, const char **ret_parent)
{
	int n = argc - optind;
	if (n < 1 || n > 2)
		return cli_usage_error(cmd, n < 1 ? "missing ID" : "too many arguments");
	*ret_id = argv[optind];
	*ret_parent = n == 2 ? argv[optind + 1] : NULL;
	return 0;
}

static int run_apply(const cli_globals *g, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"quiet", no_argument, NULL, OPT_QUIET},
		{"no-devices", no_argument, NULL, OPT_NO_DEVICES},
		{"input", required_argument, NULL, 'i'},
		{NULL, 0, NULL, 0},
	};
	strata_tar_options o = {0};
	const char *input = NULL;
	bool quiet = false;
	int c;
	while ((c = getopt_long(argc, argv, "qi:", longopts, NULL)) != -1) {
		if (c == OPT_QUIET)
			quiet = true;
		else if (c == OPT_NO_DEVICES)
			o.flags |= STRATA_TAR_NO_DEVICES;
		else if (c == 'i')
			input = optarg;
		else
			return cli_usage_error(&cmd_apply, "unknown option \"%s\"", argv[optind - 1]);
	}
	const char *id = NULL, *parent = NULL;
	int rc = positional(&cmd_apply, argc, argv, &id, &parent);
	if (rc)
		return rc;

	int fd = STDIN_FILENO;
	if (input) {
		fd = open(input, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			cli_error("apply %s: open %s: %s", id, input, strerror(errno));
			return EXIT_FAILURE;
		}
	} else if (isatty(fd)) {
		cli_error("apply %s: standard input is a terminal; give a tar with -i FILE or a pipe", id);
		return EXIT_FAILURE;
	}
	strata_driver *d = NULL;
	rc = cli_open(g, 0, &d);
	if (!rc) {
		char label[64];
		snprintf(label, sizeof(label), "apply %.40s", id);
		cli_progress progress;
		cli_progress_init(&progress, label, quiet, &o);
		uint64_t size = 0;
		strata_error err;
		if (strata_apply_diff(d, id, parent, fd, &o, &size, &err) < 0) {
			cli_progress_abort(&progress, &o);
			rc = cli_fail(&err);
		} else {
			printf("%" PRIu64 "\n", size);
		}
		strata_driver_free(d);
	}
	if (input)
		close(fd);
	return rc;
}

const cli_command cmd_apply = {
	.name = "apply",
	.usage = "[--quiet] [--no-devices] ID [PARENT] [-i FILE]",
	.summary = "extract a layer tar (stdin or FILE) into layer ID; print its size",
	.help = "The tar may be plain, gzip, zstd or xz.  .wh. whiteouts and opaque markers\n"
		"become overlay's own; owners shift through the uidmap/gidmap driver options.\n"
		"The layer must be empty, unmounted and childless; a failed apply leaves it as it was.\n"
		"--no-devices refuses device nodes.  PARENT, when given, must be the layer's\n"
		"parent.  On a terminal a progress line is drawn on stderr (not with --quiet).",
	.run = run_apply,
};

static int run_diff(const cli_globals *g, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"quiet", no_argument, NULL, OPT_QUIET},
		{"naive", no_argument, NULL, OPT_NAIVE},
		{"output", required_argument, NULL, 'o'},
		{NULL, 0, NULL, 0},
	};
	strata_tar_options o = {0};
	const char *output = NULL;
	bool quiet = false;
	int c;
	while ((c = getopt_long(argc, argv, "qo:", longopts, NULL)) != -1) {
		if (c == OPT_QUIET)
			quiet = true;
		else if (c == OPT_NAIVE)
			o.flags |= STRATA_TAR_NAIVE;
		else if (c == 'o')
			output = optarg;
		else
			return cli_usage_error(&cmd_diff, "unknown option \"%s\"", argv[optind - 1]);
	}
	const char *id = NULL, *parent = NULL;
	int rc = positional(&cmd_diff, argc, argv, &id, &parent);
	if (rc)
		return rc;

	int fd = STDOUT_FILENO;
	char what[64 + STRATA_ID_MAX];
	snprintf(what, sizeof(what), "diff %s", id);
	cli_output out = {.fd = -1};
	if (output) {
		rc = cli_output_open(&out, output, what);
		if (rc)
			return rc;
		fd = out.fd;
	} else if (isatty(fd)) {
		cli_error("diff %s: standard output is a terminal; redirect it or use -o FILE", id);
		return EXIT_FAILURE;
	}
	strata_driver *d = NULL;
	rc = cli_open(g, 0, &d);
	if (!rc) {
		char label[64];
		snprintf(label, sizeof(label), "diff %.40s", id);
		cli_progress progress;
		cli_progress_init(&progress, label, quiet, &o);
		strata_error err;
		if (strata_diff(d, id, parent, fd, &o, &err) < 0) {
			cli_progress_abort(&progress, &o);
			rc = cli_fail(&err);
		}
		strata_driver_free(d);
	}
	/* No half tar under the name asked for, and nothing removed that
	 * this command did not make. */
	if (output && !rc)
		rc = cli_output_commit(&out);
	else if (output)
		cli_output_abort(&out);
	return rc;
}

const cli_command cmd_diff = {
	.name = "diff",
	.usage = "[--quiet] [--naive] ID [PARENT] [-o FILE]",
	.summary = "write layer ID's changes as a tar (stdout or FILE)",
	.help = "Against the direct parent (the default) the tar is the layer's own dir, with\n"
		"whiteouts and opaque dirs in .wh. form.  Against any other PARENT (\"\" for\n"
		"none), or with --naive, both trees are mounted and compared.",
	.run = run_diff,
};

/* Options shared by size and changes. */
static int parse_query(const cli_command *cmd, int argc, char **argv, bool *json, unsigned *flags)
{
	static const struct option longopts[] = {
		{"naive", no_argument, NULL, OPT_NAIVE},
		{"json", no_argument, NULL, OPT_JSON},
		{NULL, 0, NULL, 0},
	};
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c == OPT_NAIVE)
			*flags |= STRATA_TAR_NAIVE;
		else if (c == OPT_JSON && json)
			*json = true;
		else
			return cli_usage_error(cmd, "unknown option \"%s\"", argv[optind - 1]);
	}
	return 0;
}

static int run_size(const cli_globals *g, int argc, char **argv)
{
	strata_tar_options o = {0};
	const char *id = NULL, *parent = NULL;
	int rc = parse_query(&cmd_size, argc, argv, NULL, &o.flags);
	if (!rc)
		rc = positional(&cmd_size, argc, argv, &id, &parent);
	if (rc)
		return rc;
	strata_driver *d = NULL;
	rc = cli_open(g, 0, &d);
	if (rc)
		return rc;
	uint64_t size = 0;
	strata_error err;
	if (strata_diff_size(d, id, parent, &o, &size, &err) < 0)
		rc = cli_fail(&err);
	else
		printf("%" PRIu64 "\n", size);
	strata_driver_free(d);
	return rc;
}

const cli_command cmd_size = {
	.name = "size",
	.usage = "[--naive] ID [PARENT]",
	.summary = "print the bytes of layer ID's changes (each inode once)",
	.run = run_size,
};

static void print_changes(const strata_change_list *l, bool json)
{
	static const char kinds[] = {
		[STRATA_CHANGE_MODIFY] = 'C', [STRATA_CHANGE_ADD] = 'A', [STRATA_CHANGE_DELETE] = 'D'};
	if (!json) {
		for (size_t i = 0; i < l->n; i++)
			printf("%c %s\n", kinds[l->items[i].kind], l->items[i].path);
		return;
	}
	/* Docker's own shape: [{"Path": ..., "Kind": 0|1|2}]. */
	json_t *a = json_array();
	for (size_t i = 0; a && i < l->n; i++)
		json_array_append_new(a,
				      json_pack("{s:s,s:i}", "Path", l->items[i].path, "Kind", (int)l->items[i].kind));
	char *s = a ? json_dumps(a, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	if (s)
		puts(s);
	free(s);
	json_decref(a);
}

static int run_changes(const cli_globals *g, int argc, char **argv)
{
	strata_tar_options o = {0};
	bool json = false;
	const char *id = NULL, *parent = NULL;
	int rc = parse_query(&cmd_changes, argc, argv, &json, &o.flags);
	if (!rc)
		rc = positional(&cmd_changes, argc, argv, &id, &parent);
	if (rc)
		return rc;
	strata_driver *d = NULL;
	rc = cli_open(g, 0, &d);
	if (rc)
		return rc;
	strata_change_list l = {0};
	strata_error err;
	if (strata_changes(d, id, parent, &o, &l, &err) < 0)
		rc = cli_fail(&err);
	else
		print_changes(&l, json);
	strata_change_list_clear(&l);
	strata_driver_free(d);
	return rc;
}

const cli_command cmd_changes = {
	.name = "changes",
	.usage = "[--json] [--naive] ID [PARENT]",
	.summary = "list layer ID's changes: A added, C changed, D deleted (as docker diff)",
	.help = "Sorted by path.  Against the direct parent only the layer's own dir is read;\n"
		"against any other PARENT, or with --naive, the two mounted trees are compared.\n"
		"--json prints Docker's form: [{\"Path\": \"/a\", \"Kind\": 1}] (0 C, 1 A, 2 D).",
	.run = run_changes,
};
