#!/bin/bash
# cleanup unmounts everything under the root and resets counts; layers stay.
. "$(dirname "$0")/lib.sh"

st init || exit 1
st create base && st create a base && st create b base && st create c b
echo f >"$R/diff/base/f"
st mount a >/dev/null
st mount b >/dev/null
for i in 1 2 3; do st mount c >/dev/null; done
st mount base >/dev/null
# Something mounted inside a union by someone else (not strata): cleanup
# leaves that union and what is inside it, says so, and does the rest.
mkdir -p "$R/mnt/c/proc"
mount -t tmpfs tmpfs "$R/mnt/c/proc"
echo mine >"$R/mnt/c/proc/keep"
is "three unions mounted" "$(overlay_count)" 3

check_error "cleanup names the foreign mount inside a union" "mnt/c/proc is mounted inside it and is not strata's" \
	st cleanup
is "the other unions are unmounted" "$(overlay_count)" 1
check "the union with the foreign mount stays" is_mounted "$R/mnt/c"
is "the foreign mount and its file stay" "$(cat "$R/mnt/c/proc/keep")" mine
is "its count stays" "$(st metadata c | sed -n 's/^RefCount: //p')" 3
umount "$R/mnt/c/proc"

check "cleanup" st cleanup
is "no overlay left" "$(overlay_count)" 0
is "nothing at all mounted under the root" "$(mounts_under "$R" | wc -l)" 0
for l in a b c base; do
	is "count of $l reset" "$(st metadata "$l" | sed -n 's/^RefCount: //p')" 0
done
is "layers kept" "$(st status | sed -n 's/^Layers: //p')" 4
is "data kept" "$(cat "$(st mount c)/f")" f
st umount c
check "cleanup with nothing mounted" st cleanup
