# Copyright (c) blocklayer.qemu contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hot-plug benchmark on the tiny test guest (not a test; see bench/README.md).

Drives the collection in-process, exactly as the qemu_instance module does
(``qemu_instance.converge`` under the instance lock, parameters filled in by Ansible's own
argument-spec validator), with ``QmpSession.execute`` and ``QmpSession.wait_event`` wrapped
in this process only to timestamp every QMP command and every event received. The guest's
agent (tools/guest/agent.py) confirms each disk appeared or went, so every unplug is real
guest cooperation (ACPI eject for virtio-blk on pc).

Usage: .venv/bin/python bench/hotplug.py [--qemu BINARY] [--repeat 3] [--sizes 1,4,16]
                                         [--bus virtio-blk|virtio-scsi|both]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COLLECTIONS = ROOT / "build" / "collections"
GUEST = ROOT / "build" / "guest"
sys.path.insert(0, str(COLLECTIONS))
sys.path.insert(0, str(ROOT / "tools" / "guest"))

# pylint: disable=wrong-import-position
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator  # noqa: E402

from ansible_collections.blocklayer.qemu.plugins.module_utils import qmp as qmp_mod  # noqa: E402
from ansible_collections.blocklayer.qemu.plugins.module_utils.statedir import StateDir  # noqa: E402
from ansible_collections.blocklayer.qemu.plugins.module_utils.task import Task  # noqa: E402
from ansible_collections.blocklayer.qemu.plugins.modules import qemu_instance  # noqa: E402
from agent import AgentError, GuestAgent  # noqa: E402

PREFIX = "blbench-"
BOOT_TIMEOUT = 180.0
GUEST_TIMEOUT = 60  # a disk must appear/go in the guest within this (s)
UNPLUG_TIMEOUT = 5.0  # the module's default; a disk left pending stops the bench with an error
PING_ARGS = {"ANSIBLE_MODULE_ARGS": {"data": "pong"}}
IMAGE_SIZE = 8 << 20
BUSES = {
    # bus -> (qemu_instance options, guest device-name prefix, what the README calls it)
    "virtio-blk": (dict(disk_type="paravirtual"), "vd", "virtio-blk-pci on pci.0 (ACPI PCI hot-plug)"),
    "virtio-scsi": (dict(disk_type="scsi-hd", scsi_controller_type="virtio-scsi-pci"), "sd",
                    "scsi-hd on virtio-scsi-pci (SCSI hot-plug, controller on pci.0)"),
}


# -- timestamps of QMP traffic, in this process only ---------------------------------------------
class Recorder:
    """Wraps QmpSession.execute / wait_event to timestamp each command and each event."""

    def __init__(self):
        self.commands = []  # (command, arguments, t_sent, t_answered), monotonic
        self.events = []  # (t_wait_began, t_received, t_emitted by QEMU as monotonic, event)

        self.saves = []  # (t_began, t_done) of each runtime-file save (write, fsync, rename, fsync dir)

    def reset(self):
        self.commands, self.events, self.saves = [], [], []

    def install(self):
        session = qmp_mod.QmpSession
        execute, wait_event = session.execute, session.wait_event
        rec = self

        def timed_execute(self, command, arguments=None, timeout=None):
            start = time.monotonic()
            try:
                return execute(self, command, arguments, timeout)
            finally:
                rec.commands.append((command, arguments or {}, start, time.monotonic()))

        def timed_wait_event(self, listener, timeout):
            began = time.monotonic()
            event = wait_event(self, listener, timeout)
            if event is not None:
                received = time.monotonic()
                stamp = event["timestamp"]  # QEMU's wall clock when it emitted the event
                emitted = stamp["seconds"] + stamp["microseconds"] / 1e6 - (time.time() - received)
                rec.events.append((began, received, emitted, event))
            return event

        session.execute, session.wait_event = timed_execute, timed_wait_event
        write_atomic = StateDir.write_atomic

        def timed_write_atomic(self, name, data):
            start = time.monotonic()
            try:
                return write_atomic(self, name, data)
            finally:
                rec.saves.append((start, time.monotonic()))

        StateDir.write_atomic = timed_write_atomic  # every runtime-file save goes through it


