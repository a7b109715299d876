# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one driver of QEMU block jobs: block-commit, block-stream, blockdev-mirror, blockdev-create.

Every job is started with a ``job-id``, a named ``filter-node-name`` (not for create) and
``auto-dismiss: false``, ``auto-finalize: false``, so that the caller gets a commit point
(``pending``) and QEMU keeps the job's error until ``job-dismiss``. The runner is driven by
``JOB_STATUS_CHANGE`` events only; ``query-jobs`` is read for the error at ``concluded`` (no event
carries it) and for progress, never polled for the status.

The states are QEMU's ``JobStatus`` (qapi/job.json; the allowed transitions are job.c's
``JobSTT``): created, running, paused, ready, standby, waiting, pending, aborting, concluded,
null. Paused and standby are running and ready put on hold. Sequences QEMU 7.2 and 10.0 emit,
and what the runner sends (in brackets):

    intermediate commit, stream   created, running, waiting, pending [job-finalize]
                                  concluded [query-jobs, job-dismiss] null
    active commit, mirror         created, running, ready [job-complete: pivot]
                                  waiting, pending [job-finalize] concluded [...] null
    ready mirror, "keep"          ready [block-job-cancel without force] waiting, pending
                                  [job-finalize] concluded, no error: the device stays on the
                                  source and the target is a consistent copy
    any cancel                    [job-cancel] aborting, concluded, error "Operation canceled"
                                  (job-cancel on a ready mirror is a forced cancel: no copy)
    failure (ENOSPC, report)      aborting, concluded with the error; a target of another size
                                  concludes at once with "Source and target image have
                                  different sizes"
    blockdev-create               created, running, waiting, pending, concluded: it has no
                                  auto-* options (qmp_blockdev_create), finalizes by itself and
                                  waits for job-dismiss

Events may arrive more than once (a failing mirror repeats them): a status equal to the last one
is dropped, and each action (the ready action, finalize, dismiss) is sent at most once.

``before_finalize`` runs at ``pending``, before ``job-finalize``: if it raises, the job stays
pending in QEMU and ``resume`` finalizes it later. A job that stops moving (paused by an
``on-*-error: stop`` policy, or throttled by ``speed``) ends the wait with JobTimeout, the job
left as it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, List, Optional

from ansible_collections.blocklayer.qemu.plugins.module_utils import engine
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Value

_KIND_OF = {v: k for k, v in engine.JOB_COMMANDS.items()}
AT_READY = ("complete", "keep", "wait")
# job.c job_update_rc(): a cancelled job's error is strerror(ECANCELED).
CANCELED_TEXT = "Operation canceled"


@dataclass(init=False, repr=False, eq=False)
class JobState(Value):
    """What query-jobs says about one job."""
    id: str
    type: str
    status: str
    current: int
    total: int
    error: Optional[str]

    @classmethod
    def from_qemu(cls, info: dict) -> "JobState":
        return cls(id=info["id"], type=info["type"], status=info["status"],
                   current=int(info.get("current-progress", 0)), total=int(info.get("total-progress", 0)),
                   error=info.get("error"))


@dataclass(init=False, repr=False, eq=False)
class JobOutcome(Value):
    """How a job ended: ``completed`` (the graph change happened), ``kept`` (a ready mirror or
    active commit cancelled without pivot: the copy is consistent, the device stays on the
    source), ``cancelled``, ``failed``, or ``ready`` (``at_ready="wait"``: still running)."""
    id: str
    type: str
    result: str
    error: Optional[str]
    current: int
    total: int


class JobTimeout(QemuError):
    """No status change and no progress for ``timeout`` seconds. The job is left in QEMU as it
    is (not cancelled): ``resume`` or ``cancel`` it later."""

    def __init__(self, message: str, state: JobState):
        super().__init__(message)
        self.state = state


