"""The modules on the oldest and newest node Python the machine has, as Ansible runs them there.

ansible-core 2.19 supports managed nodes from Python 3.8 on. Each interpreter gets a venv with
the pinned qemu.qmp (what role blocklayer.qemu.hypervisor installs on a node), and a real
ansible-playbook run uses it as ansible_python_interpreter: start, hot-add (events), a stop
that waits for QEMU to exit (pidfd), then removal; the collection's bytecode cache
(module_utils/bytecode.py) is kept in the home of the test's own.
"""

import glob
import os
import subprocess
import sys

import pytest

from .conftest import ROOT

PYENV = os.path.expanduser("~/.pyenv/versions")
QMP_PIN = "qemu.qmp==0.0.6"


def _interpreters():
    """The oldest (>= 3.8) and the newest CPython of pyenv, by version."""
    found = []
    for path in glob.glob(os.path.join(PYENV, "3.*", "bin", "python3")):
        version = tuple(int(p) for p in os.path.basename(os.path.dirname(os.path.dirname(path))).split(".")[:2])
        if version >= (3, 8):
            found.append((version, path))
    found.sort()
    picked = [found[0], found[-1]] if len(found) > 1 else found
    return [pytest.param(path, id="python-%d.%d" % version) for version, path in picked] or [
        pytest.param(None, id="python-none", marks=pytest.mark.skip(
            reason="no CPython >= 3.8 in %s: the node Pythons 3.8 and 3.13 are pyenv builds of the "
                   "Debian 12 test machine; a Debian 13 machine without them has only its own 3.13, "
                   "which test_ssh_node.py runs the modules on" % PYENV))]


@pytest.fixture(params=_interpreters())
def node_python(request):
    """A venv of that interpreter with the pinned qemu.qmp, kept in build/ between runs."""
    base = request.param
    name = os.path.basename(os.path.dirname(os.path.dirname(base)))
    venv = os.path.join(ROOT, "build", "node-python", name)
    python = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, ".qemu-qmp")
    if not os.path.exists(stamp):
        subprocess.run([base, "-m", "venv", "--clear", venv], check=True, capture_output=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", QMP_PIN], check=True,
                       capture_output=True)
        with open(stamp, "w") as handle:
            handle.write(QMP_PIN + "\n")
    return python


PLAY = """
- hosts: node
  gather_facts: false
  vars:
    instance: &instance
      name: py
      state_dir: {state_dir}
      accel: tcg
      qemu_binary: {binary}
      shutdown_timeout: 1
      scsi_controller_type: virtio-scsi-pci
  tasks:
    - name: Start
      blocklayer.qemu.qemu_instance:
        <<: *instance
        disks: [{{name: a, path: {a}}}]
    - name: Hot-add a SCSI disk (waits for nothing, but sends and verifies)
      blocklayer.qemu.qemu_instance:
        <<: *instance
        disks: [{{name: a, path: {a}}}, {{name: b, path: {b}, disk_type: scsi-hd}}]
    - name: Hot-remove it (waits for DEVICE_DELETED)
      blocklayer.qemu.qemu_instance:
        <<: *instance
        disks: [{{name: a, path: {a}}}]
    - name: Read it
      blocklayer.qemu.qemu_instance_info:
        name: py
        state_dir: {state_dir}
      register: seen
    - name: It is what was declared
      ansible.builtin.assert:
        that:
          - seen.state == 'running'
          - seen.devices | selectattr('kind', 'eq', 'disk') | map(attribute='name') | list == ['a']
          - seen.drift == []
    - name: Stop (powerdown request, then quit, then wait for the process)
      blocklayer.qemu.qemu_instance:
        <<: *instance
        state: absent
"""


def test_the_modules_run_on_the_node_python(vm, tmp_path, node_python):
    play = tmp_path / "play.yml"
    play.write_text(PLAY.format(state_dir=vm.state_dir, binary=vm.binary, a=vm.image("a.raw"), b=vm.image("b.raw")))
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    node:\n      ansible_connection: local\n"
                         "      ansible_python_interpreter: %s\n" % node_python)
    home = tmp_path / "home"  # the node user's, for the collection's bytecode cache
    home.mkdir(mode=0o700)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1", HOME=str(home))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(inventory),
                           str(play)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    recap = next(line for line in proc.stdout.splitlines() if line.startswith("node "))
    assert "failed=0" in recap and "changed=4" in recap, recap
    assert vm.pids() == [] and not os.path.exists(vm.state_dir)
    tag = subprocess.run([node_python, "-c", "import sys; print(sys.implementation.cache_tag)"], capture_output=True,
                         text=True, check=True).stdout.strip()
    kept = os.listdir(home / ".cache" / "blocklayer-qemu" / "bytecode")  # and read by the tasks after the first
    assert kept and all(".%s." % tag in name for name in kept), kept
