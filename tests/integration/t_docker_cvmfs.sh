#!/usr/bin/env bash
# Thin images from a REAL CernVM-FS repository through a real dockerd on
# strata (`strata serve`), thin.publisher=cvmfs:
#   - a busybox image and a multi-layer image (whiteouts at several depths,
#     an opaque dir, owners 1000:1000, setuid, symlinks, a hardlink, an
#     empty RUN) built with `docker build --network=none` on overlay2 in a
#     second dockerd (O), loaded into the dockerd on strata (A), published
#     with `strata --root <A's store> thin make --publisher cvmfs`, and the
#     thin.json imported: `docker run` shows exactly what O shows of the
#     original (type, mode, owner, size, sha256, link target of every file);
#   - `docker commit` and a 3-step `docker build` on the thin image in A
#     publish through CernVM-FS (one ingest each) and run at once; the same
#     on overlay2 in O gives the same files;
#   - then, A and its store deleted, a fresh store, a fresh dockerd (B) and a
#     fresh client mount of the repository (setup --client-root, its own
#     empty cache) run the built image from CernVM-FS alone (docker load of
#     A's save, and docker import of its thin.json).
# The repository is strata-dk.test, made by ../shared/cvmfs/setup and
# removed by its teardown at the end, whatever happened.
#
#   STRATA_BIN=build/strata bash tests/integration/t_docker_cvmfs.sh   (~4 min)
# Needs root, /usr/sbin/dockerd, /usr/bin/docker, /bin/busybox and the
# CernVM-FS bundle (STRATA_SHARED, else the checkout's ../shared, else
# /work/shared); skipped without them.
# shellcheck source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/docker_lib.sh"

REPO=strata-dk.test
TOP=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${STRATA_SHARED:-$TOP/../shared}
[ -x "$SHARED/cvmfs/setup" ] || SHARED=/work/shared
if [ ! -x "$SHARED/cvmfs/setup" ]; then
	echo "ok 1 # SKIP no CernVM-FS bundle: neither \$STRATA_SHARED, $TOP/../shared nor /work/shared has cvmfs/setup"
	T_N=1
	exit 0
fi

docker_test_init "docker cvmfs tests"
SETUP_DONE=false
# After docker_test_init's trap: the daemons first, then the repository.
dcv_exit() {
	local rc=$?
	trap - INT TERM HUP
	dk_stop_all
	# The repository and its client mounts (under the scratch dir too),
	# once the unions on them are gone with the daemons.
	if $SETUP_DONE; then
		cvmfs_server abort -f "$REPO" >/dev/null 2>&1
		"$SHARED/cvmfs/teardown" --repo "$REPO" 2>"$TEST_TMP/teardown.err" || {
			echo "# teardown failed:"
			sed 's/^/#   /' "$TEST_TMP/teardown.err"
		}
	fi
	unmount_under "$TEST_TMP"
	(exit "$rc")
	fixture_exit
}
trap dcv_exit EXIT

PA=strata-dcv-$$-a # plugin of the dockerd with the publisher
PB=strata-dcv-$$-b # plugin of the fresh dockerd
LOG_A=$TEST_TMP/plugin-a.log
LOG_B=$TEST_TMP/plugin-b.log
: >"$LOG_A"
: >"$LOG_B"
declare -A PLOG=([$PA]=$LOG_A [$PB]=$LOG_B)

# ---------------------------------------------------------------- helpers

diag_logs() {
	local tag=$1 drv=${DK_DRIVER[$1]:-}
	echo "# --- dockerd ($tag) log, last lines:"
	tail -n 15 "${DK_DIR[$tag]}/dockerd.log" 2>/dev/null | sed 's/^/#   /'
	if [[ -n ${PLOG[$drv]:-} ]]; then
		echo "# --- plugin $drv log, last lines:"
		tail -n 15 "${PLOG[$drv]}" | sed 's/^/#   /'
	fi
}

