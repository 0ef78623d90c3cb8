#!/bin/bash
# A real root filesystem through apply and diff: a Debian minbase (debootstrap,
# cached as a GNU tar in /var/cache/strata-test; a busybox-static tree when
# debootstrap cannot run) plus a dir of awkward entries (xattrs, devices, fifo,
# setuid, hardlinks, sparse, long and odd names).  Apply it, export it, compare
# entry by entry with tarcmp.py; re-export is byte-identical; gzip, zstd and xz
# input gives the same layer; uid/gid maps shift owners in and back out.
. "$(dirname "$0")/lib.sh"
W=$TEST_TMP/work
mkdir -p "$W"
GTAR=(tar --numeric-owner --xattrs --xattrs-include='*')

CACHE_DIR=${STRATA_TEST_CACHE:-/var/cache/strata-test}
CACHE=$CACHE_DIR/minbase.tar

# The cached tar is only ever created by rename, so a file at $CACHE is whole;
# tar -tf guards against anything else put there.  The lock keeps parallel
# runs (plain and sanitizer builds) from bootstrapping twice.
minbase_tar() {
	mkdir -p "$CACHE_DIR" || return 1
	(
		flock -w 900 9 || exit 1
		if [ -f "$CACHE" ] && tar -tf "$CACHE" >/dev/null 2>&1; then exit 0; fi
		rm -f "$CACHE" "$CACHE".tmp.*
		dir=$TEST_TMP/minbase
		if ! timeout 900 debootstrap --variant=minbase bookworm "$dir" \
			http://deb.debian.org/debian >"$TEST_TMP/debootstrap.log" 2>&1; then
			unmount_under "$dir"
			exit 1
		fi
		unmount_under "$dir"
		if ! "${GTAR[@]}" -C "$dir" -cf "$CACHE.tmp.$$" . || ! mv "$CACHE.tmp.$$" "$CACHE"; then
			rm -f "$CACHE.tmp.$$"
			exit 1
		fi
		rm -rf "$dir"
	) 9>"$CACHE_DIR/.lock"
}

busybox_rootfs() {
	local d=$1 a
	mkdir -p "$d"/{bin,sbin,etc,dev,root,proc,sys,usr/bin,var/log,var/spool/mail} &&
		install -m 0755 "$(command -v busybox)" "$d/bin/busybox" &&
		"$d/bin/busybox" --install -s "$d/bin" || return 1
	for a in sh ls cat; do [ -L "$d/bin/$a" ] || return 1; done
	printf 'root:x:0:0:root:/root:/bin/sh\nmail:x:8:8::/var/spool/mail:/bin/false\n' >"$d/etc/passwd"
	printf 'root:x:0:\nshadow:x:42:\nmail:x:8:\n' >"$d/etc/group"
	printf 'root:*:19000:0:99999:7:::\n' >"$d/etc/shadow"
	chown 0:42 "$d/etc/shadow" && chmod 0640 "$d/etc/shadow"
	chown 8:8 "$d/var/spool/mail" && chmod 2775 "$d/var/spool/mail"
	mkdir -m 1777 "$d/tmp"
	chmod 0700 "$d/root"
	mknod -m 666 "$d/dev/null" c 1 3 && mknod -m 666 "$d/dev/zero" c 1 5 &&
		mknod -m 600 "$d/dev/console" c 5 1 && mknod -m 660 "$d/dev/loop0" b 7 0 || return 1
	cp "$d/bin/busybox" "$d/usr/bin/passwd" && chmod 4755 "$d/usr/bin/passwd" &&
		ln "$d/usr/bin/passwd" "$d/usr/bin/chage" && ln -f "$d/usr/bin/passwd" "$d/bin/su"
}

