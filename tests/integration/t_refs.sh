#!/bin/bash
# Reference counts: 8 threads of one process, then 8 processes of the CLI,
# taking and dropping references on one layer.  At the end nothing is
# mounted and the count is 0.
. "$(dirname "$0")/lib.sh"

STRESS=${REFS_STRESS_BIN:?}
st init || exit 1
st create base && st create mid base && st create top mid
echo hi >"$R/diff/base/hello"

refcount() { st metadata "$1" | sed -n 's/^RefCount: //p'; }

check "8 threads x 50 get/put cycles" "$STRESS" "$R" top 8 50 cycle
check "8 threads hold at once, count 8, then all put" "$STRESS" "$R" top 8 0 hold
is "threads: count 0 after" "$(refcount top)" 0
is "threads: nothing mounted after" "$(overlay_count)" 0

# 8 processes, each mounting and unmounting 20 times.
worker() {
	local i p
	for ((i = 0; i < 20; i++)); do
		p=$(st mount top) || return 1
		[ "$(cat "$p/hello")" == hi ] || return 1
		st umount top || return 1
	done
}
pids=()
for w in 1 2 3 4 5 6 7 8; do
	worker &
	pids+=($!)
	BG_PIDS+=($!)
done
bad=0
for p in "${pids[@]}"; do wait "$p" || bad=$((bad + 1)); done
is "8 processes x 20 mount/umount: all succeeded" "$bad" 0
is "processes: count 0 after" "$(refcount top)" 0
is "processes: nothing mounted after" "$(overlay_count)" 0

# 8 processes mount at once: one mount, count 8; 8 others unmount it.
pids=()
for w in 1 2 3 4 5 6 7 8; do
	st mount top >/dev/null &
	pids+=($!)
	BG_PIDS+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
is "8 concurrent mounts: count 8" "$(refcount top)" 8
is "8 concurrent mounts: one overlay" "$(overlay_count)" 1
pids=()
for w in 1 2 3 4 5 6 7; do
	st umount top &
	pids+=($!)
	BG_PIDS+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
is "7 umounts: count 1" "$(refcount top)" 1
check "7 umounts: still mounted" is_mounted "$R/mnt/top"
check "last umount" st umount top
is "last umount: unmounted" "$(overlay_count)" 0
check_error "one umount too many" 'put top: layer is not in use' st umount top

# A count from another boot means nothing: no mount survives a reboot.
st mount top >/dev/null
st umount top
printf '00000000-0000-0000-0000-000000000000 5\n' >"$R/refs/top"
is "a count from another boot reads as 0" "$(refcount top)" 0
p=$(st mount top)
is "mount after a stale count: count 1" "$(refcount top)" 1
check "umount after a stale count unmounts" bash -c "'$STRATA' --root '$R' umount top && ! mountpoint -q '$p'"

# A mount whose count was lost (a get that died between the two) is
# adopted by the next get and dropped by its put.
st mount top >/dev/null
rm "$R/refs/top"
p=$(st mount top)
is "adopted mount: count 1" "$(refcount top)" 1
is "adopted mount: still one overlay" "$(overlay_count)" 1
st umount top
is "adopted mount: unmounted by the put" "$(overlay_count)" 0
