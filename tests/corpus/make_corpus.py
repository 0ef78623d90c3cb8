#!/usr/bin/env python3
"""Writes the layer-tar corpus for `strata apply`.

    OUTSIDE=/abs/sentinel/dir make_corpus.py OUTDIR

OUTDIR/should-fail/NAME.tar     hostile or broken input apply must refuse
OUTDIR/should-fail/NAME.expect  a grep -E regex (no anchors; alternatives
                                allowed) the error line must match after
                                "strata: apply ID: "; it names the offending
                                entry.  Where there is no entry to name (a
                                damaged or cut header) it asks for the last
                                good one or the damage; empty for garbage.
OUTDIR/should-fail/NAME.args    extra apply arguments (only when needed)
OUTDIR/should-pass/NAME.tar     input apply must accept
OUTDIR/should-pass/NAME.size    the size apply must print: regular-file
                                bytes (apparent size), each inode once
OUTDIR/should-pass/NAME.files   "sha256  path" of every regular file
OUTDIR/slow.tar                 one 8 MiB file, for the interrupted apply

OUTSIDE is the absolute path of a sentinel dir (holding `sentinel` and
`sub/`) that hostile entries aim at, so that a broken extractor changes
something the test can see instead of the host.  The test puts it at
$TEST_TMP/outside, with the store at $TEST_TMP/root: from a diff dir
$TEST_TMP/root/diff/ID, "../../../outside" is the sentinel dir.

Tars are written by hand, header by header, so that names and fields any
library would refuse to write (empty names, "..", absurd sizes, GNU sparse
maps, raw xattr bytes) come out exactly as given.  Standard library only.
"""

import hashlib
import os
import random
import subprocess
import sys

BLOCK = 512
MTIME = 1700000000
OLD = 1000000000  # 2001-09-09, an mtime in the past

# ---------------------------------------------------------------- encoding


def octal(value, width):
    """A NUL-terminated octal field, or base-256 when it does not fit."""
    digits = width - 1
    if 0 <= value < 8**digits:
        return b"%0*o\0" % (digits, value)
    return base256(value, width)


def base256(value, width):
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def field(data, width):
    assert len(data) <= width, (data, width)
    return data + b"\0" * (width - len(data))


def pad(data):
    return data + b"\0" * (-len(data) % BLOCK)


def header(name, typ, size=0, mode=0o644, uid=0, gid=0, mtime=MTIME,
           linkname=b"", major=0, minor=0, gnu=False, size_field=None,
           sparse=None, realsize=0, bad_checksum=False):
    """One 512-byte header.  name/linkname are bytes, at most 100 of them."""
    h = bytearray(BLOCK)
    h[0:100] = field(name, 100)
    h[100:108] = octal(mode, 8)
    h[108:116] = octal(uid, 8)
    h[116:124] = octal(gid, 8)
    h[124:136] = size_field if size_field is not None else octal(size, 12)
    h[136:148] = octal(mtime, 12)
    h[156:157] = typ
    h[157:257] = field(linkname, 100)
    if gnu:
        h[257:265] = b"ustar  \0"
    else:
        h[257:263] = b"ustar\0"
        h[263:265] = b"00"
    h[265:297] = field(b"root" if uid == 0 else b"", 32)
    h[297:329] = field(b"root" if gid == 0 else b"", 32)
    h[329:337] = octal(major, 8)
    h[337:345] = octal(minor, 8)
    if sparse is not None:  # old GNU sparse: up to 4 (offset, numbytes) in the header
        assert gnu and len(sparse) <= 4
        for i, (off, num) in enumerate(sparse):
            base = 386 + 24 * i
            h[base:base + 12] = octal(off, 12)
            h[base + 12:base + 24] = octal(num, 12)
        h[482] = 0
        h[483:495] = octal(realsize, 12)
    h[148:156] = b" " * 8
    chk = sum(h) + (1 if bad_checksum else 0)
    h[148:156] = b"%06o\0 " % chk
    return bytes(h)


