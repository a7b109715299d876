# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The runtime file: the truth about a running instance (design-scsi-kvm), typed.

Format 2 keeps apart what moves with the guest and what belongs to this host
(docs/runtime-file.md):

* ``layout``: the guest layout, portable to another host: name, UUID, machine type, the
  declaration, and per controller and device its record (spec, hvinfo, device props, node chain
  bottom-up with its top, netdev, state, origin), plus instance-level throttle groups (a
  device's own iothread is in its record's ``objects``; files written before keep an empty
  ``iothreads`` list, which is ignored);
* ``host``: the binding to this host: QEMU binary, version, firmware and module dirs, the
  accelerator, the argv and the pid;
* ``status`` (``starting`` until every device is verified and the guest runs, then ``running``)
  and ``journal``: write-ahead records of the actions in flight, each naming what it creates
  and removes, so that a later run can finish or undo whatever a killed run left.

Only this file turns those records into JSON and back. Older formats are upgraded on read by a
chain of small migrators (0 -> 1 -> 2); a damaged file is refused naming the key.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import List, Optional

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.records import Record, Value

FORMAT_VERSION = 2
RUNTIME_FILE = "runtime.json"

STATE_ATTACHED = "attached"
STATE_UNPLUG_PENDING = "unplug-pending"
ORIGIN_BLOCKDEV = "blockdev"
# Started with -drive by an older tool: QEMU owns the nodes, device_del alone removes them.
ORIGIN_DRIVE = "drive"

STATUS_STARTING = "starting"
STATUS_RUNNING = "running"
# No QEMU runs: the layout is kept so that the next start rebuilds each disk's current chain
# (its overlays, a mirror's new image), not the image first declared (docs/block-graph.md).
STATUS_STOPPED = "stopped"
# A QEMU started with -incoming defer waits for (or is loading) a migration; the file becomes
# authoritative (running) only once qemu_migrate's finish step saw the guest run (docs/migration.md).
STATUS_INCOMING = "incoming"
# The instance left this host by migration: its QEMU is gone and must not be started here again
# (the guest runs on the target, on the same images).
STATUS_MIGRATED = "migrated"
# Statuses without a QEMU of this host to manage.
GONE_STATUSES = (STATUS_STOPPED, STATUS_MIGRATED)

_LEGACY_DRIVERS = {"disk": "virtio-blk-pci", "nic": "virtio-net-pci"}


@dataclass(init=False, repr=False, eq=False)
class RuntimePaths(Value):
    """The files of an instance's state dir (all created by the collection or by its QEMU)."""

    state_dir: str

    def _in(self, name: str) -> str:
        return os.path.join(self.state_dir, name)

    @property
    def runtime_file(self) -> str:
        return self._in(RUNTIME_FILE)

    @property
    def qmp_socket(self) -> str:
        return self._in(QMP_SOCKET)

    @property
    def pidfile(self) -> str:
        return self._in(PIDFILE)

    @property
    def console_log(self) -> str:
        return self._in(CONSOLE_LOG)

    @property
    def agent_socket(self) -> str:
        return self._in(AGENT_SOCKET)

    @property
    def migration_socket(self) -> str:
        return self._in(MIGRATION_SOCKET)


QMP_SOCKET = "qmp.sock"
PIDFILE = "qemu.pid"
CONSOLE_LOG = "console.log"
AGENT_SOCKET = "agent.sock"
# The unix socket a migration target listens on when no other address is given.
MIGRATION_SOCKET = "mig.sock"
# Format 1 locked a file named "lock"; format 2 locks the directory itself (docs/faults.md).
LEGACY_LOCK = "lock"
# What QEMU creates when it starts: removed before a start so that QEMU makes them afresh.
QEMU_FILES = (QMP_SOCKET, PIDFILE, CONSOLE_LOG, AGENT_SOCKET, MIGRATION_SOCKET)
# Everything the collection or its QEMU puts in a state dir (images are never among them).
OWNED_FILES = (RUNTIME_FILE,) + QEMU_FILES + (LEGACY_LOCK,)


@dataclass(init=False, repr=False, eq=False)
class HostBinding(Record):
    """What ties the instance to this host; re-resolved when it moves to another."""

    binary: str
    version: Optional[str] = None
    firmware_dirs: List[str] = field(default_factory=list)
    module_dir: Optional[str] = None
    accel: str = "tcg"
    argv: List[str] = field(default_factory=list)
    pid: Optional[int] = None
    # The QMP socket of an adopted QEMU (one the collection did not start); None: the state
    # dir's own qmp.sock (docs/migration.md "Adoption").
    qmp_socket: Optional[str] = None


