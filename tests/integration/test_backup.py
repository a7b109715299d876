"""qemu_checkpoint and qemu_backup on a real QEMU: checkpoints are dirty bitmaps QEMU reports
(and keeps across a stop), a full and an incremental push backup of two disks at one point in
time restore, through the chain of backup files, into images qemu-img compare finds identical
to the disks at that point.

The test is the only writer (no guest runs; data is written through the device with HMP
qemu-io, so it passes the backup's copy-before-write filter), so "the disk at the backup's point
in time" is the disk right after the task, read with qemu-img convert -U once QEMU flushed it.
Expected counts are constants of the test (64 KiB writes, 64 KiB bitmap granularity).
"""

import json
import os
import subprocess

import pytest

from .conftest import hmp, run_module, tmpfs

K64 = 65536


def runtime_of(vm):
    with open(os.path.join(vm.state_dir, "runtime.json")) as handle:
        return json.load(handle)


def disk_id(vm, name):
    return next(d["id"] for d in runtime_of(vm)["layout"]["devices"] if d["name"] == name)


def write(vm, name, pattern, offset):
    """64 KiB of ``pattern`` at ``offset`` written through the disk's device, flushed."""
    backend = disk_id(vm, name) + "/virtio-backend"
    with vm.qmp() as qmp:
        hmp(qmp, 'qemu-io -d %s "write -P 0x%02x %d 64k"' % (backend, pattern, offset))
        hmp(qmp, 'qemu-io -d %s "flush"' % backend)


def bitmaps(vm):
    """(node, bitmap) -> QEMU's account of it."""
    with vm.qmp() as qmp:
        return {(n["node-name"], b["name"]): b for n in qmp("query-named-block-nodes", flat=True)
                for b in n.get("dirty-bitmaps") or []}


def jobs(vm):
    with vm.qmp() as qmp:
        return qmp("query-jobs")


def checkpoint(vm, check=False, diff=False, **args):
    return run_module("qemu_checkpoint", dict(args, name="t", state_dir=vm.state_dir), check=check, diff=diff)


def backup(vm, check=False, **args):
    return run_module("qemu_backup", dict(args, name="t", state_dir=vm.state_dir), check=check)


def copy_now(vm, names, path):
    """The disk as it is now (flushed by QEMU), read beside the running QEMU."""
    with vm.qmp() as qmp:
        for name in names:
            hmp(qmp, 'qemu-io -d %s/virtio-backend "flush"' % disk_id(vm, name))
    subprocess.run(["qemu-img", "convert", "-U", "-O", "raw", path[0], path[1]], check=True)


def restored_equals(chain_top, point_in_time, tmp):
    """Restore: the newest backup file, through its backing chain, into a new image; compared."""
    restored = str(tmp) + ".restored.raw"
    assert not os.path.exists(restored)
    subprocess.run(["qemu-img", "convert", "-O", "raw", chain_top, restored], check=True)
    done = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", point_in_time, restored],
                          capture_output=True, text=True, check=False)
    os.unlink(restored)
    return done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def two_disks(vm):
    vm.paths = {}
    for name, pattern in (("data", 0x11), ("logs", 0x22)):
        path = vm.image("%s.qcow2" % name, fmt="qcow2")
        subprocess.run(["qemu-io", "-c", "write -P 0x%02x 0 64k" % pattern, path], check=True, capture_output=True)
        vm.paths[name] = path
    vm.disks = [dict(name=n, path=p, format="qcow2") for n, p in vm.paths.items()]
    vm.run(disks=vm.disks)
    return vm


