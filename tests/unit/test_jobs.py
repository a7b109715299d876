"""The block-job engine against a scripted QMP peer replaying the event sequences QEMU 7.2 and
10.0 emit (measured: commit, stream, mirror, cancels, ENOSPC with duplicated events)."""

from collections import deque
from contextlib import contextmanager

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import engine, jobs
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError, QemuError


def status(job_id, *statuses):
    return [{"event": "JOB_STATUS_CHANGE", "data": {"id": job_id, "status": s}} for s in statuses]


def block_event(name, job_id, job_type, **data):
    return [{"event": name, "data": dict(data, device=job_id, type=job_type)}]


def step(command, arguments=None, events=(), error=None, update=None):
    """QEMU's answer to one command: events it emits, a refusal, or a change of the job's record."""
    return dict(command=command, arguments=arguments, events=list(events), error=error, update=update or {})


class FakeQemu:
    """A scripted peer with execute/listener/wait_event. query-jobs is answered from the job
    records that the scripted events keep; every other command must come in script order."""

    def __init__(self, steps, jobs_=None, queued=(), stalls=()):
        self.steps = deque(steps)
        self.jobs = {j["id"]: dict(j) for j in jobs_ or []}
        self.sent = []
        self.listeners = []
        self.queued = list(queued)  # events already on their way when a listener registers
        self.stalls = deque(stalls)  # progress to show after each empty wait
        self.waits = []

    def execute(self, name, arguments=None):
        self.sent.append((name, arguments or {}))
        if name == "query-jobs":
            return [dict(j) for j in self.jobs.values()]
        assert self.steps, "unexpected command %s %s" % (name, arguments)
        expected = self.steps.popleft()
        assert name == expected["command"], (name, expected["command"])
        if expected["arguments"] is not None:
            assert (arguments or {}) == expected["arguments"]
        if expected["error"]:
            raise QemuError("QEMU refused %s: %s" % (name, expected["error"]), desc=expected["error"], command=name)
        job_id = (arguments or {}).get("job-id")
        if job_id:
            self.jobs[job_id] = {"id": job_id, "type": jobs.kind_of({"execute": name}), "status": "undefined",
                                 "current-progress": 0, "total-progress": 0}
        if name == "job-dismiss":
            del self.jobs[arguments["id"]]
        for job_id_, fields in expected["update"].items():
            self.jobs[job_id_].update(fields)
        for event in expected["events"]:
            self._emit(event)
        return {}

    def _emit(self, event):
        data = event["data"]
        if event["event"] == "JOB_STATUS_CHANGE" and data["id"] in self.jobs:
            self.jobs[data["id"]]["status"] = data["status"]
        for names, keep, queue in self.listeners:
            if event["event"] in names and keep(event):
                queue.append(event)

    @contextmanager
    def listener(self, names, event_filter=None):
        entry = (tuple(names), event_filter or (lambda e: True), deque())
        self.listeners.append(entry)
        for event in self.queued:
            if event["event"] in entry[0] and entry[1](event):
                entry[2].append(event)
        try:
            yield entry[2]
        finally:
            self.listeners.remove(entry)

    def wait_event(self, listener, timeout):
        self.waits.append(timeout)
        if listener:
            return listener.popleft()
        if self.stalls:  # the time passes; the job moved on (or not)
            job_id, current = self.stalls.popleft()
            self.jobs[job_id]["current-progress"] = current
        return None

    def commands(self):
        """What was sent that changes QEMU, in order (query-jobs left out)."""
        return [(name, args) for name, args in self.sent if name != "query-jobs"]

    def names(self):
        return [name for name, _args in self.commands()]


def runner(fake, **kw):
    return jobs.JobRunner(fake, timeout=kw.pop("timeout", 5.0), **kw)


class Commit:
    """before_finalize that records what QEMU had been sent when it was called."""

    def __init__(self, fake):
        self.fake = fake
        self.calls = []

    def __call__(self, state):
        self.calls.append((state, self.fake.names()))


# -- job_command ----------------------------------------------------------------------------------

def test_job_command_sets_id_filter_and_manual_finalize_and_dismiss():
    cmd = engine.job_command("commit", "d0.commit1", device="ov2-fmt", top_node="ov1-fmt", base_node="base-fmt")
    assert cmd == {"execute": "block-commit", "arguments": {
        "device": "ov2-fmt", "top-node": "ov1-fmt", "base-node": "base-fmt", "job-id": "d0.commit1",
        "filter-node-name": "d0.commit1.flt", "auto-dismiss": False, "auto-finalize": False}}
    assert engine.job_command("mirror", "m", device="a", target="b", sync="full")["execute"] == "blockdev-mirror"
    assert engine.job_command("stream", "s", device="a")["execute"] == "block-stream"


