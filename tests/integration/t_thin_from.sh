#!/usr/bin/env bash
# strata thin make --from IMAGE: thin images made from image files, without
# Docker in the loop (what CernVM-FS's DUCC does for unpacked.cern.ch).
#
#   A. a multi-layer image built here with a real dockerd (overlay2):
#      files added in several layers, a file deleted at depth, a dir
#      replaced wholesale (an opaque dir), hardlinks, a symlink, owners
#      1000:1000, a setuid file, ENV / WORKDIR / ENTRYPOINT / CMD; docker
#      saved.  `strata thin make --from` publishes it (dir: publisher into
#      a repository under the scratch dir, the thin root standing for
#      /cvmfs): thin.json lists each diff_id in order, each layer is at its
#      url and holds its tar's content in overlay's form; again: every
#      layer already there, the same thin.json, the same -o bytes;
#   B. the same image as an OCI layout (gzip and zstd layer blobs), an OCI
#      archive, Docker 25's docker save layout and a gzip-compressed docker
#      save (imgtool.py makes them): the same layers; the layout published
#      into a fresh repository holds the same trees;
#   C. hostile and broken inputs, each a one-line `strata: thin make ...`
#      error naming what is wrong, nothing published, no -o file made or
#      changed;
#   D. the -o image docker load-ed into a dockerd on strata (`strata serve`
#      with the same thin root): its layer holds only thin.json, docker run
#      shows exactly the original image's files (path, type, mode, owner,
#      size, links, sha256, as the original image on overlay2 shows them)
#      and keeps ENV, WORKDIR, ENTRYPOINT and CMD.
#
#   STRATA_BIN=build/strata bash tests/integration/t_thin_from.sh    (~40 s)
# Needs root, /usr/sbin/dockerd, /usr/bin/docker and /bin/busybox; skipped
# without them.  Everything started here is stopped by PID on exit.
# shellcheck source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/docker_lib.sh"

docker_test_init "thin make --from tests"
IMGTOOL=$(cd "$(dirname "$0")" && pwd)/imgtool.py
CV=$TEST_TMP/cvmfs # the thin root
RN=repo.test	   # the repository
REPO=$CV/$RN
mkdir -p "$REPO"
TH=(-o "thin.root=$CV" -o "thin.publisher=dir:$REPO")
# from IMAGE [ARGS...]: strata thin make --from into the repository.
from() {
	local img=$1
	shift
	st "${TH[@]}" thin make --repo "$RN" --from "$img" "$@"
}
PL=strata-from-$$ # the plugin of the dockerd on strata
PLOG=$TEST_TMP/plugin.log
: >"$PLOG"

diag_logs() {
	local tag=$1
	echo "# --- dockerd ($tag) log, last lines:"
	tail -n 15 "${DK_DIR[$tag]}/dockerd.log" 2>/dev/null | sed 's/^/#   /'
	echo "# --- plugin log, last lines:"
	tail -n 15 "$PLOG" | sed 's/^/#   /'
}

# The layers of a thin.json: "digest url" per line, base first.
jlayers() {
	python3 -c 'import json, sys
for l in json.load(open(sys.argv[1]))["layers"]: print(l["digest"], l["url"])' "$1" 2>&1
}

# What `docker run` shows of an image's files, by busybox in the container:
# path, type, mode, owner; for files size, link count and sha256; for
# symlinks the target.  Docker's own mounts are left out.
# shellcheck disable=SC2016 # for the container's shell
LISTING='find / -xdev \( -path /proc -o -path /sys -o -path /dev \) -prune -o -print | sort |
while read -r p; do
	case $p in /etc/hosts|/etc/hostname|/etc/resolv.conf|/.dockerenv) continue;; esac
	l=$(stat -c "%n %F %a %u:%g" "$p")
	if [ -L "$p" ]; then l="$l -> $(readlink "$p")"
	elif [ -f "$p" ]; then l="$l $(stat -c "%s %h" "$p") $(sha256sum <"$p" | cut -c1-16)"; fi
	echo "$l"
done'

