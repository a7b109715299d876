"""The planners of qemu_blockdev's operations and the chains a start rebuilds (pure)."""

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import blockdev, graph, layout, plan, runtime, spec
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

from .helpers import QCOW2, base_record, by_name, disk, params, place

MISSING = layout.PathFacts("missing")


def after(op):
    """Apply an op's record, as a successful run does."""
    return op.record


def commands(op):
    return [c["execute"] for c in op.prepare] + ([op.change["execute"]] if op.change else [])


def snapshot(record, path):
    return graph.plan_snapshot(record, path, True, MISSING)


def test_snapshot_adds_a_generation_with_no_backing_opened_then_snapshots():
    rec = base_record()
    op = snapshot(rec, "/img/ov1.qcow2")
    dev = rec["id"]
    assert commands(op) == ["blockdev-add", "blockdev-snapshot"]
    (fmt,) = (c["arguments"] for c in op.prepare)  # its protocol node inside
    stor = fmt["file"]
    assert stor["node-name"] == dev + ".stor2" and stor["filename"] == "/img/ov1.qcow2"
    assert fmt["node-name"] == dev + ".fmt2" and fmt["backing"] is None
    assert op.change["arguments"] == {"node": dev + ".fmt", "overlay": dev + ".fmt2"}
    assert op.create == {"path": "/img/ov1.qcow2", "format": "qcow2", "backing": "/img/data.qcow2",
                         "backing_format": "qcow2"}
    # The record lists the chain as a start gives it: backing by name, the lower image read-only.
    nodes = blockdev.flat(op.record["nodes"])
    assert [n["node-name"] for n in op.record["nodes"]] == [dev + ".fmt", dev + ".fmt2"]
    assert [n["node-name"] for n in nodes] == [dev + ".stor", dev + ".fmt", dev + ".stor2", dev + ".fmt2"]
    assert nodes[3]["backing"] == dev + ".fmt" and nodes[0]["read-only"] and nodes[1]["read-only"]
    assert not nodes[3]["read-only"] and not nodes[2]["read-only"] and op.record["props"]["drive"] == dev + ".fmt2"
    assert op.pending().creates == {"nodes": [dev + ".fmt2"], "files": ["/img/ov1.qcow2"]}


def test_snapshot_onto_the_current_top_is_a_no_op_and_used_paths_are_refused():
    rec = after(snapshot(base_record(), "/img/ov1.qcow2"))
    assert snapshot(rec, "/img/ov1.qcow2") is None
    with pytest.raises(ConfigError, match="already an image"):
        snapshot(rec, "/img/data.qcow2")
    with pytest.raises(ConfigError, match="never changes an existing file"):
        graph.plan_snapshot(rec, "/img/other.qcow2", True, QCOW2)
    with pytest.raises(ConfigError, match="backing file none, not /img/ov1.qcow2"):
        graph.plan_snapshot(rec, "/img/other.qcow2", False, QCOW2)


def test_snapshot_of_a_read_only_disk_is_refused():
    with pytest.raises(ConfigError, match="read-only"):
        snapshot(base_record(mode="ro"), "/img/ov1.qcow2")


def test_active_commit_moves_the_device_to_the_base_and_leaves_the_overlay_unused():
    rec = after(snapshot(base_record(), "/img/ov1.qcow2"))
    dev = rec["id"]
    op = graph.plan_commit(rec, None, None)
    assert op.change == {"execute": "block-commit", "arguments": {
        "job-id": dev + ".commit3", "device": dev + ".fmt2", "base-node": dev + ".fmt",
        "filter-node-name": dev + "_job", "auto-finalize": False, "auto-dismiss": False}}
    assert [n["node-name"] for n in blockdev.flat(op.record["nodes"])] == [dev + ".stor", dev + ".fmt"]
    assert op.record["props"]["drive"] == dev + ".fmt" and not op.record["nodes"][0]["read-only"]
    assert op.unused == (dev + ".fmt2",)  # its .stor2 goes with it
    assert op.record["former_images"] == ["/img/ov1.qcow2"]
    # The base is read-only as a start opens it: made writable before the job, both its nodes.
    (reopened,) = op.reopen["arguments"]["options"]  # the protocol node inside, as recorded
    assert op.reopen["execute"] == "blockdev-reopen" and reopened["node-name"] == dev + ".fmt"
    assert rec["nodes"][0]["read-only"] and rec["nodes"][0]["file"]["read-only"]
    assert reopened["read-only"] is False and reopened["file"]["read-only"] is False
    # Every other option as recorded.
    base = rec["nodes"][0]
    assert reopened == dict(base, **{"read-only": False, "file": dict(base["file"], **{"read-only": False})})
    assert graph.read_only_again(op.record) is None  # the base is the top now: writable
    assert graph.read_only_again(rec)["arguments"]["options"] == [base]
    assert [c["execute"] for c in op.commands()] == ["blockdev-reopen", "block-commit"]
    assert graph.plan_commit(op.record, None, None) is None
    assert graph.plan_commit(op.record, "/img/ov1.qcow2", None) is None  # a re-run naming the folded image


