# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The only importer of qemu.qmp: a synchronous QMP session.

Commands go over the plain, blocking socket (QMP is one JSON object a line, docs/interop/
qmp-spec.rst in QEMU). The first listener hands the connection, already in command mode, to
qemu.qmp's asyncio QMPClient (``await_greeting`` and ``negotiate`` off), which carries every
command and event from then on. So a run that only sends commands (a no-op, a hot-add) never
imports asyncio and qemu.qmp, about a quarter of a module process (docs/design.md "Speed").

Every call has a timeout (QMPClient has none, and a busy -qmp socket never greets a second
client: monitor/qmp.c serves one at a time); listeners are registered before the command that
causes their event (docs/design.md "Reconcile"); QEMU's errors become QemuError with its class and text and a translation.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import stat
import struct
import sys
import time

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is missing, or blocked in sys.modules
        return False


# Checked without importing it (the import is the cost a run that sends only commands saves).
HAS_QMP = _importable("qemu.qmp")
QMP_IMPORT_ERROR = None if HAS_QMP else "qemu.qmp cannot be imported by %s" % sys.executable


def _asyncio_qmp():
    """asyncio and qemu.qmp, imported by the first listener: only event waits need them."""
    import asyncio  # pylint: disable=import-outside-toplevel
    import qemu.qmp  # pylint: disable=import-outside-toplevel
    return asyncio, qemu.qmp


# QEMU's texts (docs/faults.md) and what they mean for the user. Lock conflicts are told by
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
    ("unsupported machine type", "this QEMU does not emulate that machine: an instance keeps the versioned "
                                 "machine type of its first start (docs/design.md \"Start\"); start it with a QEMU "
                                 "that has it, or declare another machine_type"),
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


def peer_credentials(sock) -> tuple:
    """(pid, uid, gid) of the process at the other end of a connected unix socket (SO_PEERCRED)."""
    return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))


