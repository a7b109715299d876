"""Fixtures for tests that run the modules against a real QEMU."""

import contextlib
import glob
import hashlib
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol
from qmp_wire import split_messages

from . import qemus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, "build", "collections")

# The tiny Linux guest (make guest) and its agent's client (tools/guest/agent.py).
GUEST = os.path.join(ROOT, "build", "guest")
sys.path.insert(0, os.path.join(ROOT, "tools", "guest"))
from agent import GuestAgent  # noqa: E402  pylint: disable=wrong-import-position

# qemu_instance options that boot it with the agent channel.
BOOT = dict(kernel_path=os.path.join(GUEST, "vmlinux"), initrd_path=os.path.join(GUEST, "initramfs.gz"),
            kernel_args="console=ttyS0 panic=-1 quiet", agent_channel=True)
# A module whose tests all boot it: ``pytestmark = GUEST_MARKS``.
GUEST_MARKS = [
    pytest.mark.guest,
    pytest.mark.skipif(not os.path.exists(os.path.join(GUEST, "vmlinux")), reason="the tiny guest is not built (make guest)"),
]


@pytest.fixture(params=qemus.binaries())
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


def opened_nodes(nodes) -> set:
    """The names of every QEMU node a runtime record's ``nodes`` open: each node, and the
    protocol node opened inside a format node (``"file": {...}``, docs/block-graph.md)."""
    names = set()
    for node in nodes or []:
        names.add(node["node-name"])
        if isinstance(node.get("file"), dict):
            names.add(node["file"]["node-name"])
    return names


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


@contextlib.contextmanager
def tmpfs(path, size):
    """A filesystem of ``size`` (e.g. ``2m``) mounted on the new directory ``path`` for a test
    that fills it (root only: else the test is skipped), unmounted afterwards."""
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", str(path)],
                      capture_output=True, check=False).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def qemu_img(*args):
    subprocess.run(["qemu-img"] + [str(a) for a in args], check=True, capture_output=True)


def readme_example(mark):
    """The README's example playbook: the first ```yaml block after ``<!-- example:<mark> -->``."""
    marker = "<!-- example:%s -->" % mark
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    assert marker in text, "README.md has no %s" % marker
    m = re.search(r"```yaml\n(.*?)```", text[text.index(marker):], re.S)
    assert m, "no ```yaml block after %s in README.md" % marker
    return m.group(1)


def play_recap(output, host):
    """ok, changed, unreachable and failed of ``host`` in ansible-playbook's PLAY RECAP."""
    m = re.search(r"^%s\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)" % re.escape(host),
                  output, re.M)
    assert m, "no PLAY RECAP line for %s in:\n%s" % (host, output)
    return dict(zip(("ok", "changed", "unreachable", "failed"), map(int, m.groups())))


def wait_device_event(mon, event, device, timeout):
    """The first ``event`` (e.g. DEVICE_DELETED) whose ``data.device`` is ``device``.

    ``mon`` is a QEMUMonitorProtocol; other events (other devices, a virtio backend's own
    DEVICE_DELETED without ``device``, RESET...) are skipped. Fails at the deadline.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("no %s for device %s within %s s" % (event, device, timeout))
        try:
            ev = mon.pull_event(wait=float(left))
        except TimeoutError:  # asyncio.TimeoutError is TimeoutError from Python 3.11
            continue
        if ev and ev["event"] == event and ev.get("data", {}).get("device") == device:
            return ev


def hmp(qmp, command):
    """The text of an HMP command, run over the test's own QMP connection."""
    return qmp("human-monitor-command", **{"command-line": command})


def info_network(qmp):
    """Client name -> its description, for every NIC and netdev in HMP ``info network``."""
    found = {}
    for line in hmp(qmp, "info network").splitlines():
        name, sep, rest = line.strip().lstrip("\\").strip().partition(": ")
        if sep:
            found[name] = rest
    return found


def qemu_private_args(binary):
    """-L dirs and environment a QEMU unpacked in a private prefix needs (build/qemu-10.0).

    Written here, not taken from the collection, so that tests starting QEMU themselves do
    not depend on the code they test.
    """
    prefix = os.path.dirname(os.path.dirname(os.path.realpath(binary)))
    if prefix in ("/usr", "/usr/local", "/"):
        return [], dict(os.environ)
    argv = []
    for sub in ("share/qemu", "share/seabios"):
        if os.path.isdir(os.path.join(prefix, sub)):
            argv += ["-L", os.path.join(prefix, sub)]
    env = dict(os.environ)
    modules = os.path.join(prefix, "lib", "x86_64-linux-gnu", "qemu")
    if os.path.isdir(modules):
        env["QEMU_MODULE_DIR"] = modules
    return argv, env


