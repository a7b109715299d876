"""From -drive to -blockdev without a reboot (docs/migration.md "From -drive to -blockdev").

A QEMU started by hand with ``-drive ... if=none`` + ``-device`` and the tiny guest is adopted
by qemu_instance, so its disks are recorded with origin ``drive``. The guest writes a pattern,
the qemu_migrate steps move it to a target the collection starts, whose command line has
``-blockdev`` nodes and no ``-drive``; the guest reads its pattern there, and a disk removed with
qemu_device goes with ``device_del`` and ``blockdev-del`` of its nodes. Adoption records the
versioned machine type and the CPU, so this works between QEMU generations too.
"""

import json
import os
import signal
import subprocess

import pytest

from . import qemus
from .conftest import BOOT, GUEST_MARKS, GuestAgent, Qmp, alive, cmdline_of, qemu_img, qemu_pids, qemu_private_args, run_module
from .helpers import PAIRS, MiB, Pair, by_serial, node_names

pytestmark = GUEST_MARKS


def start_drive_qemu(pair, root, data):
    """The tiny guest on ``-drive`` disks, started the way another tool would: the machine, CPU,
    memory and serial ports the collection's declaration gives (a target is built from it), a
    virtio-blk disk at slot 4 and a scsi-hd on the HBA ``scsi`` at slot 5. Returns (pid, qmp socket)."""
    extra, env = qemu_private_args(pair.source_binary)
    # The older QEMU's machine, so that the guest can move to either (docs/migration.md).
    machine = "pc-i440fx-%d.%d" % min(qemus.version(pair.source_binary), qemus.version(pair.target_binary))[:2]
    tmp = str(pair.tmp)
    sock, pidfile = os.path.join(tmp, "hand.sock"), os.path.join(tmp, "hand.pid")
    argv = [pair.source_binary] + extra + [
        "-name", "hand", "-machine", machine, "-accel", "tcg", "-cpu", "qemu64", "-m", "256", "-smp", "1",
        "-nodefaults", "-display", "none", "-daemonize", "-pidfile", pidfile,
        "-qmp", "unix:%s,server=on,wait=off" % sock,
        "-chardev", "file,id=console,path=%s" % os.path.join(tmp, "hand-console.log"), "-serial", "chardev:console",
        "-chardev", "socket,id=agent,path=%s,server=on,wait=off" % os.path.join(tmp, "hand-agent.sock"),
        "-serial", "chardev:agent",
        "-kernel", BOOT["kernel_path"], "-initrd", BOOT["initrd_path"], "-append", BOOT["kernel_args"],
        "-drive", "file=%s,format=qcow2,if=none,id=drive-vd0" % root,
        "-device", "virtio-blk-pci,id=vd0,drive=drive-vd0,bus=pci.0,addr=0x4,serial=R1",
        "-device", "virtio-scsi-pci,id=scsi,bus=pci.0,addr=0x5",
        "-drive", "file=%s,format=raw,if=none,id=drive-sd0" % data,
        "-device", "scsi-hd,id=sd0,drive=drive-sd0,bus=scsi.0,channel=0,scsi-id=2,lun=0,serial=D1"]
    subprocess.run(argv, check=True, env=env, capture_output=True)
    with open(pidfile) as handle:
        return int(handle.read()), sock


def adopt(pair, sock, root, data):
    args = dict(BOOT, name="m", state_dir=pair.src, accel="tcg", qemu_binary=pair.source_binary, shutdown_timeout=0,
                scsi_controller_type="virtio-scsi-pci", adopt={"qmp_socket": sock},
                disks=[dict(name="root", path=root, format="qcow2", serial="R1"),
                       dict(name="data", path=data, format="raw", disk_type="scsi-hd", serial="D1")])
    adopted = run_module("qemu_instance", args)
    assert not adopted.get("failed"), adopted
    assert [a["action"] for a in adopted["actions"]] == ["adopt"]
    saved = json.loads(pair.runtime_bytes(pair.src))
    assert {d["id"]: d["origin"] for d in saved["layout"]["devices"]} == {"vd0": "drive", "sd0": "drive"}


def agent_at(path):
    ga = GuestAgent(path, timeout=90)
    ga.wait_ready()
    return ga


@pytest.fixture(params=PAIRS)
def pair(tmp_path, request):
    pair = Pair(tmp_path, *request.param)
    yield pair
    for pid in qemu_pids(str(tmp_path)):
        os.kill(pid, signal.SIGKILL)


