"""The state directory against other local users and crashes (tests run as root)."""

import errno
import fcntl
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import statedir
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

StateDir = statedir.StateDir
NOBODY = 65534
OWNED = ["runtime.json", "qmp.sock", "qemu.pid", "console.log", "agent.sock", "lock"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mount, other owners)")


def mode_of(path):
    return stat.S_IMODE(os.lstat(str(path)).st_mode)


def snapshot(directory):
    """Names, contents and modes of the regular files below ``directory`` (links not followed)."""
    seen = {}
    for root, dirs, files in os.walk(str(directory)):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.lstat(path)
            content = None
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as handle:
                    content = handle.read()
            seen[os.path.relpath(path, str(directory))] = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_uid, content)
    return seen


@pytest.fixture
def sd(tmp_path):
    opened = StateDir.open(str(tmp_path / "vm"), create=True)
    yield opened
    opened.close()


# -- open ---------------------------------------------------------------------------------------
def test_missing_without_create_is_none_and_creates_nothing(tmp_path):
    assert StateDir.open(str(tmp_path / "vm"), create=False) is None
    assert StateDir.open(str(tmp_path / "a" / "b" / "vm"), create=False) is None
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("umask", [0o022, 0o000, 0o277])
def test_created_dir_is_0700_whatever_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        opened = StateDir.open(str(tmp_path / "parent" / "vm"), create=True)
    finally:
        os.umask(old)
    try:
        assert opened.created is True
        assert mode_of(tmp_path / "parent" / "vm") == 0o700
        assert mode_of(tmp_path / "parent") == 0o755  # a missing ancestor: ours, not writable by others
        assert opened.path == str(tmp_path / "parent" / "vm")
    finally:
        opened.close()
    again = StateDir.open(str(tmp_path / "parent" / "vm"), create=True)
    assert again.created is False
    again.close()


@pytest.mark.parametrize("create", [True, False])
def test_state_dir_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path, create):
    target = tmp_path / "precious"
    target.mkdir(mode=0o755)
    (target / "console.log").write_bytes(b"someone's log")
    (target / "lock").write_bytes(b"")
    (target / "runtime.json").write_bytes(b"{}")
    os.symlink(str(target), str(tmp_path / "vm"))
    before = snapshot(target)
    with pytest.raises(ConfigError) as err:
        StateDir.open(str(tmp_path / "vm"), create=create)
    assert str(tmp_path / "vm") in str(err.value)
    assert "symlink" in str(err.value)
    assert snapshot(target) == before
    assert os.path.islink(str(tmp_path / "vm"))


def test_dangling_symlink_state_dir_is_refused_not_created_through(tmp_path):
    os.symlink(str(tmp_path / "elsewhere"), str(tmp_path / "vm"))
    with pytest.raises(ConfigError, match="symlink"):
        StateDir.open(str(tmp_path / "vm"), create=True)
    assert not os.path.lexists(str(tmp_path / "elsewhere"))


def test_state_dir_owned_by_another_user_is_refused_naming_the_owner(tmp_path):
    vm = tmp_path / "vm"
    vm.mkdir(mode=0o700)
    os.chown(str(vm), NOBODY, NOBODY)
    for create in (True, False):
        with pytest.raises(ConfigError) as err:
            StateDir.open(str(vm), create=create)
        assert "owned by" in str(err.value) and "uid %d" % NOBODY in str(err.value)
        assert str(vm) in str(err.value)
    st = os.lstat(str(vm))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o700)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_state_dir_writable_by_others_is_refused_and_not_re_moded(tmp_path, mode):
    vm = tmp_path / "vm"
    vm.mkdir()
    os.chmod(str(vm), mode)
    for create in (True, False):
        with pytest.raises(ConfigError) as err:
            StateDir.open(str(vm), create=create)
        assert "writable by group or others" in str(err.value) and str(vm) in str(err.value)
    assert mode_of(vm) == mode


def test_existing_0755_dir_is_accepted_and_kept_as_it_is(tmp_path):
    vm = tmp_path / "vm"
    vm.mkdir()
    os.chmod(str(vm), 0o755)
    opened = StateDir.open(str(vm), create=True)
    opened.close()
    assert opened.created is False
    assert mode_of(vm) == 0o755


def test_state_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "vm").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a directory"):
        StateDir.open(str(tmp_path / "vm"), create=True)


