#!/usr/bin/env python
"""Host side of the test guest's agent (tools/guest/init.sh), stdlib only.

The guest runs a line-based agent on its second serial port (ttyS1). QEMU exposes
that port as a UNIX socket server:

    -chardev socket,id=agent,path=STATEDIR/agent.sock,server=on,wait=off
    -serial chardev:console -serial chardev:agent

Protocol: the agent prints "READY" once when it starts. A request is one line; a
reply is zero or more data lines ("key=value ..." with percent-encoded values)
then "OK" or "ERR <message>".

Library use (tests put tools/guest on sys.path)::

    from agent import GuestAgent
    with GuestAgent("/run/vm/agent.sock", timeout=60) as ga:
        ga.wait_ready()
        for disk in ga.disks():
            print(disk["name"], disk["size"], disk["serial"])

CLI use (e.g. from ansible.builtin.command)::

    python tools/guest/agent.py SOCKET disks --json
    python tools/guest/agent.py SOCKET wait vdb present 10
    python tools/guest/agent.py SOCKET write vdb 0 4096 90
"""

from __future__ import annotations

import argparse
import base64
import errno
import hashlib
import json
import os
import select
import socket
import sys
import time
from urllib.parse import unquote

__all__ = ["GuestAgent", "AgentError", "AgentTimeout", "parse_fields"]

DEFAULT_TIMEOUT = 60.0
INT_FIELDS = ("size", "ro", "removable", "length", "first", "uniform", "written")


class AgentError(RuntimeError):
    """A command failed: the guest answered ERR, or the channel broke."""

    def __init__(self, command: str, message: str):
        super().__init__(f"guest agent command {command!r} failed: {message}")
        self.command = command
        self.message = message


class AgentTimeout(AgentError):
    """No (complete) answer before the deadline."""


def parse_fields(line: str) -> dict:
    """Parse one "key=value key=value" data line; values are percent-decoded."""
    out: dict = {}
    for word in line.split(" "):
        if not word:
            continue
        key, sep, value = word.partition("=")
        value = unquote(value) if sep else ""
        if key in INT_FIELDS and value.lstrip("-").isdigit():
            out[key] = int(value)
        else:
            out[key] = value
    return out


