from ansible_collections.blocklayer.qemu.plugins.module_utils import verify

DISK = {"id": "disk-a", "kind": "disk", "hvinfo": {"driver": "virtio-blk-pci", "bus": "pci.0", "addr": "0xc"},
        "nodes": [{"node-name": "disk-a.stor"}, {"node-name": "disk-a.fmt", "read-only": False}]}
SCSI = {"id": "disk-b", "kind": "disk", "hvinfo": {"driver": "scsi-hd", "scsi-id": 0}, "nodes": [{"node-name": "disk-b.fmt"}]}
CTRL = {"id": "scsi", "kind": "controller", "hvinfo": {"driver": "virtio-scsi-pci", "bus": "pci.0", "addr": "0xd"},
        "nodes": []}
EMPTY_CD = {"id": "cdrom-c", "kind": "cdrom", "hvinfo": {"driver": "ide-cd", "unit": 0}, "nodes": []}
IN_PORT = {"id": "disk-p", "kind": "disk", "hvinfo": {"driver": "virtio-blk-pci", "bus": "rp1", "addr": "0x0"},
           "nodes": [{"node-name": "disk-p.fmt"}]}

BLOCK = [
    {"qdev": "/machine/peripheral/disk-a/virtio-backend", "device": "",
     "inserted": {"node-name": "disk-a.fmt", "ro": False}},
    {"qdev": "disk-b", "device": "", "inserted": {"node-name": "disk-b.fmt", "ro": False}},
    {"qdev": "cdrom-c", "device": ""},
]
QOM = [{"name": "disk-a", "type": "child<virtio-blk-pci>"}, {"name": "disk-b", "type": "child<scsi-hd>"},
       {"name": "scsi", "type": "child<virtio-scsi-pci>"}, {"name": "cdrom-c", "type": "child<ide-cd>"},
       {"name": "type", "type": "string"}]
PCI = [{"bus": 0, "devices": [{"slot": 12, "qdev_id": "disk-a"}, {"slot": 13, "qdev_id": "scsi"},
                              {"slot": 1, "qdev_id": ""}]}]


def test_qdev_paths_of_virtio_blk_are_normalised():
    assert verify.qdev_id("/machine/peripheral/disk-a/virtio-backend") == "disk-a"
    assert verify.qdev_id("disk-b") == "disk-b"


def test_matching_state_has_no_problems():
    assert verify.problems([DISK, SCSI, CTRL, EMPTY_CD], BLOCK, PCI, QOM) == []


def test_wrong_slot_missing_device_and_wrong_node_are_named():
    pci = [{"bus": 0, "devices": [{"slot": 14, "qdev_id": "disk-a"}]}]
    block = [dict(BLOCK[0]), {"qdev": "disk-b", "inserted": {"node-name": "other", "ro": False}}]
    found = verify.problems([DISK, SCSI, CTRL, EMPTY_CD], block, pci, QOM)
    assert found == ["disk-a is in PCI slot 14, not 12", "disk-b uses node other, not disk-b.fmt",
                     "scsi is not on the PCI bus", "cdrom-c has no block backend"]


def test_device_missing_from_qom_or_of_another_type_is_named():
    qom = [{"name": "disk-a", "type": "child<virtio-blk-pci-non-transitional>"}]
    assert verify.problems([DISK, SCSI], BLOCK, PCI, qom) == [
        "disk-a is a virtio-blk-pci-non-transitional, not a virtio-blk-pci", "disk-b is not in QEMU"]


def test_device_behind_a_root_port_needs_no_query_pci_entry():
    block = [{"qdev": "/machine/peripheral/disk-p/virtio-backend", "inserted": {"node-name": "disk-p.fmt"}}]
    qom = [{"name": "disk-p", "type": "child<virtio-blk-pci>"}]
    assert verify.problems([IN_PORT], block, [], qom) == []


def test_devices_behind_bridges_are_found():
    pci = [{"bus": 0, "devices": [{"slot": 3, "qdev_id": "rp1", "pci_bridge": {
        "devices": [{"slot": 0, "qdev_id": "disk-x"}]}}]}]
    assert verify.pci_by_id(pci) == {"rp1": 3, "disk-x": 0}
