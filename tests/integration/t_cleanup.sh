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
# Something mounted inside a union, as a container runtime mounts /proc.
mkdir -p "$R/mnt/c/proc"
mount -t tmpfs tmpfs "$R/mnt/c/proc"
is "three unions mounted" "$(overlay_count)" 3

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