# start TAG PLUGIN DOCKERD-ARGS...: the plugin, then dockerd on it.
start() {
	local tag=$1 drv=$2
	shift 2
	plugin_start "$drv" "${PLOG[$drv]}" || return 1
	dk_start "$tag" "$TEST_TMP/$tag" "$drv" "$@"
}

layer_dir() { dk "$1" image inspect --format '{{.GraphDriver.Data.DiffDir}}' "$2"; }

# What a container of the image shows: every entry but Docker's own mounts,
# with type, mode, owner, size and sha256 (files), target (symlinks).
# Runs in the container (busybox).
# shellcheck disable=SC2016
LIST='cd / && find . -xdev ! -path . | while read -r p; do
	case $p in ./proc | ./sys | ./dev | ./etc/hostname | ./etc/hosts | ./etc/resolv.conf | ./.dockerenv) continue ;; esac
	l="$p $(stat -c "%F %a %u:%g" "$p")"
	if [ -L "$p" ]; then l="$l -> $(readlink "$p")"
	elif [ -f "$p" ]; then l="$l $(stat -c %s "$p") $(sha256sum <"$p" | cut -c1-64)"; fi
	echo "$l"
done | sort'

# listing TAG IMAGE OUT: LIST in a container of IMAGE.
listing() {
	dk "$1" run --rm --network none "$2" sh -c "$LIST" >"$3" 2>"$3.err"
}

# same_listing DESC FILE-A FILE-B
same_listing() {
	if [[ ! -s $2 || ! -s $3 ]]; then
		failn "$1" "empty listing: $(wc -l <"$2") / $(wc -l <"$3") lines" "$(cat "$2.err" "$3.err" 2>/dev/null | head -n 5)"
	elif diff -u "$2" "$3" >"$W/listing.diff"; then
		pass "$1 ($(wc -l <"$2") entries)"
	else
		failn "$1" "$(head -n 30 "$W/listing.diff")"
	fi
}

# The layers the repository holds (.layers/<hh>/<name>), through a client.
repo_layers() {
	find "$1/$REPO/.layers" -mindepth 2 -maxdepth 2 -type d -printf '%f\n' 2>/dev/null | LC_ALL=C sort
}

# thin_of TAG IMAGE OUT: the thin.json of IMAGE's top layer (or nothing).
thin_of() {
	local d
	d=$(layer_dir "$1" "$2") && cp "$d/thin.json" "$3" 2>/dev/null
}

jlayers() {
	python3 -c 'import json, sys
for l in json.load(open(sys.argv[1]))["layers"]: print(l["digest"], l["url"])' "$1"
}

# ---------------------------------------------------------------- the repository

# The repository's name is this test's own: one left by a run killed before
# its trap ran (or by a reboot, with its FUSE daemons gone) is torn down first.
if [ -d "/etc/cvmfs/repositories.d/$REPO" ]; then
	echo "# $REPO is left from an earlier run: teardown first"
	"$SHARED/cvmfs/teardown" --repo "$REPO" 2>&1 | sed 's/^/#   /'
fi
if ! out=$("$SHARED/cvmfs/setup" --repo "$REPO" 2>"$W/setup.err"); then
	failn "setup --repo $REPO" "$(tail -n 5 "$W/setup.err")"
	exit 1
fi
SETUP_DONE=true
eval "$out"
pass "setup --repo $REPO: repository and client at $CVMFS_CLIENT_MOUNT"
C1=$CVMFS_CLIENT_ROOT
REMOUNT="cvmfs_talk -p $CVMFS_TALK_SOCKET remount sync"

# ---------------------------------------------------------------- O: the images on overlay2

echo "# ---- dockerd O on overlay2: the images, built"
if ! dk_start o "$TEST_TMP/o"; then
	fail "dockerd on overlay2 starts"
	exit 1