# ================================================================================
# A. the image, built with a real dockerd; thin make --from
# ================================================================================
echo "# ---- the image: docker build on overlay2, docker save"
ROOTFS=$W/rootfs
busybox_rootfs "$ROOTFS"
find "$ROOTFS" -exec touch -h -d '2020-01-02 03:04:05' {} +
tar --numeric-owner -C "$ROOTFS" -cf "$W/rootfs.tar" .
mkdir -p "$W/ctx"
cat >"$W/ctx/Dockerfile" <<'EOF'
FROM tf/base
ENV FOO=bar PATH=/usr/bin:/bin
RUN mkdir -p /data/deep/er/est /rep/sub && echo a >/data/deep/er/est/f && echo keep >/data/keep && echo old >/rep/sub/old && echo o2 >/rep/o2
RUN rm /data/deep/er/est/f && echo b >/data/b && ln /data/b /data/b.hard && ln -s ../data/b /data/b.sym && rm -rf /rep && mkdir /rep && echo new >/rep/new
RUN mkdir -p /home/u && echo u >/home/u/f && chown -R 1000:1000 /home/u && cp /bin/busybox /data/suid && chmod 4755 /data/suid
WORKDIR /data
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /data/b"]
EOF
if ! dk_start x "$TEST_TMP/x"; then
	fail "dockerd (overlay2) starts"
	exit 1
fi
dcheck x "docker import the busybox root filesystem" import "$W/rootfs.tar" tf/base || exit 1
dcheck x "docker build: 3 RUN layers, ENV, WORKDIR, ENTRYPOINT, CMD" build --network=none -t tf/img:v1 "$W/ctx" || exit 1
dcheck x "docker save" save -o "$W/img.tar" tf/img:v1 || exit 1
dk x run --rm --network none --entrypoint /bin/sh tf/img:v1 -c "$LISTING" >"$W/orig.list" 2>"$W/stderr"
rc=$?
if [[ $rc -eq 0 && $(wc -l <"$W/orig.list") -gt 250 ]]; then
	pass "docker run lists the original image's files ($(wc -l <"$W/orig.list") entries)"
else
	failn "docker run lists the original image's files" "status $rc" "$(head -n 5 "$W/orig.list")" "$(tail -n 5 "$W/stderr")"
fi
ORIG_CONFIG=$(dk x image inspect -f '{{json .Config.Env}} {{.Config.WorkingDir}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}' tf/img:v1)
stop x "the building dockerd"
DIFF_IDS=$(python3 "$IMGTOOL" layers "$W/img.tar")
NL=$(wc -l <<<"$DIFF_IDS")
is "the image has 4 layers" "$NL" 4
python3 "$IMGTOOL" tars "$W/img.tar" "$W/tars"

echo "# ---- strata thin make --from the docker save archive"
check "strata init" st init
if from "$W/img.tar" -o "$W/thin-img.tar" >"$W/thin.json" 2>"$W/make.err"; then
	pass "thin make --from img.tar -o thin-img.tar"
else
	failn "thin make --from img.tar -o thin-img.tar" "$(cat "$W/make.err")"
fi
want=$(while read -r d; do echo "$d cvmfs://$RN/.layers/${d:0:2}/$d/layerfs"; done <<<"$DIFF_IDS")
is "thin.json lists each diff_id, base first, at its .layers url" "$(jlayers "$W/thin.json")" "$want"
want=$(i=0; while read -r d; do i=$((i + 1)); echo "layer $i/$NL sha256:$d published"; done <<<"$DIFF_IDS")
is "one line per layer on stderr: published" "$(grep '^layer' "$W/make.err" | sed 's/ [0-9.]* [KMG]\?i\?B / /')" "$want"
is "and a note saying what the archive is" "$(grep -c '^strata: note: img.tar: docker save tf/img:v1, 4 layers' "$W/make.err")" 1
i=0
while read -r d; do
	i=$((i + 1))
	if out=$(python3 "$IMGTOOL" layercmp "$W/tars/$i.tar" "$REPO/.layers/${d:0:2}/$d/layerfs" 2>&1); then
		pass "layer $i: the published dir holds its tar's content ($out)"
	else
		failn "layer $i: the published dir holds its tar's content" "$out"
	fi
done <<<"$DIFF_IDS"
d2=$(sed -n 3p <<<"$DIFF_IDS")
L3=$REPO/.layers/${d2:0:2}/$d2/layerfs
out=$(
	is_whiteout "$L3/data/deep/er/est/f" && echo "whiteout at depth"
	is_opaque "$L3/rep" && echo "opaque rep"
	[[ $(stat -c %i "$L3/data/b") == $(stat -c %i "$L3/data/b.hard") ]] && echo "hardlink"
	readlink "$L3/data/b.sym"
)
is "layer 3 in overlay's form: a whiteout at depth, an opaque dir, a hardlink, a symlink" "$out" "whiteout at depth
opaque rep
hardlink
../data/b"
d3=$(sed -n 4p <<<"$DIFF_IDS")
L4=$REPO/.layers/${d3:0:2}/$d3/layerfs
is "layer 4: owners 1000:1000, a setuid file" "$(stat -c '%n %u:%g %a' "$L4/home/u/f" "$L4/data/suid" | sed "s,^$L4/,,")" \
	"home/u/f 1000:1000 644
