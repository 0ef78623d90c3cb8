#!/usr/bin/env python3
"""A 3-layer chain of OCI layer tars and what a correct store makes of it.

    tarchain.py gen DIR        writes into DIR:
        l1.tar l2.tar l3.tar         the layer tars (PAX; whiteouts as .wh.NAME)
        expected-L{1,2,3}.tar        the merged tree after each layer, as a tar
                                     (compare with `tarcmp.py expected.tar MOUNTPOINT`)
        changes-L{1,2,3}.txt         `strata changes` of each layer against the one
                                     below ("A /p", "C /p", "D /p", byte order)
        size-L{1,2,3}                the size `strata apply` prints for each tar
    tarchain.py size PATH      sum of regular-file sizes, each inode once, of a
                               tar (hard-link entries count 0) or a directory
    tarchain.py order TAR      check how an exported layer tar names and orders
                               its entries: no leading "./" or "/", directories
                               (only) with a trailing "/", parents before their
                               children, sorted by path (the exported names, or
                               the layer's paths: .wh.X where X sorts, an opaque
                               marker right after its dir); prints each problem
    tarchain.py json-vs-text JSON TEXT
                               exit 0 when `changes --json` output JSON says the
                               same as the text output TEXT (both files)

The expected trees come from applying the tars to an in-memory model with OCI
whiteout semantics: in each layer the whiteouts and opaque markers hide what
the layers below hold (whatever their position in the tar), then the other
entries are added; a directory over a directory merges, anything else
replaces.  Changes follow Docker's tree comparison (pkg/archive/changes.go):
added paths and everything below a new directory are A, a vanished path is D
(not what was below it), a path whose type, mode, owner, device or (not for
directories) size or mtime or security.capability differs is C, and a
directory with any change beneath is C, except "/".
"""

import io
import json
import os
import stat
import sys
import tarfile

T0 = 1600000000
CAP = bytes.fromhex("0100000200040000000000000000000000000000")  # cap_net_bind_service=ep


# ---- layer specs ------------------------------------------------------------

def D(path, mode=0o755, uid=0, gid=0, mtime=T0, xattrs=None):
    return dict(op="dir", path=path, mode=mode, uid=uid, gid=gid, mtime=mtime, xattrs=xattrs or {})


def F(path, data, mode=0o644, uid=0, gid=0, mtime=T0, xattrs=None):
    if isinstance(data, str):
        data = data.encode()
    return dict(op="file", path=path, data=data, mode=mode, uid=uid, gid=gid, mtime=mtime,
                xattrs=xattrs or {})


def S(path, target, mtime=T0, uid=0, gid=0):
    return dict(op="symlink", path=path, target=target, mode=0o777, uid=uid, gid=gid,
                mtime=mtime, xattrs={})


def H(path, target):
    return dict(op="hardlink", path=path, target=target)


def DEV(path, kind, major, minor, mode=0o666, mtime=T0):
    return dict(op=kind, path=path, dev=(major, minor), mode=mode, uid=0, gid=0, mtime=mtime,
                xattrs={})


def FIFO(path, mode=0o644, mtime=T0):
    return dict(op="fifo", path=path, mode=mode, uid=0, gid=0, mtime=mtime, xattrs={})


def WH(path):
    parent, base = os.path.split(path)
    return dict(op="whiteout", path=os.path.join(parent, ".wh." + base), hides=path)


def OPQ(path):
    return dict(op="opaque", path=os.path.join(path, ".wh..wh..opq"), dir=path)


LONG = "long-" + "n" * 120  # a name past the 100-byte ustar field
DEEP = "/".join(["deep%02d" % i for i in range(30)])  # a 210-byte path


