#!/usr/bin/env python3
"""Crash injection: every CLI operation (and serve's ApplyDiff) killed with
SIGKILL before each of its system calls, then `strata init`, then
`strata check`, then the content compared with a reference.  Prints TAP,
one case per kill point.

How a kill point is made: a first run under `strace -f` records the
operation's system calls; each (syscall, n) pair (the n-th call of that
syscall in one thread) is a kill point, and a run under
`strace -e inject=SYSCALL:error=EINTR:signal=KILL:when=n` dies before that
call is made (the injected error keeps the call from running; the signal
kills on its way out).  Calls made before the operation first names the
store (the dynamic loader, libc's start-up) cannot touch the store and are
left out
(the store is first named when the program resolves it).

After each kill: `init` must succeed, `check` must report nothing, and
the operation's layer must be either as before or as after (compared
file by file with a reference: type, mode, owner, size, content, xattrs),
never anything in between; nothing may stay mounted that nobody holds.

    STRATA_BIN=build/strata python3 tests/integration/t_crash.py
    CRASH_STEP=N   take every N-th kill point only (default 1: all)
"""

import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import io
import tempfile
import time

STRATA = os.environ["STRATA_BIN"]
STEP = int(os.environ.get("CRASH_STEP", "1"))
TMP = tempfile.mkdtemp(prefix="strata-it.", dir=os.environ.get("STRATA_TEST_DIR", "/var/tmp"))
R = os.path.join(TMP, "root")
N = 0
FAILED = 0
STARTED = []  # processes to stop at the end


def tap(ok, desc, *details):
    global N, FAILED
    N += 1
    if not ok:
        FAILED += 1
    print(("ok" if ok else "not ok") + f" {N} - {desc}")
    for d in details:
        for line in str(d).splitlines()[:30]:
            print("# " + line)
    sys.stdout.flush()


def st(*args, check=True, input=None):
    p = subprocess.run([STRATA, "--root", R, *args], capture_output=True, text=True, input=input)
    if check and p.returncode != 0:
        raise RuntimeError(f"strata {' '.join(args)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def mounts_under(prefix):
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == prefix or mp.startswith(prefix + "/"):
                out.append(mp)
    return sorted(out, key=len, reverse=True)


def snapshot(path):
    """Every entry of a tree: type, mode, owner, size, sha256, xattrs,
    symlink target, device number."""
    rows = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st_ = os.lstat(p)
            rel = os.path.relpath(p, path)
            row = f"{rel} {oct(st_.st_mode)} {st_.st_uid}:{st_.st_gid}"
            if os.path.islink(p):
                row += " -> " + os.readlink(p)
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    row += f" {st_.st_size} {hashlib.sha256(f.read()).hexdigest()[:16]} n{st_.st_nlink}"
            elif not os.path.isdir(p):
                row += f" dev={st_.st_rdev}"
            try:
                xs = sorted(os.listxattr(p, follow_symlinks=False))
                row += " " + ",".join(f"{x}={os.getxattr(p, x, follow_symlinks=False)!r}" for x in xs)
            except OSError:
                pass
            rows.append(row)
    return "\n".join(rows)


def traces(layer):
    """Anything of the layer left in the store's dirs."""
    found = []
    for sub in ("layers", "diff", "mnt", "work", "refs", "link"):
        d = os.path.join(R, sub)
        for n in os.listdir(d):
            if n == layer or n == layer + "-removing" or n.endswith("-" + layer):
                found.append(f"{sub}/{n}")
    for n in os.listdir(os.path.join(R, "l")):
        if os.readlink(os.path.join(R, "l", n)) == "../diff/" + layer:
            found.append(f"l/{n}")
    return found


STRACE_LINE = re.compile(r"^(\d+)\s+([a-z_0-9]+)\(")


def kill_points(argv, marker, env=None):
    """The (syscall, n) pairs of a run of argv, from the first call whose
    line mentions `marker` on."""
    log = os.path.join(TMP, "record.strace")
    subprocess.run(["strace", "-f", "-qq", "-o", log, *argv], capture_output=True, env=env)
    counts, points, seen, started = {}, [], set(), False
    with open(log, errors="replace") as f:
        for line in f:
            m = STRACE_LINE.match(line)
            if not m:
                continue
            pid, name = m.group(1), m.group(2)
            counts[(pid, name)] = counts.get((pid, name), 0) + 1
            # execve names the store in argv: not yet a use of it.
            started = started or (marker in line and name != "execve")
            k = counts[(pid, name)]
            if started and (name, k) not in seen and k <= 65535:
                seen.add((name, k))
                points.append((name, k))
    return points[::STEP]


def killed_run(argv, name, k, env=None):
    p = subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", f"-e", f"inject={name}:error=EINTR:signal=KILL:when={k}", *argv],
        capture_output=True, env=env)
    return p.returncode


