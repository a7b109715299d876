"""Helpers several integration test modules use (fixtures and the QEMU plumbing are in
conftest.py). A test module imports from here and conftest.py, never from another test module."""

import json
import os
import re
import subprocess

import pytest

from . import qemus
from .conftest import BOOT, GuestAgent, Qmp, hmp, opened_nodes, qemu_img, run_module
from .faults import AFTER_QMP, result_of, run_hooked

MiB = 1 << 20

# -- the runtime file and the commands a run sent ---------------------------------------------


def runtime_of(vm):
    with open(os.path.join(vm.state_dir, "runtime.json")) as handle:
        return json.load(handle)


def record(vm, name):
    return next(d for d in runtime_of(vm)["layout"]["devices"] if d["name"] == name)


def executed(result):
    return [c["execute"] for c in result["qmp_commands"]]


def mutating(result):
    """The commands that change QEMU, in order (the read-only queries around them left out)."""
    def reads(c):
        return c["execute"].startswith("query-") or c["execute"] in ("qom-list", "qom-get") or (
            c["execute"] == "human-monitor-command" and c["arguments"] == {"command-line": "info network"})
    return [c["execute"] for c in result["qmp_commands"] if not reads(c)]


# -- what QEMU has -----------------------------------------------------------------------------


def node_names(qmp):
    """The names of the nodes QEMU has; ``qmp`` is the test's ``Qmp``, or a QMP socket's path."""
    if isinstance(qmp, str):
        with Qmp(qmp) as own:
            return node_names(own)
    return {n["node-name"] for n in qmp("query-named-block-nodes", flat=True)}


def nodes_in_qemu(vm):
    with vm.qmp() as qmp:
        return node_names(qmp)


# -- the data of disk ``data``, written through QEMU and read from the images ------------------


def disk_id(vm, name="data"):
    return next(d["id"] for d in runtime_of(vm)["layout"]["devices"] if d["name"] == name)


def backend(vm, name="data"):
    return disk_id(vm, name) + "/virtio-backend"


def write(vm, pattern, offset):
    """64 KiB of ``pattern`` at ``offset`` written by QEMU through the guest's device, flushed."""
    with vm.qmp() as qmp:
        hmp(qmp, 'qemu-io -d %s "write -P 0x%02x %d 64k"' % (backend(vm), pattern, offset))
        hmp(qmp, 'qemu-io -d %s "flush"' % backend(vm))


def holds(path, pattern, offset):
    """Whether the image (read with -U, as another process may hold it) has 64 KiB of ``pattern``
    at ``offset``, through its own backing chain."""
    done = subprocess.run(["qemu-io", "-r", "-U", "-c", "read -P 0x%02x %d 64k" % (pattern, offset), path],
                          capture_output=True, text=True, check=False)
    if "Pattern verification failed" in done.stdout:
        return False
    assert done.returncode == 0 and "read 65536/65536" in done.stdout, done.stdout + done.stderr
    return True


def image_holds(path, fmt, pattern, offset, length):
    out = subprocess.run(["qemu-io", "-r", "-f", fmt, "-c", "read -P 0x%02x %d %d" % (pattern, offset, length), path],
                         capture_output=True, text=True, check=False).stdout
    return "Pattern verification failed" not in out and "read %d/%d bytes" % (length, length) in out


def image_has(path, offset, length, byte):
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read(length) == bytes([byte]) * length


# -- an image's own data, written and read on the host before QEMU opens it --------------------


def alone(path):
    """The image without its backing chain, as qemu-io reads it."""
    return "json:" + json.dumps({"driver": "qcow2", "backing": None, "file": {"driver": "file", "filename": path}})


def qemu_io(target, command, *flags):
    proc = subprocess.run(["qemu-io"] + list(flags) + ["-c", command, target], capture_output=True, text=True,
                          check=False, timeout=60)
    return proc.returncode == 0 and "failed" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def write_image(path, pattern, offset):
    """The MiB at ``offset`` of the image alone (without backing) set to ``pattern`` (e.g. "0x11")."""
    ok, out = qemu_io(alone(path), "write -P %s %s 1M" % (pattern, offset))
    assert ok, out


# -- qemu_instance killed after a QMP command --------------------------------------------------

OWN_ID = re.compile(r"(disk|cdrom|floppy|nic)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}\Z")
OWN_NODE = re.compile(r"(disk|cdrom|floppy)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}\.")


def run_killed(vm, args, after, which="mutating"):
    """Run qemu_instance with ``args``, SIGKILLed right after its ``after``-th QMP command of kind
    ``which`` was answered; returns True when it was killed (it had that many commands)."""
    proc = run_hooked(args, vm.state_dir + ".kill.json", AFTER_QMP, after, which, "self", "SIGKILL")
    if proc.returncode == -9:
        return True
    result = result_of(proc)
    assert not result.get("failed"), result["msg"]
    return False


