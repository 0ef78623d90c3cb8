#!/usr/bin/env bash
# Edge cases found in review: opaque layer roots, a sparse header that
# lies about its content, repeated dirs, parentless layers on the naive
# path, hardlinked symlinks, implicit parents under id maps, user.* xattrs
# on symlinks, .wh.* directories.
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
def mk(name, entries, fmt=tarfile.PAX_FORMAT):
    with tarfile.open(f"{out}/{name}.tar", "w", format=fmt) as t:
        for e in entries: add(t, *e[0:2], **e[2] if len(e) > 2 else {})
D = tarfile.DIRTYPE
mk("base", [("keep", b"k"), ("d/", None, {"type": D}), ("d/x", b"x")])
mk("oproot", [(".wh..wh..opq", b""), ("new", b"n")])
mk("dupdir", [("a/", None, {"type": D, "mode": 0o700, "uid": 5, "mtime": 1000}), ("a/f", b"f"),
              ("a/", None, {"type": D, "mode": 0o755, "uid": 7, "mtime": 2000})])
mk("wh", [("a", b"a"), (".wh.foo", b""), ("o/", None, {"type": D}), ("o/.wh..wh..opq", b"")])
mk("implicit", [("p/q/f", b"f")])
mk("symxattr", [("s", None, {"type": tarfile.SYMTYPE, "linkname": "t", "pax_headers": {"SCHILY.xattr.user.k": "v"}})])
mk("whdir", [(".wh.foo/x", b"x")])

# An old-GNU sparse entry whose map says 4096 bytes of data but which
# stores 100, followed by an entry whose header and content must never be
# read as that file's content.
def header(name, size, typeflag, extra=b""):
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"0000644\0"; h[108:116] = b"0000000\0"; h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size; h[136:148] = b"%011o\0" % 1000000000
    h[156:157] = typeflag; h[257:265] = b"ustar  \0"
    h[386:386 + len(extra)] = extra
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)
sparse = b"%011o\0" % 0 + b"%011o\0" % 4096        # one region [0, 4096)
sparse += bytes(24 * 3) + b"\0" + b"%011o\0" % 4096  # isextended 0, realsize
data = b"A" * 100 + bytes(412)
secret = b"secret-bytes\n"
with open(f"{out}/sparse-lie.tar", "wb") as f:
    f.write(header(b"sp", 100, b"S", sparse) + data)
    f.write(header(b"secret", len(secret), b"0") + secret + bytes(512 - len(secret)))
    f.write(bytes(1024 + 8192))  # blocking: the copy must not run short
PY

# An opaque mark on a layer root: overlay ignores it, so must changes.
st create b1 >/dev/null && st apply b1 -i "$T/base.tar" >/dev/null
st create c1 b1 >/dev/null && st apply c1 -i "$T/oproot.tar" >/dev/null
is "opaque root: fast changes" "$(st changes c1)" "A /new"
is "opaque root: naive changes" "$(st changes --naive c1)" "A /new"
p=$(st mount c1)
is "opaque root: the merged view keeps the parent's files" "$(ls "$p" | tr '\n' ' ')" "d keep new "
st umount c1
if is_opaque "$R/diff/c1"; then fail "opaque root: no mark stored on the layer root"; else pass "opaque root: no mark stored on the layer root"; fi

# The lying sparse header, from a file (content copied in the kernel) and
# from a pipe: never the next entry's bytes in "sp".
st create s1 >/dev/null
if st apply s1 -i "$T/sparse-lie.tar" >/dev/null 2>"$TEST_TMP/s1.err"; then
	if grep -q secret "$R/diff/s1/sp"; then fail "sparse lie from a file: sp holds the next entry"; else pass "sparse lie from a file: sp clean"; fi
else
	if grep -q 'entry "sp"' "$TEST_TMP/s1.err" && [ -z "$(ls -A "$R/diff/s1")" ]; then
		pass "sparse lie from a file: refused, naming sp, layer empty"
	else
		fail "sparse lie from a file: refused, naming sp, layer empty" "$(cat "$TEST_TMP/s1.err")"
	fi
fi
st create s2 >/dev/null
if cat "$T/sparse-lie.tar" | st apply s2 >/dev/null 2>&1; then
	if grep -q secret "$R/diff/s2/sp"; then fail "sparse lie from a pipe: sp holds the next entry"; else pass "sparse lie from a pipe: sp clean"; fi
else
	pass "sparse lie from a pipe: refused"
fi

# A dir named twice: the later entry wins, as GNU tar does.
st create dd >/dev/null && st apply dd -i "$T/dupdir.tar" >/dev/null
is "repeated dir: later entry's mode, owner, mtime" "$(stat -c '%a %u %Y' "$R/diff/dd/a")" "755 7 2000"

# A parentless layer's whiteouts mean nothing; the naive path agrees.
st create bw >/dev/null && st apply bw -i "$T/wh.tar" >/dev/null
is "parentless layer: naive changes equal fast" "$(st changes --naive bw)" "$(st changes bw)"
st diff --naive bw -o "$TEST_TMP/bw.tar"
st create bw2 >/dev/null
check "parentless layer: the naive diff applies" st apply bw2 -i "$TEST_TMP/bw.tar"

# Two hard links to one symlink export as two symlinks.
st create hs >/dev/null
ln -s target "$R/diff/hs/s1"
ln -P "$R/diff/hs/s1" "$R/diff/hs/s2"
st diff hs -o "$TEST_TMP/hs.tar"
st create hs2 >/dev/null
check "hardlinked symlinks: the diff applies" st apply hs2 -i "$TEST_TMP/hs.tar"
is "hardlinked symlinks: both are symlinks" "$(readlink "$R/diff/hs2/s1") $(readlink "$R/diff/hs2/s2")" "target target"

# Parents a tar leaves out belong to the container's root under id maps.
M=(-o uidmap=0:100000:65536 -o gidmap=0:100000:65536)
st "${M[@]}" create im >/dev/null && st "${M[@]}" apply im -i "$TEST_TMP/tars/implicit.tar" >/dev/null
is "id map: implicit parents owned by the mapped root" "$(stat -c %u:%g "$R/diff/im/p" "$R/diff/im/p/q" | tr '\n' ' ')" "100000:100000 100000:100000 "
check "id map: the layer exports" st "${M[@]}" diff im -o "$TEST_TMP/im.tar"

# user.* xattrs cannot sit on symlinks: dropped, as Docker does.
st create sx >/dev/null
check "user.* xattr on a symlink: apply succeeds" st apply sx -i "$T/symxattr.tar"

st create wd >/dev/null
check_error "a .wh.* directory is refused" 'apply wd: entry "\.wh\.foo/x": a directory in its path is named \.wh\.' \
	st apply wd -i "$T/whdir.tar"
