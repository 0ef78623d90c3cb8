#!/usr/bin/env bash
# Remote snapshots as Kubernetes gets them: containerd's CRI plugin (Debian's
# containerd 1.6, a private one) with `snapshotter = "strata"` and
# `disable_snapshot_annotations = false` pulls an image from a local
# registry (Debian's docker-registry on 127.0.0.1, the image pushed with
# skopeo) on a `runtime.v1.ImageService/PullImage` call, as the kubelet
# makes it (raw gRPC from /usr/bin/python3, python3-grpcio).  The image's
# layers were published beforehand with `strata thin make --from` into a
# repository dir standing in for CernVM-FS; the snapshotter runs with
# -o thin.root=CV -o thin.repo=REPO.
#
#   1. every layer the repository holds becomes a thin snapshot, and the
#      registry serves the manifest and the config but no layer blob;
#   2. a container (ctr run in the CRI's namespace, k8s.io) sees the image's
#      root filesystem, read from the repository;
#   3. an image with one layer the repository lacks: that blob alone is
#      fetched and unpacked, the others are thin;
#   4. the images removed, containerd's GC empties the store.
#
#   STRATA_BIN=build/strata bash tests/integration/t_containerd_cri.sh
# shellcheck source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/docker_lib.sh"
. "$(dirname "$0")/ctd_lib.sh"

TOOL=$(dirname "$0")/ctd_tool.py
PY=/usr/bin/python3
D=$TEST_TMP/c # containerd's dir (short: socket paths)
CV=$TEST_TMP/cv
REPO=cri.test
R=$TEST_TMP/store
NS=k8s.io
CGROUP_MADE=
REG_PID=
CRI_PID=

cri_exit() {
	local rc=$?
	trap - INT TERM HUP
	if [[ -n $CRI_PID ]]; then
		stop_pid "$CRI_PID" 60
		kill_procs_under "$D"
	fi
	snap_stop
	[[ -n $REG_PID ]] && stop_pid "$REG_PID" 10
	unmount_under "$TEST_TMP"
	# The namespace's cgroup, only if this test made it (and it is empty).
	[[ -n $CGROUP_MADE ]] && rmdir "/sys/fs/cgroup/$NS" 2>/dev/null
	(exit "$rc")
	fixture_exit
}
trap cri_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

for need in "$CONTAINERD_BIN" "$CTR_BIN" /usr/bin/containerd-shim-runc-v2 /bin/busybox /usr/bin/docker-registry \
	/usr/bin/skopeo; do
	if [[ ! -x $need ]]; then
		skip "the CRI pulls remote snapshots" "$need is missing"
		exit 0
	fi
done
if ! "$PY" -c 'import grpc' 2>/dev/null; then
	skip "the CRI pulls remote snapshots" "$PY has no grpc (apt-get install python3-grpcio)"
	exit 0
fi
if [[ -e /sys/fs/cgroup/$NS ]]; then
	skip "the CRI pulls remote snapshots" "/sys/fs/cgroup/$NS exists: a Kubernetes node's; not touched"
	exit 0
fi

W=$TEST_TMP/w
mkdir -p "$W" "$D" "$CV/$REPO"
c() { timeout -k 10 120 "$CTR_BIN" --address "$D/ctd.sock" -n "$NS" "$@"; }

# cri_pull REF: the kubelet's PullImage, raw (ImageSpec{image: REF}).
cri_pull() {
	"$PY" - "$D/ctd.sock" "$1" <<'EOF'
import sys, grpc
def ld(field, b):
    b = b if isinstance(b, bytes) else b.encode()
    n, v = len(b), b""
    while True:
        x, n = n & 0x7F, n >> 7
        v += bytes([x | (0x80 if n else 0)])
        if not n:
            break
    return bytes([field << 3 | 2]) + v + b
ch = grpc.insecure_channel("unix:" + sys.argv[1])
pull = ch.unary_unary("/runtime.v1.ImageService/PullImage")
try:
    r = pull(ld(1, ld(1, sys.argv[2])), timeout=120)
except grpc.RpcError as e:
    print("PullImage: %s: %s" % (e.code(), e.details()), file=sys.stderr)
    sys.exit(1)
print(r[2:].decode())  # PullImageResponse{image_ref = 1}
EOF
}

# blob_gets FROM: the distinct blobs the registry served after line FROM of its log.
blob_gets() {
	tail -n "+$1" "$W/registry.log" | grep -o '"GET /v2/[^ ]*/blobs/sha256:[0-9a-f]*' | sed 's/.*blobs\///' |
		LC_ALL=C sort -u
}

# ---------------------------------------------------------------- inputs