def pax_records(records):
    out = b""
    for key, value in records:
        body = b" " + key + b"=" + value + b"\n"
        n = len(body) + 1
        while len(str(n).encode()) + len(body) != n:
            n += 1
        out += str(n).encode() + body
    return out


class Tar:
    """Builds a tar in memory, entry by entry."""

    def __init__(self):
        self.buf = bytearray()
        self.files = {}  # path -> sha256 of content (regular files)
        self.size = 0  # regular-file bytes, each inode once

    def raw(self, data):
        self.buf += data
        return self

    def pax(self, records, name=b"PaxHeader"):
        data = pax_records(records)
        self.buf += header(name[:100], b"x", size=len(data))
        self.buf += pad(data)

    def gnu_long(self, typ, value):
        data = value + b"\0"
        self.buf += header(b"././@LongLink", typ, size=len(data), gnu=True)
        self.buf += pad(data)

    def add(self, name, typ=b"0", data=b"", pax=(), track=True, **kw):
        """An entry; a PAX header carries long names/links and `pax`."""
        if isinstance(name, str):
            name = name.encode()
        link = kw.pop("linkname", b"")
        if isinstance(link, str):
            link = link.encode()
        records = list(pax)
        hname, hlink = name, link
        if len(name) > 100:
            records.append((b"path", name))
            hname = name[:99]
        if len(link) > 100:
            records.append((b"linkpath", link))
            hlink = link[:99]
        if records:
            self.pax(records)
        self.buf += header(hname, typ, size=len(data), linkname=hlink, **kw)
        self.buf += pad(data)
        if track and typ in (b"0", b"\0"):
            key = name.decode().strip("/")
            if key.startswith("./"):
                key = key[2:]
            if not key.split("/")[-1].startswith(".wh."):  # whiteouts and markers: no file
                self.files[key] = hashlib.sha256(data).hexdigest()
                self.size += len(data)
        return self

    def dir(self, name, mode=0o755, **kw):
        return self.add(name.rstrip("/") + "/", b"5", mode=mode, **kw)

    def file(self, name, data=b"", **kw):
        return self.add(name, b"0", data=data, **kw)

    def symlink(self, name, target, **kw):
        return self.add(name, b"2", linkname=target, mode=0o777, **kw)

    def hardlink(self, name, target, **kw):
        return self.add(name, b"1", linkname=target, **kw)

    def end(self):
        return bytes(self.buf) + b"\0" * (2 * BLOCK)


# ---------------------------------------------------------------- helpers


def regex_escape(s):
    """Escape for grep -E, leaving characters like - and / alone."""
    return "".join("\\" + c if c in ".[]()*+?{}|^$\\" else c for c in s)


def entry_re(name):
    return 'entry "%s"' % regex_escape(name)


def compress(data, cmd):
    return subprocess.run(cmd, input=data, stdout=subprocess.PIPE, check=True).stdout


def gzip(data):
    return compress(data, ["gzip", "-n", "-c"])


def xz(data):
    return compress(data, ["xz", "-c", "-T1"])


def zstd(data):
    return compress(data, ["zstd", "-q", "-c"])


def noise(n, seed):
    return random.Random(seed).randbytes(n)


# ---------------------------------------------------------------- should fail


