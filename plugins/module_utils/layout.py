# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Instance spec + what the host says about each path -> every device placed (pure).

The layout is what the runtime file records and what the command line and hot-plug are built
from: per device its id, hvinfo, node chain and device properties.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Optional

from ansible_collections.blocklayer.qemu.plugins.module_utils import blockdev, devices, ids
from ansible_collections.blocklayer.qemu.plugins.module_utils.cache import io_settings
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Value
from ansible_collections.blocklayer.qemu.plugins.module_utils.spec import (
    SCSI_DISK_TYPES, InstanceSpec, grow_to, qemu_limits, throttle_group_id)
from ansible_collections.blocklayer.qemu.plugins.module_utils.topology import (
    ROOT_PORT_DRIVER, SCSI_CONTROLLER_ID, SCSI_CONTROLLERS, IdeAllocator, PciAllocator, RootPortAllocator,
    ScsiAllocator, pci_bus, pci_slot, root_ports)

QCOW2_MAGIC = b"QFI\xfb"


@dataclass(init=False, repr=False, eq=False)
class Backing(Value):
    """One image below a qcow2: its path, the format the image above declares for it (None when
    it declares none) and its first four bytes (None when it cannot be read)."""

    path: str
    declared_format: Optional[str]
    magic: Optional[bytes]
    # file or block, as the host says (a declared overlay's chain opens it with that driver).
    kind: str = "file"


@dataclass(init=False, repr=False, eq=False)
class PathFacts(Value):
    """What the host says about a path: ``kind`` is file, block, char, http, https,
    missing, directory, other or unreadable; ``magic`` the first four bytes of a file;
    ``backing`` the chain below a qcow2 image, top first; ``virtual_size`` the disk size."""

    kind: str
    magic: bytes = b""
    backing: tuple = ()
    # The image's virtual size in bytes as QEMU will see it (None: not an image, or unknown).
    virtual_size: Optional[int] = None


@dataclass(init=False, repr=False, eq=False)
class Device(Value):
    """One placed device: what the runtime file records about it."""

    kind: str
    name: str
    uuid: str
    id: str
    hvinfo: dict
    props: dict
    nodes: tuple = ()
    spec: dict = field(default_factory=dict)
    netdev: Optional[dict] = None
    # QOM objects only this device uses (its own iothread), created before it, deleted after it.
    objects: tuple = ()

    def to_dict(self) -> dict:
        data = asdict(self)
        data["nodes"] = list(self.nodes)
        data["objects"] = list(self.objects)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Device":
        """A runtime-file record back as a Device (extra keys such as state are dropped)."""
        return cls(**{k: (tuple(data[k]) if k in ("nodes", "objects") else data[k])
                      for k in cls.__dataclass_fields__ if k in data})


@dataclass(init=False, repr=False, eq=False)
class Layout(Value):
    controllers: tuple
    devices: tuple
    globals: tuple = ()
    # Shared throttle groups some disk uses: runtime records {"name", "id", "limits"}.
    throttle_groups: tuple = ()
    # Standalone nodes qemu_blockdev opened (runtime records, standalone.py).
    named_nodes: tuple = ()

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
    _check_backing(what, path, facts.backing)
    return facts.kind


def _check_backing(what: str, path: str, chain) -> None:
    """The same rule one level down: a backing file must be what its overlay's header says."""
    above = path
    for below in chain:
        if below.magic is None:
            raise ConfigError("%s: the backing file %s of %s is missing or unreadable; restore it or "
                              "rebase the image (qemu-img rebase)" % (what, below.path, above))
        actual = "qcow2" if below.magic == QCOW2_MAGIC else "raw"
        if below.declared_format is None:
            raise ConfigError("%s: %s names its backing file %s without a format, so QEMU would probe it; "
                              "set it: qemu-img rebase -u -b %s -F %s %s"
                              % (what, above, below.path, below.path, actual, above))
        if below.declared_format == "raw" and actual == "qcow2":
            raise ConfigError("%s: the backing file %s of %s holds a qcow2 image but the header declares it "
                              "raw; the guest would see qcow2 metadata. Fix it: qemu-img rebase -u -b %s -F "
                              "qcow2 %s" % (what, below.path, above, below.path, above))
        if below.declared_format == "qcow2" and actual != "qcow2":
            raise ConfigError("%s: the backing file %s of %s is declared qcow2 in the header but has no qcow2 "
                              "header; fix it with qemu-img rebase -u -F raw" % (what, below.path, above))
        above = below.path


