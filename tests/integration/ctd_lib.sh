# shellcheck shell=bash
# shellcheck disable=SC2034 # globals set here are read by the callers
# A private containerd (Debian's 1.6) and `strata snapshotter` for
# t_containerd.sh and t_containerd_thin.sh, and the helpers and inputs the
# two share.  Source lib.sh and docker_lib.sh (is_running, stop_pid,
# kill_procs_under, failn) first.
#
# Every containerd gets its own config, root, state, gRPC, ttrpc and debug
# sockets under one DIR, the CRI plugin off and /opt/containerd moved under
# DIR: nothing of a system containerd or dockerd is touched.  Every ctr call
# names that socket and a namespace of this test's own (CTD_NS), keeps its
# FIFOs and runc's state under DIR, and is bounded in time (CTD_TIMEOUT).
# Processes are stopped by PID: containerd with SIGTERM (60 s, then SIGKILL),
# then whatever still names DIR on its command line (its shims).
#
#   DIR/config.toml  DIR/ctd.log  DIR/ctd.sock  DIR/root  DIR/state
#   DIR/fifo  DIR/runc
# Keep DIR short: unix socket paths must stay under 108 bytes.

CONTAINERD_BIN=/usr/bin/containerd
CTR_BIN=/usr/bin/ctr
CTD_TIMEOUT=${CTD_TIMEOUT:-120} # seconds any one ctr command may take
CTD_NS=strata-it-$$

declare -A CTD_PID=() CTD_DIR=() CTD_PROXY=()
CTD_STOP_RC=0
# The one strata snapshotter: its PID, socket, log, store, exit status.
SNAP_PID="" SNAP_SOCK="" SNAP_LOG="" SNAP_ROOT="" SNAP_RC=""

# ctd_config DIR [PROXY_SOCK]: containerd's config, with the proxy
# snapshotter "strata" at PROXY_SOCK when given.
ctd_config() {
	local dir=$1 proxy=${2:-}
	cat <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$dir/ctd.sock"

[ttrpc]
  address = "$dir/ctd.sock.ttrpc"

[debug]
  address = "$dir/debug.sock"
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"

[plugins."io.containerd.monitor.v1.cgroups"]
EOF
	if [[ -n $proxy ]]; then
		cat <<EOF

[proxy_plugins.strata]
  type = "snapshot"
  address = "$proxy"
EOF
	fi
}

# c TAG ARGS...: ctr against containerd TAG, in this test's namespace.
c() {
	local tag=$1
	shift
	timeout -k 10 "$CTD_TIMEOUT" "$CTR_BIN" --address "${CTD_DIR[$tag]}/ctd.sock" -n "$CTD_NS" "$@"
}

# crun TAG SNAPSHOTTER ARGS...: ctr run with the FIFOs and runc's state
# under the daemon's dir.
crun() {
	local tag=$1 snap=$2
	shift 2
	c "$tag" run --snapshotter "$snap" --fifo-dir "${CTD_DIR[$tag]}/fifo" \
		--runc-root "${CTD_DIR[$tag]}/runc" "$@"
}

# ctd_start TAG DIR [PROXY_SOCK]: start a containerd, wait up to 60 s until
# it answers.  Returns 1, with its log's tail on stderr, when it does not.
ctd_start() {
	local tag=$1 dir=$2 proxy=${3:-}
	mkdir -p "$dir/fifo" "$dir/runc"
	ctd_config "$dir" "$proxy" >"$dir/config.toml"
	CTD_DIR[$tag]=$dir
	CTD_PROXY[$tag]=$proxy
	echo "==== $(date -u +%FT%TZ) containerd --config $dir/config.toml" >>"$dir/ctd.log"
	"$CONTAINERD_BIN" --config "$dir/config.toml" </dev/null >>"$dir/ctd.log" 2>&1 &
	CTD_PID[$tag]=$!
	local deadline=$((SECONDS + 60))
	while ! c "$tag" version >/dev/null 2>&1; do
		if ! is_running "${CTD_PID[$tag]}" || ((SECONDS >= deadline)); then
			echo "ctd_lib: containerd $tag did not come up; its log ends:" >&2
			tail -n 25 "$dir/ctd.log" | sed 's/^/    /' >&2
			ctd_stop "$tag"
			return 1
		fi
		sleep 0.1
	done
}

# ctd_stop TAG: stop containerd TAG and whatever it left running (shims).
# CTD_STOP_RC is its exit status (0 after a clean SIGTERM shutdown).
ctd_stop() {
	local tag=$1 pid=${CTD_PID[$1]:-}
	CTD_STOP_RC=0
	[[ -n $pid ]] || return 0
	stop_pid "$pid" 60
	CTD_STOP_RC=$STOP_RC
	CTD_PID[$tag]=
	kill_procs_under "${CTD_DIR[$tag]}"
}

