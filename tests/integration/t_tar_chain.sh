#!/bin/bash
# A 3-layer chain built from layer tars (tarchain.py): whiteouts at depths
# 1-4, an opaque dir with new content, chmod only, replaced files, a dir
# turned into a file and back, a whited-out dir re-created, a whiteout of a
# name no layer has.  The merged views must equal what OCI semantics give on
# an in-memory model, and `diff` must give the layer tars back (.wh. entries,
# opaque markers).
. "$(dirname "$0")/lib.sh"
W=$TEST_TMP/work
mkdir -p "$W"

st init || exit 1
python3 "$TARCHAIN" gen "$W" || { fail "tarchain.py gen"; exit 1; }

prev=""
for i in 1 2 3; do
	st create "L$i" $prev
	out=$(st apply "L$i" -i "$W/l$i.tar" 2>"$W/err")
	rc=$?
	if [ "$rc" -eq 0 ]; then pass "apply L$i"; else fail "apply L$i" "exit $rc" "$(cat "$W/err")"; fi
	is "apply L$i prints the layer's regular-file bytes" "$out" "$(cat "$W/size-L$i")"
	prev=L$i
done

# ---- what the diff dirs hold ----------------------------------------------------
for p in L2/link-abs L2/a/y2 L2/a/b/x2 L2/a/b/c/deep2 L2/re \
	L3/tree L3/a/b/c/d L3/a-b L3/d/newdir/n L3/etc/keep L3/untouched/ghost; do
	check "whiteout $p is a 0/0 char device" is_whiteout "$R/diff/$p"
done
check "L2/d is opaque" is_opaque "$R/diff/L2/d"
for p in L2/a L2/a/b L3/d L3/re L3/untouched; do
	if is_opaque "$R/diff/$p"; then fail "$p is not opaque"; else pass "$p is not opaque"; fi
done
is "no .wh. names in any diff dir" "$(find "$R/diff" -name '.wh.*')" ""
is "L2/modeme: new mode, same content" "$(stat -c %a "$R/diff/L2/modeme") $(cat "$R/diff/L2/modeme")" "600 mode me"
is "L2/e: a dir turned into a file" "$(stat -c %F "$R/diff/L2/e")" "regular file"
is "L3/ff: a file turned into a dir" "$(stat -c %F "$R/diff/L3/ff")" directory
is "L3: a hardlink pair within the layer" "$(stat -c %i "$R/diff/L3/new3")" "$(stat -c %i "$R/diff/L3/etc/new3-link")"
is "L1: a hardlink pair" "$(stat -c %i "$R/diff/L1/h1")" "$(stat -c %i "$R/diff/L1/a/h2")"
is "L1/owned keeps its xattrs and owner" \
	"$(stat -c %u:%g "$R/diff/L1/owned") $(getfattr --only-values -n trusted.strata-test "$R/diff/L1/owned" 2>/dev/null)" \
	"1000:1000 t"

before=$(tree "$R/diff/L1")
check_error "apply into a layer that is not empty is refused" '^strata: apply L1: ' \
	st apply L1 -i "$W/l1.tar"
is "the refused apply left L1 as it was" "$(tree "$R/diff/L1")" "$before"

# ---- merged views against the model ---------------------------------------------
for i in 1 2 3; do
	p=$(st mount "L$i")
	if [ -z "$p" ]; then
		fail "mount L$i"
		continue
	fi
	tarcmp "L$i merged view: types, modes, owners, sizes, contents, targets, xattrs" \
		--no-mtime "$W/expected-L$i.tar" "$p"
	tarcmp "L$i merged view: mtimes too" "$W/expected-L$i.tar" "$p"
	if [ "$i" == 3 ]; then
		is "L3: re-created dir shows only its new file" "$(ls -A "$p/re")" new
		is "L3: opaque dir of L2 still hides L1's entries" \
			"$(find "$p/d" -mindepth 1 -maxdepth 1 -printf '%f\n' | LC_ALL=C sort | tr '\n' ' ')" "new1 newdir same "
		is "L3: a whiteout inside L2's opaque dir" "$(ls -A "$p/d/newdir")" ""
		check "L3: whited-out dir is gone" test ! -e "$p/tree"
		check "L3: dir at depth 4 whited out" test ! -e "$p/a/b/c/d"
		is "L3: replaced file" "$(cat "$p/repl")" "v2, replaced"
	fi
	st umount "L$i"
done
is "nothing left mounted" "$(overlay_count)" 0

# ---- diff gives the layer tars back ---------------------------------------------
for i in 1 2 3; do
	if ! st diff "L$i" -o "$W/d$i.tar" 2>"$W/err"; then
		fail "diff L$i" "$(cat "$W/err")"
		continue
	fi
	tarcmp "diff L$i equals l$i.tar entry by entry (.wh. entries, opaque marker)" "$W/l$i.tar" "$W/d$i.tar"
	is "diff L$i: names and order" "$(python3 "$TARCHAIN" order "$W/d$i.tar" 2>&1)" ""
done
listing=$(tar -tvf "$W/d2.tar" 2>&1)
for n in .wh.link-abs a/.wh.y2 a/b/.wh.x2 a/b/c/.wh.deep2 .wh.re d/.wh..wh..opq; do
	is "diff L2 exports $n as an empty regular file" \
		"$(printf '%s\n' "$listing" | awk -v n="$n" '$NF == n { print substr($1, 1, 1), $3 }')" "- 0"
done
names=$(tar -tf "$W/d2.tar" 2>&1)
is "diff L2: d/ is followed by d/.wh..wh..opq" \
	"$(printf '%s\n' "$names" | grep -A1 -x 'd/' | tail -n 1)" "d/.wh..wh..opq"
is "diff L2: no char devices exported" "$(printf '%s\n' "$listing" | grep -c '^c' )" 0
st diff L2 L1 -o "$W/d2-explicit.tar"
check "diff L2 L1 (the direct parent) is the same as diff L2" cmp "$W/d2.tar" "$W/d2-explicit.tar"

# The exported whiteouts and marker work again when applied.
st create L2again L1
check "apply diff L2 onto L1 again" st apply L2again -i "$W/d2.tar"
p=$(st mount L2again)
tarcmp "re-applied L2 export gives the same merged view" "$W/expected-L2.tar" "$p"
st umount L2again
is "nothing left mounted at the end" "$(overlay_count)" 0