class GuestAgent:
    """A connection to the agent of one guest.

    ``timeout`` is the default deadline in seconds for each exchange, and the overall
    deadline of :meth:`wait_ready` (the guest may still be booting).
    """

    def __init__(self, sock_path: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT):
        self.sock_path = os.fspath(sock_path)
        self.timeout = timeout
        self._buf = b""
        self._sock: socket.socket | None = None
        self._ready = False
        self._nonce = 0
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(self.sock_path)
        except OSError as exc:
            sock.close()
            raise AgentError("connect", f"cannot connect to {self.sock_path}: {exc}") from exc
        self._sock = sock

    # ------------------------------------------------------------------ plumbing
    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "GuestAgent":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _send(self, command: str, line: str) -> None:
        if self._sock is None:
            raise AgentError(command, "connection is closed")
        try:
            self._sock.sendall(line.encode() + b"\n")
        except OSError as exc:
            raise AgentError(command, f"send failed: {exc}") from exc

    def _readline(self, command: str, deadline: float) -> str | None:
        """The next line, or None at EOF. Raises AgentTimeout at the deadline."""
        assert self._sock is not None
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AgentTimeout(command, "timed out waiting for the guest")
            if not select.select([self._sock], [], [], left)[0]:
                continue
            try:
                chunk = self._sock.recv(65536)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EINTR):
                    continue
                raise AgentError(command, f"receive failed: {exc}") from exc
            if not chunk:
                if self._buf:
                    line, self._buf = self._buf, b""
                    return line.decode(errors="replace").rstrip("\r")
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace").rstrip("\r")

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the agent answers (the guest may still be booting).

        Bytes sent before the guest opens ttyS1 may be lost, arrive cut, or be echoed
        back while the port is still in cooked mode. So: send "ping NONCE"; whenever
        the READY banner shows up, ping again. The agent answers requests in order, so
        when "pong X" arrives, pings sent before X were lost, and each ping sent after
        X is still to be answered: those replies are read too, leaving the channel in
        step. Anything else (echo, an ERR for a cut ping) is skipped.
        """
        if self._ready:
            return
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        pending: list[str] = []

        def ping() -> None:
            self._nonce += 1
            nonce = f"{os.getpid()}-{self._nonce}-{time.monotonic_ns()}"
            pending.append(nonce)
            self._send("ping", f"ping {nonce}")

        def readline() -> str:
            try:
                line = self._readline("ping", deadline)
            except AgentTimeout as exc:
                raise AgentTimeout("ping", f"the guest agent did not answer on "
                                           f"{self.sock_path} in time") from exc
            if line is None:
                raise AgentError("ping", "the guest agent's socket was closed (QEMU exited?)")
            return line

        def finish(nonce: str) -> None:
            # After "pong NONCE" comes the OK that ends that reply.
            while readline() != "OK":
                pass

        ping()
        while True:
            line = readline()
            if line.endswith("READY"):
                ping()
            elif line.startswith("pong ") and line[5:] in pending:
                later = pending[pending.index(line[5:]) + 1:]
                finish(line[5:])
                for nonce in later:
                    while readline() != f"pong {nonce}":
                        pass
                    finish(nonce)
                self._ready = True
                return

    def command(self, *words: object, timeout: float | None = None) -> list[str]:
        """Send one request; return its data lines. Raises AgentError on ERR."""
        words_s = [str(w) for w in words]
        name = words_s[0]
        for w in words_s:
            if not w or any(c.isspace() for c in w):
                raise AgentError(name, f"bad request word {w!r}")
        self.wait_ready()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._send(name, " ".join(words_s))
        data: list[str] = []
        while True:
            line = self._readline(name, deadline)
            if line is None:
                raise AgentError(name, "the guest agent's socket was closed (QEMU exited?)")
            if line == "OK":
                return data
            if line.startswith("ERR"):
                raise AgentError(name, line[3:].strip() or "ERR")
            if line.endswith("READY"):
                # The agent restarted (guest rebooted?): the request was lost.
                raise AgentError(name, "the guest agent restarted during the command")
            if line:
                data.append(line)

    # ------------------------------------------------------------------ commands
    def ping(self) -> None:
        self.command("ping")

    def uptime(self) -> float:
        return float(parse_fields(self.command("uptime")[0])["uptime"])

    def disks(self) -> list[dict]:
        """One dict per block device: name, size (bytes), bus (virtio|scsi|ata|
        nvme|floppy|other), serial, hctl ("H:C:T:L" or ""), driver, ro, removable,
        model."""
        return [parse_fields(line) for line in self.command("disks")]

    def disk(self, name: str) -> dict | None:
        return next((d for d in self.disks() if d["name"] == name), None)

    def write(self, dev: str, offset: int, length: int, byte: int) -> None:
        """Write ``length`` bytes of value ``byte`` at ``offset`` to /dev/DEV, fsync'd."""
        self.command("write", dev, int(offset), int(length), int(byte))

    def read(self, dev: str, offset: int, length: int) -> dict:
        """Checksum of bytes on /dev/DEV: {length, md5, first, uniform}."""
        return parse_fields(self.command("read", dev, int(offset), int(length))[0])

    def read_is(self, dev: str, offset: int, length: int, byte: int) -> bool:
        """True when those bytes all have value ``byte``."""
        r = self.read(dev, offset, length)
        return r["md5"] == hashlib.md5(bytes([byte]) * length).hexdigest()

    def rescan(self) -> list[str]:
        """Rescan the SCSI hosts; return the names of stale disks deleted."""
        out = [parse_fields(line) for line in self.command("rescan")]
        return [d["deleted"] for d in out if "deleted" in d]

    def label(self, dev: str) -> str:
        """The ISO 9660 volume label of the medium in /dev/DEV."""
        return parse_fields(self.command("label", dev)[0])["label"]

    def cat(self, dev: str, path: str) -> bytes:
        """A file's content from the ISO 9660 medium in /dev/DEV."""
        fields = parse_fields(self.command("cat", dev, path)[0])
        return base64.b64decode(fields.get("data", ""))

    def wait_disk(self, dev: str, present: bool = True, timeout: float = 10) -> float:
        """Wait in the guest until /sys/block/DEV appears (or goes); returns the
        guest uptime then. Raises AgentError on timeout."""
        secs = max(1, int(timeout + 0.999))
        line = self.command("wait", dev, "present" if present else "absent", secs,
                            timeout=secs + self.timeout)[0]
        return float(parse_fields(line)["uptime"])

    def run(self, shell_command: str, timeout: float | None = None) -> str:
        """Debugging aid: run a shell command line in the guest; return its output
        (stdout and stderr). Raises AgentError when it exits non-zero."""
        if "\n" in shell_command:
            raise AgentError("run", "the command must be one line")
        self.wait_ready()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._send("run", "run " + shell_command)
        out: list[str] = []
        while True:
            line = self._readline("run", deadline)
            if line is None:
                raise AgentError("run", "the guest agent's socket was closed")
            if line == "OK":
                return "".join(x[2:] + "\n" for x in out)
            if line.startswith("ERR"):
                raise AgentError("run", f"{shell_command!r}: {line[3:].strip()}; output: "
                                        + " / ".join(x[2:] for x in out))
            out.append(line)

    def poweroff(self) -> None:
        """Sync and power off. Returns once the guest acknowledged or QEMU hung up."""
        self.wait_ready()
        deadline = time.monotonic() + self.timeout
        self._send("poweroff", "poweroff")
        while True:
            line = self._readline("poweroff", deadline)
            if line is None or line == "OK":
                return
            if line.startswith("ERR"):
                raise AgentError("poweroff", line[3:].strip())


