# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A Ganeti KVM runtime file, read into format-2 device records (pure).

Ganeti writes ``serializer.Dump`` of a list (lib/hypervisor/hv_kvm; since 3.1
``kvm_runtime.py``, ``KVMRuntime.serialize``). Three shapes exist:

* up to 2.9: ``[kvm_cmd, [nic dicts], hvparams]``;
* 2.10 to 2.15: ``[kvm_cmd, [nic dicts], hvparams, [[Disk.ToDict(), link_name, uri], ...]]``,
  paravirtual devices carrying their PCI slot as ``"pci": <int>``;
* 2.16 on: the same four items, each device with ``hvinfo`` (its ``-device`` options).

Each is upgraded the way Ganeti's ``_upgrade_serialized_runtime`` (kvm_runtime.py) does on
every load, with every fix applied whatever else the command line holds (older Ganeti
releases ran some of them only inside the ``-vnc`` branch). Ganeti starts disks with
``-drive``, so QEMU owns their nodes: the records have origin ``drive`` and no nodes.
"""

from __future__ import annotations

import json
import uuid as uuid_mod
from dataclasses import dataclass, field
from typing import List

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Record
from ansible_collections.blocklayer.qemu.plugins.module_utils.runtime import ORIGIN_DRIVE, STATE_ATTACHED

SHAPES = ("[kvm_cmd, nics, hvparams] (Ganeti up to 2.9)",
          "[kvm_cmd, nics, hvparams, disks] with pci slots (2.10 to 2.15)",
          "[kvm_cmd, nics, hvparams, disks] with hvinfo (2.16 on)")
_PCI_BUS = "pci.0"
# Ganeti's HT_DISCARD_* values since 3.1; anything else (2.x's "default") becomes ignore.
_DISCARD_VALUES = ("ignore", "unmap")
# A NIC from before 2.8 has no uuid; Ganeti gives it a random one, this a stable one (from its MAC).
_NIC_NAMESPACE = uuid_mod.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")


@dataclass(init=False, repr=False, eq=False)
class GanetiRuntime(Record):
    """An upgraded runtime file: the four items, and the device records built from them."""

    kvm_cmd: List[str]
    nics: List[dict]
    hvparams: dict
    disks: List[list]
    shape: str
    records: List[dict] = field(default_factory=list)
    # Devices Ganeti started without a QEMU id (before 2.10): nothing on QMP names them.
    anonymous: List[str] = field(default_factory=list)


def loads(text: bytes, where: str) -> GanetiRuntime:
    """A Ganeti runtime file's content, upgraded; an unknown shape is refused naming the file."""
    try:
        data = json.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _refuse(where, "is not JSON (%s)" % exc) from None
    shape = _shape(data, where)
    kvm_cmd, nics, hvparams, disks = upgrade(data)
    rt = GanetiRuntime(kvm_cmd, nics, hvparams, disks, shape)
    for index, nic in enumerate(nics):
        _add(rt, nic_record(nic, hvparams, index), "nic %d (MAC %s)" % (index, nic.get("mac")))
    for index, entry in enumerate(disks):
        _add(rt, disk_record(entry, index), "disk %d" % index)
    return rt


def _add(rt: GanetiRuntime, record, label: str) -> None:
    if record is None:
        rt.anonymous.append(label)
    else:
        rt.records.append(record)


def _refuse(where: str, problem: str) -> ConfigError:
    return ConfigError("adopt.ganeti_runtime: %s %s; the Ganeti runtime shapes known are %s"
                       % (where, problem, "; ".join(SHAPES)))


def _shape(data, where: str) -> str:
    """Which of the three shapes ``data`` is; anything else is refused (never a traceback)."""
    if not isinstance(data, list) or len(data) not in (3, 4):
        raise _refuse(where, "holds %s" % _describe(data))
    kvm_cmd, nics, hvparams = data[:3]
    disks = data[3] if len(data) == 4 else []
    if not (isinstance(kvm_cmd, list) and all(isinstance(a, str) for a in kvm_cmd)):
        raise _refuse(where, "has no command line (a list of strings) as item 0")
    if not (isinstance(nics, list) and all(isinstance(n, dict) for n in nics)):
        raise _refuse(where, "has no NIC list (objects) as item 1")
    if not isinstance(hvparams, dict):
        raise _refuse(where, "has no hvparams object as item 2")
    if not (isinstance(disks, list) and all(_disk_entry(e) for e in disks)):
        raise _refuse(where, "has no disk list ([disk object, link name, uri] entries) as item 3")
    if len(data) == 3:
        return SHAPES[0]
    devices = nics + [e[0] for e in disks]
    return SHAPES[1] if any("pci" in d and "hvinfo" not in d for d in devices) else SHAPES[2]


def _disk_entry(entry) -> bool:
    return isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], dict)


def _describe(data) -> str:
    if isinstance(data, list):
        return "a list of %d items" % len(data)
    return "a JSON %s" % type(data).__name__


