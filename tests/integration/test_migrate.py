"""Live migration between two "hosts" on this machine (a state dir each), with the tiny guest:
what the guest wrote on the source it reads on the target, with its hot-plugged disk and its
snapshot overlay, between the two QEMU generations the machine has (Debian 12: 7.2 and 10.0; 13: 10.0
and 11.1) either way; a failed migration leaves the source running with its runtime file unchanged
and no target QEMU."""

import json
import os
import signal
import subprocess
import sys

import pytest

from .conftest import BOOT, GUEST_MARKS, ROOT, Qmp, alive, cmdline_of, qemu_pids, run_module
from .helpers import PAIRS, MiB, Pair, by_serial, image_holds, task_status

pytestmark = GUEST_MARKS


@pytest.fixture
def pair(tmp_path, request):
    source_binary, target_binary = request.param
    yield Pair(tmp_path, source_binary, target_binary)
    for pid in qemu_pids(str(tmp_path)):
        os.kill(pid, signal.SIGKILL)


def _exported_and_prepared(pair, **prepare):
    exported = pair.step(pair.src, "export")
    assert not exported.get("failed"), exported
    prepared = pair.step(pair.dst, "prepare", layout=exported["layout"], source=exported["source"],
                         qemu_binary=pair.target_binary, **prepare)
    return prepared


def _source_machine(pair):
    """The machine the source's QEMU emulates, from its command line or, for the alias pc, as
    that QEMU resolves it (query-machines)."""
    argv = cmdline_of(qemu_pids(pair.src)[0])
    machine = argv[argv.index("-machine") + 1]
    with Qmp(os.path.join(pair.src, "qmp.sock")) as qmp:
        return next((m["name"] for m in qmp("query-machines") if m.get("alias") == machine), machine)


@pytest.mark.parametrize("pair", PAIRS, indirect=True)
def test_the_guest_moves_with_its_hot_plugged_disk_and_overlay(pair):
    root = pair.image("root.qcow2", "32M", "qcow2")
    pair.boot(scsi_controller_type="virtio-scsi-pci", disks=[dict(name="root", path=root, format="qcow2", serial="R1")])
    hot = pair.image("hot.raw", "16M", "raw")
    added = run_module("qemu_device", dict(name="m", state_dir=pair.src, kind="disk", unplug_timeout=60,
                                           device=dict(name="hot", path=hot, disk_type="scsi-hd", serial="H1")))
    assert added["changed"], added
    overlay = str(pair.images / "ov.qcow2")
    snap = run_module("qemu_blockdev", dict(name="m", state_dir=pair.src, disk="root", snapshot=dict(path=overlay)))
    assert snap["changed"], snap
    with pair.agent(pair.src) as ga:
        ga.wait_disk("sda")
        seen = by_serial(ga)
        ga.write(seen["R1"]["name"], 2 * MiB, MiB, 0x5A)  # into the overlay
        ga.write(seen["H1"]["name"], MiB, MiB, 0xA5)
    machine = _source_machine(pair)
    source_pid = qemu_pids(pair.src)[0]

    prepared = _exported_and_prepared(pair)
    assert not prepared.get("failed"), prepared
    target_pid = prepared["pid"]
    argv = cmdline_of(target_pid)
    assert argv[argv.index("-machine") + 1] == machine and argv[argv.index("-cpu") + 1] == "qemu64"
    assert pair.status(pair.dst) == "inmigrate"
    sent = pair.step(pair.src, "migrate", diff=True, uri=prepared["uri"], timeout=120)
    assert sent.get("status") == "completed", sent
    assert sent["total_time"] > 0 and sent["downtime"] > 0
    assert sent["ram"]["total"] > 0 and sent["ram"]["transferred"] > 0 and sent["ram"]["remaining"] == 0
    assert sent["diff"] == {"before": {"status": "running"}, "after": {"status": "migrated"}}
    finished = pair.step(pair.dst, "finish", diff=True, timeout=60)
    assert finished.get("status") == "running", finished
    assert finished["diff"] == {"before": {"status": "incoming"}, "after": {"status": "running"}}

    assert not alive(source_pid) and qemu_pids(pair.src) == []
    assert json.loads(pair.runtime_bytes(pair.src))["status"] == "migrated"
    assert json.loads(pair.runtime_bytes(pair.dst))["status"] == "running"
    with Qmp(os.path.join(pair.dst, "qmp.sock")) as qmp:
        assert qmp("query-status")["status"] == "running"
        files = {b["qdev"]: b["inserted"]["file"] for b in qmp("query-block") if b.get("inserted")}
    assert overlay in files.values() and hot in files.values()  # the overlay is the root's top on the target
    with pair.agent(pair.dst) as ga:
        seen = by_serial(ga)
        assert ga.read_is(seen["R1"]["name"], 2 * MiB, MiB, 0x5A)
        assert ga.read_is(seen["H1"]["name"], MiB, MiB, 0xA5)
        ga.write(seen["H1"]["name"], 4 * MiB, MiB, 0x3C)  # the target owns the image now
    # The instance is managed on the target: stopping it ends its QEMU, and the images hold
    # what the guest wrote on both hosts.
    stopped = run_module("qemu_instance", dict(name="m", state_dir=pair.dst, state="stopped", shutdown_timeout=0))
    assert stopped["changed"] and qemu_pids(pair.dst) == []
    assert image_holds(hot, "raw", 0xA5, MiB, MiB) and image_holds(hot, "raw", 0x3C, 4 * MiB, MiB)
    assert image_holds(overlay, "qcow2", 0x5A, 2 * MiB, MiB)
    # The source host refuses to start the guest a second time.
    again = run_module("qemu_instance", dict(BOOT, name="m", state_dir=pair.src, accel="tcg",
                                             qemu_binary=pair.source_binary,
                                             disks=[dict(name="root", path=root, format="qcow2")]))
    assert again.get("failed") and "migrated" in again["msg"] and qemu_pids(pair.src) == []


