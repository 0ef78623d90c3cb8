#!/usr/bin/env python3
"""`strata serve` at the protocol level: Docker's legacy graphdriver plugin
protocol (HTTP/1.1 on a unix socket), as dockerd speaks it.  Prints TAP.

Four servers, each on a socket in a scratch dir under /var/tmp:

  S1  the main one: startup (socket mode, refusals), Activate, the calls
      before Init, Init, every GraphDriver method's happy path (a 3-layer
      chain applied through ApplyDiff, chunked and with Content-Length,
      Diff -> ApplyDiff round trips, Get/Put counts), every error the
      contract lists (status code and a JSON {"Err"} naming the id or the
      entry), hostile and truncated tars, client disconnects mid-upload,
      stuck clients that must not block others, keep-alive, parallel calls,
      the log lines; finally SIGTERM with a call in flight and mounts held.
  S2  Init's options (failed Inits first, then strata.mountapi=legacy with
      UID/GID maps), --log-level warn, SIGTERM while a client is stuck and
      an upload stalled (bounded by --grace 5).
  S3  a stale socket file is replaced; SIGINT with an idle keep-alive
      connection and a half-sent request (no call in flight: no waiting).
  S4  restarted under a dockerd that will not Init again: killed with
      SIGKILL and started on the same socket, it reopens the last Init's
      store (SOCKET.init); after Cleanup, or with a corrupt SOCKET.init,
      it waits for an Init.
  S5  hardening, started with RLIMIT_NOFILE's soft limit at 1024 (it
      raises it to 8192): ids and parents with a NUL byte, or given twice, in
      ApplyDiff's query and \u0000 in every JSON string field; a Diff whose
      client stops reading (other calls on the layer go on, the tar is a
      snapshot; memory and spool stay small) or goes away; layers 2000 and
      100,000 directories deep; idle connections beyond the old
      limit of 256, the first-request timeout, the soft connection cap
      (503, not a reset), a client dribbling its headers cut off by the
      first-request deadline.

    STRATA_BIN=build/strata python3 tests/integration/t_plugin.py
    STRATA_IT_LOGDIR=DIR   keep a copy of each server's stderr in DIR

Everything runs as root and mounts real overlays through the server.  The
scratch dir is always cleaned up: servers are stopped by PID, `strata
cleanup` runs on each store, anything still mounted under the scratch dir
is lazily unmounted (deepest first), then the dir is removed.
"""

import hashlib
import http.client
import io
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import stat
import subprocess
import tarfile
import tempfile
import threading
import time

from tap import Fail, case, emit, expect, expect_eq, run_script

STRATA = os.environ["STRATA_BIN"]
CT = "application/vnd.docker.plugins.v1+json"
MTIME = 1700000000
CALL_TIMEOUT = 15.0  # every socket operation is bounded by this
GLOBAL_TIMEOUT = 900  # the whole script

TMP = tempfile.mkdtemp(prefix="strata-it.", dir=os.environ.get("STRATA_TEST_DIR", "/var/tmp"))
H1 = os.path.join(TMP, "home1")
H2 = os.path.join(TMP, "home2")
SOCK1 = os.path.join(TMP, "s1.sock")
SOCK2 = os.path.join(TMP, "s2.sock")
SOCK3 = os.path.join(TMP, "s3.sock")
H4 = os.path.join(TMP, "home4")
SOCK4 = os.path.join(TMP, "s4.sock")
H5 = os.path.join(TMP, "home5")
SOCK5 = os.path.join(TMP, "s5.sock")
OUTSIDE = os.path.join(TMP, "outside")  # where hostile entries aim

# ---------------------------------------------------------------- mounts


def _unescape(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mounts():
    """(mount point, fstype) of every mount in this namespace."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            out.append((_unescape(fields[4]), fields[sep + 1]))
    return out


def mounts_under(prefix):
    """Mount points at or below prefix, deepest first."""
    ms = [m for m, _ in mounts() if m == prefix or m.startswith(prefix + "/")]
    return sorted(set(ms), key=len, reverse=True)


def overlay_at(path):
    return any(m == path and t == "overlay" for m, t in mounts())


def overlays_under(prefix):
    return [m for m, t in mounts() if t == "overlay" and (m == prefix or m.startswith(prefix + "/"))]


# ---------------------------------------------------------------- servers

SERVERS = []


class Server:
    def __init__(self, name, sock, args=(), preexec_fn=None):
        self.name = name
        self.sock = sock
        self.log_path = os.path.join(TMP, f"{name}.log")
        self.out_path = os.path.join(TMP, f"{name}.out")
        self.argv = [STRATA, "serve", "--socket", sock, *args]
        with open(self.log_path, "wb") as err, open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         preexec_fn=preexec_fn)
        SERVERS.append(self)

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self, n=15):
        return ["server stderr (tail):"] + ["  " + x for x in self.log().splitlines()[-n:]]

    def wait_ready(self, timeout=10.0):
        """Wait until the socket accepts a connection."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise Fail(f"{self.name} exited with {self.proc.returncode} before listening", *self.log_tail())
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(1.0)
                s.connect(self.sock)
                s.close()
                return
            except OSError:
                s.close()
                time.sleep(0.05)
        raise Fail(f"{self.name}: {self.sock} accepted nothing within {timeout}s", *self.log_tail())

    def signal_and_wait(self, sig, timeout):
        """Send sig; return the exit code, or None if it did not exit in time."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        if self.proc.poll() is None:
            if self.signal_and_wait(signal.SIGTERM, 10) is None:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def wait_log(self, regex, timeout=3.0):
        """The first log line matching regex, polling up to timeout."""
        rx = re.compile(regex)
        end = time.monotonic() + timeout
        while True:
            for line in self.log().splitlines():
                if rx.search(line):
                    return line
            if time.monotonic() >= end:
                return None
            time.sleep(0.05)


# ---------------------------------------------------------------- HTTP


class UnixConn(http.client.HTTPConnection):
    def __init__(self, path, timeout=CALL_TIMEOUT):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = unix_connect(self.unix_path, self.timeout)


class Reply:
    def __init__(self, status, headers, body, elapsed=0.0):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body
        self.elapsed = elapsed

    @property
    def ctype(self):
        return self.headers.get("content-type", "")

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise Fail(f"reply body is not JSON ({e})", str(self))

    def __str__(self):
        b = self.body[:400]
        return f"reply: {self.status} content-type={self.ctype!r} body={b!r}{'...' if len(self.body) > 400 else ''}"


def request(sock, path, body=b"", method="POST", conn=None, timeout=CALL_TIMEOUT, headers=None):
    """One HTTP exchange.  body: bytes (Content-Length), an iterator of bytes
    (chunked) or None.  With conn, reuse that keep-alive connection."""
    own = conn is None
    c = conn if conn is not None else UnixConn(sock, timeout)
    h = {"Accept": CT}
    if headers:
        h.update(headers)
    t0 = time.monotonic()
    try:
        try:
            if body is not None and not isinstance(body, (bytes, bytearray)):
                c.request(method, path, body=body, headers=h, encode_chunked=True)
            else:
                c.request(method, path, body=body, headers=h)
        except (BrokenPipeError, ConnectionResetError):
            # The server may answer (413, an early error) and close before
            # reading the whole body: its reply is still there to read.
            if c.sock is None:
                raise
        r = c.getresponse()
        data = r.read()
        return Reply(r.status, r.getheaders(), data, time.monotonic() - t0)
    finally:
        if own:
            c.close()


def call(sock, method, obj=None, raw=None, **kw):
    """POST /method with obj as JSON (raw: the body bytes as they are)."""
    body = raw if raw is not None else (b"" if obj is None else json.dumps(obj).encode())
    return request(sock, "/" + method, body, **kw)


def apply_path(id_, parent=""):
    return f"/GraphDriver.ApplyDiff?id={id_}&parent={parent}"


def chunks(data, size=7919):
    for i in range(0, len(data), size):
        yield data[i : i + size]


def want_ok(r, *keys):
    """A 200 with the plugin content type and a JSON object without Err."""
    problems = []
    if r.status != 200:
        problems.append(f"status {r.status}, expected 200")
    if not r.ctype.startswith(CT):
        problems.append(f"content type {r.ctype!r}, expected {CT}")
    if problems:
        raise Fail(*problems, str(r))
    j = r.json()
    expect(isinstance(j, dict), "reply is not a JSON object", str(r))
    expect(not j.get("Err"), f"200 reply carries Err {j.get('Err')!r}", str(r))
    for k in keys:
        expect(k in j, f"reply lacks {k!r}", str(r))
    return j


def want_err(r, status=None, contains=()):
    """A non-200 (status, if given) with a JSON object whose Err is a
    non-empty string containing each of contains (case-insensitive)."""
    if r.status == 200:
        raise Fail("status 200, expected an error", str(r))
    if status is not None and r.status != status:
        raise Fail(f"status {r.status}, expected {status}", str(r))
    expect(r.ctype.startswith(CT), f"content type {r.ctype!r}, expected {CT}", str(r))
    j = r.json()
    expect(isinstance(j, dict), "error body is not a JSON object", str(r))
    err = j.get("Err")
    expect(isinstance(err, str) and err.strip(), "Err missing or empty", str(r))
    for s in contains:
        expect(s.lower() in err.lower(), f"Err does not name {s!r}", str(r))
    return err


def unix_connect(path, timeout=CALL_TIMEOUT):
    """A connected AF_UNIX socket with a timeout.  A full listen backlog makes
    connect() on a socket with a timeout fail with EAGAIN: retry until the
    timeout."""
    end = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(path)
            return s
        except BlockingIOError:
            s.close()
            if time.monotonic() >= end:
                raise
            time.sleep(0.02)
        except BaseException:
            s.close()
            raise


raw_connect = unix_connect


def raw_response(s, method="POST"):
    resp = http.client.HTTPResponse(s, method=method)
    try:
        resp.begin()
        return Reply(resp.status, resp.getheaders(), resp.read())
    finally:
        resp.close()


def chunk(b):
    return b"%x\r\n" % len(b) + b + b"\r\n"


def upload_head(id_, parent="", chunked=True, length=0):
    h = f"POST {apply_path(id_, parent)} HTTP/1.1\r\nHost: localhost\r\nAccept: {CT}\r\n"
    h += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {length}\r\n"
    return (h + "\r\n").encode()


# ---------------------------------------------------------------- tars


def D(name, mode=0o755, uid=0, gid=0):
    return ("d", name, mode, uid, gid)


def F(name, data=b"", mode=0o644, uid=0, gid=0):
    return ("f", name, data, mode, uid, gid)


def S(name, target):
    return ("l", name, target)


def H(name, target):
    return ("h", name, target)


def mktar(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e[1])
            ti.mtime = MTIME
            if e[0] == "d":
                ti.type, ti.mode, ti.uid, ti.gid = tarfile.DIRTYPE, e[2], e[3], e[4]
                tf.addfile(ti)
            elif e[0] == "f":
                ti.mode, ti.uid, ti.gid, ti.size = e[3], e[4], e[5], len(e[2])
                tf.addfile(ti, io.BytesIO(e[2]))
            elif e[0] == "l":
                ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, e[2], 0o777
                tf.addfile(ti)
            elif e[0] == "h":
                ti.type, ti.linkname, ti.mode = tarfile.LNKTYPE, e[2], 0o644
                tf.addfile(ti)
    return buf.getvalue()


def tar_size(entries):
    return sum(len(e[2]) for e in entries if e[0] == "f")


def tar_members(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        return {m.name.rstrip("/"): m for m in tf.getmembers()}


def tar_file(data, name):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        return tf.extractfile(name).read()


def snapshot(root):
    """path -> what it is, for comparing merged views."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[rel] = ("f", mode, st.st_uid, st.st_gid, hashlib.sha256(f.read()).hexdigest())
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", mode, st.st_uid, st.st_gid)
            elif stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(p))
            else:
                out[rel] = ("o", st.st_mode, st.st_rdev)
    return out


def listing(path):
    try:
        return sorted(os.listdir(path))
    except OSError as e:
        return f"<{e}>"


def staging(home):
    return [n for n in listing(os.path.join(home, "diff")) if n.startswith(".tmp-")]


def expect_layer_empty(home, id_):
    d = os.path.join(home, "diff", id_)
    expect(os.path.isdir(d), f"{d} is missing")
    expect(listing(d) == [], f"{d} is not empty: {listing(d)}")
    expect(staging(home) == [], f"staging debris in {home}/diff: {staging(home)}")


def changes_set(j):
    return sorted((c["Path"], c["Kind"]) for c in j["Changes"])


# ---------------------------------------------------------------- fixtures

