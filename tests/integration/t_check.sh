#!/usr/bin/env bash
# strata check [--repair]: each invariant broken on a real store is
# reported naming its layer; --repair fixes what is safe and says so; what
# strata did not make is reported and left alone; a store in use checks
# clean.
. "$(dirname "$0")/lib.sh"

st init >/dev/null || exit 1
st create base >/dev/null && st create mid base >/dev/null && st create top mid >/dev/null
echo b >"$R/diff/base/b"
echo m >"$R/diff/mid/m"

# check_clean DESC: check exits 0 and prints nothing.
check_clean() {
	local out rc
	out=$(st check 2>&1)
	rc=$?
	if [ "$rc" -eq 0 ] && [ -z "$out" ]; then pass "$1"; else fail "$1" "exit $rc" "$out"; fi
}
# reports DESC REGEX: check exits 1 with a line matching REGEX.
reports() {
	local out rc
	out=$(st check 2>&1)
	rc=$?
	if [ "$rc" -eq 1 ] && printf '%s\n' "$out" | grep -Eq -- "$2"; then pass "$1"; else fail "$1" "exit $rc" "$out"; fi
}
# repairs DESC REGEX: check --repair says REGEX was repaired, then check is clean.
repairs() {
	local out rc
	out=$(st check --repair 2>&1)
	rc=$?
	if [ "$rc" -eq 0 ] && printf '%s\n' "$out" | grep -Eq -- "$2.*: repaired, "; then
		pass "$1"
	else
		fail "$1" "exit $rc" "$out"
	fi
	check_clean "$1: then clean"
}

check_clean "a new store checks clean"
p=$(st mount top)
check_clean "a mounted, counted union checks clean"
st umount top

rmdir "$R/mnt/mid"
reports "a missing mnt dir" "^layer mid: the layer's mnt dir is missing \($R/mnt/mid\)$"
repairs "a missing mnt dir" "^layer mid: the layer's mnt dir is missing"

rm -r "$R/work/top"
reports "a missing work dir" "^layer top: the layer's work dir is missing"
repairs "a missing work dir" "^layer top: the layer's work dir is missing"

short=$(readlink "$R/link/mid")
rm "$R/link/mid"
reports "a missing short link" "^layer mid: its short link is missing"
repairs "a missing short link" "^layer mid: its short link is missing"
is "... the same l/ entry as before" "$(readlink "$R/link/mid")" "$short"
is "... a legacy mount of the child works" "$(cat "$(st -o mountapi=legacy mount top)/m")" m
st umount top

ln -s ../diff/gone "$R/l/ZZZZZZ"
reports "a dangling l/ entry" "^store: a short link to gone, which does not exist \($R/l/ZZZZZZ\)"
repairs "a dangling l/ entry" "short link to gone"

ln -sfn "$(readlink "$R/link/base")" "$R/link/mid"
reports "a short link leading to another layer" "^layer mid: its short link names an l/ entry that leads elsewhere"
repairs "a short link leading to another layer" "^layer mid: its short link"
check "... the other layer's l/ entry stays" test -L "$R/l/$(readlink "$R/link/base")"

echo partial >"$R/layers/.tmp-ABCDEFGH-zz"
mkdir "$R/diff/.tmp-ABCDEFGH-top"
reports "temp files" "^layer zz: a temp file or staging dir .*layers/.tmp-ABCDEFGH-zz"
repairs "temp files" "diff/.tmp-ABCDEFGH-top"

st create gone mid >/dev/null
echo g >"$R/diff/gone/g"
mv "$R/layers/gone" "$R/layers/gone-removing"
mv "$R/diff/gone" "$R/diff/gone-removing"
reports "an interrupted remove" "^layer gone: the remains of a remove that did not finish \($R/layers/gone-removing\)"
repairs "an interrupted remove" "^layer gone: the remains of a remove"
check "... nothing of it is left" bash -c "! ls -d '$R'/*/gone* 2>/dev/null | grep -q ."

mkdir "$R/diff/half" "$R/mnt/half" "$R/work/half"
reports "an interrupted create" "^layer half: left by a create that did not finish \(no layer half exists\) \($R/diff/half\)"
repairs "an interrupted create" "^layer half: left by a create"

mkdir "$R/diff/notours"
echo mine >"$R/diff/notours/mine"
reports "a dir strata did not make" "^layer notours: no layer notours exists, and this is not what strata leaves .*: not strata's: left alone"
out=$(st check --repair 2>&1)
is "--repair leaves it, and still exits 1" "$?" 1
is "... with its file" "$(cat "$R/diff/notours/mine")" mine
rm -r "$R/diff/notours"
check_clean "removed by hand: clean"

p=$(st mount top)
umount "$p"
reports "a count without a mount" "^layer top: counted 1 reference, but its union is not mounted \($R/refs/top\)"
repairs "a count without a mount" "^layer top: counted 1"

p=$(st mount top)
rm "$R/refs/top"
reports "a mount nobody counts or holds" "^layer top: its union is mounted, but no reference counts it"
repairs "a mount nobody counts or holds" "^layer top: its union is mounted"
check "... unmounted" bash -c "! mountpoint -q '$p'"

# A union held by a live process (a naive diff stopped on a pipe) is fine.
head -c 4M /dev/urandom >"$R/diff/top/big"
mkfifo "$TEST_TMP/slow"
st diff --naive top >"$TEST_TMP/slow" &
dpid=$!
BG_PIDS+=($dpid)
exec 7<"$TEST_TMP/slow"
for _ in $(seq 100); do mountpoint -q "$R/mnt/top" && break; sleep 0.05; done
check_clean "a union held by a live naive diff checks clean"
kill "$dpid"
wait "$dpid" 2>/dev/null
exec 7<&-
rm "$R/diff/top/big"
reports "... once it died, its union is stale" "^layer top: its union is mounted, but"
repairs "... once it died, its union is stale" "^layer top: its union is mounted"

