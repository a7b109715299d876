import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import layout
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

from .helpers import QCOW2, by_name, disk, place, place_with_spec


def test_virtio_disks_get_pci_slots_from_the_reservations_up():
    lay = place(disks=[disk("a"), disk("b")])
    assert [d.hvinfo["addr"] for d in lay.devices] == ["0xc", "0xd"]
    assert lay.controllers == ()
    a = by_name(lay, "a")
    assert a.id == a.hvinfo["id"] == "disk-" + "-".join(a.uuid.split("-")[:3])
    assert a.hvinfo == {"driver": "virtio-blk-pci", "id": a.id, "bus": "pci.0", "addr": "0xc", "drive": a.id + ".fmt"}


def test_scsi_disk_brings_the_controller_with_id_scsi_and_its_own_target():
    lay = place(disks=[disk("a", disk_type="scsi-hd"), disk("b", disk_type="scsi-hd"), disk("c")],
                scsi_controller_type="virtio-scsi-pci")
    (ctrl,) = lay.controllers
    assert ctrl.hvinfo == {"driver": "virtio-scsi-pci", "id": "scsi", "bus": "pci.0", "addr": "0xc"}
    assert [by_name(lay, n).hvinfo.get("scsi-id") for n in "ab"] == [0, 1]
    assert by_name(lay, "a").hvinfo["bus"] == "scsi.0"
    assert by_name(lay, "c").hvinfo["addr"] == "0xd"  # after the controller


@pytest.mark.parametrize("ctype,driver", [("lsi", "lsi53c895a"), ("megasas", "megasas")])
def test_controller_driver_per_type(ctype, driver):
    lay = place(disks=[disk("a", disk_type="scsi-hd")], scsi_controller_type=ctype)
    assert lay.controllers[0].props["driver"] == driver


def test_nine_disks_on_lsi_fail_naming_the_fix():
    with pytest.raises(ConfigError, match=r"disks\[d8\]: no free SCSI target.*virtio-scsi-pci"):
        place(disks=[disk("d%d" % i, disk_type="scsi-hd") for i in range(9)])


def test_reservations_that_leave_no_slot_fail():
    with pytest.raises(ConfigError, match="no free PCI slot"):
        place(disks=[disk("a"), disk("b")], kvm_pci_reservations=31)


def test_write_cache_and_serial_per_driver():
    lay = place(disks=[disk("a", disk_type="scsi-hd", cache="writethrough", serial="S1"),
                       disk("b", path="/dev/sdz", disk_type="scsi-block")],
                facts={"/dev/sdz": layout.PathFacts("block")})
    a, b = by_name(lay, "a").props, by_name(lay, "b").props
    assert (a["write-cache"], a["serial"], a["device_id"]) == ("off", "S1", by_name(lay, "a").id)
    assert "write-cache" not in b and "serial" not in b and "device_id" not in b


def test_default_serial_is_twenty_hex_digits_of_the_uuid():
    lay = place(disks=[disk("a")])
    a = by_name(lay, "a")
    assert a.props["serial"] == a.uuid.replace("-", "")[:20]


def test_first_disk_boots_by_default():
    lay = place(disks=[disk("a"), disk("b")])
    assert by_name(lay, "a").props["bootindex"] == 1 and "bootindex" not in by_name(lay, "b").props


def test_boot_order_cdrom_boots_the_first_cd_with_media():
    lay = place(disks=[disk("a")], cdroms=[dict(name="empty"), dict(name="iso", path="/iso/x.iso")],
                boot_order="cdrom")
    assert "bootindex" not in by_name(lay, "a").props
    assert "bootindex" not in by_name(lay, "empty").props
    assert by_name(lay, "iso").props["bootindex"] == 1


def test_cdroms_are_read_only_ide_without_write_cache():
    lay = place(cdroms=[dict(name="iso", path="/iso/x.iso")])
    cd = by_name(lay, "iso")
    assert cd.hvinfo["driver"] == "ide-cd" and cd.hvinfo["bus"] == "ide.0" and cd.hvinfo["unit"] == 0
    assert all(n["read-only"] for n in cd.nodes)
    assert "write-cache" not in cd.props


def test_empty_cdrom_has_no_nodes_and_no_drive():
    lay = place(cdroms=[dict(name="empty")])
    cd = by_name(lay, "empty")
    assert cd.nodes == () and "drive" not in cd.hvinfo


def test_scsi_cdrom_shares_the_scsi_bus():
    lay = place(cdroms=[dict(name="iso", path="/iso/x.iso")], cdrom_disk_type="scsi",
                disks=[disk("a", disk_type="scsi-hd")])
    assert by_name(lay, "iso").hvinfo["driver"] == "scsi-cd"
    assert by_name(lay, "iso").hvinfo["scsi-id"] == 1


def test_https_cdrom_needs_no_local_path():
    s, lay = place_with_spec(cdroms=[dict(name="net", path="https://example.org/x.iso")])
    assert layout.declared_paths(s) == []
    assert by_name(lay, "net").nodes[0]["file"]["driver"] == "https"


def test_floppy_on_q35_brings_an_isa_fdc_and_boot_floppy_sets_bootindexA():
    lay = place(machine_type="q35", floppy=dict(path="/img/fd.img"), boot_order="floppy")
    assert [c.props for c in lay.controllers if c.id == "fdc"] == [{"driver": "isa-fdc", "id": "fdc"}]
    assert by_name(lay, "floppy").hvinfo["driver"] == "floppy"
    assert lay.globals == ("isa-fdc.bootindexA=1",)


