"""Standalone named nodes on a real QEMU (qemu_blockdev ``node``): opened, created when asked,
used as the target of a copy, kept over a restart, closed only when nothing uses them, and a run
killed after its blockdev-add or blockdev-del, or (for a node an earlier version opened as two)
between the two blockdev-dels, converges on the next.

Data is written through QEMU (HMP qemu-io on the device) and read back from the image files with
qemu-io -U, so the expected bytes are constants of the test, never the module's account.
"""

import json
import os

from .conftest import hmp, run_module
from .faults import AFTER_QMP, result_of, run_hooked
from .helpers import backend, disk_id, holds, nodes_in_qemu, runtime_of, write

MODULE = "ansible_collections.blocklayer.qemu.plugins.modules.qemu_blockdev"


def node(vm, check=False, **args):
    return run_module("qemu_blockdev", dict(args, name="t", state_dir=vm.state_dir), check=check, diff=True)


def warnings_of(result):
    """The warning texts of a result (ansible-core 2.19 gives each as a summary with its event)."""
    return [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings") or []]


def test_a_node_is_created_opened_and_closed_and_each_rerun_changes_nothing(data_vm):
    vm = data_vm
    path = str(vm.images / "copy.qcow2")
    planned = node(vm, check=True, node="copy", path=path, size="16M")
    assert planned["changed"] and not os.path.exists(path)
    [add] = planned["qmp_commands"]  # the protocol node opened inside the format node
    assert (add["execute"], add["arguments"]["node-name"], add["arguments"]["file"]["node-name"]) == \
        ("blockdev-add", "copy.fmt", "copy.stor")

    opened = node(vm, node="copy", path=path, size="16M")
    assert opened["changed"] and opened["node"]["node"] == "copy.fmt", opened
    assert {"copy.stor", "copy.fmt"} <= nodes_in_qemu(vm)
    assert opened["diff"] == {"before": {"node[copy]": "absent"}, "after": {"node[copy]": "%s (qcow2)" % path}}
    again = node(vm, node="copy", path=path, size="16M")
    assert again["changed"] is False and not [c for c in again["qmp_commands"] if c["execute"].startswith("blockdev")]
    assert vm.run(disks=vm.disks)["changed"] is False  # qemu_instance leaves the node alone

    other = vm.image("other.raw")
    refused = node(vm, node="copy", path=other, format="raw")
    assert refused.get("failed") and "open already on %s" % path in refused["msg"], refused
    wrong = node(vm, node="disk-1", path=other, format="raw")
    assert wrong.get("failed") and "device ids" in wrong["msg"]

    closed = node(vm, node="copy", state="absent")
    assert closed["changed"] and closed["node"] is None
    assert [c["arguments"]["node-name"] for c in closed["qmp_commands"] if c["execute"] == "blockdev-del"] == \
        ["copy.fmt"]
    assert not {"copy.stor", "copy.fmt"} & nodes_in_qemu(vm)
    assert os.path.exists(path)  # the file stays
    assert node(vm, node="copy", state="absent")["changed"] is False
    assert runtime_of(vm)["layout"]["named_nodes"] == [] and runtime_of(vm)["journal"] == []


def test_a_copy_into_a_node_holds_the_guests_data_and_the_disk_stays(data_vm):
    vm = data_vm
    write(vm, 0x33, 1 << 20)
    path = str(vm.images / "copy.qcow2")
    node(vm, node="copy", path=path, size="16M")
    copied = node(vm, disk="data", mirror=dict(node="copy"))
    assert copied["changed"] and copied["job"]["result"] == "kept", copied
    assert [c["path"] for c in copied["chain"]] == [vm.base]
    with vm.qmp() as qmp:
        hmp(qmp, 'qemu-io -d %s "flush"' % backend(vm))
    assert holds(path, 0x11, 0) and holds(path, 0x33, 1 << 20)
    assert runtime_of(vm)["layout"]["named_nodes"][0]["copy_of"] == disk_id(vm)
    again = node(vm, disk="data", mirror=dict(node="copy"))
    assert again["changed"] is False and "job" not in again

    moved = node(vm, disk="data", mirror=dict(node="copy", pivot=True))
    assert moved.get("failed") and "give mirror.path instead of mirror.node" in moved["msg"]
    small = str(vm.images / "small.qcow2")
    node(vm, node="small", path=small, size="8M")
    too_small = node(vm, disk="data", mirror=dict(node="small"))
    assert too_small.get("failed") and "8388608 bytes" in too_small["msg"], too_small


def test_a_node_in_use_is_not_closed_and_says_by_what(data_vm):
    vm = data_vm
    path = str(vm.images / "copy.qcow2")
    node(vm, node="copy", path=path, size="16M")
    # A job on it: the copy started and left running (a ready mirror waits for its end).
    started = node(vm, disk="data", mirror=dict(node="copy"), wait=False)
    assert started["job"]["status"] == "running", started
    refused = node(vm, node="copy", state="absent")
    assert refused.get("failed") and "target of block job %s" % started["job"]["id"] in refused["msg"], refused
    assert {"copy.stor", "copy.fmt"} <= nodes_in_qemu(vm)
    assert node(vm, disk="data", cancel=True)["changed"]

    # A node of someone else's on top of it: QEMU's refusal, translated, and the node stays.
    with vm.qmp() as qmp:
        qmp("blockdev-add", driver="raw", **{"node-name": "theirs", "file": "copy.fmt"})
    busy = node(vm, node="copy", state="absent")
    assert busy.get("failed") and "QEMU still uses it" in busy["msg"] and "in use" in busy["msg"], busy
    assert {"copy.stor", "copy.fmt"} <= nodes_in_qemu(vm)
    assert [n["name"] for n in runtime_of(vm)["layout"]["named_nodes"]] == ["copy"]
    with vm.qmp() as qmp:
        qmp("blockdev-del", **{"node-name": "theirs"})
    assert node(vm, node="copy", state="absent")["changed"]


def test_a_restart_opens_the_node_again_and_a_missing_image_is_left_out_with_a_warning(data_vm):
    vm = data_vm
    keep, gone = str(vm.images / "keep.qcow2"), str(vm.images / "gone.qcow2")
    node(vm, node="keep", path=keep, size="16M")
    node(vm, node="gone", path=gone, size="16M")
    vm.run(state="stopped", disks=vm.disks)
    os.unlink(gone)
    started = vm.run(disks=vm.disks)
    assert started["changed"] and any("node gone: its image %s is missing" % gone in w
                                      for w in warnings_of(started)), started
    live = nodes_in_qemu(vm)
    assert {"keep.stor", "keep.fmt"} <= live and not {"gone.stor", "gone.fmt"} & live
    assert [n["name"] for n in runtime_of(vm)["layout"]["named_nodes"]] == ["keep"]
    assert node(vm, node="keep", path=keep)["changed"] is False
    seen = run_module("qemu_instance_info", dict(name="t", state_dir=vm.state_dir))
    assert seen["nodes"] == [{"name": "keep", "path": keep, "format": "qcow2", "read_only": False, "node": "keep.fmt",
                              "copy_of": None, "in_qemu": True}] and seen["drift"] == [], seen
    with vm.qmp() as qmp:  # closed behind the collection's back: drift
        qmp("blockdev-del", **{"node-name": "keep.fmt"})
    drifted = run_module("qemu_instance_info", dict(name="t", state_dir=vm.state_dir))
    assert drifted["nodes"][0]["in_qemu"] is False
    assert "node keep (keep.fmt) is recorded but QEMU does not have it" in drifted["drift"]


def test_a_run_killed_after_the_add_converges_on_the_next(data_vm):
    vm = data_vm
    path = str(vm.images / "copy.qcow2")
    args = dict(name="t", state_dir=vm.state_dir, node="copy", path=path, size="16M")
    proc = run_hooked(args, vm.state_dir + ".kill.json", AFTER_QMP, 1, "blockdev-add", "self", "SIGKILL",
                      module=MODULE)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert runtime_of(vm)["journal"][0]["action"] == "node-add"
    assert {"copy.stor", "copy.fmt"} <= nodes_in_qemu(vm)
    # Both open, as the killed run meant: the next run adopts the node and changes nothing more.
    done = result_of(run_hooked(args, vm.state_dir + ".run.json", "", module=MODULE))
    assert not done.get("failed"), done
    assert not [c for c in done["qmp_commands"] if c["execute"].startswith("blockdev")]
    assert {"copy.stor", "copy.fmt"} <= nodes_in_qemu(vm)
    assert runtime_of(vm)["journal"] == [] and [n["name"] for n in runtime_of(vm)["layout"]["named_nodes"]] == ["copy"]
    assert node(vm, node="copy", path=path, size="16M")["changed"] is False


def test_a_run_killed_after_the_delete_converges_on_the_next(data_vm):
    vm = data_vm
    path = str(vm.images / "copy.qcow2")
    node(vm, node="copy", path=path, size="16M")
    args = dict(name="t", state_dir=vm.state_dir, node="copy", state="absent")
    proc = run_hooked(args, vm.state_dir + ".kill.json", AFTER_QMP, 1, "blockdev-del", "self", "SIGKILL",
                      module=MODULE)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert runtime_of(vm)["journal"][0]["action"] == "node-del"
    assert not {"copy.stor", "copy.fmt"} & nodes_in_qemu(vm)  # one blockdev-del closed both
    done = result_of(run_hooked(args, vm.state_dir + ".run.json", "", module=MODULE))
    assert not done.get("failed"), done
    assert runtime_of(vm)["journal"] == [] and runtime_of(vm)["layout"]["named_nodes"] == []
    assert node(vm, node="copy", state="absent")["changed"] is False


def as_opened_by_an_earlier_version(vm, name):
    """Reopen the standalone node ``name`` as earlier versions did, its protocol node added on its
    own, and record it so (the runtime file such a version wrote)."""
    state = runtime_of(vm)
    record = next(n for n in state["layout"]["named_nodes"] if n["name"] == name)
    [fmt] = record["nodes"]
    separate = [fmt["file"], dict(fmt, file=fmt["file"]["node-name"])]
    with vm.qmp() as qmp:
        qmp("blockdev-del", **{"node-name": fmt["node-name"]})
        for args in separate:
            qmp("blockdev-add", **args)
    record["nodes"] = separate
    with open(os.path.join(vm.state_dir, "runtime.json"), "w") as handle:
        json.dump(state, handle)


def test_a_node_an_earlier_version_opened_is_closed_whole_even_when_a_run_is_killed_between_its_deletes(data_vm):
    vm = data_vm
    path = str(vm.images / "copy.qcow2")
    node(vm, node="copy", path=path, size="16M")
    as_opened_by_an_earlier_version(vm, "copy")
    args = dict(name="t", state_dir=vm.state_dir, node="copy", state="absent")
    proc = run_hooked(args, vm.state_dir + ".kill.json", AFTER_QMP, 1, "blockdev-del", "self", "SIGKILL",
                      module=MODULE)
    assert proc.returncode == -9, proc.stdout + proc.stderr
    assert runtime_of(vm)["journal"][0]["action"] == "node-del"
    assert "copy.fmt" not in nodes_in_qemu(vm) and "copy.stor" in nodes_in_qemu(vm)  # QEMU holds it on its own
    done = result_of(run_hooked(args, vm.state_dir + ".run.json", "", module=MODULE))
    assert done["changed"] and not done.get("failed"), done
    assert not {"copy.stor", "copy.fmt"} & nodes_in_qemu(vm)
    assert runtime_of(vm)["journal"] == [] and runtime_of(vm)["layout"]["named_nodes"] == []
    assert os.path.exists(path)  # the file stays
    assert node(vm, node="copy", state="absent")["changed"] is False
