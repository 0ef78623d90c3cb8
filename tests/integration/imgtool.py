#!/usr/bin/env python3
"""Image archives for t_thin_from.sh, made from a `docker save` archive.

    imgtool.py convert SAVE.tar OUT
        OUT/layout       an OCI image layout (gzip layer blobs; the second
                         layer zstd when the zstd command exists), its
                         index naming the image by its RepoTag
        OUT/oci.tar      the same layout as an OCI archive (a tar of it)
        OUT/docker25.tar Docker 25's docker save layout: manifest.json
                         pointing into blobs/sha256/, plus index.json
        OUT/save.tar.gz  the docker save archive, gzip-compressed
    imgtool.py hostile SAVE.tar OUT
        OUT/<case>.tar (and OUT/<case>/ for layouts): broken or hostile
        images, one per case; prints "<case> <file>" per line.
    imgtool.py duplayer SAVE.tar OUT.tar
        the image with its second layer listed again on top (tagged
        tf/dup:1): a thin image lists a digest once
    imgtool.py layers SAVE.tar
        the diff_ids of the image, base first, one hex digest per line
    imgtool.py tars SAVE.tar OUT
        OUT/<n>.tar: each layer tar, base first (n from 1)
    imgtool.py layercmp LAYER.tar DIR
        compares a layer tar with a published layer dir in overlay's form:
        .wh.NAME must be a character device 0/0 at NAME, DIR/.wh..wh..opq
        an opaque DIR (trusted.overlay.opaque=y); every other entry the
        same type, mode, owner, size, sha256, symlink target, mtime (not
        of dirs) and hard link group.  Prints the differences and exits 1,
        or prints "N entries compared".

Everything is written deterministically (mtime 0, sorted names) with
Python's standard library only.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile


def sha(b):
    return hashlib.sha256(b).hexdigest()


def read_save(path):
    """The files of a docker save archive (symlinks resolved), its manifest."""
    files = {}
    with tarfile.open(path) as t:
        members = {m.name.lstrip("./") if m.name != "." else "": m for m in t.getmembers()}
        for name, m in members.items():
            target = m
            hops = 0
            while target.issym() and hops < 8:
                base = os.path.dirname(name)
                target = members[os.path.normpath(os.path.join(base, target.linkname))]
                hops += 1
            if target.isfile():
                files[name] = t.extractfile(target).read()
    return files, json.loads(files["manifest.json"])


def write_tar(path, entries):
    """entries: (name, bytes) or (name, None) for a directory; in this order."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = 0
            ti.uid = ti.gid = 0
            if data is None:
                ti.type = tarfile.DIRTYPE
                ti.mode = 0o755
                t.addfile(ti)
            else:
                ti.mode = 0o644
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))


def compress(data, how):
    if how == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout
    return data


MT = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "none": "application/vnd.oci.image.layer.v1.tar",
}


def oci_blobs(files, manifest, compressions):
    """(blobs {hex: bytes}, index dict, manifest digest) of an OCI layout."""
    m = manifest[0]
    config = files[m["Config"]]
    blobs = {sha(config): config}
    layers = []
    for i, l in enumerate(m["Layers"]):
        how = compressions[i % len(compressions)]
        b = compress(files[l], how)
        blobs[sha(b)] = b
        layers.append({"mediaType": MT[how], "digest": "sha256:" + sha(b), "size": len(b)})
    man = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + sha(config), "size": len(config)},
        "layers": layers,
    }
    mb = json.dumps(man, sort_keys=True).encode()
    blobs[sha(mb)] = mb
    desc = {"mediaType": man["mediaType"], "digest": "sha256:" + sha(mb), "size": len(mb),
            "annotations": {"org.opencontainers.image.ref.name": (m.get("RepoTags") or ["x:latest"])[0]}}
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [desc]}
    return blobs, index, sha(mb)


