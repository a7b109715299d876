"""The Applier's bookkeeping when QEMU says no, with a scripted session (faults QEMU cannot be
made to produce on purpose: an undo that fails)."""

import contextlib

import pytest

from ansible_collections.blocklayer.qemu.plugins.module_utils import hotplug
from ansible_collections.blocklayer.qemu.plugins.module_utils.errors import QemuError

from .helpers import disk
from .test_plan import reconcile, running


class ScriptedQmp:
    """Answers {} to everything except the commands listed in ``refuse`` (name -> QEMU's text)."""

    def __init__(self, refuse):
        self.refuse = refuse
        self.sent = []

    def execute(self, command, arguments=None, timeout=None):
        self.sent.append((command, arguments))
        if command in self.refuse:
            raise QemuError("QEMU refused %s: %s" % (command, self.refuse[command]), "GenericError",
                            self.refuse[command], command)
        return {}


def attach():
    layout = running(disks=[disk("a")])
    (action,) = reconcile(layout, disks=[disk("a"), disk("b")])
    return layout, action


def test_failed_attach_whose_undo_works_says_so_and_leaves_no_journal_entry():
    layout, action = attach()
    qmp = ScriptedQmp({"device_add": "Bus 'pci.0' not found"})
    applier = hotplug.Applier(qmp, layout, 5)
    with pytest.raises(QemuError, match=r"disks\[b\] .*failed, and what was added was removed"):
        applier.apply([action])
    assert [command for command, _arguments in qmp.sent] == ["blockdev-add", "blockdev-add", "device_add", "blockdev-del", "blockdev-del"]
    assert applier.unfinished == [] and [d["name"] for d in layout.devices] == ["a"]


def test_failed_attach_whose_undo_fails_says_so_and_keeps_the_journal_entry():
    layout, action = attach()
    qmp = ScriptedQmp({"device_add": "Bus 'pci.0' not found", "blockdev-del": "Node x is in use"})
    applier = hotplug.Applier(qmp, layout, 5)
    with pytest.raises(QemuError) as failure:
        applier.apply([action])
    assert "undoing it failed too" in str(failure.value) and "what was added was removed" not in str(failure.value)
    assert "Node x is in use" in str(failure.value)
    (entry,) = applier.unfinished
    assert entry.action == "attach" and entry.id == action.id and entry.record == action.record


class UnplugQmp(ScriptedQmp):
    """QEMU as it unplugs SCSI disks: each device_del's DEVICE_DELETED has arrived by its answer.
    Blockdev-dels of the nodes in ``refuse_nodes`` (node name -> QEMU's text) are refused."""

    def __init__(self, refuse_nodes=None):
        super().__init__({})
        self.refuse_nodes = refuse_nodes or {}
        self.batches = []
        self.queue = []

    def listener(self, _names, _event_filter=None):
        return contextlib.nullcontext(self.queue)

    def execute(self, command, arguments=None, timeout=None):
        answer = super().execute(command, arguments, timeout)
        if command == "device_del":
            self.queue.append({"event": "DEVICE_DELETED", "data": {"device": arguments["id"]}})
        return answer

    def execute_all(self, commands, timeout=None):
        self.batches.append([(command, arguments.get("node-name")) for command, arguments in commands])
        out = []
        for command, arguments in commands:
            self.sent.append((command, arguments))
            text = self.refuse_nodes.get(arguments.get("node-name"))
            out.append(QemuError("QEMU refused %s: %s" % (command, text), "GenericError", text, command)
                       if text else {})
        return out

    def wait_event(self, queue, _timeout):
        return queue.pop(0) if queue else None

    def arrived(self, queue):
        found = list(queue)
        queue.clear()
        return found


def scsi_detach(names, keep):
    declared = [disk(n, disk_type="scsi-hd") for n in names]
    layout = running(disks=declared, scsi_controller_type="virtio-scsi-pci")
    actions = reconcile(layout, disks=[d for d in declared if d["name"] in keep],
                        scsi_controller_type="virtio-scsi-pci")
    return layout, actions


def test_disks_whose_events_came_together_are_cleaned_up_in_one_batch_top_down():
    layout, actions = scsi_detach(["a", "b", "c"], keep=["a"])
    qmp = UnplugQmp()
    hotplug.Applier(qmp, layout, 5).apply(actions)
    ids = {a.name: a.id for a in actions}
    assert qmp.batches == [[("blockdev-del", ids[n] + "." + role) for n in ("b", "c") for role in ("fmt", "stor")]]
    assert [d["name"] for d in layout.devices if d["kind"] == "disk"] == ["a"]


def test_a_refused_clean_up_keeps_that_disk_alone_and_is_raised_after_the_others_are_done():
    layout, actions = scsi_detach(["a", "b", "c"], keep=["a"])
    b_id = next(a.id for a in actions if a.name == "b")
    qmp = UnplugQmp({b_id + ".fmt": "Node %s.fmt is in use" % b_id})
    with pytest.raises(QemuError, match="is in use"):
        hotplug.Applier(qmp, layout, 5).apply(actions)
    assert len(qmp.batches) == 1 and len(qmp.batches[0]) == 4  # c's clean-up was sent all the same
    assert sorted(d["name"] for d in layout.devices if d["kind"] == "disk") == ["a", "b"]
