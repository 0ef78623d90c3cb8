#!/usr/bin/env python3
"""An AUFS-format store (Docker's /var/lib/docker/aufs) and what it means.

    aufs_store.py build ROOT [--set main|ghost] [--blob KIB]
        write the test store into ROOT the way Docker's aufs driver leaves
        it: ROOT/layers/<id> (every ancestor, nearest first, one a line),
        ROOT/diff/<id> (the branch: whiteouts as .wh.<name> files, most of
        them hardlinks of the branch's .wh..wh.aufs, opaque dirs holding
        .wh..wh..opq, .wh..wh.plnk/ with pseudo-links, an empty
        .wh..wh.orph/), ROOT/mnt/<id>, a leftover diff/<id>-removing.
        --set: main (default) is chains of every kind and a 120-layer one;
        ghost is whiteouts that hide nothing (base layer, new dir, inside
        an opaque dir).  --blob: KiB of random data each layer of the deep
        chain adds (default 64).
    aufs_store.py layers ROOT
        the ids of ROOT/layers (valid ones), parents before children
    aufs_store.py compare ROOT ID DIR
        compare DIR (the mounted imported layer) with the merged tree the
        aufs semantics give for ID's chain: names, types, modes, owners,
        sizes, mtimes (not of dirs), symlink targets, contents (sha256),
        device numbers, user.* xattrs; and check the hand-written
        expectations about ID (see spot).  Prints "N entries" or the
        differences (exit 1).
    aufs_store.py verify ROOT STRATA_BIN STRATA_ROOT [ID...]
        for each layer (all by default, parents first): `strata mount`,
        compare as above, `strata umount`; prints "ok ID ..." or
        "not ok ID (N differences)" and the differences, indented
    aufs_store.py spot ID DIR
        the hand-written expectations of the built store about layer ID
        (paths that must be absent, contents, listings), checked on DIR; run
        it on ROOT's model too (spot ID --model ROOT) to check the model.
    aufs_store.py counts ROOT [ID...]
        what `strata import-aufs` should count, as "key=value" words:
        layers files bytes dirs links hardlinks whiteouts opaque (of the
        given layers, or all)
    aufs_store.py snapshot DIR
        every entry under DIR (itself included): type, mode, owner, size,
        mtime and ctime (ns), inode, links, device, symlink target, sha256,
        every xattr; for checking that nothing wrote to DIR

The aufs semantics: a name is looked up in the branches top down; the first
branch holding it wins; a .wh.<name> file in branch k hides <name> in the
branches below k; a directory merges with the same-named directories below
it until a branch where the name is whited out, is not a directory, or the
directory holds .wh..wh..opq (included, then nothing below).  Names starting
with .wh. are never visible.  Opaque markers in a branch's root dir are not
used (aufs never makes them, and overlay ignores an opaque root).  Sockets
are not layer content (Docker's tars have none): the expected tree has none.
"""

import hashlib
import os
import random
import stat
import sys

T0 = 1500000000
WH = ".wh."
META = ".wh..wh."
OPQ = ".wh..wh..opq"
BASE_WH = ".wh..wh.aufs"
PLNK = ".wh..wh.plnk"
ORPH = ".wh..wh.orph"


# ---- the store description ----------------------------------------------------

def F(path, data, mode=0o644, uid=0, gid=0, mtime=T0, xattrs=None, sparse=None):
    if isinstance(data, str):
        data = data.encode()
    return dict(op="file", path=path, data=data, mode=mode, uid=uid, gid=gid, mtime=mtime,
                xattrs=xattrs or {}, sparse=sparse)


def D(path, mode=0o755, uid=0, gid=0, mtime=T0, xattrs=None):
    return dict(op="dir", path=path, mode=mode, uid=uid, gid=gid, mtime=mtime, xattrs=xattrs or {})


def S(path, target, uid=0, gid=0, mtime=T0):
    return dict(op="symlink", path=path, target=target, uid=uid, gid=gid, mtime=mtime)


def HL(path, target):
    return dict(op="hardlink", path=path, target=target)


def CHR(path, major, minor, mode=0o666, uid=0, gid=0, mtime=T0):
    return dict(op="chr", path=path, dev=(major, minor), mode=mode, uid=uid, gid=gid, mtime=mtime)


def BLK(path, major, minor, mode=0o660, uid=0, gid=6, mtime=T0):
    return dict(op="blk", path=path, dev=(major, minor), mode=mode, uid=uid, gid=gid, mtime=mtime)


