"""containerd's snapshots API (containerd.services.snapshots.v1.Snapshots)
spoken with python3-grpcio and raw protobuf bytes: a small encoder/decoder,
the Mount and Info messages decoded, and a client whose methods build the
requests (no generated code).  For t_snapshotter_grpc.py (and through it
t_crash_snapshotter.py), which talk to `strata snapshotter` directly, and
ctd_snapclient.py, which talks to containerd.

Imported first by a test script: if the python3 running it has no grpc
module, the script runs again under /usr/bin/python3 or, failing that, is
skipped (a TAP plan of 0)."""

import os
import sys

try:
    import grpc
except ImportError:
    # A python3 earlier on PATH (pyenv, a venv) may lack Debian's python3-grpcio.
    alt = "/usr/bin/python3"
    if (not os.environ.get("STRATA_IT_REEXEC") and os.access(alt, os.X_OK)
            and os.path.realpath(sys.executable) != os.path.realpath(alt)):
        os.environ["STRATA_IT_REEXEC"] = "1"
        os.execv(alt, [alt] + sys.argv)
    print("1..0 # SKIP python3-grpcio (import grpc) is not installed")
    sys.exit(0)

SVC = "/containerd.services.snapshots.v1.Snapshots/"
MiB = 1 << 20
CALL_TIMEOUT = 20.0  # a call's deadline unless the client is given another

VIEW, ACTIVE, COMMITTED = 1, 2, 3
KIND_NAME = {0: "unknown", VIEW: "view", ACTIVE: "active", COMMITTED: "committed"}

# ---------------------------------------------------------------- protobuf


def varint(n):
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def f_bytes(num, b):
    if isinstance(b, str):
        b = b.encode()
    return varint(num << 3 | 2) + varint(len(b)) + b


def f_int(num, v):
    return varint(num << 3) + varint(v)


def f_map(num, d):
    """map<string,string>: repeated entry messages {1: key, 2: value}."""
    return b"".join(f_bytes(num, f_bytes(1, k) + f_bytes(2, v)) for k, v in (d or {}).items())


def f_strs(num, xs):
    return b"".join(f_bytes(num, x) for x in xs)


def read_varint(b, i):
    n = s = 0
    while True:
        if i >= len(b):
            raise ValueError("truncated varint")
        c = b[i]
        i += 1
        n |= (c & 0x7F) << s
        s += 7
        if not c & 0x80:
            return n, i


def fields(b):
    """The fields of a message: {number: [values]} (bytes or ints)."""
    out = {}
    i = 0
    while i < len(b):
        k, i = read_varint(b, i)
        num, wt = k >> 3, k & 7
        if wt == 0:
            v, i = read_varint(b, i)
        elif wt == 2:
            n, i = read_varint(b, i)
            if i + n > len(b):
                raise ValueError("truncated field")
            v = bytes(b[i : i + n])
            i += n
        elif wt == 1:
            v = bytes(b[i : i + 8])
            i += 8
        elif wt == 5:
            v = bytes(b[i : i + 4])
            i += 4
        else:
            raise ValueError(f"wire type {wt}")
        out.setdefault(num, []).append(v)
    return out


def one(f, num, default=None):
    v = f.get(num)
    return v[-1] if v else default


def s64(n):
    return n - (1 << 64) if n >= 1 << 63 else n


def string(f, num):
    return one(f, num, b"").decode("utf-8", "surrogateescape")


class Mount:
    def __init__(self, raw):
        f = fields(raw)
        self.type = string(f, 1)
        self.source = string(f, 2)
        self.target = string(f, 3)
        self.options = [o.decode() for o in f.get(4, [])]

    def opt(self, name):
        """The value of option name=VALUE, or None."""
        for o in self.options:
            if o.startswith(name + "="):
                return o[len(name) + 1 :]
        return None

    def __eq__(self, other):
        return (self.type, self.source, self.options) == (other.type, other.source, other.options)

    def __repr__(self):
        return f"Mount(type={self.type!r}, source={self.source!r}, options={self.options!r})"


def mounts_of(raw):
    return [Mount(m) for m in fields(raw).get(1, [])]


