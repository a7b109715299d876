"""The QEMU binaries the real-QEMU tests run on, named by the version each one reports.

The system QEMU (``/usr/bin/qemu-system-x86_64``) and every QEMU that
``tools/fetch-qemu-other.sh`` unpacked into ``build/qemu-<major>.<minor>/root`` (Debian 12:
7.2 + 10.0; Debian 13: 10.0 + 11.1). Test ids are ``qemu-<major>.<minor>`` read from
``<binary> --version``, so they say what actually ran, on any Debian release.
"""

import glob
import os
import re
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYSTEM = "/usr/bin/qemu-system-x86_64"
PREFIXES = os.path.join(ROOT, "build", "qemu-*", "root")
_VERSION = re.compile(r"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?")


def version(binary):
    """(major, minor, micro) that ``binary --version`` reports."""
    env = dict(os.environ)
    prefix = os.path.dirname(os.path.dirname(os.path.dirname(binary)))
    module_dir = os.path.join(prefix, "usr", "lib", "x86_64-linux-gnu", "qemu")
    if not binary.startswith("/usr/") and os.path.isdir(module_dir):
        env["QEMU_MODULE_DIR"] = module_dir  # a prefix's QEMU must not try the system's modules
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, env=env, timeout=30,
                         check=False)
    m = _VERSION.search(out.stdout)
    if out.returncode != 0 or not m:
        raise RuntimeError("%s --version failed (rc %d): %s%s" % (binary, out.returncode, out.stdout, out.stderr))
    return tuple(int(n or 0) for n in m.groups())


def found():
    """[(version, binary)] of the system QEMU and of each prefix, oldest first, one per major.minor."""
    binaries = [SYSTEM] if os.path.exists(SYSTEM) else []
    binaries += sorted(glob.glob(os.path.join(PREFIXES, "usr", "bin", "qemu-system-x86_64")))
    by_generation = {}
    for binary in binaries:
        v = version(binary)
        by_generation.setdefault(v[:2], (v, binary))
    return sorted(by_generation.values())


def binaries(required=None):
    """pytest params for the ``qemu_binary`` fixture, with ids ``qemu-<major>.<minor>``.

    ``required`` (default: true when ``CI`` is set) makes a machine with fewer than two QEMU
    generations an error rather than a smaller matrix.
    """
    if required is None:
        required = bool(os.environ.get("CI"))
    have = found()
    if required and len(have) < 2:
        raise RuntimeError("only %s found; the tests need the system QEMU and a second generation "
                           "in build/qemu-<version>: run make qemu-other"
                           % (", ".join("%d.%d.%d at %s" % (v + (b,)) for v, b in have) or "no QEMU"))
    return [pytest.param(b, id="qemu-%d.%d" % v[:2]) for v, b in have]
