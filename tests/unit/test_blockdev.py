import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import blockdev, cache


def io(mode="none", aio="native", discard="unmap", dz="unmap"):
    return cache.io_settings("d", mode, aio, discard, dz)


@pytest.mark.parametrize("path_kind,media,driver", [
    ("file", "disk", "file"), ("block", "disk", "host_device"), ("block", "cdrom", "host_cdrom"),
    ("char", "disk", "host_device"), ("https", "cdrom", "https"), ("http", "cdrom", "http"),
])
def test_protocol_driver_follows_the_path(path_kind, media, driver):
    assert blockdev.protocol_driver(path_kind, media) == driver


def test_url_scheme_detection():
    assert blockdev.path_kind_of_url("https://x/y.iso") == "https"
    assert blockdev.path_kind_of_url("http://x/y.iso") == "http"
    assert blockdev.path_kind_of_url("/srv/y.iso") is None


def test_chain_is_one_format_node_with_its_protocol_node_inside_both_named():
    nodes = blockdev.node_chain("disk-9e7c85f6-b6e5-4243", "/img/a.qcow2", "file", "qcow2", io(), False)
    [fmt] = nodes  # one blockdev-add opens both, one blockdev-del closes both
    assert fmt["driver"] == "qcow2" and fmt["node-name"] == "disk-9e7c85f6-b6e5-4243.fmt"
    assert fmt["file"]["driver"] == "file" and fmt["file"]["filename"] == "/img/a.qcow2"
    assert fmt["file"]["node-name"] == "disk-9e7c85f6-b6e5-4243.stor"
    assert blockdev.top_node(nodes) == "disk-9e7c85f6-b6e5-4243.fmt"
    assert blockdev.names(nodes) == ["disk-9e7c85f6-b6e5-4243.stor", "disk-9e7c85f6-b6e5-4243.fmt"]
    assert blockdev.own_names(nodes) == ["disk-9e7c85f6-b6e5-4243.fmt"]


def test_flat_lists_every_node_bottom_up_as_an_older_record_has_them():
    [fmt] = blockdev.node_chain("disk-a", "/img/a", "file", "raw", io(), False)
    stor = fmt["file"]
    older = [stor, dict(fmt, file="disk-a.stor")]  # a record written before: two commands
    assert blockdev.flat([fmt]) == older
    assert blockdev.flat(older) == older
    assert blockdev.names(older) == blockdev.names([fmt]) == ["disk-a.stor", "disk-a.fmt"]
    assert blockdev.own_names(older) == ["disk-a.stor", "disk-a.fmt"]
    assert fmt["file"] is stor  # flat copies, it does not change the record


def test_a_rebuilt_chain_keeps_a_protocol_node_qemu_holds_on_its_own_separate():
    base = blockdev.Layer(1, "/img/a", "qcow2")
    top = blockdev.Layer(2, "/img/b", "qcow2")
    rebuilt = blockdev.chain_nodes("disk-a", [base, top], lambda path: "file", io(), False)
    assert [n["node-name"] for n in rebuilt] == ["disk-a.fmt", "disk-a.fmt2"]
    older = blockdev.flat(rebuilt[:1])  # the base opened by an earlier version: stor on its own
    kept = blockdev.keep_separate(older, rebuilt)
    assert [n["node-name"] for n in kept] == ["disk-a.stor", "disk-a.fmt", "disk-a.fmt2"]
    assert kept[1]["file"] == "disk-a.stor" and kept[2]["file"]["node-name"] == "disk-a.stor2"
    assert blockdev.keep_separate(rebuilt, rebuilt) == rebuilt
    assert blockdev.flat(kept) == blockdev.flat(rebuilt)


@pytest.mark.parametrize("mode", ["writeback", "none", "writethrough", "directsync", "unsafe"])
def test_every_node_carries_the_same_cache(mode):
    nodes = blockdev.flat(blockdev.node_chain("disk-a", "/img/a", "file", "raw", io(mode, "threads"), False))
    want = cache.cache_settings(mode).node_props()
    assert [n["cache"] for n in nodes] == [want, want]
    assert all("writeback" not in n["cache"] for n in nodes)  # -blockdev has no cache.writeback


def test_aio_only_on_the_file_node_detect_zeroes_only_on_top():
    nodes = blockdev.flat(blockdev.node_chain("disk-a", "/img/a", "file", "raw", io(), False))
    assert nodes[0]["aio"] == "native" and "aio" not in nodes[1]
    assert nodes[1]["detect-zeroes"] == "unmap" and "detect-zeroes" not in nodes[0]
    assert nodes[0]["discard"] == nodes[1]["discard"] == "unmap"


def test_https_iso_is_a_read_only_url_node_without_aio():
    nodes = blockdev.flat(blockdev.node_chain("cdrom-a", "https://mirror/x.iso", "https", "raw",
                                              io("writeback", "threads", "ignore", "off"), True, "cdrom"))
    assert nodes[0] == {"driver": "https", "node-name": "cdrom-a.stor", "url": "https://mirror/x.iso",
                        "cache": {"direct": False, "no-flush": False}, "discard": "ignore",
                        "read-only": True, "auto-read-only": False}
    assert nodes[1]["read-only"] is True
