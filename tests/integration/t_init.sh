#!/bin/bash
# init: the layout, refusing backing filesystems overlay cannot use, and
# other filesystems it can.
. "$(dirname "$0")/lib.sh"

check "init creates the root" st init
for d in layers diff mnt work refs l link; do
	is "$d/ is 0700" "$(stat -c %a "$R/$d")" 700
done
is "root is 0700" "$(stat -c %a "$R")" 700
is "no probe dir left" "$(find "$R" -maxdepth 1 -name '.probe-*' | wc -l)" 0
check "status works" st status
is "backing filesystem reported" "$(st status | sed -n 's/^Backing Filesystem: //p')" extfs

# A relative root and a root reached through a symlink resolve to one place.
ln -s "$R" "$TEST_TMP/alias"
is "symlinked root resolves" "$("$STRATA" --root "$TEST_TMP/alias" status | sed -n 's/^Root Dir: //p')" "$R"
is "relative root resolves" "$(cd "$TEST_TMP" && "$STRATA" --root root status | sed -n 's/^Root Dir: //p')" "$R"

# On an overlay mount.
mkdir -p "$TEST_TMP"/ovl/{lower,upper,work,merged}
mount -t overlay overlay -o "lowerdir=$TEST_TMP/ovl/lower,upperdir=$TEST_TMP/ovl/upper,workdir=$TEST_TMP/ovl/work" \
	"$TEST_TMP/ovl/merged"
check_error "refuses an overlay backing filesystem" \
	"init $TEST_TMP/ovl/merged/store: backing filesystem is overlayfs" \
	"$STRATA" --root "$TEST_TMP/ovl/merged/store" init
check "and creates nothing there" test ! -e "$TEST_TMP/ovl/merged/store"
umount "$TEST_TMP/ovl/merged"

# On a filesystem without d_type: ext4 made without the filetype feature.
truncate -s 64M "$TEST_TMP/nodtype.img"
mkfs.ext4 -q -F -O ^filetype,^has_journal "$TEST_TMP/nodtype.img" >/dev/null 2>&1
mkdir "$TEST_TMP/nodtype"
if mount -o loop "$TEST_TMP/nodtype.img" "$TEST_TMP/nodtype" 2>/dev/null; then
	check_error "refuses a filesystem without d_type" "does not report file types \\(d_type\\)" \
		"$STRATA" --root "$TEST_TMP/nodtype/store" init
	check "leaves no probe behind" test -z "$(find "$TEST_TMP/nodtype/store" -name '.probe-*')"
	umount "$TEST_TMP/nodtype"
else
	skip "refuses a filesystem without d_type" "no loop device"
	skip "leaves no probe behind" "no loop device"
fi

# tmpfs carries overlay (xattrs and whiteouts): it works.
mkdir "$TEST_TMP/tmpfs"
mount -t tmpfs -o size=64m tmpfs "$TEST_TMP/tmpfs"
T="$TEST_TMP/tmpfs/store"
check "init on tmpfs" "$STRATA" --root "$T" init
is "tmpfs reported" "$("$STRATA" --root "$T" status | sed -n 's/^Backing Filesystem: //p')" tmpfs
"$STRATA" --root "$T" create a && "$STRATA" --root "$T" create b a
p=$("$STRATA" --root "$T" mount b)
check "a union on tmpfs mounts" is_mounted "$p"
"$STRATA" --root "$T" umount b
umount "$TEST_TMP/tmpfs"
