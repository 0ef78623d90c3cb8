#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Thin images from a REAL CernVM-FS repository (../shared/cvmfs: a stratum 0
# served by apache on 127.0.0.1 and a separate client mount), two questions:
#
# 1. Start: `docker run --rm IMAGE true` of the Debian minbase image
#      full     imported into a dockerd on overlay2 (Docker's own driver)
#      full-s   imported into a dockerd on strata (`strata serve`)
#      cold     its thin image on strata, read from CernVM-FS with the
#               client's cache emptied before the run (cvmfs_talk cleanup 0)
#      warm     the same with the client's cache as the previous run left it
#    Each run: sync, drop the page cache (SPEC section 7; for cold also the
#    dentries and inodes), then the timed `docker run`; the four interleaved
#    round by round, order rotated.
#
# 2. Publishing: `strata thin make --publisher cvmfs` of a minbase layer
#    (export from the store, sha256, conversion to the repository's form,
#    one ingest, the client told and the layer seen through it), and
#    `strata thin make --from SAVE.tar --publisher cvmfs` of a docker-save
#    archive holding that layer's tar (check pass, decompression, sha256,
#    the same publish), against raw `cvmfs_server ingest -k -t FILE -b DIR
#    REPO` of the plain layer tar that `strata diff` makes of the same layer
#    (no conversion, no remount).
#    Each run publishes a new layer (minbase plus a file naming the run) to
#    a new place; CernVM-FS stores file content by hash, so after the first,
#    untimed, publish of each kind the content objects exist already and
#    every timed run (of both kinds) stores catalogs and only the new file.
#
#   bench/run-cvmfs.sh            RUNS=N (default 5)
# Needs root, docker.io, busybox-static, debootstrap for the minbase tar
# (cached in /var/cache/strata-test/minbase.tar) and the CernVM-FS bundle
# (STRATA_SHARED, else ../shared of the checkout, else /work/shared).  The
# repository strata-bench.test is made with setup and removed with teardown
# at the end; every daemon is stopped by PID; scratch under
# STRATA_BENCH_BASE (default /var/tmp).
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
repo=strata-bench.test

need_root "dockerd, mounts, drop_caches"
bench_runs 5
check_disk
shared=${STRATA_SHARED:-$src/../shared}
[[ -x $shared/cvmfs/setup ]] || shared=/work/shared
[[ -x $shared/cvmfs/setup ]] || die "no CernVM-FS bundle (set STRATA_SHARED to the dir holding cvmfs/setup)"

install_deps
build_strata

# shellcheck source=tests/integration/docker_lib.sh
. "$src/tests/integration/docker_lib.sh"
need_docker

setup_done=false
stop_all() {
	dk_stop_all
	if $setup_done; then
		"$shared/cvmfs/teardown" --repo "$repo" 2>>"$scratch/teardown.log" ||
			echo "$me: teardown failed, see $scratch/teardown.log" >&2
	fi
}
make_scratch strata-bcv stop_all
plugin=strata-bcv-$$

# ---------------------------------------------------------------- inputs

minbase_tar delete || die "debootstrap failed (see $scratch/debootstrap.log)"
out=$("$shared/cvmfs/setup" --repo "$repo" 2>"$scratch/setup.log") || die "setup failed: $(tail -n 1 "$scratch/setup.log")"
setup_done=true
eval "$out"
remount="cvmfs_talk -p $CVMFS_TALK_SOCKET remount sync"
thin_opts=(-o "thin.root=$CVMFS_CLIENT_ROOT" -o "thin.remount_cmd=$remount")
st() { "$STRATA" --root "$scratch/store" "${thin_opts[@]}" "$@"; }
st init >/dev/null

# The thin image of minbase: applied as a layer, published, its thin.json.
st create minbase >/dev/null
st apply --quiet minbase -i "$minbase" >/dev/null || die "strata apply minbase failed"
mkdir -p "$scratch/thin"
st thin make --repo "$repo" --publisher cvmfs minbase >"$scratch/thin/thin.json" 2>"$scratch/make.log" ||
	die "thin make failed: $(cat "$scratch/make.log")"
tar -C "$scratch/thin" -cf "$scratch/thin.tar" thin.json

# ---------------------------------------------------------------- daemons

dk_start o "$scratch/o" || die "dockerd on overlay2 did not start"
plugin_start "$plugin" "$scratch/plugin.log" || die "strata serve did not start"
dk_start s "$scratch/s" "$plugin" --storage-opt "thin.root=$CVMFS_CLIENT_ROOT" ||
	die "dockerd on strata did not start"
