/* SPDX-License-Identifier: Apache-2.0 */
/* The snapshots service over gRPC (see grpc_server.c). */
#pragma once

#include <signal.h>

#include "service.h"

/* Serves on the unix socket `socket_path` until one of `stop_signals`
 * (which the caller has blocked in every thread) is pending; then cancels
 * the calls in progress, waits for them and removes the socket.  A stale
 * socket is replaced; a live one, or a path that is not a socket, is an
 * error.  A call whose client neither reads nor sends for stall_seconds (0:
 * 60) is cancelled. */
int snap_grpc_serve(snap_service *svc, const char *socket_path, unsigned stall_seconds, const sigset_t *stop_signals,
		    snap_log_fn log, void *log_data, strata_error *err);
