#!/bin/bash
# `strata apply` against the corpus of tests/corpus/make_corpus.py: every
# hostile or broken tar is refused with one line naming the entry, leaving
# the layer's diff dir empty, no staging debris, and nothing outside the
# layer created, changed or followed (a sentinel dir is what hostile
# entries aim at); every good tar is applied with all it carries (types,
# owners, modes, mtimes, xattrs, sparse files, whiteouts, opaque dirs),
# plain or compressed.  Then: a second apply is refused, an unknown layer
# is named, and an apply killed mid-stream leaves only a staging dir that
# the next init removes.
. "$(dirname "$0")/lib.sh"

CORPUS=$TEST_TMP/corpus
OUTSIDE=$TEST_TMP/outside # from a diff dir: ../../../outside
SNAP=$TEST_TMP/snap
mkdir -p "$OUTSIDE/sub" "$SNAP"
echo sentinel >"$OUTSIDE/sentinel"
echo sub >"$OUTSIDE/sub/file0"
setfattr -n user.sentinel -v 1 "$OUTSIDE/sentinel"

st init || exit 1
if ! gen=$(OUTSIDE=$OUTSIDE python3 "$(dirname "$0")/../corpus/make_corpus.py" "$CORPUS" 2>&1); then
	fail "corpus generated" "$gen"
	exit 1
fi
pass "corpus generated ($gen)"

# apply_in TAR [ARGS...]: apply with TAR on stdin.
apply_in() {
	local f=$1
	shift
	st apply "$@" <"$f"
}

# Everything under $TEST_TMP except the contents of diff dir $1 (and our
# own snapshots): type, mode, owner, link count, inode, size and link
# target of each entry, the content of each file (the corpus aside: it is
# only read), and the xattrs of the sentinel dir and of the diff dir itself.
state() {
	local id=$1
	(cd "$TEST_TMP" && find . \( -path ./snap -o -path "./root/diff/$id/*" \) -prune -o \
		-printf '%y %m %U:%G %n %i %p' \( -type d -printf '\n' -o -type l -printf ' -> %l\n' -o -printf ' %s\n' \) |
		LC_ALL=C sort)
	(cd "$TEST_TMP" && find . \( -path ./snap -o -path ./corpus -o -path "./root/diff/$id" \) -prune -o \
		-type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum)
	getfattr -R -h -d -m - --absolute-names "$OUTSIDE" "$R/diff/$id" 2>&1
}

# A full description of a tree, for comparing two extractions.  Not
# compared: a directory's size, and a whiteout's mtime (the time of its
# extraction: the tar header's is not kept, see README).
describe() {
	(cd "$1" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
		xargs -0r stat -c '%n %F %a %u:%g %h %s %t:%T %Y %N' |
		sed -e 's/^\(.*directory [0-9]* [0-9:]* [0-9]*\) [0-9]* /\1 - /' \
			-e 's/^\(.* character special file 0 [0-9:]* [0-9]* [0-9]* 0:0\) [0-9]* /\1 - /')
	(cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum)
	(cd "$1" && getfattr -R -h -d -m - . 2>&1)
}

staging() { find "$R/diff" -mindepth 1 -maxdepth 1 -name '.tmp-*'; }

# The sentinel dir in full, and the names at the top of $TEST_TMP (where
# "../../.." from a diff dir lands).
outside_state() {
	(cd "$OUTSIDE" && find . -printf '%y %m %U:%G %n %i %s %p -> %l\n' | LC_ALL=C sort)
	(cd "$OUTSIDE" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum)
	getfattr -R -h -d -m - --absolute-names "$OUTSIDE" 2>&1
	(cd "$TEST_TMP" && find . -mindepth 1 -maxdepth 1 | LC_ALL=C sort)
}

