#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: qemu_blockdev
short_description: Snapshots, commit, stream, mirror and standalone nodes on a running QEMU instance
version_added: 0.2.0
description:
  - Changes the chain of images under one disk of a running instance (started by
    M(blocklayer.qemu.qemu_instance)) while the guest runs, with QEMU's block layer - what libvirt
    calls C(snapshot-create --disk-only), C(blockcommit), C(blockpull) and C(blockcopy --pivot).
  - A disk's chain is recorded in the instance's runtime file and survives a stop, a restart and a
    crash of QEMU - the next start rebuilds the current chain, never just the image first declared.
  - Each operation is idempotent - a snapshot onto the current top, a commit or stream with nothing
    left to fold, or a mirror to the image the disk is on already changes nothing.
  - Block jobs are started with a job id and a named filter node, C(auto-dismiss=false) and
    C(auto-finalize=false), driven by C(JOB_STATUS_CHANGE) events, their error read from
    C(query-jobs) and dismissed explicitly. A job still running when the task ends (O(wait=false),
    or O(job_timeout) without progress) is recorded, and a later run on the disk reports, finishes
    or cancels it.
  - A failed or cancelled job leaves the disk on its chain and says why. The images a disk no
    longer uses stay open in QEMU (and locked) until a run with O(delete_unused=true); image files
    are never deleted, except a file this task created for an operation that then failed.
  - With O(node) instead of O(disk) it opens (O(state=present)) or closes (O(state=absent)) a
    standalone node - an image no device uses, named C(<node>.fmt) over C(<node>.stor) - for
    example the target of a copy (O(mirror.node)). Such a node is recorded in the runtime file,
    opened again at every start, and closed only when a play asks, top-down; while a block job or
    another node uses it, closing is refused with QEMU's reason.
  - Every path option (O(path), O(snapshot.path), O(mirror.path), O(commit.top), O(commit.base),
    O(stream.base)) must be absolute; a relative one fails naming the option before anything runs.
author:
  - blocklayer.qemu developers (@blocklayer)
extends_documentation_fragment:
  - blocklayer.qemu.instance
