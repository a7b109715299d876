# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu_checkpoint's and qemu_backup's runs: pick the disks, settle what an earlier run left,
plan each disk's operation (backup.py) and carry them out at one point in time
(graphops.GraphRunner.run_history); docs/backup.md."""

from __future__ import annotations

import os
import time

from ansible_collections.blocklayer.qemu.plugins.module_utils import args, backup, blockdev, engine, host
from ansible_collections.blocklayer.qemu.plugins.module_utils.blockops import disk_record
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

_NAMED = ("query-named-block-nodes", {"flat": True})


def _records(rt, names) -> list:
    """The disks the task names (default: every disk with an image that is not read-only)."""
    if names:
        records = [disk_record(rt, name) for name in names]
        for record in records:
            if (record.get("spec") or {}).get("mode") == "ro":
                raise ConfigError("disks: disks[%s] is read-only (mode: ro); QEMU keeps no dirty bitmap of a "
                                  "read-only image: leave it out" % record["name"])
        return records
    records = [r for r in rt.layout.devices if r["kind"] == "disk" and r.get("nodes")
               and (r.get("spec") or {}).get("mode") != "ro"]
    if not records:
        raise ConfigError("disks: instance %s has no writable disk with an image" % rt.layout.name)
    return [disk_record(rt, r["name"]) for r in records]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _sizes(named: list) -> dict:
    return {n.get("node-name"): int((n.get("image") or {}).get("virtual-size", 0)) for n in named or []}


def _run(task, plan, report) -> dict:
    """Plan against what QEMU has (check mode: only read it), then apply at one point in time."""
    params = task.module.params
    instance = task.open_running_instance()
    instance.require_trusted()
    state = {"ops": [], "outcomes": {}, "listing": []}

    def work(qmp, rt, runner):
        named = qmp.execute(*_NAMED)
        ops = [op for op in plan(rt, named) if op]
        state["ops"] = ops
        for op in ops:
            instance.actions.append(op.report())
        if ops and not task.module.check_mode:
            state["outcomes"] = runner.run_history(ops)  # a failure leaves everything as it was
            instance.changed = True
            named = qmp.execute(*_NAMED)
        # In check mode the listing is the one the plan would leave.
        state["listing"] = _listing(rt, named, {op.dev_id: op.record for op in ops if task.module.check_mode})

    if task.module.check_mode:
        with instance.session() as qmp:
            rt = instance.rt
            work(qmp, rt, None)
        instance.qmp_commands = _commands(state["ops"])
    else:
        instance.operate(work, job_timeout=params.get("job_timeout", args.JOB_TIMEOUT["default"]))
    return report(instance, state)


def _commands(ops) -> list:
    """What a run would send (check mode): the target nodes, the one transaction."""
    commands = [s.command for op in ops for s in op.prepare if s.command["execute"] != engine.CREATE_IMAGE]
    actions = [s for op in ops for s in op.actions]
    if actions:
        commands.append(engine.transaction(actions).command)
    return commands + [s.command for op in ops for s in op.cleanup]


def _listing(rt, named, planned=None) -> list:
    live = backup.live_bitmaps(named)
    records = [(planned or {}).get(r["id"], r) for r in rt.layout.devices if r["kind"] == "disk"]
    return [cp for r in records for cp in backup.listing(r, live)]


def _diff(before: list, after: list) -> dict:
    def lines(listing):
        out = {}
        for cp in listing:
            out.setdefault("disks[%s]" % cp["disk"], []).append(cp["name"])
        return out
    return {"before": lines(before), "after": lines(after)}


# -- qemu_checkpoint ------------------------------------------------------------------------------
def converge_checkpoint(task) -> dict:
    params = task.module.params
    name = backup.check_name(params["checkpoint"], "checkpoint") if params.get("checkpoint") else None
    before = []

    def plan(rt, named):
        live = backup.live_bitmaps(named)
        before[:] = _listing(rt, named)
        if not name:
            return []
        records = _records(rt, params["disks"])
        if params["state"] == "absent":
            return [backup.plan_checkpoint_delete(r, name, live) for r in records]
        return [backup.plan_checkpoint(r, name, params["persistent"], live, _now()) for r in records]

    def report(instance, state):
        return {"changed": instance.changed or (task.module.check_mode and bool(state["ops"])),
                "actions": instance.actions, "qmp_commands": instance.qmp_commands,
                "checkpoints": state["listing"], "warnings": instance.warnings,
                "diff": _diff(before, state["listing"])}
    return _run(task, plan, report)


# -- qemu_backup ----------------------------------------------------------------------------------
def _target(params: dict, rt, record: dict) -> str:
    targets = params.get("targets") or {}
    if record["name"] in targets:
        path = targets[record["name"]]
    elif params.get("target_dir"):
        name = "%s-%s-%s.qcow2" % (rt.layout.name, record["name"], params["checkpoint"])
        path = os.path.join(params["target_dir"], name)
    else:
        raise ConfigError("targets: no backup file for disks[%s]; give targets: {%s: /path/new.qcow2} or "
                          "target_dir" % (record["name"], record["name"]))
    if not os.path.isabs(path):
        raise ConfigError("targets: %r (disks[%s]) is a relative path; give an absolute one" % (path, record["name"]))
    return path


def converge_backup(task) -> dict:
    params = task.module.params
    name = backup.check_name(params["checkpoint"], "checkpoint")
    before = []

    def plan(rt, named):
        live = backup.live_bitmaps(named)
        sizes = _sizes(named)
        before[:] = _listing(rt, named)
        records = _records(rt, params["disks"])
        unknown = sorted(set(params.get("targets") or {}) - {r["name"] for r in records})
        if unknown:
            raise ConfigError("targets: %s %s not among the disks this task backs up (%s)" % (
                ", ".join(unknown), "is" if len(unknown) == 1 else "are", ", ".join(r["name"] for r in records)))
        ops = []
        for record in records:
            target = _target(params, rt, record)
            node = blockdev.top_format_node(record.get("nodes"))
            ops.append(backup.plan_backup(record, params["mode"], target, host.inspect_path(target).kind, name,
                                          params.get("since"), params["persistent"], live, sizes.get(node, 0),
                                          _now()))
        return ops

    def report(instance, state):
        outcomes = state["outcomes"]
        backups = [backup.result(op, outcomes.get(op.dev_id)) for op in state["ops"]]
        return {"changed": instance.changed or (task.module.check_mode and bool(state["ops"])),
                "actions": instance.actions, "qmp_commands": instance.qmp_commands, "backups": backups,
                "checkpoints": state["listing"], "warnings": instance.warnings,
                "diff": _diff(before, state["listing"])}
    return _run(task, plan, report)