def FIFO(path, mode=0o644, uid=0, gid=0, mtime=T0):
    return dict(op="fifo", path=path, mode=mode, uid=uid, gid=gid, mtime=mtime)


def SOCK(path):
    return dict(op="sock", path=path)


def W(path):
    """A whiteout of path: <dir>/.wh.<name>."""
    return dict(op="wh", path=path)


def O(path):
    """path is an opaque dir: <path>/.wh..wh..opq."""
    return dict(op="opq", path=path)


def P(target):
    """A pseudo-link: .wh..wh.plnk/<ino>.<n>, a hardlink of target (or, with
    target None, a file of its own that no visible name links to)."""
    return dict(op="plnk", target=target)


class Layer:
    def __init__(self, lid, parent, ents, bookkeeping=True, wh_links=True, spots=()):
        self.id, self.parent, self.ents = lid, parent, ents
        # A branch that was once a container's rw branch has aufs's
        # bookkeeping; one made by ApplyDiff from a tar has plain .wh. files.
        self.bookkeeping, self.wh_links = bookkeeping, wh_links and bookkeeping
        self.spots = list(spots)


def hexid(name):
    return hashlib.sha256(name.encode()).hexdigest()


def rnd(seed, n):
    return random.Random(seed).randbytes(n)


def chain_a():
    t = T0
    a1 = [
        D("etc", mtime=t + 1),
        F("etc/passwd", "root:x:0:0::/root:/bin/sh\n", mtime=t + 2),
        F("etc/shadow", "root:*::0:::::\n", mode=0o640, gid=42, mtime=t + 3),
        D("etc/conf.d"), F("etc/conf.d/a.conf", "a=1\n", mtime=t + 4,
                           xattrs={"user.comment": b"base conf"}),
        D("bin"),
        F("bin/sh", b"\x7fELF" + rnd(1, 20000), mode=0o755, mtime=t + 5),
        F("bin/su", "su\n", mode=0o4755, mtime=t + 6),
        F("bin/wall", "wall\n", mode=0o2755, gid=5, mtime=t + 7),
        S("bin/link", "sh", mtime=t + 8),
        S("bin/abs", "/bin/sh", mtime=t + 9),
        F("bin/hl1", "hardlinked\n", mode=0o755, mtime=t + 10),
        HL("bin/hl2", "bin/hl1"),
        HL("bin/hl3", "bin/hl1"),
        D("usr/share/doc/pkg", mode=0o755),
        F("usr/share/doc/pkg/README", "readme\n", mtime=t + 11),
        F("usr/share/doc/pkg/COPYING", "gpl\n", mtime=t + 12),
        F("usr/lib/x/y/z/deep/f", "five deep\n", mtime=t + 13),
        F("var/lib/data/1", "1\n"), F("var/lib/data/2", "2\n"), F("var/lib/data/edited", "v1\n"),
        D("dev"),
        CHR("dev/null", 1, 3, mtime=t + 14),
        BLK("dev/loop0", 7, 0, mtime=t + 15),
        FIFO("dev/initctl", mode=0o600, mtime=t + 16),
        D("tmp", mode=0o1777),
        D("home/user", mode=0o750, uid=1000, gid=1000),
        F("home/user/.profile", "PS1=x\n", mode=0o600, uid=1000, gid=1000, mtime=t + 17),
        F("home/user/big-uid", "userns\n", uid=100000, gid=100000, mtime=t + 18),
        F("big/sparse", b"data", sparse=(8 << 20, 16 << 20), mtime=t + 19),
        F("big/blob", rnd(2, 1 << 20), mtime=t + 20),
        F("nomode", "no permissions\n", mode=0o000, mtime=t + 21),
        F("todir", "a file, a dir in A2\n", mtime=t + 22),
        D("tofile"), F("tofile/child", "child\n"), D("tofile/sub"), F("tofile/sub/x", "x\n"),
        D("opq1"), F("opq1/a", "a\n"), F("opq1/b", "b\n"), F("opq1/sub/c", "c\n"),
        F("deep/1/2/3/4/x", "x\n"), F("deep/1/2/3/4/y", "y\n"), F("deep/1/2/3/sib", "sib\n"),
        D("wdir"), F("wdir/old1", "old1\n"), F("wdir/sub/old3", "old3\n"),
        F("rootfile", "root file\n", mtime=t + 23),
        D("rootdir"), F("rootdir/a", "a\n"), F("rootdir/sub/b", "b\n"),
        F("n1/n2/n3/n4/n5/victim", "victim\n"), F("n1/n2/n3/n4/n5/keep", "keep\n"),
        D("n1/n2/n3/n4/n5/vdir"), F("n1/n2/n3/n4/n5/vdir/in", "in\n"),
        F(".whatever", "not a whiteout: .wh is not .wh.\n"),
        F("wh.file", "not a whiteout either\n"),
        F("spaced name", "space\n"),
    ]
    a2 = [
        W("rootfile"), W("rootdir"),
        W("n1/n2/n3/n4/n5/victim"), W("n1/n2/n3/n4/n5/vdir"),
        W("etc/shadow"),
        F("etc/passwd", "root:x:0:0::/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n",
          mode=0o600, mtime=t + 100),
        D("todir", mode=0o700), F("todir/inner", "inner\n"), F("todir/inner2", "inner2\n"),
        F("tofile", "a dir in A1, a file now\n", mtime=t + 101),
        O("opq1"), F("opq1/new", "new in the opaque dir\n"),
        O("deep/1/2/3/4"), F("deep/1/2/3/4/z", "z\n"),
        W("wdir"),
        F("var/lib/data/edited", "v2, also in plnk\n", mtime=t + 102),
        P("var/lib/data/edited"), P(None),
        F("usr/bin/a", "same inode\n", mode=0o755, mtime=t + 103), HL("usr/bin/b", "usr/bin/a"),
        F("bin/sh", b"\x7fELF" + rnd(3, 30000), mode=0o755, mtime=t + 104,
          xattrs={"user.pax": b"em"}),
        SOCK("run/daemon.sock"),
        F("run/pid", "42\n"),
    ]
    a3a = [
        D("wdir", mode=0o711, uid=7, gid=8), F("wdir/new", "recreated\n"),
        O("wdir/sub"), F("wdir/sub/n", "opaque under a recreated dir\n"),
        W("opq1/new"), F("opq1/newer", "newer\n"),
        W("usr/share"),
        W("todir/inner"),
        F("bin/link", "a symlink before\n", mtime=t + 200),
        CHR("dev/null", 1, 5, mode=0o620, gid=5, mtime=t + 201),
        W("bin/hl2"),
        F("bin/plnked", "in plnk too\n"), P("bin/plnked"),
    ]
    a3b = [
        F("etc/passwd", "sibling\n", mtime=t + 300),
        W("home"),
        D("home2"), F("home2/x", "x\n"),
        O("var"), F("var/new", "only this in var\n"),
        S("rootfile", "/etc/passwd", mtime=t + 301),
    ]
    a4 = [
        D("usr/share", mode=0o750), F("usr/share/fresh", "fresh\n"),
        F("rootfile", "back again\n", mtime=t + 400),
        D("deep/1/2/3/4/5"), F("deep/1/2/3/4/5/f", "f\n"),
        D("rootdir", mode=0o700), F("rootdir/only", "only\n"),
        W("deep/1/2/3/sib"),
        F("hl/x", "x\n"), HL("hl/y", "hl/x"), HL("hl/sub/z", "hl/x"),
    ]
    return [
        Layer("A1", None, a1, bookkeeping=False, spots=[
            ("rootfile", "content", "root file\n"), ("bin/hl2", "content", "hardlinked\n"),
            ("big/sparse", "size", 16 << 20), ("bin/su", "mode", 0o4755),
            ("run", "absent", None),
        ]),
        Layer("A2", "A1", a2, spots=[
            ("rootfile", "absent", None), ("rootdir", "absent", None),
            ("n1/n2/n3/n4/n5/victim", "absent", None), ("n1/n2/n3/n4/n5/vdir", "absent", None),
            ("n1/n2/n3/n4/n5", "listing", ["keep"]),
            ("etc/shadow", "absent", None), ("etc", "listing", ["conf.d", "passwd"]),
            ("todir", "listing", ["inner", "inner2"]), ("tofile", "content", "a dir in A1, a file now\n"),
            ("opq1", "listing", ["new"]), ("deep/1/2/3/4", "listing", ["z"]),
            ("deep/1/2/3", "listing", ["4", "sib"]),
            ("wdir", "absent", None), ("var/lib/data/edited", "content", "v2, also in plnk\n"),
            ("usr/bin", "listing", ["a", "b"]), ("run", "listing", ["pid"]),
            ("", "nometa", None),
        ]),
        Layer("A3a", "A2", a3a, wh_links=False, spots=[
            ("wdir", "listing", ["new", "sub"]), ("wdir/sub", "listing", ["n"]),
            ("opq1", "listing", ["newer"]), ("usr", "listing", ["bin", "lib"]),
            ("todir", "listing", ["inner2"]), ("bin/link", "content", "a symlink before\n"),
            ("bin/hl2", "absent", None), ("bin/hl3", "content", "hardlinked\n"),
            ("", "nometa", None),
        ]),
        Layer("A3b", "A2", a3b, spots=[
            ("etc/passwd", "content", "sibling\n"), ("home", "absent", None),
            ("var", "listing", ["new"]), ("rootfile", "symlink", "/etc/passwd"),
            ("wdir", "absent", None),
        ]),
        Layer("A4", "A3a", a4, spots=[
            ("usr/share", "listing", ["fresh"]), ("rootfile", "content", "back again\n"),
            ("deep/1/2/3/4", "listing", ["5", "z"]), ("deep/1/2/3", "listing", ["4"]),
            ("rootdir", "listing", ["only"]), ("wdir/sub", "listing", ["n"]),
            ("hl", "listing", ["sub", "x", "y"]),
        ]),
    ]


