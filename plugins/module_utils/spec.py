# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Module parameters -> validated, normalised instance specs (pure: no I/O).

Instance options keep Ganeti's hvparam names; per-disk options override the instance default.
Every error names the option, the device and the fix.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Optional

from ansible_collections.blocklayer.qemu.plugins.module_utils import cache, ids
from ansible_collections.blocklayer.qemu.plugins.module_utils.cache import IoSettings, io_settings
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Value

# Where each kind of device lives in qemu_instance's parameters (``disks[<name>]``, ``floppy``).
OPTION_GROUPS = {"disk": "disks", "cdrom": "cdroms", "floppy": "floppy", "nic": "nics", "controller": "controllers",
                 "throttle_group": "throttle_groups"}

DISK_TYPES = ("paravirtual", "scsi-hd", "scsi-block", "scsi-generic", "ide")
SCSI_DISK_TYPES = ("scsi-hd", "scsi-block", "scsi-generic")
SCSI_CONTROLLER_TYPES = ("lsi", "megasas", "virtio-scsi-pci")
CDROM_DISK_TYPES = ("ide", "scsi")
NIC_TYPES = ("paravirtual", "e1000", "rtl8139")
NETDEV_TYPES = ("user", "tap", "bridge")
BOOT_ORDERS = ("disk", "cdrom", "floppy", "network")
MACHINE_TYPES = ("pc", "q35")
ACCELS = ("auto", "kvm", "tcg")
FORMATS = ("raw", "qcow2")
MODES = ("rw", "ro")
MAX_CDROMS = 2
# virtio-blk and ATA serials are 20 bytes (VIRTIO_BLK_ID_BYTES, IDENTIFY words 10-19).
SERIAL_MAX = 20


@dataclass(init=False, repr=False, eq=False)
class HvParams(Value):
    disk_type: str = "paravirtual"
    scsi_controller_type: str = "lsi"
    kvm_pci_reservations: int = 12
    disk_cache: str = "default"
    disk_aio: str = "threads"
    disk_discard: str = "ignore"
    disk_detect_zeroes: str = "off"
    cdrom_disk_type: str = "ide"
    boot_order: str = "disk"
    nic_type: str = "paravirtual"
    # q35 only: pcie.0 cannot hot-plug, so PCI devices sit in root ports, and this many are
    # kept free for hot-plug beyond one per PCI device declared at start.
    pcie_root_ports: int = 4
    # A dedicated iothread for the virtio-scsi-pci controller (and so for every SCSI disk on it).
    scsi_iothread: bool = False


@dataclass(init=False, repr=False, eq=False)
class DiskSpec(Value):
    name: str
    uuid: str
    path: str
    format: str
    # The disk's size in bytes (a larger one grows the image); None: whatever the image is.
    size: Optional[int]
    # Another QEMU may write the same (raw) image: the device shares the write permission.
    share_rw: bool
    # Open the image although another process holds its lock (read-only nodes only).
    force_share: bool
    mode: str
    disk_type: str
    cache: str
    aio: str
    discard: str
    detect_zeroes: str
    serial: str
    # A dedicated iothread (virtio-blk only): the disk's I/O runs off QEMU's main loop.
    iothread: bool = False
    # I/O limits of the disk's own throttle group (normalised: only what limits), or the name
    # of a shared group of throttle_groups; at most one of them (docs/design.md "Throttling").
    limits: Optional[dict] = None
    throttle_group: Optional[str] = None

    @property
    def read_only(self) -> bool:
        return self.mode == "ro"

    def io(self) -> IoSettings:
        return io_settings("disks[%s]" % self.name, self.cache, self.aio, self.discard, self.detect_zeroes)


@dataclass(init=False, repr=False, eq=False)
class ThrottleGroupSpec(Value):
    """A named throttle group that several disks share (their I/O counts against one budget)."""

    name: str
    limits: dict = field(default_factory=dict)


@dataclass(init=False, repr=False, eq=False)
class MediaSpec(Value):
    """A CD-ROM or floppy drive; ``path`` is None for an empty drive."""

    kind: str
    name: str
    uuid: str
    path: Optional[str]
    disk_type: str


@dataclass(init=False, repr=False, eq=False)
class NicSpec(Value):
    name: str
    uuid: str
    nic_type: str
    mac: str
    netdev: str
    ifname: Optional[str] = None
    bridge: Optional[str] = None


