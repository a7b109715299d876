"""With the tiny Linux guest: what the guest sees of what qemu_instance declares and changes."""

import os

import pytest

from .conftest import GUEST, GUEST_MARKS, qemu_img
from .helpers import MiB, by_serial, image_has

pytestmark = GUEST_MARKS


def test_guest_sees_every_declared_device_and_its_writes_survive_stop(guest):
    virtio, scsi = guest.image("v.qcow2", "32M", "qcow2"), guest.image("s.raw", "48M")
    ide = guest.image("i.raw", "24M")
    declared = dict(scsi_controller_type="virtio-scsi-pci",
                    disks=[dict(name="v", path=virtio, format="qcow2", serial="V1"),
                           dict(name="s", path=scsi, disk_type="scsi-hd", serial="S1"),
                           dict(name="i", path=ide, disk_type="ide", serial="I1")],
                    cdroms=[dict(name="cd", path=os.path.join(GUEST, "data.iso"))],
                    floppy=dict(path=guest.image("f.img", "1440K")))
    assert guest.guest_run(**declared)["changed"]
    with guest.agent() as ga:
        seen = by_serial(ga)
        assert (seen["V1"]["bus"], seen["V1"]["size"]) == ("virtio", 32 * MiB)
        assert (seen["S1"]["bus"], seen["S1"]["size"]) == ("scsi", 48 * MiB)
        assert (seen["I1"]["bus"], seen["I1"]["size"]) == ("ata", 24 * MiB)
        names = {d["name"]: d for d in ga.disks()}
        assert ga.label("sr0") == "BLDATA" and names["sr0"]["ro"] == 1
        assert names["fd0"]["size"] == 1474560
        ga.write(seen["S1"]["name"], 4 * MiB, MiB, 0x5A)
    stopped = guest.guest_run(state="stopped", **declared)
    assert stopped["changed"] and guest.pids() == []
    assert image_has(scsi, 4 * MiB, MiB, 0x5A)


@pytest.mark.parametrize("controller", ["lsi", "megasas"])
def test_guest_sees_scsi_disks_on_emulated_hbas(guest, controller):
    disks = [dict(name="a", path=guest.image("a.raw", "16M"), disk_type="scsi-hd", serial="A1"),
             dict(name="b", path=guest.image("b.raw", "20M"), disk_type="scsi-hd", serial="B1")]
    guest.guest_run(scsi_controller_type=controller, disks=disks)
    with guest.agent() as ga:
        seen = by_serial(ga)
    assert (seen["A1"]["size"], seen["B1"]["size"]) == (16 * MiB, 20 * MiB)
    assert seen["A1"]["bus"] == seen["B1"]["bus"] == "scsi"


def test_boot_order_cdrom_boots_the_guest_from_the_cd(guest):
    result = guest.run(boot_order="cdrom", agent_channel=True,
                       cdroms=[dict(name="boot", path=os.path.join(GUEST, "boot.iso"))],
                       disks=[dict(name="a", path=guest.image("a.raw", "8M"))])
    assert result["changed"] and "-kernel" not in result["argv"]
    with guest.agent() as ga:  # only a guest booted from boot.iso answers
        assert ga.label("sr0") == "BLGUEST"


