#!/bin/bash
# import-aufs: an AUFS-format store (Docker's /var/lib/docker/aufs) built by
# aufs_store.py -- chains with whiteouts at every depth, opaque dirs, type
# changes, hardlinks, pseudo-links, aufs's bookkeeping, a 120-layer chain --
# is imported; every layer, mounted, must be the merged tree the aufs
# semantics give (aufs_store.py computes it from the source branches and
# checks hand-written expectations too); the source is never written; the
# summary counts what was built; --check agrees and catches tampering; a
# kill -9 in the middle resumes; bad and hostile sources fail cleanly.
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
AS=$HERE/aufs_store.py
W=$TEST_TMP/work
A=$TEST_TMP/aufs # the source store
mkdir -p "$W"
START=$SECONDS

aufs() { python3 "$AS" "$@"; }
sr() { "$STRATA" --root "$1" "${@:2}"; } # sr ROOT COMMAND...: strata on another store

# The summary line the import should print for these counts ("key=value" words).
summary_for() { # summary_for BEFORE key=value...
	local before=$1 kv
	shift
	declare -A c
	for kv in "$@"; do c[${kv%%=*}]=${kv#*=}; done
	echo "imported ${c[layers]} layers ($before imported before); converted ${c[files]} files" \
		"(${c[bytes]} bytes), ${c[dirs]} directories, ${c[links]} symlinks and specials," \
		"${c[hardlinks]} hardlinks, ${c[whiteouts]} whiteouts, ${c[opaque]} opaque directories"
}

# verify_layers ROOT AUFS_ROOT DESC [ID...]: mount, compare and unmount every
# layer (aufs_store.py verify); a TAP case per layer, except the deep chain's
# layers, which make one case together.
verify_layers() {
	local root=$1 src=$2 desc=$3 out line id
	shift 3
	out=$(python3 "$AS" verify "$src" "$STRATA" "$root" "$@" 2>&1)
	local deep_ok=0 deep_bad=() cur="" detail=()
	flush() {
		[ -z "$cur" ] && return
		if [[ "$cur" == deep* ]]; then
			[ "${#detail[@]}" -eq 0 ] && deep_ok=$((deep_ok + 1)) || deep_bad+=("${detail[@]}")
		elif [ "${#detail[@]}" -eq 0 ]; then
			pass "$desc: layer $cur = its aufs view ($curmsg)"
		else
			fail "$desc: layer $cur = its aufs view" "${detail[@]}"
		fi
		cur="" detail=()
	}
	while IFS= read -r line; do
		if [[ "$line" == "ok "* ]]; then
			flush
			id=${line#ok }
			cur=${id%% *} curmsg=${id#* }
		elif [[ "$line" == "not ok "* ]]; then
			flush
			id=${line#not ok }
			cur=${id%% *} detail=("$line")
		else
			detail+=("$line")
			[ -z "$cur" ] && cur="?"
		fi
	done <<<"$out"
	flush
	if [ "$deep_ok" -gt 0 ] || [ "${#deep_bad[@]}" -gt 0 ]; then
		if [ "${#deep_bad[@]}" -eq 0 ]; then
			pass "$desc: each of the $deep_ok layers of the deep chain = its aufs view"
		else
			fail "$desc: each layer of the deep chain = its aufs view" "${deep_bad[@]:0:40}"
		fi
	fi
}

# same DESC GOT WANT: like lib.sh's is, for values of several lines (each
# shown as a TAP comment line).
same() {
	if [ "$2" == "$3" ]; then
		pass "$1"
	else
		local got want
		mapfile -t got <<<"$2"
		mapfile -t want <<<"$3"
		fail "$1" "got:" "${got[@]/#/  }" "expected:" "${want[@]/#/  }"
	fi
}

# A listing of a strata store, to see that a failed command changed nothing.
store_listing() { (cd "$1" && find . -mindepth 1 -printf '%y %m %U:%G %s %T@ %p\n' | LC_ALL=C sort); }

# ---- the source store -------------------------------------------------------------
if ! out=$(aufs build "$A" 2>&1); then
	fail "aufs_store.py build" "$out"
	exit 1
fi
mapfile -t IDS < <(aufs layers "$A")
N=${#IDS[@]}
bad=()
for id in "${IDS[@]}"; do
	out=$(aufs spot "$id" --model "$A" 2>&1) || bad+=("$out")
done
if [ "${#bad[@]}" -eq 0 ]; then
	pass "the model's aufs views agree with the hand-written expectations ($N layers)"
else
	fail "the model's aufs views agree with the hand-written expectations" "${bad[@]}"
fi
aufs snapshot "$A" >"$W/src-before"

# ---- 1. import, then every layer mounted against the aufs semantics ------------------
st init
t0=$SECONDS
if st import-aufs "$A" >"$W/out" 2>"$W/err"; then
	pass "import-aufs of $N layers ($((SECONDS - t0)) s)"
else
	fail "import-aufs of $N layers" "$(cat "$W/out" "$W/err")"
fi

# Progress: one line per layer on stderr, parents before children.
order=$(python3 - "$A" "$W/err" "$N" <<'EOF'
import re, sys
root, errf, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen, bad = set(), []
lines = open(errf).read().splitlines()
for i, line in enumerate(lines, 1):
    m = re.fullmatch(r"\[(\d+)/(\d+)\] (\S+): (\d+) entries", line)
    if not m or int(m[1]) != i or int(m[2]) != n:
        bad.append("bad line: %r" % line)
        continue
    chain = [x for x in open("%s/layers/%s" % (root, m[3])).read().split("\n") if x]
    if chain and chain[0] not in seen:
        bad.append("%s before its parent %s" % (m[3], chain[0]))
    seen.add(m[3])
if len(lines) != n:
    bad.append("%d lines for %d layers" % (len(lines), n))
print("\n".join(bad))
EOF
)
same "progress on stderr: one line per layer, parents first" "$order" ""

verify_layers "$R" "$A" "import"
same "every mount was unmounted" "$(overlay_count)" "0"

bad=()
for id in "${IDS[@]}"; do
	cmp -s "$A/layers/$id" "$R/layers/$id" || bad+=("$id: $(tr '\n' ' ' <"$R/layers/$id" 2>&1)")
done
same "each imported layer's chain file = the aufs one" "${bad[*]}" ""
same "the store holds exactly the aufs layers (no A1-removing)" \
	"$(cd "$R/layers" && find . -mindepth 1 -printf '%P\n' | LC_ALL=C sort)" "$(printf '%s\n' "${IDS[@]}" | LC_ALL=C sort)"
same "no .wh. names in the imported diff dirs" "$(cd "$R/diff" && find . -name '.wh.*')" ""
if is_whiteout "$R/diff/A2/rootfile" && is_whiteout "$R/diff/A2/n1/n2/n3/n4/n5/victim" &&
	is_opaque "$R/diff/A2/opq1" && is_opaque "$R/diff/A3a/wdir/sub" && [ -f "$R/diff/A2/opq1/new" ] &&
	! is_opaque "$R/diff/A3a/wdir"; then
	pass "whiteouts became 0/0 devices, opaque dirs trusted.overlay.opaque=y"
else
	fail "whiteouts became 0/0 devices, opaque dirs trusted.overlay.opaque=y" \
		"$(ls -la "$R/diff/A2" "$R/diff/A2/opq1" 2>&1)"
fi
ino() { stat -c '%i:%h' "$@" 2>&1 | tr '\n' ' '; }
i1=$(stat -c %i "$R/diff/A1/bin/hl1") i4=$(stat -c %i "$R/diff/A4/hl/x")
same "hardlinks within a layer stay hardlinks; a file with a pseudo-link twin has one link" \
	"$(ino "$R/diff/A1/bin/hl"{1,2,3} "$R/diff/A4/hl/x" "$R/diff/A4/hl/y" "$R/diff/A4/hl/sub/z" \
		"$R/diff/A2/var/lib/data/edited" "$R/diff/A3a/bin/plnked")" \
	"$i1:3 $i1:3 $i1:3 $i4:3 $i4:3 $i4:3 $(stat -c %i "$R/diff/A2/var/lib/data/edited"):1 $(stat -c %i "$R/diff/A3a/bin/plnked"):1 "
blocks=$(du -k "$R/diff/A1/big/sparse" | cut -f1)
if [ "$blocks" -lt 1024 ]; then pass "the 16 MiB sparse file stays sparse ($blocks KiB)"; else fail "the sparse file stays sparse" "$blocks KiB"; fi
same "a pseudo-link with no visible twin was not imported" \
	"$(grep -rl 'a pseudo-link with no visible twin' "$R/diff" 2>&1)" ""
if out=$(diff "$W/src-before" <(aufs snapshot "$A") 2>&1); then
	pass "the source store is unchanged: contents, metadata, inodes, ctimes ($(wc -l <"$W/src-before") entries)"
else
	fail "the source store is unchanged" "$(printf '%s\n' "$out" | head -n 20)"
fi

# ---- 2. the summary line ---------------------------------------------------------------
read -ra counts < <(aufs counts "$A")
same "the summary line counts what was built (${counts[*]})" "$(cat "$W/out")" "$(summary_for 0 "${counts[@]}")"

# ---- 3. --check ------------------------------------------------------------------------
out=$(st import-aufs --check --quiet "$A" 2>&1)
rc=$?
same "--check on the imported store: exit 0, 0 differences" "$rc: $out" "0: checked $N layers: 0 differences"
same "--check left nothing mounted" "$(overlay_count)" "0"

# check_tamper DESC WANT: --check exits 1 and prints the line WANT.
check_tamper() {
	local out rc
	out=$(st import-aufs --check --quiet "$A" 2>&1)
	rc=$?
	if [ "$rc" -eq 1 ] && grep -qxF -- "$2" <<<"$out"; then
		pass "$1: --check exits 1 and says \"$2\""
	else
		fail "$1: --check exits 1 and says \"$2\"" "exit $rc" "$(head -n 20 <<<"$out")"
	fi
}
printf 'BACK AGAIN\n' >"$W/x" && cp -p "$R/diff/A4/rootfile" "$W/rootfile.keep"
cat "$W/x" >"$R/diff/A4/rootfile"
check_tamper "a file's content changed in a leaf layer" "A4 /rootfile: content differs"
cat "$W/rootfile.keep" >"$R/diff/A4/rootfile"
touch -r "$W/rootfile.keep" "$R/diff/A4/rootfile"

rm "$R/diff/A3b/home"
check_tamper "a whiteout removed from a leaf layer" "A3b /home: not in the aufs view"
mknod "$R/diff/A3b/home" c 0 0

setfattr -x trusted.overlay.opaque "$R/diff/A2/opq1"
check_tamper "a middle layer's opaque mark removed" "A2 /opq1/a: not in the aufs view"
out=$(st import-aufs --check --quiet "$A" 2>&1)
if grep -q '^A3a /opq1/' <<<"$out" && grep -q '^A4 /opq1/' <<<"$out"; then
	pass "... and its children differ too (A3a, A4)"
else
	fail "... and its children differ too (A3a, A4)" "$(head -n 20 <<<"$out")"
fi
setfattr -n trusted.overlay.opaque -v y "$R/diff/A2/opq1"
out=$(st import-aufs --check --quiet "$A" 2>&1)
rc=$?
same "restored: --check says 0 differences again" "$rc: $out" "0: checked $N layers: 0 differences"

R5=$TEST_TMP/r5
sr "$R5" init
check_error "--check on a store without the layers: error naming the first one" \
	"import-aufs --check .*: layer ${IDS[0]} is not in the store \(run import-aufs first\)" \
	sr "$R5" import-aufs --check --quiet "$A"

# ---- 4. interruption and resume ---------------------------------------------------------
R2=$TEST_TMP/r2
sr "$R2" init
"$STRATA" --root "$R2" import-aufs "$A" >"$W/out2" 2>"$W/err2" &
pid=$!
BG_PIDS+=("$pid")
killed=0
while kill -0 "$pid" 2>/dev/null; do
	done_n=$(grep -lx "done" "$R2"/import-aufs/* 2>/dev/null | wc -l)
	if [ "$done_n" -ge 20 ]; then
		kill -9 "$pid" && killed=1
		break
	fi
	sleep 0.005
done
{ wait "$pid"; } 2>/dev/null
rc=$?
done_n=$(grep -lx "done" "$R2"/import-aufs/* 2>/dev/null | wc -l)
started=$(grep -lx "started" "$R2"/import-aufs/* 2>/dev/null | xargs -r -n1 basename)
if [ "$killed" -eq 1 ] && [ "$rc" -eq 137 ] && [ "$done_n" -lt "$N" ]; then
	pass "import killed -9 in the middle: $done_n of $N layers done, started: ${started:-none}"
else
	fail "import killed -9 in the middle" "killed=$killed exit=$rc done=$done_n of $N"
fi
# A kill while the import held a parent's union mounted leaves it (its hold
# died with the process): the next run takes it down.
echo "# unions left mounted by the kill: $(overlay_count)"
t0=$SECONDS
if sr "$R2" import-aufs "$A" >"$W/out2" 2>"$W/err2"; then
	pass "import-aufs again completes ($((SECONDS - t0)) s)"
else
	fail "import-aufs again completes" "$(cat "$W/out2" "$W/err2")"
fi
same "... and leaves nothing mounted" "$(overlay_count)" "0"
line=$(cat "$W/out2")
same "... and says the earlier layers were imported before" \
	"${line%%;*}" "imported $((N - done_n)) layers ($done_n imported before)"
same "... one \"imported before, kept\" progress line per earlier layer" \
	"$(grep -c ': imported before, kept$' "$W/err2")" "$done_n"
mapfile -t fresh < <(grep -v ': imported before, kept$' "$W/err2" | sed -E 's/^\[[0-9]+\/[0-9]+\] ([^:]+):.*/\1/')
read -ra counts < <(aufs counts "$A" "${fresh[@]}")
same "... and counts the layers it imported this time" "$line" "$(summary_for "$done_n" "${counts[@]}")"
verify_layers "$R2" "$A" "resumed import"
out=$(sr "$R2" import-aufs --check --quiet "$A" 2>&1)
same "... --check on the resumed import: 0 differences" "$?: $out" "0: checked $N layers: 0 differences"
out=$(sr "$R2" import-aufs "$A" 2>/dev/null)
same "a third run keeps everything" "$out" "$(summary_for "$N" layers=0 files=0 bytes=0 dirs=0 links=0 hardlinks=0 whiteouts=0 opaque=0)"

# A layer left "started" (made by hand): remade.
R3=$TEST_TMP/r3
sr "$R3" init && sr "$R3" create A1 && echo junk >"$R3/diff/A1/junk" && mkdir -p "$R3/import-aufs" &&
	echo started >"$R3/import-aufs/A1"
out=$(sr "$R3" import-aufs --quiet "$A" 2>&1)
same "a layer left \"started\" by an interrupted run is remade" "${out%%;*}" "imported $N layers (0 imported before)"
verify_layers "$R3" "$A" "after a \"started\" layer" A1 A2
same "... and marked done" "$(cat "$R3/import-aufs/A1")" "done"

# A layer of the same id the import did not make: refused before anything is made.
R4=$TEST_TMP/r4
sr "$R4" init && sr "$R4" create deep050 && echo mine >"$R4/diff/deep050/mine"
before=$(store_listing "$R4")
check_error "a layer of the same id not made by the import: refused, naming it" \
	"layer deep050 already exists in the store and was not made by import-aufs" \
	sr "$R4" import-aufs --quiet "$A"
same "... and the store is unchanged (no layer made, no state)" "$(store_listing "$R4")" "$before"

if out=$(diff "$W/src-before" <(aufs snapshot "$A") 2>&1); then
	pass "the source store is still unchanged after --check, the killed and the resumed imports"
else
	fail "the source store is still unchanged after --check and the other imports" "$(head -n 20 <<<"$out")"
fi

# ---- 5. bad and hostile sources ----------------------------------------------------------
RE=$TEST_TMP/re
sr "$RE" init
S=$TEST_TMP/bad
mkstore() { # mkstore NAME: an empty aufs store
	rm -rf "${S:?}/$1"
	mkdir -p "$S/$1/layers" "$S/$1/diff" "$S/$1/mnt"
}
# bad_source DESC REGEX SRC: import fails with one line matching REGEX, quickly, store unchanged.
bad_source() {
	local before
	before=$(store_listing "$RE")
	check_error "$1" "$2" timeout 30 "$STRATA" --root "$RE" import-aufs --quiet "$3"
	same "... store unchanged" "$(store_listing "$RE")" "$before"
}
mkdir -p "$S"
bad_source "AUFS_ROOT missing" "import-aufs $S/none: open $S/none: No such file or directory" "$S/none"
mkstore nolayers && rmdir "$S/nolayers/layers"
bad_source "no layers/" "open $S/nolayers/layers \(is this an aufs store\?\)" "$S/nolayers"
mkstore nodiff && rmdir "$S/nodiff/diff"
bad_source "no diff/" "open $S/nodiff/diff \(is this an aufs store\?\)" "$S/nodiff"
mkstore ghost && mkdir "$S/ghost/diff/x" && echo gone >"$S/ghost/layers/x"
bad_source "a chain naming a parent that does not exist" \
	"$S/ghost/layers/x names parent gone, which the store does not have" "$S/ghost"
mkstore nodir && : >"$S/nodir/layers/x"
bad_source "a diff dir missing" "$S/nodir/diff/x: missing or not a directory" "$S/nodir"
mkstore badid && mkdir "$S/badid/diff/ok" "$S/badid/diff/bad id" && : >"$S/badid/layers/ok" &&
	: >"$S/badid/layers/bad id" && echo data >"$S/badid/diff/bad id/f"
bad_source "an invalid id in layers/ (\"bad id\"): refused, not silently left behind" \
	"$S/badid/layers/bad id: not a layer id" "$S/badid"
mkstore badline && mkdir "$S/badline/diff/x" && printf '../../etc\n' >"$S/badline/layers/x"
bad_source "a chain file naming an invalid id" "$S/badline/layers/x: line 1: invalid id" "$S/badline"
mkstore fifo && mkdir "$S/fifo/diff/x" && mkfifo "$S/fifo/layers/x"
bad_source "a fifo as a chain file (must not hang)" "$S/fifo/layers/x: not a regular file" "$S/fifo"
mkstore incons && for x in a b x c; do mkdir "$S/incons/diff/$x"; done &&
	: >"$S/incons/layers/a" && : >"$S/incons/layers/x" && echo a >"$S/incons/layers/b" &&
	printf 'b\nx\n' >"$S/incons/layers/c"
bad_source "a chain that is not its parent's chain plus the parent" \
	"$S/incons/layers/c: the chain below b is not $S/incons/layers/b's chain" "$S/incons"
mkstore cycle && mkdir "$S/cycle/diff/a" "$S/cycle/diff/b" && echo b >"$S/cycle/layers/a" && echo a >"$S/cycle/layers/b"
bad_source "a cycle of chains" "$S/cycle/layers/.: the chain below . is not" "$S/cycle"
OUT=$TEST_TMP/outside
mkdir -p "$OUT/etc" && echo secret >"$OUT/etc/passwd" && echo v >"$OUT/etc/victim"
mkstore dsym && ln -s "$OUT/etc" "$S/dsym/diff/x" && : >"$S/dsym/layers/x"
bad_source "a diff dir that is a symlink (to a dir outside)" "$S/dsym/diff/x: missing or not a directory" "$S/dsym"
mkstore lsym && mkdir "$S/lsym/diff/x" "$S/lsym/real" && : >"$S/lsym/real/x" && rmdir "$S/lsym/layers" &&
	ln -s real "$S/lsym/layers"
bad_source "layers/ a symlink" "open $S/lsym/layers \(is this an aufs store\?\)" "$S/lsym"

# Symlinks in a branch where a later branch has a dir: H1 has etc -> OUTSIDE/etc
# (absolute) and rel -> ../../../outside/etc (relative); H2 has real dirs etc/ and
# rel/ with files, a whiteout and an opaque marker in them.  Nothing outside changes.
mkstore hostile
H=$S/hostile
mkdir -p "$H/diff/H1" "$H/diff/H2/etc" "$H/diff/H2/rel/sub" && : >"$H/layers/H1" && echo H1 >"$H/layers/H2"
ln -s "$OUT/etc" "$H/diff/H1/etc" && ln -s ../../../../outside/etc "$H/diff/H1/rel"
[ "$(cat "$H/diff/H1/rel/passwd")" == secret ] || echo "# the relative symlink does not reach $OUT"
echo evil >"$H/diff/H2/etc/evil" && echo evil >"$H/diff/H2/rel/sub/evil" && : >"$H/diff/H2/etc/.wh.passwd" &&
	: >"$H/diff/H2/rel/.wh.victim" && : >"$H/diff/H2/rel/sub/.wh..wh..opq"
aufs snapshot "$OUT" >"$W/out-before"
RH=$TEST_TMP/rh
sr "$RH" init
out=$(sr "$RH" import-aufs --quiet "$H" 2>&1)
rc=$?
if diff -q "$W/out-before" <(aufs snapshot "$OUT") >/dev/null && [ "$(cat "$OUT/etc/passwd")" == secret ]; then
	pass "symlinked dirs in a lower branch: nothing outside the store changed (import exit $rc)"
else
	fail "symlinked dirs in a lower branch: nothing outside the store changed" "$out" \
		"$(diff "$W/out-before" <(aufs snapshot "$OUT"))"
fi
if [ "$rc" -eq 0 ]; then
	verify_layers "$RH" "$H" "symlinked dirs below"
	out=$(sr "$RH" import-aufs --check --quiet "$H" 2>&1)
	same "... --check agrees" "$?: $out" "0: checked 2 layers: 0 differences"
else
	check_error "... or a clear error naming the layer" "H2" sr "$RH" import-aufs --quiet "$H"
fi

# Whiteouts and opaque markers that are not regular files (aufs itself says EIO):
# the import and --check must agree, or the import must refuse naming the path.
mkstore nonreg
N2=$S/nonreg
mkdir -p "$N2/diff/W1/d" "$N2/diff/W1/e" "$N2/diff/W2/d" "$N2/diff/W2/e/.wh..wh..opq" &&
	: >"$N2/layers/W1" && echo W1 >"$N2/layers/W2"
echo a >"$N2/diff/W1/victim" && echo b >"$N2/diff/W1/d/x" && echo c >"$N2/diff/W1/e/y" &&
	echo f >"$N2/diff/W1/fifo-victim"
ln -s /etc/passwd "$N2/diff/W2/.wh.victim" && ln -s /nonexistent "$N2/diff/W2/d/.wh..wh..opq" &&
	mkfifo "$N2/diff/W2/.wh.fifo-victim"
RN=$TEST_TMP/rn
sr "$RN" init
if out=$(timeout 30 "$STRATA" --root "$RN" import-aufs --quiet "$N2" 2>&1); then
	chk=$(sr "$RN" import-aufs --check --quiet "$N2" 2>&1)
	same "non-regular .wh. entries: imported, and --check agrees with the import" "$?: $chk" \
		"0: checked 2 layers: 0 differences"
elif [[ "$out" == strata:*W2* ]]; then
	pass "non-regular .wh. entries: refused, naming the layer ($out)"
else
	fail "non-regular .wh. entries: imported, or refused naming the layer" "$out"
fi
# A directory named .wh.X with a file in it: refused naming the entry.
mkstore whdir
mkdir -p "$S/whdir/diff/W1" "$S/whdir/diff/W2/.wh.foo" && : >"$S/whdir/layers/W1" && echo W1 >"$S/whdir/layers/W2" &&
	echo x >"$S/whdir/diff/W2/.wh.foo/child"
RW=$TEST_TMP/rw
sr "$RW" init
check_error "a directory named .wh.foo holding a file: refused, naming layer and entry" \
	'W2.*\.wh\.foo/child' sr "$RW" import-aufs --quiet "$S/whdir"

# ---- whiteouts that hide nothing ---------------------------------------------------------
# aufs never shows a .wh. name; overlay lists a whiteout that sits in a directory
# it does not merge (a base layer's, a dir new in its layer, an opaque dir).
G=$TEST_TMP/ghost
RG=$TEST_TMP/rg
aufs build "$G" --set ghost && sr "$RG" init
out=$(sr "$RG" import-aufs --quiet "$G" 2>&1)
same "whiteouts that hide nothing: import" "$?" "0"
verify_layers "$RG" "$G" "whiteouts that hide nothing"
out=$(sr "$RG" import-aufs --check --quiet "$G" 2>&1)
same "whiteouts that hide nothing: --check says 0 differences" "$?: $out" "0: checked 3 layers: 0 differences"

# ---- 6. --help, usage ----------------------------------------------------------------------
out=$(st import-aufs --help 2>&1)
rc=$?
if [ "$rc" -eq 0 ] && grep -q 'import-aufs \[--quiet\] \[--check\] AUFS_ROOT' <<<"$out" &&
	grep -q 'aufs' <<<"$out"; then
	pass "import-aufs --help: exit 0, usage and description"
else
	fail "import-aufs --help" "exit $rc" "$out"
fi
st import-aufs >/dev/null 2>&1
same "import-aufs without AUFS_ROOT: usage error (exit 2)" "$?" "2"
st import-aufs --bogus "$A" >/dev/null 2>&1
same "import-aufs --bogus: usage error (exit 2)" "$?" "2"
if st --help 2>&1 | grep -q '^  import-aufs '; then
	pass "strata --help lists import-aufs"
else
	fail "strata --help lists import-aufs" "$(st --help 2>&1)"
fi

same "no overlay mount of this test is left" "$(findmnt -rn -t overlay -o TARGET | grep "^$TEST_TMP/")" ""
echo "# run time $((SECONDS - START)) s"
