#!/usr/bin/env bash
# Install the command-line tools the integration tests drive (curl, nc, ping,
# ip, nft, tcpdump, tshark, ab) and the SYN flooder of `make flood` (hping3).  Quiet and apt-free when everything is
# already present, so `make test` can call it on every run.
set -euo pipefail

# tool -> Debian package that provides it
declare -A PKG=(
    [curl]=curl
    [nc]=netcat-openbsd
    [ping]=iputils-ping
    [ip]=iproute2
    [nft]=nftables
    [tcpdump]=tcpdump
    [tshark]=tshark
    [ab]=apache2-utils
    [hping3]=hping3
)

missing=()
for tool in curl nc ping ip nft tcpdump tshark ab hping3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        missing+=("${PKG[$tool]}")
    fi
done

# The tests use `nc -N`, which only the OpenBSD netcat has.
if command -v nc >/dev/null 2>&1 && ! nc -h 2>&1 | grep -qi openbsd; then
    missing+=(netcat-openbsd)
fi

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "missing tools; as root run: apt-get install -y ${missing[*]}" >&2
    exit 1
fi

# Wait (bounded) for a concurrent apt/dpkg run instead of failing on its lock.
APT_OPTS=(-o DPkg::Lock::Timeout=600)
apt-get "${APT_OPTS[@]}" update -q
DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y -q "${missing[@]}"