def test_hot_added_virtio_and_scsi_disks_are_seen_and_keep_their_data_after_unplug(guest):
    base = dict(scsi_controller_type="virtio-scsi-pci",
                disks=[dict(name="root", path=guest.image("root.raw", "8M"), disk_type="scsi-hd", serial="R1")])
    guest.guest_run(**base)
    with guest.agent() as ga:
        ga.wait_ready()
        hot = [dict(name="hv", path=guest.image("hv.qcow2", "16M", "qcow2"), format="qcow2", serial="HV"),
               dict(name="hs", path=guest.image("hs.raw", "24M"), disk_type="scsi-hd", serial="HS")]
        added = guest.guest_run(scsi_controller_type="virtio-scsi-pci", disks=base["disks"] + hot)
        assert [a["name"] for a in added["actions"]] == ["hv", "hs"]
        ga.wait_disk("vda")
        ga.wait_disk("sdb")
        seen = by_serial(ga)
        assert (seen["HV"]["size"], seen["HS"]["size"]) == (16 * MiB, 24 * MiB)
        ga.write(seen["HV"]["name"], MiB, MiB, 0xA5)
        ga.write(seen["HS"]["name"], 2 * MiB, MiB, 0x3C)
        removed = guest.guest_run(**base)
        # The guest cooperates: ACPI (virtio-blk) and virtio-scsi unplugs complete with the event.
        assert removed["unplug_pending"] == [] and [a["action"] for a in removed["actions"]] == ["detach"] * 2
        ga.wait_disk("vda", present=False)
        ga.wait_disk("sdb", present=False)
    assert image_has(hot[1]["path"], 2 * MiB, MiB, 0x3C)
    # The qcow2 image is read through qemu-img: the guest's writes are clusters, not raw offsets.
    out = os.path.join(guest.images, "hv.out")
    qemu_img("convert", "-O", "raw", hot[0]["path"], out)
    assert image_has(out, MiB, MiB, 0xA5)


def test_parallel_unplug_of_four_disks_is_one_round_trip(guest):
    root = [dict(name="root", path=guest.image("root.raw", "8M"))]
    four = [dict(name="d%d" % i, path=guest.image("d%d.raw" % i, "4M")) for i in range(4)]
    guest.guest_run(disks=root + four)
    with guest.agent() as ga:
        assert {d["name"] for d in ga.disks()} >= {"vda", "vdb", "vdc", "vdd", "vde"}
        removed = guest.guest_run(disks=root)
        sent = [c["execute"] for c in removed["qmp_commands"]]
        # every device_del is sent before any node is deleted: one wait covers all four
        first = sent.index("device_del")
        assert sent[first:first + 4] == ["device_del"] * 4 and sent[first + 4:first + 8] == ["blockdev-del"] * 4
        assert removed["unplug_pending"] == []
        for name in ("vdb", "vdc", "vdd", "vde"):
            ga.wait_disk(name, present=False)


@pytest.mark.parametrize("controller", ["lsi", "megasas"])
def test_hot_added_disk_on_emulated_hba_needs_a_guest_rescan(guest, controller):
    base = [dict(name="a", path=guest.image("a.raw", "8M"), disk_type="scsi-hd", serial="A1")]
    guest.guest_run(scsi_controller_type=controller, disks=base)
    with guest.agent() as ga:
        ga.wait_ready()
        extra = dict(name="b", path=guest.image("b.raw", "12M"), disk_type="scsi-hd", serial="B1")
        guest.guest_run(scsi_controller_type=controller, disks=base + [extra])
        ga.rescan()  # lsi and megasas do not tell Linux about a new disk
        assert by_serial(ga)["B1"]["size"] == 12 * MiB
        removed = guest.guest_run(scsi_controller_type=controller, disks=base)
        assert removed["unplug_pending"] == []
        ga.rescan()
        assert "B1" not in by_serial(ga)


def test_q35_hot_plug_into_a_root_port_is_seen_by_the_guest(guest):
    base = [dict(name="a", path=guest.image("a.raw", "8M"), serial="A1")]
    guest.guest_run(machine_type="q35", disks=base)
    with guest.agent() as ga:
        ga.wait_ready()
        extra = dict(name="b", path=guest.image("b.raw", "12M"), serial="B1")
        added = guest.guest_run(machine_type="q35", disks=base + [extra])
        (attach,) = added["actions"]
        assert added["devices"][attach["id"]]["bus"] == "rp1"  # the first spare root port
        ga.wait_disk("vdb")
        assert by_serial(ga)["B1"]["size"] == 12 * MiB
        removed = guest.guest_run(machine_type="q35", disks=base)
        assert removed["unplug_pending"] == []
        ga.wait_disk("vdb", present=False)
