"""Bad declarations end in a clear failure, with no QEMU left and no runtime file written."""

import json
import os
import re
import subprocess
import sys

import pytest

from .conftest import COLLECTIONS, run_module


def _disks(vm, n, **over):
    return [dict(dict(name="d%d" % i, path=vm.image("d%d.raw" % i)), **over) for i in range(n)]


CASES = {
    "unknown cache mode": (lambda vm: dict(disks=[dict(name="a", path=vm.image("a.raw"), cache="fast")]),
                           r"value of cache must be one of: .*got: fast found in disks"),
    "native aio with writeback": (lambda vm: dict(disks=[dict(name="a", path=vm.image("a.raw"),
                                                              cache="writeback", aio="native")]),
                                  r"disks\[a\]: aio 'native' requires cache.direct.*use cache 'none' or 'directsync'"),
    "9 disks on lsi": (lambda vm: dict(disks=_disks(vm, 9, disk_type="scsi-hd")),
                       r"disks\[d8\]: no free SCSI target: scsi_controller_type lsi has 8 targets.*virtio-scsi-pci"),
    "reservations leave no slot": (lambda vm: dict(disks=_disks(vm, 2), kvm_pci_reservations=31),
                                   r"disks\[d1\]: no free PCI slot.*lower kvm_pci_reservations"),
    "missing image": (lambda vm: dict(disks=[dict(name="a", path=str(vm.images / "nope.qcow2"), format="qcow2")]),
                      r"disks\[a\]: .*nope.qcow2 does not exist \(create it first, e.g. qemu-img create -f qcow2"),
    "qcow2 declared raw": (lambda vm: dict(disks=[dict(name="a", path=vm.image("a.qcow2", fmt="qcow2"))]),
                           r"disks\[a\]: .*holds a qcow2 image but is declared format raw; declare format: qcow2"),
    "raw declared qcow2": (lambda vm: dict(disks=[dict(name="a", path=vm.image("a.raw"), format="qcow2")]),
                           r"disks\[a\]: .*declared format qcow2 but has no qcow2 header"),
    "3 CD-ROMs": (lambda vm: dict(cdroms=[dict(name=n) for n in "abc"]),
                  r"cdroms: 3 CD-ROMs declared; an instance has at most 2"),
    "invalid instance name": (lambda vm: dict(name="my vm"), r"name: 'my vm' is not a valid instance name"),
    "invalid disk name": (lambda vm: dict(disks=[dict(name="a/b", path=vm.image("a.raw"))]),
                          r"disks: name 'a/b' is not valid"),
    "duplicate disk names": (lambda vm: dict(disks=[dict(name="a", path=vm.image("a.raw")),
                                                    dict(name="a", path=vm.image("b.raw"))]),
                             r"disk: name 'a' is declared twice"),
    "unreadable path (a directory)": (lambda vm: dict(disks=[dict(name="a", path=str(vm.images))]),
                                      r"disks\[a\]: .*images is a directory, not a regular file or a block device"),
    "detect_zeroes unmap without discard unmap": (
        lambda vm: dict(disks=[dict(name="a", path=vm.image("a.raw"), detect_zeroes="unmap")]),
        r"disks\[a\]: detect_zeroes 'unmap' requires discard 'unmap'"),
    "serial too long": (lambda vm: dict(disks=[dict(name="a", path=vm.image("a.raw"), serial="S" * 21)]),
                        r"disks\[a\]: serial 'S+' must be 1 to 20"),
    "ide disk read-only": (lambda vm: dict(disks=[dict(name="a", path=vm.image("a.raw"), disk_type="ide", mode="ro")]),
                           r"disks\[a\]: QEMU's IDE disks cannot be read-only"),
    "boot from a missing cdrom": (lambda vm: dict(boot_order="cdrom"), r"boot_order: cdrom needs a CD-ROM with an image"),
    "kernel_args without kernel": (lambda vm: dict(kernel_args="quiet"), r"initrd_path and kernel_args need kernel_path"),
    "qemu binary missing": (lambda vm: dict(qemu_binary="/nonexistent/qemu"),
                            r"qemu_binary: /nonexistent/qemu was not found"),
    "bad disk uuid": (lambda vm: dict(disks=[dict(name="a", path=vm.image("a.raw"), uuid="123")]),
                      r"disks\[a\].uuid: '123' is not a UUID"),
    "relative image path": (lambda vm: dict(disks=[dict(name="a", path="images/a.raw")]),
                            r"disks\[a\].path: 'images/a.raw' is a relative path; give an absolute path"),
    "memory 0": (lambda vm: dict(memory=0), r"memory: 0 MiB is too small"),
    "vcpus 0": (lambda vm: dict(vcpus=0), r"vcpus: 0 must be at least 1"),
    "disk UUIDs sharing three groups": (
        lambda vm: dict(disks=[dict(name="a", path=vm.image("a.raw"), uuid="9e7c85f6-b6e5-4243-b27d-680b78c6d203"),
                               dict(name="b", path=vm.image("b.raw"), uuid="9e7c85f6-b6e5-4243-0000-000000000000")]),
        r"disks\[b\]: its UUID .* gives device id disk-9e7c85f6-b6e5-4243, which disks\[a\] already has"),
    "qcow2 backing declared raw": (lambda vm: dict(disks=[dict(name="a", path=overlay(vm, "raw"), format="qcow2")]),
                                   r"disks\[a\]: the backing file .*base.qcow2 of .*top.qcow2 holds a qcow2 image but "
                                   r"the header declares it raw"),
    "kernel missing": (lambda vm: dict(kernel_path=str(vm.images / "vmlinux")),
                       r"kernel_path: .*vmlinux does not exist"),
    "relative kernel path": (lambda vm: dict(kernel_path="boot/vmlinux"),
                             r"^kernel_path: 'boot/vmlinux' is a relative path; give an absolute path"),
    "relative CD-ROM path": (lambda vm: dict(cdroms=[dict(name="cd", path="x.iso")]),
                             r"^cdroms\[cd\]\.path: 'x.iso' is a relative path; give an absolute path"),
}


