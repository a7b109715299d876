# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The two kinds of failure a module reports: bad input, and QEMU (or the host) saying no."""

from __future__ import annotations


class ConfigError(Exception):
    """The declaration cannot work. The message names the device, the option and the fix."""


class QemuError(Exception):
    """QEMU refused or failed an operation.

    ``error_class`` and ``desc`` are QEMU's own (empty when the failure was not a QMP reply,
    e.g. a process that exited); ``message`` is what the user reads.
    """

    def __init__(self, message: str, error_class: str = "", desc: str = "", command: str = ""):
        super().__init__(message)
        self.error_class = error_class
        self.desc = desc
        self.command = command


# QEMU's texts for "that is not there (any more)": qmp_blockdev_del, qmp_netdev_del,
# qmp_device_del, user_creatable_del, blockdev-remove-medium of an empty drive.
GONE = ("Failed to find node", "not found", "No medium", "Cannot find device")


def is_gone(exc: QemuError) -> bool:
    """Whether QEMU refused because what the command names is gone already (a clean-up is done)."""
    return any(text in exc.desc for text in GONE)
