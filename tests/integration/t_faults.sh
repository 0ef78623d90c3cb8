#!/bin/bash
# Faults and races: running out of file descriptors mid-operation, mounts
# vanishing behind strata's back, init racing with other processes.
# Each case is a defect once found in review; the invariants hold however
# the operation ends.
. "$(dirname "$0")/lib.sh"

st init || exit 1
st create p && st create c p
echo data >"$R/diff/p/file"

# 1. create with few fds: whatever fails, a visible layer has its dirs.
bad=0
for n in $(seq 6 24); do
	(ulimit -n "$n" && exec "$STRATA" --root "$R" create "fd$n" p) >/dev/null 2>&1
	if st exists "fd$n"; then
		[ -d "$R/diff/fd$n" ] && [ -d "$R/mnt/fd$n" ] && [ -d "$R/work/fd$n" ] || bad=$((bad + 1))
	fi
done
is "create at every fd limit: no visible layer without its dirs" "$bad" 0

# 2. remove with few fds never removes a parent whose child exists.
for n in $(seq 6 24); do
	(ulimit -n "$n" && exec "$STRATA" --root "$R" rm p) >/dev/null 2>&1
done
check "parent survives removes at every fd limit" st exists p
is "child still mounts" "$(cat "$(st mount c)/file")" data
st umount c

# 3. A mount unmounted behind strata's back: the next get/put pair must
#    leave nothing mounted and no count.
st create q && st create qc q
p=$(st mount qc)
umount "$p"
st mount qc >/dev/null
st umount qc
is "vanished mount: count 0 after get/put" "$(st metadata qc | sed -n 's/^RefCount: //p')" 0
check "vanished mount: nothing mounted" bash -c "! mountpoint -q '$p'"

# 4. init racing with creates, mounts and unmounts in another process.
worker() {
	local i
	for ((i = 0; i < 60; i++)); do
		st create "w$i" p && st mount "w$i" >/dev/null && st umount "w$i" || return 1
	done
}
worker >"$TEST_TMP/worker.log" 2>&1 &
wpid=$!
BG_PIDS+=($wpid)
ifail=0
while kill -0 "$wpid" 2>/dev/null; do
	st init >>"$TEST_TMP/init.log" 2>&1 || ifail=$((ifail + 1))
done
wait "$wpid"
is "operations beside a looping init all succeed" "$?" 0
is "init beside other operations always succeeds" "$ifail" 0
[ "$ifail" -eq 0 ] || sed 's/^/# /' "$TEST_TMP/init.log" | head -5
is "nothing left mounted" "$(overlay_count)" 0

# 5. Concurrent inits do not trip over each other's backing-fs probe.
ifail=0
for i in $(seq 1 15); do
	st init 2>>"$TEST_TMP/init2.log" &
	a=$!
	st init 2>>"$TEST_TMP/init2.log" &
	b=$!
	BG_PIDS+=($a $b)
	wait "$a" || ifail=$((ifail + 1))
	wait "$b" || ifail=$((ifail + 1))
done
is "30 inits in pairs all succeed" "$ifail" 0
is "no probe dir left" "$(find "$R" -maxdepth 1 -name '.probe-*' | wc -l)" 0

# 6. Ids from outside never break the one-line error rule.
check_error "an id with a newline gives one line" 'create a/b\\x0ac: invalid id' st create "$(printf 'a/b\nc')"
check_error "a label with a newline gives one line" 'invalid mount label "a\\x0ab"' st mount --label "$(printf 'a\nb')" c