data/suid 0:0 4755"

echo "# ---- again: nothing published, the same thin.json, the same -o bytes"
before=$(find "$REPO" -printf '%p %i %T@\n' | LC_ALL=C sort)
if from "$W/img.tar" -o "$W/thin-img2.tar" >"$W/thin2.json" 2>"$W/make2.err"; then pass "thin make --from again"; else failn "thin make --from again" "$(cat "$W/make2.err")"; fi
is "every layer already in the repository" "$(grep -c '^layer [0-9]/4 sha256:[0-9a-f]* .* already in the repository$' "$W/make2.err")" 4
is "the same thin.json" "$(cat "$W/thin2.json")" "$(cat "$W/thin.json")"
is "the repository is untouched" "$(find "$REPO" -printf '%p %i %T@\n' | LC_ALL=C sort)" "$before"
check "the same loadable image, byte for byte" cmp "$W/thin-img.tar" "$W/thin-img2.tar"

mkdir -p "$W/load"
tar -C "$W/load" -xf "$W/thin-img.tar"
out=$(python3 - "$W/load" "$W/thin.json" <<'EOF' 2>&1
import hashlib, json, os, sys, tarfile
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
print("images:", len(m), "tags:", m[0]["RepoTags"], "layers:", len(m[0]["Layers"]))
cfg = json.load(open(os.path.join(d, m[0]["Config"])))
layer = open(os.path.join(d, m[0]["Layers"][0]), "rb").read()
print("diff_id ok:", cfg["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()])
with tarfile.open(os.path.join(d, m[0]["Layers"][0])) as t:
    for e in t:
        print(e.name, oct(e.mode), "%d:%d" % (e.uid, e.gid), "same thin.json:",
              t.extractfile(e).read() == open(sys.argv[2], "rb").read())
print("history:", len(cfg["history"]), "thin image of tf/img:v1" in cfg["history"][0]["created_by"])
print("repositories:", json.load(open(os.path.join(d, "repositories"))) == {"tf/img": {"v1": m[0]["Layers"][0].split("/")[0]}})
EOF
)
is "the -o image: one layer holding only thin.json (0644, 0:0), its diff_id, one history entry, tags" "$out" \
	"images: 1 tags: ['tf/img:v1'] layers: 1
diff_id ok: True
thin.json 0o644 0:0 same thin.json: True
history: 1 True
repositories: True"

# ================================================================================
# B. OCI layout, OCI archive, Docker 25's layout, a compressed archive
# ================================================================================
echo "# ---- the same image in other forms"
python3 "$IMGTOOL" convert "$W/img.tar" "$W/conv"
if command -v zstd >/dev/null; then
	is "the layout has gzip and zstd layer blobs" \
		"$(file -b "$W"/conv/layout/blobs/sha256/* | awk '{print $1}' | sort -u | tr '\n' ' ')" "JSON Zstandard gzip "
fi
for f in layout oci.tar docker25.tar save.tar.gz; do
	if from "$W/conv/$f" >"$W/$f.json" 2>"$W/$f.err"; then
		is "thin make --from $f: the same layers" "$(jlayers "$W/$f.json")" "$(jlayers "$W/thin.json")"
	else
		failn "thin make --from $f: the same layers" "$(cat "$W/$f.err")"
	fi
done
# A layer listed twice: thin.json lists a digest once.
python3 "$IMGTOOL" duplayer "$W/img.tar" "$W/dup.tar"
if from "$W/dup.tar" >"$W/dup.json" 2>"$W/dup.err"; then
	is "a layer listed again on top: thin.json lists the 4 layers once" "$(jlayers "$W/dup.json")" "$(jlayers "$W/thin.json")"
	is "stderr says layer 5 is layer 2 again, with a warning" \
		"$(grep -c -e '^layer 5/5 sha256:[0-9a-f]* is layer 2 again: listed once$' \
			-e '^strata: warning: layer 5/5 .* is layer 2 again: .* its 10 entries are not applied again' "$W/dup.err")" 2
else
	failn "a layer listed again on top" "$(cat "$W/dup.err")"
fi
# The layout published into a fresh repository: gzip and zstd blobs decompressed.
CV2=$TEST_TMP/cvmfs2
mkdir -p "$CV2/$RN"
if st -o "thin.root=$CV2" thin make --repo "$RN" --publisher "dir:$CV2/$RN" --from "$W/conv/layout" \
	>"$W/layout2.json" 2>"$W/layout2.err"; then
	is "the OCI layout into a fresh repository: 4 layers published" "$(grep -c ' published$' "$W/layout2.err")" 4
else
	failn "the OCI layout into a fresh repository: 4 layers published" "$(cat "$W/layout2.err")"
fi
i=0
while read -r d; do
	i=$((i + 1))
	if out=$(python3 "$IMGTOOL" layercmp "$W/tars/$i.tar" "$CV2/$RN/.layers/${d:0:2}/$d/layerfs" 2>&1); then
		pass "OCI layer $i: the published dir holds its tar's content ($out)"
	else
		failn "OCI layer $i: the published dir holds its tar's content" "$out"
	fi
done <<<"$DIFF_IDS"

# ================================================================================
# C. broken and hostile inputs
# ================================================================================
echo "# ---- errors"
CVE=$TEST_TMP/cvmfs-errors # a repository for the failing runs: stays empty
mkdir -p "$CVE/$RN"
ste() { st -o "thin.root=$CVE" -o "thin.publisher=dir:$CVE/$RN" thin make --repo "$RN" "$@"; }
python3 "$IMGTOOL" hostile "$W/img.tar" "$W/bad" >"$W/bad.list"
declare -A WANT=(
	[bad-diffid]='layer 2/4 .*: its tar has sha256:[0-9a-f]{64}, the config.s diff_id says sha256:'"$(sed -n 2p <<<"$DIFF_IDS")"
	[missing-blob]='layer 3: 0{64}/layer\.tar is not in the archive'
	[dotdot]='manifest\.json: layer 1 "\.\./.*": "\.\." component'
	[absolute]='manifest\.json: Config "/etc/passwd": absolute name'
	[two-images]='it holds 2 images \(tf/img:v1, tf/other:v2\): choose one with --tag'
	[duplicate-entry]='entry "manifest\.json" is in it twice'
	[dotdot-entry]='entry "\.\./evil": "\.\." component'
	[symlink-out]='layer 1: evil/layer\.tar is a link that leads out of the archive'
	[too-many-layers]='501 layers, more than overlay.s limit of 500'
	[config-digest]='[0-9a-f]{64}\.json has sha256:[0-9a-f]{64}, not the sha256:[0-9a-f]{64} its name says'
	[truncated]='damaged or truncated: Truncated'
	[truncated-boundary]='the archive is truncated \(it ends without the end-of-archive blocks\)'
	[not-an-archive]='not a tar archive \(nor a directory\)'
	[oci-blob-digest]='layer 1/4: blobs/sha256/[0-9a-f]{64} has sha256:[0-9a-f]{64}, not the sha256:[0-9a-f]{64} its name or descriptor says'
	[oci-missing-blob]='layer 1: open blobs/sha256/[0-9a-f]{64}: No such file or directory'
	[oci-absurd-size]='has [0-9]+ bytes, its descriptor says 4611686018427387904'
	[oci-sha512]='index\.json: manifest 1: digest sha512:0+: not a sha256 digest'
)
store_before=$(ls -A "$R")
echo "keep me" >"$W/existing.tar"
while read -r c f; do
	if [[ -z ${WANT[$c]:-} ]]; then
		fail "$c: a case with no expected error"
		continue
	fi
	check_error "$c: refused" "^strata: thin make --from [^ ]*: .*${WANT[$c]}" ste --from "$f"
	is "$c: nothing published" "$(find "$CVE/$RN" -mindepth 1 | head -n 3)" ""
	unset "WANT[$c]"
done <"$W/bad.list"
is "every hostile case was made and run" "${!WANT[*]}" ""
check_error "a file that is not a tar: refused" "^strata: thin make --from /etc/passwd: not a tar archive" ste --from /etc/passwd
check_error "a device: refused" "not an archive \(a regular file\) or an OCI layout" ste --from /dev/null
check_error "a missing file: refused" "open .*/nope: No such file or directory" ste --from "$W/nope"
check_error "a tag that is no image of it: refused, listing them" \
	"it holds no image named tf/nope, only tf/img:v1, tf/other:v2" ste --from "$W/bad/two-images.tar" --tag tf/nope
check_error "a tag that is no docker reference: refused" 'tag "BAD TAG": not a docker reference' \
	ste --from "$W/bad/two-images.tar" --tag 'BAD TAG'
check_error "no repository: refused" "no repository given" st "${TH[@]}" thin make --from "$W/img.tar"
check_error "-o without --from: a usage error" "--tag and -o go with --from" st thin make --repo "$RN" -o "$W/x.tar" ID
check_error "a failing run with -o: refused" "layer 2/4" ste --from "$W/bad/bad-diffid.tar" -o "$W/existing.tar"
is "it leaves the existing -o file as it was" "$(cat "$W/existing.tar")" "keep me"
check_error "a failing run with -o to a new file: refused" "layer 2/4" ste --from "$W/bad/bad-diffid.tar" -o "$W/new.tar"
is "it makes no -o file, no temp file beside it" "$(find "$W" -maxdepth 1 -name '*new.tar*')" ""
is "nothing left in the store root" "$(ls -A "$R")" "$store_before"
is "the error repository is still empty" "$(find "$CVE/$RN" -mindepth 1 | head -n 3)" ""
# --tag picks one of two images, and names the loadable one.
if ste --from "$W/bad/two-images.tar" --tag tf/other:v2 -o "$W/other.tar" >"$W/other.json" 2>"$W/other.err"; then
	is "--tag tf/other:v2 picks that image; the -o image has that tag" \
		"$(tar -xOf "$W/other.tar" manifest.json | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["RepoTags"])')" \
		"['tf/other:v2']"
else
	failn "--tag tf/other:v2 picks that image" "$(cat "$W/other.err")"
fi

# ================================================================================
# D. docker load of the -o image into a dockerd on strata
# ================================================================================
echo "# ---- docker load on strata (thin root: the repository)"
if ! plugin_start "$PL" "$PLOG" || ! dk_start y "$TEST_TMP/y" "$PL" --storage-opt "thin.root=$CV"; then
	fail "dockerd on strata starts"
	exit 1
fi
pass "dockerd on strata starts"
dis y "docker load -i the thin image" "Loaded image: tf/img:v1" load -i "$W/thin-img.tar"
d=$(dk y image inspect --format '{{.GraphDriver.Data.DiffDir}}' tf/img:v1)
is "its layer in the store holds only thin.json" "$(ls -A "$d" 2>&1)" "thin.json"
is "ENV, WORKDIR, ENTRYPOINT and CMD are the original's" \
	"$(dk y image inspect -f '{{json .Config.Env}} {{.Config.WorkingDir}} {{json .Config.Entrypoint}} {{json .Config.Cmd}}' tf/img:v1)" \
	"$ORIG_CONFIG"
dis y "docker run: ENTRYPOINT and CMD run" "b" run --rm --network none tf/img:v1
# shellcheck disable=SC2016 # for the container's shell
dis y "docker run: ENV and WORKDIR" "/data bar" run --rm --network none tf/img:v1 'echo $(pwd) $FOO'
dk y run --rm --network none --entrypoint /bin/sh tf/img:v1 -c "$LISTING" >"$W/thin.list" 2>"$W/stderr"
rc=$?
if [[ $rc -eq 0 ]] && diff "$W/orig.list" "$W/thin.list" >"$W/list.diff"; then
	pass "docker run shows exactly the original image's files ($(wc -l <"$W/thin.list") entries)"
else
	failn "docker run shows exactly the original image's files" "status $rc" "$(head -n 30 "$W/list.diff")" "$(tail -n 5 "$W/stderr")"
fi
grep -E '^(/data/suid|/home/u/f|/data/b.hard|/data/b.sym|/rep|/rep/new|/data/deep/er/est) ' "$W/thin.list" | sed 's/^/# /'
alive y "load" || exit 1
dcheck y "docker rmi the thin image" rmi tf/img:v1
stop y "dockerd on strata"
is "no overlay mount of this test is left" "$(findmnt -rn -t overlay -o TARGET | grep -F "$TEST_TMP/" || true)" ""
errors=$(grep -h 'level=error' "$PLOG" | head -n 20)
is "the plugin logged no level=error line" "$errors" ""