def test_create_job_command_has_only_job_id_and_options():
    options = {"driver": "file", "filename": "/img/ov1.qcow2", "size": 0}
    assert engine.job_command("create", "cr1", options=options) == {
        "execute": "blockdev-create", "arguments": {"job-id": "cr1", "options": options}}


def test_too_long_filter_name_asks_for_one():
    job_id = "disk-9e7c85f6-b6e5-4243.mirror1"  # 31 characters: ".flt" makes 35
    with pytest.raises(ConfigError, match="filter_node"):
        engine.job_command("mirror", job_id, device="a", target="b", sync="full")
    cmd = engine.job_command("mirror", job_id, filter_node="disk-9e7c85f6-b6e5-4243.mf1", device="a", target="b",
                             sync="full")
    assert cmd["arguments"]["filter-node-name"] == "disk-9e7c85f6-b6e5-4243.mf1"
    with pytest.raises(ConfigError, match="not valid"):
        engine.job_command("mirror", "m", filter_node="1bad", device="a", target="b", sync="full")


def test_job_command_refuses_what_it_manages_and_unknown_kinds():
    with pytest.raises(ValueError, match="auto-dismiss"):
        engine.job_command("commit", "c", device="a", auto_dismiss=True)
    with pytest.raises(ValueError, match="unknown job kind"):
        engine.job_command("backup", "b", device="a")


# -- commit and stream (no ready) -----------------------------------------------------------------

INTERMEDIATE = engine.job_command("commit", "commit1", device="ov2-fmt", top_node="ov1-fmt", base_node="base-fmt")


def test_intermediate_commit_finalizes_after_the_commit_point_then_dismisses():
    fake = FakeQemu([
        step("block-commit", INTERMEDIATE["arguments"],
             status("commit1", "created", "running", "waiting", "pending")
             + [{"event": "BLOCK_JOB_PENDING", "data": {"type": "commit", "id": "commit1"}}],
             update={}),
        step("job-finalize", {"id": "commit1"},
             block_event("BLOCK_JOB_COMPLETED", "commit1", "commit", len=67108864, offset=67108864, speed=0)
             + status("commit1", "concluded"),
             update={"commit1": {"current-progress": 67108864, "total-progress": 67108864}}),
        step("job-dismiss", {"id": "commit1"}, status("commit1", "null")),
    ])
    commit = Commit(fake)
    outcome = runner(fake).run(INTERMEDIATE, before_finalize=commit)
    assert outcome == jobs.JobOutcome("commit1", "commit", "completed", None, 67108864, 67108864)
    assert fake.names() == ["block-commit", "job-finalize", "job-dismiss"]
    assert len(commit.calls) == 1
    state, sent_before = commit.calls[0]
    assert sent_before == ["block-commit"] and state.status == "pending"
    dismiss = fake.sent.index(("job-dismiss", {"id": "commit1"}))
    assert ("query-jobs", {}) in fake.sent[fake.sent.index(("job-finalize", {"id": "commit1"})):dismiss]


def test_active_commit_completes_at_ready_then_finalizes():
    cmd = engine.job_command("commit", "commit0", device="ov2-fmt")
    fake = FakeQemu([
        step("block-commit", cmd["arguments"], status("commit0", "created", "running", "ready")
             + block_event("BLOCK_JOB_READY", "commit0", "commit", len=3670016, offset=3670016, speed=0)),
        step("job-complete", {"id": "commit0"}, status("commit0", "waiting", "pending")),
        step("job-finalize", {"id": "commit0"}, status("commit0", "concluded")),
        step("job-dismiss", {"id": "commit0"}, status("commit0", "null")),
    ])
    commit = Commit(fake)
    assert runner(fake).run(cmd, before_finalize=commit).result == "completed"
    assert fake.names() == ["block-commit", "job-complete", "job-finalize", "job-dismiss"]
    assert [sent for _state, sent in commit.calls] == [["block-commit", "job-complete"]]


def test_stream_finalizes_and_dismisses():
    cmd = engine.job_command("stream", "stream1", device="ov4-fmt", base_node="base-fmt")
    assert cmd["arguments"]["filter-node-name"] == "stream1.flt"
    fake = FakeQemu([
        step("block-stream", cmd["arguments"], status("stream1", "created", "running", "waiting", "pending")),
        step("job-finalize", {"id": "stream1"}, block_event("BLOCK_JOB_COMPLETED", "stream1", "stream")
             + status("stream1", "concluded")),
        step("job-dismiss", {"id": "stream1"}),
    ])
    outcome = runner(fake).run(cmd)
    assert (outcome.type, outcome.result, outcome.error) == ("stream", "completed", None)
    assert fake.names() == ["block-stream", "job-finalize", "job-dismiss"]


