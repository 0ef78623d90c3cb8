#!/usr/bin/env python3
"""Helpers of the containerd tests (t_containerd.sh): OCI image archives
made here without a network or registry, a model of the root filesystem
an image's layers make, and normalisers of ctr's outputs.

  ctd_tool.py busybox OUT.tar NAME CHAINS   the busybox image (3 layers)
  ctd_tool.py big OUT.tar NAME CHAINS MIB   busybox, then 4 layers of MIB MiB each
  ctd_tool.py model ARCHIVE                 the rootfs the image's layers make, as
                                            t_containerd.sh's in-container listing prints it
  ctd_tool.py listing TAR                   a layer tar, one line per entry, sorted
  ctd_tool.py mountshape                    stdin: `ctr snapshots mounts` output; prints
                                            its shape (type, lowerdir count, upper/work, ro/rw)
  ctd_tool.py mountextra                    stdin: the same; the options the shape leaves out
  ctd_tool.py info                          stdin: `ctr snapshots info` JSON; Kind Name
                                            Parent and labels (gc.root's value left out)

The busybox image:
  layer 1 (uncompressed): /bin/busybox and a symlink per applet, /etc/passwd,
    /etc/group, /tmp, /root, /run, /data: keep, del, opq/{a,b,sub/c}, dir/{x,y}
  layer 2 (gzip): a whiteout of /data/del, /data/opq made opaque with a new
    file, /data/own owned 1000:1000, /data/suid (4755), /data/link -> keep,
    /data/hard a hardlink of /data/hardsrc, /data/keep changed
  layer 3 (uncompressed): /data/dir/x replaced, /data/dir 0750, /data/l3, /etc/motd
The image's config: amd64/linux, rootfs.diff_ids; the index names the
manifest by io.containerd.image.name = NAME.  CHAINS gets the chain id of
each layer, base first, one a line (the keys of the committed snapshots).
Everything is deterministic: the same input gives the same digests.
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

MTIME = 1577934245  # 2020-01-02 03:04:05 UTC


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


class Layer:
    def __init__(self):
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _info(self, name, kind, mode, uid=0, gid=0):
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.uid, ti.gid = uid, gid
        ti.uname = ti.gname = ""
        ti.mtime = MTIME
        return ti

    def dir(self, name, mode=0o755, uid=0, gid=0):
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid))

    def file(self, name, data, mode=0o644, uid=0, gid=0):
        if isinstance(data, str):
            data = data.encode()
        ti = self._info(name, tarfile.REGTYPE, mode, uid, gid)
        ti.size = len(data)
        self.tar.addfile(ti, io.BytesIO(data))

    def symlink(self, name, target):
        ti = self._info(name, tarfile.SYMTYPE, 0o777)
        ti.linkname = target
        self.tar.addfile(ti)

    def hardlink(self, name, target):
        ti = self._info(name, tarfile.LNKTYPE, 0o644)
        ti.linkname = target
        self.tar.addfile(ti)

    def done(self):
        self.tar.close()
        return self.buf.getvalue()


def busybox_layers():
    l1 = Layer()
    for d, m in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("root", 0o700),
                 ("dev", 0o755), ("proc", 0o755), ("sys", 0o755), ("run", 0o755), ("data", 0o755),
                 ("data/opq", 0o755), ("data/opq/sub", 0o755), ("data/dir", 0o755)):
        l1.dir(d, m)
    with open("/bin/busybox", "rb") as f:
        l1.file("bin/busybox", f.read(), 0o755)
    applets = os.popen("/bin/busybox --list").read().split()
    for a in sorted(set(applets)):
        if a != "busybox":
            l1.symlink("bin/" + a, "busybox")
    l1.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nit:x:1000:1000:it:/data:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/:/bin/false\n")
    l1.file("etc/group", "root:x:0:\nit:x:1000:\nnogroup:x:65534:\n")
    l1.file("data/keep", "keep\n")
    l1.file("data/del", "del\n")
    l1.file("data/opq/a", "a\n")
    l1.file("data/opq/b", "b\n")
    l1.file("data/opq/sub/c", "c\n")
    l1.file("data/dir/x", "x1\n")
    l1.file("data/dir/y", "y\n")

    l2 = Layer()
    l2.dir("data")
    l2.file("data/.wh.del", "")
    l2.dir("data/opq")
    l2.file("data/opq/.wh..wh..opq", "")
    l2.file("data/opq/new", "new in opq\n")
    l2.file("data/own", "own\n", 0o640, 1000, 1000)
    l2.file("data/suid", "#!/bin/sh\necho suid\n", 0o4755)
    l2.symlink("data/link", "keep")
    l2.file("data/hardsrc", "hard\n")
    l2.hardlink("data/hard", "data/hardsrc")
    l2.file("data/keep", "keep2\n")

    l3 = Layer()
    l3.dir("data")
    l3.dir("data/dir", 0o750)
    l3.file("data/dir/x", "x3\n", 0o600)
    l3.file("data/l3", "layer three\n")
    l3.dir("etc")
    l3.file("etc/motd", "strata-it\n")
    return [(l1.done(), False), (l2.done(), True), (l3.done(), False)]


def big_layers(mib):
    """A base layer with busybox, then layers of MIB MiB of pseudo-random data each."""
    layers = []
    l1 = Layer()
    l1.dir("bin")
    with open("/bin/busybox", "rb") as f:
        l1.file("bin/busybox", f.read(), 0o755)
    l1.symlink("bin/sh", "busybox")
    l1.symlink("bin/cat", "busybox")
    l1.symlink("bin/ls", "busybox")
    layers.append((l1.done(), False))
    seed = b"strata-it"
    for i in range(4):
        l = Layer()
        l.dir("big")
        # Many files, so that applying the layer takes a while.
        chunk = hashlib.sha512(seed + bytes([i])).digest() * 2048  # 128 KiB
        n = max(1, mib * 8)
        for j in range(n):
            l.file("big/l%d-%05d" % (i, j), chunk[j % 64:] + chunk[:j % 64])
        l.file("big/top", "layer %d\n" % i)
        layers.append((l.done(), False))
    return layers


def write_archive(out, name, chains_file, layers):
    blobs = {}

    def blob(b):
        d = sha(b)
        blobs[d] = b
        return d

    diff_ids, descs = [], []
    for raw, compress in layers:
        diff_ids.append(sha(raw))
        if compress:
            data = gzip.compress(raw, mtime=0)
            mt = "application/vnd.oci.image.layer.v1.tar+gzip"
        else:
            data = raw
            mt = "application/vnd.oci.image.layer.v1.tar"
        descs.append({"mediaType": mt, "digest": blob(data), "size": len(data)})
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "created": "2020-01-02T03:04:05Z",
        "config": {"Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["/bin/sh"],
                   "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2020-01-02T03:04:05Z", "created_by": "ctd_image.py layer %d" % i}
                    for i in range(len(layers))],
    }, sort_keys=True).encode()
    cdesc = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(config),
             "size": len(config)}
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": cdesc, "layers": descs}, sort_keys=True).encode()
    mdesc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob(manifest),
             "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"},
             "annotations": {"io.containerd.image.name": name,
                             "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}}
    index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                        "manifests": [mdesc]}, sort_keys=True).encode()

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as t:
        def add(n, b):
            ti = tarfile.TarInfo(n)
            ti.size, ti.mode, ti.mtime = len(b), 0o644, MTIME
            t.addfile(ti, io.BytesIO(b))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", index)
        for d, b in sorted(blobs.items()):
            add("blobs/sha256/" + d.split(":")[1], b)

    chain, chains = None, []
    for d in diff_ids:
        chain = d if chain is None else sha((chain + " " + d).encode())
        chains.append(chain)
    with open(chains_file, "w") as f:
        f.write("\n".join(chains) + "\n")


def listing(path):
    """name type mode uid:gid size link sha256[:16], sorted; mtimes left out.
    Hardlinks show their target; whiteouts and opaque markers show as files."""
    rows = []
    with tarfile.open(path) as t:
        for m in t:
            name = m.name
            while name.startswith("./"):
                name = name[2:]
            name = name.rstrip("/") or "."
            h = "-"
            if m.isreg():
                h = hashlib.sha256(t.extractfile(m).read()).hexdigest()[:16]
            size = m.size if m.isreg() else 0
            link = m.linkname or "-"
            if m.islnk():
                link = link.lstrip("./") or link
            rows.append("%s %s %o %d:%d %d %s %s" % (name, m.type.decode(), m.mode & 0o7777,
                                                     m.uid, m.gid, size, link, h))
    print("\n".join(sorted(rows)))


class Node:
    def __init__(self, kind, mode, uid, gid, data=b"", link=""):
        self.kind, self.mode, self.uid, self.gid = kind, mode, uid, gid
        self.data, self.link = data, link


def model(archive):
    """Apply the image's layers in order as OCI says (whiteouts, opaque dirs,
    hardlinks) and print the tree as the in-container listing does:
      /p d MODE UID:GID | /p l MODE UID:GID -> TARGET | /p f MODE UID:GID SIZE NLINK MD5[:12]
    The runtime's mount points (/proc /sys /dev /run) are left out."""
    with tarfile.open(archive) as a:
        def blob(d):
            return a.extractfile("blobs/sha256/" + d.split(":")[1]).read()
        index = json.loads(a.extractfile("index.json").read())
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        layers = []
        for l in manifest["layers"]:
            b = blob(l["digest"])
            if l["mediaType"].endswith("+gzip"):
                b = gzip.decompress(b)
            layers.append(b)
    tree = {"/": Node("d", 0o755, 0, 0)}

    def drop(path, keep=()):
        for p in [p for p in tree if p.startswith(path + "/") or p == path]:
            if p not in keep:
                del tree[p]

    for raw in layers:
        added = set()
        with tarfile.open(fileobj=io.BytesIO(raw)) as t:
            for m in t:
                name = "/" + m.name.strip("/").lstrip("./")
                parent, base = name.rsplit("/", 1)
                parent = parent or "/"
                if base == ".wh..wh..opq":
                    for p in [p for p in tree if p.startswith(parent.rstrip("/") + "/")]:
                        if p not in added:
                            del tree[p]
                    continue
                if base.startswith(".wh."):
                    drop(parent.rstrip("/") + "/" + base[4:])
                    continue
                old = tree.get(name)
                if m.isdir():
                    if old is not None and old.kind == "d":
                        old.mode, old.uid, old.gid = m.mode & 0o7777, m.uid, m.gid
                    else:
                        drop(name)
                        tree[name] = Node("d", m.mode & 0o7777, m.uid, m.gid)
                else:
                    drop(name)
                    if m.issym():
                        tree[name] = Node("l", 0o777, m.uid, m.gid, link=m.linkname)
                    elif m.islnk():
                        tree[name] = tree["/" + m.linkname.strip("/").lstrip("./")]
                    elif m.isreg():
                        tree[name] = Node("f", m.mode & 0o7777, m.uid, m.gid,
                                          data=t.extractfile(m).read())
                    else:
                        raise SystemExit("model: unsupported entry " + m.name)
                added.add(name)
    nlink = {}
    for n in tree.values():
        nlink[id(n)] = nlink.get(id(n), 0) + 1
    rows = []
    for p, n in tree.items():
        if p in ("/proc", "/sys", "/dev", "/run"):
            continue
        head = "%s %s %o %d:%d" % (p, n.kind, n.mode, n.uid, n.gid)
        if n.kind == "d":
            rows.append(head)
        elif n.kind == "l":
            rows.append("%s -> %s" % (head, n.link))
        else:
            rows.append("%s %d %d %s" % (head, len(n.data), nlink[id(n)],
                                         hashlib.md5(n.data).hexdigest()[:12]))
    print("\n".join(sorted(rows)))


