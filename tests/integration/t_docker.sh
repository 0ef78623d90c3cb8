#!/usr/bin/env bash
# A real dockerd (Debian's docker.io) storing its images and containers in
# strata through `strata serve`, against the same scenario on dockerd's
# built-in overlay2: import, run, diff, commit, cp, export, save/load, build,
# rm/rmi down to an empty store, and a restart of dockerd and the plugin with
# images in the store.  What the two drivers show must be identical.
#
#   STRATA_BIN=build/strata bash tests/integration/t_docker.sh    (~40 s)
# Needs root, /usr/sbin/dockerd, /usr/bin/docker and /bin/busybox (from
# busybox-static); skipped without them.  Each run uses its own plugin name
# (strata-it-PID) and daemons under its scratch dir.  Every dockerd and
# plugin started here is stopped by PID on exit (dockerd first: it calls the
# plugin's Cleanup), whatever happened; every docker command is bounded
# (DK_TIMEOUT, default 180 s), and the scenario stops early when dockerd or
# the plugin died.
# shellcheck source-path=SCRIPTDIR
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/docker_lib.sh"

# W ($TEST_TMP/w): inputs and results, shared by both runs.
docker_test_init "docker tests"
PLUGIN=strata-it-$$
PLUGIN_LOGFILE=$TEST_TMP/plugin.log
: >"$PLUGIN_LOGFILE"

# ---------------------------------------------------------------- inputs

ROOTFS=$W/rootfs
busybox_rootfs "$ROOTFS"
mkdir -p "$ROOTFS/data/dir" "$ROOTFS/data/olddir/sub"
echo keep >"$ROOTFS/data/keep"
echo del >"$ROOTFS/data/del"
echo a >"$ROOTFS/data/dir/a"
echo b >"$ROOTFS/data/dir/b"
echo mode >"$ROOTFS/data/mode"
chmod 0644 "$ROOTFS/data/mode"
echo old >"$ROOTFS/data/old"
echo f >"$ROOTFS/data/olddir/f"
echo g >"$ROOTFS/data/olddir/sub/g"
echo own >"$ROOTFS/data/own"
# Whole-second mtimes in the past, so that a change made a moment later
# never shares the second (Docker compares directory mtimes).
find "$ROOTFS" -exec touch -h -d '2020-01-02 03:04:05' {} +
tar --numeric-owner -C "$ROOTFS" -cf "$W/base.tar" .

# What the container does to the image.
MODIFY='set -e
echo new >/data/new
echo "it:x:1000:1000:it:/data:/bin/sh" >>/etc/passwd
echo "it:x:1000:" >>/etc/group
rm /data/del
rm -r /data/dir
mv /data/old /data/renamed
mv /data/olddir /data/newdir
chmod 0600 /data/mode
chown 1000:1000 /data/own
mkdir -m 0750 /data/made
ln -s keep /data/link'

# What `docker diff` must say about it (sorted).
EXPECTED_DIFF='A /data/link
A /data/made
A /data/new
A /data/newdir
A /data/newdir/f
A /data/newdir/sub
A /data/newdir/sub/g
A /data/renamed
C /data
C /data/mode
C /data/own
C /etc
C /etc/group
C /etc/passwd
D /data/del
D /data/dir
D /data/old
D /data/olddir'

# Run in an image with the changes: what it prints...
# shellcheck disable=SC2016 # for the container's shell
VERIFY='cat /data/new /data/renamed /data/newdir/f /data/newdir/sub/g /data/keep
tail -n 1 /etc/passwd
tail -n 1 /etc/group
stat -c "%n %a %u:%g %F" /data/mode /data/own /data/made /data/link
readlink /data/link
for p in /data/del /data/dir /data/old /data/olddir; do [ -e $p ] && echo "still there: $p"; done
echo end'
# ...and must print.
VERIFY_OUT='new
old
f
g
keep
it:x:1000:1000:it:/data:/bin/sh
it:x:1000:
/data/mode 600 0:0 regular file
/data/own 644 1000:1000 regular file
/data/made 750 0:0 directory
/data/link 777 0:0 symbolic link
keep
end'

