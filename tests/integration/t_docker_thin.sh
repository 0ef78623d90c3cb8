#!/usr/bin/env bash
# Thin images (SPEC section 4) through a real dockerd and `strata serve`:
# a busybox root filesystem published into a repository with `strata thin
# make` (a directory publisher under the scratch dir stands for CernVM-FS),
# its thin.json imported with `docker import`, run, changed, diffed and
# committed (the commit publishes the container's layer and gives a thin
# image again), saved; then a fresh store and a fresh dockerd, with the
# first ones deleted, load and import it and run it from the repository
# alone.  Errors through Docker: a thin image whose layer is missing from
# the repository, a commit on a thin image with no publisher configured.
#
#   STRATA_BIN=build/strata bash tests/integration/t_docker_thin.sh    (~30 s)
# Needs root, /usr/sbin/dockerd, /usr/bin/docker and /bin/busybox (from
# busybox-static); skipped without them.  Plugins are named
# strata-thin-PID-a and -b; daemons, stores and the repository live under
# the scratch dir.  Everything started here is stopped by PID on exit
# (dockerd first: it calls the plugin's Cleanup), whatever happened.
# shellcheck source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/docker_lib.sh"

# W ($TEST_TMP/w): inputs and results.
docker_test_init "docker thin tests"
CV=$TEST_TMP/cvmfs # the thin root
REPO=$CV/repo.test # the repository, published into by a dir: publisher
mkdir -p "$REPO"
PA=strata-thin-$$-a # plugin of the first dockerd (with a publisher)
PB=strata-thin-$$-b # plugin of the fresh dockerd (without one)
LOG_A=$TEST_TMP/plugin-a.log
LOG_B=$TEST_TMP/plugin-b.log
: >"$LOG_A"
: >"$LOG_B"
declare -A PLOG=([$PA]=$LOG_A [$PB]=$LOG_B)

# ---------------------------------------------------------------- inputs

ROOTFS=$W/rootfs
busybox_rootfs "$ROOTFS"
echo "hello from a thin image" >"$ROOTFS/etc/motd"
mkdir -p "$ROOTFS/data/dir"
echo keep >"$ROOTFS/data/keep"
echo del >"$ROOTFS/data/del"
echo a >"$ROOTFS/data/dir/a"
echo mode >"$ROOTFS/data/mode"
chmod 0644 "$ROOTFS/data/mode"
# Whole-second mtimes in the past: a change made a moment later never
# shares the second (Docker compares directory mtimes).
find "$ROOTFS" -exec touch -h -d '2020-01-02 03:04:05' {} +
tar --numeric-owner -C "$ROOTFS" -cf "$W/rootfs.tar" .

# What the container does: writes, deletes, chmods.
MODIFY='set -e
echo new >/data/new
echo more >>/data/keep
rm /data/del
rm -r /data/dir
chmod 0600 /data/mode
mkdir -m 0750 /data/made'
EXPECTED_DIFF='A /data/made
A /data/new
C /data
C /data/keep
C /data/mode
D /data/del
D /data/dir'
# shellcheck disable=SC2016 # for the container's shell
VERIFY='cat /etc/motd /data/new /data/keep
stat -c "%n %a" /data/mode /data/made
for p in /data/del /data/dir; do [ -e $p ] && echo "still there: $p"; done
echo end'
VERIFY_OUT='hello from a thin image
new
keep
more
/data/mode 600
/data/made 750
end'

# ---------------------------------------------------------------- helpers

# failn, is, dcheck, dis, alive, stop and driver_status are docker_lib.sh's;
# diag_logs is this test's own.

# diag_logs TAG: the ends of dockerd's and its plugin's logs.
diag_logs() {
	local tag=$1 drv=${DK_DRIVER[$1]:-}
	echo "# --- dockerd ($tag) log, last lines:"
	tail -n 15 "${DK_DIR[$tag]}/dockerd.log" 2>/dev/null | sed 's/^/#   /'
	if [[ -n ${PLOG[$drv]:-} ]]; then
		echo "# --- plugin $drv log, last lines:"
		tail -n 15 "${PLOG[$drv]}" | sed 's/^/#   /'
	fi
}

# dfails TAG DESC REGEX DOCKER-ARGS...: the command fails, its stderr
# matching REGEX (grep -E).
dfails() {
	local tag=$1 desc=$2 re=$3 out rc
	shift 3
	out=$(dk "$tag" "$@" 2>&1)
	rc=$?
	if ((rc == 0)); then
		failn "$desc" "command succeeded: docker $*" "$out"
	elif ! grep -Eq -- "$re" <<<"$out"; then
		failn "$desc" "command: docker $* (status $rc)" "output:" "$out" "wanted: $re"
	else
		pass "$desc"
		printf '# docker said: %s\n' "$(tr '\n' ' ' <<<"$out" | cut -c1-400)"
	fi
}

