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


from ansible_collections.blocklayer.qemu.plugins.module_utils import engine, plan, runtime
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError, is_gone
from ansible_collections.blocklayer.qemu.plugins.module_utils.recovery import RECOVER

# object-del of a throttle group a node still uses: QEMU 7.2-10.0 say "is in use"
# (user_creatable_del), 11.1 "Cannot delete throttle group ... with active references".
_IN_USE = ("is in use", "with active references")
# object-add of an id that exists (object_property_try_add()): recovery re-adds groups.
_DUPLICATE = "attempt to add duplicate property"
UNPLUG_EVENTS = ("DEVICE_DELETED", "DEVICE_UNPLUG_GUEST_ERROR")


def journal_entry(action) -> runtime.Pending:
    """What an action creates and removes, by name, from its steps: recorded before its first
    command (docs/faults.md)."""
    return engine.journal_entry(action.action, action.id, action.steps, action.record, action.old)


# How a failed action is told: what was tried, and what its rollback left (engine.rollback).
_FAILED = {
    plan.ATTACH: ("attaching %s (%s) failed, and %s: %s", "what was added was removed",
                  "undoing it failed too (%s): the next run removes what is left"),
    plan.CHANGE_MEDIUM: ("changing the medium of %s (%s) failed; %s: %s", "the old medium is back",
                         "putting the old medium back failed too (%s)"),
    # block_resize: nothing to undo, QEMU left the size as it was.
    plan.RESIZE: ("growing %s (%s) failed, %s: %s", "its size is unchanged", "%s"),
}
_FAILED_ANY = ("%s of %%s (%%s) failed, and %%s: %%s", "what it did was undone",
               "undoing it failed too (%s): the next run settles what is left")


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
            if not (is_gone(exc) or (command["execute"] == "object-add" and _DUPLICATE in exc.desc)):
                raise

    def _cleanup(self, action) -> None:
        """The action's clean-up steps: what a removed device or medium left, top-down."""
        for step in action.steps:
            if step.cleanup:
                self._send_tolerant(step.command)

    def _undo(self, commands: list) -> list:
        """Send a rollback's commands; returns the failures (a failing undo must not hide the cause)."""
        failures = []
        for command in commands:
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
                self.run(action)  # clean-up steps only
        detaches = [a for a in actions if a.action == plan.DETACH or (a.action == plan.PURGE and a.id)]
        if detaches:
            self.detach(detaches)
        for action in actions:
            if action.action not in _DONE_ABOVE:
                # Every kind runs its steps (Applier.run) unless QEMU makes it special.
                _SPECIAL.get(action.action, Applier.run)(self, action)

    def recover(self, action) -> None:
        try:
            self._settle(action)
        except QemuError as exc:
            self.unfinished.append(action.entry)  # the entry as it was: the next run settles it again
            raise QemuError("finishing what a killed run left of %s (%s) failed: %s; the next run tries again"
                            % (action.label, action.id, exc), exc.error_class, exc.desc, exc.command) from None

    def _settle(self, action) -> None:
        """Send a recovery action's commands and keep the record it decided on."""
        if action.kind == plan.GROUP_KIND and action.old and not action.record:
            return self._delete_group(action)
        for step in action.steps:
            self._send_tolerant(step.command)
        self._keep(action)

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
        self._keep(action)

    def throttle(self, action) -> None:
        """Change a disk's throttling; a failure is settled at once by the rule a killed run's
        is settled by (recovery.recover), from what QEMU has then."""
        from ansible_collections.blocklayer.qemu.plugins.module_utils import queries, recovery
        try:
            for command in action.commands:
                self._send(command)
        except QemuError as exc:
            entry = journal_entry(action)
            outcome = "what it did was settled"
            try:
                live = queries.live(self.qmp)
                self._settle(recovery.recover([entry], set(live.types), live.roots, live.nodes)[0])
            except QemuError as again:
                self.unfinished.append(entry)
                outcome = "settling it failed too (%s): the next run settles it" % again
            raise QemuError("changing the throttling of %s (%s) failed, and %s: %s"
                            % (action.label, action.id, outcome, exc), exc.error_class, exc.desc, exc.command) from None
        self.layout.put(action.record)

    def run(self, action) -> None:
        """The action's steps; a failing one rolls back what was done (engine.rollback). Its
        clean-up follows, and the layout keeps the record the action leaves."""
        self._run_or_roll_back(action)
        self._cleanup(action)
        self._keep(action)

    def _keep(self, action) -> None:
        """The layout holds the record the action leaves (None: the device or group is gone)."""
        if action.kind == plan.GROUP_KIND:
            if action.record:
                plan.put_group(self.layout, action.record)
            else:
                plan.drop_group(self.layout, action.id)
        elif action.record:
            self.layout.put(action.record)
        elif action.id and action.old is not None:
            self.layout.drop(action.id)

    def attach(self, action) -> None:
        if action.id in self.still_unplugging:
            self.warnings.append("%s (%s) is not attached yet: QEMU still holds a device of that id whose unplug the "
                                 "guest has not finished; a later run attaches it" % (action.label, action.id))
            return
        self.run(action)

    def _run_or_roll_back(self, action) -> None:
        """The action's steps up to its clean-up; a failing one rolls back what was done
        (engine.rollback), and the error says whether that worked."""
        done = []
        try:
            for step in action.steps:
                if not step.cleanup:
                    self._send_tray_aware(step.command)
                    done.append(step)
        except QemuError as exc:
            failures = self._undo(engine.rollback(done))
            text, undone, not_undone = _FAILED.get(action.action) or _FAILED_ANY
            if action.action not in _FAILED:
                text %= action.action
            if failures:
                self.unfinished.append(journal_entry(action))
                outcome = not_undone % "; ".join(failures)
            else:
                outcome = undone
            raise QemuError(text % (action.label, action.id, outcome, exc),
                            exc.error_class, exc.desc, exc.command) from None

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
        """The guest let go: what the device leaves goes, and so does its record."""
        self._cleanup(action)
        self._keep(action)

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


# Kinds applied before the others (Applier.apply): settling a killed run's, releasing what an
# unplug or a purge left, the batched detaches.
_DONE_ABOVE = (RECOVER, plan.FINISH_UNPLUG, plan.PURGE, plan.DETACH)
# Kinds QEMU makes special; every other kind is Applier.run.
_SPECIAL = {
    plan.ATTACH: Applier.attach,  # not while a device of that id is still being unplugged
    plan.THROTTLE: Applier.throttle,  # a failure is settled from what QEMU has, as recovery does
    plan.GROUP_DEL: Applier._delete_group,  # a group a node still uses stays recorded
}
