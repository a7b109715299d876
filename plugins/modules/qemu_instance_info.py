#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: qemu_instance_info
short_description: Read what a QEMU instance has now, device by device, and where it drifted
version_added: 0.2.0
description:
  - Reads an instance managed by M(blocklayer.qemu.qemu_instance) without changing anything,
    its state, QEMU version, accelerator and pid, and per device what QEMU has now (id, kind,
    bus and address or SCSI id and LUN, image, format, cache, sizes, limits, backing chain,
    checkpoints, a running block job), pending unplugs, running block jobs with their progress,
    actions a killed run left unfinished, and the block graph as a tree and as Graphviz DOT text.
  - The runtime file says what each device should be and QEMU's own queries (C(query-block),
    C(query-pci), C(qom-list), C(query-named-block-nodes), C(query-jobs), C(qom-get) of each
    throttle group's C(limits)) say what it is; every difference is listed in RV(drift). This is
    the way to see drift without redeclaring the instance. A disk a block job runs on sits on
    the job's filter node - that is reported as the job (C(job) of RV(devices), RV(jobs)), not as drift.
  - With O(state_root) instead, it lists every instance whose state dir is directly under that
    directory (RV(instances)).
  - Sends only read-only QMP queries. Runs the same in check mode.
author:
  - blocklayer.qemu developers (@blocklayer)
extends_documentation_fragment:
  - blocklayer.qemu.instance
options:
  name:
    description:
      - Name of the instance. Letters, digits, C(-), C(.) and C(_), starting with a letter.
      - Required with O(state_dir).
    type: str
    required: false
  state_dir:
    description:
      - The instance's state directory, as given to M(blocklayer.qemu.qemu_instance).
      - Exactly one of O(state_dir) and O(state_root).
    type: path
    required: false
  state_root:
    description:
      - A directory that holds state dirs, one per instance (for example C(/var/lib/blocklayer-qemu)).
        Every directory directly in it that carries the collection's ownership marker (or a
        runtime file of an older version) is listed in RV(instances) with its state. Symlinks are
        never followed; other directories are left out.
      - Not together with O(name) or O(state_dir).
    type: path
    version_added: 0.3.0
  lock_timeout:
    description:
      - Not used - this module takes no lock (see the notes). Accepted so that the same instance
        options work for every module.
    type: float
    default: 120
attributes:
  check_mode:
    support: full
    description: The module never changes anything; check mode runs the same queries.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
notes:
  - It does not take the instance lock, so it reads while another task works on the instance,
    for example one waiting for a block job - this is how a job's progress is watched. The
    runtime file is replaced atomically, so it is always read whole; a change made between
    reading it and asking QEMU can show once as drift - read again.
  - QEMU serves one QMP client at a time. When another task holds the connection, QEMU does not
    greet within 2 seconds (or O(qmp_timeout) if shorter); the result then says RV(qemu=busy),
    devices and jobs are as the runtime file records them (no sizes, no progress) and drift is
    not checked.
seealso:
  - module: blocklayer.qemu.qemu_instance
  - module: blocklayer.qemu.qemu_device
  - module: blocklayer.qemu.qemu_blockdev
"""

EXAMPLES = r"""
- name: Read every hypervisor's instance web1
  blocklayer.qemu.qemu_instance_info:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
  register: web1

- name: Fail when QEMU no longer matches the runtime file
  ansible.builtin.assert:
    that: web1.drift == []
    fail_msg: "{{ inventory_hostname }}: {{ web1.drift }}"

- name: Show the disks the guest has
  ansible.builtin.debug:
    msg: "{{ web1.devices | selectattr('kind', 'eq', 'disk') | map(attribute='image') | list }}"

- name: Watch a copy another task waits for (qemu_blockdev mirror); progress is null while that task holds QMP
  blocklayer.qemu.qemu_instance_info:
    name: web1
    state_dir: /var/lib/blocklayer-qemu/web1
  register: watched
  until: watched.jobs == []
  retries: 600
  delay: 5

- name: Write the block graph for Graphviz (dot -Tsvg web1.dot -o web1.svg)
  ansible.builtin.copy:
    content: "{{ web1.graph_dot }}"
    dest: /tmp/web1.dot
    mode: "0644"
  delegate_to: localhost

- name: Every instance on the host, with its state
  blocklayer.qemu.qemu_instance_info:
    state_root: /var/lib/blocklayer-qemu
  register: all_instances
"""

RETURN = r"""
state:
  description: C(running) when a QEMU of the instance runs, C(stopped) when its state dir exists but no QEMU runs, C(absent) when there is no state dir.
  returned: with O(state_dir)
  type: str
  sample: running
