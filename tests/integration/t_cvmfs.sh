#!/bin/bash
# Thin layers published into a REAL CernVM-FS repository (issue 13), through
# the CLI: the CernVM-FS 2.12 client and stratum-0 of ../shared/cvmfs
# (`setup --repo strata-it.test` makes a repository served by apache on
# 127.0.0.1 and a separate client mount of it; `teardown` removes both at the
# end, whatever happened).
#
#   1. thin make --publisher cvmfs of a multi-layer chain (whiteouts at
#      several depths, an opaque dir over a populated lower dir with nested
#      dirs that also exist below, owners, setuid, symlinks, a hardlink, an
#      xattr, an empty layer): the merged view of a container on the thin
#      image = the same chain from the store; what the repository holds
#      (char-device whiteouts, no .wh. names, the flattened layer's chain
#      suffix and record, the empty layer); thin verify (ok, notes);
#   2. no republishing (revision unchanged), whatever the publisher;
#   3. commit: strata diff of a layer on the thin image publishes, a tar of
#      only thin.json, a container on it runs at once;
#   4. two commits at once: both succeed, the second waited;
#   5. a publish killed mid-way: by thin.timeout, by SIGKILL of the ingest,
#      strata itself SIGKILLed (and its ingest with it): the repository is not
#      left in a transaction, the next publish works;
#   6. a failing ingest (a real one: its upload dir made immutable): the
#      error quotes the cause;
#   7. a transaction someone else opened: refused, left open;
#   8. thin.root = the release manager's own union: refused, no hang;
#   9. the internal mount method with the default `mount -t cvmfs`;
#  10. thin verify: tampered layers (edited through a transaction), a layer
#      ingested the old way (.wh. files).
#
#   STRATA_BIN=build/strata bash tests/integration/t_cvmfs.sh      (~3 min)
# Needs root and ../shared/cvmfs (STRATA_SHARED, else the checkout's
# ../shared, else /work/shared); skipped without them.
# The remount command's "$CVMFS_TALK_SOCKET" is for the sh -c strata runs.
# shellcheck disable=SC2016
# shellcheck source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"

REPO=strata-it.test
TOP=$(cd "$(dirname "$0")/../.." && pwd)
SHARED=${STRATA_SHARED:-$TOP/../shared}
[ -x "$SHARED/cvmfs/setup" ] || SHARED=/work/shared
if [ ! -x "$SHARED/cvmfs/setup" ]; then
	echo "ok 1 # SKIP no CernVM-FS bundle: neither \$STRATA_SHARED, $TOP/../shared nor /work/shared has cvmfs/setup"
	T_N=1
	exit 0
fi
if [ "$EUID" -ne 0 ] || [ ! -x /bin/busybox ]; then
	echo "ok 1 # SKIP needs root and /bin/busybox (busybox-static)"
	T_N=1
	exit 0
fi

W=$TEST_TMP/w
mkdir -p "$W"
INT=$TEST_TMP/int # the thin root of the internal method
WRAP_PIDS=()      # process groups of the slow ingests (wrappers below)
IMMUTABLE=        # a dir made immutable for the failing ingest
SETUP_DONE=false

cvmfs_exit() {
	local rc=$? p
	# What this test started, by PID (process groups of the slow ingests).
	for p in "${WRAP_PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done
	[ -n "$IMMUTABLE" ] && chattr -i "$IMMUTABLE" 2>/dev/null
	# Unions first (they sit on the client mounts), then the internal
	# method's repository mount, then the repository itself.
	[ -d "$R/mnt" ] && st "${CV[@]}" cleanup >/dev/null 2>&1
	[ -d "$TEST_TMP/rint/mnt" ] && "$STRATA" --root "$TEST_TMP/rint" "${INT_OPTS[@]}" cleanup >/dev/null 2>&1
	unmount_under "$TEST_TMP"
	if $SETUP_DONE; then
		cvmfs_server abort -f "$REPO" >/dev/null 2>&1
		"$SHARED/cvmfs/teardown" --repo "$REPO" 2>"$TEST_TMP/teardown.err" ||
			{
				echo "# teardown failed:"
				sed 's/^/#   /' "$TEST_TMP/teardown.err"
			}
	fi
	(exit "$rc")
	fixture_exit
}
trap cvmfs_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- the repository --------------------------------------------------------------
# The repository's name is this test's own: one left by a run killed before
# its trap ran (or by a reboot, with its FUSE daemons gone) is torn down first.
if [ -d "/etc/cvmfs/repositories.d/$REPO" ]; then
	echo "# $REPO is left from an earlier run: teardown first"
	"$SHARED/cvmfs/teardown" --repo "$REPO" 2>&1 | sed 's/^/#   /'
fi
if ! out=$("$SHARED/cvmfs/setup" --repo "$REPO" 2>"$W/setup.err"); then
	fail "setup --repo $REPO" "$(tail -n 5 "$W/setup.err")"
	exit 1
fi
SETUP_DONE=true
set -a
eval "$out"
set +a
pass "setup --repo $REPO: the repository and a client mount at $CVMFS_CLIENT_MOUNT"
CVMFS_SERVER=$(command -v cvmfs_server)
REMOUNT='cvmfs_talk -p "$CVMFS_TALK_SOCKET" remount sync'
CV=(-o "thin.root=$CVMFS_CLIENT_ROOT" -o "thin.remount_cmd=$REMOUNT")
INT_OPTS=(-o thin.mount=internal -o "thin.root=$INT")
stc() { st "${CV[@]}" "$@"; }