python3 "$TOOL" busybox "$W/bb.tar" docker.io/strata-it/cri:1 "$W/chains" || exit 1
python3 "$TOOL" big "$W/big.tar" docker.io/strata-it/cri:2 "$W/big.chains" 1 || exit 1
mapfile -t CHAIN <"$W/chains"
st init >/dev/null || exit 1
"$STRATA" --root "$TEST_TMP/tm" init >/dev/null || exit 1
if "$STRATA" --root "$TEST_TMP/tm" -o "thin.root=$CV" thin make --repo "$REPO" --publisher "dir:$CV/$REPO" \
	--from "$W/bb.tar" >/dev/null 2>"$W/make.err"; then
	pass "strata thin make --from publishes the busybox image's 3 layers into the repository"
else
	fail "strata thin make --from publishes the busybox image's 3 layers into the repository" "$(tail -n 3 "$W/make.err")"
	exit 1
fi
# The big image: all five layers published, then the four above its base
# taken out of the repository again (a dir of this test's).
"$STRATA" --root "$TEST_TMP/tm2" init >/dev/null || exit 1
if ! "$STRATA" --root "$TEST_TMP/tm2" -o "thin.root=$CV" thin make --repo "$REPO" --publisher "dir:$CV/$REPO" \
	--from "$W/big.tar" >/dev/null 2>"$W/make2.err"; then
	fail "the big image's layers published" "$(tail -n 3 "$W/make2.err")"
	exit 1
fi
mapfile -t BIG_DIFFS < <("$PY" -c '
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
ix = json.load(t.extractfile("index.json"))
m = json.load(t.extractfile("blobs/sha256/" + ix["manifests"][0]["digest"][7:]))
c = json.load(t.extractfile("blobs/sha256/" + m["config"]["digest"][7:]))
print("\n".join(c["rootfs"]["diff_ids"]))' "$W/big.tar")
for d in "${BIG_DIFFS[@]:1}"; do
	rm -rf "${CV:?}/$REPO/.layers/${d:7:2}/${d:7}"
done
n=0
for d in "${BIG_DIFFS[@]}"; do [[ -d $CV/$REPO/.layers/${d:7:2}/${d:7}/layerfs ]] && n=$((n + 1)); done
is "the big image's base layer in the repository (by its diff id), its other four not" \
	"${#BIG_DIFFS[@]} $n $([[ -d $CV/$REPO/.layers/${BIG_DIFFS[0]:7:2}/${BIG_DIFFS[0]:7}/layerfs ]] && echo base)" "5 1 base"

# ---------------------------------------------------------------- registry

REG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
	"$TEST_TMP/registry" "$REG_PORT" >"$W/registry.yml"
docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
REG_PID=$!
for ((i = 0; i < 100; i++)); do
	curl -fsS "http://127.0.0.1:$REG_PORT/v2/" >/dev/null 2>&1 && break
	sleep 0.1
done
for img in bb:cri/bb big:cri/big; do
	skopeo copy --dest-tls-verify=false "oci-archive:$W/${img%%:*}.tar" "docker://127.0.0.1:$REG_PORT/${img#*:}:1" \
		>>"$W/skopeo.log" 2>&1 || {
		fail "skopeo copy of ${img%%:*} to the registry" "$(tail -n 3 "$W/skopeo.log")"
		exit 1
	}
done
pass "both images pushed to a local registry (docker-registry on 127.0.0.1:$REG_PORT, skopeo)"

# ---------------------------------------------------------------- daemons

if snap_start "$R" "$TEST_TMP/sn.sock" "$W/snapshotter.log" -o "thin.root=$CV" -o "thin.repo=$REPO"; then
	pass "strata snapshotter with -o thin.root=CV -o thin.repo=$REPO"
else
	fail "strata snapshotter with -o thin.root=CV -o thin.repo=$REPO" "$(tail -n 5 "$W/snapshotter.log")"
	exit 1
fi
# The CRI on, with strata as its snapshotter and the digest labels passed
# (contrib/containerd/config.toml's settings); no CNI (no pod runs here).
cat >"$D/config.toml" <<EOF
version = 2
root = "$D/root"
state = "$D/state"
[grpc]
  address = "$D/ctd.sock"
[ttrpc]
  address = "$D/ctd.sock.ttrpc"
[debug]
  address = "$D/debug.sock"
  level = "debug"
[plugins."io.containerd.internal.v1.opt"]
  path = "$D/opt"
[plugins."io.containerd.grpc.v1.cri"]
  disable_cgroup = true
  disable_tcp_service = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "strata"
    disable_snapshot_annotations = false
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."127.0.0.1:$REG_PORT"]
    endpoint = ["http://127.0.0.1:$REG_PORT"]
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$D/cni"
    conf_dir = "$D/cni"
[proxy_plugins.strata]
  type = "snapshot"
  address = "$TEST_TMP/sn.sock"
EOF
"$CONTAINERD_BIN" --config "$D/config.toml" </dev/null >"$D/ctd.log" 2>&1 &
CRI_PID=$!
for ((i = 0; i < 600; i++)); do
	c plugins ls 2>/dev/null | grep -q 'io.containerd.grpc.v1 *cri .* ok' && break
	sleep 0.1
done
if c plugins ls 2>/dev/null | grep -q 'io.containerd.grpc.v1 *cri .* ok'; then
	pass "containerd with its CRI plugin (snapshotter = \"strata\", disable_snapshot_annotations = false)"
