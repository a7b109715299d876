# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # Which instance a module works on, and how it reaches its QEMU.
    DOCUMENTATION = r"""
options:
  name:
    description:
      - Name of the instance. Letters, digits, C(-), C(.) and C(_), starting with a letter.
    type: str
    required: true
  state_dir:
    description:
      - Directory that holds the instance's runtime file (C(runtime.json)), QMP socket, pidfile
        and console log. Created with mode 0700. An absolute path.
      - Refused when it is a symlink, is not owned by the user running the module, or is
        writable by group or others, and when a parent directory would let another user
        replace it.
      - One directory per instance. Keep image files elsewhere; the collection never deletes a
        file it did not create.
    type: path
    required: true
  qmp_timeout:
    description:
      - Seconds to wait for QEMU to greet on its QMP socket and to answer each command.
      - QEMU serves one QMP client at a time; a second client waits in vain, so this bounds it.
    type: float
    default: 10
  lock_timeout:
    description:
      - Seconds to wait for another task that works on the same instance (tasks on one
        instance never interleave). When it is exceeded the task fails naming the process
        that holds the instance.
    type: float
    default: 120
attributes:
  check_mode:
    support: full
    description:
      - Returns the actions and the QMP commands they would send, and the instance they would
        leave as the diff; sends nothing and changes nothing (QMP is not even connected).
  diff_mode:
    support: full
    description:
      - The instance before and after, as a person reads it - the machine options and, per
        device by its declared name (C(disks[root])), where it sits and its image and options.
  platform:
    support: full
    platforms: posix
    description: Runs on the Linux host that runs QEMU.
requirements:
  - qemu.qmp == 0.0.6 (Python library) importable by the Python that runs the module on the host
    that runs QEMU; the role blocklayer.qemu.hypervisor installs it into a venv and sets the fact
    C(blocklayer_qemu_python) to use as the task's C(ansible_python_interpreter)
  - QEMU (qemu-system-x86_64) 7.2 or 10.0 on that host
"""
