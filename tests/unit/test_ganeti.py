"""Ganeti KVM runtime files of each shape, read into format-2 records.

The files in tests/data follow Ganeti's serialisation (``serializer.Dump`` of the list that
``_SaveKVMRuntime`` / ``KVMRuntime.serialize`` build): ganeti-2.9.json the three items of
lib/hypervisor/hv_kvm.py up to 2.9 (disks are -drive options of kvm_cmd, a pre-2.8 NIC has no
uuid); ganeti-2.15.json the four items of 2.10-2.15 with ``"pci"`` slots (the shape of Ganeti's
test data at commit fda3d9877); ganeti-2.16.json the four items with ``hvinfo`` per device
(``_GenerateDeviceHVInfo`` at v2.16.0, test/data/kvm_runtime.json). Expected values are
constants written here from those Ganeti sources, not computed by the code under test.
"""

import json
import os

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import ganeti
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

from .helpers import DATA


def load(name):
    with open(os.path.join(DATA, name), "rb") as handle:
        return ganeti.loads(handle.read(), name)


def test_a_2_9_file_has_three_items_and_no_device_ids():
    rt = load("ganeti-2.9.json")
    assert rt.shape.startswith("[kvm_cmd, nics, hvparams] ")
    assert rt.disks == [] and rt.records == []  # disks padded; nothing had a QEMU id before 2.10
    assert rt.anonymous == ["nic 0 (MAC aa:00:00:35:d2:4f)"]
    assert len(rt.nics[0]["uuid"]) == 36  # a pre-2.8 NIC gets a uuid
    cmd = rt.kvm_cmd
    assert "-localtime" not in cmd and cmd[cmd.index("-rtc") + 1] == "base=localtime"
    assert "-balloon" not in cmd and "virtio-balloon" in cmd
    assert "-chroot" not in cmd and "/var/lib/ganeti/kvm-hypervisor/chroot-quarantine" not in cmd
    assert cmd[cmd.index("-object") + 1] == "tls-creds-x509,id=vnctls0,endpoint=server,dir=/var/lib/ganeti,verify-peer=yes"
    assert cmd[cmd.index("-vnc") + 1] == "0.0.0.0:5101,tls-creds=vnctls0"


def test_a_2_15_file_turns_pci_slots_into_hvinfo_with_hot_ids():
    rt = load("ganeti-2.15.json")
    assert "pci slots" in rt.shape
    nic, disk = sorted(rt.records, key=lambda r: r["kind"], reverse=True)
    assert disk["hvinfo"] == {"driver": "virtio-blk-pci", "id": "hotdisk-a6e04b3c-pci-5", "addr": "0x5", "bus": "pci.0"}
    assert nic["hvinfo"] == {"driver": "virtio-net-pci", "id": "hotnic-5b1b5d32-pci-6", "addr": "0x6", "bus": "pci.0",
                             "netdev": "hotnic-5b1b5d32-pci-6"}
    assert "pci" not in rt.disks[0][0] and "pci" not in rt.nics[0]
    assert disk["origin"] == "drive" and disk["nodes"] == [] and disk["state"] == "attached"
    assert disk["spec"]["path"] == "/var/run/ganeti/instance-disks/web1.example.com:0"
    assert disk["spec"]["format"] == "raw" and disk["spec"]["mode"] == "rw"
    # The discard fix runs whether or not the command line has -vnc (not only in its branch).
    assert rt.hvparams["disk_discard"] == "ignore"


def test_a_2_15_file_without_vnc_still_gets_the_discard_fix():
    with open(os.path.join(DATA, "ganeti-2.15.json"), "rb") as handle:
        data = json.loads(handle.read())
    i = data[0].index("-vnc")
    del data[0][i:i + 2]
    data[0] += ["-chroot", "/srv/chroot"]
    rt = ganeti.loads(json.dumps(data).encode(), "novnc.json")
    assert rt.hvparams["disk_discard"] == "ignore" and "-chroot" not in rt.kvm_cmd


def test_a_2_16_file_keeps_its_hvinfo_and_names():
    rt = load("ganeti-2.16.json")
    assert "hvinfo" in rt.shape
    by_id = {r["id"]: r for r in rt.records}
    root = by_id["disk-7c079136-2573-4112"]
    assert root["name"] == "root" and root["uuid"] == "7c079136-2573-4112-9a6e-3f0f2b7b9d11"
    assert root["hvinfo"] == {"driver": "virtio-blk-pci", "id": "disk-7c079136-2573-4112", "bus": "pci.0", "addr": "0x9"}
    assert root["props"]["drive"] == "disk-7c079136-2573-4112"
    scsi = by_id["disk-c3bb2f4e-7a51-4e7d"]
    assert scsi["name"] == "disk-c3bb2f4e-7a51-4e7d"  # unnamed in Ganeti: named after its id
    assert scsi["hvinfo"]["bus"] == "scsi.0" and scsi["hvinfo"]["scsi-id"] == 1
    assert scsi["spec"]["path"] == "rbd:rbd/c3bb2f4e-7a51-4e7d-b1f9-2d6a0e5c8a44.rbd.disk1"  # the uri wins
    assert scsi["spec"]["mode"] == "ro"
    nic = by_id["nic-61771629-eb60-512b"]
    assert nic["kind"] == "nic" and nic["netdev"] == {"id": "nic-61771629-eb60-512b"}
    assert nic["spec"]["mac"] == "aa:00:00:35:d2:4f"
    for record in rt.records:
        assert {"kind", "name", "uuid", "id", "hvinfo", "props", "nodes", "origin", "state", "spec"} <= set(record)


@pytest.mark.parametrize("text, problem", [
    (b'{"version": 2}', "holds a JSON dict"),
    (b'[["kvm"], [], {}, [], []]', "holds a list of 5 items"),
    (b'["kvm", [], {}]', "no command line"),
    (b'[["kvm"], [], {}, [[{"uuid": "x"}, "/link"]]]', "no disk list"),
    (b'not json', "is not JSON"),
])
def test_an_unknown_shape_is_refused_naming_the_file_and_the_shapes(text, problem):
    with pytest.raises(ConfigError) as err:
        ganeti.loads(text, "/var/run/ganeti/kvm-hypervisor/conf/web1")
    msg = str(err.value)
    assert "adopt.ganeti_runtime: /var/run/ganeti/kvm-hypervisor/conf/web1" in msg and problem in msg
    assert "up to 2.9" in msg and "2.10 to 2.15" in msg and "2.16 on" in msg
