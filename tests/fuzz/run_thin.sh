#!/usr/bin/env bash
# Runs the thin.json fuzzer for $FUZZ_SECONDS (default 60) from the seeds in
# thin-seeds/, then replays each saved regression in thin-seeds/crash-*.
# TAP output.  A crash found here is kept in tests/fuzz/thin-seeds/.
set -u
FUZZER=${FUZZ_THIN_BIN:?FUZZ_THIN_BIN must point at fuzz_thin}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /var/tmp/strata-fuzz-thin.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/corpus" "$WORK/artifacts"
n=1
if "$FUZZER" -max_total_time="${FUZZ_SECONDS:-60}" -rss_limit_mb=2048 -timeout=20 -max_len=65536 \
	-artifact_prefix="$WORK/artifacts/" "$WORK/corpus" "$HERE/thin-seeds" >"$WORK/log" 2>&1; then
	runs=$(grep -o 'Done [0-9]* runs' "$WORK/log" | tail -1)
	echo "ok $n - fuzz_thin: ${runs:-done}, every parse formats to a fixed point"
else
	echo "not ok $n - fuzz_thin found a failing input (kept in tests/fuzz/thin-seeds/)"
	grep -E 'ERROR|fuzz_thin:|SUMMARY' "$WORK/log" | head -20 | sed 's/^/# /'
	for f in "$WORK"/artifacts/*; do [ -f "$f" ] && cp "$f" "$HERE/thin-seeds/"; done
fi
for f in "$HERE"/thin-seeds/crash-*; do
	[ -f "$f" ] || continue
	n=$((n + 1))
	if "$FUZZER" "$f" >"$WORK/one" 2>&1; then
		echo "ok $n - regression $(basename "$f")"
	else
		echo "not ok $n - regression $(basename "$f")"
		tail -5 "$WORK/one" | sed 's/^/# /'
	fi
done
echo "1..$n"
