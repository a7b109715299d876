# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A disk's chain of images and what each operation does to it (pure; docs/block-graph.md).

A disk record's ``nodes`` list its chain bottom-up as a start gives them: per image a
protocol node and a format node named ``<device id>.stor<gen>`` / ``.fmt<gen>``, each
overlay's format node naming the one below as ``backing``, and an optional throttle filter on
top. The operations of qemu_blockdev each turn a record into the record it leaves:

* snapshot: a new qcow2 overlay on top (blockdev-add with ``backing: null``, blockdev-snapshot);
* commit: fold images down into a lower one (block-commit; an active commit moves the device);
* stream: pull the images below the top into it (block-stream);
* mirror: copy the disk to a new image and move the device onto it (blockdev-mirror, pivot),
  or keep a consistent copy and stay (``pivot: false``).

Each is planned as a ``GraphOp``: the commands that prepare it (new nodes), the one command
that changes the graph (blockdev-snapshot, or the job), and what is left unused afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ansible_collections.blocklayer.qemu.plugins.module_utils import backup, blockdev, engine, ids, runtime, standalone
from ansible_collections.blocklayer.qemu.plugins.module_utils.blockdev import Layer
from ansible_collections.blocklayer.qemu.plugins.module_utils.cache import io_settings
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Value

SNAPSHOT, COMMIT, STREAM, MIRROR = "snapshot", "commit", "stream", "mirror"
# Journal entries the graph runner settles (graphops: a job may outlive its task), not recovery.py.
RUNNER_ACTIONS = (SNAPSHOT, COMMIT, STREAM, MIRROR) + standalone.NODE_ACTIONS + backup.ACTIONS


def settled_by_runner(entry) -> bool:
    """Whether graphops settles this journal entry (Instance.settle_journal's one dispatch)."""
    return entry.action in RUNNER_ACTIONS


def disk_operation(journal, dev_id: str):
    """The block-graph operation in flight on a disk, or None."""
    return next((e for e in journal if e.action in RUNNER_ACTIONS and e.id == dev_id), None)


@dataclass(init=False, repr=False, eq=False)
class GraphOp(engine.DiskOperation, Value):
    """One planned operation on one disk's chain."""

    action: str
    label: str  # disks[<name>]
    dev_id: str
    old: dict  # the record now
    record: dict  # the record once the graph change is done
    reason: str
    prepare: tuple = ()  # commands before the change: new nodes, bottom-up
    change: Optional[dict] = None  # blockdev-snapshot, or the command that starts the job
    job_id: Optional[str] = None
    at_ready: str = "complete"  # a ready job: "complete" (pivot) or "keep" (cancel, keep the copy)
    unused: tuple = ()  # node names the disk no longer uses once done, top-down
    create: Optional[dict] = None  # {"path", "format", "backing", "backing_format", "size"}: an image to create
    former: tuple = ()  # image paths that leave the chain
    target_node: Optional[str] = None  # the standalone node a copy goes to (mirror.node)
    reopen: Optional[dict] = None  # blockdev-reopen of read-only images the job must write

    @property
    def steps(self) -> list:
        """The operation as the engine's steps, in order: ``before_change``, then the graph
        change (which starts the job, if any) with what it makes and what the disk stops using."""
        if not self.change:
            return self.before_change
        made = ((engine.JOBS, self.job_id),) if self.job_id else ()
        made += ((engine.TARGETS, self.target_node),) if self.target_node else ()
        return self.before_change + [engine.Step(self.change, creates=made,
                                                 removes=tuple((engine.NODES, n) for n in self.unused))]

    @property
    def before_change(self) -> list:
        """The image file, the new nodes, the reopen of images the job writes."""
        steps = []
        if self.create:
            steps.append(engine.Step(engine.cmd(engine.CREATE_IMAGE, **self.create),
                                     creates=((engine.FILES, self.create["path"]),)))
        steps += [engine.add_node(c["arguments"]) for c in self.prepare]
        if self.reopen:
            steps.append(engine.send(self.reopen))  # writable images stay so: nothing to take back
        return steps

    def commands(self) -> list:
        """Every QMP command the operation sends to make its change, in order (check mode shows them)."""
        return [c for c in engine.commands(self.steps) if c["execute"] != engine.CREATE_IMAGE]


