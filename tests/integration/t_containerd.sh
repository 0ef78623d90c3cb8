#!/usr/bin/env bash
# A private containerd (Debian's 1.6) storing images and containers through
# `strata snapshotter` (a proxy snapshotter plugin), against the same
# scenario on containerd's built-in overlayfs snapshotter: a 3-layer busybox
# image made here (whiteout, opaque dir, owners, setuid, symlink, hardlink,
# gzip and plain layers) imported and run, a container's changes as
# `ctr snapshots diff` shows them, every `ctr snapshots` verb and its
# errors, garbage collection down to an empty store, restarts of containerd
# and of the snapshotter, and a snapshotter killed during an import.  What
# the two snapshotters show must be the same (the "both:" cases).
#
#   STRATA_BIN=build/strata bash tests/integration/t_containerd.sh    (~20 s)
# Needs root, /usr/bin/containerd, ctr, runc and /bin/busybox (from
# busybox-static); skipped without them.  The containerds run under the
# scratch dir with their own sockets and a namespace of their own
# (strata-it-PID); every process started here is stopped by PID on exit.
# shellcheck source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/docker_lib.sh"
. "$(dirname "$0")/ctd_lib.sh"

ctd_test_init "containerd tests"
TOOL=$(cd "$(dirname "$0")" && pwd)/ctd_tool.py

# ---------------------------------------------------------------- inputs

IMG=docker.io/strata-it/busybox:latest
IDX=docker.io/strata-it/busybox-index:latest
BIG=docker.io/strata-it/big:latest
python3 "$TOOL" busybox "$W/busybox.tar" "$IMG" "$W/chains" || exit 1
python3 "$TOOL" model "$W/busybox.tar" >"$W/model" || exit 1
python3 "$TOOL" big "$W/big.tar" "$BIG" "$W/big.chains" 8 || exit 1
mapfile -t CHAIN <"$W/chains"
TOP=${CHAIN[2]}

# A local registry (Debian's docker-registry on 127.0.0.1) holding the big
# image (five layers of its own), pushed with skopeo: both scenarios pull
# and unpack it.
REG=
if command -v docker-registry >/dev/null && command -v skopeo >/dev/null; then
	REG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
		"$TEST_TMP/registry" "$REG_PORT" >"$W/registry.yml"
	docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
	BG_PIDS+=($!)
	for ((i = 0; i < 100; i++)); do
		curl -fsS "http://127.0.0.1:$REG_PORT/v2/" >/dev/null 2>&1 && break
		sleep 0.1
	done
	if skopeo copy --dest-tls-verify=false "oci-archive:$W/big.tar" \
		"docker://127.0.0.1:$REG_PORT/strata-it/big:pull" >"$W/skopeo.log" 2>&1; then
		REG=127.0.0.1:$REG_PORT/strata-it/big:pull
		pass "the big image pushed to a local registry (docker-registry, skopeo copy)"
	else
		failn "the big image pushed to a local registry (docker-registry, skopeo copy)" \
			"$(tail -n 5 "$W/skopeo.log")" "$(tail -n 5 "$W/registry.log")"
	fi
else
	skip "pulls from a local registry" "docker-registry or skopeo is missing (apt-get install docker-registry skopeo)"
fi

# What the image must show, by construction (see ctd_tool.py).
# shellcheck disable=SC2016 # for the container's shell
FACTS='cat /data/keep /data/opq/new /data/dir/x /data/l3 /etc/motd
ls -a /data/opq
stat -c "%n %a %u:%g %h %F" /data/own /data/suid /data/hard /data/hardsrc
stat -c "%n %a %u:%g %F" /data/dir /data/link
readlink /data/link
[ "$(stat -c %i /data/hard)" = "$(stat -c %i /data/hardsrc)" ] && echo "hard and hardsrc: one inode"
/data/suid
for p in /data/del /data/opq/a /data/opq/b /data/opq/sub /data/.wh.del /data/opq/.wh..wh..opq; do
	[ -e $p ] && echo "still there: $p"
done
echo end'
FACTS_OUT='keep2
new in opq
x3
layer three
strata-it
.
..
new
/data/own 640 1000:1000 1 regular file
/data/suid 4755 0:0 1 regular file
/data/hard 644 0:0 2 regular file
/data/hardsrc 644 0:0 2 regular file
/data/dir 750 0:0 directory
/data/link 777 0:0 symbolic link
keep
hard and hardsrc: one inode
suid
end'

