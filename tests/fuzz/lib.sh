# shellcheck shell=bash
# Shared by the fuzz runners: run a libFuzzer harness for $FUZZ_SECONDS
# (default 60), keep what it finds, then replay every saved input.  TAP.
#
#   fuzz_run NAME FUZZER KEEP_DIR OK_TEXT -- FUZZER_ARGS... -- REPLAY_FILES...
#
# A failing input is copied into KEEP_DIR, from where later runs replay it.
fuzz_run() {
	local name=$1 fuzzer=$2 keep=$3 ok_text=$4 n=1 f
	shift 4
	[[ $1 == -- ]] && shift
	local args=()
	while [[ $# -gt 0 && $1 != -- ]]; do
		args+=("$1")
		shift
	done
	[[ ${1:-} == -- ]] && shift
	local work
	work=$(mktemp -d "/var/tmp/strata-fuzz-$name.XXXXXX")
	mkdir -p "$work/artifacts"
	if "$fuzzer" -max_total_time="${FUZZ_SECONDS:-60}" -rss_limit_mb=2048 -timeout=20 \
		-artifact_prefix="$work/artifacts/" "${args[@]}" >"$work/log" 2>&1; then
		local runs
		runs=$(grep -o 'Done [0-9]* runs' "$work/log" | tail -1)
		echo "ok $n - $name: ${runs:-done}, $ok_text"
	else
		echo "not ok $n - $name found a failing input (kept in $keep)"
		grep -E "ERROR|$name:|SUMMARY|Test unit written" "$work/log" | head -20 | sed 's/^/# /'
		for f in "$work"/artifacts/*; do
			[ -f "$f" ] && cp "$f" "$keep/" && echo "# kept $(basename "$f") in $keep"
		done
	fi
	for f in "$@"; do
		[ -f "$f" ] || continue
		n=$((n + 1))
		if "$fuzzer" "$f" >"$work/one" 2>&1; then
			echo "ok $n - regression $(basename "$f")"
		else
			echo "not ok $n - regression $(basename "$f")"
			tail -5 "$work/one" | sed 's/^/# /'
		fi
	done
	echo "1..$n"
	rm -rf "$work"
}
