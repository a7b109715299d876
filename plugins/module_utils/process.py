# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Starting and ending a QEMU process (the shell around the pure core)."""

from __future__ import annotations

import os
import select
import signal
import subprocess

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError
from ansible_collections.blocklayer.qemu.plugins.module_utils.qmp import explain


def start(argv: list, env: dict, timeout: float) -> None:
    """Run QEMU with -daemonize: it returns once QEMU has initialised (or failed to)."""
    try:
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, timeout=timeout, check=False)
    except FileNotFoundError:
        raise QemuError("QEMU binary %s was not found; install qemu-system-x86 or set qemu_binary"
                        % argv[0]) from None
    except subprocess.TimeoutExpired:
        raise QemuError("QEMU did not finish starting within %s s" % timeout) from None
    if proc.returncode != 0:
        text = proc.stderr.decode("utf-8", "replace").strip()
        raise QemuError("QEMU refused to start: %s" % explain(text), desc=text)


def read_pid(pidfile: str):
    try:
        with open(pidfile, encoding="ascii") as handle:
            return int(handle.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def is_instance_process(pid, instance_uuid: str) -> bool:
    """True when ``pid`` is alive and is the QEMU started for this instance (not a reused pid)."""
    if not pid or not instance_uuid:
        return False
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            args = handle.read().split(b"\0")
    except OSError:
        return False
    return instance_uuid.encode() in args


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait for a process that is not our child to exit, without polling (pidfd)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(max(timeout, 0) * 1000))
    finally:
        os.close(fd)


def kill(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL when the process has not gone within ``timeout``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_exit(pid, timeout):
            return
