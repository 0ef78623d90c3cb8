#!/usr/bin/env python3
""":"
# Run by bash (meson's integration_tests runs each script with bash): hand
# over to Python.  Python reads these lines as a string and goes on below.
exec python3 "$0" "$@"
":"""
"""Crash injection into `strata snapshotter`: each of Prepare (with a
parent), View, Commit, Remove, Update (labels) and Cleanup killed with
SIGKILL before each of the system calls that serve it, then the daemon
started again on the same store.  Prints TAP, one case per kill point.

How a kill point is made (as t_crash.py does for serve's ApplyDiff): the
daemon runs on a store restored from a template; a warm-up List opens the
client's connection; strace attaches to every thread of the daemon (-f -p)
with `-e inject=SYSCALL:error=EINTR:signal=KILL:when=N`, the call is sent,
strace detaches.  strace counts per system call and per thread, so the
kill comes before the N-th SYSCALL made by any one thread (the main thread
reading the request, the call's own thread, gRPC's).  A recorded, traced
call names the system calls; for each, N runs from 1 until a run ends
without the kill firing (that last run is a case too: nothing killed).

After each run the daemon is started again on the store and:
  (1) it starts (it reconciles: rows whose layer is gone dropped, ctd-
      layers without a row removed);
  (2) List's names = the database's rows, their layers = STORE/layers;
  (3) `strata check` prints nothing and exits 0;
  (4) every snapshot (kind, parent, labels, layer, the layer's files) is
      as before the call or as after it, all together; for Commit the
      active key or the committed name, never both, never neither; a layer
      no row names leaves nothing anywhere in the store;
  (5) the call again if it had not happened, then one more of its kind on
      another snapshot: both succeed.

    STRATA_BIN=build/strata python3 tests/integration/t_crash_snapshotter.py
    CRASH_STEP=N   N = 1, 1+N, 1+2N, ... for each system call (default 1)
    CRASH_OPS=a,b  only these operations (prepare,view,commit,remove,update,cleanup)

Reuses t_crash.py's helpers (TAP, strace attach, store traces),
t_snapshotter_grpc.py's (daemons, the store's rows and layers) and
snapproto.py's client (raw protobuf over python3-grpcio).
"""

import os
import sys

# First: where this python3 has no grpc module, snapproto runs the script again under /usr/bin/python3.
import snapproto as sp

if os.geteuid() != 0 or not os.access(os.environ.get("STRATA_BIN", ""), os.X_OK):
    print("1..0 # SKIP needs root and STRATA_BIN")
    sys.exit(0)

import hashlib
import shutil
import signal
import subprocess
import time
import traceback

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import t_crash as tc  # noqa: E402
import t_snapshotter_grpc as tg  # noqa: E402
from tap import Fail  # noqa: E402

# One scratch dir: t_crash's (its cleanup unmounts under it and removes it).
shutil.rmtree(tg.TMP, ignore_errors=True)
tc.TMP = os.path.realpath(tc.TMP)
tc.R = os.path.join(tc.TMP, "root")
tg.TMP = tc.TMP
STORE = tc.R
TEMPLATE = os.path.join(tc.TMP, "template")
SOCK = os.path.join(tc.TMP, "snap.sock")
STEP = int(os.environ.get("CRASH_STEP", "1"))
MAX_N = 5000  # a system call still killing at this count: a busy loop, reported
DEBRIS = "ctd-dead00000000000000000000"  # a layer no row names, for Cleanup
DEBRIS2 = "ctd-dead00000000000000000001"
REF = "sha256:" + "ab" * 32