# start TAG PLUGIN DOCKERD-ARGS...: the plugin, then dockerd on it.
start() {
	local tag=$1 drv=$2
	shift 2
	plugin_start "$drv" "${PLOG[$drv]}" || return 1
	dk_start "$tag" "$TEST_TMP/$tag" "$drv" "$@"
}

# layer_dir TAG IMAGE: the store dir of IMAGE's top layer (the driver's
# DiffDir, from GetMetadata).
layer_dir() {
	dk "$1" image inspect --format '{{.GraphDriver.Data.DiffDir}}' "$2"
}

# repo_layers: the layers in the repository, one hex digest per line.
repo_layers() {
	find "$REPO/.layers" -mindepth 2 -maxdepth 2 -type d -printf '%f\n' 2>/dev/null | LC_ALL=C sort
}

# thin_summary FILE: "N layers: DIGEST URL-KIND ..." of a thin.json, or why not.
thin_summary() {
	python3 - "$1" <<'EOF'
import json, re, sys
try:
    j = json.load(open(sys.argv[1]))
except Exception as e:
    sys.exit("unreadable thin.json: %s" % e)
out = ["%d layers:" % len(j.get("layers", []))]
for l in j.get("layers", []):
    d, u = l.get("digest", ""), l.get("url", "")
    ok = u == "cvmfs://repo.test/.layers/%s/%s/layerfs" % (d[:2], d)
    out.append("%s %s" % (d, "layout-url" if ok else "url=" + u))
print(" ".join(out))
EOF
}

# tarsplit_names TAG IMAGE: the entries dockerd recorded (tar-split) for
# the tar of IMAGE's top layer, i.e. what `docker save` rebuilds.
tarsplit_names() {
	local layers
	layers=$(dk "$1" image inspect --format '{{json .RootFS.Layers}}' "$2") || return 1
	python3 - "${DK_DIR[$1]}/d/image/${DK_DRIVER[$1]}/layerdb/sha256" "$layers" <<'EOF'
import gzip, hashlib, json, os, sys
root, layers = sys.argv[1], json.loads(sys.argv[2])
chain = layers[0]
for d in layers[1:]:
    chain = "sha256:" + hashlib.sha256((chain + " " + d).encode()).hexdigest()
names = []
with gzip.open(os.path.join(root, chain.split(":", 1)[1], "tar-split.json.gz"), "rt") as f:
    for line in f:
        e = json.loads(line)
        if e.get("type") == 1:
            names.append(e.get("name", "?"))
print(" ".join(names))
EOF
}

# our_overlays: overlay mounts that name the scratch dir (other tests may
# mount overlays of their own on this machine).
our_overlays() {
	findmnt -rn -t overlay -o TARGET,OPTIONS | grep -F "$TEST_TMP/" || true
}

# ------------------------------------------------ the thin image (strata CLI)

echo "# ---- the thin image, made with the strata CLI on a scratch store"
check "strata init a scratch store" st init
check "strata create + apply the busybox root filesystem" \
	sh -c "'$STRATA' --root '$R' create base && '$STRATA' --root '$R' apply --quiet base -i '$W/rootfs.tar'"
mkdir -p "$W/thin"
if st thin make --repo repo.test --publisher "dir:$REPO" base >"$W/thin/thin.json" 2>"$W/stderr"; then
	pass "strata thin make publishes the layer"
else
	failn "strata thin make publishes the layer" "$(cat "$W/stderr")"
fi
BASE_DIGEST=$(repo_layers | head -n 1)
is "the repository holds one layer" "$(repo_layers | wc -l)" 1
is "thin.json lists that layer, in the repository's .layers layout" "$(thin_summary "$W/thin/thin.json")" \
	"1 layers: $BASE_DIGEST layout-url"
BASE_LAYERFS=$REPO/.layers/${BASE_DIGEST:0:2}/$BASE_DIGEST/layerfs
is "the published layer holds the root filesystem" "$(tree "$BASE_LAYERFS" 2>&1)" "$(tree "$ROOTFS")"
tar -C "$W/thin" -cf "$W/thin.tar" thin.json

# A thin image whose only layer is not in the repository.
MISSING=$(printf 'strata thin test %s\n' "$$" | sha256sum | cut -c1-64)
mkdir -p "$W/missing"
printf '{"version":"1.0","layers":[{"digest":"%s","url":"cvmfs://repo.test/.layers/%s/%s/layerfs"}]}\n' \
	"$MISSING" "${MISSING:0:2}" "$MISSING" >"$W/missing/thin.json"
tar -C "$W/missing" -cf "$W/missing.tar" thin.json

# ------------------------------------------- dockerd with a publisher

