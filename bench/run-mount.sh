#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Builds and runs bench_mount in a fresh scratch dir, then removes it.
#   bench/run-mount.sh [bench_mount options, e.g. -n 100 -c 300]
# Needs root (overlay mounts, drop_caches).  STRATA_BENCH_BASE picks the
# parent of the scratch dir (default /var/tmp).
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build=$src/build

need_root "overlay mounts"

# The layers must sit on the disk the store will live on: tmpfs would
# measure RAM, and overlay on overlay is refused.
check_disk

install_deps
[[ -d $build ]] || meson setup "$build" "$src"
# Only the benchmark and what it links: src/ and tests/ change under other
# people's hands and a broken test must not stop a measurement.
ninja -C "$build" bench/bench_mount

pid=
# stop_bench: bench_mount, when it still runs, gets TERM and tears down its
# own mounts.
stop_bench() {
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
}
# Whatever happens, nothing stays mounted and nothing stays on disk; a
# mount bench_mount left is a failure.
leftover_mounts_fail=true
make_scratch strata-bench stop_bench

# A page cache grown by earlier work slows runs 1.5-2.5x (SPEC section 7).
drop_caches

echo "kernel $(uname -r), scratch $scratch on $fstype"
# In the background so that a signal reaches the trap without waiting
# for the benchmark, which then gets TERM and tears down its own mounts.
"$build/bench/bench_mount" "$@" "$scratch" &
pid=$!
wait "$pid"