def test_checkpoints_are_bitmaps_that_survive_a_stop_and_delete_merges(two_disks):
    vm = two_disks
    data = disk_id(vm, "data") + ".fmt"
    planned = checkpoint(vm, check=True, diff=True, checkpoint="c1", disks=["data"])
    assert planned["changed"] and not bitmaps(vm)
    assert [(c["name"], c["present"]) for c in planned["checkpoints"]] == [("c1", False)]
    assert planned["diff"] == {"before": {}, "after": {"disks[data]": ["c1"]}}
    assert [c["execute"] for c in planned["qmp_commands"]] == ["transaction"]

    assert checkpoint(vm, checkpoint="c1", disks=["data"])["changed"]
    write(vm, "data", 0x33, 0)
    assert checkpoint(vm, checkpoint="c1", disks=["data"])["changed"] is False
    done = checkpoint(vm, checkpoint="c2", disks=["data"])
    assert done["changed"]
    write(vm, "data", 0x44, 1 << 20)
    have = bitmaps(vm)
    assert have[(data, "c1")]["count"] == K64 and not have[(data, "c1")]["recording"]
    assert have[(data, "c2")]["count"] == K64 and have[(data, "c2")]["recording"]
    assert have[(data, "c2")]["persistent"]

    vm.run(state="stopped", disks=vm.disks)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", vm.paths["data"]], capture_output=True,
                                     text=True, check=True).stdout)
    assert {b["name"] for b in info["format-specific"]["data"]["bitmaps"]} == {"c1", "c2"}
    vm.run(disks=vm.disks)
    have = bitmaps(vm)
    assert have[(data, "c2")]["recording"] and not have[(data, "c1")]["recording"]
    assert have[(data, "c1")]["count"] == K64 and have[(data, "c2")]["count"] == K64
    assert vm.run(disks=vm.disks)["changed"] is False  # qemu_instance sees the same disks
    listed = checkpoint(vm)["checkpoints"]
    assert [(c["disk"], c["name"], c["present"], c["recording"]) for c in listed] == [
        ("data", "c1", True, False), ("data", "c2", True, True)]

    deleted = checkpoint(vm, checkpoint="c2", state="absent")
    assert deleted["changed"]
    have = bitmaps(vm)
    assert (data, "c2") not in have
    assert have[(data, "c1")]["count"] == 2 * K64 and have[(data, "c1")]["recording"]
    assert checkpoint(vm, checkpoint="c2", state="absent")["changed"] is False


def test_a_raw_disk_refuses_a_persistent_checkpoint(vm):
    raw = vm.image("raw.img")
    vm.run(disks=[dict(name="data", path=raw, format="raw")])
    failed = checkpoint(vm, checkpoint="c1")
    assert failed.get("failed") and failed["changed"] is False
    assert "disks[data] is a raw image" in failed["msg"] and "persistent: false" in failed["msg"]
    assert not bitmaps(vm)
    assert checkpoint(vm, checkpoint="c1", persistent=False)["changed"]
    assert not next(iter(bitmaps(vm).values()))["persistent"]


