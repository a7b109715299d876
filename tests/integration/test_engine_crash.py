"""Every kind of live action the engine applies, killed after each of its mutating commands.

One plan resizes a disk, gives another throttling, takes it from a third, changes a shared
group's limits, adds a group with a new disk in it and deletes a group whose last disk goes.
The module is SIGKILLed right after QEMU answered its n-th mutating command (the hook lives in
the test, tests/integration/faults.py); the next run must converge: an empty journal, QEMU as
declared, and a further run that changes nothing.
"""

import json
import os

from .faults import AFTER_QMP, result_of, run_hooked

M = 1024 * 1024


def _runtime(vm):
    with open(os.path.join(vm.state_dir, "runtime.json")) as handle:
        return json.load(handle)


def _root(qmp, dev_id):
    block = next(b for b in qmp("query-block") if b.get("qdev", "").split("/")[-2:-1] == [dev_id]
                 or b.get("qdev") == dev_id)
    return block["inserted"]["node-name"]


def test_killed_after_each_command_of_throttle_group_and_resize_actions_the_rerun_converges(vm):
    common = dict(scsi_controller_type="virtio-scsi-pci", unplug_timeout=5)
    a = dict(name="a", path=vm.image("a.qcow2", size="32M", fmt="qcow2"), format="qcow2", disk_type="scsi-hd")
    b = dict(name="b", path=vm.image("b.raw"), disk_type="scsi-hd")
    c = dict(name="c", path=vm.image("c.raw"), disk_type="scsi-hd", limits=dict(iops_total=50))
    e = dict(name="e", path=vm.image("e.raw"), disk_type="scsi-hd", throttle_group="old")
    d = dict(name="d", path=vm.image("d.raw"), disk_type="scsi-hd", throttle_group="new")
    groups = [dict(name="g", limits=dict(iops_total=10)), dict(name="old", limits=dict(bps_total=M))]
    before = vm.args(disks=[a, b, c, e, dict(d, name="f", path=vm.image("f.raw"), throttle_group="g")],
                     throttle_groups=groups, **common)
    after = vm.args(disks=[dict(a, size="48M"), dict(b, limits=dict(iops_read=30)), dict(c, limits=None), d,
                           dict(d, name="f", path=before["disks"][4]["path"], throttle_group="g")],
                    throttle_groups=[dict(name="g", limits=dict(iops_total=20)),
                                     dict(name="new", limits=dict(iops_write=5))], **common)

    step = 1
    while True:
        start = vm.run(**before)
        assert not start.get("failed"), start.get("msg")
        proc = run_hooked(after, vm.state_dir + ".kill.json", AFTER_QMP, step, "mutating", "self", "SIGKILL")
        if proc.returncode != -9:
            assert not result_of(proc).get("failed"), result_of(proc)["msg"]
            break  # the plan has fewer mutating commands than that: every point was tried
        rerun = vm.run(**after)
        assert not rerun.get("failed"), "killed after command %d: %s" % (step, rerun["msg"])
        data = _runtime(vm)
        assert data["journal"] == [], "killed after command %d" % step
        records = {r["name"]: r for r in data["layout"]["devices"] if r["kind"] == "disk"}
        assert sorted(records) == ["a", "b", "c", "d", "f"]
        assert sorted(g["name"] for g in data["layout"]["throttle_groups"]) == ["g", "new"]
        with vm.qmp() as qmp:
            sizes = {n["node-name"]: n["image"]["virtual-size"] for n in qmp("query-named-block-nodes", flat=True)}
            assert sizes[records["a"]["id"] + ".fmt"] == 48 * M
            assert _root(qmp, records["b"]["id"]) == records["b"]["id"] + ".thr"
            assert qmp("qom-get", path="/objects/%s.tg" % records["b"]["id"], property="limits")["iops-read"] == 30
            assert _root(qmp, records["c"]["id"]) == records["c"]["id"] + ".fmt"
            assert qmp("qom-get", path="/objects/tg.g", property="limits")["iops-total"] == 20
            assert qmp("qom-get", path="/objects/tg.new", property="limits")["iops-write"] == 5
            objects = {o["name"] for o in qmp("qom-list", path="/objects")}
            assert "tg.old" not in objects and records["c"]["id"] + ".tg" not in objects
        assert vm.run(**after)["changed"] is False, "killed after command %d" % step
        assert vm.run(state="absent")["changed"]
        step += 1
    # resize, the own group and node and drive switch of b, c's switch back, node and group
    # deletes, the limits of g, the new group, d's attach, e's unplug: every one was a kill point.
    assert step > 12
