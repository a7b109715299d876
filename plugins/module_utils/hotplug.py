# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Applying a reconcile plan to a running QEMU over QMP (docs/design.md "Reconcile").

Attach: nodes bottom-up, then device_add; a failure removes what that action added, top-down.
Detach: listeners before device_del; every device_del of the run is sent first and the events
awaited together; nodes are deleted only after DEVICE_DELETED. No event in time: the device is
recorded unplug-pending and its nodes are left alone.

The Applier changes the guest layout in memory only. The caller writes the runtime file twice
per task, whatever the number of devices: with every action as a begun journal entry before
the first command, and with the resulting layout after the last (docs/faults.md).
"""

from __future__ import annotations


from ansible_collections.blocklayer.qemu.plugins.module_utils import plan, runtime
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError
from ansible_collections.blocklayer.qemu.plugins.module_utils.recovery import RECOVER

# QEMU's texts for "that is not there (any more)" (qmp_blockdev_del, qmp_netdev_del, qmp_device_del,
# user_creatable_del).
_GONE = ("Failed to find node", "not found", "No medium")
# object-del of a throttle group a throttle node still uses (user_creatable_del()).
# object-del of a throttle group a node still uses: QEMU 7.2-10.0 say "is in use"
# (user_creatable_del), 11.1 "Cannot delete throttle group ... with active references".
_IN_USE = ("is in use", "with active references")
# object-add of an id that exists (object_property_try_add()): recovery re-adds groups.
_DUPLICATE = "attempt to add duplicate property"
UNPLUG_EVENTS = ("DEVICE_DELETED", "DEVICE_UNPLUG_GUEST_ERROR")


def journal_entry(action) -> runtime.Pending:
    """What an action creates and removes, by name: recorded before its first command."""
    def names(record):
        record = record or {}
        return {"devices": [action.id] if action.id and action.action != plan.FINISH_UNPLUG else [],
                "nodes": [n["node-name"] for n in record.get("nodes") or []],
                "netdevs": [record["netdev"]["id"]] if record.get("netdev") else [],
                "objects": [o["id"] for o in record.get("objects") or []]}
    if action.action in plan.GROUP_ACTIONS:
        objects = {"objects": [action.id]}
        return runtime.Pending(action.action, action.id, objects if action.action == plan.GROUP_ADD else {},
                               objects if action.action == plan.GROUP_DEL else {}, action.record, action.old)
    creates = names(action.record) if action.action in (plan.ATTACH, plan.CHANGE_MEDIUM, plan.THROTTLE) else {}
    removes = names(action.old) if action.action not in (plan.ATTACH, plan.RESIZE) else {}  # a resize: neither
    if action.action in (plan.CHANGE_MEDIUM, plan.THROTTLE):
        creates["devices"] = removes["devices"] = []
    if action.action == plan.THROTTLE:  # only what the change adds or takes away
        creates, removes = ({k: [n for n in creates[k] if n not in removes[k]] for k in creates},
                            {k: [n for n in removes[k] if n not in creates[k]] for k in removes})
    return runtime.Pending(action.action, action.id, creates, removes, action.record, action.old)


class Applier:
    def __init__(self, qmp, layout: runtime.GuestLayout, unplug_timeout: float):
        self.qmp = qmp
        self.layout = layout
        self.unplug_timeout = unplug_timeout
        # Journal entries that must outlive the task: actions whose undo failed.
        self.unfinished = []
        self.warnings = []
        self.still_unplugging = set()

    # -- commands -----------------------------------------------------------------------------
    def _send(self, command: dict):
        return self.qmp.execute(command["execute"], command["arguments"])

    def _send_tolerant(self, command: dict) -> None:
        """Send a clean-up command; what is already gone (or, for a re-sent object-add, already
        there) is fine."""
        try:
            self._send(command)
        except QemuError as exc:
            done = _GONE + ((_DUPLICATE,) if command["execute"] == "object-add" else ())
            if not any(text in exc.desc for text in done):
                raise

    def _release(self, record: dict) -> None:
        """Delete what a removed device left, top-down."""
        for command in plan.release_commands(record):
            self._send_tolerant(command)

    def _undo(self, commands: list) -> list:
        """Roll back, last first; returns the failures (a failing undo must not hide the cause)."""
        failures = []
        for command in reversed([c for c in commands if c]):
            try:
                self._send_tolerant(command)
            except QemuError as exc:
                failures.append(str(exc))
        return failures

    # -- actions ------------------------------------------------------------------------------
    def apply(self, actions: list) -> None:
        for action in actions:
            if action.action == RECOVER:
                self.recover(action)
        for action in actions:
            if action.action == plan.FINISH_UNPLUG or (action.action == plan.PURGE and not action.id):
                self._release(action.old)
                if action.id:
                    self.layout.drop(action.id)
        detaches = [a for a in actions if a.action == plan.DETACH or (a.action == plan.PURGE and a.id)]
        if detaches:
            self.detach(detaches)
        for action in actions:
            if action.action == plan.CHANGE_MEDIUM:
                self.change_medium(action)
            elif action.action == plan.RESIZE:
                self.resize(action)
            elif action.action in (plan.GROUP_ADD, plan.GROUP_SET):
                self._send_all(action)
                plan.put_group(self.layout, action.record)
            elif action.action == plan.GROUP_DEL:
                self._delete_group(action)
            elif action.action == plan.THROTTLE:
                self.throttle(action)
            elif action.action == plan.ATTACH:
                if action.id in self.still_unplugging:
                    self.warnings.append("%s (%s) is not attached yet: QEMU still holds a device of that id "
                                         "whose unplug the guest has not finished; a later run attaches it"
                                         % (action.label, action.id))
                    continue
                self.attach(action)

    def recover(self, action) -> None:
        try:
            self._settle(action)
        except QemuError as exc:
            self.unfinished.append(journal_entry(action))
            raise QemuError("finishing what a killed run left of %s (%s) failed: %s; the next run tries again"
                            % (action.label, action.id, exc), exc.error_class, exc.desc, exc.command) from None

    def _settle(self, action) -> None:
        """Send a recovery action's commands and keep the record it decided on."""
        if action.kind == plan.GROUP_KIND and action.old and not action.record:
            return self._delete_group(action)
        for command in action.commands:
            self._send_tolerant(command)
        if action.kind == plan.GROUP_KIND:
            plan.put_group(self.layout, action.record)
        elif action.record:
            self.layout.put(action.record)
        elif action.id:
            self.layout.drop(action.id)

    def _send_all(self, action) -> None:
        try:
            for command in action.commands:
                self._send(command)
        except QemuError as exc:
            raise QemuError("%s of %s failed: %s" % (action.action, action.label, exc),
                            exc.error_class, exc.desc, exc.command) from None

    def _delete_group(self, action) -> None:
        """A shared group goes after its last throttle node; one a device still being unplugged
        holds stays recorded, and a later run deletes it."""
        try:
            self._send_tolerant(action.commands[0])
        except QemuError as exc:
            if not any(text in exc.desc for text in _IN_USE):
                raise
            self.warnings.append("%s (%s) is still used by a throttle node; a later run deletes it"
                                 % (action.label, action.id))
            return
        plan.drop_group(self.layout, action.id)

    def throttle(self, action) -> None:
        """Change a disk's throttling; a failure is settled at once by the rule a killed run's
        is settled by (recovery.recover), from what QEMU has then."""
        from ansible_collections.blocklayer.qemu.plugins.module_utils import recovery, verify
        try:
            for command in action.commands:
                self._send(command)
        except QemuError as exc:
            entry = journal_entry(action)
            outcome = "what it did was settled"
            try:
                live = verify.Live.from_answers(*[self.qmp.execute(q, a) for q, a in verify.QUERIES])
                self._settle(recovery.recover([entry], set(live.types), live.roots, live.nodes)[0])
            except QemuError as again:
                self.unfinished.append(entry)
                outcome = "settling it failed too (%s): the next run settles it" % again
            raise QemuError("changing the throttling of %s (%s) failed, and %s: %s"
                            % (action.label, action.id, outcome, exc), exc.error_class, exc.desc, exc.command) from None
        self.layout.put(action.record)

    def attach(self, action) -> None:
        undo = []
        try:
            for command in action.commands:
                self._send(command)
                undo.append(_undo_of(command))
        except QemuError as exc:
            failures = self._undo(undo)
            if failures:
                self.unfinished.append(journal_entry(action))
                outcome = ("undoing it failed too (%s): the next run removes what is left"
                           % "; ".join(failures))
            else:
                outcome = "what was added was removed"
            raise QemuError("attaching %s (%s) failed, and %s: %s" % (action.label, action.id, outcome, exc),
                            exc.error_class, exc.desc, exc.command) from None
        self.layout.put(action.record)

    def detach(self, actions: list) -> None:
        """device_del for every device, then one wait for all their events.

        The wait lasts while the guest makes progress: it ends ``unplug_timeout`` seconds after
        the last event (or after the requests, when none comes), not at a fixed total, so a
        guest releasing many devices one after the other is not cut short.
        """
        waiting = {a.id: a for a in actions}
        failed = []
        with self.qmp.listener(UNPLUG_EVENTS, lambda ev: ev["data"].get("device") in waiting) as events:
            for action in actions:
                try:
                    self.qmp.execute("device_del", {"id": action.id})
                except QemuError as exc:
                    if exc.error_class == "DeviceNotFound":
                        self._finish(waiting.pop(action.id))  # already gone
                    elif "already in the process of unplug" not in exc.desc:
                        waiting.pop(action.id)
                        failed.append("%s (%s): %s" % (action.label, action.id, exc))
            while waiting:
                event = self.qmp.wait_event(events, self.unplug_timeout)
                if event is None:
                    break
                action = waiting.pop(event["data"]["device"])
                if event["event"] == "DEVICE_DELETED":
                    self._finish(action)
                else:
                    failed.append("%s (%s): the guest refused to release it" % (action.label, action.id))
        for action in waiting.values():
            # Nodes stay: the device may still use them. A later run finishes the removal.
            self.still_unplugging.add(action.id)
            if action.action == plan.DETACH:
                self.layout.put(dict(action.old, state=runtime.STATE_UNPLUG_PENDING))
        if failed:
            raise QemuError("detaching failed: " + "; ".join(failed))

    def _finish(self, action) -> None:
        self._release(action.old)
        self.layout.drop(action.id)

    def change_medium(self, action) -> None:
        """Open the tray, swap the medium, close it; on failure put the old medium back."""
        undo = []
        try:
            for command in action.commands[:len(action.commands) - len(plan.release_commands(action.old))]:
                self._send_tray_aware(command)
                undo.append(_undo_of(command, action.old))
        except QemuError as exc:
            failures = self._undo(undo)
            if failures:
                self.unfinished.append(journal_entry(action))
                outcome = "putting the old medium back failed too (%s)" % "; ".join(failures)
            else:
                outcome = "the old medium is back"
            raise QemuError("changing the medium of %s (%s) failed; %s: %s"
                            % (action.label, action.id, outcome, exc), exc.error_class, exc.desc, exc.command) from None
        self._release(action.old)
        self.layout.put(action.record)

    def resize(self, action) -> None:
        """block_resize: one command, nothing to undo when it fails (QEMU left the size as it was)."""
        try:
            for command in action.commands:
                self._send(command)
        except QemuError as exc:
            raise QemuError("growing %s (%s) failed, its size is unchanged: %s" % (action.label, action.id, exc),
                            exc.error_class, exc.desc, exc.command) from None
        self.layout.put(action.record)

    def _send_tray_aware(self, command: dict):
        """A guest that touches an open tray makes Linux close it again (docs/design.md
        "Hot-plug and guests"): re-open it once and retry the insert."""
        try:
            return self._send(command)
        except QemuError as exc:
            if command["execute"] != "blockdev-insert-medium" or "Tray of the device is not open" not in exc.desc:
                raise
            self.qmp.execute("blockdev-open-tray", {"id": command["arguments"]["id"], "force": True})
            return self._send(command)