# Each operation: the call, the same kind of call on another snapshot (the
# follow-up), what it touches.
OPS = {
    "prepare": dict(touched=("p-new",), call=lambda c: c.prepare("p-new", "c-top", {"l": "p"}),
                    again=lambda c: c.prepare("p-new2", "c-top", {"l": "p2"})),
    "view": dict(touched=("v-new",), call=lambda c: c.view("v-new", "c-top", {"l": "v"}),
                 again=lambda c: c.view("v-new2", "c-top")),
    "commit": dict(touched=("a-commit", "c-new"), call=lambda c: c.commit("c-new", "a-commit", {"containerd.io/snapshot.ref": REF}),
                   again=lambda c: c.commit("c-new2", "a-commit2")),
    "remove": dict(touched=("r-rm",), call=lambda c: c.remove("r-rm"),
                   again=lambda c: c.remove("r-rm2")),
    # labels.b unset, labels.c set: {a, b} -> {a, c}
    "update": dict(touched=("u-lab",), call=lambda c: c.update("u-lab", {"c": "3"}, ["labels.b", "labels.c"]),
                   again=lambda c: c.update("u-lab", {"z": "9"}, ["labels.z"])),
    "cleanup": dict(touched=(), call=lambda c: c.cleanup(),
                    again=lambda c: c.cleanup()),
}


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def strata(*args):
    return subprocess.run([tc.STRATA, "--root", STORE, *args], capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- daemons

def start(name):
    """A snapshotter on STORE, serving, and a client on it."""
    d = tg.Snapshotter(STORE, SOCK, name=name)
    end = time.monotonic() + 20
    while True:
        if not d.alive():
            raise Fail(f"{name} exited with {d.proc.returncode} before serving", *d.log_tail())
        if tg.socket_accepts(SOCK) and "serving on" in d.log():
            break
        if time.monotonic() > end:
            raise Fail(f"{name} does not serve within 20 s", *d.log_tail())
        time.sleep(0.005)
    return d, sp.Client(SOCK)


def kill(d, cli=None):
    if cli:
        cli.close()
    d.kill9()


def restore():
    shutil.rmtree(STORE)
    subprocess.run(["cp", "-a", TEMPLATE, STORE], check=True)


def make_debris(lid, files):
    p = strata("create", lid)
    if p.returncode != 0:
        raise RuntimeError(f"strata create {lid}: {p.stderr.strip()}")
    for name in files:
        write(os.path.join(STORE, "diff", lid, name), name.encode())


# ---------------------------------------------------------------- the store's state

def tree_hash(lid):
    d = os.path.join(STORE, "diff", lid)
    if not os.path.isdir(d):
        return "<no diff dir>"
    return hashlib.sha256(tc.snapshot(d).encode()).hexdigest()[:12]


def state(cli, known_ids, touched=()):
    """{name: (kind, parent, labels, layer, files, mounts or usage, times)}
    of every snapshot; a layer the template does not have is 'new'; the
    times of the snapshots the call touches are left out."""
    rows = tg.db_rows(STORE)

    def lid_of(path):
        lid = os.path.basename(os.path.realpath(path))
        return lid if lid in known_ids else "new"

    out = {}
    for i in cli.list():
        lid = rows[i.name][0] if i.name in rows else "<no row>"
        if i.kind == sp.COMMITTED:
            more = ("usage", cli.usage(i.name))
        else:  # the layers its mounts name: its own and its parents'
            more = tuple((m.type, "ro" in m.options, lid_of(m.source if m.type == "bind" else m.opt("upperdir") or ""),
                          tuple(lid_of(x) for x in tg.lowers(m))) for m in cli.mounts(i.name))
        out[i.name] = (sp.KIND_NAME.get(i.kind, i.kind), i.parent, tuple(sorted(i.labels.items())),
                       lid if lid in known_ids else "new", tree_hash(lid), more,
                       None if i.name in touched else (i.created, i.updated))
    return out


def diff_states(got, want):
    lines = []
    for k in sorted(set(got) | set(want)):
        if got.get(k) != want.get(k):
            lines.append(f"  {k}: {got.get(k)!r} (expected {want.get(k)!r})")
    return lines


def check_store(cli):
    """(2) and (3)."""
    bad = tg.store_problems(cli, STORE, check=False)
    p = strata("check")
    if p.returncode != 0 or p.stdout.strip() or p.stderr.strip():
        bad.append(f"strata check: exit {p.returncode}: {(p.stdout + p.stderr).strip()[:1500]}")
    return bad


# ---------------------------------------------------------------- the template

def build_template():
    os.makedirs(STORE)
    d, c = start("template")
    try:
        c.prepare("a0", "")
        c.commit("c-base", "a0")
        c.prepare("a1", "c-base")
        c.commit("c-top", "a1")
        ids = {k: v[0] for k, v in tg.db_rows(STORE).items()}
        write(os.path.join(STORE, "diff", ids["c-base"], "base"), b"base\n")
        write(os.path.join(STORE, "diff", ids["c-top"], "top"), b"top\n")
        for key, files in (("a-commit", ["f1", "dir/f2"]), ("a-commit2", ["g"]),
                           ("r-rm", ["x", "d/y", "d/e/z"]), ("r-rm2", ["w"])):
            c.prepare(key, "c-top", {"k": key})
            lid = tg.db_rows(STORE)[key][0]
            for f in files:
                write(os.path.join(STORE, "diff", lid, f), f.encode())
        c.view("u-lab", "c-top", {"a": "1", "b": "2"})
        bad = check_store(c)
        if bad:
            raise RuntimeError("the template store is not clean: " + "; ".join(bad))
    finally:
        kill(d, c)
    if os.path.exists(SOCK):
        os.unlink(SOCK)
    subprocess.run(["cp", "-a", STORE, TEMPLATE], check=True)


# ---------------------------------------------------------------- one run

def wait_attached(d, tracer, timeout=10):
    """Until strace traces every thread of d (t_crash.wait_attached, which
    waits on a zombie killed at the first kill point till its timeout)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and d.alive() and tracer.poll() is None:
        try:
            tids = os.listdir(f"/proc/{d.pid}/task")
            traced = 0
            for t in tids:
                with open(f"/proc/{d.pid}/task/{t}/status") as f:
                    traced += any(x.startswith("TracerPid:") and x.split()[1] != "0" for x in f)
            if tids and traced == len(tids):
                return
        except OSError:
            return
        time.sleep(0.002)


def traced_call(d, cli, op, inject, log="/dev/null"):
    """The call with strace attached to every thread of d; returns the
    gRPC error (None: it succeeded) and whether d was killed."""
    argv = ["strace", "-f", "-qq", "-p", str(d.pid), "-o", log]
    if inject:
        argv += ["-e", f"inject={inject[0]}:error=EINTR:signal=KILL:when={inject[1]}"]
    tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tc.STARTED.append(tracer)
    try:
        wait_attached(d, tracer)
        err = None
        try:
            OPS[op]["call"](cli)
        except grpc.RpcError as e:
            err = e
        if err is not None:
            # Killed, most likely: strace leaves once every thread is gone.
            try:
                d.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
    finally:
        if tracer.poll() is None and d.alive():
            tracer.send_signal(signal.SIGINT)  # detach
        try:
            tracer.wait(3)
        except subprocess.TimeoutExpired:
            # strace interrupted while its tracee dies may not leave.
            tracer.kill()
            tracer.wait()
        tc.STARTED.remove(tracer)
    try:
        d.proc.wait(0.02)
    except subprocess.TimeoutExpired:
        pass
    return err, not d.alive()


def setup_run(op, name):
    restore()
    d, cli = start(name)
    if op == "cleanup":
        make_debris(DEBRIS, ["a", "b/c", "b/d"])
    cli.list()  # the connection is open before strace attaches
    return d, cli


def run_once(op, inject, ref):
    """One run killed at inject (SYSCALL, N); returns (fired, problems);
    counts in ref["seen"] how the snapshots were found."""
    bad = []
    d, cli = setup_run(op, f"{op}-{inject[0]}-{inject[1]}")
    err, fired = traced_call(d, cli, op, inject)
    if err is not None and not fired:
        bad.append(f"the call failed and the daemon was not killed: {err.code()}: {err.details()}")
    kill(d, cli)
    # (1) it starts again
    try:
        d, cli = start(f"{op}-restart")
    except Fail as e:
        return fired, bad + ["the snapshotter does not start again:"] + e.lines
    try:
        bad += check_store(cli)                                     # (2), (3)
        got = state(cli, ref["ids"], OPS[op]["touched"])
        # (Cleanup changes no snapshot: its before is its after.)
        which = "after" if got == ref["after"] else "before" if got == ref["before"] else None
        ref["seen"][which or "neither"] += 1
        if which is None:                                           # (4)
            bad.append("the snapshots are neither as before the call nor as after it; against after:")
            bad += diff_states(got, ref["after"])
            bad.append("against before:")
            bad += diff_states(got, ref["before"])
        if op == "commit" and ("a-commit" in got) == ("c-new" in got):
            bad.append(f"Commit: a-commit {'and' if 'a-commit' in got else 'nor'} c-new")
        if not fired and which != "after":
            bad.append(f"the call ran whole (not killed) but the snapshots are {which or 'neither'}")
        if err is None and which == "before":
            bad.append("the call succeeded but its change is lost")
        rows = {v[0] for v in tg.db_rows(STORE).values()}
        for lid in sorted(ref["ids"] - rows) + ([DEBRIS] if op == "cleanup" else []):
            t = tc.traces(lid)
            if t:
                bad.append(f"layer {lid} has no row but left {t}")
        if bad:
            return fired, bad
        # (5) the call again if it had not happened, then one of its kind more
        if which == "before":
            OPS[op]["call"](cli)
            got = state(cli, ref["ids"], OPS[op]["touched"])
            if got != ref["after"]:
                return fired, ["after the call made again, the snapshots are not as after it:"] + \
                    diff_states(got, ref["after"])
        if op == "cleanup":
            make_debris(DEBRIS2, ["q"])
        OPS[op]["again"](cli)
        if op == "cleanup" and tc.traces(DEBRIS2):
            bad.append(f"a follow-up Cleanup left {tc.traces(DEBRIS2)}")
        bad += tg.store_problems(cli, STORE, check=False)
    except grpc.RpcError as e:
        bad.append(f"after the restart: {e.code()}: {e.details()}")
    except Exception as e:
        bad.append(f"{type(e).__name__}: {e}")
        bad += traceback.format_exc().splitlines()[-4:]
    finally:
        kill(d, cli)
    return fired, bad


def sweep(op):
    t0 = time.monotonic()
    # before: the template as the daemon reads it
    d, cli = setup_run(op, f"{op}-ref")
    ids = {v[0] for v in tg.db_rows(STORE).values()} | ({DEBRIS} if op == "cleanup" else set())
    ref = {"ids": ids, "seen": {"before": 0, "after": 0, "neither": 0}, "before": state(cli, ids, OPS[op]["touched"])}
    # the record: one call, traced, not killed
    log = os.path.join(tc.TMP, f"{op}.strace")
    err, fired = traced_call(d, cli, op, None, log)
    ref["after"] = state(cli, ids, OPS[op]["touched"])
    bad = check_store(cli)
    kill(d, cli)
    names = []
    with open(log, errors="replace") as f:
        for line in f:
            m = tc.STRACE_LINE.match(line)
            if m and m.group(2) not in names:
                names.append(m.group(2))
    changed = ref["after"] != ref["before"] or op == "cleanup"  # Cleanup changes no snapshot
    tc.tap(err is None and not fired and not bad and changed,
           f"{op}: the call traced, not killed: it succeeds and changes the store ({len(names)} system calls: "
           f"{' '.join(names)})",
           *([f"{err.code()}: {err.details()}"] if err else []), *bad)
    if op == "cleanup" and tc.traces(DEBRIS):
        tc.tap(False, f"cleanup: the traced Cleanup left {tc.traces(DEBRIS)}")

    points = 0
    for name in names:
        n = 1
        while True:
            fired, bad = run_once(op, (name, n), ref)
            points += fired
            what = f"killed before {name} #{n}" if fired else f"{name} #{n} not reached: the call ran whole"
            tc.tap(not bad, f"{op}: {what}", *bad)
            if not fired:
                break
            n += STEP
            if n > MAX_N:
                tc.tap(False, f"{op}: {name} still kills at #{n}")
                break
    seen = ref["seen"]
    print(f"# {op}: {points} kill points in {time.monotonic() - t0:.1f} s (found as before the call "
          f"{seen['before']} times, as after {seen['after']}" + (f", neither {seen['neither']}" if seen["neither"] else "")
          + ")")
    sys.stdout.flush()
    return points


def main():
    build_template()
    want = [o for o in os.environ.get("CRASH_OPS", ",".join(OPS)).split(",") if o]
    total = 0
    counts = {}
    for op in want:
        counts[op] = sweep(op)
        total += counts[op]
    print(f"# {total} kill points: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def on_term(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)  # meson's timeout: clean up all the same
    try:
        main()
    except BaseException as e:
        tc.tap(False, f"the test itself failed: {type(e).__name__}: {e}", traceback.format_exc())
    finally:
        for p in tg.PROCS:
            if p.alive():
                p.proc.kill()
                p.proc.wait()
        tc.cleanup()
        if tc.mounts_under(tc.TMP):
            tc.tap(False, f"mounts left under {tc.TMP}")
        print(f"1..{tc.N}")
    sys.exit(1 if tc.FAILED else 0)