class GuestCode:
    """A few 32-bit x86 instructions, hand-assembled, for a test's own multiboot kernel.

    Guest code the tests write themselves answers exactly what a test needs (e.g. the ACPI
    power button) and boots in well under a second under TCG. Only port I/O, no stack.
    Ports on the pc machine: COM1 0x3f8 (console.log), COM2 0x2f8 (agent.sock); SeaBIOS puts
    the PIIX4 ACPI PM block at 0x600: PM1a_STS 0x600, PM1a_EN 0x602, PM1a_CNT 0x604.
    """

    LOAD = 0x100000  # multiboot load address, 1 MiB
    MAGIC, FLAGS = 0x1BADB002, 0x00010000  # flags: the a.out kludge (addresses in the header)

    def __init__(self):
        self.code = bytearray()

    def _emit(self, *octets):
        self.code += bytes(octets)
        return self

    def mov_dx(self, value):
        return self._emit(0x66, 0xBA, value & 0xFF, value >> 8)

    def outw(self, port, value):
        """mov $port,%dx; mov $value,%ax; out %ax,(%dx)"""
        return self.mov_dx(port)._emit(0x66, 0xB8, value & 0xFF, value >> 8, 0x66, 0xEF)

    def puts(self, port, text):
        """mov $port,%dx; then mov $c,%al; out %al,(%dx) per byte."""
        self.mov_dx(port)
        for octet in text.encode():
            self._emit(0xB0, octet, 0xEE)
        return self

    def inb(self, port):
        return self.mov_dx(port)._emit(0xEC)

    def wait_bits(self, port, mask, word=False):
        """Loop until (in port) & mask != 0: mov; in; test; jz back."""
        top = len(self.code)
        self.mov_dx(port)
        if word:
            self._emit(0x66, 0xED, 0x66, 0xA9, mask & 0xFF, mask >> 8)
        else:
            self._emit(0xEC, 0xA8, mask)
        rel = top - (len(self.code) + 2)
        assert -128 <= rel < 0
        return self._emit(0x74, rel & 0xFF)

    def halt(self):
        """hlt; jmp back to hlt"""
        return self._emit(0xF4, 0xEB, 0xFD)

    def kernel(self):
        """A multiboot v1 image: the header, then the code, loaded at 1 MiB and entered after the header."""
        header = struct.pack("<8I", self.MAGIC, self.FLAGS, -(self.MAGIC + self.FLAGS) & 0xFFFFFFFF,
                             self.LOAD, self.LOAD, 0, 0, self.LOAD + 32)
        return header + bytes(self.code)


class QmpRecorder:
    """Stands between the module and QEMU's QMP socket and records what the module sends.

    The QEMU socket is renamed (a bound unix socket keeps working under its new name) and a
    relay listens at the old path for one client, so the test sees the commands on the wire,
    not the module's own account of them.
    """

    def __init__(self, socket_path):
        self.path = socket_path
        self.real = socket_path + ".real"
        self.sent = []  # the "execute" of every command the client sent
        self.messages = []  # and the whole messages
        self.connections = 0
        self._stop = threading.Event()

    def __enter__(self):
        os.rename(self.path, self.real)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join(30)
        self.listener.close()
        os.unlink(self.path)
        os.rename(self.real, self.path)

    def _serve(self):
        while not self._stop.is_set():
            if not select.select([self.listener], [], [], 0.2)[0]:
                continue
            client = self.listener.accept()[0]
            self.connections += 1
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(self.real)
            self._relay(client, upstream)

    def _relay(self, client, upstream):
        pending = ""
        with client, upstream:
            while True:
                ready = select.select([client, upstream], [], [], 0.2)[0]
                if not ready and self._stop.is_set():
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
                    if sock is client:
                        messages, pending = split_messages(pending + data.decode())
                        for msg in messages:
                            self.sent.append(msg.get("execute") or msg.get("exec-oob"))
                            self.messages.append(msg)


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

        def record_qmp(self):
            return QmpRecorder(os.path.join(self.state_dir, "qmp.sock"))

        def pids(self):
            return qemu_pids(self.state_dir)

    VM.images.mkdir()
    yield VM()
    for pid in qemu_pids(str(tmp_path)):  # every QEMU the test started, second instances included
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def guest(vm):
    """The vm fixture, booting the tiny guest with the agent channel."""
    def run(**over):
        # A guest under TCG on a loaded 2-core machine can take more than the default 5 s to
        # release a device; these tests are about the release, not the timeout.
        args = dict(BOOT, unplug_timeout=60)
        args.update(over)
        return vm.run(**args)

    def agent():
        ga = GuestAgent(os.path.join(vm.state_dir, "agent.sock"), timeout=90)
        ga.wait_ready()
        return ga

    vm.guest_run, vm.agent = run, agent
    return vm


@pytest.fixture
def data_vm(vm):
    """A running instance with one qcow2 disk ``data`` holding 0x11 at 0."""
    base = vm.image("base.qcow2", fmt="qcow2")
    subprocess.run(["qemu-io", "-c", "write -P 0x11 0 64k", base], check=True, capture_output=True)
    vm.disks = [dict(name="data", path=base, format="qcow2")]
    vm.base = base
    vm.run(disks=vm.disks)
    return vm
