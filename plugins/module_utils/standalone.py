# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Standalone named nodes: an image opened in QEMU that no device uses (pure; docs/block-graph.md).

qemu_blockdev ``node: <name>`` opens an image as ``<name>.stor`` (protocol) and ``<name>.fmt``
(format), e.g. as the target of a mirror that keeps a copy (``mirror.node``). Such a node is
recorded in the layout (``named_nodes``; ``copy_of`` names the disk whose copy it holds),
rebuilt at every start and deleted only when a play says ``state: absent``, top-down. Its names are outside the device name space
(``<kind>-<uuid>.<role>``), so no purge of leftovers ever takes them.
"""

from __future__ import annotations

import re
from typing import Optional

from ansible_collections.blocklayer.qemu.plugins.module_utils import blockdev, engine, runtime
from ansible_collections.blocklayer.qemu.plugins.module_utils.cache import io_settings
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

NODE_ADD, NODE_DEL = "node-add", "node-del"
NODE_ACTIONS = (NODE_ADD, NODE_DEL)
# ``<name>.stor`` must fit QEMU's 31 characters (ids.NODE_NAME_MAX).
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,25}\Z")
_DEVICE_PREFIX = re.compile(r"(disk|cdrom|floppy|nic|controller)-")


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise ConfigError("node: %r is not a valid node name; use a letter, then up to 25 letters, digits, '-' or "
                          "'_' (QEMU names it <name>.fmt and <name>.stor)" % name)
    if _DEVICE_PREFIX.match(name):
        raise ConfigError("node: %r starts like the collection's device ids (%s); choose a name that does not"
                          % (name, _DEVICE_PREFIX.match(name).group(0)))
    return name


def format_node(record: dict) -> str:
    """The node a job or an export uses: the format node, the top of the two."""
    return blockdev.top_node(record["nodes"])


def node_record(name: str, path: str, fmt: str, read_only: bool, path_kind: str) -> dict:
    """The layout record of a standalone node, with the nodes a start or blockdev-add opens.
    Writeback cache, as QEMU's default (a copy's target needs no O_DIRECT)."""
    io = io_settings("node[%s]" % name, "default", "threads", "ignore", "off")
    nodes = blockdev.node_chain(name, path, path_kind, fmt, io, read_only)
    return {"name": name, "path": path, "format": fmt, "read_only": read_only, "nodes": nodes}


def same(record: dict, path: str, fmt: str, read_only: bool) -> bool:
    return (record["path"], record["format"], record["read_only"]) == (path, fmt, read_only)


def plan_present(layout: runtime.GuestLayout, name: str, path: str, fmt: str, read_only: bool,
                 path_kind: str) -> Optional[dict]:
    """The record to add, or None when the node is there as declared; another image under
    the same name is refused (a node is never reopened under a task's feet)."""
    current = layout.named_node(name)
    if current is not None:
        if same(current, path, fmt, read_only):
            return None
        raise ConfigError("node: %s is open already on %s (%s%s); remove it first with state: absent, or give "
                          "another name" % (name, current["path"], current["format"],
                                            ", read-only" if current["read_only"] else ""))
    for other in layout.named_nodes:
        if other["path"] == path:
            raise ConfigError("node: %s is open already as node %s; use that one" % (path, other["name"]))
    for record in layout.devices:
        if any(layer.path == path for layer in blockdev.layers(record.get("nodes") or [])):
            raise ConfigError("node: %s is an image of %s[%s]; a standalone node needs an image no disk uses"
                              % (path, record["kind"] + "s", record["name"]))
    return node_record(name, path, fmt, read_only, path_kind)


def add_steps(record: dict, create: Optional[dict]) -> list:
    """Opening a standalone node: its image created first when asked, then its nodes bottom-up."""
    steps = [engine.Step(engine.cmd(engine.CREATE_IMAGE, **create), creates=((engine.FILES, create["path"]),))] \
        if create else []
    return steps + [engine.add_node(node) for node in record["nodes"]]


def del_steps(record: dict) -> list:
    """Closing it: its nodes top-down; the first is QEMU's to refuse while something uses it."""
    names = [n["node-name"] for n in reversed(record["nodes"])]
    return [engine.del_node(name, cleanup=index > 0) for index, name in enumerate(names)]


def pending_add(record: dict, create: Optional[dict]) -> runtime.Pending:
    return engine.journal_entry(NODE_ADD, record["name"], add_steps(record, create), record, None)


def pending_del(record: dict) -> runtime.Pending:
    return engine.journal_entry(NODE_DEL, record["name"], del_steps(record), None, record)


def job_using(journal, name: str) -> Optional[str]:
    """The job id of a block job in flight that uses the node ``name`` (its target)."""
    for entry in journal:
        if name in (entry.creates.get("targets") or []):
            return (entry.creates.get("jobs") or [entry.id])[0]
    return None


def start_nodes(named_nodes: list, kinds: dict) -> tuple:
    """The records a start rebuilds, and a warning per node whose image is gone (``kinds``:
    path -> what the host says it is). A missing target is dropped: the start must not fail
    for a copy, and the play that wants it declares it again."""
    kept, warnings = [], []
    for record in named_nodes:
        kind = kinds.get(record["path"], "missing")
        if kind in (blockdev.PATH_FILE, blockdev.PATH_BLOCK):
            fresh = node_record(record["name"], record["path"], record["format"], record["read_only"], kind)
            kept.append(dict(record, nodes=fresh["nodes"]))
        else:
            warnings.append("node %s: its image %s is %s, so it is not opened again; declare it again once the "
                            "image is back" % (record["name"], record["path"], kind))
    return kept, warnings
