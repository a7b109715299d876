# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The action engine's data (pure; docs/design.md "The action engine").

Every action is described as data: ordered ``Step``s, each one command (a QMP command, or a
host operation such as creating an image file) naming what it creates and what it removes,
by kind and name. From that one description follow, with no second table:

* the journal entry written before the first command (``journal_names``): everything the
  action creates and removes, so that a later run can settle it from what QEMU has then;
* the rollback of a failed action (``rollback``): the steps done, last first, each taken back
  by deleting what it created, or, for a step that changes state instead of creating
  something (a tray, a medium, a drive switch), by the inverse the planner gave it, as
  libvirt undoes exactly the flagged steps of its attach data
  (qemu_block.c, qemuBlockStorageSourceAttachRollback);
* the clean-up steps (``Step.cleanup``) that run once the action's effect is in place: a
  failure there keeps the effect and is tolerant of what is gone already.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ansible_collections.blocklayer.qemu.plugins.module_utils import ids, runtime
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Value

# What a step creates or removes, by the journal's keys.
DEVICES, NODES, NETDEVS, OBJECTS, JOBS, FILES = "devices", "nodes", "netdevs", "objects", "jobs", "files"
# A standalone node a job writes into: not created, but in use until the job ends (standalone.job_using).
TARGETS = "targets"
# Dirty bitmaps, named "<node>/<bitmap>" (a node name has no "/", QEMU's id_wellformed()).
BITMAPS = "bitmaps"

# How QEMU deletes what a step created (its rollback).
_DELETE = {DEVICES: ("device_del", "id"), NODES: ("blockdev-del", "node-name"), NETDEVS: ("netdev_del", "id"),
           OBJECTS: ("object-del", "id")}

# A host operation, not a QMP command: create the image file ``arguments`` describe (graphops).
CREATE_IMAGE = "create-image"


def cmd(execute: str, **arguments) -> dict:
    """A QMP command as the session sends it."""
    return {"execute": execute, "arguments": arguments}


@dataclass(init=False, repr=False, eq=False)
class Step(Value):
    """One command of an action and what it does to QEMU's (or the host's) objects."""

    command: dict
    creates: tuple = ()  # ((kind, name), ...)
    removes: tuple = ()
    undo: Optional[dict] = None  # for a step that changes state rather than creating: its inverse
    cleanup: bool = False  # runs once the action's effect is in place; a failure does not undo the action


def delete_command(kind: str, name: str) -> Optional[dict]:
    """The command that deletes what a step created; None for what QEMU cannot delete (a file:
    graphops removes only a file it created, by identity)."""
    if kind == BITMAPS:
        node, _slash, bitmap = name.partition("/")
        return cmd("block-dirty-bitmap-remove", node=node, name=bitmap)
    how = _DELETE.get(kind)
    return cmd(how[0], **{how[1]: name}) if how else None


def rollback(done) -> list:
    """The commands that take back the steps ``done``, last first."""
    out = []
    for step in reversed(list(done)):
        if step.undo:
            out.append(step.undo)
        out += [c for c in (delete_command(kind, name) for kind, name in reversed(step.creates)) if c]
    return out


def created_last_first(steps, kind: str) -> list:
    """The names of ``kind`` that ``steps`` created, last first (the order they are deleted in)."""
    return [name for step in reversed(list(steps)) for k, name in reversed(step.creates) if k == kind]


def commands(steps) -> list:
    return [step.command for step in steps]


def journal_names(steps) -> tuple:
    """``(creates, removes)`` of a journal entry: kind -> names, in step order; what the same
    action both creates and removes is neither (a net change), and an empty kind is left out."""
    creates, removes = {}, {}
    for step in steps:
        for kind, name in step.creates:
            creates.setdefault(kind, []).append(name)
        for kind, name in step.removes:
            removes.setdefault(kind, []).append(name)
    both = {(k, n) for k, names in creates.items() for n in names if n in removes.get(k, ())}
    creates = {k: [n for n in names if (k, n) not in both] for k, names in creates.items()}
    removes = {k: [n for n in names if (k, n) not in both] for k, names in removes.items()}
    return {k: v for k, v in creates.items() if v}, {k: v for k, v in removes.items() if v}


def journal_entry(action: str, ident: str, steps, record: Optional[dict], old: Optional[dict]) -> runtime.Pending:
    """The write-ahead record of an action, saved before its first command (docs/faults.md):
    what ``steps`` create and remove, the record once done and the one it replaces."""
    creates, removes = journal_names(steps)
    return runtime.Pending(action, ident, creates, removes, record, old)