BIG = os.urandom(300_000)  # > 64 KiB: ApplyDiff bodies are not JSON-limited
BASE = [
    D("etc"),
    F("etc/a", b"alpha\n"),
    F("etc/keep", b"keep\n"),
    D("bin"),
    F("bin/x", BIG, 0o755),
]
MID = [D("etc"), F("etc/.wh.a"), F("etc/b", b"bravo\n")]
TOP = [D("etc"), F("etc/keep", b"keep2\n"), D("usr"), F("usr/t", b"top\n")]
CH_MID = sorted([("/etc", 0), ("/etc/a", 2), ("/etc/b", 1)])
CH_TOP = sorted([("/etc", 0), ("/etc/keep", 0), ("/usr", 1), ("/usr/t", 1)])
CH_TOP_BASE = sorted([("/etc", 0), ("/etc/a", 2), ("/etc/b", 1), ("/etc/keep", 0), ("/usr", 1), ("/usr/t", 1)])
HEX1 = "3f" * 32
HEX2 = "a1" * 32


def meta(sock, id_):
    j = want_ok(call(sock, "GraphDriver.GetMetadata", {"ID": id_}), "Metadata")
    return j["Metadata"]


def refcount(sock, id_):
    m = meta(sock, id_)
    expect("RefCount" in m, f"GetMetadata has no RefCount: {m}")
    return m["RefCount"]


def create(sock, id_, parent="", rw=False):
    return want_ok(call(sock, "GraphDriver.CreateReadWrite" if rw else "GraphDriver.Create",
                        {"ID": id_, "Parent": parent, "MountLabel": "", "StorageOpt": {}}))


def apply(sock, id_, data, parent="", chunked=True, conn=None):
    body = chunks(data) if chunked else data
    return request(sock, apply_path(id_, parent), body, conn=conn, timeout=60)


def log_lines(srv, method, id_):
    rx = re.compile(rf"(^|\s)method={re.escape(method)}(\s|$)")
    rid = re.compile(rf"(^|\s)id={re.escape(id_)}(\s|$)")
    return [line for line in srv.log().splitlines() if rx.search(line) and rid.search(line)]


# ================================================================ the tests


