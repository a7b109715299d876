"""Live reconcile on a real QEMU without a guest: what QEMU does on its own."""

import json
import os
import pytest

from .conftest import info_network, opened_nodes, wait_device_event
from .helpers import executed, mutating, node_names, record, runtime_of


@pytest.mark.parametrize("controller", ["lsi", "megasas", "virtio-scsi-pci"])
def test_scsi_hot_add_and_remove_complete_with_the_event(vm, controller):
    a = dict(name="a", path=vm.image("a.raw"), disk_type="scsi-hd")
    b = dict(name="b", path=vm.image("b.qcow2", fmt="qcow2"), format="qcow2", disk_type="scsi-hd")
    vm.run(scsi_controller_type=controller, disks=[a])
    added = vm.run(scsi_controller_type=controller, disks=[a, b])
    assert [(x["action"], x["name"]) for x in added["actions"]] == [("attach", "b")]
    assert mutating(added) == ["blockdev-add", "device_add"]  # the protocol node opened inside the format node
    b_rec = record(vm, "b")
    assert b_rec["hvinfo"]["scsi-id"] == 1 and b_rec["state"] == "attached"
    with vm.qmp() as qmp:
        assert qmp("qom-get", path="/machine/peripheral/" + b_rec["id"], property="scsi-id") == 1
        assert {b_rec["id"] + ".stor", b_rec["id"] + ".fmt"} <= node_names(qmp)

    removed = vm.run(scsi_controller_type=controller, disks=[a], unplug_timeout=10)
    assert [(x["action"], x["name"]) for x in removed["actions"]] == [("detach", "b")]
    assert mutating(removed) == ["device_del", "blockdev-del"]  # which closes both nodes
    assert removed["unplug_pending"] == []
    assert [d["name"] for d in runtime_of(vm)["layout"]["devices"]] == ["a"]
    with vm.qmp() as qmp:
        assert not {b_rec["id"] + ".stor", b_rec["id"] + ".fmt"} & node_names(qmp)
        assert b_rec["id"] not in {p["name"] for p in qmp("qom-list", path="/machine/peripheral")}
    assert vm.run(scsi_controller_type=controller, disks=[a])["changed"] is False


@pytest.mark.parametrize("controller", ["lsi", "megasas", "virtio-scsi-pci"])
def test_a_scsi_hot_add_onto_lsi_or_megasas_warns_that_linux_needs_a_rescan(vm, controller):
    a = dict(name="a", path=vm.image("a.raw"))
    vm.run(scsi_controller_type=controller, disks=[a])
    s = dict(name="s", path=vm.image("s.raw"), disk_type="scsi-hd")
    added = vm.run(scsi_controller_type=controller, disks=[a, s])
    assert [(x["action"], x["name"]) for x in added["actions"]] == [("attach", "scsi"), ("attach", "s")]
    with vm.qmp() as qmp:  # the hot-plug itself worked
        assert record(vm, "s")["id"] in {p["name"] for p in qmp("qom-list", path="/machine/peripheral")}
    texts = [w["event"]["msg"] if isinstance(w, dict) else w for w in added.get("warnings") or []]
    warned = [w for w in texts if "SCSI rescan" in w]
    if controller == "virtio-scsi-pci":
        assert warned == []
    else:
        (warning,) = warned
        assert "disks[s]" in warning and "scsi_controller_type: virtio-scsi-pci" in warning
        assert {"lsi": "lsi53c895a", "megasas": "megasas"}[controller] in warning


def test_scsi_disk_on_an_instance_without_controller_brings_one(vm):
    a = dict(name="a", path=vm.image("a.raw"))
    vm.run(scsi_controller_type="virtio-scsi-pci", disks=[a])
    b = dict(name="b", path=vm.image("b.raw"), disk_type="scsi-hd")
    result = vm.run(scsi_controller_type="virtio-scsi-pci", disks=[a, b])
    assert [(x["action"], x["kind"]) for x in result["actions"]] == [("attach", "controller"), ("attach", "disk")]
    assert result["devices"]["scsi"]["addr"] == "0xd"  # after disk a in slot 0xc
    with vm.qmp() as qmp:
        assert {p["name"]: p["type"] for p in qmp("qom-list", path="/machine/peripheral")}["scsi"] == \
            "child<virtio-scsi-pci>"