fi
pass "dockerd on overlay2 starts"
busybox_rootfs "$W/rootfs"
find "$W/rootfs" -exec touch -h -d '2020-01-02 03:04:05' {} +
tar --numeric-owner -C "$W/rootfs" -cf "$W/rootfs.tar" .
dcheck o "docker import busybox" import "$W/rootfs.tar" dcv/bb || exit 1
mkdir -p "$W/ctx"
cat >"$W/ctx/Dockerfile" <<'EOF'
FROM dcv/bb
RUN mkdir -p /data/a/b/c /data/opq/x/y /data/opq/sub/deeper /data/keep /home/user && \
	echo deep >/data/a/b/c/deep && echo f >/data/a/b/f && echo top >/data/a/top && echo gone >/data/gone && \
	echo y >/data/opq/x/y/f && echo s >/data/opq/sub/s && echo d >/data/opq/sub/deeper/d && echo h >/data/opq/h && \
	echo k >/data/keep/k && echo u >/home/user/u && chown -R 1000:1000 /home/user
RUN rm /data/a/b/c/deep /data/a/top /data/gone && rm -rf /data/opq && mkdir -p /data/opq/x /data/opq/sub && \
	echo n >/data/opq/x/n && printf '#!/bin/sh\necho suid\n' >/bin/suid && chmod 4755 /bin/suid && \
	ln -s /etc/passwd /data/abs && ln -s ../a/b /data/rel && ln -s /nowhere /data/dangling && \
	echo shared >/data/hl1 && ln /data/hl1 /data/hl2
RUN true
RUN rm /data/hl2 && echo mine >/home/user/mine && chown 1000:1000 /home/user/mine && rm -rf /data/keep && \
	echo a file now >/data/keep && chown 1000:1000 /data/a/b
EOF
dcheck o "docker build (overlay2): the multi-layer image" build --network=none -q -t dcv/multi "$W/ctx" || exit 1
# Docker keeps no layer for a step that changes nothing (RUN true): only
# its history says it was there.
is "the multi-layer image: 4 layers, 5 history entries (the empty RUN has no layer)" \
	"$(dk o image inspect --format '{{len .RootFS.Layers}}' dcv/multi) $(dk o history -q dcv/multi | wc -l)" "4 5"
dcheck o "docker save both" save -o "$W/images.tar" dcv/bb dcv/multi || exit 1
listing o dcv/bb "$W/o-bb.list"
listing o dcv/multi "$W/o-multi.list"
is "overlay2: the multi-layer image shows the opaque dir as built" "$(grep -c '^./data/opq' "$W/o-multi.list")" 4

# ---------------------------------------------------------------- A: dockerd on strata, publishing

echo "# ---- dockerd A on strata, thin.root = the client mount, thin.publisher=cvmfs"
if ! start a "$PA" --storage-opt "thin.root=$C1" --storage-opt "$PA.thin.publisher=cvmfs" \
	--storage-opt "thin.remount_cmd=$REMOUNT"; then
	fail "dockerd on strata starts with the cvmfs publisher"
	exit 1
fi
pass "dockerd on strata starts with the cvmfs publisher"
is "docker info: thin root and publisher" "$(driver_status a 'Thin Root') | $(driver_status a 'Thin Publisher')" "$C1 | cvmfs"
dcheck a "docker load both images into the dockerd on strata" load -i "$W/images.tar" || exit 1
STORE=$(dirname "$(dirname "$(layer_dir a dcv/multi)")")
sta() { "$STRATA" --root "$STORE" -o "thin.root=$C1" -o "thin.remount_cmd=$REMOUNT" "$@"; }
for img in bb multi; do
	top=$(basename "$(layer_dir a "dcv/$img")")
	mkdir -p "$W/$img.thin"
	if sta thin make --repo "$REPO" --publisher cvmfs "$top" >"$W/$img.thin/thin.json" 2>"$W/$img.make.err"; then
		pass "strata thin make --publisher cvmfs of $img's top layer ($(jlayers "$W/$img.thin/thin.json" | wc -l) layers)"
	else
		failn "strata thin make --publisher cvmfs of $img's top layer" "$(cat "$W/$img.make.err")"
	fi
	tar -C "$W/$img.thin" -cf "$W/$img.thin.tar" thin.json
