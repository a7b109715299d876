from ansible_collections.blocklayer.qemu.plugins.module_utils import blockdev, plan
from ansible_collections.blocklayer.qemu.plugins.module_utils import spec as spec_mod

from .helpers import disk, facts_for, params, reconcile, running


def test_same_declaration_has_no_changes():
    decl = {"disks": [{"name": "a", "cache": "none"}], "machine": {"memory": 256}}
    assert plan.changes(decl, plan.normalise(decl)) == []


def test_changes_name_the_device_and_the_option():
    before = {"disks": [{"name": "a", "cache": "none"}], "machine": {"memory": 256}}
    after = {"disks": [{"name": "a", "cache": "writeback"}], "machine": {"memory": 512}}
    assert plan.changes(before, after) == ['disks[a].cache: "none" -> "writeback"', "machine.memory: 256 -> 512"]


def test_added_disk_is_one_change_listing_names():
    before = {"disks": [{"name": "a"}]}
    after = {"disks": [{"name": "a"}, {"name": "b"}]}
    assert plan.changes(before, after) == ["disks: [a] -> [a, b]"]


def test_normalise_turns_tuples_into_lists():
    assert plan.normalise({"a": (1, 2)}) == {"a": [1, 2]}


# -- reconcile ---------------------------------------------------------------------------------


def summary(actions):
    return [(a.action, a.kind, a.name) for a in actions]


def test_same_declaration_plans_nothing():
    decl = dict(disks=[disk("a"), disk("b", disk_type="scsi-hd")], cdroms=[dict(name="c", path="/i.iso")],
                nics=[dict(name="n")])
    assert reconcile(running(**decl), **decl) == []


def test_new_virtio_disk_is_attached_in_the_next_free_slot_bottom_up():
    data = running(disks=[disk("a")])
    (action,) = reconcile(data, disks=[disk("a"), disk("b")])
    assert (action.action, action.name) == ("attach", "b")
    assert action.record["hvinfo"]["addr"] == "0xd"
    assert [c["execute"] for c in action.commands] == ["blockdev-add", "device_add"]
    added = action.commands[0]["arguments"]  # the format node, its protocol node inside
    assert added["node-name"].endswith(".fmt") and added["file"]["node-name"].endswith(".stor")
    assert action.commands[-1]["arguments"] == action.record["props"]
    assert "bootindex" not in action.record["props"]


def test_live_pci_slots_are_avoided():
    data = running(disks=[disk("a")])
    (action,) = reconcile(data, live_pci_slots=[13, 14], disks=[disk("a"), disk("b")])
    assert action.record["hvinfo"]["addr"] == "0xf"


def test_scsi_disk_brings_its_controller_first():
    data = running(disks=[disk("a")])
    actions = reconcile(data, disks=[disk("a"), disk("b", disk_type="scsi-hd")])
    assert summary(actions) == [("attach", "controller", "scsi"), ("attach", "disk", "b")]
    assert actions[0].record["hvinfo"]["addr"] == "0xd"
    assert actions[1].record["hvinfo"]["scsi-id"] == 0


def test_removed_disk_is_detached_top_down():
    data = running(disks=[disk("a"), disk("b")])
    (action,) = reconcile(data, disks=[disk("a")])
    b = data.devices[1]
    assert (action.action, action.name) == ("detach", "b")
    assert action.commands == (  # .stor was opened inside .fmt: QEMU closes it with it
        {"execute": "device_del", "arguments": {"id": b["id"]}},
        {"execute": "blockdev-del", "arguments": {"node-name": b["id"] + ".fmt"}})


def test_a_disk_recorded_by_an_earlier_version_has_its_protocol_node_deleted_on_its_own():
    data = running(disks=[disk("a"), disk("b")])
    b = data.devices[1]
    b["nodes"] = blockdev.flat(b["nodes"])  # as records were written before: each node on its own
    (action,) = reconcile(data, disks=[disk("a")])
    assert action.commands == (
        {"execute": "device_del", "arguments": {"id": b["id"]}},
        {"execute": "blockdev-del", "arguments": {"node-name": b["id"] + ".fmt"}},
        {"execute": "blockdev-del", "arguments": {"node-name": b["id"] + ".stor"}})


def test_detaches_come_before_attaches_and_reuse_nothing_still_recorded():
    data = running(disks=[disk("a"), disk("b")])
    actions = reconcile(data, disks=[disk("a"), disk("c")])
    assert summary(actions) == [("detach", "disk", "b"), ("attach", "disk", "c")]
    assert actions[1].record["hvinfo"]["addr"] == "0xe"  # b's slot is free only once b is gone


def test_drive_origin_devices_are_removed_with_device_del_alone():
    data = running(disks=[disk("a"), disk("b")])
    data.devices[1]["origin"] = "drive"
    (action,) = reconcile(data, disks=[disk("a")])
    assert [c["execute"] for c in action.commands] == ["device_del"]


def test_nic_attach_adds_netdev_then_device_and_detach_deletes_the_netdev():
    data = running(nics=[dict(name="n1")])
    (add,) = reconcile(data, nics=[dict(name="n1"), dict(name="n2")])
    assert [c["execute"] for c in add.commands] == ["netdev_add", "device_add"]
    (remove,) = reconcile(data, nics=[])
    assert [c["execute"] for c in remove.commands] == ["device_del", "netdev_del"]