def test_create_job_finalizes_by_itself_and_is_dismissed():
    cmd = engine.job_command("create", "cr-ov1", options={"driver": "qcow2", "file": "ov1-file", "size": 1 << 26})
    fake = FakeQemu([
        step("blockdev-create", cmd["arguments"],
             status("cr-ov1", "created", "running", "waiting", "pending", "concluded"),
             update={"cr-ov1": {"current-progress": 1, "total-progress": 1}}),
        step("job-dismiss", {"id": "cr-ov1"}, status("cr-ov1", "null")),
    ])
    assert runner(fake).run(cmd) == jobs.JobOutcome("cr-ov1", "create", "completed", None, 1, 1)
    assert fake.names() == ["blockdev-create", "job-dismiss"]
    with pytest.raises(ValueError, match="finalizes by itself"):
        runner(FakeQemu([])).run(cmd, before_finalize=lambda s: None)


# -- mirror -----------------------------------------------------------------------------------------

MIRROR = engine.job_command("mirror", "mA", device="src-fmt", target="tA-fmt", sync="full")
READY = status("mA", "created", "running", "ready") + block_event("BLOCK_JOB_READY", "mA", "mirror", len=67108864)


def test_mirror_pivots_with_job_complete():
    fake = FakeQemu([
        step("blockdev-mirror", MIRROR["arguments"], READY),
        step("job-complete", {"id": "mA"}, status("mA", "waiting", "pending")),
        step("job-finalize", {"id": "mA"}, block_event("BLOCK_JOB_COMPLETED", "mA", "mirror", len=88932352)
             + status("mA", "concluded"), update={"mA": {"current-progress": 88932352, "total-progress": 88932352}}),
        step("job-dismiss", {"id": "mA"}, status("mA", "null")),
    ])
    outcome = runner(fake).run(MIRROR)
    assert outcome == jobs.JobOutcome("mA", "mirror", "completed", None, 88932352, 88932352)
    assert fake.names() == ["blockdev-mirror", "job-complete", "job-finalize", "job-dismiss"]


def test_ready_mirror_kept_is_block_job_cancel_without_force():
    fake = FakeQemu([
        step("blockdev-mirror", MIRROR["arguments"], READY),
        step("block-job-cancel", {"device": "mA"}, status("mA", "waiting", "pending")),
        step("job-finalize", {"id": "mA"}, block_event("BLOCK_JOB_COMPLETED", "mA", "mirror")
             + status("mA", "concluded")),
        step("job-dismiss", {"id": "mA"}),
    ])
    outcome = runner(fake).run(MIRROR, at_ready="keep")
    assert (outcome.result, outcome.error) == ("kept", None)
    assert fake.commands()[1] == ("block-job-cancel", {"device": "mA"})  # no "force" at all


def test_wait_at_ready_returns_then_resume_completes():
    fake = FakeQemu([step("blockdev-mirror", MIRROR["arguments"], READY)])
    outcome = runner(fake).run(MIRROR, at_ready="wait")
    assert (outcome.result, outcome.id) == ("ready", "mA")
    assert fake.jobs["mA"]["status"] == "ready"
    fake.steps.extend([
        step("job-complete", {"id": "mA"}, status("mA", "waiting", "pending")),
        step("job-finalize", {"id": "mA"}, status("mA", "concluded")),
        step("job-dismiss", {"id": "mA"}),
    ])
    assert runner(fake).resume("mA").result == "completed"
    assert fake.names() == ["blockdev-mirror", "job-complete", "job-finalize", "job-dismiss"]


def _job(job_id, job_status, job_type="mirror", **over):
    record = {"id": job_id, "type": job_type, "status": job_status, "current-progress": 16777216,
              "total-progress": 67108864}
    record.update(over)
    return record


@pytest.mark.parametrize("at", ["running", "ready"])
def test_job_cancel_running_or_ready_mirror_is_cancelled(at):
    fake = FakeQemu([
        step("job-cancel", {"id": "mB"}, status("mB", "aborting")
             + block_event("BLOCK_JOB_CANCELLED", "mB", "mirror", offset=16777216) + status("mB", "concluded"),
             update={"mB": {"error": "Operation canceled"}}),
        step("job-dismiss", {"id": "mB"}),
    ], jobs_=[_job("mB", at)])
    outcome = runner(fake).cancel("mB", keep_copy=False)
    assert (outcome.result, outcome.error) == ("cancelled", "Operation canceled")
    assert fake.names() == ["job-cancel", "job-dismiss"]


