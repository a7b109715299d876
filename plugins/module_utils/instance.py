# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Converging one instance to running, stopped or absent (the shell around the pure core).

Decisions come from the pure modules (spec, layout, cmdline, verify, plan, recovery); this
file reads the host, starts and stops QEMU, talks QMP and writes the runtime file, in that
order: validate everything, then act, and leave a runtime file that says what QEMU has, even
when the run is killed half-way (docs/faults.md).
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, replace

# cmdline, probe, hotplug and recovery are imported where they are used: a no-op run (the
# common case) starts nothing and changes nothing, and need not load them (docs/design.md "Speed").
from ansible_collections.blocklayer.qemu.plugins.module_utils import (
    args, autostart, backup, graph, host, info, layout, plan, process, queries, runtime, spec as spec_mod, verify)
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError, QemuError
from ansible_collections.blocklayer.qemu.plugins.module_utils.qmp import QmpSession, explain
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Value
from ansible_collections.blocklayer.qemu.plugins.module_utils.runtime import RuntimePaths


@dataclass(init=False, repr=False, eq=False)
class Timeouts(Value):
    """The waits of one task; the defaults are the modules' (args.py)."""

    start: float = args.START_TIMEOUT["default"]
    shutdown: float = args.SHUTDOWN_TIMEOUT["default"]
    qmp_connect: float = args.QMP_TIMEOUT["default"]
    qmp_command: float = args.QMP_TIMEOUT["default"]


def resolve_binary(binary: str) -> str:
    found = shutil.which(binary)
    if not found:
        raise ConfigError("qemu_binary: %s was not found or is not executable; install "
                          "qemu-system-x86 or give the full path of a QEMU binary" % binary)
    return found


def resolve_accel(accel: str, binary: str, env: dict) -> str:
    """``auto``: KVM when the host offers it and a guest really runs under it, else TCG."""
    if accel == "auto":
        from ansible_collections.blocklayer.qemu.plugins.module_utils import probe  # only at start
        return "kvm" if host.kvm_usable() and probe.accel_works(binary, "kvm", env) else "tcg"
    return accel


@dataclass(init=False, repr=False, eq=False)
class StartPlan(Value):
    """Everything a start needs, computed (and so validated) before anything is changed."""

    placed: layout.Layout
    env: dict
    runtime: runtime.Runtime


