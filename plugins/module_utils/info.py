# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an instance has now, per device, from its runtime file checked against QEMU (pure).

Used by qemu_instance_info: the runtime file says what each device should be, QEMU's own
answers (verify.QUERIES plus query-jobs) say what it is; every difference is reported as drift.
"""

from __future__ import annotations

from ansible_collections.blocklayer.qemu.plugins.module_utils import blockdev, engine, runtime, standalone, verify

_PLACEMENT_KEYS = ("bus", "addr", "channel", "scsi-id", "lun", "unit")
_MEDIA = ("disk", "cdrom", "floppy")
_GROUPS = {"disk": "disks", "cdrom": "cdroms", "nic": "nics"}


def running_jobs(rt) -> dict:
    """Job id -> (device id, action) of every block job a journal entry says is in flight."""
    return {job: (entry.id, entry.action) for entry in rt.journal for job in entry.creates.get(engine.JOBS) or []}


def job_report(job: dict) -> dict:
    """A query-jobs entry with qemu_blockdev's keys for its ``job`` (progress ``current`` of ``total``)."""
    return {"id": job.get("id"), "type": job.get("type"), "status": job.get("status"),
            "current": job.get("current-progress"), "total": job.get("total-progress"), "error": job.get("error")}


def limiting(limits) -> dict:
    """Limits with ``_`` for ``-``, only what limits (from a spec's or QEMU's ThrottleLimits dict:
    a 0 rate and a 1 s burst are no limit)."""
    items = [(k.replace("-", "_"), v) for k, v in (limits or {}).items()]
    return {k: v for k, v in items if v and not (k.endswith("_max_length") and v == 1)}


def throttle_groups(rt) -> list:
    """The ids of the throttle groups the disks' I/O counts against (to qom-get their limits)."""
    found = []
    for record in rt.layout.records():
        thr = blockdev.throttle_of(record.get("nodes"))
        if thr and thr["throttle-group"] not in found:
            found.append(thr["throttle-group"])
    return found


def _declared_limits(rt, record: dict) -> dict:
    declared = record.get("spec") or {}
    if declared.get("throttle_group"):
        group = next((g for g in rt.layout.throttle_groups if g["name"] == declared["throttle_group"]), None)
        return limiting(group["limits"]) if group else {}
    return limiting(declared.get("limits"))


def _size(node, key):
    return ((node or {}).get("image") or {}).get(key)


def disk_chain(record: dict, named: dict) -> list:
    """The images of a disk, bottom-up as qemu_blockdev's ``chain`` (path, format, node), with
    the sizes QEMU has for each format node (query-named-block-nodes ``image``; null when QEMU
    was not asked or lacks the node). A filter (throttle, a job's) is not an image."""
    chain = []
    for layer, node in zip(blockdev.layers(record.get("nodes")), blockdev.format_nodes(record.get("nodes"))):
        have = named.get(node)
        path = have.get("file") if have else None
        chain.append({"path": path if path and not path.startswith("json:") else layer.path,
                      "format": have.get("drv") if have else layer.fmt, "node": node,
                      "virtual_size": _size(have, "virtual-size"), "actual_size": _size(have, "actual-size")})
    return chain


def checkpoints(record: dict, named: dict) -> list:
    """The named dirty bitmaps on the disk's nodes (query-named-block-nodes ``dirty-bitmaps``);
    a job's own bitmaps have no name and are not checkpoints."""
    found = []
    for node in blockdev.names(record.get("nodes")):
        for bitmap in (named.get(node) or {}).get("dirty-bitmaps") or []:
            if bitmap.get("name"):
                found.append({"name": bitmap["name"], "node": node, "recording": bitmap.get("recording"),
                              "persistent": bitmap.get("persistent"), "count": bitmap.get("count")})
    return found


