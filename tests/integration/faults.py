"""Real faults injected into a real module process: a hook, run first in that process, wraps one
collection function; the collection itself has no test code. The module then runs as Ansible
runs it (``python -m ... ARGSFILE``)."""

import json
import os
import subprocess
import sys

from .conftest import COLLECTIONS

MODULE = "ansible_collections.blocklayer.qemu.plugins.modules.qemu_instance"

_RUNNER = r"""
import runpy, sys
hook_args = sys.argv[2:]
%s
sys.argv = ["module", sys.argv[1]]
runpy.run_module("%s", run_name="__main__")
"""

# After the Nth QMP command that ``which`` selects (``any``, ``mutating`` or a command name) has
# been answered, send ``signal`` to the module itself (``self``) or to the pid in a pidfile.
AFTER_QMP = r"""
import os, signal
from ansible_collections.blocklayer.qemu.plugins.module_utils import qmp
limit, which, target, sig = int(hook_args[0]), hook_args[1], hook_args[2], getattr(signal, hook_args[3])
real, seen = qmp.QmpSession.execute, [0]

def execute(self, command, arguments=None, timeout=None):
    answer = real(self, command, arguments, timeout)
    mutating = not (command.startswith("query-") or command in ("qom-list", "qom-get")
                    or arguments == {"command-line": "info network"})
    if which == "any" or which == command or (which == "mutating" and mutating):
        seen[0] += 1
        if seen[0] == limit:
            os.kill(os.getpid() if target == "self" else int(open(target).read()), sig)
    return answer

qmp.QmpSession.execute = execute
"""

# Counts the runtime-file saves into the file hook_args[0]; with hook_args[1], fills the
# filesystem of that directory just before the save of that number.
AT_SAVE = r"""
import atexit, os
from ansible_collections.blocklayer.qemu.plugins.module_utils import statedir
out, fill_at = hook_args[0], hook_args[1:]
real, saves = statedir.StateDir.write_atomic, [0]

def write_atomic(self, name, data):
    if name == "runtime.json":
        saves[0] += 1
        if fill_at and saves[0] == int(fill_at[1]):
            with open(os.path.join(fill_at[0], "filler"), "wb") as handle:
                try:
                    while True:
                        handle.write(b"\0" * 65536)
                        handle.flush()
                except OSError:
                    pass
    return real(self, name, data)

statedir.StateDir.write_atomic = write_atomic
atexit.register(lambda: open(out, "w").write("%d" % saves[0]))
"""


def run_hooked(args: dict, argsfile: str, hook: str, *hook_args, timeout: float = 120, module: str = MODULE):
    """Run a module (qemu_instance unless told) with ``args`` and ``hook``; returns the finished process."""
    with open(argsfile, "w", encoding="utf-8") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=False)}, handle)
    return subprocess.run([sys.executable, "-c", _RUNNER % (hook, module), argsfile] + [str(a) for a in hook_args],
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=COLLECTIONS),
                          timeout=timeout, check=False)


def result_of(proc) -> dict:
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)
