# Shared by scripts/test, scripts/demo and scripts/bench. Source it from the repository root.

FB_DEBIAN_PACKAGES=(mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev librocksdb-dev
	libcyaml-dev libyaml-dev libssl-dev check meson ninja-build pkg-config openssl gcc
	valgrind binutils clang libclang-rt-14-dev libcjson-dev libmicrohttpd-dev
	curl prometheus)

# Installs the Debian packages that are missing (apt-get update first, non-interactive).
fb_install_deps() {
	local missing=() p sudo="" native
	native=$(dpkg --print-architecture)
	for p in "${FB_DEBIAN_PACKAGES[@]}" "$@"; do
		# NAME means NAME for this machine's architecture (or "all"), also when NAME:arm64 is
		# installed beside it; NAME:ARCH that architecture.
		case $p in
			*:*) dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qx "install ok installed" ;;
			*) dpkg-query -W -f='${Architecture} ${Status}\n' "$p" 2>/dev/null \
				| grep -Eqx "($native|all) install ok installed" ;;
		esac || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" != 0 ]; then
		command -v sudo >/dev/null || { echo "need root to install: ${missing[*]}" >&2; return 1; }
		sudo="sudo"
	fi
	echo "installing: ${missing[*]}"
	$sudo apt-get update -q
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The arm64 cross build (scripts/test --arm64): Debian's cross toolchain, qemu-user-static for the
# test programs, and the :arm64 libraries. librocksdb7.8 and libgflags2.2 are not Multi-Arch: same
# (installing the :arm64 ones would remove the amd64 ones the normal build needs): fb_arm64_libs
# unpacks those into a folder of the build instead.
FB_ARM64_PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
	libmosquitto-dev:arm64 libcyaml-dev:arm64 libyaml-dev:arm64 libssl-dev:arm64 check:arm64
	libcjson-dev:arm64 libmicrohttpd-dev:arm64
	libsnappy1v5:arm64 liblz4-1:arm64 libzstd1:arm64 libbz2-1.0:arm64 zlib1g:arm64 libstdc++6:arm64)
FB_ARM64_UNPACKED=(librocksdb7.8:arm64 librocksdb-dev:arm64 libgflags2.2:arm64)

# Installs what the arm64 cross build needs (adds the arm64 architecture to dpkg first).
fb_install_arm64_deps() {
	if ! dpkg --print-foreign-architectures | grep -qx arm64; then
		dpkg --add-architecture arm64
		apt-get update -q
	fi
	fb_install_deps "${FB_ARM64_PACKAGES[@]}"
}

# Unpacks FB_ARM64_UNPACKED into folder $1 (anew) and prints the library folder in it.
fb_arm64_libs() {
	local dir=$1 deb
	rm -rf "$dir"
	mkdir -p "$dir/debs"
	(cd "$dir/debs" && apt-get download -q "${FB_ARM64_UNPACKED[@]}" >/dev/null 2>&1) || {
		echo "cannot download ${FB_ARM64_UNPACKED[*]}" >&2; return 1; }
	for deb in "$dir"/debs/*.deb; do
		dpkg-deb -x "$deb" "$dir/root"
	done
	echo "$dir/root/usr/lib/aarch64-linux-gnu"
}

# Lets the kernel run arm64 programs through qemu-aarch64-static (binfmt_misc), so that a test
# program under qemu can start another arm64 program (flowmq-link).
fb_arm64_binfmt() {
	local b=/proc/sys/fs/binfmt_misc
	[ -e $b/register ] || mount -t binfmt_misc binfmt_misc $b
	[ -e $b/qemu-aarch64 ] || cat /usr/lib/binfmt.d/qemu-aarch64.conf >$b/register
}

# Configures (or reconfigures) and builds the meson build folder $1; the other arguments are
# options of `meson setup` (e.g. -Db_sanitize=address,undefined).
fb_build() {
	local dir=$1
	shift
	if [ -d "$dir" ]; then
		meson setup --reconfigure "$dir" "$@" || meson setup --wipe "$dir" "$@"
	else
		meson setup "$dir" "$@"
	fi
	meson compile -C "$dir"
}

# A TCP port on 127.0.0.1 where nothing listens now (below the ephemeral range, so no outgoing
# connection takes it meanwhile).
fb_free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 12000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return 0
		fi
	done
}

# Waits until something accepts TCP on 127.0.0.1:$1 ($2 seconds, default 10).
fb_wait_port() {
	local i
	for i in $(seq $((${2:-10} * 10))); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	echo "nothing listens on 127.0.0.1:$1" >&2
	return 1
}

# Waits until file $1 contains $2, for at most $3 seconds.
fb_wait_log() {
	local i
	for i in $(seq $(($3 * 10))); do
		grep -q -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# Waits until file $1 has at least $2 lines, for at most $3 seconds.
fb_wait_lines() {
	local i
	for i in $(seq $(($3 * 10))); do
		[ -f "$1" ] && [ "$(wc -l <"$1")" -ge "$2" ] && return 0
		sleep 0.1
	done
	return 1
}

# Makes a CA, a server certificate for localhost/127.0.0.1 and an edge client certificate in $1.
fb_make_certs() {
	local d=$1
	(
		cd "$d"
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
			-subj "/CN=flowmq-demo-ca" -keyout ca.key -out ca.crt 2>/dev/null
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
			-keyout server.key -out server.csr 2>/dev/null
		printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
		openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
			-extfile server.ext -out server.crt 2>/dev/null
		openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=edge-site-A" \
			-keyout edge.key -out edge.csr 2>/dev/null
		printf 'extendedKeyUsage=clientAuth\n' >edge.ext
		openssl x509 -req -in edge.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
			-extfile edge.ext -out edge.crt 2>/dev/null
		chmod 600 ./*.key
	)
}
