"""qemu_instance_info: what QEMU has now, device by device, and the drift from the runtime file."""

import json
import os
import re
import subprocess
import sys
import time

from .conftest import COLLECTIONS, run_module
from .helpers import write_image

MiB = 1024 * 1024


def info(vm, check=False):
    return run_module("qemu_instance_info", dict(name="t", state_dir=vm.state_dir), check=check)


def start_module(module, args, argsfile):
    """A module run in the background, as Ansible's async runs one (its own argument file)."""
    with open(argsfile, "w", encoding="utf-8") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    return subprocess.Popen([sys.executable, "-m", "ansible_collections.blocklayer.qemu.plugins.modules." + module,
                             argsfile], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=COLLECTIONS))


def dot_lines(text):
    """The node and edge lines of DOT text: {id: label}, {(from, to): label}."""
    assert text.startswith("digraph ") and text.rstrip().endswith("}"), text
    nodes = dict(re.findall(r'^  "([^"]+)" \[(?:shape=ellipse, )?label="((?:[^"\\]|\\.)*)"\];$', text, re.M))
    edge = r'^  "([^"]+)" -> "([^"]+)" \[label="([^"]*)"\];$'
    edges = {(a, b): label for a, b, label in re.findall(edge, text, re.M)}
    assert len(nodes) + len(edges) == len(text.strip().splitlines()) - 4, text  # digraph, rankdir, node, }
    return nodes, edges


def test_an_instance_that_never_ran_is_absent(vm):
    result = info(vm)
    assert result["state"] == "absent" and result["devices"] == [] and result["changed"] is False
    assert not os.path.exists(vm.state_dir)  # reading creates nothing


def test_devices_are_reported_as_qemu_has_them(vm):
    root = vm.image("root.qcow2", fmt="qcow2")
    data = vm.image("data.raw")
    started = vm.run(scsi_controller_type="virtio-scsi-pci", disks=[
        dict(name="root", path=root, format="qcow2", cache="none"),
        dict(name="data", path=data, disk_type="scsi-hd", mode="ro")], nics=[dict(name="lan")])
    for check in (False, True):
        result = info(vm, check=check)
        assert result["state"] == "running" and result["status"] == "running" and result["changed"] is False
        assert result["pid"] == started["pid"] and result["qemu_version"] == started["qemu_version"]
        by_name = {d["name"]: d for d in result["devices"]}
        assert by_name["root"]["image"] == root and by_name["root"]["format"] == "qcow2"
        assert by_name["root"]["cache"]["direct"] is True and by_name["root"]["read_only"] is False
        assert by_name["root"]["bus"] == "pci.0" and by_name["root"]["addr"] == started["devices"][
            by_name["root"]["id"]]["addr"]
        assert by_name["data"]["image"] == data and by_name["data"]["read_only"] is True
        assert by_name["data"]["scsi-id"] == 0 and by_name["data"]["lun"] == 0
        assert by_name["lan"]["netdev"] == by_name["lan"]["id"] + ".net"
        assert [(c["path"], c["format"], c["node"]) for c in by_name["root"]["chain"]] == [
            (root, "qcow2", by_name["root"]["node"])]
        assert by_name["root"]["virtual_size"] == 16 * MiB and by_name["root"]["checkpoints"] == []
        assert all(d["in_qemu"] for d in result["devices"]) and result["drift"] == []
        assert result["jobs"] == [] and result["unfinished"] == [] and result["unplug_pending"] == []


def test_drift_names_a_device_removed_behind_the_collections_back(vm):
    vm.run(scsi_controller_type="virtio-scsi-pci", disks=[dict(name="a", path=vm.image("a.raw")),
                                                          dict(name="b", path=vm.image("b.raw"), disk_type="scsi-hd")])
    b_id = next(d["id"] for d in info(vm)["devices"] if d["name"] == "b")
    with vm.qmp() as qmp:
        qmp("device_del", id=b_id)  # SCSI: QEMU removes it at once, no guest needed
    result = info(vm)
    entry = next(d for d in result["devices"] if d["name"] == "b")
    assert entry["in_qemu"] is False and entry["image"] is None
    assert any(b_id in line and "not in QEMU" in line for line in result["drift"]), result["drift"]


