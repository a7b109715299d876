import uuid

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import spec
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

from .helpers import disk, params


def test_defaults_follow_ganeti_hvparams():
    s = spec.instance_from(params())
    assert s.hvparams == spec.HvParams(disk_type="paravirtual", scsi_controller_type="lsi", kvm_pci_reservations=12,
                                       disk_cache="default", disk_aio="threads", disk_discard="ignore",
                                       disk_detect_zeroes="off", cdrom_disk_type="ide", boot_order="disk",
                                       nic_type="paravirtual", pcie_root_ports=4)
    assert (s.machine.machine_type, s.machine.accel, s.machine.memory, s.machine.vcpus) == ("pc", "auto", 256, 1)


def test_per_disk_options_override_the_instance_default():
    s = spec.instance_from(params(disk_cache="none", disk_aio="native",
                                  disks=[disk("a"), disk("b", cache="writeback", aio="threads", disk_type="scsi-hd")]))
    a, b = s.disks
    assert (a.cache, a.aio, a.disk_type) == ("none", "native", "paravirtual")
    assert (b.cache, b.aio, b.disk_type) == ("writeback", "threads", "scsi-hd")


# docs/design.md: "an instance without UUID gets uuid5(<collection namespace>, name)". The
# namespace (ids.INSTANCE_NAMESPACE) is written out here, not imported: changing it would
# change every derived instance UUID and device id, and must fail this test.
INSTANCE_NAMESPACE = uuid.UUID("6f1d3c52-7a0e-4c8b-9d5e-2b8f1a4c7e90")


def test_instance_without_uuid_gets_one_from_its_name():
    vm1 = spec.instance_from(params(name="vm1", uuid=None)).uuid
    assert vm1 == str(uuid.uuid5(INSTANCE_NAMESPACE, "vm1"))
    vm2 = spec.instance_from(params(name="vm2", uuid=None)).uuid
    assert vm2 == str(uuid.uuid5(INSTANCE_NAMESPACE, "vm2")) and vm2 != vm1


@pytest.mark.parametrize("over,message", [
    (dict(disks=[disk("a"), disk("a")]), "disk: name 'a' is declared twice"),
    (dict(disks=[disk("a", uuid="9e7c85f6-b6e5-4243-b27d-680b78c6d203"),
                 disk("b", uuid="9e7c85f6-b6e5-4243-b27d-680b78c6d203")]), "uuid .* is declared twice"),
    (dict(cdroms=[dict(name="a"), dict(name="b"), dict(name="c")]), "3 CD-ROMs declared; an instance has at most 2"),
    (dict(name="bad name"), "name: 'bad name' is not a valid instance name"),
    (dict(disks=[disk("a", cache="writeback", aio="native")]), r"disks\[a\]: aio 'native' requires cache.direct"),
    (dict(disks=[disk("a", cache="fast")]), r"disks\[a\]: unknown cache mode 'fast'"),
    (dict(disks=[disk("a", path=None)]), r"disks\[a\]: path is required"),
    (dict(disks=[disk("a", serial="x" * 21)]), r"disks\[a\]: serial 'x+' must be 1 to 20"),
    (dict(disks=[disk("a", format="vmdk")]), r"disks\[a\].format: 'vmdk' is not one of raw, qcow2"),
    (dict(disks=[disk("a", disk_type="ide", mode="ro")]), r"disks\[a\]: QEMU's IDE disks cannot be read-only"),
    (dict(disks=[disk("a", disk_type="scsi-block", format="qcow2")]), "scsi-block passes a host SCSI device"),
    (dict(kvm_pci_reservations=0), "kvm_pci_reservations: 0 must be between 1 and 31"),
    (dict(boot_order="cdrom"), "boot_order: cdrom needs a CD-ROM with an image"),
    (dict(boot_order="floppy"), "boot_order: floppy needs a floppy"),
    (dict(initrd_path="/boot/initrd"), "initrd_path and kernel_args need kernel_path"),
    (dict(memory=8), "memory: 8 MiB is too small"),
    (dict(uuid="xyz"), "uuid: 'xyz' is not a UUID"),
    (dict(scsi_controller_type="dc390"), "scsi_controller_type: 'dc390' is not one of"),
    (dict(boot_order="network"), "boot_order: network needs a NIC"),
    (dict(nics=[dict(name="n", mac="01:00:00:00:00:01")]), r"nics\[n\]: mac '01:00:00:00:00:01' is not a unicast"),
    (dict(nics=[dict(name="n", netdev="tap")]), r"nics\[n\]: netdev tap needs ifname"),
    (dict(nics=[dict(name="n", mac="52:54:00:00:00:01"), dict(name="m", mac="52:54:00:00:00:01")]),
     r"nics\[m\]: mac 52:54:00:00:00:01 is also used by nics\[n\]"),
])
def test_bad_declarations_are_refused_with_option_device_and_fix(over, message):
    with pytest.raises(ConfigError, match=message):
        spec.instance_from(params(**over))


def test_io_uring_depends_on_the_schema():
    decl = params(disks=[disk("a", aio="io_uring")])
    with pytest.raises(ConfigError, match="io_uring"):
        spec.instance_from(decl, supported_aio=("threads", "native"))
    assert spec.instance_from(decl, supported_aio=("threads", "native", "io_uring")).disks[0].aio == "io_uring"
