"""Throttle filter nodes and throttle groups on a real QEMU: limits read back with qom-get,
changed live, nodes inserted and removed under a running device, groups shared and deleted."""

import json
import os

from .conftest import run_module
from .faults import AFTER_QMP, run_hooked
from .helpers import node_names, record

# What qom-get of a group's limits reads with nothing limited (QEMU's defaults, constants).
UNLIMITED = {
    "iops-total": 0, "iops-total-max": 0, "iops-total-max-length": 1,
    "iops-read": 0, "iops-read-max": 0, "iops-read-max-length": 1,
    "iops-write": 0, "iops-write-max": 0, "iops-write-max-length": 1,
    "bps-total": 0, "bps-total-max": 0, "bps-total-max-length": 1,
    "bps-read": 0, "bps-read-max": 0, "bps-read-max-length": 1,
    "bps-write": 0, "bps-write-max": 0, "bps-write-max-length": 1,
    "iops-size": 0,
}


def limits(qmp, group):
    return qmp("qom-get", path="/objects/" + group, property="limits")


def objects(qmp):
    return {o["name"] for o in qmp("qom-list", path="/objects")}


def root_of(qmp, dev_id):
    block = next(b for b in qmp("query-block") if b.get("qdev", "").split("/")[-2:-1] == [dev_id]
                 or b.get("qdev") == dev_id)
    return block["inserted"]["node-name"], block["inserted"]["drv"]


def ok(result):
    assert not result.get("failed"), result.get("msg")
    return result


def test_limits_at_start_then_changed_live_read_back_from_the_group(vm):
    a = dict(name="a", path=vm.image("a.qcow2", fmt="qcow2"), format="qcow2",
             limits=dict(iops_total=100, iops_total_max=200, iops_total_max_length=5, bps_total=1048576))
    ro = dict(name="ro", path=vm.image("ro.raw"), mode="ro", limits=dict(bps_read=65536))
    ok(vm.run(disks=[a, ro]))
    dev, ro_dev = record(vm, "a")["id"], record(vm, "ro")["id"]
    with vm.qmp() as qmp:
        want = {"iops-total": 100, "iops-total-max": 200, "iops-total-max-length": 5, "bps-total": 1048576}
        assert limits(qmp, dev + ".tg") == dict(UNLIMITED, **want)
        assert root_of(qmp, dev) == (dev + ".thr", "throttle")
        assert root_of(qmp, ro_dev) == (ro_dev + ".thr", "throttle")
        assert next(b for b in qmp("query-block") if ro_dev in b["qdev"])["inserted"]["ro"] is True
    assert ok(vm.run(disks=[a, ro]))["changed"] is False

    # bps_total and the burst are left out: they must read 0 (and 1 s) afterwards, not keep their values.
    a2 = dict(a, limits=dict(iops_read=30, bps_write=4096))
    changed = ok(vm.run(disks=[a2, ro]))
    assert [(x["action"], x["name"]) for x in changed["actions"]] == [("throttle", "a")]
    assert [c["execute"] for c in changed["qmp_commands"] if c["execute"] == "qom-set"] == ["qom-set"]
    with vm.qmp() as qmp:
        assert limits(qmp, dev + ".tg") == dict(UNLIMITED, **{"iops-read": 30, "bps-write": 4096})
    assert ok(vm.run(disks=[a2, ro]))["changed"] is False


def test_limits_added_to_a_running_disk_and_removed_again_keep_the_device(vm):
    a = dict(name="a", path=vm.image("a.raw"))
    ok(vm.run(disks=[a]))
    dev = record(vm, "a")["id"]
    with vm.qmp() as qmp:
        assert root_of(qmp, dev) == (dev + ".fmt", "raw")
        before = qmp("qom-list", path="/machine/peripheral")

    check = ok(vm.run(check=True, disks=[dict(a, limits=dict(iops_total=50))]))
    assert [c["execute"] for c in check["qmp_commands"]] == ["object-add", "blockdev-add", "qom-set"]
    with vm.qmp() as qmp:
        assert root_of(qmp, dev) == (dev + ".fmt", "raw")  # check mode sent nothing

    gained = ok(vm.run(diff=True, disks=[dict(a, limits=dict(iops_total=50))]))
    assert gained["diff"]["after"]["devices"]["disks[a]"]["limits"] == "iops_total=50"
    with vm.qmp() as qmp:
        assert root_of(qmp, dev) == (dev + ".thr", "throttle")
        assert limits(qmp, dev + ".tg")["iops-total"] == 50
        assert qmp("qom-list", path="/machine/peripheral") == before  # same device, not re-plugged
    assert ok(vm.run(disks=[dict(a, limits=dict(iops_total=50))]))["changed"] is False

    lost = ok(vm.run(disks=[a]))
    assert [(x["action"], x["name"]) for x in lost["actions"]] == [("throttle", "a")]
    with vm.qmp() as qmp:
        assert root_of(qmp, dev) == (dev + ".fmt", "raw")
        assert dev + ".thr" not in node_names(qmp)
        assert dev + ".tg" not in objects(qmp)
        assert qmp("qom-list", path="/machine/peripheral") == before
    assert ok(vm.run(disks=[a]))["changed"] is False