def overlay(vm, backing_format):
    """A qcow2 overlay over a qcow2 base, whose header names the base's format as given."""
    base = vm.image("base.qcow2", fmt="qcow2")
    top = str(vm.images / "top.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", backing_format, top],
                   check=True, capture_output=True)
    return top


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_clearly_and_leaves_nothing(vm, case):
    build, message = CASES[case]
    result = vm.run(**build(vm))
    assert result.get("failed") is True, result
    assert re.search(message, result["msg"]), result["msg"]
    assert not os.path.exists(vm.state_dir)  # a failed first run leaves no state dir behind
    assert vm.pids() == []


def test_image_locked_by_another_qemu_fails_and_leaves_the_owner_alone(vm, tmp_path):
    shared = vm.image("shared.qcow2", fmt="qcow2")
    owner = vm.run(name="owner", disks=[dict(name="a", path=shared, format="qcow2")])
    assert owner["changed"]
    second = vm.run(name="thief", state_dir=str(tmp_path / "thief"),
                    disks=[dict(name="a", path=shared, format="qcow2")])
    assert second["failed"] and 'Failed to get "write" lock' in second["msg"]
    assert second["msg"].startswith("disks[a] (disk-")  # QEMU's -blockdev JSON is named as the declared disk
    assert "in use by another process" in second["msg"]
    assert not os.path.exists(str(tmp_path / "thief" / "runtime.json"))
    assert vm.pids() == [owner["pid"]]
    assert vm.run(name="owner", disks=[dict(name="a", path=shared, format="qcow2")])["changed"] is False


def test_broken_runtime_file_is_reported_not_replaced(vm):
    os.makedirs(vm.state_dir)
    path = os.path.join(vm.state_dir, "runtime.json")
    with open(path, "w") as handle:
        handle.write("{oops")
    result = vm.run(disks=[dict(name="a", path=vm.image("a.raw"))])
    assert result["failed"] and "not valid JSON" in result["msg"]
    assert open(path).read() == "{oops" and vm.pids() == []


def test_missing_qemu_qmp_library_is_reported(vm):
    argsfile = vm.images / "args.json"
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"name": "t", "state_dir": vm.state_dir}}))
    # A None entry in sys.modules makes "import qemu.qmp" raise ImportError, as on a host without it.
    code = ("import runpy, sys; sys.modules['qemu'] = None; sys.argv = ['qemu_instance', %r]; "
            "runpy.run_module('ansible_collections.blocklayer.qemu.plugins.modules.qemu_instance', "
            "run_name='__main__')" % str(argsfile))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          env=dict(os.environ, PYTHONPATH=COLLECTIONS))
    result = json.loads(proc.stdout)
    assert result["failed"] and "Failed to import the required Python library (qemu.qmp)" in result["msg"]
    assert not os.path.exists(vm.state_dir)


def runtime_bytes(state_dir):
    with open(os.path.join(state_dir, "runtime.json"), "rb") as handle:
        return handle.read()


def peripherals(vm):
    with vm.qmp() as qmp:
        return {p["name"] for p in qmp("qom-list", path="/machine/peripheral")}


