import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.blocklayer.qemu.plugins.module_utils import topology
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError


def test_pci_slots_start_at_the_reservations_and_go_up():
    pci = topology.PciAllocator("pc", 12)
    assert [pci.take("d")["addr"] for i in range(3)] == ["0xc", "0xd", "0xe"]
    assert pci.take("d")["bus"] == "pci.0"


def test_pc_has_twenty_slots_above_the_default_reservations():
    pci = topology.PciAllocator("pc", 12)
    slots = [topology.pci_slot(pci.take("d")["addr"]) for i in range(20)]
    assert slots == list(range(12, 32))
    with pytest.raises(ConfigError, match="no free PCI slot.*lower kvm_pci_reservations"):
        pci.take("disks[x]")


def test_q35_leaves_slot_31_to_the_ich9_functions():
    pci = topology.PciAllocator("q35", 29)
    assert [pci.take("d") for i in range(2)] == [{"bus": "pcie.0", "addr": "0x1d"}, {"bus": "pcie.0", "addr": "0x1e"}]
    with pytest.raises(ConfigError):
        pci.take("d")


def test_used_slots_are_skipped():
    pci = topology.PciAllocator("pc", 12, used={12, 14})
    assert [pci.take("d")["addr"] for i in range(2)] == ["0xd", "0xf"]


@given(st.integers(1, 31), st.sets(st.integers(0, 31)), st.sampled_from(["pc", "q35"]))
def test_allocated_slots_are_unique_free_and_in_range(reservations, used, machine):
    pci = topology.PciAllocator(machine, reservations, used)
    taken = []
    while True:
        try:
            taken.append(topology.pci_slot(pci.take("d")["addr"]))
        except ConfigError:
            break
    assert len(taken) == len(set(taken))
    assert not set(taken) & used
    assert all(reservations <= s <= topology.last_pci_slot(machine) for s in taken)
    assert set(taken) | used >= set(range(reservations, topology.last_pci_slot(machine) + 1))


@pytest.mark.parametrize("controller,targets", [("lsi", 8), ("megasas", 65), ("virtio-scsi-pci", 256)])
def test_scsi_targets_per_controller(controller, targets):
    scsi = topology.ScsiAllocator(controller)
    got = [scsi.take("d") for i in range(targets)]
    assert got[0] == {"bus": "scsi.0", "channel": 0, "scsi-id": 0, "lun": 0}
    assert [g["scsi-id"] for g in got] == list(range(targets))
    with pytest.raises(ConfigError, match="no free SCSI target.*%s" % controller):
        scsi.take("disks[x]")


def test_lsi_driver_and_limits_match_qemu():
    model = topology.SCSI_CONTROLLERS["lsi"]
    assert (model.driver, model.max_scsi_id, model.max_lun) == ("lsi53c895a", 7, 0)


def test_ide_positions_pc_and_q35():
    pc = topology.IdeAllocator("pc")
    assert [pc.take("d") for i in range(4)] == [
        {"bus": "ide.0", "unit": 0}, {"bus": "ide.0", "unit": 1}, {"bus": "ide.1", "unit": 0}, {"bus": "ide.1", "unit": 1}]
    with pytest.raises(ConfigError, match="no free IDE position"):
        pc.take("d")
    q35 = topology.IdeAllocator("q35")
    assert [q35.take("d")["bus"] for i in range(6)] == ["ide.%d" % i for i in range(6)]
