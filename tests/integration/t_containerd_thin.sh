#!/usr/bin/env bash
# Thin images through containerd (Debian's 1.6) and `strata snapshotter`,
# with a plain dir standing in for CernVM-FS (`strata thin make --from`
# publishes the layers of a 3-layer busybox image into
# CV/REPO/.layers/<hh>/<hex>/layerfs with the dir: publisher):
#
#   O. the full image on containerd's own overlayfs snapshotter: the
#      reference listing of the root filesystem and of a container's diff;
#   E. way 1, external method (-o thin.root=CV): `ctr images import` of the
#      thin image (one layer, a tar holding only thin.json), its snapshot a
#      strata layer holding only thin.json, `ctr run` lists the same rootfs
#      as overlayfs, a container that writes and deletes, its mounts'
#      lowerdirs in the repository, its diff; a commit on the thin image
#      (`ctr snapshots prepare/commit/diff`); the repository untouched;
#   I. way 1, internal method (-o thin.mount=internal, a read-only bind
#      mount of the repository in place of `mount -t cvmfs`): the same runs,
#      the repository mounted while a snapshot on the image exists and
#      unmounted after the last;
#   R. way 2, remote snapshots (-o thin.repo=REPO): the Prepare calls
#      containerd's CRI unpacker makes (ctd_snapclient.py, raw gRPC to
#      containerd's socket) answered AlreadyExists, each chain id then a
#      committed snapshot whose strata layer holds only thin.json, found by
#      the digest label and by chain id alone; layers the repository lacks
#      fall back to an ordinary Prepare; `ctr images import` of the full
#      image then unpacks nothing, and `ctr run` lists the same rootfs.
#
#   STRATA_BIN=build/strata bash tests/integration/t_containerd_thin.sh
# Needs root, /usr/bin/containerd, ctr, runc, /bin/busybox and, for R,
# Debian's python3-grpcio (/usr/bin/python3); skipped without them.
# shellcheck source-path=SCRIPTDIR
# The mount commands' $STRATA_* are for the sh -c that strata runs:
# shellcheck disable=SC2016
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/docker_lib.sh"
. "$(dirname "$0")/ctd_lib.sh"

ctd_test_init "containerd thin tests"
HERE=$(cd "$(dirname "$0")" && pwd)
TOOL=$HERE/ctd_tool.py
CLIENT=$HERE/ctd_snapclient.py

REPO=repo.test
HAVE_GRPC=no
/usr/bin/python3 -c 'import grpc' 2>/dev/null && HAVE_GRPC=yes
CV=$TEST_TMP/cv   # the thin root of the external method; CV/REPO is the repository
INT=$TEST_TMP/int # the thin root of the internal method (bind mounts of CV/REPO)
mkdir -p "$CV/$REPO" "$INT"
RE=$R             # the stores: external, internal, remote
RI=$TEST_TMP/ri
RR=$TEST_TMP/rr
LAYERS_RE="^$CV/$REPO/\.layers/[0-9a-f]{2}/[0-9a-f]{64}/layerfs\$"
INT_LAYERS_RE="^$INT/$REPO/\.layers/[0-9a-f]{2}/[0-9a-f]{64}/layerfs\$"
EXT_OPTS=(-o "thin.root=$CV")
INT_OPTS=(-o "thin.root=$INT" -o thin.mount=internal -o thin.timeout=30
	-o "thin.mount_cmd=mount --bind -o ro $CV/\"\$STRATA_REPO\" \"\$STRATA_MOUNTPOINT\""
	-o 'thin.umount_cmd=umount "$STRATA_MOUNTPOINT"')
REM_OPTS=(-o "thin.root=$CV" -o "thin.repo=$REPO")

# ---------------------------------------------------------------- inputs

IMG=docker.io/strata-it/busybox:latest
THIN_IMG=docker.io/strata-it/busybox-thin:latest
python3 "$TOOL" busybox "$W/full.tar" "$IMG" "$W/chains" || exit 1
# The same layers under the thin image's name (only the index differs).
python3 "$TOOL" busybox "$W/src.tar" "$THIN_IMG" "$W/src.chains" || exit 1
python3 "$TOOL" model "$W/full.tar" >"$W/model" || exit 1
mapfile -t CHAIN <"$W/chains"
# The layers' diff ids (sha256 of each layer tar), base first.
python3 - "$W/full.tar" >"$W/diffids" <<'EOF' || exit 1
import json, sys, tarfile
with tarfile.open(sys.argv[1]) as a:
    blob = lambda d: a.extractfile("blobs/sha256/" + d.split(":")[1]).read()
    index = json.loads(a.extractfile("index.json").read())
    manifest = json.loads(blob(index["manifests"][0]["digest"]))
    print("\n".join(json.loads(blob(manifest["config"]["digest"]))["rootfs"]["diff_ids"]))
EOF
mapfile -t DIFF <"$W/diffids"
# chainid(L1) = diffid(L1); chainid(Ln) = sha256(chainid(Ln-1) + " " + diffid(Ln))
mapfile -t CHAIN_PY < <(python3 - "${DIFF[@]}" <<'EOF'
import hashlib, sys
c = None
for d in sys.argv[1:]:
    c = d if c is None else "sha256:" + hashlib.sha256((c + " " + d).encode()).hexdigest()
    print(c)
EOF
)
is "inputs: the chain ids computed here are those ctd_tool.py wrote" "${CHAIN_PY[*]}" "${CHAIN[*]}"

