# shellcheck shell=bash
# TAP helpers and fixtures for the integration tests.  Source this first.
#
# Every test gets a scratch dir ($TEST_TMP) with the store at $R.  The EXIT
# trap stops background processes the test started (by PID), runs
# `strata cleanup`, unmounts anything still mounted under the scratch dir
# (deepest first) and deletes it, whether the test passed, failed or died.
set -u

STRATA=${STRATA_BIN:?STRATA_BIN must point at the strata binary}
TEST_TMP=$(mktemp -d "${STRATA_TEST_DIR:-/var/tmp}/strata-it.XXXXXX")
R=$TEST_TMP/root
T_N=0
T_FAILED=0
BG_PIDS=()

st() { "$STRATA" --root "$R" "$@"; }

# Mount points under a prefix, deepest first.
mounts_under() {
	awk -v p="$1" '{ mp = $5; gsub(/\\040/, " ", mp); if (mp == p || index(mp, p "/") == 1) print mp }' \
		/proc/self/mountinfo | awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-
}

unmount_under() {
	local m
	mounts_under "$1" | while read -r m; do umount -l "$m" 2>/dev/null; done
}

fixture_exit() {
	local rc=$?
	local p
	for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${BG_PIDS[@]}"; do wait "$p" 2>/dev/null; done
	[ -d "$R/mnt" ] && "$STRATA" --root "$R" cleanup >/dev/null 2>&1
	unmount_under "$TEST_TMP"
	rm -rf "$TEST_TMP"
	if [ -n "$(mounts_under "$TEST_TMP")" ]; then
		echo "not ok $((T_N + 1)) - fixture left mounts under $TEST_TMP"
		T_N=$((T_N + 1))
	fi
	echo "1..$T_N"
	[ "$T_FAILED" -eq 0 ] && [ "$rc" -eq 0 ] || exit 1
}
trap fixture_exit EXIT

pass() { T_N=$((T_N + 1)); echo "ok $T_N - $1"; }
fail() {
	T_N=$((T_N + 1))
	T_FAILED=$((T_FAILED + 1))
	echo "not ok $T_N - $1"
	shift
	local line
	for line in "$@"; do printf '# %s\n' "$line"; done
}

# check DESC CMD...: passes when CMD exits 0.
check() {
	local desc=$1 out
	shift
	if out=$("$@" 2>&1); then pass "$desc"; else fail "$desc" "command: $*" "$out"; fi
}

# is DESC ACTUAL EXPECTED
is() {
	if [ "$2" == "$3" ]; then pass "$1"; else fail "$1" "got:      $2" "expected: $3"; fi
}

# check_error DESC REGEX CMD...: passes when CMD fails with one line on
# stderr, "strata: ...", matching REGEX (grep -E).
check_error() {
	local desc=$1 re=$2 err rc
	shift 2
	err=$("$@" 2>&1 >/dev/null)
	rc=$?
	if [ "$rc" -eq 0 ]; then
		fail "$desc" "command succeeded: $*"
	elif [ "$(printf '%s\n' "$err" | wc -l)" -ne 1 ] || [[ "$err" != strata:* ]]; then
		fail "$desc" "not one 'strata:' line on stderr:" "$err"
	elif ! printf '%s\n' "$err" | grep -Eq -- "$re"; then
		fail "$desc" "stderr: $err" "wanted: $re"
	else
		pass "$desc"
	fi
}

is_mounted() { mountpoint -q "$1"; }

# Overlay's whiteout: a character device 0/0.
is_whiteout() { [ -c "$1" ] && [ "$(stat -c '%t:%T' "$1")" == "0:0" ]; }

is_opaque() { [ "$(getfattr --only-values -n trusted.overlay.opaque "$1" 2>/dev/null)" == "y" ]; }

# Sorted listing of a tree, for comparing merged views.
tree() { (cd "$1" && find . -mindepth 1 -printf '%y %p\n' | LC_ALL=C sort); }

# build_chain N PREFIX [OPTS...]: layers PREFIX1..PREFIXN, each adding
# file fN and overriding /top with its own number.
build_chain() {
	local n=$1 prefix=$2 i prev=""
	for ((i = 1; i <= n; i++)); do
		st create "$prefix$i" $prev || return 1
		echo "$i" >"$R/diff/$prefix$i/f$i"
		echo "$i" >"$R/diff/$prefix$i/top"
		prev="$prefix$i"
	done
}

overlay_count() { findmnt -rn -t overlay -o TARGET | grep -c "^$TEST_TMP/" || true; }

skip() { T_N=$((T_N + 1)); echo "ok $T_N - $1 # SKIP $2"; }

# The tar tools beside these scripts: tarcmp.py compares two tars or trees
# entry by entry; tarchain.py builds and models a layer chain.
TARCMP=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/tarcmp.py
TARCHAIN=$(dirname "$TARCMP")/tarchain.py

# tarcmp DESC [OPTS] A B: passes when the trees match; shows the first lines otherwise.
tarcmp() {
	local desc=$1 out
	shift
	if out=$(python3 "$TARCMP" "$@" 2>&1); then
		pass "$desc ($out)"
	else
		fail "$desc" "$(printf '%s\n' "$out" | head -n 40)" "($(printf '%s\n' "$out" | wc -l) lines)"
	fi
}