dk o import "$minbase" bench/full >/dev/null || die "docker import (overlay2) failed"
dk s import "$minbase" bench/full >/dev/null || die "docker import (strata) failed"
dk s import "$scratch/thin.tar" bench/thin >/dev/null || die "docker import (thin) failed"
# Untimed warm-up: each kind runs once.
dk o run --rm --network none bench/full true || die "docker run (overlay2) failed"
dk s run --rm --network none bench/full true || die "docker run (strata) failed"
dk s run --rm --network none bench/thin true || die "docker run (thin) failed"

echo "kernel $(uname -r), $(nproc) CPUs, scratch $scratch on $fstype, $("$DOCKERD_BIN" --version)"
echo "$(cvmfs2 --version 2>&1 | head -n 1), repository $repo, client $CVMFS_CLIENT_MOUNT"
echo "minbase: $(stat -L -c %s "$minbase") bytes, $(tar -tf "$minbase" | wc -l) entries"
echo "$runs runs, interleaved; load average: $(cut -d' ' -f1-3 /proc/loadavg)"

cat >"$scratch/timeit.py" <<'EOF'
import subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
t0 = time.monotonic()
rc = subprocess.call(cmd, stdout=subprocess.DEVNULL)
t1 = time.monotonic()
if rc:
    sys.exit("run-cvmfs.sh: failed (status %d): %s" % (rc, " ".join(cmd)))
with open(out, "a") as f:
    f.write("%.6f\n" % (t1 - t0))
EOF
res=$scratch/results
mkdir "$res"
docker_of() { echo env DOCKER_CONFIG="${DK_DIR[$1]}/cli" timeout -k 10 "$DK_TIMEOUT" "$DOCKER_CLI" -H "unix://${DK_DIR[$1]}/s"; }
read -ra dock_o <<<"$(docker_of o)"
read -ra dock_s <<<"$(docker_of s)"

# ---------------------------------------------------------------- 1. docker run

