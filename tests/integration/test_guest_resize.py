"""With the tiny Linux guest: a disk grown live is seen at its new size by the guest."""

import os
import time

from .test_guest import GUEST, MiB, pytestmark  # noqa: F401  pylint: disable=unused-import
from .test_guest import GuestAgent


def guest_bytes(ga, dev):
    """The size the guest's kernel has for ``dev``: /sys/block/<dev>/size counts 512-byte sectors."""
    return int(ga.run("cat /sys/block/%s/size" % dev).strip()) * 512


def wait_guest_bytes(ga, dev, want, timeout=60):
    """The guest's size of ``dev`` once it is ``want`` (the capacity change reaches the guest as a
    virtio config interrupt, after block_resize returned); fails at the deadline."""
    deadline = time.monotonic() + timeout
    seen = guest_bytes(ga, dev)
    while seen != want and time.monotonic() < deadline:
        seen = guest_bytes(ga, dev)
    return seen


def test_guest_sees_a_virtio_disk_grown_live(vm):
    boot = dict(kernel_path=os.path.join(GUEST, "vmlinux"), initrd_path=os.path.join(GUEST, "initramfs.gz"),
                kernel_args="console=ttyS0 panic=-1 quiet", agent_channel=True)
    data = dict(name="data", path=vm.image("data.qcow2", "16M", "qcow2"), format="qcow2", serial="GROW1")
    vm.run(disks=[data], **boot)
    with GuestAgent(os.path.join(vm.state_dir, "agent.sock"), timeout=90) as ga:
        ga.wait_ready()
        dev = next(d["name"] for d in ga.disks() if d["serial"] == "GROW1")
        assert guest_bytes(ga, dev) == 16 * MiB
        grown = vm.run(disks=[dict(data, size="40M")], **boot)
        assert [(a["action"], a["name"]) for a in grown["actions"]] == [("resize", "data")]
        assert wait_guest_bytes(ga, dev, 40 * MiB) == 40 * MiB
