/* SPDX-License-Identifier: Apache-2.0 */
/* The strata command: parse, call the library, print.  No logic here. */
#pragma once

#include <stdbool.h>

#include "strata.h"

#define EXIT_USAGE 2

typedef struct cli_globals {
	const char *root;
	const char **options; /* NULL-terminated driver options (-o) */
	size_t n_options;
} cli_globals;

typedef struct cli_command {
	const char *name;
	const char *usage;   /* arguments after the name */
	const char *summary; /* one line */
	const char *help;    /* details, may be NULL */
	int (*run)(const cli_globals *g, int argc, char **argv);
} cli_command;

/* Prints "strata: <message>" on one line to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints err's message; returns 1 (the failure exit code). */
int cli_fail(const strata_error *err);
/* Prints the command's usage line as an error; returns EXIT_USAGE. */
int cli_usage_error(const cli_command *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Opens the store for a command (INIT for `init`). */
int cli_open(const cli_globals *g, unsigned flags, strata_driver **ret);
/* Handles --help / -h for a command: prints help and returns true. */
bool cli_wants_help(const cli_command *cmd, int argc, char **argv);
const cli_command *cli_find(const char *name);
void cli_print_kv(const strata_kv_list *l, bool json);

extern const cli_command cmd_init, cmd_status, cmd_cleanup, cmd_check;
extern const cli_command cmd_create, cmd_rm, cmd_exists, cmd_metadata;
extern const cli_command cmd_mount, cmd_umount;
extern const cli_command cmd_apply, cmd_diff, cmd_size, cmd_changes;
extern const cli_command cmd_serve, cmd_thin, cmd_import_aufs, cmd_snapshotter;

/* The live progress line (progress.c): set on o only when stderr is a
 * terminal and not quiet. */
typedef struct cli_progress {
	const char *label;
	double start, last;
} cli_progress;
void cli_progress_init(cli_progress *c, const char *label, bool quiet, strata_tar_options *o);
void cli_progress_abort(const cli_progress *c, const strata_tar_options *o);
/* "12.3 MiB" into buf. */
const char *cli_human(double bytes, char *buf, size_t size);

/* An output file (-o FILE), see output.c.  cli_output_open and
 * cli_output_commit return 0 or, having printed why, EXIT_FAILURE. */
typedef struct cli_output {
	int fd;		  /* write here */
	const char *what; /* "diff ID", for messages */
	const char *path; /* as given */
	bool staged;	  /* a temp file beside the target, renamed at commit */
	bool existed;	  /* a regular file was there: its mode is kept */
	unsigned mode;
	int dir_fd;
	char *name; /* the target's name in dir_fd */
	char *tmp;  /* a temp name this command made, or NULL */
} cli_output;
int cli_output_open(cli_output *o, const char *path, const char *what);
int cli_output_commit(cli_output *o);
/* After a failure: removes only what this command made. */
void cli_output_abort(cli_output *o);