# ---- helpers ---------------------------------------------------------------------

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

# view DIR: every entry of a merged tree: path, type, mode, owner, size and
# sha256 (files), target (symlinks), device numbers.
view() {
	python3 - "$1" <<'EOF'
import hashlib, os, stat, sys
root = sys.argv[1]
out = []
for dp, dns, fns in os.walk(root):
    for n in dns + fns:
        p = os.path.join(dp, n)
        st = os.lstat(p)
        line = "%s %s %04o %d:%d" % (os.path.relpath(p, root), stat.filemode(st.st_mode)[0],
                                     stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        if stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                line += " %d %s" % (st.st_size, hashlib.sha256(f.read()).hexdigest())
        elif stat.S_ISLNK(st.st_mode):
            line += " -> " + os.readlink(p)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            line += " %d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        out.append(line)
print("\n".join(sorted(out)))
EOF
}

# same_view DESC A B [PATH...]: the merged trees at A and B are the same
# (less the PATHs of A).
same_view() {
	local desc=$1 a=$2 b=$3 p
	shift 3
	view "$a" >"$W/a.view"
	view "$b" >"$W/b.view"
	for p in "$@"; do
		grep -v "^$p " "$W/a.view" >"$W/a.view.tmp"
		mv "$W/a.view.tmp" "$W/a.view"
	done
	if diff -u "$W/a.view" "$W/b.view" >"$W/view.diff"; then
		pass "$desc ($(wc -l <"$W/a.view") entries)"
	else
		fail "$desc" "$(head -n 30 "$W/view.diff")"
	fi
}

remount() { cvmfs_talk -p "$CVMFS_TALK_SOCKET" remount sync >/dev/null; }
# The revision the client sees, after it was told to look.
revision() {
	remount
	cvmfs_talk -p "$CVMFS_TALK_SOCKET" revision
}
# The revision the repository's server publishes (its manifest's S line).
server_revision() { curl -fsS "http://127.0.0.1/cvmfs/$REPO/.cvmfspublished" | sed -n '/^--/q;s/^S//p'; }
in_transaction() { cvmfs_server list | grep -F "$REPO (" | grep -q 'in transaction'; }
LOCKFILE=/run/lock/strata-cvmfs-$REPO.lock

# A published layer's dir in the client (.layers/<hh>/<name>), by url.
pubdir() { echo "$CVMFS_CLIENT_ROOT/$REPO/${1#cvmfs://"$REPO"/}" | sed 's,/layerfs$,,'; }

# group_alive PGID: the processes of a group still running (not zombies).
group_alive() {
	local p s st pg
	for p in /proc/[0-9]*; do
		s=$(sed 's/.*) //' "$p/stat" 2>/dev/null) || continue
		read -r st _ pg _ <<<"$s"
		[ "$pg" == "$1" ] && [ "$st" != Z ] && [ "$st" != X ] && echo "${p#/proc/}"
	done
}
group_gone() { [ -z "$(group_alive "$1")" ]; }

# wait_for SECONDS CMD...: until CMD succeeds (0) or the time is up (1).
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
}

# ================================================================================
# 1. A multi-layer chain published with thin make --publisher cvmfs
# ================================================================================
st init >/dev/null || exit 1
# L1: the base.  L2: whiteouts at several depths, an opaque dir over a
# populated dir (with nested dirs that exist below: one with new content, one
# empty here, one replaced by a file), setuid, symlinks, a hardlink, an
# xattr.  L3: empty.  L4: whiteouts of L2's files, a dir replaced by a file,
# owners 1000:1000 and 0:0.
st create L1
B=$R/diff/L1
mkdir -p "$B/bin" "$B/etc" "$B/a/b/c" "$B/opq/x/y" "$B/opq/sub/deeper" "$B/opq/z" "$B/opq/file-now" \
	"$B/home/user" "$B/tmp" "$B/keep"
cp /bin/busybox "$B/bin/busybox"
for a in sh cat ls; do ln -s busybox "$B/bin/$a"; done
echo hello >"$B/etc/hello"
echo 'root:x:0:0:root:/root:/bin/sh' >"$B/etc/passwd"
echo deep >"$B/a/b/c/deep"
echo f >"$B/a/b/f"
echo top >"$B/a/top"
echo gone >"$B/gone"
echo y >"$B/opq/x/y/f"
echo s1 >"$B/opq/sub/s1"
echo s2 >"$B/opq/sub/deeper/s2"
echo z >"$B/opq/z/g"
echo h >"$B/opq/h"
echo inside >"$B/opq/file-now/inside"
echo u >"$B/home/user/u"
chown -R 1000:1000 "$B/home/user"
chmod 1777 "$B/tmp"
echo k >"$B/keep/k"
st create L2 L1
T=$R/diff/L2
mkdir -p "$T/a/b/c" "$T/opq/x/new" "$T/opq/sub" "$T/bin" "$T/lnk"
mknod "$T/gone" c 0 0
mknod "$T/a/top" c 0 0
mknod "$T/a/b/c/deep" c 0 0
setfattr -n trusted.overlay.opaque -v y "$T/opq"
echo n >"$T/opq/x/new/n"
echo now a file >"$T/opq/file-now"
printf '#!/bin/sh\necho suid\n' >"$T/bin/suid"
chmod 4755 "$T/bin/suid"
echo shared >"$T/lnk/hl1"
ln "$T/lnk/hl1" "$T/lnk/hl2"
ln -s ../etc/hello "$T/lnk/rel"
ln -s /etc/passwd "$T/lnk/abs"
ln -s /nowhere "$T/lnk/dangling"
echo x >"$T/xa"
setfattr -n user.x -v hello "$T/xa"
st create L3 L2
st create L4 L3
F=$R/diff/L4
mkdir -p "$F/lnk" "$F/home/user"
mknod "$F/lnk/hl2" c 0 0
echo mine >"$F/home/user/mine"
chown -R 1000:1000 "$F/home/user"
echo root-owned >"$F/rootfile"
chown 0:0 "$F/rootfile"
rm -rf "$F/keep"
echo keep is a file now >"$F/keep"

