"""qemu_blockdev on a real QEMU: snapshot, commit, stream and mirror change a running disk's
chain, the chain survives a stop and a start, and every re-run is a no-op.

Data is written through QEMU (HMP qemu-io on the device) and read back from the image files
with qemu-io -U, so the expected bytes are constants of the test, never the module's account.
"""

import json
import os
import subprocess

import pytest

from .conftest import hmp, run_module, tmpfs
from .helpers import backend, disk_id, holds, nodes_in_qemu, runtime_of, write


def flush(vm):
    """QEMU's caches (qcow2 metadata of a job's copy) written out, so the files can be read."""
    with vm.qmp() as qmp:
        hmp(qmp, 'qemu-io -d %s "flush"' % backend(vm))


def backing_of(path):
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", path], capture_output=True,
                                     text=True, check=True).stdout)
    return info.get("backing-filename")


def device_node(vm, name="data"):
    """The node the device's drive uses, and the file names of its chain, as QEMU reports them."""
    with vm.qmp() as qmp:
        block = next(b for b in qmp("query-block") if b.get("qdev", "").startswith("/machine/peripheral/%s/" % disk_id(vm, name)))
    inserted = block["inserted"]
    files, image = [], inserted["image"]
    while image:
        files.append(image["filename"])
        image = image.get("backing-image")
    return inserted["node-name"], files


def blockdev(vm, check=False, **args):
    args.setdefault("disk", "data")
    return run_module("qemu_blockdev", dict(args, name="t", state_dir=vm.state_dir), check=check)


def test_snapshot_puts_an_overlay_on_top_and_a_restart_keeps_it(data_vm):
    vm = data_vm
    overlay = str(vm.images / "ov1.qcow2")
    planned = blockdev(vm, check=True, snapshot=dict(path=overlay))
    assert planned["changed"] and not os.path.exists(overlay)
    assert [c["execute"] for c in planned["qmp_commands"]] == ["blockdev-add", "blockdev-snapshot"]

    done = blockdev(vm, snapshot=dict(path=overlay))
    assert done["changed"], done
    assert [c["path"] for c in done["chain"]] == [vm.base, overlay]
    node, files = device_node(vm)
    assert files == [overlay, vm.base]
    assert node == done["chain"][-1]["node"]
    assert backing_of(overlay) == vm.base
    again = blockdev(vm, snapshot=dict(path=overlay))
    assert again["changed"] is False and again["chain"] == done["chain"]
    assert vm.run(disks=vm.disks)["changed"] is False  # qemu_instance sees the same disk

    write(vm, 0x22, 1 << 20)
    assert holds(overlay, 0x22, 1 << 20) and not holds(vm.base, 0x22, 1 << 20)

    vm.run(state="stopped", disks=vm.disks)
    started = vm.run(disks=vm.disks)
    assert any(overlay in a for a in started["argv"]), started["argv"]
    assert device_node(vm)[1] == [overlay, vm.base]
    assert holds(overlay, 0x11, 0) and holds(overlay, 0x22, 1 << 20)
    assert vm.run(disks=vm.disks)["changed"] is False


def test_snapshot_refuses_an_existing_file(data_vm):
    vm = data_vm
    existing = vm.image("exists.qcow2", fmt="qcow2")
    before = open(existing, "rb").read()
    failed = blockdev(vm, snapshot=dict(path=existing))
    assert failed.get("failed") and "exists" in failed["msg"] and "never changes an existing file" in failed["msg"]
    assert open(existing, "rb").read() == before
    assert device_node(vm)[1] == [vm.base]


def test_active_commit_folds_the_overlay_into_the_base(data_vm):
    vm = data_vm
    overlay = str(vm.images / "ov1.qcow2")
    blockdev(vm, snapshot=dict(path=overlay))
    write(vm, 0x22, 1 << 20)

    done = blockdev(vm, commit={})
    assert done["changed"] and done["job"]["result"] == "completed", done
    assert [c["path"] for c in done["chain"]] == [vm.base]
    assert device_node(vm) == (done["chain"][0]["node"], [vm.base])
    assert done["unused_nodes"] and set(done["unused_nodes"]) <= nodes_in_qemu(vm)
    assert blockdev(vm, commit={})["changed"] is False

    released = blockdev(vm, commit={}, delete_unused=True)
    assert released["changed"] and released["unused_nodes"] == []
    assert not set(done["unused_nodes"]) & nodes_in_qemu(vm)
    write(vm, 0x33, 2 << 20)
    assert holds(vm.base, 0x22, 1 << 20) and holds(vm.base, 0x33, 2 << 20)
    assert vm.run(disks=vm.disks)["changed"] is False


