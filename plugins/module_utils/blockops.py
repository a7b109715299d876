# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu_blockdev's run: find the disk, settle what an earlier run left, plan one operation on
its chain (graph.py) and carry it out (graphops.py)."""

from __future__ import annotations

from ansible_collections.blocklayer.qemu.plugins.module_utils import graph, host, runtime
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError


def _disk_record(rt, name: str) -> dict:
    record = next((d for d in rt.layout.devices if d["kind"] == "disk" and d["name"] == name), None)
    if record is None:
        names = sorted(d["name"] for d in rt.layout.devices if d["kind"] == "disk")
        raise ConfigError("disk: instance %s has no disk %r; its disks are: %s" % (
            rt.layout.name, name, ", ".join(names) or "none"))
    if record.get("origin") == runtime.ORIGIN_DRIVE:
        raise ConfigError("disk: disks[%s] was started with -drive by an older tool, so its nodes are QEMU's; "
                          "restart the instance with this collection first" % name)
    if record.get("state") == runtime.STATE_UNPLUG_PENDING:
        raise ConfigError("disk: disks[%s] is being unplugged by the guest; its chain cannot change" % name)
    return record


def plan_operation(params: dict, record: dict):
    """The GraphOp the task's parameters ask for on ``record``, or None when it is done already."""
    if params.get("snapshot"):
        opts = params["snapshot"]
        return graph.plan_snapshot(record, opts["path"], opts["create"], host.inspect_path(opts["path"]))
    if params.get("commit") is not None:
        return graph.plan_commit(record, params["commit"].get("top"), params["commit"].get("base"))
    if params.get("stream") is not None:
        return graph.plan_stream(record, params["stream"].get("base"))
    if params.get("mirror"):
        from ansible_collections.blocklayer.qemu.plugins.module_utils import graphops  # qemu-img
        opts = params["mirror"]
        chain = graph.chain_of(record)
        if chain and [layer.path for layer in chain] == [opts["path"]]:
            return None
        facts = host.inspect_path(opts["path"])
        size = graphops.image_size(chain[-1].path)
        if not opts["create"] and facts.kind in ("file", "block"):
            target = graphops.image_size(opts["path"])
            if target != size:
                raise ConfigError("mirror.path: %s has %d bytes and disks[%s] %d; QEMU would accept it and then fail "
                                  "the job: give an image of the disk's size, or create: true"
                                  % (opts["path"], target, record["name"], size))
        return graph.plan_mirror(record, opts["path"], opts["format"], opts["create"], opts["pivot"], facts, size)
    return None


def converge(task) -> dict:
    params = task.module.params
    instance = task.open_running_instance()
    instance._require_trusted()
    record = _disk_record(instance.rt, params["disk"])
    before = chain_report(record)
    if task.module.check_mode:
        if params["cancel"]:
            running = any(e.action in graph.GRAPH_ACTIONS and e.id == record["id"] for e in instance.rt.journal)
            return _result(instance, record, before, running, None)
        op = plan_operation(params, record)
        if op:
            instance.actions.append(op.report())
            instance.qmp_commands = list(op.prepare) + ([op.change] if op.change else [])
        return _result(instance, record, before, op is not None, None)
    job = {}

    def work(qmp, rt, live):
        # This disk's job from an earlier run is waited for first (or cancelled).
        runner = instance.settle_graph(qmp, rt, live, job_timeout=params["job_timeout"],
                                       delete_unused=params["delete_unused"],
                                       wait_for=() if params["cancel"] else {record["id"]})
        entry = next((e for e in rt.journal if e.action in graph.GRAPH_ACTIONS and e.id == record["id"]), None)
        if params["cancel"]:
            if entry:
                instance.actions.append({"action": "cancel", "kind": "disk", "name": params["disk"], "id": entry.id})
                instance.changed = True
                runner.cancel(entry)
            return runner
        if entry:  # still running after job_timeout without progress
            return runner
        current = _disk_record(rt, params["disk"])
        op = plan_operation(params, current)
        if op:
            instance.actions.append(op.report())
            instance.changed = True
            runner.run(op, wait=params["wait"])
        elif params["delete_unused"] and runner.release_unused(current):
            instance.actions.append({"action": "delete-unused", "kind": "disk", "name": params["disk"],
                                     "id": current["id"]})
            instance.changed = True
        return runner

    runner = None
    try:
        runner = instance.operate(work)
    finally:
        if runner is not None:
            instance.warnings += runner.warnings
            job = runner.job
    return _result(instance, _disk_record(instance.rt, params["disk"]), before, instance.changed, job)


def chain_report(record: dict) -> list:
    names = {layer.path: node for layer, node in zip(graph.chain_of(record), _format_nodes(record))}
    return [{"path": layer.path, "format": layer.fmt, "node": names.get(layer.path)} for layer in graph.chain_of(record)]


def _format_nodes(record: dict) -> list:
    protocols = {n["node-name"] for n in record.get("nodes") or [] if "filename" in n or "url" in n}
    return [n["node-name"] for n in record.get("nodes") or [] if n.get("file") in protocols and n["driver"] != "throttle"]


def _result(instance, record: dict, before: list, changed: bool, job) -> dict:
    label = "disks[%s]" % record["name"]
    after = chain_report(record)
    result = {
        "changed": changed,
        "actions": instance.actions,
        "qmp_commands": instance.qmp_commands,
        "chain": after,
        "unused_nodes": list(record.get("unused_nodes") or []),
        "warnings": instance.warnings,
        "diff": {"before": {label: ["%s (%s)" % (c["path"], c["format"]) for c in before]},
                 "after": {label: ["%s (%s)" % (c["path"], c["format"]) for c in after]}},
    }
    if job:
        result["job"] = job
    return result
