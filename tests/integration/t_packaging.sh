#!/usr/bin/env bash
# The packaging in contrib/: the systemd unit is valid (systemd-analyze
# verify), the spec file names the socket the unit's ExecStart listens on,
# and a real dockerd finds strata through a spec file in
# /etc/docker/plugins and runs a container on it.
#
# The unit's ExecStart runs here as a plain background process (no systemd
# runs on the test machines), with the socket moved to this test's own dir
# and the spec file written under a name unique to this run
# (/etc/docker/plugins/strata-pk-PID.spec), removed on exit.
# shellcheck source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/docker_lib.sh"

SRC=$(cd "$(dirname "$0")/../.." && pwd)
UNIT=$SRC/contrib/systemd/strata.service
SPEC=$SRC/contrib/docker/strata.spec
NAME=strata-pk-$$
SPEC_DIR=/etc/docker/plugins
SPEC_FILE=$SPEC_DIR/$NAME.spec
SERVE_PID=

pk_exit() {
	local rc=$?
	dk_stop_all
	[ -n "$SERVE_PID" ] && stop_pid "$SERVE_PID" 30
	rm -f "$SPEC_FILE"
	rmdir "$SPEC_DIR" 2>/dev/null
	unmount_under "$TEST_TMP"
	(exit "$rc")
	fixture_exit
}
trap pk_exit EXIT

