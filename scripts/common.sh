# shellcheck shell=bash
# Shared by scripts/demo and scripts/test: dependencies and the build.
set -euo pipefail
TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Debian packages strata builds, tests and runs with.
PACKAGES=(
	meson ninja-build pkg-config gcc libc6-dev
	libjansson-dev libcmocka-dev libarchive-dev
	attr e2fsprogs util-linux python3 findutils
	clang-format valgrind
	tar gzip zstd xz-utils libarchive-tools debootstrap busybox-static time
	clang libclang-rt-14-dev
	libmicrohttpd-dev docker.io curl
	libssl-dev sshfs openssh-server strace
	libgrpc-dev libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev libsqlite3-dev
	golang-github-containerd-containerd-dev containerd python3-grpcio docker-registry skopeo
)

need_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "strata: $1 needs root (it installs packages and mounts overlayfs); run it as root" >&2
		exit 1
	fi
}

install_deps() {
	local missing=() p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
	done
	if [ ${#missing[@]} -gt 0 ]; then
		echo "==> installing ${missing[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
}

# build DIR [meson options...]
build() {
	local dir=$1
	shift
	if [ ! -f "$TOP/$dir/build.ninja" ]; then
		meson setup "$TOP/$dir" "$TOP" "$@" >/dev/null
	else
		meson configure "$TOP/$dir" "$@" >/dev/null
	fi
	local log
	if ! log=$(ninja -C "$TOP/$dir" 2>&1); then
		printf '%s\n' "$log" | grep -v '^\[' >&2
		echo "strata: build in $dir failed" >&2
		return 1
	fi
}