if stc thin make --repo "$REPO" --publisher cvmfs L4 >"$W/img.json" 2>"$W/err"; then
	pass "thin make --publisher cvmfs publishes the 4-layer chain"
else
	fail "thin make --publisher cvmfs publishes the 4-layer chain" "$(cat "$W/err")"
	exit 1
fi
is "thin make warns about the hardlink and the xattr CernVM-FS cannot keep" \
	"$(grep -c -e 'warning: .*CernVM-FS keeps no hardlinks: 1 published as separate files' \
		-e 'warning: .*CernVM-FS keeps no xattrs: those of 1 entry dropped' "$W/err")" 2
mapfile -t D < <(for l in L1 L2 L3 L4; do st diff "$l" | sha256sum | cut -d' ' -f1; done)
mapfile -t U < <(jlayers "$W/img.json" | cut -d' ' -f2)
CHAIN1=$(printf '%s\n' "${D[0]}" | sha256sum | cut -d' ' -f1)
is "thin.json: 4 layers, base first; L2 (opaque dir flattened) at <digest>-<chain>, the others by digest" \
	"$(jlayers "$W/img.json")" \
	"${D[0]} cvmfs://$REPO/.layers/${D[0]:0:2}/${D[0]}/layerfs
${D[1]} cvmfs://$REPO/.layers/${D[1]:0:2}/${D[1]}-${CHAIN1:0:16}/layerfs
${D[2]} cvmfs://$REPO/.layers/${D[2]:0:2}/${D[2]}/layerfs
${D[3]} cvmfs://$REPO/.layers/${D[3]:0:2}/${D[3]}/layerfs"
rec() { python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
print(r["digest"], r.get("over", "-"), r["publisher"], r["losses"]["hardlinks"], r["losses"]["xattrs"])' "$(pubdir "$1")/strata-layer.json" 2>&1; }
is "L2's record: its digest, over the chain below (sha256 of L1's digest), losses" "$(rec "${U[1]}")" \
	"${D[1]} $CHAIN1 strata (cvmfs) 1 1"
is "L1's record: no chain" "$(rec "${U[0]}")" "${D[0]} - strata (cvmfs) 0 0"

# What the repository holds, through the client.
L2FS=$(pubdir "${U[1]}")/layerfs
bad=""
for w in gone a/top a/b/c/deep opq/h opq/z opq/x/y opq/sub/s1 opq/sub/deeper; do
	is_whiteout "$L2FS/$w" || bad+="$w is not a char 0:0 whiteout: $(stat -c '%F %t:%T' "$L2FS/$w" 2>&1); "
done
[ -d "$L2FS/opq/sub" ] && [ -f "$L2FS/opq/file-now" ] && [ -f "$L2FS/opq/x/new/n" ] || bad+="opq's own entries missing; "
is "L2's layerfs: whiteouts as char 0:0 devices, the opaque dir as whiteouts of every name below it" "$bad" ""
is "no .wh. name in any published layerfs" \
	"$(for u in "${U[@]}"; do find "$(pubdir "$u")/layerfs" -name '.wh.*'; done)" ""
is "the empty layer L3: an empty layerfs dir" "$(find "$(pubdir "${U[2]}")/layerfs" | wc -l) $(stat -c %F "$(pubdir "${U[2]}")/layerfs")" \
	"1 directory"
is "owners, modes and links as published" \
	"$(cd "$L2FS" && stat -c '%n %a %u:%g' bin/suid && readlink lnk/rel lnk/abs lnk/dangling &&
		stat -c '%n %u:%g' "$(pubdir "${U[0]}")/layerfs/home/user/u" | sed 's,.*/layerfs/,,')" \
	"bin/suid 4755 0:0
../etc/hello
/etc/passwd
/nowhere
home/user/u 1000:1000"

# The thin image, a container on it, and the same chain from the store.
thin_tar "$W/img.json" "$W/img.tar"
st create IMG
check "apply the thin.json tar as layer IMG" stc apply --quiet IMG -i "$W/img.tar"
st create C-init IMG
st create C C-init
if pc=$(stc mount C 2>"$W/err"); then
	pass "a container on the thin image mounts"
	pl=$(st mount L4)
	same_view "its merged view = L4's from the store (path, type, mode, owner, size, sha256, target)" "$pl" "$pc"
	is "the container runs busybox and the setuid script from the repository" \
		"$(chroot "$pc" /bin/sh -c 'cat /etc/hello; /bin/suid; ls /opq; ls -A /opq/sub; echo end; test -e /gone || echo no-gone' 2>&1)" \
		"hello