# snap_start ROOT SOCK LOG [STRATA_GLOBAL_OPTS...]: `strata --root ROOT
# snapshotter --socket SOCK`, stderr appended to LOG; waits up to 30 s for
# "strata snapshotter: serving on SOCK" and the socket.  Returns 1 (with the
# log's tail on stderr) when it does not come up.
snap_start() {
	local root=$1 sock=$2 log=$3
	shift 3
	SNAP_ROOT=$root SNAP_SOCK=$sock SNAP_LOG=$log
	local from
	from=$(($(wc -l <"$log" 2>/dev/null || echo 0) + 1))
	echo "==== $(date -u +%FT%TZ) strata --root $root${*:+ $*} snapshotter --socket $sock" >>"$log"
	"$STRATA" --root "$root" "$@" snapshotter --socket "$sock" </dev/null >>"$log" 2>&1 &
	SNAP_PID=$!
	local deadline=$((SECONDS + 30))
	until [[ -S $sock ]] && tail -n "+$from" "$log" | grep -qF "strata snapshotter: serving on $sock"; do
		if ! is_running "$SNAP_PID" || ((SECONDS >= deadline)); then
			echo "ctd_lib: strata snapshotter did not come up on $sock; its log ends:" >&2
			tail -n 15 "$log" | sed 's/^/    /' >&2
			snap_stop
			return 1
		fi
		sleep 0.05
	done
}

# snap_stop: SIGTERM, up to 60 s, SIGKILL.  SNAP_RC is its exit status.
snap_stop() {
	SNAP_RC=""
	[[ -n $SNAP_PID ]] || return 0
	stop_pid "$SNAP_PID" 60
	SNAP_RC=$STOP_RC
	SNAP_PID=
}

# snap_kill: SIGKILL, as a crash.
snap_kill() {
	[[ -n $SNAP_PID ]] || return 0
	kill -KILL "$SNAP_PID" 2>/dev/null
	wait "$SNAP_PID" 2>/dev/null
	SNAP_PID=
}

