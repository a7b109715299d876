# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reading back the layout of a QEMU the collection did not start (pure; docs/migration.md "Adoption").

``queries.adoption`` (shell) asks QEMU the read-only queries; ``found_layout`` turns their answers into
format-2 records, and ``bind`` gives each device the name and spec of the declared disk or NIC
it is, refusing what does not fit. Devices on ``-blockdev`` nodes keep their node names and
chain (origin ``blockdev``); devices started with ``-drive`` (their BlockBackend has a name)
get origin ``drive``, whose nodes QEMU owns and ``device_del`` removes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional

from ansible_collections.blocklayer.qemu.plugins.module_utils.blockdev import top_node
from ansible_collections.blocklayer.qemu.plugins.module_utils.devices import DISK_DRIVERS, NIC_DRIVERS
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Record
from ansible_collections.blocklayer.qemu.plugins.module_utils.runtime import ORIGIN_BLOCKDEV, ORIGIN_DRIVE, STATE_ATTACHED
from ansible_collections.blocklayer.qemu.plugins.module_utils.topology import ROOT_PORT_DRIVER, SCSI_CONTROLLERS
from ansible_collections.blocklayer.qemu.plugins.module_utils.verify import block_by_id, network_clients

CONTROLLER_DRIVERS = tuple(m.driver for m in SCSI_CONTROLLERS.values()) + (ROOT_PORT_DRIVER,)
_DISK_TYPES = {driver: disk_type for disk_type, driver in DISK_DRIVERS.items()}
_NIC_TYPES = {driver: nic_type for nic_type, driver in NIC_DRIVERS.items()}
# The devices whose properties adoption reads (queries.adoption).
ADOPTED_DRIVERS = tuple(_DISK_TYPES) + tuple(_NIC_TYPES) + CONTROLLER_DRIVERS
PROTOCOL_DRIVERS = ("file", "host_device")
FORMAT_DRIVERS = ("qcow2", "raw")
_PCI_PROPS = ("addr",)
_SCSI_PROPS = ("channel", "scsi-id", "lun")
PERIPHERAL = "/machine/peripheral/"


def props_to_read(driver: str) -> tuple:
    """The qom-get properties that place and connect a device of this QOM type."""
    props = ("parent_bus",)
    if driver.startswith("scsi-"):
        props += _SCSI_PROPS
    elif driver not in ("ide-hd", "ide-cd", "floppy"):
        props += _PCI_PROPS
    if driver in _DISK_TYPES:
        props += ("drive", "serial")
    if driver in _NIC_TYPES:
        props += ("netdev", "mac")
    return props


def _versioned_machine(qom_type) -> Optional[str]:
    suffix = "-machine"  # TYPE_MACHINE_SUFFIX, include/hw/boards.h
    return qom_type[:-len(suffix)] if isinstance(qom_type, str) and qom_type.endswith(suffix) else None


# QEMU's CPU model for x86 machines given no -cpu (hw/i386/pc.c: TARGET_DEFAULT_CPU_TYPE).
DEFAULT_CPU = "qemu64"


def cpu_of(argv: list) -> str:
    """The -cpu a QEMU was started with, as given (model and flags), or QEMU's default."""
    for index, arg in enumerate(argv[:-1]):
        if arg == "-cpu":
            return argv[index + 1]
    return DEFAULT_CPU


def peripherals(qom_list: list) -> dict:
    return {p["name"]: p["type"][len("child<"):-1] for p in qom_list if p.get("type", "").startswith("child<")}


@dataclass(init=False, repr=False, eq=False)
class Found(Record):
    """What a running QEMU has, as records (named after their QEMU ids until ``bind``)."""

    controllers: List[dict] = field(default_factory=list)
    devices: List[dict] = field(default_factory=list)
    # Devices with an id that the collection does not manage (a balloon, a CD-ROM, ...).
    ignored: List[str] = field(default_factory=list)
    accel: str = "tcg"
    # The versioned machine type (None when not read): a migration target must emulate it.
    machine: Optional[str] = None


def found_layout(answers: dict) -> Found:
    """The answers of ``read`` -> controller and device records (pure)."""
    found = Found(accel="kvm" if (answers.get("query-kvm") or {}).get("enabled") else "tcg",
                  machine=_versioned_machine(answers.get("machine")))
    backends = block_by_id(answers["query-block"])
    named = {n["node-name"]: n for n in answers["query-named-block-nodes"] if n.get("node-name")}
    netdev_types = _netdev_types(answers.get("human-monitor-command") or "")
    for dev_id, driver in sorted(peripherals(answers["qom-list"]).items()):
        props = answers["qom-get"].get(dev_id)
        if props is None:
            found.ignored.append("%s (%s)" % (dev_id, driver))
            continue
        info = _hvinfo(dev_id, driver, props)
        if driver in CONTROLLER_DRIVERS:
            found.controllers.append(_record("controller", dev_id, info, dict(info)))
        elif driver in _NIC_TYPES:
            found.devices.append(_nic(dev_id, info, props, netdev_types))
        else:
            found.devices.append(_disk(dev_id, info, props, backends.get(dev_id), named))
    return found


