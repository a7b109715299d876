# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Instance spec + layout -> QEMU argv (pure). Never ``-drive``: ``-blockdev`` + ``-device``."""

from __future__ import annotations

import json
from typing import Optional

from ansible_collections.blocklayer.qemu.plugins.module_utils.devices import throttle_group_object
from ansible_collections.blocklayer.qemu.plugins.module_utils.layout import Layout
from ansible_collections.blocklayer.qemu.plugins.module_utils.runtime import RuntimePaths
from ansible_collections.blocklayer.qemu.plugins.module_utils.spec import InstanceSpec


def _opt(value: str) -> str:
    """Escape a value for QEMU's key=value option syntax (a comma is written twice)."""
    return str(value).replace(",", ",,")


def as_json(obj: dict) -> str:
    """The JSON form of -blockdev/-device/-netdev, as QEMU also echoes it in its errors."""
    return json.dumps(obj, separators=(",", ":"))


# A named model under TCG: its feature set is the same in every QEMU version, so the guest can
# migrate between versions (``max`` grows with each release). KVM passes the host CPU through.
DEFAULT_CPU = {"kvm": "host", "tcg": "qemu64"}
# What instances started before the CPU was recorded in the runtime file got.
LEGACY_CPU = {"kvm": "host", "tcg": "max"}


def default_cpu(accel: str) -> str:
    return DEFAULT_CPU.get(accel, DEFAULT_CPU["tcg"])


def build_argv(spec: InstanceSpec, layout: Layout, accel: str, paths: RuntimePaths,
               firmware_dirs=(), machine: Optional[str] = None, cpu: Optional[str] = None,
               incoming: bool = False) -> list:
    """The command line of a start; a migration target (``incoming``) passes the source's
    versioned ``machine`` and ``cpu`` and waits for ``migrate-incoming`` instead of ``cont``."""
    m = spec.machine
    argv = [
        spec.qemu_binary,
        "-name", "guest=%s,debug-threads=on" % _opt(spec.name),
        "-uuid", spec.uuid,
        "-machine", machine or m.machine_type,
        "-accel", accel,
        "-cpu", cpu or m.cpu_model or default_cpu(accel),
        "-m", str(m.memory),
        "-smp", str(m.vcpus),
        "-nodefaults", "-no-user-config", "-display", "none",
    ]
    for directory in firmware_dirs:
        argv += ["-L", directory]
    argv += [
        "-chardev", "socket,id=qmp,path=%s,server=on,wait=off" % _opt(paths.qmp_socket),
        "-mon", "chardev=qmp,mode=control",
        "-chardev", "file,id=console,path=%s" % _opt(paths.console_log),
        "-serial", "chardev:console",
    ]
    if m.agent_channel:
        # ttyS1 carries the guest agent, apart from the kernel's console on ttyS0.
        argv += ["-chardev", "socket,id=agent,path=%s,server=on,wait=off" % _opt(paths.agent_socket),
                 "-serial", "chardev:agent"]
    if m.kernel_path:
        argv += ["-kernel", m.kernel_path]
        if m.initrd_path:
            argv += ["-initrd", m.initrd_path]
        if m.kernel_args:
            argv += ["-append", m.kernel_args]
    for prop in layout.globals:
        argv += ["-global", prop]
    # Objects (iothreads, throttle groups) first: a -device or -blockdev naming one needs it to
    # exist. Groups are JSON with the full limits: the dotted limits.* form is refused.
    for group in layout.throttle_groups:
        argv += ["-object", as_json(throttle_group_object(group["id"], group["limits"]))]
    for device in layout.all_devices():
        for obj in device.objects:
            argv += ["-object", as_json(obj)]
    for controller in layout.controllers:
        argv += ["-device", as_json(controller.props)]
    for device in layout.devices:
        for node in device.nodes:
            argv += ["-blockdev", as_json(node)]
        if device.netdev:
            argv += ["-netdev", as_json(device.netdev)]
        argv += ["-device", as_json(device.props)]
    for named in layout.named_nodes:  # standalone nodes (standalone.py): no device uses them
        for node in named["nodes"]:
            argv += ["-blockdev", as_json(node)]
    # Paused until every device is verified over QMP; daemonized once QEMU has initialised,
    # so a failed start is an exit status with QEMU's message on stderr. A migration target
    # runs once the stream is loaded (the source's run state comes with it).
    argv += ["-pidfile", paths.pidfile, "-daemonize"]
    argv += ["-incoming", "defer"] if incoming else ["-S"]
    return argv
