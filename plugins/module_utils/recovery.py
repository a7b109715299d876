# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Finishing or undoing what a killed run left begun (pure).

Every action is written to the runtime file's journal before its first QMP command, naming
what it creates and removes (docs/faults.md). A later run compares each begun entry with what
QEMU has now and decides, like libvirt's reconnect (it re-reads QEMU rather than trusting its
own notes): a hot-add whose device is in QEMU on the recorded top node is adopted, anything
less is undone; a hot-remove whose device is gone is finished, else the device is kept; a media
change ends on whichever chain the drive has, or on the old one; a resize keeps its old record
and is planned again from QEMU's size.
"""

from __future__ import annotations

from ansible_collections.blocklayer.qemu.plugins.module_utils import engine, ids
from ansible_collections.blocklayer.qemu.plugins.module_utils.blockdev import throttle_of, top_node
from ansible_collections.blocklayer.qemu.plugins.module_utils.devices import throttle_group_object
from ansible_collections.blocklayer.qemu.plugins.module_utils.plan import (
    ATTACH, CHANGE_MEDIUM, DETACH, FINISH_UNPLUG, GROUP_ACTIONS, GROUP_DEL, GROUP_KIND, PURGE, RESIZE, THROTTLE,
    Action, own_group, release_steps, set_limits, throttle_steps)
from ansible_collections.blocklayer.qemu.plugins.module_utils.runtime import ORIGIN_DRIVE

RECOVER = "recover"


def _top(record) -> str:
    return top_node((record or {}).get("nodes"))


def _delete_nodes(names, live_nodes) -> list:
    return [engine.del_node(n) for n in ids.top_down(names) if n in live_nodes]


def _names(record) -> list:
    return [n["node-name"] for n in (record or {}).get("nodes") or []]


def _cleanup(record, live_nodes) -> list:
    """What a device leaves besides itself: its nodes that QEMU still has (top-down), then its
    netdev and objects (plan.release_steps). Netdevs and objects are sent whether or not
    the killed run got to create them ("not found" is fine)."""
    others = [s for s in release_steps(record) if not any(kind == engine.NODES for kind, _name in s.removes)]
    return _delete_nodes(_names(record), live_nodes) + others


def _action(entry, reason: str, steps, keep) -> Action:
    """``keep`` is the record the layout holds afterwards, or None when the device is gone."""
    record = keep or entry.old or entry.record or {}
    return Action(RECOVER, record.get("kind", "disk"), record.get("name", entry.id), entry.id,
                  reason=reason, record=keep, old=None if keep else record, steps=tuple(steps), entry=entry)


def recover(journal, present_ids: set, roots: dict, live_nodes: set) -> list:
    """One action per begun journal entry. ``roots`` maps a device id to the node its drive
    uses now (query-block), ``live_nodes`` are the node names QEMU has."""
    actions = []
    for entry in journal:
        if entry.action == ATTACH:
            actions.append(_recover_attach(entry, present_ids, roots, live_nodes))
        elif entry.action == CHANGE_MEDIUM:
            actions.append(_recover_medium(entry, roots, live_nodes))
        elif entry.action == RESIZE:
            actions.append(_recover_resize(entry))
        elif entry.action == THROTTLE:
            actions.append(_recover_throttle(entry, roots, live_nodes))
        elif entry.action in GROUP_ACTIONS:
            actions.append(_recover_group(entry))
        elif entry.action in (DETACH, FINISH_UNPLUG, PURGE):  # the device was on its way out
            actions.append(_recover_removal(entry, present_ids, live_nodes))
        else:
            actions.append(_recover_by_undo(entry, present_ids, live_nodes))
    return actions


def _recover_by_undo(entry, present_ids, live_nodes) -> Action:
    """A kind without a rule of its own: what its entry says it created is taken back, last
    first, as a rollback would (engine.rollback), and the record stays as it was. Nodes and
    devices only where QEMU has them; netdevs and objects are sent anyway ("not found" is fine)."""
    created = entry.creates
    steps = [engine.del_device(d) for d in reversed(created.get(engine.DEVICES) or []) if d in present_ids]
    steps += _delete_nodes(created.get(engine.NODES) or [], live_nodes)
    steps += [engine.del_netdev(n) for n in reversed(created.get(engine.NETDEVS) or [])]
    steps += [engine.del_object(o) for o in reversed(created.get(engine.OBJECTS) or [])]
    return _action(entry, "a killed run had begun %s: undone" % entry.action, steps, entry.old)


def _recover_attach(entry, present_ids, roots, live_nodes) -> Action:
    record = entry.record
    complete = entry.id in present_ids and (record["kind"] in ("controller", "nic") or roots.get(entry.id) == _top(record))
    if complete:
        return _action(entry, "a killed run had attached it: adopted", (), record)
    commands = []
    if entry.id in present_ids:
        commands.append(engine.del_device(entry.id))
    commands += _cleanup(record, live_nodes)
    return _action(entry, "a killed run had begun attaching it: undone", commands, None)


def _recover_removal(entry, present_ids, live_nodes) -> Action:
    old = entry.old
    if entry.id and entry.id in present_ids:
        return _action(entry, "a killed run had begun removing it; it is still in QEMU", (), old)
    commands = [] if old.get("origin") == ORIGIN_DRIVE else _cleanup(old, live_nodes)
    return _action(entry, "a killed run had removed it: what it left is deleted", commands, None)


def _recover_resize(entry) -> Action:
    """block_resize creates and removes nothing, and QEMU either grew the image or did not: the old
    record stays, and the next plan compares the declared size with QEMU's again (plan._resize_action),
    so sending block_resize once more, to the same size, is all a half-done resize can need."""
    return _action(entry, "a killed run had begun growing it: the plan that follows grows it if "
                   "QEMU still has it smaller", (), entry.old)


def _recover_medium(entry, roots, live_nodes) -> Action:
    old, new = entry.old, entry.record
    dev_id = entry.id
    root = roots.get(dev_id)
    old_names, new_names = _names(old), _names(new)
    if root == _top(new) and new_names:
        keep, stale, insert = new, old_names, None
    elif root == _top(old) and old_names:
        keep, stale, insert = old, new_names, None
    elif new_names and all(n in live_nodes for n in new_names):
        keep, stale, insert = new, old_names, _top(new)
    else:  # the old medium, or an empty drive when the old chain is gone too
        complete = old_names and all(n in live_nodes for n in old_names)
        keep = old if complete else dict(old, nodes=[])
        stale, insert = new_names + ([] if complete else old_names), _top(old) if complete else None
    commands = []
    if insert:
        commands += [engine.open_tray(dev_id), engine.insert_medium(dev_id, insert)]
    if old.get("kind") == "cdrom":
        commands.append(engine.close_tray(dev_id))
    commands += _delete_nodes(stale, live_nodes)
    return _action(entry, "a killed run had begun changing its medium: it keeps the %s one"
                   % ("new" if keep is new else "old"), commands, keep)


def _recover_throttle(entry, roots, live_nodes) -> Action:
    """A throttle node added: adopted once the drive uses it, else deleted (with the disk's own
    group). A throttle node taken away: gone once the drive is back on the node below, else
    kept. Limits or group of a node that stays: sent again (qom-set and reopen are idempotent)."""
    old, new = entry.old, entry.record
    old_thr, new_thr = throttle_of(old["nodes"]), throttle_of(new["nodes"])
    on_thr = roots.get(entry.id) == (new_thr or old_thr or {}).get("node-name")
    if new_thr and old_thr:
        return _action(entry, "a killed run had begun changing its throttling: finished",
                       throttle_steps(old, new), new)
    if new_thr:  # being added: adopted once the drive uses it
        if on_thr:
            return _action(entry, "a killed run had added its throttling: adopted", (), new)
        commands = _delete_nodes([new_thr["node-name"]], live_nodes)
        own = own_group(new) if not own_group(old) else None
        commands += [engine.del_object(own["id"])] if own else []
        return _action(entry, "a killed run had begun adding its throttling: undone", commands, old)
    if on_thr:  # being removed, and the drive still uses it
        return _action(entry, "a killed run had begun removing its throttling: kept", (), old)
    # The drive is back on the node below: what the switch leaves behind goes (its clean-up).
    commands = [s for s in throttle_steps(old, new)
                if s.cleanup and all(name in live_nodes for kind, name in s.removes if kind == engine.NODES)]
    return _action(entry, "a killed run had removed its throttling: finished", commands, new)


def _recover_group(entry) -> Action:
    """A shared group: an add or a change is sent again (an existing group is fine), a delete
    is sent again (gone is fine; one still in use stays recorded)."""
    record = entry.record or entry.old
    if entry.action == GROUP_DEL:
        commands = [engine.del_object(entry.id, cleanup=False)]
    else:
        commands = [engine.add_object(throttle_group_object(entry.id, record["limits"])),
                    engine.send(set_limits(entry.id, record["limits"]))]
    return Action(RECOVER, GROUP_KIND, record["name"], entry.id, reason="a killed run had begun %s: finished"
                  % entry.action, record=entry.record, old=entry.old if entry.action == GROUP_DEL else None,
                  steps=tuple(commands), entry=entry)
