#!/usr/bin/env bash
# Runs the thin.json fuzzer for $FUZZ_SECONDS (default 60) from the seeds in
# thin-seeds/, then replays each saved failing input (thin-seeds/crash-*).
# TAP output.  A crash found here is kept in tests/fuzz/thin-seeds/.
set -u
FUZZER=${FUZZ_THIN_BIN:?FUZZ_THIN_BIN must point at fuzz_thin}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
CORPUS=$(mktemp -d /var/tmp/strata-fuzz-thin-corpus.XXXXXX)
trap 'rm -rf "$CORPUS"' EXIT
fuzz_run fuzz_thin "$FUZZER" "$HERE/thin-seeds" "every parse formats to a fixed point" \
	-- -max_len=65536 "$CORPUS" "$HERE/thin-seeds" -- "$HERE"/thin-seeds/crash-*
