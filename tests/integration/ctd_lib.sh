# shellcheck shell=bash
# shellcheck disable=SC2034 # globals set here are read by the callers
# A private containerd (Debian's 1.6) and `strata snapshotter` for
# t_containerd.sh.  Source lib.sh and docker_lib.sh (is_running, stop_pid,
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
# test's inputs and results.  Replaces lib.sh's `is` with one for values of
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
