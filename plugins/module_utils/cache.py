# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cache mode, aio, discard and detect-zeroes translation (design-qemu-blockdev "Disk Cache").

-blockdev has no cache.writeback: the writeback bit is the guest device's ``write-cache``
property, and ``cache.direct``/``cache.no-flush`` must be set on every node of the chain
because nodes do not inherit them (QEMU docs/system/qemu-block-drivers.rst, "cache" of
blockdev-add in qapi/block-core.json BlockdevCacheOptions).
"""

from __future__ import annotations

from dataclasses import dataclass

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Value


@dataclass(init=False, repr=False, eq=False)
class CacheSettings(Value):
    writeback: bool
    direct: bool
    no_flush: bool

    def node_props(self) -> dict:
        """The ``cache`` member every node of the chain carries."""
        return {"direct": self.direct, "no-flush": self.no_flush}

    def write_cache(self) -> str:
        """The device's OnOffAuto ``write-cache`` value (a string, as QMP types it)."""
        return "on" if self.writeback else "off"


# The man page's table (qemu-system-x86_64(1), -drive cache=).
_CACHE_MODES = {
    "writeback": CacheSettings(writeback=True, direct=False, no_flush=False),
    "none": CacheSettings(writeback=True, direct=True, no_flush=False),
    "writethrough": CacheSettings(writeback=False, direct=False, no_flush=False),
    "directsync": CacheSettings(writeback=False, direct=True, no_flush=False),
    "unsafe": CacheSettings(writeback=True, direct=False, no_flush=True),
}
# Ganeti's "default" is what QEMU assumes when nothing is given: writeback.
CACHE_MODES = tuple(_CACHE_MODES) + ("default",)
AIO_MODES = ("threads", "native", "io_uring")
DISCARD_MODES = ("ignore", "unmap")
DETECT_ZEROES_MODES = ("off", "on", "unmap")


def cache_settings(mode: str) -> CacheSettings:
    if mode == "default":
        mode = "writeback"
    try:
        return _CACHE_MODES[mode]
    except KeyError:
        raise ConfigError(
            "unknown cache mode %r; choose one of %s" % (mode, ", ".join(CACHE_MODES))
        ) from None


@dataclass(init=False, repr=False, eq=False)
class IoSettings(Value):
    """Everything about how one image is accessed, already checked."""

    cache: CacheSettings
    aio: str
    discard: str
    detect_zeroes: str


def io_settings(where: str, cache: str, aio: str, discard: str, detect_zeroes: str,
                supported_aio: tuple = AIO_MODES) -> IoSettings:
    """Check one disk's I/O options against each other before QEMU is asked.

    ``where`` names the device in messages; ``supported_aio`` is the aio enum of the QEMU
    binary's QMP schema (io_uring is conditional on CONFIG_LINUX_IO_URING in qapi/block-core.json BlockdevAioOptions).
    """
    try:
        settings = cache_settings(cache)
    except ConfigError as exc:
        raise ConfigError("%s: %s" % (where, exc)) from None
    if aio not in AIO_MODES:
        raise ConfigError("%s: unknown aio mode %r; choose one of %s" % (where, aio, ", ".join(AIO_MODES)))
    if aio == "native" and not settings.direct:
        raise ConfigError(
            "%s: aio 'native' requires cache.direct, which cache mode %r does not set; use cache "
            "'none' or 'directsync', or aio 'threads'" % (where, cache)
        )
    if aio not in supported_aio:
        raise ConfigError(
            "%s: aio %r is not supported by this QEMU binary (its QMP schema lists %s); "
            "use aio 'threads' or 'native'" % (where, aio, ", ".join(supported_aio))
        )
    if discard not in DISCARD_MODES:
        raise ConfigError("%s: unknown discard mode %r; choose ignore or unmap" % (where, discard))
    if detect_zeroes not in DETECT_ZEROES_MODES:
        raise ConfigError(
            "%s: unknown detect_zeroes mode %r; choose off, on or unmap" % (where, detect_zeroes)
        )
    if detect_zeroes == "unmap" and discard != "unmap":
        raise ConfigError(
            "%s: detect_zeroes 'unmap' requires discard 'unmap' (QEMU refuses it otherwise); "
            "set discard: unmap or use detect_zeroes 'on'" % where
        )
    return IoSettings(settings, aio, discard, detect_zeroes)
