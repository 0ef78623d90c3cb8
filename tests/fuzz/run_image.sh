#!/usr/bin/env bash
# Runs the image-file fuzzer for $FUZZ_SECONDS (default 60) from the seeds
# in image-seeds/ (a small docker save archive, an OCI archive with a gzip
# layer, a layer tar with whiteouts), then replays each saved failing input
# (image-seeds/crash-*, timeout-*, oom-*).  TAP output.
set -u
FUZZER=${FUZZ_IMAGE_BIN:?FUZZ_IMAGE_BIN must point at fuzz_image}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
CORPUS=$(mktemp -d /var/tmp/strata-fuzz-image-corpus.XXXXXX)
trap 'rm -rf "$CORPUS"' EXIT
fuzz_run fuzz_image "$FUZZER" "$HERE/image-seeds" "every input read or refused with a message" \
	-- -max_len=65536 "$CORPUS" "$HERE/image-seeds" -- "$HERE"/image-seeds/crash-* "$HERE"/image-seeds/timeout-* \
	"$HERE"/image-seeds/oom-*