# ---------------------------------------------------------------- helpers

# runto TAG SNAP OUT ARGS...: `ctr run ARGS` (stdout to OUT); 0 when it exits 0.
runto() {
	local tag=$1 snap=$2 out=$3
	shift 3
	crun "$tag" "$snap" "$@" >"$out" 2>"$W/stderr"
}

# rootfs TAG SNAP LABEL IMAGE NAME: `ctr run --rm IMAGE` lists its root
# filesystem into W/NAME; compared with overlayfs's (W/o.rootfs).
rootfs() {
	local tag=$1 snap=$2 label=$3 img=$4 name=$5 out
	if runto "$tag" "$snap" "$W/$name.raw" --rm "$img" "$tag-ls" sh -c "$CTD_LIST" && [[ -s $W/$name.raw ]]; then
		LC_ALL=C sort "$W/$name.raw" >"$W/$name"
		pass "$label: ctr run --rm lists the root filesystem ($(wc -l <"$W/$name") entries)"
		if [[ ! -s $W/o.rootfs ]]; then
			fail "$label: the same root filesystem as the full image on overlayfs" "no overlayfs listing"
		elif out=$(diff "$W/o.rootfs" "$W/$name"); then
			pass "$label: the same root filesystem as the full image on overlayfs (types, modes, owners, sizes, links, md5)"
		else
			failn "$label: the same root filesystem as the full image on overlayfs" "diff overlayfs $label:" \
				"$(head -n 30 <<<"$out")"
		fi
	else
		failn "$label: ctr run --rm lists the root filesystem" "$(tail -n 10 "$W/stderr")"
		diag "$tag"
	fi
}

# lowerdirs MOUNTS-TEXT: the lowerdir option's dirs, one a line.
lowerdirs() {
	sed -n 's/.*[ ,]lowerdir=\([^ ,]*\).*/\1/p' <<<"$1" | tr ':' '\n'
}

# layer_of STORE NAME: the strata layer(s) behind containerd's snapshot
# NAME (a chain id): the rows of STORE/containerd/snapshots.db whose key is
# containerd's ns/N/NAME or whose containerd.io/snapshot.ref label is NAME.
layer_of() {
	python3 - "$1/containerd/snapshots.db" "$2" <<'EOF'
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
n = sys.argv[2]
rows = db.execute("SELECT id FROM snapshots WHERE key LIKE ? OR key IN (SELECT key FROM labels "
                  "WHERE name = 'containerd.io/snapshot.ref' AND value = ?) ORDER BY id", ("%/" + n, n))
print("\n".join(r[0] for r in rows))
EOF
}

# thin_digests FILE: the digests of a thin.json, base first, one a line.
thin_digests() {
	python3 -c 'import json, sys; print("\n".join(l["digest"] for l in json.load(open(sys.argv[1]))["layers"]))' "$1"
}

# only_thin LABEL STORE ID WANT-DIGESTS: layer ID holds only thin.json,
# listing WANT-DIGESTS (hex, one a line).
only_thin() {
	local label=$1 store=$2 id=$3 want=$4
	is "$label: its strata layer ($id) holds only thin.json" "$(ls -A "$store/diff/$id" 2>&1)" "thin.json"
	is "$label: its thin.json lists the image's layers, base first" \
		"$(thin_digests "$store/diff/$id/thin.json" 2>&1)" "$want"
}

# repo_sum: every entry of the repository with its metadata and content.
repo_sum() {
	(cd "$CV/$REPO" && find . -printf '%p %y %m %U:%G %s %l\n' | LC_ALL=C sort &&
		find . -type f -exec md5sum {} + | LC_ALL=C sort) | md5sum
}

# mounts_at DIR: how many mounts sit at DIR.
mounts_at() { findmnt -rn -M "$1" | wc -l; }

