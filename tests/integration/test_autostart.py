"""A simulated host reboot, a crash and a host shutdown, through the autostart entry point.

Five instances under one root, started by qemu_instance: ``z1`` (autostart order 1, delay 1 s,
a disk, and a second disk hot-plugged with qemu_device), ``a2`` (order 2), ``manual`` (no
autostart), ``guestoff`` (autostart, a GuestCode guest that powers itself off through ACPI when
told to on its serial port) and ``broken`` (autostart, whose image is then removed). The guest
of ``guestoff`` powers off; then every QEMU of the test is SIGKILLed, the sockets and pidfiles
are removed as a reboot's tmpfs would, and a new boot id is presented (the test-only
BLOCKLAYER_QEMU_BOOT_ID_FILE). ``start-all`` must bring back exactly z1 then a2 (order from
/proc start times, the delay between them), with their recorded disks, and leave the others
down; ``check`` retries ``broken`` until it gives up and changes nothing else; a killed QEMU in
the same boot is restarted; ``stop-all`` quits them in reverse order and the next boot brings
them back.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from .conftest import COLLECTIONS, ROOT, GuestCode, Qmp, alive, qemu_img, qemu_pids, run_module

ENTRY = "ansible_collections.blocklayer.qemu.plugins.module_utils.autostart_run"
# What a reboot removes from a state dir (sockets and pidfiles live in memory on a real host).
VOLATILE = ("qmp.sock", "qemu.pid", "agent.sock", "mig.sock")
TICK = os.sysconf("SC_CLK_TCK")
MAX_RESTARTS = 2


def poweroff_guest():
    """Waits for a byte on COM2, then powers off through ACPI (S5 on PIIX4 PM_CNT 0x604)."""
    code = GuestCode()
    code.wait_bits(0x2F8 + 5, 0x01)
    code.outw(0x604, 0x2000)
    code.halt()
    return code.kernel()


def started_at(pid):
    """The process's start, in seconds since boot, from /proc (field 22 of stat)."""
    with open("/proc/%d/stat" % pid) as handle:
        return int(handle.read().rsplit(")", 1)[1].split()[19]) / TICK


def wait_gone(pid, timeout=30):
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, "pid %d still runs" % pid
        time.sleep(0.05)


class Host:
    def __init__(self, base, binary):
        self.root = str(base / "vms")
        self.images = base / "images"
        self.images.mkdir()
        os.mkdir(self.root, 0o700)
        self.binary = binary
        self.boot_file = str(base / "boot_id")
        self.boot("boot-A")

    def dir(self, name):
        return os.path.join(self.root, name)

    def boot(self, boot_id):
        with open(self.boot_file, "w", encoding="ascii") as handle:
            handle.write(boot_id + "\n")

    def run(self, name, **over):
        args = dict(name=name, state_dir=self.dir(name), accel="tcg", qemu_binary=self.binary, shutdown_timeout=0)
        args.update(over)
        result = run_module("qemu_instance", args)
        assert not result.get("failed"), result.get("msg")
        return result

    def image(self, name):
        path = self.images / name
        qemu_img("create", "-q", "-f", "raw", path, "8M")
        return str(path)

    def pid(self, name):
        pids = qemu_pids(self.dir(name) + "/")
        assert len(pids) <= 1, pids
        return pids[0] if pids else None

    def entry(self, command, *extra):
        env = dict(os.environ, PYTHONPATH=COLLECTIONS, BLOCKLAYER_QEMU_BOOT_ID_FILE=self.boot_file)
        proc = subprocess.run([sys.executable, "-m", ENTRY, command, "--root", self.root, "--json",
                               "--max-restarts", str(MAX_RESTARTS), "--shutdown-timeout", "0"] + list(extra),
                              capture_output=True, text=True, env=env, timeout=300, check=False)
        assert "Traceback" not in proc.stderr, proc.stderr
        report = json.loads(proc.stdout)
        return proc.returncode, {r["name"]: r for r in report}


@pytest.fixture
def host(tmp_path, qemu_binary):
    yield Host(tmp_path, qemu_binary)
    for pid in qemu_pids(str(tmp_path)):
        os.kill(pid, signal.SIGKILL)


