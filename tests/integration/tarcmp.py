#!/usr/bin/env python3
"""Compare two file trees entry by entry: tar archives or directories.

    tarcmp.py [--no-mtime] [--no-dir-mtime] A B

A and B are each a tar file (plain or compressed, anything Python's tarfile
reads) or a directory (walked with lstat, never following symlinks).  Per
entry it compares: type, mode (permission, setuid/setgid/sticky bits), uid,
gid, size (regular files), link target (symlinks), device numbers (char and
block devices), mtime (whole seconds), xattrs (PAX SCHILY.xattr.* and
LIBARCHIVE.xattr.* records; security.selinux ignored) and the sha256 of the
content.

Names are normalized: a leading "./" and a trailing "/" are dropped and the
root entry "." is skipped.  A hard link takes the metadata and content of the
entry it links to (the inode is what an extractor creates), and hard links
are compared as groups: the set of names sharing an inode must be the same
on both sides, whichever name a tar happens to store as the regular entry.

Whiteout and opaque-marker entries (base name starting with ".wh.") carry no
metadata of their own in a layer tar, so only their type and size count.

In a directory, trusted.overlay.* xattrs are overlay's bookkeeping and are
ignored; so are the sizes and mtimes of directories' own st_size.

Prints one line per difference and exits 1 if there is any; otherwise prints
"N entries compared" and exits 0.  Exit 2 on a usage or read error.
"""

import base64
import hashlib
import os
import stat
import sys
import tarfile
import urllib.parse

IGNORED_XATTRS = {"security.selinux"}


def norm(name):
    while name.startswith("./"):
        name = name[2:]
    while name.endswith("/") and name != "/":
        name = name[:-1]
    if name in ("", "."):
        return None
    return name


def sha256_stream(f):
    h = hashlib.sha256()
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        h.update(b)
    return h.hexdigest()


class Entry:
    __slots__ = ("kind", "mode", "uid", "gid", "size", "target", "dev", "mtime",
                 "xattrs", "sha", "inode")

    def fields(self):
        return {
            "type": self.kind,
            "mode": "%04o" % self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "size": self.size,
            "target": self.target,
            "dev": self.dev,
            "mtime": self.mtime,
            "xattrs": self.xattrs,
            "sha256": self.sha,
        }


def tar_xattrs(m):
    xa = {}
    for k, v in m.pax_headers.items():
        if k.startswith("SCHILY.xattr."):
            name = k[len("SCHILY.xattr."):]
            xa[name] = v.encode("utf-8", "surrogateescape")
        elif k.startswith("LIBARCHIVE.xattr."):
            name = urllib.parse.unquote(k[len("LIBARCHIVE.xattr."):])
            val = base64.b64decode(v + "=" * (-len(v) % 4))
            xa.setdefault(name, val)
    return {k: v for k, v in xa.items() if k not in IGNORED_XATTRS}


TAR_KINDS = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
    tarfile.GNUTYPE_SPARSE: "file", tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink",
    tarfile.CHRTYPE: "chardev", tarfile.BLKTYPE: "blockdev", tarfile.FIFOTYPE: "fifo",
}


def load_tar(path):
    """name -> Entry; hard links share the Entry (same inode object)."""
    entries = {}
    count = 0
    with tarfile.open(path, "r:*") as tf:
        for m in tf:
            count += 1
            name = norm(m.name)
            if name is None:
                continue
            if m.type == tarfile.LNKTYPE:
                target = norm(m.linkname)
                if target not in entries:
                    raise SystemExit("%s: hard link %r to %r, which comes before no entry"
                                     % (path, m.name, m.linkname))
                entries[name] = entries[target]
                continue
            e = Entry()
            e.kind = TAR_KINDS.get(m.type, "type-%r" % m.type)
            e.mode = m.mode & 0o7777
            e.uid, e.gid = m.uid, m.gid
            e.size = m.size if e.kind == "file" else None
            e.target = m.linkname if e.kind == "symlink" else None
            e.dev = (m.devmajor, m.devminor) if e.kind in ("chardev", "blockdev") else None
            e.mtime = int(m.mtime)
            e.xattrs = tar_xattrs(m)
            e.sha = sha256_stream(tf.extractfile(m)) if e.kind == "file" else None
            e.inode = object()
            entries[name] = e
    return entries


