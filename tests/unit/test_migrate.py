"""The pure part of qemu_migrate: what may migrate, the layout re-bound to the target, its argv."""

import json
import os
import re
from dataclasses import asdict

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import adopt, blockdev, migrate, plan, probe, runtime, standalone, verify
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.runtime import RuntimePaths

from . import helpers
from .helpers import QCOW2, disk

TARGET = RuntimePaths("/var/lib/t/vm1")


def guest_layout(machine="pc-i440fx-7.2", cpu="qemu64", **over):
    """A layout as instance.py records it at start (records from the placed declaration)."""
    decl = dict(scsi_controller_type="virtio-scsi-pci", kernel_path="/boot/k", initrd_path="/boot/i",
                disks=[disk("root", path="/srv/img/root.qcow2", format="qcow2"),
                       disk("data", path="/srv/img/data.raw", disk_type="scsi-hd")])
    decl.update(over)
    lay = helpers.running({"/srv/img/root.qcow2": QCOW2}, **decl)
    lay.machine, lay.cpu = machine, cpu
    return lay


def running(lay, journal=()):
    return runtime.Runtime(layout=lay, host=runtime.HostBinding(binary="/usr/bin/qemu-system-x86_64",
                                                                version="7.2.22"),
                           status=runtime.STATUS_RUNNING, journal=list(journal))


