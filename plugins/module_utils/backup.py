# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A disk's history: checkpoints and push backups, planned as engine steps (pure; docs/backup.md).

A checkpoint is a dirty bitmap on the disk's top format node, recorded on the disk's record as
``checkpoints: [{name, node, created, persistent, backup}]``, oldest first. As libvirt keeps
them (docs/interop/bitmaps.rst "Incremental backups - Multiple bitmaps"), only the newest one
records: a new checkpoint disables the one before it in the same transaction, so each bitmap
holds the writes between its checkpoint and the next one, and what changed since a checkpoint
is the merge of its bitmap and every later one. A backup is a ``blockdev-backup`` job into a
new qcow2 file, started in one transaction with the checkpoint it creates (the next
incremental's base); an incremental one copies a scratch bitmap, the merge of the checkpoints
since ``since``, made in that transaction and removed after the job.

Each operation on one disk is a ``DiskOp``: steps before the transaction (the target file and
node), the transaction's actions, and the clean-up once its job ended. The actions of every
disk of a task go into one transaction, so several disks share one point in time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from ansible_collections.blocklayer.qemu.plugins.module_utils import blockdev, engine
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Value

CHECKPOINT, CHECKPOINT_DELETE, BACKUP = "checkpoint", "checkpoint-delete", "backup"
ACTIONS = (CHECKPOINT, CHECKPOINT_DELETE, BACKUP)  # settled by graphops (graph.settled_by_runner)
FULL, INCREMENTAL = "full", "incremental"
# The bitmap an incremental backup copies: made and removed by the backup (a user's checkpoint
# name starts with a letter or digit, so it never is this one).
SCRATCH = "_blocklayer_backup"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")


@dataclass(init=False, repr=False, eq=False)
class DiskOp(engine.DiskOperation, Value):
    """One checkpoint or backup operation on one disk."""

    action: str
    label: str  # disks[<name>]
    dev_id: str
    old: dict
    record: dict
    reason: str
    prepare: tuple = ()  # before the transaction: the target file and node
    actions: tuple = ()  # the steps that go into the task's one transaction
    cleanup: tuple = ()  # once the job ended well: the target node, the scratch bitmap
    job_id: Optional[str] = None
    target: Optional[str] = None  # the backup file
    size: int = 0  # the disk's virtual size

    @property
    def steps(self) -> list:
        """What the journal entry names: everything the operation creates (the clean-up is
        derived from the entry in every outcome, finish_steps / undo_steps)."""
        return list(self.prepare) + list(self.actions)


# -- reading QEMU and a record ---------------------------------------------------------------------
def live_bitmaps(named: list) -> dict:
    """``(node, bitmap) -> {count, recording, persistent, busy, inconsistent, granularity}`` from
    a ``query-named-block-nodes`` answer."""
    found = {}
    for node in named or []:
        for bitmap in node.get("dirty-bitmaps") or []:
            found[(node.get("node-name"), bitmap["name"])] = {
                "count": bitmap.get("count", 0), "granularity": bitmap.get("granularity"),
                "recording": bitmap.get("recording", False), "persistent": bitmap.get("persistent", False),
                "busy": bitmap.get("busy", False), "inconsistent": bitmap.get("inconsistent", False)}
    return found


def checkpoints(record: dict) -> list:
    """The disk's checkpoints, oldest first (a record written before checkpoints existed: none)."""
    return list(record.get("checkpoints") or [])


def listing(record: dict, live: dict) -> list:
    """Each recorded checkpoint with what QEMU says of its bitmap now: ``present`` (false: gone,
    e.g. a non-persistent one after a stop), ``count`` (bytes written since it, up to the next
    checkpoint), ``recording``, ``inconsistent`` (left by a QEMU that did not close the image)."""
    out = []
    for cp in checkpoints(record):
        info = live.get((cp["node"], cp["name"]))
        out.append(dict(cp, disk=record["name"], present=info is not None,
                        count=info["count"] if info else None, recording=bool(info and info["recording"]),
                        inconsistent=bool(info and info["inconsistent"])))
    return out


def check_name(name: str, option: str) -> str:
    if not _NAME.match(name or ""):
        raise ConfigError("%s: %r is not a checkpoint name; give 1 to 63 letters, digits, '_', '.', ':' or '-', "
                          "starting with a letter or digit" % (option, name))
    return name


def _top(record: dict) -> dict:
    name = blockdev.top_format_node(record.get("nodes"))
    node = next((n for n in record.get("nodes") or [] if n["node-name"] == name), None)
    if node is None:
        raise ConfigError("disks[%s] has no image (an empty drive); it has no history to keep" % record["name"])
    return node


def _require_persistent_ok(record: dict, top: dict, persistent: bool, option: str) -> None:
    if persistent and top["driver"] != "qcow2":
        path = (top.get("file") or {}).get("filename") if isinstance(top.get("file"), dict) else None
        raise ConfigError("%s: disks[%s] is a %s image%s; a persistent checkpoint is a dirty bitmap stored in a "
                          "qcow2 image, and a bitmap on a %s image would not survive a stop of the instance: give "
                          "persistent: false for a checkpoint that lasts while this QEMU runs (the next backup "
                          "after a stop must be full), or move the disk onto a qcow2 image (qemu_blockdev mirror)"
                          % (option, record["name"], top["driver"], " (%s)" % path if path else "", top["driver"]))


def _stop_recording(record: dict, node: str, live: dict) -> list:
    """Disable the newest checkpoint's bitmap when it records on ``node``: the new checkpoint
    takes over from this point in time."""
    cps = checkpoints(record)
    if cps and cps[-1]["node"] == node and (live.get((node, cps[-1]["name"])) or {}).get("recording"):
        return [engine.disable_bitmap(node, cps[-1]["name"])]
    return []


def _with_checkpoint(record: dict, cp: dict) -> dict:
    return dict(record, checkpoints=checkpoints(record) + [cp])


# -- planners ----------------------------------------------------------------------------------------
def plan_checkpoint(record: dict, name: str, persistent: bool, live: dict, created: str) -> Optional[DiskOp]:
    """A new checkpoint on the disk; None when the disk has one of that name (a re-run)."""
    label = "disks[%s]" % record["name"]
    if any(cp["name"] == name for cp in checkpoints(record)):
        return None
    top = _top(record)
    _require_persistent_ok(record, top, persistent, "checkpoint")
    node = top["node-name"]
    actions = _stop_recording(record, node, live) + [engine.add_bitmap(node, name, persistent)]
    cp = {"name": name, "node": node, "created": created, "persistent": persistent}
    return DiskOp(CHECKPOINT, label, record["id"], record, _with_checkpoint(record, cp),
                  "checkpoint %s (%s dirty bitmap on %s)" % (name, "persistent" if persistent else "non-persistent",
                                                             node), actions=tuple(actions))


def plan_checkpoint_delete(record: dict, name: str, live: dict) -> Optional[DiskOp]:
    """Delete a checkpoint; None when the disk has none of that name.

    Its bitmap is merged into the one before it, in the transaction that removes it, so an
    incremental backup since that earlier checkpoint still copies the writes it held (as
    libvirt's qemuCheckpointDiscardBitmaps does); when it was the recording one, the earlier
    one records again. A later checkpoint's bitmap never held those writes and needs nothing.
    """
    cps = checkpoints(record)
    index = next((i for i, cp in enumerate(cps) if cp["name"] == name), None)
    if index is None:
        return None
    cp = cps[index]
    label = "disks[%s]" % record["name"]
    new = dict(record, checkpoints=cps[:index] + cps[index + 1:])
    info = live.get((cp["node"], name))
    if info is None:
        return DiskOp(CHECKPOINT_DELETE, label, record["id"], record, new,
                      "checkpoint %s: its bitmap is not in QEMU (gone with a stop, or a snapshot moved the disk "
                      "off %s): removed from the record" % (name, cp["node"]))
    if info["busy"]:
        raise ConfigError("checkpoint: %s of %s is in use by a block job (busy); wait for the backup to end"
                          % (name, label))
    actions = []
    before = cps[index - 1] if index > 0 else None
    if before and before["node"] == cp["node"] and (cp["node"], before["name"]) in live:
        actions.append(engine.merge_bitmaps(cp["node"], before["name"], [(cp["node"], name)]))
        if info["recording"]:
            actions.append(engine.enable_bitmap(cp["node"], before["name"]))
    actions.append(engine.remove_bitmap(cp["node"], name))
    reason = "delete checkpoint %s%s" % (name, " (merged into %s)" % before["name"] if len(actions) > 1 else "")
    return DiskOp(CHECKPOINT_DELETE, label, record["id"], record, new, reason, actions=tuple(actions))


def plan_backup(record: dict, mode: str, target: str, target_kind: str, name: str, since: Optional[str],
                persistent: bool, live: dict, size: int, created: str) -> Optional[DiskOp]:
    """A push backup of the disk into the new qcow2 file ``target`` that creates the checkpoint
    ``name`` at its point in time; None when ``name`` is the checkpoint of a backup into
    ``target`` already (a re-run)."""
    label = "disks[%s]" % record["name"]
    cps = checkpoints(record)
    done = next((cp for cp in cps if cp["name"] == name), None)
    if done is not None:
        if done.get("backup") == target:
            return None
        raise ConfigError("checkpoint: %s has a checkpoint %s already%s; give a new checkpoint name for this "
                          "backup" % (label, name, " (of the backup %s)" % done["backup"] if done.get("backup") else ""))
    if target_kind != "missing":
        raise ConfigError("target: %s exists, and a backup goes into a new file only (the collection never changes "
                          "an existing one); give a new path for %s" % (target, label))
    top = _top(record)
    _require_persistent_ok(record, top, persistent, "persistent")
    node = top["node-name"]
    job_id = "%s.backup" % record["id"]
    target_node = "%s.bak" % record["id"]
    create = {"path": target, "format": "qcow2", "size": size}
    actions = _stop_recording(record, node, live) + [engine.add_bitmap(node, name, persistent)]
    args = {"job-id": job_id, "device": node, "target": target_node, "sync": FULL,
            "filter-node-name": "%s_bak" % record["id"], "auto-finalize": False, "auto-dismiss": False}
    cleanup = [engine.del_node(target_node)]
    reason = "full backup to %s" % target
    if mode == INCREMENTAL:
        since_cps = _since(record, since, node, live)
        base = since_cps[0].get("backup")
        if base:
            create.update(backing=base, backing_format="qcow2")
        actions += [engine.add_bitmap(node, SCRATCH, False, disabled=True),
                    engine.merge_bitmaps(node, SCRATCH, [(node, cp["name"]) for cp in since_cps])]
        args.update(sync=INCREMENTAL, bitmap=SCRATCH)
        cleanup.append(engine.remove_bitmap(node, SCRATCH, cleanup=True))
        reason = "incremental backup since %s to %s%s" % (
            since, target, " (backing file %s)" % base if base else " (no backing file: checkpoint %s was not a "
            "backup's; rebase it onto the backup of that point in time to restore)" % since)
    actions.append(engine.Step(engine.cmd("blockdev-backup", **args), creates=((engine.JOBS, job_id),)))
    prepare = (engine.Step(engine.cmd(engine.CREATE_IMAGE, **create), creates=((engine.FILES, target),)),
               engine.add_node({"driver": "qcow2", "node-name": target_node, "backing": None,
                                "file": {"driver": "file", "filename": target}}))
    cp = {"name": name, "node": node, "created": created, "persistent": persistent, "backup": target}
    if mode == INCREMENTAL:
        cp["since"] = since
    return DiskOp(BACKUP, label, record["id"], record, _with_checkpoint(record, cp), reason, prepare=prepare,
                  actions=tuple(actions), cleanup=tuple(cleanup), job_id=job_id, target=target, size=size)


def _since(record: dict, since: Optional[str], node: str, live: dict) -> list:
    """The checkpoints whose bitmaps hold what changed since ``since``: it and every later one."""
    label = "disks[%s]" % record["name"]
    cps = checkpoints(record)
    if not since:
        raise ConfigError("since: an incremental backup of %s copies what changed since a checkpoint; name it "
                          "(its checkpoints: %s), or take a full backup" % (label, _names(cps)))
    index = next((i for i, cp in enumerate(cps) if cp["name"] == since), None)
    if index is None:
        raise ConfigError("since: %s has no checkpoint %s (its checkpoints: %s); take a full backup"
                          % (label, since, _names(cps)))
    for cp in cps[index:]:
        info = live.get((cp["node"], cp["name"]))
        why = None
        if cp["node"] != node:
            why = "is on node %s and the disk's top is %s now (a snapshot since)" % (cp["node"], node)
        elif info is None:
            why = "is not in QEMU (a non-persistent checkpoint does not survive a stop)"
        elif info["inconsistent"]:
            why = "is inconsistent (QEMU did not close the image cleanly)"
        if why:
            raise ConfigError("since: checkpoint %s of %s %s, so what changed since %s is not known; take a full "
                              "backup (mode: full)" % (cp["name"], label, why, since))
    return cps[index:]


def _names(cps) -> str:
    return ", ".join(cp["name"] for cp in cps) or "none"


# -- outcomes, from a journal entry (this run's or a killed one's) ----------------------------------
def finish_steps(entry) -> list:
    """After a backup job completed: its target node goes (the file stays), and the scratch
    bitmap."""
    steps = [engine.del_node(n) for n in reversed(entry.creates.get(engine.NODES) or [])]
    return steps + [engine.remove_bitmap(*b.split("/", 1), cleanup=True)
                    for b in entry.creates.get(engine.BITMAPS) or [] if b.endswith("/" + SCRATCH)]


def undo_steps(entry, live: dict) -> list:
    """What takes an operation's transaction back (refused, failed, cancelled, or killed before
    its commit point): the bitmaps it made that QEMU has, and the newest earlier checkpoint
    recording again if the operation had stopped it. The target node and file go as any
    graph operation's do (graphops: the file only by its identity)."""
    made = [tuple(b.split("/", 1)) for b in entry.creates.get(engine.BITMAPS) or []]
    steps = [engine.remove_bitmap(n, b, cleanup=True) for n, b in reversed(made) if (n, b) in live]
    old = checkpoints(entry.old or {})
    if made and old:
        newest = (old[-1]["node"], old[-1]["name"])
        if newest[0] == made[0][0] and newest in live and not live[newest]["recording"]:
            steps.append(engine.enable_bitmap(*newest))
    return steps


def settled_without_job(entry, live: dict) -> bool:
    """Whether a checkpoint add or delete a killed run sent is in place (its transaction is all
    or nothing): the bitmaps it adds are in QEMU, the one it removes is not."""
    made = [tuple(b.split("/", 1)) for b in entry.creates.get(engine.BITMAPS) or []]
    gone = [tuple(b.split("/", 1)) for b in entry.removes.get(engine.BITMAPS) or []]
    if made:
        return all(b in live for b in made)
    if gone:
        return not any(b in live for b in gone)
    return True  # a record-only change


def result(op: DiskOp, outcome) -> dict:
    """A backup's report for one disk, with the job's bytes (QEMU's count, not ours)."""
    cp = op.record["checkpoints"][-1]
    copied = outcome.current if outcome is not None else None
    out = {"disk": op.label[len("disks["):-1], "id": op.dev_id, "target": op.target, "checkpoint": cp["name"],
           "mode": INCREMENTAL if cp.get("since") else FULL, "size": op.size, "copied": copied}
    if cp.get("since"):
        out["since"] = cp["since"]
    if outcome is not None:
        out["result"] = outcome.result
        out["dirty"] = "%s dirty of %s total" % (human(copied), human(op.size))
    return out


def human(size: int) -> str:
    """Bytes as Proxmox logs them: 10.0 MiB."""
    value, unit = float(size), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024.0
    return "%d B" % size if unit == "B" else "%.1f %s" % (value, unit)


# -- a start ------------------------------------------------------------------------------------------
def keep_checkpoints(devices: list, before: list) -> None:
    """A start keeps each disk's persistent checkpoints whose node its chain still has (QEMU
    loads their bitmaps from the qcow2 image); a non-persistent one is gone with the old QEMU."""
    kept = {r["id"]: [cp for cp in checkpoints(r) if cp.get("persistent")] for r in before if r["kind"] == "disk"}
    for record in devices:
        names = {n["node-name"] for n in record.get("nodes") or []}
        cps = [cp for cp in kept.get(record["id"]) or [] if cp["node"] in names]
        if cps:
            record["checkpoints"] = cps