echo "$(cat /proc/sys/kernel/random/boot_id) garbage" >"$R/refs/mid"
reports "a malformed count" "^layer mid: its reference count is malformed"
repairs "a malformed count" "^layer mid: its reference count is malformed"

st create broken >/dev/null
printf 'not an id!\n' >"$R/layers/broken"
reports "a corrupt chain file" "^layer broken: corrupt chain file $R/layers/broken"
printf 'nosuch\n' >"$R/layers/broken"
reports "a chain naming a missing parent" "^layer broken: its chain names nosuch, which does not exist"
printf 'broken\n' >"$R/layers/broken"
reports "a chain naming itself" "^layer broken: its chain names the layer itself \(a cycle\)"
printf 'mid\n' >"$R/layers/broken"
reports "a chain disagreeing with its parent's" "^layer broken: its chain disagrees with its parent mid's"
out=$(st check --repair 2>&1)
is "a broken chain is not repaired" "$?" 1
printf '' >"$R/layers/broken"
rm -r "$R/diff/broken"
reports "a missing diff dir" "^layer broken: the layer's diff dir is missing .*its content is lost"
st rm broken 2>/dev/null
rm -rf "$R/layers/broken" "$R/mnt/broken" "$R/work/broken" "$R/link/broken"
st check --repair >/dev/null
check_clean "after removing it by hand"

rm "$R/engine"
reports "a missing engine record" "^store: the engine record is missing \($R/engine\)"
repairs "a missing engine record" "engine record is missing"
rm "$R/strata-store"
reports "a missing store marker" "^store: the store marker is missing"
repairs "a missing store marker" "store marker is missing"

mkdir -p "$R/.probe-ABCDEFGH/merged"
reports "an init's probe dir" "^store: left by an init that did not finish \($R/.probe-ABCDEFGH\)"
repairs "an init's probe dir" "probe"

p=$(st mount top)
mkdir -p "$p/inner"
mount -t tmpfs tmpfs "$p/inner"
reports "a mount inside a union" "^store: a tmpfs mount strata did not make \($R/mnt/top/inner\): not strata's: left alone"
check "... left alone by --repair" bash -c "'$STRATA' --root '$R' check --repair >/dev/null; mountpoint -q '$p/inner'"
umount "$p/inner"
st umount top
mkdir "$R/mnt/fx"
mount -t tmpfs tmpfs "$R/mnt/fx"
reports "a mount at mnt/ under no layer's name" "^layer fx: a mount strata did not make is there \(no layer fx exists\)"
umount "$R/mnt/fx"
rmdir "$R/mnt/fx"

# Thin records: a thin layer, a layer on it, and its record broken.
printf '{"version":"1.0","layers":[{"digest":"%064d","url":"cvmfs://repo.example/l"}]}' 0 >"$TEST_TMP/thin.json"
tar -C "$TEST_TMP" -cf "$TEST_TMP/thin.tar" thin.json
st create img >/dev/null && st apply img -i "$TEST_TMP/thin.tar" >/dev/null
st create onimg img >/dev/null
is "a layer on a thin layer has its record" "$(cat "$R/thin/under/onimg")" img
check_clean "a store with a thin layer checks clean"
printf 'mid' >"$R/thin/under/onimg"
reports "a wrong thin record" "^layer onimg: its thin record .* names mid, its parent's chain says img"
repairs "a wrong thin record" "^layer onimg: its thin record"
is "... written anew" "$(cat "$R/thin/under/onimg")" img
printf 'img' >"$R/thin/under/nolayer"
reports "a thin record of no layer" "^layer nolayer: a thin record of no layer"
repairs "a thin record of no layer" "thin record of no layer"

out=$(st check --json 2>&1)
is "--json on a clean store: []" "$out" "[]"
mkdir "$R/mnt/half"
out=$(st check --json)
is "--json lists the problem with its fields" "$(printf '%s' "$out" | python3 -c 'import json,sys; p=json.load(sys.stdin)[0]; print(p["layer"], p["path"], p["repaired"], p["repair"])')" "half $R/mnt/half False None"
st check --repair >/dev/null

"$STRATA" --root "$TEST_TMP/nostore" check >/dev/null 2>&1
is "exit 2 when the store cannot be opened" "$?" 2
st check --bogus >/dev/null 2>&1
is "exit 2 on a usage error" "$?" 2

# Beside live operations, a check finds nothing wrong.
worker() {
	local i
	for ((i = 0; i < 40; i++)); do
		st create "w$i" mid && st mount "w$i" >/dev/null && st umount "w$i" && st rm "w$i" || return 1
	done
}
worker >"$TEST_TMP/worker.log" 2>&1 &
wpid=$!
BG_PIDS+=($wpid)
bad=0
n=0
while kill -0 "$wpid" 2>/dev/null; do
	if ! out=$(st check 2>&1); then
		bad=$((bad + 1))
		printf '%s\n' "$out" >>"$TEST_TMP/check.log"
	fi
	n=$((n + 1))
done
wait "$wpid"
is "the operations beside the checks succeed" "$?" 0
is "$n checks beside creates, mounts and removes find nothing" "$bad" 0 ||
	sed 's/^/# /' "$TEST_TMP/check.log"
[ "$bad" -eq 0 ] || head -5 "$TEST_TMP/check.log" | sed 's/^/# /'
check_clean "clean at the end"
