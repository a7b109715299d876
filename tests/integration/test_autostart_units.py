"""The hypervisor role's autostart part, run against localhost with every path under a temporary
root (as ``systemctl --root`` sees an image): without systemd as PID 1.

The rendered units pass ``systemd-analyze verify``; the role's symlinks are exactly those
``systemctl --root=<dir> enable`` makes for the same units, and ``systemctl --root`` calls the
units enabled; a second role run changes nothing; the installed entry point runs with the
venv's Python from the code the role copied (no checkout on its path).
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from .conftest import ROOT, play_recap

UNITS = ("blocklayer-qemu-guests.service", "blocklayer-qemu-check.service", "blocklayer-qemu-check.timer")
ENABLED = {"multi-user.target.wants/blocklayer-qemu-guests.service", "timers.target.wants/blocklayer-qemu-check.timer"}


def _links(root):
    """{path below etc/systemd/system: link target} of every symlink there."""
    base = os.path.join(root, "etc", "systemd", "system")
    found = {}
    for where, _dirs, files in os.walk(base):
        for name in files:
            path = os.path.join(where, name)
            if os.path.islink(path):
                found[os.path.relpath(path, base)] = os.readlink(path)
    return found


def _playbook(path, base):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, "build", "collections"),
               ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                           "-c", "local", "-e", "ansible_python_interpreter=" + sys.executable, path],
                          cwd=base, env=env, capture_output=True, text=True, timeout=300, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    return play_recap(output, "localhost")


@pytest.fixture
def node(tmp_path):
    for tool in ("systemd-analyze", "systemctl"):
        if not shutil.which(tool):
            pytest.skip("%s is missing (apt package systemd)" % tool)
    root = tmp_path / "root"  # an empty root: the role makes the directories it needs
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "tasks": [{
        "ansible.builtin.include_role": {"name": "blocklayer.qemu.hypervisor", "tasks_from": "autostart"},
        "vars": {"hypervisor_venv": os.path.dirname(os.path.dirname(sys.executable)),
                 "hypervisor_autostart_roots": [str(tmp_path / "vms")],
                 "hypervisor_autostart_lib": str(root / "opt" / "lib"),
                 "hypervisor_autostart_script": str(root / "usr" / "local" / "sbin" / "blocklayer-qemu-guests"),
                 "hypervisor_autostart_systemd_root": str(root)}}]}]))
    return tmp_path, root, str(playbook)


def test_the_role_installs_verified_units_enabled_as_systemctl_does_idempotently(node):
    base, root, playbook = node
    first = _playbook(playbook, base)
    assert first["failed"] == 0 and first["changed"] > 0
    units = [str(root / "etc" / "systemd" / "system" / u) for u in UNITS]
    verify = subprocess.run(["systemd-analyze", "verify"] + units, capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # systemctl enable, offline, on a copy of the same units: the same symlinks.
    fresh = base / "fresh"
    (fresh / "etc" / "systemd" / "system").mkdir(parents=True)
    for unit in units:
        shutil.copy(unit, fresh / "etc" / "systemd" / "system")
    subprocess.run(["systemctl", "--root=%s" % fresh, "enable", UNITS[0], UNITS[2]], capture_output=True, check=True)
    assert set(_links(fresh)) == ENABLED
    assert _links(root) == _links(fresh)
    enabled = subprocess.run(["systemctl", "--root=%s" % root, "is-enabled", UNITS[0], UNITS[2]],
                             capture_output=True, text=True, check=False)
    assert enabled.stdout.split() == ["enabled", "enabled"], enabled.stdout + enabled.stderr

    again = _playbook(playbook, base)
    assert again["failed"] == 0 and again["changed"] == 0, again

    # The entry point runs from what the role installed: an empty root, nothing to do.
    script = str(root / "usr" / "local" / "sbin" / "blocklayer-qemu-guests")
    boot = base / "boot_id"
    boot.write_text("boot-A\n")
    (base / "vms").mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["BLOCKLAYER_QEMU_BOOT_ID_FILE"] = str(boot)
    proc = subprocess.run([script, "check", "--root", str(base / "vms"), "--json"], cwd="/", env=env,
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and json.loads(proc.stdout) == [], proc.stdout + proc.stderr
    venv_python = os.path.join(os.path.dirname(os.path.dirname(sys.executable)), "bin", "python")
    with open(script, encoding="utf-8") as handle:
        assert handle.readline() == "#!%s\n" % venv_python