def test_a_reboot_brings_back_the_autostart_instances_in_order(host, tmp_path):
    kernel = tmp_path / "poweroff.bin"
    kernel.write_bytes(poweroff_guest())
    host.run("z1", autostart=True, autostart_order=1, autostart_delay=1.0,
             disks=[{"name": "root", "path": host.image("z1-root.raw")}])
    plugged = run_module("qemu_device", dict(name="z1", state_dir=host.dir("z1"), kind="disk", state="present",
                                             device={"name": "data", "path": host.image("z1-data.raw")}))
    assert plugged["changed"] and not plugged.get("failed"), plugged.get("msg")
    host.run("a2", autostart=True, autostart_order=2)
    host.run("manual")
    host.run("guestoff", autostart=True, autostart_order=3, kernel_path=str(kernel), agent_channel=True)
    broken_image = host.image("broken.raw")
    host.run("broken", autostart=True, disks=[{"name": "root", "path": broken_image}])

    # Before the reboot, a check finds everything running and starts nothing.
    before = {name: host.pid(name) for name in ("z1", "a2", "manual", "guestoff", "broken")}
    rc, report = host.entry("check")
    assert rc == 0 and {r["action"] for r in report.values()} == {"none"}, report
    assert {name: host.pid(name) for name in before} == before

    # The guest of guestoff powers itself off: QEMU exits on its own.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as chan:
        chan.connect(os.path.join(host.dir("guestoff"), "agent.sock"))
        chan.sendall(b"g")
    wait_gone(before["guestoff"])

    # The host goes down hard: every QEMU killed, its sockets and pidfiles gone, a new boot id.
    for pid in qemu_pids(host.root):
        os.kill(pid, signal.SIGKILL)
    for pid in before.values():
        wait_gone(pid)
    for name in before:
        for entry in VOLATILE:
            if os.path.lexists(os.path.join(host.dir(name), entry)):
                os.unlink(os.path.join(host.dir(name), entry))
    os.unlink(broken_image)
    host.boot("boot-B")

    rc, report = host.entry("start-all")
    assert rc == 1, "broken did not start: a problem to report"
    assert report["z1"]["action"] == "started" and report["a2"]["action"] == "started", report
    assert report["guestoff"]["action"] == "none" and "shut down by the guest" in report["guestoff"]["reason"]
    assert report["broken"]["action"] == "failed" and report["broken"]["problem"]
    assert "manual" not in report
    assert host.pid("manual") is None and host.pid("guestoff") is None and host.pid("broken") is None
    z1, a2 = host.pid("z1"), host.pid("a2")
    assert z1 and a2 and z1 != before["z1"] and a2 != before["a2"]
    # Order and delay, from the kernel's account of the processes.
    assert started_at(a2) - started_at(z1) >= 1.0 - 2.0 / TICK, (started_at(z1), started_at(a2))

    # z1 came back from its runtime file: the disk hot-plugged with qemu_device is there too.
    with Qmp(os.path.join(host.dir("z1"), "qmp.sock")) as qmp:
        files = {b.get("inserted", {}).get("file") for b in qmp("query-block")}
    assert {str(host.images / "z1-root.raw"), str(host.images / "z1-data.raw")} <= files, files

    # The same boot: checks retry broken until they give up, and touch nothing else.
    for attempt in range(1, MAX_RESTARTS + 1):
        rc, report = host.entry("check")
        assert report["broken"]["action"] == "failed", report["broken"]
        assert "restart %d of %d" % (attempt, MAX_RESTARTS) in report["broken"]["reason"]
    for _again in range(2):
        rc, report = host.entry("check")
        assert rc == 1 and report["broken"]["action"] == "none" and "gave up" in report["broken"]["reason"]
        assert {n: r["action"] for n, r in report.items() if n != "broken"} == {
            "z1": "none", "a2": "none", "guestoff": "none"}
        assert (host.pid("z1"), host.pid("a2")) == (z1, a2) and host.pid("broken") is None

    # A QEMU killed during this boot is a crash: the next check restarts it, counted.
    os.kill(a2, signal.SIGKILL)
    wait_gone(a2)
    rc, report = host.entry("check")
    assert report["a2"]["action"] == "started" and "restart 1 of %d" % MAX_RESTARTS in report["a2"]["reason"]
    a2 = host.pid("a2")
    assert a2 and host.pid("z1") == z1

    # Host shutdown: stop-all stops them in reverse order (a2's runtime file says stopped first)...
    rc, report = host.entry("stop-all")
    assert report["a2"]["action"] == report["z1"]["action"] == "stopped", report
    wait_gone(z1)
    wait_gone(a2)
    files = {n: os.path.join(host.dir(n), "runtime.json") for n in ("z1", "a2")}
    for path in files.values():
        with open(path, encoding="utf-8") as handle:
            assert json.load(handle)["status"] == "stopped"
    assert os.stat(files["a2"]).st_mtime_ns < os.stat(files["z1"]).st_mtime_ns
    # ...they stay down during this boot, and the next boot brings them back.
    rc, report = host.entry("check")
    assert report["z1"]["action"] == report["a2"]["action"] == "none"
    assert host.pid("z1") is None and host.pid("a2") is None
    host.boot("boot-C")
    rc, report = host.entry("start-all")
    assert report["z1"]["action"] == report["a2"]["action"] == "started", report
    assert host.pid("manual") is None and host.pid("guestoff") is None
    assert started_at(host.pid("a2")) - started_at(host.pid("z1")) >= 1.0 - 2.0 / TICK