# The names `ctr snapshots diff` of a container CTD_MODIFY changed lists (a
# tar of the changes against the image, whiteouts as .wh. files).
MODIFY_DIFF_NAMES='data
data/.wh.dir
data/.wh.hardsrc
data/.wh.keep
data/.wh.opq
data/dir2
data/dir2/x
data/dir2/y
data/hard
data/l3
data/made
data/new
data/newlink
data/opq2
data/opq2/new
data/suid
etc
etc/passwd'

# ---------------------------------------------------------------- helpers

# cis TAG DESC EXPECTED ARGS...: `ctr ARGS` exits 0 and prints EXPECTED.
cis() {
	local tag=$1 desc=$2 want=$3 out rc
	shift 3
	out=$(c "$tag" "$@" 2>"$W/stderr")
	rc=$?
	if ((rc == 0)) && [[ $out == "$want" ]]; then
		pass "$desc"
	else
		failn "$desc" "command: ctr $* (status $rc)" "got:" "$out" "expected:" "$want" \
			"stderr:" "$(tail -n 10 "$W/stderr")"
		((rc == 0)) || diag "$tag"
		return 1
	fi
}

# runis TAG SNAP DESC EXPECTED ARGS...: `ctr run --rm ARGS` prints EXPECTED.
runis() {
	local tag=$1 snap=$2 desc=$3 want=$4
	shift 4
	cis "$tag" "$desc" "$want" run --snapshotter "$snap" --fifo-dir "${CTD_DIR[$tag]}/fifo" \
		--runc-root "${CTD_DIR[$tag]}/runc" --rm "$@"
}

# cfail TAG DESC CLASS OUTFILE ARGS...: `ctr ARGS` fails with an error of
# CLASS; "DESC: CLASS" is appended to OUTFILE (for the comparison).
cfail() {
	local tag=$1 desc=$2 want=$3 outfile=$4 out rc cls
	shift 4
	out=$(c "$tag" "$@" 2>&1)
	rc=$?
	cls=$(errclass "$out")
	if ((rc == 0)); then
		cls="(succeeded)"
		failn "$desc fails ($want)" "command: ctr $* succeeded" "$out"
	elif [[ $cls == "$want" ]]; then
		pass "$desc fails ($want)"
		printf '# %s\n' "$(printf '%s\n' "$out" | tail -n 1)"
	else
		failn "$desc fails ($want)" "command: ctr $* (status $rc)" "$out"
		diag "$tag"
	fi
	echo "${desc#*: }: $cls" >>"$outfile"
}

# alive TAG LABEL: containerd (and on strata the snapshotter) still run;
# the scenario stops when one died.
alive() {
	local tag=$1 label=$2
	if ! is_running "${CTD_PID[$tag]:-0}"; then
		failn "$label: containerd died" "$(tail -n 15 "${CTD_DIR[$tag]}/ctd.log")"
		return 1
	fi
	if [[ -n ${CTD_PROXY[$tag]} ]] && ! is_running "${SNAP_PID:-0}"; then
		failn "$label: the strata snapshotter died" "$(tail -n 15 "$SNAP_LOGFILE")"
		return 1
	fi
}

# snapmount TAG SNAP LABEL NAME KEY TARGET: `ctr snapshots mounts` of KEY,
# its shape saved as W/TAG.shape.NAME (for the comparison); mounted at
# TARGET.  Returns 1 (after a failed case) when it cannot be mounted.
snapmount() {
	local tag=$1 snap=$2 label=$3 name=$4 key=$5 target=$6 out
	mkdir -p "$target"
	if ! out=$(c "$tag" snapshots --snapshotter "$snap" mounts "$target" "$key" 2>&1); then
		failn "$label: ctr snapshots mounts of $key ($name)" "$out"
		diag "$tag"
		return 1
	fi
	printf '%s\n' "$out" >"$W/$tag.mounts.$name"
	python3 "$TOOL" mountshape <<<"$out" >"$W/$tag.shape.$name"
	printf '# %s mounts of %s: %s (other options: %s)\n' "$label" "$name" \
		"$(paste -sd';' "$W/$tag.shape.$name")" "$(python3 "$TOOL" mountextra <<<"$out" | paste -sd';')"
	if out=$(mount_lines <<<"$out" 2>&1); then
		pass "$label: the mounts of $key ($name) mount"
	else
		failn "$label: the mounts of $key ($name) mount" "$out" "$(cat "$W/$tag.mounts.$name")"
		return 1
	fi
}

