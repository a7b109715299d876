# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Desired declaration vs runtime file -> ordered actions (pure).

What can change live becomes attach / detach / change-medium / finish-unplug actions, each
with the QMP commands it will send; what cannot (machine options, hvparams, the bus or cache
of an attached disk, IDE and floppy devices) becomes restart-required with the reason.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Optional

from ansible_collections.blocklayer.qemu.plugins.module_utils import blockdev, engine, ids
from ansible_collections.blocklayer.qemu.plugins.module_utils.blockdev import (
    THROTTLE_ROLE, alternate_roles, below_throttle, throttle_of, top_format_node)
from ansible_collections.blocklayer.qemu.plugins.module_utils.devices import throttle_group_object
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.layout import (
    Device, Placer, medium_chain, own_group_id, shared_groups, throttled)
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Value
from ansible_collections.blocklayer.qemu.plugins.module_utils.runtime import (
    ORIGIN_BLOCKDEV, ORIGIN_DRIVE, STATE_ATTACHED, STATE_UNPLUG_PENDING)
from ansible_collections.blocklayer.qemu.plugins.module_utils.spec import (
    OPTION_GROUPS, SCSI_DISK_TYPES, format_size, grow_to, throttle_group_id)
from ansible_collections.blocklayer.qemu.plugins.module_utils.topology import (
    SCSI_BUS, SCSI_CONTROLLER_ID, SCSI_CONTROLLERS)


def normalise(declaration: dict) -> dict:
    """The declaration as the runtime file stores it (JSON types: tuples become lists)."""
    return json.loads(json.dumps(declaration))


def _label(item, index):
    return "[%s]" % item["name"] if isinstance(item, dict) and "name" in item else "[%d]" % index


def changes(before, after, path: str = "") -> list:
    """Every leaf that differs, as ``path: old -> new``, in a stable order."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            sub = "%s.%s" % (path, key) if path else key
            found += changes(before.get(key), after.get(key), sub)
        return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        found = []
        for index, (old, new) in enumerate(zip(before, after)):
            found += changes(old, new, path + _label(new, index))
        return found
    if before == after:
        return []
    return ["%s: %s -> %s" % (path, _short(before), _short(after))]


def _short(value) -> str:
    if isinstance(value, (list, dict)):
        names = [v.get("name") for v in value if isinstance(v, dict)] if isinstance(value, list) else []
        if names and all(names):
            return "[%s]" % ", ".join(names)
    return json.dumps(value)


# Instance-level parts of a declaration: a change to any of them needs a new QEMU.
MACHINE_KEYS = ("name", "uuid", "qemu_binary", "machine", "hvparams")
# Options added after a runtime file may have been written, with the value that file's QEMU
# has: a record without them is compared as if it had them, so an upgrade is no change.
_ADDED_DEFAULTS = {"hvparams": {"scsi_iothread": False}, "machine": {"cpu_model": None},
                   "disk": {"iothread": False, "size": None, "share_rw": False, "force_share": False,
                            "limits": None, "throttle_group": None}}


def _recorded(defaults_key: str, recorded):
    if not isinstance(recorded, dict):
        return recorded
    return dict(_ADDED_DEFAULTS.get(defaults_key, {}), **recorded)


ATTACH, DETACH, CHANGE_MEDIUM, FINISH_UNPLUG, PURGE, RESTART = (
    "attach", "detach", "change-medium", "finish-unplug", "purge", "restart-required")
RESIZE = "resize"
# A disk's throttling changed live; a shared throttle group added, its limits changed, deleted.
THROTTLE, GROUP_ADD, GROUP_SET, GROUP_DEL = (
    "throttle", "add-throttle-group", "set-throttle-group", "delete-throttle-group")
GROUP_KIND = "throttle_group"
GROUP_ACTIONS = (GROUP_ADD, GROUP_SET, GROUP_DEL)
# Buses QEMU cannot hot-plug on (qdev_device_add refuses a bus without a hotplug handler: "Bus ... does
# not support hotplugging"; docs/design.md "Hot-plug and guests").
COLD_ONLY_DRIVERS = ("ide-hd", "ide-cd", "floppy", "isa-fdc")


@dataclass(init=False, repr=False, eq=False)
class Action(Value):
    """One step of a reconcile, with the QMP commands it sends, in order."""

    action: str
    kind: str
    name: str
    id: str
    reason: str = ""
    record: Optional[dict] = None  # the runtime record once the action is done
    old: Optional[dict] = None  # the runtime record it replaces or removes
    steps: tuple = ()  # engine.Step: its commands in order, each naming what it creates and removes
    entry: Optional[object] = None  # for recovery's actions: the journal entry (runtime.Pending) it settles
    warning: str = ""  # what the user should know although the action works

    @property
    def commands(self) -> tuple:
        return tuple(engine.commands(self.steps))

    @property
    def label(self) -> str:
        group = OPTION_GROUPS[self.kind]
        return group if self.kind == "floppy" else "%s[%s]" % (group, self.name)

    def report(self) -> dict:
        out = {"action": self.action, "kind": self.kind, "name": self.name, "id": self.id}
        if self.reason:
            out["reason"] = self.reason
        return out


def attach_steps(record: dict) -> list:
    """The device's own objects (its iothread), nodes bottom-up (or the netdev), then the device."""
    steps = [engine.add_object(obj) for obj in record.get("objects") or []]
    steps += [engine.add_node(node) for node in record.get("nodes") or []]
    if record.get("netdev"):
        steps.append(engine.add_netdev(record["netdev"]))
    steps.append(engine.add_device(record["props"]))
    return steps


