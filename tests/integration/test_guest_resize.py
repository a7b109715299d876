"""With the tiny Linux guest: a disk grown live is seen at its new size by the guest."""

import os
import time

from .conftest import BOOT, GUEST_MARKS, GuestAgent
from .helpers import MiB

pytestmark = GUEST_MARKS


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
    data = dict(name="data", path=vm.image("data.qcow2", "16M", "qcow2"), format="qcow2", serial="GROW1")
    vm.run(disks=[data], **BOOT)
    with GuestAgent(os.path.join(vm.state_dir, "agent.sock"), timeout=90) as ga:
        ga.wait_ready()
        dev = next(d["name"] for d in ga.disks() if d["serial"] == "GROW1")
        assert guest_bytes(ga, dev) == 16 * MiB
        grown = vm.run(disks=[dict(data, size="40M")], **BOOT)
        assert [(a["action"], a["name"]) for a in grown["actions"]] == [("resize", "data")]
        assert wait_guest_bytes(ga, dev, 40 * MiB) == 40 * MiB
