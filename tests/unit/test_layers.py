"""Every file of module_utils is either pure (decides, no I/O) or shell (talks to QEMU, files,
processes), as docs/design.md's layer table says; a pure file that imports I/O fails here."""

import ast
import os
import sys

import pytest

MODULE_UTILS = os.path.join(os.path.dirname(__file__), "..", "..", "plugins", "module_utils")

PURE = {"adopt", "args", "autostart", "backup", "blockdev", "cache", "cmdline", "devices", "engine", "errors", "ganeti", "graph", "ids",
        "info", "layout", "plan", "records", "recovery", "runtime", "spec", "standalone", "topology", "verify"}
SHELL = {"autostart_run", "backupops", "blockops", "bytecode", "graphops", "host", "hotplug", "instance", "jobs", "locks", "migrate", "probe",
         "process", "qmp", "queries", "statedir", "task"}

# What a pure file may import from the standard library: data, text and types, nothing that
# reaches outside the process.
_PURE_STDLIB = {"__future__", "dataclasses", "typing", "json", "re", "uuid", "os", "collections", "itertools",
                "functools", "copy", "enum"}
# os in a pure file is path arithmetic only.
_OS_PATH_ARITHMETIC = {"join", "dirname", "basename", "isabs", "normpath", "split", "splitext", "sep"}
_OWN = "ansible_collections.blocklayer.qemu.plugins.module_utils"


def _files():
    return sorted(f[:-3] for f in os.listdir(MODULE_UTILS) if f.endswith(".py") and f != "__init__.py")


def _tree(name):
    with open(os.path.join(MODULE_UTILS, name + ".py")) as handle:
        return ast.parse(handle.read())


def _imports(tree):
    """(module, names) of every import, wherever it is (a lazy import counts too)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            yield node.module or "", tuple(a.name for a in node.names)


def _own_modules(module, names):
    if module == _OWN:
        return set(names)
    if module.startswith(_OWN + "."):
        return {module[len(_OWN) + 1:].split(".")[0]}
    return set()


def test_every_file_is_either_pure_or_shell():
    assert not PURE & SHELL
    assert set(_files()) == PURE | SHELL, "classify the new file in PURE or SHELL (and in docs/design.md)"


@pytest.mark.parametrize("name", sorted(PURE))
def test_a_pure_file_imports_no_io(name):
    tree = _tree(name)
    for module, names in _imports(tree):
        own = _own_modules(module, names)
        if own:
            assert own <= PURE, "%s imports the shell file(s) %s" % (name, ", ".join(sorted(own - PURE)))
        else:
            assert module.split(".")[0] in _PURE_STDLIB, "%s imports %s" % (name, module)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "os":
            assert node.attr == "path", "%s uses os.%s" % (name, node.attr)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "os":
            assert node.attr in _OS_PATH_ARITHMETIC, "%s uses os.path.%s, which reads the host" % (name, node.attr)
        # The QMP session is I/O too: a pure file decides from QEMU's answers, it does not ask.
        if isinstance(node, ast.Attribute) and node.attr in ("execute", "execute_all", "listener", "wait_event"):
            pytest.fail("%s talks to QEMU (.%s)" % (name, node.attr))


def test_the_check_catches_io_in_a_pure_file(tmp_path, monkeypatch):
    """The checks above fail on a file that does what a pure file must not (so they can fail)."""
    for source in ("import subprocess\n", "import os\nos.stat('x')\n", "import os\nos.path.exists('x')\n",
                   "from %s import qmp\n" % _OWN, "def f(qmp):\n    return qmp.execute('query-block')\n"):
        (tmp_path / "bad.py").write_text(source)
        monkeypatch.setattr(sys.modules[__name__], "MODULE_UTILS", str(tmp_path))
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            test_a_pure_file_imports_no_io("bad")
