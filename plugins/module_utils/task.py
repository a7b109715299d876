# -*- coding: utf-8 -*-
# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One module run on one instance: check the state dir, lock, work, and report (shared by the modules)."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.blocklayer.qemu.plugins.module_utils import args, runtime
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError, QemuError
from ansible_collections.blocklayer.qemu.plugins.module_utils.instance import Instance, Timeouts
from ansible_collections.blocklayer.qemu.plugins.module_utils.qmp import HAS_QMP, QMP_IMPORT_ERROR
from ansible_collections.blocklayer.qemu.plugins.module_utils.statedir import StateDir

# What a node whose module Python lacks qemu.qmp needs (README.md "What a managed node needs").
QMP_HELP = "https://github.com/blocklayer/qemu#what-a-managed-node-needs"
QMP_FIX = (" Install it into the Python that runs this module: %s -m pip install qemu.qmp==0.0.6;"
           " or prepare the node with the role blocklayer.qemu.hypervisor, which creates a venv with"
           " it and sets the fact blocklayer_qemu_python to give this task as its"
           " ansible_python_interpreter.")


class Task:
    def __init__(self, module):
        self.module = module
        self.state_dir = module.params["state_dir"]
        self.state = None
        self.instance = None

    def open_instance(self, uuid: str) -> Instance:
        """The instance, read from its state dir, inside run (with the lock held, or for a reader
        that runs without it: the runtime file is replaced by rename, so it reads whole)."""
        params = self.module.params
        defaults = Timeouts()
        timeouts = Timeouts(start=params.get("start_timeout", defaults.start),
                            shutdown=params.get("shutdown_timeout", defaults.shutdown),
                            qmp_connect=params["qmp_timeout"], qmp_command=params["qmp_timeout"])
        self.instance = Instance(params["name"], uuid, self.state, self.state_dir, self.module.check_mode,
                                 timeouts, params.get("unplug_timeout", args.UNPLUG_TIMEOUT["default"]))
        return self.instance

    def open_running_instance(self) -> Instance:
        """The instance, which must be running (qemu_device, qemu_blockdev): else a clear failure."""
        instance = self.open_instance("")
        instance.refuse_migration_states()
        if not (instance.rt and instance.pid):
            if instance.damaged:
                raise instance.damaged
            raise ConfigError("instance %s is not running (no live QEMU for %s); start it with "
                              "blocklayer.qemu.qemu_instance first" % (instance.name, instance.paths.runtime_file))
        return instance

    def run(self, work, create_state_dir: bool = False, lock: bool = True) -> None:
        """Run ``work(task) -> result`` under the instance lock and exit the module with it.

        ``lock=False`` is for a reader that changes nothing (qemu_instance_info): it reads
        while another task holds the lock, e.g. waiting on a block job. Without a state_dir
        (a look over a state root) ``work`` opens what it reads itself.

        Every failure ends in fail_json with what was done so far; bad input and QEMU's
        refusals with their message, anything else as an internal error (never a traceback).
        """
        module = self.module
        if not HAS_QMP:
            module.fail_json(msg=missing_required_lib("qemu.qmp", url=QMP_HELP).rstrip(".") + "." + QMP_FIX % sys.executable,
                             exception=QMP_IMPORT_ERROR)
        try:
            result = self._locked(work, create_state_dir and not module.check_mode, lock)
        except (ConfigError, QemuError) as exc:
            module.fail_json(msg=str(exc), qemu_error_class=getattr(exc, "error_class", ""),
                             qemu_error=getattr(exc, "desc", ""), **self._done())
        except Exception as exc:  # pylint: disable=broad-except
            module.fail_json(msg="internal error of the collection (%s: %s); what was done so far is listed in "
                             "actions, and the next run finishes or undoes it" % (type(exc).__name__, exc),
                             exception=traceback.format_exc(), **self._done())
        for warning in result.pop("warnings"):
            module.warn(warning)
        if not module._diff:
            result.pop("diff")
        module.exit_json(**result)

    def _locked(self, work, create: bool, lock: bool = True) -> dict:
        if self.state_dir is None and not lock:
            return work(self)
        if not os.path.isabs(self.state_dir):
            raise ConfigError("state_dir: %r is a relative path; give an absolute one" % self.state_dir)
        self.state = StateDir.open(self.state_dir, create=create)
        ok = False
        try:
            # No lock to take where there is no state dir (check mode, or nothing to stop).
            held = self.state.lock(self.module.params["lock_timeout"], "instance %s" % self.module.params["name"]) \
                if self.state and lock else contextlib.nullcontext()
            with held:
                result = work(self)
            ok = True
            return result
        finally:
            if self.state:
                if not ok and self.state.created and not (self.instance and self.instance.pid):
                    # A failed first run leaves no state dir behind.
                    self.state.remove_owned(runtime.OWNED_FILES)
                    self.state.remove_dir_if_created()
                self.state.close()

    def _done(self) -> dict:
        if not self.instance:
            return {"changed": False}
        return dict(changed=self.instance.changed, actions=self.instance.actions,
                    qmp_commands=self.instance.qmp_commands)
