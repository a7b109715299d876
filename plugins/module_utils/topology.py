# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where devices go: SCSI controller models, PCI slots, SCSI targets, IDE units (pure).

design-scsi-kvm: PCI slots below ``kvm_pci_reservations`` are left to QEMU, disks, NICs and
controllers get explicit slots from there up; each SCSI disk gets its own scsi-id (channel 0,
lun 0); the SCSI controller's id is ``scsi`` so its bus is ``scsi.0``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Value

SCSI_CONTROLLER_ID = "scsi"
SCSI_BUS = SCSI_CONTROLLER_ID + ".0"


@dataclass(init=False, repr=False, eq=False)
class ScsiControllerModel(Value):
    driver: str
    max_scsi_id: int
    max_lun: int


# Limits of each model as QEMU 7.2 and 10.0 accept them (the max_target and max_lun of each
# controller's SCSIBusInfo: hw/scsi/lsi53c895a.c, megasas.c, virtio-scsi.c).
SCSI_CONTROLLERS = {
    "lsi": ScsiControllerModel("lsi53c895a", max_scsi_id=7, max_lun=0),
    "megasas": ScsiControllerModel("megasas", max_scsi_id=64, max_lun=255),
    "virtio-scsi-pci": ScsiControllerModel("virtio-scsi-pci", max_scsi_id=255, max_lun=16383),
}


def pci_bus(machine_type: str) -> str:
    return "pcie.0" if machine_type == "q35" else "pci.0"


def last_pci_slot(machine_type: str) -> int:
    # q35 keeps slot 0x1f for the ICH9 LPC bridge, SATA and SMBus functions.
    return 30 if machine_type == "q35" else 31


def pci_addr(slot: int) -> str:
    """PCI ``addr`` as a hex string: QEMU 10 reads a JSON integer as devfn, not slot."""
    return "0x%x" % slot


def pci_slot(addr: str) -> int:
    return int(addr.split(".")[0], 16)


class PciAllocator:
    """Hands out the lowest free slot from ``kvm_pci_reservations`` up."""

    def __init__(self, machine_type: str, reservations: int, used=()):
        self.bus = pci_bus(machine_type)
        self.first = reservations
        self.last = last_pci_slot(machine_type)
        self.used = set(used)

    def take(self, what: str) -> dict:
        for slot in range(self.first, self.last + 1):
            if slot not in self.used:
                self.used.add(slot)
                return {"bus": self.bus, "addr": pci_addr(slot)}
        raise ConfigError(
            "%s: no free PCI slot: slots %d to %d are all taken (kvm_pci_reservations is %d); "
            "lower kvm_pci_reservations, or use SCSI disks, which share one controller"
            % (what, self.first, self.last, self.first)
        )


ROOT_PORT_DRIVER = "pcie-root-port"


def root_ports(count: int, first_slot: int) -> list:
    """``count`` pcie-root-port props on pcie.0, eight functions per slot from ``first_slot``.

    q35's pcie.0 cannot hot-plug (QEMU docs/pcie.txt), so every PCI device sits in a root port of
    its own and can later be unplugged; packing ports as functions keeps pcie.0 slots free.
    """
    ports = []
    for index in range(count):
        slot, function = first_slot + index // 8, index % 8
        if slot > last_pci_slot("q35"):
            raise ConfigError(
                "pcie_root_ports: %d root ports do not fit on pcie.0 from slot %d; lower "
                "pcie_root_ports or kvm_pci_reservations" % (count, first_slot))
        props = {"driver": ROOT_PORT_DRIVER, "id": "rp%d" % index, "bus": "pcie.0",
                 "addr": "0x%x.%x" % (slot, function), "chassis": index + 1, "port": 0x10 + index}
        if function == 0:
            props["multifunction"] = True
        ports.append(props)
    return ports


class RootPortAllocator:
    """On q35: the lowest free root port, device at its slot 0."""

    def __init__(self, port_ids, used=()):
        self.port_ids = list(port_ids)
        self.used = set(used)

    def take(self, what: str) -> dict:
        for port in self.port_ids:
            if port not in self.used:
                self.used.add(port)
                return {"bus": port, "addr": "0x0"}
        raise ConfigError(
            "%s: no free pcie-root-port: all %d are taken; raise pcie_root_ports and restart the "
            "instance (root ports cannot be hot-plugged)" % (what, len(self.port_ids)))


class ScsiAllocator:
    """Each SCSI device on its own lowest free scsi-id, channel 0, lun 0."""

    def __init__(self, controller_type: str, used=()):
        self.controller_type = controller_type
        self.model = SCSI_CONTROLLERS[controller_type]
        self.used = set(used)

    def take(self, what: str) -> dict:
        for target in range(self.model.max_scsi_id + 1):
            if target not in self.used:
                self.used.add(target)
                return {"bus": SCSI_BUS, "channel": 0, "scsi-id": target, "lun": 0}
        raise ConfigError(
            "%s: no free SCSI target: scsi_controller_type %s has %d targets and all are taken; "
            "use scsi_controller_type virtio-scsi-pci (256 targets) or megasas (65)"
            % (what, self.controller_type, self.model.max_scsi_id + 1)
        )


class IdeAllocator:
    """IDE positions: pc's PIIX has two buses of two units; q35's AHCI six ports of one."""

    def __init__(self, machine_type: str, used=()):
        if machine_type == "q35":
            self.positions = [("ide.%d" % port, 0) for port in range(6)]
        else:
            self.positions = [("ide.0", 0), ("ide.0", 1), ("ide.1", 0), ("ide.1", 1)]
        self.used = set(used)

    def take(self, what: str) -> dict:
        for bus, unit in self.positions:
            if (bus, unit) not in self.used:
                self.used.add((bus, unit))
                return {"bus": bus, "unit": unit}
        raise ConfigError(
            "%s: no free IDE position: this machine type has %d and all are taken; use "
            "paravirtual or SCSI disks, or cdrom_disk_type scsi" % (what, len(self.positions))
        )
