#!/usr/bin/env bash
# A real dockerd with --userns-remap default, on its own overlay2 and on
# strata through `strata serve`: import, a run that writes, docker diff,
# commit, a run of the committed image, rm/rmi.  What the two drivers show
# must be identical, and the store must let the remapped root reach its
# root filesystems (0710 dirs of its group) and hold its files under the
# remapped ids.
#
#   STRATA_BIN=build/strata bash tests/integration/t_docker_userns.sh
# Needs root, /usr/sbin/dockerd, /usr/bin/docker, /bin/busybox and useradd
# (dockerd makes the user "dockremap" and its subordinate ids if missing;
# this test removes them again if it was the one that made them).
# shellcheck source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/docker_lib.sh"

docker_test_init "docker userns-remap tests"
PLUGIN=strata-ns-$$
PLUGIN_LOGFILE=$TEST_TMP/plugin.log
: >"$PLUGIN_LOGFILE"

# dockremap: made by dockerd unless it exists; removed at the end if so.
MADE_REMAP_USER=
if ! id dockremap >/dev/null 2>&1; then
	MADE_REMAP_USER=1
	cp -a /etc/subuid "$TEST_TMP/subuid.orig" 2>/dev/null || : >"$TEST_TMP/subuid.orig"
	cp -a /etc/subgid "$TEST_TMP/subgid.orig" 2>/dev/null || : >"$TEST_TMP/subgid.orig"
fi
userns_exit() {
	local rc=$?
	if [[ -n $MADE_REMAP_USER ]]; then
		dk_stop_all
		userdel dockremap >/dev/null 2>&1
		getent group dockremap >/dev/null && groupdel dockremap >/dev/null 2>&1
		cp "$TEST_TMP/subuid.orig" /etc/subuid 2>/dev/null
		cp "$TEST_TMP/subgid.orig" /etc/subgid 2>/dev/null
	fi
	(exit "$rc")
	docker_test_exit
}
trap userns_exit EXIT

# The remapped root must traverse the scratch dir down to the data roots,
# as it must /var/lib/docker (which dockerd makes 0711 when it remaps).
chmod 0711 "$TEST_TMP"

diag_logs() {
	local tag=$1
	echo "# --- dockerd ($tag) log, last lines:"
	tail -n 15 "${DK_DIR[$tag]}/dockerd.log" 2>/dev/null | sed 's/^/#   /'
	if [[ ${DK_DRIVER[$tag]:-} == "$PLUGIN" ]]; then
		echo "# --- plugin log, last lines:"
		tail -n 15 "$PLUGIN_LOGFILE" | sed 's/^/#   /'
	fi
}

ROOTFS=$W/rootfs
busybox_rootfs "$ROOTFS"
mkdir -p "$ROOTFS/data/dir"
echo keep >"$ROOTFS/data/keep"
echo del >"$ROOTFS/data/del"
echo a >"$ROOTFS/data/dir/a"
echo own >"$ROOTFS/data/own"
find "$ROOTFS" -exec touch -h -d '2020-01-02 03:04:05' {} +
tar --numeric-owner -C "$ROOTFS" -cf "$W/base.tar" .

MODIFY='set -e
echo new >/data/new
rm /data/del
rm -r /data/dir
chown 1000:1000 /data/own
mkdir -m 0750 /data/made
id -u; id -g'
EXPECTED_DIFF='A /data/made
A /data/new
C /data
C /data/own
D /data/del
D /data/dir'
VERIFY='cat /data/new /data/keep
stat -c "%n %a %u:%g" /data/own /data/made /data/new
for p in /data/del /data/dir; do [ -e $p ] && echo "still there: $p"; done
echo end'
VERIFY_OUT='new
keep
/data/own 644 1000:1000
/data/made 750 0:0
/data/new 644 0:0
end'

