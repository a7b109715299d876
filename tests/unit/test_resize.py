"""Disk size, share_rw and force_share: parsing, refusals and what they plan and build (pure)."""

import struct

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import blockdev, hotplug, layout, plan, recovery
from ansible_collections.blocklayer.qemu.plugins.module_utils import spec as spec_mod
from ansible_collections.blocklayer.qemu.plugins.module_utils import verify
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

from .helpers import ScriptedQmp, by_name, disk, facts_for, params, place, place_with_spec, running

G = 1 << 30
M = 1 << 20


def raw_of(size):
    return layout.PathFacts("file", b"\0\0\0\0", (), size)


def disk_spec(**over):
    return spec_mod.instance_from(params(disks=[disk("a", **over)])).disks[0]


# -- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    (4096, 4096), ("4096", 4096), ("64K", 64 * 1024), ("64k", 64 * 1024), ("512M", 512 * M), ("10G", 10 * G),
    ("1T", 1 << 40), ("2P", 2 << 50), (" 3g ", 3 * G), (None, None), ("", None)])
def test_size_takes_bytes_or_binary_units(value, expected):
    assert disk_spec(size=value).size == expected


@pytest.mark.parametrize("value", ["10GB", "1.5G", "ten", "-1G", "10 X", [10], 1.0, True])
def test_a_size_that_is_not_one_names_the_option_the_disk_and_an_example(value):
    with pytest.raises(ConfigError, match=r"disks\[a\]\.size: .* is not a size; give bytes .* \(10G\)"):
        disk_spec(size=value)


def test_zero_is_refused():
    with pytest.raises(ConfigError, match=r"disks\[a\]\.size: 0 must be larger than 0"):
        disk_spec(size=0)


def test_a_size_off_the_512_byte_sector_is_refused_with_the_next_one():
    with pytest.raises(ConfigError, match=r"disks\[a\]\.size: 1000000 is not a multiple of 512 bytes.* e\.g\. 977K"):
        disk_spec(size=1000000)
    with pytest.raises(ConfigError, match=r"e\.g\. 1K"):
        disk_spec(size=1000)


def test_sizes_are_shown_in_the_largest_unit_that_divides_them():
    assert [spec_mod.format_size(n) for n in (2 * G, 1536 * M, 512, 1 << 40)] == ["2G", "1536M", "512", "1T"]


# -- grow or refuse --------------------------------------------------------------------------------


def test_shrinking_is_refused_with_the_reason_and_the_fix():
    with pytest.raises(ConfigError) as refused:
        spec_mod.grow_to("disks[x].size", G, 2 * G)
    assert str(refused.value) == (
        "disks[x].size: 1G is smaller than the image's 2G; shrinking is refused because the guest's data "
        "past 1G would be lost; declare at least 2G")


def test_equal_or_undeclared_or_unknown_sizes_do_nothing_and_larger_grows():
    assert spec_mod.grow_to("d", G, G) is None
    assert spec_mod.grow_to("d", None, G) is None
    assert spec_mod.grow_to("d", G, None) is None
    assert spec_mod.grow_to("d", 2 * G, G) == 2 * G


def test_a_read_only_disk_or_a_block_device_is_never_grown():
    with pytest.raises(ConfigError, match=r"read-only disk \(mode: ro\) cannot grow"):
        spec_mod.grow_to("d", 2 * G, G, read_only=True)
    with pytest.raises(ConfigError, match=r"QEMU cannot grow a device; grow it on the host first"):
        spec_mod.grow_to("d", 2 * G, G, block_device=True)


def test_a_start_with_an_image_larger_than_declared_is_refused_before_qemu():
    with pytest.raises(ConfigError, match=r"disks\[a\]\.size: 16M is smaller than the image's 32M"):
        place({"/img/a.raw": raw_of(32 * M)}, disks=[disk("a", size="16M")])


# -- planning --------------------------------------------------------------------------------------


def reconcile_sized(data, facts=None, live_sizes=None, **over):
    s = spec_mod.instance_from(params(**over))
    return plan.reconcile(data, s, facts_for(s, facts), live_sizes=live_sizes)


def test_a_running_disk_declared_larger_grows_its_top_format_node_from_qemus_size():
    data = running(disks=[disk("a")], facts={"/img/a.raw": raw_of(16 * M)})
    fmt = data.devices[0]["nodes"][-1]["node-name"]
    (action,) = reconcile_sized(data, live_sizes={fmt: 16 * M}, disks=[disk("a", size="32M")])
    assert (action.action, action.name, action.reason) == ("resize", "a", "grows to 32M")
    assert action.commands == ({"execute": "block_resize", "arguments": {"node-name": fmt, "size": 32 * M}},)
    assert action.record["spec"]["size"] == 32 * M and action.old == data.devices[0]


