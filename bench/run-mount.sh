#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Builds and runs bench_mount in a fresh scratch dir, then removes it.
#   bench/run-mount.sh [bench_mount options, e.g. -n 100 -c 300]
# Needs root (overlay mounts, drop_caches).  STRATA_BENCH_BASE picks the
# parent of the scratch dir (default /var/tmp).
set -euo pipefail

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=$src/build
base=${STRATA_BENCH_BASE:-/var/tmp}

if [[ $EUID -ne 0 ]]; then
	echo "run-mount.sh: needs root (overlay mounts)" >&2
	exit 1
fi

# The layers must sit on the disk the store will live on: tmpfs would
# measure RAM, and overlay on overlay is refused.
fstype=$(findmnt -n -o FSTYPE --target "$base")
case $fstype in
tmpfs | ramfs | overlay)
	echo "run-mount.sh: $base is on $fstype; set STRATA_BENCH_BASE to a dir on a disk" >&2
	exit 1
	;;
esac

. "$src/scripts/common.sh"
install_deps
[[ -d $build ]] || meson setup "$build" "$src"
# Only the benchmark and what it links: src/ and tests/ change under other
# people's hands and a broken test must not stop a measurement.
ninja -C "$build" bench/bench_mount

scratch=$(mktemp -d "$base/strata-bench.XXXXXX")
pid=

# Whatever happens, nothing stays mounted and nothing stays on disk.
cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	# Deepest first: mountinfo lists a child after its parent.
	local -a left=()
	mapfile -t left < <(awk -v p="$scratch" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo |
		tac)
	if ((${#left[@]})); then
		echo "run-mount.sh: unmounting leftovers: ${left[*]}" >&2
		for m in "${left[@]}"; do
			umount -l "$m" || true
		done
		rc=1
	fi
	rm -rf --one-file-system "$scratch"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# A page cache grown by earlier work slows runs 1.5-2.5x (SPEC section 7).
sync
echo 1 >/proc/sys/vm/drop_caches

echo "kernel $(uname -r), scratch $scratch on $fstype"
# In the background so that a signal reaches the trap without waiting
# for the benchmark, which then gets TERM and tears down its own mounts.
"$build/bench/bench_mount" "$@" "$scratch" &
pid=$!
wait "$pid"