# scenario TAG LABEL: the whole run on one daemon.
scenario() {
	local tag=$1 label=$2
	dcheck "$tag" "$label: docker import" import "$W/base.tar" strata-ns/base || return 1
	dis "$tag" "$label: a run that writes, as the container's root (0:0 inside)" "$(printf '0\n0')" \
		run --name writer --network none strata-ns/base sh -c "$MODIFY" || return 1
	is "$label: docker diff (sorted)" "$(dk "$tag" diff writer 2>&1 | LC_ALL=C sort)" "$EXPECTED_DIFF"
	dcheck "$tag" "$label: docker commit" commit writer strata-ns/committed
	dis "$tag" "$label: a run of the committed image sees the changes" "$VERIFY_OUT" \
		run --rm --network none strata-ns/committed sh -c "$VERIFY"
	dis "$tag" "$label: the base image is untouched" "$(printf 'del\nkeep')" \
		run --rm --network none strata-ns/base sh -c 'cat /data/del /data/keep'
}

start_ns() {
	local tag=$1 driver=${2:-}
	if [[ -n $driver ]]; then
		plugin_start "$driver" "$PLUGIN_LOGFILE" || return 1
	fi
	mkdir -p "$TEST_TMP/$tag"
	chmod 0711 "$TEST_TMP/$tag"
	dk_start "$tag" "$TEST_TMP/$tag" "$driver" --userns-remap default
}

# ---- overlay2, the reference ----
if start_ns o; then
	scenario o "overlay2" && O_OK=1
	rootfs_o=$(dk o run --rm --network none strata-ns/committed sh -c 'find /data -exec stat -c "%n %a %u:%g %s %F" {} + | sort' 2>&1)
	dk o rm -f writer >/dev/null 2>&1
	dk o rmi -f strata-ns/committed strata-ns/base >/dev/null 2>&1
	stop o "overlay2"
else
	fail "overlay2: dockerd --userns-remap default starts"
fi

# ---- strata ----
if start_ns s "$PLUGIN"; then
	REMAP=$(ls -d "$TEST_TMP/s/d"/*.* 2>/dev/null | head -n 1)
	STORE=$REMAP/$PLUGIN
	scenario s "strata"
	gid=$(getent group dockremap | cut -d: -f3)
	uid=$(id -u dockremap)
	sub_gid=$(awk -F: '$1 == "dockremap" { print $2; exit }' /etc/subgid)
	sub_uid=$(awk -F: '$1 == "dockremap" { print $2; exit }' /etc/subuid)
	is "the store root: 0710, group = the remapped root's gid" "$(stat -c '%a %g' "$STORE")" "710 $sub_gid"
	is "mnt/: 0710, same group" "$(stat -c '%a %g' "$STORE/mnt")" "710 $sub_gid"
	is "diff/: 0710, same group" "$(stat -c '%a %g' "$STORE/diff")" "710 $sub_gid"
	is "layers/ (nobody else's business): 0700" "$(stat -c '%a' "$STORE/layers")" 700
	# The image layer's files belong to the remapped ids on disk.
	img=$(grep -L . "$STORE"/layers/* 2>/dev/null | head -n 1)
	is "the image's files are owned by the remapped root on disk" \
		"$(stat -c '%u:%g' "$STORE/diff/$(basename "$img")/data/keep")" "$sub_uid:$sub_gid"
	rootfs_s=$(dk s run --rm --network none strata-ns/committed sh -c 'find /data -exec stat -c "%n %a %u:%g %s %F" {} + | sort' 2>&1)
	is "the committed image lists the same as on overlay2" "$rootfs_s" "$rootfs_o"
	dk s rm -f writer >/dev/null 2>&1
	dcheck s "strata: docker rmi" rmi -f strata-ns/committed strata-ns/base
	is "strata: no layer left" "$(find "$STORE/layers" -mindepth 1 | wc -l)" 0
	check "strata check: the store is clean" "$STRATA" --root "$STORE" check
	: "${uid:=}" # (the remapped user's own uid is not used by the store)
	stop s "strata"
else
	fail "strata: dockerd --userns-remap default starts"
fi
