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
import traceback

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError

try:
    from qemu.qmp import ConnectError, ExecuteError, QMPClient, QMPError
except ImportError:
    HAS_QMP = False
    QMP_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_QMP = True
    QMP_IMPORT_ERROR = None

# QEMU's texts (reference §2, §4) and what they mean for the user.
_TRANSLATIONS = (
    ('Failed to get "write" lock', "the image is in use by another process (another QEMU, or "
                                   "qemu-img, holds its lock); stop that process or use another image"),
    ('Failed to get shared "write" lock', "the image is in use by another process that writes to it; "
                                          "stop that process or use another image"),
    ("already in the process of unplug", "the guest has not yet released the device from an earlier "
                                         "unplug request"),
    ("does not support hotplugging", "this bus cannot hot-plug or hot-unplug devices"),
    ("is in use", "a device or another node still uses it"),
    ("Unknown driver 'http", "this QEMU has no curl block driver; install qemu-block-extra"),
)


def explain(desc: str) -> str:
    """QEMU's text with a plain-words translation appended when it is a known one."""
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
        self._loop = asyncio.new_event_loop()
        self._client = QMPClient("blocklayer.qemu")
        try:
            self._run(self._client.connect(self.socket_path), self.connect_timeout)
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
            raise QemuError("QEMU refused %s: %s" % (command, explain(desc)),
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
        """The next event of ``listener``, or None when none arrives within ``timeout``."""
        try:
            return self._run(listener.get(), timeout)
        except asyncio.TimeoutError:
            return None
