#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# strata apply / strata diff against GNU tar and bsdtar on a Debian minbase
# root filesystem, and the peak RSS of strata apply on a ~200 MiB layer.
#   bench/run-tar.sh
# Needs root (owners, device nodes, drop_caches, debootstrap).
#   RUNS=N              timed runs per tool and phase (default 5)
#   STRATA_BENCH_BASE   parent of the scratch dir (default /var/tmp)
# The minbase tar is cached in /var/cache/strata-test/minbase.tar (made with
# debootstrap on first use, which needs the network).
#
# Method (SPEC section 7): the tools run interleaved, round by round, with
# the order rotated each round; medians are compared.  Before every timed
# run: sync, drop the page cache, read the input once.  Every extraction
# goes to a fresh dir; nothing is deleted until the end, because a mass
# delete slows file creation on this ext4 for minutes.
set -euo pipefail

# shellcheck source=bench/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
rss_target_mib=32
layer_mib=200

need_root "owners, device nodes, drop_caches"
bench_runs 5

# Extraction must hit the disk the store lives on: tmpfs would measure RAM.
check_disk

install_deps
build_strata

# Whatever happens, nothing stays mounted (debootstrap mounts /proc and
# /sys in its target) and nothing stays on disk.
make_scratch strata-bench

# ---------------------------------------------------------------- inputs

# The tree debootstrap made is deleted with the scratch dir at the end, not
# now.
if ! minbase_tar keep; then
	tail -n 20 "$scratch/debootstrap.log" >&2
	die "debootstrap failed"
fi
in=$minbase

# The RSS input: at least $layer_mib MiB.  Padded with one incompressible,
# non-sparse file when the minbase tar is smaller, so a tool that buffers
# a whole file (or the archive) shows it.
layer=$in
in_bytes=$(stat -c %s "$in")
want=$((layer_mib * 1024 * 1024))
if ((in_bytes < want)); then
	layer=$scratch/layer.tar
	mkdir "$scratch/pad"
	head -c $((want - in_bytes)) /dev/urandom >"$scratch/pad/strata-bench-pad.bin"
	cp "$in" "$layer"
	tar --numeric-owner -rf "$layer" -C "$scratch/pad" strata-bench-pad.bin
fi

# ---------------------------------------------------------------- helpers

# timeit OUT MODE CMD...: run CMD, append its wall time (monotonic clock,
# around the command only) to OUT.  MODE "null": stdout to /dev/null;
# MODE "pipe": stdout through a pipe into `cat >/dev/null`.
cat >"$scratch/timeit.py" <<'EOF'
import subprocess, sys, time
out, mode, cmd = sys.argv[1], sys.argv[2], sys.argv[3:]
t0 = time.monotonic()
if mode == "pipe":
    p1 = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    p2 = subprocess.Popen(["cat"], stdin=p1.stdout, stdout=subprocess.DEVNULL)
    p1.stdout.close()
    rc, rc2 = p1.wait(), p2.wait()
else:
    rc, rc2 = subprocess.call(cmd, stdout=subprocess.DEVNULL), 0
t1 = time.monotonic()
if rc or rc2:
    sys.exit("run-tar.sh: failed (status %d, cat %d): %s" % (rc, rc2, " ".join(cmd)))
with open(out, "a") as f:
    f.write("%.6f\n" % (t1 - t0))
EOF
timeit() { "$py" "$scratch/timeit.py" "$@"; }

# Before every timed run: prep FILE (lib.sh: flush, drop the page cache,
# read the input once); prep_tree DIR the same for a tree: read every file
# once, so that all tools archive from the page cache.
prep_tree() {
	drop_caches
	tar -cf - -C "$1" . | cat >/dev/null
}

# rss_kib OUT_KIB CMD...: peak RSS of CMD in KiB, stdout kept in OUT_KIB.out
rss_kib() {
	local out=$1
	shift
	/usr/bin/time -f %M -o "$out" "$@" >"$out.out" || {
		echo "run-tar.sh: failed: $*" >&2
		return 1
	}
	tail -n 1 "$out"
}

st() { "$STRATA" --root "$store" "$@"; }

# Is a verb there at all?  (The tar verbs came with issue 3.)
have_verb() { st "$1" --help >/dev/null 2>&1; }