@dataclass(init=False, repr=False, eq=False)
class GuestLayout(Record):
    """What the guest sees, independent of the host: enough to build the same machine elsewhere."""

    name: str
    uuid: str
    machine_type: str
    declaration: dict
    controllers: List[dict] = field(default_factory=list)
    devices: List[dict] = field(default_factory=list)
    throttle_groups: List[dict] = field(default_factory=list)
    # Standalone nodes qemu_blockdev added (a job's target): {"name", "path", "format",
    # "read_only", "nodes"}; no device uses them, a start rebuilds them (docs/block-graph.md).
    named_nodes: List[dict] = field(default_factory=list)
    # What the alias machine_type resolved to in the QEMU that started the guest (e.g.
    # pc-i440fx-7.2), and the -cpu model: a migration target must use exactly these. None in
    # files written before they were recorded: the alias and the default CPU of that time.
    machine: Optional[str] = None
    cpu: Optional[str] = None

    def records(self) -> List[dict]:
        return self.controllers + self.devices

    def put(self, record: dict) -> None:
        """Add or replace a record (by id), keeping the order of the others."""
        group = self.controllers if record["kind"] == "controller" else self.devices
        for index, old in enumerate(group):
            if old["id"] == record["id"]:
                group[index] = record
                return
        group.append(record)

    def named_node(self, name: str) -> Optional[dict]:
        return next((n for n in self.named_nodes if n["name"] == name), None)

    def drop(self, dev_id: str) -> None:
        self.controllers[:] = [r for r in self.controllers if r["id"] != dev_id]
        self.devices[:] = [r for r in self.devices if r["id"] != dev_id]


@dataclass(init=False, repr=False, eq=False)
class Pending(Record):
    """A write-ahead record: an action begun and not yet known to be done.

    ``creates`` and ``removes`` name what the action adds to or takes from QEMU
    (``devices``, ``nodes``, ``netdevs``, ``objects``); ``record`` is the device record once the
    action is done and ``old`` the one it replaces or removes.
    """

    action: str
    id: str
    creates: dict = field(default_factory=dict)
    removes: dict = field(default_factory=dict)
    record: Optional[dict] = None
    old: Optional[dict] = None
    # A block job's entry moves to PHASE_FINALIZING just before job-finalize, its commit point:
    # from then on ``record`` (the new chain) is the truth, even if QEMU dies (docs/block-graph.md).
    phase: str = "begun"


PHASE_BEGUN = "begun"
PHASE_FINALIZING = "finalizing"


@dataclass(init=False, repr=False, eq=False)
class Runtime(Record):
    layout: GuestLayout
    host: HostBinding
    status: str = STATUS_RUNNING
    journal: List[Pending] = field(default_factory=list)

    @property
    def uuid(self) -> str:
        return self.layout.uuid


# -- serialisation ------------------------------------------------------------------------------

def dumps(rt: Runtime) -> bytes:
    """The file's text: sorted keys, one key a line, so a person can read and diff it."""
    data = {"version": FORMAT_VERSION, "status": rt.status, "layout": asdict(rt.layout),
            "host": asdict(rt.host), "journal": [asdict(p) for p in rt.journal]}
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8")


