"""A runtime file that does not describe its QEMU, and starts that end half-way, on a real QEMU.

A damaged or wrong runtime file is refused naming the file and the key, and nothing is sent
that changes QEMU; a start given up on leaves no QEMU behind; a start seen half-way is one QEMU.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from .conftest import COLLECTIONS, run_module
from .helpers import runtime_of

READ_ONLY = ("qmp_capabilities", "qom-list", "qom-get", "query-block", "query-pci", "query-named-block-nodes",
             "query-status", "query-version", "query-commands", "query-jobs", "query-block-jobs")


def runtime_path(vm):
    return os.path.join(vm.state_dir, "runtime.json")


def write_runtime(vm, data):
    with open(runtime_path(vm), "w") as handle:
        json.dump(data, handle)


def changing(wire):
    """The commands on the wire that could change QEMU (HMP only to read ``info network``)."""
    return [m for m in wire.messages if m.get("execute") not in READ_ONLY
            and not (m.get("execute") == "human-monitor-command"
                     and m["arguments"]["command-line"].startswith("info "))]


def warnings_of(result):
    """The warning texts of a result (ansible-core 2.19 gives each as a summary with its event)."""
    return [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings") or []]


def two_disks(vm):
    return [dict(name="a", path=vm.image("a.raw")), dict(name="b", path=vm.image("b.raw"))]


def test_a_detach_entry_without_its_old_record_is_refused_and_the_disk_stays(vm):
    disks = two_disks(vm)
    assert not vm.run(disks=disks).get("failed")
    data = runtime_of(vm)
    b = next(r for r in data["layout"]["devices"] if r["name"] == "b")
    data["journal"] = [{"action": "detach", "id": b["id"], "creates": {}, "removes": {"devices": [b["id"]]}}]
    write_runtime(vm, data)
    with open(runtime_path(vm), "rb") as handle:
        planted = handle.read()

    with vm.record_qmp() as wire:
        again = vm.run(disks=disks)
    assert again.get("failed") and again["changed"] is False
    assert "runtime file %s is damaged: journal[0].old is missing" % runtime_path(vm) in again["msg"], again["msg"]
    assert "state: stopped" in again["msg"]
    assert changing(wire) == []
    with open(runtime_path(vm), "rb") as handle:
        assert handle.read() == planted
    with vm.qmp() as qmp:
        assert b["id"] in {p["name"] for p in qmp("qom-list", path="/machine/peripheral")}
        assert any(blk.get("qdev", "").startswith("/machine/peripheral/%s/" % b["id"]) and blk.get("inserted")
                   for blk in qmp("query-block"))


def test_a_record_naming_a_node_qemu_lacks_is_refused_before_anything_is_sent(vm):
    disks = two_disks(vm)
    assert not vm.run(disks=disks).get("failed")
    data = runtime_of(vm)
    index, b = next((i, r) for i, r in enumerate(data["layout"]["devices"]) if r["name"] == "b")
    real_top = b["nodes"][-1]["node-name"]
    b["nodes"][-1]["node-name"] = b["id"] + ".fmt7"
    write_runtime(vm, data)

    with vm.record_qmp() as wire:
        again = vm.run(disks=disks)
    assert again.get("failed") and again["changed"] is False, again
    assert "runtime file %s does not match QEMU: layout.devices[%d]" % (runtime_path(vm), index) in again["msg"]
    assert b["id"] + ".fmt7" in again["msg"] and real_top in again["msg"], again["msg"]
    assert wire.sent and changing(wire) == []
    with vm.qmp() as qmp:
        assert real_top in {n["node-name"] for n in qmp("query-named-block-nodes", flat=True)}


def test_after_a_commit_the_unused_nodes_stay_and_the_instance_run_is_a_no_op(vm):
    base = vm.image("base.qcow2", fmt="qcow2")
    disks = [dict(name="data", path=base, format="qcow2")]
    assert not vm.run(disks=disks).get("failed")
    blockdev = dict(name="t", state_dir=vm.state_dir, disk="data")
    assert not run_module("qemu_blockdev", dict(blockdev, snapshot=dict(path=str(vm.images / "ov.qcow2")))).get("failed")
    done = run_module("qemu_blockdev", dict(blockdev, commit={}))
    assert done["job"]["result"] == "completed", done
    assert done["unused_nodes"]
    with vm.qmp() as qmp:
        before = {n["node-name"] for n in qmp("query-named-block-nodes", flat=True)}
    assert set(done["unused_nodes"]) <= before

    again = vm.run(disks=disks)
    assert not again.get("failed"), again.get("msg")
    assert again["changed"] is False
    with vm.qmp() as qmp:
        assert {n["node-name"] for n in qmp("query-named-block-nodes", flat=True)} == before


@pytest.fixture
def silent_http():
    """A local TCP server that accepts and never answers: QEMU's curl driver hangs opening a URL
    on it (until its own 5 s timeout, block/curl.c CURL_TIMEOUT_DEFAULT)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted, stop = [], threading.Event()

    def serve():
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield "http://127.0.0.1:%d/x.iso" % server.getsockname()[1]
    stop.set()
    server.shutdown(socket.SHUT_RDWR)
    server.close()
    thread.join(10)
    for conn in accepted:
        conn.close()


