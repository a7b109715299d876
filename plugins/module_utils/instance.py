# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Converging one instance to running, stopped or absent (the shell around the pure core).

Decisions come from the pure modules (spec, layout, cmdline, verify, plan); this file only
reads the host, starts and stops QEMU, talks QMP and writes the runtime file, in that order:
validate everything, then act, and on any failure leave nothing half-done behind.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from ansible_collections.blocklayer.qemu.plugins.module_utils import (
    cmdline, host, hotplug, layout, plan, probe, process, runtime, verify)
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError, QemuError
from ansible_collections.blocklayer.qemu.plugins.module_utils.qmp import QmpSession
from ansible_collections.blocklayer.qemu.plugins.module_utils.runtime import RuntimePaths


@dataclass(frozen=True)
class Timeouts:
    start: float = 30.0
    shutdown: float = 60.0
    qmp_connect: float = 5.0
    qmp_command: float = 30.0


def resolve_binary(binary: str) -> str:
    found = shutil.which(binary)
    if not found:
        raise ConfigError("qemu_binary: %s was not found or is not executable; install "
                          "qemu-system-x86 or give the full path of a QEMU binary" % binary)
    return found


def resolve_accel(accel: str, binary: str, env: dict) -> str:
    """``auto``: KVM when the host offers it and a guest really runs under it, else TCG."""
    if accel == "auto":
        return "kvm" if host.kvm_usable() and probe.accel_works(binary, "kvm", env) else "tcg"
    return accel