def test_a_shared_group_serves_two_disks_changes_once_and_goes_with_its_last_disk(vm):
    groups = [dict(name="web", limits=dict(iops_total=20))]
    a = dict(name="a", path=vm.image("a.raw"), throttle_group="web")
    b = dict(name="b", path=vm.image("b.raw"), throttle_group="web", disk_type="scsi-hd")
    c = dict(name="c", path=vm.image("c.raw"))
    common = dict(scsi_controller_type="virtio-scsi-pci", throttle_groups=groups)
    ok(vm.run(disks=[a, b, c], **common))
    ids = {n: record(vm, n)["id"] for n in "abc"}
    with vm.qmp() as qmp:
        assert limits(qmp, "tg.web") == dict(UNLIMITED, **{"iops-total": 20})
        for name in "ab":
            assert root_of(qmp, ids[name]) == (ids[name] + ".thr", "throttle")
        assert root_of(qmp, ids["c"]) == (ids["c"] + ".fmt", "raw")
    assert ok(vm.run(disks=[a, b, c], **common))["changed"] is False

    common2 = dict(common, throttle_groups=[dict(name="web", limits=dict(bps_total=409600))])
    changed = ok(vm.run(disks=[a, b, c], **common2))
    assert [x["action"] for x in changed["actions"]] == ["set-throttle-group"]
    with vm.qmp() as qmp:
        assert limits(qmp, "tg.web") == dict(UNLIMITED, **{"bps-total": 409600})

    # a's PCI unplug needs a guest: it stays pending; a is the boot disk (allow_boot_unplug).
    ok(vm.run(disks=[b, c], unplug_timeout=10, allow_boot_unplug=True, **common2))
    gone_b = ok(vm.run(disks=[c], unplug_timeout=10, **common2))
    # scsi-hd unplugs without a guest: the group can go once b's throttle node is gone, unless a still holds it.
    with vm.qmp() as qmp:
        assert ids["b"] + ".thr" not in node_names(qmp)
        still_a = ids["a"] in {p["name"] for p in qmp("qom-list", path="/machine/peripheral")}
        assert ("tg.web" in objects(qmp)) == still_a
    assert ("delete-throttle-group" in [x["action"] for x in gone_b["actions"]]) == (not still_a)


def test_the_last_disk_of_a_group_removed_deletes_the_group(vm):
    groups = [dict(name="db", limits=dict(iops_write=10))]
    a = dict(name="a", path=vm.image("a.raw"), throttle_group="db", disk_type="scsi-hd")
    b = dict(name="b", path=vm.image("b.raw"), throttle_group="db", disk_type="scsi-hd")
    common = dict(scsi_controller_type="virtio-scsi-pci", throttle_groups=groups)
    ok(vm.run(disks=[a, b], **common))
    first = ok(vm.run(disks=[b], unplug_timeout=10, allow_boot_unplug=True, **common))  # a is the boot disk
    assert [x["action"] for x in first["actions"]] == ["detach"]
    with vm.qmp() as qmp:
        assert "tg.db" in objects(qmp)
    last = ok(vm.run(disks=[], unplug_timeout=10, **common))
    assert [x["action"] for x in last["actions"]] == ["detach", "delete-throttle-group"]
    with vm.qmp() as qmp:
        assert "tg.db" not in objects(qmp)
    assert ok(vm.run(disks=[], **common))["changed"] is False
    back = ok(vm.run(disks=[a], **common))  # a new first user brings the group back
    assert [x["action"] for x in back["actions"]] == ["add-throttle-group", "attach"]
    with vm.qmp() as qmp:
        assert limits(qmp, "tg.db")["iops-write"] == 10