options:
  disk:
    description:
      - The declared name of the disk (an item of O(blocklayer.qemu.qemu_instance#module:disks)).
      - Exactly one of O(disk) and O(node).
    type: str
  node:
    description:
      - The name of a standalone node to open or close (O(state)). QEMU's node names are
        C(<node>.fmt) (the format node, the one a job or an export uses) and C(<node>.stor).
      - A letter, then up to 25 letters, digits, C(-) or C(_); not starting like the collection's
        device ids (C(disk-), C(cdrom-), ...).
    type: str
  state:
    description:
      - With O(node) - V(present) opens the node on O(path) (a re-run with the same path, format
        and read-only is a no-op; another image under the same name is refused), V(absent) closes it
        (the file is kept). Default V(present). Not used with O(disk).
    type: str
    choices: [present, absent]
  path:
    description:
      - With O(node) - the node's image (absolute path). It may not be an image of a disk.
    type: path
  format:
    description: With O(node) - the image's format.
    type: str
    choices: [qcow2, raw]
    default: qcow2
  read_only:
    description: With O(node) - open the image read-only.
    type: bool
    default: false
  size:
    description:
      - With O(node) - create O(path) with this virtual size when it does not exist (C(qemu-img create),
        exclusively, never over an existing file), in bytes or with a binary unit (C(10G), C(512M)).
        An existing image must have this size (it is never resized).
    type: str
  snapshot:
    description:
      - Put a new qcow2 overlay on top of the disk - the guest keeps running and writes into the
        overlay from then on; the images below become read-only backing files.
    type: dict
    suboptions:
      path:
        description: The overlay image file (absolute path).
        type: path
        required: true
      create:
        description:
          - Create the overlay (C(qemu-img create -f qcow2 -b <top> -F <format>)); an existing file is
            refused, never changed.
          - With V(false) the file must exist already, as a qcow2 image whose backing file is the
            disk's current top image.
        type: bool
        default: true
  commit:
    description:
      - Fold images down into a lower one (C(block-commit)). An active commit (O(commit.top) left out,
        or the top image) moves the disk onto O(commit.base) once the copy is complete.
    type: dict
    suboptions:
      top:
        description: The highest image to fold (default - the active, top image).
        type: path
      base:
        description: The image to fold into (default - the bottom of the chain).
        type: path
  stream:
    description: Pull the images below the top into the top image (C(block-stream)).
    type: dict
    suboptions:
      base:
        description: The image to stop at, which stays below the top (default - pull everything).
        type: path
  mirror:
    description:
      - Copy the disk to a new image while the guest writes (C(blockdev-mirror), C(sync=full)) and
        then move the disk onto it; the device and its id stay, the guest does not see a change.
        A disk with I/O limits keeps its throttle filter (the copy replaces the image below it).
      - Or copy it into a standalone node (O(mirror.node)) and stay - a consistent copy as of the
        end of the job. A node holds one disk's copy; a re-run is a no-op (close the node and open it
        again for a new copy).
      - Exactly one of O(mirror.path) and O(mirror.node).
    type: dict
    suboptions:
      path:
        description: The target image (absolute path).
        type: path
      node:
        description:
          - A standalone node opened by an earlier task (O(node)), of the disk's size, to copy into.
            O(mirror.format) and O(mirror.create) do not apply, O(mirror.pivot) must not be V(true).
        type: str
      format:
        description: The target's format.
        type: str
        choices: [qcow2, raw]
        default: qcow2
      create:
        description:
          - Create the target with the disk's size; an existing file is refused, never changed.
          - With V(false) the target must exist with the disk's size.
        type: bool
        default: true
      pivot:
        description:
          - V(true) moves the disk onto the copy. V(false) ends the job without moving (the
            C(block-job-cancel) of a ready mirror) - the target is a consistent copy as of then and
            the disk stays where it is.
          - Default V(true) with O(mirror.path); a copy to O(mirror.node) never moves the disk.
        type: bool
  cancel:
    description:
      - Cancel the disk's block job recorded by an earlier run. A ready mirror is ended keeping a
        consistent copy (the disk stays on its source); any other job is aborted.
    type: bool
    default: false
  delete_unused:
    description:
      - Delete the nodes of the images the disk no longer uses (after a commit, stream or pivot),
        so QEMU closes those files and releases their locks. The files themselves are kept.
    type: bool
    default: false
  wait:
    description: Wait for the block job to end. V(false) starts it and returns at once.
    type: bool
    default: true
  job_timeout:
    description:
      - Seconds a job may go without a status change or progress before the task returns and
        leaves it running (reported in RV(job) and as a warning).
    type: float
    default: 600
notes:
  - With O(disk), exactly one of O(snapshot), O(commit), O(stream), O(mirror) and O(cancel) per task,
    or none with O(delete_unused=true).
  - For long copies use O(wait=false), or Ansible's C(async)/C(poll), and a later task with the same
    operation to wait for the end.
seealso:
  - module: blocklayer.qemu.qemu_instance
  - module: blocklayer.qemu.qemu_device
"""

EXAMPLES = r"""
- name: External snapshot of the root disk before an upgrade
  blocklayer.qemu.qemu_blockdev:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    disk: root
    snapshot:
      path: /srv/images/web1-root-pre-upgrade.qcow2

- name: Fold the snapshot back into the base image afterwards (and release it)
  blocklayer.qemu.qemu_blockdev:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    disk: root
    commit: {}
    delete_unused: true

- name: Move the data disk to new storage while the guest runs
  blocklayer.qemu.qemu_blockdev:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    disk: data
    mirror:
      path: /srv/fast/web1-data.qcow2
    delete_unused: true

- name: Open a standalone node for a copy of the data disk (the image is created, 1 GiB)
  blocklayer.qemu.qemu_blockdev:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    node: data-copy
    path: /srv/backup/web1-data.qcow2
    size: 1G

- name: Copy the data disk into it while the guest runs; the disk stays where it is
  blocklayer.qemu.qemu_blockdev:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    disk: data
    mirror:
      node: data-copy

- name: Close the node once the copy is taken away (the file stays)
  blocklayer.qemu.qemu_blockdev:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    node: data-copy
    state: absent

- name: A long copy in the background; Ansible polls it every 30 seconds (async), up to an hour
  blocklayer.qemu.qemu_blockdev:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    disk: data
    mirror:
      path: /srv/fast/web1-data.qcow2
    job_timeout: 3600
  async: 3600
  poll: 30

- name: Or start it and return at once, then see where it stands in a later task
  blocklayer.qemu.qemu_blockdev:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    disk: data
    mirror:
      path: /srv/fast/web1-data.qcow2
    wait: false
  register: started

- name: Wait for the copy (the returned job carries its progress, current of total bytes)
  blocklayer.qemu.qemu_blockdev:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
    disk: data
    mirror:
      path: /srv/fast/web1-data.qcow2
    job_timeout: 60
  register: copy
  until: copy.job is not defined or copy.job.result is defined
  retries: 60
  delay: 1
"""

RETURN = r"""
actions:
  description: What the task did (or would do in check mode), in order.
  returned: always
  type: list
  elements: dict
  sample: [{"action": "snapshot", "kind": "disk", "name": "root", "id": "disk-9e7c85f6-b6e5-4243",
            "reason": "an overlay /srv/images/o.qcow2 on /srv/images/root.qcow2"}]
qmp_commands:
  description: The QMP commands sent, with their arguments; in check mode the ones that would be sent.
  returned: always
  type: list
  elements: dict
chain:
  description: The disk's images, bottom-up, after the task - path, format and node name of each.
  returned: with O(disk)
  type: list
  elements: dict
  sample: [{"path": "/srv/images/root.qcow2", "format": "qcow2", "node": "disk-9e7c85f6-b6e5-4243.fmt"}]
unused_nodes:
  description: Nodes of images the disk no longer uses that QEMU still holds (see O(delete_unused)).
  returned: with O(disk)
  type: list
  elements: str
job:
  description:
    - The block job of the task, or the one an earlier run left - id, type, and C(result)
      (completed, kept, cancelled, failed) or C(status) when it still runs, progress C(current) of
      C(total), and QEMU's C(error).
  returned: when a job ran or runs
  type: dict
  sample: {"id": "disk-9e7c85f6-b6e5-4243.mirror3", "type": "mirror", "result": "completed", "current": 67108864,
           "total": 67108864, "error": null}
node:
  description:
    - With O(node) - the standalone node after the task (null once closed) - its name, path, format,
      read_only, the QEMU node a job or an export uses (C(<node>.fmt)), and C(copy_of), the id of the
      disk whose copy it holds.
  returned: with O(node)
  type: dict
  sample: {"name": "data-copy", "path": "/srv/backup/web1-data.qcow2", "format": "qcow2", "read_only": false,
           "node": "data-copy.fmt", "copy_of": "disk-9e7c85f6-b6e5-4243"}
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

OPERATIONS = ("snapshot", "commit", "stream", "mirror", "cancel")
ARGUMENT_SPEC = dict(
    args.INSTANCE_OPTIONS,
    disk=dict(type="str"),
    node=dict(type="str"),
    state=dict(type="str", choices=["present", "absent"]),
    path=dict(type="path"),
    format=dict(type="str", choices=["qcow2", "raw"], default="qcow2"),
    read_only=dict(type="bool", default=False),
    size=dict(type="str"),
    snapshot=dict(type="dict", options=dict(path=dict(type="path", required=True),
                                            create=dict(type="bool", default=True))),
    commit=dict(type="dict", options=dict(top=dict(type="path"), base=dict(type="path"))),
    stream=dict(type="dict", options=dict(base=dict(type="path"))),
    mirror=dict(type="dict", options=dict(path=dict(type="path"), node=dict(type="str"),
                                          format=dict(type="str", choices=["qcow2", "raw"], default="qcow2"),
                                          create=dict(type="bool", default=True),
                                          pivot=dict(type="bool")),
                mutually_exclusive=[("path", "node")], required_one_of=[("path", "node")]),
    cancel=dict(type="bool", default=False),
    delete_unused=dict(type="bool", default=False),
    wait=dict(type="bool", default=True),
    job_timeout=args.JOB_TIMEOUT,
)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           mutually_exclusive=[("snapshot", "commit", "stream", "mirror"), ("disk", "node"),
                                               ("node", "snapshot"), ("node", "commit"), ("node", "stream"),
                                               ("node", "mirror"), ("node", "cancel"), ("node", "delete_unused")],
                           required_one_of=[("disk", "node")],
                           required_by={"state": "node", "path": "node", "size": "node"})
    from ansible_collections.blocklayer.qemu.plugins.module_utils import blockops  # after the argument check

    def converge(task):
        args.check_paths(ARGUMENT_SPEC, module.params)  # before anything runs, naming the option
        return blockops.converge(task)
    Task(module).run(converge)


if __name__ == "__main__":
    main()
