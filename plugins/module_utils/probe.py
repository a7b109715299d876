# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Ask a QEMU binary what it supports, by its QMP schema rather than its version number."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from typing import Optional

from ansible_collections.blocklayer.qemu.plugins.module_utils import process
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError
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


# Real-mode code at the reset vector (the last 16 bytes of the BIOS ROM): write 1 to the
# isa-debug-exit port, which ends QEMU with status (1 << 1) | 1 = 3, then halt.
_RESET_VECTOR = bytes([0xB0, 0x01, 0xE6, 0xF4, 0xF4, 0xEB, 0xFE])
PROOF_EXIT_STATUS = 3


def proof_bios() -> bytes:
    """A 64 KiB BIOS image whose only job is to prove that guest code runs."""
    rom = bytearray(b"\xf4" * 65536)  # hlt everywhere
    rom[-16:-16 + len(_RESET_VECTOR)] = _RESET_VECTOR
    return bytes(rom)


def accel_works(binary: str, accel: str, env=None, timeout: float = 10.0) -> bool:
    """Run a few guest instructions under ``accel`` and see them take effect.

    /dev/kvm can exist on a host whose nested hypervisor cannot run a guest (it hangs or dies
    with "emulation failure"), so only executed guest code proves that KVM works.
    """
    with tempfile.TemporaryDirectory(prefix="blocklayer-accel-") as tmp:
        bios = os.path.join(tmp, "proof.bin")
        with open(bios, "wb") as handle:
            handle.write(proof_bios())
        argv = [binary, "-machine", "pc", "-accel", accel, "-nodefaults", "-no-user-config",
                "-display", "none", "-bios", bios, "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
        try:
            proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return proc.returncode == PROOF_EXIT_STATUS


def versioned_machine(machines: list, machine_type: str) -> Optional[str]:
    """The versioned name (``pc-i440fx-7.2``) an alias (``pc``) stands for in a ``query-machines``
    answer; a name that is already versioned is itself; None when the QEMU has no such type.

    Migration needs it: the target must emulate the machine of the source's QEMU version,
    which ``-machine pc`` of a newer QEMU does not (QEMU refuses "Machine type received is ...").
    """
    for entry in machines:
        if entry.get("alias") == machine_type:
            return entry["name"]
    return machine_type if any(e.get("name") == machine_type for e in machines) else None


_VERSION = re.compile(r"QEMU emulator version (\d+\.\d+(?:\.\d+)?)")


def binary_version(binary: str, env=None, timeout: float = 10.0) -> str:
    """The version a QEMU binary reports (``7.2.22``), without starting a machine."""
    try:
        proc = subprocess.run([binary, "--version"], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QemuError("%s --version failed: %s" % (binary, exc)) from None
    found = _VERSION.search(proc.stdout.decode("utf-8", "replace"))
    if proc.returncode != 0 or not found:
        raise QemuError("%s --version did not report a QEMU version (exit status %d): %s"
                        % (binary, proc.returncode, proc.stderr.decode("utf-8", "replace").strip()))
    return found.group(1)