RECORDER = Recorder()


class Run:
    """One converge: its result, wall time and the QMP traffic it caused."""

    def __init__(self, result, start, end):
        self.result, self.start, self.end = result, start, end
        self.commands, self.events = list(RECORDER.commands), list(RECORDER.events)
        self.saves = list(RECORDER.saves)

    @property
    def wall(self):
        return self.end - self.start

    def names(self):
        return [c[0] for c in self.commands]


# -- the instance ---------------------------------------------------------------------------------
class Bench:
    def __init__(self, qemu, bus, workdir, max_disks):
        self.qemu = qemu
        self.bus = bus
        self.options, self.prefix, self.what = BUSES[bus]
        self.state_dir = str(workdir / ("state-" + bus))
        self.images = workdir / ("images-" + bus)
        self.images.mkdir()
        self.disks = []
        for i in range(max_disks):
            path = self.images / ("d%02d.raw" % i)
            with open(path, "wb") as handle:
                handle.truncate(IMAGE_SIZE)
            self.disks.append(dict(name="d%02d" % i, path=str(path)))
        self.agent = None
        self.info = {}
        self.serials = {}  # disk name -> serial the guest reports

    def params(self, disks, **over):
        raw = dict(name="blbench", state_dir=self.state_dir, qemu_binary=self.qemu, accel="tcg",
                   machine_type="pc", kernel_path=str(GUEST / "vmlinux"),
                   initrd_path=str(GUEST / "initramfs.gz"), kernel_args="console=ttyS0 panic=-1 quiet",
                   agent_channel=True, kvm_pci_reservations=4, unplug_timeout=UNPLUG_TIMEOUT,
                   shutdown_timeout=0, disks=list(disks), **self.options)
        raw.update(over)
        return raw

    def converge(self, disks, **over):
        """What `qemu_instance` does for these parameters, minus process start and exit_json."""
        raw = self.params(disks, **over)
        checked = ArgumentSpecValidator(qemu_instance.ARGUMENT_SPEC).validate(raw)
        if checked.error_messages:
            raise SystemExit("bad parameters: %s" % "; ".join(checked.error_messages))
        params = checked.validated_parameters
        task = Task(types.SimpleNamespace(params=params, check_mode=False))
        RECORDER.reset()
        start = time.monotonic()
        # What Task.run does around the work, minus exit_json: open (create) the state dir, lock it.
        task.state = StateDir.open(self.state_dir, create=raw.get("state", "running") == "running")
        try:
            if task.state:
                with task.state.lock(params["lock_timeout"], "instance %s" % params["name"]):
                    result = qemu_instance.converge(task)
            else:
                result = qemu_instance.converge(task)
        finally:
            if task.state:
                task.state.close()
        run = Run(result, start, time.monotonic())
        for warning in result.get("warnings", []):
            print("warning: %s" % warning, file=sys.stderr)
        if result.get("unplug_pending"):
            raise SystemExit("unplug still pending after %s s: %s" % (UNPLUG_TIMEOUT, result["unplug_pending"]))
        if result.get("state") == "running":
            for name, entry in disks_of(result).items():
                self.serials[name] = entry["serial"]
        return run

    def module_run(self, disks):
        """The same converge as a real module process (python -m ... ARGSFILE), for its wall time."""
        argsfile = self.state_dir + ".args.json"
        with open(argsfile, "w", encoding="utf-8") as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": self.params(disks)}, handle)
        env = dict(os.environ, PYTHONPATH=str(COLLECTIONS))
        start = time.monotonic()
        module = "ansible_collections.blocklayer.qemu.plugins.modules.qemu_instance"
        proc = subprocess.run([sys.executable, "-m", module, argsfile], capture_output=True, text=True, env=env,
                              timeout=300, check=False)
        wall = time.monotonic() - start
        result = json.loads(proc.stdout)
        if result.get("failed") or result.get("changed"):
            raise SystemExit("the no-op module run was not a no-op: %s" % proc.stdout)
        return wall

    def module_ratios(self, disks, samples, workdir):
        """Wall times of ``python -m ansible.modules.ping`` and of a no-op ``qemu_instance``,
        alternated, in the same environment. ``warm``: bytecode cached (a private
        PYTHONPYCACHEPREFIX, filled by one unmeasured run of each); ``zip``: both imported from
        one zip of ``ansible/module_utils``, ``ansible/modules`` and the collection, as Ansible's
        payload is, so zipimport compiles their files on every run, except the collection's
        module_utils, which come from its bytecode cache (docs/design.md "Speed") in the bench's
        own home, filled by the unmeasured first run; ``zip-first``: the same with an empty
        cache every run, what the first task on a host pays. The standard library and qemu.qmp
        keep their bytecode throughout."""
        argsfile = self.state_dir + ".args.json"
        with open(argsfile, "w", encoding="utf-8") as handle:
            json.dump({"ANSIBLE_MODULE_ARGS": self.params(disks)}, handle)
        ping_args = str(workdir / "ping.args.json")
        with open(ping_args, "w", encoding="utf-8") as handle:
            json.dump(PING_ARGS, handle)
        module = "ansible_collections.blocklayer.qemu.plugins.modules.qemu_instance"
        commands = {"ping": [sys.executable, "-m", "ansible.modules.ping", ping_args],
                    "qemu_instance": [sys.executable, "-m", module, argsfile]}
        found = {}
        payload = payload_zip(workdir / "payload.zip")
        for mode in ("warm", "zip", "zip-first"):
            env = dict(os.environ, PYTHONPATH=str(COLLECTIONS), HOME=private_home(workdir))
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            if mode == "warm":
                env["PYTHONPYCACHEPREFIX"] = str(workdir / "pycache")
            else:
                env["PYTHONPATH"] = payload
            walls = {name: [] for name in commands}
            for index in range(samples + 1):
                for name, argv in commands.items():
                    if mode == "zip-first":
                        env["HOME"] = private_home(workdir, "first-%d-%s" % (index, name))
                    start = time.monotonic()
                    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
                    wall = time.monotonic() - start
                    result = json.loads(proc.stdout)
                    if result.get("failed") or result.get("changed"):
                        raise SystemExit("%s was not a no-op: %s" % (name, proc.stdout))
                    if index:  # the first of each fills the bytecode caches and is not counted
                        walls[name].append(wall)
            found[mode] = walls
        return found

    def playbook_tasks(self, disk, repeat, workdir):
        """Per-task wall through ansible-playbook: a ping task, a one-disk hot-add task and its
        unplug, ``repeat`` times, timed by bench/callback_plugins/bench_timing.py."""
        play = [{"hosts": "localhost", "gather_facts": False, "tasks": []}]
        for _round in range(repeat):
            play[0]["tasks"] += [
                {"name": "ping", "ansible.builtin.ping": {}},
                {"name": "hot-add", "blocklayer.qemu.qemu_instance": self.params([disk])},
                {"name": "unplug", "blocklayer.qemu.qemu_instance": self.params([])},
            ]
        playbook, timing = workdir / "play.yml", workdir / "timing.jsonl"
        with open(playbook, "w", encoding="utf-8") as handle:
            json.dump(play, handle)  # JSON is YAML
        if timing.exists():
            timing.unlink()
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), BENCH_TIMING_FILE=str(timing),
                   ANSIBLE_CALLBACK_PLUGINS=str(ROOT / "bench" / "callback_plugins"),
                   ANSIBLE_CALLBACKS_ENABLED="bench_timing", HOME=private_home(workdir))
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as on a node: the collection keeps its bytecode
        proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), str(playbook)], cwd=str(ROOT),
                              capture_output=True, text=True, env=env, timeout=900, check=False)
        if proc.returncode:
            raise SystemExit("ansible-playbook failed:\n%s\n%s" % (proc.stdout[-3000:], proc.stderr[-3000:]))
        walls = {}
        with open(timing, encoding="utf-8") as handle:
            for line in handle:
                entry = json.loads(line)
                walls.setdefault(entry["task"], []).append(entry["seconds"])
        return walls

    def boot(self):
        run = self.converge([])
        self.info = dict(version=run.result["qemu_version"], accel=run.result["accel"])
        self.agent = GuestAgent(os.path.join(self.state_dir, "agent.sock"), timeout=BOOT_TIMEOUT)
        self.agent.wait_ready()
        self.agent.timeout = 60.0
        return time.monotonic() - run.start

    # -- the guest's view -----------------------------------------------------------------------
    def guest_disks(self):
        """Guest name -> serial of the bench's disks (our prefix)."""
        return {d["name"]: d["serial"] for d in self.agent.disks() if d["name"].startswith(self.prefix)}

    def wait_added(self, names):
        """Wait until the guest shows every disk in ``names``; return when (monotonic)."""
        want = {self.serials[n] for n in names}
        present = self.guest_disks()
        for dev in _free_names(self.prefix, set(present), len(want - set(present.values()))):
            try:
                self.agent.wait_disk(dev, present=True, timeout=GUEST_TIMEOUT)
            except AgentError:
                break  # Linux did not reuse that index (yet): the serial check below decides
        seen = set(self.guest_disks().values())
        if not want <= seen:
            raise SystemExit("the guest does not show disks with serials %s" % sorted(want - seen))
        return time.monotonic()

    def wait_removed(self, names, guest_before):
        by_serial = {serial: dev for dev, serial in guest_before.items()}
        for name in names:
            self.agent.wait_disk(by_serial[self.serials[name]], present=False, timeout=GUEST_TIMEOUT)

    # -- cleanup --------------------------------------------------------------------------------
    def close(self):
        if self.agent is not None:
            self.agent.close()
            self.agent = None
        try:
            self.converge([], state="absent")
        except (Exception, SystemExit) as exc:  # pylint: disable=broad-except
            print("cleanup: state absent failed (%s); killing" % exc, file=sys.stderr)


