#!/bin/bash
# Long chains: 1, 2, 128, 200 and 500 layers mount, with the new mount API
# (one lowerdir+ per layer, shown as such in mountinfo) and with the forced
# legacy fallback (mount(2), short relative paths within one page).
. "$(dirname "$0")/lib.sh"

st init || exit 1
build_chain 500 l || { fail "build a 500-layer chain"; exit 1; }
pass "built a 500-layer chain"

mount_options() { awk -v m="$1" '$5 == m { print $NF }' /proc/self/mountinfo; }

for n in 1 2 128 200 500; do
	for api in new legacy; do
		p=$(st -o mountapi="$api" mount "l$n")
		if [ "$n" -eq 1 ]; then
			is "[$api] chain of 1 is the diff dir" "$p" "$R/diff/l1"
		else
			opts=$(mount_options "$p")
			if [ "$api" == new ]; then
				is "[$api] chain of $n: $((n - 1)) lowerdir+ entries" \
					"$(printf '%s' "$opts" | tr , '\n' | grep -c '^lowerdir+=')" "$((n - 1))"
			else
				lower=$(printf '%s' "$opts" | tr , '\n' | sed -n 's/^lowerdir=//p')
				is "[$api] chain of $n: one lowerdir= of $((n - 1)) short paths" \
					"$(printf '%s' "$lower" | tr : '\n' | grep -Ec '^[0-9A-Za-z]{6}$')" "$((n - 1))"
			fi
		fi
		is "[$api] chain of $n: every layer's file visible" "$(ls "$p" | grep -c '^f')" "$n"
		is "[$api] chain of $n: the top layer wins" "$(cat "$p/top")" "$n"
		st umount "l$n"
	done
done
is "nothing left mounted" "$(overlay_count)" 0

check "a 501st layer (500 lower + 1 upper) is accepted" st create l501 l500
p=$(st mount l501)
is "the 501-layer chain mounts" "$(ls "$p" | grep -c '^f')" 500
st umount l501
check_error "a 502nd layer is refused at create" \
	'create l502: chain would have 502 layers; overlay mounts at most 501' st create l502 l501
st exists l502
is "the refused layer does not exist" $? 1
