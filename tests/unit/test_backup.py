"""The planners of checkpoints and push backups (backup.py) and the engine's bitmap and
transaction steps (pure). Expected commands are written out here, as QEMU's QAPI names them."""

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import backup, engine, plan
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

from .helpers import QCOW2, by_name, disk, place

T0, T1 = "2026-12-08T02:00:00Z", "2026-12-08T03:00:00Z"
SIZE = 16 << 20


def record(fmt="qcow2"):
    path = "/img/data.%s" % ("qcow2" if fmt == "qcow2" else "raw")
    lay = place(facts={path: QCOW2} if fmt == "qcow2" else None,
                disks=[disk("data", path=path, format=fmt)])
    return dict(plan.normalise(by_name(lay, "data").to_dict()), state="attached", origin="blockdev")


def live(rec, *names, recording=None, **info):
    """QEMU's bitmaps: ``names`` on the record's top node, the last one recording."""
    node = rec["nodes"][-1]["node-name"]
    recording = names[-1:] if recording is None else recording
    return {(node, n): dict(dict(count=0, granularity=65536, recording=n in recording, persistent=True, busy=False,
                                 inconsistent=False), **info.get(n, {})) for n in names}


def actions(op):
    """(command, the bitmap it acts on) of each action; None for the job."""
    out = []
    for step in op.actions:
        args = step.command["arguments"]
        out.append((step.command["execute"], args["target"] if "bitmaps" in args else args.get("name")))
    return out


def test_a_checkpoint_is_a_persistent_bitmap_and_the_newest_records():
    rec = record()
    node = rec["nodes"][-1]["node-name"]
    op = backup.plan_checkpoint(rec, "c1", True, {}, T0)
    assert actions(op) == [("block-dirty-bitmap-add", "c1")]
    assert op.actions[0].command["arguments"] == {"node": node, "name": "c1", "persistent": True}
    assert op.record["checkpoints"] == [{"name": "c1", "node": node, "created": T0, "persistent": True}]
    assert op.pending().creates == {"bitmaps": [node + "/c1"]}
    assert backup.plan_checkpoint(op.record, "c1", True, live(rec, "c1"), T1) is None  # a re-run
    second = backup.plan_checkpoint(op.record, "c2", True, live(rec, "c1"), T1)
    assert actions(second) == [("block-dirty-bitmap-disable", "c1"), ("block-dirty-bitmap-add", "c2")]
    # Taken back: the new bitmap removed, the old one recording again.
    txn = engine.transaction(second.actions)
    assert engine.rollback([txn]) == [
        engine.cmd("block-dirty-bitmap-enable", node=node, name="c1"),
        engine.cmd("block-dirty-bitmap-remove", node=node, name="c2")]
    assert txn.command["execute"] == "transaction" and "properties" not in txn.command["arguments"]
    types = [a["type"] for a in txn.command["arguments"]["actions"]]
    assert types == ["block-dirty-bitmap-disable", "block-dirty-bitmap-add"]


def test_a_raw_disk_refuses_a_persistent_checkpoint_naming_the_fix():
    rec = record("raw")
    with pytest.raises(ConfigError, match=r"checkpoint: disks\[data\] is a raw image.*persistent: false"):
        backup.plan_checkpoint(rec, "c1", True, {}, T0)
    assert backup.plan_checkpoint(rec, "c1", False, {}, T0).record["checkpoints"][0]["persistent"] is False


@pytest.mark.parametrize("name", ["", "-x", "_blocklayer_backup", "a b", "x" * 64])
def test_checkpoint_names_are_checked(name):
    with pytest.raises(ConfigError, match="checkpoint: .* is not a checkpoint name"):
        backup.check_name(name, "checkpoint")


def test_delete_merges_into_the_one_before_and_hands_recording_back():
    rec = record()
    node = rec["nodes"][-1]["node-name"]
    rec = backup.plan_checkpoint(rec, "c1", True, {}, T0).record
    rec = backup.plan_checkpoint(rec, "c2", True, live(rec, "c1"), T1).record
    op = backup.plan_checkpoint_delete(rec, "c2", live(rec, "c1", "c2"))
    assert actions(op) == [("block-dirty-bitmap-merge", "c1"), ("block-dirty-bitmap-enable", "c1"),
                           ("block-dirty-bitmap-remove", "c2")]
    assert op.actions[0].command["arguments"]["bitmaps"] == [{"node": node, "name": "c2"}]
    assert [c["name"] for c in op.record["checkpoints"]] == ["c1"]
    assert op.pending().removes == {"bitmaps": [node + "/c2"]}
    # The oldest one: nothing before it to keep its writes.
    assert actions(backup.plan_checkpoint_delete(rec, "c1", live(rec, "c1", "c2"))) == [
        ("block-dirty-bitmap-remove", "c1")]
    # A middle one that does not record: merged, nothing enabled.
    rec3 = backup.plan_checkpoint(rec, "c3", True, live(rec, "c1", "c2"), T1).record
    assert actions(backup.plan_checkpoint_delete(rec3, "c2", live(rec, "c1", "c2", "c3"))) == [
        ("block-dirty-bitmap-merge", "c1"), ("block-dirty-bitmap-remove", "c2")]
    # Gone from QEMU (non-persistent, after a stop): the record only.
    gone = backup.plan_checkpoint_delete(rec, "c2", live(rec, "c1"))
    assert gone.actions == () and [c["name"] for c in gone.record["checkpoints"]] == ["c1"]
    assert backup.plan_checkpoint_delete(rec, "nope", {}) is None
    with pytest.raises(ConfigError, match="busy"):
        backup.plan_checkpoint_delete(rec, "c2", live(rec, "c1", "c2", c2={"busy": True}))


