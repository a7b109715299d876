#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: qemu_backup
short_description: Full and incremental push backups of the disks of a running QEMU instance
version_added: 0.3.0
description:
  - Copies the disks of a running instance (started by M(blocklayer.qemu.qemu_instance)) into new
    qcow2 files while the guest runs - what libvirt calls C(backup-begin) in push mode. All the disks
    the task names are copied as of one point in time - one QMP C(transaction) starts a
    C(blockdev-backup) job per disk, with C(completion-mode=grouped) (they succeed or fail together).
  - Each backup creates a checkpoint (M(blocklayer.qemu.qemu_checkpoint)) at its point in time, in
    that same transaction, so that the next incremental backup has its base.
  - V(full) copies the whole disk. V(incremental) copies only what the guest wrote since the
    checkpoint O(since) - the merge of its bitmap and every later one - into a qcow2 file whose
    backing file is the backup that created O(since), so the chain of backup files restores
    (C(qemu-img convert) of the newest file, see the collection's docs/backup.md).
  - A backup file is created exclusively - an existing file is refused, never changed. A failed or
    cancelled backup removes the file it created, its checkpoint and its target node; the disk and
    its other checkpoints stay as they were.
  - A re-run whose O(checkpoint) is the checkpoint of a backup into the same file changes nothing.
author:
  - blocklayer.qemu developers (@blocklayer)
extends_documentation_fragment:
  - blocklayer.qemu.instance
options:
  checkpoint:
    description:
      - The name of the checkpoint the backup creates (1 to 63 letters, digits, C(_), C(.), C(:) or
        C(-), starting with a letter or digit); a later incremental backup names it as O(since).
    type: str
    required: true
  mode:
    description: V(full) copies everything, V(incremental) what changed since O(since).
    type: str
    choices: [full, incremental]
    default: full
  since:
    description:
      - With O(mode=incremental) - the checkpoint to copy the changes since. Any checkpoint of the
        disks may be named; its bitmap and every later one must be in QEMU and consistent, on the
        disk's current top image, else the task fails and asks for a full backup.
    type: str
  disks:
    description:
      - The declared names of the disks to back up; default every disk with an image that is not
        read-only.
    type: list
    elements: str
  target_dir:
    description:
      - The directory of the backup files, named C(<name>-<disk>-<checkpoint>.qcow2).
    type: path
  targets:
    description:
      - A backup file per disk (declared disk name -> absolute path of a new file); a disk named here
        does not use O(target_dir).
    type: dict
  persistent:
    description:
      - Whether the checkpoint the backup creates is stored in the qcow2 image (it survives a stop).
        V(false) for a raw image, whose checkpoints last only while QEMU runs.
    type: bool
    default: true
  job_timeout:
    description:
      - Seconds a backup job may go without a status change or progress before the task returns
        and leaves it running (a later run finishes it).
    type: float
    default: 600
notes:
  - Supports check mode (the plan and the QMP commands it would send) and diff mode (the
    checkpoints of each disk before and after).
  - Pull backups over NBD and checkpoints carried through snapshots, commits and migrations are not
    there yet.
seealso:
  - module: blocklayer.qemu.qemu_checkpoint
  - module: blocklayer.qemu.qemu_blockdev
"""

EXAMPLES = r"""
- name: Sunday - a full backup of every disk of web1
  blocklayer.qemu.qemu_backup:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    checkpoint: "full-{{ ansible_date_time.date }}"
    target_dir: /srv/backup/web1

- name: Every other day - what changed since the last backup, chained onto it
  blocklayer.qemu.qemu_backup:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    mode: incremental
    since: "{{ last_checkpoint }}"
    checkpoint: "inc-{{ ansible_date_time.date }}"
    target_dir: /srv/backup/web1
  register: done

- name: Log what it copied
  ansible.builtin.debug:
    msg: "{{ done.backups | map(attribute='dirty') | list }}"
"""

RETURN = r"""
actions:
  description: What the task did (or would do in check mode), one item per disk.
  returned: always
  type: list
  elements: dict
  sample: [{"action": "backup", "kind": "disk", "name": "root", "id": "disk-9e7c85f6-b6e5-4243",
            "reason": "full backup to /srv/backup/web1/web1-root-full.qcow2", "job": "disk-9e7c85f6-b6e5-4243.backup"}]
qmp_commands:
  description: The QMP commands sent, with their arguments; in check mode the ones that would be sent.
  returned: always
  type: list
  elements: dict
backups:
  description:
    - Per disk backed up by this task - C(disk), C(id), C(target) (the file), C(checkpoint) (the one it
      created), C(mode), C(since), C(size) (the disk's virtual size), and once done C(result), C(copied)
      (the bytes the job copied, QEMU's count) and C(dirty) (C(X dirty of Y total)). Empty on a re-run.
  returned: always
  type: list
  elements: dict
  sample: [{"disk": "root", "id": "disk-9e7c85f6-b6e5-4243", "target": "/srv/backup/web1/web1-root-inc2.qcow2",
            "checkpoint": "inc2", "mode": "incremental", "since": "full1", "size": 10737418240,
            "result": "completed", "copied": 10420224, "dirty": "9.9 MiB dirty of 10.0 GiB total"}]
checkpoints:
  description: Every checkpoint of the instance's disks after the task (as M(blocklayer.qemu.qemu_checkpoint) returns them).
  returned: always
  type: list
  elements: dict
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
    checkpoint=dict(type="str", required=True),
    mode=dict(type="str", choices=["full", "incremental"], default="full"),
    since=dict(type="str"),
    disks=dict(type="list", elements="str"),
    target_dir=dict(type="path"),
    targets=dict(type="dict"),
    persistent=dict(type="bool", default=True),
    job_timeout=args.JOB_TIMEOUT,
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           required_if=[("mode", "incremental", ("since",))],
                           required_one_of=[("target_dir", "targets")])
    from ansible_collections.blocklayer.qemu.plugins.module_utils import backupops  # after the argument check
    Task(module).run(backupops.converge_backup)


if __name__ == "__main__":
    main()