# Entries a root filesystem may lack, appended under ./strata-extras.
make_extras() {
	local x=$1/strata-extras
	mkdir -p "$x/empty-dir" "$x/sub/deeper" || return 1
	echo "user xattr" >"$x/xattr-user"
	setfattr -n user.one -v "value one" "$x/xattr-user" &&
		setfattr -n user.binary -v 0x00ff10 "$x/xattr-user" || return 1
	echo trusted >"$x/xattr-trusted"
	setfattr -n trusted.strata-test -v yes "$x/xattr-trusted" || return 1
	cp "$(command -v busybox)" "$x/capable"
	# cap_net_bind_service=ep, VFS_CAP_REVISION_2
	setfattr -n security.capability -v 0x0100000200040000000000000000000000000000 "$x/capable" || return 1
	setfattr -n user.on-dir -v d "$x/sub" || return 1
	truncate -s 4M "$x/sparse" && printf 'middle' | dd of="$x/sparse" bs=1 seek=1048576 conv=notrunc status=none
	: >"$x/empty"
	printf 'one\n' >"$x/hard-a"
	ln "$x/hard-a" "$x/sub/hard-b" && ln "$x/hard-a" "$x/sub/deeper/0-hard-c"
	ln -s ../hard-a "$x/sub/rel-link"
	ln -s /nonexistent/target "$x/dangling"
	mkfifo -m 0640 "$x/fifo"
	mknod -m 0600 "$x/chr" c 4 64 && mknod -m 0600 "$x/blk" b 8 1 || return 1
	printf 'suid\n' >"$x/setuid" && chmod 4711 "$x/setuid"
	printf 'sgid\n' >"$x/setgid" && chmod 2755 "$x/setgid"
	mkdir -m 1777 "$x/sticky"
	printf 'owned\n' >"$x/owned" && chown 1000:1000 "$x/owned"
	printf 'nobody\n' >"$x/nobody" && chown 65534:65534 "$x/nobody"
	printf 'mixed\n' >"$x/mixed" && chown 0:1000 "$x/mixed" && chmod 0460 "$x/mixed"
	printf 'long\n' >"$x/$(printf 'L%.0s' $(seq 1 180))"
	local deep=$x/deep
	for i in $(seq 1 40); do deep=$deep/level$i; done
	mkdir -p "$deep" && echo bottom >"$deep/bottom"
	printf 'sp\n' >"$x/with space" && printf 'nl\n' >"$x/new
line" && printf 'u\n' >"$x/ünïcödé-名前"
	printf 'bs\n' >"$x/back\\slash"
	printf 'old\n' >"$x/old" && touch -h -d @0 "$x/old"
	printf 'future\n' >"$x/future" && touch -d @8589934592 "$x/future"
	printf 'frac\n' >"$x/fraction" && touch -d '2001-02-03 04:05:06.789' "$x/fraction"
	touch -h -d @1234567890 "$x/dangling"
	touch -d @1500000000 "$x/sub/deeper" "$x/sub" "$x/empty-dir" "$x"
}

st init || exit 1

ROOTFS=$W/rootfs.tar
if minbase_tar; then
	cp "$CACHE" "$ROOTFS"
	pass "root filesystem: debootstrap minbase bookworm ($CACHE)"
else
	echo "# debootstrap failed (no network?), falling back to a busybox-static rootfs"
	[ -f "$TEST_TMP/debootstrap.log" ] && tail -n 3 "$TEST_TMP/debootstrap.log" | sed 's/^/#   /'
	if busybox_rootfs "$W/bb" && "${GTAR[@]}" -C "$W/bb" -cf "$ROOTFS" .; then
		pass "root filesystem: busybox-static fallback"
	else
		fail "could not build a root filesystem (neither debootstrap nor busybox)"
		exit 1
	fi
fi
# --sparse: the sparse file goes in as a GNU sparse entry, holes and all.
if make_extras "$W/extras" && "${GTAR[@]}" --sparse -C "$W/extras" -rf "$ROOTFS" ./strata-extras; then
	pass "appended ./strata-extras (xattrs, devices, sparse, hardlinks, odd names)"
else
	fail "could not build the extras dir"
	exit 1