suid
file-now
sub
x
end
no-gone"
	st umount L4
	stc umount C
else
	fail "a container on the thin image mounts" "$(cat "$W/err")"
fi
out=$(stc thin verify IMG 2>&1)
rc=$?
is "thin verify: every layer ok (exit $rc)" "$(printf '%s\n' "$out" | grep -cE '^[0-9]+ ok sha256:') $rc" "4 0"
is "thin verify: notes for the hardlink and the xattr" \
	"$(printf '%s\n' "$out" | grep -c 'note: 1 hardlink published as separate files; the xattrs of 1 entry not kept')" 1

# ================================================================================
# 2. No republishing
# ================================================================================
rev0=$(revision)
if stc thin make --repo "$REPO" --publisher cvmfs L4 >"$W/img2.json" 2>"$W/err"; then
	is "thin make again: the same thin.json" "$(jlayers "$W/img2.json")" "$(jlayers "$W/img.json")"
else
	fail "thin make again: the same thin.json" "$(cat "$W/err")"
fi
is "thin make again: no new revision of the repository" "$(revision)" "$rev0"
for p in "dir:$TEST_TMP/nonexistent" 'cmd:echo must not run >&2; false'; do
	if stc thin make --repo "$REPO" --publisher "$p" L4 >"$W/img3.json" 2>"$W/err"; then
		is "thin make with --publisher ${p%%:*}: nothing to publish, the same thin.json (the publisher never runs)" \
			"$(jlayers "$W/img3.json")" "$(jlayers "$W/img.json")"
	else
		fail "thin make with --publisher ${p%%:*}: nothing to publish, the same thin.json (the publisher never runs)" "$(cat "$W/err")"
	fi
done
is "... and still no new revision" "$(revision)" "$rev0"

# A publish whose client was never told (a remount command that does
# nothing): it fails, waiting for the layer to appear; publishing it again
# does not ingest it again, it tells the client.
st create Y IMG
echo y >"$R/diff/Y/y"
srev0=$(server_revision)
err=$(stc -o thin.publisher=cvmfs -o thin.remount_cmd=true -o thin.timeout=5 diff Y -o "$W/y.tar" 2>&1)
rc=$?
if [ "$rc" == 1 ] && [[ $err == *"published, but the layer did not appear at "*" within 5s"* ]]; then
	pass "a publish whose client is not told: published, but it fails saying the layer did not appear"
else
	fail "a publish whose client is not told: published, but it fails saying the layer did not appear" "rc=$rc" "$err"
fi
is "... one new revision on the server" "$(server_revision)" "$((srev0 + 1))"
check "publishing it again succeeds" stc -o thin.publisher=cvmfs diff Y -o "$W/y.tar"
is "... without ingesting it again (no new revision on the server)" "$(server_revision)" "$((srev0 + 1))"
tar -xOf "$W/y.tar" thin.json >"$W/y.json" 2>/dev/null
thin_tar "$W/y.json" "$W/yt.tar"
st create YT
stc apply --quiet YT -i "$W/yt.tar" >/dev/null
st create YT-c YT
p=$(stc mount YT-c 2>&1)
is "... and the layer runs" "$(cat "$p/y" 2>&1)" y
stc umount YT-c >/dev/null 2>&1

# ================================================================================
# 3. Commit: diff of a layer on the thin image publishes it
# ================================================================================
st create K-init IMG
echo container >"$R/diff/K-init/hostname"
st create K K-init
pk=$(stc mount K)
(
	set -e
	cd "$pk"
	echo committed >committed
	echo more >>etc/hello
	rm a/b/f
	rm -r opq && mkdir opq && echo again >opq/again
	chmod 0600 etc/passwd
) || fail "changes in the container K"
stc umount K
rev0=$(revision)
if stc -o thin.publisher=cvmfs diff K -o "$W/k.tar" 2>"$W/err"; then
	pass "diff K on the thin image with thin.publisher=cvmfs"
else
	fail "diff K on the thin image with thin.publisher=cvmfs" "$(cat "$W/err")"
fi
is "diff K: a tar holding only thin.json" "$(tar -tf "$W/k.tar" 2>&1)" "thin.json"
tar -xOf "$W/k.tar" thin.json >"$W/k.json"
DK=$(jlayers "$W/k.json" | sed -n 5p | cut -d' ' -f1)
CHAINK=$(printf '%s\n' "${D[@]}" | sha256sum | cut -d' ' -f1)
is "the new thin.json: the image's 4 layers, K's on top (flattened over them: opq is opaque in K)" \
	"$(jlayers "$W/k.json" | cut -d' ' -f1 | head -n 4; jlayers "$W/k.json" | sed -n 5p | cut -d' ' -f2)" \
	"$(printf '%s\n' "${D[@]}")
cvmfs://$REPO/.layers/${DK:0:2}/$DK-${CHAINK:0:16}/layerfs"
is "one new revision" "$(revision)" "$((rev0 + 1))"
thin_tar "$W/k.json" "$W/kt.tar"
st create KT
stc apply --quiet KT -i "$W/kt.tar" >/dev/null
st create KT-c KT
if p=$(stc mount KT-c 2>"$W/err"); then
	pk=$(stc mount K)
	same_view "a container on the committed image mounts at once, = K's view from the store (less K-init's file)" \
		"$pk" "$p" hostname
	is "... with the changes" "$(cat "$p/committed" "$p/opq/again"; ls "$p/opq"; test -e "$p/hostname" || echo no-init)" \
		"committed