else
	fail "containerd with its CRI plugin" "$(tail -n 10 "$D/ctd.log")"
	exit 1
fi

# ---------------------------------------------------------------- 1. all layers in the repository

from=$(($(wc -l <"$W/registry.log") + 1))
if out=$(cri_pull "127.0.0.1:$REG_PORT/cri/bb:1" 2>&1); then
	pass "PullImage of the busybox image through the CRI"
else
	fail "PullImage of the busybox image through the CRI" "$out" "$(grep -i error "$D/ctd.log" | tail -n 3)"
fi
config=$("$PY" -c '
import json, sys, tarfile
t = tarfile.open(sys.argv[1])
ix = json.load(t.extractfile("index.json"))
m = json.load(t.extractfile("blobs/sha256/" + ix["manifests"][0]["digest"][7:]))
print(m["config"]["digest"])' "$W/bb.tar")
is "the registry served the config and no layer blob" "$(blob_gets "$from")" "$config"
c snapshots --snapshotter strata ls | awk 'NR > 1 { print $1, $NF }' | LC_ALL=C sort >"$W/ls1"
is "the three chain ids are committed snapshots" "$(cat "$W/ls1")" \
	"$(printf '%s Committed\n' "${CHAIN[@]}" | LC_ALL=C sort)"
n_thin=$(find "$R/diff" -mindepth 2 -maxdepth 2 -name thin.json | wc -l)
n_other=$(find "$R/diff" -mindepth 2 -maxdepth 2 ! -name thin.json | wc -l)
is "each is a strata layer holding only thin.json" "$n_thin $n_other" "3 0"
if grep -q 'is in the thin repository' "$W/snapshotter.log"; then
	pass "the snapshotter logged the layers it found in the repository"
else
	fail "the snapshotter logged the layers it found in the repository" "$(tail -n 5 "$W/snapshotter.log")"
fi

# ---------------------------------------------------------------- 2. a container on it

[[ -e /sys/fs/cgroup/$NS ]] || CGROUP_MADE=yes
out=$(c run --snapshotter strata --rm --fifo-dir "$D/fifo" "127.0.0.1:$REG_PORT/cri/bb:1" cri-1 \
	sh -c 'cat /data/keep /data/opq/new; ls -a /data/opq; stat -c "%n %a %u:%g" /data/own /data/suid' 2>&1)
want=$(printf 'keep2\nnew in opq\n.\n..\nnew\n/data/own 640 1000:1000\n/data/suid 4755 0:0')
if [[ $out == "$want" ]]; then
	pass "a container on the pulled image sees its files (from the repository)"
else
	failn "a container on the pulled image sees its files (from the repository)" "got:" "$out" "expected:" "$want"
fi

# ---------------------------------------------------------------- 3. one layer there, four not

from=$(($(wc -l <"$W/registry.log") + 1))
if out=$(cri_pull "127.0.0.1:$REG_PORT/cri/big:1" 2>&1); then
	pass "PullImage of the big image through the CRI"
else
	fail "PullImage of the big image through the CRI" "$out"
fi
# skopeo may have compressed the layers on the way: the registry's digests.
want_reg=$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$REG_PORT/cri/big:1" | "$PY" -c '
import json, sys
m = json.load(sys.stdin)
print("\n".join(sorted([m["config"]["digest"]] + [l["digest"] for l in m["layers"][1:]])))')
is "the registry served the config and the four layers the repository lacks, not the base" \
	"$(blob_gets "$from")" "$want_reg"
out=$(c run --snapshotter strata --rm --fifo-dir "$D/fifo" "127.0.0.1:$REG_PORT/cri/big:1" cri-2 cat /big/top 2>&1)
is "a container on it reads the top layer (unpacked) over the base (thin)" "$out" "layer 3"

# ---------------------------------------------------------------- 4. removed

# The CRI names each image three ways (tag, digest, image id): all go.
mapfile -t refs < <(c images ls -q)
c images rm --sync "${refs[@]}" >/dev/null 2>&1
for ((i = 0; i < 300; i++)); do
	[[ -z $(c snapshots --snapshotter strata ls 2>/dev/null | tail -n +2) ]] && break
	sleep 0.1
done
is "after images rm, containerd's GC leaves no snapshot" "$(c snapshots --snapshotter strata ls | tail -n +2)" ""
is "and no layer in the store" "$(find "$R/layers" -mindepth 1 | wc -l)" 0
out=$("$STRATA" --root "$R" check 2>&1)
is "strata check: nothing to say" "$?: $out" "0: "
stop_pid "$CRI_PID" 60
CRI_PID=
kill_procs_under "$D"
snap_stop
is "the snapshotter exits 0 on SIGTERM" "$SNAP_RC" 0
is "the repository is untouched (4 layers)" "$(find "$CV/$REPO/.layers" -mindepth 2 -maxdepth 2 | wc -l)" 4