def chain_b():
    """Docker-style ids: an image layer, a container's -init layer, the
    container's layer (with aufs's bookkeeping and pseudo-links)."""
    b1, binit, bc = hexid("b1"), hexid("bc") + "-init", hexid("bc")
    return [
        Layer(b1, None, [
            F("etc/hostname", "\n"), F("etc/hosts", "127.0.0.1 localhost\n"),
            D("proc", mode=0o555), D("sys", mode=0o555), D("dev"),
            F("usr/bin/env", rnd(4, 5000), mode=0o755),
        ], bookkeeping=False),
        Layer(binit, b1, [
            F(".dockerenv", "", mode=0o755), D("dev/pts"), D("dev/shm", mode=0o1777),
            F("dev/console", "", mode=0o755), F("etc/hostname", "", mode=0o755),
            F("etc/hosts", "", mode=0o755), F("etc/resolv.conf", "", mode=0o755),
            S("etc/mtab", "/proc/mounts"),
        ]),
        Layer(bc, binit, [
            W("etc/hostname"), F("root/.ash_history", "ls\nrm /etc/hostname\n", mode=0o600),
            W("usr/bin/env"), F("usr/bin/new", "new\n", mode=0o755),
            P("usr/bin/new"), P(None), P(None),
            O("tmp"), F("tmp/t", "t\n"),
        ], spots=[("etc", "listing", ["hosts", "mtab", "resolv.conf"]), ("usr/bin", "listing", ["new"])]),
    ]