def test_a_disk_moves_between_its_own_limits_and_a_shared_group_live(vm):
    groups = [dict(name="g", limits=dict(iops_total=70))]
    a = dict(name="a", path=vm.image("a.raw"), limits=dict(iops_total=5))
    ok(vm.run(disks=[a], throttle_groups=groups))
    dev = record(vm, "a")["id"]
    moved = ok(vm.run(disks=[dict(name="a", path=a["path"], throttle_group="g")], throttle_groups=groups))
    assert [x["action"] for x in moved["actions"]] == ["add-throttle-group", "throttle"]
    with vm.qmp() as qmp:
        assert root_of(qmp, dev) == (dev + ".thr", "throttle")
        assert "tg.g" in objects(qmp) and dev + ".tg" not in objects(qmp)
        # the node is on the group now: the group cannot be deleted while it is
        try:
            qmp("object-del", id="tg.g")
            raise AssertionError("tg.g was deleted while the throttle node uses it")
        except Exception as exc:  # noqa: BLE001 - QMP's error class
            # QEMU 7.2 and 10.0: "is in use"; 11.1: "... with active references"
            assert "in use" in str(exc) or "with active references" in str(exc)
    back = ok(vm.run(disks=[a], throttle_groups=groups))
    assert [x["action"] for x in back["actions"]] == ["throttle", "delete-throttle-group"]
    with vm.qmp() as qmp:
        assert "tg.g" not in objects(qmp) and limits(qmp, dev + ".tg")["iops-total"] == 5


def test_a_run_killed_after_adding_the_throttle_node_is_settled_by_the_next(vm):
    a = dict(name="a", path=vm.image("a.raw"), disk_type="scsi-hd")
    common = dict(scsi_controller_type="virtio-scsi-pci")
    ok(vm.run(disks=[a], **common))
    dev = record(vm, "a")["id"]
    args = vm.args(disks=[dict(a, limits=dict(iops_total=40))], **common)
    proc = run_hooked(args, vm.state_dir + ".kill.json", AFTER_QMP, 1, "blockdev-add", "self", "SIGKILL")
    assert proc.returncode == -9, proc.stdout + proc.stderr
    with vm.qmp() as qmp:
        assert dev + ".thr" in node_names(qmp)  # added, the drive not switched yet
        assert root_of(qmp, dev) == (dev + ".fmt", "raw")
    rerun = ok(vm.run(**args))
    assert [x["action"] for x in rerun["actions"]] == ["recover", "throttle"]
    with vm.qmp() as qmp:
        assert root_of(qmp, dev) == (dev + ".thr", "throttle")
        assert limits(qmp, dev + ".tg")["iops-total"] == 40
    with open(os.path.join(vm.state_dir, "runtime.json")) as handle:
        assert json.load(handle)["journal"] == []
    assert ok(vm.run(**args))["changed"] is False


def test_bad_limits_fail_before_qemu_naming_the_option(vm):
    a = dict(name="a", path=vm.image("a.raw"), limits=dict(iops_total=10, iops_read=5))
    result = vm.run(disks=[a])
    assert result.get("failed") and "disks[a].limits: iops_total and iops_read" in result["msg"]
    assert vm.pids() == []
    unknown = vm.run(disks=[dict(name="a", path=a["path"], throttle_group="nosuch")])
    assert unknown.get("failed") and "disks[a].throttle_group: group 'nosuch' is not declared" in unknown["msg"]


def test_qemu_device_puts_a_disk_in_a_group_qemu_instance_declared(vm):
    groups = [dict(name="web", limits=dict(iops_total=20))]
    a = dict(name="a", path=vm.image("a.raw"), throttle_group="web", disk_type="scsi-hd")
    ok(vm.run(disks=[a], scsi_controller_type="virtio-scsi-pci", throttle_groups=groups))
    b = dict(name="b", path=vm.image("b.raw"), disk_type="scsi-hd", throttle_group="web")
    added = ok(run_module("qemu_device", dict(name="t", state_dir=vm.state_dir, kind="disk", device=b)))
    assert [x["action"] for x in added["actions"]] == ["attach"]
    dev = record(vm, "b")["id"]
    with vm.qmp() as qmp:
        assert root_of(qmp, dev) == (dev + ".thr", "throttle")
    bad = run_module("qemu_device", dict(name="t", state_dir=vm.state_dir, kind="disk",
                                         device=dict(b, name="c", path=vm.image("c.raw"), throttle_group="nosuch")))
    assert bad.get("failed") and "disks[c].throttle_group: group 'nosuch'" in bad["msg"]