def _name(prefix, index):
    """Linux's sd/vd naming: a..z, aa..zz, ... (bijective base 26)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("a") + rest) + letters
    return prefix + letters


def _free_names(prefix, taken, count):
    """The ``count`` lowest names Linux would give next (it reuses the lowest free index)."""
    found, index = [], 0
    while len(found) < count:
        if _name(prefix, index) not in taken:
            found.append(_name(prefix, index))
        index += 1
    return found


def kill_leftovers(marker):
    """SIGKILL every QEMU whose command line mentions ``marker`` (our temp dir), nothing else."""
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = path.read_bytes().split(b"\0")
        except OSError:
            continue
        if args and b"qemu-system" in args[0] and any(marker.encode() in a for a in args[1:]):
            try:
                os.kill(int(path.parent.name), signal.SIGKILL)
                print("cleanup: killed QEMU %s" % path.parent.name, file=sys.stderr)
            except ProcessLookupError:
                pass


# -- figures --------------------------------------------------------------------------------------
class Figures:
    def __init__(self):
        self.samples = {}  # label -> [seconds]
        self.counts = {}  # label -> set of str
        self.order = []

    def add(self, label, value):
        if label not in self.samples and label not in self.counts:
            self.order.append(label)
        self.samples.setdefault(label, []).append(value)

    def ratio(self, label, value):
        self.count(label, "%.2f" % value)

    def count(self, label, value):
        if label not in self.samples and label not in self.counts:
            self.order.append(label)
        self.counts.setdefault(label, set()).add(value)

    def median(self, label):
        return statistics.median(self.samples[label]) * 1000

    def print_unplug_summary(self, sizes, out=sys.stdout):
        print("\nunplug, median ms:   N   parallel   one at a time   ratio   floor (device_del -> last "
              "DEVICE_DELETED)   last DEVICE_DELETED -> task end", file=out)
        for n in sizes:
            par = self.median("unplug N=%d parallel: wall" % n)
            one = self.median("unplug N=%d one at a time: wall (sum of %d tasks)" % (n, n))
            floor = self.median("unplug N=%d parallel: device_del -> last DEVICE_DELETED" % n)
            after = self.median("unplug N=%d parallel: last DEVICE_DELETED -> task end" % n)
            print("%22d %10.0f %15.0f %7.2f %42.0f %33.1f" % (n, par, one, one / par, floor, after), file=out)

    def print(self, out=sys.stdout):
        width = max(len(label) for label in self.order)
        print("%-*s %9s %9s %9s %4s" % (width, "figure (ms)", "median", "min", "max", "n"), file=out)
        for label in self.order:
            if label in self.counts:
                print("%-*s %s" % (width, label, " | ".join(sorted(self.counts[label]))), file=out)
                continue
            values = [v * 1000 for v in self.samples[label]]
            row = (width, label, statistics.median(values), min(values), max(values), len(values))
            print("%-*s %9.1f %9.1f %9.1f %4d" % row, file=out)


def disks_of(result):
    """Disk name -> its entry in the result's diff (labels are ``disks[<name>]``)."""
    return {label[len("disks["):-1]: entry for label, entry in result["diff"]["after"]["devices"].items()
            if label.startswith("disks[")}