def chain_c():
    return [Layer("C-empty", None, [])]


DEEP_N = 120


def deep_id(i):
    return "deep%03d" % i


def chain_deep(blob_kib):
    layers = []
    for i in range(1, DEEP_N + 1):
        t = T0 + 1000 + i
        e = [F("f/%d" % i, "%d\n" % i, mtime=t), F("top", "%d\n" % i, mtime=t, mode=0o600 + i % 8)]
        if blob_kib:
            e.append(F("blob/%d" % i, rnd(100 + i, blob_kib << 10), mtime=t))
        if i % 7 == 0:
            e.append(W("f/%d" % (i - 3)))
        if i % 10 == 0:
            e.append(O("opq"))
        e.append(F("opq/%d" % i, "%d\n" % i, mtime=t))
        if i % 11 == 0:
            e.append(F("d/%d/x" % i, "x\n", mtime=t))
        if i % 22 == 5 and i > 22:
            e.append(W("d/%d" % (i - 5)))
        if i % 17 == 0:
            if (i // 17) % 2:
                e.append(F("flip/x", "flip %d\n" % i, mtime=t))
            else:
                e.append(F("flip", "flip %d\n" % i, mtime=t))
        if i % 9 == 0:
            e += [F("hl/%d-a" % i, "%d\n" % i, mtime=t), HL("hl/%d-b" % i, "hl/%d-a" % i)]
        if i % 10 == 0:
            e.append(P("f/%d" % i))
        layers.append(Layer(deep_id(i), deep_id(i - 1) if i > 1 else None, e,
                            bookkeeping=i % 2 == 0, wh_links=i % 4 == 0))
    last = layers[-1]
    last.spots = [
        ("top", "content", "120\n"), ("f/116", "absent", None), ("f/115", "content", "115\n"),
        ("opq", "listing", ["120"]), ("d", "listing", ["11", "33", "55", "77", "99"]),
        ("flip", "listing", ["x"]), ("flip/x", "content", "flip 119\n"),
    ]
    layers[118].spots = [("opq", "listing", [str(i) for i in range(110, 120)])]
    layers[101].spots = [("flip", "content", "flip 102\n")]
    layers[100].spots = [("flip", "listing", ["x"]), ("flip/x", "content", "flip 85\n")]
    return layers


def chain_ghost():
    """Whiteouts that hide nothing: in a base layer, in a dir new in its
    layer, inside an opaque dir; and one at the root of a layer that has a
    parent (overlay merges the root: never seen).  aufs never shows them."""
    return [
        Layer("G1", None, [F("keep", "keep\n"), W("ghost-in-base"), F("o/a", "a\n")], spots=[
            ("", "listing", ["keep", "o"])]),
        Layer("G2", "G1", [W("newdir/ghost"), F("newdir/real", "real\n"), O("o"), W("o/a"),
                           F("o/b", "b\n"), W("ghost-at-root")], spots=[
            ("", "listing", ["keep", "newdir", "o"]), ("newdir", "listing", ["real"]),
            ("o", "listing", ["b"])]),
        Layer("G3", "G2", [F("other", "other\n")], spots=[
            ("newdir", "listing", ["real"]), ("o", "listing", ["b"])]),
    ]


SETS = {
    "main": lambda blob: chain_a() + chain_b() + chain_c() + chain_deep(blob),
    "ghost": lambda blob: chain_ghost(),
}


def scenario(blob_kib=64, which=None):
    if which:
        return SETS[which](blob_kib)
    return [x for k in SETS for x in SETS[k](0)]


# ---- building -----------------------------------------------------------------

def makedirs(base, rel):
    cur = base
    for part in rel.split("/"):
        if not part:
            continue
        cur = os.path.join(cur, part)
        if not os.path.isdir(cur):
            os.mkdir(cur, 0o755)


def set_meta(p, e):
    os.chown(p, e.get("uid", 0), e.get("gid", 0), follow_symlinks=False)
    if e["op"] != "symlink":
        os.chmod(p, e["mode"])
    for k, v in e.get("xattrs", {}).items():
        os.setxattr(p, k, v, follow_symlinks=False)


def build_layer(root, layer, chain):
    diff = os.path.join(root, "diff", layer.id)
    os.mkdir(diff, 0o755)
    os.mkdir(os.path.join(root, "mnt", layer.id), 0o755)
    with open(os.path.join(root, "layers", layer.id), "w") as f:
        for p in chain:
            f.write(p + "\n")
    if layer.bookkeeping:
        base = os.path.join(diff, BASE_WH)
        with open(base, "w"):
            pass
        os.chmod(base, 0o444)
        os.mkdir(os.path.join(diff, ORPH), 0o700)
        os.mkdir(os.path.join(diff, PLNK), 0o700)
    dirs = []
    n_plnk = 0
    for e in layer.ents:
        op, rel = e["op"], e.get("path")
        if op == "plnk":
            if e["target"]:
                tgt = os.path.join(diff, e["target"])
                name = "%d.%d" % (os.lstat(tgt).st_ino, n_plnk)
                os.link(tgt, os.path.join(diff, PLNK, name))
            else:
                name = "%d.%d" % (987654321 + n_plnk, n_plnk)
                with open(os.path.join(diff, PLNK, name), "wb") as f:
                    f.write(b"a pseudo-link with no visible twin\n")
            n_plnk += 1
            continue
        parent, name = os.path.split(rel)
        makedirs(diff, parent)
        p = os.path.join(diff, rel)
        if op == "dir":
            makedirs(diff, rel)
            dirs.append((p, e))
        elif op == "file":
            with open(p, "wb") as f:
                if e["sparse"]:
                    off, size = e["sparse"]
                    f.seek(off)
                    f.write(e["data"])
                    f.truncate(size)
                else:
                    f.write(e["data"])
            set_meta(p, e)
            os.utime(p, (e["mtime"], e["mtime"]))
        elif op == "symlink":
            os.symlink(e["target"], p)
            set_meta(p, e)
            os.utime(p, (e["mtime"], e["mtime"]), follow_symlinks=False)
        elif op == "hardlink":
            os.link(os.path.join(diff, e["target"]), p)
        elif op in ("chr", "blk", "fifo"):
            kind = {"chr": stat.S_IFCHR, "blk": stat.S_IFBLK, "fifo": stat.S_IFIFO}[op]
            os.mknod(p, kind | 0o600, os.makedev(*e["dev"]) if "dev" in e else 0)
            set_meta(p, e)
            os.utime(p, (e["mtime"], e["mtime"]))
        elif op == "sock":
            import socket
            s = socket.socket(socket.AF_UNIX)
            s.bind(p)
            s.close()
        elif op == "wh":
            w = os.path.join(diff, parent, WH + name)
            if layer.wh_links:
                os.link(os.path.join(diff, BASE_WH), w)
            else:
                with open(w, "wb"):
                    pass
                os.chmod(w, 0o444)
        elif op == "opq":
            makedirs(diff, rel)
            w = os.path.join(p, OPQ)
            if layer.wh_links:
                os.link(os.path.join(diff, BASE_WH), w)
            else:
                with open(w, "wb"):
                    pass
        else:
            raise ValueError(op)
    # Directories last, deepest first: their mtimes survive their children.
    for p, e in sorted(dirs, key=lambda x: -x[0].count("/")):
        set_meta(p, e)
        os.utime(p, (e["mtime"], e["mtime"]))


def build(root, blob_kib, which):
    for d in ("layers", "diff", "mnt"):
        os.makedirs(os.path.join(root, d), 0o700)
    chains = {}
    for layer in scenario(blob_kib, which):
        chain = ([layer.parent] + chains[layer.parent]) if layer.parent else []
        chains[layer.id] = chain
        build_layer(root, layer, chain)
    if which != "main":
        return
    # What Docker's aufs driver leaves from an interrupted remove.
    os.makedirs(os.path.join(root, "diff", "A1-removing", "junk"))
    os.makedirs(os.path.join(root, "mnt", "A1-removing"))


# ---- the aufs view ------------------------------------------------------------

def chain_of(root, lid):
    with open(os.path.join(root, "layers", lid)) as f:
        return [line for line in f.read().split("\n") if line]


def valid_id(name):
    import re
    return len(name) <= 128 and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) \
        and not name.endswith("-removing")