def release_steps(record: dict) -> list:
    """What a removed device leaves behind, top-down: nodes, netdev, then its objects (an
    iothread goes once nothing runs in it). -drive nodes belong to QEMU."""
    if record.get("origin") == ORIGIN_DRIVE:
        return []
    steps = [engine.del_node(n["node-name"]) for n in reversed(record.get("nodes") or [])]
    if record.get("netdev"):
        steps.append(engine.del_netdev(record["netdev"]["id"]))
    steps += [engine.del_object(obj["id"]) for obj in record.get("objects") or []]
    return steps


def removal_steps(record: dict) -> list:
    """device_del, then (once the guest let go) what the device leaves behind."""
    return [engine.del_device(record["id"])] + release_steps(record)


def medium_steps(old: dict, new: dict) -> list:
    """New chain first, then swap it in through the tray, then delete the old chain."""
    dev_id = new["id"]
    steps = [engine.add_node(node) for node in new["nodes"]]
    tray = old["kind"] == "cdrom"  # a floppy drive has no tray
    if tray:
        steps.append(engine.open_tray(dev_id))
    if old["nodes"]:
        steps.append(engine.remove_medium(dev_id, blockdev.top_node(old["nodes"])))
    if new["nodes"]:
        steps.append(engine.insert_medium(dev_id, blockdev.top_node(new["nodes"])))
    if tray:
        steps.append(engine.close_tray(dev_id))
    return steps + release_steps(old)


# Which module attached a device (docs/design.md "Modules sharing an instance"): qemu_instance
# keeps what qemu_device added unless it is told to purge undeclared devices.
OWNER_INSTANCE, OWNER_DEVICE = "qemu_instance", "qemu_device"


def _record(device, owner: str, state=STATE_ATTACHED, persistent: bool = True) -> dict:
    return dict(device.to_dict(), state=state, origin=ORIGIN_BLOCKDEV,
                **ownership({"owner": owner, "persistent": persistent}))


def ownership(record) -> dict:
    """Who attached a device and, when it is so, that it was attached live only (qemu_device's
    ``persistent: false``, libvirt's ``--live`` without ``--config``): what a start carries over."""
    record = record or {}
    found = {"owner": record.get("owner") or OWNER_INSTANCE}
    if record.get("persistent") is False:
        found["persistent"] = False
    return found


