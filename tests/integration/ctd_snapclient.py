#!/usr/bin/python3
"""A tiny client of containerd's snapshots API, for t_containerd_thin.sh:
the calls containerd's CRI makes when it unpacks an image for a remote
snapshotter, sent to containerd itself (its gRPC socket), which hands them
to the snapshotter named in the request.  Raw bytes over Debian's
python3-grpcio with a hand-written protobuf encoder: no generated code.

  ctd_snapclient.py prepare SOCK NS LEASE KEY PARENT [NAME=VALUE...]
      Prepare(snapshotter="strata", key, parent, labels).  Prints
      "ALREADY_EXISTS <details>" or "OK" then one line per mount
      ("TYPE SOURCE OPT,OPT,..."); exit 0 for both, 1 for any other answer.
  ctd_snapclient.py view SOCK NS LEASE KEY PARENT [NAME=VALUE...]
      View, the same way (ctr's own `snapshots view` sets no labels, so
      containerd's next garbage collection takes its views).
  ctd_snapclient.py stat SOCK NS KEY
      Stat: "Name=... Parent=... Kind=... Labels=k=v,..." (labels sorted).
  ctd_snapclient.py remove SOCK NS KEY
      Remove: "OK" or the error.

NS is sent as the containerd-namespace header, LEASE (unless "-") as
containerd-lease, as the CRI does.
"""
import sys

import grpc

SERVICE = "/containerd.services.snapshots.v1.Snapshots/"
SNAPSHOTTER = "strata"
KINDS = {0: "Unknown", 1: "View", 2: "Active", 3: "Committed"}


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_str(num, s):
    # proto3: an empty string is not sent
    return field_bytes(num, s) if s else b""


def field_map(num, labels):
    return b"".join(field_bytes(num, field_bytes(1, k) + field_bytes(2, v)) for k, v in sorted(labels.items()))


def decode(buf):
    """Fields of a message: a list of (number, value), value an int or bytes."""
    out, i = [], 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wt)
        out.append((num, v))
    return out


def read_varint(buf, i):
    n, shift = 0, 0
    while True:
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def mount_text(m):
    typ, src, opts = "", "", []
    for num, v in decode(m):
        if num == 1:
            typ = v.decode()
        elif num == 2:
            src = v.decode()
        elif num == 4:
            opts.append(v.decode())
    return "%s %s %s" % (typ, src, ",".join(opts))


def info_text(b):
    name, parent, kind, labels = "", "", 0, {}
    for num, v in decode(b):
        if num == 1:
            name = v.decode()
        elif num == 2:
            parent = v.decode()
        elif num == 3:
            kind = v
        elif num == 6:
            kv = dict(decode(v))
            labels[kv.get(1, b"").decode()] = kv.get(2, b"").decode()
    ls = ",".join("%s=%s" % (k, v) for k, v in sorted(labels.items()))
    return "Name=%s Parent=%s Kind=%s Labels=%s" % (name, parent, KINDS.get(kind, kind), ls)


def call(sock, ns, lease, method, req):
    md = [("containerd-namespace", ns)]
    if lease and lease != "-":
        md.append(("containerd-lease", lease))
    with grpc.insecure_channel("unix:" + sock) as ch:
        f = ch.unary_unary(SERVICE + method, request_serializer=None, response_deserializer=None)
        return f(req, metadata=md, timeout=60)


def main():
    a = sys.argv[1:]
    if len(a) >= 6 and a[0] in ("prepare", "view"):
        sock, ns, lease, key, parent = a[1:6]
        labels = dict(x.split("=", 1) for x in a[6:])
        req = field_str(1, SNAPSHOTTER) + field_str(2, key) + field_str(3, parent) + field_map(4, labels)
        try:
            resp = call(sock, ns, lease, a[0].capitalize(), req)
        except grpc.RpcError as e:
            print("%s %s" % (e.code().name, e.details()))
            return 0 if e.code() == grpc.StatusCode.ALREADY_EXISTS else 1
        print("OK")
        for num, v in decode(resp):
            if num == 1:
                print(mount_text(v))
        return 0
    if len(a) == 4 and a[0] in ("stat", "remove"):
        sock, ns, key = a[1:4]
        req = field_str(1, SNAPSHOTTER) + field_str(2, key)
        try:
            resp = call(sock, ns, "-", a[0].capitalize(), req)
        except grpc.RpcError as e:
            print("%s %s" % (e.code().name, e.details()))
            return 1
        if a[0] == "remove":
            print("OK")
        else:
            for num, v in decode(resp):
                if num == 1:
                    print(info_text(v))
        return 0
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
