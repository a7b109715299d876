import os

from ansible_collections.blocklayer.qemu.plugins.module_utils import info, runtime, verify

from .helpers import DATA, QCOW2, disk, running


def test_the_diff_summary_names_devices_as_declared_with_placement_and_options_only():
    with open(os.path.join(DATA, "runtime-v1.json"), "rb") as handle:
        rt = runtime.loads(handle.read(), "v1")
    summary = info.summary(rt.layout)
    assert list(summary["devices"]) == ["controller scsi", "disks[root]", "disks[data]", "cdroms[installer]",
                                        "nics[lan]"]
    root = summary["devices"]["disks[root]"]
    assert (root["bus"], root["addr"], root["path"], root["format"], root["cache"]) == (
        "pci.0", "0xd", "/srv/images/web1/root.qcow2", "qcow2", "none")
    assert "nodes" not in root and "props" not in root  # QEMU's plumbing stays out of the diff
    assert summary["devices"]["disks[data]"]["scsi-id"] == 0
    assert summary["machine"]["memory"] == 256 and summary["hvparams"]["disk_cache"] == "none"
    assert info.summary(None) == {}


# -- describe: QEMU's answers (hand-written, as 7.2 and 10.0 give them) next to the runtime file ----
def throttled_instance(journal=()):
    """A runtime file with one qcow2 disk limited to 64 KiB/s, and its device id."""
    lay = running(facts={"/img/a.qcow2": QCOW2},
                  disks=[disk("a", path="/img/a.qcow2", format="qcow2", limits={"bps_total": 65536})])
    rt = runtime.Runtime(layout=lay, host=runtime.HostBinding(binary="qemu-system-x86_64", version="7.2.22"),
                         journal=list(journal))
    return rt, lay.devices[0]["id"]


def answers(dev, inserted_node, inserted_drv="throttle", bitmaps=()):
    """query-block, query-pci, qom-list and query-named-block-nodes for the disk, as QEMU answers."""
    pseudo = 'json:{"throttle-group": "%s.tg", "driver": "throttle", "file": {...}}' % dev
    block = [{"qdev": "/machine/peripheral/%s/virtio-backend" % dev,
              "inserted": {"node-name": inserted_node, "drv": inserted_drv, "ro": False, "file": pseudo,
                           "cache": {"direct": True, "no-flush": False, "writeback": True},
                           "image": {"filename": pseudo, "format": inserted_drv}}}]
    named = [{"node-name": inserted_node, "drv": inserted_drv, "file": pseudo,
              "image": {"virtual-size": 16 * MiB, "actual-size": 200704}},
             {"node-name": dev + ".fmt", "drv": "qcow2", "file": "/img/a.qcow2", "dirty-bitmaps": list(bitmaps),
              "image": {"virtual-size": 16 * MiB, "actual-size": 200704}},
             {"node-name": dev + ".stor", "drv": "file", "file": "/img/a.qcow2",
              "image": {"virtual-size": 262144, "actual-size": 200704}}]
    if inserted_node != dev + ".thr":
        named.append({"node-name": dev + ".thr", "drv": "throttle", "file": pseudo, "image": {}})
    qom = [{"name": dev, "type": "child<virtio-blk-pci>"}]
    slot = int(running(disks=[disk("a")]).devices[0]["hvinfo"]["addr"], 16)
    pci = [{"bus": 0, "devices": [{"qdev_id": dev, "slot": slot}]}]
    return verify.Live.from_answers(block, pci, qom, named)


MiB = 1024 * 1024
APPLIED = {"bps-total": 65536, "bps-total-max-length": 1, "iops-total": 0}


def test_a_throttled_disk_is_its_image_path_with_sizes_never_the_filters_pseudo_name():
    rt, dev = throttled_instance()
    out = info.describe(rt, answers(dev, dev + ".thr"), [], {dev + ".tg": APPLIED})
    [entry] = out["devices"]
    assert (entry["image"], entry["format"], entry["node"]) == ("/img/a.qcow2", "qcow2", dev + ".thr")
    assert entry["chain"] == [{"path": "/img/a.qcow2", "format": "qcow2", "node": dev + ".fmt",
                               "virtual_size": 16 * MiB, "actual_size": 200704}]
    assert entry["virtual_size"] == 16 * MiB and entry["actual_size"] == 200704
    assert entry["limits"] == entry["limits_in_qemu"] == {"bps_total": 65536}
    assert out["drift"] == [] and out["jobs"] == [] and entry["checkpoints"] == []


def test_limits_qemu_applies_otherwise_are_drift():
    rt, dev = throttled_instance()
    out = info.describe(rt, answers(dev, dev + ".thr"), [], {dev + ".tg": {"iops-total": 20}})
    assert out["devices"][0]["limits_in_qemu"] == {"iops_total": 20}
    assert out["drift"] == ["disks[a] (%s): QEMU limits its I/O to iops_total=20, not the declared "
                            "bps_total=65536" % dev]


def test_named_bitmaps_are_checkpoints_and_a_jobs_anonymous_one_is_not():
    rt, dev = throttled_instance()
    bitmaps = [{"name": "cp1", "recording": True, "persistent": True, "busy": False, "count": 65536,
                "granularity": 65536},
               {"recording": True, "persistent": False, "busy": False, "count": 0, "granularity": 65536}]
    out = info.describe(rt, answers(dev, dev + ".thr", bitmaps=bitmaps), [], {dev + ".tg": APPLIED})
    assert out["devices"][0]["checkpoints"] == [
        {"name": "cp1", "node": dev + ".fmt", "recording": True, "persistent": True, "count": 65536}]