echo "# ---- dockerd on strata with thin.root and thin.publisher"
if ! start a "$PA" --storage-opt "thin.root=$CV" --storage-opt "$PA.thin.publisher=dir:$REPO"; then
	fail "dockerd starts with the thin storage options"
	exit 1
fi
pass "dockerd starts with the thin storage options"
is "docker info: the driver's thin root and publisher" \
	"$(driver_status a 'Thin Root') | $(driver_status a 'Thin Publisher')" "$CV | dir:$REPO"

dcheck a "docker import the thin image (a tar of thin.json)" import "$W/thin.tar" thin-it/base || exit 1
d=$(layer_dir a thin-it/base)
is "its layer in the store holds only thin.json" "$(ls -A "$d" 2>&1)" "thin.json"
dis a "docker run the thin image: its files come from the repository" "hello from a thin image" \
	run --rm --network none thin-it/base cat /etc/motd
dis a "docker run: busybox from the repository is the real one" "$(sha256sum </bin/busybox)" \
	run --rm --network none thin-it/base sh -c 'sha256sum </bin/busybox'

alive a "thin" || exit 1
dcheck a "docker run a container that writes, deletes and chmods files" \
	run --network none --name c1 thin-it/base sh -c "$MODIFY" || exit 1
is "docker diff lists exactly those changes" "$(dk a diff c1 2>&1 | LC_ALL=C sort)" "$EXPECTED_DIFF"

before=$(repo_layers)
dcheck a "docker commit of the container on the thin image" commit c1 thin-it/committed || exit 1
after=$(repo_layers)
is "the commit published one new layer into the repository" "$(wc -l <<<"$after")" "$(($(wc -l <<<"$before") + 1))"
NEW_DIGEST=$(comm -13 <(echo "$before") <(echo "$after") | head -n 1)
NEW_LAYERFS=$REPO/.layers/${NEW_DIGEST:0:2}/$NEW_DIGEST/layerfs
out=$(
	cat "$NEW_LAYERFS/data/new" "$NEW_LAYERFS/data/keep" 2>&1
	stat -c '%n %a' "$NEW_LAYERFS/data/mode" 2>&1 | sed "s,^$NEW_LAYERFS/,,"
	for p in data/del data/dir; do is_whiteout "$NEW_LAYERFS/$p" && echo "$p whiteout"; done
	[[ -e $NEW_LAYERFS/data/made ]] && echo "data/made"
	[[ -e $NEW_LAYERFS/etc/motd ]] && echo "etc/motd is there (it should not be)"
)
is "the new layer holds the container's changes, deletions as whiteouts" "$out" "new
keep
more
data/mode 600
data/del whiteout
data/dir whiteout
data/made"
d=$(layer_dir a thin-it/committed)
is "the committed image's layer in the store holds only thin.json" "$(ls -A "$d" 2>&1)" "thin.json"
cp "$d/thin.json" "$W/committed.thin.json" 2>/dev/null
is "its thin.json lists 2 layers: the base, then the new one on top" \
	"$(thin_summary "$W/committed.thin.json" 2>&1)" "2 layers: $BASE_DIGEST layout-url $NEW_DIGEST layout-url"
is "the layer tar dockerd got from the commit (its tar-split) holds only thin.json" \
	"$(tarsplit_names a thin-it/committed 2>&1)" "thin.json"
is "docker history: the committed image has 2 layers" "$(dk a history -q thin-it/committed | wc -l)" 2
dis a "docker run the committed image: it has the changes" "$VERIFY_OUT" \
	run --rm --network none thin-it/committed sh -c "$VERIFY"
is "docker diff after the commit: the same" "$(dk a diff c1 2>&1 | LC_ALL=C sort)" "$EXPECTED_DIFF"

alive a "thin" || exit 1
SAVED=
if dcheck a "docker save the committed thin image" save -o "$W/committed.save.tar" thin-it/committed; then
	SAVED=$W/committed.save.tar
	mkdir -p "$W/save"
	tar -C "$W/save" -xf "$SAVED"
	top=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["Layers"][-1])' "$W/save/manifest.json" 2>&1)
	is "the saved image's top layer tar holds only thin.json" "$(tar -tf "$W/save/$top" 2>&1 | sed 's,^\./,,')" "thin.json"
	mkdir -p "$W/save/top"
	tar -C "$W/save/top" -xf "$W/save/$top" 2>/dev/null
	is "that thin.json lists the 2 layers" "$(thin_summary "$W/save/top/thin.json" 2>&1)" \
		"2 layers: $BASE_DIGEST layout-url $NEW_DIGEST layout-url"
else
	skip "the saved image's top layer tar holds only thin.json" "docker save failed"
	skip "that thin.json lists the 2 layers" "docker save failed"
fi

