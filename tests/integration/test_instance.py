"""qemu_instance against a real QEMU: what the declaration says is what QEMU has."""

import json
import os
import select
import shutil
import subprocess

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol

from .conftest import GuestCode, Qmp, QmpRecorder, alive, cmdline_of, qemu_private_args, sha256

SCSI_CONTROLLERS = {"lsi": "lsi53c895a", "megasas": "megasas", "virtio-scsi-pci": "virtio-scsi-pci"}


def peripherals(qmp):
    """qdev id -> QOM type of every device with an id."""
    return {p["name"]: p["type"][len("child<"):-1] for p in qmp("qom-list", path="/machine/peripheral")
            if p["type"].startswith("child<")}


def pci_slots(qmp):
    return {d["qdev_id"]: d["slot"] for bus in qmp("query-pci") for d in bus["devices"] if d["qdev_id"]}


def fd_flags(pid, path):
    """The open flags of the fd QEMU holds on ``path``."""
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == path:
                with open("/proc/%d/fdinfo/%s" % (pid, fd)) as handle:
                    return int(next(l for l in handle if l.startswith("flags:")).split()[1], 8)
        except OSError:
            continue
    raise AssertionError("QEMU has no fd on %s" % path)


@pytest.mark.parametrize("machine_type", ["pc", "q35"])
@pytest.mark.parametrize("controller", ["virtio", "lsi", "megasas", "virtio-scsi-pci"])
def test_devices_in_qemu_match_the_declaration(vm, machine_type, controller):
    root = vm.image("root.qcow2", fmt="qcow2")
    data = vm.image("data.raw")
    iso = vm.image("cd.iso", size="1M")
    disk_type = "paravirtual" if controller == "virtio" else "scsi-hd"
    result = vm.run(machine_type=machine_type, disk_type=disk_type,
                    scsi_controller_type="lsi" if controller == "virtio" else controller,
                    disks=[dict(name="root", path=root, format="qcow2", cache="none", aio="native"),
                           dict(name="data", path=data, cache="writethrough", discard="unmap",
                                detect_zeroes="unmap", serial="DATA1")],
                    cdroms=[dict(name="cd", path=iso)])
    assert result["changed"] and not result.get("failed"), result.get("msg")
    devices = result["devices"]
    by_name = {d["name"]: d for d in json.load(open(result["runtime_file"]))["layout"]["devices"]}
    root_id, data_id, cd_id = (by_name[n]["id"] for n in ("root", "data", "cd"))

    with vm.qmp() as qmp:
        types = peripherals(qmp)
        slots = pci_slots(qmp)
        blocks = {b["qdev"].split("/")[3] if b["qdev"].startswith("/machine") else b["qdev"]: b
                  for b in qmp("query-block")}
        nodes = {n["node-name"]: n for n in qmp("query-named-block-nodes", flat=True)}
        scsi_ids = {i: qmp("qom-get", path="/machine/peripheral/" + i, property="scsi-id")
                    for i in (root_id, data_id) if controller != "virtio"}
        write_cache = {i: qmp("qom-get", path="/machine/peripheral/" + i, property="write-cache")
                       for i in (root_id, data_id)}
        parent_bus = {i: qmp("qom-get", path="/machine/peripheral/" + i, property="parent_bus").split("/")[-1]
                      for i in devices if "addr" in devices[i]}

    def pci_place(dev_id):
        """(bus, slot) of a PCI device: on q35 its root port, which sits on pcie.0."""
        bus = parent_bus[dev_id]
        return (bus, slots[dev_id]) if bus == "pci.0" else (bus, slots[bus], slots[dev_id] if dev_id in slots else 0)

    # pc: slots from kvm_pci_reservations (12) up; q35: one root port each, ports packed in slot 12.
    first, second = (("pci.0", 12), ("pci.0", 13)) if machine_type == "pc" else (("rp0", 12, 0), ("rp1", 12, 0))
    for dev_id in devices:
        if "addr" in devices[dev_id] and devices[dev_id]["bus"] != "pcie.0":
            assert parent_bus[dev_id] == devices[dev_id]["bus"]
    if controller == "virtio":
        assert types[root_id] == types[data_id] == "virtio-blk-pci"
        assert "scsi" not in types
        assert (pci_place(root_id), pci_place(data_id)) == (first, second)
    else:
        assert types["scsi"] == SCSI_CONTROLLERS[controller]
        assert pci_place("scsi") == first
        assert types[root_id] == types[data_id] == "scsi-hd"
        assert devices[root_id]["bus"] == devices[data_id]["bus"] == "scsi.0"
        assert scsi_ids == {root_id: 0, data_id: 1}
        assert (devices[data_id]["channel"], devices[data_id]["lun"]) == (0, 0)
    assert types[cd_id] == "ide-cd"

    # cache: the same {direct, no-flush} on every node of a chain; writeback from write-cache.
    for dev_id, direct in ((root_id, True), (data_id, False)):
        for suffix in (".stor", ".fmt"):  # query-named-block-nodes: .stor opened inside .fmt too
            assert nodes[dev_id + suffix]["cache"]["direct"] is direct
            assert nodes[dev_id + suffix]["cache"]["no-flush"] is False
    # The device property, not query-block's writeback: virtio-blk drops writeback while a
    # driver without the flush feature (SeaBIOS) owns it.
    assert write_cache == {root_id: "on", data_id: "off"}  # none -> on, writethrough -> off
    assert nodes[data_id + ".fmt"]["detect_zeroes"] == "unmap"
    assert blocks[cd_id]["inserted"]["ro"] is True and nodes[cd_id + ".fmt"]["ro"] is True
    assert blocks[root_id]["inserted"]["ro"] is False

    pid = result["pid"]
    argv = cmdline_of(pid)
    assert "-drive" not in argv
    assert fd_flags(pid, root) & os.O_DIRECT and not fd_flags(pid, data) & os.O_DIRECT
    blockdevs = [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-blockdev"]
    aio = {n["file"]["node-name"]: n["file"].get("aio") for n in blockdevs if isinstance(n.get("file"), dict)}
    assert (aio[root_id + ".stor"], aio[data_id + ".stor"]) == ("native", "threads")


def read_only(message):
    """The allow-list of a run that changes nothing: QMP negotiation, queries, QOM reads and the
    one HMP command that lists netdevs."""
    command = message.get("execute")
    if command == "human-monitor-command":
        return message.get("arguments") == {"command-line": "info network"}
    return command == "qmp_capabilities" or command.startswith("query-") or command in ("qom-list", "qom-get")


def test_no_op_rerun_sends_only_read_only_queries_however_many_devices(vm, tmp_path):
    small = dict(disks=[dict(name="d0", path=vm.image("s0.raw", "1M"))])
    big = dict(name="big", state_dir=str(tmp_path / "big"), kvm_pci_reservations=6,
               disks=[dict(name="d%d" % i, path=vm.image("b%d.raw" % i, "1M")) for i in range(16)],
               nics=[dict(name="n%d" % i) for i in range(8)])
    sent = {}
    for label, decl in (("small", small), ("big", big)):
        first = vm.run(**decl)
        assert first["changed"] and not first.get("failed"), first.get("msg")
        sock = first["qmp_socket"]
        with Qmp(sock) as qmp:
            before = peripherals(qmp)
        with QmpRecorder(sock) as wire:  # what the module sends, seen on the socket
            again = vm.run(**decl)
        with Qmp(sock) as qmp:
            after = peripherals(qmp)
        assert again["changed"] is False and again["actions"] == [] and not again.get("failed"), again.get("msg")
        assert wire.connections >= 1 and wire.sent, wire.sent
        assert [m for m in wire.messages if not read_only(m)] == [], wire.messages
        assert [c for c in wire.sent if c != "qmp_capabilities"] == [c["execute"] for c in again["qmp_commands"]]
        assert after == before and again["pid"] == first["pid"]
        sent[label] = wire.sent
    assert len(first["devices"]) == 16 + 8
    assert len(sent["small"]) == len(sent["big"]), sent


def test_qemu_version_is_reported_and_recorded(vm):
    result = vm.run(disks=[dict(name="a", path=vm.image("a.raw"))])
    runtime = json.load(open(result["runtime_file"]))
    with vm.qmp() as qmp:
        v = qmp("query-version")["qemu"]
    assert result["qemu_version"] == runtime["host"]["version"] == "%d.%d.%d" % (v["major"], v["minor"], v["micro"])
    assert runtime["host"]["binary"] == os.path.realpath(vm.binary) or runtime["host"]["binary"] == vm.binary
    assert result["accel"] == "tcg"


def test_runtime_file_is_private_and_describes_every_device(vm):
    result = vm.run(disks=[dict(name="a", path=vm.image("a.raw"))], floppy=dict(path=vm.image("fd.img", "1440K")))
    assert oct(os.stat(vm.state_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(result["runtime_file"]).st_mode & 0o777) == "0o600"
    data = json.load(open(result["runtime_file"]))
    assert data["version"] == 2 and data["host"]["argv"] == result["argv"]
    assert data["host"]["pid"] == result["pid"] and data["status"] == "running" and data["journal"] == []
    devices = data["layout"]["devices"]
    assert {d["kind"] for d in devices} == {"disk", "floppy"}
    assert all(d["state"] == "attached" and d["hvinfo"]["id"] == d["id"] for d in devices)


def test_stopped_and_absent_leave_images_byte_identical(vm):
    root = vm.image("root.qcow2", fmt="qcow2")
    data = vm.image("data.raw")
    before = {p: sha256(p) for p in (root, data)}
    disks = [dict(name="root", path=root, format="qcow2"), dict(name="data", path=data)]
    started = vm.run(disks=disks)
    pid = started["pid"]
    stopped = vm.run(state="stopped", disks=disks)
    assert stopped["changed"] and stopped["actions"][0]["action"] == "stop"
    assert not alive(pid)
    # The layout stays, marked stopped, for the chains the next start rebuilds (docs/block-graph.md).
    with open(os.path.join(vm.state_dir, "runtime.json")) as handle:
        kept = json.load(handle)
    assert kept["status"] == "stopped" and kept["host"]["pid"] is None
    assert sorted(os.listdir(vm.state_dir)) == [".blocklayer-instance", "console.log", "runtime.json"]
    assert vm.run(state="stopped")["changed"] is False
    assert {p: sha256(p) for p in (root, data)} == before

    vm.run(disks=disks)
    absent = vm.run(state="absent")
    assert absent["changed"] and not os.path.exists(vm.state_dir)
    assert vm.pids() == []
    assert {p: sha256(p) for p in (root, data)} == before
    assert vm.run(state="absent")["changed"] is False


def test_check_mode_plans_without_touching_anything(vm):
    disks = [dict(name="a", path=vm.image("a.raw"))]
    planned = vm.run(check=True, diff=True, disks=disks)
    assert planned["changed"] and planned["actions"][0]["action"] == "start"
    assert planned["qmp_commands"] == [] and vm.pids() == []
    assert not os.path.exists(vm.state_dir)
    assert planned["diff"]["before"] == {}
    disk = planned["diff"]["after"]["devices"]["disks[a]"]
    assert (disk["driver"], disk["bus"], disk["addr"], disk["path"]) == ("virtio-blk-pci", "pci.0", "0xc", disks[0]["path"])

    real = vm.run(diff=True, disks=disks)
    assert real["diff"]["after"]["devices"] == planned["diff"]["after"]["devices"]
    assert real["argv"][1:] == planned["argv"][1:]
    stop_plan = vm.run(check=True, diff=True, state="stopped")
    assert stop_plan["changed"] and vm.pids() == [real["pid"]]
    assert stop_plan["diff"]["before"]["devices"] == real["diff"]["after"]["devices"]
    assert stop_plan["diff"]["after"] == {}


def test_changed_declaration_fails_without_allow_restart_and_restarts_with_it(vm):
    disks = [dict(name="a", path=vm.image("a.raw"))]
    first = vm.run(disks=disks)
    changed = [dict(disks[0], cache="none")]
    refused = vm.run(disks=changed)
    assert refused["failed"] and 'disks[a]: cannot change on a live device: cache: "default" -> "none"' in refused["msg"]
    assert "allow_restart" in refused["msg"]
    assert vm.pids() == [first["pid"]]
    restarted = vm.run(disks=changed, allow_restart=True)
    assert [a["action"] for a in restarted["actions"]] == ["restart-required", "stop", "start"]
    assert restarted["pid"] != first["pid"] and vm.pids() == [restarted["pid"]]


def test_a_declared_cpu_model_is_what_qemu_runs_and_recorded_for_a_migration(vm):
    first = vm.run(cpu_model="Westmere")
    argv = cmdline_of(first["pid"])
    assert argv[argv.index("-cpu") + 1] == "Westmere"
    with open(os.path.join(vm.state_dir, "runtime.json")) as handle:
        assert json.load(handle)["layout"]["cpu"] == "Westmere"
    with vm.qmp() as qmp:  # QEMU's own account of the vCPU's model
        assert qmp("qom-get", path=qmp("query-cpus-fast")[0]["qom-path"], property="model-id").startswith("Westmere")
    assert vm.run(cpu_model="Westmere")["changed"] is False
    refused = vm.run(cpu_model="Conroe")
    assert refused["failed"] and 'machine.cpu_model: "Westmere" -> "Conroe"' in refused["msg"], refused["msg"]


def test_dead_qemu_is_forgotten_and_started_again(vm):
    disks = [dict(name="a", path=vm.image("a.raw"))]
    first = vm.run(disks=disks)
    pidfd = os.pidfd_open(first["pid"])
    os.kill(first["pid"], 9)
    select.select([pidfd], [], [], 10)  # readable once the process has exited
    os.close(pidfd)
    again = vm.run(disks=disks)
    assert [a["action"] for a in again["actions"]] == ["forget", "start"]
    assert vm.pids() == [again["pid"]]


def kvm_offered():
    """The host offers KVM: /dev/kvm writable and the CPU has vmx or svm (a nested hypervisor
    can offer /dev/kvm without either, and then cannot run a guest)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
        flags = next((l.split(":", 1)[1].split() for l in handle if l.startswith("flags")), [])
    return "vmx" in flags or "svm" in flags


def guest_code_runs(binary, accel, tmp_path):
    """The test's own proof: a kernel that writes RAN on COM1 and powers off (S5) must do so."""
    kernel, out = tmp_path / ("proof-%s.bin" % accel), tmp_path / ("proof-%s.out" % accel)
    kernel.write_bytes(GuestCode().puts(0x3F8, "RAN\n").outw(0x604, 0x2000).halt().kernel())
    extra, env = qemu_private_args(binary)
    argv = [binary, "-machine", "pc", "-accel", accel, "-nodefaults", "-no-user-config", "-display", "none",
            "-m", "64"] + extra + ["-kernel", str(kernel), "-serial", "file:%s" % out]
    try:
        proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:  # a hypervisor that hangs the guest
        return False
    return proc.returncode == 0 and out.exists() and "RAN" in out.read_text(errors="replace")


def test_accel_auto_uses_kvm_only_when_a_guest_runs_under_it(vm, tmp_path):
    assert guest_code_runs(vm.binary, "tcg", tmp_path)  # the proof itself works
    expected = "kvm" if kvm_offered() and guest_code_runs(vm.binary, "kvm", tmp_path) else "tcg"
    result = vm.run(accel="auto", disks=[dict(name="a", path=vm.image("a.raw"))])
    assert not result.get("failed"), result.get("msg")
    assert result["accel"] == expected
    argv = cmdline_of(result["pid"])  # what QEMU really runs with
    assert argv[argv.index("-accel") + 1] == expected
    with vm.qmp() as qmp:
        assert qmp("query-kvm")["enabled"] is (expected == "kvm")


def schema_aio_modes(binary, tmp_path):
    """The aio values of blockdev-add's file driver, from the binary's own query-qmp-schema."""
    sock = str(tmp_path / "schema.sock")
    extra, env = qemu_private_args(binary)
    mon = QEMUMonitorProtocol(sock, server=True)  # QEMU connects to us: no wait for its socket
    proc = subprocess.Popen([binary, "-machine", "none", "-nodefaults", "-display", "none", "-S"] + extra
                            + ["-qmp", "unix:%s" % sock], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        mon.accept(30)
        schema = mon.cmd("query-qmp-schema")
    finally:
        mon.close()
        proc.kill()
        proc.wait()
    types = {entry["name"]: entry for entry in schema}
    options = types[types["blockdev-add"]["arg-type"]]
    (file_case,) = [v for v in options["variants"] if v["case"] == "file"]
    (aio,) = [m for m in types[file_case["type"]]["members"] if m["name"] == "aio"]
    enum = types[aio["type"]]
    return {m["name"] for m in enum["members"]} if "members" in enum else set(enum["values"])


def test_io_uring_is_accepted_when_the_binary_schema_lists_it(vm, tmp_path):
    modes = schema_aio_modes(vm.binary, tmp_path)
    assert {"threads", "native"} <= modes, modes  # the walk found the aio enum
    if shutil.which("ldd"):  # io_uring is in the schema exactly when QEMU is built with liburing
        ldd = subprocess.run(["ldd", vm.binary], capture_output=True, text=True, check=True).stdout
        linked = "liburing" in ldd
        assert linked == ("io_uring" in modes), "ldd and the schema disagree about io_uring: %s" % modes
    result = vm.run(disks=[dict(name="a", path=vm.image("a.raw"), aio="io_uring")])
    if "io_uring" in modes:
        assert not result.get("failed"), "the schema lists io_uring but the module refused: %s" % result.get("msg")
        pid = result["pid"]
        fds = {os.readlink("/proc/%d/fd/%s" % (pid, fd)) for fd in os.listdir("/proc/%d/fd" % pid)}
        assert "anon_inode:[io_uring]" in fds, "QEMU holds no io_uring instance: %s" % sorted(fds)
    else:
        assert result.get("failed"), "the schema has no io_uring but the module started QEMU"
        assert "io_uring" in result["msg"]