def mirror_entry(dev, job_id):
    return runtime.Pending("mirror", dev, {"nodes": [dev + ".fmt2"], "jobs": [job_id]}, {"nodes": []}, None, None)


def test_a_disk_on_a_jobs_filter_node_has_a_job_and_no_drift():
    job_id = "x.mirror2"
    rt, dev = throttled_instance()
    rt.journal = [mirror_entry(dev, job_id)]
    jobs = [{"id": job_id, "type": "mirror", "status": "running", "current-progress": 1048576,
             "total-progress": 16 * MiB}]
    out = info.describe(rt, answers(dev, dev + "_job", "mirror_top"), jobs, {dev + ".tg": APPLIED})
    job = {"id": job_id, "type": "mirror", "status": "running", "current": 1048576, "total": 16 * MiB,
           "error": None}
    assert out["drift"] == [] and out["jobs"] == [dict(job, disk=dev)] and out["devices"][0]["job"] == job
    assert out["devices"][0]["image"] == "/img/a.qcow2"
    [root] = out["graph"]
    assert [(c["node"], c["edge"], c["job"]) for c in root["children"]] == [(dev + "_job", "drive", job_id)]
    assert root["children"][0]["children"][0]["node"] == dev + ".thr"
    # Without the job, the same graph is drift: the device is not on its recorded top.
    rt.journal = []
    assert info.describe(rt, answers(dev, dev + "_job", "mirror_top"), [], {dev + ".tg": APPLIED})["drift"] == [
        "%s uses node %s_job, not %s.thr" % (dev, dev, dev)]


def test_without_qemus_answers_devices_and_jobs_are_the_runtime_files():
    rt, dev = throttled_instance()
    rt.journal = [mirror_entry(dev, "x.mirror2")]
    out = info.describe(rt, None, None, None)
    [entry] = out["devices"]
    assert (entry["image"], entry["node"], entry["in_qemu"], entry["limits_in_qemu"]) == (
        "/img/a.qcow2", dev + ".thr", None, None)
    assert entry["chain"] == [{"path": "/img/a.qcow2", "format": "qcow2", "node": dev + ".fmt",
                               "virtual_size": None, "actual_size": None}]
    assert out["jobs"] == [{"id": "x.mirror2", "type": "mirror", "status": None, "current": None, "total": None,
                            "error": None, "disk": dev}]
    assert out["drift"] == [] and entry["job"]["id"] == "x.mirror2"


def test_the_graph_is_a_tree_per_device_and_dot_has_a_line_per_node_and_edge():
    rt, dev = throttled_instance()
    out = info.describe(rt, answers(dev, dev + ".thr"), [], {dev + ".tg": APPLIED})
    [root] = out["graph"]
    thr = root["children"][0]
    assert (root["device"], thr["node"], thr["edge"], thr["throttle_group"]) == (dev, dev + ".thr", "drive",
                                                                                 dev + ".tg")
    fmt = thr["children"][0]
    assert (fmt["node"], fmt["edge"], fmt["driver"]) == (dev + ".fmt", "file", "qcow2")
    assert [(c["node"], c["edge"], c["path"]) for c in fmt["children"]] == [(dev + ".stor", "file", "/img/a.qcow2")]
    lines = out["graph_dot"].splitlines()
    assert lines[0] == 'digraph "block graph of vm1" {' and lines[-1] == "}"
    assert '  "%s" -> "%s" [label="drive"];' % (dev, dev + ".thr") in lines
    assert '  "%s" -> "%s" [label="file"];' % (dev + ".fmt", dev + ".stor") in lines
    assert '  "%s" [label="%s\\nfile\\n/img/a.qcow2"];' % (dev + ".stor", dev + ".stor") in lines
    assert len([line for line in lines if " -> " in line]) == 3


def test_dot_quotes_what_would_end_a_string():
    assert info._quote('a "b" \\c') == '"a \\"b\\" \\\\c"'


def test_limiting_keeps_only_what_limits_with_snake_case_keys():
    assert info.limiting({"bps-total": 1, "iops-total": 0, "bps-total-max-length": 1, "iops-total-max-length": 5}) \
        == {"bps_total": 1, "iops_total_max_length": 5}


def test_a_drive_device_without_recorded_nodes_shows_query_blocks_images():
    rt, dev = throttled_instance()
    rt.layout.devices[0] = dict(rt.layout.devices[0], nodes=[], origin="drive", spec={})
    live = answers(dev, "#block123", "qcow2")
    live.block[0]["inserted"]["image"] = {"filename": "/img/top.qcow2", "format": "qcow2", "virtual-size": 16 * MiB,
                                          "actual-size": 4096, "backing-image": {
                                              "filename": "/img/base.raw", "format": "raw", "virtual-size": 16 * MiB,
                                              "actual-size": 8192}}
    [entry] = info.describe(rt, live, [], {})["devices"]
    assert entry["image"] == "/img/top.qcow2" and entry["actual_size"] == 12288
    assert [(c["path"], c["format"], c["node"]) for c in entry["chain"]] == [
        ("/img/base.raw", "raw", None), ("/img/top.qcow2", "qcow2", "#block123")]


def test_a_throttle_group_qemu_lacks_is_drift():
    rt, dev = throttled_instance()
    out = info.describe(rt, answers(dev, dev + ".thr"), [], {})
    assert out["devices"][0]["limits_in_qemu"] is None
    assert out["drift"] == ["disks[a] (%s): its throttle group %s.tg is not in QEMU" % (dev, dev)]
