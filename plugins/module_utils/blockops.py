# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu_blockdev's run: find the disk, settle what an earlier run left, plan one operation on
its chain (graph.py) and carry it out (graphops.py); or open or close a standalone node
(standalone.py)."""

from __future__ import annotations

from ansible_collections.blocklayer.qemu.plugins.module_utils import (
    blockdev, engine, graph, host, layout, runtime, spec, standalone)
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError


def disk_record(rt, name: str) -> dict:
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


def plan_operation(params: dict, record: dict, rt=None):
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
        if opts.get("node"):
            return _plan_copy_to_node(opts, record, rt)
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
        pivot = True if opts["pivot"] is None else opts["pivot"]
        return graph.plan_mirror(record, opts["path"], opts["format"], opts["create"], pivot, facts, size)
    return None


def _plan_copy_to_node(opts: dict, record: dict, rt):
    from ansible_collections.blocklayer.qemu.plugins.module_utils import graphops  # qemu-img
    if opts["pivot"]:
        raise ConfigError("mirror.pivot: a copy to node %s keeps the disk where it is; a disk moves only onto an "
                          "image of its own: give mirror.path instead of mirror.node to move it" % opts["node"])
    target = rt.layout.named_node(opts["node"])
    if target is None:
        names = ", ".join(sorted(n["name"] for n in rt.layout.named_nodes)) or "none"
        raise ConfigError("mirror.node: instance %s has no node %r (its nodes: %s); open it first with "
                          "qemu_blockdev node: %s, path: ..." % (rt.layout.name, opts["node"], names, opts["node"]))
    disk_size = graphops.image_size(graph.chain_of(record)[-1].path)
    return graph.plan_copy_to_node(record, target, disk_size, graphops.image_size(target["path"]))


def converge(task) -> dict:
    params = task.module.params
    if params.get("node"):
        return converge_node(task)
    instance = task.open_running_instance()
    instance.require_trusted()
    record = disk_record(instance.rt, params["disk"])
    before = chain_report(record)
    if task.module.check_mode:
        if params["cancel"]:
            running = graph.disk_operation(instance.rt.journal, record["id"]) is not None
            return _result(instance, record, before, running, None)
        op = plan_operation(params, record, instance.rt)
        if op:
            instance.actions.append(op.report())
            instance.qmp_commands = op.commands()
        # The diff shows the chain the operation would leave.
        return _result(instance, op.record if op else record, before, op is not None, None)
    runners = []

    def work(_qmp, rt, runner):
        runners.append(runner)
        entry = graph.disk_operation(rt.journal, record["id"])
        if params["cancel"]:
            if entry:
                instance.actions.append({"action": "cancel", "kind": "disk", "name": params["disk"], "id": entry.id})
                instance.changed = True
                runner.cancel(entry)
            return
        if entry:  # still running after job_timeout without progress
            return
        current = disk_record(rt, params["disk"])
        op = plan_operation(params, current, rt)
        if op:
            instance.actions.append(op.report())
            instance.changed = True
            runner.run(op, wait=params["wait"])
        elif params["delete_unused"] and runner.release_unused(current):
            instance.actions.append({"action": "delete-unused", "kind": "disk", "name": params["disk"],
                                     "id": current["id"]})
            instance.changed = True

    # This disk's job from an earlier run is waited for first (or cancelled).
    instance.operate(work, job_timeout=params["job_timeout"], delete_unused=params["delete_unused"],
                     wait_for=() if params["cancel"] else {record["id"]})
    return _result(instance, disk_record(instance.rt, params["disk"]), before, instance.changed, runners[0].job)


def chain_report(record: dict) -> list:
    chain = graph.chain_of(record)
    names = {layer.path: node for layer, node in zip(chain, blockdev.format_nodes(record.get("nodes")))}
    return [{"path": layer.path, "format": layer.fmt, "node": names.get(layer.path)} for layer in chain]


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


# -- standalone nodes ------------------------------------------------------------------------------
def _node_plan(params: dict, rt):
    """(record to open, image to create) for state present, or (None, None) when it is open."""
    name = params["node"]
    path, fmt = params.get("path"), params["format"]
    if not path:
        raise ConfigError("path: node %s needs the image to open; give path (and size to create it)" % name)
    facts = host.inspect_path(path)
    size = spec.parse_size(params.get("size"), "size")
    what = "node[%s]" % name
    create = None
    if facts.kind == "missing" and size:
        create = {"path": path, "format": fmt, "size": size}
        kind = "file"
    else:
        if facts.kind == "missing":
            raise ConfigError("path: %s does not exist; give size to create it (a new %s image), or create it "
                              "first" % (path, fmt))
        kind = layout.check_path(what, path, facts, "disk", fmt)
    record = standalone.plan_present(rt.layout, name, path, fmt, params["read_only"], kind)
    if record and size and not create:
        from ansible_collections.blocklayer.qemu.plugins.module_utils import graphops  # qemu-img
        have = graphops.image_size(path)
        if have != size:
            raise ConfigError("size: %s has %d bytes, not %d; the collection never changes an existing image: "
                              "leave size out to open it as it is, or give a new path" % (path, have, size))
    return record, create


def converge_node(task) -> dict:
    params = task.module.params
    name = standalone.check_name(params["node"])
    instance = task.open_running_instance()
    instance.require_trusted()
    before = _node_report(instance.rt.layout.named_node(name))

    def plan(rt):
        current = rt.layout.named_node(name)
        if params.get("state") == "absent":
            return ("delete", current, None) if current else None
        record, create = _node_plan(params, rt)
        return ("add", record, create) if record else None

    def report(step) -> None:
        verb, record, create = step
        reason = ("close %s" if verb == "delete" else "open %s" + (" (created)" if create else "")) % record["path"]
        instance.actions.append({"action": "node-" + verb, "kind": "node", "name": name, "id": name,
                                 "reason": reason})

    if task.module.check_mode:
        step = plan(instance.rt)
        if step:
            report(step)
            steps = standalone.del_steps(step[1]) if step[0] == "delete" else standalone.add_steps(step[1], None)
            instance.qmp_commands = engine.commands(steps)
        after = None if step and step[0] == "delete" else (step[1] if step else instance.rt.layout.named_node(name))
        return _node_result(instance, name, before, _node_report(after), step is not None)

    def work(_qmp, rt, runner):
        step = plan(rt)
        if step:
            report(step)
            instance.changed = True
            if step[0] == "delete":
                runner.delete_node(step[1])
            else:
                runner.add_node(step[1], step[2])

    instance.operate(work, job_timeout=params["job_timeout"])
    return _node_result(instance, name, before, _node_report(instance.rt.layout.named_node(name)), instance.changed)


def _node_report(record):
    if record is None:
        return None
    out = {"name": record["name"], "path": record["path"], "format": record["format"],
           "read_only": record["read_only"], "node": standalone.format_node(record)}
    if record.get("copy_of"):
        out["copy_of"] = record["copy_of"]
    return out


def _node_result(instance, name: str, before, after, changed: bool) -> dict:
    def line(report):
        return "%s (%s%s)" % (report["path"], report["format"], ", read-only" if report["read_only"] else "") \
            if report else "absent"
    return {
        "changed": changed,
        "actions": instance.actions,
        "qmp_commands": instance.qmp_commands,
        "node": after,
        "warnings": instance.warnings,
        "diff": {"before": {"node[%s]" % name: line(before)}, "after": {"node[%s]" % name: line(after)}},
    }