done
is "multi's thin.json: 4 layers, the 3rd (its opaque dir flattened) at <digest>-<chain>" \
	"$(jlayers "$W/multi.thin/thin.json" | awk '{ n++; if ($2 ~ /-[0-9a-f]+\/layerfs$/) c = c " " n } END { print n c }')" "4 3"
is "the repository holds busybox's layer and multi's 3 others" "$(repo_layers "$C1" | wc -l)" 4
is "no .wh. name in the repository" "$(find "$C1/$REPO/.layers" -name '.wh.*' | wc -l)" 0
for img in bb multi; do
	dcheck a "docker import $img's thin.json" import "$W/$img.thin.tar" "dcv/$img-thin" || exit 1
	is "its layer in the store holds only thin.json" "$(ls -A "$(layer_dir a "dcv/$img-thin")")" thin.json
	listing a "dcv/$img-thin" "$W/a-$img.list"
	same_listing "docker run of the thin $img image (from CernVM-FS) shows what overlay2 shows of $img" \
		"$W/o-$img.list" "$W/a-$img.list"
done
dis a "the thin image runs the setuid script, busybox from the repository" "suid
$(sha256sum </bin/busybox)" run --rm --network none dcv/multi-thin sh -c '/bin/suid; sha256sum </bin/busybox'
alive a "publishing" || exit 1

# ---------------------------------------------------------------- commit and build, A and O

# shellcheck disable=SC2016
MODIFY='set -e
echo new >/data/new
echo more >>/data/hl1
rm /data/rel /data/a/b/f
rm -rf /data/opq && mkdir /data/opq && echo again >/data/opq/again
chmod 0600 /data/abs 2>/dev/null || true
mkdir -m 0750 /data/made && chown 1000:1000 /data/made'
cat >"$W/build.Dockerfile" <<'EOF'
FROM IMAGE
RUN echo one >/one && chown 1000:1000 /one
RUN rm /one && mkdir -p /data/a/b/c && echo two >/data/a/b/c/two && rm -rf /home/user
RUN echo three >/three && chmod 4711 /three
EOF
for t in o a; do
	img=dcv/multi
	[[ $t == a ]] && img=dcv/multi-thin
	dcheck "$t" "docker run a container that changes files ($t)" run --network none --name c1 "$img" sh -c "$MODIFY"
	before=$(repo_layers "$C1")
	dcheck "$t" "docker commit ($t)" commit c1 "$img:committed"
	[[ $t == a ]] && is "the commit published one layer through CernVM-FS" \
		"$(comm -13 <(echo "$before") <(repo_layers "$C1") | wc -l)" 1
	mkdir -p "$W/build-$t"
	sed "s,^FROM IMAGE,FROM $img:committed," "$W/build.Dockerfile" >"$W/build-$t/Dockerfile"
	before=$(repo_layers "$C1")
	dcheck "$t" "docker build, 3 steps, on the committed image ($t)" build --network=none -q -t "$img:built" "$W/build-$t"
	[[ $t == a ]] && is "the build published its 3 layers through CernVM-FS" \
		"$(comm -13 <(echo "$before") <(repo_layers "$C1") | wc -l)" 3
	listing "$t" "$img:committed" "$W/$t-committed.list"
	listing "$t" "$img:built" "$W/$t-built.list"
done
same_listing "the committed thin image runs at once: what overlay2's commit shows" "$W/o-committed.list" "$W/a-committed.list"
same_listing "the built thin image runs at once: what overlay2's build shows" "$W/o-built.list" "$W/a-built.list"
is "the built image's top layer in the store holds only thin.json" \
	"$(ls -A "$(layer_dir a dcv/multi-thin:built)")" thin.json
thin_of a dcv/multi-thin:built "$W/built.thin.json"
is "its thin.json lists 4 + 1 + 3 layers" "$(jlayers "$W/built.thin.json" | wc -l)" 8
mkdir -p "$W/builtjson"
cp "$W/built.thin.json" "$W/builtjson/thin.json"
tar -C "$W/builtjson" -cf "$W/built.thin.tar" thin.json
dcheck a "docker save the built thin image" save -o "$W/built.save.tar" dcv/multi-thin:built