def should_fail(outside):
    """Yields (name, tar bytes, expect regex, extra args)."""
    o = outside

    def t():
        return Tar()

    # Names that leave the layer, or are not names at all.
    yield "dotdot", t().file("../evil", b"x").end(), entry_re("../evil"), ""
    yield "dotdot-middle", t().dir("a").file("a/../../evil", b"x").end(), entry_re("a/../../evil"), ""
    yield "dotdot-inside", t().dir("a").file("a/../inside", b"x").end(), entry_re("a/../inside"), ""
    yield "dotdot-dir", t().add("../", b"5", mode=0o755).end(), 'entry "\\.\\./?"', ""
    yield "dotdot-deep", t().file("../../../outside/dotdot-deep", b"x").end(), \
        entry_re("../../../outside/dotdot-deep"), ""
    yield "absolute", t().file(o + "/abs-evil", b"x").end(), entry_re(o + "/abs-evil"), ""
    yield "absolute-dir", t().dir(o + "/absdir").end(), 'entry "%s/?"' % regex_escape(o + "/absdir"), ""
    yield "absolute-root", t().add("/", b"5", mode=0o777).end(), 'entry "/"', ""
    yield "empty-name", t().file("", b"x").end(), 'entry ""', ""
    yield "pax-path-dotdot", t().file("benign", b"x", pax=[(b"path", b"../evil-pax")]).end(), \
        entry_re("../evil-pax"), ""
    long = "../" + "x" * 120
    tar = t()
    tar.gnu_long(b"L", long.encode())
    tar.raw(header(b"benign", b"0", size=1) + pad(b"x"))
    yield "gnu-longname-dotdot", tar.end(), entry_re(long), ""

    # Hardlinks.
    yield "hardlink-dotdot", t().hardlink("h", "../outside").end(), entry_re("h"), ""
    yield "hardlink-escape-write", (t().hardlink("h", "../../../outside/sentinel")
        .file("h", b"pwned\n").end()), entry_re("h"), ""
    yield "hardlink-abs", t().hardlink("h", "/etc/passwd").end(), entry_re("h"), ""
    yield "hardlink-abs-write", t().hardlink("h", o + "/sentinel").file("h", b"pwned\n").end(), entry_re("h"), ""
    yield "hardlink-pax-linkpath", t().hardlink("h", "x", pax=[(b"linkpath", b"../../../outside/sentinel")]).end(), \
        entry_re("h"), ""
    yield "hardlink-symlink", t().file("target", b"t").symlink("s", "target").hardlink("h", "s").end(), \
        entry_re("h"), ""
    yield "hardlink-symlink-outside", t().symlink("s", o + "/sentinel").hardlink("h", "s").end(), entry_re("h"), ""
    yield "hardlink-via-symlink", t().symlink("s", o).hardlink("h", "s/sentinel").end(), entry_re("h"), ""
    yield "hardlink-dir", t().dir("d").hardlink("h", "d").end(), entry_re("h"), ""
    yield "hardlink-missing", t().hardlink("h", "later").file("later", b"l").end(), entry_re("h"), ""
    yield "hardlink-self", t().hardlink("h", "h").end(), entry_re("h"), ""

    # Entries written through symlinks.
    yield "symlink-abs", t().symlink("link", o).file("link/file", b"pwned\n").end(), entry_re("link/file"), ""
    yield "symlink-rel", t().symlink("link", "../../..").file("link/file", b"pwned\n").end(), \
        entry_re("link/file"), ""
    yield "symlink-rel-outside", t().symlink("link", "../../../outside").file("link/file", b"pwned\n").end(), \
        entry_re("link/file"), ""
    yield "symlink-inside", t().dir("d").symlink("link", "d").file("link/file", b"x").end(), \
        entry_re("link/file"), ""
    yield "symlink-intermediate", t().symlink("link", o).file("link/sub/file", b"pwned\n").end(), \
        entry_re("link/sub/file"), ""
    yield "symlink-nested", (t().dir("a").symlink("a/b", "../../../../outside").file("a/b/sub/file", b"pwned\n")
        .end()), entry_re("a/b/sub/file"), ""
    yield "symlink-chain", t().symlink("b", o).symlink("a", "b").file("a/file", b"pwned\n").end(), \
        entry_re("a/file"), ""
    yield "symlink-mkdir", t().symlink("link", o).dir("link/newdir").end(), 'entry "link/newdir/?"', ""
    yield "symlink-symlink-into", t().symlink("link", o).symlink("link/s", "x").end(), entry_re("link/s"), ""
    yield "symlink-hardlink-into", t().file("t", b"t").symlink("link", o).hardlink("link/h", "t").end(), \
        entry_re("link/h"), ""
    yield "symlink-fifo-into", t().symlink("link", o).add("link/fifo", b"6").end(), entry_re("link/fifo"), ""
    yield "symlink-whiteout", t().symlink("link", o).file("link/.wh.sentinel").end(), \
        entry_re("link/.wh.sentinel"), ""
    yield "symlink-opaque", t().symlink("link", o).file("link/.wh..wh..opq").end(), \
        entry_re("link/.wh..wh..opq"), ""
    yield "symlink-nested-whiteout", (t().dir("a").symlink("a/b", "../../../../outside")
        .file("a/b/sub/.wh.x").end()), entry_re("a/b/sub/.wh.x"), ""
    # A dir, then the same name as a symlink to outside, then a file under it.
    # Refusing the replacement itself is fine too.
    yield "symlink-replaced-dir", t().dir("d").symlink("d", o).file("d/f", b"pwned\n").end(), 'entry "d(/f)?"', ""

    # Whiteout names that name nothing or the dir itself.
    yield "wh-empty", t().file(".wh.").end(), entry_re(".wh."), ""
    yield "wh-dot", t().file(".wh..").end(), entry_re(".wh.."), ""
    yield "wh-dotdot", t().file(".wh...").end(), entry_re(".wh..."), ""
    yield "wh-dir-empty", t().dir("dir").file("dir/.wh.").end(), entry_re("dir/.wh."), ""
    yield "wh-dir-dotdot", t().dir("dir").file("dir/.wh...").end(), entry_re("dir/.wh..."), ""

    # Devices.
    yield "nodev-chr", t().file("ok", b"ok").add("dev", b"3", mode=0o666, major=1, minor=3).end(), \
        entry_re("dev"), "--no-devices"
    yield "nodev-blk", t().add("blk", b"4", mode=0o660, major=7, minor=0).end(), entry_re("blk"), "--no-devices"
    yield "chr-0-0", t().add("c", b"3", mode=0o600, major=0, minor=0).end(), entry_re("c"), ""
    yield "chr-0-0-deep", t().dir("a").add("a/c", b"3", mode=0o600).end(), entry_re("a/c"), ""

    # Absurd sizes: the data is not there.
    tar = t().file("first", b"1")
    tar.pax([(b"size", b"8589934592")])
    tar.raw(header(b"big", b"0", size=0) + pad(b"only a few bytes"))
    yield "huge-8g", tar.end(), entry_re("big"), ""
    tar = t().file("first", b"1")
    tar.raw(header(b"big", b"0", size_field=base256(1 << 62, 12)) + pad(b"only a few bytes"))
    yield "huge-absurd", tar.end(), entry_re("big"), ""

    # Truncated and broken archives.
    whole = t().file("first", b"1" * 700).file("second", noise(4096, 1)).end()
    first_len = BLOCK + 2 * BLOCK  # header + 700 bytes padded
    # No entry to name: the error says what came last, or what is wrong.
    yield "trunc-header", whole[:first_len + 200], 'after entry "first"|[Tt]runcat', ""
    yield "trunc-data", whole[:first_len + BLOCK + 1000], entry_re("second"), ""
    tar = t().file("first", b"1")
    tar.raw(header(b"second", b"0", size=1, bad_checksum=True) + pad(b"2"))
    yield "bad-checksum", tar.end(), 'after entry "first"|[Dd]amaged|checksum', ""
    big = t().file("a", b"a").file("big", noise(1 << 20, 2)).end()
    z = gzip(big)
    yield "gzip-trunc", z[:len(z) // 2], entry_re("big"), ""
    z = xz(big)
    yield "xz-trunc", z[:len(z) // 2], entry_re("big"), ""
    z = zstd(big)
    yield "zstd-trunc", z[:len(z) // 2], entry_re("big"), ""
    yield "zstd-dotdot", zstd(t().file("../evil", b"x").end()), entry_re("../evil"), ""
    yield "garbage", noise(8192, 3), "", ""


# ---------------------------------------------------------------- should pass


def cap_v2(permitted):
    """security.capability, VFS_CAP_REVISION_2, nothing inheritable."""
    return (0x02000000).to_bytes(4, "little") + permitted.to_bytes(4, "little") + bytes(12)


SPARSE_SIZE = 16 << 20
SPARSE_A = b"A" * 4096
SPARSE_B = b"B" * 4096
SPARSE_OFF = 8 << 20


def sparse_content():
    h = hashlib.sha256()
    h.update(SPARSE_A)
    h.update(bytes(SPARSE_OFF - len(SPARSE_A)))
    h.update(SPARSE_B)
    h.update(bytes(SPARSE_SIZE - SPARSE_OFF - len(SPARSE_B)))
    return h.hexdigest()


def alltypes():
    t = Tar()
    owner = dict(uid=1234, gid=1234)
    t.dir("dir", mode=0o750, mtime=OLD, **owner)
    t.file("dir/file", b"hello\n", mode=0o640, mtime=OLD, **owner)
    t.hardlink("dir/hard", "dir/file", mode=0o640, mtime=OLD, **owner)
    t.symlink("dir/sym", "file")
    t.symlink("dangling", "does/not/exist")
    t.symlink("abssym", "/etc/passwd")
    t.add("fifo", b"6", mode=0o600)
    t.add("chr", b"3", mode=0o620, major=10, minor=200)
    t.add("blk", b"4", mode=0o660, major=8, minor=17)
    t.file("suid", b"#!/bin/sh\n", mode=0o4755, **owner)
    t.file("sgid", b"#!/bin/sh\n:\n", mode=0o2711, uid=0, gid=1234)
    t.dir("sticky", mode=0o1777)
    t.file("old", b"old\n", mtime=OLD)
    t.file("empty", b"")
    t.file("xattrs", b"x\n", mode=0o755, pax=[
        (b"SCHILY.xattr.user.color", b"blue"),
        (b"SCHILY.xattr.user.bin", bytes([0, 1, 2, 255])),
        (b"SCHILY.xattr.trusted.demo", b"yes"),
        (b"SCHILY.xattr.security.capability", cap_v2(1 << 10)),  # cap_net_bind_service
    ], **owner)
    t.dir("xdir", pax=[(b"SCHILY.xattr.user.d", b"dir-value")])
    # Old GNU sparse ('S'): 4 KiB at 0, 4 KiB at 8 MiB, 16 MiB in all; the
    # trailing hole is an empty chunk at the end, as GNU tar writes it.
    data = SPARSE_A + SPARSE_B
    t.raw(header(b"sparse", b"S", size=len(data), gnu=True, mode=0o644,
                 sparse=[(0, len(SPARSE_A)), (SPARSE_OFF, len(SPARSE_B)), (SPARSE_SIZE, 0)],
                 realsize=SPARSE_SIZE))
    t.raw(pad(data))
    t.files["sparse"] = sparse_content()
    t.size += SPARSE_SIZE
    # PAX sparse 1.0: the map leads the data.
    smap = pad(b"3\n0\n%d\n%d\n%d\n%d\n0\n" % (len(SPARSE_A), SPARSE_OFF, len(SPARSE_B), SPARSE_SIZE))
    t.pax([(b"GNU.sparse.major", b"1"), (b"GNU.sparse.minor", b"0"),
           (b"GNU.sparse.name", b"sparse1"), (b"GNU.sparse.realsize", b"%d" % SPARSE_SIZE)])
    t.raw(header(b"GNUSparseFile.0/sparse1", b"0", size=len(smap) + len(data)))
    t.raw(pad(smap + data))
    t.files["sparse1"] = sparse_content()
    t.size += SPARSE_SIZE
    return t


def whiteouts():
    t = Tar()
    t.file(".wh.top")
    t.dir("a")
    t.file("a/.wh.f")
    t.file("a/kept", b"kept\n")
    t.dir("a/b")
    t.file("a/b/.wh..wh..opq")
    t.file("a/b/new", b"new\n")
    t.dir("a/d")
    t.dir("a/d/e")
    t.file("a/d/e/.wh.deep")
    t.file("a/d/e/.wh.dir with space")
    t.dir("o")
    t.file("o/.wh..wh..opq")
    t.file("o/keep", b"keep\n")
    t.dir("empty-opaque")
    t.file("empty-opaque/.wh..wh..opq")
    return t


def implicit_parents():
    t = Tar()
    t.file("p/q/r/file", b"deep\n")
    t.file("x/.wh.y")
    t.file("./dot/slash", b"dot\n")
    return t


def longnames():
    t = Tar()
    d = "d" * 90
    t.dir(d)
    t.dir(d + "/" + "e" * 90)
    t.file(d + "/" + "e" * 90 + "/f" * 1, b"pax path\n")
    t.hardlink(d + "/" + "e" * 90 + "/hard", d + "/" + "e" * 90 + "/f")
    t.symlink("longsym", "t" * 150)
    # GNU long name and long link.
    name = "g" * 150
    t.gnu_long(b"L", name.encode())
    t.raw(header(name[:100].encode(), b"0", size=4, gnu=True) + pad(b"gnu\n"))
    t.files[name] = hashlib.sha256(b"gnu\n").hexdigest()
    t.size += 4
    t.gnu_long(b"K", ("l" * 120).encode())
    t.raw(header(b"glink", b"2", gnu=True, mode=0o777))
    t.file("sp ace and ünïcode", b"u\n")
    return t


def replace_symlink_file(outside):
    # A symlink to the sentinel, then a regular file of the same name: the
    # file replaces the link (later entries win, as in Docker); nothing is
    # written through it.
    t = Tar()
    t.symlink("link", outside + "/sentinel")
    t.file("link", b"replaced\n")
    return t


def replace_symlink_dir(outside):
    # A symlink to the sentinel dir, then a dir of the same name: Docker
    # replaces the link with the dir (it Lstat()s), so what follows lands in
    # the layer.
    t = Tar()
    t.symlink("dlink", outside)
    t.dir("dlink")
    t.file("dlink/inside", b"in\n")
    return t


def should_pass(outside):
    at = alltypes()
    plain = at.end()
    yield "alltypes", plain, at
    yield "alltypes-gzip", gzip(plain), at
    yield "alltypes-xz", xz(plain), at
    yield "alltypes-zstd", zstd(plain), at
    w = whiteouts()
    yield "whiteouts", w.end(), w
    yield "whiteouts-zstd", zstd(w.end()), w
    ip = implicit_parents()
    yield "implicit-parents", ip.end(), ip
    ln = longnames()
    yield "longnames", ln.end(), ln
    rs = replace_symlink_file(outside)
    yield "replace-symlink-file", rs.end(), rs
    rs = replace_symlink_dir(outside)
    yield "replace-symlink-dir", rs.end(), rs


# ---------------------------------------------------------------- main


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: OUTSIDE=DIR make_corpus.py OUTDIR")
    out = sys.argv[1]
    outside = os.environ.get("OUTSIDE", "/nonexistent/strata-outside")
    if not outside.startswith("/"):
        sys.exit("OUTSIDE must be an absolute path")
    fail_dir = os.path.join(out, "should-fail")
    pass_dir = os.path.join(out, "should-pass")
    os.makedirs(fail_dir, exist_ok=True)
    os.makedirs(pass_dir, exist_ok=True)

    def write(path, data):
        with open(path, "wb") as f:
            f.write(data)

    n = 0
    for name, data, expect, args in should_fail(outside):
        write(os.path.join(fail_dir, name + ".tar"), data)
        write(os.path.join(fail_dir, name + ".expect"), (expect + "\n").encode())
        if args:
            write(os.path.join(fail_dir, name + ".args"), (args + "\n").encode())
        n += 1
    m = 0
    for name, data, tar in should_pass(outside):
        write(os.path.join(pass_dir, name + ".tar"), data)
        write(os.path.join(pass_dir, name + ".size"), b"%d\n" % tar.size)
        lines = "".join("%s  %s\n" % (h, p) for p, h in sorted(tar.files.items()))
        write(os.path.join(pass_dir, name + ".files"), lines.encode())
        m += 1
    slow = Tar().file("slow", bytes(8 << 20)).end()
    write(os.path.join(out, "slow.tar"), slow)
    print("%d should-fail, %d should-pass" % (n, m))


if __name__ == "__main__":
    main()
