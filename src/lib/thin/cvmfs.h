/* SPDX-License-Identifier: Apache-2.0 */
/* thin.publisher=cvmfs (cvmfs.c). */
#pragma once

#include "strata.h"
#include "thin/repo.h"

/* -EDEADLK (with a message) when the thin root's view of repo is this
 * release manager's own union mount of it. */
int cvmfs_check_thin_root(const thin_config *c, const char *repo, strata_error *err);

/* thin_publish for thin.publisher=cvmfs. */
int cvmfs_publish(const thin_config *c, const char *repo, int tar_fd, const char *digest, uint64_t tar_size,
		  const thin_lower *lower, thin_published *ret, strata_error *err);