def test_intermediate_commit_and_stream(data_vm):
    vm = data_vm
    ov1, ov2, ov3 = (str(vm.images / n) for n in ("ov1.qcow2", "ov2.qcow2", "ov3.qcow2"))
    blockdev(vm, snapshot=dict(path=ov1))
    write(vm, 0x22, 1 << 20)
    blockdev(vm, snapshot=dict(path=ov2))
    write(vm, 0x33, 2 << 20)

    committed = blockdev(vm, commit=dict(top=ov1), delete_unused=True)
    assert committed["job"]["result"] == "completed", committed
    assert [c["path"] for c in committed["chain"]] == [vm.base, ov2]
    assert device_node(vm)[1] == [ov2, vm.base]
    assert holds(vm.base, 0x22, 1 << 20)
    assert blockdev(vm, commit=dict(top=ov1))["changed"] is False

    blockdev(vm, snapshot=dict(path=ov3))
    streamed = blockdev(vm, stream={}, delete_unused=True)
    assert streamed["job"]["result"] == "completed", streamed
    assert [c["path"] for c in streamed["chain"]] == [ov3]
    assert device_node(vm)[1] == [ov3]
    assert backing_of(ov3) is None
    flush(vm)
    assert all(holds(ov3, p, o) for p, o in ((0x11, 0), (0x22, 1 << 20), (0x33, 2 << 20)))
    assert blockdev(vm, stream={})["changed"] is False

    vm.run(state="stopped", disks=vm.disks)
    vm.run(disks=vm.disks)
    assert device_node(vm)[1] == [ov3]


def test_mirror_moves_the_disk_and_keeps_its_id(data_vm):
    vm = data_vm
    dev = disk_id(vm)
    target = str(vm.images / "moved.qcow2")
    write(vm, 0x22, 1 << 20)
    done = blockdev(vm, mirror=dict(path=target))
    assert done["changed"] and done["job"]["result"] == "completed", done
    assert [c["path"] for c in done["chain"]] == [target]
    assert disk_id(vm) == dev and device_node(vm)[1] == [target]
    assert blockdev(vm, mirror=dict(path=target))["changed"] is False
    blockdev(vm, mirror=dict(path=target), delete_unused=True)
    flush(vm)
    assert holds(target, 0x11, 0) and holds(target, 0x22, 1 << 20)
    # The source is closed: another process may write it again.
    subprocess.run(["qemu-io", "-c", "write -P 0x44 0 4k", vm.base], check=True, capture_output=True)
    # The playbook may keep the old path or name the new one: the same disk either way.
    assert vm.run(disks=vm.disks)["changed"] is False
    assert vm.run(disks=[dict(vm.disks[0], path=target)])["changed"] is False

    vm.run(state="stopped", disks=vm.disks)
    vm.run(disks=vm.disks)
    assert device_node(vm)[1] == [target]


def test_mirror_without_pivot_keeps_a_copy(data_vm):
    vm = data_vm
    copy = str(vm.images / "copy.qcow2")
    write(vm, 0x22, 1 << 20)
    done = blockdev(vm, mirror=dict(path=copy, pivot=False), delete_unused=True)
    assert done["job"]["result"] == "kept", done
    assert device_node(vm)[1] == [vm.base]
    assert done["unused_nodes"] == []
    flush(vm)
    same = subprocess.run(["qemu-img", "compare", "-U", vm.base, copy], capture_output=True, text=True, check=False)
    assert same.returncode == 0, same.stdout + same.stderr


def test_mirror_to_an_image_of_another_size_is_refused_before_qemu(data_vm):
    vm = data_vm
    small = vm.image("small.qcow2", size="8M", fmt="qcow2")
    failed = blockdev(vm, mirror=dict(path=small, create=False))
    assert failed.get("failed") and "8388608 bytes" in failed["msg"], failed
    assert not [c for c in failed.get("qmp_commands", []) if c["execute"] == "blockdev-mirror"]
    assert device_node(vm)[1] == [vm.base]
    assert not runtime_of(vm)["journal"]


@pytest.fixture
def tiny_fs(tmp_path):
    """A 1 MiB filesystem: a copy of more than that fails inside the job, with ENOSPC."""
    with tmpfs(tmp_path / "tiny", "1m") as mount:
        yield mount


def test_a_job_that_fails_in_qemu_leaves_the_disk_on_its_chain_and_says_why(data_vm, tiny_fs):
    vm = data_vm
    for offset in range(0, 4 << 20, 64 << 10):  # 4 MiB of data: more than the target's filesystem holds
        write(vm, 0x44, offset)
    target = str(tiny_fs / "copy.raw")
    chain = device_node(vm)
    failed = blockdev(vm, mirror=dict(path=target, format="raw"))
    assert failed.get("failed"), failed
    assert "failed; the disk stays on its chain" in failed["msg"] and "No space left on device" in failed["msg"], failed
    assert [c["execute"] for c in failed["qmp_commands"] if c["execute"] == "blockdev-mirror"] == ["blockdev-mirror"]
    assert device_node(vm) == chain and holds(vm.base, 0x44, 0)
    assert not os.path.exists(target)  # the file this task created goes with the job
    assert not [n for n in nodes_in_qemu(vm) if n.startswith(disk_id(vm) + ".") and n not in
                {disk_id(vm) + ".stor", disk_id(vm) + ".fmt"}]
    assert not runtime_of(vm)["journal"]
    assert [c["path"] for c in blockdev(vm, commit={})["chain"]] == [vm.base]  # the disk works on