fi
"${GTAR[@]}" -C "$W/extras" -cf "$W/extras.tar" ./strata-extras || { fail "tar the extras"; exit 1; }
rm -rf "$W/bb" "$W/extras"

# Compressed copies, made while the plain tar is applied and exported.
gzip -1 -c "$ROOTFS" >"$W/rootfs.tar.gz" &
BG_PIDS+=($!)
zstd -q -1 -c "$ROOTFS" >"$W/rootfs.tar.zst" &
BG_PIDS+=($!)
xz -0 -T2 -c "$ROOTFS" >"$W/rootfs.tar.xz" &
BG_PIDS+=($!)

NENTRIES=$(tar -tf "$ROOTFS" | wc -l)
SIZE=$(python3 "$TARCHAIN" size "$ROOTFS")
echo "# rootfs.tar: $NENTRIES entries, $SIZE bytes of regular files"

# apply_ok DESC STRATA-ARGS...: apply succeeds, prints $SIZE, stderr empty.
apply_ok() {
	local desc=$1 out rc
	shift
	out=$(st "$@" 2>"$W/apply.err")
	rc=$?
	if [ "$rc" -ne 0 ]; then
		fail "$desc" "exit $rc" "$(cat "$W/apply.err")"
		return 1
	fi
	is "$desc: prints the size of its regular files (each inode once)" "$out" "$SIZE"
	is "$desc: nothing on stderr (not a terminal: no progress line)" "$(cat "$W/apply.err")" ""
}

cap_hex() { getfattr -e hex -n security.capability "$1" 2>/dev/null | sed -n 's/^security.capability=//p'; }

diff_dir_layers_only() {
	local d extra=""
	for d in "$R"/diff/* "$R"/diff/.[!.]*; do
		[ -e "$d" ] || continue
		[ -e "$R/layers/${d##*/}" ] || extra+="${d##*/} "
	done
	is "$1: ROOT/diff holds only layer dirs" "$extra" ""
}

# ---- apply and export --------------------------------------------------------
st create base
apply_ok "apply base -i rootfs.tar" apply base -i "$ROOTFS"
check "diff base -o out.tar" st diff base -o "$W/out.tar"
tarcmp "exported tar matches the original entry by entry" "$ROOTFS" "$W/out.tar"
out=$(python3 "$TARCHAIN" order "$W/out.tar" 2>&1)
is "exported names: no ./, dirs with /, sorted by path" "$out" ""
is "diff dir holds the tree: etc/passwd" "$(stat -c '%u:%g %a %F' "$R/diff/base/etc/passwd")" \
	"0:0 644 regular file"
is "diff dir: the setuid bit survives" "$(stat -c '%a' "$R/diff/base/strata-extras/setuid")" 4711
is "diff dir: a char device" "$(stat -c '%F %t:%T' "$R/diff/base/strata-extras/chr")" \
	"character special file 4:40"
is "diff dir: a hardlink group of three" "$(stat -c '%h' "$R/diff/base/strata-extras/hard-a")" 3
is "diff dir: security.capability" \
	"$(cap_hex "$R/diff/base/strata-extras/capable")" \
	0x0100000200040000000000000000000000000000
is "diff dir: the sparse file keeps its length and data" \
	"$(stat -c %s "$R/diff/base/strata-extras/sparse") $(dd if="$R/diff/base/strata-extras/sparse" bs=1 skip=1048576 count=6 status=none)" \
	"4194304 middle"
is "diff dir: the sparse file stays sparse" \
	"$([ "$(stat -c %b "$R/diff/base/strata-extras/sparse")" -lt 1024 ] && echo sparse || echo dense)" sparse
diff_dir_layers_only "after apply"

st diff base >"$W/stdout.tar"
check "diff to stdout is the same bytes as -o" cmp "$W/out.tar" "$W/stdout.tar"
rm -f "$W/stdout.tar"