def test_intermediate_commit_names_top_and_base_and_relinks_the_image_above():
    rec = after(snapshot(after(snapshot(base_record(), "/img/ov1.qcow2")), "/img/ov2.qcow2"))
    dev = rec["id"]
    op = graph.plan_commit(rec, "/img/ov1.qcow2", None)
    args = op.change["arguments"]
    assert args["top-node"] == dev + ".fmt2" and args["base-node"] == dev + ".fmt" and args["device"] == dev + ".fmt3"
    names = [n["node-name"] for n in blockdev.flat(op.record["nodes"])]
    assert names == [dev + ".stor", dev + ".fmt", dev + ".stor3", dev + ".fmt3"]
    assert op.record["nodes"][1]["backing"] == dev + ".fmt"
    assert op.unused == (dev + ".fmt2",)
    # The base and the image above top (whose backing name changes) are made writable.
    assert [n["node-name"] for n in op.reopen["arguments"]["options"]] == [dev + ".fmt", dev + ".fmt3"]
    with pytest.raises(ConfigError, match="is not an image of disks"):
        graph.plan_commit(rec, "/img/typo.qcow2", None)
    with pytest.raises(ConfigError, match="must be below"):
        graph.plan_commit(rec, "/img/ov1.qcow2", "/img/ov2.qcow2")


def test_stream_pulls_everything_below_the_top_into_it():
    rec = after(snapshot(base_record(), "/img/ov1.qcow2"))
    dev = rec["id"]
    op = graph.plan_stream(rec, None)
    assert "base-node" not in op.change["arguments"] and op.change["arguments"]["device"] == dev + ".fmt2"
    assert [n["node-name"] for n in blockdev.flat(op.record["nodes"])] == [dev + ".stor2", dev + ".fmt2"]
    assert "backing" not in op.record["nodes"][0]  # the header no longer names one (stream_prepare)
    assert op.unused == (dev + ".fmt",)
    assert graph.plan_stream(op.record, None) is None
    assert graph.plan_stream(base_record(), None) is None


def test_mirror_pivot_replaces_the_chain_with_the_target():
    rec = after(snapshot(base_record(), "/img/ov1.qcow2"))
    dev = rec["id"]
    op = graph.plan_mirror(rec, "/img/new.qcow2", "qcow2", True, True, MISSING, 1 << 30)
    args = op.change["arguments"]
    assert args == {"job-id": dev + ".mirror3", "device": dev + ".fmt2", "target": dev + ".fmt3", "sync": "full",
                    "filter-node-name": dev + "_job", "auto-finalize": False, "auto-dismiss": False}
    assert [n["node-name"] for n in blockdev.flat(op.record["nodes"])] == [dev + ".stor3", dev + ".fmt3"]
    assert op.unused == (dev + ".fmt2", dev + ".fmt")
    assert op.create == {"path": "/img/new.qcow2", "format": "qcow2", "size": 1 << 30}
    assert op.at_ready == "complete"
    assert graph.plan_mirror(op.record, "/img/new.qcow2", "qcow2", True, True, MISSING, 1 << 30) is None


def test_mirror_without_pivot_keeps_the_record_and_the_target_is_unused_afterwards():
    rec = base_record()
    op = graph.plan_mirror(rec, "/img/copy.qcow2", "raw", True, False, MISSING, 1 << 30)
    assert op.record == rec and op.at_ready == "keep"
    assert op.unused == (rec["id"] + ".fmt2",)


def test_a_chain_an_earlier_version_opened_keeps_its_own_protocol_nodes_through_operations():
    """QEMU holds such a protocol node on its own: the record keeps it so, and the node goes with a
    blockdev-del of its own when its image leaves the chain."""
    rec = base_record()
    dev = rec["id"]
    rec["nodes"] = blockdev.flat(rec["nodes"])  # as an earlier version recorded (and opened) it
    snap = snapshot(rec, "/img/ov1.qcow2")
    assert [n["node-name"] for n in snap.record["nodes"]] == [dev + ".stor", dev + ".fmt", dev + ".fmt2"]
    assert snap.record["nodes"][1]["file"] == dev + ".stor" and snap.record["nodes"][1]["read-only"]
    mirror = graph.plan_mirror(snap.record, "/img/new.qcow2", "qcow2", True, True, MISSING, 1 << 30)
    assert mirror.unused == (dev + ".fmt2", dev + ".fmt", dev + ".stor")
    assert [n["node-name"] for n in mirror.record["nodes"]] == [dev + ".fmt3"]
    commit = graph.plan_commit(snap.record, None, None)
    assert commit.unused == (dev + ".fmt2",)
    assert [n["node-name"] for n in commit.record["nodes"]] == [dev + ".stor", dev + ".fmt"]
    assert [n["node-name"] for n in commit.reopen["arguments"]["options"]] == [dev + ".stor", dev + ".fmt"]


