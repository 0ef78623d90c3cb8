# shellcheck shell=bash
# shellcheck disable=SC2034 # globals set here are read by the callers
# Starting and stopping a real dockerd and `strata serve` for the Docker
# integration tests (tests/integration/t_docker.sh, t_docker_thin.sh,
# t_packaging.sh) and the benchmarks (bench/run-docker.sh, run-thin.sh),
# and the TAP helpers the Docker tests share (at the end).  Source it after
# setting STRATA (the strata binary).
#
# Every process is started in the background by this shell and stopped by
# its PID: dockerd with SIGTERM (it stops its containerd and calls the
# plugin's Cleanup), waited for up to 60 s, then SIGKILL; whatever it left
# running (its containerd, container shims: every process whose command line
# names the daemon's scratch dir) is then stopped the same way.  Nothing is
# looked up or killed by name.
#
# A daemon is known by a TAG; all its files live in one DIR:
#   DIR/d  data root        DIR/e  exec root (containerd's socket)
#   DIR/s  the API socket   DIR/p  pid file     DIR/dockerd.log
#   DIR/cli  DOCKER_CONFIG for the client (no user config leaks in)
# Keep DIR short: unix socket paths must stay under 108 bytes.

DOCKER_CLI=/usr/bin/docker # not the first docker on PATH
DOCKERD_BIN=/usr/sbin/dockerd
PLUGIN_SOCK_DIR=/run/docker/plugins
DK_TIMEOUT=${DK_TIMEOUT:-180} # seconds any one docker command may take

declare -A DK_PID=() DK_DIR=() DK_DRIVER=()
declare -A PLUGIN_PID=() PLUGIN_LOG=() PLUGIN_RC=()

# is_running PID: alive and not a zombie.
is_running() {
	local st
	st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[[ $st != Z* ]]
}

# wait_gone PID SECONDS: 0 once PID has exited, 1 after SECONDS.
wait_gone() {
	local pid=$1 deadline=$((SECONDS + $2))
	while is_running "$pid"; do
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
	return 0
}

# stop_pid PID SECONDS: SIGTERM, up to SECONDS to exit, then SIGKILL.  Reaps
# it when it is our child; the exit status is left in STOP_RC (137 when it
# had to be killed, 127 when it was not our child).
stop_pid() {
	local pid=$1 secs=$2
	kill -TERM "$pid" 2>/dev/null || true
	if ! wait_gone "$pid" "$secs"; then
		echo "docker_lib: PID $pid ignored SIGTERM for ${secs} s; SIGKILL" >&2
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$pid" 10 || true
	fi
	STOP_RC=0
	wait "$pid" 2>/dev/null || STOP_RC=$?
}