# ---- deterministic: apply the export, export again ---------------------------
st create again
apply_ok "apply out.tar into a second layer" apply again -i "$W/out.tar"
check "diff again -o out2.tar" st diff again -o "$W/out2.tar"
check "re-export is byte-identical" cmp "$W/out.tar" "$W/out2.tar"
rm -f "$W/out2.tar"
st rm again

# ---- compressed input ---------------------------------------------------------
for pid in "${BG_PIDS[@]}"; do
	wait "$pid" || { fail "compressing rootfs.tar"; exit 1; }
done
BG_PIDS=()
for z in gz zst xz; do
	st create "$z"
	if [ "$z" == zst ]; then
		apply_ok "apply $z from stdin" apply "$z" <"$W/rootfs.tar.$z"
	else
		apply_ok "apply $z -i" apply "$z" -i "$W/rootfs.tar.$z"
	fi
	st diff "$z" -o "$W/$z.tar"
	check "$z: the layer exports the same bytes as the plain tar's" cmp "$W/out.tar" "$W/$z.tar"
	rm -f "$W/$z.tar" "$W/rootfs.tar.$z"
	st rm "$z"
done

# ---- uid/gid maps ------------------------------------------------------------
MAP=(-o uidmap=0:100000:65536 -o gidmap=0:100000:65536)
st create mapped
apply_ok "apply with uidmap/gidmap 0:100000:65536" "${MAP[@]}" apply mapped -i "$ROOTFS"
is "mapped: root-owned file is 100000:100000" "$(stat -c '%u:%g' "$R/diff/mapped/etc/passwd")" 100000:100000
is "mapped: root:shadow is 100000:100042" "$(stat -c '%u:%g' "$R/diff/mapped/etc/shadow")" 100000:100042
is "mapped: 1000:1000 is 101000:101000" "$(stat -c '%u:%g' "$R/diff/mapped/strata-extras/owned")" 101000:101000
is "mapped: 0:1000 is 100000:101000" "$(stat -c '%u:%g' "$R/diff/mapped/strata-extras/mixed")" 100000:101000
is "mapped: 65534 is 165534" "$(stat -c '%u:%g' "$R/diff/mapped/strata-extras/nobody")" 165534:165534
is "mapped: symlinks are shifted too" "$(stat -c '%u:%g' "$R/diff/mapped/strata-extras/dangling")" 100000:100000
is "mapped: no entry left with an unshifted owner" \
	"$(find "$R/diff/mapped" -mindepth 1 \( -uid -100000 -o -gid -100000 \) | head -n 5)" ""
is "mapped: the setuid bit survives the chown" "$(stat -c '%a' "$R/diff/mapped/strata-extras/setuid")" 4711
is "mapped: security.capability survives the chown" \
	"$(cap_hex "$R/diff/mapped/strata-extras/capable")" \
	0x0100000200040000000000000000000000000000
check "diff with the same maps" st "${MAP[@]}" diff mapped -o "$W/mapped.tar"
tarcmp "mapped export shifts owners back: equal to the original" "$ROOTFS" "$W/mapped.tar"
st diff mapped -o "$W/unmapped.tar"
is "diff without maps exports the host owners" \
	"$(python3 -c 'import sys,tarfile; m=tarfile.open(sys.argv[1]).getmember("etc/passwd"); print(m.uid, m.gid)' "$W/unmapped.tar" 2>&1)" \
	"100000 100000"
rm -f "$W/mapped.tar" "$W/unmapped.tar"

st create badmap
check_error "apply refuses an owner outside the map, naming the entry" \
	'^strata: apply badmap: .*"[^"]+"' \
	st -o uidmap=0:100000:1000 -o gidmap=0:100000:65536 apply badmap -i "$ROOTFS"
is "refused apply leaves the diff dir empty" "$(ls -A "$R/diff/badmap")" ""
diff_dir_layers_only "after a refused apply"
check "the refused layer can still be applied" st "${MAP[@]}" apply --quiet badmap -i "$W/extras.tar"
is "... and holds what that apply put there" "$(stat -c %u:%g "$R/diff/badmap/strata-extras/owned")" 101000:101000
