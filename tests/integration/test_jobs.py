"""The block-job engine on a real QEMU: commit, stream, mirror (pivot, keep, failures), timeout.

Patterns are written into the images on the host before QEMU opens them (qemu-io on an image
opened with ``backing: null``, so that a base QEMU already holds is not opened a second time);
the data is read back on the host once QEMU has let go of the image (``quit`` flushes and
closes every node), and the graph is read from QEMU's ``query-block``.
"""

import json
import os
import select
import subprocess

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import engine, jobs, qmp
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError

from .conftest import qemu_img
from .helpers import alone, qemu_io, write_image

SIZE = "16M"


def holds(path, pattern, offset, *flags):
    """True when the image alone (without backing) has ``pattern`` in the MiB at ``offset``."""
    ok, out = qemu_io(alone(path), "read -P %s %s 1M" % (pattern, offset), "-r", *flags)
    assert ok or "Pattern verification failed" in out, out
    return ok


class Disk:
    """A running instance with one qcow2 disk on base.qcow2 (0x11 at 0, 0x44 at 3 MiB), and a
    session of the collection's own QMP client on its socket."""

    def __init__(self, vm, session, dev_id, base):
        self.vm, self.qmp, self.id, self.base = vm, session, dev_id, base
        self.node = dev_id + ".fmt"

    def image(self, name, size=SIZE, backing=None):
        path = str(self.vm.images / (name + ".qcow2"))
        if backing:
            qemu_img("create", "-q", "-f", "qcow2", "-b", backing, "-F", "qcow2", path)
        else:
            qemu_img("create", "-q", "-f", "qcow2", path, size)
        return path

    def add(self, name, path, read_only=False, backing=False):
        """File and qcow2 nodes ``<name>-file``, ``<name>-fmt``; an overlay gets ``backing: null``."""
        extra = {"read-only": True} if read_only else {}
        self.qmp.execute("blockdev-add", dict({"driver": "file", "node-name": name + "-file", "filename": path},
                                              **extra))
        fmt = dict({"driver": "qcow2", "node-name": name + "-fmt", "file": name + "-file"}, **extra)
        if backing:
            fmt["backing"] = None
        self.qmp.execute("blockdev-add", fmt)
        return name + "-fmt"

    def snapshot(self, name, backing_path, pattern, offset):
        """A new overlay on the device's top (with ``pattern`` at ``offset``), via blockdev-snapshot."""
        path = self.image(name, backing=backing_path)
        write_image(path, pattern, offset)
        top = self.block()["inserted"]["node-name"]
        overlay = self.add(name, path, backing=True)
        self.qmp.execute("blockdev-snapshot", {"node": top, "overlay": overlay})
        return path

    def block(self):
        qdevs = (self.id, "/machine/peripheral/%s/virtio-backend" % self.id)
        return next(b for b in self.qmp.execute("query-block") if b["qdev"] in qdevs)

    def root(self):
        return self.block()["inserted"]["node-name"]

    def quit(self):
        """Let QEMU flush and close every image, and wait for it to exit."""
        pid = self.vm.pids()[0]
        fd = os.pidfd_open(pid)
        try:
            try:
                self.qmp.execute("quit")
            except QemuError:
                pass  # the connection may close before the answer
            assert select.select([fd], [], [], 30)[0], "QEMU did not exit after quit"
        finally:
            os.close(fd)


@pytest.fixture
def disk(vm):
    base = vm.image("base.qcow2", SIZE, "qcow2")
    write_image(base, "0x11", 0)
    write_image(base, "0x44", "3M")
    vm.run(disks=[dict(name="d", path=base, format="qcow2")])
    with open(os.path.join(vm.state_dir, "runtime.json")) as handle:
        [dev_id] = [d["id"] for d in json.load(handle)["layout"]["devices"] if d["name"] == "d"]
    with qmp.QmpSession(os.path.join(vm.state_dir, "qmp.sock"), 5, 30) as session:
        yield Disk(vm, session, dev_id, base)


def test_intermediate_then_active_commit(disk):
    ov1 = disk.snapshot("ov1", disk.base, "0x22", "1M")
    ov2 = disk.snapshot("ov2", ov1, "0x33", "2M")
    assert disk.root() == "ov2-fmt" and disk.block()["inserted"]["backing_file_depth"] == 2
    runner = jobs.JobRunner(disk.qmp, timeout=30)
    seen = []

    def commit_point(state):
        seen.append((state.status, disk.qmp.execute("query-jobs")[0]["status"]))

    mid = runner.run(engine.job_command("commit", "c1", device="ov2-fmt", top_node="ov1-fmt", base_node=disk.node),
                     before_finalize=commit_point)
    assert (mid.id, mid.type, mid.result, mid.error) == ("c1", "commit", "completed", None)
    assert seen == [("pending", "pending")]
    inserted = disk.block()["inserted"]
    assert (inserted["node-name"], inserted["backing_file_depth"]) == ("ov2-fmt", 1)
    assert inserted["backing_file"] == disk.base
    assert disk.qmp.execute("query-jobs") == []

    active = runner.run(engine.job_command("commit", "c0", device="ov2-fmt"))
    assert (active.result, active.error) == ("completed", None)
    assert disk.root() == disk.node and disk.block()["inserted"]["backing_file_depth"] == 0
    assert disk.qmp.execute("query-jobs") == []
    for node in ("ov2-fmt", "ov2-file", "ov1-fmt", "ov1-file"):
        disk.qmp.execute("blockdev-del", {"node-name": node})
    disk.quit()
    assert holds(disk.base, "0x11", 0) and holds(disk.base, "0x22", "1M") and holds(disk.base, "0x33", "2M")
    assert holds(ov2, "0x33", "2M") and not holds(ov2, "0x22", "1M")  # commit copies, it does not move