def loads(text: bytes, where: str) -> Runtime:
    """A runtime file's content, upgraded to the current format and checked.

    Anything that is not what this collection writes is refused naming the key and the file:
    a module must never act on a guess about a running QEMU.
    """
    try:
        data = json.loads(text.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError("runtime file %s is not valid JSON (%s); state: stopped still stops its QEMU, "
                          "or move the file away" % (where, exc)) from None
    data = upgrade(data, where)
    checker = _Checker(where)
    layout = checker.get(data, "layout", dict)
    host = checker.get(data, "host", dict)
    return Runtime(
        layout=GuestLayout(
            name=checker.get(layout, "name", str, "layout."),
            uuid=checker.get(layout, "uuid", str, "layout."),
            machine_type=checker.get(layout, "machine_type", str, "layout."),
            declaration=checker.get(layout, "declaration", dict, "layout."),
            controllers=checker.records(layout, "controllers"),
            devices=checker.records(layout, "devices"),
            throttle_groups=checker.get(layout, "throttle_groups", list, "layout.", []),
            named_nodes=checker.get(layout, "named_nodes", list, "layout.", []),
            machine=checker.get(layout, "machine", (str, type(None)), "layout.", None),
            cpu=checker.get(layout, "cpu", (str, type(None)), "layout.", None),
        ),
        host=HostBinding(
            binary=checker.get(host, "binary", str, "host."),
            version=checker.get(host, "version", (str, type(None)), "host.", None),
            firmware_dirs=checker.get(host, "firmware_dirs", list, "host.", []),
            module_dir=checker.get(host, "module_dir", (str, type(None)), "host.", None),
            accel=checker.get(host, "accel", str, "host.", "tcg"),
            argv=checker.get(host, "argv", list, "host.", []),
            pid=checker.get(host, "pid", (int, type(None)), "host.", None),
            qmp_socket=checker.get(host, "qmp_socket", (str, type(None)), "host.", None),
        ),
        status=checker.get(data, "status", str, "", STATUS_RUNNING),
        journal=[Pending(**checker.pending(entry, i)) for i, entry in enumerate(checker.get(data, "journal", list))],
    )


_MISSING = object()
_RECORD_KEYS = (("kind", str), ("name", str), ("id", str), ("hvinfo", dict), ("props", dict), ("nodes", list))


class _Checker:
    def __init__(self, where: str):
        self.where = where

    def fail(self, key: str, problem: str):
        raise ConfigError("runtime file %s is damaged: %s %s; state: stopped still stops its QEMU, or move "
                          "the file away and stop that QEMU yourself" % (self.where, key, problem))

    def get(self, obj: dict, key: str, kind, prefix: str = "", default=_MISSING):
        if key not in obj:
            if default is _MISSING:
                self.fail(prefix + key, "is missing")
            return default
        value = obj[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(prefix + key, "has the wrong type (%s)" % type(value).__name__)
        return value

    def records(self, layout: dict, group: str) -> list:
        found = []
        for index, record in enumerate(self.get(layout, group, list, "layout.")):
            where = "layout.%s[%d]" % (group, index)
            if not isinstance(record, dict):
                self.fail(where, "is not an object")
            for key, kind in _RECORD_KEYS:
                self.get(record, key, kind, where + ".")
            found.append(record)
        return found

    def pending(self, entry, index: int) -> dict:
        where = "journal[%d]." % index
        if not isinstance(entry, dict):
            self.fail(where[:-1], "is not an object")
        found = {"action": self.get(entry, "action", str, where), "id": self.get(entry, "id", str, where),
                 "creates": self.get(entry, "creates", dict, where, {}),
                 "removes": self.get(entry, "removes", dict, where, {}),
                 "record": self.get(entry, "record", (dict, type(None)), where, None),
                 "old": self.get(entry, "old", (dict, type(None)), where, None),
                 "phase": self.get(entry, "phase", str, where, PHASE_BEGUN)}
        # An entry without what finishing or undoing its action reads would be acted on as
        # something else (a detach without ``old`` drops the disk's record, and the disk is then
        # purged as unknown): refused, and nothing is touched.
        needs = _ENTRY_NEEDS.get(found["action"])
        if needs is None:
            self.fail(where + "action", "is %r, not an action this collection journals" % found["action"])
        for key, keys in needs.items():
            value = found[key]
            if value is None:
                self.fail(where + key, "is missing (every %s entry needs it)" % found["action"])
            for name, kind in keys:
                self.get(value, name, kind, where + key + ".")
            for at, node in enumerate(value.get("nodes") or ()):
                if not isinstance(node, dict) or not isinstance(node.get("node-name"), str):
                    self.fail("%s%s.nodes[%d]" % (where, key, at), "is not a node with a node-name")
        if found["action"] == "node-del":
            self.get(found["removes"], "nodes", list, where + "removes.")
        return found


# What recovery.py, hotplug.py and graphops.py read from a journal entry, by action (the names
# plan.py, graph.py, standalone.py and recovery.py give them): the device record the action leads to
# (``record``) and the one it replaces or removes (``old``).
_DEVICE_NEEDS = (("id", str), ("nodes", list))
_GROUP_NEEDS = (("id", str), ("name", str), ("limits", dict))
_NODE_NEEDS = (("name", str), ("nodes", list))
_ENTRY_NEEDS = {
    "attach": {"record": _DEVICE_NEEDS},
    "detach": {"old": _DEVICE_NEEDS},
    "finish-unplug": {"old": _DEVICE_NEEDS},
    "purge": {"old": _DEVICE_NEEDS},
    "change-medium": {"record": _DEVICE_NEEDS, "old": _DEVICE_NEEDS},
    "resize": {"old": _DEVICE_NEEDS},
    "throttle": {"record": _DEVICE_NEEDS, "old": _DEVICE_NEEDS},
    "add-throttle-group": {"record": _GROUP_NEEDS},
    "set-throttle-group": {"record": _GROUP_NEEDS},
    "delete-throttle-group": {"old": _GROUP_NEEDS},
    "snapshot": {"record": _DEVICE_NEEDS, "old": _DEVICE_NEEDS},
    "commit": {"record": _DEVICE_NEEDS, "old": _DEVICE_NEEDS},
    "stream": {"record": _DEVICE_NEEDS, "old": _DEVICE_NEEDS},
    "mirror": {"record": _DEVICE_NEEDS, "old": _DEVICE_NEEDS},
    "checkpoint": {"record": _DEVICE_NEEDS, "old": _DEVICE_NEEDS},
    "checkpoint-delete": {"record": _DEVICE_NEEDS, "old": _DEVICE_NEEDS},
    "backup": {"record": _DEVICE_NEEDS, "old": _DEVICE_NEEDS},
    "node-add": {"record": _NODE_NEEDS},
    "node-del": {"old": _NODE_NEEDS},
    # A settlement of a killed run's action that failed (hotplug.Applier.recover); it is
    # settled as a removal, which without ``old`` would drop the device's record.
    "recover": {"old": _DEVICE_NEEDS},
}


# -- migrators ----------------------------------------------------------------------------------

def upgrade(data, where: str = "runtime file") -> dict:
    """Bring an older runtime file to the current format, one version at a time."""
    if not isinstance(data, dict):
        raise ConfigError("runtime file %s is damaged: it holds a JSON %s, not an object; state: stopped "
                          "still stops its QEMU, or move the file away" % (where, type(data).__name__))
    version = data.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ConfigError("runtime file %s is damaged: version %r is not a format number; state: stopped still "
                          "stops its QEMU, or move the file away" % (where, version))
    if version > FORMAT_VERSION:
        raise ConfigError("runtime file %s has format %d, newer than this collection understands (%d); "
                          "upgrade the collection" % (where, version, FORMAT_VERSION))
    for step in _MIGRATORS[version:]:
        data = step(data, where)
    return data


def _v0_to_v1(data: dict, where: str) -> dict:
    """Version 0 (design-scsi-kvm's predecessor) kept only a PCI slot per device; it becomes hvinfo
    ``{driver, id, bus: pci.0, addr}``. Those devices were started with -drive."""
    upgraded = []
    for dev in data.get("devices", []):
        if not isinstance(dev, dict):
            raise ConfigError("runtime file %s is damaged: devices holds a %s, not an object; state: stopped "
                              "still stops its QEMU, or move the file away" % (where, type(dev).__name__))
        dev = dict(dev)
        if "hvinfo" not in dev and "pci" in dev:
            dev["hvinfo"] = {"driver": _LEGACY_DRIVERS.get(dev.get("kind"), "virtio-blk-pci"), "id": dev.get("id"),
                             "bus": "pci.0", "addr": "0x%x" % int(dev.pop("pci"))}
            dev.setdefault("origin", ORIGIN_DRIVE)
        dev.setdefault("origin", ORIGIN_BLOCKDEV)
        dev.setdefault("state", STATE_ATTACHED)
        dev.setdefault("nodes", [])
        dev.setdefault("props", dict(dev.get("hvinfo") or {}))
        upgraded.append(dev)
    return dict(data, devices=upgraded, version=1)


def _v1_to_v2(data: dict, where: str) -> dict:
    """Format 1 was one flat object; format 2 splits guest layout and host binding and adds the
    start status and the journal. A format-1 instance was fully started (it was written after
    ``cont``), so it is ``running`` with nothing in flight."""
    qemu = data.get("qemu") if isinstance(data.get("qemu"), dict) else {}
    declaration = data.get("declaration") if isinstance(data.get("declaration"), dict) else {}
    machine = declaration.get("machine") if isinstance(declaration.get("machine"), dict) else {}
    return {
        "version": 2,
        "status": STATUS_RUNNING,
        "layout": {
            "name": data.get("name"), "uuid": data.get("uuid"),
            "machine_type": machine.get("machine_type", "pc"),
            "declaration": declaration,
            "controllers": data.get("controllers", []), "devices": data.get("devices", []),
            "throttle_groups": [],
        },
        "host": {
            "binary": qemu.get("binary", "qemu-system-x86_64"), "version": qemu.get("version"),
            "firmware_dirs": qemu.get("firmware_dirs") or [], "module_dir": qemu.get("module_dir"),
            "accel": data.get("accel", "tcg"), "argv": data.get("argv", []), "pid": None,
        },
        "journal": [],
    }


_MIGRATORS = (_v0_to_v1, _v1_to_v2)