def test_a_declared_overlay_is_a_named_chain_that_commits_into_its_base(vm):
    base = vm.image("base.qcow2", fmt="qcow2")
    subprocess.run(["qemu-io", "-c", "write -P 0x11 0 64k", base], check=True, capture_output=True)
    top = str(vm.images / "top.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", top], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x22 1M 64k", top], check=True, capture_output=True)
    disks = [dict(name="data", path=top, format="qcow2")]
    vm.run(disks=disks)
    dev = disk_id(vm)
    assert device_node(vm) == (dev + ".fmt2", [top, base])
    live = nodes_in_qemu(vm)
    assert {dev + ".stor", dev + ".fmt", dev + ".stor2", dev + ".fmt2"} <= live
    assert not [n for n in live if n.startswith("#")]  # no node under a name of QEMU's own
    assert vm.run(disks=disks)["changed"] is False

    done = blockdev(vm, commit={}, delete_unused=True)
    assert done.get("job", {}).get("result") == "completed" and [c["path"] for c in done["chain"]] == [base], done
    assert holds(base, 0x11, 0) and holds(base, 0x22, 1 << 20)
    assert vm.run(disks=disks)["changed"] is False  # the declared overlay was folded: the same disk
    vm.run(state="stopped", disks=disks)
    vm.run(disks=disks)
    assert device_node(vm) == (dev + ".fmt", [base])


def test_unknown_disk_names_the_disks(data_vm):
    failed = blockdev(data_vm, disk="nope", commit={})
    assert failed.get("failed") and "no disk 'nope'" in failed["msg"] and "data" in failed["msg"]


def test_a_restart_with_allow_restart_rebuilds_the_current_chain(data_vm):
    vm = data_vm
    overlay = str(vm.images / "ov1.qcow2")
    blockdev(vm, snapshot=dict(path=overlay))
    write(vm, 0x22, 1 << 20)
    restarted = vm.run(disks=vm.disks, memory=160, allow_restart=True)
    assert any(a["action"] == "stop" for a in restarted["actions"]), restarted["actions"]
    assert device_node(vm)[1] == [overlay, vm.base]
    assert holds(overlay, 0x22, 1 << 20) and holds(overlay, 0x11, 0)
    assert vm.run(disks=vm.disks, memory=160)["changed"] is False
    # The restarted base is read-only; a commit into it still works (reopened writable first).
    done = blockdev(vm, commit={})
    assert done.get("job", {}).get("result") == "completed", done
    assert device_node(vm)[1] == [vm.base] and holds(vm.base, 0x22, 1 << 20)


def test_a_mirror_pivot_keeps_the_disks_limits(vm):
    base = vm.image("base.qcow2", fmt="qcow2")
    disks = [dict(name="data", path=base, format="qcow2", limits=dict(iops_total=100, bps_read=1048576))]
    vm.run(disks=disks)
    target = str(vm.images / "moved.qcow2")
    done = blockdev(vm, mirror=dict(path=target), delete_unused=True)
    assert done["job"]["result"] == "completed", done
    assert device_node(vm)[0] == disk_id(vm) + ".thr"  # the filter stayed on top
    with vm.qmp() as qmp:
        limits = qmp("qom-get", path="/objects/%s.tg" % disk_id(vm), property="limits")
        nodes = {n["node-name"]: n for n in qmp("query-named-block-nodes", flat=True)}
    assert (limits["iops-total"], limits["bps-read"]) == (100, 1048576)
    assert nodes[disk_id(vm) + ".fmt2"]["file"] == target
    assert vm.run(disks=disks)["changed"] is False
    vm.run(state="stopped", disks=disks)
    vm.run(disks=disks)
    assert device_node(vm)[0] == disk_id(vm) + ".thr"
    with vm.qmp() as qmp:
        nodes = {n["node-name"]: n for n in qmp("query-named-block-nodes", flat=True)}
    assert nodes[disk_id(vm) + ".fmt2"]["file"] == target


def test_a_second_instance_is_refused_on_the_overlay_naming_the_first(data_vm, tmp_path):
    vm = data_vm
    overlay = str(vm.images / "ov1.qcow2")
    blockdev(vm, snapshot=dict(path=overlay))
    other = vm.run(name="other", state_dir=str(tmp_path / "other"), disks=[dict(name="x", path=overlay, format="qcow2")])
    assert other.get("failed")
    assert "image %s is in use by another process" % overlay in other["msg"], other["msg"]
    assert "instance t, state dir %s" % vm.state_dir in other["msg"], other["msg"]
