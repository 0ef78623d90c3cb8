#!/bin/bash
# The command line: help, usage errors, id validation, exit codes.
. "$(dirname "$0")/lib.sh"

check "strata --help" "$STRATA" --help
for c in init create rm exists mount umount status metadata cleanup; do
	out=$("$STRATA" "$c" --help 2>&1)
	if [ $? -eq 0 ] && [[ "$out" == *"usage: strata"*"$c"* ]]; then pass "$c --help"; else fail "$c --help" "$out"; fi
done
check_error "unknown command" 'unknown command "frob"' "$STRATA" frob
check_error "-o needs KEY=VALUE" '-o bogus: expected KEY=VALUE' "$STRATA" -o bogus status
check_error "not a store" "$TEST_TMP/nothing is not a strata store.*strata init" "$STRATA" --root "$TEST_TMP/nothing" status

check "init" st init
check "init again is fine" st init
check_error "unknown driver option" 'init .*unknown driver option "frob"' st -o frob=1 init
check_error "bad mountapi" 'mountapi=sometimes: expected auto, new or legacy' st -o mountapi=sometimes status
check_error "bad engine" 'engine=zfs: unknown engine \(known: overlay, aufs, auto\)' st -o engine=zfs status
check_error "engine of another store" 'engine=aufs, but the store was made with overlay' st -o engine=aufs status
check_error "no aufs in this kernel" "init $TEST_TMP/aufs-store: engine=aufs: aufs is not in /proc/filesystems" \
	"$STRATA" --root "$TEST_TMP/aufs-store" -o engine=aufs init

check_error "create without id" 'create: missing ID' st create
check_error "create with 3 args" 'create: too many arguments' st create a b c
check_error "create unknown option" 'create: unknown option' st create --frob a

# Hostile ids are refused before anything touches disk.
before=$(find "$R" | LC_ALL=C sort)
for id in '../escape' '/abs' 'a/b' '.hidden' '-dash' '' 'sp ace' 'x-removing' \
	"$(printf 'a%.0s' {1..129})"; do
	check_error "create rejects id '${id:0:20}'" "create .*invalid id" st create -- "$id"
done
check_error "parent id validated" 'create ok1: parent: invalid id "../p"' st create ok1 ../p
check_error "mount rejects bad id" 'get \.\./x: invalid id' st mount ../x
check_error "rm rejects bad id" 'remove a/b: invalid id' st rm a/b
is "nothing created by rejected ids" "$(find "$R" | LC_ALL=C sort)" "$before"

long=$(printf 'a%.0s' {1..128})
check "128-byte id accepted" st create "$long"
check "docker-style ids" st create 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef-init
st exists "$long"
is "exists: 0 for a layer" $? 0
st exists nope
is "exists: 1 for no layer" $? 1
st exists ../x 2>/dev/null
is "exists: 2 for a bad id" $? 2

check_error "create twice" "create $long: layer already exists" st create "$long"
check_error "missing parent" 'create c1: parent nope does not exist' st create c1 nope
check_error "own parent" 'create c2: a layer cannot be its own parent' st create c2 c2
check_error "storage options refused" 'create c3: unknown storage option "size=10G"' st create --storage-opt size=10G c3
st exists c3
is "refused create left nothing" $? 1
check_error "metadata of unknown" 'metadata nope: no such layer' st metadata nope
check_error "mount of unknown" 'get nope: no such layer' st mount nope
check_error "umount of unknown" 'put nope: no such layer' st umount nope
check_error "umount of unused" "put $long: layer is not in use" st umount "$long"
check_error "rm of unknown" 'remove nope: no such layer' st rm nope

json=$(st status --json)
is "status --json is JSON with the root" "$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Root Dir"])')" "$R"
is "status counts layers" "$(printf '%s' "$json" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Layers"])')" 2
meta=$(st metadata --json "$long" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["DiffDir"], d["RefCount"], d["ChainLength"])')
is "metadata --json" "$meta" "$R/diff/$long 0 1"