# -- reading a record ------------------------------------------------------------------------------
def chain_of(record: dict) -> list:
    return blockdev.layers(record.get("nodes") or [])


def _filters(record: dict) -> list:
    return [n for n in record.get("nodes") or [] if n["driver"] == "throttle"]


def _fmt_name(dev_id: str, layer: Layer) -> str:
    return "%s.%s" % (dev_id, blockdev.roles_of(layer.gen)[1])


def _stor_name(dev_id: str, layer: Layer) -> str:
    return "%s.%s" % (dev_id, blockdev.roles_of(layer.gen)[0])


def _io(record: dict):
    spec = record.get("spec") or {}
    return io_settings("disks[%s]" % record["name"], spec.get("cache", "none"), spec.get("aio", "threads"),
                       spec.get("discard", "ignore"), spec.get("detect_zeroes", "off"))


def _path_kinds(record: dict):
    """path -> file or block, from the protocol drivers the record has; new images are files."""
    kinds = {n["filename"]: blockdev.PATH_BLOCK for n in blockdev.flat(record.get("nodes"))
             if n.get("driver") == "host_device" and "filename" in n}
    return lambda path: kinds.get(path, blockdev.PATH_FILE)


def with_chain(record: dict, chain: list) -> dict:
    """The record with ``chain`` as its images (restart form), its filter kept on top, and the
    device's ``drive`` on the new top."""
    read_only = (record.get("spec") or {}).get("mode") == "ro"
    nodes = blockdev.chain_nodes(record["id"], chain, _path_kinds(record), _io(record), read_only)
    nodes = blockdev.keep_separate(record.get("nodes"), nodes)  # what QEMU holds on its own stays so
    filters = [dict(f, file=nodes[-1]["node-name"]) for f in _filters(record)]
    nodes += filters
    out = dict(record, nodes=nodes)
    if not filters:
        out["hvinfo"] = dict(record["hvinfo"], drive=nodes[-1]["node-name"])
        out["props"] = dict(record["props"], drive=nodes[-1]["node-name"])
    return out


def _former(record: dict) -> list:
    return list(record.get("former_images") or [])


def _find(chain: list, path: str, what: str, record: dict) -> int:
    for index, layer in enumerate(chain):
        if layer.path == path:
            return index
    raise ConfigError("%s: %s is not an image of disks[%s]; its chain is, bottom-up: %s"
                      % (what, path, record["name"], ", ".join(layer.path for layer in chain)))


def _job_id(record: dict, action: str) -> str:
    return "%s.%s%d" % (record["id"], action, blockdev.next_gen(record.get("nodes") or []))


def _filter_node(record: dict) -> str:
    # Outside the collection's node name space (<id>.<role><gen>): a job's filter is QEMU's to
    # remove, never a leftover to purge (plan.purge_orphans).
    return "%s_job" % record["id"]