again
again
no-init"
	stc umount K
	stc umount KT-c
else
	fail "a container on the committed image mounts at once" "$(cat "$W/err")"
fi

# ================================================================================
# 4. Two commits at once
# ================================================================================
# A PATH wrapper makes every ingest take 3 s more, so that the second
# publish certainly comes while the first holds the repository.
mkdir -p "$W/slow3"
cat >"$W/slow3/cvmfs_server" <<EOF
#!/bin/bash
[ "\$1" == ingest ] && sleep 3
exec $CVMFS_SERVER "\$@"
EOF
chmod +x "$W/slow3/cvmfs_server"
for k in 1 2; do
	st create "P$k" IMG
	echo "p$k" >"$R/diff/P$k/p$k"
	head -c 2000000 /dev/urandom >"$R/diff/P$k/big$k"
done
PATH=$W/slow3:$PATH stc -o thin.publisher=cvmfs diff P1 -o "$W/p1.tar" 2>"$W/p1.err" &
pid1=$!
BG_PIDS+=("$pid1")
wait_for 60 sh -c "! flock -n '$LOCKFILE' true" || fail "the first publish takes the repository's lock"
PATH=$W/slow3:$PATH stc -o thin.publisher=cvmfs diff P2 -o "$W/p2.tar" 2>"$W/p2.err" &
pid2=$!
BG_PIDS+=("$pid2")
wait "$pid1"
rc1=$?
wait "$pid2"
rc2=$?
is "two commits at once: both succeed" "$rc1 $rc2" "0 0"
is "the second one said that it waited for the first" \
	"$(grep -c "note: publish to $REPO: waiting for another publish to finish" "$W/p1.err" "$W/p2.err" | tr '\n' ' ')" \
	"$W/p1.err:0 $W/p2.err:1 "
for k in 1 2; do
	tar -xOf "$W/p$k.tar" thin.json >"$W/p$k.json" 2>/dev/null
	thin_tar "$W/p$k.json" "$W/p${k}t.tar"
	st create "P${k}T"
	stc apply --quiet "P${k}T" -i "$W/p${k}t.tar" >/dev/null
	st create "P${k}T-c" "P${k}T"
	p=$(stc mount "P${k}T-c" 2>&1)
	is "commit $k runs at once" "$(cat "$p/p$k" 2>&1) $(cmp "$p/big$k" "$R/diff/P$k/big$k" 2>&1 && echo same)" "p$k same"
	stc umount "P${k}T-c" >/dev/null 2>&1
done

# ================================================================================
# 5. A publish killed mid-way
# ================================================================================
# A wrapper in which ingest reads its tar through a pipe that gives the
# first 10 KiB and then nothing: the real ingest opens its transaction and
# waits, forever.  It records its pid (its process group's: sh -c execs it).
mkdir -p "$W/slow"
cat >"$W/slow/cvmfs_server" <<EOF
#!/bin/bash
if [ "\$1" == ingest ]; then
	args=() tar=
	while [ \$# -gt 0 ]; do
		case \$1 in
		-t) tar=\$2; args+=(-t -); shift 2 ;;
		*) args+=("\$1"); shift ;;
		esac
	done
	echo "\$\$ \$(ps -o pgid= -p \$\$)" >"$W/slow.pid"
	exec $CVMFS_SERVER "\${args[@]}" < <(head -c 10240 "\$tar"; exec sleep 600)
fi
# A machine so loaded that listing the repositories takes SLOW_LIST s.
[ "\$1" == list ] && [ -n "\${SLOW_LIST:-}" ] && sleep "\$SLOW_LIST"
exec $CVMFS_SERVER "\$@"
EOF
chmod +x "$W/slow/cvmfs_server"
# slow_publish ID ARGS...: strata diff ID in the background, with the slow
# ingest; sets SLOW_PID (strata), SLOW_PG (the ingest's process group, once
# known).
slow_publish() {
	local id=$1
	shift
	rm -f "$W/slow.pid"
	# exec: SLOW_PID is strata itself.
	(PATH=$W/slow:$PATH exec "$STRATA" --root "$R" "${CV[@]}" -o thin.publisher=cvmfs "$@" diff "$id" \
		-o "$W/$id.tar" 2>"$W/$id.err") &
	SLOW_PID=$!
	BG_PIDS+=("$SLOW_PID")
	SLOW_PG=
	if wait_for 60 test -s "$W/slow.pid"; then
		SLOW_PG=$(awk '{print $2}' "$W/slow.pid")
		WRAP_PIDS+=("$SLOW_PG")
	fi
}
for k in 1 2 3 4; do
	st create "X$k" IMG
	echo "x$k" >"$R/diff/X$k/x$k"
	head -c 3000000 /dev/urandom >"$R/diff/X$k/big"
done

# a. killed by thin.timeout, while in its transaction.
t0=$SECONDS
slow_publish X1 -o thin.timeout=15
seen=no
wait_for 30 in_transaction && seen=yes
wait "$SLOW_PID"
rc=$?
is "a. an ingest that hangs: the repository was in a transaction, the publish fails" "$seen $rc" "yes 1"
if grep -q 'did not finish within 15s (killed)' "$W/X1.err" && ((SECONDS - t0 < 120)); then
	pass "a. ... after thin.timeout, saying so ($((SECONDS - t0))s)"
