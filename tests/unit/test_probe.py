from ansible_collections.blocklayer.qemu.plugins.module_utils import probe

# The shape of query-qmp-schema: type names are masked numbers, reached from blockdev-add.
SCHEMA = [
    {"name": "blockdev-add", "meta-type": "command", "arg-type": "10"},
    {"name": "10", "meta-type": "object", "variants": [{"case": "qcow2", "type": "11"}, {"case": "file", "type": "12"}]},
    {"name": "12", "meta-type": "object", "members": [{"name": "filename", "type": "str"}, {"name": "aio", "type": "13"}]},
    {"name": "13", "meta-type": "enum", "values": ["threads", "native", "io_uring"]},
]


def test_aio_modes_walks_the_masked_schema_from_blockdev_add():
    assert probe.aio_modes(SCHEMA) == ("threads", "native", "io_uring")


def test_aio_modes_without_a_file_driver_is_empty():
    assert probe.aio_modes(SCHEMA[:1] + [{"name": "10", "variants": []}]) == ()


def test_proof_bios_puts_its_code_at_the_reset_vector():
    rom = probe.proof_bios()
    assert len(rom) == 65536
    # mov al,1; out 0xf4,al; hlt; jmp $ at physical 0xffff0
    assert rom[-16:-9] == bytes([0xB0, 0x01, 0xE6, 0xF4, 0xF4, 0xEB, 0xFE])