# -- planners ------------------------------------------------------------------------------------
def plan_snapshot(record: dict, path: str, create: bool, facts) -> Optional[GraphOp]:
    """A new overlay on top; None when ``path`` already is the top (re-run)."""
    chain = chain_of(record)
    label = "disks[%s]" % record["name"]
    if chain and chain[-1].path == path:
        return None
    if any(layer.path == path for layer in chain):
        raise ConfigError("snapshot.path: %s is already an image of %s, below its top; give a new file for "
                          "the overlay" % (path, label))
    _require_writable_disk(record, "snapshot")
    top = chain[-1]
    if create:
        if facts.kind != "missing":
            raise ConfigError("snapshot.path: %s exists, and the collection never changes an existing file; "
                              "give a new path, or create: false to use that file as the overlay (a qcow2 image "
                              "whose backing file is %s)" % (path, top.path))
    elif facts.kind != "file" or facts.magic != b"QFI\xfb":
        raise ConfigError("snapshot.path: %s is %s; with create: false it must be a qcow2 image whose backing "
                          "file is %s" % (path, "missing" if facts.kind == "missing" else "not a qcow2 image", top.path))
    elif not facts.backing or facts.backing[0].path != top.path:
        raise ConfigError("snapshot.path: %s has backing file %s, not %s (the top of %s); create it with "
                          "qemu-img create -f qcow2 -b %s -F %s %s"
                          % (path, facts.backing[0].path if facts.backing else "none", top.path, label,
                             top.path, top.fmt, path))
    layer = Layer(blockdev.next_gen(record["nodes"]), path, "qcow2")
    read_only = (record.get("spec") or {}).get("mode") == "ro"
    added = blockdev.layer_nodes(record["id"], layer, blockdev.PATH_FILE, _io(record), read_only, backing=None)
    new = with_chain(record, chain + [layer])
    new["former_images"] = [p for p in _former(record) if p != path]
    if not new["former_images"]:
        new.pop("former_images")
    change = engine.cmd("blockdev-snapshot", node=_fmt_name(record["id"], top), overlay=added[-1]["node-name"])
    return GraphOp(SNAPSHOT, label, record["id"], record, new, "an overlay %s on %s" % (path, top.path),
                   prepare=tuple(engine.cmd("blockdev-add", **n) for n in added), change=change,
                   create={"path": path, "format": "qcow2", "backing": top.path, "backing_format": top.fmt}
                   if create else None)


def plan_commit(record: dict, top: Optional[str], base: Optional[str]) -> Optional[GraphOp]:
    """Fold the images from ``top`` (default: the active one) down into ``base`` (default: the
    bottom); None when there is nothing above the base, or ``top`` already left the chain."""
    chain = chain_of(record)
    label = "disks[%s]" % record["name"]
    in_chain = {layer.path for layer in chain}
    if top and top not in in_chain and top in _former(record) and (not base or base in in_chain):
        return None  # a re-run: that image was folded already
    top_index = _find(chain, top, "commit.top", record) if top else len(chain) - 1
    base_index = _find(chain, base, "commit.base", record) if base else 0
    if top_index <= base_index:
        if top or base:
            if top_index == base_index and len(chain) == 1:
                return None
            raise ConfigError("commit: base %s must be below top %s in the chain of %s (bottom-up: %s)"
                              % (chain[base_index].path, chain[top_index].path, label,
                                 ", ".join(layer.path for layer in chain)))
        return None
    _require_writable_disk(record, "commit")
    active = top_index == len(chain) - 1
    gone = chain[base_index + 1:top_index + 1]
    new = with_chain(record, chain[:base_index + 1] + chain[top_index + 1:])
    new["former_images"] = _former(record) + [layer.path for layer in gone]
    job_id = _job_id(record, COMMIT)
    args = {"device": _fmt_name(record["id"], chain[-1]), "base_node": _fmt_name(record["id"], chain[base_index])}
    if not active:
        args["top_node"] = _fmt_name(record["id"], chain[top_index])
    unused = _layer_names(record, reversed(gone))
    what = "%s into %s" % (", ".join(layer.path for layer in gone), chain[base_index].path)
    # The job writes the base and, for an intermediate commit, the backing name in the image
    # above top (block/commit.c, commit_start): both must be writable first.
    written = [chain[base_index]] + ([] if active else [chain[top_index + 1]])
    return GraphOp(COMMIT, label, record["id"], record, new, ("active commit of " if active else "commit of ") + what,
                   change=engine.job_command(COMMIT, job_id, _filter_node(record), **args), job_id=job_id, unused=unused,
                   former=tuple(layer.path for layer in gone), reopen=_reopen_writable(record, written))


def plan_stream(record: dict, base: Optional[str]) -> Optional[GraphOp]:
    """Pull the images between ``base`` (default: none, i.e. all) and the top into the top."""
    chain = chain_of(record)
    label = "disks[%s]" % record["name"]
    base_index = _find(chain, base, "stream.base", record) if base else -1
    gone = chain[base_index + 1:-1]
    if not gone:
        return None
    _require_writable_disk(record, "stream")
    new = with_chain(record, chain[:base_index + 1] + chain[-1:])
    new["former_images"] = _former(record) + [layer.path for layer in gone]
    job_id = _job_id(record, STREAM)
    args = {"device": _fmt_name(record["id"], chain[-1])}
    if base_index >= 0:
        args["base_node"] = _fmt_name(record["id"], chain[base_index])
    return GraphOp(STREAM, label, record["id"], record, new,
                   "stream of %s into %s" % (", ".join(layer.path for layer in gone), chain[-1].path),
                   change=engine.job_command(STREAM, job_id, _filter_node(record), **args), job_id=job_id,
                   unused=_layer_names(record, reversed(gone)), former=tuple(layer.path for layer in gone))


