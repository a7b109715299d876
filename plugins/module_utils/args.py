# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Argument specs shared by the modules, so a disk is the same option set everywhere."""

from __future__ import annotations

from ansible_collections.blocklayer.qemu.plugins.module_utils import cache, spec

# The waits a task may spend, one source for each default (instance.Timeouts, the modules).
START_TIMEOUT = dict(type="float", default=30.0)
SHUTDOWN_TIMEOUT = dict(type="float", default=60.0)
UNPLUG_TIMEOUT = dict(type="float", default=5.0)
JOB_TIMEOUT = dict(type="float", default=600.0)
QMP_TIMEOUT = dict(type="float", default=10.0)

# Which instance and how to reach it (doc fragment blocklayer.qemu.instance).
INSTANCE_OPTIONS = dict(
    name=dict(type="str", required=True),
    state_dir=dict(type="path", required=True),
    qmp_timeout=QMP_TIMEOUT,
    lock_timeout=dict(type="float", default=120.0),
)

DISK_OPTIONS = dict(
    name=dict(type="str", required=True),
    uuid=dict(type="str"),
    path=dict(type="path", required=True),
    format=dict(type="str", choices=list(spec.FORMATS), default="raw"),
    size=dict(type="raw"),
    share_rw=dict(type="bool", default=False),
    force_share=dict(type="bool", default=False),
    mode=dict(type="str", choices=list(spec.MODES), default="rw"),
    disk_type=dict(type="str", choices=list(spec.DISK_TYPES)),
    cache=dict(type="str", choices=list(cache.CACHE_MODES)),
    aio=dict(type="str", choices=list(cache.AIO_MODES)),
    discard=dict(type="str", choices=list(cache.DISCARD_MODES)),
    detect_zeroes=dict(type="str", choices=list(cache.DETECT_ZEROES_MODES)),
    serial=dict(type="str"),
    iothread=dict(type="bool", default=False),
    limits=dict(type="dict", options=dict((f, dict(type="int")) for f in spec.THROTTLE_FIELDS)),
    throttle_group=dict(type="str"),
)
# qemu_instance's shared throttle groups (docs/design.md "Throttling").
THROTTLE_GROUP_OPTIONS = dict(
    name=dict(type="str", required=True),
    limits=DISK_OPTIONS["limits"],
)
CDROM_OPTIONS = dict(
    name=dict(type="str", required=True),
    uuid=dict(type="str"),
    path=dict(type="str"),
)
FLOPPY_OPTIONS = dict(
    name=dict(type="str", default="floppy"),
    uuid=dict(type="str"),
    path=dict(type="path"),
)
NIC_OPTIONS = dict(
    name=dict(type="str", required=True),
    uuid=dict(type="str"),
    nic_type=dict(type="str", choices=list(spec.NIC_TYPES)),
    mac=dict(type="str"),
    netdev=dict(type="str", choices=list(spec.NETDEV_TYPES), default="user"),
    ifname=dict(type="str"),
    bridge=dict(type="str"),
)
DEVICE_OPTIONS = {"disk": DISK_OPTIONS, "cdrom": CDROM_OPTIONS, "floppy": FLOPPY_OPTIONS, "nic": NIC_OPTIONS}
# Where each kind lives in qemu_instance's parameters.
DEVICE_GROUPS = {kind: spec.OPTION_GROUPS[kind] for kind in DEVICE_OPTIONS}

LIVE_OPTIONS = dict(
    unplug_timeout=UNPLUG_TIMEOUT,
    allow_boot_unplug=dict(type="bool", default=False),
)


def check_paths(argument_spec: dict, params: dict, prefix: str = "") -> None:
    """Every path option of a module (``type: path``, ``elements: path`` and each ``path``, in
    lists and sub-options too) must be absolute (spec.absolute), checked before anything runs:
    the error names the option instead of QEMU's message about a file it did not find."""
    for option, option_spec in argument_spec.items():
        value = (params or {}).get(option)
        if value is None:
            continue
        what = prefix + option
        if option_spec.get("type") == "path" or (option == "path" and isinstance(value, str)):
            spec.absolute(value, what)
        elif option_spec.get("elements") == "path":
            for index, item in enumerate(value):
                spec.absolute(item, "%s[%d]" % (what, index))
        elif option_spec.get("options") and isinstance(value, (list, dict)):
            for index, item in enumerate(value if isinstance(value, list) else [value]):
                label = what if isinstance(value, dict) else "%s[%s]" % (what, (item or {}).get("name") or index)
                check_paths(option_spec["options"], item, label + ".")
