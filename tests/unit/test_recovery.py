"""What a later run decides for each begun journal entry, given what QEMU has (pure)."""

from dataclasses import replace

from ansible_collections.blocklayer.qemu.plugins.module_utils import blockdev, engine, hotplug, plan, recovery, verify

from .helpers import disk, reconcile, running


def entry_of(action):
    return hotplug.journal_entry(action)


def attach_entry():
    (action,) = reconcile(running(disks=[disk("a")]), disks=[disk("a"), disk("b")])
    return action, entry_of(action)


def names(record):
    return [n["node-name"] for n in record["nodes"]]


def test_journal_entry_names_what_an_attach_creates():
    action, entry = attach_entry()
    assert entry.action == "attach" and entry.id == action.id
    # Derived from the steps (engine.journal_names): only the kinds the action touches.
    assert entry.creates == {"devices": [action.id], "nodes": names(action.record)}
    assert entry.removes == {} and entry.record == action.record


def test_attach_whose_device_is_in_qemu_on_the_recorded_top_is_adopted():
    action, entry = attach_entry()
    (done,) = recovery.recover([entry], {action.id}, {action.id: names(action.record)[-1]}, set(names(action.record)))
    assert done.commands == () and done.record == action.record


def test_attach_killed_before_device_add_deletes_the_nodes_that_exist_top_down():
    action, entry = attach_entry()
    (fmt,) = names(action.record)  # its protocol node opened inside: one blockdev-del closes both
    stor = action.record["nodes"][0]["file"]["node-name"]
    (done,) = recovery.recover([entry], set(), {}, {stor, fmt})
    assert [(c["execute"], c["arguments"]) for c in done.commands] == [("blockdev-del", {"node-name": fmt})]
    assert done.record is None and done.old == action.record
    (nothing,) = recovery.recover([entry], set(), {}, set())
    assert nothing.commands == () and nothing.record is None


def test_an_attach_an_earlier_version_was_killed_in_deletes_each_node_it_opened():
    action, _entry = attach_entry()
    record = dict(action.record, nodes=blockdev.flat(action.record["nodes"]))  # two blockdev-adds
    stor, fmt = names(record)
    entry = hotplug.journal_entry(replace(action, record=record))
    (done,) = recovery.recover([entry], set(), {}, {stor, fmt})
    assert [c["arguments"]["node-name"] for c in done.commands] == [fmt, stor]
    (only_stor,) = recovery.recover([entry], set(), {}, {stor})
    assert [c["arguments"]["node-name"] for c in only_stor.commands] == [stor]


def test_nic_attach_killed_after_netdev_add_deletes_the_netdev():
    data = running(disks=[disk("a")])
    (action,) = reconcile(data, disks=[disk("a")], nics=[dict(name="n")])
    (done,) = recovery.recover([entry_of(action)], set(), {}, set())
    assert [c["execute"] for c in done.commands] == ["netdev_del"]
    assert done.commands[0]["arguments"]["id"] == action.record["netdev"]["id"]


def test_detach_whose_device_is_gone_deletes_what_is_left_and_the_record():
    data = running(disks=[disk("a"), disk("b", disk_type="scsi-hd")])
    (action,) = reconcile(data, disks=[disk("a")])
    entry = entry_of(action)
    assert entry.removes["devices"] == [action.id] and entry.creates == {}
    (fmt,) = names(action.old)
    stor = action.old["nodes"][0]["file"]["node-name"]
    (done,) = recovery.recover([entry], {"scsi"}, {}, {stor, fmt})
    assert [c["arguments"]["node-name"] for c in done.commands] == [fmt]
    assert done.record is None
    (kept,) = recovery.recover([entry], {"scsi", action.id}, {}, {stor, fmt})
    assert kept.commands == () and kept.record == action.old


