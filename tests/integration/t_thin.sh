#!/bin/bash
# Thin layers (SPEC section 4) with real parts, end to end through the CLI.
#
#   A. a repository in a local dir (external method): thin make, import,
#      show/verify, a container on the thin image against the same chain
#      made of ordinary layers, changes, commit by publishing (dir:), the
#      committed image on a fresh store, idempotent publishing, resolving
#      by url path and by digest;
#   B. errors: missing layer, malformed thin.json, digest mismatch, verify
#      of a tampered layer, failing / lying / hanging mount commands,
#      failing / missing / hanging publishers, and a cmd: publisher that
#      succeeds (standing in for `cvmfs_server ingest`);
#   C. the internal method with real bind mounts: one mount per repository
#      whatever the number of users, unmounted after the last, by cleanup,
#      and a repository mounted by someone else left alone;
#   D. the same repository reached through a real network filesystem:
#      sshfs to an sshd on 127.0.0.1 started here, internal method.
#
# CernVM-FS itself cannot be installed here.  Its roles are played by: a
# plain dir holding the .layers/<hh>/<hex>/layerfs layout (what the CernVM-FS
# image service publishes), mounted with `mount --bind` or sshfs instead of
# `mount -t cvmfs`; and, for the publisher, strata's dir: publisher (a
# release manager writing the repository) or a script in place of
# `cvmfs_server ingest`.
# The mount commands' $STRATA_* are for the sh -c that strata runs:
# shellcheck disable=SC2016
. "$(dirname "$0")/lib.sh"

W=$TEST_TMP/work
mkdir -p "$W"
REPO=unpacked.example.org
CV=$TEST_TMP/cvmfs # the thin root of the external method
TH=(-o "thin.root=$CV" -o "thin.publisher=dir:$CV/$REPO")
sth() { st "${TH[@]}" "$@"; }

# Other stores: R2 (a fresh store, external), RC (section C), RD and RD2
# (section D).  Their options are set where they are used; the exit hook
# cleans each store up with its own options (its umount command) before
# lib.sh's fixture stops sshd and removes what is left.
R2=$TEST_TMP/root2
RC=$TEST_TMP/rootC
RD=$TEST_TMP/rootD
RD2=$TEST_TMP/rootD2
C_OPTS=()
D_OPTS=()
D2_OPTS=()
st2() { "$STRATA" --root "$R2" "${TH[@]}" "$@"; }
stc() { "$STRATA" --root "$RC" "${C_OPTS[@]}" "$@"; }
std() { "$STRATA" --root "$RD" "${D_OPTS[@]}" "$@"; }
std2() { "$STRATA" --root "$RD2" "${D2_OPTS[@]}" "$@"; }

thin_exit() {
	local rc=$? m
	# Unions first (they sit on the repositories), then the repositories
	# they used, while sshd still runs.
	[ -d "$R/mnt" ] && st "${TH[@]}" cleanup >/dev/null 2>&1
	[ -d "$R2/mnt" ] && st2 cleanup >/dev/null 2>&1
	[ -d "$RC/mnt" ] && stc cleanup >/dev/null 2>&1
	[ -d "$RD/mnt" ] && std cleanup >/dev/null 2>&1
	[ -d "$RD2/mnt" ] && std2 cleanup >/dev/null 2>&1
	mounts_under "$TEST_TMP" | while read -r m; do
		if [ "$(findmnt -rn -o FSTYPE -M "$m")" == fuse.sshfs ]; then
			fusermount -u -z "$m"
		else
			umount -l "$m"
		fi
	done 2>/dev/null
	(exit "$rc")
	fixture_exit
}
trap thin_exit EXIT

# ---- helpers -------------------------------------------------------------------

# The layers of a thin.json: "digest url" per line, base first.
jlayers() {
	python3 -c 'import json, sys
for l in json.load(open(sys.argv[1]))["layers"]: print(l["digest"], l["url"])' "$1"
}

# thin_tar JSON OUT: a layer tar holding only thin.json.
thin_tar() {
	local d
	d=$(mktemp -d "$W/tt.XXXXXX")
	cp "$1" "$d/thin.json"
	tar -C "$d" -cf "$2" thin.json
	rm -rf "$d"
}

# write_thin OUT LAYER... : a thin.json with LAYER = "digest url" each.
write_thin() {
	local out=$1
	shift
	python3 - "$out" "$@" <<'EOF'
import json, sys
layers = [dict(zip(("digest", "url"), a.split(" ", 1))) for a in sys.argv[2:]]
with open(sys.argv[1], "w") as f:
    json.dump({"version": "1.0", "layers": layers}, f, indent=2)
EOF
}