def describe(rt: runtime.Runtime, live, jobs: list, group_limits=None) -> dict:
    """The instance as the user reads it: per device what QEMU has, plus drift.

    ``live`` (verify.Live), ``jobs`` (query-jobs) and ``group_limits`` (throttle group id ->
    qom-get of its ``limits``) are None when QEMU could not be asked (its QMP socket is busy):
    then devices and jobs are as the runtime file records them and drift is not checked.
    """
    in_flight = running_jobs(rt)
    if live is None:
        job_list = [{"id": job, "type": action, "status": None, "current": None, "total": None, "error": None}
                    for job, (_dev, action) in in_flight.items()]
    else:
        job_list = [job_report(j) for j in jobs]
    busy = {}
    for job in job_list:
        dev_id = (in_flight.get(job["id"]) or (None,))[0]
        job["disk"] = dev_id
        if dev_id:
            busy[dev_id] = job
    blocks = verify.block_by_id(live.block) if live else {}
    named = {n["node-name"]: n for n in live.named if n.get("node-name")} if live else {}
    types = live.types if live else {}
    group_limits = group_limits or {}
    devices, drift = [], []
    for record in rt.layout.records():
        info = record["hvinfo"]
        entry = {"id": record["id"], "kind": record["kind"], "name": record["name"], "driver": info["driver"],
                 "state": record.get("state", runtime.STATE_ATTACHED),
                 "in_qemu": record["id"] in types if live else None}
        entry.update({key: info[key] for key in _PLACEMENT_KEYS if key in info})
        if record["kind"] in _MEDIA:
            entry.update(_medium(rt, record, live, blocks.get(record["id"]), named, group_limits, drift))
            if record["id"] in busy:
                entry["job"] = {k: v for k, v in busy[record["id"]].items() if k != "disk"}
        if record.get("netdev"):
            entry["netdev"] = record["netdev"]["id"]
        devices.append(entry)
    nodes = [{"name": n["name"], "path": n["path"], "format": n["format"], "read_only": n["read_only"],
              "node": standalone.format_node(n), "copy_of": n.get("copy_of"),
              "in_qemu": all(c["node-name"] in live.nodes for c in n["nodes"]) if live else None}
             for n in rt.layout.named_nodes]
    if live:
        # A disk a block job runs on sits on the job's filter node (<id>_job): a job, not drift.
        drift = verify.problems([r for r in rt.layout.records() if r.get("state") != runtime.STATE_UNPLUG_PENDING],
                                live.block, live.pci, live.qom, busy=set(busy)) + drift
        drift += ["node %s (%s) is recorded but QEMU does not have it" % (n["name"], n["node"])
                  for n in nodes if not n["in_qemu"]]
    tree = block_graph(rt, blocks, busy)
    return {
        "devices": devices,
        "nodes": nodes,
        "unplug_pending": sorted(r["id"] for r in rt.layout.records()
                                 if r.get("state") == runtime.STATE_UNPLUG_PENDING),
        "jobs": job_list,
        "unfinished": [{"action": p.action, "id": p.id} for p in rt.journal],
        "drift": drift,
        "graph": tree,
        "graph_dot": dot(tree, rt.layout.name),
    }


def _medium(rt, record: dict, live, block, named: dict, group_limits: dict, drift: list) -> dict:
    """The image facts of a disk, CD-ROM or floppy: its top image (never a filter's ``json:``
    pseudo-name), chain, sizes, limits and checkpoints."""
    nodes = record.get("nodes") or []
    inserted = (block or {}).get("inserted")
    # What the device reads now: nothing when QEMU has no medium in it (the nodes may remain).
    chain = disk_chain(record, named) if inserted or not live else []
    if inserted and not nodes:
        chain = _image_chain(inserted)  # a -drive device (origin drive): QEMU's own, unrecorded nodes
    top = chain[-1] if chain else {}
    thr = blockdev.throttle_of(nodes)
    group = thr["throttle-group"] if thr else None
    declared = _declared_limits(rt, record)
    applied = None  # unknown while QEMU is busy
    if live and group and group not in group_limits:
        drift.append("%s (%s): its throttle group %s is not in QEMU" % (_label(record), record["id"], group))
    elif live:
        applied = limiting(group_limits[group]) if group else {}
    if applied is not None and applied != declared:
        drift.append("%s (%s): QEMU limits its I/O to %s, not the declared %s" % (
            _label(record), record["id"], readable_limits(applied), readable_limits(declared)))
    out = {"image": top.get("path"), "format": top.get("format"), "chain": chain,
           "virtual_size": top.get("virtual_size"),
           "actual_size": sum(c["actual_size"] for c in chain) if chain and all(
               c["actual_size"] is not None for c in chain) else None,
           "node": blockdev.top_node(nodes), "read_only": bool(nodes[-1].get("read-only")) if nodes else None,
           "cache": None, "limits": declared, "limits_in_qemu": applied, "throttle_group": group,
           "checkpoints": checkpoints(record, named)}
    if live:
        out.update(node=inserted.get("node-name") if inserted else None,
                   read_only=bool(inserted.get("ro")) if inserted else None,
                   cache=inserted.get("cache") if inserted else None)
    return out


def _image_chain(inserted: dict) -> list:
    """query-block's ``image`` and its ``backing-image``s, bottom-up; only the top's node is named."""
    found, image = [], inserted.get("image")
    while image:
        found.insert(0, {"path": image.get("filename"), "format": image.get("format"), "node": None,
                         "virtual_size": image.get("virtual-size"), "actual_size": image.get("actual-size")})
        image = image.get("backing-image")
    if found:
        found[-1]["node"] = inserted.get("node-name")
    return found


# -- the block graph ------------------------------------------------------------------------------
def _tree(name: str, by_name: dict, edge: str) -> dict:
    node = by_name.get(name) or {"node-name": name, "driver": None}
    out = {"node": name, "driver": node.get("driver"), "edge": edge, "children": []}
    if node.get("filename") or node.get("url"):
        out["path"] = node.get("filename") or node.get("url")
    if node.get("throttle-group"):
        out["throttle_group"] = node["throttle-group"]
    for child_edge in ("file", "backing"):
        if isinstance(node.get(child_edge), str):
            out["children"].append(_tree(node[child_edge], by_name, child_edge))
    return out


