/* SPDX-License-Identifier: Apache-2.0 */
/* Verbs about the store as a whole: init, status, cleanup. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

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

static void print_problems(const strata_problem_list *l, bool json)
{
	if (!json) {
		for (size_t i = 0; i < l->n; i++) {
			const strata_problem *p = &l->items[i];
			printf("%s%s: %s (%s)", p->layer ? "layer " : "store", p->layer ? p->layer : "", p->what,
			       p->path ? p->path : "");
			if (p->repair)
				printf(": %s%s", p->repaired ? "repaired, " : "", p->repair);
			putchar('\n');
		}
		return;
	}
	json_t *a = json_array();
	for (size_t i = 0; a && i < l->n; i++) {
		const strata_problem *p = &l->items[i];
		json_array_append_new(a, json_pack("{s:s?,s:s?,s:s,s:s?,s:b}", "layer", p->layer, "path", p->path,
						   "problem", p->what, "repair", p->repair, "repaired", p->repaired));
	}
	char *s = a ? json_dumps(a, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	if (s)
		puts(s);
	free(s);
	json_decref(a);
}

static int run_check(const cli_globals *g, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"json", no_argument, NULL, 'j'},
		{"repair", no_argument, NULL, 'r'},
		{NULL, 0, NULL, 0},
	};
	bool json = false;
	unsigned flags = 0;
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c == 'j')
			json = true;
		else if (c == 'r')
			flags |= STRATA_CHECK_REPAIR;
		else
			return cli_usage_error(&cmd_check, "unknown option \"%s\"", argv[optind - 1]);
	}
	if (optind < argc)
		return cli_usage_error(&cmd_check, "unexpected argument \"%s\"", argv[optind]);
	strata_driver *d = NULL;
	/* An error opening the store is an error, not a problem found. */
	if (cli_open(g, 0, &d))
		return EXIT_USAGE;
	strata_problem_list l = {0};
	strata_error err;
	int r = strata_check(d, flags, &l, &err);
	int rc;
	if (r < 0) {
		cli_fail(&err);
		rc = EXIT_USAGE;
	} else {
		print_problems(&l, json);
		rc = r > 0 ? EXIT_FAILURE : EXIT_SUCCESS;
	}
	strata_problem_list_clear(&l);
	strata_driver_free(d);
	return rc;
}

const cli_command cmd_check = {
	.name = "check",
	.usage = "[--json] [--repair]",
	.summary = "verify the store's invariants; one line per problem, naming the layer",
	.help = "Checks chain files (they parse, name existing parents, agree with them, no cycles),\n"
		"every layer's dirs and short links, debris of interrupted operations, reference\n"
		"counts against the mount table and live holders, thin records, the engine record\n"
		"and the store marker.  Safe beside other users of the store.\n"
		"--repair fixes what is safe to fix and says what it did; what strata did not\n"
		"provably make is reported and left alone.\n"
		"Exit status: 0 no problem left, 1 problems left (found, and not repaired), 2 error.",
	.run = run_check,
};
