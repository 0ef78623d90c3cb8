/* SPDX-License-Identifier: Apache-2.0 */
/* strata thin make | show | verify: thin images (SPEC section 4). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

/* One line per layer on stderr: what strata thin make --from did. */
static void print_layer(const strata_thin_make_progress *p, void *data)
{
	(void)data;
	char size[32];
	if (p->duplicate)
		fprintf(stderr, "layer %zu/%zu sha256:%s is layer %zu again: listed once\n", p->index, p->total,
			p->digest, p->duplicate);
	else
		fprintf(stderr, "layer %zu/%zu sha256:%s %s %s\n", p->index, p->total, p->digest,
			cli_human((double)p->size, size, sizeof(size)),
			p->existed ? "already in the repository" : "published");
}

static int thin_make_from(const cli_globals *g, const char *from, const strata_thin_make_options *opts,
			  const char *output)
{
	strata_driver *d = NULL;
	int rc = cli_open(g, 0, &d);
	if (rc)
		return rc;
	strata_thin_make_options o = *opts;
	cli_output out = {.fd = -1, .dir_fd = -1};
	if (output && (rc = cli_output_open(&out, output, "thin make")) != 0) {
		strata_driver_free(d);
		return rc;
	}
	o.out_fd = out.fd;
	char *json = NULL;
	strata_error err;
	if (strata_thin_make_from(d, from, &o, &json, &err) < 0) {
		rc = cli_fail(&err);
		cli_output_abort(&out);
	} else {
		/* thin.json only once the loadable image is in place. */
		rc = output ? cli_output_commit(&out) : 0;
		if (!rc)
			fputs(json, stdout);
	}
	free(json);
	strata_driver_free(d);
	return rc;
}

static int thin_make(const cli_globals *g, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"repo", required_argument, NULL, 'r'},	  {"publisher", required_argument, NULL, 'p'},
		{"from", required_argument, NULL, 'f'},	  {"tag", required_argument, NULL, 't'},
		{"output", required_argument, NULL, 'o'}, {NULL, 0, NULL, 0},
	};
	const char *repo = NULL, *publisher = NULL, *from = NULL, *tag = NULL, *output = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "o:", longopts, NULL)) != -1) {
		if (c == 'r')
			repo = optarg;
		else if (c == 'p')
			publisher = optarg;
		else if (c == 'f')
			from = optarg;
		else if (c == 't')
			tag = optarg;
		else if (c == 'o')
			output = optarg;
		else
			return cli_usage_error(&cmd_thin, "make: unknown option or missing value \"%s\"",
					       argv[optind - 1]);
	}
	if (from) {
		if (optind != argc)
			return cli_usage_error(&cmd_thin, "make --from: no layer ID with --from");
		strata_thin_make_options o = {
			.repo = repo, .publisher = publisher, .tag = tag, .out_fd = -1, .progress = print_layer};
		return thin_make_from(g, from, &o, output);
	}
	if (tag || output)
		return cli_usage_error(&cmd_thin, "make: --tag and -o go with --from");
	if (!repo)
		return cli_usage_error(&cmd_thin, "make: --repo is required");
	if (optind + 1 != argc)
		return cli_usage_error(&cmd_thin, "make: expected one layer ID");
	strata_driver *d = NULL;
	int rc = cli_open(g, 0, &d);
	if (rc)
		return rc;
	char *json = NULL;
	strata_error err;
	if (strata_thin_make(d, argv[optind], repo, publisher, &json, &err) < 0)
		rc = cli_fail(&err);
	else
		fputs(json, stdout);
	free(json);
	strata_driver_free(d);
	return rc;
}

static void print_report(const strata_thin_report *rep, bool verify)
{
	for (size_t i = 0; i < rep->n; i++) {
		const strata_thin_layer *l = &rep->layers[i];
		const char *state = l->status == 0 ? (verify ? "ok" : "found") : "BAD";
		printf("%zu %s sha256:%s %s\n", i, state, l->digest, l->url);
		if (l->path)
			printf("    at %s\n", l->path);
		if (l->detail)
			printf("    %s\n", l->detail);
		if (l->note)
			printf("    note: %s\n", l->note);
	}
}

static int thin_inspect(const cli_globals *g, int argc, char **argv, bool verify)
{
	static const struct option longopts[] = {{"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};
	bool json = false;
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (c != 'j' || verify)
			return cli_usage_error(&cmd_thin, "%s: unknown option \"%s\"", argv[0], argv[optind - 1]);
		json = true;
	}
	if (optind + 1 != argc)
		return cli_usage_error(&cmd_thin, "%s: expected one layer ID", argv[0]);
	strata_driver *d = NULL;
	int rc = cli_open(g, 0, &d);
	if (rc)
		return rc;
	strata_thin_report rep = {0};
	strata_error err;
	int bad = strata_thin_inspect(d, argv[optind], verify ? STRATA_THIN_VERIFY : 0, &rep, &err);
	if (bad < 0) {
		rc = cli_fail(&err);
	} else if (json) {
		fputs(rep.json, stdout);
	} else {
		print_report(&rep, verify);
		if (bad > 0) {
			cli_error("thin %s %s: %d of %zu layers %s", verify ? "verify" : "show", argv[optind], bad,
				  rep.n, verify ? "failed verification" : "do not resolve");
			rc = EXIT_FAILURE;
		}
	}
	strata_thin_report_clear(&rep);
	strata_driver_free(d);
	return rc;
}

static int run_thin(const cli_globals *g, int argc, char **argv)
{
	if (argc < 2)
		return cli_usage_error(&cmd_thin, "expected make, show or verify");
	const char *sub = argv[1];
	if (!strcmp(sub, "make"))
		return thin_make(g, argc - 1, argv + 1);
	if (!strcmp(sub, "show"))
		return thin_inspect(g, argc - 1, argv + 1, false);
	if (!strcmp(sub, "verify"))
		return thin_inspect(g, argc - 1, argv + 1, true);
	return cli_usage_error(&cmd_thin, "unknown subcommand \"%s\" (make, show or verify)", sub);
}

const cli_command cmd_thin = {
	.name = "thin",
	.usage = "make --repo REPO [--publisher P] ID | make --from IMAGE [--repo REPO] [--publisher P] "
		 "[--tag NAME:TAG] [-o OUT.tar] | show [--json] ID | verify ID",
	.summary = "thin images: publish a chain into a repository, show or verify one",
	.help = "make    publishes the layers of image layer ID (those above its thin image, if it\n"
		"        is on one) into repository REPO (NAME or cvmfs://NAME) with publisher P\n"
		"        (dir:PATH or cmd:COMMAND; default: driver option thin.publisher), and\n"
		"        prints the thin.json of a thin image for it: import a tar holding only\n"
		"        that file (docker import) to get the thin image.\n"
		"make --from IMAGE  the same without Docker, for an image file: a docker save\n"
		"        archive, an OCI layout dir or an OCI archive (compressed or not).  Every\n"
		"        layer is checked against its diff_id first, then published base first,\n"
		"        one line each on stderr.  --repo defaults to driver option thin.repo.\n"
		"        --tag picks the image when IMAGE holds several, and tags the -o image.\n"
		"        -o OUT.tar also writes the thin image as an archive for docker load\n"
		"        (written beside OUT.tar and renamed into place on success).\n"
		"show    lists the layers of thin layer ID, base first, and where each resolves\n"
		"        under the thin root; --json prints its thin.json.\n"
		"verify  checks that every layer exists and that its content still has the\n"
		"        sha256 recorded when it was published; exit status 1 if not.",
	.run = run_thin,
};