def test_a_damaged_runtime_file_is_a_problem_not_a_traceback(vm):
    vm.run(disks=[dict(name="a", path=vm.image("a.raw"))])
    with open(os.path.join(vm.state_dir, "runtime.json"), "w") as handle:
        handle.write("[]")
    result = info(vm)
    assert not result.get("failed") and result["state"] == "running"
    assert "runtime.json" in result["problem"] and "damaged" in result["problem"]


def throttled_disk_with_an_overlay(vm):
    """A qcow2 disk with 2 MiB of data, limited to 64 KiB/s, with an overlay from qemu_blockdev."""
    base = vm.image("base.qcow2", "16M", "qcow2")
    write_image(base, "0x11", 0)
    write_image(base, "0x22", "1M")
    vm.run(disks=[dict(name="d", path=base, format="qcow2", limits=dict(bps_total=65536))])
    overlay = str(vm.images / "ov.qcow2")
    snap = run_module("qemu_blockdev", dict(name="t", state_dir=vm.state_dir, disk="d", snapshot=dict(path=overlay)))
    assert snap["changed"], snap
    return base, overlay


def test_a_throttled_disk_shows_its_images_limits_and_graph(vm):
    base, overlay = throttled_disk_with_an_overlay(vm)
    result = info(vm)
    [disk] = result["devices"]
    dev = disk["id"]
    # The image is the top image's path, never the throttle filter's json: pseudo-name.
    assert disk["image"] == overlay and disk["format"] == "qcow2" and disk["node"] == dev + ".thr"
    assert [(c["path"], c["node"]) for c in disk["chain"]] == [(base, dev + ".fmt"), (overlay, dev + ".fmt2")]
    assert disk["limits"] == {"bps_total": 65536} and disk["limits_in_qemu"] == {"bps_total": 65536}
    assert disk["throttle_group"] == dev + ".tg" and result["drift"] == [] and result["qemu"] == "answered"
    assert disk["virtual_size"] == 16 * MiB and all(c["actual_size"] > 0 for c in disk["chain"])
    nodes, edges = dot_lines(result["graph_dot"])
    assert set(nodes) == {dev, dev + ".thr", dev + ".fmt2", dev + ".stor2", dev + ".fmt", dev + ".stor"}
    assert edges == {(dev, dev + ".thr"): "drive", (dev + ".thr", dev + ".fmt2"): "file",
                     (dev + ".fmt2", dev + ".stor2"): "file", (dev + ".fmt2", dev + ".fmt"): "backing",
                     (dev + ".fmt", dev + ".stor"): "file"}
    assert overlay in nodes[dev + ".stor2"] and "json:" not in result["graph_dot"]


def test_sizes_after_a_resize(vm):
    path = vm.image("a.qcow2", "32M", "qcow2")
    disk = dict(name="a", path=path, format="qcow2")
    vm.run(disks=[disk])
    assert info(vm)["devices"][0]["virtual_size"] == 32 * MiB
    assert vm.run(disks=[dict(disk, size="48M")])["changed"]
    [entry] = info(vm)["devices"]
    assert entry["virtual_size"] == 48 * MiB and entry["chain"][0]["virtual_size"] == 48 * MiB
    assert entry["actual_size"] == entry["chain"][0]["actual_size"] > 0


