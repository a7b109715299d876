#!/usr/bin/env bash
# Runs `ansible-test sanity` on the collection, offline apart from PyPI, without Docker.
#
# ansible-test needs a real .../ansible_collections/blocklayer/qemu path (the symlinked view in
# build/ is rejected), so the tracked and untracked-but-not-ignored files are copied into a
# temporary tree that is removed on exit. ansible-test bootstraps pip into every venv it creates
# from a get-pip script on a host that is unreachable here; its cache file is pre-seeded with a
# stand-in that uses ensurepip and then pip (which reaches PyPI). The sanity venvs are cached by
# ansible-test under ~/.ansible/test, so only the first run installs anything.
#
# Usage: tools/sanity.sh [extra ansible-test sanity options, e.g. --test pylint]
# Environment: SANITY_PYTHON (default: the .venv's Python version, e.g. 3.11 on Debian 12 and
#              3.13 on Debian 13), SANITY_MODE (--local or --venv, default --local),
#              SANITY_KEEP=1 keeps the temporary tree (its path is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
mode=${SANITY_MODE:---local}
bin=$root/.venv/bin

if [ ! -x "$bin/ansible-test" ]; then
  echo "sanity: $bin/ansible-test is missing; run tools/setup.sh (make setup) first" >&2
  exit 2
fi
# --local runs the tests with the venv's own Python: name that version, whatever the release.
python_version=${SANITY_PYTHON:-$("$bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')}

# ansible-test's shellcheck test passes silently when shellcheck is missing: insist on it.
if ! command -v shellcheck >/dev/null; then
  echo "sanity: shellcheck is missing (apt-get install shellcheck; tools/setup.sh installs it)" >&2
  exit 2
fi

namespace=$("$bin/python" -c 'import yaml; print(yaml.safe_load(open("galaxy.yml"))["namespace"])')
name=$("$bin/python" -c 'import yaml; print(yaml.safe_load(open("galaxy.yml"))["name"])')

# --- pre-seed ansible-test's get-pip cache -------------------------------------------------
# ansible_test/_util/target/setup/requirements.py:bootstrap() looks for
# ~/.ansible/test/cache/get_pip_<pip version with "." -> "_">.py, the version coming from
# ansible_test._internal.python_requirements.get_venv_packages().
get_pip=$("$bin/python" - "$python_version" <<'PY'
import os, sys, types
from ansible_test._internal.python_requirements import get_venv_packages
version = get_venv_packages(types.SimpleNamespace(version=sys.argv[1]))["pip"]
print(os.path.expanduser("~/.ansible/test/cache/get_pip_%s.py" % version.replace(".", "_")))
PY
)
stand_in=$(cat <<'PY'
"""Offline stand-in for get-pip.py, written by tools/sanity.sh (blocklayer.qemu).

ansible-test runs this (via runpy, with sys.argv[1:] = pip install options) in a fresh venv
that was created without pip. Bootstrap pip from the interpreter's bundled wheel, then let
that pip install the requested packages (e.g. pip==24.2) from the package index.
"""
import os
import subprocess
import sys

DROP = ("--no-setuptools", "--no-wheel")  # get-pip.py options that pip install does not know
args = [a for a in sys.argv[1:] if a not in DROP]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"],
                      stdout=subprocess.DEVNULL)
env = dict(os.environ)
env.pop("PIP_CONFIG_FILE", None)  # ensurepip sets it to os.devnull; keep the machine's pip config
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args, env=env))
PY
)
mkdir -p "$(dirname "$get_pip")"
if [ "$(cat "$get_pip" 2>/dev/null)" != "$stand_in" ]; then
  printf '%s\n' "$stand_in" > "$get_pip.tmp"
  mv "$get_pip.tmp" "$get_pip"
fi

# --- temporary copy of the collection ------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/blocklayer-qemu-sanity.XXXXXX")
if [ "${SANITY_KEEP:-0}" = 1 ]; then
  echo "sanity: keeping $tmp"
else
  trap 'rm -rf "$tmp"' EXIT
fi
dest=$tmp/ansible_collections/$namespace/$name
mkdir -p "$dest"
git ls-files -z -co --exclude-standard \
  | while IFS= read -r -d '' f; do
      # tracked files deleted from the work tree are still listed by --cached
      if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
    done \
  | tar --null --no-recursion -T - -cf - \
  | tar -C "$dest" -xf -
git -C "$dest" init -q

# --- run ----------------------------------------------------------------------------------
cd "$dest"
export PATH="$bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH=$tmp   # never the checkout's build/ view or ~/.ansible
start=$SECONDS
status=0
"$bin/ansible-test" sanity "$mode" --python "$python_version" --color no "$@" || status=$?
echo "sanity: ansible-test finished in $((SECONDS - start)) s with exit code $status"
if [ "$status" -ne 0 ]; then
  echo "sanity: FAILED. Failures (paths are relative to the collection root):" >&2
  # ansible-test writes one file per failing test in tests/output/bot; show them in one place.
  if [ -d tests/output/bot ]; then
    for f in tests/output/bot/ansible-test-sanity-*.json; do
      [ -e "$f" ] || continue
      "$bin/python" - "$f" <<'PY' >&2
import json, sys
data = json.load(open(sys.argv[1]))
for r in data.get("results", []):
    print("--- " + r.get("message", "").strip())
    if r.get("output"):
        print(r["output"].rstrip())
PY
    done
  fi
fi
exit "$status"