exec_start=$(sed -n 's/^ExecStart=//p' "$UNIT")
is "the unit has one ExecStart" "$(grep -c '^ExecStart=' "$UNIT")" "1"
read -r -a argv <<<"$exec_start"
is "ExecStart runs the installed strata serve" "${argv[0]} ${argv[1]}" "/usr/local/bin/strata serve"
unit_sock=
for ((i = 2; i < ${#argv[@]}; i++)); do
	[ "${argv[i]}" == --socket ] && unit_sock=${argv[i + 1]}
done
is "the spec file points dockerd at the unit's socket" "$(cat "$SPEC")" "unix://$unit_sock"
is "the unit's RuntimeDirectory holds that socket" \
	"/run/$(sed -n 's/^RuntimeDirectory=//p' "$UNIT")" "$(dirname "$unit_sock")"
grep -q '^Before=docker.service' "$UNIT" && pass "the unit starts before docker.service (and stops after)" ||
	fail "the unit has no Before=docker.service"

if command -v systemd-analyze >/dev/null; then
	sed "s#^ExecStart=/usr/local/bin/strata #ExecStart=$STRATA #" "$UNIT" >"$TEST_TMP/strata.service"
	check "systemd-analyze verify accepts the unit" systemd-analyze verify --man=no "$TEST_TMP/strata.service"
else
	skip "systemd-analyze verify" "systemd-analyze is not installed"
fi

# The unit's command line, with the socket in this test's dir.
sock=$TEST_TMP/run/strata.sock
argv[0]=$STRATA
for ((i = 2; i < ${#argv[@]}; i++)); do
	[ "${argv[i]}" == --socket ] && argv[i + 1]=$sock
done
mkdir -p "$TEST_TMP/run"
"${argv[@]}" 2>"$TEST_TMP/serve.log" &
SERVE_PID=$!
for ((i = 0; i < 100; i++)); do [ -S "$sock" ] && break; sleep 0.05; done
is "ExecStart's serve listens on a 0600 socket" "$(stat -c %a "$sock" 2>/dev/null)" "600"

mkdir -p "$SPEC_DIR"
sed "s#^unix://.*#unix://$sock#" "$SPEC" >"$SPEC_FILE"
if dk_start pk "$TEST_TMP/dk" "$NAME"; then
	pass "dockerd starts with --storage-driver $NAME found through $SPEC_FILE"
	is "docker info names the driver" "$(dk pk info --format '{{.Driver}}')" "$NAME"
	root=$(dk pk info --format '{{range .DriverStatus}}{{if eq (index . 0) "Root Dir"}}{{index . 1}}{{end}}{{end}}')
	is "the store is DATA_ROOT/NAME" "$root" "$TEST_TMP/dk/d/$NAME"
	busybox_rootfs "$TEST_TMP/rootfs"
	tar -C "$TEST_TMP/rootfs" -c . | dk pk import - pk:1 >/dev/null
	is "a container runs on it" "$(dk pk run --rm --network none pk:1 sh -c 'echo ok >/tmp/x; cat /tmp/x')" "ok"
	dk_stop pk
	is "dockerd stopped cleanly" "$DK_STOP_RC" "0"
else
	fail "dockerd starts with --storage-driver $NAME found through $SPEC_FILE" "$(tail -n 20 "$TEST_TMP/dk/dockerd.log")"
fi
stop_pid "$SERVE_PID" 30
is "serve exits 0 on SIGTERM" "$STOP_RC" "0"
SERVE_PID=
[ ! -e "$sock" ] && pass "serve removed its socket" || fail "the socket is still there"
grep -q 'method=GraphDriver.Init .*status=200' "$TEST_TMP/serve.log" && pass "dockerd's Init reached serve through the spec file" ||
	fail "no Init in the serve log" "$(tail -n 5 "$TEST_TMP/serve.log")"

# ---- the snapshotter's unit and containerd snippet
SUNIT=$SRC/contrib/systemd/strata-snapshotter.service
SNIPPET=$SRC/contrib/containerd/config.toml
read -r -a sargv <<<"$(sed -n 's/^ExecStart=//p' "$SUNIT")"
is "the snapshotter unit has one ExecStart" "$(grep -c '^ExecStart=' "$SUNIT")" "1"
is "ExecStart runs the installed strata snapshotter" "${sargv[0]} ${sargv[3]}" "/usr/local/bin/strata snapshotter"
ssock=
for ((i = 1; i < ${#sargv[@]}; i++)); do
	[ "${sargv[i]}" == --socket ] && ssock=${sargv[i + 1]}
done
is "the containerd snippet's proxy plugin dials the unit's socket" \
	"$(sed -n 's/^ *address = "\(.*\)"$/\1/p' "$SNIPPET")" "$ssock"
grep -q '^ *snapshotter = "strata"' "$SNIPPET" && grep -q '^ *disable_snapshot_annotations = false' "$SNIPPET" &&
	pass "the snippet makes strata the CRI's snapshotter, with the layer digests passed" ||
	fail "the snippet lacks the CRI settings"
python3 -c 'import sys, tomllib; tomllib.load(open(sys.argv[1], "rb"))' "$SNIPPET" 2>"$TEST_TMP/toml.err" &&
	pass "the snippet is valid TOML" || fail "the snippet is not valid TOML" "$(cat "$TEST_TMP/toml.err")"
if command -v systemd-analyze >/dev/null; then
	sed "s#^ExecStart=/usr/local/bin/strata #ExecStart=$STRATA #" "$SUNIT" >"$TEST_TMP/strata-snapshotter.service"
	check "systemd-analyze verify accepts the snapshotter unit" systemd-analyze verify --man=no \
		"$TEST_TMP/strata-snapshotter.service"
else
	skip "systemd-analyze verify of the snapshotter unit" "systemd-analyze is not installed"
fi
sargv[0]=$STRATA
for ((i = 1; i < ${#sargv[@]}; i++)); do
	[ "${sargv[i]}" == --socket ] && sargv[i + 1]=$TEST_TMP/run/snapshotter.sock
	[ "${sargv[i]}" == --root ] && sargv[i + 1]=$TEST_TMP/snapstore
done
"${sargv[@]}" 2>"$TEST_TMP/snapshotter.log" &
SERVE_PID=$!
for ((i = 0; i < 100; i++)); do [ -S "$TEST_TMP/run/snapshotter.sock" ] && break; sleep 0.05; done
is "ExecStart's snapshotter listens on a 0600 socket" "$(stat -c %a "$TEST_TMP/run/snapshotter.sock" 2>/dev/null)" "600"
stop_pid "$SERVE_PID" 30
is "the snapshotter exits 0 on SIGTERM" "$STOP_RC" "0"
SERVE_PID=
[ ! -e "$TEST_TMP/run/snapshotter.sock" ] && pass "the snapshotter removed its socket" ||
	fail "the snapshotter's socket is still there"
