import json
import os

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import runtime
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError

from .helpers import DATA


def real_file(version):
    """A runtime file as the collection wrote it at that format (paths made generic)."""
    with open(os.path.join(DATA, "runtime-v%d.json" % version), "rb") as handle:
        return handle.read()


def test_format_1_file_becomes_layout_and_host_binding_running_with_nothing_in_flight():
    rt = runtime.loads(real_file(1), "v1")
    old = json.loads(real_file(1))
    assert rt.layout.name == "web1" and rt.layout.uuid == old["uuid"]
    assert rt.layout.machine_type == "pc"
    assert rt.layout.declaration == old["declaration"]
    assert [d["name"] for d in rt.layout.devices] == ["root", "data", "installer", "lan"]
    assert [c["id"] for c in rt.layout.controllers] == ["scsi"]
    assert rt.layout.devices[0]["nodes"] == old["devices"][0]["nodes"]
    assert rt.host.binary == old["qemu"]["binary"] and rt.host.argv == old["argv"]
    assert rt.host.accel == "tcg" and rt.host.version == old["qemu"]["version"]
    assert rt.host.pid is None  # format 1 kept the pid only in the pidfile
    assert rt.status == runtime.STATUS_RUNNING and rt.journal == []


def test_format_0_pci_slots_become_hvinfo_of_drive_devices_through_format_1():
    rt = runtime.loads(real_file(0), "v0")
    root, lan = rt.layout.devices
    assert root["hvinfo"] == {"driver": "virtio-blk-pci", "id": root["id"], "bus": "pci.0", "addr": "0xd"}
    assert lan["hvinfo"] == {"driver": "virtio-net-pci", "id": lan["id"], "bus": "pci.0", "addr": "0xe"}
    assert {d["origin"] for d in rt.layout.devices} == {runtime.ORIGIN_DRIVE}
    assert {d["state"] for d in rt.layout.devices} == {runtime.STATE_ATTACHED}
    assert rt.layout.devices[0]["nodes"] == []  # QEMU owns the nodes of -drive devices
    # The chain goes through every step: 0 -> 1 gives a format-1 object, 1 -> 2 the split.
    one = runtime._v0_to_v1(json.loads(real_file(0)), "v0")
    assert one["version"] == 1 and runtime.upgrade(one) == runtime.upgrade(json.loads(real_file(0)))


def test_a_saved_file_reads_back_the_same():
    rt = runtime.loads(real_file(1), "v1")
    record = {"id": "disk-1", "nodes": []}
    rt.journal.append(runtime.Pending("attach", "disk-1", {"nodes": ["disk-1.stor"]}, {}, record, None))
    rt.host.pid = 4242
    again = runtime.loads(runtime.dumps(rt), "again")
    assert again == rt
    assert json.loads(runtime.dumps(rt))["version"] == 2


def test_saved_text_has_sorted_keys_one_per_line():
    rt = runtime.loads(real_file(1), "v1")
    text = runtime.dumps(rt).decode()
    key_lists = []
    json.loads(text, object_pairs_hook=lambda pairs: key_lists.append([key for key, _value in pairs]) or dict(pairs))
    assert key_lists and all(keys == sorted(keys) for keys in key_lists)
    assert text.startswith('{\n "host": {\n') and text.endswith("}\n")


@pytest.mark.parametrize("content, key", [
    (b"[]", "a JSON list, not an object"),
    (b"null", "a JSON NoneType, not an object"),
    (b'"x"', "a JSON str, not an object"),
    (b'{"version": "2"}', "version '2' is not a format number"),
    (b'{"version": 2, "layout": {}, "host": {}, "journal": []}', "layout.name is missing"),
    (b'{"version": 2, "layout": {"name": "a", "uuid": "u", "machine_type": "pc", "declaration": {}, '
     b'"controllers": [], "devices": [{"kind": "disk"}]}, "host": {"binary": "q"}, "journal": []}',
     "layout.devices[0].name is missing"),
    (b'{"version": 2, "layout": {"name": "a", "uuid": "u", "machine_type": "pc", "declaration": {}, '
     b'"controllers": [], "devices": []}, "host": {"binary": "q", "pid": "12"}, "journal": []}',
     "host.pid has the wrong type (str)"),
    (b'{"version": 2, "layout": {"name": "a", "uuid": "u", "machine_type": "pc", "declaration": {}, '
     b'"controllers": [], "devices": []}, "host": {"binary": "q"}, "journal": [{"id": "x"}]}',
     "journal[0].action is missing"),
    (b'{"devices": [3]}', "devices holds a int, not an object"),
    (b"{oops", "is not valid JSON"),
])
def test_damaged_file_is_refused_naming_the_key_and_the_file(content, key):
    with pytest.raises(ConfigError) as failure:
        runtime.loads(content, "/state/runtime.json")
    assert key in str(failure.value) and "/state/runtime.json" in str(failure.value)
    assert "state: stopped still stops its QEMU" in str(failure.value) or "version" in key