def test_cd_path_change_is_a_medium_change_with_alternating_node_names():
    data = running(cdroms=[dict(name="c", path="/one.iso")])
    (action,) = reconcile(data, cdroms=[dict(name="c", path="/two.iso")])
    cd = data.devices[0]["id"]
    assert action.action == "change-medium"
    assert [c["execute"] for c in action.commands] == [
        "blockdev-add", "blockdev-open-tray", "blockdev-remove-medium", "blockdev-insert-medium",
        "blockdev-close-tray", "blockdev-del"]
    assert action.commands[0]["arguments"]["file"]["node-name"] == cd + ".stor2"
    assert action.commands[3]["arguments"] == {"id": cd, "node-name": cd + ".fmt2"}
    assert action.commands[5]["arguments"] == {"node-name": cd + ".fmt"}
    assert action.record["hvinfo"]["drive"] == cd + ".fmt2"


def test_eject_and_floppy_change():
    data = running(cdroms=[dict(name="c", path="/one.iso")], floppy=dict(path="/f1.img"))
    actions = reconcile(data, cdroms=[dict(name="c")], floppy=dict(path="/f2.img"))
    eject, floppy = actions
    assert [c["execute"] for c in eject.commands] == [
        "blockdev-open-tray", "blockdev-remove-medium", "blockdev-close-tray", "blockdev-del"]
    assert "drive" not in eject.record["props"]
    assert [c["execute"] for c in floppy.commands] == [
        "blockdev-add", "blockdev-remove-medium", "blockdev-insert-medium", "blockdev-del"]


def test_what_cannot_change_live_is_restart_required_with_the_reason():
    data = running(disks=[disk("a"), disk("i", disk_type="ide")], cdroms=[dict(name="c")])
    actions = reconcile(data, memory=512, disks=[disk("a", cache="none"), disk("j", disk_type="ide")],
                        floppy=dict(path="/f.img"))
    restart = {(a.name, a.reason) for a in actions if a.action == "restart-required"}
    assert ("machine", 'machine.memory: 256 -> 512') in restart
    assert ("a", 'cannot change on a live device: cache: "default" -> "none"') in restart
    assert ("i", "cannot be hot-unplugged (ide-hd)") in restart
    assert ("c", "cannot be hot-unplugged (ide-cd)") in restart
    assert ("j", "cannot be hot-plugged (IDE); declare it before the instance starts") in restart
    assert ("floppy", "cannot be hot-plugged (floppy); declare it before the instance starts") in restart


def test_pending_unplug_is_finished_once_qom_no_longer_has_the_device():
    data = running(disks=[disk("a"), disk("b")])
    data.devices[1]["state"] = "unplug-pending"
    b = data.devices[1]["id"]
    assert reconcile(data, present_ids={data.devices[0]["id"], b}, disks=[disk("a")]) == []
    assert reconcile(data, present_ids=None, disks=[disk("a")]) == []
    (action,) = reconcile(data, present_ids={data.devices[0]["id"]}, disks=[disk("a")])
    assert action.action == "finish-unplug"
    assert [c["execute"] for c in action.commands] == ["blockdev-del"]


def test_redeclaring_a_device_still_being_unplugged_needs_a_restart():
    data = running(disks=[disk("a"), disk("b")])
    data.devices[1]["state"] = "unplug-pending"
    actions = reconcile(data, present_ids={d["id"] for d in data.devices}, disks=[disk("a"), disk("b")])
    assert summary(actions) == [("restart-required", "disk", "b")]


def test_q35_hot_plug_goes_into_a_free_root_port():
    data = running(machine_type="q35", pcie_root_ports=2, disks=[disk("a")])
    (action,) = reconcile(data, machine_type="q35", pcie_root_ports=2, disks=[disk("a"), disk("b")])
    assert action.record["hvinfo"]["bus"] == "rp1" and action.record["hvinfo"]["addr"] == "0x0"


def test_expected_after_applies_records():
    data = running(disks=[disk("a"), disk("b")])
    actions = reconcile(data, disks=[disk("a"), disk("c")])
    after = plan.expected_after(data, actions, {"x": 1})
    assert [d["name"] for d in after.devices] == ["a", "c"] and after.declaration == {"x": 1}


def test_devices_qemu_device_attached_are_kept_unless_declared_by_name():
    layout = running(disks=[disk("a"), disk("b")], nics=[dict(name="n")])
    layout.devices[1]["owner"] = plan.OWNER_DEVICE
    layout.devices[2]["owner"] = plan.OWNER_DEVICE
    kept = plan.kept_devices(layout, {"disks": [disk("a")], "nics": []})
    assert [d["name"] for d in kept["disks"]] == ["b"] and [n["name"] for n in kept["nics"]] == ["n"]
    assert kept["disks"][0] == layout.devices[1]["spec"]
    assert plan.kept_devices(layout, {"disks": [disk("a"), disk("b")], "nics": [dict(name="n")]}) == {
        "disks": [], "nics": []}
    assert plan.kept_devices(None, {"disks": []}) == {"disks": [], "nics": []}


def test_attached_records_name_the_module_that_attached_them():
    data = running(disks=[disk("a")])
    s = spec_mod.instance_from(params(disks=[disk("a"), disk("b")]))
    (action,) = plan.reconcile(data, s, facts_for(s), owner=plan.OWNER_DEVICE)
    assert action.record["owner"] == plan.OWNER_DEVICE


def test_a_cpu_model_is_a_restart_and_a_declaration_from_before_it_existed_is_no_change():
    data = running(disks=[disk("a")])
    assert reconcile(data, disks=[disk("a")]) == []
    data.declaration["machine"].pop("cpu_model")  # a runtime file written before the option
    assert reconcile(data, disks=[disk("a")]) == []
    restart = {(a.name, a.reason) for a in reconcile(data, cpu_model="Westmere", disks=[disk("a")])}
    assert restart == {("machine", 'machine.cpu_model: null -> "Westmere"')}