qemu:
  description:
    - C(answered) when QEMU answered the queries; C(busy) when another task held its QMP socket (see the notes) - then
      devices and jobs are as the runtime file records them, sizes and progress are null and drift is not checked.
  returned: when running
  type: str
  sample: answered
status:
  description: QEMU's run state (C(query-status)), e.g. C(running), C(paused), C(prelaunch).
  returned: when running and QEMU answered
  type: str
  sample: running
pid:
  description: Process id of the instance's QEMU.
  returned: when running
  type: int
  sample: 12345
qemu_version:
  description: The version QEMU answers on QMP (the recorded one when QEMU is busy).
  returned: when running
  type: str
  sample: 7.2.22
accel:
  description: The accelerator the instance was started with.
  returned: when the runtime file is readable
  type: str
  sample: tcg
machine_type:
  description: The machine type of the guest layout.
  returned: when the runtime file is readable
  type: str
  sample: pc
runtime_file:
  description: Path of the runtime file.
  returned: with O(state_dir)
  type: str
  sample: /var/lib/blocklayer-qemu/web1/runtime.json
devices:
  description:
    - One entry per controller and device of the runtime file, with what QEMU has now; C(in_qemu) is false for a
      recorded device QEMU does not have (null when QEMU is busy).
    - For disks, CD-ROMs and floppies (C(null) or empty for an empty drive) -
    - C(image) and C(format) - the image the guest writes to (the top of the chain), never a filter's C(json:) name.
    - C(chain) - the images bottom-up, the same shape as M(blocklayer.qemu.qemu_blockdev)'s RV(blocklayer.qemu.qemu_blockdev#module:chain)
      (C(path), C(format), C(node), the last one being C(image)), each with the C(virtual_size) and C(actual_size)
      (bytes the host allocates for it) QEMU reports for its node (C(query-named-block-nodes)).
    - C(virtual_size) - the size the guest sees (the top image's); C(actual_size) - the bytes all images of the
      chain take on the host.
    - C(node) - the node the device uses now (its throttle node, or while a job runs the job's filter node
      C(<id>_job)); C(read_only); C(cache) as QEMU reports it.
    - C(limits) - the I/O limits as declared (the disk's own C(limits), or its shared group's), only what limits,
      with C(_) (C(bps_total)); C(limits_in_qemu) - what QEMU applies, read with C(qom-get) of the group's
      C(limits) (null when QEMU is busy or lacks the group); a difference is drift. C(throttle_group) - the group's QOM id, null without
      limits.
    - C(checkpoints) - the named dirty bitmaps on the disk's nodes (C(name), C(node), C(recording), C(persistent),
      C(count) of dirty bytes); empty until the collection makes checkpoints.
    - C(job) - the block job running on the disk, with the keys of RV(jobs) but C(disk); only while one runs.
  returned: with O(state_dir)
  type: list
  elements: dict
  sample:
    - id: disk-4ebf0f12-96f4-5d1b
      kind: disk
      name: root
      driver: virtio-blk-pci
      bus: pci.0
      addr: "0xc"
      state: attached
      in_qemu: true
      image: /srv/images/web1-root-pre-upgrade.qcow2
      format: qcow2
      chain:
        - {"path": "/srv/images/web1-root.qcow2", "format": "qcow2", "node": "disk-4ebf0f12-96f4-5d1b.fmt",
           "virtual_size": 16777216, "actual_size": 200704}
        - {"path": "/srv/images/web1-root-pre-upgrade.qcow2", "format": "qcow2", "node": "disk-4ebf0f12-96f4-5d1b.fmt2",
           "virtual_size": 16777216, "actual_size": 200704}
      virtual_size: 16777216
      actual_size: 401408
      node: disk-4ebf0f12-96f4-5d1b.thr
      read_only: false
      cache: {"direct": false, "no-flush": false, "writeback": false}
      limits: {"iops_total": 200}
      limits_in_qemu: {"iops_total": 200}
      throttle_group: disk-4ebf0f12-96f4-5d1b.tg
      checkpoints: []
unplug_pending:
  description: Ids of devices whose unplug the guest has not completed yet.
  returned: with O(state_dir)
  type: list
  elements: str
  sample: []