def test_pci_unplug_stays_pending_and_completes_after_system_reset(vm):
    a = dict(name="a", path=vm.image("a.raw"))
    b = dict(name="b", path=vm.image("b.raw"))
    vm.run(disks=[a, b])
    b_rec = record(vm, "b")
    # No guest answers the ACPI unplug request, so no DEVICE_DELETED arrives.
    first = vm.run(disks=[a], unplug_timeout=0.5)
    assert first["changed"] and first["unplug_pending"] == [b_rec["id"]]
    assert record(vm, "b")["state"] == "unplug-pending"
    with vm.qmp() as qmp:
        assert b_rec["id"] + ".fmt" in node_names(qmp)  # nodes left alone while the device may use them
    again = vm.run(disks=[a], unplug_timeout=0.5)
    assert again["changed"] is False and again["unplug_pending"] == [b_rec["id"]]

    with vm.qmp() as qmp:
        qmp("system_reset")  # a reset completes every pending unplug
        wait_device_event(qmp.mon, "DEVICE_DELETED", b_rec["id"], 30)
    done = vm.run(disks=[a])
    assert [(x["action"], x["name"]) for x in done["actions"]] == [("finish-unplug", "b")]
    assert done["unplug_pending"] == [] and [d["name"] for d in runtime_of(vm)["layout"]["devices"]] == ["a"]
    with vm.qmp() as qmp:
        assert not {b_rec["id"] + ".stor", b_rec["id"] + ".fmt"} & node_names(qmp)


def test_failed_device_add_rolls_back_its_nodes_and_the_runtime_file(vm, tmp_path):
    shared = vm.image("shared.raw")
    a = dict(name="a", path=vm.image("a.raw"))
    owner = vm.run(name="owner", state_dir=str(tmp_path / "owner"), disks=[dict(name="s", path=shared)])
    pid = vm.run(disks=[a])["pid"]
    before = runtime_of(vm)
    # raw takes its write lock only when a device attaches, so device_add is what fails.
    result = vm.run(disks=[a, dict(name="s", path=shared)])
    assert result["failed"] and 'Failed to get "write" lock' in result["msg"]
    assert "what was added was removed" in result["msg"]
    assert mutating(result) == ["blockdev-add", "device_add", "blockdev-del"]
    assert runtime_of(vm) == before
    with vm.qmp() as qmp:
        assert node_names(qmp) == opened_nodes(before["layout"]["devices"][0]["nodes"])
    assert vm.pids() == [pid] and os.path.exists("/proc/%d" % owner["pid"])


def test_qcow2_locked_elsewhere_fails_at_blockdev_add_and_rolls_back(vm, tmp_path):
    shared = vm.image("shared.qcow2", fmt="qcow2")
    vm.run(name="owner", state_dir=str(tmp_path / "owner"), disks=[dict(name="s", path=shared, format="qcow2")])
    a = dict(name="a", path=vm.image("a.raw"))
    vm.run(disks=[a])
    before = runtime_of(vm)
    result = vm.run(disks=[a, dict(name="s", path=shared, format="qcow2")])
    assert result["failed"] and "in use by another process" in result["msg"]
    assert mutating(result) == ["blockdev-add"]  # refused whole: nothing was opened
    assert runtime_of(vm) == before


def test_allocation_skips_a_slot_taken_behind_its_back(vm):
    a = dict(name="a", path=vm.image("a.raw"))
    vm.run(disks=[a])
    with vm.qmp() as qmp:  # someone adds a device by hand in the next free slot
        qmp("device_add", driver="virtio-rng-pci", id="rng", bus="pci.0", addr="0xd")
    b = dict(name="b", path=vm.image("b.raw"))
    result = vm.run(disks=[a, b])
    assert result["devices"][record(vm, "b")["id"]]["addr"] == "0xe"


def test_busy_qmp_socket_times_out_with_a_clear_message(vm):
    a = dict(name="a", path=vm.image("a.raw"))
    vm.run(disks=[a])
    with vm.qmp():
        result = vm.run(disks=[a], qmp_timeout=1)
    assert result["failed"] and "did not greet within 1.0 s" in result["msg"]
    assert "one QMP client at a time" in result["msg"]