def disk_ids(run):
    return {entry["id"]: name for name, entry in disks_of(run.result).items()}


def hot_add_figures(fig, run, ids):
    """Per disk: the QMP time of its blockdev-add (format node, protocol node inside) + device_add."""
    per_disk = {}
    for command, args, sent, answered in run.commands:
        if command == "blockdev-add":
            dev = args["node-name"].split(".")[0]
        elif command == "device_add":
            dev = args["id"]
        else:
            continue
        if dev in ids:
            per_disk.setdefault(dev, []).append((command, answered - sent))
    for steps in per_disk.values():
        fig.add("hot-add: QMP per disk (blockdev-add + device_add)", sum(step[1] for step in steps))
        fig.add("hot-add: device_add alone", sum(t for c, t in steps if c == "device_add"))


def detach_figures(fig, run, label):
    """device_del sent -> last DEVICE_DELETED emitted, and that event -> the end of the task."""
    deleted = [e for e in run.events if e[3]["event"] == "DEVICE_DELETED"]
    first_del = min(c[2] for c in run.commands if c[0] == "device_del")
    last_emitted = max(e[2] for e in deleted)
    fig.add("%s: device_del -> last DEVICE_DELETED" % label, last_emitted - first_del)
    fig.add("%s: last DEVICE_DELETED -> task end" % label, run.end - last_emitted)
    if label.endswith("parallel"):  # what that time went on: the commands and saves begun after it
        after = [c for c in run.commands if c[2] >= last_emitted]
        cleanup = [c for c in after if c[0] in ("blockdev-del", "object-del", "netdev_del")]
        fig.add("%s:   of which QMP clean-up (blockdev-del ...)" % label, busy_time(cleanup))
        fig.add("%s:   of which QMP verification queries" % label, busy_time([c for c in after if c not in cleanup]))
        fig.add("%s:   of which runtime-file saves" % label, sum(d - b for b, d in run.saves if b >= last_emitted))