def test_floppy_on_pc_uses_the_built_in_controller():
    lay = place(floppy=dict(path="/img/fd.img"))
    assert lay.controllers == ()


@pytest.mark.parametrize("facts,fmt,message", [
    (layout.PathFacts("missing"), "raw", "does not exist.*qemu-img create"),
    (layout.PathFacts("directory"), "raw", "is a directory, not a regular file or a block device"),
    (layout.PathFacts("unreadable"), "raw", "cannot be opened for reading"),
    (QCOW2, "raw", "holds a qcow2 image but is declared format raw; declare format: qcow2"),
    (layout.PathFacts("file", b"\0\0\0\0"), "qcow2", "declared format qcow2 but has no qcow2 header"),
    (layout.PathFacts("char"), "raw", "character device; only disk_type scsi-generic"),
])
def test_bad_paths_are_refused_naming_the_disk(facts, fmt, message):
    with pytest.raises(ConfigError, match=r"disks\[a\]: .*" + message):
        place(disks=[disk("a", format=fmt)], facts={"/img/a.raw": facts})


def test_qcow2_declared_qcow2_is_accepted():
    lay = place(disks=[disk("a", format="qcow2")], facts={"/img/a.raw": QCOW2})
    assert by_name(lay, "a").nodes[0]["driver"] == "qcow2"


def test_scsi_passthrough_needs_the_right_host_device():
    with pytest.raises(ConfigError, match="scsi-block needs a host block device"):
        place(disks=[disk("a", disk_type="scsi-block")])
    with pytest.raises(ConfigError, match="scsi-generic needs a host SCSI generic device"):
        place(disks=[disk("a", disk_type="scsi-generic")])


def test_ide_disks_and_cdroms_share_the_ide_positions():
    lay = place(disks=[disk("a", disk_type="ide")], cdroms=[dict(name="c", path="/i.iso")])
    assert (by_name(lay, "a").hvinfo["bus"], by_name(lay, "a").hvinfo["unit"]) == ("ide.0", 0)
    assert (by_name(lay, "c").hvinfo["bus"], by_name(lay, "c").hvinfo["unit"]) == ("ide.0", 1)


def test_layout_is_deterministic():
    decl = dict(disks=[disk("a"), disk("b", disk_type="scsi-hd")], cdroms=[dict(name="c", path="/i.iso")])
    assert place(**decl) == place(**decl)


def test_q35_puts_every_pci_device_in_its_own_root_port_plus_spares():
    lay = place(machine_type="q35", pcie_root_ports=2, scsi_controller_type="virtio-scsi-pci",
                disks=[disk("a"), disk("b", disk_type="scsi-hd")], nics=[dict(name="n")])
    ports = [c.props for c in lay.controllers if c.props["driver"] == "pcie-root-port"]
    assert len(ports) == 3 + 2  # controller, virtio disk, NIC + two spare
    assert ports[0] == {"driver": "pcie-root-port", "id": "rp0", "bus": "pcie.0", "addr": "0xc.0",
                        "chassis": 1, "port": 0x10, "multifunction": True}
    assert ports[1]["addr"] == "0xc.1" and "multifunction" not in ports[1]
    scsi = next(c for c in lay.controllers if c.id == "scsi")
    assert scsi.hvinfo["bus"] == "rp0" and scsi.hvinfo["addr"] == "0x0"
    assert (by_name(lay, "a").hvinfo["bus"], by_name(lay, "n").hvinfo["bus"]) == ("rp1", "rp2")


def test_root_ports_pack_eight_per_slot():
    lay = place(machine_type="q35", pcie_root_ports=9)
    assert [c.props["addr"] for c in lay.controllers][7:9] == ["0xc.7", "0xd.0"]


def test_nic_gets_netdev_mac_and_pci_slot():
    lay = place(disks=[disk("a")], nics=[dict(name="n", mac="52:54:00:AA:bb:01")])
    nic = by_name(lay, "n")
    assert nic.id.startswith("nic-")
    assert nic.netdev == {"type": "user", "id": nic.id + ".net"}
    assert nic.hvinfo == {"driver": "virtio-net-pci", "id": nic.id, "bus": "pci.0", "addr": "0xd",
                          "netdev": nic.id + ".net"}
    assert nic.props["mac"] == "52:54:00:aa:bb:01"


def test_default_macs_are_stable_and_distinct():
    lay = place(nics=[dict(name="n1"), dict(name="n2")])
    macs = [by_name(lay, n).props["mac"] for n in ("n1", "n2")]
    assert macs == [by_name(place(nics=[dict(name="n1"), dict(name="n2")]), n).props["mac"] for n in ("n1", "n2")]
    assert macs[0] != macs[1] and all(m.startswith("52:54:00:") for m in macs)


def test_boot_order_network_boots_the_first_nic():
    lay = place(nics=[dict(name="n1"), dict(name="n2")], boot_order="network")
    assert by_name(lay, "n1").props["bootindex"] == 1 and "bootindex" not in by_name(lay, "n2").props


def test_sixteen_disks_and_eight_nics_fit_with_lower_reservations():
    lay = place(disks=[disk("d%d" % i) for i in range(16)], nics=[dict(name="n%d" % i) for i in range(8)],
                kvm_pci_reservations=6)
    slots = sorted(int(d.hvinfo["addr"], 16) for d in lay.devices)
    assert slots == list(range(6, 30))