def parse_mounts(text):
    """`ctr snapshots mounts` prints `mount -t TYPE SOURCE TARGET -o OPT,OPT...` a mount."""
    out = []
    for line in text.splitlines():
        w = line.split()
        if len(w) < 5 or w[0] != "mount" or w[1] != "-t":
            out.append((None, [line]))
            continue
        opts = w[w.index("-o") + 1].split(",") if "-o" in w else []
        out.append((w[2], opts))
    return out


SHAPE_FLAGS = {"ro", "rw", "bind", "rbind"}


def mountshape(text, extra):
    for typ, opts in parse_mounts(text):
        if typ is None:
            print("unparsed: " + opts[0])
            continue
        shape, rest = [], []
        for o in opts:
            k = o.split("=", 1)[0]
            if k == "lowerdir":
                shape.append("lowerdir*%d" % len(o.split("=", 1)[1].split(":")))
            elif k in ("upperdir", "workdir") or o in SHAPE_FLAGS:
                shape.append(k)
            else:
                rest.append(o)
        if extra:
            print(" ".join([typ] + rest))
        else:
            print(" ".join([typ] + sorted(shape)))


def info(text):
    j = json.loads(text)
    labels = j.get("Labels") or {}
    ls = ["%s=%s" % (k, "*" if k == "containerd.io/gc.root" else v) for k, v in sorted(labels.items())]
    print("Kind=%s Name=%s Parent=%s Labels=%s" % (j.get("Kind"), j.get("Name"), j.get("Parent", ""),
                                                   ",".join(ls)))


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "busybox" and len(sys.argv) == 5:
        write_archive(sys.argv[2], sys.argv[3], sys.argv[4], busybox_layers())
    elif cmd == "big" and len(sys.argv) == 6:
        write_archive(sys.argv[2], sys.argv[3], sys.argv[4], big_layers(int(sys.argv[5])))
    elif cmd == "listing" and len(sys.argv) == 3:
        listing(sys.argv[2])
    elif cmd == "model" and len(sys.argv) == 3:
        model(sys.argv[2])
    elif cmd in ("mountshape", "mountextra") and len(sys.argv) == 2:
        mountshape(sys.stdin.read(), cmd == "mountextra")
    elif cmd == "info" and len(sys.argv) == 2:
        info(sys.stdin.read())
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
