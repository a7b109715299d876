"""The pure parts of refusing a runtime file that does not describe its QEMU and of judging
the processes a start leaves: kept nodes, unknown nodes, a -daemonize launch seen half-way."""

import signal

from ansible_collections.blocklayer.qemu.plugins.module_utils import graph, process, runtime, verify

DEV = "disk-9e7c85f6-b6e5-4243"


def a_runtime(devices, journal=()):
    return runtime.Runtime(
        layout=runtime.GuestLayout(name="t", uuid="u", machine_type="pc", declaration={}, devices=list(devices)),
        host=runtime.HostBinding(binary="qemu"), journal=list(journal))


def test_the_protocol_node_inside_a_kept_format_node_is_kept_too():
    rt = a_runtime([{"id": DEV, "kind": "disk", "nodes": [], "unused_nodes": [DEV + ".fmt", DEV + ".fmt3"]}])
    assert graph.kept_nodes(rt) == {DEV + ".fmt", DEV + ".stor", DEV + ".fmt3", DEV + ".stor3"}


def test_the_protocol_node_inside_a_running_operations_new_node_is_kept_too():
    entry = runtime.Pending(graph.MIRROR, DEV, {"nodes": [DEV + ".fmt2"], "jobs": ["j"]}, {}, {}, {})
    assert graph.kept_nodes(a_runtime([], [entry])) == {DEV + ".fmt2", DEV + ".stor2"}


def test_separately_opened_protocol_nodes_and_other_names_are_kept_as_they_are():
    rt = a_runtime([{"id": DEV, "kind": "disk", "nodes": [], "unused_nodes": [DEV + ".stor2", DEV + ".thr2"]}])
    assert graph.kept_nodes(rt) == {DEV + ".stor2", DEV + ".thr2"}


def live(types, nodes):
    return verify.Live.from_answers([], [], [{"name": t, "type": "child<virtio-blk-pci>"} for t in types],
                                    [{"node-name": n} for n in nodes])


def record(dev_id, top, state="attached"):
    return {"id": dev_id, "kind": "disk", "state": state,
            "nodes": [{"node-name": top, "driver": "raw", "file": {"node-name": dev_id + ".stor", "driver": "file"}}]}


def test_a_present_device_whose_record_names_a_node_qemu_lacks_is_found():
    other = "disk-11111111-2222-3333"
    devices = [record(other, other + ".fmt"), record(DEV, DEV + ".fmt7")]
    nodes = [other + ".fmt", other + ".stor", DEV + ".fmt", DEV + ".stor"]
    found = verify.unknown_nodes(devices, live([other, DEV], nodes))
    assert [(i, r["id"], names) for i, r, names in found] == [(1, DEV, [DEV + ".fmt7"])]


def test_absent_and_unplugging_devices_and_empty_drives_are_not_judged_by_their_nodes():
    devices = [record(DEV, DEV + ".fmt", state="unplug-pending"), record("disk-11111111-2222-3333", "x.fmt"),
               {"id": "cdrom-11111111-2222-3333", "kind": "cdrom", "nodes": []}]
    assert verify.unknown_nodes(devices, live([DEV, "cdrom-11111111-2222-3333"], [])) == []


def test_a_launcher_and_the_qemu_it_daemonised_are_one_start():
    # os_daemonize(): launcher 100 forks 101 (setsid, session leader, a zombie once it forked),
    # which forks the QEMU 102; 102's parent is now a reaper (1), its session 101's.
    stats = {100: (50, 40), 101: (100, 101), 102: (1, 101), 1: (0, 1)}
    assert process.launched([100, 102], stats) == (102, [100])
    # Seen before the middle process exited: all three serve the socket.
    assert process.launched([100, 101, 102], {**stats, 102: (101, 101)}) == (102, [100, 101])


def test_two_unrelated_qemus_are_not_one_start():
    stats = {100: (1, 100), 200: (1, 200), 1: (0, 1)}
    assert process.launched([100, 200], stats) is None
    assert process.launched([100, 200], {}) is None


def test_a_silent_failed_start_says_what_happened_and_what_to_do():
    died = process._silent_end(1)
    assert "ended while it started" in died and "status 1" in died and "run again" in died
    killed = process._silent_end(-signal.SIGKILL)
    assert "killed by SIGKILL" in killed and "run again" in killed


def test_qemus_warnings_are_not_why_a_start_ended():
    """QEMU 11.1 warns that '-mon' is deprecated on every start: a start that ended with only that
    on stderr ended without a word, and a refusal is told without the warning."""
    warning = "qemu-system-x86_64: -mon chardev=qmp,mode=control: warning: '-mon' is deprecated, use '-object'"
    assert process.without_warnings(warning + "\n") == ""
    refusal = "qemu-system-x86_64: -blockdev {...}: Failed to get \"write\" lock"
    assert process.without_warnings(warning + "\n" + refusal + "\n") == refusal
