# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live-migration benchmark on the tiny test guest (not a test; see bench/README.md).

Boots the guest on the source QEMU and moves it back and forth between two state dirs on
this machine (source QEMU -> target QEMU -> source QEMU ...) with qemu_migrate run as real
module processes, the way Ansible runs them. Prints per hop QEMU's own ``total-time`` and
``downtime`` (the source's ``query-migrate``) and the wall time of each step; the guest agent
answers on the target after every hop, so each figure is of a guest that really moved.

Usage: .venv/bin/python bench/migrate.py [--source BINARY] [--target BINARY] [--hops 4]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLLECTIONS = ROOT / "build" / "collections"
GUEST = ROOT / "build" / "guest"
sys.path.insert(0, str(ROOT / "tools" / "guest"))

from agent import GuestAgent  # noqa: E402  pylint: disable=wrong-import-position

PREFIX = "blbench-mig-"
SYSTEM_QEMU = "/usr/bin/qemu-system-x86_64"


def module(name: str, args: dict, workdir: Path) -> tuple:
    """(result, wall seconds) of one module process, as Ansible starts it."""
    argsfile = workdir / "args.json"
    argsfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    env = dict(os.environ, PYTHONPATH=str(COLLECTIONS))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ansible_collections.blocklayer.qemu.plugins.modules." + name,
                           str(argsfile)], capture_output=True, text=True, env=env, timeout=600, check=False)
    wall = time.monotonic() - start
    result = json.loads(proc.stdout)
    if result.get("failed"):
        raise SystemExit("%s failed: %s" % (name, result.get("msg")))
    return result, wall


def hop(source_dir: str, target_dir: str, target_binary: str, workdir: Path) -> dict:
    """One migration, step by step; the figures of each step and QEMU's."""
    figures = {}
    exported, figures["export"] = module("qemu_migrate", dict(name="b", state_dir=source_dir, step="export"), workdir)
    prepared, figures["prepare"] = module("qemu_migrate", dict(
        name="b", state_dir=target_dir, step="prepare", layout=exported["layout"], source=exported["source"],
        qemu_binary=target_binary), workdir)
    sent, figures["migrate"] = module("qemu_migrate", dict(name="b", state_dir=source_dir, step="migrate",
                                                           uri=prepared["uri"]), workdir)
    _finished, figures["finish"] = module("qemu_migrate", dict(name="b", state_dir=target_dir, step="finish"),
                                          workdir)
    figures["total-time"], figures["downtime"] = sent["total_time"] / 1000.0, sent["downtime"] / 1000.0
    with GuestAgent(os.path.join(target_dir, "agent.sock"), timeout=60) as agent:
        agent.wait_ready()  # the guest runs on the target
    return figures


def kill_leftovers(marker: str) -> None:
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = path.read_bytes().split(b"\0")
        except OSError:
            continue
        if args and b"qemu-system" in args[0] and any(marker.encode() in a for a in args[1:]):
            os.kill(int(path.parent.name), signal.SIGKILL)


def version_of(binary: str) -> tuple:
    sys.path.insert(0, str(ROOT))
    from tests.integration import qemus  # the test helper that reads --version for a private prefix
    return qemus.version(binary)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=SYSTEM_QEMU, help="QEMU the guest boots on")
    parser.add_argument("--target", default=SYSTEM_QEMU, help="QEMU it moves to (and back from)")
    parser.add_argument("--hops", type=int, default=4, help="migrations, alternating direction")
    opts = parser.parse_args(argv)
    if version_of(opts.source) > version_of(opts.target):
        raise SystemExit("--source must not be newer than --target: the guest boots on the source's newest "
                         "machine type, which an older QEMU does not have")
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit("stopped by signal %d" % signum))
    workdir = Path(tempfile.mkdtemp(prefix=PREFIX))
    dirs = [str(workdir / "a"), str(workdir / "b")]
    binaries = [opts.source, opts.target]
    try:
        boot = module("qemu_instance", dict(
            name="b", state_dir=dirs[0], accel="tcg", qemu_binary=opts.source, shutdown_timeout=0,
            kernel_path=str(GUEST / "vmlinux"), initrd_path=str(GUEST / "initramfs.gz"),
            kernel_args="console=ttyS0 panic=-1 quiet", agent_channel=True), workdir)[1]
        with GuestAgent(os.path.join(dirs[0], "agent.sock"), timeout=120) as agent:
            agent.wait_ready()
        print("guest started on %s (qemu_instance: %.2f s; 256 MiB, TCG)" % (opts.source, boot))
        rows = []
        for n in range(opts.hops):
            src, dst = n % 2, (n + 1) % 2
            figures = hop(dirs[src], dirs[dst], binaries[dst], workdir)
            label = "%s -> %s" % (".".join(map(str, version_of(binaries[src])[:2])),
                                  ".".join(map(str, version_of(binaries[dst])[:2])))
            rows.append((label, figures))
        keys = ("total-time", "downtime", "export", "prepare", "migrate", "finish")
        print("%-14s %s" % ("hop (ms)", " ".join("%10s" % k for k in keys)))
        for label, figures in rows:
            print("%-14s %s" % (label, " ".join("%10.0f" % (figures[k] * 1000) for k in keys)))
        print("%-14s %s" % ("median", " ".join("%10.0f" % (statistics.median(row[1][k] for row in rows) * 1000)
                                               for k in keys)))
    finally:
        kill_leftovers(str(workdir))
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
