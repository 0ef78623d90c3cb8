/* SPDX-License-Identifier: Apache-2.0 */
/* Verbs that take and drop references: mount, umount. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static int run_mount(const cli_globals *g, int argc, char **argv)
{
	static const struct option longopts[] = {{"label", required_argument, NULL, 'l'}, {NULL, 0, NULL, 0}};
	const char *label = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c != 'l')
			return cli_usage_error(&cmd_mount, "unknown option \"%s\"", argv[optind - 1]);
		label = optarg;
	}
	if (argc - optind != 1)
		return cli_usage_error(&cmd_mount, argc - optind < 1 ? "missing ID" : "too many arguments");

	strata_driver *d = NULL;
	int rc = cli_open(g, 0, &d);
	if (rc)
		return rc;
	char *path = NULL;
	strata_error err;
	if (strata_get(d, argv[optind], label, &path, &err) < 0)
		rc = cli_fail(&err);
	else
		puts(path);
	free(path);
	strata_driver_free(d);
	return rc;
}

const cli_command cmd_mount = {
	.name = "mount",
	.usage = "[--label LABEL] ID",
	.summary = "take a reference on layer ID, mounting its union; print the path",
	.help = "The reference is recorded in the store, so `strata umount ID` from another\n"
		"process drops it; the last umount unmounts.  LABEL becomes a context= mount\n"
		"option when SELinux is enabled (ignored otherwise, as Docker does).",
	.run = run_mount,
};

static int run_umount(const cli_globals *g, int argc, char **argv)
{
	if (argc != 2 || (argv[1][0] == '-' && argv[1][1]))
		return cli_usage_error(&cmd_umount, argc < 2   ? "missing ID"
						    : argc > 2 ? "too many arguments"
							       : "unknown option");
	strata_driver *d = NULL;
	int rc = cli_open(g, 0, &d);
	if (rc)
		return rc;
	strata_error err;
	if (strata_put(d, argv[1], &err) < 0)
		rc = cli_fail(&err);
	strata_driver_free(d);
	return rc;
}

const cli_command cmd_umount = {
	.name = "umount",
	.usage = "ID",
	.summary = "drop a reference on layer ID; the last one unmounts",
	.run = run_umount,
};
