/* SPDX-License-Identifier: Apache-2.0 */
/* Running the mount, unmount and publish commands (see repo.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "thin/repo.h"
#include "util/banned.h"
#include "util/error.h"
#include "util/macro.h"

extern char **environ;

#define STDERR_TAIL   4096
#define LINE_MAX_KEPT 300
#define TAIL_LINES    3
#define GROUP_EXIT_MS 10000 /* for a killed process group to be gone */

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Printable, for a one-line message. */
static void flatten_line(char *p)
{
	for (; *p; p++)
		if ((unsigned char)*p < 0x20)
			*p = ' ';
}

/* What the command said, for the message: the first line that says
 * error or fail (commands like cvmfs_server print the cause early and a
 * generic line last), then its last TAIL_LINES lines, " | " between. */
static void describe_output(char *tail, size_t len, const char *errline, char *out, size_t size)
{
	out[0] = '\0';
	while (len > 0 && (tail[len - 1] == '\n' || tail[len - 1] == '\r' || tail[len - 1] == ' '))
		len--;
	tail[len] = '\0';
	const char *lines[TAIL_LINES];
	size_t n = 0;
	for (char *end = tail + len; n < TAIL_LINES && end > tail;) {
		char *nl = end;
		while (nl > tail && nl[-1] != '\n')
			nl--;
		*end = '\0';
		flatten_line(nl);
		if (*nl)
			lines[n++] = nl;
		end = nl > tail ? nl - 1 : tail;
		if (nl == tail)
			break;
	}
	size_t used = 0;
	bool err_shown = false;
	for (size_t i = 0; i < n; i++)
		err_shown = err_shown || !strcmp(lines[i], errline);
	if (*errline && !err_shown)
		used += (size_t)snprintf(out + used, size - used, "%s%s", errline, n ? " ... " : "");
	for (size_t i = n; i-- > 0 && used < size;)
		used += (size_t)snprintf(out + used, size - used, "%s%s", lines[i], i ? " | " : "");
}

static bool says_error(const char *line)
{
	return strcasestr(line, "error") || strcasestr(line, "fail");
}

bool thin_group_running(pid_t pgid)
{
	if (kill(-pgid, 0) < 0 && errno == ESRCH)
		return false;
	DIR *proc = opendir("/proc");
	if (!proc)
		return true;
	bool running = false;
	struct dirent *de;
	while (!running && (de = readdir(proc))) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		char path[300], buf[512];
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n <= 0)
			continue;
		buf[n] = '\0';
		/* "pid (comm) state ppid pgrp ...": comm may hold anything */
		const char *p = strrchr(buf, ')');
		char state;
		long ppid, pgrp;
		if (p && sscanf(p + 1, " %c %ld %ld", &state, &ppid, &pgrp) == 3 && pgrp == (long)pgid &&
		    state != 'Z' && state != 'X')
			running = true;
	}
	closedir(proc);
	return running;
}

/*
 * Kills what is left of a command's process group and waits (a while)
 * until it is gone.  A command that failed or was killed must not go on
 * behind our back: `cvmfs_server ingest` killed leaves its
 * cvmfs_swissknife running inside the transaction, holding the lock that
 * the abort which follows needs.
 */
static void kill_group(pid_t pgid)
{
	kill(-pgid, SIGKILL);
	long long deadline = now_ms() + GROUP_EXIT_MS;
	while (thin_group_running(pgid) && now_ms() < deadline)
		usleep(20000);
}

int thin_run(const char *cmd, const char *const *env, int stdin_fd, unsigned timeout_s, strata_error *err)
{
	return thin_run_notify(cmd, env, stdin_fd, timeout_s, NULL, NULL, err);
}