def recover():
    """init, then check: both must be clean.  Returns a list of problems."""
    bad = []
    p = st("init", check=False)
    if p.returncode != 0:
        bad.append("init failed: " + p.stderr.strip())
        return bad
    p = st("check", check=False)
    if p.returncode != 0 or p.stdout.strip():
        bad.append(f"check after init: exit {p.returncode}: {p.stdout.strip()} {p.stderr.strip()}")
    return bad


def exists(layer):
    return st("exists", layer, check=False).returncode == 0


def refcount(layer):
    out = st("metadata", layer).stdout
    return int(re.search(r"^RefCount: (\d+)$", out, re.M).group(1))


def cases(title, argv, marker, before, after):
    """Runs argv killed at each kill point: before() sets the state up,
    after(rc) checks it once init and check ran and returns problems."""
    t0 = time.monotonic()
    before()
    points = kill_points(argv, marker)
    if not points:
        tap(False, f"{title}: no kill point recorded")
    after(0)  # the normal run's result must pass too
    for name, k in points:
        before()
        rc = killed_run(argv, name, k)
        bad = recover()
        if not bad:
            try:
                bad = after(rc)
            except Exception as e:  # a check that could not run is a failure
                bad = [f"{type(e).__name__}: {e}"]
        tap(not bad, f"{title}: killed before {name} #{k}", *bad)
    print(f"# {title}: {len(points)} kill points in {time.monotonic() - t0:.1f} s")
    return len(points)


