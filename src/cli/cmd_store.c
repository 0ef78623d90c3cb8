/* SPDX-License-Identifier: Apache-2.0 */
/* Verbs about the store as a whole: init, status, cleanup. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int no_args(const cli_command *cmd, int argc, char **argv)
{
	(void)argv;
	if (argc > 1)
		return cli_usage_error(cmd, "unexpected argument \"%s\"", argv[1]);
	return 0;
}

static int run_init(const cli_globals *g, int argc, char **argv)
{
	int rc = no_args(&cmd_init, argc, argv);
	if (rc)
		return rc;
	strata_driver *d = NULL;
	rc = cli_open(g, STRATA_OPEN_INIT, &d);
	strata_driver_free(d);
	return rc;
}

const cli_command cmd_init = {
	.name = "init",
	.usage = "",
	.summary = "create the store (or check it) and recover from an earlier crash",
	.help = "Creates ROOT/{layers,diff,mnt,work,...} if missing, refuses a backing filesystem\n"
		"overlay cannot use (an overlay mount; no d_type), finishes interrupted removes,\n"
		"and unmounts unions an earlier process left mounted with no reference held.",
	.run = run_init,
};

static int run_status(const cli_globals *g, int argc, char **argv)
{
	static const struct option longopts[] = {{"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};
	bool json = false;
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c != 'j')
			return cli_usage_error(&cmd_status, "unknown option \"%s\"", argv[optind - 1]);
		json = true;
	}
	if (optind < argc)
		return cli_usage_error(&cmd_status, "unexpected argument \"%s\"", argv[optind]);

	strata_driver *d = NULL;
	int rc = cli_open(g, 0, &d);
	if (rc)
		return rc;
	strata_kv_list l = {0};
	strata_error err;
	if (strata_status(d, &l, &err) < 0)
		rc = cli_fail(&err);
	else
		cli_print_kv(&l, json);
	strata_kv_list_clear(&l);
	strata_driver_free(d);
	return rc;
}

const cli_command cmd_status = {
	.name = "status",
	.usage = "[--json]",
	.summary = "show the store: root, backing filesystem, engine, layer and mount counts",
	.run = run_status,
};

static int run_cleanup(const cli_globals *g, int argc, char **argv)
{
	int rc = no_args(&cmd_cleanup, argc, argv);
	if (rc)
		return rc;
	strata_driver *d = NULL;
	rc = cli_open(g, 0, &d);
	if (rc)
		return rc;
	strata_error err;
	if (strata_cleanup(d, &err) < 0)
		rc = cli_fail(&err);
	strata_driver_free(d);
	return rc;
}

const cli_command cmd_cleanup = {
	.name = "cleanup",
	.usage = "",
	.summary = "unmount every union under the root and reset reference counts",
	.run = run_cleanup,
};
