"""A disk an earlier version attached, on a running QEMU: its protocol node was added by a
blockdev-add of its own and its record lists it so ("file": "<name>", docs/block-graph.md).
QEMU keeps such a node when its format node goes, so each is closed by its own blockdev-del,
also after the chain grew an overlay the new way; nothing is left open."""

import json
import os

from .conftest import opened_nodes, run_module
from .helpers import mutating, node_names, record, runtime_of


def attach_as_an_earlier_version(vm, disk_record):
    """Attach the disk of ``disk_record`` (a record this version wrote, its device gone) as earlier
    versions did: protocol node, format node, device, each by a command of its own, and record it
    with its nodes listed so."""
    separate = []
    for node in disk_record["nodes"]:
        separate += [node["file"], dict(node, file=node["file"]["node-name"])]
    with vm.qmp() as qmp:
        for node in separate:
            qmp("blockdev-add", **node)
        qmp("device_add", **disk_record["props"])
    state = runtime_of(vm)
    state["layout"]["devices"].append(dict(disk_record, nodes=separate))
    with open(os.path.join(vm.state_dir, "runtime.json"), "w") as handle:
        json.dump(state, handle)
    return separate


def test_a_disk_an_earlier_version_attached_keeps_and_then_closes_each_node_it_opened(vm):
    common = dict(scsi_controller_type="virtio-scsi-pci", unplug_timeout=10)
    a = dict(name="a", path=vm.image("a.raw"), disk_type="scsi-hd")
    b = dict(name="b", path=vm.image("b.qcow2", fmt="qcow2"), format="qcow2", disk_type="scsi-hd")
    vm.run(disks=[a, b], **common)
    b_record = record(vm, "b")
    assert vm.run(disks=[a], **common)["changed"]  # b gone: attached again below, the earlier way
    separate = attach_as_an_earlier_version(vm, b_record)
    stor, fmt = (n["node-name"] for n in separate)
    assert vm.run(disks=[a, b], **common)["changed"] is False  # the same disk: nothing to do

    # An overlay the new way: the record keeps the protocol node QEMU holds on its own.
    overlay = str(vm.images / "b-ov.qcow2")
    snap = run_module("qemu_blockdev", dict(name="t", state_dir=vm.state_dir, disk="b", snapshot=dict(path=overlay)))
    assert snap["changed"] and not snap.get("failed"), snap
    nodes = record(vm, "b")["nodes"]
    assert [n["node-name"] for n in nodes] == [stor, fmt, b_record["id"] + ".fmt2"]
    with vm.qmp() as qmp:
        assert opened_nodes(nodes) <= node_names(qmp)

    removed = vm.run(disks=[a], **common)
    assert removed["changed"] and removed["unplug_pending"] == [], removed
    dels = [c["arguments"]["node-name"] for c in removed["qmp_commands"] if c["execute"] == "blockdev-del"]
    assert dels == [b_record["id"] + ".fmt2", fmt, stor]
    assert mutating(removed) == ["device_del", "blockdev-del", "blockdev-del", "blockdev-del"]
    with vm.qmp() as qmp:
        assert not opened_nodes(nodes) & node_names(qmp)  # .stor2 went with .fmt2, .stor by its own del
    assert [d["name"] for d in runtime_of(vm)["layout"]["devices"]] == ["a"]
    assert vm.run(disks=[a], **common)["changed"] is False