def _record(kind: str, dev_id: str, info: dict, props: dict, **extra) -> dict:
    record = {"kind": kind, "name": dev_id, "uuid": "", "id": dev_id, "hvinfo": info, "props": props,
              "nodes": [], "netdev": None, "objects": [], "spec": {}}
    record.update(extra)
    return record


def _hvinfo(dev_id: str, driver: str, props: dict) -> dict:
    """design-scsi-kvm's hvinfo from QOM: the bus is the last part of ``parent_bus``; a PCI
    ``addr`` reads back as devfn (slot << 3 | function)."""
    info = {"driver": driver, "id": dev_id, "bus": str(props.get("parent_bus") or "").rsplit("/", 1)[-1]}
    if "addr" in props:
        slot, function = props["addr"] >> 3, props["addr"] & 7
        info["addr"] = "0x%x" % slot if not function else "0x%x.%x" % (slot, function)
    for key in _SCSI_PROPS:
        if key in props:
            info[key] = props[key]
    return info


def _netdev_types(network: str) -> dict:
    """``info network``: each netdev -> its type (``user``, ``tap``, ...; a NIC's is ``nic``)."""
    return {name: fields["type"] for name, fields in network_clients(network).items()
            if fields.get("type") and fields["type"] != "nic"}


def _nic(dev_id: str, info: dict, props: dict, netdev_types: dict) -> dict:
    netdev_id = props.get("netdev") or ""
    info = dict(info, netdev=netdev_id)
    netdev = {"id": netdev_id, "type": netdev_types.get(netdev_id, "unknown")}
    seen = {"mac": props.get("mac"), "nic_type": _NIC_TYPES[info["driver"]], "netdev": netdev["type"]}
    return _record("nic", dev_id, info, dict(info, mac=props.get("mac")), netdev=netdev, seen=seen,
                   state=STATE_ATTACHED, origin=ORIGIN_BLOCKDEV)


def _disk(dev_id: str, info: dict, props: dict, backend: Optional[dict], named: dict) -> dict:
    inserted = (backend or {}).get("inserted") or {}
    device_props = dict(info, drive=props.get("drive"))
    if props.get("serial"):
        device_props["serial"] = props["serial"]
    seen = {"disk_type": _DISK_TYPES[info["driver"]], "read_only": bool(inserted.get("ro"))}
    if backend and backend.get("device"):
        # -drive: the BlockBackend has a name; its nodes are QEMU's own (auto-named).
        image = inserted.get("image") or {}
        seen.update(path=image.get("filename") or inserted.get("file"), format=inserted.get("drv"))
        return _record("disk", dev_id, dict(info), device_props, seen=seen, state=STATE_ATTACHED, origin=ORIGIN_DRIVE)
    if not inserted.get("node-name"):
        raise ConfigError("adopt: disk %s (%s) has no medium; adoption takes disks with an image only: "
                          "hot-unplug it first" % (dev_id, info["driver"]))
    nodes = chain(dev_id, inserted["node-name"], named)
    top = next(n for n in reversed(nodes) if n["driver"] in FORMAT_DRIVERS)
    seen.update(path=named[top["file"]]["file"], format=top["driver"])
    return _record("disk", dev_id, dict(info, drive=top_node(nodes)), device_props, nodes=nodes, seen=seen,
                   state=STATE_ATTACHED, origin=ORIGIN_BLOCKDEV)


def chain(dev_id: str, top: str, named: dict) -> list:
    """The nodes under ``top``, bottom-up, as ``blockdev-add`` arguments.

    Before QEMU 10.1 ``query-named-block-nodes`` names no children, so a format node's
    protocol child is the protocol node of the same file, and its backing the format node of
    its ``backing-image`` file; anything else (filters, several candidates) is refused.
    """
    found = []
    name = top
    while name:
        node = named.get(name)
        if node is None or node.get("drv") not in FORMAT_DRIVERS:
            raise ConfigError("adopt: disk %s sits on node %s (driver %s); adoption takes chains of %s over %s "
                              "nodes only" % (dev_id, name, (node or {}).get("drv"), "/".join(FORMAT_DRIVERS),
                                              "/".join(PROTOCOL_DRIVERS)))
        proto = _only(dev_id, name, [n for n in named.values() if n.get("drv") in PROTOCOL_DRIVERS
                                     and n.get("file") == node.get("file")], "protocol node of " + node["file"])
        backing_file = ((node.get("image") or {}).get("backing-image") or {}).get("filename")
        below = None
        if backing_file:
            below = _only(dev_id, name, [n for n in named.values() if n.get("drv") in FORMAT_DRIVERS
                                         and n.get("file") == backing_file and n["node-name"] != name],
                          "format node of its backing file " + backing_file)["node-name"]
        fmt = dict(_node_args(node), driver=node["drv"], file=proto["node-name"])
        if below:
            fmt["backing"] = below
        found[:0] = [dict(_node_args(proto), driver=proto["drv"], filename=proto["file"]), fmt]
        name = below
    return found