def test_keep_copy_of_a_ready_mirror_is_kept():
    fake = FakeQemu([
        step("block-job-cancel", {"device": "mC2"}, status("mC2", "waiting", "pending")),
        step("job-finalize", {"id": "mC2"}, block_event("BLOCK_JOB_COMPLETED", "mC2", "mirror")
             + status("mC2", "concluded")),
        step("job-dismiss", {"id": "mC2"}),
    ], jobs_=[_job("mC2", "ready")])
    assert runner(fake).cancel("mC2", keep_copy=True).result == "kept"


def test_keep_copy_of_a_mirror_not_ready_is_a_real_cancel():
    fake = FakeQemu([
        step("job-cancel", {"id": "mD"}, status("mD", "aborting", "concluded"),
             update={"mD": {"error": "Operation canceled"}}),
        step("job-dismiss", {"id": "mD"}),
    ], jobs_=[_job("mD", "running")])
    assert runner(fake).cancel("mD", keep_copy=True).result == "cancelled"


def test_cancel_of_a_pending_job_does_not_finalize_it():
    fake = FakeQemu([
        step("job-cancel", {"id": "c1"}, status("c1", "aborting", "concluded"),
             update={"c1": {"error": "Operation canceled"}}),
        step("job-dismiss", {"id": "c1"}),
    ], jobs_=[_job("c1", "pending", "commit")])
    assert runner(fake).cancel("c1", keep_copy=False).result == "cancelled"
    assert fake.names() == ["job-cancel", "job-dismiss"]


# -- failures ---------------------------------------------------------------------------------------

def test_enospc_with_duplicated_events_fails_with_qemus_text_and_one_dismiss():
    error = block_event("BLOCK_JOB_ERROR", "mF", "mirror", operation="write", action="report")
    cmd = engine.job_command("mirror", "mF", device="src-fmt", target="tF-fmt", sync="full")
    fake = FakeQemu([
        step("blockdev-mirror", cmd["arguments"],
             status("mF", "created", "created", "running") + error + error + status("mF", "running") + error
             + status("mF", "aborting", "aborting")
             + block_event("BLOCK_JOB_COMPLETED", "mF", "mirror", offset=3145728, error="No space left on device")
             + status("mF", "concluded", "concluded"),
             update={"mF": {"error": "No space left on device"}}),
        step("job-dismiss", {"id": "mF"}),
    ])
    seen = []
    outcome = runner(fake, on_progress=seen.append).run(cmd)
    assert (outcome.result, outcome.error) == ("failed", "No space left on device")
    assert fake.names() == ["blockdev-mirror", "job-dismiss"]
    assert len(seen) == 4 and all(isinstance(s, jobs.JobState) for s in seen)  # created, running, aborting, concluded


def test_size_mismatch_concludes_at_once_as_failed():
    text = "Source and target image have different sizes"
    cmd = engine.job_command("mirror", "mS", device="src-fmt", target="small-fmt", sync="full")
    fake = FakeQemu([
        step("blockdev-mirror", cmd["arguments"], status("mS", "created", "running", "aborting", "concluded"),
             update={"mS": {"error": text}}),
        step("job-dismiss", {"id": "mS"}),
    ])
    outcome = runner(fake).run(cmd)
    assert (outcome.result, outcome.error) == ("failed", text)


def test_a_refused_command_raises_qemus_text_and_sends_nothing_more():
    cmd = engine.job_command("mirror", "mR", device="src-fmt", target="ro-fmt", sync="full")
    fake = FakeQemu([step("blockdev-mirror", cmd["arguments"], error="Block node is read-only")])
    with pytest.raises(QemuError, match="Block node is read-only") as caught:
        runner(fake).run(cmd)
    assert caught.value.desc == "Block node is read-only"
    assert fake.names() == ["blockdev-mirror"]


def test_repeated_ready_and_pending_act_once():
    fake = FakeQemu([
        step("blockdev-mirror", MIRROR["arguments"], READY + status("mA", "ready")),
        step("job-complete", {"id": "mA"}, status("mA", "standby", "ready", "waiting", "pending", "pending")),
        step("job-finalize", {"id": "mA"}, status("mA", "concluded")),
        step("job-dismiss", {"id": "mA"}),
    ])
    commit = Commit(fake)
    assert runner(fake).run(MIRROR, before_finalize=commit).result == "completed"
    assert fake.names() == ["blockdev-mirror", "job-complete", "job-finalize", "job-dismiss"]
    assert len(commit.calls) == 1