def main():
    st("init")
    st("create", "base")
    with open(os.path.join(R, "diff/base/keep"), "w") as f:
        f.write("base\n")

    # The layer tar: dirs, files, a hardlink, a symlink, a whiteout, an
    # opaque dir, an xattr, a 2 MiB file (more than one write).
    tarpath = os.path.join(TMP, "layer.tar")
    with tarfile.open(tarpath, "w", format=tarfile.PAX_FORMAT) as t:
        def add(name, data=None, **kw):
            ti = tarfile.TarInfo(name)
            ti.mtime = 1700000000
            for k, v in kw.items():
                setattr(ti, k, v)
            if data is not None:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            else:
                t.addfile(ti)
        add("etc/", type=tarfile.DIRTYPE, mode=0o755)
        add("etc/conf", b"conf\n", mode=0o640, uid=10, gid=20)
        add("etc/link", type=tarfile.LNKTYPE, linkname="etc/conf")
        add("sym", type=tarfile.SYMTYPE, linkname="etc/conf")
        add(".wh.keep", b"")
        add("o/", type=tarfile.DIRTYPE)
        add("o/.wh..wh..opq", b"")
        add("o/new", b"new\n", pax_headers={"SCHILY.xattr.user.tag": "v"})
        add("big", os.urandom(2 << 20))
    st("create", "ref", "base")
    st("apply", "ref", "-i", tarpath)
    reference = snapshot(os.path.join(R, "diff/ref"))

    n_total = 0

    # ---- create ----
    def before_create():
        if exists("c1"):
            st("rm", "c1")

    def after_create(rc):
        if exists("c1"):
            p = st("mount", "c1", check=False)
            if p.returncode != 0:
                return ["c1 exists but does not mount: " + p.stderr.strip()]
            ok = open(os.path.join(p.stdout.strip(), "keep")).read() == "base\n"
            st("umount", "c1")
            return [] if ok else ["c1's view lacks its parent's file"]
        t = traces("c1")
        return [f"c1 does not exist, but left {t}"] if t else []
    n_total += cases("create", [STRATA, "--root", R, "create", "c1", "base"], R, before_create, after_create)

    # ---- apply ----
    def before_apply():
        if exists("a1"):
            st("rm", "a1")
        st("create", "a1", "base")

    def after_apply(rc):
        got = snapshot(os.path.join(R, "diff/a1"))
        if got == "" or got == reference:
            return []
        return ["a1 is neither empty nor the whole tar:", got[:2000]]
    n_total += cases("apply", [STRATA, "--root", R, "apply", "--quiet", "a1", "-i", tarpath], R, before_apply, after_apply)

    # ---- rm of a mounted layer with content ----
    def before_rm():
        if not exists("r1"):
            st("create", "r1", "base")
            st("apply", "r1", "-i", tarpath)
        while refcount("r1") < 1:
            st("mount", "r1")

    def after_rm(rc):
        if exists("r1"):
            got = snapshot(os.path.join(R, "diff/r1"))
            return [] if got == reference else ["r1 exists with changed content:", got[:2000]]
        t = traces("r1")
        return [f"r1 is gone, but left {t}"] if t else []
    n_total += cases("rm", [STRATA, "--root", R, "rm", "r1"], R, before_rm, after_rm)
    if exists("r1"):
        st("rm", "r1")

    # ---- mount and umount ----
    st("create", "m1", "base")
    st("apply", "m1", "-i", tarpath)

    def before_mount():
        while refcount("m1") > 0:
            st("umount", "m1")

    def view_ok(rc):
        p = st("mount", "m1")
        view = p.stdout.strip()
        ok = open(os.path.join(view, "etc/conf")).read() == "conf\n" and not os.path.exists(os.path.join(view, "keep"))
        st("umount", "m1")
        bad = [] if ok else ["m1's view is wrong"]
        if refcount("m1") == 0 and mounts_under(os.path.join(R, "mnt/m1")):
            bad.append("m1 is mounted with no reference counted after init")
        return bad
    n_total += cases("mount", [STRATA, "--root", R, "mount", "m1"], R, before_mount, view_ok)

    def before_umount():
        before_mount()
        st("mount", "m1")
    n_total += cases("umount", [STRATA, "--root", R, "umount", "m1"], R, before_umount, view_ok)
    before_mount()

    # ---- a naive diff, which holds both unions ----
    def before_naive():
        pass

    def after_naive(rc):
        left = mounts_under(os.path.join(R, "mnt"))
        return [f"still mounted: {left}"] if left else []
    n_total += cases("diff --naive", ["sh", "-c", f'exec "$0" --root "$1" diff --naive m1 >/dev/null', STRATA, R],
                     R, before_naive, after_naive)

    # ---- init, with debris to recover from ----
    def before_init():
        if not exists("d1"):
            st("create", "d1", "base")
            with open(os.path.join(R, "diff/d1/f"), "w") as f:
                f.write("d\n")
        if os.path.exists(os.path.join(R, "layers/d1")):
            os.rename(os.path.join(R, "layers/d1"), os.path.join(R, "layers/d1-removing"))
        while refcount("m1") > 0:
            st("umount", "m1")
        st("mount", "m1")
        os.unlink(os.path.join(R, "refs/m1"))  # a mount nobody counts
        with open(os.path.join(R, "layers/.tmp-ABCDEFGH-zz"), "w") as f:
            f.write("x")

    def after_init(rc):
        bad = []
        if traces("d1"):
            bad.append(f"the interrupted remove of d1 left {traces('d1')}")
        if mounts_under(os.path.join(R, "mnt")):
            bad.append(f"a stale union stays: {mounts_under(os.path.join(R, 'mnt'))}")
        return bad
    n_total += cases("init", [STRATA, "--root", R, "init"], R, before_init, after_init)

    # ---- serve's ApplyDiff ----
    n_total += serve_cases(tarpath, reference)
    print(f"# {n_total} kill points")


# ---------------- strata serve ----------------

class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=30)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.path)


