#!/usr/bin/env bash
# The tar verbs' CLI: progress line, refusals, id maps, outputs.
. "$(dirname "$0")/lib.sh"

st init >/dev/null || exit 1
SRC=$TEST_TMP/src
mkdir -p "$SRC/d"
head -c 3000000 /dev/urandom >"$SRC/big"
echo small >"$SRC/d/f"
chown 1000:1000 "$SRC/d/f"
tar --numeric-owner -C "$SRC" -cf "$TEST_TMP/in.tar" .

st create a >/dev/null
# A pseudo-terminal on stderr: `script` runs the command with one.
out=$(script -qec "$STRATA --root $R apply a -i $TEST_TMP/in.tar" /dev/null 2>&1)
if [[ "$out" == *"apply a: "*"entries"*"/s"* ]]; then pass "apply draws a progress line on a terminal"; else fail "apply draws a progress line on a terminal" "$out"; fi
st create b >/dev/null
out=$(script -qec "$STRATA --root $R apply --quiet b -i $TEST_TMP/in.tar" /dev/null 2>&1)
is "--quiet: only the size on a terminal" "$(printf '%s' "$out" | tr -d '\r')" "3000006"
st create c >/dev/null
err=$(st apply c -i "$TEST_TMP/in.tar" 2>&1 >/dev/null)
is "no progress when stderr is not a terminal" "$err" ""
out=$(script -qec "$STRATA --root $R diff a -o $TEST_TMP/a.tar" /dev/null 2>&1)
if [[ "$out" == *"diff a: "*"entries"* ]]; then pass "diff draws a progress line on a terminal"; else fail "diff draws a progress line on a terminal" "$out"; fi
# On a pseudo-terminal stdout and stderr both arrive on script's stdout.
out=$(script -qec "$STRATA --root $R diff a; echo rc=\$?" /dev/null 2>&1 | tr -d '\r')
is "diff refuses to write a tar to a terminal" "$out" "strata: diff a: standard output is a terminal; redirect it or use -o FILE
rc=1"
out=$(script -qec "$STRATA --root $R apply c; echo rc=\$?" /dev/null 2>&1 | tr -d '\r')
is "apply refuses to read a tar from a terminal" "$out" "strata: apply c: standard input is a terminal; give a tar with -i FILE or a pipe
rc=1"

check_error "apply onto a layer with content" "apply a: the layer already has content" st apply a -i "$TEST_TMP/in.tar"
st create m >/dev/null
st mount m >/dev/null
check_error "apply onto a layer in use" "apply m: the layer is in use" st apply m -i "$TEST_TMP/in.tar"
st umount m
st create child m >/dev/null
check_error "apply onto a layer that has children" "apply m: the layer is the parent of child" \
	st apply m -i "$TEST_TMP/in.tar"
is "the refused apply left the layer empty" "$(ls -A "$R/diff/m")" ""
check_error "apply with a parent that is not the layer's" 'apply child: "a" is not the layer.s parent \(m\)' \
	st apply child a -i "$TEST_TMP/in.tar"
check "apply with the right parent" st apply child m -i "$TEST_TMP/in.tar"
check_error "apply to a missing layer" "apply nope: .*no such layer" st apply nope -i "$TEST_TMP/in.tar"
check_error "apply of a missing file" "apply m: open $TEST_TMP/missing.tar" st apply m -i "$TEST_TMP/missing.tar"
check_error "apply of an invalid id" 'apply \.\./x: invalid id "\.\./x"' st apply ../x -i "$TEST_TMP/in.tar"
check_error "diff of a missing layer" "diff nope: .*no such layer" st diff nope -o "$TEST_TMP/x.tar"
if [ ! -e "$TEST_TMP/x.tar" ]; then pass "a failed diff leaves no output file"; else fail "a failed diff leaves no output file"; fi
check_error "changes of a missing layer" "changes nope: .*no such layer" st changes nope
check_error "size of a missing layer" "size nope: .*no such layer" st size nope
check_error "unknown option" "apply: unknown option" st apply --bogus a
check_error "too many arguments" "changes: too many arguments" st changes a b c

# Id maps: container ids shift to host ids and back.
st -o uidmap=0:100000:65536 -o gidmap=0:200000:65536 create u >/dev/null
is "uidmap: a new layer's dirs belong to the mapped root" \
	"$(stat -c %u:%g "$R/diff/u" "$R/mnt/u" "$R/work/u" | sort -u)" "100000:200000"
st -o uidmap=0:100000:65536 -o gidmap=0:200000:65536 apply u -i "$TEST_TMP/in.tar" >/dev/null
is "uidmap: root-owned file owned by the host id" "$(stat -c %u:%g "$R/diff/u/big")" "100000:200000"
is "uidmap: uid 1000 shifted" "$(stat -c %u:%g "$R/diff/u/d/f")" "101000:201000"
st -o uidmap=0:100000:65536 -o gidmap=0:200000:65536 diff u -o "$TEST_TMP/u.tar"
is "diff maps owners back" "$(tar --numeric-owner -tvf "$TEST_TMP/u.tar" | awk '$6 == "d/f" {print $2}')" "1000/1000"
check_error "diff of a host id outside the map" 'diff u: "big": uid 100000 has no container id' \
	st -o uidmap=0:300000:10 -o gidmap=0:200000:65536 diff u -o "$TEST_TMP/v.tar"
st create w >/dev/null
check_error "apply of an owner outside the map" 'apply w: entry "\./d/f": uid 1000 has no host id' \
	st -o uidmap=0:100000:10 apply w -i "$TEST_TMP/in.tar"
is "the failed apply left the layer empty" "$(ls -A "$R/diff/w")" ""
check_error "a malformed map" 'driver option uidmap: id map "0:1": expected' st -o uidmap=0:1 status

is "size prints the bytes of regular files" "$(st size a)" "3000006"
is "apply printed the same size" "$(st apply --quiet w -i "$TEST_TMP/in.tar")" "3000006"
