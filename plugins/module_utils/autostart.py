# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which instances come back after a host reboot or a crash, in what order (pure; docs/autostart.md).

The shell part is ``autostart_run.py``; this file decides from what it observed: the runtime
file's status, whether a QEMU of the instance runs, why its last QEMU ended (the shutdown
request QEMU wrote to its log), what ``stop-all`` did at the last host shutdown, and the
restarts already made in the window.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import List, Optional

from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Record, Value

# The instance's QEMU writes each shutdown request here (-D with the trace event below): the
# only trace of why a QEMU nobody listened to ended. A QEMU that was killed writes nothing.
QEMU_LOG = "qemu.log"
SHUTDOWN_TRACE = "qemu_system_shutdown_request"
# qapi/run-state.json ShutdownCause, in enum order: the trace event prints the number
# (trace_qemu_system_shutdown_request in system/runstate.c, softmmu/runstate.c before 8.0).
SHUTDOWN_CAUSES = ("none", "host-error", "host-qmp-quit", "host-qmp-system-reset", "host-signal", "host-ui",
                   "guest-shutdown", "guest-reset", "guest-panic", "subsystem-reset", "snapshot-load")
# Causes that mean someone wanted the instance down: it stays down. The guest powering itself
# off is Ganeti's "user down"; a quit over QMP or from the UI is the host's operator. Anything
# else (no request at all: SIGKILL, a crash, a power cut; a guest panic; a signal such as the
# SIGTERM of a host going down without stop-all) is brought back.
STAYS_DOWN = {"guest-shutdown": "shut down by the guest",
              "host-qmp-quit": "ended by a QMP quit outside the collection",
              "host-ui": "ended from QEMU's user interface"}

_REQUEST = re.compile(r"\b%s reason=(\d+)" % SHUTDOWN_TRACE)

# Ganeti's watcher: at most 5 restarts, counters expire after 8 hours.
MAX_RESTARTS = 5
RESTART_WINDOW = 8 * 3600.0

STATE_VERSION = 1

# What a run does with an instance.
START, NONE = "start", "none"


def qemu_args(log_path: str) -> list:
    """Arguments that make QEMU log its shutdown requests (and nothing else) to ``log_path``."""
    return ["-D", log_path, "-d", "trace:" + SHUTDOWN_TRACE]


def last_shutdown_cause(log: Optional[bytes]) -> Optional[str]:
    """The cause of the last shutdown request QEMU logged, or None when it logged none."""
    if not log:
        return None
    found = _REQUEST.findall(log.decode("utf-8", "replace"))
    if not found:
        return None
    number = int(found[-1])
    return SHUTDOWN_CAUSES[number] if number < len(SHUTDOWN_CAUSES) else "cause-%d" % number


@dataclass(init=False, repr=False, eq=False)
class Seen(Value):
    """One instance as a run finds it (under its lock)."""

    state_dir: str
    name: str = ""
    autostart: bool = False
    order: int = 0
    delay: float = 0.0
    status: Optional[str] = None  # the runtime file's; None: no runtime file
    damaged: Optional[str] = None  # why the runtime file cannot be read
    running: bool = False  # a QEMU of this instance runs (docs/faults.md "Finding the instance's QEMU")
    cause: Optional[str] = None  # last_shutdown_cause of its log


def start_order(seen: list) -> list:
    """Lower ``order`` first, then by name (then state dir: two dirs may hold one name)."""
    return sorted(seen, key=lambda s: (s.order, s.name, s.state_dir))


def stop_order(seen: list) -> list:
    """Reverse start order; instances without autostart (started by hand) go first."""
    return [s for s in reversed(start_order(seen)) if not s.autostart] + \
        [s for s in reversed(start_order(seen)) if s.autostart]


@dataclass(init=False, repr=False, eq=False)
class Memory(Record):
    """What the runs remember about one instance (in the autostart state file)."""

    restarts: List[float] = field(default_factory=list)  # times of restarts after a crash
    host_stop: Optional[str] = None  # boot id during which stop-all stopped it
    # A start by autostart failed (its runtime file then says stopped): try again, counted.
    failed_start: bool = False


