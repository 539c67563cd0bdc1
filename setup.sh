#!/usr/bin/env bash
# Installs everything evac and its local lab need on Debian/Ubuntu (run as root):
# system packages, then a virtualenv in .venv with evac and its test tools.
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(
    libvirt-daemon-system libvirt-clients libvirt-dev pkg-config
    qemu-system-x86 qemu-utils busybox-static
    openssh-server openssh-client iproute2 util-linux
    python3-venv python3-dev gcc
    fence-agents ipmitool stress-ng nftables openssl
    etcd-server etcd-client tcpdump
    chromium
)
# chromium: the status page's test drives Debian's headless Chromium (tests/chromium.py).
# etcd-server's postinst may start a system etcd on 127.0.0.1:2379 where systemd runs;
# the lab's members listen on the lab hosts' addresses only and never use it.

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: run as root (the lab needs network and mount namespaces)" >&2
    exit 2
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# The lab's guest kernel is fetched with apt-get download, which needs package lists.
if [ ${#missing[@]} -gt 0 ] || ! ls /var/lib/apt/lists/*Packages* >/dev/null 2>&1; then
    apt-get update -q
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
echo "setup.sh: ready (.venv/bin/evac)"
