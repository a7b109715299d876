"""Records of a QEMU the collection did not start, from QMP answers captured by hand.

tests/data/qmp-adopt-{blockdev,drive}-{7.2,10.0}.json are the answers of QEMU 7.2.22 (the
system QEMU) and 10.0.2 (build/qemu-10.0) started with the argv each file holds: a
virtio-blk disk, a scsi-hd on a virtio-scsi HBA with id ``scsi`` and a virtio-net NIC, once on
-blockdev nodes and once with -drive. qom-get answers QEMU refused (a property the device
lacks) are dropped here: adopt.read only asks a device for properties its type has.
"""

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import adopt
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

from .helpers import answers, declared

VERSIONS = ("7.2", "10.0")


@pytest.mark.parametrize("version", VERSIONS)
def test_blockdev_devices_keep_their_nodes_and_places(version):
    found = adopt.found_layout(answers("blockdev", version))
    assert [(c["id"], c["hvinfo"]) for c in found.controllers] == [
        ("scsi", {"driver": "virtio-scsi-pci", "id": "scsi", "bus": "pci.0", "addr": "0x5"})]
    by_id = {d["id"]: d for d in found.devices}
    vd0, sd0, nic0 = by_id["vd0"], by_id["sd0"], by_id["nic0"]
    assert vd0["origin"] == "blockdev" and vd0["hvinfo"] == {
        "driver": "virtio-blk-pci", "id": "vd0", "bus": "pci.0", "addr": "0x4", "drive": "vda-fmt"}
    assert [(n["node-name"], n["driver"]) for n in vd0["nodes"]] == [("vda-file", "file"), ("vda-fmt", "qcow2")]
    assert vd0["nodes"][0]["filename"] == "/srv/images/hand/vda.qcow2" and vd0["nodes"][1]["file"] == "vda-file"
    assert vd0["props"]["serial"] == "hand-vd0"
    assert sd0["hvinfo"] == {"driver": "scsi-hd", "id": "sd0", "bus": "scsi.0", "channel": 0, "scsi-id": 2, "lun": 0,
                             "drive": "sda-fmt"}
    assert [n["node-name"] for n in sd0["nodes"]] == ["sda-file", "sda-fmt"]
    assert nic0["netdev"] == {"id": "net0", "type": "user"}
    assert nic0["hvinfo"] == {"driver": "virtio-net-pci", "id": "nic0", "bus": "pci.0", "addr": "0x6", "netdev": "net0"}
    assert found.accel == "tcg"


@pytest.mark.parametrize("version", VERSIONS)
def test_drive_devices_get_origin_drive_and_no_nodes(version):
    found = adopt.found_layout(answers("drive", version))
    by_id = {d["id"]: d for d in found.devices}
    for dev_id in ("vd0", "sd0"):
        assert by_id[dev_id]["origin"] == "drive" and by_id[dev_id]["nodes"] == []
    assert by_id["vd0"]["props"]["drive"] == "drive-vd0"
    assert by_id["vd0"]["seen"]["path"] == "/srv/images/hand/vda.qcow2" and by_id["vd0"]["seen"]["format"] == "qcow2"


@pytest.mark.parametrize("style", ("blockdev", "drive"))
def test_bind_names_devices_by_path_and_mac_and_takes_the_declared_spec(style):
    instance = declared()
    records = adopt.bind(adopt.found_layout(answers(style, "10.0")), instance, {})
    names = {r["id"]: r["name"] for r in records}
    assert names == {"vd0": "root", "sd0": "data", "nic0": "lan"}
    root = next(r for r in records if r["id"] == "vd0")
    assert root["spec"]["path"] == "/srv/images/hand/vda.qcow2" and root["spec"]["name"] == "root"
    assert root["uuid"] == root["spec"]["uuid"] and "seen" not in root


def test_bind_takes_a_name_from_the_mapping():
    instance = declared(disks=[dict(name="a", path="/srv/images/hand/vda.qcow2", format="qcow2"),
                               dict(name="b", path="/srv/images/hand/sda.raw", disk_type="scsi-hd")])
    records = adopt.bind(adopt.found_layout(answers("blockdev", "7.2")), instance, {"vd0": "a", "sd0": "b"})
    assert {r["id"]: r["name"] for r in records}["sd0"] == "b"


def test_an_undeclared_device_is_refused_naming_it():
    instance = declared(nics=[])
    with pytest.raises(ConfigError) as err:
        adopt.bind(adopt.found_layout(answers("blockdev", "7.2")), instance, {})
    assert "QEMU has nic nic0 (MAC 52:54:00:12:34:56) but nics declares none named nic0" in str(err.value)


def test_a_declaration_that_differs_from_qemu_is_refused():
    instance = declared(disks=[dict(name="root", path="/srv/images/hand/vda.qcow2", format="raw"),
                               dict(name="data", path="/srv/images/hand/sda.raw", disk_type="scsi-hd")])
    with pytest.raises(ConfigError) as err:
        adopt.bind(adopt.found_layout(answers("blockdev", "7.2")), instance, {})
    assert "adopt: disks[root] (QEMU id vd0): format is 'qcow2' in QEMU, 'raw' declared" in str(err.value)


def test_a_backing_chain_is_read_bottom_up_by_file_names():
    # The shape of query-named-block-nodes after blockdev-snapshot (no ``children`` before 10.1).
    named = {
        "b-file": {"node-name": "b-file", "drv": "file", "file": "/i/base.qcow2", "ro": False},
        "b-fmt": {"node-name": "b-fmt", "drv": "qcow2", "file": "/i/base.qcow2", "ro": False, "image": {}},
        "o-file": {"node-name": "o-file", "drv": "file", "file": "/i/ov.qcow2", "ro": False},
        "o-fmt": {"node-name": "o-fmt", "drv": "qcow2", "file": "/i/ov.qcow2", "ro": False,
                  "image": {"backing-image": {"filename": "/i/base.qcow2"}}},
    }
    nodes = adopt.chain("vd0", "o-fmt", named)
    assert [n["node-name"] for n in nodes] == ["b-file", "b-fmt", "o-file", "o-fmt"]
    assert nodes[3]["backing"] == "b-fmt" and "backing" not in nodes[1]


def test_a_filter_on_top_is_refused():
    named = {"t": {"node-name": "t", "drv": "throttle", "file": "/i/x.raw"}}
    with pytest.raises(ConfigError, match="disk vd0 sits on node t \\(driver throttle\\)"):
        adopt.chain("vd0", "t", named)


def test_the_versioned_machine_comes_from_the_machines_qom_type_and_the_cpu_from_the_command_line():
    data = answers("drive", "7.2")
    assert adopt.found_layout(data).machine is None  # not read: unknown, as in older runtime files
    data["machine"] = "pc-i440fx-7.2-machine"
    assert adopt.found_layout(data).machine == "pc-i440fx-7.2"
    data["machine"] = "pc-q35-10.0-machine"
    assert adopt.found_layout(data).machine == "pc-q35-10.0"
    assert adopt.cpu_of(["qemu-system-x86_64", "-cpu", "host,+vmx", "-m", "256"]) == "host,+vmx"
    assert adopt.cpu_of(["qemu-system-x86_64", "-m", "256"]) == "qemu64"
