#!/usr/bin/python3
"""A tiny client of containerd's snapshots API, for t_containerd_thin.sh:
the calls containerd's CRI makes when it unpacks an image for a remote
snapshotter, sent to containerd itself (its gRPC socket), which hands them
to the snapshotter named in the request.  Raw bytes over Debian's
python3-grpcio with snapproto.py's hand-written protobuf encoder and
client: no generated code.

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
from snapproto import KIND_NAME, Client


def mount_text(m):
    return "%s %s %s" % (m.type, m.source, ",".join(m.options))


def info_text(i):
    ls = ",".join("%s=%s" % (k, v) for k, v in sorted(i.labels.items()))
    kind = str(KIND_NAME.get(i.kind, i.kind)).capitalize()
    return "Name=%s Parent=%s Kind=%s Labels=%s" % (i.name, i.parent, kind, ls)


def client(sock, ns, lease):
    md = [("containerd-namespace", ns)]
    if lease and lease != "-":
        md.append(("containerd-lease", lease))
    return Client(sock, metadata=md, timeout=60)


def main():
    a = sys.argv[1:]
    if len(a) >= 6 and a[0] in ("prepare", "view"):
        sock, ns, lease, key, parent = a[1:6]
        labels = dict(x.split("=", 1) for x in a[6:])
        c = client(sock, ns, lease)
        try:
            mounts = getattr(c, a[0])(key, parent, dict(sorted(labels.items())))
        except grpc.RpcError as e:
            print("%s %s" % (e.code().name, e.details()))
            return 0 if e.code() == grpc.StatusCode.ALREADY_EXISTS else 1
        finally:
            c.close()
        print("OK")
        for m in mounts:
            print(mount_text(m))
        return 0
    if len(a) == 4 and a[0] in ("stat", "remove"):
        sock, ns, key = a[1:4]
        c = client(sock, ns, "-")
        try:
            info = getattr(c, a[0])(key)
        except grpc.RpcError as e:
            print("%s %s" % (e.code().name, e.details()))
            return 1
        finally:
            c.close()
        print("OK" if a[0] == "remove" else info_text(info))
        return 0
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main())
