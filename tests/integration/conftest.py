"""Fixtures for tests that run the modules against a real QEMU."""

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, "build", "collections")
QEMU10 = os.path.join(ROOT, "build", "qemu-10.0", "root", "usr", "bin", "qemu-system-x86_64")


def _binaries():
    found = [pytest.param("/usr/bin/qemu-system-x86_64", id="qemu-7.2")]
    if os.path.exists(QEMU10):
        found.append(pytest.param(QEMU10, id="qemu-10.0"))
    elif os.environ.get("CI"):
        raise RuntimeError("QEMU 10.0 is missing from build/qemu-10.0; run make qemu10")
    return found


@pytest.fixture(params=_binaries())
def qemu_binary(request):
    """Every real-QEMU test runs on each QEMU generation the project provides."""
    return request.param


def run_module(module, args, check=False, diff=False):
    """Run a collection module as Ansible would, through its JSON argument file."""
    payload = dict(args, _ansible_check_mode=check, _ansible_diff=diff)
    argsfile = os.path.join(args.get("state_dir", "/tmp") + ".args.json")
    with open(argsfile, "w", encoding="utf-8") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": payload}, handle)
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    proc = subprocess.run([sys.executable, "-m", "ansible_collections.blocklayer.qemu.plugins.modules." + module,
                           argsfile], capture_output=True, text=True, env=env, timeout=300, check=False)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("module printed no JSON (rc %d):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr))
    assert "Traceback" not in proc.stderr, proc.stderr
    return result


def qemu_pids(marker):
    """Pids of QEMU processes whose command line mentions ``marker`` (a state dir)."""
    pids = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as handle:
                args = handle.read().split(b"\0")
        except OSError:
            continue
        if args and b"qemu-system" in args[0] and any(marker.encode() in a for a in args[1:]):
            pids.append(int(path.split("/")[2]))
    return pids


def alive(pid):
    """True while the process exists and is not a zombie waiting for its reaper."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmdline_of(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as handle:
        return [a.decode() for a in handle.read().split(b"\0") if a]


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def qemu_img(*args):
    subprocess.run(["qemu-img"] + [str(a) for a in args], check=True, capture_output=True)


class Qmp:
    """A test's own look at QEMU, between module runs (QMP serves one client at a time)."""

    def __init__(self, socket_path):
        self.mon = QEMUMonitorProtocol(socket_path)
        self.mon.connect()
        self.mon.settimeout(10.0)

    def __call__(self, command, **args):
        return self.mon.cmd(command, **args)

    def close(self):
        self.mon.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def vm(tmp_path, qemu_binary):
    """A state dir and an image dir for one instance; any QEMU left behind is killed."""
    class VM:
        state_dir = str(tmp_path / "state")
        images = tmp_path / "images"
        binary = qemu_binary

        def args(self, **over):
            base = dict(name="t", state_dir=self.state_dir, accel="tcg", qemu_binary=self.binary,
                        shutdown_timeout=0)
            base.update(over)
            return base

        def image(self, name, size="16M", fmt="raw"):
            path = self.images / name
            qemu_img("create", "-q", "-f", fmt, path, size)
            return str(path)

        def run(self, check=False, diff=False, module="qemu_instance", **over):
            return run_module(module, self.args(**over), check=check, diff=diff)

        def qmp(self):
            return Qmp(os.path.join(self.state_dir, "qmp.sock"))

        def pids(self):
            return qemu_pids(self.state_dir)

    VM.images.mkdir()
    yield VM()
    for pid in qemu_pids(str(tmp_path)):  # every QEMU the test started, second instances included
        os.kill(pid, signal.SIGKILL)
