# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Node chains: an image -> protocol node -> format node, as plain dicts (pure).

A record's ``nodes`` are what the collection opens with one ``-blockdev`` at start or one
``blockdev-add`` at hot-plug each, bottom-up, and deletes top-down with one ``blockdev-del``
each. An image's protocol node is opened inside its format node (``"file": {...}``): QEMU
closes it with the format node (bdrv_close() drops the child), so a disk costs one command
to add and one to delete instead of two (docs/design.md "Speed"). Records written before
keep the protocol node as a node of its own (``"file": "<name>"``), which is added and
deleted on its own as before; ``flat`` gives every node either way. Every node has an
explicit name and carries the same ``cache`` (nodes do not inherit it: docs/design.md "Start", QEMU docs/system/qemu-block-drivers.rst).
"""

from __future__ import annotations

from dataclasses import dataclass

from ansible_collections.blocklayer.qemu.plugins.module_utils import ids
from ansible_collections.blocklayer.qemu.plugins.module_utils.cache import IoSettings
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Value

# What a path is, as the host inspection reports it.
PATH_FILE = "file"
PATH_BLOCK = "block"
PATH_CHAR = "char"
PATH_HTTP = "http"
PATH_HTTPS = "https"


def path_kind_of_url(path: str):
    """``http``/``https`` for an ISO URL, None for a local path."""
    for scheme in (PATH_HTTP, PATH_HTTPS):
        if path.startswith(scheme + "://"):
            return scheme
    return None


def protocol_driver(path_kind: str, media_kind: str) -> str:
    if path_kind in (PATH_HTTP, PATH_HTTPS):
        return path_kind
    if path_kind == PATH_BLOCK:
        # host_cdrom knows about media and trays of a host CD drive.
        return "host_cdrom" if media_kind == "cdrom" else "host_device"
    if path_kind == PATH_CHAR:
        return "host_device"  # /dev/sgN for scsi-generic
    return "file"


# Node roles: "stor" talks to host storage (libvirt's "storage"), "fmt" interprets the format.
# A medium change adds the new chain before the old one is removed, so removable media
# alternate between two sets of names.
ROLES = ("stor", "fmt")
ALTERNATE_ROLES = ("stor2", "fmt2")


def alternate_roles(nodes: list) -> tuple:
    """The roles a new medium uses, given the nodes of the current one."""
    in_use = nodes and not nodes[-1]["node-name"].endswith("2")
    return ALTERNATE_ROLES if in_use else ROLES


def node_chain(dev_id: str, path: str, path_kind: str, fmt: str, io: IoSettings,
               read_only: bool, media_kind: str = "disk", roles: tuple = ROLES, force_share: bool = False) -> list:
    """The nodes of one image: ``[format]``, its protocol node inside as ``file``."""
    driver = protocol_driver(path_kind, media_kind)
    common = {
        "cache": io.cache.node_props(),
        "discard": io.discard,
        "read-only": read_only,
        # Ganeti: dynamic read-only reopening broke migration; ask for what we use.
        "auto-read-only": False,
    }
    if force_share:
        # Read-only nodes only (spec._sharing); set on both nodes, as each takes its own lock.
        common["force-share"] = True
    protocol = {"driver": driver, "node-name": ids.node_name(dev_id, roles[0])}
    if driver in (PATH_HTTP, PATH_HTTPS):
        protocol["url"] = path
    else:
        protocol["filename"] = path
        protocol["aio"] = io.aio  # a file-posix option only
    protocol.update(common)
    fmt_node = {"driver": fmt, "node-name": ids.node_name(dev_id, roles[1]), "file": protocol}
    fmt_node.update(common)
    fmt_node["detect-zeroes"] = io.detect_zeroes
    return [fmt_node]


def flat(nodes) -> list:
    """Every node of a chain, bottom-up, each naming its ``file`` child by name: a protocol
    node opened inside its format node comes just before it, as an older record lists it."""
    found = []
    for node in nodes or []:
        child = node.get("file")
        if isinstance(child, dict):
            found.append(child)
            node = dict(node, file=child["node-name"])
        found.append(node)
    return found


def names(nodes) -> list:
    """The names of every node of a chain, the ones opened inside another included."""
    return [n["node-name"] for n in flat(nodes)]


def own_names(nodes) -> list:
    """The names of the nodes opened by a command of their own: those a blockdev-del closes."""
    return [n["node-name"] for n in nodes or []]


def keep_separate(old_nodes, nodes) -> list:
    """``nodes`` (a chain rebuilt for a running QEMU) with every protocol node that
    ``old_nodes`` has as a node of its own kept so: QEMU still holds it on its own, and only
    a blockdev-del of its own closes it."""
    separate = {n["node-name"] for n in old_nodes or [] if "file" not in n}
    out = []
    for node in nodes:
        child = node.get("file")
        if isinstance(child, dict) and child["node-name"] in separate:
            out += [child, dict(node, file=child["node-name"])]
        else:
            out.append(node)
    return out


@dataclass(init=False, repr=False, eq=False)
class Layer(Value):
    """One image of a disk's chain (docs/block-graph.md): its generation (the suffix of its node
    names; the image first declared has none, i.e. 1), path and format."""

    gen: int
    path: str
    fmt: str


def roles_of(gen: int) -> tuple:
    return ROLES if gen == 1 else tuple("%s%d" % (role, gen) for role in ROLES)


def _images(nodes: list) -> list:
    """``(format node, path)`` of each image of a chain, bottom-up (filters such as a throttle
    node are not images)."""
    nodes = flat(nodes)
    paths = {n["node-name"]: n.get("filename") or n.get("url") for n in nodes if "filename" in n or "url" in n}
    return [(node, paths[node["file"]]) for node in nodes
            if isinstance(node.get("file"), str) and node["file"] in paths and node["driver"] != "throttle"]


def layers(nodes: list) -> list:
    """The images of a chain, bottom-up."""
    found = []
    for node, path in _images(nodes):
        own = ids.own_node(node["node-name"])
        found.append(Layer(own[2] if own else 1, path, node["driver"]))
    return found


def format_nodes(nodes: list) -> list:
    """The names of the format nodes of a chain's images, bottom-up, as ``layers`` lists them."""
    return [node["node-name"] for node, _path in _images(nodes)]