@dataclass(init=False, repr=False, eq=False)
class MachineSpec(Value):
    memory: int
    vcpus: int
    machine_type: str
    accel: str
    kernel_path: Optional[str] = None
    initrd_path: Optional[str] = None
    kernel_args: Optional[str] = None
    agent_channel: bool = False
    # -cpu: a named model (and flags) for a fleet that migrates; None: cmdline.default_cpu.
    cpu_model: Optional[str] = None


@dataclass(init=False, repr=False, eq=False)
class AutostartSpec(Value):
    """Brought back at host boot and after a crash (docs/autostart.md): lower order first,
    then ``delay`` seconds before the next."""

    order: int = 0
    delay: float = 0.0


@dataclass(init=False, repr=False, eq=False)
class InstanceSpec(Value):
    name: str
    uuid: str
    state_dir: str
    qemu_binary: str
    machine: MachineSpec
    hvparams: HvParams
    disks: tuple = field(default_factory=tuple)
    cdroms: tuple = field(default_factory=tuple)
    floppy: Optional[MediaSpec] = None
    nics: tuple = field(default_factory=tuple)
    throttle_groups: tuple = field(default_factory=tuple)
    # None: no autostart (also what a runtime file written before the option means).
    autostart: Optional[AutostartSpec] = None

    def media(self) -> tuple:
        return self.cdroms + ((self.floppy,) if self.floppy else ())

    def to_dict(self) -> dict:
        return asdict(self)


def _choice(value, choices, what):
    if value not in choices:
        raise ConfigError("%s: %r is not one of %s" % (what, value, ", ".join(choices)))
    return value


def _serial(value, default, what):
    serial = default if value in (None, "") else value
    if len(serial) > SERIAL_MAX or not all(c.isalnum() or c in "-_." for c in serial):
        raise ConfigError(
            "%s: serial %r must be 1 to %d letters, digits, '-', '_' or '.' (guests truncate "
            "longer serials)" % (what, serial, SERIAL_MAX)
        )
    return serial


def default_serial(device_uuid: str) -> str:
    """The guest-visible serial of a disk declared without one: 20 hex digits of its UUID."""
    return device_uuid.replace("-", "")[:SERIAL_MAX]


def _unique(items, what):
    seen = set()
    for item in items:
        for key in ("name", "uuid"):
            value = getattr(item, key)
            if (key, value) in seen:
                raise ConfigError(
                    "%s: %s %r is declared twice; every %s needs its own %s" % (what, key, value, what, key)
                )
            seen.add((key, value))


def hvparams_from(params: dict) -> HvParams:
    hv = HvParams(**{k: params[k] for k in HvParams.__dataclass_fields__ if params.get(k) is not None})
    _choice(hv.disk_type, DISK_TYPES, "disk_type")
    _choice(hv.scsi_controller_type, SCSI_CONTROLLER_TYPES, "scsi_controller_type")
    _choice(hv.cdrom_disk_type, CDROM_DISK_TYPES, "cdrom_disk_type")
    _choice(hv.boot_order, BOOT_ORDERS, "boot_order")
    _choice(hv.nic_type, NIC_TYPES, "nic_type")
    if hv.scsi_iothread and hv.scsi_controller_type != "virtio-scsi-pci":
        raise ConfigError("scsi_iothread: the %s SCSI controller cannot run in an iothread, only virtio-scsi-pci "
                          "can; set scsi_controller_type: virtio-scsi-pci or drop scsi_iothread"
                          % hv.scsi_controller_type)
    if not isinstance(hv.pcie_root_ports, int) or not 0 <= hv.pcie_root_ports <= 64:
        raise ConfigError("pcie_root_ports: %r must be between 0 and 64" % (hv.pcie_root_ports,))
    if not isinstance(hv.kvm_pci_reservations, int) or not 1 <= hv.kvm_pci_reservations <= 31:
        raise ConfigError(
            "kvm_pci_reservations: %r must be between 1 and 31 (slots below it are left to QEMU)"
            % (hv.kvm_pci_reservations,)
        )
    return hv


# -- throttling -----------------------------------------------------------------------------------
# QEMU's ThrottleLimits (qapi/block-core.json), with '_' for '-': six rates, each with a burst
# rate (_max) and the burst's length in seconds (_max_length), plus iops_size.
THROTTLE_RATES = ("iops_total", "iops_read", "iops_write", "bps_total", "bps_read", "bps_write")
THROTTLE_FIELDS = tuple(f for rate in THROTTLE_RATES for f in (rate, rate + "_max", rate + "_max_length")) \
    + ("iops_size",)