store=$scratch/store
mkdir "$store"
st init
has_apply=false has_diff=false
have_verb apply && has_apply=true
have_verb diff && has_diff=true
$has_apply || echo "run-tar.sh: this strata has no \"apply\" verb: apply and RSS measured for tar and bsdtar only" >&2
$has_diff || echo "run-tar.sh: this strata has no \"diff\" verb: diff measured for tar and bsdtar only" >&2

res=$scratch/results
mkdir "$res" "$scratch/x"
gnu_x=(tar --numeric-owner --xattrs --xattrs-include='*' -xf "$in" -C)
bsd_x=(bsdtar --numeric-owner -xpf "$in" -C)

echo "kernel $(uname -r), $(nproc) CPUs, scratch $scratch on $fstype"
echo "input $in: $(stat -c %s "$in") bytes, $(tar -tf "$in" | wc -l) entries; $runs runs per tool"

# ---------------------------------------------------------------- apply

apply_tools=(gnu bsd)
$has_apply && apply_tools+=(strata)
n=${#apply_tools[@]}
last_strata=
for ((r = 0; r < runs; r++)); do
	for ((k = 0; k < n; k++)); do
		t=${apply_tools[(r + k) % n]}
		case $t in
		gnu | bsd) mkdir "$scratch/x/$t-$r" ;;
		strata) st create "a$r" ;;
		esac
		prep "$in"
		case $t in
		gnu) timeit "$res/apply.gnu" null "${gnu_x[@]}" "$scratch/x/gnu-$r" ;;
		bsd) timeit "$res/apply.bsd" null "${bsd_x[@]}" "$scratch/x/bsd-$r" ;;
		strata)
			timeit "$res/apply.strata" null "$STRATA" --root "$store" apply --quiet "a$r" -i "$in"
			last_strata=a$r
			;;
		esac
	done
done

# Same work?  Compare what strata extracted with what GNU tar did.
listing() {
	(
		cd "$1"
		find . -type d -printf '%p d %m %U:%G %T@\n'
		find . ! -type d -printf '%p %y %m %U:%G %s %n %T@ %l\n'
		getfattr -Rhd -m - . 2>/dev/null | grep -v '^$' || true
	) | LC_ALL=C sort
}
if $has_apply; then
	if ! diff -u <(listing "$scratch/x/gnu-0") <(listing "$store/diff/$last_strata") >"$res/apply.diff"; then
		echo "WARNING: strata's extraction differs from GNU tar's ($(grep -c '^[-+][^-+]' "$res/apply.diff") lines; first ones):"
		grep '^[-+][^-+]' "$res/apply.diff" | head -n 10 | sed 's/^/  /'
	fi
fi

# ---------------------------------------------------------------- diff

# All three archive the same tree, strata's applied layer (GNU tar's
# extraction when strata cannot apply), warm in the page cache.
if $has_apply; then
	tree=$store/diff/$last_strata
else
	tree=$scratch/x/gnu-0
fi
diff_tools=(gnu bsd)
$has_diff && $has_apply && diff_tools+=(strata)
n=${#diff_tools[@]}
for ((r = 0; r < runs; r++)); do
	for ((k = 0; k < n; k++)); do
		t=${diff_tools[(r + k) % n]}
		prep_tree "$tree"
		case $t in
		gnu) timeit "$res/diff.gnu" pipe tar -cf - -C "$tree" . ;;
		bsd) timeit "$res/diff.bsd" pipe bsdtar -cf - -C "$tree" . ;;
		strata) timeit "$res/diff.strata" pipe "$STRATA" --root "$store" diff --quiet "$last_strata" ;;
		esac
	done
done
diff_entries() { "$@" | tar -tf - | sed -e 's,^\./,,' -e 's,/$,,' | grep -cv '^\.\?$' || true; }
echo "diff entries: GNU tar $(diff_entries tar -cf - -C "$tree" .)," \
	"bsdtar $(diff_entries bsdtar -cf - -C "$tree" .)$(
		$has_diff && $has_apply && echo ", strata $(diff_entries st diff --quiet "$last_strata")"
	)"

# ---------------------------------------------------------------- RSS