def wait_pidfile(vm, deadline=20.0):
    """The pid QEMU wrote once it daemonised (it writes its pidfile before opening its images)."""
    path = os.path.join(vm.state_dir, "qemu.pid")
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with open(path) as handle:
                text = handle.read().strip()
            if text:
                return int(text)
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    raise AssertionError("QEMU wrote no pidfile within %s s" % deadline)


def test_a_start_that_times_out_leaves_no_qemu(vm, silent_http):
    failed = vm.run(cdroms=[dict(name="cd", path=silent_http)], start_timeout=3)
    assert failed.get("failed") and "within 3" in failed["msg"], failed
    assert vm.pids() == []  # at once: QEMU's own curl timeout would end it 2 s later


def test_a_qemu_killed_as_it_starts_is_named_with_what_to_do(vm, silent_http):
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(vm.run(cdroms=[dict(name="cd", path=silent_http)])))
    runner.start()
    try:
        os.kill(wait_pidfile(vm), signal.SIGKILL)
    finally:
        runner.join(60)
    assert outcome.get("failed"), outcome
    assert "QEMU ended while it started, before it was ready" in outcome["msg"], outcome["msg"]
    assert "status 1" in outcome["msg"] and "run again" in outcome["msg"]
    assert vm.pids() == []


def start_module(vm, args):
    """qemu_instance as Ansible runs it, in the background (the test kills it)."""
    argsfile = vm.state_dir + ".bg.json"
    with open(argsfile, "w", encoding="utf-8") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    return subprocess.Popen([sys.executable, "-m", "ansible_collections.blocklayer.qemu.plugins.modules.qemu_instance",
                             argsfile], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=COLLECTIONS))


def test_a_run_killed_while_qemu_starts_the_next_sees_one_starting_qemu(vm, silent_http):
    disk = dict(name="a", path=vm.image("a.raw"))
    module = start_module(vm, vm.args(disks=[disk], cdroms=[dict(name="cd", path=silent_http)]))
    try:
        qemu = wait_pidfile(vm)
    finally:
        module.kill()
        module.wait(30)
    assert len(vm.pids()) == 2 and qemu in vm.pids()  # the -daemonize launcher and the QEMU, both hanging

    again = vm.run(disks=[disk])
    assert not again.get("failed"), again["msg"]
    assert vm.pids() == [again["pid"]] and again["pid"] != qemu
    with vm.qmp() as qmp:
        assert qmp("query-status")["status"] == "running"


def test_a_runtime_file_with_another_uuid_than_its_qemu_is_refused(vm):
    disks = two_disks(vm)
    started = vm.run(disks=disks)
    data = runtime_of(vm)
    real = data["layout"]["uuid"]
    data["layout"]["uuid"] = "00000000-0000-4000-8000-000000000001"
    write_runtime(vm, data)
    again = vm.run(disks=disks)
    assert again.get("failed") and again["changed"] is False
    assert "layout.uuid is 00000000-0000-4000-8000-000000000001" in again["msg"], again["msg"]
    assert "-uuid %s" % real in again["msg"] and runtime_path(vm) in again["msg"]
    assert vm.pids() == [started["pid"]]
    stopped = vm.run(state="stopped")
    assert not stopped.get("failed") and stopped["changed"] and vm.pids() == []


def test_a_runtime_file_naming_another_pid_is_corrected_with_a_warning(vm):
    disks = two_disks(vm)
    started = vm.run(disks=disks)
    data = runtime_of(vm)
    data["host"]["pid"] = 1
    write_runtime(vm, data)
    again = vm.run(disks=disks)
    assert not again.get("failed") and again["changed"] is False, again.get("msg")
    assert any("said host.pid 1" in w and "pid %d" % started["pid"] in w for w in warnings_of(again)), again
    assert runtime_of(vm)["host"]["pid"] == started["pid"]


def test_state_stopped_stops_qemu_when_the_runtime_file_is_a_directory(vm):
    started = vm.run(disks=two_disks(vm))
    os.unlink(runtime_path(vm))
    os.mkdir(runtime_path(vm))
    stopped = vm.run(state="stopped")
    assert not stopped.get("failed"), stopped["msg"]
    assert stopped["changed"] and vm.pids() == [] and started["pid"] not in vm.pids()
    assert os.path.isdir(runtime_path(vm))  # not the collection's to remove
