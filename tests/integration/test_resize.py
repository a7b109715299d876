"""Disk size, share_rw and force_share on a real QEMU without a guest."""

import json
import os
import subprocess

import pytest

from .conftest import qemu_private_args, run_module
from .helpers import mutating, record, runtime_of

MiB = 1 << 20


def image_size(path):
    """The virtual size qemu-img reads from the image (-U: QEMU holds it)."""
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", path], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["virtual-size"]


def qdev_id(qdev):
    """query-block's qdev: ``/machine/peripheral/<id>/virtio-backend`` for virtio-blk, the id for SCSI."""
    return qdev.split("/")[3] if qdev.startswith("/machine/peripheral/") else qdev


def qemu_sizes(vm, dev_id):
    """What QEMU says: the size of the device's inserted node (query-block) and of its format node."""
    with vm.qmp() as qmp:
        block = next(b for b in qmp("query-block") if qdev_id(b["qdev"]) == dev_id)
        named = {n["node-name"]: n["image"]["virtual-size"] for n in qmp("query-named-block-nodes", flat=True)}
    return block["inserted"]["image"]["virtual-size"], named[dev_id + ".fmt"]


@pytest.mark.parametrize("fmt, disk_type", [("raw", "paravirtual"), ("qcow2", "scsi-hd")])
def test_a_running_disk_grows_live_and_the_rerun_changes_nothing(vm, fmt, disk_type):
    path = vm.image("a." + fmt, "16M", fmt)
    base = dict(name="a", path=path, format=fmt, disk_type=disk_type)
    vm.run(scsi_controller_type="virtio-scsi-pci", disks=[base])
    dev_id = record(vm, "a")["id"]
    grown = vm.run(scsi_controller_type="virtio-scsi-pci", disks=[dict(base, size="48M")])
    assert [(a["action"], a["name"]) for a in grown["actions"]] == [("resize", "a")]
    assert mutating(grown) == ["block_resize"]
    assert qemu_sizes(vm, dev_id) == (48 * MiB, 48 * MiB)
    assert image_size(path) == 48 * MiB
    again = vm.run(scsi_controller_type="virtio-scsi-pci", disks=[dict(base, size="48M")])
    assert again["changed"] is False and mutating(again) == []
    # The same size in bytes is the same declaration.
    assert vm.run(scsi_controller_type="virtio-scsi-pci", disks=[dict(base, size=48 * MiB)])["changed"] is False


def test_shrinking_is_refused_and_nothing_changes(vm):
    path = vm.image("a.qcow2", "32M", "qcow2")
    base = dict(name="a", path=path, format="qcow2")
    vm.run(disks=[base])
    before = runtime_of(vm)
    refused = vm.run(disks=[dict(base, size="16M")])
    assert refused["failed"]
    assert "disks[a].size: 16M is smaller than the image's 32M; shrinking is refused" in refused["msg"]
    assert runtime_of(vm) == before
    assert qemu_sizes(vm, record(vm, "a")["id"]) == (32 * MiB, 32 * MiB) and image_size(path) == 32 * MiB


def test_check_mode_plans_the_resize_from_the_image_and_changes_nothing(vm):
    path = vm.image("a.raw", "16M")
    vm.run(disks=[dict(name="a", path=path)])
    planned = vm.run(check=True, disks=[dict(name="a", path=path, size="32M")])
    assert planned["changed"] and [c["execute"] for c in planned["qmp_commands"]] == ["block_resize"]
    assert planned["qmp_commands"][0]["arguments"]["size"] == 32 * MiB
    assert image_size(path) == 16 * MiB


def test_a_size_given_at_start_grows_the_image_before_the_guest_runs(vm):
    path = vm.image("a.qcow2", "16M", "qcow2")
    started = vm.run(disks=[dict(name="a", path=path, format="qcow2", size="64M")])
    sent = [c["execute"] for c in started["qmp_commands"]]
    assert "block_resize" in sent and sent.index("block_resize") < sent.index("cont")
    assert qemu_sizes(vm, record(vm, "a")["id"]) == (64 * MiB, 64 * MiB)
    assert image_size(path) == 64 * MiB
    assert vm.run(disks=[dict(name="a", path=path, format="qcow2", size="64M")])["changed"] is False


def test_a_start_with_an_image_larger_than_declared_is_refused_before_qemu_starts(vm):
    path = vm.image("a.raw", "32M")
    refused = vm.run(disks=[dict(name="a", path=path, size="16M")])
    assert refused["failed"] and "16M is smaller than the image's 32M" in refused["msg"]
    assert vm.pids() == [] and os.path.getsize(path) == 32 * MiB


