#!/usr/bin/env python3
""":"
# Run by bash (meson's integration_tests runs each script with bash): hand
# over to Python.  Python reads these lines as a string and goes on below.
exec python3 "$0" "$@"
":"""
"""`strata snapshotter` at the protocol level: containerd's snapshots API
(containerd.services.snapshots.v1.Snapshots) over gRPC on a unix socket,
spoken directly with python3-grpcio and raw protobuf bytes (snapproto.py's
encoder/decoder and client; there is no generated code).  Prints TAP.

  * Prepare/View/Mounts/Commit/Remove/Stat/Update/List/Usage/Cleanup: a
    3-deep chain mounted through the mounts the daemon returns (bind for a
    base layer and a view of one, overlay otherwise), content seen through
    each, labels, Update's field paths, timestamps, Usage measured and
    recorded at Commit.
  * List: no filter, the filters containerd's GC and metadata send, a bad
    one, 500 snapshots in batched messages, clients that cancel mid-stream.
  * Errors, each a gRPC code and a message naming the key: unknown keys,
    parents that are not committed, commits of views, duplicates, removes of
    parents, empty keys, malformed and oversized requests, unknown methods;
    after each, `strata check` is clean and the store's layers are exactly
    the rows (each snapshot one ctd-* layer).
  * 64 concurrent Prepare+Commit+Remove; kill -9 under 20 busy threads,
    restart, nothing lost that was acknowledged, nothing left half-made.
  * One store, one front end (serve vs snapshotter); a second snapshotter
    started on a store in use; the socket: stale (replaced), live or a
    regular file (refused, left alone); SIGTERM.

    STRATA_BIN=build/strata python3 tests/integration/t_snapshotter_grpc.py
    STRATA_IT_LOGDIR=DIR   keep a copy of each daemon's stderr in DIR

Runs as root (it mounts what the daemon describes).  Daemons are stopped by
PID, anything mounted under the scratch dir is unmounted (deepest first)
and the dir removed, whatever happens.
"""

import os
import sys

# First: where this python3 has no grpc module, snapproto runs the script again under /usr/bin/python3.
from snapproto import ACTIVE, CALL_TIMEOUT, COMMITTED, SVC, VIEW, Client, MiB, fields

import errno
import http.client
import json
import random
import re
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import tempfile
import threading
import time

import grpc
from tap import Fail, case, emit, expect, expect_eq, explain, run_script

STRATA = os.environ.get("STRATA_BIN", "")
GLOBAL_TIMEOUT = 560  # the whole script (meson gives it 600)
C = grpc.StatusCode

# ---------------------------------------------------------------- TAP, client

explain(grpc.RpcError, lambda e: f"unexpected gRPC error: {e.code()}: {e.details()}")


def expect_err(fn, codes, names=(), what="call"):
    """fn() must fail with one of codes (a StatusCode or a tuple), with a
    message containing each of names.  Returns the error."""
    if isinstance(codes, C):
        codes = (codes,)
    try:
        r = fn()
    except grpc.RpcError as e:
        code, det = e.code(), e.details() or ""
        expect(code in codes, f"{what}: status {code}, expected {' or '.join(str(c) for c in codes)}",
               f"message: {det!r}")
        for n in names:
            expect(n in det, f"{what}: the message does not name {n!r}", f"message: {det!r}")
        return e
    raise Fail(f"{what} succeeded, expected {' or '.join(str(c) for c in codes)}", f"result: {r!r}")


# ---------------------------------------------------------------- processes

PROCS = []


class Proc:
    """A daemon this script started: stopped by its PID at the end."""

    def __init__(self, name, argv):
        self.name = name
        self.argv = argv
        self.log_path = os.path.join(TMP, f"{name}.{len(PROCS)}.log")
        with open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        PROCS.append(self)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=15):
        return [f"{self.name} stderr (tail):"] + ["  " + x for x in self.log().splitlines()[-n:]]

    def signal_and_wait(self, sig, timeout):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill9(self):
        if self.proc.poll() is None:
            self.proc.kill()
        return self.proc.wait(timeout=30)

    def stop(self):
        if self.proc.poll() is None:
            if self.signal_and_wait(signal.SIGTERM, 15) is None:
                self.proc.kill()
                self.proc.wait(timeout=15)


def file_identity(path):
    """What tells a file from the one made again at its path (an inode
    number alone may be reused at once)."""
    st = os.lstat(path)
    return (st.st_ino, st.st_ctime_ns, st.st_mode)


def socket_accepts(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Snapshotter(Proc):
    def __init__(self, store, sock, opts=(), name="snap"):
        self.store, self.sock = store, sock
        super().__init__(name, [STRATA, "--root", store, *opts, "snapshotter", "--socket", sock])

    def wait_ready(self, timeout=20.0, after=0):
        """Until the log says it serves on the socket (the log line counted
        from byte `after`) and the socket accepts a connection."""
        want = f"strata snapshotter: serving on {self.sock}"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise Fail(f"{self.name} exited with {self.proc.returncode} before serving", *self.log_tail())
            if want in self.log()[after:] and socket_accepts(self.sock):
                return
            time.sleep(0.05)
        raise Fail(f"{self.name}: no '{want}' and an accepting socket within {timeout}s", *self.log_tail())


def run(argv, timeout=120, **kw):
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, **kw)


# ---------------------------------------------------------------- mounts


