#!/usr/bin/env bash
# Runs the apply fuzzer for $FUZZ_SECONDS (default 60) from a seed corpus
# (the hostile corpus and every saved regression), then replays each file
# in regressions/ on its own.  TAP output.  A crash found here is kept:
# copy the crash-* file libFuzzer names into tests/fuzz/regressions/.
set -u
FUZZER=${FUZZ_APPLY_BIN:?FUZZ_APPLY_BIN must point at fuzz_apply}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /var/tmp/strata-fuzz-run.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export STRATA_FUZZ_DIR=$WORK
n=0
mkdir -p "$WORK/corpus" "$WORK/seeds" "$WORK/artifacts"
python3 "$HERE/../corpus/make_corpus.py" "$WORK/gen" >/dev/null 2>&1 || true
find "$WORK/gen" "$HERE/regressions" -type f \( -name '*.tar*' -o -name 'crash-*' -o -name '*.bin' \) \
	-size -1024k -exec cp {} "$WORK/seeds/" \; 2>/dev/null
seeds=$(find "$WORK/seeds" -type f | wc -l)

n=$((n + 1))
if "$FUZZER" -max_total_time="${FUZZ_SECONDS:-60}" -rss_limit_mb=2048 -timeout=20 \
	-artifact_prefix="$WORK/artifacts/" "$WORK/corpus" "$WORK/seeds" >"$WORK/log" 2>&1; then
	runs=$(grep -o 'Done [0-9]* runs' "$WORK/log" | tail -1)
	echo "ok $n - fuzz_apply: ${runs:-done} from $seeds seeds, sentinel intact"
else
	echo "not ok $n - fuzz_apply found a failing input (saved below; add it to tests/fuzz/regressions/)"
	grep -E 'ERROR|fuzz_apply:|SUMMARY|Test unit written' "$WORK/log" | head -20 | sed 's/^/# /'
	for f in "$WORK"/artifacts/*; do
		[ -f "$f" ] && cp "$f" "$HERE/regressions/" && echo "# kept $(basename "$f") in tests/fuzz/regressions/"
	done
fi

for f in "$HERE"/regressions/*; do
	[ -f "$f" ] || continue
	case "$f" in *.md) continue ;; esac
	n=$((n + 1))
	if "$FUZZER" "$f" >"$WORK/one" 2>&1; then
		echo "ok $n - regression $(basename "$f")"
	else
		echo "not ok $n - regression $(basename "$f")"
		tail -5 "$WORK/one" | sed 's/^/# /'
	fi
done
echo "1..$n"