# Names in ROOT/diff that are not layers.
strays() {
	local f
	for f in "$R"/diff/* "$R"/diff/.[!.]*; do
		[ -e "$f" ] || continue
		[ -e "$R/layers/$(basename "$f")" ] || echo "$f"
	done
}

outside0=$(outside_state)

# ---------------------------------------------------------------- should fail
nfail=0
for tarf in "$CORPUS"/should-fail/*.tar; do
	name=$(basename "$tarf" .tar)
	id=f-$name
	expect=$(cat "$CORPUS/should-fail/$name.expect")
	args=()
	[ -f "$CORPUS/should-fail/$name.args" ] && read -ra args <"$CORPUS/should-fail/$name.args"
	if ! st create "$id"; then
		fail "$name: create the layer"
		continue
	fi
	nfail=$((nfail + 1))
	before=$(state "$id")
	re="^strata: apply $id: "
	[ -z "$expect" ] || re="$re.*($expect)"
	check_error "$name: refused" "$re" apply_in "$tarf" "${args[@]}" "$id"
	after=$(state "$id")
	problems=()
	left=$(ls -A "$R/diff/$id" 2>&1)
	[ -z "$left" ] || problems+=("diff dir not empty: $(echo "$left" | head -5 | tr '\n' ' ')")
	debris=$(staging)
	[ -z "$debris" ] || problems+=("staging left: $debris")
	if [ "$before" != "$after" ]; then
		problems+=("changed outside the layer (< before, > after):")
		mapfile -t dl < <(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | head -10)
		problems+=("${dl[@]}")
	fi
	if [ ${#problems[@]} -eq 0 ]; then
		pass "$name: layer empty, no debris, nothing outside touched"
	else
		fail "$name: layer empty, no debris, nothing outside touched" "${problems[@]}"
	fi
done
is "sentinel intact after $nfail hostile tars" "$(cat "$OUTSIDE/sentinel")" sentinel
is "sentinel dir unchanged after all of them" "$(outside_state)" "$outside0"
is "ROOT/diff holds only layer dirs" "$(strays)" ""

# ---------------------------------------------------------------- should pass
for n in alltypes alltypes-gzip alltypes-xz alltypes-zstd whiteouts whiteouts-zstd \
	implicit-parents longnames replace-symlink-file replace-symlink-dir; do
	id=p-$n
	tarf=$CORPUS/should-pass/$n.tar
	st create "$id" || {
		fail "$n: create the layer"
		continue
	}
	case $n in # plain tars by -i, the rest on stdin
	*-gzip | *-xz | *-zstd) out=$(st apply "$id" <"$tarf" 2>"$SNAP/err") ;;
	*) out=$(st apply "$id" -i "$tarf" 2>"$SNAP/err") ;;
	esac
	rc=$?
	if [ $rc -ne 0 ]; then
		fail "$n: applied" "exit $rc: $(cat "$SNAP/err")"
		continue
	fi
	pass "$n: applied"
	is "$n: nothing on stderr" "$(cat "$SNAP/err")" ""
	is "$n: prints the regular-file bytes" "$out" "$(cat "$CORPUS/should-pass/$n.size")"
	check "$n: every file's content" bash -c "cd '$R/diff/$id' && sha256sum --quiet -c '$CORPUS/should-pass/$n.files'"
done
is "no staging left after the good tars" "$(staging)" ""
is "sentinel dir unchanged after the good tars" "$(outside_state)" "$outside0"

d=$R/diff/p-alltypes
if [ -d "$d/dir" ]; then
	is "dir: mode, owner, mtime (set after its children)" "$(stat -c '%F %a %u:%g %Y' "$d/dir")" "directory 750 1234:1234 1000000000"
	is "file: mode, owner, mtime" "$(stat -c '%F %a %u:%g %Y' "$d/dir/file")" "regular file 640 1234:1234 1000000000"
	is "hardlink shares the inode" "$(stat -c '%i %h' "$d/dir/hard")" "$(stat -c '%i 2' "$d/dir/file")"
	is "relative symlink" "$(readlink "$d/dir/sym")" file
	is "dangling symlink" "$(readlink "$d/dangling")" does/not/exist
	is "absolute symlink kept as text" "$(readlink "$d/abssym")" /etc/passwd
	is "fifo" "$(stat -c '%F %a' "$d/fifo")" "fifo 600"
	is "char device 10/200" "$(stat -c '%F %a %t %T' "$d/chr")" "character special file 620 a c8"
	is "block device 8/17" "$(stat -c '%F %a %t %T' "$d/blk")" "block special file 660 8 11"
	is "setuid kept after chown" "$(stat -c '%a %u:%g' "$d/suid")" "4755 1234:1234"
	is "setgid kept" "$(stat -c '%a %u:%g' "$d/sgid")" "2711 0:1234"
	is "sticky dir" "$(stat -c '%F %a' "$d/sticky")" "directory 1777"
	is "mtime in the past" "$(stat -c %Y "$d/old")" 1000000000
	is "xattr user.color" "$(getfattr --absolute-names --only-values -n user.color "$d/xattrs" 2>&1)" blue
	is "xattr user.bin (binary)" "$(getfattr --absolute-names -e hex -n user.bin "$d/xattrs" 2>&1 | sed -n 's/^user.bin=//p')" 0x000102ff
	is "xattr trusted.demo" "$(getfattr --absolute-names --only-values -n trusted.demo "$d/xattrs" 2>&1)" yes
	is "security.capability kept after chown" \
		"$(getfattr --absolute-names -e hex -n security.capability "$d/xattrs" 2>&1 | sed -n 's/^security.capability=//p')" \
		0x0000000200040000000000000000000000000000
	is "xattr file: owner and mode" "$(stat -c '%a %u:%g' "$d/xattrs")" "755 1234:1234"
	is "xattr on a dir" "$(getfattr --absolute-names --only-values -n user.d "$d/xdir" 2>&1)" dir-value
	for s in sparse sparse1; do
		is "$s: apparent size" "$(stat -c %s "$d/$s")" 16777216
		blocks=$(stat -c %b "$d/$s")
		if [ $((blocks * 512)) -lt $((1 << 20)) ]; then pass "$s: holes kept ($blocks blocks)"; else fail "$s: holes kept" "$blocks blocks of 512"; fi
	done
	for v in gzip xz zstd; do
		if [ -d "$R/diff/p-alltypes-$v" ]; then
			is "$v: the same tree as plain" "$(describe "$R/diff/p-alltypes-$v")" "$(describe "$d")"
		fi
	done
else
	fail "alltypes extracted" "no $d/dir"
fi

d=$R/diff/p-whiteouts
for w in top a/f a/d/e/deep "a/d/e/dir with space"; do
	check "whiteout $w is a 0/0 char device" is_whiteout "$d/$w"
done
for o in a/b o empty-opaque; do check "$o is opaque" is_opaque "$d/$o"; done
for o in a a/d a/d/e; do check "$o is not opaque" bash -c "[ -d '$d/$o' ] && ! getfattr -n trusted.overlay.opaque '$d/$o' >/dev/null 2>&1"; done
is "no .wh. names left" "$(cd "$d" 2>/dev/null && find . -name '.wh.*')" ""
is "whiteouts: zstd gives the same tree" "$(describe "$R/diff/p-whiteouts-zstd")" "$(describe "$d")"

d=$R/diff/p-implicit-parents
is "missing parents made as dirs" "$(stat -c %F "$d/p" "$d/p/q" "$d/p/q/r" 2>&1 | sort -u)" directory
check "whiteout under an implied parent" is_whiteout "$d/x/y"

d=$R/diff/p-longnames
is "long symlink target" "$(readlink "$d/longsym")" "$(printf 't%.0s' {1..150})"
is "GNU long link target" "$(readlink "$d/glink")" "$(printf 'l%.0s' {1..120})"
long=$d/$(printf 'd%.0s' {1..90})/$(printf 'e%.0s' {1..90})
is "hardlink with long names" "$(stat -c %i "$long/hard" 2>&1)" "$(stat -c %i "$long/f" 2>&1)"

d=$R/diff/p-replace-symlink-file
check "a file replaces a symlink of its name" bash -c "[ -f '$d/link' ] && [ ! -L '$d/link' ]"
d=$R/diff/p-replace-symlink-dir
check "a dir replaces a symlink of its name" bash -c "[ -d '$d/dlink' ] && [ ! -L '$d/dlink' ] && [ -f '$d/dlink/inside' ]"
check "nothing written through the replaced symlink" test ! -e "$OUTSIDE/inside"

# The whiteouts as overlay reads them: a child of a base that has the names.
st create wbase && st create wchild wbase
b=$R/diff/wbase
mkdir -p "$b/a/b" "$b/a/d/e/dir with space" "$b/o"
for f in top a/f a/b/old a/d/e/deep a/d/e/other o/gone a/stays; do echo base >"$b/$f"; done
check "apply with PARENT given" bash -c "'$STRATA' --root '$R' apply wchild wbase -i '$CORPUS/should-pass/whiteouts.tar' >/dev/null"
if m=$(st mount wchild); then
	is "merged view hides whiteouts, opaque dirs hide below" "$(tree "$m")" "$(printf '%s\n' \
		'd ./a' 'd ./a/b' 'd ./a/d' 'd ./a/d/e' 'd ./empty-opaque' 'd ./o' \
		'f ./a/b/new' 'f ./a/d/e/other' 'f ./a/kept' 'f ./a/stays' 'f ./o/keep' | LC_ALL=C sort)"
	st umount wchild
else
	fail "mount the child of applied whiteouts"
fi

# --no-devices refuses device entries, not whiteouts.
st create nodev
check "--no-devices accepts whiteouts" bash -c "'$STRATA' --root '$R' apply --no-devices nodev <'$CORPUS/should-pass/whiteouts.tar' >/dev/null"

# ---------------------------------------------------------------- refusals
d=$R/diff/p-alltypes
before=$(describe "$d")
check_error "second apply onto a non-empty layer refused" "^strata: apply p-alltypes: " \
	apply_in "$CORPUS/should-pass/whiteouts.tar" p-alltypes
is "the layer's content intact" "$(describe "$d")" "$before"
is "no staging left" "$(staging)" ""

check_error "apply into a missing layer names it" "^strata: apply nosuch: " apply_in "$CORPUS/should-pass/whiteouts.tar" nosuch
check "nothing made for the missing layer" bash -c "[ ! -e '$R/diff/nosuch' ] && [ ! -e '$R/layers/nosuch' ]"
is "no staging left" "$(staging)" ""

# ---------------------------------------------------------------- kill -9
# 2 MiB of an 8 MiB file, then the writer stalls: strata is mid-entry.
st create killed
fifo=$SNAP/fifo
mkfifo "$fifo"
"$STRATA" --root "$R" apply killed <"$fifo" >"$SNAP/k.out" 2>"$SNAP/k.err" &
spid=$!
BG_PIDS+=("$spid")
(
	head -c $((2 << 20)) "$CORPUS/slow.tar"
	exec sleep 30
) >"$fifo" 2>/dev/null &
wpid=$!
BG_PIDS+=("$wpid")
seen=""
for _ in $(seq 100); do
	seen=$(staging)
	[ -n "$seen" ] && break
	kill -0 "$spid" 2>/dev/null || break
	sleep 0.05
done
sleep 0.2 # let it write into the staging dir
if [ -n "$seen" ] && kill -0 "$spid" 2>/dev/null; then
	pass "a running apply stages in ROOT/diff/.tmp-*"
else
	fail "a running apply stages in ROOT/diff/.tmp-*" "staging: '$seen'" "stderr: $(cat "$SNAP/k.err")"
fi
kill -9 "$spid" 2>/dev/null
wait "$spid" 2>/dev/null
kill "$wpid" 2>/dev/null
wait "$wpid" 2>/dev/null
is "killed apply: diff dir empty" "$(ls -A "$R/diff/killed")" ""
check "init after the kill" st init
is "init removed the staging dir" "$(staging)" ""
check "the layer still exists" st exists killed
is "the layer applies afterwards" "$(st apply killed -i "$CORPUS/slow.tar" 2>&1)" 8388608
is "ROOT/diff holds only layer dirs at the end" "$(strays)" ""
