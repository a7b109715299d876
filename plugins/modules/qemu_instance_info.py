#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: qemu_instance_info
short_description: Read what a QEMU instance has now, device by device, and where it drifted
version_added: 0.1.0
description:
  - Reads an instance managed by M(blocklayer.qemu.qemu_instance) without changing anything,
    its state, QEMU version, accelerator and pid, and per device what QEMU has now (id, kind,
    bus and address or SCSI id and LUN, image, format, cache, limits, backing chain), pending
    unplugs, running block jobs and actions a killed run left unfinished.
  - The runtime file says what each device should be and QEMU's own queries (C(query-block),
    C(query-pci), C(qom-list), C(query-named-block-nodes), C(query-jobs)) say what it is; every
    difference is listed in RV(drift). This is the way to see drift without redeclaring the
    instance.
  - Sends only read-only QMP queries. Runs the same in check mode.
author:
  - blocklayer.qemu developers (@blocklayer)
extends_documentation_fragment:
  - blocklayer.qemu.instance
attributes:
  check_mode:
    support: full
    description: The module never changes anything; check mode runs the same queries.
  diff_mode:
    support: none
    description: Nothing changes, so there is no diff.
notes:
  - It takes the instance lock like the other modules, so it waits for a task that is changing
    the instance (at most O(lock_timeout) seconds).
seealso:
  - module: blocklayer.qemu.qemu_instance
  - module: blocklayer.qemu.qemu_device
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
"""

RETURN = r"""
state:
  description: C(running) when a QEMU of the instance runs, C(stopped) when its state dir exists but no QEMU runs, C(absent) when there is no state dir.
  returned: always
  type: str
  sample: running
status:
  description: QEMU's run state (C(query-status)), e.g. C(running), C(paused), C(prelaunch).
  returned: when running
  type: str
  sample: running
pid:
  description: Process id of the instance's QEMU.
  returned: when running
  type: int
  sample: 12345
qemu_version:
  description: The version QEMU answers on QMP.
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
  returned: always
  type: str
  sample: /var/lib/blocklayer-qemu/web1/runtime.json
devices:
  description:
    - One entry per controller and device of the runtime file, with what QEMU has now.
    - C(image), C(format), C(node), C(read_only), C(cache), C(chain) and C(limits) are for disks,
      CD-ROMs and floppies (C(null) for an empty drive); C(in_qemu) is false for a recorded
      device QEMU does not have.
    - C(throttle_group) is the id of the throttle group a disk's I/O counts against (C(null) when
      it has no limits); read its limits with C(qom-get /objects/<id> limits). C(limits) shows only
      QEMU's legacy per-device throttling, which the collection never sets.
  returned: always
  type: list
  elements: dict
  sample:
    - id: disk-9e7c85f6-b6e5-4243
      kind: disk
      name: root
      driver: virtio-blk-pci
      bus: pci.0
      addr: "0xd"
      state: attached
      in_qemu: true
      image: /srv/images/web1-root.qcow2
      format: qcow2
      node: disk-9e7c85f6-b6e5-4243.fmt
      read_only: false
      cache: {"direct": true, "no-flush": false, "writeback": true}
      chain: [/srv/images/web1-root.qcow2]
      limits: {"bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0}
      throttle_group: null
unplug_pending:
  description: Ids of devices whose unplug the guest has not completed yet.
  returned: always
  type: list
  elements: str
  sample: []
nodes:
  description:
    - The standalone nodes M(blocklayer.qemu.qemu_blockdev) opened (O(blocklayer.qemu.qemu_blockdev#module:node)) - name,
      image path, format, read_only, the QEMU node a job or an export uses, C(copy_of) (the id of the disk whose copy it
      holds, or null) and C(in_qemu) (whether QEMU has both of its nodes; a missing one is also reported as drift).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "data-copy", "path": "/srv/backup/web1-data.qcow2", "format": "qcow2", "read_only": false,
            "node": "data-copy.fmt", "copy_of": "disk-9e7c85f6-b6e5-4243", "in_qemu": true}]
jobs:
  description: Block jobs QEMU has (C(query-jobs)), with their progress and error.
  returned: always
  type: list
  elements: dict
  sample: []
unfinished:
  description: Actions a killed run left begun; the next changing run finishes or undoes them.
  returned: always
  type: list
  elements: dict
  sample: []
drift:
  description: One sentence per difference between the runtime file and QEMU; empty when they agree.
  returned: always
  type: list
  elements: str
  sample: []
problem:
  description: Why the instance could not be read completely (a damaged runtime file, a QEMU no record names).
  returned: when there is one
  type: str
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
        with QmpSession(instance._qmp_socket(), min(timeout, BUSY_WAIT), timeout) as qmp:
            live = verify.Live.from_answers(*[qmp.execute(q, a) for q, a in verify.QUERIES])
            jobs = qmp.execute("query-jobs")
            limits = {group: qmp.execute("qom-get", {"path": "/objects/" + group, "property": "limits"})
                      for group in info.throttle_groups(rt)}
            result.update(status=qmp.execute("query-status")["status"], qemu_version=qmp.version, qemu="answered")
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
                    result["instances"].append(_instance_entry(instance, name))
            except ConfigError as exc:
                result["skipped"].append({"state_dir": path, "reason": str(exc)})
    return result


def _instance_entry(instance, name: str) -> dict:
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
