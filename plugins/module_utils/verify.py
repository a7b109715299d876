# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Does QEMU have every recorded device where the runtime file says? (pure)

Input is the answer of three queries, whatever the number of devices: ``query-block`` keyed
by ``qdev`` (a -blockdev device's BlockBackend has no name, so ``device`` is empty: qapi/block.json BlockInfo), ``query-pci`` and
``qom-list /machine/peripheral`` (every device with an id and its QOM type). query-pci shows
devices behind a root port only once firmware has numbered the buses, so for those the QOM
entry is the proof.
"""

from __future__ import annotations

from dataclasses import dataclass

from ansible_collections.blocklayer.qemu.plugins.module_utils.blockdev import names, top_node
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Value
from ansible_collections.blocklayer.qemu.plugins.module_utils.runtime import STATE_UNPLUG_PENDING
from ansible_collections.blocklayer.qemu.plugins.module_utils.topology import pci_slot

# query-named-block-nodes shows every node and HMP "info network" every netdev (QMP has no query
# for netdevs), so that what a killed run left in the collection's name space is found.
QUERIES = (("query-block", {}), ("query-pci", {}), ("qom-list", {"path": "/machine/peripheral"}),
           ("query-named-block-nodes", {"flat": True}), ("human-monitor-command", {"command-line": "info network"}))
_PERIPHERAL = "/machine/peripheral/"


def network_clients(network: str) -> dict:
    """``info network`` -> name -> its fields (``type``, ``model``, ...): net/net.c
    print_net_client writes one ``<name>: index=...,type=...`` line each, a netdev under its NIC
    prefixed with ``\\``."""
    found = {}
    for line in network.splitlines():
        name, sep, rest = line.strip().lstrip("\\").strip().partition(": ")
        if sep and rest.startswith("index="):
            found[name] = dict(f.partition("=")[::2] for f in rest.split(","))
    return found


@dataclass(init=False, repr=False, eq=False)
class Live(Value):
    """What QEMU has now, from the answers to QUERIES."""

    block: list
    pci: list
    qom: list
    named: list
    network: str = ""

    @classmethod
    def from_answers(cls, block, pci, qom, named, network="") -> "Live":
        return cls(block, pci, qom, named, network)

    @property
    def netdevs(self) -> set:
        """Every NIC and netdev name of ``info network``."""
        return set(network_clients(self.network))

    @property
    def types(self) -> dict:
        return types_by_id(self.qom)

    @property
    def roots(self) -> dict:
        """Device id -> the node its drive uses now (None for an empty drive)."""
        return {dev_id: (b.get("inserted") or {}).get("node-name") for dev_id, b in block_by_id(self.block).items()}

    @property
    def nodes(self) -> set:
        return {n["node-name"] for n in self.named if n.get("node-name")}

    @property
    def sizes(self) -> dict:
        """Node name -> its virtual size in bytes (what block_resize changes)."""
        return sizes_by_node(self.named)

    @property
    def root_slots(self) -> list:
        """Slots taken on the root PCI bus (a device added behind the collection's back is not clobbered)."""
        return [d["slot"] for bus in self.pci if bus.get("bus") == 0 for d in bus.get("devices", [])]


def sizes_by_node(named: list) -> dict:
    """From ``query-named-block-nodes``: node name -> ``image.virtual-size``."""
    return {n["node-name"]: n["image"]["virtual-size"] for n in named
            if n.get("node-name") and "virtual-size" in (n.get("image") or {})}


def qdev_id(qdev: str) -> str:
    """``/machine/peripheral/<id>/virtio-backend`` (virtio-blk) -> ``<id>``; ids stay as they are."""
    if qdev.startswith(_PERIPHERAL):
        return qdev[len(_PERIPHERAL):].split("/")[0]
    return qdev


def block_by_id(query_block: list) -> dict:
    return {qdev_id(b.get("qdev", "")): b for b in query_block if b.get("qdev")}


def pci_by_id(query_pci: list) -> dict:
    """qdev id -> slot, over every bus (bridges and root ports included)."""
    found = {}

    def walk(devices):
        for dev in devices:
            if dev.get("qdev_id"):
                found[dev["qdev_id"]] = dev["slot"]
            walk(dev.get("pci_bridge", {}).get("devices", []))

    for bus in query_pci:
        walk(bus.get("devices", []))
    return found


def types_by_id(qom_list: list) -> dict:
    """qdev id -> QOM type, from ``qom-list /machine/peripheral`` (``child<virtio-blk-pci>``)."""
    return {p["name"]: p["type"][len("child<"):-1] for p in qom_list if p.get("type", "").startswith("child<")}


def problems(devices: list, query_block: list, query_pci: list, qom_list: list, busy=()) -> list:
    """One sentence per recorded device that QEMU does not have as recorded.

    ``devices`` are runtime-file device records (``id``, ``kind``, ``hvinfo``, ``nodes``).
    ``busy`` are the ids of devices a block job runs on: such a device uses the job's filter
    node (``filter-node-name``) instead of its recorded top, which is not a difference.
    """
    blocks = block_by_id(query_block)
    slots = pci_by_id(query_pci)
    types = types_by_id(qom_list)
    found = []
    for dev in devices:
        info = dev["hvinfo"]
        qom_type = types.get(dev["id"])
        if qom_type is None:
            found.append("%s is not in QEMU" % dev["id"])
            continue
        if qom_type != info["driver"]:
            found.append("%s is a %s, not a %s" % (dev["id"], qom_type, info["driver"]))
        if "addr" in info and info.get("bus", "").startswith("pci"):
            slot = slots.get(dev["id"])
            want = pci_slot(info["addr"])
            if slot is None:
                found.append("%s is not on the PCI bus" % dev["id"])
            elif slot != want:
                found.append("%s is in PCI slot %d, not %d" % (dev["id"], slot, want))
        if dev["kind"] in ("controller", "nic"):
            continue
        block = blocks.get(dev["id"])
        if block is None:
            found.append("%s has no block backend" % dev["id"])
            continue
        nodes = dev.get("nodes") or []
        inserted = block.get("inserted")
        if nodes and dev["id"] in busy:
            if not inserted:
                found.append("%s has no medium; expected a block job's node over %s" % (dev["id"], top_node(nodes)))
        elif nodes:
            top = nodes[-1]
            if not inserted:
                found.append("%s has no medium; expected node %s" % (dev["id"], top["node-name"]))
            elif inserted.get("node-name") != top["node-name"]:
                found.append("%s uses node %s, not %s" % (dev["id"], inserted.get("node-name"), top["node-name"]))
            elif bool(inserted.get("ro")) != bool(top.get("read-only")):
                found.append("%s is %s, not %s" % (
                    dev["id"], "read-only" if inserted.get("ro") else "read-write",
                    "read-only" if top.get("read-only") else "read-write"))
        elif inserted and dev.get("origin") != "drive":
            found.append("%s has a medium (%s) but none is recorded" % (dev["id"], inserted.get("node-name")))
    return found


def unknown_nodes(devices: list, live: Live) -> list:
    """``(index, record, names)`` for each device QEMU has whose record names nodes QEMU does
    not have: a plan from such a record would take the nodes the device really uses for
    leftovers and try to delete them. A device being unplugged is left out (its nodes go)."""
    found = []
    present = live.types
    for index, record in enumerate(devices):
        if record["id"] in present and record.get("state") != STATE_UNPLUG_PENDING:
            missing = [n for n in names(record.get("nodes")) if n not in live.nodes]
            if missing:
                found.append((index, record, missing))
    return found
