# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Device IDs and node names (design-scsi-kvm "How to identify each device?")."""

from __future__ import annotations

import re
import uuid

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

KINDS = ("disk", "cdrom", "floppy", "nic", "controller")

# QEMU keeps node names in a char[32] (block.c:bdrv_assign_node_name): at most 31 characters.
NODE_NAME_MAX = 31
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9._-]*\Z")

# Namespace for instance UUIDs derived from an instance name, so that an instance declared
# without a UUID keeps the same one (and so the same device IDs) on every run.
INSTANCE_NAMESPACE = uuid.UUID("6f1d3c52-7a0e-4c8b-9d5e-2b8f1a4c7e90")


def is_identifier(text: str) -> bool:
    """QEMU's id_wellformed(): a letter, then letters, digits, '-', '.' or '_'."""
    return bool(_IDENTIFIER.match(text))


def canonical_uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise ConfigError(
            "%s: %r is not a UUID; give one like 9e7c85f6-b6e5-4243-b27d-680b78c6d203 "
            "or leave it out to get a stable one" % (what, value)
        ) from None


def instance_uuid(name: str) -> str:
    return str(uuid.uuid5(INSTANCE_NAMESPACE, name))


def device_uuid(instance: str, kind: str, name: str) -> str:
    """A stable UUID for a device declared without one: uuid5(instance UUID, kind and name)."""
    return str(uuid.uuid5(uuid.UUID(instance), "%s:%s" % (kind, name)))


def device_id(kind: str, device_uuid_: str) -> str:
    """``<kind>-<first three groups of the UUID>``, e.g. ``disk-9e7c85f6-b6e5-4243``."""
    if kind not in KINDS:
        raise ValueError("unknown device kind %r" % kind)
    return "%s-%s" % (kind, "-".join(str(uuid.UUID(device_uuid_)).split("-")[:3]))


def node_name(dev_id: str, role: str) -> str:
    """The name of one node of a device's chain, e.g. ``disk-9e7c85f6-b6e5-4243.fmt``."""
    name = "%s.%s" % (dev_id, role)
    check_node_name(name)
    return name


def iothread_id(dev_id: str) -> str:
    """The id of a device's own iothread object, ``<device id>.io`` (QEMU's object ids must pass
    id_wellformed(), as device ids do), e.g. ``disk-9e7c85f6-b6e5-4243.io`` or ``scsi.io``."""
    name = dev_id + ".io"
    if not is_identifier(name):
        raise ValueError("%r is not a QEMU identifier" % name)
    return name


def check_node_name(name: str) -> None:
    if len(name) > NODE_NAME_MAX:
        raise ConfigError(
            "node name %r is %d characters; QEMU allows at most %d" % (name, len(name), NODE_NAME_MAX)
        )
    if not is_identifier(name):
        raise ConfigError(
            "node name %r is not valid: it must start with a letter and contain only "
            "letters, digits, '-', '.' and '_'" % name
        )


# Names users give to devices end up in error messages and in the runtime file, not in QEMU,
# but keep them to a safe, readable alphabet all the same.
_DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}\Z")


def check_device_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not _DEVICE_NAME.match(name):
        raise ConfigError(
            "%s: name %r is not valid; use 1 to 63 letters, digits, '-', '.' or '_', "
            "starting with a letter or digit" % (what, name)
        )
    return name


# The collection's own name space in QEMU (docs/design.md "Names"): device ids
# ``<kind>-<first three UUID groups>`` and node names ``<device id>.<role>[<generation>]``.
# A generation number counts the chains a device has had (a medium change, later an overlay):
# the first has none, so format-1 names stay valid.
_OWN_DEVICE_ID = re.compile(r"(disk|cdrom|floppy|nic)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}\Z")
_OWN_NODE_NAME = re.compile(
    r"(?P<id>(disk|cdrom|floppy)-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4})\.(?P<role>[a-z]+?)(?P<gen>[0-9]*)\Z")
# Top-down order of roles within one generation: filter, format, storage.
_ROLE_DEPTH = {"thr": 0, "fmt": 1, "stor": 2}


def is_own_device_id(dev_id: str) -> bool:
    return bool(_OWN_DEVICE_ID.match(dev_id))


def is_own_netdev(name: str) -> bool:
    """A NIC's host side is ``<nic id>.net`` (devices.netdev_props)."""
    return name.endswith(".net") and name.startswith("nic-") and is_own_device_id(name[:-len(".net")])


def own_node(name: str):
    """``(device id, role, generation)`` of a node name in the collection's name space, else None."""
    match = _OWN_NODE_NAME.match(name)
    if not match:
        return None
    return match.group("id"), match.group("role"), int(match.group("gen") or 1)


def top_down(names) -> list:
    """Node names of the collection ordered so that each comes before the nodes below it."""
    def depth(name):
        _dev, role, gen = own_node(name) or ("", "", 0)
        return (-gen, _ROLE_DEPTH.get(role, 3), name)
    return sorted(names, key=depth)
