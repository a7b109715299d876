# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the host says: what each declared path is, and whether KVM really works."""

from __future__ import annotations

import os
import stat
import struct

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.layout import QCOW2_MAGIC, Backing, PathFacts

# qcow2 header (QEMU docs/interop/qcow2.txt): backing_file_offset at byte 8 (u64),
# backing_file_size at 16 (u32), header_length at 100 (u32, version 3); header extensions
# follow the header, the backing file format one has type 0xe2792aca.
_BACKING_FORMAT_EXT = 0xE2792ACA
_QCOW2_SIZE_AT = 24
_MAX_CHAIN = 16


def inspect_path(path: str) -> PathFacts:
    """The path's kind, its virtual size and, for a regular file, its first four bytes (qcow2 magic).

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
    backing = ()
    size = None
    if kind == "file":
        try:
            with open(path, "rb") as handle:
                head = handle.read(_QCOW2_SIZE_AT + 8)
                magic = head[:4]
                if magic == QCOW2_MAGIC:
                    size = _qcow2_size(head)
                    backing = tuple(_backing_chain(path, handle))
                else:
                    size = _sectors(st.st_size)
        except OSError:
            return PathFacts("unreadable")
    elif kind == "block":
        size = _device_size(path)
    return PathFacts(kind, magic, backing, size)


def _device_size(path: str):
    """A block device's size (lseek to its end); None when it cannot be opened (a CD drive
    without a disc): QEMU's own open decides then. O_NONBLOCK: opening a CD drive must not
    close its tray."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    except OSError:
        return None
    finally:
        os.close(fd)


def _qcow2_size(head: bytes):
    """The qcow2 header's ``size`` (the virtual disk size): u64 big-endian at byte 24."""
    if len(head) < _QCOW2_SIZE_AT + 8:
        return None
    return struct.unpack(">Q", head[_QCOW2_SIZE_AT:_QCOW2_SIZE_AT + 8])[0]


def _sectors(length: int) -> int:
    """A raw image's size as QEMU reports it: whole 512-byte sectors, rounded up
    (block.c bdrv_refresh_total_sectors)."""
    return -(-length // 512) * 512


def _qcow2_backing(handle):
    """(backing file name, its format from the header extension or None), or None."""
    handle.seek(0)
    header = handle.read(104)
    if len(header) < 72:
        return None
    version, = struct.unpack(">I", header[4:8])
    offset, = struct.unpack(">Q", header[8:16])
    size, = struct.unpack(">I", header[16:20])
    if not offset or not size:
        return None
    ext_at = struct.unpack(">I", header[100:104])[0] if version >= 3 and len(header) >= 104 else 72
    fmt = None
    handle.seek(ext_at)
    for _extension in range(64):
        head = handle.read(8)
        if len(head) < 8:
            break
        ext_type, length = struct.unpack(">II", head)
        if ext_type == 0:
            break
        data = handle.read((length + 7) & ~7)
        if ext_type == _BACKING_FORMAT_EXT:
            fmt = data[:length].decode("utf-8", "replace")
    handle.seek(offset)
    return handle.read(size).decode("utf-8", "replace"), fmt


def _backing_chain(path: str, handle) -> list:
    """Each backing image below a qcow2, with the format its overlay declares and what it is."""
    chain = []
    found = _qcow2_backing(handle)
    while found and len(chain) < _MAX_CHAIN:
        name, fmt = found
        backing_path = name if os.path.isabs(name) else os.path.join(os.path.dirname(path), name)
        try:
            with open(backing_path, "rb") as below:
                magic = below.read(4)
                kind = "block" if stat.S_ISBLK(os.fstat(below.fileno()).st_mode) else "file"
                chain.append(Backing(backing_path, fmt, magic, kind))
                found = _qcow2_backing(below) if magic == QCOW2_MAGIC else None
        except OSError:
            chain.append(Backing(backing_path, fmt, None))
            break
    return chain


def check_boot_file(option: str, path) -> None:
    """kernel_path / initrd_path must be readable files before QEMU is asked (or anything stopped)."""
    if path is None:
        return
    facts = inspect_path(path)
    if facts.kind != "file":
        problem = {"missing": "does not exist", "unreadable": "cannot be read"}.get(
            facts.kind, "is a %s, not a regular file" % facts.kind)
        raise ConfigError("%s: %s %s; give the path of a readable file" % (option, path, problem))


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