def dir_kind(st):
    m = st.st_mode
    for test, kind in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISCHR, "chardev"), (stat.S_ISBLK, "blockdev"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket")):
        if test(m):
            return kind
    return "unknown"


def load_dir(root):
    entries = {}
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in sorted(dirnames + filenames):
            full = os.path.join(dirpath, n)
            name = os.path.relpath(full, root)
            st = os.lstat(full)
            e = Entry()
            e.kind = dir_kind(st)
            key = (st.st_dev, st.st_ino)
            if e.kind != "dir" and key in inodes:
                entries[name] = inodes[key]
                continue
            e.mode = stat.S_IMODE(st.st_mode)
            e.uid, e.gid = st.st_uid, st.st_gid
            e.size = st.st_size if e.kind == "file" else None
            e.target = os.readlink(full) if e.kind == "symlink" else None
            e.dev = ((os.major(st.st_rdev), os.minor(st.st_rdev))
                     if e.kind in ("chardev", "blockdev") else None)
            e.mtime = int(st.st_mtime)
            xa = {}
            for x in os.listxattr(full, follow_symlinks=False):
                if x in IGNORED_XATTRS or x.startswith("trusted.overlay."):
                    continue
                xa[x] = os.getxattr(full, x, follow_symlinks=False)
            e.xattrs = xa
            if e.kind == "file":
                with open(full, "rb") as f:
                    e.sha = sha256_stream(f)
            else:
                e.sha = None
            e.inode = e
            if e.kind != "dir":
                inodes[key] = e
            entries[name] = e
    return entries


def load(path):
    if os.path.isdir(path):
        return load_dir(path)
    return load_tar(path)


def groups(entries):
    """name -> sorted tuple of the names sharing its inode."""
    by_inode = {}
    for name, e in entries.items():
        by_inode.setdefault(id(e), []).append(name)
    out = {}
    for names in by_inode.values():
        t = tuple(sorted(names))
        for n in names:
            out[n] = t
    return out


def fmt(v):
    if isinstance(v, dict):
        return "{" + ", ".join("%s=%r" % (k, v[k]) for k in sorted(v)) + "}"
    return repr(v) if isinstance(v, str) else str(v)


def main(argv):
    opts = {"--no-mtime": False, "--no-dir-mtime": False}
    args = []
    for a in argv[1:]:
        if a in opts:
            opts[a] = True
        elif a.startswith("-"):
            print(__doc__, file=sys.stderr)
            return 2
        else:
            args.append(a)
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    a_path, b_path = args
    try:
        a, b = load(a_path), load(b_path)
    except (OSError, tarfile.TarError) as err:
        print("tarcmp: %s" % err, file=sys.stderr)
        return 2

    diffs = []
    for n in sorted(set(a) - set(b)):
        diffs.append("only in A: %s" % n)
    for n in sorted(set(b) - set(a)):
        diffs.append("only in B: %s" % n)

    ga, gb = groups(a), groups(b)
    seen_groups = set()
    common = sorted(set(a) & set(b))
    for n in common:
        ea, eb = a[n], b[n]
        fa, fb = ea.fields(), eb.fields()
        if os.path.basename(n).startswith(".wh."):
            keys = ("type", "size")
        else:
            keys = [k for k in fa if k != "type"]
            keys.insert(0, "type")
            if opts["--no-mtime"] or (opts["--no-dir-mtime"] and fa["type"] == "dir"):
                keys.remove("mtime")
        if fa["type"] != fb["type"]:
            keys = ("type",)
        for k in keys:
            if fa[k] != fb[k]:
                diffs.append("%s: %s %s != %s" % (n, k, fmt(fa[k]), fmt(fb[k])))
        if fa["type"] != "dir" and ga[n] != gb[n]:
            # Only the names both sides have: a name missing on one side is
            # reported above already.
            sa = tuple(x for x in ga[n] if x in b)
            sb = tuple(x for x in gb[n] if x in a)
            if sa != sb and (sa, sb) not in seen_groups:
                seen_groups.add((sa, sb))
                diffs.append("%s: hard links [%s] != [%s]" % (n, " ".join(sa), " ".join(sb)))

    for d in diffs:
        print(d)
    if diffs:
        return 1
    print("%d entries compared" % len(common))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