def outside_qmp(run):
    """Wall time of a task not spent waiting for QMP answers or events (planning, runtime saves)."""
    return run.wall - qmp_time(run) - sum(e[1] - e[0] for e in run.events)


def save_time(run):
    return sum(done - began for began, done in run.saves)


def _tally(names):
    counts = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return "%d: %s" % (len(names), ", ".join("%s x%d" % item for item in counts.items()))


def payload_zip(path):
    """A zip like the payload Ansible sends: ansible's module_utils and modules, and the
    collection's plugins, sources only."""
    import zipfile  # pylint: disable=import-outside-toplevel
    import ansible  # pylint: disable=import-outside-toplevel
    site = Path(ansible.__file__).parent.parent
    own = COLLECTIONS / "ansible_collections" / "blocklayer" / "qemu"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("ansible/__init__.py", "")  # the payload's package stubs are empty too
        for sub in ("module_utils", "modules"):
            for source in sorted((site / "ansible" / sub).rglob("*.py")):
                archive.write(source, str(source.relative_to(site)))
        for name in ("ansible_collections/__init__.py", "ansible_collections/blocklayer/__init__.py",
                     "ansible_collections/blocklayer/qemu/__init__.py"):
            archive.writestr(name, "")
        for sub in ("plugins", "plugins/modules", "plugins/module_utils"):
            if not (own / sub / "__init__.py").exists():
                archive.writestr("ansible_collections/blocklayer/qemu/%s/__init__.py" % sub, "")
        for sub in ("modules", "module_utils"):
            for source in sorted((own / "plugins" / sub).rglob("*.py")):
                archive.write(source, "ansible_collections/blocklayer/qemu/" + str(source.relative_to(own)))
    return str(path)