# A layer missing from the repository: the run fails, naming it.
dcheck a "docker import a thin image whose layer is not in the repository" import "$W/missing.tar" thin-it/missing
dfails a "docker run of it fails with an error naming the missing digest" "sha256:$MISSING.*missing" \
	run --rm --network none thin-it/missing true
is "no container is left of the failed run" "$(dk a ps -aq --filter ancestor=thin-it/missing)" ""

alive a "thin" || exit 1
dcheck a "docker rm the container" rm c1
dcheck a "docker rmi the committed and the base image" rmi thin-it/committed thin-it/base
# dockerd creates a container's <id>-init layer, then Gets it; when that Get
# fails it returns without removing the -init layer, which stays in the
# store on top of the image's layer.
dcheck a "docker rmi the image whose run failed" rmi thin-it/missing
out="$(driver_status a Layers) $(driver_status a Mounted)"
is "docker info: the driver counts no layer, no mount" "$out" "0 0"
[[ $out == "0 0" ]] || find "${DK_DIR[a]}/d/$PA/layers" -mindepth 1 -printf "%f\n" 2>&1 | sed 's/^/# layer left in the store: /'
is "the repository keeps its layers" "$(repo_layers)" "$after"
stop a "first dockerd"

# ------------------------------------- a fresh store, a fresh dockerd

# Nothing of the first store survives: what runs now comes from the
# repository.
rm -rf "$TEST_TMP/a" "$R"
echo "# ---- a fresh store and dockerd (no publisher), the first ones deleted"
if ! start b "$PB" --storage-opt "$PB.thin.root=$CV"; then
	fail "a fresh dockerd starts on a fresh store"
	exit 1
fi
pass "a fresh dockerd starts on a fresh store"
is "docker info: no publisher" "$(driver_status b 'Thin Publisher')" "none"

if [[ -n $SAVED ]]; then
	dcheck b "docker load the saved committed thin image" load -i "$SAVED"
	dis b "the loaded image has the changes, from the repository" "$VERIFY_OUT" \
		run --rm --network none thin-it/committed sh -c "$VERIFY"
else
	skip "docker load the saved committed thin image" "docker save failed"
	skip "the loaded image has the changes, from the repository" "docker save failed"
fi
mkdir -p "$W/fromjson"
cp "$W/committed.thin.json" "$W/fromjson/thin.json"
tar -C "$W/fromjson" -cf "$W/committed.thin.tar" thin.json
dcheck b "docker import the committed image's thin.json" import "$W/committed.thin.tar" thin-it/fromjson
d=$(layer_dir b thin-it/fromjson)
is "its layer in the fresh store holds only thin.json" "$(ls -A "$d" 2>&1)" "thin.json"
dis b "docker run it: the changes, from the repository" "$VERIFY_OUT" \
	run --rm --network none thin-it/fromjson sh -c "$VERIFY"

# A commit on a thin image without a publisher fails, and says so.
alive b "fresh" || exit 1
dcheck b "docker run a container on the thin image" run --network none --name c2 thin-it/fromjson sh -c 'echo x >/x'
before=$(repo_layers)
dfails b "docker commit without a publisher fails with an error about the publisher" \
	"no publisher is configured.*thin\.publisher" commit c2 thin-it/nopub
is "no image came of it" "$(dk b images -q thin-it/nopub)" ""
is "nothing was published" "$(repo_layers)" "$before"
is "no staging dir left in the repository" "$(find "$REPO/.layers" -maxdepth 1 -name '.incoming-*')" ""
is "the container is intact: docker diff" "$(dk b diff c2 2>&1)" "A /x"

alive b "fresh" || exit 1
dcheck b "docker rm the container" rm c2
mapfile -t imgs < <(dk b images -q | sort -u)
((${#imgs[@]} == 0)) || dcheck b "docker rmi the images" rmi "${imgs[@]}"
is "docker info: the driver counts no layer, no mount" "$(driver_status b Layers) $(driver_status b Mounted)" "0 0"
stop b "fresh dockerd"

# ---------------------------------------------------------------- the end

is "no overlay mount of this test is left" "$(our_overlays)" ""
left=""
for p in "$PA" "$PB"; do
	for f in "$(plugin_sock "$p")" "$(plugin_sock "$p").init"; do
		[[ -e $f ]] && left+="$f "
	done
done
is "no socket (or Init record) of this test is left in $PLUGIN_SOCK_DIR" "$left" ""
# Less the errors this test provokes (the commit without a publisher).
errors=$(grep -h 'level=error' "$LOG_A" "$LOG_B" | grep -v 'no publisher is configured' | head -n 20)
is "the plugins logged no level=error line but the intended ones" "$errors" ""
grep -h 'level=warn' "$LOG_A" "$LOG_B" | head -n 20 | sed 's/^/# plugin warning: /'