# THROTTLE_VALUE_MAX (include/qemu/throttle.h); a burst length is an unsigned int
# (throttle_limits_to_config(), block/throttle-groups.c).
THROTTLE_VALUE_MAX = 10 ** 15
BURST_LENGTH_MAX = 2 ** 32 - 1
THROTTLE_GROUP_PREFIX = "tg."


def throttle_limits(raw, what: str) -> dict:
    """Declared limits -> only what limits (a zero rate is no limit, a burst of 1 s is QEMU's
    default), refused the way QEMU's throttle_is_valid() (util/throttle.c) refuses them."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("%s: %r is not a dict of limits like {iops_total: 200}" % (what, raw))
    unknown = sorted(set(raw) - set(THROTTLE_FIELDS))
    if unknown:
        raise ConfigError("%s: unknown limit %s; use %s" % (what, ", ".join(unknown), ", ".join(THROTTLE_FIELDS)))
    for key, value in raw.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ConfigError("%s.%s: %r must be a whole number, 0 or more" % (what, key, value))
    given = {k: raw[k] for k in THROTTLE_FIELDS if raw.get(k) is not None}
    for kind in ("iops", "bps"):
        for suffix in ("", "_max"):
            total, parts = kind + "_total" + suffix, [kind + "_read" + suffix, kind + "_write" + suffix]
            if given.get(total) and any(given.get(p) for p in parts):
                raise ConfigError("%s: %s and %s cannot be used at the same time; limit the total or reads "
                                  "and writes apart" % (what, total, " or ".join(p for p in parts if given.get(p))))
    if given.get("iops_size") and not any(given.get(r) for r in THROTTLE_RATES[:3]):
        raise ConfigError("%s: iops_size needs an iops limit (iops_total, iops_read or iops_write)" % what)
    for rate in THROTTLE_RATES:
        _check_bucket(what, rate, given.get(rate, 0), given.get(rate + "_max", 0), given.get(rate + "_max_length"))
    if given.get("iops_size", 0) > THROTTLE_VALUE_MAX:
        raise ConfigError("%s.iops_size: must be at most %d" % (what, THROTTLE_VALUE_MAX))
    return {k: v for k, v in given.items() if v and not (k.endswith("_max_length") and v == 1)}


def _check_bucket(what: str, rate: str, avg: int, burst: int, length) -> None:
    for key, value in ((rate, avg), (rate + "_max", burst)):
        if value > THROTTLE_VALUE_MAX:
            raise ConfigError("%s.%s: %d is more than QEMU allows (%d)" % (what, key, value, THROTTLE_VALUE_MAX))
    if burst and not avg:
        raise ConfigError("%s: %s_max (a burst rate) needs %s, the rate it bursts above" % (what, rate, rate))
    if burst and burst < avg:
        raise ConfigError("%s: %s_max %d is below %s %d; a burst rate must be at least the rate"
                          % (what, rate, burst, rate, avg))
    if length is None:
        return
    key = rate + "_max_length"
    if length == 0 or length > BURST_LENGTH_MAX:
        raise ConfigError("%s.%s: %d must be between 1 and %d seconds" % (what, key, length, BURST_LENGTH_MAX))
    if length > 1 and not burst:
        raise ConfigError("%s: %s needs %s_max, the burst rate it lasts for" % (what, key, rate))
    if burst and length > THROTTLE_VALUE_MAX // burst:
        raise ConfigError("%s.%s: %d seconds at %s_max %d is more than QEMU allows"
                          % (what, key, length, rate, burst))


def qemu_limits(limits) -> dict:
    """All 19 ThrottleLimits fields, QEMU-named: qom-set of ``limits`` merges, so what is not
    limited is sent as 0 (and a burst length as QEMU's default, 1)."""
    limits = limits or {}
    return {k.replace("_", "-"): limits.get(k, 1 if k.endswith("_max_length") else 0) for k in THROTTLE_FIELDS}


def throttle_group_id(name: str) -> str:
    """The QOM id of a shared group: ``tg.<name>``."""
    return THROTTLE_GROUP_PREFIX + name


def throttle_groups_from(raw_groups) -> tuple:
    groups = []
    for index, raw in enumerate(raw_groups or ()):
        name = (raw or {}).get("name")
        if not isinstance(name, str) or not ids.is_identifier(name) or len(name) > 63:
            raise ConfigError("throttle_groups[%d]: name %r is not valid; use up to 63 letters, digits, '-', '.' "
                              "or '_', starting with a letter" % (index, name))
        if name in {g.name for g in groups}:
            raise ConfigError("throttle_groups[%s]: declared twice; give each group its own name" % name)
        groups.append(ThrottleGroupSpec(name, throttle_limits(raw.get("limits"), "throttle_groups[%s].limits" % name)))
    return tuple(groups)


def _disk_throttle(raw: dict, what: str, disk_type: str, groups) -> dict:
    limits = throttle_limits(raw.get("limits"), what + ".limits") or None
    group = raw.get("throttle_group") or None
    if limits and group:
        raise ConfigError("%s: limits and throttle_group cannot both be set; give the disk limits of its own or "
                          "name a shared group" % what)
    if (limits or group) and disk_type in ("scsi-block", "scsi-generic"):
        raise ConfigError("%s: disk_type %s passes SCSI commands to the host device, past QEMU's throttling; "
                          "drop limits/throttle_group or use disk_type scsi-hd" % (what, disk_type))
    if group and group not in {g.name for g in groups}:
        raise ConfigError("%s.throttle_group: group %r is not declared; declare it in qemu_instance's "
                          "throttle_groups (vm_throttle_groups in the role) or drop throttle_group" % (what, group))
    return {"limits": limits, "throttle_group": group}


def disk_from(raw: dict, instance_uuid: str, hv: HvParams, supported_aio=cache.AIO_MODES,
              throttle_groups=()) -> DiskSpec:
    name = ids.check_device_name(raw.get("name"), "disks")
    what = "disks[%s]" % name
    uuid = (ids.canonical_uuid(raw["uuid"], what + ".uuid") if raw.get("uuid")
            else ids.device_uuid(instance_uuid, "disk", name))
    path = raw.get("path")
    if not path:
        raise ConfigError("%s: path is required: the image file or block device to attach" % what)
    absolute(path, what + ".path")
    disk_type = _choice(raw.get("disk_type") or hv.disk_type, DISK_TYPES, what + ".disk_type")
    fmt = _choice(raw.get("format") or "raw", FORMATS, what + ".format")
    if disk_type in ("scsi-block", "scsi-generic") and fmt != "raw":
        raise ConfigError(
            "%s: disk_type %s passes a host SCSI device through and needs format raw, not %s"
            % (what, disk_type, fmt)
        )
    mode = _choice(raw.get("mode") or "rw", MODES, what + ".mode")
    share_rw, force_share = _sharing(raw, what, fmt, mode)
    io = {key: raw.get(key) or getattr(hv, "disk_" + key) for key in ("cache", "aio", "discard", "detect_zeroes")}
    cache.io_settings(what, io["cache"], io["aio"], io["discard"], io["detect_zeroes"], supported_aio)
    iothread = bool(raw.get("iothread"))
    if iothread and disk_type != "paravirtual":
        raise ConfigError(
            "%s: iothread is for virtio-blk disks (disk_type paravirtual), and this one is %s; a SCSI disk runs "
            "in its controller's iothread (scsi_iothread: true with scsi_controller_type: virtio-scsi-pci), an "
            "IDE disk in none: drop iothread or use disk_type paravirtual" % (what, disk_type))
    if disk_type == "ide" and mode == "ro":
        raise ConfigError(
            "%s: QEMU's IDE disks cannot be read-only; use disk_type paravirtual or scsi-hd, "
            "or mode rw" % what
        )
    return DiskSpec(
        name=name,
        uuid=uuid,
        path=path,
        format=fmt,
        size=parse_size(raw.get("size"), what + ".size"),
        share_rw=share_rw,
        force_share=force_share,
        mode=mode,
        disk_type=disk_type,
        serial=_serial(raw.get("serial"), default_serial(uuid), what),
        iothread=iothread,
        **dict(io, **_disk_throttle(raw, what, disk_type, throttle_groups))
    )


# Binary units, as qemu-img takes them (qemu_strtosz: K = 1024, case-insensitive).
_SIZE = re.compile(r"\s*([0-9]+)\s*([kmgtp]?)\s*\Z", re.IGNORECASE)
_UNITS = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}
SECTOR = 512