# kill_procs_under DIR: stop every process (other than this shell) whose
# command line names DIR: what a dockerd killed hard left behind.
kill_procs_under() {
	local dir=$1 p cmd pids=()
	[[ -n $dir ]] || return 0
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		[[ $p == "$$" || $p == "${BASHPID:-}" ]] && continue
		cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline") || continue
		[[ $cmd == *"$dir/"* ]] && pids+=("$p")
	done
	((${#pids[@]})) || return 0
	echo "docker_lib: stopping leftovers under $dir: ${pids[*]}" >&2
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do
		wait_gone "$p" 10 || kill -KILL "$p" 2>/dev/null || true
	done
}

# dk TAG ARGS...: the docker client against daemon TAG, bounded in time.
dk() {
	local tag=$1
	shift
	DOCKER_CONFIG=${DK_DIR[$tag]}/cli DOCKER_BUILDKIT=0 \
		timeout -k 10 "$DK_TIMEOUT" "$DOCKER_CLI" -H "unix://${DK_DIR[$tag]}/s" "$@"
}

# dk_start TAG DIR [DRIVER [DOCKERD-ARGS...]]: start a dockerd (overlay2
# when DRIVER is empty) with any further dockerd arguments (e.g.
# --storage-opt KEY=VALUE), wait up to 90 s until it answers.  Returns 1,
# with the log's tail on stderr, when it does not.
dk_start() {
	local tag=$1 dir=$2 driver=${3:-}
	shift $(($# < 3 ? $# : 3))
	mkdir -p "$dir/d" "$dir/e" "$dir/cli"
	echo '{}' >"$dir/daemon.json" # no /etc/docker/daemon.json
	local args=(--experimental --iptables=false --bridge=none
		--config-file "$dir/daemon.json"
		--data-root "$dir/d" --exec-root "$dir/e"
		-H "unix://$dir/s" --pidfile "$dir/p")
	[[ -n $driver ]] && args+=(--storage-driver "$driver")
	args+=("$@")
	echo "==== $(date -u +%FT%TZ) dockerd ${args[*]}" >>"$dir/dockerd.log"
	"$DOCKERD_BIN" "${args[@]}" </dev/null >>"$dir/dockerd.log" 2>&1 &
	DK_PID[$tag]=$!
	DK_DIR[$tag]=$dir
	DK_DRIVER[$tag]=${driver:-overlay2}
	local deadline=$((SECONDS + 90))
	while ! dk "$tag" version >/dev/null 2>&1; do
		if ! is_running "${DK_PID[$tag]}" || ((SECONDS >= deadline)); then
			echo "docker_lib: dockerd $tag did not come up; its log ends:" >&2
			tail -n 25 "$dir/dockerd.log" | sed 's/^/    /' >&2
			dk_stop "$tag"
			return 1
		fi
		sleep 0.2
	done
}

# dk_stop TAG: stop daemon TAG and whatever it left running.  DK_STOP_RC is
# dockerd's exit status (0 after a clean SIGTERM shutdown).
dk_stop() {
	local tag=$1 pid=${DK_PID[$1]:-}
	DK_STOP_RC=0
	[[ -n $pid ]] || return 0
	stop_pid "$pid" 60
	DK_STOP_RC=$STOP_RC
	DK_PID[$tag]=
	kill_procs_under "${DK_DIR[$tag]}"
	rm -f "${DK_DIR[$tag]}/s"
}

# plugin_sock NAME
plugin_sock() { echo "$PLUGIN_SOCK_DIR/$1.sock"; }

# plugin_start NAME LOG [STRATA_GLOBAL_OPTS...]: `strata serve --name NAME`,
# stderr appended to LOG; waits up to 20 s for its socket.
plugin_start() {
	local name=$1 log=$2
	shift 2
	local sock
	sock=$(plugin_sock "$name")
	# PLUGIN_REPLACE=1: the socket is a dead server's, for serve to replace.
	if [[ -e $sock && -z ${PLUGIN_REPLACE:-} ]]; then
		echo "docker_lib: $sock already exists (another plugin of that name?)" >&2
		return 1
	fi
	mkdir -p "$PLUGIN_SOCK_DIR"
	echo "==== $(date -u +%FT%TZ) strata${*:+ $*} serve --name $name" >>"$log"
	"$STRATA" "$@" serve --name "$name" </dev/null >>"$log" 2>&1 &
	PLUGIN_PID[$name]=$!
	PLUGIN_LOG[$name]=$log
	local deadline=$((SECONDS + 20))
	while [[ ! -S $sock ]]; do
		if ! is_running "${PLUGIN_PID[$name]}" || ((SECONDS >= deadline)); then
			echo "docker_lib: strata serve --name $name did not create $sock; its log ends:" >&2
			tail -n 15 "$log" | sed 's/^/    /' >&2
			plugin_stop "$name"
			return 1
		fi
		sleep 0.05
	done
}

# plugin_stop NAME: SIGTERM, up to 60 s, SIGKILL.  PLUGIN_RC[NAME] is its
# exit status; PLUGIN_SOCK_LEFT is "yes" when its socket was still there
# (and has been removed here).
plugin_stop() {
	local name=$1 pid=${PLUGIN_PID[$1]:-} sock
	PLUGIN_SOCK_LEFT=no
	[[ -n $pid ]] || return 0
	stop_pid "$pid" 60
	PLUGIN_RC[$name]=$STOP_RC
	PLUGIN_PID[$name]=
	sock=$(plugin_sock "$name")
	if [[ -e $sock ]]; then
		PLUGIN_SOCK_LEFT=yes
		rm -f "$sock"
	fi
}

# dk_stop_all: every daemon first (they call the plugins' Cleanup), then
# every plugin.
dk_stop_all() {
	local t n
	for t in "${!DK_PID[@]}"; do [[ -n ${DK_PID[$t]} ]] && dk_stop "$t"; done
	for n in "${!PLUGIN_PID[@]}"; do [[ -n ${PLUGIN_PID[$n]} ]] && plugin_stop "$n"; done
	# A serve's record of dockerd's Init, left if dockerd could not call
	# Cleanup (the plugin was dead by then).
	for n in "${!PLUGIN_LOG[@]}"; do rm -f "$(plugin_sock "$n").init"; done
	return 0
}

# busybox_rootfs DIR: a minimal root filesystem: /bin/busybox with a
# symlink per applet, /etc/passwd, /etc/group, /tmp, /root.
busybox_rootfs() {
	local dir=$1 a
	mkdir -p "$dir/bin" "$dir/etc" "$dir/tmp" "$dir/root" "$dir/dev" "$dir/proc" "$dir/sys"
	chmod 1777 "$dir/tmp"
	chmod 0700 "$dir/root"
	cp /bin/busybox "$dir/bin/busybox"
	for a in $(/bin/busybox --list); do
		[[ $a == busybox ]] || ln -s busybox "$dir/bin/$a"
	done
	printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'daemon:x:1:1:daemon:/:/bin/false' \
		'nobody:x:65534:65534:nobody:/:/bin/false' >"$dir/etc/passwd"
	printf '%s\n' 'root:x:0:' 'daemon:x:1:' 'nogroup:x:65534:' >"$dir/etc/group"
}

# ------------------------------------------------------ for the Docker tests
# What t_docker.sh and t_docker_thin.sh share.  They source lib.sh first
# (pass, fail, skip, fixture_exit, unmount_under); each defines diag_logs TAG,
# the TAP comments dcheck and dis add when a docker command fails.  Nothing
# here runs unless called: bench/run-docker.sh and bench/run-thin.sh, and
# tests/integration/t_packaging.sh, source this file too.

# docker_test_exit: the EXIT trap of docker_test_init: every dockerd (then
# every plugin) stopped, the scratch dir unmounted, then lib.sh's own trap
# with the test's exit status.
docker_test_exit() {
	local rc=$?
	trap - INT TERM HUP
	dk_stop_all
	unmount_under "$TEST_TMP"
	(exit "$rc")
	fixture_exit
}

# docker_test_init NAME: the traps (docker_test_exit on EXIT, which INT,
# TERM and HUP reach as exit 130, 143, 129); skips NAME and exits 0 without
# dockerd, the docker client, /bin/busybox or root; makes W=$TEST_TMP/w,
# the test's inputs and results.  Replaces lib.sh's `is` with one for
# values of several lines.
docker_test_init() {
	local name=$1 need
	trap docker_test_exit EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	trap 'exit 129' HUP
	for need in "$DOCKERD_BIN" "$DOCKER_CLI" /bin/busybox; do
		if [[ ! -x $need ]]; then
			skip "$name" "$need is missing (apt-get install docker.io busybox-static)"
			exit 0
		fi
	done
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

# failn DESC TEXT...: fail, with every line of every TEXT a TAP comment
# (lib.sh's fail marks only the first line of each argument).
failn() {
	local desc=$1 a
	local -a lines=()
	shift
	for a in "$@"; do
		mapfile -t -O "${#lines[@]}" lines <<<"$a"
	done
	fail "$desc" "${lines[@]}"
}

# dcheck TAG DESC DOCKER-ARGS...: passes when the docker command exits 0.
dcheck() {
	local tag=$1 desc=$2 out
	shift 2
	if out=$(dk "$tag" "$@" 2>&1); then
		pass "$desc"
	else
		failn "$desc" "command: docker $*" "$(printf '%s\n' "$out" | tail -n 10)"
		diag_logs "$tag"
		return 1
	fi
}

# dis TAG DESC EXPECTED DOCKER-ARGS...: the command's stdout is EXPECTED.
dis() {
	local tag=$1 desc=$2 want=$3 out rc
	shift 3
	out=$(dk "$tag" "$@" 2>"$W/stderr")
	rc=$?
	if ((rc == 0)) && [[ $out == "$want" ]]; then
		pass "$desc"
	else
		failn "$desc" "command: docker $* (status $rc)" "got:" "$out" "expected:" "$want" \
			"stderr:" "$(tail -n 10 "$W/stderr")"
		((rc == 0)) || diag_logs "$tag"
		return 1
	fi
}

# alive TAG LABEL: dockerd and its plugin (on a strata driver) still run.
# When one died the scenario stops: each call to a dead plugin makes
# dockerd retry for 30 s.
alive() {
	local tag=$1 label=$2 driver=${DK_DRIVER[$1]}
	if ! is_running "${DK_PID[$tag]:-0}"; then
		failn "$label: dockerd died" "$(tail -n 15 "${DK_DIR[$tag]}/dockerd.log")"
		return 1
	fi
	if [[ $driver != overlay2 ]] && ! is_running "${PLUGIN_PID[$driver]:-0}"; then
		failn "$label: strata serve died" "$(tail -n 15 "${PLUGIN_LOG[$driver]}")"
		return 1
	fi
}

# stop TAG LABEL: dockerd, then its plugin (on a strata driver); checks
# both went cleanly and left nothing mounted under the data root.
stop() {
	local tag=$1 label=$2 driver=${DK_DRIVER[$1]}
	dk_stop "$tag"
	is "$label: dockerd exits 0 on SIGTERM" "$DK_STOP_RC" 0
	if [[ $driver != overlay2 ]]; then
		plugin_stop "$driver"
		is "$label: strata serve exits 0 on SIGTERM" "${PLUGIN_RC[$driver]}" 0
		is "$label: strata serve removed its socket" "$PLUGIN_SOCK_LEFT" no
	fi
	is "$label: nothing left mounted under the data root" "$(mounts_under "${DK_DIR[$tag]}/d")" ""
}

# driver_status TAG KEY: KEY's value in docker info's DriverStatus pairs.
driver_status() {
	dk "$1" info --format '{{json .DriverStatus}}' |
		python3 -c 'import json, sys; print(dict(json.load(sys.stdin)).get(sys.argv[1], "(no " + sys.argv[1] + ")"))' "$2"
}
