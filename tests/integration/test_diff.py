"""--diff in real runs and in check mode: before is the state before the task, after the state
after it, per device by its declared name, with sizes and chains of images."""

from .conftest import run_module


def ok(result):
    assert not result.get("failed"), result.get("msg")
    return result


def test_a_real_hot_add_and_unplug_show_the_device_come_and_go(vm):
    # SCSI disks on virtio-scsi: QEMU completes their unplug without a guest.
    a = dict(name="a", path=vm.image("a.raw"))
    b = dict(name="b", path=vm.image("b.raw"), size="32M", disk_type="scsi-hd")
    ok(vm.run(disks=[a], scsi_controller_type="virtio-scsi-pci"))
    added = ok(vm.run(diff=True, disks=[a, b], scsi_controller_type="virtio-scsi-pci"))
    assert "disks[b]" not in added["diff"]["before"]["devices"]
    assert added["diff"]["after"]["devices"]["disks[b]"]["size"] == 32 * 1024 * 1024
    assert added["diff"]["before"]["devices"]["disks[a]"] == added["diff"]["after"]["devices"]["disks[a]"]
    removed = ok(vm.run(diff=True, disks=[a], scsi_controller_type="virtio-scsi-pci"))
    assert "disks[b]" in removed["diff"]["before"]["devices"] and "disks[b]" not in removed["diff"]["after"]["devices"]


def test_a_real_resize_shows_the_new_size(vm):
    a = dict(name="a", path=vm.image("a.qcow2", size="32M", fmt="qcow2"), format="qcow2")
    ok(vm.run(disks=[a]))
    grown = ok(vm.run(diff=True, disks=[dict(a, size="48M")]))
    assert "size" not in grown["diff"]["before"]["devices"]["disks[a]"]
    assert grown["diff"]["after"]["devices"]["disks[a]"]["size"] == 48 * 1024 * 1024


def test_a_snapshot_shows_its_chain_in_check_mode_and_in_the_real_run(vm):
    base = vm.image("a.qcow2", fmt="qcow2")
    overlay = str(vm.images / "ov1.qcow2")
    ok(vm.run(disks=[dict(name="a", path=base, format="qcow2")]))
    args = dict(name="t", state_dir=vm.state_dir, disk="a", snapshot=dict(path=overlay))
    want = {"disks[a]": ["%s (qcow2)" % base, "%s (qcow2)" % overlay]}
    planned = ok(run_module("qemu_blockdev", args, check=True, diff=True))
    assert planned["diff"] == {"before": {"disks[a]": ["%s (qcow2)" % base]}, "after": want}
    done = ok(run_module("qemu_blockdev", args, diff=True))
    assert done["diff"]["after"] == want
    after = ok(vm.run(diff=True, disks=[dict(name="a", path=base, format="qcow2")]))
    assert after["changed"] is False
    assert after["diff"]["after"]["devices"]["disks[a]"]["chain"] == want["disks[a]"]


def test_a_real_medium_change_shows_the_old_and_the_new_medium(vm):
    a = dict(name="a", path=vm.image("a.raw"))
    one, two = vm.image("one.iso", size="1M"), vm.image("two.iso", size="1M")
    ok(vm.run(disks=[a], cdroms=[dict(name="cd", path=one)]))
    changed = ok(vm.run(diff=True, disks=[a], cdroms=[dict(name="cd", path=two)]))
    assert [x["action"] for x in changed["actions"]] == ["change-medium"]
    assert changed["diff"]["before"]["devices"]["cdroms[cd]"]["path"] == one
    assert changed["diff"]["after"]["devices"]["cdroms[cd]"]["path"] == two
