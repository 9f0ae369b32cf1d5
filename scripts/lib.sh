# Shared by scripts/test, scripts/demo and scripts/bench. Source it from the repository root.

FB_DEBIAN_PACKAGES=(mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev librocksdb-dev
	libcyaml-dev libyaml-dev libssl-dev check meson ninja-build pkg-config openssl gcc
	valgrind binutils clang libclang-rt-14-dev libcjson-dev libmicrohttpd-dev
	curl prometheus)

# Installs the Debian packages that are missing (apt-get update first, non-interactive).
fb_install_deps() {
	local missing=() p sudo=""
	for p in "${FB_DEBIAN_PACKAGES[@]}" "$@"; do
		if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
			missing+=("$p")
		fi
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

# Waits until something accepts TCP on 127.0.0.1:$1 (10 s).
fb_wait_port() {
	local i
	for i in $(seq 100); do
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