@pytest.mark.parametrize("pair", PAIRS[1:2] or PAIRS[:1], indirect=True)
def test_a_paused_guest_arrives_paused_and_is_resumed_with_its_images_active(pair):
    """Ganeti migrates non-live as stop + migrate; a 10.0 target activates images only when the
    guest runs, so finish must cont it (docs/migration.md)."""
    root = pair.image("root.qcow2", "32M", "qcow2")
    pair.boot(disks=[dict(name="root", path=root, format="qcow2", serial="R1")])
    with pair.agent(pair.src) as ga:
        ga.write(by_serial(ga)["R1"]["name"], MiB, MiB, 0x61)
    with Qmp(os.path.join(pair.src, "qmp.sock")) as qmp:
        qmp("stop")
    prepared = _exported_and_prepared(pair)
    assert not prepared.get("failed"), prepared
    sent = pair.step(pair.src, "migrate", uri=prepared["uri"], timeout=120)
    assert sent.get("status") == "completed", sent
    finished = pair.step(pair.dst, "finish", timeout=60)
    assert finished.get("status") == "running", finished
    assert [a.get("reason") for a in finished["actions"] if a["action"] == "cont"] == ["the guest arrived paused"]
    with Qmp(os.path.join(pair.dst, "qmp.sock")) as qmp:
        assert qmp("query-status")["status"] == "running"
        nodes = qmp("query-named-block-nodes", flat=True)
    assert nodes and all(n.get("active", True) for n in nodes)  # 7.2 has no "active"; 10.0 on must say true
    with pair.agent(pair.dst) as ga:
        seen = by_serial(ga)
        assert ga.read_is(seen["R1"]["name"], MiB, MiB, 0x61)
        ga.write(seen["R1"]["name"], 3 * MiB, MiB, 0x62)  # writable: the target holds the locks