class Instance:
    """One instance, identified by its state directory, for one module run.

    ``state`` is the checked state directory (statedir.StateDir), or None when it does not
    exist; every file of the instance is read and written through it.
    """

    def __init__(self, name: str, uuid: str, state, state_dir: str, check_mode: bool,
                 timeouts: Timeouts = Timeouts(), unplug_timeout: float = args.UNPLUG_TIMEOUT["default"]):
        self.name = name
        self.state = state
        self.paths = RuntimePaths(state_dir)
        self.check_mode = check_mode
        self.timeouts = timeouts
        self.unplug_timeout = unplug_timeout
        self.actions = []
        self.qmp_commands = []
        self.warnings = []
        self.changed = False  # something on the host changed, even if the run then failed
        self.owner = plan.OWNER_INSTANCE
        self.live_options = {}  # plan.reconcile's persistent and allow_boot_unplug (ensure_running)
        self.damaged = None  # why the runtime file cannot be used, when it cannot
        self.unreadable = False  # not even a file: a stop leaves it where it is
        self.rt = None
        try:
            text = state.read(runtime.RUNTIME_FILE) if state else None
        except ConfigError as exc:
            text, self.damaged, self.unreadable = None, exc, True
        if text is not None:
            try:
                self.rt = runtime.loads(text, self.paths.runtime_file)
            except ConfigError as exc:
                self.damaged = exc
        self.uuid = self.rt.uuid if self.rt else uuid
        self.before = self.rt
        # The diff's before, read now: the task changes the layout in place.
        self.before_view = info.summary(self.before.layout) if self.before else {}
        if self.rt and self.rt.status in runtime.GONE_STATUSES:
            self.rt = None  # no QEMU to manage; the next start reads the chains from ``before``
        self.pid, self.trusted = self._find_qemu()

    # -- liveness -----------------------------------------------------------------------------
    def _find_qemu(self):
        """The live QEMU of this state dir, found by its command line (it serves our QMP socket),
        and whether a pidfile or the runtime file names it (a trustworthy record)."""
        if self._adopted_socket():
            return self._find_adopted()
        pids = process.find_qemus(self.paths.qmp_socket)
        if len(pids) > 1:
            pids = self._after_launch(pids)
        if len(pids) > 1:
            raise ConfigError("instance %s: %d QEMU processes serve %s (pids %s); stop all but one "
                              "(kill PID), then run again" % (self.name, len(pids), self.paths.qmp_socket,
                                                              ", ".join(map(str, pids))))
        if not pids:
            return None, False
        pid = pids[0]
        named = {process.parse_pid(self.state.read(runtime.PIDFILE)) if self.state else None}
        if self.rt:
            named.add(self.rt.host.pid)
            self._check_uuid(pid)
        return pid, pid in named

    def _after_launch(self, pids: list) -> list:
        """A start seen half-way (a run killed while QEMU started) shows the -daemonize launcher
        next to its QEMU: one QEMU, whose launcher exits once it is ready or gone."""
        found = process.launched_now(pids)
        if not found:
            return pids
        qemu, launchers = found
        for pid in launchers:
            if not process.wait_exit(pid, self.timeouts.start):
                raise ConfigError("instance %s: QEMU pid %d is still starting after start_timeout (its launcher, "
                                  "pid %d, waits for it); run again once it has started, or run state: stopped "
                                  "to end it" % (self.name, qemu, pid))
        return process.find_qemus(self.paths.qmp_socket)

    def _check_uuid(self, pid: int) -> None:
        """The runtime file must describe the QEMU that serves its socket: the -uuid it was
        started with is the layout's (cmdline.build_argv)."""
        argv = process.cmdline_of(pid)
        given = argv[argv.index("-uuid") + 1] if "-uuid" in argv[:-1] else None
        if given is not None and given != self.rt.layout.uuid and not self.damaged:
            self.damaged = ConfigError(
                "runtime file %s does not describe its QEMU: layout.uuid is %s, but QEMU pid %d runs with -uuid %s; "
                "state: stopped still stops that QEMU, or move the file away and stop it yourself"
                % (self.paths.runtime_file, self.rt.layout.uuid, pid, given))
            self.rt = None

    def require_trusted(self) -> None:
        if self.damaged:
            raise ConfigError("%s; a QEMU of instance %s runs as pid %d: run state: stopped to stop it, then "
                              "start afresh" % (self.damaged, self.name, self.pid))
        if not self.rt:
            raise ConfigError("a QEMU for instance %s runs (pid %d) but %s is missing, so its devices are "
                              "unknown; run state: stopped to stop it, then run again"
                              % (self.name, self.pid, self.paths.runtime_file))
        if not self.trusted:
            raise ConfigError("a QEMU serving instance %s's QMP socket runs as pid %d, but neither its pidfile "
                              "nor the runtime file names that pid, so it may not be the QEMU the file "
                              "describes; run state: stopped to stop it, then run again" % (self.name, self.pid))

    # -- an adopted QEMU serves its own QMP socket (docs/migration.md "Adoption") -------------
    def _adopted_socket(self):
        """The QMP socket recorded for an adopted QEMU, or None for one the collection started."""
        return self.rt.host.qmp_socket if self.rt else None

    def qmp_socket(self) -> str:
        return self._adopted_socket() or self.paths.qmp_socket

    def _find_adopted(self):
        """An adopted QEMU's command line serves no socket of this state dir: it is the recorded
        pid while that pid runs the recorded command line."""
        pid = self.rt.host.pid
        if process.is_adopted_process(pid, self.rt.host.argv):
            return pid, True
        return None, False

    def _is_our_qemu(self, pid: int) -> bool:
        if self._adopted_socket():
            return process.is_adopted_process(pid, self.rt.host.argv)
        return process.is_instance_process(pid, self.paths.qmp_socket)

    def adopt(self, spec, options: dict) -> None:
        """Take over a running QEMU the collection did not start, when the instance has no
        runtime file: read its layout over QMP (read-only), bind it to the declaration and write
        the runtime file; from then on it is managed like any other instance."""
        if self.before or self.damaged or self.pid:
            return  # adopted already, or the collection's own: ``adopt`` is for the first run only
        from ansible_collections.blocklayer.qemu.plugins.module_utils import adopt  # adoption only
        sock = options.get("qmp_socket")
        if not sock:
            raise ConfigError("adopt.qmp_socket is required: the QMP unix socket of the QEMU to take over "
                              "(its -qmp unix:PATH,server=on); leave adopt out to start a new QEMU")
        try:
            pid = process.peer_pid(sock)
            with QmpSession(sock, self.timeouts.qmp_connect, self.timeouts.qmp_command) as qmp:
                try:
                    answers, version = queries.adoption(qmp), qmp.version
                finally:
                    self.qmp_commands += qmp.sent
        except QemuError as exc:
            raise ConfigError("adopt.qmp_socket: %s; start that QEMU (or fix the path), or leave adopt out to "
                              "start a new QEMU" % exc) from None
        found = adopt.found_layout(answers)
        devices = adopt.bind(found, spec, options.get("names") or {}, self._ganeti_records(options))
        argv = process.cmdline_of(pid)
        rt = runtime.Runtime(
            layout=runtime.GuestLayout(name=spec.name, uuid=spec.uuid, machine_type=spec.machine.machine_type,
                                       declaration=plan.normalise(spec.to_dict()), controllers=found.controllers,
                                       devices=devices, machine=found.machine, cpu=adopt.cpu_of(argv)),
            host=runtime.HostBinding(binary=process.exe_of(pid) or argv[0], version=version,
                                     firmware_dirs=_firmware_dirs(argv), accel=found.accel, argv=argv, pid=pid,
                                     qmp_socket=sock))
        self.actions.append({"action": "adopt", "pid": pid, "qmp_socket": sock,
                             "devices": [d["id"] for d in found.controllers + devices]})
        if found.ignored:
            self.warnings.append("adopted QEMU pid %d has devices the collection does not manage: %s"
                                 % (pid, ", ".join(found.ignored)))
        if not self.check_mode:
            self.state.mark(spec.name, spec.uuid)
            self.save(rt)
            self.changed = True
        self.rt = self.before = rt
        self.uuid = spec.uuid
        self.pid, self.trusted = pid, True

    @staticmethod
    def _ganeti_records(options: dict) -> list:
        path = options.get("ganeti_runtime")
        if not path:
            return []
        from ansible_collections.blocklayer.qemu.plugins.module_utils import ganeti  # Ganeti imports only
        try:
            with open(path, "rb") as handle:
                text = handle.read()
        except OSError as exc:
            raise ConfigError("adopt.ganeti_runtime: cannot read %s (%s)" % (path, exc.strerror)) from None
        return ganeti.loads(text, path).records

    # -- results ------------------------------------------------------------------------------
    def result(self, rt) -> dict:
        lay = rt.layout if rt else None
        records = lay.records() if lay else []
        return {
            "changed": bool(self.actions),
            "actions": self.actions,
            "qmp_commands": self.qmp_commands,
            "diff": {"before": self.before_view, "after": info.summary(lay)},
            "state": "running" if rt else "stopped",
            "pid": self.pid if rt else None,
            "qmp_socket": self.qmp_socket() if rt else None,
            "runtime_file": self.paths.runtime_file if rt else None,
            "devices": {d["id"]: d["hvinfo"] for d in records},
            "argv": rt.host.argv if rt else [],
            "accel": rt.host.accel if rt else None,
            "qemu_version": rt.host.version if rt else None,
            "unplug_pending": sorted(d["id"] for d in records if d.get("state") == runtime.STATE_UNPLUG_PENDING),
            "warnings": self.warnings,
        }

    def session(self) -> QmpSession:
        return QmpSession(self.qmp_socket(), self.timeouts.qmp_connect, self.timeouts.qmp_command)

    def save(self, rt) -> None:
        self.state.write_atomic(runtime.RUNTIME_FILE, runtime.dumps(rt))

    # -- running ------------------------------------------------------------------------------
    def ensure_running(self, spec, allow_restart: bool, firmware_dirs=None, module_dir=None,
                       owner: str = plan.OWNER_INSTANCE, persistent: bool = True,
                       allow_boot_unplug: bool = False) -> dict:
        self.owner = owner
        self.live_options = {"persistent": persistent, "allow_boot_unplug": allow_boot_unplug}
        self.refuse_migration_states()
        if self.pid:
            self.require_trusted()
            recorded, self.rt.host.pid = self.rt.host.pid, self.pid  # format 1 kept it only in the pidfile
            if recorded not in (None, self.pid):
                # The pidfile names the QEMU serving the socket (require_trusted): that one is the instance's.
                self.warnings.append("runtime file %s said host.pid %d, but the QEMU serving its QMP socket (and "
                                     "named by its pidfile) is pid %d; recorded %d"
                                     % (self.paths.runtime_file, recorded, self.pid, self.pid))
                if not self.check_mode:
                    self.save(self.rt)
        elif self.damaged:
            raise self.damaged  # never replaced: it may be the only record of what that instance had
        elif self.rt:
            self.actions.append({"action": "forget", "reason": "the recorded QEMU is not running"})
            if not self.check_mode:
                self._forget()
            self.rt = None
        if not self.rt:
            return self.result(self._start(self._prepare_start(spec, firmware_dirs, module_dir)))
        return self.result(self._record_autostart(self._reconcile(spec, allow_restart, firmware_dirs, module_dir), spec))

    def _record_autostart(self, rt, spec):
        """autostart changes nothing in QEMU: only the runtime file records it (docs/autostart.md)."""
        wanted = plan.normalise(spec.to_dict())["autostart"]
        if rt.layout.declaration.get("autostart") == wanted:
            return rt
        self.actions.append({"action": "autostart", "autostart": wanted})
        if not self.check_mode:
            rt.layout.declaration = dict(rt.layout.declaration, autostart=wanted)
            self.save(rt)
            self.changed = True
        return rt

    def refuse_migration_states(self) -> None:
        """A guest that moved away, or is moving here, is qemu_migrate's (docs/migration.md)."""
        last = self.rt or self.before
        if last and last.status == runtime.STATUS_MIGRATED and not self.pid:
            raise ConfigError("instance %s was migrated to another host (%s says migrated): starting it here "
                              "would run the guest twice on its images; run state: absent here to forget it"
                              % (self.name, self.paths.runtime_file))
        if last and last.status == runtime.STATUS_INCOMING:
            raise ConfigError("instance %s is the target of a migration in progress (%s says incoming): end it "
                              "with blocklayer.qemu.qemu_migrate step finish or abort first"
                              % (self.name, self.paths.runtime_file))

    def _reconcile(self, spec, allow_restart, firmware_dirs, module_dir):
        """Make the running QEMU match the declaration live, or restart it when allowed.

        A no-op costs five read-only queries, whatever the number of devices.
        """
        declaration = plan.normalise(spec.to_dict())
        facts = {p: host.inspect_path(p) for p in layout.declared_paths(spec)}
        rt = self.rt
        if self.check_mode:
            if rt.journal or rt.status != runtime.STATUS_RUNNING:
                self.warnings.append("instance %s has %d action(s) a killed run left unfinished; a run outside "
                                     "check mode finishes them first" % (self.name, len(rt.journal)))
            actions = plan.reconcile(rt.layout, spec, facts, owner=self.owner, **self.live_options)
            if self._refuse_or_restart(actions, allow_restart):
                return self._restart(spec, firmware_dirs, module_dir)
            self._report(actions)
            self.qmp_commands = [c for a in actions for c in a.commands]
            return replace(rt, layout=plan.expected_after(rt.layout, actions, declaration)) if actions else rt
        restart = redo = False
        with self.session() as qmp:
            try:
                redo = rt.status == runtime.STATUS_STARTING and not self._finish_start(qmp, rt, fresh=False)
                if not redo:
                    live = self._live(qmp)
                    if rt.journal:
                        self.settle_journal(qmp, rt, live)
                        live = self._live(qmp)
                    busy = {e.id: e for e in self._graph_entries(rt)}
                    self._refuse_unknown_nodes(rt, live)
                    self._warn_drift(rt, live, busy)
                    actions = plan.reconcile(rt.layout, spec, facts, live.root_slots, set(live.types), live.nodes,
                                             self.owner, live.netdevs, live.sizes, keep_nodes=graph.kept_nodes(rt),
                                             **self.live_options)
                    _refuse_busy(actions, busy)
                    restart = self._refuse_or_restart(actions, allow_restart)
                    if not restart and actions:
                        self._apply(qmp, rt, actions, declaration)
                        self._warn_drift(rt, self._live(qmp), busy)
            finally:
                self.qmp_commands += qmp.sent
        if redo:
            # A killed start left a QEMU paused without what was declared: start it again.
            self.actions.append({"action": "redo-start", "reason": "a killed run left QEMU paused at start "
                                 "without the recorded devices"})
            start = self._prepare_start(spec, firmware_dirs, module_dir)
            self.kill()
            self._forget()
            return self._start(start)
        if restart:
            return self._restart(spec, firmware_dirs, module_dir)
        return rt

    def _live(self, qmp) -> "verify.Live":
        return queries.live(qmp)

    def _apply(self, qmp, rt, actions, declaration) -> None:
        """Journal every action, apply them, then record the outcome: two saves in all."""
        from ansible_collections.blocklayer.qemu.plugins.module_utils import hotplug  # only when changing
        unchanged, changed = runtime.dumps(rt), self.changed
        rt.journal = [hotplug.journal_entry(a) for a in actions]
        self.save(rt)
        self._report(actions)
        self.changed = True
        applier = hotplug.Applier(qmp, rt.layout, self.unplug_timeout)
        try:
            applier.apply(actions)
            rt.layout.declaration = declaration
        finally:
            rt.journal = self._graph_entries(rt) + applier.unfinished
            self.warnings += applier.warnings
            self.save(rt)
            if runtime.dumps(rt) == unchanged:
                self.changed = changed  # the failed action undid its steps: all is as it was

    def settle_journal(self, qmp, rt, live, job_timeout: float = args.JOB_TIMEOUT["default"],
                       delete_unused: bool = False, wait_for=()):
        """Every entry an earlier run left begun, settled by the rule of its kind from what QEMU
        has now (docs/faults.md, docs/design.md "The action engine"): device and group actions by
        recovery.py, block-graph operations and standalone nodes by graphops, whose jobs may
        outlive the task that started them (the jobs of the devices ``wait_for`` names are
        waited for). Returns the graph runner (its job, for the result); ``live`` is stale after
        it when it settled something."""
        from ansible_collections.blocklayer.qemu.plugins.module_utils import graphops  # block jobs only
        if self._recover(qmp, rt, live) and self._graph_entries(rt):
            live = self._live(qmp)
        runner = graphops.GraphRunner(qmp, rt, self.save, job_timeout, delete_unused)
        if self._graph_entries(rt):
            before = len(rt.journal), [r.get("nodes") for r in rt.layout.devices], list(rt.layout.named_nodes)
            try:
                runner.settle(live.nodes, wait_for)
            finally:
                self.warnings += runner.warnings
                runner.warnings = []
            if before != (len(rt.journal), [r.get("nodes") for r in rt.layout.devices], rt.layout.named_nodes):
                self.changed = True
                self.actions.append({"action": "settle-jobs", "reason": "block-graph operations an earlier run left"})
        return runner

    def _recover(self, qmp, rt, live) -> bool:
        """Device and group entries (recovery.py); whether there were any."""
        from ansible_collections.blocklayer.qemu.plugins.module_utils import hotplug, recovery  # after a crash only
        device_entries = [e for e in rt.journal if not graph.settled_by_runner(e)]
        if not device_entries:
            return False
        actions = recovery.recover(device_entries, set(live.types), live.roots, live.nodes)
        self._report(actions)
        self.changed = True
        applier = hotplug.Applier(qmp, rt.layout, self.unplug_timeout)
        try:
            applier.apply(actions)
        finally:
            rt.journal = self._graph_entries(rt) + applier.unfinished
            self.save(rt)
        return True

    @staticmethod
    def _graph_entries(rt) -> list:
        """Journal entries of block-graph operations: a job may outlive its task (graphops)."""
        return [e for e in rt.journal if graph.settled_by_runner(e)]

    def operate(self, work, **settle):
        """``work(qmp, rt, runner)`` on this running instance once the journal an earlier run left
        is settled (``settle``: settle_journal's job options; qemu_blockdev); returns what
        ``work`` returns. The graph runner's warnings join the task's, also when it fails."""
        rt = self.rt
        runner = None
        with self.session() as qmp:
            try:
                runner = self.settle_journal(qmp, rt, self._live(qmp), **settle)
                return work(qmp, rt, runner)
            finally:
                self.qmp_commands += qmp.sent
                if runner is not None:
                    self.warnings += runner.warnings

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

    def _restart(self, spec, firmware_dirs, module_dir):
        """Stop and start with the new declaration, validated before anything is stopped; when
        the new QEMU cannot start, the old declaration is started again."""
        new = self._prepare_start(spec, firmware_dirs, module_dir)
        old_spec = spec_mod.instance_from(spec_mod.params_from_declaration(self.rt.layout.declaration))
        old = None
        if not self.check_mode:
            try:
                old = self._prepare_start(old_spec, self.rt.host.firmware_dirs, self.rt.host.module_dir,
                                          binary=self.rt.host.binary)
            except ConfigError as exc:
                self.warnings.append("the previous declaration could not be brought back if the new one "
                                     "failed to start: %s" % exc)
        self._stop(reason="restart required")
        try:
            return self._start(new)
        except (ConfigError, QemuError) as exc:
            if old is None:
                raise
            try:
                self._start(old, action="start-previous")
            except (ConfigError, QemuError) as again:
                raise QemuError("the new declaration did not start (%s), and starting the previous one "
                                "failed too (%s); the instance is stopped" % (exc, again)) from None
            raise QemuError("the new declaration did not start, so the previous one runs again: %s" % exc,
                            getattr(exc, "error_class", ""), getattr(exc, "desc", "")) from None

    def _refuse_unknown_nodes(self, rt, live) -> None:
        """A record naming nodes QEMU does not have is no ground for a plan (it would purge the
        nodes the device really uses): refused before anything is sent."""
        found = verify.unknown_nodes(rt.layout.devices, live)
        if found:
            index, record, missing = found[0]
            raise ConfigError(
                "runtime file %s does not match QEMU: layout.devices[%d] (%s[%s], %s) names node%s %s, which QEMU "
                "does not have (the device uses %s); nothing was changed. Put back the node names QEMU has "
                "(query-named-block-nodes), or run state: stopped and start the instance again"
                % (self.paths.runtime_file, index, spec_mod.OPTION_GROUPS.get(record["kind"], record["kind"]),
                   record.get("name"), record["id"], "s" if len(missing) > 1 else "", ", ".join(missing),
                   live.roots.get(record["id"]) or "no node"))

    def _warn_drift(self, rt, live, busy=()) -> None:
        # A device with a block job running sits on the job's filter node: not drift (verify.problems).
        drift = verify.problems([d for d in rt.layout.records() if d.get("state") != runtime.STATE_UNPLUG_PENDING],
                                live.block, live.pci, live.qom, busy=set(busy))
        if drift:
            self.warnings.append("instance %s differs from its runtime file: %s" % (self.name, "; ".join(drift)))

    def _report(self, actions) -> None:
        self.actions += [a.report() for a in actions]
        self.warnings += [a.warning for a in actions if getattr(a, "warning", "")]

    # -- start --------------------------------------------------------------------------------
    def _prepare_start(self, spec, firmware_dirs, module_dir, binary=None) -> StartPlan:
        """Validate the whole declaration and build the command line; changes nothing."""
        from ansible_collections.blocklayer.qemu.plugins.module_utils import cmdline  # only at start
        declaration = plan.normalise(spec.to_dict())
        facts = {p: host.inspect_path(p) for p in layout.declared_paths(spec)}
        chains = layout.recorded_chains(spec, self.before.layout.devices) if self.before else {}
        facts.update({c.path: host.inspect_path(c.path) for chain in chains.values() for c in chain
                      if c.path not in facts})
        placed = layout.layout_instance(spec, facts, chains)
        if self.before and self.before.layout.named_nodes:
            from ansible_collections.blocklayer.qemu.plugins.module_utils import standalone  # only when recorded
            named, warnings = standalone.start_nodes(self.before.layout.named_nodes, {
                n["path"]: host.inspect_path(n["path"]).kind for n in self.before.layout.named_nodes})
            placed = replace(placed, named_nodes=tuple(named))
            self.warnings += warnings
        host.check_boot_file("kernel_path", spec.machine.kernel_path)
        host.check_boot_file("initrd_path", spec.machine.initrd_path)
        binary = binary or resolve_binary(spec.qemu_binary)
        firmware_dirs, module_dir = host.qemu_dirs(binary, firmware_dirs, module_dir)
        env = dict(os.environ)
        if module_dir:
            env["QEMU_MODULE_DIR"] = module_dir
        accel = resolve_accel(spec.machine.accel, binary, env)
        machine = self._pinned_machine(spec)
        argv = cmdline.build_argv(spec, placed, accel, self.paths, firmware_dirs, machine=machine)
        argv[0] = binary
        # Why this QEMU ends, for autostart's check (docs/autostart.md "Why a QEMU ended").
        argv += autostart.qemu_args(os.path.join(self.paths.state_dir, autostart.QEMU_LOG))
        # A start keeps who attached each device and whether live only (plan.kept_devices relies on it).
        recorded = {r["id"]: r for r in self.before.layout.devices} if self.before else {}
        rt = runtime.Runtime(
            layout=runtime.GuestLayout(
                name=spec.name, uuid=spec.uuid, machine_type=spec.machine.machine_type, declaration=declaration,
                controllers=[plan.normalise(d.to_dict()) for d in placed.controllers],
                devices=[dict(plan.normalise(d.to_dict()), state=runtime.STATE_ATTACHED, origin=runtime.ORIGIN_BLOCKDEV,
                              **plan.ownership(recorded.get(d.id))) for d in placed.devices],
                throttle_groups=[plan.normalise(g) for g in placed.throttle_groups],
                named_nodes=[plan.normalise(n) for n in placed.named_nodes],
                machine=machine, cpu=spec.machine.cpu_model or cmdline.default_cpu(accel)),
            host=runtime.HostBinding(binary=binary, firmware_dirs=firmware_dirs, module_dir=module_dir,
                                     accel=accel, argv=argv),
            status=runtime.STATUS_STARTING)
        if self.before:
            backup.keep_checkpoints(rt.layout.devices, self.before.layout.devices)
        return StartPlan(placed, env, rt)

    def _start(self, start: StartPlan, action: str = "start"):
        rt = start.runtime
        self.actions.append({"action": action, "devices": [d.id for d in start.placed.all_devices()]})
        if self.check_mode:
            return replace(rt, status=runtime.STATUS_RUNNING)
        # A start that fails leaves the state dir as it was (a first run's is removed, task.py),
        # but for the ownership marker of a directory the collection had not used yet.
        changed = self.changed or not (self.state.created or self.state.marked())
        self.state.prepare_for_qemu(runtime.QEMU_FILES + (autostart.QEMU_LOG,))
        self.state.mark(rt.layout.name, rt.uuid)
        self.save(rt)  # status starting: a run killed from here on finds and finishes it
        self.changed = True
        try:
            try:
                process.start(rt.host.argv, start.env, self.timeouts.start)
            except QemuError as exc:
                raise _name_the_device(self._refusal_from_log(exc), start.placed) from None
            self.pid = process.parse_pid(self.state.read(runtime.PIDFILE))
            self.trusted = True
            rt.host.pid = self.pid
            with self.session() as qmp:
                try:
                    if not self._finish_start(qmp, rt, fresh=True):
                        raise QemuError("QEMU started without the declared devices: %s"
                                        % "; ".join(self._missing(qmp, rt)))
                finally:
                    self.qmp_commands += qmp.sent
        except BaseException:
            self.kill()
            # A start given up on (start_timeout) may leave the QEMU it forked, pidfile or not.
            left = process.kill_serving(self.paths.qmp_socket)
            if left:
                self.warnings.append("QEMU pid(s) %s of instance %s did not end; kill them"
                                     % (", ".join(map(str, left)), self.name))
            self._forget()  # the runtime file as it was: none, or the layout a stop recorded
            self.changed = changed
            raise
        return rt

    def _refusal_from_log(self, exc: QemuError) -> QemuError:
        """With -D, a daemonizing QEMU writes its errors to that log instead of the caller's
        stderr once it has opened the log (qemu_set_log_internal in util/log.c): what it said on
        stderr before, and then the log, say why it ended."""
        # Only a start that ended (process._silent_end, or a refusal), not a hang.
        if not (str(exc).startswith("QEMU refused to start") or "before it was ready" in str(exc)):
            return exc
        logged = (self.state.read(autostart.QEMU_LOG) or b"").decode("utf-8", "replace")
        logged = process.without_warnings("\n".join(line for line in logged.splitlines()
                                                    if autostart.SHUTDOWN_TRACE not in line))
        if not logged:
            return exc
        text = "\n".join(part for part in (exc.desc, logged) if part)
        return QemuError("QEMU refused to start: %s" % explain(text), desc=text)

    def _missing(self, qmp, rt) -> list:
        live = self._live(qmp)
        return verify.problems(rt.layout.records(), live.block, live.pci, live.qom)

    def _finish_start(self, qmp, rt, fresh: bool) -> bool:
        """Verify a QEMU paused at start (-S) and let the guest run; False when a QEMU still
        paused does not have what the runtime file says (the caller then starts it anew)."""
        status = qmp.execute("query-status")["status"]
        if status == "prelaunch":
            if self._missing(qmp, rt):
                return False
            self._record_machine(qmp, rt)
            # Images smaller than declared grow before the guest first sees them.
            if plan.declares_size(rt.layout.devices):
                named = qmp.execute("query-named-block-nodes", {"flat": True})
                for command in plan.start_resizes(rt.layout.devices, verify.sizes_by_node(named)):
                    qmp.execute(command["execute"], command["arguments"])
            qmp.execute("cont")
        if not fresh:
            self.actions.append({"action": "finish-start",
                                 "reason": "a killed run had started QEMU and left it %s" % status})
        rt.host.version = qmp.version
        rt.host.pid = self.pid
        rt.status = runtime.STATUS_RUNNING
        self.save(rt)
        self.changed = True
        return True

    def _pinned_machine(self, spec):
        """The versioned machine type the guest ran on before (e.g. pc-i440fx-7.2), as long as the
        declaration keeps its machine_type: a restart, also by a newer QEMU, gives the guest the
        same chipset revision and defaults, as libvirt and Proxmox pin it (docs/design.md
        "Start"). None at a first start or when machine_type changed: the alias resolves anew."""
        last = self.before.layout if self.before else None
        if last and last.machine and last.machine_type == spec.machine.machine_type:
            return last.machine
        return None

    @staticmethod
    def _record_machine(qmp, rt) -> None:
        """The versioned machine type the alias stands for in this QEMU: a migration target,
        of any version, must emulate exactly this machine (docs/migration.md)."""
        if rt.layout.machine is None:
            from ansible_collections.blocklayer.qemu.plugins.module_utils import probe  # only at start
            rt.layout.machine = probe.versioned_machine(qmp.execute("query-machines"), rt.layout.machine_type)

    # -- stopped / absent ---------------------------------------------------------------------
    def ensure_stopped(self) -> dict:
        if self.pid:
            self._stop(reason="state stopped")
        elif self.rt or (self.damaged and not self.unreadable):
            self.actions.append({"action": "forget", "reason": "the recorded QEMU is not running"})
            if not self.check_mode:
                self._forget()
        if self.unreadable:
            self.warnings.append("%s; it was left as it is" % self.damaged)
        return self.result(None)

    def ensure_absent(self) -> dict:
        self.ensure_stopped()
        if self.state:
            self.actions.append({"action": "remove", "path": self.paths.state_dir})
            if not self.check_mode:
                left = self.state.remove_owned(runtime.OWNED_FILES + (autostart.QEMU_LOG,))
                if left:
                    self.warnings.append("kept %s: it holds files the collection did not create (%s)"
                                         % (self.paths.state_dir, ", ".join(sorted(left)[:5])))
                elif not self.state.remove_dir_if_created():
                    self.warnings.append("kept %s: the collection did not create that directory"
                                         % self.paths.state_dir)
        return self.result(None)

    def _stop(self, reason: str) -> None:
        """Ask the guest to power down, wait for SHUTDOWN (bounded), then quit QEMU."""
        how = "quit"
        if not self.check_mode:
            self.changed = True
            try:
                with self.session() as qmp:
                    try:
                        how = self._shutdown(qmp)
                    finally:
                        self.qmp_commands += qmp.sent
            except QemuError as exc:
                how = "kill"
                self.warnings.append("QMP unusable while stopping %s (%s); killed QEMU" % (self.name, exc))
            if not process.wait_exit(self.pid, self.timeouts.qmp_command):
                how = "kill"
            if how == "quit" and self.timeouts.shutdown > 0:
                self.warnings.append("the guest of %s did not power down within %s s (shutdown_timeout); QEMU "
                                     "was ended with quit" % (self.name, self.timeouts.shutdown))
            self.kill()
            self._forget()
        self.actions.append({"action": "stop", "how": how, "reason": reason})
        self.pid = None

    def _shutdown(self, qmp) -> str:
        if self.timeouts.shutdown > 0:
            with qmp.listener("SHUTDOWN") as shutdown:
                qmp.execute("system_powerdown")
                try:
                    if qmp.wait_event(shutdown, self.timeouts.shutdown):
                        return "powerdown"
                except QemuError:
                    return "powerdown"  # QEMU exited as the guest powered off
        try:
            qmp.execute("quit")
        except QemuError:
            pass  # QEMU may close the socket before it replies
        return "quit"

    # -- files --------------------------------------------------------------------------------
    def kill(self) -> None:
        """End the QEMU of this instance (never another process: it must serve our socket)."""
        if self.pid and self._is_our_qemu(self.pid):
            process.kill(self.pid)
        self.pid = None

    def _forget(self) -> None:
        """Remove what QEMU left, never anything else, and keep the last layout as stopped: it
        holds each disk's current chain, which the next start must rebuild (docs/block-graph.md)."""
        self.changed = True
        # qemu.log too: the runtime file now says stopped, which is all autostart needs.
        for name in runtime.QEMU_FILES + (autostart.QEMU_LOG,):
            if name != runtime.CONSOLE_LOG:
                self.state.remove(name)
        last = self.rt or self.before
        if last:
            from ansible_collections.blocklayer.qemu.plugins.module_utils import graph  # QEMU is gone
            self.before = replace(last, status=runtime.STATUS_STOPPED, journal=[],
                                  layout=graph.settle_stopped(last.layout, last.journal),
                                  host=replace(last.host, pid=None))
            self.save(self.before)
        elif not self.unreadable:
            self.state.remove(runtime.RUNTIME_FILE)
        self.rt = None