def main():
    os.makedirs(OUTSIDE)
    with open(os.path.join(OUTSIDE, "sentinel"), "w") as f:
        f.write("sentinel\n")

    s1 = Server("s1", SOCK1)

    # ---------------------------------------------------- startup and socket
    @case("S1 starts and accepts on its --socket within 10s")
    def _():
        s1.wait_ready()

    @case("the socket is a unix socket of mode 0600")
    def _():
        st = os.stat(SOCK1)
        expect(stat.S_ISSOCK(st.st_mode), f"not a socket: mode {oct(st.st_mode)}")
        expect_eq(oct(stat.S_IMODE(st.st_mode)), oct(0o600), "permissions")

    @case("a startup line on stderr names the socket path")
    def _():
        expect(s1.wait_log(re.escape(SOCK1)), "no log line mentions " + SOCK1, *s1.log_tail())

    @case("a second serve on the live socket refuses with one line naming it; the first keeps serving")
    def _():
        ino = os.stat(SOCK1).st_ino
        p = subprocess.run([STRATA, "serve", "--socket", SOCK1], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=15)
        err = p.stderr.decode(errors="replace").strip().splitlines()
        expect(p.returncode != 0, "second server exited 0", f"stderr: {err}")
        expect(len(err) == 1, f"expected one line on stderr, got {len(err)}", *err)
        expect(SOCK1 in err[0], "the error does not name the socket", err[0])
        expect(os.path.exists(SOCK1) and os.stat(SOCK1).st_ino == ino, "the live socket file was replaced or removed")
        want_ok(call(SOCK1, "Plugin.Activate"), "Implements")

    @case("serve refuses a --socket path that is a regular file and leaves it alone")
    def _():
        path = os.path.join(TMP, "notasocket")
        with open(path, "w") as f:
            f.write("precious\n")
        p = subprocess.run([STRATA, "serve", "--socket", path], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=15)
        err = p.stderr.decode(errors="replace").strip()
        expect(p.returncode != 0, "serve exited 0 on a regular file path", err)
        expect(path in err, "the error does not name the path", err)
        with open(path) as f:
            expect_eq(f.read(), "precious\n", "file content")

    # ---------------------------------------------------- before Init
    @case("Plugin.Activate (empty body) -> Implements [GraphDriver]")
    def _():
        j = want_ok(call(SOCK1, "Plugin.Activate"), "Implements")
        expect_eq(j["Implements"], ["GraphDriver"], "Implements")

    @case("Plugin.Activate with body null -> Implements [GraphDriver]")
    def _():
        j = want_ok(call(SOCK1, "Plugin.Activate", raw=b"null"), "Implements")
        expect_eq(j["Implements"], ["GraphDriver"], "Implements")

    @case("Capabilities before Init -> ReproducesExactDiffs false")
    def _():
        j = want_ok(call(SOCK1, "GraphDriver.Capabilities"), "Capabilities")
        expect(j["Capabilities"].get("ReproducesExactDiffs") is False, f"Capabilities: {j}")

    for meth, body in [("Create", {"ID": "x", "Parent": ""}), ("Exists", {"ID": "x"}), ("Status", None),
                       ("Get", {"ID": "x", "MountLabel": ""}), ("Cleanup", None)]:
        @case(f"{meth} before Init fails, Err says not initialised")
        def _():
            want_err(call(SOCK1, "GraphDriver." + meth, body), contains=["init"])

    @case("ApplyDiff before Init fails, Err says not initialised")
    def _():
        want_err(apply(SOCK1, "x", mktar([F("f", b"1")])), contains=["init"])

    @case("Diff before Init fails non-200 with a JSON Err")
    def _():
        want_err(call(SOCK1, "GraphDriver.Diff", {"ID": "x", "Parent": ""}), contains=["init"])

    # ---------------------------------------------------- Init
    @case("Init (Opts, UIDMaps, GIDMaps null) -> 200, Home created")
    def _():
        want_ok(call(SOCK1, "GraphDriver.Init", {"Home": H1, "Opts": None, "UIDMaps": None, "GIDMaps": None}))
        for d in ("layers", "diff", "mnt"):
            expect(os.path.isdir(os.path.join(H1, d)), f"{H1}/{d} missing: {listing(H1)}")

    @case("Capabilities after Init -> ReproducesExactDiffs false")
    def _():
        j = want_ok(call(SOCK1, "GraphDriver.Capabilities"), "Capabilities")
        expect(j["Capabilities"].get("ReproducesExactDiffs") is False, f"Capabilities: {j}")

    @case("Status -> [[key, value], ...] strings, Root Dir is Home")
    def _():
        j = want_ok(call(SOCK1, "GraphDriver.Status"), "Status")
        st = j["Status"]
        expect(isinstance(st, list) and st, f"Status: {st!r}")
        for p in st:
            expect(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p), f"bad pair {p!r}")
        expect_eq(dict(st).get("Root Dir"), H1, "Root Dir")

    @case("dockerd's request shapes (omitempty): {} for Status/Capabilities/Cleanup, {\"ID\"} alone")
    def _():
        # daemon/graphdriver/proxy.go marshals graphDriverRequest with
        # `json:",omitempty"` fields: absent Parent / MountLabel, and {}.
        raw = lambda m, b: call(SOCK1, "GraphDriver." + m, raw=b)
        want_ok(raw("Create", b'{"ID":"shape1"}\n'))
        want_ok(raw("CreateReadWrite", b'{"ID":"shape2","Parent":"shape1"}\n'))
        d = want_ok(raw("Get", b'{"ID":"shape2"}\n'), "Dir")["Dir"]
        expect(overlay_at(d), "shape2 not mounted at " + d)
        want_ok(raw("Status", b"{}\n"), "Status")
        want_ok(raw("Capabilities", b"{}\n"), "Capabilities")
        want_ok(raw("Put", b'{"ID":"shape2"}\n'))
        expect(not overlay_at(d), "shape2 still mounted")
        want_ok(raw("Cleanup", b"{}\n"))
        want_ok(raw("Remove", b'{"ID":"shape2"}\n'))
        want_ok(raw("Remove", b'{"ID":"shape1"}\n'))

    # ---------------------------------------------------- Create / Exists
    @case("Create base layer -> 200; layers/base written")
    def _():
        create(SOCK1, "base")
        expect(os.path.exists(os.path.join(H1, "layers", "base")), "layers/base missing")

    # (a layer takes ApplyDiff only while nothing sits on top of it)
    base_tar, mid_tar, top_tar = mktar(BASE), mktar(MID), mktar(TOP)

    @case("ApplyDiff base with Content-Length -> Size = regular-file bytes (body > 64 KiB)")
    def _():
        expect(len(base_tar) > 65536, "fixture too small")
        j = want_ok(apply(SOCK1, "base", base_tar, chunked=False), "Size")
        expect_eq(j["Size"], tar_size(BASE), "Size")
        with open(os.path.join(H1, "diff", "base", "bin", "x"), "rb") as f:
            expect(f.read() == BIG, "diff/base/bin/x differs from the tar")

    @case("CreateReadWrite on a parent -> 200, chain file lists the parent")
    def _():
        create(SOCK1, "rw1", "base", rw=True)
        with open(os.path.join(H1, "layers", "rw1")) as f:
            expect_eq(f.read().split(), ["base"], "layers/rw1")

    @case("Exists base -> true; Exists nosuch -> false")
    def _():
        expect_eq(want_ok(call(SOCK1, "GraphDriver.Exists", {"ID": "base"}), "Exists")["Exists"], True, "base")
        expect_eq(want_ok(call(SOCK1, "GraphDriver.Exists", {"ID": "nosuch"}), "Exists")["Exists"], False, "nosuch")

    @case("Create an existing id -> 409, Err names it")
    def _():
        want_err(call(SOCK1, "GraphDriver.Create", {"ID": "base", "Parent": ""}), 409, ["base"])

    @case("Create with a StorageOpt key fails, Err names it, nothing created")
    def _():
        r = call(SOCK1, "GraphDriver.Create", {"ID": "so", "Parent": "", "StorageOpt": {"size": "10G"}})
        want_err(r, contains=["size"])
        expect(not os.path.exists(os.path.join(H1, "layers", "so")), "layers/so exists")

    @case("Create on a missing parent fails, Err names the parent")
    def _():
        want_err(call(SOCK1, "GraphDriver.Create", {"ID": "orphan", "Parent": "ghost"}), contains=["ghost"])
        expect(not os.path.exists(os.path.join(H1, "layers", "orphan")), "layers/orphan exists")

    @case("Docker's flow: 64-hex base, CreateReadWrite HEX-init and HEX on it, Get mounts, Put unmounts")
    def _():
        create(SOCK1, HEX1)
        create(SOCK1, HEX2 + "-init", HEX1, rw=True)
        create(SOCK1, HEX2, HEX2 + "-init", rw=True)
        j = want_ok(call(SOCK1, "GraphDriver.Get", {"ID": HEX2, "MountLabel": ""}), "Dir")
        expect_eq(j["Dir"], os.path.join(H1, "mnt", HEX2), "Dir")
        expect(overlay_at(j["Dir"]), "no overlay mounted at Dir")
        want_ok(call(SOCK1, "GraphDriver.Put", {"ID": HEX2}))
        expect(not overlay_at(j["Dir"]), "still mounted after the last Put")

    @case("an id of 128 bytes is accepted")
    def _():
        create(SOCK1, "L" * 128)

    before = {"home": listing(H1), "layers": listing(os.path.join(H1, "layers")), "tmp": listing(TMP),
              "diff": listing(os.path.join(H1, "diff"))}
    bad_ids = ["../x", "a/b", "", "-x", ".hidden", "x-removing", "L" * 129, "a b", "..", "x\n"]
    for bid in bad_ids:
        @case(f"Create with invalid id {bid[:20]!r}{'...' if len(bid) > 20 else ''} -> 400")
        def _():
            want_err(call(SOCK1, "GraphDriver.Create", {"ID": bid, "Parent": ""}), 400)

    @case("Get / Remove / Exists / ApplyDiff?id= with invalid ids -> 400")
    def _():
        want_err(call(SOCK1, "GraphDriver.Get", {"ID": "../x", "MountLabel": ""}), 400)
        want_err(call(SOCK1, "GraphDriver.Remove", {"ID": "a/b"}), 400)
        want_err(call(SOCK1, "GraphDriver.Exists", {"ID": "../base"}), 400)
        want_err(apply(SOCK1, "..%2Fx", mktar([F("f", b"1")])), 400)
        want_err(apply(SOCK1, "../x", mktar([F("f", b"1")])), 400)
        want_err(call(SOCK1, "GraphDriver.Create", {"ID": "ok1", "Parent": "../base"}), 400)

    @case("invalid ids touched nothing on disk (Home, layers, diff, scratch dir)")
    def _():
        expect(os.path.isdir(os.path.join(H1, "layers")), "no store at " + H1)
        now = {"home": listing(H1), "layers": listing(os.path.join(H1, "layers")), "tmp": listing(TMP),
               "diff": listing(os.path.join(H1, "diff"))}
        for k in before:
            expect_eq(now[k], before[k], k)

    # ---------------------------------------------------- malformed requests
    for desc, raw, status in [
        ("malformed JSON", b'{"ID": "x"', 400),
        ("JSON that is not an object (array)", b'["x"]', 400),
        ("JSON that is not an object (string)", b'"x"', 400),
        ("ID of the wrong type", b'{"ID": 5, "Parent": ""}', 400),
        ("Parent of the wrong type", b'{"ID": "wt", "Parent": 7}', 400),
        ("StorageOpt of the wrong type", b'{"ID": "wt", "Parent": "", "StorageOpt": "x"}', 400),
        ("no ID at all", b"{}", 400),
        ("invalid UTF-8 in a string", b'{"ID": "\xff\xfe"}', 400),
    ]:
        @case(f"Create with {desc} -> {status}")
        def _():
            want_err(call(SOCK1, "GraphDriver.Create", raw=raw), status)
            expect(not os.path.exists(os.path.join(H1, "layers", "wt")), "layers/wt was created")

    @case("Exists with ID of the wrong type -> 400")
    def _():
        want_err(call(SOCK1, "GraphDriver.Exists", raw=b'{"ID": ["base"]}'), 400)

    @case("Changes / Diff with Parent of the wrong type -> 400, logged as parent=- (no stray memory)")
    def _():
        for m in ("GraphDriver.Changes", "GraphDriver.Diff", "GraphDriver.DiffSize"):
            want_err(call(SOCK1, m, raw=b'{"ID": "wtp", "Parent": 7}'), 400, ["Parent"])
            # The line is written when the call ends, which may be just
            # after the client has the reply.
            for _ in range(50):
                lines = log_lines(s1, m, "wtp")
                if lines:
                    break
                time.sleep(0.02)
            expect(lines and re.search(r"\sparent=-\s", lines[-1]), f"{m}: log line", *lines[-1:])

    @case("Activate with a body of NUL bytes -> 400 (not taken for whitespace)")
    def _():
        want_err(call(SOCK1, "Plugin.Activate", raw=b"\0\0\0"), 400)

    @case("an HTTP/1.0 request -> 505 (no chunked encoding: a failed Diff could not be told apart)")
    def _():
        s = raw_connect(SOCK1)
        try:
            s.sendall(b"POST /Plugin.Activate HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
            r = raw_response(s)
        finally:
            s.close()
        want_err(r, 505, ["HTTP/1.0"])

    @case("an error message cut mid-character is still a JSON reply (multibyte StorageOpt key)")
    def _():
        r = call(SOCK1, "GraphDriver.Create", {"ID": "mb", "StorageOpt": {"\u00e9" * 600: "1"}})
        want_err(r, 400)
        expect(not os.path.exists(os.path.join(H1, "layers", "mb")), "layers/mb was created")

    @case("a file name that is not UTF-8: Changes -> 200, the bad byte as U+FFFD (as Go shows it)")
    def _():
        create(SOCK1, "latin1")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                          errors="surrogateescape") as tf:
            ti = tarfile.TarInfo(b"caf\xe9.txt".decode("utf-8", "surrogateescape"))
            ti.size, ti.mtime = 2, MTIME
            tf.addfile(ti, io.BytesIO(b"ok"))
        want_ok(apply(SOCK1, "latin1", buf.getvalue()), "Size")
        expect(os.path.exists(os.path.join(H1.encode(), b"diff", b"latin1", b"caf\xe9.txt")), "file not on disk")
        j = want_ok(call(SOCK1, "GraphDriver.Changes", {"ID": "latin1"}), "Changes")
        expect_eq([c["Path"] for c in j["Changes"]], ["/caf\ufffd.txt"], "Changes paths")
        want_ok(call(SOCK1, "GraphDriver.Remove", {"ID": "latin1"}))

    @case("unknown method /GraphDriver.Nope -> 404 with Err")
    def _():
        want_err(call(SOCK1, "GraphDriver.Nope", {"ID": "base"}), 404)

    @case("unknown method /Foo.Bar -> 404 with Err")
    def _():
        want_err(call(SOCK1, "Foo.Bar"), 404)

    @case("GET /Plugin.Activate -> 405 with Err")
    def _():
        want_err(request(SOCK1, "/Plugin.Activate", None, method="GET"), 405)

    @case("PUT /GraphDriver.Exists -> 405 with Err")
    def _():
        want_err(request(SOCK1, "/GraphDriver.Exists", b'{"ID":"base"}', method="PUT"), 405)

    @case("JSON body of exactly 64 KiB is accepted")
    def _():
        body = b'{"ID":"base"}'
        body += b" " * (65536 - len(body))
        expect_eq(len(body), 65536, "body length")
        expect_eq(want_ok(call(SOCK1, "GraphDriver.Exists", raw=body), "Exists")["Exists"], True, "Exists")

    @case("JSON body of 64 KiB + 1 -> 413")
    def _():
        body = b'{"ID":"base"}'
        body += b" " * (65537 - len(body))
        want_err(call(SOCK1, "GraphDriver.Exists", raw=body), 413)

    @case("chunked JSON body over 64 KiB -> 413")
    def _():
        body = b'{"ID":"base"}' + b" " * 70000
        want_err(request(SOCK1, "/GraphDriver.Exists", chunks(body, 4096)), 413)

    # ---------------------------------------------------- ApplyDiff, the chain
    @case("Create mid on base, ApplyDiff chunked with parent=base -> Size")
    def _():
        create(SOCK1, "mid", "base")
        j = want_ok(apply(SOCK1, "mid", mid_tar, "base", chunked=True), "Size")
        expect_eq(j["Size"], tar_size(MID), "Size")
        wh = os.lstat(os.path.join(H1, "diff", "mid", "etc", "a"))
        expect(stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0, "etc/.wh.a did not become an overlay whiteout")

    @case("Create top on mid, ApplyDiff chunked -> Size; 3-layer chain")
    def _():
        create(SOCK1, "top", "mid")
        j = want_ok(apply(SOCK1, "top", top_tar, "mid"), "Size")
        expect_eq(j["Size"], tar_size(TOP), "Size")
        with open(os.path.join(H1, "layers", "top")) as f:
            expect_eq(f.read().split(), ["mid", "base"], "layers/top")

    @case("ApplyDiff into a layer that already has content fails, Err names it, content kept")
    def _():
        want_err(apply(SOCK1, "top", top_tar, "mid"), contains=["top"])
        with open(os.path.join(H1, "diff", "top", "usr", "t"), "rb") as f:
            expect_eq(f.read(), b"top\n", "usr/t")

    @case("ApplyDiff into an empty layer that has layers on top fails; it stays empty")
    def _():
        want_err(apply(SOCK1, HEX1, mktar([F("late", b"1")])), contains=[HEX1])
        expect_layer_empty(H1, HEX1)

    @case("ApplyDiff of a missing layer -> 404, Err names it")
    def _():
        want_err(apply(SOCK1, "ghost", top_tar), 404, ["ghost"])

    @case("ApplyDiff whose parent= is not the layer's parent fails; layer stays empty")
    def _():
        create(SOCK1, "pm", "base")
        want_err(apply(SOCK1, "pm", top_tar, "mid"))
        expect_layer_empty(H1, "pm")

    @case("ApplyDiff with parent= empty into a layer that has a parent -> 400 (empty means base)")
    def _():
        create(SOCK1, "np", "base")
        want_err(request(SOCK1, "/GraphDriver.ApplyDiff?id=np&parent=", mktar([F("n", b"np")])), 400,
                 ["np", "base"])
        expect_layer_empty(H1, "np")

    @case("ApplyDiff without parent= into a layer that has a parent -> 200 (not checked)")
    def _():
        j = want_ok(request(SOCK1, "/GraphDriver.ApplyDiff?id=np", mktar([F("n", b"np")])), "Size")
        expect_eq(j["Size"], 2, "Size")

    @case("ApplyDiff without id= -> 400")
    def _():
        want_err(request(SOCK1, "/GraphDriver.ApplyDiff", mktar([F("f", b"1")])), 400)

    # ---------------------------------------------------- Get / Put
    @case("Get base layer -> Dir = Home/diff/base, nothing mounted, RefCount 1")
    def _():
        j = want_ok(call(SOCK1, "GraphDriver.Get", {"ID": "base", "MountLabel": ""}), "Dir")
        expect_eq(j["Dir"], os.path.join(H1, "diff", "base"), "Dir")
        expect(not overlays_under(H1), f"overlays mounted: {overlays_under(H1)}")
        expect_eq(refcount(SOCK1, "base"), "1", "RefCount")

    @case("Put base -> RefCount 0")
    def _():
        want_ok(call(SOCK1, "GraphDriver.Put", {"ID": "base"}))
        expect_eq(refcount(SOCK1, "base"), "0", "RefCount")

    merged = os.path.join(H1, "mnt", "top")

    @case("Get top -> Dir = Home/mnt/top, an overlay showing the 3 layers merged")
    def _():
        j = want_ok(call(SOCK1, "GraphDriver.Get", {"ID": "top", "MountLabel": ""}), "Dir")
        expect_eq(j["Dir"], merged, "Dir")
        expect(overlay_at(merged), "no overlay at " + merged)
        snap = snapshot(merged)
        expect_eq(sorted(snap), sorted(["bin", "bin/x", "etc", "etc/b", "etc/keep", "usr", "usr/t"]), "merged names")
        with open(os.path.join(merged, "etc", "keep"), "rb") as f:
            expect_eq(f.read(), b"keep2\n", "etc/keep (top's)")
        expect_eq(refcount(SOCK1, "top"), "1", "RefCount")

    @case("a second Get top -> same Dir, RefCount 2, one mount")
    def _():
        j = want_ok(call(SOCK1, "GraphDriver.Get", {"ID": "top", "MountLabel": ""}), "Dir")
        expect_eq(j["Dir"], merged, "Dir")
        expect_eq(refcount(SOCK1, "top"), "2", "RefCount")
        expect_eq(len([m for m, _ in mounts() if m == merged]), 1, "mounts at Dir")

    @case("GetMetadata top -> Metadata of strings, Parent mid, Mounted true")
    def _():
        m = meta(SOCK1, "top")
        expect(isinstance(m, dict) and m, f"Metadata: {m!r}")
        expect(all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()), f"non-string values: {m}")
        expect_eq(m.get("Parent"), "mid", "Parent")
        expect_eq(m.get("Mounted"), "true", "Mounted")

    @case("Put top -> still mounted, RefCount 1")
    def _():
        want_ok(call(SOCK1, "GraphDriver.Put", {"ID": "top"}))
        expect(overlay_at(merged), "unmounted after the first of two Puts")
        expect_eq(refcount(SOCK1, "top"), "1", "RefCount")

    @case("last Put top -> unmounted, RefCount 0")
    def _():
        want_ok(call(SOCK1, "GraphDriver.Put", {"ID": "top"}))
        expect(not overlay_at(merged), "still mounted after the last Put")
        expect_eq(refcount(SOCK1, "top"), "0", "RefCount")

    @case("Put on a layer not in use -> 200, logged as warn")
    def _():
        want_ok(call(SOCK1, "GraphDriver.Put", {"ID": "top"}))
        line = s1.wait_log(r"level=warn\b.*method=GraphDriver\.Put\b.*\bid=top\b|"
                           r"method=GraphDriver\.Put\b.*\bid=top\b.*level=warn\b")
        expect(line, "no level=warn line for that Put", *s1.log_tail())

    @case("Get / GetMetadata of a missing layer -> 404, Err names it")
    def _():
        want_err(call(SOCK1, "GraphDriver.Get", {"ID": "nosuch", "MountLabel": ""}), 404, ["nosuch"])
        want_err(call(SOCK1, "GraphDriver.GetMetadata", {"ID": "nosuch"}), 404, ["nosuch"])

    # ---------------------------------------------------- Changes / DiffSize / Diff
    @case("Changes mid vs base -> /etc modified, /etc/a deleted, /etc/b added")
    def _():
        j = want_ok(call(SOCK1, "GraphDriver.Changes", {"ID": "mid", "Parent": "base"}), "Changes")
        expect_eq(changes_set(j), CH_MID, "Changes")

    @case("Changes top vs mid (direct parent)")
    def _():
        j = want_ok(call(SOCK1, "GraphDriver.Changes", {"ID": "top", "Parent": "mid"}), "Changes")
        expect_eq(changes_set(j), CH_TOP, "Changes")

    @case("Changes top vs base (naive path) and nothing left mounted")
    def _():
        j = want_ok(call(SOCK1, "GraphDriver.Changes", {"ID": "top", "Parent": "base"}), "Changes")
        expect_eq(changes_set(j), CH_TOP_BASE, "Changes")
        expect(not overlays_under(H1), f"left mounted: {overlays_under(H1)}")

    @case("DiffSize mid/base, top/mid, base/'' -> regular-file bytes")
    def _():
        for id_, par, ents in [("mid", "base", MID), ("top", "mid", TOP), ("base", "", BASE)]:
            j = want_ok(call(SOCK1, "GraphDriver.DiffSize", {"ID": id_, "Parent": par}), "Size")
            expect_eq(j["Size"], tar_size(ents), f"DiffSize {id_}")

    @case("Changes / DiffSize of a missing layer -> 404, Err names it")
    def _():
        want_err(call(SOCK1, "GraphDriver.Changes", {"ID": "nosuch", "Parent": ""}), 404, ["nosuch"])
        want_err(call(SOCK1, "GraphDriver.DiffSize", {"ID": "nosuch", "Parent": ""}), 404, ["nosuch"])

    diffs = {}

    @case("Diff mid/base -> 200, a tar with etc/b and the whiteout etc/.wh.a")
    def _():
        r = request(SOCK1, "/GraphDriver.Diff", json.dumps({"ID": "mid", "Parent": "base"}).encode(), timeout=60)
        expect_eq(r.status, 200, "status")
        ms = tar_members(r.body)
        expect_eq(sorted(ms), ["etc", "etc/.wh.a", "etc/b"], "entries")
        expect_eq(tar_file(r.body, "etc/b"), b"bravo\n", "etc/b")
        diffs["mid"] = r.body

    @case("Diff top/mid and base/'' -> tars with their files")
    def _():
        r = request(SOCK1, "/GraphDriver.Diff", json.dumps({"ID": "top", "Parent": "mid"}).encode(), timeout=60)
        expect_eq(r.status, 200, "status top")
        expect_eq(sorted(tar_members(r.body)), ["etc", "etc/keep", "usr", "usr/t"], "top entries")
        diffs["top"] = r.body
        r = request(SOCK1, "/GraphDriver.Diff", json.dumps({"ID": "base", "Parent": ""}).encode(), timeout=60)
        expect_eq(r.status, 200, "status base")
        expect(tar_file(r.body, "bin/x") == BIG, "bin/x differs")
        diffs["base"] = r.body

    @case("Diff of the same layer twice gives the same bytes")
    def _():
        r = request(SOCK1, "/GraphDriver.Diff", json.dumps({"ID": "mid", "Parent": "base"}).encode(), timeout=60)
        expect_eq(r.status, 200, "status")
        expect(r.body == diffs.get("mid"), "the two tars differ")

    @case("Diff of a missing layer -> 404 with a JSON Err naming it")
    def _():
        want_err(call(SOCK1, "GraphDriver.Diff", {"ID": "nosuch", "Parent": ""}), 404, ["nosuch"])

    @case("round trip: Diff(base) -> ApplyDiff into base2 (Content-Length) -> same Size, same files")
    def _():
        create(SOCK1, "base2")
        j = want_ok(apply(SOCK1, "base2", diffs["base"], chunked=False), "Size")
        expect_eq(j["Size"], tar_size(BASE), "Size")
        expect_eq(snapshot(os.path.join(H1, "diff", "base2")), snapshot(os.path.join(H1, "diff", "base")), "trees")

    @case("round trip: Diff(mid) -> ApplyDiff into mid2 on base2 (chunked); Changes match")
    def _():
        create(SOCK1, "mid2", "base2")
        j = want_ok(apply(SOCK1, "mid2", diffs["mid"], "base2"), "Size")
        expect_eq(j["Size"], tar_size(MID), "Size")
        j = want_ok(call(SOCK1, "GraphDriver.Changes", {"ID": "mid2", "Parent": "base2"}), "Changes")
        expect_eq(changes_set(j), CH_MID, "Changes")

    @case("round trip: Diff(top) -> top2 on mid2; merged views of top and top2 are equal")
    def _():
        create(SOCK1, "top2", "mid2")
        want_ok(apply(SOCK1, "top2", diffs["top"], "mid2"), "Size")
        a = want_ok(call(SOCK1, "GraphDriver.Get", {"ID": "top", "MountLabel": ""}), "Dir")["Dir"]
        b = want_ok(call(SOCK1, "GraphDriver.Get", {"ID": "top2", "MountLabel": ""}), "Dir")["Dir"]
        try:
            sa, sb = snapshot(a), snapshot(b)
        finally:
            want_ok(call(SOCK1, "GraphDriver.Put", {"ID": "top"}))
            want_ok(call(SOCK1, "GraphDriver.Put", {"ID": "top2"}))
        expect(sa and sa == sb, "merged views differ", f"top:  {sorted(sa.items())[:8]}",
               f"top2: {sorted(sb.items())[:8]}")
        j = want_ok(call(SOCK1, "GraphDriver.Changes", {"ID": "top2", "Parent": "mid2"}), "Changes")
        expect_eq(changes_set(j), CH_TOP, "Changes top2")

    @case("an error after Diff started streaming aborts the body (never a clean end)")
    def _():
        cands = ["/sys/bus/pci/rescan", "/sys/fs/xfs/stats/stats_clear", "/sys/class/zram-control/hot_remove"]
        src = next((c for c in cands if os.path.exists(c)), None)
        if src is None:
            raise Fail("no write-only sysfs file to make a read fail")
        create(SOCK1, "brk")
        want_ok(apply(SOCK1, "brk", mktar([F("a.bin", os.urandom(8 << 20))])), "Size")
        target = os.path.join(H1, "diff", "brk", "zz")
        open(target, "w").close()
        subprocess.run(["mount", "--bind", src, target], check=True, timeout=10)
        try:
            c = UnixConn(SOCK1, 30)
            try:
                c.request("POST", "/GraphDriver.Diff", body=json.dumps({"ID": "brk", "Parent": ""}).encode(),
                          headers={"Accept": CT})
                resp = c.getresponse()
                if resp.status != 200:
                    # Acceptable only as an error known before the first byte.
                    want_err(Reply(resp.status, resp.getheaders(), resp.read()))
                    print(f"# (the server answered {resp.status} before streaming)")
                    return
                try:
                    body = resp.read()
                except (http.client.IncompleteRead, OSError, http.client.HTTPException):
                    return  # aborted: what the contract asks
                raise Fail(f"the body ended cleanly ({len(body)} bytes) although reading zz must fail")
            finally:
                c.close()
        finally:
            subprocess.run(["umount", "-l", target], timeout=10)

    # ---------------------------------------------------- hostile and truncated tars
    def hostile(desc, lid, entries, names, aims=()):
        @case(f"hostile tar ({desc}) -> non-200 naming the entry, layer empty, nothing outside")
        def _():
            snap_out = snapshot(OUTSIDE)
            tmp_before = listing(TMP)
            create(SOCK1, lid)
            want_err(apply(SOCK1, lid, mktar(entries)), contains=names)
            expect_layer_empty(H1, lid)
            expect_eq(snapshot(OUTSIDE), snap_out, "outside dir")
            expect_eq(listing(TMP), tmp_before, "scratch dir")
            for p in aims:
                expect(not os.path.lexists(p), f"{p} was created")

    hostile("../evil", "h1", [F("ok", b"1"), F("../evil", b"x")], ["evil"],
            [os.path.join(H1, "diff", "evil"), os.path.join(H1, "evil")])
    hostile("../../../evil3 reaching the scratch dir", "h2", [F("../../../evil3", b"x")], ["evil3"],
            [os.path.join(TMP, "evil3")])
    hostile("absolute name", "h3", [F(os.path.join(OUTSIDE, "abs"), b"x")], ["abs"], [os.path.join(OUTSIDE, "abs")])
    hostile("absolute symlink, then a file through it", "h4", [S("lnk", OUTSIDE), F("lnk/pwned", b"x")],
            ["lnk"], [os.path.join(OUTSIDE, "pwned")])
    hostile("relative symlink up, then a file through it", "h5",
            [S("up", "../../.."), F("up/evil5", b"x")], ["up"], [os.path.join(TMP, "evil5")])
    hostile("hardlink to a file outside", "h6", [H("hl", "../../../outside/sentinel")], ["hl"])

    @case("truncated tar -> non-200 naming the entry, layer empty")
    def _():
        create(SOCK1, "tr")
        data = mktar([D("d"), F("d/data.bin", os.urandom(10000))])
        want_err(apply(SOCK1, "tr", data[: 512 * 3 + 3000]), contains=["data.bin"])
        expect_layer_empty(H1, "tr")

    @case("after failed applies the layer takes a good ApplyDiff")
    def _():
        j = want_ok(apply(SOCK1, "tr", mktar([F("good", b"good\n")])), "Size")
        expect_eq(j["Size"], 5, "Size")
        expect_eq(listing(os.path.join(H1, "diff", "tr")), ["good"], "diff/tr")

    # ---------------------------------------------------- disconnect mid-upload
    def disconnect(desc, lid, chunked):
        @case(f"client disconnects mid-upload ({desc}): layer stays empty, no staging left")
        def _():
            create(SOCK1, lid)
            data = mktar([F("f1", os.urandom(200_000)), F("f2", os.urandom(200_000))])
            s = raw_connect(SOCK1)
            try:
                s.sendall(upload_head(lid, chunked=chunked, length=len(data)))
                part = data[:150_000]
                s.sendall(chunk(part) if chunked else part)
                time.sleep(0.5)
            finally:
                s.close()
            # The server notices, fails the call (one log line) and cleans up.
            s1.wait_log(rf"method=GraphDriver\.ApplyDiff\b.*\bid={lid}\b", timeout=10)
            end = time.monotonic() + 10
            while staging(H1) and time.monotonic() < end:
                time.sleep(0.1)
            expect_layer_empty(H1, lid)

        @case(f"... and the layer then takes a good ApplyDiff ({desc})")
        def _():
            j = want_ok(apply(SOCK1, lid, mktar([F("g", b"12345")]), chunked=chunked), "Size")
            expect_eq(j["Size"], 5, "Size")

    disconnect("chunked", "dc1", True)
    disconnect("Content-Length", "dc2", False)

    # ---------------------------------------------------- keep-alive
    @case("keep-alive: Activate, Create, ApplyDiff (chunked), Exists, Diff, Get, Put, Remove on one connection")
    def _():
        c = UnixConn(SOCK1)
        try:
            want_ok(request(SOCK1, "/Plugin.Activate", b"", conn=c), "Implements")
            sock0 = c.sock
            expect(sock0 is not None, "connection closed after the first reply")
            steps = [
                ("Create", lambda: want_ok(call(SOCK1, "GraphDriver.Create", {"ID": "ka", "Parent": "base"}, conn=c))),
                ("ApplyDiff", lambda: want_ok(apply(SOCK1, "ka", mktar([F("k", b"ka")]), "base", conn=c), "Size")),
                ("Exists", lambda: expect(want_ok(call(SOCK1, "GraphDriver.Exists", {"ID": "ka"}, conn=c),
                                                  "Exists")["Exists"] is True, "Exists false")),
                ("Diff", lambda: expect_eq(tar_file(request(
                    SOCK1, "/GraphDriver.Diff", json.dumps({"ID": "ka", "Parent": "base"}).encode(),
                    conn=c).body, "k"), b"ka", "Diff k")),
                ("Get", lambda: want_ok(call(SOCK1, "GraphDriver.Get", {"ID": "ka", "MountLabel": ""}, conn=c), "Dir")),
                ("Put", lambda: want_ok(call(SOCK1, "GraphDriver.Put", {"ID": "ka"}, conn=c))),
                ("Remove", lambda: want_ok(call(SOCK1, "GraphDriver.Remove", {"ID": "ka"}, conn=c))),
            ]
            for name, fn in steps:
                fn()
                expect(c.sock is sock0, f"the server closed the connection after {name}")
        finally:
            c.close()

    # ---------------------------------------------------- stuck clients
    @case("a client stuck mid request line does not block calls on other connections")
    def _():
        s = raw_connect(SOCK1)
        try:
            s.sendall(b"POST /Plugin.Act")
            time.sleep(0.2)
            r = call(SOCK1, "GraphDriver.Exists", {"ID": "base"}, timeout=5)
            want_ok(r, "Exists")
            expect(r.elapsed < 5, f"took {r.elapsed:.2f}s")
        finally:
            s.close()

    @case("10 stuck clients (headers half sent) do not block calls on other connections")
    def _():
        socks = []
        try:
            for i in range(10):
                s = raw_connect(SOCK1)
                s.sendall(b"POST /GraphDriver.Exists HTTP/1.1\r\nHost: x\r\nContent-Len")
                socks.append(s)
            time.sleep(0.2)
            t0 = time.monotonic()
            for _ in range(3):
                want_ok(call(SOCK1, "GraphDriver.Status", timeout=5), "Status")
            expect(time.monotonic() - t0 < 5, "calls were slow")
        finally:
            for s in socks:
                s.close()

    slow_entries = [F("s1", os.urandom(100_000)), F("s2", os.urandom(100_000))]
    slow_tar = mktar(slow_entries)
    stalled = {}

    @case("an ApplyDiff upload stalled mid-body does not block Create/ApplyDiff/Get/Put of other ids")
    def _():
        create(SOCK1, "slow")
        s = raw_connect(SOCK1)
        stalled["sock"] = s
        s.sendall(upload_head("slow") + chunk(slow_tar[:120_000]))
        time.sleep(0.3)
        t0 = time.monotonic()
        create(SOCK1, "par1", "base")
        want_ok(call(SOCK1, "GraphDriver.Exists", {"ID": "par1"}, timeout=5), "Exists")
        want_ok(request(SOCK1, apply_path("par1", "base"), chunks(mktar([F("p", b"p")])), timeout=5), "Size")
        d = want_ok(call(SOCK1, "GraphDriver.Get", {"ID": "par1", "MountLabel": ""}, timeout=5), "Dir")["Dir"]
        expect(overlay_at(d), "par1 not mounted")
        want_ok(call(SOCK1, "GraphDriver.Put", {"ID": "par1"}, timeout=5))
        expect(time.monotonic() - t0 < 8, f"calls took {time.monotonic() - t0:.1f}s")

    @case("... the stalled upload then completes -> 200 with the right Size and files")
    def _():
        s = stalled.pop("sock")
        try:
            s.sendall(chunk(slow_tar[120_000:]) + b"0\r\n\r\n")
            r = raw_response(s)
        finally:
            s.close()
        j = want_ok(r, "Size")
        expect_eq(j["Size"], tar_size(slow_entries), "Size")
        expect_eq(listing(os.path.join(H1, "diff", "slow")), ["s1", "s2"], "diff/slow")

    # ---------------------------------------------------- parallel calls
    @case("8 threads, each Create + ApplyDiff + Get + Put + Remove of its own id, in parallel")
    def _():
        errors = []

        def worker(i):
            try:
                lid = f"par-{i}"
                create(SOCK1, lid, "base")
                want_ok(apply(SOCK1, lid, mktar([F(f"f{i}", os.urandom(50_000 + i))]), "base"), "Size")
                d = want_ok(call(SOCK1, "GraphDriver.Get", {"ID": lid, "MountLabel": ""}), "Dir")["Dir"]
                expect(os.path.isfile(os.path.join(d, f"f{i}")) and os.path.isfile(os.path.join(d, "etc/keep")),
                       f"{lid}: merged view incomplete")
                want_ok(call(SOCK1, "GraphDriver.Put", {"ID": lid}))
                want_ok(call(SOCK1, "GraphDriver.Remove", {"ID": lid}))
            except Fail as e:
                errors.append(f"worker {i}: " + " | ".join(e.lines))
            except Exception as e:
                errors.append(f"worker {i}: {e!r}")

        ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        expect(not any(t.is_alive() for t in ts), "workers still running after 60s")
        expect(not errors, *errors)
        expect(not [n for n in listing(os.path.join(H1, "layers")) if n.startswith("par-")], "layers left")

    @case("8 threads x 15 Get/Put of the same layer: every call 200, ends RefCount 0 and unmounted")
    def _():
        errors = []

        def worker(i):
            c = UnixConn(SOCK1)
            try:
                for _ in range(15):
                    want_ok(call(SOCK1, "GraphDriver.Get", {"ID": "mid", "MountLabel": ""}, conn=c), "Dir")
                    want_ok(call(SOCK1, "GraphDriver.Put", {"ID": "mid"}, conn=c))
            except Fail as e:
                errors.append(f"worker {i}: " + " | ".join(e.lines))
            except Exception as e:
                errors.append(f"worker {i}: {e!r}")
            finally:
                c.close()

        ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(90)
        expect(not any(t.is_alive() for t in ts), "workers still running after 90s")
        expect(not errors, *errors[:8])
        expect_eq(refcount(SOCK1, "mid"), "0", "RefCount")
        expect(not overlay_at(os.path.join(H1, "mnt", "mid")), "mid still mounted")

    # ---------------------------------------------------- Remove, Cleanup
    @case("Remove of a layer that is a parent -> 409, Err names it, layer kept")
    def _():
        want_err(call(SOCK1, "GraphDriver.Remove", {"ID": "base"}), 409, ["base"])
        expect_eq(want_ok(call(SOCK1, "GraphDriver.Exists", {"ID": "base"}), "Exists")["Exists"], True, "Exists")

    @case("Remove of a leaf -> 200; Exists false, its dirs gone, no -removing left")
    def _():
        want_ok(call(SOCK1, "GraphDriver.Remove", {"ID": "rw1"}))
        expect_eq(want_ok(call(SOCK1, "GraphDriver.Exists", {"ID": "rw1"}), "Exists")["Exists"], False, "Exists")
        for d in ("layers", "diff", "mnt"):
            left = [n for n in listing(os.path.join(H1, d)) if n.startswith("rw1")]
            expect(not left, f"{d}/ still holds {left}")

    @case("Remove of a missing layer -> 404, Err names it")
    def _():
        want_err(call(SOCK1, "GraphDriver.Remove", {"ID": "rw1"}), 404, ["rw1"])

    @case("Cleanup -> 200 and unmounts every union; a later Get mounts again")
    def _():
        want_ok(call(SOCK1, "GraphDriver.Get", {"ID": "top", "MountLabel": ""}), "Dir")
        want_ok(call(SOCK1, "GraphDriver.Get", {"ID": "mid2", "MountLabel": ""}), "Dir")
        expect(len(overlays_under(H1)) == 2, f"expected 2 overlays, have {overlays_under(H1)}")
        want_ok(call(SOCK1, "GraphDriver.Cleanup"))
        expect(not overlays_under(H1), f"still mounted: {overlays_under(H1)}")
        d = want_ok(call(SOCK1, "GraphDriver.Get", {"ID": "top", "MountLabel": ""}), "Dir")["Dir"]
        expect(overlay_at(d), "Get after Cleanup did not mount")
        want_ok(call(SOCK1, "GraphDriver.Put", {"ID": "top"}))
        expect(not overlay_at(d), "still mounted after the Put")

    # ---------------------------------------------------- logs
    ts_rx = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z\s"

    @case("log: one line per call (3 Exists of id logcount -> 3 lines)")
    def _():
        for _ in range(3):
            want_ok(call(SOCK1, "GraphDriver.Exists", {"ID": "logcount"}), "Exists")
        end = time.monotonic() + 3
        while len(log_lines(s1, "GraphDriver.Exists", "logcount")) < 3 and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.2)
        got = log_lines(s1, "GraphDriver.Exists", "logcount")
        expect_eq(len(got), 3, "lines")

    @case("log: a Get line has a UTC timestamp, level=info, method, id, status=200, duration")
    def _():
        lines = log_lines(s1, "GraphDriver.Get", "top")
        expect(lines, "no Get line for id=top", *s1.log_tail())
        line = lines[-1]
        expect(re.search(ts_rx, line), "no timestamp at the start", line)
        for rx in (r"\blevel=info\b", r"\bstatus=200\b", r"\bduration=\d+(\.\d+)?(ns|us|µs|ms|s)\b"):
            expect(re.search(rx, line), f"no {rx}", line)

    @case("log: a failed call is logged at error/warn level with its status and err=\"...\"")
    def _():
        want_err(call(SOCK1, "GraphDriver.Get", {"ID": "nolayer", "MountLabel": ""}), 404)
        end = time.monotonic() + 3
        while not log_lines(s1, "GraphDriver.Get", "nolayer") and time.monotonic() < end:
            time.sleep(0.05)
        lines = log_lines(s1, "GraphDriver.Get", "nolayer")
        expect(len(lines) == 1, f"{len(lines)} lines for the call", *lines)
        for rx in (r"\blevel=(error|warn)\b", r"\bstatus=404\b", r'\berr="(\\.|[^"\\])*nolayer'):
            expect(re.search(rx, lines[0]), f"no {rx}", lines[0])

    @case("log: successful ApplyDiff calls (client closes after reading the reply) are level=info without err")
    def _():
        lines = [x for x in s1.log().splitlines() if re.search(r"method=GraphDriver\.ApplyDiff\b", x)
                 and re.search(r"\bstatus=200\b", x)]
        expect(len(lines) >= 10, f"only {len(lines)} successful ApplyDiff lines")
        bad = [x for x in lines if not re.search(r"\blevel=info\b", x) or re.search(r"\berr=", x)]
        expect(not bad, f"{len(bad)} of {len(lines)} successful ApplyDiff calls logged as failures:", *bad[:6])

    @case("log: ApplyDiff lines name the id; Create lines the parent")
    def _():
        expect(log_lines(s1, "GraphDriver.ApplyDiff", "mid2"), "no ApplyDiff id=mid2 line")
        lines = log_lines(s1, "GraphDriver.Create", "mid2")
        expect(lines and re.search(r"\bparent=base2\b", lines[0]), "no Create id=mid2 parent=base2 line", *lines)

    # ---------------------------------------------------- S2: Init options, uid maps, log level
    s2 = Server("s2", SOCK2, ["--log-level", "warn", "--grace", "5"])
    umap = [{"container_id": 0, "host_id": 100000, "size": 65536}]

    @case("S2 (--log-level warn --grace 5) starts")
    def _():
        s2.wait_ready()

    @case("Init with an unknown option fails, Err names it")
    def _():
        want_err(call(SOCK2, "GraphDriver.Init", {"Home": H2, "Opts": ["nosuchopt=1"], "UIDMaps": None,
                                                   "GIDMaps": None}), contains=["nosuchopt"])

    @case("Init with mountapi=bogus fails, Err names the option or value")
    def _():
        err = want_err(call(SOCK2, "GraphDriver.Init", {"Home": H2, "Opts": ["mountapi=bogus"]}))
        expect("mountapi" in err or "bogus" in err, "Err names neither mountapi nor bogus", err)

    @case("Init with Home of the wrong type -> 400")
    def _():
        want_err(call(SOCK2, "GraphDriver.Init", {"Home": 5, "Opts": []}), 400)

    @case("Init with Opts of the wrong type -> 400")
    def _():
        want_err(call(SOCK2, "GraphDriver.Init", {"Home": H2, "Opts": "mountapi=auto"}), 400)

    @case("after failed Inits the driver is still not initialised")
    def _():
        want_err(call(SOCK2, "GraphDriver.Exists", {"ID": "x"}), contains=["init"])

    @case("Init with strata.mountapi=legacy, engine=overlay and UID/GID maps -> 200")
    def _():
        want_ok(call(SOCK2, "GraphDriver.Init", {"Home": H2, "Opts": ["strata.mountapi=legacy", "engine=overlay"],
                                                 "UIDMaps": umap, "GIDMaps": umap}))

    @case("Status reports the legacy mount API")
    def _():
        st = dict(want_ok(call(SOCK2, "GraphDriver.Status"), "Status")["Status"])
        expect_eq(st.get("Root Dir"), H2, "Root Dir")
        expect("legacy" in " ".join(st.values()).lower(), f"no 'legacy' in Status: {st}")

    uid_entries = [D("d"), F("d/root.txt", b"r", uid=0, gid=0), F("user.txt", b"u", uid=1000, gid=1001)]

    @case("ApplyDiff with UID maps shifts owners to host ids")
    def _():
        create(SOCK2, "u1")
        want_ok(apply(SOCK2, "u1", mktar(uid_entries)), "Size")
        st = os.lstat(os.path.join(H2, "diff", "u1", "d", "root.txt"))
        expect_eq((st.st_uid, st.st_gid), (100000, 100000), "owner of d/root.txt")
        st = os.lstat(os.path.join(H2, "diff", "u1", "user.txt"))
        expect_eq((st.st_uid, st.st_gid), (101000, 101001), "owner of user.txt")

    @case("Diff with UID maps shifts owners back to container ids")
    def _():
        r = request(SOCK2, "/GraphDriver.Diff", json.dumps({"ID": "u1", "Parent": ""}).encode())
        expect_eq(r.status, 200, "status")
        ms = tar_members(r.body)
        expect_eq((ms["d/root.txt"].uid, ms["d/root.txt"].gid), (0, 0), "d/root.txt owner")
        expect_eq((ms["user.txt"].uid, ms["user.txt"].gid), (1000, 1001), "user.txt owner")

    @case("ApplyDiff with an owner outside the map fails, naming the entry; layer empty")
    def _():
        create(SOCK2, "u9")
        want_err(apply(SOCK2, "u9", mktar([F("far.txt", b"f", uid=70000)])), contains=["far.txt"])
        expect_layer_empty(H2, "u9")

    @case("legacy mount API: Get of a 2-layer chain mounts an overlay showing both")
    def _():
        create(SOCK2, "u2", "u1")
        d = want_ok(call(SOCK2, "GraphDriver.Get", {"ID": "u2", "MountLabel": ""}), "Dir")["Dir"]
        expect_eq(d, os.path.join(H2, "mnt", "u2"), "Dir")
        expect(overlay_at(d), "not mounted")
        expect(os.path.isfile(os.path.join(d, "d", "root.txt")), "d/root.txt not visible")

    @case("--log-level warn: no info lines for calls, but failed calls are logged")
    def _():
        lines = [line for line in s2.log().splitlines() if "method=" in line]
        info = [line for line in lines if re.search(r"\blevel=info\b", line)]
        expect(not info, "info lines logged:", *info[:5])
        expect(any(re.search(r"method=GraphDriver\.Init\b", x) and re.search(r"\blevel=(warn|error)\b", x)
                   for x in lines), "the failed Inits were not logged", *s2.log_tail())

    @case("S2 SIGTERM with a stuck client and a stalled upload: exits 0 within 12s (--grace 5)")
    def _():
        create(SOCK2, "u3")
        stuck = raw_connect(SOCK2)
        up = raw_connect(SOCK2)
        try:
            stuck.sendall(b"POST /GraphDr")
            up.sendall(upload_head("u3") + chunk(slow_tar[:100_000]))
            time.sleep(0.3)
            t0 = time.monotonic()
            rc = s2.signal_and_wait(signal.SIGTERM, 12)
            expect(rc is not None, "still running 12s after SIGTERM", *s2.log_tail())
            expect_eq(rc, 0, "exit code")
            print(f"# (S2 exited {time.monotonic() - t0:.2f}s after SIGTERM)")
        finally:
            stuck.close()
            up.close()

    @case("... S2 left no mounts under its Home, removed its socket, left u3 empty")
    def _():
        expect(not mounts_under(H2), f"mounted: {mounts_under(H2)}")
        expect(not os.path.lexists(SOCK2), "socket file still there")
        expect_layer_empty(H2, "u3")

    # ---------------------------------------------------- S3: stale socket, SIGINT
    @case("a stale socket file (nothing listening) is replaced; S3 serves Activate")
    def _():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(SOCK3)
        s.close()
        expect(stat.S_ISSOCK(os.stat(SOCK3).st_mode), "fixture: no stale socket")
        s3 = Server("s3", SOCK3)
        s3.wait_ready()
        j = want_ok(call(SOCK3, "Plugin.Activate"), "Implements")
        expect_eq(j["Implements"], ["GraphDriver"], "Implements")

    @case("S3 SIGINT with an idle keep-alive connection (as dockerd keeps) and a half-sent request line:"
          " exits 0 within 10s, socket removed")
    def _():
        # Neither is a call in flight: shutting down must not wait out the
        # grace period (30s by default) for them.
        s3 = next(s for s in SERVERS if s.name == "s3")
        idle = UnixConn(SOCK3)
        half = raw_connect(SOCK3)
        try:
            want_ok(request(SOCK3, "/Plugin.Activate", b"", conn=idle), "Implements")
            expect(idle.sock is not None, "fixture: the server closed the keep-alive connection")
            half.sendall(b"POST /Plugin.Acti")
            time.sleep(0.2)
            t0 = time.monotonic()
            rc = s3.signal_and_wait(signal.SIGINT, 10)
            expect(rc is not None, "still running 10s after SIGINT", *s3.log_tail())
            print(f"# (S3 exited {time.monotonic() - t0:.2f}s after SIGINT)")
            expect_eq(rc, 0, "exit code")
            expect(not os.path.lexists(SOCK3), "socket file still there")
        finally:
            idle.close()
            half.close()

    # ---------------------------------------------------- S4: restart resumes the last Init
    def s4_start(tag):
        srv = Server(f"s4{tag}", SOCK4)
        srv.wait_ready()
        return srv

    def s4_kill(srv):
        srv.proc.kill()
        srv.proc.wait(timeout=10)

    s4 = {}

    @case("S4 Init records Home and Options in SOCKET.init, mode 0600")
    def _():
        s4["a"] = s4_start("a")
        want_ok(call(SOCK4, "GraphDriver.Init", {"Home": H4, "Opts": ["strata.mountapi=legacy"]}))
        create(SOCK4, "r1")
        want_ok(apply(SOCK4, "r1", mktar([F("kept", b"across a restart")])), "Size")
        st = os.lstat(SOCK4 + ".init")
        expect_eq(stat.S_IMODE(st.st_mode), 0o600, "mode")
        with open(SOCK4 + ".init") as f:
            j = json.load(f)
        expect_eq(j, {"Home": H4, "Options": ["mountapi=legacy"]}, "SOCKET.init")  # the prefix stripped

    @case("... killed (SIGKILL) and started again on the same socket, it serves the store without an Init")
    def _():
        s4_kill(s4["a"])
        s4["b"] = s4_start("b")
        expect(s4["b"].wait_log(r'msg="reopened the store of the last Init"'), "no reopen log line",
               *s4["b"].log_tail())
        j = want_ok(call(SOCK4, "GraphDriver.Exists", {"ID": "r1"}), "Exists")
        expect_eq(j["Exists"], True, "Exists r1")
        j = want_ok(call(SOCK4, "GraphDriver.Get", {"ID": "r1", "MountLabel": ""}), "Dir")
        with open(os.path.join(j["Dir"], "kept"), "rb") as f:
            expect_eq(f.read(), b"across a restart", "r1/kept")
        want_ok(call(SOCK4, "GraphDriver.Put", {"ID": "r1"}))
        j = want_ok(call(SOCK4, "GraphDriver.Status"), "Status")
        expect("legacy" in json.dumps(j["Status"]), f"the recorded options were not applied: {j}")

    @case("... Cleanup (dockerd stopping) forgets it: the next start waits for an Init")
    def _():
        want_ok(call(SOCK4, "GraphDriver.Cleanup"))
        expect(not os.path.lexists(SOCK4 + ".init"), "SOCKET.init still there after Cleanup")
        s4_kill(s4["b"])
        s4["c"] = s4_start("c")
        want_err(call(SOCK4, "GraphDriver.Exists", {"ID": "r1"}), contains=["init"])

    @case("... a corrupt SOCKET.init: starts, warns naming the file, waits for an Init")
    def _():
        s4_kill(s4["c"])
        with open(SOCK4 + ".init", "w") as f:
            f.write('{"Home": 7')
        s4["d"] = s4_start("d")
        line = s4["d"].wait_log(r"level=warn.*cannot read the last Init")
        expect(line and "s4.sock.init" in line, "no warning naming the file", *s4["d"].log_tail())
        want_err(call(SOCK4, "GraphDriver.Exists", {"ID": "r1"}), contains=["init"])
        want_ok(call(SOCK4, "GraphDriver.Init", {"Home": H4, "Opts": []}))
        j = want_ok(call(SOCK4, "GraphDriver.Exists", {"ID": "r1"}), "Exists")
        expect_eq(j["Exists"], True, "Exists r1 after Init")

    @case("... SIGTERM: exits 0, socket removed, SOCKET.init kept (dockerd did not Cleanup), no mounts")
    def _():
        rc = s4["d"].signal_and_wait(signal.SIGTERM, 10)
        expect_eq(rc, 0, "exit code")
        expect(not os.path.lexists(SOCK4), "socket file still there")
        expect(os.path.isfile(SOCK4 + ".init"), "SOCKET.init removed by a SIGTERM")
        expect(not mounts_under(H4), f"mounted: {mounts_under(H4)}")

    s5_tests()

    # ---------------------------------------------------- S1: SIGTERM
    inflight = {}

    @case("S1 SIGTERM with two unions mounted and an upload in flight: the upload still completes (200)")
    def _():
        want_ok(call(SOCK1, "GraphDriver.Get", {"ID": "top", "MountLabel": ""}), "Dir")
        want_ok(call(SOCK1, "GraphDriver.Get", {"ID": "top2", "MountLabel": ""}), "Dir")
        expect(len(overlays_under(H1)) == 2, f"fixture: overlays {overlays_under(H1)}")
        create(SOCK1, "inflight")
        ka = UnixConn(SOCK1)
        want_ok(request(SOCK1, "/Plugin.Activate", b"", conn=ka), "Implements")
        s = raw_connect(SOCK1)
        try:
            s.sendall(upload_head("inflight") + chunk(slow_tar[:100_000]))
            time.sleep(0.3)
            inflight["t0"] = time.monotonic()
            s1.proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            # New connections are no longer served.
            try:
                r = call(SOCK1, "Plugin.Activate", timeout=1)
                inflight["late"] = r.status
            except OSError as e:
                inflight["late"] = repr(e)
            except http.client.HTTPException as e:
                inflight["late"] = repr(e)
            # A connection dockerd kept open is still there: its calls get 503.
            try:
                inflight["ka"] = request(SOCK1, "/GraphDriver.Create", b'{"ID":"late"}', conn=ka, timeout=5)
            except (OSError, http.client.HTTPException) as e:
                inflight["ka"] = repr(e)
            s.sendall(chunk(slow_tar[100_000:]) + b"0\r\n\r\n")
            r = raw_response(s)
        finally:
            s.close()
            ka.close()
        j = want_ok(r, "Size")
        expect_eq(j["Size"], tar_size(slow_entries), "Size")

    @case("... a connection made after SIGTERM gets no 200")
    def _():
        expect("late" in inflight, "not tried")
        print(f"# (after SIGTERM: {inflight['late']})")
        expect(inflight["late"] != 200, "Activate answered 200 after SIGTERM")

    @case("... a call on a connection kept alive from before SIGTERM gets 503 and changes nothing")
    def _():
        r = inflight.get("ka")
        expect(isinstance(r, Reply), f"no reply: {r!r}")
        want_err(r, 503, ["shutting down"])
        expect(not os.path.exists(os.path.join(H1, "layers", "late")), "layers/late was created")

    @case("... S1 exits 0 within 10s")
    def _():
        try:
            rc = s1.proc.wait(timeout=max(0.1, 10 - (time.monotonic() - inflight.get("t0", time.monotonic()))))
        except subprocess.TimeoutExpired:
            raise Fail("still running 10s after SIGTERM", *s1.log_tail())
        expect_eq(rc, 0, "exit code")

    @case("... no mounts left under Home, socket removed")
    def _():
        expect("t0" in inflight and s1.proc.poll() == 0, "S1 was not running or did not exit 0")
        expect(not mounts_under(H1), f"mounted: {mounts_under(H1)}")
        expect(not os.path.lexists(SOCK1), "socket file still there")

    @case("... counts were reset (strata metadata top: RefCount 0)")
    def _():
        p = subprocess.run([STRATA, "--root", H1, "metadata", "--json", "top"], capture_output=True, timeout=30)
        expect(p.returncode == 0, p.stderr.decode(errors="replace"))
        expect_eq(json.loads(p.stdout)["RefCount"], "0", "RefCount")

    @case("... the in-flight upload's layer holds its files")
    def _():
        expect_eq(listing(os.path.join(H1, "diff", "inflight")), ["s1", "s2"], "diff/inflight")
        expect(staging(H1) == [], f"staging debris: {staging(H1)}")