def test_newer_format_is_refused():
    with pytest.raises(ConfigError, match="newer than this collection"):
        runtime.upgrade({"version": runtime.FORMAT_VERSION + 1})


def test_layout_put_replaces_in_place_and_drop_removes():
    lay = runtime.GuestLayout("a", "u", "pc", {}, [], [{"kind": "disk", "id": "d1"}, {"kind": "disk", "id": "d2"}])
    lay.put({"kind": "disk", "id": "d1", "x": 1})
    lay.put({"kind": "controller", "id": "scsi"})
    assert [r["id"] for r in lay.devices] == ["d1", "d2"] and lay.devices[0]["x"] == 1
    lay.drop("d1")
    assert [r["id"] for r in lay.records()] == ["scsi", "d2"]


def _with_journal(*entries) -> bytes:
    data = json.loads(runtime.dumps(runtime.loads(real_file(1), "v1")))
    data["journal"] = list(entries)
    return json.dumps(data).encode()


_DISK = {"kind": "disk", "name": "d", "id": "disk-1", "nodes": [{"node-name": "disk-1.fmt"}]}
_GROUP = {"name": "g", "id": "tg-g", "limits": {}}


@pytest.mark.parametrize("entry, key", [
    ({"action": "detach", "id": "disk-1"}, "journal[0].old is missing (every detach entry needs it)"),
    ({"action": "finish-unplug", "id": "disk-1", "old": None}, "journal[0].old is missing"),
    ({"action": "purge", "id": "disk-1"}, "journal[0].old is missing"),
    ({"action": "attach", "id": "disk-1", "old": _DISK}, "journal[0].record is missing (every attach entry"),
    ({"action": "change-medium", "id": "disk-1", "record": _DISK}, "journal[0].old is missing"),
    ({"action": "change-medium", "id": "disk-1", "old": _DISK}, "journal[0].record is missing"),
    ({"action": "resize", "id": "disk-1"}, "journal[0].old is missing"),
    ({"action": "throttle", "id": "disk-1", "old": _DISK}, "journal[0].record is missing"),
    ({"action": "detach", "id": "disk-1", "old": {"id": "disk-1"}}, "journal[0].old.nodes is missing"),
    ({"action": "detach", "id": "disk-1", "old": {"nodes": []}}, "journal[0].old.id is missing"),
    ({"action": "detach", "id": "disk-1", "old": dict(_DISK, nodes=[{"driver": "raw"}])},
     "journal[0].old.nodes[0] is not a node with a node-name"),
    ({"action": "add-throttle-group", "id": "tg-g", "record": {"name": "g", "id": "tg-g"}},
     "journal[0].record.limits is missing"),
    ({"action": "delete-throttle-group", "id": "tg-g"}, "journal[0].old is missing"),
    ({"action": "commit", "id": "disk-1", "old": _DISK}, "journal[0].record is missing"),
    ({"action": "mirror", "id": "disk-1", "record": _DISK}, "journal[0].old is missing"),
    ({"action": "node-add", "id": "n", "record": {"name": "n"}}, "journal[0].record.nodes is missing"),
    ({"action": "node-del", "id": "n", "old": {"name": "n", "nodes": []}}, "journal[0].removes.nodes is missing"),
    ({"action": "recover", "id": "disk-1", "record": _DISK}, "journal[0].old is missing"),
    ({"action": "unplug", "id": "disk-1", "old": _DISK}, "journal[0].action is 'unplug', not an action"),
])
def test_a_journal_entry_without_what_its_action_needs_is_refused(entry, key):
    with pytest.raises(ConfigError) as failure:
        runtime.loads(_with_journal(entry), "/state/runtime.json")
    text = str(failure.value)
    assert "runtime file /state/runtime.json is damaged: " + key in text, text
    assert "state: stopped still stops its QEMU" in text


def test_journal_entries_as_the_collection_writes_them_are_read():
    entries = [{"action": "detach", "id": "disk-1", "old": _DISK},
               {"action": "purge", "id": "", "old": _DISK},
               {"action": "change-medium", "id": "cdrom-1", "old": dict(_DISK, nodes=[]), "record": _DISK},
               {"action": "set-throttle-group", "id": "tg-g", "record": _GROUP, "old": _GROUP},
               {"action": "node-del", "id": "n", "old": {"name": "n", "nodes": []}, "removes": {"nodes": []}}]
    rt = runtime.loads(_with_journal(*entries), "/state/runtime.json")
    assert [e.action for e in rt.journal] == ["detach", "purge", "change-medium", "set-throttle-group", "node-del"]


def test_every_action_the_collection_journals_has_its_needs_listed():
    from ansible_collections.blocklayer.qemu.plugins.module_utils import graph, plan, recovery
    journaled = {plan.ATTACH, plan.DETACH, plan.CHANGE_MEDIUM, plan.FINISH_UNPLUG, plan.PURGE, plan.RESIZE,
                 plan.THROTTLE, recovery.RECOVER} | set(plan.GROUP_ACTIONS) | set(graph.RUNNER_ACTIONS)
    assert journaled == set(runtime._ENTRY_NEEDS)