class QmpSession:
    """One QMP connection for one module run. Use as a context manager."""

    def __init__(self, socket_path: str, connect_timeout: float = 5.0, command_timeout: float = 30.0):
        self.socket_path = socket_path
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.sent = []  # every command sent, as {"execute", "arguments"}
        self._sock = None
        self._buffer = b""  # what was read past the last whole message
        self._greeting = None
        self._ids = 0
        self._loop = None  # set, with _client, once qemu.qmp carries the connection
        self._client = None

    # -- connection ---------------------------------------------------------------------------
    def __enter__(self):
        self._sock = self._open_socket()
        try:
            deadline = time.monotonic() + self.connect_timeout
            self._greeting = self._message(deadline)["QMP"]
            reply = self._exchange_plain("qmp_capabilities", None, deadline)
            if "return" not in reply:
                raise ValueError("qmp_capabilities was refused: %s" % reply.get("error"))
        except socket.timeout:
            self.close()
            raise QemuError(
                "QMP socket %s accepted the connection but QEMU did not greet within %s s: another "
                "client is probably connected (QEMU serves one QMP client at a time)"
                % (self.socket_path, self.connect_timeout)) from None
        except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
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
            _pid, uid, _gid = peer_credentials(sock)
            if uid != os.geteuid():
                raise QemuError("refusing QMP socket %s: it is served by uid %d, not uid %d"
                                % (self.socket_path, uid, os.geteuid()))
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
        if self._client is not None:
            _asyncio, lib = _asyncio_qmp()
            try:
                self._loop.run_until_complete(self._client.disconnect())
            except (lib.QMPError, OSError, EOFError):
                pass  # disconnect re-raises what ended the reader, e.g. EOF after quit
            finally:
                self._loop.close()
                self._loop = self._client = None
                _asyncio.set_event_loop(None)  # leave no closed loop current for the next user
        if self._sock is not None:
            self._sock.close()  # QMPClient closed it already when it carried the connection
            self._sock = None

    @property
    def version(self) -> str:
        v = self._greeting["version"]["qemu"]
        return "%d.%d.%d" % (v["major"], v["minor"], v["micro"])

    # -- the plain socket, until a listener is needed ---------------------------------------------
    def _message(self, deadline: float) -> dict:
        """The next message QEMU sends; socket.timeout at the deadline, EOFError when it hangs up."""
        while True:
            line, newline, rest = self._buffer.partition(b"\n")
            if newline:
                self._buffer = rest
                if line.strip():
                    return json.loads(line)
                continue
            self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = self._sock.recv(65536)
            if not chunk:
                raise EOFError("QEMU closed the connection")
            self._buffer += chunk

    def _exchange_plain(self, command: str, arguments, deadline: float) -> dict:
        """Send one command and return its reply. Events read meanwhile are dropped: no
        listener exists yet (the first one hands the connection to QMPClient)."""
        self._ids += 1
        message = {"execute": command, "id": "blocklayer-%d" % self._ids}
        if arguments is not None:
            message["arguments"] = arguments
        self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
        self._sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            reply = self._message(deadline)
            if reply.get("id") == message["id"]:
                return reply

    # -- commands -----------------------------------------------------------------------------
    def execute(self, command: str, arguments=None, timeout=None):
        self.sent.append({"execute": command, "arguments": arguments or {}})
        timeout = timeout or self.command_timeout
        if self._client is None:
            try:
                reply = self._exchange_plain(command, arguments, time.monotonic() + timeout)
            except socket.timeout:
                raise QemuError("QEMU did not answer %s within %s s" % (command, timeout), command=command) from None
            except (OSError, EOFError, ValueError) as exc:
                raise QemuError("QMP connection lost during %s: %s" % (command, exc), command=command) from None
            if "error" in reply:
                raise self._refused(command, reply["error"]["class"], reply["error"]["desc"])
            return reply["return"]
        asyncio, lib = _asyncio_qmp()
        try:
            return self._run(self._client.execute(command, arguments), timeout)
        except lib.ExecuteError as exc:
            raise self._refused(command, exc.error_class, str(exc)) from None
        except asyncio.TimeoutError:
            raise QemuError("QEMU did not answer %s within %s s" % (command, timeout), command=command) from None
        except lib.QMPError as exc:
            raise QemuError("QMP connection lost during %s: %s" % (command, exc), command=command) from None

    def execute_all(self, commands, timeout=None) -> list:
        """The answers to ``commands`` (``(name, arguments)`` pairs), sent together and read back
        in one round-trip: QEMU's monitor queues them and answers in order (monitor_qmp_read,
        QMP_REQ_QUEUE_LEN_MAX). For read-only queries; the first refusal is raised once every
        reply is read, so the session stays in step."""
        if self._client is not None:
            return [self.execute(name, arguments, timeout) for name, arguments in commands]
        deadline = time.monotonic() + (timeout or self.command_timeout)
        messages = []
        for name, arguments in commands:
            self.sent.append({"execute": name, "arguments": arguments or {}})
            self._ids += 1
            message = {"execute": name, "id": "blocklayer-%d" % self._ids}
            if arguments is not None:
                message["arguments"] = arguments
            messages.append(message)
        names = ", ".join(name for name, _arguments in commands)
        try:
            self._sock.settimeout(max(deadline - time.monotonic(), 0.001))
            self._sock.sendall(b"".join(json.dumps(m).encode() + b"\n" for m in messages))
            replies = {}
            while len(replies) < len(messages):
                reply = self._message(deadline)
                if "id" in reply:
                    replies[reply["id"]] = reply
        except socket.timeout:
            raise QemuError("QEMU did not answer %s within %s s" % (names, timeout or self.command_timeout),
                            command=names) from None
        except (OSError, EOFError, ValueError) as exc:
            raise QemuError("QMP connection lost during %s: %s" % (names, exc), command=names) from None
        answers = []
        for (name, _arguments), message in zip(commands, messages):
            reply = replies[message["id"]]
            if "error" in reply:
                raise self._refused(name, reply["error"]["class"], reply["error"]["desc"])
            answers.append(reply["return"])
        return answers

    def _refused(self, command: str, error_class: str, desc: str) -> QemuError:
        meaning = explain(desc, self.sent, os.path.dirname(self.socket_path))
        return QemuError("QEMU refused %s: %s" % (command, meaning), error_class=error_class, desc=desc,
                         command=command)

    # -- qemu.qmp, from the first listener on -------------------------------------------------
    def _hand_over(self) -> None:
        """Let qemu.qmp's QMPClient carry the connection (it is already in command mode)."""
        if self._client is not None:
            return
        asyncio, lib = _asyncio_qmp()
        # Lines already read are events nobody listened to; a partly read one is read to its end
        # so that QMPClient starts at a message boundary.
        deadline = time.monotonic() + self.command_timeout
        try:
            while self._buffer.rpartition(b"\n")[2].strip():
                self._message(deadline)
        except (OSError, EOFError, ValueError) as exc:
            raise QemuError("QMP connection lost: %s" % exc) from None
        self._buffer = b""
        self._loop = asyncio.new_event_loop()
        # Before Python 3.10 asyncio primitives bind to the current loop when they are made
        # (QMPClient makes some in __init__): make ours current first.
        asyncio.set_event_loop(self._loop)
        self._client = lib.QMPClient("blocklayer.qemu")
        self._client.await_greeting = self._client.negotiate = False
        self._sock.setblocking(False)
        try:
            self._run(self._client.connect(self._sock), self.connect_timeout)
        except (lib.QMPError, OSError, asyncio.TimeoutError) as exc:
            raise QemuError("QMP connection lost: %s" % exc) from None

    def _run(self, coro, timeout):
        asyncio, _lib = _asyncio_qmp()
        return self._loop.run_until_complete(asyncio.wait_for(coro, timeout))

    # -- events -------------------------------------------------------------------------------
    def listener(self, names, event_filter=None):
        """A context manager registering a listener; create it before the causing command."""
        self._hand_over()
        return self._client.listener(names, event_filter)

    def wait_event(self, listener, timeout: float):
        """The next event of ``listener``, or None when none arrives within ``timeout``.

        A QEMU that exits (or closes the connection) ends the wait at once with QemuError,
        rather than at the end of the timeout.
        """
        return self._loop.run_until_complete(self._next_event(listener, max(timeout, 0)))

    async def _next_event(self, listener, timeout: float):
        asyncio, _lib = _asyncio_qmp()
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
        _asyncio, lib = _asyncio_qmp()
        while self._client.runstate == lib.Runstate.RUNNING:
            await self._client.runstate_changed()
