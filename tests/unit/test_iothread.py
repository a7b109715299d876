"""Dedicated iothreads: spec rules, command line, plan, undo and recovery (pure)."""

import json

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import blockdev, cmdline, engine, hotplug, plan, recovery, runtime
from ansible_collections.blocklayer.qemu.plugins.module_utils import spec as spec_mod
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import ConfigError
from ansible_collections.blocklayer.qemu.plugins.module_utils.runtime import RuntimePaths

from .helpers import by_name, disk, params, place, place_with_spec, reconcile, running

VIRTIO_SCSI = dict(scsi_controller_type="virtio-scsi-pci")


def iothread_args(argv):
    return [json.loads(argv[i + 1]) for i, a in enumerate(argv) if a == "-object"]


def test_a_disk_with_iothread_gets_an_object_named_after_its_id_and_the_device_links_it():
    lay = place(disks=[disk("a", iothread=True), disk("b")])
    a, b = by_name(lay, "a"), by_name(lay, "b")
    assert a.objects == ({"qom-type": "iothread", "id": a.id + ".io"},)
    assert a.props["iothread"] == a.id + ".io"
    assert b.objects == () and "iothread" not in b.props
    assert "iothread" not in a.hvinfo  # hvinfo stays design-scsi-kvm's placement


def test_the_virtio_scsi_controller_gets_scsi_io_with_scsi_iothread():
    lay = place(disks=[disk("s", disk_type="scsi-hd")], scsi_iothread=True, **VIRTIO_SCSI)
    (ctrl,) = lay.controllers
    assert ctrl.objects == ({"qom-type": "iothread", "id": "scsi.io"},)
    assert ctrl.props["iothread"] == "scsi.io"


def test_command_line_has_every_object_before_any_device_or_node():
    s, lay = place_with_spec(disks=[disk("a", iothread=True), disk("s", disk_type="scsi-hd")], scsi_iothread=True,
                             **VIRTIO_SCSI)
    argv = cmdline.build_argv(s, lay, "tcg", RuntimePaths("/run/vm"))
    assert iothread_args(argv) == [{"qom-type": "iothread", "id": "scsi.io"},
                                   {"qom-type": "iothread", "id": by_name(lay, "a").id + ".io"}]
    last_object = max(i for i, a in enumerate(argv) if a == "-object")
    assert last_object < min(i for i, a in enumerate(argv) if a in ("-device", "-blockdev"))


@pytest.mark.parametrize("over,needle", [
    (dict(disks=[disk("s", disk_type="scsi-hd", iothread=True)]), "disks[s]: iothread is for virtio-blk"),
    (dict(disks=[disk("i", disk_type="ide", iothread=True)]), "disks[i]: iothread is for virtio-blk"),
    (dict(scsi_iothread=True, scsi_controller_type="lsi"), "scsi_iothread: the lsi SCSI controller"),
    (dict(scsi_iothread=True, scsi_controller_type="megasas"), "set scsi_controller_type: virtio-scsi-pci"),
])
def test_iothread_is_refused_where_qemu_has_none_naming_option_device_and_fix(over, needle):
    with pytest.raises(ConfigError) as err:
        spec_mod.instance_from(params(**over))
    assert needle in str(err.value)


def test_hot_plug_adds_the_iothread_first_and_unplug_deletes_it_last():
    data = running(disks=[disk("a")])
    (attach,) = reconcile(data, disks=[disk("a"), disk("b", iothread=True)])
    names = [c["execute"] for c in attach.commands]
    assert names == ["object-add", "blockdev-add", "device_add"]
    io_id = attach.id + ".io"
    assert attach.commands[0]["arguments"] == {"qom-type": "iothread", "id": io_id}
    assert attach.commands[-1]["arguments"]["iothread"] == io_id
    after = running(disks=[disk("a"), disk("b", iothread=True)])
    (detach,) = reconcile(after, disks=[disk("a")])
    assert [c["execute"] for c in detach.commands] == ["device_del", "blockdev-del", "object-del"]
    assert detach.commands[-1]["arguments"] == {"id": io_id}


def test_journal_names_the_iothread_an_attach_creates_and_a_detach_removes():
    data = running(disks=[disk("a")])
    (attach,) = reconcile(data, disks=[disk("a"), disk("b", iothread=True)])
    assert hotplug.journal_entry(attach).creates["objects"] == [attach.id + ".io"]
    after = running(disks=[disk("a"), disk("b", iothread=True)])
    (detach,) = reconcile(after, disks=[disk("a")])
    assert hotplug.journal_entry(detach).removes["objects"] == [detach.id + ".io"]


def test_undo_of_object_add_is_object_del():
    assert engine.rollback([engine.add_object({"qom-type": "iothread", "id": "x.io"})]) == \
        [{"execute": "object-del", "arguments": {"id": "x.io"}}]


def test_changing_iothread_of_an_attached_disk_needs_a_restart():
    data = running(disks=[disk("a")])
    (action,) = reconcile(data, disks=[disk("a", iothread=True)])
    assert action.action == plan.RESTART and "iothread: false -> true" in action.reason


def test_scsi_iothread_change_needs_a_restart():
    data = running(disks=[disk("s", disk_type="scsi-hd")], **VIRTIO_SCSI)
    actions = reconcile(data, disks=[disk("s", disk_type="scsi-hd")], scsi_iothread=True, **VIRTIO_SCSI)
    assert [(a.action, a.reason) for a in actions] == [(plan.RESTART, "hvparams.scsi_iothread: false -> true")]


def test_a_record_written_before_iothreads_existed_is_no_change():
    data = running(disks=[disk("a")])
    for record in data.devices:
        del record["spec"]["iothread"], record["objects"]
    del data.declaration["hvparams"]["scsi_iothread"]
    assert reconcile(data, disks=[disk("a")]) == []


def test_a_killed_attach_is_undone_down_to_its_iothread():
    data = running(disks=[disk("a")])
    (attach,) = reconcile(data, disks=[disk("a"), disk("b", iothread=True)])
    entry = hotplug.journal_entry(attach)
    live_nodes = set(blockdev.names(attach.record["nodes"]))
    (undo,) = recovery.recover([entry], {d["id"] for d in data.devices}, {}, live_nodes)
    assert [c["execute"] for c in undo.commands] == ["blockdev-del", "object-del"]
    assert undo.commands[-1]["arguments"] == {"id": attach.id + ".io"}


def test_a_killed_detach_whose_device_is_gone_deletes_the_iothread():
    after = running(disks=[disk("a"), disk("b", iothread=True)])
    (detach,) = reconcile(after, disks=[disk("a")])
    entry = runtime.Pending(**vars(hotplug.journal_entry(detach)))
    (finish,) = recovery.recover([entry], set(), {}, set())
    assert [c["execute"] for c in finish.commands] == ["object-del"]