def _firmware_dirs(argv: list) -> list:
    """The ``-L`` directories of a command line (a restart of an adopted QEMU keeps them)."""
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "-L"]


def _refuse_busy(actions, busy: dict) -> None:
    """A device whose chain a block operation is changing cannot change otherwise, and the
    instance cannot restart under it."""
    blocked = [a for a in actions if (a.id in busy) or (a.action == plan.RESTART and busy)]
    if blocked:
        entry = busy.get(blocked[0].id) or next(iter(busy.values()))
        raise ConfigError("disks[%s] has a block operation in progress (%s, job %s): wait for it with "
                          "blocklayer.qemu.qemu_blockdev, or cancel it (cancel: true), then run again"
                          % ((entry.old or {}).get("name"), entry.action, ", ".join(entry.creates.get("jobs") or [])))


_ARG = re.compile(r"-(?:blockdev|device|netdev|object) (\{.*?\}): (.*)")


def _name_the_device(exc: QemuError, placed) -> QemuError:
    """QEMU echoes the -blockdev/-device JSON it refused; name the declared device instead."""
    from ansible_collections.blocklayer.qemu.plugins.module_utils import cmdline  # a failed start only
    match = _ARG.search(exc.desc or "")
    if not match:
        return exc
    for device in placed.all_devices():
        args = [cmdline.as_json(n) for n in device.nodes + device.objects] + [cmdline.as_json(device.props)]
        if device.netdev:
            args.append(cmdline.as_json(device.netdev))
        if match.group(1) in args:
            label = "%s[%s]" % (spec_mod.OPTION_GROUPS[device.kind], device.name) if device.kind != "controller" else device.id
            # From the refusal on: a lock conflict's next line names the image.
            text = exc.desc[match.start(2):]
            return QemuError("%s (%s): QEMU refused to start it: %s" % (label, device.id, explain(text)),
                             exc.error_class, exc.desc, exc.command)
    return exc
