/* SPDX-License-Identifier: Apache-2.0 */
/* strata import-aufs [--check] AUFS_ROOT: AUFS-format layers into this store. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef struct progress_state {
	bool quiet, check;
} progress_state;

static void on_progress(const strata_import_progress *p, void *data)
{
	const progress_state *s = data;
	if (s->quiet)
		return;
	if (s->check)
		fprintf(stderr, "[%zu/%zu] %s: %s\n", p->index, p->total, p->id,
			p->entries ? "DIFFERS" : "same as the aufs view");
	else if (p->skipped)
		fprintf(stderr, "[%zu/%zu] %s: imported before, kept\n", p->index, p->total, p->id);
	else
		fprintf(stderr, "[%zu/%zu] %s: %" PRIu64 " entries\n", p->index, p->total, p->id, p->entries);
}

static int run_import(const cli_globals *g, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"check", no_argument, NULL, 'c'},
		{"quiet", no_argument, NULL, 'q'},
		{NULL, 0, NULL, 0},
	};
	progress_state ps = {0};
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c == 'c')
			ps.check = true;
		else if (c == 'q')
			ps.quiet = true;
		else
			return cli_usage_error(&cmd_import_aufs, "unknown option \"%s\"", argv[optind - 1]);
	}
	if (optind + 1 != argc)
		return cli_usage_error(&cmd_import_aufs, "expected one AUFS_ROOT");
	const char *src = argv[optind];
	strata_driver *d = NULL;
	int rc = cli_open(g, ps.check ? 0 : STRATA_OPEN_INIT, &d);
	if (rc)
		return rc;
	strata_error err;
	if (ps.check) {
		strata_check_report rep = {0};
		int n = strata_import_aufs_check(d, src, on_progress, &ps, &rep, &err);
		if (n < 0) {
			rc = cli_fail(&err);
		} else {
			for (size_t i = 0; i < rep.n; i++)
				printf("%s %s: %s\n", rep.diffs[i].id, rep.diffs[i].path, rep.diffs[i].what);
			printf("checked %zu layers: %d difference%s%s\n", rep.layers, n, n == 1 ? "" : "s",
			       (size_t)n > rep.n ? " (the first ones listed)" : "");
			rc = n ? EXIT_FAILURE : EXIT_SUCCESS;
		}
		strata_check_report_clear(&rep);
	} else {
		strata_import_stats st = {0};
		if (strata_import_aufs(d, src, on_progress, &ps, &st, &err) < 0) {
			rc = cli_fail(&err);
		} else {
			printf("imported %zu layers (%zu imported before); converted %" PRIu64 " files (%" PRIu64
			       " bytes), %" PRIu64 " directories, %" PRIu64 " symlinks and specials, %" PRIu64
			       " hardlinks, %" PRIu64 " whiteouts, %" PRIu64 " opaque directories\n",
			       st.layers, st.skipped, st.files, st.bytes, st.dirs, st.links, st.hardlinks, st.whiteouts,
			       st.opaque_dirs);
		}
	}
	strata_driver_free(d);
	return rc;
}

const cli_command cmd_import_aufs = {
	.name = "import-aufs",
	.usage = "[--quiet] [--check] AUFS_ROOT",
	.summary = "bring the layers of an AUFS store (/var/lib/docker/aufs) into this store",
	.help = "Reads AUFS_ROOT/layers/<id> (parent chains) and AUFS_ROOT/diff/<id> and creates\n"
		"the same layers, parents first, converting .wh. whiteouts and .wh..wh..opq\n"
		"markers to overlay's and resolving files hardlinked into .wh..wh.plnk. The\n"
		"source is only read. Interrupted, it can be run again: finished layers are\n"
		"kept. Progress goes to stderr, a summary to stdout.\n"
		"--check mounts each imported layer and compares its merged tree with what the\n"
		"aufs semantics give for the source chain; it lists every difference and exits\n"
		"1 if there is any.",
	.run = run_import,
};