# snap_ready TAG SECONDS: 0 once containerd TAG reaches the strata
# snapshotter again (its proxy client reconnects with a back-off of a few
# seconds after the snapshotter restarted).
snap_ready() {
	local tag=$1 deadline=$((SECONDS + $2))
	until c "$tag" snapshots --snapshotter strata ls >/dev/null 2>&1; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# ctd_stop_all: every containerd (and its shims), then the snapshotter.
ctd_stop_all() {
	local t
	for t in "${!CTD_PID[@]}"; do [[ -n ${CTD_PID[$t]} ]] && ctd_stop "$t"; done
	snap_stop
	return 0
}

# ctd_test_exit: the EXIT trap of ctd_test_init: every containerd and the
# snapshotter stopped, the scratch dir unmounted, the namespace's (empty)
# cgroups removed, then lib.sh's own trap with the test's exit status.
ctd_test_exit() {
	local rc=$?
	local d
	trap - INT TERM HUP
	ctd_stop_all
	unmount_under "$TEST_TMP"
	for d in /sys/fs/cgroup/*/"$CTD_NS" /sys/fs/cgroup/"$CTD_NS"; do
		[[ -d $d ]] && rmdir "$d" 2>/dev/null
	done
	(exit "$rc")
	fixture_exit
}

# ctd_test_init NAME: the traps (ctd_test_exit on EXIT, which INT, TERM and
# HUP reach as exit 130, 143, 129); skips NAME and exits 0 without
# containerd, ctr, runc, /bin/busybox or root; makes W=$TEST_TMP/w, the
# test's inputs and results, and the snapshotter's dir: SNAP_SOCKET, and
# SNAP_LOGFILE (empty).  Replaces lib.sh's `is` with one for values of
# several lines.
ctd_test_init() {
	local name=$1 need
	trap ctd_test_exit EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
	for need in "$CONTAINERD_BIN" "$CTR_BIN" /usr/bin/containerd-shim-runc-v2 /bin/busybox; do
		if [[ ! -x $need ]]; then
			skip "$name" "$need is missing (apt-get install containerd busybox-static)"
			exit 0
		fi
	done
	if ! command -v runc >/dev/null; then
		skip "$name" "runc is missing"
		exit 0
	fi
	if [[ $EUID -ne 0 ]]; then
		skip "$name" "needs root"
		exit 0
	fi
	W=$TEST_TMP/w
	mkdir -p "$W"
	SNAP_SOCKET=$TEST_TMP/sn/snap.sock
	SNAP_LOGFILE=$TEST_TMP/sn/snapshotter.log
	mkdir -p "$TEST_TMP/sn"
	: >"$SNAP_LOGFILE"

	# is DESC ACTUAL EXPECTED: lib.sh's, for values of several lines.
	# shellcheck disable=SC2317 # called by the tests
	is() {
		if [[ $2 == "$3" ]]; then pass "$1"; else failn "$1" "got:" "$2" "expected:" "$3"; fi
	}
}

# errclass TEXT: the class of a containerd error as ctr prints it, the last
# ": "-separated part of its last line ("already exists", "not found",
# "failed precondition", "invalid argument", ...).
errclass() {
	printf '%s\n' "$1" | tail -n 1 | sed 's/.*: //'
}

# ---------------------------------------------------------------- the tests' own

# The container's root filesystem, one line an entry (as ctd_tool.py model
# prints the image's): path, type, mode, owner, and for files size, link
# count and md5.  The runtime's own mount points are left out.
# shellcheck disable=SC2016 # for the container's shell
CTD_LIST='find / -xdev | while read -r p; do
	case $p in /proc|/sys|/dev|/run) continue ;; esac
	set -- $(stat -c "%F|%a|%u:%g|%s|%h" "$p" | tr " |" "_ ")
	case $1 in
	directory) echo "$p d $2 $3" ;;
	symbolic_link) echo "$p l $2 $3 -> $(readlink "$p")" ;;
	regular_file) echo "$p f $2 $3 $4 $5 $(md5sum <"$p" | cut -c1-12)" ;;
	*) echo "$p ? $1" ;;
	esac
done'

# What a container does to ctd_tool.py's busybox image (it prints "done").
CTD_MODIFY='set -e
echo new >/data/new
echo "w:x:1001:1001::/:/bin/sh" >>/etc/passwd
rm /data/keep
rm /data/hardsrc
echo more >>/data/hard
mv /data/dir /data/dir2
mv /data/opq /data/opq2
chown 1000:1000 /data/l3
chmod 0700 /data/suid
mkdir -m 0750 /data/made
ln -s new /data/newlink
echo done'
# What modified_view prints of a root filesystem CTD_MODIFY changed.
CTD_MODIFIED='new
hard
more
dir2 hard l3 link made new newlink opq2 own suid '

# modified_view DIR: /data/new, /data/hard and the names in /data of the
# root filesystem at DIR.
modified_view() {
	cat "$1/data/new" "$1/data/hard" 2>&1
	(cd "$1/data" && printf '%s ' *)
}

# diag TAG: the ends of containerd's log (its errors and warnings first)
# and, on strata, of the snapshotter's, as TAP comments.
diag() {
	local tag=$1 log=${CTD_DIR[$1]}/ctd.log
	echo "# --- containerd ($tag) log, last errors and warnings:"
	grep -E 'level=(error|warning|fatal)' "$log" 2>/dev/null | tail -n 8 | cut -c1-400 | sed 's/^/#   /'
	echo "# --- containerd ($tag) log, last lines:"
	tail -n 8 "$log" 2>/dev/null | cut -c1-400 | sed 's/^/#   /'
	if [[ -n ${CTD_PROXY[$tag]:-} ]]; then
		echo "# --- strata snapshotter log, last lines:"
		tail -n 15 "$SNAP_LOGFILE" | cut -c1-400 | sed 's/^/#   /'
	fi
}

# ccheck TAG DESC ARGS...: passes when `ctr ARGS` exits 0.
ccheck() {
	local tag=$1 desc=$2 out
	shift 2
	if out=$(c "$tag" "$@" 2>&1); then
		pass "$desc"
	else
		failn "$desc" "command: ctr $*" "$(printf '%s\n' "$out" | tail -n 10)"
		diag "$tag"
		return 1
	fi
}

# snaps_ls TAG SNAP: `ctr snapshots ls` as "KEY PARENT KIND" (PARENT "-"
# for none), sorted.
snaps_ls() {
	c "$1" snapshots --snapshotter "$2" ls | awk 'NR > 1 { if (NF == 2) print $1, "-", $2; else print $1, $2, $3 }' |
		LC_ALL=C sort
}

# mount_lines: run the `mount ...` commands on stdin (what `ctr snapshots
# mounts TARGET KEY` prints), each a mount(8) command line.
mount_lines() {
	local line
	local -a w
	while read -r line; do
		read -ra w <<<"$line"
		[[ ${w[0]:-} == mount ]] || {
			echo "not a mount command: $line" >&2
			return 1
		}
		"${w[@]}" || return 1
	done
}

# umount_target LABEL TARGET: unmount TARGET (every mount stacked on it).
umount_target() {
	local label=$1 target=$2 out=""
	while mountpoint -q "$target"; do
		out=$(umount "$target" 2>&1) || break
	done
	if mountpoint -q "$target"; then
		failn "$label: unmount $target" "$out"
		umount -l "$target"
	fi
}

# images_gc TAG SNAP LABEL: every image removed (`ctr images rm --sync`, a
# case), then up to 20 s for containerd's garbage collection to remove
# every snapshot of SNAP (a case).
images_gc() {
	local tag=$1 snap=$2 label=$3 left=""
	local -a ids
	mapfile -t ids < <(c "$tag" images ls -q)
	((${#ids[@]} == 0)) || ccheck "$tag" "$label: ctr images rm --sync every image" images rm --sync "${ids[@]}"
	local deadline=$((SECONDS + 20))
	while left=$(c "$tag" snapshots --snapshotter "$snap" ls 2>&1 | tail -n +2) && [[ -n $left ]]; do
		((SECONDS < deadline)) || break
		sleep 0.5
	done
	is "$label: garbage collection leaves no snapshot" "$left" ""
}