def store_layers(root):
    ids = sorted(n for n in os.listdir(os.path.join(root, "layers")) if valid_id(n))
    return sorted(ids, key=lambda i: (len(chain_of(root, i)), i))


def lexists(p):
    try:
        os.lstat(p)
        return True
    except FileNotFoundError:
        return False


def record(path):
    st = os.lstat(path)
    r = dict(type=stat.S_IFMT(st.st_mode), mode=stat.S_IMODE(st.st_mode), uid=st.st_uid, gid=st.st_gid)
    if not stat.S_ISDIR(st.st_mode):
        r["mtime"] = int(st.st_mtime)
    if stat.S_ISREG(st.st_mode):
        r["size"] = st.st_size
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""):
                h.update(b)
        r["sha256"] = h.hexdigest()
    elif stat.S_ISLNK(st.st_mode):
        r["target"] = os.readlink(path)
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        r["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    if not stat.S_ISLNK(st.st_mode):
        r["xattrs"] = {k: os.getxattr(path, k, follow_symlinks=False)
                       for k in sorted(os.listxattr(path, follow_symlinks=False)) if k.startswith("user.")}
    return r


def aufs_view(branches, rel, out, at_root=True):
    """branches: dirs, top first, that make the merged dir `rel`."""
    seen, hidden = {}, set()
    for k, b in enumerate(branches):
        names = os.listdir(b)
        for n in names:
            if n.startswith(WH) or n in seen or n in hidden:
                continue
            seen[n] = k
        for n in names:
            if n.startswith(WH) and not n.startswith(META) and stat.S_ISREG(os.lstat(os.path.join(b, n)).st_mode):
                hidden.add(n[len(WH):])
        if not at_root and lexists(os.path.join(b, OPQ)):
            break
    for n, k in sorted(seen.items()):
        p = os.path.join(branches[k], n)
        st = os.lstat(p)
        if stat.S_ISSOCK(st.st_mode):
            continue
        r = os.path.join(rel, n) if rel else n
        out[r] = record(p)
        if not stat.S_ISDIR(st.st_mode):
            continue
        sub = []
        for b in branches[k:]:
            q = os.path.join(b, n)
            if b is not branches[k] and lexists(os.path.join(b, WH + n)):
                # whited out in this branch: this and the ones below are hidden
                break
            if not lexists(q):
                continue
            if not stat.S_ISDIR(os.lstat(q).st_mode):
                break
            sub.append(q)
            if lexists(os.path.join(q, OPQ)):
                break
            if lexists(os.path.join(b, WH + n)):
                break
        aufs_view(sub, r, out, at_root=False)


def expected(root, lid):
    branches = [os.path.join(root, "diff", x) for x in [lid] + chain_of(root, lid)]
    out = {}
    aufs_view(branches, "", out)
    return out


def actual(d):
    out = {}
    for top, dirs, files in os.walk(d):
        for n in dirs + files:
            p = os.path.join(top, n)
            try:
                out[os.path.relpath(p, d)] = record(p)
            except FileNotFoundError:
                # listed by readdir, but lookup says ENOENT: a whiteout in
                # a directory overlay does not merge
                out[os.path.relpath(p, d)] = dict(type="phantom (readdir lists it, lstat: ENOENT)",
                                                  mode=0)
    return out


def show(r):
    r = dict(r)
    r["type"] = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "chr",
                 stat.S_IFBLK: "blk", stat.S_IFIFO: "fifo"}.get(r["type"], r["type"])
    r["mode"] = "%04o" % r["mode"]
    return r