class DiskOperation:
    """What an operation on one disk's graph (graph.GraphOp, backup.DiskOp) shares: its journal
    entry and its report, from ``action``, ``label`` (``disks[<name>]``), ``dev_id``, ``steps``,
    ``record``, ``old``, ``reason`` and ``job_id``."""

    def pending(self) -> runtime.Pending:
        """The journal entry, written before the first command (docs/faults.md)."""
        return journal_entry(self.action, self.dev_id, self.steps, self.record, self.old)

    def report(self) -> dict:
        out = {"action": self.action, "kind": "disk", "name": self.label[len("disks["):-1], "id": self.dev_id,
               "reason": self.reason}
        if self.job_id:
            out["job"] = self.job_id
        return out


# -- steps, one constructor for each kind of command ---------------------------------------------
def add_object(obj: dict) -> Step:
    return Step(cmd("object-add", **obj), creates=((OBJECTS, obj["id"]),))


def del_object(obj_id: str, cleanup: bool = True) -> Step:
    return Step(cmd("object-del", id=obj_id), removes=((OBJECTS, obj_id),), cleanup=cleanup)


def add_node(node: dict) -> Step:
    """One blockdev-add; a protocol node opened inside its format node goes with it (QEMU deletes
    the child with its parent), so the step creates the top name only."""
    return Step(cmd("blockdev-add", **node), creates=((NODES, node["node-name"]),))


def del_node(name: str, cleanup: bool = True) -> Step:
    return Step(cmd("blockdev-del", **{"node-name": name}), removes=((NODES, name),), cleanup=cleanup)


def add_netdev(netdev: dict) -> Step:
    return Step(cmd("netdev_add", **netdev), creates=((NETDEVS, netdev["id"]),))


def del_netdev(netdev_id: str) -> Step:
    return Step(cmd("netdev_del", id=netdev_id), removes=((NETDEVS, netdev_id),), cleanup=True)


def add_device(props: dict) -> Step:
    return Step(cmd("device_add", **props), creates=((DEVICES, props["id"]),))


def del_device(dev_id: str) -> Step:
    """device_del only asks the guest: the device is gone at its DEVICE_DELETED (hotplug)."""
    return Step(cmd("device_del", id=dev_id), removes=((DEVICES, dev_id),))


def open_tray(dev_id: str) -> Step:
    return Step(cmd("blockdev-open-tray", id=dev_id, force=True), undo=cmd("blockdev-close-tray", id=dev_id))


def close_tray(dev_id: str) -> Step:
    return Step(cmd("blockdev-close-tray", id=dev_id), undo=cmd("blockdev-open-tray", id=dev_id, force=True))


def remove_medium(dev_id: str, node: str) -> Step:
    """Take ``node`` out of the drive; undone by inserting it again."""
    return Step(cmd("blockdev-remove-medium", id=dev_id),
                undo=cmd("blockdev-insert-medium", id=dev_id, **{"node-name": node}))


def insert_medium(dev_id: str, node: str) -> Step:
    return Step(cmd("blockdev-insert-medium", id=dev_id, **{"node-name": node}),
                undo=cmd("blockdev-remove-medium", id=dev_id))


def set_property(path: str, prop: str, value, before=None) -> Step:
    """qom-set; with ``before``, undone by setting that value again."""
    return Step(cmd("qom-set", path=path, property=prop, value=value),
                undo=cmd("qom-set", path=path, property=prop, value=before) if before is not None else None)


def send(command: dict, cleanup: bool = False) -> Step:
    """A command that creates and removes nothing by name (a resize, a reopen, a limits change)."""
    return Step(command, cleanup=cleanup)


# -- dirty bitmaps and transactions (docs/backup.md) ---------------------------------------------
def bitmap(node: str, name: str) -> str:
    """A bitmap's name in a journal entry."""
    return "%s/%s" % (node, name)


def add_bitmap(node: str, name: str, persistent: bool, disabled: bool = False) -> Step:
    args = {"node": node, "name": name, "persistent": persistent}
    if disabled:
        args["disabled"] = True
    return Step(cmd("block-dirty-bitmap-add", **args), creates=((BITMAPS, bitmap(node, name)),))


def remove_bitmap(node: str, name: str, cleanup: bool = False) -> Step:
    return Step(cmd("block-dirty-bitmap-remove", node=node, name=name), removes=((BITMAPS, bitmap(node, name)),),
                cleanup=cleanup)