def kept_devices(layout, declared: dict, running: bool = True) -> dict:
    """Disks and NICs qemu_device attached that ``declared`` (qemu_instance's parameters) does not
    name: their recorded specs, by group, so that the instance keeps them, running or started
    again from the layout a stop recorded. One attached live only is kept while its QEMU runs
    (``running``): a start does not bring it back."""
    kept = {"disks": [], "nics": []}
    for record in layout.devices if layout else ():
        group = {"disk": "disks", "nic": "nics"}.get(record["kind"])
        names = {item.get("name") for item in declared.get(group) or []} if group else set()
        if group and record.get("owner") == OWNER_DEVICE and record["name"] not in names \
                and record.get("state") != STATE_UNPLUG_PENDING and (running or record.get("persistent") is not False):
            kept[group].append(dict(record["spec"]))
    return kept


def purge_orphans(layout, present_ids, live_nodes, live_netdevs=(), keep_nodes=()) -> list:
    """What QEMU has in the collection's name space that no record explains -> purge actions.

    Such leftovers come from a run killed mid-action by a collection without write-ahead
    records (format 1), or from a hand-made change; they would make every later attach of the
    same device fail with QEMU's "Duplicate ...". A device is unplugged first (its nodes go
    with it, top-down); nodes without a device are deleted top-down.
    """
    known_ids = {r["id"] for r in layout.records()}
    known_nodes = {n for r in layout.records() for n in blockdev.names(r.get("nodes"))} | set(keep_nodes)
    known_netdevs = {r["netdev"]["id"] for r in layout.records() if r.get("netdev")}
    known_objects = {o["id"] for r in layout.records() for o in r.get("objects") or []}
    orphan_netdevs = {n for n in live_netdevs if ids.is_own_netdev(n) and n not in known_netdevs}
    orphan_nodes = [n for n in live_nodes if ids.own_node(n) and n not in known_nodes]
    by_device = {}
    for name in orphan_nodes:
        by_device.setdefault(ids.own_node(name)[0], []).append(name)
    actions = []
    for dev_id in sorted(i for i in present_ids if ids.is_own_device_id(i) and i not in known_ids):
        names = by_device.pop(dev_id, [])
        nodes = [{"node-name": n} for n in reversed(ids.top_down(names))]
        old = {"kind": dev_id.split("-")[0], "name": dev_id, "id": dev_id, "nodes": nodes, "origin": ORIGIN_BLOCKDEV,
               "objects": _orphan_groups(dev_id, names, known_objects)}
        if dev_id + ".net" in orphan_netdevs:
            orphan_netdevs.discard(dev_id + ".net")
            old["netdev"] = {"id": dev_id + ".net"}
        actions.append(Action(PURGE, old["kind"], dev_id, dev_id, reason="in QEMU but not in the runtime file",
                              old=old, steps=tuple(removal_steps(old))))
    for dev_id, names in sorted(by_device.items()):
        old = {"kind": dev_id.split("-")[0], "name": dev_id, "id": dev_id, "origin": ORIGIN_BLOCKDEV,
               "nodes": [{"node-name": n} for n in reversed(ids.top_down(names))],
               "objects": _orphan_groups(dev_id, names, known_objects)}
        actions.append(Action(PURGE, old["kind"], dev_id, "", reason="nodes in QEMU that no record explains",
                              old=old, steps=tuple(release_steps(old))))
    for netdev in sorted(orphan_netdevs):
        old = {"kind": "nic", "name": netdev, "id": netdev[:-len(".net")], "nodes": [], "origin": ORIGIN_BLOCKDEV,
               "netdev": {"id": netdev}}
        actions.append(Action(PURGE, "nic", netdev, "", reason="a netdev in QEMU that no record explains",
                              old=old, steps=tuple(release_steps(old))))
    return actions