def _unescape(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mount_points():
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            out.append(_unescape(line.split()[4]))
    return out


def mounts_under(prefix):
    ms = [m for m in mount_points() if m == prefix or m.startswith(prefix + "/")]
    return sorted(set(ms), key=len, reverse=True)


_MNT_N = 0


class mounted:
    """Mounts m (what a Prepare/View/Mounts returned) as containerd would,
    with mount(8): `mount -t TYPE -o OPTIONS SOURCE DIR`; unmounts on exit."""

    def __init__(self, m):
        global _MNT_N
        _MNT_N += 1
        self.m = m
        self.dir = os.path.join(TMP, "mnt", str(_MNT_N))

    def __enter__(self):
        os.makedirs(self.dir, exist_ok=True)
        opts, cwd = self.m.options, None
        if self.m.type == "overlay" and len(",".join(opts)) >= 4096 - 512:
            # containerd's compactLowerdirOption: mount(2) takes one page of
            # data, so the lowers go relative to their common parent dir,
            # the mount made from there.
            lo = lowers(self.m)
            cwd = os.path.commonpath(lo) if len(lo) > 1 else os.path.dirname(lo[0])
            opts = [o for o in opts if not o.startswith("lowerdir=")] + [
                "lowerdir=" + ":".join(os.path.relpath(x, cwd) for x in lo)]
        p = run(["mount", "-t", self.m.type, "-o", ",".join(opts), self.m.source, self.dir], timeout=30, cwd=cwd)
        if p.returncode != 0:
            raise Fail(f"mount {self.m} failed ({p.returncode})", p.stderr.decode(errors="replace"))
        return self.dir

    def __exit__(self, *exc):
        p = run(["umount", self.dir], timeout=30)
        if p.returncode != 0:
            run(["umount", "-l", self.dir], timeout=30)
            if exc[0] is None:
                raise Fail(f"umount {self.dir} failed", p.stderr.decode(errors="replace"))
        return False


def write_file(path, data):
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def expect_readonly(d):
    try:
        write_file(os.path.join(d, "should-not-exist"), b"x")
    except OSError as e:
        expect(e.errno == errno.EROFS, f"writing into the view failed with {e!r}, expected EROFS")
        return
    raise Fail(f"a file could be written into the read-only mount at {d}")


def files_in(d):
    out = {}
    for n in sorted(os.listdir(d)):
        p = os.path.join(d, n)
        if os.path.isfile(p) and os.path.getsize(p) < 4096:
            out[n] = read_file(p).decode()
        else:
            out[n] = "<dir>" if os.path.isdir(p) else f"<{os.path.getsize(p)} bytes>"
    return out


# ---------------------------------------------------------------- the store

ID_RX = re.compile(r"^ctd-[0-9a-f]{24}$")


def db_rows(store):
    """{key: (id, parent, kind)} read from the snapshotter's SQLite database."""
    con = sqlite3.connect(f"file:{store}/containerd/snapshots.db?mode=ro", uri=True, timeout=15)
    try:
        return {k: (i, p, kind) for k, i, p, kind in con.execute("SELECT key, id, parent, kind FROM snapshots")}
    finally:
        con.close()


def layers(store):
    return sorted(os.listdir(os.path.join(store, "layers")))


def strata_check(store):
    p = run([STRATA, "--root", store, "check"], timeout=300)
    if p.returncode != 0:
        return [f"strata check exited {p.returncode}:"] + [
            "  " + x for x in (p.stdout + p.stderr).decode(errors="replace").splitlines()[:30]]
    return []


def store_problems(cli, store, check=True):
    """What is wrong between List, the rows and the layers: every snapshot
    List returns is one row and one ctd-* layer, and there is no other
    layer; `strata check` exits 0."""
    problems = []
    names = sorted(i.name for i in cli.list())
    rows = db_rows(store)
    ls = layers(store)
    if names != sorted(rows):
        problems.append(f"List and the rows differ: only listed {sorted(set(names) - set(rows))[:10]}, "
                        f"only rows {sorted(set(rows) - set(names))[:10]}")
    ids = sorted(r[0] for r in rows.values())
    if len(ids) != len(set(ids)):
        problems.append("two rows name one layer")
    if ids != ls:
        problems.append(f"rows without a layer: {sorted(set(ids) - set(ls))[:10]}; "
                        f"layers without a row: {sorted(set(ls) - set(ids))[:10]}")
    if len(ls) != len(names):
        problems.append(f"{len(ls)} layers for {len(names)} snapshots")
    bad = [x for x in ls if not ID_RX.match(x)]
    if bad:
        problems.append(f"layers not named ctd-<24 hex>: {bad[:10]}")
    if check:
        problems += strata_check(store)
    return problems


def expect_clean(cli, store, check=True):
    p = store_problems(cli, store, check)
    expect(not p, "the store is not clean:", *p)


def layer_id_of(m):
    """The layer id in a Prepare's mount: a bind's source or the upperdir."""
    path = m.source if m.type == "bind" else m.opt("upperdir")
    return os.path.basename(path or "")


def lowers(m):
    lo = m.opt("lowerdir")
    return lo.split(":") if lo else []


# ================================================================ the tests

TMP = os.path.realpath(tempfile.mkdtemp(prefix="strata-it.", dir=os.environ.get("STRATA_TEST_DIR", "/var/tmp")))
STORE = os.path.join(TMP, "root")
STORE2 = os.path.join(TMP, "root2")
SOCK = os.path.join(TMP, "snap.sock")


def main():
    d1 = Snapshotter(STORE, SOCK, name="d1")
    state = {"d": d1, "cli": None}
    ids = {}  # key -> layer id, from the mounts returned

    def cli():
        return state["cli"]

    def restart(name, expect_stale=False):
        """A new daemon on STORE and SOCK, and a new client."""
        if state["cli"]:
            state["cli"].close()
        d = Snapshotter(STORE, SOCK, name=name)
        state["d"] = d
        d.wait_ready()
        state["cli"] = Client(SOCK)
        return d

    def clean():
        expect_clean(cli(), STORE)

    # ---------------------------------------------------- start
    @case("the snapshotter starts and logs 'strata snapshotter: serving on SOCK'")
    def _():
        d1.wait_ready()
        state["cli"] = Client(SOCK)

    if not d1.alive():
        return

    @case("its socket is a unix socket of mode 0600; the store has containerd/snapshots.db")
    def _():
        st = os.stat(SOCK)
        expect(stat.S_ISSOCK(st.st_mode), f"not a socket: {oct(st.st_mode)}")
        expect_eq(oct(stat.S_IMODE(st.st_mode)), oct(0o600), "mode")
        expect(os.path.isfile(os.path.join(STORE, "containerd", "snapshots.db")), "no snapshots.db")

    @case("an empty store: List returns nothing, Cleanup succeeds, strata check clean")
    def _():
        expect_eq(cli().list(), [], "List")
        cli().cleanup()
        clean()

    # ---------------------------------------------------- a chain, through its mounts
    t = {}

    @case("Prepare a base active snapshot -> one bind mount, rw, of STORE/diff/ctd-<24 hex>")
    def _():
        t["p0"] = time.time_ns()
        ms = cli().prepare("a1", "", {"l1": "v1", "containerd.io/gc.root": "2024-01-01T00:00:00Z"})
        t["p1"] = time.time_ns()
        expect_eq(len(ms), 1, "number of mounts")
        m = ms[0]
        expect_eq(m.type, "bind", "type")
        ids["a1"] = os.path.basename(m.source)
        expect(ID_RX.match(ids["a1"]), f"layer id {ids['a1']!r} is not ctd-<24 hex>")
        expect_eq(m.source, f"{STORE}/diff/{ids['a1']}", "source")
        expect("rw" in m.options and "rbind" in m.options and "ro" not in m.options, f"options {m.options}")
        expect(os.path.exists(os.path.join(STORE, "layers", ids["a1"])), "no STORE/layers entry for it")

    @case("Stat of the active: name, no parent, kind active, labels, created == updated, both now")
    def _():
        i = cli().stat("a1")
        expect_eq((i.name, i.parent, i.kind), ("a1", "", ACTIVE), "name, parent, kind")
        expect_eq(i.labels, {"l1": "v1", "containerd.io/gc.root": "2024-01-01T00:00:00Z"}, "labels")
        expect(t["p0"] - 2e9 <= i.created <= t["p1"] + 2e9, f"created {i.created} not within the call "
               f"[{t['p0']}, {t['p1']}]")
        expect_eq(i.updated, i.created, "updated")

    @case("Mounts of the active returns the same mount as Prepare did")
    def _():
        ms = cli().mounts("a1")
        expect_eq(len(ms), 1, "number of mounts")
        expect_eq(layer_id_of(ms[0]), ids["a1"], "layer")
        expect_eq(ms[0].type, "bind", "type")

    @case("the base's bind mount is writable: files written through it land in its diff dir")
    def _():
        (m,) = cli().mounts("a1")
        with mounted(m) as d:
            write_file(os.path.join(d, "f1"), b"1")
            write_file(os.path.join(d, "top"), b"1")
            os.mkdir(os.path.join(d, "dir"))
            write_file(os.path.join(d, "dir", "gone"), b"soon deleted")
        expect_eq(read_file(f"{STORE}/diff/{ids['a1']}/f1"), b"1", "diff/f1")

    @case("Usage of the base active grows by >= 1 MiB and exactly 1 inode after a 1 MiB file is written")
    def _():
        s0, i0 = cli().usage("a1")
        (m,) = cli().mounts("a1")
        with mounted(m) as d:
            write_file(os.path.join(d, "big1"), os.urandom(MiB))
        s1, i1 = cli().usage("a1")
        expect(s1 - s0 >= MiB, f"size {s0} -> {s1}: grew by {s1 - s0}, expected >= {MiB}")
        expect_eq(i1 - i0, 1, f"inodes {i0} -> {i1}: growth")
        t["u_a1"] = (s1, i1)

    @case("Commit a1 as c1 (labels replaced): Stat c1 committed, no parent, its labels; a1 is gone")
    def _():
        t["c0"] = time.time_ns()
        cli().commit("c1", "a1", {"containerd.io/snapshot.ref": "sha256:1111"})
        i = cli().stat("c1")
        expect_eq((i.name, i.parent, i.kind), ("c1", "", COMMITTED), "name, parent, kind")
        expect_eq(i.labels, {"containerd.io/snapshot.ref": "sha256:1111"}, "labels")
        expect(i.created <= i.updated and i.updated >= t["c0"] - 2e9, f"created {i.created} updated {i.updated}")
        expect_err(lambda: cli().stat("a1"), C.NOT_FOUND, ["a1"], "Stat a1")
        ids["c1"] = ids.pop("a1")
        expect(os.path.exists(os.path.join(STORE, "layers", ids["c1"])), "c1's layer is gone")

    @case("Usage of the committed c1 is what was measured at Commit")
    def _():
        expect_eq(cli().usage("c1"), t["u_a1"], "usage (size, inodes)")

    @case("Prepare on a committed parent -> overlay: upperdir/workdir STORE/{diff,work}/<id>, "
          "lowerdir the parent's STORE/l link")
    def _():
        (m,) = cli().prepare("a2", "c1")
        ids["a2"] = layer_id_of(m)
        expect(ID_RX.match(ids["a2"]), f"layer id {ids['a2']!r}")
        expect_eq(m.type, "overlay", "type")
        expect_eq(m.opt("upperdir"), f"{STORE}/diff/{ids['a2']}", "upperdir")
        expect_eq(m.opt("workdir"), f"{STORE}/work/{ids['a2']}", "workdir")
        lo = lowers(m)
        expect_eq(len(lo), 1, f"lowerdirs {lo}")
        expect(lo[0].startswith(f"{STORE}/l/"), f"lowerdir {lo[0]} is not under STORE/l")
        expect_eq(os.path.realpath(lo[0]), f"{STORE}/diff/{ids['c1']}", "where the lowerdir link points")
        expect_eq(cli().stat("a2").parent, "c1", "Stat a2 parent")

    @case("through a2's overlay: c1's files; a delete, writes and a 1 MiB file -> Usage +1 MiB, +1 inode")
    def _():
        s0, i0 = cli().usage("a2")
        (m,) = cli().mounts("a2")
        with mounted(m) as d:
            expect_eq(read_file(os.path.join(d, "f1")), b"1", "f1 from c1")
            expect_eq(len(read_file(os.path.join(d, "big1"))), MiB, "big1 from c1")
            s1, i1 = cli().usage("a2")
            write_file(os.path.join(d, "big2"), os.urandom(MiB))
            s2, i2 = cli().usage("a2")
            write_file(os.path.join(d, "f2"), b"2")
            write_file(os.path.join(d, "top"), b"2")
            os.unlink(os.path.join(d, "dir", "gone"))
        expect(s2 - s1 >= MiB, f"size {s1} -> {s2}: grew by {s2 - s1}, expected >= {MiB}")
        expect_eq(i2 - i1, 1, f"inodes {i1} -> {i2}: growth")
        expect(s0 <= s1, f"usage before mounting {s0} > after {s1}")
        expect(os.path.isfile(f"{STORE}/diff/{ids['a2']}/big2"), "big2 is not in a2's upper dir")

    @case("Commit a2 as c2; Usage(c2) recorded at Commit, not measured again")
    def _():
        u = cli().usage("a2")
        cli().commit("c2", "a2", {"containerd.io/snapshot.ref": "sha256:2222"})
        ids["c2"] = ids.pop("a2")
        expect_eq(cli().usage("c2"), u, "usage after Commit")
        # Something written into a committed layer behind the API's back is
        # not counted: Usage returns what Commit recorded.
        extra = f"{STORE}/diff/{ids['c2']}/extra"
        write_file(extra, os.urandom(64 * 1024))
        try:
            expect_eq(cli().usage("c2"), u, "usage with a file added behind its back")
        finally:
            os.unlink(extra)
        i = cli().stat("c2")
        expect_eq((i.parent, i.kind), ("c1", COMMITTED), "parent, kind")

    @case("a third level: a3 on c2 -> lowerdir c2 then c1 (nearest first); content; Commit as c3")
    def _():
        (m,) = cli().prepare("a3", "c2", {"keep": "me"})
        ids["a3"] = layer_id_of(m)
        expect_eq(m.type, "overlay", "type")
        expect_eq([os.path.realpath(x) for x in lowers(m)], [f"{STORE}/diff/{ids['c2']}", f"{STORE}/diff/{ids['c1']}"],
                  "lowerdirs, resolved")
        with mounted(m) as d:
            got = files_in(d)
            expect_eq({k: got.get(k) for k in ("f1", "f2", "top")}, {"f1": "1", "f2": "2", "top": "2"}, "files")
            expect_eq(os.listdir(os.path.join(d, "dir")), [], "dir (its file deleted in c2)")
            write_file(os.path.join(d, "f3"), b"3")
            write_file(os.path.join(d, "top"), b"3")
        cli().commit("c3", "a3")
        ids["c3"] = ids.pop("a3")
        i = cli().stat("c3")
        expect_eq((i.parent, i.kind, i.labels), ("c2", COMMITTED, {}), "parent, kind, labels (Commit gave none)")

    @case("the chain c3 -> c2 -> c1: each Stat names its parent")
    def _():
        expect_eq([cli().stat(k).parent for k in ("c3", "c2", "c1")], ["c2", "c1", ""], "parents")

    @case("View on one parent -> a read-only bind of the parent's diff dir; its content; writes fail")
    def _():
        (m,) = cli().view("v1", "c1")
        expect_eq(m.type, "bind", "type")
        expect_eq(m.source, f"{STORE}/diff/{ids['c1']}", "source")
        expect("ro" in m.options and "rw" not in m.options, f"options {m.options}")
        with mounted(m) as d:
            expect_eq(read_file(os.path.join(d, "top")), b"1", "top")
            expect_readonly(d)
        i = cli().stat("v1")
        expect_eq((i.parent, i.kind), ("c1", VIEW), "parent, kind")
        expect_eq(cli().mounts("v1"), [m], "Mounts of the view")

    @case("View on a 3-deep chain -> overlay with lowerdir only (3 links, nearest first); content; read-only")
    def _():
        (m,) = cli().view("v3", "c3", {"containerd.io/gc.ref.snapshot": "x"})
        ids["v3"] = None
        expect_eq(m.type, "overlay", "type")
        expect(m.opt("upperdir") is None and m.opt("workdir") is None, f"options {m.options}")
        expect_eq([os.path.realpath(x) for x in lowers(m)],
                  [f"{STORE}/diff/{ids[k]}" for k in ("c3", "c2", "c1")], "lowerdirs, resolved")
        with mounted(m) as d:
            got = files_in(d)
            expect_eq({k: got.get(k) for k in ("f1", "f2", "f3", "top")},
                      {"f1": "1", "f2": "2", "f3": "3", "top": "3"}, "files")
            expect_readonly(d)
        expect_eq(cli().mounts("v3"), [m], "Mounts of the view")

    @case("View on two committed layers -> overlay, lowerdir only (2 links)")
    def _():
        (m,) = cli().view("v2", "c2")
        expect_eq(m.type, "overlay", "type")
        expect(m.opt("upperdir") is None, f"options {m.options}")
        expect_eq(len(lowers(m)), 2, f"lowerdirs {lowers(m)}")
        with mounted(m) as d:
            expect_eq(read_file(os.path.join(d, "top")), b"2", "top")
            expect_readonly(d)

    @case("View without a parent -> a read-only bind of an empty dir")
    def _():
        (m,) = cli().view("v0", "")
        expect_eq(m.type, "bind", "type")
        expect("ro" in m.options, f"options {m.options}")
        with mounted(m) as d:
            expect_eq(os.listdir(d), [], "content")
            expect_readonly(d)

    @case("an active on the 3-deep chain: overlay with 3 lowerdirs, writable; Mounts returns the same")
    def _():
        (m,) = cli().prepare("a4", "c3", {"x": "1", "y": "2"})
        ids["a4"] = layer_id_of(m)
        expect_eq(len(lowers(m)), 3, f"lowerdirs {lowers(m)}")
        expect_eq(cli().mounts("a4"), [m], "Mounts")
        with mounted(m) as d:
            expect_eq(read_file(os.path.join(d, "top")), b"3", "top")
            write_file(os.path.join(d, "top"), b"4")
        expect_eq(read_file(f"{STORE}/diff/{ids['a4']}/top"), b"4", "top in a4's upper dir")

    @case("after the happy paths: List == rows == layers, strata check clean")
    def _():
        clean()

    # ---------------------------------------------------- Update
    def upd_case(desc, labels, paths, want):
        @case(desc)
        def _():
            before = cli().stat("a4")
            time.sleep(0.002)
            i = cli().update("a4", labels, paths)
            expect_eq(i.labels, want, "labels in Update's answer")
            s = cli().stat("a4")
            expect_eq(s, i, "Stat after Update vs Update's answer")
            expect_eq((s.name, s.parent, s.kind, s.created), (before.name, before.parent, before.kind, before.created),
                      "name, parent, kind, created")
            expect(s.updated > before.updated, f"updated did not move forward: {before.updated} -> {s.updated}")

    upd_case("Update labels.x (set) changes x alone; updated moves forward, created stays",
             {"x": "9", "ignored": "1"}, ["labels.x"], {"x": "9", "y": "2"})
    upd_case("Update labels.z adds z", {"z": "new"}, ["labels.z"], {"x": "9", "y": "2", "z": "new"})
    upd_case("Update labels.y with an empty value unsets y", {"y": ""}, ["labels.y"], {"x": "9", "z": "new"})
    upd_case("Update labels.z absent from the info unsets z", {}, ["labels.z"], {"x": "9"})
    upd_case("Update with path `labels` replaces the whole set", {"p": "1", "q": "2"}, ["labels"], {"p": "1", "q": "2"})
    upd_case("Update without a field mask replaces the labels", {"r": "1"}, None, {"r": "1"})

    @case("Update with path `name` -> INVALID_ARGUMENT naming the key and the field; nothing changed")
    def _():
        before = cli().stat("a4")
        expect_err(lambda: cli().update("a4", {"r": "2"}, ["labels.r", "name"]), C.INVALID_ARGUMENT, ["a4", "name"])
        expect_eq(cli().stat("a4"), before, "Stat")
        clean()

    @case("Update of a committed snapshot's label is allowed (containerd's GC labels)")
    def _():
        i = cli().update("c1", {"containerd.io/gc.ref.content.l.0": "sha256:aa"}, ["labels.containerd.io/gc.ref.content.l.0"])
        expect_eq(i.labels, {"containerd.io/snapshot.ref": "sha256:1111", "containerd.io/gc.ref.content.l.0": "sha256:aa"},
                  "labels")

    # ---------------------------------------------------- List and filters
    @case("setup for the filters: committed p, children f1/f2 of p and f3 of c1 with snapshot.ref labels")
    def _():
        cli().prepare("p-active", "")
        cli().commit("p", "p-active")
        cli().prepare("f1", "p", {"containerd.io/snapshot.ref": "sha256:abc"})
        cli().prepare("f2", "p", {"containerd.io/snapshot.ref": "sha256:def"})
        cli().prepare("f3", "c1", {"containerd.io/snapshot.ref": "sha256:abc"})

    every = {}

    @case("List with no filter: every snapshot once, each as Stat returns it")
    def _():
        got = cli().list()
        names = [i.name for i in got]
        expect_eq(len(names), len(set(names)), "duplicates in List")
        want = {"c1", "c2", "c3", "v0", "v1", "v2", "v3", "a4", "p", "f1", "f2", "f3"}
        expect_eq(set(names), want, "names")
        for i in got:
            expect_eq(i, cli().stat(i.name), f"List vs Stat of {i.name}")
            every[i.name] = i

    def filter_case(filters, pred, desc=None):
        @case(desc or f"List {filters!r}")
        def _():
            want = sorted(n for n, i in every.items() if pred(i))
            got = sorted(i.name for i in cli().list(filters))
            expect(want, "the filter should match something")
            expect_eq(got, want, "names")

    filter_case(['parent=="c1"'], lambda i: i.parent == "c1")
    filter_case(["parent==c2"], lambda i: i.parent == "c2")
    filter_case(["kind==committed"], lambda i: i.kind == COMMITTED)
    filter_case(['kind=="view"'], lambda i: i.kind == VIEW)
    filter_case(['labels."containerd.io/snapshot.ref"==sha256:abc,parent=="p"'],
                lambda i: i.labels.get("containerd.io/snapshot.ref") == "sha256:abc" and i.parent == "p",
                "List with labels.\"containerd.io/snapshot.ref\"==sha256:abc,parent==\"p\" (bare value with ':') -> f1 alone")
    filter_case(['labels."containerd.io/snapshot.ref"'], lambda i: "containerd.io/snapshot.ref" in i.labels,
                "List with a label's presence")
    filter_case(["kind==view", 'name=="a4"'], lambda i: i.kind == VIEW or i.name == "a4",
                "List with two filters: either matches")
    filter_case(["name~=^f[12]$"], lambda i: i.name in ("f1", "f2"), "List with a regular expression")

    for bad in ["kind===committed", 'parent=="unterminated', "labels.=x", "name==a,,"]:
        @case(f"List with a bad filter {bad!r} -> INVALID_ARGUMENT naming it")
        def _():
            expect_err(lambda: cli().list([bad]), C.INVALID_ARGUMENT, [bad.split('"')[0]])

    # ---------------------------------------------------- errors
    for meth, fn in [("Stat", lambda k: cli().stat(k)), ("Mounts", lambda k: cli().mounts(k)),
                     ("Commit", lambda k: cli().commit("nosuch-target", k)), ("Remove", lambda k: cli().remove(k)),
                     ("Usage", lambda k: cli().usage(k)), ("Update", lambda k: cli().update(k, {"a": "b"}, ["labels.a"]))]:
        @case(f"{meth} of an unknown key -> NOT_FOUND naming the key; the store clean")
        def _():
            key = f"nosuch/{meth.lower()}"
            expect_err(lambda: fn(key), C.NOT_FOUND, [key], meth)
            clean()

    @case("Prepare on an unknown parent -> NOT_FOUND naming the parent; nothing made")
    def _():
        expect_err(lambda: cli().prepare("e/orphan", "nosuch/parent"), C.NOT_FOUND, ["nosuch/parent"])
        expect_err(lambda: cli().stat("e/orphan"), C.NOT_FOUND, ["e/orphan"])
        clean()

    @case("Prepare and View on an active (uncommitted) parent -> INVALID_ARGUMENT or FAILED_PRECONDITION")
    def _():
        for meth in (cli().prepare, cli().view):
            expect_err(lambda: meth("e/on-active", "a4"), (C.INVALID_ARGUMENT, C.FAILED_PRECONDITION), ["a4"])
            clean()
        expect_err(lambda: cli().prepare("e/on-view", "v1"), (C.INVALID_ARGUMENT, C.FAILED_PRECONDITION), ["v1"],
                   "Prepare on a view")
        clean()

    @case("Commit of a view -> FAILED_PRECONDITION naming it; the view stays")
    def _():
        expect_err(lambda: cli().commit("e/from-view", "v1"), C.FAILED_PRECONDITION, ["v1"])
        expect_eq(cli().stat("v1").kind, VIEW, "v1's kind")
        expect_err(lambda: cli().stat("e/from-view"), C.NOT_FOUND)
        clean()

    @case("Commit of a committed snapshot -> FAILED_PRECONDITION naming it")
    def _():
        expect_err(lambda: cli().commit("e/again", "c1"), C.FAILED_PRECONDITION, ["c1"])
        clean()

    @case("Mounts of a committed snapshot -> FAILED_PRECONDITION naming it")
    def _():
        expect_err(lambda: cli().mounts("c2"), C.FAILED_PRECONDITION, ["c2"])
        clean()

    @case("Prepare/View of an existing key (active, view, committed) -> ALREADY_EXISTS naming it; nothing made")
    def _():
        n = len(layers(STORE))
        for key in ("a4", "v1", "c1"):
            expect_err(lambda: cli().prepare(key, ""), C.ALREADY_EXISTS, [key], f"Prepare {key}")
            expect_err(lambda: cli().view(key, "c1"), C.ALREADY_EXISTS, [key], f"View {key}")
        expect_eq(len(layers(STORE)), n, "number of layers")
        expect_eq(cli().stat("a4").kind, ACTIVE, "a4 still active")
        clean()

    @case("Commit onto an existing name -> ALREADY_EXISTS naming it; the active stays and commits later")
    def _():
        cli().prepare("e/act", "c1")
        for name in ("c2", "v1", "a4", "e/act"):
            expect_err(lambda: cli().commit(name, "e/act"), C.ALREADY_EXISTS, [name], f"Commit as {name}")
            clean()
        expect_eq(cli().stat("e/act").kind, ACTIVE, "e/act kind")
        cli().commit("e/committed", "e/act")
        cli().remove("e/committed")
        clean()

    @case("Remove of a parent with children -> FAILED_PRECONDITION naming it; the chain intact")
    def _():
        for key in ("c1", "c2", "c3", "p"):
            expect_err(lambda: cli().remove(key), C.FAILED_PRECONDITION, [key], f"Remove {key}")
            clean()
        expect_eq(cli().stat("c1").kind, COMMITTED, "c1")

    @case("an empty key -> INVALID_ARGUMENT for every call that takes one")
    def _():
        calls = [("Prepare", lambda: cli().prepare("", "")), ("View", lambda: cli().view("", "c1")),
                 ("Mounts", lambda: cli().mounts("")), ("Commit key", lambda: cli().commit("e/x", "")),
                 ("Commit name", lambda: cli().commit("", "a4")), ("Remove", lambda: cli().remove("")),
                 ("Stat", lambda: cli().stat("")), ("Usage", lambda: cli().usage("")),
                 ("Update", lambda: cli().update("", {"a": "b"}, ["labels.a"]))]
        for what, fn in calls:
            expect_err(fn, C.INVALID_ARGUMENT, ["empty"], what)
        clean()

    @case("a label over containerd's 4096 bytes -> INVALID_ARGUMENT naming it (Prepare, Commit, Update); nothing changed")
    def _():
        big = {"huge-label": "v" * 5000}
        expect_err(lambda: cli().prepare("e/biglabel", "c1", big), C.INVALID_ARGUMENT, ["huge-label"], "Prepare")
        expect_err(lambda: cli().stat("e/biglabel"), C.NOT_FOUND)
        clean()
        cli().prepare("e/act2", "c1")
        expect_err(lambda: cli().commit("e/c-big", "e/act2", big), C.INVALID_ARGUMENT, ["huge-label"], "Commit")
        expect_eq(cli().stat("e/act2").kind, ACTIVE, "e/act2 after the failed Commit")
        expect_err(lambda: cli().update("e/act2", big, ["labels.huge-label"]), C.INVALID_ARGUMENT, ["huge-label"],
                   "Update")
        expect_eq(cli().stat("e/act2").labels, {}, "labels after the failed Update")
        clean()
        cli().remove("e/act2")

    @case("a key with a NUL byte -> INVALID_ARGUMENT (not silently the key cut at the NUL)")
    def _():
        # protobuf strings may hold NUL; keys cannot (meta.c, filter.c).  A
        # key "x\0y" must not act on "x".
        try:
            expect_err(lambda: cli().prepare("e/nul\0tail", ""), C.INVALID_ARGUMENT, what="Prepare e/nul\\0tail")
        finally:
            made = [i.name for i in cli().list(['name~=^e/nul'])]
            for k in made:
                cli().remove(k)
            cli().cleanup()
        expect(not made, f"Prepare of 'e/nul\\0tail' made snapshots {made!r}")
        cli().prepare("e/victim", "")
        try:
            expect_err(lambda: cli().remove("e/victim\0other"), (C.INVALID_ARGUMENT, C.NOT_FOUND), what="Remove e/victim\\0other")
            expect_eq(cli().stat("e/victim").kind, ACTIVE, "e/victim after a Remove of 'e/victim\\0other'")
        finally:
            try:
                cli().remove("e/victim")
            except grpc.RpcError:
                pass
        clean()

    @case("malformed request bodies (random bytes, a truncated varint, a length past the end) -> INVALID_ARGUMENT")
    def _():
        rnd = random.Random(7)
        bodies = [bytes(rnd.randrange(256) for _ in range(64)), b"\x12\x80", b"\x12\x05ab", b"\x12",
                  b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"]
        for meth in ("Prepare", "View", "Mounts", "Commit", "Remove", "Stat", "Update", "Usage", "Cleanup"):
            for b in bodies:
                expect_err(lambda: cli().raw(meth, b), C.INVALID_ARGUMENT, what=f"{meth} {b[:12]!r}")
        for b in bodies:
            expect_err(lambda: list(cli().raw_stream("List", b)), C.INVALID_ARGUMENT, what=f"List {b[:12]!r}")
        clean()

    @case("an unknown method and an unknown service -> UNIMPLEMENTED")
    def _():
        expect_err(lambda: cli().raw("Frobnicate", b""), C.UNIMPLEMENTED, ["Frobnicate"])
        fn = cli().ch.unary_unary("/containerd.services.content.v1.Content/Info", request_serializer=None,
                                  response_deserializer=None)
        expect_err(lambda: fn(b"", timeout=CALL_TIMEOUT), C.UNIMPLEMENTED)
        clean()

    @case("an oversized request (a 17 MiB label) -> RESOURCE_EXHAUSTED; nothing made; the daemon serves on")
    def _():
        expect_err(lambda: cli().prepare("e/huge", "", {"huge": "x" * (17 * MiB)}), C.RESOURCE_EXHAUSTED,
                   what="Prepare with 17 MiB")
        expect(state["d"].alive(), "the daemon died", *state["d"].log_tail())
        expect_err(lambda: cli().stat("e/huge"), C.NOT_FOUND)
        cli().prepare("e/after-huge", "c1")
        cli().remove("e/after-huge")
        clean()

    # ---------------------------------------------------- many snapshots, streams cancelled
    @case("500 more snapshots: List returns all of them, in several messages")
    def _():
        errs = []

        def make(lo, hi):
            c = Client(SOCK)
            try:
                for n in range(lo, hi):
                    c.prepare(f"bulk/{n:03d}", "c2" if n % 2 else "", {"n": str(n)})
            except grpc.RpcError as e:
                errs.append(f"{e.code()}: {e.details()}")
            finally:
                c.close()

        ths = [threading.Thread(target=make, args=(k * 50, k * 50 + 50)) for k in range(10)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(120)
        expect(not errs, "Prepare failed:", *errs[:5])
        msgs = cli().list_messages()
        names = [i.name for m in msgs for i in m]
        expect_eq(len(names), len(set(names)), "duplicates")
        bulk = sorted(n for n in names if n.startswith("bulk/"))
        expect_eq(bulk, [f"bulk/{n:03d}" for n in range(500)], "bulk names")
        expect_eq(len(names), 500 + len(every), "total")
        expect(len(msgs) >= 5, f"{len(names)} snapshots came in {len(msgs)} message(s)")
        f = cli().list(["name~=^bulk/", "labels.n==7"])
        expect_eq(len(f), 500, "List name~=^bulk/")
        clean()

    @case("clients that cancel a List mid-stream or drop the connection: the daemon serves on")
    def _():
        for k in range(5):
            it = cli().raw_stream("List", b"")
            first = next(it)
            expect(len(fields(first).get(1, [])) > 0, "the first message holds no Info")
            it.cancel()
        for k in range(3):
            c = Client(SOCK)
            it = c.raw_stream("List", b"")
            next(it)
            c.close()
        expect(state["d"].alive(), "the daemon died", *state["d"].log_tail())
        expect_eq(cli().stat("c1").name, "c1", "Stat after")
        expect_eq(len([i for i in cli().list() if i.name.startswith("bulk/")]), 500, "List after")

    @case("the 500 removed concurrently; List and layers agree")
    def _():
        errs = []

        def rm(lo, hi):
            c = Client(SOCK)
            try:
                for n in range(lo, hi):
                    c.remove(f"bulk/{n:03d}")
            except grpc.RpcError as e:
                errs.append(f"{e.code()}: {e.details()}")
            finally:
                c.close()

        ths = [threading.Thread(target=rm, args=(k * 50, k * 50 + 50)) for k in range(10)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(120)
        expect(not errs, "Remove failed:", *errs[:5])
        expect_eq(len(cli().list()), len(every), "snapshots left")
        clean()

    # ---------------------------------------------------- concurrency
    @case("64 threads at once, each Prepare+Commit, Prepare+Remove: all succeed, exactly 64 committed left")
    def _():
        errs = []
        start = threading.Barrier(64)

        def work(n):
            c = Client(SOCK)
            try:
                start.wait(30)
                parent = "c3" if n % 2 else ""
                c.prepare(f"conc/{n}/a", parent, {"n": str(n)})
                c.prepare(f"conc/{n}/b", parent)
                c.commit(f"conc/{n}/c", f"conc/{n}/a", {"n": str(n)})
                c.remove(f"conc/{n}/b")
            except Exception as e:
                errs.append(f"thread {n}: {e.code() if isinstance(e, grpc.RpcError) else ''} "
                            f"{e.details() if isinstance(e, grpc.RpcError) else repr(e)}")
            finally:
                c.close()

        ths = [threading.Thread(target=work, args=(n,)) for n in range(64)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(120)
        expect(not errs, f"{len(errs)} threads failed:", *errs[:8])
        got = cli().list(["name~=^conc/"])
        expect_eq(sorted(i.name for i in got), sorted(f"conc/{n}/c" for n in range(64)), "names")
        expect(all(i.kind == COMMITTED and i.labels == {"n": i.name.split("/")[1]} for i in got),
               "not all committed with their label")
        expect_eq(len(cli().list(["parent==c3"])), 32 + sum(i.parent == "c3" for i in every.values()),
                  "children of c3")
        clean()

        def rm(n):
            try:
                cli().remove(f"conc/{n}/c")
            except grpc.RpcError as e:
                errs.append(f"remove {n}: {e.code()} {e.details()}")

        ths = [threading.Thread(target=rm, args=(n,)) for n in range(64)]
        for th in ths:
            th.start()
        for th in ths:
            th.join(120)
        expect(not errs, *errs[:8])
        expect_eq(cli().list(["name~=^conc/"]), [], "conc/ left")
        clean()

    @case("racing calls: Commit vs Remove of a key, two Commits of a key, two keys committed to one name: "
          "one wins each, the other a clean NOT_FOUND/ALREADY_EXISTS")
    def _():
        bad = []

        def together(*fns):
            res = [None] * len(fns)
            go = threading.Barrier(len(fns))

            def one_(i):
                try:
                    go.wait(30)
                    fns[i]()
                    res[i] = "ok"
                except grpc.RpcError as e:
                    res[i] = e
                except Exception as e:
                    res[i] = e

            ths = [threading.Thread(target=one_, args=(i,)) for i in range(len(fns))]
            for th in ths:
                th.start()
            for th in ths:
                th.join(60)
            return res

        def code(r):
            return "ok" if r == "ok" else r.code() if isinstance(r, grpc.RpcError) else repr(r)

        def exists(k):
            try:
                return cli().stat(k)
            except grpc.RpcError as e:
                if e.code() != C.NOT_FOUND:
                    raise
                return None

        for n in range(15):
            k, c = f"rc/{n}/k", f"rc/{n}/c"
            cli().prepare(k, "c1")
            r = [code(x) for x in together(lambda: cli().commit(c, k), lambda: cli().remove(k))]
            if sorted(r, key=str) not in (sorted(["ok", C.NOT_FOUND], key=str),):
                bad.append(f"Commit vs Remove of {k}: {r}")
            elif (r[0] == "ok") != bool(exists(c)) or exists(k):
                bad.append(f"Commit vs Remove of {k}: {r} but {c} {'exists' if exists(c) else 'does not'}, "
                           f"{k} {'exists' if exists(k) else 'does not'}")
            if exists(c):
                cli().remove(c)

            k2 = f"rc/{n}/k2"
            cli().prepare(k2, "")
            r = [code(x) for x in together(lambda: cli().commit(f"rc/{n}/x", k2), lambda: cli().commit(f"rc/{n}/y", k2))]
            won = [nm for nm, x in zip(("x", "y"), r) if x == "ok"]
            if len(won) != 1 or [x for x in r if x != "ok"] != [C.NOT_FOUND]:
                bad.append(f"two Commits of {k2}: {r}")
            for nm in ("x", "y"):
                if bool(exists(f"rc/{n}/{nm}")) != (nm in won):
                    bad.append(f"two Commits of {k2}: {r} but rc/{n}/{nm} {'exists' if nm not in won else 'is missing'}")
                if exists(f"rc/{n}/{nm}"):
                    cli().remove(f"rc/{n}/{nm}")

            a, b, name = f"rc/{n}/a", f"rc/{n}/b", f"rc/{n}/name"
            cli().prepare(a, "c2")
            cli().prepare(b, "c2")
            r = [code(x) for x in together(lambda: cli().commit(name, a), lambda: cli().commit(name, b))]
            if sorted(r, key=str) != sorted(["ok", C.ALREADY_EXISTS], key=str):
                bad.append(f"{a} and {b} committed as {name}: {r}")
            else:
                loser = b if r[0] == "ok" else a
                i = exists(loser)
                if not i or i.kind != ACTIVE:
                    bad.append(f"{loser} lost the race to {name} but is {i}")
            for x in (name, a, b):
                if exists(x):
                    cli().remove(x)
        expect(not bad, f"{len(bad)} races went wrong:", *bad[:10])
        clean()

    @case("a chain past overlay's 500 lowers: Prepare and View -> FAILED_PRECONDITION naming the key, nothing "
          "half-made; a 500-layer view mounts (lowers relative, as containerd does) with the right content")
    def _():
        parent, depth, err = "", 0, None
        made = []
        try:
            while depth < 600:
                k = f"deep/a/{depth}"
                try:
                    cli().prepare(k, parent)
                except grpc.RpcError as e:
                    err = e
                    break
                made.append(f"deep/{depth}")
                if depth in (0, 499):
                    lid = layer_id_of(cli().mounts(k)[0])
                    write_file(f"{STORE}/diff/{lid}/top", str(depth).encode())
                    write_file(f"{STORE}/diff/{lid}/level{depth}", b"x")
                cli().commit(f"deep/{depth}", k)
                parent = f"deep/{depth}"
                depth += 1
            expect(err is not None, f"Prepare on a chain {depth} deep still succeeds (overlay takes 500 lowers)")
            expect(depth >= 100, f"refused already at depth {depth}: {err.code()}: {err.details()}")
            expect(err.code() == C.FAILED_PRECONDITION and f"deep/a/{depth}" in (err.details() or ""),
                   f"at depth {depth}: {err.code()}: {err.details()}")
            print(f"# refused at depth {depth}: {err.details()}")
            expect_err(lambda: cli().stat(f"deep/a/{depth}"), C.NOT_FOUND, what="Stat of the refused key")
            if depth > 500:
                expect_err(lambda: cli().view(f"deep/v/{depth}", parent), C.FAILED_PRECONDITION, [f"deep/v/{depth}"],
                           "View on the deepest (501 lowers)")
            clean()
            (m,) = cli().view("deep/view", "deep/499")
            expect_eq(len(lowers(m)), 500, "lowers of a view on deep/499")
            with mounted(m) as d:
                got = files_in(d)
                expect_eq(got, {"level0": "x", "level499": "x", "top": "499"}, "content of the 500-layer view")
            cli().remove("deep/view")
        finally:
            for k in reversed(made):
                cli().remove(k)
        clean()

    # ---------------------------------------------------- a second daemon on the store
    @case("a second snapshotter on the live socket (another store) is refused naming it; the first serves on")
    def _():
        ident = file_identity(SOCK)
        p = run([STRATA, "--root", STORE2, "snapshotter", "--socket", SOCK], timeout=60)
        err = p.stderr.decode(errors="replace").strip()
        expect_eq(p.returncode, 1, f"exit status (stderr: {err})")
        expect(SOCK in err, "the error does not name the socket", err)
        expect(file_identity(SOCK) == ident, "the live socket was replaced")
        expect_eq(cli().stat("c1").name, "c1", "Stat on the first")

    @case("a second snapshotter started on the same store while the first prepares: the first's snapshots stay whole")
    def _():
        # Two snapshotter daemons may claim one store together; the one
        # starting reconciles and cleans up the store before it looks at its
        # socket (here: the live one, so it is refused).  It must not take
        # the layer of a Prepare in flight in the other for debris.
        stop = threading.Event()
        made, errs = [], []

        def work(n):
            c = Client(SOCK)
            try:
                i = 0
                while not stop.is_set() and i < 400:
                    k = f"race/{n}/{i}"
                    i += 1
                    try:
                        c.prepare(k, "c1" if i % 2 else "")
                        made.append(k)
                    except grpc.RpcError as e:
                        errs.append(f"Prepare {k}: {e.code()}: {e.details()}")
            finally:
                c.close()

        ths = [threading.Thread(target=work, args=(n,)) for n in range(8)]
        for th in ths:
            th.start()
        logs = []
        try:
            for k in range(25):
                p = run([STRATA, "--root", STORE, "snapshotter", "--socket", SOCK], timeout=60)
                logs += [x for x in p.stderr.decode(errors="replace").splitlines() if "socket" not in x
                         and "already serves" not in x]
                if errs:
                    break
        finally:
            stop.set()
            for th in ths:
                th.join(120)
        lost = []
        for k in made:
            try:
                (m,) = cli().mounts(k)
                if not layer_id_of(m) or not os.path.isdir(f"{STORE}/diff/{layer_id_of(m)}"):
                    lost.append(f"{k}: layer dir gone")
            except grpc.RpcError as e:
                lost.append(f"{k}: Mounts: {e.code()}: {e.details()}")
        for k in made:
            try:
                cli().remove(k)
            except grpc.RpcError:
                pass
        problems = store_problems(cli(), STORE)
        expect(not errs and not lost and not problems,
               f"{len(made)} Prepares succeeded; {len(errs)} failed, {len(lost)} lost their layer:",
               *(errs[:4] + lost[:4] + problems[:4]), "the second daemon's log:", *logs[:6])

    @case("after that: Cleanup, then List == rows == layers and strata check clean")
    def _():
        for i in cli().list(["name~=^race/"]):
            try:
                cli().remove(i.name)
            except grpc.RpcError:
                pass
        cli().cleanup()
        clean()

    @case("a client that opens a call and never sends its request is cancelled after --stall-timeout; "
          "the daemon serves on")
    def _():
        sock = os.path.join(TMP, "stall.sock")
        st = Proc("stall", [STRATA, "--root", os.path.join(TMP, "stall-store"), "snapshotter",
                            "--stall-timeout", "2", "--socket", sock])
        try:
            end = time.monotonic() + 20
            while not socket_accepts(sock) and time.monotonic() < end and st.alive():
                time.sleep(0.05)
            expect(socket_accepts(sock), "the snapshotter did not come up", *st.log_tail())
            ch = grpc.insecure_channel("unix:" + sock)
            never = threading.Event()

            def requests():
                never.wait(30)
                yield b""

            t0 = time.monotonic()
            fn = ch.stream_unary(SVC + "Stat", request_serializer=None, response_deserializer=None)
            try:
                fn(requests(), timeout=20)
                raise Fail("the stalled call succeeded")
            except grpc.RpcError as e:
                took = time.monotonic() - t0
                expect(e.code() == grpc.StatusCode.CANCELLED, f"status {e.code()}: {e.details()}")
                expect(1.5 <= took <= 10, f"cancelled after {took:.1f}s, not about 2s")
            finally:
                never.set()
                ch.close()
            expect("its call is cancelled" in st.log(), "the log does not say so", *st.log_tail())
            c = Client(sock)
            try:
                c.prepare("after-stall")
                expect_eq(c.stat("after-stall").name, "after-stall", "the next call's snapshot")
            finally:
                c.close()
        finally:
            st.stop()

    @case("a regular file at the socket path is refused (exit 1, naming it) and left intact")
    def _():
        path = os.path.join(TMP, "not-a-socket")
        write_file(path, b"precious\n")
        p = run([STRATA, "--root", STORE2, "snapshotter", "--socket", path], timeout=60)
        err = p.stderr.decode(errors="replace").strip()
        expect_eq(p.returncode, 1, f"exit status (stderr: {err})")
        expect(path in err, "the error does not name the path", err)
        expect_eq(read_file(path), b"precious\n", "the file's content")

    # ---------------------------------------------------- kill -9 under load
    committed_bases = ["c1", "c2", "c3", "p"]

    def crash_round(rnd, delay):
        stop = threading.Event()
        lock = threading.Lock()
        settled = {}  # key -> True (must exist) / False (must not)
        uncertain = set()  # keys of the calls in flight when the daemon died
        early = []  # errors before the kill
        killed_at = [None]

        def work(n):
            c = Client(SOCK)
            rng = random.Random(rnd * 1000 + n)
            i = 0
            cur = None
            try:
                while not stop.is_set():
                    i += 1
                    k = f"crash/{rnd}/{n}/{i}"
                    name = f"crashc/{rnd}/{n}/{i}"
                    cur = [k]
                    c.prepare(k, rng.choice(committed_bases + [""]), {"round": str(rnd)})
                    with lock:
                        settled[k] = True
                    r = rng.random()
                    if r < 0.4:
                        cur = [k, name]
                        c.commit(name, k, {"round": str(rnd)})
                        with lock:
                            settled[k], settled[name] = False, True
                        if rng.random() < 0.5:
                            cur = [name]
                            c.remove(name)
                            with lock:
                                settled[name] = False
                    elif r < 0.8:
                        cur = [k]
                        c.remove(k)
                        with lock:
                            settled[k] = False
                    cur = None
            except grpc.RpcError as e:
                with lock:
                    uncertain.update(cur or [])
                    if killed_at[0] is None:
                        early.append(f"thread {n}: {e.code()}: {e.details()}")
            finally:
                c.close()

        ths = [threading.Thread(target=work, args=(n,)) for n in range(20)]
        for th in ths:
            th.start()
        time.sleep(delay)
        d = state["d"]
        with lock:
            killed_at[0] = time.monotonic()
        d.kill9()
        stop.set()
        for th in ths:
            th.join(60)
        expect(not any(th.is_alive() for th in ths), "client threads did not stop after the kill")
        expect(not early, "calls failed before the kill:", *early[:5])
        expect(os.path.exists(SOCK) and stat.S_ISSOCK(os.lstat(SOCK).st_mode),
               "the killed daemon's socket file is gone (nothing stale to replace)")
        expect(not socket_accepts(SOCK), "the killed daemon's socket still accepts")
        ident = file_identity(SOCK)
        time.sleep(0.01)
        restart(f"d-crash{rnd}")
        expect(file_identity(SOCK) != ident, "the stale socket file was not replaced")
        return settled, uncertain

    for rnd, delay in [(1, 0.6), (2, 1.3), (3, 2.1)]:
        result = {}

        @case(f"kill -9 round {rnd} after {delay}s of 20 threads' Prepare/Commit/Remove; the restart replaces the stale socket")
        def _():
            result["r"] = crash_round(rnd, delay)

        @case(f"after kill -9 round {rnd}: every acknowledged change is there, every listed snapshot has its layer "
              "(Stat, Mounts), no ctd-* layer lacks a row")
        def _():
            expect("r" in result, "the round did not run")
            settled, uncertain = result["r"]
            expect(len(settled) > 20, f"only {len(settled)} keys settled before the kill")
            listed = {i.name: i for i in cli().list()}
            wrong = [f"{k}: {'missing' if want else 'still there'}" for k, want in settled.items()
                     if k not in uncertain and (k in listed) != want]
            expect(not wrong, f"{len(wrong)} acknowledged changes not reflected:", *wrong[:8])
            rows = db_rows(STORE)
            bad = []
            for name, i in listed.items():
                expect_eq(cli().stat(name), i, f"Stat {name}")
                lid = rows[name][0]
                if not os.path.isdir(f"{STORE}/diff/{lid}") or not os.path.exists(f"{STORE}/layers/{lid}"):
                    bad.append(f"{name}: layer {lid} missing")
                if i.kind != COMMITTED:
                    (m,) = cli().mounts(name)
                    if i.kind == ACTIVE and layer_id_of(m) != lid:
                        bad.append(f"{name}: Mounts name layer {layer_id_of(m)}, the row {lid}")
            expect(not bad, *bad[:8])
            cli().cleanup()
            clean()

        @case(f"after kill -9 round {rnd}: the new daemon works (Prepare on a committed survivor, Commit, Remove)")
        def _():
            survivors = [i.name for i in cli().list([f'labels.round=="{rnd}",kind==committed'])]
            parent = survivors[0] if survivors else "c1"
            cli().prepare(f"post/{rnd}", parent)
            cli().commit(f"postc/{rnd}", f"post/{rnd}")
            cli().remove(f"postc/{rnd}")
            clean()

    # ---------------------------------------------------- one store, one front end
    serve_n = [0]

    def start_serve():
        serve_n[0] += 1
        sock = os.path.join(TMP, f"serve{serve_n[0]}.sock")
        s = Proc("serve", [STRATA, "--root", STORE, "serve", "--socket", sock])
        end = time.monotonic() + 20
        while not socket_accepts(sock):
            expect(s.alive(), "strata serve exited", *s.log_tail())
            expect(time.monotonic() < end, "strata serve does not accept", *s.log_tail())
            time.sleep(0.05)
        return s, sock

    def plugin_init(sock, home):
        conn = http.client.HTTPConnection("localhost", timeout=CALL_TIMEOUT)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(CALL_TIMEOUT)
        s.connect(sock)
        conn.sock = s
        try:
            conn.request("POST", "/GraphDriver.Init", body=json.dumps({"Home": home, "Opts": []}).encode(),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, r.read().decode(errors="replace")
        finally:
            conn.close()

    @case("with the snapshotter on STORE, strata serve's Init of STORE fails naming the store and 'snapshotter'")
    def _():
        s, sock = start_serve()
        try:
            status, body = plugin_init(sock, STORE)
            expect(status != 200, f"Init succeeded: {status} {body}")
            err = json.loads(body).get("Err", "")
            expect(STORE in err and "snapshotter" in err, f"Err does not name {STORE} and 'snapshotter': {err!r}")
        finally:
            s.stop()
        expect_eq(cli().stat("c1").name, "c1", "the snapshotter serves on")
        clean()

    @case("SIGTERM stops the snapshotter: exit 0 within 15s, its socket removed")
    def _():
        cli().close()
        state["cli"] = None
        rc = state["d"].signal_and_wait(signal.SIGTERM, 15)
        expect_eq(rc, 0, "exit status")
        expect(not os.path.exists(SOCK), f"{SOCK} is still there")

    @case("with strata serve holding STORE (after its Init), a snapshotter on STORE fails at start: exit 1, naming 'serve'")
    def _():
        s, sock = start_serve()
        try:
            status, body = plugin_init(sock, STORE)
            expect_eq(status, 200, f"serve's Init of STORE: {body}")
            sock3 = os.path.join(TMP, "s3.sock")
            p = run([STRATA, "--root", STORE, "snapshotter", "--socket", sock3], timeout=60)
            err = p.stderr.decode(errors="replace").strip()
            expect_eq(p.returncode, 1, f"exit status (stderr: {err})")
            expect("serve" in err and STORE in err, f"the error does not name 'serve' and the store: {err!r}")
            expect(not os.path.exists(sock3), f"{sock3} was made")
        finally:
            s.stop()

    @case("the snapshotter restarts on STORE after serve is gone: every snapshot there, the store clean")
    def _():
        restart("d-final")
        names = {i.name for i in cli().list()}
        expect(set(every) <= names, f"missing: {sorted(set(every) - names)}")
        clean()

    @case("the daemons' logs hold no crash or assertion")
    def _():
        bad = [f"{p.name}: {line}" for p in PROCS for line in p.log().splitlines()
               if re.search(r"(?i)assert|segfault|abort|double free|corrupt", line)]
        expect(not bad, *bad[:10])


# ---------------------------------------------------------------- cleanup


def cleanup():
    for p in PROCS:
        try:
            p.stop()
        except Exception as e:  # keep cleaning
            print(f"# stopping {p.name} (pid {p.pid}): {e!r}")
    keep = os.environ.get("STRATA_IT_LOGDIR")
    if keep:
        os.makedirs(keep, exist_ok=True)
        for p in PROCS:
            try:
                shutil.copy(p.log_path, os.path.join(keep, os.path.basename(p.log_path)))
            except OSError:
                pass
    for store in (STORE, STORE2):
        if os.path.isdir(os.path.join(store, "mnt")):
            try:
                run([STRATA, "--root", store, "cleanup"], timeout=60)
            except Exception as e:
                print(f"# strata cleanup {store}: {e!r}")
    for m in mounts_under(TMP):
        subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL, timeout=30)
    left = mounts_under(TMP)
    if left:
        emit(False, f"fixture left mounts under {TMP}", left)
    else:
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        shutil.rmtree(TMP, ignore_errors=True)
        print("1..0 # SKIP not root: the test mounts overlays and binds")
        sys.exit(0)
    if not STRATA or not os.access(STRATA, os.X_OK):
        shutil.rmtree(TMP, ignore_errors=True)
        print("1..0 # SKIP STRATA_BIN does not name the strata binary")
        sys.exit(0)
    run_script(main, cleanup, GLOBAL_TIMEOUT)