def _undo_of(command: dict, old=None) -> dict:
    """The command that takes ``command`` back."""
    name, args = command["execute"], command["arguments"]
    if name == "blockdev-add":
        return {"execute": "blockdev-del", "arguments": {"node-name": args["node-name"]}}
    if name == "netdev_add":
        return {"execute": "netdev_del", "arguments": {"id": args["id"]}}
    if name == "object-add":
        return {"execute": "object-del", "arguments": {"id": args["id"]}}
    if name == "device_add":
        return {"execute": "device_del", "arguments": {"id": args["id"]}}
    if name == "blockdev-open-tray":
        return {"execute": "blockdev-close-tray", "arguments": {"id": args["id"]}}
    if name == "blockdev-close-tray":
        return {"execute": "blockdev-open-tray", "arguments": {"id": args["id"], "force": True}}
    if name == "blockdev-remove-medium":
        return {"execute": "blockdev-insert-medium",
                "arguments": {"id": args["id"], "node-name": old["nodes"][-1]["node-name"]}}
    if name == "blockdev-insert-medium":
        return {"execute": "blockdev-remove-medium", "arguments": {"id": args["id"]}}
    if name == "block_resize":
        return None  # the image stays grown: the declaration asks for that size anyway
    raise ValueError("no undo for %s" % name)
