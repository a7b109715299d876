# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Instance spec + what the host says about each path -> every device placed (pure).

The layout is what the runtime file records and what the command line and hot-plug are built
from: per device its id, hvinfo, node chain and device properties.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ansible_collections.blocklayer.qemu.plugins.module_utils import blockdev, devices, ids
from ansible_collections.blocklayer.qemu.plugins.module_utils.cache import io_settings
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.spec import SCSI_DISK_TYPES, InstanceSpec
from ansible_collections.blocklayer.qemu.plugins.module_utils.topology import (
    SCSI_CONTROLLER_ID, SCSI_CONTROLLERS, IdeAllocator, PciAllocator, ScsiAllocator)

QCOW2_MAGIC = b"QFI\xfb"


@dataclass(frozen=True)
class PathFacts:
    """What the host says about a path: ``kind`` is file, block, char, http, https,
    missing, directory, other or unreadable; ``magic`` the first four bytes of a file."""

    kind: str
    magic: bytes = b""


@dataclass(frozen=True)
class Device:
    kind: str
    name: str
    uuid: str
    id: str
    hvinfo: dict
    props: dict
    nodes: tuple = ()
    spec: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["nodes"] = list(self.nodes)
        return data


@dataclass(frozen=True)
class Layout:
    controllers: tuple
    devices: tuple
    globals: tuple = ()

    def all_devices(self) -> tuple:
        return self.controllers + self.devices


_PATH_KINDS = {
    "disk": ("file", "block", "char"),
    "cdrom": ("file", "block", "http", "https"),
    "floppy": ("file", "block"),
}


def check_path(what: str, path: str, facts: PathFacts, kind: str, fmt: str = "raw",
               disk_type: str = "") -> str:
    """Refuse a path QEMU would choke on, with the fix; returns its path kind."""
    if facts.kind == "missing":
        hint = " (create it first, e.g. qemu-img create -f %s %s 10G)" % (fmt, path) if kind == "disk" else ""
        raise ConfigError("%s: %s does not exist%s" % (what, path, hint))
    if facts.kind == "unreadable":
        raise ConfigError("%s: %s cannot be opened for reading; fix its permissions" % (what, path))
    if facts.kind not in _PATH_KINDS[kind]:
        raise ConfigError(
            "%s: %s is a %s, not %s" % (what, path, facts.kind, " or ".join(
                {"file": "a regular file", "block": "a block device", "char": "a SCSI generic device",
                 "http": "an http URL", "https": "an https URL"}[k] for k in _PATH_KINDS[kind]))
        )
    if disk_type == "scsi-block" and facts.kind != "block":
        raise ConfigError("%s: disk_type scsi-block needs a host block device, and %s is not one" % (what, path))
    if disk_type == "scsi-generic" and facts.kind != "char":
        raise ConfigError("%s: disk_type scsi-generic needs a host SCSI generic device (/dev/sgN)" % what)
    if disk_type not in ("scsi-block", "scsi-generic") and facts.kind == "char":
        raise ConfigError("%s: %s is a character device; only disk_type scsi-generic takes one" % (what, path))
    is_qcow2 = facts.magic == QCOW2_MAGIC
    # raw never probes: a qcow2 image declared raw would show the guest qcow2 metadata.
    if fmt == "raw" and is_qcow2:
        raise ConfigError(
            "%s: %s holds a qcow2 image but is declared format raw; declare format: qcow2" % (what, path)
        )
    if fmt == "qcow2" and facts.kind == "file" and not is_qcow2:
        raise ConfigError(
            "%s: %s is declared format qcow2 but has no qcow2 header; declare format: raw or "
            "point path at a qcow2 image" % (what, path)
        )
    return facts.kind


