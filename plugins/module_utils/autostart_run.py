# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The autostart entry point on the node (shell; docs/autostart.md).

    python -m ansible_collections.blocklayer.qemu.plugins.module_utils.autostart_run \\
        start-all|check|stop-all [--root DIR]... [--json]

``start-all`` (at boot) and ``check`` (periodic) start every autostart instance under the
roots that should run and does not, from its runtime file, in order, with its delay;
``stop-all`` (at host shutdown) powers the running ones down in reverse order. Each instance
is handled under its own lock, by the same ``Instance`` code as the modules; what ``autostart.py``
decides is carried out here. Run without a controller: no Ansible is needed.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

from ansible_collections.blocklayer.qemu.plugins.module_utils import autostart, runtime, spec as spec_mod
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError, QemuError
from ansible_collections.blocklayer.qemu.plugins.module_utils.instance import Instance, Timeouts
from ansible_collections.blocklayer.qemu.plugins.module_utils.statedir import StateDir

BOOT_ID = "/proc/sys/kernel/random/boot_id"
# Tests only: a file that stands in for BOOT_ID, to present a "new boot" without rebooting.
BOOT_ID_ENV = "BLOCKLAYER_QEMU_BOOT_ID_FILE"
DEFAULT_ROOT = "/var/lib/blocklayer-qemu"
# The runs' own state dir under the first root (no runtime file: never taken for an instance).
STATE_DIR = ".autostart"
STATE_FILE = "state.json"


def boot_id() -> str:
    with open(os.environ.get(BOOT_ID_ENV) or BOOT_ID, encoding="ascii") as handle:
        return handle.read().strip()


def state_dirs(roots) -> list:
    """Every directory directly under a root that holds a runtime file."""
    found = set()
    for root in roots:
        found.update(os.path.dirname(p) for p in glob.glob(os.path.join(glob.escape(root), "*", runtime.RUNTIME_FILE)))
    return sorted(found)


class Run:
    def __init__(self, opts):
        self.opts = opts
        self.boot_id = boot_id()
        self.report = []
        self.problems = 0

    def say(self, seen_or_dir, action: str, reason: str, problem: bool = False) -> None:
        name = getattr(seen_or_dir, "name", "") or os.path.basename(seen_or_dir if isinstance(seen_or_dir, str)
                                                                    else seen_or_dir.state_dir)
        state_dir = seen_or_dir if isinstance(seen_or_dir, str) else seen_or_dir.state_dir
        self.report.append({"name": name, "state_dir": state_dir, "action": action, "reason": reason,
                            "problem": problem})
        self.problems += problem
        if not self.opts.json:
            (sys.stderr if problem else sys.stdout).write("%s (%s): %s: %s\n" % (name, state_dir, action, reason))

    # -- one instance, under its lock ----------------------------------------------------------
    def locked(self, state_dir: str, work):
        """``work(instance, seen)`` with the instance's lock held; a refusal is reported."""
        try:
            state = StateDir.open(state_dir, create=False)
            if state is None:
                return None
            try:
                with state.lock(self.opts.lock_timeout, "instance state dir"):
                    instance = Instance(os.path.basename(state_dir), "", state, state_dir, False, self.timeouts())
                    return work(instance, self.observe(instance, state))
            finally:
                state.close()
        except (ConfigError, QemuError) as exc:
            self.say(state_dir, "failed", str(exc), problem=True)
            return None
        except Exception as exc:  # pylint: disable=broad-except
            # One instance's surprise must not keep the others down.
            self.say(state_dir, "failed", "internal error of the collection (%s: %s)" % (type(exc).__name__, exc),
                     problem=True)
            return None

    def timeouts(self) -> Timeouts:
        return Timeouts(start=self.opts.start_timeout, shutdown=self.opts.shutdown_timeout,
                        qmp_connect=self.opts.qmp_timeout, qmp_command=self.opts.qmp_timeout)

    @staticmethod
    def observe(instance, state) -> autostart.Seen:
        rt = instance.before
        if rt:
            instance.name = rt.layout.name
        declared = rt.layout.declaration.get("autostart") if rt else None
        return autostart.Seen(
            state_dir=state.path, name=instance.name, autostart=bool(declared),
            order=int((declared or {}).get("order", 0)), delay=float((declared or {}).get("delay", 0)),
            status=rt.status if rt else None, damaged=str(instance.damaged) if instance.damaged else None,
            running=instance.pid is not None, cause=autostart.last_shutdown_cause(state.read(autostart.QEMU_LOG)))

    # -- the commands --------------------------------------------------------------------------
    def start_all(self, memory_of, rebooted: bool) -> None:
        seen = [s for s in (self.locked(d, lambda i, s: s) for d in state_dirs(self.opts.root)) if s]
        for item in seen:
            if item.damaged:  # any instance's: it may be an autostart one
                self.say(item, "none", autostart.decide(item, autostart.Memory(), self.boot_id, rebooted,
                                                        time.time()).reason, problem=True)
        wanted = autostart.start_order([s for s in seen if s.autostart and not s.damaged])
        for index, item in enumerate(wanted):
            started = self.locked(item.state_dir, lambda i, s: self.start_one(i, s, memory_of(s.state_dir), rebooted))
            if started and item.delay and index + 1 < len(wanted):
                time.sleep(item.delay)  # Proxmox's startup "up": let it come up before the next

    def start_one(self, instance, seen, memory, rebooted) -> bool:
        """Decide again under the lock (another run may have acted since) and start if told."""
        now = time.time()
        decision = autostart.decide(seen, memory, self.boot_id, rebooted, now, self.opts.max_restarts,
                                    self.opts.restart_window)
        if decision.action != autostart.START:
            self.say(seen, "none", decision.reason, decision.problem)
            return False
        if decision.counts:
            memory.restarts = autostart.recent_restarts(memory.restarts, now, self.opts.restart_window) + [now]
        before = instance.before
        try:
            desired = spec_mod.instance_from(spec_mod.params_from_declaration(before.layout.declaration))
            instance.ensure_running(desired, allow_restart=False, firmware_dirs=before.host.firmware_dirs or None,
                                    module_dir=before.host.module_dir)
        except (ConfigError, QemuError) as exc:
            memory.failed_start = True
            self.say(seen, "failed", "%s; starting it failed: %s" % (decision.reason, exc), problem=True)
            return False
        memory.failed_start = False
        memory.host_stop = None
        self.say(seen, "started", "%s (pid %d)" % (decision.reason, instance.pid))
        return True

    def stop_all(self, memory_of) -> None:
        seen = [s for s in (self.locked(d, lambda i, s: s) for d in state_dirs(self.opts.root)) if s]
        for item in autostart.stop_order([s for s in seen if s.running]):
            self.locked(item.state_dir, lambda i, s: self.stop_one(i, s, memory_of(s.state_dir)))

    def stop_one(self, instance, seen, memory) -> None:
        if not seen.running:
            return
        result = instance.ensure_stopped()
        how = next((a.get("how") for a in result["actions"] if a["action"] == "stop"), "stop")
        if seen.autostart:
            memory.host_stop = self.boot_id  # the next boot brings it back
        self.say(seen, "stopped", "host shutdown (%s)%s" % (how, "".join("; " + w for w in result["warnings"])))


