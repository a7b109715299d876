"""A QEMU started by the previous collection version (runtime format 1) is taken over live."""

import json
import os
import subprocess

from ansible_collections.blocklayer.qemu.plugins.module_utils import host

from .conftest import qemu_img, Qmp
from .helpers import mutating

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


def format_1_instance(vm):
    """Start QEMU exactly as the format-1 file in tests/data records, with this test's paths."""
    with open(os.path.join(DATA, "runtime-v1.json")) as handle:
        text = handle.read()
    text = text.replace("/var/lib/blocklayer-qemu/web1", vm.state_dir).replace("/srv/images/web1", str(vm.images))
    data = json.loads(text)
    for name, fmt, size in (("root.qcow2", "qcow2", "16M"), ("data.raw", "raw", "16M"), ("cd.iso", "raw", "1M")):
        qemu_img("create", "-q", "-f", fmt, vm.images / name, size)
    firmware_dirs, module_dir = host.qemu_dirs(vm.binary)
    argv = [vm.binary] + [a for d in firmware_dirs for a in ("-L", d)] + data["argv"][1:]
    data["argv"] = argv
    data["qemu"].update(binary=vm.binary, firmware_dirs=firmware_dirs, module_dir=module_dir)
    data["declaration"]["qemu_binary"] = vm.binary
    os.makedirs(vm.state_dir, mode=0o700)
    env = dict(os.environ, QEMU_MODULE_DIR=module_dir) if module_dir else None
    subprocess.run(argv, check=True, capture_output=True, env=env)
    with Qmp(os.path.join(vm.state_dir, "qmp.sock")) as qmp:
        qmp("cont")
    with open(os.path.join(vm.state_dir, "runtime.json"), "w") as handle:
        json.dump(data, handle)
    return data


def params(data, vm, **over):
    decl = data["declaration"]
    base = dict(name="web1", state_dir=vm.state_dir, accel="tcg", qemu_binary=vm.binary, shutdown_timeout=0,
                scsi_controller_type="virtio-scsi-pci", disk_cache="none",
                disks=[{k: d[k] for k in ("name", "path", "format", "disk_type")} for d in decl["disks"]],
                cdroms=[{"name": c["name"], "path": c["path"]} for c in decl["cdroms"]],
                nics=[{"name": n["name"]} for n in decl["nics"]])
    base.update(over)
    return base


def test_a_format_1_instance_is_taken_over_without_a_restart(vm):
    data = format_1_instance(vm)
    (pid,) = vm.pids()
    args = params(data, vm)
    same = vm.run(**args)
    assert not same.get("failed"), same["msg"]
    assert same["changed"] is False and same["pid"] == pid and mutating(same) == []
    with open(os.path.join(vm.state_dir, "runtime.json")) as handle:
        assert json.load(handle)["version"] == 1  # a no-op writes nothing

    extra = dict(name="extra", path=vm.image("extra.raw"), format="raw", disk_type="scsi-hd")
    added = vm.run(**dict(args, disks=args["disks"] + [extra]))
    assert added["changed"] and [a["action"] for a in added["actions"]] == ["attach"]
    assert vm.pids() == [pid]
    with open(os.path.join(vm.state_dir, "runtime.json")) as handle:
        saved = json.load(handle)
    assert saved["version"] == 2 and saved["host"]["pid"] == pid
    assert [d["name"] for d in saved["layout"]["devices"]] == ["root", "data", "installer", "lan", "extra"]
    assert saved["layout"]["devices"][0]["nodes"] == data["devices"][0]["nodes"]  # format-1 names kept
    removed = vm.run(**args)
    assert [(a["action"], a["name"]) for a in removed["actions"]] == [("detach", "extra")]
    assert vm.run(**args)["changed"] is False and vm.pids() == [pid]
