#!/usr/bin/env bash
# Makes the local base images debian:12 and debian:12-slim (the same minimal Debian 12 root) with
# debootstrap, from the Debian mirror this machine's apt already uses, when podman does not have
# them yet. Used by scripts/docker-test on machines that reach no container registry.
set -euo pipefail

if podman image exists debian:12 && podman image exists debian:12-slim; then
	exit 0
fi
# The first Debian mirror of the apt sources (deb822 .sources files or sources.list).
mirror=$(sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null \
	| grep -v -- '-security' | head -n1)
if [ -z "$mirror" ]; then
	mirror=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\) .*/\2/p' /etc/apt/sources.list 2>/dev/null \
		| grep -v -- '-security' | head -n1)
fi
[ -n "$mirror" ] || { echo "no Debian mirror in /etc/apt" >&2; exit 1; }
root=$(mktemp -d /var/tmp/fb-debian12.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "debootstrap bookworm from $mirror"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
	tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' - debian:12 >/dev/null
podman tag debian:12 debian:12-slim
