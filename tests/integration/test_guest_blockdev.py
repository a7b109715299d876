"""With the tiny Linux guest: snapshot, commit and mirror while the guest runs and writes; the
guest's data ends up where the chain says, read back by the guest and from the image files."""

import hashlib
import json
import os
import subprocess
import threading

from .conftest import BOOT, GUEST_MARKS, hmp, run_module
from .helpers import MiB, by_serial, image_holds

pytestmark = GUEST_MARKS


def blockdev(vm, **args):
    return run_module("qemu_blockdev", dict(args, name="t", state_dir=vm.state_dir))


def region_md5(path, fmt, offset, length):
    raw = path + ".raw"
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", path, raw], check=True)
    with open(raw, "rb") as handle:
        handle.seek(offset)
        return hashlib.md5(handle.read(length)).hexdigest()


def test_snapshot_then_commit_puts_the_guest_writes_on_the_base(guest):
    base = guest.image("base.qcow2", "32M", "qcow2")
    disks = [dict(name="data", path=base, format="qcow2", serial="D1")]
    guest.guest_run(disks=disks, **BOOT)
    overlay = str(guest.images / "snap.qcow2")
    with guest.agent() as ga:
        dev = by_serial(ga)["D1"]["name"]
        ga.write(dev, 4 * MiB, MiB, 0x5A)
        assert blockdev(guest, disk="data", snapshot=dict(path=overlay))["changed"]
        ga.write(dev, 6 * MiB, MiB, 0xA5)  # into the overlay
        committed = blockdev(guest, disk="data", commit={}, delete_unused=True)
        assert committed["job"]["result"] == "completed", committed
        ga.write(dev, 8 * MiB, MiB, 0x3C)  # straight onto the base again
        assert all(ga.read_is(dev, o, MiB, b) for o, b in ((4 * MiB, 0x5A), (6 * MiB, 0xA5), (8 * MiB, 0x3C)))
    guest.guest_run(state="stopped", disks=disks, **BOOT)
    assert all(image_holds(base, "qcow2", b, o, MiB) for o, b in ((4 * MiB, 0x5A), (6 * MiB, 0xA5), (8 * MiB, 0x3C)))
    # The overlay alone (its backing file not opened) got the write made while it was on top,
    # and nothing after the commit.
    alone = 'json:{"driver": "qcow2", "backing": null, "file": {"driver": "file", "filename": "%s"}}' % overlay
    assert image_holds(alone, "qcow2", 0xA5, 6 * MiB, MiB) and image_holds(alone, "qcow2", 0, 8 * MiB, MiB)


def test_mirror_while_the_guest_writes_then_pivot(guest):
    """A guest loop writes random data until the test raises a flag on a second disk, after the
    pivot: the copy ran under its writes, and the target holds what the guest reads."""
    src = guest.image("src.qcow2", "32M", "qcow2")
    flag = guest.image("flag.raw", "1M")
    disks = [dict(name="data", path=src, format="qcow2", serial="D1"), dict(name="flag", path=flag, serial="F1")]
    guest.guest_run(disks=disks, **BOOT)
    target = str(guest.images / "target.qcow2")
    with guest.agent() as ga:
        seen = by_serial(ga)
        dev, flag_dev = seen["D1"]["name"], seen["F1"]["name"]
        ga.write(dev, 2 * MiB, MiB, 0x5A)
        loop = ("n=0; while [ \"$(dd if=/dev/%s bs=512 count=1 iflag=direct 2>/dev/null | head -c 1)\" != S ]; do "
                "dd if=/dev/urandom of=/dev/%s bs=64k count=1 seek=$((128 + n %% 64)) conv=fsync 2>/dev/null; "
                "n=$((n+1)); done; echo writes $n" % (flag_dev, dev))
        out = {}
        writer = threading.Thread(target=lambda: out.setdefault("text", ga.run(loop, timeout=300)))
        writer.start()
        try:
            moved = blockdev(guest, disk="data", mirror=dict(path=target), delete_unused=True)
        finally:
            with guest.qmp() as qmp:  # the flag: 'S' at offset 0 of the second disk
                flag_id = next(d for d in moved_records(guest) if d["name"] == "flag")["id"]
                hmp(qmp, 'qemu-io -d %s/virtio-backend "write -P 0x53 0 512"' % flag_id)
            writer.join(300)
        assert moved["job"]["result"] == "completed", moved
        assert int(out["text"].split()[-1]) > 0
        guest_md5 = ga.read(dev, 8 * MiB, 4 * MiB)["md5"]
        assert ga.read_is(dev, 2 * MiB, MiB, 0x5A)
    guest.guest_run(state="stopped", disks=disks, **BOOT)
    assert region_md5(target, "qcow2", 8 * MiB, 4 * MiB) == guest_md5
    assert image_holds(target, "qcow2", 0x5A, 2 * MiB, MiB)


def moved_records(vm):
    with open(os.path.join(vm.state_dir, "runtime.json")) as handle:
        return json.load(handle)["layout"]["devices"]