def assert_converged(vm, declared_disks, cd_path):
    """QEMU, the runtime file and the declaration agree, and nothing of ours is left over."""
    data = runtime_of(vm)
    assert data["journal"] == [] and data["status"] == "running"
    records = data["layout"]["devices"]
    assert sorted(r["name"] for r in records if r["kind"] == "disk") == sorted(declared_disks)
    with vm.qmp() as qmp:
        ids = {p["name"] for p in qmp("qom-list", path="/machine/peripheral")}
        nodes = {n["node-name"] for n in qmp("query-named-block-nodes", flat=True)}
        roots = {b["qdev"].split("/")[3] if b["qdev"].startswith("/machine") else b["qdev"]: b.get("inserted")
                 for b in qmp("query-block")}
    assert {i for i in ids if OWN_ID.match(i)} == {r["id"] for r in records}
    assert {n for n in nodes if OWN_NODE.match(n)} == {n for r in records for n in opened_nodes(r["nodes"])}
    for rec in records:
        if rec["nodes"]:
            assert roots[rec["id"]]["node-name"] == rec["nodes"][-1]["node-name"], rec["name"]
    cd = next(r for r in records if r["kind"] == "cdrom")
    assert cd["spec"]["path"] == cd_path
    assert roots[cd["id"]]["file"] == cd_path


# -- playbooks -----------------------------------------------------------------------------------


def task_status(out: str) -> dict:
    """Task name -> "ok" or "changed", from the default callback's output."""
    found, task = {}, None
    for line in out.splitlines():
        if line.startswith("TASK ["):
            task = line[len("TASK ["):line.index("]")]
        elif task and line.split(":")[0] in ("ok", "changed"):
            found[task] = line.split(":")[0]
            task = None
    return found


# -- the tiny guest ------------------------------------------------------------------------------


def by_serial(agent):
    return {d["serial"]: d for d in agent.disks() if d["serial"]}


# -- migration between two state dirs ------------------------------------------------------------


def _pairs():
    """(source, target) binaries: the older generation to itself, to the newer, and back."""
    found = [("%d.%d" % v[:2], b) for v, b in qemus.found()]
    if not found:
        return []
    old, new = found[0], found[-1]
    pairs = [(old, old)] + ([(old, new), (new, old)] if new != old else [])
    return [pytest.param((a[1], b[1]), id="%s-to-%s" % (a[0], b[0])) for a, b in pairs]


PAIRS = _pairs()


class Pair:
    """A source and a target state dir, the images both see, and the guest booted on the source."""

    def __init__(self, tmp_path, source_binary, target_binary):
        self.tmp = tmp_path
        self.src, self.dst = str(tmp_path / "src"), str(tmp_path / "dst")
        self.source_binary, self.target_binary = source_binary, target_binary
        self.images = tmp_path / "images"
        self.images.mkdir()

    def image(self, name, size, fmt):
        path = str(self.images / name)
        qemu_img("create", "-q", "-f", fmt, path, size)
        return path

    def boot(self, **declared):
        """The guest running in the source state dir on the source QEMU. A newer source for an
        older target must emulate the older machine (qemu_instance starts -machine pc, the newest
        one): it is booted on the target's QEMU and migrated to the source first, as an upgrade."""
        first = self.target_binary if qemus.version(self.source_binary) > qemus.version(self.target_binary) \
            else self.source_binary
        where = self.src if first == self.source_binary else str(self.tmp / "origin")
        args = dict(BOOT, name="m", state_dir=where, accel="tcg", qemu_binary=first,
                    shutdown_timeout=0, unplug_timeout=60, **declared)
        result = run_module("qemu_instance", args)
        assert not result.get("failed"), result
        if where != self.src:
            self.move(where, self.src, self.source_binary)
        return result

    def move(self, source, target, binary):
        exported = self.step(source, "export")
        prepared = self.step(target, "prepare", layout=exported["layout"], source=exported["source"],
                             qemu_binary=binary)
        assert self.step(source, "migrate", uri=prepared["uri"], timeout=120).get("status") == "completed"
        assert self.step(target, "finish", timeout=60).get("status") == "running"

    def step(self, state_dir, step, diff=False, **args):
        return run_module("qemu_migrate", dict(args, name="m", state_dir=state_dir, step=step), diff=diff)

    def agent(self, state_dir):
        ga = GuestAgent(os.path.join(state_dir, "agent.sock"), timeout=90)
        ga.wait_ready()
        return ga

    def runtime_bytes(self, state_dir):
        with open(os.path.join(state_dir, "runtime.json"), "rb") as handle:
            return handle.read()

    def status(self, state_dir):
        with Qmp(os.path.join(state_dir, "qmp.sock")) as qmp:
            return qmp("query-status")["status"]