def test_a_job_dismissed_by_someone_else_is_an_error():
    fake = FakeQemu([step("blockdev-mirror", MIRROR["arguments"], status("mA", "created", "running", "null"))])
    with pytest.raises(QemuError, match="disappeared"):
        runner(fake).run(MIRROR)


# -- timeout and resume -----------------------------------------------------------------------------

def test_no_progress_for_the_timeout_leaves_the_job_and_raises_job_timeout():
    fake = FakeQemu([step("blockdev-mirror", MIRROR["arguments"], status("mA", "created", "running"))],
                    stalls=[("mA", 1048576), ("mA", 2097152), ("mA", 2097152)])
    with pytest.raises(jobs.JobTimeout) as caught:
        runner(fake, timeout=3.0).run(MIRROR)
    state = caught.value.state
    assert (state.id, state.status, state.current) == ("mA", "running", 2097152)
    assert "left running" in str(caught.value)
    assert len(fake.waits) == 2 + 3  # two events; then progress twice reset the deadline, the third look saw none
    assert all(0 <= w <= 3.0 for w in fake.waits)
    assert fake.names() == ["blockdev-mirror"]  # not cancelled
    assert fake.jobs["mA"]["status"] == "running"


def test_resume_at_pending_calls_before_finalize_once_despite_stale_events():
    fake = FakeQemu([
        step("job-finalize", {"id": "commit1"}, status("commit1", "concluded")),
        step("job-dismiss", {"id": "commit1"}),
    ], jobs_=[_job("commit1", "pending", "commit")], queued=status("commit1", "waiting", "pending"))
    commit = Commit(fake)
    assert runner(fake).resume("commit1", before_finalize=commit).result == "completed"
    assert len(commit.calls) == 1
    assert fake.names() == ["job-finalize", "job-dismiss"]


def test_resume_of_a_kept_mirror_past_ready_says_kept():
    fake = FakeQemu([
        step("job-finalize", {"id": "mA"}, status("mA", "concluded")),
        step("job-dismiss", {"id": "mA"}),
    ], jobs_=[_job("mA", "pending")])
    assert runner(fake).resume("mA", at_ready="keep").result == "kept"


def test_resume_of_a_concluded_job_dismisses_it():
    fake = FakeQemu([step("job-dismiss", {"id": "mA"})],
                    jobs_=[_job("mA", "concluded", error="Operation canceled")])
    assert runner(fake).resume("mA").result == "cancelled"


def test_resume_of_an_absent_job_says_so():
    with pytest.raises(QemuError, match="not in QEMU"):
        runner(FakeQemu([])).resume("gone")


def test_dismiss_concluded_only_touches_concluded_jobs():
    fake = FakeQemu([step("job-dismiss", {"id": "mF"})],
                    jobs_=[_job("mF", "concluded", error="No space left on device"), _job("mR", "running")])
    r = runner(fake)
    assert r.dismiss_concluded("mR") is None and r.dismiss_concluded("nosuch") is None
    outcome = r.dismiss_concluded("mF")
    assert (outcome.result, outcome.error) == ("failed", "No space left on device")
    assert fake.names() == ["job-dismiss"]


def test_query_reads_query_jobs():
    fake = FakeQemu([], jobs_=[_job("a", "running"), _job("b", "ready")])
    r = runner(fake)
    assert [s.id for s in r.query()] == ["a", "b"]
    assert r.query("b") == [jobs.JobState("b", "mirror", "ready", 16777216, 67108864, None)]


def test_a_failing_commit_point_leaves_the_job_pending_for_resume():
    fake = FakeQemu([step("block-commit", INTERMEDIATE["arguments"],
                          status("commit1", "created", "running", "waiting", "pending"))])

    def journal_full(state):
        raise OSError("No space left on device")
    with pytest.raises(OSError):
        runner(fake).run(INTERMEDIATE, before_finalize=journal_full)
    assert fake.names() == ["block-commit"] and fake.jobs["commit1"]["status"] == "pending"
    fake.steps.extend([step("job-finalize", {"id": "commit1"}, status("commit1", "concluded")),
                       step("job-dismiss", {"id": "commit1"})])
    assert runner(fake).resume("commit1", before_finalize=lambda state: None).result == "completed"
    assert fake.names() == ["block-commit", "job-finalize", "job-dismiss"]
