"""qemu_checkpoint and qemu_backup killed (SIGKILL, the module really dies) after each mutating
QMP command: the next run with the same task converges - no job, no target node, no scratch
bitmap, no checkpoint the record does not have, the target file either the finished backup
(which restores) or removed - and a third run changes nothing.
"""

import json
import os
import subprocess

from .conftest import hmp
from .faults import AFTER_QMP, result_of, run_hooked

MODULES = "ansible_collections.blocklayer.qemu.plugins.modules."


def runtime_of(vm):
    with open(os.path.join(vm.state_dir, "runtime.json")) as handle:
        return json.load(handle)


def record_of(vm):
    return next(d for d in runtime_of(vm)["layout"]["devices"] if d["name"] == "data")


def write(vm, pattern, offset):
    with vm.qmp() as qmp:
        for command in ("write -P 0x%02x %d 64k" % (pattern, offset), "flush"):
            hmp(qmp, 'qemu-io -d %s/virtio-backend "%s"' % (record_of(vm)["id"], command))


def run(vm, module, **args):
    proc = run_hooked(dict(args, name="t", state_dir=vm.state_dir), vm.state_dir + ".run.json", "",
                      module=MODULES + module)
    return result_of(proc)


def run_killed(vm, module, after, **args):
    """The module SIGKILLed right after its ``after``-th mutating QMP command; True when it was."""
    proc = run_hooked(dict(args, name="t", state_dir=vm.state_dir), vm.state_dir + ".kill.json", AFTER_QMP, after,
                      "mutating", "self", "SIGKILL", module=MODULES + module)
    if proc.returncode == -9:
        return True
    assert not result_of(proc).get("failed"), result_of(proc)["msg"]
    return False


def in_qemu(vm):
    """(our nodes, bitmaps of the data disk's node, jobs) as QEMU has them."""
    node = record_of(vm)["nodes"][-1]["node-name"]
    with vm.qmp() as qmp:
        named = qmp("query-named-block-nodes", flat=True)
        jobs = qmp("query-jobs")
    nodes = {n["node-name"] for n in named}
    bitmaps = {b["name"]: b for n in named if n["node-name"] == node for b in n.get("dirty-bitmaps") or []}
    return nodes, bitmaps, jobs


def assert_converged(vm, checkpoints):
    nodes, bitmaps, jobs = in_qemu(vm)
    data = runtime_of(vm)
    assert data["journal"] == []
    assert jobs == []
    assert not any(n.endswith(".bak") or n.endswith("_bak") for n in nodes), nodes
    assert sorted(bitmaps) == sorted(checkpoints)
    assert [c["name"] for c in record_of(vm).get("checkpoints") or []] == checkpoints
    assert [name for name, b in bitmaps.items() if b["recording"]] == checkpoints[-1:]


def start(vm):
    base = vm.image("base.qcow2", fmt="qcow2")
    subprocess.run(["qemu-io", "-c", "write -P 0x11 0 64k", base], check=True, capture_output=True)
    vm.run(disks=[dict(name="data", path=base, format="qcow2")])
    return base


def test_checkpoint_killed_after_each_command_converges(vm):
    start(vm)
    after = 1
    while run_killed(vm, "qemu_checkpoint", after, checkpoint="c1"):
        rerun = run(vm, "qemu_checkpoint", checkpoint="c1")
        assert not rerun.get("failed"), rerun["msg"]
        assert_converged(vm, ["c1"])
        assert run(vm, "qemu_checkpoint", checkpoint="c1")["changed"] is False
        assert run_killed(vm, "qemu_checkpoint", 1, checkpoint="c1", state="absent")
        assert not run(vm, "qemu_checkpoint", checkpoint="c1", state="absent").get("failed")
        assert_converged(vm, [])
        after += 1
    assert after == 2, after  # one transaction


def test_incremental_backup_killed_after_each_command_converges_and_restores(vm, tmp_path):
    base = start(vm)
    first = str(tmp_path / "full.qcow2")
    target = str(tmp_path / "inc.qcow2")
    assert not run(vm, "qemu_backup", checkpoint="b1", targets={"data": first}).get("failed")
    write(vm, 0x22, 1 << 20)
    write(vm, 0x33, 0)
    point_in_time = str(tmp_path / "pit.raw")
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", base, point_in_time], check=True)
    args = dict(mode="incremental", since="b1", checkpoint="b2", targets={"data": target})
    after = 1
    while run_killed(vm, "qemu_backup", after, **args):
        rerun = run(vm, "qemu_backup", **args)
        assert not rerun.get("failed"), (after, rerun["msg"])
        assert_converged(vm, ["b1", "b2"])
        assert run(vm, "qemu_backup", **args)["changed"] is False, after
        restored = str(tmp_path / ("restored%d.raw" % after))
        subprocess.run(["qemu-img", "convert", "-O", "raw", target, restored], check=True)
        compared = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", point_in_time, restored],
                                  capture_output=True, text=True, check=False)
        assert compared.returncode == 0, (after, compared.stdout + compared.stderr)
        # Back to before the backup for the next kill point: b2 deleted (merged into b1), file gone.
        assert run(vm, "qemu_checkpoint", checkpoint="b2", state="absent")["changed"]
        os.unlink(target)
        assert_converged(vm, ["b1"])
        after += 1
    # blockdev-add, transaction, job-finalize, job-dismiss, blockdev-del, block-dirty-bitmap-remove
    assert after == 7, after
    assert os.path.exists(target)