def test_full_then_incremental_backup_of_two_disks_restores(two_disks, tmp_path):
    vm = two_disks
    target_dir = tmp_path / "backups"
    target_dir.mkdir()
    planned = backup(vm, check=True, checkpoint="b1", target_dir=str(target_dir))
    txn = [c for c in planned["qmp_commands"] if c["execute"] == "transaction"]
    assert len(txn) == 1 and [a["type"] for a in txn[0]["arguments"]["actions"]].count("blockdev-backup") == 2
    assert not os.listdir(target_dir)

    full = backup(vm, checkpoint="b1", target_dir=str(target_dir))
    assert full["changed"] and not full.get("failed"), full
    assert not jobs(vm)
    pit1 = {}
    for name in ("data", "logs"):
        pit1[name] = str(tmp_path / ("%s-1.raw" % name))
        copy_now(vm, [name], (vm.paths[name], pit1[name]))
    files = {b["disk"]: b["target"] for b in full["backups"]}
    assert files == {n: str(target_dir / ("t-%s-b1.qcow2" % n)) for n in ("data", "logs")}
    assert all(b["copied"] == 16 << 20 and b["size"] == 16 << 20 for b in full["backups"]), full["backups"]
    for name in ("data", "logs"):
        same, out = restored_equals(files[name], pit1[name], tmp_path / name)
        assert same, out
    leftover = {n for n, _b in bitmaps(vm)}
    assert not any(n.endswith(".bak") for n in leftover)
    assert backup(vm, checkpoint="b1", target_dir=str(target_dir))["changed"] is False
    assert vm.run(disks=vm.disks)["changed"] is False

    write(vm, "data", 0x55, 2 << 20)
    # A plain checkpoint between: since b1 is the merge of b1's bitmap and c2's (logs changes in c2's only).
    assert checkpoint(vm, checkpoint="c2")["changed"]
    write(vm, "data", 0x66, 0)
    write(vm, "logs", 0x77, 4 << 20)
    inc = backup(vm, mode="incremental", since="b1", checkpoint="b2", target_dir=str(target_dir))
    assert inc["changed"], inc
    copied = {b["disk"]: b["copied"] for b in inc["backups"]}
    assert copied == {"data": 2 * K64, "logs": K64}
    for name in ("data", "logs"):
        target = str(target_dir / ("t-%s-b2.qcow2" % name))
        info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", target], capture_output=True,
                                         text=True, check=True).stdout)
        assert info["backing-filename"] == files[name]
        pit2 = str(tmp_path / ("%s-2.raw" % name))
        copy_now(vm, [name], (vm.paths[name], pit2))
        same, out = restored_equals(target, pit2, tmp_path / name)
        assert same, out
    have = bitmaps(vm)
    data = disk_id(vm, "data") + ".fmt"
    assert sorted(b for n, b in have if n == data) == ["b1", "b2", "c2"]
    assert [b for n, b in have if n == data and have[(n, b)]["recording"]] == ["b2"]
    assert not jobs(vm)

    exists = backup(vm, mode="incremental", since="b2", checkpoint="b3",
                    targets={"data": files["data"]}, disks=["data"])
    assert exists.get("failed") and "exists" in exists["msg"] and exists["changed"] is False
    assert (data, "b3") not in bitmaps(vm)
    stray = backup(vm, checkpoint="b3", disks=["data"], targets={"data": str(tmp_path / "x.qcow2"),
                                                                 "root": str(tmp_path / "y.qcow2")})
    assert stray.get("failed") and "targets: root is not among the disks this task backs up (data)" in stray["msg"]


def test_a_backup_that_fails_in_qemu_takes_back_every_disk(vm, tmp_path):
    """The data disk's target fills its filesystem (ENOSPC inside the job): the task fails naming
    the disk, and neither disk keeps a checkpoint, a file, a node or a job of it."""
    paths = {}
    for name in ("data", "logs"):
        paths[name] = vm.image("%s.qcow2" % name, fmt="qcow2")
    subprocess.run(["qemu-io", "-c", "write -P 0x44 0 4M", paths["data"]], check=True, capture_output=True)
    vm.run(disks=[dict(name=n, path=p, format="qcow2") for n, p in paths.items()])
    with tmpfs(tmp_path / "tiny", "1m") as tiny:
        targets = {"data": str(tiny / "data.qcow2"), "logs": str(tmp_path / "logs.qcow2")}
        failed = backup(vm, checkpoint="b1", targets=targets)
        assert failed.get("failed") and failed["changed"] is False, failed
        assert "disks[data]: backup job" in failed["msg"] and "as they were" in failed["msg"], failed["msg"]
        assert not os.path.exists(targets["data"]) and not os.path.exists(targets["logs"])
    assert not bitmaps(vm) and not jobs(vm)
    with vm.qmp() as qmp:
        assert not [n["node-name"] for n in qmp("query-named-block-nodes", flat=True) if "bak" in n["node-name"]]
    assert runtime_of(vm)["journal"] == []
    assert not any(d.get("checkpoints") for d in runtime_of(vm)["layout"]["devices"])
    targets["data"] = str(tmp_path / "data.qcow2")
    assert backup(vm, checkpoint="b1", targets=targets)["changed"]
