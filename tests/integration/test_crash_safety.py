"""A module killed after any QMP command leaves a state the next run converges from.

The module process really dies (SIGKILL) right after QEMU answered the chosen command; the
hook that counts commands lives in this test, not in the collection. After the rerun, QEMU,
the runtime file and the declaration must agree, with nothing leaked in the collection's own
name space.
"""

import json
import os

import pytest

from .conftest import info_network
from .faults import AT_SAVE, result_of, run_hooked
from .helpers import assert_converged, run_killed, runtime_of


def test_killed_after_each_command_of_a_multi_disk_plan_the_rerun_converges(vm):
    iso1, iso2 = vm.image("one.iso", size="1M"), vm.image("two.iso", size="1M")
    a = dict(name="a", path=vm.image("a.raw"))
    b = dict(name="b", path=vm.image("b.raw"), disk_type="scsi-hd")
    c = dict(name="c", path=vm.image("c.qcow2", fmt="qcow2"), format="qcow2", disk_type="scsi-hd")
    d = dict(name="d", path=vm.image("d.raw"))
    common = dict(scsi_controller_type="virtio-scsi-pci", unplug_timeout=5)
    before = vm.args(disks=[a, b], cdroms=[dict(name="cd", path=iso1)], **common)
    after = vm.args(disks=[a, c, d], cdroms=[dict(name="cd", path=iso2)], **common)

    step = 1
    while True:
        start = vm.run(**before)
        assert start["changed"] and not start.get("failed"), start.get("msg")
        if not run_killed(vm, after, step):
            break  # the plan has fewer commands than that: every point was tried
        rerun = vm.run(**after)
        assert not rerun.get("failed"), "killed after command %d: %s" % (step, rerun["msg"])
        assert_converged(vm, ["a", "c", "d"], iso2)
        assert vm.run(**after)["changed"] is False, "killed after command %d" % step
        assert vm.run(state="absent")["changed"]
        step += 1
    assert step > 12  # detach b, change the medium, attach c and d: every command was a kill point


def test_killed_in_the_clean_up_of_a_multi_disk_unplug_the_rerun_converges(vm):
    # SCSI disks: QEMU reports them all gone at once, then their 3 blockdev-dels follow (one a
    # disk: its protocol node goes with its format node).
    cd = dict(name="cd", path=vm.image("cd.iso", size="1M"))
    a = dict(name="a", path=vm.image("a.raw"))
    scsi = [dict(name=n, path=vm.image(n + ".raw"), disk_type="scsi-hd") for n in ("b", "c", "d")]
    common = dict(scsi_controller_type="virtio-scsi-pci", unplug_timeout=5, cdroms=[cd])
    before, after = vm.args(disks=[a] + scsi, **common), vm.args(disks=[a], **common)

    step = 1
    while True:
        start = vm.run(**before)
        assert start["changed"] and not start.get("failed"), start.get("msg")
        if not run_killed(vm, after, step):
            break
        rerun = vm.run(**after)
        assert not rerun.get("failed"), "killed after command %d: %s" % (step, rerun["msg"])
        assert_converged(vm, ["a"], cd["path"])
        assert vm.run(**after)["changed"] is False, "killed after command %d" % step
        assert vm.run(state="absent")["changed"]
        step += 1
    assert step > 6  # 3 device_dels and 3 blockdev-dels: every one was a kill point


def test_killed_while_qemu_is_paused_at_start_the_rerun_lets_it_run(vm):
    args = vm.args(disks=[dict(name="a", path=vm.image("a.raw"))])
    assert run_killed(vm, args, 1, which="any")  # after query-status: QEMU paused, not yet verified
    pid = vm.pids()
    with vm.qmp() as qmp:
        assert qmp("query-status")["status"] == "prelaunch"
    rerun = vm.run(**args)
    assert rerun["changed"] and "finish-start" in [a["action"] for a in rerun["actions"]]
    assert vm.pids() == pid  # the same QEMU, not a second one
    with vm.qmp() as qmp:
        assert qmp("query-status")["status"] == "running"
    assert vm.run(**args)["changed"] is False


@pytest.mark.parametrize("what", ["pidfile lost", "pidfile garbage"])
def test_a_qemu_without_trustworthy_pidfile_is_named_never_duplicated(vm, what):
    args = vm.args(disks=[dict(name="a", path=vm.image("a.raw"))])
    first = vm.run(**args)
    data = runtime_of(vm)
    data.pop("version")  # as a format-1 file, whose only pid record was the pidfile
    pidfile = os.path.join(vm.state_dir, "qemu.pid")
    if what == "pidfile lost":
        os.unlink(pidfile)
    else:
        with open(pidfile, "w") as handle:
            handle.write("garbage\n")
    with open(os.path.join(vm.state_dir, "runtime.json"), "w") as handle:
        json.dump(dict(data["layout"], version=1, qemu={"binary": data["host"]["binary"]},
                       argv=data["host"]["argv"], accel=data["host"]["accel"]), handle)
    again = vm.run(**args)
    assert again["failed"] and "runs as pid %d" % first["pid"] in again["msg"]
    assert vm.pids() == [first["pid"]]
    assert os.path.exists(os.path.join(vm.state_dir, "qmp.sock"))
    stopped = vm.run(state="stopped")
    assert stopped["changed"] and vm.pids() == []