# ---------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Talk to the blocklayer test guest's agent over its serial socket.")
    ap.add_argument("socket", help="the agent chardev's UNIX socket (QEMU is the server)")
    ap.add_argument("command", help="ping, uptime, disks, write, read, rescan, label, cat, "
                                    "wait, poweroff")
    ap.add_argument("args", nargs="*")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                    help="seconds to wait for the guest and for each reply (default 60)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    opts = ap.parse_args(argv)

    try:
        with GuestAgent(opts.socket, opts.timeout) as ga:
            ga.wait_ready()
            c, a = opts.command, opts.args
            if c == "ping":
                result: object = True
            elif c == "uptime":
                result = ga.uptime()
            elif c == "disks":
                result = ga.disks()
            elif c == "write":
                ga.write(a[0], int(a[1]), int(a[2]), int(a[3], 0))
                result = True
            elif c == "read":
                result = ga.read(a[0], int(a[1]), int(a[2]))
            elif c == "rescan":
                result = ga.rescan()
            elif c == "label":
                result = ga.label(a[0])
            elif c == "cat":
                result = ga.cat(a[0], a[1]).decode(errors="replace")
            elif c == "wait":
                result = ga.wait_disk(a[0], a[1] != "absent", float(a[2]) if len(a) > 2 else 10)
            elif c == "poweroff":
                ga.poweroff()
                result = True
            else:
                result = [parse_fields(line) for line in ga.command(c, *a)]
    except (IndexError, ValueError) as exc:
        print(f"agent: bad arguments for {opts.command}: {exc}", file=sys.stderr)
        return 2
    except AgentError as exc:
        print(f"agent: {exc}", file=sys.stderr)
        return 1

    if opts.json:
        print(json.dumps(result, indent=None if isinstance(result, (str, int, float)) else 2))
    elif isinstance(result, list):
        for item in result:
            print(" ".join(f"{k}={v}" for k, v in item.items()) if isinstance(item, dict) else item)
    elif isinstance(result, dict):
        print(" ".join(f"{k}={v}" for k, v in result.items()))
    elif result is not True:
        print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