nodes:
  description:
    - The standalone nodes M(blocklayer.qemu.qemu_blockdev) opened (O(blocklayer.qemu.qemu_blockdev#module:node)) - name,
      image path, format, read_only, the QEMU node a job or an export uses, C(copy_of) (the id of the disk whose copy it
      holds, or null) and C(in_qemu) (whether QEMU has both of its nodes; a missing one is also reported as drift).
  returned: with O(state_dir)
  type: list
  elements: dict
  sample: [{"name": "data-copy", "path": "/srv/backup/web1-data.qcow2", "format": "qcow2", "read_only": false,
            "node": "data-copy.fmt", "copy_of": "disk-9e7c85f6-b6e5-4243", "in_qemu": true}]
jobs:
  description:
    - Block jobs QEMU has (C(query-jobs)), with the keys of M(blocklayer.qemu.qemu_blockdev)'s RV(blocklayer.qemu.qemu_blockdev#module:job) -
      C(id), C(type), C(status), progress C(current) of C(total) bytes, QEMU's C(error) - and C(disk), the id of the
      disk it runs on (null for a job the collection did not start).
    - When QEMU is busy, the jobs the runtime file's journal has in flight, with C(status), C(current) and C(total) null.
  returned: with O(state_dir)
  type: list
  elements: dict
  sample: [{"id": "disk-4ebf0f12-96f4-5d1b.mirror3", "type": "mirror", "status": "running", "current": 15728640,
            "total": 16777216, "error": null, "disk": "disk-4ebf0f12-96f4-5d1b"}]
unfinished:
  description: Journal entries of the runtime file - actions a killed run left begun (the next changing run finishes or undoes them), and block jobs in flight.
  returned: with O(state_dir)
  type: list
  elements: dict
  sample: []
drift:
  description: One sentence per difference between the runtime file and QEMU; empty when they agree (and when QEMU is busy).
  returned: with O(state_dir)
  type: list
  elements: str
  sample: []
graph:
  description:
    - The block graph as the runtime file records it, one tree per disk, CD-ROM or floppy (C(device), C(kind), C(name),
      C(driver)) and per standalone node (C(kind) C(node), C(device) null), each with its C(children) - QEMU nodes with
      C(node) (the node name), C(driver), C(edge) (how its parent uses it - C(drive), C(file), C(backing), C(node)), C(path)
      for a protocol node, C(throttle_group) for a throttle node, and C(children).
    - While a block job runs on a disk and QEMU answered, the job's filter node (C(job) - its id) sits between the
      device and the chain.
  returned: with O(state_dir)
  type: list
  elements: dict
  sample:
    - device: disk-76d52f8c-de3a-57cf
      kind: disk
      name: data
      driver: virtio-blk-pci
      children:
        - {"node": "disk-76d52f8c-de3a-57cf.fmt", "driver": "raw", "edge": "drive", "children": [
            {"node": "disk-76d52f8c-de3a-57cf.stor", "driver": "file", "edge": "file",
             "path": "/srv/images/web1-data.raw", "children": []}]}
graph_dot:
  description: RV(graph) as Graphviz DOT text, a line per device, node and edge; render it with C(dot -Tsvg).
  returned: with O(state_dir)
  type: str
  sample: |
    digraph "block graph of web1" {
      rankdir=TB;
      node [shape=box];
      "disk-76d52f8c-de3a-57cf" [shape=ellipse, label="disks[data]\\nvirtio-blk-pci"];
      "disk-76d52f8c-de3a-57cf.fmt" [label="disk-76d52f8c-de3a-57cf.fmt\\nraw"];
      "disk-76d52f8c-de3a-57cf" -> "disk-76d52f8c-de3a-57cf.fmt" [label="drive"];
    }
instances:
  description:
    - With O(state_root) - each instance under it - C(name), C(state_dir), C(state) (C(running) when a QEMU of it runs,
      else C(stopped)), C(status) (the runtime file's - C(running), C(stopped), C(migrated), ...; null without one),
      C(pid) (the live QEMU's, else the recorded one), C(pid_alive), C(devices) (how many devices the runtime file
      records) and C(problem) for a damaged runtime file.
  returned: with O(state_root)
  type: list
  elements: dict
  sample: [{"name": "web1", "state_dir": "/var/lib/blocklayer-qemu/web1", "state": "running", "status": "running",
            "pid": 12345, "pid_alive": true, "devices": 3}]
skipped:
  description: With O(state_root) - directories under it that could not be read (C(state_dir), C(reason)), e.g. one another user owns.
  returned: with O(state_root)
  type: list
  elements: dict
  sample: []
problem:
  description: Why the instance could not be read completely (a damaged runtime file, a QEMU no record names, QEMU busy).
  returned: when there is one
  type: str
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

ARGUMENT_SPEC = dict(args.INSTANCE_OPTIONS, name=dict(type="str"), state_dir=dict(type="path"),
                     state_root=dict(type="path"))
# How long to wait for QEMU's QMP greeting: QEMU greets a free socket at once, and one another task
# holds (waiting on a block job) never greets, so a short wait tells "busy" (docs/design.md).
BUSY_WAIT = 2.0


def gather(task: Task) -> dict:
    # Imported here: only a run that finds a running QEMU needs the QMP side.
    from ansible_collections.blocklayer.qemu.plugins.module_utils import info, verify
    from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError
    from ansible_collections.blocklayer.qemu.plugins.module_utils.qmp import QmpSession

    instance = task.open_instance("")
    result = {"changed": False, "warnings": [], "diff": {}, "runtime_file": instance.paths.runtime_file,
              "devices": [], "nodes": [], "unplug_pending": [], "jobs": [], "unfinished": [], "drift": [],
              "graph": [], "graph_dot": ""}
    rt = instance.rt
    if rt:
        result.update(accel=rt.host.accel, machine_type=rt.layout.machine_type)
    if instance.damaged:
        result["problem"] = str(instance.damaged)
    if not instance.pid:
        result["state"] = "stopped" if task.state else "absent"
        if rt:
            result["problem"] = "the recorded QEMU is not running; qemu_instance forgets it on its next run"
        return result
    result.update(state="running", pid=instance.pid)
    if not rt or not instance.trusted:
        result.setdefault("problem", "a QEMU (pid %d) serves the instance's QMP socket but no trustworthy record "
                                     "names it; qemu_instance state=stopped stops it" % instance.pid)
        return result
    timeout = task.module.params["qmp_timeout"]
    try:
        with QmpSession(instance.qmp_socket(), min(timeout, BUSY_WAIT), timeout) as qmp:
            # One round-trip for every query (QmpSession.execute_all); limits per group after,
            # as a group QEMU lacks must not hide the others.
            *answers, jobs, status = qmp.execute_all(verify.QUERIES + (("query-jobs", {}), ("query-status", {})))
            live = verify.Live.from_answers(*answers)
            limits = {}
            for group in info.throttle_groups(rt):
                try:
                    limits[group] = qmp.execute("qom-get", {"path": "/objects/" + group, "property": "limits"})
                except QemuError:
                    pass  # a group QEMU lacks is drift (info.describe)
            result.update(status=status["status"], qemu_version=qmp.version, qemu="answered")
    except QemuError as exc:
        if "did not greet" not in str(exc):  # QmpSession's word for a socket another client holds
            raise
        live = jobs = limits = None
        result.update(qemu="busy", qemu_version=rt.host.version,
                      problem="QEMU serves another task on its QMP socket (one client at a time), e.g. one waiting "
                              "for a block job: devices and jobs are as the runtime file records them, drift is not "
                              "checked; read again once that task is done")
    result.update(info.describe(rt, live, jobs, limits))
    return result


def list_instances(task: Task) -> dict:
    """Every instance dir directly under state_root: its state, read without any lock."""
    import os

    from ansible_collections.blocklayer.qemu.plugins.module_utils import runtime
    from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
    from ansible_collections.blocklayer.qemu.plugins.module_utils.instance import Instance
    from ansible_collections.blocklayer.qemu.plugins.module_utils.statedir import StateDir

    root = task.module.params["state_root"]
    if not os.path.isabs(root):
        raise ConfigError("state_root: %r is a relative path; give an absolute one" % root)
    result = {"changed": False, "warnings": [], "diff": {}, "instances": [], "skipped": []}
    top = StateDir.open(root, create=False)  # refused when a symlink or writable by others
    if top is None:
        raise ConfigError("state_root: %s does not exist; give the directory that holds the state dirs" % root)
    with top:
        for name in sorted(os.listdir(top.fd)):
            if top.kind(name) != "dir":  # lstat: a symlink is never followed
                continue
            path = os.path.join(top.path, name)
            try:
                with StateDir.open(path, create=False) as state:
                    marker = state.marked()
                    if marker is None and state.kind(runtime.RUNTIME_FILE) != "file":
                        continue  # not an instance dir (no marker; no runtime file of an older version)
                    instance = Instance((marker or {}).get("name") or name, "", state, path, True)
                    result["instances"].append(_instance_entry(instance))
            except ConfigError as exc:
                result["skipped"].append({"state_dir": path, "reason": str(exc)})
    return result


def _instance_entry(instance) -> dict:
    recorded = instance.before
    entry = {"name": recorded.layout.name if recorded else instance.name, "state_dir": instance.paths.state_dir,
             "state": "running" if instance.pid else "stopped",
             "status": recorded.status if recorded else None,
             "pid": instance.pid or (recorded.host.pid if recorded else None),
             "pid_alive": instance.pid is not None,
             "devices": len(recorded.layout.devices) if recorded else 0}
    if instance.damaged:
        entry["problem"] = str(instance.damaged)
    return entry


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True,
                           mutually_exclusive=[("state_root", "state_dir"), ("state_root", "name")],
                           required_one_of=[("state_dir", "state_root")],
                           required_together=[("name", "state_dir")])
    Task(module).run(list_instances if module.params["state_root"] else gather, lock=False)


if __name__ == "__main__":
    main()
