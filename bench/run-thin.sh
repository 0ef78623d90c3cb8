#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Thin images (SPEC section 4) against full ones, through one dockerd on
# strata (`strata serve`): the time from `docker import` of an image to a
# finished `docker run --rm IMAGE true`, for the same root filesystem
# imported in full (a tar of the tree) and as a thin image (a tar holding
# only the thin.json of that tree published into a repository).  A small
# root filesystem (busybox-static) and a large one (Debian minbase): a thin
# image ships only thin.json, so its time should barely grow with the size.
#   bench/run-thin.sh
# Needs root, Debian's docker.io (/usr/sbin/dockerd, /usr/bin/docker) and
# busybox-static.
#   RUNS=N              timed runs per image and kind (default 5)
#   RMI=each|end        each: `docker rmi` every image right after its run
#                       (default); end: every round imports content of its
#                       own (a marker file, a thin.json comment) and the
#                       images are removed at the end (SPEC section 7: a
#                       mass delete slows file creation on this ext4 for
#                       minutes, which would weigh on the full imports)
#   STRATA_BENCH_BASE   parent of the scratch dir (default /var/tmp)
# The Debian minbase tar is cached in /var/cache/strata-test/minbase.tar (made
# with debootstrap on first use, which needs Debian's archive; without it
# the minbase rows are skipped).  The repository is a directory under the
# scratch dir (thin.root), published into with strata's dir: publisher.
#
# Method (SPEC section 7): the two kinds run interleaved, round by round,
# their order rotated each round; medians are compared.  Before every timed
# import: sync, drop the page cache, read the input once.  Times are wall
# clock around the docker client (import, then run), so both kinds include
# the client's start and the API round trips.  The repository's layers are
# published once, before the timed runs, and not read in advance: a thin
# run reads its files from the repository with a cold cache.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rmi_mode=${RMI:-each}
repo_name=bench.thin

need_root "dockerd, mounts, drop_caches"
bench_runs 5
[[ $rmi_mode == each || $rmi_mode == end ]] || die "RMI must be each or end, not \"$rmi_mode\""

# The stores must be on the disk: tmpfs would measure RAM.
check_disk

install_deps
build_strata

# shellcheck source=tests/integration/docker_lib.sh
. "$src/tests/integration/docker_lib.sh"
need_docker
"$STRATA" thin --help >/dev/null 2>&1 || die "this strata has no \"thin\" verb"
"$STRATA" serve --help >/dev/null 2>&1 || die "this strata has no \"serve\" verb"

# Short: the daemon's unix socket lives in here.  Whatever happens: dockerd
# stopped (then the plugin), nothing mounted, nothing left on disk.
make_scratch strata-bth dk_stop_all
plugin=strata-bthin-$$

# ---------------------------------------------------------------- inputs

# The full images, as bench/run-docker.sh makes them.
docker_inputs
rm -rf "$scratch/bb"

# The thin images: each tree applied as a layer of a scratch store with the
# strata CLI, published into the repository, its thin.json tarred.
thin_root=$scratch/cvmfs
repo=$thin_root/$repo_name
mkdir -p "$repo"
st() { "$STRATA" --root "$scratch/store" "$@"; }
st init >/dev/null
for i in "${images[@]}"; do
	st create "$i" >/dev/null
	st apply --quiet "$i" -i "$in/$i.tar" >/dev/null || die "strata apply $i failed"
	mkdir -p "$in/$i.thin"
	st thin make --repo "$repo_name" --publisher "dir:$repo" "$i" >"$in/$i.thin/thin.json" ||
		die "strata thin make $i failed"
	tar -C "$in/$i.thin" -cf "$in/$i.thin.tar" thin.json
done
rm -rf "$scratch/store" # the repository alone holds the thin images' files

# ---------------------------------------------------------------- dockerd

plugin_start "$plugin" "$scratch/plugin.log" || die "strata serve did not start"
dk_start s "$scratch/s" "$plugin" --storage-opt "thin.root=$thin_root" || die "dockerd on strata did not start"

# Untimed warm-up: one import and run of each, so that neither kind pays
# for dockerd's first container.
for i in "${images[@]}"; do
	for k in full thin; do
		f=$in/$i.tar
		[[ $k == thin ]] && f=$in/$i.thin.tar
		dk s import "$f" "bench/warm-$i-$k" >/dev/null || die "docker import $i ($k) failed"
		dk s run --rm --network none "bench/warm-$i-$k" true || die "docker run $i ($k) failed"
		dk s rmi "bench/warm-$i-$k" >/dev/null || die "docker rmi $i ($k) failed"
	done
done

echo "kernel $(uname -r), $(nproc) CPUs, scratch $scratch on $fstype, $("$DOCKERD_BIN" --version)"
for i in "${images[@]}"; do
	echo "input $i: full tar $(stat -L -c %s "$in/$i.tar") bytes, $(tar -tf "$in/$i.tar" | wc -l) entries;" \
		"thin tar $(stat -c %s "$in/$i.thin.tar") bytes"
done
echo "$runs runs per image and kind, interleaved; docker rmi: $rmi_mode; load average: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- helpers