def call(sock, method, body=None, path=None, raw=None):
    c = UnixHTTP(sock)
    try:
        data = raw if raw is not None else json.dumps(body or {}).encode()
        c.request("POST", path or "/" + method, body=data,
                  headers={"Content-Type": "application/json", "Content-Length": str(len(data))})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def start_serve(sock):
    if os.path.exists(sock):
        os.unlink(sock)
    log = open(os.path.join(TMP, "serve.log"), "ab")
    p = subprocess.Popen([STRATA, "serve", "--socket", sock, "--log-level", "error"], stdout=log, stderr=log)
    STARTED.append(p)
    # The socket file appears at bind(), a moment before listen().
    for attempt in range(500):
        try:
            st_, _ = call(sock, "GraphDriver.Init", {"Home": R, "Opts": []})
            break
        except (FileNotFoundError, ConnectionRefusedError):
            if attempt == 499 or p.poll() is not None:
                raise
            time.sleep(0.01)
    if st_ != 200:
        raise RuntimeError(f"serve Init: {st_}")
    return p


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_attached(pid, timeout=10):
    """Until every thread of pid is traced."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
            traced = 0
            for t in tids:
                with open(f"/proc/{pid}/task/{t}/status") as f:
                    traced += any(l.startswith("TracerPid:") and l.split()[1] != "0" for l in f)
            if tids and traced == len(tids):
                return
        except OSError:
            return  # gone
        time.sleep(0.005)


def serve_cases(tarpath, reference):
    """ApplyDiff through a running serve: strace attaches to it (all its
    threads) right before the call, so kill points are counted from the
    call on."""
    sock = os.path.join(TMP, "s.sock")
    with open(tarpath, "rb") as f:
        tar = f.read()

    def apply_via(p_serve, inject):
        argv = ["strace", "-f", "-qq", "-p", str(p_serve.pid)]
        log = os.path.join(TMP, "serve.strace")
        argv += ["-o", log] + (["-e", f"inject={inject[0]}:error=EINTR:signal=KILL:when={inject[1]}"] if inject else [])
        tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        STARTED.append(tracer)
        wait_attached(p_serve.pid)
        try:
            status, body = call(sock, None, path="/GraphDriver.ApplyDiff?id=s1&parent=base", raw=tar)
        except (OSError, http.client.HTTPException) as e:
            status, body = None, str(e).encode()
        if inject is not None:
            # Killed at the kill point, unless the call ran whole
            # without reaching it.
            try:
                p_serve.wait(0.5 if status == 200 else 10)
            except subprocess.TimeoutExpired:
                pass
        if tracer.poll() is None:
            tracer.send_signal(signal.SIGINT)  # detach
        try:
            tracer.wait(30)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait()
        return status, body, log

    # The record: one ApplyDiff, traced.
    p = start_serve(sock)
    if exists("s1"):
        st("rm", "s1")
    st("create", "s1", "base")
    status, body, log = apply_via(p, None)
    stop(p)
    counts, points, seen = {}, [], set()
    with open(log, errors="replace") as f:
        for line in f:
            m = STRACE_LINE.match(line)
            if not m:
                continue
            key = (m.group(1), m.group(2))
            counts[key] = counts.get(key, 0) + 1
            if (m.group(2), counts[key]) not in seen:
                seen.add((m.group(2), counts[key]))
                points.append((m.group(2), counts[key]))
    points = points[::STEP]
    tap(status == 200 and snapshot(os.path.join(R, "diff/s1")) == reference,
        f"serve ApplyDiff, traced: 200 and the whole layer ({len(points)} kill points)", status, body[:300])

    for name, k in points:
        st("rm", "s1")
        st("create", "s1", "base")
        p = start_serve(sock)
        status, body, _ = apply_via(p, (name, k))
        stop(p)
        bad = recover()
        got = snapshot(os.path.join(R, "diff/s1"))
        if not bad and got not in ("", reference):
            bad.append("s1 is neither empty nor the whole tar:\n" + got[:2000])
        if not bad and got == "" and status == 200:
            bad.append("ApplyDiff answered 200 but the layer is empty")
        tap(not bad, f"serve ApplyDiff: killed before {name} #{k}", *bad)
    return len(points)


def cleanup():
    for p in STARTED:
        if p.poll() is None:
            p.kill()
            p.wait()
    if os.path.isdir(os.path.join(R, "mnt")):
        subprocess.run([STRATA, "--root", R, "cleanup"], capture_output=True)
    for m in mounts_under(TMP):
        subprocess.run(["umount", "-l", m], capture_output=True)
    shutil.rmtree(TMP, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        import traceback
        tap(False, f"the test itself failed: {type(e).__name__}: {e}", traceback.format_exc())
    finally:
        cleanup()
        if mounts_under(TMP):
            tap(False, f"mounts left under {TMP}")
        print(f"1..{N}")
    sys.exit(1 if FAILED else 0)
