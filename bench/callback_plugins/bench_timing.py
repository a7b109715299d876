# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bench helper (not part of the collection): the wall time of every task, written as JSON lines
to the file named by BENCH_TIMING_FILE. Enabled only by bench/hotplug.py."""

from __future__ import annotations

DOCUMENTATION = r"""
name: bench_timing
type: aggregate
short_description: per-task wall times for bench/hotplug.py
description: Writes task name and seconds from task start to its result, one JSON object a line.
requirements: [enabled through ANSIBLE_CALLBACKS_ENABLED by bench/hotplug.py]
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._started = {}

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._started[task._uuid] = time.monotonic()  # pylint: disable=protected-access

    def _done(self, result, ok):
        task = result._task  # pylint: disable=protected-access
        seconds = time.monotonic() - self._started.pop(task._uuid)  # pylint: disable=protected-access
        with open(os.environ["BENCH_TIMING_FILE"], "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"task": task.get_name(), "seconds": seconds, "ok": ok}) + "\n")

    def v2_runner_on_ok(self, result):
        self._done(result, True)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._done(result, False)
