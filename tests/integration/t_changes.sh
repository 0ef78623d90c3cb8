#!/bin/bash
# changes, size and naive diff.  Layers made two ways: from layer tars (the
# tarchain.py chain L1-L3) and "container-style" (C on L3: real file
# operations through the mounted union).  For each: the fast path (walk the
# diff dir) gives exactly the tree comparison's list (--naive) and the
# expected one; --json says the same; size is the diff dir's regular-file
# bytes; the naive diff applied on the same parent gives the same merged view.
. "$(dirname "$0")/lib.sh"
W=$TEST_TMP/work
mkdir -p "$W"

st init || exit 1
python3 "$TARCHAIN" gen "$W" || { fail "tarchain.py gen"; exit 1; }
prev=""
for i in 1 2 3; do
	st create "L$i" $prev
	check "apply L$i" st apply --quiet "L$i" -i "$W/l$i.tar"
	prev=L$i
done

# ---- a container-style layer ---------------------------------------------------
st create C L3
p=$(st mount C)
if [ -n "$p" ] && out=$(
	exec 2>&1
	set -e
	umask 022
	cd "$p"
	printf 'new\n' >newfile                        # A new file
	ln newfile newfile-hl                          # A hardlink to it
	echo more >>etc/conf                           # C appended to a lower file
	rm a/y1                                        # D a lower file
	rm -r a/b/c                                    # D a lower dir, recursively
	mv a/b/x1 a/b/x1.moved                         # a rename: D + A
	mv d d-moved                                   # a lower dir (EXDEV: copy + rm)
	chmod 0600 etc/passwd                          # C mode
	chown 1234:1234 untouched/u                    # C owner
	touch -d @1700000000 owned                     # C mtime only
	mkdir -p n1/n2/n3                              # A nested new dirs
	ln -s ../etc/conf n1/link                      # A symlink
	touch bin/tmpx && rm bin/tmpx                  # nothing: bin copied up, unchanged
	rm -r re && mkdir re && echo fresh >re/fresh   # an opaque dir in the upper
	rm repl && echo again >repl                    # whiteout replaced by a file
); then
	pass "container-style changes through the mounted union"
else
	fail "container-style changes through the mounted union" "$out"
fi
st umount C
check "C: the recreated dir is opaque in C's diff dir" is_opaque "$R/diff/C/re"
check "C: the removed dir is a whiteout in C's diff dir" is_whiteout "$R/diff/C/a/b/c"

cat >"$W/changes-C.txt" <<'EOF'
C /a
C /a/b
D /a/b/c
D /a/b/x1
A /a/b/x1.moved
D /a/y1
D /d
A /d-moved
A /d-moved/new1
A /d-moved/newdir
A /d-moved/same
C /etc
C /etc/conf
C /etc/passwd
A /n1
A /n1/link
A /n1/n2
A /n1/n2/n3
A /newfile
A /newfile-hl
C /owned
C /re
A /re/fresh
D /re/new
C /repl
C /untouched
C /untouched/u
EOF

# ---- per layer ------------------------------------------------------------------
declare -A PARENT=([L1]="" [L2]=L1 [L3]=L2 [C]=L3)
for id in L1 L2 L3 C; do
	parent=${PARENT[$id]}
	fast=$(st changes "$id" 2>&1)
	naive=$(st changes --naive "$id" 2>&1)
	is "$id: changes (fast path) = changes --naive" "$fast" "$naive"
	is "$id: changes = the expected list" "$fast" "$(cat "$W/changes-$id.txt")"
	if [ -n "$parent" ]; then
		is "$id: changes $id $parent (the direct parent) = changes $id" \
			"$(st changes "$id" "$parent" 2>&1)" "$fast"
	fi
	printf '%s\n' "$fast" >"$W/fast.txt"
	st changes --json "$id" >"$W/fast.json" 2>&1
	check "$id: changes --json parses and says the same as the text" \
		python3 "$TARCHAIN" json-vs-text "$W/fast.json" "$W/fast.txt"
	st changes --json --naive "$id" >"$W/naive.json" 2>&1
	check "$id: changes --json --naive says the same too" \
		python3 "$TARCHAIN" json-vs-text "$W/naive.json" "$W/fast.txt"

	is "$id: size = regular-file bytes of the diff dir, each inode once" \
		"$(st size "$id" 2>&1)" "$(python3 "$TARCHAIN" size "$R/diff/$id")"

	# The naive diff (and, for C, the fast one) applied on the same parent
	# gives the same merged view.
	for how in naive fast; do
		[ "$how" == fast ] && [ "$id" != C ] && continue
		flag=()
		[ "$how" == naive ] && flag=(--naive)
		copy=$id-$how
		if ! st diff "${flag[@]}" "$id" -o "$W/$copy.tar" 2>"$W/err"; then
			fail "$id: diff ${flag[*]}" "$(cat "$W/err")"
			continue
		fi
		st create "$copy" ${parent:+"$parent"}
		check "$id: apply the $how diff into $copy on ${parent:-nothing}" st apply --quiet "$copy" -i "$W/$copy.tar"
		a=$(st mount "$id")
		b=$(st mount "$copy")
		tarcmp "$id: $copy's merged view = $id's" --no-dir-mtime "$a" "$b"
		is "$id: $copy's changes = $id's" "$(st changes "$copy" 2>&1)" "$fast"
		st umount "$copy"
		st umount "$id"
	done
done
is "nothing left mounted" "$(overlay_count)" 0