def layer1():
    t = T0
    ents = [
        D("a", mtime=t + 1), D("a/b", mtime=t + 2), D("a/b/c", mtime=t + 3),
        D("a/b/c/d", mtime=t + 4),
        F("a/b/c/d/leaf", "leaf\n", mtime=t + 5),
        F("a/b/c/deep1", "deep1\n", mtime=t + 6),
        F("a/b/c/deep2", "deep2\n", mtime=t + 7),
        F("a/b/x1", "x1\n", mtime=t + 8),
        F("a/b/x2", "x2\n", mtime=t + 9),
        S("a/b/link-up", "../y1", mtime=t + 10),
        F("a/y1", "y1\n", mtime=t + 11),
        F("a/y2", "y2\n", mtime=t + 12),
        F("a-b", "sorts between a and a/\n", mtime=t + 13),
        D("bin", mtime=t + 14),
        F("bin/sh", b"\x7fELF" + bytes(range(256)) * 4, mode=0o755, mtime=t + 15,
          xattrs={"security.capability": CAP}),
        D("d", mtime=t + 16),
        F("d/old1", "old1\n", mtime=t + 17),
        D("d/old2", mtime=t + 18),
        F("d/old2/f", "f\n", mtime=t + 19),
        F("d/same", "same v1\n", mtime=t + 20),
        D("dev", mtime=t + 21),
        DEV("dev/null", "chardev", 1, 3, mtime=t + 22),
        DEV("dev/loop0", "blockdev", 7, 0, mode=0o660, mtime=t + 23),
        FIFO("dev/fifo", mtime=t + 24),
        D("e", mtime=t + 25),
        F("e/child", "child\n", mtime=t + 26),
        D("etc", mtime=t + 27, xattrs={"user.dir": b"1"}),
        F("etc/conf", "a=1\n", mtime=t + 28, xattrs={"user.test": b"hello"}),
        F("etc/keep", "keep\n", mtime=t + 29),
        F("etc/passwd", "root:x:0:0::/root:/bin/sh\n", mtime=t + 30),
        F("etc/shadow", "root:*::0:::::\n", mode=0o640, gid=42, mtime=t + 31),
        F("ff", "file, later a dir\n", mtime=t + 32),
        F("h1", "hard\n", mtime=t + 33),
        H("a/h2", "h1"),
        S("link-abs", "/etc/conf", mtime=t + 34),
        S("link-rel", "etc/conf", mtime=t + 35),
        F("modeme", "mode me\n", mtime=t + 36),
        F("owned", "owned\n", uid=1000, gid=1000, mtime=t + 37,
          xattrs={"trusted.strata-test": b"t"}),
        D("re", mtime=t + 38),
        F("re/old", "old\n", mtime=t + 39),
        F("repl", "v1\n", mtime=t + 40),
        F("setuid", "suid\n", mode=0o4755, mtime=t + 41),
        F("setgid", "sgid\n", mode=0o2755, gid=5, mtime=t + 42),
        F("spaced name", "space\n", mtime=t + 43),
        D("tmp", mode=0o1777, mtime=t + 44),
        D("tree", mtime=t + 45),
        F("tree/t1", "t1\n", mtime=t + 46),
        D("tree/sub", mtime=t + 47),
        F("tree/sub/t2", "t2\n", mtime=t + 48),
        D("untouched", mtime=t + 49),
        F("untouched/u", "u\n", mtime=t + 50),
        F("\u00fcn\u00ef", "unicode\n", mtime=t + 51),
        F("big", bytes((i * 7) & 0xFF for i in range(300000)), mtime=t + 52),
        F("empty", "", mtime=t + 53),
        F(LONG, "long name\n", mtime=t + 54),
    ]
    parts = DEEP.split("/")
    for i in range(len(parts)):
        ents.append(D("/".join(parts[: i + 1]), mtime=t + 55))
    ents.append(F(DEEP + "/bottom", "bottom\n", mtime=t + 56))
    return ents