def compare(root, lid, d):
    want, got = expected(root, lid), actual(d)
    bad = []
    for p in sorted(set(want) | set(got)):
        if p not in got:
            bad.append("%s /%s: missing (want %s)" % (lid, p, show(want[p])))
        elif p not in want:
            bad.append("%s /%s: unexpected (%s)" % (lid, p, show(got[p])))
        elif want[p] != got[p]:
            w, g = show(want[p]), show(got[p])
            keys = [k for k in sorted(set(w) | set(g)) if w.get(k) != g.get(k)]
            bad.append("%s /%s: %s" % (lid, p, "; ".join("%s: want %r, got %r" % (k, w.get(k), g.get(k))
                                                         for k in keys)))
    return want, bad


# ---- spot checks ----------------------------------------------------------------

def spot(lid, d, tree=None):
    """Checks the hand-written expectations about lid on the dir d, or (tree
    given) on the model's merged tree."""
    layer = next((x for x in scenario(0) if x.id == lid), None)
    bad = []
    for path, what, val in layer.spots if layer else []:
        p = os.path.join(d, path) if d else None
        if tree is not None:
            ex = path == "" or path in tree
            kids = sorted(x.split("/")[-1] for x in tree if os.path.dirname(x) == path)
            r = tree.get(path)
        else:
            ex = lexists(p)
            kids = sorted(os.listdir(p)) if ex and os.path.isdir(p) and not os.path.islink(p) else None
            r = record(p) if ex else None
        if what == "absent":
            ok = not ex
        elif what == "listing":
            ok = ex and kids == val
        elif what == "content":
            ok = ex and r["type"] == stat.S_IFREG and r["sha256"] == hashlib.sha256(val.encode()).hexdigest()
        elif what == "size":
            ok = ex and r.get("size") == val
        elif what == "mode":
            ok = ex and r["mode"] == val
        elif what == "symlink":
            ok = ex and r.get("target") == val
        elif what == "nometa":
            # aufs's bookkeeping is never visible
            names = [x for x in (tree or {})] if tree is not None else \
                [os.path.relpath(os.path.join(t, n), d) for t, ds, fs in os.walk(d) for n in ds + fs]
            ok = not [x for x in names if ".wh." in x]
        else:
            raise ValueError(what)
        if not ok:
            bad.append("%s /%s: want %s %r; exists=%s listing=%s" % (lid, path, what, val, ex, kids))
    return len(layer.spots) if layer else 0, bad


