"""Dedicated iothreads on a real QEMU, checked through QOM (qom-get of the device's iothread
link, qom-list /objects), on every QEMU generation the project provides."""

import json
import os
import uuid

import pytest

from .conftest import BOOT, GUEST, GuestAgent
from .faults import AFTER_QMP, run_hooked

UUID_A = "0b1c2d3e-4f50-4612-8734-95a6b7c8d9e0"
# The collection's naming rule (docs/design.md "Names"), written out here: <kind>-<three UUID groups>.io
ID_A = "disk-0b1c2d3e-4f50-4612"
IO_A = ID_A + ".io"


def objects(qmp):
    return {p["name"]: p["type"] for p in qmp("qom-list", path="/objects")}


def link(qmp, dev_id):
    return qmp("qom-get", path="/machine/peripheral/" + dev_id, property="iothread")


def test_disk_and_virtio_scsi_controller_start_in_their_own_iothreads(vm):
    disks = [dict(name="a", uuid=UUID_A, path=vm.image("a.raw"), iothread=True),
             dict(name="b", path=vm.image("b.raw")),
             dict(name="s", path=vm.image("s.raw"), disk_type="scsi-hd")]
    result = vm.run(disks=disks, scsi_controller_type="virtio-scsi-pci", scsi_iothread=True)
    assert not result.get("failed"), result.get("msg")
    with vm.qmp() as qmp:
        found = objects(qmp)
        assert found[IO_A] == "child<iothread>" and found["scsi.io"] == "child<iothread>"
        assert link(qmp, ID_A) == "/objects/" + IO_A
        assert link(qmp, "scsi") == "/objects/scsi.io"
        plain = next(i for i, h in result["devices"].items() if h["driver"] == "virtio-blk-pci" and i != ID_A)
        assert link(qmp, plain) == ""  # no iothread: QEMU's main loop
        assert sorted(n for n in found if n.endswith(".io")) == sorted([IO_A, "scsi.io"])
    argv = result["argv"]
    objs = [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-object"]
    assert {"qom-type": "iothread", "id": IO_A} in objs


def test_hot_plugged_disk_gets_its_iothread_and_a_restart_is_needed_to_change_it(vm):
    root = [dict(name="root", path=vm.image("root.raw"))]
    vm.run(disks=root)
    hot = dict(name="a", uuid=UUID_A, path=vm.image("a.raw"), iothread=True)
    with vm.record_qmp() as wire:
        added = vm.run(disks=root + [hot])
    assert added["changed"] and not added.get("failed"), added.get("msg")
    # on the wire: the iothread exists before the device that names it
    assert wire.sent.index("object-add") < wire.sent.index("device_add")
    with vm.qmp() as qmp:
        assert objects(qmp)[IO_A] == "child<iothread>"
        assert link(qmp, ID_A) == "/objects/" + IO_A
    # changing iothread of the attached disk: refused without allow_restart, nothing sent
    refused = vm.run(disks=root + [dict(hot, iothread=False)])
    assert refused["failed"] and "iothread" in refused["msg"] and "allow_restart" in refused["msg"]
    restarted = vm.run(disks=root + [dict(hot, iothread=False)], allow_restart=True)
    assert not restarted.get("failed"), restarted.get("msg")
    with vm.qmp() as qmp:
        assert IO_A not in objects(qmp)
        assert link(qmp, ID_A) == ""


def test_an_iothread_a_killed_attach_left_is_deleted_by_the_next_run(vm):
    root = [dict(name="root", path=vm.image("root.raw"))]
    hot = dict(name="a", uuid=UUID_A, path=vm.image("a.raw"), iothread=True)
    vm.run(disks=root)
    # The module is SIGKILLed right after its first change, the object-add, was answered.
    killed = run_hooked(vm.args(disks=root + [hot]), vm.state_dir + ".kill.json", AFTER_QMP, 1, "object-add",
                        "self", "SIGKILL")
    assert killed.returncode == -9
    path = os.path.join(vm.state_dir, "runtime.json")
    with open(path, encoding="utf-8") as handle:
        assert [(e["action"], e["creates"]["objects"]) for e in json.load(handle)["journal"]] == [("attach", [IO_A])]
    with vm.qmp() as qmp:
        assert IO_A in objects(qmp)
    settled = vm.run(disks=root)
    assert not settled.get("failed"), settled.get("msg")
    assert any(a["action"] == "recover" for a in settled["actions"])
    with vm.qmp() as qmp:
        assert IO_A not in objects(qmp)
    with open(path, encoding="utf-8") as handle:
        assert json.load(handle)["journal"] == []
    assert vm.run(disks=root)["changed"] is False


@pytest.mark.guest
@pytest.mark.skipif(not os.path.exists(os.path.join(GUEST, "vmlinux")), reason="the tiny guest is not built (make guest)")
def test_unplugged_disk_takes_its_iothread_with_it(vm):
    boot = dict(BOOT, unplug_timeout=60)
    other = dict(name="b", uuid=str(uuid.uuid4()), path=vm.image("b.raw"), iothread=True)
    hot = dict(name="a", uuid=UUID_A, path=vm.image("a.raw"), iothread=True, serial="IOA")
    vm.run(disks=[other], **boot)
    with GuestAgent(os.path.join(vm.state_dir, "agent.sock"), timeout=90) as ga:
        ga.wait_ready()
        assert not vm.run(disks=[other, hot], **boot).get("failed")
        ga.wait_disk("vdb")
        assert any(d["serial"] == "IOA" for d in ga.disks())
        removed = vm.run(disks=[other], **boot)
        assert removed["unplug_pending"] == [] and not removed.get("failed"), removed.get("msg")
        ga.wait_disk("vdb", present=False)
    with vm.qmp() as qmp:
        found = objects(qmp)
        assert IO_A not in found
        other_id = "disk-" + "-".join(other["uuid"].split("-")[:3])
        assert found[other_id + ".io"] == "child<iothread>"  # the other disk keeps its own
        assert link(qmp, other_id) == "/objects/" + other_id + ".io"
