# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live migration of an instance to another host, in the steps qemu_migrate runs (docs/migration.md).

``export`` (source) hands out the guest layout of the runtime file; ``prepare`` (target) starts
a QEMU with ``-incoming defer`` from that layout re-bound to its host; ``migrate`` (source)
sends the guest and quits the source once QEMU reports ``completed``; ``finish`` (target) makes
the target's runtime file authoritative once the guest runs there; ``abort`` (target) ends a
target whose migration failed. The pure part (refusals, re-binding, the target's argv) comes
first; the steps after it do the I/O.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, replace
from typing import Optional

from ansible_collections.blocklayer.qemu.plugins.module_utils import blockdev, graph, process, queries, runtime, verify
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError, QemuError

STEPS = ("export", "prepare", "migrate", "finish", "abort")
# Both sides: MIGRATION events (off by default), and the return path, over which the target
# tells the source that it failed to load the device state; the source then fails and resumes
# by itself instead of reporting completed with a dead target.
CAPABILITIES = [{"capability": "events", "state": True}, {"capability": "return-path", "state": True}]
TERMINAL = ("completed", "failed", "cancelled")
# Keys whose string values are host paths, wherever they occur in a layout (node filenames,
# declared paths, boot files, images a chain left).
PATH_KEYS = ("filename", "path", "kernel_path", "initrd_path")
# -cpu models whose guest-visible features depend on the QEMU version that runs them.
VERSIONED_CPUS = ("max",)
# How long a failed source may take to resume by itself before it is sent cont.
RESUME_GRACE = 10.0


# -- pure: what may migrate --------------------------------------------------------------------

def refusals(rt: runtime.Runtime) -> list:
    """Why this running instance cannot migrate now; empty when it can."""
    reasons = []
    if rt.status != runtime.STATUS_RUNNING:
        reasons.append("its runtime file says %s, not running" % rt.status)
    pending = sorted(r["id"] for r in rt.layout.records() if r.get("state") == runtime.STATE_UNPLUG_PENDING)
    if pending:
        reasons.append("the guest has not released %s (unplug-pending); the target cannot have a device that is "
                       "half gone: wait until a run of blocklayer.qemu.qemu_instance removes it" % ", ".join(pending))
    for entry in rt.journal:
        if graph.settled_by_runner(entry):
            reasons.append("a block-graph operation is in progress (%s of %s, job %s): wait for it or cancel it "
                           "with blocklayer.qemu.qemu_blockdev" % (entry.action, entry.id,
                                                                   ", ".join(entry.creates.get("jobs") or []) or "-"))
        else:
            reasons.append("a killed run left %s of %s unfinished: run blocklayer.qemu.qemu_instance first"
                           % (entry.action, entry.id))
    return reasons


def export_data(rt: runtime.Runtime, layout: Optional[runtime.GuestLayout] = None,
                rings: Optional[dict] = None) -> dict:
    """What the target needs: the guest layout as data (``layout``: with -drive disks converted),
    and what the source runs (``rings``: device id -> the virtqueue size its QEMU runs)."""
    source = {"version": rt.host.version, "accel": rt.host.accel}
    if rings:
        source["rings"] = rings
    return {"layout": asdict(layout or rt.layout), "source": source}


# -- pure: the source's virtqueue sizes on the target -------------------------------------------

# The property that sets a virtio device's virtqueue size. The size is guest-visible and in the
# migration stream, and a target refuses a ring larger than its own (virtio_load: "VQ n vring.num
# ... exceeds allocated max"); QEMU 10.0.13 runs every ring at 1024 whatever the property says,
# where 10.0.2 and 11.1 run the default 256, so the target is told the size the source runs.
RING_PROPS = {"virtio-blk-pci": "queue-size", "virtio-scsi-pci": "virtqueue_size"}
MAX_QUEUES = 1024  # VIRTIO_QUEUE_MAX


def ring_records(layout: runtime.GuestLayout) -> list:
    """The records of the devices whose virtqueue size a property sets."""
    return [r for r in layout.records() if (r.get("props") or {}).get("driver") in RING_PROPS]


def with_rings(layout: runtime.GuestLayout, rings: dict) -> runtime.GuestLayout:
    """The layout with each such device's property set to the size the source runs (``rings``
    from export); records of a source that reported none stay as they are."""
    def sized(record: dict) -> dict:
        prop = RING_PROPS.get((record.get("props") or {}).get("driver"))
        size = rings.get(record["id"])
        if not prop or not isinstance(size, int) or size <= 0:
            return record
        return dict(record, props=dict(record["props"], **{prop: size}))
    return replace(layout, controllers=[sized(r) for r in layout.controllers],
                   devices=[sized(r) for r in layout.devices])


# -- pure: -drive disks in the collection's -blockdev form (docs/migration.md) ----------------

# query-block's legacy throttling fields: limits set with -drive (or block_set_io_throttle).
DRIVE_LIMITS = ("bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr")
DRIVE_FORMATS = ("raw", "qcow2")
# scsi-disk's realize takes the VPD 0x83 identifier, when none is given, from the serial or else
# the BlockBackend's name (hw/scsi/scsi-disk.c, scsi_realize); a -blockdev BlockBackend has no
# name, so the value the source's device reads back is pinned.
DEVICE_ID_DRIVERS = ("scsi-hd", "scsi-cd")


def drive_records(layout: runtime.GuestLayout) -> list:
    """The records of devices started with -drive (QEMU owns their nodes)."""
    return [r for r in layout.records() if r.get("origin") == runtime.ORIGIN_DRIVE]


def drive_problems(record: dict, entry: Optional[dict], qom: dict) -> list:
    """Why this -drive record cannot be re-written faithfully for the target; empty when it can.
    ``qom``: the device's properties as QEMU reads them (a NIC's ``netdev`` and ``mac``)."""
    if record.get("kind") == "nic":
        return [] if qom.get("netdev") and qom.get("mac") else [
            "QEMU does not show the netdev and MAC address of this NIC, which its record lacks"]
    if record.get("kind") != "disk":
        return ["it is a %s recorded by a format-0 runtime file, which kept no media of it" % record.get("kind")]
    inserted = (entry or {}).get("inserted")
    if not inserted:
        return ["QEMU shows no medium in it"]
    problems = []
    spec = record.get("spec") or {}
    if inserted.get("drv") not in DRIVE_FORMATS:
        problems.append("its image is in format %s; the collection opens %s only"
                        % (inserted.get("drv"), " and ".join(DRIVE_FORMATS)))
    if inserted.get("encrypted"):
        problems.append("its image is encrypted, which the collection does not open")
    limits = ["%s=%s" % (k, inserted[k]) for k in DRIVE_LIMITS if inserted.get(k)]
    if limits:
        problems.append("it has I/O limits set with -drive (%s), which a -blockdev chain carries as a throttle "
                        "node only: clear them (block_set_io_throttle with 0s) and declare limits after the "
                        "migration" % ", ".join(limits))
    path = spec.get("path")
    if inserted.get("file") != path:
        if path and inserted.get("backing_file") == path:
            problems.append("the guest writes to a temporary overlay over %s (snapshot=on), which a target "
                            "cannot open" % path)
        else:
            problems.append("QEMU has %s open, the runtime file records %s" % (inserted.get("file"), path))
    elif spec.get("format") and spec["format"] != inserted.get("drv"):
        problems.append("QEMU opened it as %s, the runtime file records %s" % (inserted.get("drv"), spec["format"]))
    problems += _backing_problems(inserted.get("image") or {})
    return problems


def _backing_problems(image: dict) -> list:
    """A backing file whose format the overlay's header does not name would be probed by the
    target (the collection never probes formats, docs/design.md "Start")."""
    while image.get("backing-filename"):
        if not image.get("backing-filename-format"):
            return ["%s names its backing file %s without a format: set it with qemu-img rebase -u -F <format>"
                    % (image.get("filename"), image["backing-filename"])]
        image = image.get("backing-image") or {}
    return []


def ram_progress(info: dict):
    """query-migrate's RAM progress in bytes (``transferred``, ``total``, ``remaining``), or None."""
    ram = info.get("ram") or {}
    return {key: ram.get(key) for key in ("transferred", "total", "remaining")} if ram else None


def open_images(inserted: dict) -> list:
    """(path, format) of the image a -drive has open and of each backing file below it
    (query-block's ``backing-image`` chain), bottom-up."""
    images, image = [(inserted["file"], inserted["drv"])], inserted.get("image") or {}
    while image.get("backing-image"):
        image = image["backing-image"]
        images.append((image["filename"], image["format"]))
    return list(reversed(images))


def blockdev_form(record: dict, entry: dict, path_kinds: dict, qom: dict) -> dict:
    """A -drive disk's record as the collection records a disk it started: the chain of the
    images QEMU has open, named ``<id>.stor``/``<id>.fmt`` for the bottom, ``.stor2``/``.fmt2``
    and up for each overlay (backing by node name, lower images read-only, as for a declared
    overlay, layout.declared_chain), with the cache, read-only and detect-zeroes settings
    QEMU reports; the device's ``drive`` on the top node, and the properties -drive had given
    it implicitly (``write-cache`` from the BlockBackend, scsi-disk's ``device_id``) made
    explicit. Id, bus, address and every other property stay as they are: the migration stream
    matches devices by address. ``qom`` holds the device's ``serial``/``device_id`` as QEMU
    reads them; ``path_kinds`` says which images are files or block devices. Call only when
    ``drive_problems`` is empty."""
    from ansible_collections.blocklayer.qemu.plugins.module_utils.cache import CacheSettings, IoSettings
    from ansible_collections.blocklayer.qemu.plugins.module_utils.devices import PASSTHROUGH_DRIVERS
    inserted = entry["inserted"]
    spec = record.get("spec") or {}
    cache = inserted.get("cache") or {}
    settings = CacheSettings(writeback=bool(cache.get("writeback", True)), direct=bool(cache.get("direct")),
                             no_flush=bool(cache.get("no-flush")))
    detect_zeroes = inserted.get("detect_zeroes") or "off"
    # Neither is in query-block: the record's, within what QEMU accepted from -drive (detect-zeroes
    # unmap needs discard unmap; aio native needs cache.direct).
    discard = "unmap" if detect_zeroes == "unmap" else spec.get("discard") or "ignore"
    aio = spec.get("aio") or "threads"
    if aio == "native" and not settings.direct:
        aio = "threads"
    io = IoSettings(settings, aio, discard, detect_zeroes)
    layers = [blockdev.Layer(gen, path, fmt) for gen, (path, fmt) in enumerate(open_images(inserted), 1)]
    nodes = blockdev.chain_nodes(record["id"], layers, lambda path: path_kinds.get(path) or blockdev.PATH_FILE, io,
                                 bool(inserted.get("ro")))
    top = blockdev.top_node(nodes)
    props = dict(record.get("props") or record["hvinfo"], drive=top)
    driver = record["hvinfo"].get("driver")
    if driver not in PASSTHROUGH_DRIVERS:
        props.setdefault("write-cache", settings.write_cache())
        if qom.get("serial"):
            props.setdefault("serial", qom["serial"])
    if driver in DEVICE_ID_DRIVERS and qom.get("device_id"):
        props.setdefault("device_id", qom["device_id"])
    return dict(record, hvinfo=dict(record["hvinfo"], drive=top), props=props, nodes=nodes,
                origin=runtime.ORIGIN_BLOCKDEV)


def nic_form(record: dict, qom: dict) -> dict:
    """A format-0 NIC record (only its PCI slot was kept) with the netdev and MAC QEMU shows, as
    the collection records a NIC it started; the netdev's type and options are the record's spec."""
    from types import SimpleNamespace
    from ansible_collections.blocklayer.qemu.plugins.module_utils.devices import netdev_props
    spec = record.get("spec") or {}
    netdev = dict(netdev_props(SimpleNamespace(netdev=spec.get("netdev") or "user", ifname=spec.get("ifname"),
                                               bridge=spec.get("bridge")), record["id"]), id=qom["netdev"])
    hvinfo = dict(record["hvinfo"], netdev=qom["netdev"])
    props = dict(record.get("props") or record["hvinfo"], netdev=qom["netdev"], mac=qom["mac"])
    return dict(record, hvinfo=hvinfo, props=props, netdev=netdev, origin=runtime.ORIGIN_BLOCKDEV)


def _converted(record: dict, entries: dict, path_kinds: dict, qom: dict) -> dict:
    if record.get("origin") != runtime.ORIGIN_DRIVE:
        return record
    if record.get("kind") == "nic":
        return nic_form(record, qom.get(record["id"]) or {})
    entry = entries[record["id"]]
    return blockdev_form(record, entry, path_kinds, qom.get(record["id"]) or {})


def converted_layout(layout: runtime.GuestLayout, entries: dict, path_kinds: dict, qom: dict
                     ) -> runtime.GuestLayout:
    """The layout with every -drive disk in its -blockdev form; refuses, naming each device and
    why, when one cannot be converted (before anything starts). ``entries``: qdev id ->
    query-block entry; ``path_kinds``: image path -> file or block; ``qom``: id -> properties."""
    problems = []
    for record in drive_records(layout):
        found = drive_problems(record, entries.get(record["id"]), qom.get(record["id"]) or {})
        path = ((entries.get(record["id"]) or {}).get("inserted") or {}).get("file")
        if not found and record.get("kind") == "disk" and path_kinds.get(path) not in ("file", "block"):
            found = ["its image %s is %s on this host, not a file or block device"
                     % (path, path_kinds.get(path) or "missing")]
        problems += ["%s (%s): %s" % (record.get("name") or record["id"], record["id"], "; ".join(found))] \
            if found else []
    if problems:
        raise ConfigError("export: the -drive devices of instance %s cannot be re-written as -blockdev nodes for the "
                          "target: %s; fix that, or restart the instance with blocklayer.qemu.qemu_instance "
                          "(allow_restart) instead of migrating" % (layout.name, "; ".join(problems)))
    return replace(layout, devices=[_converted(r, entries, path_kinds, qom) for r in layout.devices])


def _minor(version: Optional[str]) -> Optional[tuple]:
    try:
        return tuple(int(n) for n in (version or "").split(".")[:2])
    except ValueError:
        return None


def check_versions(layout: runtime.GuestLayout, source_version: Optional[str], target_version: str) -> None:
    """Across QEMU versions the target must emulate the source's versioned machine and a CPU model
    whose features do not depend on the version; refuse what cannot be known to match."""
    if source_version and _minor(source_version) == _minor(target_version):
        return
    what = "QEMU %s" % source_version if source_version else "a QEMU of unknown version (no source given)"
    if layout.machine is None:
        raise ConfigError(
            "prepare: the instance was started before the collection recorded its versioned machine type, so "
            "the target's QEMU %s cannot be told which machine %s emulated (-machine %s differs between "
            "versions); migrate it to the same QEMU version, or restart it once with this collection"
            % (target_version, what, layout.machine_type))
    cpu = layout.cpu or "max (not recorded)"
    if layout.cpu is None or layout.cpu in VERSIONED_CPUS:
        raise ConfigError(
            "prepare: the instance runs -cpu %s, whose features differ between QEMU versions, so it cannot move "
            "from %s to QEMU %s; migrate it to the same QEMU version, or restart it once with this collection "
            "(it then runs a named CPU model)" % (cpu, what, target_version))


# -- pure: the layout re-bound to the target ---------------------------------------------------

def map_path(path: str, path_map: dict) -> str:
    """``path`` with its longest matching source prefix (a whole path component) replaced."""
    best = None
    for source in path_map:
        prefix = source.rstrip("/") or "/"
        if path == prefix or path.startswith(prefix if prefix.endswith("/") else prefix + "/"):
            if best is None or len(prefix) > len(best):
                best = prefix
    if best is None:
        return path
    target = path_map.get(best, path_map.get(best + "/"))
    return target.rstrip("/") + path[len(best):] if best != "/" else os.path.join(target, path[1:])


def _map_paths(value, path_map: dict):
    """A copy of a layout value with every host path mapped (PATH_KEYS, and former_images)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in PATH_KEYS and isinstance(item, str) and item.startswith("/"):
                out[key] = map_path(item, path_map)
            elif key == "former_images" and isinstance(item, list):
                out[key] = [map_path(p, path_map) if isinstance(p, str) else p for p in item]
            else:
                out[key] = _map_paths(item, path_map)
        return out
    if isinstance(value, list):
        return [_map_paths(item, path_map) for item in value]
    return value


def check_path_map(path_map: dict) -> None:
    for source, target in path_map.items():
        if not (isinstance(source, str) and isinstance(target, str) and source.startswith("/")
                and target.startswith("/")):
            raise ConfigError("path_map: %r: %r must map an absolute path prefix of the source to one of the "
                              "target, e.g. {/srv/images: /mnt/images}" % (source, target))


def rebind(data: dict, path_map: dict, state_dir: str, binary: str) -> runtime.GuestLayout:
    """The source's guest layout for this host: paths mapped, the declaration pointed at this
    state dir and binary; every record (ids, hvinfo, nodes, objects) otherwise verbatim. Nodes of
    images the source kept open after a commit or pivot are not opened on the target."""
    if not isinstance(data, dict):
        raise ConfigError("layout: give the layout that step export returned (a dict), not a %s" % type(data).__name__)
    check_path_map(path_map)
    mapped = _map_paths(data, path_map)
    for record in mapped.get("devices") or []:
        if isinstance(record, dict):
            record.pop("unused_nodes", None)
    declaration = mapped.get("declaration")
    if isinstance(declaration, dict):
        mapped["declaration"] = dict(declaration, state_dir=state_dir, qemu_binary=binary)
    # The same checks as a runtime file read from disk: a damaged layout is refused by key.
    text = json.dumps({"version": runtime.FORMAT_VERSION, "status": runtime.STATUS_INCOMING, "layout": mapped,
                       "host": {"binary": binary}, "journal": []}).encode()
    return runtime.loads(text, "layout (from step export)").layout


def image_files(layout: runtime.GuestLayout) -> list:
    """(label, path) of every host file a node of the layout opens."""
    found = []
    for record in layout.records() + [dict(n, id="node " + n["name"]) for n in layout.named_nodes]:
        for node in blockdev.flat(record.get("nodes")):
            if node.get("driver") in ("file", "host_device", "host_cdrom") and node.get("filename"):
                found.append(("%s (%s)" % (record.get("name") or record["id"], record["id"]), node["filename"]))
    return found


def check_files(layout: runtime.GuestLayout, exists=os.path.exists) -> None:
    """Every image the target would open exists here (else the path_map is wrong)."""
    missing = [(label, path) for label, path in image_files(layout) if not exists(path)]
    if missing:
        raise ConfigError("prepare: %s: not found on this host; the target must see the source's images (shared "
                          "storage): fix path_map or the mount" % "; ".join("%s %s" % m for m in missing))


def recorded_layout(layout: runtime.GuestLayout):
    """The runtime records as the placed layout cmdline.build_argv takes."""
    from ansible_collections.blocklayer.qemu.plugins.module_utils import layout as layout_mod
    return layout_mod.Layout(controllers=tuple(layout_mod.Device.from_dict(r) for r in layout.controllers),
                             devices=tuple(layout_mod.Device.from_dict(r) for r in layout.devices),
                             throttle_groups=tuple(layout.throttle_groups), named_nodes=tuple(layout.named_nodes))


def incoming_argv(layout: runtime.GuestLayout, accel: str, paths: runtime.RuntimePaths, firmware_dirs,
                  binary: str) -> list:
    """The target's command line: the source's machine, CPU and devices, waiting for the stream."""
    from ansible_collections.blocklayer.qemu.plugins.module_utils import cmdline, spec as spec_mod
    spec = spec_mod.instance_from(spec_mod.params_from_declaration(layout.declaration))
    cpu = layout.cpu or cmdline.LEGACY_CPU.get(accel, cmdline.LEGACY_CPU["tcg"])
    argv = cmdline.build_argv(spec, recorded_layout(layout), accel, paths, firmware_dirs,
                              machine=layout.machine or layout.machine_type, cpu=cpu, incoming=True)
    argv[0] = binary
    return argv


def listen_uri(listen: Optional[str], paths: runtime.RuntimePaths) -> str:
    """The migration URI the target listens on: a unix socket (a path, default in the state
    dir) or ``tcp:HOST:PORT`` (``HOST:PORT`` also)."""
    if not listen:
        return "unix:" + paths.migration_socket
    if listen.startswith("/"):
        return "unix:" + listen
    if listen.startswith(("unix:/", "tcp:")):
        return listen
    host_part, sep, port = listen.rpartition(":")
    if sep and host_part and port.isdigit():
        return "tcp:" + listen
    raise ConfigError("listen: %r is neither a unix socket path (/run/x.sock), unix:PATH, nor HOST:PORT or "
                      "tcp:HOST:PORT" % listen)


# -- the steps ---------------------------------------------------------------------------------

class Migration:
    """One qemu_migrate step on the instance of ``task`` (a task.Task, lock held)."""

    def __init__(self, task, params: dict):
        self.task = task
        self.params = params
        self.instance = task.open_instance("")
        self.paths = self.instance.paths
        self.state = self.instance.state
        # The diff: where the instance stands on this host before the step and after it.
        self.status_before = self.status_after = self.instance.before.status if self.instance.before else "absent"

    # -- helpers ------------------------------------------------------------------------------
    def _save(self, rt) -> None:
        self.status_after = rt.status
        self.instance.save(rt)
        self.instance.changed = True

    def _act(self, action: str, **info) -> None:
        self.instance.actions.append(dict(action=action, **info))

    def _result(self, **extra) -> dict:
        inst = self.instance
        return dict(changed=bool(inst.actions), actions=inst.actions, qmp_commands=inst.qmp_commands,
                    warnings=inst.warnings, diff={"before": {"status": self.status_before},
                                                  "after": {"status": self.status_after}}, **extra)

    def _running_source(self, step: str) -> runtime.Runtime:
        inst = self.instance
        if inst.damaged:
            raise inst.damaged
        if not (inst.rt and inst.pid):
            raise ConfigError("%s: instance %s is not running on this host (no live QEMU for %s)"
                              % (step, inst.name, self.paths.runtime_file))
        if not inst.trusted:
            raise ConfigError("%s: the QEMU serving instance %s's QMP socket (pid %d) is not the one its runtime file "
                              "or pidfile names; run blocklayer.qemu.qemu_instance first" % (step, inst.name, inst.pid))
        reasons = refusals(inst.rt)
        if reasons:
            raise ConfigError("%s: instance %s cannot migrate now: %s" % (step, inst.name, "; ".join(reasons)))
        return inst.rt

    def _drop_qemu_files(self) -> None:
        for name in runtime.QEMU_FILES:
            if name != runtime.CONSOLE_LOG:
                self.state.remove(name)

    # -- export -------------------------------------------------------------------------------
    def export(self) -> dict:
        rt = self._running_source("export")
        drives = drive_records(rt.layout)
        if not (drives or ring_records(rt.layout)):
            return self._result(**export_data(rt))
        # Read-only queries over one connection; the source and its runtime file stay as they are.
        with self.instance.session() as qmp:
            try:
                rings = self._rings(qmp, rt.layout)
                layout = self._converted(qmp, rt.layout) if drives else None
            finally:
                self.instance.qmp_commands += qmp.sent
        return self._result(**export_data(rt, layout, rings))

    @staticmethod
    def _rings(qmp, layout: runtime.GuestLayout) -> dict:
        """Device id -> the largest virtqueue size the source's QEMU runs or offers it, from the read-only
        x-query-virtio-queue-status, queue by queue until QEMU says there is no such queue (not
        x-query-virtio-status, which aborts QEMU 11.1.3); empty when that QEMU lacks the command."""
        rings = {}
        for record in ring_records(layout):
            path = "/machine/peripheral/%s/virtio-backend" % record["id"]
            sizes = []
            for queue in range(MAX_QUEUES):
                try:
                    status = qmp.execute("x-query-virtio-queue-status", {"path": path, "queue": queue})
                    # The ring the guest may set up, not only the one it has now: early in
                    # boot 10.0.13 runs 256, later the 1024 it offers.
                    sizes.append(max(status["vring-num"], status.get("vring-num-default") or 0))
                except QemuError as exc:
                    if exc.error_class == "CommandNotFound":
                        return {}
                    if queue and "Invalid virtqueue number" in exc.desc:
                        break
                    raise
            rings[record["id"]] = max(sizes)
        return rings

    def _converted(self, qmp, layout: runtime.GuestLayout) -> runtime.GuestLayout:
        """The layout with its -drive disks as -blockdev nodes, from what QEMU has open."""
        from ansible_collections.blocklayer.qemu.plugins.module_utils import host
        entries = verify.block_by_id(qmp.execute("query-block"))
        qom = {r["id"]: self._qom_props(qmp, r) for r in drive_records(layout)}
        paths = {path for e in entries.values() if e.get("inserted") for path, _fmt in open_images(e["inserted"])}
        return converted_layout(layout, entries, {p: host.inspect_path(p).kind for p in paths}, qom)

    @staticmethod
    def _qom_props(qmp, record: dict) -> dict:
        """The guest-visible properties -drive may have set implicitly (or a format-0 record lacks),
        as the device reads them."""
        if record.get("kind") == "nic":
            wanted = ["netdev", "mac"]
        else:
            wanted = ["serial"] + (["device_id"] if record["hvinfo"].get("driver") in DEVICE_ID_DRIVERS else [])
        path = "/machine/peripheral/" + record["id"]
        found = {}
        for prop in wanted:
            try:
                found[prop] = qmp.execute("qom-get", {"path": path, "property": prop})
            except QemuError:
                pass  # a device type without it
        return found

    # -- prepare ------------------------------------------------------------------------------
    def _check_target_free(self, layout: runtime.GuestLayout) -> Optional[bytes]:
        """The target state dir must have no QEMU and no live record; returns the old file to
        put back if the start fails (a record of an earlier stay, or of an earlier attempt)."""
        inst = self.instance
        if inst.pid:
            raise ConfigError("prepare: a QEMU of instance %s already runs on this host (pid %d, %s); stop it, or "
                              "run step abort if it is the target of a failed migration"
                              % (inst.name, inst.pid, self.paths.state_dir))
        old = inst.before
        if old and old.uuid != layout.uuid:
            raise ConfigError("prepare: %s records another instance (UUID %s, not %s); give another state_dir"
                              % (self.paths.runtime_file, old.uuid, layout.uuid))
        if old and old.status not in runtime.GONE_STATUSES + (runtime.STATUS_INCOMING,):
            raise ConfigError("prepare: %s says instance %s is %s here, but no QEMU runs: run "
                              "blocklayer.qemu.qemu_instance state: stopped first"
                              % (self.paths.runtime_file, inst.name, old.status))
        if old and old.status == runtime.STATUS_INCOMING:
            return None  # a dead target of an earlier attempt: nothing worth keeping
        return self.state.read(runtime.RUNTIME_FILE) if old else None

    def prepare(self) -> dict:
        from ansible_collections.blocklayer.qemu.plugins.module_utils import host, instance as instance_mod, probe
        params = self.params
        if not params.get("layout"):
            raise ConfigError("layout: step prepare needs the layout that step export returned on the source")
        binary = instance_mod.resolve_binary(params["qemu_binary"])
        layout = rebind(params["layout"], params.get("path_map") or {}, self.paths.state_dir, binary)
        if layout.name != self.instance.name:
            raise ConfigError("prepare: the layout is of instance %s, not %s; give the same name on both hosts"
                              % (layout.name, self.instance.name))
        previous = self._check_target_free(layout)
        check_files(layout)
        firmware_dirs, module_dir = host.qemu_dirs(binary, params.get("qemu_firmware_dirs"),
                                                   params.get("qemu_module_dir"))
        env = dict(os.environ)
        if module_dir:
            env["QEMU_MODULE_DIR"] = module_dir
        source = params.get("source") or {}
        version = probe.binary_version(binary, env)
        check_versions(layout, source.get("version"), version)
        accel = instance_mod.resolve_accel(params.get("accel") or source.get("accel") or "auto", binary, env)
        argv = incoming_argv(with_rings(layout, source.get("rings") or {}), accel, self.paths, firmware_dirs, binary)
        uri = listen_uri(params.get("listen"), self.paths)
        rt = runtime.Runtime(layout=layout, status=runtime.STATUS_INCOMING,
                             host=runtime.HostBinding(binary=binary, version=version, firmware_dirs=firmware_dirs,
                                                      module_dir=module_dir, accel=accel, argv=argv))
        self._act("prepare", uri=uri, machine=layout.machine or layout.machine_type, devices=[
            r["id"] for r in layout.records()])
        if self.task.module.check_mode:
            return self._result(uri=uri, argv=argv, pid=None)
        try:
            self._start_incoming(rt, env, uri)
        except ConfigError as exc:
            self._undo_prepare(previous)
            raise ConfigError("prepare: the target did not start: %s" % exc) from None
        except QemuError as exc:
            self._undo_prepare(previous)
            if "unsupported machine type" in (exc.desc or ""):
                raise ConfigError(
                    "prepare: the target's QEMU %s has no machine type %s, which the source's QEMU emulates: a guest "
                    "moves only to a QEMU at least as new as the machine it started on (one started on an older "
                    "QEMU and moved up keeps that older machine, and can move back)"
                    % (version, layout.machine or layout.machine_type)) from None
            raise QemuError("prepare: the target did not start: %s" % exc, exc.error_class, exc.desc,
                            exc.command) from None
        except BaseException:
            self._undo_prepare(previous)
            raise
        return self._result(uri=uri, argv=argv, pid=rt.host.pid)

    def _start_incoming(self, rt: runtime.Runtime, env: dict, uri: str) -> None:
        from ansible_collections.blocklayer.qemu.plugins.module_utils import verify
        self.state.prepare_for_qemu(runtime.QEMU_FILES)
        self.state.mark(rt.layout.name, rt.uuid)
        self._save(rt)  # incoming: a run killed from here on finds the QEMU it started
        process.start(rt.host.argv, env, self.instance.timeouts.start)
        self.instance.pid = rt.host.pid = process.parse_pid(self.state.read(runtime.PIDFILE))
        with self.instance.session() as qmp:
            try:
                live = queries.live(qmp)
                problems = verify.problems(rt.layout.records(), live.block, live.pci, live.qom)
                if problems:
                    raise QemuError("QEMU started without the recorded devices: %s" % "; ".join(problems))
                qmp.execute("migrate-set-capabilities", {"capabilities": CAPABILITIES})
                qmp.execute("migrate-incoming", {"uri": uri})
            finally:
                self.instance.qmp_commands += qmp.sent
        self._save(rt)

    def _undo_prepare(self, previous: Optional[bytes]) -> None:
        """Leave the target as it was: no QEMU, and no runtime file (or the one it had)."""
        self.instance.kill()
        self._drop_qemu_files()
        if previous is None:
            self.state.remove(runtime.RUNTIME_FILE)
        else:
            self.state.write_atomic(runtime.RUNTIME_FILE, previous)
        self.status_after = self.status_before

    # -- migrate ------------------------------------------------------------------------------
    def migrate(self) -> dict:
        rt = self._running_source("migrate")
        uri = self.params.get("uri")
        if not uri:
            raise ConfigError("uri: step migrate needs the uri that step prepare returned on the target")
        self._act("migrate", uri=uri)
        if self.task.module.check_mode:
            return self._result(status=None, total_time=None, downtime=None, ram=None)
        with self.instance.session() as qmp:
            try:
                status, info = self._send(qmp, uri)
            finally:
                self.instance.qmp_commands += qmp.sent
        if status == "completed":
            self._retire_source(rt)
        return self._result(status=status, total_time=info.get("total-time"), downtime=info.get("downtime"),
                            ram=ram_progress(info))

    def _send(self, qmp, uri: str):
        """migrate, and wait for its end; on failure make sure the source runs and raise."""
        before = qmp.execute("query-status")["status"]
        if before not in ("running", "paused"):
            raise QemuError("migrate: the source QEMU is %s; only a running or paused guest migrates" % before)
        qmp.execute("migrate-set-capabilities", {"capabilities": CAPABILITIES})
        with qmp.listener(("MIGRATION", "RESUME")) as events:
            try:
                qmp.execute("migrate", {"uri": uri})
            except QemuError as exc:
                raise QemuError("migrate: the source QEMU refused to migrate to %s: %s" % (uri, exc.desc or exc),
                                exc.error_class, exc.desc, exc.command) from None
            seen = {"resumed": False}
            status = self._wait_end(qmp, events, self.params["timeout"], seen)
            timed_out = status is None
            progress = None
            if timed_out:
                progress = ram_progress(qmp.execute("query-migrate"))  # a cancelled one has no figures
                qmp.execute("migrate_cancel")
                status = self._wait_end(qmp, events, self.instance.timeouts.qmp_command, seen) or "cancelling"
            info = qmp.execute("query-migrate")
            if status == "completed":
                return status, info
            self._resume_source(qmp, events, before, seen)
        reason = info.get("error-desc") or "no reason given (the target may have rejected the device state)"
        ram = progress or {}
        sent = " (%d of %d MiB of guest memory sent)" % (ram["transferred"] >> 20, ram["total"] >> 20) \
            if ram.get("transferred") is not None and ram.get("total") else ""
        why = ("it did not complete within %s s (timeout)%s and was cancelled" % (self.params["timeout"], sent)) \
            if timed_out else "QEMU reports it %s: %s" % (status, reason)
        raise QemuError("migrate: the migration to %s failed, %s; the source runs on and its runtime file is "
                        "unchanged: run step abort on the target" % (uri, why), desc=info.get("error-desc") or "")

    @staticmethod
    def _wait_end(qmp, events, timeout: float, seen: dict) -> Optional[str]:
        """The terminal status of the migration from its MIGRATION events, or None at the deadline.
        10.0 also reports ``device`` after the source stops; any non-terminal status is skipped."""
        deadline = time.monotonic() + timeout
        while True:
            event = qmp.wait_event(events, deadline - time.monotonic())
            if event is None:
                return None
            if event["event"] == "RESUME":
                seen["resumed"] = True
            elif event["data"].get("status") in TERMINAL:
                return event["data"]["status"]

    def _resume_source(self, qmp, events, before: str, seen: dict) -> None:
        """With return-path the source resumes by itself after a failure; cont it only if it did not."""
        if before != "running":
            return
        deadline = time.monotonic() + RESUME_GRACE
        while qmp.execute("query-status")["status"] != "running":
            if seen["resumed"]:
                break
            event = qmp.wait_event(events, deadline - time.monotonic())
            if event is None:
                break
            seen["resumed"] = seen["resumed"] or event["event"] == "RESUME"
        if qmp.execute("query-status")["status"] != "running":
            qmp.execute("cont")
            self._act("cont", reason="the source did not resume by itself after the failed migration")

    def _retire_source(self, rt: runtime.Runtime) -> None:
        """The guest runs on the target: quit the source (it can never run again: the target holds
        the image locks) and record that the instance left this host."""
        inst = self.instance
        with self.instance.session() as qmp:
            try:
                qmp.execute("quit")
            except QemuError:
                pass  # QEMU may close the socket before it replies
            finally:
                inst.qmp_commands += qmp.sent
        if not process.wait_exit(inst.pid, inst.timeouts.qmp_command):
            inst.kill()
        inst.pid = None
        self._drop_qemu_files()
        self._save(replace(rt, status=runtime.STATUS_MIGRATED, journal=[], host=replace(rt.host, pid=None)))
        self._act("retire-source", reason="the guest runs on the target")

    # -- finish -------------------------------------------------------------------------------
    def _incoming_target(self, step: str) -> Optional[runtime.Runtime]:
        inst = self.instance
        if inst.damaged:
            raise inst.damaged
        if inst.rt and inst.rt.status == runtime.STATUS_RUNNING and inst.pid and step == "finish":
            return None  # finished already
        if not (inst.rt and inst.rt.status == runtime.STATUS_INCOMING):
            raise ConfigError("%s: instance %s is not the target of a migration on this host (%s %s)"
                              % (step, inst.name, self.paths.runtime_file,
                                 "says %s" % inst.rt.status if inst.rt else "records no live QEMU"))
        return inst.rt

    def finish(self) -> dict:
        rt = self._incoming_target("finish")
        if rt is None:
            return self._result(status="running")
        if not self.instance.pid:
            raise QemuError("finish: the target QEMU of instance %s is gone (it failed to load the guest, or was "
                            "killed); run step abort here" % self.instance.name)
        self._act("finish")
        if self.task.module.check_mode:
            return self._result(status="running")
        with self.instance.session() as qmp:
            try:
                self._wait_running(qmp)
                rt.host.version = qmp.version
            finally:
                self.instance.qmp_commands += qmp.sent
        rt.status = runtime.STATUS_RUNNING
        self._save(rt)
        return self._result(status="running", pid=rt.host.pid)

    def _wait_running(self, qmp) -> None:
        """Wait until the guest runs on the target (RESUME); a guest that was paused on the source
        arrives paused and is sent cont, which is also when 10.0 activates its images."""
        with qmp.listener(("RESUME", "MIGRATION")) as events:
            deadline = time.monotonic() + self.params["timeout"]
            status = qmp.execute("query-status")["status"]
            while status == "inmigrate":
                try:
                    event = qmp.wait_event(events, deadline - time.monotonic())
                except QemuError:
                    raise QemuError("finish: the target QEMU exited while loading the guest (the source's "
                                    "error-desc says why); run step abort here") from None
                if event is None:
                    raise QemuError("finish: the guest did not arrive within %s s (timeout)" % self.params["timeout"])
                if event["event"] == "MIGRATION" and event["data"].get("status") == "failed":
                    raise QemuError("finish: the target reports the migration failed; run step abort here")
                status = qmp.execute("query-status")["status"]
            if status in ("paused", "prelaunch"):
                qmp.execute("cont")
                self._act("cont", reason="the guest arrived paused")
                status = qmp.execute("query-status")["status"]
            if status != "running":
                raise QemuError("finish: the target QEMU is %s after the migration, not running" % status)

    # -- abort --------------------------------------------------------------------------------
    def abort(self) -> dict:
        inst = self.instance
        if inst.rt and inst.rt.status == runtime.STATUS_RUNNING:
            raise ConfigError("abort: instance %s runs here since its migration finished; this QEMU is the guest "
                              "now (stop it with blocklayer.qemu.qemu_instance state: stopped)" % inst.name)
        incoming = inst.before and inst.before.status == runtime.STATUS_INCOMING
        if not (incoming or inst.pid):
            return self._result()  # nothing here: the target never started, or was aborted already
        if inst.pid and not incoming:
            raise ConfigError("abort: the QEMU of instance %s here (pid %d) is not a migration target (%s); it is "
                              "left alone" % (inst.name, inst.pid, self.paths.runtime_file))
        self._act("abort", pid=inst.pid)
        if not self.task.module.check_mode:
            inst.kill()
            self._drop_qemu_files()
            self.state.remove(runtime.RUNTIME_FILE)
            self.status_after = "absent"
            inst.changed = True
        return self._result()


def run(task) -> dict:
    """qemu_migrate's work: the step its parameters name."""
    params = task.module.params
    migration = Migration(task, params)
    return getattr(migration, params["step"])()