def verify(root, strata, sroot, ids):
    """For each layer: strata mount, compare, spot checks, strata umount."""
    import subprocess
    failed = 0
    for lid in ids or store_layers(root):
        m = subprocess.run([strata, "--root", sroot, "mount", lid], capture_output=True, text=True)
        if m.returncode != 0:
            print("not ok %s\n  strata mount %s: %s" % (lid, lid, m.stderr.strip()))
            failed += 1
            continue
        try:
            want, bad = compare(root, lid, m.stdout.strip())
            n, bad2 = spot(lid, m.stdout.strip())
            bad += bad2
        except Exception as e:  # report, and unmount all the same
            want, n, bad = {}, 0, ["%s: %r" % (lid, e)]
        finally:
            u = subprocess.run([strata, "--root", sroot, "umount", lid], capture_output=True, text=True)
        if u.returncode != 0:
            bad.append("strata umount %s: %s" % (lid, u.stderr.strip()))
        if bad:
            failed += 1
            print("not ok %s (%d differences)" % (lid, len(bad)))
            for line in bad[:30]:
                print("  " + line)
        else:
            print("ok %s %d entries%s" % (lid, len(want), ", %d hand-written expectations" % n if n else ""))
        sys.stdout.flush()
    return 1 if failed else 0


# ---- counts, snapshot -----------------------------------------------------------