def device(vm, kind, device, **options):
    return run_module("qemu_device", dict(options, name="t", state_dir=vm.state_dir, kind=kind, device=device))


def test_unplugging_the_boot_disk_needs_allow_boot_unplug_and_reasons_say_who_asked(vm):
    common = dict(scsi_controller_type="virtio-scsi-pci", unplug_timeout=10)  # scsi-hd unplugs without a guest
    root, b, c = [dict(name=n, path=vm.image(n + ".raw"), disk_type="scsi-hd") for n in ("root", "b", "c")]
    vm.run(disks=[root, b, c], **common)
    not_declared = vm.run(disks=[root, b], **common)
    assert [(a["action"], a["name"], a.get("reason")) for a in not_declared["actions"]] == [
        ("detach", "c", "not declared")]
    absent = device(vm, "disk", dict(name="b"), state="absent", unplug_timeout=10)
    assert [(a["action"], a["name"], a.get("reason")) for a in absent["actions"]] == [
        ("detach", "b", "state: absent")]
    root_id = json.loads(runtime_bytes(vm.state_dir))["layout"]["devices"][0]["id"]
    before = runtime_bytes(vm.state_dir)
    for refused, why in ((device(vm, "disk", dict(name="root"), state="absent"), "state: absent"),
                         (vm.run(disks=[], **common), "not declared")):
        assert refused["failed"] and refused["changed"] is False, refused
        assert refused["msg"].startswith("disks[root] (%s) is the device the guest boots from (bootindex 1) and would "
                                         "be unplugged (%s)" % (root_id, why)), refused["msg"]
        assert "allow_boot_unplug: true" in refused["msg"]
        assert "device_del" not in [c["execute"] for c in refused["qmp_commands"]]
    assert runtime_bytes(vm.state_dir) == before and root_id in peripherals(vm)
    gone = device(vm, "disk", dict(name="root"), state="absent", allow_boot_unplug=True, unplug_timeout=10)
    assert [(a["action"], a["name"]) for a in gone["actions"]] == [("detach", "root")] and gone["changed"]
    assert root_id not in peripherals(vm)


def test_a_relative_path_of_any_module_fails_naming_the_option_before_anything_runs(vm):
    a = dict(name="a", path=vm.image("a.qcow2", fmt="qcow2"), format="qcow2")
    vm.run(disks=[a])
    before = runtime_bytes(vm.state_dir)
    blockdev = dict(name="t", state_dir=vm.state_dir, disk="a")
    for result, option, path in (
            (run_module("qemu_blockdev", dict(blockdev, snapshot=dict(path="snap.qcow2"))), "snapshot.path",
             "snap.qcow2"),
            (run_module("qemu_blockdev", dict(blockdev, mirror=dict(path="copy.qcow2"))), "mirror.path", "copy.qcow2"),
            (run_module("qemu_blockdev", dict(name="t", state_dir=vm.state_dir, node="n", state="present",
                                              path="n.qcow2")), "path", "n.qcow2"),
            (device(vm, "disk", dict(name="b", path="b.raw")), "device.path", "b.raw")):
        assert result["failed"] and result["changed"] is False, result
        assert result["msg"].startswith("%s: '%s' is a relative path; give an absolute path" % (option, path))
        assert not result.get("qmp_commands")  # QEMU was not even asked
    assert runtime_bytes(vm.state_dir) == before


def test_a_failed_start_or_attach_that_left_nothing_reports_changed_false(vm, tmp_path):
    held = dict(name="held", path=vm.image("held.raw"))
    vm.run(disks=[held])
    vm.run(state="stopped")
    stopped = runtime_bytes(vm.state_dir)
    holder = vm.run(name="holder", state_dir=str(tmp_path / "holder"), disks=[held])  # takes the image's lock
    assert holder["changed"] and not holder.get("failed"), holder.get("msg")

    started = vm.run(disks=[held])
    assert started["failed"] and 'Failed to get "write" lock' in started["msg"], started
    assert started["changed"] is False
    assert runtime_bytes(vm.state_dir) == stopped and vm.pids() == []  # the holder runs in its own dir

    other = dict(name="other", path=vm.image("other.raw"))
    assert vm.run(disks=[other])["changed"]
    running = runtime_bytes(vm.state_dir)
    attached = vm.run(disks=[other, held])
    assert attached["failed"] and "what was added was removed" in attached["msg"], attached
    assert attached["changed"] is False
    assert runtime_bytes(vm.state_dir) == running
    with vm.qmp() as qmp:
        assert not [n for n in qmp("query-named-block-nodes", flat=True) if n["file"] == held["path"]]