def test_mirror_of_a_throttled_disk_replaces_the_image_below_the_filter():
    rec = base_record()
    thr = {"driver": "throttle", "node-name": rec["id"] + ".thr", "throttle-group": "g", "file": rec["id"] + ".fmt"}
    rec = dict(rec, nodes=rec["nodes"] + [thr], props=dict(rec["props"], drive=thr["node-name"]))
    op = graph.plan_mirror(rec, "/img/new.qcow2", "qcow2", True, True, MISSING, 1 << 30)
    assert op.change["arguments"]["device"] == thr["node-name"]
    assert op.change["arguments"]["replaces"] == rec["id"] + ".fmt"
    assert op.record["nodes"][-1] == dict(thr, file=rec["id"] + ".fmt2")
    assert op.record["props"]["drive"] == thr["node-name"]


def test_a_start_rebuilds_the_recorded_chain_bottom_up():
    rec = after(snapshot(base_record(), "/img/ov1.qcow2"))
    instance = spec.instance_from(params(disks=[disk("data", path="/img/data.qcow2", format="qcow2")]))
    chains = layout.recorded_chains(instance, [rec])
    assert chains == {rec["id"]: [blockdev.Layer(1, "/img/data.qcow2", "qcow2"), blockdev.Layer(2, "/img/ov1.qcow2", "qcow2")]}
    lay = layout.layout_instance(instance, {"/img/data.qcow2": QCOW2, "/img/ov1.qcow2": QCOW2}, chains)
    assert list(by_name(lay, "data").nodes) == rec["nodes"]
    with pytest.raises(ConfigError, match="ov1.qcow2 of its current chain .* is missing"):
        layout.layout_instance(instance, {"/img/data.qcow2": QCOW2, "/img/ov1.qcow2": MISSING}, chains)
    # Another declared image is another disk: its chain starts afresh.
    other = spec.instance_from(params(disks=[disk("data", path="/img/fresh.qcow2", format="qcow2")]))
    assert layout.recorded_chains(other, [rec]) == {}


def test_the_image_a_disk_moved_to_is_the_same_disk_for_the_planner():
    moved = graph.plan_mirror(base_record(), "/img/new.qcow2", "qcow2", True, True, MISSING, 1 << 30).record
    declared = dict(plan.normalise(moved["spec"]), path="/img/new.qcow2")
    assert plan._as_recorded_image(moved, declared) == moved["spec"]


def test_a_stopped_layout_keeps_the_new_chain_only_past_the_commit_point():
    rec = base_record()
    op = graph.plan_commit(after(snapshot(rec, "/img/ov1.qcow2")), None, None)
    for phase, expected in ((runtime.PHASE_BEGUN, op.old), (runtime.PHASE_FINALIZING, op.record)):
        lay = runtime.GuestLayout("vm1", "u", "pc", {}, devices=[op.old])
        entry = op.pending()
        entry.phase = phase
        assert graph.settle_stopped(lay, [entry]).devices == [expected]


# -- a declared overlay: its backing files are images of the disk -------------------------------
def overlay_record(**over):
    top = layout.PathFacts("file", b"QFI\xfb", backing=(
        layout.Backing("/img/mid.qcow2", "qcow2", b"QFI\xfb"),
        layout.Backing("/dev/vg/base", "raw", b"\0\0\0\0", kind="block")))
    facts = {"/img/top.qcow2": top}  # the backing files' facts come with the image's
    lay = place(facts=facts, disks=[disk("data", path="/img/top.qcow2", format="qcow2", **over)])
    return dict(plan.normalise(by_name(lay, "data").to_dict()), state="attached", origin="blockdev")


def test_a_declared_overlay_opens_its_backing_files_as_named_read_only_images_of_the_disk():
    rec = overlay_record()
    dev = rec["id"]
    assert [(layer.gen, layer.path, layer.fmt) for layer in graph.chain_of(rec)] == [
        (1, "/dev/vg/base", "raw"), (2, "/img/mid.qcow2", "qcow2"), (3, "/img/top.qcow2", "qcow2")]
    nodes = {n["node-name"]: n for n in blockdev.flat(rec["nodes"])}
    assert nodes[dev + ".fmt2"]["backing"] == dev + ".fmt" and nodes[dev + ".fmt3"]["backing"] == dev + ".fmt2"
    assert nodes[dev + ".fmt"]["read-only"] and nodes[dev + ".fmt2"]["read-only"] and not nodes[dev + ".fmt3"]["read-only"]
    assert rec["props"]["drive"] == dev + ".fmt3"
    # Each image opened with the driver for what it is: a block device base, file overlays.
    assert (nodes[dev + ".stor"]["driver"], nodes[dev + ".stor2"]["driver"]) == ("host_device", "file")
    # So the chain's operations see it: an active commit folds the overlays into the base.
    op = graph.plan_commit(rec, None, None)
    assert op.change["arguments"]["base-node"] == dev + ".fmt" and [layer.path for layer in graph.chain_of(op.record)] \
        == ["/dev/vg/base"]


def test_force_share_keeps_a_declared_overlay_as_one_image():
    rec = overlay_record(mode="ro", force_share=True)
    assert [layer.path for layer in graph.chain_of(rec)] == ["/img/top.qcow2"]
