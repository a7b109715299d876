"""Boot the tiny test guest (tools/guest, built by `make guest`) with plain QEMU argv
and check it through its serial agent (tools/guest/agent.py).

TCG only: no KVM is assumed. One VM is shared by most tests (each boot costs ~5 s);
with pytest-xdist each worker that runs a test here boots its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUEST = ROOT / "build" / "guest"
sys.path.insert(0, str(ROOT / "tools" / "guest"))

from agent import AgentError, GuestAgent  # noqa: E402

QEMU = shutil.which("qemu-system-x86_64")
_missing = [f for f in ("vmlinux", "initramfs.gz", "boot.iso", "data.iso")
            if not (GUEST / f).exists()]
if _missing:
    pytest.skip(f"the test guest is not built ({', '.join(_missing)} missing in {GUEST}); "
                "run `make guest`", allow_module_level=True)
if QEMU is None:
    pytest.skip("qemu-system-x86_64 is not installed", allow_module_level=True)

BOOT_TIMEOUT = 120.0  # TCG on a busy 2-core machine; a quiet one boots in ~5 s
MiB = 1 << 20
VDISK_SIZE = 48 * MiB + 7 * 4096  # odd sizes, to check exact reporting
SDISK_SIZE = 24 * MiB + 5 * 512


class Qmp:
    """Just enough QMP over QEMU's stdio (-qmp stdio) for these tests."""

    def __init__(self, proc: subprocess.Popen, timeout: float = 30.0):
        self.proc = proc
        self.timeout = timeout
        self.events: list[dict] = []
        self.buf = b""
        greeting = self._read()
        assert "QMP" in greeting, greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        # Own line buffer over the raw pipe: a buffered reader could hold a line that
        # select() then never reports.
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            if not select.select([fd], [], [], self.timeout)[0]:
                raise TimeoutError("no QMP output from QEMU")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError(f"QEMU exited (status {self.proc.poll()})")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, cmd: str, **args) -> object:
        assert self.proc.stdin is not None
        msg = {"execute": cmd, **({"arguments": args} if args else {})}
        self.proc.stdin.write((json.dumps(msg) + "\n").encode())
        self.proc.stdin.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"QMP {cmd}: {reply['error']}")
            else:
                return reply["return"]


class Vm:
    """A QEMU process booting the guest, its QMP and its agent."""

    def __init__(self, statedir: Path, extra: list[str], machine: str = "pc",
                 direct_kernel: bool = True):
        self.dir = statedir
        self.sock = statedir / "agent.sock"
        argv = [QEMU, "-machine", machine, "-accel", "tcg", "-nodefaults", "-no-user-config",
                "-display", "none", "-no-reboot", "-m", "256", "-cpu", "max",
                # QMP on stdio: its greeting tells that QEMU is up and the agent socket
                # is listening, with no polling for the socket file.
                "-qmp", "stdio",
                "-chardev", f"file,id=console,path={statedir}/console.log",
                "-chardev", f"socket,id=agent,path={self.sock},server=on,wait=off",
                "-serial", "chardev:console", "-serial", "chardev:agent"]
        if direct_kernel:
            argv += ["-kernel", str(GUEST / "vmlinux"), "-initrd", str(GUEST / "initramfs.gz"),
                     "-append", "console=ttyS0 panic=-1 quiet"]
        with open(statedir / "qemu.err", "wb") as err:
            self.proc = subprocess.Popen(argv + extra, cwd=statedir, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=err)
        self.agent: GuestAgent | None = None
        try:
            self.qmp = Qmp(self.proc)
            self.agent = GuestAgent(self.sock, timeout=BOOT_TIMEOUT)
            self.agent.wait_ready()
            self.agent.timeout = 60.0
        except BaseException:
            self.kill()
            raise

    def console(self) -> str:
        return (self.dir / "console.log").read_text(errors="replace")

    def kill(self) -> None:
        if self.agent is not None:
            self.agent.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()


def blockdev(node: str, path: Path, read_only: bool = False) -> list[str]:
    spec = {"driver": "raw", "node-name": node, "read-only": read_only,
            "file": {"driver": "file", "filename": str(path), "read-only": read_only}}
    return ["-blockdev", json.dumps(spec)]


