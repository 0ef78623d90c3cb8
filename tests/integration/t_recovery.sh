#!/bin/bash
# Crash recovery: what an interrupted remove or create, or a process that
# died holding a mount, leaves behind is undone by the next init, and
# nothing live is harmed.
. "$(dirname "$0")/lib.sh"

st init || exit 1
st create base && st create keep base && st create victim base && st create held base
echo precious >"$R/diff/base/precious"
echo mine >"$R/diff/keep/mine"

# 1. A remove interrupted after its commit point: the chain file and the
#    diff dir already renamed to -removing, the union still mounted (a
#    mount point cannot be renamed) and its count still recorded.
pv=$(st mount victim)
echo v >"$pv/v"
mv "$R/layers/victim" "$R/layers/victim-removing"
mv "$R/diff/victim" "$R/diff/victim-removing"
# A half-deleted -removing dir from an even earlier attempt.
mkdir -p "$R/work/victim-removing/half/gone"

# 2. A union mounted by a process that died before recording its count.
pk=$(st mount keep)
rm -f "$R/refs/keep"

# 3. A union legitimately held by another process: init must keep it.
ph=$(st mount held)
echo live >"$ph/live"

# 4. Debris of an interrupted create: dirs and links without a chain file,
#    and a temp file that never reached its rename.  A create leaves its
#    dirs empty: a diff dir with a file in it is not strata's debris.
mkdir "$R/diff/ghost" "$R/mnt/ghost" "$R/work/ghost"
echo junk >"$R/diff/ghost/junk"
ln -s ../diff/ghost "$R/l/GHOST1"
ln -s GHOST1 "$R/link/ghost"
ln -s ../diff/nolayer "$R/l/ORPHAN"
echo partial >"$R/layers/.tmp-abcdefgh-ghost"

# 5. Something strata did not mount, inside a -removing dir: it stays.
mkdir -p "$R/mnt/old-removing/sub"
mount -t tmpfs tmpfs "$R/mnt/old-removing/sub"

check "init recovers" st init

check "the interrupted remove finished: no mount" bash -c "! mountpoint -q '$pv'"
st exists victim
is "victim is gone" $? 1
is "no -removing left but the one with a foreign mount" "$(find "$R" -name '*-removing')" "$R/mnt/old-removing"
check "no traces of victim" bash -c "! ls '$R'/*/victim* 2>/dev/null | grep -q ."
check "stale uncounted mount unmounted" bash -c "! mountpoint -q '$pk'"
check "held mount kept" is_mounted "$ph"
is "held count kept" "$(st metadata held | sed -n 's/^RefCount: //p')" 1
is "held data intact" "$(cat "$ph/live")" live
check "ghost debris removed" bash -c "test ! -e '$R/mnt/ghost' && test ! -e '$R/work/ghost' && test ! -e '$R/link/ghost'"
is "a diff dir with a file strata did not write is kept" "$(cat "$R/diff/ghost/junk")" junk
check "dangling short links removed" bash -c "test ! -e '$R/l/GHOST1' && test ! -L '$R/l/ORPHAN'"
check "temp file removed" test ! -e "$R/layers/.tmp-abcdefgh-ghost"
is "the foreign mount under old-removing is kept" "$(mounts_under "$R/mnt/old-removing" | wc -l)" 1
umount "$R/mnt/old-removing/sub"
rm -rf "$R/diff/ghost"
check "init again" st init
check "then old-removing is gone" test ! -e "$R/mnt/old-removing"
is "the parent's data intact" "$(cat "$R/diff/base/precious")" precious
is "keep intact and mountable" "$(cat "$(st mount keep)/mine")" mine
st umount keep
st umount held
is "live layers still counted" "$(st status | sed -n 's/^Layers: //p')" 3
is "every short link of a live layer kept" "$(find "$R/l" -type l | wc -l)" 3

# A create of an id whose remove was interrupted finishes that remove first.
st create phoenix base
echo old >"$R/diff/phoenix/old"
mv "$R/layers/phoenix" "$R/layers/phoenix-removing"
check "create over an interrupted remove" st create phoenix base
check "the recreated layer is empty" test -z "$(ls -A "$R/diff/phoenix")"
is "no -removing after the create" "$(find "$R" -name '*-removing' | wc -l)" 0
check "rm of an id whose remove was interrupted finishes it" bash -c "
	mv '$R/layers/phoenix' '$R/layers/phoenix-removing' && '$STRATA' --root '$R' rm phoenix &&
	test ! -e '$R/diff/phoenix' && test ! -e '$R/layers/phoenix-removing'"

# A real crash: SIGKILL while a remove deletes a big layer.  Whatever the
# moment, the layer is either whole or gone, and init leaves no debris.
st create big base
mkdir -p "$R/diff/big/d"
(cd "$R/diff/big/d" && seq 1 30000 | xargs touch)
st rm big &
rmpid=$!
BG_PIDS+=($rmpid)
sleep 0.15
kill -9 "$rmpid" 2>/dev/null
wait "$rmpid" 2>/dev/null
if st exists big; then
	is "killed remove: layer still whole" "$(find "$R/diff/big/d" -type f | wc -l)" 30000
else
	pass "killed remove: layer gone"
fi
check "init after the kill" st init
if st exists big; then
	check "then remove it" st rm big
fi
check "no traces of big" bash -c "! ls -d '$R'/*/big* 2>/dev/null | grep -q ."
is "nothing left mounted" "$(overlay_count)" 0
