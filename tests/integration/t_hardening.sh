#!/usr/bin/env bash
# Release blockers found by an attacker's probe (issue 12), one regression
# each: output files that are not strata's, directories that are not a
# store, trees deeper than any path, ids cut at a NUL, applies from another
# filesystem, whiteouts in new dirs on the naive path, crash leftovers,
# sparse files, user.overlay.* xattrs.
. "$(dirname "$0")/lib.sh"

st init >/dev/null || exit 1
T=$TEST_TMP/tars
mkdir -p "$T"
python3 - "$T" <<'PY' || exit 1
import io, sys, tarfile
out = sys.argv[1]
def add(t, name, data=None, type=tarfile.REGTYPE, **kw):
    ti = tarfile.TarInfo(name); ti.type = type; ti.mtime = 1000000000
    for k, v in kw.items(): setattr(ti, k, v)
    if data is not None: ti.size = len(data); t.addfile(ti, io.BytesIO(data))
    else: t.addfile(ti)
def mk(name, entries):
    with tarfile.open(f"{out}/{name}.tar", "w", format=tarfile.PAX_FORMAT) as t:
        for e in entries: add(t, *e[0:2], **e[2] if len(e) > 2 else {})
D = tarfile.DIRTYPE
mk("base", [("keep", b"k"), ("gone", b"g"), ("d/", None, {"type": D}), ("d/x", b"x")])
# A whiteout inside a directory new in its layer (it hides nothing).
mk("newdir-wh", [("d1/", None, {"type": D}), ("d1/.wh.gone", b""), ("d1/f", b"f")])
# overlay's bookkeeping in the user namespace, which a rootless mount with
# userxattr would honour; a user.* xattr of the image's own beside it.
x = lambda d: {"pax_headers": {"SCHILY.xattr." + k: v for k, v in d.items()}}
mk("userovl", [("o/", None, {"type": D, **x({"user.overlay.opaque": "y", "user.keep": "1"})}),
               ("f", b"f", x({"user.overlay.redirect": "/etc", "user.overlay.metacopy": "", "user.mine": "v"}))])
PY

# ---- 1. output files strata did not make ----
echo precious >"$TEST_TMP/p"
check_error "diff of a missing layer to an existing file fails" "diff nosuch: no such layer" \
	st diff nosuch -o "$TEST_TMP/p"
is "... and the file is untouched" "$(cat "$TEST_TMP/p")" precious
mknod "$TEST_TMP/null" c 1 3
check_error "diff of a missing layer to a device fails" "no such layer" st diff nosuch -o "$TEST_TMP/null"
check "... and the device node is still there" test -c "$TEST_TMP/null"
is "no temp file left beside the output" "$(ls -A "$TEST_TMP" | grep -c strata-)" 0
st create o1 >/dev/null && echo hello >"$R/diff/o1/hello"
chmod 640 "$TEST_TMP/p"
check "diff to an existing file replaces it" st diff o1 -o "$TEST_TMP/p"
is "... with the tar" "$(tar -tf "$TEST_TMP/p")" hello
is "... keeping its mode" "$(stat -c %a "$TEST_TMP/p")" 640
ln -s "$TEST_TMP/p" "$TEST_TMP/plink"
check "diff through a symlink" st diff o1 -o "$TEST_TMP/plink"
check "... writes the file it names, the link stays" test -L "$TEST_TMP/plink"
mkfifo "$TEST_TMP/fifo"
(cat "$TEST_TMP/fifo" >"$TEST_TMP/fromfifo") &
BG_PIDS+=($!)
check "diff into a named pipe writes it in place" st diff o1 -o "$TEST_TMP/fifo"
wait "${BG_PIDS[-1]}"
is "... the reader got the tar" "$(tar -tf "$TEST_TMP/fromfifo")" hello
check "... and the pipe is still a pipe" test -p "$TEST_TMP/fifo"
check_error "diff to a directory is refused" "output $TEST_TMP is a directory" st diff o1 -o "$TEST_TMP"

# ---- 2. init on a directory that is not a store ----
F=$TEST_TMP/foreign
mkdir -p "$F/mnt/photos" "$F/diff/data" "$F/refs" "$F/mnt/tmpdata"
echo meow >"$F/mnt/photos/cat.jpg"
echo data >"$F/diff/data/file"
echo note >"$F/refs/notes"
chmod 755 "$F"
mount -t tmpfs tmpfs "$F/mnt/tmpdata"
echo tmp >"$F/mnt/tmpdata/t"
before=$(cd "$F" && find . -printf '%y %m %p\n' | LC_ALL=C sort)
check_error "init refuses a non-empty directory that is not a store" \
	"init $F: $F is not a strata store and is not empty" "$STRATA" --root "$F" init
