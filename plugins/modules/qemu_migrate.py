#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: qemu_migrate
short_description: Live-migrate a running QEMU instance to another host, one step at a time
version_added: 0.2.0
description:
  - Moves a running instance (started by M(blocklayer.qemu.qemu_instance)) to a QEMU on another
    host, while the guest runs, on storage both hosts see. Each task runs one O(step), on the host
    the step names; the role C(blocklayer.qemu.migrate) runs them in order.
  - O(step=export) (source) returns the guest layout of the instance's runtime file - every device
    as it is now, hot-plugged ones, overlays of snapshots and media included - and the source's
    QEMU version. It refuses an instance that is not running, has a device the guest has not
    released (unplug-pending), or has a block job or an unfinished action in its journal.
  - Disks started with C(-drive) (an adopted QEMU, or a format 0 or 1 runtime file) are exported as
    the C(<id>.stor)/C(<id>.fmt) C(-blockdev) nodes of the image QEMU has open, with the device's id,
    address and properties unchanged, so the instance becomes a C(-blockdev) instance on the target
    without a reboot. A C(-drive) disk that cannot be converted faithfully (I/O limits set with
    C(-drive), C(snapshot=on), a format other than raw and qcow2, an encrypted image) is refused,
    naming the device.
  - O(step=prepare) (target) starts a QEMU with C(-incoming defer) from that layout, re-bound to this
    host (binary, firmware, accelerator; paths through O(path_map)), with the source's versioned
    machine type (for example C(pc-i440fx-7.2)) and CPU model, checks that it has every device,
    and makes it listen (O(listen)). Its runtime file says C(incoming). A target that cannot start
    fails naming QEMU's reason and leaves no QEMU and no runtime file.
  - O(step=migrate) (source) sends the guest to O(uri) and waits for QEMU's C(MIGRATION) events. On
    success it quits the source QEMU and marks its runtime file C(migrated) (M(blocklayer.qemu.qemu_instance)
    then refuses to start the instance on this host). On failure or O(timeout) the migration is
    cancelled, the source runs on (QEMU resumes it; C(cont) is sent only if it did not), its runtime
    file is unchanged, and the task fails with QEMU's C(error-desc).
  - O(step=finish) (target) waits until the guest runs there (C(RESUME)); a guest that was paused on
    the source is sent C(cont). Its runtime file then says C(running) and the instance is managed
    here. O(step=abort) (target) ends a target QEMU whose migration failed and removes its runtime file.
  - Between QEMU versions (7.2 and 10.0, either way) the instance must have been started with a
    recorded versioned machine type and a named CPU model, which this collection does since this
    module exists; older instances migrate only to the same QEMU version.
author:
  - blocklayer.qemu developers (@blocklayer)
extends_documentation_fragment:
  - blocklayer.qemu.instance