kinds=(full full-s cold warm)
for ((r = 0; r < runs; r++)); do
	echo "start round $((r + 1))/$runs"
	for ((j = 0; j < ${#kinds[@]}; j++)); do
		k=${kinds[(r + j) % ${#kinds[@]}]}
		case $k in
		full) cmd=("${dock_o[@]}" run --rm --network none bench/full true) ;;
		full-s) cmd=("${dock_s[@]}" run --rm --network none bench/full true) ;;
		cold)
			cvmfs_talk -p "$CVMFS_TALK_SOCKET" cleanup 0 >/dev/null || die "cvmfs_talk cleanup 0 failed"
			cmd=("${dock_s[@]}" run --rm --network none bench/thin true)
			;;
		warm)
			# The cache as a run of its own left it (not a cold run's).
			"${dock_s[@]}" run --rm --network none bench/thin true >/dev/null
			cmd=("${dock_s[@]}" run --rm --network none bench/thin true)
			;;
		esac
		prep
		# Cold: the kernel's dentries and inodes of the client too.
		[[ $k != cold ]] || echo 3 >/proc/sys/vm/drop_caches
		"$py" "$scratch/timeit.py" "$res/run.$k" "${cmd[@]}"
	done
done
echo "client cache after the runs: $(cvmfs_talk -p "$CVMFS_TALK_SOCKET" cache size 2>/dev/null | head -n 1)"

# ---------------------------------------------------------------- 2. publishing

# A new layer per run and kind: minbase plus a file naming it.
layer() {
	local id=$1
	st create "$id" >/dev/null
	st apply --quiet "$id" -i "$minbase" >/dev/null
	echo "$id $$" >"$scratch/store/diff/$id/.strata-bench"
}
# mksave LAYER.tar OUT.tar: a classic `docker save` archive of one layer.
mksave() {
	"$py" - "$1" "$2" <<'PY'
import hashlib, io, json, sys, tarfile
layer, out = sys.argv[1], sys.argv[2]
h = hashlib.sha256()
with open(layer, "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""):
        h.update(b)
diff_id = h.hexdigest()
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                     "rootfs": {"type": "layers", "diff_ids": ["sha256:" + diff_id]}}).encode()
cid = hashlib.sha256(config).hexdigest()
manifest = json.dumps([{"Config": cid + ".json", "RepoTags": ["bench/from:latest"],
                        "Layers": [diff_id + "/layer.tar"]}]).encode()
with tarfile.open(out, "w") as t:
    for name, data in ((cid + ".json", config), ("manifest.json", manifest)):
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    t.add(layer, arcname=diff_id + "/layer.tar")
PY
}
for k in make from raw; do # untimed: the content objects into the repository
	layer "w-$k"
	if [[ $k == make ]]; then
		st thin make --repo "$repo" --publisher cvmfs "w-$k" >/dev/null 2>>"$scratch/make.log" || die "thin make failed"
	elif [[ $k == from ]]; then
		st diff "w-$k" -o "$scratch/w-$k.layer"
		mksave "$scratch/w-$k.layer" "$scratch/w-$k.save"
		st thin make --repo "$repo" --publisher cvmfs --from "$scratch/w-$k.save" >/dev/null 2>>"$scratch/make.log" ||
			die "thin make --from failed"
		rm -f "$scratch/w-$k.layer" "$scratch/w-$k.save"
	else
		st diff "w-$k" -o "$scratch/w-$k.tar"
		cvmfs_server ingest -k -t "$scratch/w-$k.tar" -b "bench/w-$k" "$repo" >/dev/null 2>&1 || die "ingest failed"
	fi
done
tar_bytes=$(stat -c %s "$scratch/w-raw.tar")
pub_kinds=(make from raw)
for ((r = 0; r < runs; r++)); do
	echo "publish round $((r + 1))/$runs"
	for ((j = 0; j < 3; j++)); do
		k=${pub_kinds[(r + j) % 3]}
		layer "p$r-$k"
		if [[ $k == make ]]; then
			prep
			find "$scratch/store/diff/p$r-$k" -type f -exec cat {} + >/dev/null # its input, read once
			"$py" "$scratch/timeit.py" "$res/pub.make" \
				"$STRATA" --root "$scratch/store" "${thin_opts[@]}" thin make --repo "$repo" --publisher cvmfs "p$r-$k"
		elif [[ $k == from ]]; then
			st diff "p$r-$k" -o "$scratch/p$r.layer"
			mksave "$scratch/p$r.layer" "$scratch/p$r.save"
			rm -f "$scratch/p$r.layer"
			prep "$scratch/p$r.save"
			"$py" "$scratch/timeit.py" "$res/pub.from" \
				"$STRATA" --root "$scratch/store" "${thin_opts[@]}" thin make --repo "$repo" --publisher cvmfs \
				--from "$scratch/p$r.save"
			rm -f "$scratch/p$r.save"
		else
			st diff "p$r-$k" -o "$scratch/p$r.tar"
			prep "$scratch/p$r.tar"
			"$py" "$scratch/timeit.py" "$res/pub.raw" \
				cvmfs_server ingest -k -t "$scratch/p$r.tar" -b "bench/p$r" "$repo"
			rm -f "$scratch/p$r.tar"
		fi
		# The layers stay until the scratch dir goes: a mass delete slows
		# file creation on this ext4 for minutes (SPEC section 7).
	done
done

plugin_errors "$scratch/plugin.log"

# ---------------------------------------------------------------- report

"$py" - "$res" "$runs" "$tar_bytes" <<'EOF'
import os, statistics, sys
res, runs, tar_bytes = sys.argv[1], sys.argv[2], int(sys.argv[3])

def rows(name):
    with open(os.path.join(res, name)) as f:
        return [float(l) for l in f if l.strip()]

print()
print("1. docker run --rm IMAGE true, Debian minbase (s, in order):")
what = {"full": "full image, overlay2", "full-s": "full image, strata", "cold": "thin, CernVM-FS cold cache",
        "warm": "thin, CernVM-FS warm cache"}
for k in ("full", "full-s", "cold", "warm"):
    print("  %-28s %s" % (what[k], "  ".join("%.3f" % t for t in rows("run." + k))))
print()
print("   medians of %s runs:" % runs)
m = {k: statistics.median(rows("run." + k)) for k in what}
for k in ("full", "full-s", "cold", "warm"):
    print("  %-28s %7.3fs  %5.2fx overlay2" % (what[k], m[k], m[k] / m["full"]))
print()
print("2. publishing a minbase layer (%d bytes as strata's tar), s:" % tar_bytes)
kinds = (("make", "strata thin make --publisher cvmfs"), ("from", "strata thin make --from (docker save)"),
         ("raw", "cvmfs_server ingest -t (plain tar)"))
for k, label in kinds:
    r = rows("pub." + k)
    print("  %-38s %s" % (label, "  ".join("%.2f" % t for t in r)))
print()
med = {k: statistics.median(rows("pub." + k)) for k, _ in kinds}
print("   medians of %s runs:" % runs)
for k, label in kinds:
    print("  %-38s %7.2fs  %6.1f MB/s" % (label, med[k], tar_bytes / med[k] / 1e6))
print("  thin make / raw ingest: %.2fx" % (med["make"] / med["raw"]))
print("  thin make --from / raw ingest: %.2fx" % (med["from"] / med["raw"]))
EOF
