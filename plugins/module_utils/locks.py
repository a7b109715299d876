# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""QEMU's image lock conflicts in plain words, naming who holds the image.

QEMU locks bytes of every image it opens (file-posix ``raw_check_lock_bytes``) and refuses an
open that conflicts with another process with ``Failed to get "write" lock``, ``Failed to get
shared "write" lock`` or ``Failed to get "consistent read" lock``. On the command line it adds
the hint ``Is another process using the image [P]?``; over QMP the hint is dropped, so the
image is then found in the failing command (or the ``blockdev-add`` that made its node).
The processes that have the image open are found in ``/proc/<pid>/fd``; a QEMU serving the
QMP socket of a collection state dir is named as that instance.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Tuple

from ansible_collections.blocklayer.qemu.plugins.module_utils import process, runtime
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Value
from ansible_collections.blocklayer.qemu.plugins.module_utils.statedir import StateDir

# QEMU's texts, the same on 7.2 and 10.0 (file-posix.c raw_check_lock_bytes).
WRITE = "write"
SHARED_WRITE = "shared write"
CONSISTENT_READ = "consistent read"
_LOCK = re.compile(r'Failed to get (shared )?"(write|consistent read)" lock')
_HINT = re.compile(r"Is another process using the image \[(.*)\]\?")

# QEMU's lock bytes (file-posix.c): 100+n means "uses permission n", 200+n "does not share
# permission n"; n is 0 for consistent read, 1 for write. The byte another process holds that
# refuses our open, per QEMU's text:
_CONFLICT_BYTE = {WRITE: 201, SHARED_WRITE: 101, CONSISTENT_READ: 200}

_MAX_STATE_FILE = 4 << 20  # a runtime file is a few KiB; never read a huge planted one
_MAX_OFFSET = (1 << 63) - 1


@dataclass(init=False, repr=False, eq=False)
class Holder(Value):
    """A process of this host that has the image open."""

    pid: int
    comm: str
    state_dir: Optional[str] = None  # set when it is the QEMU of a collection instance
    name: Optional[str] = None  # that instance's name, when its files could be read
    # The byte ranges it has locked in the image (fdinfo "lock:" lines); a reader that only
    # opened it (qemu-img -U) has none that conflict.
    locked: Tuple[Tuple[int, int], ...] = ()

    def holds(self, byte: int) -> bool:
        return any(start <= byte <= end for start, end in self.locked)


def lock_type(desc: str) -> Optional[str]:
    """``write``, ``shared write`` or ``consistent read`` when ``desc`` is a lock conflict, else None."""
    match = _LOCK.search(desc or "")
    if not match:
        return None
    return SHARED_WRITE if match.group(1) else match.group(2)


def image_of(desc: str) -> Optional[str]:
    """The image QEMU names in a lock conflict, or None (not a lock text, or no hint in it)."""
    if lock_type(desc) is None:
        return None
    match = _HINT.search(desc)
    return match.group(1) if match and match.group(1) else None


def without_hint(desc: str) -> str:
    """QEMU's text without its hint line, which the explanation repeats in full."""
    return _HINT.sub("", desc).strip()


# -- the image of a failed QMP command -----------------------------------------------------
# Arguments that name a node (device_add drive, blockdev-insert-medium node-name, qom-set
# value, a job's target) or a child of one; followed in this order to the image's filename.
_NODE_KEYS = ("file", "drive", "node-name", "target", "value", "overlay", "backing")


def image_of_commands(sent: list) -> Optional[str]:
    """The filename of the image the last command of ``sent`` opened, through the nodes that
    earlier ``blockdev-add`` commands of the same session made; None when it cannot be told."""
    if not sent:
        return None
    nodes = {}
    for command in sent:
        args = command.get("arguments") or {}
        if command.get("execute") == "blockdev-add" and isinstance(args.get("node-name"), str):
            nodes[args["node-name"]] = args
    return _filename(sent[-1].get("arguments") or {}, nodes, set())


def _filename(args: dict, nodes: dict, seen: set) -> Optional[str]:
    if isinstance(args.get("filename"), str):
        return args["filename"]
    for key in _NODE_KEYS:
        value = args.get(key)
        if isinstance(value, dict):
            found = _filename(value, nodes, seen)
        elif isinstance(value, str) and value in nodes and value not in seen:
            seen.add(value)
            found = _filename(nodes[value], nodes, seen)
        else:
            found = None
        if found:
            return found
    return None


# -- who has it open ------------------------------------------------------------------------
def holders(path: str) -> List[Holder]:
    """The processes of this host with ``path`` open; those we cannot read are skipped."""
    try:
        target = os.path.realpath(path)
        pids = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except (OSError, ValueError):
        return []
    found = []
    for pid in pids:
        fds = _open_fds(pid, target)
        if fds:
            state_dir = _instance_dir(pid)
            found.append(Holder(pid, _comm(pid), state_dir, _instance_name(state_dir) if state_dir else None,
                                tuple(r for fd in fds for r in _locked_ranges(pid, fd))))
    return found


def _open_fds(pid: int, target: str) -> list:
    base = "/proc/%d/fd" % pid
    try:
        entries = os.listdir(base)
    except OSError:
        return []
    fds = []
    for entry in entries:
        try:
            if os.readlink(os.path.join(base, entry)) == target:
                fds.append(entry)
        except OSError:
            continue
    return fds