def layer2():
    t = T0 + 1000
    return [
        WH("link-abs"),                        # depth 1
        D("a", mtime=t + 1),
        WH("a/y2"),                            # depth 2
        D("a/b", mtime=t + 2),
        WH("a/b/x2"),                          # depth 3
        D("a/b/c", mtime=t + 3),
        WH("a/b/c/deep2"),                     # depth 4
        D("d", mtime=t + 4),
        OPQ("d"),                              # opaque, with new content
        F("d/new1", "new1\n", mtime=t + 5),
        F("d/same", "same, but version 2\n", mtime=t + 6),
        D("d/newdir", mtime=t + 7),
        F("d/newdir/n", "n\n", mtime=t + 8),
        F("e", "e was a dir\n", mtime=t + 9),  # dir -> file
        F("modeme", "mode me\n", mode=0o600, mtime=T0 + 36),  # chmod only
        WH("re"),                              # a dir, re-created in L3
        F("repl", "v2, replaced\n", mtime=t + 10),
    ]


def layer3():
    t = T0 + 2000
    return [
        WH("tree"),                            # a whole dir
        D("a", mtime=t + 1), D("a/b", mtime=t + 2), D("a/b/c", mtime=t + 3),
        WH("a/b/c/d"),                         # a dir at depth 4
        WH("a-b"),
        D("d", mtime=T0 + 1004), D("d/newdir", mtime=t + 4),
        WH("d/newdir/n"),                      # inside L2's opaque dir
        D("etc", mtime=t + 5, xattrs={"user.dir": b"1"}),
        WH("etc/keep"),
        F("new3", "new in 3\n", mtime=t + 6),
        H("etc/new3-link", "new3"),
        D("ff", mtime=t + 7),                  # file -> dir
        F("ff/inner", "inner\n", mtime=t + 8),
        D("re", mtime=t + 9),                  # re-created after L2's whiteout
        F("re/new", "re new\n", mtime=t + 10),
        D("untouched", mtime=t + 11),          # same dir, nothing changed beneath:
        WH("untouched/ghost"),                 # a whiteout of a name no layer has
    ]


LAYERS = [layer1, layer2, layer3]


# ---- tars -------------------------------------------------------------------

def tarinfo(e):
    ti = tarfile.TarInfo(e["path"])
    ti.mode, ti.uid, ti.gid, ti.mtime = e["mode"], e["uid"], e["gid"], e["mtime"]
    ti.uname = ti.gname = ""
    ti.pax_headers = {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape")
                      for k, v in e["xattrs"].items()}
    op = e["op"]
    data = None
    if op == "dir":
        ti.type = tarfile.DIRTYPE
    elif op == "file":
        ti.type = tarfile.REGTYPE
        ti.size = len(e["data"])
        data = io.BytesIO(e["data"])
    elif op == "symlink":
        ti.type = tarfile.SYMTYPE
        ti.linkname = e["target"]
    elif op in ("chardev", "blockdev"):
        ti.type = tarfile.CHRTYPE if op == "chardev" else tarfile.BLKTYPE
        ti.devmajor, ti.devminor = e["dev"]
    elif op == "fifo":
        ti.type = tarfile.FIFOTYPE
    else:
        raise ValueError(op)
    return ti, data


def write_layer(path, ents):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for e in ents:
            if e["op"] in ("whiteout", "opaque"):
                ti = tarfile.TarInfo(e["path"])
                ti.mtime, ti.mode = T0, 0o644
                tf.addfile(ti, io.BytesIO(b""))
            elif e["op"] == "hardlink":
                ti = tarfile.TarInfo(e["path"])
                ti.type = tarfile.LNKTYPE
                ti.linkname = e["target"]
                ti.mtime = T0
                tf.addfile(ti)
            else:
                ti, data = tarinfo(e)
                tf.addfile(ti, data)


def layer_size(ents):
    return sum(len(e["data"]) for e in ents if e["op"] == "file")


# ---- the model --------------------------------------------------------------

def below(model, path):
    return [p for p in model if p.startswith(path + "/")]


def remove(model, path):
    for p in below(model, path) + [path]:
        model.pop(p, None)


