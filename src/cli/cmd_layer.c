/* SPDX-License-Identifier: Apache-2.0 */
/* Verbs about one layer: create, rm, exists, metadata. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int run_create(const cli_globals *g, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"rw", no_argument, NULL, 'w'},
		{"storage-opt", required_argument, NULL, 's'},
		{NULL, 0, NULL, 0},
	};
	bool rw = false;
	const char **opts = calloc((size_t)argc + 1, sizeof(char *));
	size_t n_opts = 0;
	if (!opts) {
		cli_error("out of memory");
		return EXIT_FAILURE;
	}
	int c, rc = 0;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c == 'w')
			rw = true;
		else if (c == 's')
			opts[n_opts++] = optarg;
		else {
			free(opts);
			return cli_usage_error(&cmd_create, "unknown option \"%s\"", argv[optind - 1]);
		}
	}
	int rest = argc - optind;
	if (rest < 1 || rest > 2) {
		free(opts);
		return cli_usage_error(&cmd_create, rest < 1 ? "missing ID" : "too many arguments");
	}
	const char *id = argv[optind], *parent = rest == 2 ? argv[optind + 1] : NULL;

	strata_driver *d = NULL;
	rc = cli_open(g, 0, &d);
	if (!rc) {
		strata_error err;
		int r = rw ? strata_create_rw(d, id, parent, opts, &err) : strata_create(d, id, parent, opts, &err);
		if (r < 0)
			rc = cli_fail(&err);
	}
	strata_driver_free(d);
	free(opts);
	return rc;
}

const cli_command cmd_create = {
	.name = "create",
	.usage = "[--rw] [--storage-opt KEY=VALUE]... ID [PARENT]",
	.summary = "create layer ID on top of PARENT (a base layer without PARENT)",
	.help = "--rw marks a container's writable layer (Docker's CreateReadWrite).\n"
		"No storage option is supported yet; any given is an error.",
	.run = run_create,
};

/* Parses "COMMAND ID" with no options; returns the id or NULL. */
static const char *one_id(const cli_command *cmd, int argc, char **argv, int *rc)
{
	int first = 1;
	if (argc > 1 && !strcmp(argv[1], "--"))
		first = 2;
	if (argc - first != 1 || (first == 1 && argv[1][0] == '-' && argv[1][1])) {
		*rc = cli_usage_error(cmd, argc - first < 1   ? "missing ID"
					   : argc - first > 1 ? "too many arguments"
							      : "unknown option");
		return NULL;
	}
	*rc = 0;
	return argv[first];
}

static int run_rm(const cli_globals *g, int argc, char **argv)
{
	int rc;
	const char *id = one_id(&cmd_rm, argc, argv, &rc);
	if (!id)
		return rc;
	strata_driver *d = NULL;
	rc = cli_open(g, 0, &d);
	if (rc)
		return rc;
	strata_error err;
	if (strata_remove(d, id, &err) < 0)
		rc = cli_fail(&err);
	strata_driver_free(d);
	return rc;
}

const cli_command cmd_rm = {
	.name = "rm",
	.usage = "ID",
	.summary = "unmount and remove layer ID (refused while another layer names it as parent)",
	.run = run_rm,
};

static int run_exists(const cli_globals *g, int argc, char **argv)
{
	int rc;
	const char *id = one_id(&cmd_exists, argc, argv, &rc);
	if (!id)
		return rc;
	strata_driver *d = NULL;
	rc = cli_open(g, 0, &d);
	if (rc)
		return EXIT_USAGE;
	strata_error err;
	int r = strata_exists(d, id, &err);
	strata_driver_free(d);
	if (r < 0) {
		cli_fail(&err);
		return EXIT_USAGE;
	}
	return r ? EXIT_SUCCESS : EXIT_FAILURE;
}

const cli_command cmd_exists = {
	.name = "exists",
	.usage = "ID",
	.summary = "exit 0 if layer ID exists, 1 if not (2 on error)",
	.run = run_exists,
};

static int run_metadata(const cli_globals *g, int argc, char **argv)
{
	static const struct option longopts[] = {{"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};
	bool json = false;
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c != 'j')
			return cli_usage_error(&cmd_metadata, "unknown option \"%s\"", argv[optind - 1]);
		json = true;
	}
	if (argc - optind != 1)
		return cli_usage_error(&cmd_metadata, argc - optind < 1 ? "missing ID" : "too many arguments");

	strata_driver *d = NULL;
	int rc = cli_open(g, 0, &d);
	if (rc)
		return rc;
	strata_kv_list l = {0};
	strata_error err;
	if (strata_get_metadata(d, argv[optind], &l, &err) < 0)
		rc = cli_fail(&err);
	else
		cli_print_kv(&l, json);
	strata_kv_list_clear(&l);
	strata_driver_free(d);
	return rc;
}

const cli_command cmd_metadata = {
	.name = "metadata",
	.usage = "[--json] ID",
	.summary = "show layer ID: its dirs, parent, chain length, reference count",
	.run = run_metadata,
};
