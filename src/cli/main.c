/* SPDX-License-Identifier: Apache-2.0 */
#include <errno.h>
#include <getopt.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"

#define DEFAULT_ROOT "/var/lib/strata"

static const cli_command *const commands[] = {
	&cmd_init,    &cmd_create, &cmd_rm,   &cmd_exists,	&cmd_mount,  &cmd_umount,
	&cmd_apply,   &cmd_diff,   &cmd_size, &cmd_changes,	&cmd_status, &cmd_metadata,
	&cmd_cleanup, &cmd_check,  &cmd_thin, &cmd_import_aufs, &cmd_serve,  &cmd_snapshotter,
};

const cli_command *cli_find(const char *name)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(commands[i]->name, name))
			return commands[i];
	return NULL;
}

void cli_error(const char *fmt, ...)
{
	va_list ap;
	fputs("strata: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int cli_fail(const strata_error *err)
{
	cli_error("%s", err->message[0] ? err->message : strerror(err->code));
	return EXIT_FAILURE;
}

int cli_usage_error(const cli_command *cmd, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	cli_error("%s: %s (usage: strata %s %s)", cmd->name, msg, cmd->name, cmd->usage);
	return EXIT_USAGE;
}

/* The library's messages that are not errors: a line on stderr each. */
static void cli_log(int level, const char *message, void *data)
{
	(void)data;
	cli_error("%s: %s", level > 0 ? "warning" : "note", message);
}

int cli_open(const cli_globals *g, unsigned flags, strata_driver **ret)
{
	strata_error err;
	if (strata_driver_open(g->root, g->options, flags, ret, &err) < 0)
		return cli_fail(&err);
	strata_driver_set_log(*ret, cli_log, NULL);
	return 0;
}

bool cli_wants_help(const cli_command *cmd, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			printf("usage: strata [--root DIR] [-o KEY=VALUE]... %s %s\n\n%s\n", cmd->name, cmd->usage,
			       cmd->summary);
			if (cmd->help)
				printf("\n%s\n", cmd->help);
			return true;
		}
	}
	return false;
}

void cli_print_kv(const strata_kv_list *l, bool json)
{
	if (!json) {
		for (size_t i = 0; i < l->n; i++)
			printf("%s: %s\n", l->items[i].key, l->items[i].value);
		return;
	}
	json_t *o = json_object();
	for (size_t i = 0; o && i < l->n; i++)
		json_object_set_new(o, l->items[i].key, json_string(l->items[i].value));
	char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	if (s)
		puts(s);
	free(s);
	json_decref(o);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: strata [--root DIR] [-o KEY=VALUE]... COMMAND [ARGS]\n\n"
		   "A layered filesystem store for container images.\n\n"
		   "options:\n"
		   "  --root DIR        store root (default " DEFAULT_ROOT ", or $STRATA_ROOT)\n"
		   "  -o KEY=VALUE      driver option, repeatable: engine=overlay,\n"
		   "                    mountapi=auto|new|legacy, uidmap=C:H:N, gidmap=C:H:N,\n"
		   "                    thin.root=DIR, thin.mount=external|internal,\n"
		   "                    thin.mount_cmd=CMD, thin.umount_cmd=CMD, thin.repo=NAME,\n"
		   "                    thin.publisher=dir:PATH|cmd:CMD|cvmfs, thin.timeout=S,\n"
		   "                    thin.remount_cmd=CMD\n"
		   "  -h, --help        this help; COMMAND --help for a command's\n\n"
		   "commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-11s %s\n", commands[i]->name, commands[i]->summary);
}

static int dispatch(cli_globals *g, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"root", required_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	int c;
	/* '+': stop at the command, whose own options follow it. */
	while ((c = getopt_long(argc, argv, "+ho:", longopts, NULL)) != -1) {
		switch (c) {
		case 'r':
			g->root = optarg;
			break;
		case 'o':
			if (!strchr(optarg, '=')) {
				cli_error("-o %s: expected KEY=VALUE", optarg);
				return EXIT_USAGE;
			}
			g->options[g->n_options++] = optarg;
			break;
		case 'h':
			usage(stdout);
			return EXIT_SUCCESS;
		default:
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	const char *name = argv[optind];
	if (!strcmp(name, "help")) {
		const cli_command *cmd = optind + 1 < argc ? cli_find(argv[optind + 1]) : NULL;
		if (cmd) {
			char help_flag[] = "--help";
			char *help_argv[] = {argv[optind], help_flag, NULL};
			cli_wants_help(cmd, 2, help_argv);
		} else {
			usage(stdout);
		}
		return EXIT_SUCCESS;
	}
	const cli_command *cmd = cli_find(name);
	if (!cmd) {
		cli_error("unknown command \"%s\" (see strata --help)", name);
		return EXIT_USAGE;
	}
	int sub_argc = argc - optind;
	char **sub_argv = argv + optind;
	if (cli_wants_help(cmd, sub_argc, sub_argv))
		return EXIT_SUCCESS;
	optind = 0; /* glibc: 0 fully re-initialises getopt for the command */
	opterr = 0; /* commands report unknown options in their own one line */
	return cmd->run(g, sub_argc, sub_argv);
}

int main(int argc, char **argv)
{
	/* Tar names are UTF-8 in PAX records: with a UTF-8 character type
	 * libarchive passes them through instead of marking them binary. */
	setlocale(LC_CTYPE, "C.UTF-8");
	cli_globals g = {.root = getenv("STRATA_ROOT")};
	if (!g.root || !*g.root)
		g.root = DEFAULT_ROOT;
	g.options = calloc((size_t)argc + 1, sizeof(char *));
	if (!g.options) {
		cli_error("out of memory");
		return EXIT_FAILURE;
	}
	int rc = dispatch(&g, argc, argv);
	free(g.options);
	return rc;
}