def apply_layer(model, ents):
    """OCI semantics: whiteouts hide the layers below, then entries are added."""
    for e in ents:
        if e["op"] == "whiteout":
            remove(model, e["hides"])
        elif e["op"] == "opaque":
            for p in below(model, e["dir"]):
                model.pop(p, None)
    for e in ents:
        op, path = e["op"], e["path"]
        if op in ("whiteout", "opaque"):
            continue
        parent = os.path.dirname(path)
        assert parent == "" or model.get(parent, {}).get("op") == "dir", path
        if op == "hardlink":
            remove(model, path)
            model[path] = model[e["target"]]
            continue
        old = model.get(path)
        if not (old is not None and old["op"] == "dir" and op == "dir"):
            remove(model, path)
        model[path] = dict(e)  # a new inode


def write_tree(path, model):
    seen = {}
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for p in sorted(model, key=lambda s: s.split("/")):
            e = model[p]
            if e["op"] != "dir" and id(e) in seen:
                ti = tarfile.TarInfo(p)
                ti.type = tarfile.LNKTYPE
                ti.linkname = seen[id(e)]
                tf.addfile(ti)
                continue
            seen[id(e)] = p
            ti, data = tarinfo(dict(e, path=p))
            tf.addfile(ti, data)


def stat_different(o, n):
    if o["op"] != n["op"] or o["mode"] != n["mode"] or o["uid"] != n["uid"] \
            or o["gid"] != n["gid"] or o.get("dev") != n.get("dev"):
        return True
    if o["op"] != "dir":
        def size(e):
            return len(e["data"]) if e["op"] == "file" else \
                len(e["target"].encode()) if e["op"] == "symlink" else 0
        if o["mtime"] != n["mtime"] or size(o) != size(n):
            return True
    return o["xattrs"].get("security.capability") != n["xattrs"].get("security.capability")


def children(model, path):
    pre = path + "/" if path else ""
    return sorted(p for p in model if p.startswith(pre) and "/" not in p[len(pre):])


def changes(old, new):
    out = []

    def add(path, n, o, added):
        start = len(out)
        if o is None:
            out.append(("A", path))
            added = True
        old_children = {}
        if o is not None and n["op"] == "dir" and o["op"] == "dir":
            old_children = {p: old[p] for p in children(old, path)}
        for cp in children(new, path):
            nc, oc = new[cp], old_children.pop(cp, None)
            child_added = False
            if oc is not None and stat_different(oc, nc):
                out.append(("C", cp))
                child_added = True
            add(cp, nc, oc, child_added)
        for cp in old_children:
            out.append(("D", cp))
        if len(out) > start and n["op"] == "dir" and not added and path != "":
            out.insert(start, ("C", path))

    root = {"op": "dir"}
    add("", root, root, True)
    return sorted(("/" + p, k) for k, p in out)


def gen(outdir):
    model = {}
    for i, layer in enumerate(LAYERS, 1):
        ents = layer()
        write_layer(os.path.join(outdir, "l%d.tar" % i), ents)
        before = dict(model)
        apply_layer(model, ents)
        write_tree(os.path.join(outdir, "expected-L%d.tar" % i), model)
        with open(os.path.join(outdir, "changes-L%d.txt" % i), "w") as f:
            for p, k in sorted(changes(before, model), key=lambda c: c[0].encode()):
                f.write("%s %s\n" % (k, p))
        with open(os.path.join(outdir, "size-L%d" % i), "w") as f:
            f.write("%d\n" % layer_size(ents))


def size(path):
    total = 0
    if os.path.isdir(path):
        seen = set()
        for dirpath, dirnames, filenames in os.walk(path):
            for n in filenames + dirnames:
                st = os.lstat(os.path.join(dirpath, n))
                if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_size
    else:
        with tarfile.open(path, "r:*") as tf:
            total = sum(m.size for m in tf if m.isreg())
    return total


