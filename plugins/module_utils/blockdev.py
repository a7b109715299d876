# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Node chains: an image -> protocol node -> format node, as plain dicts (pure).

The same dicts are given to ``-blockdev`` at start and to ``blockdev-add`` at hot-plug. Every
node has an explicit name and carries the same ``cache`` (nodes do not inherit it, reference
§2.1); chains are built bottom-up and deleted top-down.
"""

from __future__ import annotations

from ansible_collections.blocklayer.qemu.plugins.module_utils import ids
from ansible_collections.blocklayer.qemu.plugins.module_utils.cache import IoSettings

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
    """The nodes of one image, bottom-up: ``[protocol, format]``."""
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
    fmt_node = {"driver": fmt, "node-name": ids.node_name(dev_id, roles[1]), "file": protocol["node-name"]}
    fmt_node.update(common)
    fmt_node["detect-zeroes"] = io.detect_zeroes
    return [protocol, fmt_node]


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
