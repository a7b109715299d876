# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Guest device dicts: hvinfo plus the properties that are not about placement (pure).

The same dict is a ``-device`` JSON at start and the arguments of ``device_add`` at hot-plug,
typed as QMP's schema wants them (QEMU >= 9.2 is strict): ints as ints, OnOffAuto as
"on"/"off", PCI ``addr`` as a hex string.
"""

from __future__ import annotations

DISK_DRIVERS = {
    "paravirtual": "virtio-blk-pci",
    "scsi-hd": "scsi-hd",
    "scsi-block": "scsi-block",
    "scsi-generic": "scsi-generic",
    "ide": "ide-hd",
}
CDROM_DRIVERS = {"ide": "ide-cd", "scsi": "scsi-cd"}
# Pass-through SCSI devices report the host device's own identity and have no write-cache
# property at all (hw/scsi/scsi-disk.c: scsi_block_properties; Proxmox fix #6680).
PASSTHROUGH_DRIVERS = ("scsi-block", "scsi-generic")


def hvinfo(driver: str, dev_id: str, placement: dict, drive=None) -> dict:
    """design-scsi-kvm's hvinfo: driver, id, bus and its address, plus drive when there is one."""
    info = {"driver": driver, "id": dev_id}
    info.update(placement)
    if drive:
        info["drive"] = drive
    return info


def disk_props(info: dict, serial: str, write_cache: str, bootindex=None, iothread=None,
               share_rw: bool = False) -> dict:
    props = dict(info)
    if share_rw:
        props["share-rw"] = True  # qdev block property: shares the write permission with another writer
    if iothread:
        props["iothread"] = iothread  # virtio-blk-pci's link<iothread>, by object id
    if info["driver"] not in PASSTHROUGH_DRIVERS:
        props["serial"] = serial
        props["write-cache"] = write_cache
    if info["driver"] == "scsi-hd":
        # With -blockdev the BlockBackend is anonymous, so scsi-hd would lose its VPD 0x83
        # identifier; pin it to the device id as libvirt and Proxmox do (hw/scsi/scsi-disk.c:
        # scsi_disk_emulate_vpd_page, page 0x83 falls back to the BlockBackend name).
        props["device_id"] = info["id"]
    if bootindex is not None:
        props["bootindex"] = bootindex
    return props


def iothread_object(iothread: str) -> dict:
    """The ``-object`` / ``object-add`` dict of a dedicated iothread."""
    return {"qom-type": "iothread", "id": iothread}


def throttle_group_object(group_id: str, qemu_limits: dict) -> dict:
    """The ``-object`` / ``object-add`` dict of a throttle group with all its limits
    (spec.qemu_limits; the dotted ``limits.*`` form does not work on the command line)."""
    return {"qom-type": "throttle-group", "id": group_id, "limits": dict(qemu_limits)}


def media_props(info: dict, bootindex=None) -> dict:
    """CD-ROM and floppy devices: no write-cache (read-only or removable media, as libvirt)."""
    props = dict(info)
    if bootindex is not None:
        props["bootindex"] = bootindex
    return props


NIC_DRIVERS = {"paravirtual": "virtio-net-pci", "e1000": "e1000", "rtl8139": "rtl8139"}


def netdev_props(nic, dev_id: str) -> dict:
    """The -netdev / netdev_add dict of a NIC's host side (id ``<nic id>.net``)."""
    props = {"type": nic.netdev, "id": dev_id + ".net"}
    if nic.netdev == "tap":
        props.update({"ifname": nic.ifname, "script": "no", "downscript": "no"})
    elif nic.netdev == "bridge":
        props["br"] = nic.bridge
    return props


def nic_props(info: dict, mac: str, bootindex=None) -> dict:
    props = dict(info)
    props["mac"] = mac
    if bootindex is not None:
        props["bootindex"] = bootindex
    return props