def _controller(props: dict) -> Device:
    return Device("controller", props["id"], "", props["id"], dict(props), dict(props))


class Placer:
    """Allocates addresses for new devices around those already placed.

    At start nothing is placed yet; at hot-plug ``placed`` are the runtime file's records
    and ``live_pci_slots`` the slots query-pci shows taken on the root bus.
    """

    def __init__(self, spec: InstanceSpec, controllers=(), placed=(), live_pci_slots=(), chains=None):
        self.spec = spec
        # Per device id, the chain (blockdev.Layer list) a disk had when its QEMU last ran, when
        # that is not just the declared image: a start rebuilds it (docs/block-graph.md).
        self.chains = chains or {}
        hv = spec.hvparams
        self.machine_type = spec.machine.machine_type
        self.controllers = list(controllers)
        infos = [c.hvinfo for c in self.controllers] + [d.hvinfo for d in placed]
        bus = pci_bus(self.machine_type)
        used_slots = {pci_slot(i["addr"]) for i in infos if i.get("bus") == bus and "addr" in i}
        self.pci = PciAllocator(self.machine_type, hv.kvm_pci_reservations, used_slots | set(live_pci_slots))
        ports = [c.id for c in self.controllers if c.hvinfo["driver"] == ROOT_PORT_DRIVER]
        self.ports = RootPortAllocator(ports, {i["bus"] for i in infos if i.get("bus") in ports})
        self.ide = IdeAllocator(self.machine_type, {(i["bus"], i["unit"]) for i in infos
                                                    if i["driver"] in ("ide-hd", "ide-cd")})
        self.scsi = ScsiAllocator(hv.scsi_controller_type, {i["scsi-id"] for i in infos if "scsi-id" in i})

    # -- controllers --------------------------------------------------------------------------
    def add_root_ports(self, count: int) -> None:
        for props in root_ports(count, self.spec.hvparams.kvm_pci_reservations):
            self.pci.used.add(pci_slot(props["addr"]))
            self.controllers.append(_controller(props))
            self.ports.port_ids.append(props["id"])

    def pci_placement(self, what: str) -> dict:
        return self.ports.take(what) if self.machine_type == "q35" else self.pci.take(what)

    def scsi_controller(self):
        """The SCSI controller to add, or None when the instance has one."""
        if any(c.id == SCSI_CONTROLLER_ID for c in self.controllers):
            return None
        driver = SCSI_CONTROLLERS[self.spec.hvparams.scsi_controller_type].driver
        ctrl = _controller(devices.hvinfo(driver, SCSI_CONTROLLER_ID, self.pci_placement("the SCSI controller")))
        if self.spec.hvparams.scsi_iothread:  # virtio-scsi-pci only (spec.hvparams_from)
            iothread = ids.iothread_id(ctrl.id)
            ctrl = replace(ctrl, props=dict(ctrl.props, iothread=iothread),
                           objects=(devices.iothread_object(iothread),))
        self.controllers.append(ctrl)
        return ctrl

    # -- devices ------------------------------------------------------------------------------
    def disk(self, disk, facts: dict, bootindex=None) -> Device:
        what = "disks[%s]" % disk.name
        path_kind = check_path(what, disk.path, facts[disk.path], "disk", disk.format, disk.disk_type)
        dev_id = ids.device_id("disk", disk.uuid)
        io = disk.io()
        nodes = self._disk_nodes(what, disk, dev_id, path_kind, facts, io)
        grow_to(what + ".size", disk.size, facts[disk.path].virtual_size, disk.read_only,
                path_kind == "block")  # refuses a shrink before anything starts
        if disk.disk_type == "paravirtual":
            placement = self.pci_placement(what)
        elif disk.disk_type == "ide":
            placement = self.ide.take(what)
        else:
            placement = self.scsi.take(what)
        info = devices.hvinfo(devices.DISK_DRIVERS[disk.disk_type], dev_id, placement, blockdev.top_node(nodes))
        iothread = ids.iothread_id(dev_id) if disk.iothread else None  # virtio-blk only (spec.disk_from)
        objects = (devices.iothread_object(iothread),) if iothread else ()
        nodes, group = throttled(dev_id, nodes, disk.limits, disk.throttle_group, disk.read_only)
        objects += (group,) if group else ()
        info = dict(info, drive=blockdev.top_node(nodes))
        props = devices.disk_props(info, disk.serial, io.cache.write_cache(), bootindex, iothread,
                                   share_rw=disk.share_rw)
        return Device("disk", disk.name, disk.uuid, dev_id, info, props, tuple(nodes), asdict(disk), None, objects)

    def _disk_nodes(self, what, disk, dev_id, path_kind, facts, io) -> list:
        chain = self.chains.get(dev_id) or declared_chain(disk, facts)
        if not chain:
            return blockdev.node_chain(dev_id, disk.path, path_kind, disk.format, io, disk.read_only,
                                       force_share=disk.force_share)
        below = {b.path: b.kind for b in facts[disk.path].backing}  # the declared image's backing files

        def kind_of(path):
            if path == disk.path:
                return path_kind
            return facts[path].kind if path in facts else below.get(path, "missing")
        for layer in chain:
            kind = kind_of(layer.path)
            if kind not in ("file", "block"):
                raise ConfigError("%s: the image %s of its current chain (recorded in the runtime file) is %s; "
                                  "restore it: starting without it would hide the guest's writes"
                                  % (what, layer.path, "missing" if kind == "missing" else "a " + kind))
        return blockdev.chain_nodes(dev_id, chain, kind_of, io, disk.read_only)

    def media(self, media, facts: dict, bootindex=None) -> Device:
        what = "%s[%s]" % ("cdroms" if media.kind == "cdrom" else "floppy", media.name)
        dev_id = ids.device_id(media.kind, media.uuid)
        nodes = medium_chain(self.spec, media, facts, dev_id)
        if media.kind == "floppy":
            driver, placement = "floppy", {"unit": 0}
        else:
            driver = devices.CDROM_DRIVERS[media.disk_type]
            placement = self.ide.take(what) if media.disk_type == "ide" else self.scsi.take(what)
        info = devices.hvinfo(driver, dev_id, placement, blockdev.top_node(nodes))
        props = devices.media_props(info, bootindex)
        return Device(media.kind, media.name, media.uuid, dev_id, info, props, tuple(nodes), asdict(media))

    def nic(self, nic, bootindex=None) -> Device:
        dev_id = ids.device_id("nic", nic.uuid)
        netdev = devices.netdev_props(nic, dev_id)
        info = devices.hvinfo(devices.NIC_DRIVERS[nic.nic_type], dev_id, self.pci_placement("nics[%s]" % nic.name))
        info["netdev"] = netdev["id"]
        props = devices.nic_props(info, nic.mac, bootindex)
        return Device("nic", nic.name, nic.uuid, dev_id, info, props, (), asdict(nic), netdev)