def _orphan_groups(dev_id: str, names, known_objects) -> list:
    """An orphan throttle node's own group goes with it (QOM objects are not listed on every
    run; object-del of one that is not there is fine)."""
    group = own_group_id(dev_id)
    thr = any((ids.own_node(n) or ("", "", 0))[1] == THROTTLE_ROLE for n in names)
    return [{"id": group}] if thr and group not in known_objects else []


def reconcile(layout, spec, facts: dict, live_pci_slots=(), present_ids=None, live_nodes=(),
              owner: str = OWNER_INSTANCE, live_netdevs=(), live_sizes=None, keep_nodes=(),
              persistent: bool = True, allow_boot_unplug: bool = False) -> list:
    """Guest layout of the runtime file vs the desired ``spec`` -> ordered actions.

    ``present_ids`` are the device ids QOM shows and ``live_nodes`` the node names QEMU has
    (None / empty when QEMU was not asked, e.g. in check mode); they decide whether an unplug
    left pending by an earlier run can be finished, and what QEMU holds that no record explains.
    ``live_sizes`` (node name -> virtual size, None in check mode, where the image's host facts
    stand in) decide whether a disk grows. ``persistent: False`` marks what this run attaches as
    attached live only (kept_devices); unplugging the device the guest boots from needs
    ``allow_boot_unplug``.
    """
    desired = normalise(spec.to_dict())
    actions = [Action(RESTART, "controller", key, "", reason=change)
               for key in MACHINE_KEYS
               for change in changes(_recorded(key, layout.declaration.get(key)), desired[key], key)]
    purge = purge_orphans(layout, present_ids, live_nodes, live_netdevs, keep_nodes) if present_ids is not None else []
    records = {(d["kind"], d["name"]): d for d in layout.devices}
    wanted = [("disk", d) for d in spec.disks] + [(m.kind, m) for m in spec.media()] + [("nic", n) for n in spec.nics]
    wanted_keys = {(kind, item.name) for kind, item in wanted}

    finish, detach = [], []
    for key, record in records.items():
        if record.get("state") == STATE_UNPLUG_PENDING:
            if present_ids is not None and record["id"] not in present_ids:
                finish.append(Action(FINISH_UNPLUG, record["kind"], record["name"], record["id"],
                                     reason="the guest released it", old=record,
                                     steps=tuple(release_steps(record))))
            elif key in wanted_keys:
                actions.append(Action(RESTART, record["kind"], record["name"], record["id"],
                                      reason="it is still being unplugged by the guest"))
            continue
        if key in wanted_keys:
            continue
        action = Action(DETACH, record["kind"], record["name"], record["id"], reason=_detach_reason(record, owner),
                        old=record, steps=tuple(removal_steps(record)))
        if record["hvinfo"]["driver"] in COLD_ONLY_DRIVERS:
            actions.append(Action(RESTART, action.kind, action.name, action.id,
                                  reason="cannot be hot-unplugged (%s)" % record["hvinfo"]["driver"]))
        else:
            detach.append(action)

    placer = Placer(spec, [Device.from_dict(c) for c in layout.controllers],
                    [Device.from_dict(d) for d in layout.devices], live_pci_slots)
    media, live, attach = [], [], []
    for kind, item in wanted:
        record = records.get((kind, item.name))
        if record and record.get("state") == STATE_UNPLUG_PENDING:
            continue
        if record:
            declared = _as_recorded_image(record, normalise(asdict(item)))
            diff = field_changes(_recorded(kind, record["spec"]), declared)
            if not diff:
                continue
            cold = {f: c for f, c in diff.items() if f not in LIVE_FIELDS.get(kind, {})}
            if cold:
                actions.append(Action(RESTART, kind, item.name, record["id"],
                                      reason="cannot change on a live device: %s" % "; ".join(
                                          c for f in sorted(cold) for c in cold[f])))
                continue
            # One action per kind of live change, each building on the record the previous leaves.
            for how in sorted({LIVE_FIELDS[kind][f] for f in diff}):
                fields = sorted(f for f in diff if LIVE_FIELDS[kind][f] == how)
                action = _LIVE_PLANNERS[how](LiveChange(kind, item, spec, facts, record, declared, fields,
                                                        [c for f in fields for c in diff[f]], live_sizes))
                if action is None:  # QEMU already has it (e.g. the image has the declared size)
                    continue
                (media if how == LIVE_MEDIUM else live).append(action)
                record = action.record
            continue
        if kind in ("cdrom", "floppy") or getattr(item, "disk_type", "") == "ide":
            actions.append(Action(RESTART, kind, item.name, "", reason="cannot be hot-plugged (%s); declare it "
                                  "before the instance starts" % ("floppy" if kind == "floppy" else "IDE")))
            continue
        if kind == "disk" and item.disk_type in SCSI_DISK_TYPES:
            controller = placer.scsi_controller()
            if controller:
                record = _record(controller, owner)
                attach.append(Action(ATTACH, "controller", controller.name, controller.id,
                                     reason="a SCSI disk arrives", record=record,
                                     steps=tuple(attach_steps(record))))
        device = placer.disk(item, facts) if kind == "disk" else placer.nic(item)
        record = _record(device, owner, persistent=persistent)
        steps = attach_steps(record)
        if kind == "disk":
            steps = _grown_at_attach(steps, record, item, facts)
        attach.append(Action(ATTACH, kind, item.name, device.id, reason="declared", record=record,
                             steps=tuple(steps), warning=_hotplug_warning(placer, device)))
    if not any(a.action == RESTART for a in actions):  # a restart unplugs nothing
        for action in detach:
            _refuse_boot_unplug(action, allow_boot_unplug or _kernel_boot(layout))
    group_up, group_down = _group_actions(layout, spec)
    return actions + purge + finish + detach + media + group_up + live + attach + group_down


