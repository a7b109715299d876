#!/usr/bin/env bash
# Installs everything the project needs on a Debian 12 (bookworm) or 13 (trixie) machine
# (run as root):
# apt packages, a .venv with the pinned Python packages, and a collection view so that
# blocklayer.qemu resolves by FQCN without a Galaxy server. Safe to run again: each step
# is skipped when it is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

apt_packages=(make qemu-system-x86 qemu-utils qemu-block-extra ipxe-qemu genisoimage cpio busybox-static
              shellcheck python3 python3-venv python3-packaging openssh-server zstd iproute2)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The venv is rebuilt only when requirements.txt changes.
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the Python packages into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi

# ansible.cfg points collections_path at this view of the checkout.
view=build/collections/ansible_collections/blocklayer
mkdir -p "$view"
[ -L "$view/qemu" ] || ln -sfn "$root" "$view/qemu"
echo "setup: ready"
