#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# A private containerd (Debian's 1.6) with two snapshotters, its built-in
# overlayfs and strata (`strata snapshotter` as the proxy plugin "strata"),
# side by side, for a busybox image (3 layers, made by
# tests/integration/ctd_tool.py) and a Debian minbase image (one gzip layer
# of the cached debootstrap tar, as an OCI archive made here):
#   import  ctr images import --snapshotter S ARCHIVE (content and unpack)
#   pull    ctr images pull --plain-http --snapshotter S from a local
#           registry (Debian's docker-registry on 127.0.0.1, the images
#           pushed once with skopeo)
#   run     ctr run --snapshotter S --rm IMAGE ID true
#   rm      ctr images rm --sync IMAGE, then `ctr snapshots --snapshotter S
#           ls` polled until empty (garbage collection done)
# Medians and the ratio strata/overlayfs per operation and image.  Then
# thin against full: each image made thin with `strata thin make --from`
# (its layers published into a repository dir standing in for CernVM-FS)
# and `ctr run --rm true` of both on strata, alternating.
#
#   bench/run-containerd.sh
#   RUNS=N               timed runs per operation, image and snapshotter
#                        (default 5), after one untimed warm-up round
#   STRATA_BENCH_BASE    parent of the scratch dir (default /var/tmp)
#   STRATA_BENCH_OUT     where the raw numbers go (default
#                        $STRATA_BENCH_BASE/strata-bench-containerd.DATE.tsv)
# Needs root, containerd, runc, docker-registry, skopeo, busybox-static (all
# installed by install_deps) and the minbase tar, cached in
# /var/cache/strata-test/minbase.tar (made with debootstrap on first use,
# which needs deb.debian.org; without it the minbase rows are skipped).
#
# Method (SPEC section 7): one containerd serves both snapshotters.  Each
# round, per image, the chain import, rm, pull, run, rm runs on one
# snapshotter, then on the other, the order of the two swapped every round;
# between two chains every image, snapshot and content blob is gone (checked,
# also in the snapshotters' own dirs), so no step finds a layer or blob that
# an earlier one left.  Round 0 is a warm-up and not counted.  Before every
# timed command: sync, drop the page cache, read the input (the archive, or
# the registry's blobs) once.  Times are wall clock around ctr, so both
# sides include ctr's start and containerd's own work (content store, diff
# apply, metadata); what differs is the snapshotter.  Unlike run-docker.sh
# this benchmark deletes whole images every round (rm is one of its
# operations): file creation after a mass delete is slower on this ext4,
# for both snapshotters alike, which the alternating order spreads evenly.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_root "containerd, mounts, drop_caches"
bench_runs 5
check_disk
install_deps
build_strata

# shellcheck source=tests/integration/docker_lib.sh
. "$src/tests/integration/docker_lib.sh"
# shellcheck source=tests/integration/ctd_lib.sh
. "$src/tests/integration/ctd_lib.sh"
CTD_NS=strata-bench-$$
REGISTRY_BIN=/usr/bin/docker-registry
SKOPEO_BIN=/usr/bin/skopeo
for need in "$CONTAINERD_BIN" "$CTR_BIN" /usr/bin/containerd-shim-runc-v2 /usr/sbin/runc \
	"$REGISTRY_BIN" "$SKOPEO_BIN" /bin/busybox; do
	[[ -x $need ]] || die "$need is missing (apt-get install containerd runc docker-registry skopeo busybox-static)"
done
"$STRATA" snapshotter --help >/dev/null 2>&1 || die "this strata has no \"snapshotter\" verb"

