# shellcheck shell=bash
# shellcheck disable=SC2034 # globals set here are read by the callers
# SPDX-License-Identifier: Apache-2.0
#
# What the benchmarks (bench/run-*.sh) share.  Source it first, after
# `set -euo pipefail`:
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# It sets src (the source tree), base (STRATA_BENCH_BASE, default
# /var/tmp), me (the script's name, for messages), py, cache_dir and
# minbase, and sources scripts/common.sh (install_deps).  Nothing else
# runs until called.

src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
base=${STRATA_BENCH_BASE:-/var/tmp}
me=${BASH_SOURCE[1]##*/}
py=/usr/bin/python3 # not a pyenv shim: its startup runs before every timed command
cache_dir=/var/cache/strata-test
minbase=$cache_dir/minbase.tar
tmp_tar=                   # a minbase tar being written: removed on exit
leftover_mounts_fail=false # true: a mount left under the scratch dir fails the run

# shellcheck source=scripts/common.sh
. "$src/scripts/common.sh"

die() {
	echo "$me: $*" >&2
	exit 1
}

# need_root WHY: die unless root.
need_root() {
	[[ $EUID -eq 0 ]] || die "needs root ($1)"
}

# bench_runs DEFAULT: runs=${RUNS:-DEFAULT}, a positive integer; warns
# below 5.
bench_runs() {
	runs=${RUNS:-$1}
	[[ $runs =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer, not \"$runs\""
	((runs >= 5)) || echo "$me: RUNS=$runs; medians of fewer than 5 runs are noise here" >&2
}

# check_disk: $base must be on a disk (tmpfs would measure RAM, and overlay
# on overlay is refused); sets fstype.
check_disk() {
	fstype=$(findmnt -n -o FSTYPE --target "$base")
	case $fstype in
	tmpfs | ramfs | overlay)
		die "$base is on $fstype; set STRATA_BENCH_BASE to a dir on a disk"
		;;
	esac
}

# build_strata: a release build of the strata binary only, in
# $src/build-bench: src/ and tests/ change under other people's hands and
# a broken test must not stop a measurement.  Sets STRATA.
build_strata() {
	local build=$src/build-bench log
	if [[ ! -f $build/build.ninja ]]; then
		meson setup "$build" "$src" -Dbuildtype=release >/dev/null
	else
		meson configure "$build" -Dbuildtype=release >/dev/null
	fi
	if ! log=$(ninja -C "$build" strata 2>&1); then
		printf '%s\n' "$log" | grep -v '^\[' >&2
		die "build in $build failed"
	fi
	STRATA=$build/strata
}

# need_docker: Debian's dockerd and docker client (the paths of
# tests/integration/docker_lib.sh, sourced before) and busybox-static.
need_docker() {
	local need
	for need in "$DOCKERD_BIN" "$DOCKER_CLI" /bin/busybox; do
		[[ -x $need ]] || die "$need is missing (apt-get install docker.io busybox-static)"
	done
}

# make_scratch NAME [STOP]: scratch, a new dir $base/NAME.XXXXXX, and the
# traps that, whatever happens, run STOP (a command: what the script
# started, e.g. dockerd), remove $tmp_tar, unmount what is left mounted
# under the scratch dir (deepest first) and delete it.  INT, TERM and HUP
# exit 130, 143 and 129 through it.
make_scratch() {
	scratch=$(mktemp -d "$base/$1.XXXXXX")
	scratch_stop=${2:-}
	trap bench_exit EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
}

# bench_exit: the EXIT trap of make_scratch; keeps the script's exit status
# (1 when leftover_mounts_fail and a mount was left).
bench_exit() {
	local rc=$? m
	trap - EXIT INT TERM HUP
	[[ -z $scratch_stop ]] || $scratch_stop
	[[ -n $tmp_tar ]] && rm -f "$tmp_tar"
	local -a left=()
	mapfile -t left < <(awk -v p="$scratch" '$5 == p || index($5, p "/") == 1 { print $5 }' /proc/self/mountinfo |
		awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-)
	if ((${#left[@]})); then
		echo "$me: unmounting leftovers: ${left[*]}" >&2
		for m in "${left[@]}"; do
			umount -l "$m" || true
		done
		if $leftover_mounts_fail; then rc=1; fi
	fi
	rm -rf --one-file-system "$scratch"
	exit "$rc"
}

# minbase_tar delete|keep: makes $minbase, the Debian minbase tar, unless it
# is there: debootstrap --variant=minbase bookworm into $scratch/rootfs,
# once, under the cache's lock (which tests/integration/t_tar_roundtrip.sh
# also takes).  Returns 1 when debootstrap failed; its log is
# $scratch/debootstrap.log.  The tree is then deleted, or (keep) left for
# the scratch dir's removal at the end (a mass delete slows file creation
# on this ext4 for minutes, SPEC section 7).
minbase_tar() {
	local keep=$1 rootfs=$scratch/rootfs rc=0
	[[ ! -s $minbase ]] || return 0
	mkdir -p "$cache_dir"
	exec 9>"$cache_dir/.lock"
	flock -w 900 9 || die "could not lock $cache_dir/.lock"
	if [[ ! -s $minbase ]]; then
		echo "==> debootstrap --variant=minbase bookworm (once; cached in $minbase)"
		if debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$scratch/debootstrap.log" 2>&1; then
			tmp_tar=$(mktemp "$cache_dir/.minbase.tar.XXXXXX")
			tar --numeric-owner --xattrs --xattrs-include='*' -C "$rootfs" -cf "$tmp_tar" .
			chmod 0644 "$tmp_tar"
			mv "$tmp_tar" "$minbase"
			tmp_tar=
		else
			rc=1
		fi
		umount -R "$rootfs/proc" "$rootfs/sys" 2>/dev/null || true
		[[ $keep == keep ]] || rm -rf --one-file-system "$rootfs"
	fi
	exec 9>&-
	return "$rc"
}

# docker_inputs: for the Docker benchmarks (after docker_lib.sh): in, a new
# dir $scratch/in with busybox.tar (a busybox root filesystem, made in
# $scratch/bb) and minbase.tar (a link to $minbase, made unless cached;
# when debootstrap fails, the minbase rows are skipped); images, their
# names (busybox, minbase).
docker_inputs() {
	if ! minbase_tar delete; then
		tail -n 5 "$scratch/debootstrap.log" >&2
		echo "$me: debootstrap failed: the minbase rows are skipped" >&2
	fi
	in=$scratch/in
	mkdir "$in"
	busybox_rootfs "$scratch/bb"
	tar --numeric-owner -C "$scratch/bb" -cf "$in/busybox.tar" .
	images=(busybox)
	if [[ -s $minbase ]]; then
		ln -s "$minbase" "$in/minbase.tar"
		images+=(minbase)
	fi
}

# drop_caches: flush, drop the page cache (SPEC section 7: a page cache
# grown by earlier work slows runs 1.5-2.5x).
drop_caches() {
	sync
	echo 1 >/proc/sys/vm/drop_caches
}

# prep [FILE]: before every timed run: drop_caches, read FILE once.
prep() {
	drop_caches
	[[ -z ${1:-} ]] || cat "$1" >/dev/null
}

# plugin_errors LOG: did `strata serve` complain?  A warning with its
# first level=error lines.
plugin_errors() {
	local nerr
	nerr=$(grep -c 'level=error' "$1" || true)
	((nerr == 0)) || {
		echo "WARNING: the plugin logged $nerr errors; the first ones:"
		grep 'level=error' "$1" | head -n 5 | sed 's/^/  /'
	}
}
