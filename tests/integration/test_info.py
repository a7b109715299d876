"""qemu_instance_info: what QEMU has now, device by device, and the drift from the runtime file."""

import os

from .conftest import run_module


def info(vm, check=False):
    return run_module("qemu_instance_info", dict(name="t", state_dir=vm.state_dir), check=check)


def test_an_instance_that_never_ran_is_absent(vm):
    result = info(vm)
    assert result["state"] == "absent" and result["devices"] == [] and result["changed"] is False
    assert not os.path.exists(vm.state_dir)  # reading creates nothing


def test_devices_are_reported_as_qemu_has_them(vm):
    root = vm.image("root.qcow2", fmt="qcow2")
    data = vm.image("data.raw")
    started = vm.run(scsi_controller_type="virtio-scsi-pci", disks=[
        dict(name="root", path=root, format="qcow2", cache="none"),
        dict(name="data", path=data, disk_type="scsi-hd", mode="ro")], nics=[dict(name="lan")])
    for check in (False, True):
        result = info(vm, check=check)
        assert result["state"] == "running" and result["status"] == "running" and result["changed"] is False
        assert result["pid"] == started["pid"] and result["qemu_version"] == started["qemu_version"]
        by_name = {d["name"]: d for d in result["devices"]}
        assert by_name["root"]["image"] == root and by_name["root"]["format"] == "qcow2"
        assert by_name["root"]["cache"]["direct"] is True and by_name["root"]["read_only"] is False
        assert by_name["root"]["bus"] == "pci.0" and by_name["root"]["addr"] == started["devices"][
            by_name["root"]["id"]]["addr"]
        assert by_name["data"]["image"] == data and by_name["data"]["read_only"] is True
        assert by_name["data"]["scsi-id"] == 0 and by_name["data"]["lun"] == 0
        assert by_name["lan"]["netdev"] == by_name["lan"]["id"] + ".net"
        assert by_name["root"]["chain"] == [root]
        assert all(d["in_qemu"] for d in result["devices"]) and result["drift"] == []
        assert result["jobs"] == [] and result["unfinished"] == [] and result["unplug_pending"] == []


def test_drift_names_a_device_removed_behind_the_collections_back(vm):
    vm.run(scsi_controller_type="virtio-scsi-pci", disks=[dict(name="a", path=vm.image("a.raw")),
                                                          dict(name="b", path=vm.image("b.raw"), disk_type="scsi-hd")])
    b_id = next(d["id"] for d in info(vm)["devices"] if d["name"] == "b")
    with vm.qmp() as qmp:
        qmp("device_del", id=b_id)  # SCSI: QEMU removes it at once, no guest needed
    result = info(vm)
    entry = next(d for d in result["devices"] if d["name"] == "b")
    assert entry["in_qemu"] is False and entry["image"] is None
    assert any(b_id in line and "not in QEMU" in line for line in result["drift"]), result["drift"]


def test_a_damaged_runtime_file_is_a_problem_not_a_traceback(vm):
    vm.run(disks=[dict(name="a", path=vm.image("a.raw"))])
    with open(os.path.join(vm.state_dir, "runtime.json"), "w") as handle:
        handle.write("[]")
    result = info(vm)
    assert not result.get("failed") and result["state"] == "running"
    assert "runtime.json" in result["problem"] and "damaged" in result["problem"]
