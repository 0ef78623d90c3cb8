"""TAP for the Python integration tests (t_plugin.py, t_snapshotter_grpc.py):
cases run as decorated functions, assertions that fail them with diagnostics,
and the script's main run under a global alarm with its cleanup and plan.
Standard library only: imported by whichever python3 runs the script (the
script's own directory is sys.path[0])."""

import signal
import sys
import traceback


class Fail(Exception):
    """A failed assertion; its lines become TAP diagnostics."""

    def __init__(self, *lines):
        super().__init__("\n".join(str(x) for x in lines))
        self.lines = [str(x) for x in lines]


class Alarm(BaseException):
    pass


T_N = 0
T_FAILED = 0

# (exception class, text of the diagnostic's first line) a script adds for
# the errors it wants told its own way (explain below)
_EXPLAIN = []


def emit(ok, desc, diag=()):
    global T_N, T_FAILED
    T_N += 1
    if not ok:
        T_FAILED += 1
    print(f"{'ok' if ok else 'not ok'} {T_N} - {desc}")
    for block in diag:
        for line in str(block).splitlines() or [""]:
            print(f"# {line}")
    sys.stdout.flush()


def explain(cls, text):
    """A case failing with an exception of class cls says text(e) (instead of
    "exception: repr(e)") above the lines where it was raised."""
    _EXPLAIN.append((cls, text))


def case(desc):
    """Decorator: run the function now as one TAP case.  It passes when it
    returns; Fail or any other exception fails it."""

    def run(fn):
        try:
            fn()
        except Fail as e:
            emit(False, desc, e.lines)
        except Exception as e:
            tb = traceback.extract_tb(e.__traceback__)
            # the lines of the test script (the one the case is written in)
            here = [f"  at line {f.lineno}: {f.line}" for f in tb if f.filename == fn.__code__.co_filename][-3:]
            text = next((t for cls, t in _EXPLAIN if isinstance(e, cls)), lambda e: f"exception: {e!r}")
            emit(False, desc, [text(e)] + here)
        else:
            emit(True, desc)
        return fn

    return run


def expect(cond, *lines):
    if not cond:
        raise Fail(*lines)


def expect_eq(got, want, what="value"):
    if got != want:
        raise Fail(f"{what}:", f"  got:      {got!r}", f"  expected: {want!r}")


def run_script(main, cleanup, timeout):
    """main() under an alarm of timeout seconds (SIGTERM ends it too), a
    crash of it one failed case, then cleanup() and the plan; exits 1 if any
    case failed."""

    def on_alarm(signum, frame):
        raise Alarm(f"the test ran longer than {timeout}s")

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(timeout)
    crashed = None
    try:
        main()
    except BaseException as e:  # Alarm, Ctrl-C, a bug in the script itself
        crashed = e
        emit(False, "the test script ran to the end", [repr(e)] + traceback.format_exc().splitlines()[-6:])
    finally:
        signal.alarm(0)
        try:
            cleanup()
        finally:
            print(f"1..{T_N}")
            sys.stdout.flush()
    sys.exit(1 if T_FAILED or crashed else 0)