def raw_names(path):
    """(name as stored, is_dir) for each entry of an uncompressed tar, without
    tarfile's stripping of trailing slashes."""
    out = []
    with tarfile.open(path, "r:") as tf, open(path, "rb") as raw:
        for m in tf:
            pos, name = m.offset, None
            while True:
                raw.seek(pos)
                hdr = raw.read(512)
                typ = hdr[156:157]
                size = int(hdr[124:136].strip(b"\0 ") or b"0", 8) if hdr[124] < 0x80 else 0
                if typ in (b"x", b"L"):
                    data = raw.read(size)
                    if typ == b"L":
                        name = data.rstrip(b"\0")
                    else:
                        while data:
                            n, rest = data.split(b" ", 1)
                            rec, data = rest[: int(n) - len(n) - 1], rest[int(n) - len(n) - 1:]
                            k, v = rec.rstrip(b"\n").split(b"=", 1)
                            if k == b"path" and name is None:
                                name = v
                            elif k == b"GNU.sparse.name":  # PAX sparse 0.1/1.0
                                name = v
                    pos += 512 + (size + 511) // 512 * 512
                    continue
                if typ in (b"g", b"K"):
                    pos += 512 + (size + 511) // 512 * 512
                    continue
                if name is None:
                    name = hdr[0:100].rstrip(b"\0")
                    prefix = hdr[345:500].rstrip(b"\0") if hdr[257:263] == b"ustar\0" else b""
                    if prefix:
                        name = prefix + b"/" + name
                break
            out.append((name, m.isdir()))
    return out


def check_order(path):
    names = raw_names(path)
    problems = []
    for name, isdir in names:
        if name.startswith(b"./") or name.startswith(b"/"):
            problems.append("leading ./ or /: %r" % name)
        if isdir != name.endswith(b"/"):
            problems.append("%s without%s a trailing /: %r"
                            % ("dir" if isdir else "non-dir", "" if isdir else " (has)", name))
    bare = [n.rstrip(b"/") for n, _ in names]
    pos = {n: i for i, n in enumerate(bare)}
    for i, n in enumerate(bare):
        parent = n.rsplit(b"/", 1)[0] if b"/" in n else None
        if parent is not None and pos.get(parent, -1) > i:
            problems.append("%r comes before its parent dir" % n)
    # Sorted by the exported names, or (as Docker's overlay export walks the
    # diff dir) by the paths in the layer: a whiteout where the name it hides
    # sorts, an opaque marker right after its dir.
    def layer_path(n):
        parts = n.split(b"/")
        if parts[-1] == b".wh..wh..opq":
            parts[-1] = b""
        elif parts[-1].startswith(b".wh."):
            parts[-1] = parts[-1][4:]
        return parts
    by_layer = [b"/".join(layer_path(n)) for n in bare]
    ok = (bare == sorted(bare) or bare == sorted(bare, key=lambda s: s.split(b"/"))
          or [n for n, _ in names] == sorted(n for n, _ in names)
          or by_layer == sorted(by_layer)
          or bare == sorted(bare, key=layer_path))
    if not ok:
        for a, b in zip(bare, sorted(bare, key=lambda s: s.split(b"/"))):
            if a != b:
                problems.append("not sorted by path: %r where %r belongs" % (a, b))
                break
    if len(set(bare)) != len(bare):
        problems.append("duplicate names")
    for p in problems:
        print(p)
    return 1 if problems else 0


def json_vs_text(jpath, tpath):
    kinds = {0: "C", 1: "A", 2: "D"}
    with open(jpath) as f:
        doc = json.load(f)
    with open(tpath) as f:
        text = f.read().splitlines()
    got = ["%s %s" % (kinds[c["Kind"]], c["Path"]) for c in doc]
    if got != text:
        print("json: %s" % got)
        print("text: %s" % text)
        return 1
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "gen":
        gen(argv[2])
    elif len(argv) == 3 and argv[1] == "size":
        print(size(argv[2]))
    elif len(argv) == 3 and argv[1] == "order":
        return check_order(argv[2])
    elif len(argv) == 4 and argv[1] == "json-vs-text":
        return json_vs_text(argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