def test_full_backup_creates_the_file_the_node_the_checkpoint_and_the_job_in_one_transaction():
    rec = record()
    node = rec["nodes"][-1]["node-name"]
    op = backup.plan_backup(rec, "full", "/bk/f.qcow2", "missing", "b1", None, True, {}, SIZE, T0)
    create, add = op.prepare
    assert create.command == engine.cmd("create-image", path="/bk/f.qcow2", format="qcow2", size=SIZE)
    assert add.command == engine.cmd("blockdev-add", **{
        "driver": "qcow2", "node-name": rec["id"] + ".bak", "backing": None,
        "file": {"driver": "file", "filename": "/bk/f.qcow2"}})
    assert actions(op) == [("block-dirty-bitmap-add", "b1"), ("blockdev-backup", None)]
    assert op.actions[-1].command["arguments"] == {
        "job-id": rec["id"] + ".backup", "device": node, "target": rec["id"] + ".bak", "sync": "full",
        "filter-node-name": rec["id"] + "_bak", "auto-finalize": False, "auto-dismiss": False}
    entry = op.pending()
    assert entry.creates == {"files": ["/bk/f.qcow2"], "nodes": [rec["id"] + ".bak"],
                             "bitmaps": [node + "/b1"], "jobs": [rec["id"] + ".backup"]}
    assert op.record["checkpoints"][-1] == {"name": "b1", "node": node, "created": T0, "persistent": True,
                                            "backup": "/bk/f.qcow2"}
    # Success: the node goes, the file stays; failure: the bitmap and the node go (the file by identity).
    assert [s.command for s in backup.finish_steps(entry)] == [
        engine.cmd("blockdev-del", **{"node-name": rec["id"] + ".bak"})]
    assert [s.command for s in backup.undo_steps(entry, live(rec, "b1"))] == [
        engine.cmd("block-dirty-bitmap-remove", node=node, name="b1")]
    assert backup.plan_backup(op.record, "full", "/bk/f.qcow2", "file", "b1", None, True, {}, SIZE, T1) is None
    with pytest.raises(ConfigError, match="has a checkpoint b1 already"):
        backup.plan_backup(op.record, "full", "/bk/g.qcow2", "missing", "b1", None, True, {}, SIZE, T1)
    with pytest.raises(ConfigError, match="target: /bk/g.qcow2 exists"):
        backup.plan_backup(rec, "full", "/bk/g.qcow2", "file", "b1", None, True, {}, SIZE, T1)


def test_incremental_copies_the_merge_of_every_checkpoint_since_and_chains_onto_its_backup():
    rec = record()
    node = rec["nodes"][-1]["node-name"]
    rec = backup.plan_backup(rec, "full", "/bk/f.qcow2", "missing", "b1", None, True, {}, SIZE, T0).record
    rec = backup.plan_checkpoint(rec, "c2", True, live(rec, "b1"), T0).record
    op = backup.plan_backup(rec, "incremental", "/bk/i.qcow2", "missing", "b3", "b1", True, live(rec, "b1", "c2"),
                            SIZE, T1)
    assert op.prepare[0].command["arguments"] == {"path": "/bk/i.qcow2", "format": "qcow2", "size": SIZE,
                                                  "backing": "/bk/f.qcow2", "backing_format": "qcow2"}
    assert actions(op) == [("block-dirty-bitmap-disable", "c2"), ("block-dirty-bitmap-add", "b3"),
                           ("block-dirty-bitmap-add", backup.SCRATCH), ("block-dirty-bitmap-merge", backup.SCRATCH),
                           ("blockdev-backup", None)]
    scratch = op.actions[2].command["arguments"]
    assert scratch == {"node": node, "name": backup.SCRATCH, "persistent": False, "disabled": True}
    assert op.actions[3].command["arguments"]["bitmaps"] == [{"node": node, "name": "b1"}, {"node": node, "name": "c2"}]
    job = op.actions[-1].command["arguments"]
    assert job["sync"] == "incremental" and job["bitmap"] == backup.SCRATCH
    entry = op.pending()
    assert [s.command for s in backup.finish_steps(entry)] == [
        engine.cmd("blockdev-del", **{"node-name": rec["id"] + ".bak"}),
        engine.cmd("block-dirty-bitmap-remove", node=node, name=backup.SCRATCH)]
    # Undone after the transaction: both new bitmaps go, c2 records again.
    now = live(rec, "b1", "c2", "b3", backup.SCRATCH, recording=["b3"])
    assert [s.command for s in backup.undo_steps(entry, now)] == [
        engine.cmd("block-dirty-bitmap-remove", node=node, name=backup.SCRATCH),
        engine.cmd("block-dirty-bitmap-remove", node=node, name="b3"),
        engine.cmd("block-dirty-bitmap-enable", node=node, name="c2")]
    # Before it (refused): nothing to remove, c2 still records.
    assert backup.undo_steps(entry, live(rec, "b1", "c2")) == []


