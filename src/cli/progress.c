/* SPDX-License-Identifier: Apache-2.0 */
/* The live progress line of apply and diff, on a terminal only. */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static const char *human(double bytes, char *buf, size_t size)
{
	static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
	size_t u = 0;
	while (bytes >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		bytes /= 1024;
		u++;
	}
	snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
	return buf;
}

static void draw(const strata_progress *p, void *data)
{
	cli_progress *c = data;
	double t = now();
	/* Ten times a second is live enough and costs nothing. */
	if (!p->done && t - c->last < 0.1)
		return;
	c->last = t;
	double elapsed = t - c->start > 1e-6 ? t - c->start : 1e-6;
	char b[32], r[32];
	fprintf(stderr, "\r\033[K%s: %s, %llu entries, %s/s%s", c->label, human((double)p->bytes, b, sizeof(b)),
		(unsigned long long)p->entries, human((double)p->bytes / elapsed, r, sizeof(r)), p->done ? "\n" : "");
	fflush(stderr);
}

void cli_progress_init(cli_progress *c, const char *label, bool quiet, strata_tar_options *o)
{
	c->label = label;
	c->start = c->last = now();
	c->last -= 1; /* draw the first call */
	if (!quiet && isatty(STDERR_FILENO)) {
		o->progress = draw;
		o->progress_data = c;
	}
}

void cli_progress_abort(const cli_progress *c, const strata_tar_options *o)
{
	/* End the live line before an error message. */
	if (o->progress && c)
		fputs("\r\033[K", stderr);
}

const char *cli_human(double bytes, char *buf, size_t size)
{
	return human(bytes, buf, size);
}