# The build: two RUN steps over the base image.
mkdir -p "$W/ctx"
cat >"$W/ctx/Dockerfile" <<'EOF'
FROM strata-it/base
RUN echo built >/data/built && rm /data/keep && mkdir -p /data/b/c && echo deep >/data/b/c/d && chmod 0755 /data/b
RUN chmod 0700 /data/built && echo more >>/data/built && rm -r /data/b/c && ln -s built /data/built.link && echo x >/data/b/x
EOF
BUILT_VERIFY='cat /data/built /data/b/x; stat -c "%n %a" /data/built /data/b; readlink /data/built.link
[ -e /data/keep ] && echo "keep still there"; [ -e /data/b/c ] && echo "b/c still there"; echo end'
BUILT_OUT='built
more
x
/data/built 700
/data/b 755
built
end'

head -c 300000 /dev/urandom >"$W/cpin.bin"

# A tar as `name type mode uid:gid size link sha256`, sorted, mtimes left out
# (they differ between any two runs).
tar_listing() {
	python3 - "$1" <<'EOF'
import hashlib, sys, tarfile
rows = []
with tarfile.open(sys.argv[1]) as t:
    for m in t:
        name = m.name
        while name.startswith("./"):
            name = name[2:]
        name = name.rstrip("/") or "."
        h = "-"
        if m.isreg():
            h = hashlib.sha256(t.extractfile(m).read()).hexdigest()[:16]
        size = m.size if m.isreg() else 0
        rows.append("%s %s %o %d:%d %d %s %s" % (name, m.type.decode(), m.mode & 0o7777, m.uid, m.gid, size, m.linkname or "-", h))
print("\n".join(sorted(rows)))
EOF
}

# ---------------------------------------------------------------- helpers

# failn, is, dcheck, dis, alive, stop and driver_status are docker_lib.sh's;
# diag_logs is this test's own.

# diag_logs TAG: the ends of dockerd's and the plugin's logs, as TAP comments.
diag_logs() {
	local tag=$1
	echo "# --- dockerd ($tag) log, last lines:"
	tail -n 15 "${DK_DIR[$tag]}/dockerd.log" 2>/dev/null | sed 's/^/#   /'
	if [[ ${DK_DRIVER[$tag]:-} == "$PLUGIN" ]]; then
		echo "# --- plugin log, last lines:"
		tail -n 15 "$PLUGIN_LOGFILE" | sed 's/^/#   /'
	fi
}

# store_dir TAG: where the driver keeps its layers.
store_dir() {
	local tag=$1
	if [[ ${DK_DRIVER[$tag]} == overlay2 ]]; then
		echo "${DK_DIR[$tag]}/d/overlay2"
	else
		echo "${DK_DIR[$tag]}/d/${DK_DRIVER[$tag]}"
	fi
}

# leftover_mounts TAG: mounts under the data root other than the bind
# mounts dockerd (the data root itself) and overlay2 (its home) make of
# themselves, which stay while dockerd runs.
leftover_mounts() {
	local d=${DK_DIR[$1]}/d
	mounts_under "$d" | grep -vx -e "$d" -e "$d/overlay2" || true
}

# start TAG: the plugin first (for strata), then dockerd.
start() {
	local tag=$1 driver=${2:-}
	if [[ -n $driver ]]; then
		plugin_start "$driver" "$PLUGIN_LOGFILE" || return 1
	fi
	dk_start "$tag" "$TEST_TMP/$tag" "$driver"
}

