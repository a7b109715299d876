"""With the tiny Linux guest: a disk qemu_device added is still there after a stop and a start
with qemu_instance's own declaration, and the guest sees it; one added live only is not."""

import os
import sys

import pytest

from .conftest import ROOT, run_module

GUEST = os.path.join(ROOT, "build", "guest")
sys.path.insert(0, os.path.join(ROOT, "tools", "guest"))
from agent import GuestAgent  # noqa: E402  pylint: disable=wrong-import-position

pytestmark = [
    pytest.mark.guest,
    pytest.mark.skipif(not os.path.exists(os.path.join(GUEST, "vmlinux")), reason="the tiny guest is not built (make guest)"),
]


def peripherals(vm):
    with vm.qmp() as qmp:
        return {p["name"] for p in qmp("qom-list", path="/machine/peripheral")}


def seen_serials(vm):
    """The serials of the disks the guest sees once it has two virtio disks (root and one more)."""
    with GuestAgent(os.path.join(vm.state_dir, "agent.sock"), timeout=90) as ga:
        ga.wait_ready()
        ga.wait_disk("vdb", timeout=30)
        return {d["serial"] for d in ga.disks() if d["serial"]}


def test_a_disk_qemu_device_added_survives_stop_and_start_unless_live_only(vm):
    boot = dict(kernel_path=os.path.join(GUEST, "vmlinux"), initrd_path=os.path.join(GUEST, "initramfs.gz"),
                kernel_args="console=ttyS0 panic=-1 quiet", agent_channel=True, unplug_timeout=60)
    declared = dict(boot, disks=[dict(name="root", path=vm.image("root.raw", "8M"), serial="R1")])
    assert vm.run(**declared)["changed"]

    def device(name, serial, **over):
        result = run_module("qemu_device", dict(name="t", state_dir=vm.state_dir, kind="disk", unplug_timeout=60,
                                                device=dict(name=name, path=vm.image(name + ".raw", "4M"),
                                                            serial=serial), **over))
        assert result["changed"] and not result.get("failed"), result.get("msg")
        return result["device"]["id"]

    kept, live_only = device("kept", "K1"), device("live", "L1", persistent=False)
    # While the QEMU runs, qemu_instance keeps both (qemu_device attached them).
    assert vm.run(**declared)["changed"] is False
    assert {kept, live_only} <= peripherals(vm)

    assert vm.run(state="stopped", **declared)["changed"]
    started = vm.run(**declared)  # qemu_instance's own declaration: root only
    assert started["changed"] and not started.get("failed"), started.get("msg")
    assert kept in peripherals(vm) and live_only not in peripherals(vm)
    assert seen_serials(vm) == {"R1", "K1"}
    assert vm.run(**declared)["changed"] is False