def _locked_ranges(pid: int, fd: str) -> list:
    """QEMU's locks are OFD locks on the image's fd: ``lock:\t1: OFDLCK ADVISORY  READ -1 fe:00:12 100 100``."""
    ranges = []
    try:
        with open("/proc/%d/fdinfo/%s" % (pid, fd), encoding="ascii", errors="replace") as handle:
            lines = [line.split() for line in handle if line.startswith("lock:")]
    except OSError:
        return ranges
    for fields in lines:
        if len(fields) < 4 or fields[2] == "->":  # "->": a waiter, not a holder
            continue
        try:
            ranges.append((int(fields[-2]), _MAX_OFFSET if fields[-1] == "EOF" else int(fields[-1])))
        except ValueError:
            continue
    return ranges


def _comm(pid: int) -> str:
    try:
        with open("/proc/%d/comm" % pid, encoding="utf-8", errors="replace") as handle:
            return handle.read().strip() or "?"
    except OSError:
        return "?"


def _instance_dir(pid: int) -> Optional[str]:
    """The state dir whose QMP socket this process serves, when it is a collection state dir."""
    args = process.cmdline_of(pid)
    for option, value in zip(args, args[1:]):
        if option != "-chardev":
            continue
        socket_path = qmp_socket_of(value)
        if socket_path and os.path.basename(socket_path) == runtime.QMP_SOCKET:
            state_dir = os.path.dirname(socket_path)
            if _is_state_dir(state_dir):
                return state_dir
    return None


def qmp_socket_of(chardev: str) -> Optional[str]:
    """The path of a ``-chardev socket,id=qmp,path=...`` value (cmdline._opt doubles commas)."""
    options = _split_options(chardev)
    if not options or options[0] != "socket" or "id=qmp" not in options[1:]:
        return None
    for option in options[1:]:
        if option.startswith("path="):
            return option[len("path="):]
    return None


def _split_options(text: str) -> list:
    """QEMU's key=value list: a lone comma separates, a doubled one is a comma (QemuOpts)."""
    options, current, i = [], [], 0
    while i < len(text):
        if text[i] == "," and text[i + 1:i + 2] == ",":
            current.append(",")
            i += 2
        elif text[i] == ",":
            options.append("".join(current))
            current, i = [], i + 1
        else:
            current.append(text[i])
            i += 1
    options.append("".join(current))
    return options


def _is_state_dir(path: str) -> bool:
    """Marked by the collection, or holding a runtime file (a dir of an older version)."""
    return any(os.path.isfile(os.path.join(path, name)) for name in (StateDir.MARKER, runtime.RUNTIME_FILE))


def _instance_name(state_dir: str) -> Optional[str]:
    """``layout.name`` of the runtime file, else the marker's name; None when neither reads."""
    try:
        return runtime.loads(_read(os.path.join(state_dir, runtime.RUNTIME_FILE)), state_dir).layout.name
    except Exception:  # any damage or unreadable file: fall back, never fail the explanation
        pass
    try:
        name = json.loads(_read(os.path.join(state_dir, StateDir.MARKER)).decode("utf-8")).get("name")
        return name if isinstance(name, str) and name else None
    except Exception:
        return None


def _read(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return os.read(fd, _MAX_STATE_FILE)
    finally:
        os.close(fd)


# -- the message ----------------------------------------------------------------------------
def describe_conflict(desc: str, own_state_dir: Optional[str] = None,
                      holders: Callable[[str], Iterable[Holder]] = holders,
                      image: Optional[str] = None) -> Optional[str]:
    """What a lock conflict means, who holds the image and the fix; None when ``desc`` is no
    lock conflict. ``image`` is used when QEMU's text names none (QMP drops the hint)."""
    kind = lock_type(desc)
    if kind is None:
        return None
    path = image_of(desc) or image
    if not path:
        return "the image is %s; %s" % (_in_use(kind), _fix(kind, "process"))
    found = list(holders(path))
    locked = [h for h in found if h.holds(_CONFLICT_BYTE[kind])]
    shown = locked or found  # a reader without that lock (qemu-img -U) did not cause this
    own = os.path.realpath(own_state_dir) if own_state_dir else None
    if shown:
        who = "; ".join(_holder_text(h, own) for h in shown)
    else:
        who = ("no process of this host has it open: it may be locked over NFS or by another user's "
               "process you cannot see")
    stopper = "instance" if any(h.state_dir and _real(h.state_dir) != own for h in shown) else "process"
    return "image %s is %s (%s); %s" % (path, _in_use(kind), who, _fix(kind, stopper))


def _real(path: str) -> str:
    return os.path.realpath(path)


def _in_use(kind: str) -> str:
    if kind == CONSISTENT_READ:
        return "in use by another process as a block job's target, which no other process may read until the job ends"
    if kind == SHARED_WRITE:
        return "in use by another process that writes to it"
    return "in use by another process, which does not let others write it"


def _holder_text(holder: Holder, own: Optional[str]) -> str:
    if holder.state_dir and own and _real(holder.state_dir) == own:
        return "this instance's own QEMU, pid %d, for another of its disks or nodes" % holder.pid
    if holder.state_dir:
        name = ("instance %s" % holder.name) if holder.name else "an instance whose name could not be read"
        return "%s, state dir %s, pid %d" % (name, holder.state_dir, holder.pid)
    return "pid %d, %s" % (holder.pid, holder.comm)


def _fix(kind: str, stopper: str) -> str:
    if kind == CONSISTENT_READ:
        # The job unshares consistent read on its target; force-share cannot override that.
        return "wait until that job ends, or use another image"
    return "stop that %s or use another image; a read-only disk can share it with mode: ro and force_share: true" \
        % stopper
