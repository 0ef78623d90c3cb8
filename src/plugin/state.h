/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The last Init, kept beside the socket (SOCKET.init, mode 0600).  dockerd
 * sends Init once, when it starts: a strata serve restarted under a running
 * dockerd (a crash, a systemd restart) reopens that store from this file
 * instead of failing every call until dockerd restarts too.  dockerd's
 * Cleanup (it is shutting down, and will Init again when it starts)
 * removes the file; so does a reboot, /run being a tmpfs.
 */
#pragma once

/* Records home and options; atomic (a temp file renamed over the old). */
int state_save(const char *socket_path, const char *home, const char *const *options);
/* The recorded Init: *ret_home and the NULL-terminated *ret_options, both
 * the caller's to free.  -ENOENT when there is none. */
int state_load(const char *socket_path, char **ret_home, char ***ret_options);
/* Forgets the recorded Init. */
void state_forget(const char *socket_path);