def parse(argv):
    parser = argparse.ArgumentParser(prog="blocklayer-qemu-guests",
                                     description="Start autostart instances at boot and after a crash, "
                                                 "stop every instance at host shutdown (docs/autostart.md).")
    parser.add_argument("command", choices=["start-all", "check", "stop-all"])
    parser.add_argument("--root", action="append", help="directory whose subdirectories are state dirs "
                        "(repeatable; default %s)" % DEFAULT_ROOT)
    parser.add_argument("--state", help="the runs' own state dir (default <first root>/%s)" % STATE_DIR)
    parser.add_argument("--max-restarts", type=int, default=autostart.MAX_RESTARTS)
    parser.add_argument("--restart-window", type=float, default=autostart.RESTART_WINDOW)
    parser.add_argument("--shutdown-timeout", type=float, default=Timeouts().shutdown)
    parser.add_argument("--start-timeout", type=float, default=Timeouts().start)
    parser.add_argument("--qmp-timeout", type=float, default=10.0)
    parser.add_argument("--lock-timeout", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    opts = parser.parse_args(argv)
    opts.root = [os.path.abspath(r) for r in opts.root or [DEFAULT_ROOT]]
    opts.state = os.path.abspath(opts.state or os.path.join(opts.root[0], STATE_DIR))
    return opts


def main(argv=None) -> int:
    opts = parse(sys.argv[1:] if argv is None else argv)
    try:
        run = Run(opts)
        own = StateDir.open(opts.state, create=True)
        with own, own.lock(opts.lock_timeout, "autostart state dir"):
            memory = autostart.load_state(own.read(STATE_FILE))
            rebooted = memory.boot_id != run.boot_id
            if rebooted:
                for item in memory.instances.values():
                    item.restarts = []  # counters start afresh with each boot
            try:
                if opts.command == "stop-all":
                    run.stop_all(memory.memory)
                else:
                    run.start_all(memory.memory, rebooted)
            finally:
                memory.boot_id = run.boot_id
                own.write_atomic(STATE_FILE, autostart.dump_state(memory))
    except (ConfigError, OSError) as exc:
        sys.stderr.write("blocklayer-qemu-guests %s: %s\n" % (opts.command, exc))
        return 2
    if opts.json:
        sys.stdout.write(json.dumps(run.report, indent=1) + "\n")
    return 1 if run.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
