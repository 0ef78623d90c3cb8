#!/bin/bash
# remove: refusals, unmounting, every trace gone, the id reusable.
. "$(dirname "$0")/lib.sh"

st init || exit 1
st create base && st create mid base && st create top mid
echo data >"$R/diff/base/file"

check_error "refuses a parent" 'remove base: layer is the parent of mid; remove that first' st rm base
check_error "refuses a middle layer" 'remove mid: layer is the parent of top' st rm mid
check_error "refuses an unknown id" 'remove nope: no such layer' st rm nope
check_error "refuses a bad id" 'remove \.\.: invalid id' st rm ..
check "refused layers intact" test -f "$R/diff/base/file"

p=$(st mount top)
st mount top >/dev/null
echo x >"$p/x"
check "remove a mounted layer (count 2)" st rm top
check "its mount is gone" bash -c "! mountpoint -q '$p'"
for d in layers diff mnt work refs link; do
	check "no $d/top left" test ! -e "$R/$d/top"
done
check "no -removing left" test -z "$(find "$R" -name '*-removing')"
is "no short link left for top" "$(find "$R/l" -lname '../diff/top' | wc -l)" 0
st exists top
is "top no longer exists" $? 1

check "parent removable once its child is gone" st rm mid
check "recreate a removed id" st create mid base
check "recreated layer starts empty" test -z "$(ls -A "$R/diff/mid")"
is "recreated layer mounts" "$(cat "$(st mount mid)/file")" data
st umount mid
check "remove all" bash -c "'$STRATA' --root '$R' rm mid && '$STRATA' --root '$R' rm base"
is "store empty" "$(ls -A "$R/layers" "$R/diff" "$R/mnt" "$R/work" "$R/l" "$R/link" "$R/refs" | grep -cv -e '^$' -e ':$')" 0