class _Drive:
    """One job being driven: what was seen and sent, so that each action happens once."""

    def __init__(self, job_id: str, at_ready: str, before_finalize, auto_finalize: bool):
        if at_ready not in AT_READY:
            raise ValueError("at_ready must be one of %s, not %r" % (", ".join(AT_READY), at_ready))
        if auto_finalize and before_finalize is not None:
            raise ValueError("job %s finalizes by itself (blockdev-create): no before_finalize" % job_id)
        self.job_id = job_id
        self.at_ready = at_ready
        self.before_finalize = before_finalize
        self.auto_finalize = auto_finalize
        self.status = None  # the last status seen
        self.progress = None  # (current, total) at the last look
        self.ready_done = False  # job-complete / block-job-cancel sent (a later "ready" is a blip)
        self.finalized = False
        self.cancel = None  # None, "soft" (block-job-cancel without force on ready) or "hard"
        self.resumed_past_ready = False


class JobRunner:
    """Runs jobs on one ``qmp.QmpSession`` (or anything with execute, listener, wait_event)."""

    EVENTS = ("JOB_STATUS_CHANGE",)

    def __init__(self, qmp, timeout: float, on_progress: Optional[Callable[[JobState], None]] = None):
        """``timeout``: seconds without a status change or progress before JobTimeout.
        ``on_progress(JobState)``: called at each new status and when the progress moves."""
        self.qmp = qmp
        self.timeout = timeout
        self.on_progress = on_progress

    # -- queries ------------------------------------------------------------------------------
    def query(self, job_id: Optional[str] = None) -> List[JobState]:
        states = [JobState.from_qemu(info) for info in self.qmp.execute("query-jobs")]
        return [s for s in states if job_id is None or s.id == job_id]

    def _look(self, job_id: str) -> Optional[JobState]:
        found = self.query(job_id)
        return found[0] if found else None

    def _listen(self, job_id: str):
        return self.qmp.listener(self.EVENTS, lambda event: event.get("data", {}).get("id") == job_id)

    # -- entry points -------------------------------------------------------------------------
    def run(self, command: dict, at_ready: str = "complete", before_finalize=None) -> JobOutcome:
        """Start the job of ``command`` (see engine.job_command) and drive it to its end (or to ready
        with ``at_ready="wait"``). A command QEMU refuses raises QemuError with its text."""
        arguments = command.get("arguments", {})
        job_id = arguments["job-id"]
        auto = command["execute"] == "blockdev-create" or arguments.get("auto-finalize", True) is not False
        drive = _Drive(job_id, at_ready, before_finalize, auto)
        with self._listen(job_id) as listener:  # before the command: its first events follow at once
            self.qmp.execute(command["execute"], arguments)
            return self._drive(drive, listener)

    def resume(self, job_id: str, at_ready: str = "complete", before_finalize=None) -> JobOutcome:
        """Continue a job an earlier run left, from the status query-jobs shows.

        ``at_ready`` must be what that run asked for: a mirror found past ready with no error
        is reported ``kept`` only when it says "keep" (QMP does not tell a soft cancel apart).
        """
        with self._listen(job_id) as listener:  # before the query: no change falls in between
            state = self._look(job_id)
            if state is None:
                raise QemuError("block job %s is not in QEMU (query-jobs does not list it): it ended and "
                                "was dismissed, or QEMU was restarted" % job_id)
            drive = _Drive(job_id, at_ready, before_finalize, state.type == "create")
            if state.status in ("waiting", "pending", "concluded") and at_ready == "keep":
                drive.resumed_past_ready = True
            return self._drive(drive, listener, first=state)

    def cancel(self, job_id: str, keep_copy: bool) -> JobOutcome:
        """Cancel a job. ``keep_copy`` on a ready mirror is block-job-cancel without force (a
        consistent copy, the device stays on the source); otherwise job-cancel."""
        with self._listen(job_id) as listener:
            state = self._look(job_id)
            if state is None:
                raise QemuError("cannot cancel block job %s: query-jobs does not list it" % job_id)
            drive = _Drive(job_id, "keep" if keep_copy else "complete", None, state.type == "create")
            drive.ready_done = True  # what the ready action would do is decided here
            if state.status != "concluded":
                if keep_copy and state.status == "ready":
                    drive.cancel = "soft"
                    self.qmp.execute("block-job-cancel", {"device": job_id})  # force omitted
                else:
                    drive.cancel = "hard"
                    drive.finalized = True  # an aborted job concludes without job-finalize
                    self.qmp.execute("job-cancel", {"id": job_id})
            return self._drive(drive, listener, first=state)

    def dismiss_concluded(self, job_id: str) -> Optional[JobOutcome]:
        """Dismiss a concluded job and say how it ended; None if it is absent or not concluded."""
        state = self._look(job_id)
        if state is None or state.status != "concluded":
            return None
        self.qmp.execute("job-dismiss", {"id": job_id})
        return _outcome(state, _Drive(job_id, "complete", None, True))

    # -- the state machine --------------------------------------------------------------------
    def _drive(self, drive: _Drive, listener, first: Optional[JobState] = None) -> JobOutcome:
        if first is not None:
            outcome = self._on_status(drive, first.status, first)
            if outcome is not None:
                return outcome
        deadline = time.monotonic() + self.timeout
        while True:
            event = self.qmp.wait_event(listener, max(deadline - time.monotonic(), 0))
            if event is None:
                deadline = self._check_progress(drive)
                continue
            status = event["data"]["status"]
            if status == drive.status:
                continue  # a repeated event
            deadline = time.monotonic() + self.timeout
            outcome = self._on_status(drive, status)
            if outcome is not None:
                return outcome

    def _on_status(self, drive: _Drive, status: str, state: Optional[JobState] = None) -> Optional[JobOutcome]:
        """Act on a new status; the outcome when the job is over (or ready and told to wait)."""
        drive.status = status
        if status == "null":
            raise QemuError("block job %s disappeared (status null) before the collection dismissed it: "
                            "another QMP client dismissed it" % drive.job_id)
        if state is None:
            state = self._look(drive.job_id)
            if state is None:
                raise QemuError("block job %s reported %s but query-jobs does not list it"
                                % (drive.job_id, status))
        self._note_progress(drive, state, new_status=True)
        if status == "concluded":
            self.qmp.execute("job-dismiss", {"id": drive.job_id})
            return _outcome(state, drive)
        if status == "ready" and not drive.ready_done:
            return self._at_ready(drive, state)
        if status == "pending" and not drive.auto_finalize and not drive.finalized:
            drive.finalized = True
            if drive.before_finalize is not None:
                drive.before_finalize(state)  # the caller's commit point
            self.qmp.execute("job-finalize", {"id": drive.job_id})
        return None

    def _at_ready(self, drive: _Drive, state: JobState) -> Optional[JobOutcome]:
        drive.ready_done = True
        if drive.at_ready == "wait":
            return JobOutcome(state.id, state.type, "ready", None, state.current, state.total)
        if drive.at_ready == "keep":
            drive.cancel = "soft"
            self.qmp.execute("block-job-cancel", {"device": drive.job_id})  # no force: no pivot
        else:
            self.qmp.execute("job-complete", {"id": drive.job_id})
        return None

    def _note_progress(self, drive: _Drive, state: JobState, new_status: bool = False) -> bool:
        """Record the progress and tell on_progress of a new status or progress; True when the
        progress moved since the last look."""
        progress = (state.current, state.total)
        moved = drive.progress is not None and progress != drive.progress
        if (new_status or progress != drive.progress) and self.on_progress is not None:
            self.on_progress(state)
        drive.progress = progress
        return moved

    def _check_progress(self, drive: _Drive) -> float:
        """At the deadline: a new deadline if the job made progress, else JobTimeout."""
        state = self._look(drive.job_id)
        if state is None:
            raise QemuError("block job %s vanished from query-jobs while in status %s"
                            % (drive.job_id, drive.status))
        if self._note_progress(drive, state):
            return time.monotonic() + self.timeout
        raise JobTimeout(
            "block job %s (%s) made no progress for %s s: status %s, %d of %d; it is left running in "
            "QEMU; run again to resume it, or cancel it"
            % (state.id, state.type, self.timeout, state.status, state.current, state.total), state)


def _outcome(state: JobState, drive: _Drive) -> JobOutcome:
    if state.error is None:
        kept = drive.cancel == "soft" or drive.resumed_past_ready
        result = "kept" if kept else "completed"
    elif drive.cancel == "hard" or state.error == CANCELED_TEXT:
        result = "cancelled"
    else:
        result = "failed"
    return JobOutcome(state.id, state.type, result, state.error, state.current, state.total)


def kind_of(command: dict) -> str:
    """The job kind (commit, stream, mirror, create) of a command made by engine.job_command."""
    return _KIND_OF[command["execute"]]