def timestamp_ns(raw):
    if raw is None:
        return None
    f = fields(raw)
    return s64(one(f, 1, 0)) * 1_000_000_000 + one(f, 2, 0)


class Info:
    def __init__(self, raw):
        f = fields(raw)
        self.name = string(f, 1)
        self.parent = string(f, 2)
        self.kind = one(f, 3, 0)
        self.created = timestamp_ns(one(f, 4))
        self.updated = timestamp_ns(one(f, 5))
        self.labels = {}
        for e in f.get(6, []):
            ef = fields(e)
            self.labels[string(ef, 1)] = string(ef, 2)

    def tuple(self):
        return (self.name, self.parent, self.kind, self.created, self.updated, sorted(self.labels.items()))

    def __eq__(self, other):
        return self.tuple() == other.tuple()

    def __repr__(self):
        return (f"Info(name={self.name!r}, parent={self.parent!r}, kind={KIND_NAME.get(self.kind, self.kind)}, "
                f"created={self.created}, updated={self.updated}, labels={self.labels!r})")


# ---------------------------------------------------------------- client


class Client:
    """Raw gRPC calls on one channel; each method builds the request bytes.
    metadata: (name, value) pairs sent with every call (containerd's
    namespace and lease headers); timeout: each call's deadline (seconds)."""

    def __init__(self, sock, metadata=None, timeout=CALL_TIMEOUT):
        self.sock = sock
        self.metadata = metadata
        self.timeout = timeout
        self.ch = grpc.insecure_channel("unix:" + sock, options=[
            ("grpc.max_send_message_length", 64 * MiB),
            ("grpc.max_receive_message_length", 64 * MiB),
        ])

    def close(self):
        self.ch.close()

    def raw(self, method, body):
        return self.ch.unary_unary(SVC + method, request_serializer=None, response_deserializer=None)(
            body, timeout=self.timeout, metadata=self.metadata)

    def raw_stream(self, method, body):
        return self.ch.unary_stream(SVC + method, request_serializer=None, response_deserializer=None)(
            body, timeout=self.timeout, metadata=self.metadata)

    def prepare(self, key, parent="", labels=None):
        return mounts_of(self.raw("Prepare", f_bytes(1, "strata") + f_bytes(2, key) + f_bytes(3, parent)
                                  + f_map(4, labels)))

    def view(self, key, parent="", labels=None):
        return mounts_of(self.raw("View", f_bytes(1, "strata") + f_bytes(2, key) + f_bytes(3, parent)
                                  + f_map(4, labels)))

    def mounts(self, key):
        return mounts_of(self.raw("Mounts", f_bytes(1, "strata") + f_bytes(2, key)))

    def commit(self, name, key, labels=None):
        self.raw("Commit", f_bytes(1, "strata") + f_bytes(2, name) + f_bytes(3, key) + f_map(4, labels))

    def remove(self, key):
        self.raw("Remove", f_bytes(1, "strata") + f_bytes(2, key))

    def stat(self, key):
        return Info(one(fields(self.raw("Stat", f_bytes(1, "strata") + f_bytes(2, key))), 1, b""))

    def update(self, key, labels=None, paths=None):
        info = f_bytes(1, key) + f_map(6, labels)
        body = f_bytes(1, "strata") + f_bytes(2, info)
        if paths is not None:
            body += f_bytes(3, f_strs(1, paths))
        return Info(one(fields(self.raw("Update", body)), 1, b""))

    def list_messages(self, filters=()):
        """Every ListSnapshotsResponse, as a list of lists of Info."""
        it = self.raw_stream("List", f_bytes(1, "strata") + f_strs(2, filters))
        return [[Info(x) for x in fields(msg).get(1, [])] for msg in it]

    def list(self, filters=()):
        return [i for m in self.list_messages(filters) for i in m]

    def usage(self, key):
        f = fields(self.raw("Usage", f_bytes(1, "strata") + f_bytes(2, key)))
        return s64(one(f, 1, 0)), s64(one(f, 2, 0))

    def cleanup(self):
        self.raw("Cleanup", f_bytes(1, "strata"))