# timeit OUT CMD... [';;' CMD...]...: run the commands one after the other
# (stdout to /dev/null), append each one's wall time and their total
# (monotonic clock) to OUT as one line.
cat >"$scratch/timeit.py" <<'EOF'
import subprocess, sys, time
out, args = sys.argv[1], sys.argv[2:]
cmds, cur = [], []
for a in args:
    if a == ";;":
        cmds.append(cur)
        cur = []
    else:
        cur.append(a)
cmds.append(cur)
times = []
for cmd in cmds:
    t0 = time.monotonic()
    rc = subprocess.call(cmd, stdout=subprocess.DEVNULL)
    t1 = time.monotonic()
    if rc:
        sys.exit("run-thin.sh: failed (status %d): %s" % (rc, " ".join(cmd)))
    times.append(t1 - t0)
with open(out, "a") as f:
    f.write(" ".join("%.6f" % t for t in times + [sum(times)]) + "\n")
EOF
docker_cmd=(env DOCKER_CONFIG="${DK_DIR[s]}/cli" timeout -k 10 "$DK_TIMEOUT" "$DOCKER_CLI" -H "unix://${DK_DIR[s]}/s")

# input IMAGE KIND ROUND: the tar to import (with RMI=end, content of its
# own: a marker file, or a comment in thin.json).
input() {
	local i=$1 k=$2 r=$3
	if [[ $rmi_mode == each ]]; then
		if [[ $k == full ]]; then echo "$in/$i.tar"; else echo "$in/$i.thin.tar"; fi
		return
	fi
	local d=$scratch/round
	rm -rf "$d"
	mkdir -p "$d"
	if [[ $k == full ]]; then
		echo "strata bench thin $$ round $r" >"$d/.strata-bench-import"
		cp "$in/$i.tar" "$scratch/input.tar"
		tar --numeric-owner -rf "$scratch/input.tar" -C "$d" .strata-bench-import
	else
		"$py" - "$in/$i.thin/thin.json" "$d/thin.json" "strata bench thin $$ round $r" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
j["comment"] = sys.argv[3]
json.dump(j, open(sys.argv[2], "w"), indent=2)
EOF
		tar -C "$d" -cf "$scratch/input.tar" thin.json
	fi
	echo "$scratch/input.tar"
}

res=$scratch/results
mkdir "$res"

# ---------------------------------------------------------------- measure

kinds=(full thin)
for ((r = 0; r < runs; r++)); do
	echo "round $((r + 1))/$runs"
	for i in "${images[@]}"; do
		for ((j = 0; j < 2; j++)); do
			k=${kinds[(r + j) % 2]}
			tag=bench/$i-$k:r$r
			f=$(input "$i" "$k" "$r")
			prep "$f"
			"$py" "$scratch/timeit.py" "$res/$i.$k" \
				"${docker_cmd[@]}" import "$f" "$tag" ";;" \
				"${docker_cmd[@]}" run --rm --network none "$tag" true
			[[ $rmi_mode == each ]] && dk s rmi "$tag" >/dev/null
		done
	done
done
if [[ $rmi_mode == end ]]; then
	for ((r = 0; r < runs; r++)); do
		for i in "${images[@]}"; do
			dk s rmi "bench/$i-full:r$r" "bench/$i-thin:r$r" >/dev/null
		done
	done
fi

plugin_errors "$scratch/plugin.log"

# ---------------------------------------------------------------- report

"$py" - "$res" "$runs" "${images[@]}" <<'EOF'
import os, statistics, sys
res, runs, images = sys.argv[1], sys.argv[2], sys.argv[3:]

def rows(i, k):
    p = os.path.join(res, "%s.%s" % (i, k))
    with open(p) as f:
        return [[float(x) for x in l.split()] for l in f if l.strip()]

def med(i, k, col):
    return statistics.median(r[col] for r in rows(i, k))

print()
print("runs (s, import + run = total, in order):")
for i in images:
    for k in ("full", "thin"):
        print("  %-8s %-5s %s" % (i, k, "  ".join("%.3f+%.3f=%.3f" % tuple(r) for r in rows(i, k))))
print()
print("medians of %s runs, docker import then docker run --rm IMAGE true:" % runs)
print("  %-8s %-5s %9s %9s %9s" % ("image", "kind", "import", "run", "total"))
for i in images:
    for k in ("full", "thin"):
        print("  %-8s %-5s %8.3fs %8.3fs %8.3fs" % (i, k, med(i, k, 0), med(i, k, 1), med(i, k, 2)))
print()
print("thin / full (total):")
for i in images:
    print("  %-8s %6.2f   (full %.3fs, thin %.3fs)" % (i, med(i, "thin", 2) / med(i, "full", 2), med(i, "full", 2), med(i, "thin", 2)))
if len(images) > 1:
    a, b = images[0], images[-1]
    print()
    print("growth from %s to %s (total):" % (a, b))
    for k in ("full", "thin"):
        print("  %-5s %6.2fx  (%+.3fs)" % (k, med(b, k, 2) / med(a, k, 2), med(b, k, 2) - med(a, k, 2)))
EOF
