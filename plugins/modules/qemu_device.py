#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: qemu_device
short_description: Add, change or remove one device of a running QEMU instance
version_added: 0.2.0
description:
  - Makes one disk, CD-ROM, floppy or NIC of a running instance (started by
    M(blocklayer.qemu.qemu_instance)) present or absent, live.
  - It takes the declaration recorded in the instance's runtime file, changes this one device in
    it, and converges exactly as M(blocklayer.qemu.qemu_instance) does, with the same planner,
    hot-plug sequences, rollback and runtime file.
  - Disks and NICs are hot-plugged and hot-unplugged; a changed CD-ROM or floppy C(path) in O(device)
    is a media change (left out, the drive is emptied). What cannot change live (an IDE disk,
    adding or removing a CD-ROM or floppy drive, options of an attached disk) fails and names
    why; use M(blocklayer.qemu.qemu_instance) with C(allow_restart) for those.
  - A disk declared with C(iothread=true) (virtio-blk only) is hot-plugged with an iothread of its
    own (C(object-add) before C(device_add)), which is deleted once the disk is gone.
  - A disk's C(limits) and C(throttle_group) change live (see
    O(blocklayer.qemu.qemu_instance#module:disks[].limits)). C(throttle_group) names a group of
    O(blocklayer.qemu.qemu_instance#module:throttle_groups) as the runtime file records it; a group
    that is not recorded fails naming the disk and the group.
author:
  - blocklayer.qemu developers (@blocklayer)
extends_documentation_fragment:
  - blocklayer.qemu.instance
options:
  kind:
    description: What the device is.
    type: str
    choices: [disk, cdrom, floppy, nic]
    required: true
  device:
    description:
      - The device, with the options of one item of M(blocklayer.qemu.qemu_instance)'s
        O(blocklayer.qemu.qemu_instance#module:disks), O(blocklayer.qemu.qemu_instance#module:cdroms),
        O(blocklayer.qemu.qemu_instance#module:nics) or
        O(blocklayer.qemu.qemu_instance#module:floppy), as O(kind) says.
      - It is found by its C(name); with O(state=present) it replaces the recorded device of that name.
    type: dict
    required: true
  state:
    description: Whether the device is attached.
    type: str
    choices: [present, absent]
    default: present
  persistent:
    description:
      - Whether the device is part of the instance until it is removed, or attached live only. As
        C(virsh attach-device), V(true) (the default) is C(--live --config), V(false) is C(--live)
        alone.
      - V(true) - the device stays across O(blocklayer.qemu.qemu_instance#module:state=stopped) and
        V(running), a restart (O(blocklayer.qemu.qemu_instance#module:allow_restart)), a migration
        and a QEMU found dead (a host reboot), until this module removes it or
        M(blocklayer.qemu.qemu_instance) is run with
        O(blocklayer.qemu.qemu_instance#module:purge_undeclared=true).
      - V(false) - the device stays while this QEMU runs (M(blocklayer.qemu.qemu_instance) keeps it,
        and so do a restart and a migration), but the next start of the stopped instance does not
        bring it back.
      - Taken when this task attaches the device. For a device attached already, a task asking the
        other value fails and says how to change it (remove it, then add it again). Only with
        O(state=present).
    type: bool
    version_added: 0.3.0
    default: true
  allow_boot_unplug:
    description:
      - Unplugging the device the guest boots from (the one given a C(bootindex) at start - the
        first disk with C(boot_order=disk), the first NIC with C(boot_order=network)) fails unless
        this is V(true). Hot-plugged devices have no C(bootindex), and an instance started with
        C(kernel_path) boots its kernel, not a device.
    type: bool
    version_added: 0.3.0
    default: false
  unplug_timeout:
    description:
      - Seconds to wait for the guest to release an unplugged device (C(DEVICE_DELETED)). A device
        not released by then is recorded C(unplug-pending) and removed by a later run.
    type: float
    default: 5
notes:
  - lsi and megasas do not signal hot-plugged disks to a Linux guest, which must rescan its SCSI
    host to see them; virtio-scsi-pci does. Such a hot-plug succeeds with a warning that says so.
  - Every path in O(device) must be absolute; a relative one fails before anything runs.
seealso:
  - module: blocklayer.qemu.qemu_instance
"""

EXAMPLES = r"""
- name: Hot-plug a data disk on the instance's SCSI controller
  blocklayer.qemu.qemu_device:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    kind: disk
    device:
      name: scratch
      path: /srv/images/web1-scratch.qcow2
      format: qcow2
      disk_type: scsi-hd
      cache: none

- name: Insert another ISO in the CD-ROM drive
  blocklayer.qemu.qemu_device:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    kind: cdrom
    device:
      name: installer
      path: /srv/iso/rescue.iso

- name: Limit the disk to 200 IOPS, live (0 or leaving a limit out removes it)
  blocklayer.qemu.qemu_device:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    kind: disk
    device:
      name: scratch
      path: /srv/images/web1-scratch.qcow2
      format: qcow2
      disk_type: scsi-hd
      cache: none
      limits:
        iops_total: 200

- name: Add a scratch disk for this boot only (virsh attach-device --live); the next start leaves it out
  blocklayer.qemu.qemu_device:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    kind: disk
    persistent: false
    device:
      name: tmp
      path: /srv/images/web1-tmp.raw
      disk_type: scsi-hd

- name: Unplug the disk again (the guest gets ten seconds)
  blocklayer.qemu.qemu_device:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    kind: disk
    device:
      name: scratch
    state: absent
    unplug_timeout: 10
"""

RETURN = r"""
actions:
  description: What the task did (or would do in check mode), in order.
  returned: always
  type: list
  elements: dict
  sample: [{"action": "attach", "kind": "disk", "name": "scratch", "id": "disk-9e7c85f6-b6e5-4243"}]
qmp_commands:
  description: The QMP commands sent, with their arguments; in check mode the ones that would be sent.
  returned: always
  type: list
  elements: dict
device:
  description: hvinfo of the device (driver, id, bus and address), when it is present.
  returned: always
  type: dict
  sample: {"driver": "scsi-hd", "id": "disk-9e7c85f6-b6e5-4243", "bus": "scsi.0", "channel": 0, "scsi-id": 1, "lun": 0}
devices:
  description: Device id -> hvinfo of every device of the instance.
  returned: always
  type: dict
unplug_pending:
  description: Ids of devices whose unplug the guest has not completed yet.
  returned: always
  type: list
  elements: str
qemu_error:
  description:
    - On a failure QEMU reported over QMP, QEMU's own description of the error (the C(desc) of its
      error reply), for a task that handles one error of QEMU's differently (C(failed_when)).
    - Empty when the failure was not a QMP error reply (bad input, a QEMU that exited or did not
      start); not returned for an internal error of the collection.
  returned: failure
  type: str
  sample: "Duplicate nodes with node-name='disk-9e7c85f6-b6e5-4243.fmt'"
qemu_error_class:
  description:
    - On a failure QEMU reported over QMP, the C(class) of its error reply, for example
      C(GenericError) or C(DeviceNotFound).
    - Empty when the failure was not a QMP error reply; not returned for an internal error of the
      collection.
  returned: failure
  type: str
  sample: GenericError
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # noqa: E402

# First of the collection's: under Ansible the others then load compiled (docs/design.md "Speed").
from ansible_collections.blocklayer.qemu.plugins.module_utils import bytecode  # noqa: E402,F401 pylint: disable=unused-import
from ansible_collections.blocklayer.qemu.plugins.module_utils import args, plan, spec  # noqa: E402
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError  # noqa: E402
from ansible_collections.blocklayer.qemu.plugins.module_utils.task import Task  # noqa: E402

ARGUMENT_SPEC = dict(
    args.INSTANCE_OPTIONS,
    kind=dict(type="str", choices=list(args.DEVICE_OPTIONS), required=True),
    device=dict(type="dict", required=True),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    persistent=dict(type="bool", default=True),
    **args.LIVE_OPTIONS,
)


def declared_device(kind: str, device: dict, state: str) -> dict:
    """The device options, checked against the same spec qemu_instance uses for its kind."""
    options = args.DEVICE_OPTIONS[kind]
    if state == "absent":  # only the name is needed to remove a device
        options = {"name": dict(options["name"], required=kind != "floppy")}
        device = {"name": device.get("name")} if kind != "floppy" else {}
    result = ArgumentSpecValidator(options).validate(device)
    if result.error_messages:
        raise ConfigError("device: %s" % "; ".join(result.error_messages))
    args.check_paths(options, result.validated_parameters, "device.")
    return result.validated_parameters


def check_persistent(layout, kind: str, device: dict, state: str, persistent: bool) -> None:
    """``persistent: false`` (virsh attach-device --live without --config) is a property of the
    attach: it is taken when this task attaches the device, and refused where it cannot hold."""
    label = "floppy" if kind == "floppy" else "%s[%s]" % (args.DEVICE_GROUPS[kind], device["name"])
    if state == "absent":
        if not persistent:
            raise ConfigError("persistent: false is for state: present (attach live only); state: absent removes "
                              "%s for good, except that qemu_instance attaches again what it declares" % label)
        return
    record = next((r for r in layout.devices if r["kind"] == kind and r["name"] == device.get("name")), None)
    if record is None or (record.get("persistent") is not False) == persistent:
        return
    if persistent:
        raise ConfigError("%s is attached live only (persistent: false), so the next start does not bring it back; "
                          "persistent applies when a task attaches the device: give persistent: false to change it "
                          "live, or remove it (state: absent) and add it again to keep it" % label)
    raise ConfigError("%s is attached already and the next start brings it back; persistent: false applies when a "
                      "task attaches the device: remove it first (state: absent), or leave persistent out" % label)


def with_device(declaration: dict, kind: str, device: dict, state: str) -> dict:
    """The recorded declaration as qemu_instance parameters, with this one device changed."""
    params = spec.params_from_declaration(declaration)
    group = args.DEVICE_GROUPS[kind]
    if kind == "floppy":
        params[group] = device if state == "present" else None
        return params
    kept = [item for item in params[group] if item["name"] != device["name"]]
    if state == "present":
        old = next((i for i, item in enumerate(params[group]) if item["name"] == device["name"]), len(kept))
        kept.insert(old, device)  # keep the guest-visible order
    params[group] = kept
    return params


def converge(task: Task) -> dict:
    params = task.module.params
    device = declared_device(params["kind"], params["device"], params["state"])
    instance = task.open_running_instance()
    check_persistent(instance.rt.layout, params["kind"], device, params["state"], params["persistent"])
    desired = spec.instance_from(with_device(instance.rt.layout.declaration, params["kind"], device,
                                             params["state"]))
    result = instance.ensure_running(desired, allow_restart=False, owner=plan.OWNER_DEVICE,
                                     persistent=params["persistent"], allow_boot_unplug=params["allow_boot_unplug"])
    label = "floppy" if params["kind"] == "floppy" else "%s[%s]" % (args.DEVICE_GROUPS[params["kind"]], device["name"])
    entry = result["diff"]["after"].get("devices", {}).get(label)
    result["device"] = result["devices"][entry["id"]] if entry else {}
    return result


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    Task(module).run(converge)


if __name__ == "__main__":
    main()