reg_pid=""
# stop_all: containerd (and its shims), the snapshotter, the registry, the
# namespace's (empty) cgroups.  make_scratch's trap then unmounts what is
# left under the scratch dir and removes it.
stop_all() {
	local d
	ctd_stop_all
	if [[ -n $reg_pid ]]; then
		stop_pid "$reg_pid" 30
		reg_pid=""
	fi
	for d in /sys/fs/cgroup/*/"$CTD_NS" /sys/fs/cgroup/"$CTD_NS"; do
		[[ -d $d ]] && rmdir "$d" 2>/dev/null
	done
	return 0
}
# Short: containerd's sockets live in here (unix socket paths < 108 bytes).
make_scratch strata-bctd stop_all
out_tsv=${STRATA_BENCH_OUT:-$base/strata-bench-containerd.$(date -u +%Y%m%dT%H%M%SZ).tsv}

# ---------------------------------------------------------------- inputs

in=$scratch/in
mkdir "$in"
images=(busybox)
"$py" "$src/tests/integration/ctd_tool.py" busybox "$in/busybox.tar" docker.io/bench/busybox:latest \
	"$in/busybox.chains" || die "ctd_tool.py busybox failed"

if [[ ! -s $minbase ]] && ! curl -fsS -m 20 -o /dev/null http://deb.debian.org/debian/dists/bookworm/Release; then
	echo "$me: deb.debian.org is not reachable and $minbase is not cached: the minbase rows are skipped" >&2
elif ! minbase_tar delete; then
	tail -n 5 "$scratch/debootstrap.log" >&2
	echo "$me: debootstrap failed: the minbase rows are skipped" >&2
else
	# An OCI archive of one gzip layer, the tar as debootstrap made it.
	"$py" - "$minbase" "$in/minbase.tar" docker.io/bench/minbase:latest "$in" <<'EOF' || die "making the minbase OCI archive failed"
import hashlib, io, json, os, subprocess, sys, tarfile
src, out, name, work = sys.argv[1:5]
gz = os.path.join(work, "minbase.layer.gz")
raw = hashlib.sha256()
with open(gz, "wb") as f:
    p = subprocess.Popen(["gzip", "-n", "-c"], stdin=subprocess.PIPE, stdout=f)
    with open(src, "rb") as s:
        for b in iter(lambda: s.read(1 << 20), b""):
            raw.update(b)
            p.stdin.write(b)
    p.stdin.close()
    if p.wait():
        sys.exit("gzip failed")
zh = hashlib.sha256()
with open(gz, "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""):
        zh.update(b)
sha = lambda b: "sha256:" + hashlib.sha256(b).hexdigest()
layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + zh.hexdigest(),
         "size": os.path.getsize(gz)}
config = json.dumps({"architecture": "amd64", "os": "linux", "created": "2020-01-02T03:04:05Z",
                     "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/bash"]},
                     "rootfs": {"type": "layers", "diff_ids": ["sha256:" + raw.hexdigest()]}},
                    sort_keys=True).encode()
cdesc = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)}
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": cdesc, "layers": [layer]}, sort_keys=True).encode()
mdesc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(manifest),
         "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"},
         "annotations": {"io.containerd.image.name": name,
                         "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}
index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [mdesc]}, sort_keys=True).encode()
with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
    def add(n, b):
        ti = tarfile.TarInfo(n)
        ti.size, ti.mode = len(b), 0o644
        t.addfile(ti, io.BytesIO(b))
    add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
    add("index.json", index)
    add("blobs/sha256/" + cdesc["digest"][7:], config)
    add("blobs/sha256/" + mdesc["digest"][7:], manifest)
    with open(gz, "rb") as f:
        ti = tarfile.TarInfo("blobs/sha256/" + layer["digest"][7:])
        ti.size, ti.mode = layer["size"], 0o644
        t.addfile(ti, f)
os.unlink(gz)
EOF
	images+=(minbase)
fi

# ---------------------------------------------------------------- registry

port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$scratch/reg/data"
cat >"$scratch/reg/config.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $scratch/reg/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
"$REGISTRY_BIN" serve "$scratch/reg/config.yml" </dev/null >>"$scratch/reg/registry.log" 2>&1 &
reg_pid=$!
deadline=$((SECONDS + 30))
until curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$port/v2/" 2>/dev/null; do
	if ! is_running "$reg_pid" || ((SECONDS >= deadline)); then
		tail -n 10 "$scratch/reg/registry.log" >&2
		die "docker-registry did not come up on 127.0.0.1:$port"
	fi
	sleep 0.1
done
echo '{"default": [{"type": "insecureAcceptAnything"}]}' >"$scratch/policy.json"
for i in "${images[@]}"; do
	"$SKOPEO_BIN" copy --quiet --policy "$scratch/policy.json" --dest-tls-verify=false \
		"oci-archive:$in/$i.tar" "docker://127.0.0.1:$port/bench/$i:latest" >>"$scratch/skopeo.log" 2>&1 ||
		die "skopeo copy of $i to the registry failed: $(tail -n 3 "$scratch/skopeo.log")"
done

# ---------------------------------------------------------------- daemons

store=$scratch/store
: >"$scratch/snapshotter.log"
# The thin root: a dir standing in for CernVM-FS (thin vs full, below).
mkdir -p "$scratch/cv/bench"
snap_start "$store" "$scratch/sn.sock" "$scratch/snapshotter.log" -o "thin.root=$scratch/cv" ||
	die "strata snapshotter did not start"
# ctd_lib.sh's ctd_start, but containerd logs at level info (debug logging
# costs both sides alike, but is not what a user runs), and its temporary
# mounts (the diff applier's) go under the scratch dir, where the exit trap
# finds them if containerd dies with one.
ctd=$scratch/c
mkdir -p "$ctd/fifo" "$ctd/runc" "$ctd/tmp"
ctd_config "$ctd" "$scratch/sn.sock" | sed 's/^\( *level = \)"debug"/\1"info"/' >"$ctd/config.toml"
CTD_DIR[b]=$ctd
XDG_RUNTIME_DIR=$ctd/tmp TMPDIR=$ctd/tmp "$CONTAINERD_BIN" --config "$ctd/config.toml" </dev/null >>"$ctd/ctd.log" 2>&1 &
CTD_PID[b]=$!
deadline=$((SECONDS + 60))
until c b version >/dev/null 2>&1; do
	if ! is_running "${CTD_PID[b]}" || ((SECONDS >= deadline)); then
		tail -n 15 "$ctd/ctd.log" >&2
		die "containerd did not come up"
	fi
	sleep 0.1
done
snaps=(overlayfs strata)
for s in "${snaps[@]}"; do
	[[ $(c b plugins ls | awk -v s="$s" '$1 == "io.containerd.snapshotter.v1" && $2 == s { print $NF }') == ok ]] ||
		die "containerd has no working snapshotter $s: $(c b plugins ls | grep -F "$s")"
done

# ---------------------------------------------------------------- helpers

# fail_diag: the ends of the logs, after a failed command.
fail_diag() {
	echo "--- containerd log, last errors:" >&2
	grep -E 'level=(error|fatal)' "$ctd/ctd.log" | tail -n 5 | cut -c1-400 >&2 || true
	echo "--- strata snapshotter log, last lines:" >&2
	tail -n 10 "$scratch/snapshotter.log" | cut -c1-400 >&2
}

# snaps_left S: the snapshots containerd lists for S, one a line.
snaps_left() { c b snapshots --snapshotter "$1" ls | tail -n +2; }

# backend_left S: what is left in the snapshotter's own dirs.
backend_left() {
	if [[ $1 == strata ]]; then
		find "$store/diff" -mindepth 1 -maxdepth 1 2>/dev/null || true
	else
		find "$ctd/root/io.containerd.snapshotter.v1.overlayfs/snapshots" -mindepth 1 -maxdepth 1 2>/dev/null || true
	fi
}

# rm_gc S IMAGE: ctr images rm --sync IMAGE, then until containerd lists no
# snapshot of S (at most 60 s).
rm_gc() {
	local s=$1 deadline=$((SECONDS + 60))
	c b images rm --sync "$2" >/dev/null || return 1
	while [[ -n $(snaps_left "$s") ]]; do
		if ((SECONDS >= deadline)); then
			echo "$me: $s: snapshots left 60 s after images rm: $(snaps_left "$s" | tr '\n' ' ')" >&2
			return 1
		fi
		sleep 0.02
	done
}

# settled S: nothing left of the last chain (untimed): no image, container,
# content or lease, no snapshot listed or in S's dirs (at most 60 s).
settled() {
	local s=$1 deadline=$((SECONDS + 60)) left
	while :; do
		left=$(
			c b images ls -q
			c b containers ls -q
			c b content ls -q
			c b leases ls -q
			snaps_left "$s"
			backend_left "$s"
		)
		[[ -n $left ]] || return 0
		if ((SECONDS >= deadline)); then
			die "$s: still there 60 s after the images' removal: $(head -n 5 <<<"$left" | tr '\n' ' ')"
		fi
		sleep 0.1
	done
}

# timed OUT PREP CMD...: PREP (a command: drop the page cache, read the
# input), then CMD (stdout discarded, stderr shown only when it fails: ctr
# pull's progress display logs a harmless "active check failed" at times),
# its wall time in seconds appended to OUT.  A failure stops the benchmark.
timed() {
	local out=$1 prepcmd=$2 t0 t1 rc=0
	shift 2
	$prepcmd
	t0=${EPOCHREALTIME//[!0-9]/}
	"$@" >/dev/null 2>"$scratch/cmd.err" || rc=$?
	t1=${EPOCHREALTIME//[!0-9]/}
	if ((rc)); then
		cat "$scratch/cmd.err" >&2
		fail_diag
		die "failed (status $rc): $*"
	fi
	printf '%d.%06d\n' $(((t1 - t0) / 1000000)) $(((t1 - t0) % 1000000)) >>"$out"
}
prep_none() { prep; }
prep_archive() { prep "$in/$img.tar"; }
prep_registry() {
	prep
	find "$scratch/reg/data" -type f -path '*/blobs/*' -exec cat {} + >/dev/null
}

res=$scratch/results
mkdir "$res"

echo "kernel $(uname -r), $(nproc) CPUs, scratch $scratch on $fstype, $("$CONTAINERD_BIN" --version | cut -d' ' -f3-)"
for i in "${images[@]}"; do
	echo "image $i: archive $(stat -c %s "$in/$i.tar") bytes, $("$py" -c '
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
ix = json.load(t.extractfile("index.json"))
m = json.load(t.extractfile("blobs/sha256/" + ix["manifests"][0]["digest"][7:]))
print(len(m["layers"]), "layers")' "$in/$i.tar")"
done
echo "registry 127.0.0.1:$port; $runs runs per operation, image and snapshotter, after a warm-up round"

# ---------------------------------------------------------------- measure

for ((r = 0; r <= runs; r++)); do
	if ((r == 0)); then echo "warm-up round (not counted)"; else echo "round $r/$runs"; fi
	for img in "${images[@]}"; do
		name=docker.io/bench/$img:latest
		ref=127.0.0.1:$port/bench/$img:latest
		for ((k = 0; k < 2; k++)); do
			s=${snaps[(r + k) % 2]}
			o=$res/$r.$img.$s
			timed "$o.import" prep_archive c b images import --snapshotter "$s" "$in/$img.tar"
			[[ $(c b images ls -q) == "$name" ]] || die "$s: after the import, the images are: $(c b images ls -q | tr '\n' ' ')"
			rm_gc "$s" "$name" || die "$s: ctr images rm after the import failed"
			settled "$s"
			timed "$o.pull" prep_registry c b images pull --plain-http --snapshotter "$s" "$ref"
			timed "$o.run" prep_none crun b "$s" --rm "$ref" "bench-$r-$img-$s" true
			timed "$o.rm" prep_none rm_gc "$s" "$ref"
			settled "$s"
		done
	done
done

# ---------------------------------------------------------------- thin vs full

# Each image made thin (`strata thin make --from`, its layers published
# into the repository dir): `ctr run --rm true` of the thin image against
# the full one, both on strata, alternating.  The thin one's container
# mounts its layers from the repository; its import unpacks only
# thin.json.  A thin start should not grow with the image's size.
"$STRATA" --root "$scratch/tm" init >/dev/null || die "init of the thin make store failed"
for img in "${images[@]}"; do
	"$STRATA" --root "$scratch/tm" -o "thin.root=$scratch/cv" thin make --repo bench \
		--publisher "dir:$scratch/cv/bench" --from "$in/$img.tar" --tag "bench/$img-thin:latest" \
		-o "$in/$img-thin.tar" >"$scratch/thin.json" 2>"$scratch/thinmake.err" ||
		die "thin make --from $img failed: $(tail -n 3 "$scratch/thinmake.err")"
	c b images import --snapshotter strata "$in/$img-thin.tar" >/dev/null || die "ctr import of thin $img failed"
	c b images import --snapshotter strata "$in/$img.tar" >/dev/null || die "ctr import of $img failed"
	for ((r = 0; r <= runs; r++)); do
		for ((k = 0; k < 2; k++)); do
			if (((r + k) % 2)); then
				timed "$res/$r.$img.thin" prep_none crun b strata --rm "docker.io/bench/$img-thin:latest" "thin-$r" true
			else
				timed "$res/$r.$img.full" prep_none crun b strata --rm "docker.io/bench/$img:latest" "full-$r" true
			fi
		done
	done
	c b images rm --sync "docker.io/bench/$img-thin:latest" >/dev/null || die "ctr images rm of thin $img failed"
	rm_gc strata "docker.io/bench/$img:latest" || die "ctr images rm of $img and its thin image: snapshots left"
done

is_running "$SNAP_PID" || die "the strata snapshotter died: $(tail -n 5 "$scratch/snapshotter.log")"
nerr=$(grep -ciE 'error|fatal' "$scratch/snapshotter.log" || true)
((nerr == 0)) || {
	echo "WARNING: the strata snapshotter's log has $nerr lines with errors; the first ones:"
	grep -iE 'error|fatal' "$scratch/snapshotter.log" | head -n 5 | cut -c1-300 | sed 's/^/  /'
}
nerr=$(grep -c 'level=error' "$ctd/ctd.log" || true)
((nerr == 0)) || {
	echo "WARNING: containerd logged $nerr errors; the first ones:"
	grep 'level=error' "$ctd/ctd.log" | head -n 5 | cut -c1-300 | sed 's/^/  /'
}

# ---------------------------------------------------------------- report

"$py" - "$res" "$runs" "$out_tsv" "${images[@]}" <<'EOF'
import os, statistics, sys
res, runs, out_tsv, images = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
ops, snaps = ("import", "pull", "run", "rm"), ("overlayfs", "strata")

def times_of(path):
    with open(path) as f:
        return [float(l) for l in f if l.strip()]

def times(r, img, s, op):
    with open(os.path.join(res, "%d.%s.%s.%s" % (r, img, s, op))) as f:
        return [float(l) for l in f if l.strip()]

with open(out_tsv, "w") as f:
    f.write("round\twarmup\toperation\timage\tsnapshotter\tseconds\n")
    for r in range(runs + 1):
        for img in images:
            for op in ops:
                for s in snaps:
                    for t in times(r, img, s, op):
                        f.write("%d\t%s\t%s\t%s\t%s\t%.6f\n" % (r, "yes" if r == 0 else "no", op, img, s, t))
print()
print("runs (s, in order; the warm-up round left out):")
for img in images:
    for op in ops:
        for s in snaps:
            t = [x for r in range(1, runs + 1) for x in times(r, img, s, op)]
            print("  %-7s %-8s %-9s %s" % (op, img, s, " ".join("%.3f" % x for x in t)))
print()
print("medians of %d runs:" % runs)
print("  %-9s %-8s %10s %10s %16s" % ("operation", "image", "overlayfs", "strata", "strata/overlayfs"))
for img in images:
    for op in ops:
        m = {s: statistics.median([x for r in range(1, runs + 1) for x in times(r, img, s, op)]) for s in snaps}
        print("  %-9s %-8s %9.3fs %9.3fs %15.2fx" % (op, img, m["overlayfs"], m["strata"],
                                                     m["strata"] / m["overlayfs"]))
print()
print("ctr run --rm true on strata, thin (layers in the repository dir) against full, medians of %d runs:" % runs)
for img in images:
    def all_of(kind):
        return [x for r in range(1, runs + 1) for x in times_of(os.path.join(res, "%d.%s.%s" % (r, img, kind)))]
    t, f = statistics.median(all_of("thin")), statistics.median(all_of("full"))
    print("  %-8s thin %.3fs, full %.3fs: thin/full %.2fx" % (img, t, f, t / f))
print()
print("raw numbers: " + out_tsv)
EOF