echo "RSS input $layer: $(stat -c %s "$layer") bytes"
rss_strata='' rss_strata_diff='' applied=''
mkdir "$scratch/x/rss-gnu" "$scratch/x/rss-bsd"
prep "$layer"
rss_gnu=$(rss_kib "$res/rss.gnu" tar --numeric-owner --xattrs --xattrs-include='*' -xf "$layer" -C "$scratch/x/rss-gnu")
prep "$layer"
rss_bsd=$(rss_kib "$res/rss.bsd" bsdtar --numeric-owner -xpf "$layer" -C "$scratch/x/rss-bsd")
if $has_apply; then
	st create rss
	prep "$layer"
	rss_strata=$(rss_kib "$res/rss.strata" "$STRATA" --root "$store" apply --quiet rss -i "$layer")
	applied=$(cat "$res/rss.strata.out")
	if $has_diff; then
		prep_tree "$store/diff/rss"
		/usr/bin/time -f %M -o "$res/rss.strata-diff" "$STRATA" --root "$store" diff --quiet rss | cat >/dev/null
		rss_strata_diff=$(tail -n 1 "$res/rss.strata-diff")
	fi
fi

# ---------------------------------------------------------------- report

"$py" - "$res" "$rss_target_mib" "$rss_gnu" "$rss_bsd" "$rss_strata" "$rss_strata_diff" "$applied" <<'EOF'
import os, statistics, sys
res, target, rss_gnu, rss_bsd, rss_strata, rss_sdiff, applied = sys.argv[1:]

def times(name):
    p = os.path.join(res, name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        return [float(l) for l in f if l.strip()]

def med(name):
    t = times(name)
    return statistics.median(t) if t else None

def runs(name):
    t = times(name)
    return " ".join("%.3f" % x for x in t) if t else "-"

print()
print("runs (s, in order):")
for phase in ("apply", "diff"):
    for tool, label in (("strata", "strata"), ("gnu", "GNU tar"), ("bsd", "bsdtar")):
        print("  %-5s %-7s %s" % (phase, label, runs("%s.%s" % (phase, tool))))
print()

def verdict(ratio, limit):
    return "met" if ratio <= limit else "MISSED"

s, g, b = med("apply.strata"), med("apply.gnu"), med("apply.bsd")
if s is not None:
    print("apply: strata %.3f s, GNU tar %.3f s (ratio %.2f), bsdtar %.3f s (ratio %.2f)" % (s, g, s / g, b, s / b))
else:
    print("apply: strata -, GNU tar %.3f s, bsdtar %.3f s (bsdtar/GNU %.2f)" % (g, b, b / g))
s, g, b = med("diff.strata"), med("diff.gnu"), med("diff.bsd")
if s is not None:
    print("diff: strata %.3f s, bsdtar -c %.3f s (ratio %.2f), GNU tar -c %.3f s (ratio %.2f)" % (s, b, s / b, g, s / g))
else:
    print("diff: strata -, bsdtar -c %.3f s, GNU tar -c %.3f s" % (b, g))

mib = lambda k: int(k) / 1024
ref = "GNU tar -x %.1f MiB, bsdtar -x %.1f MiB" % (mib(rss_gnu), mib(rss_bsd))
if rss_strata:
    print("apply peak RSS: %.1f MiB (target <= %s); %s" % (mib(rss_strata), target, ref))
else:
    print("apply peak RSS: strata -; %s" % ref)
if rss_sdiff:
    print("diff peak RSS: %.1f MiB" % mib(rss_sdiff))
if applied:
    print("applied size reported by strata: %s bytes" % applied.strip())

print()
ok = True
s, g = med("apply.strata"), med("apply.gnu")
if s is not None:
    print("target apply <= 1.0x GNU tar -x: %s" % verdict(s / g, 1.0))
else:
    ok = False
s, b = med("diff.strata"), med("diff.bsd")
if s is not None:
    print("target diff <= 1.0x bsdtar -c: %s" % verdict(s / b, 1.0))
else:
    ok = False
if rss_strata:
    print("target apply RSS <= %s MiB: %s" % (target, verdict(mib(rss_strata), float(target))))
if not ok:
    print("strata verbs missing: measurement incomplete")
    sys.exit(1)
EOF
