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
mkdir -p "$WORK/corpus" "$WORK/seeds"
python3 "$HERE/../corpus/make_corpus.py" "$WORK/gen" >/dev/null 2>&1 || true
find "$WORK/gen" "$HERE/regressions" -type f \( -name '*.tar*' -o -name 'crash-*' -o -name '*.bin' \) \
	-size -1024k -exec cp {} "$WORK/seeds/" \; 2>/dev/null
seeds=$(find "$WORK/seeds" -type f | wc -l)

# shellcheck source=tests/fuzz/lib.sh
. "$HERE/lib.sh"
regressions=()
for f in "$HERE"/regressions/*; do
	case "$f" in *.md) ;; *) regressions+=("$f") ;; esac
done
fuzz_run fuzz_apply "$FUZZER" "$HERE/regressions" "from $seeds seeds, sentinel intact" \
	-- "$WORK/corpus" "$WORK/seeds" -- "${regressions[@]}"
