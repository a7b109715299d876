# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ask a QEMU binary what it supports, by its QMP schema rather than its version number."""

from __future__ import annotations

import os
import tempfile

from ansible_collections.blocklayer.qemu.plugins.module_utils import process
from ansible_collections.blocklayer.qemu.plugins.module_utils.qmp import QmpSession


def aio_modes(schema: list) -> tuple:
    """The ``aio`` enum of the file driver, walked from blockdev-add (type names are masked)."""
    by_name = {entry["name"]: entry for entry in schema}
    options = by_name[by_name["blockdev-add"]["arg-type"]]
    for variant in options.get("variants", []):
        if variant["case"] == "file":
            for member in by_name[variant["type"]]["members"]:
                if member["name"] == "aio":
                    return tuple(by_name[member["type"]]["values"])
    return ()


def query_schema(binary: str, env: dict, firmware_dirs=(), timeout: float = 10.0) -> list:
    """Start the binary with no machine, read its QMP schema, and end it."""
    with tempfile.TemporaryDirectory(prefix="blocklayer-probe-") as tmp:
        sock, pidfile = os.path.join(tmp, "qmp.sock"), os.path.join(tmp, "qemu.pid")
        argv = [binary, "-machine", "none", "-nodefaults", "-display", "none", "-S"]
        for directory in firmware_dirs:
            argv += ["-L", directory]
        argv += ["-qmp", "unix:%s,server=on,wait=off" % sock, "-pidfile", pidfile, "-daemonize"]
        process.start(argv, env, timeout)
        pid = process.read_pid(pidfile)
        try:
            with QmpSession(sock, command_timeout=timeout) as qmp:
                return qmp.execute("query-qmp-schema")
        finally:
            if pid:
                process.kill(pid)
