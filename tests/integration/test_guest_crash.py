"""With the tiny guest: a hot-add killed after device_add is adopted, and the guest's data is intact."""

import subprocess

from .conftest import BOOT, GUEST_MARKS
from .helpers import MiB, by_serial, image_has, run_killed, runtime_of

pytestmark = GUEST_MARKS


def test_a_hot_add_killed_after_device_add_is_adopted_and_the_guest_keeps_its_data(guest):
    s = dict(name="s", path=guest.image("s.raw", "16M"), disk_type="scsi-hd", serial="S1")
    c = dict(name="c", path=guest.image("c.qcow2", "24M", "qcow2"), format="qcow2", disk_type="scsi-hd", serial="C1")
    boot = dict(BOOT, unplug_timeout=60, scsi_controller_type="virtio-scsi-pci")
    assert guest.guest_run(disks=[s], **boot)["changed"]
    with guest.agent() as ga:
        ga.write(by_serial(ga)["S1"]["name"], 4 * MiB, MiB, 0x5A)
        # blockdev-add (the format node, its protocol node inside), device_add: killed right after
        # QEMU plugged the disk in.
        assert run_killed(guest, guest.args(disks=[s, c], **boot), 2)
        assert [e["action"] for e in runtime_of(guest)["journal"]] == ["attach"]
        ga.wait_disk("sdb")  # the guest has the disk although the run died before recording it
        again = guest.guest_run(disks=[s, c], **boot)
        assert [a["action"] for a in again["actions"]] == ["recover"]
        assert "adopted" in again["actions"][0]["reason"]
        seen = by_serial(ga)
        assert seen["C1"]["size"] == 24 * MiB
        assert ga.read_is(seen["S1"]["name"], 4 * MiB, MiB, 0x5A)
        ga.write(seen["C1"]["name"], 2 * MiB, MiB, 0xA5)
    assert guest.guest_run(disks=[s, c], **boot)["changed"] is False
    assert guest.guest_run(state="stopped", disks=[s, c], **boot)["changed"]
    assert image_has(s["path"], 4 * MiB, MiB, 0x5A)
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0xa5 2M 1M", c["path"]],
                         capture_output=True, text=True, check=True).stdout
    assert "read 1048576/1048576 bytes" in out and "Pattern verification failed" not in out
