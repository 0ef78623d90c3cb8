/* SPDX-License-Identifier: Apache-2.0 */
/* strata snapshotter: containerd's proxy snapshotter (src/snapshotter/). */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../snapshotter/grpc_server.h"
#include "../snapshotter/service.h"
#include "cli.h"

#define DEFAULT_SOCKET "/run/strata/snapshotter.sock"

static int min_level = 0; /* 0 info, 1 warn: what is printed */

static void log_line(int level, const char *message, void *data)
{
	(void)data;
	if (level < min_level)
		return;
	char ts[32];
	time_t now = time(NULL);
	struct tm tm;
	strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
	fprintf(stderr, "%s strata snapshotter: %s%s\n", ts, level ? "warning: " : "", message);
}

static int run_snapshotter(const cli_globals *g, int argc, char **argv)
{
	static const struct option longopts[] = {
		{"socket", required_argument, NULL, 's'},
		{"log-level", required_argument, NULL, 'l'},
		{"stall-timeout", required_argument, NULL, 't'},
		{NULL, 0, NULL, 0},
	};
	const char *socket_path = DEFAULT_SOCKET;
	unsigned long stall = 60;
	char *end;
	int c;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			socket_path = optarg;
			break;
		case 'l':
			if (!strcmp(optarg, "info") || !strcmp(optarg, "debug"))
				min_level = 0;
			else if (!strcmp(optarg, "warn") || !strcmp(optarg, "error"))
				min_level = 1;
			else
				return cli_usage_error(&cmd_snapshotter,
						       "--log-level %s: expected debug, info, warn or error", optarg);
			break;
		case 't':
			stall = strtoul(optarg, &end, 10);
			if (!*optarg || *end || stall == 0 || stall > 3600)
				return cli_usage_error(&cmd_snapshotter,
						       "--stall-timeout %s: expected seconds, 1 to 3600", optarg);
			break;
		default:
			return cli_usage_error(&cmd_snapshotter, "unknown option \"%s\"", argv[optind - 1]);
		}
	}
	if (optind < argc)
		return cli_usage_error(&cmd_snapshotter, "unexpected argument \"%s\"", argv[optind]);

	/* Blocked before any thread starts (gRPC's included): the serving
	 * loop polls for them, and no thread dies of them. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stop, NULL);

	strata_error err = {0};
	snap_service *svc = NULL;
	if (snap_service_open(g->root, g->options, log_line, NULL, &svc, &err) < 0)
		return cli_fail(&err);
	int r = snap_grpc_serve(svc, socket_path, (unsigned)stall, &stop, log_line, NULL, &err);
	snap_service_free(svc);
	if (r < 0)
		return cli_fail(&err);
	return EXIT_SUCCESS;
}

const cli_command cmd_snapshotter = {
	.name = "snapshotter",
	.usage = "[--socket PATH] [--log-level LEVEL] [--stall-timeout SECONDS]",
	.summary = "serve containerd's snapshots API (a proxy snapshotter) on a unix socket",
	.help = "Listens on PATH (default " DEFAULT_SOCKET ", mode 0600) with gRPC: the service\n"
		"containerd.services.snapshots.v1.Snapshots, backed by the store at --root (made if\n"
		"missing) with the driver options given by -o.  containerd loads it with\n"
		"  [proxy_plugins.strata]\n"
		"    type = \"snapshot\"\n"
		"    address = \"" DEFAULT_SOCKET "\"\n"
		"and `ctr --snapshotter strata`, or the CRI's snapshotter = \"strata\", use it.\n"
		"Snapshot keys and labels live in ROOT/containerd/snapshots.db (SQLite); at start\n"
		"the database and the layers are reconciled.  A store serves Docker (strata serve)\n"
		"or containerd, not both at once.  A call whose client neither reads nor sends\n"
		"for --stall-timeout seconds (default 60) is cancelled.  SIGTERM or SIGINT: cancel\n"
		"the calls in progress, remove the socket, exit.",
	.run = run_snapshotter,
};
