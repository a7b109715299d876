"""The state directory against a real other local user (nobody), run through setpriv."""

import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.statedir import StateDir

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, "build", "collections")
MODULE_UTILS = os.path.join(ROOT, "plugins", "module_utils")
NOBODY = 65534
AS_NOBODY = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups"]

# What a module does with its state dir, as the other user: a ConfigError is reported (exit 3),
# anything else would be a traceback (exit 1).
OPEN = r"""
import sys
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.statedir import StateDir
try:
    opened = StateDir.open(sys.argv[1], create=sys.argv[2] == "create")
except ConfigError as exc:
    print("ConfigError: %s" % exc)
    sys.exit(3)
print("opened %s" % (opened and opened.path))
"""

PLANT = r"""
import os, sys
os.mkdir(sys.argv[1], 0o777)
os.chmod(sys.argv[1], 0o777)
os.symlink(sys.argv[2], sys.argv[3])
print("planted")
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="needs root and setpriv to act as another user")


@pytest.fixture(scope="module")
def base():
    """A root-owned 0755 directory under /tmp that nobody can traverse (tmp_path is 0700)."""
    path = tempfile.mkdtemp(prefix="blocklayer-statedir-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture(scope="module")
def nobody(base):
    """Run Python code as nobody with the collection importable; skip with the reason when impossible."""
    python = None
    for candidate in (sys.executable, "/usr/bin/python3"):
        if subprocess.run(AS_NOBODY + [candidate, "-c", "pass"], capture_output=True, check=False).returncode == 0:
            python = candidate
            break
    if python is None:
        pytest.skip("nobody cannot run %s or /usr/bin/python3" % sys.executable)
    probe = "import ansible_collections.blocklayer.qemu.plugins.module_utils.statedir"
    path = COLLECTIONS
    if subprocess.run(AS_NOBODY + [python, "-c", probe], env=dict(os.environ, PYTHONPATH=path),
                      capture_output=True, check=False).returncode != 0:
        # The checkout is not readable by nobody: give it a copy of the two files it needs.
        path = os.path.join(base, "lib")
        package = os.path.join(path, "ansible_collections", "blocklayer", "qemu", "plugins", "module_utils")
        os.makedirs(package, mode=0o755)
        for name in ("statedir.py", "errors.py"):
            shutil.copy(os.path.join(MODULE_UTILS, name), package)
        for root, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        check = subprocess.run(AS_NOBODY + [python, "-c", probe], env=dict(os.environ, PYTHONPATH=path),
                               capture_output=True, text=True, check=False)
        if check.returncode != 0:
            pytest.skip("nobody cannot import the collection even from a copy: %s" % check.stderr.strip())

    def run(code, *args):
        env = dict(os.environ, PYTHONPATH=path, PYTHONDONTWRITEBYTECODE="1")
        proc = subprocess.run(AS_NOBODY + [python, "-c", code] + list(args), env=env, cwd="/",
                              capture_output=True, text=True, timeout=60, check=False)
        print(proc.stdout + proc.stderr)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc
    return run


def test_another_user_on_roots_state_dir_gets_a_clean_error(base, nobody):
    vm = os.path.join(base, "vm")
    os.mkdir(vm, 0o700)
    for create in ("create", "open"):
        proc = nobody(OPEN, vm, create)
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert proc.stdout.startswith("ConfigError: state dir %s is owned by root (uid 0), not by nobody (uid %d)"
                                      % (vm, NOBODY))
        assert "become: true" in proc.stdout
    assert stat.S_IMODE(os.lstat(vm).st_mode) == 0o700 and os.listdir(vm) == []


def test_another_user_cannot_create_under_roots_dir_and_says_why(base, nobody):
    vm = os.path.join(base, "new-vm")
    proc = nobody(OPEN, vm, "create")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert proc.stdout.startswith("ConfigError: cannot open state dir %s" % vm)
    assert "(%s is owned by root (uid 0)) as nobody (uid %d): Permission denied" % (base, NOBODY) in proc.stdout
    assert not os.path.lexists(vm)


def test_another_user_cannot_lock_roots_0700_state_dir(base, nobody):
    vm = os.path.join(base, "locked-vm")
    os.mkdir(vm, 0o700)
    grab = "import fcntl, os, sys\nfd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)\nfcntl.flock(fd, fcntl.LOCK_EX)"
    proc = nobody("import sys\ntry:\n    exec(sys.argv[2])\nexcept PermissionError:\n    sys.exit(4)", vm, grab)
    assert proc.returncode == 4
    opened = StateDir.open(vm, create=False)
    try:
        with opened.lock(1, "instance vm state dir"):
            pass
    finally:
        opened.close()


def test_state_dir_prepared_by_another_user_in_a_sticky_dir_is_refused(base, nobody):
    shared = os.path.join(base, "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o1777)
    victim = os.path.join(base, "victim")
    os.mkdir(victim, 0o700)
    with open(os.path.join(victim, "console.log"), "w", encoding="ascii") as handle:
        handle.write("root's\n")
    trap, link = os.path.join(shared, "vm"), os.path.join(shared, "vm-link")
    assert nobody(PLANT, trap, victim, link).stdout == "planted\n"

    with pytest.raises(ConfigError) as err:
        StateDir.open(trap, create=True)
    print(err.value)
    assert "owned by nobody (uid %d)" % NOBODY in str(err.value)
    with pytest.raises(ConfigError) as err:
        StateDir.open(link, create=True)
    print(err.value)
    assert "is a symlink" in str(err.value)
    assert os.listdir(trap) == [] and os.listdir(victim) == ["console.log"]
    assert stat.S_IMODE(os.lstat(trap).st_mode) == 0o777  # not re-moded