def test_qemu_already_at_the_declared_size_plans_nothing_whatever_the_record_says():
    data = running(disks=[disk("a")])
    fmt = data.devices[0]["nodes"][-1]["node-name"]
    assert reconcile_sized(data, live_sizes={fmt: 32 * M}, disks=[disk("a", size="32M")]) == []


def test_a_running_disk_declared_smaller_than_qemus_size_is_refused():
    data = running(disks=[disk("a", size="32M")], facts={"/img/a.raw": raw_of(32 * M)})
    fmt = data.devices[0]["nodes"][-1]["node-name"]
    with pytest.raises(ConfigError, match=r"disks\[a\]\.size: 16M is smaller than the image's 32M"):
        reconcile_sized(data, live_sizes={fmt: 32 * M}, disks=[disk("a", size="16M")])


def test_check_mode_takes_the_size_from_the_image_on_the_host():
    data = running(disks=[disk("a")])
    (action,) = reconcile_sized(data, facts={"/img/a.raw": raw_of(16 * M)}, disks=[disk("a", size="32M")])
    assert action.commands[0]["arguments"]["size"] == 32 * M
    after = plan.expected_after(data, [action], {})
    assert after.devices[0]["spec"]["size"] == 32 * M


def test_size_and_a_cold_option_together_need_a_restart():
    data = running(disks=[disk("a")])
    (action,) = reconcile_sized(data, facts={"/img/a.raw": raw_of(16 * M)},
                                disks=[disk("a", size="32M", cache="none")])
    assert action.action == "restart-required" and "cache" in action.reason


def test_a_hot_plugged_disk_grows_after_its_nodes_and_before_device_add():
    data = running(disks=[disk("a")])
    (action,) = reconcile_sized(data, facts={"/img/b.raw": raw_of(16 * M)},
                                disks=[disk("a"), disk("b", size="1G")])
    names = [c["execute"] for c in action.commands]
    assert names == ["blockdev-add", "block_resize", "device_add"]
    assert action.commands[1]["arguments"] == {"node-name": action.record["nodes"][-1]["node-name"], "size": G}


def test_top_format_node_skips_throttle_filters_and_takes_the_last_overlay():
    nodes = [{"driver": "file", "node-name": "s"}, {"driver": "qcow2", "node-name": "base"},
             {"driver": "qcow2", "node-name": "ov1"}, {"driver": "throttle", "node-name": "thr"}]
    assert blockdev.top_format_node(nodes) == "ov1"
    assert blockdev.top_format_node(nodes[:2]) == "base"
    assert blockdev.top_format_node([]) is None


def test_start_resizes_only_disks_whose_image_is_smaller():
    data = running(disks=[disk("a", size="32M"), disk("b", size="16M"), disk("c")],
                   facts={"/img/a.raw": raw_of(16 * M), "/img/b.raw": raw_of(16 * M), "/img/c.raw": raw_of(M)})
    top = {d["name"]: d["nodes"][-1]["node-name"] for d in data.devices}
    sizes = {top["a"]: 16 * M, top["b"]: 16 * M, top["c"]: M}
    assert plan.start_resizes(data.devices, sizes) == [
        {"execute": "block_resize", "arguments": {"node-name": top["a"], "size": 32 * M}}]


def test_live_sizes_come_from_query_named_block_nodes():
    named = [{"node-name": "x.fmt", "image": {"virtual-size": 512}}, {"node-name": "", "image": {}}]
    assert verify.Live([], [], [], named).sizes == {"x.fmt": 512}


# -- journal, recovery, applier --------------------------------------------------------------------


def resize_action():
    data = running(disks=[disk("a")])
    fmt = data.devices[0]["nodes"][-1]["node-name"]
    (action,) = reconcile_sized(data, live_sizes={fmt: 16 * M}, disks=[disk("a", size="32M")])
    return data, action


def test_a_resize_journal_entry_creates_and_removes_nothing():
    _data, action = resize_action()
    entry = hotplug.journal_entry(action)
    assert entry.action == "resize" and entry.creates == {} and entry.removes == {}