class Instance:
    """One instance, identified by its state directory, for one module run."""

    def __init__(self, name: str, uuid: str, state_dir: str, check_mode: bool,
                 timeouts: Timeouts = Timeouts(), unplug_timeout: float = 5.0):
        self.name = name
        self.uuid = uuid
        self.paths = RuntimePaths(state_dir)
        self.check_mode = check_mode
        self.timeouts = timeouts
        self.actions = []
        self.qmp_commands = []
        self.warnings = []
        self.unplug_timeout = unplug_timeout
        self.before = runtime.load(self.paths.runtime_file)
        self.pid = process.read_pid(self.paths.pidfile)
        owner = self.before["uuid"] if self.before else uuid
        if not process.is_instance_process(self.pid, owner):
            self.pid = None

    # -- results ------------------------------------------------------------------------------
    def result(self, after) -> dict:
        data = after or {}
        return {
            "changed": bool(self.actions),
            "actions": self.actions,
            "qmp_commands": self.qmp_commands,
            "diff": {"before": self.before or {}, "after": data},
            "state": "running" if after else "stopped",
            "pid": self.pid if after else None,
            "qmp_socket": self.paths.qmp_socket if after else None,
            "runtime_file": self.paths.runtime_file if after else None,
            "devices": {d["id"]: d["hvinfo"] for d in data.get("controllers", []) + data.get("devices", [])},
            "argv": data.get("argv", []),
            "accel": data.get("accel"),
            "qemu_version": data.get("qemu", {}).get("version"),
            "unplug_pending": sorted(d["id"] for d in data.get("devices", [])
                                     if d.get("state") == runtime.STATE_UNPLUG_PENDING),
            "warnings": self.warnings,
        }

    def _session(self) -> QmpSession:
        return QmpSession(self.paths.qmp_socket, self.timeouts.qmp_connect, self.timeouts.qmp_command)

    # -- running ------------------------------------------------------------------------------
    def ensure_running(self, spec, allow_restart: bool, firmware_dirs=None, module_dir=None) -> dict:
        declaration = plan.normalise(spec.to_dict())
        if self.pid and not self.before:
            raise ConfigError(
                "a QEMU for instance %s runs (pid %d) but %s is missing, so its devices are "
                "unknown; stop that QEMU yourself, then run again" % (self.name, self.pid, self.paths.runtime_file))
        if self.before and not self.pid:
            self.actions.append({"action": "forget", "reason": "the recorded QEMU is not running"})
            if not self.check_mode:
                self._forget()
        if not (self.before and self.pid):
            return self.result(self._start(spec, declaration, firmware_dirs, module_dir))
        return self.result(self._reconcile(spec, declaration, allow_restart, firmware_dirs, module_dir))

    def _reconcile(self, spec, declaration, allow_restart, firmware_dirs, module_dir) -> dict:
        """Make the running QEMU match the declaration live, or restart it when allowed.

        A no-op costs the three verification queries, whatever the number of devices.
        """
        facts = {p: host.inspect_path(p) for p in layout.declared_paths(spec)}
        data = self.before
        if self.check_mode:
            actions = plan.reconcile(data, spec, facts)
            self._refuse_or_restart(actions, allow_restart)
            if any(a.action == plan.RESTART for a in actions):
                self._stop(reason="restart required")
                return self._start(spec, declaration, firmware_dirs, module_dir)
            self._report(actions)
            self.qmp_commands = [c for a in actions for c in a.commands]
            return plan.expected_after(data, actions, declaration) if actions else data
        with self._session() as qmp:
            try:
                block, pci, qom = [qmp.execute(q, a) for q, a in verify.QUERIES]
                self._warn_drift(data, block, pci, qom)
                live_slots = [d["slot"] for bus in pci if bus.get("bus") == 0 for d in bus.get("devices", [])]
                actions = plan.reconcile(data, spec, facts, live_slots, set(verify.types_by_id(qom)))
                restart = self._refuse_or_restart(actions, allow_restart)
                if not restart and actions:
                    self._report(actions)
                    applier = hotplug.Applier(qmp, self.paths, dict(data), self.unplug_timeout)
                    try:
                        applier.apply(actions)
                    finally:
                        data = applier.data
                    data["declaration"] = declaration
                    runtime.save(self.paths.runtime_file, data)
                    self._warn_drift(data, *[qmp.execute(q, a) for q, a in verify.QUERIES])
            finally:
                self.qmp_commands += qmp.sent
        if restart:
            self._stop(reason="restart required")
            return self._start(spec, declaration, firmware_dirs, module_dir)
        return data

    def _refuse_or_restart(self, actions, allow_restart) -> bool:
        """True when the plan needs a new QEMU and the play allows one; fails otherwise."""
        reasons = [a.reason if a.kind == "controller" else "%s: %s" % (a.label, a.reason)
                   for a in actions if a.action == plan.RESTART]
        if not reasons:
            return False
        if not allow_restart:
            raise ConfigError(
                "instance %s cannot reach its declaration without a restart: %s. Set allow_restart: true "
                "to restart it with the new declaration, or stop it first" % (self.name, "; ".join(reasons)))
        self.actions += [{"action": plan.RESTART, "reason": r} for r in reasons]
        return True

    def _report(self, actions) -> None:
        self.actions += [a.report() for a in actions]

    def _warn_drift(self, data, block, pci, qom) -> None:
        drift = verify.problems([d for d in data["controllers"] + data["devices"]
                                 if d.get("state") != runtime.STATE_UNPLUG_PENDING], block, pci, qom)
        if drift:
            self.warnings.append("instance %s differs from its runtime file: %s" % (self.name, "; ".join(drift)))

    def _start(self, spec, declaration, firmware_dirs, module_dir) -> dict:
        facts = {p: host.inspect_path(p) for p in layout.declared_paths(spec)}
        placed = layout.layout_instance(spec, facts)
        binary = resolve_binary(spec.qemu_binary)
        firmware_dirs, module_dir = host.qemu_dirs(binary, firmware_dirs, module_dir)
        env = dict(os.environ)
        if module_dir:
            env["QEMU_MODULE_DIR"] = module_dir
        accel = resolve_accel(spec.machine.accel, binary, env)
        argv = cmdline.build_argv(spec, placed, accel, self.paths, firmware_dirs)
        argv[0] = binary
        data = {
            "version": runtime.FORMAT_VERSION,
            "name": spec.name,
            "uuid": spec.uuid,
            "qemu": {"binary": binary, "version": None, "firmware_dirs": firmware_dirs, "module_dir": module_dir},
            "argv": argv,
            "accel": accel,
            "declaration": declaration,
            "controllers": [d.to_dict() for d in placed.controllers],
            "devices": [dict(d.to_dict(), state=runtime.STATE_ATTACHED, origin=runtime.ORIGIN_BLOCKDEV)
                        for d in placed.devices],
        }
        self.actions.append({"action": "start", "devices": [d.id for d in placed.all_devices()]})
        if self.check_mode:
            return plan.normalise(data)

        runtime.ensure_state_dir(self.paths.state_dir)
        self._remove_leftovers()
        runtime.save(self.paths.runtime_file, data)
        try:
            process.start(argv, env, self.timeouts.start)
            self.pid = process.read_pid(self.paths.pidfile)
            with self._session() as qmp:
                try:
                    answers = [qmp.execute(q, a) for q, a in verify.QUERIES]
                    missing = verify.problems(data["controllers"] + data["devices"], *answers)
                    if missing:
                        raise QemuError("QEMU started without the declared devices: %s" % "; ".join(missing))
                    qmp.execute("cont")
                    data["qemu"]["version"] = qmp.version
                finally:
                    self.qmp_commands += qmp.sent
            runtime.save(self.paths.runtime_file, data)
        except BaseException:
            self._kill(spec.uuid)
            self._forget()
            raise
        return plan.normalise(data)

    # -- stopped / absent ---------------------------------------------------------------------
    def ensure_stopped(self) -> dict:
        if self.pid:
            self._stop(reason="state stopped")
        elif self.before:
            self.actions.append({"action": "forget", "reason": "the recorded QEMU is not running"})
            if not self.check_mode:
                self._forget()
        return self.result(None)

    def ensure_absent(self) -> dict:
        self.ensure_stopped()
        if os.path.isdir(self.paths.state_dir):
            self.actions.append({"action": "remove", "path": self.paths.state_dir})
            if not self.check_mode:
                self._remove_state_dir()
        return self.result(None)

    def _stop(self, reason: str) -> None:
        """Ask the guest to power down, wait for SHUTDOWN (bounded), then quit QEMU."""
        how = "quit"
        if not self.check_mode:
            try:
                with self._session() as qmp:
                    try:
                        if self.timeouts.shutdown > 0:
                            with qmp.listener("SHUTDOWN") as shutdown:
                                qmp.execute("system_powerdown")
                                if qmp.wait_event(shutdown, self.timeouts.shutdown):
                                    how = "powerdown"
                        if how == "quit":
                            try:
                                qmp.execute("quit")
                            except QemuError:
                                pass  # QEMU may close the socket before it replies
                    finally:
                        self.qmp_commands += qmp.sent
            except QemuError as exc:
                how = "kill"
                self.warnings.append("QMP unusable while stopping %s (%s); killed QEMU" % (self.name, exc))
            if not process.wait_exit(self.pid, self.timeouts.qmp_command):
                how = "kill"
            self._kill(self.before["uuid"] if self.before else self.uuid)
            self._forget()
        self.actions.append({"action": "stop", "how": how, "reason": reason})
        self.pid = None

    # -- files --------------------------------------------------------------------------------
    def _kill(self, uuid: str) -> None:
        """End the QEMU of this instance, if the pidfile names one (never another process)."""
        pid = self.pid or process.read_pid(self.paths.pidfile)
        if pid and process.is_instance_process(pid, uuid):
            process.kill(pid)
        self.pid = None

    def _forget(self) -> None:
        """Remove the runtime file and what QEMU left; never anything else."""
        runtime.remove(self.paths.runtime_file)
        self._remove_leftovers()

    def _remove_leftovers(self) -> None:
        for path in (self.paths.pidfile, self.paths.qmp_socket, self.paths.agent_socket):
            if os.path.lexists(path):
                os.unlink(path)

    def _remove_state_dir(self) -> None:
        for path in self.paths.owned_files():
            if os.path.lexists(path):
                os.unlink(path)
        left = os.listdir(self.paths.state_dir)
        if left:
            self.warnings.append("kept %s: it holds files the collection did not create (%s)"
                                 % (self.paths.state_dir, ", ".join(sorted(left)[:5])))
        else:
            os.rmdir(self.paths.state_dir)