def test_a_kill_mid_hot_remove_then_the_old_declaration_puts_the_disk_back(vm):
    a = dict(name="a", path=vm.image("a.raw"))
    b = dict(name="b", path=vm.image("b.raw"), disk_type="scsi-hd")
    iso = vm.image("one.iso", size="1M")
    old = vm.args(scsi_controller_type="virtio-scsi-pci", disks=[a, b], cdroms=[dict(name="cd", path=iso)])
    vm.run(**old)
    assert run_killed(vm, vm.args(scsi_controller_type="virtio-scsi-pci", disks=[a],
                                  cdroms=[dict(name="cd", path=iso)]), 1)  # right after device_del
    back = vm.run(**old)
    assert not back.get("failed"), back.get("msg")
    assert_converged(vm, ["a", "b"], iso)
    assert vm.run(**old)["changed"] is False


def test_leftovers_of_a_run_without_journal_are_purged_so_the_disk_can_be_attached(vm):
    """A format-1 run killed after device_add left a device and nodes no record explains."""
    a = dict(name="a", path=vm.image("a.raw"), disk_type="scsi-hd")
    b = dict(name="b", path=vm.image("b.raw"), disk_type="scsi-hd")
    iso = vm.image("one.iso", size="1M")
    common = dict(scsi_controller_type="virtio-scsi-pci", cdroms=[dict(name="cd", path=iso)])
    vm.run(**common, disks=[a])
    with vm.qmp() as qmp:  # play the killed run: b's nodes and device, never recorded
        for command in run_killed_plan(vm, common, [a, b]):
            qmp(command["execute"], **command["arguments"])
    result = vm.run(**common, disks=[a, b])
    assert not result.get("failed"), result["msg"]
    assert [x["action"] for x in result["actions"]] == ["purge", "attach"]
    assert_converged(vm, ["a", "b"], iso)


def run_killed_plan(vm, common, disks):
    """The QMP commands a check-mode run plans for ``disks`` (attaching what is new)."""
    return [c for c in vm.run(check=True, **common, disks=disks)["qmp_commands"]
            if c["execute"] in ("blockdev-add", "device_add")]


def test_a_task_saves_the_runtime_file_twice_however_many_disks(vm):
    vm.run(scsi_controller_type="virtio-scsi-pci", disks=[])
    counts = {}
    for n in (1, 16):
        disks = [dict(name="d%d" % i, path=vm.image("n%d-d%d.raw" % (n, i)), disk_type="scsi-hd") for i in range(n)]
        out = vm.state_dir + ".count"
        for declared in (disks, []):  # attach n disks, then detach them
            proc = run_hooked(vm.args(scsi_controller_type="virtio-scsi-pci", disks=declared),
                              vm.state_dir + ".count.json", AT_SAVE, out)
            assert result_of(proc)["changed"], proc.stdout
            counts[(n, bool(declared))] = int(open(out).read())
    assert set(counts.values()) == {2}, counts  # journal before, outcome after


def test_a_start_left_paused_without_its_devices_is_redone(vm):
    disk = dict(name="a", path=vm.image("a.raw"), disk_type="scsi-hd")
    args = vm.args(scsi_controller_type="virtio-scsi-pci", disks=[disk])
    assert run_killed(vm, args, 1, which="any")  # killed paused at start, before the devices were verified
    (paused,) = vm.pids()
    disk_id = next(d["id"] for d in runtime_of(vm)["layout"]["devices"])
    with vm.qmp() as qmp:
        qmp("device_del", id=disk_id)  # QEMU no longer has what the runtime file says
    rerun = vm.run(**args)
    assert not rerun.get("failed"), rerun.get("msg")
    assert [a["action"] for a in rerun["actions"]][:2] == ["redo-start", "start"]
    assert vm.pids() == [rerun["pid"]] and rerun["pid"] != paused
    with vm.qmp() as qmp:
        assert qmp("query-status")["status"] == "running"
        assert disk_id in {p["name"] for p in qmp("qom-list", path="/machine/peripheral")}


def test_a_netdev_left_without_its_nic_is_purged_so_the_nic_can_be_attached(vm):
    a = dict(name="a", path=vm.image("a.raw"))
    vm.run(disks=[a])
    planned = [c for c in vm.run(check=True, disks=[a], nics=[dict(name="n")])["qmp_commands"]
               if c["execute"] == "netdev_add"]
    with vm.qmp() as qmp:  # a run without journal killed after netdev_add
        qmp("netdev_add", **planned[0]["arguments"])
    result = vm.run(disks=[a], nics=[dict(name="n")])
    assert not result.get("failed"), result["msg"]
    assert [x["action"] for x in result["actions"]] == ["purge", "attach"]
    nic = next(d for d in runtime_of(vm)["layout"]["devices"] if d["kind"] == "nic")
    with vm.qmp() as qmp:
        network = info_network(qmp)
    assert nic["netdev"]["id"] in network and nic["id"] in network
    assert vm.run(disks=[a], nics=[dict(name="n")])["changed"] is False