options:
  step:
    description: Which step of the migration to run (see the description); each runs on its own host.
    type: str
    choices: [export, prepare, migrate, finish, abort]
    required: true
  layout:
    description: For O(step=prepare), the RV(layout) that O(step=export) returned on the source.
    type: dict
  source:
    description:
      - For O(step=prepare), the RV(source) that O(step=export) returned - the source's QEMU
        C(version), C(accel) and C(rings). Without it the target refuses an instance whose machine type or CPU
        is not pinned, since it cannot tell whether the versions match.
    type: dict
  path_map:
    description:
      - For O(step=prepare), source path prefix -> target path prefix, for storage mounted elsewhere on
        the target; applied to every image of the layout, kernel and initrd. The longest prefix wins.
    type: dict
    default: {}
  listen:
    description:
      - For O(step=prepare), where the target listens - a unix socket path (or C(unix:PATH)), or
        C(HOST:PORT) (or C(tcp:HOST:PORT)) with HOST an address of the target the source can reach.
      - Default a unix socket in O(state_dir) - only useful when both QEMUs run on one machine.
    type: str
  qemu_binary:
    description: For O(step=prepare), the target's QEMU binary (name or path).
    type: str
    default: qemu-system-x86_64
  qemu_firmware_dirs:
    description: For O(step=prepare), as O(blocklayer.qemu.qemu_instance#module:qemu_firmware_dirs).
    type: list
    elements: path
  qemu_module_dir:
    description: For O(step=prepare), as O(blocklayer.qemu.qemu_instance#module:qemu_module_dir).
    type: path
  accel:
    description: For O(step=prepare), the target's accelerator; default the source's (RV(source)).
    type: str
    choices: [auto, kvm, tcg]
  uri:
    description: For O(step=migrate), the RV(uri) that O(step=prepare) returned on the target.
    type: str
  timeout:
    description:
      - For O(step=migrate), seconds to wait for the migration to complete before it is cancelled;
        for O(step=finish), seconds to wait for the guest to run on the target.
    type: float
    default: 300
  start_timeout:
    description: For O(step=prepare), seconds the target QEMU may take to start.
    type: float
    default: 30
attributes:
  check_mode:
    support: partial
    details: O(step=export) runs as usual; the other steps report the action and change nothing.
  diff_mode:
    support: full
    details: The diff is the instance's status on this host (its runtime file) before and after the step.
notes:
  - Both hosts must see the same images (shared storage); the source holds the image locks until
    the switch-over, the target from then on, so a guest never runs twice.
  - QEMU's C(events) and C(return-path) capabilities are enabled on both sides, so the source
    learns when the target rejects the device state and resumes instead of reporting success.
seealso:
  - module: blocklayer.qemu.qemu_instance
  - module: blocklayer.qemu.qemu_blockdev
"""

EXAMPLES = r"""
- name: Export the guest layout on the source
  blocklayer.qemu.qemu_migrate:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    step: export
  delegate_to: hv1
  register: exported

- name: Start the target, listening on its migration address
  blocklayer.qemu.qemu_migrate:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    step: prepare
    layout: "{{ exported.layout }}"
    source: "{{ exported.source }}"
    path_map:
      /srv/images: /mnt/san/images
    listen: 192.0.2.12:4444
  delegate_to: hv2
  register: prepared

- name: Send the guest
  blocklayer.qemu.qemu_migrate:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    step: migrate
    uri: "{{ prepared.uri }}"
    timeout: 120
  delegate_to: hv1

- name: Or, for a large guest, send it in the background - Ansible polls every 10 seconds, up to an hour
  blocklayer.qemu.qemu_migrate:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    step: migrate
    uri: "{{ prepared.uri }}"
    timeout: 3600
  delegate_to: hv1
  async: 3600
  poll: 10
  register: sent

- name: Take over on the target
  blocklayer.qemu.qemu_migrate:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    step: finish
  delegate_to: hv2
"""

RETURN = r"""
actions:
  description: What the task did (or would do in check mode), in order.
  returned: always
  type: list
  elements: dict
  sample: [{"action": "migrate", "uri": "tcp:192.0.2.12:4444"}, {"action": "retire-source", "reason": "..."}]
qmp_commands:
  description: The QMP commands sent, with their arguments.
  returned: always
  type: list
  elements: dict
layout:
  description: The guest layout of the runtime file (see the collection's docs/runtime-file.md).
  returned: step export
  type: dict
source:
  description:
    - The source's QEMU C(version) and C(accel), and C(rings) (device id -> the virtqueue size the source runs,
      for each virtio-blk and virtio-scsi device, when its QEMU reports it), which the target's devices start with.
  returned: step export
  type: dict
  sample: {"version": "10.0.13", "accel": "tcg", "rings": {"disk-a217152a-30ea-5802": 1024}}
uri:
  description: The migration URI the target listens on.
  returned: step prepare
  type: str
  sample: tcp:192.0.2.12:4444
argv:
  description: The target QEMU's command line.
  returned: step prepare
  type: list
  elements: str
pid:
  description: The pid of the target QEMU.
  returned: steps prepare and finish
  type: int
status:
  description: C(completed) after O(step=migrate), C(running) after O(step=finish).
  returned: steps migrate and finish
  type: str
total_time:
  description: Milliseconds the migration took, as the source's C(query-migrate) reports it.
  returned: step migrate
  type: int
downtime:
  description: Milliseconds the guest was stopped for the switch-over, from C(query-migrate).
  returned: step migrate
  type: int
ram:
  description:
    - The guest memory sent, from the source's C(query-migrate) - C(transferred), C(total) and
      C(remaining) bytes. A migration that times out names how far it got in its message.
  returned: step migrate
  type: dict
  sample: {"transferred": 270532608, "total": 285212672, "remaining": 0}
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

# First of the collection's: under Ansible the others then load compiled (docs/design.md "Speed").
from ansible_collections.blocklayer.qemu.plugins.module_utils import bytecode  # noqa: E402,F401 pylint: disable=unused-import
from ansible_collections.blocklayer.qemu.plugins.module_utils import args  # noqa: E402
from ansible_collections.blocklayer.qemu.plugins.module_utils.task import Task  # noqa: E402

ARGUMENT_SPEC = dict(
    args.INSTANCE_OPTIONS,
    step=dict(type="str", choices=["export", "prepare", "migrate", "finish", "abort"], required=True),
    layout=dict(type="dict"),
    source=dict(type="dict"),
    path_map=dict(type="dict", default={}),
    listen=dict(type="str"),
    qemu_binary=dict(type="str", default="qemu-system-x86_64"),
    qemu_firmware_dirs=dict(type="list", elements="path"),
    qemu_module_dir=dict(type="path"),
    accel=dict(type="str", choices=["auto", "kvm", "tcg"]),
    uri=dict(type="str"),
    timeout=dict(type="float", default=300.0),
    start_timeout=args.START_TIMEOUT,
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           required_if=[("step", "prepare", ("layout",)), ("step", "migrate", ("uri",))])
    from ansible_collections.blocklayer.qemu.plugins.module_utils import migrate  # after the argument check
    Task(module).run(migrate.run, create_state_dir=module.params["step"] == "prepare")


if __name__ == "__main__":
    main()