def test_a_hot_plugged_disk_grows_after_its_nodes_and_before_device_add(vm):
    a = dict(name="a", path=vm.image("a.raw"))
    vm.run(disks=[a])
    path = vm.image("b.raw", "8M")
    added = vm.run(disks=[a, dict(name="b", path=path, size="24M")])
    assert mutating(added) == ["blockdev-add", "block_resize", "device_add"]
    assert qemu_sizes(vm, record(vm, "b")["id"]) == (24 * MiB, 24 * MiB) and image_size(path) == 24 * MiB


def test_share_rw_on_raw_is_the_device_property_and_qcow2_is_refused(vm):
    raw = dict(name="a", path=vm.image("a.raw"), share_rw=True)
    plain = dict(name="b", path=vm.image("b.raw"))
    vm.run(disks=[raw, plain])
    with vm.qmp() as qmp:
        assert qmp("qom-get", path="/machine/peripheral/" + record(vm, "a")["id"], property="share-rw") is True
        assert qmp("qom-get", path="/machine/peripheral/" + record(vm, "b")["id"], property="share-rw") is False
    refused = vm.run(disks=[raw, plain, dict(name="c", path=vm.image("c.qcow2", fmt="qcow2"), format="qcow2",
                                             share_rw=True)])
    assert refused["failed"] and "disks[c]: share_rw" in refused["msg"] and "use format: raw" in refused["msg"]


def test_share_rw_lets_a_second_qemu_write_the_same_raw_image(vm, tmp_path):
    path = vm.image("shared.raw")
    disk = dict(name="s", path=path, share_rw=True)
    vm.run(disks=[disk])
    other = vm.run(name="other", state_dir=str(tmp_path / "other"), disks=[disk])
    assert other.get("failed") is not True, other.get("msg")
    # Without share_rw the second writer is refused on the write lock (the control).
    third = vm.run(name="third", state_dir=str(tmp_path / "third"), disks=[dict(name="s", path=path)])
    assert third["failed"] and '"write" lock' in third["msg"]


def hold_image_read_write(binary, path, tmp_path):
    """A QEMU started by hand that writes ``path`` (qcow2): it holds the image's write lock.
    -daemonize returns once QEMU has opened its devices."""
    private, env = qemu_private_args(binary)
    pidfile = tmp_path / "holder.pid"
    argv = [binary] + private + [
        "-daemonize", "-pidfile", str(pidfile), "-display", "none", "-nodefaults", "-S", "-machine", "pc,accel=tcg",
        "-blockdev", json.dumps({"driver": "file", "node-name": "h-stor", "filename": path}),
        "-blockdev", json.dumps({"driver": "qcow2", "node-name": "h-fmt", "file": "h-stor"}),
        "-device", "virtio-blk-pci,drive=h-fmt,id=holder"]
    subprocess.run(argv, env=env, check=True, capture_output=True, timeout=60)
    return int(pidfile.read_text())


def test_force_share_opens_read_only_an_image_another_qemu_writes(vm, tmp_path):
    path = vm.image("held.qcow2", "16M", "qcow2")
    holder = hold_image_read_write(vm.binary, path, tmp_path)
    assert os.path.exists("/proc/%d" % holder)
    ro = dict(name="ro", path=path, format="qcow2", mode="ro")
    locked = vm.run(name="locked", state_dir=str(tmp_path / "locked"), disks=[ro])
    assert locked["failed"] and 'Failed to get shared "write" lock' in locked["msg"]  # the control
    shared = vm.run(disks=[dict(ro, force_share=True)])
    assert shared.get("failed") is not True, shared.get("msg")
    dev_id = record(vm, "ro")["id"]
    with vm.qmp() as qmp:
        block = next(b for b in qmp("query-block") if qdev_id(b["qdev"]) == dev_id)
        assert block["inserted"]["ro"] is True and block["inserted"]["node-name"] == dev_id + ".fmt"
    assert os.path.exists("/proc/%d" % holder)


def test_force_share_on_a_writable_disk_is_refused(vm):
    refused = vm.run(disks=[dict(name="a", path=vm.image("a.raw"), force_share=True)])
    assert refused["failed"] and "disks[a]: force_share" in refused["msg"] and "set mode: ro" in refused["msg"]
    assert vm.pids() == []


def test_qemu_device_grows_the_disk_it_attached(vm):
    def device(**dev):
        return run_module("qemu_device", dict(name="t", state_dir=vm.state_dir, kind="disk", device=dev))

    vm.run(disks=[dict(name="a", path=vm.image("a.raw"))])
    path = vm.image("d.qcow2", "8M", "qcow2")
    added = device(name="d", path=path, format="qcow2", size="16M")
    assert mutating(added) == ["blockdev-add", "block_resize", "device_add"]
    grown = device(name="d", path=path, format="qcow2", size="32M")
    assert mutating(grown) == ["block_resize"]
    assert qemu_sizes(vm, record(vm, "d")["id"]) == (32 * MiB, 32 * MiB) and image_size(path) == 32 * MiB
    assert device(name="d", path=path, format="qcow2", size="32M")["changed"] is False