def layout_entries(blobs, index, extra=()):
    entries = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
               ("index.json", json.dumps(index, sort_keys=True).encode()),
               ("blobs", None), ("blobs/sha256", None)]
    entries += [("blobs/sha256/" + h, blobs[h]) for h in sorted(blobs)]
    return entries + list(extra)


def write_dir(path, entries):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    for name, data in entries:
        p = os.path.join(path, name)
        if data is None:
            os.makedirs(p, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)


def convert(save, out):
    files, manifest = read_save(save)
    os.makedirs(out, exist_ok=True)
    comp = ["gzip", "zstd"] if shutil.which("zstd") else ["gzip"]
    blobs, index, _ = oci_blobs(files, manifest, comp)
    entries = layout_entries(blobs, index)
    write_dir(os.path.join(out, "layout"), entries)
    write_tar(os.path.join(out, "oci.tar"), entries)
    # Docker 25: uncompressed layer blobs, manifest.json into blobs/.
    blobs25, index25, _ = oci_blobs(files, manifest, ["none"])
    m = manifest[0]
    config = files[m["Config"]]
    m25 = [{"Config": "blobs/sha256/" + sha(config), "RepoTags": m.get("RepoTags"),
            "Layers": ["blobs/sha256/" + sha(files[l]) for l in m["Layers"]]}]
    write_tar(os.path.join(out, "docker25.tar"),
              layout_entries(blobs25, index25, [("manifest.json", json.dumps(m25).encode())]))
    with open(save, "rb") as f, open(os.path.join(out, "save.tar.gz"), "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as g:
            shutil.copyfileobj(f, g)


def hostile(save, out):
    files, manifest = read_save(save)
    os.makedirs(out, exist_ok=True)
    m = manifest[0]
    names = sorted(files)
    cases = []

    def save_with(case, man=None, change=None, extra=()):
        entries = []
        for n in names:
            data = files[n]
            if n == "manifest.json" and man is not None:
                data = json.dumps(man).encode()
            if change and n in change:
                data = change[n]
            entries.append((n, data))
        path = os.path.join(out, case + ".tar")
        write_tar(path, entries + list(extra))
        cases.append((case, path))

    # A layer whose content is not what the config's diff_id says.
    l2 = m["Layers"][1]
    save_with("bad-diffid", change={l2: files[l2][:-1024] + b"\0" * 512 + files[l2][-1024:]})
    # manifest.json naming a layer that is not in the archive.
    save_with("missing-blob", man=[dict(m, Layers=m["Layers"][:2] + ["0" * 64 + "/layer.tar"] + m["Layers"][3:])])
    # Paths that escape, in manifest.json.
    save_with("dotdot", man=[dict(m, Layers=["../" + m["Layers"][0]] + m["Layers"][1:])])
    save_with("absolute", man=[dict(m, Config="/etc/passwd")])
    # Two images, no --tag.
    save_with("two-images", man=[m, dict(m, RepoTags=["tf/other:v2"])])
    # The same entry twice.
    save_with("duplicate-entry", extra=[("manifest.json", files["manifest.json"])])
    # An entry name with "..".
    save_with("dotdot-entry", extra=[("../evil", b"x")])
    # A symlink out of the archive standing for a layer.
    sym = [("manifest.json", json.dumps([dict(m, Layers=["evil/layer.tar"] + m["Layers"][1:])]).encode())]
    path = os.path.join(out, "symlink-out.tar")
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        for n in names:
            if n == "manifest.json":
                continue
            ti = tarfile.TarInfo(n)
            ti.size = len(files[n])
            t.addfile(ti, io.BytesIO(files[n]))
        ti = tarfile.TarInfo("evil/layer.tar")
        ti.type = tarfile.SYMTYPE
        ti.linkname = "../../etc/passwd"
        t.addfile(ti)
        ti = tarfile.TarInfo("manifest.json")
        ti.size = len(sym[0][1])
        t.addfile(ti, io.BytesIO(sym[0][1]))
    cases.append(("symlink-out", path))
    # More layers than overlay takes: 501 of them, all the same empty tar.
    empty = b"\0" * 1024
    cfg = json.loads(files[m["Config"]])
    cfg["rootfs"]["diff_ids"] = ["sha256:" + sha(empty)] * 501
    cb = json.dumps(cfg).encode()
    path = os.path.join(out, "too-many-layers.tar")
    write_tar(path, [("empty/layer.tar", empty), (sha(cb) + ".json", cb),
                     ("manifest.json", json.dumps([{"Config": sha(cb) + ".json", "RepoTags": ["tf/many:1"],
                                                    "Layers": ["empty/layer.tar"] * 501}]).encode())])
    cases.append(("too-many-layers", path))
    # A config whose name (its digest) does not match its content.
    cfgname = m["Config"]
    save_with("config-digest", change={cfgname: files[cfgname] + b" "})
    # Truncated: in the middle, and at an entry boundary (no end blocks).
    whole = open(save, "rb").read()
    for case, size in (("truncated", len(whole) // 2), ("truncated-boundary", None)):
        data = whole
        if size is None:
            with tarfile.open(save) as t:
                last = t.getmembers()[-1]
                size = last.offset_data + ((last.size + 511) // 512) * 512
        path = os.path.join(out, case + ".tar")
        with open(path, "wb") as f:
            f.write(data[:size])
        cases.append((case, path))
    # Not an archive at all.
    path = os.path.join(out, "not-an-archive.bin")
    with open(path, "wb") as f:
        f.write(hashlib.sha256(b"x").digest() * 200)
    cases.append(("not-an-archive", path))
    # OCI: a layer blob whose content is not its name's digest (same
    # size, one byte changed, uncompressed so that it still reads), a blob
    # missing, an absurd size, a digest algorithm other than sha256.
    blobs, index, mdigest = oci_blobs(files, manifest, ["none"])
    man = json.loads(blobs[mdigest])
    victim = man["layers"][0]["digest"].split(":")[1]
    tampered = dict(blobs)
    data = bytearray(blobs[victim])
    data[len(data) // 2] ^= 0xFF
    tampered[victim] = bytes(data)
    path = os.path.join(out, "oci-blob-digest")
    write_dir(path, layout_entries({h: b for h, b in tampered.items() if h != victim}, index,
                                   [("blobs/sha256/" + victim, tampered[victim])]))
    cases.append(("oci-blob-digest", path))
    path = os.path.join(out, "oci-missing-blob")
    write_dir(path, layout_entries({h: b for h, b in blobs.items() if h != victim}, index))
    cases.append(("oci-missing-blob", path))
    blobs, index, mdigest = oci_blobs(files, manifest, ["gzip"])
    man2 = json.loads(blobs[mdigest])
    man2["layers"][0]["size"] = 1 << 62
    mb2 = json.dumps(man2, sort_keys=True).encode()
    b2 = dict(blobs)
    b2[sha(mb2)] = mb2
    index2 = json.loads(json.dumps(index))
    index2["manifests"][0].update(digest="sha256:" + sha(mb2), size=len(mb2))
    path = os.path.join(out, "oci-absurd-size.tar")
    write_tar(path, layout_entries(b2, index2))
    cases.append(("oci-absurd-size", path))
    index3 = json.loads(json.dumps(index))
    index3["manifests"][0]["digest"] = "sha512:" + "0" * 128
    path = os.path.join(out, "oci-sha512.tar")
    write_tar(path, layout_entries(blobs, index3))
    cases.append(("oci-sha512", path))
    for case, path in cases:
        print(case, path)


def duplayer(save, out):
    files, manifest = read_save(save)
    m = manifest[0]
    cfg = json.loads(files[m["Config"]])
    cfg["rootfs"]["diff_ids"].append(cfg["rootfs"]["diff_ids"][1])
    cb = json.dumps(cfg).encode()
    entries = [(n, files[n]) for n in sorted(files) if n not in ("manifest.json", m["Config"], "repositories")]
    man = [{"Config": sha(cb) + ".json", "RepoTags": ["tf/dup:1"], "Layers": m["Layers"] + [m["Layers"][1]]}]
    write_tar(out, entries + [(sha(cb) + ".json", cb), ("manifest.json", json.dumps(man).encode())])


def layers(save):
    files, manifest = read_save(save)
    for d in json.loads(files[manifest[0]["Config"]])["rootfs"]["diff_ids"]:
        print(d.split(":", 1)[1])


def tars(save, out):
    files, manifest = read_save(save)
    os.makedirs(out, exist_ok=True)
    for i, l in enumerate(manifest[0]["Layers"]):
        with open(os.path.join(out, "%d.tar" % (i + 1)), "wb") as f:
            f.write(files[l])


def layercmp(tar, root):
    want = {}
    groups = {}
    opaque = set()
    with tarfile.open(tar) as t:
        for m in t:
            name = m.name
            while name.startswith("./"):
                name = name[2:]
            name = name.rstrip("/")
            if name in ("", "."):
                continue
            d, b = os.path.split(name)
            if b == ".wh..wh..opq":
                opaque.add(d)
                continue
            if b.startswith(".wh."):
                want[os.path.join(d, b[4:])] = ("whiteout",)
                continue
            if m.islnk():
                target = m.linkname.lstrip("./") if m.linkname.startswith("./") else m.linkname
                groups.setdefault(target, {target}).add(name)
                want[name] = want[target]
                continue
            kind = "dir" if m.isdir() else "file" if m.isfile() else "symlink" if m.issym() else "other"
            data = hashlib.sha256(t.extractfile(m).read()).hexdigest() if m.isfile() else None
            want[name] = (kind, m.mode & 0o7777, m.uid, m.gid, m.size if m.isfile() else None,
                          m.linkname if m.issym() else None, None if m.isdir() else int(m.mtime), data)
    got = {}
    inodes = {}
    for dp, dns, fns in os.walk(root):
        for n in dns + fns:
            p = os.path.join(dp, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                got[rel] = ("whiteout",)
                continue
            kind = ("dir" if stat.S_ISDIR(st.st_mode) else "file" if stat.S_ISREG(st.st_mode)
                    else "symlink" if stat.S_ISLNK(st.st_mode) else "other")
            data = None
            if kind == "file":
                with open(p, "rb") as f:
                    data = hashlib.sha256(f.read()).hexdigest()
                inodes.setdefault(st.st_ino, set()).add(rel)
            got[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        st.st_size if kind == "file" else None,
                        os.readlink(p) if kind == "symlink" else None,
                        None if kind == "dir" else int(st.st_mtime), data)
            if kind == "dir":
                try:
                    if os.getxattr(p, "trusted.overlay.opaque", follow_symlinks=False) == b"y":
                        got[rel + "/.wh..wh..opq"] = ("opaque",)
                except OSError:
                    pass
    for d in opaque:
        want[d + "/.wh..wh..opq"] = ("opaque",)
    bad = []
    for name in sorted(set(want) | set(got)):
        if want.get(name) != got.get(name):
            bad.append("%s: tar %s, dir %s" % (name, want.get(name), got.get(name)))
    for members in groups.values():
        if not any(members <= s for s in inodes.values()):
            bad.append("hard link group %s: not one inode in the dir" % sorted(members))
    if bad:
        print("\n".join(bad))
        sys.exit(1)
    print("%d entries compared" % len(want))


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    cmd = sys.argv[1]
    if cmd == "convert":
        convert(sys.argv[2], sys.argv[3])
    elif cmd == "hostile":
        hostile(sys.argv[2], sys.argv[3])
    elif cmd == "duplayer":
        duplayer(sys.argv[2], sys.argv[3])
    elif cmd == "layers":
        layers(sys.argv[2])
    elif cmd == "tars":
        tars(sys.argv[2], sys.argv[3])
    elif cmd == "layercmp":
        layercmp(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