def test_nic_hot_add_then_unplug_without_a_guest_stays_pending_and_keeps_its_netdev(vm):
    # The guest-side removal, with netdev_del, is in test_network.py.
    a = dict(name="a", path=vm.image("a.raw"))
    vm.run(disks=[a], nics=[dict(name="n1")])
    added = vm.run(disks=[a], nics=[dict(name="n1"), dict(name="n2", nic_type="e1000")])
    assert mutating(added) == ["netdev_add", "device_add"]
    n2 = record(vm, "n2")
    with vm.qmp() as qmp:
        types = {p["name"]: p["type"] for p in qmp("qom-list", path="/machine/peripheral")}
        assert types[n2["id"]] == "child<e1000>"
        assert qmp("qom-get", path="/machine/peripheral/" + n2["id"], property="mac") == n2["props"]["mac"]
        assert n2["netdev"]["id"] in info_network(qmp)
    removed = vm.run(disks=[a], nics=[dict(name="n1")], unplug_timeout=0.3)
    assert removed["unplug_pending"] == [n2["id"]]  # PCI: no guest answers the ACPI unplug
    assert "device_del" in executed(removed) and "netdev_del" not in executed(removed)
    with vm.qmp() as qmp:  # the netdev stays while the device may still use it
        assert n2["id"] in info_network(qmp) and n2["netdev"]["id"] in info_network(qmp)


@pytest.mark.parametrize("machine_type", ["pc", "q35"])
def test_cdrom_media_change_eject_and_insert(vm, machine_type):
    one, two = vm.image("one.iso", "1M"), vm.image("two.iso", "1M")
    vm.run(machine_type=machine_type, cdroms=[dict(name="cd", path=one)])
    cd = record(vm, "cd")
    changed = vm.run(machine_type=machine_type, cdroms=[dict(name="cd", path=two)])
    assert [(x["action"], x["name"]) for x in changed["actions"]] == [("change-medium", "cd")]
    assert mutating(changed) == ["blockdev-add", "blockdev-open-tray", "blockdev-remove-medium",
                                 "blockdev-insert-medium", "blockdev-close-tray", "blockdev-del"]
    assert record(vm, "cd")["hvinfo"]["drive"] == cd["id"] + ".fmt2"  # the new chain's names alternate
    with vm.qmp() as qmp:
        block = next(b for b in qmp("query-block") if b["qdev"] == cd["id"])
        assert block["inserted"]["file"] == two and block["inserted"]["ro"] is True
        assert block["tray_open"] is False
        assert cd["id"] + ".fmt" not in node_names(qmp)  # the old chain is gone
    ejected = vm.run(machine_type=machine_type, cdroms=[dict(name="cd")])
    assert ejected["changed"] and "drive" not in record(vm, "cd")["hvinfo"]
    with vm.qmp() as qmp:
        assert "inserted" not in next(b for b in qmp("query-block") if b["qdev"] == cd["id"])
    inserted = vm.run(machine_type=machine_type, cdroms=[dict(name="cd", path=one)])
    assert inserted["changed"] and record(vm, "cd")["hvinfo"]["drive"] == cd["id"] + ".fmt"
    with vm.qmp() as qmp:
        assert next(b for b in qmp("query-block") if b["qdev"] == cd["id"])["inserted"]["file"] == one
    assert vm.run(machine_type=machine_type, cdroms=[dict(name="cd", path=one)])["changed"] is False


def test_floppy_media_change_without_a_tray(vm):
    one, two = vm.image("one.img", "1440K"), vm.image("two.img", "1440K")
    vm.run(floppy=dict(path=one))
    changed = vm.run(floppy=dict(path=two))
    assert "blockdev-open-tray" not in executed(changed)
    with vm.qmp() as qmp:
        fd = next(b for b in qmp("query-block") if b["qdev"] == record(vm, "floppy")["id"])
        assert fd["inserted"]["file"] == two


