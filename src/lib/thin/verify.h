/* SPDX-License-Identifier: Apache-2.0 */
/* thin verify (verify.c). */
#pragma once

#include "strata.h"

/*
 * Compares the published layer at `layerfs` (the dir) with the manifest in
 * the record beside it.  0: as published (*ret_note, if set, says what the
 * filesystem is known to lose); -EBADMSG: *ret_detail lists the first
 * problems (corruption, .wh. names); -ENODATA: no manifest to compare with
 * (nothing wrong seen; *ret_note says so).  Both strings: caller frees.
 */
int thin_verify_layer(const char *layerfs, char **ret_detail, char **ret_note, strata_error *err);
