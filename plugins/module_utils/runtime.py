# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runtime file: the truth about a running instance (design-scsi-kvm).

Versioned JSON, written with write-temp + fsync + rename, mode 0600 in a 0700 directory,
under an exclusive per-instance lock. Older formats are upgraded on read.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from dataclasses import dataclass

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

FORMAT_VERSION = 1
STATE_ATTACHED = "attached"
STATE_UNPLUG_PENDING = "unplug-pending"
ORIGIN_BLOCKDEV = "blockdev"
# Started with -drive by an older tool: QEMU owns the nodes, device_del alone removes them.
ORIGIN_DRIVE = "drive"

_LEGACY_DRIVERS = {"disk": "virtio-blk-pci", "nic": "virtio-net-pci"}


@dataclass(frozen=True)
class RuntimePaths:
    state_dir: str

    def _in(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    @property
    def runtime_file(self) -> str:
        return self._in("runtime.json")

    @property
    def qmp_socket(self) -> str:
        return self._in("qmp.sock")

    @property
    def pidfile(self) -> str:
        return self._in("qemu.pid")

    @property
    def console_log(self) -> str:
        return self._in("console.log")

    @property
    def agent_socket(self) -> str:
        return self._in("agent.sock")

    @property
    def lock_file(self) -> str:
        return self._in("lock")

    def owned_files(self) -> tuple:
        """Everything the collection puts in a state dir (images are never among them)."""
        return (self.runtime_file, self.qmp_socket, self.pidfile, self.console_log,
                self.agent_socket, self.lock_file)


def upgrade(data: dict) -> dict:
    """Bring an older runtime file to the current format.

    Version 0 (design-scsi-kvm's predecessor) kept only a PCI slot per device; it becomes
    hvinfo ``{driver, id, bus: pci.0, addr}``. Those devices were started with -drive.
    """
    version = data.get("version", 0)
    if version > FORMAT_VERSION:
        raise ConfigError(
            "runtime file format %s is newer than this collection understands (%d); "
            "upgrade the collection" % (version, FORMAT_VERSION)
        )
    if version == 0:
        upgraded = []
        for dev in data.get("devices", []):
            dev = dict(dev)
            if "hvinfo" not in dev and "pci" in dev:
                dev["hvinfo"] = {
                    "driver": _LEGACY_DRIVERS.get(dev.get("kind"), "virtio-blk-pci"),
                    "id": dev["id"],
                    "bus": "pci.0",
                    "addr": "0x%x" % int(dev.pop("pci")),
                }
                dev.setdefault("origin", ORIGIN_DRIVE)
            dev.setdefault("origin", ORIGIN_BLOCKDEV)
            dev.setdefault("state", STATE_ATTACHED)
            dev.setdefault("nodes", [])
            upgraded.append(dev)
        data = dict(data, devices=upgraded, version=FORMAT_VERSION)
    return data


def load(path: str):
    """The runtime file's content, upgraded, or None when there is none."""
    try:
        with open(path, encoding="utf-8") as handle:
            return upgrade(json.load(handle))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ConfigError("runtime file %s is not valid JSON (%s); move it away to start afresh"
                          % (path, exc)) from None


def save(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    _fsync_dir(os.path.dirname(path))


def remove(path: str) -> None:
    _unlink(path)
    _fsync_dir(os.path.dirname(path))


def ensure_state_dir(state_dir: str) -> None:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    os.chmod(state_dir, 0o700)


class InstanceLock:
    """An exclusive lock on one instance, so two tasks never interleave on it."""

    def __init__(self, paths: RuntimePaths):
        self.path = paths.lock_file
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)
        self.fd = None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
