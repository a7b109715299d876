# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Applying a reconcile plan to a running QEMU over QMP (ARCHITECTURE §5).

Attach: nodes bottom-up, then device_add; a failure removes what that action added, top-down.
Detach: listeners before device_del; every device_del of the run is sent first and the events
awaited together; nodes are deleted only after DEVICE_DELETED. No event in time: the device is
recorded unplug-pending and its nodes are left alone. The runtime file is saved after every
action, so it always says what QEMU has.
"""

from __future__ import annotations

import time

from ansible_collections.blocklayer.qemu.plugins.module_utils import plan, runtime
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError

_GONE = ("Failed to find node", "not found")
UNPLUG_EVENTS = ("DEVICE_DELETED", "DEVICE_UNPLUG_GUEST_ERROR")


class Applier:
    def __init__(self, qmp, paths, data: dict, unplug_timeout: float):
        self.qmp = qmp
        self.paths = paths
        self.data = data
        self.unplug_timeout = unplug_timeout

    # -- runtime file -------------------------------------------------------------------------
    def _save(self) -> None:
        runtime.save(self.paths.runtime_file, self.data)

    def _put(self, record: dict) -> None:
        group = "controllers" if record["kind"] == "controller" else "devices"
        self.data[group] = [r for r in self.data[group] if r["id"] != record["id"]] + [record]
        self._save()

    def _drop(self, dev_id: str) -> None:
        self.data["devices"] = [r for r in self.data["devices"] if r["id"] != dev_id]
        self._save()

    # -- commands -----------------------------------------------------------------------------
    def _send(self, command: dict):
        return self.qmp.execute(command["execute"], command["arguments"])

    def _release(self, record: dict) -> None:
        """Delete what a removed device left, top-down; what is already gone is fine."""
        for command in plan.release_commands(record):
            try:
                self._send(command)
            except QemuError as exc:
                if not any(text in exc.desc for text in _GONE):
                    raise

    def _undo(self, commands: list) -> None:
        """Roll back, last first; a failing undo must not hide the error that caused it."""
        for command in reversed(commands):
            try:
                self._send(command)
            except QemuError:
                pass

    # -- actions ------------------------------------------------------------------------------
    def apply(self, actions: list) -> None:
        for action in actions:
            if action.action == plan.FINISH_UNPLUG:
                self._release(action.old)
                self._drop(action.id)
        detaches = [a for a in actions if a.action == plan.DETACH]
        if detaches:
            self.detach(detaches)
        for action in actions:
            if action.action == plan.CHANGE_MEDIUM:
                self.change_medium(action)
            elif action.action == plan.ATTACH:
                self.attach(action)

    def attach(self, action) -> None:
        undo = []
        try:
            for command in action.commands:
                self._send(command)
                undo.append(_undo_of(command))
        except QemuError as exc:
            self._undo(undo)
            raise QemuError("attaching %s (%s) failed, and what was added was removed: %s"
                            % (action.label, action.id, exc), exc.error_class, exc.desc, exc.command) from None
        self._put(action.record)

    def detach(self, actions: list) -> None:
        """device_del for every device, then one wait for all their events."""
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
            deadline = time.monotonic() + self.unplug_timeout
            while waiting:
                event = self.qmp.wait_event(events, deadline - time.monotonic())
                if event is None:
                    break
                action = waiting.pop(event["data"]["device"])
                if event["event"] == "DEVICE_DELETED":
                    self._finish(action)
                else:
                    failed.append("%s (%s): the guest refused to release it" % (action.label, action.id))
        for action in waiting.values():
            # Nodes stay: the device may still use them. A later run finishes the removal.
            self._put(dict(action.old, state=runtime.STATE_UNPLUG_PENDING))
        if failed:
            raise QemuError("detaching failed: " + "; ".join(failed))

    def _finish(self, action) -> None:
        self._release(action.old)
        self._drop(action.id)

    def change_medium(self, action) -> None:
        """Open the tray, swap the medium, close it; on failure put the old medium back."""
        undo = []
        try:
            for command in action.commands[:len(action.commands) - len(plan.release_commands(action.old))]:
                self._send_tray_aware(command)
                undo.append(_undo_of(command, action.old))
        except QemuError as exc:
            self._undo(undo)
            raise QemuError("changing the medium of %s (%s) failed; the old medium is back: %s"
                            % (action.label, action.id, exc), exc.error_class, exc.desc, exc.command) from None
        self._release(action.old)
        self._put(action.record)

    def _send_tray_aware(self, command: dict):
        """A guest that touches an open tray makes Linux close it again (tiny-guest facts):
        re-open it once and retry the insert."""
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
    raise ValueError("no undo for %s" % name)
