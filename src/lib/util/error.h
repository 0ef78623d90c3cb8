/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Building error messages.  Inner functions describe what failed
 * ("mkdir diff/abc: File exists"); the public entry points prefix the
 * operation and the id ("create abc: mkdir diff/abc: File exists").
 * Every function here accepts err == NULL and returns the code it was given,
 * so `return error_set(err, r, ...)` reads naturally.
 */
#pragma once

#include "strata.h"
#include "util/macro.h"

/* Sets err to "<fmt>: <strerror(-code)>" and returns code (negative errno). */
int error_set(strata_error *err, int code, const char *fmt, ...) _printf_(3, 4);

/* Sets err to "<fmt>" without the errno text; returns code. */
int error_setf(strata_error *err, int code, const char *fmt, ...) _printf_(3, 4);

/* Prefixes "<fmt>: " to the message already in err; returns code.  If err
 * holds no message yet, sets it from strerror(-code). */
int error_prefix(strata_error *err, int code, const char *fmt, ...) _printf_(3, 4);

void error_clear(strata_error *err);

/* `s` made safe for a one-line message: bytes outside printable ASCII (and
 * backslash) become \xNN, and it is cut at about 100 bytes.  Ids and labels
 * come from outside and are quoted this way before they are validated. */
const char *error_quote(const char *s, char *buf, size_t size);
#define ERROR_QUOTE_MAX (STRATA_ID_MAX + 32) /* a valid id always fits whole */
#define QUOTE(s)	error_quote((s), (char[ERROR_QUOTE_MAX]){0}, ERROR_QUOTE_MAX)
