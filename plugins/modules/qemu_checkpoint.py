#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: qemu_checkpoint
short_description: Checkpoints (persistent dirty bitmaps) of the disks of a running QEMU instance
version_added: 0.3.0
description:
  - Creates, deletes and lists the checkpoints of the disks of a running instance (started by
    M(blocklayer.qemu.qemu_instance)) - what libvirt calls C(checkpoint-create) and
    C(checkpoint-delete). A checkpoint marks a point in time; an incremental backup
    (M(blocklayer.qemu.qemu_backup)) copies only what the guest wrote since one.
  - A checkpoint is a dirty bitmap on the disk's top image, persistent in the qcow2 file (it
    survives a stop and a start of the instance), recorded in the instance's runtime file. Only the
    newest checkpoint records writes; a new one takes over from the one before it in the same
    QMP C(transaction), and the checkpoints of several disks are made in that one transaction, at
    one point in time.
  - Deleting a checkpoint merges its bitmap into the one before it, in the transaction that removes
    it, so an incremental backup since that earlier checkpoint still copies everything.
  - A raw image cannot hold a persistent bitmap - a checkpoint there is refused unless
    O(persistent=false), and such a checkpoint is gone once QEMU stops.
  - Creating a checkpoint the disks have, or deleting one they do not have, changes nothing.
author:
  - blocklayer.qemu developers (@blocklayer)
extends_documentation_fragment:
  - blocklayer.qemu.instance
options:
  checkpoint:
    description:
      - The checkpoint's name - 1 to 63 letters, digits, C(_), C(.), C(:) or C(-), starting with a
        letter or digit. Left out, the task only lists the checkpoints.
    type: str
  state:
    description: V(present) creates the checkpoint, V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  disks:
    description:
      - The declared names of the disks; default every disk with an image that is not read-only.
    type: list
    elements: str
  persistent:
    description:
      - Store the bitmap in the qcow2 image, so the checkpoint survives a stop. V(false) keeps it in
        QEMU's memory only (the only kind a raw image can have).
    type: bool
    default: true
notes:
  - Supports check mode (the plan and the QMP commands it would send) and diff mode (the
    checkpoints of each disk before and after).
  - A snapshot, commit or mirror of a disk (M(blocklayer.qemu.qemu_blockdev)) does not carry its
    checkpoints yet - after one, take a full backup.
seealso:
  - module: blocklayer.qemu.qemu_backup
  - module: blocklayer.qemu.qemu_blockdev
"""

EXAMPLES = r"""
- name: A checkpoint of every disk of web1, at one point in time
  blocklayer.qemu.qemu_checkpoint:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    checkpoint: before-upgrade

- name: List the checkpoints
  blocklayer.qemu.qemu_checkpoint:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
  register: history

- name: Delete one (what it held is kept in the one before it)
  blocklayer.qemu.qemu_checkpoint:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    checkpoint: before-upgrade
    state: absent
"""

RETURN = r"""
actions:
  description: What the task did (or would do in check mode), one item per disk.
  returned: always
  type: list
  elements: dict
  sample: [{"action": "checkpoint", "kind": "disk", "name": "root", "id": "disk-9e7c85f6-b6e5-4243",
            "reason": "checkpoint before-upgrade (persistent dirty bitmap on disk-9e7c85f6-b6e5-4243.fmt)"}]
qmp_commands:
  description: The QMP commands sent, with their arguments; in check mode the ones that would be sent.
  returned: always
  type: list
  elements: dict
checkpoints:
  description:
    - Every checkpoint of the instance's disks after the task, oldest first per disk - C(disk),
      C(name), C(node) (the QEMU node of its bitmap), C(created) (UTC), C(persistent), C(backup)
      (the file of the backup that created it, if one did), and from QEMU C(present), C(count) (bytes
      written between it and the next checkpoint), C(recording) and C(inconsistent).
  returned: always
  type: list
  elements: dict
  sample: [{"disk": "root", "name": "before-upgrade", "node": "disk-9e7c85f6-b6e5-4243.fmt",
            "created": "2026-12-08T02:30:00Z", "persistent": true, "present": true, "count": 65536,
            "recording": true, "inconsistent": false}]
qemu_error:
  description: On a failure QEMU reported over QMP, QEMU's own description of the error.
  returned: failure
  type: str
qemu_error_class:
  description: On a failure QEMU reported over QMP, the C(class) of its error reply.
  returned: failure
  type: str
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402

from ansible_collections.blocklayer.qemu.plugins.module_utils import bytecode  # noqa: E402,F401 pylint: disable=unused-import
from ansible_collections.blocklayer.qemu.plugins.module_utils import args  # noqa: E402
from ansible_collections.blocklayer.qemu.plugins.module_utils.task import Task  # noqa: E402

ARGUMENT_SPEC = dict(
    args.INSTANCE_OPTIONS,
    checkpoint=dict(type="str"),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    disks=dict(type="list", elements="str"),
    persistent=dict(type="bool", default=True),
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    from ansible_collections.blocklayer.qemu.plugins.module_utils import backupops  # after the argument check
    Task(module).run(backupops.converge_checkpoint)


if __name__ == "__main__":
    main()