# gc_all TAG SNAP LABEL: containers, images and leases removed; up to 20 s
# for containerd's garbage collection to empty the snapshotter.
gc_all() {
	local tag=$1 snap=$2 label=$3
	local -a ids
	mapfile -t ids < <(c "$tag" containers ls -q)
	((${#ids[@]} == 0)) || c "$tag" containers rm "${ids[@]}" >/dev/null 2>&1
	mapfile -t ids < <(c "$tag" leases ls -q)
	((${#ids[@]} == 0)) || c "$tag" leases rm "${ids[@]}" >/dev/null 2>&1
	images_gc "$tag" "$snap" "$label"
}

# store_empty STORE LABEL: strata check says nothing, no layer left.
store_empty() {
	local store=$1 label=$2 out rc
	out=$("$STRATA" --root "$store" check 2>&1)
	rc=$?
	is "$label: strata check of the store: nothing to say, status 0" "$rc: $out" "0: "
	is "$label: no layer dir left under the store's diff/" "$(find "$store/diff" -mindepth 1 -maxdepth 1 2>&1)" ""
	is "$label: nothing mounted under the store" "$(mounts_under "$store")" ""
}

# start TAG LABEL STORE OPTS...: the snapshotter on STORE with OPTS, and a
# containerd TAG that loads it.
start() {
	local tag=$1 label=$2 store=$3
	shift 3
	if ! snap_start "$store" "$SNAP_SOCKET" "$SNAP_LOGFILE" "$@"; then
		failn "$label: strata snapshotter starts ($*)" "$(tail -n 15 "$SNAP_LOGFILE")"
		return 1
	fi
	if ! ctd_start "$tag" "$TEST_TMP/$tag" "$SNAP_SOCKET"; then
		fail "$label: containerd starts with the strata proxy plugin"
		snap_stop
		return 1
	fi
	pass "$label: strata snapshotter ($*) and containerd start"
}

# stop TAG LABEL: containerd TAG and the snapshotter stopped, both exit 0.
stop() {
	local tag=$1 label=$2
	ctd_stop "$tag"
	snap_stop
	is "$label: containerd and the snapshotter exit 0 on SIGTERM" "$CTD_STOP_RC $SNAP_RC" "0 0"
}

# wait_is DESC EXPECTED SECONDS CMD...: `is`, after up to SECONDS for CMD's
# output to become EXPECTED.  containerd removes a snapshot from its own
# metadata at once and from the snapshotter at its next garbage
# collection, which a deletion schedules within moments.
wait_is() {
	local desc=$1 want=$2 deadline=$((SECONDS + $3)) got
	shift 3
	while got=$("$@" 2>&1) && [[ $got != "$want" ]] && ((SECONDS < deadline)); do
		sleep 0.2
	done
	is "$desc" "$got" "$want"
}

# layer_count STORE: the layer dirs in STORE/diff.
layer_count() { find "$1/diff" -mindepth 1 -maxdepth 1 | wc -l; }

# view TAG DESC KEY PARENT: a view labelled as a root for containerd's
# garbage collector (`ctr snapshots view` labels nothing: a collection that
# a container's removal schedules would take it), through
# ctd_snapclient.py; without python3-grpcio, ctr's view, labelled after.
view() {
	local tag=$1 desc=$2 key=$3 parent=$4 out
	if [[ $HAVE_GRPC == yes ]]; then
		if out=$(/usr/bin/python3 "$CLIENT" view "${CTD_DIR[$tag]}/ctd.sock" "$CTD_NS" - "$key" "$parent" \
			containerd.io/gc.root=strata-it 2>&1) && [[ $out == OK* ]]; then
			pass "$desc"
		else
			failn "$desc" "$out"
			return 1
		fi
	else
		ccheck "$tag" "$desc" snapshots --snapshotter strata view "$key" "$parent" &&
			c "$tag" snapshots --snapshotter strata label "$key" containerd.io/gc.root=strata-it >/dev/null
	fi
}

log_mark() { wc -l <"$SNAP_LOGFILE"; }
log_since() { tail -n "+$(($1 + 1))" "$SNAP_LOGFILE"; }

# ---------------------------------------------------------------- the thin image

echo "# ---- strata thin make --from: the image's layers into the repository"
"$STRATA" --root "$TEST_TMP/r0" init >/dev/null || exit 1
if "$STRATA" --root "$TEST_TMP/r0" "${EXT_OPTS[@]}" thin make --repo "$REPO" --publisher "dir:$CV/$REPO" \
	--from "$W/src.tar" -o "$W/thin.tar" >"$W/thin.json" 2>"$W/make.err"; then
	pass "thin make --from the 3-layer image -o thin.tar"
else
	failn "thin make --from the 3-layer image -o thin.tar" "$(cat "$W/make.err")"
	exit 1
fi
is "thin.json: the image's diff ids, base first" "$(thin_digests "$W/thin.json" | sed 's/^/sha256:/')" \
	"$(printf '%s\n' "${DIFF[@]}")"
is "the repository holds each layer at .layers/<hh>/<hex>/layerfs" \
	"$(cd "$CV/$REPO" && find .layers -mindepth 3 -maxdepth 3 -name layerfs | LC_ALL=C sort)" \
	"$(for d in "${DIFF[@]}"; do h=${d#sha256:}; echo ".layers/${h:0:2}/$h/layerfs"; done | LC_ALL=C sort)"
# The thin image's one layer and its chain id (its diff id).
python3 - "$W/thin.tar" >"$W/thin.layer" <<'EOF' || exit 1
import json, sys, tarfile
with tarfile.open(sys.argv[1]) as a:
    m = json.loads(a.extractfile("manifest.json").read())[0]
    cfg = json.loads(a.extractfile(m["Config"]).read())
    print(cfg["rootfs"]["diff_ids"][0])
    print(" ".join(m["RepoTags"]))
    print(" ".join(tarfile.open(fileobj=a.extractfile(m["Layers"][0])).getnames()))
EOF
{
	read -r THIN_CHAIN
	read -r tags
	read -r names
} <"$W/thin.layer"
is "thin.tar: one layer holding only thin.json, tagged $THIN_IMG" "$tags / $names" "$THIN_IMG / thin.json"
REPO_SUM=$(repo_sum)

# ---------------------------------------------------------------- O: overlayfs

echo "# ---- O: the full image on containerd's overlayfs snapshotter"
if ctd_start o "$TEST_TMP/o"; then
	pass "O: containerd starts"
	ccheck o "O: ctr images import of the full image" images import --snapshotter overlayfs "$W/full.tar"
	if runto o overlayfs "$W/o.rootfs.raw" --rm "$IMG" o-ls sh -c "$CTD_LIST" && [[ -s $W/o.rootfs.raw ]]; then
		LC_ALL=C sort "$W/o.rootfs.raw" >"$W/o.rootfs"
		is "O: ctr run --rm lists the image's layers applied in order (the model)" "$(diff "$W/model" "$W/o.rootfs")" ""
	else
		failn "O: ctr run --rm lists the root filesystem" "$(tail -n 10 "$W/stderr")"
	fi
	if runto o overlayfs "$W/o.modify" "$IMG" o-w sh -c "$CTD_MODIFY" &&
		c o snapshots --snapshotter overlayfs diff --media-type application/vnd.oci.image.layer.v1.tar \
			o-w >"$W/o.wdiff.tar" 2>"$W/stderr"; then
		python3 "$TOOL" listing "$W/o.wdiff.tar" >"$W/o.wdiff"
		pass "O: a container's changes, as ctr snapshots diff shows them ($(wc -l <"$W/o.wdiff") entries)"
	else
		failn "O: a container's changes, as ctr snapshots diff shows them" "$(tail -n 10 "$W/stderr")"
	fi
	is "O: containerd's log: the import applied the 3 layers ('diff applied')" \
		"$(grep -c 'diff applied' "$TEST_TMP/o/ctd.log")" 3
	c o containers rm o-w >/dev/null 2>&1
	ctd_stop o
else
	fail "O: containerd starts"
fi

# ---------------------------------------------------------------- E: way 1, external

# way1 TAG LABEL STORE LOWER-RE: the thin image imported and run.
way1() {
	local tag=$1 label=$2 store=$3 lower_re=$4 mnt=$TEST_TMP/m$1 out id mark
	mark=$(log_mark)
	ccheck "$tag" "$label: ctr images import --snapshotter strata of the thin image" \
		images import --snapshotter strata "$W/thin.tar" || return 1
	is "$label: one committed snapshot, the thin layer's chain id" "$(snaps_ls "$tag" strata 2>&1)" \
		"$THIN_CHAIN - Committed"
	id=$(layer_of "$store" "$THIN_CHAIN")
	is "$label: the store holds one layer, that snapshot's" \
		"$(find "$store/diff" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>&1)" "$id"
	only_thin "$label: the thin image's snapshot" "$store" "$id" "$(thin_digests "$W/thin.json")"
	is "$label: the snapshotter's log says the commit made a thin layer" \
		"$(log_since "$mark" | grep -c "a thin layer (layer $id)")" 1

	rootfs "$tag" strata "$label" "$THIN_IMG" "$tag.rootfs"

	# A container that writes and deletes, kept.
	if runto "$tag" strata "$W/$tag.modify" "$THIN_IMG" "$tag-w" sh -c "$CTD_MODIFY" &&
		[[ $(cat "$W/$tag.modify") == "done" ]]; then
		pass "$label: ctr run (no --rm) of a container that writes, deletes and renames"
	else
		failn "$label: ctr run (no --rm) of a container that writes, deletes and renames" \
			"$(cat "$W/$tag.modify")" "$(tail -n 10 "$W/stderr")"
		diag "$tag"
	fi
	if out=$(c "$tag" snapshots --snapshotter strata mounts "$mnt/w" "$tag-w" 2>&1); then
		echo "# $label: mounts of the container: $(cut -c1-600 <<<"$out")"
		is "$label: the container's mount: one overlay" "$(awk '{print $1, $2, $3}' <<<"$out")" "mount -t overlay"
		is "$label: its lowerdirs: the image's 3 layers, in the repository" \
			"$(lowerdirs "$out" | grep -cE "$lower_re") of $(lowerdirs "$out" | wc -l)" "3 of 3"
		is "$label: ... top first" "$(lowerdirs "$out" | sed 's|/layerfs$||; s|.*/||' | sed 's/^/sha256:/')" \
			"$(printf '%s\n' "${DIFF[2]}" "${DIFF[1]}" "${DIFF[0]}")"
		is "$label: its upperdir is the container's layer in the store" \
			"$(sed -n 's/.*[ ,]upperdir=\([^ ,]*\).*/\1/p' <<<"$out")" "$store/diff/$(layer_of "$store" "$tag-w")"
		mkdir -p "$mnt/w"
		if mount_lines <<<"$out"; then
			is "$label: the container's mount shows its changes" "$(modified_view "$mnt/w")" "$CTD_MODIFIED"
			umount_target "$label" "$mnt/w"
		else
			fail "$label: the container's mount mounts"
		fi
	else
		failn "$label: ctr snapshots mounts of the container" "$out"
	fi
	if c "$tag" snapshots --snapshotter strata diff --media-type application/vnd.oci.image.layer.v1.tar \
		"$tag-w" >"$W/$tag.wdiff.tar" 2>"$W/stderr"; then
		python3 "$TOOL" listing "$W/$tag.wdiff.tar" >"$W/$tag.wdiff"
		is "$label: ctr snapshots diff of the container: what overlayfs's shows (names, types, modes, owners, sizes, contents)" \
			"$(diff "$W/o.wdiff" "$W/$tag.wdiff" 2>&1)" ""
	else
		failn "$label: ctr snapshots diff of the container" "$(tail -n 10 "$W/stderr")"
		diag "$tag"
	fi
	ccheck "$tag" "$label: ctr containers rm of the kept container" containers rm "$tag-w"
	is "$label: the repository is untouched" "$(repo_sum)" "$REPO_SUM"
}

# commit_on_thin TAG LABEL STORE LOWER-RE: ctr snapshots view, and
# prepare/commit/diff on the thin image.
commit_on_thin() {
	local tag=$1 label=$2 store=$3 lower_re=$4 mnt=$TEST_TMP/m$1 out id
	local S=(snapshots --snapshotter strata)
	view "$tag" "$label: a view v0 of the thin image" v0 "$THIN_CHAIN"
	mkdir -p "$mnt/v0"
	if out=$(c "$tag" "${S[@]}" mounts "$mnt/v0" v0 2>&1) && mount_lines <<<"$out"; then
		is "$label: v0: an overlay of the image's 3 layers in the repository, no upper" \
			"$(awk '{print $3}' <<<"$out") $(lowerdirs "$out" | grep -cE "$lower_re") $(grep -c upperdir <<<"$out")" "overlay 3 0"
		is "$label: v0 shows the image, read-only" \
			"$(cat "$mnt/v0/data/keep" "$mnt/v0/data/l3"; touch "$mnt/v0/x" 2>&1 | sed 's/.*: //')" "keep2
layer three
Read-only file system"
		umount_target "$label" "$mnt/v0"
	else
		failn "$label: v0's mounts mount" "$out"
	fi
	ccheck "$tag" "$label: ctr snapshots rm v0" "${S[@]}" rm v0
	ccheck "$tag" "$label: ctr snapshots prepare k1 on the thin image" "${S[@]}" prepare k1 "$THIN_CHAIN" || return 1
	mkdir -p "$mnt/k1"
	if out=$(c "$tag" "${S[@]}" mounts "$mnt/k1" k1 2>&1) && mount_lines <<<"$out"; then
		out=$(
			set -e
			cd "$mnt/k1/data"
			cat keep l3
			echo c4 >c4
			rm l3
			echo more >>own
		)
		is "$label: read and write through k1's mounts" "$out" "keep2
layer three"
		umount_target "$label" "$mnt/k1"
	else
		failn "$label: k1's mounts mount" "$out"
	fi
	ccheck "$tag" "$label: ctr snapshots commit c1 k1" "${S[@]}" commit c1 k1 || return 1
	is "$label: ctr snapshots info c1: committed on the thin image" \
		"$(c "$tag" "${S[@]}" info c1 2>&1 | python3 "$TOOL" info 2>&1 | cut -d' ' -f1-3)" \
		"Kind=Committed Name=c1 Parent=$THIN_CHAIN"
	id=$(layer_of "$store" c1)
	is "$label: c1's strata layer: the change only, no thin.json" \
		"$(cd "$store/diff/$id" && find . -mindepth 1 -printf '%p %y\n' | LC_ALL=C sort)" "./data d
./data/c4 f
./data/l3 c
./data/own f"
	if c "$tag" "${S[@]}" diff --media-type application/vnd.oci.image.layer.v1.tar c1 >"$W/$tag.c1diff.tar" 2>"$W/stderr"; then
		python3 "$TOOL" listing "$W/$tag.c1diff.tar" >"$W/$tag.c1diff"
		is "$label: ctr snapshots diff c1: only the change (name type mode owner size)" \
			"$(awk '{print $1, $2, $3, $4, $5}' "$W/$tag.c1diff")" "data 5 755 0:0 0
data/.wh.l3 0 0 0:0 0
data/c4 0 644 0:0 3
data/own 0 640 1000:1000 9"
	else
		failn "$label: ctr snapshots diff c1" "$(tail -n 10 "$W/stderr")"
		diag "$tag"
	fi
	view "$tag" "$label: a view v1 of c1" v1 c1
	mkdir -p "$mnt/v1"
	if out=$(c "$tag" "${S[@]}" mounts "$mnt/v1" v1 2>&1) && mount_lines <<<"$out"; then
		is "$label: v1's lowerdirs: c1's layer, then the image's 3 in the repository" \
			"$(lowerdirs "$out" | wc -l) $(lowerdirs "$out" | tail -n 3 | grep -c "/layerfs$")" "4 3"
		is "$label: v1 shows c1 over the thin image" \
			"$(cd "$mnt/v1/data" && cat c4 own keep && ls -a opq && [ ! -e l3 ] && echo "no l3")" "c4
own
more
keep2
.
..
new
no l3"
		umount_target "$label" "$mnt/v1"
	else
		failn "$label: v1's mounts mount" "$out"
	fi
	ccheck "$tag" "$label: ctr snapshots rm v1 c1" "${S[@]}" rm v1 c1
}

echo "# ---- E: way 1, external method"
if start e E "$RE" "${EXT_OPTS[@]}"; then
	way1 e E "$RE" "$LAYERS_RE"
	commit_on_thin e E "$RE" "$LAYERS_RE"
	gc_all e strata E
	store_empty "$RE" E
	stop e E
fi

# ---------------------------------------------------------------- I: way 1, internal

echo "# ---- I: way 1, internal method (a read-only bind mount of the repository)"
if start i I "$RI" "${INT_OPTS[@]}"; then
	is "I: the repository is not mounted before" "$(mounts_at "$INT/$REPO")" 0
	way1 i I "$RI" "$INT_LAYERS_RE"
	wait_is "I: the repository is unmounted once no snapshot on the image is left (after containerd's GC)" 0 20 \
		mounts_at "$INT/$REPO"
	if runto i strata "$W/i.k" -d "$THIN_IMG" i-k sleep 600; then
		is "I: with a running container: the repository is mounted once, read-only" \
			"$(mounts_at "$INT/$REPO") $(findmnt -rn -o OPTIONS -M "$INT/$REPO" | cut -d, -f1)" "1 ro"
		crun i strata --rm "$THIN_IMG" i-k2 cat /data/keep >"$W/i.k2" 2>&1
		is "I: a second container meanwhile: runs, and the repository stays mounted once" \
			"$(cat "$W/i.k2") $(mounts_at "$INT/$REPO")" "keep2 1"
		c i tasks kill -s KILL i-k >/dev/null 2>&1
		for _ in $(seq 50); do
			[[ $(c i tasks ls -q 2>/dev/null) ]] || break
			sleep 0.1
		done
		c i tasks rm i-k >/dev/null 2>&1
		ccheck i "I: ctr containers rm of the running one, killed" containers rm i-k
		wait_is "I: the repository is unmounted after the last container (after containerd's GC)" 0 20 \
			mounts_at "$INT/$REPO"
	else
		failn "I: ctr run -d of a container on the thin image" "$(tail -n 10 "$W/stderr")"
		diag i
	fi
	commit_on_thin i I "$RI" "$INT_LAYERS_RE"
	gc_all i strata I
	is "I: the repository is not mounted at the end" "$(mounts_at "$INT/$REPO")" 0
	store_empty "$RI" I
	stop i I
fi

# ---------------------------------------------------------------- R: way 2, remote snapshots

echo "# ---- R: way 2, remote snapshots (-o thin.repo)"
if [[ $HAVE_GRPC != yes ]]; then
	skip "R: remote snapshots" "Debian's python3-grpcio is missing (apt-get install python3-grpcio)"
elif start r R "$RR" "${REM_OPTS[@]}"; then
	CSOCK=${CTD_DIR[r]}/ctd.sock
	LEASE=strata-it-cri
	ccheck r "R: ctr leases create (the CRI's lease for its unpack)" leases create --id "$LEASE" --expires 1h

	# remote_round LABEL WITH-DIGEST: the CRI's Prepare calls, base first.
	remote_round() {
		local label=$1 digest=$2 i parent out mark id want=""
		mark=$(log_mark)
		for i in 0 1 2; do
			parent=""
			((i > 0)) && parent=${CHAIN[i - 1]}
			local -a labels=("containerd.io/snapshot.ref=${CHAIN[i]}")
			[[ $digest == yes ]] && labels+=("containerd.io/snapshot/cri.layer-digest=${DIFF[i]}")
			out=$(/usr/bin/python3 "$CLIENT" prepare "$CSOCK" "$CTD_NS" "$LEASE" \
				"extract-$i-$RANDOM ${CHAIN[i]}" "$parent" "${labels[@]}" 2>&1)
			is "$label: Prepare of layer $((i + 1)) answers ALREADY_EXISTS" "${out%% *}" ALREADY_EXISTS
			echo "# $(head -n 3 <<<"$out" | cut -c1-300)"
			is "$label: ctr snapshots info of chain id $((i + 1)): committed, on the one below" \
				"$(c r snapshots --snapshotter strata info "${CHAIN[i]}" 2>&1 | python3 "$TOOL" info 2>&1 | cut -d' ' -f1-3)" \
				"Kind=Committed Name=${CHAIN[i]} Parent=$parent"
			id=$(layer_of "$RR" "${CHAIN[i]}")
			want+=${want:+$'\n'}${DIFF[i]#sha256:}
			only_thin "$label: layer $((i + 1))" "$RR" "$id" "$want"
		done
		is "$label: the snapshotter's log: three layers found in the thin repository" \
			"$(log_since "$mark" | grep -c 'is in the thin repository')" 3
		is "$label: the store holds those three layers" "$(layer_count "$RR")" 3
		is "$label: ctr snapshots ls: the three chain ids, committed" "$(snaps_ls r strata 2>&1)" \
			"$(printf '%s - Committed\n%s %s Committed\n%s %s Committed' "${CHAIN[0]}" "${CHAIN[1]}" "${CHAIN[0]}" \
				"${CHAIN[2]}" "${CHAIN[1]}" | LC_ALL=C sort)"
	}

	remote_round "R, digest label" yes
	ccheck r "R: ctr snapshots rm of the three" snapshots --snapshotter strata rm "${CHAIN[2]}" "${CHAIN[1]}" "${CHAIN[0]}"
	wait_is "R: the store is empty again (after containerd's GC)" 0 20 layer_count "$RR"
	remote_round "R, chain id only" no

	# A view of the one-layer remote snapshot: the repository's dir itself.
	mkdir -p "$TEST_TMP/mr/v"
	view r "R: a view of the base layer's remote snapshot" rv "${CHAIN[0]}"
	if out=$(c r snapshots --snapshotter strata mounts "$TEST_TMP/mr/v" rv 2>&1) && mount_lines <<<"$out"; then
		is "R: ... a read-only bind of the layer's dir in the repository" \
			"$(awk '{print $3, $4}' <<<"$out")" "bind $CV/$REPO/.layers/${DIFF[0]:7:2}/${DIFF[0]#sha256:}/layerfs"
		is "R: ... it shows layer 1, read-only" \
			"$(cat "$TEST_TMP/mr/v/data/keep"; touch "$TEST_TMP/mr/v/x" 2>&1 | sed 's/.*: //')" "keep
Read-only file system"
		umount_target R "$TEST_TMP/mr/v"
	else
		failn "R: ... its mounts mount" "$out"
	fi
	ccheck r "R: ... removed" snapshots --snapshotter strata rm rv

	# Layers the repository lacks: an ordinary Prepare.
	fake_diff=sha256:$(printf 'not published' | sha256sum | cut -d' ' -f1)
	fake_chain=sha256:$(printf '%s %s' "${CHAIN[2]}" "$fake_diff" | sha256sum | cut -d' ' -f1)
	for variant in "digest label" "chain id only"; do
		labels=("containerd.io/snapshot.ref=$fake_chain")
		[[ $variant == "digest label" ]] && labels+=("containerd.io/snapshot/cri.layer-digest=$fake_diff")
		key="extract-9-$RANDOM $fake_chain"
		out=$(/usr/bin/python3 "$CLIENT" prepare "$CSOCK" "$CTD_NS" "$LEASE" "$key" "${CHAIN[2]}" "${labels[@]}" 2>&1)
		echo "# $(cut -c1-400 <<<"$out" | head -n 3)"
		is "R: a layer the repository lacks ($variant): Prepare answers OK with an overlay on the thin image" \
			"$(head -n 1 <<<"$out") $(sed -n 2p <<<"$out" | cut -d' ' -f1) $(lowerdirs "$(sed -n 2p <<<"$out" | tr ' ' ',')" | grep -cE "$LAYERS_RE")" \
			"OK overlay 3"
		is "R: ... an active snapshot" "$(c r snapshots --snapshotter strata info "$key" 2>&1 | python3 "$TOOL" info 2>&1 | cut -d' ' -f1)" \
			"Kind=Active"
		is "R: ... removed" "$(/usr/bin/python3 "$CLIENT" remove "$CSOCK" "$CTD_NS" "$key" 2>&1)" OK
	done
	fake_base=sha256:$(printf 'not published base' | sha256sum | cut -d' ' -f1)
	key="extract-8-$RANDOM $fake_base"
	out=$(/usr/bin/python3 "$CLIENT" prepare "$CSOCK" "$CTD_NS" "$LEASE" "$key" "" \
		"containerd.io/snapshot.ref=$fake_base" "containerd.io/snapshot/cri.layer-digest=$fake_base" 2>&1)
	is "R: a base layer the repository lacks: Prepare answers OK with a bind mount" \
		"$(head -n 1 <<<"$out") $(sed -n 2p <<<"$out" | cut -d' ' -f1)" "OK bind"
	is "R: ... removed" "$(/usr/bin/python3 "$CLIENT" remove "$CSOCK" "$CTD_NS" "$key" 2>&1)" OK

	# A published layer on a parent that is not thin: an ordinary Prepare.
	ccheck r "R: an ordinary committed snapshot (prepare and commit, no parent)" \
		snapshots --snapshotter strata prepare plain-a ""
	ccheck r "R: ... committed as plain" snapshots --snapshotter strata commit plain plain-a
	plain_chain=sha256:$(printf '%s %s' "$fake_base" "${DIFF[1]}" | sha256sum | cut -d' ' -f1)
	key="extract-7-$RANDOM $plain_chain"
	out=$(/usr/bin/python3 "$CLIENT" prepare "$CSOCK" "$CTD_NS" "$LEASE" "$key" plain \
		"containerd.io/snapshot.ref=$plain_chain" "containerd.io/snapshot/cri.layer-digest=${DIFF[1]}" 2>&1)
	is "R: a published layer on a parent that is not thin: Prepare answers OK with an overlay" \
		"$(head -n 1 <<<"$out") $(sed -n 2p <<<"$out" | cut -d' ' -f1)" "OK overlay"
	is "R: ... removed" "$(/usr/bin/python3 "$CLIENT" remove "$CSOCK" "$CTD_NS" "$key" 2>&1)" OK
	ccheck r "R: ... and plain removed" snapshots --snapshotter strata rm plain

	# A digest label that does not go with the chain id: chainid(parent +
	# digest) is not the snapshot.ref.  Trusting the label would put that
	# layer's content under a chain id that names other content, for every
	# image that shares the chain id: the snapshot must be unpacked as usual.
	bad_chain=sha256:$(printf '%s %s' "${CHAIN[0]}" "$fake_diff" | sha256sum | cut -d' ' -f1)
	key="extract-6-$RANDOM $bad_chain"
	out=$(/usr/bin/python3 "$CLIENT" prepare "$CSOCK" "$CTD_NS" "$LEASE" "$key" "${CHAIN[0]}" \
		"containerd.io/snapshot.ref=$bad_chain" "containerd.io/snapshot/cri.layer-digest=${DIFF[2]}" 2>&1)
	echo "# $(head -n 2 <<<"$out" | cut -c1-300)"
	is "R: a digest label that does not match the chain id (layer 3's digest for a chain of layer 1 and an unpublished layer): no AlreadyExists, an ordinary Prepare" \
		"$(head -n 1 <<<"$out" | cut -d' ' -f1)" "OK"
	if [[ $out == OK* ]]; then
		/usr/bin/python3 "$CLIENT" remove "$CSOCK" "$CTD_NS" "$key" >/dev/null 2>&1
	else
		echo "# what the snapshot $bad_chain holds: $(grep -o '"digest": "[0-9a-f]*' "$RR/diff/$(layer_of "$RR" "$bad_chain" | head -n 1)/thin.json" 2>&1 | cut -c12-23 | paste -sd' ')"
		c r snapshots --snapshotter strata rm "$bad_chain" >/dev/null 2>&1
	fi
	wait_is "R: the store holds the three thin layers only (after containerd's GC)" 3 20 layer_count "$RR"

	# The full image: its chain ids are there, nothing is unpacked.
	mark=$(log_mark)
	before=$(find "$RR/diff" -mindepth 1 -maxdepth 1 -printf '%f\n' | LC_ALL=C sort)
	ccheck r "R: ctr images import --snapshotter strata of the full image" images import --snapshotter strata "$W/full.tar"
	is "R: the import made no layer (nothing unpacked)" \
		"$(find "$RR/diff" -mindepth 1 -maxdepth 1 -printf '%f\n' | LC_ALL=C sort)" "$before"
	is "R: ctr snapshots ls: still the three chain ids" "$(snaps_ls r strata 2>&1 | awk '{print $1}')" \
		"$(printf '%s\n' "${CHAIN[@]}" | LC_ALL=C sort)"
	is "R: containerd's log: no layer applied (overlayfs's import logged $(grep -c 'diff applied' "$TEST_TMP/o/ctd.log"))" \
		"$(grep -c 'diff applied' "${CTD_DIR[r]}/ctd.log")" 0
	rootfs r strata "R" "$IMG" r.rootfs
	if runto r strata "$W/r.modify" --rm "$IMG" r-w sh -c "$CTD_MODIFY" && [[ $(cat "$W/r.modify") == "done" ]]; then
		pass "R: a container that writes, deletes and renames"
	else
		failn "R: a container that writes, deletes and renames" "$(cat "$W/r.modify")" "$(tail -n 10 "$W/stderr")"
	fi
	is "R: the repository is untouched" "$(repo_sum)" "$REPO_SUM"
	gc_all r strata R
	store_empty "$RR" R
	stop r R
fi

# ---------------------------------------------------------------- P: commits on a thin image publish

# With -o thin.publisher=dir:CV/REPO, a commit of a snapshot on the thin
# image publishes the layer into the repository and makes it thin, as a
# commit through strata serve; one still mounted is committed as it is.
RP=$TEST_TMP/rp
if start p P "$RP" "${EXT_OPTS[@]}" -o "thin.publisher=dir:$CV/$REPO"; then
	S=(snapshots --snapshotter strata)
	mnt=$TEST_TMP/mp
	mkdir -p "$mnt"
	ccheck p "P: ctr images import of the thin image" images import --snapshotter strata "$W/thin.tar"
	n_repo=$(find "$CV/$REPO/.layers" -mindepth 2 -maxdepth 2 | wc -l)
	ccheck p "P: prepare k1 on the thin image" "${S[@]}" prepare k1 "$THIN_CHAIN"
	if out=$(c p "${S[@]}" mounts "$mnt" k1 2>&1) && mount_lines <<<"$out"; then
		echo published >"$mnt/data/pub"
		rm "$mnt/data/keep"
		umount_target P "$mnt"
	else
		failn "P: k1's mounts mount" "$out"
	fi
	mark=$(log_mark)
	ccheck p "P: commit k1 as c1" "${S[@]}" commit c1 k1
	if log_since "$mark" | grep -q 'c1: published into the repository, now a thin layer'; then
		pass "P: the snapshotter logged the publish"
	else
		failn "P: the snapshotter logged the publish" "$(log_since "$mark" | tail -n 5)"
	fi
	is "P: the repository holds one layer more" "$(find "$CV/$REPO/.layers" -mindepth 2 -maxdepth 2 | wc -l)" \
		"$((n_repo + 1))"
	id=$(layer_of "$RP" c1)
	is "P: c1's strata layer holds only thin.json, listing the image and the new layer" \
		"$(ls -A "$RP/diff/$id" 2>&1) $(thin_digests "$RP/diff/$id/thin.json" 2>/dev/null | wc -l)" "thin.json 4"
	ccheck p "P: prepare k2 on c1" "${S[@]}" prepare k2 c1
	if out=$(c p "${S[@]}" mounts "$mnt" k2 2>&1) && mount_lines <<<"$out"; then
		is "P: k2 sees the published file and deletion, every lower in the repository" \
			"$(cat "$mnt/data/pub"; stat -c %n "$mnt/data/keep" 2>&1 | sed 's/.*: //'; lowerdirs "$out" | grep -cvE "$LAYERS_RE")" \
			"published
No such file or directory
0"
		umount_target P "$mnt"
	else
		failn "P: k2's mounts mount" "$out"
	fi
	# Committed while still mounted: as it is.
	ccheck p "P: prepare k3 on the thin image" "${S[@]}" prepare k3 "$THIN_CHAIN"
	if out=$(c p "${S[@]}" mounts "$mnt" k3 2>&1) && mount_lines <<<"$out"; then
		echo busy >"$mnt/data/busy"
		mark=$(log_mark)
		ccheck p "P: commit k3 as c3 while its mounts are mounted" "${S[@]}" commit c3 k3
		umount_target P "$mnt"
		id=$(layer_of "$RP" c3)
		is "P: c3 is not published (its layer keeps its files) and the log says why" \
			"$(cat "$RP/diff/$id/data/busy" 2>&1) $(log_since "$mark" | grep -c 'k3: not published: .*mounted')" "busy 1"
	else
		failn "P: k3's mounts mount" "$out"
	fi
	for k in k2 c3 c1; do c p "${S[@]}" rm "$k" >/dev/null 2>&1; done
	gc_all p strata P
	store_empty "$RP" P
	stop p P
fi

is "no overlay mounted under the scratch dir at the end" \
	"$(findmnt -rn -t overlay -o TARGET | grep -F "$TEST_TMP/" || true)" ""
is "nothing mounted under the scratch dir at the end" "$(mounts_under "$TEST_TMP")" ""
