"""qemu_instance adopts a QEMU it did not start, then manages it like any other (docs/migration.md).

Each QEMU here is started by hand, the way another tool would, on a QMP socket outside the
state dir: once with -blockdev + -device, once with -drive, and once as Ganeti 2.16 starts an
instance, with the runtime file of tests/data/ganeti-2.16.json next to it. Expected values come
from QEMU's answers (query-pci, qom-get, query-block, query-named-block-nodes) and /proc.
"""

import json
import os
import subprocess

from . import qemus
from .conftest import Qmp, alive, qemu_img, qemu_private_args

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")
MAC = "52:54:00:12:34:56"


def start_by_hand(vm, devices):
    """A QEMU on ``<tmp>/hand.sock`` with a virtio-scsi HBA ``scsi`` at slot 5; returns (pid, socket)."""
    extra, env = qemu_private_args(vm.binary)
    sock = str(vm.images.parent / "hand.sock")
    pidfile = str(vm.images.parent / "hand.pid")
    argv = [vm.binary] + extra + ["-name", "hand", "-machine", "pc", "-accel", "tcg", "-m", "128", "-nodefaults",
                                  "-display", "none", "-daemonize", "-pidfile", pidfile,
                                  "-qmp", "unix:%s,server=on,wait=off" % sock,
                                  "-device", "virtio-scsi-pci,id=scsi,bus=pci.0,addr=0x5"] + devices
    subprocess.run(argv, check=True, env=env, capture_output=True)
    with open(pidfile) as handle:
        return int(handle.read()), sock


def images(vm):
    root = str(vm.images / "vda.qcow2")
    data = str(vm.images / "sda.raw")
    qemu_img("create", "-q", "-f", "qcow2", root, "16M")
    qemu_img("create", "-q", "-f", "raw", data, "16M")
    return root, data


NIC = ["-netdev", "user,id=net0", "-device", "virtio-net-pci,id=nic0,netdev=net0,mac=%s,bus=pci.0,addr=0x6" % MAC]


def blockdev_qemu(vm):
    root, data = images(vm)
    return start_by_hand(vm, [
        "-blockdev", json.dumps({"driver": "file", "node-name": "vda-file", "filename": root}),
        "-blockdev", json.dumps({"driver": "qcow2", "node-name": "vda-fmt", "file": "vda-file"}),
        "-device", "virtio-blk-pci,id=vd0,drive=vda-fmt,bus=pci.0,addr=0x4",
        "-blockdev", json.dumps({"driver": "file", "node-name": "sda-file", "filename": data}),
        "-blockdev", json.dumps({"driver": "raw", "node-name": "sda-fmt", "file": "sda-file"}),
        "-device", "scsi-hd,id=sd0,drive=sda-fmt,bus=scsi.0,channel=0,scsi-id=2,lun=0"] + NIC), root, data


def drive_qemu(vm):
    root, data = images(vm)
    return start_by_hand(vm, [
        "-drive", "file=%s,format=qcow2,if=none,id=drive-vd0" % root,
        "-device", "virtio-blk-pci,id=vd0,drive=drive-vd0,bus=pci.0,addr=0x4",
        "-drive", "file=%s,format=raw,if=none,id=drive-sd0" % data,
        "-device", "scsi-hd,id=sd0,drive=drive-sd0,bus=scsi.0,channel=0,scsi-id=2,lun=0"] + NIC), root, data


def declaration(vm, sock, root, data, **over):
    args = dict(name="hand", scsi_controller_type="virtio-scsi-pci", adopt={"qmp_socket": sock},
                disks=[dict(name="root", path=root, format="qcow2"),
                       dict(name="data", path=data, format="raw", disk_type="scsi-hd")],
                nics=[dict(name="lan", mac=MAC)])
    args.update(over)
    return args


def runtime_file(vm):
    with open(os.path.join(vm.state_dir, "runtime.json")) as handle:
        return json.load(handle)


def root_slots(qmp):
    return {d["qdev_id"]: d["slot"] for bus in qmp("query-pci") for d in bus["devices"] if d["qdev_id"]}


def adopt_and_hotplug(vm, sock, root, data):
    """Adopt, then hot-plug a virtio and a SCSI disk next to the found ones; returns the args."""
    args = declaration(vm, sock, root, data)
    first = vm.run(**args)
    assert not first.get("failed"), first["msg"]
    assert [a["action"] for a in first["actions"]] == ["adopt"]
    more = dict(args, disks=args["disks"] + [dict(name="new", path=vm.image("new.raw")),
                                             dict(name="new-scsi", path=vm.image("new-scsi.raw"), disk_type="scsi-hd")])
    added = vm.run(**more)
    assert not added.get("failed"), added["msg"]
    assert sorted((a["action"], a["name"]) for a in added["actions"]) == [("attach", "new"), ("attach", "new-scsi")]
    ids = {a["name"]: a["id"] for a in added["actions"]}
    with Qmp(sock) as qmp:
        slots = root_slots(qmp)
        assert (slots["vd0"], slots["scsi"], slots["nic0"]) == (4, 5, 6)  # the found devices did not move
        assert slots[ids["new"]] not in (4, 5, 6)
        path = "/machine/peripheral/" + ids["new-scsi"]
        assert qmp("qom-get", path=path, property="scsi-id") != 2
        assert qmp("qom-get", path=path, property="parent_bus") == qmp(
            "qom-get", path="/machine/peripheral/sd0", property="parent_bus")  # on the found HBA
    again = vm.run(**more)
    assert again["changed"] is False and again["actions"] == [], again["actions"]
    return more


