#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A real dockerd storing images in strata (through `strata serve`) against
# the same dockerd on its built-in overlay2: docker import, docker load,
# docker run --rm and (last) docker rmi; medians and ratios.  The target:
# strata <= 1.1x overlay2 (reported per row; the exit status is 0 either way
# unless something broke).
#   bench/run-docker.sh
# Needs root, Debian's docker.io (/usr/sbin/dockerd, /usr/bin/docker) and
# busybox-static.
#   RUNS=N              timed runs per operation and driver (default 7)
#   STRATA_BENCH_BASE   parent of the scratch dir (default /var/tmp)
# The Debian minbase tar is cached in /var/cache/strata-test/minbase.tar (made
# with debootstrap on first use, which needs the network; without it the
# minbase rows are skipped).
#
# Method (SPEC section 7): both daemons run at once (separate data roots,
# exec roots and sockets); the operations run interleaved, round by round,
# with the order of the two drivers rotated each round; medians are
# compared.  Before every timed command: sync, drop the page cache, read the
# input once.  Times are wall clock around the docker client, so both sides
# include the client's start and the API round trip.
#
# Deletes: a mass delete slows file creation on this ext4 for minutes, so
# imports get a new tag each run and are removed only at the end (the rmi
# rows).  The one exception is the image `docker load` loads again: it is
# removed (untimed) before each load, so that every load stores a layer.
# Every import and load input holds a marker file of its own, so that no two
# share a layer: given a layer it already has, dockerd applies it, then
# deletes the copy inside the timed import (and a load would skip its work).
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
target=1.1

need_root "dockerd, mounts, drop_caches"
bench_runs 7

# The stores must be on the disk: tmpfs would measure RAM.
check_disk

install_deps
build_strata

# shellcheck source=tests/integration/docker_lib.sh
. "$src/tests/integration/docker_lib.sh"
need_docker

has_serve=true
if ! "$STRATA" serve --help >/dev/null 2>&1; then
	has_serve=false
	echo "$me: this strata has no \"serve\" verb: overlay2 measured alone" >&2
fi

# Short: the daemons' unix sockets live in here.  Whatever happens: both
# dockerds stopped (then the plugin), nothing mounted, nothing left on disk.
make_scratch strata-bdk dk_stop_all
plugin=strata-bench-$$

# ---------------------------------------------------------------- inputs

docker_inputs
# The load inputs: the same trees with a marker file, so that their layers
# are shared with no imported image.
mkdir "$scratch/marker"
echo "strata bench load $$" >"$scratch/marker/.strata-bench-load"
for i in "${images[@]}"; do
	cp "$in/$i.tar" "$in/$i-load.tar"
	tar --numeric-owner -rf "$in/$i-load.tar" -C "$scratch/marker" .strata-bench-load
done

# ---------------------------------------------------------------- daemons

drivers=(overlay2)
if $has_serve; then
	plugin_start "$plugin" "$scratch/plugin.log" || die "strata serve did not start"
	dk_start s "$scratch/s" "$plugin" || die "dockerd on strata did not start"
	drivers=(strata overlay2)
fi
dk_start o "$scratch/o" || die "dockerd on overlay2 did not start"
tag_of() { if [[ $1 == strata ]]; then echo s; else echo o; fi; }

# Per driver, untimed: an image to run, and the saved images to load.
for d in "${drivers[@]}"; do
	t=$(tag_of "$d")
	for i in "${images[@]}"; do
		dk "$t" import "$in/$i.tar" "bench/$i-run" >/dev/null || die "$d: docker import $i failed"
		dk "$t" run --rm --network none "bench/$i-run" true || die "$d: docker run $i failed"
		dk "$t" import "$in/$i-load.tar" "bench/$i-load" >/dev/null || die "$d: docker import $i-load failed"
		dk "$t" save -o "$in/$t.$i-load.saved.tar" "bench/$i-load" || die "$d: docker save $i failed"
	done
done

echo "kernel $(uname -r), $(nproc) CPUs, scratch $scratch on $fstype, $("$DOCKERD_BIN" --version)"
for i in "${images[@]}"; do
	echo "input $i: $(stat -L -c %s "$in/$i.tar") bytes, $(tar -tf "$in/$i.tar" | wc -l) entries"
done
echo "$runs runs per operation and driver; drivers: ${drivers[*]}"

# ---------------------------------------------------------------- helpers

# timeit OUT CMD...: run CMD (stdout to /dev/null), append its wall time
# (monotonic clock, around the command only) to OUT.
cat >"$scratch/timeit.py" <<'EOF'
import subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.monotonic()
rc = subprocess.call(cmd, stdout=subprocess.DEVNULL)
t1 = time.monotonic()
if rc:
    sys.exit("run-docker.sh: failed (status %d): %s" % (rc, " ".join(cmd)))
