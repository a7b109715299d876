import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import cache
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

# (mode, cache.direct, cache.no-flush, write-cache): qemu-system-x86_64(1) -drive cache= table.
TABLE = [
    ("writeback", False, False, "on"),
    ("none", True, False, "on"),
    ("writethrough", False, False, "off"),
    ("directsync", True, False, "off"),
    ("unsafe", False, True, "on"),
    ("default", False, False, "on"),
]


@pytest.mark.parametrize("mode,direct,no_flush,write_cache", TABLE)
def test_cache_mode_translation(mode, direct, no_flush, write_cache):
    settings = cache.cache_settings(mode)
    assert settings.node_props() == {"direct": direct, "no-flush": no_flush}
    assert settings.write_cache() == write_cache


def test_unknown_cache_mode_is_refused():
    with pytest.raises(ConfigError, match="unknown cache mode 'fast'"):
        cache.io_settings("disks[a]", "fast", "threads", "ignore", "off")


@pytest.mark.parametrize("mode", ["writeback", "writethrough", "unsafe", "default"])
def test_native_aio_without_direct_is_refused_naming_the_fix(mode):
    with pytest.raises(ConfigError, match=r"disks\[a\]: aio 'native' requires cache.direct.*'none' or 'directsync'"):
        cache.io_settings("disks[a]", mode, "native", "ignore", "off")


@pytest.mark.parametrize("mode", ["none", "directsync"])
def test_native_aio_with_direct_is_accepted(mode):
    assert cache.io_settings("d", mode, "native", "ignore", "off").aio == "native"


def test_io_uring_needs_the_binary_schema_to_list_it():
    with pytest.raises(ConfigError, match="io_uring.*not supported by this QEMU binary"):
        cache.io_settings("d", "none", "io_uring", "ignore", "off", supported_aio=("threads", "native"))
    assert cache.io_settings("d", "none", "io_uring", "ignore", "off",
                             supported_aio=("threads", "native", "io_uring")).aio == "io_uring"


def test_detect_zeroes_unmap_requires_discard_unmap():
    with pytest.raises(ConfigError, match="detect_zeroes 'unmap' requires discard 'unmap'"):
        cache.io_settings("d", "none", "threads", "ignore", "unmap")
    assert cache.io_settings("d", "none", "threads", "unmap", "unmap").detect_zeroes == "unmap"


@pytest.mark.parametrize("field,args", [
    ("aio", ("none", "posix", "ignore", "off")),
    ("discard", ("none", "threads", "trim", "off")),
    ("detect_zeroes", ("none", "threads", "ignore", "maybe")),
])
def test_unknown_values_are_refused(field, args):
    with pytest.raises(ConfigError, match=field.replace("_", "[_ ]") if field != "aio" else "aio"):
        cache.io_settings("d", *args)