is "... and changes nothing in it" "$(cd "$F" && find . -printf '%y %m %p\n' | LC_ALL=C sort)" "$before"
check "... the foreign mount stays" is_mounted "$F/mnt/tmpdata"
is "... with its file" "$(cat "$F/mnt/tmpdata/t")" tmp
check_error "other commands refuse it too" "is not a strata store" "$STRATA" --root "$F" status
umount "$F/mnt/tmpdata"

E=$TEST_TMP/empty
mkdir "$E" && chmod 755 "$E"
check "init takes an empty directory" "$STRATA" --root "$E" init
is "... and keeps its mode" "$(stat -c %a "$E")" 755
check "... marks it as a store" test -f "$E/strata-store"
check "init again on the store" "$STRATA" --root "$E" init

# A store made before the marker existed (the layout, the lock, nothing
# else) is still a store: init adopts it.
rm "$E/strata-store"
check "init adopts a store made before the marker" "$STRATA" --root "$E" init
check "... and marks it" test -f "$E/strata-store"

# Inside a store: what strata did not make stays, and is never used.
mkdir "$R/diff/data" "$R/mnt/tmpdata"
echo data >"$R/diff/data/file"
mount -t tmpfs tmpfs "$R/mnt/tmpdata"
check "init in a store with foreign files in it succeeds" st init
is "... and leaves them" "$(cat "$R/diff/data/file")" data
check "... and the foreign mount" is_mounted "$R/mnt/tmpdata"
check_error "create over a foreign diff dir is refused" "diff/data is there but no layer data exists" st create data
is "... and leaves it" "$(cat "$R/diff/data/file")" data
check "cleanup leaves the foreign mount" st cleanup
check "... mounted" is_mounted "$R/mnt/tmpdata"
umount "$R/mnt/tmpdata"
rm -rf "$R/diff/data" "$R/mnt/tmpdata"

# ---- 3. trees deeper than any path ----
st create deepbase >/dev/null && st create deep deepbase >/dev/null
p=$(st mount deep)
python3 - "$p" <<'PY'
import os, sys
os.chdir(sys.argv[1])
for _ in range(100000):
    os.mkdir("a"); os.chdir("a")
open("leaf", "w").write("x")
PY
st umount deep
is "size of a 100,000-deep tree" "$(st size deep)" 1
for cmd in "changes deep" "changes --naive deep" "diff deep" "diff --naive deep" "size --naive deep"; do
	# shellcheck disable=SC2086
	check_error "$cmd: a clear error, no crash" "a path longer than 4095 bytes" st $cmd
done
is "nothing left mounted after the deep naive diffs" "$(overlay_count)" 0
check "rm of a 100,000-deep layer" st rm deep

# ---- 8. apply of an uncompressed tar from another filesystem ----
SHM=$(mktemp -d /dev/shm/strata-it.XXXXXX)
cp "$T/base.tar" "$SHM/base.tar"
st create xdev >/dev/null
check "apply -i from /dev/shm (copy_file_range cannot cross filesystems)" st apply xdev -i "$SHM/base.tar"
rm -rf "$SHM"
is "... with the content" "$(cat "$R/diff/xdev/d/x")" x

# ---- 9. a whiteout in a directory new in its layer, on the naive path ----
st create wb >/dev/null && st apply wb -i "$T/base.tar" >/dev/null
st create wc wb >/dev/null && st apply wc -i "$T/newdir-wh.tar" >/dev/null
want=$(printf 'A /d1\nA /d1/f')
is "changes (fast)" "$(st changes wc)" "$want"
is "changes --naive" "$(st changes --naive wc)" "$want"
is "size --naive" "$(st size --naive wc)" 1
check "diff --naive" bash -c "'$STRATA' --root '$R' diff --naive wc >'$TEST_TMP/naive.tar'"
is "... holds the new dir, not the whiteout" "$(tar -tf "$TEST_TMP/naive.tar" | LC_ALL=C sort)" "$(printf 'd1/\nd1/f')"
st create wd wc >/dev/null
is "changes against a non-direct parent" "$(st changes wd wb)" "$want"
is "nothing left mounted" "$(overlay_count)" 0