def test_a_running_job_is_a_job_and_info_reads_while_a_task_waits_on_it(vm, tmp_path):
    throttled_disk_with_an_overlay(vm)
    target = str(vm.images / "copy.qcow2")
    mirror = dict(name="t", state_dir=vm.state_dir, disk="d", mirror=dict(path=target))
    started = run_module("qemu_blockdev", dict(mirror, wait=False))
    job_id = started["job"]["id"]
    with vm.qmp() as qmp:
        # The 64 KiB/s throttle keeps the copy of 2 MiB going; speed 1 stalls it from its next chunk.
        qmp("block-job-set-speed", device=job_id, speed=1)
    result = info(vm)
    [disk] = result["devices"]
    assert result["drift"] == [] and result["qemu"] == "answered"
    [job] = result["jobs"]
    assert (job["id"], job["type"], job["status"], job["disk"]) == (job_id, "mirror", "running", disk["id"])
    assert 0 < job["current"] < job["total"] and disk["job"]["id"] == job_id
    assert disk["node"] == disk["id"] + "_job"  # the device sits on the job's filter node
    nodes, edges = dot_lines(result["graph_dot"])
    assert edges[(disk["id"], disk["id"] + "_job")] == "drive" and edges[(disk["id"] + "_job", disk["id"] + ".thr")]

    # Another task waits on the job (holding the instance lock and QEMU's QMP socket) while info reads.
    waiting = start_module("qemu_blockdev", dict(mirror, job_timeout=8), str(tmp_path / "waiting.json"))
    busy = None
    try:
        while busy is None and waiting.poll() is None:
            began = time.monotonic()
            read = info(vm)
            if read["qemu"] == "busy":
                busy, took, still_waiting = read, time.monotonic() - began, waiting.poll() is None
    finally:
        out, err = waiting.communicate(timeout=120)
    assert busy is not None, "info never read while qemu_blockdev waited: %s %s" % (out, err)
    assert still_waiting and took < 5, took
    print("info returned qemu: busy after %.2f s while qemu_blockdev waited" % took)
    assert busy["drift"] == [] and "another task" in busy["problem"]
    assert [(j["id"], j["type"], j["disk"], j["current"]) for j in busy["jobs"]] == [
        (job_id, "mirror", disk["id"], None)]
    assert busy["devices"][0]["image"] == disk["image"] and busy["devices"][0]["chain"] == [
        dict(c, virtual_size=None, actual_size=None) for c in disk["chain"]]
    waited = json.loads(out)
    assert waited["job"]["id"] == job_id and waited["job"]["status"] == "running", waited
    after = info(vm)
    assert after["qemu"] == "answered" and after["drift"] == [] and after["jobs"][0]["status"] == "running"


def test_a_state_root_lists_its_instances_without_following_symlinks(vm, tmp_path):
    vm.run(disks=[dict(name="a", path=vm.image("a.raw")), dict(name="b", path=vm.image("b.raw"))])
    other = str(tmp_path / "other")
    run_module("qemu_instance", vm.args(name="u", state_dir=other, disks=[dict(name="c", path=vm.image("c.raw"))]))
    assert run_module("qemu_instance", vm.args(name="u", state_dir=other, state="stopped"))["changed"]
    os.symlink(vm.state_dir, str(tmp_path / "link"))  # the same instance again, through a symlink
    os.mkdir(str(tmp_path / "empty"))
    listed = run_module("qemu_instance_info", dict(state_root=str(tmp_path)))
    assert not listed.get("failed") and listed["skipped"] == [], listed
    # images/ and empty/ carry no marker, link/ is not followed
    assert sorted(i["name"] for i in listed["instances"]) == ["t", "u"], listed
    by_name = {i["name"]: i for i in listed["instances"]}
    t, u = by_name["t"], by_name["u"]
    assert (t["state"], t["status"], t["pid_alive"], t["devices"], t["state_dir"]) == (
        "running", "running", True, 2, vm.state_dir)
    assert t["pid"] == vm.pids()[0]
    assert (u["state"], u["pid_alive"], u["devices"], u["state_dir"]) == ("stopped", False, 1, other)
    refused = run_module("qemu_instance_info", dict(state_root=str(tmp_path), name="t"))
    assert refused["failed"] and "state_root" in refused["msg"]
