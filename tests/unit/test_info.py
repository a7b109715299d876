import os

from ansible_collections.blocklayer.qemu.plugins.module_utils import info, runtime

DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")


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