def _detach_reason(record: dict, owner: str) -> str:
    """Why a device goes: qemu_device starts from the recorded declaration, so what it leaves out
    it was told to remove; qemu_instance removes what it does not declare."""
    if owner == OWNER_DEVICE:
        return "state: absent"
    if record.get("owner") == OWNER_DEVICE:
        return "not declared (purge_undeclared)"
    return "not declared"


def boot_device(record: dict) -> bool:
    """Whether the guest boots from this device: it carries a bootindex (layout.layout_instance
    gives one to the first disk, the boot CD-ROM or the first NIC, as boot_order says)."""
    return (record.get("props") or {}).get("bootindex") is not None


def _kernel_boot(layout) -> bool:
    """A guest started with kernel_path boots that kernel, not a device."""
    return bool((layout.declaration.get("machine") or {}).get("kernel_path"))


def _refuse_boot_unplug(action, allowed: bool) -> None:
    if boot_device(action.old) and not allowed:
        raise ConfigError(
            "%s (%s) is the device the guest boots from (bootindex %s) and would be unplugged (%s): the guest "
            "would not find it at its next boot. Set allow_boot_unplug: true to unplug it anyway, or keep it"
            % (action.label, action.id, action.old["props"]["bootindex"], action.reason))


# SCSI controllers that do not tell a Linux guest about hot-plugged disks (docs/design.md
# "Hot-plug and guests").
_SILENT_SCSI = {SCSI_CONTROLLERS[t].driver for t in ("lsi", "megasas")}


def _hotplug_warning(placer, device) -> str:
    if device.hvinfo.get("bus") != SCSI_BUS:
        return ""
    driver = next(c.hvinfo["driver"] for c in placer.controllers if c.id == SCSI_CONTROLLER_ID)
    if driver not in _SILENT_SCSI:
        return ""
    return ("disks[%s] (%s) was hot-plugged onto a %s SCSI controller, which does not signal hot-plug: a Linux "
            "guest sees it only after a SCSI rescan (echo '- - -' > /sys/class/scsi_host/hostN/scan); "
            "scsi_controller_type: virtio-scsi-pci signals it" % (device.name, device.id, driver))