def plan_mirror(record: dict, path: str, fmt: str, create: bool, pivot: bool, facts, size: int) -> Optional[GraphOp]:
    """Copy the disk to ``path`` and move onto it (``pivot``), or keep a consistent copy and
    stay; None when the disk already is on ``path`` alone."""
    chain = chain_of(record)
    label = "disks[%s]" % record["name"]
    if [layer.path for layer in chain] == [path]:
        return None
    if any(layer.path == path for layer in chain):
        raise ConfigError("mirror.path: %s is an image of %s already; give a new file for the copy" % (path, label))
    if create and facts.kind != "missing":
        raise ConfigError("mirror.path: %s exists, and the collection never changes an existing file; give a new "
                          "path, or create: false to copy into that image (it must be a %s image of %d bytes)"
                          % (path, fmt, size))
    if not create and facts.kind not in ("file", "block"):
        raise ConfigError("mirror.path: %s is %s; with create: false it must be an existing %s image of %d bytes"
                          % (path, facts.kind, fmt, size))
    layer = Layer(blockdev.next_gen(record["nodes"]), path, fmt)
    read_only = (record.get("spec") or {}).get("mode") == "ro"
    added = blockdev.layer_nodes(record["id"], layer, facts.kind if facts.kind == "block" else blockdev.PATH_FILE,
                                 _io(record), read_only, backing=False)
    nodes = record["nodes"]
    job_id = _job_id(record, MIRROR)
    # The source is the device's root; with a throttle filter on top, the target replaces the
    # image below it, so the disk keeps its limits (qapi/block-core.json, blockdev-mirror "replaces").
    args = {"device": blockdev.top_node(nodes), "target": blockdev.top_node(added), "sync": "full"}
    if _filters(record):
        args["replaces"] = _fmt_name(record["id"], chain[-1])
    target_names = tuple(n["node-name"] for n in reversed(added))
    if pivot:
        new = with_chain(record, [layer])
        new["former_images"] = _former(record) + [c.path for c in chain]
        unused = _layer_names(record, reversed(chain))
        reason = "mirror to %s, then pivot" % path
    else:
        new, unused, reason = record, target_names, "copy to %s (the disk stays on %s)" % (path, chain[-1].path)
    return GraphOp(MIRROR, label, record["id"], record, new, reason,
                   prepare=tuple(engine.cmd("blockdev-add", **n) for n in added),
                   change=engine.job_command(MIRROR, job_id, _filter_node(record), **args), job_id=job_id,
                   at_ready="complete" if pivot else "keep", unused=unused,
                   create={"path": path, "format": fmt, "size": size} if create else None,
                   former=tuple(c.path for c in chain) if pivot else ())


def plan_copy_to_node(record: dict, target: dict, disk_size: int, target_size: int) -> Optional[GraphOp]:
    """Copy the disk into the standalone node ``target`` and stay on its chain (a mirror ended
    at ready without a pivot); None when that node holds a copy of this disk already."""
    label = "disks[%s]" % record["name"]
    if target.get("copy_of") == record["id"]:
        return None
    if target.get("copy_of"):
        raise ConfigError("mirror.node: node %s holds a copy of another disk already; give a node of its own "
                          "for disks[%s]" % (target["name"], record["name"]))
    if target["read_only"]:
        raise ConfigError("mirror.node: node %s is read-only; a copy needs a writable node" % target["name"])
    if target_size != disk_size:
        raise ConfigError("mirror.node: node %s (%s) has %d bytes and %s %d; QEMU would fail the job: give an "
                          "image of the disk's size" % (target["name"], target["path"], target_size, label, disk_size))
    job_id = _job_id(record, MIRROR)
    args = {"device": blockdev.top_node(record["nodes"]), "target": standalone.format_node(target), "sync": "full"}
    return GraphOp(MIRROR, label, record["id"], record, record,
                   "copy to node %s (%s); the disk stays on %s" % (target["name"], target["path"],
                                                                   chain_of(record)[-1].path),
                   change=engine.job_command(MIRROR, job_id, _filter_node(record), **args), job_id=job_id,
                   at_ready="keep", target_node=target["name"])