else
	fail "a. ... after thin.timeout, saying so ($((SECONDS - t0))s)" "$(cat "$W/X1.err")"
fi
is "a. the repository is not left in a transaction" "$(in_transaction && echo yes)" ""
is "a. nothing of the ingest is left running" "$(group_alive "${SLOW_PG:-0}")" ""

# b. the ingest SIGKILLed in its transaction.
slow_publish X2
wait_for 60 in_transaction || fail "b. the slow ingest opens its transaction"
sleep 1
kill -KILL "$(awk '{print $1}' "$W/slow.pid")"
t0=$SECONDS
wait "$SLOW_PID"
rc=$?
is "b. the ingest SIGKILLed: the publish fails" "$rc" 1
if grep -q 'cvmfs_server ingest: .*\(killed by signal 9\|status 137\)' "$W/X2.err" && ((SECONDS - t0 < 60)); then
	pass "b. ... at once, saying the ingest was killed"
else
	fail "b. ... at once, saying the ingest was killed" "$(cat "$W/X2.err")"
fi
if in_transaction; then
	fail "b. the repository is not left in a transaction" "strata said:" "$(cat "$W/X2.err")"
else
	pass "b. the repository is not left in a transaction"
fi
is "b. nothing of the ingest is left running" "$(group_alive "${SLOW_PG:-0}")" ""

# d. thin.timeout shorter than `cvmfs_server list` takes (a loaded
# machine): the look at the transaction and its abort after the ingest is
# killed are not cut short by it.
export SLOW_LIST=10
slow_publish X4 -o thin.timeout=8
seen=no
wait_for 60 in_transaction && seen=yes
wait "$SLOW_PID"
rc=$?
unset SLOW_LIST
is "d. thin.timeout=8, listing takes 10s: the ingest opened its transaction, the publish fails" "$seen $rc" "yes 1"
if in_transaction; then
	fail "d. the repository is not left in a transaction" "strata said:" "$(cat "$W/X4.err")"
else
	pass "d. the repository is not left in a transaction"
fi

# c. strata itself SIGKILLed during the ingest, and its ingest with it (as
# when a service's processes are all killed).
slow_publish X3
wait_for 60 in_transaction || fail "c. the slow ingest opens its transaction"
sleep 1
kill -KILL "$SLOW_PID"
kill -KILL -- "-$SLOW_PG"
wait "$SLOW_PID" 2>/dev/null
wait_for 10 group_gone "$SLOW_PG"
is "c. strata and its ingest killed: the repository is left in a transaction" "$(in_transaction && echo yes)" yes
for k in 1 2 3 4; do
	if stc -o thin.publisher=cvmfs diff "X$k" -o "$W/X$k.tar" 2>"$W/X$k.err"; then
		pass "the next publish works (X$k)"
	else
		fail "the next publish works (X$k)" "$(cat "$W/X$k.err")"
	fi
done
is "c. ... the next publish said it aborted what the killed one left" \
	"$(grep -c "warning: publish to $REPO: .*did not finish.*aborted" "$W/X1.err" "$W/X2.err" "$W/X3.err" "$W/X4.err" |
		tr '\n' ' ')" "$W/X1.err:1 $W/X2.err:0 $W/X3.err:0 $W/X4.err:0 "
is "the repository is not in a transaction" "$(in_transaction && echo yes)" ""
tar -xOf "$W/X3.tar" thin.json >"$W/x3.json" 2>/dev/null
thin_tar "$W/x3.json" "$W/x3t.tar"
st create X3T
stc apply --quiet X3T -i "$W/x3t.tar" >/dev/null
st create X3T-c X3T
p=$(stc mount X3T-c 2>&1)
is "the layer of the publish killed in c. runs, whole" "$(cat "$p/x3" 2>&1) $(cmp "$p/big" "$R/diff/X3/big" 2>&1 && echo same)" "x3 same"
stc umount X3T-c >/dev/null 2>&1

# ================================================================================
# 6. A failing ingest (a real one: its upload dir made immutable)
# ================================================================================
st create FI IMG
echo failing >"$R/diff/FI/fi"
TXN=$(sed -n 's/^CVMFS_UPSTREAM_STORAGE=local,\([^,]*\),.*/\1/p' "/etc/cvmfs/repositories.d/$REPO/server.conf")
rev0=$(revision)
if [ -d "$TXN" ] && chattr +i "$TXN" 2>/dev/null; then
	IMMUTABLE=$TXN
	err=$(stc -o thin.publisher=cvmfs diff FI -o "$W/fi.tar" 2>&1)
	rc=$?
	chattr -i "$TXN"
	IMMUTABLE=
	if [ "$rc" != 0 ] && [[ $err == *"cvmfs_server ingest: "*"exited with status 1: Failed to create temp file in $TXN"* ]]; then
		pass "a failing ingest: the error quotes its cause"
	else
		fail "a failing ingest: the error quotes its cause" "rc=$rc" "$err"
	fi
	is "a failing ingest: no transaction left, no new revision" "$(in_transaction && echo yes) $(revision)" " $rev0"
	check "a failing ingest: the next publish works" stc -o thin.publisher=cvmfs diff FI -o "$W/fi.tar"