def test_a_drive_instance_moves_to_blockdev_nodes_and_its_disk_then_hot_removes(pair):
    base = pair.image("base.qcow2", "32M", "qcow2")
    root = str(pair.images / "root.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", root)  # an overlay, as -drive opens it
    data = pair.image("data.raw", "16M", "raw")
    source_pid, sock = start_drive_qemu(pair, root, data)
    with agent_at(os.path.join(str(pair.tmp), "hand-agent.sock")) as ga:
        seen = by_serial(ga)
        ga.write(seen["R1"]["name"], 2 * MiB, MiB, 0x5A)
        ga.write(seen["D1"]["name"], MiB, MiB, 0xA5)
    adopt(pair, sock, root, data)
    before = pair.runtime_bytes(pair.src)

    exported = pair.step(pair.src, "export")
    assert not exported.get("failed"), exported
    layout = {d["id"]: d for d in exported["layout"]["devices"]}
    # Each image one format node, its protocol node inside.
    assert [(n["node-name"], n["file"]["node-name"]) for n in layout["sd0"]["nodes"]] == [("sd0.fmt", "sd0.stor")]
    # vd0 is an overlay: its backing file is the named image below it.
    assert layout["vd0"]["origin"] == "blockdev" and layout["vd0"]["props"]["drive"] == "vd0.fmt2"
    assert [(n["node-name"], n["file"]["node-name"]) for n in layout["vd0"]["nodes"]] == [
        ("vd0.fmt", "vd0.stor"), ("vd0.fmt2", "vd0.stor2")]
    with Qmp(sock) as qmp:  # what -drive had made implicit is explicit now
        assert layout["sd0"]["props"]["device_id"] == qmp("qom-get", path="/machine/peripheral/sd0",
                                                          property="device_id") == "D1"  # from the serial
    prepared = pair.step(pair.dst, "prepare", layout=exported["layout"], source=exported["source"],
                         qemu_binary=pair.target_binary)
    assert not prepared.get("failed"), prepared
    argv = cmdline_of(prepared["pid"])
    assert "-drive" not in argv
    blockdevs = [json.loads(argv[i + 1])["node-name"] for i, a in enumerate(argv) if a == "-blockdev"]
    assert sorted(blockdevs) == ["sd0.fmt", "vd0.fmt", "vd0.fmt2"]
    assert pair.runtime_bytes(pair.src) == before  # the source keeps its -drive record until the guest left

    sent = pair.step(pair.src, "migrate", uri=prepared["uri"], timeout=120)
    assert sent.get("status") == "completed", sent
    finished = pair.step(pair.dst, "finish", timeout=60)
    assert finished.get("status") == "running", finished
    assert not alive(source_pid)
    assert json.loads(pair.runtime_bytes(pair.src))["status"] == "migrated"
    target = json.loads(pair.runtime_bytes(pair.dst))
    assert {d["id"]: d["origin"] for d in target["layout"]["devices"]} == {"vd0": "blockdev", "sd0": "blockdev"}
    dst_sock = os.path.join(pair.dst, "qmp.sock")
    with Qmp(dst_sock) as qmp:
        files = {b["qdev"]: (b["inserted"]["node-name"], b["inserted"]["file"], b["inserted"].get("backing_file"))
                 for b in qmp("query-block")}
    assert files["sd0"] == ("sd0.fmt", data, None)
    assert files["/machine/peripheral/vd0/virtio-backend"] == ("vd0.fmt2", root, base)  # its backing file came along
    with agent_at(os.path.join(pair.dst, "agent.sock")) as ga:
        seen = by_serial(ga)
        assert ga.read_is(seen["R1"]["name"], 2 * MiB, MiB, 0x5A)
        assert ga.read_is(seen["D1"]["name"], MiB, MiB, 0xA5)

    assert {"sd0.stor", "sd0.fmt"} <= node_names(dst_sock)
    removed = run_module("qemu_device", dict(name="m", state_dir=pair.dst, kind="disk", device=dict(name="data"),
                                             state="absent", unplug_timeout=60))
    assert removed["changed"] and not removed.get("failed"), removed
    sent = [(c["execute"], c["arguments"].get("id") or c["arguments"].get("node-name"))
            for c in removed["qmp_commands"] if c["execute"] in ("device_del", "blockdev-del")]
    assert sent == [("device_del", "sd0"), ("blockdev-del", "sd0.fmt")]  # which closes sd0.stor too
    assert not {"sd0.stor", "sd0.fmt"} & node_names(dst_sock)
    assert {"vd0.stor", "vd0.fmt", "vd0.stor2", "vd0.fmt2"} <= node_names(dst_sock)
    assert [d["id"] for d in json.loads(pair.runtime_bytes(pair.dst))["layout"]["devices"]] == ["vd0"]


def test_a_drive_disk_that_cannot_be_converted_is_refused_before_anything_starts(pair):
    root = pair.image("root.qcow2", "32M", "qcow2")
    data = pair.image("data.raw", "16M", "raw")
    source_pid, sock = start_drive_qemu(pair, root, data)
    adopt(pair, sock, root, data)
    with Qmp(sock) as qmp:  # a limit on the -drive BlockBackend, as -drive throttling.iops-total=100 sets
        qmp("block_set_io_throttle", id="sd0", bps=0, bps_rd=0, bps_wr=0, iops=100, iops_rd=0, iops_wr=0)
    before = pair.runtime_bytes(pair.src)
    exported = pair.step(pair.src, "export")
    assert exported.get("failed"), exported
    assert "data (sd0): it has I/O limits set with -drive (iops=100)" in exported["msg"], exported["msg"]
    assert "vd0" not in exported["msg"]
    assert alive(source_pid) and pair.runtime_bytes(pair.src) == before and not os.path.exists(pair.dst)