def _reopen_writable(record: dict, layers: list) -> dict:
    """blockdev-reopen of the images ``layers`` read-write.

    A start opens the images below the top read-only, protocol node included, and an explicit
    ``read-only`` is not changed by the reopen a job does of the format node, so QEMU would
    refuse the job ("Block node is read-only"). blockdev-reopen takes every option again
    (qapi/block-core.json), so each node is sent as recorded but writable, a protocol node
    opened inside its format node inside it (measured: listed beside its parent instead, QEMU
    10.0 leaves the job that follows paused for good)."""
    names = {name for layer in layers for name in (_fmt_name(record["id"], layer), _stor_name(record["id"], layer))}
    return engine.cmd("blockdev-reopen", options=[_writable(n) for n in record["nodes"] if n["node-name"] in names])


def _writable(node: dict) -> dict:
    node = dict(node, **{"read-only": False})
    if isinstance(node.get("file"), dict):
        node["file"] = _writable(node["file"])
    return node


def read_only_again(record: dict) -> Optional[dict]:
    """After a commit (done or not): blockdev-reopen of the images ``record`` keeps read-only,
    which the commit's reopen made writable (QEMU only restores what it changed itself,
    block/commit.c commit_clean); None when there is none. The reopen also writes out their
    cached metadata, so the files are consistent on disk."""
    # As recorded: a protocol node opened inside its format node is reopened with it (_reopen_writable).
    nodes = [n for n in blockdev.without_throttle(record.get("nodes") or []) if n.get("read-only")]
    return engine.cmd("blockdev-reopen", options=nodes) if nodes else None


def _layer_names(record: dict, layers) -> tuple:
    """The nodes of ``layers`` that a blockdev-del of their own closes, top-down: the format node,
    and the protocol node only where the record opened it on its own (blockdev.flat)."""
    own = set(blockdev.own_names(record.get("nodes")))
    names = []
    for layer in layers:
        names += [n for n in (_fmt_name(record["id"], layer), _stor_name(record["id"], layer)) if n in own]
    return tuple(names)


def _require_writable_disk(record: dict, what: str) -> None:
    if (record.get("spec") or {}).get("mode") == "ro":
        raise ConfigError("%s: disks[%s] is read-only (mode: ro); the chain of a read-only disk does not change"
                          % (what, record["name"]))


# -- a killed run, with QEMU gone ----------------------------------------------------------------
def settle_stopped(layout: runtime.GuestLayout, journal) -> runtime.GuestLayout:
    """The layout a stopped instance keeps, given the journal its last run left: an operation
    past its commit point (PHASE_FINALIZING) counts as done, any other as not begun. At that
    point both chains hold the same data (a job is drained in ``pending``; a new overlay is
    empty), so either is safe to start from; before it only the old one is."""
    for entry in journal:
        if settled_by_runner(entry) and entry.phase == runtime.PHASE_FINALIZING and entry.record:
            layout.put(entry.record)
    return layout


def kept_nodes(rt: runtime.Runtime) -> set:
    """Nodes in the collection's name space that no chain lists and that must stay: a running
    operation's new nodes, and nodes a disk no longer uses that the play has not asked to delete."""
    names = {n for e in rt.journal if settled_by_runner(e) for n in e.creates.get("nodes") or []}
    names |= {n for r in rt.layout.devices for n in r.get("unused_nodes") or []}
    # These are format nodes; the protocol node opened inside one (blockdev.node_chain) goes
    # with it, so it stays too.
    inside = set()
    for name in names:
        own = ids.own_node(name)
        if own and blockdev.roles_of(own[2])[1] == name[len(own[0]) + 1:]:
            inside.add("%s.%s" % (own[0], blockdev.roles_of(own[2])[0]))
    return names | inside