else
	skip "a failing ingest" "chattr +i $TXN failed"
fi

# ================================================================================
# 7. A transaction someone else opened
# ================================================================================
st create TX IMG
echo tx >"$R/diff/TX/tx"
# Also a record of a killed publish that strata did not write (the lock
# dir is world-writable): it does not make that transaction strata's.
MARKER=/run/lock/strata-cvmfs-$REPO.ingest
echo 999999 >"$MARKER"
chown 65534:65534 "$MARKER"
cvmfs_server transaction "$REPO" >/dev/null 2>&1 || fail "cvmfs_server transaction $REPO"
err=$(timeout 120 "$STRATA" --root "$R" "${CV[@]}" -o thin.publisher=cvmfs diff TX -o "$W/tx.tar" 2>&1)
rc=$?
if [ "$rc" == 1 ] && [[ $err == *"repository $REPO is in a transaction strata did not open; it is left alone"* ]]; then
	pass "someone else's transaction: the publish fails with a clear message"
else
	fail "someone else's transaction: the publish fails with a clear message" "rc=$rc" "$err"
fi
is "someone else's transaction is left open" "$(in_transaction && echo yes)" yes
is "a record of a killed publish that is not strata's is ignored, said so" \
	"$(grep -c "warning: publish to $REPO: $MARKER is not a file strata wrote: ignored" <<<"$err")" 1
rm -f "$MARKER"
cvmfs_server abort -f "$REPO" >/dev/null 2>&1
check "after the abort, the publish works" stc -o thin.publisher=cvmfs diff TX -o "$W/tx.tar"

# ================================================================================
# 8. The release manager's own union as thin root
# ================================================================================
st create DL IMG
echo dl >"$R/diff/DL/dl"
t0=$SECONDS
err=$(timeout 120 "$STRATA" --root "$R" -o thin.root="$(dirname "$CVMFS_PUBLISH_UNION")" -o thin.publisher=cvmfs \
	diff DL -o "$W/dl.tar" 2>&1)
rc=$?
if [ "$rc" == 1 ] && [[ $err == *"is the release manager's own union mount of repository $REPO"*"mount a separate client"* ]] &&
	((SECONDS - t0 < 60)); then
	pass "thin.root=$(dirname "$CVMFS_PUBLISH_UNION"): refused, at once, telling to mount a separate client"
else
	fail "thin.root=$(dirname "$CVMFS_PUBLISH_UNION"): refused, at once, telling to mount a separate client" "rc=$rc" "$err"
fi
err=$(timeout 120 "$STRATA" --root "$R" -o thin.root="$(dirname "$CVMFS_PUBLISH_UNION")" thin make --repo "$REPO" \
	--publisher cvmfs DL 2>&1)
rc=$?
if [ "$rc" == 1 ] && [[ $err == *"mount a separate client"* ]]; then
	pass "... and thin make the same"
else
	fail "... and thin make the same" "rc=$rc" "$err"
fi
is "nothing left in a transaction" "$(in_transaction && echo yes)" ""

