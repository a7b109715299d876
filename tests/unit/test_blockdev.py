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


def test_chain_is_protocol_then_format_with_explicit_names():
    nodes = blockdev.node_chain("disk-9e7c85f6-b6e5-4243", "/img/a.qcow2", "file", "qcow2", io(), False)
    assert [n["node-name"] for n in nodes] == ["disk-9e7c85f6-b6e5-4243.stor", "disk-9e7c85f6-b6e5-4243.fmt"]
    assert nodes[0]["driver"] == "file" and nodes[0]["filename"] == "/img/a.qcow2"
    assert nodes[1]["driver"] == "qcow2" and nodes[1]["file"] == nodes[0]["node-name"]
    assert blockdev.top_node(nodes) == "disk-9e7c85f6-b6e5-4243.fmt"


@pytest.mark.parametrize("mode", ["writeback", "none", "writethrough", "directsync", "unsafe"])
def test_every_node_carries_the_same_cache(mode):
    nodes = blockdev.node_chain("disk-a", "/img/a", "file", "raw", io(mode, "threads"), False)
    want = cache.cache_settings(mode).node_props()
    assert [n["cache"] for n in nodes] == [want, want]
    assert all("writeback" not in n["cache"] for n in nodes)  # -blockdev has no cache.writeback


def test_aio_only_on_the_file_node_detect_zeroes_only_on_top():
    nodes = blockdev.node_chain("disk-a", "/img/a", "file", "raw", io(), False)
    assert nodes[0]["aio"] == "native" and "aio" not in nodes[1]
    assert nodes[1]["detect-zeroes"] == "unmap" and "detect-zeroes" not in nodes[0]
    assert nodes[0]["discard"] == nodes[1]["discard"] == "unmap"


def test_https_iso_is_a_read_only_url_node_without_aio():
    nodes = blockdev.node_chain("cdrom-a", "https://mirror/x.iso", "https", "raw",
                                io("writeback", "threads", "ignore", "off"), True, "cdrom")
    assert nodes[0] == {"driver": "https", "node-name": "cdrom-a.stor", "url": "https://mirror/x.iso",
                        "cache": {"direct": False, "no-flush": False}, "discard": "ignore",
                        "read-only": True, "auto-read-only": False}
    assert nodes[1]["read-only"] is True