def block_graph(rt, blocks: dict, busy: dict) -> list:
    """The instance's block graph as trees, one per block device and standalone node, from the
    runtime file's nodes (each node's ``file`` and ``backing``): device -> its top node -> down
    to the protocol nodes. A running job's filter node (what query-block says the device uses
    instead of the recorded top) sits between the device and its chain."""
    roots = []
    for record in rt.layout.records():
        if record["kind"] not in _MEDIA:
            continue
        nodes = blockdev.flat(record.get("nodes"))
        by_name = {n["node-name"]: n for n in nodes}
        root = {"device": record["id"], "kind": record["kind"], "name": record["name"],
                "driver": record["hvinfo"]["driver"], "children": []}
        if nodes:
            top = _tree(blockdev.top_node(nodes), by_name, "drive")
            used = ((blocks.get(record["id"]) or {}).get("inserted") or {})
            if record["id"] in busy and used.get("node-name") and used["node-name"] not in by_name:
                top["edge"] = "backing"
                top = {"node": used["node-name"], "driver": used.get("drv"), "edge": "drive",
                       "job": busy[record["id"]]["id"], "children": [top]}
            root["children"].append(top)
        roots.append(root)
    for named in rt.layout.named_nodes:
        nodes = blockdev.flat(named["nodes"])
        root = {"device": None, "kind": "node", "name": named["name"], "driver": None,
                "children": [_tree(standalone.format_node(named), {n["node-name"]: n for n in nodes}, "node")]}
        roots.append(root)
    return roots


def _quote(text) -> str:
    """A DOT string: backslash and quote escaped, a line break as DOT's ``\\n``."""
    return '"%s"' % str(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def dot(roots: list, name: str) -> str:
    """Graphviz DOT text of block_graph's trees: one line per device and node, one per edge
    (``dot -Tsvg``); node ids are QEMU's node names and the device ids."""
    lines = ["digraph %s {" % _quote("block graph of %s" % name), "  rankdir=TB;", "  node [shape=box];"]

    def walk(parent: str, tree: dict) -> None:
        label = [tree["node"], tree["driver"] or ""]
        label += [tree[k] for k in ("path", "throttle_group", "job") if tree.get(k)]
        lines.append("  %s [label=%s];" % (_quote(tree["node"]), _quote("\n".join(label))))
        lines.append("  %s -> %s [label=%s];" % (_quote(parent), _quote(tree["node"]), _quote(tree["edge"])))
        for child in tree["children"]:
            walk(tree["node"], child)

    for root in roots:
        ident = root.get("device") or "node:" + root["name"]
        label = "%s\n%s" % (_label(root), root["driver"]) if root.get("device") else "node[%s]" % root["name"]
        lines.append("  %s [shape=ellipse, label=%s];" % (_quote(ident), _quote(label)))
        for child in root["children"]:
            walk(ident, child)
    lines.append("}")
    return "\n".join(lines) + "\n"


_SPEC_KEYS = ("path", "format", "size", "mode", "cache", "aio", "discard", "detect_zeroes", "serial", "mac",
              "netdev", "ifname", "bridge", "throttle_group")


def readable_limits(limits) -> str:
    """Limits as a person reads them, only what limits: ``iops_total=20 bps_total=1048576``."""
    return " ".join("%s=%s" % item for item in limiting(limits).items()) or "none"


def _label(record: dict) -> str:
    """How the declaration names a device: ``disks[root]``, ``floppy[floppy]``."""
    return "%s[%s]" % (_GROUPS.get(record["kind"], record["kind"]), record["name"])


def summary(layout) -> dict:
    """A guest layout as a person reads a diff of it: the machine, then one line of facts per
    device (where it sits, what image, which options), keyed by the declaration's names."""
    if layout is None:
        return {}
    declaration = layout.declaration
    devices = {}
    for record in layout.records():
        group = _GROUPS.get(record["kind"])
        label = "%s[%s]" % (group, record["name"]) if group else record["kind"] if record["kind"] == "floppy" \
            else "controller %s" % record["id"]
        info = record["hvinfo"]
        entry = {"id": record["id"], "driver": info["driver"]}
        entry.update({key: info[key] for key in _PLACEMENT_KEYS if key in info})
        entry.update({key: value for key, value in (record.get("spec") or {}).items()
                      if key in _SPEC_KEYS and value is not None})
        if (record.get("spec") or {}).get("limits"):
            entry["limits"] = readable_limits(record["spec"]["limits"])
        chain = blockdev.layers(record.get("nodes") or []) if record["kind"] == "disk" else []
        if [layer.path for layer in chain] not in ([], [entry.get("path")]):
            # Overlays, or the image a mirror moved it to (docs/block-graph.md), bottom-up.
            entry["chain"] = ["%s (%s)" % (layer.path, layer.fmt) for layer in chain]
        if record.get("state", runtime.STATE_ATTACHED) != runtime.STATE_ATTACHED:
            entry["state"] = record["state"]
        devices[label] = entry
    out = {"machine": dict(declaration.get("machine") or {}, machine_type=layout.machine_type),
           "hvparams": declaration.get("hvparams") or {}, "devices": devices}
    if getattr(layout, "throttle_groups", None):
        out["throttle_groups"] = {g["name"]: readable_limits(g["limits"]) for g in layout.throttle_groups}
    return out