# ================================================================================
# 9. The internal mount method, default `mount -t cvmfs`
# ================================================================================
RI=$TEST_TMP/rint
sti() { "$STRATA" --root "$RI" "${INT_OPTS[@]}" "$@"; }
sti init >/dev/null
sti create IMG
sti apply --quiet IMG -i "$W/kt.tar" >/dev/null
sti create I1-init IMG
sti create I1 I1-init
if p=$(sti mount I1 2>"$W/err"); then
	is "internal: a container on the thin image mounts; the repository mounted with mount -t cvmfs" \
		"$(cat "$p/committed") $(findmnt -rn -o SOURCE,FSTYPE -M "$INT/$REPO")" "committed cvmfs2 fuse"
	# A commit while it runs: the default remount command
	# (cvmfs_talk -i REPO remount sync) tells that client.
	echo internal >"$p/internal-file"
	if sti -o thin.publisher=cvmfs -o thin.timeout=120 diff I1 -o "$W/i1.tar" 2>"$W/err"; then
		pass "internal: a commit while the repository is mounted (default remount command)"
		tar -xOf "$W/i1.tar" thin.json >"$W/i1.json"
		u=$(jlayers "$W/i1.json" | tail -n 1 | cut -d' ' -f2)
		is "internal: ... the client mounted with mount -t cvmfs sees the new layer at once" \
			"$(cat "$INT/$REPO/${u#cvmfs://"$REPO"/}/internal-file" 2>&1)" internal
	else
		fail "internal: a commit while the repository is mounted (default remount command)" "$(cat "$W/err")"
	fi
	sti umount I1
	is "internal: the repository is unmounted after the last umount" "$(findmnt -rn -M "$INT/$REPO" | wc -l)" 0
else
	fail "internal: a container on the thin image mounts" "$(cat "$W/err")"
fi
# A commit while nothing holds the repository: nobody to tell.
sti create I2 IMG
echo i2 >"$RI/diff/I2/i2"
t0=$SECONDS
if sti -o thin.publisher=cvmfs -o thin.timeout=60 diff I2 -o "$W/i2.tar" 2>"$W/err"; then
	pass "internal: a commit while the repository is not mounted ($((SECONDS - t0))s)"
else
	fail "internal: a commit while the repository is not mounted ($((SECONDS - t0))s)" "$(cat "$W/err")"
fi
tar -xOf "$W/i2.tar" thin.json >"$W/i2.json" 2>/dev/null
thin_tar "$W/i2.json" "$W/i2t.tar"
sti create I2T
sti apply --quiet I2T -i "$W/i2t.tar" >/dev/null
sti create I2T-c I2T
p=$(sti mount I2T-c 2>&1)
is "internal: ... a container on it mounts the repository and sees the commit" "$(cat "$p/i2" 2>&1)" i2
sti umount I2T-c >/dev/null 2>&1
is "internal: nothing mounted at the end" "$(mounts_under "$INT" | wc -l)" 0

# ================================================================================
# 10. thin verify of tampered layers, of a layer published the old way
# ================================================================================
# Tampered: L1's /etc/hello gets other content, L4's /rootfile another mode,
# edited through a transaction of the release manager.  On some kernels the
# release manager's union cannot copy a file up from its CernVM-FS lower
# dir (EOVERFLOW, "Value too large for defined data type", here with 6.18):
# then the same edits are ingested over the published layers instead.
L1REL=${U[0]#cvmfs://"$REPO"/}
L4REL=${U[3]#cvmfs://"$REPO"/}
tampered=false
if cvmfs_server transaction "$REPO" >"$W/tamper.log" 2>&1; then
	if { echo tampered >"$CVMFS_PUBLISH_UNION/$L1REL/etc/hello"; } 2>>"$W/tamper.log" &&
		chmod 0600 "$CVMFS_PUBLISH_UNION/$L4REL/rootfile" 2>>"$W/tamper.log"; then
		cvmfs_server publish "$REPO" >>"$W/tamper.log" 2>&1 && tampered=true
	else
		echo "# editing in the transaction failed: $(grep -m1 'Value too large\|cannot\|Permission' "$W/tamper.log")"
		cvmfs_server abort -f "$REPO" >>"$W/tamper.log" 2>&1
		mkdir -p "$W/tamper/etc" "$W/tamper/top"
		echo tampered >"$W/tamper/etc/hello"
		cp -p "$(pubdir "${U[3]}")/layerfs/rootfile" "$W/tamper/top/rootfile"
		chmod 0600 "$W/tamper/top/rootfile"
		tar --numeric-owner -C "$W/tamper/etc" -cf "$W/tamper/etc.tar" hello
		tar --numeric-owner -C "$W/tamper/top" -cf "$W/tamper/top.tar" rootfile
		cvmfs_server ingest -k -t "$W/tamper/etc.tar" -b "$L1REL/etc" "$REPO" >>"$W/tamper.log" 2>&1 &&
			cvmfs_server ingest -k -t "$W/tamper/top.tar" -b "$L4REL" "$REPO" >>"$W/tamper.log" 2>&1 &&
			tampered=true
	fi
fi
if $tampered; then
	remount
	out=$(stc thin verify IMG 2>"$W/err")
	rc=$?
	if [ "$rc" == 1 ] && [[ $out == *"0 BAD sha256:${D[0]}"*'"/etc/hello" size differs from what was published'* ]] &&
		[[ $out == *"3 BAD sha256:${D[3]}"*'"/rootfile" mode 0600, published 0644'* ]] &&
		[[ $out == *"1 ok sha256:${D[1]}"* ]] && grep -q "2 of 4 layers failed verification" "$W/err"; then
		pass "thin verify of tampered layers: exit 1, BAD naming the changed file and the changed mode"
	else
		fail "thin verify of tampered layers: exit 1, BAD naming the changed file and the changed mode" "rc=$rc" "$out" "$(cat "$W/err")"
	fi
else
	fail "tamper with the published layers" "$(tail -n 5 "$W/tamper.log")"
	cvmfs_server abort -f "$REPO" >/dev/null 2>&1
fi

# The old way: the standard layer tar (.wh. files) ingested as it is.
st create OW IMG
mkdir -p "$R/diff/OW/etc"
mknod "$R/diff/OW/etc/hello" c 0 0
echo ow >"$R/diff/OW/ow"
OLD='cmd:cvmfs_server ingest -k -t - -b "$STRATA_LAYER_PATH" "$STRATA_REPO"'
if stc thin make --repo "$REPO" --publisher "$OLD" OW >"$W/ow.json" 2>"$W/err"; then
	pass "thin make with the command publisher (ingest of the layer tar on stdin)"
else
	fail "thin make with the command publisher (ingest of the layer tar on stdin)" "$(cat "$W/err")"
fi
remount
DOW=$(jlayers "$W/ow.json" | tail -n 1 | cut -d' ' -f1)
thin_tar "$W/ow.json" "$W/owt.tar"
st create OWT
stc apply --quiet OWT -i "$W/owt.tar" >/dev/null
out=$(stc thin verify OWT 2>&1)
rc=$?
if [ "$rc" == 1 ] && [[ $out == *"BAD sha256:$DOW"*'"/etc/.wh.hello" is a .wh. name: overlay shows it as a file'* ]]; then
	pass "thin verify of the layer ingested the old way: BAD, naming the .wh. entry"
else
	fail "thin verify of the layer ingested the old way: BAD, naming the .wh. entry" "rc=$rc" "$out"
fi

is "no overlay of this test left mounted" "$(overlay_count)" 0
is "the repository is not in a transaction at the end" "$(in_transaction && echo yes)" ""