int thin_run_notify(const char *cmd, const char *const *env, int stdin_fd, unsigned timeout_s,
		    void (*started)(pid_t pgid, void *data), void *data, strata_error *err)
{
	size_t n_env = 0, n_extra = 0;
	while (environ && environ[n_env])
		n_env++;
	while (env && env[n_extra])
		n_extra++;
	_cleanup_free_ char **envp = calloc(n_env + n_extra + 1, sizeof(char *));
	if (!envp)
		return -ENOMEM;
	for (size_t i = 0; i < n_extra; i++)
		envp[i] = (char *)env[i];
	/* Ours first: a name already in the environment is overridden. */
	for (size_t i = 0, k = n_extra; i < n_env; i++) {
		size_t kl = strcspn(environ[i], "=");
		bool dup = false;
		for (size_t j = 0; j < n_extra && !dup; j++)
			dup = !strncmp(env[j], environ[i], kl) && env[j][kl] == '=';
		if (!dup)
			envp[k++] = environ[i];
	}

	int pipefd[2];
	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return error_set(err, negerrno(), "pipe");
	_cleanup_close_ int rd = pipefd[0];
	_cleanup_close_ int wr = pipefd[1];
	_cleanup_close_ int null_fd = -1;
	if (stdin_fd < 0) {
		null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (null_fd < 0)
			return error_set(err, negerrno(), "open /dev/null");
		stdin_fd = null_fd;
	}

	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	if (posix_spawn_file_actions_init(&fa) != 0)
		return -ENOMEM;
	if (posix_spawnattr_init(&attr) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		return -ENOMEM;
	}
	sigset_t none, all;
	sigemptyset(&none);
	sigfillset(&all);
	posix_spawn_file_actions_adddup2(&fa, stdin_fd, 0);
	posix_spawn_file_actions_adddup2(&fa, wr, 1);
	posix_spawn_file_actions_adddup2(&fa, wr, 2);
	/* Its own process group, so a timeout kills what it started too; the
	 * caller's signal mask (a server blocks SIGTERM) is not inherited. */
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	pid_t pid;
	char sh[] = "sh", dash_c[] = "-c";
	char *const argv[] = {sh, dash_c, (char *)cmd, NULL};
	int sr = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	if (sr != 0)
		return error_set(err, -sr, "run \"%s\"", cmd);
	if (started)
		started(pid, data);
	close(wr);
	wr = -1;

	/* Read its output until it exits: not until EOF, as a daemon it
	 * leaves behind (sshfs, a FUSE mount) may keep the pipe open. */
	fcntl(rd, F_SETFL, O_NONBLOCK);
	char tail[STDERR_TAIL + 1];
	size_t tail_len = 0;
	/* The line being read, and the first that said error or fail. */
	char cur[LINE_MAX_KEPT + 1] = "", errline[LINE_MAX_KEPT + 1] = "";
	size_t cur_len = 0;
	long long deadline = now_ms() + (long long)timeout_s * 1000;
	bool timed_out = false, exited = false, eof = false;
	int status = 0;
	while (!exited) {
		/* WNOWAIT: it stays a zombie until reaped below, so its pid,
		 * the group's id, cannot be reused while kill_group uses it. */
		siginfo_t si = {0};
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno != EINTR)
			return error_set(err, negerrno(), "wait for \"%s\"", cmd);
		exited = si.si_pid == pid;
		if (!exited && now_ms() >= deadline) {
			timed_out = true;
			kill(-pid, SIGKILL);
			while (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT) < 0 && errno == EINTR)
				;
			exited = true;
		}
		/* Failed: nothing it started runs on (its daemons, which leave
		 * the group, are not touched).  Success leaves the group as
		 * it is: a mount command's FUSE daemon may still be in it. */
		if (exited && (timed_out || si.si_code != CLD_EXITED || si.si_status != 0))
			kill_group(pid);
		if (exited)
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
		if (!exited && !eof) {
			struct pollfd p = {.fd = rd, .events = POLLIN};
			poll(&p, 1, 50);
		} else if (!exited) {
			usleep(20000);
		}
		for (;;) { /* drain what is there now */
			char buf[4096];
			ssize_t n = eof ? 0 : read(rd, buf, sizeof(buf));
			if (n < 0 && errno == EINTR)
				continue;
			if (n == 0)
				eof = true;
			if (n <= 0)
				break;
			for (ssize_t i = 0; i < n && !*errline; i++) {
				if (buf[i] != '\n') {
					if (cur_len < LINE_MAX_KEPT)
						cur[cur_len++] = buf[i];
					continue;
				}
				cur[cur_len] = '\0';
				flatten_line(cur);
				if (says_error(cur))
					memcpy(errline, cur, cur_len + 1);
				cur_len = 0;
			}
			size_t take = (size_t)n;
			if (take >= STDERR_TAIL) {
				memcpy(tail, buf + take - STDERR_TAIL, STDERR_TAIL);
				tail_len = STDERR_TAIL;
			} else {
				if (tail_len + take > STDERR_TAIL) {
					size_t drop = tail_len + take - STDERR_TAIL;
					memmove(tail, tail + drop, tail_len - drop);
					tail_len -= drop;
				}
				memcpy(tail + tail_len, buf, take);
				tail_len += take;
			}
		}
	}
	cur[cur_len] = '\0';
	flatten_line(cur);
	if (!*errline && says_error(cur))
		memcpy(errline, cur, cur_len + 1);
	char said[STRATA_ERROR_MAX / 2];
	describe_output(tail, tail_len, errline, said, sizeof(said));
	if (timed_out)
		return error_setf(err, -ETIMEDOUT, "\"%s\" did not finish within %us (killed)%s%s", cmd, timeout_s,
				  *said ? ": " : "", said);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	if (WIFEXITED(status))
		return error_setf(err, -EIO, "\"%s\" exited with status %d%s%s", cmd, WEXITSTATUS(status),
				  *said ? ": " : "", said);
	return error_setf(err, -EIO, "\"%s\" was killed by signal %d%s%s", cmd, WTERMSIG(status), *said ? ": " : "",
			  said);
}
