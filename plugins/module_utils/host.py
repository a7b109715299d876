# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the host says: what each declared path is, and whether KVM really works."""

from __future__ import annotations

import os
import stat

from ansible_collections.blocklayer.qemu.plugins.module_utils.layout import PathFacts


def inspect_path(path: str) -> PathFacts:
    """The path's kind and, for a regular file, its first four bytes (qcow2 magic).

    The bytes are read only to refuse a qcow2 image declared raw; the format is never probed.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return PathFacts("missing")
    except OSError:
        return PathFacts("unreadable")
    if stat.S_ISDIR(st.st_mode):
        return PathFacts("directory")
    if stat.S_ISBLK(st.st_mode):
        kind = "block"
    elif stat.S_ISCHR(st.st_mode):
        kind = "char"
    elif stat.S_ISREG(st.st_mode):
        kind = "file"
    else:
        return PathFacts("other")
    if not os.access(path, os.R_OK):
        return PathFacts("unreadable")
    magic = b""
    if kind == "file":
        try:
            with open(path, "rb") as handle:
                magic = handle.read(4)
        except OSError:
            return PathFacts("unreadable")
    return PathFacts(kind, magic)


def kvm_usable() -> bool:
    """KVM only when /dev/kvm is writable and the CPU has vmx or svm.

    A nested software hypervisor can offer /dev/kvm without either flag and then hang or die
    with "emulation failure" (tiny-guest facts), so the flag check is not optional.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return "vmx" in flags or "svm" in flags
    except OSError:
        return False
    return False


def qemu_dirs(binary: str, firmware_dirs=None, module_dir=None):
    """Firmware (-L) directories and QEMU_MODULE_DIR for a QEMU binary.

    A QEMU unpacked into a private prefix (``<P>/usr/bin/qemu-system-x86_64``) must be told
    where its own firmware and modules are: without -L it silently loads the system's firmware,
    and it refuses the system's modules ("Only modules from the same build can be loaded").
    Explicit values win; a binary under the system prefix needs neither.
    """
    prefix = os.path.dirname(os.path.dirname(os.path.abspath(binary)))
    system = prefix in ("/usr", "/usr/local", "/")
    if firmware_dirs is None:
        firmware_dirs = [] if system else [
            d for d in (os.path.join(prefix, "share", "qemu"), os.path.join(prefix, "share", "seabios"))
            if os.path.isdir(d)]
    if module_dir is None and not system:
        candidate = os.path.join(prefix, "lib", "x86_64-linux-gnu", "qemu")
        module_dir = candidate if os.path.isdir(candidate) else None
    return list(firmware_dirs), module_dir