def test_a_damaged_runtime_file_is_reported_and_left_as_it_is(host):
    host.run("bad", autostart=True)
    pid = host.pid("bad")
    os.kill(pid, signal.SIGKILL)
    wait_gone(pid)
    path = os.path.join(host.dir("bad"), "runtime.json")
    with open(path, "r+", encoding="utf-8") as handle:
        data = json.load(handle)
        del data["layout"]
        handle.seek(0)
        handle.truncate()
        json.dump(data, handle)
    with open(path, "rb") as handle:
        damaged = handle.read()
    host.boot("boot-B")
    rc, report = host.entry("start-all")
    assert rc == 1 and report["bad"]["problem"] and "layout is missing" in report["bad"]["reason"]
    assert host.pid("bad") is None
    with open(path, "rb") as handle:
        assert handle.read() == damaged


GUEST = os.path.join(ROOT, "build", "guest")


@pytest.mark.guest
@pytest.mark.skipif(not os.path.exists(os.path.join(GUEST, "vmlinux")), reason="the tiny guest is not built (make guest)")
def test_after_a_reboot_the_guest_sees_the_same_disks_including_a_hot_plugged_one(host):
    sys.path.insert(0, os.path.join(ROOT, "tools", "guest"))
    from agent import GuestAgent  # pylint: disable=import-outside-toplevel

    def disks(want):
        """What the guest sees, once it sees ``want`` (a hot-plugged disk appears a little later)."""
        with GuestAgent(os.path.join(host.dir("g"), "agent.sock"), timeout=90) as ga:
            ga.wait_ready()
            deadline = time.monotonic() + 60
            while True:
                seen = {d["serial"]: (d["bus"], d["size"]) for d in ga.disks() if d["serial"]}
                if seen == want or time.monotonic() > deadline:
                    return seen
                time.sleep(0.2)  # polling the guest's view; there is no event for it

    host.run("g", autostart=True, kernel_path=os.path.join(GUEST, "vmlinux"),
             initrd_path=os.path.join(GUEST, "initramfs.gz"), kernel_args="console=ttyS0 panic=-1 quiet",
             agent_channel=True, disks=[{"name": "root", "path": host.image("g-root.raw"), "serial": "ROOT1"}])
    plugged = run_module("qemu_device", dict(name="g", state_dir=host.dir("g"), kind="disk", state="present",
                                             device={"name": "data", "path": host.image("g-data.raw"),
                                                     "serial": "DATA1"}))
    assert plugged["changed"] and not plugged.get("failed"), plugged.get("msg")
    expected = {"ROOT1": ("virtio", 8 << 20), "DATA1": ("virtio", 8 << 20)}
    assert disks(expected) == expected
    old = host.pid("g")
    os.kill(old, signal.SIGKILL)
    wait_gone(old)
    for entry in VOLATILE:
        if os.path.lexists(os.path.join(host.dir("g"), entry)):
            os.unlink(os.path.join(host.dir("g"), entry))
    host.boot("boot-B")
    rc, report = host.entry("start-all")
    assert rc == 0 and report["g"]["action"] == "started", report
    assert host.pid("g") not in (None, old)
    assert disks(expected) == expected


def test_autostart_changes_on_a_running_instance_are_recorded_without_touching_qemu(host):
    first = host.run("live")
    pid = first["pid"]
    changed = host.run("live", autostart=True, autostart_order=4, autostart_delay=2.0)
    assert changed["changed"] and [a["action"] for a in changed["actions"]] == ["autostart"]
    assert changed["pid"] == pid and host.pid("live") == pid
    with open(os.path.join(host.dir("live"), "runtime.json"), encoding="utf-8") as handle:
        assert json.load(handle)["layout"]["declaration"]["autostart"] == {"order": 4, "delay": 2.0}
    again = host.run("live", autostart=True, autostart_order=4, autostart_delay=2.0)
    assert not again["changed"] and again["actions"] == []
    # qemu_device keeps it: the declaration it saves comes from the recorded one.
    plugged = run_module("qemu_device", dict(name="live", state_dir=host.dir("live"), kind="disk", state="present",
                                             device={"name": "d", "path": host.image("live-d.raw")}))
    assert plugged["changed"] and not plugged.get("failed"), plugged.get("msg")
    with open(os.path.join(host.dir("live"), "runtime.json"), encoding="utf-8") as handle:
        assert json.load(handle)["layout"]["declaration"]["autostart"] == {"order": 4, "delay": 2.0}
    off = host.run("live", autostart=False, disks=[{"name": "d", "path": str(host.images / "live-d.raw")}])
    assert off["changed"] and [a["action"] for a in off["actions"]] == ["autostart"] and host.pid("live") == pid