def test_incremental_refusals_name_the_checkpoint_and_ask_for_a_full_backup():
    rec = record()
    rec = backup.plan_backup(rec, "full", "/bk/f.qcow2", "missing", "b1", None, True, {}, SIZE, T0).record
    rec = backup.plan_checkpoint(rec, "c2", False, live(rec, "b1"), T0).record

    def inc(since, now):
        return backup.plan_backup(rec, "incremental", "/bk/i.qcow2", "missing", "b3", since, True, now, SIZE, T1)
    with pytest.raises(ConfigError, match="since: disks.data. has no checkpoint nope .its checkpoints: b1, c2"):
        inc("nope", live(rec, "b1", "c2"))
    with pytest.raises(ConfigError, match="checkpoint c2 of disks.data. is not in QEMU.*mode: full"):
        inc("b1", live(rec, "b1"))
    with pytest.raises(ConfigError, match="checkpoint b1 of disks.data. is inconsistent.*mode: full"):
        inc("b1", live(rec, "b1", "c2", b1={"inconsistent": True}))
    moved = dict(rec, checkpoints=[dict(c, node="other.fmt") for c in rec["checkpoints"]])
    with pytest.raises(ConfigError, match="is on node other.fmt .*a snapshot since"):
        backup.plan_backup(moved, "incremental", "/bk/i.qcow2", "missing", "b3", "b1", True, {}, SIZE, T1)
    # A plain checkpoint as the base: no backing file, said in the reason.
    op = inc("c2", live(rec, "b1", "c2"))
    assert "backing" not in op.prepare[0].command["arguments"] and "no backing file" in op.reason


def test_listing_and_a_start_keep_what_qemu_has():
    rec = record()
    node = rec["nodes"][-1]["node-name"]
    rec = backup.plan_checkpoint(rec, "c1", True, {}, T0).record
    rec = backup.plan_checkpoint(rec, "t1", False, live(rec, "c1"), T0).record
    named = [{"node-name": node, "dirty-bitmaps": [
        {"name": "c1", "count": 65536, "granularity": 65536, "recording": True, "persistent": True,
         "busy": False}]}]
    listed = backup.listing(rec, backup.live_bitmaps(named))
    assert [(c["name"], c["present"], c["count"], c["recording"], c["inconsistent"]) for c in listed] == [
        ("c1", True, 65536, True, False), ("t1", False, None, False, False)]
    fresh = [dict(rec, checkpoints=[])]
    backup.keep_checkpoints(fresh, [rec])
    assert [c["name"] for c in fresh[0]["checkpoints"]] == ["c1"]  # the non-persistent one is gone
    elsewhere = [dict(rec, nodes=[dict(rec["nodes"][-1], **{"node-name": "x.fmt"})], checkpoints=[])]
    backup.keep_checkpoints(elsewhere, [rec])
    assert elsewhere[0]["checkpoints"] == []


def test_settled_without_job_reads_the_transaction_from_the_bitmaps():
    rec = record()
    op = backup.plan_checkpoint(rec, "c1", True, {}, T0)
    entry = op.pending()
    assert backup.settled_without_job(entry, live(rec, "c1"))
    assert not backup.settled_without_job(entry, {})
    deleted = backup.plan_checkpoint_delete(op.record, "c1", live(rec, "c1")).pending()
    assert backup.settled_without_job(deleted, {})
    assert not backup.settled_without_job(deleted, live(rec, "c1"))


def test_result_reports_dirty_of_total():
    rec = record()
    rec = backup.plan_backup(rec, "full", "/bk/f.qcow2", "missing", "b1", None, True, {}, SIZE, T0).record
    op = backup.plan_backup(rec, "incremental", "/bk/i.qcow2", "missing", "b2", "b1", True, live(rec, "b1"),
                            SIZE, T1)

    class Outcome:
        result, current = "completed", 10420224
    out = backup.result(op, Outcome())
    assert out["dirty"] == "9.9 MiB dirty of 16.0 MiB total" and out["copied"] == 10420224
    assert out["mode"] == "incremental" and out["since"] == "b1" and out["checkpoint"] == "b2"
    assert backup.human(512) == "512 B"


def test_a_bitmap_is_deleted_by_its_node_and_name():
    assert engine.delete_command(engine.BITMAPS, "disk-1.fmt/a/b") == engine.cmd(
        "block-dirty-bitmap-remove", node="disk-1.fmt", name="a/b")