def test_medium_change_ends_on_the_chain_the_drive_has():
    data = running(cdroms=[dict(name="cd", path="/one.iso")])
    (action,) = reconcile(data, cdroms=[dict(name="cd", path="/two.iso")])
    entry = entry_of(action)
    old, new = names(action.old), names(action.record)
    everything = set(blockdev.names(action.old["nodes"]) + blockdev.names(action.record["nodes"]))
    (on_new,) = recovery.recover([entry], {action.id}, {action.id: new[-1]}, everything)
    assert on_new.record == action.record
    assert [c["arguments"].get("node-name") for c in on_new.commands if c["execute"] == "blockdev-del"] == old
    (on_old,) = recovery.recover([entry], {action.id}, {action.id: old[-1]}, everything)
    assert on_old.record == action.old
    assert {c["arguments"].get("node-name") for c in on_old.commands if c["execute"] == "blockdev-del"} == set(new)
    # Killed between remove-medium and insert-medium: the new chain is complete, so it goes in.
    (empty,) = recovery.recover([entry], {action.id}, {action.id: None}, everything)
    assert [c["execute"] for c in empty.commands][:3] == ["blockdev-open-tray", "blockdev-insert-medium",
                                                          "blockdev-close-tray"]
    assert empty.commands[1]["arguments"]["node-name"] == new[-1] and empty.record == action.record


def test_orphans_in_the_collections_name_space_are_purged_device_first():
    data = running(disks=[disk("a")])
    known = names(data.devices[0])
    orphan = "disk-0123abcd-0000-1111"
    live_nodes = set(known) | {orphan + ".stor", orphan + ".fmt", "user-node", "disk-99999999-0000-1111.fmt2"}
    actions = plan.purge_orphans(data, {data.devices[0]["id"], orphan, "somebody-else"}, live_nodes)
    assert [(a.action, a.id) for a in actions] == [("purge", orphan), ("purge", "")]
    assert [c["execute"] for c in actions[0].commands] == ["device_del", "blockdev-del", "blockdev-del"]
    assert [c["arguments"].get("node-name") for c in actions[0].commands[1:]] == [orphan + ".fmt", orphan + ".stor"]
    assert [c["arguments"]["node-name"] for c in actions[1].commands] == ["disk-99999999-0000-1111.fmt2"]


def test_orphan_netdevs_are_purged_with_their_nic_or_alone():
    data = running(nics=[dict(name="n")])
    known = data.devices[0]["netdev"]["id"]
    orphan_nic = "nic-0123abcd-0000-1111"
    alone = "nic-99999999-0000-1111.net"
    actions = plan.purge_orphans(data, {data.devices[0]["id"], orphan_nic}, set(),
                                 {known, orphan_nic + ".net", alone, "hostnet0", data.devices[0]["id"]})
    assert [(a.id, [c["execute"] for c in a.commands]) for a in actions] == [
        (orphan_nic, ["device_del", "netdev_del"]), ("", ["netdev_del"])]
    assert actions[1].commands[0]["arguments"] == {"id": alone}


def test_info_network_names_every_nic_and_netdev():
    text = ("nic-61771629-eb60-512b: index=0,type=nic,model=virtio-net-pci,macaddr=52:54:00:f4:a2:00\r\n"
            " \\ nic-61771629-eb60-512b.net: index=0,type=user,net=10.0.2.0,restrict=off\r\n"
            "nic-00000000-0000-0000.net: index=0,type=user,net=10.0.2.0,restrict=off\r\n")
    live = verify.Live([], [], [], [], text)
    assert live.netdevs == {"nic-61771629-eb60-512b", "nic-61771629-eb60-512b.net", "nic-00000000-0000-0000.net"}


def test_a_kind_without_a_rule_of_its_own_is_undone_from_what_its_entry_created():
    """A new action kind needs only its steps: a killed run's entry is settled by taking back
    what it created that QEMU still has, and the record stays as it was."""
    old = {"kind": "disk", "name": "a", "id": "disk-a", "nodes": []}
    steps = [engine.add_object({"qom-type": "iothread", "id": "disk-a.x"}), engine.add_node({"node-name": "disk-a.y"}),
             engine.add_node({"node-name": "disk-a.z"})]
    entry = engine.journal_entry("some-new-kind", "disk-a", steps, dict(old, nodes=["later"]), old)
    (done,) = recovery.recover([entry], {"disk-a"}, {}, {"disk-a.y"})
    assert [(c["execute"], c["arguments"]) for c in done.commands] == [
        ("blockdev-del", {"node-name": "disk-a.y"}), ("object-del", {"id": "disk-a.x"})]
    assert done.record == old