def private_home(workdir, name="home"):
    """A home of the bench's own (mode 0700), so the collection's bytecode cache
    (~/.cache/blocklayer-qemu) is the bench's, removed with its directory."""
    home = workdir / name
    home.mkdir(mode=0o700, exist_ok=True)
    return str(home)


def qmp_time(run):
    return busy_time(run.commands)


def busy_time(commands):
    """Time spent waiting for QMP answers."""
    return sum(answered - sent for _c, _a, sent, answered in commands)


def ratios(bench, fig, samples, workdir):
    """Item 1 of the speed issue: module process vs ping, and a hot-add task vs a ping task."""
    disk = bench.disks[0]
    add = bench.converge([disk])  # in-process: the QMP time of exactly this hot-add task
    bench.wait_added([disk["name"]])
    before = bench.guest_disks()
    bench.converge([])
    bench.wait_removed([disk["name"]], before)
    for mode, walls in bench.module_ratios([], samples, workdir).items():
        for name, label in (("ping", "ansible.builtin.ping"), ("qemu_instance", "no-op qemu_instance")):
            for wall in walls[name]:
                fig.add("module process (%s bytecode): %s" % (mode, label), wall)
        fig.ratio("no-op qemu_instance / ping, module process, %s bytecode (medians)" % mode,
                  statistics.median(walls["qemu_instance"]) / statistics.median(walls["ping"]))
    tasks = bench.playbook_tasks(disk, samples, workdir)
    for name in ("ping", "hot-add", "unplug"):
        for wall in tasks[name]:
            fig.add("ansible-playbook task: %s" % name, wall)
    fig.add("hot-add one disk: its QMP time (in-process)", qmp_time(add))
    ping, hot_add = statistics.median(tasks["ping"]), statistics.median(tasks["hot-add"])
    fig.ratio("hot-add task / (ping task + its QMP time) (medians)", hot_add / (ping + qmp_time(add)))