# rm_all TAG LABEL: every container and image.  `docker rmi` refuses an image
# with children, so untag the top-level ones and repeat (a few rounds).
rm_all() {
	local tag=$1 label=$2 out=""
	local -a ids
	mapfile -t ids < <(dk "$tag" ps -aq)
	((${#ids[@]} == 0)) || dcheck "$tag" "$label: docker rm every container" rm -f "${ids[@]}"
	for _ in 1 2 3 4 5; do
		mapfile -t ids < <(dk "$tag" images -q | sort -u)
		((${#ids[@]})) || mapfile -t ids < <(dk "$tag" images -aq | sort -u)
		((${#ids[@]})) || break
		out+=$(dk "$tag" rmi -f "${ids[@]}" 2>&1)$'\n'
	done
	is "$label: no container left" "$(dk "$tag" ps -aq)" ""
	if [[ -z $(dk "$tag" images -aq) ]]; then
		pass "$label: docker rmi removes every image"
	else
		failn "$label: docker rmi removes every image" "$(dk "$tag" images -a 2>&1)" "$(printf '%s\n' "$out" | grep -i error | head -n 10)"
		diag_logs "$tag"
	fi
}

# check_store_empty TAG DESC: the driver's store holds no layer.
check_store_empty() {
	local tag=$1 desc=$2 s left
	s=$(store_dir "$tag")
	if [[ ${DK_DRIVER[$tag]} == overlay2 ]]; then
		# overlay2 keeps l/ (its short-name symlinks, one per layer).
		left=$(find "$s" -mindepth 1 -not -path "$s/l" 2>&1)
	else
		left=$(store_leftovers "$s")
	fi
	is "$desc: no layer left in $(basename "$s")" "$left" ""
	is "$desc: no mount left under the data root" "$(leftover_mounts "$tag")" ""
	if [[ ${DK_DRIVER[$tag]} != overlay2 ]]; then
		is "$desc: docker info: the driver's status counts no layer, no mount" \
			"$(driver_status "$tag" Layers) $(driver_status "$tag" Mounted)" "0 0"
	fi
}

# store_leftovers DIR: what a strata store holds besides an empty skeleton:
# layers/ (chain files), diff/, mnt/, work/ (overlay's work dirs), refs/
# (reference counts) and l/ (short links) are per layer and must be empty;
# `lock` is the store's single lock file and stays.
store_leftovers() {
	local s=$1 d
	if [[ ! -d $s/layers ]]; then
		echo "no strata store at $s"
		return
	fi
	for d in layers diff mnt work refs l link; do
		[[ -d $s/$d ]] && find "$s/$d" -mindepth 1
	done
	# lock, engine (the store's union engine) and the marker are the store's own.
	find "$s" -mindepth 1 -maxdepth 1 -not -name lock -not -name engine -not -name strata-store \
		-not \( -type d \( -name layers -o -name diff -o -name mnt -o -name work -o -name refs -o -name l -o -name link \) \)
}

# ---------------------------------------------------------------- the scenario

# scenario TAG [PLUGIN]: TAG "o" is dockerd's overlay2, "s" strata.  Leaves
# what the two must agree on in $W/TAG.*.
scenario() {
	local tag=$1 driver=${2:-} label out
	label=${driver:+strata}
	label=${label:-overlay2}
	echo "# ---- $label"
	if ! start "$tag" "$driver"; then
		fail "$label: dockerd starts"
		return 1
	fi
	pass "$label: dockerd starts"
	dis "$tag" "$label: docker info names the driver" "${driver:-overlay2}" info --format '{{.Driver}}'
	out=$(dk "$tag" info --format '{{json .DriverStatus}}' 2>&1)
	if [[ $out == '[['* ]]; then pass "$label: docker info shows the driver's status"; else failn "$label: docker info shows the driver's status" "$out"; fi

	# import
	if ! dcheck "$tag" "$label: docker import" import "$W/base.tar" strata-it/base; then
		return 1
	fi
	dis "$tag" "$label: run the imported image" "keep" run --rm --network none strata-it/base cat /data/keep

	# a container that changes things
	dcheck "$tag" "$label: docker run a container that changes files" \
		run --network none --name c1 strata-it/base sh -c "$MODIFY" || return 1
	dk "$tag" diff c1 2>&1 | LC_ALL=C sort >"$W/$tag.diff"
	is "$label: docker diff lists exactly the changes" "$(cat "$W/$tag.diff")" "$EXPECTED_DIFF"

	alive "$tag" "$label" || return 1
	# commit
	dcheck "$tag" "$label: docker commit" commit c1 strata-it/committed
	dis "$tag" "$label: the committed image has the changes" "$VERIFY_OUT" \
		run --rm --network none strata-it/committed sh -c "$VERIFY"
	is "$label: docker diff after the commit: the same" "$(dk "$tag" diff c1 2>&1 | LC_ALL=C sort)" "$EXPECTED_DIFF"

	alive "$tag" "$label" || return 1
	# cp in and out (of a stopped container: the plugin mounts it)
	dcheck "$tag" "$label: docker cp a file in" cp "$W/cpin.bin" c1:/data/cpin.bin
	rm -rf "$W/$tag.cp"
	mkdir -p "$W/$tag.cp"
	dcheck "$tag" "$label: docker cp that file out" cp c1:/data/cpin.bin "$W/$tag.cp/cpin.bin"
	check "$label: it comes out as it went in" cmp "$W/cpin.bin" "$W/$tag.cp/cpin.bin"
	dcheck "$tag" "$label: docker cp out a file the container changed" cp c1:/etc/passwd "$W/$tag.cp/passwd"
	is "$label: with the change" "$(tail -n 1 "$W/$tag.cp/passwd")" "it:x:1000:1000:it:/data:/bin/sh"
	dcheck "$tag" "$label: docker cp out a file of the image" cp c1:/data/keep "$W/$tag.cp/keep"
	is "$label: with the image's content" "$(cat "$W/$tag.cp/keep")" "keep"
	is "$label: docker diff sees the copied-in file" "$(dk "$tag" diff c1 | grep -c '^A /data/cpin.bin$')" 1

	alive "$tag" "$label" || return 1
	# export
	dcheck "$tag" "$label: docker export" export -o "$W/$tag.export.tar" c1
	tar_listing "$W/$tag.export.tar" >"$W/$tag.export.list"
	out=$(awk '{print $1, $3, $4, $5, $6}' "$W/$tag.export.list" |
		grep -E '^data/(new|own|mode|made|link|renamed|cpin.bin|del|dir|old|olddir) ')
	is "$label: the export has the container's files" "$out" "data/cpin.bin 644 0:0 300000 -
data/link 777 0:0 0 keep
data/made 750 0:0 0 -
data/mode 600 0:0 5 -
data/new 644 0:0 4 -
data/own 644 1000:1000 4 -
data/renamed 644 0:0 4 -"
	is "$label: the export's busybox is the real one" \
		"$(awk '$1 == "bin/busybox" {print $7}' "$W/$tag.export.list")" "$(sha256sum /bin/busybox | cut -c1-16)"

	is "$label: no union left mounted once cp and export are done" "$(leftover_mounts "$tag")" ""

	alive "$tag" "$label" || return 1
	# a running container: diff, export and commit while it is mounted
	dcheck "$tag" "$label: docker run -d a container that keeps running" \
		run -d --network none --name c3 strata-it/base sh -c 'echo running >/data/run; exec sleep 300'
	# shellcheck disable=SC2016 # for the container's shell
	dis "$tag" "$label: docker exec in it" "running" exec c3 \
		sh -c 'for i in $(seq 100); do [ -s /data/run ] && break; sleep 0.1; done; cat /data/run'
	is "$label: docker diff of the running container" "$(dk "$tag" diff c3 2>&1 | LC_ALL=C sort)" "A /data/run
C /data"
	dcheck "$tag" "$label: docker commit of the running container" commit c3 strata-it/running
	dis "$tag" "$label: its image has the file" "running" run --rm --network none strata-it/running cat /data/run
	is "$label: docker export of the running container has the file" \
		"$(dk "$tag" export c3 | tar -tf - | grep -E '^(\./)?data/run$' | sed 's,^\./,,')" "data/run"
	dcheck "$tag" "$label: docker rm -f the running container" rm -f c3
	is "$label: no union left mounted once it is gone" "$(leftover_mounts "$tag")" ""

	alive "$tag" "$label" || return 1
	# containers in parallel (different layers at once through the driver)
	local i pids=() bad=""
	for i in 1 2 3 4 5 6; do
		dk "$tag" run --rm --network none strata-it/base sh -c "echo $i >/data/p; cat /data/p /data/keep" \
			>"$W/$tag.par$i" 2>&1 &
		pids+=($!)
	done
	for i in 1 2 3 4 5 6; do
		wait "${pids[i - 1]}" || bad+=" run $i failed: $(tail -n 3 "$W/$tag.par$i");"
		[[ $(cat "$W/$tag.par$i") == "$i"$'\n'keep ]] || bad+=" run $i printed: $(head -c 300 "$W/$tag.par$i");"
	done
	is "$label: six docker run --rm in parallel" "$bad" ""

	alive "$tag" "$label" || return 1
	# save, rmi, load
	dcheck "$tag" "$label: docker save" save -o "$W/$tag.save.tar" strata-it/committed
	dcheck "$tag" "$label: docker rmi the saved image" rmi strata-it/committed
	if dk "$tag" image inspect strata-it/committed >/dev/null 2>&1; then
		fail "$label: the image is gone after rmi"
	else
		pass "$label: the image is gone after rmi"
	fi
	dcheck "$tag" "$label: docker load" load -i "$W/$tag.save.tar"
	dis "$tag" "$label: the loaded image has the changes" "$VERIFY_OUT" \
		run --rm --network none strata-it/committed sh -c "$VERIFY"

	alive "$tag" "$label" || return 1
	# build
	if dk "$tag" build --network=none -t strata-it/built "$W/ctx" >"$W/$tag.build.log" 2>&1; then
		pass "$label: docker build (two RUN steps)"
	else
		failn "$label: docker build (two RUN steps)" "$(tail -n 15 "$W/$tag.build.log")"
		diag_logs "$tag"
	fi
	dis "$tag" "$label: the built image has both steps' changes" "$BUILT_OUT" \
		run --rm --network none strata-it/built sh -c "$BUILT_VERIFY"
	dk "$tag" history -q strata-it/built | wc -l >"$W/$tag.history"
	is "$label: the built image has 3 layers" "$(cat "$W/$tag.history")" 3

	alive "$tag" "$label" || return 1
	# rm and rmi everything: the store is empty
	rm_all "$tag" "$label"
	check_store_empty "$tag" "$label"

	alive "$tag" "$label" || return 1
	# persistence: images and a container in the store across a restart of
	# dockerd and the plugin.
	dcheck "$tag" "$label: docker import again" import "$W/base.tar" strata-it/base
	dcheck "$tag" "$label: docker run again" \
		run --network none --name c2 strata-it/base sh -c "$MODIFY"
	dcheck "$tag" "$label: docker commit again" commit c2 strata-it/committed
	stop "$tag" "$label: stop with images"
	if ! start "$tag" "$driver"; then
		fail "$label: dockerd starts again on the same store"
		return 1
	fi
	pass "$label: dockerd starts again on the same store"
	is "$label: docker images lists them after the restart" \
		"$(dk "$tag" images --format '{{.Repository}}:{{.Tag}}' --filter reference='strata-it/*' 2>&1 | LC_ALL=C sort)" \
		"strata-it/base:latest
strata-it/committed:latest"
	dis "$tag" "$label: the imported image runs after the restart" "keep" \
		run --rm --network none strata-it/base cat /data/keep
	dis "$tag" "$label: the committed image has the changes after the restart" "$VERIFY_OUT" \
		run --rm --network none strata-it/committed sh -c "$VERIFY"
	is "$label: docker diff of the old container after the restart" \
		"$(dk "$tag" diff c2 2>&1 | LC_ALL=C sort)" "$EXPECTED_DIFF"
	rm -f "$W/$tag.cp/new"
	dcheck "$tag" "$label: docker cp out of the old container after the restart" cp c2:/data/new "$W/$tag.cp/new"
	is "$label: with the container's content" "$(cat "$W/$tag.cp/new" 2>&1)" "new"
	alive "$tag" "$label" || return 1
	rm_all "$tag" "$label"
	check_store_empty "$tag" "$label, after the restart"
	stop "$tag" "$label: final stop"
}

# ---------------------------------------------------------------- overlay2

scenario o

# ---------------------------------------------------------------- strata

if ! "$STRATA" serve --help >/dev/null 2>&1; then
	fail "strata has a serve verb" "$("$STRATA" serve --help 2>&1 | head -n 3)"
	exit 1
fi
scenario s "$PLUGIN"

# ------------------------------------------- strata serve restarted alone

# dockerd sends Init only when it starts.  A strata serve that crashes (or
# that systemd restarts) under a running dockerd must take up the same
# store again from its record of that Init.
if start r "$PLUGIN"; then
	tar -C "$ROOTFS" -c . | dk r import - strata-it/restart >/dev/null 2>&1
	dis r "restart: an image runs before the crash" "keep" run --rm --network none strata-it/restart cat /data/keep
	kill -KILL "${PLUGIN_PID[$PLUGIN]}" 2>/dev/null
	wait "${PLUGIN_PID[$PLUGIN]}" 2>/dev/null
	PLUGIN_PID[$PLUGIN]=
	if PLUGIN_REPLACE=1 plugin_start "$PLUGIN" "$PLUGIN_LOGFILE"; then
		pass "restart: strata serve starts again on the stale socket of the killed one"
		# Logged just before it starts taking calls, which may be just
		# after the socket appears.
		for ((i = 0; i < 50; i++)); do
			grep -q 'msg="reopened the store of the last Init"' "$PLUGIN_LOGFILE" && break
			sleep 0.1
		done
		grep -q 'msg="reopened the store of the last Init"' "$PLUGIN_LOGFILE" &&
			pass "restart: it reopened the store of dockerd's Init" ||
			fail "restart: it reopened the store of dockerd's Init" "$(tail -n 5 "$PLUGIN_LOGFILE")"
		dis r "restart: the same dockerd runs the image again, without a restart of its own" "keep" \
			run --rm --network none strata-it/restart cat /data/keep
		dcheck r "restart: and removes it" rmi strata-it/restart
		check_store_empty r "restart"
	else
		fail "restart: strata serve starts again on the stale socket of the killed one"
	fi
	stop r "restart: final stop"
	[ ! -e "$(plugin_sock "$PLUGIN").init" ] && pass "restart: dockerd's Cleanup made serve forget the Init" ||
		fail "restart: $(plugin_sock "$PLUGIN").init is still there after dockerd's Cleanup"
else
	fail "restart: dockerd and strata serve start"
fi

# ---------------------------------------------------------------- both agree

if [[ -s $W/s.diff && -s $W/o.diff ]]; then
	is "docker diff: the same on both drivers" "$(cat "$W/s.diff")" "$(cat "$W/o.diff")"
fi
if [[ -s $W/s.export.list && -s $W/o.export.list ]]; then
	if out=$(diff "$W/o.export.list" "$W/s.export.list"); then
		pass "docker export: the same files, types, modes, owners, sizes and contents on both drivers"
	else
		failn "docker export: the same files, types, modes, owners, sizes and contents on both drivers" \
			"diff overlay2 strata:" "$(printf '%s\n' "$out" | head -n 30)"
	fi
fi

# The plugin saw every kind of call, and none failed.
for m in Init Capabilities Status Create CreateReadWrite ApplyDiff Diff Changes Get Put Remove Cleanup; do
	is "plugin log has GraphDriver.$m calls" "$(grep -c "method=GraphDriver\.${m}[ ]" "$PLUGIN_LOGFILE" | awk '{print ($1 > 0) ? "yes" : "no"}')" yes
done
errors=$(grep -E 'level=error' "$PLUGIN_LOGFILE" | head -n 20)
is "plugin log has no level=error line" "$errors" ""
grep -E 'level=warn' "$PLUGIN_LOGFILE" | head -n 20 | sed 's/^/# plugin warning: /'