# An empty commit on the thin image: Docker gets a tar of thin.json (with
# the empty layer on top, published as an empty layerfs) and keeps it.
dcheck a "docker run a container that changes nothing" run --network none --name e1 dcv/multi-thin true
dcheck a "docker commit of it (an empty layer)" commit e1 dcv/multi-thin:empty
thin_of a dcv/multi-thin:empty "$W/empty.thin.json"
u=$(jlayers "$W/empty.thin.json" | tail -n 1 | cut -d' ' -f2)
is "the empty layer is on top, in the repository as an empty layerfs" \
	"$(jlayers "$W/empty.thin.json" | wc -l) $(find "$C1/$REPO/${u#cvmfs://"$REPO"/}" | wc -l)" "5 1"
listing a dcv/multi-thin:empty "$W/a-empty.list"
same_listing "the image with the empty commit runs: what overlay2 shows of multi" "$W/o-multi.list" "$W/a-empty.list"
dcheck a "docker rm that container" rm e1
alive a "commit and build" || exit 1
dcheck a "docker rm the container" rm c1
stop a "dockerd on strata"
dk_stop o

# ---------------------------------------------------------------- B: fresh store, dockerd, client

echo "# ---- a fresh store, dockerd and client mount; A's store deleted"
rm -rf "$TEST_TMP/a"
C2=$TEST_TMP/client2
if ! out2=$("$SHARED/cvmfs/setup" --repo "$REPO" --client-root "$C2" 2>"$W/setup2.err"); then
	failn "setup --client-root: a second client mount" "$(tail -n 5 "$W/setup2.err")"
	exit 1
fi
sock2=$(sed -n 's/^CVMFS_TALK_SOCKET=//p' <<<"$out2")
is "a second client mount, with its own socket (own cache)" \
	"$(findmnt -rn -o FSTYPE -M "$C2/$REPO") $([[ -S $sock2 && $sock2 != "$CVMFS_TALK_SOCKET" ]] && echo own)" "fuse own"
if ! start b "$PB" --storage-opt "thin.root=$C2"; then
	fail "a fresh dockerd on a fresh store, thin root the new client"
	exit 1
fi
pass "a fresh dockerd on a fresh store, thin root the new client"
dcheck b "docker load the built thin image saved from A" load -i "$W/built.save.tar"
listing b dcv/multi-thin:built "$W/b-built.list"
same_listing "the loaded image runs from CernVM-FS alone: what overlay2's build shows" "$W/o-built.list" "$W/b-built.list"
dcheck b "docker import the built image's thin.json" import "$W/built.thin.tar" dcv/fromjson
listing b dcv/fromjson "$W/b-json.list"
same_listing "the imported thin.json runs from CernVM-FS alone: the same" "$W/o-built.list" "$W/b-json.list"
alive b "fresh" || exit 1
mapfile -t imgs < <(dk b images -q | sort -u)
((${#imgs[@]} == 0)) || dcheck b "docker rmi the images" rmi -f "${imgs[@]}"
is "docker info: the driver counts no layer, no mount" "$(driver_status b Layers) $(driver_status b Mounted)" "0 0"
stop b "fresh dockerd"

# ---------------------------------------------------------------- the end

is "no overlay mount of this test is left" "$(findmnt -rn -t overlay -o TARGET | grep -cF "$TEST_TMP/")" 0
is "the repository is not in a transaction" "$(cvmfs_server list | grep -F "$REPO (" | grep -c 'in transaction')" 0
errors=$(grep -h 'level=error' "$LOG_A" "$LOG_B" | head -n 20)
is "the plugins logged no level=error line" "$errors" ""
grep -h 'level=warn' "$LOG_A" "$LOG_B" | head -n 10 | sed 's/^/# plugin warning: /'