def test_a_killed_resize_keeps_the_old_record_and_sends_nothing():
    data, action = resize_action()
    entry = hotplug.journal_entry(action)
    dev = data.devices[0]
    (done,) = recovery.recover([entry], {dev["id"]}, {dev["id"]: dev["nodes"][-1]["node-name"]},
                               {n["node-name"] for n in dev["nodes"]})
    assert done.commands == () and done.record == dev


def test_the_applier_sends_block_resize_and_records_the_new_size():
    data, action = resize_action()
    qmp = ScriptedQmp({})
    hotplug.Applier(qmp, data, 5).apply([action])
    assert qmp.sent == [("block_resize", action.commands[0]["arguments"])]
    assert data.devices[0]["spec"]["size"] == 32 * M


def test_a_failed_block_resize_names_the_disk_and_keeps_the_record():
    data, action = resize_action()
    before = dict(data.devices[0])
    with pytest.raises(Exception, match=r"growing disks\[a\] .* failed, its size is unchanged: .*Cannot grow"):
        hotplug.Applier(ScriptedQmp({"block_resize": "Cannot grow device files"}), data, 5).apply([action])
    assert data.devices[0] == before


def test_a_failed_attach_does_not_try_to_undo_the_resize():
    data = running(disks=[disk("a")])
    (action,) = reconcile_sized(data, facts={"/img/b.raw": raw_of(16 * M)}, disks=[disk("a"), disk("b", size="1G")])
    qmp = ScriptedQmp({"device_add": "Bus 'pci.0' not found"})
    with pytest.raises(Exception, match="what was added was removed"):
        hotplug.Applier(qmp, data, 5).apply([action])
    assert [command for command, _arguments in qmp.sent] == [
        "blockdev-add", "block_resize", "device_add", "blockdev-del"]


# -- host facts ------------------------------------------------------------------------------------


def test_the_qcow2_virtual_size_is_the_header_field_at_offset_24(tmp_path):
    # Host inspection reads files; these are written by the test with the layout of QEMU's qcow2 spec.
    from ansible_collections.blocklayer.qemu.plugins.module_utils import host
    image = tmp_path / "a.qcow2"
    image.write_bytes(b"QFI\xfb" + struct.pack(">I", 3) + b"\0" * 16 + struct.pack(">Q", 5 * G) + b"\0" * 72)
    assert host.inspect_path(str(image)).virtual_size == 5 * G
    raw = tmp_path / "a.raw"
    raw.write_bytes(b"\0" * 1000)
    assert host.inspect_path(str(raw)).virtual_size == 1024  # whole sectors, as QEMU counts them


# -- share_rw / force_share ------------------------------------------------------------------------


def test_share_rw_on_raw_is_the_device_property():
    lay = place(disks=[disk("a", share_rw=True), disk("b")])
    assert by_name(lay, "a").props["share-rw"] is True
    assert "share-rw" not in by_name(lay, "b").props


def test_share_rw_on_qcow2_is_refused_because_it_would_corrupt_the_metadata():
    with pytest.raises(ConfigError, match=r"disks\[a\]: share_rw .*would corrupt its metadata \(the image's "
                                          r"allocation tables\); use format: raw"):
        disk_spec(share_rw=True, format="qcow2", path="/img/a.qcow2")


def test_force_share_on_a_read_only_disk_sets_both_nodes():
    lay = place(disks=[disk("a", force_share=True, mode="ro"), disk("b")])
    assert [n.get("force-share") for n in blockdev.flat(by_name(lay, "a").nodes)] == [True, True]
    assert all("force-share" not in n for n in blockdev.flat(by_name(lay, "b").nodes))


def test_force_share_on_a_writable_disk_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"disks\[a\]: force_share .*only for read-only images; set mode: ro"):
        disk_spec(force_share=True)


def test_no_built_node_sets_locking():
    _s, lay = place_with_spec(
        disks=[disk("a", force_share=True, mode="ro"), disk("b", share_rw=True), disk("c", size="16M")],
        cdroms=[dict(name="cd", path="/i.iso")], floppy=dict(path="/f.img"))
    nodes = [n for d in lay.all_devices() for n in d.nodes]
    assert nodes and all("locking" not in n for n in nodes)


def test_changing_share_rw_or_force_share_on_an_attached_disk_needs_a_restart():
    data = running(disks=[disk("a")])
    (action,) = reconcile_sized(data, disks=[disk("a", share_rw=True)])
    assert action.action == "restart-required" and "share_rw" in action.reason