# ================================================================ S5: hardening

S5_STOP = threading.Event()  # tells the S5 background client to give up


def server_fds(srv):
    """(target of each fd) of a server process."""
    d = f"/proc/{srv.proc.pid}/fd"
    out = []
    for n in os.listdir(d):
        try:
            out.append((int(n), os.readlink(os.path.join(d, n))))
        except OSError:
            pass
    return out


def server_sockets(srv):
    return sum(1 for _, t in server_fds(srv) if t.startswith("socket:"))


def spool_fds(srv, home):
    """The server's unnamed temp files (O_TMPFILE) in the store root."""
    return [n for n, t in server_fds(srv) if t.startswith(home + "/#")]


def rss_kib(srv):
    with open(f"/proc/{srv.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise Fail("no VmRSS in /proc/PID/status")


def nofile_limits(srv):
    with open(f"/proc/{srv.proc.pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise Fail("no 'Max open files' in /proc/PID/limits")


def open_idle(sock, n):
    """n connections that send nothing."""
    out = []
    try:
        for _ in range(n):
            out.append(unix_connect(sock, 15))
    except BaseException:
        close_all(out)
        raise
    return out


def peer_closed(s):
    """True if the other end has closed the connection (EOF waiting), at
    once: the socket is made non-blocking for the look (with a timeout set,
    Python would wait for data first)."""
    timeout = s.gettimeout()
    s.setblocking(False)
    try:
        return s.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.settimeout(timeout)


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def wait_server_sockets(srv, n, timeout):
    """Waits until the server holds at least n sockets; returns how many it holds."""
    end = time.monotonic() + timeout
    while True:
        have = server_sockets(srv)
        if have >= n or time.monotonic() >= end:
            return have
        time.sleep(0.05)


def wait_server_settled(srv, most, timeout):
    """Waits until the server holds at most `most` sockets: a connection it
    has closed keeps its fd until MHD's cleanup gets to it."""
    end = time.monotonic() + timeout
    while server_sockets(srv) > most and time.monotonic() < end:
        time.sleep(0.05)
    return server_sockets(srv)


def wait_closed_by_peer(socks, timeout):
    """Waits until the server has closed each socket (EOF or reset); returns
    the ones still open after timeout."""
    left = {s.fileno(): s for s in socks}
    end = time.monotonic() + timeout
    p = select.poll()
    for fd in left:
        p.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    while left and time.monotonic() < end:
        for fd, _ in p.poll(max(0, int((end - time.monotonic()) * 1000))):
            s = left.get(fd)
            if s is None:
                continue
            try:
                s.setblocking(False)
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                continue  # a reply to nothing? keep waiting for the close
            p.unregister(fd)
            del left[fd]
    return list(left.values())


def s5_tests():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    low = min(hard, 1024)

    def low_nofile():
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    s5 = Server("s5", SOCK5, preexec_fn=low_nofile)
    # This script holds up to ~850 connections itself.
    mine = resource.getrlimit(resource.RLIMIT_NOFILE)
    if mine[0] < min(mine[1], 4096):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(mine[1], 4096), mine[1]))

    @case("S5 (started with RLIMIT_NOFILE soft 1024) starts, Init -> 200")
    def _():
        s5.wait_ready()
        want_ok(call(SOCK5, "GraphDriver.Init", {"Home": H5, "Opts": []}))

    @case("open-files soft limit: S5 (started with 1024) runs with at least 8192, S1 keeps a higher one")
    def _():
        # At least 8192 (the hard limit if lower): enough for the
        # connection limit.  A higher limit it was started with stays.
        soft, hard5 = nofile_limits(s5)
        expect(low < hard, f"fixture: the hard limit ({hard}) is not above {low}")
        expect_eq(soft, min(hard5, 8192), "S5 soft limit (hard: %d)" % hard5)
        s1 = next(s for s in SERVERS if s.name == "s1")
        expect(s1.proc.poll() is None, "fixture: S1 is not running")
        soft, hard1 = nofile_limits(s1)
        started = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        expect_eq(soft, max(started, min(hard1, 8192)), "S1 soft limit (hard: %d)" % hard1)

    # ---------------------------------------------------- NUL bytes and repeats in ids
    def no_evil():
        found = []
        for root in (TMP, "/var/tmp"):
            for dirpath, dirnames, filenames in os.walk(root):
                found += [os.path.join(dirpath, n) for n in dirnames + filenames if "evil" in n]
                if root == "/var/tmp" and dirpath == root:
                    dirnames[:] = []  # only its top level (other tests' scratch dirs live there)
        expect(not found, "something named evil exists:", *found[:10])

    evil_tar = mktar([F("evil", b"evil\n"), D("d"), F("d/evil2", b"x")])

    @case("S5 fixtures: empty layers a, b, p, and c on p")
    def _():
        for lid in ("a", "b", "p"):
            create(SOCK5, lid)
        create(SOCK5, "c", "p")

    @case("ApplyDiff?id=a%00../../evil -> 400 naming ApplyDiff and the id with its NUL; a stays empty")
    def _():
        r = request(SOCK5, "/GraphDriver.ApplyDiff?id=a%00../../evil&parent=", evil_tar)
        err = want_err(r, 400, ["GraphDriver.ApplyDiff", "a\\x00../../evil", "NUL"])
        expect_layer_empty(H5, "a")
        no_evil()
        print(f"# Err: {err}")

    @case("ApplyDiff?id=a%00 (NUL at the end, no parent=) -> 400; a stays empty")
    def _():
        want_err(request(SOCK5, "/GraphDriver.ApplyDiff?id=a%00", evil_tar), 400, ["a\\x00"])
        expect_layer_empty(H5, "a")

    @case("ApplyDiff?id=c&parent=p%00../../evil -> 400 naming the parent; c stays empty, nothing named evil")
    def _():
        r = request(SOCK5, "/GraphDriver.ApplyDiff?id=c&parent=p%00../../evil", evil_tar)
        want_err(r, 400, ["GraphDriver.ApplyDiff", "parent", "p\\x00../../evil"])
        expect_layer_empty(H5, "c")
        no_evil()

    for q in ["id=a&id=b", "id=a&ID=b", "id=b&parent=&id=a"]:
        @case(f"ApplyDiff?{q} (id given twice) -> 400; a and b stay empty")
        def _():
            want_err(request(SOCK5, "/GraphDriver.ApplyDiff?" + q, evil_tar), 400, ["GraphDriver.ApplyDiff", "id"])
            expect_layer_empty(H5, "a")
            expect_layer_empty(H5, "b")

    @case("ApplyDiff?id=c&parent=p&parent=p (parent given twice) -> 400; c stays empty")
    def _():
        want_err(request(SOCK5, "/GraphDriver.ApplyDiff?id=c&parent=p&parent=p", evil_tar), 400, ["parent"])
        expect_layer_empty(H5, "c")

    @case("ApplyDiff?id%00x=b&id=a (a NUL in a query key) -> 400; a stays empty")
    def _():
        want_err(request(SOCK5, "/GraphDriver.ApplyDiff?id%00x=b&id=a", evil_tar), 400, ["NUL"])
        expect_layer_empty(H5, "a")

    @case("ApplyDiff?id=../x and ?id=a&parent=-p -> 400 naming ApplyDiff and the id (checked before the apply)")
    def _():
        want_err(request(SOCK5, "/GraphDriver.ApplyDiff?id=../x", evil_tar), 400, ["GraphDriver.ApplyDiff", "../x"])
        want_err(request(SOCK5, "/GraphDriver.ApplyDiff?id=a&parent=-p", evil_tar), 400,
                 ["GraphDriver.ApplyDiff", "-p"])
        expect_layer_empty(H5, "a")

    @case("... and a takes a good ApplyDiff afterwards")
    def _():
        want_ok(request(SOCK5, "/GraphDriver.ApplyDiff?id=a&parent=", mktar([F("good", b"1")])), "Size")
        expect_eq(listing(os.path.join(H5, "diff", "a")), ["good"], "diff/a")

    nul = "x\u0000../../evil"
    json_nul = [
        ("Init", {"Home": H5 + "evil\u0000"}),
        ("Init", {"Home": H5, "Opts": ["mountapi=auto\u0000../evil"]}),
        ("Create", {"ID": "c" + nul}),
        ("Create", {"ID": "cn", "Parent": "a" + nul}),
        ("Create", {"ID": "cn", "StorageOpt": {"size\u0000evil": "1"}}),
        ("Create", {"ID": "cn", "StorageOpt": {"size": "1\u0000evil"}}),
        ("Create", {"ID": "cn", "MountLabel": "l\u0000evil"}),
        ("CreateReadWrite", {"ID": "c" + nul, "Parent": "p"}),
        ("CreateReadWrite", {"ID": "cn", "Parent": "p" + nul}),
        ("Remove", {"ID": "a" + nul}),
        ("Exists", {"ID": "a" + nul}),
        ("Get", {"ID": "a" + nul}),
        ("Get", {"ID": "a", "MountLabel": "system_u\u0000evil"}),
        ("Put", {"ID": "a" + nul}),
        ("GetMetadata", {"ID": "a" + nul}),
        ("Changes", {"ID": "a" + nul}),
        ("Changes", {"ID": "c", "Parent": "p" + nul}),
        ("DiffSize", {"ID": "a" + nul}),
        ("DiffSize", {"ID": "c", "Parent": "p" + nul}),
        ("Diff", {"ID": "a" + nul}),
        ("Diff", {"ID": "c", "Parent": "p" + nul}),
    ]
    for meth, body in json_nul:
        field = next(k for k, v in body.items() if "\\u0000" in json.dumps(v))

        @case(f"{meth} with \\u0000 in {field} -> 400 (a JSON string holding a NUL is refused)")
        def _():
            raw = json.dumps(body).encode()
            expect(b"\\u0000" in raw, "fixture: no \\u0000 in the body")
            want_err(call(SOCK5, "GraphDriver." + meth, raw=raw), 400)

    @case("... those calls changed nothing: same store, same layers, no cn, nothing named evil")
    def _():
        st = dict(want_ok(call(SOCK5, "GraphDriver.Status"), "Status")["Status"])
        expect_eq(st.get("Root Dir"), H5, "Root Dir")
        expect_eq(listing(os.path.join(H5, "layers")), ["a", "b", "c", "p"], "layers")
        expect_eq(listing(os.path.join(H5, "diff", "a")), ["good"], "diff/a")
        expect_eq(refcount(SOCK5, "a"), "0", "RefCount of a")
        no_evil()

    # ---------------------------------------------------- a Diff whose client stops reading
    big = os.urandom(16 << 20)
    diff_body = json.dumps({"ID": "stall", "Parent": "sbase"}).encode()
    st5 = {}

    @case("Diff stall (16 MiB, on sbase) by a client that reads to the end -> 200, the reference tar")
    def _():
        create(SOCK5, "sbase")
        want_ok(apply(SOCK5, "sbase", mktar([F("base.txt", b"base\n")])), "Size")
        create(SOCK5, "stall", "sbase")
        want_ok(apply(SOCK5, "stall", mktar([D("data"), F("data/big.bin", big), F("z.txt", b"z\n")]), "sbase"),
                "Size")
        r = request(SOCK5, "/GraphDriver.Diff", diff_body, timeout=60)
        expect_eq(r.status, 200, "status")
        expect(tar_file(r.body, "data/big.bin") == big, "data/big.bin differs")
        st5["ref"] = r.body

    @case("Diff stall by a client that reads nothing: Get and Put of stall answer within 5s")
    def _():
        s = raw_connect(SOCK5, 60)
        st5["sock"] = s
        s.sendall(b"POST /GraphDriver.Diff HTTP/1.1\r\nHost: x\r\nAccept: " + CT.encode() +
                  b"\r\nContent-Length: %d\r\n\r\n" % len(diff_body) + diff_body)
        time.sleep(1.0)  # the server fills the socket and whatever is behind it
        d = want_ok(call(SOCK5, "GraphDriver.Get", {"ID": "stall", "MountLabel": ""}, timeout=5), "Dir")["Dir"]
        expect(overlay_at(d), "stall not mounted at " + d)
        want_ok(call(SOCK5, "GraphDriver.Put", {"ID": "stall"}, timeout=5))
        expect(not overlay_at(d), "stall still mounted after the Put")

    @case("... DiffSize of stall answers within 5s with the file bytes")
    def _():
        j = want_ok(call(SOCK5, "GraphDriver.DiffSize", {"ID": "stall", "Parent": "sbase"}, timeout=5), "Size")
        expect_eq(j["Size"], len(big) + 2, "Size")

    @case("... Remove of stall answers within 5s (200) and the layer is gone")
    def _():
        want_ok(call(SOCK5, "GraphDriver.Remove", {"ID": "stall"}, timeout=5))
        j = want_ok(call(SOCK5, "GraphDriver.Exists", {"ID": "stall"}, timeout=5), "Exists")
        expect_eq(j["Exists"], False, "Exists")

    @case("... the stalled client then reads a complete tar, byte for byte the reference (a snapshot)")
    def _():
        s = st5.pop("sock", None)
        expect(s is not None, "no stalled client")
        try:
            s.settimeout(60)
            r = raw_response(s)
        finally:
            s.close()
        expect_eq(r.status, 200, "status")
        expect("ref" in st5, "no reference tar")
        expect(r.body == st5["ref"], f"the tars differ: {len(r.body)} bytes, reference {len(st5['ref'])}")
        expect_eq(sorted(tar_members(r.body)), ["data", "data/big.bin", "z.txt"], "entries")

    huge_body = json.dumps({"ID": "huge", "Parent": ""}).encode()

    @case("S5 fixture: layer huge holds 48 MiB")
    def _():
        create(SOCK5, "huge")
        want_ok(apply(SOCK5, "huge", mktar([F("huge.bin", os.urandom(48 << 20))]), chunked=False), "Size")

    def start_diff(body):
        s = raw_connect(SOCK5, 60)
        s.sendall(b"POST /GraphDriver.Diff HTTP/1.1\r\nHost: x\r\nAccept: " + CT.encode() +
                  b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        return s

    @case("a client reading a 48 MiB Diff slowly: server RSS grows < 16 MiB; what was sent is punched out of the spool")
    def _():
        time.sleep(0.5)
        rss0 = rss_kib(s5)
        s = start_diff(huge_body)
        try:
            s.settimeout(30)
            resp = http.client.HTTPResponse(s, method="POST")
            resp.begin()
            expect_eq(resp.status, 200, "status")
            got, peak, spool = 0, rss0, None
            t0 = time.monotonic()
            while True:
                b = resp.read(256 << 10)
                if not b:
                    break
                got += len(b)
                time.sleep(0.01)
                peak = max(peak, rss_kib(s5))
                if spool is None and got > (36 << 20):
                    fds = spool_fds(s5, H5)
                    expect(fds, "no spool file (O_TMPFILE in the store root) is open in the server")
                    stt = os.stat(f"/proc/{s5.proc.pid}/fd/{fds[0]}")
                    spool = (stt.st_size, stt.st_blocks * 512, got)
                expect(time.monotonic() - t0 < 120, "reading took over 120s")
        finally:
            s.close()
        expect(got > (48 << 20), f"read only {got} bytes")
        print(f"# RSS {rss0} KiB -> peak {peak} KiB; spool (size, allocated, read) = {spool}")
        expect(peak - rss0 < 16 << 10, f"RSS grew by {(peak - rss0) >> 10} MiB")
        expect(spool is not None, "the spool was not seen")
        size, alloc, read = spool
        expect(alloc <= size - read + (12 << 20),
               f"spool holds {alloc >> 20} MiB of {size >> 20} MiB after {read >> 20} MiB were read")

    @case("a client that disconnects mid-Diff: within 10s the server holds no spool, huge answers Get/Put at once")
    def _():
        s = start_diff(huge_body)
        try:
            s.settimeout(30)
            got = 0
            while got < (1 << 20):
                b = s.recv(65536)
                expect(b, "the Diff ended early")
                got += len(b)
        finally:
            s.close()
        end = time.monotonic() + 10
        while spool_fds(s5, H5) and time.monotonic() < end:
            time.sleep(0.1)
        expect(not spool_fds(s5, H5), f"spool files still open: {spool_fds(s5, H5)}")
        want_ok(call(SOCK5, "GraphDriver.Get", {"ID": "huge", "MountLabel": ""}, timeout=5), "Dir")
        want_ok(call(SOCK5, "GraphDriver.Put", {"ID": "huge"}, timeout=5))
        line = s5.wait_log(r"method=GraphDriver\.Diff\b.*\bid=huge\b.*level=warn|level=warn\b.*method=GraphDriver\.Diff\b.*\bid=huge\b",
                           timeout=5)
        expect(line, "no warn line for the cut Diff", *s5.log_tail())

    # ---------------------------------------------------- a deep tree
    def deep_layer(name, depth):
        create(SOCK5, name, "p")
        top = os.path.join(H5, "diff", name)
        fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.close(fd)
        return top

    @case("a layer 2000 directories deep (paths up to 4000 bytes): DiffSize, Changes and Diff answer 200")
    def _():
        top = deep_layer("deep", 2000)
        try:
            j = want_ok(call(SOCK5, "GraphDriver.DiffSize", {"ID": "deep", "Parent": "p"}, timeout=60), "Size")
            expect_eq(j["Size"], 0, "Size")
            j = want_ok(call(SOCK5, "GraphDriver.Changes", {"ID": "deep", "Parent": "p"}, timeout=60), "Changes")
            expect_eq(len(j["Changes"]), 2000, "changes")
            r = request(SOCK5, "/GraphDriver.Diff", json.dumps({"ID": "deep", "Parent": "p"}).encode(), timeout=60)
            expect_eq(r.status, 200, "Diff status")
            expect_eq(len(tar_members(r.body)), 2000, "Diff entries")
            expect(s5.proc.poll() is None, f"the server died: exit {s5.proc.returncode}", *s5.log_tail())
            want_ok(call(SOCK5, "GraphDriver.Remove", {"ID": "deep"}, timeout=60))
        finally:
            if os.path.isdir(top):
                subprocess.run(["rm", "-rf", "--one-file-system", top], timeout=120)

    @case("a layer 100,000 directories deep: DiffSize 200, Changes a clear 400, Diff cut with the error logged, the server lives")
    def _():
        # What a container can build in a second; the library's walks are
        # iterative, and no path that long fits a tar or a change list.
        top = deep_layer("deeper", 100000)
        try:
            j = want_ok(call(SOCK5, "GraphDriver.DiffSize", {"ID": "deeper", "Parent": "p"}, timeout=120), "Size")
            expect_eq(j["Size"], 0, "Size")
            want_err(call(SOCK5, "GraphDriver.Changes", {"ID": "deeper", "Parent": "p"}, timeout=120), 400,
                     contains=["changes deeper", "a path longer than 4095 bytes"])
            # The first 2000 levels make a tar of megabytes: the error comes
            # after the first byte, so the connection is cut (a tar that
            # ends short, never one that looks whole), and the log says why.
            try:
                r = request(SOCK5, "/GraphDriver.Diff", json.dumps({"ID": "deeper", "Parent": "p"}).encode(),
                            timeout=120)
                raise Fail(f"Diff answered whole: status {r.status}", r.body[:300])
            except (http.client.IncompleteRead, ConnectionResetError):
                pass
            expect(any("method=GraphDriver.Diff id=deeper" in l and "a path longer than 4095 bytes" in l
                       for l in s5.log().splitlines()), "no log line naming the Diff's error", *s5.log_tail())
            expect(s5.proc.poll() is None, f"the server died: exit {s5.proc.returncode}", *s5.log_tail())
            want_ok(call(SOCK5, "GraphDriver.Remove", {"ID": "deeper"}, timeout=120))
        finally:
            if os.path.isdir(top):
                subprocess.run(["rm", "-rf", "--one-file-system", top], timeout=120)

    # ---------------------------------------------------- idle and slow clients
    dribble = {}

    def dribbler():
        msg = b"POST /Plugin.Activate HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        try:
            s = unix_connect(SOCK5, 15)
        except OSError as e:
            dribble["error"] = repr(e)
            return
        t0 = time.monotonic()
        dribble["t0"] = t0
        try:
            for i in range(len(msg)):
                if S5_STOP.is_set() or time.monotonic() - t0 > 60:
                    break
                try:
                    s.send(msg[i:i + 1])
                except OSError:
                    dribble["cut"] = time.monotonic() - t0
                    return
                r, _, _ = select.select([s], [], [], 2.0)
                if r:
                    try:
                        data = s.recv(4096)
                    except OSError:
                        data = b""
                    if not data:
                        dribble["cut"] = time.monotonic() - t0
                        return
                    dribble["reply"] = data[:200]
                    return
        finally:
            s.close()

    dt = threading.Thread(target=dribbler, daemon=True)
    dt.start()
    ka = UnixConn(SOCK5)
    idle = []

    @case("300 idle connections (over the old limit of 256) are all accepted")
    def _():
        want_ok(request(SOCK5, "/Plugin.Activate", b"", conn=ka), "Implements")
        base = wait_server_settled(s5, 16, 15)
        expect(base <= 16, f"fixture: the server holds {base} sockets")
        idle.extend(open_idle(SOCK5, 300))
        st5["idle_t0"] = time.monotonic()
        have = wait_server_sockets(s5, base + 300, 10)
        # Under a slow build (ASan) opening 300 takes a while: the first
        # may already be closed by the server's 10 s first-request timeout,
        # which only an accepted connection gets.
        closed = sum(1 for c in idle if peer_closed(c)) if have < base + 300 else 0
        expect(have - base + closed >= 300,
               f"the server holds {have - base} of the 300 connections and has closed {closed}")

    @case("... while they sit, a new client's Activate, Exists, Get and Put each answer within 5s")
    def _():
        for m, body, keys in [("Plugin.Activate", None, ["Implements"]),
                              ("GraphDriver.Exists", {"ID": "a"}, ["Exists"]),
                              ("GraphDriver.Get", {"ID": "c", "MountLabel": ""}, ["Dir"]),
                              ("GraphDriver.Put", {"ID": "c"}, [])]:
            r = call(SOCK5, m, body, timeout=5)
            want_ok(r, *keys)
            expect(r.elapsed < 5, f"{m} took {r.elapsed:.1f}s")

    @case("... the server closes every idle one within 25s of its connect (first-request timeout)")
    def _():
        left = wait_closed_by_peer(idle, max(0.1, 25 - (time.monotonic() - st5.get("idle_t0", 0))))
        took = time.monotonic() - st5.get("idle_t0", 0)
        print(f"# ({300 - len(left)} closed by the server, the last {took:.1f}s after the connects)")
        expect(not left, f"{len(left)} of 300 idle connections still open after 25s")
        close_all(idle)
        idle.clear()

    @case("... a keep-alive connection that made a call outlives that timeout and is still served")
    def _():
        expect(time.monotonic() - st5.get("idle_t0", 0) > 10, "fixture: less than 10s have passed")
        sock0 = ka.sock
        j = want_ok(call(SOCK5, "GraphDriver.Exists", {"ID": "a"}, conn=ka, timeout=5), "Exists")
        expect_eq(j["Exists"], True, "Exists")
        expect(sock0 is not None and ka.sock is sock0, "the keep-alive connection was replaced")

    @case("520 idle connections (over the soft cap of 512): a new client gets 503, JSON Err, Connection: close")
    def _():
        base = wait_server_settled(s5, 16, 15)
        expect(base <= 16, f"fixture: the server still holds {base} sockets")
        idle.extend(open_idle(SOCK5, 520))
        st5["cap_t0"] = time.monotonic()
        have = wait_server_sockets(s5, base + 520, 10)
        expect(have >= base + 520, f"the server holds {have - base} of the 520 connections")
        r = call(SOCK5, "Plugin.Activate", timeout=5)
        want_err(r, 503, ["connection limit"])
        expect_eq(r.headers.get("connection", "").lower(), "close", "Connection header")

    @case("... a connection that made a call before is still served over the cap")
    def _():
        j = want_ok(call(SOCK5, "GraphDriver.Exists", {"ID": "b"}, conn=ka, timeout=5), "Exists")
        expect_eq(j["Exists"], True, "Exists")

    @case("... once the server has closed the idle ones, new clients are served again")
    def _():
        left = wait_closed_by_peer(idle, max(0.1, 25 - (time.monotonic() - st5.get("cap_t0", 0))))
        expect(not left, f"{len(left)} of 520 idle connections still open after 25s")
        close_all(idle)
        idle.clear()
        # The server counts a connection until MHD's cleanup has closed it.
        end = time.monotonic() + 15
        while True:
            r = call(SOCK5, "Plugin.Activate", timeout=5)
            if r.status == 200 or time.monotonic() > end:
                break
            time.sleep(0.2)
        want_ok(r, "Implements")

    @case("a client dribbling its request headers (a byte every 2s) is cut off 30s after connecting")
    def _():
        dt.join(70)
        expect(not dt.is_alive(), "the dribbling client still runs after 70s")
        expect("error" not in dribble, f"could not connect: {dribble.get('error')}")
        expect("reply" not in dribble, f"the server replied: {dribble.get('reply')!r}")
        expect("cut" in dribble, "the server did not cut the connection within 60s")
        print(f"# (cut {dribble['cut']:.1f}s after connecting)")
        expect(20 <= dribble["cut"] <= 45, f"cut after {dribble['cut']:.1f}s, expected about 30s")
        expect(s5.wait_log(r"level=warn\b.*no complete request"), "no warn line for the cut", *s5.log_tail())

    ka.close()
    close_all(idle)

    @case("S5 SIGTERM -> exits 0 within 10s, no mounts under its Home, no spool left")
    def _():
        rc = s5.signal_and_wait(signal.SIGTERM, 10)
        expect_eq(rc, 0, "exit code")
        expect(not mounts_under(H5), f"mounted: {mounts_under(H5)}")
        expect(not [n for n in listing(H5) if n.startswith("#") or n.startswith(".tmp")], f"debris: {listing(H5)}")


# ---------------------------------------------------------------- cleanup


def cleanup():
    S5_STOP.set()
    for s in SERVERS:
        try:
            s.stop()
        except Exception as e:  # keep cleaning
            print(f"# stopping {s.name}: {e!r}")
    keep = os.environ.get("STRATA_IT_LOGDIR")  # to read the servers' stderr afterwards
    if keep:
        os.makedirs(keep, exist_ok=True)
        for s in SERVERS:
            shutil.copy(s.log_path, os.path.join(keep, os.path.basename(s.log_path)))
    for home in (H1, H2, H4, H5):
        if os.path.isdir(os.path.join(home, "mnt")):
            try:
                subprocess.run([STRATA, "--root", home, "cleanup"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=60)
            except Exception as e:
                print(f"# strata cleanup {home}: {e!r}")
    for m in mounts_under(TMP):
        subprocess.run(["umount", "-l", m], stderr=subprocess.DEVNULL, timeout=30)
    left = mounts_under(TMP)
    if left:
        emit(False, f"fixture left mounts under {TMP}", left)
    else:
        shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    run_script(main, cleanup, GLOBAL_TIMEOUT)