def values(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


# -- refusals ---------------------------------------------------------------------------------

def test_a_settled_running_instance_may_migrate():
    assert migrate.refusals(running(guest_layout())) == []


def test_an_unplug_pending_device_is_refused_by_id():
    lay = guest_layout()
    lay.devices[1]["state"] = runtime.STATE_UNPLUG_PENDING
    reasons = migrate.refusals(running(lay))
    assert len(reasons) == 1 and lay.devices[1]["id"] in reasons[0] and "unplug-pending" in reasons[0]


def test_a_block_job_in_the_journal_is_refused_naming_the_job():
    entry = runtime.Pending(action="mirror", id="disk-1", creates={"jobs": ["disk-1.mirror2"]})
    reasons = migrate.refusals(running(guest_layout(), [entry]))
    assert len(reasons) == 1 and "disk-1.mirror2" in reasons[0] and "qemu_blockdev" in reasons[0]


def test_an_unfinished_hotplug_and_a_starting_instance_are_refused():
    rt = running(guest_layout(), [runtime.Pending(action="attach", id="disk-2")])
    rt.status = runtime.STATUS_STARTING
    reasons = migrate.refusals(rt)
    assert any("starting" in r for r in reasons) and any("attach of disk-2" in r for r in reasons)


def test_devices_started_with_drive_may_migrate():
    lay = guest_layout()
    lay.devices[0]["origin"] = runtime.ORIGIN_DRIVE
    assert migrate.refusals(running(lay)) == []  # export converts them (below)


# -- versions ---------------------------------------------------------------------------------

def test_the_same_minor_version_takes_any_recorded_state():
    migrate.check_versions(guest_layout(machine=None, cpu=None), "7.2.22", "7.2.1")


def test_across_versions_a_pinned_machine_and_named_cpu_migrate():
    migrate.check_versions(guest_layout(), "7.2.22", "10.0.2")
    migrate.check_versions(guest_layout(), "10.0.2", "7.2.22")


@pytest.mark.parametrize("machine,cpu,needle", [(None, "qemu64", "machine type"), ("pc-i440fx-7.2", None, "-cpu"),
                                                ("pc-i440fx-7.2", "max", "-cpu max")])
def test_across_versions_an_old_record_or_max_cpu_is_refused(machine, cpu, needle):
    with pytest.raises(ConfigError, match="prepare: .*%s" % needle):
        migrate.check_versions(guest_layout(machine=machine, cpu=cpu), "7.2.22", "10.0.2")


def test_without_the_source_version_only_a_pinned_layout_migrates():
    migrate.check_versions(guest_layout(), None, "10.0.2")
    with pytest.raises(ConfigError, match="unknown version"):
        migrate.check_versions(guest_layout(cpu=None), None, "10.0.2")


def test_versioned_machine_from_query_machines():
    machines = [{"name": "pc-q35-7.2", "alias": "q35"}, {"name": "pc-i440fx-7.2", "alias": "pc", "is-default": True},
                {"name": "pc-i440fx-7.1"}]
    assert probe.versioned_machine(machines, "pc") == "pc-i440fx-7.2"
    assert probe.versioned_machine(machines, "q35") == "pc-q35-7.2"
    assert probe.versioned_machine(machines, "pc-i440fx-7.1") == "pc-i440fx-7.1"
    assert probe.versioned_machine(machines, "microvm") is None


# -- path_map and re-binding ------------------------------------------------------------------

@pytest.mark.parametrize("path,expected", [
    ("/srv/img/root.qcow2", "/mnt/san/root.qcow2"),
    ("/srv/img/fast/a.raw", "/fast/a.raw"),        # the longest prefix wins
    ("/srv/image/x.raw", "/srv/image/x.raw"),      # a prefix is a whole path component
    ("/srv/img", "/mnt/san"),
    ("/boot/k", "/boot/k"),
])
def test_map_path(path, expected):
    assert migrate.map_path(path, {"/srv/img": "/mnt/san", "/srv/img/fast/": "/fast"}) == expected


def test_rebind_maps_every_image_and_boot_file_and_keeps_the_records():
    lay = guest_layout()
    lay.devices[0]["former_images"] = ["/srv/img/old.qcow2"]
    lay.devices[0]["unused_nodes"] = ["disk-x.fmt2"]
    bound = migrate.rebind(asdict(lay), {"/srv/img": "/mnt/san", "/boot": "/b"}, TARGET.state_dir, "/opt/q/bin/qemu")
    files = [n["filename"] for d in bound.devices for n in blockdev.flat(d["nodes"]) if "filename" in n]
    assert files == ["/mnt/san/root.qcow2", "/mnt/san/data.raw"]
    assert bound.devices[0]["former_images"] == ["/mnt/san/old.qcow2"] and "unused_nodes" not in bound.devices[0]
    assert [d["spec"]["path"] for d in bound.devices] == ["/mnt/san/root.qcow2", "/mnt/san/data.raw"]
    assert bound.declaration["machine"]["kernel_path"] == "/b/k"
    assert bound.declaration["state_dir"] == "/var/lib/t/vm1" and bound.declaration["qemu_binary"] == "/opt/q/bin/qemu"
    # Everything the guest sees, and the names QMP uses, is the source's.
    assert [(d["id"], d["hvinfo"], d["props"]) for d in bound.records()] == \
        [(d["id"], d["hvinfo"], d["props"]) for d in lay.records()]
    assert (bound.machine, bound.cpu, bound.uuid) == ("pc-i440fx-7.2", "qemu64", lay.uuid)


def test_rebind_refuses_a_damaged_layout_by_key_and_a_relative_map():
    data = asdict(guest_layout())
    del data["devices"][0]["hvinfo"]
    with pytest.raises(ConfigError, match=r"layout\.devices\[0\]\.hvinfo is missing"):
        migrate.rebind(data, {}, TARGET.state_dir, "/usr/bin/qemu-system-x86_64")
    with pytest.raises(ConfigError, match="path_map"):
        migrate.rebind(asdict(guest_layout()), {"srv": "/mnt"}, TARGET.state_dir, "/usr/bin/qemu-system-x86_64")


def test_missing_images_name_the_device_and_the_path():
    lay = guest_layout()
    with pytest.raises(ConfigError, match=r"prepare: data \(disk-[0-9a-f-]+\) /srv/img/data.raw: not found.*path_map"):
        migrate.check_files(lay, exists=lambda p: p != "/srv/img/data.raw")


# -- the target's command line ----------------------------------------------------------------

def test_the_incoming_argv_has_the_source_machine_cpu_and_every_record():
    lay = guest_layout(machine="pc-i440fx-7.2", cpu="qemu64")
    argv = migrate.incoming_argv(lay, "tcg", TARGET, ["/opt/q/share/qemu"], "/opt/q/bin/qemu")
    assert argv[0] == "/opt/q/bin/qemu"
    assert values(argv, "-machine") == ["pc-i440fx-7.2"] and values(argv, "-cpu") == ["qemu64"]
    assert argv[-2:] == ["-incoming", "defer"] and "-S" not in argv
    assert values(argv, "-L") == ["/opt/q/share/qemu"]
    assert [json.loads(v) for v in values(argv, "-device")] == [r["props"] for r in lay.records()]
    assert [json.loads(v) for v in values(argv, "-blockdev")] == [n for r in lay.devices for n in r["nodes"]]
    assert "socket,id=qmp,path=/var/lib/t/vm1/qmp.sock,server=on,wait=off" in argv


def test_standalone_nodes_move_with_the_guest_paths_mapped_and_checked():
    lay = guest_layout()
    lay.named_nodes.append(dict(standalone.node_record("copy", "/srv/img/copy.qcow2", "qcow2", False, "file"),
                                copy_of=lay.devices[0]["id"]))
    bound = migrate.rebind(asdict(lay), {"/srv/img": "/mnt/san"}, TARGET.state_dir, "/usr/bin/q")
    assert bound.named_nodes[0]["path"] == "/mnt/san/copy.qcow2" and bound.named_nodes[0]["copy_of"]
    assert bound.named_nodes[0]["nodes"][0]["file"]["filename"] == "/mnt/san/copy.qcow2"
    argv = migrate.incoming_argv(bound, "tcg", TARGET, [], "/usr/bin/q")
    last = json.loads(values(argv, "-blockdev")[-1])
    assert (last["node-name"], last["file"]["node-name"]) == ("copy.fmt", "copy.stor")
    with pytest.raises(ConfigError, match=r"copy \(node copy\) /mnt/san/copy.qcow2: not found"):
        migrate.check_files(bound, exists=lambda p: p != "/mnt/san/copy.qcow2")


def test_an_old_record_starts_the_target_with_the_alias_and_the_old_default_cpu():
    argv = migrate.incoming_argv(guest_layout(machine=None, cpu=None), "tcg", TARGET, [], "/usr/bin/q")
    assert values(argv, "-machine") == ["pc"] and values(argv, "-cpu") == ["max"]


def test_hot_plugged_records_and_overlays_are_on_the_target_as_recorded():
    lay = guest_layout()
    # An overlay on root, as qemu_blockdev snapshot records it: the chain bottom-up, top last.
    root = lay.devices[0]
    overlay = [{"driver": "file", "node-name": root["id"] + ".stor2", "filename": "/srv/img/ov.qcow2"},
               {"driver": "qcow2", "node-name": root["id"] + ".fmt2", "file": root["id"] + ".stor2",
                "backing": root["id"] + ".fmt"}]
    root["nodes"] = root["nodes"] + overlay
    root["props"] = dict(root["props"], drive=root["id"] + ".fmt2")
    argv = migrate.incoming_argv(lay, "tcg", TARGET, [], "/usr/bin/q")
    blockdevs = [json.loads(v) for v in values(argv, "-blockdev")]
    assert blockdevs[len(root["nodes"]) - 2:len(root["nodes"])] == overlay
    assert json.loads(values(argv, "-device")[1])["drive"] == root["id"] + ".fmt2"


@pytest.mark.parametrize("listen,uri", [(None, "unix:/var/lib/t/vm1/mig.sock"), ("/run/m.sock", "unix:/run/m.sock"),
                                        ("192.0.2.1:4444", "tcp:192.0.2.1:4444"), ("tcp:[::1]:5", "tcp:[::1]:5")])
def test_listen_uri(listen, uri):
    assert migrate.listen_uri(listen, TARGET) == uri


def test_listen_refuses_what_is_no_address():
    with pytest.raises(ConfigError, match="listen"):
        migrate.listen_uri("somewhere", TARGET)


# -- -drive disks in their -blockdev form -----------------------------------------------------

def adopted_drive_layout():
    """The layout adoption records for tests/data/qmp-adopt-drive-7.2.json (a virtio-blk disk and
    a scsi-hd, both -drive), and that QEMU's query-block entries by qdev id."""
    answers = helpers.answers("drive", "7.2")
    found = adopt.found_layout(answers)
    inst = helpers.declared()
    lay = runtime.GuestLayout(name=inst.name, uuid=inst.uuid, machine_type="pc",
                              declaration=plan.normalise(inst.to_dict()), controllers=found.controllers,
                              devices=adopt.bind(found, inst, {}))
    return lay, verify.block_by_id(answers["query-block"])


KINDS = {"/srv/images/hand/vda.qcow2": "file", "/srv/images/hand/sda.raw": "file"}
QOM = {"sd0": {"serial": "", "device_id": "drive-sd0"}, "vd0": {"serial": ""}}


def test_a_drive_disk_becomes_a_stor_fmt_chain_with_its_device_unchanged():
    lay, entries = adopted_drive_layout()
    before = {r["id"]: r for r in lay.devices}
    after = {r["id"]: r for r in migrate.converted_layout(lay, entries, KINDS, QOM).devices}
    vd0, sd0 = after["vd0"], after["sd0"]
    vd0_nodes, sd0_nodes = blockdev.flat(vd0["nodes"]), blockdev.flat(sd0["nodes"])
    assert [n["node-name"] for n in vd0["nodes"]] == ["vd0.fmt"]  # the protocol node inside
    assert [n["node-name"] for n in vd0_nodes] == ["vd0.stor", "vd0.fmt"]
    assert vd0_nodes[0]["filename"] == "/srv/images/hand/vda.qcow2" and vd0_nodes[0]["driver"] == "file"
    assert vd0_nodes[1]["driver"] == "qcow2" and vd0_nodes[1]["file"] == "vd0.stor"
    assert all(n["cache"] == {"direct": False, "no-flush": False} and n["read-only"] is False
               for n in vd0_nodes + sd0_nodes)
    assert [n["driver"] for n in sd0_nodes] == ["file", "raw"]
    for dev_id, rec in after.items():
        if rec["kind"] != "disk":
            assert rec == before[dev_id]  # the NIC is untouched
            continue
        assert rec["origin"] == runtime.ORIGIN_BLOCKDEV and before[dev_id]["origin"] == runtime.ORIGIN_DRIVE
        assert rec["hvinfo"] == dict(before[dev_id]["hvinfo"], drive=dev_id + ".fmt")
        # Every guest-visible property stays; write-cache and scsi-disk's device_id become explicit.
        assert rec["props"] == dict(before[dev_id]["props"], drive=dev_id + ".fmt", **{"write-cache": "on"},
                                    **({"device_id": "drive-sd0"} if dev_id == "sd0" else {}))
        assert rec["spec"] == before[dev_id]["spec"] and rec["name"] == before[dev_id]["name"]
    # What the target starts with: -blockdev nodes and the device on the top node.
    argv = migrate.incoming_argv(migrate.converted_layout(lay, entries, KINDS, QOM), "tcg", TARGET, [], "/q")
    assert "-drive" not in argv
    assert "vd0.fmt" in [json.loads(v)["node-name"] for v in values(argv, "-blockdev")]


def test_cache_read_only_and_detect_zeroes_come_from_what_qemu_has_open():
    lay, entries = adopted_drive_layout()
    inserted = entries["vd0"]["inserted"]
    inserted.update(cache={"writeback": False, "direct": True, "no-flush": False}, detect_zeroes="unmap", ro=True)
    rec = next(r for r in migrate.converted_layout(lay, entries, KINDS, QOM).devices if r["id"] == "vd0")
    assert rec["props"]["write-cache"] == "off"
    for node in blockdev.flat(rec["nodes"]):
        assert node["cache"] == {"direct": True, "no-flush": False} and node["read-only"] is True
        assert node["discard"] == "unmap"  # detect-zeroes unmap was only accepted with it
    assert rec["nodes"][0]["detect-zeroes"] == "unmap"


def test_a_backing_file_becomes_a_named_read_only_image_below_as_for_a_declared_overlay():
    lay, entries = adopted_drive_layout()
    entries["vd0"]["inserted"]["image"].update({
        "backing-filename": "/srv/images/hand/base.qcow2", "backing-filename-format": "qcow2",
        "backing-image": {"filename": "/srv/images/hand/base.qcow2", "format": "qcow2"}})
    rec = next(r for r in migrate.converted_layout(lay, entries, KINDS, QOM).devices if r["id"] == "vd0")
    nodes = {n["node-name"]: n for n in blockdev.flat(rec["nodes"])}
    assert list(nodes) == ["vd0.stor", "vd0.fmt", "vd0.stor2", "vd0.fmt2"]
    assert nodes["vd0.stor"]["filename"] == "/srv/images/hand/base.qcow2" and nodes["vd0.fmt"]["read-only"]
    assert nodes["vd0.fmt2"]["backing"] == "vd0.fmt" and rec["props"]["drive"] == "vd0.fmt2"


def test_the_target_runs_the_virtqueue_sizes_the_source_reported_and_the_record_stays():
    lay = guest_layout()
    drivers = {r["id"]: r["props"]["driver"] for r in lay.records()}
    assert sorted(drivers.values()) == ["scsi-hd", "virtio-blk-pci", "virtio-scsi-pci"]
    sized = migrate.with_rings(lay, {dev_id: 1024 for dev_id in drivers})
    devices = {d["id"]: d for d in map(json.loads, values(migrate.incoming_argv(sized, "tcg", TARGET, [], "/q"),
                                                          "-device"))}
    want = {"virtio-blk-pci": ("queue-size", 1024), "virtio-scsi-pci": ("virtqueue_size", 1024)}
    for dev_id, driver in drivers.items():
        prop = want.get(driver)
        assert {k: v for k, v in devices[dev_id].items() if k in ("queue-size", "virtqueue_size")} == (
            dict([prop]) if prop else {}), driver
    assert all("queue-size" not in r["props"] and "virtqueue_size" not in r["props"] for r in lay.records())
    # A source that reported no sizes (a QEMU without x-query-virtio-queue-status): argv as before.
    assert migrate.incoming_argv(migrate.with_rings(lay, {}), "tcg", TARGET, [], "/q") == migrate.incoming_argv(
        lay, "tcg", TARGET, [], "/q")
    assert "rings" not in migrate.export_data(running(lay))["source"]
    assert migrate.export_data(running(lay), rings={"x": 256})["source"]["rings"] == {"x": 256}


def test_the_export_data_carries_the_converted_layout_and_the_source_record_stays():
    lay, entries = adopted_drive_layout()
    rt = running(lay)
    data = migrate.export_data(rt, migrate.converted_layout(lay, entries, KINDS, QOM))
    assert {d["id"]: d["origin"] for d in data["layout"]["devices"]}["vd0"] == runtime.ORIGIN_BLOCKDEV
    assert {d["id"]: d["origin"] for d in rt.layout.devices}["vd0"] == runtime.ORIGIN_DRIVE
    rebound = migrate.rebind(data["layout"], {"/srv/images": "/mnt/images"}, "/var/lib/t/vm1", "/q")
    assert [r["nodes"][0]["file"]["filename"] for r in rebound.devices if r["kind"] == "disk"] == [
        "/mnt/images/hand/sda.raw", "/mnt/images/hand/vda.qcow2"]


def _refusal(change, device="vd0", kinds=None):
    lay, entries = adopted_drive_layout()
    change(entries[device]["inserted"])
    with pytest.raises(ConfigError) as exc:
        migrate.converted_layout(lay, entries, KINDS if kinds is None else kinds, QOM)
    return str(exc.value)


@pytest.mark.parametrize("change,needle", [
    (lambda i: i.update(iops_wr=100, bps=1000), "I/O limits set with -drive (bps=1000, iops_wr=100)"),
    # What 7.2's query-block shows for -drive snapshot=on.
    (lambda i: i.update(file='json:{"backing": {"driver": "qcow2", "file": {"driver": "file", "filename": '
                             '"/srv/images/hand/vda.qcow2"}}, "driver": "qcow2", "file": {"driver": "file", '
                             '"filename": "/var/tmp/vl.JRY4Y3"}}', backing_file="/srv/images/hand/vda.qcow2"),
     "a temporary overlay over /srv/images/hand/vda.qcow2 (snapshot=on)"),
    (lambda i: i.update(drv="vmdk"), "format vmdk"),
    (lambda i: i.update(encrypted=True), "encrypted"),
    (lambda i: i.update(file="/elsewhere.qcow2"), "QEMU has /elsewhere.qcow2 open"),
    (lambda i: i["image"].update({"backing-filename": "/b.img"}), "without a format"),
])
def test_what_cannot_be_converted_faithfully_is_refused_naming_the_device(change, needle):
    msg = _refusal(change)
    assert msg.startswith("export:") and "root (vd0)" in msg and needle in msg, msg
    assert "sd0" not in msg


def test_an_image_that_is_not_a_file_here_is_refused():
    assert "its image /srv/images/hand/vda.qcow2 is missing on this host" in _refusal(lambda i: None, kinds={})


def format0_layout():
    """tests/data/runtime-v0.json as read (format 0 -> 2): a disk and a NIC with only their PCI slot."""
    with open(os.path.join(helpers.DATA, "runtime-v0.json"), "rb") as handle:
        return runtime.loads(handle.read(), "runtime-v0.json").layout


def test_a_format0_record_gets_its_chain_and_the_nic_its_netdev_and_mac_from_qemu():
    lay = format0_layout()
    disk_id, nic_id = "disk-4ebf0f12-96f4-5d1b", "nic-61771629-eb60-512b"
    assert {r["id"]: r["origin"] for r in lay.devices} == {disk_id: "drive", nic_id: "drive"}
    entries = adopted_drive_layout()[1]
    entry = dict(entries["vd0"], qdev="/machine/peripheral/%s/virtio-backend" % disk_id)
    entry["inserted"] = dict(entry["inserted"], file="/srv/images/web1/root.qcow2",
                             cache={"writeback": True, "direct": True, "no-flush": False})  # its cache=none
    qom = {nic_id: {"netdev": nic_id + ".net", "mac": "52:54:00:f4:a2:00"}, disk_id: {"serial": ""}}
    after = {r["id"]: r for r in migrate.converted_layout(lay, verify.block_by_id([entry]),
                                                          {"/srv/images/web1/root.qcow2": "file"}, qom).devices}
    assert after[disk_id]["props"] == {"driver": "virtio-blk-pci", "id": disk_id, "bus": "pci.0", "addr": "0xd",
                                       "drive": disk_id + ".fmt", "write-cache": "on"}
    assert after[disk_id]["nodes"][0]["cache"] == {"direct": True, "no-flush": False}
    assert after[nic_id]["netdev"] == {"type": "user", "id": nic_id + ".net"}
    assert after[nic_id]["props"] == {"driver": "virtio-net-pci", "id": nic_id, "bus": "pci.0", "addr": "0xe",
                                      "netdev": nic_id + ".net", "mac": "52:54:00:f4:a2:00"}
    assert {r["origin"] for r in after.values()} == {runtime.ORIGIN_BLOCKDEV}
    # Without what QEMU shows of the NIC its record cannot be completed.
    with pytest.raises(ConfigError, match=re.escape("lan (%s): QEMU does not show the netdev" % nic_id)):
        migrate.converted_layout(lay, verify.block_by_id([entry]), {"/srv/images/web1/root.qcow2": "file"},
                                 {disk_id: {}})