def test_ancestor_world_writable_without_sticky_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(str(shared), 0o777)
    (shared / "vm").mkdir(mode=0o700)
    with pytest.raises(ConfigError) as err:
        StateDir.open(str(shared / "vm"), create=False)
    assert "ancestor %s" % shared in str(err.value) and "sticky" in str(err.value)
    with pytest.raises(ConfigError, match="ancestor"):
        StateDir.open(str(shared / "new"), create=True)
    assert not os.path.lexists(str(shared / "new"))  # refused before anything was made there


def test_ancestor_world_writable_with_sticky_is_accepted(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(str(shared), 0o1777)
    opened = StateDir.open(str(shared / "vm"), create=True)
    opened.close()
    assert opened.created and mode_of(shared / "vm") == 0o700


def test_ancestor_owned_by_another_user_is_refused(tmp_path):
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    (theirs / "vm").mkdir(mode=0o700)
    os.chown(str(theirs), NOBODY, NOBODY)
    with pytest.raises(ConfigError) as err:
        StateDir.open(str(theirs / "vm"), create=False)
    assert "ancestor %s" % theirs in str(err.value) and "uid %d" % NOBODY in str(err.value)


def test_ancestor_symlink_owned_by_root_is_followed_one_owned_by_another_user_is_not(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink("real", str(tmp_path / "alias"))
    opened = StateDir.open(str(tmp_path / "alias" / "vm"), create=True)
    opened.close()
    assert os.path.isdir(str(real / "vm")) and opened.path == str(tmp_path / "alias" / "vm")
    os.lchown(str(tmp_path / "alias"), NOBODY, NOBODY)
    with pytest.raises(ConfigError, match="symlink owned by"):
        StateDir.open(str(tmp_path / "alias" / "vm"), create=False)


def test_ancestor_symlink_to_a_world_writable_dir_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(str(shared), 0o777)
    os.symlink(str(shared), str(tmp_path / "alias"))
    with pytest.raises(ConfigError) as err:
        StateDir.open(str(tmp_path / "alias" / "vm"), create=True)
    assert "ancestor %s" % shared in str(err.value)
    assert os.listdir(str(shared)) == []


# -- files ----------------------------------------------------------------------------------------
PLAUSIBLE_TEMPS = ["runtime.json.tmp", ".runtime.json.tmp", "runtime.json~", "runtime.json.new",
                   ".runtime.json.swp", "runtime.json.tmp.0"]


def test_write_atomic_never_follows_a_planted_symlink(tmp_path, sd, monkeypatch):
    # The temp names the module will try (its documented pattern ".<name>.tmp-<hex>") are made
    # predictable, so links can be planted at them too: at the first one a link to a victim
    # file, at the second a dangling link (O_CREAT through it would create its target).
    tokens = iter(["0" * 16, "1" * 16, "2" * 16])
    monkeypatch.setattr(statedir.secrets, "token_hex", lambda n: next(tokens))
    outside = tmp_path / "outside"
    outside.mkdir()
    planted = PLAUSIBLE_TEMPS + ["runtime.json", ".runtime.json.tmp-" + "0" * 16]
    for i, name in enumerate(planted):
        (outside / ("victim%d" % i)).write_bytes(b"victim %d" % i)
        os.symlink(str(outside / ("victim%d" % i)), sd.path_of(name))
    os.symlink(str(outside / "never-created"), sd.path_of(".runtime.json.tmp-" + "1" * 16))
    before = snapshot(outside)

    sd.write_atomic("runtime.json", b'{"version": 1}\n')

    assert snapshot(outside) == before
    assert not os.path.lexists(str(outside / "never-created"))
    assert sd.kind("runtime.json") == "file"
    assert sd.read("runtime.json") == b'{"version": 1}\n'
    assert mode_of(sd.path_of("runtime.json")) == 0o600
    left = set(os.listdir(sd.path))
    assert left == set(planted) | {".runtime.json.tmp-" + "1" * 16}  # the used temp name is gone
    assert all(sd.kind(n) == "symlink" for n in left - {"runtime.json"})


def test_write_atomic_replaces_the_old_content(sd):
    sd.write_atomic("runtime.json", b"old")
    sd.write_atomic("runtime.json", b"new")
    assert sd.read("runtime.json") == b"new"
    assert os.listdir(sd.path) == ["runtime.json"]


def test_write_atomic_onto_a_directory_fails_cleanly(sd):
    os.mkdir(sd.path_of("runtime.json"))
    with pytest.raises(ConfigError, match="nothing was changed"):
        sd.write_atomic("runtime.json", b"x")
    assert os.listdir(sd.path) == ["runtime.json"]


def test_read_refuses_a_planted_symlink(tmp_path, sd):
    victim = tmp_path / "shadow"
    victim.write_bytes(b"secret")
    os.symlink(str(victim), sd.path_of("runtime.json"))
    with pytest.raises(ConfigError) as err:
        sd.read("runtime.json")
    assert sd.path_of("runtime.json") in str(err.value) and "symlink" in str(err.value)
    assert victim.read_bytes() == b"secret"


def test_read_refuses_a_fifo_without_blocking(sd):
    os.mkfifo(sd.path_of("runtime.json"))
    with pytest.raises(ConfigError, match="not a regular file"):
        sd.read("runtime.json")


def test_read_missing_is_none(sd):
    assert sd.read("runtime.json") is None


def test_kind(sd):
    open(sd.path_of("f"), "wb").close()
    os.mkdir(sd.path_of("d"))
    os.symlink("/nonexistent", sd.path_of("l"))
    os.mkfifo(sd.path_of("p"))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(sd.path_of("s"))
    sock.close()
    assert [sd.kind(n) for n in ("f", "d", "l", "p", "s", "none")] == ["file", "dir", "symlink", "other",
                                                                       "socket", None]


def test_names_must_stay_inside_the_directory(sd):
    for name in ("../x", "a/b", "..", ".", ""):
        with pytest.raises(ValueError):
            sd.kind(name)


def test_remove_unlinks_a_symlink_not_its_target(tmp_path, sd):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    os.symlink(str(victim), sd.path_of("qemu.pid"))
    sd.remove("qemu.pid")
    sd.remove("qemu.pid")  # missing is fine
    assert os.listdir(sd.path) == [] and victim.read_bytes() == b"keep"
    os.mkdir(sd.path_of("agent.sock"))
    with pytest.raises(ConfigError, match="is a directory"):
        sd.remove("agent.sock")


def test_prepare_for_qemu_clears_stale_and_planted_entries(tmp_path, sd):
    victim = tmp_path / "their.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(victim))
    os.symlink(str(victim), sd.path_of("qmp.sock"))  # a fake QMP socket would get the session
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(sd.path_of("agent.sock"))
    stale.close()
    (tmp_path / "log-victim").write_bytes(b"keep")
    os.symlink(str(tmp_path / "log-victim"), sd.path_of("console.log"))
    open(sd.path_of("qemu.pid"), "w").write("1\n")
    sd.prepare_for_qemu(["qmp.sock", "agent.sock", "console.log", "qemu.pid"])
    listener.close()
    assert os.listdir(sd.path) == []
    assert stat.S_ISSOCK(os.lstat(str(victim)).st_mode) and (tmp_path / "log-victim").read_bytes() == b"keep"


def test_prepare_for_qemu_refuses_a_directory_before_removing_anything(sd):
    open(sd.path_of("qemu.pid"), "w").close()
    os.mkdir(sd.path_of("qmp.sock"))
    with pytest.raises(ConfigError, match="qmp.sock is a directory"):
        sd.prepare_for_qemu(["qemu.pid", "qmp.sock"])
    assert sorted(os.listdir(sd.path)) == ["qemu.pid", "qmp.sock"]


# -- ENOSPC and read-only filesystems ---------------------------------------------------------------
@pytest.fixture
def tiny_fs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % (proc.stderr.strip() or proc.returncode))
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(directory):
    """Write a file until the filesystem says ENOSPC, and check that even one more block fails."""
    fd = os.open(os.path.join(str(directory), "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError) as err:
            while True:
                os.write(fd, b"\0" * 4096)
        assert err.value.errno == errno.ENOSPC
        with pytest.raises(OSError):
            os.write(fd, b"\0")
    finally:
        os.close(fd)


def test_enospc_is_a_clean_error_and_the_old_file_survives(tiny_fs):
    opened = StateDir.open(str(tiny_fs / "vm"), create=True)
    try:
        old = json.dumps({"version": 1, "devices": ["d%d" % i for i in range(50)]}).encode()
        opened.write_atomic("runtime.json", old)
        fill(tiny_fs)
        os.utime(opened.path, ns=(0, 0))  # so the temp file's coming and going shows in mtime
        with pytest.raises(ConfigError) as err:
            opened.write_atomic("runtime.json", old * 40)
        message = str(err.value)
        assert opened.path_of("runtime.json") in message
        assert "No space left on device" in message and "nothing was changed" in message
        assert open(opened.path_of("runtime.json"), "rb").read() == old
        assert os.listdir(opened.path) == ["runtime.json"]  # no temp file left
        assert os.stat(opened.path).st_mtime_ns != 0  # a temp file was made, then removed
    finally:
        opened.close()


def test_read_only_filesystem_is_a_clean_error(tiny_fs):
    opened = StateDir.open(str(tiny_fs / "vm"), create=True)
    try:
        opened.write_atomic("runtime.json", b"old")
        subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
        with pytest.raises(ConfigError) as err:
            opened.write_atomic("runtime.json", b"new")
        assert "read-only" in str(err.value) and "nothing was changed" in str(err.value)
        assert opened.read("runtime.json") == b"old"
    finally:
        opened.close()


# -- the lock --------------------------------------------------------------------------------------
HOLDER = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
action = sys.stdin.readline().strip()
if action in ("remove", "replace"):
    # Act only once the test's process is seen waiting for this lock ("->" in /proc/locks).
    inode = ":%d " % os.fstat(fd).st_ino
    deadline = time.monotonic() + 20
    while not any(" -> FLOCK" in line and (" %s " % sys.argv[2]) in line and inode in line
                  for line in open("/proc/locks")):
        assert time.monotonic() < deadline, "the test never waited for the lock"
        time.sleep(0.005)
    if action == "remove":
        os.rmdir(sys.argv[1])
    else:
        os.rename(sys.argv[1], sys.argv[1] + ".old")
        os.mkdir(sys.argv[1], 0o700)
    print("done", flush=True)
"""


@pytest.fixture
def holder():
    procs = []

    def start(opened):
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, opened.path, str(os.getpid())],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline() == "locked\n"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_lock_times_out_naming_the_holder(sd, holder):
    proc = holder(sd)
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        with sd.lock(0.5, "instance vm state dir"):
            pytest.fail("the lock was taken while another process held it")
    waited = time.monotonic() - started
    assert 0.45 <= waited < 2.0
    message = str(err.value)
    assert message.startswith("instance vm state dir %s is locked by pid %d (" % (sd.path, proc.pid))
    assert "python" in message and "for more than 0.5 s" in message


def test_lock_is_taken_at_once_when_released(sd, holder):
    proc = holder(sd)
    proc.stdin.close()
    assert proc.wait(timeout=10) == 0
    started = time.monotonic()
    with sd.lock(5, "instance vm state dir"):
        assert time.monotonic() - started < 0.25
        other = os.open(sd.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(BlockingIOError):  # it really is held
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    other = os.open(sd.path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and released after the block
    finally:
        os.close(other)


def test_lock_wait_restores_the_previous_alarm_handler_and_timer(sd, holder):
    holder(sd)

    def previous_handler(signum, frame):
        raise AssertionError("the previous timer fired during the test")

    old = signal.signal(signal.SIGALRM, previous_handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 100)
        with pytest.raises(ConfigError, match="is locked by"):
            with sd.lock(0.3, "instance vm state dir"):
                pass
        assert signal.getsignal(signal.SIGALRM) is previous_handler
        assert 98 < signal.getitimer(signal.ITIMER_REAL)[0] <= 100
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize("action, error", [("remove", "was removed by another run"),
                                           ("replace", "was replaced by another directory")])
def test_a_run_that_waited_while_another_removed_the_dir_gets_an_error(sd, holder, action, error):
    proc = holder(sd)
    proc.stdin.write(action + "\n")
    proc.stdin.close()
    with pytest.raises(ConfigError) as err:
        with sd.lock(20, "instance vm state dir"):
            pytest.fail("worked in a directory that is no longer the state dir")
    assert error in str(err.value) and sd.path in str(err.value)
    assert proc.stdout.readline() == "done\n"  # the holder acted while this run waited
    assert proc.wait(timeout=10) == 0


def test_the_lock_never_creates_or_unlinks_files(sd, holder):
    # An old version's lock file, and a waiter on it, must stay as they are.
    open(sd.path_of("lock"), "w").close()
    inode = os.lstat(sd.path_of("lock")).st_ino
    os.utime(sd.path, ns=(0, 0))
    with sd.lock(1, "instance vm state dir"):
        assert os.listdir(sd.path) == ["lock"]
    proc = holder(sd)
    with pytest.raises(ConfigError):
        with sd.lock(0.2, "instance vm state dir"):
            pass
    proc.stdin.close()
    proc.wait(timeout=10)
    assert os.listdir(sd.path) == ["lock"] and os.lstat(sd.path_of("lock")).st_ino == inode
    assert os.stat(sd.path).st_mtime_ns == 0  # no entry was made or removed


# -- ownership and removal -------------------------------------------------------------------------
def test_remove_owned_in_a_foreign_dir_removes_nothing(tmp_path):
    vm = tmp_path / "vm"
    vm.mkdir(mode=0o700)
    for name in ("console.log", "lock"):
        (vm / name).write_bytes(b"a user's " + name.encode())
        os.chown(str(vm / name), NOBODY, NOBODY)
    before = snapshot(vm)
    opened = StateDir.open(str(vm), create=True)
    try:
        assert opened.marked() is None
        assert opened.remove_owned(OWNED) == ["console.log", "lock"]
        assert opened.remove_dir_if_created() is False
    finally:
        opened.close()
    assert snapshot(vm) == before


def test_remove_owned_with_the_marker_removes_exactly_the_owned_names(tmp_path, sd):
    sd.mark("vm", "uuid-1")
    for name in OWNED:
        sd.write_atomic(name, b"x")
    (tmp_path / "victim").write_bytes(b"keep")
    os.unlink(sd.path_of("qemu.pid"))
    os.symlink(str(tmp_path / "victim"), sd.path_of("qemu.pid"))
    open(sd.path_of(".runtime.json.tmp-deadbeefdeadbeef"), "w").close()  # a crash's leftover
    open(sd.path_of("notes.txt"), "w").write("the admin's")
    assert sd.remove_owned(OWNED) == ["notes.txt"]
    assert os.listdir(sd.path) == ["notes.txt"]
    assert (tmp_path / "victim").read_bytes() == b"keep"
    assert sd.remove_dir_if_created() is False
    assert open(sd.path_of("notes.txt")).read() == "the admin's"


def test_marker_content_and_created_dir_survive_a_later_run(tmp_path):
    first = StateDir.open(str(tmp_path / "vm"), create=True)
    first.mark("vm", "uuid-1")
    first.write_atomic("runtime.json", b"{}")
    first.close()
    raw = open(str(tmp_path / "vm" / ".blocklayer-instance"), "rb").read()
    assert json.loads(raw.decode()) == {"name": "vm", "uuid": "uuid-1", "created_dir": True}
    later = StateDir.open(str(tmp_path / "vm"), create=True)
    try:
        assert later.created is False
        later.mark("vm", "uuid-1")
        assert later.marked() == {"name": "vm", "uuid": "uuid-1", "created_dir": True}
        assert later.remove_owned(OWNED) == []
        assert later.remove_dir_if_created() is True
    finally:
        later.close()
    assert not os.path.lexists(str(tmp_path / "vm"))


def test_a_dir_the_collection_did_not_create_is_kept_even_when_empty(tmp_path):
    (tmp_path / "vm").mkdir(mode=0o700)
    opened = StateDir.open(str(tmp_path / "vm"), create=True)
    try:
        opened.mark("vm", "uuid-1")
        assert opened.marked()["created_dir"] is False
        opened.write_atomic("runtime.json", b"{}")
        assert opened.remove_owned(OWNED) == []
        assert opened.remove_dir_if_created() is False
    finally:
        opened.close()
    assert os.listdir(str(tmp_path / "vm")) == []


def test_a_dir_of_an_older_version_counts_as_owned_and_created(tmp_path):
    vm = tmp_path / "vm"
    vm.mkdir(mode=0o700)
    (vm / "runtime.json").write_bytes(b'{"version": 1}')
    (vm / "lock").write_bytes(b"")
    opened = StateDir.open(str(vm), create=False)
    try:
        opened.remove("runtime.json")  # stopping forgets the runtime file before absent removes
        assert opened.remove_owned(OWNED) == []
        assert opened.remove_dir_if_created() is True
    finally:
        opened.close()
    assert not os.path.lexists(str(vm))


def test_remove_dir_if_created_leaves_a_replaced_path_alone(tmp_path, sd):
    os.rename(sd.path, sd.path + ".moved")
    os.mkdir(sd.path, 0o700)
    assert sd.remove_dir_if_created() is False
    assert os.path.isdir(sd.path) and os.path.isdir(sd.path + ".moved")