@dataclass(init=False, repr=False, eq=False)
class State(Record):
    """The autostart state file: the boot id of the last run, and each instance's memory."""

    boot_id: Optional[str] = None
    instances: dict = field(default_factory=dict)  # state dir -> Memory

    def memory(self, state_dir: str) -> Memory:
        return self.instances.setdefault(state_dir, Memory())


def load_state(text: Optional[bytes]) -> State:
    """The state file's content; a missing or unreadable one is a fresh state (it holds only
    counters and marks, never what an instance is: that is its runtime file)."""
    try:
        data = json.loads(text.decode("utf-8")) if text else {}
    except (ValueError, UnicodeDecodeError):
        data = {}
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        return State()
    instances = {}
    for key, value in (data.get("instances") or {}).items():
        if isinstance(value, dict):
            instances[key] = Memory(restarts=[float(t) for t in value.get("restarts") or []
                                              if isinstance(t, (int, float))],
                                    host_stop=value.get("host_stop") if isinstance(value.get("host_stop"), str) else None,
                                    failed_start=value.get("failed_start") is True)
    boot_id = data.get("boot_id")
    return State(boot_id=boot_id if isinstance(boot_id, str) else None, instances=instances)


def dump_state(state: State) -> bytes:
    data = {"version": STATE_VERSION, "boot_id": state.boot_id,
            "instances": {k: {"restarts": m.restarts, "host_stop": m.host_stop, "failed_start": m.failed_start}
                          for k, m in sorted(state.instances.items())
                          if m.restarts or m.host_stop or m.failed_start}}
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8")


@dataclass(init=False, repr=False, eq=False)
class Decision(Value):
    action: str  # START or NONE
    reason: str
    counts: bool = False  # a restart after a crash: counted against MAX_RESTARTS
    problem: bool = False  # something an operator must look at (damaged file, gave up)


def decide(seen: Seen, memory: Memory, boot_id: str, rebooted: bool, now: float,
           max_restarts: int = MAX_RESTARTS, window: float = RESTART_WINDOW) -> Decision:
    """What to do with one autostart instance. ``rebooted``: the host booted since the last
    run (the boot id changed), so a QEMU that is gone did not crash: the host went down."""
    if seen.damaged:
        return Decision(NONE, "runtime file damaged, left as it is: %s" % seen.damaged, problem=True)
    if seen.running:
        return Decision(NONE, "running")
    if seen.status is None:
        return Decision(NONE, "no runtime file")
    if seen.status in ("migrated", "incoming"):
        return Decision(NONE, "left alone: its runtime file says %s (docs/migration.md)" % seen.status)
    if seen.status == "stopped" and not memory.failed_start:
        if memory.host_stop and memory.host_stop != boot_id:
            return Decision(START, "stopped by stop-all at the last host shutdown")
        return Decision(NONE, "stopped (state: stopped, or stop-all during this boot)")
    if memory.failed_start:
        why = "its last start by autostart failed"
    elif seen.cause in STAYS_DOWN:
        return Decision(NONE, STAYS_DOWN[seen.cause])
    else:
        why = "its QEMU ended (%s)" % seen.cause if seen.cause else "its QEMU was killed or crashed (no shutdown request)"
        if rebooted:
            return Decision(START, "the host rebooted")
    recent = recent_restarts(memory.restarts, now, window)
    if len(recent) >= max_restarts:
        return Decision(NONE, "%s; gave up after %d restarts within %d s (tries again when the oldest is "
                        "%d s old)" % (why, len(recent), window, window), problem=True)
    return Decision(START, "%s; restart %d of %d" % (why, len(recent) + 1, max_restarts), counts=True)


def recent_restarts(restarts: list, now: float, window: float) -> list:
    """The restarts still counted: those less than ``window`` seconds old."""
    return [t for t in restarts if now - t < window]