@dataclass(init=False, repr=False, eq=False)
class LiveChange(Value):
    """A declared device whose changed fields can all change on the running device."""

    kind: str
    item: object  # the declared DiskSpec / MediaSpec / NicSpec
    spec: object  # the InstanceSpec
    facts: dict
    record: dict  # the runtime record as it is before this change
    declared: dict  # the declared spec, normalised
    fields: list  # the top-level spec fields this change covers
    reasons: list  # their "field: old -> new" lines
    sizes: Optional[dict] = None  # node name -> virtual size from QEMU; None: use the host facts

    def updated(self, **record_keys) -> dict:
        """The record once the change is done: these fields declared, ``record_keys`` replaced."""
        spec = dict(self.record["spec"], **{f: self.declared.get(f) for f in self.fields})
        return dict(self.record, spec=spec, **record_keys)


def _set_drive(dev_id: str, node: str, before: str) -> engine.Step:
    """Point a running device at another node (the qdev ``drive`` property can change after
    realize); only ever to a filter over its current root, or back to that root."""
    return engine.set_property("/machine/peripheral/" + dev_id, "drive", node, before)


def set_limits(group_id: str, limits: dict) -> dict:
    """``limits`` merges into what the group has: always all 19 fields (spec.qemu_limits)."""
    return engine.cmd("qom-set", path="/objects/" + group_id, property="limits", value=dict(limits))


def own_group(record) -> Optional[dict]:
    """The disk's own throttle group object (``<device id>.tg``), or None."""
    gid = own_group_id((record or {}).get("id", ""))
    return next((o for o in (record or {}).get("objects") or [] if o["id"] == gid), None)


def throttle_steps(old: dict, new: dict) -> list:
    """From one throttling of a disk to another: its own group first, the node switch, then
    what is left over, as clean-up (docs/design.md "Throttling")."""
    dev_id = new["id"]
    old_thr, new_thr = throttle_of(old["nodes"]), throttle_of(new["nodes"])
    old_own, new_own = own_group(old), own_group(new)
    steps = [engine.add_object(new_own)] if new_own and not old_own else []
    if new_thr and not old_thr:
        below = below_throttle(old["nodes"])
        steps += [engine.add_node(new_thr), _set_drive(dev_id, new_thr["node-name"], below)]
    elif old_thr and not new_thr:
        below = below_throttle(old["nodes"])
        steps += [_set_drive(dev_id, below, old_thr["node-name"]), engine.del_node(old_thr["node-name"])]
    elif new_thr and new_thr["throttle-group"] != old_thr["throttle-group"]:
        # The throttle driver re-registers with the group named on reopen (throttle_reopen_commit()).
        steps.append(engine.send(engine.cmd("blockdev-reopen", options=[new_thr])))
    if new_own and old_own and new_own["limits"] != old_own["limits"]:
        steps.append(engine.send(set_limits(new_own["id"], new_own["limits"])))
    if old_own and not new_own:
        steps.append(engine.del_object(old_own["id"]))
    return steps


# Devices whose drive QEMU was seen to switch live (qom-set drive); others get throttling at start.
_DRIVE_SWITCH_DRIVERS = ("virtio-blk-pci", "scsi-hd")


def _throttle_action(change: LiveChange) -> Action:
    record, item = change.record, change.item
    dev_id = record["id"]
    nodes, own = throttled(dev_id, record["nodes"], item.limits, item.throttle_group, item.read_only)
    objects = [o for o in record.get("objects") or [] if o["id"] != own_group_id(dev_id)] + ([own] if own else [])
    new = change.updated(nodes=nodes, objects=objects, hvinfo=_with_drive(record["hvinfo"], nodes),
                         props=_with_drive(record["props"], nodes))
    reason = "; ".join(change.reasons)
    switch = (throttle_of(record["nodes"]) is None) != (throttle_of(nodes) is None)
    if switch and record["hvinfo"]["driver"] not in _DRIVE_SWITCH_DRIVERS:
        return Action(RESTART, change.kind, item.name, dev_id, reason="cannot add or remove throttling on a live "
                      "%s disk (%s)" % (record["hvinfo"]["driver"], reason))
    return Action(THROTTLE, change.kind, item.name, dev_id, reason=reason, record=new, old=record,
                  steps=tuple(throttle_steps(record, new)))