def measure(bench, fig, sizes, repeat, module_runs):
    disks = bench.disks
    # Warm-up (not counted): the first hot-plug loads guest drivers and, for SCSI, brings the controller.
    bench.converge(disks[:1])
    bench.wait_added([disks[0]["name"]])
    before = bench.guest_disks()
    bench.converge([])
    bench.wait_removed([disks[0]["name"]], before)

    for rep in range(repeat):
        for n in sizes:
            decl = disks[:n]
            names = [d["name"] for d in decl]
            # add n disks in one task; the guest must see them all
            run = bench.converge(decl)
            hot_add_figures(fig, run, disk_ids(run))
            fig.add("add N=%d: task wall" % n, run.wall)
            fig.add("add N=%d: task time outside QMP" % n, outside_qmp(run))
            fig.add("add N=%d: of which runtime-file saves x%d" % (n, len(run.saves)), save_time(run))
            fig.add("add N=%d: task start -> guest sees all" % n, bench.wait_added(names) - run.start)
            # no-op
            noop = bench.converge(decl)
            if noop.result["changed"]:
                raise SystemExit("the second run with the same %d disks changed something" % n)
            fig.count("no-op N=%d: QMP commands" % n, "%d: %s" % (len(noop.commands), ", ".join(noop.names())))
            fig.add("no-op N=%d: in-process converge wall" % n, noop.wall)
            if (module_runs == 1 and rep == 0) or module_runs > 1:
                fig.add("no-op N=%d: module process wall (python -m)" % n, bench.module_run(decl))
            # parallel: one task removes all n
            guest = bench.guest_disks()
            run = bench.converge([])
            fig.add("unplug N=%d parallel: wall" % n, run.wall)
            fig.add("unplug N=%d parallel: task start -> first device_del" % n,
                    min(c[2] for c in run.commands if c[0] == "device_del") - run.start)
            fig.add("unplug N=%d parallel: task time outside QMP" % n, outside_qmp(run))
            fig.add("unplug N=%d parallel: of which runtime-file saves x%d" % (n, len(run.saves)), save_time(run))
            fig.count("unplug N=%d parallel: QMP commands" % n, _tally(run.names()))
            detach_figures(fig, run, "unplug N=%d parallel" % n)
            bench.wait_removed(names, guest)
            # one at a time: n tasks, each removes one
            run = bench.converge(decl)
            hot_add_figures(fig, run, disk_ids(run))
            bench.wait_added(names)
            guest = bench.guest_disks()
            total = 0.0
            for i in range(n):
                run = bench.converge(decl[i + 1:])
                total += run.wall
                detach_figures(fig, run, "unplug one at a time")
                bench.wait_removed([names[i]], guest)
            fig.add("unplug N=%d one at a time: wall (sum of %d tasks)" % (n, n), total)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--qemu", default="/usr/bin/qemu-system-x86_64", help="QEMU binary (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of every figure (default: %(default)s)")
    parser.add_argument("--sizes", default="1,4,16", help="disk counts to unplug (default: %(default)s)")
    parser.add_argument("--bus", choices=["virtio-blk", "virtio-scsi", "both"], default="virtio-blk",
                        help="what the disks are (default: %(default)s)")
    parser.add_argument("--ratio-samples", type=int, default=7,
                        help="samples of each ping / qemu_instance / playbook-task figure, 0 skips them "
                             "(default: %(default)s)")
    parser.add_argument("--module-runs", type=int, default=1,
                        help="no-op runs through a real module process: 0 none, 1 first repetition, "
                             "2 every repetition (default: %(default)s)")
    opts = parser.parse_args(argv)
    sizes = [int(s) for s in opts.sizes.split(",") if s]
    if not sizes or min(sizes) < 1 or max(sizes) > 27:
        parser.error("--sizes: between 1 and 27 disks (pc slots 4-31 with kvm_pci_reservations 4)")
    for needed in ("vmlinux", "initramfs.gz"):
        if not (GUEST / needed).exists():
            parser.error("build/guest/%s is missing: run `make guest`" % needed)
    qemu = shutil.which(opts.qemu)
    if not qemu:
        parser.error("--qemu %s: not found" % opts.qemu)

    def terminate(signum, _frame):
        raise SystemExit("stopped by signal %d" % signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    RECORDER.install()
    buses = ["virtio-blk", "virtio-scsi"] if opts.bus == "both" else [opts.bus]
    workdir = Path(tempfile.mkdtemp(prefix=PREFIX))
    began = time.monotonic()
    print("blocklayer.qemu hot-plug bench, %s" % time.strftime("%Y-%m-%d %H:%M %Z"))
    print("host: %s, %d cores, load %.2f %.2f %.2f, Python %s" % (
        platform.node(), os.cpu_count(), *os.getloadavg(), platform.python_version()))
    try:
        for bus in buses:
            bench = Bench(qemu, bus, workdir, max(sizes))
            try:
                boot = bench.boot()
                print("\nQEMU %s (%s), accel %s, machine pc, %s; kvm_pci_reservations 4; "
                      "repeat %d, sizes %s" % (bench.info["version"], qemu, bench.info["accel"], bench.what,
                                               opts.repeat, ",".join(map(str, sizes))))
                fig = Figures()
                fig.add("boot: start task -> guest agent ready", boot)
                if opts.ratio_samples:
                    ratios(bench, fig, opts.ratio_samples, workdir)
                measure(bench, fig, sizes, opts.repeat, opts.module_runs)
                fig.print()
                fig.print_unplug_summary(sizes)
            finally:
                bench.close()
    finally:
        kill_leftovers(str(workdir))
        shutil.rmtree(workdir, ignore_errors=True)
    print("\nload after %.2f %.2f %.2f; bench wall %.0f s" % (*os.getloadavg(), time.monotonic() - began))
    return 0


if __name__ == "__main__":
    sys.exit(main())