def counts(root, ids):
    c = dict(layers=0, files=0, bytes=0, dirs=0, links=0, hardlinks=0, whiteouts=0, opaque=0)
    for lid in ids:
        c["layers"] += 1
        inodes = set()
        base = os.path.join(root, "diff", lid)
        for top, dirs, files in os.walk(base):
            rel = os.path.relpath(top, base)
            dirs[:] = [x for x in dirs if not x.startswith(META)]
            for n in sorted(dirs + files):
                p = os.path.join(top, n)
                st = os.lstat(p)
                if n.startswith(META):
                    if n == OPQ and rel != "." and stat.S_ISREG(st.st_mode):
                        c["opaque"] += 1
                elif n.startswith(WH) and stat.S_ISREG(st.st_mode):
                    c["whiteouts"] += 1
                elif stat.S_ISDIR(st.st_mode):
                    c["dirs"] += 1
                elif stat.S_ISREG(st.st_mode):
                    if st.st_nlink > 1 and st.st_ino in inodes:
                        c["hardlinks"] += 1
                    else:
                        inodes.add(st.st_ino)
                        c["files"] += 1
                        c["bytes"] += st.st_size
                elif not stat.S_ISSOCK(st.st_mode):
                    c["links"] += 1
    return c


def snapshot(d):
    lines = []
    for top, dirs, files in os.walk(d):
        dirs.sort()
        for n in [None] + sorted(dirs + files):
            p = top if n is None else os.path.join(top, n)
            if n is None and top != d:
                continue
            st = os.lstat(p)
            extra = ""
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    extra = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                extra = "-> " + os.readlink(p)
            xa = ",".join("%s=%s" % (k, os.getxattr(p, k, follow_symlinks=False).hex())
                          for k in sorted(os.listxattr(p, follow_symlinks=False)))
            lines.append("%s %o %d:%d size=%d mtime=%d ctime=%d ino=%d nlink=%d rdev=%d xattrs=%s %s" % (
                os.path.relpath(p, d), st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns,
                st.st_ctime_ns, st.st_ino, st.st_nlink, st.st_rdev, xa, extra))
    return lines


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd = argv[1]
    if cmd == "build":
        blob = int(argv[argv.index("--blob") + 1]) if "--blob" in argv else 64
        which = argv[argv.index("--set") + 1] if "--set" in argv else "main"
        build(argv[2], blob, which)
    elif cmd == "layers":
        print("\n".join(store_layers(argv[2])))
    elif cmd == "compare":
        want, bad = compare(argv[2], argv[3], argv[4])
        n, bad2 = spot(argv[3], argv[4])
        if bad or bad2:
            print("\n".join(bad + bad2))
            sys.exit(1)
        print("%d entries%s" % (len(want), ", %d hand-written expectations" % n if n else ""))
    elif cmd == "verify":
        sys.exit(verify(argv[2], argv[3], argv[4], argv[5:]))
    elif cmd == "spot":
        if argv[3] == "--model":
            n, bad = spot(argv[2], None, expected(argv[4], argv[2]))
        else:
            n, bad = spot(argv[2], argv[3])
        if bad:
            print("\n".join(bad))
            sys.exit(1)
        print("%d expectations" % n)
    elif cmd == "counts":
        ids = argv[3:] or store_layers(argv[2])
        print(" ".join("%s=%d" % kv for kv in counts(argv[2], ids).items()))
    elif cmd == "snapshot":
        print("\n".join(snapshot(argv[2])))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