# listing DIR [EXCLUDED_TOP_DIR...]: every entry with type, mode, owner,
# size and sha256 (files), target (symlinks), rdev (devices), mtime in
# whole seconds (not of dirs).  For trees where tarcmp.py cannot be used
# (sshfs shows neither xattrs nor shared inodes).
listing() {
	python3 - "$@" <<'EOF'
import hashlib, os, stat, sys
root, skip = sys.argv[1], set(sys.argv[2:])
for dp, dns, fns in os.walk(root):
    rel = os.path.relpath(dp, root)
    if rel == ".":
        dns[:] = [d for d in dns if d not in skip]
        fns = [f for f in fns if f not in skip]
    for n in sorted(dns + fns):
        p = os.path.join(dp, n)
        st = os.lstat(p)
        line = "%s %04o %d:%d" % (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        if stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                line += " size=%d sha=%s" % (st.st_size, hashlib.sha256(f.read()).hexdigest()[:16])
        elif stat.S_ISLNK(st.st_mode):
            line += " -> " + os.readlink(p)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            line += " dev=%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        if not stat.S_ISDIR(st.st_mode):
            line += " mtime=%d" % int(st.st_mtime)
        print(os.path.normpath(os.path.join(rel, n)), line)
EOF
}

# leftovers ROOT ID: what a failed get left behind (empty: nothing).
leftovers() {
	local root=$1 id=$2 out=""
	mountpoint -q "$root/mnt/$id" && out+="$root/mnt/$id is mounted; "
	local rc
	rc=$("$STRATA" --root "$root" metadata "$id" 2>/dev/null | awk '$1 == "RefCount:" {print $2}')
	if [ -z "$rc" ]; then # metadata refuses a layer on a malformed thin layer: the count file
		rc=$(awk '{print $2 + 0}' "$root/refs/$id" 2>/dev/null)
		rc=${rc:-0}
	fi
	[ "$rc" == 0 ] || out+="RefCount of $id is '$rc'; "
	[ -n "$(ls -A "$root/thin/users" 2>/dev/null)" ] && out+="thin/users: $(ls -A "$root/thin/users"); "
	[ -n "$(ls -A "$root/thin/mounted" 2>/dev/null)" ] && out+="thin/mounted: $(ls -A "$root/thin/mounted"); "
	printf '%s' "$out"
}

# no_leftovers DESC ROOT ID
no_leftovers() {
	local l
	l=$(leftovers "$2" "$3")
	if [ -z "$l" ]; then pass "$1"; else fail "$1" "$l"; fi
}

# in_readdir DIR NAME...: how many of the names readdir(DIR) lists (no stat).
in_readdir() { python3 -c 'import os, sys; print(sum(n in sys.argv[2:] for n in os.listdir(sys.argv[1])))' "$@"; }

# The mounts at exactly this path.
mounts_at() { awk -v p="$1" '$5 == p' /proc/self/mountinfo | wc -l; }

sshfs_count() { findmnt -rn -t fuse.sshfs -o TARGET | grep -c "^$TEST_TMP/" || true; }

# Published layer dirs in a repository (.layers/<hh>/<hex>).
published() { find "$1/.layers" -mindepth 2 -maxdepth 2 -type d ! -name '.*' 2>/dev/null | wc -l; }

layerfs_of() { echo "$1/.layers/${2:0:2}/$2/layerfs"; }

# ================================================================================
# A. A repository in a local dir, external method
# ================================================================================
if [ ! -x /bin/busybox ]; then
	skip "thin tests" "/bin/busybox is missing (apt-get install busybox-static)"
	exit 0
fi
st init >/dev/null || exit 1
mkdir -p "$CV/$REPO"

# The image: base (busybox and a few files), top (a whiteout, an opaque dir,
# a hardlink, a symlink, a setuid file, an xattr user.x).
st create base
B=$R/diff/base
mkdir -p "$B/bin" "$B/etc" "$B/d/sub" "$B/opq/old" "$B/home/user" "$B/tmp"
cp /bin/busybox "$B/bin/busybox"
for a in sh cat ls cut; do ln -s busybox "$B/bin/$a"; done
echo hello >"$B/etc/hello"
echo 'root:x:0:0:root:/root:/bin/sh' >"$B/etc/passwd"
echo a >"$B/d/a"
echo b >"$B/d/sub/b"
echo gone >"$B/gone"
echo old >"$B/opq/old/f"
echo o1 >"$B/opq/o1"
echo u >"$B/home/user/u"
chown -R 1000:1000 "$B/home/user"
chmod 1777 "$B/tmp"
st create top base
T=$R/diff/top
mknod "$T/gone" c 0 0
mkdir "$T/opq"
setfattr -n trusted.overlay.opaque -v y "$T/opq"
echo new >"$T/opq/new"
mkdir "$T/lnk" "$T/bin"
echo shared >"$T/lnk/hl1"
ln "$T/lnk/hl1" "$T/lnk/hl2"
ln -s ../etc/hello "$T/lnk/sym"
printf '#!/bin/sh\necho suid\n' >"$T/bin/suid"
chmod 4755 "$T/bin/suid"
echo x >"$T/xa"
setfattr -n user.x -v hello "$T/xa"
touch -d @1700000000 "$T/xa"

if sth thin make --repo "$REPO" top >"$W/img.json" 2>"$W/err"; then
	pass "thin make publishes the 2-layer chain"
else
	fail "thin make publishes the 2-layer chain" "$(cat "$W/err")"
fi
D_BASE=$(st diff base | sha256sum | cut -d' ' -f1)
D_TOP=$(st diff top | sha256sum | cut -d' ' -f1)
L_BASE=.layers/${D_BASE:0:2}/$D_BASE/layerfs
L_TOP=.layers/${D_TOP:0:2}/$D_TOP/layerfs
is "thin.json: 2 layers, base first, digests = sha256 of each layer's tar" "$(jlayers "$W/img.json" 2>&1)" \
	"$D_BASE cvmfs://$REPO/$L_BASE
$D_TOP cvmfs://$REPO/$L_TOP"
for d in "$D_BASE" "$D_TOP"; do
	dir=$CV/$REPO/.layers/${d:0:2}/$d
	if [ -d "$dir/layerfs" ] &&
		[ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["digest"])' "$dir/strata-layer.json" 2>&1)" == "$d" ]; then
		pass "published ${d:0:12}: layerfs and strata-layer.json with its digest"
	else
		fail "published ${d:0:12}: layerfs and strata-layer.json with its digest" "$(ls -la "$dir" 2>&1)"
	fi
done
LT=$CV/$REPO/$L_TOP
if is_whiteout "$LT/gone" && is_opaque "$LT/opq" && [ "$(stat -c %i "$LT/lnk/hl1")" == "$(stat -c %i "$LT/lnk/hl2")" ] &&
	[ "$(readlink "$LT/lnk/sym")" == ../etc/hello ] && [ "$(stat -c %a "$LT/bin/suid")" == 4755 ] &&
	[ "$(getfattr --only-values -n user.x "$LT/xa" 2>/dev/null)" == hello ]; then
	pass "the published top layer holds the whiteout, opaque dir, hardlink, symlink, setuid file and xattr"
else
	fail "the published top layer holds the whiteout, opaque dir, hardlink, symlink, setuid file and xattr" \
		"$(cd "$LT" && find . -printf '%y %m %n %p %l\n' 2>&1)"
fi

# Import: a layer made from a tar holding only thin.json.
thin_tar "$W/img.json" "$W/img.tar"
st create img
check "import: apply a tar holding only thin.json" sth apply --quiet img -i "$W/img.tar"
is "the thin layer's diff dir holds only thin.json" "$(ls -A "$R/diff/img")" "thin.json"
out=$(sth thin show img 2>&1)
is "thin show lists both layers, found by url" "$out" "0 found sha256:$D_BASE cvmfs://$REPO/$L_BASE
    at $CV/$REPO/$L_BASE
1 found sha256:$D_TOP cvmfs://$REPO/$L_TOP
    at $CV/$REPO/$L_TOP"
is "thin show --json prints the thin.json thin make printed" "$(sth thin show --json img 2>&1)" "$(cat "$W/img.json")"
out=$(sth thin verify img 2>&1)
is "thin verify: both layers ok" "$(printf '%s\n' "$out" | grep -c '^[01] ok sha256:')" 2

# A container on the thin image, and the same on the ordinary layers.
for c in X Y; do
	parent=img
	[ "$c" == Y ] && parent=top
	st create "$c-init" "$parent"
	mkdir -p "$R/diff/$c-init/etc"
	echo container >"$R/diff/$c-init/etc/hostname"
	touch -d @1700000000 "$R/diff/$c-init/etc/hostname"
	: >"$R/diff/$c-init/.dockerenv"
	# A fixed mtime: X and Y are compared, and may be made a second apart.
	touch -d @1700000000 "$R/diff/$c-init/.dockerenv"
	st create "$c" "$c-init"
done
px=$(sth mount X 2>"$W/err") || fail "mount X (a container on the thin image)" "$(cat "$W/err")"
py=$(st mount Y)
if [ -n "$px" ]; then
	pass "mount X (a container on the thin image)"
	tarcmp "X (thin image) and Y (ordinary layers): the same merged tree" --no-dir-mtime "$py" "$px"
	is "X runs: busybox from the thin image, opaque dir and whiteout applied" \
		"$(chroot "$px" /bin/sh -c 'cat /etc/hello /etc/hostname; ls /opq; test -e /gone || echo no-gone; /bin/suid' 2>&1)" \
		"hello
container
new
no-gone
suid"
	# lowerdir=a:b:c (mount(2)) or lowerdir+=a,lowerdir+=b,... (fsconfig)
	is "X's lowers: X-init's diff dir, then the thin layers top first" \
		"$(findmnt -rn -o OPTIONS -M "$px" | tr ',' '\n' | sed -n 's/^lowerdir+*=//p' | tr ':\n' '  ')" \
		"$R/diff/X-init $CV/$REPO/$L_TOP $CV/$REPO/$L_BASE "
fi

# Container-style changes, the same in X and in Y.
for p in "$px" "$py"; do
	# Never in the current dir: only in a mounted union.
	if [ -z "$p" ] || ! mountpoint -q "$p"; then continue; fi
	(
		set -e
		umask 022
		cd "$p"
		echo fresh >newfile           # A
		echo more >>etc/hello         # C (copy-up)
		rm d/a                        # D
		mv d/sub/b d/sub/b2           # D + A
		chmod 0600 etc/passwd         # C (mode only)
		rm -r opq && mkdir opq && echo again >opq/again # an opaque dir again
	) >"$W/err" 2>&1 || fail "changes through the mounted union $p" "$(cat "$W/err")"
done
expected_changes="C /d
D /d/a
C /d/sub
D /d/sub/b
A /d/sub/b2
C /etc
C /etc/hello
C /etc/passwd
A /newfile
C /opq
A /opq/again
D /opq/new"
is "changes X lists exactly the changes" "$(sth changes X 2>&1)" "$expected_changes"
is "changes X = changes Y (the ordinary chain)" "$(sth changes X 2>&1)" "$(st changes Y 2>&1)"
is "changes --naive X = changes X" "$(sth changes --naive X 2>&1)" "$expected_changes"
tarcmp "X and Y after the changes: the same merged tree" --no-dir-mtime --no-mtime "$py" "$px"
sth umount X
st umount Y
st diff Y -o "$W/y.tar"

# Commit: diff publishes X and returns the new thin.json.
n_before=$(published "$CV/$REPO")
if sth diff X -o "$W/x.tar" 2>"$W/err"; then pass "diff X on the thin image"; else fail "diff X on the thin image" "$(cat "$W/err")"; fi
is "diff X: a tar with exactly one entry, thin.json" "$(tar -tvf "$W/x.tar" 2>&1 | awk '{print $1, $6}')" "-rw-r--r-- thin.json"
tar -xOf "$W/x.tar" thin.json >"$W/x.json"
D_X=$(jlayers "$W/x.json" | sed -n 3p | cut -d' ' -f1)
L_X=.layers/${D_X:0:2}/$D_X/layerfs
is "the new thin.json: the image's 2 layers, then X's on top" "$(jlayers "$W/x.json" 2>&1)" "$D_BASE cvmfs://$REPO/$L_BASE
$D_TOP cvmfs://$REPO/$L_TOP
$D_X cvmfs://$REPO/$L_X"
is "one layer published (X's, not X-init's)" "$(published "$CV/$REPO")" $((n_before + 1))
LX=$CV/$REPO/$L_X
if [ -f "$(dirname "$LX")/strata-layer.json" ] && [ "$(cat "$LX/newfile")" == fresh ] && is_whiteout "$LX/d/a" &&
	is_whiteout "$LX/d/sub/b" && [ "$(stat -c %a "$LX/etc/passwd")" == 600 ] && is_opaque "$LX/opq" &&
	[ ! -e "$LX/etc/hostname" ] && [ ! -e "$LX/.dockerenv" ]; then
	pass "X's published layerfs: its changes (whiteouts, opaque dir), no -init content, a strata-layer.json"
else
	fail "X's published layerfs: its changes (whiteouts, opaque dir), no -init content, a strata-layer.json" \
		"$(cd "$(dirname "$LX")" && find . -printf '%y %m %p\n' 2>&1)"
fi
is "no layerfs holds X-init's files" "$(find "$CV/$REPO/.layers" -path '*/layerfs/etc/hostname' -o -path '*/layerfs/.dockerenv' | wc -l)" 0

rec=$(dirname "$LX")/strata-layer.json
rec_before=$(stat -c '%i %Y' "$rec")
if sth diff X -o "$W/x2.tar" 2>"$W/err"; then
	check "diff X twice: byte-identical tars" cmp "$W/x.tar" "$W/x2.tar"
else
	fail "diff X twice: byte-identical tars" "$(cat "$W/err")"
fi
is "publishing again adds no copy" "$(published "$CV/$REPO")" $((n_before + 1))
is "publishing again keeps the published layer as it was" "$(stat -c '%i %Y' "$rec")" "$rec_before"
is "no .incoming-* staging dir left" "$(find "$CV/$REPO/.layers" -name '.incoming-*' | wc -l)" 0

# The committed image on a fresh store.
"$STRATA" --root "$R2" init >/dev/null
st2 create N
check "fresh store: apply diff X's tar as a new thin layer" st2 apply --quiet N -i "$W/x.tar"
check "fresh store: thin verify of the 3-layer image" st2 thin verify N
st2 create N-c N
pn=$(st2 mount N-c 2>"$W/err") || fail "fresh store: mount a container on it" "$(cat "$W/err")"
if [ -n "$pn" ]; then
	is "fresh store: X's changes are there" \
		"$(cat "$pn/newfile" "$pn/etc/hello" "$pn/d/sub/b2" "$pn/opq/again"; stat -c %a "$pn/etc/passwd"; ls "$pn/d"; ls "$pn/opq"; in_readdir "$pn" gone .dockerenv)" \
		"fresh
hello
more
b
again
600
sub
again
0"
	# Y's ordinary diff on top: the same tree (mtimes differ: Y was changed
	# a moment after X).
	st create Z top
	st apply --quiet Z -i "$W/y.tar" >/dev/null
	pz=$(st mount Z)
	tarcmp "fresh store: the committed image = the ordinary chain with Y's diff" --no-dir-mtime --no-mtime "$pz" "$pn"
	st umount Z
	st2 umount N-c
fi
pt=$(st2 mount N 2>"$W/err") || fail "fresh store: mount the thin layer itself" "$(cat "$W/err")"
if [ -n "$pt" ]; then
	if [ "$(cat "$pt/newfile")" == fresh ] && ! touch "$pt/w" 2>/dev/null; then
		pass "fresh store: the thin layer itself mounts, read-only"
	else
		fail "fresh store: the thin layer itself mounts, read-only"
	fi
	st2 umount N
fi

# Store layers between the thin image and the container are published
# too, lowest first; the -init layer never is.
st create M img
echo m >"$R/diff/M/m-file"
st create Q-init M
echo init >"$R/diff/Q-init/q-init-file"
st create Q Q-init
echo q >"$R/diff/Q/q-file"
if sth diff Q -o "$W/q.tar" 2>"$W/err"; then
	tar -xOf "$W/q.tar" thin.json >"$W/q.json"
	mapfile -t ql < <(jlayers "$W/q.json" | cut -d' ' -f1)
	if [ "${#ql[@]}" == 4 ] && [ "${ql[0]}" == "$D_BASE" ] && [ "${ql[1]}" == "$D_TOP" ] &&
		[ "$(ls "$(layerfs_of "$CV/$REPO" "${ql[2]}")")" == m-file ] &&
		[ "$(ls "$(layerfs_of "$CV/$REPO" "${ql[3]}")")" == q-file ]; then
		pass "diff Q on M on the thin image: M then Q published on top, Q-init not"
	else
		fail "diff Q on M on the thin image: M then Q published on top, Q-init not" "$(cat "$W/q.json")"
	fi
else
	fail "diff Q on M on the thin image: M then Q published on top, Q-init not" "$(cat "$W/err")"
fi

# Resolving by url path: the layers copied elsewhere in the repository
# (no record beside them) and named by that path.
mkdir -p "$CV/$REPO/images/v1"
cp -a "$CV/$REPO/$L_BASE" "$CV/$REPO/images/v1/base"
cp -a "$CV/$REPO/$L_TOP" "$CV/$REPO/images/v1/top"
write_thin "$W/u.json" "$D_BASE cvmfs://$REPO/images/v1/base" "$D_TOP cvmfs://$REPO/images/v1/top"
thin_tar "$W/u.json" "$W/u.tar"
st create U
sth apply --quiet U -i "$W/u.tar" >/dev/null
is "thin show: a url path that exists is used" "$(sth thin show U 2>&1 | grep '^    at ')" "    at $CV/$REPO/images/v1/base
    at $CV/$REPO/images/v1/top"
check "thin verify of the copies" sth thin verify U
# By digest: a url path that does not exist, the digest in .layers.
write_thin "$W/f.json" "$D_BASE cvmfs://$REPO/images/nowhere/base" "$D_TOP cvmfs://$REPO/images/nowhere/top"
thin_tar "$W/f.json" "$W/f.tar"
st create F
sth apply --quiet F -i "$W/f.tar" >/dev/null
is "thin show: a missing url path falls back to .layers by digest" "$(sth thin show F 2>&1 | grep '^    at ')" "    at $CV/$REPO/$L_BASE
    at $CV/$REPO/$L_TOP"
st create F-c F
st create U-c U
pf=$(sth mount F-c 2>"$W/err") || fail "mount a container on the by-digest image" "$(cat "$W/err")"
pu=$(sth mount U-c 2>"$W/err") || fail "mount a container on the by-url image" "$(cat "$W/err")"
ptop=$(st mount top)
[ -n "$pf" ] && tarcmp "by digest: the merged tree = the ordinary chain's" --no-dir-mtime "$ptop" "$pf"
[ -n "$pu" ] && tarcmp "by url path: the merged tree = the ordinary chain's" --no-dir-mtime "$ptop" "$pu"
st umount top
[ -n "$pf" ] && sth umount F-c
[ -n "$pu" ] && sth umount U-c

# thin.repo: a commit goes to another repository than the image's; the
# image then spans two repositories.
mkdir -p "$CV/other"
st create RO img
echo ro >"$R/diff/RO/ro-file"
if st -o "thin.root=$CV" -o "thin.publisher=dir:$CV/other" -o thin.repo=other diff RO -o "$W/ro.tar" 2>"$W/err"; then
	tar -xOf "$W/ro.tar" thin.json >"$W/ro.json"
	d=$(jlayers "$W/ro.json" | sed -n 3p | cut -d' ' -f1)
	is "thin.repo=other: the new layer is published there, on top of the image's" \
		"$(jlayers "$W/ro.json" | cut -d' ' -f2 | sed 's|/.layers/.*||' | tr '\n' ' ')$(ls "$(layerfs_of "$CV/other" "$d")")" \
		"cvmfs://$REPO cvmfs://$REPO cvmfs://other ro-file"
	st create RO2
	sth apply --quiet RO2 -i "$W/ro.tar" >/dev/null
	st create RO2-c RO2
	p=$(sth mount RO2-c 2>"$W/err")
	is "an image over two repositories mounts" "$(cat "$p/ro-file" "$p/etc/hello" 2>&1)" "ro
hello"
	[ -n "$p" ] && sth umount RO2-c
else
	fail "thin.repo=other: the new layer is published there, on top of the image's" "$(cat "$W/err")"
fi
is "A: nothing left mounted" "$(overlay_count)" 0

# ================================================================================
# B. Errors
# ================================================================================
# Copies of the repository to break.
cp -a "$CV/$REPO" "$CV/broken"
cp -a "$CV/$REPO" "$CV/mism"

# Missing layer: a url path that does not exist and no layerfs by digest.
rm -rf "${CV:?}/broken/$L_BASE"
write_thin "$W/m1.json" "$D_BASE cvmfs://broken/images/v9/base" "$D_TOP cvmfs://broken/$L_TOP"
thin_tar "$W/m1.json" "$W/m1.tar"
st create M1
check "apply a thin.json naming a missing layer (checked at mount time)" sth apply --quiet M1 -i "$W/m1.tar"
st create M1-c M1
n_ov=$(overlay_count)
check_error "missing layer: get fails naming the thin layer, the digest and both paths tried" \
	"get M1-c: thin image of layer M1: thin layer sha256:$D_BASE is missing: no directory $CV/broken/images/v9/base nor $CV/broken/$L_BASE\$" \
	sth mount M1-c
no_leftovers "missing layer: nothing left mounted or counted" "$R" M1-c
check_error "missing layer: the thin layer itself does not mount either" \
	"get M1: thin image of layer M1: thin layer sha256:$D_BASE is missing" sth mount M1
is "missing layer: no overlay mounted" "$(overlay_count)" "$n_ov"
out=$(sth thin show M1 2>"$W/err")
rc=$?
if [ "$rc" == 1 ] && [[ "$out" == *"0 BAD sha256:$D_BASE"*"is missing"* ]] && grep -q "thin show M1: 1 of 2 layers do not resolve" "$W/err"; then
	pass "missing layer: thin show says which, exit 1"
else
	fail "missing layer: thin show says which, exit 1" "rc=$rc" "$out" "$(cat "$W/err")"
fi
write_thin "$W/m2.json" "$D_BASE cvmfs://broken/$L_BASE" "$D_TOP cvmfs://broken/$L_TOP"
thin_tar "$W/m2.json" "$W/m2.tar"
st create M2
sth apply --quiet M2 -i "$W/m2.tar" >/dev/null
st create M2-c M2
check_error "missing layer named by its .layers url: the one path tried" \
	"get M2-c: thin image of layer M2: thin layer sha256:$D_BASE is missing: no directory $CV/broken/$L_BASE\$" \
	sth mount M2-c
no_leftovers "missing layer (.layers url): nothing left mounted or counted" "$R" M2-c

# Malformed thin.json: the apply fails naming thin.json; the layer stays empty.
bad_apply() { # DESC REGEX ID JSON-TEXT [EXTRA-FILE]
	local desc=$1 re=$2 id=$3 d
	d=$(mktemp -d "$W/bad.XXXXXX")
	printf '%s' "$4" >"$d/thin.json"
	[ -n "${5:-}" ] && echo extra >"$d/$5"
	tar -C "$d" -cf "$d.tar" .
	st create "$id"
	check_error "$desc" "$re" sth apply "$id" -i "$d.tar"
	is "$desc: the layer stays empty" "$(ls -A "$R/diff/$id")" ""
}
good_layers="[{\"digest\": \"$D_BASE\", \"url\": \"cvmfs://$REPO/$L_BASE\"}]"
bad_apply "malformed thin.json: bad JSON" "apply B1: thin\.json: line [0-9]+ column [0-9]+: " B1 \
	'{"version": "1.0", "layers": ['
bad_apply "malformed thin.json: version 9.9" 'apply B2: thin\.json: version "9\.9" is not supported' B2 \
	"{\"version\": \"9.9\", \"layers\": $good_layers}"
bad_apply "malformed thin.json: an unknown key" 'apply B3: thin\.json: the file has an unknown key "extra"' B3 \
	"{\"version\": \"1.0\", \"extra\": 1, \"layers\": $good_layers}"
bad_apply "malformed thin.json: a bad digest" 'apply B4: thin\.json: layers\[0\]: digest "abc" is not a sha256' B4 \
	"{\"version\": \"1.0\", \"layers\": [{\"digest\": \"abc\", \"url\": \"cvmfs://$REPO/x\"}]}"
bad_apply "malformed thin.json: a url with .." 'apply B5: thin\.json: layers\[0\]: url "cvmfs://r/a/\.\./b": ' B5 \
	"{\"version\": \"1.0\", \"layers\": [{\"digest\": \"$D_BASE\", \"url\": \"cvmfs://r/a/../b\"}]}"
bad_apply "a tar with thin.json and other files is refused" \
	'apply B6: the tar holds thin\.json and 1 other entries at its top' B6 \
	"{\"version\": \"1.0\", \"layers\": $good_layers}" other-file
# A malformed thin.json already in a diff dir (written behind strata's
# back): mounting anything on it fails, naming the layer.
st create B7
printf '{"version": "1.0", "layers": [' >"$R/diff/B7/thin.json"
st create B7-c B7
check_error "malformed thin.json in a diff dir: get fails naming the thin layer" \
	"get B7-c: thin layer B7: thin\.json: line " sth mount B7-c
no_leftovers "malformed thin.json in a diff dir: nothing left mounted or counted" "$R" B7-c

# Digest mismatch: a url at a copy whose record names another digest, and a
# url at another layer's dir.
mkdir -p "$CV/mism/copies"
cp -a "$CV/mism/.layers/${D_TOP:0:2}/$D_TOP" "$CV/mism/copies/t1"
sed -i "s/$D_TOP/$D_X/" "$CV/mism/copies/t1/strata-layer.json"
cp -a "$CV/mism/.layers/${D_BASE:0:2}/$D_BASE" "$CV/mism/copies/b"
write_thin "$W/d1.json" "$D_BASE cvmfs://mism/$L_BASE" "$D_TOP cvmfs://mism/copies/t1/layerfs"
write_thin "$W/d2.json" "$D_BASE cvmfs://mism/$L_BASE" "$D_TOP cvmfs://mism/copies/b/layerfs"
for k in 1 2; do
	thin_tar "$W/d$k.json" "$W/d$k.tar"
	st create "DM$k"
	sth apply --quiet "DM$k" -i "$W/d$k.tar" >/dev/null
	st create "DM$k-c" "DM$k"
done
check_error "digest mismatch (record edited): get fails" \
	"get DM1-c: thin image of layer DM1: thin layer sha256:$D_TOP: digest mismatch: $CV/mism/copies/t1/layerfs was published as sha256:$D_X" \
	sth mount DM1-c
no_leftovers "digest mismatch (record edited): nothing left mounted or counted" "$R" DM1-c
check_error "digest mismatch (url at another layer's dir): get fails" \
	"get DM2-c: thin image of layer DM2: thin layer sha256:$D_TOP: digest mismatch: $CV/mism/copies/b/layerfs was published as sha256:$D_BASE" \
	sth mount DM2-c
no_leftovers "digest mismatch (another layer's dir): nothing left mounted or counted" "$R" DM2-c

# thin verify of a layer modified after publication.
write_thin "$W/v.json" "$D_BASE cvmfs://mism/$L_BASE" "$D_TOP cvmfs://mism/$L_TOP"
thin_tar "$W/v.json" "$W/v.tar"
st create V
sth apply --quiet V -i "$W/v.tar" >/dev/null
check "thin verify before tampering" sth thin verify V
echo tampered >"$CV/mism/$L_TOP/xa"
out=$(sth thin verify V 2>"$W/err")
rc=$?
if [ "$rc" == 1 ] && [[ "$out" == *"0 ok sha256:$D_BASE"*"1 BAD sha256:$D_TOP"*'"/xa" size differs from what was published'* ]] &&
	[ "$(cat "$W/err")" == "strata: thin verify V: 1 of 2 layers failed verification" ]; then
	pass "thin verify after tampering: exit 1, the changed file named (against the manifest recorded at publication)"
else
	fail "thin verify after tampering: exit 1, the changed file named (against the manifest recorded at publication)" "rc=$rc" "$out" "$(cat "$W/err")"
fi
check "thin show does not hash: still exit 0 after tampering" sth thin show V

# Internal method, mount commands that fail, lie or hang.
st create E1 img
INTF=$TEST_TMP/int-fail
FAIL_OPTS=(-o "thin.root=$INTF" -o thin.mount=internal -o 'thin.umount_cmd=umount "$STRATA_MOUNTPOINT"')
check_error "failing mount command: get fails with its status and what it said" \
	"get E1: thin image of layer img: mount repository $REPO at $INTF/$REPO: \"echo cannot reach server >&2; exit 3\" exited with status 3: cannot reach server\$" \
	st "${FAIL_OPTS[@]}" -o 'thin.mount_cmd=echo cannot reach server >&2; exit 3' mount E1
no_leftovers "failing mount command: nothing mounted, no users/ record, no mounted/ marker" "$R" E1
check_error "a mount command that succeeds without mounting: error" \
	"get E1: thin image of layer img: mount repository $REPO: the mount command succeeded but $INTF/$REPO is not a mount point" \
	st "${FAIL_OPTS[@]}" -o 'thin.mount_cmd=echo mounted, honest' mount E1
no_leftovers "a lying mount command: nothing left" "$R" E1
t0=$SECONDS
check_error "a hanging mount command: killed after thin.timeout" \
	"get E1: thin image of layer img: mount repository $REPO at $INTF/$REPO: \".*\" did not finish within 1s \\(killed\\)" \
	st "${FAIL_OPTS[@]}" -o thin.timeout=1 -o "thin.mount_cmd=echo \$\$ >$W/sleeper.pid; exec sleep 60" mount E1
if [ $((SECONDS - t0)) -lt 15 ] && [ -s "$W/sleeper.pid" ] && ! kill -0 "$(cat "$W/sleeper.pid")" 2>/dev/null; then
	pass "the hanging mount command is gone, in time ($((SECONDS - t0))s)"
else
	fail "the hanging mount command is gone, in time ($((SECONDS - t0))s)" "pid $(cat "$W/sleeper.pid" 2>&1)"
fi
no_leftovers "a hanging mount command: nothing left" "$R" E1
is "no mount under the failed thin root" "$(mounts_under "$INTF")" ""
if p=$(sth mount E1 2>"$W/err") && [ "$(cat "$p/etc/hello")" == hello ] && sth umount E1; then
	pass "the store is usable afterwards (external method)"
else
	fail "the store is usable afterwards (external method)" "$(cat "$W/err")"
fi

# Publishers that fail, are missing or hang: diff fails, prints no tar,
# publishes nothing.
st create P1 img
echo p1 >"$R/diff/P1/p1-file"
n_pub=$(published "$CV/$REPO")
err=$(st -o "thin.root=$CV" -o 'thin.publisher=cmd:echo disk full >&2; exit 1' diff P1 2>&1 >"$W/p1.out")
rc=$?
if [ "$rc" != 0 ] && [ ! -s "$W/p1.out" ] &&
	[[ "$err" =~ ^"strata: diff P1: layer P1: publish layer sha256:"[0-9a-f]{64}" to repository $REPO with cmd:echo disk full >&2; exit 1: \"echo disk full >&2; exit 1\" exited with status 1: disk full"$ ]]; then
	pass "failing publisher: diff fails with its message and prints no tar"
else
	fail "failing publisher: diff fails with its message and prints no tar" "rc=$rc, $(wc -c <"$W/p1.out") bytes out" "$err"
fi
check_error "failing publisher with -o FILE" "disk full" \
	st -o "thin.root=$CV" -o 'thin.publisher=cmd:echo disk full >&2; exit 1' diff P1 -o "$W/p1.tar"
if [ ! -e "$W/p1.tar" ]; then pass "failing publisher: no output file left"; else fail "failing publisher: no output file left"; fi
err=$(st -o "thin.root=$CV" diff P1 2>&1 >"$W/p1.out")
rc=$?
if [ "$rc" != 0 ] && [ ! -s "$W/p1.out" ] &&
	[[ "$err" == "strata: diff P1: the layer is on the thin image of layer img: its diff is published to a repository, but no publisher is configured (driver option thin.publisher=dir:PATH or cmd:COMMAND)" ]]; then
	pass "no publisher configured: a clear error, no tar"
else
	fail "no publisher configured: a clear error, no tar" "rc=$rc" "$err"
fi
t0=$SECONDS
check_error "a hanging publisher: killed after thin.timeout" \
	'diff P1: layer P1: publish layer sha256:[0-9a-f]{64} .*"sleep 60" did not finish within 1s \(killed\)' \
	st -o "thin.root=$CV" -o thin.timeout=1 -o 'thin.publisher=cmd:sleep 60' diff P1 -o "$W/p1.tar"
if [ $((SECONDS - t0)) -lt 15 ]; then pass "the hanging publisher was stopped in time"; else fail "the hanging publisher was stopped in time" "$((SECONDS - t0))s"; fi
is "failed publishers published nothing" "$(published "$CV/$REPO")" "$n_pub"
# (A thin root without the layers: one that has them publishes nothing.)
mkdir -p "$TEST_TMP/emptyroot"
check_error "thin make with a failing publisher" "thin make top: layer base: publish layer sha256:$D_BASE .*exited with status 1: disk full" \
	st -o "thin.root=$TEST_TMP/emptyroot" thin make --repo "$REPO" --publisher 'cmd:echo disk full >&2; exit 1' top
out=$(st -o "thin.root=$CV" thin make --repo "$REPO" --publisher 'cmd:echo disk full >&2; exit 1' top 2>&1)
is "thin make of layers the repository has runs no publisher" "$?" 0

# A cmd: publisher that succeeds.  It stands in for `cvmfs_server ingest`
# (CernVM-FS is not installable here): it reads the layer tar on stdin,
# checks its sha256 against $STRATA_DIGEST and its size against
# $STRATA_TAR_SIZE, and unpacks it at $STRATA_LAYER_PATH in the repository
# (with strata apply into a scratch store, which turns .wh. entries back
# into overlay whiteouts as ingest would).
cat >"$W/ingest.sh" <<EOF
set -eu
tmp=\$(mktemp -d "$W/ingest.XXXXXX")
cat >"\$tmp/layer.tar"
sum=\$(sha256sum <"\$tmp/layer.tar" | cut -d' ' -f1)
printf '%s %s %s %s %s %s\n' "\$STRATA_REPO" "\$STRATA_DIGEST" "\$STRATA_LAYER_PATH" "\$STRATA_TAR_SIZE" \\
	"\$sum" "\$(stat -c %s "\$tmp/layer.tar")" >>"$W/ingest.log"
if [ "\$sum" != "\$STRATA_DIGEST" ]; then echo "ingest: stdin has sha256 \$sum" >&2; exit 1; fi
"$STRATA" --root "\$tmp/s" init >/dev/null
"$STRATA" --root "\$tmp/s" create L
"$STRATA" --root "\$tmp/s" apply --quiet L -i "\$tmp/layer.tar" >/dev/null
dest="$CV/\$STRATA_REPO/\$STRATA_LAYER_PATH"
mkdir -p "\$(dirname "\$dest")"
mv "\$tmp/s/diff/L" "\$dest"
rm -rf "\$tmp"
EOF
if st -o "thin.root=$CV" -o "thin.publisher=cmd:bash $W/ingest.sh" diff P1 -o "$W/p1.tar" 2>"$W/err"; then
	pass "cmd: publisher (ingest stand-in): diff succeeds"
else
	fail "cmd: publisher (ingest stand-in): diff succeeds" "$(cat "$W/err")"
fi
tar -xOf "$W/p1.tar" thin.json >"$W/p1.json" 2>/dev/null
D_P1=$(jlayers "$W/p1.json" 2>/dev/null | sed -n 3p | cut -d' ' -f1)
read -r e_repo e_digest e_path e_size e_sum e_bytes <"$W/ingest.log"
is "cmd: publisher: one run, given repo, digest, layer path and tar size; stdin's sha256 = \$STRATA_DIGEST" \
	"$(wc -l <"$W/ingest.log") $e_repo $e_digest $e_path $e_size" \
	"1 $REPO $D_P1 .layers/${D_P1:0:2}/$D_P1/layerfs $e_bytes"
is "cmd: publisher: sha256 of stdin" "$e_sum" "$D_P1"
thin_tar "$W/p1.json" "$W/p1t.tar"
st create P1T
sth apply --quiet P1T -i "$W/p1t.tar" >/dev/null
check "cmd: publisher: thin verify of the ingested layer (re-hash = published digest)" sth thin verify P1T
st create P1T-c P1T
p=$(sth mount P1T-c 2>"$W/err")
is "cmd: publisher: the committed change is visible" "$(cat "$p/p1-file" "$p/etc/hello" 2>&1)" "p1
hello"
[ -n "$p" ] && sth umount P1T-c
is "B: nothing left mounted" "$(overlay_count)" 0

# ================================================================================
# C. Internal method with real (bind) mounts
# ================================================================================
# The repository's mount: a read-only bind of the repository dir, in place
# of mount -t cvmfs.
INT=$TEST_TMP/int
C_OPTS=(-o "thin.root=$INT" -o thin.mount=internal -o thin.timeout=30
	-o "thin.mount_cmd=mount --bind -o ro $CV/\"\$STRATA_REPO\" \"\$STRATA_MOUNTPOINT\""
	-o 'thin.umount_cmd=umount "$STRATA_MOUNTPOINT"')
stc init >/dev/null
stc create I
stc apply --quiet I -i "$W/img.tar" >/dev/null
for c in C1 C2; do
	stc create "$c-init" I
	stc create "$c" "$c-init"
done
is "internal: the repository is not mounted before" "$(mounts_at "$INT/$REPO")" 0
p1=$(stc mount C1 2>"$W/err") || fail "internal: mount C1" "$(cat "$W/err")"
is "internal: mount C1 mounts the repository, read-only" \
	"$(mounts_at "$INT/$REPO") $(findmnt -rn -o OPTIONS -M "$INT/$REPO" | cut -d, -f1) $(cat "$p1/etc/hello" 2>&1)" "1 ro hello"
p2=$(stc mount C2 2>"$W/err") || fail "internal: mount C2" "$(cat "$W/err")"
is "internal: mount C2 uses the same mount" "$(mounts_at "$INT/$REPO") $(cat "$p2/etc/hello" 2>&1)" "1 hello"
is "internal: status shows the repository with 2 users" "$(stc status | grep '^Thin Repository')" \
	"Thin Repository: $REPO (2 users, mounted by strata)"
is "internal: users/ records: C1 and C2" "$(find "$RC/thin/users" -mindepth 1 -printf '%f\n' | sort | tr '\n' ' ')" "C1 C2 "
stc umount C1
is "internal: umount C1 keeps the repository mounted (1 user)" \
	"$(mounts_at "$INT/$REPO") $(stc status | grep '^Thin Repository')" "1 Thin Repository: $REPO (1 users, mounted by strata)"
stc umount C2
is "internal: umount C2 (the last user) unmounts it" "$(mounts_at "$INT/$REPO") $(findmnt -rn -M "$INT/$REPO" | wc -l)" "0 0"
is "internal: no users/ record, no mounted/ marker, no repository in status" \
	"$(find "$RC/thin/users" "$RC/thin/mounted" -mindepth 1 | wc -l) $(stc status | grep -c '^Thin Repository')" "0 0"
stc mount C1 >/dev/null && stc mount C2 >/dev/null && stc mount C2 >/dev/null
is "internal: two users again (C2 twice: one user)" "$(mounts_at "$INT/$REPO") $(stc status | grep '^Thin Repository')" \
	"1 Thin Repository: $REPO (2 users, mounted by strata)"
check "internal: cleanup" stc cleanup
is "internal: cleanup unmounts the unions and the repository" "$(mounts_at "$INT/$REPO") $(mounts_under "$RC" | wc -l)" "0 0"
check "internal: thin verify mounts the repository for the check" stc thin verify I
is "internal: ... and unmounts it after" "$(mounts_at "$INT/$REPO") $(find "$RC/thin/users" -mindepth 1 | wc -l)" "0 0"
# Mounted by someone else: used, never unmounted (the mount command would fail).
mkdir -p "$INT/$REPO"
mount --bind -o ro "$CV/$REPO" "$INT/$REPO"
p1=$(stc -o 'thin.mount_cmd=echo must not run >&2; exit 7' mount C1 2>"$W/err") || fail "internal: mount C1 on someone else's mount" "$(cat "$W/err")"
is "internal: someone else's mount is used: 1 user, not strata's" "$(cat "$p1/etc/hello" 2>&1) $(stc status | grep '^Thin Repository')" \
	"hello Thin Repository: $REPO (1 users)"
stc umount C1
is "internal: after the last user, someone else's mount stays" "$(mounts_at "$INT/$REPO")" 1
stc mount C1 >/dev/null && stc cleanup >/dev/null
is "internal: cleanup leaves it too" "$(mounts_at "$INT/$REPO")" 1
umount "$INT/$REPO"
is "C: nothing left mounted" "$(mounts_under "$INT" | wc -l) $(overlay_count)" "0 0"

# ================================================================================
# D. The repository through sshfs to an sshd on 127.0.0.1
# ================================================================================
SSH=$TEST_TMP/ssh
SRV=$TEST_TMP/server # the repository's server side: $SRV/<repo>
for need in sshfs fusermount ssh ssh-keygen /usr/sbin/sshd; do
	if ! command -v "$need" >/dev/null; then
		skip "sshfs tests" "$need is missing (apt-get install sshfs openssh-server, as scripts/common.sh does)"
		exit 0
	fi
done
mkdir -p "$SSH" "$SRV/$REPO" /run/sshd
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ssh-keygen -q -t ed25519 -N '' -f "$SSH/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$SSH/id"
cp "$SSH/id.pub" "$SSH/authorized_keys"
cat >"$SSH/sshd_config" <<EOF
Port $PORT
ListenAddress 127.0.0.1
HostKey $SSH/host_key
PidFile $SSH/sshd.pid
AuthorizedKeysFile $SSH/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The scratch dir is under /var/tmp (world-writable).
StrictModes no
Subsystem sftp internal-sftp
EOF
/usr/sbin/sshd -D -e -f "$SSH/sshd_config" 2>"$SSH/sshd.log" &
BG_PIDS+=($!)
ssh_up=false
for _ in $(seq 50); do
	if ssh -p "$PORT" -i "$SSH/id" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
		-o LogLevel=ERROR root@127.0.0.1 true 2>/dev/null; then
		ssh_up=true
		break
	fi
	sleep 0.2
done
if $ssh_up; then pass "sshd on 127.0.0.1:$PORT accepts our key"; else fail "sshd on 127.0.0.1:$PORT accepts our key" "$(cat "$SSH/sshd.log")"; fi

# The readers' mount.  dir_cache=no: with sshfs's directory cache on (its
# default), a readdir served from the cache gives every entry d_type
# DT_UNKNOWN, and overlay, which spots whiteouts in a merged readdir by
# DT_CHR, then lists whited-out names (stat says ENOENT).
# no_contain_symlinks: sshfs 3.7.3 by default refuses (readlink: EPERM)
# symlinks whose target is absolute or holds "..", common in images; the
# repository server is trusted (it is where the image comes from).  sshfs carries
# no xattrs: opaque dirs (trusted.overlay.opaque) and user.x are not
# visible through it, so /opq is not compared here.
SSHFS_CMD="sshfs -p $PORT -o IdentityFile=$SSH/id,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes,dir_cache=no,no_contain_symlinks,ro,allow_other root@127.0.0.1:$SRV/\"\$STRATA_REPO\" \"\$STRATA_MOUNTPOINT\""
SR=$TEST_TMP/sshroot
SR2=$TEST_TMP/sshroot2
D_OPTS=(-o "thin.root=$SR" -o thin.mount=internal -o thin.timeout=30 -o "thin.mount_cmd=$SSHFS_CMD"
	-o 'thin.umount_cmd=fusermount -u "$STRATA_MOUNTPOINT"' -o "thin.publisher=dir:$SRV/$REPO")
D2_OPTS=("${D_OPTS[@]}" -o "thin.root=$SR2")

# The release manager publishes the image on the server.
if $ssh_up && st -o "thin.root=$TEST_TMP/emptyroot" thin make --repo "$REPO" --publisher "dir:$SRV/$REPO" top >"$W/ssh.json" 2>"$W/err"; then
	is "sshfs: thin make on the server side: the same thin.json (content-addressed)" \
		"$(jlayers "$W/ssh.json")" "$(jlayers "$W/img.json")"
	thin_tar "$W/ssh.json" "$W/ssh.tar"
	std init >/dev/null
	std create S-img
	std apply --quiet S-img -i "$W/ssh.tar" >/dev/null
	std create S-init S-img
	mkdir -p "$RD/diff/S-init/etc"
	echo container >"$RD/diff/S-init/etc/hostname"
	touch -d @1700000000 "$RD/diff/S-init/etc/hostname"
	: >"$RD/diff/S-init/.dockerenv"
	std create S S-init
	ps=$(std mount S 2>"$W/err") || fail "sshfs: mount a container on the thin image" "$(cat "$W/err")"
	if [ -n "$ps" ]; then
		pass "sshfs: mount a container on the thin image"
		is "sshfs: the repository is mounted with sshfs, once" \
			"$(findmnt -rn -o FSTYPE -M "$SR/$REPO") $(mounts_at "$SR/$REPO")" "fuse.sshfs 1"
		# The local case: the same image from the local repository.
		st create Lc-init img
		cp -a "$RD/diff/S-init/." "$R/diff/Lc-init/"
		st create Lc Lc-init
		pl=$(sth mount Lc)
		listing "$pl" opq >"$W/local.list"
		listing "$ps" opq >"$W/ssh.list"
		if diff -u "$W/local.list" "$W/ssh.list" >"$W/list.diff"; then
			pass "sshfs: merged tree = the local case's (types, modes, owners, sizes, contents, link targets; $(wc -l <"$W/ssh.list") entries)"
		else
			fail "sshfs: merged tree = the local case's" "$(head -n 30 "$W/list.diff")"
		fi
		is "sshfs: the image runs" \
			"$(chroot "$ps" /bin/sh -c 'cat /etc/hello /etc/hostname; /bin/suid; busybox sha256sum /bin/busybox | cut -d" " -f1' 2>&1)" \
			"hello
container
suid
$(sha256sum /bin/busybox | cut -d' ' -f1)"
		# The whiteout (top's /gone over base's), through sshfs: gone
		# from lookup and from readdir, twice (the second from caches).
		is "sshfs: a whiteout hides the file (stat)" "$(test -e "$ps/gone" && echo present || echo absent)" absent
		is "sshfs: a whiteout hides the file (readdir, twice)" \
			"$(in_readdir "$ps" gone; in_readdir "$ps" gone)" "0
0"
		is "sshfs: the whiteout as the server's layerfs holds it, seen through sshfs: char 0:0" \
			"$(stat -c '%F %t:%T' "$SR/$REPO/$L_TOP/gone")" "character special file 0:0"
		sth umount Lc

		# Commit through the sshfs-backed image; publish to the server.
		echo "over ssh" >"$ps/ssh-file"
		rm "$ps/d/a" "$ps/etc/hello"
		is "sshfs: changes" "$(std changes S 2>&1)" "C /d
D /d/a
C /etc
D /etc/hello
A /ssh-file"
		std umount S
		is "sshfs: after the last umount the sshfs mount is gone" "$(sshfs_count) $(ls -A "$RD/thin/users")" "0 "
		n_srv=$(published "$SRV/$REPO")
		if std diff S -o "$W/s.tar" 2>"$W/err"; then
			pass "sshfs: diff S publishes to the server dir"
		else
			fail "sshfs: diff S publishes to the server dir" "$(cat "$W/err")"
		fi
		tar -xOf "$W/s.tar" thin.json >"$W/s.json"
		is "sshfs: the new thin.json has 3 layers, one more on the server" \
			"$(jlayers "$W/s.json" | wc -l) $(published "$SRV/$REPO")" "3 $((n_srv + 1))"

		# A fresh store reads the committed image through its own sshfs mount.
		std2 init >/dev/null
		std2 create SN
		std2 apply --quiet SN -i "$W/s.tar" >/dev/null
		std2 create SN-c SN
		pn=$(std2 mount SN-c 2>"$W/err") || fail "sshfs, fresh store: mount the committed image" "$(cat "$W/err")"
		if [ -n "$pn" ]; then
			is "sshfs, fresh store: mounted through sshfs" "$(findmnt -rn -o FSTYPE -M "$SR2/$REPO")" fuse.sshfs
			is "sshfs, fresh store: the change is there, deletions by the new layer's whiteouts" \
				"$(cat "$pn/ssh-file"; ls -A "$pn/d"; ls -A "$pn/etc"; test -e "$pn/d/a" || echo no-a)" \
				"over ssh
sub
passwd
no-a"
			# verify compares what sshfs shows with the manifests
			# recorded at publication: sshfs shows no xattrs (top's
			# opaque marker), a known loss that is reported, not failed.
			out=$(std2 thin verify SN 2>&1)
			is "sshfs, fresh store: thin verify through sshfs: every layer ok" \
				"$(printf '%s\n' "$out" | grep -E '^[0-9] ' | cut -d' ' -f1-3)" \
				"0 ok sha256:$D_BASE
1 ok sha256:$D_TOP
2 ok sha256:$(jlayers "$W/s.json" | sed -n 3p | cut -d' ' -f1)"
			is "sshfs, fresh store: ... top's lost opaque mark is reported" \
				"$(printf '%s\n' "$out" | grep -c 'note: the filesystem shows no xattrs: opaque marks unchecked')" 1
			std2 umount SN-c
		fi
		is "sshfs, fresh store: after the last umount the sshfs mount is gone" \
			"$(sshfs_count) $(mounts_at "$SR2/$REPO") $(ls -A "$RD2/thin/users")" "0 0 "
	fi
else
	$ssh_up && fail "sshfs: thin make on the server side" "$(cat "$W/err")"
	skip "sshfs cases" "sshd did not start"
fi

is "no overlay or sshfs mount of ours left" \
	"$(findmnt -rn -t overlay,fuse.sshfs -o TARGET | grep -c "^$TEST_TMP/")" 0
