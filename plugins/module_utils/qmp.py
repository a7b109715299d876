# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The only importer of qemu.qmp: a synchronous session over its asyncio QMPClient.

Every call has a timeout (QMPClient has none, and a busy -qmp socket never greets a second
client, reference §1.2); listeners are registered before the command that causes their
event (§1.4); QEMU's errors become QemuError with its class and text and a translation.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import struct
import traceback

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError

try:
    from qemu.qmp import ConnectError, ExecuteError, QMPClient, QMPError, Runstate
except ImportError:
    HAS_QMP = False
    QMP_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_QMP = True
    QMP_IMPORT_ERROR = None

# QEMU's texts (reference §2, §4) and what they mean for the user. Lock conflicts are told by
# locks.describe_conflict, which also names the process holding the image.
_LOCK_TEXTS = ('Failed to get "write" lock', 'Failed to get shared "write" lock',
               'Failed to get "consistent read" lock')
_TRANSLATIONS = (
    ("already in the process of unplug", "the guest has not yet released the device from an earlier "
                                         "unplug request"),
    ("does not support hotplugging", "this bus cannot hot-plug or hot-unplug devices"),
    ("is in use", "a device or another node still uses it"),
    ("with active references", "a node still uses it"),
    ("Unknown driver 'http", "this QEMU has no curl block driver; install qemu-block-extra"),
)


def explain(desc: str, sent=(), own_state_dir=None) -> str:
    """QEMU's text with a plain-words translation appended when it is a known one.

    ``sent``: the session's commands, the failed one last; over QMP a lock conflict does not
    name its image, so it is found there. ``own_state_dir`` tells the instance's own QEMU apart.
    """
    if any(text in desc for text in _LOCK_TEXTS):  # /proc is scanned only for a lock conflict
        from ansible_collections.blocklayer.qemu.plugins.module_utils import locks
        meaning = locks.describe_conflict(desc, own_state_dir, image=locks.image_of_commands(list(sent)))
        if meaning:
            return "%s (%s)" % (locks.without_hint(desc), meaning)
    for needle, meaning in _TRANSLATIONS:
        if needle in desc:
            return "%s (%s)" % (desc, meaning)
    return desc


class QmpSession:
    """One QMP connection for one module run. Use as a context manager."""

    def __init__(self, socket_path: str, connect_timeout: float = 5.0, command_timeout: float = 30.0):
        self.socket_path = socket_path
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.sent = []  # every command sent, as {"execute", "arguments"}
        self._loop = None
        self._client = None

    # -- connection ---------------------------------------------------------------------------
    def __enter__(self):
        sock = self._open_socket()
        self._loop = asyncio.new_event_loop()
        # Before Python 3.10 asyncio primitives bind to the current loop when they are made
        # (QMPClient makes some in __init__): make ours current first.
        asyncio.set_event_loop(self._loop)
        self._client = QMPClient("blocklayer.qemu")
        try:
            self._run(self._client.connect(sock), self.connect_timeout)
        except asyncio.TimeoutError:
            self.close()
            raise QemuError(
                "QMP socket %s accepted the connection but QEMU did not greet within %s s: another "
                "client is probably connected (QEMU serves one QMP client at a time)"
                % (self.socket_path, self.connect_timeout)) from None
        except (ConnectError, OSError) as exc:
            self.close()
            raise QemuError("cannot connect to QMP socket %s: %s" % (self.socket_path, exc)) from None
        return self

    def _open_socket(self):
        """Connect only to a socket of our own user, served by a process of our own user.

        In a state dir nobody else can write this always holds; checking it means a socket
        planted by someone else never receives the session (docs/faults.md).
        """
        try:
            info = os.lstat(self.socket_path)
        except OSError as exc:
            raise QemuError("cannot connect to QMP socket %s: %s" % (self.socket_path, exc.strerror)) from None
        if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.geteuid():
            raise QemuError("refusing QMP socket %s: it is %s owned by uid %d, not a socket of uid %d"
                            % (self.socket_path, "a socket" if stat.S_ISSOCK(info.st_mode) else "no socket",
                               info.st_uid, os.geteuid()))
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.connect_timeout)
            sock.connect(self.socket_path)
            _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                  struct.calcsize("3i")))
            if uid != os.geteuid():
                raise QemuError("refusing QMP socket %s: it is served by uid %d, not uid %d"
                                % (self.socket_path, uid, os.geteuid()))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise QemuError("cannot connect to QMP socket %s: %s" % (self.socket_path, exc.strerror or exc)) from None
        except QemuError:
            sock.close()
            raise
        return sock

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if self._loop is None:
            return
        try:
            self._loop.run_until_complete(self._client.disconnect())
        except (QMPError, OSError, EOFError):
            pass  # disconnect re-raises what ended the reader, e.g. EOF after quit
        finally:
            self._loop.close()
            self._loop = None
            asyncio.set_event_loop(None)  # leave no closed loop current for the next user

    @property
    def version(self) -> str:
        v = self._client.greeting.QMP.version["qemu"]
        return "%d.%d.%d" % (v["major"], v["minor"], v["micro"])

    # -- commands -----------------------------------------------------------------------------
    def _run(self, coro, timeout):
        return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))

    def execute(self, command: str, arguments=None, timeout=None):
        self.sent.append({"execute": command, "arguments": arguments or {}})
        try:
            return self._run(self._client.execute(command, arguments), timeout or self.command_timeout)
        except ExecuteError as exc:
            desc = str(exc)
            meaning = explain(desc, self.sent, os.path.dirname(self.socket_path))
            raise QemuError("QEMU refused %s: %s" % (command, meaning),
                            error_class=exc.error_class, desc=desc, command=command) from None
        except asyncio.TimeoutError:
            raise QemuError("QEMU did not answer %s within %s s"
                            % (command, timeout or self.command_timeout), command=command) from None
        except QMPError as exc:
            raise QemuError("QMP connection lost during %s: %s" % (command, exc), command=command) from None

    # -- events -------------------------------------------------------------------------------
    def listener(self, names, event_filter=None):
        """A context manager registering a listener; create it before the causing command."""
        return self._client.listener(names, event_filter)

    def wait_event(self, listener, timeout: float):
        """The next event of ``listener``, or None when none arrives within ``timeout``.

        A QEMU that exits (or closes the connection) ends the wait at once with QemuError,
        rather than at the end of the timeout.
        """
        return self._loop.run_until_complete(self._next_event(listener, max(timeout, 0)))

    async def _next_event(self, listener, timeout: float):
        if not listener.empty():
            return await listener.get()
        get = asyncio.ensure_future(listener.get())
        gone = asyncio.ensure_future(self._disconnected())
        try:
            done, _pending = await asyncio.wait({get, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (get, gone):
                task.cancel()
        if get in done:
            return get.result()
        if gone in done:
            raise QemuError("QEMU closed its QMP connection (it exited or was killed) while the collection "
                            "waited for an event")
        return None

    async def _disconnected(self) -> None:
        while self._client.runstate == Runstate.RUNNING:
            await self._client.runstate_changed()