@pytest.mark.parametrize("pair", PAIRS[:1], indirect=True)
def test_a_target_that_cannot_start_or_rejects_the_stream_leaves_the_source_running(pair):
    root, data = pair.image("root.qcow2", "32M", "qcow2"), pair.image("data.raw", "16M", "raw")
    pair.boot(disks=[dict(name="root", path=root, format="qcow2", serial="R1"),
                     dict(name="data", path=data, format="raw", serial="D1")])
    source_pid = qemu_pids(pair.src)[0]
    before = pair.runtime_bytes(pair.src)
    exported = pair.step(pair.src, "export")

    def prepare(layout):
        return pair.step(pair.dst, "prepare", layout=layout, source=exported["source"], qemu_binary=pair.target_binary)

    # 1. A device model the target's QEMU does not have: it cannot start.
    broken = json.loads(json.dumps(exported["layout"]))
    broken["devices"][1]["props"]["driver"] = "virtio-blk-none"
    failed = prepare(broken)
    assert failed.get("failed") and failed["msg"].startswith("prepare:") and "virtio-blk-none" in failed["msg"], failed
    _assert_no_target(pair)
    _assert_source_untouched(pair, before, source_pid)

    # 2. A target without the second disk starts, then rejects the stream; the source resumes.
    short = json.loads(json.dumps(exported["layout"]))
    short["devices"] = short["devices"][:1]
    prepared = prepare(short)
    assert not prepared.get("failed"), prepared
    rejected = pair.step(pair.src, "migrate", uri=prepared["uri"], timeout=120)
    assert rejected.get("failed") and rejected["msg"].startswith("migrate:"), rejected
    assert "the source runs on" in rejected["msg"]
    _assert_source_untouched(pair, before, source_pid)
    assert pair.step(pair.dst, "abort")["changed"]
    _assert_no_target(pair)
    with pair.agent(pair.src) as ga:
        assert {"R1", "D1"} <= set(by_serial(ga))


def _slow(pair):
    """Make the source's migration take minutes (1 MiB/s for ~77 MB), so a test can act during it."""
    with Qmp(os.path.join(pair.src, "qmp.sock")) as qmp:
        qmp("migrate-set-parameters", **{"max-bandwidth": MiB})


def _assert_source_untouched(pair, before, source_pid):
    assert alive(source_pid) and qemu_pids(pair.src) == [source_pid]
    assert pair.status(pair.src) == "running"
    assert pair.runtime_bytes(pair.src) == before


def _assert_no_target(pair):
    assert qemu_pids(pair.dst) == []
    assert not os.path.exists(os.path.join(pair.dst, "runtime.json"))


@pytest.mark.parametrize("pair", PAIRS, indirect=True)
def test_failed_migrations_leave_the_source_running_and_no_target(pair):
    root = pair.image("root.qcow2", "32M", "qcow2")
    pair.boot(disks=[dict(name="root", path=root, format="qcow2", serial="R1")])
    with pair.agent(pair.src) as ga:
        ga.write(by_serial(ga)["R1"]["name"], MiB, MiB, 0x77)
    source_pid = qemu_pids(pair.src)[0]
    before = pair.runtime_bytes(pair.src)

    # 1. The target's layout differs: its images are not where the path_map says.
    prepared = _exported_and_prepared(pair, path_map={str(pair.images): str(pair.tmp / "nowhere")})
    assert prepared.get("failed") and prepared["msg"].startswith("prepare:"), prepared
    assert "nowhere/root.qcow2" in prepared["msg"]
    _assert_no_target(pair)
    _assert_source_untouched(pair, before, source_pid)

    # 2. The migration times out: cancelled, the source runs on; abort ends the target.
    _slow(pair)
    prepared = _exported_and_prepared(pair)
    assert not prepared.get("failed"), prepared
    timed_out = pair.step(pair.src, "migrate", uri=prepared["uri"], timeout=1)
    assert timed_out.get("failed") and timed_out["msg"].startswith("migrate:") and "timeout" in timed_out["msg"]
    assert "MiB of guest memory sent)" in timed_out["msg"], timed_out["msg"]
    _assert_source_untouched(pair, before, source_pid)
    aborted = pair.step(pair.dst, "abort")
    assert aborted["changed"], aborted
    _assert_no_target(pair)

    # 3. The target dies while the guest is sent.
    prepared = _exported_and_prepared(pair)
    target_pid = prepared["pid"]
    with Qmp(os.path.join(pair.dst, "qmp.sock")) as target:
        proc = subprocess.Popen([sys.executable, "-c", _MIGRATE_IN_CHILD, pair.src, prepared["uri"]],
                                stdout=subprocess.PIPE, text=True, cwd=ROOT)
        # The target's own events say when the stream flows (events are on since prepare).
        while True:
            event = target.mon.pull_event(wait=60.0)
            if event and event["event"] == "MIGRATION" and event["data"]["status"] == "active":
                break
    os.kill(target_pid, signal.SIGKILL)
    out = proc.communicate(timeout=300)[0]
    died = json.loads(out)
    assert died.get("failed") and died["msg"].startswith("migrate:"), died
    _assert_source_untouched(pair, before, source_pid)
    assert pair.step(pair.dst, "abort")["changed"]
    _assert_no_target(pair)
    with pair.agent(pair.src) as ga:  # the guest carried on on the source
        assert ga.read_is(by_serial(ga)["R1"]["name"], MiB, MiB, 0x77)