with open(out, "a") as f:
    f.write("%.6f\n" % (t1 - t0))
EOF
# dtime OUT TAG DOCKER-ARGS...: timeit around the docker client.
dtime() {
	local out=$1 t=$2
	shift 2
	"$py" "$scratch/timeit.py" "$out" env DOCKER_CONFIG="${DK_DIR[$t]}/cli" \
		timeout -k 10 "$DK_TIMEOUT" "$DOCKER_CLI" -H "unix://${DK_DIR[$t]}/s" "$@"
}

res=$scratch/results
mkdir "$res"

# ---------------------------------------------------------------- measure

ops=()
for i in "${images[@]}"; do ops+=("import $i" "load $i" "run $i"); done
n=${#drivers[@]}
for ((r = 0; r < runs; r++)); do
	echo "round $((r + 1))/$runs"
	for op in "${ops[@]}"; do
		verb=${op% *} img=${op#* }
		if [[ $verb == import ]]; then
			# A layer of its own: had this round's tar the content of an
			# earlier one, dockerd would apply it, find the layer exists,
			# and delete the copy it just made, all inside the timed import.
			echo "strata bench import $$ round $r" >"$scratch/marker/.strata-bench-import"
			cp "$in/$img.tar" "$in/$img.import.tar"
			tar --numeric-owner -rf "$in/$img.import.tar" -C "$scratch/marker" .strata-bench-import
		fi
		for ((k = 0; k < n; k++)); do
			d=${drivers[(r + k) % n]}
			t=$(tag_of "$d")
			out="$res/$verb-$img.$d"
			case $verb in
			import)
				prep "$in/$img.import.tar"
				dtime "$out" "$t" import "$in/$img.import.tar" "bench/$img-import:r$r"
				;;
			load)
				dk "$t" rmi "bench/$img-load" >/dev/null
				prep "$in/$t.$img-load.saved.tar"
				dtime "$out" "$t" load -i "$in/$t.$img-load.saved.tar"
				;;
			run)
				prep
				dtime "$out" "$t" run --rm --network none "bench/$img-run" true
				;;
			esac
		done
		rm -f "$in/$img.import.tar"
	done
done

# docker rmi last, when nothing is created any more (a mass delete slows
# file creation on this ext4 for minutes): each import's image, a layer of
# its own, rotated as above.
for i in "${images[@]}"; do ops+=("rmi $i"); done
for ((r = 0; r < runs; r++)); do
	for i in "${images[@]}"; do
		for ((k = 0; k < n; k++)); do
			d=${drivers[(r + k) % n]}
			t=$(tag_of "$d")
			prep
			dtime "$res/rmi-$i.$d" "$t" rmi "bench/$i-import:r$r"
		done
	done
done

# Did the plugin complain?
if $has_serve; then
	plugin_errors "$scratch/plugin.log"
fi

# ---------------------------------------------------------------- report

"$py" - "$res" "$target" "$runs" "${drivers[*]}" "${ops[@]}" <<'EOF'
import os, statistics, sys
res, target, runs, drivers = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4].split()
ops = sys.argv[5:]

def times(op, d):
    p = os.path.join(res, "%s.%s" % (op.replace(" ", "-"), d))
    if not os.path.exists(p):
        return []
    with open(p) as f:
        return [float(l) for l in f if l.strip()]

print()
print("runs (s, in order):")
for op in ops:
    for d in ("strata", "overlay2"):
        t = times(op, d)
        print("  %-15s %-8s %s" % (op, d, " ".join("%.3f" % x for x in t) if t else "-"))
print()
print("medians of %s runs:" % runs)
print("  %-15s %10s %10s %7s  %s" % ("operation", "strata", "overlay2", "ratio", "target <= %.1fx" % target))
over = []
for op in ops:
    s, o = times(op, "strata"), times(op, "overlay2")
    ms = statistics.median(s) if s else None
    mo = statistics.median(o) if o else None
    if ms is not None and mo:
        ratio = ms / mo
        verdict = "PASS" if ratio <= target else "over target"
        if ratio > target:
            over.append(op)
        print("  %-15s %9.3fs %9.3fs %7.2f  %s" % (op, ms, mo, ratio, verdict))
    else:
        print("  %-15s %10s %9.3fs %7s  %s" % (op, "-", mo or 0, "-", "-"))
print()
if "strata" not in drivers:
    print("strata not measured (no serve verb): measurement incomplete")
    sys.exit(1)
if over:
    print("over the %.1fx target: %s" % (target, ", ".join(over)))
else:
    print("every operation within %.1fx of overlay2" % target)
EOF
