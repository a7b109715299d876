# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One module run on one instance: lock, work, and report (shared by the modules)."""

from __future__ import annotations

import contextlib
import os

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError, QemuError
from ansible_collections.blocklayer.qemu.plugins.module_utils.instance import Instance, Timeouts
from ansible_collections.blocklayer.qemu.plugins.module_utils.qmp import HAS_QMP, QMP_IMPORT_ERROR
from ansible_collections.blocklayer.qemu.plugins.module_utils.runtime import (
    InstanceLock, RuntimePaths, ensure_state_dir)


class Task:
    def __init__(self, module):
        self.module = module
        self.paths = RuntimePaths(module.params["state_dir"])
        self.instance = None

    def open_instance(self, uuid: str) -> Instance:
        """The instance, read from its state dir; call it with the lock held (inside run)."""
        params = self.module.params
        defaults = Timeouts()
        timeouts = Timeouts(start=params.get("start_timeout", defaults.start),
                            shutdown=params.get("shutdown_timeout", defaults.shutdown),
                            qmp_connect=params["qmp_timeout"], qmp_command=params["qmp_timeout"])
        self.instance = Instance(params["name"], uuid, self.paths.state_dir, self.module.check_mode, timeouts,
                                 params["unplug_timeout"])
        return self.instance

    def run(self, work, create_state_dir: bool = False) -> None:
        """Run ``work(task) -> result`` under the instance lock and exit the module with it.

        Bad input and QEMU's refusals end in fail_json, with what was done so far.
        """
        module = self.module
        if not HAS_QMP:
            module.fail_json(msg=missing_required_lib("qemu.qmp"), exception=QMP_IMPORT_ERROR)
        try:
            if create_state_dir and not module.check_mode:
                ensure_state_dir(self.paths.state_dir)
            # No lock to take where there is no state dir (check mode, or nothing to stop).
            exists = os.path.isdir(self.paths.state_dir)
            with InstanceLock(self.paths) if exists else contextlib.nullcontext():
                result = work(self)
        except (ConfigError, QemuError) as exc:
            done = {}
            if self.instance:
                done = dict(actions=self.instance.actions, qmp_commands=self.instance.qmp_commands)
            module.fail_json(msg=str(exc), qemu_error_class=getattr(exc, "error_class", ""),
                             qemu_error=getattr(exc, "desc", ""), **done)
        for warning in result.pop("warnings"):
            module.warn(warning)
        if not module._diff:
            result.pop("diff")
        module.exit_json(**result)
