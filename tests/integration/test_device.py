"""qemu_device: one device on a running instance, through the same planner as qemu_instance."""

import pytest

from .conftest import run_module
from .helpers import runtime_of


def device(vm, kind, state="present", check=False, **dev):
    return run_module("qemu_device", dict(name="t", state_dir=vm.state_dir, kind=kind, state=state, device=dev),
                      check=check, diff=True)


@pytest.fixture
def running(vm):
    vm.run(scsi_controller_type="virtio-scsi-pci", disks=[dict(name="a", path=vm.image("a.raw"))],
           cdroms=[dict(name="cd", path=vm.image("one.iso", "1M"))])
    return vm


def test_disk_present_then_absent(running):
    vm = running
    path = vm.image("b.raw")
    added = device(vm, "disk", name="b", path=path, disk_type="scsi-hd")
    assert added["changed"] and [a["action"] for a in added["actions"]] == ["attach", "attach"]
    assert added["device"]["driver"] == "scsi-hd" and added["device"]["bus"] == "scsi.0"
    assert device(vm, "disk", name="b", path=path, disk_type="scsi-hd")["changed"] is False
    declared = runtime_of(vm)["layout"]["declaration"]["disks"]
    assert [d["name"] for d in declared] == ["a", "b"]
    # the full declaration of qemu_instance now includes b: the same run is a no-op there too
    full = dict(scsi_controller_type="virtio-scsi-pci",
                disks=[dict(name="a", path=declared[0]["path"]), dict(name="b", path=path, disk_type="scsi-hd")],
                cdroms=[dict(name="cd", path=runtime_of(vm)["layout"]["declaration"]["cdroms"][0]["path"])])
    assert vm.run(**full)["changed"] is False
    removed = device(vm, "disk", state="absent", name="b")
    assert [a["action"] for a in removed["actions"]] == ["detach"] and removed["device"] == {}
    assert [d["name"] for d in runtime_of(vm)["layout"]["devices"] if d["kind"] == "disk"] == ["a"]
    assert device(vm, "disk", state="absent", name="b")["changed"] is False


def test_cdrom_media_change(running):
    vm = running
    two = vm.image("two.iso", "1M")
    result = device(vm, "cdrom", name="cd", path=two)
    assert [a["action"] for a in result["actions"]] == ["change-medium"]
    with vm.qmp() as qmp:
        block = next(b for b in qmp("query-block") if b["qdev"] == result["device"]["id"])
    assert block["inserted"]["file"] == two


def peripherals(qmp):
    return {p["name"]: p["type"] for p in qmp("qom-list", path="/machine/peripheral")}


def test_check_mode_plans_without_connecting_to_qemu(running):
    vm = running
    before = runtime_of(vm)
    # QEMU serves one QMP client at a time: while the test holds the socket, a module that
    # connected would wait for a greeting that never comes and fail after qmp_timeout.
    with vm.qmp() as qmp:
        devices = peripherals(qmp)
        planned = run_module("qemu_device", dict(name="t", state_dir=vm.state_dir, kind="nic", state="present",
                                                 device=dict(name="n1"), qmp_timeout=2), check=True, diff=True)
        assert not planned.get("failed"), planned.get("msg")
        assert planned["changed"] and [(a["action"], a["kind"], a["name"]) for a in planned["actions"]] == \
            [("attach", "nic", "n1")]
        assert [c["execute"] for c in planned["qmp_commands"]] == ["netdev_add", "device_add"]  # the plan
        assert peripherals(qmp) == devices
    assert runtime_of(vm) == before


def test_not_hot_pluggable_and_bad_options_fail_clearly(running):
    vm = running
    ide = device(vm, "disk", name="i", path=vm.image("i.raw"), disk_type="ide")
    assert ide["failed"] and "disks[i]: cannot be hot-plugged (IDE)" in ide["msg"]
    bad = device(vm, "disk", name="x", path=vm.image("x.raw"), cache="fast")
    assert bad["failed"] and "device: " in bad["msg"] and "cache" in bad["msg"]
    floppy = device(vm, "floppy", path=vm.image("f.img", "1440K"))
    assert floppy["failed"] and "floppy: cannot be hot-plugged" in floppy["msg"]


def test_instance_not_running_fails(vm):
    result = device(vm, "disk", name="b", path=vm.image("b.raw"))
    assert result["failed"] and "is not running" in result["msg"]
