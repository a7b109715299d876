"""qemu_instance against a real QEMU: what the declaration says is what QEMU has."""

import json
import os
import select

import pytest

from .conftest import alive, cmdline_of, sha256

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
    by_name = {d["name"]: d for d in json.load(open(result["runtime_file"]))["devices"]}
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
        for suffix in (".stor", ".fmt"):
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
    aio = {n["node-name"]: n.get("aio") for n in blockdevs}
    assert (aio[root_id + ".stor"], aio[data_id + ".stor"]) == ("native", "threads")


def test_second_run_is_a_no_op_with_two_queries(vm):
    disks = [dict(name="a", path=vm.image("a.raw")), dict(name="b", path=vm.image("b.raw"), disk_type="scsi-hd")]
    first = vm.run(disks=disks)
    assert first["changed"]
    second = vm.run(disks=disks)
    assert second["changed"] is False
    assert [c["execute"] for c in second["qmp_commands"]] == ["query-block", "query-pci", "qom-list"]
    assert second["pid"] == first["pid"] and second["devices"] == first["devices"]
    assert second["qemu_version"] == first["qemu_version"]


def test_qemu_version_is_reported_and_recorded(vm):
    result = vm.run(disks=[dict(name="a", path=vm.image("a.raw"))])
    runtime = json.load(open(result["runtime_file"]))
    with vm.qmp() as qmp:
        v = qmp("query-version")["qemu"]
    assert result["qemu_version"] == runtime["qemu"]["version"] == "%d.%d.%d" % (v["major"], v["minor"], v["micro"])
    assert runtime["qemu"]["binary"] == os.path.realpath(vm.binary) or runtime["qemu"]["binary"] == vm.binary
    assert result["accel"] == "tcg"


def test_runtime_file_is_private_and_describes_every_device(vm):
    result = vm.run(disks=[dict(name="a", path=vm.image("a.raw"))], floppy=dict(path=vm.image("fd.img", "1440K")))
    assert oct(os.stat(vm.state_dir).st_mode & 0o777) == "0o700"
    assert oct(os.stat(result["runtime_file"]).st_mode & 0o777) == "0o600"
    data = json.load(open(result["runtime_file"]))
    assert data["version"] == 1 and data["argv"] == result["argv"]
    assert {d["kind"] for d in data["devices"]} == {"disk", "floppy"}
    assert all(d["state"] == "attached" and d["hvinfo"]["id"] == d["id"] for d in data["devices"])


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
    assert not os.path.exists(os.path.join(vm.state_dir, "runtime.json"))
    assert vm.run(state="stopped")["changed"] is False
    assert {p: sha256(p) for p in (root, data)} == before

    vm.run(disks=disks)
    absent = vm.run(state="absent")
    assert absent["changed"] and not os.path.exists(vm.state_dir)
    assert vm.pids() == []
    assert {p: sha256(p) for p in (root, data)} == before
    assert vm.run(state="absent")["changed"] is False


def test_stop_waits_for_shutdown_then_quits(vm):
    vm.run(disks=[dict(name="a", path=vm.image("a.raw"))])
    # No guest OS answers the ACPI power button, so the bounded wait ends in quit.
    result = vm.run(state="stopped", shutdown_timeout=0.5)
    assert [c["execute"] for c in result["qmp_commands"]] == ["system_powerdown", "quit"]
    assert result["actions"][0]["how"] == "quit"
    assert vm.pids() == []


def test_check_mode_plans_without_touching_anything(vm):
    disks = [dict(name="a", path=vm.image("a.raw"))]
    planned = vm.run(check=True, diff=True, disks=disks)
    assert planned["changed"] and planned["actions"][0]["action"] == "start"
    assert planned["qmp_commands"] == [] and vm.pids() == []
    assert not os.path.exists(vm.state_dir)
    assert planned["diff"]["before"] == {}
    assert planned["diff"]["after"]["devices"][0]["name"] == "a"

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


def test_accel_auto_uses_kvm_only_when_a_guest_runs_under_it(vm):
    from ansible_collections.blocklayer.qemu.plugins.module_utils import host, probe
    # The proof itself runs guest code: under TCG it must succeed.
    assert probe.accel_works(vm.binary, "tcg")
    result = vm.run(accel="auto", disks=[dict(name="a", path=vm.image("a.raw"))])
    expected = "kvm" if host.kvm_usable() and probe.accel_works(vm.binary, "kvm") else "tcg"
    assert result["accel"] == expected
    assert ["-accel", expected] == [a for a in result["argv"] if a in ("-accel", expected)][:2]


def test_io_uring_is_accepted_when_the_binary_schema_lists_it(vm):
    from ansible_collections.blocklayer.qemu.plugins.module_utils import probe
    supported = probe.aio_modes(probe.query_schema(vm.binary, {}, []))
    result = vm.run(disks=[dict(name="a", path=vm.image("a.raw"), aio="io_uring")])
    if "io_uring" in supported:
        assert result["changed"] and not result.get("failed"), result.get("msg")
        assert '"aio":"io_uring"' in " ".join(result["argv"])
    else:
        assert result["failed"] and "io_uring" in result["msg"]
