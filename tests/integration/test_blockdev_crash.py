"""qemu_blockdev killed after any QMP command of a snapshot, an active commit or a mirror (the
module really dies, SIGKILL), or QEMU killed at the commit point: the next run converges, the
guest's data is where the chain says, and nothing is left over.
"""

import os
import re
import subprocess

import pytest

from .conftest import opened_nodes
from .faults import AFTER_QMP, result_of, run_hooked
from .helpers import holds, runtime_of, write

MODULE = "ansible_collections.blocklayer.qemu.plugins.modules.qemu_blockdev"
OWN_NODE = re.compile(r"disk-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}\.")


def blockdev_args(vm, **args):
    return dict(args, name="t", state_dir=vm.state_dir, disk="data")


def run_killed(vm, after, target="self", **args):
    """qemu_blockdev with ``args``, the ``target`` (the module, or QEMU's pidfile) SIGKILLed right
    after the module's ``after``-th mutating QMP command; True when that happened."""
    proc = run_hooked(blockdev_args(vm, **args), vm.state_dir + ".kill.json", AFTER_QMP, after, "mutating", target,
                      "SIGKILL", module=MODULE)
    if proc.returncode == -9:
        return True
    result = result_of(proc)
    if target != "self" and result.get("failed"):
        return True  # QEMU died under it: the module failed, as it must
    assert not result.get("failed"), result["msg"]
    return False


def run(vm, **args):
    proc = run_hooked(blockdev_args(vm, **args), vm.state_dir + ".run.json", "", module=MODULE)
    return result_of(proc)


def chain_in_qemu(vm):
    with vm.qmp() as qmp:
        record = next(d for d in runtime_of(vm)["layout"]["devices"] if d["name"] == "data")
        block = next(b for b in qmp("query-block") if b["qdev"].startswith("/machine/peripheral/%s/" % record["id"]))
        nodes = {n["node-name"] for n in qmp("query-named-block-nodes", flat=True)}
    files, image = [], block["inserted"]["image"]
    while image:
        files.append(image["filename"])
        image = image.get("backing-image")
    return block["inserted"]["node-name"], files, nodes, record


def assert_converged(vm, files):
    """The device is on ``files`` (top first), the runtime file says the same, no journal, and
    every node of ours QEMU has is in the chain (delete_unused ran)."""
    root, seen, nodes, record = chain_in_qemu(vm)
    data = runtime_of(vm)
    assert data["journal"] == []
    assert seen == files
    assert root == record["nodes"][-1]["node-name"]
    assert {n for n in nodes if OWN_NODE.match(n)} == opened_nodes(record["nodes"])


def start(vm):
    base = vm.image("base.qcow2", fmt="qcow2")
    subprocess.run(["qemu-io", "-c", "write -P 0x11 0 64k", base], check=True, capture_output=True)
    disks = [dict(name="data", path=base, format="qcow2")]
    vm.run(disks=disks)
    return base, disks


@pytest.mark.parametrize("operation", ["snapshot", "commit", "mirror"])
def test_killed_after_each_command_the_rerun_converges(vm, operation):
    base, _disks = start(vm)
    overlay = str(vm.images / "ov.qcow2")
    target = str(vm.images / "target.qcow2")
    if operation == "commit":
        run(vm, snapshot=dict(path=overlay))
        write(vm, 0x22, 1 << 20)
    args = {"snapshot": dict(snapshot=dict(path=overlay)), "commit": dict(commit={}),
            "mirror": dict(mirror=dict(path=target))}[operation]
    expected = {"snapshot": [overlay, base], "commit": [base], "mirror": [target]}[operation]
    after = 1
    while run_killed(vm, after, delete_unused=True, **args):
        rerun = run(vm, delete_unused=True, **args)
        assert not rerun.get("failed"), (after, rerun["msg"])
        print(after, rerun)
        assert_converged(vm, expected)
        assert run(vm, delete_unused=True, **args)["changed"] is False, after
        # Back to the chain before the operation, for the next kill point.
        if operation == "snapshot":
            run(vm, commit={}, delete_unused=True)
            os.unlink(overlay)
        elif operation == "commit":
            run(vm, snapshot=dict(path=str(vm.images / ("ov%d.qcow2" % after))))
            args = dict(commit={})
        else:
            run(vm, mirror=dict(path=str(vm.images / ("back%d.qcow2" % after))), delete_unused=True)
            os.unlink(target)
            expected = [target]
        after += 1
    assert after > {"snapshot": 2, "commit": 5, "mirror": 5}[operation], after
    if operation == "commit":
        flush_files = chain_in_qemu(vm)[1]
        assert holds(flush_files[0], 0x22, 1 << 20)


def test_qemu_killed_at_the_commit_point_of_an_active_commit_starts_on_the_base(vm):
    """QEMU dies right after job-finalize: the stopped layout keeps the new chain (the base, which
    holds the overlay's data), and the next start uses it."""
    base, disks = start(vm)
    overlay = str(vm.images / "ov.qcow2")
    run(vm, snapshot=dict(path=overlay))
    write(vm, 0x22, 1 << 20)
    pidfile = os.path.join(vm.state_dir, "qemu.pid")
    # Mutating commands of an active commit: blockdev-reopen (the base writable), block-commit,
    # job-complete, job-finalize, ...
    assert run_killed(vm, 4, target=pidfile, commit={})
    started = vm.run(disks=disks)
    assert not started.get("failed"), started["msg"]
    root, files, _nodes, record = chain_in_qemu(vm)
    assert files == [base] and root == record["nodes"][-1]["node-name"]
    assert holds(base, 0x22, 1 << 20) and holds(base, 0x11, 0)


def test_qemu_killed_before_the_commit_point_of_a_mirror_starts_on_the_source(vm):
    """QEMU dies while the mirror copies (after blockdev-mirror): the copy is incomplete, so the
    next start uses the source, never the target."""
    base, disks = start(vm)
    write(vm, 0x22, 1 << 20)
    pidfile = os.path.join(vm.state_dir, "qemu.pid")
    # blockdev-add, blockdev-add, blockdev-mirror
    assert run_killed(vm, 3, target=pidfile, mirror=dict(path=str(vm.images / "target.qcow2")))
    vm.run(disks=disks)
    root, files, _nodes, record = chain_in_qemu(vm)
    assert files == [base] and root == record["nodes"][-1]["node-name"]
    assert holds(base, 0x22, 1 << 20)