def make_image(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


@pytest.fixture(scope="module")
def guest_dir():
    d = Path(tempfile.mkdtemp(prefix="blguest-test-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def guest(guest_dir):
    vdisk = make_image(guest_dir / "vdisk.img", VDISK_SIZE)
    sdisk = make_image(guest_dir / "sdisk.img", SDISK_SIZE)
    extra = (blockdev("vdisk", vdisk)
             + ["-device", "virtio-blk-pci,drive=vdisk,serial=SERIAL1,id=vdisk0"]
             + ["-device", "virtio-scsi-pci,id=scsi0"]
             + blockdev("sdisk", sdisk)
             + ["-device", "scsi-hd,bus=scsi0.0,drive=sdisk,serial=SCSISER1,scsi-id=2,lun=0"]
             + blockdev("cd", GUEST / "data.iso", read_only=True)
             + ["-device", "scsi-cd,bus=scsi0.0,drive=cd,serial=CDSER1,scsi-id=4,lun=0"])
    machine = Vm(guest_dir, extra)
    yield machine
    machine.kill()


def by_serial(disks: list[dict], serial: str) -> dict:
    hits = [d for d in disks if d["serial"] == serial]
    assert len(hits) == 1, f"want one disk with serial {serial}: {disks}"
    return hits[0]


def test_ping_and_uptime(guest):
    guest.agent.ping()
    up = guest.agent.uptime()
    assert 0 < up < BOOT_TIMEOUT + 60
    assert guest.agent.uptime() >= up
    assert "guest-init: agent starting" in guest.console()


def test_virtio_blk_serial_and_size(guest):
    disk = by_serial(guest.agent.disks(), "SERIAL1")
    assert disk["name"].startswith("vd")
    assert disk["bus"] == "virtio"
    assert disk["size"] == VDISK_SIZE
    assert disk["ro"] == 0


def test_scsi_hd_on_virtio_scsi_serial_and_size(guest):
    disk = by_serial(guest.agent.disks(), "SCSISER1")
    assert disk["name"].startswith("sd")
    assert disk["bus"] == "scsi"
    assert disk["driver"] == "virtio_scsi"
    assert disk["size"] == SDISK_SIZE
    host, channel, target, lun = disk["hctl"].split(":")
    assert (channel, target, lun) == ("0", "2", "0")


def test_cdrom_label_serial_and_file(guest):
    cd = by_serial(guest.agent.disks(), "CDSER1")
    assert cd["name"].startswith("sr")
    assert cd["ro"] == 1
    assert cd["size"] == (GUEST / "data.iso").stat().st_size
    assert guest.agent.label(cd["name"]) == "BLDATA"
    assert guest.agent.cat(cd["name"], "hello.txt") == b"hello from the CD\n"


@pytest.mark.parametrize("serial,image,offset,length,byte", [
    ("SERIAL1", "vdisk.img", 3 * MiB + 512, 256 * 1024, 0x5A),
    ("SCSISER1", "sdisk.img", 3 * MiB + 512, 256 * 1024, 0x5A),
    # longer than the agent's 4 MiB pattern, and not a multiple of it
    ("SERIAL1", "vdisk.img", 20 * MiB + 4096, 5 * MiB + 123, 0xC3),
])
def test_guest_writes_reach_the_host_image(guest, serial, image, offset, length, byte):
    dev = by_serial(guest.agent.disks(), serial)["name"]
    guest.agent.write(dev, offset, length, byte)
    data = (guest.dir / image).read_bytes()
    assert data[offset:offset + length] == bytes([byte]) * length
    assert data[offset - 512:offset] == bytes(512)
    assert data[offset + length:offset + length + 512] == bytes(512)
    # The guest reads back what the host has.
    r = guest.agent.read(dev, offset, length)
    assert r == {"length": length, "md5": hashlib.md5(data[offset:offset + length]).hexdigest(),
                 "first": byte, "uniform": 1}
    assert guest.agent.read_is(dev, offset, length, byte)


def test_guest_reads_what_the_host_wrote(guest):
    dev = by_serial(guest.agent.disks(), "SERIAL1")["name"]
    offset, length = 8 * MiB, 64 * 1024
    payload = bytes(range(256)) * (length // 256)
    with open(guest.dir / "vdisk.img", "r+b") as f:
        f.seek(offset)
        f.write(payload)
    r = guest.agent.read(dev, offset, length)
    assert r["md5"] == hashlib.md5(payload).hexdigest()
    assert r["uniform"] == 0 and r["first"] == 0


def test_hotplugged_virtio_disk_comes_and_goes(guest):
    img = make_image(guest.dir / "hot.img", 16 * MiB)
    before = {d["name"] for d in guest.agent.disks()}
    guest.qmp.execute("blockdev-add", **{"driver": "raw", "node-name": "hot",
                                         "file": {"driver": "file", "filename": str(img)}})
    guest.qmp.execute("device_add", driver="virtio-blk-pci", drive="hot", id="hot0",
                      serial="HOTSER", bus="pci.0", addr="0x0d")
    disk = None
    try:
        # The guest names it; wait for any new vdX to appear, by its serial.
        new = sorted(f"vd{c}" for c in "abcdefgh" if f"vd{c}" not in before)[0]
        guest.agent.wait_disk(new, present=True, timeout=30)
        disk = by_serial(guest.agent.disks(), "HOTSER")
        assert disk["name"] == new and disk["size"] == 16 * MiB
        guest.agent.write(new, 0, 4096, 0xA5)
        assert img.read_bytes()[:4096] == b"\xa5" * 4096
    finally:
        guest.qmp.execute("device_del", id="hot0")
        if disk is not None:
            guest.agent.wait_disk(disk["name"], present=False, timeout=30)
    assert "HOTSER" not in {d["serial"] for d in guest.agent.disks()}


def test_errors_name_the_command(guest):
    with pytest.raises(AgentError, match="'read'.*no block device /dev/nosuch"):
        guest.agent.read("nosuch", 0, 512)
    with pytest.raises(AgentError, match="'bogus'.*unknown command"):
        guest.agent.command("bogus")
    with pytest.raises(AgentError, match="'write'.*bad number"):
        guest.agent.command("write", "vda", "0", "1", "256")
    guest.agent.ping()  # still in step after errors


def test_reconnect_and_cli(guest):
    """A new connection (no READY banner this time) and the CLI both work."""
    guest.agent.close()
    try:
        out = subprocess.run([sys.executable, str(ROOT / "tools/guest/agent.py"), str(guest.sock),
                              "disks", "--json", "--timeout", "60"],
                             capture_output=True, text=True, timeout=90, check=False)
        assert out.returncode == 0, out.stderr
        disks = json.loads(out.stdout)
        assert by_serial(disks, "SERIAL1")["size"] == VDISK_SIZE
        out = subprocess.run([sys.executable, str(ROOT / "tools/guest/agent.py"), str(guest.sock),
                              "read", "nosuch", "0", "1"], capture_output=True, text=True,
                             timeout=90, check=False)
        assert out.returncode == 1 and "'read'" in out.stderr
    finally:
        guest.agent = GuestAgent(guest.sock, timeout=60)
        guest.agent.wait_ready()
    guest.agent.ping()


def test_boot_iso_boots_from_cdrom_and_powers_off():
    """boot.iso (isolinux, compressed kernel) boots with no -kernel; poweroff ends QEMU."""
    d = Path(tempfile.mkdtemp(prefix="blguest-test-"))
    machine = None
    try:
        extra = (blockdev("bootcd", GUEST / "boot.iso", read_only=True)
                 + ["-device", "virtio-scsi-pci,id=scsi0",
                    "-device", "scsi-cd,bus=scsi0.0,drive=bootcd,bootindex=0"])
        machine = Vm(d, extra, direct_kernel=False)
        cds = [x for x in machine.agent.disks() if x["name"].startswith("sr")]
        assert len(cds) == 1
        assert machine.agent.label(cds[0]["name"]) == "BLGUEST"
        machine.agent.poweroff()
        assert machine.proc.wait(timeout=60) == 0
    finally:
        if machine is not None:
            machine.kill()
        shutil.rmtree(d, ignore_errors=True)