def layout_instance(spec: InstanceSpec, facts: dict) -> Layout:
    """Place every declared device. ``facts`` maps each declared path to its PathFacts."""
    hv = spec.hvparams
    machine_type = spec.machine.machine_type
    pci = PciAllocator(machine_type, hv.kvm_pci_reservations)
    ide = IdeAllocator(machine_type)
    scsi = ScsiAllocator(hv.scsi_controller_type)
    controllers = []
    needs_scsi = any(d.disk_type in SCSI_DISK_TYPES for d in spec.disks) or any(
        c.disk_type == "scsi" for c in spec.cdroms)
    if needs_scsi:
        info = devices.hvinfo(SCSI_CONTROLLERS[hv.scsi_controller_type].driver, SCSI_CONTROLLER_ID,
                              pci.take("the SCSI controller"))
        controllers.append(Device("controller", SCSI_CONTROLLER_ID, "", SCSI_CONTROLLER_ID, info, dict(info)))
    if spec.floppy and machine_type == "q35":
        # q35 has no built-in floppy controller (reference §2.5).
        info = {"driver": "isa-fdc", "id": "fdc"}
        controllers.append(Device("controller", "fdc", "", "fdc", info, dict(info)))

    placed = []
    boot_disk_done = hv.boot_order != "disk"
    for disk in spec.disks:
        what = "disks[%s]" % disk.name
        path_kind = check_path(what, disk.path, facts[disk.path], "disk", disk.format, disk.disk_type)
        dev_id = ids.device_id("disk", disk.uuid)
        io = disk.io()
        nodes = blockdev.node_chain(dev_id, disk.path, path_kind, disk.format, io, disk.read_only)
        if disk.disk_type == "paravirtual":
            placement = pci.take(what)
        elif disk.disk_type == "ide":
            placement = ide.take(what)
        else:
            placement = scsi.take(what)
        info = devices.hvinfo(devices.DISK_DRIVERS[disk.disk_type], dev_id, placement, blockdev.top_node(nodes))
        bootindex = None if boot_disk_done else 1
        boot_disk_done = True
        props = devices.disk_props(info, disk.serial, io.cache.write_cache(), bootindex)
        placed.append(Device("disk", disk.name, disk.uuid, dev_id, info, props, tuple(nodes), asdict(disk)))

    boot_cdrom_done = hv.boot_order != "cdrom"
    media_io = io_settings("media", hv.disk_cache, "threads", "ignore", "off")
    for media in spec.media():
        what = "%s[%s]" % ("cdroms" if media.kind == "cdrom" else "floppy", media.name)
        dev_id = ids.device_id(media.kind, media.uuid)
        nodes = []
        if media.path:
            url_kind = blockdev.path_kind_of_url(media.path)
            path_kind = url_kind or check_path(what, media.path, facts[media.path], media.kind)
            nodes = blockdev.node_chain(dev_id, media.path, path_kind, "raw", media_io,
                                        read_only=media.kind == "cdrom", media_kind=media.kind)
        if media.kind == "floppy":
            driver, placement = "floppy", {"unit": 0}
        else:
            driver = devices.CDROM_DRIVERS[media.disk_type]
            placement = ide.take(what) if media.disk_type == "ide" else scsi.take(what)
        info = devices.hvinfo(driver, dev_id, placement, blockdev.top_node(nodes))
        bootindex = None
        if not boot_cdrom_done and media.kind == "cdrom" and media.path:
            bootindex, boot_cdrom_done = 1, True
        props = devices.media_props(info, bootindex)
        placed.append(Device(media.kind, media.name, media.uuid, dev_id, info, props, tuple(nodes), asdict(media)))

    # The floppy device has no bootindex; its controller does (bootindexA for unit 0).
    global_props = ("isa-fdc.bootindexA=1",) if hv.boot_order == "floppy" else ()
    return Layout(tuple(controllers), tuple(placed), global_props)


def declared_paths(spec: InstanceSpec) -> list:
    """Every local path the layout will ask facts about (URLs need none)."""
    paths = [d.path for d in spec.disks]
    paths += [m.path for m in spec.media() if m.path and not blockdev.path_kind_of_url(m.path)]
    return paths