def upgrade(data: list) -> list:
    """``[kvm_cmd, nics, hvparams, disks]`` as Ganeti's ``_upgrade_serialized_runtime`` makes it
    (copies: the input is not changed)."""
    data = json.loads(json.dumps(data))
    kvm_cmd, nics, hvparams = data[:3]
    disks = data[3] if len(data) == 4 else []
    for nic in nics:
        if "uuid" not in nic:
            nic["uuid"] = str(uuid_mod.uuid5(_NIC_NAMESPACE, str(nic.get("mac"))))
        _pci_to_hvinfo(nic, "nic", hvparams.get("nic_type"))
    for entry in disks:
        _pci_to_hvinfo(entry[0], "disk", hvparams.get("disk_type"))
    kvm_cmd = upgrade_cmd(kvm_cmd)
    if "disk_discard" in hvparams and hvparams["disk_discard"] not in _DISCARD_VALUES:
        hvparams["disk_discard"] = "ignore"
    return [kvm_cmd, nics, hvparams, disks]


def _pci_to_hvinfo(dev: dict, dev_type: str, hv_type) -> None:
    """A device saved with its PCI slot (2.10 to 2.15) gets the hvinfo Ganeti later derives:
    its id was then ``hot<type>-<uuid[:8]>-pci-<slot>`` (the old _GenerateDeviceKVMId)."""
    if "hvinfo" in dev:
        return
    dev["hvinfo"] = {}
    if "pci" not in dev:
        return
    paravirtual = hv_type in (None, "paravirtual")
    driver = ("virtio-net-pci" if dev_type == "nic" else "virtio-blk-pci") if paravirtual else hv_type
    slot = int(dev.pop("pci"))
    short_uuid = str(dev.get("uuid", "")).split("-", 1)[0]
    dev["hvinfo"] = {"driver": driver, "id": "hot%s-%s-pci-%d" % (dev_type, short_uuid, slot),
                     "addr": hex(slot), "bus": _PCI_BUS}


def upgrade_cmd(kvm_cmd: list) -> list:
    """Ganeti's command-line fixes: -localtime, -balloon, VNC TLS/x509 and -chroot."""
    cmd = list(kvm_cmd)
    if "-localtime" in cmd:
        i = cmd.index("-localtime")
        cmd[i:i + 1] = ["-rtc", "base=localtime"]
    if "-balloon" in cmd and cmd.index("-balloon") + 1 < len(cmd):
        i = cmd.index("-balloon")
        extra = cmd[i + 1].split(",")[1:]
        cmd[i:i + 2] = ["-device", ",".join(["virtio-balloon"] + extra)]
    if "-vnc" in cmd and cmd.index("-vnc") + 1 < len(cmd):
        i = cmd.index("-vnc")
        cmd[i:i + 2] = _vnc_args(cmd[i + 1])
    if "-chroot" in cmd:
        # QEMU 9 has -run-with chroot= instead, which Ganeti writes itself: the old one goes.
        i = cmd.index("-chroot")
        del cmd[i:i + 2]
    return cmd


def _vnc_args(value: str) -> list:
    """``-vnc ...,tls,x509verify=DIR`` -> a ``-object tls-creds-*`` and ``tls-creds=vnctls0``."""
    kept, creds, obj = [], None, ["id=vnctls0", "endpoint=server"]
    for arg in value.split(","):
        if arg == "tls":
            creds = "tls-creds-anon"
            kept.append("tls-creds=vnctls0")
        elif arg.startswith(("x509verify=", "x509=")):
            creds = "tls-creds-x509"
            obj += ["dir=%s" % arg.split("=", 1)[1],
                    "verify-peer=%s" % ("yes" if arg.startswith("x509verify=") else "no")]
        else:
            kept.append(arg)
    if creds is None:
        return ["-vnc", value]
    return ["-object", "%s,%s" % (creds, ",".join(obj)), "-vnc", ",".join(kept)]


def _base(kind: str, dev: dict, info: dict, props: dict, spec: dict) -> dict:
    return {"kind": kind, "name": dev.get("name") or info["id"], "uuid": str(dev.get("uuid") or ""),
            "id": info["id"], "hvinfo": info, "props": props, "nodes": [], "netdev": None,
            "objects": [], "spec": spec, "state": STATE_ATTACHED, "origin": ORIGIN_DRIVE}


def disk_record(entry: list, index: int):
    """``[Disk.ToDict(), link_name, uri]`` -> a device record, or None without a QEMU id.

    QEMU opens the ``uri`` when Ganeti gives one (userspace access, e.g. rbd), else the link.
    Ganeti's -drive is always ``format=raw``."""
    disk, link, uri = entry
    info = dict(disk.get("hvinfo") or {})
    if not info.get("id"):
        return None
    spec = {"path": uri or link, "format": "raw", "mode": disk.get("mode", "rw"), "iv_name": disk.get("iv_name"),
            "size_mib": disk.get("size"), "index": index}
    return _base("disk", disk, info, dict(info, drive=info["id"]), spec)


def nic_record(nic: dict, hvparams: dict, index: int):
    """A NIC dict -> a device record (its netdev has the device's id), or None without an id."""
    info = dict(nic.get("hvinfo") or {})
    if not info.get("id"):
        return None
    params = nic.get("nicparams") or {}
    info.setdefault("netdev", info["id"])
    spec = {"mac": nic.get("mac"), "mode": params.get("mode"), "link": params.get("link"), "index": index}
    record = _base("nic", nic, info, dict(info, mac=nic.get("mac")), spec)
    record["netdev"] = {"id": info["netdev"]}
    return record