def declared_chain(disk, facts: dict) -> list:
    """A declared qcow2 overlay's whole chain, bottom-up: the backing files its header names
    (checked by check_path) as images of the disk, named like the chains qemu_blockdev builds,
    so that commit and stream work on them and QEMU opens no node under a name of its own.
    [] for an image without a backing file, and for force_share (which a chain does not carry)."""
    below = facts[disk.path].backing
    if not below or disk.force_share:
        return []
    images = [(b.path, b.declared_format) for b in reversed(below)] + [(disk.path, disk.format)]
    return [blockdev.Layer(gen, path, fmt) for gen, (path, fmt) in enumerate(images, 1)]


def own_group_id(dev_id: str) -> str:
    """A disk's own throttle group (its ``limits``): ``<device id>.tg``, a QOM object id."""
    return dev_id + ".tg"


def throttled(dev_id: str, nodes: list, limits, group_name, read_only: bool):
    """A disk's chain with its throttle node on top (or none), and its own group object to
    create (None for no limits or a shared group, which is instance-level)."""
    nodes = blockdev.without_throttle(nodes)
    if not (limits or group_name):
        return nodes, None
    group_id = throttle_group_id(group_name) if group_name else own_group_id(dev_id)
    node = blockdev.throttle_node(dev_id, group_id, blockdev.below_throttle(nodes), read_only)
    own = None if group_name else devices.throttle_group_object(group_id, qemu_limits(limits))
    return nodes + [node], own


