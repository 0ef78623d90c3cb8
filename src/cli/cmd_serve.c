/* SPDX-License-Identifier: Apache-2.0 */
/* strata serve: the Docker graphdriver plugin (src/plugin/). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../plugin/log.h"
#include "../plugin/plugin.h"
#include "cli.h"

#define PLUGIN_DIR "/run/docker/plugins"

/* A driver name is a file name in Docker's plugin dir and an option prefix. */
static bool name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 64 || s[0] == '.' || s[0] == '-')
		return false;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

static int run_serve(const cli_globals *g, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"socket", required_argument, NULL, 's'},
		{"name", required_argument, NULL, 'n'},
		{"log-level", required_argument, NULL, 'l'},
		{"grace", required_argument, NULL, 'g'},
		{NULL, 0, NULL, 0},
	};
	const char *socket_path = NULL, *name = NULL;
	unsigned long grace = 30;
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		char *end;
		switch (c) {
		case 's':
			socket_path = optarg;
			break;
		case 'n':
			name = optarg;
			break;
		case 'l': {
			int level = plugin_log_level_parse(optarg);
			if (level < 0)
				return cli_usage_error(&cmd_serve,
						       "--log-level %s: expected debug, info, warn or error", optarg);
			plugin_log_set_level((plugin_log_level)level);
			break;
		}
		case 'g':
			grace = strtoul(optarg, &end, 10);
			if (!*optarg || *end || grace > 3600)
				return cli_usage_error(&cmd_serve, "--grace %s: expected seconds, 0 to 3600", optarg);
			break;
		default:
			return cli_usage_error(&cmd_serve, "unknown option \"%s\"", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return cli_usage_error(&cmd_serve, "unexpected argument \"%s\"", argv[optind]);
	if (!name)
		name = "strata";
	if (!name_ok(name))
		return cli_usage_error(&cmd_serve, "--name %s: expected [A-Za-z0-9_.-], at most 64 bytes", name);
	char path[256];
	if (!socket_path) {
		snprintf(path, sizeof(path), PLUGIN_DIR "/%s.sock", name);
		socket_path = path;
	}
	/* The name is also the prefix of Docker's storage options for us:
	 * "<name>.key=value". */
	plugin_config cfg = {
		.socket_path = socket_path,
		.name = name,
		.options = g->options,
		.grace_seconds = (unsigned)grace,
	};
	strata_error err;
	if (plugin_serve(&cfg, &err) < 0)
		return cli_fail(&err);
	return EXIT_SUCCESS;
}

const cli_command cmd_serve = {
	.name = "serve",
	.usage = "[--name NAME] [--socket PATH] [--log-level LEVEL] [--grace SECONDS]",
	.summary = "serve Docker's graphdriver plugin protocol on a unix socket",
	.help = "Listens on " PLUGIN_DIR "/NAME.sock (default NAME: strata), where\n"
		"`dockerd --experimental --storage-driver NAME` finds it, or on PATH (then point\n"
		"dockerd at it with /etc/docker/plugins/NAME.spec).  The socket is mode 0600.\n"
		"The store is the Home that Docker's Init names (DATA_ROOT/NAME); --root is not used.\n"
		"Driver options: -o before `serve`, then dockerd's --storage-opt values (with or\n"
		"without the prefix \"NAME.\").  Logs go to stderr, one line per call (level, method,\n"
		"id, status, duration); LEVEL is debug, info (default), warn or error.\n"
		"SIGTERM or SIGINT: stop taking calls, let running ones finish (up to --grace\n"
		"seconds, default 30), unmount every union of the store, remove the socket, exit.",
	.run = run_serve,
};