def parse_size(value, what: str) -> Optional[int]:
    """``size``: bytes as an int, or a string like ``10G``, ``512M``, ``64K``, ``4096`` -> bytes."""
    if value is None or value == "":
        return None
    match = _SIZE.match(value) if isinstance(value, str) else None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif match:
        size = int(match.group(1)) << _UNITS[match.group(2).lower()]
    else:
        raise ConfigError("%s: %r is not a size; give bytes (10737418240) or a number with a binary unit "
                          "K, M, G, T or P (10G)" % (what, value))
    if size <= 0:
        raise ConfigError("%s: %r must be larger than 0; e.g. 10G" % (what, value))
    if size % SECTOR:
        # qcow2 refuses it ("The new size must be a multiple of 512", qcow2_co_truncate); a raw file gets
        # it, but the block layer counts whole sectors (bdrv_refresh_total_sectors rounds up), so QEMU
        # would report another size than the declared one on every run.
        raise ConfigError("%s: %s is not a multiple of 512 bytes; QEMU sizes disks in 512-byte sectors: "
                          "give e.g. %s" % (what, value, format_size(-(-size // SECTOR) * SECTOR)))
    return size


def format_size(size: int) -> str:
    """Bytes in the largest binary unit that divides them: 2147483648 -> ``2G``."""
    for unit, shift in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if shift and size % (1 << shift) == 0:
            return "%d%s" % (size >> shift, unit.upper())
    return str(size)


def _sharing(raw: dict, what: str, fmt: str, mode: str) -> tuple:
    """share_rw and force_share, refused where they would corrupt the image or QEMU refuses them."""
    share_rw, force_share = bool(raw.get("share_rw")), bool(raw.get("force_share"))
    if share_rw and fmt != "raw":
        raise ConfigError(
            "%s: share_rw lets another QEMU write the image too, and two writers of a %s image would corrupt "
            "its metadata (the image's allocation tables); use format: raw, with a filesystem or cluster "
            "software in the guests that is aware of the other writer, or drop share_rw" % (what, fmt))
    if force_share and mode != "ro":
        # bdrv_open_common: "force-share=on can only be used with read-only images".
        raise ConfigError(
            "%s: force_share opens an image whose lock another process holds, which QEMU allows only for "
            "read-only images; set mode: ro or drop force_share" % what)
    return share_rw, force_share


def grow_to(what: str, declared: Optional[int], current: Optional[int], read_only: bool = False,
            block_device: bool = False) -> Optional[int]:
    """The size to grow a disk's image to, None when it stays; a shrink is refused.

    ``current`` is the image's virtual size (None when unknown: nothing is decided).
    """
    if declared is None or current is None or declared == current:
        return None
    if declared < current:
        raise ConfigError(
            "%s: %s is smaller than the image's %s; shrinking is refused because the guest's data past %s "
            "would be lost; declare at least %s"
            % (what, format_size(declared), format_size(current), format_size(declared), format_size(current)))
    if read_only:
        raise ConfigError("%s: %s is larger than the image's %s, and a read-only disk (mode: ro) cannot grow; "
                          "declare %s, or grow the image first (qemu-img resize)"
                          % (what, format_size(declared), format_size(current), format_size(current)))
    if block_device:
        # file-posix truncates a host device only down to its own size ("Cannot grow device files").
        raise ConfigError("%s: %s is larger than the block device's %s, and QEMU cannot grow a device; grow it "
                          "on the host first (e.g. lvextend), or declare %s"
                          % (what, format_size(declared), format_size(current), format_size(current)))
    return declared


def media_from(raw: dict, kind: str, instance_uuid: str, disk_type: str) -> MediaSpec:
    group = "cdroms" if kind == "cdrom" else "floppy"
    name = ids.check_device_name(raw.get("name") or ("floppy" if kind == "floppy" else None), group)
    what = "%s[%s]" % (group, name) if kind == "cdrom" else "floppy"
    uuid = (ids.canonical_uuid(raw["uuid"], what + ".uuid") if raw.get("uuid")
            else ids.device_uuid(instance_uuid, kind, name))
    absolute(raw.get("path"), what + ".path")
    return MediaSpec(kind=kind, name=name, uuid=uuid, path=raw.get("path") or None, disk_type=disk_type)


_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")


def default_mac(nic_uuid: str) -> str:
    """A stable locally administered MAC in QEMU's 52:54:00 range, from the NIC's UUID."""
    tail = nic_uuid.replace("-", "")[-6:]
    return "52:54:00:%s:%s:%s" % (tail[0:2], tail[2:4], tail[4:6])


def nic_from(raw: dict, instance_uuid: str, hv: HvParams) -> NicSpec:
    name = ids.check_device_name(raw.get("name"), "nics")
    what = "nics[%s]" % name
    uuid = (ids.canonical_uuid(raw["uuid"], what + ".uuid") if raw.get("uuid")
            else ids.device_uuid(instance_uuid, "nic", name))
    mac = (raw.get("mac") or default_mac(uuid)).lower()
    if not _MAC.match(mac) or int(mac[:2], 16) & 1:
        raise ConfigError("%s: mac %r is not a unicast MAC address like 52:54:00:12:34:56" % (what, mac))
    netdev = _choice(raw.get("netdev") or "user", NETDEV_TYPES, what + ".netdev")
    if netdev == "tap" and not raw.get("ifname"):
        raise ConfigError("%s: netdev tap needs ifname, the host tap interface to use" % what)
    if netdev == "bridge" and not raw.get("bridge"):
        raise ConfigError("%s: netdev bridge needs bridge, the host bridge to join" % what)
    return NicSpec(name=name, uuid=uuid, nic_type=_choice(raw.get("nic_type") or hv.nic_type, NIC_TYPES,
                                                          what + ".nic_type"),
                   mac=mac, netdev=netdev, ifname=raw.get("ifname") if netdev == "tap" else None,
                   bridge=raw.get("bridge") if netdev == "bridge" else None)


# A CPU model and its flags as -cpu takes them (e.g. Westmere, host, qemu64,+ssse3,-x2apic).
_CPU_MODEL = re.compile(r"[A-Za-z][A-Za-z0-9._-]*(,[+-]?[A-Za-z0-9._-]+(=[A-Za-z0-9._-]+)?)*\Z")


def _cpu_model(value) -> Optional[str]:
    if not value:
        return None
    if not _CPU_MODEL.match(value):
        raise ConfigError("cpu_model: %r is not a CPU model as -cpu takes it; give a model name and optional "
                          "flags, e.g. Westmere or host or qemu64,+ssse3 (qemu-system-x86_64 -cpu help lists "
                          "the models)" % value)
    return value


def instance_from(params: dict, supported_aio=cache.AIO_MODES) -> InstanceSpec:
    """Build the instance spec from module parameters (already type-checked by Ansible)."""
    name = params["name"]
    if not name or not ids.is_identifier(name) or len(name) > 63:
        raise ConfigError(
            "name: %r is not a valid instance name; use up to 63 letters, digits, '-', '.' or '_', "
            "starting with a letter" % (name,)
        )
    uuid = ids.canonical_uuid(params["uuid"], "uuid") if params.get("uuid") else ids.instance_uuid(name)
    hv = hvparams_from(params)
    machine = MachineSpec(
        memory=256 if params.get("memory") is None else params["memory"],
        vcpus=1 if params.get("vcpus") is None else params["vcpus"],
        machine_type=_choice(params.get("machine_type") or "pc", MACHINE_TYPES, "machine_type"),
        accel=_choice(params.get("accel") or "auto", ACCELS, "accel"),
        kernel_path=params.get("kernel_path") or None,
        initrd_path=params.get("initrd_path") or None,
        kernel_args=params.get("kernel_args") or None,
        agent_channel=bool(params.get("agent_channel")),
        cpu_model=_cpu_model(params.get("cpu_model")),
    )
    if machine.memory < 16:
        raise ConfigError("memory: %r MiB is too small; give at least 16" % machine.memory)
    if machine.vcpus < 1:
        raise ConfigError("vcpus: %r must be at least 1" % machine.vcpus)
    for option in ("kernel_path", "initrd_path"):
        absolute(getattr(machine, option), option)
    if (machine.initrd_path or machine.kernel_args) and not machine.kernel_path:
        raise ConfigError("initrd_path and kernel_args need kernel_path (direct kernel boot)")

    groups = throttle_groups_from(params.get("throttle_groups"))
    disks = tuple(disk_from(d, uuid, hv, supported_aio, groups) for d in params.get("disks") or ())
    _unique(disks, "disk")
    raw_cdroms = params.get("cdroms") or []
    if len(raw_cdroms) > MAX_CDROMS:
        raise ConfigError(
            "cdroms: %d CD-ROMs declared; an instance has at most %d (Ganeti's cdrom and cdrom2)"
            % (len(raw_cdroms), MAX_CDROMS)
        )
    cdroms = tuple(media_from(c, "cdrom", uuid, hv.cdrom_disk_type) for c in raw_cdroms)
    _unique(cdroms, "cdrom")
    floppy = media_from(params["floppy"], "floppy", uuid, "floppy") if params.get("floppy") else None
    nics = tuple(nic_from(n, uuid, hv) for n in params.get("nics") or ())
    _unique(nics, "nic")
    _unique_macs(nics)
    _unique_ids([("disk", d) for d in disks] + [("cdrom", c) for c in cdroms] + [("nic", n) for n in nics]
                + ([("floppy", floppy)] if floppy else []))

    if hv.boot_order == "cdrom" and not any(c.path for c in cdroms):
        raise ConfigError("boot_order: cdrom needs a CD-ROM with an image in cdroms")
    if hv.boot_order == "floppy" and not (floppy and floppy.path):
        raise ConfigError("boot_order: floppy needs a floppy with an image")
    if hv.boot_order == "network" and not nics:
        raise ConfigError("boot_order: network needs a NIC in nics")
    return InstanceSpec(
        name=name,
        uuid=uuid,
        state_dir=params["state_dir"],
        qemu_binary=params.get("qemu_binary") or "qemu-system-x86_64",
        machine=machine,
        hvparams=hv,
        disks=disks,
        cdroms=cdroms,
        floppy=floppy,
        nics=nics,
        throttle_groups=groups,
        autostart=autostart_from(params),
    )


def autostart_from(params: dict) -> Optional[AutostartSpec]:
    if not params.get("autostart"):
        return None
    delay = float(params.get("autostart_delay") or 0)
    if delay < 0:
        raise ConfigError("autostart_delay: %r is negative; give the seconds to wait after starting this "
                          "instance before the next (0: none)" % delay)
    return AutostartSpec(order=int(params.get("autostart_order") or 0), delay=delay)


def absolute(path, what: str) -> None:
    """QEMU resolves a relative path against its own working directory (``/`` once daemonized),
    not the task's, so a relative path would mean one file at start and another at hot-plug."""
    if path and "://" not in path and not path.startswith("/"):
        raise ConfigError("%s: %r is a relative path; give an absolute path (QEMU does not run in the "
                          "task's working directory)" % (what, path))


def _unique_ids(devices) -> None:
    """Device ids use the first three UUID groups: two UUIDs sharing them would collide in QEMU."""
    seen = {}
    for kind, item in devices:
        dev_id = ids.device_id(kind, item.uuid)
        label = "%ss[%s]" % (kind, item.name) if kind != "floppy" else "floppy"
        if dev_id in seen:
            raise ConfigError("%s: its UUID %s gives device id %s, which %s already has (ids keep the first "
                              "three UUID groups); give one of them another UUID"
                              % (label, item.uuid, dev_id, seen[dev_id]))
        seen[dev_id] = label


def _unique_macs(nics) -> None:
    seen = {}
    for nic in nics:
        if nic.mac in seen:
            raise ConfigError("nics[%s]: mac %s is also used by nics[%s]; give each NIC its own"
                              % (nic.name, nic.mac, seen[nic.mac]))
        seen[nic.mac] = nic.name


def params_from_declaration(declaration: dict) -> dict:
    """A recorded declaration (InstanceSpec.to_dict()) back as qemu_instance parameters."""
    params = {k: declaration[k] for k in ("name", "uuid", "state_dir", "qemu_binary")}
    params.update(declaration["machine"])
    params.update(declaration["hvparams"])
    for group in ("disks", "cdroms", "nics"):
        params[group] = [dict(item) for item in declaration.get(group) or []]
    params["floppy"] = dict(declaration["floppy"]) if declaration.get("floppy") else None
    params["throttle_groups"] = [dict(g) for g in declaration.get("throttle_groups") or []]
    autostart = declaration.get("autostart")  # absent in files written before it: off
    params.update(autostart=bool(autostart), autostart_order=(autostart or {}).get("order", 0),
                  autostart_delay=(autostart or {}).get("delay", 0.0))
    return params
