"""qemu_instance and qemu_device on one instance in one play converge once, then change nothing."""

import json
import os
import subprocess
import sys

from .conftest import ROOT, run_module
from .helpers import task_status

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: The instance with its declared disk
      blocklayer.qemu.qemu_instance:
        name: shared
        state_dir: {state_dir}
        accel: tcg
        qemu_binary: {binary}
        shutdown_timeout: 0
        disks:
          - name: root
            path: {root}
    - name: A disk added by another role
      blocklayer.qemu.qemu_device:
        name: shared
        state_dir: {state_dir}
        kind: disk
        device:
          name: extra
          path: {extra}
          disk_type: scsi-hd
{more}"""

INFO = """    - name: What the instance has
      blocklayer.qemu.qemu_instance_info:
        name: shared
        state_dir: {state_dir}
      register: seen
    - name: Keep it for the test
      ansible.builtin.copy:
        content: "{{{{ seen | to_json }}}}"
        dest: {out}
        mode: "0600"
"""


def play(vm, tmp_path, text):
    path = tmp_path / "play.yml"
    path.write_text(text)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                         "      ansible_python_interpreter: %s\n" % sys.executable)
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="default",
               ANSIBLE_NOCOLOR="1")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(inventory),
                           str(path)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    recap = next(line for line in proc.stdout.splitlines() if line.startswith("localhost"))
    return recap, task_status(proc.stdout)


def test_instance_and_device_modules_in_one_play_converge_then_report_no_change(vm, tmp_path):
    fields = dict(state_dir=vm.state_dir, binary=vm.binary, root=vm.image("root.raw"), extra=vm.image("extra.raw"),
                  more="")
    first, status = play(vm, tmp_path, PLAY.format(**fields))
    assert "changed=2" in first, first
    assert status == {"The instance with its declared disk": "changed", "A disk added by another role": "changed"}
    out = tmp_path / "seen.json"
    fields["more"] = INFO.format(state_dir=vm.state_dir, out=out)
    status = play(vm, tmp_path, PLAY.format(**fields))[1]
    # The instance keeps the disk qemu_device added, and qemu_device finds it there.
    assert status["The instance with its declared disk"] == "ok" and status["A disk added by another role"] == "ok"
    assert status["What the instance has"] == "ok"
    seen = json.loads(out.read_text())
    assert sorted(d["name"] for d in seen["devices"] if d["kind"] == "disk") == ["extra", "root"]
    assert seen["drift"] == [] and seen["state"] == "running"
    assert {d["name"]: d["in_qemu"] for d in seen["devices"] if d["kind"] == "disk"} == {"extra": True, "root": True}


def test_purge_undeclared_removes_what_qemu_device_added(vm):
    root = dict(name="root", path=vm.image("root.raw"))
    extra = dict(name="extra", path=vm.image("extra.raw"), disk_type="scsi-hd")
    vm.run(disks=[root])
    added = run_module("qemu_device", dict(name="t", state_dir=vm.state_dir, kind="disk", device=extra))
    assert added["changed"]
    kept = vm.run(disks=[root])
    assert kept["changed"] is False and len([d for d in kept["devices"] if d.startswith("disk-")]) == 2
    purged = vm.run(disks=[root], purge_undeclared=True)
    assert [(a["action"], a["name"]) for a in purged["actions"]] == [("detach", "extra")]
