"""Bad declarations end in a clear failure, with no QEMU left and no runtime file written."""

import json
import os
import re
import subprocess
import sys

import pytest

from .conftest import COLLECTIONS


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
