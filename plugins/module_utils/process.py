# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Starting and ending a QEMU process (the shell around the pure core)."""

from __future__ import annotations

import errno
import os
import select
import signal
import subprocess
from typing import Optional

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError
from ansible_collections.blocklayer.qemu.plugins.module_utils.qmp import explain, peer_credentials


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
        text = without_warnings(proc.stderr.decode("utf-8", "replace"))
        if not text:
            raise QemuError(_silent_end(proc.returncode))
        raise QemuError("QEMU refused to start: %s" % explain(text), desc=text)


def without_warnings(text: str) -> str:
    """QEMU's messages without its warnings (warn_report(): "...: warning: ..."), which it prints
    on a start that works too (QEMU 11.1: "'-mon' is deprecated"): they are not why it ended."""
    return "\n".join(line for line in text.splitlines() if ": warning: " not in line
                     and not line.startswith("warning: ")).strip()


def _silent_end(returncode: int) -> str:
    """What a start that failed without a word means. With -daemonize the process we run only
    waits for the QEMU it forked to report that it is ready (QEMU's os_daemonize()): status 1
    and no message mean that QEMU ended before, killed by a signal or gone without a word."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "signal %d" % -returncode
        return ("QEMU was killed by %s while it started, before it was ready; nothing runs. Find what sent it "
                "(the kernel log names the OOM killer), then run again" % name)
    return ("QEMU ended while it started, before it was ready, without a message (its launcher exited with "
            "status %d): the QEMU process was killed or died (the kernel log names the OOM killer, a crash, or "
            "a signal sent to it); nothing runs. Fix that, then run again" % returncode)


def parse_pid(text) -> Optional[int]:
    """A pidfile's content as a pid, or None when it is empty or garbage."""
    try:
        pid = int((text or b"").decode("ascii").strip() or 0)
    except (UnicodeDecodeError, ValueError):
        return None
    return pid if pid > 0 else None


def read_pid(pidfile: str):
    try:
        with open(pidfile, "rb") as handle:
            return parse_pid(handle.read(64))
    except OSError:
        return None


def _cmdline(pid: int):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return handle.read().split(b"\0")
    except OSError:
        return None


def _serves(args, qmp_socket: str) -> bool:
    """Does this command line open ``qmp_socket`` as its QMP chardev? (cmdline._opt escaping)"""
    needle = ("path=%s," % qmp_socket.replace(",", ",,")).encode()
    return any(needle in arg for arg in args)


def is_instance_process(pid, qmp_socket: str) -> bool:
    """True when ``pid`` is alive and is a QEMU serving this state dir's QMP socket (not a reused pid)."""
    if not pid:
        return False
    args = _cmdline(pid)
    return bool(args) and _serves(args, qmp_socket)


def find_qemus(qmp_socket: str) -> list:
    """Every live process whose command line serves this QMP socket, whatever its pidfile says.

    The socket path is unique to one state dir, so this finds the instance's QEMU even when
    its pidfile is lost or garbage, or its runtime file names another UUID.
    """
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            args = _cmdline(int(entry))
            if args and _serves(args, qmp_socket) and _state(int(entry)) not in ("Z", "X"):
                found.append(int(entry))
    return sorted(found)


def _stat(pid: int) -> list:
    """``state, ppid, pgrp, session, ...`` of /proc/<pid>/stat (proc(5)), or [] when it is gone."""
    try:
        with open("/proc/%d/stat" % pid, encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _state(pid: int) -> str:
    return (_stat(pid) or ["X"])[0]


def kill_serving(qmp_socket: str, rounds: int = 3) -> list:
    """End every process serving ``qmp_socket``, until none is left: a -daemonize launcher ended
    half-way may leave the QEMU it forked, with no pidfile yet. Returns what is left."""
    for _round in range(rounds):
        pids = find_qemus(qmp_socket)
        if not pids:
            return []
        for pid in pids:
            kill(pid)
    return find_qemus(qmp_socket)


def launched(pids: list, stats: dict):
    """``(qemu, launchers)`` when ``pids`` are one QEMU start seen half-way, else None (pure).

    QEMU's os_daemonize(): the launcher forks a child that calls setsid() and forks the QEMU,
    then exits; the launcher waits until the QEMU reports it is ready. All three serve the same
    QMP socket (the same command line), so a start seen in between shows the launcher and the
    QEMU, the child as the QEMU's parent or session leader. ``stats``: pid -> (ppid, session),
    for ``pids`` and their parents and session leaders.
    """
    for qemu in pids:
        ppid, session = stats.get(qemu, (0, 0))
        above = {ppid, session, stats.get(ppid, (0, 0))[0], stats.get(session, (0, 0))[0]}
        others = [p for p in pids if p != qemu]
        if others and all(p in above for p in others):
            return qemu, others
    return None


def launched_now(pids: list):
    """``launched`` with what /proc says of ``pids`` now."""
    stats = {}
    for pid in pids:
        fields = _stat(pid)
        if len(fields) > 3:
            stats[pid] = (int(fields[1]), int(fields[3]))
            for up in stats[pid]:
                more = _stat(up)
                if up and up not in stats and len(more) > 3:
                    stats[up] = (int(more[1]), int(more[3]))
    return launched(pids, stats)


# pidfd_open(2) is Linux 5.3; os.pidfd_open only exists from Python 3.9, so older node Pythons
# call the system call itself (its number is the same on every architecture since 5.3).
_SYS_PIDFD_OPEN = 434


def _pidfd_open(pid: int) -> int:
    if hasattr(os, "pidfd_open"):
        return os.pidfd_open(pid)
    import ctypes  # only on Python 3.8
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(_SYS_PIDFD_OPEN, pid, 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise ProcessLookupError(err, os.strerror(err)) if err == errno.ESRCH else OSError(err, os.strerror(err))
    return fd


def wait_exit(pid: int, timeout: float) -> bool:
    """Wait for a process that is not our child to exit, without polling (pidfd)."""
    try:
        fd = _pidfd_open(pid)
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


# -- adopted QEMUs (docs/migration.md "Adoption") ---------------------------------------------

def peer_pid(socket_path: str) -> int:
    """The pid of the process serving a unix socket (SO_PEERCRED of a connection to it)."""
    import socket
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5.0)
        sock.connect(socket_path)
        pid, _uid, _gid = peer_credentials(sock)
    except OSError as exc:
        raise QemuError("cannot connect to QMP socket %s: %s" % (socket_path, exc.strerror or exc)) from None
    finally:
        sock.close()
    return pid


def cmdline_of(pid: int) -> list:
    """A process's argv as text (empty when it is gone)."""
    args = _cmdline(pid) or []
    if args and args[-1] == b"":
        args = args[:-1]  # /proc ends every argument with a NUL
    return [a.decode("utf-8", "surrogateescape") for a in args]


def exe_of(pid: int) -> Optional[str]:
    try:
        return os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return None


def is_adopted_process(pid, argv: list) -> bool:
    """True when ``pid`` is alive and still runs the command line recorded at adoption (a
    reused pid runs another one)."""
    return bool(pid) and bool(argv) and _state(pid) not in ("Z", "X") and cmdline_of(pid) == list(argv)