def merge_bitmaps(node: str, target: str, sources) -> Step:
    """Merge ``sources`` ((node, name), ...) into ``target``; not taken back on its own: it runs
    in a transaction (all or nothing) or into a bitmap the same action created."""
    return Step(cmd("block-dirty-bitmap-merge", node=node, target=target,
                    bitmaps=[{"node": n, "name": b} for n, b in sources]))


def disable_bitmap(node: str, name: str) -> Step:
    return Step(cmd("block-dirty-bitmap-disable", node=node, name=name),
                undo=cmd("block-dirty-bitmap-enable", node=node, name=name))


def enable_bitmap(node: str, name: str) -> Step:
    return Step(cmd("block-dirty-bitmap-enable", node=node, name=name),
                undo=cmd("block-dirty-bitmap-disable", node=node, name=name))


def transaction(steps) -> Step:
    """``steps`` (each a command QEMU's ``transaction`` takes as an action) as one command: QEMU
    does all of them or none, at one point in time (qapi/transaction.json). It creates and
    removes what its actions do and is undone as they are, last first. (No ``completion-mode:
    grouped``: QEMU refuses it beside bitmap actions, blockdev.c; the runner fails the jobs
    together itself.)"""
    steps = list(steps)
    args = {"actions": [{"type": s.command["execute"], "data": s.command["arguments"]} for s in steps]}
    inverses = [s.undo for s in reversed(steps) if s.undo]  # what it created, rollback deletes
    undo = None
    if len(inverses) == 1:
        undo = inverses[0]
    elif inverses:
        undo = cmd("transaction", actions=[{"type": c["execute"], "data": c["arguments"]} for c in inverses])
    return Step(cmd("transaction", **args), creates=tuple(c for s in steps for c in s.creates),
                removes=tuple(r for s in steps for r in s.removes), undo=undo)


# -- block jobs (jobs.JobRunner drives them) ------------------------------------------------------
JOB_COMMANDS = {"commit": "block-commit", "stream": "block-stream", "mirror": "blockdev-mirror",
                "create": "blockdev-create"}
# Set by job_command on every job: its id, its filter node's name, and manual finalize and dismiss,
# so a job's end is the collection's to see (docs/block-graph.md).
_JOB_MANAGED = ("job-id", "filter-node-name", "auto-dismiss", "auto-finalize")
_FILTER_SUFFIX = ".flt"


def filter_node_for(job_id: str) -> Optional[str]:
    """``<job id>.flt`` when that is a valid node name (31 characters, id_wellformed), else None."""
    name = job_id + _FILTER_SUFFIX
    if len(name) <= ids.NODE_NAME_MAX and ids.is_identifier(name):
        return name
    return None


def job_command(kind: str, job_id: str, filter_node: Optional[str] = None, **args) -> dict:
    """The QMP command starting a job of ``kind`` (commit, stream, mirror, create).

    Keyword arguments are the command's own, with ``_`` for ``-`` (``top_node`` is ``top-node``).
    The filter node is ``<job id>.flt`` unless ``filter_node`` names another one.
    """
    if kind not in JOB_COMMANDS:
        raise ValueError("unknown job kind %r; use one of %s" % (kind, ", ".join(JOB_COMMANDS)))
    arguments = {key.replace("_", "-"): value for key, value in args.items()}
    managed = sorted(set(arguments) & set(_JOB_MANAGED))
    if managed:
        raise ValueError("job_command sets %s itself" % ", ".join(managed))
    arguments["job-id"] = job_id
    if kind != "create":  # qmp_blockdev_create takes only job-id and options
        arguments.update({"filter-node-name": _filter_name(job_id, filter_node),
                          "auto-dismiss": False, "auto-finalize": False})
    elif filter_node is not None:
        raise ValueError("a create job has no filter node")
    return {"execute": JOB_COMMANDS[kind], "arguments": arguments}


def _filter_name(job_id: str, filter_node: Optional[str]) -> str:
    if filter_node is not None:
        ids.check_node_name(filter_node)
        return filter_node
    name = filter_node_for(job_id)
    if name is None:
        raise ConfigError(
            "block job %r: its filter node name %r is not a valid node name (at most %d characters, a "
            "letter first, then letters, digits, '-', '.' or '_'); pass filter_node with a shorter name"
            % (job_id, job_id + _FILTER_SUFFIX, ids.NODE_NAME_MAX))
    return name