def test_a_blockdev_qemu_is_adopted_hotplugged_next_to_and_an_adopted_disk_removed(vm):
    (pid, sock), root, data = blockdev_qemu(vm)
    args = adopt_and_hotplug(vm, sock, root, data)
    saved = runtime_file(vm)
    assert saved["host"]["pid"] == pid and saved["host"]["qmp_socket"] == sock
    assert saved["host"]["binary"] == os.readlink("/proc/%d/exe" % pid)
    assert {d["id"]: d["origin"] for d in saved["layout"]["devices"]}["sd0"] == "blockdev"
    # What a migration target must emulate: "-machine pc" in this QEMU's version, and its default CPU.
    version = "%d.%d" % qemus.version(vm.binary)[:2]
    assert (saved["layout"]["machine"], saved["layout"]["cpu"]) == ("pc-i440fx-%s" % version, "qemu64")

    removed = vm.run(**dict(args, disks=[d for d in args["disks"] if d["name"] != "data"]))
    assert [(a["action"], a["id"]) for a in removed["actions"]] == [("detach", "sd0")]
    deletes = [c["arguments"]["node-name"] for c in removed["qmp_commands"] if c["execute"] == "blockdev-del"]
    assert deletes == ["sda-fmt", "sda-file"]  # top-down, after device_del
    with Qmp(sock) as qmp:
        nodes = {n["node-name"] for n in qmp("query-named-block-nodes", flat=True)}
        assert "vd0" in {e["name"] for e in qmp("qom-list", path="/machine/peripheral")}
    assert not {"sda-fmt", "sda-file"} & nodes and {"vda-fmt", "vda-file"} <= nodes

    stopped = vm.run(**dict(args, state="stopped"))
    assert not stopped.get("failed"), stopped["msg"]
    assert not alive(pid)  # state: stopped stops the adopted QEMU too


def test_a_drive_qemu_is_adopted_and_its_disk_removed_with_device_del_alone(vm):
    (pid, sock), root, data = drive_qemu(vm)
    args = adopt_and_hotplug(vm, sock, root, data)
    assert {d["id"]: d["origin"] for d in runtime_file(vm)["layout"]["devices"]}["sd0"] == "drive"
    with Qmp(sock) as qmp:
        assert "drive-sd0" in {b["device"] for b in qmp("query-block")}
    removed = vm.run(**dict(args, disks=[d for d in args["disks"] if d["name"] != "data"]))
    assert [(a["action"], a["id"]) for a in removed["actions"]] == [("detach", "sd0")]
    sent = [c["execute"] for c in removed["qmp_commands"]]
    assert "device_del" in sent and "blockdev-del" not in sent
    with Qmp(sock) as qmp:
        devices = {b["device"] for b in qmp("query-block")}
    assert "drive-sd0" not in devices and "drive-vd0" in devices
    assert vm.run(**dict(args, disks=[d for d in args["disks"] if d["name"] != "data"]))["changed"] is False
    assert alive(pid)


def ganeti_files(vm):
    """The 2.16 runtime file with this test's images, and a QEMU started the way Ganeti 2.16
    starts it from that file (-drive per disk, -device with its hvinfo)."""
    with open(os.path.join(DATA, "ganeti-2.16.json")) as handle:
        data = json.load(handle)
    paths = []
    for index, entry in enumerate(data[3]):
        path = str(vm.images / ("ganeti-disk%d.raw" % index))
        qemu_img("create", "-q", "-f", "raw", path, "16M")
        entry[1], entry[2] = path, None
        paths.append(path)
    runtime = str(vm.images / "web1.example.com")
    with open(runtime, "w") as handle:
        json.dump(data, handle)
    devices = []
    for (disk, path, _uri) in data[3]:
        info = disk["hvinfo"]
        devices += ["-drive", "file=%s,format=raw,if=none,id=%s" % (path, info["id"]),
                    "-device", ",".join([info["driver"]] + ["%s=%s" % (k, v) for k, v in info.items() if k != "driver"]
                                        + ["drive=" + info["id"]])]
    nic = data[1][0]
    info = nic["hvinfo"]
    nic_device = "%s,id=%s,bus=%s,addr=%s,netdev=%s,mac=%s" % (
        info["driver"], info["id"], info["bus"], info["addr"], info["id"], nic["mac"])
    devices += ["-netdev", "user,id=" + info["id"], "-device", nic_device]
    return runtime, paths, nic["mac"], devices


def test_a_ganeti_2_16_instance_is_adopted_with_its_runtime_file(vm):
    runtime, (root, scratch), mac, devices = ganeti_files(vm)
    pid, sock = start_by_hand(vm, devices)
    args = dict(name="web1", scsi_controller_type="virtio-scsi-pci",
                adopt={"qmp_socket": sock, "ganeti_runtime": runtime},
                disks=[dict(name="root", path=root), dict(name="scratch", path=scratch, disk_type="scsi-hd")],
                nics=[dict(name="lan", mac=mac)])
    first = vm.run(**args)
    assert not first.get("failed"), first["msg"]
    records = {d["name"]: d for d in runtime_file(vm)["layout"]["devices"]}
    assert records["root"]["id"] == "disk-7c079136-2573-4112" and records["root"]["origin"] == "drive"
    assert records["lan"]["id"] == "nic-61771629-eb60-512b"
    assert vm.run(**args)["changed"] is False

    removed = vm.run(**dict(args, disks=args["disks"][:1]))
    assert [(a["action"], a["id"]) for a in removed["actions"]] == [("detach", "disk-c3bb2f4e-7a51-4e7d")]
    with Qmp(sock) as qmp:
        assert "disk-c3bb2f4e-7a51-4e7d" not in {b["device"] for b in qmp("query-block")}
    assert alive(pid)
