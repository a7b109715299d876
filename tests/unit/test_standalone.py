"""Standalone named nodes (qemu_blockdev ``node``) and copies into them: the records, the
plans and the rebuild at start (pure)."""

import json
from dataclasses import replace

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import (
    blockdev, cmdline, graph, ids, runtime, spec, standalone)
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

from .helpers import base_record, params, place


def layout_with(*named, devices=()):
    return runtime.GuestLayout(name="t", uuid="u", machine_type="pc", declaration={}, devices=list(devices),
                               named_nodes=list(named))


def copy_node(**over):
    record = standalone.node_record("copy", "/img/copy.qcow2", "qcow2", False, blockdev.PATH_FILE)
    record.update(over)
    return record


@pytest.mark.parametrize("name", ["1copy", "a.b", "x" * 27, "disk-data", "cdrom-x", ""])
def test_names_outside_the_alphabet_or_like_device_ids_are_refused(name):
    with pytest.raises(ConfigError, match="node: "):
        standalone.check_name(name)


def test_a_node_is_a_protocol_and_a_format_node_named_after_it():
    record = copy_node()
    (fmt,) = record["nodes"]  # one blockdev-add, its protocol node inside
    stor = fmt["file"]
    assert (stor["node-name"], stor["driver"], stor["filename"]) == ("copy.stor", "file", "/img/copy.qcow2")
    assert (fmt["node-name"], fmt["driver"]) == ("copy.fmt", "qcow2")
    assert stor["cache"] == fmt["cache"] == {"direct": False, "no-flush": False}
    assert standalone.format_node(record) == "copy.fmt"
    # Outside the collection's device name space: no purge of leftovers takes them.
    assert not ids.own_node("copy.fmt") and not ids.own_node("copy.stor")


def test_present_is_a_no_op_when_open_as_declared_and_refuses_another_image_under_the_name():
    lay = layout_with(copy_node())
    assert standalone.plan_present(lay, "copy", "/img/copy.qcow2", "qcow2", False, "file") is None
    with pytest.raises(ConfigError, match="open already on /img/copy.qcow2"):
        standalone.plan_present(lay, "copy", "/img/other.qcow2", "qcow2", False, "file")
    with pytest.raises(ConfigError, match="open already on"):
        standalone.plan_present(lay, "copy", "/img/copy.qcow2", "qcow2", True, "file")
    with pytest.raises(ConfigError, match="open already as node copy"):
        standalone.plan_present(lay, "other", "/img/copy.qcow2", "qcow2", False, "file")


def test_an_image_of_a_disk_is_refused_as_a_node():
    disk = base_record()
    lay = layout_with(devices=[disk])
    with pytest.raises(ConfigError, match=r"is an image of disks\[data\]"):
        standalone.plan_present(lay, "copy", "/img/data.qcow2", "qcow2", False, "file")


def test_the_journal_entries_name_what_they_add_and_remove():
    record = copy_node()
    add = standalone.pending_add(record, {"path": "/img/copy.qcow2", "format": "qcow2", "size": 1 << 24})
    assert (add.action, add.id) == ("node-add", "copy")
    assert add.creates == {"nodes": ["copy.fmt"], "files": ["/img/copy.qcow2"]}
    delete = standalone.pending_del(record)
    assert delete.removes == {"nodes": ["copy.fmt"]} and delete.old == record
    assert all(graph.settled_by_runner(e) for e in (add, delete))  # settled by graphops, not recovery


def test_a_start_rebuilds_the_nodes_it_finds_and_leaves_out_a_missing_one_with_a_warning():
    kept, warnings = standalone.start_nodes(
        [copy_node(copy_of="disk-1"), dict(copy_node(), name="gone", path="/img/gone.qcow2")],
        {"/img/copy.qcow2": "file", "/img/gone.qcow2": "missing"})
    assert [n["name"] for n in kept] == ["copy"] and kept[0]["copy_of"] == "disk-1"
    assert warnings == ["node gone: its image /img/gone.qcow2 is missing, so it is not opened again; declare it "
                        "again once the image is back"]


def test_the_command_line_opens_the_nodes_after_the_devices():
    lay = replace(place(), named_nodes=(copy_node(),))
    argv = cmdline.build_argv(spec.instance_from(params()), lay, "tcg", runtime.RuntimePaths("/state"))
    blockdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-blockdev"]
    last = json.loads(blockdevs[-1])
    assert (last["node-name"], last["file"]["node-name"]) == ("copy.fmt", "copy.stor")


def test_the_runtime_file_keeps_the_nodes():
    rt = runtime.Runtime(layout_with(copy_node(copy_of="disk-1")), runtime.HostBinding(binary="qemu"))
    again = runtime.loads(runtime.dumps(rt), "runtime.json")
    assert again.layout.named_nodes == rt.layout.named_nodes
    assert again.layout.named_node("copy")["copy_of"] == "disk-1" and again.layout.named_node("x") is None


# -- a copy into a node ----------------------------------------------------------------------------
def test_a_copy_into_a_node_is_a_mirror_that_keeps_the_copy_and_names_its_target():
    rec = base_record()
    op = graph.plan_copy_to_node(rec, copy_node(), 1 << 24, 1 << 24)
    assert op.prepare == () and op.at_ready == "keep" and op.record == rec and op.unused == ()
    args = op.change["arguments"]
    assert op.change["execute"] == "blockdev-mirror" and args["target"] == "copy.fmt" and args["sync"] == "full"
    assert args["device"] == rec["nodes"][-1]["node-name"] and "replaces" not in args
    assert args["auto-finalize"] is False and args["auto-dismiss"] is False
    assert op.pending().creates == {"jobs": [op.job_id], "targets": ["copy"]}
    assert standalone.job_using([op.pending()], "copy") == op.job_id
    assert standalone.job_using([op.pending()], "other") is None


def test_a_node_holding_the_disks_copy_is_a_no_op_and_bad_targets_are_refused():
    rec = base_record()
    assert graph.plan_copy_to_node(rec, copy_node(copy_of=rec["id"]), 1 << 24, 1 << 24) is None
    with pytest.raises(ConfigError, match="copy of another disk"):
        graph.plan_copy_to_node(rec, copy_node(copy_of="disk-other"), 1 << 24, 1 << 24)
    with pytest.raises(ConfigError, match="is read-only"):
        graph.plan_copy_to_node(rec, copy_node(read_only=True), 1 << 24, 1 << 24)
    with pytest.raises(ConfigError, match="has 8388608 bytes"):
        graph.plan_copy_to_node(rec, copy_node(), 1 << 24, 1 << 23)