_MIGRATE_IN_CHILD = """
import json, sys
sys.path.insert(0, "tests")  # as pytest imports it: integration.conftest imports qmp_wire
from integration.conftest import run_module
print(json.dumps(run_module("qemu_migrate", dict(name="m", state_dir=sys.argv[1], step="migrate", uri=sys.argv[2],
                                                 timeout=240))))
"""


PLAY = """
- hosts: src
  gather_facts: false
  roles:
    - role: blocklayer.qemu.migrate
      migrate_instance: m
      migrate_source: src
      migrate_target: dst
      migrate_state_dir: {src}
      migrate_target_state_dir: {dst}
      migrate_target_qemu_binary: {binary}
      migrate_path_map: {path_map}
"""


def _play(pair, path_map):
    play = pair.tmp / "play.yml"
    play.write_text(PLAY.format(src=pair.src, dst=pair.dst, binary=pair.target_binary, path_map=json.dumps(path_map)))
    inventory = pair.tmp / "inventory.yml"
    inventory.write_text("all:\n  hosts:\n" + "".join(
        "    %s:\n      ansible_connection: local\n      ansible_python_interpreter: %s\n" % (h, sys.executable)
        for h in ("src", "dst")))
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="default",
               ANSIBLE_NOCOLOR="1")
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", str(inventory),
                           str(play)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False)


@pytest.mark.parametrize("pair", PAIRS[1:2] or PAIRS[:1], indirect=True)
def test_the_role_migrates_and_a_failed_prepare_aborts_naming_the_step(pair):
    root = pair.image("root.qcow2", "32M", "qcow2")
    pair.boot(disks=[dict(name="root", path=root, format="qcow2", serial="R1")])
    with pair.agent(pair.src) as ga:
        ga.write(by_serial(ga)["R1"]["name"], MiB, MiB, 0x42)
    before = pair.runtime_bytes(pair.src)
    source_pid = qemu_pids(pair.src)[0]

    failed = _play(pair, {str(pair.images): str(pair.tmp / "nowhere")})
    assert failed.returncode != 0
    assert "failed at 'Prepare the target'" in failed.stdout and "nowhere/root.qcow2" in failed.stdout, failed.stdout
    _assert_no_target(pair)
    _assert_source_untouched(pair, before, source_pid)

    moved = _play(pair, {})
    assert moved.returncode == 0, moved.stdout[-3000:] + moved.stderr[-2000:]
    status = task_status(moved.stdout)
    assert status["blocklayer.qemu.migrate : Send the guest from the source"] == "changed", status
    assert not alive(source_pid) and qemu_pids(pair.src) == []
    assert pair.status(pair.dst) == "running"
    with pair.agent(pair.dst) as ga:
        assert ga.read_is(by_serial(ga)["R1"]["name"], MiB, MiB, 0x42)
