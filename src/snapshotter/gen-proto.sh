#!/bin/sh
# Generates the protobuf-c code of containerd's snapshots API at build time,
# from the .proto files of Debian's golang-github-containerd-containerd-dev
# (containerd's own, not copied into this repository) and protobuf's
# well-known types.  The files are laid flat in a scratch dir with the gogo
# options taken out (they only steer Go code generation; field numbers and
# types, hence the wire format, are untouched), then compiled by protoc-c.
# Usage: gen-proto.sh OUTDIR
set -eu
out=$(cd "$1" && pwd)
api=${CONTAINERD_API:-/usr/share/gocode/src/github.com/containerd/containerd/api}
wkt=${PROTOBUF_INCLUDE:-/usr/include/google/protobuf}
for f in "$api/services/snapshots/v1/snapshots.proto" "$api/types/mount.proto" \
	"$wkt/empty.proto" "$wkt/field_mask.proto" "$wkt/timestamp.proto"; do
	[ -r "$f" ] || {
		echo "gen-proto.sh: $f is missing (apt-get install golang-github-containerd-containerd-dev libprotobuf-dev)" >&2
		exit 1
	}
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
strip() {
	sed -e '/^import weak "gogoproto\/gogo.proto";/d' \
		-e '/^[[:space:]]*option (gogoproto\./d' \
		-e 's/[[:space:]]*\[(gogoproto[^]]*\]//' \
		-e 's#^import "github.com/containerd/containerd/api/types/mount.proto";#import "mount.proto";#' \
		-e 's#^import "google/protobuf/\([a-z_]*\).proto";#import "\1.proto";#' \
		"$1" >"$tmp/$2"
}
strip "$api/services/snapshots/v1/snapshots.proto" snapshots.proto
strip "$api/types/mount.proto" mount.proto
for w in empty field_mask timestamp; do strip "$wkt/$w.proto" "$w.proto"; done
if grep -n gogoproto "$tmp"/*.proto >&2; then
	echo "gen-proto.sh: gogo options left after stripping (above)" >&2
	exit 1
fi
cd "$tmp"
protoc-c -I. --c_out="$out" snapshots.proto mount.proto empty.proto field_mask.proto timestamp.proto