def _group_actions(layout, spec) -> tuple:
    """Shared groups: added before their first user, limits set, deleted after their last user.

    A group exists in QEMU while some disk uses it: a declared disk, or one still being
    unplugged (its throttle node stays until the guest lets go)."""
    current = {g["id"]: g for g in layout.throttle_groups}
    needed = {throttle_group_id(d.throttle_group) for d in spec.disks if d.throttle_group}
    needed |= {throttle_of(r.get("nodes"))["throttle-group"] for r in layout.devices
               if r.get("state") == STATE_UNPLUG_PENDING and throttle_of(r.get("nodes"))}
    up = []
    for group in shared_groups(spec, [g.name for g in spec.throttle_groups if throttle_group_id(g.name) in needed]):
        old = current.get(group["id"])
        record = dict(group, kind=GROUP_KIND)
        if old is None:
            up.append(Action(GROUP_ADD, GROUP_KIND, group["name"], group["id"], reason="a disk uses it", record=record,
                             steps=(engine.add_object(throttle_group_object(group["id"], group["limits"])),)))
        elif old["limits"] != group["limits"]:
            up.append(Action(GROUP_SET, GROUP_KIND, group["name"], group["id"],
                             reason="; ".join(changes(old["limits"], group["limits"], "limits")), record=record,
                             old=dict(old, kind=GROUP_KIND),
                             steps=(engine.send(set_limits(group["id"], group["limits"])),)))
    down = [Action(GROUP_DEL, GROUP_KIND, old["name"], gid, reason="no disk uses it", old=dict(old, kind=GROUP_KIND),
                   steps=(engine.del_object(gid, cleanup=False),))
            for gid, old in current.items() if gid not in needed]
    return up, down


def put_group(layout, record: dict) -> None:
    """Record a shared group (runtime records keep name, id and limits)."""
    entry = {k: record[k] for k in ("name", "id", "limits")}
    for index, group in enumerate(layout.throttle_groups):
        if group["id"] == entry["id"]:
            layout.throttle_groups[index] = entry
            return
    layout.throttle_groups.append(entry)


def drop_group(layout, group_id: str) -> None:
    layout.throttle_groups[:] = [g for g in layout.throttle_groups if g["id"] != group_id]


def _medium_action(change: LiveChange) -> Action:
    record, item = change.record, change.item
    nodes = medium_chain(change.spec, item, change.facts, record["id"], alternate_roles(record["nodes"]))
    new = change.updated(nodes=nodes, hvinfo=_with_drive(record["hvinfo"], nodes),
                         props=_with_drive(record["props"], nodes))
    return Action(CHANGE_MEDIUM, change.kind, item.name, record["id"], reason="; ".join(change.reasons),
                  record=new, old=record, steps=tuple(medium_steps(record, new)))


def resize_command(nodes: list, size: int) -> dict:
    """Grow the disk under its device: the top format node, so that the guest sees the new capacity
    (virtio-blk and SCSI disks report the change, QEMU's resize callbacks)."""
    return engine.cmd("block_resize", **{"node-name": top_format_node(nodes), "size": size})


def _grow_size(what: str, item, nodes: list, facts: dict, sizes) -> Optional[int]:
    """The size to grow to: QEMU's size of the top format node when QEMU was asked, else the
    image's size on the host; None when it stays. A shrink is refused (spec.grow_to)."""
    path_facts = facts.get(item.path)
    current = sizes.get(top_format_node(nodes)) if sizes is not None else getattr(path_facts, "virtual_size", None)
    return grow_to(what, item.size, current, item.read_only, getattr(path_facts, "kind", "") == "block")


