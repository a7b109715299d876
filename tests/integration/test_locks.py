"""Image lock conflicts on a real QEMU: the user reads who holds the image, by instance or pid."""

import json
import os
import subprocess

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import spec

from .conftest import Qmp, alive, qemu_pids, qemu_private_args, wait_device_event

FORMATS = ["raw", "qcow2"]  # raw conflicts when its device attaches, qcow2 at its format node


def image(vm, name, fmt):
    return vm.image(name + "." + fmt, fmt=fmt)


def owner(vm, tmp_path, path, fmt, **disk):
    """Instance "owner-a" in its own state dir, running with the image; its QEMU's pid from /proc."""
    state_dir = str(tmp_path / "owner")
    result = vm.run(name="owner-a", state_dir=state_dir, disks=[dict(name="x", path=path, format=fmt, **disk)])
    assert not result.get("failed"), result.get("msg")
    pids = qemu_pids(state_dir)
    assert len(pids) == 1
    return state_dir, pids[0]


def assert_names_the_owner(msg, path, state_dir, pid):
    assert "image %s is in use by another process" % path in msg, msg
    assert "(instance owner-a, state dir %s, pid %d)" % (state_dir, pid) in msg, msg
    assert "stop that instance or use another image" in msg, msg


@pytest.mark.parametrize("fmt", FORMATS)
def test_start_with_an_image_another_instance_uses_names_that_instance(vm, tmp_path, fmt):
    path = image(vm, "x", fmt)
    state_dir, pid = owner(vm, tmp_path, path, fmt)
    result = vm.run(name="b", disks=[dict(name="x", path=path, format=fmt)])
    assert result["failed"]
    assert 'Failed to get "write" lock' in result["msg"] and "disks[x]" in result["msg"], result["msg"]
    assert_names_the_owner(result["msg"], path, state_dir, pid)
    assert vm.pids() == [] and alive(pid)


@pytest.mark.parametrize("fmt", FORMATS)
def test_hot_plug_of_an_image_another_instance_uses_names_it_and_keeps_the_runtime_file(vm, tmp_path, fmt):
    path = image(vm, "x", fmt)
    state_dir, pid = owner(vm, tmp_path, path, fmt)
    mine = dict(name="y", path=image(vm, "y", "raw"))
    started = vm.run(name="b", disks=[mine])
    assert not started.get("failed"), started.get("msg")
    runtime_file = os.path.join(vm.state_dir, "runtime.json")
    with open(runtime_file, "rb") as handle:
        before = handle.read()
    result = vm.run(name="b", disks=[mine, dict(name="x", path=path, format=fmt)])
    assert result["failed"] and 'Failed to get "write" lock' in result["msg"], result["msg"]
    assert_names_the_owner(result["msg"], path, state_dir, pid)
    # The image's holder is the other instance, never B's own QEMU.
    assert "pid %d" % vm.pids()[0] not in result["msg"]
    with open(runtime_file, "rb") as handle:
        assert handle.read() == before


def test_a_qemu_started_by_hand_is_named_by_pid_without_an_instance(vm, tmp_path):
    path = image(vm, "x", "raw")
    # Served like an instance's QMP socket, but in a directory the collection never marked.
    hand = tmp_path / "hand"
    hand.mkdir()
    pidfile = hand / "qemu.pid"
    extra, env = qemu_private_args(vm.binary)
    node = {"driver": "raw", "node-name": "h", "file": {"driver": "file", "filename": path}}
    proc = subprocess.run([vm.binary, "-machine", "pc", "-accel", "tcg", "-nodefaults", "-display", "none", "-S"]
                          + extra + ["-chardev", "socket,id=qmp,path=%s,server=on,wait=off" % (hand / "qmp.sock"),
                                     "-mon", "chardev=qmp,mode=control", "-blockdev", json.dumps(node),
                                     "-device", "virtio-blk-pci,drive=h,id=h", "-pidfile", str(pidfile), "-daemonize"],
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    pid = int(pidfile.read_text())
    result = vm.run(name="b", disks=[dict(name="x", path=path)])
    assert result["failed"]
    msg = result["msg"]
    assert "image %s is in use by another process, which does not let others write it (pid %d, qemu-system-x86)" \
        % (path, pid) in msg, msg
    assert "instance" not in msg.split("image %s" % path, 1)[1], msg
    assert "stop that process or use another image" in msg, msg


def test_read_only_disk_with_force_share_opens_an_image_another_instance_writes(vm, tmp_path):
    if "force_share" not in {f.name for f in spec.DiskSpec.__dataclass_fields__.values()}:
        pytest.skip("the disk option force_share does not exist yet")
    path = image(vm, "x", "raw")
    owner(vm, tmp_path, path, "raw")
    refused = vm.run(name="b", disks=[dict(name="x", path=path, mode="ro")])
    assert refused["failed"] and "in use by another process that writes to it" in refused["msg"], refused["msg"]
    assert "mode: ro and force_share: true" in refused["msg"]
    shared = vm.run(name="b", disks=[dict(name="x", path=path, mode="ro", force_share=True)])
    assert not shared.get("failed"), shared.get("msg")
    assert len(vm.pids()) == 1


def test_a_mirror_target_in_use_is_named_as_a_block_jobs_target(vm, tmp_path):
    state_dir, pid = owner(vm, tmp_path, image(vm, "x", "raw"), "raw")
    target = image(vm, "tgt", "qcow2")
    with Qmp(os.path.join(state_dir, "qmp.sock")) as qmp:
        top = next(b["inserted"]["node-name"] for b in qmp("query-block") if b.get("inserted"))
        qmp("blockdev-add", **{"driver": "qcow2", "node-name": "tgt",
                               "file": {"driver": "file", "filename": target}})
        qmp("blockdev-mirror", **{"job-id": "m0", "device": top, "target": "tgt", "sync": "full"})
        wait_device_event(qmp.mon, "BLOCK_JOB_READY", "m0", 60)
        result = vm.run(name="b", disks=[dict(name="t", path=target, format="qcow2")])
    assert result["failed"] and 'Failed to get "consistent read" lock' in result["msg"], result["msg"]
    assert "image %s is in use by another process as a block job's target" % target in result["msg"]
    assert "(instance owner-a, state dir %s, pid %d)" % (state_dir, pid) in result["msg"]
    assert "wait until that job ends, or use another image" in result["msg"]
    assert "force_share" not in result["msg"]  # the job unshares consistent read; force-share cannot override it


def test_a_reader_that_holds_no_lock_is_not_blamed(vm, tmp_path):
    path = image(vm, "x", "raw")
    state_dir, pid = owner(vm, tmp_path, path, "raw")
    # qemu-io -U opens the image without taking its locks, then waits for commands on stdin.
    reader = subprocess.Popen(["qemu-io", "-r", "-U", "-f", "raw", path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        reader.stdin.write(b"info\n")  # answered once the image is open
        reader.stdin.flush()
        assert reader.stdout.readline(), "qemu-io did not answer"
        fds = os.listdir("/proc/%d/fd" % reader.pid)
        assert any(os.readlink("/proc/%d/fd/%s" % (reader.pid, fd)) == path for fd in fds)
        result = vm.run(name="b", disks=[dict(name="x", path=path)])
    finally:
        reader.kill()
        reader.wait()
    assert result["failed"]
    assert_names_the_owner(result["msg"], path, state_dir, pid)
    assert "pid %d" % reader.pid not in result["msg"], result["msg"]