def shared_groups(spec: InstanceSpec, names) -> tuple:
    """Runtime records of the declared shared groups named in ``names``, in declaration order."""
    return tuple({"name": g.name, "id": throttle_group_id(g.name), "limits": qemu_limits(g.limits)}
                 for g in spec.throttle_groups if g.name in set(names))


def medium_chain(spec: InstanceSpec, media, facts: dict, dev_id: str, roles=blockdev.ROLES) -> list:
    """The read-only (CD) or read-write (floppy) chain of a removable medium; [] when empty."""
    if not media.path:
        return []
    what = "%s[%s]" % ("cdroms" if media.kind == "cdrom" else "floppy", media.name)
    path_kind = blockdev.path_kind_of_url(media.path) or check_path(what, media.path, facts[media.path], media.kind)
    io = io_settings(what, spec.hvparams.disk_cache, "threads", "ignore", "off")
    return blockdev.node_chain(dev_id, media.path, path_kind, "raw", io, read_only=media.kind == "cdrom",
                               media_kind=media.kind, roles=roles)


def needs_scsi_controller(spec: InstanceSpec) -> bool:
    return any(d.disk_type in SCSI_DISK_TYPES for d in spec.disks) or any(c.disk_type == "scsi" for c in spec.cdroms)


def pci_device_count(spec: InstanceSpec) -> int:
    return int(needs_scsi_controller(spec)) + sum(d.disk_type == "paravirtual" for d in spec.disks) + len(spec.nics)


def layout_instance(spec: InstanceSpec, facts: dict, chains=None) -> Layout:
    """Place every declared device for a start. ``facts`` maps each local path to PathFacts;
    ``chains`` are the disks' recorded chains (Placer)."""
    hv = spec.hvparams
    placer = Placer(spec, chains=chains)
    if spec.machine.machine_type == "q35":
        placer.add_root_ports(pci_device_count(spec) + hv.pcie_root_ports)
    if needs_scsi_controller(spec):
        placer.scsi_controller()
    if spec.floppy and spec.machine.machine_type == "q35":
        # q35 has no built-in floppy controller (hw/i386/pc_q35.c creates no isa-fdc).
        placer.controllers.append(_controller({"driver": "isa-fdc", "id": "fdc"}))

    placed = [placer.disk(d, facts, 1 if (hv.boot_order == "disk" and i == 0) else None)
              for i, d in enumerate(spec.disks)]
    boot_cd = next((c.name for c in spec.cdroms if c.path), None) if hv.boot_order == "cdrom" else None
    placed += [placer.media(m, facts, 1 if m.kind == "cdrom" and m.name == boot_cd else None)
               for m in spec.media()]
    placed += [placer.nic(n, 1 if (hv.boot_order == "network" and i == 0) else None)
               for i, n in enumerate(spec.nics)]
    # The floppy device has no bootindex; its controller does (bootindexA for unit 0).
    global_props = ("isa-fdc.bootindexA=1",) if hv.boot_order == "floppy" else ()
    groups = shared_groups(spec, {d.throttle_group for d in spec.disks if d.throttle_group})
    return Layout(tuple(placer.controllers), tuple(placed), global_props, groups)


def recorded_chains(spec: InstanceSpec, devices) -> dict:
    """The chains of ``devices`` (runtime records) a start must rebuild: per declared disk whose
    record has the declared image in its chain (first declared, or the current top), when the
    chain is more than that one image. Another declared path means another disk image: fresh."""
    declared = {ids.device_id("disk", d.uuid): d for d in spec.disks}
    chains = {}
    for record in devices:
        disk = declared.get(record["id"])
        chain = blockdev.layers(record.get("nodes") or []) if disk and record["kind"] == "disk" else []
        if not chain or chain == [blockdev.Layer(1, disk.path, disk.format)]:
            continue
        if disk.path in ((record.get("spec") or {}).get("path"), chain[-1].path):
            chains[record["id"]] = chain
    return chains


def declared_paths(spec: InstanceSpec) -> list:
    """Every local path the layout will ask facts about (URLs need none)."""
    paths = [d.path for d in spec.disks]
    paths += [m.path for m in spec.media() if m.path and not blockdev.path_kind_of_url(m.path)]
    return paths