def test_ide_and_floppy_hot_plug_are_refused_before_qemu_is_asked(vm):
    a = dict(name="a", path=vm.image("a.raw"))
    vm.run(disks=[a])
    for over in (dict(disks=[a, dict(name="i", path=vm.image("i.raw"), disk_type="ide")]),
                 dict(disks=[a], floppy=dict(path=vm.image("f.img", "1440K"))),
                 dict(disks=[a], cdroms=[dict(name="cd")])):
        result = vm.run(**over)
        assert result["failed"] and "cannot be hot-plugged" in result["msg"], result["msg"]
        assert "allow_restart" in result["msg"]
        assert mutating(result) == [] and result["qmp_commands"]  # QEMU was asked, nothing was sent


def test_check_mode_returns_actions_and_commands_and_sends_none(vm):
    a = dict(name="a", path=vm.image("a.raw"), disk_type="scsi-hd")
    vm.run(scsi_controller_type="virtio-scsi-pci", disks=[a])
    before = runtime_of(vm)
    b = dict(name="b", path=vm.image("b.raw"), disk_type="scsi-hd")
    planned = vm.run(check=True, diff=True, scsi_controller_type="virtio-scsi-pci", disks=[b],
                     allow_boot_unplug=True)  # a is the boot disk
    assert [(x["action"], x["name"]) for x in planned["actions"]] == [("detach", "a"), ("attach", "b")]
    assert executed(planned) == ["device_del", "blockdev-del", "blockdev-add", "device_add"]
    assert runtime_of(vm) == before
    assert list(planned["diff"]["after"]["devices"]) == ["controller scsi", "disks[b]"]
    with vm.qmp() as qmp:
        assert record(vm, "a")["id"] in {p["name"] for p in qmp("qom-list", path="/machine/peripheral")}


def test_slot_clash_in_a_root_port_rolls_back(vm):
    a = dict(name="a", path=vm.image("a.raw"))
    vm.run(machine_type="q35", disks=[a])
    with vm.qmp() as qmp:  # a device added by hand into the first spare root port
        qmp("device_add", driver="virtio-rng-pci", id="rng", bus="rp1", addr="0x0")
    before = runtime_of(vm)
    result = vm.run(machine_type="q35", disks=[a, dict(name="b", path=vm.image("b.raw"))])
    assert result["failed"] and "not available" in result["msg"] and "what was added was removed" in result["msg"]
    assert mutating(result) == ["blockdev-add", "device_add", "blockdev-del"]
    assert runtime_of(vm) == before


def test_bad_bus_in_a_stale_runtime_file_rolls_back(vm):
    a = dict(name="a", path=vm.image("a.raw"))
    vm.run(machine_type="q35", disks=[a])
    path = os.path.join(vm.state_dir, "runtime.json")
    data = runtime_of(vm)
    for controller in data["layout"]["controllers"]:  # the record names a root port QEMU does not have
        if controller["id"] == "rp1":
            controller["id"] = controller["hvinfo"]["id"] = controller["props"]["id"] = "rp9"
    with open(path, "w") as handle:
        json.dump(data, handle)
    result = vm.run(machine_type="q35", disks=[a, dict(name="b", path=vm.image("b.raw"))])
    assert result["failed"] and "Bus 'rp9' not found" in result["msg"]
    assert executed(result)[-2:] == ["device_add", "blockdev-del"]
    assert runtime_of(vm) == data


def test_several_scsi_disks_unplugged_in_one_task_are_all_cleaned_up(vm):
    disks = [dict(name=n, path=vm.image(n + ".raw"), disk_type="scsi-hd") for n in "abcd"]
    vm.run(scsi_controller_type="virtio-scsi-pci", disks=disks)
    ids = [record(vm, n)["id"] for n in "bcd"]
    removed = vm.run(scsi_controller_type="virtio-scsi-pci", disks=disks[:1], unplug_timeout=10)
    assert removed["unplug_pending"] == [] and not removed.get("failed"), removed.get("msg")
    assert sorted(mutating(removed)) == sorted(["device_del"] * 3 + ["blockdev-del"] * 3)
    assert [d["name"] for d in runtime_of(vm)["layout"]["devices"]] == ["a"]
    with vm.qmp() as qmp:
        assert not {i + suffix for i in ids for suffix in (".stor", ".fmt")} & node_names(qmp)
    assert vm.run(scsi_controller_type="virtio-scsi-pci", disks=disks[:1])["changed"] is False
