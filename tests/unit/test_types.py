"""Every QMP argument carries its schema type (QEMU >= 9.2 no longer converts strings)."""

from ansible_collections.blocklayer.qemu.plugins.module_utils import blockdev, layout

from .helpers import disk, place

INT_PROPS = {"scsi-id", "lun", "channel", "unit", "bootindex", "chassis", "port"}
BOOL_PROPS = {"read-only", "auto-read-only", "multifunction"}
ON_OFF_PROPS = {"write-cache"}


def _check(props):
    for key, value in props.items():
        if key in INT_PROPS:
            assert isinstance(value, int) and not isinstance(value, bool), (key, value)
        elif key in BOOL_PROPS:
            assert isinstance(value, bool), (key, value)
        elif key in ON_OFF_PROPS:
            assert value in ("on", "off"), (key, value)
        elif key == "addr":
            assert isinstance(value, str) and value.startswith("0x"), (key, value)
            for part in value.split("."):
                int(part, 16)
        elif key == "cache":
            assert set(value) == {"direct", "no-flush"}
            assert all(isinstance(v, bool) for v in value.values())
        else:
            assert isinstance(value, str), (key, value)


def test_every_device_and_node_dict_is_schema_typed():
    lay = place(
        machine_type="q35",
        disks=[disk("a"), disk("b", disk_type="scsi-hd", cache="none", aio="native"),
               disk("c", disk_type="ide", format="qcow2"), disk("d", path="/dev/sdz", disk_type="scsi-block")],
        cdroms=[dict(name="e", path="/i.iso"), dict(name="f")],
        nics=[dict(name="n"), dict(name="m", nic_type="e1000", netdev="tap", ifname="tap0")],
        floppy=dict(path="/fd.img"),
        facts={"/img/c.raw": layout.PathFacts("file", b"QFI\xfb"), "/dev/sdz": layout.PathFacts("block")},
    )
    for dev in lay.all_devices():
        _check(dev.props)
        _check(dev.netdev or {})
        for node in blockdev.flat(dev.nodes):  # a protocol node inside its format node included
            _check(node)
