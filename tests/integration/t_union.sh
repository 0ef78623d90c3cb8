#!/bin/bash
# Union semantics through real overlay mounts: whiteouts, opaque dirs,
# where writes land, parentless layers.  Runs for both mount APIs.
. "$(dirname "$0")/lib.sh"

API=${1:-new}
S() { st -o mountapi="$API" "$@"; }

S init || exit 1
S create base
mkdir -p "$R/diff/base/etc/deep/er/still" "$R/diff/base/opq/sub"
echo base >"$R/diff/base/etc/hosts"
echo deep >"$R/diff/base/etc/deep/er/still/file"
echo x >"$R/diff/base/opq/x"
echo y >"$R/diff/base/opq/sub/y"
echo keep >"$R/diff/base/keep"

p=$(S mount base)
is "[$API] a base layer mounts as its own diff dir" "$p" "$R/diff/base"
if is_mounted "$p"; then fail "[$API] base layer is not a mount"; else pass "[$API] base layer is not a mount"; fi
check "[$API] umount base" S umount base

S create mid base
S create top mid
p=$(S mount top)
is "[$API] mount prints the merged dir" "$p" "$R/mnt/top"
check "[$API] merged view is a mount" is_mounted "$p"
is "[$API] lower file visible" "$(cat "$p/etc/hosts")" base

# Writes land in the top layer's diff dir only.
echo new >"$p/newfile"
echo changed >"$p/etc/hosts"
is "[$API] new file in top diff" "$(cat "$R/diff/top/newfile")" new
is "[$API] copy-up in top diff" "$(cat "$R/diff/top/etc/hosts")" changed
is "[$API] lower layer untouched" "$(cat "$R/diff/base/etc/hosts")" base
check "[$API] nothing written to mid" test -z "$(ls -A "$R/diff/mid")"

# Whiteouts at the top and deep down.
rm "$p/keep" "$p/etc/deep/er/still/file"
check "[$API] deleted file gone from view" test ! -e "$p/keep"
check "[$API] whiteout is a 0/0 char device" is_whiteout "$R/diff/top/keep"
check "[$API] deep whiteout" is_whiteout "$R/diff/top/etc/deep/er/still/file"
check "[$API] lower copy still there" test -f "$R/diff/base/keep"

# An opaque dir: replacing a lower dir hides everything below it.
rm -rf "$p/opq"
mkdir "$p/opq"
echo z >"$p/opq/z"
is "[$API] opaque dir shows only new entries" "$(ls -A "$p/opq")" z
check "[$API] opaque xattr on the top diff dir" is_opaque "$R/diff/top/opq"

check "[$API] umount top" S umount top
check "[$API] top is unmounted" bash -c "! mountpoint -q '$R/mnt/top'"

# A layer above: everything seen from top persists through mid-stack.
S create above top
p=$(S mount above)
check "[$API] whiteout hides a lower file from the layer above" test ! -e "$p/keep"
is "[$API] opaque dir still opaque from above" "$(ls -A "$p/opq")" z
is "[$API] copied-up content seen from above" "$(cat "$p/etc/hosts")" changed
check "[$API] deep dir kept, file gone" bash -c "test -d '$p/etc/deep/er/still' && test ! -e '$p/etc/deep/er/still/file'"
# A file recreated over a whiteout in a higher layer.
echo back >"$p/keep"
is "[$API] recreated over a whiteout" "$(cat "$p/keep")" back
check "[$API] umount above" S umount above
is "[$API] nothing left mounted" "$(overlay_count)" 0

# Metadata follows the chain.
is "[$API] metadata parent" "$(S metadata above | sed -n 's/^Parent: //p')" top
is "[$API] metadata lowerdir" "$(S metadata above | sed -n 's/^LowerDir: //p')" "$R/diff/top:$R/diff/mid:$R/diff/base"
is "[$API] status counts 4 layers" "$(S status | sed -n 's/^Layers: //p')" 4

# A mount label is accepted (applied only where SELinux is on, as Docker).
p=$(S mount --label 'system_u:object_r:container_file_t:s0:c1,c2' above)
check "[$API] mount with a label" is_mounted "$p"
S umount above
check_error "[$API] label with a quote refused" 'get above: invalid mount label' S mount --label 'a"b' above
