# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Carrying out a planned graph operation (graph.GraphOp) on a running QEMU, and settling the
ones a killed or timed-out run left (docs/block-graph.md).

Saves of the runtime file per operation: the journal entry before the first command, the entry
at its commit point (``phase: finalizing``, just before blockdev-snapshot or job-finalize), and
the outcome. Before the commit point the old chain is the truth; from it on, the new one.
"""

from __future__ import annotations

import json
import os
import subprocess

from ansible_collections.blocklayer.qemu.plugins.module_utils import (
    backup, blockdev, engine, graph, jobs, runtime, standalone)
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError, QemuError, is_gone

# QEMU's texts for "this overlay is in place already" (bdrv_append / qmp_blockdev_snapshot).
_SNAPSHOT_DONE = ("is busy: node is used as backing hd", "already has a backing", "The overlay already")


def image_size(path: str) -> int:
    """The virtual size of an image another process may hold (qemu-img info -U: advisory facts)."""
    out = _qemu_img(["info", "-U", "--output=json", path], "reading the size of %s" % path)
    return int(json.loads(out)["virtual-size"])


def _qemu_img(args: list, what: str) -> str:
    try:
        done = subprocess.run(["qemu-img"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, check=False, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QemuError("%s failed: %s" % (what, exc)) from None
    if done.returncode != 0:
        raise QemuError("%s failed: qemu-img: %s" % (what, done.stderr.strip()))
    return done.stdout


def create_image(create: dict) -> str:
    """A new image file, created exclusively (an existing file or a planted symlink is never
    written) and then formatted through its descriptor, so the name cannot be swapped between;
    returns its identity (``dev:ino``), by which a later run may delete it (and nothing else)."""
    path = create["path"]
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ConfigError("cannot create %s: %s; give a path in a directory this user can write, of a file "
                          "that does not exist yet" % (path, exc.strerror)) from None
    try:
        args = ["create", "-q", "-f", create["format"]]
        if create.get("backing"):
            args += ["-b", create["backing"], "-F", create["backing_format"]]
        args.append("/proc/self/fd/%d" % fd)
        if create.get("size") is not None:
            args.append(str(create["size"]))
        try:
            done = subprocess.run(["qemu-img"] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  universal_newlines=True, check=False, timeout=120, pass_fds=(fd,))
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise QemuError("creating %s failed: %s" % (path, exc)) from None
        if done.returncode != 0:
            os.unlink(path)
            raise QemuError("creating %s failed: qemu-img: %s" % (path, done.stderr.strip()))
        return _identity(os.fstat(fd))
    finally:
        os.close(fd)


def _identity(st) -> str:
    return "%d:%d" % (st.st_dev, st.st_ino)


def remove_created(path: str, identity: str) -> bool:
    """Delete ``path`` only if it still is the file a run created (same device and inode)."""
    try:
        if _identity(os.lstat(path)) != identity:
            return False
        os.unlink(path)
    except OSError:
        return False
    return True


class GraphRunner:
    """Runs graph operations for one task; ``save`` writes the runtime file."""

    def __init__(self, qmp, rt: runtime.Runtime, save, job_timeout: float, delete_unused: bool):
        self.qmp = qmp
        self.rt = rt
        self.save = save
        self.delete_unused = delete_unused
        self.jobs = jobs.JobRunner(qmp, job_timeout)
        self.warnings = []
        self.job = None  # the last job's state or outcome, for the result

    # -- one operation ------------------------------------------------------------------------
    def run(self, op: graph.GraphOp, wait: bool = True) -> None:
        entry = op.pending()
        self.rt.journal.append(entry)
        self.save(self.rt)
        self._prepare(entry, op.before_change)
        if op.action == graph.SNAPSHOT:
            self._commit_point(entry)
            try:
                self._send(op.change)
            except QemuError as exc:
                if exc.error_class:  # QEMU refused it: the overlay is not in place
                    self._undo(entry, _dropped(entry))
                raise  # else no answer: the next run finds out (settle)
            self._done(entry, op.record, [])
            return
        try:
            if not wait:
                self._send(op.change)
                self.job = {"id": op.job_id, "status": "running"}
                self.warnings.append("%s: job %s runs on; a later qemu_blockdev run on this disk reports or finishes "
                                     "it" % (op.label, op.job_id))
                self.save(self.rt)
                return
            outcome = self.jobs.run(op.change, at_ready=op.at_ready,
                                    before_finalize=lambda _state: self._commit_point(entry))
        except jobs.JobTimeout as exc:
            self.job = _state_report(exc.state)
            self.warnings.append("%s: job %s made no progress for job_timeout; it is left running and a later run "
                                 "reports or finishes it" % (op.label, op.job_id))
            self.save(self.rt)
            return
        except QemuError:
            if entry.phase == runtime.PHASE_FINALIZING or self._job_exists(op.job_id):
                # Past the commit point, or the job runs on: a later run settles it (settle).
                self.save(self.rt)
                raise
            self._undo(entry, _dropped(entry))
            raise
        self._outcome(entry, outcome)

    def _prepare(self, entry, steps) -> None:
        """The steps before the graph change; a failing one takes back what the others made."""
        done = []
        try:
            for step in steps:
                if step.command["execute"] == engine.CREATE_IMAGE:
                    self._create_file(entry, step.command["arguments"])
                else:
                    self._send(step.command)
                done.append(step)
        except (ConfigError, QemuError):
            self._undo(entry, engine.created_last_first(done, engine.NODES))
            raise

    def _create_file(self, entry, create) -> None:
        try:
            entry.creates["file_ids"] = [create_image(create)]
        except (ConfigError, QemuError):
            entry.creates.pop("files")  # nothing was created: nothing to warn about
            raise
        self.save(self.rt)  # a later run may now delete that file, and only that one

    def _job_exists(self, job_id: str) -> bool:
        try:
            return any(s.id == job_id for s in self.jobs.query())
        except QemuError:
            return False  # QEMU is gone: so is the job

    # -- settling what an earlier run left ----------------------------------------------------
    def settle(self, live_nodes, wait_for=()) -> None:
        """Each graph entry of the journal: finished, undone, or (a job still running on a disk
        not in ``wait_for``, the device ids this run waits for) kept and reported."""
        for entry in [e for e in self.rt.journal if graph.settled_by_runner(e)]:
            if entry.action == graph.SNAPSHOT:
                self._settle_snapshot(entry, live_nodes)
                continue
            if entry.action in standalone.NODE_ACTIONS:
                self._settle_node(entry, live_nodes)
                continue
            if entry.action in backup.ACTIONS:
                self._settle_history(entry)
                continue
            job_id = (entry.creates.get("jobs") or [None])[0]
            state = next((s for s in self.jobs.query() if s.id == job_id), None)
            if state is None:
                # Dismissed (past the commit point) or never started (before it).
                if entry.phase == runtime.PHASE_FINALIZING:
                    self._done(entry, entry.record, list(entry.removes.get("nodes") or []))
                else:
                    self._undo(entry, _present(_dropped(entry), live_nodes))
                continue
            if state.status == "concluded":
                self._outcome(entry, self.jobs.dismiss_concluded(job_id))
            elif entry.id in wait_for or state.status in ("pending", "waiting"):
                at_ready = "complete" if entry.record != entry.old else "keep"  # pivot: false keeps the record
                try:
                    outcome = self.jobs.resume(job_id, at_ready=at_ready,
                                               before_finalize=lambda _state, e=entry: self._commit_point(e))
                except jobs.JobTimeout as exc:
                    self.job = _state_report(exc.state)
                    continue
                self._outcome(entry, outcome)
            else:
                self.job = _state_report(state)
                self.warnings.append("disks[%s]: block job %s is %s (%d/%d); qemu_blockdev on that disk waits for "
                                     "it or cancels it" % ((entry.old or {}).get("name"), job_id, state.status,
                                                           state.current, state.total))

    def cancel(self, entry) -> None:
        job_id = (entry.creates.get("jobs") or [None])[0]
        state = next((s for s in self.jobs.query() if s.id == job_id), None)
        if state is None:
            return self.settle(set())
        keep = entry.action == graph.MIRROR and state.status == "ready"
        self._outcome(entry, self.jobs.cancel(job_id, keep_copy=keep), asked_to_cancel=True)
        return None

    def _settle_snapshot(self, entry, live_nodes) -> None:
        new_top, old_top = (blockdev.top_format_node((r or {}).get("nodes")) for r in (entry.record, entry.old))
        if entry.phase != runtime.PHASE_FINALIZING or new_top not in live_nodes:
            self._undo(entry, _present(_dropped(entry), live_nodes))
            return
        try:
            self._send({"execute": "blockdev-snapshot", "arguments": {"node": old_top, "overlay": new_top}})
        except QemuError as exc:
            if not any(text in exc.desc for text in _SNAPSHOT_DONE):
                self._undo(entry, _present(_dropped(entry), live_nodes))
                raise
        self._done(entry, entry.record, [])

    # -- outcomes -----------------------------------------------------------------------------
    def _commit_point(self, entry) -> None:
        entry.phase = runtime.PHASE_FINALIZING
        self.save(self.rt)

    def _outcome(self, entry, outcome, asked_to_cancel: bool = False) -> None:
        self.job = {"id": outcome.id, "type": outcome.type, "result": outcome.result, "error": outcome.error,
                    "current": outcome.current, "total": outcome.total}
        label = "disks[%s]" % (entry.old or {}).get("name")
        if outcome.result == "completed":
            self._done(entry, entry.record, list(entry.removes.get("nodes") or []))
        elif outcome.result == "kept":
            self._mark_copies(entry)
            # A kept copy: the target's nodes are unused now (for pivot: false they are ``removes``).
            self._done(entry, entry.old, _dropped(entry) if entry.record != entry.old else
                       list(entry.removes.get("nodes") or []))
        else:
            self._undo(entry, _dropped(entry))
            if asked_to_cancel:
                return
            raise QemuError("%s: job %s %s; the disk stays on its chain: %s" % (
                label, outcome.id, "was cancelled" if outcome.result == "cancelled" else "failed",
                outcome.error or outcome.result), desc=outcome.error or "")

    def _done(self, entry, record, unused: list) -> None:
        """The disk keeps ``record``; ``unused`` nodes are deleted now when asked, else kept
        (QEMU holds their images open and locked) and recorded for a later run."""
        self._read_only_again(entry, record)
        record = dict(record)
        left = list(record.get("unused_nodes") or []) + [n for n in unused if n not in (record.get("unused_nodes") or [])]
        if self.delete_unused:
            left = self._delete(left)
        record["unused_nodes"] = left
        if not left:
            record.pop("unused_nodes")
        self.rt.layout.put(record)
        self.rt.journal.remove(entry)
        self.save(self.rt)

    def release_unused(self, record: dict) -> bool:
        """Delete the nodes a disk no longer uses (delete_unused on a run with no operation)."""
        names = list(record.get("unused_nodes") or [])
        if not names:
            return False
        left = self._delete(names)
        record = dict(record, unused_nodes=left)
        if not left:
            record.pop("unused_nodes")
        self.rt.layout.put(record)
        self.save(self.rt)
        return True

    def _delete(self, names: list) -> list:
        left = []
        for name in names:
            try:
                self._send({"execute": "blockdev-del", "arguments": {"node-name": name}})
            except QemuError as exc:
                if not is_gone(exc):
                    self.warnings.append("node %s is kept: %s" % (name, exc))
                    left.append(name)
        return left

    def _undo(self, entry, names: list) -> None:
        """Take back what an operation added: its nodes, and the image file it created."""
        self._read_only_again(entry, entry.old)
        self._delete(names)
        for path, identity in zip(entry.creates.get("files") or [], entry.creates.get("file_ids") or []):
            remove_created(path, identity)
        if entry.creates.get("files") and not entry.creates.get("file_ids"):
            self.warnings.append("%s may have been created by a run killed just then and is kept; remove it before "
                                 "using that path again" % entry.creates["files"][0])
        if entry in self.rt.journal:
            self.rt.journal.remove(entry)
        self.save(self.rt)

    # -- a disk's history: checkpoints and backups (backup.py) ----------------------------------
    def run_history(self, ops) -> dict:
        """``ops`` (backup.DiskOp, one per disk) at one point in time: their target files and
        nodes, then one transaction of all their actions, then the jobs driven to their end.
        The disks succeed or fail together: when one job fails the others are cancelled, and
        every one is taken back, a completed copy too. Returns each job's outcome by device id."""
        entries = [op.pending() for op in ops]
        self.rt.journal += entries
        self.save(self.rt)
        try:
            for op, entry in zip(ops, entries):
                self._prepare(entry, op.prepare)
        except (ConfigError, QemuError):
            self._undo_history(entries)
            raise
        actions = [step for op in ops for step in op.actions]
        try:
            if actions:
                self._send(engine.transaction(actions).command)
        except QemuError as exc:
            if exc.error_class:  # QEMU refused it: none of its actions happened
                self._undo_history(entries)
            raise  # else no answer: the next run finds out (settle)
        outcomes = {}
        try:
            for op, entry in zip(ops, entries):
                if not op.job_id:
                    continue
                if any(o.result != "completed" for o in outcomes.values()):
                    outcomes[op.dev_id] = self.jobs.cancel(op.job_id, keep_copy=False)
                else:
                    outcomes[op.dev_id] = self.jobs.resume(
                        op.job_id, before_finalize=lambda _state, e=entry: self._commit_point(e))
        except jobs.JobTimeout as exc:
            self.job = _state_report(exc.state)
            self.warnings.append("backup job %s made no progress for job_timeout; it is left running and a later run "
                                 "finishes it" % exc.state.id)
            return outcomes
        failed = [(entry.id, outcomes[entry.id]) for entry in entries if entry.id in outcomes
                  and outcomes[entry.id].result != "completed"]
        if not failed:
            for entry in entries:
                self._history_done(entry)
            return outcomes
        self._undo_history(entries)
        dev_id, outcome = next(((d, o) for d, o in failed if o.result == "failed"), failed[0])
        name = next(e.old.get("name") for e in entries if e.id == dev_id)
        raise QemuError("disks[%s]: backup job %s %s: %s; every disk of the backup, its checkpoints and the target "
                        "paths are as they were" % (name, outcome.id, outcome.result, outcome.error or outcome.result),
                        desc=outcome.error or "")

    def _history_outcome(self, entry, outcome):
        """The entry settled by its job's outcome; the error to raise when it did not complete."""
        if outcome is None or outcome.result == "completed":
            self._history_done(entry)
            return None
        self._undo_history([entry])
        return QemuError("disks[%s]: backup job %s %s; the disk, its checkpoints and the target path are as they "
                         "were: %s" % ((entry.old or {}).get("name"), outcome.id, outcome.result,
                                       outcome.error or outcome.result), desc=outcome.error or "")

    def _history_done(self, entry) -> None:
        self._send_tolerant(backup.finish_steps(entry))
        self.rt.layout.put(entry.record)
        self.rt.journal.remove(entry)
        self.save(self.rt)

    def _undo_history(self, entries) -> None:
        live = self._bitmaps()
        for entry in entries:
            if entry not in self.rt.journal:
                continue  # _prepare undid it already
            self._send_tolerant(backup.undo_steps(entry, live))
            self._undo(entry, _dropped(entry))  # the target node, and the file by its identity

    def _settle_history(self, entry) -> None:
        """A checkpoint or backup a killed run left: its transaction happened or not (all or
        nothing); a backup's job is driven to its end, or was dismissed past the commit point."""
        job_id = (entry.creates.get(engine.JOBS) or [None])[0]
        if job_id is None:
            if backup.settled_without_job(entry, self._bitmaps()):
                self._history_done(entry)
            else:
                self._undo_history([entry])
            return
        state = next((s for s in self.jobs.query() if s.id == job_id), None)
        if state is None:
            if entry.phase == runtime.PHASE_FINALIZING:
                self._history_done(entry)  # finalized, then dismissed
            else:
                self._undo_history([entry])  # never started
            return
        try:
            outcome = self.jobs.resume(job_id, before_finalize=lambda _state: self._commit_point(entry))
        except jobs.JobTimeout as exc:
            self.job = _state_report(exc.state)
            return
        self.job = {"id": outcome.id, "type": outcome.type, "result": outcome.result, "error": outcome.error,
                    "current": outcome.current, "total": outcome.total}
        failed = self._history_outcome(entry, outcome)
        if failed:
            self.warnings.append(str(failed))

    def _bitmaps(self) -> dict:
        return backup.live_bitmaps(self.qmp.execute("query-named-block-nodes", {"flat": True}))

    def _send_tolerant(self, steps) -> None:
        """Clean-up commands: what is gone already is fine, anything else is a warning."""
        for step in steps:
            try:
                self._send(step.command)
            except QemuError as exc:
                if not is_gone(exc) and "not found" not in (exc.desc or str(exc)).lower():
                    self.warnings.append("%s: %s" % (step.command["execute"], exc))

    # -- standalone nodes (standalone.py) -------------------------------------------------------
    def add_node(self, record: dict, create=None) -> None:
        """Open a standalone node (its image created first when asked), bottom-up."""
        entry = standalone.pending_add(record, create)
        self.rt.journal.append(entry)
        self.save(self.rt)
        self._prepare(entry, standalone.add_steps(record, create))
        self._node_done(entry, record)

    def delete_node(self, record: dict) -> None:
        """Close a standalone node top-down; QEMU's refusal (a job or a node on it) is the
        user's to act on, and leaves the node as it was."""
        job = standalone.job_using(self.rt.journal, record["name"])
        if job:
            raise ConfigError("node: %s is the target of block job %s; wait for it or cancel it (qemu_blockdev "
                              "cancel: true on its disk) first" % (record["name"], job))
        entry = standalone.pending_del(record)
        self.rt.journal.append(entry)
        self.save(self.rt)
        steps = standalone.del_steps(record)
        try:
            for step in steps:
                if not step.cleanup:
                    self._send(step.command)
        except QemuError as exc:
            if not is_gone(exc):
                self.rt.journal.remove(entry)
                self.save(self.rt)
                raise QemuError("node: %s cannot be closed, QEMU still uses it: %s; end what uses it (a block job, "
                                "an export, a node on top of it) first" % (record["name"], exc.desc or exc),
                                exc.error_class, exc.desc) from None
        self._delete([name for step in steps if step.cleanup for _kind, name in step.removes])
        self._node_done(entry, None)

    def _settle_node(self, entry, live_nodes) -> None:
        if entry.action == standalone.NODE_ADD:
            if all(n["node-name"] in live_nodes for n in entry.record["nodes"]):
                self._node_done(entry, entry.record)  # a killed run had opened it all
            else:
                self._undo(entry, _present(_dropped(entry), live_nodes))
            return
        left = self._delete(_present(entry.removes["nodes"], live_nodes))
        self._node_done(entry, entry.old if left else None)

    def _node_done(self, entry, record) -> None:
        """The layout holds ``record`` under the entry's name (None: no such node any more)."""
        nodes = self.rt.layout.named_nodes
        nodes[:] = [n for n in nodes if n["name"] != entry.id] + ([record] if record else [])
        self.rt.journal.remove(entry)
        self.save(self.rt)

    def _mark_copies(self, entry) -> None:
        """A standalone node a kept copy went to holds that disk's copy now (a re-run is a no-op)."""
        for name in entry.creates.get("targets") or []:
            target = self.rt.layout.named_node(name)
            if target is not None:
                target["copy_of"] = entry.id

    def _read_only_again(self, entry, record) -> None:
        command = graph.read_only_again(record) if entry.action == graph.COMMIT and record else None
        if command:
            try:
                self._send(command)
            except QemuError as exc:  # the images stay writable until the next start: say so
                self.warnings.append("%s: the images below the top stay writable until the next start: %s"
                                     % ((entry.old or {}).get("name"), exc))

    def _send(self, command: dict):
        return self.qmp.execute(command["execute"], command["arguments"])


def _dropped(entry) -> list:
    """What an operation added that the disk does not keep when it does not happen, top-down."""
    return list(reversed(entry.creates.get(engine.NODES) or []))


def _present(names, live_nodes) -> list:
    return [n for n in names if n in live_nodes]


def _state_report(state) -> dict:
    return {"id": state.id, "type": state.type, "status": state.status, "current": state.current,
            "total": state.total, "error": state.error}