def _resize_action(change: LiveChange):
    """block_resize from the size QEMU has now, so it is planned again until QEMU has the size:
    a run killed mid-way leaves nothing to undo (recovery keeps the old record)."""
    record, item = change.record, change.item
    what = "disks[%s].size" % item.name
    size = _grow_size(what, item, record["nodes"], change.facts, change.sizes)
    if size is None:
        return None
    return Action(RESIZE, change.kind, item.name, record["id"], reason="grows to %s" % format_size(size),
                  record=change.updated(), old=record, steps=(engine.send(resize_command(record["nodes"], size)),))


def _grown_at_attach(steps: list, record: dict, item, facts: dict) -> list:
    """An image smaller than declared grows once its nodes are added, before the guest sees it
    (the last step adds the device)."""
    size = _grow_size("disks[%s].size" % item.name, item, record["nodes"], facts, None)
    if size is None:
        return steps
    return steps[:-1] + [engine.send(resize_command(record["nodes"], size))] + steps[-1:]


def _declared_size(record: dict):
    return (record.get("spec") or {}).get("size") if record.get("kind") == "disk" else None


def declares_size(devices: list) -> bool:
    """Whether any disk declares a size (else a start need not read QEMU's sizes)."""
    return any(_declared_size(record) for record in devices)


def start_resizes(devices: list, sizes: dict) -> list:
    """At start, QEMU paused: block_resize for each disk whose image is smaller than declared
    (a shrink was refused before QEMU started, layout.Placer.disk)."""
    cmds = []
    for record in devices:
        size = _declared_size(record)
        current = sizes.get(top_format_node(record.get("nodes")))
        if size and current is not None and current < size:
            cmds.append(resize_command(record["nodes"], size))
    return cmds


# Which fields of a running device change live, and how; every other field needs a restart
# (docs/design.md "Live changes"). The diff a user sees lists the same fields.
LIVE_MEDIUM = "medium"
LIVE_RESIZE = "resize"
LIVE_THROTTLE = "throttle"
LIVE_FIELDS = {
    "cdrom": {"path": LIVE_MEDIUM},
    "floppy": {"path": LIVE_MEDIUM},
    "disk": {"size": LIVE_RESIZE, "limits": LIVE_THROTTLE, "throttle_group": LIVE_THROTTLE},
}
_LIVE_PLANNERS = {
    LIVE_MEDIUM: _medium_action,
    LIVE_RESIZE: _resize_action,
    LIVE_THROTTLE: _throttle_action,
}


def _as_recorded_image(record: dict, declared: dict) -> dict:
    """A disk declared with the image it now runs on (the target of a mirror, the top overlay)
    is the same disk: qemu_blockdev moved it there (docs/block-graph.md)."""
    chain = blockdev.layers(record.get("nodes") or []) if record["kind"] == "disk" else []
    if chain and declared.get("path") == chain[-1].path:
        return dict(declared, path=record["spec"].get("path"))
    return declared


def field_changes(before: dict, after: dict) -> dict:
    """The top-level fields of a device spec that differ -> their ``changes`` lines."""
    found = {}
    for key in sorted(set(before) | set(after)):
        lines = changes(before.get(key), after.get(key), key)
        if lines:
            found[key] = lines
    return found


def _with_drive(props: dict, nodes: list) -> dict:
    props = {k: v for k, v in props.items() if k != "drive"}
    if nodes:
        props["drive"] = blockdev.top_node(nodes)
    return props


def expected_after(layout, actions: list, declaration: dict):
    """The guest layout once ``actions`` are applied (check mode's diff)."""
    after = replace(layout, declaration=declaration, controllers=list(layout.controllers),
                    devices=list(layout.devices), throttle_groups=list(layout.throttle_groups))
    for action in actions:
        if action.action in (GROUP_ADD, GROUP_SET):
            put_group(after, action.record)
        elif action.action == GROUP_DEL:
            drop_group(after, action.id)
        elif action.action in (ATTACH, CHANGE_MEDIUM, THROTTLE, RESIZE):
            after.put(action.record)
        elif action.id and action.action != RESTART:
            after.drop(action.id)
    return after