def test_stream_pulls_the_middle_layer_into_the_top(disk):
    ov3 = disk.snapshot("ov3", disk.base, "0x22", "1M")
    ov4 = disk.snapshot("ov4", ov3, "0x33", "2M")
    outcome = jobs.JobRunner(disk.qmp, timeout=30).run(
        engine.job_command("stream", "s1", device="ov4-fmt", base_node=disk.node))
    assert (outcome.type, outcome.result, outcome.error) == ("stream", "completed", None)
    inserted = disk.block()["inserted"]
    assert (inserted["node-name"], inserted["backing_file_depth"], inserted["backing_file"]) == \
        ("ov4-fmt", 1, disk.base)
    assert disk.qmp.execute("query-jobs") == []
    disk.quit()
    assert holds(ov4, "0x22", "1M") and holds(ov4, "0x33", "2M")
    assert holds(ov4, "0", 0)  # the base's data stayed in the base
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", ov4], capture_output=True, text=True,
                                     check=True).stdout)
    assert info["backing-filename"] == disk.base


def test_mirror_pivots_the_device_onto_the_target(disk):
    target = disk.add("tA", disk.image("tA"))
    states = []
    runner = jobs.JobRunner(disk.qmp, timeout=30, on_progress=states.append)
    outcome = runner.run(engine.job_command("mirror", "m1", device=disk.node, target=target, sync="full"))
    assert (outcome.type, outcome.result, outcome.error) == ("mirror", "completed", None)
    assert outcome.current == outcome.total > 0
    assert "ready" in {s.status for s in states}
    assert disk.root() == "tA-fmt"
    assert disk.qmp.execute("query-jobs") == []
    disk.quit()
    path = str(disk.vm.images / "tA.qcow2")
    assert holds(path, "0x11", 0) and holds(path, "0x44", "3M") and holds(path, "0", "1M")


def test_ready_mirror_kept_leaves_the_device_on_the_source_with_a_consistent_copy(disk):
    path = disk.image("tK")
    target = disk.add("tK", path)
    outcome = jobs.JobRunner(disk.qmp, timeout=30).run(
        engine.job_command("mirror", "m2", device=disk.node, target=target, sync="full"), at_ready="keep")
    assert (outcome.result, outcome.error) == ("kept", None)
    assert disk.root() == disk.node
    assert disk.qmp.execute("query-jobs") == []
    disk.qmp.execute("blockdev-del", {"node-name": "tK-fmt"})
    disk.qmp.execute("blockdev-del", {"node-name": "tK-file"})
    compare = subprocess.run(["qemu-img", "compare", "-U", disk.base, path], capture_output=True, text=True,
                             check=False)
    assert compare.returncode == 0, compare.stdout + compare.stderr
    assert holds(path, "0x11", 0) and holds(path, "0x44", "3M")


def test_mirror_to_a_target_of_another_size_fails_and_to_a_read_only_one_is_refused(disk):
    runner = jobs.JobRunner(disk.qmp, timeout=30)
    small = disk.add("tS", disk.image("tS", size="8M"))
    outcome = runner.run(engine.job_command("mirror", "m3", device=disk.node, target=small, sync="full"))
    assert outcome.result == "failed" and "different sizes" in outcome.error
    assert disk.qmp.execute("query-jobs") == [] and disk.root() == disk.node

    read_only = disk.add("tR", disk.image("tR"), read_only=True)
    with pytest.raises(QemuError) as refused:
        runner.run(engine.job_command("mirror", "m4", device=disk.node, target=read_only, sync="full"))
    assert refused.value.desc == "Block node is read-only"
    assert disk.qmp.execute("query-jobs") == [] and disk.root() == disk.node


def test_a_stalled_job_times_out_left_running_and_resumes(disk):
    target = disk.add("tT", disk.image("tT"))
    runner = jobs.JobRunner(disk.qmp, timeout=1.0)
    # 1 byte/s: after its first burst the mirror sleeps far longer than the timeout, short of ready.
    # The burst is one 64 KiB buffer (buf-size; mirror_iteration in QEMU's block/mirror.c copies
    # what fits in it before it asks the rate limit); with the default 16 MiB the image's 2 MiB
    # of data could all be copied before the first sleep, and the job would not stall.
    command = engine.job_command("mirror", "m5", device=disk.node, target=target, sync="full", speed=1,
                                 buf_size=65536)
    with pytest.raises(jobs.JobTimeout) as caught:
        runner.run(command)
    assert (caught.value.state.id, caught.value.state.status) == ("m5", "running")
    [left] = disk.qmp.execute("query-jobs")
    assert (left["id"], left["status"]) == ("m5", "running")
    disk.qmp.execute("block-job-set-speed", {"device": "m5", "speed": 0})  # wakes the job up
    outcome = jobs.JobRunner(disk.qmp, timeout=30).resume("m5")
    assert (outcome.result, outcome.error) == ("completed", None)
    assert disk.root() == "tT-fmt" and disk.qmp.execute("query-jobs") == []