def next_gen(nodes: list) -> int:
    """The generation a new image of this chain takes: one above every name it has had."""
    gens = [own[2] for own in (ids.own_node(name) for name in names(nodes)) if own]
    return max(gens + [1]) + 1


def layer_nodes(dev_id: str, layer: Layer, path_kind: str, io: IoSettings, read_only: bool,
                backing=None) -> list:
    """``[format]`` of one image (node_chain); an overlay's format node names its ``backing``
    node (None: no backing is opened, for an overlay added live before blockdev-snapshot)."""
    nodes = node_chain(dev_id, layer.path, path_kind, layer.fmt, io, read_only, roles=roles_of(layer.gen))
    if backing is not False:
        nodes[-1]["backing"] = backing
    return nodes


def chain_nodes(dev_id: str, chain: list, path_kind, io: IoSettings, read_only: bool) -> list:
    """A whole chain as a start lists it, bottom-up: each overlay names the format node below
    as its backing, and every image below the top is read-only (QEMU's block-core docs,
    BlockdevOptionsGenericCOWFormat; a missing ``backing`` would open the base a second time
    and ``null`` would hide its data)."""
    nodes = []
    for index, layer in enumerate(chain):
        top = index == len(chain) - 1
        backing = nodes[-1]["node-name"] if nodes else False
        nodes += layer_nodes(dev_id, layer, path_kind(layer.path), io, read_only if top else True, backing)
    return nodes


def top_node(nodes: list):
    """The node a device's ``drive`` points at (the last one built), or None for no medium."""
    return nodes[-1]["node-name"] if nodes else None


def top_format_node(nodes: list):
    """The node-name of the topmost format node of a disk's chain (bottom-up ``nodes``): the one
    block_resize grows, below any throttle filter; None without nodes."""
    for node in reversed(nodes or []):
        if node.get("driver") != "throttle":
            return node["node-name"]
    return None


# -- throttling (docs/design.md "Throttling") ---------------------------------------------------
THROTTLE_DRIVER = "throttle"
THROTTLE_ROLE = "thr"


def throttle_node(dev_id: str, group_id: str, below: str, read_only: bool = False) -> dict:
    """The throttle filter over ``below``: the device's I/O is counted against ``group_id``."""
    node = {"driver": THROTTLE_DRIVER, "node-name": ids.node_name(dev_id, THROTTLE_ROLE),
            "throttle-group": group_id, "file": below}
    if read_only:
        node["read-only"] = True  # a filter is read-write unless told, and would ask its child for writes
    return node


def throttle_of(nodes) -> dict:
    """The device's throttle node (always the top of its chain), or None."""
    return nodes[-1] if nodes and nodes[-1].get("driver") == THROTTLE_DRIVER else None


def below_throttle(nodes) -> str:
    """The node a throttle filter sits on: the last node that is not one (chains may grow
    overlays, so its position is not fixed)."""
    return next(n["node-name"] for n in reversed(nodes) if n.get("driver") != THROTTLE_DRIVER)


def without_throttle(nodes) -> list:
    return [n for n in nodes if n.get("driver") != THROTTLE_DRIVER]