# rm_all TAG SNAP LABEL: every container, snapshot made by hand (what an
# earlier failure left), and image removed; waits (up to 20 s) for
# containerd's garbage collection to remove every snapshot and content blob.
rm_all() {
	local tag=$1 snap=$2 label=$3 k
	local -a ids
	mapfile -t ids < <(c "$tag" containers ls -q)
	((${#ids[@]} == 0)) || ccheck "$tag" "$label: ctr containers rm every container" containers rm "${ids[@]}"
	for _ in 1 2 3 4; do
		mapfile -t ids < <(snaps_ls "$tag" "$snap" | awk '$1 !~ /^sha256:/ {print $1}')
		((${#ids[@]})) || break
		echo "# $label: removing snapshots left: ${ids[*]}"
		for k in "${ids[@]}"; do c "$tag" snapshots --snapshotter "$snap" rm "$k" >/dev/null 2>&1; done
	done
	images_gc "$tag" "$snap" "$label"
	is "$label: and no content" "$(c "$tag" content ls -q 2>&1)" ""
	is "$label: and no lease" "$(c "$tag" leases ls -q 2>&1)" ""
}

# check_store_empty TAG LABEL: the snapshotter's own store holds nothing.
check_store_empty() {
	local tag=$1 label=$2 out rc
	if [[ -z ${CTD_PROXY[$tag]} ]]; then
		local s=${CTD_DIR[$tag]}/root/io.containerd.snapshotter.v1.overlayfs/snapshots
		is "$label: no snapshot dir left in overlayfs's store" "$(find "$s" -mindepth 1 -maxdepth 1 2>&1)" ""
	else
		out=$("$STRATA" --root "$R" check 2>&1)
		rc=$?
		is "$label: strata check of the store: nothing to say, status 0" "$rc: $out" "0: "
		is "$label: no layer dir left under the store's diff/" "$(find "$R/diff" -mindepth 1 -maxdepth 1 2>&1)" ""
		is "$label: nothing mounted under the store" "$(mounts_under "$R")" ""
	fi
	is "$label: nothing mounted under containerd's dirs" "$(mounts_under "${CTD_DIR[$tag]}")" ""
}

# ---------------------------------------------------------------- the scenario

# scenario TAG SNAP: TAG "o" is containerd's overlayfs snapshotter, "s"
# strata through the proxy plugin.  Leaves what the two must agree on in
# $W/TAG.*.
scenario() {
	local tag=$1 snap=$2 label out rc i mnt=$TEST_TMP/m$1
	label=$snap
	echo "# ---- $label"
	if [[ $snap == strata ]]; then
		if ! snap_start "$R" "$SNAP_SOCKET" "$SNAP_LOGFILE"; then
			failn "$label: strata snapshotter starts and says it serves" "$(tail -n 15 "$SNAP_LOGFILE")"
			return 1
		fi
		pass "$label: strata snapshotter starts and says it serves"
		ctd_start "$tag" "$TEST_TMP/$tag" "$SNAP_SOCKET"
	else
		ctd_start "$tag" "$TEST_TMP/$tag"
	fi || {
		fail "$label: containerd starts"
		return 1
	}
	pass "$label: containerd starts"
	c "$tag" plugins ls 2>&1 | awk -v s="$snap" '$1 == "io.containerd.snapshotter.v1" && $2 == s { print $NF }' \
		>"$W/$tag.plugin"
	is "$label: ctr plugins ls has the snapshotter, ok" "$(cat "$W/$tag.plugin")" "ok"

	# -------- import and run
	ccheck "$tag" "$label: ctr images import (3 layers, one gzip)" \
		images import --snapshotter "$snap" --index-name "$IDX" "$W/busybox.tar" || return 1
	is "$label: ctr images ls has the image and its index" \
		"$(c "$tag" images ls -q 2>&1 | LC_ALL=C sort)" "$(printf '%s\n' "$IMG" "$IDX" | LC_ALL=C sort)"
	snaps_ls "$tag" "$snap" >"$W/$tag.ls.import" 2>&1
	is "$label: the snapshots are the chain ids, committed, each on the one below" "$(cat "$W/$tag.ls.import")" \
		"$(printf '%s - Committed\n%s %s Committed\n%s %s Committed' "${CHAIN[0]}" "${CHAIN[1]}" "${CHAIN[0]}" "${CHAIN[2]}" "${CHAIN[1]}" |
			LC_ALL=C sort)"
	alive "$tag" "$label" || return 1

	crun "$tag" "$snap" --rm "$IMG" "$tag-ls" sh -c "$CTD_LIST" >"$W/$tag.rootfs.raw" 2>"$W/stderr"
	rc=$?
	LC_ALL=C sort "$W/$tag.rootfs.raw" >"$W/$tag.rootfs"
	if ((rc == 0)) && [[ -s $W/$tag.rootfs ]]; then
		pass "$label: ctr run --rm lists the root filesystem"
		if out=$(diff "$W/model" "$W/$tag.rootfs"); then
			pass "$label: it is the image's layers applied in order ($(wc -l <"$W/model") entries: types, modes, owners, sizes, links, contents)"
		else
			failn "$label: it is the image's layers applied in order" "diff model $label:" "$(head -n 30 <<<"$out")"
		fi
	else
		failn "$label: ctr run --rm lists the root filesystem" "status $rc" "$(tail -n 10 "$W/stderr")"
		diag "$tag"
	fi
	runis "$tag" "$snap" "$label: whiteout, opaque dir, owner, setuid, symlink, hardlink as the layers say" \
		"$FACTS_OUT" "$IMG" "$tag-facts" sh -c "$FACTS"
	runis "$tag" "$snap" "$label: ctr run of the index's image" "keep2" "$IDX" "$tag-idx" cat /data/keep
	alive "$tag" "$label" || return 1

	# -------- a container that changes things, kept (no --rm)
	if out=$(crun "$tag" "$snap" "$IMG" "$tag-w" sh -c "$CTD_MODIFY" 2>&1) && [[ $out == "done" ]]; then
		pass "$label: ctr run (no --rm) of a container that writes, deletes and renames"
	else
		failn "$label: ctr run (no --rm) of a container that writes, deletes and renames" "$out"
		diag "$tag"
	fi
	is "$label: its snapshot lingers, active, on the image's top" \
		"$(snaps_ls "$tag" "$snap" 2>&1 | grep "^$tag-w ")" "$tag-w $TOP Active"
	if snapmount "$tag" "$snap" "$label" container "$tag-w" "$mnt/w"; then
		is "$label: its mount shows the changes" "$(modified_view "$mnt/w")" "$CTD_MODIFIED"
		umount_target "$label" "$mnt/w"
	fi
	if c "$tag" snapshots --snapshotter "$snap" diff --media-type application/vnd.oci.image.layer.v1.tar \
		"$tag-w" >"$W/$tag.wdiff.tar" 2>"$W/stderr"; then
		pass "$label: ctr snapshots diff of the container's snapshot"
		python3 "$TOOL" listing "$W/$tag.wdiff.tar" >"$W/$tag.wdiff" 2>&1
		is "$label: the diff has exactly the container's changes" "$(awk '{print $1}' "$W/$tag.wdiff")" \
			"$MODIFY_DIFF_NAMES"
		is "$label: the diff's owners, modes and contents" \
			"$(grep -E '^data/(l3|suid|made|new|newlink|hard|\.wh\.keep) ' "$W/$tag.wdiff" | awk '{print $1, $2, $3, $4, $5, $6}')" \
			"data/.wh.keep 0 0 0:0 0 -
data/hard 0 644 0:0 10 -
data/l3 0 644 1000:1000 12 -
data/made 5 750 0:0 0 -
data/new 0 644 0:0 4 -
data/newlink 2 777 0:0 0 new
data/suid 0 700 0:0 20 -"
	else
		failn "$label: ctr snapshots diff of the container's snapshot" "$(tail -n 10 "$W/stderr")"
		diag "$tag"
	fi
	ccheck "$tag" "$label: ctr containers rm of the kept container" containers rm "$tag-w"
	is "$label: its snapshot went with it" "$(snaps_ls "$tag" "$snap" 2>&1 | grep -c "^$tag-w ")" 0
	alive "$tag" "$label" || return 1

	# -------- containers in parallel
	local pids=() bad=""
	for i in 1 2 3 4 5 6; do
		crun "$tag" "$snap" --rm "$IMG" "$tag-p$i" sh -c "echo $i >/data/p; cat /data/p /data/keep" \
			>"$W/$tag.par$i" 2>&1 &
		pids+=($!)
	done
	for i in 1 2 3 4 5 6; do
		wait "${pids[i - 1]}" || bad+=" run $i failed: $(tail -n 3 "$W/$tag.par$i");"
		[[ $(cat "$W/$tag.par$i") == "$i"$'\n'keep2 ]] || bad+=" run $i printed: $(head -c 300 "$W/$tag.par$i");"
	done
	is "$label: six ctr run --rm in parallel" "$bad" ""
	is "$label: no container snapshot left after them" "$(snaps_ls "$tag" "$snap" 2>&1 | grep -v '^sha256:')" ""
	alive "$tag" "$label" || return 1

	# -------- ctr snapshots, verb by verb
	local S=(snapshots --snapshotter "$snap") err=$W/$tag.errors
	: >"$err"
	ccheck "$tag" "$label: ctr snapshots prepare a1 on the image's top" "${S[@]}" prepare a1 "$TOP"
	if snapmount "$tag" "$snap" "$label" active a1 "$mnt/a1"; then
		out=$(
			set -e
			cd "$mnt/a1/data"
			cat keep
			ls opq
			echo through >through
			rm l3
			mkdir newdir
			echo x >newdir/f
			cat through
		)
		is "$label: read and write through a1's mounts" "$out" "keep2
new
through"
		umount_target "$label" "$mnt/a1"
	fi
	ccheck "$tag" "$label: ctr snapshots commit c1 a1" "${S[@]}" commit c1 a1
	c "$tag" "${S[@]}" info c1 2>&1 | python3 "$TOOL" info >"$W/$tag.info.c1" 2>&1
	is "$label: ctr snapshots info c1: committed, on the image's top" "$(cat "$W/$tag.info.c1")" \
		"Kind=Committed Name=c1 Parent=$TOP Labels=containerd.io/gc.root=*"
	is "$label: a1 is gone once committed" "$(snaps_ls "$tag" "$snap" | grep -c '^a1 ')" 0
	ccheck "$tag" "$label: ctr snapshots view v1 c1" "${S[@]}" view v1 c1
	# ctr labels what it prepares as a root for the garbage collector, not
	# its views: the next collection would take them.
	ccheck "$tag" "$label: ctr snapshots label v1 as a gc root" "${S[@]}" label v1 containerd.io/gc.root=strata-it
	if snapmount "$tag" "$snap" "$label" view v1 "$mnt/v1"; then
		out=$(
			cd "$mnt/v1/data" || exit 1
			cat through newdir/f keep
			[ -e l3 ] && echo "l3 still there"
			touch try 2>&1 | sed 's/.*: //'
		)
		is "$label: the view has c1's content, read-only" "$out" "through
x
keep2
Read-only file system"
		umount_target "$label" "$mnt/v1"
	fi
	ccheck "$tag" "$label: ctr snapshots prepare b1 with no parent" "${S[@]}" prepare b1 ""
	if snapmount "$tag" "$snap" "$label" base b1 "$mnt/b1"; then
		out=$(
			set -e
			echo base >"$mnt/b1/f"
			mkdir "$mnt/b1/d"
			ls "$mnt/b1"
		)
		is "$label: write into the empty base b1" "$out" "d
f"
		umount_target "$label" "$mnt/b1"
	fi
	ccheck "$tag" "$label: ctr snapshots commit bc1 b1" "${S[@]}" commit bc1 b1
	ccheck "$tag" "$label: ctr snapshots view vb bc1" "${S[@]}" view vb bc1
	ccheck "$tag" "$label: ctr snapshots label vb as a gc root" "${S[@]}" label vb containerd.io/gc.root=strata-it
	if snapmount "$tag" "$snap" "$label" baseview vb "$mnt/vb"; then
		out=$(
			cat "$mnt/vb/f"
			touch "$mnt/vb/try" 2>&1 | sed 's/.*: //'
		)
		is "$label: the view of bc1 has its file, read-only" "$out" "base
Read-only file system"
		umount_target "$label" "$mnt/vb"
	fi
	c "$tag" "${S[@]}" usage -b c1 bc1 2>&1 | awk 'NR > 1 {print $1, $3}' >"$W/$tag.usage"
	printf '# %s usage: %s\n' "$label" "$(c "$tag" "${S[@]}" usage -b c1 bc1 2>&1 | tail -n +2 | paste -sd';')"
	is "$label: ctr snapshots usage counts c1's and bc1's inodes" "$(cut -d' ' -f1 "$W/$tag.usage" | paste -sd' ')" "c1 bc1"
	ccheck "$tag" "$label: ctr snapshots label c1" "${S[@]}" label c1 strata.it/x=1 strata.it/y=2
	c "$tag" "${S[@]}" info c1 2>&1 | python3 "$TOOL" info >"$W/$tag.info.c1l" 2>&1
	is "$label: info shows the labels" "$(cat "$W/$tag.info.c1l")" \
		"Kind=Committed Name=c1 Parent=$TOP Labels=containerd.io/gc.root=*,strata.it/x=1,strata.it/y=2"
	ccheck "$tag" "$label: ctr snapshots label c1 key= (removes it)" "${S[@]}" label c1 strata.it/x=
	c "$tag" "${S[@]}" info c1 2>&1 | python3 "$TOOL" info >"$W/$tag.info.c1u" 2>&1
	is "$label: info shows it gone" "$(cat "$W/$tag.info.c1u")" \
		"Kind=Committed Name=c1 Parent=$TOP Labels=containerd.io/gc.root=*,strata.it/y=2"
	c "$tag" "${S[@]}" info v1 2>&1 | python3 "$TOOL" info >"$W/$tag.info.v1" 2>&1
	is "$label: ctr snapshots info of the view" "$(cat "$W/$tag.info.v1")" \
		"Kind=View Name=v1 Parent=c1 Labels=containerd.io/gc.root=*"
	if c "$tag" "${S[@]}" diff --media-type application/vnd.oci.image.layer.v1.tar c1 >"$W/$tag.c1diff.tar" 2>"$W/stderr"; then
		python3 "$TOOL" listing "$W/$tag.c1diff.tar" >"$W/$tag.c1diff" 2>&1
		is "$label: ctr snapshots diff of the committed c1" "$(awk '{print $1, $2, $5}' "$W/$tag.c1diff")" "data 5 0
data/.wh.l3 0 0
data/newdir 5 0
data/newdir/f 0 2
data/through 0 8"
	else
		failn "$label: ctr snapshots diff of the committed c1" "$(tail -n 10 "$W/stderr")"
		diag "$tag"
	fi
	c "$tag" "${S[@]}" tree >"$W/$tag.tree" 2>&1
	is "$label: ctr snapshots tree" "$(cat "$W/$tag.tree")" " bc1
  \\_ vb
 ${CHAIN[0]}
  \\_ ${CHAIN[1]}
    \\_ $TOP
      \\_ c1
        \\_ v1"
	snaps_ls "$tag" "$snap" >"$W/$tag.ls.api" 2>&1
	is "$label: ctr snapshots ls" "$(cat "$W/$tag.ls.api")" "$(printf '%s\n' "bc1 - Committed" "c1 $TOP Committed" "v1 c1 View" \
		"vb bc1 View" "$(cat "$W/$tag.ls.import")" | LC_ALL=C sort)"
	alive "$tag" "$label" || return 1

	# errors
	ccheck "$tag" "$label: ctr snapshots prepare a2 on the image's top" "${S[@]}" prepare a2 "$TOP"
	cfail "$tag" "$label: prepare with a key that exists" "already exists" "$err" "${S[@]}" prepare a2 "$TOP"
	cfail "$tag" "$label: commit to a name that exists" "already exists" "$err" "${S[@]}" commit c1 a2
	cfail "$tag" "$label: commit of a view" "failed precondition" "$err" "${S[@]}" commit c2 v1
	cfail "$tag" "$label: commit of a committed snapshot" "failed precondition" "$err" "${S[@]}" commit c2 c1
	cfail "$tag" "$label: prepare on an active (not committed) parent" "invalid argument" "$err" "${S[@]}" prepare a3 a2
	cfail "$tag" "$label: view of an active parent" "invalid argument" "$err" "${S[@]}" view v3 a2
	cfail "$tag" "$label: prepare on a parent that does not exist" "not found" "$err" "${S[@]}" prepare a4 nosuch
	cfail "$tag" "$label: rm of a snapshot with children" "failed precondition" "$err" "${S[@]}" rm "$TOP"
	cfail "$tag" "$label: rm of c1 (it has the view v1)" "failed precondition" "$err" "${S[@]}" rm c1
	cfail "$tag" "$label: rm of a snapshot that does not exist" "not found" "$err" "${S[@]}" rm nosuch
	cfail "$tag" "$label: mounts of a snapshot that does not exist" "not found" "$err" "${S[@]}" mounts "$mnt/x" nosuch
	cfail "$tag" "$label: info of a snapshot that does not exist" "not found" "$err" "${S[@]}" info nosuch
	is "$label: the failed calls changed nothing" "$(snaps_ls "$tag" "$snap" 2>&1 | grep -v '^a2 ')" "$(cat "$W/$tag.ls.api")"
	ccheck "$tag" "$label: ctr snapshots rm of the views and a2" "${S[@]}" rm v1 vb a2
	ccheck "$tag" "$label: ctr snapshots rm of c1 and bc1 (no children left)" "${S[@]}" rm c1 bc1
	is "$label: ls is back to the image's snapshots" "$(snaps_ls "$tag" "$snap" 2>&1)" "$(cat "$W/$tag.ls.import")"
	is "$label: nothing left mounted under the test's mount points" "$(mounts_under "$mnt")" ""
	alive "$tag" "$label" || return 1

	# -------- garbage collection down to an empty store
	rm_all "$tag" "$snap" "$label"
	check_store_empty "$tag" "$label"
	alive "$tag" "$label" || return 1

	# -------- containerd restarted with an image in the store
	ccheck "$tag" "$label: import again" images import --snapshotter "$snap" "$W/busybox.tar"
	alive "$tag" "$label" || return 1
	ctd_stop "$tag"
	is "$label: containerd exits 0 on SIGTERM" "$CTD_STOP_RC" 0
	if ! ctd_start "$tag" "$TEST_TMP/$tag" "${CTD_PROXY[$tag]}"; then
		fail "$label: containerd starts again"
		return 1
	fi
	pass "$label: containerd starts again"
	runis "$tag" "$snap" "$label: the image runs after containerd's restart" "keep2" "$IMG" "$tag-r1" cat /data/keep

	# -------- a pull from the local registry
	if [[ -n $REG ]]; then
		ccheck "$tag" "$label: ctr images pull --plain-http from the local registry" \
			images pull --plain-http --snapshotter "$snap" "$REG"
		local pulled
		pulled=$(snaps_ls "$tag" "$snap" 2>&1 | wc -l)
		is "$label: the pull unpacked the image's five layers" "$pulled" \
			"$(($(wc -l <"$W/$tag.ls.import") + 5))"
		runis "$tag" "$snap" "$label: the pulled image runs" "layer 3" "$REG" "$tag-pull" cat /big/top
		ccheck "$tag" "$label: ctr images rm of the pulled image" images rm --sync "$REG"
		# Its snapshots gone (containerd's GC) before anything goes on:
		# the kill test below imports the same layers and must unpack them.
		local i
		for ((i = 0; i < 200; i++)); do
			(($(snaps_ls "$tag" "$snap" 2>&1 | wc -l) == $(wc -l <"$W/$tag.ls.import"))) && break
			sleep 0.1
		done
		is "$label: after its removal, the pulled image's snapshots are collected" \
			"$(snaps_ls "$tag" "$snap" 2>&1)" "$(cat "$W/$tag.ls.import")"
	fi

	if [[ $snap == strata ]]; then
		# -------- the snapshotter restarted under a running containerd
		snap_stop
		is "$label: strata snapshotter exits 0 on SIGTERM" "$SNAP_RC" 0
		if snap_start "$R" "$SNAP_SOCKET" "$SNAP_LOGFILE"; then
			pass "$label: strata snapshotter starts again on the same store"
			if snap_ready "$tag" 20; then
				pass "$label: containerd reaches it again"
			else
				fail "$label: containerd reaches it again" "$(c "$tag" snapshots --snapshotter strata ls 2>&1 | tail -n 3)"
			fi
			is "$label: the snapshots are still there" "$(snaps_ls "$tag" "$snap" 2>&1)" "$(cat "$W/$tag.ls.import")"
			runis "$tag" "$snap" "$label: the image runs after the snapshotter's restart" "$FACTS_OUT" \
				"$IMG" "$tag-r2" sh -c "$FACTS"
			alive "$tag" "$label" || return 1
		else
			fail "$label: strata snapshotter starts again on the same store"
			return 1
		fi

		# -------- the snapshotter killed (SIGKILL) during an import
		alive "$tag" "$label" || return 1
		local store_n=0 before
		before=$(find "$R/diff" -mindepth 1 -maxdepth 1 | wc -l)
		c "$tag" images import --snapshotter "$snap" "$W/big.tar" >"$W/big.import1" 2>&1 &
		local imp=$!
		# Kill once the import has made a layer of its own in the store.
		for ((i = 0; i < 600; i++)); do
			store_n=$(find "$R/diff" -mindepth 1 -maxdepth 1 | wc -l)
			((store_n > before + 1)) && break
			is_running "$imp" || break
			sleep 0.02
		done
		local was_running=no
		is_running "$SNAP_PID" && was_running=yes
		snap_kill
		wait "$imp"
		rc=$?
		echo "# the import was at $((store_n - before)) new layer dir(s) when the snapshotter was killed; it exited $rc:" \
			"$(tail -n 2 "$W/big.import1" | paste -sd' ' | cut -c1-600)"
		if [[ $was_running == no ]]; then
			failn "$label: an import during which the snapshotter is killed fails" \
				"the snapshotter had died by itself before the kill:" "$(tail -n 10 "$SNAP_LOGFILE")"
		elif ((rc == 0)); then
			fail "$label: an import during which the snapshotter is killed fails" \
				"it succeeded: the kill came too late ($((store_n - before)) new layer dirs then)"
		else
			pass "$label: an import during which the snapshotter is killed fails"
		fi
		if snap_start "$R" "$SNAP_SOCKET" "$SNAP_LOGFILE"; then
			pass "$label: strata snapshotter starts again after SIGKILL (its stale socket there)"
		else
			fail "$label: strata snapshotter starts again after SIGKILL (its stale socket there)"
			return 1
		fi
		snap_ready "$tag" 20 || fail "$label: containerd reaches it after the crash"
		out=$("$STRATA" --root "$R" check 2>&1)
		is "$label: strata check after the crash and restart: nothing to say, status 0" "$?: $out" "0: "
		ccheck "$tag" "$label: the import again" images import --snapshotter "$snap" "$W/big.tar"
		alive "$tag" "$label" || return 1
		runis "$tag" "$snap" "$label: the imported image runs" "layer 3" "$BIG" "$tag-big" cat /big/top
		runis "$tag" "$snap" "$label: the other image still runs" "keep2" "$IMG" "$tag-r3" cat /data/keep
	fi

	alive "$tag" "$label" || return 1
	rm_all "$tag" "$snap" "$label, after the restarts"
	check_store_empty "$tag" "$label, after the restarts"
	ctd_stop "$tag"
	is "$label: containerd exits 0 on SIGTERM at the end" "$CTD_STOP_RC" 0
	if [[ $snap == strata ]]; then
		snap_stop
		is "$label: strata snapshotter exits 0 on SIGTERM at the end" "$SNAP_RC" 0
		out=$("$STRATA" --root "$R" check 2>&1)
		is "$label: strata check of the store once stopped: nothing to say, status 0" "$?: $out" "0: "
	fi
	is "$label: no overlay mounted under the scratch dir once stopped" \
		"$(findmnt -rn -t overlay -o TARGET,OPTIONS | grep -F "$TEST_TMP/" || true)" ""
}

# ---------------------------------------------------------------- overlayfs

scenario o overlayfs

# ---------------------------------------------------------------- strata

if ! "$STRATA" snapshotter --help >/dev/null 2>&1; then
	fail "strata has a snapshotter verb" "$("$STRATA" snapshotter --help 2>&1 | head -n 3)"
else
	scenario s strata
fi

# ---------------------------------------------------------------- both agree

# same NAME DESC: W/o.NAME and W/s.NAME are the same (and not empty).
same() {
	local name=$1 desc=$2 out
	if [[ ! -s $W/o.$name ]]; then
		fail "both: $desc" "no overlayfs result (W/o.$name): its scenario stopped early"
	elif [[ ! -s $W/s.$name ]]; then
		fail "both: $desc" "no strata result (W/s.$name): its scenario stopped early"
	elif out=$(diff "$W/o.$name" "$W/s.$name"); then
		pass "both: $desc"
	else
		failn "both: $desc" "diff overlayfs strata:" "$(head -n 30 <<<"$out")"
	fi
}

same plugin "the plugin is loaded and ok"
same ls.import "the same snapshots after the import"
same rootfs "the same root filesystem in a container (types, modes, owners, sizes, links, contents)"
same wdiff "the same diff of a container's changes (names, types, modes, owners, sizes, contents)"
same shape.container "the same shape of a container's mounts"
same shape.active "the same shape of an active snapshot's mounts on the image"
same shape.view "the same shape of a view's mounts"
same shape.base "the same shape of an active snapshot's mounts with no parent"
same shape.baseview "the same shape of a view's mounts on a one-layer parent"
same info.c1l "the same info of a labelled snapshot"
same info.v1 "the same info of a view"
same c1diff "the same diff of a committed snapshot"
same tree "the same ctr snapshots tree"
same ls.api "the same ctr snapshots ls"
same errors "the same error classes for the failing calls"
# Inodes as the snapshotters count them (overlayfs counts its upper dir's
# inodes, itself included); sizes are in disk blocks and may differ.
same usage "the same inode counts in ctr snapshots usage"
