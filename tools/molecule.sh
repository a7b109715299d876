#!/usr/bin/env bash
# Runs the molecule `default` scenario (extensions/molecule/default) against the checkout:
# destroy, syntax, converge (role blocklayer.qemu.vm boots the tiny guest under TCG),
# idempotence, verify (through the guest agent), destroy. No Docker, no Galaxy, no internet.
#
#   bash tools/molecule.sh                 # molecule test
#   bash tools/molecule.sh converge        # any other molecule subcommand, e.g. to debug:
#   bash tools/molecule.sh verify          #   converge, verify, destroy
#
# Needs tools/setup.sh (the .venv and the build/collections view) and the guest (make guest);
# the Makefile's `molecule` target runs both first.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

[ -x .venv/bin/molecule ] || { echo "molecule.sh: no .venv/bin/molecule: run tools/setup.sh" >&2; exit 1; }
view=build/collections/ansible_collections/blocklayer/qemu
[ -L "$view" ] || { echo "molecule.sh: no collection view $view: run tools/setup.sh" >&2; exit 1; }
for f in vmlinux initramfs.gz data.iso; do
  [ -f "build/guest/$f" ] || { echo "molecule.sh: no build/guest/$f: run make guest" >&2; exit 1; }
done

export PATH="$root/.venv/bin:$PATH"
# Molecule runs from the collection root (galaxy.yml there: collection mode, scenarios in
# extensions/molecule/). It writes its own ansible.cfg for the playbooks it runs, so the
# collection path is given again in molecule.yml; these cover ansible-galaxy below and
# anything molecule runs outside the scenario's ansible.cfg.
export MOLECULE_PROJECT_DIRECTORY="$root"
export ANSIBLE_CONFIG="$root/ansible.cfg"
# Only the checkout's view: not ~/.ansible/collections, not site-packages' ansible_collections.
export ANSIBLE_COLLECTIONS_PATH="$root/build/collections"
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
# Offline: molecule.yml turns off the dependency step (ansible-galaxy) and the prerun (which
# would install a copy of the collection and galaxy.yml's dependencies); nothing else in the
# sequence goes to the network.

# blocklayer.qemu must resolve to this checkout and to nothing else.
found=$(ansible-galaxy collection list blocklayer.qemu --format json 2>/dev/null |
  python3 -c 'import json, sys; print(" ".join(json.load(sys.stdin)))')
if [ "$found" != "$root/build/collections/ansible_collections" ]; then
  echo "molecule.sh: blocklayer.qemu resolves to '$found', not the checkout's build/collections" >&2
  exit 1
fi

if [ $# -eq 0 ]; then
  set -- test
fi
exec molecule "$1" --scenario-name default "${@:2}"
