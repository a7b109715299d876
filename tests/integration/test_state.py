"""The instance's state against a hostile neighbour, a full disk, a stuck lock and typos."""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from .conftest import COLLECTIONS, qemu_pids, tmpfs
from .faults import AFTER_QMP, AT_SAVE, MODULE, result_of, run_hooked
from .helpers import assert_converged, mutating


def runtime_text(vm):
    with open(os.path.join(vm.state_dir, "runtime.json"), "rb") as handle:
        return handle.read()


def test_state_dir_that_is_a_symlink_is_refused_and_its_target_untouched(vm, tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (target / "console.log").write_text("precious\n")
    os.symlink(str(target), vm.state_dir)
    for state in ("running", "absent"):
        result = vm.run(state=state, disks=[dict(name="a", path=vm.image("a%s.raw" % state))])
        assert result["failed"] and "symlink" in result["msg"] and vm.state_dir in result["msg"]
    assert sorted(os.listdir(str(target))) == ["console.log"]
    assert (target / "console.log").read_text() == "precious\n" and vm.pids() == []


def test_state_dir_of_another_user_is_refused_and_not_re_moded(vm):
    os.mkdir(vm.state_dir, 0o755)
    os.chown(vm.state_dir, 65534, 65534)
    result = vm.run(disks=[dict(name="a", path=vm.image("a.raw"))])
    assert result["failed"] and "owned by" in result["msg"] and "65534" in result["msg"]
    st = os.stat(vm.state_dir)
    assert (st.st_uid, st.st_mode & 0o777) == (65534, 0o755) and os.listdir(vm.state_dir) == []


def test_a_planted_console_log_link_is_never_followed(vm, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("do not touch\n")
    os.mkdir(vm.state_dir, 0o700)
    os.symlink(str(victim), os.path.join(vm.state_dir, "console.log"))
    os.symlink(str(victim), os.path.join(vm.state_dir, ".runtime.json.tmp"))
    result = vm.run(disks=[dict(name="a", path=vm.image("a.raw"))])
    assert result["changed"] and not result.get("failed"), result.get("msg")
    assert victim.read_text() == "do not touch\n"
    assert not os.path.islink(os.path.join(vm.state_dir, "console.log"))


def test_absent_removes_nothing_in_a_dir_that_never_held_an_instance(vm):
    os.mkdir(vm.state_dir, 0o700)
    for name in ("console.log", "lock"):
        with open(os.path.join(vm.state_dir, name), "w") as handle:
            handle.write("mine\n")
    result = vm.run(state="absent")
    assert not result.get("failed"), result.get("msg")
    assert sorted(os.listdir(vm.state_dir)) == ["console.log", "lock"]


def test_absent_removes_what_it_created_and_the_dir(vm):
    vm.run(disks=[dict(name="a", path=vm.image("a.raw"))])
    result = vm.run(state="absent")
    assert result["changed"] and not os.path.exists(vm.state_dir) and vm.pids() == []


def test_a_lock_wait_is_bounded_and_names_the_holder(vm):
    disks = [dict(name="a", path=vm.image("a.raw"))]
    vm.run(disks=disks)
    fd = os.open(vm.state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        started = time.monotonic()
        result = vm.run(disks=disks, lock_timeout=1)
        assert time.monotonic() - started < 15
        assert result["failed"] and "locked by pid %d" % os.getpid() in result["msg"], result["msg"]
    finally:
        os.close(fd)
    assert vm.run(disks=disks)["changed"] is False


@pytest.mark.parametrize("content", [b"[]", b"null", b'{"version": "2"}', b'{"version": 2, "layout": {}}'])
def test_a_damaged_runtime_file_is_refused_and_stopped_still_stops_qemu(vm, content):
    disks = [dict(name="a", path=vm.image("a.raw"))]
    first = vm.run(disks=disks)
    with open(os.path.join(vm.state_dir, "runtime.json"), "wb") as handle:
        handle.write(content)
    again = vm.run(disks=disks)
    assert again["failed"] and "runtime.json" in again["msg"] and "state: stopped" in again["msg"]
    assert vm.pids() == [first["pid"]] and runtime_text(vm) == content
    stopped = vm.run(state="stopped")
    assert stopped["changed"] and not stopped.get("failed"), stopped.get("msg")
    assert vm.pids() == []


def test_a_typo_with_allow_restart_fails_before_anything_is_stopped(vm):
    first = vm.run(disks=[dict(name="a", path=vm.image("a.raw"))])
    before = runtime_text(vm)
    typo = vm.run(allow_restart=True, memory=512, disks=[dict(name="a", path=str(vm.images / "a.rwa"))])
    assert typo["failed"] and "a.rwa does not exist" in typo["msg"]
    assert typo["changed"] is False and vm.pids() == [first["pid"]] and runtime_text(vm) == before


def test_a_restart_whose_new_declaration_cannot_start_brings_the_old_one_back(vm, tmp_path):
    locked = vm.image("locked.qcow2", fmt="qcow2")
    other = vm.run(name="other", state_dir=str(tmp_path / "other"), disks=[dict(name="x", path=locked, format="qcow2")])
    assert other["changed"]
    a = dict(name="a", path=vm.image("a.raw"))
    first = vm.run(memory=256, disks=[a])
    result = vm.run(allow_restart=True, memory=384, disks=[a, dict(name="b", path=locked, format="qcow2")])
    assert result["failed"] and "previous one runs again" in result["msg"] and "disks[b]" in result["msg"]
    assert result["changed"] is True
    pids = [p for p in vm.pids() if p != other["pid"]]
    assert len(pids) == 1 and pids[0] != first["pid"]
    data = json.loads(runtime_text(vm))
    assert data["layout"]["declaration"]["machine"]["memory"] == 256
    assert [d["name"] for d in data["layout"]["devices"]] == ["a"]
    assert vm.run(memory=256, disks=[a])["changed"] is False


def test_a_qemu_that_dies_during_an_unplug_wait_ends_it_at_once(vm):
    a, b = dict(name="a", path=vm.image("a.raw")), dict(name="b", path=vm.image("b.raw"))
    vm.run(disks=[a, b])
    started = time.monotonic()
    # QEMU (not the module) is killed right after the module's device_del was answered.
    proc = run_hooked(vm.args(disks=[a], unplug_timeout=120), vm.state_dir + ".kill.json", AFTER_QMP,
                      1, "device_del", os.path.join(vm.state_dir, "qemu.pid"), "SIGKILL")
    elapsed = time.monotonic() - started
    result = result_of(proc)
    assert result["failed"] and "QEMU closed its QMP connection" in result["msg"], result.get("exception")
    assert elapsed < 30  # not the 120 s of unplug_timeout


def fill(directory):
    """Fill the filesystem of ``directory`` with a filler file; returns its path."""
    filler = os.path.join(directory, "filler")
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass
    return filler


@pytest.fixture
def small_fs(tmp_path):
    with tmpfs(tmp_path / "fs", "2m") as mount:
        yield str(mount)


def test_a_full_disk_when_the_record_is_saved_changes_nothing(vm, small_fs):
    state_dir = os.path.join(small_fs, "state")
    a, b = dict(name="a", path=vm.image("a.raw")), dict(name="b", path=vm.image("b.raw"), disk_type="scsi-hd")
    first = vm.run(state_dir=state_dir, disks=[a])
    before = open(os.path.join(state_dir, "runtime.json"), "rb").read()
    filler = fill(small_fs)
    full = vm.run(state_dir=state_dir, disks=[a, b])
    assert full["failed"] and "No space left on device" in full["msg"] and full["changed"] is False
    assert mutating(full) == []  # QEMU was only asked
    assert open(os.path.join(state_dir, "runtime.json"), "rb").read() == before
    os.unlink(filler)
    done = vm.run(state_dir=state_dir, disks=[a, b])
    assert done["changed"] and [x["action"] for x in done["actions"]] == ["attach", "attach"]
    assert qemu_pids(state_dir) == [first["pid"]]  # the same QEMU all along
    vm.run(state_dir=state_dir, state="absent")


def test_a_full_disk_after_the_commands_is_repaired_by_the_next_run(vm, small_fs):
    state_dir = os.path.join(small_fs, "state")
    a, b = dict(name="a", path=vm.image("a.raw")), dict(name="b", path=vm.image("b.raw"), disk_type="scsi-hd")
    vm.run(state_dir=state_dir, scsi_controller_type="virtio-scsi-pci", disks=[a])
    proc = run_hooked(vm.args(state_dir=state_dir, scsi_controller_type="virtio-scsi-pci", disks=[a, b]),
                      os.path.join(str(vm.images), "args.json"), AT_SAVE, os.path.join(str(vm.images), "saves"),
                      small_fs, 2)  # the filesystem fills up just before the second save
    result = result_of(proc)
    assert result["failed"] and "No space left on device" in result["msg"] and result["changed"] is True
    journal = json.loads(open(os.path.join(state_dir, "runtime.json")).read())["journal"]
    assert [(e["action"], e["record"]["name"]) for e in journal] == [("attach", "scsi"), ("attach", "b")]
    os.unlink(os.path.join(small_fs, "filler"))
    again = vm.run(state_dir=state_dir, scsi_controller_type="virtio-scsi-pci", disks=[a, b])
    assert not again.get("failed"), again.get("msg")
    assert [x["action"] for x in again["actions"]] == ["recover", "recover"]  # adopted, not attached twice
    data = json.loads(open(os.path.join(state_dir, "runtime.json")).read())
    assert data["journal"] == [] and [d["name"] for d in data["layout"]["devices"]] == ["a", "b"]
    assert vm.run(state_dir=state_dir, scsi_controller_type="virtio-scsi-pci", disks=[a, b])["changed"] is False
    vm.run(state_dir=state_dir, state="absent")


def test_another_user_running_the_module_on_roots_state_dir_gets_a_message(vm, request):
    disks = [dict(name="a", path=vm.image("a.raw"))]
    vm.run(disks=disks)
    readable = tempfile.mkdtemp(prefix="blq-nobody-")  # pytest's tmp dirs are private to root
    os.chmod(readable, 0o755)
    argsfile = os.path.join(readable, "args.json")
    with open(argsfile, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": vm.args(disks=disks)}, handle)
    os.chmod(argsfile, 0o644)
    request.addfinalizer(lambda: shutil.rmtree(readable))
    setpriv = shutil.which("setpriv")
    if not setpriv:
        pytest.skip("setpriv (util-linux) is missing")
    proc = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", MODULE,
                           argsfile], capture_output=True, text=True, check=False,
                          env=dict(os.environ, PYTHONPATH=COLLECTIONS, HOME="/tmp"))
    if "No module named" in proc.stderr or "Permission denied" in proc.stderr:
        pytest.skip("user nobody cannot read the checkout: %s" % proc.stderr.strip()[-200:])
    assert proc.stdout, proc.stderr
    result = json.loads(proc.stdout)
    assert result["failed"] and "Traceback" not in proc.stderr
    assert "uid 0" in result["msg"] or "root" in result["msg"], result["msg"]


def test_a_frozen_qemu_fails_the_task_in_time_and_the_next_run_settles_it(vm):
    iso = vm.image("one.iso", size="1M")
    common = dict(scsi_controller_type="virtio-scsi-pci", cdroms=[dict(name="cd", path=iso)])
    a, b = dict(name="a", path=vm.image("a.raw")), dict(name="b", path=vm.image("b.raw"), disk_type="scsi-hd")
    first = vm.run(disks=[a], **common)
    started = time.monotonic()
    try:  # QEMU is frozen (SIGSTOP) right after the first blockdev-add was answered
        proc = run_hooked(vm.args(disks=[a, b], qmp_timeout=2, **common), vm.state_dir + ".freeze.json", AFTER_QMP,
                          1, "blockdev-add", os.path.join(vm.state_dir, "qemu.pid"), "SIGSTOP")
        elapsed = time.monotonic() - started
    finally:
        os.kill(first["pid"], signal.SIGCONT)
    result = result_of(proc)
    assert result["failed"] and "did not answer" in result["msg"] and result["changed"] is True, result["msg"]
    assert elapsed < 30
    again = vm.run(disks=[a, b], **common)
    assert not again.get("failed"), again["msg"]
    assert_converged(vm, ["a", "b"], iso)
    assert vm.run(disks=[a, b], **common)["changed"] is False