# ---- 10. crash leftovers ----
echo junk >"$R/.tmp-ABCDEFGH-engine"
check "init after a kill while writing engine" st init
check "... removes its temp file" test ! -e "$R/.tmp-ABCDEFGH-engine"
# A naive diff killed while it holds both unions: nothing keeps them
# mounted.  Its output is a pipe nobody reads, so it stops in mid-tar.
st create nv wb >/dev/null
head -c 8M /dev/urandom >"$R/diff/nv/big"
mkfifo "$TEST_TMP/slow"
st diff --naive nv >"$TEST_TMP/slow" &
dpid=$!
BG_PIDS+=($dpid)
exec 7<"$TEST_TMP/slow"
for _ in $(seq 100); do [ "$(overlay_count)" -ge 1 ] && break; sleep 0.05; done
is "a naive diff holds its union" "$(overlay_count)" 1
is "... without counting it" "$(st metadata nv | sed -n 's/^RefCount: //p')" 0
st mount nv >/dev/null && st umount nv
check "a put beside the hold keeps the union mounted" is_mounted "$R/mnt/nv"
kill -9 "$dpid"
wait "$dpid" 2>/dev/null
exec 7<&-
check "killed: the union is still mounted" is_mounted "$R/mnt/nv"
check "init" st init
is "init unmounts what the dead process held" "$(overlay_count)" 0
# A remove of a mounted layer killed just before its commit rename.
st create rk wb >/dev/null
st mount rk >/dev/null
bash -c 'exec strace -f -qq -o /dev/null -e inject=renameat:error=EINTR:signal=KILL:when=1 "$@"' \
	strace "$STRATA" --root "$R" rm rk >/dev/null 2>&1
check "rm killed before its commit: the layer is still there" st exists rk
is "... not counted" "$(st metadata rk | sed -n 's/^RefCount: //p')" 0
is "... not mounted" "$(st metadata rk | sed -n 's/^Mounted: //p')" false
check "... and removable" st rm rk

# ---- 11. sparse files: holes are not read ----
SP=$TEST_TMP/sparse
mkdir "$SP"
truncate -s 16G "$SP/big"
printf 'middle' | dd of="$SP/big" bs=1 seek=$((8 << 30)) conv=notrunc status=none
printf 'end' | dd of="$SP/big" bs=1 seek=$(((16 << 30) - 3)) conv=notrunc status=none
tar --sparse --numeric-owner -C "$SP" -cf "$T/sparse.tar" big
st create sp >/dev/null
check "apply a tar of a 16 GiB sparse file" st apply sp -i "$T/sparse.tar"
strace -f -qq -e trace=read,pread64 -e signal=none -o "$TEST_TMP/sp.strace" \
	"$STRATA" --root "$R" diff sp -o "$TEST_TMP/sp.tar"
read_bytes=$(awk -F'= ' '/pread64\(|read\(/ { n = $NF + 0; if (n > 0) s += n } END { print s + 0 }' "$TEST_TMP/sp.strace")
if [ "$read_bytes" -lt $((16 << 20)) ]; then pass "diff reads the data, not the 16 GiB of holes ($read_bytes bytes read)"; else fail "diff read $read_bytes bytes"; fi
check "the tar is small" test "$(stat -c %s "$TEST_TMP/sp.tar")" -lt $((1 << 20))
st create sp2 >/dev/null && st apply sp2 -i "$TEST_TMP/sp.tar" >/dev/null
is "round trip: size" "$(stat -c %s "$R/diff/sp2/big")" $((16 << 30))
is "round trip: the data in the middle" "$(dd if="$R/diff/sp2/big" bs=1 skip=$((8 << 30)) count=6 status=none)" middle
is "round trip: the data at the end" "$(tail -c 3 "$R/diff/sp2/big")" end
check "round trip: still sparse" test "$(stat -c %b "$R/diff/sp2/big")" -lt 1024

# ---- 12. user.overlay.* xattrs never travel ----
st create ux >/dev/null
check "apply a tar with user.overlay.* xattrs" st apply ux -i "$T/userovl.tar"
is "user.overlay.* dropped on a dir, user.* kept" "$(getfattr --absolute-names -d -m - "$R/diff/ux/o" | grep '^user' | sort)" 'user.keep="1"'
is "user.overlay.* dropped on a file, user.* kept" "$(getfattr --absolute-names -d -m - "$R/diff/ux/f" | grep '^user' | sort)" 'user.mine="v"'
setfattr -n user.overlay.opaque -v y "$R/diff/ux/o"
st diff ux -o "$TEST_TMP/ux.tar"
if tar --xattrs --xattrs-include='*' -tvvf "$TEST_TMP/ux.tar" 2>/dev/null | grep -q 'user.overlay'; then
	fail "diff exports a user.overlay.* xattr"
elif ! strings "$TEST_TMP/ux.tar" | grep -q 'user.keep'; then
	fail "diff lost user.keep"
else
	pass "diff drops user.overlay.* and keeps user.*"
fi