def _only(dev_id: str, name: str, candidates: list, what: str) -> dict:
    if len(candidates) != 1:
        raise ConfigError("adopt: disk %s: node %s has %d candidates for its %s; adoption needs exactly one"
                          % (dev_id, name, len(candidates), what))
    return candidates[0]


def _node_args(node: dict) -> dict:
    cache = node.get("cache") or {}
    return {"node-name": node["node-name"], "read-only": bool(node.get("ro")),
            "cache": {"direct": bool(cache.get("direct")), "no-flush": bool(cache.get("no-flush"))}}


# -- names and specs ----------------------------------------------------------------------------

def bind(found: Found, spec, names: dict, ganeti_records=()) -> list:
    """Give each found disk and NIC its declared name and spec; returns the device records.

    A device's name is, in order: ``names[<QEMU id>]``, the name Ganeti's runtime file gives
    it, the declared disk with the same image path or the declared NIC with the same MAC, and
    else its QEMU id. Each must be declared, and agree with QEMU about what can be read back
    (type, image path, format, mode, MAC); the rest of its spec is the declaration's.
    """
    declared = {("disk", d.name): d for d in spec.disks}
    declared.update({("nic", n.name): n for n in spec.nics})
    by_ganeti = {r["id"]: r for r in ganeti_records}
    records, taken = [], {}
    for record in found.devices:
        name = _name_of(record, names, by_ganeti.get(record["id"]), spec)
        item = declared.get((record["kind"], name))
        group = "disks" if record["kind"] == "disk" else "nics"
        if item is None:
            raise ConfigError("adopt: QEMU has %s %s (%s) but %s declares none named %s; declare it, or map "
                              "its id in adopt.names to the declared name, or hot-unplug it first"
                              % (record["kind"], record["id"], _seen_text(record), group, name))
        if (record["kind"], name) in taken:
            raise ConfigError("adopt: %s[%s] matches both %s and %s in QEMU; map each id in adopt.names"
                              % (group, name, taken[(record["kind"], name)], record["id"]))
        taken[(record["kind"], name)] = record["id"]
        _check(record, item, group)
        bound = {k: v for k, v in record.items() if k != "seen"}
        bound.update(name=item.name, uuid=item.uuid, spec=_normalised(asdict(item)), owner="qemu_instance")
        records.append(bound)
    return records


def _name_of(record: dict, names: dict, ganeti_record, spec) -> str:
    if record["id"] in names:
        return names[record["id"]]
    if ganeti_record and ganeti_record.get("name") != ganeti_record["id"]:
        return ganeti_record["name"]
    seen = record["seen"]
    if record["kind"] == "disk":
        same = [d.name for d in spec.disks if d.path == seen.get("path")]
    else:
        same = [n.name for n in spec.nics if (n.mac or "").lower() == (seen.get("mac") or "").lower()]
    return same[0] if len(same) == 1 else record["id"]


def _seen_text(record: dict) -> str:
    seen = record["seen"]
    return "image %s" % seen.get("path") if record["kind"] == "disk" else "MAC %s" % seen.get("mac")


def _check(record: dict, item, group: str) -> None:
    """What QEMU shows must be what is declared: the rest of the spec is taken on trust."""
    seen = record["seen"]
    label = "adopt: %s[%s] (QEMU id %s)" % (group, item.name, record["id"])
    if record["kind"] == "disk":
        wanted = {"disk_type": item.disk_type, "path": item.path, "format": item.format,
                  "read_only": item.read_only}
    else:
        wanted = {"nic_type": item.nic_type, "mac": (item.mac or "").lower(), "netdev": item.netdev}
        seen = dict(seen, mac=(seen.get("mac") or "").lower())
    wrong = ["%s is %r in QEMU, %r declared" % (k, seen.get(k), v) for k, v in sorted(wanted.items())
             if seen.get(k) != v and (k, seen.get(k), v) not in _SAME]
    if wrong:
        raise ConfigError("%s: %s; declare what the running QEMU has (it cannot change on adoption)"
                          % (label, "; ".join(wrong)))


# A bridge NIC is a tap netdev that qemu-bridge-helper opened.
_SAME = (("netdev", "tap", "bridge"),)


def _normalised(value):
    import json
    return json.loads(json.dumps(value))
