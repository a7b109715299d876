# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What an instance has now, per device, from its runtime file checked against QEMU (pure).

Used by qemu_instance_info: the runtime file says what each device should be, QEMU's own
answers (verify.QUERIES plus query-jobs) say what it is; every difference is reported as drift.
"""

from __future__ import annotations

from ansible_collections.blocklayer.qemu.plugins.module_utils import runtime, standalone, verify

_PLACEMENT_KEYS = ("bus", "addr", "channel", "scsi-id", "lun", "unit")


def _chain(image: dict) -> list:
    """Image filenames from the top down (query-block's image and its backing-image)."""
    found = []
    while image:
        found.append(image.get("filename"))
        image = image.get("backing-image")
    return found


def describe(rt: runtime.Runtime, live, jobs: list) -> dict:
    """The instance as the user reads it: per device what QEMU has, plus drift."""
    blocks = verify.block_by_id(live.block)
    types = live.types
    devices = []
    for record in rt.layout.records():
        info = record["hvinfo"]
        entry = {"id": record["id"], "kind": record["kind"], "name": record["name"], "driver": info["driver"],
                 "state": record.get("state", runtime.STATE_ATTACHED), "in_qemu": record["id"] in types}
        entry.update({key: info[key] for key in _PLACEMENT_KEYS if key in info})
        inserted = (blocks.get(record["id"]) or {}).get("inserted")
        if record["kind"] in ("disk", "cdrom", "floppy"):
            entry.update(image=None, format=None, node=None, read_only=None, cache=None, chain=[])
            if inserted:
                entry.update(image=inserted.get("file"), format=inserted.get("drv"), node=inserted.get("node-name"),
                             read_only=bool(inserted.get("ro")), cache=inserted.get("cache"),
                             chain=_chain(inserted.get("image")))
            # The legacy per-device fields, as QEMU has them (0 under a throttle filter, whose limits
            # live on its group: throttle_group names it, read it with qom-get /objects/<id> limits).
            entry["limits"] = {k: inserted[k] for k in ("bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr")
                               if inserted and k in inserted}
            thr = (record.get("nodes") or [{}])[-1] if record.get("nodes") else {}
            entry["throttle_group"] = thr.get("throttle-group") if thr.get("driver") == "throttle" else None
        if record.get("netdev"):
            entry["netdev"] = record["netdev"]["id"]
        devices.append(entry)
    drift = verify.problems([r for r in rt.layout.records() if r.get("state") != runtime.STATE_UNPLUG_PENDING],
                            live.block, live.pci, live.qom)
    nodes = [{"name": n["name"], "path": n["path"], "format": n["format"], "read_only": n["read_only"],
              "node": standalone.format_node(n), "copy_of": n.get("copy_of"),
              "in_qemu": all(c["node-name"] in live.nodes for c in n["nodes"])} for n in rt.layout.named_nodes]
    drift += ["node %s (%s) is recorded but QEMU does not have it" % (n["name"], n["node"])
              for n in nodes if not n["in_qemu"]]
    return {
        "devices": devices,
        "nodes": nodes,
        "unplug_pending": sorted(r["id"] for r in rt.layout.records()
                                 if r.get("state") == runtime.STATE_UNPLUG_PENDING),
        "jobs": [{"id": j.get("id"), "type": j.get("type"), "status": j.get("status"),
                  "current_progress": j.get("current-progress"), "total_progress": j.get("total-progress"),
                  "error": j.get("error")} for j in jobs],
        "unfinished": [{"action": p.action, "id": p.id} for p in rt.journal],
        "drift": drift,
    }


_SPEC_KEYS = ("path", "format", "mode", "cache", "aio", "discard", "detect_zeroes", "serial", "mac", "netdev",
              "ifname", "bridge", "throttle_group")


def readable_limits(limits) -> str:
    """Limits as a person reads them, only what limits: ``iops_total=20 bps_total=1048576``
    (from a spec's or QEMU's ThrottleLimits dict: a 0 rate and a 1 s burst are no limit)."""
    items = [(k.replace("-", "_"), v) for k, v in (limits or {}).items()]
    shown = ["%s=%s" % (k, v) for k, v in items if v and not (k.endswith("_max_length") and v == 1)]
    return " ".join(shown) or "none"


def summary(layout) -> dict:
    """A guest layout as a person reads a diff of it: the machine, then one line of facts per
    device (where it sits, what image, which options), keyed by the declaration's names."""
    if layout is None:
        return {}
    declaration = layout.declaration
    devices = {}
    for record in layout.records():
        group = {"disk": "disks", "cdrom": "cdroms", "nic": "nics"}.get(record["kind"])
        label = "%s[%s]" % (group, record["name"]) if group else record["kind"] if record["kind"] == "floppy" \
            else "controller %s" % record["id"]
        info = record["hvinfo"]
        entry = {"id": record["id"], "driver": info["driver"]}
        entry.update({key: info[key] for key in _PLACEMENT_KEYS if key in info})
        entry.update({key: value for key, value in (record.get("spec") or {}).items()
                      if key in _SPEC_KEYS and value is not None})
        if (record.get("spec") or {}).get("limits"):
            entry["limits"] = readable_limits(record["spec"]["limits"])
        if record.get("state", runtime.STATE_ATTACHED) != runtime.STATE_ATTACHED:
            entry["state"] = record["state"]
        devices[label] = entry
    out = {"machine": dict(declaration.get("machine") or {}, machine_type=layout.machine_type),
           "hvparams": declaration.get("hvparams") or {}, "devices": devices}
    if getattr(layout, "throttle_groups", None):
        out["throttle_groups"] = {g["name"]: readable_limits(g["limits"]) for g in layout.throttle_groups}
    return out
